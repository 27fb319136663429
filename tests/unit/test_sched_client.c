/*
 * The scheduler's client-facing handlers (scheduler/sched_declare.c, sched_sync.c, and the
 * ClusterInfo additions of sched_registry.c), driven in-process: a struct ps_sched with an
 * epoll set, connections that are one end of a socketpair, requests handed to
 * ps_sched_handle() and replies read from the other end. No threads, no network.
 *
 * Declare: ids, idempotence by name, -EEXIST, refusals (bad name, bad spec, over budget,
 * token), the placement in DeclareResp and ClusterInfo, parts of earlier variables kept.
 * Steps: bounded staleness and sync release exactly when they should, held replies go with a
 * lost connection, a job is forgotten when all its workers left, disagreements are refused.
 * Barriers: released when all arrived.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "scheduler/sched_internal.h"

struct peer {
	struct sched_conn *c; /* the scheduler's end */
	int fd;		      /* ours */
};

static struct ps_scheduler_opts opts;

static struct ps_sched *sched_new(uint32_t nservers, uint64_t mem_mb)
{
	struct ps_sched *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	memset(&opts, 0, sizeof(opts));
	opts.server_num = nservers;
	opts.mem_limit_mb = mem_mb;
	opts.net_limit_mbps = 1 << 20;
	opts.query_limit = UINT64_C(1) << 40;
	opts.heartbeat_ms = 100;
	opts.liveness_timeout_ms = 1000;
	s->opts = &opts;
	s->cluster_version = 0x1234;
	s->conns.next = s->conns.prev = &s->conns;
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	s->listen_fd = s->signal_fd = -1;
	assert_true(s->epoll_fd >= 0);
	s->slots = calloc(nservers, sizeof(*s->slots));
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

static void peer_open(struct ps_sched *s, struct peer *p)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	p->c = calloc(1, sizeof(*p->c));
	p->c->fd = sv[0];
	p->fd = sv[1];
	p->c->server_id = -1;
	snprintf(p->c->peer, sizeof(p->c->peer), "test:%d", sv[1]);
	ps_ctl_reader_init(&p->c->rd, 0);
	ev.data.ptr = p->c;
	assert_int_equal(epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, sv[0], &ev), 0);
	p->c->events = EPOLLIN;
	p->c->next = &s->conns;
	p->c->prev = s->conns.prev;
	s->conns.prev->next = p->c;
	s->conns.prev = p->c;
}

/* As the service does when a connection goes away. */
static void peer_close(struct ps_sched *s, struct peer *p)
{
	ps_sched_sync_conn_lost(s, p->c);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, p->c->fd, NULL);
	close(p->c->fd);
	close(p->fd);
	p->c->prev->next = p->c->next;
	p->c->next->prev = p->c->prev;
	ps_ctl_reader_fini(&p->c->rd);
	free(p->c->out);
	free(p->c);
	p->c = NULL;
}

static void sched_free(struct ps_sched *s)
{
	ps_sched_sync_free(s);
	ps_sched_vars_free(s);
	for (uint32_t i = 0; i < s->opts->server_num; i++)
		free(s->slots[i].shard_ports);
	free(s->slots);
	close(s->epoll_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* The next reply on @p within @ms, or NULL (timeout). */
static ps_ctl_env_t *reply(struct peer *p, int ms)
{
	ps_ctl_env_t *in = NULL;
	int rc = ps_ctl_recv(p->fd, ms, -1, &in, NULL, 0);

	if (rc == PS_ETIMEOUT)
		return NULL;
	assert_int_equal(rc, 0);
	return in;
}

static void no_reply(struct peer *p)
{
	assert_null(reply(p, 30));
}

/* ---- declare ------------------------------------------------------------------------------- */

static void spec_bytes(const struct ps_var_spec *vs, uint8_t out[PS_DP_DECLARE_BYTES])
{
	struct ps_dp_declare d;

	memset(&d, 0, sizeof(d));
	ps_dp_spec_encode(vs, &d);
	d.part_end = 1;
	d.nshards = 1;
	d.num_workers = 1;
	ps_dp_declare_encode(&d, out);
}

/* DeclareReq; returns the DeclareResp status, with the id and the reply (caller frees). */
static int declare(struct ps_sched *s, struct peer *p, const char *name,
		   const struct ps_var_spec *vs, uint32_t *id, ps_ctl_env_t **out)
{
	Psplus__Ctl__DeclareReq rq = PSPLUS__CTL__DECLARE_REQ__INIT;
	uint8_t b[PS_DP_DECLARE_BYTES];
	ps_ctl_env_t env, *in;
	int st;

	spec_bytes(vs, b);
	rq.name = (char *)name;
	rq.spec.data = b;
	rq.spec.len = sizeof(b);
	ps_ctl_env_init(&env, 77);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_DECLARE_REQ;
	env.declare_req = &rq;
	ps_sched_handle(s, p->c, &env);
	in = reply(p, 1000);
	assert_non_null(in);
	assert_int_equal(in->request_id, 77);
	if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_STATUS) {
		st = in->status->code;
	} else {
		assert_int_equal(in->body_case, PSPLUS__CTL__ENVELOPE__BODY_DECLARE_RESP);
		st = in->declare_resp->status;
		if (id)
			*id = in->declare_resp->var_id;
		assert_true(in->declare_resp->cluster_version == 0x1234);
	}
	if (out)
		*out = in;
	else
		ps_ctl_env_free(in);
	return st;
}

static struct ps_var_spec spec(enum ps_var_kind k, uint64_t rows, uint32_t width)
{
	struct ps_var_spec v = {.kind = k, .rows = rows, .width = width};

	v.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	return v;
}

static void test_declare(void **state)
{
	struct ps_sched *s = sched_new(2, 1); /* 1 MiB per server */
	struct ps_var_spec a = spec(PS_VAR_SPARSE, 1000, 8), b = a;
	struct ps_placement *t = NULL, *t2 = NULL;
	ps_ctl_env_t *in;
	struct peer p;
	uint32_t id = 0, id2 = 0;
	char err[256];

	(void)state;
	peer_open(s, &p);
	assert_int_equal(declare(s, &p, "emb", &a, &id, &in), 0);
	assert_int_equal(id, 1);
	assert_int_equal(ps_placement_decode(in->declare_resp->placement.data,
					     in->declare_resp->placement.len, &t, err, sizeof(err)),
			 0);
	assert_non_null(ps_placement_find(t, 1));
	assert_int_equal(ps_placement_find(t, 1)->domain, 1000);
	assert_string_equal(ps_placement_find(t, 1)->name, "emb");
	ps_ctl_env_free(in);
	/* Same name, same spec: same id, from any connection. */
	assert_int_equal(declare(s, &p, "emb", &a, &id2, NULL), 0);
	assert_int_equal(id2, 1);
	/* Same name, another spec: -EEXIST and a message naming both. */
	b.width = 9;
	assert_int_equal(declare(s, &p, "emb", &b, NULL, &in), -EEXIST);
	assert_non_null(strstr(in->declare_resp->message, "'emb'"));
	assert_non_null(strstr(in->declare_resp->message, "width 8"));
	assert_non_null(strstr(in->declare_resp->message, "width 9"));
	ps_ctl_env_free(in);
	b = a;
	b.init.kind = PS_INIT_CONSTANT;
	b.init.value = 1;
	assert_int_equal(declare(s, &p, "emb", &b, NULL, NULL), -EEXIST);
	/* A second variable gets the next id; the first one's parts do not move. */
	b = spec(PS_VAR_DENSE, 2000, 16);
	assert_int_equal(declare(s, &p, "dense", &b, &id, &in), 0);
	assert_int_equal(id, 2);
	assert_int_equal(ps_placement_decode(in->declare_resp->placement.data,
					     in->declare_resp->placement.len, &t2, err,
					     sizeof(err)),
			 0);
	ps_ctl_env_free(in);
	{
		const struct ps_placement_entry *e1 = ps_placement_find(t, 1),
						*e2 = ps_placement_find(t2, 1);

		assert_int_equal(e1->nparts, e2->nparts);
		for (uint32_t j = 0; j < e1->nparts; j++) {
			assert_true(e1->parts[j].begin == e2->parts[j].begin);
			assert_true(e1->parts[j].end == e2->parts[j].end);
			assert_int_equal(e1->parts[j].server, e2->parts[j].server);
		}
		assert_true(t2->cluster_version == 0x1234);
	}
	/* Hash: any number of keys, spread over every server. */
	b = spec(PS_VAR_HASH64, 0, 4);
	assert_int_equal(declare(s, &p, "h", &b, &id, NULL), 0);
	assert_int_equal(id, 3);
	/* Over budget: the placementer's refusal and message; nothing kept. */
	b = spec(PS_VAR_SPARSE, 10u << 20, 64);
	assert_int_equal(declare(s, &p, "huge", &b, NULL, &in), PS_EOVER_BUDGET);
	assert_non_null(strstr(in->declare_resp->message, "memory"));
	ps_ctl_env_free(in);
	assert_int_equal(s->nvars, 3);
	/* Bad names and specs. */
	assert_int_equal(declare(s, &p, "", &a, NULL, NULL), -EINVAL);
	assert_int_equal(declare(s, &p,
				 "a-name-of-sixty-four-bytes-a-name-of-sixty-four-bytes-0123456789",
				 &a, NULL, NULL),
			 -EINVAL);
	/* No rows: the DECLARE decoder already refuses the stand-in part [0, 1) of 0 rows. */
	b = spec(PS_VAR_SPARSE, 0, 4);
	assert_int_equal(declare(s, &p, "norows", &b, NULL, NULL), PS_EBAD_MESSAGE);
	{
		Psplus__Ctl__DeclareReq rq = PSPLUS__CTL__DECLARE_REQ__INIT;
		uint8_t junk[PS_DP_DECLARE_BYTES] = {0};
		ps_ctl_env_t env;

		rq.name = "junk";
		rq.spec.data = junk;
		rq.spec.len = 10;
		ps_ctl_env_init(&env, 5);
		env.body_case = PSPLUS__CTL__ENVELOPE__BODY_DECLARE_REQ;
		env.declare_req = &rq;
		ps_sched_handle(s, p.c, &env);
		in = reply(&p, 1000);
		assert_int_equal(in->declare_resp->status, PS_EBAD_MESSAGE);
		ps_ctl_env_free(in);
		rq.spec.len = sizeof(junk); /* all zero: part_begin >= part_end, refused */
		ps_sched_handle(s, p.c, &env);
		in = reply(&p, 1000);
		assert_int_equal(in->declare_resp->status, PS_EBAD_MESSAGE);
		ps_ctl_env_free(in);
	}
	assert_int_equal(s->nvars, 3);
	ps_placement_destroy(t);
	ps_placement_destroy(t2);
	peer_close(s, &p);
	sched_free(s);
}

/* ClusterInfo carries the placement and each server's shard ports and message size. */
static void test_cluster_info(void **state)
{
	struct ps_sched *s = sched_new(2, 64);
	Psplus__Ctl__RegisterReq rr = PSPLUS__CTL__REGISTER_REQ__INIT;
	Psplus__Ctl__Address addr = PSPLUS__CTL__ADDRESS__INIT;
	Psplus__Ctl__ClusterInfoReq cq = PSPLUS__CTL__CLUSTER_INFO_REQ__INIT;
	struct ps_var_spec a = spec(PS_VAR_SPARSE, 100, 4);
	uint32_t ports[3] = {5001, 5002, 5003};
	struct ps_placement *t = NULL;
	const Psplus__Ctl__ClusterInfo *ci;
	struct peer srv, cli;
	ps_ctl_env_t env, *in;
	char err[256];

	(void)state;
	peer_open(s, &srv);
	peer_open(s, &cli);
	addr.host = "127.0.0.1";
	addr.port = 5000;
	rr.server_id = 1;
	rr.data_addr = &addr;
	rr.transport = "tcp";
	rr.n_shard_ports = 3;
	rr.shard_ports = ports;
	rr.msg_size = 1 << 17;
	ps_ctl_env_init(&env, 1);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_REGISTER_REQ;
	env.register_req = &rr;
	ps_sched_handle(s, srv.c, &env);
	in = reply(&srv, 1000);
	assert_int_equal(in->register_resp->status, 0);
	ps_ctl_env_free(in);
	/* A port 0 among the shards is refused. */
	{
		struct peer bad;
		uint32_t bports[2] = {6000, 0};

		peer_open(s, &bad);
		rr.server_id = 0;
		rr.n_shard_ports = 2;
		rr.shard_ports = bports;
		ps_sched_handle(s, bad.c, &env);
		in = reply(&bad, 1000);
		assert_int_equal(in->register_resp->status, PS_EBAD_MESSAGE);
		ps_ctl_env_free(in);
		peer_close(s, &bad);
	}
	assert_int_equal(declare(s, &cli, "v", &a, NULL, NULL), 0);
	ps_ctl_env_init(&env, 2);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO_REQ;
	env.cluster_info_req = &cq;
	ps_sched_handle(s, cli.c, &env);
	in = reply(&cli, 1000);
	ci = in->cluster_info;
	assert_int_equal(ci->server_num, 2);
	assert_int_equal(ci->n_servers, 1);
	assert_int_equal(ci->servers[0]->server_id, 1);
	assert_int_equal(ci->servers[0]->n_shard_ports, 3);
	assert_int_equal(ci->servers[0]->shard_ports[2], 5003);
	assert_int_equal(ci->servers[0]->msg_size, 1 << 17);
	assert_int_equal(
		ps_placement_decode(ci->placement.data, ci->placement.len, &t, err, sizeof(err)),
		0);
	assert_non_null(ps_placement_find(t, 1));
	ps_placement_destroy(t);
	ps_ctl_env_free(in);
	peer_close(s, &cli);
	peer_close(s, &srv);
	sched_free(s);
}

static void test_declare_auth(void **state)
{
	struct ps_sched *s = sched_new(1, 64);
	struct ps_var_spec a = spec(PS_VAR_DENSE, 10, 4);
	struct peer p;

	(void)state;
	s->auth = true;
	memcpy(s->token, "secret", 6);
	s->token_len = 6;
	peer_open(s, &p);
	assert_int_equal(declare(s, &p, "x", &a, NULL, NULL), -EACCES);
	assert_int_equal(s->nvars, 0);
	peer_close(s, &p);
	sched_free(s);
}

/* ---- steps and barriers ---------------------------------------------------------------------- */

static void step_req(struct ps_sched *s, struct peer *p, uint32_t w, uint32_t nw, uint64_t step,
		     uint32_t mode, uint32_t staleness, uint64_t rid)
{
	Psplus__Ctl__StepReq rq = PSPLUS__CTL__STEP_REQ__INIT;
	ps_ctl_env_t env;

	rq.worker_id = w;
	rq.num_workers = nw;
	rq.step = step;
	rq.mode = mode;
	rq.staleness = staleness;
	ps_ctl_env_init(&env, rid);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_STEP_REQ;
	env.step_req = &rq;
	ps_sched_handle(s, p->c, &env);
}

/* The next reply on @p is a StepResp (or BarrierResp) for @rid with @status. */
static void expect_done(struct peer *p, uint64_t rid, int status)
{
	ps_ctl_env_t *in = reply(p, 1000);

	assert_non_null(in);
	assert_int_equal(in->request_id, rid);
	if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_STEP_RESP)
		assert_int_equal(in->step_resp->status, status);
	else
		assert_int_equal(in->barrier_resp->status, status);
	ps_ctl_env_free(in);
}

static void test_bounded(void **state)
{
	struct ps_sched *s = sched_new(1, 64);
	struct peer w0, w1;

	(void)state;
	peer_open(s, &w0);
	peer_open(s, &w1);
	/* Staleness 1: worker 0 may end steps 0 (and go into 1) while worker 1 has done none. */
	step_req(s, &w0, 0, 2, 0, PS_SYNC_BOUNDED, 1, 10);
	expect_done(&w0, 10, 0);
	/* Ending step 1 needs everyone past step 0. */
	step_req(s, &w0, 0, 2, 1, PS_SYNC_BOUNDED, 1, 11);
	no_reply(&w0);
	step_req(s, &w1, 1, 2, 0, PS_SYNC_BOUNDED, 1, 20);
	expect_done(&w1, 20, 0);
	expect_done(&w0, 11, 0);
	/* Worker 1 runs ahead by one, then must wait for worker 0. */
	step_req(s, &w1, 1, 2, 1, PS_SYNC_BOUNDED, 1, 21);
	expect_done(&w1, 21, 0);
	step_req(s, &w1, 1, 2, 2, PS_SYNC_BOUNDED, 1, 22);
	expect_done(&w1, 22, 0); /* min is 1 >= 2 - 1 */
	step_req(s, &w1, 1, 2, 3, PS_SYNC_BOUNDED, 1, 23);
	no_reply(&w1);
	/* Disagreements are refused at once and change nothing. */
	step_req(s, &w0, 0, 3, 2, PS_SYNC_BOUNDED, 1, 12);
	expect_done(&w0, 12, -EINVAL);
	step_req(s, &w0, 0, 2, 2, PS_SYNC_BOUNDED, 2, 13);
	expect_done(&w0, 13, -EINVAL);
	step_req(s, &w0, 0, 2, 2, PS_SYNC_SYNC, 0, 14);
	expect_done(&w0, 14, -EINVAL);
	step_req(s, &w0, 5, 2, 2, PS_SYNC_BOUNDED, 1, 15);
	expect_done(&w0, 15, -EINVAL);
	no_reply(&w1);
	/* A retried request is harmless (entries only grow). */
	step_req(s, &w0, 0, 2, 1, PS_SYNC_BOUNDED, 1, 16);
	expect_done(&w0, 16, 0);
	step_req(s, &w0, 0, 2, 2, PS_SYNC_BOUNDED, 1, 17);
	expect_done(&w0, 17, 0);
	expect_done(&w1, 23, 0);
	peer_close(s, &w0);
	peer_close(s, &w1);
	assert_null(s->job); /* everyone left: forgotten */
	sched_free(s);
}

static void test_sync_and_lost(void **state)
{
	struct ps_sched *s = sched_new(1, 64);
	struct peer w0, w1, w1b;

	(void)state;
	peer_open(s, &w0);
	peer_open(s, &w1);
	step_req(s, &w0, 0, 2, 0, PS_SYNC_SYNC, 0, 1);
	no_reply(&w0);
	step_req(s, &w1, 1, 2, 0, PS_SYNC_SYNC, 0, 2);
	expect_done(&w1, 2, 0);
	expect_done(&w0, 1, 0);
	/* Worker 1 waits at step 1, then its connection dies: the held reply goes with it, and
	 * worker 0 (still there) keeps the job alive. */
	step_req(s, &w1, 1, 2, 1, PS_SYNC_SYNC, 0, 3);
	no_reply(&w1);
	peer_close(s, &w1);
	assert_non_null(s->job);
	assert_null(s->job->w[1].conn);
	/* Worker 1 comes back on a new connection: its entry (step 1) was kept. */
	peer_open(s, &w1b);
	step_req(s, &w0, 0, 2, 1, PS_SYNC_SYNC, 0, 4);
	expect_done(&w0, 4, 0);
	step_req(s, &w1b, 1, 2, 2, PS_SYNC_SYNC, 0, 5);
	no_reply(&w1b);
	/* Everyone leaves: the next job starts from scratch, with another worker count. */
	peer_close(s, &w0);
	peer_close(s, &w1b);
	assert_null(s->job);
	peer_open(s, &w0);
	step_req(s, &w0, 0, 3, 0, PS_SYNC_SYNC, 0, 6);
	no_reply(&w0);
	assert_int_equal(s->job->num_workers, 3);
	/* Async is answered at once and touches nothing. */
	step_req(s, &w0, 0, 7, 9, PS_SYNC_ASYNC, 0, 7);
	expect_done(&w0, 7, 0);
	peer_close(s, &w0);
	sched_free(s);
}

static void barrier_req(struct ps_sched *s, struct peer *p, uint32_t w, uint32_t nw, uint64_t seq,
			uint64_t rid)
{
	Psplus__Ctl__BarrierReq rq = PSPLUS__CTL__BARRIER_REQ__INIT;
	ps_ctl_env_t env;

	rq.worker_id = w;
	rq.num_workers = nw;
	rq.seq = seq;
	ps_ctl_env_init(&env, rid);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_BARRIER_REQ;
	env.barrier_req = &rq;
	ps_sched_handle(s, p->c, &env);
}

static void test_barrier(void **state)
{
	struct ps_sched *s = sched_new(1, 64);
	struct peer p[3];

	(void)state;
	for (int i = 0; i < 3; i++)
		peer_open(s, &p[i]);
	barrier_req(s, &p[0], 0, 3, 1, 100);
	barrier_req(s, &p[2], 2, 3, 1, 300);
	no_reply(&p[0]);
	no_reply(&p[2]);
	barrier_req(s, &p[1], 1, 3, 1, 200);
	expect_done(&p[0], 100, 0);
	expect_done(&p[1], 200, 0);
	expect_done(&p[2], 300, 0);
	barrier_req(s, &p[1], 1, 3, 2, 201);
	no_reply(&p[1]);
	barrier_req(s, &p[0], 0, 3, 0, 101);
	expect_done(&p[0], 101, -EINVAL); /* barriers count from 1 */
	for (int i = 0; i < 3; i++)
		peer_close(s, &p[i]);
	sched_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_declare),	      cmocka_unit_test(test_cluster_info),
		cmocka_unit_test(test_declare_auth),  cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_sync_and_lost), cmocka_unit_test(test_barrier),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
