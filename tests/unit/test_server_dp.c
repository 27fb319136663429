/*
 * The server data plane's request handlers (server/dp_handle.c, dp_var.c, dp_thread.c), driven
 * over tcp loopback by a raw worker with crafted headers: DECLARE (idempotent, -EEXIST, shard
 * checks), pulls and pushes of sparse, dense, hash64 and hash128 variables with the values
 * checked, snapshot pulls, pulls longer than the zero-copy gather list, and every kind of bad
 * input answered with its code while no row changes: ids out of range, unknown variable, push
 * before declare, wrong width, wrong kind, small destination, truncated and overlong messages,
 * stale and unknown cluster versions; garbage closes only its own connection.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "scheduler/placement.h"
#include "server/store.h"
#include "tests/unit/dp_test_util.h"

static struct dpt D;

/* Shard 0 of 2 holds rows [0, 50) of a 100-row part; shard 1 rows [50, 100). */
#define SP_VAR	 1
#define SP_ROWS	 100
#define SP_WIDTH 4

static int setup(void **state)
{
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, SP_ROWS, SP_WIDTH, 0.5f);

	dpt_open(&D, NULL, 0);
	assert_int_equal(dpt_declare(&D, 0, SP_VAR, &s, 0, SP_ROWS, 1), 0);
	assert_int_equal(dpt_declare(&D, 1, SP_VAR, &s, 0, SP_ROWS, 1), 0);
	return 0;
}

static int teardown(void **state)
{
	dpt_close(&D);
	return 0;
}

/* Every row of shard 0 of SP_VAR. */
static void snapshot(float *out)
{
	uint64_t ids[50];

	for (int i = 0; i < 50; i++)
		ids[i] = (uint64_t)i;
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, ids, 50, SP_WIDTH, out), 0);
}

static void test_sparse_pull_push(void **state)
{
	uint64_t ids[4] = {7, 0, 7, 49};
	float g[4 * SP_WIDTH], out[4 * SP_WIDTH];

	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, ids, 4, SP_WIDTH, out), 0);
	for (int i = 0; i < 4 * SP_WIDTH; i++)
		assert_float_equal(out[i], 0.5f, 0);
	for (int i = 0; i < 4 * SP_WIDTH; i++)
		g[i] = 0.125f * (float)(i % SP_WIDTH + 1);
	/* SGD, lr 1; id 7 twice: its gradients are summed. */
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, SP_VAR, ids, 4, SP_WIDTH, g, 0, 0),
		0);
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, ids, 4, SP_WIDTH, out), 0);
	for (int c = 0; c < SP_WIDTH; c++) {
		float gc = 0.125f * (float)(c + 1);

		assert_float_equal(out[0 * SP_WIDTH + c], 0.5f - 2 * gc, 1e-6);
		assert_float_equal(out[1 * SP_WIDTH + c], 0.5f - gc, 1e-6);
		assert_float_equal(out[2 * SP_WIDTH + c], 0.5f - 2 * gc, 1e-6);
		assert_float_equal(out[3 * SP_WIDTH + c], 0.5f - gc, 1e-6);
	}
	/* Snapshot pulls see the same rows. */
	{
		float snap[4 * SP_WIDTH];

		assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, PS_DP_F_SNAPSHOT,
					  SP_VAR, ids, 4, SP_WIDTH, snap),
				 0);
		assert_memory_equal(snap, out, sizeof(out));
	}
	/* An empty pull is an empty write. */
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, ids, 0, SP_WIDTH, out), 0);
}

static void test_declare_rules(void **state)
{
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, SP_ROWS, SP_WIDTH, 0.5f);
	struct ps_var_spec other = dpt_spec(PS_VAR_SPARSE, SP_ROWS, SP_WIDTH, 0.25f);
	struct ps_var_spec bad = dpt_spec(PS_VAR_SPARSE, SP_ROWS, SP_WIDTH, 0.5f);
	struct ps_dp_req r = {.op = PS_DP_DECLARE, .var_id = 77};
	uint8_t p[PS_DP_DECLARE_BYTES];
	uint32_t id;

	assert_int_equal(dpt_declare(&D, 0, SP_VAR, &s, 0, SP_ROWS, 1), 0); /* again: fine */
	assert_int_equal(dpt_declare(&D, 0, SP_VAR, &other, 0, SP_ROWS, 1), -EEXIST);
	assert_int_equal(dpt_declare(&D, 0, SP_VAR, &s, 0, SP_ROWS, 2), -EEXIST);
	bad.optim.sgd.learning_rate = NAN;
	assert_int_equal(dpt_declare(&D, 0, 50, &bad, 0, SP_ROWS, 1), -EINVAL);
	/* Sent to the wrong thread, or naming another thread count. */
	dpt_declare_payload(p, &s, 0, SP_ROWS, 1, 2, 1, "x");
	id = dpt_send(&D, D.conn[0], &r, p, sizeof(p), NULL, 0);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), -EINVAL);
	dpt_declare_payload(p, &s, 0, SP_ROWS, 0, 3, 1, "x");
	id = dpt_send(&D, D.conn[0], &r, p, sizeof(p), NULL, 0);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), -EINVAL);
	/* A malformed payload (optimizer kind 99). */
	dpt_declare_payload(p, &s, 0, SP_ROWS, 0, 2, 1, "x");
	p[104] = 99;
	id = dpt_send(&D, D.conn[0], &r, p, sizeof(p), NULL, 0);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), PS_EBAD_MESSAGE);
	/* None of these created var 77 or 50. */
	{
		uint64_t one = 0;
		float out[SP_WIDTH];

		assert_int_equal(
			dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 77, &one, 1, SP_WIDTH, out),
			PS_EUNKNOWN_VAR);
		assert_int_equal(
			dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 50, &one, 1, SP_WIDTH, out),
			PS_EUNKNOWN_VAR);
	}
}

/* Each bad request gets its code and leaves every row of the shard as it was. */
static void test_bad_requests_change_nothing(void **state)
{
	static float before[50 * SP_WIDTH], after[50 * SP_WIDTH];
	uint64_t ids[3] = {1, 2, 50}; /* 50 belongs to shard 1 */
	float g[3 * SP_WIDTH], out[3 * SP_WIDTH];
	struct ps_dp_req r;
	uint64_t cv = 0;
	uint32_t id;

	for (int i = 0; i < 3 * SP_WIDTH; i++)
		g[i] = 1.f;
	snapshot(before);
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, SP_VAR, ids, 3, SP_WIDTH, g, 0, 0),
		PS_EOUT_OF_RANGE);
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, ids, 3, SP_WIDTH, out),
		PS_EOUT_OF_RANGE);
	/* Push before declare / unknown variable. */
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, 99, ids, 2, SP_WIDTH, g, 0, 0),
		PS_EUNKNOWN_VAR);
	/* Wrong width, wrong kind (a dense op and a hash op on a sparse variable). */
	assert_int_equal(dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, SP_VAR, ids, 2, 3, g, 0, 0),
			 -EINVAL);
	assert_int_equal(dpt_push_dense(&D, D.conn[0], 0, SP_VAR, 0, SP_WIDTH, SP_WIDTH, g, 0, 0),
			 -EINVAL);
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_HASH, 0, SP_VAR, ids, 2, SP_WIDTH, g, 0, 0),
		-EINVAL);
	/* A destination smaller than the rows. */
	r = (struct ps_dp_req){.op = PS_DP_PULL_SPARSE,
			       .var_id = SP_VAR,
			       .count = 2,
			       .width = SP_WIDTH,
			       .dst_addr = 1,
			       .dst_len = 2 * SP_WIDTH * 4 - 1};
	id = dpt_send(&D, D.conn[0], &r, ids, 16, NULL, 0);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), -EMSGSIZE);
	/* Truncated: count says 3 ids and gradients, the message holds 2 of each. */
	r = (struct ps_dp_req){
		.op = PS_DP_PUSH_SPARSE, .var_id = SP_VAR, .count = 3, .width = SP_WIDTH};
	id = dpt_send(&D, D.conn[0], &r, ids, 16, g, 2 * SP_WIDTH * 4);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), PS_EBAD_MESSAGE);
	/* Overlong: trailing bytes after the payload. */
	r = (struct ps_dp_req){
		.op = PS_DP_PUSH_SPARSE, .var_id = SP_VAR, .count = 1, .width = SP_WIDTH};
	id = dpt_send(&D, D.conn[0], &r, ids, 8, g, SP_WIDTH * 4 + 4);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), PS_EBAD_MESSAGE);
	/* A count whose payload overflows 64 bits. */
	r = (struct ps_dp_req){.op = PS_DP_PUSH_SPARSE,
			       .var_id = SP_VAR,
			       .count = UINT32_MAX,
			       .width = UINT32_MAX};
	id = dpt_send(&D, D.conn[0], &r, ids, 8, NULL, 0);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, NULL), PS_EBAD_MESSAGE);
	/* Stale cluster version: refused, and the reply tells the current one. */
	r = (struct ps_dp_req){.op = PS_DP_PUSH_SPARSE,
			       .var_id = SP_VAR,
			       .count = 1,
			       .width = SP_WIDTH,
			       .cluster_version = DPT_CV + 1};
	id = dpt_send(&D, D.conn[0], &r, ids, 8, g, SP_WIDTH * 4);
	assert_int_equal(dpt_wait(&D, D.conn[0], id, NULL, &cv), PS_ESTALE_VERSION);
	assert_true(cv == DPT_CV);
	/* No version known yet (not registered): not ready. */
	ps_dp_set_cluster_version(D.dp, 0);
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, SP_VAR, ids, 1, SP_WIDTH, g, 0, 0),
		PS_ENOT_READY);
	ps_dp_set_cluster_version(D.dp, DPT_CV);

	snapshot(after);
	assert_memory_equal(before, after, sizeof(before));
}

/* Not even a header: only that connection is closed; the thread serves everyone else. */
static void test_garbage_closes_only_its_connection(void **state)
{
	struct ps_tp_conn *bad = dpt_connect(&D, 0), *bad2 = dpt_connect(&D, 0);
	uint8_t junk[100];
	uint64_t id0 = 3;
	float out[SP_WIDTH];
	struct ps_dp_req r = {
		.op = PS_DP_PULL_SPARSE, .var_id = SP_VAR, .count = 1, .width = SP_WIDTH};

	memset(junk, 0x5a, sizeof(junk));
	dpt_send_raw(&D, bad, junk, 10);
	assert_true(dpt_wait_closed(&D, bad, DPT_WAIT_MS));
	ps_tp_conn_close(bad);
	/* A full-size header with a wrong magic, and one of another protocol version. */
	r.magic = PS_DP_REQ_MAGIC;
	r.version = PS_DP_VERSION;
	ps_dp_req_encode(&r, junk);
	junk[0] ^= 0xff;
	dpt_send_raw(&D, bad2, junk, PS_DP_REQ_BYTES + 8);
	assert_true(dpt_wait_closed(&D, bad2, DPT_WAIT_MS));
	ps_tp_conn_close(bad2);
	bad = dpt_connect(&D, 0);
	ps_dp_req_encode(&r, junk);
	junk[4] = 2;
	dpt_send_raw(&D, bad, junk, PS_DP_REQ_BYTES + 8);
	assert_true(dpt_wait_closed(&D, bad, DPT_WAIT_MS));
	ps_tp_conn_close(bad);

	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, SP_VAR, &id0, 1, SP_WIDTH, out), 0);
	assert_false(dpt_wait_closed(&D, D.conn[0], 50));
}

/* Dense: whole shard, sub-ranges at float granularity, row-aligned slices for pushes. */
static void test_dense(void **state)
{
	/* 10 rows x 3: shard 0 rows [0, 5) = floats [0, 15), shard 1 floats [15, 30). */
	struct ps_var_spec s = dpt_spec(PS_VAR_DENSE, 10, 3, 2.f);
	float out[15], g[15];

	assert_int_equal(dpt_declare(&D, 0, 2, &s, 0, 10, 1), 0);
	assert_int_equal(dpt_declare(&D, 1, 2, &s, 0, 10, 1), 0);
	for (int i = 0; i < 15; i++)
		g[i] = (float)i;
	assert_int_equal(dpt_push_dense(&D, D.conn[1], 0, 2, 15, 15, 3, g, 0, 0), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], 0, 2, 15, 15, 3, out), 0);
	for (int i = 0; i < 15; i++)
		assert_float_equal(out[i], 2.f - (float)i, 0);
	/* Floats [16, 20): a row's tail, a whole row... */
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], 0, 2, 16, 4, 3, out), 0);
	for (int i = 0; i < 4; i++)
		assert_float_equal(out[i], 2.f - (float)(i + 1), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[1], PS_DP_F_SNAPSHOT, 2, 16, 4, 3, out), 0);
	for (int i = 0; i < 4; i++)
		assert_float_equal(out[i], 2.f - (float)(i + 1), 0);
	/* A slice of rows [1, 3) of shard 0. */
	assert_int_equal(dpt_push_dense(&D, D.conn[0], 0, 2, 3, 6, 3, g, 0, 0), 0);
	assert_int_equal(dpt_pull_dense(&D, D.conn[0], 0, 2, 0, 15, 3, out), 0);
	for (int i = 0; i < 15; i++)
		assert_float_equal(out[i], i >= 3 && i < 9 ? 2.f - (float)(i - 3) : 2.f, 0);
	/* Out of the shard, not row-aligned, beyond the variable. */
	assert_int_equal(dpt_pull_dense(&D, D.conn[0], 0, 2, 14, 2, 3, out), PS_EOUT_OF_RANGE);
	assert_int_equal(dpt_push_dense(&D, D.conn[0], 0, 2, 1, 3, 3, g, 0, 0), -EINVAL);
	assert_int_equal(dpt_push_dense(&D, D.conn[1], 0, 2, 27, 6, 3, g, 0, 0), PS_EOUT_OF_RANGE);
	assert_int_equal(dpt_pull_dense(&D, D.conn[0], 0, 2, 0, 15, 3, out), 0);
	for (int i = 0; i < 15; i++)
		assert_float_equal(out[i], i >= 3 && i < 9 ? 2.f - (float)(i - 3) : 2.f, 0);
}

static void test_hash64(void **state)
{
	struct ps_var_spec s = dpt_spec(PS_VAR_HASH64, 0, 8, 0.f);
	uint64_t keys[6], other[1];
	float out[6 * 8], g[6 * 8], want[8];

	s.init.kind = PS_INIT_UNIFORM;
	s.init.min = -1.f;
	s.init.max = 1.f;
	s.init.seed = 5;
	assert_int_equal(dpt_declare(&D, 0, 3, &s, 0, PS_HASH_BUCKETS, 1), 0);
	assert_int_equal(dpt_declare(&D, 1, 3, &s, 0, PS_HASH_BUCKETS, 1), 0);
	dpt_keys_for_shard(keys, 6, 1, 2, 1000);
	dpt_keys_for_shard(other, 1, 0, 2, 1000);
	assert_int_equal(dpt_pull(&D, D.conn[1], PS_DP_PULL_HASH, 0, 3, keys, 6, 8, out), 0);
	for (int i = 0; i < 6; i++) {
		ps_store_init_row(&s.init, 3, keys[i], 0, want, 8);
		assert_memory_equal(out + i * 8, want, sizeof(want));
	}
	for (int i = 0; i < 6 * 8; i++)
		g[i] = 0.5f;
	assert_int_equal(dpt_push(&D, D.conn[1], PS_DP_PUSH_HASH, 0, 3, keys, 6, 8, g, 0, 0), 0);
	assert_int_equal(dpt_pull(&D, D.conn[1], PS_DP_PULL_HASH, 0, 3, keys, 6, 8, out), 0);
	for (int i = 0; i < 6; i++) {
		ps_store_init_row(&s.init, 3, keys[i], 0, want, 8);
		for (int c = 0; c < 8; c++)
			assert_float_equal(out[i * 8 + c], want[c] - 0.5f, 1e-6);
	}
	/* A key of the other thread; the 128-bit flag on a 64-bit variable. */
	assert_int_equal(dpt_push(&D, D.conn[1], PS_DP_PUSH_HASH, 0, 3, other, 1, 8, g, 0, 0),
			 PS_EOUT_OF_RANGE);
	assert_int_equal(
		dpt_pull(&D, D.conn[1], PS_DP_PULL_HASH, PS_DP_F_KEY128, 3, keys, 3, 8, out),
		-EINVAL);
}

/* Admission: keys not admitted read as the initializer (from the bounce area), push nothing. */
static void test_hash128_admission(void **state)
{
	struct ps_var_spec s = dpt_spec(PS_VAR_HASH128, 0, 4, 0.f);
	struct ps_key128 keys[64];
	float out[64 * 4], g[64 * 4], want[4];
	uint32_t n = 0;
	int admitted = 0;

	s.init.kind = PS_INIT_NORMAL;
	s.init.stddev = 1.f;
	s.admit_prob = 0.5f;
	s.admit_seed = 9;
	/* Only part of the buckets: the part [0, 32768). */
	assert_int_equal(dpt_declare(&D, 0, 4, &s, 0, 32768, 1), 0);
	for (uint64_t lo = 1; n < 64; lo++) {
		uint64_t h = ps_placement_key_hash128(7, lo);

		if (ps_placement_bucket(h) < 32768 && ps_placement_key_shard(h, 2) == 0)
			keys[n++] = (struct ps_key128){.lo = lo, .hi = 7};
	}
	for (int i = 0; i < 64 * 4; i++)
		g[i] = 1.f;
	assert_int_equal(
		dpt_push(&D, D.conn[0], PS_DP_PUSH_HASH, PS_DP_F_KEY128, 4, keys, 64, 4, g, 0, 0),
		0);
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_HASH, PS_DP_F_KEY128, 4, keys, 64, 4, out), 0);
	for (int i = 0; i < 64; i++) {
		bool in = ps_store_hash_admit(0.5f, 9, keys[i].lo, keys[i].hi);

		ps_store_init_row(&s.init, 4, keys[i].lo, keys[i].hi, want, 4);
		for (int c = 0; c < 4; c++)
			assert_float_equal(out[i * 4 + c], in ? want[c] - 1.f : want[c], 1e-6);
		admitted += in;
	}
	assert_true(admitted > 10 && admitted < 54);
}

/* A pull longer than the zero-copy gather list: the rest is copied, values unchanged. */
static void test_long_pull(void **state)
{
	enum { N = 4000, W = 2 }; /* the push just fits a 64 KiB message */
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, 2 * N, W, 0.f);
	static uint64_t ids[N];
	static float g[N * W], out[N * W];
	struct ps_dp_stats st0, st1;

	assert_int_equal(dpt_declare(&D, 0, 5, &s, 0, 2 * N, 1), 0);
	for (int i = 0; i < N; i++) {
		ids[i] = (uint64_t)(i * 7 % N); /* a permutation of [0, N) */
		g[i * W] = -(float)ids[i];
		g[i * W + 1] = 1.f;
	}
	assert_int_equal(dpt_push(&D, D.conn[0], PS_DP_PUSH_SPARSE, 0, 5, ids, N, W, g, 0, 0), 0);
	ps_dp_stats_get(D.dp, &st0);
	for (int i = 0; i < N; i++)
		ids[i] = (uint64_t)((i * 13 + 5) % N);
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 5, ids, N, W, out), 0);
	for (int i = 0; i < N; i++) {
		assert_float_equal(out[i * W], (float)ids[i], 0);
		assert_float_equal(out[i * W + 1], -1.f, 0);
	}
	ps_dp_stats_get(D.dp, &st1);
	assert_true(st1.bounced > st0.bounced); /* the tail went through bounce blocks */
	assert_true(st1.bounced - st0.bounced < (uint64_t)N * W * 4);
	/* Every gather entry was in registered memory: the transport copied nothing. */
	assert_true(st1.bytes_copied == st0.bytes_copied);
}

/* A snapshot pull bigger than one pull's bounce budget: -E2BIG, nothing written. */
static void test_snapshot_too_big(void **state)
{
	enum { N = 4000, W = 64 }; /* 1 MB of rows, budget 8 x 64 KiB */
	struct ps_var_spec s = dpt_spec(PS_VAR_SPARSE, 2 * N, W, 0.f);
	static uint64_t ids[N];
	static float out[N * W];

	assert_int_equal(dpt_declare(&D, 0, 6, &s, 0, 2 * N, 1), 0);
	for (int i = 0; i < N; i++)
		ids[i] = (uint64_t)i;
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, PS_DP_F_SNAPSHOT, 6, ids, 200, W, out),
		0);
	assert_int_equal(
		dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, PS_DP_F_SNAPSHOT, 6, ids, N, W, out),
		-E2BIG);
	assert_int_equal(D.dst[0], 0xee);
	/* Zero copy needs no budget for the first rows. */
	assert_int_equal(dpt_pull(&D, D.conn[0], PS_DP_PULL_SPARSE, 0, 6, ids, 1000, W, out), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sparse_pull_push),
		cmocka_unit_test(test_declare_rules),
		cmocka_unit_test(test_bad_requests_change_nothing),
		cmocka_unit_test(test_garbage_closes_only_its_connection),
		cmocka_unit_test(test_dense),
		cmocka_unit_test(test_hash64),
		cmocka_unit_test(test_hash128_admission),
		cmocka_unit_test(test_long_pull),
		cmocka_unit_test(test_snapshot_too_big),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
