/*
 * psplus-bench-ps: sparse pulls and pushes end to end through the client library, against a
 * running cluster (bench_ps.h says what is measured and how the data is checked).
 *
 *   psplus-bench-ps --kv URL [-t pull|push] [--ids uniform|zipf] [options]
 *
 * Output: a perftest-like banner, a bandwidth table (goodput: the bytes of rows one operation
 * moves, batch x width x 4, in MiB/s as perftest's MB/sec), a latency table per operation
 * (one call, from entry to return: not halved like ib_*_lat's), a few lines of client
 * statistics, the data check, and one line for scripts:
 *   result NAME ops_s=.. goodput_mbs=.. p50_us=.. p99_us=.. p999_us=..
 * where NAME is e.g. pull_1024x64_uniform. --json FILE writes the same numbers.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/client.h>

#include "perf/bench_ps.h"

#define DEF_BATCH      1024u
#define DEF_WIDTH      64u
#define DEF_ROWS       (1ull << 20)
#define DEF_POOL       512u
#define DEF_ITERS      1000u
#define DEF_TIMEOUT_MS 60000u
#define MAX_BATCH      (1u << 20)
#define MAX_WIDTH      (1u << 16)
#define MAX_POOL       (1u << 16)
/* The id pool and the sample arrays are allocated up front: keep them reasonable. */
#define MAX_POOL_IDS (64ull << 20)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " BP_PROG " --kv URL [options]\n"
		"Sparse pulls or pushes through the psplus client library against a running "
		"cluster.\n"
		"\n"
		"  -k, --kv URL           the cluster's kv path (the scheduler's -sp), required\n"
		"      --transport KIND   auto (default), tcp or rdma\n"
		"  -t, --test pull|push   default pull\n"
		"      --ids uniform|zipf ids uniform over the rows (default) or Zipf\n"
		"      --zipf-s S         Zipf exponent (default 1.1)\n"
		"      --hot scatter|low  Zipf: ranks spread over the rows (default) or rank r =\n"
		"                         row r - 1 (every hot row on the first server thread)\n"
		"      --order sorted|random  ids of a batch sorted (default: as a worker grouping\n"
		"                         them; results land zero copy) or as drawn\n"
		"      --dedupe auto|always|never  pulls: repeated ids sent once when the rows\n"
		"                         are staged anyway (auto, default), always, or never\n"
		"                         (ps_client_opts.pull_dedupe)\n"
		"  -b, --batch N          ids per operation (default %u)\n"
		"  -w, --width W          floats per row (default %u)\n"
		"      --rows R           rows of the variable (default %llu)\n"
		"      --pool N           batches drawn before the run, used round-robin (default "
		"%u)\n"
		"      --seed S           of the id generator (default 1)\n"
		"      --name PREFIX      variables PREFIX_pull_RxW / PREFIX_push_RxW (default "
		"bench)\n"
		"  -q, --clients Q        Q clients, one thread each, one call in flight each\n"
		"                         (the library's calls block; default 1)\n"
		"      --inflight N       requests in flight per server thread within a call\n"
		"                         (ps_client_opts.max_inflight; default the library's, 16)\n"
		"      --check-every N    pull: check every row of every N-th result (default %u)\n"
		"  -D, --duration SEC     run SEC seconds, sampled between the margins\n"
		"  -f, --margin SEC       not sampled at either end (default 2, or D/4 when D < 8)\n"
		"  -n, --iters N          iterations mode: N operations per client (default %u)\n"
		"      --timeout SEC      the clients' call timeout (default 60)\n"
		"      --json FILE        the results as JSON\n"
		"  -h, --help\n"
		"Units as perftest: MB/sec is MiB/s of row bytes (batch x width x 4 per "
		"operation);\n"
		"latency is per operation (one whole call), in usec.\n",
		DEF_BATCH, DEF_WIDTH, (unsigned long long)DEF_ROWS, DEF_POOL, BP_DEF_CHECK_EVERY,
		DEF_ITERS);
}

static int parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || !isfinite(*out) ? -EINVAL : 0;
}

static int check_opts(struct bp_opts *o)
{
	if (!o->kv) {
		fprintf(stderr, BP_PROG ": --kv URL is required (the scheduler's -sp)\n");
		return -EINVAL;
	}
	if ((uint64_t)o->pool * o->batch > MAX_POOL_IDS) {
		fprintf(stderr, BP_PROG ": --pool x --batch must be at most %llu ids\n",
			(unsigned long long)MAX_POOL_IDS);
		return -EINVAL;
	}
	if (bench_span_resolve(BP_PROG, o->duration_ms, o->margin_set, &o->margin_ms, &o->iters,
			       DEF_ITERS))
		return -EINVAL;
	if (o->duration_ms && o->iters) {
		fprintf(stderr, BP_PROG ": give -D or -n, not both\n");
		return -EINVAL;
	}
	return 0;
}

static int parse_opts(int argc, char **argv, struct bp_opts *o)
{
	enum {
		O_TRANSPORT = 256,
		O_IDS,
		O_ZIPF_S,
		O_HOT,
		O_ORDER,
		O_DEDUPE,
		O_ROWS,
		O_POOL,
		O_SEED,
		O_NAME,
		O_INFLIGHT,
		O_CHECK,
		O_TIMEOUT,
		O_JSON,
	};
	static const struct option lopts[] = {
		{"kv", required_argument, NULL, 'k'},
		{"transport", required_argument, NULL, O_TRANSPORT},
		{"test", required_argument, NULL, 't'},
		{"ids", required_argument, NULL, O_IDS},
		{"zipf-s", required_argument, NULL, O_ZIPF_S},
		{"hot", required_argument, NULL, O_HOT},
		{"order", required_argument, NULL, O_ORDER},
		{"dedupe", required_argument, NULL, O_DEDUPE},
		{"batch", required_argument, NULL, 'b'},
		{"width", required_argument, NULL, 'w'},
		{"rows", required_argument, NULL, O_ROWS},
		{"pool", required_argument, NULL, O_POOL},
		{"seed", required_argument, NULL, O_SEED},
		{"name", required_argument, NULL, O_NAME},
		{"clients", required_argument, NULL, 'q'},
		{"inflight", required_argument, NULL, O_INFLIGHT},
		{"check-every", required_argument, NULL, O_CHECK},
		{"duration", required_argument, NULL, 'D'},
		{"margin", required_argument, NULL, 'f'},
		{"iters", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"json", required_argument, NULL, O_JSON},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, li;

	*o = (struct bp_opts){.transport = "auto",
			      .test = BP_PULL,
			      .dist = BP_UNIFORM,
			      .zipf_s = 1.1,
			      .sorted = true,
			      .batch = DEF_BATCH,
			      .width = DEF_WIDTH,
			      .rows = DEF_ROWS,
			      .pool = DEF_POOL,
			      .seed = 1,
			      .clients = 1,
			      .check_every = BP_DEF_CHECK_EVERY,
			      .name = "bench",
			      .timeout_ms = DEF_TIMEOUT_MS};
	while ((li = -1, c = getopt_long(argc, argv, "k:t:b:w:q:D:f:n:h", lopts, &li)) != -1) {
		int bad = 0;

		switch (c) {
		case 'k':
			o->kv = optarg;
			bad = !*optarg;
			break;
		case O_TRANSPORT:
			o->transport = optarg;
			bad = strcmp(optarg, "auto") && strcmp(optarg, "tcp") &&
			      strcmp(optarg, "rdma");
			break;
		case 't':
			o->test = !strcmp(optarg, "push") ? BP_PUSH : BP_PULL;
			bad = strcmp(optarg, "push") && strcmp(optarg, "pull");
			break;
		case O_IDS:
			o->dist = !strcmp(optarg, "zipf") ? BP_ZIPF : BP_UNIFORM;
			bad = strcmp(optarg, "zipf") && strcmp(optarg, "uniform");
			break;
		case O_ZIPF_S:
			bad = parse_double(optarg, &o->zipf_s) || !(o->zipf_s > 0) ||
			      o->zipf_s > 100;
			break;
		case O_HOT:
			o->hot_low = !strcmp(optarg, "low");
			bad = !o->hot_low && strcmp(optarg, "scatter");
			break;
		case O_ORDER:
			o->sorted = !strcmp(optarg, "sorted");
			bad = !o->sorted && strcmp(optarg, "random");
			break;
		case O_DEDUPE:
			o->dedupe = !strcmp(optarg, "always")  ? PS_PULL_DEDUPE_ALWAYS
				    : !strcmp(optarg, "never") ? PS_PULL_DEDUPE_NEVER
							       : PS_PULL_DEDUPE_AUTO;
			bad = strcmp(optarg, "always") && strcmp(optarg, "never") &&
			      strcmp(optarg, "auto");
			break;
		case 'b':
			bad = bench_parse_u32(optarg, 1, MAX_BATCH, &o->batch);
			break;
		case 'w':
			bad = bench_parse_u32(optarg, 1, MAX_WIDTH, &o->width);
			break;
		case O_ROWS:
			bad = bench_parse_size(optarg, &o->rows) || !o->rows ||
			      o->rows > (1ull << 40);
			break;
		case O_POOL:
			bad = bench_parse_u32(optarg, 1, MAX_POOL, &o->pool);
			break;
		case O_SEED:
			bad = bench_parse_size(optarg, &o->seed);
			break;
		case O_NAME:
			o->name = optarg;
			bad = !*optarg || strlen(optarg) > 32;
			break;
		case 'q':
			bad = bench_parse_u32(optarg, 1, BP_MAX_CLIENTS, &o->clients);
			break;
		case O_INFLIGHT:
			bad = bench_parse_u32(optarg, 1, 1024, &o->inflight);
			break;
		case O_CHECK:
			bad = bench_parse_u32(optarg, 1, UINT32_MAX, &o->check_every);
			break;
		case 'D':
			bad = bench_parse_duration(optarg, &o->duration_ms);
			break;
		case 'f':
			bad = bench_parse_seconds(optarg, &o->margin_ms);
			o->margin_set = true;
			break;
		case 'n':
			bad = bench_parse_size(optarg, &o->iters) || !o->iters ||
			      o->iters > BP_SAMPLES_MAX;
			break;
		case O_TIMEOUT:
			bad = bench_parse_duration(optarg, &o->timeout_ms) ||
			      o->timeout_ms > UINT32_MAX;
			break;
		case O_JSON:
			o->json = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bad) {
			bench_bad_option(BP_PROG, lopts, li, c, optarg);
			return -EINVAL;
		}
	}
	if (bench_args_end(BP_PROG, argc, argv))
		return -EINVAL;
	return check_opts(o);
}

/* "pull_1024x64_uniform": what the scripts' lines are called. */
static void test_name(const struct bp_opts *o, char *buf, size_t len)
{
	snprintf(buf, len, "%s_%ux%u_%s%s", o->test == BP_PULL ? "pull" : "push", o->batch,
		 o->width, o->dist == BP_ZIPF ? "zipf" : "uniform",
		 o->test != BP_PULL		      ? ""
		 : o->dedupe == PS_PULL_DEDUPE_ALWAYS ? "_dedupe"
		 : o->dedupe == PS_PULL_DEDUPE_NEVER  ? "_repeats"
						      : "");
}

static void print_banner(const struct bp_opts *o, const struct bp_result *r)
{
	printf("%s\n", BENCH_TABLE_RULE);
	printf("                    psplus sparse %s, %u ids x %u floats (" BP_PROG ")\n",
	       o->test == BP_PULL ? "pull" : "push", o->batch, o->width);
	printf(" Cluster         : %s\n", o->kv);
	printf(" Transport       : %-10s\tClients        : %u (one thread and one call each)\n",
	       r->transport, o->clients);
	printf(" Variable        : %s (sparse, %" PRIu64 " rows x %u float32, SGD)\n", r->var_name,
	       o->rows, o->width);
	if (o->dist == BP_ZIPF)
		printf(" Ids             : Zipf(%.2f) over the rows, ranks %s", o->zipf_s,
		       o->hot_low ? "in row order" : "scattered");
	else
		printf(" Ids             : uniform over the rows");
	printf(", %s, %u batches drawn (seed %" PRIu64 "), %.1f distinct per batch\n",
	       o->sorted ? "sorted" : "unsorted", o->pool, o->seed, r->distinct_per_op);
	if (o->test == BP_PULL)
		printf(" Repeated ids    : de-duplication %s\n",
		       o->dedupe == PS_PULL_DEDUPE_ALWAYS  ? "always"
		       : o->dedupe == PS_PULL_DEDUPE_NEVER ? "never"
							   : "auto (when the rows are staged)");
	bench_print_span(stdout, o->duration_ms, o->margin_ms, o->iters, " per client");
	printf(" In flight       : %u requests per server thread within a call%s\n",
	       o->inflight ? o->inflight : 16, o->inflight ? "" : " (the library's default)");
}

static void report(const struct bp_opts *o, const struct bp_result *r)
{
	char name[64];

	test_name(o, name, sizeof(name));
	print_banner(o, r);
	bench_print_header(stdout, BENCH_BW);
	bench_print_row(stdout, BENCH_BW, &r->row);
	printf(" latency per operation (one call, entry to return; not halved):\n");
	bench_print_header(stdout, BENCH_LAT);
	bench_print_row(stdout, BENCH_LAT, &r->row);
	bench_print_footer(stdout);
	printf(" ops/s           : %.1f over %.2f s (%" PRIu64 " operations in all, every "
	       "client)\n",
	       r->ops_per_s, r->window_s, r->ops_total);
	printf(" requests/op     : %.2f (data-plane requests per call, client statistics)\n",
	       r->requests_per_op);
	if (o->test == BP_PULL)
		printf(" repeats/op      : %.1f (repeated ids not sent, rows copied from their first "
		       "occurrence)\n",
		       r->dups_per_op);
	printf(" bytes_staged    : %" PRIu64 " (copied by the library: 0 means results landed "
	       "zero copy)\n",
	       r->bytes_staged);
	printf(" bytes_copied    : %" PRId64 " (by the transport, this side)\n",
	       r->row.bytes_copied);
	printf(" client cpu      : %.1f us per operation (user + system, every client thread)\n",
	       r->client_cpu_us);
	printf(" prepare         : %.2f s (%" PRIu64 " calls in all, preparation and checks "
	       "included)\n",
	       r->prep_s, r->calls);
	if (r->capped)
		printf(" note            : a client stopped early: %u samples recorded\n",
		       BP_SAMPLES_MAX);
	printf(" data check      : %s (%" PRIu64 " rows compared, %" PRIu64 " wrong)\n",
	       r->row.check_ok ? "ok" : "FAILED", r->checked_rows, r->bad_rows);
	printf(" result %s ops_s=%.1f goodput_mbs=%.2f p50_us=%.1f p99_us=%.1f p999_us=%.1f "
	       "client_cpu_us=%.1f calls=%" PRIu64 "\n",
	       name, r->ops_per_s, r->row.bw_mbs, r->row.lat.typical_us, r->row.lat.p99_us,
	       r->row.lat.p999_us, r->client_cpu_us, r->calls);
	fflush(stdout);
}

static int write_json(const struct bp_opts *o, const struct bp_result *r)
{
	char name[64];
	struct bench_json_info ji = {.tool = BP_PROG,
				     .transport = r->transport,
				     .device = o->kv,
				     .test = name,
				     .kind = BENCH_BW_LAT,
				     .duration_s = (double)o->duration_ms / 1000,
				     .margin_s = (double)o->margin_ms / 1000,
				     .iters = o->iters,
				     .depth = o->clients,
				     /* rows per operation, bytes per row, bytes of the variable */
				     .rows = o->batch,
				     .row_size = o->width * 4,
				     .table_size = o->rows * o->width * 4};

	test_name(o, name, sizeof(name));
	return bench_json_save(BP_PROG, o->json, &ji, &r->row, 1);
}

int main(int argc, char **argv)
{
	struct bp_opts o;
	struct bp_result r;
	int rc;

	if (parse_opts(argc, argv, &o))
		return BENCH_EXIT_USAGE;
	bench_clock_init();
	memset(&r, 0, sizeof(r));
	rc = bp_run(&o, &r);
	if (rc)
		return BENCH_EXIT_FAILURE;
	report(&o, &r);
	if (o.json && write_json(&o, &r))
		return BENCH_EXIT_FAILURE;
	return r.row.check_ok ? 0 : BENCH_EXIT_FAILURE;
}
