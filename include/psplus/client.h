/*
 * psplus client library: what a training worker links.
 *
 * A worker creates one client (ps_client_create), which finds the scheduler through the kv path,
 * reads the cluster (servers, data-plane addresses, placement, cluster version) and connects to
 * every server's data-path threads over the transport (rdma when an active device exists, tcp
 * otherwise). It then declares variables and pulls and pushes them.
 *
 *	struct ps_client_opts o = ps_client_opts_default();
 *	o.kv_path = "file:///tmp/job.kv";
 *	o.worker_id = 0; o.num_workers = 1;
 *	struct ps_client *c;
 *	if (ps_client_create(&o, &c)) ...;
 *	struct ps_var_spec emb = {.kind = PS_VAR_HASH64, .width = 16,
 *				  .init = {.kind = PS_INIT_NORMAL, .stddev = 0.01f, .seed = 1},
 *				  .optim = ps_optimizer_defaults(PS_OPTIM_ADAGRAD)};
 *	uint32_t v;
 *	ps_client_declare(c, "emb", &emb, &v);
 *	ps_client_hash_pull(c, v, keys, n, rows);       // rows: n x 16 floats
 *	ps_client_hash_push(c, v, keys, n, grads);      // the server applies Adagrad
 *	ps_client_destroy(c);
 *
 * Errors: every function returns 0 or a negative code (include/psplus/error.h); ps_strerror()
 * gives the text and ps_client_last_error() the detailed message of the calling thread's last
 * failure (which variable, which server, which id). Nothing aborts on bad input. Bad input (an
 * unknown variable, a wrong kind or size, an id out of range) is refused before anything is
 * sent, so it changes no stored row anywhere; a failure on one server during a push (it died,
 * the call timed out) can leave the requests other servers already applied in place.
 *
 * Stale cluster versions (after a restore or a placement change) are handled inside: the
 * client re-reads the cluster and re-sends the requests that were refused (only those: the
 * others were applied), up to the call's timeout. docs/client.md has routing, consistency per
 * training mode and retries in detail.
 *
 * Threads: one client may be used by several threads at once (calls are serialised on an
 * internal lock per client; use one client per thread for parallel traffic). Handles
 * (struct ps_client, struct ps_client_buf) are owned by the caller and freed by the matching
 * destroy/unregister.
 */
#ifndef PSPLUS_CLIENT_H
#define PSPLUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>
#include <psplus/error.h>
#include <psplus/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ps_client;
struct ps_client_buf;

/** Training modes (see docs/client.md, "Consistency"). */
enum ps_sync_mode {
	PS_SYNC_ASYNC = 0,   /* Hogwild: pushes apply on arrival */
	PS_SYNC_BOUNDED = 1, /* a worker more than @staleness steps ahead of the slowest waits */
	PS_SYNC_SYNC = 2,    /* every step, gradients of all workers are summed, one update */
};

/*
 * Repeated ids in a pull (ps_client_opts.pull_dedupe). De-duplicating sends each distinct id
 * once and copies its row to the other positions: fewer rows on the wire and in the servers'
 * gathers, for a copy on the worker. It applies only when at least 1/8 of the ids repeat.
 */
enum ps_pull_dedupe {
	/* De-duplicate when the rows would not land in place anyway (@out not registered with
	 * ps_client_register_buffer(), so they go through the staging region): then it saves
	 * copies too. A registered @out keeps its zero-copy landing and every occurrence is sent. */
	PS_PULL_DEDUPE_AUTO = 0,
	PS_PULL_DEDUPE_ALWAYS = 1, /* also into registered memory (a slow or shared network) */
	PS_PULL_DEDUPE_NEVER = 2,  /* every occurrence sent, each row written by its server */
};

struct ps_client_opts {
	const char *kv_path;		 /* the scheduler's kv path (borrowed during create) */
	const char *transport;		 /* "auto" (default), "tcp" or "rdma" */
	uint32_t worker_id;		 /* 0-based, < num_workers */
	uint32_t num_workers;		 /* workers in the job (>= 1) */
	enum ps_sync_mode sync_mode;	 /* all workers of a job must agree */
	uint32_t staleness;		 /* PS_SYNC_BOUNDED: steps of slack */
	uint32_t timeout_ms;		 /* bound on every call, retries included; 0: 30000 */
	uint32_t max_inflight;		 /* requests in flight per server thread; 0: 16 */
	const char *auth_token_file;	 /* the cluster's shared secret, or NULL */
	enum ps_pull_dedupe pull_dedupe; /* repeated ids of a pull: below */
};

/** ps_client_opts_default() - the defaults above, with kv_path NULL. */
PS_EXPORT struct ps_client_opts ps_client_opts_default(void);

/**
 * ps_client_create() - connect to the cluster named by opts->kv_path.
 *
 * Waits (up to timeout_ms) for the kv entry and for every server to be registered. Returns 0,
 * -EINVAL (bad opts), PS_EBAD_URL, PS_ETIMEOUT, -ECONNREFUSED, -EACCES (token refused) or
 * the transport's error. Nothing is left behind on failure.
 */
PS_EXPORT int ps_client_create(const struct ps_client_opts *opts, struct ps_client **out);

/**
 * ps_client_destroy() - close every connection and free the client. Accepts NULL. Buffers still
 * registered are unregistered (their handles become invalid; the memory stays the caller's).
 */
PS_EXPORT void ps_client_destroy(struct ps_client *c);

/** ps_client_last_error() - the message of this thread's last failed call ("" if none). */
PS_EXPORT const char *ps_client_last_error(void);

/*
 * ---- variables -----------------------------------------------------------------------------
 */

/**
 * ps_client_declare() - declare (or look up) the variable @name and get its id.
 *
 * The first declaration creates the variable: the scheduler places its parts on servers under
 * the budgets, and the servers allocate and initialise them. Later declarations of the same
 * name (by any worker) must carry an identical spec and return the same id; a different spec
 * is -EEXIST. A spec that cannot be placed is PS_EOVER_BUDGET (the message names the budget).
 */
PS_EXPORT int ps_client_declare(struct ps_client *c, const char *name,
				const struct ps_var_spec *spec, uint32_t *var_id);

/**
 * Load hints for the placementer: what the whole job (all workers together) does with a
 * variable. Zeros mean "unknown" (no network or query load is estimated; a hash variable
 * without expected_keys is estimated at no memory). Hints only steer placement; they are not
 * part of the spec (re-declarations need not repeat them; the first declaration's are kept).
 */
struct ps_var_load {
	double rows_read_per_step;   /* rows pulled per job step */
	double rows_pushed_per_step; /* rows pushed per job step */
	double steps_per_s;	     /* job steps per second (0: the scheduler's default, 10) */
	uint64_t expected_keys;	     /* hash variables: expected number of distinct keys */
};

/**
 * ps_client_declare_load() - ps_client_declare() with load hints (@load may be NULL).
 * Names are 1 to 63 bytes.
 */
PS_EXPORT int ps_client_declare_load(struct ps_client *c, const char *name,
				     const struct ps_var_spec *spec, const struct ps_var_load *load,
				     uint32_t *var_id);

/*
 * ---- registered buffers ----------------------------------------------------------------------
 *
 * Pulls land, and pushes are read, straight from registered memory on the rdma transport
 * (zero copy). Memory passed to pull/push that is not registered works too, through the
 * library's own registered staging buffers (one copy).
 */

/**
 * ps_client_register_buffer() - register [addr, addr+len) once for zero-copy pulls and pushes.
 * The memory must stay valid and not move until ps_client_unregister_buffer().
 */
PS_EXPORT int ps_client_register_buffer(struct ps_client *c, void *addr, size_t len,
					struct ps_client_buf **out);

/** ps_client_unregister_buffer() - undo the registration; no call may still use it. NULL ok. */
PS_EXPORT void ps_client_unregister_buffer(struct ps_client_buf *b);

/*
 * ---- data ------------------------------------------------------------------------------------
 *
 * Widths are checked against the declaration; ids against [0, rows). Ids and keys may repeat
 * within a call: a pull returns the row once per occurrence (each distinct id may be pulled once
 * and its row copied to its other positions: enum ps_pull_dedupe), a push
 * sums the gradients of repeated ids before the optimizer runs (TensorFlow's sparse-apply rule).
 *
 * PS_SYNC_SYNC: each worker pushes each variable at most once per step (a second push of the
 * step is -EALREADY), and the push goes to every server thread holding the variable (an empty
 * one where none of its ids live), in one request per thread: a push needing more than one
 * request to a thread (more than about msg_size bytes) is -EMSGSIZE.
 */

/** ps_client_dense_pull() - the whole dense variable into @out (rows x width floats). */
PS_EXPORT int ps_client_dense_pull(struct ps_client *c, uint32_t var_id, float *out,
				   size_t nfloats);

/** ps_client_dense_push() - a gradient for the whole dense variable. */
PS_EXPORT int ps_client_dense_push(struct ps_client *c, uint32_t var_id, const float *grad,
				   size_t nfloats);

/** ps_client_sparse_pull() - rows @ids[0..n) of a sparse variable into @out (n x width). */
PS_EXPORT int ps_client_sparse_pull(struct ps_client *c, uint32_t var_id, const uint64_t *ids,
				    size_t n, float *out);

/** ps_client_sparse_push() - gradients (n x width) for rows @ids. */
PS_EXPORT int ps_client_sparse_push(struct ps_client *c, uint32_t var_id, const uint64_t *ids,
				    size_t n, const float *grads);

/** ps_client_hash_pull() / _push() - as sparse, for PS_VAR_HASH64 keys. */
PS_EXPORT int ps_client_hash_pull(struct ps_client *c, uint32_t var_id, const uint64_t *keys,
				  size_t n, float *out);
PS_EXPORT int ps_client_hash_push(struct ps_client *c, uint32_t var_id, const uint64_t *keys,
				  size_t n, const float *grads);

/** ps_client_hash128_pull() / _push() - as sparse, for PS_VAR_HASH128 keys. */
PS_EXPORT int ps_client_hash128_pull(struct ps_client *c, uint32_t var_id,
				     const struct ps_key128 *keys, size_t n, float *out);
PS_EXPORT int ps_client_hash128_push(struct ps_client *c, uint32_t var_id,
				     const struct ps_key128 *keys, size_t n, const float *grads);

/**
 * ps_client_hash_delete() / ps_client_hash128_delete() - remove @keys from a hash variable
 * (keys without a row are skipped). A later pull or push of a removed key creates it afresh
 * (initializer value, fresh optimizer slots). Each deletion is recorded for the next streaming
 * export, so consumers see it. Like a push, a failure on one server can leave the deletions
 * other servers applied in place.
 */
PS_EXPORT int ps_client_hash_delete(struct ps_client *c, uint32_t var_id, const uint64_t *keys,
				    size_t n);
PS_EXPORT int ps_client_hash128_delete(struct ps_client *c, uint32_t var_id,
				       const struct ps_key128 *keys, size_t n);

/*
 * ---- synchronisation -------------------------------------------------------------------------
 */

/**
 * ps_client_step_end() - this worker finished step @step (0, 1, 2, ...): its pushes for the step
 * are done.
 *
 * PS_SYNC_ASYNC: returns at once. PS_SYNC_BOUNDED: returns when no worker is more than
 * staleness steps behind @step. PS_SYNC_SYNC: returns when every worker ended @step and the
 * summed update of the step is applied, so the next pulls see it. PS_ETIMEOUT after the
 * client's timeout (e.g. a worker died). Pushes made after it returned belong to step @step + 1.
 */
PS_EXPORT int ps_client_step_end(struct ps_client *c, uint64_t step);

/**
 * ps_client_barrier() - wait until every worker reached the same barrier. Barriers are numbered
 * by call (the n-th call of each worker meets the n-th of the others), so every worker must make
 * the same calls; one that timed out has still used its number.
 */
PS_EXPORT int ps_client_barrier(struct ps_client *c);

/*
 * ---- checkpoints and streaming models --------------------------------------------------------
 *
 * Run in the scheduler's main loop, one at a time for the whole cluster: while one runs, any
 * other request (from any client or psplus-admin) fails at once with PS_EOP_IN_PROGRESS. Each
 * call uses a control connection of its own, so other threads may go on using the client (and
 * the calling worker's own pushes are what a save pauses). The scheduler needs a checkpoint
 * root (-cp file:///path) for save and restore. docs/formats.md, "Save and restore in a
 * cluster", has the protocol; docs/client.md the consistency a checkpoint gives.
 *
 * @timeout_ms bounds the wait for the answer (0: the client's timeout). A timed-out call does
 * not cancel the operation, which the scheduler finishes on its own.
 */

/** What a model operation did (may be passed as NULL). */
struct ps_model_op_info {
	char name[129];		  /* the checkpoint saved or restored */
	uint64_t cluster_version; /* after the operation (a restore changes it) */
	uint64_t rows;		  /* rows saved / restored / exported */
	uint64_t bytes;		  /* save: bytes written; restore: bytes read; export: deletions */
	uint64_t elapsed_us;	  /* time the operation took in the scheduler */
	uint64_t pause_us;	  /* save: longest time a server held pushes */
};

/**
 * ps_client_save() - save the whole model as checkpoint @name (NULL or "": "ckpt-<unix ms>"):
 * a point-in-time copy of every variable, rows and optimizer slots and state, on every server.
 * Returns 0 once the checkpoint is complete and listed (ps_ckpt index), PS_EOP_IN_PROGRESS,
 * -EEXIST (name taken), -ENOTSUP (no -cp), PS_ENOT_READY (a server is missing), or the failure
 * of a server (the previous checkpoint stays the latest); ps_client_last_error() says which.
 */
PS_EXPORT int ps_client_save(struct ps_client *c, const char *name, uint32_t timeout_ms);
PS_EXPORT int ps_client_save_info(struct ps_client *c, const char *name, uint32_t timeout_ms,
				  struct ps_model_op_info *info);

/**
 * ps_client_restore() - replace the whole model by checkpoint @name, or "latest", onto the
 * current servers (their number may differ from the save's). Every file is read and verified
 * before anything is replaced: a damaged checkpoint is refused (PS_ECORRUPT, the message names
 * the file) and the model stays as it was. On success the cluster version changes: requests of
 * every client on the old version are refused and retried on the restored model
 * (docs/client.md), held step_end/barrier calls fail with PS_ESTALE_VERSION, and steps start
 * again. Variables not in the checkpoint are gone.
 */
PS_EXPORT int ps_client_restore(struct ps_client *c, const char *name, uint32_t timeout_ms);
PS_EXPORT int ps_client_restore_info(struct ps_client *c, const char *name, uint32_t timeout_ms,
				     struct ps_model_op_info *info);

/**
 * ps_client_export_streaming() - every server writes the rows changed (and the hash keys
 * deleted) since its last export through the streaming-model writers of its -smdense /
 * -smsparse / -smhash URLs (the scheduler's when a server has none): one delta per server and
 * URL. Rows carry their optimizer slots, so `psplus-model apply-deltas` can bring a checkpoint
 * up to date.
 */
PS_EXPORT int ps_client_export_streaming(struct ps_client *c, uint32_t timeout_ms);
PS_EXPORT int ps_client_export_streaming_info(struct ps_client *c, uint32_t timeout_ms,
					      struct ps_model_op_info *info);

/*
 * ---- statistics ------------------------------------------------------------------------------
 */
struct ps_client_stats {
	uint64_t requests;	   /* data-plane requests sent */
	uint64_t retries;	   /* requests retried after a stale cluster version */
	uint64_t bytes_pulled;	   /* row bytes received */
	uint64_t bytes_pushed;	   /* gradient bytes sent */
	uint64_t bytes_staged;	   /* bytes copied through staging (unregistered user memory) */
	uint64_t transport_copied; /* payload bytes the transport copied (0: zero copy) */
	char transport[8];	   /* "rdma" or "tcp" */
	uint64_t pull_dups;	   /* repeated ids of pulls not sent: rows copied from their first
				      occurrence (enum ps_pull_dedupe) */
};

PS_EXPORT void ps_client_stats_get(struct ps_client *c, struct ps_client_stats *out);

#ifdef __cplusplus
}
#endif

#endif
