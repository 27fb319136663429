/*
 * Conformance of the parameter service (driven by test_conformance.sh, which starts a scheduler
 * and N servers): every optimizer on every variable kind, trained through the client, against a
 * double-precision model of TensorFlow's formulas (conformance_model.c).
 *
 *   conformance KV_URL async [options]   each optimizer x kind of the slice: declare, 100 steps
 *                                        of random pushes, pull every row, compare
 *   conformance KV_URL sync [options]    two workers (processes) in PS_SYNC_SYNC pushing
 *                                        different gradients against a second variable trained
 *                                        by one worker with the sums
 * options: --servers N (3), --threads T per server (2), --snet MB/s per server (the
 * scheduler's -snet, for load hints), --slice G/K (async: cases i with i % K == G),
 * --steps S (100), --transport tcp|rdma (tcp), --optims NAME,... (async: all by default)
 *
 * What is checked, per variable:
 * - Placement: dense and sparse variables are declared with load hints (rows read per step)
 *   sized to (N - 1) / 4 + 0.04 of one server's network budget, so the placementer wants
 *   ceil(size / part_fraction 0.25) = N servers, one part each; hash variables span every server
 *   anyway.
 *   The test reads the table and fails unless every variable has a part on each of the N
 *   servers and its id/key pool reaches every (server, thread).
 * - Initial values: pulled before any push (dense: whole; sparse: the pool; hash: every other
 *   pool key, so the rest are created by their first push), and compared bit for bit with the
 *   initializer of docs/server-storage.md reproduced here, which then gives the initial value
 *   of the hash rows created by a push.
 * - Training: random batch sizes (1..48 draws from the pool plus one forced duplicate, so ids
 *   repeat within a batch; the model sums repeats before one update, TF's sparse-apply rule);
 *   dense pushes are whole-tensor gradients. Each push's request count (client stats) must equal
 *   the number of (server, thread) destinations the documented routing gives the batch.
 * - Adam: beta powers are per part (per server thread) and advance once per push request that
 *   thread receives (docs/server-storage.md, docs/client.md "Consistency"), so the model keeps
 *   one step count per destination; sparse/hash rows update lazily (untouched rows keep m, v).
 *   The error a single global step count would give is printed beside, to show the effect.
 * - Final values: every row pulled back; |got - want| <= 1e-5 * max(|want|, rms), rms being the
 *   root mean square of the variable's model values: test_optim's criterion. Pure relative
 *   error is printed too; it cannot be the criterion because a value near zero (a sum of
 *   O(1) updates that cancel, FTRL's l1 threshold) carries the float32 rounding of its terms.
 *   Only values are compared (slots cannot be read through the client).
 * - Sync: the two-worker variable equals the one-worker variable to 1e-6 (same criterion), and
 *   both equal the model to 1e-5.
 *
 * Routing: the client gives no public way to read the placement table, so the test includes
 * client/client_internal.h for struct ps_client's placement (and only that); destinations are
 * computed here from the documented rules, not with the client's routing code.
 *
 * Prints one line per variable; exits 0 when all passed, 1 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <psplus/client.h>
#include <psplus/error.h>
#include <psplus/types.h>

#include "client/client_internal.h"
#include "scheduler/placement.h"
#include "tests/integration/conformance_model.h"

#define RTOL	  1e-5 /* model vs service */
#define SYNC_TOL  1e-6 /* two workers vs one worker with the sums */
#define MAXW	  CFM_MAXW
#define MAXDRAW	  48  /* pool draws per batch (plus one forced duplicate) */
#define MAXB	  200 /* two workers' batches, or twice the dense rows */
#define POOL	  240 /* model rows of a sparse or hash variable; at least the dense rows */
#define MAXDEST	  64
#define SPLIT_SPS 10.0 /* steps per second in the load hints */

/* ---- cases ----------------------------------------------------------------------------------- */

struct ocase {
	const char *name;
	struct ps_optimizer o;
};

#define OPT(kind_, field_, ...)                          \
	{                                                \
		.kind = kind_, .field_ = { __VA_ARGS__ } \
	}

static const struct ocase optims[] = {
	{"sgd", OPT(PS_OPTIM_SGD, sgd, .learning_rate = 0.1f)},
	{"momentum", OPT(PS_OPTIM_MOMENTUM, momentum, .learning_rate = 0.05f, .momentum = 0.9f)},
	{"momentum_nesterov", OPT(PS_OPTIM_MOMENTUM, momentum, .learning_rate = 0.05f,
				  .momentum = 0.9f, .use_nesterov = true)},
	{"adagrad",
	 OPT(PS_OPTIM_ADAGRAD, adagrad, .learning_rate = 0.1f, .initial_accumulator_value = 0.1f)},
	{"adam", OPT(PS_OPTIM_ADAM, adam, .learning_rate = 0.01f, .beta1 = 0.9f, .beta2 = 0.99f,
		     .epsilon = 1e-7f)},
	{"rmsprop", OPT(PS_OPTIM_RMSPROP, rmsprop, .learning_rate = 0.01f, .rho = 0.9f,
			.momentum = 0.5f, .epsilon = 1e-6f, .initial_ms = 1.0f)},
	{"centered_rmsprop",
	 OPT(PS_OPTIM_CENTERED_RMSPROP, rmsprop, .learning_rate = 0.01f, .rho = 0.9f,
	     .momentum = 0.3f, .epsilon = 1e-4f, .initial_ms = 1.0f)},
	{"ftrl", OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.1f, .learning_rate_power = -0.5f,
		     .initial_accumulator_value = 0.1f)},
	{"ftrl_l1_l2", OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.1f, .learning_rate_power = -0.5f,
			   .l1 = 0.01f, .l2 = 0.05f, .initial_accumulator_value = 0.1f)},
	{"ftrl_l2_shrinkage",
	 OPT(PS_OPTIM_FTRL, ftrl, .learning_rate = 0.05f, .learning_rate_power = -0.3f,
	     .l1 = 0.005f, .l2 = 0.01f, .l2_shrinkage = 0.05f, .initial_accumulator_value = 0.5f)},
};
#define NOPT (sizeof(optims) / sizeof(optims[0]))

struct kcase {
	const char *name;
	enum ps_var_kind kind;
	uint64_t rows; /* dense, sparse */
	uint32_t width;
	struct ps_initializer init;
};

/* Widths around the kernels' vector lengths (4, 8, 16 floats) so tails are exercised. */
static const struct kcase kinds[] = {
	{.name = "dense",
	 .kind = PS_VAR_DENSE,
	 .rows = 97,
	 .width = 7,
	 .init = {.kind = PS_INIT_TRUNCATED_NORMAL, .mean = 0.1f, .stddev = 0.3f, .seed = 11}},
	{.name = "sparse",
	 .kind = PS_VAR_SPARSE,
	 .rows = 1200,
	 .width = 19,
	 .init = {.kind = PS_INIT_NORMAL, .stddev = 0.5f, .seed = 12}},
	{.name = "hash64",
	 .kind = PS_VAR_HASH64,
	 .width = 9,
	 .init = {.kind = PS_INIT_UNIFORM, .min = -0.5f, .max = 0.5f}},
	{.name = "hash128",
	 .kind = PS_VAR_HASH128,
	 .width = 4,
	 .init = {.kind = PS_INIT_UNIFORM, .min = -1.0f, .max = 0.25f, .seed = 14}},
};
#define NKIND 4

/* ---- options and reporting ------------------------------------------------------------------- */

static struct {
	const char *kv, *transport;
	uint32_t servers, threads, steps, slice, nslices;
	double snet_mb;
	bool optim_on[NOPT]; /* --optims: the optimizers to run (all by default) */
} opt = {.transport = "tcp", .servers = 3, .threads = 2, .steps = 100, .nslices = 1};

static int failures;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failures++;
}

/* A call that must succeed: report with the client's message and leave. */
static void must(int rc, const char *what)
{
	if (!rc)
		return;
	printf("FAIL: %s: %s (%s): %s\n", what, ps_strerror(rc), ps_err_name(rc),
	       ps_client_last_error());
	fflush(stdout);
	exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p) {
		printf("FAIL: out of memory\n");
		exit(1);
	}
	return p;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- one variable ---------------------------------------------------------------------------- */

struct var {
	char name[64];
	const struct ocase *oc;
	const struct kcase *kc;
	struct ps_var_spec spec;
	uint32_t id, w;
	size_t nrows;	     /* model rows: dense rows, or the id/key pool */
	uint64_t *ids;	     /* [nrows] row id, or key (lo) */
	uint64_t *his;	     /* [nrows] hash128: key hi */
	uint32_t *dest;	     /* [nrows] destination: server * threads + thread */
	bool *present;	     /* the row exists in the model (hash rows are created by a push) */
	struct cfm_row *ref; /* the model, Adam steps counted per destination */
	struct cfm_row *alt; /* Adam only: the model with one step count for all parts */
	uint64_t t[MAXDEST]; /* push requests each destination applied */
	uint64_t calls;	     /* push calls */
	uint64_t rng;	     /* batches of this variable (async); worker w's: rng_w[w] (sync) */
	uint64_t rng_w[2];
	/* per step scratch */
	uint32_t pos[MAXB];
	float grads[MAXB * MAXW];
	size_t n;
};

static bool is_hash(const struct var *v)
{
	return v->kc->kind == PS_VAR_HASH64 || v->kc->kind == PS_VAR_HASH128;
}

static bool is_split(const struct var *v)
{
	return !is_hash(v);
}

static uint64_t key_hash(const struct var *v, size_t i)
{
	return v->kc->kind == PS_VAR_HASH128 ? ps_mix64(v->ids[i] ^ ps_mix64(v->his[i]))
					     : ps_mix64(v->ids[i]);
}

static bool in_pool(const struct var *v, size_t n, uint64_t id, uint64_t hi)
{
	for (size_t i = 0; i < n; i++)
		if (v->ids[i] == id && (!v->his || v->his[i] == hi))
			return true;
	return false;
}

/*
 * The id/key pool of a sparse or hash variable: sparse, the first and last row and both sides
 * of every multiple of rows/12 (the part and thread boundaries for N = 1, 2 and 3 servers of 2
 * threads when the servers have equal room), the rest random; hash64, random keys; hash128, random keys, a quarter with hi = 0
 * (they share buckets with the 64-bit keys lo) and pairs that differ in hi only. The pool does
 * not depend on N, so every N trains the same batches.
 */
static void pool_init(struct var *v)
{
	uint64_t s = v->rng ^ 0x9999, rows = v->kc->rows;
	bool k128 = v->kc->kind == PS_VAR_HASH128;
	size_t n = 0;

	if (v->kc->kind == PS_VAR_SPARSE) {
		v->ids[n++] = 0;
		v->ids[n++] = rows - 1;
		for (uint64_t j = 1; j < 12; j++) {
			v->ids[n++] = j * rows / 12 - 1;
			v->ids[n++] = j * rows / 12;
		}
	}
	while (n < v->nrows) {
		uint64_t id = v->kc->kind == PS_VAR_SPARSE ? cfm_rnd(&s) % rows : cfm_rnd(&s);
		uint64_t hi = 0;

		if (k128 && n % 4 == 3) { /* the previous key's lo, another hi */
			id = v->ids[n - 1];
			hi = v->his[n - 1] ^ 1;
		} else if (k128 && n % 4 != 0) {
			hi = cfm_rnd(&s);
		}
		if (in_pool(v, n, id, hi))
			continue;
		v->ids[n] = id;
		if (v->his)
			v->his[n] = hi;
		n++;
	}
}

/* The variable "<prefix><optimizer>_<kind>" and its model rows: dense, every row; else a pool. */
static void var_init(struct var *v, const struct ocase *oc, const struct kcase *kc,
		     const char *prefix, uint64_t seed)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s%s_%s", prefix, oc->name, kc->name);
	v->oc = oc;
	v->kc = kc;
	v->w = kc->width;
	v->spec = (struct ps_var_spec){.kind = kc->kind,
				       .rows = kc->rows,
				       .width = kc->width,
				       .init = kc->init,
				       .optim = oc->o};
	v->rng = seed * 0x100000001b3ull + 0x6a09e667f3bcc909ull;
	v->rng_w[0] = v->rng ^ 0x1111;
	v->rng_w[1] = v->rng ^ 0x2222;
	v->nrows = kc->kind == PS_VAR_DENSE ? kc->rows : POOL;
	v->ids = xcalloc(v->nrows, sizeof(*v->ids));
	v->his = kc->kind == PS_VAR_HASH128 ? xcalloc(v->nrows, sizeof(*v->his)) : NULL;
	v->dest = xcalloc(v->nrows, sizeof(*v->dest));
	v->present = xcalloc(v->nrows, sizeof(*v->present));
	v->ref = xcalloc(v->nrows, sizeof(*v->ref));
	if (oc->o.kind == PS_OPTIM_ADAM)
		v->alt = xcalloc(v->nrows, sizeof(*v->alt));
	if (kc->kind != PS_VAR_DENSE) {
		pool_init(v);
		return;
	}
	for (size_t i = 0; i < v->nrows; i++)
		v->ids[i] = i;
}

static void var_free(struct var *v)
{
	free(v->ids);
	free(v->his);
	free(v->dest);
	free(v->present);
	free(v->ref);
	free(v->alt);
}

/*
 * Destinations from the placement table and the documented routing (docs/client.md,
 * "Routing"): the part holding the row (or the key's bucket, hash mod 65536) gives the server;
 * the thread is (row - begin) * T / (end - begin), or (hash >> 16) % T. Checks that the
 * variable has a part on every server and that its rows reach every (server, thread).
 */
static int var_route(struct var *v, const struct ps_client *c)
{
	const struct ps_placement_entry *e =
		c->placement ? ps_placement_find(c->placement, v->id) : NULL;
	uint32_t T = opt.threads, ndest = opt.servers * T;
	bool server_has[MAXDEST] = {false}, dest_hit[MAXDEST] = {false};

	if (!e) {
		fail("%s: not in the client's placement table", v->name);
		return -1;
	}
	if (c->placement->nservers != opt.servers || ndest > MAXDEST) {
		fail("%s: the table has %u servers, expected %u", v->name, c->placement->nservers,
		     opt.servers);
		return -1;
	}
	for (uint32_t j = 0; j < e->nparts; j++) {
		if (server_has[e->parts[j].server]) {
			fail("%s: two parts on server %u", v->name, e->parts[j].server);
			return -1;
		}
		server_has[e->parts[j].server] = true;
	}
	for (size_t i = 0; i < v->nrows; i++) {
		uint64_t h = is_hash(v) ? key_hash(v, i) : 0;
		uint64_t x = is_hash(v) ? h % PS_HASH_BUCKETS : v->ids[i];
		const struct ps_placement_part *p = NULL;
		uint32_t shard;

		for (uint32_t j = 0; j < e->nparts && !p; j++)
			if (x >= e->parts[j].begin && x < e->parts[j].end)
				p = &e->parts[j];
		if (!p) {
			fail("%s: no part holds %" PRIu64, v->name, x);
			return -1;
		}
		shard = is_hash(v) ? (uint32_t)((h >> 16) % T)
				   : (uint32_t)((x - p->begin) * T / (p->end - p->begin));
		v->dest[i] = p->server * T + shard;
		dest_hit[v->dest[i]] = true;
	}
	for (uint32_t d = 0; d < ndest; d++) {
		if (!server_has[d / T] || !dest_hit[d]) {
			fail("%s: %u parts; server %u thread %u holds %s", v->name, e->nparts,
			     d / T, d % T, server_has[d / T] ? "none of its rows" : "no part");
			return -1;
		}
	}
	return 0;
}

static int declare(struct ps_client *c, struct var *v)
{
	struct ps_var_load load = {.steps_per_s = SPLIT_SPS};
	int rc;

	/*
	 * Cut dense and sparse variables into one part per server: their network estimate,
	 * steps/s * rows read * (row + id bytes + 64 / 100 rows per request) (docs/placement.md,
	 * "Estimates"), is made (N - 1) / 4 + 0.04 of a server's budget: ceil(size / 0.25) = N
	 * servers wanted, one part each, rows in proportion to their room ("Rows").
	 */
	if (is_split(v) && opt.servers > 1 && opt.snet_mb > 0) {
		double share = 0.25 * (opt.servers - 1) + 0.04;
		double row = 4.0 * v->w + (v->kc->kind == PS_VAR_SPARSE ? 8 : 0) + 0.64;

		load.rows_read_per_step = share * opt.snet_mb * 1048576.0 / (SPLIT_SPS * row);
	}
	rc = ps_client_declare_load(c, v->name, &v->spec, &load, &v->id);
	if (rc)
		return rc;
	return var_route(v, c) ? -EPROTO : 0;
}

/* ---- pulls and comparisons ------------------------------------------------------------------- */

/* Pull model rows @idx[0..n) (dense: all) into @out (n x w). */
static void pull_rows(struct ps_client *c, const struct var *v, const uint32_t *idx, size_t n,
		      float *out)
{
	uint64_t *ids = xcalloc(n, sizeof(*ids));
	struct ps_key128 *k = xcalloc(n, sizeof(*k));
	char what[128];
	int rc;

	for (size_t i = 0; i < n; i++) {
		ids[i] = v->ids[idx[i]];
		k[i] = (struct ps_key128){v->ids[idx[i]], v->his ? v->his[idx[i]] : 0};
	}
	switch (v->kc->kind) {
	case PS_VAR_DENSE:
		rc = ps_client_dense_pull(c, v->id, out, v->nrows * v->w);
		break;
	case PS_VAR_SPARSE:
		rc = ps_client_sparse_pull(c, v->id, ids, n, out);
		break;
	case PS_VAR_HASH64:
		rc = ps_client_hash_pull(c, v->id, ids, n, out);
		break;
	default:
		rc = ps_client_hash128_pull(c, v->id, k, n, out);
		break;
	}
	free(ids);
	free(k);
	snprintf(what, sizeof(what), "pull '%.63s'", v->name);
	must(rc, what);
}

/*
 * Initial values: dense and sparse rows, and every other hash key, pulled before any push and
 * checked bit for bit against the documented initializer; the model starts from them. The other
 * hash keys are created by their first push, from the initializer.
 */
static void initial_pull(struct ps_client *c, struct var *v)
{
	uint32_t *idx = xcalloc(v->nrows, sizeof(*idx));
	float *got = xcalloc(v->nrows * v->w, sizeof(*got)), want[MAXW];
	size_t n = 0, bad = 0;

	for (size_t i = 0; i < v->nrows; i++)
		if (!is_hash(v) || i % 2 == 0)
			idx[n++] = (uint32_t)i;
	pull_rows(c, v, idx, n, got);
	for (size_t j = 0; j < n; j++) {
		size_t i = idx[j];
		float *row = got + j * v->w;

		cfm_init_row(&v->spec.init, v->id, v->ids[i], v->his ? v->his[i] : 0, want, v->w);
		for (uint32_t col = 0; col < v->w; col++) {
			if (memcmp(&row[col], &want[col], sizeof(float)) && bad++ < 3)
				printf("  %s: initial row %zu col %u: pulled %.9g, initializer "
				       "%.9g\n",
				       v->name, i, col, row[col], want[col]);
		}
		cfm_row_init(&v->oc->o, &v->ref[i], row, v->w);
		if (v->alt)
			v->alt[i] = v->ref[i];
		v->present[i] = true;
	}
	if (bad)
		fail("%s: %zu initial values differ from the documented initializer", v->name, bad);
	free(idx);
	free(got);
}

struct errs {
	double crit, rel, alt;
	size_t rows;
};

static double rms_of(const struct var *v, const struct cfm_row *ref)
{
	double sum = 0;
	size_t n = 0;

	for (size_t i = 0; i < v->nrows; i++)
		for (uint32_t col = 0; v->present[i] && col < v->w; col++, n++)
			sum += ref[i].v[col] * ref[i].v[col];
	return n ? sqrt(sum / (double)n) : 0;
}

static double crit_err(double got, double want, double rms)
{
	return fabs(got - want) / fmax(fabs(want), rms);
}

/* Pull every row of the model and compare; @got (nrows x w) keeps what was pulled. */
static struct errs final_check(struct ps_client *c, struct var *v, float *got, const char *label)
{
	uint32_t *idx = xcalloc(v->nrows, sizeof(*idx));
	double rms = rms_of(v, v->ref), rms_alt = v->alt ? rms_of(v, v->alt) : 0;
	struct errs e = {0};
	size_t n = 0, bad = 0;

	for (size_t i = 0; i < v->nrows; i++)
		if (v->present[i])
			idx[n++] = (uint32_t)i;
	pull_rows(c, v, idx, n, got);
	for (size_t j = 0; j < n; j++) {
		size_t i = idx[j];

		for (uint32_t col = 0; col < v->w; col++) {
			double g = got[j * v->w + col], want = v->ref[i].v[col];
			double err = crit_err(g, want, rms);
			double rel = g == want ? 0 : fabs(g - want) / fabs(want);

			if (err > RTOL && bad++ < 3)
				printf("  %s %s: row %zu (id %" PRIu64 ") col %u: got %.9g, model "
				       "%.9g (err %.3g)\n",
				       label, v->name, i, v->ids[i], col, g, want, err);
			e.crit = fmax(e.crit, err);
			e.rel = fmax(e.rel, rel);
			if (v->alt)
				e.alt = fmax(e.alt, crit_err(g, v->alt[i].v[col], rms_alt));
		}
	}
	/* Leave the pulled rows at their model index for the caller. */
	for (size_t j = n; j-- > 0;)
		memmove(got + (size_t)idx[j] * v->w, got + j * v->w, v->w * sizeof(float));
	e.rows = n;
	free(idx);
	return e;
}

static void print_steps(const struct var *v)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (uint32_t d = 0; d < opt.servers * opt.threads; d++) {
		lo = v->t[d] < lo ? v->t[d] : lo;
		hi = v->t[d] > hi ? v->t[d] : hi;
	}
	printf(", steps per part %" PRIu64 "..%" PRIu64 " of %" PRIu64 " calls", lo, hi, v->calls);
}

/* ---- training -------------------------------------------------------------------------------- */

/*
 * Draw a batch from @s into v->pos/grads at position @off (after another worker's batch):
 * pool positions and gradients; dense, every row once.
 */
static void make_batch(struct var *v, uint64_t *s, size_t off)
{
	size_t n;

	if (v->kc->kind == PS_VAR_DENSE) {
		for (n = 0; n < v->nrows; n++)
			v->pos[off + n] = (uint32_t)n;
	} else {
		size_t draws = 1 + cfm_rnd(s) % MAXDRAW;

		for (n = 0; n < draws; n++)
			v->pos[off + n] = (uint32_t)(cfm_rnd(s) % v->nrows);
		v->pos[off + n] = v->pos[off + cfm_rnd(s) % n]; /* one sure duplicate */
		n++;
	}
	for (size_t i = 0; i < n * v->w; i++)
		v->grads[off * v->w + i] = cfm_rnd_grad(s);
	v->n = off + n;
}

/*
 * The model's update for the batch in v->pos/grads (n rows): gradients of repeated ids summed,
 * each destination that receives rows advances its step count once, each row updated once.
 * Returns the number of destinations the batch reaches.
 */
static uint32_t model_push(struct var *v)
{
	static double sum[POOL][MAXW];
	bool hit[MAXDEST] = {false}, row_hit[POOL] = {false};
	uint32_t ndest = 0;
	float init[MAXW];

	memset(sum, 0, sizeof(sum));
	for (size_t k = 0; k < v->n; k++) {
		uint32_t i = v->pos[k];

		for (uint32_t col = 0; col < v->w; col++)
			sum[i][col] += v->grads[k * v->w + col];
		row_hit[i] = true;
		if (!hit[v->dest[i]]) {
			hit[v->dest[i]] = true;
			ndest++;
		}
	}
	v->calls++;
	for (uint32_t d = 0; d < MAXDEST; d++)
		v->t[d] += hit[d];
	for (size_t i = 0; i < v->nrows; i++) {
		if (!row_hit[i])
			continue;
		if (!v->present[i]) { /* a hash key created by this push */
			cfm_init_row(&v->spec.init, v->id, v->ids[i], v->his ? v->his[i] : 0, init,
				     v->w);
			cfm_row_init(&v->oc->o, &v->ref[i], init, v->w);
			if (v->alt)
				v->alt[i] = v->ref[i];
			v->present[i] = true;
		}
		cfm_row_apply(&v->oc->o, v->t[v->dest[i]], &v->ref[i], sum[i], v->w);
		if (v->alt)
			cfm_row_apply(&v->oc->o, v->calls, &v->alt[i], sum[i], v->w);
	}
	return ndest;
}

static int push_batch(struct ps_client *c, const struct var *v)
{
	uint64_t ids[MAXB];
	struct ps_key128 k[MAXB];

	for (size_t i = 0; i < v->n; i++) {
		ids[i] = v->ids[v->pos[i]];
		k[i] = (struct ps_key128){ids[i], v->his ? v->his[v->pos[i]] : 0};
	}
	switch (v->kc->kind) {
	case PS_VAR_DENSE:
		return ps_client_dense_push(c, v->id, v->grads, v->nrows * v->w);
	case PS_VAR_SPARSE:
		return ps_client_sparse_push(c, v->id, ids, v->n, v->grads);
	case PS_VAR_HASH64:
		return ps_client_hash_push(c, v->id, ids, v->n, v->grads);
	default:
		return ps_client_hash128_push(c, v->id, k, v->n, v->grads);
	}
}

static uint64_t requests(struct ps_client *c)
{
	struct ps_client_stats st;

	ps_client_stats_get(c, &st);
	return st.requests;
}

/* Push v's batch and check that the client sent one request per destination of the model. */
static void push_checked(struct ps_client *c, struct var *v, uint32_t step)
{
	uint64_t before = requests(c), sent;
	uint32_t want = model_push(v);
	char what[128];

	snprintf(what, sizeof(what), "push '%.63s' step %u", v->name, step);
	must(push_batch(c, v), what);
	sent = requests(c) - before;
	if (sent != want)
		fail("%s: step %u sent %" PRIu64 " requests, the routing rules give %u "
		     "destinations",
		     v->name, step, sent, want);
}

static struct ps_client *client(uint32_t worker, uint32_t nworkers, enum ps_sync_mode mode)
{
	struct ps_client_opts o = ps_client_opts_default();
	struct ps_client *c = NULL;

	o.kv_path = opt.kv;
	o.transport = opt.transport;
	o.worker_id = worker;
	o.num_workers = nworkers;
	o.sync_mode = mode;
	o.timeout_ms = 60000;
	must(ps_client_create(&o, &c), "ps_client_create");
	return c;
}

static int run_async(void)
{
	struct var *vars = xcalloc(NOPT * NKIND, sizeof(*vars));
	float *got = xcalloc(POOL * MAXW, sizeof(*got));
	double t[6] = {now_s()};
	struct ps_client *c = client(0, 1, PS_SYNC_ASYNC);
	size_t nv = 0;

	t[1] = now_s();

	/*
	 * The selected (kind, optimizer) cases in kind-major order, numbered i = 0, 1, ...; a slice
	 * takes i % nslices == slice, so the dense and sparse cases (the first ones) spread evenly
	 * over the slices. The batches depend on the case only, not on the selection.
	 */
	for (size_t k = 0, i = 0; k < NOPT * NKIND; k++) {
		struct var *v = &vars[nv];
		char what[128];

		if (!opt.optim_on[k % NOPT] || i++ % opt.nslices != opt.slice)
			continue;
		var_init(v, &optims[k % NOPT], &kinds[k / NOPT], "", k);
		snprintf(what, sizeof(what), "declare '%.63s'", v->name);
		must(declare(c, v), what);
		nv++;
	}
	t[2] = now_s();
	for (size_t j = 0; j < nv; j++)
		initial_pull(c, &vars[j]);
	t[3] = now_s();
	for (uint32_t step = 0; step < opt.steps; step++) {
		for (size_t j = 0; j < nv; j++) {
			make_batch(&vars[j], &vars[j].rng, 0);
			push_checked(c, &vars[j], step);
		}
	}
	t[4] = now_s();
	for (size_t j = 0; j < nv; j++) {
		struct var *v = &vars[j];
		struct errs e = final_check(c, v, got, "");
		bool ok = e.crit <= RTOL;

		printf("N=%u %-17s %-7s: %4zu rows x %2u, max err %.2e (pure relative %.2e)",
		       opt.servers, v->oc->name, v->kc->name, e.rows, v->w, e.crit, e.rel);
		if (v->alt) {
			print_steps(v);
			printf("; one step count for all parts would give err %.2e", e.alt);
		}
		printf(" %s\n", ok ? "PASS" : "FAIL");
		if (!ok)
			failures++;
		var_free(v);
	}
	t[5] = now_s();
	printf("N=%u timing: client %.1f s, %zu declarations %.1f s, initial pulls %.1f s, "
	       "%u steps %.1f s (%.2f ms per push), final pulls %.1f s\n",
	       opt.servers, t[1] - t[0], nv, t[2] - t[1], t[3] - t[2], opt.steps, t[4] - t[3],
	       1e3 * (t[4] - t[3]) / (opt.steps * (double)(nv ? nv : 1)), t[5] - t[4]);
	fflush(stdout);
	ps_client_destroy(c);
	free(got);
	free(vars);
	return failures ? 1 : 0;
}

/* ---- synchronous mode ------------------------------------------------------------------------ */

/*
 * The pairs (a, b): a trained by two workers in sync mode, b by one worker with the sums.
 * Indexes into optims[] and kinds[]: adam dense and sparse (per-part steps), ftrl_l2_shrinkage
 * hash64, centered_rmsprop hash128.
 */
static const struct {
	size_t optim, kind;
} sync_cases[] = {{4, 0}, {4, 1}, {9, 2}, {6, 3}};
#define NSYNC (sizeof(sync_cases) / sizeof(sync_cases[0]))

static void sync_declare(struct ps_client *c, struct var *v)
{
	char what[128];

	snprintf(what, sizeof(what), "declare '%.63s'", v->name);
	must(declare(c, v), what);
}

/* Worker 1 (a child process): its batches into the sync variables, one step_end per step. */
static int sync_worker1(struct var *a)
{
	struct ps_client *c = client(1, 2, PS_SYNC_SYNC);

	/* Worker 0 declares (so that it knows the ids) and reads the initial values first. */
	must(ps_client_barrier(c), "worker 1: barrier");
	for (size_t k = 0; k < NSYNC; k++)
		sync_declare(c, &a[k]);
	for (uint32_t step = 0; step < opt.steps; step++) {
		for (size_t k = 0; k < NSYNC; k++) {
			make_batch(&a[k], &a[k].rng_w[1], 0);
			must(push_batch(c, &a[k]), "worker 1: push");
		}
		must(ps_client_step_end(c, step), "worker 1: step_end");
	}
	ps_client_destroy(c);
	return 0;
}

static int run_sync(void)
{
	struct var a[NSYNC], b[NSYNC];
	float *got_a = xcalloc(POOL * MAXW, sizeof(float));
	float *got_b = xcalloc(POOL * MAXW, sizeof(float));
	struct ps_client *ca, *cb;
	int status = 0;
	pid_t child;

	for (size_t k = 0; k < NSYNC; k++) {
		const struct ocase *oc = &optims[sync_cases[k].optim];
		const struct kcase *kc = &kinds[sync_cases[k].kind];

		var_init(&a[k], oc, kc, "sync2_", 100 + k);
		var_init(&b[k], oc, kc, "sync1_", 100 + k);
	}
	fflush(stdout);
	child = fork();
	if (child < 0) {
		printf("FAIL: fork: %s\n", strerror(errno));
		return 1;
	}
	if (child == 0) {
		int rc = sync_worker1(a);

		for (size_t k = 0; k < NSYNC; k++) {
			var_free(&a[k]);
			var_free(&b[k]);
		}
		free(got_a);
		free(got_b);
		exit(rc);
	}
	ca = client(0, 2, PS_SYNC_SYNC);
	cb = client(0, 1, PS_SYNC_ASYNC);
	/*
	 * b must start from a's table: ids are assigned in order (docs/client.md, "Declaring") and
	 * only this worker declares now, so b's id is the last one + 1, and its seed is chosen to
	 * give that id a's initializer stream. The initial pulls check the tables bit for bit.
	 */
	for (size_t k = 0; k < NSYNC; k++)
		sync_declare(ca, &a[k]);
	for (size_t k = 0; k < NSYNC; k++) {
		uint32_t want = (k ? b[k - 1].id : a[NSYNC - 1].id) + 1;

		b[k].spec.init.seed = cfm_same_table_seed(a[k].spec.init.seed, a[k].id, want);
		sync_declare(cb, &b[k]);
		if (b[k].id != want)
			fail("%s: declared as id %u, expected %u (its table differs from a's)",
			     b[k].name, b[k].id, want);
	}
	for (size_t k = 0; k < NSYNC; k++) {
		initial_pull(ca, &a[k]);
		initial_pull(cb, &b[k]);
	}
	must(ps_client_barrier(ca), "worker 0: barrier");
	for (uint32_t step = 0; step < opt.steps; step++) {
		for (size_t k = 0; k < NSYNC; k++) {
			struct var *x = &a[k], *y = &b[k];
			uint64_t before;

			/* Worker 0's batch, then worker 1's (the stream it draws from) after it. */
			make_batch(x, &x->rng_w[0], 0);
			before = requests(ca);
			must(push_batch(ca, x), "worker 0: push");
			if (requests(ca) - before != opt.servers * opt.threads)
				fail("%s: a sync push sent %" PRIu64
				     " requests, not one per thread (%u)",
				     x->name, requests(ca) - before, opt.servers * opt.threads);
			make_batch(x, &x->rng_w[1], x->n);
			(void)model_push(x);
			/* y: one push of what both pushed (dense: the float sum of the two). */
			if (x->kc->kind == PS_VAR_DENSE) {
				size_t nf = x->nrows * x->w;

				for (size_t i = 0; i < nf; i++)
					y->grads[i] = x->grads[i] + x->grads[nf + i];
				memcpy(y->pos, x->pos, x->nrows * sizeof(*x->pos));
				y->n = x->nrows;
			} else {
				memcpy(y->pos, x->pos, x->n * sizeof(*x->pos));
				memcpy(y->grads, x->grads, x->n * x->w * sizeof(float));
				y->n = x->n;
			}
			push_checked(cb, y, step);
		}
		must(ps_client_step_end(ca, step), "worker 0: step_end");
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("sync: worker 1 failed (status %d)", status);
	for (size_t k = 0; k < NSYNC; k++) {
		struct errs ea = final_check(ca, &a[k], got_a, "2 workers");
		struct errs eb = final_check(cb, &b[k], got_b, "1 worker");
		double rms = rms_of(&b[k], b[k].ref), diff = 0;
		bool ok;

		for (size_t i = 0; i < b[k].nrows; i++)
			for (uint32_t col = 0; b[k].present[i] && col < b[k].w; col++)
				diff = fmax(diff, crit_err(got_a[i * b[k].w + col],
							   got_b[i * b[k].w + col], rms));
		ok = diff <= SYNC_TOL && ea.crit <= RTOL && eb.crit <= RTOL;
		printf("N=%u sync %-17s %-7s: %4zu rows x %2u, 2 workers vs 1 worker with the "
		       "sums: max diff %.2e; vs model: %.2e and %.2e",
		       opt.servers, a[k].oc->name, a[k].kc->name, ea.rows, a[k].w, diff, ea.crit,
		       eb.crit);
		if (b[k].alt)
			print_steps(&b[k]);
		printf(" %s\n", ok ? "PASS" : "FAIL");
		if (!ok)
			failures++;
		var_free(&a[k]);
		var_free(&b[k]);
	}
	fflush(stdout);
	ps_client_destroy(ca);
	ps_client_destroy(cb);
	free(got_a);
	free(got_b);
	return failures ? 1 : 0;
}

/* --optims NAME,NAME,...: run only these optimizers (async mode). */
static int select_optims(const char *list)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	memset(opt.optim_on, 0, sizeof(opt.optim_on));
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t k = 0;

		while (k < NOPT && strcmp(optims[k].name, t))
			k++;
		if (k == NOPT) {
			fprintf(stderr, "unknown optimizer '%s'\n", t);
			return -1;
		}
		opt.optim_on[k] = true;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {{"servers", required_argument, NULL, 'n'},
					   {"threads", required_argument, NULL, 't'},
					   {"snet", required_argument, NULL, 'b'},
					   {"slice", required_argument, NULL, 'g'},
					   {"steps", required_argument, NULL, 's'},
					   {"transport", required_argument, NULL, 'p'},
					   {"optims", required_argument, NULL, 'o'},
					   {NULL, 0, NULL, 0}};
	int ch;

	for (size_t k = 0; k < NOPT; k++)
		opt.optim_on[k] = true;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'n':
			opt.servers = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 't':
			opt.threads = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'b':
			opt.snet_mb = strtod(optarg, NULL);
			break;
		case 'g':
			if (sscanf(optarg, "%u/%u", &opt.slice, &opt.nslices) != 2 ||
			    !opt.nslices || opt.slice >= opt.nslices)
				goto usage;
			break;
		case 's':
			opt.steps = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'p':
			opt.transport = optarg;
			break;
		case 'o':
			if (select_optims(optarg))
				goto usage;
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 2 || !opt.servers || !opt.threads ||
	    opt.servers * opt.threads > MAXDEST)
		goto usage;
	opt.kv = argv[optind];
	if (!strcmp(argv[optind + 1], "async"))
		return run_async();
	if (!strcmp(argv[optind + 1], "sync"))
		return run_sync();
usage:
	fprintf(stderr,
		"usage: %s [--servers N] [--threads T] [--snet MB] [--slice G/K] [--steps S] "
		"[--transport tcp|rdma] [--optims NAME,...] KV_URL async|sync\n",
		argv[0]);
	return 2;
}
