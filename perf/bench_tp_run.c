/*
 * psplus-bench-tp: the measuring loops. Every loop polls the transport without sleeping, as
 * perftest does, so what is measured is the transport and not the scheduler's wake-up time;
 * every loop also gives up after the run's timeout without progress, so a lost peer or a
 * stalled transport ends the run with a message instead of hanging it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "perf/bench_tp.h"

static int timed_out(const struct bt *b, const char *what)
{
	fprintf(stderr, BT_PROG ": no progress for %" PRIu64 " ms while %s\n", b->o->timeout_ms,
		what);
	return PS_ETIMEOUT;
}

/* An event no loop expects at this point of the protocol: release what it holds, fail. */
static int unexpected(struct bt *b, const struct ps_tp_event *ev, const char *where)
{
	fprintf(stderr, BT_PROG ": unexpected event %d (len %u) while %s\n", ev->type, ev->len,
		where);
	if (ev->type == PS_TP_EV_RECV)
		ps_tp_recv_release(ev->conn, ev->buf);
	return PS_EBAD_MESSAGE;
}

/* A completion of a data operation: fold it into @done (ops complete in order). */
static int op_done(const struct ps_tp_event *ev, uint64_t *done)
{
	uint64_t n = BT_CTX_OP(ev->ctx) + 1;

	if (ev->status) {
		fprintf(stderr, BT_PROG ": operation %" PRIu64 " failed: %s\n", n - 1,
			ps_strerror(ev->status));
		return ev->status;
	}
	if (n > *done)
		*done = n;
	return 0;
}

static bool is_op_completion(const struct ps_tp_event *ev)
{
	return (ev->type == PS_TP_EV_SEND_DONE || ev->type == PS_TP_EV_WRITE_DONE) &&
	       BT_CTX_IS_OP(ev->ctx);
}

/* Completions, control-send completions; anything else is a protocol error here. */
static int handle_other(struct bt *b, const struct ps_tp_event *ev, uint64_t *done,
			const char *where)
{
	int rc;

	if (is_op_completion(ev))
		return op_done(ev, done);
	rc = bt_event_common(b, ev);
	return rc ? rc : unexpected(b, ev, where);
}

/*
 * The window: keep up to r->depth operations in flight, ask for a completion on every
 * cq_mod-th (selective signalling: one completion stands for all operations before it on the
 * connection), and refill as completions come back. Credits are the transport's business:
 * it answers -EAGAIN when the peer has no receive buffer left, and the loop polls and retries.
 *
 * Duration mode samples like perftest: operations completed between margin and duration -
 * margin after the start count, over the time between the first and the last completion seen
 * inside that span. At the duration the loop stops posting at the next signalled operation
 * and drains.
 */
int bt_bw_send(struct bt *b, const struct bt_round *r, bt_post_fn post, struct bt_bw_result *out)
{
	const uint64_t tmo = b->o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t limit = r->iters ? r->iters : UINT64_MAX;
	uint64_t posted = 0, done = 0;
	uint64_t t0 = bench_now_ns(), now = t0, last = t0, t_done = t0;
	uint64_t stop = t0 + r->duration_ms * PS_NSEC_PER_MSEC;
	uint64_t w_lo = t0 + r->margin_ms * PS_NSEC_PER_MSEC;
	uint64_t w_hi = stop - r->margin_ms * PS_NSEC_PER_MSEC;
	uint64_t w_t0 = 0, w_o0 = 0, w_t1 = 0, w_o1 = 0;
	bool in_window = false;
	int n, rc;

	memset(out, 0, sizeof(*out));
	while (done < limit) {
		while (posted < limit && posted - done < r->depth) {
			bool sig = (posted + 1) % r->cq_mod == 0 || posted + 1 == limit;

			rc = post(b, r, posted, sig ? BT_OP_CTX(posted) : NULL);
			if (rc == -EAGAIN)
				break;
			if (rc < 0) {
				fprintf(stderr, BT_PROG ": posting operation %" PRIu64 ": %s\n",
					posted, ps_strerror(rc));
				return rc;
			}
			posted++;
		}
		n = bt_poll(b);
		if (n < 0)
			return n;
		now = bench_now_ns();
		uint64_t before = done;

		for (int i = 0; i < n; i++) {
			rc = handle_other(b, &b->evs[i], &done, "sending");
			if (rc < 0)
				return rc;
		}
		if (done != before) {
			last = now;
			t_done = now;
			if (r->duration_ms && !in_window && now >= w_lo) {
				in_window = true;
				w_t0 = w_t1 = now;
				w_o0 = w_o1 = done;
			} else if (in_window && now <= w_hi) {
				w_t1 = now;
				w_o1 = done;
			}
		} else if (now - last > tmo) {
			return timed_out(b, "waiting for completions");
		}
		if (r->duration_ms && limit == UINT64_MAX && now >= stop) {
			/* End on a signalled operation so that its completion covers all. */
			limit = (posted + r->cq_mod - 1) / r->cq_mod * r->cq_mod;
		}
	}
	out->ops = done;
	if (r->duration_ms && w_o1 > w_o0 && w_t1 > w_t0) {
		out->win_ops = w_o1 - w_o0;
		out->win_ns = w_t1 - w_t0;
	} else {
		if (r->duration_ms)
			fprintf(stderr, BT_PROG
				": warning: nothing completed inside the "
				"sampled window; reporting the whole run (raise -D or lower -f)\n");
		out->win_ops = done;
		out->win_ns = t_done - t0;
	}
	return 0;
}

/* A data message of a send test: tag and slot always, every BT_SAMPLE_EVERY-th in full. */
static void check_msg(const struct bt *b, const struct bt_round *r, const void *buf, uint32_t len,
		      uint64_t seq, struct bt_sink_result *out)
{
	uint32_t slot = (uint32_t)(seq % r->nslots);
	uint64_t w0 = 0;

	if (len >= 8)
		memcpy(&w0, buf, 8);
	if (len != r->size || w0 != ((uint64_t)BT_TAG_DATA << 32 | slot)) {
		out->bad++;
		return;
	}
	if (seq % BT_SAMPLE_EVERY == 0) {
		if (bench_csum(buf, len, slot * r->stride / 8) != b->slot_csum[slot])
			out->bad++;
		out->checked += len;
	}
}

/*
 * The receiving side of write_bw, send_bw and gather: count and check until the sender's END.
 * A write_imm carries its operation number as the immediate, so order and loss show.
 */
int bt_sink(struct bt *b, const struct bt_round *r, struct bt_ctl *end, struct bt_sink_result *out)
{
	const uint64_t tmo = b->o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t last = bench_now_ns(), now;
	int n, rc;

	memset(out, 0, sizeof(*out));
	for (;;) {
		n = bt_poll(b);
		if (n < 0)
			return n;
		now = bench_now_ns();
		for (int i = 0; i < n; i++) {
			const struct ps_tp_event *ev = &b->evs[i];

			switch (ev->type) {
			case PS_TP_EV_WRITE_IMM:
				if (ev->imm != (uint32_t)out->ops || ev->len != r->op_bytes)
					out->bad++;
				out->ops++;
				out->bytes += ev->len;
				continue;
			case PS_TP_EV_RECV:
				rc = bt_ctl_take(b, ev, end);
				if (rc < 0)
					return rc;
				if (rc == 1) {
					if ((uint32_t)end->tag != BT_MSG_END) {
						fprintf(stderr,
							BT_PROG ": got control message "
								"%u, expected END\n",
							(uint32_t)end->tag);
						return PS_EBAD_MESSAGE;
					}
					bt_stash(b, i + 1, n);
					return 0;
				}
				check_msg(b, r, ev->buf, ev->len, out->ops, out);
				out->ops++;
				out->bytes += ev->len;
				ps_tp_recv_release(ev->conn, ev->buf);
				continue;
			default:
				rc = bt_event_common(b, ev);
				if (rc == 0)
					rc = unexpected(b, ev, "receiving");
				if (rc < 0)
					return rc;
			}
		}
		if (n > 0)
			last = now;
		else if (now - last > tmo)
			return timed_out(b, "receiving");
	}
	return 0;
}

/* Post a ping or pong: the test's operation from source slot op % nslots. */
static int post_one(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx)
{
	return r->test == BT_SEND_LAT ? bt_post_send(b, r, op, ctx) : bt_post_write(b, r, op, ctx);
}

static void *lat_ctx(const struct bt_round *r, uint64_t op)
{
	return (op + 1) % r->cq_mod == 0 ? BT_OP_CTX(op) : NULL;
}

/*
 * The client of a latency test: ping, wait for the pong, one at a time. The clock stops when
 * the poll that returned the pong returns; the pong is checked after that, outside the sample.
 */
int bt_lat_ping(struct bt *b, const struct bt_round *r, size_t *nsamples,
		struct bt_sink_result *chk)
{
	const uint64_t tmo = b->o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t limit = r->iters ? r->iters : BT_LAT_MAX;
	uint64_t stop = bench_now_ns() + r->duration_ms * PS_NSEC_PER_MSEC;
	uint64_t done = 0, i;
	struct bt_ctl m;
	int n, rc;

	for (i = 0; i < limit; i++) {
		uint64_t t0 = bench_now_ns(), t1 = t0;
		bool got = false;

		/* No credit or send slot: only completions and credits can be pending. */
		while ((rc = post_one(b, r, i, lat_ctx(r, i))) == -EAGAIN) {
			n = bt_poll(b);
			if (n < 0)
				return n;
			for (int k = 0; k < n; k++) {
				rc = handle_other(b, &b->evs[k], &done, "waiting for a send slot");
				if (rc < 0)
					return rc;
			}
			if (bench_now_ns() - t0 > tmo)
				return timed_out(b, "waiting for a send slot");
		}
		if (rc < 0) {
			fprintf(stderr, BT_PROG ": posting ping %" PRIu64 ": %s\n", i,
				ps_strerror(rc));
			return rc;
		}
		while (!got) {
			n = bt_poll(b);
			t1 = bench_now_ns();
			if (n < 0)
				return n;
			for (int k = 0; k < n; k++) {
				const struct ps_tp_event *ev = &b->evs[k];

				if (!got && ev->type == PS_TP_EV_WRITE_IMM &&
				    r->test == BT_WRITE_LAT) {
					if (ev->imm != (uint32_t)i || ev->len != r->size)
						chk->bad++;
					got = true;
					continue;
				}
				if (!got && ev->type == PS_TP_EV_RECV && r->test == BT_SEND_LAT) {
					rc = bt_ctl_take(b, ev, &m);
					if (rc == 0) {
						check_msg(b, r, ev->buf, ev->len, i, chk);
						ps_tp_recv_release(ev->conn, ev->buf);
						got = true;
						continue;
					}
					fprintf(stderr, BT_PROG ": control message instead "
								"of a pong\n");
					return PS_EBAD_MESSAGE;
				}
				rc = handle_other(b, ev, &done, "waiting for a pong");
				if (rc < 0)
					return rc;
			}
			if (!got && t1 - t0 > tmo)
				return timed_out(b, "waiting for a pong");
		}
		b->lat[i] = t1 - t0;
		if (r->duration_ms && t1 >= stop) {
			i++;
			break;
		}
	}
	*nsamples = i;
	return 0;
}

/*
 * The server of a latency test: answer each ping at once (the pong is posted and flushed
 * before the ping is checked), until END. A pong refused for lack of a credit or send slot
 * is owed and goes out as soon as one is back.
 */
int bt_lat_pong(struct bt *b, const struct bt_round *r, struct bt_ctl *end,
		struct bt_sink_result *out)
{
	const uint64_t tmo = b->o->timeout_ms * PS_NSEC_PER_MSEC;
	uint64_t last = bench_now_ns(), now, owed = 0, posted = 0, done = 0;
	bool got_end = false;
	int n, rc;

	memset(out, 0, sizeof(*out));
	while (!got_end) {
		n = bt_poll(b);
		if (n < 0)
			return n;
		now = bench_now_ns();
		for (int i = 0; i < n; i++) {
			const struct ps_tp_event *ev = &b->evs[i];
			bool ping = false;

			if (ev->type == PS_TP_EV_WRITE_IMM && r->test == BT_WRITE_LAT) {
				ping = true;
			} else if (ev->type == PS_TP_EV_RECV) {
				rc = bt_ctl_take(b, ev, end);
				if (rc < 0)
					return rc;
				if (rc == 1) {
					if ((uint32_t)end->tag != BT_MSG_END) {
						fprintf(stderr,
							BT_PROG ": got control "
								"message %u, expected END\n",
							(uint32_t)end->tag);
						return PS_EBAD_MESSAGE;
					}
					got_end = true;
					bt_stash(b, i + 1, n);
					break;
				}
				if (r->test != BT_SEND_LAT)
					return unexpected(b, ev, "answering pings");
				ping = true;
			}
			if (!ping) {
				rc = handle_other(b, ev, &done, "answering pings");
				if (rc < 0)
					return rc;
				continue;
			}
			owed++;
			while (owed && post_one(b, r, posted, lat_ctx(r, posted)) == 0) {
				owed--;
				posted++;
			}
			ps_tp_flush(b->loop);
			if (r->test == BT_SEND_LAT) {
				check_msg(b, r, ev->buf, ev->len, out->ops, out);
				ps_tp_recv_release(ev->conn, ev->buf);
			} else if (ev->imm != (uint32_t)out->ops || ev->len != r->size) {
				out->bad++;
			}
			out->ops++;
		}
		while (owed && post_one(b, r, posted, lat_ctx(r, posted)) == 0) {
			owed--;
			posted++;
		}
		if (n > 0)
			last = now;
		else if (now - last > tmo)
			return timed_out(b, "answering pings");
	}
	if (owed) {
		fprintf(stderr, BT_PROG ": %" PRIu64 " pongs never went out\n", owed);
		return PS_EBAD_MESSAGE;
	}
	return 0;
}

int bt_post_write(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx)
{
	uint32_t slot = (uint32_t)(op % r->nslots);
	struct ps_tp_sge sge = {b->src + slot * r->stride, (uint32_t)r->size, b->area_mr};
	struct ps_tp_rbuf dst = {r->peer.addr + slot * r->stride, r->peer.rkey, (uint32_t)r->size};

	return ps_tp_write_imm(b->conn, &sge, 1, &dst, (uint32_t)op, ctx);
}

int bt_post_send(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx)
{
	uint32_t slot = (uint32_t)(op % r->nslots);
	struct ps_tp_sge sge = {b->src + slot * r->stride, (uint32_t)r->size, b->area_mr};

	return ps_tp_send(b->conn, &sge, 1, ctx);
}

/*
 * Rows of a gather: a fresh random draw per gather, reproducible from (seed, gather) alone so
 * the data check can regenerate any gather later. Multiply-shift maps 64 random bits onto
 * [0, nrows) without a division.
 */
static inline uint64_t gather_seed(const struct bt_round *r, uint64_t g)
{
	return bench_mix64(r->seed ^ (g * 0xa0761d6478bd642full));
}

static inline uint64_t gather_pick(uint64_t gseed, uint32_t k, uint64_t nrows)
{
	return (uint64_t)(((unsigned __int128)bench_mix64(gseed + k * 0xe7037ed1a0b428dbull) *
			   nrows) >>
			  64);
}

/* Row k of a gather whose seed is @gseed: random, or the k-th after a random start. */
static inline uint64_t gather_row(const struct bt_round *r, uint64_t gseed, uint32_t k,
				  uint64_t nrows)
{
	if (r->rows_seq)
		return (gather_pick(gseed, 0, nrows) + k) % nrows;
	return gather_pick(gseed, k, nrows);
}

uint64_t bt_gather_row(const struct bt_round *r, uint64_t nrows, uint64_t g, uint32_t k)
{
	return gather_row(r, gather_seed(r, g), k, nrows);
}

/*
 * One write_imm of a gather: rows [c * per, (c + 1) * per) of gather g = op / chunks, straight
 * from the registered table into slot g % nslots of the peer's sink, at the rows' place in it.
 */
int bt_post_gather(struct bt *b, const struct bt_round *r, uint64_t op, void *ctx)
{
	uint64_t g = op / r->chunks, nrows = b->table_len / r->row_size;
	uint32_t c = (uint32_t)(op % r->chunks), per = r->rows / r->chunks;
	uint32_t slot = (uint32_t)(g % r->nslots);
	uint64_t s = gather_seed(r, g);
	const uint8_t *table = b->table.addr;
	struct ps_tp_rbuf dst = {r->peer.addr + slot * r->stride + (uint64_t)c * per * r->row_size,
				 r->peer.rkey, per * r->row_size};

	for (uint32_t i = 0; i < per; i++) {
		uint64_t row = gather_row(r, s, c * per + i, nrows);

		b->sgl[i].addr = table + row * r->row_size;
		b->sgl[i].len = r->row_size;
		b->sgl[i].mr = b->table_mr;
	}
	return ps_tp_write_imm(b->conn, b->sgl, (int)per, &dst, (uint32_t)op, ctx);
}

void bt_fill_slots(uint8_t *base, const struct bt_round *r, uint64_t seed, uint32_t nslots)
{
	for (uint32_t k = 0; k < nslots; k++) {
		uint8_t *p = base + k * r->stride;

		bench_fill(p, r->size, seed, k * r->stride / 8);
		if (r->test == BT_SEND_BW || r->test == BT_SEND_LAT) {
			uint64_t tag = (uint64_t)BT_TAG_DATA << 32 | k;

			memcpy(p, &tag, 8);
		}
	}
}

uint64_t bt_csum_slots(const uint8_t *base, const struct bt_round *r, uint32_t n)
{
	uint64_t sum = 0;

	for (uint32_t k = 0; k < n; k++)
		sum += bench_csum(base + k * r->stride, r->size, k * r->stride / 8);
	return sum;
}

uint64_t bt_slot_expected_csum(const struct bt_round *r, uint64_t seed, uint32_t k)
{
	uint64_t w0 = k * r->stride / 8;
	uint64_t sum = bench_pattern_csum(seed, r->size, w0);

	if (r->test == BT_SEND_BW || r->test == BT_SEND_LAT) {
		/* The first word carries the tag instead of the pattern (sizes >= 8 here). */
		sum -= bench_csum_word(bench_word(seed, w0), w0);
		sum += bench_csum_word((uint64_t)BT_TAG_DATA << 32 | k, w0);
	}
	return sum;
}

/*
 * The sender's half of the gather check: slot k of the sink ends up holding the last gather
 * written to it; sum its rows as they sit in the table, each at its place in the slot.
 */
uint64_t bt_gather_src_csum(const struct bt *b, const struct bt_round *r, uint64_t gathers)
{
	uint64_t nrows = b->table_len / r->row_size, sum = 0;
	const uint8_t *table = b->table.addr;
	uint32_t n = gathers < r->nslots ? (uint32_t)gathers : r->nslots;

	for (uint32_t k = 0; k < n; k++) {
		uint64_t g = k + (uint64_t)r->nslots * ((gathers - 1 - k) / r->nslots);

		for (uint32_t i = 0; i < r->rows; i++) {
			uint64_t row = bt_gather_row(r, nrows, g, i);

			sum += bench_csum(table + row * r->row_size, r->row_size,
					  (k * r->stride + (uint64_t)i * r->row_size) / 8);
		}
	}
	return sum;
}
