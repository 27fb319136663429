/*
 * Pulls send each distinct id once: the positions of first occurrences are routed and pulled,
 * and every repeated position gets its row copied from its first occurrence once the rows have
 * landed (the worker-side "unique, then gather" of embedding lookups). A Zipf batch of 1,024
 * ids over 2^20 rows holds about 540 distinct ones: half the rows on the wire, half the
 * servers' gathers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

/* Grow @p to @n entries of @size bytes (never shrunk). */
static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	void *q;

	if (*cap >= n)
		return 0;
	q = realloc(*p, n * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/* MurmurHash3's 64-bit finalizer: every key bit reaches every hash bit, so keys that differ
 * only in high bits (ids shifted left, byte-swapped, float bit patterns) still spread. */
static uint64_t fmix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 33);
}

static uint64_t key_hash(const uint64_t *k, uint32_t words)
{
	return fmix64(words == 2 ? k[0] ^ fmix64(k[1] + 0x9e3779b97f4a7c15ull) : k[0]);
}

int cli_dedupe(struct ps_client *c, const void *keys, size_t n, uint32_t key_bytes, size_t *nuniq)
{
	struct cli_dedupe *d = &c->dd;
	uint32_t words = key_bytes / 8, mask;
	const uint64_t *k = keys;
	size_t slots = 16, nu = 0;

	d->ndup = 0;
	*nuniq = n;
	if (n > (1u << 30)) /* slots would outgrow 32-bit indexes: sent as they are */
		return 0;
	while (slots < 2 * n)
		slots *= 2;
	if (grow((void **)&d->table, &d->table_cap, slots, sizeof(*d->table)) ||
	    grow((void **)&d->uniq, &d->uniq_cap, n, sizeof(*d->uniq)) ||
	    grow((void **)&d->dup, &d->dup_cap, n, sizeof(*d->dup)))
		return -ENOMEM;
	/* Slots hold a position + 1 (0: empty); at most half of them fill. */
	memset(d->table, 0, slots * sizeof(*d->table));
	mask = (uint32_t)slots - 1;
	for (size_t i = 0; i < n; i++) {
		const uint64_t *ki = k + i * words;
		uint32_t s = (uint32_t)key_hash(ki, words) & mask, first;

		while ((first = d->table[s]) != 0 &&
		       memcmp(k + (size_t)(first - 1) * words, ki, key_bytes))
			s = (s + 1) & mask;
		if (first) {
			d->dup[d->ndup].pos = (uint32_t)i;
			d->dup[d->ndup++].first = first - 1;
		} else {
			d->table[s] = (uint32_t)i + 1;
			d->uniq[nu++] = (uint32_t)i;
		}
	}
	*nuniq = nu;
	return 0;
}

void cli_dedupe_fill(struct ps_client *c, void *out, uint32_t row_bytes)
{
	const struct cli_dedupe *d = &c->dd;

	for (size_t j = 0; j < d->ndup; j++)
		memcpy((uint8_t *)out + (size_t)d->dup[j].pos * row_bytes,
		       (const uint8_t *)out + (size_t)d->dup[j].first * row_bytes, row_bytes);
	c->st.pull_dups += d->ndup;
}

void cli_dedupe_free(struct cli_dedupe *d)
{
	free(d->table);
	free(d->uniq);
	free(d->dup);
	memset(d, 0, sizeof(*d));
}
