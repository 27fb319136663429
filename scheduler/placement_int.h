/*
 * Private to scheduler/placement*.c: building a table (shared by compute and decode), and the
 * state of one ps_placement_compute() call (shared by its phases and the placing code).
 */
#ifndef PS_SCHEDULER_PLACEMENT_INT_H
#define PS_SCHEDULER_PLACEMENT_INT_H

#include <math.h>

#include "scheduler/placement.h"

/*
 * ps_placement_table_alloc() - a zeroed table with room for @nvars variables, @nparts parts,
 * @name_bytes bytes of names (NULs included) and @nservers servers' totals.
 * Returns 0 or -ENOMEM (nothing left behind).
 */
int ps_placement_table_alloc(uint32_t nservers, uint32_t nvars, uint64_t nparts, size_t name_bytes,
			     struct ps_placement **out);

/*
 * ps_placement_table_index() - sort the id index once vars[] is filled.
 * Returns 0, or -EEXIST with *dup set to the first duplicated id.
 */
int ps_placement_table_index(struct ps_placement *t, uint32_t *dup);

/* ---- one compute call ---- */

#define NDIMS	    PS_PLACEMENT_NDIMS
#define NOT_IN_HEAP UINT32_MAX

static inline const char *pl_dim_unit(int d)
{
	return d == PS_PLACEMENT_MEM ? "bytes" : d == PS_PLACEMENT_NET ? "bytes/s" : "requests/s";
}

struct pl_range {
	uint64_t begin;
	uint64_t end;
};

/* One server while placing. */
struct pl_server {
	double budget[NDIMS];
	double bg[NDIMS]; /* background: measured load the previous table's parts do not explain */
	double load[NDIMS]; /* sum of the estimates of the parts placed on it (whole numbers) */
	double util;	    /* heap key: highest (bg + load) / budget over the three dimensions */
	uint32_t pos;	    /* index in the heap, or NOT_IN_HEAP */
};

/* One variable while placing. */
struct pl_var {
	const struct ps_placement_var *in;
	uint64_t domain;
	struct ps_placement_load need; /* the whole variable as one part */
	double size;		       /* largest share of an average server, for ordering */
	/*
	 * [nparts], at most one per server: a server's data-path threads hold one part of each
	 * variable (a second DECLARE of it is -EEXIST) and clients group ids per (server,
	 * shard), so a variable never has two parts on one server.
	 */
	struct ps_placement_part *parts;
	uint32_t nparts, cap;
	struct pl_range *todo; /* ranges phase 1 could not keep */
	uint32_t ntodo, todo_cap;
	bool matched; /* the previous table has it with the same kind and domain */
};

struct pl_ctx {
	const struct ps_placement_input *in;
	double steps, rpr, frac;
	uint32_t ns;
	struct pl_server *srv;
	uint32_t *heap, nheap;
	uint32_t *aside; /* servers popped but without room for the current variable */
	/*
	 * held[s] == the stamp of the variable being placed (its index + 1) when server s holds
	 * a part of it: phases 1 and 3 give such a server no second part.
	 */
	uint32_t *held;
	uint32_t *cand; /* phase 3: the servers chosen for a range, least-loaded first */
	uint64_t *cap;	/* phase 3: units of the range each of them can hold (max_fit) */
	uint64_t *take; /* phase 3: units each of them gets */
	struct pl_var *vars;
	uint32_t nvars;
	uint32_t *order; /* variable indexes, sorted per phase */
	double mean_budget[NDIMS];
	double left[NDIMS]; /* sum over servers of avail(), kept up to date by charge() */
	double *hq;	    /* hash spreading: quota per server; phase 3: weight per candidate */
	uint64_t *hb;	    /* hash spreading: buckets per server */
	uint32_t *hs;	    /* hash spreading: server order */
	char *err;
	size_t errlen;
};

static inline const char *pl_kind_name(enum ps_place_kind k)
{
	return k == PS_PLACE_DENSE ? "dense" : k == PS_PLACE_SPARSE ? "sparse" : "hash";
}

static inline struct ps_placement_load pl_est(const struct pl_ctx *c, const struct pl_var *v,
					      uint64_t units)
{
	return ps_placement_estimate(v->in, units, c->steps, c->rpr);
}

/* The mark of @v in c->held[]: never 0, so a zeroed array marks nothing. */
static inline uint32_t pl_stamp(const struct pl_ctx *c, const struct pl_var *v)
{
	return (uint32_t)(v - c->vars) + 1;
}

static inline double pl_avail(const struct pl_server *s, int d)
{
	double a = s->budget[d] - s->bg[d] - s->load[d];

	return a > 0 ? a : 0;
}

static inline bool pl_fits(const struct pl_server *s, const struct ps_placement_load *l)
{
	for (int d = 0; d < NDIMS; d++)
		if (s->bg[d] + s->load[d] + l->v[d] > s->budget[d])
			return false;
	return true;
}

static inline void pl_set_util(struct pl_server *s)
{
	double u = 0;

	for (int d = 0; d < NDIMS; d++) {
		/* A zero budget counts as full: such a server is tried last. */
		double x = s->budget[d] > 0 ? (s->bg[d] + s->load[d]) / s->budget[d] : 1.0;

		if (x > u)
			u = x;
	}
	s->util = u;
}

/* Placing (scheduler/placement_place.c), called by the phases in scheduler/placement.c. */

/* Write the message into c->err and return @rc. */
__attribute__((format(printf, 3, 4))) int ps_placement_fail(struct pl_ctx *c, int rc,
							    const char *fmt, ...);
/* The least-loaded heap: min on (util, server index), so ties are deterministic. */
void ps_placement_heap_build(struct pl_ctx *c);
/* Record [begin, end) of @v on @server and charge its estimate (0 or -ENOMEM). */
int ps_placement_add_part(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end,
			  uint32_t server);
/* Remember [begin, end) of @v for phase 3 (0 or -ENOMEM). */
int ps_placement_add_todo(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end);
/* PS_EOVER_BUDGET unless @need fits in what all servers have left together. */
int ps_placement_check_total(struct pl_ctx *c, const struct pl_var *v,
			     const struct ps_placement_load *need);
/*
 * Phase 3 for one range: split over the least-loaded servers with room that hold no part of
 * @v yet, one part each, in proportion to their room (docs/placement.md, "Rows").
 */
int ps_placement_place_range(struct pl_ctx *c, struct pl_var *v, uint64_t begin, uint64_t end);
/* Phase 2 for one new hash variable: bucket ranges on all servers. */
int ps_placement_spread_hash(struct pl_ctx *c, struct pl_var *v);

#endif
