/*
 * Streaming models (module ps_model_io): the manager that picks a writer by URL scheme (the
 * seed's GetManager / OpenWriter / OpenWriteAny), the write calls (WriteDenseModel /
 * WriteSparseModel / WriteHashModel), the built-in writers, and the consumer side of file://
 * (manifest, delta reader, follower). The model structs and the writer ops table are public, in
 * psplus/streaming_model.h. Byte layouts: docs/formats.md, "Streaming deltas".
 *
 * Built-in schemes:
 *   file:///abs/dir   numbered delta files DIR/delta-000001.psd ... and DIR/manifest, the list
 *                     of complete deltas, replaced atomically: a consumer that reads the
 *                     manifest sees only whole, durable deltas, in commit order. Several
 *                     writers (servers) may share one folder: the number is taken under an
 *                     flock() of DIR/.lock at commit. Writers sharing a folder must have
 *                     distinct writer_ids: opening removes the temp files its id left behind
 *                     in a crash.
 *   none://           discards everything (and counts it, like every writer: ps_sm_writer_stats)
 * Plugins add schemes with ps_plugin_host.register_model_writer (psplus/plugin.h).
 *
 * A writer's life: ps_sm_open_writer(); any number of ps_sm_write_*(); ps_sm_writer_commit()
 * ends one delta (what the consumer sees as a unit); more writes and commits; then
 * ps_sm_writer_close(), which drops writes not committed. A server keeps one writer per URL and
 * commits once per export trigger.
 *
 * Threads: a writer handle is used by one thread at a time; different handles are independent
 * (also across processes for file://). The manager's lookups are thread-safe.
 */
#ifndef PS_MODEL_IO_SM_H
#define PS_MODEL_IO_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/streaming_model.h>

#include "model_io/ckpt.h"

/* ---- the manager ----------------------------------------------------------------------------- */

/**
 * ps_sm_manager_get() - GetManager: the writer ops for @scheme ("file", "none", or one a plugin
 * registered), or NULL when there is none (e.g. "zk"). Thread-safe.
 */
const struct ps_sm_writer_ops *ps_sm_manager_get(const char *scheme);

struct ps_sm_writer;

/**
 * ps_sm_open_writer() - OpenWriter: parse @url, find its scheme's writer, open it.
 * @opts: may be NULL (writer_id 0).
 * Returns 0, PS_EBAD_URL, PS_EUNSUPPORTED_SCHEME (no writer for that scheme), or the writer's
 * open error, with @err quoting the URL.
 */
int ps_sm_open_writer(const char *url, const struct ps_sm_writer_opts *opts,
		      struct ps_sm_writer **out, char *err, size_t errlen);

/**
 * ps_sm_write_dense() / _sparse() / _hash() - WriteDenseModel / WriteSparseModel /
 * WriteHashModel: validate @m (width >= 1, nslots <= PS_SM_MAX_SLOTS, name length, arrays
 * present for non-zero counts, the key pointers that fit key_bits, no size overflow) and add it
 * to the current delta. Returns 0, -EINVAL (invalid model: nothing written) or the writer's code.
 */
int ps_sm_write_dense(struct ps_sm_writer *w, const struct ps_sm_dense_model *m);
int ps_sm_write_sparse(struct ps_sm_writer *w, const struct ps_sm_sparse_model *m);
int ps_sm_write_hash(struct ps_sm_writer *w, const struct ps_sm_hash_model *m);

/** ps_sm_writer_commit() - end the current delta (file://: durable and in the manifest). */
int ps_sm_writer_commit(struct ps_sm_writer *w);

/** ps_sm_writer_close() - close; uncommitted writes are dropped. Accepts NULL. */
void ps_sm_writer_close(struct ps_sm_writer *w);

/** The last error in words (the writer's own message when it has one). */
const char *ps_sm_writer_errmsg(const struct ps_sm_writer *w);

/** What went through a writer handle (counted by the manager for every scheme). */
struct ps_sm_writer_stats {
	uint64_t models; /* successful write calls */
	uint64_t dense_rows;
	uint64_t sparse_rows;
	uint64_t hash_rows;
	uint64_t hash_deletes;
	uint64_t commits;     /* successful commits */
	uint64_t value_bytes; /* float bytes handed over (values and slots) */
};
void ps_sm_writer_stats(const struct ps_sm_writer *w, struct ps_sm_writer_stats *st);

/** A set of models written as one delta by ps_sm_open_write_any(). Arrays may be NULL if empty. */
struct ps_sm_batch {
	const struct ps_sm_dense_model *dense;
	size_t ndense;
	const struct ps_sm_sparse_model *sparse;
	size_t nsparse;
	const struct ps_sm_hash_model *hash;
	size_t nhash;
};

/**
 * ps_sm_open_write_any() - OpenWriteAny: open @url, write every model of @b, commit, close.
 * One delta, or nothing if any step fails. Returns 0 or the first error with @err filled.
 */
int ps_sm_open_write_any(const char *url, const struct ps_sm_writer_opts *opts,
			 const struct ps_sm_batch *b, char *err, size_t errlen);

/* ---- file:// deltas: format ------------------------------------------------------------------ */

#define PS_SM_DELTA_MAGIC	  UINT32_C(0x44535350) /* bytes "PSSD" */
#define PS_SM_DELTA_FORMAT	  1
#define PS_SM_DELTA_HEADER_BYTES  64u
#define PS_SM_RECORD_HEADER_BYTES 40u
#define PS_SM_MANIFEST_FILE	  "manifest"
#define PS_SM_FILE_MAX		  48 /* bytes of a delta file name, with the NUL */

/** The 64-byte delta header; little-endian on disk at the offsets shown (docs/formats.md). */
struct ps_sm_delta_hdr {
	uint32_t magic;		  /*  0: PS_SM_DELTA_MAGIC */
	uint16_t format;	  /*  4: PS_SM_DELTA_FORMAT */
	uint16_t flags;		  /*  6: 0 */
	uint64_t created_unix_ns; /* 8: at commit */
	uint64_t writer_id;	  /* 16 */
	uint64_t rows;		  /* 24: rows in all row records */
	uint64_t deletes;	  /* 32: keys in all delete records */
	uint64_t records;	  /* 40 */
	uint64_t content_bytes;	  /* 48: bytes after the header */
	uint32_t content_crc;	  /* 56: CRC32C of those bytes */
	uint32_t header_crc;	  /* 60: CRC32C of header bytes [0, 60) */
};

/** Record types: one per write call (a hash model with deletes and rows gives two). */
enum ps_sm_rec_type {
	PS_SM_REC_DENSE = 1,	   /* rows [begin, begin + count), values only */
	PS_SM_REC_SPARSE = 2,	   /* count u64 ids, then the rows */
	PS_SM_REC_HASH64 = 3,	   /* count u64 keys, then the rows */
	PS_SM_REC_HASH128 = 4,	   /* count (lo, hi) u64 pairs, then the rows */
	PS_SM_REC_HASH64_DEL = 5,  /* count u64 keys */
	PS_SM_REC_HASH128_DEL = 6, /* count (lo, hi) pairs */
};

/** The 40-byte record header, followed by the name padded to 8 bytes, then the payload. */
struct ps_sm_record_hdr {
	uint8_t type;		/*  0: enum ps_sm_rec_type */
	uint8_t nslots;		/*  1 */
	uint16_t name_len;	/*  2: <= PS_SM_NAME_MAX */
	uint32_t width;		/*  4: >= 1 for rows; 0 for deletes */
	uint64_t var_id;	/*  8 */
	uint64_t count;		/* 16: rows or keys */
	uint64_t begin;		/* 24: dense: the first row id; 0 otherwise */
	uint64_t payload_bytes; /* 32: bytes after the padded name */
};

/** One record as read back; pointers valid until the next call on the reader. */
struct ps_sm_record {
	enum ps_sm_rec_type type;
	uint64_t var_id;
	const char *var_name; /* NUL-terminated */
	uint32_t width, nslots;
	uint64_t count;
	uint64_t begin;	      /* PS_SM_REC_DENSE */
	const uint64_t *keys; /* sparse ids / hash64 keys (count) / hash128 (2 * count: lo, hi) */
	const float *values;  /* count * (1 + nslots) * width; NULL for deletes */
};

/* ---- file:// deltas: consumers --------------------------------------------------------------- */

/** One line of the manifest: a complete delta. */
struct ps_sm_manifest_entry {
	uint64_t seq;		   /* 1, 2, ... in commit order */
	char file[PS_SM_FILE_MAX]; /* "delta-000001.psd" */
	uint64_t size;		   /* bytes */
	uint32_t crc32c;	   /* content CRC (as in the header) */
	uint64_t rows, deletes;
	uint64_t writer_id;
	uint64_t created_unix_ns;
};

/**
 * ps_sm_manifest_read() - the complete deltas of folder @dir, in sequence order (malloc'd,
 * free()). A folder without a manifest has none. A corrupt manifest is PS_ECORRUPT.
 */
int ps_sm_manifest_read(const char *dir, struct ps_sm_manifest_entry **out, size_t *n, char *err,
			size_t errlen);

struct ps_sm_delta_reader;

/**
 * ps_sm_delta_reader_open() - open a delta file and check it whole before anything is handed
 * out: header (magic, format, flags, header CRC), size, content CRC. Deltas are applied as a
 * unit, so nothing of a damaged one may be seen. Returns 0, PS_ECORRUPT, ... with @err naming
 * the file.
 */
int ps_sm_delta_reader_open(const char *path, struct ps_sm_delta_reader **out, char *err,
			    size_t errlen);
const struct ps_sm_delta_hdr *ps_sm_delta_reader_header(const struct ps_sm_delta_reader *r);
/** The next record: 1, 0 at the end, or a negative code (ps_sm_delta_reader_errmsg()). */
int ps_sm_delta_reader_next(struct ps_sm_delta_reader *r, struct ps_sm_record *rec);
const char *ps_sm_delta_reader_errmsg(const struct ps_sm_delta_reader *r);
void ps_sm_delta_reader_close(struct ps_sm_delta_reader *r);

/**
 * ps_sm_delta_verify() - open and read every record of a delta; with @e, check it is the one
 * the manifest lists (size, CRC, counts). 0 or the error with @err naming the file.
 */
int ps_sm_delta_verify(const char *path, const struct ps_sm_manifest_entry *e, char *err,
		       size_t errlen);

/** A consumer following a file:// folder: hands out each new complete delta once, in order. */
struct ps_sm_follower;

/** ps_sm_follower_create() - follow @dir from the delta after @after_seq (0: the first). */
int ps_sm_follower_create(const char *dir, uint64_t after_seq, struct ps_sm_follower **out);

/**
 * ps_sm_follower_next() - the next delta: 1 with @e and its full @path, 0 when no newer delta
 * is listed yet (poll again later), or a negative code (corrupt manifest, ...) with @err.
 */
int ps_sm_follower_next(struct ps_sm_follower *f, struct ps_sm_manifest_entry *e, char *path,
			size_t pathlen, char *err, size_t errlen);

void ps_sm_follower_destroy(struct ps_sm_follower *f);

/* ---- applying deltas to a checkpoint (delta_apply.c) ----------------------------------------- */

/** Fresh optimizer slots of a new hash row (server: ps_optim_init_slots). */
typedef void (*ps_ckpt_init_slots_fn)(void *arg, const struct ps_optimizer *o, float *row,
				      uint32_t width);

struct ps_ckpt_apply_opts {
	const char *root;      /* checkpoint root (a path) */
	const char *base;      /* listed checkpoint, or "latest" */
	const char *delta_dir; /* a file:// streaming folder (a path) */
	const char *new_name;  /* must not exist yet */
	/*
	 * Apply the listed deltas with after_seq < seq <= upto_seq (upto_seq 0: through the
	 * last). after_seq UINT64_MAX means "the base's last_delta_seq" (0 for a plain save):
	 * chains of apply-deltas then pick up where the previous one stopped. Deltas written
	 * before the base was saved must be excluded by the caller: they are older than it.
	 */
	uint64_t after_seq;
	uint64_t upto_seq;
	/* Slots of hash keys new to the checkpoint whose delta carries values only; NULL:
	 * zeros. Rows whose delta carries slots use them. */
	ps_ckpt_init_slots_fn init_slots;
	void *init_arg;
	ps_mio_progress_fn progress; /* bytes of deltas and base part files read */
	void *parg;
};

struct ps_ckpt_apply_stats {
	uint64_t deltas; /* delta files applied */
	uint64_t first_seq, last_seq;
	uint64_t rows_replaced;	 /* existing rows given new values */
	uint64_t rows_inserted;	 /* hash keys new to the checkpoint */
	uint64_t keys_deleted;	 /* hash keys removed */
	uint64_t deletes_absent; /* deletions of keys the result would not have had anyway */
	uint64_t bytes_in;	 /* total bytes to read (for a progress bar) */
};

/**
 * ps_ckpt_apply_deltas() - write checkpoint @new_name = @base with the deltas applied in
 * sequence order: rows replaced (values, and slots when the delta carries them), hash keys
 * inserted and deleted. The base is only read; the new checkpoint is committed (indexed) only
 * once complete. Every delta is verified whole before any of it is used. The part layout,
 * optimizer states, cluster version and placement blob are the base's; derived_from and
 * last_delta_seq record what was applied.
 *
 * Memory: all changed rows of the selected deltas are held at once (latest value per row).
 * Returns 0; -ENOENT (no base, or no delta to apply); PS_EUNKNOWN_VAR (a delta names a variable
 * the base lacks); PS_EOUT_OF_RANGE (a row id beyond the variable); PS_ECORRUPT (a damaged
 * delta or base part, or a record whose kind, width or slots do not fit the variable); ...
 * with @err naming the file. On error nothing is committed and the partial folder is removed.
 */
int ps_ckpt_apply_deltas(const struct ps_ckpt_apply_opts *o, struct ps_ckpt_apply_stats *st,
			 char *err, size_t errlen);

#endif
