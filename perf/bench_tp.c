/*
 * psplus-bench-tp: perftest-style benchmarks of the psplus transport interface
 * (transport/transport.h), over either backend.
 *
 *   server:  psplus-bench-tp [-d ADDR] [--transport tcp|rdma] --test T [options]
 *   client:  psplus-bench-tp [-d ADDR] [--transport tcp|rdma] --test T [options] SERVER_ADDR
 *
 * Like perftest, give both sides the same test options: the server sizes its receive buffers
 * (msg_size, recv_depth) from them before any client is known. Everything else (iterations,
 * duration, the seed) comes from the client in each round's START. The protocol is described
 * in bench_tp.h; the measuring loops are in bench_tp_run.c.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "perf/bench_tp.h"

#define DEF_PORT	 18610
#define DEF_DEPTH	 128 /* perftest's tx depth of the bandwidth tests */
#define DEF_LAT_DEPTH	 1   /* and of the latency tests (one operation is in flight anyway) */
#define DEF_CQ_MOD	 32
#define DEF_ROWS	 256
#define DEF_ROW_SIZE	 256
#define DEF_TABLE	 (1ull << 30)
#define DEF_TIMEOUT_MS	 60000
#define DEF_BW_ITERS	 5000 /* perftest's default for write/send bw */
#define DEF_LAT_ITERS	 1000 /* perftest's default for latency */
#define CONNECT_RETRY_MS 100

_Static_assert(BT_MAX_PAIRS <= BENCH_PAIRS_MAX, "bench_pairs_print() takes the pairs");

static const struct {
	const char *name;
	enum bt_test test;
	const char *title;
} tests[] = {
	{"write_bw", BT_WRITE_BW, "write_imm BW Test"},
	{"send_bw", BT_SEND_BW, "Send BW Test"},
	{"send_lat", BT_SEND_LAT, "Send Latency Test"},
	{"write_lat", BT_WRITE_LAT, "write_imm Latency Test"},
	{"gather", BT_GATHER, "Gather write_imm BW Test (registered table rows)"},
};

const char *bt_test_name(enum bt_test t)
{
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (tests[i].test == t)
			return tests[i].name;
	return "?";
}

static const char *test_title(enum bt_test t)
{
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (tests[i].test == t)
			return tests[i].title;
	return "?";
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " BT_PROG " [options]               start a server and wait for a client\n"
		"       " BT_PROG " [options] SERVER_ADDR   run the tests against that server\n"
		"Give both sides the same test options (as with perftest).\n"
		"\n"
		"  -d, --dev ADDR          local address whose device to use (rdma); the server also\n"
		"                          listens on it (default: client: the server's address if\n"
		"                          local, else the first device; server: 0.0.0.0)\n"
		"      --transport KIND    auto (default), tcp or rdma\n"
		"  -t, --test NAME         write_bw (default), send_bw, send_lat, write_lat, gather\n"
		"  -s, --size SIZE         bytes per message (K/M suffixes; bw: 65536, lat: 64)\n"
		"  -a, --all               every power of two from 64 B to 1 MiB\n"
		"  -D, --duration SEC      run each size SEC seconds (bw: sample between the margins)\n"
		"  -f, --margin SEC        duration mode: warm-up and cool-down not sampled (default 2,\n"
		"                          or D/4 when D < 8)\n"
		"  -n, --iters N           iterations mode (default bw 5000, lat 1000)\n"
		"  -q, --tx-depth Q        operations kept in flight, credits permitting (default 128;\n"
		"                          latency tests 1, as perftest: it sizes the rings they cycle)\n"
		"  -Q, --cq-mod N          ask for a completion every N operations (default 32)\n"
		"  -e, --events            sleep in ps_tp_poll() until something happens (default:\n"
		"                          poll without sleeping, as perftest does without -e)\n"
		"      --rows N            gather: rows per gather (default 256)\n"
		"      --row-size D        gather: bytes per row, a multiple of 8 (default 256)\n"
		"      --sge-per-write M   gather: rows per write_imm (default: all rows in one)\n"
		"      --row-order ORDER   gather: random (default) or seq (consecutive rows from a\n"
		"                          random start: the same gather list on contiguous memory)\n"
		"      --contig-pairs K    gather, client: K pairs of rounds, the gather then the same\n"
		"                          bytes as ONE row from the table (the contiguous baseline);\n"
		"                          prints the median gather/contiguous ratio\n"
		"      --table-size SIZE   gather, server: registered table (default 1G)\n"
		"      --json FILE         client: write the results to FILE as JSON\n"
		"  -p, --port PORT         default %d\n"
		"      --timeout SEC       give up when a step makes no progress that long (default 60)\n"
		"  -h, --help\n"
		"Units as perftest: MB/sec is MiB/s; latency is one-way (RTT/2) in usec.\n",
		DEF_PORT);
}

static int parse_opts(int argc, char **argv, struct bt_opts *o)
{
	enum {
		O_TRANSPORT = 256,
		O_ROWS,
		O_ROW_SIZE,
		O_SGE,
		O_ORDER,
		O_PAIRS,
		O_TABLE,
		O_JSON,
		O_TIMEOUT
	};
	static const struct option lopts[] = {
		{"dev", required_argument, NULL, 'd'},
		{"transport", required_argument, NULL, O_TRANSPORT},
		{"test", required_argument, NULL, 't'},
		{"size", required_argument, NULL, 's'},
		{"all", no_argument, NULL, 'a'},
		{"duration", required_argument, NULL, 'D'},
		{"margin", required_argument, NULL, 'f'},
		{"iters", required_argument, NULL, 'n'},
		{"tx-depth", required_argument, NULL, 'q'},
		{"cq-mod", required_argument, NULL, 'Q'},
		{"rows", required_argument, NULL, O_ROWS},
		{"row-size", required_argument, NULL, O_ROW_SIZE},
		{"sge-per-write", required_argument, NULL, O_SGE},
		{"row-order", required_argument, NULL, O_ORDER},
		{"contig-pairs", required_argument, NULL, O_PAIRS},
		{"table-size", required_argument, NULL, O_TABLE},
		{"json", required_argument, NULL, O_JSON},
		{"port", required_argument, NULL, 'p'},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"events", no_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool size_set = false, depth_set = false;
	uint32_t v32;
	int c, li;

	*o = (struct bt_opts){.transport = "auto",
			      .test = BT_WRITE_BW,
			      .depth = DEF_DEPTH,
			      .cq_mod = DEF_CQ_MOD,
			      .rows = DEF_ROWS,
			      .row_size = DEF_ROW_SIZE,
			      .table_size = DEF_TABLE,
			      .port = DEF_PORT,
			      .timeout_ms = DEF_TIMEOUT_MS};
	while ((li = -1, c = getopt_long(argc, argv, "d:t:s:aD:f:n:q:Q:p:eh", lopts, &li)) != -1) {
		int bad = 0;

		switch (c) {
		case 'd':
			o->dev_addr = optarg;
			break;
		case O_TRANSPORT:
			o->transport = optarg;
			bad = strcmp(optarg, "auto") && strcmp(optarg, "tcp") &&
			      strcmp(optarg, "rdma");
			break;
		case 't':
			bad = 1;
			for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
				if (!strcmp(optarg, tests[i].name)) {
					o->test = tests[i].test;
					bad = 0;
				}
			}
			break;
		case 's':
			bad = bench_parse_size(optarg, &o->size) || !o->size ||
			      o->size > BT_MAX_SIZE;
			size_set = true;
			break;
		case 'a':
			o->all = true;
			break;
		case 'D':
			bad = bench_parse_duration(optarg, &o->duration_ms);
			break;
		case 'f':
			bad = bench_parse_seconds(optarg, &o->margin_ms);
			o->margin_set = true;
			break;
		case 'n':
			bad = bench_parse_size(optarg, &o->iters) || !o->iters;
			break;
		case 'q':
			bad = bench_parse_u32(optarg, 1, BT_MAX_DEPTH, &o->depth);
			depth_set = true;
			break;
		case 'Q':
			bad = bench_parse_u32(optarg, 1, BT_MAX_DEPTH, &o->cq_mod);
			break;
		case O_ROWS:
			bad = bench_parse_u32(optarg, 1, 1u << 16, &o->rows);
			break;
		case O_ROW_SIZE:
			bad = bench_parse_u32(optarg, 8, 1u << 20, &o->row_size) || o->row_size % 8;
			break;
		case O_SGE:
			bad = bench_parse_u32(optarg, 1, 1u << 16, &v32);
			o->sge_per_write = v32;
			break;
		case O_ORDER:
			o->rows_seq = !strcmp(optarg, "seq");
			bad = !o->rows_seq && strcmp(optarg, "random");
			break;
		case O_PAIRS:
			bad = bench_parse_u32(optarg, 1, BT_MAX_PAIRS, &o->contig_pairs);
			break;
		case O_TABLE:
			bad = bench_parse_size(optarg, &o->table_size) ||
			      o->table_size < (1u << 20);
			break;
		case O_JSON:
			o->json = optarg;
			break;
		case 'p':
			bad = bench_parse_u32(optarg, 1, 65535, &v32);
			o->port = (uint16_t)v32;
			break;
		case O_TIMEOUT:
			bad = bench_parse_duration(optarg, &o->timeout_ms);
			break;
		case 'e':
			o->events = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bad) {
			bench_bad_option(BT_PROG, lopts, li, c, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc)
		o->server_addr = argv[optind++];
	if (bench_args_end(BT_PROG, argc, argv))
		return -EINVAL;
	o->server = !o->server_addr;
	if (!size_set)
		o->size = bt_test_is_lat(o->test) ? 64 : 65536;
	if (o->contig_pairs && o->test != BT_GATHER) {
		fprintf(stderr, BT_PROG ": --contig-pairs goes with --test gather\n");
		return -EINVAL;
	}
	if (o->test == BT_GATHER) {
		o->all = false;
		o->size = (uint64_t)o->rows * o->row_size;
		if (o->size > BT_HALF) {
			fprintf(stderr, BT_PROG ": rows x row-size must be <= %u bytes\n", BT_HALF);
			return -EINVAL;
		}
		if (o->sge_per_write && o->rows % o->sge_per_write) {
			fprintf(stderr, BT_PROG ": --rows must be a multiple of --sge-per-write\n");
			return -EINVAL;
		}
	}
	if ((o->test == BT_SEND_BW || o->test == BT_SEND_LAT) && !o->all && o->size < 8) {
		fprintf(stderr, BT_PROG ": send tests need -s >= 8 (the data tag)\n");
		return -EINVAL;
	}
	/* The rings a latency test cycles through are sized by the depth: as small as perftest's. */
	if (!depth_set && bt_test_is_lat(o->test))
		o->depth = DEF_LAT_DEPTH;
	if (o->cq_mod > o->depth)
		o->cq_mod =
			o->depth; /* a window smaller than cq_mod would never see a completion */
	if (bench_span_resolve(BT_PROG, o->duration_ms, o->margin_set, &o->margin_ms, &o->iters,
			       bt_test_is_lat(o->test) ? DEF_LAT_ITERS : DEF_BW_ITERS))
		return -EINVAL;
	return 0;
}

/* ---- set-up --------------------------------------------------------------------------- */

uint32_t bt_msg_size_for(const struct bt_opts *o)
{
	uint64_t need = o->all ? BENCH_ALL_MAX : o->size;

	if (o->test != BT_SEND_BW && o->test != BT_SEND_LAT)
		return BT_CTL_MSG_SIZE;
	return need > BT_CTL_MSG_SIZE ? (uint32_t)need : BT_CTL_MSG_SIZE;
}

/* Registering pins memory on rdma only; say early what the limit will refuse. */
static void memlock_check(const struct bt *b, size_t need)
{
	char err[512];

	if (b->info.kind == PS_TP_KIND_RDMA && ps_mem_memlock_ensure(need, err, sizeof(err)))
		fprintf(stderr, BT_PROG ": %s\n", err);
}

static int setup(struct bt *b, const struct bt_opts *o)
{
	struct ps_tp_dev_opts dopts = {
		.kind = o->transport, .bind_addr = o->dev_addr, .numa_node = -1};
	/* Control messages need receive buffers and send slots beyond the data window. */
	struct ps_tp_loop_opts lopts = {.recv_depth = o->depth + BT_CTL_SLOTS,
					.msg_size = bt_msg_size_for(o),
					.send_depth = o->depth + BT_CTL_SLOTS,
					.max_conns = 4,
					.connect_timeout_ms = 10000};
	int rc;

	memset(b, 0, sizeof(*b));
	b->o = o;
	/* A client without -d uses the device that owns the server's address, as rdma_cm does. */
	if (!o->server && !o->dev_addr && strcmp(o->transport, "tcp")) {
		dopts.bind_addr = o->server_addr;
		rc = ps_tp_dev_open(&dopts, &b->dev);
		if (rc == PS_ENO_DEVICE) {
			dopts.bind_addr = NULL;
			rc = ps_tp_dev_open(&dopts, &b->dev);
		}
	} else {
		rc = ps_tp_dev_open(&dopts, &b->dev);
	}
	if (rc) {
		fprintf(stderr, BT_PROG ": opening the %s transport: %s\n", o->transport,
			ps_strerror(rc));
		return rc;
	}
	ps_tp_dev_query(b->dev, &b->info);
	memlock_check(b, BT_AREA_SIZE);
	rc = ps_mem_alloc(BT_AREA_SIZE, -1, PS_MEM_POPULATE, &b->area);
	if (!rc)
		rc = ps_tp_mr_reg(b->dev, b->area.addr, b->area.len, &b->area_mr);
	if (rc) {
		fprintf(stderr, BT_PROG ": registering %u MiB: %s\n", BT_AREA_SIZE >> 20,
			ps_strerror(rc));
		return rc;
	}
	b->src = b->area.addr;
	b->dst = b->src + BT_HALF;
	b->ctl = b->dst + BT_HALF;
	b->slot_csum = calloc(BT_MAX_DEPTH, sizeof(*b->slot_csum));
	b->sgl_cap = o->rows;
	b->sgl = calloc(b->sgl_cap, sizeof(*b->sgl));
	if (bt_test_is_lat(o->test) && !o->server)
		b->lat = calloc(o->duration_ms ? BT_LAT_MAX : o->iters, sizeof(*b->lat));
	if (!b->slot_csum || !b->sgl || (bt_test_is_lat(o->test) && !o->server && !b->lat))
		return -ENOMEM;
	rc = ps_tp_loop_create(b->dev, &lopts, &b->loop);
	if (rc)
		fprintf(stderr, BT_PROG ": creating the loop: %s\n", ps_strerror(rc));
	return rc;
}

static void teardown(struct bt *b)
{
	ps_tp_conn_close(b->conn);
	ps_tp_listener_close(b->lis);
	ps_tp_loop_destroy(b->loop);
	ps_tp_mr_dereg(b->table_mr);
	ps_tp_mr_dereg(b->area_mr);
	ps_tp_dev_close(b->dev);
	ps_mem_free(&b->table);
	ps_mem_free(&b->area);
	free(b->slot_csum);
	free(b->sgl);
	free(b->lat);
}

static double secs_since(uint64_t t0)
{
	return (double)(ps_clock_now_ns() - t0) / 1e9;
}

/* The gather table: allocated, filled and registered on the first gather round. */
int bt_table_ensure(struct bt *b)
{
	uint64_t t0, t1;
	int rc;

	if (b->table_mr)
		return 0;
	t0 = ps_clock_now_ns();
	memlock_check(b, b->o->table_size);
	/* Populated at once: one pass in the kernel instead of a fault per page. */
	rc = ps_mem_alloc(b->o->table_size, -1, PS_MEM_HUGEPAGES | PS_MEM_POPULATE, &b->table);
	if (rc) {
		fprintf(stderr, BT_PROG ": allocating the %" PRIu64 " MiB table: %s\n",
			b->o->table_size >> 20, ps_strerror(rc));
		return rc;
	}
	b->table_len = b->o->table_size; /* rows are drawn from the size asked for */
	bench_fill_index(b->table.addr, b->table_len, bench_seed());
	t1 = ps_clock_now_ns();
	rc = ps_tp_mr_reg(b->dev, b->table.addr, b->table_len, &b->table_mr);
	if (rc) {
		fprintf(stderr, BT_PROG ": registering the table: %s\n", ps_strerror(rc));
		return rc;
	}
	printf(" table           : %" PRIu64 " MiB (%s pages), filled in %.2f s, registered in "
	       "%.2f s\n",
	       b->table_len >> 20, b->table.huge ? "huge" : "4 KiB", (double)(t1 - t0) / 1e9,
	       secs_since(t1));
	fflush(stdout);
	return 0;
}

static void print_banner(const struct bt *b)
{
	const struct bt_opts *o = b->o;

	printf("%s\n", BENCH_TABLE_RULE);
	printf("                    psplus %s\n", test_title(o->test));
	printf(" Transport       : %-10s\tDevice         : %s\n",
	       b->info.kind == PS_TP_KIND_RDMA ? "rdma" : "tcp", b->info.name);
	printf(" Tx depth        : %-10u\tCQ Moderation  : %u\n", o->depth, o->cq_mod);
	printf(" Completions     : %s\n", o->events ? "events (ps_tp_poll sleeps)" : "busy poll");
	printf(" Mtu             : %-10u\tMax SGE        : %u\n", b->info.active_mtu,
	       b->info.max_sge);
	bench_print_span(stdout, o->duration_ms, o->margin_ms, o->iters, "");
	if (o->test == BT_GATHER)
		printf(" Gather          : %u %s rows x %u B from a %" PRIu64 " MiB table\n",
		       o->rows, o->rows_seq ? "consecutive" : "random", o->row_size,
		       o->table_size >> 20);
	if (o->server)
		printf("%s\n", BENCH_TABLE_RULE); /* the client's table header brings its own */
	fflush(stdout);
}

static int run_server(struct bt *b)
{
	const struct bt_opts *o = b->o;
	const char *host = o->dev_addr ? o->dev_addr : "0.0.0.0";
	uint64_t deadline;
	struct bt_ctl m;
	int rc;

	print_banner(b);
	/* The table is ready before the server listens, as perftest's buffers are. */
	if (o->test == BT_GATHER) {
		rc = bt_table_ensure(b);
		if (rc)
			return rc;
	}
	rc = ps_tp_listen(b->loop, host, o->port, &b->lis);
	if (rc) {
		fprintf(stderr, BT_PROG ": listening on %s:%u: %s\n", host, o->port,
			ps_strerror(rc));
		return rc;
	}
	/* Scripts wait for this line before they start the client. */
	printf(" Waiting for a client on %s:%u\n", host, ps_tp_listener_port(b->lis));
	fflush(stdout);
	deadline = ps_clock_deadline_ms(o->timeout_ms);
	while (!b->conn) {
		/* One event at a time: what follows the ACCEPT belongs to the rounds. */
		int n = ps_tp_poll(b->loop, b->evs, 1, 100);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			if (b->evs[i].type == PS_TP_EV_ACCEPT && !b->conn) {
				b->conn = b->evs[i].conn;
			} else if (bt_event_common(b, &b->evs[i]) == 0 &&
				   b->evs[i].type == PS_TP_EV_RECV) {
				fprintf(stderr, BT_PROG ": message before the connection\n");
				return PS_EBAD_MESSAGE;
			}
		}
		if (!b->conn && !ps_clock_remaining_ms(deadline)) {
			fprintf(stderr, BT_PROG ": no client within %" PRIu64 " ms\n",
				o->timeout_ms);
			return PS_ETIMEOUT;
		}
	}
	printf(" Client connected from %s\n", ps_tp_conn_peer(b->conn));
	fflush(stdout);
	for (;;) {
		rc = bt_ctl_wait(b, &m, "START or BYE");
		if (rc)
			return rc;
		if ((uint32_t)m.tag == BT_MSG_BYE)
			return 0;
		if ((uint32_t)m.tag != BT_MSG_START) {
			fprintf(stderr, BT_PROG ": got control message %u, expected START\n",
				(uint32_t)m.tag);
			return PS_EBAD_MESSAGE;
		}
		rc = bt_srv_round(b, &m);
		if (rc)
			return rc;
	}
}

static int connect_retry(struct bt *b)
{
	const struct bt_opts *o = b->o;
	uint64_t deadline = ps_clock_deadline_ms(o->timeout_ms);
	int rc;

	/* The server may still be starting (seconds under TCG): retry refusals until the timeout. */
	for (;;) {
		rc = ps_tp_connect(b->loop, o->server_addr, o->port, NULL, &b->conn);
		if (rc != -ECONNREFUSED || !ps_clock_remaining_ms(deadline))
			break;
		struct timespec ts = {0, CONNECT_RETRY_MS * 1000000L};

		nanosleep(&ts, NULL);
	}
	if (rc)
		fprintf(stderr, BT_PROG ": connecting to %s:%u: %s\n", o->server_addr, o->port,
			ps_strerror(rc));
	return rc;
}

static int run_client(struct bt *b)
{
	const struct bt_opts *o = b->o;
	struct bench_row rows[BT_MAX_PAIRS + 16], contig[BT_MAX_PAIRS];
	size_t nrows = 0;
	uint32_t npairs = 0;
	double ratio = 0;
	enum bench_kind kind = bt_test_is_lat(o->test) ? BENCH_LAT : BENCH_BW;
	bool all_ok = true;
	uint64_t checked = 0;
	int64_t copied = 0;
	struct bt_ctl bye = bt_ctl_new(BT_MSG_BYE);
	int rc;

	rc = connect_retry(b);
	if (rc)
		return rc;
	print_banner(b);
	bench_print_header(stdout, kind);
	for (uint64_t size = o->all ? BENCH_ALL_MIN : o->size;; size *= 2) {
		for (uint32_t k = 0; k < (o->contig_pairs ? o->contig_pairs : 1); k++) {
			rc = bt_cli_round(b, size, o->rows, &rows[nrows]);
			if (rc)
				return rc;
			bench_print_row(stdout, kind, &rows[nrows]);
			all_ok = all_ok && rows[nrows].check_ok;
			checked += rows[nrows].checked;
			if (rows[nrows].bytes_copied > 0)
				copied += rows[nrows].bytes_copied;
			nrows++;
			if (!o->contig_pairs)
				continue;
			/* The baseline right after its gather: both see the same moment of the host. */
			rc = bt_cli_round(b, size, 1, &contig[npairs]);
			if (rc)
				return rc;
			all_ok = all_ok && contig[npairs].check_ok;
			checked += contig[npairs].checked;
			if (contig[npairs].bytes_copied > 0)
				copied += contig[npairs].bytes_copied;
			npairs++;
		}
		if (!o->all || size >= BENCH_ALL_MAX)
			break;
	}
	bench_print_footer(stdout);
	bench_print_check(stdout, all_ok, checked);
	if (b->gather_chunks > 1)
		printf(" gather posting  : %u write_imm of %u rows each\n", b->gather_chunks,
		       o->rows / b->gather_chunks);
	printf(" bytes_copied    : %" PRId64 " (sender%s, ps_tp_stats)\n", copied,
	       o->test == BT_GATHER ? ": the server" : ": this client");
	/* The baseline of --contig-pairs: its table, the per-pair ratios and the line scripts read. */
	if (npairs)
		ratio = bench_pairs_print(
			stdout,
			" contiguous baseline: the same bytes as ONE row of the "
			"table per write_imm, each round right after a gather round",
			rows, contig, npairs);
	fflush(stdout);
	rc = bt_ctl_send(b, &bye);
	b->closing = true;
	/* Let the BYE complete before closing (the peer would otherwise see a reset). */
	for (uint64_t dl = ps_clock_deadline_ms(2000);
	     !rc && b->ctl_done < b->ctl_posted && ps_clock_remaining_ms(dl);)
		rc = bt_pump(b, "closing") < 0 ? PS_EBAD_MESSAGE : 0;
	if (o->json) {
		struct bench_json_info ji = {.tool = BT_PROG,
					     .transport = b->info.kind == PS_TP_KIND_RDMA ? "rdma"
											  : "tcp",
					     .device = b->info.name,
					     .test = bt_test_name(o->test),
					     .kind = kind,
					     .duration_s = (double)o->duration_ms / 1000,
					     .margin_s = (double)o->margin_ms / 1000,
					     .iters = o->iters,
					     .depth = o->depth,
					     .cq_mod = o->cq_mod,
					     .rows = o->test == BT_GATHER ? o->rows : 0,
					     .row_size = o->test == BT_GATHER ? o->row_size : 0,
					     .table_size = o->test == BT_GATHER ? o->table_size : 0,
					     .extra_name = npairs ? "contiguous" : NULL,
					     .extra = contig,
					     .nextra = npairs,
					     .extra_ratio = ratio};

		bench_json_save(BT_PROG, o->json, &ji, rows, nrows);
	}
	return all_ok ? 0 : PS_ECORRUPT;
}

int main(int argc, char **argv)
{
	struct bt_opts o;
	struct bt b;
	int rc;

	if (parse_opts(argc, argv, &o))
		return BENCH_EXIT_USAGE;
	if (ps_log_init_from_env())
		fprintf(stderr, BT_PROG ": ignoring a bad PSPLUS_LOG_LEVEL\n");
	signal(SIGPIPE, SIG_IGN);
	bench_clock_init();
	rc = setup(&b, &o);
	if (!rc)
		rc = o.server ? run_server(&b) : run_client(&b);
	teardown(&b);
	if (rc && rc != PS_ECORRUPT)
		fprintf(stderr, BT_PROG ": failed: %s\n", ps_strerror(rc));
	return rc ? BENCH_EXIT_FAILURE : 0;
}
