/*
 * The error table: every project code has a distinct name and message, sits outside errno's
 * range, and errno values are described by the C library's text.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

static const int all_codes[] = {
#define XX(name, off, msg) PS_E##name,
	PS_ERRNO_MAP(XX)
#undef XX
};
#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void test_project_codes_distinct(void **state)
{
	for (size_t i = 0; i < NCODES; i++) {
		assert_true(all_codes[i] < PS_ERR_BASE);
		assert_true(all_codes[i] < -4096);
		for (size_t j = i + 1; j < NCODES; j++) {
			assert_int_not_equal(all_codes[i], all_codes[j]);
			assert_string_not_equal(ps_strerror(all_codes[i]),
						ps_strerror(all_codes[j]));
			assert_string_not_equal(ps_err_name(all_codes[i]),
						ps_err_name(all_codes[j]));
		}
	}
}

static void test_known_messages(void **state)
{
	assert_string_equal(ps_strerror(0), "success");
	assert_string_equal(ps_err_name(0), "OK");
	assert_string_equal(ps_strerror(PS_ESTALE_VERSION),
			    "request carries a stale cluster version");
	assert_string_equal(ps_err_name(PS_ESTALE_VERSION), "PS_ESTALE_VERSION");
	assert_int_equal(PS_ESTALE_VERSION, -10001);
	assert_string_equal(ps_err_name(PS_EDUP_SERVER_ID), "PS_EDUP_SERVER_ID");
}

static void test_errno_values(void **state)
{
	assert_string_equal(ps_strerror(-ENOMEM), "Cannot allocate memory");
	assert_string_equal(ps_strerror(ENOMEM), "Cannot allocate memory");
	assert_string_equal(ps_err_name(-ETIMEDOUT), "ETIMEDOUT");
	assert_string_equal(ps_strerror(-ECONNREFUSED), "Connection refused");
}

static void test_unknown_codes(void **state)
{
	assert_non_null(ps_strerror(-9999));
	assert_non_null(ps_strerror(PS_ERR_BASE - 999));
	assert_string_equal(ps_err_name(PS_ERR_BASE - 999), "UNKNOWN");
	assert_string_equal(ps_strerror(PS_ERR_BASE - 999), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_project_codes_distinct),
		cmocka_unit_test(test_known_messages),
		cmocka_unit_test(test_errno_values),
		cmocka_unit_test(test_unknown_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
