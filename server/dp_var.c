/*
 * A data-path thread's variables: the table var_id -> shard, DECLARE, the registration of row
 * memory, and the lookup of the registration holding a row (for gather lists).
 *
 * DECLARE builds the thread's shard of the part the payload names: for dense and sparse
 * variables the rows ps_placement_shard_range() gives this thread (possibly none: a part with
 * fewer rows than threads), for hash variables the part's whole bucket range, of which this
 * thread holds the keys whose ps_placement_key_shard() is its index. It is idempotent: the same
 * canonical DECLARE bytes again answer 0; different ones for a known var_id answer -EEXIST.
 *
 * Row memory. Every chunk the store adds (all of a dense/sparse part at create, a hash part's
 * as it grows) comes through on_chunk: on rdma it is registered with the dev there and then,
 * once, and kept in a table sorted by address, so a pull finds the lkey of a row with a binary
 * search over a handful of chunks. On tcp nothing is registered: the backend writev()s from
 * any memory (and its region table is small), so the gather entries carry no region.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "scheduler/placement.h"
#include "server/dp_internal.h"
#include "server/optim.h"

static uint32_t slot_of(uint32_t var_id, uint32_t cap)
{
	return (uint32_t)(ps_mix64(var_id) >> 32) & (cap - 1);
}

struct dp_var *dp_vartab_find(const struct dp_vartab *tab, uint32_t var_id)
{
	uint32_t i;

	if (!tab->cap)
		return NULL;
	i = slot_of(var_id, tab->cap);
	/* Load <= 1/2: a probe ends at an empty slot soon. */
	for (;;) {
		struct dp_var *v = tab->tab[i];

		if (!v || v->var_id == var_id)
			return v;
		i = (i + 1) & (tab->cap - 1);
	}
}

struct dp_var *dp_var_find(const struct dp_thread *t, uint32_t var_id)
{
	return dp_vartab_find(&t->vars, var_id);
}

static void vars_put(struct dp_var **tab, uint32_t cap, struct dp_var *v)
{
	uint32_t i = slot_of(v->var_id, cap);

	while (tab[i])
		i = (i + 1) & (cap - 1);
	tab[i] = v;
}

int dp_vartab_insert(struct dp_vartab *t, struct dp_var *v)
{
	if ((t->n + 1) * 2 > t->cap) {
		uint32_t cap = t->cap ? t->cap * 2 : 16;
		struct dp_var **tab = calloc(cap, sizeof(*tab));

		if (!tab)
			return -ENOMEM;
		for (uint32_t i = 0; i < t->cap; i++) {
			if (t->tab[i])
				vars_put(tab, cap, t->tab[i]);
		}
		free(t->tab);
		t->tab = tab;
		t->cap = cap;
	}
	vars_put(t->tab, t->cap, v);
	t->n++;
	return 0;
}

int dp_scratch_ensure(struct dp_thread *t, size_t batch, uint32_t width)
{
	struct ps_store_scratch_opts so;
	struct ps_store_scratch *s;
	const float **addrs;
	uint64_t *ids;
	float *tmp;
	int rc;

	if (t->scratch && batch <= t->scratch_batch && width <= t->scratch_width)
		return 0;
	/* Grow geometrically: synchronous accumulation asks again and again. */
	if (batch < t->scratch_batch)
		batch = t->scratch_batch;
	else if (t->scratch && batch < 2 * t->scratch_batch)
		batch = 2 * t->scratch_batch;
	if (width < t->scratch_width)
		width = t->scratch_width;
	so.max_batch = batch;
	so.max_width = width;
	rc = ps_store_scratch_create(&so, &s);
	if (rc)
		return rc;
	addrs = realloc(t->addrs, batch * sizeof(*addrs));
	if (addrs)
		t->addrs = addrs;
	ids = realloc(t->ids, batch * sizeof(*ids));
	if (ids)
		t->ids = ids;
	tmp = realloc(t->row_tmp, width * sizeof(*tmp));
	if (tmp)
		t->row_tmp = tmp;
	if (!addrs || !ids || !tmp) {
		/* The arrays that did grow are merely bigger than needed: keep the old sizes. */
		ps_store_scratch_destroy(s);
		return -ENOMEM;
	}
	ps_store_scratch_destroy(t->scratch);
	t->scratch = s;
	t->scratch_batch = batch;
	t->scratch_width = width;
	return 0;
}

/* ---- row memory ----------------------------------------------------------------------------- */

static int on_chunk(void *arg, void *addr, size_t len)
{
	struct dp_var *v = arg;
	struct dp_thread *t = v->t;
	struct ps_tp_mr *mr = NULL;
	uint32_t i;
	int rc;

	if (v->nchunks == v->chunks_cap) {
		uint32_t cap = v->chunks_cap ? 2 * v->chunks_cap : 8;
		struct dp_chunk *c = realloc(v->chunks, cap * sizeof(*c));

		if (!c)
			return -ENOMEM;
		v->chunks = c;
		v->chunks_cap = cap;
	}
	if (t->dp->reg_rows) {
		rc = ps_tp_mr_reg(t->dp->dev, addr, len, &mr);
		if (rc) {
			ps_log_err(DP_LOG, "thread %u: var %u: registering %zu bytes of rows: %s",
				   t->idx, v->var_id, len, ps_strerror(rc));
			return rc;
		}
	}
	for (i = v->nchunks; i > 0 && v->chunks[i - 1].addr > (uintptr_t)addr; i--)
		v->chunks[i] = v->chunks[i - 1];
	v->chunks[i] = (struct dp_chunk){.addr = (uintptr_t)addr, .len = len, .mr = mr};
	v->nchunks++;
	v->table_bytes += len;
	atomic_fetch_add_explicit(&t->n_table_bytes, len, memory_order_relaxed);
	return 0;
}

const struct ps_tp_mr *dp_var_mr(const struct dp_var *v, const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	uint32_t lo = 0, hi = v->nchunks;

	if (!v->t->dp->reg_rows)
		return NULL;
	/* The last chunk starting at or before @addr holds it (rows never straddle chunks). */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (v->chunks[mid].addr <= a)
			lo = mid;
		else
			hi = mid;
	}
	return v->nchunks ? v->chunks[lo].mr : NULL;
}

void dp_var_free(struct dp_var *v)
{
	if (!v)
		return;
	dp_sync_destroy(v);
	free(v->pend_del);
	/* Deregister before the store unmaps: a registration must never outlive its pages. */
	for (uint32_t i = 0; i < v->nchunks; i++)
		ps_tp_mr_dereg(v->chunks[i].mr);
	ps_store_part_destroy(v->part);
	atomic_fetch_sub_explicit(&v->t->n_table_bytes, v->table_bytes, memory_order_relaxed);
	free(v->chunks);
	free(v);
}

void dp_vartab_free(struct dp_vartab *tab)
{
	for (uint32_t i = 0; tab->tab && i < tab->cap; i++)
		dp_var_free(tab->tab[i]);
	free(tab->tab);
	tab->tab = NULL;
	tab->cap = tab->n = 0;
}

void dp_vars_destroy(struct dp_thread *t)
{
	dp_vartab_free(&t->vars);
	dp_vartab_free(&t->stage);
}

/* ---- DECLARE -------------------------------------------------------------------------------- */

static const char *kind_name(enum ps_var_kind k)
{
	switch (k) {
	case PS_VAR_DENSE:
		return "dense";
	case PS_VAR_SPARSE:
		return "sparse";
	case PS_VAR_HASH64:
		return "hash64";
	default:
		return "hash128";
	}
}

/* What the store would check, for a shard that holds no rows (and so builds no part). */
static int spec_validate(const struct ps_var_spec *s)
{
	if (!s->width || ps_store_init_validate(&s->init) || ps_optim_validate(&s->optim))
		return -EINVAL;
	if (!isfinite(s->admit_prob) || s->admit_prob < 0.f || s->admit_prob > 1.f)
		return -EINVAL;
	return 0;
}

int dp_var_create_part(struct dp_var *v, uint64_t hash_rows, bool no_init)
{
	struct dp_thread *t = v->t;
	struct ps_store_part_opts po = {0};

	if (v->part || v->begin >= v->end)
		return 0;
	po.spec = &v->spec;
	po.var_id = v->var_id;
	po.begin = v->begin;
	po.end = v->end;
	po.chunk_bytes = t->dp->opts.chunk_bytes;
	po.hash_initial_rows = hash_rows;
	po.no_init = no_init;
	po.numa_node = t->dp->opts.numa_node;
	po.on_chunk = on_chunk;
	po.on_chunk_arg = v;
	return ps_store_part_create(&po, &v->part);
}

int dp_var_build(struct dp_thread *t, uint32_t var_id, const struct ps_dp_declare *d, bool create,
		 uint64_t hash_rows, struct dp_var **out)
{
	struct ps_placement_part pp = {0};
	struct dp_var *v;
	int rc;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->t = t;
	v->var_id = var_id;
	ps_dp_declare_encode(d, v->decl);
	rc = ps_dp_spec_decode(d, &v->spec);
	if (rc)
		goto fail;
	v->kind = v->spec.kind;
	v->width = d->width;
	v->num_workers = d->num_workers;
	v->part_begin = d->part_begin;
	v->part_end = d->part_end;
	if (v->kind == PS_VAR_DENSE || v->kind == PS_VAR_SPARSE) {
		pp.begin = d->part_begin;
		pp.end = d->part_end;
		ps_placement_shard_range(&pp, d->shard, d->nshards, &v->begin, &v->end);
	} else {
		v->begin = d->part_begin;
		v->end = d->part_end;
	}
	rc = spec_validate(&v->spec);
	if (rc)
		goto fail;
	if (create) {
		rc = dp_var_create_part(v, hash_rows, false);
		if (rc)
			goto fail;
	}
	*out = v;
	return 0;
fail:
	/* A part that failed to create registered some chunks, maybe: undo those too. */
	dp_var_free(v);
	return rc;
}

/*
 * A restored variable whose job size is not known yet (num_workers 0) takes it from the first
 * DECLARE that matches it in everything else.
 */
static bool adopt_workers(struct dp_var *v, const struct ps_dp_declare *d)
{
	uint8_t canon[PS_DP_DECLARE_BYTES];
	struct ps_dp_declare z = *d;

	if (v->num_workers)
		return false;
	z.num_workers = 0;
	ps_dp_declare_encode(&z, canon);
	if (memcmp(v->decl, canon, sizeof(canon)))
		return false;
	v->num_workers = d->num_workers;
	ps_dp_declare_encode(d, v->decl);
	return true;
}

int dp_declare(struct dp_thread *t, const struct ps_dp_req *req, const uint8_t *payload,
	       uint32_t len)
{
	uint8_t canon[PS_DP_DECLARE_BYTES];
	struct ps_dp_declare d;
	struct dp_var *v;
	int rc;

	rc = ps_dp_declare_decode(payload, len, &d);
	if (rc)
		return rc;
	if (d.shard != t->idx || d.nshards != t->dp->nthreads) {
		ps_log_debug(DP_LOG, "thread %u: DECLARE of var %u for shard %u of %u refused",
			     t->idx, req->var_id, d.shard, d.nshards);
		return -EINVAL;
	}
	ps_dp_declare_encode(&d, canon);
	v = dp_var_find(t, req->var_id);
	if (v)
		return !memcmp(v->decl, canon, sizeof(canon)) || adopt_workers(v, &d) ? 0 : -EEXIST;
	rc = dp_scratch_ensure(t, t->scratch_batch, d.width);
	if (rc)
		goto fail;
	rc = dp_var_build(t, req->var_id, &d, true, 0, &v);
	if (rc)
		goto fail;
	rc = dp_vartab_insert(&t->vars, v);
	if (rc) {
		dp_var_free(v);
		goto fail;
	}
	ps_log_info(DP_LOG,
		    "thread %u: var %u \"%s\": %s, width %u, %s [%" PRIu64 ", %" PRIu64
		    ") of part [%" PRIu64 ", %" PRIu64 "), %zu bytes of rows in %u chunks",
		    t->idx, v->var_id, d.name, kind_name(v->kind), v->width,
		    v->kind >= PS_VAR_HASH64 ? "buckets" : "rows", v->begin, v->end, d.part_begin,
		    d.part_end, v->table_bytes, v->nchunks);
	return 0;
fail:
	ps_log_debug(DP_LOG, "thread %u: DECLARE of var %u refused: %s", t->idx, req->var_id,
		     ps_strerror(rc));
	return rc;
}
