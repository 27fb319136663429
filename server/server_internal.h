/*
 * Server internals shared by:
 *   server.c      ps_server_main(): signals, the data plane (server/dp.h: its threads, one
 *                 listener each), the start-up log, and the register / heartbeat / reconnect
 *                 cycle
 *   server_ctl.c  the control session with the scheduler: find it through the kv entry,
 *                 connect, register (with every data-path thread's port), heartbeat with stats,
 *                 react to its replies (the cluster version goes to the data plane)
 *   srv_ckpt.c    the scheduler's model operations (CkptCmd): pause, save, resume, restore,
 *                 streaming export, on a job thread so heartbeats go on
 *
 * The struct is owned by the thread that called ps_server_main() (the control thread); the
 * data-path threads see only the data plane, which it shares with them through dp.h.
 */
#ifndef PS_SERVER_INTERNAL_H
#define PS_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/ctl.h"
#include "common/kv.h"
#include "server/dp.h"
#include "server/server.h"

#define SRV_LOG "server"
/* Upper bound for one connect attempt, so a black-holed address is retried, not waited on. */
#define SRV_CONNECT_TIMEOUT_MS 2000
/* Upper bound for the register round trip. */
#define SRV_REGISTER_TIMEOUT_MS 5000
/* Longest back-off between attempts to reach the scheduler. */
#define SRV_RETRY_MAX_MS 500

struct srv_ckpt; /* srv_ckpt.c */

struct ps_srv {
	const struct ps_server_opts *opts;   /* borrowed from the caller */
	int sig_fd;			     /* signalfd: SIGINT, SIGTERM */
	struct ps_dp *dp;		     /* the data plane: its threads and listeners */
	uint16_t data_port;		     /* the port of data-path thread 0 */
	int ctl_fd;			     /* control connection, -1 when not connected */
	struct ps_ctl_reader rd;	     /* frames from the scheduler */
	char sched_addr[PS_CTL_ADDR_STRLEN]; /* "host:port" of the scheduler, for logs */
	char data_addr[PS_CTL_ADDR_STRLEN];  /* advertised data-plane "host:port" */
	uint64_t cluster_version;	     /* from the last RegisterResp/HeartbeatResp */
	uint32_t heartbeat_ms;		     /* period the scheduler asked for */
	uint32_t liveness_ms;		     /* silence after which we give the scheduler up */
	uint64_t next_request_id;
	bool auth; /* send a token */
	size_t token_len;
	uint8_t token[PS_CTL_TOKEN_MAX];
	struct srv_ckpt *ck; /* model operations in progress */
};

/**
 * ps_srv_connect_register() - find the scheduler through the kv entry, connect and register,
 * retrying for up to opts->kv_wait_ms.
 * @first: the first registration of this process. Later ones (after a lost connection) treat
 *         PS_EDUP_SERVER_ID as transient: the scheduler may not have seen the old connection
 *         close yet.
 *
 * Returns 0 (s->ctl_fd connected and registered), PS_ESHUTDOWN (signal, or the scheduler is
 * shutting down), a refusal (PS_EDUP_SERVER_ID, PS_EOUT_OF_RANGE, -EACCES, ...), PS_ETIMEOUT,
 * or a kv URL error.
 */
int ps_srv_connect_register(struct ps_srv *s, bool first);

/**
 * ps_srv_heartbeat_loop() - heartbeat until told to stop or the connection fails.
 *
 * Returns PS_ESHUTDOWN (signal or the scheduler's Shutdown: exit cleanly), PS_EPEER_LOST
 * (connection broken, refused or silent: reconnect), or another error.
 */
int ps_srv_heartbeat_loop(struct ps_srv *s);

/** ps_srv_disconnect() - close the control connection (if any) and reset its reader. */
void ps_srv_disconnect(struct ps_srv *s);

/* ---- srv_ckpt.c ------------------------------------------------------------------------- */

int ps_srv_ckpt_create(struct ps_srv *s);
void ps_srv_ckpt_destroy(struct ps_srv *s);
/** The eventfd that becomes readable when a job (save, restore, export) is done. */
int ps_srv_ckpt_fd(const struct ps_srv *s);
/** A CkptCmd from the scheduler: 0, or PS_EPEER_LOST when the answer could not be sent. */
int ps_srv_ckpt_on_cmd(struct ps_srv *s, const ps_ctl_env_t *in);
/** The eventfd fired: join the job and answer the scheduler (as ps_srv_ckpt_on_cmd). */
int ps_srv_ckpt_on_event(struct ps_srv *s);
/** Milliseconds until a pause lease runs out, or -1 when none runs. */
int ps_srv_ckpt_timeout_ms(const struct ps_srv *s);
/** Undo a pause whose lease ran out. */
void ps_srv_ckpt_tick(struct ps_srv *s);
/** The scheduler is gone: cancel and join any job, drop what is staged, resume. */
void ps_srv_ckpt_reset(struct ps_srv *s, const char *why);

#endif
