/*
 * Dense and sparse parts: creation checks, the row layout ([value | slots], 64-byte stride,
 * page-aligned chunks reported to on_chunk), pulls and pushes, duplicate ids summed before the
 * update, a bad id anywhere in a batch leaving every row untouched, the changed-rows tracker
 * and export, iteration, and restore of whole rows.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/types.h>

#include "server/store.h"

struct chunks_seen {
	int n;
	size_t bytes;
	int fail_at; /* refuse the chunk with this index (-1: never) */
};

static int on_chunk(void *arg, void *addr, size_t len)
{
	struct chunks_seen *c = arg;

	assert_int_equal((uintptr_t)addr % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
	if (c->n == c->fail_at)
		return -EIO;
	c->n++;
	c->bytes += len;
	return 0;
}

static struct ps_var_spec sparse_spec(uint64_t rows, uint32_t width, enum ps_optim_kind ok)
{
	struct ps_var_spec s = {
		.kind = PS_VAR_SPARSE,
		.rows = rows,
		.width = width,
		.init = {.kind = PS_INIT_NORMAL, .stddev = 1.0f, .seed = 42},
		.optim = ps_optimizer_defaults(ok),
	};
	return s;
}

static struct ps_store_part *make(const struct ps_var_spec *spec, uint64_t begin, uint64_t end)
{
	struct ps_store_part_opts o = {
		.spec = spec, .var_id = 9, .begin = begin, .end = end, .numa_node = -1};
	struct ps_store_part *p = NULL;

	assert_int_equal(ps_store_part_create(&o, &p), 0);
	return p;
}

static struct ps_store_scratch *scratch(size_t batch, uint32_t width)
{
	struct ps_store_scratch_opts o = {.max_batch = batch, .max_width = width};
	struct ps_store_scratch *s = NULL;

	assert_int_equal(ps_store_scratch_create(&o, &s), 0);
	return s;
}

/* ---- creation -------------------------------------------------------------------------- */

static void test_create_checks(void **state)
{
	struct ps_var_spec s = sparse_spec(100, 8, PS_OPTIM_SGD);
	struct ps_store_part_opts o = {.spec = &s, .begin = 0, .end = 100, .numa_node = -1};
	struct ps_store_part *p = (void *)1;
	struct ps_store_scratch_opts so = {.max_batch = 0, .max_width = 8};
	struct ps_store_scratch *scr;

	(void)state;
	o.begin = 50, o.end = 50; /* empty range */
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	assert_null(p);
	o.begin = 0, o.end = 101; /* past the variable */
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	o.end = 100;
	s.width = 0;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	s.width = 8;
	s.dtype = (enum ps_dtype)3;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	s.dtype = PS_DTYPE_FLOAT32;
	s.kind = (enum ps_var_kind)7;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	s.kind = PS_VAR_SPARSE;
	s.init = (struct ps_initializer){.kind = PS_INIT_UNIFORM, .min = 1.0f, .max = 1.0f};
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	s.init.kind = PS_INIT_NORMAL;
	s.init.stddev = -1.0f;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	s.init = (struct ps_initializer){.kind = PS_INIT_ZEROS};
	s.optim.sgd.learning_rate = NAN;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	o.spec = NULL;
	assert_int_equal(ps_store_part_create(&o, &p), -EINVAL);
	assert_int_equal(ps_store_part_create(NULL, &p), -EINVAL);
	assert_int_equal(ps_store_scratch_create(&so, &scr), -EINVAL);
	ps_store_part_destroy(NULL);
	ps_store_scratch_destroy(NULL);
}

/* A refused chunk fails create with the callback's code and leaves nothing (ASan checks). */
static void test_chunk_refused(void **state)
{
	struct ps_var_spec s = sparse_spec(1000, 64, PS_OPTIM_ADAM);
	struct chunks_seen seen = {.fail_at = 2};
	struct ps_store_part_opts o = {.spec = &s,
				       .begin = 0,
				       .end = 1000,
				       .numa_node = -1,
				       .chunk_bytes = 64 << 10,
				       .on_chunk = on_chunk,
				       .on_chunk_arg = &seen};
	struct ps_store_part *p;

	(void)state;
	assert_int_equal(ps_store_part_create(&o, &p), -EIO);
	assert_null(p);
	assert_int_equal(seen.n, 2);
}

/* ---- layout ------------------------------------------------------------------------------ */

static void test_layout(void **state)
{
	struct ps_var_spec s = sparse_spec(1000, 20, PS_OPTIM_ADAGRAD);
	struct chunks_seen seen = {.fail_at = -1};
	struct ps_store_part_opts o = {.spec = &s,
				       .var_id = 9,
				       .begin = 100,
				       .end = 900,
				       .numa_node = -1,
				       .chunk_bytes = 32 << 10,
				       .on_chunk = on_chunk,
				       .on_chunk_arg = &seen};
	struct ps_store_chunk chunks[64];
	struct ps_store_part_info info;
	struct ps_store_part *p;
	size_t n;

	(void)state;
	assert_int_equal(ps_store_part_create(&o, &p), 0);
	ps_store_part_info(p, &info);
	/* (1 value + 1 slot) * 20 floats = 160 bytes, padded to 192. */
	assert_int_equal(info.nslots, 1);
	assert_int_equal(info.stride, 192);
	assert_int_equal(info.rows, 800);
	n = ps_store_part_chunks(p, chunks, 64);
	assert_int_equal(n, info.nchunks);
	assert_int_equal(n, (size_t)seen.n);
	assert_true(n > 1); /* 32 KiB chunks: 128 rows each */
	assert_int_equal(ps_store_part_chunks(p, NULL, 0), n);

	for (uint64_t id = 100; id < 900; id++) {
		const float *row = ps_store_row_addr(p, id);
		float init[20];
		bool inside = false;

		assert_non_null(row);
		assert_int_equal((uintptr_t)row % 64, 0);
		for (size_t c = 0; c < n; c++)
			inside |= (const char *)row >= (char *)chunks[c].addr &&
				  (const char *)row + info.stride <=
					  (char *)chunks[c].addr + chunks[c].len;
		assert_true(inside);
		ps_store_init_value(p, id, 0, init);
		assert_memory_equal(row, init, sizeof(init));
		/* The Adagrad accumulator sits right after the value. */
		for (int c = 0; c < 20; c++)
			assert_true(row[20 + c] == 0.1f);
		if (id > 100 && (id - 100) % 128)
			assert_ptr_equal((const char *)ps_store_row_addr(p, id - 1) + info.stride,
					 row);
	}
	assert_null(ps_store_row_addr(p, 99));
	assert_null(ps_store_row_addr(p, 900));
	ps_store_part_destroy(p);
}

/* ---- pull and push ---------------------------------------------------------------------- */

static void test_pull_push(void **state)
{
	struct ps_var_spec s = sparse_spec(50, 4, PS_OPTIM_SGD);
	struct ps_store_part *p;
	struct ps_store_scratch *scr = scratch(8, 4);
	uint64_t ids[3] = {10, 12, 10};
	float out[12], before[12], g[12];
	const float *addrs[3];

	(void)state;
	s.optim.sgd.learning_rate = 1.0f;
	p = make(&s, 10, 20);
	assert_int_equal(ps_store_pull(p, ids, 3, before, 4), 0);
	assert_memory_equal(before, before + 8, 4 * sizeof(float)); /* id 10 twice */
	assert_int_equal(ps_store_row_addrs(p, ids, 3, addrs), 0);
	assert_memory_equal(addrs[1], before + 4, 4 * sizeof(float));
	assert_ptr_equal(addrs[0], addrs[2]);

	/* Duplicates are summed, then applied once: SGD with lr 1 subtracts the sum. */
	for (int i = 0; i < 12; i++)
		g[i] = (float)(i + 1);
	assert_int_equal(ps_store_push(p, scr, ids, 3, g, 4), 0);
	assert_int_equal(ps_store_pull(p, ids, 2, out, 4), 0);
	for (int c = 0; c < 4; c++) {
		assert_true(out[c] == before[c] - (g[c] + g[8 + c]));
		assert_true(out[4 + c] == before[4 + c] - g[4 + c]);
	}

	/* Argument errors. */
	assert_int_equal(ps_store_pull(p, ids, 3, out, 5), -EINVAL);
	assert_int_equal(ps_store_push(p, scr, ids, 3, g, 3), -EINVAL);
	assert_int_equal(ps_store_push(p, NULL, ids, 3, g, 4), -EINVAL);
	assert_int_equal(ps_store_pull(p, NULL, 3, out, 4), -EINVAL);
	assert_int_equal(ps_store_push(p, scr, ids, 0, NULL, 4), 0);
	{
		uint64_t many[9] = {10, 11, 12, 13, 14, 15, 16, 17, 18};
		float gm[36] = {0};

		assert_int_equal(ps_store_push(p, scr, many, 9, gm, 4), -E2BIG);
	}
	assert_int_equal(ps_store_hash_pull64(p, scr, ids, 3, out, 4), -EINVAL);
	assert_int_equal(ps_store_hash_evict(p, 0, NULL), -EINVAL);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* Adagrad tells "sum, then one update" (accum += (g1 + g2)^2) from two updates. */
static void test_duplicates_summed(void **state)
{
	struct ps_var_spec s = sparse_spec(4, 1, PS_OPTIM_ADAGRAD);
	struct ps_store_part *p = make(&s, 0, 4);
	struct ps_store_scratch *scr = scratch(4, 1);
	uint64_t ids[4] = {2, 1, 2, 2};
	float g[4] = {1.0f, 5.0f, 2.0f, 3.0f};
	const float *r2 = ps_store_row_addr(p, 2), *r1 = ps_store_row_addr(p, 1);

	(void)state;
	assert_int_equal(ps_store_push(p, scr, ids, 4, g, 1), 0);
	assert_true(r2[1] == 0.1f + 36.0f);
	assert_true(r1[1] == 0.1f + 25.0f);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* ---- bad ids --------------------------------------------------------------------------- */

static void *snapshot(struct ps_store_part *p, size_t *len)
{
	struct ps_store_chunk c[16];
	size_t n = ps_store_part_chunks(p, c, 16), off = 0;
	char *buf;

	*len = 0;
	for (size_t i = 0; i < n; i++)
		*len += c[i].len;
	buf = malloc(*len);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + off, c[i].addr, c[i].len);
		off += c[i].len;
	}
	return buf;
}

static void test_bad_id_changes_nothing(void **state)
{
	struct ps_var_spec s = sparse_spec(100, 8, PS_OPTIM_ADAM);
	struct ps_store_part *p = make(&s, 20, 60);
	struct ps_store_scratch *scr = scratch(16, 8);
	struct ps_store_state st0, st1;
	uint64_t bad_last[4] = {20, 30, 59, 60}, bad_first[3] = {19, 25, 26};
	uint64_t huge[2] = {21, UINT64_MAX};
	float g[32], out[32];
	const float *addrs[4];
	size_t len1, len2;
	void *a, *b;

	(void)state;
	for (int i = 0; i < 32; i++)
		g[i] = 0.5f;
	ps_store_part_get_state(p, &st0);
	a = snapshot(p, &len1);
	assert_int_equal(ps_store_push(p, scr, bad_last, 4, g, 8), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_push(p, scr, bad_first, 3, g, 8), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_push(p, scr, huge, 2, g, 8), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_pull(p, bad_last, 4, out, 8), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_row_addrs(p, bad_first, 3, addrs), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_load_row(p, 60, 0, g, 8, 2), PS_EOUT_OF_RANGE);
	b = snapshot(p, &len2);
	assert_int_equal(len1, len2);
	assert_memory_equal(a, b, len1);
	ps_store_part_get_state(p, &st1);
	assert_memory_equal(&st0, &st1, sizeof(st0)); /* no step, no Adam power consumed */
	assert_int_equal(ps_store_changed_count(p, NULL), 0);
	free(a);
	free(b);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* ---- change tracking, export, iteration, restore --------------------------------------- */

struct collect {
	uint64_t ids[128];
	int n;
	int fail_after; /* return -EIO for the row after this many (-1: never) */
};

static int collect_row(void *arg, const struct ps_store_row *row)
{
	struct collect *c = arg;

	if (c->n == c->fail_after)
		return -EIO;
	c->ids[c->n++] = row->id;
	return 0;
}

static void test_changed_tracker(void **state)
{
	struct ps_var_spec s = sparse_spec(200, 2, PS_OPTIM_MOMENTUM);
	struct ps_store_part *p = make(&s, 0, 200);
	struct ps_store_scratch *scr = scratch(8, 2);
	uint64_t ids[6] = {130, 3, 64, 3, 63, 199};
	float g[12] = {0};
	struct collect c = {.fail_after = -1};

	(void)state;
	assert_int_equal(ps_store_changed_count(p, NULL), 0);
	assert_int_equal(ps_store_export(p, collect_row, NULL, &c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(ps_store_push(p, scr, ids, 6, g, 2), 0);
	assert_int_equal(ps_store_changed_count(p, NULL), 5);

	/* A failing writer keeps what it did not write. */
	c.fail_after = 2;
	assert_int_equal(ps_store_export(p, collect_row, NULL, &c), -EIO);
	assert_int_equal(c.n, 2);
	assert_int_equal(ps_store_changed_count(p, NULL), 3);
	c.fail_after = -1;
	assert_int_equal(ps_store_export(p, collect_row, NULL, &c), 0);
	assert_int_equal(c.n, 5);
	{
		uint64_t want[5] = {3, 63, 64, 130, 199}; /* id order, each once */

		assert_memory_equal(c.ids, want, sizeof(want));
	}
	assert_int_equal(ps_store_changed_count(p, NULL), 0);
	c.n = 0;
	assert_int_equal(ps_store_export(p, collect_row, NULL, &c), 0);
	assert_int_equal(c.n, 0);

	/* A dense push changes every row. */
	{
		float *dg = calloc(200 * 2, sizeof(float));

		assert_int_equal(ps_store_dense_push(p, dg, 200 * 2), 0);
		assert_int_equal(ps_store_dense_push(p, dg, 199 * 2), -EINVAL);
		free(dg);
	}
	assert_int_equal(ps_store_changed_count(p, NULL), 200);
	assert_int_equal(ps_store_export(p, NULL, NULL, NULL), 0);
	assert_int_equal(ps_store_changed_count(p, NULL), 0);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

static int stop_at_5(void *arg, const struct ps_store_row *row)
{
	int *n = arg;

	assert_int_equal(row->id, 30 + (uint64_t)*n);
	assert_int_equal(row->width, 3);
	assert_int_equal(row->nslots, 2);
	return ++*n == 5 ? 77 : 0;
}

static void test_foreach_and_load(void **state)
{
	struct ps_var_spec s = sparse_spec(100, 3, PS_OPTIM_FTRL);
	struct ps_store_part *p = make(&s, 30, 40);
	float data[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
	const float *row;
	int n = 0;

	(void)state;
	assert_int_equal(ps_store_foreach(p, stop_at_5, &n), 77);
	assert_int_equal(n, 5);
	assert_int_equal(ps_store_load_row(p, 35, 0, data, 3, 2), 0);
	row = ps_store_row_addr(p, 35);
	assert_memory_equal(row, data, sizeof(data));
	assert_int_equal(ps_store_load_row(p, 35, 0, data, 3, 1), -EINVAL);
	assert_int_equal(ps_store_load_row(p, 35, 0, data, 4, 2), -EINVAL);
	assert_int_equal(ps_store_load_row(p, 35, 1, data, 3, 2), -EINVAL);
	assert_int_equal(ps_store_changed_count(p, NULL), 0); /* a restore is not a change */
	ps_store_part_destroy(p);
}

/* A dense variable of one wide row, pulled and pushed whole. */
static void test_dense_wide(void **state)
{
	struct ps_var_spec s = {.kind = PS_VAR_DENSE,
				.rows = 1,
				.width = 100000,
				.init = {.kind = PS_INIT_CONSTANT, .value = 2.0f},
				.optim = ps_optimizer_defaults(PS_OPTIM_SGD)};
	struct ps_store_part *p;
	float *buf = malloc(100000 * sizeof(float));
	struct ps_store_part_info info;

	(void)state;
	s.optim.sgd.learning_rate = 0.5f;
	p = make(&s, 0, 1);
	ps_store_part_info(p, &info);
	assert_int_equal(info.stride, 400000);
	for (int i = 0; i < 100000; i++)
		buf[i] = (float)(i % 7);
	assert_int_equal(ps_store_dense_push(p, buf, 100000), 0);
	assert_int_equal(ps_store_dense_pull(p, buf, 100000), 0);
	for (int i = 0; i < 100000; i++)
		assert_true(buf[i] == 2.0f - 0.5f * (float)(i % 7));
	assert_int_equal(ps_store_dense_pull(p, buf, 99999), -EINVAL);
	free(buf);
	ps_store_part_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_checks),
		cmocka_unit_test(test_chunk_refused),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_pull_push),
		cmocka_unit_test(test_duplicates_summed),
		cmocka_unit_test(test_bad_id_changes_nothing),
		cmocka_unit_test(test_changed_tracker),
		cmocka_unit_test(test_foreach_and_load),
		cmocka_unit_test(test_dense_wide),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
