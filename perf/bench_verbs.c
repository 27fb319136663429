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
 *
 * This file: the command line, the banner, the pairs of rounds and their summary. The control
 * block and the other files: bench_verbs.h.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "perf/bench_verbs.h"

#define DEF_DEPTH      128  /* psplus-bench-tp's -q (perftest's tx depth) */
#define DEF_ITERS      5000 /* operations per round without -D (perftest's bw default) */
#define DEF_PAIRS      5
#define DEF_TIMEOUT_MS 60000
/* Short rounds, many pairs: the host's load drifts less within one. */
#define MAX_PAIRS BENCH_PAIRS_MAX
#define MAX_DEPTH 4096u

static const char *const target_names[] = {"passive", "spin", "imm"};

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
		OPT("row-size", 'z', OPT_U32, &o->row_size, 8, BV_DST_MAX, NULL),
		OPT("row-order", 'o', OPT_CHOICE, &o->rows_seq, 0, 2, orders),
		OPT("table-size", 't', OPT_U64, &o->table_size, 1u << 20, UINT64_MAX, NULL),
		OPT("max-sge", 'm', OPT_U32, &o->max_sge, 1, BV_SGE_CAP, NULL),
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
	if (bench_args_end(BV_PROG, argc, argv))
		return -EINVAL;
	/* Checks of two options together; the message names them. */
	if (!o->dev_addr) {
		fprintf(stderr, BV_PROG ": option -d/--dev ADDR is required\n");
		return -EINVAL;
	}
	if ((uint64_t)o->rows * o->row_size > BV_DST_MAX ||
	    (uint64_t)o->rows * o->row_size > o->table_size) {
		fprintf(stderr,
			BV_PROG ": options --rows x --row-size: more than %u bytes or than "
				"--table-size\n",
			BV_DST_MAX);
		return -EINVAL;
	}
	if (o->cq_mod > o->depth) {
		fprintf(stderr, BV_PROG ": option -Q/--cq-mod %u exceeds -q/--tx-depth %u\n",
			o->cq_mod, o->depth);
		return -EINVAL;
	}
	return bench_span_resolve(BV_PROG, o->duration_ms, o->margin_set, &o->margin_ms, &o->iters,
				  DEF_ITERS);
}

/* ---- output -------------------------------------------------------------------------------- */

void bv_print_banner(const struct bv *b, const struct bv_shape *g, const struct bv_shape *c)
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
	bench_print_span(stdout, o->duration_ms, o->margin_ms, o->iters, "");
	printf(" Gather          : %u %s rows x %u B: %u RDMA_WRITE of up to %u SGEs%s per post\n",
	       g->rows, g->seq ? "consecutive" : "random", g->row_size, g->nwr, g->per_wr,
	       g->trailer ? " + SEND_WITH_IMM" : "");
	printf(" Contiguous      : %" PRIu64 " B as ONE SGE: 1 RDMA_WRITE%s per post\n", b->size,
	       c->nwr == 1 && o->target == BV_TGT_IMM ? "_WITH_IMM" : "");
	fflush(stdout);
}

/* The contiguous table, the per-pair ratios, the line scripts read and the counters. */
static double print_summary(const struct bv *b, const struct bench_row *g,
			    const struct bench_row *c, const struct bv_meas *gm,
			    const struct bv_meas *cm, uint32_t n)
{
	double med = bench_pairs_print(
		stdout,
		" contiguous: the same bytes as ONE SGE, each round right after a gather round", g,
		c, n);

	for (int t = 0; t < 2; t++) {
		printf(" hw_counters of %s, %-10s rounds:", b->dev, t ? "contiguous" : "gather");
		for (size_t k = 0; k < BV_NCNT; k++) {
			uint64_t sum = 0;

			for (uint32_t i = 0; i < n; i++)
				sum += (t ? cm : gm)[i].cnt[k];
			printf(" %s %" PRIu64, bv_cnt_names[k], sum);
		}
		printf("\n");
	}
	return med;
}

/* K pairs of rounds, then the summary and the JSON. Returns 0, PS_ECORRUPT or an error. */
static int run_pairs(struct bv *b, uint64_t seed)
{
	const struct bv_opts *o = b->o;
	struct bv_shape sg = bv_shape_make(b, true), sc = bv_shape_make(b, false);
	struct bench_row g[MAX_PAIRS], c[MAX_PAIRS];
	struct bv_meas gm[MAX_PAIRS], cm[MAX_PAIRS];
	uint64_t checked = 0;
	bool ok = true;
	double ratio;
	int rc;

	bench_print_header(stdout, BENCH_BW);
	for (uint32_t k = 0; k < o->pairs; k++) {
		/* A seed per round: no round can pass its check on an earlier round's data. */
		rc = bv_round_measure(b, &sg, bench_mix64(seed + 2 * k + 1), &gm[k], &g[k]);
		if (rc)
			return rc;
		bench_print_row(stdout, BENCH_BW, &g[k]);
		rc = bv_round_measure(b, &sc, bench_mix64(seed + 2 * k + 2), &cm[k], &c[k]);
		if (rc)
			return rc;
		ok = ok && g[k].check_ok && c[k].check_ok;
		checked += g[k].checked + c[k].checked;
	}
	bench_print_footer(stdout);
	ok = bv_target_check(b) && ok;
	bench_print_check(stdout, ok, checked);
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

		bench_json_save(BV_PROG, o->json, &ji, g, o->pairs);
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
	rc = bv_setup(&b, &o, o.seed);
	if (!rc)
		rc = run_pairs(&b, o.seed);
	bv_teardown(&b);
	if (rc == PS_EBAD_OPTION)
		return BENCH_EXIT_USAGE;
	if (rc == PS_ECORRUPT)
		fprintf(stderr, BV_PROG ": the data check FAILED\n");
	return rc ? BENCH_EXIT_FAILURE : 0;
}
