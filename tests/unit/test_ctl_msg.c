/*
 * Control-plane messages: every body type survives encode -> frame -> decode with every field
 * intact, the frame's length prefix is big-endian and exact, and an envelope with no body
 * cannot be encoded.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/ctl.h"

/* Encode @env, check the prefix, decode the body. The caller frees the result. */
static ps_ctl_env_t *round_trip(const ps_ctl_env_t *env)
{
	ps_ctl_env_t *out = NULL;
	uint8_t *frame = NULL;
	size_t len = 0;
	uint32_t n;
	char why[160];

	assert_int_equal(ps_ctl_encode(env, &frame, &len), 0);
	assert_true(len > PS_CTL_HDR_LEN);
	n = (uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 | (uint32_t)frame[2] << 8 |
	    frame[3];
	assert_int_equal(n, len - PS_CTL_HDR_LEN);
	/* proto_version is packed first (the decoder's version check relies on it). */
	assert_int_equal(frame[4], 0x08);
	assert_int_equal(frame[5], PS_CTL_PROTO_VERSION);
	assert_int_equal(ps_ctl_decode(frame + PS_CTL_HDR_LEN, n, &out, why, sizeof(why)), 0);
	assert_non_null(out);
	assert_int_equal(out->proto_version, PS_CTL_PROTO_VERSION);
	assert_int_equal(out->request_id, env->request_id);
	assert_int_equal(out->body_case, env->body_case);
	free(frame);
	return out;
}

static void test_register_req(void **state)
{
	Psplus__Ctl__RegisterReq rq = PSPLUS__CTL__REGISTER_REQ__INIT;
	Psplus__Ctl__Address a = PSPLUS__CTL__ADDRESS__INIT;
	uint8_t tok[] = {0, 1, 2, 0xff, 'x'};
	ps_ctl_env_t env, *out;

	a.host = "10.1.2.3";
	a.port = 65535;
	rq.server_id = 4242;
	rq.data_addr = &a;
	rq.transport = "rdma";
	rq.auth_token.data = tok;
	rq.auth_token.len = sizeof(tok);
	ps_ctl_env_init(&env, UINT64_MAX);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_REGISTER_REQ;
	env.register_req = &rq;
	out = round_trip(&env);
	assert_int_equal(out->register_req->server_id, 4242);
	assert_string_equal(out->register_req->data_addr->host, "10.1.2.3");
	assert_int_equal(out->register_req->data_addr->port, 65535);
	assert_string_equal(out->register_req->transport, "rdma");
	assert_int_equal(out->register_req->auth_token.len, sizeof(tok));
	assert_memory_equal(out->register_req->auth_token.data, tok, sizeof(tok));
	assert_string_equal(ps_ctl_body_name(out), "register_req");
	ps_ctl_env_free(out);
}

static void test_register_resp(void **state)
{
	Psplus__Ctl__RegisterResp rr = PSPLUS__CTL__REGISTER_RESP__INIT;
	ps_ctl_env_t env, *out;

	rr.status = PS_EDUP_SERVER_ID;
	rr.message = "server id 3 is already registered";
	rr.cluster_version = 0xfedcba9876543210ull;
	rr.heartbeat_ms = 100;
	rr.liveness_timeout_ms = 1000;
	rr.server_num = 65536;
	ps_ctl_env_init(&env, 7);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_REGISTER_RESP;
	env.register_resp = &rr;
	out = round_trip(&env);
	/* Negative codes survive (sint32, zigzag). */
	assert_int_equal(out->register_resp->status, PS_EDUP_SERVER_ID);
	assert_string_equal(out->register_resp->message, rr.message);
	assert_true(out->register_resp->cluster_version == 0xfedcba9876543210ull);
	assert_int_equal(out->register_resp->heartbeat_ms, 100);
	assert_int_equal(out->register_resp->liveness_timeout_ms, 1000);
	assert_int_equal(out->register_resp->server_num, 65536);
	ps_ctl_env_free(out);
}

static void test_heartbeat(void **state)
{
	Psplus__Ctl__Heartbeat hb = PSPLUS__CTL__HEARTBEAT__INIT;
	Psplus__Ctl__Stats st = PSPLUS__CTL__STATS__INIT;
	Psplus__Ctl__Counter c0 = PSPLUS__CTL__COUNTER__INIT, c1 = PSPLUS__CTL__COUNTER__INIT;
	Psplus__Ctl__Counter *cs[] = {&c0, &c1};
	const Psplus__Ctl__Stats *o;
	ps_ctl_env_t env, *out;

	c0.name = "rxe0/1/port_xmit_data";
	c0.value = UINT64_MAX;
	c1.name = "rxe0/1/port_rcv_packets";
	c1.value = 0;
	st.mem_bytes = 1ull << 40;
	st.requests_served = 12345;
	st.transport_tx_bytes = 99;
	st.transport_rx_bytes = 100;
	st.n_nic = 2;
	st.nic = cs;
	hb.server_id = 2;
	hb.cluster_version = 1;
	hb.stats = &st;
	ps_ctl_env_init(&env, 8);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	out = round_trip(&env);
	o = out->heartbeat->stats;
	assert_int_equal(out->heartbeat->server_id, 2);
	assert_int_equal(out->heartbeat->cluster_version, 1);
	assert_non_null(o);
	assert_true(o->mem_bytes == 1ull << 40);
	assert_int_equal(o->requests_served, 12345);
	assert_int_equal(o->transport_tx_bytes, 99);
	assert_int_equal(o->transport_rx_bytes, 100);
	assert_int_equal(o->n_nic, 2);
	assert_string_equal(o->nic[0]->name, c0.name);
	assert_true(o->nic[0]->value == UINT64_MAX);
	assert_string_equal(o->nic[1]->name, c1.name);
	assert_int_equal(o->nic[1]->value, 0);
	ps_ctl_env_free(out);
}

static void test_heartbeat_resp(void **state)
{
	Psplus__Ctl__HeartbeatResp hr = PSPLUS__CTL__HEARTBEAT_RESP__INIT;
	ps_ctl_env_t env, *out;

	hr.status = PS_ESTALE_VERSION;
	hr.cluster_version = 0x8000000000000000ull;
	hr.shutdown = 1;
	hr.message = "stale";
	ps_ctl_env_init(&env, 9);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT_RESP;
	env.heartbeat_resp = &hr;
	out = round_trip(&env);
	assert_int_equal(out->heartbeat_resp->status, PS_ESTALE_VERSION);
	assert_true(out->heartbeat_resp->cluster_version == 0x8000000000000000ull);
	assert_true(out->heartbeat_resp->shutdown);
	assert_string_equal(out->heartbeat_resp->message, "stale");
	ps_ctl_env_free(out);
}

static void test_cluster_info(void **state)
{
	Psplus__Ctl__ClusterInfoReq rq = PSPLUS__CTL__CLUSTER_INFO_REQ__INIT;
	Psplus__Ctl__ClusterInfo ci = PSPLUS__CTL__CLUSTER_INFO__INIT;
	Psplus__Ctl__ServerInfo s0 = PSPLUS__CTL__SERVER_INFO__INIT, s1 = s0;
	Psplus__Ctl__Address a0 = PSPLUS__CTL__ADDRESS__INIT, a1 = a0;
	Psplus__Ctl__ServerInfo *ss[] = {&s0, &s1};
	uint8_t tok[] = "secret";
	ps_ctl_env_t env, *out;

	rq.auth_token.data = tok;
	rq.auth_token.len = 6;
	ps_ctl_env_init(&env, 10);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO_REQ;
	env.cluster_info_req = &rq;
	out = round_trip(&env);
	assert_int_equal(out->cluster_info_req->auth_token.len, 6);
	assert_memory_equal(out->cluster_info_req->auth_token.data, "secret", 6);
	ps_ctl_env_free(out);

	a0.host = "::1";
	a0.port = 7000;
	a1.host = "h1.example";
	a1.port = 7001;
	s0.server_id = 0;
	s0.data_addr = &a0;
	s0.transport = "tcp";
	s1.server_id = 5;
	s1.data_addr = &a1;
	s1.transport = "rdma";
	ci.cluster_version = 42;
	ci.server_num = 6;
	ci.n_servers = 2;
	ci.servers = ss;
	ps_ctl_env_init(&env, 11);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO;
	env.cluster_info = &ci;
	out = round_trip(&env);
	assert_int_equal(out->cluster_info->cluster_version, 42);
	assert_int_equal(out->cluster_info->server_num, 6);
	assert_int_equal(out->cluster_info->n_servers, 2);
	assert_int_equal(out->cluster_info->servers[0]->server_id, 0);
	assert_string_equal(out->cluster_info->servers[0]->data_addr->host, "::1");
	assert_int_equal(out->cluster_info->servers[0]->data_addr->port, 7000);
	assert_string_equal(out->cluster_info->servers[0]->transport, "tcp");
	assert_int_equal(out->cluster_info->servers[1]->server_id, 5);
	assert_string_equal(out->cluster_info->servers[1]->data_addr->host, "h1.example");
	assert_string_equal(out->cluster_info->servers[1]->transport, "rdma");
	ps_ctl_env_free(out);
}

static void test_shutdown_and_status(void **state)
{
	Psplus__Ctl__Shutdown sd = PSPLUS__CTL__SHUTDOWN__INIT;
	Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
	ps_ctl_env_t env, *out;

	sd.reason = "scheduler shutting down (SIGTERM)";
	ps_ctl_env_init(&env, 0);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN;
	env.shutdown = &sd;
	out = round_trip(&env);
	assert_string_equal(out->shutdown->reason, sd.reason);
	assert_string_equal(ps_ctl_body_name(out), "shutdown");
	ps_ctl_env_free(out);

	st.code = -EACCES;
	st.message = "authentication failed";
	ps_ctl_env_init(&env, 12);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
	env.status = &st;
	out = round_trip(&env);
	assert_int_equal(out->status->code, -EACCES);
	assert_string_equal(out->status->message, st.message);
	ps_ctl_env_free(out);
}

/* A body with every field at its default still decodes (proto3 sends nothing for them). */
static void test_empty_bodies(void **state)
{
	Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
	Psplus__Ctl__Heartbeat hb = PSPLUS__CTL__HEARTBEAT__INIT;
	ps_ctl_env_t env, *out;

	ps_ctl_env_init(&env, 0);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
	env.status = &st;
	out = round_trip(&env);
	assert_int_equal(out->status->code, 0);
	assert_string_equal(out->status->message, "");
	ps_ctl_env_free(out);

	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	out = round_trip(&env);
	assert_null(out->heartbeat->stats);
	ps_ctl_env_free(out);
}

static void test_encode_refuses_bodyless(void **state)
{
	ps_ctl_env_t env;
	uint8_t *frame = NULL;
	size_t len = 0;

	ps_ctl_env_init(&env, 1);
	assert_int_equal(ps_ctl_encode(&env, &frame, &len), -EINVAL);
	assert_null(frame);
	assert_string_equal(ps_ctl_body_name(&env), "none");
	assert_string_equal(ps_ctl_body_name(NULL), "none");
}

/* The frame limit applies to the sender too: a peer never receives what it must refuse. */
static void test_encode_refuses_oversized(void **state)
{
	Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
	ps_ctl_env_t env;
	uint8_t *frame = NULL;
	size_t len = 0;
	char *big = malloc(PS_CTL_FRAME_MAX + 1);

	assert_non_null(big);
	memset(big, 'a', PS_CTL_FRAME_MAX);
	big[PS_CTL_FRAME_MAX] = '\0';
	st.message = big;
	ps_ctl_env_init(&env, 1);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
	env.status = &st;
	assert_int_equal(ps_ctl_encode(&env, &frame, &len), -EMSGSIZE);
	assert_null(frame);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_req),
		cmocka_unit_test(test_register_resp),
		cmocka_unit_test(test_heartbeat),
		cmocka_unit_test(test_heartbeat_resp),
		cmocka_unit_test(test_cluster_info),
		cmocka_unit_test(test_shutdown_and_status),
		cmocka_unit_test(test_empty_bodies),
		cmocka_unit_test(test_encode_refuses_bodyless),
		cmocka_unit_test(test_encode_refuses_oversized),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
