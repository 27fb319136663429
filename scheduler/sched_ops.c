/*
 * MainLoop (seed: SchedulerImpl::Main / MainLoop with op_code_, op_checkpoint_ and op_cb_):
 * model operations - save, restore, streaming export - one at a time.
 *
 * Who does what:
 *   - service thread: a ModelOpReq is queued here (op_code, the name, and the requester as
 *     op_cb_: its connection id and request id), or refused at once with PS_EOP_IN_PROGRESS
 *     when an operation is queued or running. It also sends every command to the servers and
 *     records their answers, since it owns the connections.
 *   - main thread: after WaitForServers, restores the latest checkpoint under -cp, then waits
 *     for an operation (or the streaming period), runs it (sched_ckpt.c), and calls the
 *     requester's callback: the ModelOpResp goes back on the requester's connection if it is
 *     still open.
 *
 * The main thread never touches a connection or the variable table itself: it asks the
 * service thread through ps_sched_service_call() (a queue and an eventfd in the service's
 * epoll set) and waits for the call to be done. A command round (ps_sched_round) is one such
 * call that sends a CkptCmd to every live server, then a wait, under the lock, for one
 * CkptCmdResp from each, a server lost (its registration gone or replaced), the timeout or
 * shutdown.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "scheduler/sched_internal.h"

/* How often a waiting main thread looks at liveness and the clock. */
#define TICK_MS 100u

/*
 * Random rather than a counter, so a restarted scheduler (or a restore) never reissues a
 * version that servers of an earlier life still hold.
 */
int ps_sched_random_version(uint64_t *out)
{
	uint64_t v = 0;
	ssize_t n;

	while (!v) {
		n = getrandom(&v, sizeof(v), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(v))
			return n < 0 ? -errno : -EIO;
	}
	*out = v;
	return 0;
}

/* ---- calls from the main thread ------------------------------------------------------------- */

int ps_sched_service_call(struct ps_sched *s, void (*fn)(struct ps_sched *s, void *arg), void *arg)
{
	struct sched_call call = {.fn = fn, .arg = arg}, **pp;
	uint64_t one = 1;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (s->service_done) {
		pthread_mutex_unlock(&s->lock);
		return PS_ESHUTDOWN;
	}
	for (pp = &s->calls; *pp; pp = &(*pp)->next)
		;
	*pp = &call;
	pthread_mutex_unlock(&s->lock);
	if (write(s->call_fd, &one, sizeof(one)) < 0)
		ps_log_err(SCHED_LOG, "eventfd: %s", strerror(errno));
	pthread_mutex_lock(&s->lock);
	while (!call.done)
		ps_sched_cond_wait_until(s, ps_clock_deadline_ms(TICK_MS));
	/* A call the service thread failed at its exit did not run. */
	if (!call.fn)
		rc = PS_ESHUTDOWN;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void ps_sched_service_calls_run(struct ps_sched *s)
{
	struct sched_call *list, *next;
	uint64_t v;

	if (read(s->call_fd, &v, sizeof(v)) < 0) {
		/* Nothing pending: the calls below were taken by an earlier wake-up. */
	}
	pthread_mutex_lock(&s->lock);
	list = s->calls;
	s->calls = NULL;
	pthread_mutex_unlock(&s->lock);
	for (; list; list = next) {
		next = list->next;
		list->fn(s, list->arg);
		pthread_mutex_lock(&s->lock);
		list->done = true;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
	}
}

void ps_sched_service_calls_fail(struct ps_sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->service_done = true;
	for (struct sched_call *c = s->calls; c; c = c->next) {
		c->fn = NULL;
		c->done = true;
	}
	s->calls = NULL;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* ---- command rounds ------------------------------------------------------------------------- */

void ps_sched_round_free(struct sched_round *r)
{
	if (!r)
		return;
	for (uint32_t i = 0; r->a && i < r->n; i++) {
		free(r->a[i].parts);
		free(r->a[i].part_var);
	}
	free(r->a);
	free(r);
}

struct send_arg {
	struct sched_round *r;
	void (*build)(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *cmd, void *arg);
	void *arg;
};

/* Service thread: one CkptCmd to every live server. */
static void round_send(struct ps_sched *s, void *arg)
{
	struct send_arg *sa = arg;
	struct sched_round *r = sa->r;

	for (uint32_t i = 0; i < r->n; i++) {
		Psplus__Ctl__CkptCmd cmd = PSPLUS__CTL__CKPT_CMD__INIT;
		struct sched_answer *a = &r->a[i];
		struct sched_conn *c;
		ps_ctl_env_t env;

		pthread_mutex_lock(&s->lock);
		c = s->slots[i].state == SLOT_LIVE ? (struct sched_conn *)s->slots[i].conn : NULL;
		pthread_mutex_unlock(&s->lock);
		if (!c || c->closing || c->dead) {
			a->answered = true;
			a->status = PS_EPEER_LOST;
			snprintf(a->msg, sizeof(a->msg), "not live");
			continue;
		}
		cmd.op_id = r->op_id;
		cmd.cmd = r->cmd;
		sa->build(s, i, &cmd, sa->arg);
		ps_ctl_env_init(&env, ++s->next_request_id);
		env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CKPT_CMD;
		env.ckpt_cmd = &cmd;
		pthread_mutex_lock(&s->lock);
		a->conn = c;
		pthread_mutex_unlock(&s->lock);
		ps_sched_conn_send(s, c, &env);
		if (c->dead) {
			pthread_mutex_lock(&s->lock);
			a->answered = true;
			a->status = PS_EPEER_LOST;
			snprintf(a->msg, sizeof(a->msg), "the command could not be sent");
			pthread_mutex_unlock(&s->lock);
		}
	}
}

/* Lock held: every server answered, or is gone. */
static bool round_over(struct ps_sched *s, struct sched_round *r)
{
	bool over = true;

	for (uint32_t i = 0; i < r->n; i++) {
		struct sched_answer *a = &r->a[i];

		if (a->answered)
			continue;
		if (s->slots[i].state != SLOT_LIVE || s->slots[i].conn != a->conn) {
			a->answered = true;
			a->status = PS_EPEER_LOST;
			snprintf(a->msg, sizeof(a->msg), "lost during the operation");
			continue;
		}
		over = false;
	}
	return over;
}

int ps_sched_round(struct ps_sched *s, uint64_t op_id, uint32_t cmd,
		   void (*build)(struct ps_sched *s, uint32_t server, Psplus__Ctl__CkptCmd *cmd,
				 void *arg),
		   void *arg, uint32_t timeout_ms, struct sched_round **out, char *msg,
		   size_t msglen)
{
	uint64_t deadline = ps_clock_deadline_ms(timeout_ms);
	struct sched_round *r = calloc(1, sizeof(*r));
	struct send_arg sa = {.r = r, .build = build, .arg = arg};
	int rc = 0;

	*out = NULL;
	if (r)
		r->a = calloc(s->opts->server_num, sizeof(*r->a));
	if (!r || !r->a) {
		free(r);
		snprintf(msg, msglen, "scheduler out of memory");
		return -ENOMEM;
	}
	r->n = s->opts->server_num;
	r->op_id = op_id;
	r->cmd = cmd;
	pthread_mutex_lock(&s->lock);
	s->round = r;
	pthread_mutex_unlock(&s->lock);
	rc = ps_sched_service_call(s, round_send, &sa);
	pthread_mutex_lock(&s->lock);
	while (!rc && !round_over(s, r)) {
		if (s->stopping) {
			rc = PS_ESHUTDOWN;
			break;
		}
		if (!ps_clock_remaining_ms(deadline)) {
			rc = PS_ETIMEOUT;
			break;
		}
		ps_sched_cond_wait_until(s, ps_clock_deadline_ms(TICK_MS));
	}
	s->round = NULL;
	pthread_mutex_unlock(&s->lock);
	if (rc == PS_ESHUTDOWN) {
		snprintf(msg, msglen, "the scheduler is shutting down");
	} else if (rc == PS_ETIMEOUT) {
		for (uint32_t i = 0; i < r->n; i++)
			if (!r->a[i].answered) {
				snprintf(msg, msglen, "server %u did not answer within %u ms", i,
					 timeout_ms);
				break;
			}
	} else if (rc) {
		snprintf(msg, msglen, "%s", ps_strerror(rc));
	} else {
		for (uint32_t i = 0; i < r->n; i++)
			if (r->a[i].status) {
				rc = r->a[i].status;
				snprintf(msg, msglen, "server %u: %s", i,
					 r->a[i].msg[0] ? r->a[i].msg : ps_strerror(rc));
				break;
			}
	}
	*out = r;
	return rc;
}

void ps_sched_on_ckpt_resp(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__CkptCmdResp *rp = env->ckpt_cmd_resp;
	struct ps_ckpt_part_desc *parts = NULL;
	uint32_t *pvar = NULL;
	struct sched_answer *a;
	struct sched_round *r;

	if (c->server_id < 0) {
		ps_sched_reply_status(s, c, env->request_id, PS_EBAD_MESSAGE,
				      "checkpoint answers come from registered servers");
		ps_sched_conn_close_after(s, c);
		return;
	}
	/* Copied before the lock: the main thread reads them once the answer is in. */
	if (rp->n_parts) {
		parts = calloc(rp->n_parts, sizeof(*parts));
		pvar = calloc(rp->n_parts, sizeof(*pvar));
		if (!parts || !pvar) {
			free(parts);
			free(pvar);
			parts = NULL;
			pvar = NULL;
		}
	}
	for (size_t i = 0; parts && i < rp->n_parts; i++) {
		const Psplus__Ctl__CkptPartDone *d = rp->parts[i];

		snprintf(parts[i].file, sizeof(parts[i].file), "%s", d->file);
		parts[i].begin = d->begin;
		parts[i].end = d->end;
		parts[i].rows = d->rows;
		parts[i].size = d->size;
		parts[i].crc32c = d->crc32c;
		parts[i].state.step = d->step;
		parts[i].state.beta1_power = d->beta1_power;
		parts[i].state.beta2_power = d->beta2_power;
		pvar[i] = d->var_id;
	}
	pthread_mutex_lock(&s->lock);
	r = s->round;
	if (!r || rp->op_id != r->op_id || rp->cmd != r->cmd || (uint64_t)c->server_id >= r->n ||
	    r->a[c->server_id].conn != c || r->a[c->server_id].answered) {
		pthread_mutex_unlock(&s->lock);
		ps_log_debug(SCHED_LOG,
			     "late or stray checkpoint answer from server %" PRId64 " (op %" PRIu64
			     ", command %u)",
			     c->server_id, rp->op_id, rp->cmd);
		free(parts);
		free(pvar);
		return;
	}
	a = &r->a[c->server_id];
	a->answered = true;
	a->status = rp->status;
	if (!rp->status && rp->n_parts && !parts) {
		a->status = -ENOMEM;
		snprintf(a->msg, sizeof(a->msg), "scheduler out of memory");
	} else {
		snprintf(a->msg, sizeof(a->msg), "%s", rp->message);
	}
	a->rows = rp->rows;
	a->bytes = rp->bytes;
	a->pause_us = rp->pause_us;
	a->parts = parts;
	a->part_var = pvar;
	a->nparts = parts ? rp->n_parts : 0;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* ---- requests and the callback -------------------------------------------------------------- */

static const char *op_name(uint32_t code)
{
	return code == SCHED_OP_SAVE ? "save" : code == SCHED_OP_RESTORE ? "restore" : "export";
}

static void send_resp(struct ps_sched *s, struct sched_conn *c, uint64_t req_id,
		      const struct sched_op_result *res, uint64_t elapsed_us)
{
	Psplus__Ctl__ModelOpResp r = PSPLUS__CTL__MODEL_OP_RESP__INIT;
	ps_ctl_env_t env;

	ps_ctl_env_init(&env, req_id);
	r.status = res->status;
	r.message = (char *)res->msg;
	r.name = (char *)res->name;
	r.cluster_version = s->cluster_version;
	r.rows = res->rows;
	r.bytes = res->bytes;
	r.elapsed_us = elapsed_us;
	r.pause_us = res->pause_us;
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_MODEL_OP_RESP;
	env.model_op_resp = &r;
	ps_sched_conn_send(s, c, &env);
}

void ps_sched_on_model_op(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__ModelOpReq *rq = env->model_op_req;
	struct sched_op_result res = {0};
	bool busy = false, starting;

	if (!ps_sched_authorized(s, c, &rq->auth_token)) {
		ps_log_warn(SCHED_LOG, "model operation from %s: auth token mismatch", c->peer);
		ps_sched_reply_status(s, c, env->request_id, -EACCES,
				      "authentication failed (auth token mismatch)");
		ps_sched_conn_close_after(s, c);
		return;
	}
	if (rq->op < SCHED_OP_SAVE || rq->op > SCHED_OP_EXPORT ||
	    strlen(rq->name) > PS_CKPT_NAME_MAX) {
		res.status = -EINVAL;
		snprintf(res.msg, sizeof(res.msg),
			 "model operation %u with a %zu-byte name: need op 1 (save), 2 (restore) "
			 "or 3 (export) and a name of at most %d bytes",
			 rq->op, strlen(rq->name), PS_CKPT_NAME_MAX);
		send_resp(s, c, env->request_id, &res, 0);
		return;
	}
	pthread_mutex_lock(&s->lock);
	starting = s->starting;
	if (!starting && !s->stopping) {
		busy = s->op_busy;
		if (!busy) {
			s->op_busy = s->op_queued = true;
			s->op_code = rq->op;
			snprintf(s->op_name, sizeof(s->op_name), "%s", rq->name);
			s->op_conn = c->id;
			s->op_req = env->request_id;
			pthread_cond_broadcast(&s->cond);
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (starting || s->stopping) {
		res.status = starting ? PS_ENOT_READY : PS_ESHUTDOWN;
		snprintf(res.msg, sizeof(res.msg), "%s",
			 starting ? "the scheduler is starting (waiting for servers, or restoring "
				    "the latest checkpoint); try again"
				  : "the scheduler is shutting down");
	} else if (busy) {
		res.status = PS_EOP_IN_PROGRESS;
		snprintf(res.msg, sizeof(res.msg),
			 "another save, restore or export is in progress; %s refused",
			 op_name(rq->op));
	} else {
		ps_log_info(SCHED_LOG, "%s%s%s requested by %s", op_name(rq->op),
			    rq->name[0] ? " " : "", rq->name, c->peer);
		return;
	}
	ps_log_info(SCHED_LOG, "%s requested by %s refused: %s", op_name(rq->op), c->peer, res.msg);
	send_resp(s, c, env->request_id, &res, 0);
}

struct cb_arg {
	uint64_t conn, req, elapsed_us;
	const struct sched_op_result *res;
};

/* op_cb_: the answer to the requester, if its connection is still there. */
static void op_callback(struct ps_sched *s, void *arg)
{
	struct cb_arg *a = arg;

	for (struct sched_conn *c = s->conns.next; c != &s->conns; c = c->next) {
		if (c->id == a->conn) {
			send_resp(s, c, a->req, a->res, a->elapsed_us);
			return;
		}
	}
	ps_log_info(SCHED_LOG, "the requester of the operation has gone; nobody to tell");
}

static void run_op(struct ps_sched *s, uint32_t code, const char *name, uint64_t conn, uint64_t req)
{
	struct sched_op_result *res = calloc(1, sizeof(*res));
	uint64_t t0 = ps_clock_now_ns();
	struct cb_arg cb;

	if (!res) {
		ps_log_err(SCHED_LOG, "out of memory running a %s", op_name(code));
		return;
	}
	switch (code) {
	case SCHED_OP_SAVE:
		ps_sched_internal_save(s, name, res);
		break;
	case SCHED_OP_RESTORE:
		ps_sched_internal_restore(s, name, res);
		break;
	default:
		ps_sched_internal_export(s, res);
		break;
	}
	cb = (struct cb_arg){.conn = conn,
			     .req = req,
			     .res = res,
			     .elapsed_us = (ps_clock_now_ns() - t0) / 1000};
	if (res->status)
		ps_log_warn(SCHED_LOG, "%s %s failed after %" PRIu64 " ms: %s (%s)", op_name(code),
			    res->name, cb.elapsed_us / 1000, res->msg, ps_err_name(res->status));
	else
		ps_log_info(SCHED_LOG,
			    "%s %s done in %" PRIu64 " ms: %" PRIu64 " rows, %" PRIu64
			    " bytes; pushes held at most %" PRIu64 " us",
			    op_name(code), res->name, cb.elapsed_us / 1000, res->rows, res->bytes,
			    res->pause_us);
	if (conn)
		ps_sched_service_call(s, op_callback, &cb);
	free(res);
}

/* The start-up restore: the latest checkpoint under -cp, if there is one. */
static void startup_restore(struct ps_sched *s)
{
	struct ps_ckpt_entry e;
	char err[1024];
	int rc;

	if (!s->ckpt_root[0])
		return;
	rc = ps_ckpt_resolve(s->ckpt_root, "latest", &e, err, sizeof(err));
	if (rc == -ENOENT) {
		ps_log_info(SCHED_LOG, "no checkpoint under %s: starting with an empty model",
			    s->ckpt_root);
		return;
	}
	if (rc) {
		ps_log_err(SCHED_LOG,
			   "cannot read the checkpoints under %s: %s; starting with an "
			   "empty model",
			   s->ckpt_root, err);
		return;
	}
	ps_log_info(SCHED_LOG, "restoring the latest checkpoint, '%s'", e.name);
	run_op(s, SCHED_OP_RESTORE, e.name, 0, 0);
}

void ps_sched_main_loop(struct ps_sched *s)
{
	uint64_t period_ns = (uint64_t)s->opts->streaming_period_s * PS_NSEC_PER_SEC;
	uint64_t next_export = period_ns ? ps_clock_now_ns() + period_ns : UINT64_MAX;
	char name[PS_CKPT_NAME_MAX + 1];
	uint64_t conn, req;
	uint32_t code;

	pthread_mutex_lock(&s->lock);
	s->op_busy = true;
	pthread_mutex_unlock(&s->lock);
	startup_restore(s);
	pthread_mutex_lock(&s->lock);
	s->starting = false;
	s->op_busy = false;
	ps_log_info(SCHED_LOG,
		    "main loop ready: cluster version 0x%016" PRIx64
		    ", model operations one at a time%s",
		    s->cluster_version,
		    s->ckpt_root[0] ? "" : " (no checkpoint root: -cp none://)");
	for (;;) {
		while (!s->stopping && !s->op_queued && ps_clock_now_ns() < next_export)
			ps_sched_cond_wait_until(s, next_export < ps_clock_deadline_ms(1000)
							    ? next_export
							    : ps_clock_deadline_ms(1000));
		if (s->stopping)
			break;
		if (s->op_queued) {
			s->op_queued = false;
			code = s->op_code;
			snprintf(name, sizeof(name), "%s", s->op_name);
			conn = s->op_conn;
			req = s->op_req;
		} else if (!s->op_busy) {
			/* The streaming period: an export nobody asked for. */
			s->op_busy = true;
			code = SCHED_OP_EXPORT;
			name[0] = 0;
			conn = req = 0;
			next_export = ps_clock_now_ns() + period_ns;
		} else {
			next_export = ps_clock_now_ns() + period_ns;
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		run_op(s, code, name, conn, req);
		pthread_mutex_lock(&s->lock);
		s->op_busy = false;
	}
	pthread_mutex_unlock(&s->lock);
}
