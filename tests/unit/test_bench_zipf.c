/*
 * psplus-bench-ps's id generator (perf/bench_ps_ids.c): the Zipf sampler draws rank k with
 * probability k^-s / H(n, s), and the batches spread hot ranks over the whole row range.
 * The pull/push Zipf lines of bench-tcp and bench-rxe mean what they say only if this holds.
 *
 * The frequency checks compare counts with their expectation within 5 standard deviations
 * (binomial): a correct sampler fails one of them with probability below 1e-5, while a wrong
 * exponent (1.0 instead of 1.1) or a sampler that skips the rejection step misses by far more.
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

#include "perf/bench_ps.h"

enum { DRAWS = 400000 };

/* H(n, s) = sum of k^-s for k = 1..n, summed smallest first. */
static double harmonic(uint64_t n, double s)
{
	double h = 0;

	for (uint64_t k = n; k >= 1; k--)
		h += pow((double)k, -s);
	return h;
}

/* Is @count within 5 standard deviations of DRAWS draws of probability @p? */
static void check_count(uint64_t count, double p, const char *what)
{
	double mean = DRAWS * p, sd = sqrt(DRAWS * p * (1 - p));

	if (fabs((double)count - mean) > 5 * sd + 1)
		fail_msg("%s: %llu draws, expected %.1f +- %.1f", what, (unsigned long long)count,
			 mean, 5 * sd);
}

/* Draw DRAWS ranks of Zipf(n, s) and check the first ranks and three bands of the tail. */
static void check_law(uint64_t n, double s)
{
	enum { HEAD = 10 };
	uint64_t head[HEAD + 1] = {0}, band[3] = {0}, st = 42;
	const uint64_t edge[3] = {100, 10000, n};
	double h = harmonic(n, s), pb[3] = {0};
	struct bp_zipf z;
	char what[64];

	assert_int_equal(bp_zipf_init(&z, n, s), 0);
	for (int i = 0; i < DRAWS; i++) {
		uint64_t k = bp_zipf_draw(&z, &st);

		assert_true(k >= 1 && k <= n);
		if (k <= HEAD)
			head[k]++;
		else
			band[k <= edge[0] ? 0 : k <= edge[1] ? 1 : 2]++;
	}
	for (uint64_t k = 1; k <= HEAD && k <= n; k++) {
		snprintf(what, sizeof(what), "n %llu s %.2f rank %llu", (unsigned long long)n, s,
			 (unsigned long long)k);
		check_count(head[k], pow((double)k, -s) / h, what);
	}
	for (uint64_t k = HEAD + 1; k <= n; k++)
		pb[k <= edge[0] ? 0 : k <= edge[1] ? 1 : 2] += pow((double)k, -s) / h;
	for (int b = 0; b < 3; b++) {
		snprintf(what, sizeof(what), "n %llu s %.2f band %d", (unsigned long long)n, s, b);
		check_count(band[b], pb[b], what);
	}
}

static void test_zipf_law(void **state)
{
	check_law(1048576, 1.1); /* the benchmarks' rows and exponent */
	check_law(1048576, 1.0); /* log H: the helpers' limit case */
	check_law(5000, 0.5);
	check_law(3, 2.0);
}

static void test_zipf_edges(void **state)
{
	struct bp_zipf z;
	uint64_t a = 7, b = 7;

	assert_int_equal(bp_zipf_init(&z, 0, 1.1), -EINVAL);
	assert_int_equal(bp_zipf_init(&z, 10, 0), -EINVAL);
	assert_int_equal(bp_zipf_init(&z, 10, -1), -EINVAL);
	assert_int_equal(bp_zipf_init(&z, 10, NAN), -EINVAL);
	assert_int_equal(bp_zipf_init(&z, 1, 1.1), 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(bp_zipf_draw(&z, &a), 1);
	/* The same seed gives the same ranks. */
	a = b = 9;
	assert_int_equal(bp_zipf_init(&z, 1000000, 1.1), 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(bp_zipf_draw(&z, &a), bp_zipf_draw(&z, &b));
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * The batches: ids within the rows, each batch sorted, the hottest id as frequent as rank 1,
 * and (scattered, the default) the hot ids spread over the whole range, so that both halves of
 * a 2-server split get hot rows; with --hot low, rank r is row r - 1.
 */
static void test_batches(void **state)
{
	struct bp_opts o = {.dist = BP_ZIPF,
			    .zipf_s = 1.1,
			    .sorted = true,
			    .batch = 1024,
			    .rows = 1048576,
			    .pool = 256,
			    .seed = 1};
	size_t total = (size_t)o.batch * o.pool;
	uint64_t *ids = malloc(total * sizeof(*ids)), *srt = malloc(total * sizeof(*ids));
	uint64_t best = 0, best_n = 0, run = 0, hot_high = 0, distinct_hot = 0;
	double distinct, h = harmonic(o.rows, o.zipf_s);

	assert_non_null(ids);
	assert_non_null(srt);
	distinct = bp_ids_make(&o, ids);
	assert_true(distinct > 1 && distinct < o.batch); /* Zipf batches repeat ids */
	for (uint32_t b = 0; b < o.pool; b++)
		for (uint32_t i = 0; i < o.batch; i++) {
			uint64_t id = ids[(size_t)b * o.batch + i];

			assert_true(id < o.rows);
			if (i)
				assert_true(ids[(size_t)b * o.batch + i - 1] <= id);
		}
	memcpy(srt, ids, total * sizeof(*ids));
	qsort(srt, total, sizeof(*srt), cmp_u64);
	for (size_t i = 0; i < total; i++) {
		run = i && srt[i] == srt[i - 1] ? run + 1 : 1;
		if (run > best_n) {
			best_n = run;
			best = srt[i];
		}
		/* Ids drawn over 200 times: the hot ones; where do they lie? */
		if (run == 200) {
			distinct_hot++;
			hot_high += srt[i] >= o.rows / 2;
		}
	}
	{
		double p1 = 1 / h, sd = sqrt(total * p1 * (1 - p1));

		assert_true(fabs((double)best_n - total * p1) < 5 * sd);
	}
	assert_true(distinct_hot >= 8);
	assert_true(hot_high >= distinct_hot / 4 && hot_high <= distinct_hot * 3 / 4);
	assert_int_equal(best, 0); /* rank 1 is row 0 either way (0 x the prime) */

	o.hot_low = true;
	bp_ids_make(&o, ids);
	memcpy(srt, ids, total * sizeof(*ids));
	qsort(srt, total, sizeof(*srt), cmp_u64);
	best_n = run = hot_high = distinct_hot = 0;
	for (size_t i = 0; i < total; i++) {
		run = i && srt[i] == srt[i - 1] ? run + 1 : 1;
		if (run > best_n) {
			best_n = run;
			best = srt[i];
		}
		if (run == 200) {
			distinct_hot++;
			hot_high += srt[i] >= 1000;
		}
	}
	assert_int_equal(best, 0); /* rank 1 is row 0 */
	assert_true(distinct_hot >= 8);
	assert_int_equal(hot_high, 0); /* every hot row is a low row */
	free(ids);
	free(srt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zipf_law),
		cmocka_unit_test(test_zipf_edges),
		cmocka_unit_test(test_batches),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
