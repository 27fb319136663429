/*
 * Hash parts, the storage side: the open-addressing index (key -> row number), the row arena
 * (chunks that never move, a free list of deleted rows), the set of deleted keys, and iteration
 * and export of hash rows.
 *
 * Why the index holds row numbers and not pointers: growing the index rehashes 24-byte entries
 * only, the rows stay where the transport registered them, and a row number is half a pointer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "server/store_internal.h"

/* ---- index ------------------------------------------------------------------------------------ */

static inline uint64_t ix_hash(uint64_t lo, uint64_t hi)
{
	return ps_mix64(lo ^ STORE_SALT_INDEX ^ ps_mix64(hi + STORE_SALT_INDEX));
}

static inline uint64_t ix_home(const struct store_index *ix, uint64_t lo, uint64_t hi)
{
	return ix_hash(lo, hi) >> ix->shift;
}

void ps_store_index_free(struct store_index *ix)
{
	free(ix->ent);
	*ix = (struct store_index){0};
}

void ps_store_index_clear(struct store_index *ix)
{
	if (ix->ent)
		memset(ix->ent, 0xff, ix->cap * sizeof(*ix->ent)); /* row = STORE_ROW_NONE */
	ix->count = 0;
}

uint32_t ps_store_index_find(const struct store_index *ix, uint64_t lo, uint64_t hi)
{
	uint64_t mask = ix->cap - 1, i;

	if (!ix->count)
		return STORE_ROW_NONE;
	for (i = ix_home(ix, lo, hi);; i = (i + 1) & mask) {
		const struct store_index_ent *e = &ix->ent[i];

		if (e->row == STORE_ROW_NONE)
			return STORE_ROW_NONE;
		if (e->lo == lo && e->hi == hi)
			return e->row;
	}
}

/* Insert a key known to be absent, into an index with room (after ps_store_index_reserve). */
void ps_store_index_insert(struct store_index *ix, uint64_t lo, uint64_t hi, uint32_t row)
{
	uint64_t mask = ix->cap - 1, i = ix_home(ix, lo, hi);

	while (ix->ent[i].row != STORE_ROW_NONE)
		i = (i + 1) & mask;
	ix->ent[i] = (struct store_index_ent){.lo = lo, .hi = hi, .row = row};
	ix->count++;
}

int ps_store_index_reserve(struct store_index *ix, uint64_t more)
{
	uint64_t need = ix->count + more, cap = ix->cap ? ix->cap : 16;
	struct store_index nix;

	if (need <= ix->limit)
		return 0;
	while (cap / 10 * 7 < need) {
		if (cap > (UINT64_MAX / 4) / sizeof(*ix->ent))
			return -ENOMEM;
		cap *= 2;
	}
	nix.ent = malloc(cap * sizeof(*nix.ent));
	if (!nix.ent)
		return -ENOMEM;
	nix.cap = cap;
	nix.count = 0;
	nix.limit = cap / 10 * 7;
	nix.shift = 64 - (unsigned)__builtin_ctzll(cap);
	ps_store_index_clear(&nix);
	for (uint64_t i = 0; i < ix->cap; i++) {
		const struct store_index_ent *e = &ix->ent[i];

		if (e->row != STORE_ROW_NONE)
			ps_store_index_insert(&nix, e->lo, e->hi, e->row);
	}
	free(ix->ent);
	*ix = nix;
	return 0;
}

/*
 * Backward-shift deletion: after emptying slot i, walk the cluster that follows and move back
 * every entry whose home is not cyclically in (i, j], so no lookup ever crosses a hole that was
 * not there when its key was inserted.
 */
bool ps_store_index_remove(struct store_index *ix, uint64_t lo, uint64_t hi)
{
	uint64_t mask = ix->cap - 1, i, j;

	if (!ix->count)
		return false;
	for (i = ix_home(ix, lo, hi);; i = (i + 1) & mask) {
		if (ix->ent[i].row == STORE_ROW_NONE)
			return false;
		if (ix->ent[i].lo == lo && ix->ent[i].hi == hi)
			break;
	}
	for (j = i;;) {
		uint64_t k;

		j = (j + 1) & mask;
		if (ix->ent[j].row == STORE_ROW_NONE)
			break;
		k = ix_home(ix, ix->ent[j].lo, ix->ent[j].hi);
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		ix->ent[i] = ix->ent[j];
		i = j;
	}
	ix->ent[i].row = STORE_ROW_NONE;
	ix->count--;
	return true;
}

/* ---- rows ------------------------------------------------------------------------------------- */

int ps_store_hash_reserve(struct ps_store_part *p, uint64_t more)
{
	uint64_t rpc = 1ull << p->rpc_shift;
	int rc;

	if (p->live + more > STORE_MAX_ROWS)
		return -ENOSPC;
	rc = ps_store_index_reserve(&p->index, more);
	if (rc)
		return rc;
	while (p->nfree + (store_capacity(p) - p->next_row) < more) {
		rc = ps_store_chunk_add(p, rpc);
		if (rc)
			return rc;
	}
	return 0;
}

uint32_t ps_store_hash_create_row(struct ps_store_part *p, uint64_t lo, uint64_t hi, bool init)
{
	struct store_meta *m;
	uint32_t r;

	if (p->free_head != STORE_ROW_NONE) {
		r = p->free_head;
		p->free_head = (uint32_t)store_meta(p, r)->lo;
		p->nfree--;
	} else {
		r = (uint32_t)p->next_row++;
	}
	m = store_meta(p, r);
	m->lo = lo;
	m->hi = hi;
	m->last_step = p->step;
	m->flags |= STORE_LIVE; /* STORE_DIRTY may stay from a deleted key: the row is listed */
	if (init)
		ps_store_init_fresh_row(p, store_row(p, r), lo, hi);
	ps_store_index_insert(&p->index, lo, hi, r);
	p->live++;
	/* A key deleted and created again since the last export is a change, not a deletion. */
	if (p->deleted.count)
		ps_store_index_remove(&p->deleted, lo, hi);
	return r;
}

/* Remove live row @r and record its key; the deleted set must have room for it. */
void ps_store_hash_free_row(struct ps_store_part *p, uint32_t r)
{
	struct store_meta *m = store_meta(p, r);

	ps_store_index_remove(&p->index, m->lo, m->hi);
	if (ps_store_index_find(&p->deleted, m->lo, m->hi) == STORE_ROW_NONE)
		ps_store_index_insert(&p->deleted, m->lo, m->hi, 0);
	m->flags &= ~STORE_LIVE;
	m->lo = p->free_head;
	m->hi = 0;
	p->free_head = r;
	p->nfree++;
	p->live--;
}

void ps_store_hash_mark_dirty(struct ps_store_part *p, uint32_t r)
{
	struct store_meta *m = store_meta(p, r);

	if (!(m->flags & STORE_DIRTY)) {
		m->flags |= STORE_DIRTY;
		p->dirty_list[p->ndirty_list++] = r;
	}
}

static void fill_row(const struct ps_store_part *p, uint32_t r, struct ps_store_row *row)
{
	const struct store_meta *m = store_meta(p, r);

	*row = (struct ps_store_row){
		.id = m->lo,
		.key_hi = m->hi,
		.data = store_row(p, r),
		.width = p->width,
		.nslots = p->nslots,
	};
}

int ps_store_hash_foreach(struct ps_store_part *p, ps_store_row_fn fn, void *arg)
{
	struct ps_store_row row;
	int rc;

	for (uint64_t r = 0; r < p->next_row; r++) {
		if (!(store_meta(p, r)->flags & STORE_LIVE))
			continue;
		fill_row(p, (uint32_t)r, &row);
		rc = fn(arg, &row);
		if (rc)
			return rc;
	}
	return 0;
}

int ps_store_hash_export(struct ps_store_part *p, ps_store_row_fn row_fn, ps_store_key_fn del_fn,
			 void *arg)
{
	struct ps_store_row row;
	uint64_t i;
	int rc;

	if (del_fn && p->deleted.count) {
		for (i = 0; i < p->deleted.cap; i++) {
			const struct store_index_ent *e = &p->deleted.ent[i];

			if (e->row == STORE_ROW_NONE)
				continue;
			rc = del_fn(arg, e->lo, e->hi);
			if (rc)
				return rc; /* all deletions stay recorded */
		}
		ps_store_index_clear(&p->deleted);
	}
	for (i = 0; i < p->ndirty_list; i++) {
		uint32_t r = p->dirty_list[i];
		struct store_meta *m = store_meta(p, r);

		if (row_fn && (m->flags & STORE_LIVE)) {
			fill_row(p, r, &row);
			rc = row_fn(arg, &row);
			if (rc) {
				/* Keep this row and the rest listed for the next export. */
				memmove(p->dirty_list, p->dirty_list + i,
					(p->ndirty_list - i) * sizeof(*p->dirty_list));
				p->ndirty_list -= i;
				return rc;
			}
		}
		m->flags &= ~STORE_DIRTY;
	}
	p->ndirty_list = 0;
	return 0;
}

int ps_store_hash_load_row(struct ps_store_part *p, uint64_t lo, uint64_t hi, const float *data)
{
	uint32_t r;
	int rc;

	if (p->kind == PS_VAR_HASH64 && hi)
		return -EINVAL;
	if (!ps_store_key_in_part(p, lo, hi))
		return PS_EOUT_OF_RANGE;
	r = ps_store_index_find(&p->index, lo, hi);
	if (r == STORE_ROW_NONE) {
		rc = ps_store_hash_reserve(p, 1);
		if (rc)
			return rc;
		r = ps_store_hash_create_row(p, lo, hi, false);
	}
	memcpy(store_row(p, r), data, (size_t)(1 + p->nslots) * p->width * sizeof(float));
	return 0;
}
