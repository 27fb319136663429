/*
 * psplus-bench-sock: the plain-socket reference for psplus-bench-tp over tcp. Blocking sockets
 * with TCP_NODELAY, no event loop, no framing beyond a header per connection: what a careful
 * programmer gets from the kernel with nothing in between. The psplus tcp transport is judged
 * against it (scripts/bench-tcp.sh).
 *
 *   server:  psplus-bench-sock [-d ADDR] --test bw|lat [options]
 *   client:  psplus-bench-sock [-d ADDR] --test bw|lat [options] SERVER_ADDR
 *
 * Each message size is one connection: the client sends a header (test, size, iterations or
 * duration, seed), then
 *   bw:  streams messages of the size from pattern slots, shuts its side down, and reads the
 *        receiver's report (bytes, messages, checked, bad);
 *   lat: sends a message, waits for one of the same size back, repeats; then shuts down and
 *        reads the report.
 * The receiver checks every 16th message against the pattern (as psplus-bench-tp does for
 * send_bw), and a run whose data does not check fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "perf/bench_common.h"

#define PROG		 "psplus-bench-sock"
#define SK_MAGIC	 0x4b434f5342535070ull /* "pPSBSOCK" */
#define SK_VERSION	 1u
#define DEF_PORT	 18611
#define DEF_BW_ITERS	 5000
#define DEF_LAT_ITERS	 1000
#define DEF_TIMEOUT_MS	 60000
#define SK_HALF		 (16u << 20) /* pattern slots, as psplus-bench-tp's source half */
#define SK_MAX_SLOTS	 128u	     /* as psplus-bench-tp's default depth */
#define SK_RX_BUF	 (4u << 20)  /* the receiver reads up to this much per recv() */
#define SK_SAMPLE_EVERY	 16u
#define SK_SERVER_SALT	 0x5bd1e9955bd1e995ull
#define SK_LAT_MAX	 (1u << 22)
#define CONNECT_RETRY_MS 100

enum sk_test {
	SK_BW = 1,
	SK_LAT = 2,
};

/* The header a client sends on each connection; host byte order (little-endian only). */
struct sk_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t test;
	uint64_t size;
	uint64_t iters; /* 0: duration mode */
	uint64_t duration_ms;
	uint64_t seed;
	uint32_t last; /* 1: the server exits after this connection */
	uint32_t reserved;
};
_Static_assert(sizeof(struct sk_hdr) == 56, "sk_hdr is 56 bytes");

/* The receiver's report at the end of a connection. */
struct sk_report {
	uint64_t bytes, msgs, checked, bad;
};
_Static_assert(sizeof(struct sk_report) == 32, "sk_report is 32 bytes");

struct sk_opts {
	bool server;
	const char *server_addr, *dev_addr, *json;
	enum sk_test test;
	uint64_t size, iters, duration_ms, margin_ms, timeout_ms;
	bool all, margin_set;
	uint16_t port;
};

static const struct sk_opts *opts;
static uint8_t *src, *rxbuf;
static uint64_t *lat;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [options]               start a server\n"
		"       " PROG " [options] SERVER_ADDR   run the tests against that server\n"
		"  -d, --dev ADDR      address to bind (server: listen on; default 0.0.0.0)\n"
		"  -t, --test bw|lat   streamed bandwidth (default) or ping-pong latency\n"
		"  -s, --size SIZE     bytes per message (bw: 1M, lat: 64)\n"
		"  -a, --all           every power of two from 64 B to 1 MiB\n"
		"  -D, --duration SEC  run each size SEC seconds (bw: sampled between the margins)\n"
		"  -f, --margin SEC    duration mode: not sampled at either end (default 2, or D/4)\n"
		"  -n, --iters N       iterations mode (default bw 5000, lat 1000)\n"
		"      --json FILE     client: results as JSON\n"
		"  -p, --port PORT     default %d\n"
		"      --timeout SEC   longest wait of any step (default 60)\n"
		"Units as perftest: MB/sec is MiB/s; latency is one-way (RTT/2) in usec.\n",
		DEF_PORT);
}

static int parse_opts(int argc, char **argv, struct sk_opts *o)
{
	static const struct option lopts[] = {
		{"dev", required_argument, NULL, 'd'},
		{"test", required_argument, NULL, 't'},
		{"size", required_argument, NULL, 's'},
		{"all", no_argument, NULL, 'a'},
		{"duration", required_argument, NULL, 'D'},
		{"margin", required_argument, NULL, 'f'},
		{"iters", required_argument, NULL, 'n'},
		{"json", required_argument, NULL, 'J'},
		{"port", required_argument, NULL, 'p'},
		{"timeout", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool size_set = false;
	uint64_t v;
	int c, li;

	*o = (struct sk_opts){.test = SK_BW, .port = DEF_PORT, .timeout_ms = DEF_TIMEOUT_MS};
	while ((li = -1, c = getopt_long(argc, argv, "d:t:s:aD:f:n:p:h", lopts, &li)) != -1) {
		int bad = 0;

		switch (c) {
		case 'd':
			o->dev_addr = optarg;
			break;
		case 't':
			if (!strcmp(optarg, "bw"))
				o->test = SK_BW;
			else if (!strcmp(optarg, "lat"))
				o->test = SK_LAT;
			else
				bad = 1;
			break;
		case 's':
			bad = bench_parse_size(optarg, &o->size) || !o->size || o->size > SK_HALF;
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
		case 'J':
			o->json = optarg;
			break;
		case 'p':
			bad = bench_parse_size(optarg, &v) || !v || v > 65535;
			o->port = (uint16_t)v;
			break;
		case 'T':
			bad = bench_parse_duration(optarg, &o->timeout_ms);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bad) {
			bench_bad_option(PROG, lopts, li, c, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc)
		o->server_addr = argv[optind++];
	if (bench_args_end(PROG, argc, argv))
		return -EINVAL;
	o->server = !o->server_addr;
	if (!size_set)
		o->size = o->test == SK_LAT ? 64 : (1u << 20);
	if (bench_span_resolve(PROG, o->duration_ms, o->margin_set, &o->margin_ms, &o->iters,
			       o->test == SK_LAT ? DEF_LAT_ITERS : DEF_BW_ITERS))
		return -EINVAL;
	return 0;
}

/* ---- sockets -------------------------------------------------------------------------- */

static int sock_opts(int fd)
{
	int one = 1;
	struct timeval tv = {(time_t)(opts->timeout_ms / 1000),
			     (suseconds_t)(opts->timeout_ms % 1000) * 1000};

	/* The timeouts bound every blocking call, so a vanished peer cannot hang the run. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		return -errno;
	return 0;
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res;
	char p[8];
	int rc;

	snprintf(p, sizeof(p), "%u", port);
	rc = getaddrinfo(host, p, &hints, &res);
	if (rc) {
		fprintf(stderr, PROG ": %s: %s\n", host ? host : "*", gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly @len bytes; 1 on a clean EOF before the first byte. */
static int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, p + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return got ? -EPIPE : 1;
		got += (size_t)n;
	}
	return 0;
}

/* ---- the pattern, as psplus-bench-tp lays it out -------------------------------------- */

static uint64_t stride_of(uint64_t size)
{
	return (size + 63) & ~63ull;
}

static uint32_t nslots_of(uint64_t size)
{
	uint64_t n = SK_HALF / stride_of(size);

	return n > SK_MAX_SLOTS ? SK_MAX_SLOTS : (uint32_t)n;
}

static void fill_slots(uint64_t size, uint64_t seed, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		bench_fill(src + k * stride_of(size), size, seed, k * stride_of(size) / 8);
}

/* Check message @i of a stream of slots of @seed: 1 if it was sampled and is wrong. */
static int check_msg(const uint8_t *p, uint64_t size, uint64_t seed, uint32_t nslots, uint64_t i,
		     uint64_t *checked)
{
	uint32_t k = (uint32_t)(i % nslots);
	uint64_t w0 = k * stride_of(size) / 8;

	if (i % SK_SAMPLE_EVERY)
		return 0;
	*checked += size;
	return bench_csum(p, size, w0) != bench_pattern_csum(seed, size, w0);
}

/* ---- server --------------------------------------------------------------------------- */

static int serve_bw(int fd, const struct sk_hdr *h, struct sk_report *rep)
{
	uint32_t nslots = nslots_of(h->size);
	/* Whole messages per buffer, so each lands contiguously for the check. */
	size_t cap = h->size >= SK_RX_BUF ? h->size : SK_RX_BUF / h->size * h->size;
	size_t fill = 0;
	uint64_t i = 0;
	bool eof = false;

	while (!eof) {
		ssize_t n = recv(fd, rxbuf + fill, cap - fill, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		eof = n == 0;
		fill += (size_t)n;
		rep->bytes += (uint64_t)n;
		if (fill == cap || eof) {
			size_t whole = fill / h->size * h->size;

			for (size_t off = 0; off < whole; off += h->size, i++)
				rep->bad += check_msg(rxbuf + off, h->size, h->seed, nslots, i,
						      &rep->checked);
			memmove(rxbuf, rxbuf + whole, fill - whole);
			fill -= whole;
		}
	}
	rep->msgs = i;
	if (fill)
		rep->bad++; /* a torn last message */
	return 0;
}

static int serve_lat(int fd, const struct sk_hdr *h, struct sk_report *rep)
{
	const uint8_t *pong = src;
	int rc;

	fill_slots(h->size, h->seed ^ SK_SERVER_SALT, 1);
	for (;;) {
		rc = read_all(fd, rxbuf, h->size);
		if (rc == 1)
			return 0;
		if (rc)
			return rc;
		/* Answer first, check after: the check is not part of the round trip. */
		rc = write_all(fd, pong, h->size);
		if (rc)
			return rc;
		rep->bad += check_msg(rxbuf, h->size, h->seed, 1, rep->msgs, &rep->checked);
		rep->msgs++;
		rep->bytes += h->size;
	}
}

static int run_server(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int lfd, one = 1, rc;
	const char *host = opts->dev_addr ? opts->dev_addr : "0.0.0.0";

	rc = resolve(host, opts->port, &ss, &sl);
	if (rc)
		return rc;
	lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, (struct sockaddr *)&ss, sl) || listen(lfd, 4)) {
		rc = -errno;
		fprintf(stderr, PROG ": listening on %s:%u: %s\n", host, opts->port, strerror(-rc));
		if (lfd >= 0)
			close(lfd);
		return rc;
	}
	printf(" Waiting for a client on %s:%u\n", host, opts->port);
	fflush(stdout);
	for (;;) {
		struct pollfd pfd = {lfd, POLLIN, 0};
		struct sk_hdr h;
		struct sk_report rep = {0};
		int fd;

		rc = poll(&pfd, 1, (int)opts->timeout_ms);
		if (rc <= 0) {
			fprintf(stderr, PROG ": no client within %" PRIu64 " ms\n",
				opts->timeout_ms);
			rc = -ETIMEDOUT;
			break;
		}
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		rc = sock_opts(fd);
		if (!rc)
			rc = read_all(fd, &h, sizeof(h));
		if (!rc && (h.magic != SK_MAGIC || h.version != SK_VERSION || !h.size ||
			    h.size > SK_HALF || (h.test != SK_BW && h.test != SK_LAT)))
			rc = -EPROTO;
		if (!rc)
			rc = h.test == SK_BW ? serve_bw(fd, &h, &rep) : serve_lat(fd, &h, &rep);
		if (!rc)
			rc = write_all(fd, &rep, sizeof(rep));
		close(fd);
		if (rc) {
			fprintf(stderr, PROG ": connection failed: %s\n",
				strerror(rc < 0 ? -rc : rc));
			break;
		}
		printf(" round %s %" PRIu64 " B: %" PRIu64 " messages, %" PRIu64 " checked bytes, "
		       "bad %" PRIu64 "\n",
		       h.test == SK_BW ? "bw" : "lat", h.size, rep.msgs, rep.checked, rep.bad);
		fflush(stdout);
		if (h.last)
			break;
	}
	close(lfd);
	return rc;
}

/* ---- client --------------------------------------------------------------------------- */

static int dial(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	uint64_t deadline = ps_clock_deadline_ms(opts->timeout_ms);
	int fd, rc;

	rc = resolve(opts->server_addr, opts->port, &ss, &sl);
	if (rc)
		return rc;
	for (;;) {
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (!connect(fd, (struct sockaddr *)&ss, sl))
			break;
		rc = -errno;
		close(fd);
		/* The server may still be starting: retry refusals until the timeout. */
		if (rc != -ECONNREFUSED || !ps_clock_remaining_ms(deadline)) {
			fprintf(stderr, PROG ": connecting to %s:%u: %s\n", opts->server_addr,
				opts->port, strerror(-rc));
			return rc;
		}
		struct timespec ts = {0, CONNECT_RETRY_MS * 1000000L};

		nanosleep(&ts, NULL);
	}
	rc = sock_opts(fd);
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;
}

/* Stream messages; sample like psplus-bench-tp (completions between the margins). */
static int client_bw(int fd, const struct sk_hdr *h, struct bench_row *row, uint64_t *sent)
{
	uint32_t nslots = nslots_of(h->size);
	uint64_t limit = h->iters ? h->iters : UINT64_MAX, i;
	uint64_t t0 = bench_now_ns(), now = t0;
	uint64_t stop = t0 + h->duration_ms * PS_NSEC_PER_MSEC;
	uint64_t w_lo = t0 + opts->margin_ms * PS_NSEC_PER_MSEC;
	uint64_t w_hi = stop - opts->margin_ms * PS_NSEC_PER_MSEC;
	uint64_t w_t0 = 0, w_o0 = 0, w_t1 = 0, w_o1 = 0;
	bool in_window = false;
	int rc;

	for (i = 0; i < limit; i++) {
		rc = write_all(fd, src + (i % nslots) * stride_of(h->size), h->size);
		if (rc)
			return rc;
		now = bench_now_ns();
		if (!h->iters) {
			if (!in_window && now >= w_lo) {
				in_window = true;
				w_t0 = w_t1 = now;
				w_o0 = w_o1 = i + 1;
			} else if (in_window && now <= w_hi) {
				w_t1 = now;
				w_o1 = i + 1;
			}
			if (now >= stop) {
				i++;
				break;
			}
		}
	}
	if (h->iters || w_o1 <= w_o0) {
		w_o0 = 0;
		w_o1 = i;
		w_t0 = t0;
		w_t1 = now;
	}
	row->iters = w_o1 - w_o0;
	row->bw_mbs =
		(double)row->iters * (double)h->size / ((double)(w_t1 - w_t0) / 1e9) / BENCH_MIB;
	row->mpps = (double)row->iters * 1e3 / (double)(w_t1 - w_t0);
	*sent = i;
	return 0;
}

static int client_lat(int fd, const struct sk_hdr *h, size_t *n, uint64_t *bad, uint64_t *checked)
{
	uint64_t limit = h->iters ? h->iters : SK_LAT_MAX;
	uint64_t stop = bench_now_ns() + h->duration_ms * PS_NSEC_PER_MSEC, i;
	int rc;

	for (i = 0; i < limit; i++) {
		uint64_t t0 = bench_now_ns(), t1;

		rc = write_all(fd, src, h->size);
		if (!rc)
			rc = read_all(fd, rxbuf, h->size);
		if (rc)
			return rc > 0 ? -EPIPE : rc;
		t1 = bench_now_ns();
		lat[i] = t1 - t0;
		*bad += check_msg(rxbuf, h->size, h->seed ^ SK_SERVER_SALT, 1, i, checked);
		if (h->duration_ms && t1 >= stop) {
			i++;
			break;
		}
	}
	*n = i;
	return 0;
}

static int client_round(uint64_t size, bool last, struct bench_row *row)
{
	struct sk_hdr h = {.magic = SK_MAGIC,
			   .version = SK_VERSION,
			   .test = opts->test,
			   .size = size,
			   .iters = opts->duration_ms ? 0 : opts->iters,
			   .duration_ms = opts->duration_ms,
			   .seed = bench_seed(),
			   .last = last};
	struct sk_report rep;
	uint64_t bad = 0, checked = 0, sent = 0;
	size_t n = 0;
	int fd, rc;

	memset(row, 0, sizeof(*row));
	row->bytes = size;
	row->bytes_copied = -1;
	fill_slots(size, h.seed, opts->test == SK_BW ? nslots_of(size) : 1);
	fd = dial();
	if (fd < 0)
		return fd;
	rc = write_all(fd, &h, sizeof(h));
	if (!rc)
		rc = opts->test == SK_BW ? client_bw(fd, &h, row, &sent)
					 : client_lat(fd, &h, &n, &bad, &checked);
	/* End of the stream: the receiver reports what it got. */
	if (!rc && shutdown(fd, SHUT_WR))
		rc = -errno;
	if (!rc)
		rc = read_all(fd, &rep, sizeof(rep));
	close(fd);
	if (rc) {
		fprintf(stderr, PROG ": round of %" PRIu64 " B: %s\n", size,
			rc > 0 ? "server closed early" : strerror(-rc));
		return rc > 0 ? -EPIPE : rc;
	}
	if (opts->test == SK_LAT) {
		row->iters = n;
		bench_lat_compute(lat, n, &row->lat);
		row->check_ok = rep.msgs == n && !rep.bad && !bad;
	} else {
		row->check_ok =
			rep.msgs == sent && rep.bytes == sent * size && !rep.bad && rep.checked;
	}
	row->checked = rep.checked + checked;
	if (!row->check_ok)
		fprintf(stderr,
			PROG ": data check FAILED at %" PRIu64 " B: server got %" PRIu64
			     " messages (%" PRIu64 " bytes), bad %" PRIu64 "/%" PRIu64 "\n",
			size, rep.msgs, rep.bytes, rep.bad, bad);
	return 0;
}

static int run_client(void)
{
	struct bench_row rows[32];
	size_t nrows = 0;
	enum bench_kind kind = opts->test == SK_LAT ? BENCH_LAT : BENCH_BW;
	bool ok = true;
	uint64_t checked = 0;
	int rc = 0;

	printf("%s\n", BENCH_TABLE_RULE);
	printf("                    plain TCP socket %s Test (psplus-bench-sock)\n",
	       opts->test == SK_LAT ? "Latency" : "BW");
	printf(" Sockets         : blocking, TCP_NODELAY\tServer         : %s:%u\n",
	       opts->server_addr, opts->port);
	bench_print_span(stdout, opts->duration_ms, opts->margin_ms, opts->iters, "");
	bench_print_header(stdout, kind);
	for (uint64_t size = opts->all ? BENCH_ALL_MIN : opts->size;; size *= 2) {
		bool last = !opts->all || size >= BENCH_ALL_MAX;

		rc = client_round(size, last, &rows[nrows]);
		if (rc)
			return rc;
		bench_print_row(stdout, kind, &rows[nrows]);
		ok = ok && rows[nrows].check_ok;
		checked += rows[nrows].checked;
		nrows++;
		if (last)
			break;
	}
	bench_print_footer(stdout);
	bench_print_check(stdout, ok, checked);
	fflush(stdout);
	if (opts->json) {
		struct bench_json_info ji = {.tool = PROG,
					     .transport = "socket",
					     .device = "tcp",
					     .test = opts->test == SK_LAT ? "lat" : "bw",
					     .kind = kind,
					     .duration_s = (double)opts->duration_ms / 1000,
					     .margin_s = (double)opts->margin_ms / 1000,
					     .iters = opts->iters};

		rc = bench_json_save(PROG, opts->json, &ji, rows, nrows);
	}
	return ok ? rc : -EIO;
}

int main(int argc, char **argv)
{
	struct sk_opts o;
	int rc;

	if (parse_opts(argc, argv, &o))
		return BENCH_EXIT_USAGE;
	opts = &o;
	signal(SIGPIPE, SIG_IGN);
	bench_clock_init();
	src = aligned_alloc(4096, SK_HALF);
	rxbuf = aligned_alloc(4096, SK_RX_BUF > SK_HALF ? SK_RX_BUF : SK_HALF);
	if (!o.server && o.test == SK_LAT)
		lat = calloc(o.duration_ms ? SK_LAT_MAX : o.iters, sizeof(*lat));
	if (!src || !rxbuf || (!o.server && o.test == SK_LAT && !lat)) {
		fprintf(stderr, PROG ": out of memory\n");
		return BENCH_EXIT_FAILURE;
	}
	rc = o.server ? run_server() : run_client();
	free(src);
	free(rxbuf);
	free(lat);
	return rc ? BENCH_EXIT_FAILURE : 0;
}
