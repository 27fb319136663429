/*
 * Control-plane sockets and authentication: listen/connect on loopback, refused and timed-out
 * connects, address formatting, token files and the constant-time comparison.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/ctl.h"

static void test_listen_connect(void **state)
{
	char host[INET6_ADDRSTRLEN], lhost[INET6_ADDRSTRLEN];
	uint16_t port = 0, lport = 0, pport = 0;
	int lfd, cfd, afd = -1, one = 0;
	socklen_t sl = sizeof(one);

	assert_int_equal(ps_ctl_listen("127.0.0.1", 0, &lfd), 0);
	assert_int_equal(ps_ctl_sock_name(lfd, false, host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_true(port > 0);
	assert_int_equal(ps_ctl_connect("127.0.0.1", port, 1000, -1, &cfd), 0);
	assert_int_equal(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, &sl), 0);
	assert_int_equal(one, 1);
	for (int i = 0; i < 100 && afd < 0; i++) {
		afd = accept(lfd, NULL, NULL);
		if (afd < 0)
			usleep(10000);
	}
	assert_true(afd >= 0);
	/* Each end sees the other. */
	assert_int_equal(ps_ctl_sock_name(cfd, false, lhost, sizeof(lhost), &lport), 0);
	assert_int_equal(ps_ctl_sock_name(afd, true, host, sizeof(host), &pport), 0);
	assert_string_equal(lhost, host);
	assert_int_equal(lport, pport);
	close(afd);
	close(cfd);
	close(lfd);
}

static void test_connect_refused(void **state)
{
	uint16_t port;
	int lfd, fd = -1;
	char host[INET6_ADDRSTRLEN];

	/* A port that was just free: bind, read it, close. */
	assert_int_equal(ps_ctl_listen("127.0.0.1", 0, &lfd), 0);
	assert_int_equal(ps_ctl_sock_name(lfd, false, host, sizeof(host), &port), 0);
	close(lfd);
	assert_int_equal(ps_ctl_connect("127.0.0.1", port, 1000, -1, &fd), -ECONNREFUSED);
	assert_int_equal(fd, -1);
}

static void test_listen_errors(void **state)
{
	int fd, fd2;
	uint16_t port;
	char host[INET6_ADDRSTRLEN];

	assert_int_equal(ps_ctl_listen("127.0.0.1", 0, &fd), 0);
	assert_int_equal(ps_ctl_sock_name(fd, false, host, sizeof(host), &port), 0);
	assert_int_equal(ps_ctl_listen("127.0.0.1", port, &fd2), -EADDRINUSE);
	close(fd);
	/* TEST-NET-1: not an address of this host. */
	assert_int_equal(ps_ctl_listen("192.0.2.1", 0, &fd2), -EADDRNOTAVAIL);
}

static void test_addr_format(void **state)
{
	char buf[PS_CTL_ADDR_STRLEN];

	ps_ctl_addr_format("10.0.0.1", 7000, buf, sizeof(buf));
	assert_string_equal(buf, "10.0.0.1:7000");
	ps_ctl_addr_format("fe80::1", 1, buf, sizeof(buf));
	assert_string_equal(buf, "[fe80::1]:1");
	ps_ctl_default_host(buf, sizeof(buf));
	assert_true(strlen(buf) >= 7);
	assert_null(strchr(buf, ':'));
}

static char *write_tmp(const char *content, size_t len)
{
	char *path = strdup("/tmp/psplus_tokXXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
	return path;
}

static void test_token_load(void **state)
{
	uint8_t buf[PS_CTL_TOKEN_MAX];
	size_t len = 0;
	char err[512], *p, *big;

	p = write_tmp("s3cret\r\n \n", 10);
	assert_int_equal(ps_ctl_token_load(p, buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 6);
	assert_memory_equal(buf, "s3cret", 6);
	unlink(p);
	free(p);

	p = write_tmp("\n\n", 2);
	assert_int_equal(ps_ctl_token_load(p, buf, &len, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "is empty"));
	unlink(p);
	free(p);

	big = malloc(PS_CTL_TOKEN_MAX + 1);
	memset(big, 'k', PS_CTL_TOKEN_MAX + 1);
	p = write_tmp(big, PS_CTL_TOKEN_MAX);
	assert_int_equal(ps_ctl_token_load(p, buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, PS_CTL_TOKEN_MAX);
	unlink(p);
	free(p);
	p = write_tmp(big, PS_CTL_TOKEN_MAX + 1);
	assert_int_equal(ps_ctl_token_load(p, buf, &len, err, sizeof(err)), -E2BIG);
	unlink(p);
	free(p);
	free(big);

	assert_int_equal(
		ps_ctl_token_load("/nonexistent/psplus/token", buf, &len, err, sizeof(err)),
		-ENOENT);
	assert_non_null(strstr(err, "/nonexistent/psplus/token"));
}

static void test_token_equal(void **state)
{
	const uint8_t a[] = "secret", b[] = "secreT", c[] = "secret-longer";

	assert_true(ps_ctl_token_equal(a, 6, a, 6));
	assert_false(ps_ctl_token_equal(a, 6, b, 6));
	/* A prefix is not a match, in either order. */
	assert_false(ps_ctl_token_equal(a, 6, c, 13));
	assert_false(ps_ctl_token_equal(c, 13, a, 6));
	assert_false(ps_ctl_token_equal(a, 6, NULL, 0));
	assert_true(ps_ctl_token_equal(NULL, 0, NULL, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_connect), cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_listen_errors),  cmocka_unit_test(test_addr_format),
		cmocka_unit_test(test_token_load),     cmocka_unit_test(test_token_equal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
