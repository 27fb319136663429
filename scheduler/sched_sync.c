/*
 * Workers' steps and barriers (StepReq, BarrierReq).
 *
 * The job is a table of num_workers entries: the highest step each worker ended and the
 * highest barrier it reached. A request updates its worker's entry, then is answered at once
 * if its condition holds, or held (a struct sched_wait on its connection) until a later update
 * makes it hold:
 *
 *   bounded staleness  step s may go on when every worker ended step s - staleness (a worker
 *                      never more than staleness steps ahead of the slowest)
 *   synchronous        step s is over when every worker ended step s
 *   barrier n          every worker reached barrier n
 *
 * Nothing blocks the service thread: every update re-checks the held replies of every
 * connection (a job has few workers, each with at most one call in flight). Entries only grow
 * (max), so a retried request is harmless. A connection that goes away takes its held replies
 * with it and unbinds its workers, whose entries stay (a worker that finished its last step and
 * left must not hold the others back); when no worker is left the job is forgotten, so the next
 * job starts from step 0.
 *
 * Checkpoints. A save first holds every reply (steps_held) until each worker still connected
 * waits in step_end or a barrier: then no push of the job is in flight, and the save's pause of
 * the servers cuts at a step boundary (sched_ckpt.c). A restore answers every held reply with
 * PS_ESTALE_VERSION and forgets the job: the steps start again from the restored model.
 *
 * Service thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "common/log.h"
#include "scheduler/sched_internal.h"

/* A reply held until its condition holds. */
struct sched_wait {
	struct sched_wait *next;
	uint64_t request_id;
	bool barrier;	/* BarrierReq (else StepReq) */
	int64_t target; /* step: the lowest last_step that satisfies it; barrier: seq */
};

static void job_free(struct ps_sched *s)
{
	if (!s->job)
		return;
	free(s->job->w);
	free(s->job);
	s->job = NULL;
}

static int job_get(struct ps_sched *s, uint32_t num_workers, uint32_t worker_id,
		   struct sched_job **out, char *msg, size_t msglen)
{
	struct sched_job *j = s->job;

	if (!num_workers || num_workers > SCHED_MAX_WORKERS || worker_id >= num_workers) {
		snprintf(msg, msglen,
			 "worker %u of %u: need 1 <= num_workers <= %u and "
			 "worker_id < num_workers",
			 worker_id, num_workers, SCHED_MAX_WORKERS);
		return -EINVAL;
	}
	if (j && j->num_workers != num_workers) {
		snprintf(msg, msglen,
			 "worker %u says the job has %u workers; the running job has %u", worker_id,
			 num_workers, j->num_workers);
		return -EINVAL;
	}
	if (!j) {
		j = calloc(1, sizeof(*j));
		if (j)
			j->w = calloc(num_workers, sizeof(*j->w));
		if (!j || !j->w) {
			free(j);
			snprintf(msg, msglen, "scheduler out of memory");
			return -ENOMEM;
		}
		j->num_workers = num_workers;
		for (uint32_t i = 0; i < num_workers; i++)
			j->w[i].last_step = -1;
		s->job = j;
		ps_log_info(SCHED_LOG, "job of %u workers started", num_workers);
	}
	*out = j;
	return 0;
}

static void bind_worker(struct sched_job *j, uint32_t id, const struct sched_conn *c)
{
	if (!j->w[id].conn)
		j->present++;
	j->w[id].conn = c;
}

static int64_t min_step(const struct sched_job *j)
{
	int64_t m = INT64_MAX;

	for (uint32_t i = 0; i < j->num_workers; i++)
		if (j->w[i].last_step < m)
			m = j->w[i].last_step;
	return m;
}

static uint64_t min_barrier(const struct sched_job *j)
{
	uint64_t m = UINT64_MAX;

	for (uint32_t i = 0; i < j->num_workers; i++)
		if (j->w[i].last_barrier < m)
			m = j->w[i].last_barrier;
	return m;
}

static bool wait_done(const struct sched_job *j, const struct sched_wait *w)
{
	return w->barrier ? min_barrier(j) >= (uint64_t)w->target : min_step(j) >= w->target;
}

static void reply(struct ps_sched *s, struct sched_conn *c, uint64_t req_id, bool barrier,
		  int status, const char *msg)
{
	Psplus__Ctl__StepResp sr = PSPLUS__CTL__STEP_RESP__INIT;
	Psplus__Ctl__BarrierResp br = PSPLUS__CTL__BARRIER_RESP__INIT;
	ps_ctl_env_t out;

	ps_ctl_env_init(&out, req_id);
	if (barrier) {
		br.status = status;
		br.message = (char *)msg;
		out.body_case = PSPLUS__CTL__ENVELOPE__BODY_BARRIER_RESP;
		out.barrier_resp = &br;
	} else {
		sr.status = status;
		sr.message = (char *)msg;
		out.body_case = PSPLUS__CTL__ENVELOPE__BODY_STEP_RESP;
		out.step_resp = &sr;
	}
	ps_sched_conn_send(s, c, &out);
}

/* Answer every held reply whose condition holds now. */
static void release_waits(struct ps_sched *s)
{
	struct sched_conn *c;

	if (!s->job || s->steps_held)
		return;
	for (c = s->conns.next; c != &s->conns; c = c->next) {
		struct sched_wait **pp = &c->waits, *w;

		while ((w = *pp)) {
			if (!wait_done(s->job, w)) {
				pp = &w->next;
				continue;
			}
			*pp = w->next;
			reply(s, c, w->request_id, w->barrier, 0, "");
			free(w);
		}
	}
}

/* Reply now if @target is reached, else hold the reply on @c. */
static void answer_or_hold(struct ps_sched *s, struct sched_conn *c, uint64_t req_id, bool barrier,
			   int64_t target)
{
	struct sched_wait *w;

	w = calloc(1, sizeof(*w));
	if (!w) {
		reply(s, c, req_id, barrier, -ENOMEM, "scheduler out of memory");
		return;
	}
	w->request_id = req_id;
	w->barrier = barrier;
	w->target = target;
	w->next = c->waits;
	c->waits = w;
	/* The update that came with this request may release it and others. */
	release_waits(s);
}

static bool authorized(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env,
		       const ProtobufCBinaryData *tok)
{
	if (ps_sched_authorized(s, c, tok))
		return true;
	ps_log_warn(SCHED_LOG, "%s from %s: auth token mismatch", ps_ctl_body_name(env), c->peer);
	ps_sched_reply_status(s, c, env->request_id, -EACCES,
			      "authentication failed (auth token mismatch)");
	ps_sched_conn_close_after(s, c);
	return false;
}

void ps_sched_on_step(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__StepReq *rq = env->step_req;
	struct sched_job *j;
	char msg[256] = "";
	int64_t step, target;
	int rc;

	if (!authorized(s, c, env, &rq->auth_token))
		return;
	if (rq->mode == PS_SYNC_ASYNC) {
		reply(s, c, env->request_id, false, 0, "");
		return;
	}
	if (rq->step > INT64_MAX / 2 || (rq->mode != PS_SYNC_BOUNDED && rq->mode != PS_SYNC_SYNC)) {
		snprintf(msg, sizeof(msg),
			 "worker %u: bad step request (mode %u, step %" PRIu64 ")", rq->worker_id,
			 rq->mode, rq->step);
		rc = -EINVAL;
		goto fail;
	}
	rc = job_get(s, rq->num_workers, rq->worker_id, &j, msg, sizeof(msg));
	if (rc)
		goto fail;
	if (j->mode && (j->mode != rq->mode ||
			(rq->mode == PS_SYNC_BOUNDED && j->staleness != rq->staleness))) {
		snprintf(msg, sizeof(msg),
			 "worker %u: mode %u (staleness %u) differs from the job's mode %u "
			 "(staleness %u); all workers must agree",
			 rq->worker_id, rq->mode, rq->staleness, j->mode, j->staleness);
		rc = -EINVAL;
		goto fail;
	}
	j->mode = rq->mode;
	j->staleness = rq->staleness;
	bind_worker(j, rq->worker_id, c);
	step = (int64_t)rq->step;
	if (j->w[rq->worker_id].last_step < step)
		j->w[rq->worker_id].last_step = step;
	target = rq->mode == PS_SYNC_SYNC ? step : step - (int64_t)rq->staleness;
	answer_or_hold(s, c, env->request_id, false, target);
	return;
fail:
	ps_log_warn(SCHED_LOG, "step request from %s refused: %s", c->peer, msg);
	reply(s, c, env->request_id, false, rc, msg);
}

void ps_sched_on_barrier(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__BarrierReq *rq = env->barrier_req;
	struct sched_job *j;
	char msg[256] = "";
	int rc;

	if (!authorized(s, c, env, &rq->auth_token))
		return;
	if (!rq->seq || rq->seq > INT64_MAX) {
		snprintf(msg, sizeof(msg),
			 "worker %u: barrier numbers start at 1 (got %" PRIu64 ")", rq->worker_id,
			 rq->seq);
		rc = -EINVAL;
		goto fail;
	}
	rc = job_get(s, rq->num_workers, rq->worker_id, &j, msg, sizeof(msg));
	if (rc)
		goto fail;
	bind_worker(j, rq->worker_id, c);
	if (j->w[rq->worker_id].last_barrier < rq->seq)
		j->w[rq->worker_id].last_barrier = rq->seq;
	answer_or_hold(s, c, env->request_id, true, (int64_t)rq->seq);
	return;
fail:
	ps_log_warn(SCHED_LOG, "barrier request from %s refused: %s", c->peer, msg);
	reply(s, c, env->request_id, true, rc, msg);
}

void ps_sched_sync_conn_lost(struct ps_sched *s, struct sched_conn *c)
{
	struct sched_job *j = s->job;

	while (c->waits) {
		struct sched_wait *w = c->waits;

		c->waits = w->next;
		free(w);
	}
	if (!j)
		return;
	for (uint32_t i = 0; i < j->num_workers; i++) {
		if (j->w[i].conn == c) {
			j->w[i].conn = NULL;
			j->present--;
		}
	}
	if (!j->present) {
		ps_log_info(SCHED_LOG, "every worker of the job of %u has left; steps restart at 0",
			    j->num_workers);
		job_free(s);
	}
}

void ps_sched_sync_free(struct ps_sched *s)
{
	job_free(s);
}

bool ps_sched_sync_quiet(struct ps_sched *s)
{
	const struct sched_conn *c;
	uint32_t waiting = 0;

	/* Without step_end calls there is no boundary to wait for (Hogwild jobs). */
	if (!s->job || !s->job->mode)
		return true;
	for (c = s->conns.next; c != &s->conns; c = c->next)
		for (const struct sched_wait *w = c->waits; w; w = w->next)
			waiting++;
	/* Each worker has at most one call in flight: one held reply per present worker. */
	return waiting >= s->job->present;
}

void ps_sched_sync_release(struct ps_sched *s)
{
	release_waits(s);
}

void ps_sched_sync_reset(struct ps_sched *s, int status, const char *msg)
{
	struct sched_conn *c;

	for (c = s->conns.next; c != &s->conns; c = c->next) {
		while (c->waits) {
			struct sched_wait *w = c->waits;

			c->waits = w->next;
			reply(s, c, w->request_id, w->barrier, status, msg);
			free(w);
		}
	}
	if (s->job)
		ps_log_info(SCHED_LOG, "synchronisation reset: the job of %u workers starts again",
			    s->job->num_workers);
	job_free(s);
}
