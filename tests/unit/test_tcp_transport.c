/*
 * The tcp transport backend over loopback, in one process: connect/accept, gather sends,
 * write_imm, credits and -EAGAIN, size limits, the wire format (frames built by hand through a
 * plain socket, checked against docs/transport.md), hostile frames and hellos, peer loss with
 * operations outstanding, connect errors and timeouts, and 10,000 messages each way.
 *
 * Each test drives its loops from the test thread, alternately (helpers: tcp_test_util.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/unit/tcp_test_util.h"
#include "transport/transport.h"

#define BIG (8 << 20)
static uint8_t big[BIG]; /* the source of the large writes */

static void test_connect_accept(void **state)
{
	struct ps_tp_loop_opts o = {0};
	struct ps_tp_dev_info info;
	struct pair p;
	char want[32];

	pair_open(&p, &o, &o);
	ps_tp_dev_query(p.srv.dev, &info);
	assert_int_equal(info.kind, PS_TP_KIND_TCP);
	assert_string_equal(info.name, "tcp");
	assert_int_equal(info.max_sge, IOV_MAX);
	assert_int_equal(info.numa_node, -1);
	assert_ptr_equal(ps_tp_conn_user(p.cc), CLI_USER);
	assert_null(ps_tp_conn_user(p.sc));
	snprintf(want, sizeof(want), "127.0.0.1:%u", p.port);
	assert_string_equal(ps_tp_conn_peer(p.cc), want);
	assert_true(!strncmp(ps_tp_conn_peer(p.sc), "127.0.0.1:", 10));
	assert_string_not_equal(ps_tp_conn_peer(p.sc), want);
	assert_true(ps_tp_loop_fd(p.srv.loop) >= 0);
	assert_int_not_equal(ps_tp_loop_fd(p.srv.loop), ps_tp_loop_fd(p.cli.loop));
	/* Nothing else happened. */
	pump(&p.srv, &p.cli, 20);
	assert_int_equal(p.srv.nev + p.cli.nev, 0);
	pair_close(&p);
}

static void test_send_gather(void **state)
{
	struct ps_tp_loop_opts o = {.msg_size = 4096};
	uint8_t a[5] = "hello", b[2000], c[3] = {1, 2, 3}, want[2008];
	struct ps_tp_sge sgl[4] = {{a, 5, NULL}, {b, 2000, NULL}, {c, 0, NULL}, {c, 3, NULL}};
	struct ps_tp_stats st;
	struct ps_tp_event e;
	struct pollfd pfd;
	struct pair p;
	int ctx;

	fill(b, sizeof(b), 1);
	memcpy(want, a, 5);
	memcpy(want + 5, b, 2000);
	memcpy(want + 2005, c, 3);
	pair_open(&p, &o, &o);

	assert_int_equal(ps_tp_send(p.cc, sgl, 4, &ctx), 0);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	assert_ptr_equal(e.conn, p.sc);
	assert_int_equal(e.status, 0);
	assert_int_equal(e.len, 2008);
	assert_memory_equal(e.buf, want, 2008);
	ps_tp_recv_release(p.sc, e.buf);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_SEND_DONE);
	assert_ptr_equal(e.ctx, &ctx);
	assert_ptr_equal(e.conn, p.cc);
	assert_int_equal(e.status, 0);

	/* No ctx: no completion; the message still arrives. loop_fd wakes a sleeping caller. */
	assert_int_equal(ps_tp_send(p.cc, sgl, 4, NULL), 0);
	assert_int_equal(ps_tp_flush(p.cli.loop), 0);
	pfd = (struct pollfd){.fd = ps_tp_loop_fd(p.srv.loop), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	assert_int_equal(e.len, 2008);
	assert_memory_equal(e.buf, want, 2008);
	ps_tp_recv_release(p.sc, e.buf);
	pump(&p.cli, &p.srv, 20);
	assert_int_equal(p.cli.nev, 0);

	/* A message the other way, empty. */
	assert_int_equal(ps_tp_send(p.sc, NULL, 0, &ctx), 0);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_RECV);
	assert_int_equal(e.len, 0);
	assert_non_null(e.buf);
	ps_tp_recv_release(p.cc, e.buf);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_SEND_DONE);
	assert_ptr_equal(e.ctx, &ctx);

	ps_tp_stats_get(p.cli.dev, &st);
	assert_int_equal(st.tx_ops, 2);
	assert_int_equal(st.tx_bytes, 4016);
	assert_int_equal(st.rx_ops, 1);
	assert_int_equal(st.rx_bytes, 0);
	/* Pieces of at most 1 KiB are packed before sendmsg (a and c: 8 bytes a message), the
	 * 2,000 bytes of b are not; packing is not a copy of the zero-copy kind. */
	assert_int_equal(st.bytes_packed, 16);
	assert_int_equal(st.bytes_copied, 0);
	assert_true(st.doorbells >= 2);
	assert_int_equal(st.eagain, 0);
	ps_tp_stats_get(p.srv.dev, &st);
	assert_int_equal(st.rx_ops, 2);
	assert_int_equal(st.rx_bytes, 4016);
	assert_int_equal(st.bytes_copied, 0);
	pair_close(&p);
}

static void test_mr_keys(void **state)
{
	struct ps_tp_dev_opts d = {.kind = "tcp", .numa_node = -1};
	struct ps_tp_mr *m1, *m2, *m3;
	struct ps_tp_mr_info i1, i2, i3;
	struct ps_tp_dev *dev;
	struct ps_tp_rbuf rb;
	static uint8_t buf[1024];

	assert_int_equal(ps_tp_dev_open(&d, &dev), 0);
	assert_int_equal(ps_tp_mr_reg(dev, buf, 512, &m1), 0);
	assert_int_equal(ps_tp_mr_reg(dev, buf + 512, 512, &m2), 0);
	ps_tp_mr_query(m1, &i1);
	ps_tp_mr_query(m2, &i2);
	assert_ptr_equal(i1.addr, buf);
	assert_int_equal(i1.len, 512);
	assert_int_not_equal(i1.rkey, 0);
	assert_int_not_equal(i2.rkey, 0);
	assert_int_not_equal(i1.rkey, i2.rkey);
	/* A new registration in the freed slot gets a new key: the stale one stops working. */
	ps_tp_mr_dereg(m1);
	assert_int_equal(ps_tp_mr_reg(dev, buf, 512, &m3), 0);
	ps_tp_mr_query(m3, &i3);
	assert_int_not_equal(i3.rkey, 0);
	assert_int_not_equal(i3.rkey, i1.rkey);
	assert_int_not_equal(i3.rkey, i2.rkey);
	assert_int_equal(ps_tp_mr_rbuf(m3, buf + 500, 12, &rb), 0);
	assert_int_equal(rb.addr, (uint64_t)(uintptr_t)(buf + 500));
	assert_int_equal(rb.len, 12);
	assert_int_equal(rb.rkey, i3.rkey);
	assert_int_equal(ps_tp_mr_rbuf(m3, buf + 500, 13, &rb), -ERANGE);
	assert_int_equal(ps_tp_mr_rbuf(m3, buf + 513, 0, &rb), -ERANGE);
	assert_int_equal(ps_tp_mr_reg(dev, NULL, 10, &m1), -EINVAL);
	assert_int_equal(ps_tp_mr_reg(dev, buf, 0, &m1), -EINVAL);
	ps_tp_mr_dereg(m2);
	ps_tp_mr_dereg(m3);
	ps_tp_dev_close(dev);
}

static void test_write_imm(void **state)
{
	struct ps_tp_loop_opts so = {.recv_depth = 4}, co = {0};
	uint8_t src_a[200], src_b[100];
	struct ps_tp_sge sgl[2] = {{src_a, 200, NULL}, {src_b, 100, NULL}};
	struct ps_tp_rbuf rb;
	struct ps_tp_event e;
	struct region r;
	struct pair p;
	int ctx;

	fill(src_a, sizeof(src_a), 2);
	fill(src_b, sizeof(src_b), 3);
	pair_open(&p, &so, &co);
	region_reg(p.srv.dev, &r, 4096);
	assert_int_equal(ps_tp_mr_rbuf(r.mr, r.buf + 100, 300, &rb), 0);

	assert_int_equal(ps_tp_write_imm(p.cc, sgl, 2, &rb, 0xdeadbeef, &ctx), 0);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM);
	assert_ptr_equal(e.conn, p.sc);
	assert_int_equal(e.status, 0);
	assert_int_equal(e.imm, 0xdeadbeef);
	assert_int_equal(e.len, 300);
	assert_memory_equal(r.buf + 100, src_a, 200);
	assert_memory_equal(r.buf + 300, src_b, 100);
	assert_true(all_bytes(r.buf, 100, 0));
	assert_true(all_bytes(r.buf + 400, r.len - 400, 0));
	region_check_guards(&r);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_WRITE_DONE);
	assert_ptr_equal(e.ctx, &ctx);
	assert_int_equal(e.status, 0);

	/* Longer than the destination. */
	sgl[1].len = 101;
	assert_int_equal(ps_tp_write_imm(p.cc, sgl, 2, &rb, 1, NULL), -EMSGSIZE);
	sgl[1].len = 100;

	/* Credits of write_imm come back when the event is handed over: 3x recv_depth writes. */
	for (uint32_t i = 0; i < 12; i++) {
		fill(src_a, sizeof(src_a), 100 + i);
		assert_int_equal(ps_tp_write_imm(p.cc, sgl, 1, &rb, i, &ctx), 0);
		e = expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM);
		assert_int_equal(e.imm, i);
		assert_int_equal(e.len, 200);
		assert_memory_equal(r.buf + 100, src_a, 200);
		e = expect_ev(&p.cli, &p.srv, PS_TP_EV_WRITE_DONE);
		assert_ptr_equal(e.ctx, &ctx);
	}
	region_check_guards(&r);
	region_free(&r);
	pair_close(&p);
}

static void test_credits(void **state)
{
	struct ps_tp_loop_opts so = {.recv_depth = 4}, co = {0};
	static uint32_t vals[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	struct ps_tp_event rx[6], e;
	struct ps_tp_stats st;
	uint64_t deadline, retries = 0;
	struct pair p;
	int rc;

	pair_open(&p, &so, &co);
	for (int i = 0; i < 4; i++)
		assert_int_equal(send_u32(p.cc, &vals[i]), 0);
	assert_int_equal(send_u32(p.cc, &vals[4]), -EAGAIN);
	ps_tp_stats_get(p.cli.dev, &st);
	assert_int_equal(st.eagain, 1);
	for (int i = 0; i < 4; i++) {
		rx[i] = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
		assert_int_equal(rx[i].len, 4);
		assert_int_equal(*(uint32_t *)rx[i].buf, i);
	}
	pump(&p.srv, &p.cli, 20);
	assert_int_equal(send_u32(p.cc, &vals[4]), -EAGAIN);

	/* One release owes one credit: below recv_depth/2, no CREDIT frame yet. */
	ps_tp_recv_release(p.sc, rx[0].buf);
	pump(&p.srv, &p.cli, 50);
	assert_int_equal(send_u32(p.cc, &vals[4]), -EAGAIN);
	/* A second one reaches recv_depth/2: the CREDIT frame brings both back. */
	ps_tp_recv_release(p.sc, rx[1].buf);
	deadline = ps_clock_deadline_ms(WAIT_MS);
	while ((rc = send_u32(p.cc, &vals[4])) == -EAGAIN) {
		retries++;
		assert_true(ps_clock_now_ns() < deadline);
		poll_side(&p.srv, 1);
		poll_side(&p.cli, 1);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(send_u32(p.cc, &vals[5]), 0);
	assert_int_equal(send_u32(p.cc, &vals[6]), -EAGAIN);
	rx[4] = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	rx[5] = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	assert_int_equal(*(uint32_t *)rx[4].buf, 4);
	assert_int_equal(*(uint32_t *)rx[5].buf, 5);

	/* One credit owed rides on the next frame the other way (no CREDIT frame needed). */
	ps_tp_recv_release(p.sc, rx[2].buf);
	assert_int_equal(send_u32(p.sc, &vals[7]), 0);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_RECV);
	assert_int_equal(*(uint32_t *)e.buf, 7);
	ps_tp_recv_release(p.cc, e.buf);
	assert_int_equal(send_u32(p.cc, &vals[6]), 0);
	assert_int_equal(send_u32(p.cc, &vals[6]), -EAGAIN);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	assert_int_equal(*(uint32_t *)e.buf, 6);

	ps_tp_stats_get(p.cli.dev, &st);
	assert_int_equal(st.eagain, 5 + retries);
	assert_int_equal(st.tx_ops, 7);
	/* A bogus release is refused, not counted as a credit. */
	ps_tp_recv_release(p.sc, (uint8_t *)e.buf + 1);
	ps_tp_recv_release(p.sc, e.buf);
	ps_tp_recv_release(p.sc, e.buf);
	pair_close(&p);
}

/*
 * A caller refused with -EAGAIN (here: no send slot) that sleeps in ps_tp_poll() is woken as
 * soon as the connection can take the op: the slots free when the poll's flush hands the frames
 * to the kernel, which gives the caller no event and its loop no socket activity (the peer
 * does not even poll). Without the wake-up the poll slept its whole timeout.
 */
static void test_eagain_wakes_poll(void **state)
{
	struct ps_tp_loop_opts so = {.recv_depth = 64, .send_depth = 4, .msg_size = 2048};
	struct ps_tp_loop_opts co = {.recv_depth = 8, .send_depth = 4, .msg_size = 2048};
	struct ps_tp_sge sge = {.addr = big, .len = 100};
	struct ps_tp_event ev[8];
	uint64_t t0, ms;
	struct pair p;
	int n;

	pair_open(&p, &so, &co);
	for (int round = 0; round < 3; round++) {
		int queued = 0;

		while (ps_tp_send(p.cc, &sge, 1, NULL) == 0)
			queued++;
		assert_int_equal(queued, 4);
		t0 = ps_clock_now_ns();
		n = ps_tp_poll(p.cli.loop, ev, 8, 5000);
		ms = (ps_clock_now_ns() - t0) / 1000000;
		assert_int_equal(n, 0);
		assert_true(ms < 1000);
	}
	pair_close(&p);
}

static void test_msg_too_large(void **state)
{
	struct ps_tp_loop_opts so = {.msg_size = 512}, co = {.msg_size = 1024};
	struct ps_tp_sge one = {big, 1024, NULL}, two[2] = {{big, 500, NULL}, {big, 13, NULL}};
	static struct ps_tp_sge many[IOV_MAX + 1];
	struct ps_tp_event e;
	struct pair p;

	/* The limit of a connection is the smaller msg_size of its two ends. */
	pair_open(&p, &so, &co);
	assert_int_equal(ps_tp_send(p.cc, &one, 1, NULL), -EMSGSIZE);
	assert_int_equal(ps_tp_send(p.cc, two, 2, NULL), -EMSGSIZE);
	assert_int_equal(ps_tp_send(p.sc, &one, 1, NULL), -EMSGSIZE);
	two[1].len = 12;
	assert_int_equal(ps_tp_send(p.cc, two, 2, NULL), 0);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_RECV);
	assert_int_equal(e.len, 512);
	ps_tp_recv_release(p.sc, e.buf);
	one.len = 512;
	assert_int_equal(ps_tp_send(p.sc, &one, 1, NULL), 0);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_RECV);
	assert_int_equal(e.len, 512);
	ps_tp_recv_release(p.cc, e.buf);

	/* Malformed gather lists. */
	for (int i = 0; i <= IOV_MAX; i++)
		many[i] = (struct ps_tp_sge){big, 0, NULL};
	assert_int_equal(ps_tp_send(p.cc, many, IOV_MAX + 1, NULL), -EINVAL);
	one = (struct ps_tp_sge){NULL, 4, NULL};
	assert_int_equal(ps_tp_send(p.cc, &one, 1, NULL), -EINVAL);
	assert_int_equal(ps_tp_send(p.cc, &one, -1, NULL), -EINVAL);
	pair_close(&p);
}

static void test_many_messages(void **state)
{
	enum { N = 10000, MAXLEN = 1024 };
	struct ps_tp_loop_opts o = {.recv_depth = 8, .send_depth = 4, .msg_size = 2048};
	struct dir {
		struct side *s;
		struct ps_tp_conn *conn;
		uint8_t *store; /* N messages of MAXLEN, untouched until the end */
		uint32_t seqs[N];
		int sent, rcvd, done, nctx;
		uint64_t bytes;
	} *d = calloc(2, sizeof(*d));
	struct ps_tp_stats st;
	uint64_t deadline;
	struct pair p;

	assert_non_null(d);
	pair_open(&p, &o, &o);
	d[0].s = &p.cli;
	d[0].conn = p.cc;
	d[1].s = &p.srv;
	d[1].conn = p.sc;
	for (int k = 0; k < 2; k++) {
		d[k].store = malloc((size_t)N * MAXLEN);
		assert_non_null(d[k].store);
		for (int i = 0; i < N; i++) {
			d[k].seqs[i] = (uint32_t)i;
			fill(d[k].store + (size_t)i * MAXLEN, MAXLEN, (uint32_t)(i + k * N));
		}
	}
	deadline = ps_clock_deadline_ms(60000);
	while (d[0].rcvd < N || d[1].rcvd < N || d[0].done < d[0].nctx || d[1].done < d[1].nctx) {
		assert_true(ps_clock_now_ns() < deadline);
		for (int k = 0; k < 2; k++) {
			struct dir *x = &d[k], *y = &d[1 - k];

			while (x->sent < N) {
				int i = x->sent;
				uint32_t len = 16 + (uint32_t)(i * 37 % (MAXLEN - 16));
				struct ps_tp_sge sg[2] = {
					{&x->seqs[i], 4, NULL},
					{x->store + (size_t)i * MAXLEN, len, NULL}};
				void *ctx = i % 7 ? NULL : (void *)(uintptr_t)(i + 1);
				int rc = ps_tp_send(x->conn, sg, 2, ctx);

				if (rc == -EAGAIN)
					break;
				assert_int_equal(rc, 0);
				x->sent++;
				x->nctx += ctx != NULL;
				x->bytes += 4 + len;
			}
			x->s->nev = 0;
			poll_side(x->s, 1);
			for (int j = 0; j < x->s->nev; j++) {
				struct ps_tp_event *e = &x->s->ev[j];

				assert_int_equal(e->status, 0);
				if (e->type == PS_TP_EV_SEND_DONE) {
					/* Completions come in order: the ctx'd sends are 0, 7, 14, ... */
					assert_ptr_equal(e->ctx,
							 (void *)(uintptr_t)(x->done * 7 + 1));
					x->done++;
					continue;
				}
				assert_int_equal(e->type, PS_TP_EV_RECV);
				int i = y->rcvd;
				uint32_t len = 16 + (uint32_t)(i * 37 % (MAXLEN - 16));

				assert_int_equal(e->len, 4 + len);
				assert_int_equal(*(uint32_t *)e->buf, (uint32_t)i);
				assert_memory_equal((uint8_t *)e->buf + 4,
						    y->store + (size_t)i * MAXLEN, len);
				ps_tp_recv_release(x->conn, e->buf);
				y->rcvd++;
			}
			x->s->nev = 0;
		}
	}
	for (int k = 0; k < 2; k++) {
		ps_tp_stats_get(d[k].s->dev, &st);
		assert_int_equal(st.tx_ops, N);
		assert_int_equal(st.rx_ops, N);
		assert_int_equal(st.tx_bytes, d[k].bytes);
		assert_int_equal(st.rx_bytes, d[1 - k].bytes);
		/* Every message is one piece of at most 1 KiB: packed (again if sent in part). */
		assert_true(st.bytes_packed >= d[k].bytes);
		assert_int_equal(st.bytes_copied, 0);
		/* send_depth 4, recv_depth 8: flow control worked; queued frames shared sendmsgs. */
		assert_true(st.eagain > 0);
		assert_true(st.doorbells > 0 && st.doorbells < N);
		free(d[k].store);
	}
	free(d);
	pair_close(&p);
}

static void test_large_gather(void **state)
{
	enum { NSGE = 256, ELEM = 256 };
	struct ps_tp_loop_opts o = {0};
	static struct ps_tp_sge sgl[IOV_MAX + 1];
	struct ps_tp_stats st0, st1;
	uint8_t *bufs[NSGE];
	int rc;
	struct ps_tp_event e;
	struct region r;
	struct pair p;
	int ctx;

	pair_open(&p, &o, &o);
	region_reg(p.srv.dev, &r, BIG);
	/* Separate allocations, so the elements are really scattered. */
	for (int i = 0; i < NSGE; i++) {
		bufs[i] = malloc(ELEM);
		assert_non_null(bufs[i]);
		fill(bufs[i], ELEM, 1000 + (uint32_t)i);
		sgl[i] = (struct ps_tp_sge){bufs[i], ELEM, NULL};
	}
	assert_int_equal(ps_tp_write_imm(p.cc, sgl, NSGE, &r.rb, 0x5a5a0001, &ctx), 0);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM);
	assert_int_equal(e.imm, 0x5a5a0001);
	assert_int_equal(e.len, NSGE * ELEM);
	for (int i = 0; i < NSGE; i++)
		assert_memory_equal(r.buf + i * ELEM, bufs[i], ELEM);
	e = expect_ev(&p.cli, &p.srv, PS_TP_EV_WRITE_DONE);
	assert_ptr_equal(e.ctx, &ctx);

	/* IOV_MAX elements is the longest list (it spans two sendmsg calls with the header). */
	memset(r.buf, 0, r.len);
	for (int i = 0; i < IOV_MAX; i++)
		sgl[i] = (struct ps_tp_sge){bufs[i % NSGE] + (i / NSGE) * 16, 16, NULL};
	assert_int_equal(ps_tp_write_imm(p.cc, sgl, IOV_MAX, &r.rb, 2, NULL), 0);
	e = expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM);
	assert_int_equal(e.len, IOV_MAX * 16);
	for (int i = 0; i < IOV_MAX; i++)
		assert_memory_equal(r.buf + i * 16, sgl[i].addr, 16);
	assert_true(all_bytes(r.buf + IOV_MAX * 16, r.len - IOV_MAX * 16, 0));
	sgl[IOV_MAX] = sgl[0];
	assert_int_equal(ps_tp_write_imm(p.cc, sgl, IOV_MAX + 1, &r.rb, 3, NULL), -EINVAL);

	/*
	 * Three ops of 1,024 scattered 1 KiB pieces, queued together: every piece is packed, at
	 * most 256 KiB per sendmsg, and what a partial write left is packed again by the next
	 * flush. Every byte lands in order.
	 */
	fill(big, BIG, 7);
	memset(r.buf, 0, r.len);
	ps_tp_stats_get(p.cli.dev, &st0);
	for (int k = 0; k < 3; k++) {
		struct ps_tp_rbuf dst = r.rb;

		dst.addr += (uint64_t)k << 20;
		dst.len = 1 << 20;
		for (int i = 0; i < 1024; i++)
			sgl[i] = (struct ps_tp_sge){big + (size_t)((i * 7919 + k) % 8192) * 1024,
						    1024, NULL};
		/* The op ring holds about one such list: the next waits for the first's bytes. */
		while ((rc = ps_tp_write_imm(p.cc, sgl, 1024, &dst, 10 + k, NULL)) == -EAGAIN) {
			poll_side(&p.cli, 1);
			poll_side(&p.srv, 0);
		}
		assert_int_equal(rc, 0);
	}
	for (int k = 0; k < 3; k++) {
		e = expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM);
		assert_int_equal(e.imm, 10 + k);
		assert_int_equal(e.len, 1 << 20);
		for (int i = 0; i < 1024; i++)
			assert_memory_equal(r.buf + ((size_t)k << 20) + (size_t)i * 1024,
					    big + (size_t)((i * 7919 + k) % 8192) * 1024, 1024);
	}
	ps_tp_stats_get(p.cli.dev, &st1);
	assert_true(st1.bytes_packed - st0.bytes_packed >= 3u << 20);
	assert_int_equal(st1.bytes_copied, st0.bytes_copied);

	/* 8 MiB in one op, the reader polling: partial writes and EPOLLOUT; every byte arrives. */
	fill(big, BIG, 9);
	sgl[0] = (struct ps_tp_sge){big, BIG, NULL};
	assert_int_equal(ps_tp_write_imm(p.cc, sgl, 1, &r.rb, 4, &ctx), 0);
	assert_int_equal(expect_ev(&p.srv, &p.cli, PS_TP_EV_WRITE_IMM).len, BIG);
	assert_memory_equal(r.buf, big, BIG);
	assert_ptr_equal(expect_ev(&p.cli, &p.srv, PS_TP_EV_WRITE_DONE).ctx, &ctx);
	region_check_guards(&r);
	for (int i = 0; i < NSGE; i++)
		free(bufs[i]);
	region_free(&r);
	pair_close(&p);
}

/* A write_imm whose rbuf the sender made up: the receiver closes, memory stays untouched. */
static void test_bad_rbuf(void **state)
{
	struct ps_tp_loop_opts o = {0};
	static uint8_t src[200];
	struct ps_tp_sge sg = {src, 200, NULL};
	struct ps_tp_conn *cc2, *sc2;
	struct ps_tp_rbuf bad[2];
	struct ps_tp_event e;
	struct side cli2;
	struct region r;
	struct pair p;
	uint32_t v = 77;
	int ctx;

	memset(src, 0x55, sizeof(src));
	pair_open(&p, &o, &o);
	region_reg(p.srv.dev, &r, 4096);
	/* Runs past the end; starts before the start. */
	bad[0] = (struct ps_tp_rbuf){.addr = r.rb.addr + 4000, .rkey = r.rb.rkey, .len = 200};
	bad[1] = (struct ps_tp_rbuf){.addr = r.rb.addr - 8, .rkey = r.rb.rkey, .len = 200};
	for (int k = 0; k < 2; k++) {
		/* A bystander connection that must live on. */
		side_open(&cli2, &o);
		assert_int_equal(connect_async(&cli2, &p.srv, p.port, &cc2), 0);
		sc2 = expect_ev(&p.srv, &cli2, PS_TP_EV_ACCEPT).conn;

		assert_int_equal(ps_tp_write_imm(p.cc, &sg, 1, &bad[k], 9, &ctx), 0);
		e = expect_ev(&p.srv, &p.cli, PS_TP_EV_CLOSED);
		assert_ptr_equal(e.conn, p.sc);
		assert_int_equal(e.status, PS_EBAD_MESSAGE);
		assert_int_equal(take_ev(&p.srv, PS_TP_EV_WRITE_IMM, &e), false);
		e = expect_ev(&p.cli, &p.srv, PS_TP_EV_WRITE_DONE);
		assert_int_equal(e.status, 0);
		e = expect_ev(&p.cli, &p.srv, PS_TP_EV_CLOSED);
		assert_ptr_equal(e.conn, p.cc);
		assert_int_equal(e.status, PS_EPEER_LOST);
		assert_int_equal(ps_tp_send(p.cc, &sg, 1, NULL), PS_EPEER_LOST);
		assert_true(all_bytes(r.buf, r.len, 0));
		region_check_guards(&r);

		assert_int_equal(send_u32(cc2, &v), 0);
		e = expect_ev(&p.srv, &cli2, PS_TP_EV_RECV);
		assert_ptr_equal(e.conn, sc2);
		assert_int_equal(*(uint32_t *)e.buf, 77);
		ps_tp_recv_release(sc2, e.buf);

		/* The next round: the bystander becomes the main client. */
		ps_tp_conn_close(p.cc);
		ps_tp_conn_close(p.sc);
		side_close(&p.cli);
		p.cli = cli2;
		p.cc = cc2;
		p.sc = sc2;
	}
	region_free(&r);
	pair_close(&p);
}

/* Frames built by hand through a plain socket: the documented format works, bad ones close. */
struct raw_case {
	const char *name;
	uint8_t op, reserved; /* reserved: a value for a reserved byte */
	uint32_t len, credits;
	int64_t raddr_off;  /* from the region's start */
	uint64_t raddr_abs; /* if nonzero: instead of raddr_off */
	uint32_t rkey_xor;  /* 0: the right rkey */
	int nsends;	    /* SENDs to push before (beyond credits) */
};

static void test_raw_frames(void **state)
{
	struct ps_tp_loop_opts so = {.recv_depth = 4, .msg_size = 4096};
	static const struct raw_case cases[] = {
		{.name = "wrong rkey", .op = 2, .len = 16, .raddr_off = 16, .rkey_xor = 1u << 12},
		{.name = "index bits wrong", .op = 2, .len = 16, .raddr_off = 16, .rkey_xor = 1},
		{.name = "past the end", .op = 2, .len = 16, .raddr_off = 4096 - 8},
		{.name = "before the start", .op = 2, .len = 1, .raddr_off = -1},
		{.name = "wrapping address", .op = 2, .len = 16, .raddr_abs = UINT64_MAX - 4},
		{.name = "unknown op", .op = 9, .len = 0},
		{.name = "send over msg_size", .op = 1, .len = 4097},
		{.name = "send beyond credits", .op = 1, .len = 8, .nsends = 4},
		{.name = "credits never used", .op = 3, .len = 0, .credits = 1},
		{.name = "reserved byte", .op = 3, .len = 0, .reserved = 1},
	};
	uint8_t hello[16], hdr[32], payload[64], frame[512];
	struct ps_tp_mr_info mi;
	struct ps_tp_event e;
	struct ps_tp_listener *lst;
	struct side srv;
	struct region r;
	uint16_t port;
	int fd;

	memset(payload, 0x55, sizeof(payload));
	port = side_listen(&srv, &so, &lst);
	region_reg(srv.dev, &r, 4096);
	ps_tp_mr_query(r.mr, &mi);

	/* A good exchange first: the server's hello, as documented; a WRITE_IMM; a SEND. */
	fd = raw_open(port, &srv, hello);
	assert_memory_equal(hello, "PSTP\x01\0\0\0\x04\0\0\0\0\x10\0\0", 16);
	raw_hello(hello, rd32((const uint8_t *)"PSTP"), 1, 8, 4096);
	raw_send(fd, hello, 16);
	e = expect_ev(&srv, NULL, PS_TP_EV_ACCEPT);
	raw_hdr(frame, 2, 16, 0xabcd, 0, (uint64_t)(uintptr_t)r.buf + 16, mi.rkey);
	memcpy(frame + 32, payload, 16);
	raw_send(fd, frame, 48);
	e = expect_ev(&srv, NULL, PS_TP_EV_WRITE_IMM);
	assert_int_equal(e.imm, 0xabcd);
	assert_int_equal(e.len, 16);
	assert_true(all_bytes(r.buf + 16, 16, 0x55));
	memset(r.buf + 16, 0, 16);
	/* The WRITE_IMM's credit came back when its event was handed over: one of four owed is
	 * below half, so no CREDIT frame yet... */
	pump(&srv, NULL, 20);
	assert_int_equal(recv(fd, hdr, 32, 0), -1);
	raw_hdr(frame, 1, 3, 0, 0, 0, 0);
	memcpy(frame + 32, "abc", 3);
	raw_send(fd, frame, 35);
	e = expect_ev(&srv, NULL, PS_TP_EV_RECV);
	assert_int_equal(e.len, 3);
	assert_memory_equal(e.buf, "abc", 3);
	/* ...a released buffer makes two, and a CREDIT frame carries them. */
	ps_tp_recv_release(e.conn, e.buf);
	raw_recv(fd, &srv, hdr, 32);
	assert_int_equal(hdr[0], 3);
	assert_true(all_bytes(hdr + 1, 11, 0));
	assert_int_equal(rd32(hdr + 12), 2);
	assert_true(all_bytes(hdr + 16, 16, 0));
	close(fd);
	e = expect_ev(&srv, NULL, PS_TP_EV_CLOSED);
	assert_int_equal(e.status, 0);
	ps_tp_conn_close(e.conn);

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const struct raw_case *c = &cases[k];
		uint64_t raddr = c->raddr_abs ? c->raddr_abs
					      : (uint64_t)(uintptr_t)r.buf + (uint64_t)c->raddr_off;
		struct ps_tp_conn *conn;
		size_t n = 0;

		print_message("raw frame: %s\n", c->name);
		fd = raw_open(port, &srv, hello);
		raw_hello(hello, rd32((const uint8_t *)"PSTP"), 1, 8, 4096);
		raw_send(fd, hello, 16);
		conn = expect_ev(&srv, NULL, PS_TP_EV_ACCEPT).conn;
		/* One send(): the server may close as soon as it has the bad header. */
		for (int i = 0; i < c->nsends; i++, n += 40) {
			raw_hdr(frame + n, 1, 8, 0, 0, 0, 0);
			memcpy(frame + n + 32, payload, 8);
		}
		raw_hdr(frame + n, c->op, c->len, 0, c->credits, c->op == 2 ? raddr : 0,
			c->op == 2 ? mi.rkey ^ c->rkey_xor : 0);
		frame[n + 2] = c->reserved;
		n += 32;
		if (c->len <= sizeof(payload)) {
			memcpy(frame + n, payload, c->len);
			n += c->len;
		}
		raw_send(fd, frame, n);
		assert_true(raw_closed(fd, &srv, WAIT_MS));
		e = expect_ev(&srv, NULL, PS_TP_EV_CLOSED);
		assert_ptr_equal(e.conn, conn);
		assert_int_equal(e.status, PS_EBAD_MESSAGE);
		/* The good frames before the bad one were delivered, in order, before CLOSED. */
		for (int i = 0; i < c->nsends; i++) {
			assert_true(take_ev(&srv, PS_TP_EV_RECV, &e));
			assert_int_equal(e.len, 8);
		}
		assert_int_equal(srv.nev, 0);
		assert_true(all_bytes(r.buf, r.len, 0));
		region_check_guards(&r);
		ps_tp_conn_close(conn);
		close(fd);
	}
	ps_tp_listener_close(lst);
	region_free(&r);
	side_close(&srv);
}

static void test_bad_hello(void **state)
{
	struct ps_tp_loop_opts so = {.connect_timeout_ms = 200};
	uint8_t hello[16];
	struct ps_tp_listener *lst;
	struct side srv;
	uint64_t t0, ms;
	uint16_t port;
	int fd;

	port = side_listen(&srv, &so, &lst);

	/* Garbage; the right magic with a version from the future; zero credits. */
	for (int k = 0; k < 3; k++) {
		fd = raw_open(port, &srv, hello);
		memcpy(hello, "GET / HTTP/1.0\r\n", 16);
		if (k)
			raw_hello(hello, rd32((const uint8_t *)"PSTP"), k == 1 ? 2 : 1,
				  k == 1 ? 8 : 0, 4096);
		raw_send(fd, hello, 16);
		assert_true(raw_closed(fd, &srv, WAIT_MS));
		close(fd);
	}
	/* Silence: dropped after connect_timeout_ms. */
	t0 = ps_clock_now_ms();
	fd = raw_open(port, &srv, hello);
	assert_true(raw_closed(fd, &srv, WAIT_MS));
	ms = ps_clock_now_ms() - t0;
	assert_true(ms >= 190 && ms < 2000);
	close(fd);
	/* The caller never heard of any of them. */
	assert_int_equal(srv.nev, 0);
	ps_tp_listener_close(lst);
	side_close(&srv);
}

static void test_peer_lost(void **state)
{
	struct ps_tp_loop_opts o = {0};
	struct ps_tp_sge sg;
	struct ps_tp_event e;
	int seen[6] = {0}, lost = 0, last_ok = 0, first_lost = 6;
	struct region r;
	struct pair p;
	uint32_t v = 1;

	pair_open(&p, &o, &o);
	region_reg(p.srv.dev, &r, BIG);
	memset(big, 7, BIG);
	sg = (struct ps_tp_sge){big, BIG, NULL};
	/* 32 MiB the server never reads: far more than the socket buffers hold. */
	for (uintptr_t i = 1; i <= 4; i++)
		assert_int_equal(ps_tp_write_imm(p.cc, &sg, 1, &r.rb, 0, (void *)i), 0);
	sg = (struct ps_tp_sge){&v, 4, NULL};
	assert_int_equal(ps_tp_send(p.cc, &sg, 1, (void *)5), 0);
	assert_int_equal(ps_tp_send(p.cc, &sg, 1, NULL), 0);
	assert_int_equal(ps_tp_flush(p.cli.loop), 0);
	ps_tp_conn_close(p.sc); /* unread data: the client gets a reset */
	p.sc = NULL;

	e = expect_ev(&p.cli, NULL, PS_TP_EV_CLOSED);
	assert_ptr_equal(e.conn, p.cc);
	assert_int_equal(e.status, PS_EPEER_LOST);
	/* Every op with a ctx completed exactly once, before CLOSED, in order; the lost ones
	 * after the ones that made it. */
	for (int i = 0; i < p.cli.nev; i++) {
		uintptr_t k = (uintptr_t)p.cli.ev[i].ctx;

		assert_true(p.cli.ev[i].type ==
			    (k == 5 ? PS_TP_EV_SEND_DONE : PS_TP_EV_WRITE_DONE));
		assert_true(k >= 1 && k <= 5);
		assert_int_equal(seen[k]++, 0);
		if (p.cli.ev[i].status == 0) {
			assert_true((int)k > last_ok && (int)k < first_lost);
			last_ok = (int)k;
		} else {
			assert_int_equal(p.cli.ev[i].status, PS_EPEER_LOST);
			first_lost = (int)k < first_lost ? (int)k : first_lost;
			lost++;
		}
	}
	assert_int_equal(p.cli.nev, 5);
	assert_true(lost >= 2); /* at least the last write and the send */
	assert_int_equal(seen[5], 1);
	assert_int_equal(ps_tp_send(p.cc, &sg, 1, NULL), PS_EPEER_LOST);
	assert_int_equal(ps_tp_write_imm(p.cc, &sg, 1, &r.rb, 0, NULL), PS_EPEER_LOST);
	region_check_guards(&r);
	region_free(&r);
	pair_close(&p);

	/* An orderly close with nothing outstanding: CLOSED with status 0, nothing else. */
	pair_open(&p, &o, &o);
	ps_tp_conn_close(p.sc);
	p.sc = NULL;
	e = expect_ev(&p.cli, NULL, PS_TP_EV_CLOSED);
	assert_int_equal(e.status, 0);
	assert_int_equal(p.cli.nev, 0);
	assert_int_equal(ps_tp_send(p.cc, &sg, 1, NULL), PS_EPEER_LOST);
	pair_close(&p);
}

static void test_connect_errors(void **state)
{
	struct ps_tp_loop_opts o = {.connect_timeout_ms = 300};
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t sl = sizeof(a);
	struct ps_tp_conn *c = NULL;
	struct side cli;
	uint64_t t0, ms;
	int fd;

	side_open(&cli, &o);
	/* A bound port nobody listens on: refused at once. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_tp_connect(cli.loop, "127.0.0.1", ntohs(a.sin_port), NULL, &c),
			 -ECONNREFUSED);
	assert_true(ps_clock_now_ms() - t0 < 300);
	assert_null(c);

	/* A listener that never answers the hello: PS_ETIMEOUT after connect_timeout_ms. */
	assert_int_equal(listen(fd, 4), 0);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_tp_connect(cli.loop, "127.0.0.1", ntohs(a.sin_port), NULL, &c),
			 PS_ETIMEOUT);
	ms = ps_clock_now_ms() - t0;
	assert_true(ms >= 290 && ms < 1500);
	assert_null(c);
	close(fd);

	assert_int_equal(ps_tp_connect(cli.loop, "127.0.0.1", 0, NULL, &c), -EINVAL);
	side_close(&cli);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_accept), cmocka_unit_test(test_send_gather),
		cmocka_unit_test(test_mr_keys),	       cmocka_unit_test(test_write_imm),
		cmocka_unit_test(test_credits),	       cmocka_unit_test(test_msg_too_large),
		cmocka_unit_test(test_many_messages),  cmocka_unit_test(test_large_gather),
		cmocka_unit_test(test_bad_rbuf),       cmocka_unit_test(test_raw_frames),
		cmocka_unit_test(test_bad_hello),      cmocka_unit_test(test_peer_lost),
		cmocka_unit_test(test_connect_errors), cmocka_unit_test(test_eagain_wakes_poll),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
