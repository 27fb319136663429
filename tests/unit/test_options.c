/*
 * The option parser: every accepted and rejected form, and the message that names the option.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/options.h"

#define G_A 1u
#define G_B 2u

static const struct ps_opt_spec specs[] = {
	{"-sp", "--scheduler_kv_path", "scheduler_kv_path", PS_OPT_STRING, G_A | G_B, NULL, 0, 0,
	 false, "URL", "kv path"},
	{"-si", "--server_id", "server_id", PS_OPT_INT, G_B, NULL, 0, 100, false, NULL, "id"},
	{"-sn", "--server_num", NULL, PS_OPT_INT, G_A, NULL, 0, 0, false, NULL, "count"},
	{"-bc", "--bind_cores", "bind_cores", PS_OPT_BOOL, 0, "False", 0, 0, false, NULL, "bind"},
	{"-cp", "--checkpoint_path", "checkpoint_path", PS_OPT_STRING, 0, "none://", 0, 0, false,
	 NULL, "ckpt"},
	{NULL, "--plugin", "plugin", PS_OPT_STRING, 0, NULL, 0, 0, true, NULL, "plugins"},
	{"-h", "--help", "help", PS_OPT_FLAG, 0, NULL, 0, 0, false, NULL, "help"},
};

struct fx {
	struct ps_opt_parser *p;
	char err[256];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(ps_opt_parser_create(&f->p), 0);
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		assert_int_equal(ps_opt_add(f->p, &specs[i]), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ps_opt_parser_destroy(f->p);
	free(f);
	return 0;
}

#define PARSE(f, ...)                                                                          \
	({                                                                                     \
		char *argv_[] = {"prog", __VA_ARGS__};                                         \
		ps_opt_parse((f)->p, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_, (f)->err, \
			     sizeof((f)->err));                                                \
	})

static void test_short_long_and_equals(void **state)
{
	struct fx *f = *state;
	const char *s;
	int64_t v;
	bool b;

	assert_int_equal(PARSE(f, "-sp", "file:///tmp/k", "--server_id=7", "-bc", "True"), 0);
	assert_int_equal(ps_opt_get_str(f->p, "scheduler_kv_path", &s), 0);
	assert_string_equal(s, "file:///tmp/k");
	assert_int_equal(ps_opt_get_int(f->p, "server_id", &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(ps_opt_get_bool(f->p, "bind_cores", &b), 0);
	assert_true(b);
	assert_true(ps_opt_is_set(f->p, "server_id"));
	assert_false(ps_opt_is_set(f->p, "checkpoint_path"));
}

static void test_defaults_and_name_from_long(void **state)
{
	struct fx *f = *state;
	const char *s;
	bool b = true;
	int64_t v;

	assert_int_equal(PARSE(f, "-sn", "3"), 0);
	assert_int_equal(ps_opt_get_str(f->p, "checkpoint_path", &s), 0);
	assert_string_equal(s, "none://");
	assert_int_equal(ps_opt_get_bool(f->p, "bind_cores", &b), 0);
	assert_false(b);
	assert_int_equal(ps_opt_get_int(f->p, "server_num", &v), 0); /* name from --server_num */
	assert_int_equal(v, 3);
	assert_int_equal(ps_opt_get_int(f->p, "server_id", &v), -ENODATA);
	assert_int_equal(ps_opt_get_int(f->p, "nonexistent", &v), -ENOENT);
	assert_int_equal(ps_opt_get_str(f->p, "scheduler_kv_path", &s), 0);
	assert_null(s);
	assert_int_equal(ps_opt_get_bool(f->p, "help", &b), 0);
	assert_false(b);
}

static void test_bool_forms(void **state)
{
	static const char *const t[] = {"True", "true", "1", "yes", "on", "TRUE"};
	static const char *const n[] = {"False", "false", "0", "no", "off", "FALSE"};
	bool b;

	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(ps_opt_parse_bool(t[i], &b), 0);
		assert_true(b);
		assert_int_equal(ps_opt_parse_bool(n[i], &b), 0);
		assert_false(b);
	}
	assert_int_equal(ps_opt_parse_bool("Maybe", &b), -EINVAL);
	assert_int_equal(ps_opt_parse_bool("", &b), -EINVAL);
	assert_int_equal(ps_opt_parse_bool(NULL, &b), -EINVAL);
}

static void test_int_forms(void **state)
{
	int64_t v;

	assert_int_equal(ps_opt_parse_int("42", &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(ps_opt_parse_int("-5", &v), 0);
	assert_int_equal(v, -5);
	assert_int_equal(ps_opt_parse_int("0x10", &v), 0);
	assert_int_equal(v, 16);
	assert_int_equal(ps_opt_parse_int("abc", &v), -EINVAL);
	assert_int_equal(ps_opt_parse_int("12abc", &v), -EINVAL);
	assert_int_equal(ps_opt_parse_int("", &v), -EINVAL);
	assert_int_equal(ps_opt_parse_int(" 1", &v), -EINVAL);
	assert_int_equal(ps_opt_parse_int("99999999999999999999", &v), -ERANGE);
}

static void test_unknown_option_named(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-x", "1"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "'-x'"));
	assert_int_equal(PARSE(f, "--nope=3"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "'--nope'"));
}

static void test_malformed_int_named(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-si", "abc"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--server_id"));
	assert_non_null(strstr(f->err, "'abc'"));
}

static void test_out_of_range_named(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-si", "101"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--server_id"));
	assert_non_null(strstr(f->err, "out of range [0, 100]"));
	assert_int_equal(PARSE(f, "-si", "-1"), PS_EBAD_OPTION);
	assert_int_equal(PARSE(f, "-si", "100"), 0);
}

static void test_bad_bool_named(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-bc", "Maybe"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--bind_cores"));
}

static void test_missing_value_named(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-sp"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--scheduler_kv_path"));
	assert_non_null(strstr(f->err, "needs a value"));
}

static void test_flag_takes_no_value(void **state)
{
	struct fx *f = *state;
	bool b;

	assert_int_equal(PARSE(f, "--help=1"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--help"));
	assert_int_equal(PARSE(f, "-h"), 0);
	assert_int_equal(ps_opt_get_bool(f->p, "help", &b), 0);
	assert_true(b);
}

static void test_positional_rejected(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "stray"), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "'stray'"));
	assert_int_equal(PARSE(f, "-"), PS_EBAD_OPTION);
}

static void test_required_by_group(void **state)
{
	struct fx *f = *state;

	assert_int_equal(PARSE(f, "-sp", "file:///k"), 0);
	/* group A also needs -sn; group B needs -si. */
	assert_int_equal(ps_opt_check_required(f->p, G_A, f->err, sizeof(f->err)), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--server_num"));
	assert_int_equal(ps_opt_check_required(f->p, G_B, f->err, sizeof(f->err)), PS_EBAD_OPTION);
	assert_non_null(strstr(f->err, "--server_id (-si)"));
	assert_int_equal(ps_opt_check_required(f->p, 0, f->err, sizeof(f->err)), 0);
}

static void test_repeatable_and_last_wins(void **state)
{
	struct fx *f = *state;
	const char *const *vals;
	const char *s;
	size_t n;

	assert_int_equal(PARSE(f, "--plugin", "a.so", "--plugin=b.so", "-sp", "x", "-sp", "y"), 0);
	assert_int_equal(ps_opt_get_list(f->p, "plugin", &vals, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(vals[0], "a.so");
	assert_string_equal(vals[1], "b.so");
	assert_int_equal(ps_opt_get_str(f->p, "scheduler_kv_path", &s), 0);
	assert_string_equal(s, "y");
}

static void test_add_rejects_bad_specs(void **state)
{
	struct fx *f = *state;
	struct ps_opt_spec s = {.long_name = "--other", .type = PS_OPT_INT, .def = "notanint"};

	assert_int_equal(ps_opt_add(f->p, &s), -EINVAL); /* bad default */
	s.def = NULL;
	s.long_name = "other";
	assert_int_equal(ps_opt_add(f->p, &s), -EINVAL); /* no "--" */
	s.long_name = "--server_id";
	assert_int_equal(ps_opt_add(f->p, &s), -EEXIST);
	s.long_name = "--fresh";
	s.short_name = "-sp";
	assert_int_equal(ps_opt_add(f->p, &s), -EEXIST);
	s.short_name = "-fr";
	assert_int_equal(ps_opt_add(f->p, &s), 0);
}

static void test_help_lists_everything(void **state)
{
	struct fx *f = *state;
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	assert_non_null(m);
	ps_opt_print_help(f->p, m);
	fclose(m);
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		assert_non_null(strstr(buf, specs[i].long_name));
		if (specs[i].short_name)
			assert_non_null(strstr(buf, specs[i].short_name));
	}
	assert_non_null(strstr(buf, "[default: none://]"));
	free(buf);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_short_long_and_equals),	   T(test_defaults_and_name_from_long),
		cmocka_unit_test(test_bool_forms), cmocka_unit_test(test_int_forms),
		T(test_unknown_option_named),	   T(test_malformed_int_named),
		T(test_out_of_range_named),	   T(test_bad_bool_named),
		T(test_missing_value_named),	   T(test_flag_takes_no_value),
		T(test_positional_rejected),	   T(test_required_by_group),
		T(test_repeatable_and_last_wins),  T(test_add_rejects_bad_specs),
		T(test_help_lists_everything),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
