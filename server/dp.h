/*
 * The server's data plane (module ps_server, files server/dp_*.c): the data-path threads that
 * serve pulls, pushes and declarations (common/dp_proto.h, docs/wire.md "Data plane") from
 * the variable parts they own.
 *
 * Threads. ps_dp_create() opens one transport dev (shared: memory registrations are per dev)
 * and starts `threads` data-path threads. Thread i owns one ps_tp_loop (its CQ or epoll set), a
 * listener on host:(port ? port + i : any) and every connection accepted there, its own shard
 * of every variable (ps_store parts), a store scratch, a registered pool for replies and one
 * for bounce copies. Nothing of a thread is touched by another: a row is only ever read or
 * written by the thread that owns it, so updates to it are serialised without a lock
 * (shared-nothing). The only shared state is the cluster version (an atomic the control
 * thread writes), the stop flag and the statistics counters (atomics the control thread
 * reads).
 *
 * Requests on a connection are answered in arrival order. When the transport refuses an
 * operation (-EAGAIN: no credit or send slot, or no free reply or bounce block), the request and
 * everything after it on that connection wait, holding their receive buffers (so the worker's
 * credits, not the server's memory, bound the queue), and are retried after the next poll.
 *
 * Zero copy. Pulls are answered with one ps_tp_write_imm() whose gather list points at the
 * rows in table memory (rdma: each chunk of row memory is registered once, when the part
 * creates it); pushes apply the gradients read in place from the receive buffer. Only the
 * snapshot flag, hash keys not admitted, and rows beyond the gather-list limit go through a
 * registered bounce buffer. docs/architecture.md, "Consistency of zero-copy pulls", says what
 * a pull may observe.
 *
 * Thread-safety: ps_dp_create/ps_dp_destroy are called by one thread (the server's main
 * thread); every other function here is thread-safe.
 */
#ifndef PS_SERVER_DP_H
#define PS_SERVER_DP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dp_proto.h"
#include "model_io/ckpt.h"
#include "model_io/sm.h"
#include "transport/transport.h"

struct ps_dp;

struct ps_dp_opts {
	const char *transport; /* "auto", "tcp" or "rdma" (ps_tp_dev_open) */
	const char *bind_addr; /* rdma: the address whose device to use; NULL/"": first active */
	const char *host;      /* listen address; NULL or "" : all (0.0.0.0) */
	uint16_t port;	       /* thread i listens on port + i; 0: any free port for each */
	uint32_t threads;      /* data-path threads, 1..256 */
	int numa_node;	       /* table memory and pools; -1: no binding */
	bool numa_dev;	       /* instead: the device's node, when it has one (--bind_cores) */
	/* Loop sizes (ps_tp_loop_opts); 0: the transport's defaults (64, 64 KiB, 128, 256). */
	uint32_t recv_depth, msg_size, send_depth, max_conns;
	/*
	 * 64 KiB bounce blocks per thread (registered). 0: 256 (16 MiB) where RLIMIT_MEMLOCK can
	 * be raised, else an eighth of the limit over the threads (at least 4). One pull may copy
	 * at most min(blocks, half the gather list) blocks of rows: a bigger snapshot pull is
	 * refused with -E2BIG.
	 */
	uint32_t bounce_blocks;
	size_t chunk_bytes; /* row memory per store chunk; 0: the store's default */
};

/**
 * ps_dp_create() - open the transport, build every thread's loop, listener and pools, and start
 * the threads. Requests are refused with PS_ENOT_READY until ps_dp_set_cluster_version() gave a
 * non-zero version.
 *
 * Returns 0, -EINVAL (bad opts, or port + threads - 1 > 65535), the transport's error
 * (PS_ENO_DEVICE, -EADDRINUSE, ...), -ENOMEM. Nothing is left behind on failure; the reason
 * is logged.
 */
int ps_dp_create(const struct ps_dp_opts *opts, struct ps_dp **out);

/**
 * ps_dp_destroy() - stop the threads (each finishes the request it is handling), close every
 * connection and loop, deregister and free every part and pool, close the dev. Accepts NULL.
 */
void ps_dp_destroy(struct ps_dp *dp);

/** ps_dp_threads() / ps_dp_port() - the thread count, and the port thread @shard listens on. */
uint32_t ps_dp_threads(const struct ps_dp *dp);
uint16_t ps_dp_port(const struct ps_dp *dp, uint32_t shard);

/** ps_dp_msg_size() - the largest request (header included) a thread accepts, in bytes. */
uint32_t ps_dp_msg_size(const struct ps_dp *dp);

/** ps_dp_dev_info() - what the transport dev is (for the start-up log). */
void ps_dp_dev_info(const struct ps_dp *dp, struct ps_tp_dev_info *info);

/**
 * ps_dp_set_cluster_version() - the version requests must carry (from RegisterResp and
 * HeartbeatResp). A change also drops every partly accumulated synchronous step (a restore
 * resets synchronisation state).
 */
void ps_dp_set_cluster_version(struct ps_dp *dp, uint64_t version);
uint64_t ps_dp_cluster_version(const struct ps_dp *dp);

/* Live counters, summed over the threads (approximate while they run). */
struct ps_dp_stats {
	uint64_t requests; /* requests handled (answered), failed ones included */
	uint64_t failed;   /* of which answered with a non-zero status */
	uint64_t tx_bytes; /* transport payload bytes sent / received (ps_tp_stats) */
	uint64_t rx_bytes;
	uint64_t bytes_copied; /* bytes the transport copied (0 on a zero-copy path) */
	uint64_t bounced;      /* row bytes the server copied into bounce buffers */
	uint64_t waits;	       /* requests that had to wait for the transport (-EAGAIN) */
	uint64_t table_bytes;  /* row memory of every part */
	uint32_t conns;	       /* connections open now */
};

void ps_dp_stats_get(const struct ps_dp *dp, struct ps_dp_stats *out);

/*
 * NIC counters for heartbeats: for an rdma dev, every file of
 *   <root>/class/infiniband/<dev>/ports/<port>/counters/ and .../hw_counters/
 * as "<dev>/<port>/<file>", and for a dev sitting on a netdev (RoCE, rxe) the netdev's
 *   <root>/class/net/<netdev>/statistics/{rx,tx}_{bytes,packets}
 * as "<netdev>/<file>". Raw values, units as the kernel defines them (port_xmit_data counts
 * 4-byte words). A tcp dev has none.
 */
typedef int (*ps_dp_counter_fn)(void *arg, const char *name, uint64_t value);

/**
 * ps_dp_nic_counters() - call @fn for each counter of the dev described by @info, reading
 * sysfs under @root (NULL: "/sys"). Unreadable files are skipped. Stops at the first non-zero
 * return of @fn and returns it; otherwise returns the number of counters reported.
 */
int ps_dp_nic_counters(const char *root, const struct ps_tp_dev_info *info, ps_dp_counter_fn fn,
		       void *arg);

/*
 * ---- checkpoints and streaming export (dp_ckpt.c) -------------------------------------------
 *
 * Called by the server's control side (server/srv_ckpt.c), never by a data-path thread. The
 * rules for who may touch what are at the top of dp_ckpt.c; in short: the save and export
 * functions read the threads' shards, so the data plane must be paused around them; the
 * stage functions build variables nobody serves yet, so they run while the threads serve.
 */

/**
 * ps_dp_pause() - make every thread hold its requests (unhandled, on their connections: none is
 * dropped) and wait until each acknowledged, up to @timeout_ms. Returns 0 or PS_ETIMEOUT (the
 * pause stays requested: call ps_dp_resume()).
 */
int ps_dp_pause(struct ps_dp *dp, uint32_t timeout_ms);

/** ps_dp_resume() - let the threads handle requests again (held ones first, in order). */
void ps_dp_resume(struct ps_dp *dp);

/** ps_dp_is_paused() - whether a pause is requested. */
bool ps_dp_is_paused(const struct ps_dp *dp);

/**
 * ps_dp_save_part() - write part [@begin, @end) of variable @var_id - the shards of every
 * thread - as one checkpoint part file in @dir, and fill @desc (the optimizer state is the
 * shard's with the largest step). Paused only; several parts may be written at once from
 * different threads. @cancel (may be NULL) stops it early (-ECANCELED).
 * Returns 0, PS_EUNKNOWN_VAR (a thread lacks the variable), PS_EOUT_OF_RANGE (it holds another
 * part), or the writer's error, with @err filled.
 */
int ps_dp_save_part(struct ps_dp *dp, const char *dir, uint32_t var_id, uint64_t begin,
		    uint64_t end, const _Atomic bool *cancel, struct ps_ckpt_part_desc *desc,
		    char *err, size_t errlen);

/**
 * ps_dp_stage_var() - stage variable @var_id on every thread for a restore: its shard of the
 * part @d describes (spec, part range, name, num_workers: 0 if unknown; shard fields are set
 * here), without rows yet. Not served until ps_dp_stage_commit(). -EEXIST when staged twice.
 * Until the commit or ps_dp_stage_drop(), idle threads poll every few milliseconds instead of
 * every 50, so that the commit's pause is acknowledged at once (200 wake-ups a second per
 * thread meanwhile).
 */
int ps_dp_stage_var(struct ps_dp *dp, uint32_t var_id, const struct ps_dp_declare *d, char *err,
		    size_t errlen);

/**
 * ps_dp_stage_create() - start the disk on every saved part of @cv (in @dir) overlapping the
 * staged part of @var_id (kernel readahead), and map the staged shards' row memory (not yet
 * faulted in). A restore calls it for every variable before it loads any: mapping memory takes
 * the process's mmap lock for writing, which the loaders' page population holds for reading, so
 * a mapping made while others load waits for them. Any thread; one call per variable at a time.
 * Returns 0, -ENOMEM, ... with @err filled.
 */
int ps_dp_stage_create(struct ps_dp *dp, uint32_t var_id, const char *dir,
		       const struct ps_ckpt_var *cv, char *err, size_t errlen);

/**
 * ps_dp_stage_load() - fill the staged shards of @var_id from the checkpoint in @dir (creating
 * them first, as ps_dp_stage_create(), if that was not called): every saved part of @cv
 * overlapping the staged part, read with the reader's range filter (hash keys go to the thread
 * their key hash names), and the optimizer state from ps_ckpt_var_state_for_range(). Each file
 * is read to its end, so its CRC was checked when this returns 0. A helper thread faults the
 * shards' memory in ahead of the copies (see dp_ckpt_load.c). Any thread; one call per variable
 * at a time. Returns 0 or the first error (PS_ECORRUPT with @err naming the file, -ENOENT,
 * -ENOMEM, -ECANCELED when @cancel was raised, ...).
 */
int ps_dp_stage_load(struct ps_dp *dp, uint32_t var_id, const char *dir,
		     const struct ps_ckpt_var *cv, const _Atomic bool *cancel, uint64_t *rows,
		     uint64_t *bytes, char *err, size_t errlen);

/** ps_dp_stage_drop() - free everything staged (an aborted restore). */
void ps_dp_stage_drop(struct ps_dp *dp);

/**
 * ps_dp_stage_commit() - switch to the staged variables: pause, adopt cluster version @version
 * (requests carrying another are refused from now on), replace every thread's variables by its
 * staged ones, wait until no pull write reads the old ones, resume. The old ones are retired,
 * not freed: the pause stays short, and the caller frees them with ps_dp_free_retired() once it
 * has answered. Returns 0, PS_ETIMEOUT (the threads did not pause: nothing changed) or -ENOMEM.
 */
int ps_dp_stage_commit(struct ps_dp *dp, uint64_t version, uint32_t timeout_ms);

/** ps_dp_free_retired() - free the variables restores replaced (those no pull still reads). */
void ps_dp_free_retired(struct ps_dp *dp);

/**
 * ps_dp_export() - streaming export: for every variable whose kind has a writer
 * (@kind_writer[kind] indexes @writers, -1: none), the hash keys deleted and the rows changed
 * since its last committed export, values with their optimizer slots, through the seed's
 * WriteDenseModel / WriteSparseModel / WriteHashModel. Paused only. Nothing is committed here:
 * the caller commits each writer, then reports with ps_dp_export_done(). Returns 0 or the first
 * error (@err names the variable); the other variables are still exported.
 */
int ps_dp_export(struct ps_dp *dp, struct ps_sm_writer *const *writers, const int kind_writer[4],
		 uint64_t *rows, uint64_t *deletes, char *err, size_t errlen);

/**
 * ps_dp_export_done() - writer @writer's delta was committed or not. Not committed: its
 * variables send every row at their next export, and their deletions again. Paused only.
 */
void ps_dp_export_done(struct ps_dp *dp, uint32_t writer, bool committed);

#endif
