/*
 * Synchronous steps (PS_DP_F_SYNC pushes): per variable shard and step, the pushes of all
 * num_workers workers are gathered and applied as one update.
 *
 * Sparse and hash: each worker's ids (keys) and gradients are appended to one accumulation
 * buffer; when the last worker's push arrives the whole buffer is applied with one store push.
 * The store sums the gradients of repeated ids before the optimizer runs (TF's sparse apply),
 * so this is exactly one worker pushing the summed gradients: one optimizer step (Adam's t
 * advances once), each row updated once. Dense: the gradients are summed into a buffer the
 * size of the shard, then applied with one dense push.
 *
 * Replies: each of the first num_workers - 1 pushes is answered (0) as soon as it is
 * accumulated; the last one after the apply, with the apply's status. A worker's step_end
 * waits for all workers, so once every worker has its reply the step is applied everywhere.
 *
 * Rules (each refusal changes nothing, not even the accumulation):
 *   - worker_id >= num_workers                      PS_EOUT_OF_RANGE
 *   - a worker pushing twice for the step           -EALREADY: one push per worker, variable,
 *                                                   thread and step (a worker's push must fit
 *                                                   one message)
 *   - a step already applied (<= the last applied)  -EALREADY
 *   - a step behind the one accumulating            -EALREADY (it can never complete)
 *   - a step ahead of the one accumulating          -EBUSY: retry once the current step is
 *                                                   applied. Not buffered: with step_end
 *                                                   between steps no correct worker gets here,
 *                                                   and a buffer for step + 1 would be
 *                                                   unbounded memory for a misbehaving one.
 *   - dense: not the whole shard in one push        -EINVAL
 *   - no memory to grow the accumulation            -ENOMEM
 * When no step is accumulating, any step after the last applied one starts one (steps need not
 * be consecutive). If the final apply fails (only a hash part that cannot grow can), the last
 * push is taken out again and refused with that code, so its retry can complete the step.
 * A new cluster version (restore) drops partial steps and forgets the last applied one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "server/dp_internal.h"

struct dp_sync {
	bool active;	    /* a step is accumulating */
	uint64_t step;	    /* ... this one */
	bool done;	    /* a step was applied since the last reset */
	uint64_t done_step; /* ... this one, the last */
	uint32_t have;	    /* workers that pushed for @step */
	uint64_t *seen;	    /* bitmap of them, num_workers bits */
	/* sparse / hash */
	uint8_t *keys; /* n keys (8 or 16 bytes each) */
	float *grads;  /* n x width */
	size_t n, cap; /* rows accumulated / room for */
	/* dense */
	float *sum; /* shard floats */
	size_t sum_len;
};

static size_t bitmap_words(uint32_t n)
{
	return (n + 63) / 64;
}

static void accum_clear(struct dp_var *v)
{
	struct dp_sync *s = v->sync;

	s->active = false;
	s->have = 0;
	s->n = 0;
	memset(s->seen, 0, bitmap_words(v->num_workers) * sizeof(*s->seen));
}

void dp_sync_reset(struct dp_var *v)
{
	if (!v->sync)
		return;
	accum_clear(v);
	v->sync->done = false;
}

void dp_sync_destroy(struct dp_var *v)
{
	struct dp_sync *s = v->sync;

	if (!s)
		return;
	free(s->seen);
	free(s->keys);
	free(s->grads);
	free(s->sum);
	free(s);
	v->sync = NULL;
}

static int sync_get(struct dp_var *v, struct dp_sync **out)
{
	struct dp_sync *s = v->sync;

	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->seen = calloc(bitmap_words(v->num_workers), sizeof(*s->seen));
		if (!s->seen) {
			free(s);
			return -ENOMEM;
		}
		v->sync = s;
	}
	*out = s;
	return 0;
}

/* Room for @n more rows of @kb-byte keys; the store scratch must take them all at once too. */
static int accum_reserve(struct dp_thread *t, struct dp_var *v, size_t n, size_t kb)
{
	struct dp_sync *s = v->sync;
	size_t need = s->n + n, cap;
	uint8_t *keys;
	float *grads;
	int rc;

	rc = dp_scratch_ensure(t, need, v->width);
	if (rc)
		return rc;
	if (need <= s->cap)
		return 0;
	cap = s->cap ? s->cap : 1024;
	while (cap < need)
		cap *= 2;
	keys = realloc(s->keys, cap * kb);
	if (!keys)
		return -ENOMEM;
	s->keys = keys;
	grads = realloc(s->grads, cap * v->width * sizeof(float));
	if (!grads)
		return -ENOMEM;
	s->grads = grads;
	s->cap = cap;
	return 0;
}

static int apply(struct dp_thread *t, struct dp_var *v, bool key128)
{
	struct dp_sync *s = v->sync;

	switch (v->kind) {
	case PS_VAR_DENSE:
		return s->sum_len ? ps_store_dense_push(v->part, s->sum, s->sum_len) : 0;
	case PS_VAR_SPARSE:
		return s->n ? ps_store_push(v->part, t->scratch, (const uint64_t *)(void *)s->keys,
					    s->n, s->grads, v->width)
			    : 0;
	default:
		if (!s->n)
			return 0;
		if (key128)
			return ps_store_hash_push128(v->part, t->scratch,
						     (const struct ps_key128 *)(void *)s->keys,
						     s->n, s->grads, v->width);
		return ps_store_hash_push64(v->part, t->scratch, (const uint64_t *)(void *)s->keys,
					    s->n, s->grads, v->width);
	}
}

/* Add a dense push to the sum (the first one is copied). */
static int accum_dense(struct dp_var *v, const struct ps_dp_req *r, const float *grads)
{
	struct dp_sync *s = v->sync;
	size_t len = (size_t)(v->end - v->begin) * v->width;

	if (r->begin != v->begin * v->width || r->count != len)
		return -EINVAL;
	if (!s->sum && len) {
		s->sum = malloc(len * sizeof(float));
		if (!s->sum)
			return -ENOMEM;
	}
	s->sum_len = len;
	if (!s->have) {
		memcpy(s->sum, grads, len * sizeof(float));
	} else {
		for (size_t i = 0; i < len; i++)
			s->sum[i] += grads[i];
	}
	return 0;
}

int dp_sync_push(struct dp_thread *t, struct dp_var *v, const struct ps_dp_req *r, const void *keys,
		 const float *grads)
{
	bool key128 = r->flags & PS_DP_F_KEY128;
	size_t kb = key128 ? 16 : 8, n = r->count;
	uint32_t w = r->worker_id;
	struct dp_sync *s;
	int rc;

	if (w >= v->num_workers)
		return PS_EOUT_OF_RANGE;
	rc = sync_get(v, &s);
	if (rc)
		return rc;
	if (s->done && r->step <= s->done_step)
		return -EALREADY;
	if (s->active) {
		if (r->step > s->step)
			return -EBUSY;
		if (r->step < s->step || s->seen[w / 64] & (1ull << (w % 64)))
			return -EALREADY;
	}

	if (v->kind == PS_VAR_DENSE) {
		rc = accum_dense(v, r, grads);
		if (rc)
			return rc;
	} else {
		rc = accum_reserve(t, v, n, kb);
		if (rc)
			return rc;
		/* An empty push (a worker with no ids on this shard) still counts as its share. */
		if (n) {
			memcpy(s->keys + s->n * kb, keys, n * kb);
			memcpy(s->grads + s->n * v->width, grads, n * v->width * sizeof(float));
			s->n += n;
		}
	}
	s->active = true;
	s->step = r->step;
	s->seen[w / 64] |= 1ull << (w % 64);
	if (++s->have < v->num_workers)
		return 0;

	rc = apply(t, v, key128);
	if (rc) {
		ps_log_warn(DP_LOG, "thread %u: var %u: applying step %u failed: %s", t->idx,
			    v->var_id, r->step, ps_strerror(rc));
		if (v->kind == PS_VAR_DENSE) {
			/* The sum cannot be taken apart again: the step is lost, say so. */
			accum_clear(v);
			return rc;
		}
		s->n -= n;
		s->have--;
		s->seen[w / 64] &= ~(1ull << (w % 64));
		return rc;
	}
	s->done = true;
	s->done_step = s->step;
	accum_clear(v);
	return 0;
}
