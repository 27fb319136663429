/*
 * The client's pull de-duplication scratch (client/client_dedupe.c) without a network: first
 * occurrences in order, every repeat paired with its first occurrence, 128-bit keys compared
 * whole, the fill of repeated rows, and keys that differ only in their high bits spreading over
 * the hash table (a hash of the low bits alone probes quadratically: seconds for 65,536 keys).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "client/client_internal.h"
#include "common/clock.h"

static struct ps_client *bare_client(void)
{
	struct ps_client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	return c;
}

static void test_pairs(void **state)
{
	struct ps_client *c = bare_client();
	uint64_t ids[8] = {7, 3, 7, 9, 3, 7, 1, 9};
	uint32_t want_uniq[4] = {0, 1, 3, 6};
	uint32_t want_dup[4][2] = {{2, 0}, {4, 1}, {5, 0}, {7, 3}};
	float out[8];
	size_t nu;

	(void)state;
	assert_int_equal(cli_dedupe(c, ids, 8, 8, &nu), 0);
	assert_int_equal(nu, 4);
	assert_memory_equal(c->dd.uniq, want_uniq, sizeof(want_uniq));
	assert_int_equal(c->dd.ndup, 4);
	for (int j = 0; j < 4; j++) {
		assert_int_equal(c->dd.dup[j].pos, want_dup[j][0]);
		assert_int_equal(c->dd.dup[j].first, want_dup[j][1]);
	}
	for (int i = 0; i < 8; i++)
		out[i] = (float)ids[i] * 10;
	out[2] = out[4] = out[5] = out[7] = -1;
	cli_dedupe_fill(c, out, sizeof(float));
	for (int i = 0; i < 8; i++)
		assert_true(out[i] == (float)ids[i] * 10);
	assert_int_equal(c->st.pull_dups, 4);
	/* No repeats: everything is a first occurrence. */
	assert_int_equal(cli_dedupe(c, want_uniq, 2, 8, &nu), 0); /* 2 keys of 8 bytes */
	assert_int_equal(nu, 2);
	assert_int_equal(c->dd.ndup, 0);
	cli_dedupe_free(&c->dd);
	free(c);
}

static void test_key128(void **state)
{
	struct ps_client *c = bare_client();
	struct ps_key128 k[6] = {{5, 1}, {5, 2}, {5, 1}, {6, 1}, {5, 2}, {1, 5}};
	size_t nu;

	(void)state;
	assert_int_equal(cli_dedupe(c, k, 6, 16, &nu), 0);
	assert_int_equal(nu, 4); /* {5,1} {5,2} {6,1} {1,5} */
	assert_int_equal(c->dd.ndup, 2);
	assert_int_equal(c->dd.dup[0].pos, 2);
	assert_int_equal(c->dd.dup[0].first, 0);
	assert_int_equal(c->dd.dup[1].pos, 4);
	assert_int_equal(c->dd.dup[1].first, 1);
	cli_dedupe_free(&c->dd);
	free(c);
}

static void test_high_bits(void **state)
{
	enum { N = 65536, D = 32768 };
	struct ps_client *c = bare_client();
	uint64_t *ids = malloc(N * sizeof(*ids)), t0, took;
	size_t nu;

	(void)state;
	for (int shift = 40; shift <= 48; shift += 8) {
		for (int i = 0; i < N; i++)
			ids[i] = (uint64_t)(i % D) << shift;
		t0 = ps_clock_now_ns();
		assert_int_equal(cli_dedupe(c, ids, N, 8, &nu), 0);
		took = ps_clock_now_ns() - t0;
		assert_int_equal(nu, D);
		assert_int_equal(c->dd.ndup, N - D);
		/* About 1 ms spread out (5 under ASan); a low-bits hash takes seconds. */
		assert_true(took < 300 * PS_NSEC_PER_MSEC);
	}
	free(ids);
	cli_dedupe_free(&c->dd);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pairs),
		cmocka_unit_test(test_key128),
		cmocka_unit_test(test_high_bits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
