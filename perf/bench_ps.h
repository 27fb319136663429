/*
 * psplus-bench-ps: the parameter service end to end, through the public client library
 * (include/psplus/client.h) only, against a running cluster - what a training worker sees.
 *
 * One run is one test: sparse pulls or sparse pushes of a batch of ids (1,024 by default) of a
 * sparse variable (1,048,576 rows x 64 float32 by default, SGD), repeated for a duration (or a
 * number of operations) by one or more clients. The files:
 *
 *   bench_ps.c      command line, the report (perftest-like tables, JSON), main
 *   bench_ps_ids.c  the id batches: uniform or Zipf (rejection-inversion sampler), their
 *                   placement over the rows, the rows the data check knows (marked rows)
 *   bench_ps_run.c  clients, variables and their preparation, the measuring threads, the
 *                   data checks, the sampled window
 *
 * Ids are drawn before the clock starts: a pool of --pool batches from a seeded generator,
 * each sorted (by default, as a worker that groups its ids would: the rows of each server
 * thread then land in one run of the registered result buffer, zero copy), used round-robin.
 *
 * The data check, so a run cannot silently measure errors:
 *   pull  the pull variable starts at zeros (initializer) and is prepared once: every marked
 *         row (bp_marked(), 1/16 of the rows, the same in every run) gets a pattern by one
 *         SGD push with learning rate 1 (bp_pattern()); preparation is skipped when a pull of
 *         those rows already shows it (a second run on the same cluster), and the rows are
 *         verified after it. During the run every --check-every-th pull lands in a buffer first
 *         filled with NaN bytes and every row of it is compared: the pattern for a marked id,
 *         0 for any other.
 *   push  gradients are 1 + (column mod 4) and the learning rate 2^-10, so a row changes by
 *         an exact multiple of 2^-10 per occurrence of its id. The marked rows are pulled
 *         before and after the run; each must equal before - 2^-10 x (its occurrences in the
 *         run's pushes) x gradient, exactly (every value is a small multiple of 2^-10).
 */
#ifndef PS_PERF_BENCH_PS_H
#define PS_PERF_BENCH_PS_H

#include <stdbool.h>
#include <stdint.h>

#include "perf/bench_common.h"

#define BP_PROG		   "psplus-bench-ps"
#define BP_MAX_CLIENTS	   64u
#define BP_MARK_MASK	   15u		    /* a row is marked when mix(id) & mask == 0: 1/16 */
#define BP_PUSH_LR	   (1.0f / 1024.0f) /* the push variable's SGD learning rate */
#define BP_SAMPLES_MAX	   (1u << 22)	    /* operations recorded per client (-D stops there) */
#define BP_PREP_BATCH	   1024u	    /* rows per call when preparing or verifying */
#define BP_DEF_CHECK_EVERY 16u

enum bp_test {
	BP_PULL = 1,
	BP_PUSH,
};

enum bp_dist {
	BP_UNIFORM = 1,
	BP_ZIPF,
};

struct bp_opts {
	const char *kv;	       /* the cluster's kv path */
	const char *transport; /* auto, tcp, rdma */
	enum bp_test test;
	enum bp_dist dist;
	double zipf_s;	      /* Zipf exponent (> 0) */
	bool hot_low;	      /* Zipf: rank r is row r - 1 (default: ranks scattered over rows) */
	bool sorted;	      /* each batch sorted (default) */
	int dedupe;	      /* enum ps_pull_dedupe for the clients (default auto) */
	uint32_t batch;	      /* ids per operation */
	uint32_t width;	      /* floats per row */
	uint64_t rows;	      /* rows of the variable */
	uint32_t pool;	      /* batches drawn before the run */
	uint64_t seed;	      /* of the id generator */
	uint32_t clients;     /* -q: clients, one thread each */
	uint32_t inflight;    /* ps_client_opts.max_inflight (0: the library's default) */
	uint32_t check_every; /* pull: every n-th operation is checked */
	const char *name;     /* variable name prefix */
	uint64_t duration_ms, margin_ms, iters;
	bool margin_set;
	uint64_t timeout_ms; /* the clients' call timeout */
	const char *json;
};

/* One operation as a client thread saw it. */
struct bp_sample {
	uint64_t end_ns; /* bench_now_ns() when the call returned */
	uint64_t lat_ns; /* how long the call took */
};

/* What the run measured and checked (bench_ps_run.c fills it, bench_ps.c prints it). */
struct bp_result {
	struct bench_row row;	/* bytes per op, ops in the window, MiB/s, latency per op */
	double ops_per_s;	/* in the window */
	double window_s;	/* its length */
	uint64_t ops_total;	/* operations every client made, warm-up included */
	double requests_per_op; /* data-plane requests per operation (client statistics) */
	double dups_per_op;	/* pulls: repeated ids not sent per operation (pull_dups) */
	uint64_t bytes_staged;	/* copied through the library's staging region during the run */
	int64_t tp_copied;	/* payload bytes the transport copied during the run */
	double distinct_per_op; /* distinct ids per batch, mean over the pool */
	uint64_t checked_rows;	/* rows compared */
	uint64_t bad_rows;	/* rows that did not match */
	bool capped;		/* a client stopped early: its sample array was full */
	char transport[8];	/* what the clients use */
	char var_name[64];
	double prep_s;	      /* preparing (and verifying) the variable */
	double client_cpu_us; /* user + system CPU of this process per operation, measured loop */
	uint64_t calls;	      /* every call this process made: the loop's, preparation, checks */
};

/* ---- bench_ps_ids.c -------------------------------------------------------------------------- */

/** bp_rand() - the next word of the splitmix64 sequence in @state. */
uint64_t bp_rand(uint64_t *state);

/**
 * Zipf(s) over ranks 1..n by rejection-inversion (W. Hormann, G. Derflinger, "Rejection-
 * inversion to generate variates from monotone discrete distributions", 1996): O(1) per draw,
 * no table, exact for any n and s > 0.
 */
struct bp_zipf {
	uint64_t n;
	double s;
	double h_x1; /* H(1.5) - 1 */
	double h_n;  /* H(n + 0.5) */
	double cut;  /* 2 - H^-1(H(2.5) - h(2)): draws this close to k are accepted at once */
};

/** bp_zipf_init() - the sampler for @n ranks and exponent @s; -EINVAL if n == 0 or s <= 0. */
int bp_zipf_init(struct bp_zipf *z, uint64_t n, double s);

/** bp_zipf_draw() - a rank in [1, n] with probability proportional to rank^-s. */
uint64_t bp_zipf_draw(const struct bp_zipf *z, uint64_t *state);

/**
 * bp_ids_make() - fill @ids with @o->pool batches of @o->batch ids drawn as @o says (seeded by
 * @o->seed), each sorted if @o->sorted. Returns the mean number of distinct ids per batch.
 */
double bp_ids_make(const struct bp_opts *o, uint64_t *ids);

/** bp_marked() - whether row @id is one of the rows the data checks know. */
bool bp_marked(uint64_t id);

/** bp_pattern() - the value of column @j of marked row @id of the prepared pull variable. */
float bp_pattern(uint64_t id, uint32_t j);

/** bp_grad() - the gradient the push test sends for column @j (every row alike). */
float bp_grad(uint32_t j);

/* ---- bench_ps_run.c -------------------------------------------------------------------------- */

/**
 * bp_run() - connect @o->clients clients, declare and prepare the variable, run the test and
 * check the data. 0 when everything ran (res->bad_rows says whether the data checked), a
 * negative code after a failure (already reported on stderr).
 */
int bp_run(const struct bp_opts *o, struct bp_result *res);

#endif
