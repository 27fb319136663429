/*
 * Inside ps_store: the part and scratch structs and the helpers shared by the store_*.c files.
 * Nothing outside server/store_*.c includes this.
 *
 * Row numbers. Every row of a part has a number r in [0, capacity): dense/sparse row id - begin,
 * or the slot a hash key was given. Chunks hold 2^rpc_shift rows each (the last dense chunk may
 * be shorter), so r -> (chunk, offset) is a shift and a mask, never a division.
 */
#ifndef PS_SERVER_STORE_INTERNAL_H
#define PS_SERVER_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/mem.h"
#include "server/store.h"

#define STORE_DEFAULT_CHUNK (16u << 20)
#define STORE_ROW_NONE	    UINT32_MAX /* no row: empty index entry, end of the free list */
#define STORE_MAX_ROWS	    (UINT32_MAX - 1ull)

/* Hash row flags (store_meta.flags). */
#define STORE_LIVE  1u /* holds a key */
#define STORE_DIRTY 2u /* on the dirty list: changed since the last export (if live) */

/* Salts that keep the internal hashes independent of the bucket hash (whose low 16 bits are
 * nearly constant inside one part) and of each other. */
#define STORE_SALT_INDEX 0x6a09e667f3bcc908ull
#define STORE_SALT_DEDUP 0xbb67ae8584caa73bull

/** Per hash row, beside the chunk (not registered: the transport never sends it). */
struct store_meta {
	uint64_t lo, hi;    /* the key; while the row is free, lo links the free list */
	uint64_t last_step; /* part step at the last pull or push (eviction) */
	uint32_t flags;	    /* STORE_LIVE | STORE_DIRTY */
	uint32_t pad;
};

struct store_chunk {
	struct ps_mem mem;	 /* rows; page-aligned, never moved */
	struct store_meta *meta; /* hash parts: one per row of the chunk; NULL otherwise */
};

/** Open-addressing entry: key -> row number; row STORE_ROW_NONE marks an empty slot. */
struct store_index_ent {
	uint64_t lo, hi;
	uint32_t row;
	uint32_t pad;
};

/*
 * Linear probing, power-of-two capacity, load kept <= 70 %, deletion by backward shift (no
 * tombstones, so probe lengths never degrade with churn). The home slot is the top bits of a
 * salted mix64 of the key. Used for the hash index and for the set of deleted keys.
 */
struct store_index {
	struct store_index_ent *ent;
	uint64_t cap;	/* 0 or a power of two */
	uint64_t count; /* entries in use */
	uint64_t limit; /* count allowed before growing: 70 % of cap */
	unsigned shift; /* 64 - log2(cap) */
};

struct ps_store_part {
	struct ps_var_spec spec; /* the declaration (a copy) */
	enum ps_var_kind kind;
	uint32_t width; /* floats per value and per slot */
	uint32_t nslots;
	uint32_t stride; /* bytes per row: (1 + nslots) * width * 4 rounded up to 64 */
	uint64_t var_id;
	uint64_t begin, end;
	uint64_t step; /* push calls applied */
	struct ps_optim_state ostate;
	bool admit_all; /* hash admission off */

	/* Row memory. */
	struct store_chunk *chunks;
	uint32_t nchunks;
	uint32_t chunks_cap; /* entries allocated in chunks[] */
	unsigned rpc_shift;  /* rows per chunk = 1 << rpc_shift */
	size_t chunk_bytes;
	int numa_node;
	unsigned mem_flags;
	ps_store_chunk_fn on_chunk;
	void *on_chunk_arg;

	/* Dense/sparse change tracker: one bit per row. */
	uint64_t *dirty_bits;

	/* Hash rows. */
	struct store_index index;
	uint64_t next_row;  /* rows [0, next_row) were handed out at least once */
	uint32_t free_head; /* rows freed by delete/evict, linked through meta.lo */
	uint64_t nfree;
	uint64_t live;	      /* keys present */
	uint32_t *dirty_list; /* rows with STORE_DIRTY, each once; sized to the capacity */
	uint64_t ndirty_list;
	struct store_index deleted; /* keys deleted since the last export (row unused) */
};

/* Per-thread working memory of pushes and hash pulls; see store_scratch.c. */
struct ps_store_scratch {
	size_t max_batch;
	uint32_t max_width;
	uint32_t *tab;	  /* dedup table: unique index + 1, 0 = empty; tab_cap entries */
	size_t tab_cap;	  /* power of two >= 2 * max_batch */
	uint32_t *next;	  /* per position: next position with the same key, or UINT32_MAX */
	uint32_t *ufirst; /* per unique key: first and last positions */
	uint32_t *ulast;
	uint64_t *urow; /* per unique key (push) or per key (pull): row number or STORE_* */
	float *gsum;	/* max_width floats: the summed gradient of a repeated key */
	size_t nunique; /* after ps_store_dedup() */
};

/* Row states in scratch->urow while a hash batch is resolved. */
#define STORE_U_NEW    (UINT64_MAX - 1) /* absent, admitted: create it */
#define STORE_U_REJECT UINT64_MAX	/* absent, not admitted: no row */

static inline float *store_row(const struct ps_store_part *p, uint64_t r)
{
	const struct store_chunk *c = &p->chunks[r >> p->rpc_shift];
	uint64_t off = r & ((1ull << p->rpc_shift) - 1);

	return (float *)((char *)c->mem.addr + off * p->stride);
}

/*
 * Rows a push loop prefetches ahead of the one it updates. Pushed ids are spread over a table
 * far larger than the caches: without this each update waits out a TLB and a cache miss in
 * turn; with it the misses of the next rows overlap the current update (the first few rows of
 * a batch are not prefetched: a handful of misses in a batch of hundreds).
 */
#define STORE_PREFETCH_AHEAD 8

/* Start loading row @r (the row and its slots, up to 1 KiB of it) for writing. */
static inline void store_prefetch_row(const struct ps_store_part *p, uint64_t r)
{
	const char *a = (const char *)store_row(p, r);
	uint32_t n = p->stride < 1024 ? p->stride : 1024;

	for (uint32_t off = 0; off < n; off += 64)
		__builtin_prefetch(a + off, 1);
}

static inline struct store_meta *store_meta(const struct ps_store_part *p, uint64_t r)
{
	return &p->chunks[r >> p->rpc_shift].meta[r & ((1ull << p->rpc_shift) - 1)];
}

static inline uint64_t store_capacity(const struct ps_store_part *p)
{
	return (uint64_t)p->nchunks << p->rpc_shift;
}

static inline bool store_is_hash(const struct ps_store_part *p)
{
	return p->kind == PS_VAR_HASH64 || p->kind == PS_VAR_HASH128;
}

/* store_part.c: add one chunk of @rows rows (<= 1 << rpc_shift), reporting it to on_chunk. */
int ps_store_chunk_add(struct ps_store_part *p, uint64_t rows);

/* store_scratch.c: group equal keys (kw = 1 or 2 words per key) of a batch; fills ufirst,
 * ulast, next and nunique. n <= max_batch. */
void ps_store_dedup(struct ps_store_scratch *s, const uint64_t *keys, size_t n, unsigned kw);

/* store_scratch.c: the gradient of unique key @u: the caller's row if the key appears once,
 * else the sum of its rows in scratch->gsum (summed in batch order). */
const float *ps_store_unique_grad(struct ps_store_scratch *s, size_t u, const float *grads,
				  uint32_t width);

/* store_hash.c: the index. */
int ps_store_index_reserve(struct store_index *ix, uint64_t more);
void ps_store_index_free(struct store_index *ix);
void ps_store_index_clear(struct store_index *ix);
uint32_t ps_store_index_find(const struct store_index *ix, uint64_t lo, uint64_t hi);
void ps_store_index_insert(struct store_index *ix, uint64_t lo, uint64_t hi, uint32_t row);
bool ps_store_index_remove(struct store_index *ix, uint64_t lo, uint64_t hi);

/* store_hash.c: hash rows. */
int ps_store_hash_reserve(struct ps_store_part *p, uint64_t more);
uint32_t ps_store_hash_create_row(struct ps_store_part *p, uint64_t lo, uint64_t hi, bool init);
void ps_store_hash_free_row(struct ps_store_part *p, uint32_t r);
void ps_store_hash_mark_dirty(struct ps_store_part *p, uint32_t r);
int ps_store_hash_foreach(struct ps_store_part *p, ps_store_row_fn fn, void *arg);
int ps_store_hash_export(struct ps_store_part *p, ps_store_row_fn row_fn, ps_store_key_fn del_fn,
			 void *arg);
int ps_store_hash_load_row(struct ps_store_part *p, uint64_t lo, uint64_t hi, const float *data);
bool ps_store_key_in_part(const struct ps_store_part *p, uint64_t lo, uint64_t hi);

/* store_init.c */
void ps_store_init_fresh_row(const struct ps_store_part *p, float *row, uint64_t id,
			     uint64_t key_hi);

#endif
