/*
 * Scheduler internals shared by its three files:
 *   scheduler.c       ps_scheduler_main(): set-up and tear-down, the main thread (Main:
 *                     WaitForServers, MainLoop)
 *   sched_service.c   the service thread: epoll over the listening socket, the signalfd and
 *                     every control connection; frames in, replies out
 *   sched_registry.c  the server table: Register, Heartbeat, ClusterInfo, and the meta thread
 *                     that declares silent servers dead
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
#include "common/kv.h"
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

enum sched_slot_state {
	SLOT_EMPTY, /* never registered */
	SLOT_LIVE,  /* registered, connected, heartbeating */
	SLOT_DEAD,  /* was registered; its id is free to register again */
};

struct sched_conn;

/* One server id. */
struct sched_slot {
	enum sched_slot_state state;
	const struct sched_conn *conn;	     /* LIVE: the connection it registered on (identity) */
	char host[PS_URL_HOST_MAX];	     /* data-plane address it announced */
	uint16_t port;			     /* data-plane port */
	char transport[SCHED_TRANSPORT_MAX]; /* transport it announced */
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
	int fd;				/* non-blocking socket */
	uint32_t events;		/* epoll interest currently registered */
	struct ps_ctl_reader rd;	/* frame reassembly */
	char peer[SCHED_PEER_STRLEN];	/* "host:port" of the remote end */
	int64_t server_id;		/* id registered on this connection, -1 if none */
	bool greeted;			/* a valid frame has arrived */
	bool closing;			/* a last reply is queued; input ignored; close when sent */
	bool dead;			/* close at the end of the current event */
	uint64_t accepted_ns;		/* for the handshake timeout */
	uint64_t closing_ns;		/* for the linger timeout */
	uint8_t *out;			/* queued reply bytes [out_off, out_len) */
	size_t out_off, out_len, out_cap;
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

/** The meta thread: liveness. @arg is the struct ps_sched. */
void *ps_sched_meta_thread(void *arg);

/** Wait on s->cond until @deadline_ns (monotonic). Lock held. */
void ps_sched_cond_wait_until(struct ps_sched *s, uint64_t deadline_ns);

#endif
