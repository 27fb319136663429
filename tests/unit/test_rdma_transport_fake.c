/*
 * test_rdma_transport_fake: the rdma backend of the transport interface (transport/rdma/) over
 * the fake verbs layer, driven through the ps_tp_* API only. Each failure the verbs layer can
 * report must reach the caller as an error code or as the documented events (a completion with
 * PS_EPEER_LOST for every operation that asked for one, then PS_TP_EV_CLOSED), and tearing
 * everything down must leave no verbs object alive (the fake's counters) and no leak (ASan).
 *
 * One loop holds the listener and both ends of the connection: ps_tp_connect() dispatches the
 * loop's cm events itself, so the listener's accept happens inside it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/unit/fake_verbs.h"
#include "transport/transport.h"

#define ADDR	"192.0.2.1"
#define MSG_LEN 512u

struct fx {
	struct ps_tp_dev *dev;
	struct ps_tp_loop *loop;
	struct ps_tp_listener *lst;
	struct ps_tp_conn *cli, *srv;
	uint8_t *buf;
	struct ps_tp_mr *mr;
};

static const struct ps_tp_loop_opts small_loop = {.recv_depth = 8,
						  .msg_size = 4096,
						  .send_depth = 8,
						  .max_conns = 4,
						  .connect_timeout_ms = 2000};

/*
 * Events seen but not yet asked for, so that a test can wait for events in any order. RECV
 * buffers are released as they arrive (the tests do not read them).
 */
static struct ps_tp_event backlog[64];
static int nbacklog;

static void assert_no_leaks(void)
{
	struct fake_verbs_counts c;

	if (fake_verbs_live_objects(&c))
		fail_msg("live: ctx %d pd %d mr %d cch %d cq %d qp %d cmch %d id %d cmev %d cqev "
			 "%d misuse %d (%s)",
			 c.contexts, c.pds, c.mrs, c.comp_channels, c.cqs, c.qps, c.cm_channels,
			 c.cm_ids, c.cm_events, c.cq_events, c.misuse, fake_verbs_last_misuse());
}

static int setup(void **state)
{
	fake_verbs_reset();
	nbacklog = 0;
	return 0;
}

static int teardown(void **state)
{
	assert_no_leaks();
	return 0;
}

/* Take the first backlogged event of @type for @conn (any conn if NULL). */
static bool backlog_take(enum ps_tp_ev_type type, struct ps_tp_conn *conn, struct ps_tp_event *out)
{
	for (int i = 0; i < nbacklog; i++) {
		if (backlog[i].type == type && (!conn || backlog[i].conn == conn)) {
			*out = backlog[i];
			memmove(&backlog[i], &backlog[i + 1],
				(size_t)(nbacklog - i - 1) * sizeof(*out));
			nbacklog--;
			return true;
		}
	}
	return false;
}

/* Poll until an event of @type for @conn (any conn if NULL) arrives; fail after ~2 s. */
static struct ps_tp_event wait_event(struct fx *f, enum ps_tp_ev_type type, struct ps_tp_conn *conn)
{
	struct ps_tp_event ev;

	if (backlog_take(type, conn, &ev))
		return ev;
	for (int i = 0; i < 200; i++) {
		int n = ps_tp_poll(f->loop, &ev, 1, 10);

		assert_true(n >= 0);
		if (n == 0)
			continue;
		if (ev.type == PS_TP_EV_RECV)
			ps_tp_recv_release(ev.conn, ev.buf);
		if (ev.type == type && (!conn || ev.conn == conn))
			return ev;
		assert_true(nbacklog < 64);
		backlog[nbacklog++] = ev;
	}
	fail_msg("no event %d", type);
	return ev;
}

static void fx_open_opts(struct fx *f, const struct ps_tp_loop_opts *o)
{
	struct ps_tp_dev_opts d = {.kind = "rdma", .bind_addr = ADDR, .numa_node = -1};
	struct ps_tp_event ev;

	memset(f, 0, sizeof(*f));
	assert_int_equal(ps_tp_dev_open(&d, &f->dev), 0);
	assert_int_equal(ps_tp_loop_create(f->dev, o, &f->loop), 0);
	assert_int_equal(ps_tp_listen(f->loop, ADDR, 0, &f->lst), 0);
	assert_int_equal(ps_tp_connect(f->loop, ADDR, ps_tp_listener_port(f->lst), f, &f->cli), 0);
	ev = wait_event(f, PS_TP_EV_ACCEPT, NULL);
	f->srv = ev.conn;
	f->buf = calloc(1, 65536);
	assert_non_null(f->buf);
	assert_int_equal(ps_tp_mr_reg(f->dev, f->buf, 65536, &f->mr), 0);
}

static void fx_open(struct fx *f)
{
	fx_open_opts(f, &small_loop);
}

static void fx_close(struct fx *f)
{
	ps_tp_conn_close(f->cli);
	ps_tp_conn_close(f->srv);
	ps_tp_listener_close(f->lst);
	ps_tp_mr_dereg(f->mr);
	ps_tp_loop_destroy(f->loop);
	ps_tp_dev_close(f->dev);
	free(f->buf);
}

/* A send that completes with @st at the verbs level: PS_EPEER_LOST for it, then CLOSED. */
static void send_fails_with(enum ibv_wc_status st)
{
	struct fx f;
	struct ps_tp_event ev;
	struct ps_tp_sge sge;
	int ctx;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = MSG_LEN, .mr = f.mr};
	/* A healthy send first, so the failure is not an artefact of set-up. */
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, &ctx), 0);
	ev = wait_event(&f, PS_TP_EV_SEND_DONE, f.cli);
	assert_int_equal(ev.status, 0);
	wait_event(&f, PS_TP_EV_RECV, f.srv);

	fake_verbs_inject_wc_error(st, 1);
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, &ctx), 0);
	ev = wait_event(&f, PS_TP_EV_SEND_DONE, f.cli);
	assert_ptr_equal(ev.ctx, &ctx);
	assert_int_equal(ev.status, PS_EPEER_LOST);
	wait_event(&f, PS_TP_EV_CLOSED, f.cli);
	/* A broken connection refuses new work. */
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, NULL), PS_EPEER_LOST);
	fx_close(&f);
}

static void test_retry_exceeded(void **state)
{
	send_fails_with(IBV_WC_RETRY_EXC_ERR);
}

static void test_rnr_retry_exceeded(void **state)
{
	send_fails_with(IBV_WC_RNR_RETRY_EXC_ERR);
}

static void test_flush(void **state)
{
	send_fails_with(IBV_WC_WR_FLUSH_ERR);
}

static void test_remote_access(void **state)
{
	send_fails_with(IBV_WC_REM_ACCESS_ERR);
}

/* The verbs layer refuses a doorbell (send queue full at the device): the connection breaks. */
static void test_post_send_fails(void **state)
{
	struct fx f;
	struct ps_tp_event ev;
	struct ps_tp_sge sge;
	int ctx;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = MSG_LEN, .mr = f.mr};
	fake_verbs_fail_next(FAKE_VERBS_POST_SEND, -ENOMEM, 1);
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, &ctx), 0);
	ps_tp_flush(f.loop);
	ev = wait_event(&f, PS_TP_EV_SEND_DONE, f.cli);
	assert_int_equal(ev.status, PS_EPEER_LOST);
	wait_event(&f, PS_TP_EV_CLOSED, f.cli);
	fx_close(&f);
}

/* Out of send slots: -EAGAIN, and the slots come back with the completions. */
static void test_send_queue_full(void **state)
{
	struct fx f;
	struct ps_tp_sge sge;
	int ctx[16], n = 0, rc;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	fake_verbs_hold_sends(true);
	while ((rc = ps_tp_send(f.cli, &sge, 1, &ctx[n])) == 0 && n < 15) {
		n++;
		ps_tp_flush(f.loop);
	}
	assert_int_equal(rc, -EAGAIN);
	assert_true(n >= 1 && n <= (int)small_loop.send_depth);
	fake_verbs_hold_sends(false);
	for (int i = 0; i < n; i++)
		assert_int_equal(wait_event(&f, PS_TP_EV_SEND_DONE, f.cli).status, 0);
	fx_close(&f);
}

static void test_mr_reg_fails(void **state)
{
	struct ps_tp_dev_opts d = {.kind = "rdma", .bind_addr = ADDR, .numa_node = -1};
	struct ps_tp_dev *dev;
	struct ps_tp_mr *mr = NULL;
	static uint8_t buf[8192];

	assert_int_equal(ps_tp_dev_open(&d, &dev), 0);
	fake_verbs_fail_next(FAKE_VERBS_MR_REG, -EINVAL, 1);
	assert_int_equal(ps_tp_mr_reg(dev, buf, sizeof(buf), &mr), -EINVAL);
	assert_null(mr);
	/* Over the memlock budget: -ENOMEM on the first try and on the retry after raising it. */
	fake_verbs_set_memlock(4096);
	assert_int_equal(ps_tp_mr_reg(dev, buf, sizeof(buf), &mr), -ENOMEM);
	assert_null(mr);
	fake_verbs_set_memlock(0);
	assert_int_equal(ps_tp_mr_reg(dev, buf, sizeof(buf), &mr), 0);
	ps_tp_mr_dereg(mr);
	ps_tp_dev_close(dev);
}

static void test_connect_rejected(void **state)
{
	struct ps_tp_dev_opts d = {.kind = "rdma", .bind_addr = ADDR, .numa_node = -1};
	struct ps_tp_dev *dev;
	struct ps_tp_loop *loop;
	struct ps_tp_listener *lst;
	struct ps_tp_conn *c = NULL;

	assert_int_equal(ps_tp_dev_open(&d, &dev), 0);
	assert_int_equal(ps_tp_loop_create(dev, &small_loop, &loop), 0);
	/* Nobody listens: REJECTED status 8 -> -ECONNREFUSED. */
	assert_int_equal(ps_tp_connect(loop, ADDR, 4999, NULL, &c), -ECONNREFUSED);
	assert_null(c);
	/* A peer that rejects. */
	assert_int_equal(ps_tp_listen(loop, ADDR, 0, &lst), 0);
	fake_verbs_reject_next_connect();
	assert_int_equal(ps_tp_connect(loop, ADDR, ps_tp_listener_port(lst), NULL, &c),
			 -ECONNREFUSED);
	/* Unreachable and an address no device owns: errors, not hangs. */
	fake_verbs_cm_next_result(FAKE_VERBS_CM_CONNECT, RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT);
	assert_true(ps_tp_connect(loop, ADDR, ps_tp_listener_port(lst), NULL, &c) < 0);
	assert_true(ps_tp_connect(loop, "10.9.9.9", 1, NULL, &c) < 0);
	/* A QP the device refuses. */
	fake_verbs_fail_next(FAKE_VERBS_QP_CREATE, -ENOMEM, 1);
	assert_true(ps_tp_connect(loop, ADDR, ps_tp_listener_port(lst), NULL, &c) < 0);
	ps_tp_listener_close(lst);
	ps_tp_loop_destroy(loop);
	ps_tp_dev_close(dev);
}

static void test_no_device(void **state)
{
	struct ps_tp_dev_opts d = {.kind = "rdma", .numa_node = -1};
	struct ps_tp_dev *dev = NULL;

	fake_verbs_no_devices(true);
	assert_false(ps_tp_rdma_available());
	assert_int_equal(ps_tp_dev_open(&d, &dev), PS_ENO_DEVICE);
	fake_verbs_no_devices(false);
	fake_verbs_fail_next(FAKE_VERBS_DEVICE_LIST_GET, -ENOSYS, 1);
	assert_false(ps_tp_rdma_available());
}

/* ---- credits -------------------------------------------------------------------------------- */

/*
 * Poll with a timeout of 0 (a busy loop: the loop never sleeps, so it never forces a credit
 * write) until an event of @type for @conn arrives. RECV buffers stay held unless @release.
 */
static struct ps_tp_event spin_event(struct fx *f, enum ps_tp_ev_type type, struct ps_tp_conn *conn,
				     bool release)
{
	struct ps_tp_event ev;

	if (backlog_take(type, conn, &ev))
		goto found;
	for (int i = 0; i < 100000; i++) {
		int n = ps_tp_poll(f->loop, &ev, 1, 0);

		assert_true(n >= 0);
		if (n == 0)
			continue;
		if (ev.type == type && ev.conn == conn)
			goto found;
		assert_true(ev.type != PS_TP_EV_RECV && ev.type != PS_TP_EV_CLOSED);
		assert_true(nbacklog < 64);
		backlog[nbacklog++] = ev;
	}
	fail_msg("no event %d in 100000 polls", type);
found:
	if (release && ev.type == PS_TP_EV_RECV)
		ps_tp_recv_release(ev.conn, ev.buf);
	return ev;
}

/* Send 64 bytes, spinning while the transport says -EAGAIN; fail if it never takes it. */
static void spin_send(struct fx *f, struct ps_tp_conn *conn, const struct ps_tp_sge *sge)
{
	struct ps_tp_event ev;
	int rc;

	for (int i = 0; i < 100000; i++) {
		rc = ps_tp_send(conn, sge, 1, NULL);
		if (rc != -EAGAIN) {
			assert_int_equal(rc, 0);
			ps_tp_flush(f->loop);
			return;
		}
		if (ps_tp_poll(f->loop, &ev, 1, 0) == 1) {
			assert_true(nbacklog < 64);
			backlog[nbacklog++] = ev;
		}
	}
	fail_msg("no credit for a send in 100000 polls");
}

static uint64_t send_wrs(void)
{
	struct fake_verbs_stats st;

	fake_verbs_stats_get(&st);
	return st.send_wrs;
}

/*
 * Request/response in a busy loop: each SEND carries the credits of the buffers released
 * before it, so no credit write is ever needed and the window (8) never runs dry over 200
 * round trips.
 */
static void test_credits_ride_on_sends(void **state)
{
	struct fx f;
	struct ps_tp_sge sge;
	uint64_t wrs0;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	wrs0 = send_wrs();
	for (int i = 0; i < 200; i++) {
		assert_int_equal(ps_tp_send(f.cli, &sge, 1, NULL), 0);
		ps_tp_flush(f.loop);
		spin_event(&f, PS_TP_EV_RECV, f.srv, true);
		assert_int_equal(ps_tp_send(f.srv, &sge, 1, NULL), 0);
		ps_tp_flush(f.loop);
		spin_event(&f, PS_TP_EV_RECV, f.cli, true);
	}
	/* Every send-queue WR was a message: no 8-byte credit write went out. */
	assert_int_equal(send_wrs() - wrs0, 400);
	fx_close(&f);
}

/*
 * One way only, so no SEND carries credits back: they go as credit writes, about one per
 * quarter window (2 of 8), never one per message. Then the receiver holds every buffer and
 * releases one: with that many held, the credit goes back at once (the peer may be starved),
 * though it is below the quarter-window threshold and the loop never sleeps.
 */
static void test_credits_written_when_due(void **state)
{
	struct ps_tp_event held[8];
	struct fx f;
	struct ps_tp_sge sge;
	uint64_t wrs0, writes;
	int n = 0;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	wrs0 = send_wrs();
	for (int i = 0; i < 100; i++) {
		spin_send(&f, f.cli, &sge);
		spin_event(&f, PS_TP_EV_RECV, f.srv, true);
	}
	writes = send_wrs() - wrs0 - 100;
	assert_true(writes >= 100 / 2 - 1 && writes <= 100 / 2 + 1);

	while (ps_tp_send(f.cli, &sge, 1, NULL) == 0)
		ps_tp_flush(f.loop);
	for (;;) {
		struct ps_tp_event ev;

		if (ps_tp_poll(f.loop, &ev, 1, 0) != 1)
			break;
		if (ev.type == PS_TP_EV_RECV && ev.conn == f.srv) {
			assert_true(n < 8);
			held[n++] = ev;
		} else {
			assert_true(nbacklog < 64);
			backlog[nbacklog++] = ev;
		}
	}
	assert_true(n >= 6);
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, NULL), -EAGAIN);
	ps_tp_recv_release(f.srv, held[--n].buf);
	spin_send(&f, f.cli, &sge);
	while (n)
		ps_tp_recv_release(f.srv, held[--n].buf);
	spin_event(&f, PS_TP_EV_RECV, f.srv, true);
	fx_close(&f);
}

/*
 * Credits pending below the thresholds wait off the flush queue: busy polls write nothing (and
 * no longer walk the connection each time), the poll about to sleep writes them, once.
 */
static void test_parked_credits_written_on_sleep(void **state)
{
	struct ps_tp_event ev;
	struct ps_tp_sge sge;
	uint64_t wrs0;
	struct fx f;

	fx_open(&f);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	spin_send(&f, f.cli, &sge);
	spin_event(&f, PS_TP_EV_RECV, f.srv, true); /* released: 1 credit pending, not due */
	while (ps_tp_poll(f.loop, &ev, 1, 0) > 0)
		; /* the client's SEND_DONE */
	wrs0 = send_wrs();
	for (int i = 0; i < 1000; i++)
		assert_int_equal(ps_tp_poll(f.loop, &ev, 1, 0), 0);
	assert_int_equal(send_wrs(), wrs0);
	assert_int_equal(ps_tp_poll(f.loop, &ev, 1, 20), 0); /* sleeps: the credit goes */
	assert_int_equal(send_wrs(), wrs0 + 1);
	assert_int_equal(ps_tp_poll(f.loop, &ev, 1, 20), 0);
	assert_int_equal(send_wrs(), wrs0 + 1);
	fx_close(&f);
}

/*
 * A write_imm whose gather list is longer than max_sge (2 here) is split over RDMA_WRITEs and
 * ends with a trailer SEND: the receiver sees one WRITE_IMM with the total length and the
 * caller's imm, the bytes in place, and the trailer's credits count.
 */
static void test_split_write_imm_trailer(void **state)
{
	struct ps_tp_sge sgl[5];
	struct ps_tp_rbuf dst;
	struct ps_tp_event ev;
	struct fx f;

	fake_verbs_set_caps(2, -1, -1);
	fx_open(&f);
	for (int i = 0; i < 5; i++) {
		/* Every other 100-byte run of the first 1000 bytes: nothing coalesces. */
		memset(f.buf + 200 * i, 'a' + i, 100);
		sgl[i] = (struct ps_tp_sge){.addr = f.buf + 200 * i, .len = 100, .mr = f.mr};
	}
	assert_int_equal(ps_tp_mr_rbuf(f.mr, f.buf + 4096, 500, &dst), 0);
	for (int round = 0; round < 20; round++) {
		assert_int_equal(ps_tp_write_imm(f.cli, sgl, 5, &dst, 0xabc00000u + round, NULL),
				 0);
		ps_tp_flush(f.loop);
		ev = spin_event(&f, PS_TP_EV_WRITE_IMM, f.srv, false);
		assert_int_equal(ev.len, 500);
		assert_int_equal(ev.imm, 0xabc00000u + round);
		for (int i = 0; i < 5; i++)
			for (int k = 0; k < 100; k++)
				assert_int_equal(f.buf[4096 + 100 * i + k], 'a' + i);
		/* The answer carries the credit of the trailer's buffer back. */
		assert_int_equal(ps_tp_send(f.srv, sgl, 1, NULL), 0);
		ps_tp_flush(f.loop);
		spin_event(&f, PS_TP_EV_RECV, f.cli, true);
	}
	fx_close(&f);
}

/*
 * The same split with a mixed list: an element without an mr (copied into the bounce ring),
 * empty elements, and adjacent elements that share one SGE (also across what would be a WR
 * boundary). Every byte lands in place, in order, and only the unregistered bytes are copied.
 */
static void test_split_write_imm_mixed(void **state)
{
	static uint8_t unreg[64]; /* not registered: goes through the bounce ring */
	struct ps_tp_sge sgl[9];
	struct ps_tp_stats st0, st1;
	struct ps_tp_rbuf dst;
	struct ps_tp_event ev;
	uint8_t want[1024];
	uint32_t n = 0, len = 0;
	struct fx f;

	fake_verbs_set_caps(2, -1, -1);
	fx_open(&f);
	for (int i = 0; i < 1024; i++)
		f.buf[i] = (uint8_t)(i * 7 + 1);
	memset(unreg, 0x5a, sizeof(unreg));
	/* Runs of buf, one empty, one unregistered, two adjacent pairs. */
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 0, .len = 50, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 100, .len = 0, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 100, .len = 30, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 130, .len = 20, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = unreg, .len = sizeof(unreg), .mr = NULL};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 300, .len = 10, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 400, .len = 40, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 440, .len = 60, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 600, .len = 5, .mr = f.mr};
	for (uint32_t i = 0; i < n; i++) {
		memcpy(want + len, sgl[i].addr, sgl[i].len);
		len += sgl[i].len;
	}
	assert_int_equal(ps_tp_mr_rbuf(f.mr, f.buf + 4096, len, &dst), 0);
	for (int round = 0; round < 10; round++) {
		/* Every other round: all registered (the single-walk path). */
		uint32_t cnt = round % 2 ? n : 4;
		uint32_t total = 0;

		for (uint32_t i = 0; i < cnt; i++)
			total += sgl[i].len;
		memset(f.buf + 4096, 0, len);
		ps_tp_stats_get(f.dev, &st0);
		assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)cnt, &dst, 7u + round, NULL), 0);
		ps_tp_flush(f.loop);
		ev = spin_event(&f, PS_TP_EV_WRITE_IMM, f.srv, false);
		ps_tp_stats_get(f.dev, &st1);
		assert_int_equal(ev.len, total);
		assert_int_equal(ev.imm, 7u + round);
		assert_memory_equal(f.buf + 4096, want, total);
		assert_int_equal(st1.bytes_copied - st0.bytes_copied, cnt == n ? sizeof(unreg) : 0);
		assert_int_equal(ps_tp_send(f.srv, sgl, 1, NULL), 0);
		ps_tp_flush(f.loop);
		spin_event(&f, PS_TP_EV_RECV, f.cli, true);
	}
	/* A bad element anywhere refuses the whole list and queues nothing. */
	sgl[6].addr = NULL;
	assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)n, &dst, 1, NULL), -EINVAL);
	sgl[6].addr = f.buf + 400;
	dst.len = len - 1;
	assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)n, &dst, 1, NULL), -EMSGSIZE);
	fx_close(&f);
}

/*
 * The one-WR path (a short list, every element registered): one walk writes the SGEs into the
 * WR, merging adjacent elements of one region and skipping empty ones; the bytes land in order
 * with nothing copied; an op that fits the inline size goes inline. The errors about a list are
 * the general path's, and an unregistered element still goes through the bounce ring.
 */
static void test_one_wr_path(void **state)
{
	static uint8_t unreg[48];
	struct fake_verbs_stats v0, v1;
	struct ps_tp_stats st0, st1;
	struct ps_tp_sge sgl[7];
	struct ps_tp_rbuf dst;
	struct ps_tp_event ev;
	uint8_t want[512];
	uint32_t n = 0, len = 0;
	struct fx f;

	fake_verbs_set_caps(-1, 256, -1); /* the inline size the backend asks for */
	fx_open(&f);
	for (int i = 0; i < 1024; i++)
		f.buf[i] = (uint8_t)(i * 13 + 5);
	/* 7 elements, 4 SGEs: one empty, two adjacent pairs. */
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 0, .len = 50, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 60, .len = 0, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 100, .len = 30, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 130, .len = 20, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 300, .len = 10, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 400, .len = 40, .mr = f.mr};
	sgl[n++] = (struct ps_tp_sge){.addr = f.buf + 440, .len = 160, .mr = f.mr};
	for (uint32_t i = 0; i < n; i++) {
		memcpy(want + len, sgl[i].addr, sgl[i].len);
		len += sgl[i].len;
	}
	assert_int_equal(ps_tp_mr_rbuf(f.mr, f.buf + 4096, len, &dst), 0);

	fake_verbs_stats_get(&v0);
	ps_tp_stats_get(f.dev, &st0);
	assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)n, &dst, 0x1e, NULL), 0);
	assert_int_equal(ps_tp_send(f.cli, sgl, (int)n, NULL), 0);
	ps_tp_flush(f.loop);
	ev = spin_event(&f, PS_TP_EV_WRITE_IMM, f.srv, false);
	assert_int_equal(ev.len, len);
	assert_int_equal(ev.imm, 0x1e);
	assert_memory_equal(f.buf + 4096, want, len);
	ev = spin_event(&f, PS_TP_EV_RECV, f.srv, false);
	assert_int_equal(ev.len, len);
	assert_memory_equal(ev.buf, want, len);
	ps_tp_recv_release(f.srv, ev.buf);
	fake_verbs_stats_get(&v1);
	ps_tp_stats_get(f.dev, &st1);
	assert_int_equal(v1.send_wrs - v0.send_wrs, 2);
	assert_int_equal(v1.send_sges - v0.send_sges, 8);
	assert_int_equal(v1.inline_wrs - v0.inline_wrs, 0);
	assert_int_equal(st1.bytes_copied - st0.bytes_copied, 0);

	/* 80 bytes in 3 elements (one empty): inline. */
	fake_verbs_stats_get(&v0);
	assert_int_equal(ps_tp_send(f.cli, sgl, 4, NULL), 0);
	ps_tp_flush(f.loop);
	ev = spin_event(&f, PS_TP_EV_RECV, f.srv, false);
	assert_int_equal(ev.len, 100);
	assert_memory_equal(ev.buf, want, 100);
	ps_tp_recv_release(f.srv, ev.buf);
	fake_verbs_stats_get(&v1);
	/* Beside it, the server may have written credits back: inline 8-byte writes of 1 SGE. */
	assert_true(v1.send_wrs - v0.send_wrs >= 1);
	assert_int_equal(v1.inline_wrs - v0.inline_wrs, v1.send_wrs - v0.send_wrs);
	assert_int_equal(v1.send_sges - v0.send_sges, 2 + (v1.send_wrs - v0.send_wrs - 1));
	v0 = v1;

	/* Errors: nothing queued. */
	sgl[4].addr = f.buf + 65536 - 8; /* runs past the end of f.mr */
	assert_int_equal(ps_tp_send(f.cli, sgl, (int)n, NULL), -EINVAL);
	sgl[4] = (struct ps_tp_sge){.addr = NULL, .len = 10, .mr = f.mr};
	assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)n, &dst, 1, NULL), -EINVAL);
	sgl[4] = (struct ps_tp_sge){.addr = f.buf + 300, .len = 10, .mr = f.mr};
	dst.len = len - 1;
	assert_int_equal(ps_tp_write_imm(f.cli, sgl, (int)n, &dst, 1, NULL), -EMSGSIZE);
	dst.len = len;
	fake_verbs_stats_get(&v1);
	assert_int_equal(v1.send_wrs, v0.send_wrs);

	/* An unregistered element in a short list too long for inline: copied, as before. */
	memset(unreg, 0xa5, sizeof(unreg));
	sgl[1] = (struct ps_tp_sge){.addr = unreg, .len = sizeof(unreg), .mr = NULL};
	ps_tp_stats_get(f.dev, &st0);
	assert_int_equal(ps_tp_send(f.cli, sgl, (int)n, NULL), 0);
	ps_tp_flush(f.loop);
	ev = spin_event(&f, PS_TP_EV_RECV, f.srv, false);
	assert_int_equal(ev.len, len + sizeof(unreg));
	assert_memory_equal(ev.buf, want, 50);
	assert_memory_equal((uint8_t *)ev.buf + 50, unreg, sizeof(unreg));
	assert_memory_equal((uint8_t *)ev.buf + 50 + sizeof(unreg), want + 50, len - 50);
	ps_tp_recv_release(f.srv, ev.buf);
	ps_tp_stats_get(f.dev, &st1);
	assert_int_equal(st1.bytes_copied - st0.bytes_copied, sizeof(unreg));
	fx_close(&f);
}

/*
 * A caller refused with -EAGAIN for lack of an op slot (credits left) sleeps in ps_tp_poll()
 * until the connection can take the op: while the NIC holds the sends, the poll sleeps its
 * timeout out (it used to return at once, as credits were there: a busy loop for a caller that
 * meant to sleep); once they complete, the op goes.
 */
static void test_eagain_poll_sleeps(void **state)
{
	struct ps_tp_loop_opts o = small_loop;
	struct ps_tp_sge sge;
	struct ps_tp_event ev[8];
	uint64_t t0, ms;
	int queued = 0, n;
	struct fx f;

	o.send_depth = 4; /* 4 op slots, 8 credits */
	fx_open_opts(&f, &o);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	fake_verbs_hold_sends(true);
	while (ps_tp_send(f.cli, &sge, 1, NULL) == 0)
		queued++;
	assert_int_equal(queued, 4);
	t0 = ps_clock_now_ns();
	n = ps_tp_poll(f.loop, ev, 8, 300);
	ms = (ps_clock_now_ns() - t0) / 1000000;
	assert_int_equal(n, 0);
	assert_true(ms >= 250);
	assert_int_equal(ps_tp_send(f.cli, &sge, 1, NULL), -EAGAIN);
	fake_verbs_hold_sends(false);
	for (int i = 0; i < 100 && ps_tp_send(f.cli, &sge, 1, NULL) == -EAGAIN; i++)
		wait_event(&f, PS_TP_EV_RECV, f.srv);
	fx_close(&f);
}

/*
 * A caller that sleeps on ps_tp_loop_fd() (the client does, on several loops at once) and
 * polls with a timeout of 0: the fd wakes it for a completion, and once the polls have taken
 * everything it is quiet again. Busy polls never read the completion channel, so before the
 * drain the fd stayed readable for good and such a caller spun.
 */
static void test_loop_fd_quiet(void **state)
{
	struct ps_tp_event ev[8];
	struct ps_tp_sge sge;
	struct pollfd pfd;
	int got = 0, n;
	struct fx f;

	fx_open(&f);
	pfd = (struct pollfd){.fd = ps_tp_loop_fd(f.loop), .events = POLLIN};
	assert_true(pfd.fd >= 0);
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	for (int round = 0; round < 5; round++) {
		/* Idle: polls drain the fd; the last leaves the CQ armed. */
		while (ps_tp_poll(f.loop, ev, 8, 0) > 0)
			;
		assert_int_equal(poll(&pfd, 1, 100), 0);
		/* A message: the fd wakes the caller... */
		assert_int_equal(ps_tp_send(f.cli, &sge, 1, ev), 0);
		assert_int_equal(ps_tp_flush(f.loop), 0);
		assert_int_equal(poll(&pfd, 1, 2000), 1);
		/* ...its events are taken by polls of timeout 0... */
		for (int i = 0; i < 100 && got < 2 * (round + 1); i++) {
			n = ps_tp_poll(f.loop, ev, 8, 0);
			assert_true(n >= 0);
			for (int k = 0; k < n; k++) {
				if (ev[k].type == PS_TP_EV_RECV)
					ps_tp_recv_release(ev[k].conn, ev[k].buf);
				got += ev[k].type == PS_TP_EV_RECV ||
				       ev[k].type == PS_TP_EV_SEND_DONE;
			}
			if (!n && got < 2 * (round + 1))
				assert_int_equal(poll(&pfd, 1, 2000), 1);
		}
		assert_int_equal(got, 2 * (round + 1));
	}
	/* ...and after them the fd is quiet. */
	while (ps_tp_poll(f.loop, ev, 8, 0) > 0)
		;
	assert_int_equal(poll(&pfd, 1, 200), 0);
	fx_close(&f);
}

/* A second loop (its own thread, as a client elsewhere) connects to the fixture's listener. */
struct late_connect {
	struct fx *f;
	int rc;
	double ms;
};

static void *late_connect_main(void *arg)
{
	struct late_connect *lc = arg;
	struct ps_tp_loop *loop;
	struct ps_tp_conn *conn = NULL;
	uint64_t t0 = ps_clock_now_ns();

	lc->rc = ps_tp_loop_create(lc->f->dev, &small_loop, &loop);
	if (lc->rc)
		return NULL;
	lc->rc = ps_tp_connect(loop, ADDR, ps_tp_listener_port(lc->f->lst), NULL, &conn);
	lc->ms = (double)(ps_clock_now_ns() - t0) / 1e6;
	if (!lc->rc)
		ps_tp_conn_close(conn);
	ps_tp_loop_destroy(loop);
	return NULL;
}

/*
 * A loop that never sleeps, each poll a batch of messages followed by milliseconds of work (a
 * server under load), still takes a connection request well within the connector's timeout:
 * the cm channel is read on a cadence in time. (With one every 4,096 polls, as before, the
 * request waited 12 s here and the connect timed out.)
 */
static void test_busy_loop_accepts(void **state)
{
	struct late_connect lc = {.rc = 1};
	struct ps_tp_event ev[8];
	struct ps_tp_sge sge;
	struct ps_tp_conn *accepted = NULL;
	uint64_t deadline;
	pthread_t th;
	int polls = 0, busy = 0, n;
	struct fx f;

	fx_open(&f);
	lc.f = &f;
	sge = (struct ps_tp_sge){.addr = f.buf, .len = 64, .mr = f.mr};
	assert_int_equal(pthread_create(&th, NULL, late_connect_main, &lc), 0);
	deadline = ps_clock_deadline_ms(small_loop.connect_timeout_ms + 1000);
	while (!accepted && ps_clock_remaining_ms(deadline)) {
		assert_int_equal(ps_tp_send(f.cli, &sge, 1, NULL), 0);
		n = ps_tp_poll(f.loop, ev, 8, 0);
		assert_true(n >= 0);
		polls++;
		busy += n > 0;
		for (int i = 0; i < n; i++) {
			if (ev[i].type == PS_TP_EV_RECV)
				ps_tp_recv_release(ev[i].conn, ev[i].buf);
			else if (ev[i].type == PS_TP_EV_ACCEPT)
				accepted = ev[i].conn;
		}
		usleep(3000); /* the work on the batch */
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	print_message("accepted after %d polls (%d with events); connect: %s in %.1f ms\n", polls,
		      busy, ps_strerror(lc.rc), lc.ms);
	assert_non_null(accepted);
	assert_int_equal(lc.rc, 0);
	assert_true(lc.ms < small_loop.connect_timeout_ms / 2);
	ps_tp_conn_close(accepted);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_retry_exceeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rnr_retry_exceeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote_access, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_send_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_queue_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mr_reg_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credits_ride_on_sends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credits_written_when_due, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parked_credits_written_on_sleep, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_split_write_imm_trailer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split_write_imm_mixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_wr_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eagain_poll_sleeps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loop_fd_quiet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_loop_accepts, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
