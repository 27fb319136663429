/*
 * The placement table: the load model, allocation, the id index, routing lookups, the key hash
 * and the shard rules. See scheduler/placement.h and docs/placement.md.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include <psplus/types.h>

#include "scheduler/placement_int.h"

const char *ps_placement_dim_name(enum ps_placement_dim d)
{
	switch (d) {
	case PS_PLACEMENT_MEM:
		return "memory";
	case PS_PLACEMENT_NET:
		return "network";
	case PS_PLACEMENT_QPS:
		return "query";
	default:
		return "unknown";
	}
}

/*
 * Requests per step that carry @rows rows to one part. rows/rpr is the batching estimate; it is
 * floored at 1 - e^-rows, the chance that a step touches the part at all (rows arriving as a
 * Poisson stream), because a request carries rows for one part only: cutting a variable finer
 * than its batches does not divide its requests. Continuous and increasing in @rows, so the
 * placementer can binary-search the largest part that fits.
 */
static double step_requests(double rows, double rpr)
{
	double touched;

	if (!(rows > 0))
		return 0;
	touched = -expm1(-rows);
	return rows / rpr > touched ? rows / rpr : touched;
}

/*
 * Every component is rounded up to a whole number (bytes, bytes/s, requests/s): conservative,
 * and it makes sums of estimates exact and independent of the order they are added in, so the
 * per-server totals of a table are exactly the sums the placementer checked against budgets.
 */
struct ps_placement_load ps_placement_estimate(const struct ps_placement_var *v, uint64_t units,
					       double steps_per_s, double rows_per_req)
{
	struct ps_placement_load l = {{0}};
	bool hash = v->kind == PS_PLACE_HASH;
	double domain = hash ? (double)PS_PLACEMENT_BUCKETS : (double)v->rows;
	double elem = v->elem_bytes ? (double)v->elem_bytes : 4.0;
	double row_bytes = (double)v->width * elem;
	double rpr = v->rows_per_request > 0 ? v->rows_per_request : rows_per_req;
	/* Ids on the wire: none for dense, u64 row ids, and up to 128-bit keys for hash. */
	double key_bytes = v->kind == PS_PLACE_DENSE ? 0 : v->kind == PS_PLACE_SPARSE ? 8 : 16;
	double frac, held, row_mem, rd, wr, req;

	if (units == 0 || !(domain > 0))
		return l;
	frac = (double)units >= domain ? 1.0 : (double)units / domain;
	row_mem = row_bytes * (1.0 + (double)v->slots);
	if (hash) {
		/* Keys spread uniformly over buckets (the key hash is a good mix). */
		held = ceil((double)v->rows * frac);
		row_mem += PS_PLACEMENT_HASH_ROW_BYTES;
	} else {
		held = (double)units;
	}
	if (!(rpr >= 1))
		rpr = 1;
	if (!(steps_per_s > 0))
		steps_per_s = 0;
	rd = v->rows_read_per_step * frac;
	wr = v->rows_pushed_per_step * frac;
	req = step_requests(rd, rpr) + step_requests(wr, rpr);
	l.v[PS_PLACEMENT_MEM] = ceil(held * row_mem);
	l.v[PS_PLACEMENT_QPS] = ceil(steps_per_s * req);
	l.v[PS_PLACEMENT_NET] = ceil(
		steps_per_s * ((rd + wr) * (row_bytes + key_bytes) + req * PS_PLACEMENT_REQ_BYTES));
	return l;
}

int ps_placement_table_alloc(uint32_t nservers, uint32_t nvars, uint64_t nparts, size_t name_bytes,
			     struct ps_placement **out)
{
	struct ps_placement *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return -ENOMEM;
	if (nparts > SIZE_MAX / sizeof(struct ps_placement_part))
		goto fail;
	t->nservers = nservers;
	t->nvars = nvars;
	t->nparts = nparts;
	t->vars = calloc(nvars ? nvars : 1, sizeof(*t->vars));
	t->by_id = calloc(nvars ? nvars : 1, sizeof(*t->by_id));
	t->part_mem = calloc(nparts ? (size_t)nparts : 1, sizeof(*t->part_mem));
	t->name_mem = calloc(name_bytes ? name_bytes : 1, 1);
	t->server_load = calloc(nservers ? nservers : 1, sizeof(*t->server_load));
	t->server_background = calloc(nservers ? nservers : 1, sizeof(*t->server_background));
	t->server_budget = calloc(nservers ? nservers : 1, sizeof(*t->server_budget));
	if (!t->vars || !t->by_id || !t->part_mem || !t->name_mem || !t->server_load ||
	    !t->server_background || !t->server_budget)
		goto fail;
	*out = t;
	return 0;
fail:
	ps_placement_destroy(t);
	return -ENOMEM;
}

void ps_placement_destroy(struct ps_placement *t)
{
	if (!t)
		return;
	free(t->vars);
	free(t->by_id);
	free(t->part_mem);
	free(t->name_mem);
	free(t->server_load);
	free(t->server_background);
	free(t->server_budget);
	free(t);
}

/* qsort_r (GNU) keeps this reentrant: tables are built from many threads in simulations. */
static int cmp_by_id(const void *a, const void *b, void *ctx)
{
	const struct ps_placement *t = ctx;
	uint32_t x = t->vars[*(const uint32_t *)a].id;
	uint32_t y = t->vars[*(const uint32_t *)b].id;

	return x < y ? -1 : x > y;
}

int ps_placement_table_index(struct ps_placement *t, uint32_t *dup)
{
	for (uint32_t i = 0; i < t->nvars; i++)
		t->by_id[i] = i;
	qsort_r(t->by_id, t->nvars, sizeof(*t->by_id), cmp_by_id, t);
	for (uint32_t i = 1; i < t->nvars; i++) {
		if (t->vars[t->by_id[i]].id == t->vars[t->by_id[i - 1]].id) {
			if (dup)
				*dup = t->vars[t->by_id[i]].id;
			return -EEXIST;
		}
	}
	return 0;
}

const struct ps_placement_entry *ps_placement_find(const struct ps_placement *t, uint32_t id)
{
	uint32_t lo = 0, hi = t ? t->nvars : 0;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		uint32_t got = t->vars[t->by_id[mid]].id;

		if (got == id)
			return &t->vars[t->by_id[mid]];
		if (got < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int64_t ps_placement_part_index(const struct ps_placement_entry *e, uint64_t x)
{
	uint32_t lo = 0, hi = e->nparts;

	if (x >= e->domain || e->nparts == 0)
		return -1;
	/* The last part whose begin is <= x; parts cover the domain, so it holds x. */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (e->parts[mid].begin <= x)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

int ps_placement_lookup(const struct ps_placement *t, uint32_t id, uint64_t x, uint32_t *part,
			uint32_t *server)
{
	const struct ps_placement_entry *e = ps_placement_find(t, id);
	int64_t i;

	if (!e)
		return PS_EUNKNOWN_VAR;
	i = ps_placement_part_index(e, x);
	if (i < 0)
		return PS_EOUT_OF_RANGE;
	if (part)
		*part = (uint32_t)i;
	if (server)
		*server = e->parts[i].server;
	return 0;
}

/*
 * The key hash is the one of include/psplus/types.h (splitmix64's finaliser), so the bucket
 * computed here and the one clients compute with ps_hash_bucket64() can never disagree.
 */
uint64_t ps_placement_key_hash(uint64_t key)
{
	return ps_mix64(key);
}

uint64_t ps_placement_key_hash128(uint64_t hi, uint64_t lo)
{
	return ps_mix64(lo ^ ps_mix64(hi));
}

/*
 * Dense and sparse parts are cut into contiguous blocks, one per thread. Contiguous blocks let
 * each thread's rows be one storage range (initialised by global row id, so the same seed gives
 * the same rows whatever the layout) and make a whole-tensor pull one gather per thread. The
 * price: ids sorted by frequency put the hot rows in the first block; hash variables (the
 * usual home of skewed ids) spread keys by hash instead.
 */
uint32_t ps_placement_row_shard(enum ps_place_kind kind, const struct ps_placement_part *p,
				uint64_t row, uint32_t threads)
{
	uint64_t n;

	(void)kind;
	if (threads <= 1)
		return 0;
	n = p->end - p->begin;
	if (n == 0 || row < p->begin || row >= p->end)
		return 0;
	return (uint32_t)((unsigned __int128)(row - p->begin) * threads / n);
}

void ps_placement_shard_range(const struct ps_placement_part *p, uint32_t shard, uint32_t threads,
			      uint64_t *begin, uint64_t *end)
{
	uint64_t n = p->end - p->begin;

	if (threads <= 1) {
		*begin = p->begin;
		*end = p->end;
		return;
	}
	/* Rows r with floor((r - begin) * T / n) == shard: [ceil(shard*n/T), ceil((shard+1)*n/T)). */
	*begin = p->begin + (uint64_t)(((unsigned __int128)shard * n + threads - 1) / threads);
	*end = p->begin + (uint64_t)(((unsigned __int128)(shard + 1) * n + threads - 1) / threads);
	if (*end > p->end)
		*end = p->end;
}

uint32_t ps_placement_key_shard(uint64_t hash, uint32_t threads)
{
	if (threads <= 1)
		return 0;
	/* The bucket takes the low 16 bits; the shard uses the others, so the two are independent. */
	return (uint32_t)((hash >> 16) % threads);
}
