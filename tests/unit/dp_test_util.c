/*
 * Helpers of the data-plane tests: see dp_test_util.h.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "scheduler/placement.h"
#include "tests/unit/dp_test_util.h"
#ifdef DPT_FAKE
#include "tests/unit/fake_verbs.h"
#endif

#ifdef DPT_FAKE
static int nopen; /* dpt objects open: the fake's counters are process-wide */
#endif

/*
 * The address everything listens on and connects to: loopback (tcp; the fake device owns it
 * too), or in the rxe guest the first soft-RoCE device's address.
 */
static const char *host(void)
{
	const char *a = getenv("PS_RXE0_ADDR");

#ifdef DPT_REAL_RDMA
	return a && *a ? a : "127.0.0.1";
#else
	(void)a;
	return "127.0.0.1";
#endif
}

void dpt_open(struct dpt *d, const struct ps_dp_opts *o, uint32_t client_recv_depth)
{
	struct ps_dp_opts def = {.transport = DPT_TRANSPORT,
				 .bind_addr = host(),
				 .host = host(),
				 .threads = 2,
				 .numa_node = -1,
				 .bounce_blocks = 8};
	struct ps_tp_dev_opts dop = {.kind = DPT_TRANSPORT, .bind_addr = host(), .numa_node = -1};
	struct ps_tp_loop_opts lo = {.recv_depth = client_recv_depth, .max_conns = 64};

	memset(d, 0, sizeof(*d));
#ifdef DPT_REAL_RDMA
	if (!ps_tp_rdma_available()) {
		print_message("SKIP: no active RDMA device (run in the rxe guest)\n");
		exit(77);
	}
#endif
	assert_int_equal(ps_dp_create(o ? o : &def, &d->dp), 0);
#ifdef DPT_FAKE
	nopen++;
#endif
	ps_dp_set_cluster_version(d->dp, DPT_CV);
	assert_int_equal(ps_tp_dev_open(&dop, &d->dev), 0);
	assert_int_equal(ps_tp_loop_create(d->dev, &lo, &d->loop), 0);
	d->dst = aligned_alloc(4096, DPT_DST_LEN);
	assert_non_null(d->dst);
	assert_int_equal(ps_tp_mr_reg(d->dev, d->dst, DPT_DST_LEN, &d->mr), 0);
	d->msgs = aligned_alloc(4096, (size_t)DPT_NMSG * (DPT_MSG_MAX + 4096));
	assert_non_null(d->msgs);
	/* Registered, so rdma sends them zero copy (unregistered ones go through its bounce). */
	assert_int_equal(
		ps_tp_mr_reg(d->dev, d->msgs, (size_t)DPT_NMSG * (DPT_MSG_MAX + 4096), &d->msgs_mr),
		0);
	for (uint32_t i = 0; i < ps_dp_threads(d->dp) && i < DPT_MAXCONNS; i++)
		d->conn[i] = dpt_connect(d, i);
}

void dpt_close(struct dpt *d)
{
	ps_tp_loop_destroy(d->loop);
	ps_tp_mr_dereg(d->mr);
	ps_tp_mr_dereg(d->msgs_mr);
	ps_tp_dev_close(d->dev);
	ps_dp_destroy(d->dp);
	free(d->dst);
	free(d->msgs);
#ifdef DPT_FAKE
	if (!--nopen) {
		struct fake_verbs_counts c;

		/* Every registration (row chunks, pools) and every verbs object is gone. */
		if (fake_verbs_live_objects(&c))
			fail_msg(
				"live verbs objects: mr %d qp %d cq %d pd %d ctx %d misuse %d (%s)",
				c.mrs, c.qps, c.cqs, c.pds, c.contexts, c.misuse,
				fake_verbs_last_misuse());
	}
#endif
}

struct ps_tp_conn *dpt_connect(struct dpt *d, uint32_t shard)
{
	struct ps_tp_conn *c = NULL;

	/* The server's threads poll their own loops: a blocking connect just works. */
	assert_int_equal(ps_tp_connect(d->loop, host(), ps_dp_port(d->dp, shard), NULL, &c), 0);
	return c;
}

void dpt_poll(struct dpt *d, int timeout_ms)
{
	int n;

	assert_true(d->nev < DPT_MAXEV);
	n = ps_tp_poll(d->loop, d->ev + d->nev, DPT_MAXEV - d->nev, timeout_ms);
	assert_true(n >= 0);
	d->nev += n;
}

static void take(struct dpt *d, int i)
{
	memmove(&d->ev[i], &d->ev[i + 1], (size_t)(d->nev - i - 1) * sizeof(d->ev[0]));
	d->nev--;
}

void dpt_send_raw(struct dpt *d, struct ps_tp_conn *c, const void *buf, size_t len)
{
	uint8_t *m = d->msgs + (size_t)(d->next_msg++ % DPT_NMSG) * (DPT_MSG_MAX + 64);
	struct ps_tp_sge sge = {.addr = m, .len = (uint32_t)len, .mr = d->msgs_mr};
	uint64_t deadline = ps_clock_deadline_ms(DPT_WAIT_MS);
	int rc;

	assert_true(len <= DPT_MSG_MAX + 64);
	memcpy(m, buf, len);
	while ((rc = ps_tp_send(c, &sge, 1, NULL)) == -EAGAIN) {
		assert_true(ps_clock_remaining_ms(deadline) > 0);
		dpt_poll(d, 1);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(ps_tp_flush(d->loop), 0);
}

uint32_t dpt_send(struct dpt *d, struct ps_tp_conn *c, struct ps_dp_req *r, const void *p1,
		  size_t l1, const void *p2, size_t l2)
{
	static uint8_t buf[DPT_MSG_MAX + 64];

	r->magic = PS_DP_REQ_MAGIC;
	r->version = PS_DP_VERSION;
	r->req_id = ++d->next_req;
	if (!r->cluster_version)
		r->cluster_version = DPT_CV;
	if ((r->op == PS_DP_PULL_DENSE || r->op == PS_DP_PULL_SPARSE || r->op == PS_DP_PULL_HASH) &&
	    !r->dst_len) {
		struct ps_tp_rbuf rb;

		assert_int_equal(ps_tp_mr_rbuf(d->mr, d->dst, DPT_DST_LEN, &rb), 0);
		r->dst_addr = rb.addr;
		r->dst_rkey = rb.rkey;
		r->dst_len = rb.len;
	}
	assert_true(PS_DP_REQ_BYTES + l1 + l2 <= sizeof(buf));
	ps_dp_req_encode(r, buf);
	if (l1)
		memcpy(buf + PS_DP_REQ_BYTES, p1, l1);
	if (l2)
		memcpy(buf + PS_DP_REQ_BYTES + l1, p2, l2);
	dpt_send_raw(d, c, buf, PS_DP_REQ_BYTES + l1 + l2);
	return r->req_id;
}

int dpt_wait(struct dpt *d, struct ps_tp_conn *c, uint32_t req_id, int64_t *wrote, uint64_t *cv)
{
	uint64_t deadline = ps_clock_deadline_ms(DPT_WAIT_MS);

	for (;;) {
		for (int i = 0; i < d->nev; i++) {
			struct ps_tp_event e = d->ev[i];
			struct ps_dp_reply rep;

			if (e.conn != c)
				continue;
			if (e.type == PS_TP_EV_WRITE_IMM && e.imm == req_id) {
				take(d, i);
				if (wrote)
					*wrote = e.len;
				return 0;
			}
			if (e.type != PS_TP_EV_RECV)
				continue;
			assert_int_equal(e.len, PS_DP_REPLY_BYTES);
			assert_int_equal(ps_dp_reply_decode(e.buf, e.len, &rep), 0);
			if (rep.req_id != req_id)
				continue;
			take(d, i);
			ps_tp_recv_release(c, e.buf);
			if (wrote)
				*wrote = -1;
			if (cv)
				*cv = rep.cluster_version;
			return rep.status;
		}
		if (!ps_clock_remaining_ms(deadline))
			fail_msg("no answer to request %u within %d ms", req_id, DPT_WAIT_MS);
		dpt_poll(d, 10);
	}
}

bool dpt_wait_closed(struct dpt *d, struct ps_tp_conn *c, int ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint32_t)ms);

	for (;;) {
		for (int i = 0; i < d->nev; i++) {
			if (d->ev[i].conn == c && d->ev[i].type == PS_TP_EV_CLOSED) {
				take(d, i);
				return true;
			}
		}
		if (!ps_clock_remaining_ms(deadline))
			return false;
		dpt_poll(d, 10);
	}
}

/* ---- requests ------------------------------------------------------------------------------ */

struct ps_var_spec dpt_spec(enum ps_var_kind kind, uint64_t rows, uint32_t width, float c)
{
	struct ps_var_spec s = {.kind = kind, .rows = rows, .width = width};

	s.init.kind = PS_INIT_CONSTANT;
	s.init.value = c;
	s.optim = ps_optimizer_defaults(PS_OPTIM_SGD);
	s.optim.sgd.learning_rate = 1.f;
	return s;
}

void dpt_declare_payload(uint8_t out[PS_DP_DECLARE_BYTES], const struct ps_var_spec *spec,
			 uint64_t part_begin, uint64_t part_end, uint32_t shard, uint32_t nshards,
			 uint32_t num_workers, const char *name)
{
	struct ps_dp_declare dd;

	memset(&dd, 0, sizeof(dd));
	ps_dp_spec_encode(spec, &dd);
	dd.part_begin = part_begin;
	dd.part_end = part_end;
	dd.shard = shard;
	dd.nshards = nshards;
	dd.num_workers = num_workers;
	strncpy(dd.name, name, sizeof(dd.name) - 1);
	ps_dp_declare_encode(&dd, out);
}

int dpt_declare(struct dpt *d, uint32_t shard, uint32_t var_id, const struct ps_var_spec *spec,
		uint64_t part_begin, uint64_t part_end, uint32_t num_workers)
{
	struct ps_dp_req r = {.op = PS_DP_DECLARE, .var_id = var_id};
	uint8_t p[PS_DP_DECLARE_BYTES];
	uint32_t id;

	dpt_declare_payload(p, spec, part_begin, part_end, shard, ps_dp_threads(d->dp), num_workers,
			    "v");
	id = dpt_send(d, d->conn[shard], &r, p, sizeof(p), NULL, 0);
	return dpt_wait(d, d->conn[shard], id, NULL, NULL);
}

static int pull_common(struct dpt *d, struct ps_tp_conn *c, struct ps_dp_req *r, const void *keys,
		       size_t klen, size_t out_bytes, float *out)
{
	int64_t wrote = 0;
	uint32_t id;
	int rc;

	memset(d->dst, 0xee, out_bytes + 64);
	id = dpt_send(d, c, r, keys, klen, NULL, 0);
	rc = dpt_wait(d, c, id, &wrote, NULL);
	if (rc)
		return rc;
	if (wrote < 0)
		return 0x7fffffff; /* a reply with status 0 to a pull: never valid */
	assert_int_equal(wrote, out_bytes);
	memcpy(out, d->dst, out_bytes);
	/* Nothing written past the rows. */
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(d->dst[out_bytes + i], 0xee);
	return 0;
}

int dpt_pull(struct dpt *d, struct ps_tp_conn *c, uint8_t op, uint16_t flags, uint32_t var,
	     const void *keys, uint32_t n, uint32_t width, float *out)
{
	struct ps_dp_req r = {.op = op, .flags = flags, .var_id = var, .count = n, .width = width};
	size_t kb = flags & PS_DP_F_KEY128 ? 16 : 8;

	return pull_common(d, c, &r, keys, n * kb, (size_t)n * width * 4, out);
}

int dpt_pull_dense(struct dpt *d, struct ps_tp_conn *c, uint16_t flags, uint32_t var,
		   uint64_t begin, uint32_t count, uint32_t width, float *out)
{
	struct ps_dp_req r = {.op = PS_DP_PULL_DENSE,
			      .flags = flags,
			      .var_id = var,
			      .count = count,
			      .width = width,
			      .begin = begin};

	return pull_common(d, c, &r, NULL, 0, (size_t)count * 4, out);
}

int dpt_push(struct dpt *d, struct ps_tp_conn *c, uint8_t op, uint16_t flags, uint32_t var,
	     const void *keys, uint32_t n, uint32_t width, const float *grads, uint32_t worker,
	     uint32_t step)
{
	struct ps_dp_req r = {.op = op,
			      .flags = flags,
			      .var_id = var,
			      .count = n,
			      .width = width,
			      .worker_id = worker,
			      .step = step};
	size_t kb = flags & PS_DP_F_KEY128 ? 16 : 8;
	int64_t wrote = 0;
	uint32_t id;
	int rc;

	id = dpt_send(d, c, &r, keys, n * kb, grads, (size_t)n * width * 4);
	rc = dpt_wait(d, c, id, &wrote, NULL);
	assert_int_equal(wrote, -1);
	return rc;
}

int dpt_push_dense(struct dpt *d, struct ps_tp_conn *c, uint16_t flags, uint32_t var,
		   uint64_t begin, uint32_t count, uint32_t width, const float *grads,
		   uint32_t worker, uint32_t step)
{
	struct ps_dp_req r = {.op = PS_DP_PUSH_DENSE,
			      .flags = flags,
			      .var_id = var,
			      .count = count,
			      .width = width,
			      .begin = begin,
			      .worker_id = worker,
			      .step = step};
	int64_t wrote = 0;
	uint32_t id;
	int rc;

	id = dpt_send(d, c, &r, grads, (size_t)count * 4, NULL, 0);
	rc = dpt_wait(d, c, id, &wrote, NULL);
	assert_int_equal(wrote, -1);
	return rc;
}

void dpt_keys_for_shard(uint64_t *keys, uint32_t n, uint32_t shard, uint32_t threads,
			uint64_t start)
{
	for (uint64_t k = start, i = 0; i < n; k++) {
		if (ps_placement_key_shard(ps_placement_key_hash(k), threads) == shard)
			keys[i++] = k;
	}
}
