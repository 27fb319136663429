/*
 * The client's data path (client/client_ops.c, client_dp.c, client_conn.c) against a real data
 * plane (server/dp.h, two threads in this process) and a fake scheduler (a thread answering
 * ClusterInfoReq and DeclareReq with a version the test sets). Built twice: over tcp
 * (test_client_dp) and over the rdma backend on the fake verbs layer (test_client_dp_fake:
 * every registration, rkey and gather bounds-checked by the fake, nothing left registered).
 *
 *   - the cluster version changes (servers and scheduler agree): the refused requests are
 *     retried after re-reading the cluster, applied exactly once, and counted in retries;
 *   - the scheduler lags behind the servers: the client re-reads until they agree;
 *   - they never agree: PS_ESTALE_VERSION at the timeout, with a message, nothing changed;
 *   - dense variables retry their refused float ranges;
 *   - a server that goes away fails the call with PS_EPEER_LOST at once, not at the timeout;
 *   - a pull refused with -E2BIG is split;
 *   - registered caller memory moves zero copy both ways (nothing staged, nothing copied by the
 *     transport), plain memory through the staging and request blocks (still no transport copy);
 *   - repeated ids of a pull go on the wire once, or every time (pull_dedupe).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "common/clock.h"
#include "common/ctl.h"
#include "common/dp_proto.h"
#include "common/kv.h"
#include "scheduler/placement.h"
#include "server/dp.h"

#ifndef CDT_TRANSPORT
#define CDT_TRANSPORT "tcp" /* test_client_dp_fake: "rdma" over the fake verbs layer */
#endif
#ifdef CDT_FAKE
#include "tests/unit/fake_verbs.h"
#endif

#define V1   0x1111111111111111ull
#define V2   0x2222222222222222ull
#define V3   0x3333333333333333ull
#define V4   0x4444444444444444ull
#define MAXC 8

/* The fake scheduler: one server (the in-process data plane), variables declared in order. */
struct fake {
	struct ps_dp *dp;
	int lfd, stop_fd;
	pthread_t th;
	_Atomic uint64_t version;
	_Atomic uint32_t info_reqs;
	char url[128];
	/* thread only */
	struct ps_placement_var vars[16];
	char names[16][64];
	uint32_t nvars;
	uint8_t *blob;
	size_t blob_len;
};

static void fake_place(struct fake *f)
{
	struct ps_placement_budget b = {UINT64_C(1) << 40, UINT64_C(1) << 40, UINT64_C(1) << 40};
	struct ps_placement_input in = {.vars = f->vars,
					.nvars = f->nvars,
					.nservers = 1,
					.budgets = &b,
					.steps_per_s = 1,
					.rows_per_request = 100,
					.cluster_version = atomic_load(&f->version)};
	struct ps_placement *t = NULL;
	char err[256];

	assert_int_equal(ps_placement_compute(&in, &t, err, sizeof(err)), 0);
	free(f->blob);
	assert_int_equal(ps_placement_encode(t, &f->blob, &f->blob_len), 0);
	ps_placement_destroy(t);
}

static void fake_answer(struct fake *f, int fd, const ps_ctl_env_t *in)
{
	Psplus__Ctl__ClusterInfo ci = PSPLUS__CTL__CLUSTER_INFO__INIT;
	Psplus__Ctl__ServerInfo si = PSPLUS__CTL__SERVER_INFO__INIT, *sp = &si;
	Psplus__Ctl__Address a = PSPLUS__CTL__ADDRESS__INIT;
	Psplus__Ctl__DeclareResp dr = PSPLUS__CTL__DECLARE_RESP__INIT;
	uint32_t ports[8];
	ps_ctl_env_t out;

	ps_ctl_env_init(&out, in->request_id);
	if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO_REQ) {
		atomic_fetch_add(&f->info_reqs, 1);
		a.host = "127.0.0.1";
		a.port = ps_dp_port(f->dp, 0);
		for (uint32_t i = 0; i < ps_dp_threads(f->dp); i++)
			ports[i] = ps_dp_port(f->dp, i);
		si.server_id = 0;
		si.data_addr = &a;
		si.transport = CDT_TRANSPORT;
		si.shard_ports = ports;
		si.n_shard_ports = ps_dp_threads(f->dp);
		si.msg_size = ps_dp_msg_size(f->dp);
		ci.cluster_version = atomic_load(&f->version);
		ci.server_num = 1;
		ci.n_servers = 1;
		ci.servers = &sp;
		if (f->nvars) {
			fake_place(f); /* the table carries the version */
			ci.placement.data = f->blob;
			ci.placement.len = f->blob_len;
		}
		out.body_case = PSPLUS__CTL__ENVELOPE__BODY_CLUSTER_INFO;
		out.cluster_info = &ci;
	} else if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_DECLARE_REQ) {
		struct ps_dp_declare d;
		struct ps_var_spec vs;
		uint32_t id = 0;

		assert_int_equal(ps_dp_declare_decode(in->declare_req->spec.data,
						      in->declare_req->spec.len, &d),
				 0);
		assert_int_equal(ps_dp_spec_decode(&d, &vs), 0);
		for (uint32_t i = 0; i < f->nvars; i++)
			if (!strcmp(f->names[i], in->declare_req->name))
				id = f->vars[i].id;
		if (!id) {
			struct ps_placement_var *v = &f->vars[f->nvars];

			snprintf(f->names[f->nvars], 64, "%s", in->declare_req->name);
			memset(v, 0, sizeof(*v));
			v->name = f->names[f->nvars];
			v->id = id = f->nvars + 1;
			v->kind = vs.kind == PS_VAR_DENSE    ? PS_PLACE_DENSE
				  : vs.kind == PS_VAR_SPARSE ? PS_PLACE_SPARSE
							     : PS_PLACE_HASH;
			v->rows = vs.kind <= PS_VAR_SPARSE ? vs.rows : 0;
			v->width = vs.width;
			f->nvars++;
		}
		fake_place(f);
		dr.var_id = id;
		dr.cluster_version = atomic_load(&f->version);
		dr.placement.data = f->blob;
		dr.placement.len = f->blob_len;
		out.body_case = PSPLUS__CTL__ENVELOPE__BODY_DECLARE_RESP;
		out.declare_resp = &dr;
	} else {
		fail_msg("fake scheduler: unexpected %s", ps_ctl_body_name(in));
	}
	assert_int_equal(ps_ctl_send(fd, &out, 1000, -1), 0);
}

static void *fake_thread(void *arg)
{
	struct fake *f = arg;
	struct pollfd p[2 + MAXC];
	struct ps_ctl_reader rd[MAXC];
	int fds[MAXC], n = 0;

	for (;;) {
		p[0] = (struct pollfd){.fd = f->stop_fd, .events = POLLIN};
		p[1] = (struct pollfd){.fd = f->lfd, .events = POLLIN};
		for (int i = 0; i < n; i++)
			p[2 + i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
		if (poll(p, 2 + n, 1000) < 0 || p[0].revents)
			break;
		if (p[1].revents && n < MAXC) {
			int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

			if (fd >= 0) {
				fds[n] = fd;
				ps_ctl_reader_init(&rd[n++], 0);
			}
		}
		for (int i = 0; i < n; i++) {
			ps_ctl_env_t *in;
			int rc;

			if (!p[2 + i].revents)
				continue;
			while ((rc = ps_ctl_reader_read_fd(&rd[i], fds[i], &in)) == 1) {
				fake_answer(f, fds[i], in);
				ps_ctl_env_free(in);
			}
			if (rc < 0) { /* closed: drop it (order does not matter) */
				close(fds[i]);
				ps_ctl_reader_fini(&rd[i]);
				fds[i] = fds[n - 1];
				rd[i] = rd[n - 1];
				n--;
				break; /* p[] no longer matches fds[]: poll again */
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(fds[i]);
		ps_ctl_reader_fini(&rd[i]);
	}
	return NULL;
}

static struct fake *fake_start_bounce(uint32_t bounce_blocks)
{
	/* Few bounce blocks: every test of this process counts against one memlock budget. */
	struct ps_dp_opts o = {.transport = CDT_TRANSPORT,
			       .host = "127.0.0.1",
			       .threads = 2,
			       .bounce_blocks = bounce_blocks};
	struct fake *f = calloc(1, sizeof(*f));
	struct ps_kv_entry e = {.host = "127.0.0.1", .server_num = 1};
	char err[256];

	assert_non_null(f);
	assert_int_equal(ps_dp_create(&o, &f->dp), 0);
	atomic_store(&f->version, V1);
	ps_dp_set_cluster_version(f->dp, V1);
	assert_int_equal(ps_ctl_listen("127.0.0.1", 0, &f->lfd), 0);
	assert_int_equal(ps_ctl_sock_name(f->lfd, false, err, sizeof(err), &e.port), 0);
	snprintf(f->url, sizeof(f->url), "file:///tmp/psplus_retry_%d.kv", (int)getpid());
	assert_int_equal(ps_kv_publish(f->url, &e, err, sizeof(err)), 0);
	f->stop_fd = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(pthread_create(&f->th, NULL, fake_thread, f), 0);
	return f;
}

static struct fake *fake_start(void)
{
	return fake_start_bounce(4);
}

static void fake_stop(struct fake *f)
{
	uint64_t one = 1;
	char err[256];

	assert_int_equal(write(f->stop_fd, &one, 8), 8);
	pthread_join(f->th, NULL);
	close(f->stop_fd);
	close(f->lfd);
	ps_kv_remove(f->url, NULL, err, sizeof(err));
	ps_dp_destroy(f->dp);
	free(f->blob);
	free(f);
#ifdef CDT_FAKE
	{
		struct fake_verbs_counts n;

		/* Every registration and verbs object of the client and the server is gone. */
		if (fake_verbs_live_objects(&n))
			fail_msg(
				"live verbs objects: mr %d qp %d cq %d pd %d ctx %d misuse %d (%s)",
				n.mrs, n.qps, n.cqs, n.pds, n.contexts, n.misuse,
				fake_verbs_last_misuse());
	}
#endif
}

static struct ps_client *client(struct fake *f, uint32_t timeout_ms)
{
	struct ps_client_opts o = ps_client_opts_default();
	struct ps_client *c = NULL;

	o.kv_path = f->url;
	o.transport = CDT_TRANSPORT;
	o.timeout_ms = timeout_ms;
	assert_int_equal(ps_client_create(&o, &c), 0);
	return c;
}

static uint64_t retries(struct ps_client *c)
{
	struct ps_client_stats st;

	ps_client_stats_get(c, &st);
	return st.retries;
}

static struct ps_var_spec sgd(enum ps_var_kind k, uint64_t rows, uint32_t width)
{
	struct ps_var_spec s = {.kind = k, .rows = rows, .width = width};

	s.init.kind = PS_INIT_CONSTANT;
	s.init.value = 1.0f;
	s.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	s.optim.sgd.learning_rate = 1.0f;
	return s;
}

/* Flip the scheduler's version after a delay (a scheduler that lags behind the servers). */
struct flip {
	struct fake *f;
	uint64_t to;
	int ms;
};

static void *flip_later(void *arg)
{
	struct flip *fl = arg;

	usleep((useconds_t)fl->ms * 1000);
	atomic_store(&fl->f->version, fl->to);
	return NULL;
}

static void test_stale_retry(void **state)
{
	struct fake *f = fake_start();
	struct ps_client *c = client(f, 3000);
	struct ps_var_spec s = sgd(PS_VAR_SPARSE, 1000, 4);
	uint64_t ids[200];
	float g[200 * 4], out[200 * 4];
	uint32_t id, reqs0;
	struct flip fl;
	pthread_t th;
	int rc;

	(void)state;
	assert_int_equal(ps_client_declare(c, "s", &s, &id), 0);
	for (int i = 0; i < 200; i++) {
		ids[i] = (uint64_t)i * 5; /* rows on both threads */
		for (int j = 0; j < 4; j++)
			g[i * 4 + j] = 0.25f;
	}
	assert_int_equal(ps_client_sparse_push(c, id, ids, 200, g), 0);
	assert_int_equal(retries(c), 0);

	/* A restore: servers and scheduler both move to V2. The push is refused by every
	 * thread, the cluster re-read, the push re-sent, and applied once. */
	reqs0 = atomic_load(&f->info_reqs);
	ps_dp_set_cluster_version(f->dp, V2);
	atomic_store(&f->version, V2);
	assert_int_equal(ps_client_sparse_push(c, id, ids, 200, g), 0);
	assert_true(retries(c) >= 2); /* one refused request per thread at least */
	assert_true(atomic_load(&f->info_reqs) > reqs0);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, 200, out), 0);
	for (int i = 0; i < 200 * 4; i++)
		assert_true(out[i] == 1.0f - 2 * 0.25f); /* two pushes, each applied once */

	/* The scheduler lags: servers at V3, the scheduler says V2 for 300 ms more. */
	ps_dp_set_cluster_version(f->dp, V3);
	fl = (struct flip){.f = f, .to = V3, .ms = 300};
	pthread_create(&th, NULL, flip_later, &fl);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, 200, out), 0);
	pthread_join(th, NULL);
	assert_true(out[0] == 0.5f);

	/* They never agree: PS_ESTALE_VERSION at the timeout, and the push changed nothing. */
	ps_dp_set_cluster_version(f->dp, V4);
	rc = ps_client_sparse_push(c, id, ids, 200, g);
	assert_int_equal(rc, PS_ESTALE_VERSION);
	assert_non_null(strstr(ps_client_last_error(), "'s'"));
	atomic_store(&f->version, V4);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, 200, out), 0);
	for (int i = 0; i < 200 * 4; i++)
		assert_true(out[i] == 0.5f);
	ps_client_destroy(c);
	fake_stop(f);
}

static void test_stale_dense(void **state)
{
	struct fake *f = fake_start();
	struct ps_client *c = client(f, 3000);
	struct ps_var_spec s = sgd(PS_VAR_DENSE, 50, 3);
	float g[150], out[150];
	uint64_t r0;
	uint32_t id;

	(void)state;
	assert_int_equal(ps_client_declare(c, "d", &s, &id), 0);
	for (int i = 0; i < 150; i++)
		g[i] = (float)i;
	ps_dp_set_cluster_version(f->dp, V2);
	atomic_store(&f->version, V2);
	r0 = retries(c);
	assert_int_equal(ps_client_dense_push(c, id, g, 150), 0);
	assert_true(retries(c) > r0);
	ps_dp_set_cluster_version(f->dp, V3);
	atomic_store(&f->version, V3);
	assert_int_equal(ps_client_dense_pull(c, id, out, 150), 0);
	for (int i = 0; i < 150; i++)
		assert_true(out[i] == 1.0f - (float)i);
	/* Declaring again after a change re-sends DECLARE with the new version. */
	ps_dp_set_cluster_version(f->dp, V4);
	atomic_store(&f->version, V4);
	assert_int_equal(ps_client_declare(c, "d", &s, &id), 0);
	ps_client_destroy(c);
	fake_stop(f);
}

static void test_server_lost(void **state)
{
	struct fake *f = fake_start();
	struct ps_client *c = client(f, 5000);
	struct ps_var_spec s = sgd(PS_VAR_SPARSE, 100, 4);
	uint64_t ids[4] = {1, 2, 60, 70}, t0;
	float out[16];
	uint32_t id;
	int rc;

	(void)state;
	assert_int_equal(ps_client_declare(c, "s", &s, &id), 0);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, 4, out), 0);
	/* The server's data plane goes away: the call fails fast with PS_EPEER_LOST. */
	ps_dp_destroy(f->dp);
	{
		struct ps_dp_opts o = {.transport = CDT_TRANSPORT,
				       .host = "127.0.0.1",
				       .threads = 2,
				       .bounce_blocks = 4};

		/* A new data plane on other ports, so the fake scheduler still has one to describe
		 * (the client does not look before its next failure). */
		assert_int_equal(ps_dp_create(&o, &f->dp), 0);
		ps_dp_set_cluster_version(f->dp, V1);
	}
	t0 = ps_clock_now_ms();
	rc = ps_client_sparse_pull(c, id, ids, 4, out);
	assert_int_equal(rc, PS_EPEER_LOST);
	assert_true(ps_clock_now_ms() - t0 < 2000);
	assert_non_null(strstr(ps_client_last_error(), "server 0"));
	/* The next call re-reads the cluster and reaches the new data plane, which holds no
	 * variables (a restarted server starts empty until a restore). */
	rc = ps_client_sparse_pull(c, id, ids, 4, out);
	assert_int_equal(rc, PS_EUNKNOWN_VAR);
	assert_non_null(strstr(ps_client_last_error(), "server 0"));
	ps_client_destroy(c);
	fake_stop(f);
}

/*
 * A server thread with one bounce block answers -E2BIG to a pull whose rows past its gather list
 * need more: the client halves its rows per request for that thread and gets everything.
 */
static void test_pull_split(void **state)
{
	struct fake *f = fake_start_bounce(1);
	struct ps_client *c = client(f, 5000);
	struct ps_var_spec s = sgd(PS_VAR_SPARSE, 4000, 64);
	enum { N = 2800 };
	uint64_t *ids = malloc(N * sizeof(*ids)), r0;
	float *out = malloc((size_t)N * 64 * sizeof(float)), *g = calloc(64, sizeof(float));
	struct ps_client_stats st;
	uint32_t id;

	(void)state;
	assert_int_equal(ps_client_declare(c, "wide", &s, &id), 0);
	/* Row i: one row pushed so the rows differ (row 7 becomes 1 - 0.5). */
	g[3] = 0.5f;
	{
		uint64_t seven = 7;

		assert_int_equal(ps_client_sparse_push(c, id, &seven, 1, g), 0);
	}
	for (int i = 0; i < N; i++)
		ids[i] = (uint64_t)(i * 7) % 4000; /* 1,429 and 1,371 rows per thread */
	ps_client_stats_get(c, &st);
	r0 = st.requests;
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), 0);
	ps_client_stats_get(c, &st);
	assert_int_equal(st.requests - r0, 2 + 4); /* one per thread refused, then halves */
	for (int i = 0; i < N; i++)
		for (int j = 0; j < 64; j++)
			assert_true(out[i * 64 + j] == (ids[i] == 7 && j == 3 ? 0.5f : 1.0f));
	/* The destinations remember: the next pull goes in halves at once. */
	r0 = st.requests;
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), 0);
	ps_client_stats_get(c, &st);
	assert_int_equal(st.requests - r0, 4);
	free(ids);
	free(out);
	free(g);
	ps_client_destroy(c);
	fake_stop(f);
}

static void test_zero_copy(void **state)
{
	struct fake *f = fake_start();
	struct ps_client *c = client(f, 5000);
	struct ps_var_spec s = sgd(PS_VAR_SPARSE, 4000, 16);
	enum { N = 3000 };
	uint64_t *ids = malloc(N * sizeof(*ids));
	float *out = malloc((size_t)N * 16 * sizeof(float));
	float *g = malloc((size_t)N * 16 * sizeof(float));
	struct ps_client_buf *bi, *bo, *bg;
	struct ps_client_stats a, b;
	uint32_t id;

	(void)state;
	assert_int_equal(ps_client_declare(c, "zc", &s, &id), 0);
	for (int i = 0; i < N; i++) {
		ids[i] = (uint64_t)i; /* ascending: already grouped by thread */
		for (int j = 0; j < 16; j++)
			g[i * 16 + j] = 0.125f;
	}
	assert_int_equal(ps_client_register_buffer(c, ids, N * sizeof(*ids), &bi), 0);
	assert_int_equal(ps_client_register_buffer(c, out, (size_t)N * 16 * 4, &bo), 0);
	assert_int_equal(ps_client_register_buffer(c, g, (size_t)N * 16 * 4, &bg), 0);
	ps_client_stats_get(c, &a);
	assert_int_equal(ps_client_sparse_push(c, id, ids, N, g), 0);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), 0);
	ps_client_stats_get(c, &b);
	assert_string_equal(b.transport, CDT_TRANSPORT);
	assert_true(b.bytes_staged == a.bytes_staged);
	assert_true(b.transport_copied == 0);
	assert_true(b.bytes_pulled - a.bytes_pulled == (uint64_t)N * 16 * 4);
	assert_true(b.bytes_pushed - a.bytes_pushed == (uint64_t)N * 16 * 4);
	for (int i = 0; i < N * 16; i++)
		assert_true(out[i] == 1.0f - 0.125f);
	/* Reversed ids in plain memory: staged both ways, still nothing copied by the transport. */
	ps_client_unregister_buffer(bo);
	ps_client_unregister_buffer(bg);
	ps_client_unregister_buffer(bi);
	for (int i = 0; i < N; i++)
		ids[i] = (uint64_t)(N - 1 - i);
	assert_int_equal(ps_client_sparse_push(c, id, ids, N, g), 0);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), 0);
	ps_client_stats_get(c, &a);
	assert_true(a.bytes_staged - b.bytes_staged >= (uint64_t)N * (8 + 16 * 4) * 2);
	assert_true(a.transport_copied == 0);
	for (int i = 0; i < N * 16; i++)
		assert_true(out[i] == 1.0f - 0.25f);
	free(ids);
	free(out);
	free(g);
	ps_client_destroy(c);
	fake_stop(f);
}

/* A client with pull_dedupe @mode. */
static struct ps_client *client_dedupe(struct fake *f, enum ps_pull_dedupe mode)
{
	struct ps_client_opts o = ps_client_opts_default();
	struct ps_client *c = NULL;

	o.kv_path = f->url;
	o.transport = CDT_TRANSPORT;
	o.timeout_ms = 5000;
	o.pull_dedupe = mode;
	assert_int_equal(ps_client_create(&o, &c), 0);
	return c;
}

/*
 * Repeated ids in a pull into plain memory: by default each distinct id goes on the wire once
 * and the repeats get their first occurrence's row (pull_dups counts them, bytes_pulled the
 * distinct rows only); with PS_PULL_DEDUPE_NEVER every occurrence is sent. Into registered
 * memory the default keeps the zero-copy landing (every occurrence sent), ALWAYS de-duplicates.
 * Under 1/8 repeated nothing is de-duplicated. 128-bit keys that share one half are not merged.
 */
static void test_pull_dedupe(void **state)
{
	struct fake *f = fake_start();
	struct ps_client *c = client_dedupe(f, PS_PULL_DEDUPE_AUTO);
	struct ps_client *r = client_dedupe(f, PS_PULL_DEDUPE_NEVER);
	struct ps_client *al = client_dedupe(f, PS_PULL_DEDUPE_ALWAYS);
	struct ps_client_buf *bo;
	struct ps_var_spec s = sgd(PS_VAR_SPARSE, 1000, 8), h = sgd(PS_VAR_HASH128, 0, 8);
	enum { N = 600, D = 150, W = 8 };
	uint64_t *ids = malloc(N * sizeof(*ids)), all[D];
	float *out = malloc((size_t)N * W * sizeof(float)), *g = malloc((size_t)N * W * 4);
	struct ps_key128 k[6] = {{5, 1}, {5, 2}, {5, 1}, {6, 1}, {5, 2}, {5, 1}};
	struct ps_client_stats a, b;
	uint32_t id, hid;

	(void)state;
	h.rows = 0;
	assert_int_equal(ps_client_declare(c, "dd", &s, &id), 0);
	assert_int_equal(ps_client_declare(r, "dd", &s, &id), 0);
	assert_int_equal(ps_client_declare(al, "dd", &s, &id), 0);
	/* Row i of the first D: 1 - g = 1 + i * 10 + j. */
	for (int i = 0; i < D; i++) {
		all[i] = (uint64_t)i;
		for (int j = 0; j < W; j++)
			g[i * W + j] = -(float)(i * 10 + j);
	}
	assert_int_equal(ps_client_sparse_push(c, id, all, D, g), 0);
	for (int i = 0; i < N; i++)
		ids[i] = (uint64_t)(i * 37) % D; /* every id 4 times, interleaved */
	/* Passes: auto into plain memory, never, then into registered memory auto and always. */
	for (int pass = 0; pass < 4; pass++) {
		struct ps_client *x = pass == 1 ? r : pass == 3 ? al : c;
		bool dd = pass == 0 || pass == 3;

		if (pass == 2)
			assert_int_equal(ps_client_register_buffer(c, out, (size_t)N * W * 4, &bo),
					 0);
		if (pass == 3) {
			ps_client_unregister_buffer(bo);
			assert_int_equal(ps_client_register_buffer(al, out, (size_t)N * W * 4, &bo),
					 0);
		}
		ps_client_stats_get(x, &a);
		memset(out, 0xff, (size_t)N * W * sizeof(float));
		assert_int_equal(ps_client_sparse_pull(x, id, ids, N, out), 0);
		ps_client_stats_get(x, &b);
		for (int i = 0; i < N; i++)
			for (int j = 0; j < W; j++)
				assert_true(out[i * W + j] == 1.0f + (float)(ids[i] * 10 + j));
		assert_int_equal(b.pull_dups - a.pull_dups, dd ? N - D : 0);
		assert_int_equal(b.bytes_pulled - a.bytes_pulled, (uint64_t)(dd ? D : N) * W * 4);
	}
	ps_client_unregister_buffer(bo);
	/* Under 1/8 repeated: sent as they are (the rows keep landing in place). */
	for (int i = 0; i < N; i++)
		ids[i] = i < N - 10 ? (uint64_t)i : (uint64_t)(i - (N - 10)); /* 10 repeats */
	ps_client_stats_get(c, &a);
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), 0);
	ps_client_stats_get(c, &b);
	assert_int_equal(b.pull_dups - a.pull_dups, 0);
	assert_int_equal(b.bytes_pulled - a.bytes_pulled, (uint64_t)N * W * 4);
	for (int i = 0; i < N; i++)
		assert_true(out[i * W] == (ids[i] < D ? 1.0f + (float)(ids[i] * 10) : 1.0f));
	/* An id out of range is named at its first position, repeated or not; nothing is sent. */
	ids[3] = 1000;
	ids[9] = 1000;
	assert_int_equal(ps_client_sparse_pull(c, id, ids, N, out), PS_EOUT_OF_RANGE);
	assert_non_null(strstr(ps_client_last_error(), "id 1000 at position 3"));

	/* 128-bit keys: {5,1} {5,2} {6,1} are three rows (lo 5 twice, hi 1 twice). */
	assert_int_equal(ps_client_declare(c, "dd128", &h, &hid), 0);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < W; j++)
			g[i * W + j] = -(float)(k[i].lo * 100 + k[i].hi * 10 + (uint64_t)j);
	/* One push of each distinct key (positions 0, 1, 3): rows 1 + lo*100 + hi*10 + j. */
	{
		struct ps_key128 u[3] = {k[0], k[1], k[3]};
		float gu[3 * W];

		memcpy(gu, g, W * 4);
		memcpy(gu + W, g + W, W * 4);
		memcpy(gu + 2 * W, g + 3 * W, W * 4);
		assert_int_equal(ps_client_hash128_push(c, hid, u, 3, gu), 0);
	}
	ps_client_stats_get(c, &a);
	assert_int_equal(ps_client_hash128_pull(c, hid, k, 6, out), 0);
	ps_client_stats_get(c, &b);
	assert_int_equal(b.pull_dups - a.pull_dups, 3);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < W; j++)
			assert_true(out[i * W + j] ==
				    1.0f + (float)(k[i].lo * 100 + k[i].hi * 10 + (uint64_t)j));
	free(ids);
	free(out);
	free(g);
	ps_client_destroy(al);
	ps_client_destroy(r);
	ps_client_destroy(c);
	fake_stop(f);
}

/*
 * Each test in its own process, as libuv does: a test that fails half-way leaves no data plane,
 * registration or fake-verbs state behind for the next one.
 */
int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stale_retry), cmocka_unit_test(test_stale_dense),
		cmocka_unit_test(test_server_lost), cmocka_unit_test(test_pull_split),
		cmocka_unit_test(test_zero_copy),   cmocka_unit_test(test_pull_dedupe),
	};
	int failed = 0;

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		int st = 0;
		pid_t p = fork();

		if (p == 0)
			exit(_cmocka_run_group_tests(tests[i].name, &tests[i], 1, NULL, NULL) ? 1
											      : 0);
		if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st))
			failed++;
	}
	return failed ? 1 : 0;
}
