/*
 * psplus-bench-verbs: the operations and one measured round (bench_verbs.h). Each operation
 * draws its rows from (seed, operation number), so the data check can regenerate any of them:
 * no record of what was posted is kept.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "perf/bench_verbs.h"

#define TRAILER_LEN 8u /* psplus's trailer of a split write_imm */
#define OP_MIX	    0x9e3779b97f4a7c15ull
#define ROW_MIX	    0xc2b2ae3d27d4eb4full

const char *const bv_cnt_names[BV_NCNT] = {"sent_pkts", "completer_retry_err", "duplicate_request",
					   "rcvd_rnr_err", "send_rnr_err"};

/* ---- operations ----------------------------------------------------------------------------- */

/* Every operation draws its own rows, reproducible from (seed, op) for the data check. */
static inline uint64_t op_seed(uint64_t seed, uint64_t op)
{
	return bench_mix64(seed ^ (op * OP_MIX));
}

/* Row @k of the operation of seed @g: multiply-shift maps 64 random bits onto [0, nrows). */
static inline uint64_t row_of(const struct bv_shape *s, uint64_t g, uint32_t k)
{
	uint64_t x = bench_mix64(s->seq ? g : g + k * ROW_MIX);
	uint64_t r = (uint64_t)(((unsigned __int128)x * s->nrows) >> 64);

	return s->seq ? (r + k) % s->nrows : r;
}

struct bv_shape bv_shape_make(const struct bv *b, bool gather)
{
	const struct bv_opts *o = b->o;
	struct bv_shape s = {.name = gather ? "gather" : "contiguous",
			     .rows = gather ? o->rows : 1,
			     .row_size = gather ? o->row_size : (uint32_t)b->size,
			     .seq = gather && o->rows_seq};

	s.per_wr = s.rows < b->max_sge ? s.rows : b->max_sge;
	s.nwr = (s.rows + s.per_wr - 1) / s.per_wr;
	s.trailer = o->target == BV_TGT_IMM && s.nwr > 1;
	s.nrows = b->table_len / s.row_size;
	return s;
}

/* The fields of the chain that stay the same for a whole round. */
static void chain_prepare(struct bv *b, const struct bv_shape *s)
{
	uint32_t n = s->nwr + s->trailer;
	bool imm = b->o->target == BV_TGT_IMM;

	for (uint32_t w = 0; w < s->nwr; w++) {
		uint32_t first = w * s->per_wr;

		b->wrs[w] = (struct ibv_send_wr){
			.next = w + 1 < n ? &b->wrs[w + 1] : NULL,
			.sg_list = &b->sges[first],
			.num_sge = (int)(s->rows - first < s->per_wr ? s->rows - first : s->per_wr),
			.opcode =
				imm && s->nwr == 1 ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE,
			.wr.rdma.rkey = b->dst_mr->rkey};
	}
	for (uint32_t k = 0; k < s->rows; k++)
		b->sges[k] = (struct ibv_sge){.length = s->row_size, .lkey = b->table_mr->lkey};
	if (s->trailer) { /* its bytes are not read: the first of the table will do */
		b->sges[s->rows] = (struct ibv_sge){.addr = (uintptr_t)b->table.addr,
						    .length = TRAILER_LEN,
						    .lkey = b->table_mr->lkey};
		b->wrs[s->nwr] = (struct ibv_send_wr){
			.sg_list = &b->sges[s->rows], .num_sge = 1, .opcode = IBV_WR_SEND_WITH_IMM};
	}
}

/* Operation @op: its rows into slot op % nslots, one ibv_post_send for the whole chain. */
static int post_op(struct bv *b, const struct bv_shape *s, uint64_t seed, uint64_t op, bool sig)
{
	uint64_t g = op_seed(seed, op);
	uintptr_t table = (uintptr_t)b->table.addr;
	uint64_t remote = (uintptr_t)b->dst.addr + (op % b->nslots) * b->stride;
	struct ibv_send_wr *last = &b->wrs[s->nwr + s->trailer - 1];

	for (uint32_t k = 0; k < s->rows; k++)
		b->sges[k].addr = table + row_of(s, g, k) * s->row_size;
	for (uint32_t w = 0; w < s->nwr; w++)
		b->wrs[w].wr.rdma.remote_addr = remote + (uint64_t)w * s->per_wr * s->row_size;
	last->wr_id = op;
	last->imm_data = htonl((uint32_t)op);
	last->send_flags = sig ? IBV_SEND_SIGNALED : 0;
	return ps_vshim_post_send(b->srv_id->qp, b->wrs, NULL);
}

/*
 * The data check of a round that completed @ops operations: slot k holds the last operation
 * written to it; its checksum must equal the sum of its rows' checksums, each taken from the
 * table at the row's place in the slot. Returns the number of slots that differ.
 */
static uint64_t slots_check(const struct bv *b, const struct bv_shape *s, uint64_t seed,
			    uint64_t ops, uint64_t *checked)
{
	const uint8_t *table = b->table.addr, *dst = b->dst.addr;
	uint32_t n = ops < b->nslots ? (uint32_t)ops : b->nslots;
	uint64_t bad = 0;

	for (uint32_t k = 0; k < n; k++) {
		uint64_t op = k + (uint64_t)b->nslots * ((ops - 1 - k) / b->nslots);
		uint64_t g = op_seed(seed, op), want = 0;

		for (uint32_t i = 0; i < s->rows; i++)
			want += bench_csum(table + row_of(s, g, i) * s->row_size, s->row_size,
					   (uint64_t)i * s->row_size / 8);
		bad += bench_csum(dst + k * b->stride, b->size, 0) != want;
		*checked += b->size;
	}
	return bad;
}

/* ---- one round ------------------------------------------------------------------------------ */

/*
 * Keep -q operations in flight, signal every cq_mod-th one (and the last), refill as
 * completions come back. Duration mode samples like perftest: operations completed between
 * margin and duration - margin after the start, over the time between the first and the last
 * completion seen inside that span; at the duration, posting stops at the next signalled
 * operation and the window drains.
 */
static int round_run(struct bv *b, const struct bv_shape *s, uint64_t seed, struct bv_meas *m)
{
	const struct bv_opts *o = b->o;
	const uint64_t tmo = o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t limit = o->duration_ms ? UINT64_MAX : o->iters, posted = 0, done = 0;
	uint64_t t0 = bench_now_ns(), now = t0, progress = t0;
	uint64_t stop = t0 + o->duration_ms * PS_NSEC_PER_MSEC;
	uint64_t w_lo = t0 + o->margin_ms * PS_NSEC_PER_MSEC, w_hi = stop - (w_lo - t0);
	uint64_t w_t0 = 0, w_t1 = 0, w_o0 = 0, w_o1 = 0;
	int n, rc;

	chain_prepare(b, s);
	while (done < limit) {
		for (; posted < limit && posted - done < o->depth; posted++) {
			rc = post_op(b, s, seed, posted,
				     (posted + 1) % o->cq_mod == 0 || posted + 1 == limit);
			if (rc) {
				fprintf(stderr, BV_PROG ": %s: posting operation %" PRIu64 ": %s\n",
					s->name, posted, ps_strerror(rc));
				return rc;
			}
		}
		n = ps_vshim_cq_poll(b->srv_cq, BV_POLL_BATCH, b->wc);
		now = bench_now_ns();
		for (int i = 0; i < n; i++) {
			if (b->wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, BV_PROG ": %s: operation %" PRIu64 " failed: %s\n",
					s->name, (uint64_t)b->wc[i].wr_id,
					ps_vshim_wc_status_str(b->wc[i].status));
				return -EIO;
			}
			/* RC completes in order: one completion stands for every earlier WR. */
			if (b->wc[i].wr_id + 1 > done)
				done = b->wc[i].wr_id + 1;
		}
		if (n < 0 || (n == 0 && now - progress > tmo)) {
			fprintf(stderr, BV_PROG ": %s: %s (%" PRIu64 " posted, %" PRIu64 " done)\n",
				s->name, n < 0 ? ps_strerror(n) : "no completion within --timeout",
				posted, done);
			return n < 0 ? n : PS_ETIMEOUT;
		}
		if (n == 0)
			continue;
		progress = now;
		if (o->duration_ms && !w_t0 && now >= w_lo) {
			w_t0 = w_t1 = now;
			w_o0 = w_o1 = done;
		} else if (w_t0 && now <= w_hi) {
			w_t1 = now;
			w_o1 = done;
		}
		if (o->duration_ms && limit == UINT64_MAX && now >= stop)
			limit = (posted + o->cq_mod - 1) / o->cq_mod * o->cq_mod;
	}
	m->ops = done;
	m->win_ops = w_o1 - w_o0;
	m->win_ns = w_t1 - w_t0;
	if (!m->win_ops || !m->win_ns) {
		if (o->duration_ms)
			fprintf(stderr, BV_PROG ": warning: nothing completed inside the sampled "
						"window; reporting the whole round\n");
		m->win_ops = done;
		m->win_ns = progress - t0;
	}
	return 0;
}

/* The counters of bv_cnt_names; 0 for those the device does not have. */
static void counters_read(const struct bv *b, uint64_t *v)
{
	char path[256];
	unsigned long long x;
	FILE *f;

	for (size_t i = 0; i < BV_NCNT; i++) {
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%u/hw_counters/%s",
			 b->dev, b->port, bv_cnt_names[i]);
		f = fopen(path, "r");
		x = 0;
		if (f && fscanf(f, "%llu", &x) != 1)
			x = 0;
		if (f)
			fclose(f);
		v[i] = x;
	}
}

/* A round, its data check and the counters around it, into @r (a line of the table). */
int bv_round_measure(struct bv *b, const struct bv_shape *s, uint64_t seed, struct bv_meas *m,
		     struct bench_row *r)
{
	uint64_t c0[BV_NCNT], c1[BV_NCNT];
	double secs;
	int rc;

	memset(m, 0, sizeof(*m));
	memset(b->dst.addr, 0, (size_t)b->nslots * b->stride);
	counters_read(b, c0);
	rc = round_run(b, s, seed, m);
	counters_read(b, c1);
	if (rc)
		return rc;
	for (size_t i = 0; i < BV_NCNT; i++)
		m->cnt[i] = c1[i] - c0[i];
	m->bad_slots = slots_check(b, s, seed, m->ops, &m->checked_bytes);
	b->ops_total += m->ops;
	secs = (double)m->win_ns / 1e9;
	*r = (struct bench_row){
		.bytes = b->size,
		.iters = m->win_ops,
		.bw_mbs = secs > 0 ? (double)(m->win_ops * b->size) / secs / BENCH_MIB : 0,
		.mpps = secs > 0 ? (double)m->win_ops / secs / 1e6 : 0,
		.check_ok = m->bad_slots == 0,
		.checked = m->checked_bytes,
		.bytes_copied = -1};
	return 0;
}
