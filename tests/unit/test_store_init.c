/*
 * Initializers and routing hashes: the documented generator reproduced independently here
 * (bit for bit), the same rows whether a variable lives in one part or three (dense, sparse and
 * hash), distributions (uniform range, normal moments, truncation at two standard deviations),
 * parameter checks, and the bucket hash's documented values and spread.
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

/* ---- the generator as docs/server-storage.md states it --------------------------------- */

static uint64_t doc_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float doc_value(const struct ps_initializer *in, uint64_t var, uint64_t id, uint64_t hi,
		       uint32_t c)
{
	const uint64_t G = 0x9e3779b97f4a7c15ull;
	uint64_t stream = doc_mix(doc_mix(in->seed + G) ^ var);
	uint64_t base = doc_mix(stream ^ doc_mix(id + G) ^ doc_mix(hi + 2 * G));
#define X(k)  doc_mix(base + (512ull * c + (k) + 1) * G)
#define U(x)  ((double)((x) >> 11) / 9007199254740992.0)
#define U1(x) ((double)(((x) >> 11) + 1) / 9007199254740992.0)
	if (in->kind == PS_INIT_UNIFORM) {
		float v = (float)(in->min + ((double)in->max - in->min) * U(X(0)));

		return v < in->max ? v : nextafterf(in->max, in->min);
	}
	for (uint32_t a = 0; a < 256; a++) {
		double z = sqrt(-2.0 * log(U1(X(2 * a)))) * cos(2.0 * M_PI * U(X(2 * a + 1)));

		if (in->kind == PS_INIT_NORMAL || fabs(z) <= 2.0)
			return (float)(in->mean + (double)in->stddev * z);
	}
#undef X
#undef U
#undef U1
	return in->mean;
}

static const struct ps_initializer inits[] = {
	{.kind = PS_INIT_ZEROS},
	{.kind = PS_INIT_CONSTANT, .value = 0.25f},
	{.kind = PS_INIT_UNIFORM, .min = -0.05f, .max = 0.05f, .seed = 3},
	{.kind = PS_INIT_NORMAL, .mean = 1.0f, .stddev = 0.5f, .seed = 0},
	{.kind = PS_INIT_TRUNCATED_NORMAL, .mean = 0.0f, .stddev = 2.0f, .seed = 77},
};

static void test_documented_generator(void **state)
{
	float row[16];

	(void)state;
	for (size_t k = 2; k < sizeof(inits) / sizeof(inits[0]); k++) {
		for (uint64_t id = 0; id < 200; id++) {
			uint64_t hi = id % 3 ? 0 : id * 31;

			ps_store_init_row(&inits[k], 42, id * 1000003, hi, row, 16);
			for (uint32_t c = 0; c < 16; c++)
				assert_true(row[c] ==
					    doc_value(&inits[k], 42, id * 1000003, hi, c));
		}
	}
	ps_store_init_row(&inits[0], 1, 2, 3, row, 16);
	for (int c = 0; c < 16; c++)
		assert_true(row[c] == 0.0f);
	ps_store_init_row(&inits[1], 1, 2, 3, row, 16);
	for (int c = 0; c < 16; c++)
		assert_true(row[c] == 0.25f);
}

/* ---- 1 part vs 3 parts ---------------------------------------------------------------- */

struct rows {
	float *v; /* by row id, width floats each */
	uint32_t width;
	size_t seen;
};

static int grab(void *arg, const struct ps_store_row *row)
{
	struct rows *r = arg;

	memcpy(r->v + row->id * r->width, row->data, r->width * sizeof(float));
	r->seen++;
	return 0;
}

static void split_rows(enum ps_var_kind kind, const struct ps_initializer *in)
{
	enum { ROWS = 301, WIDTH = 12 };
	struct ps_var_spec s = {.kind = kind,
				.rows = ROWS,
				.width = WIDTH,
				.init = *in,
				.optim = ps_optimizer_defaults(PS_OPTIM_ADAM)};
	uint64_t cut[4] = {0, 100, 201, ROWS};
	struct rows one = {calloc(ROWS * WIDTH, sizeof(float)), WIDTH, 0};
	struct rows three = {calloc(ROWS * WIDTH, sizeof(float)), WIDTH, 0};
	struct ps_store_part_opts o = {
		.spec = &s, .var_id = 5, .begin = 0, .end = ROWS, .numa_node = -1};
	struct ps_store_part *p;

	assert_int_equal(ps_store_part_create(&o, &p), 0);
	assert_int_equal(ps_store_foreach(p, grab, &one), 0);
	ps_store_part_destroy(p);
	for (int i = 0; i < 3; i++) {
		o.begin = cut[i];
		o.end = cut[i + 1];
		o.chunk_bytes = 4096; /* and chunked differently */
		assert_int_equal(ps_store_part_create(&o, &p), 0);
		assert_int_equal(ps_store_foreach(p, grab, &three), 0);
		ps_store_part_destroy(p);
	}
	assert_int_equal(one.seen, ROWS);
	assert_int_equal(three.seen, ROWS);
	assert_memory_equal(one.v, three.v, ROWS * WIDTH * sizeof(float));
	free(one.v);
	free(three.v);
}

static void split_hash(const struct ps_initializer *in)
{
	enum { N = 3000, WIDTH = 12 };
	struct ps_var_spec s = {.kind = PS_VAR_HASH64,
				.width = WIDTH,
				.init = *in,
				.optim = ps_optimizer_defaults(PS_OPTIM_FTRL)};
	uint64_t cut[4] = {0, 20000, 41000, PS_HASH_BUCKETS};
	struct ps_store_part_opts o = {.spec = &s, .var_id = 5, .numa_node = -1};
	struct ps_store_scratch_opts so = {.max_batch = N, .max_width = WIDTH};
	struct ps_store_scratch *scr;
	struct ps_store_part *whole, *part[3];
	uint64_t *keys = malloc(N * sizeof(*keys)), *mine = malloc(N * sizeof(*mine));
	float *a = malloc((size_t)N * WIDTH * sizeof(float)), *b = malloc(WIDTH * sizeof(float));

	assert_int_equal(ps_store_scratch_create(&so, &scr), 0);
	for (int i = 0; i < N; i++)
		keys[i] = doc_mix((uint64_t)i + 17);
	o.begin = 0;
	o.end = PS_HASH_BUCKETS;
	assert_int_equal(ps_store_part_create(&o, &whole), 0);
	assert_int_equal(ps_store_hash_pull64(whole, scr, keys, N, a, WIDTH), 0);
	for (int i = 0; i < 3; i++) {
		o.begin = cut[i];
		o.end = cut[i + 1];
		assert_int_equal(ps_store_part_create(&o, &part[i]), 0);
	}
	/* Route each key as a client would, then pull it from its part, in reverse order. */
	for (int i = N - 1; i >= 0; i--) {
		uint32_t bkt = ps_hash_bucket64(keys[i]);
		int j = bkt < cut[1] ? 0 : bkt < cut[2] ? 1 : 2;

		mine[0] = keys[i];
		assert_int_equal(ps_store_hash_pull64(part[j], scr, mine, 1, b, WIDTH), 0);
		assert_memory_equal(b, a + (size_t)i * WIDTH, WIDTH * sizeof(float));
		/* The wrong part refuses it. */
		assert_int_equal(ps_store_hash_pull64(part[(j + 1) % 3], scr, mine, 1, b, WIDTH),
				 PS_EOUT_OF_RANGE);
	}
	for (int i = 0; i < 3; i++)
		ps_store_part_destroy(part[i]);
	ps_store_part_destroy(whole);
	ps_store_scratch_destroy(scr);
	free(keys);
	free(mine);
	free(a);
	free(b);
}

static void test_one_vs_three_parts(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(inits) / sizeof(inits[0]); k++) {
		split_rows(PS_VAR_SPARSE, &inits[k]);
		split_rows(PS_VAR_DENSE, &inits[k]);
		split_hash(&inits[k]);
	}
}

/* Seed and variable id both change the stream; a row id and a key with the same value agree. */
static void test_streams_differ(void **state)
{
	struct ps_initializer in = inits[3];
	float a[32], b[32];

	(void)state;
	ps_store_init_row(&in, 1, 10, 0, a, 32);
	ps_store_init_row(&in, 2, 10, 0, b, 32);
	assert_memory_not_equal(a, b, sizeof(a));
	in.seed = 1;
	ps_store_init_row(&in, 1, 10, 0, b, 32);
	assert_memory_not_equal(a, b, sizeof(a));
	ps_store_init_row(&inits[3], 1, 11, 0, b, 32);
	assert_memory_not_equal(a, b, sizeof(a));
	ps_store_init_row(&inits[3], 1, 10, 0, b, 32);
	assert_memory_equal(a, b, sizeof(a));
	/* Columns are independent draws, not one draw repeated. */
	assert_true(a[0] != a[1]);
}

/* ---- distributions ---------------------------------------------------------------------- */

static void moments(const struct ps_initializer *in, double *mean, double *sd, float *lo, float *hi)
{
	enum { ROWS = 4000, WIDTH = 25 };
	float row[WIDTH];
	double s = 0, s2 = 0;

	*lo = INFINITY;
	*hi = -INFINITY;
	for (uint64_t r = 0; r < ROWS; r++) {
		ps_store_init_row(in, 9, r, 0, row, WIDTH);
		for (int c = 0; c < WIDTH; c++) {
			s += row[c];
			s2 += (double)row[c] * row[c];
			*lo = fminf(*lo, row[c]);
			*hi = fmaxf(*hi, row[c]);
		}
	}
	*mean = s / (ROWS * WIDTH);
	*sd = sqrt(s2 / (ROWS * WIDTH) - *mean * *mean);
}

static void test_distributions(void **state)
{
	double mean, sd;
	float lo, hi;

	(void)state;
	/* 100k samples: the mean is within ~4 standard errors. */
	moments(&inits[2], &mean, &sd, &lo, &hi); /* uniform [-0.05, 0.05) */
	assert_true(lo >= -0.05f && hi < 0.05f);
	assert_true(fabs(mean) < 4 * 0.1 / sqrt(12) / sqrt(1e5));
	assert_true(fabs(sd - 0.1 / sqrt(12)) < 0.01 * 0.1 / sqrt(12));
	moments(&inits[3], &mean, &sd, &lo, &hi); /* normal(1, 0.5) */
	assert_true(fabs(mean - 1.0) < 4 * 0.5 / sqrt(1e5));
	assert_true(fabs(sd - 0.5) < 0.01);
	assert_true(lo < 1.0f - 3 * 0.5f && hi > 1.0f + 3 * 0.5f);
	/* truncated normal(0, 2): inside [-4, 4], sd = 2 * 0.8796 (normal cut at 2 sd). */
	moments(&inits[4], &mean, &sd, &lo, &hi);
	assert_true(lo >= -4.0f && hi <= 4.0f);
	assert_true(lo < -3.9f && hi > 3.9f);
	assert_true(fabs(mean) < 4 * 2.0 / sqrt(1e5));
	assert_true(fabs(sd - 2.0 * 0.87962566) < 0.02);
}

static void test_init_checks(void **state)
{
	struct ps_initializer in = {.kind = PS_INIT_UNIFORM, .min = 1.0f, .max = 0.0f};

	(void)state;
	assert_int_equal(ps_store_init_validate(&in), -EINVAL);
	in.max = NAN;
	assert_int_equal(ps_store_init_validate(&in), -EINVAL);
	in = (struct ps_initializer){.kind = PS_INIT_NORMAL, .stddev = -0.1f};
	assert_int_equal(ps_store_init_validate(&in), -EINVAL);
	in.stddev = 0.0f; /* degenerate but valid: every value is the mean */
	assert_int_equal(ps_store_init_validate(&in), 0);
	in = (struct ps_initializer){.kind = PS_INIT_CONSTANT, .value = INFINITY};
	assert_int_equal(ps_store_init_validate(&in), -EINVAL);
	in.kind = (enum ps_init_kind)9;
	assert_int_equal(ps_store_init_validate(&in), -EINVAL);
	assert_int_equal(ps_store_init_validate(NULL), -EINVAL);
	for (size_t k = 0; k < sizeof(inits) / sizeof(inits[0]); k++)
		assert_int_equal(ps_store_init_validate(&inits[k]), 0);
}

/* ---- the bucket hash --------------------------------------------------------------------- */

static void test_bucket_hash(void **state)
{
	enum { N = 1 << 20, GROUPS = 256 };
	static unsigned count[GROUPS];
	double chi = 0, expect = (double)N / GROUPS;

	(void)state;
	/* The documented function, reproduced. */
	for (uint64_t k = 0; k < 100000; k++) {
		uint64_t key = k * 0x632be59bd9b4e019ull + 12345;

		assert_int_equal(ps_hash_bucket64(key), (uint32_t)(doc_mix(key) & 0xffff));
		assert_int_equal(ps_hash_bucket128(key, k),
				 (uint32_t)(doc_mix(key ^ doc_mix(k)) & 0xffff));
	}
	assert_int_equal(ps_mix64(0), 0);
	assert_int_equal(ps_hash_bucket64(0), 0);
	/* Sequential keys (the common case for ids) spread evenly: chi-square over 256 groups of
	 * 256 buckets each, 255 degrees of freedom; 400 is far in the tail (p < 1e-7). */
	for (uint64_t k = 0; k < N; k++)
		count[ps_hash_bucket64(k) / (PS_HASH_BUCKETS / GROUPS)]++;
	for (int g = 0; g < GROUPS; g++)
		chi += (count[g] - expect) * (count[g] - expect) / expect;
	assert_true(chi < 400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_documented_generator),
		cmocka_unit_test(test_one_vs_three_parts),
		cmocka_unit_test(test_streams_differ),
		cmocka_unit_test(test_distributions),
		cmocka_unit_test(test_init_checks),
		cmocka_unit_test(test_bucket_hash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
