/*
 * The scheduler's server table: registration, heartbeats, cluster info, and the meta thread
 * that declares a server dead when it falls silent.
 *
 * A server id is LIVE while a registered connection holds it and heartbeats arrive. It stops
 * being live - and the id is freed for a restarted server - when the connection closes, when
 * the server says it is leaving, or when no heartbeat arrived for liveness_timeout_ms.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "scheduler/sched_internal.h"

void ps_sched_cond_wait_until(struct ps_sched *s, uint64_t deadline_ns)
{
	struct timespec ts = ps_clock_timespec(deadline_ns);

	/* The cond was created with CLOCK_MONOTONIC, so the deadline is monotonic too. */
	pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

/* Lock held. The slot stops being live; its id may register again. */
static void slot_kill(struct ps_sched *s, uint32_t id, const char *why, bool left)
{
	struct sched_slot *sl = &s->slots[id];

	sl->state = SLOT_DEAD;
	sl->conn = NULL;
	s->nlive--;
	if (left)
		ps_log_info(SCHED_LOG, "server %u left: %s; %u of %u servers live", id, why,
			    s->nlive, s->opts->server_num);
	else
		ps_log_warn(SCHED_LOG,
			    "server %u dead: %s; id %u is free to register again, "
			    "%u of %u servers live",
			    id, why, id, s->nlive, s->opts->server_num);
	pthread_cond_broadcast(&s->cond);
}

void ps_sched_reply_status(struct ps_sched *s, struct sched_conn *c, uint64_t req_id, int code,
			   const char *msg)
{
	Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
	ps_ctl_env_t env;

	ps_ctl_env_init(&env, req_id);
	st.code = code;
	st.message = (char *)msg;
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
	env.status = &st;
	ps_sched_conn_send(s, c, &env);
}

static bool token_ok(const struct ps_sched *s, const ProtobufCBinaryData *tok)
{
	return !s->auth || ps_ctl_token_equal(s->token, s->token_len, tok->data, tok->len);
}

bool ps_sched_authorized(struct ps_sched *s, struct sched_conn *c, const ProtobufCBinaryData *tok)
{
	/* A registered server proved the token when it registered. */
	if (!s->auth || c->authed || c->server_id >= 0)
		return true;
	c->authed = token_ok(s, tok);
	return c->authed;
}

/* Checks that need no lock: returns 0 or a status with @msg filled. */
static int check_register(struct ps_sched *s, struct sched_conn *c,
			  const Psplus__Ctl__RegisterReq *rq, char *msg, size_t msglen)
{
	const Psplus__Ctl__Address *a = rq->data_addr;
	uint32_t n = s->opts->server_num;

	if (c->server_id >= 0) {
		snprintf(msg, msglen, "this connection already registered server %" PRId64,
			 c->server_id);
		return PS_EBAD_MESSAGE;
	}
	/* Authentication first: an unauthenticated peer learns nothing about the cluster. */
	if (!token_ok(s, &rq->auth_token)) {
		snprintf(msg, msglen, "server %u: authentication failed (auth token mismatch)",
			 rq->server_id);
		return -EACCES;
	}
	if (!a || !a->host[0] || strlen(a->host) >= PS_URL_HOST_MAX || !a->port ||
	    a->port > 65535) {
		snprintf(msg, msglen, "server %u: register carries no valid data-plane address",
			 rq->server_id);
		return PS_EBAD_MESSAGE;
	}
	if (!rq->transport[0] || strlen(rq->transport) >= SCHED_TRANSPORT_MAX) {
		snprintf(msg, msglen, "server %u: register carries no valid transport name",
			 rq->server_id);
		return PS_EBAD_MESSAGE;
	}
	if (rq->n_shard_ports > SCHED_MAX_SHARDS) {
		snprintf(msg, msglen, "server %u: register carries %zu shard ports (at most %u)",
			 rq->server_id, rq->n_shard_ports, SCHED_MAX_SHARDS);
		return PS_EBAD_MESSAGE;
	}
	for (size_t i = 0; i < rq->n_shard_ports; i++) {
		if (!rq->shard_ports[i] || rq->shard_ports[i] > 65535) {
			snprintf(msg, msglen, "server %u: shard %zu has no valid port (%u)",
				 rq->server_id, i, rq->shard_ports[i]);
			return PS_EBAD_MESSAGE;
		}
	}
	if (rq->server_id >= n) {
		snprintf(msg, msglen,
			 "server id %u is out of range: this cluster has %u servers (ids 0 to %u)",
			 rq->server_id, n, n - 1);
		return PS_EOUT_OF_RANGE;
	}
	return 0;
}

static void on_register(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__RegisterReq *rq = env->register_req;
	Psplus__Ctl__RegisterResp resp = PSPLUS__CTL__REGISTER_RESP__INIT;
	char msg[512] = "", data[SCHED_PEER_STRLEN + PS_URL_HOST_MAX];
	uint32_t id = rq->server_id, nlive, *ports = NULL;
	struct sched_slot *sl;
	ps_ctl_env_t out;
	bool again = false;
	int status;

	status = check_register(s, c, rq, msg, sizeof(msg));
	if (!status && rq->n_shard_ports) {
		/* Allocated before the lock, so a failure needs no unwinding under it. */
		ports = malloc(rq->n_shard_ports * sizeof(*ports));
		if (ports) {
			memcpy(ports, rq->shard_ports, rq->n_shard_ports * sizeof(*ports));
		} else {
			snprintf(msg, sizeof(msg), "scheduler out of memory");
			status = -ENOMEM;
		}
	}
	if (!status) {
		ps_ctl_addr_format(rq->data_addr->host, (uint16_t)rq->data_addr->port, data,
				   sizeof(data));
		pthread_mutex_lock(&s->lock);
		sl = &s->slots[id];
		if (s->stopping) {
			snprintf(msg, sizeof(msg), "the scheduler is shutting down");
			status = PS_ESHUTDOWN;
		} else if (sl->state == SLOT_LIVE) {
			snprintf(msg, sizeof(msg),
				 "server id %u is already registered by a live server (data plane "
				 "%s:%u, control peer %s)",
				 id, sl->host, sl->port, sl->peer);
			status = PS_EDUP_SERVER_ID;
		} else {
			again = sl->state == SLOT_DEAD;
			free(sl->shard_ports);
			memset(sl, 0, sizeof(*sl));
			sl->state = SLOT_LIVE;
			sl->conn = c;
			sl->shard_ports = ports;
			sl->nshards = (uint32_t)rq->n_shard_ports;
			sl->msg_size = rq->msg_size;
			ports = NULL;
			snprintf(sl->host, sizeof(sl->host), "%s", rq->data_addr->host);
			sl->port = (uint16_t)rq->data_addr->port;
			snprintf(sl->transport, sizeof(sl->transport), "%s", rq->transport);
			snprintf(sl->peer, sizeof(sl->peer), "%s", c->peer);
			sl->registered_ns = sl->last_hb_ns = ps_clock_now_ns();
			nlive = ++s->nlive;
			c->server_id = id;
			/* Logged under the lock so it precedes the main thread's "all registered". */
			ps_log_info(
				SCHED_LOG,
				"server %u %sregistered: data plane %s (transport %s), %u shards, "
				"control peer %s; %u of %u servers live",
				id, again ? "re-" : "", data, sl->transport,
				sl->nshards ? sl->nshards : 1, c->peer, nlive, s->opts->server_num);
			pthread_cond_broadcast(&s->cond);
		}
		pthread_mutex_unlock(&s->lock);
	}
	free(ports); /* still ours when the registration was refused */
	ps_ctl_env_init(&out, env->request_id);
	resp.status = status;
	resp.message = msg;
	resp.cluster_version = s->cluster_version;
	resp.heartbeat_ms = s->opts->heartbeat_ms;
	resp.liveness_timeout_ms = s->opts->liveness_timeout_ms;
	resp.server_num = s->opts->server_num;
	out.body_case = PSPLUS__CTL__ENVELOPE__BODY_REGISTER_RESP;
	out.register_resp = &resp;
	ps_sched_conn_send(s, c, &out);
	if (status) {
		ps_log_warn(SCHED_LOG, "refused registration from %s: %s (%s)", c->peer, msg,
			    ps_err_name(status));
		ps_sched_conn_close_after(s, c);
		return;
	}
}

static void on_heartbeat(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__Heartbeat *hb = env->heartbeat;
	const Psplus__Ctl__Stats *st = hb->stats;
	Psplus__Ctl__HeartbeatResp resp = PSPLUS__CTL__HEARTBEAT_RESP__INIT;
	struct sched_slot *sl;
	char msg[256] = "";
	ps_ctl_env_t out;
	bool close = false, stopping;
	int status = 0;

	pthread_mutex_lock(&s->lock);
	stopping = s->stopping;
	if (c->server_id < 0) {
		snprintf(msg, sizeof(msg), "heartbeat before registration");
		status = PS_ENOT_READY;
		close = true;
	} else if (hb->server_id != (uint64_t)c->server_id) {
		snprintf(msg, sizeof(msg), "heartbeat for server %u on the connection of server %u",
			 hb->server_id, (uint32_t)c->server_id);
		status = PS_EBAD_MESSAGE;
		close = true;
	} else if ((sl = &s->slots[c->server_id])->conn != c) {
		snprintf(msg, sizeof(msg), "server %u was declared dead; register again",
			 hb->server_id);
		status = PS_EPEER_LOST;
		close = true;
	} else {
		sl->last_hb_ns = ps_clock_now_ns();
		sl->heartbeats++;
		if (st) {
			sl->mem_bytes = st->mem_bytes;
			sl->requests_served = st->requests_served;
			sl->tx_bytes = st->transport_tx_bytes;
			sl->rx_bytes = st->transport_rx_bytes;
		}
		/* Fencing: a server on an old version must re-read cluster state first. A restore
		 * switching servers to its new version is not "old" (sched_ckpt.c). */
		if (hb->cluster_version != s->cluster_version &&
		    !(s->pending_version && hb->cluster_version == s->pending_version)) {
			snprintf(msg, sizeof(msg),
				 "heartbeat carries cluster version 0x%016" PRIx64
				 ", current is 0x%016" PRIx64,
				 hb->cluster_version, s->cluster_version);
			status = PS_ESTALE_VERSION;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (status)
		ps_log_warn(SCHED_LOG, "heartbeat from %s refused: %s", c->peer, msg);
	else
		ps_log_debug(SCHED_LOG,
			     "heartbeat from server %u: mem %" PRIu64 " bytes, %" PRIu64
			     " requests, tx %" PRIu64 " rx %" PRIu64 " bytes",
			     hb->server_id, st ? st->mem_bytes : 0, st ? st->requests_served : 0,
			     st ? st->transport_tx_bytes : 0, st ? st->transport_rx_bytes : 0);
	ps_ctl_env_init(&out, env->request_id);
	resp.status = status;
	resp.message = msg;
	resp.cluster_version = s->cluster_version;
	resp.shutdown = stopping;
	out.body_case = PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT_RESP;
	out.heartbeat_resp = &resp;
	ps_sched_conn_send(s, c, &out);
	if (close)
		ps_sched_conn_close_after(s, c);
}

static void on_cluster_info(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	Psplus__Ctl__ClusterInfo ci = PSPLUS__CTL__CLUSTER_INFO__INIT;
	Psplus__Ctl__ServerInfo *infos = NULL, **ptrs = NULL;
	Psplus__Ctl__Address *addrs = NULL;
	uint32_t n = s->opts->server_num, k = 0;
	ps_ctl_env_t out;

	if (!ps_sched_authorized(s, c, &env->cluster_info_req->auth_token)) {
		ps_log_warn(SCHED_LOG, "cluster info request from %s: auth token mismatch",
			    c->peer);
		ps_sched_reply_status(s, c, env->request_id, -EACCES,
				      "authentication failed (auth token mismatch)");
		ps_sched_conn_close_after(s, c);
		return;
	}
	infos = calloc(n, sizeof(*infos));
	ptrs = calloc(n, sizeof(*ptrs));
	addrs = calloc(n, sizeof(*addrs));
	if (!infos || !ptrs || !addrs) {
		ps_sched_reply_status(s, c, env->request_id, -ENOMEM, "scheduler out of memory");
		goto out;
	}
	/* Strings point into the slots, so the reply is packed before the lock is dropped. */
	ps_ctl_env_init(&out, env->request_id);
	pthread_mutex_lock(&s->lock);
	/* Until the start-up restore is done no server is ready: clients wait for them. */
	for (uint32_t i = 0; i < n && !s->starting; i++) {
		const struct sched_slot *sl = &s->slots[i];

		if (sl->state != SLOT_LIVE)
			continue;
		psplus__ctl__address__init(&addrs[k]);
		addrs[k].host = (char *)sl->host;
		addrs[k].port = sl->port;
		psplus__ctl__server_info__init(&infos[k]);
		infos[k].server_id = i;
		infos[k].data_addr = &addrs[k];
		infos[k].transport = (char *)sl->transport;
		infos[k].shard_ports = sl->shard_ports;
		infos[k].n_shard_ports = sl->nshards;
		infos[k].msg_size = sl->msg_size;
		ptrs[k] = &infos[k];
		k++;
	}
	ci.cluster_version = s->cluster_version;
	ci.server_num = n;
	ci.n_servers = k;
	ci.servers = ptrs;
	/* The table is the service thread's (this thread's): no lock needed for it. */
	ci.placement.data = s->placement_blob;
	ci.placement.len = s->placement_len;
	out.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO;
	out.cluster_info = &ci;
	ps_sched_conn_send(s, c, &out);
	pthread_mutex_unlock(&s->lock);
out:
	free(addrs);
	free(ptrs);
	free(infos);
}

/* A server announcing it is leaving (it got SIGTERM): not a failure, so not "dead". */
static void on_shutdown(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	char why[300];

	if (c->server_id < 0) {
		ps_sched_conn_close_after(s, c);
		return;
	}
	snprintf(why, sizeof(why), "%.256s", env->shutdown->reason);
	pthread_mutex_lock(&s->lock);
	if (s->slots[c->server_id].conn == c && !s->stopping)
		slot_kill(s, (uint32_t)c->server_id, why[0] ? why : "shutting down", true);
	pthread_mutex_unlock(&s->lock);
	c->server_id = -1;
	ps_sched_conn_close_after(s, c);
}

void ps_sched_handle(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	char msg[128];

	switch (env->body_case) {
	case PSPLUS__CTL__ENVELOPE__BODY_REGISTER_REQ:
		on_register(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT:
		on_heartbeat(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO_REQ:
		on_cluster_info(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN:
		on_shutdown(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_DECLARE_REQ:
		ps_sched_on_declare(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_STEP_REQ:
		ps_sched_on_step(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_BARRIER_REQ:
		ps_sched_on_barrier(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_MODEL_OP_REQ:
		ps_sched_on_model_op(s, c, env);
		break;
	case PSPLUS__CTL__ENVELOPE__BODY_CKPT_CMD_RESP:
		ps_sched_on_ckpt_resp(s, c, env);
		break;
	default:
		/* Replies and notices flow from the scheduler, never to it. */
		snprintf(msg, sizeof(msg), "unexpected %s message", ps_ctl_body_name(env));
		ps_log_warn(SCHED_LOG, "%s from %s; closing the connection", msg, c->peer);
		ps_sched_reply_status(s, c, env->request_id, PS_EBAD_MESSAGE, msg);
		ps_sched_conn_close_after(s, c);
		break;
	}
}

void ps_sched_conn_lost(struct ps_sched *s, struct sched_conn *c, const char *why)
{
	char reason[SCHED_PEER_STRLEN + 200];

	if (c->server_id < 0)
		return;
	snprintf(reason, sizeof(reason), "control connection from %s %s", c->peer, why);
	pthread_mutex_lock(&s->lock);
	/* At shutdown every connection goes; that is not news about any server. */
	if (s->slots[c->server_id].conn == c && !s->stopping)
		slot_kill(s, (uint32_t)c->server_id, reason, false);
	pthread_mutex_unlock(&s->lock);
	c->server_id = -1;
}

void ps_sched_conn_check_revoked(struct ps_sched *s, struct sched_conn *c)
{
	char msg[128];
	bool revoked;

	if (c->server_id < 0 || c->closing)
		return;
	pthread_mutex_lock(&s->lock);
	revoked = s->slots[c->server_id].conn != c;
	pthread_mutex_unlock(&s->lock);
	if (!revoked)
		return;
	snprintf(msg, sizeof(msg), "server %" PRId64 " was declared dead; register again",
		 c->server_id);
	c->server_id = -1;
	ps_sched_reply_status(s, c, 0, PS_EPEER_LOST, msg);
	ps_sched_conn_close_after(s, c);
}

void *ps_sched_meta_thread(void *arg)
{
	struct ps_sched *s = arg;
	uint64_t limit_ns = (uint64_t)s->opts->liveness_timeout_ms * PS_NSEC_PER_MSEC;
	/* A tenth of the timeout: detection lands within 110% of it, at little cost. */
	uint64_t period_ns = limit_ns / 10;
	char why[128];

	if (period_ns < 10 * PS_NSEC_PER_MSEC)
		period_ns = 10 * PS_NSEC_PER_MSEC;
	if (period_ns > 500 * PS_NSEC_PER_MSEC)
		period_ns = 500 * PS_NSEC_PER_MSEC;
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		uint64_t now = ps_clock_now_ns();

		for (uint32_t i = 0; i < s->opts->server_num; i++) {
			struct sched_slot *sl = &s->slots[i];

			if (sl->state != SLOT_LIVE || now - sl->last_hb_ns <= limit_ns)
				continue;
			snprintf(why, sizeof(why),
				 "no heartbeat for %" PRIu64 " ms (liveness timeout %u ms)",
				 (uint64_t)((now - sl->last_hb_ns) / PS_NSEC_PER_MSEC),
				 s->opts->liveness_timeout_ms);
			slot_kill(s, i, why, false);
		}
		ps_sched_cond_wait_until(s, now + period_ns);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}
