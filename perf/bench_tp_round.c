/*
 * psplus-bench-tp: the rounds of the control protocol (bench_tp.h): control messages, the
 * events every loop handles alike, and one round of each test on the server and the client.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "perf/bench_tp.h"

/* ---- control messages and common events ---------------------------------------------- */

int bt_poll(struct bt *b)
{
	int n = b->nstash;

	if (!n)
		return ps_tp_poll(b->loop, b->evs, BT_POLL_BATCH,
				  b->o->events ? BT_EVENTS_WAIT_MS : 0);
	memcpy(b->evs, b->stash, (size_t)n * sizeof(b->evs[0]));
	b->nstash = 0;
	return n;
}

void bt_stash(struct bt *b, int from, int n)
{
	if (from < n) {
		memcpy(b->stash, b->evs + from, (size_t)(n - from) * sizeof(b->evs[0]));
		b->nstash = n - from;
	}
}

int bt_pump(struct bt *b, const char *where)
{
	int n = bt_poll(b);

	for (int i = 0; i < n; i++) {
		int rc = bt_event_common(b, &b->evs[i]);

		if (rc == 0) {
			fprintf(stderr, BT_PROG ": unexpected event %d while %s\n", b->evs[i].type,
				where);
			if (b->evs[i].type == PS_TP_EV_RECV)
				ps_tp_recv_release(b->evs[i].conn, b->evs[i].buf);
			rc = PS_EBAD_MESSAGE;
		}
		if (rc < 0)
			return rc;
	}
	return n;
}

int bt_ctl_send(struct bt *b, const struct bt_ctl *m)
{
	uint64_t deadline = ps_clock_deadline_ms(b->o->timeout_ms);
	uint8_t *slot;
	struct ps_tp_sge sge;
	int rc;

	/* A control slot is reused only once its send completed (the memory is read late). */
	while (b->ctl_posted - b->ctl_done >= BT_CTL_SLOTS) {
		rc = bt_pump(b, "waiting for a control slot");
		if (rc < 0)
			return rc;
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
	}
	slot = b->ctl + (b->ctl_posted % BT_CTL_SLOTS) * BT_CTL_SLOT_SIZE;
	memcpy(slot, m, sizeof(*m));
	sge = (struct ps_tp_sge){slot, sizeof(*m), b->area_mr};
	while ((rc = ps_tp_send(b->conn, &sge, 1, &b->ctl_marker)) == -EAGAIN) {
		rc = bt_pump(b, "waiting for a credit");
		if (rc < 0)
			return rc;
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
	}
	if (rc < 0)
		return rc;
	b->ctl_posted++;
	return ps_tp_flush(b->loop);
}

int bt_ctl_take(struct bt *b, const struct ps_tp_event *ev, struct bt_ctl *out)
{
	uint64_t w0 = 0;
	struct bt_ctl m;

	if (ev->len >= 8)
		memcpy(&w0, ev->buf, 8);
	if ((uint32_t)(w0 >> 32) != BT_TAG_CTL)
		return 0;
	if (ev->len < sizeof(m)) {
		ps_tp_recv_release(ev->conn, ev->buf);
		fprintf(stderr, BT_PROG ": short control message (%u bytes)\n", ev->len);
		return PS_EBAD_MESSAGE;
	}
	memcpy(&m, ev->buf, sizeof(m));
	ps_tp_recv_release(ev->conn, ev->buf);
	if (m.version != BT_PROTO_VERSION) {
		fprintf(stderr, BT_PROG ": peer speaks protocol version %u, this is %u\n",
			m.version, BT_PROTO_VERSION);
		return PS_EPROTO_VERSION;
	}
	if (out)
		*out = m;
	return 1;
}

int bt_event_common(struct bt *b, const struct ps_tp_event *ev)
{
	switch (ev->type) {
	case PS_TP_EV_SEND_DONE:
	case PS_TP_EV_WRITE_DONE:
		if (BT_CTX_IS_OP(ev->ctx)) {
			/*
			 * A data op of a round that has ended: the pong side leaves its round at
			 * the peer's END, and the ACK of one of its last pongs may complete after
			 * that (rxe defers ACKs). Nothing waits for it; a failure still counts.
			 */
			if (ev->status) {
				fprintf(stderr, BT_PROG ": operation %" PRIu64 " failed: %s\n",
					BT_CTX_OP(ev->ctx), ps_strerror(ev->status));
				return ev->status;
			}
			return 1;
		}
		if (ev->ctx != &b->ctl_marker)
			return 0;
		if (ev->status) {
			fprintf(stderr, BT_PROG ": control message failed: %s\n",
				ps_strerror(ev->status));
			return ev->status;
		}
		b->ctl_done++;
		return 1;
	case PS_TP_EV_ACCEPT:
		if (ev->conn != b->conn) {
			fprintf(stderr, BT_PROG ": refusing a second connection from %s\n",
				ps_tp_conn_peer(ev->conn));
			ps_tp_conn_close(ev->conn);
		}
		return 1;
	case PS_TP_EV_CLOSED:
		if (b->closing)
			return PS_EPEER_LOST;
		fprintf(stderr, BT_PROG ": connection closed by the peer (%s)\n",
			ev->status ? ps_strerror(ev->status) : "orderly");
		return PS_EPEER_LOST;
	default:
		return 0;
	}
}

/* Wait for the next control message. */
int bt_ctl_wait(struct bt *b, struct bt_ctl *out, const char *what)
{
	uint64_t last = bench_now_ns();
	uint64_t tmo = b->o->timeout_ms * PS_NSEC_PER_MSEC;

	for (;;) {
		int n = bt_poll(b), rc = 0;

		if (n < 0)
			return n;
		for (int i = 0; i < n && rc >= 0; i++) {
			const struct ps_tp_event *ev = &b->evs[i];

			if (ev->type == PS_TP_EV_RECV) {
				rc = bt_ctl_take(b, ev, out);
				if (rc == 1) {
					/* What follows (e.g. data after READY) is the caller's. */
					bt_stash(b, i + 1, n);
					return 0;
				}
			}
			if (rc == 0)
				rc = bt_event_common(b, ev);
			if (rc == 0) {
				fprintf(stderr,
					BT_PROG ": unexpected event %d while waiting for %s\n",
					ev->type, what);
				if (ev->type == PS_TP_EV_RECV)
					ps_tp_recv_release(ev->conn, ev->buf);
				rc = PS_EBAD_MESSAGE;
			}
		}
		if (rc < 0)
			return rc;
		if (n > 0)
			last = bench_now_ns();
		else if (bench_now_ns() - last > tmo) {
			fprintf(stderr, BT_PROG ": timed out waiting for %s\n", what);
			return PS_ETIMEOUT;
		}
	}
}

struct bt_ctl bt_ctl_new(enum bt_msg type)
{
	return (struct bt_ctl){.tag = (uint64_t)BT_TAG_CTL << 32 | type,
			       .version = BT_PROTO_VERSION};
}

/* ---- rounds --------------------------------------------------------------------------- */

/* Both sides derive the same round from START (and the sender's chunk count from READY). */
static void round_derive(const struct bt_ctl *m, uint32_t chunks, struct bt_round *r)
{
	memset(r, 0, sizeof(*r));
	r->test = m->test;
	r->size = m->size;
	r->stride = (m->size + 63) & ~63ull;
	r->nslots = bt_test_is_lat(r->test) ? 1 : (uint32_t)(BT_HALF / r->stride);
	if (r->nslots > m->depth)
		r->nslots = m->depth;
	r->rows = m->rows;
	r->row_size = m->row_size;
	r->rows_seq = (m->flags & BT_FLAG_ROWS_SEQ) != 0;
	r->chunks = chunks ? chunks : 1;
	r->op_bytes = r->size / r->chunks;
	r->iters = m->iters * r->chunks;
	/* A gather ends on a signalled chunk only if cq_mod and depth count whole gathers. */
	r->cq_mod = (m->cq_mod + r->chunks - 1) / r->chunks * r->chunks;
	r->depth = m->depth < r->cq_mod ? r->cq_mod : m->depth;
	r->duration_ms = m->duration_ms;
	r->margin_ms = m->margin_ms;
	r->seed = m->seed;
}

static int srv_refuse(const struct bt_ctl *m, const struct bt *b, char *why, size_t len)
{
	const struct bt_opts *o = b->o;

	if (m->test < BT_WRITE_BW || m->test > BT_GATHER)
		snprintf(why, len, "unknown test %u", m->test);
	else if (m->test != o->test)
		snprintf(why, len, "server runs %s, client asks for %s", bt_test_name(o->test),
			 bt_test_name(m->test));
	else if (!m->size || m->size > BT_MAX_SIZE)
		snprintf(why, len, "size %" PRIu64 " out of range", m->size);
	else if (m->depth == 0 || m->depth > o->depth || !m->cq_mod)
		snprintf(why, len, "client depth %u exceeds the server's %u (-q)", m->depth,
			 o->depth);
	else if ((m->test == BT_SEND_BW || m->test == BT_SEND_LAT) &&
		 (m->size < 8 || m->size > bt_msg_size_for(o)))
		snprintf(why, len,
			 "send size %" PRIu64 " outside 8..%u (give the server the same -s/-a)",
			 m->size, bt_msg_size_for(o));
	else if (m->test == BT_GATHER &&
		 (!m->rows || m->rows > b->sgl_cap || m->row_size % 8 ||
		  (uint64_t)m->rows * m->row_size != m->size || m->row_size > o->table_size))
		snprintf(why, len, "gather of %u x %u B does not fit (server: --rows %u)", m->rows,
			 m->row_size, b->sgl_cap);
	else
		return 0;
	return PS_EBAD_OPTION;
}

/* Rows per write_imm: as asked, else all of them (the transport chunks by the device SGE). */
static uint32_t gather_chunks(const struct bt *b, uint32_t rows)
{
	uint32_t per = b->o->sge_per_write ? b->o->sge_per_write : rows;

	return per >= rows ? 1 : rows / per;
}

int bt_srv_round(struct bt *b, const struct bt_ctl *start)
{
	struct bt_ctl ready = bt_ctl_new(BT_MSG_READY), end, res = bt_ctl_new(BT_MSG_RESULT);
	struct bt_round r;
	struct bt_sink_result sink;
	struct bt_bw_result bw;
	struct ps_tp_stats s0, s1;
	char why[160] = "";
	int rc;

	ready.status = srv_refuse(start, b, why, sizeof(why));
	if (!ready.status && start->test == BT_GATHER)
		ready.status = bt_table_ensure(b);
	if (ready.status) {
		fprintf(stderr, BT_PROG ": refusing the round: %s\n",
			*why ? why : ps_strerror(ready.status));
		rc = bt_ctl_send(b, &ready);
		return rc ? rc : ready.status;
	}
	round_derive(start, start->test == BT_GATHER ? gather_chunks(b, start->rows) : 1, &r);
	r.peer = start->rbuf;
	/* The sink and the expected checksums are ready before READY lets data flow. */
	switch (r.test) {
	case BT_WRITE_BW:
		memset(b->dst, 0, (size_t)r.nslots * r.stride);
		break;
	case BT_SEND_BW:
		for (uint32_t k = 0; k < r.nslots; k++)
			b->slot_csum[k] = bt_slot_expected_csum(&r, r.seed, k);
		break;
	case BT_SEND_LAT:
	case BT_WRITE_LAT:
		bt_fill_slots(b->src, &r, r.seed ^ BT_SERVER_SALT, 1);
		b->slot_csum[0] = bt_slot_expected_csum(&r, r.seed, 0);
		memset(b->dst, 0, r.size);
		break;
	default:
		break;
	}
	ready.nslots = r.nslots;
	ready.chunks = r.chunks;
	ps_tp_mr_rbuf(b->area_mr, b->dst, BT_HALF, &ready.rbuf);
	rc = bt_ctl_send(b, &ready);
	if (rc)
		return rc;

	switch (r.test) {
	case BT_WRITE_BW:
	case BT_SEND_BW:
		rc = bt_sink(b, &r, &end, &sink);
		if (rc)
			return rc;
		res.ops = sink.ops;
		res.bytes = sink.bytes;
		res.bad = sink.bad;
		res.checked = sink.checked;
		if (r.test == BT_WRITE_BW) {
			uint32_t n = end.ops < r.nslots ? (uint32_t)end.ops : r.nslots;

			res.csum = bt_csum_slots(b->dst, &r, n);
			res.checked = n * r.size;
		}
		break;
	case BT_SEND_LAT:
	case BT_WRITE_LAT:
		rc = bt_lat_pong(b, &r, &end, &sink);
		if (rc)
			return rc;
		res.ops = sink.ops;
		res.bad = sink.bad;
		res.checked = sink.checked;
		if (r.test == BT_WRITE_LAT && sink.ops) {
			res.csum = bt_csum_slots(b->dst, &r, 1);
			res.checked = r.size;
		}
		break;
	case BT_GATHER:
		ps_tp_stats_get(b->dev, &s0);
		rc = bt_bw_send(b, &r, bt_post_gather, &bw);
		if (rc)
			return rc;
		ps_tp_stats_get(b->dev, &s1);
		end = bt_ctl_new(BT_MSG_END);
		end.ops = bw.ops / r.chunks;
		end.bytes = bw.ops * r.op_bytes;
		end.win_ops = bw.win_ops;
		end.win_ns = bw.win_ns;
		end.csum = bt_gather_src_csum(b, &r, end.ops);
		end.checked = (end.ops < r.nslots ? end.ops : r.nslots) * r.size;
		end.bytes_copied = s1.bytes_copied - s0.bytes_copied;
		end.eagain = s1.eagain - s0.eagain;
		end.doorbells = s1.doorbells - s0.doorbells;
		rc = bt_ctl_send(b, &end);
		if (!rc)
			rc = bt_ctl_wait(b, &res, "the client's RESULT");
		if (rc)
			return rc;
		printf(" gather %u x %u B: %" PRIu64 " gathers sent, %" PRIu64
		       " write_imm, bytes_copied %" PRIu64 ", eagain %" PRIu64
		       ", doorbells %" PRIu64 "\n",
		       r.rows, r.row_size, end.ops, bw.ops, end.bytes_copied, end.eagain,
		       end.doorbells);
		fflush(stdout);
		return 0;
	}
	rc = bt_ctl_send(b, &res);
	if (!rc) {
		printf(" round %s %" PRIu64 " B: received %" PRIu64 " of %" PRIu64 ", bad %" PRIu64
		       "\n",
		       bt_test_name(r.test), r.size, res.ops, end.ops, res.bad);
		fflush(stdout);
	}
	return rc;
}

static double mbs(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / ((double)ns / 1e9) / BENCH_MIB : 0;
}

int bt_cli_round(struct bt *b, uint64_t size, uint32_t rows, struct bench_row *row)
{
	const struct bt_opts *o = b->o;
	struct bt_ctl start = bt_ctl_new(BT_MSG_START), ready, end = bt_ctl_new(BT_MSG_END), res;
	struct bt_round r;
	struct bt_bw_result bw;
	struct bt_sink_result sink;
	struct ps_tp_stats s0, s1;
	size_t nlat = 0;
	struct bt_sink_result ping = {0};
	uint64_t own_csum = 0, want_csum = 0;
	int rc;

	start.test = o->test;
	start.depth = o->depth;
	start.cq_mod = o->cq_mod;
	start.rows = o->test == BT_GATHER ? rows : 0;
	start.row_size = o->test == BT_GATHER ? (uint32_t)(size / rows) : 0;
	start.size = size;
	start.iters = o->duration_ms ? 0 : o->iters;
	start.duration_ms = o->duration_ms;
	start.margin_ms = o->margin_ms;
	start.seed = bench_seed();
	start.flags = o->test == BT_GATHER && o->rows_seq ? BT_FLAG_ROWS_SEQ : 0;
	ps_tp_mr_rbuf(b->area_mr, b->dst, BT_HALF, &start.rbuf);

	/* Sources and sinks are ready before START: data may follow READY at once. */
	round_derive(&start, 1, &r);
	switch (r.test) {
	case BT_WRITE_BW:
	case BT_SEND_BW:
		bt_fill_slots(b->src, &r, r.seed, r.nslots);
		break;
	case BT_SEND_LAT:
	case BT_WRITE_LAT:
		bt_fill_slots(b->src, &r, r.seed, 1);
		b->slot_csum[0] = bt_slot_expected_csum(&r, r.seed ^ BT_SERVER_SALT, 0);
		memset(b->dst, 0, r.size);
		break;
	case BT_GATHER:
		memset(b->dst, 0, (size_t)r.nslots * r.stride);
		break;
	}
	rc = bt_ctl_send(b, &start);
	if (!rc)
		rc = bt_ctl_wait(b, &ready, "READY");
	if (rc)
		return rc;
	if ((uint32_t)ready.tag != BT_MSG_READY || ready.status) {
		fprintf(stderr, BT_PROG ": the server refused the round (%s); see its output\n",
			ps_strerror(ready.status ? ready.status : PS_EBAD_MESSAGE));
		return ready.status ? ready.status : PS_EBAD_MESSAGE;
	}
	round_derive(&start, ready.chunks, &r);
	r.peer = ready.rbuf;
	if (ready.nslots != r.nslots) {
		fprintf(stderr, BT_PROG ": server has %u slots, client %u\n", ready.nslots,
			r.nslots);
		return PS_EBAD_MESSAGE;
	}

	memset(row, 0, sizeof(*row));
	row->bytes = size;
	row->bytes_copied = -1;
	switch (r.test) {
	case BT_WRITE_BW:
	case BT_SEND_BW:
		ps_tp_stats_get(b->dev, &s0);
		rc = bt_bw_send(b, &r, r.test == BT_WRITE_BW ? bt_post_write : bt_post_send, &bw);
		if (rc)
			return rc;
		ps_tp_stats_get(b->dev, &s1);
		end.ops = bw.ops;
		end.bytes = bw.ops * size;
		if (r.test == BT_WRITE_BW)
			end.csum = bt_csum_slots(b->src, &r,
						 bw.ops < r.nslots ? (uint32_t)bw.ops : r.nslots);
		rc = bt_ctl_send(b, &end);
		if (!rc)
			rc = bt_ctl_wait(b, &res, "RESULT");
		if (rc)
			return rc;
		row->iters = bw.win_ops;
		row->bw_mbs = mbs(bw.win_ops * size, bw.win_ns);
		row->mpps = bw.win_ns ? (double)bw.win_ops * 1e3 / (double)bw.win_ns : 0;
		row->bytes_copied = (int64_t)(s1.bytes_copied - s0.bytes_copied);
		row->checked = res.checked;
		row->check_ok = res.ops == bw.ops && !res.bad && res.csum == end.csum &&
				(r.test == BT_SEND_BW || res.checked);
		if (!row->check_ok)
			fprintf(stderr,
				BT_PROG ": data check FAILED at %" PRIu64 " B: sent %" PRIu64
					", server got %" PRIu64 ", bad %" PRIu64 ", checksum %s\n",
				size, bw.ops, res.ops, res.bad,
				res.csum == end.csum ? "equal" : "DIFFERENT");
		return 0;
	case BT_SEND_LAT:
	case BT_WRITE_LAT:
		ps_tp_stats_get(b->dev, &s0);
		rc = bt_lat_ping(b, &r, &nlat, &ping);
		if (rc)
			return rc;
		ps_tp_stats_get(b->dev, &s1);
		end.ops = nlat;
		if (r.test == BT_WRITE_LAT)
			end.csum = bt_csum_slots(b->src, &r, 1);
		rc = bt_ctl_send(b, &end);
		if (!rc)
			rc = bt_ctl_wait(b, &res, "RESULT");
		if (rc)
			return rc;
		if (r.test == BT_WRITE_LAT && nlat) {
			own_csum = bt_csum_slots(b->dst, &r, 1);
			want_csum = b->slot_csum[0];
		}
		row->iters = nlat;
		bench_lat_compute(b->lat, nlat, &row->lat);
		row->bytes_copied = (int64_t)(s1.bytes_copied - s0.bytes_copied);
		row->checked = res.checked + ping.checked + (r.test == BT_WRITE_LAT ? r.size : 0);
		row->check_ok = res.ops == nlat && !res.bad && !ping.bad && res.csum == end.csum &&
				own_csum == want_csum;
		if (!row->check_ok)
			fprintf(stderr,
				BT_PROG ": data check FAILED at %" PRIu64 " B: pings %zu, server "
					"got %" PRIu64 ", bad %" PRIu64 "/%" PRIu64
					", checksums %s/%s\n",
				size, nlat, res.ops, res.bad, ping.bad,
				res.csum == end.csum ? "equal" : "DIFFERENT",
				own_csum == want_csum ? "equal" : "DIFFERENT");
		return 0;
	case BT_GATHER:
		rc = bt_sink(b, &r, &end, &sink);
		if (rc)
			return rc;
		res = bt_ctl_new(BT_MSG_RESULT);
		res.ops = sink.ops;
		res.bad = sink.bad;
		res.csum = bt_csum_slots(b->dst, &r,
					 end.ops < r.nslots ? (uint32_t)end.ops : r.nslots);
		rc = bt_ctl_send(b, &res);
		if (rc)
			return rc;
		row->iters = end.win_ops / r.chunks;
		row->bw_mbs = mbs(end.win_ops * r.op_bytes, end.win_ns);
		row->mpps = end.win_ns ? (double)row->iters * 1e3 / (double)end.win_ns : 0;
		row->bytes_copied = (int64_t)end.bytes_copied;
		row->checked = end.checked;
		row->check_ok = sink.ops == end.ops * r.chunks && !sink.bad &&
				res.csum == end.csum && end.checked;
		if (!row->check_ok)
			fprintf(stderr,
				BT_PROG ": data check FAILED: server sent %" PRIu64
					" write_imm, got %" PRIu64 ", bad %" PRIu64
					", checksum %s\n",
				end.ops * r.chunks, sink.ops, sink.bad,
				res.csum == end.csum ? "equal" : "DIFFERENT");
		b->gather_chunks = r.chunks;
		return 0;
	}
	return PS_EBAD_MESSAGE;
}
