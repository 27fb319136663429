/*
 * The data plane's side of checkpoints and streaming export (dp.h, "Checkpoints"): pausing the
 * threads, writing a part file from the shards of every thread, staging variables for a restore
 * and switching to them (dp_ckpt_load.c fills them), and exporting the rows changed since the
 * last export.
 *
 * Ownership. A data-path thread owns its shards; nobody else touches them while it serves
 * requests. ps_dp_pause() raises dp->pause and waits until every thread has acknowledged it:
 * from then on each thread holds every request on its connection (unhandled) and touches no
 * variable, so the shards may be read and exported from any thread. The acknowledgement is a
 * release store after the thread's last handled request, read with acquire here; the resume
 * is a release store of the flag after the readers are done, read with acquire by the
 * threads. So every row written before the pause is seen by the savers, and nothing a saver
 * did is missed by the thread afterwards.
 *
 * Staged variables (t->stage) are built while the threads keep serving: nobody serves them
 * yet, so the loaders may fill them from any thread, one loader per variable (a loader fills
 * the shards of every thread of that variable; different variables share nothing). The commit
 * pauses the threads, moves every stage table in place of the served one, and frees the old
 * variables once no pull write can still be reading their rows (pulls_inflight).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "model_io/ckpt.h"
#include "model_io/sm.h"
#include "server/dp_internal.h"

/* Write buffer of part files: large sequential I/O. */
#define CKPT_IO_BUFFER (4u << 20)
/* Streaming export: rows buffered before they are handed to the writer as one model. */
#define EXPORT_BATCH_BYTES (8u << 20)
/* How long a commit waits for pull writes to finish before parking the old variables. */
#define DRAIN_TIMEOUT_MS 5000u

/* ---- pause ---------------------------------------------------------------------------------- */

static bool all_acked(struct ps_dp *dp, bool want)
{
	for (uint32_t i = 0; i < dp->nthreads; i++)
		if (atomic_load_explicit(&dp->threads[i].paused_ack, memory_order_acquire) != want)
			return false;
	return true;
}

int ps_dp_pause(struct ps_dp *dp, uint32_t timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms(timeout_ms);
	struct timespec ms = {.tv_nsec = 1000000};

	atomic_store_explicit(&dp->pause, true, memory_order_release);
	while (!all_acked(dp, true)) {
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
		nanosleep(&ms, NULL);
	}
	return 0;
}

void ps_dp_resume(struct ps_dp *dp)
{
	atomic_store_explicit(&dp->pause, false, memory_order_release);
}

bool ps_dp_is_paused(const struct ps_dp *dp)
{
	return atomic_load_explicit(&dp->pause, memory_order_acquire);
}

/* ---- save ----------------------------------------------------------------------------------- */

/* The shards of @var_id on every thread (@tab: served or staged), or PS_EUNKNOWN_VAR. */
static int shards(struct ps_dp *dp, bool staged, uint32_t var_id, uint64_t begin, uint64_t end,
		  struct dp_var **vs, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];

		vs[i] = dp_vartab_find(staged ? &t->stage : &t->vars, var_id);
		if (!vs[i]) {
			snprintf(err, errlen, "variable %u is not declared on thread %u", var_id,
				 i);
			return PS_EUNKNOWN_VAR;
		}
		if (vs[i]->part_begin != begin || vs[i]->part_end != end) {
			snprintf(err, errlen,
				 "variable %u: thread %u holds part [%" PRIu64 ", %" PRIu64
				 "), not [%" PRIu64 ", %" PRIu64 ")",
				 var_id, i, vs[i]->part_begin, vs[i]->part_end, begin, end);
			return PS_EOUT_OF_RANGE;
		}
	}
	return 0;
}

struct save_ctx {
	struct ps_ckpt_part_writer *w;
	const _Atomic bool *cancel;
	uint64_t rows;
};

static int save_row(void *arg, const struct ps_store_row *row)
{
	struct save_ctx *x = arg;

	if (++x->rows % DP_CANCEL_EVERY == 0 && dp_cancelled(x->cancel))
		return -ECANCELED;
	return ps_ckpt_part_writer_append(x->w, row->id, row->key_hi, row->data);
}

int ps_dp_save_part(struct ps_dp *dp, const char *dir, uint32_t var_id, uint64_t begin,
		    uint64_t end, const _Atomic bool *cancel, struct ps_ckpt_part_desc *desc,
		    char *err, size_t errlen)
{
	struct ps_ckpt_part_writer_opts wo = {0};
	struct dp_var **vs;
	struct save_ctx x = {.cancel = cancel};
	struct ps_store_state st, best = {0};
	bool have = false;
	int rc;

	vs = calloc(dp->nthreads, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	rc = shards(dp, false, var_id, begin, end, vs, err, errlen);
	if (rc)
		goto out;
	wo.dir = dir;
	wo.var_id = var_id;
	wo.kind = vs[0]->kind;
	wo.width = vs[0]->width;
	wo.nslots = dp_var_nslots(vs[0]);
	wo.begin = begin;
	wo.end = end;
	wo.buffer_bytes = CKPT_IO_BUFFER;
	rc = ps_ckpt_part_writer_create(&wo, &x.w, err, errlen);
	if (rc)
		goto out;
	/* Dense and sparse shards are ascending blocks of the part: thread order is id order. */
	for (uint32_t i = 0; i < dp->nthreads && !rc; i++) {
		if (!vs[i]->part)
			continue;
		rc = ps_store_foreach(vs[i]->part, save_row, &x);
		ps_store_part_get_state(vs[i]->part, &st);
		if (!have || st.step > best.step)
			best = st;
		have = true;
	}
	if (rc) {
		snprintf(err, errlen, "variable %u part [%" PRIu64 ", %" PRIu64 "): %s", var_id,
			 begin, end,
			 rc == -ECANCELED ? "cancelled" : ps_ckpt_part_writer_errmsg(x.w));
		goto out;
	}
	rc = ps_ckpt_part_writer_finish(x.w, desc);
	if (rc) {
		snprintf(err, errlen, "%s", ps_ckpt_part_writer_errmsg(x.w));
		goto out;
	}
	desc->state.step = best.step;
	desc->state.beta1_power = best.optim.beta1_power;
	desc->state.beta2_power = best.optim.beta2_power;
out:
	ps_ckpt_part_writer_destroy(x.w);
	free(vs);
	return rc;
}

/* ---- restore -------------------------------------------------------------------------------- */

int ps_dp_stage_var(struct ps_dp *dp, uint32_t var_id, const struct ps_dp_declare *d, char *err,
		    size_t errlen)
{
	/* A commit (a pause) follows: idle threads poll faster until then (dp_thread.c). */
	atomic_store_explicit(&dp->pause_soon, true, memory_order_relaxed);
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];
		struct ps_dp_declare ds = *d;
		struct dp_var *v;
		int rc;

		if (dp_vartab_find(&t->stage, var_id)) {
			snprintf(err, errlen,
				 "variable %u is staged twice (two parts on one server)", var_id);
			return -EEXIST;
		}
		ds.shard = i;
		ds.nshards = dp->nthreads;
		rc = dp_var_build(t, var_id, &ds, false, 0, &v);
		if (!rc) {
			rc = dp_vartab_insert(&t->stage, v);
			if (rc)
				dp_var_free(v);
		}
		if (rc) {
			snprintf(err, errlen, "variable %u ('%s'): %s", var_id, d->name,
				 rc == -EINVAL ? "invalid spec" : ps_strerror(rc));
			return rc;
		}
	}
	return 0;
}

void ps_dp_stage_drop(struct ps_dp *dp)
{
	atomic_store_explicit(&dp->pause_soon, false, memory_order_relaxed);
	for (uint32_t i = 0; i < dp->nthreads; i++)
		dp_vartab_free(&dp->threads[i].stage);
}

static bool pulls_drained(struct ps_dp *dp)
{
	for (uint32_t i = 0; i < dp->nthreads; i++)
		if (atomic_load_explicit(&dp->threads[i].pulls_inflight, memory_order_acquire))
			return false;
	return true;
}

int ps_dp_stage_commit(struct ps_dp *dp, uint64_t version, uint32_t timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);
	struct timespec ms = {.tv_nsec = 1000000};
	struct dp_vartab *old;
	bool drained;
	int rc;

	old = realloc(dp->retired, (dp->nretired + dp->nthreads) * sizeof(*old));
	if (!old)
		return -ENOMEM;
	dp->retired = old;
	old += dp->nretired;
	rc = ps_dp_pause(dp, timeout_ms);
	if (rc) {
		ps_dp_resume(dp);
		return rc;
	}
	/* Requests held from now on are handled after the resume, against the new version. */
	ps_dp_set_cluster_version(dp, version);
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];

		old[i] = t->vars;
		t->vars = t->stage;
		memset(&t->stage, 0, sizeof(t->stage));
	}
	dp->nretired += dp->nthreads;
	/*
	 * Pull writes posted before the pause may still be reading the old rows; none can start
	 * now, and after the resume only the new variables are served. Once drained, the old ones
	 * are nobody's: freed by ps_dp_free_retired(), after the data path runs again.
	 */
	while (!(drained = pulls_drained(dp)) && ps_clock_remaining_ms(deadline))
		nanosleep(&ms, NULL);
	if (drained)
		dp->nfreeable = dp->nretired;
	else
		ps_log_warn(DP_LOG,
			    "pull writes still in flight %u ms after the switch: the replaced "
			    "variables are kept until shutdown",
			    DRAIN_TIMEOUT_MS);
	atomic_store_explicit(&dp->pause_soon, false, memory_order_relaxed);
	ps_dp_resume(dp);
	return 0;
}

void ps_dp_free_retired(struct ps_dp *dp)
{
	uint32_t n = dp->nfreeable;

	for (uint32_t i = 0; i < n; i++)
		dp_vartab_free(&dp->retired[i]);
	/* Tables not known to be drained stay (at the front now) until destroy. */
	memmove(dp->retired, dp->retired + n, (dp->nretired - n) * sizeof(*dp->retired));
	dp->nretired -= n;
	dp->nfreeable = 0;
}

void dp_graveyard_free(struct ps_dp *dp)
{
	for (uint32_t i = 0; i < dp->nretired; i++)
		dp_vartab_free(&dp->retired[i]);
	free(dp->retired);
	dp->retired = NULL;
	dp->nretired = dp->nfreeable = 0;
}

/* ---- streaming export ----------------------------------------------------------------------- */

struct exp_ctx {
	struct dp_var *v;
	struct ps_sm_writer *w;
	bool rows_on;	 /* take rows (off while a full export only clears the marks) */
	uint32_t nslots; /* slots carried with each row */
	uint64_t *ids;	 /* sparse ids / hash keys (hash128: lo, hi) */
	float *vals;	 /* rows: value + slots */
	size_t n, cap;	 /* rows buffered / room */
	uint64_t rows;	 /* rows written */
	char name[PS_SM_NAME_MAX + 1];
	int werr; /* the writer's error, if a write failed */
};

static size_t row_floats(const struct exp_ctx *x)
{
	return (size_t)x->v->width * (1 + x->nslots);
}

static int key_words(const struct dp_var *v)
{
	return v->kind == PS_VAR_HASH128 ? 2 : 1;
}

/* Write the buffered rows as one model (dense: one per run of consecutive ids). */
static int exp_flush(struct exp_ctx *x)
{
	struct dp_var *v = x->v;
	size_t rf = row_floats(x);
	int rc = 0;

	if (!x->n)
		return 0;
	if (v->kind == PS_VAR_DENSE) {
		size_t i = 0;

		/* The dense shard is walked in id order: runs are the changed stretches. */
		while (i < x->n && !rc) {
			size_t j = i + 1;
			struct ps_sm_dense_model m = {.var_name = x->name,
						      .var_id = v->var_id,
						      .width = v->width,
						      .nslots = x->nslots,
						      .rows_begin = x->ids[i]};

			while (j < x->n && x->ids[j] == x->ids[j - 1] + 1)
				j++;
			m.nrows = j - i;
			m.values = x->vals + i * rf;
			rc = ps_sm_write_dense(x->w, &m);
			i = j;
		}
	} else if (v->kind == PS_VAR_SPARSE) {
		struct ps_sm_sparse_model m = {.var_name = x->name,
					       .var_id = v->var_id,
					       .width = v->width,
					       .nslots = x->nslots,
					       .n = x->n,
					       .ids = x->ids,
					       .values = x->vals};

		rc = ps_sm_write_sparse(x->w, &m);
	} else {
		struct ps_sm_hash_model m = {.var_name = x->name,
					     .var_id = v->var_id,
					     .width = v->width,
					     .nslots = x->nslots,
					     .key_bits = v->kind == PS_VAR_HASH128 ? 128 : 64,
					     .n = x->n,
					     .values = x->vals};

		if (v->kind == PS_VAR_HASH128)
			m.keys128 = (const struct ps_key128 *)(const void *)x->ids;
		else
			m.keys = x->ids;
		rc = ps_sm_write_hash(x->w, &m);
	}
	if (rc) {
		x->werr = rc;
		return rc;
	}
	x->rows += x->n;
	x->n = 0;
	return 0;
}

static int exp_row(void *arg, const struct ps_store_row *row)
{
	struct exp_ctx *x = arg;
	size_t rf = row_floats(x);
	int kw = key_words(x->v);

	if (!x->rows_on)
		return 0;
	if (x->n == x->cap) {
		int rc = exp_flush(x);

		if (rc)
			return rc;
	}
	x->ids[x->n * kw] = row->id;
	if (kw == 2)
		x->ids[x->n * kw + 1] = row->key_hi;
	memcpy(x->vals + x->n * rf, row->data, rf * sizeof(float));
	x->n++;
	return 0;
}

static int exp_del(void *arg, uint64_t key, uint64_t key_hi)
{
	struct exp_ctx *x = arg;
	struct dp_var *v = x->v;
	size_t kw = (size_t)key_words(v);

	if (v->npend_del + kw > v->pend_del_cap) {
		size_t cap = v->pend_del_cap ? v->pend_del_cap * 2 : 1024;
		uint64_t *p = realloc(v->pend_del, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		v->pend_del = p;
		v->pend_del_cap = cap;
	}
	v->pend_del[v->npend_del++] = key;
	if (kw == 2)
		v->pend_del[v->npend_del++] = key_hi;
	return 0;
}

static int exp_var(struct dp_var *v, struct ps_sm_writer *w, const char *name, uint64_t *rows,
		   uint64_t *deletes)
{
	struct exp_ctx x = {.v = v, .w = w, .nslots = dp_var_nslots(v)};
	bool hash = v->kind == PS_VAR_HASH64 || v->kind == PS_VAR_HASH128;
	size_t rb = row_floats(&x) * sizeof(float) + (size_t)key_words(v) * 8;
	int rc;

	snprintf(x.name, sizeof(x.name), "%s", name);
	x.cap = EXPORT_BATCH_BYTES / rb ? EXPORT_BATCH_BYTES / rb : 1;
	x.ids = malloc(x.cap * (size_t)key_words(v) * sizeof(*x.ids));
	x.vals = malloc(x.cap * row_floats(&x) * sizeof(float));
	if (!x.ids || !x.vals) {
		rc = -ENOMEM;
		goto out;
	}
	/* A full export (after a failed one) sends every row; the marks are cleared anyway. */
	x.rows_on = !v->export_full;
	rc = ps_store_export(v->part, exp_row, hash ? exp_del : NULL, &x);
	if (!rc && v->export_full) {
		x.rows_on = true;
		rc = ps_store_foreach(v->part, exp_row, &x);
	}
	/* Deletions first: a key deleted and created again since the last export is present. */
	if (!rc && hash && v->npend_del) {
		struct ps_sm_hash_model m = {.var_name = x.name,
					     .var_id = v->var_id,
					     .width = v->width,
					     .key_bits = v->kind == PS_VAR_HASH128 ? 128 : 64};

		if (v->kind == PS_VAR_HASH128) {
			m.ndeleted = v->npend_del / 2;
			m.deleted128 = (const struct ps_key128 *)(const void *)v->pend_del;
		} else {
			m.ndeleted = v->npend_del;
			m.deleted = v->pend_del;
		}
		rc = ps_sm_write_hash(w, &m);
		if (rc)
			x.werr = rc;
		else
			*deletes += m.ndeleted;
	}
	if (!rc)
		rc = exp_flush(&x);
out:
	if (rc)
		v->export_full = true; /* rows handed out but not written: all of them next time */
	*rows += x.rows;
	free(x.ids);
	free(x.vals);
	return rc;
}

int ps_dp_export(struct ps_dp *dp, struct ps_sm_writer *const *writers, const int kind_writer[4],
		 uint64_t *rows, uint64_t *deletes, char *err, size_t errlen)
{
	int first = 0;

	*rows = *deletes = 0;
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];

		for (uint32_t k = 0; k < t->vars.cap; k++) {
			struct dp_var *v = t->vars.tab[k];
			struct ps_dp_declare d;
			int wi, rc;

			if (!v || !v->part || (unsigned)v->kind > PS_VAR_HASH128)
				continue;
			wi = kind_writer[v->kind];
			if (wi < 0)
				continue;
			if (ps_dp_declare_decode(v->decl, sizeof(v->decl), &d))
				d.name[0] = 0;
			v->export_writer = (uint32_t)wi;
			rc = exp_var(v, writers[wi], d.name, rows, deletes);
			if (rc && !first) {
				first = rc;
				snprintf(err, errlen, "variable %u ('%s') on thread %u: %s",
					 v->var_id, d.name, i,
					 rc == -ENOMEM ? ps_strerror(rc)
						       : ps_sm_writer_errmsg(writers[wi]));
			}
		}
	}
	return first;
}

void ps_dp_export_done(struct ps_dp *dp, uint32_t writer, bool committed)
{
	for (uint32_t i = 0; i < dp->nthreads; i++) {
		struct dp_thread *t = &dp->threads[i];

		for (uint32_t k = 0; k < t->vars.cap; k++) {
			struct dp_var *v = t->vars.tab[k];

			if (!v || v->export_writer != writer || !v->part)
				continue;
			if (committed) {
				v->npend_del = 0;
				v->export_full = false;
			} else {
				v->export_full = true;
			}
		}
	}
}
