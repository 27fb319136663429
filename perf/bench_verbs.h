/*
 * psplus-bench-verbs, private: the control block and what its files share (bench_verbs.c says
 * what the program measures and how). The files:
 *
 *   bench_verbs.c        command line, banner, the pairs of rounds and their summary, main
 *   bench_verbs_conn.c   the device, the registered memory, the RC connection to itself over
 *                        rdma_cm, the target's thread, teardown
 *   bench_verbs_round.c  the two shapes of operation, posting, one measured round, the data
 *                        check and the device's counters around it
 *
 * Single-threaded but for the target's thread (--target spin|imm), which owns cli_cq and
 * cli_id's receive queue and shares only the rx_* atomics with the rest.
 */
#ifndef PS_PERF_BENCH_VERBS_H
#define PS_PERF_BENCH_VERBS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/mem.h"
#include "perf/bench_common.h"
#include "transport/rdma/verbs_shim.h"

#define BV_PROG	      "psplus-bench-verbs"
#define BV_SGE_CAP    32u	  /* psplus's rdma backend uses at most 32 SGEs per WR */
#define BV_DST_MAX    (16u << 20) /* destination: a slot per operation in flight, at most */
#define BV_POLL_BATCH 32

enum bv_target { BV_TGT_PASSIVE, BV_TGT_SPIN, BV_TGT_IMM };

/*
 * The device's hw_counters read around each round (rxe has them): packets, and the
 * retransmissions that stall an RC QP for its timeout when a packet is lost, which tell a
 * stalled round from a slow one. Names in bv_cnt_names (bench_verbs_round.c).
 */
#define BV_NCNT 5
extern const char *const bv_cnt_names[BV_NCNT];

struct bv_opts {
	const char *dev_addr; /* -d: a local address of the device */
	uint32_t rows, row_size;
	int rows_seq;	  /* --row-order seq: consecutive rows from a random start, SGE each */
	uint32_t max_sge; /* --max-sge; 0: the device's, capped at BV_SGE_CAP */
	int target;	  /* enum bv_target */
	uint32_t depth, cq_mod, pairs;
	uint64_t table_size;
	uint64_t duration_ms, margin_ms; /* -D, -f; duration 0: iterations mode */
	bool margin_set;
	uint64_t iters, seed; /* -n; --seed (0: a fresh one) */
	const char *json;
	uint64_t timeout_ms;
};

/* One kind of round: gather (rows x row_size) or contiguous (1 x rows * row_size). */
struct bv_shape {
	const char *name;
	uint32_t rows, row_size;
	uint32_t per_wr; /* SGEs per RDMA_WRITE */
	uint32_t nwr;	 /* RDMA_WRITEs per operation */
	bool trailer;	 /* --target imm, nwr > 1: a SEND_WITH_IMM follows them */
	uint64_t nrows;	 /* rows of this size in the table */
	bool seq;
};

/* The control block: both ends of the one connection and everything the run owns. */
struct bv {
	const struct bv_opts *o;
	struct rdma_event_channel *cm_ch; /* events of all three ids */
	struct rdma_cm_id *listen_id;	  /* bound to -d; owns the device context */
	struct rdma_cm_id *cli_id;	  /* the connecting id: the target of the writes */
	struct rdma_cm_id *srv_id;	  /* the accepted id: posts the writes */
	struct ibv_pd *pd;		  /* on listen_id->verbs: both QPs and all MRs */
	struct ibv_cq *srv_cq;		  /* the writer's completions, busy-polled */
	struct ibv_cq *cli_cq;		  /* the target's: receives of --target imm only */
	struct ps_mem table, dst;	  /* rows; nslots slots of stride bytes + the rx buffer */
	struct ibv_mr *table_mr, *dst_mr;
	uint64_t table_len;	 /* the size asked for (table.len may be rounded up) */
	uint64_t size, stride;	 /* bytes per operation; slot distance (size rounded up to 64) */
	uint32_t nslots;	 /* min(depth, BV_DST_MAX / stride) */
	uint32_t max_sge;	 /* SGEs per WR of the gather */
	uint32_t dev_max_sge;	 /* the device's */
	uint32_t mtu;		 /* active MTU, bytes */
	uint8_t port;		 /* the port of -d */
	uint32_t send_wr;	 /* the writer's send queue: depth x WRs of a gather */
	uint32_t recv_wr;	 /* --target imm: receives kept posted */
	struct ibv_send_wr *wrs; /* one operation's chain (reused: posting copies it) */
	struct ibv_sge *sges;	 /* one operation's gather list, then the trailer's SGE */
	struct ibv_wc wc[BV_POLL_BATCH];
	bool cli_up, srv_up; /* ESTABLISHED seen */
	char dev[64];
	/* The target's thread (--target spin|imm); it owns cli_cq and cli_id's receive queue. */
	pthread_t rx;
	bool rx_started;
	atomic_bool rx_stop;
	atomic_uint_fast64_t rx_seen; /* receive completions */
	atomic_int rx_err;
	struct ibv_recv_wr rx_wr[BV_POLL_BATCH]; /* all on rx_sge: what lands there is not read */
	struct ibv_sge rx_sge;
	uint64_t ops_total; /* operations completed over all rounds */
};

/* What one round measured (duration mode: the sampled window, as perftest and psplus-bench-tp). */
struct bv_meas {
	uint64_t ops;			   /* operations completed */
	uint64_t win_ops, win_ns;	   /* inside the window */
	uint64_t bad_slots, checked_bytes; /* the data check */
	uint64_t cnt[BV_NCNT];		   /* hw_counters moved over the round */
};

/* ---- bench_verbs.c --------------------------------------------------------------------------- */

/** bv_print_banner() - the run's banner, once the device is known (@g gather, @c contiguous). */
void bv_print_banner(const struct bv *b, const struct bv_shape *g, const struct bv_shape *c);

/* ---- bench_verbs_conn.c ---------------------------------------------------------------------- */

/**
 * bv_setup() - open the device of @o->dev_addr, print the banner, allocate, fill (@seed) and
 * register the memory, connect the two ids and start the target's thread. @b is zeroed but for
 * b->o == @o. 0, PS_EBAD_OPTION (a message on stderr) or another error (reported). Whatever it
 * built, bv_teardown() frees.
 */
int bv_setup(struct bv *b, const struct bv_opts *o, uint64_t seed);

/**
 * bv_target_check() - --target imm: whether every operation's immediate reached the target
 * (a bounded wait for the thread), with a line saying so; true for the other targets.
 */
bool bv_target_check(struct bv *b);

/** bv_teardown() - stop, disconnect and free everything, in reverse order; fine when partly built. */
void bv_teardown(struct bv *b);

/* ---- bench_verbs_round.c --------------------------------------------------------------------- */

/** bv_shape_make() - the gather (@gather) or the contiguous shape of the set-up @b. */
struct bv_shape bv_shape_make(const struct bv *b, bool gather);

/**
 * bv_round_measure() - one round of shape @s (rows drawn from @seed), its data check and the
 * counters around it, into @m and @r (a line of the table). 0 (a failed data check included:
 * r->check_ok says it) or the error that stopped the round (reported on stderr).
 */
int bv_round_measure(struct bv *b, const struct bv_shape *s, uint64_t seed, struct bv_meas *m,
		     struct bench_row *r);

#endif
