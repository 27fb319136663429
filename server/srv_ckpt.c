/*
 * The server's side of the scheduler's model operations (CkptCmd, docs/formats.md "Save and
 * restore in a cluster"): pause, save, resume, restore (prepare, commit, abort) and streaming
 * export, each answered with one CkptCmdResp.
 *
 * The control thread must keep heartbeating while a checkpoint is written or read, so the
 * long commands (SAVE, RESTORE_PREPARE, EXPORT) run on a job thread, which spreads the parts
 * over a few worker threads (the files are independent; a restore runs them twice: first every
 * variable's memory is mapped, then the variables are loaded) and writes an eventfd when it is
 * done; the control thread's poll loop then joins it and answers. Short commands (PAUSE, RESUME,
 * RESTORE_COMMIT, RESTORE_ABORT) are answered on the spot.
 *
 * Safety nets, because the scheduler may die at any point:
 *   - a PAUSE not followed by a SAVE or RESUME within its lease is undone (the server resumes
 *     by itself): workers never wait for a scheduler that is gone;
 *   - losing the control connection cancels a running job, drops anything staged and resumes
 *     (ps_srv_ckpt_reset); a save's files stay in the uncommitted folder, which the next save
 *     of that name removes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/server_internal.h"

#define PAUSE_ACK_TIMEOUT_MS   5000u  /* a thread acknowledges within one poll (<= 50 ms) */
#define PAUSE_LEASE_DEFAULT_MS 30000u /* a PAUSE without follow-up is undone after this */
#define MAX_WORKERS	       16u    /* files written or read at once */
#define MIN_WORKERS	       4u     /* ... at least (I/O overlaps even on one data thread) */
#define REPLY_TIMEOUT_MS       5000

enum ckpt_cmd {
	CMD_PAUSE = 1,
	CMD_SAVE = 2,
	CMD_RESUME = 3,
	CMD_RESTORE_PREPARE = 4,
	CMD_RESTORE_COMMIT = 5,
	CMD_RESTORE_ABORT = 6,
	CMD_EXPORT = 7,
};

/* One piece of a job: a part to save, or a variable to restore. */
struct unit {
	uint32_t var_id;
	uint64_t begin, end;
	const struct ps_ckpt_var *cv;  /* restore */
	struct ps_ckpt_part_desc desc; /* save: the file written */
	bool skip;		       /* save: not declared here yet, nothing written */
	int rc;
	char err[1024];
};

/* A streaming-model writer, one per distinct URL. */
struct sm_out {
	char url[1024];
	struct ps_sm_writer *w;
};

struct srv_ckpt {
	int efd; /* eventfd: the job thread is done */
	pthread_t tid;
	bool running;
	_Atomic bool cancel;

	/* the command the job answers */
	uint64_t op_id;
	uint32_t cmd;
	char dir[4096];
	struct unit *units;
	size_t nunits;
	_Atomic size_t next;
	_Atomic uint64_t rows, bytes;
	int status;
	char msg[2048];

	/* pause */
	bool paused;	   /* paused for a save (the lease runs until SAVE) */
	uint64_t pause_ns; /* when it began */
	uint64_t lease_ns; /* when an unfollowed PAUSE is undone */
	uint64_t pause_us; /* SAVE: how long requests were held */

	/* restore */
	struct ps_ckpt_meta *meta; /* the checkpoint being staged */
	bool creating;		   /* the job maps the staged parts (first pass) */
	bool staged;		   /* a prepared restore waits for commit or abort */

	/* streaming export */
	char sm_url[3][1024]; /* per kind dense, sparse, hash (0-terminated: off) */
	struct sm_out out[3];
	uint32_t nout;
	uint64_t deletes;
};

int ps_srv_ckpt_create(struct ps_srv *s)
{
	struct srv_ckpt *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (k->efd < 0) {
		int rc = -errno;

		free(k);
		return rc;
	}
	s->ck = k;
	return 0;
}

int ps_srv_ckpt_fd(const struct ps_srv *s)
{
	return s->ck->efd;
}

static void job_join(struct srv_ckpt *k)
{
	uint64_t v;

	if (!k->running)
		return;
	pthread_join(k->tid, NULL);
	k->running = false;
	if (read(k->efd, &v, sizeof(v)) < 0) {
		/* Nothing to consume: the thread was joined before it signalled. */
	}
}

static void units_free(struct srv_ckpt *k)
{
	free(k->units);
	k->units = NULL;
	k->nunits = 0;
}

void ps_srv_ckpt_reset(struct ps_srv *s, const char *why)
{
	struct srv_ckpt *k = s->ck;
	bool busy = k->running || k->paused || k->staged;

	if (k->running)
		atomic_store(&k->cancel, true);
	job_join(k);
	atomic_store(&k->cancel, false);
	units_free(k);
	if (k->staged)
		ps_dp_stage_drop(s->dp);
	k->staged = false;
	ps_ckpt_meta_free(k->meta);
	k->meta = NULL;
	if (k->paused || ps_dp_is_paused(s->dp))
		ps_dp_resume(s->dp);
	k->paused = false;
	if (busy)
		ps_log_warn(SRV_LOG, "server %u: model operation abandoned (%s); serving as before",
			    s->opts->server_id, why);
}

void ps_srv_ckpt_destroy(struct ps_srv *s)
{
	struct srv_ckpt *k;

	if (!s || !s->ck)
		return;
	k = s->ck;
	ps_srv_ckpt_reset(s, "shutting down");
	for (uint32_t i = 0; i < k->nout; i++)
		ps_sm_writer_close(k->out[i].w);
	close(k->efd);
	free(k);
	s->ck = NULL;
}

/* ---- replies -------------------------------------------------------------------------------- */

static int reply(struct ps_srv *s, uint64_t op_id, uint32_t cmd, int status, const char *msg,
		 const struct unit *parts, size_t nparts, uint64_t rows, uint64_t bytes,
		 uint64_t pause_us)
{
	Psplus__Ctl__CkptCmdResp r = PSPLUS__CTL__CKPT_CMD_RESP__INIT;
	Psplus__Ctl__CkptPartDone *pd = NULL, **pp = NULL;
	ps_ctl_env_t env;
	int rc;

	if (nparts) {
		pd = calloc(nparts, sizeof(*pd));
		pp = calloc(nparts, sizeof(*pp));
		if (!pd || !pp) {
			free(pd);
			free(pp);
			status = -ENOMEM;
			msg = "server out of memory";
			nparts = 0;
		}
	}
	for (size_t i = 0; i < nparts; i++) {
		const struct ps_ckpt_part_desc *d = &parts[i].desc;

		psplus__ctl__ckpt_part_done__init(&pd[i]);
		pd[i].var_id = parts[i].var_id;
		pd[i].file = (char *)d->file;
		pd[i].begin = d->begin;
		pd[i].end = d->end;
		pd[i].rows = d->rows;
		pd[i].size = d->size;
		pd[i].crc32c = d->crc32c;
		pd[i].step = d->state.step;
		pd[i].beta1_power = d->state.beta1_power;
		pd[i].beta2_power = d->state.beta2_power;
		pp[i] = &pd[i];
	}
	r.op_id = op_id;
	r.cmd = cmd;
	r.status = status;
	r.message = (char *)(msg ? msg : "");
	r.n_parts = nparts;
	r.parts = pp;
	r.rows = rows;
	r.bytes = bytes;
	r.pause_us = pause_us;
	ps_ctl_env_init(&env, ++s->next_request_id);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CKPT_CMD_RESP;
	env.ckpt_cmd_resp = &r;
	rc = ps_ctl_send(s->ctl_fd, &env, REPLY_TIMEOUT_MS, -1);
	free(pd);
	free(pp);
	if (rc)
		ps_log_warn(SRV_LOG, "server %u: cannot answer the scheduler: %s",
			    s->opts->server_id, ps_strerror(rc));
	return rc ? PS_EPEER_LOST : 0;
}

/* ---- the job thread ------------------------------------------------------------------------- */

static void unit_run(struct ps_srv *s, struct unit *u)
{
	struct srv_ckpt *k = s->ck;
	uint64_t rows = 0, bytes = 0;

	if (k->cmd == CMD_SAVE) {
		u->rc = ps_dp_save_part(s->dp, k->dir, u->var_id, u->begin, u->end, &k->cancel,
					&u->desc, u->err, sizeof(u->err));
		/* Declared on the scheduler but its DECLARE has not reached every thread (it
		 * waits behind the pause): it has no rows yet, and the scheduler leaves it out. */
		if (u->rc == PS_EUNKNOWN_VAR) {
			ps_log_info(SRV_LOG, "server %u: save: %s; left out", s->opts->server_id,
				    u->err);
			u->skip = true;
			u->rc = 0;
		}
		rows = u->desc.rows;
		bytes = u->desc.size;
	} else if (k->creating) {
		u->rc = ps_dp_stage_create(s->dp, u->var_id, k->dir, u->cv, u->err, sizeof(u->err));
	} else {
		u->rc = ps_dp_stage_load(s->dp, u->var_id, k->dir, u->cv, &k->cancel, &rows, &bytes,
					 u->err, sizeof(u->err));
	}
	atomic_fetch_add(&k->rows, rows);
	atomic_fetch_add(&k->bytes, bytes);
	/* The first failure stops the others: the operation is lost anyway. */
	if (u->rc)
		atomic_store(&k->cancel, true);
}

static void *worker(void *arg)
{
	struct ps_srv *s = arg;
	struct srv_ckpt *k = s->ck;
	size_t i;

	while ((i = atomic_fetch_add(&k->next, 1)) < k->nunits) {
		if (atomic_load(&k->cancel)) {
			k->units[i].rc = -ECANCELED;
			continue;
		}
		unit_run(s, &k->units[i]);
	}
	return NULL;
}

/* Run every unit on a few threads; the job's status is the first real failure. */
static void run_units(struct ps_srv *s)
{
	struct srv_ckpt *k = s->ck;
	uint32_t n = ps_dp_threads(s->dp), started = 0;
	pthread_t tids[MAX_WORKERS];

	if (n < MIN_WORKERS)
		n = MIN_WORKERS;
	if (n > MAX_WORKERS)
		n = MAX_WORKERS;
	if (n > k->nunits)
		n = (uint32_t)k->nunits;
	atomic_store(&k->next, 0);
	for (uint32_t i = 0; i < n; i++)
		if (!pthread_create(&tids[started], NULL, worker, s))
			started++;
	if (!started)
		worker(s); /* no thread to be had: do it here */
	for (uint32_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	k->status = 0;
	for (size_t i = 0; i < k->nunits; i++) {
		struct unit *u = &k->units[i];

		if (!u->rc || (u->rc == -ECANCELED && k->status))
			continue;
		if (!k->status || k->status == -ECANCELED) {
			k->status = u->rc;
			snprintf(k->msg, sizeof(k->msg), "%s",
				 u->err[0] ? u->err : ps_strerror(u->rc));
		}
	}
}

/* Open (once) the writer of @url; its index in k->out, or a negative code. */
static int sm_writer(struct ps_srv *s, const char *url, char *err, size_t errlen)
{
	struct srv_ckpt *k = s->ck;
	struct ps_sm_writer_opts o = {0};
	uint32_t i;
	int rc;

	for (i = 0; i < k->nout; i++)
		if (!strcmp(k->out[i].url, url))
			break;
	if (i == k->nout) {
		snprintf(k->out[i].url, sizeof(k->out[i].url), "%s", url);
		k->out[i].w = NULL;
		k->nout++;
	}
	if (!k->out[i].w) {
		/* Writers sharing a folder need distinct ids: three URLs per server at most. */
		o.writer_id = (uint64_t)s->opts->server_id * 3 + i;
		rc = ps_sm_open_writer(url, &o, &k->out[i].w, err, errlen);
		if (rc)
			return rc;
	}
	return (int)i;
}

static void job_export(struct ps_srv *s)
{
	struct srv_ckpt *k = s->ck;
	struct ps_sm_writer *ws[3] = {NULL};
	int kind_writer[4] = {-1, -1, -1, -1}, rc;
	const char *url_of[4];
	uint64_t rows = 0, dels = 0;
	char err[1024] = "";

	url_of[PS_VAR_DENSE] = k->sm_url[0];
	url_of[PS_VAR_SPARSE] = k->sm_url[1];
	url_of[PS_VAR_HASH64] = url_of[PS_VAR_HASH128] = k->sm_url[2];
	k->status = 0;
	for (int kind = 0; kind < 4; kind++) {
		if (!url_of[kind][0])
			continue;
		rc = sm_writer(s, url_of[kind], err, sizeof(err));
		if (rc < 0) {
			k->status = rc;
			snprintf(k->msg, sizeof(k->msg), "%s", err);
			return;
		}
		kind_writer[kind] = rc;
		ws[rc] = k->out[rc].w;
	}
	rc = ps_dp_pause(s->dp, PAUSE_ACK_TIMEOUT_MS);
	if (!rc)
		rc = ps_dp_export(s->dp, ws, kind_writer, &rows, &dels, err, sizeof(err));
	for (uint32_t i = 0; i < k->nout; i++) {
		bool ok;

		if (!ws[i])
			continue;
		ok = !rc && !ps_sm_writer_commit(ws[i]);
		if (!ok && !rc) {
			rc = -EIO;
			snprintf(err, sizeof(err), "streaming model %.300s: %.600s", k->out[i].url,
				 ps_sm_writer_errmsg(ws[i]));
		}
		if (ps_dp_is_paused(s->dp))
			ps_dp_export_done(s->dp, i, ok);
		if (!ok) {
			/* Drop what was written and not committed; reopened next time. */
			ps_sm_writer_close(ws[i]);
			k->out[i].w = NULL;
		}
	}
	ps_dp_resume(s->dp);
	k->status = rc;
	if (rc)
		snprintf(k->msg, sizeof(k->msg), "%s", err[0] ? err : ps_strerror(rc));
	atomic_store(&k->rows, rows);
	k->deletes = dels;
}

static void *job_main(void *arg)
{
	struct ps_srv *s = arg;
	struct srv_ckpt *k = s->ck;
	uint64_t one = 1;

	if (k->cmd == CMD_EXPORT) {
		job_export(s);
	} else if (k->cmd == CMD_RESTORE_PREPARE) {
		/* Every variable's memory is mapped before any is loaded (ps_dp_stage_create()). */
		k->creating = true;
		run_units(s);
		k->creating = false;
		if (!k->status)
			run_units(s);
	} else {
		run_units(s);
		if (k->cmd == CMD_SAVE) {
			/* The instant is fixed (every server paused before anyone wrote): resume as
			 * soon as this server's rows are on disk, whatever the others do. */
			ps_dp_resume(s->dp);
			k->pause_us = (ps_clock_now_ns() - k->pause_ns) / 1000;
		}
	}
	if (write(k->efd, &one, sizeof(one)) < 0)
		ps_log_err(SRV_LOG, "eventfd: %s", strerror(errno));
	return NULL;
}

static int job_start(struct ps_srv *s)
{
	struct srv_ckpt *k = s->ck;
	int rc;

	atomic_store(&k->cancel, false);
	atomic_store(&k->rows, 0);
	atomic_store(&k->bytes, 0);
	k->msg[0] = 0;
	k->status = 0;
	rc = -pthread_create(&k->tid, NULL, job_main, s);
	if (rc)
		return rc;
	k->running = true;
	return 0;
}

int ps_srv_ckpt_on_event(struct ps_srv *s)
{
	struct srv_ckpt *k = s->ck;
	int rc = 0;

	if (!k->running)
		return 0;
	job_join(k);
	switch (k->cmd) {
	case CMD_SAVE: {
		size_t n = 0;

		for (size_t i = 0; i < k->nunits; i++)
			if (!k->units[i].skip)
				k->units[n++] = k->units[i];
		k->paused = false;
		ps_log_info(SRV_LOG,
			    "server %u: save %s: %zu parts, %" PRIu64 " rows, %" PRIu64
			    " bytes, pushes held %" PRIu64 " us",
			    s->opts->server_id, k->status ? ps_err_name(k->status) : "done",
			    k->nunits, atomic_load(&k->rows), atomic_load(&k->bytes), k->pause_us);
		rc = reply(s, k->op_id, k->cmd, k->status, k->msg, k->status ? NULL : k->units,
			   k->status ? 0 : n, atomic_load(&k->rows), atomic_load(&k->bytes),
			   k->pause_us);
		break;
	}
	case CMD_RESTORE_PREPARE:
		if (k->status) {
			ps_dp_stage_drop(s->dp);
			k->staged = false;
			ps_log_warn(SRV_LOG, "server %u: restore refused: %s", s->opts->server_id,
				    k->msg);
		} else {
			ps_log_info(SRV_LOG,
				    "server %u: restore prepared: %zu variables, %" PRIu64
				    " rows, %" PRIu64 " bytes read and verified",
				    s->opts->server_id, k->nunits, atomic_load(&k->rows),
				    atomic_load(&k->bytes));
		}
		rc = reply(s, k->op_id, k->cmd, k->status, k->msg, NULL, 0, atomic_load(&k->rows),
			   atomic_load(&k->bytes), 0);
		break;
	default: /* CMD_EXPORT */
		ps_log_info(SRV_LOG,
			    "server %u: streaming export %s: %" PRIu64 " rows, %" PRIu64
			    " deletions",
			    s->opts->server_id, k->status ? ps_err_name(k->status) : "done",
			    atomic_load(&k->rows), k->deletes);
		rc = reply(s, k->op_id, k->cmd, k->status, k->msg, NULL, 0, atomic_load(&k->rows),
			   k->deletes, 0);
		break;
	}
	units_free(k);
	return rc;
}

/* ---- commands ------------------------------------------------------------------------------- */

/* The variables of a SAVE: one unit per part this server holds. */
static int plan_save(struct srv_ckpt *k, const Psplus__Ctl__CkptCmd *c)
{
	size_t n = 0;

	for (size_t i = 0; i < c->n_vars; i++)
		n += c->vars[i]->n_parts;
	k->units = calloc(n ? n : 1, sizeof(*k->units));
	if (!k->units)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_vars; i++) {
		for (size_t j = 0; j < c->vars[i]->n_parts; j++) {
			struct unit *u = &k->units[k->nunits++];

			u->var_id = c->vars[i]->id;
			u->begin = c->vars[i]->parts[j]->begin;
			u->end = c->vars[i]->parts[j]->end;
		}
	}
	return 0;
}

/* The variables of a RESTORE_PREPARE: staged here, loaded by the job (one unit each). */
static int plan_restore(struct ps_srv *s, const Psplus__Ctl__CkptCmd *c, char *msg, size_t len)
{
	struct srv_ckpt *k = s->ck;
	int rc;

	rc = ps_ckpt_meta_load(c->root, c->name, &k->meta, msg, len);
	if (rc)
		return rc;
	k->units = calloc(c->n_vars ? c->n_vars : 1, sizeof(*k->units));
	if (!k->units)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_vars; i++) {
		const Psplus__Ctl__CkptVar *cv = c->vars[i];
		struct ps_dp_declare d;
		struct unit *u;

		if (!cv->n_parts)
			continue;
		if (cv->n_parts != 1) {
			snprintf(msg, len,
				 "variable %u ('%s'): %zu parts on this server; a server holds one "
				 "part per variable",
				 cv->id, cv->name, cv->n_parts);
			return -EINVAL;
		}
		if (cv->spec.len != PS_DP_DECLARE_BYTES ||
		    ps_dp_declare_decode(cv->spec.data, cv->spec.len, &d)) {
			snprintf(msg, len, "variable %u ('%s'): malformed spec", cv->id, cv->name);
			return PS_EBAD_MESSAGE;
		}
		d.part_begin = cv->parts[0]->begin;
		d.part_end = cv->parts[0]->end;
		d.num_workers = cv->num_workers;
		snprintf(d.name, sizeof(d.name), "%s", cv->name);
		u = &k->units[k->nunits++];
		u->var_id = cv->id;
		u->cv = ps_ckpt_meta_find_var(k->meta, cv->id);
		if (!u->cv) {
			snprintf(msg, len, "checkpoint '%s' has no variable %u ('%s')", c->name,
				 cv->id, cv->name);
			return PS_EUNKNOWN_VAR;
		}
		rc = ps_dp_stage_var(s->dp, cv->id, &d, msg, len);
		if (rc)
			return rc;
	}
	return 0;
}

static int on_pause(struct ps_srv *s, const Psplus__Ctl__CkptCmd *c)
{
	struct srv_ckpt *k = s->ck;
	uint32_t lease = c->pause_lease_ms ? c->pause_lease_ms : PAUSE_LEASE_DEFAULT_MS;
	int rc;

	rc = ps_dp_pause(s->dp, PAUSE_ACK_TIMEOUT_MS);
	if (rc) {
		ps_dp_resume(s->dp);
		return reply(s, c->op_id, c->cmd, rc, "the data-path threads did not pause in time",
			     NULL, 0, 0, 0, 0);
	}
	k->paused = true;
	k->pause_ns = ps_clock_now_ns();
	k->lease_ns = k->pause_ns + (uint64_t)lease * PS_NSEC_PER_MSEC;
	ps_log_debug(SRV_LOG, "server %u: paused (op %" PRIu64 ")", s->opts->server_id, c->op_id);
	return reply(s, c->op_id, c->cmd, 0, "", NULL, 0, 0, 0, 0);
}

static int on_save(struct ps_srv *s, const Psplus__Ctl__CkptCmd *c)
{
	struct srv_ckpt *k = s->ck;
	char msg[512];
	int rc;

	if (!k->paused) {
		/* The lease ran out (or no PAUSE came): the instant is lost, refuse. */
		return reply(s, c->op_id, c->cmd, PS_ETIMEOUT,
			     "not paused (the pause lease expired before the save)", NULL, 0, 0, 0,
			     0);
	}
	rc = ps_ckpt_dir(c->root, c->name, k->dir, sizeof(k->dir));
	if (!rc)
		rc = plan_save(k, c);
	if (!rc) {
		k->op_id = c->op_id;
		k->cmd = c->cmd;
		rc = job_start(s);
	}
	if (rc) {
		units_free(k);
		ps_dp_resume(s->dp);
		k->paused = false;
		snprintf(msg, sizeof(msg), "cannot start the save: %s", ps_strerror(rc));
		return reply(s, c->op_id, c->cmd, rc, msg, NULL, 0, 0, 0, 0);
	}
	return 0;
}

static int on_prepare(struct ps_srv *s, const Psplus__Ctl__CkptCmd *c)
{
	struct srv_ckpt *k = s->ck;
	char msg[2048] = "";
	int rc;

	if (k->staged) {
		ps_dp_stage_drop(s->dp);
		k->staged = false;
	}
	ps_ckpt_meta_free(k->meta);
	k->meta = NULL;
	rc = ps_ckpt_dir(c->root, c->name, k->dir, sizeof(k->dir));
	if (!rc)
		rc = plan_restore(s, c, msg, sizeof(msg));
	if (!rc) {
		k->staged = true;
		k->op_id = c->op_id;
		k->cmd = c->cmd;
		rc = job_start(s);
	}
	if (rc) {
		units_free(k);
		ps_dp_stage_drop(s->dp);
		k->staged = false;
		if (!msg[0])
			snprintf(msg, sizeof(msg), "cannot prepare the restore: %s",
				 ps_strerror(rc));
		return reply(s, c->op_id, c->cmd, rc, msg, NULL, 0, 0, 0, 0);
	}
	return 0;
}

static int on_commit(struct ps_srv *s, const Psplus__Ctl__CkptCmd *c)
{
	struct srv_ckpt *k = s->ck;
	int rc;

	if (!k->staged)
		return reply(s, c->op_id, c->cmd, -EINVAL, "no restore is prepared", NULL, 0, 0, 0,
			     0);
	rc = ps_dp_stage_commit(s->dp, c->cluster_version, PAUSE_ACK_TIMEOUT_MS);
	if (rc)
		return reply(s, c->op_id, c->cmd, rc, "cannot switch to the restored variables",
			     NULL, 0, 0, 0, 0);
	k->staged = false;
	ps_ckpt_meta_free(k->meta);
	k->meta = NULL;
	s->cluster_version = c->cluster_version;
	ps_log_info(SRV_LOG,
		    "server %u: restored variables in service, cluster version 0x%016" PRIx64,
		    s->opts->server_id, c->cluster_version);
	rc = reply(s, c->op_id, c->cmd, 0, "", NULL, 0, 0, 0, 0);
	/* The replaced model's memory goes back after the answer: nobody waits for it. */
	ps_dp_free_retired(s->dp);
	return rc;
}

static void url_pick(char *out, size_t len, const char *mine, const char *sched)
{
	snprintf(out, len, "%s", mine && *mine ? mine : sched ? sched : "");
}

int ps_srv_ckpt_on_cmd(struct ps_srv *s, const ps_ctl_env_t *in)
{
	const Psplus__Ctl__CkptCmd *c = in->ckpt_cmd;
	struct srv_ckpt *k = s->ck;
	int rc;

	if (k->running && c->cmd != CMD_RESUME && c->cmd != CMD_RESTORE_ABORT)
		return reply(s, c->op_id, c->cmd, -EBUSY, "another model operation is running",
			     NULL, 0, 0, 0, 0);
	switch (c->cmd) {
	case CMD_PAUSE:
		return on_pause(s, c);
	case CMD_SAVE:
		return on_save(s, c);
	case CMD_RESUME:
		/* A running save resumes when its writers stop; never under their feet. */
		if (k->running)
			atomic_store(&k->cancel, true);
		else if (k->paused)
			ps_dp_resume(s->dp);
		k->paused = false;
		return reply(s, c->op_id, c->cmd, 0, "", NULL, 0, 0, 0, 0);
	case CMD_RESTORE_PREPARE:
		return on_prepare(s, c);
	case CMD_RESTORE_COMMIT:
		return on_commit(s, c);
	case CMD_RESTORE_ABORT:
		if (k->running) {
			atomic_store(&k->cancel, true);
			job_join(k);
			units_free(k);
		}
		if (k->staged)
			ps_dp_stage_drop(s->dp);
		k->staged = false;
		ps_ckpt_meta_free(k->meta);
		k->meta = NULL;
		return reply(s, c->op_id, c->cmd, 0, "", NULL, 0, 0, 0, 0);
	case CMD_EXPORT:
		url_pick(k->sm_url[0], sizeof(k->sm_url[0]), s->opts->sm_dense, c->sm_dense);
		url_pick(k->sm_url[1], sizeof(k->sm_url[1]), s->opts->sm_sparse, c->sm_sparse);
		url_pick(k->sm_url[2], sizeof(k->sm_url[2]), s->opts->sm_hash, c->sm_hash);
		k->op_id = c->op_id;
		k->cmd = c->cmd;
		k->deletes = 0;
		rc = job_start(s);
		if (rc)
			return reply(s, c->op_id, c->cmd, rc, "cannot start the export", NULL, 0, 0,
				     0, 0);
		return 0;
	default:
		return reply(s, c->op_id, c->cmd, -EINVAL, "unknown model command", NULL, 0, 0, 0,
			     0);
	}
}

int ps_srv_ckpt_timeout_ms(const struct ps_srv *s)
{
	const struct srv_ckpt *k = s->ck;

	if (!k->paused || k->running)
		return -1;
	return ps_clock_remaining_ms(k->lease_ns);
}

void ps_srv_ckpt_tick(struct ps_srv *s)
{
	struct srv_ckpt *k = s->ck;

	if (k->paused && !k->running && ps_clock_now_ns() >= k->lease_ns) {
		ps_dp_resume(s->dp);
		k->paused = false;
		ps_log_warn(SRV_LOG,
			    "server %u: paused for a save that never came; resumed by itself",
			    s->opts->server_id);
	}
}
