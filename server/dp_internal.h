/*
 * Inside the data plane (server/dp_*.c):
 *   dp_thread.c  ps_dp create/destroy, the thread loop, connections, the per-connection
 *                request queue, completions, replies and the bounce allocator
 *   dp_var.c     the per-thread variable table: DECLARE, parts, chunk registration, MR lookup
 *   dp_handle.c  one request: decode, validate, pull (gather + write_imm), push
 *   dp_sync.c    synchronous steps: accumulate the workers' pushes, apply once
 *   dp_stats.c   counters, NIC counters from sysfs
 *   dp_ckpt.c    checkpoints and streaming export: pause/resume, saving a part, restoring into
 *                staged parts and switching to them, exporting changed rows
 * Everything in struct dp_thread belongs to that thread, except the atomics marked shared, and
 * except while the data plane is paused (ps_dp_pause): then the threads touch no variable and
 * the checkpoint code (dp_ckpt.c) may read and export every part from other threads.
 */
#ifndef PS_SERVER_DP_INTERNAL_H
#define PS_SERVER_DP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dp_proto.h"
#include "server/dp.h"
#include "server/store.h"
#include "transport/tp_pool.h"
#include "transport/transport.h"

#define DP_LOG "dp"

#define DP_BOUNCE_BLOCK	  (64u << 10) /* bytes per bounce block, header included */
#define DP_BOUNCE_BLOCKS  256u	      /* default blocks per thread (16 MiB), memlock allowing */
#define DP_REPLY_BLOCKS	  1024u	      /* reply blocks per thread (64 bytes each) */
#define DP_POLL_BATCH	  32	      /* events per ps_tp_poll */
#define DP_IDLE_POLL_MS	  50	      /* poll timeout when idle: bounds the stop latency */
#define DP_GATHER_MAX	  4096u	      /* longest gather list we build (rdma) */
#define DP_MAX_ORPHANS	  16	      /* accepted connections we could not take, closed later */
#define DP_PAUSED_POLL_MS 5	      /* poll timeout while paused (or a pause is coming) */

/*
 * Header at the start of every reply and bounce block. A block that is the ctx of a
 * transport operation (a reply, or the first block of a pull's bounce chain) sits on its
 * connection's list of operations in flight, so a connection we close ourselves (which gets
 * no more completions) can give its blocks back. The payload starts at DP_BLK_HDR.
 */
enum dp_blk_type {
	DP_BLK_REPLY = 1,
	DP_BLK_BOUNCE = 2,
	/* A reply-pool block used only as the ctx of a pull written straight from table memory,
	 * so that its completion says when the rows are no longer read (pulls_inflight). */
	DP_BLK_PULL = 3,
};

struct dp_conn;

struct dp_blk {
	struct dp_blk *chain;	    /* bounce: the next block of the same pull */
	struct dp_blk *prev, *next; /* the connection's in-flight list (chain heads only) */
	struct dp_conn *conn;
	uint32_t type;
	uint32_t nblocks; /* bounce head: blocks in the chain */
};
#define DP_BLK_HDR 40u
_Static_assert(sizeof(struct dp_blk) <= DP_BLK_HDR, "block header fits its 40 bytes");
#define DP_REPLY_BLOCK (DP_BLK_HDR + PS_DP_REPLY_BYTES) /* = 64 */

/* A request waiting on its connection, holding its receive buffer. */
struct dp_pend {
	void *buf;
	uint32_t len;
	bool answered;	      /* handled; only the reply remains to be sent */
	int status;	      /* answered: the reply's status */
	struct ps_dp_req req; /* answered: the decoded header */
	bool delete_wait;     /* a DELETE_HASH waiting for pulls in flight (deletes_waiting) */
};

struct dp_conn {
	struct ps_tp_conn *tc;
	struct dp_thread *t;
	struct dp_conn *prev, *next; /* the thread's connections */
	struct dp_conn *pnext;	     /* the thread's list of connections with waiting requests */
	bool on_plist;
	bool dead;	      /* closed at the end of the current event batch */
	struct dp_pend *pend; /* ring of waiting requests, recv_depth entries */
	uint32_t pend_head, pend_n, pend_cap;
	struct dp_blk *inflight; /* operations with a ctx not yet completed */
	char peer[64];
};

/* A chunk of row memory and its registration (NULL on tcp, which needs none). */
struct dp_chunk {
	uintptr_t addr;
	size_t len;
	struct ps_tp_mr *mr;
};

struct dp_sync; /* dp_sync.c */

/* One variable's shard on this thread. */
struct dp_var {
	uint32_t var_id;
	uint8_t decl[PS_DP_DECLARE_BYTES]; /* the canonical DECLARE bytes (idempotency) */
	struct ps_var_spec spec;
	enum ps_var_kind kind;
	uint32_t width;
	uint32_t num_workers; /* 0: restored, not declared yet (the first DECLARE sets it) */
	uint64_t part_begin, part_end; /* the placement part this shard belongs to */
	uint64_t begin, end;	       /* rows (dense/sparse) or buckets (hash) this thread holds */
	struct ps_store_part *part;    /* NULL: this thread's row range is empty */
	struct dp_thread *t;
	struct dp_chunk *chunks; /* sorted by address */
	uint32_t nchunks, chunks_cap;
	size_t table_bytes;
	struct dp_sync *sync; /* created by the first synchronous push */
	/* Streaming export (dp_ckpt.c, only while paused): after a failed write, the next export
	 * sends every row, and the deletions not yet committed are sent again. */
	bool export_full;
	uint64_t *pend_del; /* keys (hash128: lo, hi pairs) deleted, not yet in a committed delta */
	size_t npend_del, pend_del_cap;
	uint32_t export_writer; /* index of the writer its last export went to */
};

/* Variables of a thread: open addressing on var_id, power-of-two capacity, load <= 1/2. */
struct dp_vartab {
	struct dp_var **tab;
	uint32_t cap, n;
};

struct dp_thread {
	struct ps_dp *dp;
	uint32_t idx;
	pthread_t tid;
	bool started;
	struct ps_tp_loop *loop;
	struct ps_tp_listener *lst;
	uint16_t port;
	struct ps_tp_pool *replies; /* DP_REPLY_BLOCK-byte blocks */
	struct ps_tp_pool *bounce;  /* DP_BOUNCE_BLOCK-byte blocks */
	uint32_t bounce_nblocks;
	uint32_t bounce_max_pull; /* most bounce blocks one pull may take */
	uint32_t gather_max;	  /* longest gather list of one write_imm */
	uint32_t gather_zc;	  /* gather entries before the rest of a pull is copied */

	/* The variables served, and those a restore is loading (switched in by its commit). */
	struct dp_vartab vars;
	struct dp_vartab stage;
	bool paused;		  /* this thread's view of dp->pause: holds every request */
	uint32_t deletes_waiting; /* DELETE_HASH requests waiting for pulls_inflight == 0 */

	/* Working memory, sized at start (and grown by DECLARE / sync accumulation only). */
	struct ps_store_scratch *scratch;
	size_t scratch_batch;
	uint32_t scratch_width;
	const float **addrs;   /* [scratch_batch] */
	uint64_t *ids;	       /* [scratch_batch]: dense row ids */
	float *row_tmp;	       /* [scratch_width] */
	struct ps_tp_sge *sgl; /* [gather_max] */

	struct dp_conn *conns;
	struct ps_tp_conn *orphans[DP_MAX_ORPHANS]; /* to close at the end of the batch */
	uint32_t norphans;
	struct dp_conn *plist; /* connections with waiting requests, FIFO by first wait */
	struct dp_conn **plist_tail;
	uint64_t seen_version; /* the cluster version this thread last acted on */

	/* Shared with the control thread (relaxed atomics, read for stats). */
	_Atomic uint64_t n_requests, n_failed, n_bounced, n_table_bytes, n_waits;
	_Atomic uint32_t n_conns;
	/* Shared: set (release) once the thread holds requests after dp->pause was raised. */
	_Atomic bool paused_ack;
	/* Shared: pull writes posted and not completed, i.e. gather lists that may still read
	 * row memory. Rows are freed (hash delete, restore) only when it is 0. */
	_Atomic uint32_t pulls_inflight;
};

struct ps_dp {
	struct ps_tp_dev *dev;
	struct ps_tp_dev_info info;
	bool reg_rows; /* register row chunks (rdma); tcp gathers from any memory */
	struct ps_dp_opts opts;
	char host[128];
	uint32_t msg_size, recv_depth, send_depth;
	uint32_t nthreads;
	struct dp_thread *threads;
	_Atomic uint64_t cluster_version;
	_Atomic bool stop;
	_Atomic bool pause; /* ps_dp_pause(): every thread holds its requests */
	/* A pause is coming (variables are staged: the commit pauses), so idle threads poll
	 * with DP_PAUSED_POLL_MS, not DP_IDLE_POLL_MS, and acknowledge it within milliseconds. */
	_Atomic bool pause_soon;
	/*
	 * Variable tables a restore replaced (control thread only): the first nfreeable are
	 * drained and freed by ps_dp_free_retired(); the others may still be read by pull writes
	 * that never completed, and are freed at destroy.
	 */
	struct dp_vartab *retired;
	uint32_t nretired, nfreeable;
};

/* ---- dp_thread.c ------------------------------------------------------------------------ */

/** dp_reply() - queue a reply; 0, -EAGAIN (retry later) or the connection's error. */
int dp_reply(struct dp_conn *c, const struct ps_dp_req *req, int status);

/** Bounce writer: appends bytes to a chain of bounce blocks and to the gather list. */
struct dp_bounce {
	struct dp_thread *t;
	struct dp_blk *head, *cur;
	uint32_t off; /* bytes used in cur's payload */
	uint32_t nblocks;
	uint64_t bytes;
};

/* Payload bytes a bounce block holds. */
#define DP_BOUNCE_DATA (DP_BOUNCE_BLOCK - DP_BLK_HDR)

/**
 * dp_bounce_put() - copy @len bytes from @src to the chain, appending (or extending) entries of
 * @sgl (*nsge grows). 0, or -EAGAIN when no block is free.
 */
int dp_bounce_put(struct dp_bounce *b, const void *src, uint32_t len, struct ps_tp_sge *sgl,
		  uint32_t *nsge);
/** dp_bounce_release() - give back every block of an unsent chain. */
void dp_bounce_release(struct dp_bounce *b);
/** dp_inflight_add() - put a chain head / reply block on its connection's in-flight list. */
void dp_inflight_add(struct dp_conn *c, struct dp_blk *b);

/* ---- dp_var.c --------------------------------------------------------------------------- */

struct dp_var *dp_var_find(const struct dp_thread *t, uint32_t var_id);
struct dp_var *dp_vartab_find(const struct dp_vartab *tab, uint32_t var_id);
int dp_vartab_insert(struct dp_vartab *tab, struct dp_var *v);
/** dp_vartab_free() - free every variable of @tab (deregistering its rows) and the table. */
void dp_vartab_free(struct dp_vartab *tab);
/** dp_var_free() - one variable: its sync state, registrations, part. Accepts NULL. */
void dp_var_free(struct dp_var *v);
/**
 * dp_var_build() - a variable of thread @t from a decoded DECLARE @d (its shard of the part),
 * validated; with @create, its store part too (hash: room for @hash_rows rows). Not inserted
 * anywhere. 0, -EINVAL, -ENOMEM or the store's error.
 */
int dp_var_build(struct dp_thread *t, uint32_t var_id, const struct ps_dp_declare *d, bool create,
		 uint64_t hash_rows, struct dp_var **out);
/**
 * dp_var_create_part() - the store part of a built variable (no-op for an empty shard).
 * @no_init: dense/sparse rows left zero, the caller loads every one (a restore).
 */
int dp_var_create_part(struct dp_var *v, uint64_t hash_rows, bool no_init);
/** dp_declare() - the DECLARE handler: 0, -EEXIST, -EINVAL, -ENOMEM, a registration error. */
int dp_declare(struct dp_thread *t, const struct ps_dp_req *req, const uint8_t *payload,
	       uint32_t len);
/** dp_var_mr() - the registration holding [addr, addr+len) of @v's rows (NULL on tcp). */
const struct ps_tp_mr *dp_var_mr(const struct dp_var *v, const void *addr);
/** dp_vars_destroy() - deregister and free every variable of the thread (served and staged). */
void dp_vars_destroy(struct dp_thread *t);
/** dp_scratch_ensure() - working memory for @batch ids of @width floats; 0 or -ENOMEM. */
int dp_scratch_ensure(struct dp_thread *t, size_t batch, uint32_t width);

/* ---- dp_handle.c ------------------------------------------------------------------------ */

/*
 * dp_handle() - handle one received message. Returns:
 *   0            done: answered (reply or write queued); the buffer was released
 *   -EAGAIN      nothing sent, retry the whole request later (pulls; nothing changed), or
 *                *answered set: the request took effect, only the reply (status in *status,
 *                header in *req) is to be retried
 *   PS_EBAD_MESSAGE  not even a header: close the connection
 *   other        the connection is broken (PS_EPEER_LOST): drop the request
 */
int dp_handle(struct dp_conn *c, void *buf, uint32_t len, struct dp_pend *out);

/** Routing checks shared with dp_sync.c: 0 or PS_EOUT_OF_RANGE. */
int dp_check_ids(const struct dp_var *v, const uint64_t *ids, uint32_t n);
int dp_check_keys(const struct dp_var *v, const uint64_t *keys, uint32_t n, bool key128);

/* ---- dp_ckpt.c, dp_ckpt_load.c ---------------------------------------------------------- */

/** dp_graveyard_free() - every retired variable table (at destroy). */
void dp_graveyard_free(struct ps_dp *dp);

/* How often (rows) a long checkpoint loop looks at its cancel flag. */
#define DP_CANCEL_EVERY 4096u

/** dp_cancelled() - has the job's cancel flag (may be NULL) been raised? */
static inline bool dp_cancelled(const _Atomic bool *cancel)
{
	return cancel && atomic_load_explicit(cancel, memory_order_relaxed);
}

/** dp_var_nslots() - optimizer slots per row of @v. */
static inline uint32_t dp_var_nslots(const struct dp_var *v)
{
	return ps_optim_slot_count(v->spec.optim.kind);
}

/* ---- dp_sync.c -------------------------------------------------------------------------- */

/**
 * dp_sync_push() - a PS_DP_F_SYNC push, already validated (range, width, lengths): accumulate
 * it, and apply the step when it completes the set of workers. 0 or the reply's status
 * (-EALREADY, -EBUSY, PS_EOUT_OF_RANGE, -EINVAL, -ENOMEM, the apply's error); on failure
 * nothing was accumulated and no row changed.
 */
int dp_sync_push(struct dp_thread *t, struct dp_var *v, const struct ps_dp_req *req,
		 const void *keys, const float *grads);
void dp_sync_reset(struct dp_var *v);
void dp_sync_destroy(struct dp_var *v);

#endif
