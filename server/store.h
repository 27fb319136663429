/*
 * Server-side storage of variable parts (module ps_store): rows, their optimizer slots, the
 * hash index, initializers, and the change tracking behind streaming export. A pure library:
 * no networking, no threads, no locks.
 *
 * A part holds
 *   - dense / sparse variables: the rows [begin, end) of the variable;
 *   - hash variables: every key whose bucket (psplus/types.h, ps_hash_bucket64/128) lies in
 *     [begin, end), end <= PS_HASH_BUCKETS. Rows appear on first pull or push (subject to
 *     admission) and disappear by delete or eviction.
 *
 * Row memory. A row is [value | slot0 | slot1 ...], each `width` floats, stride padded to 64
 * bytes, so an optimizer update touches one contiguous region and rows never share a cache
 * line. Rows live in large page-aligned chunks from ps_mem_alloc() that never move and are never
 * reallocated: a hash part grows by adding chunks (and by rehashing its index, which holds only
 * row numbers). The transport registers each chunk once: ps_store_part_chunks() lists them, and
 * the on_chunk callback reports each new one as it is added. Row addresses (for zero-copy
 * gathers) stay valid until the row is deleted or evicted, or the part destroyed.
 *
 * Threads. A part is owned by one thread (the data-path thread owning that shard); no call is
 * thread-safe on the same part. A scratch belongs to one thread and may serve all its parts.
 *
 * Allocation. Pulls and pushes allocate nothing, except when a hash part must grow: a new chunk
 * (ps_mem_alloc + on_chunk) and, at most doubling, a bigger index. Growth is decided before any
 * row changes, so a push refused for lack of memory changes nothing.
 *
 * Errors. 0 or a negative code. A batch is validated whole before anything changes: an id
 * outside [begin, end), or a hash key whose bucket is outside the part, is PS_EOUT_OF_RANGE and
 * no row, slot, step or tracker changes. A width that is not the part's, a NULL array or an
 * operation that does not fit the kind is -EINVAL; a batch larger than the scratch is -E2BIG.
 */
#ifndef PS_SERVER_STORE_H
#define PS_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/types.h>

#include "server/optim.h"

struct ps_store_part;
struct ps_store_scratch;

/** One chunk of row memory, page-aligned, to register with the transport. */
struct ps_store_chunk {
	void *addr;
	size_t len;
};

/**
 * Called for every chunk of row memory when it is added (at create, and when a hash part
 * grows). Registering it with the transport is the expected use; a non-zero return refuses the
 * chunk: create fails, or the pull/push that needed it fails with that code and changes nothing.
 */
typedef int (*ps_store_chunk_fn)(void *arg, void *addr, size_t len);

struct ps_store_part_opts {
	const struct ps_var_spec *spec; /* borrowed for the call; the part keeps a copy */
	uint64_t var_id;		/* the variable's id: part of the initializer stream */
	uint64_t begin, end;		/* rows (dense/sparse) or buckets (hash), begin < end */
	size_t chunk_bytes;		/* row memory per chunk; 0: 16 MiB */
	uint64_t hash_initial_rows;	/* hash: rows to make room for at create (0: none) */
	int numa_node;			/* for ps_mem_alloc; -1: no binding */
	unsigned mem_flags;		/* PS_MEM_* for ps_mem_alloc */
	ps_store_chunk_fn on_chunk;	/* may be NULL */
	void *on_chunk_arg;
	/* Dense/sparse: leave the rows zero instead of initialising them, because the caller
	 * writes every one right away (a checkpoint restore, ps_store_load_row). */
	bool no_init;
};

/** What a part is, for logs, stats and the transport. */
struct ps_store_part_info {
	enum ps_var_kind kind;
	uint32_t width;	 /* floats per value */
	uint32_t nslots; /* optimizer slots per row */
	uint32_t stride; /* bytes from one row to the next (multiple of 64) */
	uint64_t begin, end;
	uint64_t rows;	    /* live rows: end - begin, or the hash rows present */
	uint64_t capacity;  /* rows the chunks can hold */
	uint64_t step;	    /* push calls applied so far */
	size_t table_bytes; /* row memory mapped (all chunks) */
	size_t index_bytes; /* hash index and trackers (malloc'd, not registered) */
	uint32_t nchunks;
};

/** A row handed to iteration and export callbacks; valid during the callback only. */
struct ps_store_row {
	uint64_t id;	   /* dense/sparse: row id; hash: key (hash128: its low word) */
	uint64_t key_hi;   /* hash128: the key's high word; 0 otherwise */
	const float *data; /* value (width floats) then nslots slots of width floats */
	uint32_t width;
	uint32_t nslots;
};

/** Iteration callback: return 0 to go on, anything else to stop (it is passed back). */
typedef int (*ps_store_row_fn)(void *arg, const struct ps_store_row *row);

/** Export callback for a deleted hash key (key_hi is 0 for hash64). Same return rule. */
typedef int (*ps_store_key_fn)(void *arg, uint64_t key, uint64_t key_hi);

/** What checkpoints save beside the rows, and restore. */
struct ps_store_state {
	uint64_t step;		     /* push calls applied to the part */
	struct ps_optim_state optim; /* Adam's powers */
};

/* ---- parts ---------------------------------------------------------------------------------- */

/**
 * ps_store_part_create() - build a part: validate the spec (kind, dtype, width, initializer,
 * optimizer, admission, range), map the row memory (dense/sparse: all rows, initialised; hash:
 * room for hash_initial_rows) and report each chunk to on_chunk.
 *
 * Returns 0, -EINVAL (bad spec or range), -ENOMEM, -ENOSPC (more than 2^32 - 1 rows in one
 * part) or on_chunk's code. Nothing is left behind on failure.
 */
int ps_store_part_create(const struct ps_store_part_opts *opts, struct ps_store_part **out);

/** ps_store_part_destroy() - unmap everything. Accepts NULL. The caller deregisters first. */
void ps_store_part_destroy(struct ps_store_part *part);

/** ps_store_part_info() - fill @info. */
void ps_store_part_info(const struct ps_store_part *part, struct ps_store_part_info *info);

/**
 * ps_store_part_chunks() - the row-memory chunks, in address-independent creation order.
 * Fills up to @max entries of @out (may be NULL with @max 0) and returns the total count.
 */
size_t ps_store_part_chunks(const struct ps_store_part *part, struct ps_store_chunk *out,
			    size_t max);

/**
 * ps_store_part_set_optimizer() - new hyper-parameters (a learning-rate schedule) of the same
 * optimizer kind; slots and state are kept. -EINVAL for another kind or bad values.
 */
int ps_store_part_set_optimizer(struct ps_store_part *part, const struct ps_optimizer *o);

/** ps_store_part_get_state() / _set_state() - step counter and optimizer state (checkpoints). */
void ps_store_part_get_state(const struct ps_store_part *part, struct ps_store_state *st);
void ps_store_part_set_state(struct ps_store_part *part, const struct ps_store_state *st);

/* ---- scratch -------------------------------------------------------------------------------- */

struct ps_store_scratch_opts {
	size_t max_batch;   /* ids or keys per call, >= 1 (size it to the largest request) */
	uint32_t max_width; /* widest row any part served with it has, >= 1 */
};

/**
 * ps_store_scratch_create() - the per-thread working memory of pushes and hash pulls
 * (duplicate detection, gradient sums, row lookups), sized once so calls allocate nothing.
 * About 24 bytes per max_batch plus 4 per max_width. Returns 0, -EINVAL or -ENOMEM.
 */
int ps_store_scratch_create(const struct ps_store_scratch_opts *opts,
			    struct ps_store_scratch **out);

/** ps_store_scratch_destroy() - free. Accepts NULL. */
void ps_store_scratch_destroy(struct ps_store_scratch *s);

/* ---- dense and sparse ------------------------------------------------------------------------ */

/**
 * ps_store_pull() - copy the values of rows @ids[0..n) into @out (n x width floats, row-major).
 * Works on dense and sparse parts. Ids may repeat.
 */
int ps_store_pull(struct ps_store_part *part, const uint64_t *ids, size_t n, float *out,
		  uint32_t width);

/**
 * ps_store_row_addrs() - the address of each row's value, for a zero-copy gather (each is
 * width floats, 64-byte aligned, inside a chunk). Same validation as ps_store_pull().
 */
int ps_store_row_addrs(struct ps_store_part *part, const uint64_t *ids, size_t n,
		       const float **addrs);

/** ps_store_row_addr() - one row's value address, or NULL when @id is not in the part. */
const float *ps_store_row_addr(const struct ps_store_part *part, uint64_t id);

/**
 * ps_store_push() - apply gradients @grads (n x width) to rows @ids[0..n) with the part's
 * optimizer, as one step: gradients of an id repeated in the batch are summed first (TF's
 * sparse apply), then each distinct row is updated once. Marks the rows changed; advances the
 * step. Dense and sparse parts.
 */
int ps_store_push(struct ps_store_part *part, struct ps_store_scratch *scratch, const uint64_t *ids,
		  size_t n, const float *grads, uint32_t width);

/**
 * ps_store_dense_pull() - copy every row [begin, end) into @out; @nfloats must be
 * (end - begin) * width.
 */
int ps_store_dense_pull(struct ps_store_part *part, float *out, size_t nfloats);

/**
 * ps_store_dense_push() - apply a gradient for every row [begin, end) as one step; @nfloats
 * must be (end - begin) * width. Marks every row changed.
 */
int ps_store_dense_push(struct ps_store_part *part, const float *grads, size_t nfloats);

/* ---- hash ------------------------------------------------------------------------------------ */

/*
 * The 64-bit calls take uint64_t keys and work on PS_VAR_HASH64 parts, the 128-bit ones take
 * struct ps_key128 and work on PS_VAR_HASH128 parts; the other kind is -EINVAL.
 *
 * A key not present is created (if admitted: a row with the initializer's value and fresh
 * slots, marked changed) on pull and on push. A key not admitted has no row: a pull reads the
 * initializer's value, a push drops its gradient, ps_store_hash_row_addrs gives NULL.
 * Every key touched by a pull or push gets the part's current step as its last use (eviction).
 */

/** ps_store_hash_pull64/128() - values of @keys into @out (n x width). */
int ps_store_hash_pull64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			 const uint64_t *keys, size_t n, float *out, uint32_t width);
int ps_store_hash_pull128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			  const struct ps_key128 *keys, size_t n, float *out, uint32_t width);

/**
 * ps_store_hash_row_addrs64/128() - as the pulls, but give each key's value address (NULL for a
 * key not admitted: the caller sends ps_store_init_value() for it instead).
 */
int ps_store_hash_row_addrs64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			      const uint64_t *keys, size_t n, const float **addrs);
int ps_store_hash_row_addrs128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			       const struct ps_key128 *keys, size_t n, const float **addrs);

/** ps_store_hash_push64/128() - as ps_store_push(), by key. */
int ps_store_hash_push64(struct ps_store_part *part, struct ps_store_scratch *scratch,
			 const uint64_t *keys, size_t n, const float *grads, uint32_t width);
int ps_store_hash_push128(struct ps_store_part *part, struct ps_store_scratch *scratch,
			  const struct ps_key128 *keys, size_t n, const float *grads,
			  uint32_t width);

/**
 * ps_store_hash_delete64/128() - remove @keys (absent keys are skipped) and record each removed
 * key for the next export. @ndeleted (may be NULL) receives how many were present. May allocate
 * (the deletion record grows); -ENOMEM then changes nothing.
 */
int ps_store_hash_delete64(struct ps_store_part *part, const uint64_t *keys, size_t n,
			   size_t *ndeleted);
int ps_store_hash_delete128(struct ps_store_part *part, const struct ps_key128 *keys, size_t n,
			    size_t *ndeleted);

/**
 * ps_store_hash_evict() - remove every row not pulled or pushed during the last @max_idle
 * steps (its last use < step - max_idle), recording each as deleted. @nevicted may be NULL.
 */
int ps_store_hash_evict(struct ps_store_part *part, uint64_t max_idle, size_t *nevicted);

/* ---- rows as a whole: checkpoints, streaming export, restore -------------------------------- */

/**
 * ps_store_foreach() - call @fn for every row (dense/sparse: ids in order; hash: live rows in
 * storage order). Stops at the first non-zero return and returns it.
 */
int ps_store_foreach(struct ps_store_part *part, ps_store_row_fn fn, void *arg);

/**
 * ps_store_export() - streaming export: call @del_fn (may be NULL for dense/sparse) for each
 * hash key deleted since the last export, then @row_fn for each row changed (pushed, or created)
 * since then, and forget them. A row whose callback fails stays marked, as do all deletions if
 * any deletion callback fails; the export stops and returns that code, so a retry re-exports
 * what was not written (rows written twice are harmless: an export is idempotent).
 */
int ps_store_export(struct ps_store_part *part, ps_store_row_fn row_fn, ps_store_key_fn del_fn,
		    void *arg);

/** ps_store_changed_count() - rows currently marked changed (and hash deletions recorded). */
uint64_t ps_store_changed_count(const struct ps_store_part *part, uint64_t *ndeleted);

/**
 * ps_store_load_row() - write a whole row (value and slots, as in ps_store_row.data) by id or
 * key, creating a hash row regardless of admission (checkpoint restore). The row is not marked
 * changed. -EINVAL if @width or @nslots differ from the part's.
 */
int ps_store_load_row(struct ps_store_part *part, uint64_t id, uint64_t key_hi, const float *data,
		      uint32_t width, uint32_t nslots);

/* ---- initializers ---------------------------------------------------------------------------- */

/**
 * ps_store_init_row() - the initial value of row or key (@id, @key_hi) of variable @var_id
 * under @init, into @out (width floats). The same arguments give the same floats on every
 * server: see docs/server-storage.md for the generator. @init must be valid.
 */
void ps_store_init_row(const struct ps_initializer *init, uint64_t var_id, uint64_t id,
		       uint64_t key_hi, float *out, uint32_t width);

/** ps_store_init_validate() - 0, or -EINVAL for an unknown kind or bad parameters. */
int ps_store_init_validate(const struct ps_initializer *init);

/** ps_store_init_value() - ps_store_init_row() with the part's initializer and variable id. */
void ps_store_init_value(const struct ps_store_part *part, uint64_t id, uint64_t key_hi,
			 float *out);

/**
 * ps_store_hash_admit() - does admission (@prob, @seed) admit key (@key, @key_hi)? A function
 * of its arguments only (docs/server-storage.md), so replicas agree.
 */
bool ps_store_hash_admit(float prob, uint64_t seed, uint64_t key, uint64_t key_hi);

#endif
