/*
 * The scheduler kv entry, file:// backend: publish/read round trips, atomic replacement, a
 * missing entry, malformed contents and the code each gives, the URL schemes that cannot hold
 * an entry, guarded removal, and waiting with a timeout; zk:// with no server to reach.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/kv.h"

struct fixture {
	char dir[64];
	char path[128];
	char url[160];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/psplus_kvXXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/sched", f->dir);
	snprintf(f->url, sizeof(f->url), "file://%s", f->path);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static void put_file(const char *path, const char *content, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
}

static struct ps_kv_entry entry(const char *host, uint16_t port, uint32_t n)
{
	struct ps_kv_entry e = {.port = port, .server_num = n};

	snprintf(e.host, sizeof(e.host), "%s", host);
	return e;
}

static void test_publish_read(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry e = entry("127.0.0.1", 40123, 3), r;
	char buf[256] = "", err[512];
	struct stat st;
	int fd;

	assert_int_equal(ps_kv_publish(f->url, &e, err, sizeof(err)), 0);
	/* The documented format, byte for byte. */
	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	assert_string_equal(buf, "# psplus scheduler address\nformat=1\naddr=127.0.0.1:40123\n"
				 "server_num=3\n");
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(count_entries(f->dir), 1); /* no temp file left behind */
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), 0);
	assert_string_equal(r.host, "127.0.0.1");
	assert_int_equal(r.port, 40123);
	assert_int_equal(r.server_num, 3);

	e = entry("fe80::1", 7000, 65536);
	assert_int_equal(ps_kv_publish(f->url, &e, err, sizeof(err)), 0);
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), 0);
	assert_string_equal(r.host, "fe80::1");
	assert_int_equal(r.port, 7000);
	assert_int_equal(r.server_num, 65536);
}

/* Replacement is a rename: a reader holding the old file keeps seeing the old entry whole. */
static void test_atomic_replace(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry a = entry("10.0.0.1", 1111, 2), b = entry("10.0.0.2", 2222, 4), r;
	char buf[256] = "", err[512];
	int fd;

	assert_int_equal(ps_kv_publish(f->url, &a, err, sizeof(err)), 0);
	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(ps_kv_publish(f->url, &b, err, sizeof(err)), 0);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	assert_non_null(strstr(buf, "addr=10.0.0.1:1111"));
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), 0);
	assert_string_equal(r.host, "10.0.0.2");
	assert_int_equal(r.port, 2222);
	assert_int_equal(r.server_num, 4);
	assert_int_equal(count_entries(f->dir), 1);
}

static void test_missing(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry r, e = entry("h", 1, 1);
	char err[512], url[256];

	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, f->path));
	snprintf(url, sizeof(url), "file://%s/no/such/dir/kv", f->dir);
	assert_int_equal(ps_kv_publish(url, &e, err, sizeof(err)), -ENOENT);
	assert_int_equal(count_entries(f->dir), 0);
}

static void expect_parse(const char *text, int want, const char *in_err)
{
	struct ps_kv_entry r;
	char err[256] = "";

	assert_int_equal(ps_kv_parse(text, strlen(text), &r, err, sizeof(err)), want);
	if (in_err)
		assert_non_null(strstr(err, in_err));
}

static void test_malformed(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry r;
	char err[512], *big;

	expect_parse("", PS_ECORRUPT, "missing key 'format'");
	expect_parse("hello world\n", PS_ECORRUPT, "line 1: expected key=value");
	expect_parse("format=1\naddr=h:1\n", PS_ECORRUPT, "missing key 'server_num'");
	expect_parse("format=1\nserver_num=3\n", PS_ECORRUPT, "missing key 'addr'");
	expect_parse("format=1\naddr=h:1\naddr=h:2\nserver_num=1\n", PS_ECORRUPT, "twice");
	expect_parse("format=1\naddr=h\nserver_num=1\n", PS_ECORRUPT, "addr:");
	expect_parse("format=1\naddr=h:0\nserver_num=1\n", PS_ECORRUPT, "addr:");
	expect_parse("format=1\naddr=:7\nserver_num=1\n", PS_ECORRUPT, "addr:");
	expect_parse("format=1\naddr=h:1\nserver_num=0\n", PS_ECORRUPT, "server_num");
	expect_parse("format=1\naddr=h:1\nserver_num=65537\n", PS_ECORRUPT, "server_num");
	expect_parse("format=1\naddr=h:1\nserver_num=3x\n", PS_ECORRUPT, "server_num");
	expect_parse("format=one\naddr=h:1\nserver_num=3\n", PS_ECORRUPT, "format");
	expect_parse("Format=1\naddr=h:1\nserver_num=3\n", PS_ECORRUPT, "invalid key");
	expect_parse("=1\n", PS_ECORRUPT, "line 1");
	/* A newer format is a version problem, whatever its other keys look like. */
	expect_parse("format=2\naddr=anything\nserver_num=x\n", PS_EPROTO_VERSION, "format 2");
	/* Comments, blank lines, CRLF, unknown keys and a missing final newline are fine. */
	expect_parse("# c\r\n\r\nformat=1\r\nextra=whatever=x\r\naddr=[::1]:9\r\nserver_num=2", 0,
		     NULL);
	assert_int_equal(ps_kv_parse("format=1\naddr=h:1\nserver_num=2\n", 30, &r, NULL, 0), 0);
	assert_string_equal(r.host, "h");

	/* Binary data and oversized files, through the file reader. */
	put_file(f->path, "format=1\0\naddr=h:1\nserver_num=2\n", 32);
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), PS_ECORRUPT);
	assert_non_null(strstr(err, "NUL"));
	big = malloc(PS_KV_FILE_MAX + 1);
	memset(big, '#', PS_KV_FILE_MAX + 1);
	put_file(f->path, big, PS_KV_FILE_MAX + 1);
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), PS_ECORRUPT);
	assert_non_null(strstr(err, "larger than"));
	free(big);
	put_file(f->path, "garbage", 7);
	assert_int_equal(ps_kv_read(f->url, &r, err, sizeof(err)), PS_ECORRUPT);
	assert_non_null(strstr(err, f->path));
}

static void test_schemes(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry e = entry("h", 1, 1), r;
	char err[512], url[256];

#ifndef PS_HAVE_ZOOKEEPER
	assert_int_equal(ps_kv_publish("zk://zk1:2181/psplus", &e, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_non_null(strstr(err, "ZooKeeper support is not built"));
	assert_int_equal(ps_kv_read("zk://zk1:2181/psplus", &r, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_int_equal(ps_kv_wait("zk://zk1:2181/psplus", 10000, -1, &r, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_int_equal(ps_kv_remove("zk://zk1:2181/psplus", NULL, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
#endif
	/* A malformed zk:// URL fails before any connection is tried. */
	assert_int_equal(ps_kv_read("zk://zk1:2181/a//b", &r, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_kv_publish("none://", &e, err, sizeof(err)), PS_EBAD_URL);
	assert_non_null(strstr(err, "none://"));
	assert_int_equal(ps_kv_read("relative/path", &r, err, sizeof(err)), PS_EBAD_URL);
	snprintf(url, sizeof(url), "file://%s/", f->dir);
	assert_int_equal(ps_kv_publish(url, &e, err, sizeof(err)), PS_EBAD_URL);
	assert_non_null(strstr(err, "directory"));
	e.port = 0;
	assert_int_equal(ps_kv_publish(f->url, &e, err, sizeof(err)), -EINVAL);
}

static void test_remove(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry a = entry("10.0.0.1", 1111, 2), b = entry("10.0.0.2", 2222, 2);
	char err[512];

	assert_int_equal(ps_kv_remove(f->url, &a, err, sizeof(err)), 0); /* absent: fine */
	assert_int_equal(ps_kv_publish(f->url, &b, err, sizeof(err)), 0);
	/* Another scheduler's entry stays. */
	assert_int_equal(ps_kv_remove(f->url, &a, err, sizeof(err)), -ESTALE);
	assert_int_equal(access(f->path, F_OK), 0);
	assert_int_equal(ps_kv_remove(f->url, &b, err, sizeof(err)), 0);
	assert_int_equal(access(f->path, F_OK), -1);
	assert_int_equal(ps_kv_publish(f->url, &b, err, sizeof(err)), 0);
	assert_int_equal(ps_kv_remove(f->url, NULL, err, sizeof(err)), 0);
	assert_int_equal(count_entries(f->dir), 0);
}

static void *publish_later(void *arg)
{
	struct fixture *f = arg;
	struct ps_kv_entry e = entry("10.9.8.7", 9999, 5);

	usleep(150 * 1000);
	assert_int_equal(ps_kv_publish(f->url, &e, NULL, 0), 0);
	return NULL;
}

static void test_wait(void **state)
{
	struct fixture *f = *state;
	struct ps_kv_entry r;
	char err[512];
	pthread_t t;
	uint64_t t0;
	int stop[2];

	t0 = ps_clock_now_ms();
	assert_int_equal(ps_kv_wait(f->url, 100, -1, &r, err, sizeof(err)), PS_ETIMEOUT);
	assert_true(ps_clock_now_ms() - t0 >= 95);
	assert_non_null(strstr(err, "gave up after 100 ms"));

	assert_int_equal(pipe(stop), 0);
	assert_int_equal(write(stop[1], "x", 1), 1);
	assert_int_equal(ps_kv_wait(f->url, 10000, stop[0], &r, err, sizeof(err)), PS_ESHUTDOWN);
	close(stop[0]);
	close(stop[1]);

	/* The entry appears during the wait. */
	assert_int_equal(pthread_create(&t, NULL, publish_later, f), 0);
	assert_int_equal(ps_kv_wait(f->url, 5000, -1, &r, err, sizeof(err)), 0);
	pthread_join(t, NULL);
	assert_string_equal(r.host, "10.9.8.7");
	assert_int_equal(r.server_num, 5);
}

#ifdef PS_HAVE_ZOOKEEPER
/* A TCP port on 127.0.0.1 where nothing listens (bound, then closed). */
static int closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* zk:// with no ZooKeeper server: every wait ends at its deadline, with a message naming the
 * ensemble, and the stop descriptor still ends a wait early. (The calls against a live
 * ensemble: tests/integration/test_kv_zk.sh.) */
static void test_zk_unreachable(void **state)
{
	struct ps_kv_entry r;
	char err[512], url[128], ens[64];
	uint64_t t0, took;
	int stop[2];

	snprintf(ens, sizeof(ens), "127.0.0.1:%d", closed_port());
	snprintf(url, sizeof(url), "zk://%s/psplus/unit", ens);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_kv_wait(url, 300, -1, &r, err, sizeof(err)), PS_ETIMEOUT);
	took = ps_clock_now_ms() - t0;
	assert_true(took >= 295 && took < 3000);
	assert_non_null(strstr(err, "gave up after 300 ms"));
	assert_non_null(strstr(err, "no ZooKeeper server of"));
	assert_non_null(strstr(err, ens));

	assert_int_equal(pipe(stop), 0);
	assert_int_equal(write(stop[1], "x", 1), 1);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_kv_wait(url, 60000, stop[0], &r, err, sizeof(err)), PS_ESHUTDOWN);
	assert_true(ps_clock_now_ms() - t0 < 3000);
	close(stop[0]);
	close(stop[1]);
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_publish_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_schemes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait, setup, teardown),
#ifdef PS_HAVE_ZOOKEEPER
		cmocka_unit_test(test_zk_unreachable),
#endif
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
