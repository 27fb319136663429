/*
 * psplus streaming models: the rows a server changed since its last export, handed to a
 * writer chosen by the output URL's scheme (the seed's streaming_model_writer and
 * streaming_model_manager).
 *
 * A server exports on a trigger: for each variable part, the rows pushed or created since the
 * last trigger and the hash keys deleted (or evicted) since then. It hands them to a writer as
 * three kinds of models, the seed's DenseModel, SparseModel and HashModel, then commits: the
 * writes between two commits form one delta, which a consumer sees whole or not at all.
 *
 * This header is the part of that contract a plugin needs: the three model structs and the ops
 * table a writer implements. A plugin registers an ops table for a URL scheme through
 * ps_plugin_host.register_model_writer (psplus/plugin.h); the manager (model_io/sm.h in the
 * tree: ps_sm_open_writer(), ps_sm_write_dense() ...) validates every model before calling the
 * ops, so a writer may trust what it is given.
 *
 * Rows. A row is `width` floats of value, optionally followed by `nslots` optimizer slots of
 * `width` floats each (the layout of a checkpoint row). nslots 0 (values only) is the usual
 * case for serving; a server may include the slots so that deltas can be applied to a
 * checkpoint without losing optimizer state. Arrays are row-major, rows back to back.
 *
 * Ownership. Every pointer in a model is borrowed for the duration of the write call.
 */
#ifndef PSPLUS_STREAMING_MODEL_H
#define PSPLUS_STREAMING_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>
#include <psplus/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest variable name a model may carry (bytes, without the NUL). */
#define PS_SM_NAME_MAX 255
/** Most slots a model row may carry. */
#define PS_SM_MAX_SLOTS 255

/**
 * DenseModel: rows [rows_begin, rows_begin + nrows) of a dense (or sparse) variable, all of
 * them, in order.
 */
struct ps_sm_dense_model {
	const char *var_name; /* NUL-terminated, <= PS_SM_NAME_MAX bytes; may be "" */
	uint64_t var_id;
	uint32_t width;	     /* floats per value, >= 1 */
	uint32_t nslots;     /* slots per row after the value, 0..PS_SM_MAX_SLOTS */
	uint64_t rows_begin; /* first row id */
	uint64_t nrows;	     /* may be 0 */
	const float *values; /* nrows x (1 + nslots) x width */
};

/** SparseModel: rows of a sparse (or dense) variable by id, in any order. */
struct ps_sm_sparse_model {
	const char *var_name;
	uint64_t var_id;
	uint32_t width;
	uint32_t nslots;
	size_t n;	     /* rows; may be 0 */
	const uint64_t *ids; /* n row ids */
	const float *values; /* n x (1 + nslots) x width */
};

/**
 * HashModel: rows of a hash variable by key, and the keys deleted. 64-bit variables use
 * @keys / @deleted, 128-bit ones @keys128 / @deleted128; the other pair must be NULL. A delta
 * applies deletions before rows, so a key both deleted and written in one model ends up present.
 */
struct ps_sm_hash_model {
	const char *var_name;
	uint64_t var_id;
	uint32_t width;
	uint32_t nslots;
	uint32_t key_bits; /* 64 or 128 */
	size_t n;
	const uint64_t *keys;		 /* key_bits 64: n keys */
	const struct ps_key128 *keys128; /* key_bits 128: n keys */
	const float *values;		 /* n x (1 + nslots) x width */
	size_t ndeleted;
	const uint64_t *deleted;	    /* key_bits 64 */
	const struct ps_key128 *deleted128; /* key_bits 128 */
};

/** Options of a writer, given to ops.open. */
struct ps_sm_writer_opts {
	/* Who writes (a server id), recorded by writers that can: file:// puts it in each delta. */
	uint64_t writer_id;
};

/**
 * The ops table of a streaming-model writer, one per URL scheme.
 *
 * Calls on one writer state come from one thread at a time (the manager's handle is not
 * thread-safe); open may be called from several threads at once for different writers, so
 * keep no unprotected global state. Every function returns 0 or a negative psplus code
 * (negative errno, PS_E*). Writes after a failed write or commit may be refused.
 *
 * ABI: @size is sizeof(struct ps_sm_writer_ops) as the writer was compiled; members are only
 * ever appended, and the host never calls a member at or past @size.
 */
struct ps_sm_writer_ops {
	uint32_t size;	/* sizeof(struct ps_sm_writer_ops) */
	uint32_t flags; /* 0; no flags are defined */
	/**
	 * Open a writer for @url ("scheme://rest"; @rest points past "://"). On failure fill
	 * @err with a message quoting the URL. *@state is handed to every other call.
	 */
	int (*open)(const char *url, const char *rest, const struct ps_sm_writer_opts *opts,
		    void **state, char *err, size_t errlen);
	/** WriteDenseModel / WriteSparseModel / WriteHashModel: add to the current delta. */
	int (*write_dense)(void *state, const struct ps_sm_dense_model *m);
	int (*write_sparse)(void *state, const struct ps_sm_sparse_model *m);
	int (*write_hash)(void *state, const struct ps_sm_hash_model *m);
	/** End the current delta: what was written since the last commit becomes visible. */
	int (*commit)(void *state);
	/** Free everything. Writes not committed are dropped. */
	void (*close)(void *state);
	/** The last error in words (may be NULL: the manager then uses ps_strerror()). */
	const char *(*errmsg)(void *state);
};

#ifdef __cplusplus
}
#endif

#endif
