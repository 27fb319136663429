/*
 * Scheduler internals shared by its three files:
 *   scheduler.c       ps_scheduler_main(): set-up and tear-down, the main thread (Main:
 *                     WaitForServers, MainLoop)
 *   sched_service.c   the service thread: epoll over the listening socket, the signalfd and
 *                     every control connection; frames in, replies out
 *   sched_registry.c  the server table: Register, Heartbeat, ClusterInfo, and the meta thread
 *                     that declares silent servers dead
 *   sched_declare.c   declared variables and the placement table (DeclareReq)
 *   sched_sync.c      workers' steps and barriers (StepReq, BarrierReq): replies held until
 *                     their condition holds
 *   sched_ops.c       MainLoop: model operations one at a time (ModelOpReq), the requester's
 *                     callback, commands fanned out to every server and their answers
 *                     (CkptCmd / CkptCmdResp), calls from the main thread to the service thread
 *   sched_ckpt.c      InternalSave, InternalRestore and the streaming export
 *
 * Threads and what they own:
 *   - service thread (the thread that called ps_scheduler_main): all connections (struct
 *     sched_conn) and all fds. Only it reads, writes, or frees a connection.
 *   - meta thread: reads and updates slots under the lock; it compares slot->conn with nothing
 *     and never dereferences it, so a connection's lifetime stays with the service thread.
 *   - main thread: waits on the condition variable for registrations and for shutdown.
 * Everything in struct ps_sched above "service thread only" is guarded by lock.
 */
#ifndef PS_SCHED_INTERNAL_H
#define PS_SCHED_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/ctl.h"
#include "common/dp_proto.h"
#include "common/kv.h"
#include "model_io/ckpt.h"
#include "scheduler/placement.h"
#include "scheduler/scheduler.h"

#define SCHED_LOG "scheduler"
/* Room for a numeric "[v6]:port" peer name. */
#define SCHED_PEER_STRLEN (INET6_ADDRSTRLEN + 8)
/* Longest transport name a server may announce ("tcp", "rdma", "auto"). */
#define SCHED_TRANSPORT_MAX 16
/*
 * Frames a connection may send before its first valid message. Registration is a few hundred
 * bytes; the cap keeps unauthenticated peers from making the scheduler allocate 16 MiB each.
 */
#define SCHED_HANDSHAKE_FRAME_MAX (64u << 10)
/* Unsent reply bytes a connection may hold before the peer is judged not to be reading. */
#define SCHED_OUT_MAX (1u << 20)
/* Connections accepted at once beyond server_num (clients, tools, strays). */
#define SCHED_EXTRA_CONNS 1024u
/* How long a refused or shut-down peer gets to read its last reply before we close. */
#define SCHED_LINGER_MS 1000u
/* Most data-path threads (shard ports) a server may announce (its --threads allows 256). */
#define SCHED_MAX_SHARDS 1024u
/* Longest variable name: what the DECLARE payload carries (char name[64], NUL included). */
#define SCHED_VAR_NAME_MAX 63u
/* Most variables a cluster holds: each declaration re-runs the placementer over all of them. */
#define SCHED_MAX_VARS 65536u
/* Job steps per second assumed until a declaration gives one (network and query estimates). */
#define SCHED_DEFAULT_STEPS_PER_S 10.0
/* Rows one request carries to one part, for variables that give no batching estimate. */
#define SCHED_DEFAULT_ROWS_PER_REQ 100.0
/* Most workers a job may have (the step table is one entry per worker). */
#define SCHED_MAX_WORKERS 65536u
/* A save waits this long for the workers of a stepped job to reach a step boundary. */
#define SCHED_QUIESCE_MS 3000u
/* Servers resume by themselves if the save does not follow their pause within this. */
#define SCHED_PAUSE_LEASE_MS 30000u
/* Bounds on each command round of a model operation (a dead server is noticed sooner). */
#define SCHED_CMD_SHORT_MS 15000u   /* pause, resume, commit, abort */
#define SCHED_CMD_LONG_MS  3600000u /* save, restore prepare, export: as long as the I/O */

/* Model operations (ModelOpReq.op). */
enum sched_op_code {
	SCHED_OP_SAVE = 1,
	SCHED_OP_RESTORE = 2,
	SCHED_OP_EXPORT = 3,
};

/* Steps of an operation sent to servers (CkptCmd.cmd; docs/formats.md). */
enum sched_cmd {
	SCHED_CMD_PAUSE = 1,
	SCHED_CMD_SAVE = 2,
	SCHED_CMD_RESUME = 3,
	SCHED_CMD_RESTORE_PREPARE = 4,
	SCHED_CMD_RESTORE_COMMIT = 5,
	SCHED_CMD_RESTORE_ABORT = 6,
	SCHED_CMD_EXPORT = 7,
};

enum sched_slot_state {
	SLOT_EMPTY, /* never registered */
	SLOT_LIVE,  /* registered, connected, heartbeating */
	SLOT_DEAD,  /* was registered; its id is free to register again */
};

struct sched_conn;
struct sched_wait; /* sched_sync.c */

/* One server id. */
struct sched_slot {
	enum sched_slot_state state;
	const struct sched_conn *conn;	     /* LIVE: the connection it registered on (identity) */
	char host[PS_URL_HOST_MAX];	     /* data-plane address it announced */
	uint16_t port;			     /* data-plane port */
	char transport[SCHED_TRANSPORT_MAX]; /* transport it announced */
	uint32_t *shard_ports;		     /* [nshards] data-path ports (malloc'ed), or NULL */
	uint32_t nshards;		     /* 0: one shard on port */
	uint32_t msg_size;		     /* largest data-plane request; 0: transport default */
	char peer[SCHED_PEER_STRLEN];	     /* control connection's remote address, for logs */
	uint64_t registered_ns;		     /* monotonic time of the registration */
	uint64_t last_hb_ns; /* monotonic time of the last heartbeat (or register) */
	uint64_t heartbeats; /* heartbeats since registration */
	uint64_t mem_bytes;  /* last reported stats (for the placementer, later) */
	uint64_t requests_served;
	uint64_t tx_bytes;
	uint64_t rx_bytes;
};

/* One accepted control connection; owned by the service thread. */
struct sched_conn {
	struct sched_conn *prev, *next; /* in ps_sched.conns */
	uint64_t id;			/* unique for the scheduler's life (requesters of ops) */
	int fd;				/* non-blocking socket */
	uint32_t events;		/* epoll interest currently registered */
	struct ps_ctl_reader rd;	/* frame reassembly */
	char peer[SCHED_PEER_STRLEN];	/* "host:port" of the remote end */
	int64_t server_id;		/* id registered on this connection, -1 if none */
	bool greeted;			/* a valid frame has arrived */
	bool authed;			/* the auth token was checked on this connection */
	bool closing;			/* a last reply is queued; input ignored; close when sent */
	bool dead;			/* close at the end of the current event */
	uint64_t accepted_ns;		/* for the handshake timeout */
	uint64_t closing_ns;		/* for the linger timeout */
	uint8_t *out;			/* queued reply bytes [out_off, out_len) */
	size_t out_off, out_len, out_cap;
	struct sched_wait *waits; /* StepReq/BarrierReq replies held for this peer */
};

/* A declared variable (sched_declare.c). */
struct sched_var {
	char name[SCHED_VAR_NAME_MAX + 1];
	uint32_t id;
	uint8_t spec[PS_DP_DECLARE_BYTES]; /* canonical encoded spec: compared on re-declaration */
	struct ps_var_spec vs;		   /* the same, decoded */
	double rows_read_per_step;	   /* load hints as first declared */
	double rows_pushed_per_step;
	uint64_t expected_keys;
	uint32_t num_workers; /* the last DeclareReq's (0: not said); restores rebuild DECLARE */
};

/* One worker of the job (sched_sync.c). */
struct sched_worker {
	const struct sched_conn *conn; /* the connection it last spoke on; NULL: gone */
	int64_t last_step;	       /* highest step it ended; -1: none yet */
	uint64_t last_barrier;	       /* highest barrier it reached; 0: none yet */
};

/* The job's synchronisation state; NULL until a worker speaks, reset when all have left. */
struct sched_job {
	uint32_t num_workers;
	uint32_t mode;		/* enum ps_sync_mode of the first StepReq; 0: no step yet */
	uint32_t staleness;	/* bounded staleness: the first StepReq's */
	uint32_t present;	/* workers with a connection */
	struct sched_worker *w; /* [num_workers] */
};

/* One server's answer to a command round (sched_ops.c). */
struct sched_answer {
	const struct sched_conn *conn; /* the registration the command went to; NULL: not sent */
	bool answered;
	int status;
	char msg[1024];
	uint64_t rows, bytes, pause_us;
	struct ps_ckpt_part_desc *parts; /* SAVE: the files written */
	uint32_t *part_var;		 /* ... and their variables */
	size_t nparts;
};

/* A command round: one CkptCmd to every server, one CkptCmdResp back from each. */
struct sched_round {
	uint64_t op_id;
	uint32_t cmd;
	uint32_t n;		/* server_num */
	struct sched_answer *a; /* [server_num] */
};

struct ps_sched;

/* A call from the main thread run on the service thread (which owns connections and tables). */
struct sched_call {
	struct sched_call *next;
	void (*fn)(struct ps_sched *s, void *arg);
	void *arg;
	bool done;
};

struct ps_sched {
	const struct ps_scheduler_opts *opts; /* borrowed from the caller */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; registrations, deaths, stop */
	bool stopping;	     /* shutdown started: threads leave their loops */
	uint64_t cluster_version;
	uint32_t nlive;		  /* slots in SLOT_LIVE */
	struct sched_slot *slots; /* opts->server_num entries */

	/* service thread only (and set-up/tear-down, before/after the other threads) */
	int listen_fd, epoll_fd, signal_fd;
	bool listen_paused;	 /* out of fds: listening socket taken out of epoll for a while */
	struct sched_conn conns; /* list head of live connections */
	uint32_t nconns;
	uint32_t max_conns;
	uint64_t next_request_id; /* for messages the scheduler starts (Shutdown) */
	char addr[SCHED_PEER_STRLEN + PS_URL_HOST_MAX]; /* published "host:port", for logs */
	struct ps_kv_entry kv;				/* what was published */
	bool kv_published;
	bool auth; /* an auth token is required */
	size_t token_len;
	uint8_t token[PS_CTL_TOKEN_MAX];

	/*
	 * Variables and placement (sched_declare.c). Written by the service thread only; read by
	 * it for ClusterInfo. Kept for the scheduler's life.
	 */
	struct sched_var *vars;
	uint32_t nvars, vars_cap;
	uint32_t next_var_id;
	double steps_per_s;		/* job steps per second: the highest declared, or default */
	struct ps_placement *placement; /* NULL before the first declaration */
	uint8_t *placement_blob;	/* ps_placement_encode() of it */
	size_t placement_len;

	/* Steps and barriers (sched_sync.c); service thread only. */
	struct sched_job *job;
	bool steps_held; /* a save is waiting for a step boundary: held replies stay held */
	bool restoring;	 /* a restore is between prepare and install: DeclareReq waits */
	bool starting;	 /* until the start-up restore is done: ClusterInfo lists no server */
	uint64_t next_conn_id;

	/* MainLoop (sched_ops.c), under lock. */
	bool op_busy;	  /* an operation is queued or running: others are refused */
	bool op_queued;	  /* ... queued by the service thread for the main thread */
	uint32_t op_code; /* enum sched_op_code */
	char op_name[PS_CKPT_NAME_MAX + 1];
	uint64_t op_conn, op_req; /* the requester (connection id, request id); 0: none */
	uint64_t next_op_id;
	struct sched_round *round; /* the command round in flight, or NULL */
	uint64_t pending_version;  /* a restore's new version, servers switching to it now */
	char ckpt_root[4096];	   /* -cp as a path; "" for none:// */
	int call_fd;		   /* eventfd: sched_call queued */
	struct sched_call *calls;  /* queued calls, FIFO */
	bool service_done;	   /* the service thread left its loop: calls fail */
};

/* ---- sched_service.c ------------------------------------------------------------------- */

/** Run the epoll loop until SIGINT/SIGTERM, then notify live servers and close everything. */
int ps_sched_service_run(struct ps_sched *s);

/** Queue @env on @c (sent as soon as the socket allows). Marks @c dead on failure. */
void ps_sched_conn_send(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** Send what is queued, then close @c; input from it is ignored from now on. */
void ps_sched_conn_close_after(struct ps_sched *s, struct sched_conn *c);

/* ---- sched_registry.c ------------------------------------------------------------------ */

/** Act on one message from @c (service thread). Replies through ps_sched_conn_send(). */
void ps_sched_handle(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** @c is going away: if it holds a live registration, the server is dead (reason @why). */
void ps_sched_conn_lost(struct ps_sched *s, struct sched_conn *c, const char *why);

/** @c registered a server that has since been declared dead: tell it and close. */
void ps_sched_conn_check_revoked(struct ps_sched *s, struct sched_conn *c);

/** Send a Status(@code, @msg) reply carrying @req_id. */
void ps_sched_reply_status(struct ps_sched *s, struct sched_conn *c, uint64_t req_id, int code,
			   const char *msg);

/**
 * The peer may use the cluster: a registered server, a connection that already proved the
 * token, or @tok matching it (then remembered on @c). Always true without --auth_token_file.
 */
bool ps_sched_authorized(struct ps_sched *s, struct sched_conn *c, const ProtobufCBinaryData *tok);

/** The meta thread: liveness. @arg is the struct ps_sched. */
void *ps_sched_meta_thread(void *arg);

/** Wait on s->cond until @deadline_ns (monotonic). Lock held. */
void ps_sched_cond_wait_until(struct ps_sched *s, uint64_t deadline_ns);

/* ---- sched_declare.c ------------------------------------------------------------------- */

/**
 * The canonical bytes of a spec: a DECLARE payload of it with fixed stand-ins for the part,
 * shard, worker and name fields. Two declarations are the same when these bytes are.
 */
void ps_sched_spec_canon(const struct ps_var_spec *vs, uint8_t out[PS_DP_DECLARE_BYTES]);

/** DeclareReq: validate, place, reply DeclareResp. */
void ps_sched_on_declare(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** Free the variables and the placement (tear-down). */
void ps_sched_vars_free(struct ps_sched *s);

/** Optimizer slots kept beside each row by @k (include/psplus/types.h). */
uint32_t ps_sched_optim_slots(enum ps_optim_kind k);

/** The placementer's view of a declared variable (load hints, memory estimate). */
void ps_sched_place_var(const struct sched_var *v, struct ps_placement_var *p);

/** Every server's three budgets from the options, into @b[server_num]. */
void ps_sched_budgets(const struct ps_sched *s, struct ps_placement_budget *b);

/** Install a restored model (sched_ckpt.c): variables, placement, version. Service thread. */
void ps_sched_vars_replace(struct ps_sched *s, struct sched_var *vars, uint32_t nvars,
			   struct ps_placement *t, uint8_t *blob, size_t blen);

/* ---- sched_ops.c ------------------------------------------------------------------------- */

/** ModelOpReq: queue it for the main loop, or refuse it now (PS_EOP_IN_PROGRESS). */
void ps_sched_on_model_op(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** CkptCmdResp from a server: record it in the round in flight. */
void ps_sched_on_ckpt_resp(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** The main loop (after WaitForServers): start-up restore, then one operation at a time. */
void ps_sched_main_loop(struct ps_sched *s);

/**
 * Run @fn(@s, @arg) on the service thread and wait for it. Main thread. Returns 0, or
 * PS_ESHUTDOWN when the service thread is gone (@fn did not run).
 */
int ps_sched_service_call(struct ps_sched *s, void (*fn)(struct ps_sched *s, void *arg), void *arg);

/** The service thread's side: run every queued call (eventfd readable). */
void ps_sched_service_calls_run(struct ps_sched *s);

/** The service thread stops: fail the calls still queued. */
void ps_sched_service_calls_fail(struct ps_sched *s);

/**
 * A command round: @build(@s, server, cmd, @arg) fills each live server's CkptCmd (op_id and
 * cmd are set before), on the service thread; then wait for every answer, a lost server, the
 * timeout or shutdown. On return the round's answers are in *@out (caller frees with
 * ps_sched_round_free()). Returns 0 when every server answered 0, else the first failure with
 * @msg naming the server.
 */
int ps_sched_round(struct ps_sched *s, uint64_t op_id, uint32_t cmd,
		   void (*build)(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *cmd,
				 void *arg),
		   void *arg, uint32_t timeout_ms, struct sched_round **out, char *msg,
		   size_t msglen);
void ps_sched_round_free(struct sched_round *r);

/** A random non-zero 64-bit number (cluster versions). */
int ps_sched_random_version(uint64_t *out);

/* ---- sched_ckpt.c ------------------------------------------------------------------------ */

/** What an operation reports to its requester. */
struct sched_op_result {
	int status;
	char msg[2048];
	char name[PS_CKPT_NAME_MAX + 1];
	uint64_t rows, bytes, pause_us;
};

void ps_sched_internal_save(struct ps_sched *s, const char *name, struct sched_op_result *res);
void ps_sched_internal_restore(struct ps_sched *s, const char *name, struct sched_op_result *res);
void ps_sched_internal_export(struct ps_sched *s, struct sched_op_result *res);

/* ---- sched_sync.c ---------------------------------------------------------------------- */

/** StepReq: record the step; reply now or hold the reply until its condition holds. */
void ps_sched_on_step(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** BarrierReq: as ps_sched_on_step() for barriers. */
void ps_sched_on_barrier(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env);

/** @c is going away: drop its held replies and unbind the workers that spoke on it. */
void ps_sched_sync_conn_lost(struct ps_sched *s, struct sched_conn *c);

/** Free the job state (tear-down, after every connection is gone). */
void ps_sched_sync_free(struct ps_sched *s);

/** Every worker of a stepped job is waiting in step_end or a barrier (or there is no such job). */
bool ps_sched_sync_quiet(struct ps_sched *s);

/** Answer the held replies whose condition holds (after steps_held is cleared). */
void ps_sched_sync_release(struct ps_sched *s);

/** A restore: answer every held reply with @status and forget the job (steps restart). */
void ps_sched_sync_reset(struct ps_sched *s, int status, const char *msg);

#endif
