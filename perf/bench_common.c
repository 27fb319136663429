/*
 * The benchmarks' shared helpers: pattern, checksum, parsing, statistics, banner and table
 * lines, pairs of rounds, and JSON.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench_common.h"

/* The pattern and the checksum are defined on little-endian words. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the benchmarks assume little-endian");

double bench_ns_per_tick = 1.0;
uint64_t bench_tick0;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_clock_init(void)
{
#if defined(__x86_64__) || defined(__i386__)
	uint64_t n0, n1, t0, t1;

	n0 = mono_ns();
	t0 = __rdtsc();
	do {
		n1 = mono_ns();
	} while (n1 - n0 < 50000000ull);
	t1 = __rdtsc();
	if (t1 > t0)
		bench_ns_per_tick = (double)(n1 - n0) / (double)(t1 - t0);
	bench_tick0 = t0;
#endif
}

void bench_fill(void *buf, size_t len, uint64_t seed, uint64_t word0)
{
	uint8_t *p = buf;
	size_t nw = len / 8, i;
	uint64_t w;

	/* memcpy keeps unaligned slots legal; compilers turn it into one store. */
	for (i = 0; i < nw; i++) {
		w = bench_word(seed, word0 + i);
		memcpy(p + i * 8, &w, 8);
	}
	if (len % 8) {
		w = bench_word(seed, word0 + nw);
		memcpy(p + nw * 8, &w, len % 8);
	}
}

void bench_fill_index(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	size_t nw = len / 8, i;
	uint64_t w;

	for (i = 0; i < nw; i++) {
		w = (i + seed) * 0x9e3779b97f4a7c15ull;
		memcpy(p + i * 8, &w, 8);
	}
	if (len % 8) {
		w = (nw + seed) * 0x9e3779b97f4a7c15ull;
		memcpy(p + nw * 8, &w, len % 8);
	}
}

uint64_t bench_csum(const void *buf, size_t len, uint64_t word0)
{
	const uint8_t *p = buf;
	size_t nw = len / 8, i;
	uint64_t w, sum = 0;

	/* Each word is mixed with its position, so swapped or shifted data changes the sum. */
	for (i = 0; i < nw; i++) {
		memcpy(&w, p + i * 8, 8);
		sum += bench_csum_word(w, word0 + i);
	}
	if (len % 8) {
		w = 0;
		memcpy(&w, p + nw * 8, len % 8);
		sum += bench_csum_word(w, word0 + nw);
	}
	return sum;
}

uint64_t bench_pattern_csum(uint64_t seed, size_t len, uint64_t word0)
{
	size_t nw = len / 8, i;
	uint64_t sum = 0;

	for (i = 0; i < nw; i++)
		sum += bench_csum_word(bench_word(seed, word0 + i), word0 + i);
	if (len % 8) {
		/* The partial word as bench_csum() reads it: its first len % 8 bytes, zero-padded. */
		uint64_t w = bench_word(seed, word0 + nw) & ((1ull << (8 * (len % 8))) - 1);

		sum += bench_csum_word(w, word0 + nw);
	}
	return sum;
}

uint64_t bench_seed(void)
{
	static uint64_t counter;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return bench_mix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
	       bench_mix64(((uint64_t)getpid() << 32) + ++counter);
}

int bench_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' && shift) /* "64Ki", "1Mi" */
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int bench_parse_seconds(const char *s, uint64_t *out_ms)
{
	char *end;
	double v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 1e6)
		return -EINVAL;
	*out_ms = (uint64_t)llround(v * 1000.0);
	return 0;
}

int bench_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v;

	if (bench_parse_size(s, &v) || v < lo || v > hi)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int bench_parse_duration(const char *s, uint64_t *out_ms)
{
	return bench_parse_seconds(s, out_ms) || !*out_ms ? -EINVAL : 0;
}

int bench_args_end(const char *prog, int argc, char **argv)
{
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		return -EINVAL;
	}
	return 0;
}

int bench_margin_resolve(const char *prog, uint64_t duration_ms, bool margin_set,
			 uint64_t *margin_ms)
{
	if (!margin_set)
		*margin_ms = duration_ms >= 4 * BENCH_DEF_MARGIN_MS ? BENCH_DEF_MARGIN_MS
								    : duration_ms / 4;
	if (2 * *margin_ms >= duration_ms) {
		fprintf(stderr, "%s: -D must be more than twice the margin (-f)\n", prog);
		return -EINVAL;
	}
	return 0;
}

int bench_span_resolve(const char *prog, uint64_t duration_ms, bool margin_set, uint64_t *margin_ms,
		       uint64_t *iters, uint64_t def_iters)
{
	if (duration_ms)
		return bench_margin_resolve(prog, duration_ms, margin_set, margin_ms);
	if (!*iters)
		*iters = def_iters;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least @q of the samples at or below it. */
static double rank_us(const uint64_t *sorted, size_t n, double q, double ns_per_us)
{
	size_t k = (size_t)ceil(q * (double)n);

	k = k ? k - 1 : 0;
	if (k >= n)
		k = n - 1;
	return (double)sorted[k] / ns_per_us;
}

/* Statistics of @n samples in ns, each read as @ns_per_us ns per reported microsecond. */
static void lat_stats(uint64_t *ns, size_t n, double ns_per_us, struct bench_lat *out)
{
	double sum = 0, sq = 0, avg;

	memset(out, 0, sizeof(*out));
	if (!n)
		return;
	qsort(ns, n, sizeof(*ns), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)ns[i] / ns_per_us;
	avg = sum / (double)n;
	for (size_t i = 0; i < n; i++) {
		double d = (double)ns[i] / ns_per_us - avg;

		sq += d * d;
	}
	out->min_us = (double)ns[0] / ns_per_us;
	out->max_us = (double)ns[n - 1] / ns_per_us;
	/* The median, as perftest's t_typical. */
	out->typical_us = n % 2 ? (double)ns[n / 2] / ns_per_us
				: ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / (2 * ns_per_us);
	out->avg_us = avg;
	out->stdev_us = sqrt(sq / (double)n);
	out->p99_us = rank_us(ns, n, 0.99, ns_per_us);
	out->p999_us = rank_us(ns, n, 0.999, ns_per_us);
}

void bench_lat_compute(uint64_t *rtt_ns, size_t n, struct bench_lat *out)
{
	lat_stats(rtt_ns, n, 2000.0, out); /* one-way: half the round trip */
}

void bench_op_lat_compute(uint64_t *ns, size_t n, struct bench_lat *out)
{
	lat_stats(ns, n, 1000.0, out);
}

void bench_bad_option(const char *prog, const struct option *lopts, int li, int c, const char *arg)
{
	char name[48];

	if (li >= 0)
		snprintf(name, sizeof(name), "--%s", lopts[li].name);
	else
		snprintf(name, sizeof(name), "-%c", c);
	fprintf(stderr, "%s: bad value for option %s: '%s'\n", prog, name, arg ? arg : "");
}

void bench_print_header(FILE *f, enum bench_kind kind)
{
	fprintf(f, "%s\n", BENCH_TABLE_RULE);
	if (kind == BENCH_BW)
		fprintf(f, " #bytes     #iterations    BW average[MB/sec]    MsgRate[Mpps]\n");
	else
		fprintf(f, " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    "
			   "t_avg[usec]    t_stdev[usec]   99%% percentile[usec]   99.9%% "
			   "percentile[usec]\n");
}

void bench_print_row(FILE *f, enum bench_kind kind, const struct bench_row *r)
{
	if (kind == BENCH_BW) {
		fprintf(f, " %-10" PRIu64 " %-14" PRIu64 " %-21.2f %.6f\n", r->bytes, r->iters,
			r->bw_mbs, r->mpps);
	} else {
		fprintf(f,
			" %-6" PRIu64 " %-11" PRIu64
			"    %-14.2f %-12.2f %-18.2f %-14.2f %-15.2f %-22.2f %.2f\n",
			r->bytes, r->iters, r->lat.min_us, r->lat.max_us, r->lat.typical_us,
			r->lat.avg_us, r->lat.stdev_us, r->lat.p99_us, r->lat.p999_us);
	}
	fflush(f);
}

void bench_print_footer(FILE *f)
{
	fprintf(f, "%s\n", BENCH_TABLE_RULE);
	fflush(f);
}

void bench_print_span(FILE *f, uint64_t duration_ms, uint64_t margin_ms, uint64_t iters,
		      const char *iters_note)
{
	if (duration_ms)
		fprintf(f, " Duration        : %.1f s\t\tMargin         : %.1f s\n",
			(double)duration_ms / 1000, (double)margin_ms / 1000);
	else
		fprintf(f, " Iterations      : %" PRIu64 "%s\n", iters, iters_note);
}

void bench_print_check(FILE *f, bool ok, uint64_t checked)
{
	fprintf(f, " data check      : %s (%" PRIu64 " bytes compared by checksum)\n",
		ok ? "ok" : "FAILED", checked);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bench_pairs_print(FILE *f, const char *intro, const struct bench_row *gather,
			 const struct bench_row *contig, uint32_t n)
{
	double r[BENCH_PAIRS_MAX], g[BENCH_PAIRS_MAX], c[BENCH_PAIRS_MAX], m;

	if (n > BENCH_PAIRS_MAX)
		n = BENCH_PAIRS_MAX; /* the tools refuse more on their command lines */
	fprintf(f, "%s\n", intro);
	bench_print_header(f, BENCH_BW);
	for (uint32_t i = 0; i < n; i++) {
		bench_print_row(f, BENCH_BW, &contig[i]);
		g[i] = gather[i].bw_mbs;
		c[i] = contig[i].bw_mbs;
		r[i] = c[i] > 0 ? g[i] / c[i] : 0;
	}
	bench_print_footer(f);
	fprintf(f, " gather/contiguous:");
	for (uint32_t i = 0; i < n; i++)
		fprintf(f, " %.3f", r[i]);
	/* Printed before the medians sort them. */
	m = bench_median(r, n);
	fprintf(f,
		"\n gather_vs_contiguous ratio_median=%.3f gather_median=%.2f "
		"contiguous_median=%.2f pairs=%u\n",
		m, bench_median(g, n), bench_median(c, n), n);
	return m;
}

static void json_rows(FILE *f, const char *key, enum bench_kind kind, const struct bench_row *rows,
		      size_t nrows)
{
	fprintf(f, "  \"%s\": [", key);
	for (size_t i = 0; i < nrows; i++) {
		const struct bench_row *r = &rows[i];

		fprintf(f, "%s\n    {\"bytes\": %" PRIu64 ", \"iterations\": %" PRIu64,
			i ? "," : "", r->bytes, r->iters);
		if (kind != BENCH_LAT)
			fprintf(f, ", \"bw_avg_mbs\": %.3f, \"msg_rate_mpps\": %.6f", r->bw_mbs,
				r->mpps);
		if (kind != BENCH_BW)
			fprintf(f,
				", \"t_min_us\": %.3f, \"t_max_us\": %.3f, \"t_typical_us\": %.3f, "
				"\"t_p50_us\": %.3f, \"t_avg_us\": %.3f, \"t_stdev_us\": %.3f, "
				"\"t_p99_us\": %.3f, \"t_p999_us\": %.3f",
				r->lat.min_us, r->lat.max_us, r->lat.typical_us, r->lat.typical_us,
				r->lat.avg_us, r->lat.stdev_us, r->lat.p99_us, r->lat.p999_us);
		fprintf(f, ", \"check\": \"%s\", \"checked_bytes\": %" PRIu64,
			r->check_ok ? "ok" : "FAILED", r->checked);
		if (r->bytes_copied >= 0)
			fprintf(f, ", \"bytes_copied\": %" PRId64, r->bytes_copied);
		fprintf(f, "}");
	}
	fprintf(f, "\n  ]");
}

int bench_json_write(const char *path, const struct bench_json_info *in,
		     const struct bench_row *rows, size_t nrows)
{
	FILE *f = fopen(path, "w");
	int rc = 0;

	if (!f)
		return -errno;
	fprintf(f, "{\n  \"tool\": \"%s\",\n  \"transport\": \"%s\",\n  \"device\": \"%s\",\n",
		in->tool, in->transport, in->device ? in->device : "");
	fprintf(f,
		"  \"test\": \"%s\",\n  \"units\": {\"bw\": \"MiB/s\", \"msg_rate\": \"Mpps\", "
		"\"latency\": \"%s\"},\n",
		in->test, in->kind == BENCH_BW_LAT ? "usec per operation" : "usec one-way (RTT/2)");
	fprintf(f, "  \"duration_s\": %.3f,\n  \"margin_s\": %.3f,\n  \"iters\": %" PRIu64 ",\n",
		in->duration_s, in->margin_s, in->iters);
	fprintf(f, "  \"depth\": %u,\n  \"cq_mod\": %u,\n", in->depth, in->cq_mod);
	if (in->rows)
		fprintf(f, "  \"rows\": %u,\n  \"row_size\": %u,\n  \"table_size\": %" PRIu64 ",\n",
			in->rows, in->row_size, in->table_size);
	json_rows(f, "results", in->kind, rows, nrows);
	if (in->extra_name) {
		fprintf(f, ",\n");
		json_rows(f, in->extra_name, in->kind, in->extra, in->nextra);
		fprintf(f, ",\n  \"%s_ratio_median\": %.4f", in->extra_name, in->extra_ratio);
	}
	fprintf(f, "\n}\n");
	if (ferror(f))
		rc = -EIO;
	if (fclose(f) && !rc)
		rc = -errno;
	return rc;
}

int bench_json_save(const char *prog, const char *path, const struct bench_json_info *info,
		    const struct bench_row *rows, size_t nrows)
{
	int rc = bench_json_write(path, info, rows, nrows);

	if (rc)
		fprintf(stderr, "%s: writing %s: %s\n", prog, path, strerror(-rc));
	return rc;
}
