/*
 * Client internals (module ps_client), shared by:
 *   client.c        create/destroy, options, registered buffers, errors, stats
 *   client_ctl.c    the control connection to the scheduler: kv lookup, ClusterInfo (servers,
 *                   placement, version), DeclareReq, StepReq, BarrierReq
 *   client_conn.c   the data-plane endpoints: the destination table built from ClusterInfo,
 *                   connections, per-call scratch
 *   client_dev.c    transport devs (one per local RDMA device the servers are reached
 *                   through), their loops, request pools, the staging region, registrations
 *   client_dp.c     running one call's requests: windows, sends, completions, timeouts
 *   client_ops.c    the public calls: declare, pulls, pushes, hash deletions, step_end, barrier
 *   client_model.c  save, restore and streaming export requests (the scheduler's main loop)
 *   client_route.c  routing, grouping, splitting (pure; client_route.h)
 *
 * Threads: every public call takes c->lock for its whole duration, so everything below is
 * used by one thread at a time; the transport loop is owned by whichever thread holds the lock.
 */
#ifndef PS_CLIENT_INTERNAL_H
#define PS_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <psplus/client.h>

#include "client/client_route.h"
#include "common/ctl.h"
#include "common/dp_proto.h"
#include "common/kv.h"
#include "common/mem.h"
#include "scheduler/placement.h"
#include "transport/tp_pool.h"
#include "transport/transport.h"

#define CLI_LOG "client"

#define CLI_DEF_TIMEOUT_MS 30000u
#define CLI_DEF_INFLIGHT   16u
/* Largest window a caller may ask for: bounded by the receive buffers we post per connection. */
#define CLI_MAX_INFLIGHT 1024u
/* Request slots (and registered request blocks) per client, whatever the cluster size... */
#define CLI_MAX_SLOTS 256u
/* ...and at least, whatever the memlock limit. */
#define CLI_MIN_SLOTS 4u
/* The transport's default message size, assumed for servers that announce none. */
#define CLI_DEF_MSG_SIZE (64u << 10)
/*
 * Rows one pull request asks for. Results are one-sided writes, not bounded by the message
 * size, but a server thread writes at most about a thousand rows straight from table memory
 * (its transport's gather list) and copies the rest through a bounce budget of its own (at
 * least 256 KiB per pull on a default memlock limit; docs/wire.md, "Server behaviour"). So a
 * request asks for CLI_PULL_ZC_ROWS rows plus what CLI_PULL_BOUNCE bytes hold - everything
 * through the budget when the server copies every row (hash admission) - and halves that for a
 * destination that still answers -E2BIG.
 */
#define CLI_PULL_ZC_ROWS   1000u
#define CLI_PULL_BOUNCE	   (128u << 10)
#define CLI_MAX_PULL_BYTES (4u << 20) /* and never more result than this per request */
/* Initial size of the registered staging region for pull results (grows to the largest call). */
#define CLI_STAGE_MIN (1u << 20)
/* Longest variable name (the DECLARE payload's name[64], NUL included). */
#define CLI_NAME_MAX 63u
/* Pause between ClusterInfo polls while waiting for servers to register. */
#define CLI_POLL_MS 50
/* Connect timeout per data-plane endpoint (bounded by the call's timeout too). */
#define CLI_CONNECT_MS 5000u
/* Most transport devs (local RDMA devices the servers are reached through) per client. */
#define CLI_MAX_DEVS 8u

/* A request slot's (and its chunk's) progress. */
enum cli_chunk_state {
	CH_QUEUED = 0, /* not sent yet */
	CH_SENT,       /* sent, answer pending */
	CH_DONE,       /* answered (status in the chunk) */
	CH_RETRY,      /* answered PS_ESTALE_VERSION, or -E2BIG for a pull that can be split */
};

/* One server as ClusterInfo describes it. */
struct cli_server {
	bool live;		    /* in the last ClusterInfo */
	char host[PS_URL_HOST_MAX]; /* data-plane address */
	char transport[16];	    /* what it announced ("tcp", "rdma", "auto") */
	uint32_t nshards;	    /* data-path threads, >= 1 */
	uint16_t *ports;	    /* [nshards] */
	uint32_t msg_size;	    /* largest request it accepts */
	uint32_t dest0;		    /* index of its shard 0 in c->dests */
};

/*
 * One transport dev with its loop. rdma_cm runs a connection over the device that owns the
 * route to the peer, so a worker reaching servers through several local RDMA devices (a
 * multi-rail host; one soft-RoCE device per server in the test guest) needs one dev per device.
 * tcp needs one. Memory the requests use is registered on every dev.
 */
struct cli_dev {
	struct ps_tp_dev *dev;
	struct ps_tp_loop *loop;
	struct ps_tp_pool *pool;   /* request blocks */
	struct ps_tp_mr *stage_mr; /* the staging region's registration here */
	char local[64];		   /* the local address whose device this is; "" for tcp */
};

/* One (server, shard) data-plane endpoint. */
struct cli_dest {
	uint32_t server, shard;
	uint32_t dev;		 /* index in c->devs: the local device its route uses */
	struct ps_tp_conn *conn; /* NULL: not connected (connected on first use) */
	uint32_t inflight;	 /* requests sent and not answered */
	uint32_t max_req;	 /* largest request to it, bytes (header included) */
	uint32_t next, end;	 /* this call's chunks for it: corder[next .. end) */
	uint32_t pull_rows;	 /* learnt from -E2BIG: rows per pull request it takes (0: ?) */
};

/* A request in flight: its registered block holds the header and any staged payload. */
struct cli_slot {
	uint32_t req_id; /* echoed by the server; 0 when the slot is free */
	uint32_t chunk;	 /* index in the call's chunk array */
	uint32_t dest;
	uint32_t dev;	/* the dev whose pool the block came from */
	bool send_done; /* the send completed (the block may be reused once answered too) */
	bool answered;	/* reply or write_imm seen */
	uint8_t *blk;	/* from c->devs[dev].pool */
};

/* A variable this client declared. */
struct cli_var {
	uint32_t id;
	char name[CLI_NAME_MAX + 1];
	struct ps_var_spec spec;
};

struct ps_client_buf {
	struct ps_client_buf *next;
	struct ps_client *c;
	uint8_t *addr;
	size_t len;
	struct ps_tp_mr *mr[CLI_MAX_DEVS]; /* one registration per dev */
};

/* What one data-plane call sends (client_dp.c runs it). */
struct cli_call {
	uint8_t op;	/* enum ps_dp_op */
	uint16_t flags; /* enum ps_dp_flags */
	const struct cli_var *var;
	uint32_t step;
	uint32_t row_bytes; /* width * 4 */
	uint32_t key_bytes; /* 8 or 16; 0 for dense */
	const void *keys;   /* caller's ids/keys (sparse, hash) */
	const float *grads; /* push: caller's gradients (rows, or the dense tensor) */
	float *out;	    /* pull: the caller's result */
	const struct ps_client_buf *kbuf, *gbuf, *obuf; /* registrations covering them */
	const uint32_t *order;				/* positions grouped by destination */
	struct cli_chunk *chunks;
	uint32_t nchunks;
	const struct ps_dp_declare *decl; /* DECLARE: payloads, one per chunk */
	/* outcome */
	uint32_t nstale; /* chunks refused with PS_ESTALE_VERSION */
	uint32_t nretry; /* chunks to send again (CH_RETRY): stale ones and split pulls */
	int status;	 /* first other failure, or 0 */
	uint32_t failed; /* its chunk */
	bool stale_seen; /* a round of this call was refused for a stale version */
};

/* Pull de-duplication scratch (client_dedupe.c), grown to the largest pull. */
struct cli_dedupe {
	uint32_t *table; /* open addressing: position + 1 of a key's first occurrence, 0 empty */
	size_t table_cap;
	uint32_t *uniq; /* positions of first occurrences, in order */
	size_t uniq_cap;
	struct {
		uint32_t pos, first; /* a repeated position and its first occurrence */
	} * dup;
	size_t dup_cap, ndup;
};

struct ps_client {
	struct ps_client_opts o;
	char kv_path[1024];
	pthread_mutex_t lock;

	/* control plane */
	int ctl_fd; /* -1: not connected */
	char sched_addr[PS_CTL_ADDR_STRLEN];
	uint64_t next_request_id;
	bool auth;
	size_t token_len;
	uint8_t token[PS_CTL_TOKEN_MAX];

	/* cluster */
	uint64_t cluster_version;
	uint32_t server_num;
	struct cli_server *servers;	/* [server_num] */
	struct ps_placement *placement; /* NULL before any variable exists */
	struct cli_var *vars;
	uint32_t nvars, vars_cap;

	/* data plane */
	bool rdma; /* the transport chosen at create */
	struct cli_dev devs[CLI_MAX_DEVS];
	uint32_t ndevs;
	int epfd;	    /* several devs: an epoll set of their loops' fds; else -1 */
	uint32_t poll_next; /* the dev polled first next time (fairness) */
	char tp_name[8];
	struct ps_tp_loop_opts lo; /* for every loop */
	struct cli_dest *dests;
	uint32_t ndests;
	uint32_t *dest0, *nshards; /* [server_num], for struct cli_shape */
	uint32_t blk_size;	   /* request block size: the largest server message */
	struct cli_slot *slots;	   /* [nslots] */
	uint32_t nslots, slots_used;
	uint32_t req_gen;	    /* high bits of req_id */
	struct ps_mem stage;	    /* staging region for pull results, registered on every dev */
	struct ps_client_buf *bufs; /* registered caller memory */
	bool refresh_due;	    /* a connection was lost: re-read ClusterInfo first */

	/* per-call scratch, grown to the largest call (never shrunk) */
	uint32_t *dest_of, *order, *start, *cap;
	size_t scratch_n; /* entries of dest_of and order */
	uint8_t *mark;	  /* [ndests] */
	struct cli_chunk *chunks;
	uint32_t *corder; /* [chunks_cap]: chunk indexes grouped by destination */
	uint32_t *cstart; /* [ndests + 1]: where each destination's chunks start in corder */
	size_t chunks_cap;
	uint32_t *retry_pos; /* positions of refused chunks, for the retry */
	size_t retry_cap;
	struct cli_dedupe dd;

	/* steps and barriers */
	uint64_t step_next; /* the step pushes belong to: the last one ended + 1 */
	uint64_t barrier_seq;

	struct ps_client_stats st;
};

/* ---- client.c ---------------------------------------------------------------------------- */

/** Set this thread's last-error message (printf-style); returns @rc for tail calls. */
int cli_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The registration covering [p, p+len), or NULL. */
const struct ps_client_buf *cli_buf_find(const struct ps_client *c, const void *p, size_t len);

/** The declared variable @id, or NULL. */
struct cli_var *cli_var_find(struct ps_client *c, uint32_t id);

/* ---- client_dedupe.c --------------------------------------------------------------------- */

/**
 * cli_dedupe() - find the repeated keys among @keys[0..n) (@key_bytes each: 8 or 16): c->dd.uniq
 * gets the positions of first occurrences (*@nuniq of them, in order), c->dd.dup every other
 * position with its first occurrence. Returns 0 or -ENOMEM.
 */
int cli_dedupe(struct ps_client *c, const void *keys, size_t n, uint32_t key_bytes, size_t *nuniq);
/** cli_dedupe_fill() - copy each repeated position's row from its first occurrence in @out. */
void cli_dedupe_fill(struct ps_client *c, void *out, uint32_t row_bytes);
/** cli_dedupe_free() - free the scratch (the client's destroy). */
void cli_dedupe_free(struct cli_dedupe *d);

/* ---- client_ctl.c ------------------------------------------------------------------------ */

/** Find the scheduler (kv) and connect, within @deadline (monotonic ns). */
int cli_ctl_connect(struct ps_client *c, uint64_t deadline);

/**
 * Read ClusterInfo until every server is live (@all) or once, and apply it: version, servers
 * (the destination table is rebuilt, connections kept where the endpoint is unchanged),
 * placement.
 */
int cli_ctl_refresh(struct ps_client *c, bool all, uint64_t deadline);

/** DeclareReq: the scheduler's id for @name, and the placement after it (applied). */
int cli_ctl_declare(struct ps_client *c, const char *name, const struct ps_var_spec *spec,
		    const struct ps_var_load *load, uint32_t *id, uint64_t deadline);

/** StepReq / BarrierReq: wait for the scheduler's answer until @deadline. */
int cli_ctl_step(struct ps_client *c, uint64_t step, uint64_t deadline);
int cli_ctl_barrier(struct ps_client *c, uint64_t seq, uint64_t deadline);

void cli_ctl_close(struct ps_client *c);

/* ---- client_conn.c, client_dev.c ----------------------------------------------------------------------- */

/**
 * Choose the transport and open a dev (loop, request pool, staging registration) for every local
 * device the servers in c->servers are reached through; assign each destination its dev.
 */
int cli_conn_open(struct ps_client *c, uint64_t deadline);

/** Poll every dev's loop: up to @max events, waiting up to @wait_ms when there are none. */
int cli_poll(struct ps_client *c, struct ps_tp_event *evs, int max, int wait_ms);

/** The dev of the local device the route to @host uses (opened if it is not yet). */
int cli_dev_for(struct ps_client *c, const char *host, uint32_t *idx);

/** Register @b on every dev (undone on failure) / deregister it everywhere. */
int cli_buf_reg(struct ps_client *c, struct ps_client_buf *b);
void cli_buf_dereg(struct ps_client *c, struct ps_client_buf *b);

/** Payload bytes the transport copied, over every dev. */
uint64_t cli_tp_copied(const struct ps_client *c);

/** Close every connection and free the transport objects. */
void cli_conn_close_all(struct ps_client *c);

/**
 * Build the destination table for the server table @sv[@n] (about to replace c->servers):
 * sets each server's dest0, moves the connections of endpoints that did not change and closes
 * the others. On failure nothing changed.
 */
int cli_dests_rebuild(struct ps_client *c, struct cli_server *sv, uint32_t n);

/** Free the destination table (its connections closed already). */
void cli_dests_free(struct ps_client *c);

/** Connect destination @d if it is not (within @deadline). */
int cli_dest_connect(struct ps_client *c, uint32_t d, uint64_t deadline);

/** Make the staging region at least @len bytes (re-registers when it grows). */
int cli_stage_reserve(struct ps_client *c, size_t len);

/** The shape of variable @v for routing, or PS_EUNKNOWN_VAR if the placement lacks it. */
int cli_shape_get(struct ps_client *c, const struct cli_var *v, struct cli_shape *sh);

/**
 * Re-read ClusterInfo if a connection was lost since the last call (a restarted server listens
 * on new ports). A failure to reach the scheduler is not the call's failure: the old table
 * stays.
 */
void cli_refresh_if_due(struct ps_client *c, uint64_t deadline);

/** Grow the per-call scratch arrays to @n ids and @nchunks requests. */
int cli_scratch_reserve(struct ps_client *c, size_t n, size_t nchunks);

/* ---- client_dp.c ------------------------------------------------------------------------- */

/**
 * Run every chunk of @call: send with up to max_inflight requests per destination, wait for
 * all answers. Returns 0 when every chunk was answered (call->status and nstale tell how),
 * or PS_ETIMEOUT (outstanding requests cancelled by closing their connections).
 */
int cli_dp_run(struct ps_client *c, struct cli_call *call, uint64_t deadline);

/* ---- client_model.c ---------------------------------------------------------------------- */

/**
 * cli_model_op() - one ModelOpReq (1 save, 2 restore, 3 export) on a control connection of its
 * own (found through @kv_path), so the caller's client stays usable while it runs; sent once
 * (not idempotent). Waits up to @timeout_ms. @token may be NULL. @info may be NULL. Returns
 * the scheduler's status with @err holding its message, or a connection error.
 * Used by ps_client_save() & co. and by the psplus-admin tool (which has no client).
 */
int cli_model_op(const char *kv_path, const uint8_t *token, size_t token_len, uint32_t op,
		 const char *name, uint32_t timeout_ms, struct ps_model_op_info *info, char *err,
		 size_t errlen);

/* ---- client_ops.c ------------------------------------------------------------------------ */

/** "server 1 (127.0.0.1:4000) shard 0" for messages. */
void cli_dest_name(const struct ps_client *c, uint32_t d, char *buf, size_t len);

#endif
