/*
 * Hash parts, the request side: pull, row addresses, push, delete and evict, for 64-bit and
 * 128-bit keys (one implementation; a 128-bit key is two words, a 64-bit key one).
 *
 * Every call runs in two phases so that a refused call changes nothing: first validate every
 * key, resolve each to a row or "new" or "not admitted", and reserve room for the new rows
 * (which may add a chunk or grow the index: the only allocations on this path); then create
 * rows and read or update them, which cannot fail.
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "server/store_internal.h"

_Static_assert(sizeof(struct ps_key128) == 2 * sizeof(uint64_t), "ps_key128 is two words");

static inline uint64_t key_hi(const uint64_t *k, unsigned kw)
{
	return kw == 2 ? k[1] : 0;
}

static int check_keys(const struct ps_store_part *p, const uint64_t *keys, size_t n, unsigned kw)
{
	for (size_t i = 0; i < n; i++) {
		const uint64_t *k = keys + i * kw;

		if (!ps_store_key_in_part(p, k[0], key_hi(k, kw)))
			return PS_EOUT_OF_RANGE;
	}
	return 0;
}

static int check_call(const struct ps_store_part *p, const struct ps_store_scratch *s,
		      const void *keys, size_t n, const void *buf, unsigned kw)
{
	if (p->kind != (kw == 1 ? PS_VAR_HASH64 : PS_VAR_HASH128))
		return -EINVAL;
	if (n && (!keys || !buf || !s))
		return -EINVAL;
	if (s && n > s->max_batch)
		return -E2BIG;
	return 0;
}

static uint64_t lookup(struct ps_store_part *p, const uint64_t *k, unsigned kw, uint64_t *nnew)
{
	uint32_t r = ps_store_index_find(&p->index, k[0], key_hi(k, kw));

	if (r != STORE_ROW_NONE)
		return r;
	if (!p->admit_all &&
	    !ps_store_hash_admit(p->spec.admit_prob, p->spec.admit_seed, k[0], key_hi(k, kw)))
		return STORE_U_REJECT;
	(*nnew)++;
	return STORE_U_NEW;
}

/* Resolve every key of a pull to a row (creating admitted new keys) in s->urow[i]. */
static int resolve_pull(struct ps_store_part *p, struct ps_store_scratch *s, const uint64_t *keys,
			size_t n, unsigned kw)
{
	uint64_t nnew = 0;
	int rc;

	rc = check_keys(p, keys, n, kw);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		s->urow[i] = lookup(p, keys + i * kw, kw, &nnew);
	/* A key repeated in the batch is counted once per copy: a little more room, not less. */
	rc = nnew ? ps_store_hash_reserve(p, nnew) : 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		const uint64_t *k = keys + i * kw;
		uint64_t r = s->urow[i];

		if (r == STORE_U_REJECT)
			continue;
		if (r == STORE_U_NEW) {
			/* An earlier copy of the key in this batch may have created it. */
			r = ps_store_index_find(&p->index, k[0], key_hi(k, kw));
			if (r == STORE_ROW_NONE) {
				r = ps_store_hash_create_row(p, k[0], key_hi(k, kw), true);
				ps_store_hash_mark_dirty(p, (uint32_t)r);
			}
			s->urow[i] = r;
		}
		store_meta(p, r)->last_step = p->step;
	}
	return 0;
}

static int hash_pull(struct ps_store_part *p, struct ps_store_scratch *s, const uint64_t *keys,
		     size_t n, float *out, uint32_t width, unsigned kw)
{
	int rc = check_call(p, s, keys, n, out, kw);

	if (rc)
		return rc;
	if (width != p->width)
		return -EINVAL;
	rc = resolve_pull(p, s, keys, n, kw);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		float *o = out + i * width;
		const uint64_t *k = keys + i * kw;

		if (s->urow[i] == STORE_U_REJECT)
			ps_store_init_value(p, k[0], key_hi(k, kw), o);
		else
			memcpy(o, store_row(p, s->urow[i]), width * sizeof(float));
	}
	return 0;
}

static int hash_addrs(struct ps_store_part *p, struct ps_store_scratch *s, const uint64_t *keys,
		      size_t n, const float **addrs, unsigned kw)
{
	int rc = check_call(p, s, keys, n, addrs, kw);

	if (rc)
		return rc;
	rc = resolve_pull(p, s, keys, n, kw);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		addrs[i] = s->urow[i] == STORE_U_REJECT ? NULL : store_row(p, s->urow[i]);
	return 0;
}

/* Prefetch an existing row of a push (new and rejected keys have none yet). */
static inline void hash_prefetch(const struct ps_store_part *p, uint64_t r)
{
	if (r != STORE_U_NEW && r != STORE_U_REJECT)
		store_prefetch_row(p, r);
}

static int hash_push(struct ps_store_part *p, struct ps_store_scratch *s, const uint64_t *keys,
		     size_t n, const float *grads, uint32_t width, unsigned kw)
{
	struct ps_optim_step step;
	uint64_t nnew = 0;
	int rc = check_call(p, s, keys, n, grads, kw);

	if (rc)
		return rc;
	if (width != p->width || (s && width > s->max_width))
		return -EINVAL;
	if (!n)
		return 0;
	rc = check_keys(p, keys, n, kw);
	if (rc)
		return rc;
	ps_store_dedup(s, keys, n, kw);
	for (size_t u = 0; u < s->nunique; u++)
		s->urow[u] = lookup(p, keys + (size_t)s->ufirst[u] * kw, kw, &nnew);
	rc = nnew ? ps_store_hash_reserve(p, nnew) : 0;
	if (rc)
		return rc;

	/* Nothing can fail from here on. */
	ps_optim_step_prepare(&p->spec.optim, &p->ostate, &step);
	p->step++;
	for (size_t u = 0; u < s->nunique; u++) {
		const uint64_t *k = keys + (size_t)s->ufirst[u] * kw;
		uint64_t r = s->urow[u];

		if (u + STORE_PREFETCH_AHEAD < s->nunique)
			hash_prefetch(p, s->urow[u + STORE_PREFETCH_AHEAD]);
		if (r == STORE_U_REJECT)
			continue; /* not admitted: the gradient is dropped */
		if (r == STORE_U_NEW)
			r = ps_store_hash_create_row(p, k[0], key_hi(k, kw), true);
		step.apply(&step, store_row(p, r), ps_store_unique_grad(s, u, grads, width), width);
		store_meta(p, r)->last_step = p->step;
		ps_store_hash_mark_dirty(p, (uint32_t)r);
	}
	return 0;
}

static int hash_delete(struct ps_store_part *p, const uint64_t *keys, size_t n, size_t *ndeleted,
		       unsigned kw)
{
	size_t nd = 0;
	int rc;

	if (ndeleted)
		*ndeleted = 0;
	if (p->kind != (kw == 1 ? PS_VAR_HASH64 : PS_VAR_HASH128) || (n && !keys))
		return -EINVAL;
	rc = check_keys(p, keys, n, kw);
	if (rc)
		return rc;
	rc = ps_store_index_reserve(&p->deleted, n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		const uint64_t *k = keys + i * kw;
		uint32_t r = ps_store_index_find(&p->index, k[0], key_hi(k, kw));

		if (r != STORE_ROW_NONE) {
			ps_store_hash_free_row(p, r);
			nd++;
		}
	}
	if (ndeleted)
		*ndeleted = nd;
	return 0;
}

static bool idle(const struct ps_store_part *p, const struct store_meta *m, uint64_t max_idle)
{
	return (m->flags & STORE_LIVE) && p->step - m->last_step > max_idle;
}

int ps_store_hash_evict(struct ps_store_part *p, uint64_t max_idle, size_t *nevicted)
{
	uint64_t n = 0;
	int rc;

	if (nevicted)
		*nevicted = 0;
	if (!store_is_hash(p))
		return -EINVAL;
	for (uint64_t r = 0; r < p->next_row; r++)
		n += idle(p, store_meta(p, r), max_idle);
	rc = ps_store_index_reserve(&p->deleted, n);
	if (rc)
		return rc;
	for (uint64_t r = 0; r < p->next_row; r++) {
		if (idle(p, store_meta(p, r), max_idle))
			ps_store_hash_free_row(p, (uint32_t)r);
	}
	if (nevicted)
		*nevicted = n;
	return 0;
}

/* ---- the typed entry points ------------------------------------------------------------------- */

int ps_store_hash_pull64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			 const uint64_t *keys, size_t n, float *out, uint32_t width)
{
	return hash_pull(part, scratch, keys, n, out, width, 1);
}

int ps_store_hash_pull128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			  const struct ps_key128 *keys, size_t n, float *out, uint32_t width)
{
	return hash_pull(part, scratch, (const uint64_t *)keys, n, out, width, 2);
}

int ps_store_hash_row_addrs64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			      const uint64_t *keys, size_t n, const float **addrs)
{
	return hash_addrs(part, scratch, keys, n, addrs, 1);
}

int ps_store_hash_row_addrs128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			       const struct ps_key128 *keys, size_t n, const float **addrs)
{
	return hash_addrs(part, scratch, (const uint64_t *)keys, n, addrs, 2);
}

int ps_store_hash_push64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			 const uint64_t *keys, size_t n, const float *grads, uint32_t width)
{
	return hash_push(part, scratch, keys, n, grads, width, 1);
}

int ps_store_hash_push128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			  const struct ps_key128 *keys, size_t n, const float *grads,
			  uint32_t width)
{
	return hash_push(part, scratch, (const uint64_t *)keys, n, grads, width, 2);
}

int ps_store_hash_delete64(struct ps_store_part *part, const uint64_t *keys, size_t n,
			   size_t *ndeleted)
{
	return hash_delete(part, keys, n, ndeleted, 1);
}

int ps_store_hash_delete128(struct ps_store_part *part, const struct ps_key128 *keys, size_t n,
			    size_t *ndeleted)
{
	return hash_delete(part, (const uint64_t *)keys, n, ndeleted, 2);
}
