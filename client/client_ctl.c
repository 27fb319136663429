/*
 * The client's control connection to the scheduler (docs/client.md, docs/wire.md).
 *
 * One blocking request at a time (calls are serialised by the client lock): send an envelope,
 * read until the reply with the same request id arrives. Replies with another id are late
 * answers to calls that timed out (a held StepResp, say) and are dropped. A broken connection
 * is re-established once per call - the kv entry is read again, since a restarted scheduler
 * publishes a new address - and the request re-sent: every request here is idempotent
 * (ClusterInfo reads, Declare is by name, Step and Barrier only raise a maximum) except model
 * operations (save, restore, export), which are sent once: a broken connection fails them.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

/* Milliseconds left before @deadline, at least 1 (0 would mean "don't wait" to some helpers). */
static int left_ms(uint64_t deadline)
{
	int ms = ps_clock_remaining_ms(deadline);

	return ms > 0 ? ms : 1;
}

void cli_ctl_close(struct ps_client *c)
{
	if (c->ctl_fd >= 0)
		close(c->ctl_fd);
	c->ctl_fd = -1;
}

int cli_ctl_connect(struct ps_client *c, uint64_t deadline)
{
	struct ps_kv_entry kv;
	char err[600];
	int rc, fd;

	cli_ctl_close(c);
	rc = ps_kv_wait(c->kv_path, left_ms(deadline), -1, &kv, err, sizeof(err));
	if (rc)
		return cli_fail(rc, "scheduler not found: %s", err);
	ps_ctl_addr_format(kv.host, kv.port, c->sched_addr, sizeof(c->sched_addr));
	rc = ps_ctl_connect(kv.host, kv.port, left_ms(deadline), -1, &fd);
	if (rc)
		return cli_fail(rc, "cannot connect to the scheduler at %s: %s", c->sched_addr,
				ps_strerror(rc));
	c->ctl_fd = fd;
	return 0;
}

/*
 * One round trip: @env (its request id is set here) out, the reply of body @expect in
 * (caller frees *@in). A Status reply becomes its code, with the scheduler's message.
 */
static int ctl_call_n(struct ps_client *c, ps_ctl_env_t *env,
		      Psplus__Ctl__Envelope__BodyCase expect, uint64_t deadline, int attempts,
		      ps_ctl_env_t **in)
{
	char why[200] = "";
	ps_ctl_env_t *r = NULL;
	int rc = 0;

	for (int attempt = 0; attempt < attempts; attempt++) {
		if (c->ctl_fd < 0) {
			rc = cli_ctl_connect(c, deadline);
			if (rc)
				return rc;
		}
		env->request_id = ++c->next_request_id;
		rc = ps_ctl_send(c->ctl_fd, env, left_ms(deadline), -1);
		while (!rc) {
			rc = ps_ctl_recv(c->ctl_fd, left_ms(deadline), -1, &r, why, sizeof(why));
			if (rc)
				break;
			if (r->request_id != env->request_id) {
				ps_ctl_env_free(r); /* the late answer of an abandoned call */
				continue;
			}
			if (r->body_case == PSPLUS__CTL__ENVELOPE__BODY_STATUS) {
				rc = r->status->code ? r->status->code : PS_EBAD_MESSAGE;
				cli_fail(rc, "scheduler at %s: %s", c->sched_addr,
					 r->status->message);
				ps_ctl_env_free(r);
				cli_ctl_close(c); /* it closes after a Status */
				return rc;
			}
			if (r->body_case != expect) {
				cli_fail(PS_EBAD_MESSAGE, "scheduler at %s answered %s with %s",
					 c->sched_addr, ps_ctl_body_name(env), ps_ctl_body_name(r));
				ps_ctl_env_free(r);
				cli_ctl_close(c);
				return PS_EBAD_MESSAGE;
			}
			*in = r;
			return 0;
		}
		/* Whatever went wrong, the byte stream may be out of step: start afresh. */
		cli_ctl_close(c);
		if (rc == PS_ETIMEOUT || !ps_clock_remaining_ms(deadline))
			return cli_fail(PS_ETIMEOUT, "no answer from the scheduler at %s in time",
					c->sched_addr);
		ps_log_info(CLI_LOG, "lost the scheduler connection (%s: %s); reconnecting",
			    ps_err_name(rc), why[0] ? why : ps_strerror(rc));
	}
	return cli_fail(rc, "scheduler at %s: %s", c->sched_addr, why[0] ? why : ps_strerror(rc));
}

static int ctl_call(struct ps_client *c, ps_ctl_env_t *env, Psplus__Ctl__Envelope__BodyCase expect,
		    uint64_t deadline, ps_ctl_env_t **in)
{
	return ctl_call_n(c, env, expect, deadline, 2, in);
}

static ProtobufCBinaryData token(const struct ps_client *c)
{
	return (ProtobufCBinaryData){.len = c->auth ? c->token_len : 0,
				     .data = (uint8_t *)c->token};
}

/* Take @blob as the placement table (empty: no variables). */
static int apply_placement(struct ps_client *c, const ProtobufCBinaryData *blob)
{
	struct ps_placement *t = NULL;
	char err[300];
	int rc;

	if (blob->len) {
		rc = ps_placement_decode(blob->data, blob->len, &t, err, sizeof(err));
		if (rc)
			return cli_fail(rc, "scheduler at %s sent a bad placement: %s",
					c->sched_addr, err);
		if (t->nservers != c->server_num) {
			ps_placement_destroy(t);
			return cli_fail(PS_EBAD_MESSAGE,
					"scheduler at %s sent a placement for %u servers, the "
					"cluster has %u",
					c->sched_addr, t->nservers, c->server_num);
		}
	}
	ps_placement_destroy(c->placement);
	c->placement = t;
	return 0;
}

/* Fill @sv from @si; 0 or PS_EBAD_MESSAGE. */
static int server_from_info(const Psplus__Ctl__ServerInfo *si, struct cli_server *sv)
{
	uint32_t n = si->n_shard_ports ? (uint32_t)si->n_shard_ports : 1;

	if (!si->data_addr || !si->data_addr->host[0] ||
	    strlen(si->data_addr->host) >= sizeof(sv->host) || n > 4096)
		return PS_EBAD_MESSAGE;
	sv->ports = calloc(n, sizeof(*sv->ports));
	if (!sv->ports)
		return -ENOMEM;
	for (uint32_t t = 0; t < n; t++) {
		uint32_t p = si->n_shard_ports ? si->shard_ports[t] : si->data_addr->port;

		if (!p || p > 65535)
			return PS_EBAD_MESSAGE;
		sv->ports[t] = (uint16_t)p;
	}
	sv->live = true;
	sv->nshards = n;
	snprintf(sv->host, sizeof(sv->host), "%s", si->data_addr->host);
	snprintf(sv->transport, sizeof(sv->transport), "%s", si->transport);
	sv->msg_size = si->msg_size ? si->msg_size : CLI_DEF_MSG_SIZE;
	return 0;
}

static void servers_free(struct cli_server *sv, uint32_t n)
{
	for (uint32_t i = 0; sv && i < n; i++)
		free(sv[i].ports);
	free(sv);
}

/* Take ClusterInfo: servers, version, placement; rebuild the destinations if connected. */
static int apply_info(struct ps_client *c, const Psplus__Ctl__ClusterInfo *ci)
{
	struct cli_server *old = c->servers, *sv;
	uint32_t nold = c->server_num, n = ci->server_num;
	int rc = 0;

	if (!n || n > PS_PLACEMENT_MAX_SERVERS)
		return cli_fail(PS_EBAD_MESSAGE, "scheduler at %s: cluster of %u servers",
				c->sched_addr, n);
	sv = calloc(n, sizeof(*sv));
	if (!sv)
		return cli_fail(-ENOMEM, "out of memory");
	for (size_t k = 0; k < ci->n_servers && !rc; k++) {
		const Psplus__Ctl__ServerInfo *si = ci->servers[k];

		if (si->server_id >= n || sv[si->server_id].ports)
			rc = PS_EBAD_MESSAGE;
		else
			rc = server_from_info(si, &sv[si->server_id]);
		if (rc)
			cli_fail(rc, "scheduler at %s: bad entry for server %u", c->sched_addr,
				 si->server_id);
	}
	/* A server missing now keeps what we knew of it (it may come back at the same place). */
	for (uint32_t i = 0; i < n && !rc; i++) {
		if (sv[i].ports || i >= nold || !old[i].ports)
			continue;
		sv[i] = old[i];
		sv[i].live = false;
		sv[i].ports = malloc(old[i].nshards * sizeof(*sv[i].ports));
		if (!sv[i].ports)
			rc = cli_fail(-ENOMEM, "out of memory");
		else
			memcpy(sv[i].ports, old[i].ports, old[i].nshards * sizeof(*sv[i].ports));
	}
	if (!rc)
		rc = cli_dests_rebuild(c, sv, n);
	if (rc) {
		servers_free(sv, n);
		return rc;
	}
	c->servers = sv;
	c->server_num = n;
	c->cluster_version = ci->cluster_version;
	servers_free(old, nold);
	return apply_placement(c, &ci->placement);
}

int cli_ctl_refresh(struct ps_client *c, bool all, uint64_t deadline)
{
	Psplus__Ctl__ClusterInfoReq rq = PSPLUS__CTL__CLUSTER_INFO_REQ__INIT;
	ps_ctl_env_t env, *in = NULL;
	int rc;

	for (;;) {
		ps_ctl_env_init(&env, 0);
		rq.auth_token = token(c);
		env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO_REQ;
		env.cluster_info_req = &rq;
		rc = ctl_call(c, &env, PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO, deadline, &in);
		if (rc)
			return rc;
		if (all && in->cluster_info->n_servers < in->cluster_info->server_num) {
			size_t live = in->cluster_info->n_servers;
			uint32_t num = in->cluster_info->server_num;

			ps_ctl_env_free(in);
			if (ps_clock_remaining_ms(deadline) <= CLI_POLL_MS)
				return cli_fail(PS_ETIMEOUT,
						"only %zu of %u servers registered with the "
						"scheduler at %s within the timeout",
						live, num, c->sched_addr);
			poll(NULL, 0, CLI_POLL_MS);
			continue;
		}
		rc = apply_info(c, in->cluster_info);
		ps_ctl_env_free(in);
		return rc;
	}
}

int cli_ctl_declare(struct ps_client *c, const char *name, const struct ps_var_spec *spec,
		    const struct ps_var_load *load, uint32_t *id, uint64_t deadline)
{
	Psplus__Ctl__DeclareReq rq = PSPLUS__CTL__DECLARE_REQ__INIT;
	const Psplus__Ctl__DeclareResp *dr;
	uint8_t bytes[PS_DP_DECLARE_BYTES];
	struct ps_dp_declare d;
	ps_ctl_env_t env, *in = NULL;
	int rc;

	/* A valid DECLARE payload whose only meaningful fields are the spec's (control.proto). */
	memset(&d, 0, sizeof(d));
	ps_dp_spec_encode(spec, &d);
	d.part_end = 1;
	d.nshards = 1;
	d.num_workers = 1;
	ps_dp_declare_encode(&d, bytes);
	rq.name = (char *)name;
	rq.spec = (ProtobufCBinaryData){.len = sizeof(bytes), .data = bytes};
	if (load) {
		rq.rows_read_per_step = load->rows_read_per_step;
		rq.rows_pushed_per_step = load->rows_pushed_per_step;
		rq.steps_per_s = load->steps_per_s;
		rq.expected_keys = load->expected_keys;
	}
	rq.auth_token = token(c);
	rq.num_workers = c->o.num_workers;
	for (;;) {
		ps_ctl_env_init(&env, 0);
		env.body_case = PSPLUS__CTL__ENVELOPE__BODY_DECLARE_REQ;
		env.declare_req = &rq;
		rc = ctl_call(c, &env, PSPLUS__CTL__ENVELOPE__BODY_DECLARE_RESP, deadline, &in);
		if (rc)
			return rc;
		/* A restore is replacing the variable table: ask again once it is done. */
		if (in->declare_resp->status != PS_EOP_IN_PROGRESS ||
		    ps_clock_remaining_ms(deadline) <= CLI_POLL_MS)
			break;
		ps_ctl_env_free(in);
		poll(NULL, 0, CLI_POLL_MS);
	}
	dr = in->declare_resp;
	if (dr->status) {
		rc = cli_fail(dr->status, "declare '%s': %s", name,
			      dr->message[0] ? dr->message : ps_strerror(dr->status));
	} else if (dr->cluster_version != c->cluster_version) {
		/* The cluster changed under us (restore, restart): take all of it again. */
		*id = dr->var_id;
		ps_ctl_env_free(in);
		return cli_ctl_refresh(c, false, deadline);
	} else {
		*id = dr->var_id;
		rc = apply_placement(c, &dr->placement);
	}
	ps_ctl_env_free(in);
	return rc;
}

int cli_ctl_step(struct ps_client *c, uint64_t step, uint64_t deadline)
{
	Psplus__Ctl__StepReq rq = PSPLUS__CTL__STEP_REQ__INIT;
	ps_ctl_env_t env, *in = NULL;
	int rc;

	rq.worker_id = c->o.worker_id;
	rq.num_workers = c->o.num_workers;
	rq.step = step;
	rq.mode = (uint32_t)c->o.sync_mode;
	rq.staleness = c->o.staleness;
	rq.auth_token = token(c);
	ps_ctl_env_init(&env, 0);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STEP_REQ;
	env.step_req = &rq;
	rc = ctl_call(c, &env, PSPLUS__CTL__ENVELOPE__BODY_STEP_RESP, deadline, &in);
	if (rc) {
		if (rc == PS_ETIMEOUT)
			cli_fail(rc,
				 "step_end(%" PRIu64 "): the other workers did not catch up "
				 "within %u ms",
				 step, c->o.timeout_ms);
		return rc;
	}
	rc = in->step_resp->status;
	if (rc)
		cli_fail(rc, "step_end(%" PRIu64 "): %s", step, in->step_resp->message);
	ps_ctl_env_free(in);
	return rc;
}

int cli_ctl_barrier(struct ps_client *c, uint64_t seq, uint64_t deadline)
{
	Psplus__Ctl__BarrierReq rq = PSPLUS__CTL__BARRIER_REQ__INIT;
	ps_ctl_env_t env, *in = NULL;
	int rc;

	rq.worker_id = c->o.worker_id;
	rq.num_workers = c->o.num_workers;
	rq.seq = seq;
	rq.auth_token = token(c);
	ps_ctl_env_init(&env, 0);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_BARRIER_REQ;
	env.barrier_req = &rq;
	rc = ctl_call(c, &env, PSPLUS__CTL__ENVELOPE__BODY_BARRIER_RESP, deadline, &in);
	if (rc) {
		if (rc == PS_ETIMEOUT)
			cli_fail(rc, "barrier %" PRIu64 ": not every worker arrived within %u ms",
				 seq, c->o.timeout_ms);
		return rc;
	}
	rc = in->barrier_resp->status;
	if (rc)
		cli_fail(rc, "barrier %" PRIu64 ": %s", seq, in->barrier_resp->message);
	ps_ctl_env_free(in);
	return rc;
}
