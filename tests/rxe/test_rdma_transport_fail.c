/*
 * test_rdma_transport, part 1: when operations cannot go on. Credits (recv_depth 4: the 5th
 * send or write_imm gets -EAGAIN until the receiver releases a buffer), an orderly close, and
 * broken connections (a completion error; ops queued as the peer closes): PS_EPEER_LOST for
 * each op with a ctx, before one CLOSED.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rdma_tp_test.h"

/* recv_depth 4 on both sides: the 5th op waits for a released buffer. */
void tpt_check_credits(struct tpt_part1 *p)
{
	struct ps_tp_loop_opts lo = {.recv_depth = 4, .msg_size = 4096, .send_depth = 16};
	struct tpt_side cli = {0}, srv = {0};
	struct ps_tp_listener *lst = NULL;
	struct ps_tp_conn *cc = NULL, *sc = NULL;
	struct ps_tp_stats s0, s1;
	struct ps_tp_event ev, held[4];
	struct ps_tp_sge g = {p->cbuf, 256, p->cmr};
	uint64_t t0;
	int rc, n, ok;

	rc = ps_tp_loop_create(p->cdev, &lo, &cli.loop);
	if (!rc)
		rc = ps_tp_loop_create(p->sdev, &lo, &srv.loop);
	if (!rc)
		rc = ps_tp_listen(srv.loop, tpt_addr1, 0, &lst);
	if (!rxe_check(&p->chk, rc == 0, "recv_depth 4 loops and listener: %s", ps_err_name(rc)))
		goto out;
	if (tpt_pair_connect(&p->chk, &cli, &srv, tpt_addr1, ps_tp_listener_port(lst), &cc, &sc))
		goto out;

	ps_tp_stats_get(p->cdev, &s0);
	for (n = 0; n < 6; n++) {
		rxe_pattern_fill(p->cbuf + n * 256, 256, 500 + (uint32_t)n);
		g.addr = p->cbuf + n * 256;
		rc = ps_tp_send(cc, &g, 1, NULL);
		if (rc)
			break;
	}
	ps_tp_stats_get(p->cdev, &s1);
	rxe_check(&p->chk, n == 4 && rc == -EAGAIN && s1.eagain == s0.eagain + 1,
		  "recv_depth 4: %d sends taken, the next: %s, eagain +%" PRIu64, n,
		  ps_err_name(rc), s1.eagain - s0.eagain);
	ps_tp_flush(cli.loop);
	ok = 0;
	for (int i = 0; i < 4; i++) {
		rc = tpt_wait_ev(&srv, &cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &held[i]);
		ok += !rc && held[i].len == 256 && !memcmp(held[i].buf, p->cbuf + i * 256, 256);
	}
	rxe_check(&p->chk, ok == 4, "the 4 messages arrived: %d", ok);
	/* Nothing released: still no credit, however long the client polls. */
	for (int i = 0; i < 10; i++) {
		tpt_side_pump(&cli, 10);
		tpt_side_pump(&srv, 10);
	}
	g.addr = p->cbuf + 4 * 256;
	rc = ps_tp_send(cc, &g, 1, NULL);
	rxe_check(&p->chk, rc == -EAGAIN, "after 200 ms with the buffers held: %s",
		  ps_err_name(rc));
	/* Release one: the server's next poll reposts it and writes the credit. */
	ps_tp_recv_release(sc, held[0].buf);
	tpt_side_pump(&srv, 0);
	t0 = ps_clock_now_ns();
	rc = -EAGAIN;
	while (rc == -EAGAIN && tpt_ms_since(t0) < TPT_STEP_TIMEOUT_MS) {
		tpt_side_pump(&cli, 1000);
		rc = ps_tp_send(cc, &g, 1, NULL);
	}
	rxe_check(&p->chk, rc == 0 && tpt_ms_since(t0) < 500,
		  "one release: the 5th send taken after %.1f ms of client polls (poll timeout "
		  "1000 ms: it returned when the credit landed)",
		  tpt_ms_since(t0));
	ps_tp_flush(cli.loop);
	rc = tpt_wait_ev(&srv, &cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && !memcmp(ev.buf, p->cbuf + 4 * 256, 256),
		  "the 5th message: %s", ps_err_name(rc));
	if (!rc)
		ps_tp_recv_release(sc, ev.buf);
	for (int i = 1; i < 4; i++)
		ps_tp_recv_release(sc, held[i].buf);

	/* write_imm takes credits too; its event gives the buffer back when handed over. */
	tpt_side_pump(&srv, 0);
	t0 = ps_clock_now_ns();
	for (n = 0; n < 4 && tpt_ms_since(t0) < TPT_STEP_TIMEOUT_MS;) {
		rc = ps_tp_write_imm(cc, &g, 1, &p->dst, 100 + (uint32_t)n, NULL);
		if (rc == -EAGAIN) {
			tpt_side_pump(&cli, 10);
			tpt_side_pump(&srv, 0);
			continue;
		}
		if (rc)
			break;
		n++;
	}
	rc = ps_tp_write_imm(cc, &g, 1, &p->dst, 999, NULL);
	rxe_check(&p->chk, n == 4 && rc == -EAGAIN, "4 write_imms taken, the 5th: %s",
		  ps_err_name(rc));
	ps_tp_flush(cli.loop);
	ok = 0;
	for (int i = 0; i < 4; i++) {
		rc = tpt_wait_ev(&srv, &cli, PS_TP_EV_WRITE_IMM, TPT_STEP_TIMEOUT_MS, &ev);
		ok += !rc && ev.imm == 100u + (uint32_t)i && ev.len == 256;
	}
	rxe_check(&p->chk, ok == 4, "4 WRITE_IMM events in order (imm, len): %d", ok);
	t0 = ps_clock_now_ns();
	rc = -EAGAIN;
	while (rc == -EAGAIN && tpt_ms_since(t0) < TPT_STEP_TIMEOUT_MS) {
		tpt_side_pump(&srv, 0);
		tpt_side_pump(&cli, 1000);
		rc = ps_tp_write_imm(cc, &g, 1, &p->dst, 999, NULL);
	}
	rxe_check(&p->chk, rc == 0, "credits back after the WRITE_IMM events: %s (%.1f ms)",
		  ps_err_name(rc), tpt_ms_since(t0));
	ps_tp_flush(cli.loop);
	rc = tpt_wait_ev(&srv, &cli, PS_TP_EV_WRITE_IMM, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.imm == 999, "the 5th write_imm: %s", ps_err_name(rc));

	/* Orderly close: the peer sees CLOSED with status 0. */
	ps_tp_conn_close(cc);
	cc = NULL;
	rc = tpt_wait_ev(&srv, NULL, PS_TP_EV_CLOSED, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.conn == sc && ev.status == 0,
		  "client closed: the server's CLOSED, status %s",
		  ps_err_name(rc ? rc : ev.status));
	ps_tp_conn_close(sc);
	sc = NULL;
out:
	ps_tp_conn_close(cc);
	ps_tp_conn_close(sc);
	ps_tp_listener_close(lst);
	ps_tp_loop_destroy(cli.loop);
	ps_tp_loop_destroy(srv.loop);
}

/*
 * Broken connections: every op with a ctx completes with PS_EPEER_LOST, then one CLOSED.
 *  (a) a completion error (write_imm with a wrong rkey: remote access error at the peer);
 *  (b) ops queued on a connection whose peer has just closed it.
 */
void tpt_check_peer_lost(struct tpt_part1 *p)
{
	struct ps_tp_conn *cc = NULL, *sc = NULL;
	struct ps_tp_rbuf bad = p->dst;
	struct ps_tp_event ev;
	struct ps_tp_sge g = {p->cbuf, 512, p->cmr};
	int rc, m[3], closed, lost = 0, before = 0;

	/* (a) */
	if (tpt_pair_connect(&p->chk, &p->cli, &p->srv, tpt_addr1, ps_tp_listener_port(p->lst), &cc,
			     &sc))
		return;
	bad.rkey ^= 0x5a5a00u;
	rc = ps_tp_write_imm(cc, &g, 1, &bad, 1, &m[0]);
	if (!rc)
		rc = ps_tp_send(cc, &g, 1, &m[1]);
	if (!rc)
		rc = tpt_wait_queued(&p->cli, &p->srv, PS_TP_EV_CLOSED, TPT_STEP_TIMEOUT_MS);
	closed = tpt_side_find(&p->cli, PS_TP_EV_CLOSED);
	for (int i = 0; i < p->cli.nq; i++) {
		ev = p->cli.q[i];
		if ((ev.type == PS_TP_EV_WRITE_DONE || ev.type == PS_TP_EV_SEND_DONE) &&
		    ev.status == PS_EPEER_LOST && (ev.ctx == &m[0] || ev.ctx == &m[1])) {
			lost++;
			before += i < closed;
		}
	}
	ev = closed >= 0 ? p->cli.q[closed] : (struct ps_tp_event){0};
	rxe_check(&p->chk, rc == 0 && lost == 2 && before == 2 && ev.status == PS_EPEER_LOST,
		  "write_imm with a wrong rkey: %s; %d of 2 ops PS_EPEER_LOST (%d before CLOSED), "
		  "CLOSED status %s",
		  ps_err_name(rc), lost, before, ps_err_name(ev.status));
	tpt_side_count(&p->cli, PS_TP_EV_WRITE_DONE);
	tpt_side_count(&p->cli, PS_TP_EV_SEND_DONE);
	tpt_side_count(&p->cli, PS_TP_EV_CLOSED);
	rc = ps_tp_send(cc, &g, 1, NULL);
	rxe_check(&p->chk, rc == PS_EPEER_LOST, "send on the broken connection: %s",
		  ps_err_name(rc));
	rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_CLOSED, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.conn == sc, "the peer's CLOSED: %s, status %s",
		  ps_err_name(rc), ps_err_name(rc ? 0 : ev.status));
	ps_tp_conn_close(cc);
	ps_tp_conn_close(sc);

	/* (b) */
	if (tpt_pair_connect(&p->chk, &p->cli, &p->srv, tpt_addr1, ps_tp_listener_port(p->lst), &cc,
			     &sc))
		return;
	for (int i = 0; i < 3; i++)
		ps_tp_send(cc, &g, 1, &m[i]);
	ps_tp_conn_close(sc);
	rc = tpt_wait_queued(&p->cli, NULL, PS_TP_EV_CLOSED, TPT_STEP_TIMEOUT_MS);
	closed = tpt_side_find(&p->cli, PS_TP_EV_CLOSED);
	lost = before = 0;
	for (int i = 0; i < p->cli.nq; i++) {
		if (p->cli.q[i].type == PS_TP_EV_SEND_DONE && p->cli.q[i].status == PS_EPEER_LOST) {
			lost++;
			before += i < closed;
		}
	}
	ev = closed >= 0 ? p->cli.q[closed] : (struct ps_tp_event){0};
	rxe_check(&p->chk, rc == 0 && lost == 3 && before == 3 && ev.status == 0,
		  "3 sends queued as the peer closed: %d PS_EPEER_LOST (%d before CLOSED), CLOSED "
		  "status %s (orderly)",
		  lost, before, ps_err_name(ev.status));
	tpt_side_count(&p->cli, PS_TP_EV_SEND_DONE);
	tpt_side_count(&p->cli, PS_TP_EV_CLOSED);
	ps_tp_conn_close(cc);
}
