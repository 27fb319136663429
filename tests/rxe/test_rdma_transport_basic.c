/*
 * test_rdma_transport, part 1 (one connection on rxe1's address, both loops driven by the main
 * thread): its set-up and the basic operations: dev_query; connect errors; a registered
 * buffer's rbuf sent in a message and a 3-element write_imm into it; 8 sends in one doorbell.
 * Then the groups of test_rdma_transport_gather.c and test_rdma_transport_fail.c on it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rdma_tp_test.h"

#define IMM1	  0xc0ffee01u
#define GUARD	  0xee
#define CBUF_LEN  (1u << 20)
#define TGT_LEN	  (256u << 10)
#define TGT_GUARD 4096u
#define MSG_SIZE  32768u

static void check_dev_info(struct tpt_part1 *p)
{
	struct ps_tp_dev_info i;
	char want_gid[64];

	ps_tp_dev_query(p->sdev, &i);
	snprintf(want_gid, sizeof(want_gid), "::ffff:%s", tpt_addr1);
	rxe_check(&p->chk,
		  i.kind == PS_TP_KIND_RDMA && !strcmp(i.name, "rxe1") && i.port == 1 &&
			  i.active_mtu >= 256 && i.max_sge >= 1 && !strcmp(i.gid, want_gid),
		  "dev_query: kind %d, %s port %u, MTU %u, max_sge %u, max_inline %u, GID %s, "
		  "netdev %s, NUMA node %d",
		  i.kind, i.name, i.port, i.active_mtu, i.max_sge, i.max_inline, i.gid, i.netdev,
		  i.numa_node);
	p->max_sge = i.max_sge;
	p->max_inline = i.max_inline;
}

static void check_connect_errors(struct tpt_part1 *p)
{
	struct ps_tp_conn *c = NULL;
	struct ps_tp_dev *d0 = NULL;
	struct ps_tp_loop *l0 = NULL;
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = tpt_addr0, .numa_node = -1};
	struct ps_tp_loop_opts lo = {
		.recv_depth = 4, .msg_size = 4096, .connect_timeout_ms = 10000};
	uint64_t t0 = ps_clock_now_ns();
	int rc;

	/* Nobody listens on port 1 of rxe1's address. */
	rc = ps_tp_connect(p->cli.loop, tpt_addr1, 1, NULL, &c);
	rxe_check(&p->chk, rc == -ECONNREFUSED, "connect to %s:1 (no listener): %s (%.0f ms)",
		  tpt_addr1, ps_err_name(rc), tpt_ms_since(t0));
	if (!rc)
		ps_tp_conn_close(c);
	/* A dev on rxe0 cannot reach rxe1's address: the route runs over rxe1. */
	rc = ps_tp_dev_open(&o, &d0);
	if (!rc)
		rc = ps_tp_loop_create(d0, &lo, &l0);
	if (!rxe_check(&p->chk, rc == 0, "dev + loop on %s: %s", tpt_addr0, ps_err_name(rc)))
		goto out;
	t0 = ps_clock_now_ns();
	rc = ps_tp_connect(l0, tpt_addr1, ps_tp_listener_port(p->lst), NULL, &c);
	rxe_check(&p->chk, rc == -ENETUNREACH,
		  "connect from a dev on %s to %s (another device): %s (%.0f ms)", tpt_addr0,
		  tpt_addr1, ps_err_name(rc), tpt_ms_since(t0));
	if (!rc)
		ps_tp_conn_close(c);
out:
	ps_tp_loop_destroy(l0);
	ps_tp_dev_close(d0);
}

/* The server sends the target's rbuf (16 bytes LE) to the client; 3-element write_imm into it. */
static void check_write_imm(struct tpt_part1 *p)
{
	struct ps_tp_rbuf rb;
	struct ps_tp_event ev;
	struct ps_tp_stats s0, s1;
	struct ps_tp_sge sg = {.addr = p->stx, .len = 16, .mr = p->smr};
	struct ps_tp_sge g[3] = {
		{p->cbuf + 0, 10000, p->cmr},
		{p->cbuf + 20000, 30000, p->cmr},
		{p->cbuf + 60000, 1, p->cmr},
	};
	size_t n, bad;
	int rc, marker;

	ps_tp_mr_rbuf(p->tmr, p->tgt, TGT_LEN, &rb);
	tpt_put64(p->stx, rb.addr);
	tpt_put32(p->stx + 8, rb.rkey);
	tpt_put32(p->stx + 12, rb.len);
	rc = ps_tp_send(p->sc, &sg, 1, &marker);
	if (!rc)
		rc = tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
	if (!rxe_check(&p->chk, rc == 0 && ev.len == 16, "rbuf message: %s, %u bytes",
		       ps_err_name(rc), rc ? 0 : ev.len))
		return;
	p->dst.addr = tpt_get64(ev.buf);
	p->dst.rkey = tpt_get32((uint8_t *)ev.buf + 8);
	p->dst.len = tpt_get32((uint8_t *)ev.buf + 12);
	ps_tp_recv_release(p->cc, ev.buf);
	rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_SEND_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && ev.status == 0,
		  "server's SEND_DONE for the rbuf message: %s", ps_err_name(rc ? rc : ev.status));

	rxe_pattern_fill(p->cbuf, 64 * 1024, 101);
	memset(p->tgt, 0, TGT_LEN);
	memset(p->tgt + TGT_LEN, GUARD, TGT_GUARD);
	n = tpt_gather_copy(g, 3, p->expect);
	ps_tp_stats_get(p->cdev, &s0);
	rc = ps_tp_write_imm(p->cc, g, 3, &p->dst, IMM1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s1);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, TPT_STEP_TIMEOUT_MS, &ev);
	if (!rxe_check(&p->chk, rc == 0 && ev.imm == IMM1 && ev.len == n && ev.conn == p->sc,
		       "write_imm of 3 elements: %s, imm %#x, len %u (want %zu)", ps_err_name(rc),
		       rc ? 0 : ev.imm, rc ? 0 : ev.len, n))
		return;
	bad = memcmp(p->tgt, p->expect, n) ? 1 : 0;
	for (size_t i = 0; i < TGT_GUARD && !bad; i++)
		bad = p->tgt[TGT_LEN + i] != GUARD;
	for (size_t i = n; i < n + 4096 && !bad; i++)
		bad = p->tgt[i] != 0;
	rxe_check(&p->chk, !bad, "write_imm: every byte in place, the bytes after it untouched");
	rc = tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && ev.status == 0,
		  "client's WRITE_DONE: %s", ps_err_name(rc ? rc : ev.status));
	rxe_check(&p->chk, s1.bytes_copied == s0.bytes_copied && s1.doorbells == s0.doorbells + 1,
		  "registered write_imm: bytes_copied +%" PRIu64 " (want 0), doorbells +%" PRIu64
		  " (want 1)",
		  s1.bytes_copied - s0.bytes_copied, s1.doorbells - s0.doorbells);
}

/* 8 sends, only the last with a ctx, one flush: one doorbell, one SEND_DONE, 8 RECVs in order. */
static void check_batch(struct tpt_part1 *p)
{
	struct ps_tp_stats s0, s1;
	struct ps_tp_event ev;
	struct ps_tp_sge g;
	uint32_t off[8], len[8], o = 0;
	int rc = 0, marker, ok = 0, dones;

	rxe_pattern_fill(p->cbuf, 64 * 1024, 202);
	ps_tp_stats_get(p->cdev, &s0);
	for (int i = 0; i < 8 && !rc; i++) {
		off[i] = o;
		len[i] = 100 + 100 * (uint32_t)i;
		o += len[i] + 64;
		g = (struct ps_tp_sge){p->cbuf + off[i], len[i], p->cmr};
		rc = ps_tp_send(p->cc, &g, 1, i == 7 ? &marker : NULL);
	}
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s1);
	rxe_check(
		&p->chk, rc == 0 && s1.doorbells == s0.doorbells + 1 && s1.tx_ops == s0.tx_ops + 8,
		"8 sends queued, one flush: %s, doorbells +%" PRIu64 " (want 1), tx_ops +%" PRIu64,
		ps_err_name(rc), s1.doorbells - s0.doorbells, s1.tx_ops - s0.tx_ops);
	for (int i = 0; i < 8; i++) {
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
		if (rc)
			break;
		ok += ev.len == len[i] && !memcmp(ev.buf, p->cbuf + off[i], len[i]);
		ps_tp_recv_release(p->sc, ev.buf);
	}
	rxe_check(&p->chk, ok == 8, "8 messages arrived in order with their contents: %d of 8 (%s)",
		  ok, ps_err_name(rc));
	rc = tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	/* Any stray completion would be queued by now (the last one completes after the rest). */
	tpt_side_pump(&p->cli, 50);
	dones = tpt_side_count(&p->cli, PS_TP_EV_SEND_DONE);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && dones == 0,
		  "one SEND_DONE (the op with a ctx): %s, %d more", ps_err_name(rc), dones);
}

int tpt_part1_run(void)
{
	struct tpt_part1 *p = calloc(1, sizeof(*p));
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = tpt_addr1, .numa_node = -1};
	struct ps_tp_loop_opts lo = {.recv_depth = 16, .msg_size = MSG_SIZE, .send_depth = 64};
	uint64_t t0 = ps_clock_now_ns();
	int rc, failures;

	if (!p)
		return 1;
	p->chk.role = "part1";
	p->cbuf = tpt_map(CBUF_LEN);
	p->tgt = tpt_map(TGT_LEN + TGT_GUARD);
	p->stx = tpt_map(4096);
	p->expect = malloc(CBUF_LEN);
	rc = p->cbuf && p->tgt && p->stx && p->expect ? 0 : -ENOMEM;
	if (!rc)
		rc = ps_tp_dev_open(&o, &p->sdev);
	if (!rc)
		rc = ps_tp_dev_open(&o, &p->cdev);
	if (!rxe_check(&p->chk, rc == 0, "two devs on %s: %s", tpt_addr1, ps_err_name(rc)))
		goto out;
	check_dev_info(p);
	rc = ps_tp_mr_reg(p->cdev, p->cbuf, CBUF_LEN, &p->cmr);
	if (!rc)
		rc = ps_tp_mr_reg(p->sdev, p->tgt, TGT_LEN + TGT_GUARD, &p->tmr);
	if (!rc)
		rc = ps_tp_mr_reg(p->sdev, p->stx, 4096, &p->smr);
	if (!rc)
		rc = ps_tp_loop_create(p->cdev, &lo, &p->cli.loop);
	if (!rc)
		rc = ps_tp_loop_create(p->sdev, &lo, &p->srv.loop);
	if (!rc)
		rc = ps_tp_listen(p->srv.loop, tpt_addr1, 0, &p->lst);
	if (!rxe_check(&p->chk, rc == 0, "regions, loops, listener on %s port %u: %s", tpt_addr1,
		       rc ? 0 : ps_tp_listener_port(p->lst), ps_err_name(rc)))
		goto out;
	check_connect_errors(p);
	if (tpt_pair_connect(&p->chk, &p->cli, &p->srv, tpt_addr1, ps_tp_listener_port(p->lst),
			     &p->cc, &p->sc))
		goto out;
	check_write_imm(p);
	check_batch(p);
	tpt_check_256(p);
	tpt_check_unregistered(p);
	tpt_check_credits(p);
	tpt_check_peer_lost(p);
	rxe_check(&p->chk, p->cli.nq == 0 && p->srv.nq == 0,
		  "no stray events (client %d, server %d%s%s)", p->cli.nq, p->srv.nq,
		  p->cli.nq ? ", first " : "", p->cli.nq ? tpt_ev_name(p->cli.q[0].type) : "");
out:
	ps_tp_conn_close(p->cc);
	ps_tp_conn_close(p->sc);
	ps_tp_listener_close(p->lst);
	ps_tp_loop_destroy(p->cli.loop);
	ps_tp_loop_destroy(p->srv.loop);
	ps_tp_mr_dereg(p->cmr);
	ps_tp_mr_dereg(p->tmr);
	ps_tp_mr_dereg(p->smr);
	ps_tp_dev_close(p->cdev);
	ps_tp_dev_close(p->sdev);
	rxe_info(&p->chk, "part 1: %.0f ms", tpt_ms_since(t0));
	failures = p->chk.failures;
	free(p->expect);
	free(p);
	return failures;
}
