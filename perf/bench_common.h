/*
 * What the perftest-style benchmarks share (psplus-bench-tp, psplus-bench-sock, psplus-bench-ps,
 * psplus-bench-verbs): sizes and times on the command line, the data pattern and checksum that
 * let a run prove its data arrived, latency statistics, the summary of pairs of rounds, and the
 * output (a perftest-like banner and table, and the same numbers as JSON). Every line these
 * print is read by scripts (the shell scripts of perf, scripts/bench-*.sh): keep their formats.
 *
 * Units are perftest's: "MB/sec" is MiB/s (2^20 bytes per second, perftest's MBS format),
 * "Mpps" is millions of messages per second, latencies are one-way microseconds (RTT / 2 of a
 * ping-pong, as ib_send_lat and ib_write_lat report them).
 *
 * The data pattern: the byte stream whose 8-byte word number g (little-endian) is
 * bench_word(seed, g). A buffer holds the stream from some word index on, so any piece of it
 * (a slot, a table row) can be regenerated or checked without the rest. The checksum is
 * positional and additive: the checksum of a concatenation is the sum of the checksums of its
 * pieces when each piece is told its starting word index, so a gather of scattered rows can be
 * summed row by row on the sender and in one sweep on the receiver.
 */
#ifndef PS_PERF_BENCH_COMMON_H
#define PS_PERF_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MIB     (1024.0 * 1024.0)
#define BENCH_ALL_MIN 64u	 /* -a: first size */
#define BENCH_ALL_MAX (1u << 20) /* -a: last size */
#define BENCH_TABLE_RULE \
	"---------------------------------------------------------------------------------------"
#define BENCH_EXIT_USAGE   2
#define BENCH_EXIT_FAILURE 1

/* ---- a cheap clock for the measuring loops --------------------------------------------------- */

/*
 * The loops read the time at every poll. clock_gettime() is a vDSO read of the TSC on hardware
 * (~20 ns), but in the TCG guest the kernel distrusts the TSC and falls back to the HPET, and
 * each call becomes a system call and an emulated device read (~1 us measured): more than the
 * gaps being measured. So, like perftest's get_cycles(), the loops read the TSC and convert it
 * with a rate calibrated against CLOCK_MONOTONIC at start-up (bench_clock_init(), 50 ms).
 * Elsewhere the clock is CLOCK_MONOTONIC itself.
 */
extern double bench_ns_per_tick;
extern uint64_t bench_tick0;

/** bench_clock_init() - calibrate bench_now_ns(); call once before any measuring. */
void bench_clock_init(void);

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t bench_now_ns(void)
{
	return (uint64_t)((double)(__rdtsc() - bench_tick0) * bench_ns_per_tick);
}
#else
#include <time.h>
static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
#endif

/* ---- the data pattern and the checksum ----------------------------------------------------- */

/** bench_mix64() - a 64-bit mixer (the splitmix64 finaliser): every input bit moves every output. */
static inline uint64_t bench_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/** bench_word() - word @g of the pattern stream of @seed. */
static inline uint64_t bench_word(uint64_t seed, uint64_t g)
{
	return bench_mix64(seed + g * 0x9e3779b97f4a7c15ull);
}

/** bench_csum_word() - the checksum term of word @w at stream position @g. */
static inline uint64_t bench_csum_word(uint64_t w, uint64_t g)
{
	return bench_mix64(w ^ (g * 0xd6e8feb86659fd93ull));
}

/** bench_fill() - write @len bytes of the pattern of @seed, starting at word @word0, to @buf. */
void bench_fill(void *buf, size_t len, uint64_t seed, uint64_t word0);

/**
 * bench_fill_index() - a cheaper fill for large tables: word g is (g + seed) times an odd
 * constant, so every word of the buffer differs (a misplaced row cannot check) at one multiply
 * per word (filling 1 GiB in the TCG guest is otherwise tens of seconds).
 */
void bench_fill_index(void *buf, size_t len, uint64_t seed);

/**
 * bench_csum() - positional checksum of @len bytes that sit at word @word0 of a stream.
 * A final partial word counts as if zero-padded. Additive: csum(A|B, w) = csum(A, w) +
 * csum(B, w + len(A)/8) when len(A) is a multiple of 8.
 */
uint64_t bench_csum(const void *buf, size_t len, uint64_t word0);

/**
 * bench_pattern_csum() - what bench_csum() gives for @len bytes of the pattern of @seed
 * starting at word @word0, computed without the bytes (to check data against the pattern).
 */
uint64_t bench_pattern_csum(uint64_t seed, size_t len, uint64_t word0);

/** bench_seed() - a fresh seed (time, pid, a counter): each round writes data no earlier one did. */
uint64_t bench_seed(void);

/* ---- command line ------------------------------------------------------------------------ */

/** bench_parse_size() - "65536", "64K", "1M", "1G" (binary multiples) to bytes; -EINVAL else. */
int bench_parse_size(const char *s, uint64_t *out);

/** bench_parse_seconds() - "5", "0.5" to milliseconds (>= 0); -EINVAL else. */
int bench_parse_seconds(const char *s, uint64_t *out_ms);

/** bench_parse_u32() - bench_parse_size() within [@lo, @hi]; -EINVAL else. */
int bench_parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out);

/** bench_parse_duration() - bench_parse_seconds() of a span that may not be 0 (-D, --timeout). */
int bench_parse_duration(const char *s, uint64_t *out_ms);

/**
 * bench_args_end() - after getopt_long() and the operands a tool takes: "PROG: unexpected
 * argument 'ARG'" on stderr and -EINVAL when argv[optind] is still left, else 0.
 */
int bench_args_end(const char *prog, int argc, char **argv);

#define BENCH_DEF_MARGIN_MS 2000u /* perftest's -f default */

/**
 * bench_margin_resolve() - duration mode (-D @duration_ms): the margin left out of the samples
 * at either end. Without -f (@margin_set false) it is perftest's 2 s, or a quarter of the
 * duration when that is under 8 s. A margin of half the duration or more is refused with a
 * message on stderr (-EINVAL).
 */
int bench_margin_resolve(const char *prog, uint64_t duration_ms, bool margin_set,
			 uint64_t *margin_ms);

/**
 * bench_span_resolve() - how long each round runs, once the options are read: in duration mode
 * (@duration_ms > 0) the margin, as bench_margin_resolve() (-EINVAL, with a message, when it
 * does not fit); in iterations mode @def_iters when -n left *@iters at 0.
 */
int bench_span_resolve(const char *prog, uint64_t duration_ms, bool margin_set, uint64_t *margin_ms,
		       uint64_t *iters, uint64_t def_iters);

/* ---- results ----------------------------------------------------------------------------- */

enum bench_kind {
	BENCH_BW,
	BENCH_LAT,
	BENCH_BW_LAT, /* JSON only: both, bandwidth and latency per operation (not halved) */
};

struct bench_lat {
	double min_us, max_us, typical_us, avg_us, stdev_us, p99_us, p999_us;
};

/* One line of a table: one message size. */
struct bench_row {
	uint64_t bytes;	      /* message (or gather) size */
	uint64_t iters;	      /* operations measured (bw: in the sampled window) */
	double bw_mbs;	      /* BENCH_BW: MiB/s */
	double mpps;	      /* BENCH_BW: millions of operations per second */
	struct bench_lat lat; /* BENCH_LAT */
	bool check_ok;	      /* the data check passed */
	uint64_t checked;     /* bytes the data check covered */
	int64_t bytes_copied; /* the sender's ps_tp_stats.bytes_copied over the run; -1: n/a */
};

/**
 * bench_lat_compute() - one-way statistics from @n round-trip times in ns (sorted in place):
 * each sample is halved, t_typical is the median, percentiles are nearest-rank.
 */
void bench_lat_compute(uint64_t *rtt_ns, size_t n, struct bench_lat *out);

/**
 * bench_op_lat_compute() - as bench_lat_compute(), for @n samples that are each one whole
 * operation (a call), not a round trip: nothing is halved.
 */
void bench_op_lat_compute(uint64_t *ns, size_t n, struct bench_lat *out);

struct option;

/**
 * bench_bad_option() - "PROG: bad value for option --NAME: 'ARG'" on stderr, naming the option
 * as given: the long one when getopt_long() set @li (>= 0), else -@c.
 */
void bench_bad_option(const char *prog, const struct option *lopts, int li, int c, const char *arg);

/** bench_print_header() - the rule and column header of a table of @kind (BENCH_BW or _LAT). */
void bench_print_header(FILE *f, enum bench_kind kind);

/** bench_print_row() - one line of the table. */
void bench_print_row(FILE *f, enum bench_kind kind, const struct bench_row *r);

/** bench_print_footer() - the closing rule. */
void bench_print_footer(FILE *f);

/**
 * bench_print_span() - the banner line of the run's length: " Duration ... Margin ..." in
 * duration mode (@duration_ms > 0), else " Iterations      : N" followed by @iters_note
 * ("" or e.g. " per client").
 */
void bench_print_span(FILE *f, uint64_t duration_ms, uint64_t margin_ms, uint64_t iters,
		      const char *iters_note);

/** bench_print_check() - " data check      : ok|FAILED (N bytes compared by checksum)". */
void bench_print_check(FILE *f, bool ok, uint64_t checked);

/* ---- pairs of rounds ----------------------------------------------------------------------- */

/*
 * The gather tests run K pairs of rounds, a gather round then a contiguous round of the same
 * bytes right after it, so that both see the same moment of a shared host; a pair's ratio is
 * gather / contiguous bandwidth and the run's is the median over the pairs. Scripts read the
 * summary line (perf/rxe_bench_inner.sh, perf/rxe_verbs_gather.sh):
 *   gather_vs_contiguous ratio_median=R gather_median=G contiguous_median=C pairs=K
 */
#define BENCH_PAIRS_MAX 64u /* the most pairs a tool may run (--contig-pairs) */

/** bench_median() - the median of @n > 0 values; sorts @v in place. */
double bench_median(double *v, size_t n);

/**
 * bench_pairs_print() - the contiguous rounds of @n pairs (n <= BENCH_PAIRS_MAX) on @f: the
 * line @intro, their table, each pair's ratio (" gather/contiguous: r1 r2 ...") and the summary
 * line above. Returns the median ratio. A contiguous round with no bandwidth gives ratio 0.
 */
double bench_pairs_print(FILE *f, const char *intro, const struct bench_row *gather,
			 const struct bench_row *contig, uint32_t n);

/* Describes the run for the JSON file: everything but the rows. */
struct bench_json_info {
	const char *tool;      /* "psplus-bench-tp" */
	const char *transport; /* "tcp", "rdma", "socket" */
	const char *device;    /* "rxe1", "tcp", ... */
	const char *test;      /* "write_bw", ... */
	enum bench_kind kind;
	double duration_s; /* 0: iterations mode */
	double margin_s;
	uint64_t iters;		 /* iterations mode: the count asked for */
	uint32_t depth, cq_mod;	 /* 0: not applicable */
	uint32_t rows, row_size; /* gather only (0 otherwise) */
	uint64_t table_size;	 /* gather only */
	/* Optional second set of rows (the gather's contiguous baseline) and its summary. */
	const char *extra_name; /* JSON key of the extra rows, or NULL */
	const struct bench_row *extra;
	size_t nextra;
	double extra_ratio; /* median of rows[i].bw / extra[i].bw */
};

/** bench_json_write() - the run and its rows as a JSON object in @path. 0 or -errno. */
int bench_json_write(const char *path, const struct bench_json_info *info,
		     const struct bench_row *rows, size_t nrows);

/**
 * bench_json_save() - bench_json_write(), and on failure "PROG: writing PATH: reason" on
 * stderr. 0 or -errno.
 */
int bench_json_save(const char *prog, const char *path, const struct bench_json_info *info,
		    const struct bench_row *rows, size_t nrows);

#endif
