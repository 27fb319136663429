/*
 * The per-thread scratch: duplicate detection and gradient sums without allocating per call.
 *
 * TF's sparse apply sums the gradients of an index that appears more than once in a batch and
 * updates the row once. ps_store_dedup() groups the positions of equal keys with a small
 * open-addressing table (sized for the batch, cleared in O(batch) per call, not O(table)),
 * chaining each key's positions in batch order. A key that appears once is then applied straight
 * from the caller's gradient row, with no copy; only repeated keys are summed, into gsum.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/store_internal.h"

#define NO_POS UINT32_MAX

int ps_store_scratch_create(const struct ps_store_scratch_opts *opts, struct ps_store_scratch **out)
{
	struct ps_store_scratch *s;
	size_t cap = 2;

	if (!opts || !out || !opts->max_batch || !opts->max_width)
		return -EINVAL;
	*out = NULL;
	/* Positions and unique indices are 32-bit; the table holds 2x for short probes. */
	if (opts->max_batch > (UINT32_MAX >> 2))
		return -EINVAL;
	while (cap < 2 * opts->max_batch)
		cap *= 2;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->max_batch = opts->max_batch;
	s->max_width = opts->max_width;
	s->tab_cap = cap;
	s->tab = calloc(cap, sizeof(*s->tab));
	s->next = calloc(opts->max_batch, sizeof(*s->next));
	s->ufirst = calloc(opts->max_batch, sizeof(*s->ufirst));
	s->ulast = calloc(opts->max_batch, sizeof(*s->ulast));
	s->urow = calloc(opts->max_batch, sizeof(*s->urow));
	/* 64-byte aligned so the kernels read the sum as they read a row. */
	s->gsum = aligned_alloc(64, ((size_t)opts->max_width * sizeof(float) + 63) / 64 * 64);
	if (!s->tab || !s->next || !s->ufirst || !s->ulast || !s->urow || !s->gsum) {
		ps_store_scratch_destroy(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void ps_store_scratch_destroy(struct ps_store_scratch *s)
{
	if (!s)
		return;
	free(s->tab);
	free(s->next);
	free(s->ufirst);
	free(s->ulast);
	free(s->urow);
	free(s->gsum);
	free(s);
}

static inline uint64_t key_hash(const uint64_t *k, unsigned kw)
{
	uint64_t h = k[0] ^ STORE_SALT_DEDUP;

	if (kw == 2)
		h ^= ps_mix64(k[1] + STORE_SALT_DEDUP);
	return ps_mix64(h);
}

static inline bool key_eq(const uint64_t *a, const uint64_t *b, unsigned kw)
{
	return a[0] == b[0] && (kw == 1 || a[1] == b[1]);
}

void ps_store_dedup(struct ps_store_scratch *s, const uint64_t *keys, size_t n, unsigned kw)
{
	size_t cap = 2, nu = 0;
	unsigned shift;

	while (cap < 2 * n)
		cap *= 2;
	shift = 64 - __builtin_ctzll(cap);
	memset(s->tab, 0, cap * sizeof(*s->tab));
	for (size_t i = 0; i < n; i++) {
		const uint64_t *k = keys + i * kw;
		size_t slot = (size_t)(key_hash(k, kw) >> shift);

		for (;;) {
			uint32_t t = s->tab[slot];

			if (!t) {
				s->tab[slot] = (uint32_t)nu + 1;
				s->ufirst[nu] = s->ulast[nu] = (uint32_t)i;
				nu++;
				break;
			}
			if (key_eq(keys + (size_t)s->ufirst[t - 1] * kw, k, kw)) {
				s->next[s->ulast[t - 1]] = (uint32_t)i;
				s->ulast[t - 1] = (uint32_t)i;
				break;
			}
			slot = (slot + 1) & (cap - 1);
		}
		s->next[i] = NO_POS;
	}
	s->nunique = nu;
}

const float *ps_store_unique_grad(struct ps_store_scratch *s, size_t u, const float *grads,
				  uint32_t width)
{
	uint32_t pos = s->ufirst[u];
	const float *g = grads + (size_t)pos * width;
	float *sum = s->gsum;

	if (s->ulast[u] == pos)
		return g;
	memcpy(sum, g, width * sizeof(float));
	for (pos = s->next[pos]; pos != NO_POS; pos = s->next[pos]) {
		g = grads + (size_t)pos * width;
		for (uint32_t c = 0; c < width; c++)
			sum[c] += g[c];
	}
	return sum;
}
