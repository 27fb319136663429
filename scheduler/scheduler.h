/*
 * The scheduler role (seed: SchedulerImpl).
 *
 * One scheduler per cluster. It publishes its control address at the kv path, waits for
 * server_num servers to register, keeps the cluster version, watches liveness through
 * heartbeats and runs save/restore one at a time in its main loop. With a checkpoint root
 * (-cp), it restores the latest checkpoint there once every server has registered.
 */
#ifndef PS_SCHEDULER_H
#define PS_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include <psplus/common.h>

struct ps_scheduler_opts {
	const char *kv_path;	      /* -sp: URL where the address is published (borrowed) */
	uint32_t server_num;	      /* -sn: servers to wait for */
	uint64_t net_limit_mbps;      /* -snet: per-server network budget, MB/s */
	uint64_t mem_limit_mb;	      /* -smem: per-server memory budget, MB */
	uint64_t query_limit;	      /* -sqps: per-server requests/s */
	const char *checkpoint_path;  /* -cp: checkpoint root URL ("none://" = off) */
	const char *sm_dense;	      /* -smdense: streaming-model URLs ("" = off) */
	const char *sm_sparse;	      /* -smsparse */
	const char *sm_hash;	      /* -smhash */
	bool bind_cores;	      /* -bc */
	const char *host;	      /* --host: address to listen on and publish ("" = auto) */
	uint16_t port;		      /* --port: control port (0 = ephemeral) */
	uint32_t heartbeat_ms;	      /* --heartbeat_ms: period servers are told to use */
	uint32_t liveness_timeout_ms; /* --liveness_timeout_ms: silence before a server is dead */
	const char *auth_token_file;  /* --auth_token_file: shared secret, or NULL */
	uint32_t streaming_period_s;  /* --streaming_period_s: export every N s (0: on request) */
};

/**
 * ps_scheduler_main() - run the scheduler until SIGINT/SIGTERM (SchedulerRun + Start + Main).
 *
 * Installs its own signal handling (the calling thread must be the process's main thread, and
 * no other thread may have been started): SIGINT and SIGTERM are blocked and read from a
 * signalfd. They stay blocked on return, with pending ones consumed, so a second signal racing
 * a clean shutdown cannot turn exit status 0 into death by signal; a caller that goes on
 * running restores its own mask. Returns 0 after a clean shutdown (kv entry removed), or a
 * negative code if it could not start.
 */
int ps_scheduler_main(const struct ps_scheduler_opts *opts);

#endif
