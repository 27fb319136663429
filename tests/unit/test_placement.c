/*
 * The placementer (scheduler/placement*.c): each budget binding on its own, the refusal
 * messages, hash spreading, exact coverage, at most one part of a variable per server (in every
 * table checked, including random ones with previous tables), determinism, stability against a
 * previous table, live stats, routing against a brute-force scan, the shard rules, the blob
 * (round trip, every truncation, every corrupted field, every bit flip) and a 1,000-server x
 * 10,000-variable run.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <psplus/error.h>

#include <psplus/types.h>

#include "scheduler/placement.h"

#define GB  1000000000ull
#define BIG UINT64_C(1) << 60 /* a budget that never binds */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: fixed seeds keep every run the same. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t rnd_range(uint64_t lo, uint64_t hi) /* [lo, hi] */
{
	return lo + rnd() % (hi - lo + 1);
}

static struct ps_placement_var var(const char *name, uint32_t id, enum ps_place_kind kind,
				   uint64_t rows, uint32_t width, uint32_t slots, double rd,
				   double wr, double rpr)
{
	return (struct ps_placement_var){.name = name,
					 .id = id,
					 .kind = kind,
					 .rows = rows,
					 .width = width,
					 .elem_bytes = 4,
					 .slots = slots,
					 .rows_read_per_step = rd,
					 .rows_pushed_per_step = wr,
					 .rows_per_request = rpr};
}

static void budgets(struct ps_placement_budget *b, uint32_t n, uint64_t mem, uint64_t net,
		    uint64_t qps)
{
	for (uint32_t i = 0; i < n; i++)
		b[i] = (struct ps_placement_budget){mem, net, qps};
}

static struct ps_placement_input input(const struct ps_placement_var *v, uint32_t nv,
				       const struct ps_placement_budget *b, uint32_t ns,
				       double steps)
{
	return (struct ps_placement_input){.vars = v,
					   .nvars = nv,
					   .nservers = ns,
					   .budgets = b,
					   .steps_per_s = steps,
					   .rows_per_request = 100,
					   .cluster_version = UINT64_C(0x1234567890abcdef)};
}

/*
 * Every invariant of a computed table: variables in input order, parts tiling [0, domain) in
 * order, servers in range, no server holding two parts of one variable (a server's data-path
 * threads hold one part per variable), each part's estimate equal to the model's, per-server
 * totals equal to the sums of their parts, and totals plus background within every budget.
 */
static void check_table(const struct ps_placement *t, const struct ps_placement_input *in)
{
	struct ps_placement_load *sum = calloc(in->nservers, sizeof(*sum));
	uint32_t *last = calloc(in->nservers, sizeof(*last)); /* last variable (index + 1) seen */

	assert_non_null(sum);
	assert_non_null(last);
	assert_int_equal(t->nvars, in->nvars);
	assert_int_equal(t->nservers, in->nservers);
	assert_true(t->cluster_version == in->cluster_version);
	for (uint32_t i = 0; i < t->nvars; i++) {
		const struct ps_placement_entry *e = &t->vars[i];
		const struct ps_placement_var *v = &in->vars[i];

		assert_int_equal(e->id, v->id);
		assert_int_equal(e->kind, v->kind);
		assert_string_equal(e->name, v->name);
		assert_true(e->domain ==
			    (v->kind == PS_PLACE_HASH ? PS_PLACEMENT_BUCKETS : v->rows));
		assert_true(e->nparts >= 1);
		assert_true(e->parts[0].begin == 0);
		assert_true(e->parts[e->nparts - 1].end == e->domain);
		for (uint32_t j = 0; j < e->nparts; j++) {
			const struct ps_placement_part *p = &e->parts[j];
			struct ps_placement_load l = ps_placement_estimate(
				v, p->end - p->begin, in->steps_per_s, in->rows_per_request);

			assert_true(p->begin < p->end);
			if (j)
				assert_true(p->begin == e->parts[j - 1].end);
			assert_true(p->server < in->nservers);
			if (last[p->server] == i + 1)
				fail_msg("variable '%s' (id %u) has two parts on server %u",
					 e->name, e->id, p->server);
			last[p->server] = i + 1;
			for (int d = 0; d < PS_PLACEMENT_NDIMS; d++) {
				assert_true(p->load.v[d] == l.v[d]);
				sum[p->server].v[d] += l.v[d];
			}
		}
	}
	for (uint32_t s = 0; s < in->nservers; s++) {
		for (int d = 0; d < PS_PLACEMENT_NDIMS; d++) {
			/* Estimates are whole numbers: the sums are exact in any order. */
			assert_true(sum[s].v[d] == t->server_load[s].v[d]);
			assert_true(t->server_load[s].v[d] + t->server_background[s].v[d] <=
				    t->server_budget[s].v[d]);
		}
	}
	free(last);
	free(sum);
}

/* Highest utilisation of dimension @d over all servers. */
static double max_util(const struct ps_placement *t, int d)
{
	double u = 0;

	for (uint32_t s = 0; s < t->nservers; s++) {
		double x = (t->server_load[s].v[d] + t->server_background[s].v[d]) /
			   t->server_budget[s].v[d];

		if (x > u)
			u = x;
	}
	return u;
}

static uint32_t servers_used(const struct ps_placement_entry *e, uint32_t ns)
{
	uint32_t n = 0;
	char *seen = calloc(ns, 1);

	for (uint32_t j = 0; j < e->nparts; j++)
		if (!seen[e->parts[j].server]++)
			n++;
	free(seen);
	return n;
}

static int compute(const struct ps_placement_input *in, struct ps_placement **t, char *err)
{
	int rc = ps_placement_compute(in, t, err, 512);

	if (rc == 0)
		check_table(*t, in);
	else
		assert_null(*t);
	return rc;
}

/* ---- each budget binding on its own --------------------------------------------------------- */

static void test_memory_binds(void **state)
{
	struct ps_placement_budget b[4] = {{0}};
	/* 25M rows x 16 floats x (1 + 1 slot) = 3.2 GB against four 1 GB servers. */
	struct ps_placement_var v[2] = {
		var("emb_user", 7, PS_PLACE_SPARSE, 25000000, 16, 1, 1000, 1000, 1000),
		var("emb_item", 8, PS_PLACE_SPARSE, 1000, 16, 1, 10, 10, 100),
	};
	struct ps_placement_input in = input(v, 2, b, 4, 10);
	struct ps_placement *t;
	char err[512];

	budgets(b, 4, GB, BIG, BIG);
	assert_int_equal(compute(&in, &t, err), 0);
	/* 3.2 GB on 1 GB servers needs all four: one part on each, never two on one. */
	assert_int_equal(t->vars[0].nparts, 4);
	assert_int_equal(servers_used(&t->vars[0], 4), 4);
	assert_true(max_util(t, PS_PLACEMENT_MEM) > 0.75);
	assert_true(max_util(t, PS_PLACEMENT_MEM) <= 1.0);
	assert_true(max_util(t, PS_PLACEMENT_NET) < 1e-6);
	assert_true(max_util(t, PS_PLACEMENT_QPS) < 1e-6);
	ps_placement_destroy(t);

	/* 40M rows = 5.12 GB: refused, naming the budget, the variable and the numbers. */
	v[0].rows = 40000000;
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "memory budget"));
	assert_non_null(strstr(err, "'emb_user' (id 7"));
	assert_non_null(strstr(err, "5120128000 bytes")); /* both variables */
	assert_non_null(strstr(err, "4000000000"));
}

static void test_network_binds(void **state)
{
	struct ps_placement_budget b[4] = {{0}};
	/*
	 * 100 steps/s x 20,000 rows x (128 + 8) bytes + 20 requests x 64 bytes = 272,128,000 B/s
	 * against four servers of 100 MB/s; memory (128 MB) and requests (2,000/s) are tiny.
	 */
	struct ps_placement_var v[1] = {
		var("clicks", 3, PS_PLACE_SPARSE, 1000000, 32, 0, 10000, 10000, 1000),
	};
	struct ps_placement_input in = input(v, 1, b, 4, 100);
	struct ps_placement_load need;
	struct ps_placement *t;
	char err[512];

	budgets(b, 4, BIG, 100000000, BIG);
	need = ps_placement_estimate(&v[0], 1000000, 100, 100);
	assert_true(need.v[PS_PLACEMENT_NET] == 272128000.0);
	assert_true(need.v[PS_PLACEMENT_QPS] == 2000.0);
	assert_int_equal(compute(&in, &t, err), 0);
	assert_true(servers_used(&t->vars[0], 4) >= 3);
	assert_true(max_util(t, PS_PLACEMENT_NET) > 0.6);
	assert_true(max_util(t, PS_PLACEMENT_MEM) < 1e-6);
	assert_true(max_util(t, PS_PLACEMENT_QPS) < 1e-6);
	ps_placement_destroy(t);

	in.steps_per_s = 200; /* 544 MB/s */
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "network budget"));
	assert_non_null(strstr(err, "'clicks' (id 3, sparse)"));
	assert_non_null(strstr(err, "544256000 bytes/s"));
	assert_non_null(strstr(err, "400000000"));
}

static void test_query_binds(void **state)
{
	struct ps_placement_budget b[4] = {{0}};
	/* One row per request: 10 steps/s x 2,000 rows = 20,000 requests/s vs 4 x 6,000. */
	struct ps_placement_var v[1] = {
		var("ids", 11, PS_PLACE_SPARSE, 1000000, 1, 0, 1000, 1000, 1),
	};
	struct ps_placement_input in = input(v, 1, b, 4, 10);
	struct ps_placement *t;
	char err[512];

	budgets(b, 4, BIG, BIG, 6000);
	assert_int_equal(compute(&in, &t, err), 0);
	assert_int_equal(servers_used(&t->vars[0], 4), 4);
	assert_true(max_util(t, PS_PLACEMENT_QPS) > 0.8);
	assert_true(max_util(t, PS_PLACEMENT_MEM) < 1e-6);
	assert_true(max_util(t, PS_PLACEMENT_NET) < 1e-6);
	ps_placement_destroy(t);

	budgets(b, 4, BIG, BIG, 4000);
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "query budget"));
	assert_non_null(strstr(err, "'ids' (id 11, sparse)"));
	assert_non_null(strstr(err, "20000 requests/s"));
	assert_non_null(strstr(err, "16000"));
}

/*
 * The set check passes on lower bounds (each variable as one part), but a hash variable spread
 * over 100 servers costs each of them a request floor: the next variable is refused by name
 * against what is actually left.
 */
static void test_refuse_after_spread(void **state)
{
	struct ps_placement_budget b[100] = {{0}};
	struct ps_placement_var v[2] = {
		var("H", 1, PS_PLACE_HASH, 1000, 1, 0, 10, 10, 100),
		var("S", 2, PS_PLACE_SPARSE, 1000, 1, 0, 750, 750, 100),
	};
	struct ps_placement_input in = input(v, 2, b, 100, 100);
	struct ps_placement *t;
	char err[512];

	budgets(b, 100, BIG, BIG, 30);
	assert_true(ps_placement_estimate(&v[0], 65536, 100, 100).v[PS_PLACEMENT_QPS] == 200);
	assert_true(ps_placement_estimate(&v[1], 1000, 100, 100).v[PS_PLACEMENT_QPS] == 1500);
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_string_equal(err, "variable 'S' (id 2, sparse): query budget: needs 1500 "
				 "requests/s, 1000 available on 100 servers (budgets 3000, in use "
				 "2000)");
	in.nvars = 1;
	assert_int_equal(compute(&in, &t, err), 0);
	assert_int_equal(t->vars[0].nparts, 100);
	ps_placement_destroy(t);
}

/* Fits in total but not row by row: the refusal names the rows, the budget and the numbers. */
static void test_refuse_fragmented(void **state)
{
	struct ps_placement_budget b[2] = {{0}};
	/* Three 600 MB rows on two 1 GB servers: 1.8 GB < 2 GB, but only two rows fit. */
	struct ps_placement_var v[1] = {var("wide", 1, PS_PLACE_DENSE, 3, 150000000, 0, 0, 0, 1)};
	struct ps_placement_input in = input(v, 1, b, 2, 1);
	struct ps_placement *t;
	char err[512];

	budgets(b, 2, GB, BIG, BIG);
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "'wide' (id 1, dense): memory budget: rows [2, 3)"));
	assert_non_null(strstr(err, "600000000 bytes one row needs"));
	assert_non_null(strstr(err, "most left on one server: 400000000"));

	/* A hash variable must reach every server; one without memory refuses it by name. */
	v[0] = var("tags", 2, PS_PLACE_HASH, 1000, 8, 0, 0, 0, 1);
	b[1].mem_bytes = 0;
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "'tags' (id 2, hash): memory budget"));
	assert_non_null(strstr(err, "server 1 has 0 bytes left"));
}

static void test_invalid_input(void **state)
{
	struct ps_placement_budget b[1] = {{0}};
	struct ps_placement_var v[2] = {var("a", 1, PS_PLACE_DENSE, 10, 4, 0, 1, 1, 1),
					var("b", 1, PS_PLACE_DENSE, 10, 4, 0, 1, 1, 1)};
	struct ps_placement_input in = input(v, 2, b, 1, 1);
	struct ps_placement *t;
	char err[512];

	budgets(b, 1, BIG, BIG, BIG);
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	assert_non_null(strstr(err, "same id 1"));
	v[1].id = 2;
	v[1].width = 0;
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	assert_non_null(strstr(err, "'b' (id 2): width is 0"));
	v[1].width = 4;
	v[1].rows_per_request = 0.5;
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	v[1].rows_per_request = 0;
	in.rows_per_request = 0; /* the default it falls back to */
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	in.rows_per_request = 10;
	in.nservers = 0;
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	in.nservers = 1;
	assert_int_equal(compute(&in, &t, err), 0);
	ps_placement_destroy(t);
}

/* Limits: a domain of 2^64 - 1 rows, zero budgets, and the largest cluster a table can name. */
static void test_extremes(void **state)
{
	enum { NS = PS_PLACEMENT_MAX_SERVERS };
	struct ps_placement_budget *b = calloc(NS + 1, sizeof(*b));
	struct ps_placement_var v[1] = {var("huge", 1, PS_PLACE_SPARSE, UINT64_MAX, 1, 0, 1, 1, 1)};
	struct ps_placement_input in = input(v, 1, b, 4, 1);
	struct ps_placement *t;
	char err[512];

	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET);
	assert_non_null(strstr(err, "memory budget"));
	budgets(b, 4, BIG, BIG, BIG);
	assert_int_equal(compute(&in, &t, err), PS_EOVER_BUDGET); /* 2^66 bytes > 2^62 */

	/* 65,536 servers: a hash variable gets exactly one bucket on each. */
	budgets(b, NS + 1, GB, GB, 1000000);
	v[0] = var("everywhere", 2, PS_PLACE_HASH, 1000000, 8, 1, 100, 100, 10);
	in.nservers = NS + 1;
	assert_int_equal(compute(&in, &t, err), -EINVAL);
	in.nservers = NS;
	assert_int_equal(compute(&in, &t, err), 0);
	assert_int_equal(t->vars[0].nparts, NS);
	for (uint32_t j = 0; j < NS; j++) {
		assert_true(t->vars[0].parts[j].begin == j);
		assert_int_equal(t->vars[0].parts[j].server, j);
	}
	ps_placement_destroy(t);
	free(b);
}

/* ---- hash spreading and coverage ------------------------------------------------------------ */

static void test_hash_spread(void **state)
{
	enum { NS = 7 };
	struct ps_placement_budget b[NS] = {{0}};
	struct ps_placement_var v[2] = {
		var("hash_a", 40, PS_PLACE_HASH, 50000000, 16, 2, 5000, 5000, 100),
		var("hash_b", 41, PS_PLACE_HASH, 10, 4, 0, 1, 1, 1),
	};
	struct ps_placement_input in = input(v, 2, b, NS, 10);
	struct ps_placement *t;
	uint64_t cap = 0;
	char err[512];

	/* Memory capacity 1, 2, ..., 7 GB: bucket shares follow it. */
	for (uint32_t s = 0; s < NS; s++) {
		b[s] = (struct ps_placement_budget){(s + 1) * GB, BIG, BIG};
		cap += b[s].mem_bytes;
	}
	assert_int_equal(compute(&in, &t, err), 0);
	for (uint32_t i = 0; i < 2; i++) {
		const struct ps_placement_entry *e = &t->vars[i];
		uint64_t seen[NS] = {0}, covered = 0;

		assert_int_equal(e->nparts, NS);
		assert_int_equal(servers_used(e, NS), NS);
		for (uint32_t j = 0; j < e->nparts; j++) {
			seen[e->parts[j].server] += e->parts[j].end - e->parts[j].begin;
			covered += e->parts[j].end - e->parts[j].begin;
		}
		assert_true(covered == PS_PLACEMENT_BUCKETS);
		for (uint32_t s = 0; s < NS; s++) {
			double want = (double)PS_PLACEMENT_BUCKETS * (double)b[s].mem_bytes / cap;

			/* The second variable sees what the first left: proportional still. */
			assert_true(seen[s] >= want - 2 && seen[s] <= want + 2);
		}
	}
	ps_placement_destroy(t);
}

/* Random sets on random clusters: every table tiles every domain and honours every budget. */
static void test_random_coverage(void **state)
{
	enum { NV = 60 };
	struct ps_placement_var v[NV];
	struct ps_placement_budget b[40] = {{0}};
	char names[NV][16];
	int placed = 0, refused = 0;

	rng_state = 42;
	for (int round = 0; round < 200; round++) {
		uint32_t ns = (uint32_t)rnd_range(1, 40), nv = (uint32_t)rnd_range(1, NV);
		struct ps_placement_input in = input(v, nv, b, ns, (double)rnd_range(1, 50));
		struct ps_placement *t;
		char err[512];
		int rc;

		for (uint32_t s = 0; s < ns; s++)
			b[s] = (struct ps_placement_budget){rnd_range(1, 64) * GB / 8,
							    rnd_range(1, 100) * 10000000,
							    rnd_range(1, 100) * 1000};
		for (uint32_t i = 0; i < nv; i++) {
			enum ps_place_kind k = (enum ps_place_kind)(rnd() % 3);

			snprintf(names[i], sizeof(names[i]), "v%u", i);
			v[i] = var(names[i], (uint32_t)rnd() % 100000 * NV + i, k,
				   rnd_range(k == PS_PLACE_HASH ? 0 : 1,
					     (uint64_t)1 << rnd_range(0, 26)),
				   (uint32_t)rnd_range(1, 64), (uint32_t)rnd_range(0, 2),
				   (double)rnd_range(0, 5000), (double)rnd_range(0, 5000),
				   (double)rnd_range(0, 500));
		}
		rc = compute(&in, &t, err);
		if (rc == 0) {
			placed++;
			ps_placement_destroy(t);
		} else {
			assert_int_equal(rc, PS_EOVER_BUDGET);
			assert_non_null(strstr(err, " budget"));
			refused++;
		}
	}
	printf("random coverage: %d placed, %d refused\n", placed, refused);
	assert_true(placed > 20 && refused > 5);
}

/* ---- one part of a variable per server ------------------------------------------------------ */

/*
 * The case that could not be declared: a 300,000-row sparse variable (width 4, SGD: 4.8 MB) on
 * the two 4 MiB servers of test_client_e2e.sh. Cut into parts of a quarter of a server and
 * alternated, it was 5 parts, so one server held three and refused the second DECLARE
 * (-EEXIST). Now: two parts, one per server, halves of the rows.
 */
static void test_split_over_distinct_servers(void **state)
{
	struct ps_placement_budget b[3] = {{0}};
	struct ps_placement_var v[1] = {var("big", 1, PS_PLACE_SPARSE, 300000, 4, 0, 0, 0, 0)};
	struct ps_placement_input in = input(v, 1, b, 2, 10);
	const struct ps_placement_entry *e;
	struct ps_placement *t;
	char err[512];

	budgets(b, 2, 4u << 20, 1000u << 20, 1000000);
	assert_int_equal(compute(&in, &t, err), 0);
	e = &t->vars[0];
	assert_int_equal(e->nparts, 2);
	assert_int_equal(servers_used(e, 2), 2);
	assert_true(e->parts[0].end == 150000);
	ps_placement_destroy(t);

	/*
	 * Servers of 1, 2 and 3 GB and a 3 GB dense variable: one part on each, rows in
	 * proportion to the room (0.5, 1 and 1.5 GB), so all three end half full.
	 */
	for (uint32_t s = 0; s < 3; s++)
		b[s] = (struct ps_placement_budget){(s + 1) * GB, BIG, BIG};
	v[0] = var("w", 2, PS_PLACE_DENSE, 3000, 250000, 0, 0, 0, 1); /* 1 MB rows */
	in.nservers = 3;
	assert_int_equal(compute(&in, &t, err), 0);
	e = &t->vars[0];
	assert_int_equal(e->nparts, 3);
	for (uint32_t j = 0; j < 3; j++) {
		const struct ps_placement_part *p = &e->parts[j];

		assert_true(p->end - p->begin == 500 * (p->server + 1));
	}
	assert_true(max_util(t, PS_PLACEMENT_MEM) == 0.5);
	ps_placement_destroy(t);

	/* 5.25 GB, 2.6 average servers: 11 parts of a quarter of a server are wanted, 3 servers
	 * exist - one part on each, all 87.5% full. */
	v[0].rows = 5250;
	assert_int_equal(compute(&in, &t, err), 0);
	assert_int_equal(t->vars[0].nparts, 3);
	assert_true(max_util(t, PS_PLACEMENT_MEM) == 0.875);
	ps_placement_destroy(t);
}

/*
 * With a previous table: a range that cannot stay goes to servers holding no part of its
 * variable, or is refused - never a second part beside a kept one.
 */
static void test_moved_range_not_doubled(void **state)
{
	struct ps_placement_budget b[4] = {{0}};
	/* 1.2 GB in 1 MB rows; part_fraction 1: spread over two servers. */
	struct ps_placement_var v[1] = {var("m", 3, PS_PLACE_DENSE, 1200, 250000, 0, 0, 0, 1)};
	struct ps_placement_input in = input(v, 1, b, 4, 1);
	struct ps_placement *t1, *t2;
	const struct ps_placement_entry *e;
	char err[512];

	in.part_fraction = 1;
	budgets(b, 4, GB, BIG, BIG);
	assert_int_equal(compute(&in, &t1, err), 0);
	e = &t1->vars[0];
	assert_int_equal(e->nparts, 2);
	assert_int_equal(e->parts[0].server, 0);
	assert_int_equal(e->parts[1].server, 1);
	assert_true(e->parts[0].end == 600);

	/*
	 * Server 0 shrinks to 500 MB: its 600 MB part cannot stay. The rows go to the
	 * least-loaded servers without a part of the variable - server 0 itself (now empty, 500
	 * MB of room) and server 2 (1 GB) - in proportion to their room: 200 and 400 rows. None
	 * goes beside the kept part on server 1, which has 400 MB free.
	 */
	b[0].mem_bytes = 500000000;
	in.prev = t1;
	assert_int_equal(compute(&in, &t2, err), 0);
	e = &t2->vars[0];
	assert_int_equal(e->nparts, 3);
	assert_true(e->parts[0].begin == 0 && e->parts[0].end == 200);
	assert_int_equal(e->parts[0].server, 0);
	assert_true(e->parts[1].begin == 200 && e->parts[1].end == 600);
	assert_int_equal(e->parts[1].server, 2);
	assert_true(e->parts[2].begin == 600 && e->parts[2].end == 1200);
	assert_int_equal(e->parts[2].server, 1);
	ps_placement_destroy(t2);

	/* Servers 2 and 3 have 100 MB, server 0 200 MB: 400 MB for 600 MB of rows. The 400 MB
	 * free beside the kept part on server 1 are not used, so it is refused. */
	b[0].mem_bytes = 200000000;
	b[2].mem_bytes = b[3].mem_bytes = 100000000;
	assert_int_equal(compute(&in, &t2, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "'m' (id 3, dense): memory budget: rows [400, 600) do not "
				    "fit: they need at least 200000000 bytes, 0 available on 3 "
				    "servers"));
	assert_non_null(strstr(err, "1 servers already hold a part of it and take no second one"));
	ps_placement_destroy(t1);
}

/* Fill @v[0..nv) with random variables named from @names (as test_random_coverage does). */
static void random_vars(struct ps_placement_var *v, uint32_t nv, char (*names)[16], uint32_t first)
{
	for (uint32_t i = 0; i < nv; i++) {
		enum ps_place_kind k = (enum ps_place_kind)(rnd() % 3);

		snprintf(names[i], sizeof(names[i]), "v%u", first + i);
		v[i] = var(names[i], first + i, k,
			   rnd_range(k == PS_PLACE_HASH ? 0 : 1, (uint64_t)1 << rnd_range(0, 26)),
			   (uint32_t)rnd_range(1, 64), (uint32_t)rnd_range(0, 2),
			   (double)rnd_range(0, 5000), (double)rnd_range(0, 5000),
			   (double)rnd_range(0, 500));
	}
}

/*
 * Random clusters placed, then placed again with the first table as previous and one change:
 * more variables, a server more, a server fewer, or one server's budgets halved. Every table
 * passes check_table (one part of a variable per server included); every part on a surviving
 * server whose budgets did not change stays exactly; a refusal names a budget or the one-part
 * rule. A server fewer drops the variables with a part on every server: the removed server's
 * range has nowhere to go (test_stability), so they would refuse nearly every round.
 */
static void test_random_previous(void **state)
{
	enum { NV = 40, NS = 24 };
	struct ps_placement_var v[2 * NV];
	struct ps_placement_budget b[NS + 1] = {{0}};
	char names[2 * NV][16];
	int placed[4] = {0}, refused[4] = {0};

	rng_state = 77;
	for (int round = 0; round < 400; round++) {
		uint32_t ns = (uint32_t)rnd_range(2, NS), nv = (uint32_t)rnd_range(1, NV);
		struct ps_placement_input in = input(v, nv, b, ns, (double)rnd_range(1, 50));
		struct ps_placement *t1, *t2;
		int change = round % 4, rc;
		uint32_t shrunk = UINT32_MAX;
		char err[512];

		for (uint32_t s = 0; s <= ns; s++)
			b[s] = (struct ps_placement_budget){rnd_range(1, 64) * GB / 8,
							    rnd_range(1, 100) * 10000000,
							    rnd_range(1, 100) * 1000};
		random_vars(v, nv, names, 0);
		if (compute(&in, &t1, err) != 0)
			continue;
		in.prev = t1;
		if (change == 0) {
			uint32_t add = (uint32_t)rnd_range(1, NV);

			random_vars(v + nv, add, names + nv, nv);
			in.nvars = nv + add;
		} else if (change == 1) {
			in.nservers = ns + 1;
		} else if (change == 2) {
			uint32_t n = 0;

			for (uint32_t i = 0; i < nv; i++)
				if (servers_used(&t1->vars[i], ns) < ns)
					v[n++] = v[i];
			in.nvars = n;
			in.nservers = ns - 1;
		} else {
			shrunk = (uint32_t)rnd_range(0, ns - 1);
			b[shrunk].mem_bytes /= 2;
			b[shrunk].net_bytes_per_s /= 2;
			b[shrunk].qps /= 2;
		}
		rc = compute(&in, &t2, err);
		if (rc) {
			assert_int_equal(rc, PS_EOVER_BUDGET);
			if (!strstr(err, " budget") && !strstr(err, "already hold a part"))
				fail_msg("refusal without a reason: %s", err);
			refused[change]++;
			ps_placement_destroy(t1);
			continue;
		}
		placed[change]++;
		for (uint32_t i = 0; i < t1->nvars; i++) {
			const struct ps_placement_entry *a = &t1->vars[i];
			const struct ps_placement_entry *e = ps_placement_find(t2, a->id);

			for (uint32_t j = 0; e && j < a->nparts; j++) {
				const struct ps_placement_part *p = &a->parts[j];
				int64_t k = ps_placement_part_index(e, p->begin);

				if (p->server >= in.nservers || p->server == shrunk)
					continue;
				assert_true(k >= 0);
				assert_true(e->parts[k].begin == p->begin &&
					    e->parts[k].end == p->end);
				assert_int_equal(e->parts[k].server, p->server);
			}
		}
		ps_placement_destroy(t2);
		ps_placement_destroy(t1);
	}
	printf("random previous: placed/refused: more variables %d/%d, a server more %d/%d, "
	       "a server fewer %d/%d, a server halved %d/%d\n",
	       placed[0], refused[0], placed[1], refused[1], placed[2], refused[2], placed[3],
	       refused[3]);
	for (int k = 0; k < 4; k++)
		assert_true(placed[k] > 10);
}

/* ---- determinism and stability -------------------------------------------------------------- */

/* name, id, kind, rows, width, elem_bytes, slots, read/step, pushed/step, rows/request */
static struct ps_placement_var mixed[] = {
	{"user_emb", 1, PS_PLACE_SPARSE, 20000000, 32, 4, 1, 4000, 4000, 200},
	{"item_emb", 2, PS_PLACE_SPARSE, 3000000, 32, 4, 1, 4000, 4000, 200},
	{"tag_hash", 3, PS_PLACE_HASH, 30000000, 16, 4, 2, 8000, 8000, 200},
	{"mlp_w1", 4, PS_PLACE_DENSE, 512, 1024, 4, 2, 512, 512, 512},
	{"mlp_b1", 5, PS_PLACE_DENSE, 1, 1024, 4, 2, 1, 1, 1},
	{"mlp_w2", 6, PS_PLACE_DENSE, 1024, 256, 4, 2, 1024, 1024, 1024},
	{"geo_hash", 7, PS_PLACE_HASH, 1000000, 8, 4, 1, 1000, 1000, 100},
	{"ad_emb", 8, PS_PLACE_SPARSE, 80000000, 16, 4, 2, 4000, 4000, 200},
};
#define NMIXED (sizeof(mixed) / sizeof(mixed[0]))

static void same_parts(const struct ps_placement_entry *a, const struct ps_placement_entry *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->nparts, b->nparts);
	for (uint32_t j = 0; j < a->nparts; j++) {
		assert_true(a->parts[j].begin == b->parts[j].begin);
		assert_true(a->parts[j].end == b->parts[j].end);
		assert_int_equal(a->parts[j].server, b->parts[j].server);
	}
}

static void test_determinism(void **state)
{
	struct ps_placement_budget b[16] = {{0}};
	struct ps_placement_var rev[NMIXED];
	struct ps_placement_input in = input(mixed, NMIXED, b, 16, 20);
	struct ps_placement *t1, *t2, *t3;
	uint8_t *b1, *b2;
	size_t l1, l2;
	char err[512];

	budgets(b, 16, 4 * GB, GB, 200000);
	assert_int_equal(compute(&in, &t1, err), 0);
	assert_int_equal(compute(&in, &t2, err), 0);
	assert_int_equal(ps_placement_encode(t1, &b1, &l1), 0);
	assert_int_equal(ps_placement_encode(t2, &b2, &l2), 0);
	assert_true(l1 == l2);
	assert_memory_equal(b1, b2, l1);
	assert_memory_equal(t1->server_load, t2->server_load, 16 * sizeof(*t1->server_load));
	/* Input order does not matter: reversed input, same parts per variable. */
	for (uint32_t i = 0; i < NMIXED; i++)
		rev[i] = mixed[NMIXED - 1 - i];
	in.vars = rev;
	assert_int_equal(compute(&in, &t3, err), 0);
	for (uint32_t i = 0; i < NMIXED; i++)
		same_parts(&t1->vars[i], &t3->vars[NMIXED - 1 - i]);
	assert_memory_equal(t1->server_load, t3->server_load, 16 * sizeof(*t1->server_load));
	free(b1);
	free(b2);
	ps_placement_destroy(t1);
	ps_placement_destroy(t2);
	ps_placement_destroy(t3);
}

static void test_stability(void **state)
{
	enum { NS = 12 };
	struct ps_placement_budget b[NS] = {{0}};
	struct ps_placement_var more[NMIXED + 1], sub[NMIXED + 1];
	struct ps_placement_input in = input(mixed, NMIXED, b, NS, 20);
	struct ps_placement *t1, *t2, *t3;
	char err[512];
	uint32_t kept = 0, moved = 0, nsub = 0;

	budgets(b, NS, 4 * GB, GB, 200000);
	assert_int_equal(compute(&in, &t1, err), 0);

	/* A small new variable: everything else stays exactly where it was. */
	memcpy(more, mixed, sizeof(mixed));
	more[NMIXED] = var("new_bias", 99, PS_PLACE_DENSE, 1, 64, 1, 1, 1, 1);
	in.vars = more;
	in.nvars = NMIXED + 1;
	in.prev = t1;
	assert_int_equal(compute(&in, &t2, err), 0);
	for (uint32_t i = 0; i < NMIXED; i++)
		same_parts(&t1->vars[i], &t2->vars[i]);
	assert_int_equal(t2->vars[NMIXED].nparts, 1);

	/*
	 * One server fewer. A variable with a part on every server (the hash ones, and ad_emb,
	 * 15 GB on 4 GB servers) has nowhere to put the removed server's range: every server
	 * left holds a part of it and takes no second one, so the placement is refused.
	 */
	in.nservers = NS - 1;
	in.prev = t2;
	assert_int_equal(compute(&in, &t3, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "of its previous placement must move, and all 11 servers "
				    "already hold a part of it"));

	/* Without them: only the parts the removed server held move, each to a server that
	 * holds no part of its variable (check_table). */
	for (uint32_t i = 0; i < NMIXED + 1; i++)
		if (servers_used(&t2->vars[i], NS) < NS)
			sub[nsub++] = more[i];
	assert_true(nsub >= 5);
	in.vars = sub;
	in.nvars = nsub;
	assert_int_equal(compute(&in, &t3, err), 0);
	for (uint32_t i = 0; i < nsub; i++) {
		const struct ps_placement_entry *old = ps_placement_find(t2, sub[i].id);
		const struct ps_placement_entry *e = &t3->vars[i];

		for (uint32_t j = 0; j < old->nparts; j++) {
			const struct ps_placement_part *p = &old->parts[j];
			int64_t k = ps_placement_part_index(e, p->begin);

			if (p->server == NS - 1) {
				moved++;
				continue;
			}
			assert_true(k >= 0);
			assert_true(e->parts[k].begin == p->begin && e->parts[k].end == p->end);
			assert_int_equal(e->parts[k].server, p->server);
			kept++;
		}
	}
	printf("stability: %u parts kept, %u moved off the removed server\n", kept, moved);
	assert_true(moved > 0 && kept > moved);
	ps_placement_destroy(t1);
	ps_placement_destroy(t2);
	ps_placement_destroy(t3);
}

/* Live stats: load the previous parts do not explain stays on its server as background. */
static void test_live_stats(void **state)
{
	struct ps_placement_budget b[2] = {{0}};
	struct ps_placement_live live[2] = {{true, 900000000, 0, 0}, {false, 0, 0, 0}};
	struct ps_placement_var v[2] = {var("a", 1, PS_PLACE_DENSE, 1000, 50000, 0, 0, 0, 1),
					var("b", 2, PS_PLACE_DENSE, 1000, 50000, 0, 0, 0, 1)};
	struct ps_placement_input in = input(v, 1, b, 2, 1);
	struct ps_placement *t1, *t2;
	char err[512];

	budgets(b, 2, GB, BIG, BIG);
	in.live = live;
	/* 200 MB does not fit beside 900 MB measured on server 0. */
	assert_int_equal(compute(&in, &t1, err), 0);
	assert_int_equal(t1->vars[0].nparts, 1);
	assert_int_equal(t1->vars[0].parts[0].server, 1);
	assert_true(t1->server_background[0].v[PS_PLACEMENT_MEM] == 900e6);

	/* Next round: server 1 measures what its part should cost, and 100 MB more. */
	live[0] = (struct ps_placement_live){true, 100000000, 0, 0};
	live[1] = (struct ps_placement_live){true, 300000000, 0, 0};
	in.prev = t1;
	in.nvars = 2;
	assert_int_equal(compute(&in, &t2, err), 0);
	assert_true(t2->server_background[0].v[PS_PLACEMENT_MEM] == 100e6);
	assert_true(t2->server_background[1].v[PS_PLACEMENT_MEM] == 100e6);
	same_parts(&t1->vars[0], &t2->vars[0]);
	assert_int_equal(t2->vars[1].parts[0].server, 0);
	ps_placement_destroy(t2);

	/* Too much measured everywhere: refused, and the message counts what is in use. */
	live[0].mem_bytes = 950000000;
	live[1].mem_bytes = 950000000;
	assert_int_equal(compute(&in, &t2, err), PS_EOVER_BUDGET);
	printf("refusal: %s\n", err);
	assert_non_null(strstr(err, "memory budget"));
	ps_placement_destroy(t1);
}

/* ---- routing -------------------------------------------------------------------------------- */

static void test_lookup(void **state)
{
	enum { NS = 16 };
	struct ps_placement_budget b[NS] = {{0}};
	struct ps_placement_input in = input(mixed, NMIXED, b, NS, 20);
	struct ps_placement *t;
	uint32_t part, server;
	char err[512];

	budgets(b, NS, 2 * GB, GB, 200000);
	assert_int_equal(compute(&in, &t, err), 0);
	rng_state = 7;
	for (int n = 0; n < 200000; n++) {
		const struct ps_placement_entry *e = &t->vars[rnd() % t->nvars];
		uint64_t x = rnd() % e->domain;
		uint32_t want = UINT32_MAX;

		if (e->kind == PS_PLACE_HASH) {
			uint64_t h = ps_placement_key_hash(rnd());

			x = ps_placement_bucket(h);
			assert_true(x < PS_PLACEMENT_BUCKETS);
		}
		for (uint32_t j = 0; j < e->nparts; j++)
			if (e->parts[j].begin <= x && x < e->parts[j].end)
				want = j;
		assert_int_equal(ps_placement_lookup(t, e->id, x, &part, &server), 0);
		assert_int_equal(part, want);
		assert_int_equal(server, e->parts[want].server);
	}
	assert_int_equal(ps_placement_lookup(t, 12345, 0, &part, &server), PS_EUNKNOWN_VAR);
	assert_int_equal(ps_placement_lookup(t, 1, 20000000, &part, &server), PS_EOUT_OF_RANGE);
	assert_int_equal(ps_placement_lookup(t, 3, PS_PLACEMENT_BUCKETS, NULL, NULL),
			 PS_EOUT_OF_RANGE);
	assert_null(ps_placement_find(t, 0));
	assert_string_equal(ps_placement_find(t, 7)->name, "geo_hash");
	ps_placement_destroy(t);
}

static void test_shards(void **state)
{
	struct ps_placement_part p = {.begin = 1000, .end = 1010, .server = 0};
	uint32_t count[4] = {0}, prev = 0;

	/* dense and sparse: contiguous blocks, non-decreasing, every thread gets some, and
	 * ps_placement_shard_range() gives exactly the rows of each. */
	for (int k = 0; k < 2; k++) {
		enum ps_place_kind kind = k ? PS_PLACE_SPARSE : PS_PLACE_DENSE;

		memset(count, 0, sizeof(count));
		prev = 0;
		for (uint64_t r = p.begin; r < p.end; r++) {
			uint32_t s = ps_placement_row_shard(kind, &p, r, 4);
			uint64_t b, e;

			assert_true(s < 4 && s >= prev);
			ps_placement_shard_range(&p, s, 4, &b, &e);
			assert_true(r >= b && r < e);
			prev = s;
			count[s]++;
		}
		for (int s = 0; s < 4; s++)
			assert_true(count[s] == 2 || count[s] == 3);
	}
	{
		uint64_t b, e, covered = 0, next = p.begin;

		for (uint32_t s = 0; s < 16; s++) { /* more threads than rows: some are empty */
			ps_placement_shard_range(&p, s, 16, &b, &e);
			assert_true(b == next && e >= b);
			covered += e - b;
			next = e;
		}
		assert_true(covered == 10 && next == p.end);
	}
	assert_int_equal(ps_placement_row_shard(PS_PLACE_DENSE, &p, 1009, 1), 0);
	assert_int_equal(ps_placement_row_shard(PS_PLACE_SPARSE, &p, 1009, 0), 0);
	/* hash: the bits above the bucket (the low 16). */
	assert_int_equal(ps_placement_key_shard(UINT64_C(0x50000), 4), 1);
	assert_int_equal(ps_placement_key_shard(UINT64_C(0x5ffff), 4), 1);
	assert_int_equal(ps_placement_bucket(UINT64_C(0xffff000000012345)), 0x2345);
	/* The key hash is fixed forever, and the one clients use (types.h): pin it. */
	assert_true(ps_placement_key_hash(0) == 0);
	assert_true(ps_placement_key_hash(1) == UINT64_C(0x5692161d100b05e5));
	for (uint64_t k = 1; k < 100000; k += 997) {
		assert_int_equal(ps_placement_bucket(ps_placement_key_hash(k)),
				 ps_hash_bucket64(k));
		assert_int_equal(ps_placement_bucket(ps_placement_key_hash128(k, 3 * k)),
				 ps_hash_bucket128(3 * k, k));
	}
	assert_true(ps_placement_key_hash128(0, 1) == ps_placement_key_hash(1));
	assert_true(ps_placement_key_hash128(1, 1) != ps_placement_key_hash(1));
}

/* ---- the blob ------------------------------------------------------------------------------- */

static uint32_t test_crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = UINT32_MAX;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
	}
	return ~c;
}

static void fix_crc(uint8_t *b, size_t len)
{
	uint32_t c = test_crc32c(b, len - 4);

	for (int i = 0; i < 4; i++)
		b[len - 4 + i] = (uint8_t)(c >> (8 * i));
}

/* A small table: "d" (dense, 100 rows, id 5) then "hh" (hash, id 9), on 3 servers. */
static void small_blob(uint8_t **buf, size_t *len, struct ps_placement **tp)
{
	struct ps_placement_budget b[3] = {{0}};
	struct ps_placement_var v[2] = {var("d", 5, PS_PLACE_DENSE, 100, 10000000, 0, 0, 0, 1),
					var("hh", 9, PS_PLACE_HASH, 1000, 4, 0, 0, 0, 1)};
	struct ps_placement_input in = input(v, 2, b, 3, 1);
	char err[512];

	budgets(b, 3, 2 * GB, BIG, BIG);
	assert_int_equal(compute(&in, tp, err), 0);
	assert_true((*tp)->vars[0].nparts >= 3);
	assert_int_equal((*tp)->vars[1].nparts, 3);
	assert_int_equal(ps_placement_encode(*tp, buf, len), 0);
	/* 24 header + (20 + 1 + 10 n) + (20 + 2 + 3 x 4) + 4 crc */
	assert_true(*len == 24 + 21 + 10 * (*tp)->vars[0].nparts + 34 + 4);
}

static void test_blob_roundtrip(void **state)
{
	struct ps_placement_budget b[16] = {{0}};
	struct ps_placement_input in = input(mixed, NMIXED, b, 16, 20);
	struct ps_placement *t, *d;
	uint8_t *buf, *buf2;
	size_t len, len2;
	char err[512];

	budgets(b, 16, 4 * GB, GB, 200000);
	in.cluster_version = UINT64_C(0xfedcba9876543210);
	assert_int_equal(compute(&in, &t, err), 0);
	assert_int_equal(ps_placement_encode(t, &buf, &len), 0);
	printf("blob: %zu bytes for %u variables, %" PRIu64 " parts\n", len, t->nvars, t->nparts);
	assert_int_equal(ps_placement_decode(buf, len, &d, err, sizeof(err)), 0);
	assert_true(d->cluster_version == UINT64_C(0xfedcba9876543210));
	assert_int_equal(d->nservers, 16);
	assert_int_equal(d->nvars, t->nvars);
	assert_true(d->nparts == t->nparts);
	for (uint32_t i = 0; i < t->nvars; i++) {
		assert_string_equal(d->vars[i].name, t->vars[i].name);
		assert_int_equal(d->vars[i].kind, t->vars[i].kind);
		assert_true(d->vars[i].domain == t->vars[i].domain);
		same_parts(&d->vars[i], &t->vars[i]);
		assert_true(d->vars[i].parts[0].load.v[PS_PLACEMENT_MEM] == 0);
	}
	assert_int_equal(ps_placement_lookup(d, 8, 79999999, NULL, NULL), 0);
	assert_int_equal(ps_placement_encode(d, &buf2, &len2), 0);
	assert_true(len2 == len);
	assert_memory_equal(buf, buf2, len);
	/* A decoded table serves as the previous placement. */
	in.prev = d;
	ps_placement_destroy(t);
	assert_int_equal(compute(&in, &t, err), 0);
	for (uint32_t i = 0; i < t->nvars; i++)
		same_parts(&d->vars[i], &t->vars[i]);
	free(buf);
	free(buf2);
	ps_placement_destroy(t);
	ps_placement_destroy(d);
}

static void test_blob_truncated(void **state)
{
	struct ps_placement *t, *d = (struct ps_placement *)1;
	uint8_t *buf, *copy;
	size_t len;
	char err[512];

	small_blob(&buf, &len, &t);
	for (size_t n = 0; n < len; n++) {
		/* An exact-size copy, so ASan sees any read past the end. */
		copy = malloc(n ? n : 1);
		memcpy(copy, buf, n);
		assert_int_equal(ps_placement_decode(copy, n, &d, err, sizeof(err)),
				 PS_EBAD_MESSAGE);
		assert_null(d);
		assert_non_null(strstr(err, "placement blob: "));
		free(copy);
	}
	assert_int_equal(ps_placement_decode(buf, len, &d, err, sizeof(err)), 0);
	ps_placement_destroy(d);
	free(buf);
	ps_placement_destroy(t);
}

struct corruption {
	size_t off;	  /* offset of the field (negative-from-end not needed) */
	int width;	  /* bytes */
	uint64_t value;	  /* new value, little-endian */
	int code;	  /* expected result */
	const char *text; /* expected in the message */
};

static void put_le(uint8_t *p, int width, uint64_t v)
{
	for (int i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void test_blob_corrupt(void **state)
{
	struct ps_placement *t, *d;
	uint8_t *buf, *copy;
	size_t len, v1, parts0;
	uint32_t np0;
	char err[512];

	small_blob(&buf, &len, &t);
	np0 = t->vars[0].nparts;
	parts0 = 24 + 20 + 1;
	v1 = parts0 + 10 * np0; /* second variable */
	{
		const struct corruption c[] = {
			{0, 1, 'Q', PS_EBAD_MESSAGE, "bad magic"},
			{4, 2, 2, PS_EPROTO_VERSION, "format 2"},
			{6, 2, 1, PS_EBAD_MESSAGE, "unknown flags"},
			{16, 4, 0, PS_EBAD_MESSAGE, "server count 0"},
			{16, 4, 65537, PS_EBAD_MESSAGE, "server count 65537"},
			{16, 4, 2, PS_EBAD_MESSAGE, "server 2 of 2"},
			{20, 4, 3, PS_EBAD_MESSAGE, "truncated"},
			{20, 4, 1, PS_EBAD_MESSAGE, "bytes after the last variable"},
			{20, 4, UINT32_MAX, PS_EBAD_MESSAGE, "truncated"},
			{28, 1, 3, PS_EBAD_MESSAGE, "unknown kind 3"},
			{29, 1, 0, PS_EBAD_MESSAGE, "empty name"},
			{29, 1, 255, PS_EBAD_MESSAGE, "truncated"},
			{30, 2, 1, PS_EBAD_MESSAGE, "reserved"},
			{32, 8, 0, PS_EBAD_MESSAGE, "domain 0"},
			{32, 8, 99, PS_EBAD_MESSAGE, "within domain 99"},
			{32, 8, 101, PS_EBAD_MESSAGE, "parts end at 100"},
			{40, 4, 0, PS_EBAD_MESSAGE, "0 parts"},
			{40, 4, 101, PS_EBAD_MESSAGE, "101 parts"},
			{40, 4, UINT32_MAX, PS_EBAD_MESSAGE, "parts"},
			{44, 1, 0, PS_EBAD_MESSAGE, "NUL byte"},
			{parts0, 8, 99, PS_EBAD_MESSAGE, "does not follow"},
			{parts0, 8, UINT64_MAX, PS_EBAD_MESSAGE, "does not follow"},
			{parts0 + 10, 8, 0, PS_EBAD_MESSAGE, "does not follow"},
			{parts0 + 8, 2, 3, PS_EBAD_MESSAGE, "server 3 of 3"},
			{v1, 4, 5, PS_EBAD_MESSAGE, "id 5 appears twice"},
			{v1 + 4, 1, PS_PLACE_SPARSE, PS_EBAD_MESSAGE, "truncated"},
			{v1 + 8, 8, 65535, PS_EBAD_MESSAGE, "invalid for a hash variable"},
			{v1 + 22 + 8, 2, 65534, PS_EBAD_MESSAGE, "parts end at 65535"},
			{v1 + 22 + 4, 2, 0, PS_EBAD_MESSAGE, "does not follow"},
		};

		for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
			copy = malloc(len);
			memcpy(copy, buf, len);
			put_le(copy + c[i].off, c[i].width, c[i].value);
			fix_crc(copy, len);
			d = (struct ps_placement *)1;
			assert_int_equal(ps_placement_decode(copy, len, &d, err, sizeof(err)),
					 c[i].code);
			assert_null(d);
			if (!strstr(err, c[i].text))
				fail_msg("case %zu: '%s' lacks '%s'", i, err, c[i].text);
			free(copy);
		}
	}
	/* A field changed to another valid value: only the checksum tells. */
	copy = malloc(len + 1);
	memcpy(copy, buf, len);
	copy[parts0 + 8] = (uint8_t)((copy[parts0 + 8] + 1) % 3);
	assert_int_equal(ps_placement_decode(copy, len, &d, err, sizeof(err)), PS_EBAD_MESSAGE);
	assert_non_null(strstr(err, "checksum mismatch"));
	/* A byte after a valid blob (checksum recomputed over it). */
	memcpy(copy, buf, len);
	memmove(copy + len - 3, copy + len - 4, 4);
	copy[len - 4] = 0;
	fix_crc(copy, len + 1);
	assert_int_equal(ps_placement_decode(copy, len + 1, &d, err, sizeof(err)), PS_EBAD_MESSAGE);
	assert_non_null(strstr(err, "1 bytes after the last variable"));
	/* Every single-bit flip anywhere is rejected. */
	for (size_t off = 0; off < len; off++) {
		for (int bit = 0; bit < 8; bit++) {
			int rc;

			memcpy(copy, buf, len);
			copy[off] ^= (uint8_t)(1u << bit);
			rc = ps_placement_decode(copy, len, &d, NULL, 0);
			assert_true(rc == PS_EBAD_MESSAGE ||
				    (off >= 4 && off < 6 && rc == PS_EPROTO_VERSION));
		}
	}
	free(copy);
	free(buf);
	ps_placement_destroy(t);
}

/* ---- scale ---------------------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_simulation(void **state)
{
	enum { NS = 1000, NV = 10000 };
	struct ps_placement_budget *b = calloc(NS + 1, sizeof(*b));
	struct ps_placement_var *v = calloc(NV, sizeof(*v));
	char(*names)[16] = calloc(NV, sizeof(*names));
	struct ps_placement_input in = input(v, NV, b, NS, 10);
	struct ps_placement *t, *t2, *t3;
	uint32_t nhash = 0, nsplit = 0, maxparts = 0;
	double t0, t1, t2s, t3s;
	char err[512];

	/* 64 GB, 10 GB/s and 1M requests/s per server (and a spare one for the grown cluster). */
	budgets(b, NS + 1, 64 * GB, 10 * GB, 1000000);
	rng_state = 2024;
	for (uint32_t i = 0; i < NV; i++) {
		uint64_t r = rnd() % 100;

		snprintf(names[i], sizeof(names[i]), "var%05u", i);
		if (r < 1) /* 1%: hash, 10M-100M keys */
			v[i] = var(names[i], i, PS_PLACE_HASH, rnd_range(10, 100) * 1000000,
				   (uint32_t)rnd_range(8, 64), 2, 20000, 20000, 100);
		else if (r < 10) /* 9%: big embeddings, up to 200M rows */
			v[i] = var(names[i], i, PS_PLACE_SPARSE, rnd_range(1, 200) * 1000000,
				   (uint32_t)rnd_range(8, 64), 1, 20000, 20000, 200);
		else if (r < 60) /* small embeddings */
			v[i] = var(names[i], i, PS_PLACE_SPARSE, rnd_range(1000, 1000000),
				   (uint32_t)rnd_range(4, 32), 1, 500, 500, 100);
		else /* dense layers */
			v[i] = var(names[i], i, PS_PLACE_DENSE, rnd_range(1, 4096),
				   (uint32_t)rnd_range(1, 1024), 2, 100, 100, 4096);
	}
	t0 = now_s();
	assert_int_equal(ps_placement_compute(&in, &t, err, sizeof(err)), 0);
	t1 = now_s();
	/* Re-placing with the table as previous (the steady-state path). */
	in.prev = t;
	assert_int_equal(ps_placement_compute(&in, &t2, err, sizeof(err)), 0);
	t2s = now_s();
	/* A server more, with the table as previous: every part stays, the new server is idle. */
	in.nservers = NS + 1;
	assert_int_equal(ps_placement_compute(&in, &t3, err, sizeof(err)), 0);
	t3s = now_s();
	for (uint32_t i = 0; i < NV; i++) {
		if (t->vars[i].kind == PS_PLACE_HASH) {
			nhash++;
			assert_int_equal(t->vars[i].nparts, NS);
		} else if (t->vars[i].nparts > 1) {
			nsplit++;
		}
		/* One part per server: as many servers as parts (check_table checks it too). */
		assert_int_equal(servers_used(&t->vars[i], NS), t->vars[i].nparts);
		if (t->vars[i].kind != PS_PLACE_HASH && t->vars[i].nparts > maxparts)
			maxparts = t->vars[i].nparts;
		same_parts(&t->vars[i], &t2->vars[i]);
		same_parts(&t->vars[i], &t3->vars[i]);
	}
	printf("simulation: %u servers x %u variables (%u hash, %u split, at most %u parts of a "
	       "dense/sparse one), %" PRIu64 " parts: placed in %.3f s, re-placed with previous "
	       "in %.3f s, with one server more in %.3f s; max util mem %.2f net %.2f qps %.2f\n",
	       NS, NV, nhash, nsplit, maxparts, t->nparts, t1 - t0, t2s - t1, t3s - t2s,
	       max_util(t, PS_PLACEMENT_MEM), max_util(t, PS_PLACEMENT_NET),
	       max_util(t, PS_PLACEMENT_QPS));
	check_table(t3, &in);
	in.nservers = NS;
	check_table(t2, &in);
	in.prev = NULL;
	check_table(t, &in);
	ps_placement_destroy(t);
	ps_placement_destroy(t2);
	ps_placement_destroy(t3);
	free(names);
	free(v);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memory_binds),
		cmocka_unit_test(test_network_binds),
		cmocka_unit_test(test_query_binds),
		cmocka_unit_test(test_refuse_after_spread),
		cmocka_unit_test(test_refuse_fragmented),
		cmocka_unit_test(test_invalid_input),
		cmocka_unit_test(test_extremes),
		cmocka_unit_test(test_hash_spread),
		cmocka_unit_test(test_random_coverage),
		cmocka_unit_test(test_split_over_distinct_servers),
		cmocka_unit_test(test_moved_range_not_doubled),
		cmocka_unit_test(test_random_previous),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_stability),
		cmocka_unit_test(test_live_stats),
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_shards),
		cmocka_unit_test(test_blob_roundtrip),
		cmocka_unit_test(test_blob_truncated),
		cmocka_unit_test(test_blob_corrupt),
		cmocka_unit_test(test_simulation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
