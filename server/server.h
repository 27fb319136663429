/*
 * The server role (seed: ServerService).
 */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <psplus/common.h>

struct ps_server_opts {
	const char *kv_path;	     /* -sp: where to find the scheduler (borrowed) */
	uint32_t server_id;	     /* -si: 0-based, unique in the cluster */
	const char *sm_dense;	     /* -smdense: streaming-model URLs ("" = off) */
	const char *sm_sparse;	     /* -smsparse */
	const char *sm_hash;	     /* -smhash */
	bool bind_cores;	     /* -bc */
	const char *transport;	     /* --transport: "auto", "tcp" or "rdma" */
	const char *host;	     /* --host: data-plane address to listen on ("" = auto) */
	uint16_t port;		     /* --port: data-plane port (0 = ephemeral) */
	uint32_t threads;	     /* --threads: data-path threads */
	uint32_t kv_wait_ms;	     /* --kv_wait_ms: how long to wait for the kv entry */
	const char *auth_token_file; /* --auth_token_file, or NULL */
};

/**
 * ps_server_main() - run a server until SIGINT/SIGTERM or until the scheduler shuts the
 * cluster down (ServerRun + ServerService::Init).
 *
 * Same signal rules as ps_scheduler_main(). Returns 0 after a clean shutdown (a signal, or the
 * scheduler's Shutdown), or a negative code: a refused registration (PS_EDUP_SERVER_ID,
 * PS_EOUT_OF_RANGE, -EACCES), PS_ETIMEOUT when no scheduler was reachable within kv_wait_ms
 * (at start or after losing it), a kv URL error, or a set-up failure. Details are logged.
 */
int ps_server_main(const struct ps_server_opts *opts);

#endif
