/*
 * InternalSave, InternalRestore and the streaming export, as the main loop runs them
 * (sched_ops.c). The protocol, step by step, and why, is in docs/formats.md ("Save and restore
 * in a cluster"); in short:
 *
 * Save (point in time):
 *   1. ps_ckpt_begin(ROOT, NAME): an empty, unlisted folder.
 *   2. Stepped jobs: hold step_end/barrier replies until every worker waits in one (at most
 *      SCHED_QUIESCE_MS): no push is in flight, so the cut falls between steps.
 *   3. PAUSE to every server; every server holds all requests and acknowledges. The checkpoint
 *      is the servers' state at this instant. Then the held step replies go.
 *   4. The variables and the placement are taken (after the pause: a variable declared later
 *      cannot have rows on the servers yet), and SAVE goes to every server: each writes the
 *      parts it holds as part files under ROOT/NAME and resumes as soon as its own are durable.
 *   5. The metadata (variables, specs, optimizer states, placement blob, server count, cluster
 *      version) and the index entry: ps_ckpt_commit, only when every server reported success.
 *      Any failure: RESUME to all, ps_ckpt_abort; the previous checkpoint stays the latest.
 *
 * Restore (onto the current servers, whatever their number):
 *   1. The checkpoint's metadata (a name or "latest"); a placement for the current servers
 *      (ps_placement_compute, the saved table as the previous one when the server count is the
 *      same, so an unchanged layout reads each file once).
 *   2. RESTORE_PREPARE: each server stages the parts it now owns and reads every overlapping
 *      saved part file to its end (CRC checked) while still serving its current state.
 *   3. Any failure: RESTORE_ABORT, the servers keep their state, the error names the file.
 *   4. RESTORE_COMMIT with a new cluster version: each server switches to the staged parts.
 *      Then the scheduler takes the variables, the placement and the version, and resets the
 *      synchronisation state; clients on the old version are refused and re-read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "scheduler/sched_internal.h"

static void fail(struct sched_op_result *res, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct sched_op_result *res, int rc, const char *fmt, ...)
{
	va_list ap;

	res->status = rc;
	va_start(ap, fmt);
	vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
	va_end(ap);
}

static uint64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool all_live(struct ps_sched *s)
{
	bool live;

	pthread_mutex_lock(&s->lock);
	live = s->nlive == s->opts->server_num;
	pthread_mutex_unlock(&s->lock);
	return live;
}

static uint64_t next_op_id(struct ps_sched *s)
{
	uint64_t id;

	pthread_mutex_lock(&s->lock);
	id = ++s->next_op_id;
	pthread_mutex_unlock(&s->lock);
	return id;
}

/* Builders of the simple commands: nothing beyond op_id and cmd, or a version. */
static void build_plain(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *c, void *arg)
{
	const uint64_t *version = arg;

	if (version)
		c->cluster_version = *version;
	if (c->cmd == SCHED_CMD_PAUSE)
		c->pause_lease_ms = SCHED_PAUSE_LEASE_MS;
}

/* Best effort (an abort path): the servers' own leases and resets cover a lost message. */
static void round_quiet(struct ps_sched *s, uint64_t op, uint32_t cmd)
{
	struct sched_round *r = NULL;
	char msg[256];

	if (ps_sched_round(s, op, cmd, build_plain, NULL, SCHED_CMD_SHORT_MS, &r, msg, sizeof(msg)))
		ps_log_warn(SCHED_LOG, "command %u of operation %" PRIu64 ": %s", cmd, op, msg);
	ps_sched_round_free(r);
}

/* ---- per-server variable lists -------------------------------------------------------------- */

/*
 * The CkptVar list of one server, rebuilt in place for each server of a round (the message is
 * encoded before the next server's is built).
 */
struct var_list {
	const struct ps_placement *t;
	const struct sched_var *vars; /* [nvars]: names, specs, num_workers; NULL for SAVE */
	uint32_t nvars;
	const char *root, *name;
	Psplus__Ctl__CkptVar *v, **vp;
	Psplus__Ctl__CkptRange *rg, **rgp;
	size_t nrg;
};

static int var_list_init(struct var_list *l, const struct ps_placement *t)
{
	size_t nv = t->nvars ? t->nvars : 1, np = t->nparts ? t->nparts : 1;

	l->t = t;
	l->v = calloc(nv, sizeof(*l->v));
	l->vp = calloc(nv, sizeof(*l->vp));
	l->rg = calloc(np, sizeof(*l->rg));
	l->rgp = calloc(np, sizeof(*l->rgp));
	return l->v && l->vp && l->rg && l->rgp ? 0 : -ENOMEM;
}

static void var_list_fini(struct var_list *l)
{
	free(l->v);
	free(l->vp);
	free(l->rg);
	free(l->rgp);
}

static const struct sched_var *list_var(const struct var_list *l, uint32_t id)
{
	for (uint32_t i = 0; i < l->nvars; i++)
		if (l->vars[i].id == id)
			return &l->vars[i];
	return NULL;
}

static void build_vars(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *c, void *arg)
{
	struct var_list *l = arg;
	size_t nv = 0, nr = 0;

	c->root = (char *)l->root;
	c->name = (char *)l->name;
	for (uint32_t i = 0; i < l->t->nvars; i++) {
		const struct ps_placement_entry *e = &l->t->vars[i];
		const struct sched_var *sv = l->vars ? list_var(l, e->id) : NULL;
		Psplus__Ctl__CkptVar *v = &l->v[nv];
		size_t first = nr;

		for (uint32_t j = 0; j < e->nparts; j++) {
			if (e->parts[j].server != server)
				continue;
			psplus__ctl__ckpt_range__init(&l->rg[nr]);
			l->rg[nr].begin = e->parts[j].begin;
			l->rg[nr].end = e->parts[j].end;
			l->rgp[nr] = &l->rg[nr];
			nr++;
		}
		if (nr == first)
			continue;
		psplus__ctl__ckpt_var__init(v);
		v->id = e->id;
		v->name = (char *)e->name;
		v->n_parts = nr - first;
		v->parts = &l->rgp[first];
		if (sv) {
			v->spec.data = (uint8_t *)sv->spec;
			v->spec.len = PS_DP_DECLARE_BYTES;
			v->num_workers = sv->num_workers;
		}
		l->vp[nv++] = v;
	}
	c->n_vars = nv;
	c->vars = l->vp;
}

/* ---- save ----------------------------------------------------------------------------------- */

/* What the save writes, taken on the service thread right after the pause. */
struct save_snap {
	struct ps_ckpt_meta *meta; /* variables without parts, placement, version, server count */
	struct ps_placement *t;	   /* the placement, decoded from the blob (our own copy) */
	int rc;
	char msg[512];
};

static void snap_take(struct ps_sched *s, void *arg)
{
	struct save_snap *x = arg;
	struct ps_ckpt_meta *m = x->meta;

	m->cluster_version = s->cluster_version;
	m->server_count = s->opts->server_num;
	if (!s->placement_len)
		return; /* no variable: an empty checkpoint */
	x->rc = ps_ckpt_meta_set_placement(m, s->placement_blob, s->placement_len);
	if (!x->rc)
		x->rc = ps_placement_decode(s->placement_blob, s->placement_len, &x->t, x->msg,
					    sizeof(x->msg));
	for (uint32_t i = 0; !x->rc && i < s->nvars; i++) {
		const struct sched_var *v = &s->vars[i];

		if (!ps_ckpt_meta_add_var(m, v->name, v->id, &v->vs,
					  ps_sched_optim_slots(v->vs.optim.kind)))
			x->rc = -ENOMEM;
	}
	if (x->rc && !x->msg[0])
		snprintf(x->msg, sizeof(x->msg), "%s", ps_strerror(x->rc));
}

static void steps_hold(struct ps_sched *s, void *arg)
{
	bool *quiet = arg;

	s->steps_held = true;
	*quiet = ps_sched_sync_quiet(s);
}

static void steps_release(struct ps_sched *s, void *arg)
{
	s->steps_held = false;
	ps_sched_sync_release(s);
}

/* Hold step replies until every worker of a stepped job waits in one (or the time is up). */
static void quiesce(struct ps_sched *s)
{
	uint64_t deadline = ps_clock_deadline_ms(SCHED_QUIESCE_MS);
	struct timespec ms10 = {.tv_nsec = 10000000};
	bool quiet = false;

	while (!ps_sched_service_call(s, steps_hold, &quiet) && !quiet) {
		if (!ps_clock_remaining_ms(deadline)) {
			ps_log_info(SCHED_LOG,
				    "save: the workers did not all reach a step boundary within %u "
				    "ms; saving the servers' state at the pause",
				    SCHED_QUIESCE_MS);
			return;
		}
		nanosleep(&ms10, NULL);
	}
}

/* The final metadata: every variable whose parts all came back (others were not on servers). */
static int meta_build(const struct save_snap *x, const struct sched_round *r, const char *name,
		      struct ps_ckpt_meta **out, char *msg, size_t msglen)
{
	struct ps_ckpt_meta *m = ps_ckpt_meta_create(name);
	const struct ps_ckpt_meta *sm = x->meta;

	if (!m)
		return -ENOMEM;
	m->cluster_version = sm->cluster_version;
	m->server_count = sm->server_count;
	if (sm->placement_len && ps_ckpt_meta_set_placement(m, sm->placement, sm->placement_len))
		goto nomem;
	for (size_t i = 0; i < sm->nvars; i++) {
		const struct ps_ckpt_var *sv = &sm->vars[i];
		const struct ps_placement_entry *e = ps_placement_find(x->t, (uint32_t)sv->id);
		struct ps_ckpt_var *v;
		size_t got = 0;

		for (uint32_t k = 0; k < r->n; k++)
			for (size_t j = 0; j < r->a[k].nparts; j++)
				got += r->a[k].part_var[j] == sv->id;
		if (!e || got != e->nparts) {
			ps_log_info(SCHED_LOG,
				    "save %s: variable '%s' (id %" PRIu64 ") left out: %zu of %u "
				    "parts on the servers (declared, not yet created there)",
				    name, sv->name, sv->id, got, e ? e->nparts : 0);
			continue;
		}
		v = ps_ckpt_meta_add_var(m, sv->name, sv->id, &sv->spec, sv->nslots);
		if (!v)
			goto nomem;
		for (uint32_t k = 0; k < r->n; k++)
			for (size_t j = 0; j < r->a[k].nparts; j++)
				if (r->a[k].part_var[j] == sv->id &&
				    ps_ckpt_var_add_part(v, &r->a[k].parts[j]))
					goto nomem;
	}
	*out = m;
	return 0;
nomem:
	ps_ckpt_meta_free(m);
	snprintf(msg, msglen, "scheduler out of memory");
	return -ENOMEM;
}

void ps_sched_internal_save(struct ps_sched *s, const char *name_in, struct sched_op_result *res)
{
	struct save_snap x = {0};
	struct var_list l = {0};
	struct sched_round *r = NULL;
	struct ps_ckpt_meta *m = NULL;
	char dir[4096], msg[2048] = "";
	uint64_t op = next_op_id(s);
	bool paused = false, begun = false;
	int rc;

	if (name_in[0])
		snprintf(res->name, sizeof(res->name), "%s", name_in);
	else
		snprintf(res->name, sizeof(res->name), "ckpt-%" PRIu64, realtime_ms());
	if (!s->ckpt_root[0])
		return fail(res, -ENOTSUP,
			    "no checkpoint root: the scheduler runs with -cp none://");
	if (!ps_ckpt_name_valid(res->name))
		return fail(res, -EINVAL,
			    "'%s' is not a valid checkpoint name (1-%d of A-Z a-z 0-9 . _ -, not "
			    "starting with . or -, not latest, index or end)",
			    res->name, PS_CKPT_NAME_MAX);
	if (!all_live(s))
		return fail(res, PS_ENOT_READY, "not every server is live: a save needs all %u",
			    s->opts->server_num);
	rc = ps_ckpt_begin(s->ckpt_root, res->name, dir, sizeof(dir), msg, sizeof(msg));
	if (rc)
		return fail(res, rc, "%s", msg);
	begun = true;
	x.meta = ps_ckpt_meta_create(res->name);
	if (!x.meta) {
		fail(res, -ENOMEM, "scheduler out of memory");
		goto out;
	}

	quiesce(s);
	rc = ps_sched_round(s, op, SCHED_CMD_PAUSE, build_plain, NULL, SCHED_CMD_SHORT_MS, &r, msg,
			    sizeof(msg));
	paused = true;
	ps_sched_service_call(s, steps_release, NULL);
	ps_sched_round_free(r);
	r = NULL;
	if (rc) {
		fail(res, rc, "pause: %s", msg);
		goto out;
	}
	ps_sched_service_call(s, snap_take, &x);
	if (x.rc) {
		fail(res, x.rc, "%s", x.msg);
		goto out;
	}
	if (x.t) {
		rc = var_list_init(&l, x.t);
		if (rc) {
			fail(res, rc, "scheduler out of memory");
			goto out;
		}
		l.root = s->ckpt_root;
		l.name = res->name;
		rc = ps_sched_round(s, op, SCHED_CMD_SAVE, build_vars, &l, SCHED_CMD_LONG_MS, &r,
				    msg, sizeof(msg));
		if (rc) {
			fail(res, rc, "save: %s", msg);
			goto out;
		}
		paused = false; /* each server resumed once its files were durable */
		for (uint32_t i = 0; i < r->n; i++) {
			res->rows += r->a[i].rows;
			res->bytes += r->a[i].bytes;
			if (r->a[i].pause_us > res->pause_us)
				res->pause_us = r->a[i].pause_us;
		}
	} else {
		/* Nothing declared: nothing to write, and nothing to hold any longer. */
		round_quiet(s, op, SCHED_CMD_RESUME);
		paused = false;
	}
	rc = meta_build(&x, r ? r : &(struct sched_round){0}, res->name, &m, msg, sizeof(msg));
	if (!rc)
		rc = ps_ckpt_commit(s->ckpt_root, m, msg, sizeof(msg));
	if (rc) {
		fail(res, rc, "commit: %s", msg);
		goto out;
	}
	begun = false;
out:
	if (paused)
		round_quiet(s, op, SCHED_CMD_RESUME);
	if (begun && ps_ckpt_abort(s->ckpt_root, res->name))
		ps_log_warn(SCHED_LOG, "save %s: could not remove the partial folder %s", res->name,
			    dir);
	ps_sched_round_free(r);
	var_list_fini(&l);
	ps_placement_destroy(x.t);
	ps_ckpt_meta_free(x.meta);
	ps_ckpt_meta_free(m);
}

/* ---- restore -------------------------------------------------------------------------------- */

/* The scheduler's view of each variable of the checkpoint: ids, names, specs, job size. */
struct restore_vars {
	struct sched_var *vars;
	uint32_t nvars;
	bool begin; /* true: mark the restore running; false: it failed, unmark */
};

static void restore_mark(struct ps_sched *s, void *arg)
{
	struct restore_vars *rv = arg;

	s->restoring = rv->begin;
	if (!rv->begin)
		return;
	/* Job sizes known from earlier declarations of the same names. */
	for (uint32_t i = 0; i < rv->nvars; i++)
		for (uint32_t k = 0; k < s->nvars; k++)
			if (!strcmp(s->vars[k].name, rv->vars[i].name))
				rv->vars[i].num_workers = s->vars[k].num_workers;
}

struct install {
	struct restore_vars *rv;
	struct ps_placement *t;
	uint8_t *blob;
	size_t blen;
};

static void restore_install(struct ps_sched *s, void *arg)
{
	struct install *in = arg;

	ps_sched_vars_replace(s, in->rv->vars, in->rv->nvars, in->t, in->blob, in->blen);
	in->rv->vars = NULL;
	in->t = NULL;
	in->blob = NULL;
	s->restoring = false;
	/* Workers waiting in step_end or a barrier belong to the model that was replaced. */
	ps_sched_sync_reset(s, PS_ESTALE_VERSION,
			    "a restore replaced the model; start the step again");
}

/* Check the checkpoint's variables and turn them into scheduler variables. */
static int restore_vars_from(const struct ps_ckpt_meta *m, struct restore_vars *rv, char *msg,
			     size_t msglen)
{
	rv->vars = calloc(m->nvars ? m->nvars : 1, sizeof(*rv->vars));
	if (!rv->vars)
		return -ENOMEM;
	for (size_t i = 0; i < m->nvars; i++) {
		const struct ps_ckpt_var *cv = &m->vars[i];
		struct sched_var *v = &rv->vars[rv->nvars];

		if (strlen(cv->name) > SCHED_VAR_NAME_MAX || !cv->name[0] || !cv->id ||
		    cv->id > UINT32_MAX) {
			snprintf(msg, msglen,
				 "checkpoint '%s': variable '%s' (id %" PRIu64 ") cannot be served "
				 "(names of 1 to %u bytes, ids 1 to 2^32 - 1)",
				 m->name, cv->name, cv->id, SCHED_VAR_NAME_MAX);
			return -EINVAL;
		}
		if (cv->nslots != ps_sched_optim_slots(cv->spec.optim.kind)) {
			snprintf(msg, msglen,
				 "checkpoint '%s': variable '%s' carries %u optimizer slots, its "
				 "optimizer keeps %u",
				 m->name, cv->name, cv->nslots,
				 ps_sched_optim_slots(cv->spec.optim.kind));
			return PS_ECORRUPT;
		}
		snprintf(v->name, sizeof(v->name), "%.*s", (int)sizeof(v->name) - 1, cv->name);
		v->id = (uint32_t)cv->id;
		v->vs = cv->spec;
		ps_sched_spec_canon(&v->vs, v->spec);
		if (cv->spec.kind == PS_VAR_HASH64 || cv->spec.kind == PS_VAR_HASH128)
			for (size_t j = 0; j < cv->nparts; j++)
				v->expected_keys += cv->parts[j].rows;
		rv->nvars++;
	}
	return 0;
}

/* A placement of the checkpoint's variables on the current servers. */
static int restore_place(struct ps_sched *s, const struct ps_ckpt_meta *m,
			 const struct restore_vars *rv, uint64_t version, struct ps_placement **out,
			 char *msg, size_t msglen)
{
	const struct ps_scheduler_opts *o = s->opts;
	struct ps_placement_var *pv = calloc(rv->nvars ? rv->nvars : 1, sizeof(*pv));
	struct ps_placement_budget *b = calloc(o->server_num, sizeof(*b));
	struct ps_placement *prev = NULL;
	struct ps_placement_input in;
	char err[512] = "";
	int rc = -ENOMEM;

	if (!pv || !b)
		goto out;
	for (uint32_t i = 0; i < rv->nvars; i++)
		ps_sched_place_var(&rv->vars[i], &pv[i]);
	ps_sched_budgets(s, b);
	/* Same server count: the saved layout is kept where it fits (each file read once). */
	if (m->placement_len &&
	    !ps_placement_decode(m->placement, m->placement_len, &prev, err, sizeof(err)) &&
	    prev->nservers != o->server_num) {
		ps_placement_destroy(prev);
		prev = NULL;
	}
	in = (struct ps_placement_input){.vars = pv,
					 .nvars = rv->nvars,
					 .nservers = o->server_num,
					 .budgets = b,
					 .prev = prev,
					 .steps_per_s = SCHED_DEFAULT_STEPS_PER_S,
					 .rows_per_request = SCHED_DEFAULT_ROWS_PER_REQ,
					 .cluster_version = version};
	rc = ps_placement_compute(&in, out, err, sizeof(err));
	if (rc) {
		snprintf(msg, msglen, "cannot place checkpoint '%s' on %u servers: %s", m->name,
			 o->server_num, err[0] ? err : ps_strerror(rc));
		goto out;
	}
	/* A data-path thread holds one part per variable. */
	for (uint32_t i = 0; i < (*out)->nvars && !rc; i++) {
		const struct ps_placement_entry *e = &(*out)->vars[i];

		for (uint32_t j = 0; j < e->nparts && !rc; j++)
			for (uint32_t k = j + 1; k < e->nparts && !rc; k++)
				if (e->parts[j].server == e->parts[k].server) {
					snprintf(msg, msglen,
						 "cannot place checkpoint '%s' on %u servers: "
						 "variable '%s' would have two parts on server %u "
						 "(a server holds one part per variable)",
						 m->name, o->server_num, e->name,
						 e->parts[j].server);
					rc = PS_EOVER_BUDGET;
				}
	}
	if (rc) {
		ps_placement_destroy(*out);
		*out = NULL;
	}
out:
	if (rc == -ENOMEM && !msg[0])
		snprintf(msg, msglen, "scheduler out of memory");
	ps_placement_destroy(prev);
	free(pv);
	free(b);
	return rc;
}

void ps_sched_internal_restore(struct ps_sched *s, const char *name, struct sched_op_result *res)
{
	struct restore_vars rv = {0};
	struct ps_ckpt_meta *m = NULL;
	struct ps_placement *t = NULL;
	struct sched_round *r = NULL;
	struct var_list l = {0};
	struct install in = {0};
	char msg[2048] = "";
	uint64_t op = next_op_id(s), version;
	bool marked = false;
	int rc;

	snprintf(res->name, sizeof(res->name), "%s", name[0] ? name : "latest");
	if (!s->ckpt_root[0])
		return fail(res, -ENOTSUP,
			    "no checkpoint root: the scheduler runs with -cp none://");
	if (!all_live(s))
		return fail(res, PS_ENOT_READY, "not every server is live: a restore needs all %u",
			    s->opts->server_num);
	rc = ps_ckpt_meta_load(s->ckpt_root, res->name, &m, msg, sizeof(msg));
	if (rc)
		return fail(res, rc, "%s", msg);
	snprintf(res->name, sizeof(res->name), "%s", m->name);
	rc = ps_sched_random_version(&version);
	if (!rc)
		rc = restore_vars_from(m, &rv, msg, sizeof(msg));
	if (!rc)
		rc = restore_place(s, m, &rv, version, &t, msg, sizeof(msg));
	if (!rc)
		rc = ps_placement_encode(t, &in.blob, &in.blen);
	if (!rc)
		rc = var_list_init(&l, t);
	if (rc) {
		fail(res, rc, "%s", msg[0] ? msg : ps_strerror(rc));
		goto out;
	}
	rv.begin = true;
	ps_sched_service_call(s, restore_mark, &rv);
	marked = true;
	l.vars = rv.vars;
	l.nvars = rv.nvars;
	l.root = s->ckpt_root;
	l.name = m->name;
	rc = ps_sched_round(s, op, SCHED_CMD_RESTORE_PREPARE, build_vars, &l, SCHED_CMD_LONG_MS, &r,
			    msg, sizeof(msg));
	if (rc) {
		fail(res, rc, "restore of '%s' refused, the servers keep their state: %s", m->name,
		     msg);
		round_quiet(s, op, SCHED_CMD_RESTORE_ABORT);
		goto out;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		res->rows += r->a[i].rows;
		res->bytes += r->a[i].bytes;
	}
	ps_sched_round_free(r);
	r = NULL;
	/* From here the servers switch one by one: their heartbeats may carry either version. */
	pthread_mutex_lock(&s->lock);
	s->pending_version = version;
	pthread_mutex_unlock(&s->lock);
	rc = ps_sched_round(s, op, SCHED_CMD_RESTORE_COMMIT, build_plain, &version,
			    SCHED_CMD_SHORT_MS, &r, msg, sizeof(msg));
	if (rc)
		fail(res, rc,
		     "restore of '%s': not every server switched to it (%s); the cluster is "
		     "inconsistent until the next restore",
		     m->name, msg);
	in.rv = &rv;
	in.t = t;
	t = NULL;
	ps_sched_service_call(s, restore_install, &in);
	marked = false;
	pthread_mutex_lock(&s->lock);
	s->pending_version = 0;
	pthread_mutex_unlock(&s->lock);
	ps_log_info(SCHED_LOG,
		    "restored checkpoint '%s' (saved on %u servers) onto %u servers: %u "
		    "variables, cluster version 0x%016" PRIx64,
		    m->name, m->server_count, s->opts->server_num, rv.nvars, version);
out:
	if (marked) {
		rv.begin = false;
		ps_sched_service_call(s, restore_mark, &rv);
	}
	ps_sched_round_free(r);
	var_list_fini(&l);
	ps_placement_destroy(t);
	ps_placement_destroy(in.t);
	free(in.blob);
	free(rv.vars);
	ps_ckpt_meta_free(m);
}

/* ---- streaming export ----------------------------------------------------------------------- */

static void build_export(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *c, void *arg)
{
	c->sm_dense = (char *)(s->opts->sm_dense ? s->opts->sm_dense : "");
	c->sm_sparse = (char *)(s->opts->sm_sparse ? s->opts->sm_sparse : "");
	c->sm_hash = (char *)(s->opts->sm_hash ? s->opts->sm_hash : "");
}

void ps_sched_internal_export(struct ps_sched *s, struct sched_op_result *res)
{
	struct sched_round *r = NULL;
	char msg[1024] = "";
	int rc;

	snprintf(res->name, sizeof(res->name), "streaming-export");
	if (!all_live(s))
		return fail(res, PS_ENOT_READY, "not every server is live: an export needs all %u",
			    s->opts->server_num);
	rc = ps_sched_round(s, next_op_id(s), SCHED_CMD_EXPORT, build_export, NULL,
			    SCHED_CMD_LONG_MS, &r, msg, sizeof(msg));
	if (rc)
		fail(res, rc, "streaming export: %s", msg);
	for (uint32_t i = 0; r && i < r->n; i++) {
		res->rows += r->a[i].rows;
		res->bytes += r->a[i].bytes; /* deletions */
	}
	ps_sched_round_free(r);
}
