/*
 * Model operations - save, restore, streaming export - requested from the scheduler's main
 * loop (ModelOpReq / ModelOpResp, docs/wire.md).
 *
 * Each request goes on a control connection of its own, opened for it and closed after: the
 * answer may take as long as writing or reading the whole model, and the client's own
 * connection (and lock) must stay free for the worker's pulls, pushes and steps meanwhile -
 * a save pauses those, and waits for stepped workers to reach step_end. A request is sent once:
 * if the connection breaks before the answer, the operation may still be running or done, so
 * it is not repeated (a repeated save would be a second save).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

int cli_model_op(const char *kv_path, const uint8_t *token, size_t token_len, uint32_t op,
		 const char *name, uint32_t timeout_ms, struct ps_model_op_info *info, char *err,
		 size_t errlen)
{
	Psplus__Ctl__ModelOpReq rq = PSPLUS__CTL__MODEL_OP_REQ__INIT;
	uint64_t deadline = ps_clock_deadline_ms(timeout_ms);
	char addr[PS_CTL_ADDR_STRLEN], why[300] = "";
	const Psplus__Ctl__ModelOpResp *r;
	ps_ctl_env_t env, *in = NULL;
	struct ps_kv_entry kv;
	int rc, fd = -1, left;

	if (info)
		memset(info, 0, sizeof(*info));
	rc = ps_kv_wait(kv_path, timeout_ms, -1, &kv, err, errlen);
	if (rc)
		return rc;
	ps_ctl_addr_format(kv.host, kv.port, addr, sizeof(addr));
	left = ps_clock_remaining_ms(deadline);
	rc = ps_ctl_connect(kv.host, kv.port, left > 0 ? left : 1, -1, &fd);
	if (rc) {
		snprintf(err, errlen, "cannot connect to the scheduler at %s: %s", addr,
			 ps_strerror(rc));
		return rc;
	}
	rq.op = op;
	rq.name = (char *)(name ? name : "");
	rq.auth_token =
		(ProtobufCBinaryData){.len = token ? token_len : 0, .data = (uint8_t *)token};
	ps_ctl_env_init(&env, 1);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_MODEL_OP_REQ;
	env.model_op_req = &rq;
	left = ps_clock_remaining_ms(deadline);
	rc = ps_ctl_send(fd, &env, left > 0 ? left : 1, -1);
	while (!rc) {
		left = ps_clock_remaining_ms(deadline);
		rc = ps_ctl_recv(fd, left > 0 ? left : 1, -1, &in, why, sizeof(why));
		if (rc || in->request_id == 1)
			break;
		ps_ctl_env_free(in); /* not ours (there is nothing else on this connection) */
		in = NULL;
	}
	close(fd);
	if (rc) {
		if (rc == PS_ETIMEOUT)
			snprintf(err, errlen,
				 "no answer from the scheduler at %s within %u ms (the operation "
				 "goes on there)",
				 addr, timeout_ms);
		else
			snprintf(err, errlen, "scheduler at %s: %s", addr,
				 why[0] ? why : ps_strerror(rc));
		return rc;
	}
	if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_STATUS) {
		rc = in->status->code ? in->status->code : PS_EBAD_MESSAGE;
		snprintf(err, errlen, "scheduler at %s: %s", addr, in->status->message);
		ps_ctl_env_free(in);
		return rc;
	}
	if (in->body_case != PSPLUS__CTL__ENVELOPE__BODY_MODEL_OP_RESP) {
		snprintf(err, errlen, "scheduler at %s answered with %s", addr,
			 ps_ctl_body_name(in));
		ps_ctl_env_free(in);
		return PS_EBAD_MESSAGE;
	}
	r = in->model_op_resp;
	if (info) {
		snprintf(info->name, sizeof(info->name), "%s", r->name);
		info->cluster_version = r->cluster_version;
		info->rows = r->rows;
		info->bytes = r->bytes;
		info->elapsed_us = r->elapsed_us;
		info->pause_us = r->pause_us;
	}
	rc = r->status;
	if (rc)
		snprintf(err, errlen, "%s", r->message[0] ? r->message : ps_strerror(rc));
	ps_ctl_env_free(in);
	return rc;
}

static int client_op(struct ps_client *c, uint32_t op, const char *what, const char *name,
		     uint32_t timeout_ms, struct ps_model_op_info *info)
{
	char err[2300] = "";
	int rc;

	if (!c)
		return cli_fail(-EINVAL, "%s: NULL client", what);
	/* kv_path, the token and the options are set at create and never change. */
	rc = cli_model_op(c->kv_path, c->auth ? c->token : NULL, c->token_len, op, name,
			  timeout_ms ? timeout_ms : c->o.timeout_ms, info, err, sizeof(err));
	if (rc)
		return cli_fail(rc, "%s%s%s: %s", what, name && *name ? " " : "", name ? name : "",
				err);
	return 0;
}

int ps_client_save_info(struct ps_client *c, const char *name, uint32_t timeout_ms,
			struct ps_model_op_info *info)
{
	return client_op(c, 1, "save", name, timeout_ms, info);
}

int ps_client_save(struct ps_client *c, const char *name, uint32_t timeout_ms)
{
	return ps_client_save_info(c, name, timeout_ms, NULL);
}

int ps_client_restore_info(struct ps_client *c, const char *name, uint32_t timeout_ms,
			   struct ps_model_op_info *info)
{
	if (!name || !*name)
		return cli_fail(-EINVAL, "restore: name a checkpoint, or \"latest\"");
	return client_op(c, 2, "restore", name, timeout_ms, info);
}

int ps_client_restore(struct ps_client *c, const char *name, uint32_t timeout_ms)
{
	return ps_client_restore_info(c, name, timeout_ms, NULL);
}

int ps_client_export_streaming_info(struct ps_client *c, uint32_t timeout_ms,
				    struct ps_model_op_info *info)
{
	return client_op(c, 3, "streaming export", NULL, timeout_ms, info);
}

int ps_client_export_streaming(struct ps_client *c, uint32_t timeout_ms)
{
	return ps_client_export_streaming_info(c, timeout_ms, NULL);
}
