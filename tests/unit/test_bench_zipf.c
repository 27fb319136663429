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

/* The hottest id of @n ids and its count; the ids drawn over 200 times, and those >= @high. */
struct hot {
	uint64_t best, best_n, nhot, nhigh;
};

static struct hot hot_ids(const uint64_t *ids, size_t n, uint64_t high)
{
	uint64_t *v = malloc(n * sizeof(*v)), run = 0;
	struct hot h = {0};

	assert_non_null(v);
	memcpy(v, ids, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t i = 0; i < n; i++) {
		run = i && v[i] == v[i - 1] ? run + 1 : 1;
		if (run > h.best_n) {
			h.best_n = run;
			h.best = v[i];
		}
		if (run == 200) {
			h.nhot++;
			h.nhigh += v[i] >= high;
		}
	}
	free(v);
	return h;
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
	uint64_t *ids = malloc(total * sizeof(*ids));
	double distinct, p1 = 1 / harmonic(o.rows, o.zipf_s);
	struct hot h;

	assert_non_null(ids);
	distinct = bp_ids_make(&o, ids);
	assert_true(distinct > 1 && distinct < o.batch); /* Zipf batches repeat ids */
	for (uint32_t b = 0; b < o.pool; b++)
		for (uint32_t i = 0; i < o.batch; i++) {
			uint64_t id = ids[(size_t)b * o.batch + i];

			assert_true(id < o.rows);
			if (i)
				assert_true(ids[(size_t)b * o.batch + i - 1] <= id);
		}
	h = hot_ids(ids, total, o.rows / 2);
	assert_true(fabs((double)h.best_n - total * p1) < 5 * sqrt(total * p1 * (1 - p1)));
	assert_true(h.nhot >= 8);
	assert_true(h.nhigh >= h.nhot / 4 && h.nhigh <= h.nhot * 3 / 4);
	assert_int_equal(h.best, 0); /* rank 1 is row 0 either way (0 x the prime) */

	o.hot_low = true;
	bp_ids_make(&o, ids);
	h = hot_ids(ids, total, 1000);
	assert_int_equal(h.best, 0); /* rank 1 is row 0 */
	assert_true(h.nhot >= 8);
	assert_int_equal(h.nhigh, 0); /* every hot row is a low row */
	free(ids);
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
