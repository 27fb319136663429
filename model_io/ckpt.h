/*
 * Checkpoints (module ps_model_io): the on-disk format, writing part files row by row, reading
 * them back (whole, or clipped to a row / bucket range for a restore onto another layout), the
 * metadata, and the index of complete checkpoints. Byte layouts: docs/formats.md.
 *
 *   ROOT/index                 the complete checkpoints, in commit order (text, CRC32C trailer)
 *   ROOT/.lock                 flock()ed while the index is rewritten
 *   ROOT/NAME/checkpoint.meta  16-byte header + protobuf-c psplus.ckpt.Checkpoint
 *   ROOT/NAME/v<ID>-<B>-<E>.psp  one part file: rows (dense/sparse) or buckets (hash) [B, E)
 *
 * Saving a checkpoint (the scheduler drives it; servers write the parts):
 *   1. ps_ckpt_begin(root, name)          fresh, empty ROOT/NAME/ (leftovers of a crash go)
 *   2. per part or shard, in any thread or process sharing the file system:
 *      ps_ckpt_part_writer_create() -> _append() per row -> _finish() -> a ps_ckpt_part_desc
 *   3. ps_ckpt_commit(root, meta)         checks, writes the metadata, then the index
 * Only step 3's index rename makes the checkpoint exist. A crash anywhere before it leaves the
 * index as it was (naming only complete checkpoints, the previous one untouched); after it, the
 * checkpoint is complete and durable. The steps and their fsyncs are in docs/formats.md.
 *
 * Restoring: ps_ckpt_resolve() (a name or "latest"), ps_ckpt_meta_load(), then for each new
 * part the saved parts overlapping its range (ps_ckpt_var_overlaps()), each read with a
 * reader filtered to the new range. Rule: the reader verifies the content CRC when it reaches
 * the end of the file (ps_ckpt_part_reader_next() returns 0 only then), so a restore must
 * load into parts that are not yet live and switch to them only after every reader it used has
 * returned 0; on any error it drops them, and the running state is untouched. (Opening with
 * verify_first checks the CRC before the first row instead, at the price of reading twice.)
 *
 * Errors: 0 or a negative code; PS_ECORRUPT for anything wrong inside a file, with a message
 * that names the file and says what is wrong (bad magic, truncated at offset N, CRC mismatch,
 * a field out of range). Functions that take @err/@errlen fill it on failure (it may be NULL).
 *
 * Threads: the functions on ROOT (begin, commit, list, resolve, remove) may be called from
 * several processes at once: the index is rewritten under a lock. A writer or reader object
 * belongs to one thread at a time.
 */
#ifndef PS_MODEL_IO_CKPT_H
#define PS_MODEL_IO_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/types.h>

#define PS_CKPT_FORMAT_VERSION	  1
#define PS_CKPT_PART_MAGIC	  UINT32_C(0x50435350) /* bytes "PSCP" */
#define PS_CKPT_META_MAGIC	  UINT32_C(0x4d435350) /* bytes "PSCM" */
#define PS_CKPT_PART_HEADER_BYTES 64u
#define PS_CKPT_META_HEADER_BYTES 16u
#define PS_CKPT_NAME_MAX	  128 /* bytes of a checkpoint name */
#define PS_CKPT_VAR_NAME_MAX	  255 /* bytes of a variable name */
#define PS_CKPT_FILE_MAX	  64  /* bytes of a part file name, with the NUL */
#define PS_CKPT_META_FILE	  "checkpoint.meta"
#define PS_CKPT_INDEX_FILE	  "index"
#define PS_CKPT_META_MAX_BYTES	  (256u << 20) /* refuse larger metadata files */

/**
 * Progress of a long operation: @bytes more bytes were processed (the caller knows the total,
 * e.g. the sum of the part sizes). May be NULL wherever it is taken.
 */
typedef void (*ps_mio_progress_fn)(void *arg, uint64_t bytes);

/* ---- part files ------------------------------------------------------------------------------ */

/**
 * The 64-byte part header, field by field at its file offset. In memory the fields are in host
 * order; on disk each is little-endian at the offset shown (ps_ckpt_part_header_encode/decode
 * convert). The struct has no padding by construction; the asserts in ckpt_part.c pin it.
 */
struct ps_ckpt_part_hdr {
	uint32_t magic;		/*  0: PS_CKPT_PART_MAGIC */
	uint16_t format;	/*  4: PS_CKPT_FORMAT_VERSION */
	uint8_t kind;		/*  6: enum ps_var_kind */
	uint8_t nslots;		/*  7: optimizer slots per row, 0..PS_OPTIM_MAX_SLOTS */
	uint32_t width;		/*  8: floats per value, >= 1 */
	uint32_t flags;		/* 12: 0; a reader refuses any bit it does not know */
	uint64_t var_id;	/* 16 */
	uint64_t begin;		/* 24: first row id or bucket */
	uint64_t end;		/* 32: past the last; begin < end */
	uint64_t rows;		/* 40: records that follow */
	uint64_t content_bytes; /* 48: rows * record size */
	uint32_t content_crc;	/* 56: CRC32C of the file's bytes [64, 64 + content_bytes) */
	uint32_t header_crc;	/* 60: CRC32C of bytes [0, 60) of the header as stored */
};

/** Bytes of one record: the id (8) or key (8 / 16) then (1 + nslots) * width floats. */
uint64_t ps_ckpt_record_bytes(enum ps_var_kind kind, uint32_t width, uint32_t nslots);

/** ps_ckpt_part_header_encode() - @h into 64 little-endian bytes, setting the header CRC. */
void ps_ckpt_part_header_encode(const struct ps_ckpt_part_hdr *h, uint8_t out[64]);

/**
 * ps_ckpt_part_header_decode() - check and decode 64 bytes: magic, header CRC, format, flags,
 * kind, width, nslots, range (hash: end <= 65536), rows (dense/sparse: end - begin) and
 * content_bytes. Returns 0 or PS_ECORRUPT with @err saying which (without a file name).
 */
int ps_ckpt_part_header_decode(const uint8_t in[64], struct ps_ckpt_part_hdr *h, char *err,
			       size_t errlen);

/** A row as written and read: dense/sparse id or hash key, and value + slots. */
struct ps_ckpt_row {
	uint64_t id;	   /* dense/sparse: row id; hash: key (hash128: its low word) */
	uint64_t key_hi;   /* hash128: the key's high word; 0 otherwise */
	const float *data; /* (1 + nslots) * width floats; valid until the next call */
	uint32_t width;
	uint32_t nslots;
};

/** What a finished part file is; also what the metadata lists for it. */
struct ps_ckpt_state {
	uint64_t step;	    /* push calls applied to the part (struct ps_store_state) */
	double beta1_power; /* Adam */
	double beta2_power;
};

struct ps_ckpt_part_desc {
	char file[PS_CKPT_FILE_MAX]; /* name inside the checkpoint folder */
	uint64_t begin, end;
	uint64_t rows;
	uint64_t size;	 /* bytes, header included */
	uint32_t crc32c; /* content CRC (as in the header) */
	struct ps_ckpt_state state;
};

/** ps_ckpt_part_file_name() - "v<var_id>-<begin>-<end>.psp". Returns 0 or -ENAMETOOLONG. */
int ps_ckpt_part_file_name(uint64_t var_id, uint64_t begin, uint64_t end, char *out, size_t len);

struct ps_ckpt_part_writer;

struct ps_ckpt_part_writer_opts {
	const char *dir;  /* the checkpoint folder (ps_ckpt_begin's); borrowed */
	const char *file; /* NULL: ps_ckpt_part_file_name(); else a name without '/' */
	uint64_t var_id;
	enum ps_var_kind kind;
	uint32_t width;	     /* >= 1 */
	uint32_t nslots;     /* 0..PS_OPTIM_MAX_SLOTS */
	uint64_t begin, end; /* rows or buckets, begin < end (hash: end <= 65536) */
	size_t buffer_bytes; /* write buffer; 0: 1 MiB */
};

/**
 * ps_ckpt_part_writer_create() - start a part file: creates DIR/.FILE.tmp with room for the
 * header. Returns 0, -EINVAL (bad options), -ENOMEM or an errno from open().
 */
int ps_ckpt_part_writer_create(const struct ps_ckpt_part_writer_opts *opts,
			       struct ps_ckpt_part_writer **out, char *err, size_t errlen);

/**
 * ps_ckpt_part_writer_append() - add one row: @data is (1 + nslots) * width floats (a store
 * row as ps_store_foreach() gives it). Dense/sparse rows must come in id order, begin first,
 * without gaps; a hash key must fall in a bucket of [begin, end) and hash64 keys have @key_hi 0.
 * The CRC is computed as the bytes stream out; nothing is fsync'ed until finish.
 * Returns 0, PS_EOUT_OF_RANGE (id/bucket), -EINVAL or a write error (sticky: finish fails too).
 */
int ps_ckpt_part_writer_append(struct ps_ckpt_part_writer *w, uint64_t id, uint64_t key_hi,
			       const float *data);

/**
 * ps_ckpt_part_writer_finish() - write the header, fsync, rename to the final name and fill
 * @desc (its state is left zero: the caller sets it from the part). Dense/sparse parts must
 * hold every row of their range (-EINVAL otherwise). The folder is fsync'ed by ps_ckpt_commit.
 * The writer must still be destroyed.
 */
int ps_ckpt_part_writer_finish(struct ps_ckpt_part_writer *w, struct ps_ckpt_part_desc *desc);

/** The last error of a writer in words. */
const char *ps_ckpt_part_writer_errmsg(const struct ps_ckpt_part_writer *w);

/** ps_ckpt_part_writer_destroy() - free; an unfinished file is unlinked. Accepts NULL. */
void ps_ckpt_part_writer_destroy(struct ps_ckpt_part_writer *w);

struct ps_ckpt_part_reader;

struct ps_ckpt_part_reader_opts {
	const char *path; /* the part file; borrowed for the call */
	/* Check the whole content CRC before the first row is handed out (reads the file
	 * twice). Otherwise the CRC is checked at the end (see the restore rule above). */
	bool verify_first;
	/* Hand out only rows whose id (dense/sparse) or key bucket (hash) is in
	 * [filter_begin, filter_end); both 0: every row. Rows filtered out are still read and
	 * checksummed. */
	uint64_t filter_begin, filter_end;
	size_t buffer_bytes; /* read buffer; 0: 1 MiB; at least one record whatever is asked */
	/* Map the file (mmap, read-only) instead of reading it into the buffer, so that
	 * ps_ckpt_part_reader_next_batch() hands out rows straight from the page cache: each byte
	 * is then copied once, by the caller, where a read() copies it into the buffer first.
	 * The file must not be truncated while the reader is open (a mapped page past the end
	 * raises SIGBUS): part files never are, a writer renames a new file over the old name.
	 * Falls back to reading when the file cannot be mapped. */
	bool map;
	/* Keep the kernel reading this many bytes past the reader's position (POSIX_FADV_WILLNEED,
	 * renewed as rows are consumed): a deeper stream than the kernel's own readahead window
	 * (read_ahead_kb), for a reader that wants the disk to stay ahead of it. 0: the
	 * kernel's window only. */
	uint64_t readahead;
};

/**
 * ps_ckpt_part_prefetch() - ask the kernel to start reading the first @bytes of the part file
 * @path into the page cache (sequential access advised too), and return at once: the disk can
 * work while the caller prepares to read it. Advice only; errors are ignored.
 */
void ps_ckpt_part_prefetch(const char *path, uint64_t bytes);

/**
 * ps_ckpt_part_reader_open() - open and validate the header and the file size (which must be
 * exactly 64 + content_bytes: "truncated at offset N" or "N trailing bytes" otherwise).
 * Returns 0, PS_ECORRUPT, -ENOENT, -ENOMEM, ... with @err naming the file.
 */
int ps_ckpt_part_reader_open(const struct ps_ckpt_part_reader_opts *opts,
			     struct ps_ckpt_part_reader **out, char *err, size_t errlen);

/** The decoded header. */
const struct ps_ckpt_part_hdr *ps_ckpt_part_reader_header(const struct ps_ckpt_part_reader *r);

/**
 * ps_ckpt_part_reader_next() - the next row (after the filter) into @row. Returns 1 with a
 * row, 0 at the end once the content CRC matched, or a negative code (PS_ECORRUPT: CRC
 * mismatch, a row outside the range, ids out of order; -EIO ...) with ps_ckpt_part_reader_errmsg()
 * naming the file. After an error, every call returns it again.
 */
int ps_ckpt_part_reader_next(struct ps_ckpt_part_reader *r, struct ps_ckpt_row *row);

/**
 * ps_ckpt_part_reader_next_batch() - up to @max rows (after the filter) at once, *@n of them,
 * with the same checks: for loaders that copy each row where it belongs. @rows[i].data points
 * into the reader's buffer or, with the map option, into the file's mapping (no copy), valid
 * until the next call on @r; the rows of one call are checksummed just before they are handed
 * out, so they are still in cache when the caller copies them. Returns 0 with *@n > 0 rows, 0 with *@n == 0 at the end once the content CRC
 * matched, or a negative code as ps_ckpt_part_reader_next() (which may be mixed with it).
 */
int ps_ckpt_part_reader_next_batch(struct ps_ckpt_part_reader *r, struct ps_ckpt_row *rows,
				   size_t max, size_t *n);

/** Bytes consumed so far (for progress). */
uint64_t ps_ckpt_part_reader_offset(const struct ps_ckpt_part_reader *r);

const char *ps_ckpt_part_reader_errmsg(const struct ps_ckpt_part_reader *r);

/** ps_ckpt_part_reader_close() - free. Accepts NULL. */
void ps_ckpt_part_reader_close(struct ps_ckpt_part_reader *r);

/**
 * ps_ckpt_part_verify() - read a whole part file, checking everything the reader checks, and,
 * if @expect is not NULL, that it is the file the metadata describes (range, rows, size, CRC).
 * @var_id / @kind / @width / @nslots: checked too unless @expect is NULL.
 * Returns 0 or the reader's code with @err naming the file and the fault.
 */
int ps_ckpt_part_verify(const char *path, const struct ps_ckpt_part_desc *expect, uint64_t var_id,
			enum ps_var_kind kind, uint32_t width, uint32_t nslots,
			ps_mio_progress_fn progress, void *parg, char *err, size_t errlen);

/* ---- metadata -------------------------------------------------------------------------------- */

struct ps_ckpt_var {
	char name[PS_CKPT_VAR_NAME_MAX + 1];
	uint64_t id;
	struct ps_var_spec spec; /* kind, dtype, rows, width, init, optim, admission */
	uint32_t nslots;
	size_t nparts;
	struct ps_ckpt_part_desc *parts; /* sorted by begin; they tile the variable's domain */
};

struct ps_ckpt_meta {
	uint32_t format_version;
	char name[PS_CKPT_NAME_MAX + 1];
	uint64_t created_unix_ns; /* set by ps_ckpt_commit */
	uint64_t cluster_version;
	uint32_t server_count;
	size_t nvars;
	struct ps_ckpt_var *vars;
	uint8_t *placement; /* ps_placement_encode() blob, malloc'd; may be NULL */
	size_t placement_len;
	char derived_from[PS_CKPT_NAME_MAX + 1]; /* apply-deltas: the base; "" otherwise */
	uint64_t last_delta_seq;		 /* apply-deltas: last delta applied */
};

/** ps_ckpt_meta_create() - an empty metadata for checkpoint @name. NULL on -ENOMEM. */
struct ps_ckpt_meta *ps_ckpt_meta_create(const char *name);

/** ps_ckpt_meta_free() - free @m and everything it holds. Accepts NULL. */
void ps_ckpt_meta_free(struct ps_ckpt_meta *m);

/** ps_ckpt_meta_set_placement() - copy @blob in. Returns 0 or -ENOMEM. */
int ps_ckpt_meta_set_placement(struct ps_ckpt_meta *m, const void *blob, size_t len);

/**
 * ps_ckpt_meta_add_var() - append a variable (no parts yet). @nslots is what its rows carry.
 * Returns it, or NULL on -ENOMEM. Pointers to earlier variables may move.
 */
struct ps_ckpt_var *ps_ckpt_meta_add_var(struct ps_ckpt_meta *m, const char *name, uint64_t id,
					 const struct ps_var_spec *spec, uint32_t nslots);

/** ps_ckpt_var_add_part() - append a finished part (kept sorted by begin). 0 or -ENOMEM. */
int ps_ckpt_var_add_part(struct ps_ckpt_var *v, const struct ps_ckpt_part_desc *d);

/** ps_ckpt_meta_find_var() - the variable with @id, or NULL. */
struct ps_ckpt_var *ps_ckpt_meta_find_var(const struct ps_ckpt_meta *m, uint64_t id);
struct ps_ckpt_var *ps_ckpt_meta_find_var_name(const struct ps_ckpt_meta *m, const char *name);

/**
 * ps_ckpt_meta_check() - consistency: valid name, unique variable ids and names, known kinds,
 * width >= 1, nslots <= PS_OPTIM_MAX_SLOTS, part files named safely, parts tiling [0, rows)
 * (dense/sparse, with rows == end - begin) or [0, 65536) (hash) without gap or overlap.
 * Returns 0 or PS_ECORRUPT / -EINVAL with @err naming the variable.
 */
int ps_ckpt_meta_check(const struct ps_ckpt_meta *m, char *err, size_t errlen);

/** ps_ckpt_meta_encode() - the checkpoint.meta file (header + protobuf), malloc'd. */
int ps_ckpt_meta_encode(const struct ps_ckpt_meta *m, uint8_t **buf, size_t *len);

/**
 * ps_ckpt_meta_decode() - parse a checkpoint.meta file's bytes (checks magic, format, length,
 * CRC, the protobuf, then ps_ckpt_meta_check()). @what names the file in messages.
 */
int ps_ckpt_meta_decode(const uint8_t *buf, size_t len, const char *what, struct ps_ckpt_meta **out,
			char *err, size_t errlen);

/**
 * ps_ckpt_var_overlaps() - indices of @v's parts overlapping [begin, end), into @idx (room for
 * v->nparts). Returns the count. A restore reads those with the reader filter [begin, end).
 */
size_t ps_ckpt_var_overlaps(const struct ps_ckpt_var *v, uint64_t begin, uint64_t end, size_t *idx);

/**
 * ps_ckpt_var_state_for_range() - the optimizer state a new part [begin, end) starts with: the
 * state of the overlapping saved part with the largest step (parts of one variable advance
 * together in synchronous training; in asynchronous training this keeps Adam's bias
 * correction from going backwards). Zero state when nothing overlaps.
 */
void ps_ckpt_var_state_for_range(const struct ps_ckpt_var *v, uint64_t begin, uint64_t end,
				 struct ps_ckpt_state *st);

/* ---- checkpoints under a root ---------------------------------------------------------------- */

/**
 * ps_ckpt_name_valid() - 1..128 bytes of [A-Za-z0-9._-], not starting with '.' or '-', and not
 * "latest", "index" or "end" (words of the tool and of the index format).
 */
bool ps_ckpt_name_valid(const char *name);

/**
 * ps_ckpt_root_path() - a root given as "file:///abs" or a plain path, into a path.
 * Returns 0, PS_EBAD_URL / PS_EUNSUPPORTED_SCHEME (another scheme: none:// means "no
 * checkpoints" and is the caller's to handle) with @err filled.
 */
int ps_ckpt_root_path(const char *root, char *out, size_t len, char *err, size_t errlen);

/**
 * ps_ckpt_begin() - prepare ROOT/@name/ for a save: creates the root if needed, refuses a name
 * the index already lists (-EEXIST), removes a leftover folder of that name (an earlier save
 * that crashed), creates it empty. @dir receives the folder's path for the part writers.
 */
int ps_ckpt_begin(const char *root, const char *name, char *dir, size_t dirlen, char *err,
		  size_t errlen);

/**
 * ps_ckpt_commit() - make the checkpoint exist: checks @m (ps_ckpt_meta_check, every part file
 * present with its listed size), sets created_unix_ns, fsyncs the folder, writes
 * checkpoint.meta atomically, then adds it to the index atomically (under the root's lock).
 * Returns 0, -EEXIST (name already listed), PS_ECORRUPT (inconsistent metadata or a part file
 * missing or of the wrong size) or an I/O error; on error the index is unchanged.
 */
int ps_ckpt_commit(const char *root, struct ps_ckpt_meta *m, char *err, size_t errlen);

/** ps_ckpt_abort() - remove ROOT/@name/ of a save that will not be committed. */
int ps_ckpt_abort(const char *root, const char *name);

struct ps_ckpt_entry {
	char name[PS_CKPT_NAME_MAX + 1];
	uint64_t created_unix_ns;
	uint32_t meta_crc; /* CRC32C of the whole checkpoint.meta file */
};

/**
 * ps_ckpt_list() - the index: complete checkpoints in commit order (malloc'd array, free()).
 * A root without an index has none (0, *n = 0). A corrupt index is PS_ECORRUPT.
 */
int ps_ckpt_list(const char *root, struct ps_ckpt_entry **out, size_t *n, char *err, size_t errlen);

/**
 * ps_ckpt_resolve() - the entry of @name, or of the last committed one for "latest".
 * Returns 0, -ENOENT ("no checkpoint 'x' under ROOT") or ps_ckpt_list()'s errors.
 */
int ps_ckpt_resolve(const char *root, const char *name, struct ps_ckpt_entry *out, char *err,
		    size_t errlen);

/** ps_ckpt_dir() - ROOT/@name into @out. 0 or -ENAMETOOLONG. */
int ps_ckpt_dir(const char *root, const char *name, char *out, size_t len);

/**
 * ps_ckpt_meta_load() - read and decode ROOT/NAME/checkpoint.meta of a listed checkpoint
 * (@name may be "latest"); its CRC must match the index entry's.
 */
int ps_ckpt_meta_load(const char *root, const char *name, struct ps_ckpt_meta **out, char *err,
		      size_t errlen);

/**
 * ps_ckpt_remove() - drop @name from the index (atomically), then delete its folder. A crash
 * in between leaves an unlisted folder, which the next ps_ckpt_begin of that name or
 * ps_ckpt_remove removes. Returns 0 or -ENOENT (neither listed nor present).
 */
int ps_ckpt_remove(const char *root, const char *name, char *err, size_t errlen);

/** Called by ps_ckpt_verify() for each bad file: its path and what is wrong. */
typedef void (*ps_ckpt_bad_fn)(void *arg, const char *path, const char *what);

/**
 * ps_ckpt_verify() - check a listed checkpoint: the metadata (its CRC against the index, its
 * consistency) and every part file in full (header, fields against the metadata, size, CRC).
 * Calls @bad for each bad file. Returns how many files are bad (0: all good), or a negative
 * code when the checkpoint cannot be found (-ENOENT) or the index is unreadable.
 */
int ps_ckpt_verify(const char *root, const char *name, ps_ckpt_bad_fn bad, void *arg,
		   ps_mio_progress_fn progress, void *parg, char *err, size_t errlen);

/* ---- names shared with the tool -------------------------------------------------------------- */

const char *ps_ckpt_kind_name(enum ps_var_kind kind); /* "dense", "sparse", "hash64", ... */

#endif
