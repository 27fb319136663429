/*
 * The data plane beyond single requests: synchronous steps (server/dp_sync.c) - two workers'
 * pushes equal one push of the summed gradients (1e-6), sparse, hash and dense; the step rules
 * (-EALREADY, -EBUSY, worker range) changing nothing; a new cluster version dropping a partial
 * step - then replies queued when the worker has no receive buffer free (-EAGAIN from the
 * transport) and delivered in order once it releases them, the statistics, and the NIC
 * counters read from a fake sysfs tree.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/unit/dp_test_util.h"

static struct dpt D;

static int setup(void **state)
{
	dpt_open(&D, NULL, 0);
	return 0;
}

static int teardown(void **state)
{
	dpt_close(&D);
	return 0;
}

/* Adam: a non-linear optimizer, so two updates and one summed update differ visibly. */
static struct ps_var_spec adam_spec(enum ps_var_kind kind, uint64_t rows, uint32_t width)
{
	struct ps_var_spec s = dpt_spec(kind, rows, width, 0.25f);

	s.optim = ps_optimizer_defaults(PS_OPTIM_ADAM);
	s.optim.adam.learning_rate = 0.1f;
	return s;
}

static void fill(float *g, size_t n, float seed)
{
	for (size_t i = 0; i < n; i++)
		g[i] = seed * (float)((i * 37 + 11) % 17) / 17.f - 0.3f;
}

static void test_sync_sparse_equals_summed_push(void **state)
{
	enum { W = 5 };
	struct ps_var_spec s = adam_spec(PS_VAR_SPARSE, 40, W);
	struct ps_tp_conn *w1 = dpt_connect(&D, 0);
	uint64_t ids0[3] = {1, 2, 2}, ids1[2] = {2, 3}, all[3] = {1, 2, 3}, sep[3] = {1, 2, 3};
	float g0[3 * W], g1[2 * W], sum[3 * W], a[3 * W], b[3 * W], c[3 * W];

	/* var 10: synchronous, 2 workers; var 11: the reference; var 12: two plain pushes. */
	assert_int_equal(dpt_declare(&D, 0, 10, &s, 0, 40, 2), 0);
	assert_int_equal(dpt_declare(&D, 0, 11, &s, 0, 40, 1), 0);
	assert_int_equal(dpt_declare(&D, 0, 12, &s, 0, 40, 1), 0);
	fill(g0, 3 * W, 1.f);
	fill(g1, 2 * W, -2.f);
	for (int k = 0; k < W; k++) {
		sum[0 * W + k] = g0[0 * W + k];
		sum[1 * W + k] = g0[1 * W + k] + g0[2 * W + k] + g1[0 * W + k];
		sum[2 * W + k] = g1[1 * W + k];
	}
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids0, 3, W, g0, 0, 7),
		0);
	/* Accumulated, not applied: the rows are still the initial ones. */
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 10, all, 3, W, a), 0);
	for (int i = 0; i < 3 * W; i++)
		assert_float_equal(a[i], 0.25f, 0);
	/* The same worker again, a step ahead, a step behind, a worker out of range. */
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids0, 3, W, g0, 0, 7),
		-EALREADY);
	assert_int_equal(
		dpt_push(&D, w1, PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids1, 2, W, g1, 1, 8),
		-EBUSY);
	assert_int_equal(
		dpt_push(&D, w1, PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids1, 2, W, g1, 1, 6),
		-EALREADY);
	assert_int_equal(
		dpt_push(&D, w1, PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids1, 2, W, g1, 2, 7),
		PS_EOUT_OF_RANGE);
	/* The second worker completes the step: answered after the apply. */
	assert_int_equal(
		dpt_push(&D, w1, PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids1, 2, W, g1, 1, 7), 0);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 10, all, 3, W, a), 0);
	/* Reference: one push of the summed gradients. */
	assert_int_equal(dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, 11, all, 3, W, sum, 0, 0),
			 0);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 11, all, 3, W, b), 0);
	for (int i = 0; i < 3 * W; i++)
		assert_float_equal(a[i], b[i], 1e-6);
	/* And not what two separate updates give (else the test would prove nothing). */
	assert_int_equal(dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, 12, ids0, 3, W, g0, 0, 0),
			 0);
	assert_int_equal(dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, 12, ids1, 2, W, g1, 0, 0),
			 0);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 12, sep, 3, W, c), 0);
	assert_true(fabsf(c[W] - a[W]) > 1e-3f);
	/* Step 7 is done: a late push for it is refused, step 9 starts the next one. */
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids0, 3, W, g0, 0, 7),
		-EALREADY);
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, PS_DP_F_SYNC, 10, ids0, 3, W, g0, 0, 9),
		0);
	/* A restore (new cluster version) drops the partial step 9. */
	ps_dp_set_cluster_version(D.dp, DPT_CV + 1);
	{
		struct ps_dp_req r = {.op = PS_DP_PUSH_SPARSE,
				      .flags = PS_DP_F_SYNC,
				      .var_id = 10,
				      .count = 2,
				      .width = W,
				      .cluster_version = DPT_CV + 1,
				      .worker_id = 1,
				      .step = 9};
		float before[3 * W];
		uint32_t id;

		memcpy(before, a, sizeof(a));
		id = dpt_send(&D, w1, &r, ids1, sizeof(ids1), g1, sizeof(g1));
		assert_int_equal(dpt_wait(&D, w1, id, NULL, NULL), 0);
		ps_dp_set_cluster_version(D.dp, DPT_CV);
		/* Only worker 1 of the new epoch had pushed: nothing applied. */
		assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 10, all, 3, W, a),
				 0);
		assert_memory_equal(a, before, sizeof(a));
	}
	ps_tp_conn_close(w1);
}

static void test_sync_hash_and_dense(void **state)
{
	enum { W = 3, R = 8 }; /* dense 8 x 3 on 2 threads: shard 1 holds rows [4, 8) */
	struct ps_var_spec h = adam_spec(PS_VAR_HASH64, 0, W), dn = adam_spec(PS_VAR_DENSE, R, W);
	uint64_t keys[4];
	float g0[4 * W], g1[4 * W], sum[4 * W], a[4 * W], b[4 * W];
	float d0[4 * W], d1[4 * W], ds[4 * W];

	dpt_keys_for_shard(keys, 4, 1, 2, 500);
	assert_int_equal(dpt_declare(&D, 1, 20, &h, 0, PS_HASH_BUCKETS, 2), 0);
	assert_int_equal(dpt_declare(&D, 1, 21, &h, 0, PS_HASH_BUCKETS, 1), 0);
	fill(g0, 4 * W, 0.7f);
	fill(g1, 4 * W, 1.3f);
	for (int i = 0; i < 4 * W; i++)
		sum[i] = g0[i] + g1[i];
	assert_int_equal(
		dpt_push(&D, D.conn[1], PS_DP_PUSH_HASH, PS_DP_F_SYNC, 20, keys, 4, W, g0, 1, 0),
		0);
	assert_int_equal(
		dpt_push(&D, D.conn[1], PS_DP_PUSH_HASH, PS_DP_F_SYNC, 20, keys, 4, W, g1, 0, 0),
		0);
	assert_int_equal(dpt_push(&D, D.conn[1], PS_DP_PUSH_HASH, 0, 21, keys, 4, W, sum, 0, 0), 0);
	assert_int_equal(dpt_pull(&D, D.conn[1], PS_DP_PULL_HASH, 0, 20, keys, 4, W, a), 0);
	assert_int_equal(dpt_pull(&D, D.conn[1], PS_DP_PULL_HASH, 0, 21, keys, 4, W, b), 0);
	for (int i = 0; i < 4 * W; i++)
		assert_float_equal(a[i], b[i], 1e-6);

	assert_int_equal(dpt_declare(&D, 1, 22, &dn, 0, R, 2), 0);
	assert_int_equal(dpt_declare(&D, 1, 23, &dn, 0, R, 1), 0);
	fill(d0, 4 * W, 0.9f);
	fill(d1, 4 * W, -0.4f);
	for (int i = 0; i < 4 * W; i++)
		ds[i] = d0[i] + d1[i];
	/* Synchronous dense pushes must cover the shard: floats [12, 24). */
	assert_int_equal(dpt_push_dense(&D, D.conn[1], PS_DP_F_SYNC, 22, 12, 6, W, d0, 0, 3),
			 -EINVAL);
	assert_int_equal(dpt_push_dense(&D, D.conn[1], PS_DP_F_SYNC, 22, 12, 12, W, d0, 0, 3), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], 0, 22, 12, 12, W, a), 0);
	for (int i = 0; i < 4 * W; i++)
		assert_float_equal(a[i], 0.25f, 0);
	assert_int_equal(dpt_push_dense(&D, D.conn[1], PS_DP_F_SYNC, 22, 12, 12, W, d1, 1, 3), 0);
	assert_int_equal(dpt_push_dense(&D, D.conn[1], 0, 23, 12, 12, W, ds, 0, 0), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], 0, 22, 12, 12, W, a), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], 0, 23, 12, 12, W, b), 0);
	for (int i = 0; i < 4 * W; i++)
		assert_float_equal(a[i], b[i], 1e-6);
}

static void take_replies(struct dpt *w, struct ps_tp_event *got, uint32_t *ngot)
{
	dpt_poll(w, 10);
	for (int i = 0; i < w->nev; i++) {
		if (w->ev[i].type == PS_TP_EV_RECV)
			got[(*ngot)++] = w->ev[i];
	}
	w->nev = 0;
}

/*
 * A worker with 2 receive buffers that does not release them: the server can answer only 2
 * requests, queues the rest (the transport says -EAGAIN), and answers them in order as the
 * worker releases buffers. Every push is applied exactly once.
 */
static void test_replies_wait_for_credit(void **state)
{
	enum { N = 10 };
	struct dpt w;
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, 10, 1, 0.f);
	struct ps_tp_event got[N];
	uint32_t ids[N], ngot = 0;
	uint64_t row = 1, deadline;

	float one = 1.f, out;
	struct ps_dp_stats st;

	dpt_open(&w, NULL, 2);
	assert_int_equal(dpt_declare(&w, 0, 1, &s, 0, 10, 1), 0);
	for (int i = 0; i < N; i++) {
		struct ps_dp_req r = {.op = PS_DP_PUSH_SPARSE, .var_id = 1, .count = 1, .width = 1};

		ids[i] = dpt_send(&w, w.conn[0], &r, &row, 8, &one, 4);
	}
	deadline = ps_clock_deadline_ms(DPT_WAIT_MS);
	/* Take replies and hold them: the server runs out of credit at 2. */
	while (ngot < 2) {
		assert_true(ps_clock_remaining_ms(deadline) > 0);
		take_replies(&w, got, &ngot);
	}
	/* Give the server time to hit the wall, then check it waited. */
	usleep(50 * 1000);
	take_replies(&w, got, &ngot);
	assert_int_equal(ngot, 2);
	/* Release the held ones in order, one at a time: each lets one more reply through. */
	for (uint32_t next = 0; next < N; next++) {
		struct ps_dp_reply rep;

		while (ngot <= next) {
			assert_true(ps_clock_remaining_ms(deadline) > 0);
			take_replies(&w, got, &ngot);
		}
		assert_int_equal(ps_dp_reply_decode(got[next].buf, got[next].len, &rep), 0);
		assert_int_equal(rep.req_id, ids[next]);
		assert_int_equal(rep.status, 0);
		ps_tp_recv_release(got[next].conn, got[next].buf);
		got[next].buf = NULL;
		assert_true(ngot <= next + 2); /* never more than 2 held */
	}
	for (uint32_t i = 0; i < ngot; i++) {
		if (got[i].buf)
			ps_tp_recv_release(got[i].conn, got[i].buf);
	}
	assert_int_equal(dpt_pull(&w, w.conn[0], PS_DP_PULL_SPARSE, 0, 1, &row, 1, 1, &out), 0);
	assert_float_equal(out, -(float)N, 0);
	ps_dp_stats_get(w.dp, &st);
	assert_true(st.waits >= 1); /* the server did meet -EAGAIN and queued */
	dpt_close(&w);
}

static void test_stats(void **state)
{
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, 10, 16, 0.f);
	struct ps_dp_stats a, b;
	uint64_t id = 3;
	float out[16];

	assert_int_equal(dpt_declare(&D, 0, 30, &s, 0, 10, 1), 0);
	ps_dp_stats_get(D.dp, &a);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 30, &id, 1, 16, out), 0);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 99, &id, 1, 16, out),
			 PS_EUNKNOWN_VAR);
	/*
	 * The transport counts bytes once the kernel took them, which may be after the worker
	 * saw them; and connections of earlier tests may still be closing on the server's side.
	 */
	ps_dp_stats_get(D.dp, &b);
	for (uint64_t end = ps_clock_deadline_ms(DPT_WAIT_MS);
	     b.tx_bytes < a.tx_bytes + 64 + PS_DP_REPLY_BYTES || b.conns != 2;) {
		assert_true(ps_clock_remaining_ms(end) > 0);
		usleep(1000);
		ps_dp_stats_get(D.dp, &b);
	}
	assert_true(b.requests == a.requests + 2);
	assert_true(b.failed == a.failed + 1);
	assert_true(b.rx_bytes >= a.rx_bytes + 2 * (64 + 8));
	assert_true(b.table_bytes > 0);
	assert_int_equal(b.bytes_copied, 0);
}

static int collect(void *arg, const char *name, uint64_t value)
{
	char *buf = arg;
	size_t n = strlen(buf);

	snprintf(buf + n, 1024 - n, "%s=%llu;", name, (unsigned long long)value);
	return 0;
}

static void put(const char *dir, const char *file, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_nic_counters(void **state)
{
	char root[] = "/tmp/psdp-sysfs-XXXXXX", dir[256], out[1024] = "";
	struct ps_tp_dev_info info = {.kind = PS_TP_KIND_RDMA, .port = 1};

	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/class/infiniband/rxe0/ports/1/counters", root);
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd),
			 "mkdir -p %s %s/class/infiniband/rxe0/ports/1/hw_counters "
			 "%s/class/net/eth9/statistics",
			 dir, root, root);
		assert_int_equal(system(cmd), 0);
	}
	put(dir, "port_xmit_data", "123\n");
	put(dir, "port_rcv_data", "456\n");
	put(dir, "garbage", "12x\n");
	snprintf(dir, sizeof(dir), "%s/class/infiniband/rxe0/ports/1/hw_counters", root);
	put(dir, "rdma_sends", "7\n");
	snprintf(dir, sizeof(dir), "%s/class/net/eth9/statistics", root);
	put(dir, "rx_bytes", "1000\n");
	put(dir, "tx_bytes", "2000\n");
	snprintf(info.name, sizeof(info.name), "rxe0");
	snprintf(info.netdev, sizeof(info.netdev), "eth9");

	assert_int_equal(ps_dp_nic_counters(root, &info, collect, out), 5);
	assert_string_equal(out, "rxe0/1/port_rcv_data=456;rxe0/1/port_xmit_data=123;"
				 "rxe0/1/rdma_sends=7;eth9/rx_bytes=1000;eth9/tx_bytes=2000;");
	info.kind = PS_TP_KIND_TCP;
	assert_int_equal(ps_dp_nic_counters(root, &info, collect, out), 0);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
		assert_int_equal(system(cmd), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_sparse_equals_summed_push),
		cmocka_unit_test(test_sync_hash_and_dense),
		cmocka_unit_test(test_replies_wait_for_credit),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_nic_counters),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
