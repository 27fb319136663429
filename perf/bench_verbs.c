/*
 * psplus-bench-verbs: the raw-verbs reference for psplus-bench-tp's gather test.
 *
 *   psplus-bench-verbs -d ADDR [--rows N --row-size B] [-D SEC | -n OPS] [options]
 *
 * psplus-bench-tp's gather writes random rows of a registered table with one ps_tp_write_imm
 * whose gather list has an SGE per row; the rdma backend splits it into RDMA_WRITEs of max_sge
 * SGEs plus a trailer SEND. This program runs the same pair of workloads with nothing of psplus
 * in between, so that both ratios, taken on the same device in the same boot, tell whether a
 * gap is the transport's or the device's:
 *   gather:     --rows rows of --row-size bytes at random row-aligned offsets of the table, into
 *               one destination slot, as a chain of RDMA_WRITEs of max_sge SGEs (the device's,
 *               capped at 32 as psplus's), one ibv_post_send per gather;
 *   contiguous: the same number of bytes at a random offset of the same table as ONE SGE, one
 *               RDMA_WRITE per operation.
 * Both keep -q operations in flight, signal the last WR of every -Q-th one (one completion of
 * an RC QP stands for all before it), poll completions 32 at a time, and run in K pairs of
 * rounds (gather, then contiguous: both see the same moment of a shared host).
 *
 * The target (--target): passive by default, as perftest's ib_write_bw (no receives, no CPU);
 * "spin" adds a thread busy-polling the target's CQ, as psplus-bench-tp's receiving process
 * does; "imm" also takes psplus's wire pattern: contiguous as RDMA_WRITE_WITH_IMM, a gather of
 * more than one WR as its RDMA_WRITEs plus an 8-byte SEND_WITH_IMM trailer, the thread
 * reposting the receives they consume. What is left between that and psplus is psplus's own
 * software.
 *
 * One process, one RC connection over rdma_cm on the device that owns ADDR: a listener and a
 * connecting id on one event channel, driven by one loop. The accepted id writes (as
 * psplus-bench-tp's server, which owns the table); the connecting id owns the destination. rxe
 * does a requester's work in the poster's system call and in softirq. Verbs and rdma_cm calls
 * go through the verbs shim only. Every round is checked: each destination slot must hold the
 * rows of the last operation written to it (positional checksums, bench_common.h); a mismatch
 * fails the run (exit 1). Bad options: exit 2.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/mem.h"
#include "perf/bench_common.h"
#include "transport/rdma/verbs_shim.h"

#define BV_PROG		   "psplus-bench-verbs"
#define DEF_DEPTH	   128	/* psplus-bench-tp's -q (perftest's tx depth) */
#define DEF_ITERS	   5000 /* operations per round without -D (perftest's bw default) */
#define DEF_PAIRS	   5
#define DEF_TIMEOUT_MS	   60000
#define MAX_PAIRS	   64u /* short rounds, many pairs: the host's load drifts less within one */
#define MAX_DEPTH	   4096u
#define SGE_CAP		   32u	       /* psplus's rdma backend uses at most 32 SGEs per WR */
#define DST_MAX		   (16u << 20) /* destination: a slot per operation in flight, at most */
#define POLL_BATCH	   32
#define RX_LEN		   64u	/* --target imm: the receive buffer (trailers are 8 bytes) */
#define TRAILER_LEN	   8u	/* psplus's trailer of a split write_imm */
#define RESOLVE_TIMEOUT_MS 5000 /* local addresses resolve at once; this bounds a broken set-up */
#define DRAIN_TIMEOUT_MS   5000 /* the disconnect handshake and the last receives */
#define OP_MIX		   0x9e3779b97f4a7c15ull
#define ROW_MIX		   0xc2b2ae3d27d4eb4full

enum bv_target { TGT_PASSIVE, TGT_SPIN, TGT_IMM };
static const char *const target_names[] = {"passive", "spin", "imm"};

/*
 * The device's hw_counters read around each round (rxe has them): packets, and the
 * retransmissions that stall an RC QP for its timeout when a packet is lost, which tell a
 * stalled round from a slow one.
 */
static const char *const cnt_names[] = {"sent_pkts", "completer_retry_err", "duplicate_request",
					"rcvd_rnr_err", "send_rnr_err"};
#define NCNT (sizeof(cnt_names) / sizeof(cnt_names[0]))

struct bv_opts {
	const char *dev_addr; /* -d: a local address of the device */
	uint32_t rows, row_size;
	int rows_seq;	  /* --row-order seq: consecutive rows from a random start, SGE each */
	uint32_t max_sge; /* --max-sge; 0: the device's, capped at SGE_CAP */
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
	struct ps_mem table, dst;	  /* rows; nslots slots of stride bytes + RX_LEN */
	struct ibv_mr *table_mr, *dst_mr;
	uint64_t table_len;	 /* the size asked for (table.len may be rounded up) */
	uint64_t size, stride;	 /* bytes per operation; slot distance (size rounded up to 64) */
	uint32_t nslots;	 /* min(depth, DST_MAX / stride) */
	uint32_t max_sge;	 /* SGEs per WR of the gather */
	uint32_t dev_max_sge;	 /* the device's */
	uint32_t mtu;		 /* active MTU, bytes */
	uint8_t port;		 /* the port of -d */
	uint32_t send_wr;	 /* the writer's send queue: depth x WRs of a gather */
	uint32_t recv_wr;	 /* --target imm: receives kept posted */
	struct ibv_send_wr *wrs; /* one operation's chain (reused: posting copies it) */
	struct ibv_sge *sges;	 /* one operation's gather list, then the trailer's SGE */
	struct ibv_wc wc[POLL_BATCH];
	bool cli_up, srv_up; /* ESTABLISHED seen */
	char dev[64];
	/* The target's thread (--target spin|imm); it owns cli_cq and cli_id's receive queue. */
	pthread_t rx;
	bool rx_started;
	atomic_bool rx_stop;
	atomic_uint_fast64_t rx_seen; /* receive completions */
	atomic_int rx_err;
	struct ibv_recv_wr rx_wr[POLL_BATCH]; /* all on rx_sge: what lands there is not read */
	struct ibv_sge rx_sge;
	uint64_t ops_total; /* operations completed over all rounds */
};

/* What one round measured (duration mode: the sampled window, as perftest and psplus-bench-tp). */
struct bv_meas {
	uint64_t ops;			   /* operations completed */
	uint64_t win_ops, win_ns;	   /* inside the window */
	uint64_t bad_slots, checked_bytes; /* the data check */
	uint64_t cnt[NCNT];		   /* hw_counters moved over the round */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " BV_PROG " -d ADDR [options]\n"
		"Raw-verbs reference for psplus-bench-tp -t gather: gather rounds against contiguous\n"
		"rounds of the same bytes, in pairs, on one RC connection (both ends in this process).\n"
		"  -d, --dev ADDR          a local address of the RDMA device (required)\n"
		"      --rows N            rows per gather (default 256)\n"
		"      --row-size B        bytes per row, a multiple of 8 (default 256)\n"
		"      --row-order ORDER   random (default) or seq (consecutive rows, SGE each)\n"
		"      --table-size S      the registered table (default 1G, at least 1M)\n"
		"      --max-sge N         SGEs per RDMA_WRITE (default: the device's, at most 32)\n"
		"      --target MODE       passive (default), spin (a thread polls the target's CQ) or\n"
		"                          imm (spin + psplus's write_imm / trailer SEND_WITH_IMM)\n"
		"  -q, --tx-depth N        operations in flight (default %u)\n"
		"  -Q, --cq-mod N          signal every N-th operation's last WR (default 1)\n"
		"  -D, --duration SEC      each round runs SEC seconds (else -n operations)\n"
		"  -f, --margin SEC        duration mode: not sampled at either end (perftest's -f)\n"
		"  -n, --iters N           operations per round without -D (default %u)\n"
		"      --contig-pairs K    pairs of rounds (default %u, at most %u)\n"
		"      --seed N            seed of the table and the row draws (default: fresh)\n"
		"      --json FILE         the results as JSON too\n"
		"      --timeout SEC       give up on a step without progress that long (default 60)\n"
		"Units as perftest: MB/sec is MiB/s. Exit: 0, 1 failure or data check, 2 bad option.\n",
		DEF_DEPTH, DEF_ITERS, DEF_PAIRS, MAX_PAIRS);
}

/* An option: its getopt_long entry, where the value goes and what it may be. */
enum opt_kind { OPT_U32, OPT_U64, OPT_MS, OPT_STR, OPT_CHOICE };
struct opt_def {
	struct option lo; /* long-only options use letters absent from the short string */
	enum opt_kind kind;
	void *dst;
	uint64_t min, max;	    /* the range; OPT_CHOICE: the number of choices */
	const char *const *choices; /* OPT_CHOICE: the names, stored as an int index */
};

static int opt_set(const struct opt_def *d, const char *arg)
{
	uint64_t v = 0;

	switch (d->kind) {
	case OPT_STR:
		*(const char **)d->dst = arg;
		return 0;
	case OPT_CHOICE:
		while (v < d->max && strcmp(arg, d->choices[v]))
			v++;
		if (v == d->max)
			return -EINVAL;
		*(int *)d->dst = (int)v;
		return 0;
	case OPT_MS:
		if (bench_parse_seconds(arg, &v) || v < d->min)
			return -EINVAL;
		break;
	default:
		if (bench_parse_size(arg, &v) || v < d->min || v > d->max)
			return -EINVAL;
	}
	if (d->kind == OPT_U32)
		*(uint32_t *)d->dst = (uint32_t)v;
	else
		*(uint64_t *)d->dst = v;
	return 0;
}

static int parse_opts(int argc, char **argv, struct bv_opts *o)
{
	static const char *const orders[] = {"random", "seq"};
	/* Every option takes a value; OPT() keeps each on one line. */
#define OPT(name, c, kind, dst, min, max, choices)                               \
	{                                                                        \
		{name, required_argument, NULL, c}, kind, dst, min, max, choices \
	}
	const struct opt_def defs[] = {
		OPT("dev", 'd', OPT_STR, &o->dev_addr, 0, 0, NULL),
		OPT("rows", 'r', OPT_U32, &o->rows, 1, 1u << 16, NULL),
		OPT("row-size", 'z', OPT_U32, &o->row_size, 8, DST_MAX, NULL),
		OPT("row-order", 'o', OPT_CHOICE, &o->rows_seq, 0, 2, orders),
		OPT("table-size", 't', OPT_U64, &o->table_size, 1u << 20, UINT64_MAX, NULL),
		OPT("max-sge", 'm', OPT_U32, &o->max_sge, 1, SGE_CAP, NULL),
		OPT("target", 'g', OPT_CHOICE, &o->target, 0, 3, target_names),
		OPT("tx-depth", 'q', OPT_U32, &o->depth, 1, MAX_DEPTH, NULL),
		OPT("cq-mod", 'Q', OPT_U32, &o->cq_mod, 1, MAX_DEPTH, NULL),
		OPT("duration", 'D', OPT_MS, &o->duration_ms, 1, 0, NULL),
		OPT("margin", 'f', OPT_MS, &o->margin_ms, 0, 0, NULL),
		OPT("iters", 'n', OPT_U64, &o->iters, 1, UINT64_MAX, NULL),
		OPT("contig-pairs", 'P', OPT_U32, &o->pairs, 1, MAX_PAIRS, NULL),
		OPT("seed", 'S', OPT_U64, &o->seed, 0, UINT64_MAX, NULL),
		OPT("json", 'j', OPT_STR, &o->json, 0, 0, NULL),
		OPT("timeout", 'T', OPT_MS, &o->timeout_ms, 1, 0, NULL),
	};
#undef OPT
	const size_t ndefs = sizeof(defs) / sizeof(defs[0]);
	struct option lopts[sizeof(defs) / sizeof(defs[0]) + 2] = {{"help", 0, NULL, 'h'}};
	size_t k;
	int c, li;

	*o = (struct bv_opts){.rows = 256,
			      .row_size = 256,
			      .depth = DEF_DEPTH,
			      .cq_mod = 1,
			      .pairs = DEF_PAIRS,
			      .table_size = 1ull << 30,
			      .timeout_ms = DEF_TIMEOUT_MS};
	for (k = 0; k < ndefs; k++)
		lopts[k + 1] = defs[k].lo;
	while ((li = -1, c = getopt_long(argc, argv, "d:q:Q:D:f:n:h", lopts, &li)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		for (k = 0; k < ndefs && defs[k].lo.val != c; k++)
			;
		if (k == ndefs) {
			usage(stderr);
			return -EINVAL;
		}
		if (opt_set(&defs[k], optarg) || (c == 'z' && o->row_size % 8)) {
			bench_bad_option(BV_PROG, lopts, li, c, optarg);
			return -EINVAL;
		}
		o->margin_set |= c == 'f';
	}
	if (optind < argc) {
		fprintf(stderr, BV_PROG ": unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	/* Checks of two options together; the message names them. */
	if (!o->dev_addr) {
		fprintf(stderr, BV_PROG ": option -d/--dev ADDR is required\n");
		return -EINVAL;
	}
	if ((uint64_t)o->rows * o->row_size > DST_MAX ||
	    (uint64_t)o->rows * o->row_size > o->table_size) {
		fprintf(stderr,
			BV_PROG ": options --rows x --row-size: more than %u bytes or than "
				"--table-size\n",
			DST_MAX);
		return -EINVAL;
	}
	if (o->cq_mod > o->depth) {
		fprintf(stderr, BV_PROG ": option -Q/--cq-mod %u exceeds -q/--tx-depth %u\n",
			o->cq_mod, o->depth);
		return -EINVAL;
	}
	if (o->duration_ms)
		return bench_margin_resolve(BV_PROG, o->duration_ms, o->margin_set, &o->margin_ms);
	if (!o->iters)
		o->iters = DEF_ITERS;
	return 0;
}

/* ---- operations ----------------------------------------------------------------------------- */

/* Every operation draws its own rows, reproducible from (seed, op) for the data check. */
static inline uint64_t op_seed(uint64_t seed, uint64_t op)
{
	return bench_mix64(seed ^ (op * OP_MIX));
}

/* Row @k of the operation of seed @g: multiply-shift maps 64 random bits onto [0, nrows). */
static inline uint64_t row_of(const struct bv_shape *s, uint64_t g, uint32_t k)
{
	uint64_t x = bench_mix64(s->seq ? g : g + k * ROW_MIX);
	uint64_t r = (uint64_t)(((unsigned __int128)x * s->nrows) >> 64);

	return s->seq ? (r + k) % s->nrows : r;
}

static struct bv_shape shape_make(const struct bv *b, bool gather)
{
	const struct bv_opts *o = b->o;
	struct bv_shape s = {.name = gather ? "gather" : "contiguous",
			     .rows = gather ? o->rows : 1,
			     .row_size = gather ? o->row_size : (uint32_t)b->size,
			     .seq = gather && o->rows_seq};

	s.per_wr = s.rows < b->max_sge ? s.rows : b->max_sge;
	s.nwr = (s.rows + s.per_wr - 1) / s.per_wr;
	s.trailer = o->target == TGT_IMM && s.nwr > 1;
	s.nrows = b->table_len / s.row_size;
	return s;
}

/* The fields of the chain that stay the same for a whole round. */
static void chain_prepare(struct bv *b, const struct bv_shape *s)
{
	uint32_t n = s->nwr + s->trailer;
	bool imm = b->o->target == TGT_IMM;

	for (uint32_t w = 0; w < s->nwr; w++) {
		uint32_t first = w * s->per_wr;

		b->wrs[w] = (struct ibv_send_wr){
			.next = w + 1 < n ? &b->wrs[w + 1] : NULL,
			.sg_list = &b->sges[first],
			.num_sge = (int)(s->rows - first < s->per_wr ? s->rows - first : s->per_wr),
			.opcode =
				imm && s->nwr == 1 ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE,
			.wr.rdma.rkey = b->dst_mr->rkey};
	}
	for (uint32_t k = 0; k < s->rows; k++)
		b->sges[k] = (struct ibv_sge){.length = s->row_size, .lkey = b->table_mr->lkey};
	if (s->trailer) { /* its bytes are not read: the first of the table will do */
		b->sges[s->rows] = (struct ibv_sge){.addr = (uintptr_t)b->table.addr,
						    .length = TRAILER_LEN,
						    .lkey = b->table_mr->lkey};
		b->wrs[s->nwr] = (struct ibv_send_wr){
			.sg_list = &b->sges[s->rows], .num_sge = 1, .opcode = IBV_WR_SEND_WITH_IMM};
	}
}

/* Operation @op: its rows into slot op % nslots, one ibv_post_send for the whole chain. */
static int post_op(struct bv *b, const struct bv_shape *s, uint64_t seed, uint64_t op, bool sig)
{
	uint64_t g = op_seed(seed, op);
	uintptr_t table = (uintptr_t)b->table.addr;
	uint64_t remote = (uintptr_t)b->dst.addr + (op % b->nslots) * b->stride;
	struct ibv_send_wr *last = &b->wrs[s->nwr + s->trailer - 1];

	for (uint32_t k = 0; k < s->rows; k++)
		b->sges[k].addr = table + row_of(s, g, k) * s->row_size;
	for (uint32_t w = 0; w < s->nwr; w++)
		b->wrs[w].wr.rdma.remote_addr = remote + (uint64_t)w * s->per_wr * s->row_size;
	last->wr_id = op;
	last->imm_data = htonl((uint32_t)op);
	last->send_flags = sig ? IBV_SEND_SIGNALED : 0;
	return ps_vshim_post_send(b->srv_id->qp, b->wrs, NULL);
}

/*
 * The data check of a round that completed @ops operations: slot k holds the last operation
 * written to it; its checksum must equal the sum of its rows' checksums, each taken from the
 * table at the row's place in the slot. Returns the number of slots that differ.
 */
static uint64_t slots_check(const struct bv *b, const struct bv_shape *s, uint64_t seed,
			    uint64_t ops, uint64_t *checked)
{
	const uint8_t *table = b->table.addr, *dst = b->dst.addr;
	uint32_t n = ops < b->nslots ? (uint32_t)ops : b->nslots;
	uint64_t bad = 0;

	for (uint32_t k = 0; k < n; k++) {
		uint64_t op = k + (uint64_t)b->nslots * ((ops - 1 - k) / b->nslots);
		uint64_t g = op_seed(seed, op), want = 0;

		for (uint32_t i = 0; i < s->rows; i++)
			want += bench_csum(table + row_of(s, g, i) * s->row_size, s->row_size,
					   (uint64_t)i * s->row_size / 8);
		bad += bench_csum(dst + k * b->stride, b->size, 0) != want;
		*checked += b->size;
	}
	return bad;
}

/*
 * The target's thread: busy-polls the target's CQ as psplus-bench-tp's receiving process polls
 * its loop, and puts back (one doorbell per batch) the receives that immediates consumed.
 */
static void *target_main(void *arg)
{
	struct bv *b = arg;
	struct ibv_wc wc[POLL_BATCH];
	int n, rc;

	while (!atomic_load(&b->rx_stop)) {
		n = ps_vshim_cq_poll(b->cli_cq, POLL_BATCH, wc);
		for (int i = 0; i < n; i++)
			if (wc[i].status != IBV_WC_SUCCESS)
				atomic_store(&b->rx_err, -EIO);
		if (n < 0)
			atomic_store(&b->rx_err, n);
		if (n <= 0)
			continue;
		b->rx_wr[n - 1].next = NULL;
		rc = ps_vshim_post_recv(b->cli_id->qp, b->rx_wr, NULL);
		b->rx_wr[n - 1].next = n < POLL_BATCH ? &b->rx_wr[n] : NULL;
		if (rc)
			atomic_store(&b->rx_err, rc);
		atomic_fetch_add(&b->rx_seen, (uint_fast64_t)n);
	}
	return NULL;
}

/* ---- one round ------------------------------------------------------------------------------ */

/*
 * Keep -q operations in flight, signal every cq_mod-th one (and the last), refill as
 * completions come back. Duration mode samples like perftest: operations completed between
 * margin and duration - margin after the start, over the time between the first and the last
 * completion seen inside that span; at the duration, posting stops at the next signalled
 * operation and the window drains.
 */
static int round_run(struct bv *b, const struct bv_shape *s, uint64_t seed, struct bv_meas *m)
{
	const struct bv_opts *o = b->o;
	const uint64_t tmo = o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t limit = o->duration_ms ? UINT64_MAX : o->iters, posted = 0, done = 0;
	uint64_t t0 = bench_now_ns(), now = t0, progress = t0;
	uint64_t stop = t0 + o->duration_ms * PS_NSEC_PER_MSEC;
	uint64_t w_lo = t0 + o->margin_ms * PS_NSEC_PER_MSEC, w_hi = stop - (w_lo - t0);
	uint64_t w_t0 = 0, w_t1 = 0, w_o0 = 0, w_o1 = 0;
	int n, rc;

	chain_prepare(b, s);
	while (done < limit) {
		for (; posted < limit && posted - done < o->depth; posted++) {
			rc = post_op(b, s, seed, posted,
				     (posted + 1) % o->cq_mod == 0 || posted + 1 == limit);
			if (rc) {
				fprintf(stderr, BV_PROG ": %s: posting operation %" PRIu64 ": %s\n",
					s->name, posted, ps_strerror(rc));
				return rc;
			}
		}
		n = ps_vshim_cq_poll(b->srv_cq, POLL_BATCH, b->wc);
		now = bench_now_ns();
		for (int i = 0; i < n; i++) {
			if (b->wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, BV_PROG ": %s: operation %" PRIu64 " failed: %s\n",
					s->name, (uint64_t)b->wc[i].wr_id,
					ps_vshim_wc_status_str(b->wc[i].status));
				return -EIO;
			}
			/* RC completes in order: one completion stands for every earlier WR. */
			if (b->wc[i].wr_id + 1 > done)
				done = b->wc[i].wr_id + 1;
		}
		if (n < 0 || (n == 0 && now - progress > tmo)) {
			fprintf(stderr, BV_PROG ": %s: %s (%" PRIu64 " posted, %" PRIu64 " done)\n",
				s->name, n < 0 ? ps_strerror(n) : "no completion within --timeout",
				posted, done);
			return n < 0 ? n : PS_ETIMEOUT;
		}
		if (n == 0)
			continue;
		progress = now;
		if (o->duration_ms && !w_t0 && now >= w_lo) {
			w_t0 = w_t1 = now;
			w_o0 = w_o1 = done;
		} else if (w_t0 && now <= w_hi) {
			w_t1 = now;
			w_o1 = done;
		}
		if (o->duration_ms && limit == UINT64_MAX && now >= stop)
			limit = (posted + o->cq_mod - 1) / o->cq_mod * o->cq_mod;
	}
	m->ops = done;
	m->win_ops = w_o1 - w_o0;
	m->win_ns = w_t1 - w_t0;
	if (!m->win_ops || !m->win_ns) {
		if (o->duration_ms)
			fprintf(stderr, BV_PROG ": warning: nothing completed inside the sampled "
						"window; reporting the whole round\n");
		m->win_ops = done;
		m->win_ns = progress - t0;
	}
	return 0;
}

/* The counters of cnt_names; 0 for those the device does not have. */
static void counters_read(const struct bv *b, uint64_t *v)
{
	char path[256];
	unsigned long long x;
	FILE *f;

	for (size_t i = 0; i < NCNT; i++) {
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%u/hw_counters/%s",
			 b->dev, b->port, cnt_names[i]);
		f = fopen(path, "r");
		x = 0;
		if (f && fscanf(f, "%llu", &x) != 1)
			x = 0;
		if (f)
			fclose(f);
		v[i] = x;
	}
}

/* A round, its data check and the counters around it, into @r (a line of the table). */
static int round_measure(struct bv *b, const struct bv_shape *s, uint64_t seed, struct bv_meas *m,
			 struct bench_row *r)
{
	uint64_t c0[NCNT], c1[NCNT];
	double secs;
	int rc;

	memset(m, 0, sizeof(*m));
	memset(b->dst.addr, 0, (size_t)b->nslots * b->stride);
	counters_read(b, c0);
	rc = round_run(b, s, seed, m);
	counters_read(b, c1);
	if (rc)
		return rc;
	for (size_t i = 0; i < NCNT; i++)
		m->cnt[i] = c1[i] - c0[i];
	m->bad_slots = slots_check(b, s, seed, m->ops, &m->checked_bytes);
	b->ops_total += m->ops;
	secs = (double)m->win_ns / 1e9;
	*r = (struct bench_row){
		.bytes = b->size,
		.iters = m->win_ops,
		.bw_mbs = secs > 0 ? (double)(m->win_ops * b->size) / secs / BENCH_MIB : 0,
		.mpps = secs > 0 ? (double)m->win_ops / secs / 1e6 : 0,
		.check_ok = m->bad_slots == 0,
		.checked = m->checked_bytes,
		.bytes_copied = -1};
	return 0;
}

/* ---- set-up and teardown ------------------------------------------------------------------- */

static int failed(const char *what, int rc)
{
	fprintf(stderr, BV_PROG ": %s: %s\n", what, ps_strerror(rc));
	return rc;
}

static void print_banner(const struct bv *b, const struct bv_shape *g, const struct bv_shape *c)
{
	const struct bv_opts *o = b->o;

	printf("%s\n", BENCH_TABLE_RULE);
	printf("                    raw verbs Gather RDMA_Write BW Test (registered table rows)\n");
	printf(" Device          : %-10s\tAddress        : %s\n", b->dev, o->dev_addr);
	printf(" Connection      : RC, rdma_cm, one process\tTarget         : %s\n",
	       target_names[o->target]);
	printf(" Tx depth        : %-10u\tCQ Moderation  : %u\n", o->depth, o->cq_mod);
	printf(" Mtu             : %-10u\tMax SGE        : %u (device %u)\n", b->mtu, b->max_sge,
	       b->dev_max_sge);
	if (o->duration_ms)
		printf(" Duration        : %.1f s\t\tMargin         : %.1f s\n",
		       (double)o->duration_ms / 1000, (double)o->margin_ms / 1000);
	else
		printf(" Iterations      : %" PRIu64 "\n", o->iters);
	printf(" Gather          : %u %s rows x %u B: %u RDMA_WRITE of up to %u SGEs%s per post\n",
	       g->rows, g->seq ? "consecutive" : "random", g->row_size, g->nwr, g->per_wr,
	       g->trailer ? " + SEND_WITH_IMM" : "");
	printf(" Contiguous      : %" PRIu64 " B as ONE SGE: 1 RDMA_WRITE%s per post\n", b->size,
	       c->nwr == 1 && o->target == TGT_IMM ? "_WITH_IMM" : "");
	fflush(stdout);
}

/* Allocate (huge pages if any, faulted in), fill and register the table, as psplus-bench-tp. */
static int memory_setup(struct bv *b, uint64_t seed)
{
	uint64_t t0 = ps_clock_now_ns(), t1;
	char err[512];
	int rc;

	if (ps_mem_memlock_ensure(b->o->table_size + DST_MAX + RX_LEN, err, sizeof(err)))
		fprintf(stderr, BV_PROG ": %s\n", err);
	rc = ps_mem_alloc(b->o->table_size, -1, PS_MEM_HUGEPAGES | PS_MEM_POPULATE, &b->table);
	if (rc)
		return failed("allocating the table", rc);
	bench_fill_index(b->table.addr, b->table_len, seed);
	t1 = ps_clock_now_ns();
	rc = ps_vshim_mr_reg(b->pd, b->table.addr, b->table_len, IBV_ACCESS_LOCAL_WRITE,
			     &b->table_mr);
	if (rc)
		return failed("registering the table", rc);
	printf(" Table           : %" PRIu64 " MiB (%s pages), filled in %.2f s, registered in "
	       "%.2f s\n",
	       b->table_len >> 20, b->table.huge ? "huge" : "4 KiB", (double)(t1 - t0) / 1e9,
	       (double)(ps_clock_now_ns() - t1) / 1e9);
	rc = ps_mem_alloc((size_t)b->nslots * b->stride + RX_LEN, -1, PS_MEM_POPULATE, &b->dst);
	if (!rc)
		rc = ps_vshim_mr_reg(b->pd, b->dst.addr, b->dst.len,
				     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, &b->dst_mr);
	if (rc)
		return failed("allocating and registering the destination", rc);
	b->rx_sge = (struct ibv_sge){.addr = (uintptr_t)b->dst.addr + b->nslots * b->stride,
				     .length = RX_LEN,
				     .lkey = b->dst_mr->lkey};
	for (int i = 0; i < POLL_BATCH; i++)
		b->rx_wr[i] =
			(struct ibv_recv_wr){.next = i + 1 < POLL_BATCH ? &b->rx_wr[i + 1] : NULL,
					     .sg_list = &b->rx_sge,
					     .num_sge = 1};
	return 0;
}

/* The device behind the listen address: its limits decide the SGEs per WR and the queues. */
static int device_setup(struct bv *b)
{
	const struct bv_opts *o = b->o;
	struct ibv_context *ctx = b->listen_id->verbs;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	uint32_t gather_wrs;
	int rc;

	b->port = b->listen_id->port_num;
	snprintf(b->dev, sizeof(b->dev), "%s", ps_vshim_device_name(ctx->device));
	rc = ps_vshim_device_query(ctx, &da);
	if (!rc)
		rc = ps_vshim_port_query(ctx, b->port, &pa);
	if (rc)
		return failed("querying the device", rc);
	b->mtu = ps_vshim_mtu_bytes(pa.active_mtu);
	b->dev_max_sge = da.max_sge > 0 ? (uint32_t)da.max_sge : 1;
	b->max_sge = b->dev_max_sge < SGE_CAP ? b->dev_max_sge : SGE_CAP;
	if (o->max_sge && o->max_sge < b->max_sge)
		b->max_sge = o->max_sge;
	gather_wrs = (o->rows + b->max_sge - 1) / b->max_sge + 1; /* + the trailer */
	b->send_wr = o->depth * gather_wrs;
	/* Receives outlive their operation's completion until the thread reposts them. */
	b->recv_wr = o->target == TGT_IMM ? (2 * o->depth / POLL_BATCH + 2) * POLL_BATCH : 1;
	if (b->send_wr > (uint32_t)da.max_qp_wr || b->recv_wr + 1 > (uint32_t)da.max_cqe) {
		fprintf(stderr,
			BV_PROG ": option -q/--tx-depth %u: %u work requests exceed %s's "
				"max_qp_wr %d or max_cqe %d\n",
			o->depth, b->send_wr, b->dev, da.max_qp_wr, da.max_cqe);
		return PS_EBAD_OPTION;
	}
	b->table_len = o->table_size; /* rows are drawn from the size asked for */
	b->size = (uint64_t)o->rows * o->row_size;
	b->stride = (b->size + 63) & ~63ull;
	b->nslots = DST_MAX / b->stride < o->depth ? (uint32_t)(DST_MAX / b->stride) : o->depth;
	b->wrs = calloc(gather_wrs, sizeof(*b->wrs));
	b->sges = calloc(o->rows + 1, sizeof(*b->sges));
	if (!b->wrs || !b->sges)
		return failed("allocating the work requests", -ENOMEM);
	rc = ps_vshim_pd_alloc(ctx, &b->pd);
	if (!rc)
		rc = ps_vshim_cq_create(ctx, (int)o->depth + 1, b, NULL, 0, &b->srv_cq);
	if (!rc)
		rc = ps_vshim_cq_create(ctx, (int)b->recv_wr + 1, b, NULL, 0, &b->cli_cq);
	return rc ? failed("creating the PD and CQs", rc) : 0;
}

/* The RC QP of @id: rdma_cm gives both ids the listener's device, so the one PD serves both. */
static int qp_create(struct bv *b, struct rdma_cm_id *id, bool writer)
{
	struct ibv_qp_init_attr a = {.send_cq = writer ? b->srv_cq : b->cli_cq,
				     .recv_cq = writer ? b->srv_cq : b->cli_cq,
				     .cap = {.max_send_wr = writer ? b->send_wr : 1,
					     .max_recv_wr = writer ? 1 : b->recv_wr,
					     .max_send_sge = writer ? b->max_sge : 1,
					     .max_recv_sge = 1},
				     .qp_type = IBV_QPT_RC};
	int rc;

	if (id->verbs != b->pd->context) {
		fprintf(stderr, BV_PROG ": the connection is not on %s's context\n", b->dev);
		return -EXDEV;
	}
	rc = ps_vshim_qp_create(id, b->pd, &a);
	if (rc)
		return failed("creating a QP", rc);
	/* The target's receives go up before connecting: the first immediate may come at once. */
	for (uint32_t k = 0; !rc && !writer && b->o->target == TGT_IMM && k < b->recv_wr;
	     k += POLL_BATCH)
		rc = ps_vshim_post_recv(id->qp, b->rx_wr, NULL);
	return rc ? failed("posting receives", rc) : 0;
}

/* One event of the connection set-up; both ids' events arrive on the one channel. */
static int cm_step(struct bv *b, struct rdma_cm_event *ev, struct rdma_cm_id **stray)
{
	struct rdma_conn_param param = {.retry_count = 7, .rnr_retry_count = 7};
	int rc;

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		rc = ps_vshim_cm_resolve_route(b->cli_id, RESOLVE_TIMEOUT_MS);
		return rc ? failed("resolving the route", rc) : 0;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		rc = qp_create(b, b->cli_id, false);
		if (!rc && (rc = ps_vshim_cm_connect(b->cli_id, &param)))
			failed("connecting", rc);
		return rc;
	case RDMA_CM_EVENT_CONNECT_REQUEST:
		if (b->srv_id) { /* not ours (the port is an ephemeral one): refuse, destroy */
			ps_vshim_cm_reject(ev->id, NULL, 0);
			*stray = ev->id;
			return 0;
		}
		b->srv_id = ev->id;
		rc = qp_create(b, b->srv_id, true);
		if (!rc && (rc = ps_vshim_cm_accept(b->srv_id, &param)))
			failed("accepting", rc);
		return rc;
	case RDMA_CM_EVENT_ESTABLISHED:
		b->cli_up |= ev->id == b->cli_id;
		b->srv_up |= ev->id == b->srv_id;
		return 0;
	default:
		fprintf(stderr, BV_PROG ": %s (status %d) while connecting\n",
			ps_vshim_cm_event_str(ev->event), ev->status);
		return -ECONNABORTED;
	}
}

/* Listen on port 0 of @addr (the kernel's choice never collides), connect to it, accept. */
static int connect_self(struct bv *b, struct sockaddr_storage *addr)
{
	uint64_t deadline = ps_clock_deadline_ms(b->o->timeout_ms);
	uint16_t port;
	struct rdma_cm_event *ev;
	int rc;

	rc = ps_vshim_cm_listen(b->listen_id, 1);
	if (rc)
		return failed("listening", rc);
	port = htons(ps_vshim_cm_src_port(b->listen_id));
	if (addr->ss_family == AF_INET)
		((struct sockaddr_in *)addr)->sin_port = port;
	else
		((struct sockaddr_in6 *)addr)->sin6_port = port;
	rc = ps_vshim_cm_id_create(b->cm_ch, b, RDMA_PS_TCP, &b->cli_id);
	if (!rc)
		rc = ps_vshim_cm_resolve_addr(b->cli_id, NULL, (struct sockaddr *)addr,
					      RESOLVE_TIMEOUT_MS);
	if (rc)
		return failed("resolving the address", rc);
	while (!(b->cli_up && b->srv_up)) {
		struct rdma_cm_id *stray = NULL;

		rc = ps_vshim_cm_event_get(b->cm_ch, ps_clock_remaining_ms(deadline), &ev);
		if (rc)
			return failed(rc == PS_ETIMEOUT ? "connecting within --timeout"
							: "waiting for a cm event",
				      rc);
		rc = cm_step(b, ev, &stray);
		ps_vshim_cm_event_ack(ev);
		ps_vshim_cm_id_destroy(stray);
		if (rc)
			return rc;
	}
	if (b->o->target != TGT_PASSIVE) {
		rc = -pthread_create(&b->rx, NULL, target_main, b);
		b->rx_started = !rc;
	}
	return rc ? failed("starting the target's thread", rc) : 0;
}

static int setup(struct bv *b, const struct bv_opts *o, uint64_t seed)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res;
	struct sockaddr_storage addr = {0};
	struct bv_shape sg, sc;
	int rc;

	if (getaddrinfo(o->dev_addr, NULL, &hints, &res)) {
		fprintf(stderr, BV_PROG ": option -d/--dev: '%s' is not a numeric address\n",
			o->dev_addr);
		return PS_EBAD_OPTION;
	}
	memcpy(&addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	rc = ps_vshim_cm_channel_create(&b->cm_ch);
	if (!rc)
		rc = ps_vshim_cm_id_create(b->cm_ch, b, RDMA_PS_TCP, &b->listen_id);
	if (rc)
		return failed("creating the cm channel and id", rc);
	rc = ps_vshim_cm_bind(b->listen_id, (struct sockaddr *)&addr);
	if (rc)
		return failed("binding the address of -d", rc);
	if (!b->listen_id->verbs) {
		fprintf(stderr, BV_PROG ": %s is not the address of an RDMA device\n", o->dev_addr);
		return PS_ENO_DEVICE;
	}
	rc = device_setup(b);
	if (rc)
		return rc;
	sg = shape_make(b, true);
	sc = shape_make(b, false);
	print_banner(b, &sg, &sc);
	rc = memory_setup(b, seed);
	return rc ? rc : connect_self(b, &addr);
}

/*
 * Stop the target's thread, disconnect both ends and wait (bounded) for their DISCONNECTED
 * events, acknowledging them, so that destroying the ids never waits on an event in flight.
 */
static void disconnect_both(struct bv *b)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);
	int pending = b->cli_up + b->srv_up;
	struct rdma_cm_event *ev;

	atomic_store(&b->rx_stop, true);
	if (b->rx_started)
		pthread_join(b->rx, NULL);
	if (b->srv_up)
		ps_vshim_cm_disconnect(b->srv_id);
	if (b->cli_up)
		ps_vshim_cm_disconnect(b->cli_id);
	while (pending > 0 &&
	       !ps_vshim_cm_event_get(b->cm_ch, ps_clock_remaining_ms(deadline), &ev)) {
		pending -= ev->event == RDMA_CM_EVENT_DISCONNECTED;
		ps_vshim_cm_event_ack(ev);
	}
	if (pending > 0)
		fprintf(stderr, BV_PROG ": warning: %d DISCONNECTED event(s) missing\n", pending);
}

/* Everything in the reverse order of creation; fine on a partly built control block. */
static void teardown(struct bv *b)
{
	if (b->cm_ch)
		disconnect_both(b);
	if (b->srv_id)
		ps_vshim_qp_destroy(b->srv_id);
	if (b->cli_id)
		ps_vshim_qp_destroy(b->cli_id);
	ps_vshim_mr_dereg(b->dst_mr);
	ps_vshim_mr_dereg(b->table_mr);
	ps_mem_free(&b->dst);
	ps_mem_free(&b->table);
	ps_vshim_cq_destroy(b->cli_cq);
	ps_vshim_cq_destroy(b->srv_cq);
	ps_vshim_pd_dealloc(b->pd);
	ps_vshim_cm_id_destroy(b->srv_id);
	ps_vshim_cm_id_destroy(b->cli_id);
	ps_vshim_cm_id_destroy(b->listen_id);
	ps_vshim_cm_channel_destroy(b->cm_ch);
	free(b->sges);
	free(b->wrs);
}

/* ---- the run -------------------------------------------------------------------------------- */

/* Median of @n values (n <= MAX_PAIRS), by insertion into a sorted copy. */
static double median_of(const double *v, uint32_t n)
{
	double s[MAX_PAIRS];

	for (uint32_t i = 0; i < n; i++) {
		uint32_t j = i;

		for (; j > 0 && s[j - 1] > v[i]; j--)
			s[j] = s[j - 1];
		s[j] = v[i];
	}
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The contiguous table, the per-pair ratios, the line scripts read and the counters. */
static double print_summary(const struct bv *b, const struct bench_row *g,
			    const struct bench_row *c, const struct bv_meas *gm,
			    const struct bv_meas *cm, uint32_t n)
{
	double r[MAX_PAIRS], gb[MAX_PAIRS], cb[MAX_PAIRS], med;

	printf(" contiguous: the same bytes as ONE SGE, each round right after a gather round\n");
	bench_print_header(stdout, BENCH_BW);
	for (uint32_t i = 0; i < n; i++) {
		bench_print_row(stdout, BENCH_BW, &c[i]);
		gb[i] = g[i].bw_mbs;
		cb[i] = c[i].bw_mbs;
		r[i] = cb[i] > 0 ? gb[i] / cb[i] : 0;
	}
	bench_print_footer(stdout);
	printf(" gather/contiguous:");
	for (uint32_t i = 0; i < n; i++)
		printf(" %.3f", r[i]);
	med = median_of(r, n);
	printf("\n gather_vs_contiguous ratio_median=%.3f gather_median=%.2f "
	       "contiguous_median=%.2f pairs=%u\n",
	       med, median_of(gb, n), median_of(cb, n), n);
	for (int t = 0; t < 2; t++) {
		printf(" hw_counters of %s, %-10s rounds:", b->dev, t ? "contiguous" : "gather");
		for (size_t k = 0; k < NCNT; k++) {
			uint64_t sum = 0;

			for (uint32_t i = 0; i < n; i++)
				sum += (t ? cm : gm)[i].cnt[k];
			printf(" %s %" PRIu64, cnt_names[k], sum);
		}
		printf("\n");
	}
	return med;
}

/* --target imm: every operation's immediate reached the target (bounded wait). */
static bool target_check(struct bv *b)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);

	if (b->o->target != TGT_IMM)
		return true;
	while (atomic_load(&b->rx_seen) < b->ops_total && !atomic_load(&b->rx_err) &&
	       ps_clock_remaining_ms(deadline))
		;
	printf(" target          : %" PRIu64 " receive completions for %" PRIu64 " operations%s\n",
	       (uint64_t)atomic_load(&b->rx_seen), b->ops_total,
	       atomic_load(&b->rx_err) ? ", a receive FAILED" : "");
	return atomic_load(&b->rx_seen) == b->ops_total && !atomic_load(&b->rx_err);
}

/* K pairs of rounds, then the summary and the JSON. Returns 0, PS_ECORRUPT or an error. */
static int run_pairs(struct bv *b, uint64_t seed)
{
	const struct bv_opts *o = b->o;
	struct bv_shape sg = shape_make(b, true), sc = shape_make(b, false);
	struct bench_row g[MAX_PAIRS], c[MAX_PAIRS];
	struct bv_meas gm[MAX_PAIRS], cm[MAX_PAIRS];
	uint64_t checked = 0;
	bool ok = true;
	double ratio;
	int rc;

	bench_print_header(stdout, BENCH_BW);
	for (uint32_t k = 0; k < o->pairs; k++) {
		/* A seed per round: no round can pass its check on an earlier round's data. */
		rc = round_measure(b, &sg, bench_mix64(seed + 2 * k + 1), &gm[k], &g[k]);
		if (rc)
			return rc;
		bench_print_row(stdout, BENCH_BW, &g[k]);
		rc = round_measure(b, &sc, bench_mix64(seed + 2 * k + 2), &cm[k], &c[k]);
		if (rc)
			return rc;
		ok = ok && g[k].check_ok && c[k].check_ok;
		checked += g[k].checked + c[k].checked;
	}
	bench_print_footer(stdout);
	ok = target_check(b) && ok;
	printf(" data check      : %s (%" PRIu64 " bytes compared by checksum)\n",
	       ok ? "ok" : "FAILED", checked);
	ratio = print_summary(b, g, c, gm, cm, o->pairs);
	fflush(stdout);
	if (o->json) {
		struct bench_json_info ji = {.tool = BV_PROG,
					     .transport = "verbs",
					     .device = b->dev,
					     .test = "gather",
					     .kind = BENCH_BW,
					     .duration_s = (double)o->duration_ms / 1000,
					     .margin_s = (double)o->margin_ms / 1000,
					     .iters = o->duration_ms ? 0 : o->iters,
					     .depth = o->depth,
					     .cq_mod = o->cq_mod,
					     .rows = o->rows,
					     .row_size = o->row_size,
					     .table_size = b->table_len,
					     .extra_name = "contiguous",
					     .extra = c,
					     .nextra = o->pairs,
					     .extra_ratio = ratio};

		rc = bench_json_write(o->json, &ji, g, o->pairs);
		if (rc)
			fprintf(stderr, BV_PROG ": writing %s: %s\n", o->json, strerror(-rc));
	}
	return ok ? 0 : PS_ECORRUPT;
}

int main(int argc, char **argv)
{
	struct bv_opts o;
	struct bv b = {.o = &o};
	int rc;

	if (parse_opts(argc, argv, &o))
		return BENCH_EXIT_USAGE;
	bench_clock_init();
	if (!o.seed)
		o.seed = bench_seed();
	rc = setup(&b, &o, o.seed);
	if (!rc)
		rc = run_pairs(&b, o.seed);
	teardown(&b);
	if (rc == PS_EBAD_OPTION)
		return BENCH_EXIT_USAGE;
	if (rc == PS_ECORRUPT)
		fprintf(stderr, BV_PROG ": the data check FAILED\n");
	return rc ? BENCH_EXIT_FAILURE : 0;
}
