/*
 * Variable parts: creation (validation, row memory, initial rows), destruction, chunks, state.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "server/store_internal.h"

static uint64_t floor_pow2(uint64_t v)
{
	uint64_t p = 1;

	while (p <= v / 2)
		p *= 2;
	return p;
}

static unsigned log2_u64(uint64_t v)
{
	unsigned s = 0;

	while ((1ull << s) < v)
		s++;
	return s;
}

static int check_spec(const struct ps_store_part_opts *o)
{
	const struct ps_var_spec *sp = o->spec;
	uint64_t row_bytes;

	if (!sp)
		return -EINVAL;
	if (sp->kind != PS_VAR_DENSE && sp->kind != PS_VAR_SPARSE && sp->kind != PS_VAR_HASH64 &&
	    sp->kind != PS_VAR_HASH128)
		return -EINVAL;
	if (sp->dtype != PS_DTYPE_FLOAT32 || sp->width == 0)
		return -EINVAL;
	/* The stride is kept in 32 bits; a wider row than that is a declaration error. */
	row_bytes = (1ull + ps_optim_slot_count(sp->optim.kind)) * sp->width * sizeof(float);
	if (row_bytes > (1ull << 31))
		return -EINVAL;
	if (ps_store_init_validate(&sp->init) || ps_optim_validate(&sp->optim))
		return -EINVAL;
	if (o->begin >= o->end)
		return -EINVAL;
	if (sp->kind == PS_VAR_DENSE || sp->kind == PS_VAR_SPARSE) {
		if (sp->rows == 0 || o->end > sp->rows)
			return -EINVAL;
	} else {
		if (o->end > PS_HASH_BUCKETS)
			return -EINVAL;
		if (!(sp->admit_prob >= 0.0f && sp->admit_prob <= 1.0f))
			return -EINVAL;
	}
	return 0;
}

int ps_store_chunk_add(struct ps_store_part *p, uint64_t rows)
{
	struct store_chunk c = {0};
	uint64_t rpc = 1ull << p->rpc_shift;
	int rc;

	if ((uint64_t)p->nchunks + 1 > UINT32_MAX / 2)
		return -ENOSPC;
	if (store_is_hash(p) && store_capacity(p) + rpc > STORE_MAX_ROWS + 1)
		return -ENOSPC;
	if (p->nchunks == p->chunks_cap) {
		uint32_t ncap = p->chunks_cap ? p->chunks_cap * 2 : 4;
		struct store_chunk *nc = realloc(p->chunks, ncap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		p->chunks = nc;
		p->chunks_cap = ncap;
	}
	rc = ps_mem_alloc(rows * p->stride, p->numa_node, p->mem_flags, &c.mem);
	if (rc)
		return rc;
	if (store_is_hash(p)) {
		uint64_t ncap = store_capacity(p) + rpc;
		uint32_t *dl = realloc(p->dirty_list, ncap * sizeof(*dl));

		if (dl)
			p->dirty_list = dl;
		c.meta = calloc(rpc, sizeof(*c.meta));
		if (!dl || !c.meta) {
			rc = -ENOMEM;
			goto err;
		}
	}
	if (p->on_chunk) {
		rc = p->on_chunk(p->on_chunk_arg, c.mem.addr, c.mem.len);
		if (rc)
			goto err;
	}
	p->chunks[p->nchunks++] = c;
	return 0;
err:
	free(c.meta);
	ps_mem_free(&c.mem);
	return rc;
}

static int make_rows(struct ps_store_part *p, bool init)
{
	uint64_t n = p->end - p->begin, rpc = 1ull << p->rpc_shift;
	int rc;

	for (uint64_t done = 0; done < n; done += rpc) {
		rc = ps_store_chunk_add(p, n - done < rpc ? n - done : rpc);
		if (rc)
			return rc;
	}
	p->dirty_bits = calloc((n + 63) / 64, sizeof(uint64_t));
	if (!p->dirty_bits)
		return -ENOMEM;
	for (uint64_t r = 0; init && r < n; r++)
		ps_store_init_fresh_row(p, store_row(p, r), p->begin + r, 0);
	return 0;
}

int ps_store_part_create(const struct ps_store_part_opts *opts, struct ps_store_part **out)
{
	struct ps_store_part *p;
	uint64_t per_chunk;
	int rc;

	if (!opts || !out)
		return -EINVAL;
	*out = NULL;
	rc = check_spec(opts);
	if (rc)
		return rc;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->spec = *opts->spec;
	p->kind = p->spec.kind;
	p->width = p->spec.width;
	p->nslots = ps_optim_slot_count(p->spec.optim.kind);
	p->stride = (uint32_t)(((1ull + p->nslots) * p->width * sizeof(float) + 63) / 64 * 64);
	p->var_id = opts->var_id;
	p->begin = opts->begin;
	p->end = opts->end;
	p->admit_all = p->spec.admit_prob == 0.0f || p->spec.admit_prob == 1.0f;
	p->chunk_bytes = opts->chunk_bytes ? opts->chunk_bytes : STORE_DEFAULT_CHUNK;
	p->numa_node = opts->numa_node;
	p->mem_flags = opts->mem_flags;
	p->on_chunk = opts->on_chunk;
	p->on_chunk_arg = opts->on_chunk_arg;
	p->free_head = STORE_ROW_NONE;
	ps_optim_state_init(&p->spec.optim, &p->ostate);

	/* Power-of-two rows per chunk, so a row number splits with a shift; never 0 rows. */
	per_chunk = p->chunk_bytes / p->stride;
	p->rpc_shift = log2_u64(floor_pow2(per_chunk ? per_chunk : 1));
	if (store_is_hash(p)) {
		uint64_t hint = opts->hash_initial_rows;

		if (hint > STORE_MAX_ROWS) {
			rc = -ENOSPC;
			goto err;
		}
		rc = ps_store_hash_reserve(p, hint);
	} else {
		rc = make_rows(p, !opts->no_init);
	}
	if (rc)
		goto err;
	*out = p;
	return 0;
err:
	ps_store_part_destroy(p);
	return rc;
}

void ps_store_part_destroy(struct ps_store_part *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < p->nchunks; i++) {
		free(p->chunks[i].meta);
		ps_mem_free(&p->chunks[i].mem);
	}
	free(p->chunks);
	free(p->dirty_bits);
	free(p->dirty_list);
	ps_store_index_free(&p->index);
	ps_store_index_free(&p->deleted);
	free(p);
}

void ps_store_part_info(const struct ps_store_part *p, struct ps_store_part_info *info)
{
	size_t tb = 0, ib;

	for (uint32_t i = 0; i < p->nchunks; i++)
		tb += p->chunks[i].mem.len;
	ib = (p->index.cap + p->deleted.cap) * sizeof(struct store_index_ent);
	if (store_is_hash(p))
		ib += store_capacity(p) * (sizeof(struct store_meta) + sizeof(uint32_t));
	else
		ib += (p->end - p->begin + 63) / 64 * sizeof(uint64_t);
	*info = (struct ps_store_part_info){
		.kind = p->kind,
		.width = p->width,
		.nslots = p->nslots,
		.stride = p->stride,
		.begin = p->begin,
		.end = p->end,
		.rows = store_is_hash(p) ? p->live : p->end - p->begin,
		.capacity = store_is_hash(p) ? store_capacity(p) : p->end - p->begin,
		.step = p->step,
		.table_bytes = tb,
		.index_bytes = ib,
		.nchunks = p->nchunks,
	};
}

size_t ps_store_part_chunks(const struct ps_store_part *p, struct ps_store_chunk *out, size_t max)
{
	for (uint32_t i = 0; i < p->nchunks && i < max; i++) {
		out[i].addr = p->chunks[i].mem.addr;
		out[i].len = p->chunks[i].mem.len;
	}
	return p->nchunks;
}

int ps_store_part_set_optimizer(struct ps_store_part *p, const struct ps_optimizer *o)
{
	if (!o || o->kind != p->spec.optim.kind || ps_optim_validate(o))
		return -EINVAL;
	/* Slot initial values matter only for rows created from now on, which is what TF does
	 * when hyper-parameters change: existing accumulators are kept. */
	p->spec.optim = *o;
	return 0;
}

void ps_store_part_get_state(const struct ps_store_part *p, struct ps_store_state *st)
{
	st->step = p->step;
	st->optim = p->ostate;
}

void ps_store_part_set_state(struct ps_store_part *p, const struct ps_store_state *st)
{
	p->step = st->step;
	p->ostate = st->optim;
}

void ps_store_init_value(const struct ps_store_part *p, uint64_t id, uint64_t key_hi, float *out)
{
	ps_store_init_row(&p->spec.init, p->var_id, id, key_hi, out, p->width);
}

bool ps_store_key_in_part(const struct ps_store_part *p, uint64_t lo, uint64_t hi)
{
	uint32_t b = p->kind == PS_VAR_HASH64 ? ps_hash_bucket64(lo) : ps_hash_bucket128(lo, hi);

	return b >= p->begin && b < p->end;
}
