/*
 * Plugin loading: a good plugin registers a URL scheme; a missing file, a plugin without the
 * entry point and one whose entry point fails are errors that name the file.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/plugin.h>

#include "common/url.h"

static char err[1024];

static void test_good_plugin_registers_scheme(void **state)
{
	struct ps_url u;

	assert_int_equal(ps_url_parse("testfs://bucket/x", &u, err, sizeof(err)),
			 PS_EUNSUPPORTED_SCHEME);
	assert_int_equal(ps_plugin_load(PLUGIN_GOOD, err, sizeof(err)), 0);
	assert_int_equal(ps_url_parse("testfs://bucket/x", &u, err, sizeof(err)), 0);
	assert_string_equal(u.path, "bucket/x");
}

static void test_missing_file(void **state)
{
	assert_int_equal(ps_plugin_load("/nonexistent/p.so", err, sizeof(err)), PS_EPLUGIN);
	assert_non_null(strstr(err, "/nonexistent/p.so"));
	assert_non_null(strstr(err, "failed to load"));
}

static void test_failing_entry_point(void **state)
{
	assert_int_equal(ps_plugin_load(PLUGIN_FAIL, err, sizeof(err)), PS_EPLUGIN);
	assert_non_null(strstr(err, PLUGIN_FAIL));
	assert_non_null(strstr(err, "Operation not permitted"));
}

static void test_no_entry_point(void **state)
{
	assert_int_equal(ps_plugin_load(PLUGIN_NOENTRY, err, sizeof(err)), PS_EPLUGIN);
	assert_non_null(strstr(err, PLUGIN_NOENTRY));
	assert_non_null(strstr(err, "psplus_plugin_init"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_plugin_registers_scheme),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_failing_entry_point),
		cmocka_unit_test(test_no_entry_point),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
