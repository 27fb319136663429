/*
 * Streaming-model plugins: the example plugin (plugins/example_sm, scheme count://) loaded with
 * ps_plugin_load() and written through the manager; registration refusals (built-in schemes,
 * duplicates, incomplete ops tables); uncommitted writes dropped by the plugin too.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/plugin.h>

#include "common/url.h"
#include "model_io/sm.h"
#include "tests/unit/mio_test_util.h"

static char err[8192];

static char *slurp(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_example_plugin(void **state)
{
	char dir[512], url[700], path[600];
	struct ps_sm_writer_opts o = {.writer_id = 3};
	struct ps_sm_writer *w;
	struct ps_sm_writer_stats st;
	float v[8] = {0};
	uint64_t keys[2] = {5, 6};
	struct ps_sm_dense_model dm = {
		.var_name = "bias", .var_id = 1, .width = 2, .nrows = 2, .values = v};
	struct ps_sm_sparse_model sp = {.var_name = "emb",
					.var_id = 2,
					.width = 2,
					.nslots = 1,
					.n = 2,
					.ids = keys,
					.values = v};
	struct ps_sm_hash_model hm = {.var_name = "h\"q",
				      .var_id = 3,
				      .width = 4,
				      .key_bits = 64,
				      .n = 2,
				      .keys = keys,
				      .values = v,
				      .ndeleted = 2,
				      .deleted = keys};
	struct ps_url u;
	const char *s;

	tm_tmpdir(dir, sizeof(dir), "sm-plugin");
	snprintf(path, sizeof(path), "%s/summary.json", dir);
	snprintf(url, sizeof(url), "count://%s", path);

	assert_null(ps_sm_manager_get("count"));
	assert_int_equal(ps_sm_open_writer(url, &o, &w, err, sizeof(err)), PS_EUNSUPPORTED_SCHEME);
	assert_int_equal(ps_plugin_load(PLUGIN_EXAMPLE_SM, err, sizeof(err)), 0);
	assert_non_null(ps_sm_manager_get("count"));
	assert_ptr_equal(ps_sm_manager_get("count"), ps_plugin_model_writer("count"));
	/* Registering the writer made the scheme a URL scheme too. */
	assert_int_equal(ps_url_parse(url, &u, err, sizeof(err)), 0);
	assert_string_equal(u.scheme, "count");

	assert_int_equal(ps_sm_open_writer("count://relative", &o, &w, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "absolute file path"));
	assert_int_equal(ps_sm_open_writer(url, &o, &w, err, sizeof(err)), 0);
	assert_int_equal(ps_sm_write_dense(w, &dm), 0);
	assert_int_equal(ps_sm_write_sparse(w, &sp), 0);
	assert_int_equal(ps_sm_write_hash(w, &hm), 0);
	assert_null(slurp(path)); /* nothing before the commit */
	assert_int_equal(ps_sm_writer_commit(w), 0);
	s = slurp(path);
	assert_non_null(s);
	assert_string_equal(s, "{\"scheme\":\"count\",\"writer_id\":3,\"commits\":1,\"models\":3,"
			       "\"dense_rows\":2,\"sparse_rows\":2,\"hash_rows\":2,"
			       "\"hash_deletes\":2,\"value_bytes\":80,\"last_var\":\"h\\\"q\"}\n");
	/* Invalid models never reach the plugin. */
	dm.width = 0;
	assert_int_equal(ps_sm_write_dense(w, &dm), -EINVAL);
	dm.width = 2;
	assert_int_equal(ps_sm_write_dense(w, &dm), 0);
	assert_int_equal(ps_sm_writer_commit(w), 0);
	assert_non_null(strstr(slurp(path), "\"commits\":2,\"models\":4,\"dense_rows\":4,"));
	ps_sm_writer_stats(w, &st);
	assert_int_equal(st.commits, 2);
	assert_int_equal(st.models, 4);
	/* Written but not committed: dropped at close. */
	assert_int_equal(ps_sm_write_dense(w, &dm), 0);
	ps_sm_writer_close(w);
	assert_non_null(strstr(slurp(path), "\"commits\":2,"));

	/* OpenWriteAny through the plugin. */
	{
		struct ps_sm_batch b = {.hash = &hm, .nhash = 1};

		assert_int_equal(ps_sm_open_write_any(url, &o, &b, err, sizeof(err)), 0);
		assert_non_null(strstr(slurp(path), "\"commits\":1,\"models\":1,"));
	}
	/* A plugin write error comes back with the plugin's message. */
	{
		char bad[700];

		snprintf(bad, sizeof(bad), "count://%s/no/such/dir/s.json", dir);
		assert_int_equal(ps_sm_open_writer(bad, &o, &w, err, sizeof(err)), 0);
		assert_int_equal(ps_sm_write_dense(w, &dm), 0);
		assert_int_equal(ps_sm_writer_commit(w), -ENOENT);
		assert_non_null(strstr(ps_sm_writer_errmsg(w), "cannot write"));
		ps_sm_writer_close(w);
	}
	tm_rmrf(dir);
}

static int nop_open(const char *url, const char *rest, const struct ps_sm_writer_opts *opts,
		    void **state, char *err_, size_t errlen)
{
	*state = NULL;
	return 0;
}

static int nop_dense(void *s, const struct ps_sm_dense_model *m)
{
	return 0;
}

static int nop_sparse(void *s, const struct ps_sm_sparse_model *m)
{
	return 0;
}

static int nop_hash(void *s, const struct ps_sm_hash_model *m)
{
	return 0;
}

static int nop_commit(void *s)
{
	return 0;
}

static void nop_close(void *s)
{
}

static void test_registration_refusals(void **state)
{
	struct ps_sm_writer_ops ops = {
		.size = sizeof(ops),
		.open = nop_open,
		.write_dense = nop_dense,
		.write_sparse = nop_sparse,
		.write_hash = nop_hash,
		.commit = nop_commit,
		.close = nop_close,
	};
	static struct ps_sm_writer_ops keep;

	assert_int_equal(ps_plugin_register_model_writer("file", &ops), -EEXIST);
	assert_int_equal(ps_plugin_register_model_writer("none", &ops), -EEXIST);
	assert_int_equal(ps_plugin_register_model_writer("zk", &ops), -EEXIST);
	assert_int_equal(ps_plugin_register_model_writer("Bad", &ops), -EINVAL);
	assert_int_equal(ps_plugin_register_model_writer("", &ops), -EINVAL);
	assert_int_equal(ps_plugin_register_model_writer(NULL, &ops), -EINVAL);
	assert_int_equal(ps_plugin_register_model_writer("x1", NULL), -EINVAL);
	ops.commit = NULL;
	assert_int_equal(ps_plugin_register_model_writer("x1", &ops), -EINVAL);
	ops.commit = nop_commit;
	ops.size = 16; /* built against a header without the write members */
	assert_int_equal(ps_plugin_register_model_writer("x1", &ops), -EINVAL);
	ops.size = sizeof(ops);
	ops.flags = 1;
	assert_int_equal(ps_plugin_register_model_writer("x1", &ops), -EINVAL);
	ops.flags = 0;
	keep = ops;
	/* A scheme a plugin registered for URLs first can get a writer too. */
	assert_int_equal(ps_url_register_scheme("kvthing"), 0);
	assert_int_equal(ps_plugin_register_model_writer("kvthing", &keep), 0);
	assert_int_equal(ps_plugin_register_model_writer("kvthing", &keep), -EEXIST);
	assert_int_equal(ps_plugin_register_model_writer("x1", &keep), 0);
	assert_ptr_equal(ps_sm_manager_get("x1"), &keep);
	{
		struct ps_sm_writer *w;

		/* errmsg is optional: the manager falls back to ps_strerror(). */
		assert_int_equal(ps_sm_open_writer("x1://anything", NULL, &w, err, sizeof(err)), 0);
		assert_int_equal(ps_sm_writer_commit(w), 0);
		ps_sm_writer_close(w);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_plugin),
		cmocka_unit_test(test_registration_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
