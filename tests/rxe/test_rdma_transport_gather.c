/*
 * test_rdma_transport, part 1: gathers and copies. A 256-element write_imm (split over WRs,
 * zero copy) and send (tail copied, exactly that many bytes counted); stats.bytes_copied for
 * unregistered memory, above and below the inline size.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "tests/rxe/rdma_tp_test.h"

#define IMM256 0x50530256u

/* 256 non-contiguous elements: write_imm splits over WRs (zero copy); send copies its tail. */
void tpt_check_256(struct tpt_part1 *p)
{
	static struct ps_tp_sge g[256];
	struct ps_tp_rbuf d = p->dst;
	struct ps_tp_stats s0, s1, s2;
	struct ps_tp_event ev;
	uint64_t want_copy;
	size_t n;
	int rc, marker;

	rxe_pattern_fill(p->cbuf + 131072, 256 * 128, 303);
	for (int i = 0; i < 256; i++)
		g[i] = (struct ps_tp_sge){p->cbuf + 131072 + i * 128, 64, p->cmr};
	n = tpt_gather_copy(g, 256, p->expect);
	d.addr += 65536;
	d.len -= 65536;
	memset(p->tgt + 65536, 0, n + 64);
	ps_tp_stats_get(p->cdev, &s0);
	rc = ps_tp_write_imm(p->cc, g, 256, &d, IMM256, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s1);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(
		&p->chk,
		rc == 0 && ev.imm == IMM256 && ev.len == n &&
			!memcmp(p->tgt + 65536, p->expect, n) && p->tgt[65536 + n] == 0,
		"256-element write_imm (%u SGEs per WR): %s, imm %#x, len %u (want %zu), contents",
		p->max_sge, ps_err_name(rc), rc ? 0 : ev.imm, rc ? 0 : ev.len, n);
	rxe_check(&p->chk, s1.bytes_copied == s0.bytes_copied && s1.doorbells == s0.doorbells + 1,
		  "256-element write_imm: bytes_copied +%" PRIu64 " (want 0), doorbells +%" PRIu64
		  " (want 1: %u WRs chained)",
		  s1.bytes_copied - s0.bytes_copied, s1.doorbells - s0.doorbells,
		  (256 + p->max_sge - 1) / p->max_sge + 1);
	rc = tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.status == 0, "its WRITE_DONE: %s",
		  ps_err_name(rc ? rc : ev.status));

	/* The same list as a SEND: max_sge - 1 SGEs stay zero copy, the rest is copied. */
	want_copy = p->max_sge < 256 ? (uint64_t)(256 - (p->max_sge - 1)) * 64 : 0;
	rc = ps_tp_send(p->cc, g, 256, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s2);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.len == n && !memcmp(ev.buf, p->expect, n),
		  "256-element send: %s, len %u (want %zu), contents", ps_err_name(rc),
		  rc ? 0 : ev.len, n);
	if (!rc)
		ps_tp_recv_release(p->sc, ev.buf);
	rxe_check(&p->chk,
		  s2.bytes_copied - s1.bytes_copied == want_copy &&
			  s2.doorbells == s1.doorbells + 1,
		  "256-element send: bytes_copied +%" PRIu64 " (want %" PRIu64
		  ": the elements past the first %u), doorbells +%" PRIu64,
		  s2.bytes_copied - s1.bytes_copied, want_copy, p->max_sge - 1,
		  s2.doorbells - s1.doorbells);
	rc = tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.status == 0, "its SEND_DONE: %s",
		  ps_err_name(rc ? rc : ev.status));
}

/* Unregistered memory is copied (counted), except a message small enough to go inline. */
void tpt_check_unregistered(struct tpt_part1 *p)
{
	uint8_t *heap = malloc(16384);
	struct ps_tp_stats s0, s1, s2, s3;
	struct ps_tp_event ev;
	struct ps_tp_sge g = {heap, 8192, NULL};
	int rc, marker;

	if (!heap)
		return;
	rxe_pattern_fill(heap, 16384, 404);
	ps_tp_stats_get(p->cdev, &s0);
	rc = ps_tp_send(p->cc, &g, 1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s1);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.len == 8192 && !memcmp(ev.buf, heap, 8192),
		  "unregistered 8 KiB send: %s, contents", ps_err_name(rc));
	if (!rc)
		ps_tp_recv_release(p->sc, ev.buf);
	rxe_check(&p->chk, s1.bytes_copied - s0.bytes_copied == (8192 > p->max_inline ? 8192 : 0),
		  "unregistered 8 KiB send: bytes_copied +%" PRIu64 " (inline limit %u)",
		  s1.bytes_copied - s0.bytes_copied, p->max_inline);
	tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, TPT_STEP_TIMEOUT_MS, &ev);

	g.len = 12000;
	memset(p->tgt, 0, 12001);
	rc = ps_tp_write_imm(p->cc, &g, 1, &p->dst, 7, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s2);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk,
		  rc == 0 && ev.len == 12000 && !memcmp(p->tgt, heap, 12000) &&
			  s2.bytes_copied - s1.bytes_copied == 12000,
		  "unregistered 12000-byte write_imm: %s, contents, bytes_copied +%" PRIu64,
		  ps_err_name(rc), s2.bytes_copied - s1.bytes_copied);
	tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, TPT_STEP_TIMEOUT_MS, &ev);

	g.len = 64;
	rc = ps_tp_send(p->cc, &g, 1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	ps_tp_stats_get(p->cdev, &s3);
	if (!rc)
		rc = tpt_wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, TPT_STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk,
		  rc == 0 && ev.len == 64 && !memcmp(ev.buf, heap, 64) &&
			  s3.bytes_copied - s2.bytes_copied == (p->max_inline >= 64 ? 0 : 64),
		  "unregistered 64-byte send: %s, bytes_copied +%" PRIu64 " (%s)", ps_err_name(rc),
		  s3.bytes_copied - s2.bytes_copied, p->max_inline >= 64 ? "inline" : "bounce");
	if (!rc)
		ps_tp_recv_release(p->sc, ev.buf);
	tpt_wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, TPT_STEP_TIMEOUT_MS, &ev);
	free(heap);
}
