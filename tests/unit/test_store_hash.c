/*
 * Hash parts: rows created on first pull or push, 64- and 128-bit keys, stable row addresses
 * while the part grows (100k keys through many chunks and index rehashes), keys outside the
 * part's buckets leaving every row untouched, deterministic admission, delete and eviction
 * recorded for export, reuse of freed rows, growth refused by on_chunk, iteration and restore.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/types.h>

#include "server/store.h"

#define W 8

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct grow {
	int chunks;
	int refuse; /* refuse every new chunk when set */
};

static int on_chunk(void *arg, void *addr, size_t len)
{
	struct grow *g = arg;

	(void)addr;
	(void)len;
	if (g->refuse)
		return -EIO;
	g->chunks++;
	return 0;
}

static struct ps_var_spec hspec(enum ps_var_kind kind, enum ps_optim_kind ok)
{
	struct ps_var_spec s = {
		.kind = kind,
		.width = W,
		.init = {.kind = PS_INIT_UNIFORM, .min = -1.0f, .max = 1.0f, .seed = 5},
		.optim = ps_optimizer_defaults(ok),
	};
	return s;
}

static struct ps_store_part *hmake(const struct ps_var_spec *s, uint64_t begin, uint64_t end,
				   size_t chunk_bytes, struct grow *g)
{
	struct ps_store_part_opts o = {.spec = s,
				       .var_id = 11,
				       .begin = begin,
				       .end = end,
				       .numa_node = -1,
				       .chunk_bytes = chunk_bytes,
				       .on_chunk = g ? on_chunk : NULL,
				       .on_chunk_arg = g};
	struct ps_store_part *p = NULL;

	assert_int_equal(ps_store_part_create(&o, &p), 0);
	return p;
}

static struct ps_store_scratch *hscratch(size_t batch)
{
	struct ps_store_scratch_opts o = {.max_batch = batch, .max_width = W};
	struct ps_store_scratch *s = NULL;

	assert_int_equal(ps_store_scratch_create(&o, &s), 0);
	return s;
}

static uint64_t rows_of(const struct ps_store_part *p)
{
	struct ps_store_part_info info;

	ps_store_part_info(p, &info);
	return info.rows;
}

/* A key whose bucket is (or is not) in [lo, hi). */
static uint64_t key_in(uint32_t lo, uint32_t hi, bool inside)
{
	for (;;) {
		uint64_t k = rnd();
		uint32_t b = ps_hash_bucket64(k);

		if ((b >= lo && b < hi) == inside)
			return k;
	}
}

/* ---- basics ------------------------------------------------------------------------------ */

static void test_first_touch(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_SGD);
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 0, NULL);
	struct ps_store_scratch *scr = hscratch(16);
	uint64_t keys[3] = {1, 2, 1};
	float out[3 * W], init[W], g[3 * W];
	const float *addrs[3];

	(void)state;
	assert_int_equal(rows_of(p), 0);
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 3, out, W), 0);
	assert_int_equal(rows_of(p), 2);
	ps_store_init_value(p, 1, 0, init);
	assert_memory_equal(out, init, sizeof(init));
	assert_memory_equal(out + 2 * W, init, sizeof(init));
	assert_int_equal(ps_store_hash_row_addrs64(p, scr, keys, 3, addrs), 0);
	assert_ptr_equal(addrs[0], addrs[2]);
	assert_int_equal((uintptr_t)addrs[1] % 64, 0);
	assert_memory_equal(addrs[1], out + W, W * sizeof(float));

	/* A push creates too, and sums duplicates: SGD lr 0.01 on g = 1 + 1. */
	keys[1] = 3;
	for (int i = 0; i < 3 * W; i++)
		g[i] = 1.0f;
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 3, g, W), 0);
	assert_int_equal(rows_of(p), 3);
	assert_true(addrs[0][0] == init[0] - 0.01f * 2.0f);
	ps_store_init_value(p, 3, 0, init);
	assert_int_equal(ps_store_hash_pull64(p, scr, keys + 1, 1, out, W), 0);
	assert_true(out[0] == init[0] - 0.01f);

	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 3, out, W + 1), -EINVAL);
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 3, g, W - 1), -EINVAL);
	assert_int_equal(ps_store_hash_pull128(p, scr, (const struct ps_key128 *)keys, 1, out, W),
			 -EINVAL);
	assert_int_equal(ps_store_pull(p, keys, 1, out, W), -EINVAL);
	assert_int_equal(ps_store_push(p, scr, keys, 1, g, W), -EINVAL);
	{
		uint64_t many[17] = {0};

		assert_int_equal(ps_store_hash_pull64(p, scr, many, 17, out, W), -E2BIG);
	}
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

static void test_key128(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH128, PS_OPTIM_SGD);
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 0, NULL);
	struct ps_store_scratch *scr = hscratch(8);
	struct ps_key128 k[4] = {{7, 0}, {7, 1}, {7, UINT64_MAX}, {7, 1}};
	float out[4 * W], g[4 * W], a[W], b[W];

	(void)state;
	/* hi = 0 routes as the 64-bit key: the documented property. */
	for (uint64_t x = 0; x < 1000; x++)
		assert_int_equal(ps_hash_bucket128(x * 0x9e3779b97f4a7c15ull, 0),
				 ps_hash_bucket64(x * 0x9e3779b97f4a7c15ull));
	assert_int_equal(ps_store_hash_pull128(p, scr, k, 4, out, W), 0);
	assert_int_equal(rows_of(p), 3); /* same lo, different hi: distinct keys */
	ps_store_init_value(p, 7, 1, a);
	ps_store_init_value(p, 7, 0, b);
	assert_memory_equal(out + W, a, sizeof(a));
	assert_memory_not_equal(a, b, sizeof(a));
	for (int i = 0; i < 4 * W; i++)
		g[i] = (float)i;
	assert_int_equal(ps_store_hash_push128(p, scr, k, 4, g, W), 0);
	assert_int_equal(ps_store_hash_pull128(p, scr, k + 1, 1, out, W), 0);
	/*
	 * The duplicates' gradients summed, then one SGD step. Not bit-exact: the vector kernels
	 * may fuse the multiply-add (one rounding) where this expression is compiled without.
	 */
	for (int c = 0; c < W; c++) {
		float want = a[c] - 0.01f * (g[W + c] + g[3 * W + c]);

		assert_true(fabsf(out[c] - want) <= 1e-6f * (fabsf(want) + 1.0f));
	}
	assert_int_equal(ps_store_hash_push64(p, scr, &k[0].lo, 1, g, W), -EINVAL);
	{
		size_t nd;

		assert_int_equal(ps_store_hash_delete128(p, k + 1, 1, &nd), 0);
		assert_int_equal(nd, 1);
		assert_int_equal(rows_of(p), 2);
	}
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* ---- growth ------------------------------------------------------------------------------- */

static void test_growth_keeps_addresses(void **state)
{
	enum { FIRST = 1000, MORE = 100000, BATCH = 1000 };
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_ADAM);
	struct grow gr = {0};
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 64 << 10, &gr);
	struct ps_store_scratch *scr = hscratch(BATCH);
	uint64_t *keys = malloc((FIRST + MORE) * sizeof(*keys));
	const float **addr0 = malloc(FIRST * sizeof(*addr0)),
		    **addr1 = malloc(BATCH * sizeof(*addr1));
	float *vals0 = malloc(FIRST * W * sizeof(float)), *g = calloc(BATCH * W, sizeof(float));
	struct ps_store_part_info i0, i1;

	(void)state;
	for (int i = 0; i < FIRST + MORE; i++)
		keys[i] = rnd();
	for (int i = 0; i < BATCH * W; i++)
		g[i] = 0.25f;
	assert_int_equal(ps_store_hash_row_addrs64(p, scr, keys, FIRST, addr0), 0);
	assert_int_equal(ps_store_hash_push64(p, scr, keys, FIRST, g, W), 0);
	for (int i = 0; i < FIRST; i++)
		memcpy(vals0 + i * W, addr0[i], W * sizeof(float));
	ps_store_part_info(p, &i0);

	for (int off = FIRST; off < FIRST + MORE; off += BATCH)
		assert_int_equal(ps_store_hash_pull64(p, scr, keys + off, BATCH, g, W), 0);
	ps_store_part_info(p, &i1);
	assert_int_equal(i1.rows, FIRST + MORE);
	assert_true(i1.nchunks > i0.nchunks + 50); /* 64 KiB chunks of 512 rows: ~200 */
	assert_int_equal((int)i1.nchunks, gr.chunks);
	assert_true(i1.index_bytes > 8 * i0.index_bytes); /* the index was rehashed */

	assert_int_equal(ps_store_hash_row_addrs64(p, scr, keys, FIRST, addr1), 0);
	for (int i = 0; i < FIRST; i++) {
		assert_ptr_equal(addr1[i], addr0[i]);
		assert_memory_equal(addr1[i], vals0 + i * W, W * sizeof(float));
	}
	free(keys);
	free(addr0);
	free(addr1);
	free(vals0);
	free(g);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* A chunk the transport cannot register fails the push, which then changed nothing. */
static void test_growth_refused(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_ADAGRAD);
	struct grow gr = {0};
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 4096, &gr);
	struct ps_store_scratch *scr = hscratch(96);
	uint64_t keys[96];
	float g[96 * W], before[W], after[W];
	struct ps_store_state st0, st1;
	struct ps_store_part_info info;

	(void)state;
	for (int i = 0; i < 96; i++)
		keys[i] = rnd();
	for (int i = 0; i < 96 * W; i++)
		g[i] = 1.0f;
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 8, g, W), 0);
	ps_store_part_info(p, &info);
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 1, before, W), 0);
	ps_store_part_get_state(p, &st0);
	gr.refuse = 1;
	/* 8 present keys and 88 new ones: more than the 56 rows left in the 64-row chunk. */
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 96, g, W), -EIO);
	ps_store_part_get_state(p, &st1);
	assert_memory_equal(&st0, &st1, sizeof(st0));
	assert_int_equal(rows_of(p), 8);
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 1, after, W), 0);
	assert_memory_equal(before, after, sizeof(before));
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 96, g, W), -EIO);
	assert_int_equal(rows_of(p), 8);
	gr.refuse = 0;
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 96, g, W), 0);
	assert_int_equal(rows_of(p), 96);
	assert_int_equal(gr.chunks, 2);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* ---- bad keys ------------------------------------------------------------------------------ */

static int copy_row(void *arg, const struct ps_store_row *row)
{
	float **dst = arg;

	memcpy(*dst, row->data, (1 + row->nslots) * row->width * sizeof(float));
	*dst += (1 + row->nslots) * row->width;
	return 0;
}

static void test_bad_key_changes_nothing(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_FTRL);
	struct ps_store_part *p = hmake(&s, 1000, 30000, 0, NULL);
	struct ps_store_scratch *scr = hscratch(32);
	uint64_t keys[32];
	float g[32 * W], *a = calloc(64 * 3 * W, sizeof(float)),
			 *b = calloc(64 * 3 * W, sizeof(float));
	float *pa = a, *pb = b;
	const float *addrs[32];
	struct ps_store_state st0, st1;
	uint64_t nchanged;

	(void)state;
	for (int i = 0; i < 32; i++)
		keys[i] = key_in(1000, 30000, true);
	for (int i = 0; i < 32 * W; i++)
		g[i] = 0.5f;
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 16, g, W), 0);
	assert_int_equal(ps_store_foreach(p, copy_row, &pa), 0);
	ps_store_part_get_state(p, &st0);
	nchanged = ps_store_changed_count(p, NULL);

	/* Present keys, new keys, then one key of another part's bucket: refused whole. */
	keys[31] = key_in(1000, 30000, false);
	assert_int_equal(ps_store_hash_push64(p, scr, keys, 32, g, W), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_hash_pull64(p, scr, keys, 32, g, W), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_hash_row_addrs64(p, scr, keys, 32, addrs), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_hash_delete64(p, keys, 32, NULL), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_store_load_row(p, keys[31], 0, g, W, 2), PS_EOUT_OF_RANGE);

	assert_int_equal(rows_of(p), 16);
	assert_int_equal(ps_store_foreach(p, copy_row, &pb), 0);
	assert_memory_equal(a, b, 64 * 3 * W * sizeof(float));
	ps_store_part_get_state(p, &st1);
	assert_memory_equal(&st0, &st1, sizeof(st0));
	assert_int_equal(ps_store_changed_count(p, NULL), nchanged);
	free(a);
	free(b);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* ---- admission ----------------------------------------------------------------------------- */

static void test_admission(void **state)
{
	enum { N = 20000 };
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_SGD);
	struct ps_store_part *p1, *p2;
	struct ps_store_scratch *scr = hscratch(N);
	uint64_t *keys = malloc(N * sizeof(*keys));
	const float **a1 = malloc(N * sizeof(*a1)), **a2 = malloc(N * sizeof(*a2));
	float *g = calloc((size_t)N * W, sizeof(float)), init[W], out[W];
	int admitted = 0, other_seed = 0;
	uint64_t rejected = 0;

	(void)state;
	s.admit_prob = 0.3f;
	s.admit_seed = 1234;
	p1 = hmake(&s, 0, PS_HASH_BUCKETS, 0, NULL);
	p2 = hmake(&s, 0, PS_HASH_BUCKETS, 0, NULL); /* a replica */
	for (int i = 0; i < N; i++)
		keys[i] = rnd();
	assert_int_equal(ps_store_hash_row_addrs64(p1, scr, keys, N, a1), 0);
	assert_int_equal(ps_store_hash_row_addrs64(p2, scr, keys, N, a2), 0);
	for (int i = 0; i < N; i++) {
		bool want = ps_store_hash_admit(0.3f, 1234, keys[i], 0);

		assert_int_equal(a1[i] != NULL, want);
		assert_int_equal(a2[i] != NULL, want); /* replicas agree */
		admitted += want;
		other_seed += ps_store_hash_admit(0.3f, 4321, keys[i], 0) == want;
		if (!want)
			rejected = keys[i];
	}
	assert_int_equal(rows_of(p1), admitted);
	/* 0.3 * 20000 = 6000, sd ~65. */
	assert_in_range(admitted, 5600, 6400);
	assert_true(other_seed < N - 1000); /* another seed picks another set */
	assert_true(ps_store_hash_admit(0.0f, 1, 2, 3) && ps_store_hash_admit(1.0f, 1, 2, 3));

	/* A key not admitted reads as its initial value; its gradient is dropped. */
	assert_int_equal(ps_store_hash_push64(p1, scr, &rejected, 1, g, W), 0);
	assert_int_equal(rows_of(p1), admitted);
	ps_store_init_value(p1, rejected, 0, init);
	assert_int_equal(ps_store_hash_pull64(p1, scr, &rejected, 1, out, W), 0);
	assert_memory_equal(out, init, sizeof(init));
	/* A restore writes it regardless. */
	assert_int_equal(ps_store_load_row(p1, rejected, 0, g, W, 0), 0);
	assert_int_equal(rows_of(p1), admitted + 1);
	free(keys);
	free(a1);
	free(a2);
	free(g);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p1);
	ps_store_part_destroy(p2);
}

/* ---- delete, evict, export ---------------------------------------------------------------- */

struct exp {
	uint64_t rows[64], dels[64];
	int nrows, ndels;
	int fail_row_after;
};

static int exp_row(void *arg, const struct ps_store_row *row)
{
	struct exp *e = arg;

	if (e->nrows == e->fail_row_after)
		return -EIO;
	e->rows[e->nrows++] = row->id;
	return 0;
}

static int exp_del(void *arg, uint64_t key, uint64_t hi)
{
	struct exp *e = arg;

	assert_int_equal(hi, 0);
	e->dels[e->ndels++] = key;
	return 0;
}

static bool has(const uint64_t *v, int n, uint64_t k)
{
	for (int i = 0; i < n; i++) {
		if (v[i] == k)
			return true;
	}
	return false;
}

static void test_delete_evict_export(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_SGD);
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 0, NULL);
	struct ps_store_scratch *scr = hscratch(16);
	uint64_t k[10], absent = 999, n64;
	float g[16 * W] = {0}, out[W], init[W];
	struct exp e = {.fail_row_after = -1};
	const float *addr;
	size_t nd;

	(void)state;
	for (int i = 0; i < 10; i++)
		k[i] = 100 + (uint64_t)i;
	assert_int_equal(ps_store_hash_push64(p, scr, k, 10, g, W), 0); /* step 1 */
	assert_int_equal(ps_store_changed_count(p, &n64), 10);
	assert_int_equal(n64, 0);

	/* Export with a failing writer, then the rest. */
	e.fail_row_after = 4;
	assert_int_equal(ps_store_export(p, exp_row, exp_del, &e), -EIO);
	assert_int_equal(ps_store_changed_count(p, NULL), 6);
	e.fail_row_after = -1;
	assert_int_equal(ps_store_export(p, exp_row, exp_del, &e), 0);
	assert_int_equal(e.nrows, 10);
	for (int i = 0; i < 10; i++)
		assert_true(has(e.rows, e.nrows, k[i]));

	/* Delete two present keys and an absent one. */
	{
		uint64_t del[3] = {k[1], absent, k[2]};

		assert_int_equal(ps_store_hash_delete64(p, del, 3, &nd), 0);
	}
	assert_int_equal(nd, 2);
	assert_int_equal(rows_of(p), 8);
	assert_int_equal(ps_store_hash_row_addrs64(p, scr, &k[3], 1, &addr), 0);

	/* Steps 2..4 touch k[3] (push) and k[4] (pull) only. */
	for (int t = 0; t < 3; t++) {
		assert_int_equal(ps_store_hash_push64(p, scr, &k[3], 1, g, W), 0);
		assert_int_equal(ps_store_hash_pull64(p, scr, &k[4], 1, out, W), 0);
	}
	/* k[0], k[5..9] were last used at step 1, now step 4: idle 3. */
	assert_int_equal(ps_store_hash_evict(p, 3, &nd), 0);
	assert_int_equal(nd, 0);
	assert_int_equal(ps_store_hash_evict(p, 2, &nd), 0);
	assert_int_equal(nd, 6);
	assert_int_equal(rows_of(p), 2);

	/* k[5] comes back before the export: a change, not a deletion. */
	assert_int_equal(ps_store_hash_pull64(p, scr, &k[5], 1, out, W), 0);
	ps_store_init_value(p, k[5], 0, init);
	assert_memory_equal(out, init, sizeof(init));	      /* a fresh row, not the old one */
	assert_int_equal(ps_store_changed_count(p, &n64), 2); /* k[3] pushed, k[5] created */
	assert_int_equal(n64, 7);
	e = (struct exp){.fail_row_after = -1};
	assert_int_equal(ps_store_export(p, exp_row, exp_del, &e), 0);
	assert_int_equal(e.ndels, 7);
	assert_int_equal(e.nrows, 2);
	assert_true(has(e.rows, 2, k[3]) && has(e.rows, 2, k[5]));
	for (int i = 0; i < 10; i++) {
		bool deleted = i == 1 || i == 2 || i == 0 || (i >= 6);

		assert_int_equal(has(e.dels, e.ndels, k[i]), deleted);
	}
	assert_int_equal(ps_store_changed_count(p, &n64), 0);
	assert_int_equal(n64, 0);
	/* k[3]'s row never moved through all this. */
	{
		const float *again;

		assert_int_equal(ps_store_hash_row_addrs64(p, scr, &k[3], 1, &again), 0);
		assert_ptr_equal(again, addr);
	}
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

/* Freed rows are reused: churn does not grow the memory. */
static void test_row_reuse(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH64, PS_OPTIM_SGD);
	struct ps_store_part_opts o = {.spec = &s,
				       .begin = 0,
				       .end = PS_HASH_BUCKETS,
				       .numa_node = -1,
				       .hash_initial_rows = 100,
				       .chunk_bytes = 8192}; /* 128 rows a chunk */
	struct ps_store_part *p;
	struct ps_store_scratch *scr = hscratch(100);
	struct ps_store_part_info i0, i1;
	uint64_t keys[100];
	float out[100 * W];

	(void)state;
	assert_int_equal(ps_store_part_create(&o, &p), 0);
	ps_store_part_info(p, &i0);
	assert_true(i0.capacity >= 100);
	for (int round = 0; round < 50; round++) {
		size_t nd;

		for (int i = 0; i < 100; i++)
			keys[i] = rnd();
		assert_int_equal(ps_store_hash_pull64(p, scr, keys, 100, out, W), 0);
		assert_int_equal(ps_store_hash_delete64(p, keys, 100, &nd), 0);
		assert_int_equal(nd, 100);
	}
	ps_store_part_info(p, &i1);
	assert_int_equal(i1.rows, 0);
	assert_int_equal(i1.nchunks, i0.nchunks);
	assert_int_equal(ps_store_changed_count(p, &i1.rows), 0);
	assert_int_equal(i1.rows, 5000); /* every key deleted, none exported yet */
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

static int count_rows(void *arg, const struct ps_store_row *row)
{
	int *n = arg;

	assert_int_equal(row->width, W);
	(*n)++;
	return 0;
}

static void test_foreach(void **state)
{
	struct ps_var_spec s = hspec(PS_VAR_HASH128, PS_OPTIM_CENTERED_RMSPROP);
	struct ps_store_part *p = hmake(&s, 0, PS_HASH_BUCKETS, 8192, NULL);
	struct ps_store_scratch *scr = hscratch(500);
	struct ps_key128 k[500];
	float out[500 * W];
	size_t nd;
	int n = 0;

	(void)state;
	for (int i = 0; i < 500; i++)
		k[i] = (struct ps_key128){rnd(), rnd()};
	assert_int_equal(ps_store_hash_pull128(p, scr, k, 500, out, W), 0);
	assert_int_equal(ps_store_hash_delete128(p, k + 100, 50, &nd), 0);
	assert_int_equal(ps_store_foreach(p, count_rows, &n), 0);
	assert_int_equal(n, 450);
	ps_store_scratch_destroy(scr);
	ps_store_part_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_touch),
		cmocka_unit_test(test_key128),
		cmocka_unit_test(test_growth_keeps_addresses),
		cmocka_unit_test(test_growth_refused),
		cmocka_unit_test(test_bad_key_changes_nothing),
		cmocka_unit_test(test_admission),
		cmocka_unit_test(test_delete_evict_export),
		cmocka_unit_test(test_row_reuse),
		cmocka_unit_test(test_foreach),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
