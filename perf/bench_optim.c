/*
 * psplus-bench-optim: how fast the server applies optimizer updates, as a fraction of what the
 * memory system can move, measured in the same run.
 *
 * For each optimizer and each access mode it times ps_store pushes for --seconds:
 *   dense   ps_store_dense_push() over the whole part: rows in address order (streaming);
 *   sparse  ps_store_push() of --batch random row ids (uniform over the part);
 *   hash    ps_store_hash_push64() of --batch random keys, all present (index lookups too).
 * Rates are row updates per second and GB/s of memory traffic, counting what an update must
 * move: the row read and written back ((1 + slots) * width floats each way) and the gradient
 * read (width floats): (2 * (1 + slots) + 1) * width * 4 bytes per row.
 *
 * The reference is memcpy() of the same bytes: the optimizer's table (value and slots of every
 * row) copied to a buffer of the same size, repeated for --seconds, counted as read + written.
 * "ratio" is the optimizer's GB/s over memcpy's: near 1 means the update runs at memory speed,
 * sparse and hash rows show the cost of random access and lookups. Table sizes default beyond
 * typical last-level caches so neither side is measured in cache.
 *
 * Usage: psplus-bench-optim [--width N] [--rows N] [--batch N] [--seconds S]
 *                           [--optim a,b,...] [--mode dense,sparse,hash] [--repeat N]
 *                           [--json PATH]
 *
 * --repeat N times N windows per measurement and keeps the best of each (update and memcpy
 * alike): on a shared machine other tenants only ever slow a window down.
 * Exit: 0, 1 (a run failed), 2 (bad option).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>
#include <psplus/types.h>

#include "common/clock.h"
#include "common/mem.h"
#include "server/store.h"

#define NBATCHES 64 /* distinct id batches cycled through, so ids are not cache-resident */
#define GB	 1e9

struct cfg {
	uint32_t width;
	uint64_t rows;
	uint32_t batch;
	double seconds;
	unsigned repeat;     /* timed windows per measurement; the best is reported */
	unsigned optim_mask; /* bit per enum ps_optim_kind (plus nesterov variants folded in) */
	unsigned mode_mask;  /* bit per enum mode */
	const char *json;
};

enum mode { MODE_DENSE, MODE_SPARSE, MODE_HASH, NMODES };
static const char *const mode_names[NMODES] = {"dense", "sparse", "hash"};

struct result {
	enum ps_optim_kind optim;
	enum mode mode;
	unsigned slots;
	uint64_t row_bytes; /* bytes moved per row update */
	uint64_t updates;   /* row updates timed */
	double secs;
	double rows_per_s;
	double gbs;
	double memcpy_gbs;
};

static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
	rng += 0x9e3779b97f4a7c15ull;
	return ps_mix64(rng);
}

static int usage(const char *msg)
{
	if (msg)
		fprintf(stderr, "psplus-bench-optim: %s\n", msg);
	fprintf(stderr,
		"usage: psplus-bench-optim [--width N] [--rows N] [--batch N] [--seconds S]\n"
		"                          [--optim sgd,momentum,adagrad,adam,rmsprop,"
		"centered_rmsprop,ftrl]\n"
		"                          [--mode dense,sparse,hash] [--repeat N] [--json PATH]\n"
		"defaults: width 64, rows 1048576, batch 4096, seconds 1, repeat 1, every optimizer "
		"and mode\n"
		"--repeat N: time N windows of --seconds each and report the best (filters out other\n"
		"load on a shared machine); the memcpy reference is the best of N the same way\n");
	return 2;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* "a,b,c" against @names (n of them): a bit mask, or -EINVAL naming nothing known. */
static int parse_list(const char *s, const char *(*name)(unsigned), unsigned n, unsigned *mask)
{
	char buf[256], *tok, *save;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	*mask = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned i;

		for (i = 0; i < n && strcmp(tok, name(i)); i++)
			;
		if (i == n)
			return -EINVAL;
		*mask |= 1u << i;
	}
	return *mask ? 0 : -EINVAL;
}

static const char *optim_name(unsigned i)
{
	return ps_optim_name((enum ps_optim_kind)i);
}

static const char *mode_name(unsigned i)
{
	return mode_names[i];
}

static int parse(int argc, char **argv, struct cfg *c)
{
	static const struct option opts[] = {
		{"width", required_argument, NULL, 'w'}, {"rows", required_argument, NULL, 'r'},
		{"batch", required_argument, NULL, 'b'}, {"seconds", required_argument, NULL, 's'},
		{"optim", required_argument, NULL, 'o'}, {"mode", required_argument, NULL, 'm'},
		{"json", required_argument, NULL, 'j'},	 {"repeat", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},	 {NULL, 0, NULL, 0},
	};
	uint64_t v;
	char *end;
	int ch;

	*c = (struct cfg){.width = 64,
			  .rows = 1u << 20,
			  .batch = 4096,
			  .seconds = 1.0,
			  .optim_mask = (1u << (PS_OPTIM_FTRL + 1)) - 1,
			  .mode_mask = (1u << NMODES) - 1};
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'w':
			if (parse_u64(optarg, 1, 1u << 20, &v))
				return usage("--width: an integer in [1, 1048576]");
			c->width = (uint32_t)v;
			break;
		case 'r':
			if (parse_u64(optarg, 1, 1ull << 32, &v))
				return usage("--rows: an integer in [1, 2^32]");
			c->rows = v;
			break;
		case 'b':
			if (parse_u64(optarg, 1, 1u << 20, &v))
				return usage("--batch: an integer in [1, 1048576]");
			c->batch = (uint32_t)v;
			break;
		case 's':
			c->seconds = strtod(optarg, &end);
			if (*end || end == optarg || !(c->seconds > 0 && c->seconds <= 3600))
				return usage("--seconds: a number in (0, 3600]");
			break;
		case 'o':
			if (parse_list(optarg, optim_name, PS_OPTIM_FTRL + 1, &c->optim_mask))
				return usage("--optim: a comma-separated list of optimizer names");
			break;
		case 'm':
			if (parse_list(optarg, mode_name, NMODES, &c->mode_mask))
				return usage(
					"--mode: a comma-separated list of dense, sparse, hash");
			break;
		case 'j':
			c->json = optarg;
			break;
		case 'n':
			if (parse_u64(optarg, 1, 100, &v))
				return usage("--repeat: an integer in [1, 100]");
			c->repeat = (unsigned)v;
			break;
		case 'h':
			usage(NULL);
			exit(0);
		default:
			return usage(NULL);
		}
	}
	if (optind < argc)
		return usage("unexpected argument");
	if (c->batch > c->rows)
		c->batch = (uint32_t)c->rows;
	return 0;
}

/* ---- the memcpy reference ---------------------------------------------------------------- */

static double memcpy_gbs(struct ps_store_part *p, double seconds, unsigned repeat)
{
	struct ps_store_chunk ch[4096];
	size_t n = ps_store_part_chunks(p, ch, 4096), total = 0;
	struct ps_mem dst;
	double best = 0;

	for (size_t i = 0; i < n; i++)
		total += ch[i].len;
	if (ps_mem_alloc(total, -1, 0, &dst))
		return 0;
	memset(dst.addr, 1, dst.len); /* fault the pages in before timing */
	for (unsigned rep = 0; rep < repeat; rep++) {
		uint64_t t0 = ps_clock_now_ns(), t1, moved = 0;
		double gbs;

		do {
			size_t off = 0;

			for (size_t i = 0; i < n; i++) {
				memcpy((char *)dst.addr + off, ch[i].addr, ch[i].len);
				off += ch[i].len;
			}
			moved += 2 * total; /* read + written */
			t1 = ps_clock_now_ns();
		} while ((double)(t1 - t0) < seconds * 1e9);
		gbs = (double)moved / ((double)(t1 - t0) / 1e9) / GB;
		if (gbs > best)
			best = gbs;
	}
	ps_mem_free(&dst);
	return best;
}

/* ---- one optimizer, one mode -------------------------------------------------------------- */

static int make_part(const struct cfg *c, enum ps_optim_kind k, enum mode m,
		     struct ps_store_part **out)
{
	struct ps_var_spec spec = {
		.kind = m == MODE_HASH	  ? PS_VAR_HASH64
			: m == MODE_DENSE ? PS_VAR_DENSE
					  : PS_VAR_SPARSE,
		.rows = c->rows,
		.width = c->width,
		.init = {.kind = PS_INIT_CONSTANT, .value = 0.01f},
		.optim = ps_optimizer_defaults(k),
	};
	struct ps_store_part_opts o = {
		.spec = &spec,
		.begin = 0,
		.end = m == MODE_HASH ? PS_HASH_BUCKETS : c->rows,
		.chunk_bytes = 64u << 20,
		.hash_initial_rows = m == MODE_HASH ? c->rows : 0,
		.numa_node = -1,
		.mem_flags = PS_MEM_HUGEPAGES,
	};

	return ps_store_part_create(&o, out);
}

/* The key of row number i of the hash table: distinct, spread over every bucket. */
static uint64_t hash_key(uint64_t i)
{
	return ps_mix64(i + 1);
}

/* One timed window of --seconds: pushes until the time is up. */
static int timed(const struct cfg *c, enum mode m, struct ps_store_part *p, const uint64_t *ids,
		 const uint64_t *hkeys, const float *grads, struct ps_store_scratch *scr,
		 uint64_t *updates, uint64_t *t0, uint64_t *t1)
{
	unsigned b = 0;
	int rc = 0;

	*updates = 0;
	*t0 = *t1 = ps_clock_now_ns();
	while (!rc && (double)(*t1 - *t0) < c->seconds * 1e9) {
		switch (m) {
		case MODE_DENSE:
			rc = ps_store_dense_push(p, grads, c->rows * c->width);
			*updates += c->rows;
			break;
		case MODE_SPARSE:
			rc = ps_store_push(p, scr, ids + (size_t)b * c->batch, c->batch, grads,
					   c->width);
			*updates += c->batch;
			break;
		default:
			rc = ps_store_hash_push64(p, scr, hkeys + (size_t)b * c->batch, c->batch,
						  grads, c->width);
			*updates += c->batch;
			break;
		}
		b = (b + 1) % NBATCHES;
		*t1 = ps_clock_now_ns();
	}
	return rc;
}

static int run_one(const struct cfg *c, enum ps_optim_kind k, enum mode m, const uint64_t *ids,
		   const uint64_t *hkeys, float *grads, struct ps_store_scratch *scr, double *mref,
		   struct result *r)
{
	struct ps_store_part *p;
	uint64_t t0, t1, updates;
	int rc;

	*r = (struct result){0};
	rc = make_part(c, k, m, &p);
	if (rc)
		return rc;
	if (m == MODE_HASH) {
		/* Create every key first, so the timed pushes update present rows. */
		uint64_t *batch = malloc(c->batch * sizeof(*batch));

		if (!batch)
			rc = -ENOMEM;
		for (uint64_t i = 0; i < c->rows && !rc; i += c->batch) {
			size_t n = c->rows - i < c->batch ? c->rows - i : c->batch;

			for (size_t j = 0; j < n; j++)
				batch[j] = hash_key(i + j);
			rc = ps_store_hash_pull64(p, scr, batch, n, grads, c->width);
		}
		free(batch);
	}
	for (unsigned rep = 0; rep < c->repeat && !rc; rep++) {
		rc = timed(c, m, p, ids, hkeys, grads, scr, &updates, &t0, &t1);
		if (!rc && (!r->updates || (double)updates / (double)(t1 - t0) >
						   (double)r->updates / (r->secs * 1e9))) {
			r->updates = updates;
			r->secs = (double)(t1 - t0) / 1e9;
		}
	}
	if (!rc) {
		r->optim = k;
		r->mode = m;
		r->slots = ps_optim_slot_count(k);
		r->row_bytes = (2ull * (1 + r->slots) + 1) * c->width * sizeof(float);
		r->rows_per_s = (double)r->updates / r->secs;
		r->gbs = r->rows_per_s * (double)r->row_bytes / GB;
		/* Once per optimizer: its table's bytes, whichever mode built it first. */
		if (*mref == 0)
			*mref = memcpy_gbs(p, c->seconds, c->repeat);
		r->memcpy_gbs = *mref;
	}
	ps_store_part_destroy(p);
	return rc;
}

/* ---- output -------------------------------------------------------------------------------- */

static void print_table(const struct cfg *c, const struct result *res, size_t n)
{
	printf("psplus-bench-optim: width %u, %" PRIu64 " rows, batch %u, best of %u x %.1f s\n",
	       c->width, c->rows, c->batch, c->repeat, c->seconds);
	printf("bytes/row = (2 * (1 + slots) + 1) * width * 4: row read and written, gradient "
	       "read\n");
	printf("-------------------------------------------------------------------------------"
	       "-----\n");
	printf(" %-17s %-6s %5s %9s %10s %9s %12s %7s\n", "optimizer", "mode", "slots", "bytes/row",
	       "Mrows/s", "GB/s", "memcpy GB/s", "ratio");
	printf("-------------------------------------------------------------------------------"
	       "-----\n");
	for (size_t i = 0; i < n; i++) {
		const struct result *r = &res[i];

		printf(" %-17s %-6s %5u %9" PRIu64 " %10.2f %9.2f %12.2f %7.3f\n",
		       ps_optim_name(r->optim), mode_names[r->mode], r->slots, r->row_bytes,
		       r->rows_per_s / 1e6, r->gbs, r->memcpy_gbs,
		       r->memcpy_gbs > 0 ? r->gbs / r->memcpy_gbs : 0.0);
	}
	printf("-------------------------------------------------------------------------------"
	       "-----\n");
}

static int write_json(const struct cfg *c, const struct result *res, size_t n)
{
	FILE *f = fopen(c->json, "w");

	if (!f)
		return -errno;
	fprintf(f,
		"{\n  \"tool\": \"psplus-bench-optim\",\n  \"width\": %u,\n  \"rows\": %" PRIu64
		",\n  \"batch\": %u,\n  \"seconds\": %.3f,\n  \"repeat\": %u,\n  \"results\": [\n",
		c->width, c->rows, c->batch, c->seconds, c->repeat);
	for (size_t i = 0; i < n; i++) {
		const struct result *r = &res[i];

		fprintf(f,
			"    {\"optimizer\": \"%s\", \"mode\": \"%s\", \"slots\": %u, "
			"\"bytes_per_row\": %" PRIu64 ", \"updates\": %" PRIu64
			", \"seconds\": %.4f, \"rows_per_s\": %.1f, \"gb_per_s\": %.3f, "
			"\"memcpy_gb_per_s\": %.3f, \"ratio\": %.4f}%s\n",
			ps_optim_name(r->optim), mode_names[r->mode], r->slots, r->row_bytes,
			r->updates, r->secs, r->rows_per_s, r->gbs, r->memcpy_gbs,
			r->memcpy_gbs > 0 ? r->gbs / r->memcpy_gbs : 0.0, i + 1 < n ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	return fclose(f) ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct result res[(PS_OPTIM_FTRL + 1) * NMODES];
	struct ps_store_scratch_opts so;
	struct ps_store_scratch *scr = NULL;
	uint64_t *ids = NULL, *hkeys = NULL;
	float *grads = NULL;
	size_t nres = 0, ngrads;
	struct cfg c;
	int rc;

	rc = parse(argc, argv, &c);
	if (rc)
		return rc;
	so = (struct ps_store_scratch_opts){.max_batch = c.batch, .max_width = c.width};
	ngrads = (size_t)c.rows * c.width; /* a dense push's gradient; sparse ones use the start */
	ids = malloc((size_t)NBATCHES * c.batch * sizeof(*ids));
	hkeys = malloc((size_t)NBATCHES * c.batch * sizeof(*hkeys));
	grads = malloc(ngrads * sizeof(*grads));
	if (!ids || !hkeys || !grads || ps_store_scratch_create(&so, &scr)) {
		fprintf(stderr, "psplus-bench-optim: out of memory\n");
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < (size_t)NBATCHES * c.batch; i++) {
		ids[i] = rnd() % c.rows;
		hkeys[i] = hash_key(ids[i]);
	}
	/* Small gradients keep every optimizer's values finite and normal over many passes. */
	for (size_t i = 0; i < ngrads; i++)
		grads[i] = (float)((double)(rnd() >> 11) * 0x1.0p-53 - 0.5) * 1e-3f;

	for (unsigned k = 0; k <= PS_OPTIM_FTRL; k++) {
		double mref = 0;

		if (!(c.optim_mask & (1u << k)))
			continue;
		for (unsigned m = 0; m < NMODES; m++) {
			if (!(c.mode_mask & (1u << m)))
				continue;
			rc = run_one(&c, (enum ps_optim_kind)k, (enum mode)m, ids, hkeys, grads,
				     scr, &mref, &res[nres]);
			if (rc) {
				fprintf(stderr, "psplus-bench-optim: %s %s: %s\n",
					ps_optim_name((enum ps_optim_kind)k), mode_names[m],
					ps_strerror(rc));
				rc = 1;
				goto out;
			}
			nres++;
		}
	}
	print_table(&c, res, nres);
	if (c.json) {
		rc = write_json(&c, res, nres);
		if (rc) {
			fprintf(stderr, "psplus-bench-optim: %s: %s\n", c.json, ps_strerror(rc));
			rc = 1;
		}
	}
out:
	ps_store_scratch_destroy(scr);
	free(ids);
	free(hkeys);
	free(grads);
	return rc;
}
