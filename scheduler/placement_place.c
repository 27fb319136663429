/*
 * Placing parts (ps_placement_compute's phases 2 and 3): per-server accounting, the
 * least-loaded heap, the largest part that fits, the refusal messages, row ranges split over
 * the least-loaded servers (one part per server) and hash variables over all servers (one
 * bucket range per server). See docs/placement.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "scheduler/placement_int.h"

int ps_placement_fail(struct pl_ctx *c, int rc, const char *fmt, ...)
{
	va_list ap;

	if (c->err && c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err, c->errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ---- the least-loaded heap: min on (util, server index), so ties are deterministic ---------- */

static bool less(const struct pl_ctx *c, uint32_t a, uint32_t b)
{
	double ua = c->srv[a].util, ub = c->srv[b].util;

	return ua < ub || (ua == ub && a < b);
}

static void heap_set(struct pl_ctx *c, uint32_t i, uint32_t s)
{
	c->heap[i] = s;
	c->srv[s].pos = i;
}

static void sift_down(struct pl_ctx *c, uint32_t i)
{
	uint32_t s = c->heap[i];

	for (;;) {
		uint32_t l = 2 * i + 1, m = l;

		if (l >= c->nheap)
			break;
		if (l + 1 < c->nheap && less(c, c->heap[l + 1], c->heap[l]))
			m = l + 1;
		if (!less(c, c->heap[m], s))
			break;
		heap_set(c, i, c->heap[m]);
		i = m;
	}
	heap_set(c, i, s);
}

static void heap_push(struct pl_ctx *c, uint32_t s)
{
	uint32_t i = c->nheap++;

	while (i > 0 && less(c, s, c->heap[(i - 1) / 2])) {
		heap_set(c, i, c->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(c, i, s);
}

static uint32_t heap_pop(struct pl_ctx *c)
{
	uint32_t s = c->heap[0];

	c->srv[s].pos = NOT_IN_HEAP;
	if (--c->nheap > 0) {
		c->heap[0] = c->heap[c->nheap];
		sift_down(c, 0);
	}
	return s;
}

void ps_placement_heap_build(struct pl_ctx *c)
{
	c->nheap = c->ns;
	for (uint32_t s = 0; s < c->ns; s++) {
		pl_set_util(&c->srv[s]);
		heap_set(c, s, s);
	}
	for (uint32_t i = c->ns / 2; i-- > 0;)
		sift_down(c, i);
}

/* ---- parts ---------------------------------------------------------------------------------- */

/* Largest n <= want such that n units of @v fit on @s (0 if none): estimates grow with n. */
static uint64_t max_fit(const struct pl_ctx *c, const struct pl_server *s, const struct pl_var *v,
			uint64_t want)
{
	struct ps_placement_load l = pl_est(c, v, want);
	uint64_t lo = 0, hi = want;

	if (pl_fits(s, &l))
		return want;
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;

		l = pl_est(c, v, mid);
		if (pl_fits(s, &l))
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* Add (@sign 1) or remove (-1) a part's estimate on @server, keeping c->left current. */
static void charge(struct pl_ctx *c, uint32_t server, const struct ps_placement_load *l,
		   double sign)
{
	struct pl_server *s = &c->srv[server];

	for (int d = 0; d < NDIMS; d++) {
		double before = pl_avail(s, d);

		s->load[d] += sign * l->v[d];
		c->left[d] += pl_avail(s, d) - before;
	}
}

/*
 * Record [begin, end) of @v on @server and charge its estimate. Callers never give a server a
 * second part of a variable (c->held), so parts are never merged: a part that stays keeps its
 * exact boundaries, and a new one is exactly the range it was given.
 */
int ps_placement_add_part(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end,
			  uint32_t server)
{
	struct ps_placement_part *p;

	if (v->nparts == v->cap) {
		uint32_t cap = v->cap ? 2 * v->cap : 4;
		struct ps_placement_part *np = realloc(v->parts, cap * sizeof(*np));

		if (!np)
			return ps_placement_fail(c, -ENOMEM, "out of memory");
		v->parts = np;
		v->cap = cap;
	}
	p = &v->parts[v->nparts++];
	p->begin = begin;
	p->end = end;
	p->server = server;
	p->load = pl_est(c, v, end - begin);
	charge(c, server, &p->load, 1);
	return 0;
}

int ps_placement_add_todo(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end)
{
	if (v->ntodo && v->todo[v->ntodo - 1].end == begin) {
		v->todo[v->ntodo - 1].end = end;
		return 0;
	}
	if (v->ntodo == v->todo_cap) {
		uint32_t cap = v->todo_cap ? 2 * v->todo_cap : 2;
		struct pl_range *nt = realloc(v->todo, cap * sizeof(*nt));

		if (!nt)
			return ps_placement_fail(c, -ENOMEM, "out of memory");
		v->todo = nt;
		v->todo_cap = cap;
	}
	v->todo[v->ntodo++] = (struct pl_range){begin, end};
	return 0;
}

/* ---- refusals ------------------------------------------------------------------------------- */

static void totals(const struct pl_ctx *c, double used[NDIMS], double left[NDIMS],
		   double budget[NDIMS])
{
	for (int d = 0; d < NDIMS; d++) {
		used[d] = left[d] = budget[d] = 0;
		for (uint32_t s = 0; s < c->ns; s++) {
			used[d] += c->srv[s].bg[d] + c->srv[s].load[d];
			left[d] += pl_avail(&c->srv[s], d);
			budget[d] += c->srv[s].budget[d];
		}
	}
}

/* The variable (or what is left of it) needs more than all servers have left, in some dim. */
int ps_placement_check_total(struct pl_ctx *c, const struct pl_var *v,
			     const struct ps_placement_load *need)
{
	double used[NDIMS], left[NDIMS], budget[NDIMS];

	for (int d = 0; d < NDIMS; d++) {
		if (need->v[d] <= c->left[d])
			continue;
		/* The running sum may have drifted (budgets above 2^53): decide on exact sums. */
		totals(c, used, left, budget);
		if (need->v[d] <= left[d])
			continue;
		return ps_placement_fail(
			c, PS_EOVER_BUDGET,
			"variable '%s' (id %" PRIu32 ", %s): %s budget: needs %.0f %s, "
			"%.0f available on %" PRIu32 " servers (budgets %.0f, in use %.0f)",
			v->in->name, v->in->id, pl_kind_name(v->in->kind), ps_placement_dim_name(d),
			need->v[d], pl_dim_unit(d), left[d], c->ns, budget[d], used[d]);
	}
	return 0;
}

/*
 * Units [first, end) of @v fit nowhere. c->cand[0..ncand) are the servers chosen for the range
 * that began before @first, each able to hold c->cap[i] units of it (ncand is 0 when nothing
 * was chosen); the message describes the servers as if those were filled. Servers that hold a
 * part of @v already (c->held == @stamp; a @stamp of 0 marks none) take no second part and are
 * left out of the counts. Names the dimension that stops the most servers. With candidates,
 * c->hb (the hash phase's scratch, unused in phase 3) maps a server to its room + 1.
 */
static int refuse_range(struct pl_ctx *c, const struct pl_var *v, uint64_t first, uint64_t end,
			uint32_t ncand, uint32_t stamp)
{
	struct ps_placement_load one = pl_est(c, v, 1), rest = pl_est(c, v, end - first);
	uint32_t lack[NDIMS] = {0}, stop[NDIMS] = {0}, nel = 0, nheld = 0;
	double most[NDIMS] = {0}, left[NDIMS] = {0};
	const char *unit = v->in->kind == PS_PLACE_HASH ? "bucket" : "row";
	char tail[160] = "";
	int d, worst = 0;

	if (ncand) {
		/* Each cap is below the range's units (else they would fit): + 1 cannot wrap. */
		memset(c->hb, 0, c->ns * sizeof(*c->hb));
		for (uint32_t i = 0; i < ncand; i++)
			c->hb[c->cand[i]] = c->cap[i] + 1;
	}
	for (uint32_t s = 0; s < c->ns; s++) {
		const struct pl_server *sv = &c->srv[s];
		struct ps_placement_load fill = {{0}}, next = one;

		if (stamp && c->held[s] == stamp) {
			nheld++;
			continue;
		}
		nel++;
		if (ncand && c->hb[s]) {
			fill = pl_est(c, v, c->hb[s] - 1);
			next = pl_est(c, v, c->hb[s]);
		}
		for (d = 0; d < NDIMS; d++) {
			double a = pl_avail(sv, d) - fill.v[d];

			if (a < 0)
				a = 0;
			if (one.v[d] > a)
				lack[d]++;
			if (sv->bg[d] + sv->load[d] + next.v[d] > sv->budget[d])
				stop[d]++;
			if (a > most[d])
				most[d] = a;
			left[d] += a;
		}
	}
	if (nel == 0)
		return ps_placement_fail(
			c, PS_EOVER_BUDGET,
			"variable '%s' (id %" PRIu32 ", %s): %ss [%" PRIu64 ", %" PRIu64
			") of its previous placement must move, and all %" PRIu32
			" servers already hold a part of it (a server holds at most one part of a "
			"variable)",
			v->in->name, v->in->id, pl_kind_name(v->in->kind), unit, first, end, c->ns);
	for (d = 1; d < NDIMS; d++)
		if (stop[d] > stop[worst])
			worst = d;
	if (nheld)
		snprintf(tail, sizeof(tail),
			 "; %" PRIu32 " servers already hold a part of it and take no second one",
			 nheld);
	d = worst;
	return ps_placement_fail(
		c, PS_EOVER_BUDGET,
		"variable '%s' (id %" PRIu32 ", %s): %s budget: %ss [%" PRIu64 ", %" PRIu64
		") do not fit: they need at least %.0f %s, %.0f available on %" PRIu32
		" servers, and %" PRIu32 " servers lack the %.0f %s one %s needs (most left on "
		"one server: %.0f)%s",
		v->in->name, v->in->id, pl_kind_name(v->in->kind), ps_placement_dim_name(d), unit,
		first, end, rest.v[d], pl_dim_unit(d), left[d], nel, lack[d], one.v[d],
		pl_dim_unit(d), unit, most[d], tail);
}

/* ---- phase 3: row ranges on the least-loaded servers ---------------------------------------- */

/*
 * How many servers a range of @n units should be spread over: enough for parts of about
 * part_fraction of an average server (its size is the highest of need / mean budget over the
 * dimensions), at most one per unit and one per server.
 */
static uint32_t parts_wanted(const struct pl_ctx *c, const struct ps_placement_load *need,
			     uint64_t n)
{
	double size = 0, k;

	for (int d = 0; d < NDIMS; d++) {
		double share = need->v[d] > 0
				       ? (c->mean_budget[d] > 0 ? need->v[d] / c->mean_budget[d]
								: INFINITY)
				       : 0;

		if (share > size)
			size = share;
	}
	k = ceil(size / c->frac); /* infinite for an infinite size: capped below */
	if (!(k >= 1))
		k = 1;
	if (k > (double)c->ns)
		k = (double)c->ns;
	if (k > (double)n)
		k = (double)n;
	return (uint32_t)k;
}

/*
 * A candidate's weight: the fraction of the range it could hold alone (the lowest, over the
 * dimensions the range uses, of what it has left / what the range needs). Ranges are split in
 * proportion to it, so each chosen server gives up about the same fraction of its room.
 */
static double room_weight(const struct pl_server *s, const struct ps_placement_load *need)
{
	double w = INFINITY;

	for (int d = 0; d < NDIMS; d++) {
		if (need->v[d] > 0) {
			double x = pl_avail(s, d) / need->v[d];

			if (x < w)
				w = x;
		}
	}
	return isinf(w) ? 1 : w;
}

/*
 * Phase 3 for one range of @v. Servers are taken from the least-loaded heap until there are
 * parts_wanted() of them and together they can hold the range; a server without room for one
 * unit, or holding a part of @v already, is set aside until the range is placed (loads only
 * grow, so it has no room later either). The range is then cut in proportion to the chosen
 * servers' room (room_weight), never above what each can hold (max_fit: every estimate grows
 * with the units, so any share up to it fits), one part per server, least-loaded first.
 */
int ps_placement_place_range(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end)
{
	uint64_t n = end - begin, sum = 0, left = n, cur = begin;
	struct ps_placement_load need = pl_est(c, v, n);
	uint32_t stamp = pl_stamp(c, v), want, k = 0, naside = 0;
	double wsum = 0;
	int rc = 0;

	for (uint32_t p = 0; p < v->nparts; p++)
		c->held[v->parts[p].server] = stamp;
	want = parts_wanted(c, &need, n);
	while (c->nheap && (k < want || sum < n)) {
		uint32_t x = heap_pop(c);
		uint64_t r = c->held[x] == stamp ? 0 : max_fit(c, &c->srv[x], v, n);

		if (r == 0) {
			c->aside[naside++] = x;
			continue;
		}
		c->cand[k] = x;
		c->cap[k] = r;
		c->hq[k] = room_weight(&c->srv[x], &need);
		wsum += c->hq[k];
		sum = r >= n - sum ? n : sum + r; /* saturates at n: no overflow */
		k++;
	}
	if (sum < n) {
		rc = refuse_range(c, v, begin + sum, end, k, stamp);
		goto restore;
	}
	if (!(wsum > 0) || !isfinite(wsum)) { /* no usable weights: equal shares */
		for (uint32_t i = 0; i < k; i++)
			c->hq[i] = 1;
		wsum = k;
	}
	/* Shares by weight, floored and capped; what rounding leaves goes to the first with room. */
	for (uint32_t i = 0; i < k; i++) {
		double t = (double)n * (c->hq[i] / wsum);
		uint64_t x = t >= (double)c->cap[i] ? c->cap[i] : (uint64_t)t;

		c->take[i] = x < left ? x : left;
		left -= c->take[i];
	}
	for (uint32_t i = 0; i < k && left; i++) {
		uint64_t more = c->cap[i] - c->take[i];

		more = more < left ? more : left;
		c->take[i] += more;
		left -= more;
	}
	for (uint32_t i = 0; i < k && rc == 0; i++) {
		if (!c->take[i])
			continue;
		rc = ps_placement_add_part(c, v, cur, cur + c->take[i], c->cand[i]);
		c->held[c->cand[i]] = stamp;
		cur += c->take[i];
		pl_set_util(&c->srv[c->cand[i]]);
	}
restore:
	for (uint32_t i = 0; i < k; i++)
		heap_push(c, c->cand[i]);
	while (naside)
		heap_push(c, c->aside[--naside]);
	return rc;
}

/* ---- phase 2: hash variables over all servers ----------------------------------------------- */

static int cmp_quota_desc(const void *a, const void *b, void *ctx)
{
	const struct pl_ctx *c = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	double rx = c->hq[x] - (double)c->hb[x], ry = c->hq[y] - (double)c->hb[y];

	if (rx != ry)
		return rx > ry ? -1 : 1;
	return x < y ? -1 : x > y;
}

/*
 * Round the quotas hq[] (summing to 65536) to whole buckets hb[], every server at least one,
 * the total exactly 65536: floors, then the largest remainders get one more; when the minimum
 * of one overshoots, the servers furthest above their quota give buckets back.
 */
static void round_quotas(struct pl_ctx *c)
{
	uint64_t total = 0;
	uint32_t n = c->ns;

	for (uint32_t s = 0; s < n; s++) {
		double f = floor(c->hq[s]);

		c->hb[s] = f < 1 ? 1 : (uint64_t)f;
		total += c->hb[s];
		c->hs[s] = s;
	}
	qsort_r(c->hs, n, sizeof(*c->hs), cmp_quota_desc, c);
	/*
	 * A deficit is below the number of servers with a positive remainder, so one pass does;
	 * cycling only guards against quotas whose floating-point sum fell short of 65536.
	 */
	for (uint32_t i = 0; total < PS_PLACEMENT_BUCKETS; i = (i + 1) % n) {
		c->hb[c->hs[i]]++;
		total++;
	}
	/* An excess comes from servers raised to one bucket; take it back, most-over first. */
	while (total > PS_PLACEMENT_BUCKETS) {
		uint32_t k = 0;

		for (uint32_t i = n; i-- > 0 && total > PS_PLACEMENT_BUCKETS;) {
			uint32_t s = c->hs[i];

			if (c->hb[s] > 1) {
				c->hb[s]--;
				total--;
			}
		}
		/* Keep only servers that can still give, so every pass makes progress. */
		for (uint32_t i = 0; i < n; i++)
			if (c->hb[c->hs[i]] > 1)
				c->hs[k++] = c->hs[i];
		n = k;
	}
}

int ps_placement_spread_hash(struct pl_ctx *c, struct pl_var *v)
{
	struct ps_placement_load one = pl_est(c, v, 1);
	double sum = 0, room[NDIMS] = {0};
	uint64_t pool = 0, begin = 0;
	uint32_t naside = 0;
	int rc;

	/* Weight: the fraction of the variable a server could hold alone. */
	for (uint32_t s = 0; s < c->ns; s++) {
		double w = INFINITY;

		for (int d = 0; d < NDIMS; d++) {
			if (v->need.v[d] > 0) {
				double x = pl_avail(&c->srv[s], d) / v->need.v[d];

				room[d] += x;
				if (x < w)
					w = x;
			}
		}
		c->hq[s] = isinf(w) ? 1 : w;
		sum += c->hq[s];
	}
	if (!(sum >= 1)) {
		int worst = -1;

		for (int d = 0; d < NDIMS; d++)
			if (v->need.v[d] > 0 && (worst < 0 || room[d] < room[worst]))
				worst = d;
		return ps_placement_fail(
			c, PS_EOVER_BUDGET,
			"variable '%s' (id %" PRIu32 ", hash): %s budget: spread over all %" PRIu32
			" servers it needs %.0f %s, and together with the other budgets they "
			"have room for %.1f%% of it",
			v->in->name, v->in->id, ps_placement_dim_name(worst), c->ns,
			v->need.v[worst], pl_dim_unit(worst), 100.0 * sum);
	}
	for (uint32_t s = 0; s < c->ns; s++)
		c->hq[s] = (double)PS_PLACEMENT_BUCKETS * (c->hq[s] / sum);
	round_quotas(c);

	/* Rounding and the request floor can push a server over: trim it, hand the rest on. */
	for (uint32_t s = 0; s < c->ns; s++) {
		struct pl_server *sv = &c->srv[s];
		uint64_t m = max_fit(c, sv, v, c->hb[s]);

		if (m == 0) {
			int d = 0;

			while (d < NDIMS - 1 && one.v[d] <= pl_avail(sv, d))
				d++;
			return ps_placement_fail(c, PS_EOVER_BUDGET,
						 "variable '%s' (id %" PRIu32
						 ", hash): %s budget: hash variables "
						 "are spread over all servers, and server %" PRIu32
						 " has %.0f %s left where one bucket needs %.0f",
						 v->in->name, v->in->id, ps_placement_dim_name(d),
						 s, pl_avail(sv, d), pl_dim_unit(d), one.v[d]);
		}
		pool += c->hb[s] - m;
		c->hb[s] = m;
	}
	while (pool && c->nheap) {
		uint32_t x = heap_pop(c);
		uint64_t m = max_fit(c, &c->srv[x], v, c->hb[x] + pool);

		pool -= m - c->hb[x];
		c->hb[x] = m;
		c->aside[naside++] = x;
	}
	while (naside)
		heap_push(c, c->aside[--naside]);
	if (pool) {
		uint64_t first = PS_PLACEMENT_BUCKETS - pool;

		return refuse_range(c, v, first, PS_PLACEMENT_BUCKETS, 0, 0);
	}
	for (uint32_t s = 0; s < c->ns; s++) {
		rc = ps_placement_add_part(c, v, begin, begin + c->hb[s], s);
		if (rc)
			return rc;
		begin += c->hb[s];
	}
	ps_placement_heap_build(c);
	return 0;
}
