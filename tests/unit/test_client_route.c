/*
 * Client routing without a network (client/client_route.c): every id and key routed exactly as
 * ps_placement_lookup and the shard rules say, the stable group-by (order kept within each
 * destination, subsets of positions), the split by message size (every id exactly once, no
 * request over its cap, empty requests for marked destinations), the dense split (whole rows,
 * inside one shard, covering the tensor once), and the destinations of a variable.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>
#include <psplus/types.h>

#include "client/client_route.h"
#include "scheduler/placement.h"

#define NSRV 3

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

/* Three servers with 2, 3 and 1 data-path threads: destinations 0-1, 2-4, 5. */
static const uint32_t nshards[NSRV] = {2, 3, 1};
static const uint32_t dest0[NSRV] = {0, 2, 5};
#define NDEST 6

/*
 * A table with a dense (id 1), a sparse (id 2, several parts), a hash (id 3) variable. Memory
 * binds so the sparse one is cut into parts spread over the servers.
 */
static struct ps_placement *table(void)
{
	struct ps_placement_var v[3] = {
		{.name = "d", .id = 1, .kind = PS_PLACE_DENSE, .rows = 37, .width = 5},
		{.name = "s", .id = 2, .kind = PS_PLACE_SPARSE, .rows = 10007, .width = 4},
		{.name = "h", .id = 3, .kind = PS_PLACE_HASH, .rows = 1000, .width = 4},
	};
	struct ps_placement_budget b[NSRV];
	struct ps_placement_input in = {.vars = v,
					.nvars = 3,
					.nservers = NSRV,
					.budgets = b,
					.steps_per_s = 1,
					.rows_per_request = 100,
					.cluster_version = 7};
	struct ps_placement *t = NULL;
	char err[512];

	for (int i = 0; i < NSRV; i++)
		b[i] = (struct ps_placement_budget){.mem_bytes = 100000,
						    .net_bytes_per_s = UINT64_C(1) << 40,
						    .qps = UINT64_C(1) << 40};
	assert_int_equal(ps_placement_compute(&in, &t, err, sizeof(err)), 0);
	assert_true(ps_placement_find(t, 2)->nparts >= 3);
	return t;
}

static struct cli_shape shape(const struct ps_placement *t, uint32_t id, enum ps_var_kind kind,
			      uint32_t width)
{
	return (struct cli_shape){.e = ps_placement_find(t, id),
				  .kind = kind,
				  .width = width,
				  .nservers = NSRV,
				  .dest0 = dest0,
				  .nshards = nshards};
}

/* The destination the placement's own functions give. */
static uint32_t expected_row_dest(const struct ps_placement *t, uint32_t id, enum ps_place_kind k,
				  uint64_t row)
{
	uint32_t part, srv;

	assert_int_equal(ps_placement_lookup(t, id, row, &part, &srv), 0);
	return dest0[srv] +
	       ps_placement_row_shard(k, &ps_placement_find(t, id)->parts[part], row, nshards[srv]);
}

static void test_route_sparse(void **state)
{
	struct ps_placement *t = table();
	struct cli_shape sh = shape(t, 2, PS_VAR_SPARSE, 4);
	uint64_t ids[10007 + 2];
	uint32_t d, dests[10007 + 2];
	size_t bad = 0;

	(void)state;
	for (uint64_t r = 0; r < 10007; r++) {
		ids[r] = r;
		assert_int_equal(cli_route_one(&sh, ids, r, &d), 0);
		assert_int_equal(d, expected_row_dest(t, 2, PS_PLACE_SPARSE, r));
	}
	/* Every destination that holds rows is reached. */
	assert_int_equal(cli_route(&sh, ids, NULL, 10007, dests, &bad), 0);
	for (uint32_t x = 0; x < NDEST; x++) {
		bool seen = false;

		for (size_t i = 0; i < 10007 && !seen; i++)
			seen = dests[i] == x;
		assert_true(seen);
	}
	/* Out of range: the position of the first bad id, and PS_EOUT_OF_RANGE. */
	ids[10007] = 10007;
	ids[10008] = UINT64_MAX;
	assert_int_equal(cli_route(&sh, ids, NULL, 10009, dests, &bad), PS_EOUT_OF_RANGE);
	assert_int_equal(bad, 10007);
	ids[10007] = 5;
	assert_int_equal(cli_route(&sh, ids, NULL, 10009, dests, &bad), PS_EOUT_OF_RANGE);
	assert_int_equal(bad, 10008);
	ps_placement_destroy(t);
}

static void test_route_dense(void **state)
{
	struct ps_placement *t = table();
	struct cli_shape sh = shape(t, 1, PS_VAR_DENSE, 5);
	uint32_t d;

	(void)state;
	for (uint64_t r = 0; r < 37; r++) {
		assert_int_equal(cli_route_one(&sh, &r, 0, &d), 0);
		assert_int_equal(d, expected_row_dest(t, 1, PS_PLACE_DENSE, r));
	}
	{
		uint64_t r = 37;

		assert_int_equal(cli_route_one(&sh, &r, 0, &d), PS_EOUT_OF_RANGE);
	}
	ps_placement_destroy(t);
}

static void test_route_hash(void **state)
{
	struct ps_placement *t = table();
	struct cli_shape h64 = shape(t, 3, PS_VAR_HASH64, 4);
	struct cli_shape h128 = shape(t, 3, PS_VAR_HASH128, 4);
	uint32_t part, srv, d;

	(void)state;
	for (int i = 0; i < 20000; i++) {
		uint64_t key = i < 10 ? (uint64_t)i : rnd(), h = ps_placement_key_hash(key);
		struct ps_key128 k2 = {.lo = rnd(), .hi = i & 1 ? rnd() : 0};
		uint64_t h2 = ps_placement_key_hash128(k2.hi, k2.lo);

		/* The public bucket function of types.h and the placement's agree. */
		assert_int_equal(ps_placement_bucket(h), ps_hash_bucket64(key));
		assert_int_equal(ps_placement_bucket(h2), ps_hash_bucket128(k2.lo, k2.hi));
		assert_int_equal(ps_placement_lookup(t, 3, ps_placement_bucket(h), &part, &srv), 0);
		assert_int_equal(cli_route_one(&h64, &key, 0, &d), 0);
		assert_int_equal(d, dest0[srv] + ps_placement_key_shard(h, nshards[srv]));

		assert_int_equal(ps_placement_lookup(t, 3, ps_placement_bucket(h2), &part, &srv),
				 0);
		assert_int_equal(cli_route_one(&h128, &k2, 0, &d), 0);
		assert_int_equal(d, dest0[srv] + ps_placement_key_shard(h2, nshards[srv]));
	}
	/* hi = 0: a 128-bit key routes like the 64-bit key lo (types.h). */
	{
		struct ps_key128 k = {.lo = 12345, .hi = 0};
		uint64_t k64 = 12345;
		uint32_t d2;

		assert_int_equal(cli_route_one(&h128, &k, 0, &d), 0);
		assert_int_equal(cli_route_one(&h64, &k64, 0, &d2), 0);
		assert_int_equal(d, d2);
	}
	ps_placement_destroy(t);
}

/* Check @order/@start against @dest_of over @pos (NULL: identity). */
static void check_group(const uint32_t *dest_of, const uint32_t *pos, size_t m, uint32_t ndest,
			const uint32_t *start, const uint32_t *order)
{
	size_t *rank = calloc(m ? m : 1, sizeof(*rank));

	assert_non_null(rank);
	assert_int_equal(start[0], 0);
	assert_int_equal(start[ndest], m);
	for (uint32_t d = 0; d < ndest; d++) {
		size_t cnt = 0;

		assert_true(start[d] <= start[d + 1]);
		for (size_t k = 0; k < m; k++)
			cnt += dest_of[k] == d;
		assert_int_equal(start[d + 1] - start[d], cnt);
	}
	/* rank[k]: where position k of the input sits; runs hold their own dest, in input order. */
	for (size_t k = 0; k < m; k++) {
		uint32_t p = pos ? pos[k] : (uint32_t)k, d = dest_of[k];
		size_t j, found = SIZE_MAX;

		for (j = start[d]; j < start[d + 1]; j++)
			if (order[j] == p)
				found = j;
		assert_true(found != SIZE_MAX);
		rank[k] = found;
	}
	for (size_t k = 0; k < m; k++)
		for (size_t l = k + 1; l < m; l++)
			if (dest_of[k] == dest_of[l])
				assert_true(rank[k] < rank[l]);
	free(rank);
}

static void test_group_stable(void **state)
{
	uint32_t dest_of[500], order[500], start[NDEST + 1], pos[500];

	(void)state;
	for (int round = 0; round < 50; round++) {
		size_t m = rnd() % 500;

		for (size_t k = 0; k < m; k++) {
			dest_of[k] = (uint32_t)(rnd() % NDEST);
			pos[k] = (uint32_t)(rnd() % 100000); /* a subset: arbitrary, distinct */
			pos[k] = pos[k] * 500 + (uint32_t)k;
		}
		cli_group(dest_of, NULL, m, NDEST, start, order);
		check_group(dest_of, NULL, m, NDEST, start, order);
		cli_group(dest_of, pos, m, NDEST, start, order);
		check_group(dest_of, pos, m, NDEST, start, order);
	}
	/* Already grouped input comes out unchanged: the zero-copy case. */
	for (uint32_t k = 0; k < 60; k++)
		dest_of[k] = k / 10;
	cli_group(dest_of, NULL, 60, NDEST, start, order);
	for (uint32_t k = 0; k < 60; k++)
		assert_int_equal(order[k], k);
	for (uint32_t d = 0; d < NDEST; d++)
		assert_true(cli_run_contiguous(order, start[d], start[d + 1] - start[d]));
	/* One swapped pair breaks contiguity of both runs it touches. */
	dest_of[9] = 1;
	dest_of[10] = 0;
	cli_group(dest_of, NULL, 60, NDEST, start, order);
	assert_false(cli_run_contiguous(order, start[0], start[1] - start[0]));
	assert_false(cli_run_contiguous(order, start[1], start[2] - start[1]));
	assert_true(cli_run_contiguous(order, start[2], start[3] - start[2]));
	assert_false(cli_run_contiguous(order, 0, 0));
}

static void test_split(void **state)
{
	uint32_t dest_of[1000], order[1000], start[NDEST + 1];
	uint32_t cap[NDEST] = {1, 7, 100, 3, 1000, 2};
	uint8_t mark[NDEST] = {0, 1, 0, 1, 1, 0}, seen[1000];
	struct cli_chunk ch[2000];
	size_t n, m = 1000;

	(void)state;
	for (size_t k = 0; k < m; k++)
		dest_of[k] = (uint32_t)(rnd() % 5); /* destination 5 gets nothing */
	dest_of[0] = 3;
	for (size_t k = 1; k < m; k++)
		if (dest_of[k] == 3)
			dest_of[k] = 2; /* destination 3: exactly one id */
	cli_group(dest_of, NULL, m, NDEST, start, order);
	n = cli_split(start, NDEST, cap, NULL, NULL);
	assert_true(n <= 2000);
	assert_int_equal(cli_split(start, NDEST, cap, NULL, ch), n);
	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < n; i++) {
		assert_true(ch[i].n >= 1 && ch[i].n <= cap[ch[i].dest]);
		assert_true(ch[i].first >= start[ch[i].dest]);
		assert_true(ch[i].first + ch[i].n <= start[ch[i].dest + 1]);
		if (i && ch[i].dest == ch[i - 1].dest)
			assert_int_equal(ch[i].first, ch[i - 1].first + ch[i - 1].n);
		for (uint32_t j = 0; j < ch[i].n; j++)
			seen[order[ch[i].first + j]]++;
	}
	for (size_t k = 0; k < m; k++)
		assert_int_equal(seen[k], 1);
	/* The fewest requests: ceil(count / cap) per destination. */
	{
		size_t want = 0;

		for (uint32_t d = 0; d < NDEST; d++)
			want += (start[d + 1] - start[d] + cap[d] - 1) / cap[d];
		assert_int_equal(n, want);
	}
	/* Marked destinations without ids (5 is not marked, 0..4 have ids): none added... */
	assert_int_equal(cli_split(start, NDEST, cap, mark, NULL), n);
	/* ...but marking 5 adds one empty request for it. */
	mark[5] = 1;
	assert_int_equal(cli_split(start, NDEST, cap, mark, ch), n + 1);
	{
		bool empty5 = false;

		for (size_t i = 0; i < n + 1; i++)
			empty5 |= ch[i].dest == 5 && ch[i].n == 0;
		assert_true(empty5);
	}
	/* No ids at all: only the marked destinations, each one empty request. */
	cli_group(dest_of, NULL, 0, NDEST, start, order);
	assert_int_equal(cli_split(start, NDEST, cap, NULL, NULL), 0);
	assert_int_equal(cli_split(start, NDEST, cap, mark, ch), 4);
}

static void test_split_dense(void **state)
{
	struct ps_placement *t = table();
	struct cli_shape sh = shape(t, 1, PS_VAR_DENSE, 5);
	uint32_t cap[NDEST];
	struct cli_chunk ch[400];
	uint8_t seen[37 * 5];

	(void)state;
	for (uint32_t c0 = 1; c0 < 40; c0 += 3) {
		size_t n;

		for (uint32_t d = 0; d < NDEST; d++)
			cap[d] = c0 + d;
		n = cli_split_dense(&sh, 0, 37 * 5, cap, NULL);
		assert_true(n <= 400);
		assert_int_equal(cli_split_dense(&sh, 0, 37 * 5, cap, ch), n);
		memset(seen, 0, sizeof(seen));
		for (size_t i = 0; i < n; i++) {
			uint64_t row0 = ch[i].fbegin / 5, rows = ch[i].n / 5;

			/* Whole rows; at most the cap, unless one row is already more. */
			assert_int_equal(ch[i].fbegin % 5, 0);
			assert_int_equal(ch[i].n % 5, 0);
			assert_true(ch[i].n <= cap[ch[i].dest] || ch[i].n == 5);
			/* Every row of the request lives at the request's destination. */
			for (uint64_t r = row0; r < row0 + rows; r++)
				assert_int_equal(ch[i].dest,
						 expected_row_dest(t, 1, PS_PLACE_DENSE, r));
			for (uint32_t f = 0; f < ch[i].n; f++)
				seen[ch[i].fbegin + f]++;
		}
		for (size_t f = 0; f < 37 * 5; f++)
			assert_int_equal(seen[f], 1);
	}
	/* A sub-range (a retry of some requests) is covered exactly too. */
	{
		size_t n;

		for (uint32_t d = 0; d < NDEST; d++)
			cap[d] = 10;
		n = cli_split_dense(&sh, 10 * 5, 20 * 5, cap, ch);
		memset(seen, 0, sizeof(seen));
		for (size_t i = 0; i < n; i++)
			for (uint32_t f = 0; f < ch[i].n; f++)
				seen[ch[i].fbegin + f]++;
		for (size_t f = 0; f < 37 * 5; f++)
			assert_int_equal(seen[f], f >= 50 && f < 100);
	}
	assert_int_equal(cli_split_dense(&sh, 5, 5, cap, NULL), 0);
	ps_placement_destroy(t);
}

static void test_var_dests(void **state)
{
	struct ps_placement *t = table();
	struct cli_shape h = shape(t, 3, PS_VAR_HASH64, 4);
	struct cli_shape s = shape(t, 2, PS_VAR_SPARSE, 4);
	uint8_t mark[NDEST];

	(void)state;
	/* Hash: every shard of every server holding a bucket range (all servers here). */
	memset(mark, 0, sizeof(mark));
	cli_var_dests(&h, mark);
	for (uint32_t d = 0; d < NDEST; d++)
		assert_int_equal(mark[d], 1);
	/* Sparse: exactly the destinations some row routes to. */
	memset(mark, 0, sizeof(mark));
	cli_var_dests(&s, mark);
	for (uint32_t d = 0; d < NDEST; d++) {
		bool used = false;

		for (uint64_t r = 0; r < 10007 && !used; r++)
			used = expected_row_dest(t, 2, PS_PLACE_SPARSE, r) == d;
		assert_int_equal(mark[d], used);
	}
	ps_placement_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_route_sparse), cmocka_unit_test(test_route_dense),
		cmocka_unit_test(test_route_hash),   cmocka_unit_test(test_group_stable),
		cmocka_unit_test(test_split),	     cmocka_unit_test(test_split_dense),
		cmocka_unit_test(test_var_dests),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
