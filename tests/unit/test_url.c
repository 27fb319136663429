/*
 * URL parsing: every accepted and rejected form of file://, none://, zk:// and plugin schemes,
 * and host:port parsing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/url.h"

static struct ps_url u;
static char err[512];

static void test_file(void **state)
{
	assert_int_equal(ps_url_parse("file:///tmp/kv", &u, err, sizeof(err)), 0);
	assert_string_equal(u.scheme, "file");
	assert_string_equal(u.path, "/tmp/kv");
	assert_int_equal(ps_url_parse("file://localhost/var/x", &u, err, sizeof(err)), 0);
	assert_string_equal(u.path, "/var/x");
}

static void test_file_rejected(void **state)
{
	assert_int_equal(ps_url_parse("file://tmp/kv", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_non_null(strstr(err, "absolute path"));
	assert_non_null(strstr(err, "'file://tmp/kv'"));
	assert_int_equal(ps_url_parse("file://", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_url_parse("file://otherhost/x", &u, err, sizeof(err)), PS_EBAD_URL);
}

static void test_none(void **state)
{
	assert_int_equal(ps_url_parse("none://", &u, err, sizeof(err)), 0);
	assert_string_equal(u.scheme, "none");
	assert_int_equal(ps_url_parse("none://x", &u, err, sizeof(err)), PS_EBAD_URL);
}

static void test_zk(void **state)
{
	assert_int_equal(ps_url_parse("zk://a:2000,b,[::1]:3000/psplus/s1", &u, err, sizeof(err)),
			 0);
	assert_string_equal(u.scheme, "zk");
	assert_int_equal(u.nhosts, 3);
	assert_string_equal(u.hosts[0].host, "a");
	assert_int_equal(u.hosts[0].port, 2000);
	assert_string_equal(u.hosts[1].host, "b");
	assert_int_equal(u.hosts[1].port, 2181);
	assert_string_equal(u.hosts[2].host, "::1");
	assert_int_equal(u.hosts[2].port, 3000);
	assert_string_equal(u.path, "/psplus/s1");
}

static void test_zk_rejected(void **state)
{
	static const char *const bad[] = {
		"zk://",       "zk:///path",	 "zk://h:2181",	    "zk://h:2181/",
		"zk://h:0/p",  "zk://h:65536/p", "zk://h:x/p",	    "zk://h:1,,g:2/p",
		"zk://h:1,/p", "zk://[::1/p",	 "zk://::1:2181/p", "zk://h:1/a//b",
		"zk://h:1/a/", "zk://h$:1/p",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(ps_url_parse(bad[i], &u, err, sizeof(err)), PS_EBAD_URL);
		assert_non_null(strstr(err, bad[i]));
	}
}

static void test_malformed(void **state)
{
	assert_int_equal(ps_url_parse("", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_url_parse(NULL, &u, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_url_parse("/tmp/x", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_non_null(strstr(err, "not a URL"));
	assert_int_equal(ps_url_parse("://x", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_url_parse("FILE:///x", &u, err, sizeof(err)), PS_EBAD_URL);
	assert_int_equal(ps_url_parse("1ab://x", &u, err, sizeof(err)), PS_EBAD_URL);
}

static void test_plugin_schemes(void **state)
{
	assert_int_equal(ps_url_parse("hdfs://nn/x", &u, err, sizeof(err)), PS_EUNSUPPORTED_SCHEME);
	assert_non_null(strstr(err, "'hdfs'"));
	assert_int_equal(ps_url_register_scheme("hdfs"), 0);
	assert_int_equal(ps_url_register_scheme("hdfs"), -EEXIST);
	assert_int_equal(ps_url_register_scheme("file"), -EEXIST);
	assert_int_equal(ps_url_register_scheme("Bad"), -EINVAL);
	assert_int_equal(ps_url_register_scheme(""), -EINVAL);
	assert_int_equal(ps_url_register_scheme(NULL), -EINVAL);
	assert_int_equal(ps_url_parse("hdfs://nn:9000/models/a", &u, err, sizeof(err)), 0);
	assert_string_equal(u.scheme, "hdfs");
	assert_string_equal(u.path, "nn:9000/models/a");
}

static void test_hostport(void **state)
{
	struct ps_url_host h;

	assert_int_equal(ps_url_parse_hostport("10.0.0.1:7000", 0, &h, err, sizeof(err)), 0);
	assert_string_equal(h.host, "10.0.0.1");
	assert_int_equal(h.port, 7000);
	assert_int_equal(ps_url_parse_hostport(":7000", 0, &h, err, sizeof(err)), 0);
	assert_string_equal(h.host, "");
	assert_int_equal(ps_url_parse_hostport("[fe80::1]:9", 0, &h, err, sizeof(err)), 0);
	assert_string_equal(h.host, "fe80::1");
	assert_int_equal(ps_url_parse_hostport("host", 5, &h, err, sizeof(err)), 0);
	assert_int_equal(h.port, 5);
	assert_int_equal(ps_url_parse_hostport("host", 0, &h, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "missing ':port'"));
	assert_int_equal(ps_url_parse_hostport("host:0", 0, &h, err, sizeof(err)), -EINVAL);
	assert_int_equal(ps_url_parse_hostport("host:99999", 0, &h, err, sizeof(err)), -EINVAL);
	assert_int_equal(ps_url_parse_hostport("host:", 0, &h, err, sizeof(err)), -EINVAL);
	assert_int_equal(ps_url_parse_hostport("[::1]x", 0, &h, err, sizeof(err)), -EINVAL);
	assert_int_equal(ps_url_parse_hostport("a b:1", 0, &h, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file),	       cmocka_unit_test(test_file_rejected),
		cmocka_unit_test(test_none),	       cmocka_unit_test(test_zk),
		cmocka_unit_test(test_zk_rejected),    cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_plugin_schemes), cmocka_unit_test(test_hostport),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
