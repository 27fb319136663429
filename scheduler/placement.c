/*
 * The placementer: ps_placement_compute(). The algorithm in four phases (docs/placement.md):
 *
 *   1. keep:   parts of the previous table stay on their server while they still fit there;
 *   2. hash:   new hash variables are spread over all servers, bucket ranges proportional to
 *              what each server has left;
 *   3. rows:   new dense/sparse variables and the ranges phase 1 could not keep, largest first,
 *              split over the least-loaded servers (a min-heap on the highest of their three
 *              utilisations) that have room and hold no part of the variable yet, one part
 *              each, in proportion to their room;
 *   4. table:  parts sorted, names copied, the id index built.
 *
 * This file holds the phases and the input checks; placing parts (accounting, the heap, the
 * refusal messages, phases 2 and 3 for one variable) is in scheduler/placement_place.c.
 *
 * Every estimate is a whole number (ps_placement_estimate), so the running per-server sums are
 * exact, and "fits" is decided on the same numbers the table reports.
 *
 * No server ever holds two parts of one variable: its data-path threads keep one part per
 * variable (server/dp_var.c refuses a second DECLARE with another range) and clients group a
 * call's ids per (server, shard), so a second part could be neither declared nor addressed.
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

/* ---- setup ---------------------------------------------------------------------------------- */

static int validate(struct pl_ctx *c)
{
	const struct ps_placement_input *in = c->in;

	if (!in->budgets || (in->nvars && !in->vars))
		return ps_placement_fail(c, -EINVAL,
					 "placement input: budgets and vars must be given");
	if (in->nservers == 0 || in->nservers > PS_PLACEMENT_MAX_SERVERS)
		return ps_placement_fail(c, -EINVAL,
					 "placement input: %" PRIu32 " servers (1..%u allowed)",
					 in->nservers, PS_PLACEMENT_MAX_SERVERS);
	if (!isfinite(in->steps_per_s) || in->steps_per_s < 0)
		return ps_placement_fail(
			c, -EINVAL, "placement input: steps_per_s %g is not a finite value >= 0",
			in->steps_per_s);
	if (!(in->part_fraction >= 0 && in->part_fraction <= 1))
		return ps_placement_fail(c, -EINVAL,
					 "placement input: part_fraction %g is not in (0, 1]",
					 in->part_fraction);
	for (uint32_t i = 0; i < in->nvars; i++) {
		const struct ps_placement_var *v = &in->vars[i];
		double rpr = v->rows_per_request > 0 ? v->rows_per_request : in->rows_per_request;
		size_t nl = v->name ? strlen(v->name) : 0;
		const char *name = v->name ? v->name : "(null)";

		if (nl == 0 || nl > PS_PLACEMENT_NAME_MAX)
			return ps_placement_fail(c, -EINVAL,
						 "variable %" PRIu32 " (id %" PRIu32
						 "): name must be 1..%u bytes",
						 i, v->id, PS_PLACEMENT_NAME_MAX);
		if (v->kind != PS_PLACE_DENSE && v->kind != PS_PLACE_SPARSE &&
		    v->kind != PS_PLACE_HASH)
			return ps_placement_fail(c, -EINVAL,
						 "variable '%s' (id %" PRIu32 "): unknown kind %d",
						 name, v->id, (int)v->kind);
		if (v->width == 0)
			return ps_placement_fail(c, -EINVAL,
						 "variable '%s' (id %" PRIu32 "): width is 0", name,
						 v->id);
		if (v->kind != PS_PLACE_HASH && v->rows == 0)
			return ps_placement_fail(c, -EINVAL,
						 "variable '%s' (id %" PRIu32 "): rows is 0", name,
						 v->id);
		if (!isfinite(v->rows_read_per_step) || v->rows_read_per_step < 0 ||
		    !isfinite(v->rows_pushed_per_step) || v->rows_pushed_per_step < 0)
			return ps_placement_fail(c, -EINVAL,
						 "variable '%s' (id %" PRIu32
						 "): rows read/pushed per step must "
						 "be finite and >= 0",
						 name, v->id);
		if (!isfinite(v->rows_per_request) || !isfinite(rpr) || !(rpr >= 1))
			return ps_placement_fail(
				c, -EINVAL,
				"variable '%s' (id %" PRIu32 "): rows per request %g (job "
				"default %g) must be >= 1",
				name, v->id, v->rows_per_request, in->rows_per_request);
	}
	return 0;
}

static int cmp_var_id(const void *a, const void *b, void *ctx)
{
	const struct pl_ctx *c = ctx;
	uint32_t x = c->vars[*(const uint32_t *)a].in->id, y = c->vars[*(const uint32_t *)b].in->id;

	return x < y ? -1 : x > y;
}

/* Placement order of phase 3: largest share of a server first, then by id. */
static int cmp_var_size(const void *a, const void *b, void *ctx)
{
	const struct pl_ctx *c = ctx;
	const struct pl_var *x = &c->vars[*(const uint32_t *)a],
			    *y = &c->vars[*(const uint32_t *)b];

	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	return x->in->id < y->in->id ? -1 : x->in->id > y->in->id;
}

static int setup(struct pl_ctx *c)
{
	const struct ps_placement_input *in = c->in;
	uint32_t ns = in->nservers;

	c->ns = ns;
	c->nvars = in->nvars;
	c->steps = in->steps_per_s;
	c->rpr = in->rows_per_request;
	c->frac = in->part_fraction > 0 ? in->part_fraction : PS_PLACEMENT_PART_FRACTION;
	c->srv = calloc(ns, sizeof(*c->srv));
	c->heap = calloc(ns, sizeof(*c->heap));
	c->aside = calloc(ns, sizeof(*c->aside));
	c->held = calloc(ns, sizeof(*c->held));
	c->cand = calloc(ns, sizeof(*c->cand));
	c->cap = calloc(ns, sizeof(*c->cap));
	c->take = calloc(ns, sizeof(*c->take));
	c->hq = calloc(ns, sizeof(*c->hq));
	c->hb = calloc(ns, sizeof(*c->hb));
	c->hs = calloc(ns, sizeof(*c->hs));
	c->vars = calloc(c->nvars ? c->nvars : 1, sizeof(*c->vars));
	c->order = calloc(c->nvars ? c->nvars : 1, sizeof(*c->order));
	if (!c->srv || !c->heap || !c->aside || !c->held || !c->cand || !c->cap || !c->take ||
	    !c->hq || !c->hb || !c->hs || !c->vars || !c->order)
		return ps_placement_fail(c, -ENOMEM, "out of memory");
	for (uint32_t s = 0; s < ns; s++) {
		c->srv[s].budget[PS_PLACEMENT_MEM] = (double)in->budgets[s].mem_bytes;
		c->srv[s].budget[PS_PLACEMENT_NET] = (double)in->budgets[s].net_bytes_per_s;
		c->srv[s].budget[PS_PLACEMENT_QPS] = (double)in->budgets[s].qps;
		c->srv[s].pos = NOT_IN_HEAP;
		for (int d = 0; d < NDIMS; d++)
			c->mean_budget[d] += c->srv[s].budget[d] / ns;
	}
	for (uint32_t i = 0; i < c->nvars; i++) {
		struct pl_var *v = &c->vars[i];

		v->in = &in->vars[i];
		v->domain = v->in->kind == PS_PLACE_HASH ? PS_PLACEMENT_BUCKETS : v->in->rows;
		v->need = pl_est(c, v, v->domain);
		for (int d = 0; d < NDIMS; d++) {
			double share =
				v->need.v[d] > 0
					? (c->mean_budget[d] > 0 ? v->need.v[d] / c->mean_budget[d]
								 : INFINITY)
					: 0;

			if (share > v->size)
				v->size = share;
		}
		c->order[i] = i;
	}
	qsort_r(c->order, c->nvars, sizeof(*c->order), cmp_var_id, c);
	for (uint32_t i = 1; i < c->nvars; i++)
		if (c->vars[c->order[i]].in->id == c->vars[c->order[i - 1]].in->id)
			return ps_placement_fail(
				c, -EINVAL, "variables '%s' and '%s' have the same id %" PRIu32,
				c->vars[c->order[i - 1]].in->name, c->vars[c->order[i]].in->name,
				c->vars[c->order[i]].in->id);
	return 0;
}

/* The previous table's entry for @v, if it has the same kind and domain. */
static const struct ps_placement_entry *prev_entry(const struct pl_ctx *c, const struct pl_var *v)
{
	const struct ps_placement_entry *e = ps_placement_find(c->in->prev, v->in->id);

	if (!e || e->kind != v->in->kind || e->domain != v->domain)
		return NULL;
	return e;
}

/* Before placing starts, background() uses load[] as scratch: minus the previous estimates. */
static void srv_add(struct pl_server *s, const struct ps_placement_load *l, double sign)
{
	for (int d = 0; d < NDIMS; d++)
		s->load[d] += sign * l->v[d];
}

/*
 * Background load: what a server measured beyond the estimates of the parts the previous table
 * put on it (parts of variables no longer declared count as background until they are gone).
 */
static void background(struct pl_ctx *c)
{
	const struct ps_placement_live *live = c->in->live;

	if (!live)
		return;
	for (uint32_t i = 0; i < c->nvars && c->in->prev; i++) {
		const struct pl_var *v = &c->vars[c->order[i]];
		const struct ps_placement_entry *e = prev_entry(c, v);

		for (uint32_t p = 0; e && p < e->nparts; p++) {
			struct ps_placement_load l =
				pl_est(c, v, e->parts[p].end - e->parts[p].begin);

			if (e->parts[p].server < c->ns)
				srv_add(&c->srv[e->parts[p].server], &l, -1);
		}
	}
	for (uint32_t s = 0; s < c->ns; s++) {
		double m[NDIMS];

		if (!live[s].valid) {
			memset(c->srv[s].load, 0, sizeof(c->srv[s].load));
			continue;
		}
		m[PS_PLACEMENT_MEM] = (double)live[s].mem_bytes;
		m[PS_PLACEMENT_NET] = (double)live[s].net_bytes_per_s;
		m[PS_PLACEMENT_QPS] = (double)live[s].qps;
		for (int d = 0; d < NDIMS; d++) {
			double b = m[d] + c->srv[s].load[d]; /* load holds minus the estimates */

			c->srv[s].bg[d] = b > 0 ? b : 0;
			c->srv[s].load[d] = 0;
		}
	}
}

/* The whole set against what all servers have (lower bound: every variable in one part). */
static int check_set(struct pl_ctx *c)
{
	double need[NDIMS] = {0}, left[NDIMS] = {0};

	for (uint32_t s = 0; s < c->ns; s++)
		for (int d = 0; d < NDIMS; d++)
			left[d] += pl_avail(&c->srv[s], d);
	for (uint32_t i = 0; i < c->nvars; i++)
		for (int d = 0; d < NDIMS; d++)
			need[d] += c->vars[i].need.v[d];
	for (int d = 0; d < NDIMS; d++) {
		double sum = 0;

		if (need[d] <= left[d])
			continue;
		/*
		 * Name the first variable past the limit, in phase-3 order (largest first). This
		 * always ends in a refusal, so c->order (id order) need not be restored.
		 */
		qsort_r(c->order, c->nvars, sizeof(*c->order), cmp_var_size, c);
		for (uint32_t i = 0; i < c->nvars; i++) {
			const struct pl_var *v = &c->vars[c->order[i]];

			sum += v->need.v[d];
			if (sum <= left[d])
				continue;
			return ps_placement_fail(
				c, PS_EOVER_BUDGET,
				"the variables do not fit: %s budget: the %" PRIu32
				" variables need at least %.0f %s, the %" PRIu32
				" servers have %.0f; the first past the limit (largest first) is "
				"'%s' (id %" PRIu32 ", %s), needing %.0f",
				ps_placement_dim_name(d), c->nvars, need[d], pl_dim_unit(d), c->ns,
				left[d], v->in->name, v->in->id, pl_kind_name(v->in->kind),
				v->need.v[d]);
		}
	}
	return 0;
}

/*
 * Phase 1: keep previous parts that still fit, in id order; the rest becomes todo ranges. A
 * previous table with two parts of a variable on one server (written before the one-part rule)
 * keeps the first and re-places the others.
 */
static int keep_previous(struct pl_ctx *c)
{
	int rc = 0;

	for (uint32_t i = 0; i < c->nvars && c->in->prev && rc == 0; i++) {
		struct pl_var *v = &c->vars[c->order[i]];
		const struct ps_placement_entry *e = prev_entry(c, v);
		uint32_t stamp = pl_stamp(c, v);

		v->matched = e != NULL;
		for (uint32_t p = 0; e && p < e->nparts && rc == 0; p++) {
			const struct ps_placement_part *pp = &e->parts[p];
			struct ps_placement_load l = pl_est(c, v, pp->end - pp->begin);

			if (pp->server < c->ns && c->held[pp->server] != stamp &&
			    pl_fits(&c->srv[pp->server], &l)) {
				rc = ps_placement_add_part(c, v, pp->begin, pp->end, pp->server);
				c->held[pp->server] = stamp;
			} else {
				rc = ps_placement_add_todo(c, v, pp->begin, pp->end);
			}
		}
	}
	return rc;
}

static int place_all(struct pl_ctx *c)
{
	uint32_t n = 0;
	int rc;

	ps_placement_heap_build(c);
	/* Phase 2: new hash variables, by id. */
	for (uint32_t i = 0; i < c->nvars; i++) {
		struct pl_var *v = &c->vars[c->order[i]];

		if (v->matched || v->in->kind != PS_PLACE_HASH)
			continue;
		rc = ps_placement_check_total(c, v, &v->need);
		if (rc == 0)
			rc = ps_placement_spread_hash(c, v);
		if (rc)
			return rc;
	}
	/* Phase 3: new dense/sparse variables and unkept ranges, largest first. */
	for (uint32_t i = 0; i < c->nvars; i++) {
		struct pl_var *v = &c->vars[i];

		if (v->matched ? v->ntodo > 0 : v->in->kind != PS_PLACE_HASH)
			c->order[n++] = i;
	}
	qsort_r(c->order, n, sizeof(*c->order), cmp_var_size, c);
	for (uint32_t i = 0; i < n; i++) {
		struct pl_var *v = &c->vars[c->order[i]];
		struct ps_placement_load need = v->need;

		if (v->matched) {
			memset(&need, 0, sizeof(need));
			for (uint32_t r = 0; r < v->ntodo; r++) {
				struct ps_placement_load l =
					pl_est(c, v, v->todo[r].end - v->todo[r].begin);

				for (int d = 0; d < NDIMS; d++)
					need.v[d] += l.v[d];
			}
		}
		rc = ps_placement_check_total(c, v, &need);
		if (rc)
			return rc;
		if (!v->matched)
			rc = ps_placement_place_range(c, v, 0, v->domain);
		for (uint32_t r = 0; v->matched && r < v->ntodo && rc == 0; r++)
			rc = ps_placement_place_range(c, v, v->todo[r].begin, v->todo[r].end);
		if (rc)
			return rc;
	}
	return 0;
}

static int cmp_part_begin(const void *a, const void *b)
{
	uint64_t x = ((const struct ps_placement_part *)a)->begin;
	uint64_t y = ((const struct ps_placement_part *)b)->begin;

	return x < y ? -1 : x > y;
}

/* Phase 4: the table, variables in input order, parts by begin. */
static int build_table(struct pl_ctx *c, struct ps_placement **out)
{
	struct ps_placement *t;
	uint64_t nparts = 0;
	size_t names = 0, off = 0;
	struct ps_placement_part *pp;
	int rc;

	for (uint32_t i = 0; i < c->nvars; i++) {
		nparts += c->vars[i].nparts;
		names += strlen(c->vars[i].in->name) + 1;
	}
	rc = ps_placement_table_alloc(c->ns, c->nvars, nparts, names, &t);
	if (rc)
		return ps_placement_fail(c, rc, "out of memory");
	t->cluster_version = c->in->cluster_version;
	pp = t->part_mem;
	for (uint32_t i = 0; i < c->nvars; i++) {
		struct pl_var *v = &c->vars[i];
		struct ps_placement_entry *e = &t->vars[i];
		size_t nl = strlen(v->in->name) + 1;

		qsort(v->parts, v->nparts, sizeof(*v->parts), cmp_part_begin);
		e->id = v->in->id;
		e->kind = v->in->kind;
		e->domain = v->domain;
		e->name = memcpy(t->name_mem + off, v->in->name, nl);
		off += nl;
		e->nparts = v->nparts;
		e->parts = pp;
		memcpy(pp, v->parts, v->nparts * sizeof(*pp));
		pp += v->nparts;
	}
	for (uint32_t s = 0; s < c->ns; s++) {
		memcpy(t->server_load[s].v, c->srv[s].load, sizeof(t->server_load[s].v));
		memcpy(t->server_background[s].v, c->srv[s].bg, sizeof(t->server_background[s].v));
		memcpy(t->server_budget[s].v, c->srv[s].budget, sizeof(t->server_budget[s].v));
	}
	ps_placement_table_index(t, NULL); /* ids were checked unique in setup() */
	*out = t;
	return 0;
}

static void ctx_free(struct pl_ctx *c)
{
	for (uint32_t i = 0; c->vars && i < c->nvars; i++) {
		free(c->vars[i].parts);
		free(c->vars[i].todo);
	}
	free(c->vars);
	free(c->order);
	free(c->srv);
	free(c->heap);
	free(c->aside);
	free(c->held);
	free(c->cand);
	free(c->cap);
	free(c->take);
	free(c->hq);
	free(c->hb);
	free(c->hs);
}

int ps_placement_compute(const struct ps_placement_input *in, struct ps_placement **out, char *err,
			 size_t errlen)
{
	struct pl_ctx c = {.in = in, .err = err, .errlen = errlen};
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return ps_placement_fail(&c, -EINVAL, "placement: no output pointer");
	*out = NULL;
	if (!in)
		return ps_placement_fail(&c, -EINVAL, "placement: no input");
	rc = validate(&c);
	if (rc == 0)
		rc = setup(&c);
	if (rc == 0) {
		background(&c);
		for (uint32_t s = 0; s < c.ns; s++)
			for (int d = 0; d < NDIMS; d++)
				c.left[d] += pl_avail(&c.srv[s], d);
		rc = check_set(&c);
	}
	if (rc == 0)
		rc = keep_previous(&c);
	if (rc == 0)
		rc = place_all(&c);
	if (rc == 0)
		rc = build_table(&c, out);
	ctx_free(&c);
	return rc;
}
