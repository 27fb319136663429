/*
 * psplus-bench-ps: the clients, the variable and its preparation, the measuring threads, the
 * data checks and the sampled window. Only the public client library is used.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <psplus/client.h>

#include "perf/bench_ps.h"

/* What the threads share (read-only while they run, but for stop). */
struct bp_shared {
	const struct bp_opts *o;
	const uint64_t *ids; /* [pool x batch] */
	const float *grads;  /* [batch x width] */
	pthread_barrier_t go;
	atomic_bool stop; /* a client failed: the others stop too */
};

/* One client and its thread. */
struct bp_client {
	uint32_t idx;
	struct bp_shared *sh;
	struct ps_client *c;
	uint32_t var;
	float *out;		       /* pull: batch x width results (registered) */
	struct ps_client_buf *ids_mr;  /* the shared id pool, registered by this client */
	struct ps_client_buf *out_mr;  /* out */
	struct ps_client_buf *grad_mr; /* the shared gradients */
	struct bp_sample *samples;     /* [BP_SAMPLES_MAX or iters] */
	size_t nsamples, cap;
	uint32_t *uses;	   /* [pool]: how often each batch was sent */
	uint64_t start_ns; /* when this client's clock started */
	uint64_t checked_rows, bad_rows;
	uint64_t prep_calls;		 /* calls outside the measured loop (preparation, checks) */
	struct ps_client_stats st0, st1; /* around the measured loop */
	bool capped;
	int rc;
	pthread_t th;
};

static void say_fail(const char *what, int rc)
{
	fprintf(stderr, BP_PROG ": %s: %s (%s)\n", what, ps_strerror(rc), ps_client_last_error());
}

static void var_spec(const struct bp_opts *o, struct ps_var_spec *sp, char *name, size_t len)
{
	memset(sp, 0, sizeof(*sp));
	sp->kind = PS_VAR_SPARSE;
	sp->dtype = PS_DTYPE_FLOAT32;
	sp->rows = o->rows;
	sp->width = o->width;
	sp->init.kind = PS_INIT_ZEROS;
	sp->optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	/* Pull: learning rate 1 makes a prepared row exactly -pattern. Push: 2^-10 keeps every
	 * value a small multiple of it, so sums stay exact in any order. */
	sp->optim.sgd.learning_rate = o->test == BP_PULL ? 1.0f : BP_PUSH_LR;
	snprintf(name, len, "%s_%s_%" PRIu64 "x%u", o->name, o->test == BP_PULL ? "pull" : "push",
		 o->rows, o->width);
}

/* ---- the marked rows: preparation and checks ------------------------------------------------- */

/* The marked rows, ascending: each server thread's share is one run (zero copy). */
static uint64_t *marked_ids(uint64_t rows, size_t *n)
{
	size_t cap = (size_t)(rows / (BP_MARK_MASK + 1)) + 1024, k = 0;
	uint64_t *v = malloc(cap * sizeof(*v));

	for (uint64_t id = 0; v && id < rows; id++) {
		if (!bp_marked(id))
			continue;
		if (k == cap) {
			uint64_t *nv = realloc(v, 2 * cap * sizeof(*v));

			if (!nv) {
				free(v);
				return NULL;
			}
			v = nv;
			cap *= 2;
		}
		v[k++] = id;
	}
	*n = k;
	return v;
}

/* Pull variable: how the @n rows at @rows compare with the pattern of @ids. */
enum chunk_state { CHUNK_ZERO, CHUNK_PATTERN, CHUNK_MIXED };

static enum chunk_state chunk_state(const uint64_t *ids, size_t n, const float *rows, uint32_t w)
{
	bool zero = true, pattern = true;

	for (size_t i = 0; i < n && (zero || pattern); i++)
		for (uint32_t j = 0; j < w; j++) {
			float v = rows[i * w + j];

			zero = zero && v == 0.0f;
			pattern = pattern && v == -bp_pattern(ids[i], j);
		}
	return pattern ? CHUNK_PATTERN : zero ? CHUNK_ZERO : CHUNK_MIXED;
}

/*
 * Pull variable: give every marked row its pattern (one push of the pattern as gradient, with
 * learning rate 1, onto the zero rows), unless a pull shows it there already; then verify.
 */
static int prepare_pull(struct bp_client *k, const struct bp_opts *o, const uint64_t *mk,
			size_t nmk, float *buf)
{
	uint64_t pushed = 0, bad = 0;
	int rc = 0;

	for (size_t at = 0; at < nmk && !rc; at += BP_PREP_BATCH) {
		size_t n = nmk - at < BP_PREP_BATCH ? nmk - at : BP_PREP_BATCH;

		rc = ps_client_sparse_pull(k->c, k->var, mk + at, n, buf);
		k->prep_calls++;
		if (rc)
			break;
		switch (chunk_state(mk + at, n, buf, o->width)) {
		case CHUNK_PATTERN:
			break;
		case CHUNK_ZERO:
			for (size_t i = 0; i < n; i++)
				for (uint32_t j = 0; j < o->width; j++)
					buf[i * o->width + j] = bp_pattern(mk[at + i], j);
			rc = ps_client_sparse_push(k->c, k->var, mk + at, n, buf);
			k->prep_calls++;
			pushed += n;
			break;
		case CHUNK_MIXED:
			fprintf(stderr,
				BP_PROG ": the pull variable holds rows that are neither zeros "
					"nor the pattern (ids %" PRIu64 "..%" PRIu64
					"): declared by someone else?\n",
				mk[at], mk[at + n - 1]);
			return -EILSEQ;
		}
	}
	if (rc) {
		say_fail("preparing the pull variable", rc);
		return rc;
	}
	for (size_t at = 0; at < nmk; at += BP_PREP_BATCH) {
		size_t n = nmk - at < BP_PREP_BATCH ? nmk - at : BP_PREP_BATCH;

		rc = ps_client_sparse_pull(k->c, k->var, mk + at, n, buf);
		k->prep_calls++;
		if (rc) {
			say_fail("verifying the prepared rows", rc);
			return rc;
		}
		bad += chunk_state(mk + at, n, buf, o->width) != CHUNK_PATTERN;
	}
	printf(" prepared        : %zu marked rows (%" PRIu64 " pushed now, %s)\n", nmk, pushed,
	       bad ? "VERIFY FAILED" : "verified");
	if (bad) {
		fprintf(stderr, BP_PROG ": %" PRIu64 " chunks of prepared rows do not check\n",
			bad);
		return -EILSEQ;
	}
	return 0;
}

/* Pull the marked rows into @rows (nmk x width). */
static int pull_all(struct bp_client *k, const struct bp_opts *o, const uint64_t *mk, size_t nmk,
		    float *rows)
{
	for (size_t at = 0; at < nmk; at += BP_PREP_BATCH) {
		size_t n = nmk - at < BP_PREP_BATCH ? nmk - at : BP_PREP_BATCH;
		int rc = ps_client_sparse_pull(k->c, k->var, mk + at, n, rows + at * o->width);

		k->prep_calls++;
		if (rc) {
			say_fail("pulling the marked rows", rc);
			return rc;
		}
	}
	return 0;
}

/* Pull: compare every row of one result with what the prepared variable holds. */
static uint64_t check_pull(const uint64_t *ids, const float *out, uint32_t n, uint32_t w)
{
	uint64_t bad = 0;

	for (uint32_t i = 0; i < n; i++) {
		bool mk = bp_marked(ids[i]), ok = true;

		for (uint32_t j = 0; j < w && ok; j++)
			ok = out[(size_t)i * w + j] == (mk ? -bp_pattern(ids[i], j) : 0.0f);
		bad += !ok;
	}
	return bad;
}

/*
 * Push: each marked row after the run must be its value before minus 2^-10 x occurrences x
 * gradient. Every term is a multiple of 2^-10 far below 2^24 of them, so the float sums the
 * server made in whatever order are exact and the comparison is equality.
 */
static uint64_t check_push(const struct bp_opts *o, const uint64_t *ids, const uint32_t *uses,
			   const uint64_t *mk, size_t nmk, const float *before, const float *after,
			   uint64_t *checked)
{
	uint64_t *count = calloc(o->rows, sizeof(*count)), bad = 0;

	if (!count)
		return UINT64_MAX;
	for (uint32_t b = 0; b < o->pool; b++)
		for (uint32_t i = 0; uses[b] && i < o->batch; i++)
			count[ids[(size_t)b * o->batch + i]] += uses[b];
	for (size_t r = 0; r < nmk; r++) {
		bool ok = true;

		for (uint32_t j = 0; j < o->width && ok; j++) {
			double want = (double)before[r * o->width + j] -
				      (double)BP_PUSH_LR * (double)count[mk[r]] * bp_grad(j);

			ok = (double)after[r * o->width + j] == want;
		}
		if (!ok && bad < 5)
			fprintf(stderr,
				BP_PROG ": row %" PRIu64 " pushed %" PRIu64
					" times: got %g, want %g "
					"(column 0)\n",
				mk[r], count[mk[r]], (double)after[r * o->width],
				(double)before[r * o->width] -
					(double)BP_PUSH_LR * (double)count[mk[r]] * bp_grad(0));
		bad += !ok;
	}
	*checked = nmk;
	free(count);
	return bad;
}

/* ---- the measuring threads ------------------------------------------------------------------ */

/*
 * One client's loop: batches round-robin from its own starting point (clients do not send the
 * same batch at the same moment), one blocking call at a time. Pull results that are checked
 * land in a buffer first filled with NaN bytes, so a row the server did not write cannot pass;
 * the fill and the check are outside the call's latency, inside the window.
 */
static void *client_main(void *arg)
{
	struct bp_client *k = arg;
	const struct bp_opts *o = k->sh->o;
	size_t out_bytes = (size_t)o->batch * o->width * sizeof(float);
	uint32_t b = (uint32_t)((uint64_t)k->idx * o->pool / o->clients);
	uint64_t stop, limit = o->duration_ms ? UINT64_MAX : o->iters;
	int rc = 0;

	pthread_barrier_wait(&k->sh->go);
	ps_client_stats_get(k->c, &k->st0);
	k->start_ns = bench_now_ns();
	stop = k->start_ns + o->duration_ms * 1000000ull;
	for (uint64_t op = 0; op < limit; op++, b = b + 1 == o->pool ? 0 : b + 1) {
		const uint64_t *ids = k->sh->ids + (size_t)b * o->batch;
		bool check = o->test == BP_PULL && op % o->check_every == 0;
		uint64_t t0, t1;

		if (check)
			memset(k->out, 0xff, out_bytes);
		t0 = bench_now_ns();
		if (o->test == BP_PULL)
			rc = ps_client_sparse_pull(k->c, k->var, ids, o->batch, k->out);
		else
			rc = ps_client_sparse_push(k->c, k->var, ids, o->batch, k->sh->grads);
		t1 = bench_now_ns();
		if (rc)
			break;
		k->uses[b]++;
		k->samples[k->nsamples++] = (struct bp_sample){.end_ns = t1, .lat_ns = t1 - t0};
		if (check) {
			k->bad_rows += check_pull(ids, k->out, o->batch, o->width);
			k->checked_rows += o->batch;
		}
		if ((o->duration_ms && t1 >= stop) || atomic_load(&k->sh->stop))
			break;
		if (k->nsamples == k->cap) {
			k->capped = true;
			break;
		}
	}
	ps_client_stats_get(k->c, &k->st1);
	if (rc) {
		char what[64];

		snprintf(what, sizeof(what), "client %u: %s", k->idx,
			 o->test == BP_PULL ? "pull" : "push");
		say_fail(what, rc);
		atomic_store(&k->sh->stop, true);
	}
	k->rc = rc;
	return NULL;
}

/* ---- the window -------------------------------------------------------------------------------- */

static int cmp_end(const void *a, const void *b)
{
	uint64_t x = ((const struct bp_sample *)a)->end_ns,
		 y = ((const struct bp_sample *)b)->end_ns;

	return x < y ? -1 : x > y;
}

/*
 * Sample like perftest -D, over every client: the operations that completed between the margin
 * and the end minus the margin, over the time from the first to the last completion in that
 * span (the first one opens the window, so it is not counted). Iterations mode, or a window
 * with fewer than two completions: every operation, from the start to the last completion.
 */
static int window(const struct bp_opts *o, struct bp_client *cl, struct bp_result *res)
{
	size_t total = 0, n = 0, lo = 0;
	uint64_t start = UINT64_MAX, w_lo, w_hi, *lat;
	struct bp_sample *all;

	for (uint32_t i = 0; i < o->clients; i++) {
		total += cl[i].nsamples;
		start = cl[i].start_ns < start ? cl[i].start_ns : start;
	}
	all = malloc((total ? total : 1) * sizeof(*all));
	lat = malloc((total ? total : 1) * sizeof(*lat));
	if (!all || !lat) {
		free(all);
		free(lat);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < o->clients; i++) {
		memcpy(all + n, cl[i].samples, cl[i].nsamples * sizeof(*all));
		n += cl[i].nsamples;
	}
	qsort(all, total, sizeof(*all), cmp_end);
	w_lo = start + o->margin_ms * 1000000ull;
	w_hi = start + (o->duration_ms - o->margin_ms) * 1000000ull;
	n = 0;
	if (o->duration_ms) {
		while (lo < total && all[lo].end_ns < w_lo)
			lo++;
		while (lo + n < total && all[lo + n].end_ns <= w_hi)
			n++;
	}
	if (n >= 2) {
		res->window_s = (double)(all[lo + n - 1].end_ns - all[lo].end_ns) / 1e9;
		res->row.iters = n - 1;
	} else {
		lo = 0;
		n = total;
		res->window_s = total ? (double)(all[total - 1].end_ns - start) / 1e9 : 0;
		res->row.iters = total;
	}
	for (size_t i = 0; i < n; i++)
		lat[i] = all[lo + i].lat_ns;
	/* Latency per operation (a whole call), not halved as a ping-pong's is. */
	bench_op_lat_compute(lat, n, &res->row.lat);
	res->ops_total = total;
	if (res->window_s > 0) {
		res->ops_per_s = (double)res->row.iters / res->window_s;
		res->row.bw_mbs = res->ops_per_s * (double)res->row.bytes / BENCH_MIB;
		res->row.mpps = res->ops_per_s / 1e6;
	}
	free(all);
	free(lat);
	return 0;
}

/* ---- set-up ------------------------------------------------------------------------------------ */

static int client_setup(struct bp_client *k, const struct bp_opts *o, const char *name,
			const struct ps_var_spec *sp, uint64_t *ids, float *grads)
{
	struct ps_client_opts co = ps_client_opts_default();
	size_t out_bytes = (size_t)o->batch * o->width * sizeof(float);
	int rc;

	co.kv_path = o->kv;
	co.transport = o->transport;
	co.timeout_ms = (uint32_t)o->timeout_ms;
	co.max_inflight = o->inflight;
	co.pull_dedupe = (enum ps_pull_dedupe)o->dedupe;
	rc = ps_client_create(&co, &k->c);
	if (rc) {
		say_fail("connecting to the cluster", rc);
		return rc;
	}
	rc = ps_client_declare(k->c, name, sp, &k->var);
	if (rc) {
		say_fail("declaring the variable", rc);
		return rc;
	}
	k->cap = o->duration_ms ? BP_SAMPLES_MAX : o->iters;
	k->samples = malloc(k->cap * sizeof(*k->samples));
	k->uses = calloc(o->pool, sizeof(*k->uses));
	/* Page-aligned: registered memory is pinned by the page. */
	k->out = aligned_alloc(4096, (out_bytes + 4095) & ~(size_t)4095);
	if (!k->samples || !k->uses || !k->out)
		return -ENOMEM;
	rc = ps_client_register_buffer(k->c, ids, (size_t)o->pool * o->batch * sizeof(*ids),
				       &k->ids_mr);
	if (!rc)
		rc = ps_client_register_buffer(k->c, k->out, out_bytes, &k->out_mr);
	if (!rc && grads)
		rc = ps_client_register_buffer(k->c, grads, out_bytes, &k->grad_mr);
	if (rc)
		say_fail("registering buffers", rc);
	return rc;
}

static void client_free(struct bp_client *k)
{
	ps_client_unregister_buffer(k->grad_mr);
	ps_client_unregister_buffer(k->out_mr);
	ps_client_unregister_buffer(k->ids_mr);
	ps_client_destroy(k->c);
	free(k->samples);
	free(k->uses);
	free(k->out);
}

/* Prepare (pull) or read the "before" rows (push) with client 0; @rows: nmk x width. */
static int prepare(struct bp_client *k, const struct bp_opts *o, const uint64_t *mk, size_t nmk,
		   float *rows)
{
	if (o->test == BP_PULL)
		return prepare_pull(k, o, mk, nmk, rows);
	return pull_all(k, o, mk, nmk, rows);
}

static double cpu_us(const struct timeval *tv)
{
	return (double)tv->tv_sec * 1e6 + (double)tv->tv_usec;
}

static int measure(struct bp_shared *sh, struct bp_client *cl, uint32_t n)
{
	uint32_t started = 0;
	int rc = 0;

	for (; started < n; started++) {
		rc = -pthread_create(&cl[started].th, NULL, client_main, &cl[started]);
		if (rc)
			break;
	}
	if (rc) {
		/* The barrier waits for every client: those started never pass it. */
		fprintf(stderr, BP_PROG ": starting client threads: %s\n", strerror(-rc));
		exit(BENCH_EXIT_FAILURE);
	}
	pthread_barrier_wait(&sh->go);
	for (uint32_t i = 0; i < n; i++) {
		pthread_join(cl[i].th, NULL);
		if (cl[i].rc && !rc)
			rc = cl[i].rc;
	}
	return rc;
}

int bp_run(const struct bp_opts *o, struct bp_result *res)
{
	size_t ids_bytes = (size_t)o->pool * o->batch * sizeof(uint64_t);
	size_t out_bytes = (size_t)o->batch * o->width * sizeof(float);
	struct bp_shared sh = {.o = o};
	struct bp_client *cl = calloc(o->clients, sizeof(*cl));
	uint64_t *ids = aligned_alloc(4096, (ids_bytes + 4095) & ~(size_t)4095), *mk = NULL;
	float *grads = NULL, *before = NULL, *after = NULL;
	uint32_t *uses = NULL;
	struct ps_var_spec sp;
	struct rusage ru0, ru1;
	size_t nmk = 0;
	uint64_t t0;
	int rc = -ENOMEM;

	if (o->test == BP_PUSH)
		grads = aligned_alloc(4096, (out_bytes + 4095) & ~(size_t)4095);
	if (!cl || !ids || (o->test == BP_PUSH && !grads))
		goto out;
	for (uint32_t i = 0; grads && i < o->batch; i++)
		for (uint32_t j = 0; j < o->width; j++)
			grads[(size_t)i * o->width + j] = bp_grad(j);
	res->distinct_per_op = bp_ids_make(o, ids);
	var_spec(o, &sp, res->var_name, sizeof(res->var_name));
	for (uint32_t i = 0; i < o->clients; i++) {
		cl[i].idx = i;
		cl[i].sh = &sh;
		rc = client_setup(&cl[i], o, res->var_name, &sp, ids, grads);
		if (rc)
			goto out;
	}
	{
		struct ps_client_stats st;

		ps_client_stats_get(cl[0].c, &st);
		memcpy(res->transport, st.transport, sizeof(res->transport));
	}
	rc = -ENOMEM;
	mk = marked_ids(o->rows, &nmk);
	before = mk ? malloc((nmk ? nmk : 1) * o->width * sizeof(float)) : NULL;
	if (!before)
		goto out;
	t0 = bench_now_ns();
	rc = prepare(&cl[0], o, mk, nmk, before);
	res->prep_s = (double)(bench_now_ns() - t0) / 1e9;
	if (rc)
		goto out;
	rc = -pthread_barrier_init(&sh.go, NULL, o->clients + 1);
	if (rc)
		goto out;
	sh.ids = ids;
	sh.grads = grads;
	getrusage(RUSAGE_SELF, &ru0);
	rc = measure(&sh, cl, o->clients);
	getrusage(RUSAGE_SELF, &ru1);
	pthread_barrier_destroy(&sh.go);
	if (rc)
		goto out;
	res->row.bytes = out_bytes;
	res->row.bytes_copied = 0;
	for (uint32_t i = 0; i < o->clients; i++) {
		const struct bp_client *k = &cl[i];

		res->requests_per_op += (double)(k->st1.requests - k->st0.requests);
		res->dups_per_op += (double)(k->st1.pull_dups - k->st0.pull_dups);
		res->bytes_staged += k->st1.bytes_staged - k->st0.bytes_staged;
		res->row.bytes_copied +=
			(int64_t)(k->st1.transport_copied - k->st0.transport_copied);
		res->checked_rows += k->checked_rows;
		res->bad_rows += k->bad_rows;
		res->capped |= k->capped;
	}
	rc = window(o, cl, res);
	if (rc)
		goto out;
	if (res->ops_total) {
		res->requests_per_op /= (double)res->ops_total;
		res->dups_per_op /= (double)res->ops_total;
		res->client_cpu_us = (cpu_us(&ru1.ru_utime) + cpu_us(&ru1.ru_stime) -
				      cpu_us(&ru0.ru_utime) - cpu_us(&ru0.ru_stime)) /
				     (double)res->ops_total;
	}
	if (o->test == BP_PUSH) {
		uint64_t checked = 0, bad;

		rc = -ENOMEM;
		after = malloc((nmk ? nmk : 1) * o->width * sizeof(float));
		uses = calloc(o->pool, sizeof(*uses));
		if (!after || !uses)
			goto out;
		rc = pull_all(&cl[0], o, mk, nmk, after);
		if (rc)
			goto out;
		for (uint32_t i = 0; i < o->clients; i++)
			for (uint32_t b = 0; b < o->pool; b++)
				uses[b] += cl[i].uses[b];
		bad = check_push(o, ids, uses, mk, nmk, before, after, &checked);
		if (bad == UINT64_MAX) {
			rc = -ENOMEM;
			goto out;
		}
		res->checked_rows += checked;
		res->bad_rows += bad;
	}
	res->calls = res->ops_total;
	for (uint32_t i = 0; i < o->clients; i++)
		res->calls += cl[i].prep_calls;
	res->row.checked = res->checked_rows * o->width * sizeof(float);
	res->row.check_ok = !res->bad_rows && res->checked_rows;
	rc = 0;
out:
	if (rc == -ENOMEM)
		fprintf(stderr, BP_PROG ": out of memory\n");
	for (uint32_t i = 0; cl && i < o->clients; i++)
		client_free(&cl[i]);
	free(cl);
	free(ids);
	free(mk);
	free(grads);
	free(before);
	free(after);
	free(uses);
	return rc;
}
