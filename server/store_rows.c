/*
 * Dense and sparse parts: pulls, pushes and row addresses by id; and the whole-part operations
 * (iteration, streaming export, restore) for every kind, which hand hash parts to store_hash.c.
 *
 * A dense or sparse part's change tracker is a bitmap, one bit per row: setting a bit is one OR
 * on the push path, and an export walks 64 rows per word, skipping clean words.
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "server/store_internal.h"

static int check_ids(const struct ps_store_part *p, const uint64_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < p->begin || ids[i] >= p->end)
			return PS_EOUT_OF_RANGE;
	}
	return 0;
}

static int check_rows_call(const struct ps_store_part *p, const void *ids, size_t n,
			   const void *buf)
{
	if (store_is_hash(p))
		return -EINVAL;
	if (n && (!ids || !buf))
		return -EINVAL;
	return 0;
}

static inline void mark(struct ps_store_part *p, uint64_t r)
{
	p->dirty_bits[r / 64] |= 1ull << (r % 64);
}

int ps_store_pull(struct ps_store_part *p, const uint64_t *ids, size_t n, float *out,
		  uint32_t width)
{
	int rc = check_rows_call(p, ids, n, out);

	if (rc)
		return rc;
	if (width != p->width)
		return -EINVAL;
	rc = check_ids(p, ids, n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		memcpy(out + i * width, store_row(p, ids[i] - p->begin), width * sizeof(float));
	return 0;
}

int ps_store_row_addrs(struct ps_store_part *p, const uint64_t *ids, size_t n, const float **addrs)
{
	int rc = check_rows_call(p, ids, n, addrs);

	if (rc)
		return rc;
	rc = check_ids(p, ids, n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		addrs[i] = store_row(p, ids[i] - p->begin);
	return 0;
}

const float *ps_store_row_addr(const struct ps_store_part *p, uint64_t id)
{
	if (store_is_hash(p) || id < p->begin || id >= p->end)
		return NULL;
	return store_row(p, id - p->begin);
}

int ps_store_push(struct ps_store_part *p, struct ps_store_scratch *s, const uint64_t *ids,
		  size_t n, const float *grads, uint32_t width)
{
	struct ps_optim_step step;
	int rc = check_rows_call(p, ids, n, grads);

	if (rc)
		return rc;
	if (width != p->width || (n && (!s || width > s->max_width)))
		return -EINVAL;
	if (!n)
		return 0;
	if (n > s->max_batch)
		return -E2BIG;
	rc = check_ids(p, ids, n);
	if (rc)
		return rc;
	ps_store_dedup(s, ids, n, 1);
	ps_optim_step_prepare(&p->spec.optim, &p->ostate, &step);
	p->step++;
	for (size_t u = 0; u < s->nunique; u++) {
		uint64_t r = ids[s->ufirst[u]] - p->begin;

		if (u + STORE_PREFETCH_AHEAD < s->nunique)
			store_prefetch_row(p, ids[s->ufirst[u + STORE_PREFETCH_AHEAD]] - p->begin);
		step.apply(&step, store_row(p, r), ps_store_unique_grad(s, u, grads, width), width);
		mark(p, r);
	}
	return 0;
}

int ps_store_dense_pull(struct ps_store_part *p, float *out, size_t nfloats)
{
	uint64_t n = p->end - p->begin;

	if (store_is_hash(p) || !out || nfloats != n * p->width)
		return -EINVAL;
	for (uint64_t r = 0; r < n; r++)
		memcpy(out + r * p->width, store_row(p, r), p->width * sizeof(float));
	return 0;
}

int ps_store_dense_push(struct ps_store_part *p, const float *grads, size_t nfloats)
{
	struct ps_optim_step step;
	uint64_t n = p->end - p->begin;

	if (store_is_hash(p) || !grads || nfloats != n * p->width)
		return -EINVAL;
	ps_optim_step_prepare(&p->spec.optim, &p->ostate, &step);
	p->step++;
	for (uint64_t r = 0; r < n; r++) {
		step.apply(&step, store_row(p, r), grads + r * p->width, p->width);
		mark(p, r);
	}
	return 0;
}

/* ---- every kind --------------------------------------------------------------------------- */

static void fill_row(const struct ps_store_part *p, uint64_t r, struct ps_store_row *row)
{
	*row = (struct ps_store_row){
		.id = p->begin + r,
		.data = store_row(p, r),
		.width = p->width,
		.nslots = p->nslots,
	};
}

int ps_store_foreach(struct ps_store_part *p, ps_store_row_fn fn, void *arg)
{
	struct ps_store_row row;
	int rc;

	if (!fn)
		return -EINVAL;
	if (store_is_hash(p))
		return ps_store_hash_foreach(p, fn, arg);
	for (uint64_t r = 0; r < p->end - p->begin; r++) {
		fill_row(p, r, &row);
		rc = fn(arg, &row);
		if (rc)
			return rc;
	}
	return 0;
}

int ps_store_export(struct ps_store_part *p, ps_store_row_fn row_fn, ps_store_key_fn del_fn,
		    void *arg)
{
	uint64_t nwords = (p->end - p->begin + 63) / 64;
	struct ps_store_row row;
	int rc;

	if (store_is_hash(p))
		return ps_store_hash_export(p, row_fn, del_fn, arg);
	for (uint64_t w = 0; w < nwords; w++) {
		while (p->dirty_bits[w]) {
			unsigned b = (unsigned)__builtin_ctzll(p->dirty_bits[w]);

			if (row_fn) {
				fill_row(p, w * 64 + b, &row);
				rc = row_fn(arg, &row);
				if (rc)
					return rc; /* this row and the rest stay marked */
			}
			p->dirty_bits[w] &= ~(1ull << b);
		}
	}
	return 0;
}

uint64_t ps_store_changed_count(const struct ps_store_part *p, uint64_t *ndeleted)
{
	uint64_t n = 0;

	if (ndeleted)
		*ndeleted = p->deleted.count;
	if (store_is_hash(p)) {
		for (uint64_t i = 0; i < p->ndirty_list; i++)
			n += (store_meta(p, p->dirty_list[i])->flags & STORE_LIVE) != 0;
		return n;
	}
	for (uint64_t w = 0; w < (p->end - p->begin + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(p->dirty_bits[w]);
	return n;
}

int ps_store_load_row(struct ps_store_part *p, uint64_t id, uint64_t key_hi, const float *data,
		      uint32_t width, uint32_t nslots)
{
	if (!data || width != p->width || nslots != p->nslots)
		return -EINVAL;
	if (store_is_hash(p))
		return ps_store_hash_load_row(p, id, key_hi, data);
	if (key_hi)
		return -EINVAL;
	if (id < p->begin || id >= p->end)
		return PS_EOUT_OF_RANGE;
	memcpy(store_row(p, id - p->begin), data, (size_t)(1 + nslots) * width * sizeof(float));
	return 0;
}
