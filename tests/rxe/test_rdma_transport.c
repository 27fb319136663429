/*
 * test_rdma_transport: the rdma backend of the transport interface (transport/rdma/), over the
 * ps_tp_* API only, on the soft-RoCE devices of the rxe guest.
 *
 * Part 1, one connection (both loops owned by the main thread after the connect, so every step
 * is deterministic), on rxe1's address:
 *  - dev_query: kind, device, port, MTU, max_sge, GID carrying the address, netdev;
 *  - connect errors: nobody listening (-ECONNREFUSED); a route over another device than the
 *    dev's (-ENETUNREACH);
 *  - a registered buffer's rbuf sent in a message; a 3-element write_imm into it (imm, length,
 *    every byte, a guard that stays untouched); 8 sends queued with one ctx (the last): one
 *    doorbell, one SEND_DONE, 8 messages in order;
 *  - a 256-element write_imm (non-contiguous elements: 256 SGEs split over WRs, since max_sge is
 *    32) and a 256-element send (a SEND cannot span WRs: the tail beyond max_sge - 1 SGEs is
 *    copied, exactly that many bytes counted), each in one doorbell;
 *  - stats.bytes_copied: 0 for registered memory; exactly the payload for unregistered memory
 *    above the inline size; 0 for a small unregistered message that goes inline;
 *  - credits with recv_depth 4: the 5th send and the 5th write_imm get -EAGAIN until the
 *    receiver releases; a poll returns early when the credit write lands; eagain counted;
 *  - an orderly close: the peer's CLOSED has status 0;
 *  - broken connections: a completion error (write_imm with a wrong rkey) and ops queued as the
 *    peer closes: each op with a ctx completes with PS_EPEER_LOST, before one CLOSED.
 *
 * Part 2, many connections: server A in a forked process listening on rxe0's address, server B
 * in a thread listening on rxe1's; 8 client threads per server, each with its own loop and one
 * connection, exchange N request/reply pairs each (contents checked on both sides; default
 * 10,000, PS_RDMA_TEST_MSGS overrides). Then server A is killed with SIGKILL: each of its
 * clients must see CLOSED (after PS_EPEER_LOST for any op in flight) within CLOSE_TIMEOUT_MS,
 * while server B's clients run another exchange to completion.
 *
 * Usage: test_rdma_transport. Addresses: $PS_RXE0_ADDR (192.0.2.1), $PS_RXE1_ADDR (192.0.2.2).
 * Exit status: 0 pass, 1 fail, 77 skipped (no RDMA device, outside the guest only).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rxe_test.h"
#include "transport/transport.h"

#define STEP_TIMEOUT_MS	 20000 /* one step of part 1 (TCG: connection set-up takes ~1 s) */
#define CLOSE_TIMEOUT_MS 30000 /* a dead server's clients must see CLOSED within this */
#define PHASE_TIMEOUT_MS 240000
#define EVQ		 1024
#define IMM1		 0xc0ffee01u
#define IMM256		 0x50530256u
#define GUARD		 0xee
#define REQ_MAGIC	 0x51455251u /* "QREQ" */
#define REP_MAGIC	 0x50455251u /* "QREP" */
#define NCLIENTS	 8	     /* per server */
#define WINDOW		 8	     /* requests in flight per client */
#define DEFAULT_MSGS	 10000
#define PHASE2_MSGS	 500

static const char *addr0, *addr1;

/* ---- little helpers ------------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static double ms_since(uint64_t t0)
{
	return (double)(ps_clock_now_ns() - t0) / 1e6;
}

static const char *ev_name(int t)
{
	static const char *n[] = {"?",	       "ACCEPT",     "RECV",  "WRITE_IMM",
				  "SEND_DONE", "WRITE_DONE", "CLOSED"};

	return t >= 1 && t <= 6 ? n[t] : "?";
}

/* ---- part 1: two loops driven by one thread ------------------------------------------------ */

/* A loop and the events it produced that no step has taken yet. */
struct side {
	struct ps_tp_loop *loop;
	struct ps_tp_event q[EVQ];
	int nq;
};

static int side_pump(struct side *s, int timeout_ms)
{
	int room = EVQ - s->nq, n;

	if (room <= 0)
		return -ENOSPC;
	n = ps_tp_poll(s->loop, s->q + s->nq, room < 64 ? room : 64, timeout_ms);
	if (n > 0)
		s->nq += n;
	return n;
}

static bool side_take(struct side *s, enum ps_tp_ev_type type, struct ps_tp_event *out)
{
	for (int i = 0; i < s->nq; i++) {
		if (s->q[i].type != type)
			continue;
		*out = s->q[i];
		memmove(&s->q[i], &s->q[i + 1], (size_t)(s->nq - i - 1) * sizeof(s->q[0]));
		s->nq--;
		return true;
	}
	return false;
}

/* Wait on @s for an event of @type, keeping @other (if any) moving. */
static int wait_ev(struct side *s, struct side *other, enum ps_tp_ev_type type, int timeout_ms,
		   struct ps_tp_event *out)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);
	int rc;

	for (;;) {
		if (side_take(s, type, out))
			return 0;
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
		if (other) {
			rc = side_pump(other, 0);
			if (rc < 0)
				return rc;
		}
		rc = side_pump(s, 5);
		if (rc < 0)
			return rc;
	}
}

/* Index of the first queued event of @type, or -1. */
static int side_find(const struct side *s, enum ps_tp_ev_type type)
{
	for (int i = 0; i < s->nq; i++)
		if (s->q[i].type == type)
			return i;
	return -1;
}

/* Wait until an event of @type is queued on @s (not taken), keeping @other moving. */
static int wait_queued(struct side *s, struct side *other, enum ps_tp_ev_type type, int timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);

	while (side_find(s, type) < 0) {
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
		if (other)
			side_pump(other, 0);
		side_pump(s, 5);
	}
	return 0;
}

/* Count (and drop) the queued events of @type. */
static int side_count(struct side *s, enum ps_tp_ev_type type)
{
	struct ps_tp_event e;
	int n = 0;

	while (side_take(s, type, &e))
		n++;
	return n;
}

struct connect_job {
	struct ps_tp_loop *loop;
	const char *host;
	uint16_t port;
	struct ps_tp_conn *conn;
	int rc;
};

static void *connect_thread(void *arg)
{
	struct connect_job *j = arg;

	j->rc = ps_tp_connect(j->loop, j->host, j->port, j, &j->conn);
	return NULL;
}

/*
 * Connect @cli to @srv's listener: ps_tp_connect blocks until established, so it runs in a
 * helper thread while this one polls the server for ACCEPT; then both loops are this thread's.
 */
static int pair_connect(struct rxe_check *chk, struct side *cli, struct side *srv, const char *host,
			uint16_t port, struct ps_tp_conn **cconn, struct ps_tp_conn **sconn)
{
	struct connect_job j = {.loop = cli->loop, .host = host, .port = port};
	struct ps_tp_event ev;
	uint64_t t0 = ps_clock_now_ns();
	pthread_t t;
	int rc;

	if (pthread_create(&t, NULL, connect_thread, &j))
		return rxe_failed(chk, "pthread_create", -EAGAIN);
	rc = wait_ev(srv, NULL, PS_TP_EV_ACCEPT, STEP_TIMEOUT_MS, &ev);
	pthread_join(t, NULL);
	if (!rxe_check(chk, j.rc == 0 && rc == 0, "connect to %s:%u: %s, accept: %s (%.0f ms)",
		       host, port, ps_err_name(j.rc), ps_err_name(rc), ms_since(t0)))
		return j.rc ? j.rc : rc;
	rxe_check(chk, ps_tp_conn_user(j.conn) == &j && ps_tp_conn_user(ev.conn) == NULL,
		  "user pointers: connect's on the client, NULL on the accepted connection");
	rxe_info(chk, "client side peer %s, server side peer %s", ps_tp_conn_peer(j.conn),
		 ps_tp_conn_peer(ev.conn));
	ps_tp_conn_set_user(j.conn, NULL);
	*cconn = j.conn;
	*sconn = ev.conn;
	return 0;
}

static void stats_now(struct ps_tp_dev *dev, struct ps_tp_stats *s)
{
	ps_tp_stats_get(dev, s);
}

/* Build the expected bytes of a gather list. */
static size_t gather_copy(const struct ps_tp_sge *sgl, int n, uint8_t *out)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		memcpy(out + off, sgl[i].addr, sgl[i].len);
		off += sgl[i].len;
	}
	return off;
}

struct part1 {
	struct rxe_check chk;
	struct ps_tp_dev *cdev, *sdev;
	struct side cli, srv;
	struct ps_tp_listener *lst;
	struct ps_tp_conn *cc, *sc; /* client and server end */
	uint8_t *cbuf;		    /* client registered buffer */
	struct ps_tp_mr *cmr;
	uint8_t *tgt; /* server write target (+ guard) */
	struct ps_tp_mr *tmr;
	uint8_t *stx; /* server registered send buffer */
	struct ps_tp_mr *smr;
	uint8_t *expect;       /* scratch for expected contents */
	struct ps_tp_rbuf dst; /* the client's view of tgt */
	uint32_t max_sge, max_inline;
};

#define CBUF_LEN  (1u << 20)
#define TGT_LEN	  (256u << 10)
#define TGT_GUARD 4096u
#define MSG_SIZE  32768u

static void check_dev_info(struct part1 *p)
{
	struct ps_tp_dev_info i;
	char want_gid[64];

	ps_tp_dev_query(p->sdev, &i);
	snprintf(want_gid, sizeof(want_gid), "::ffff:%s", addr1);
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

static void check_connect_errors(struct part1 *p)
{
	struct ps_tp_conn *c = NULL;
	struct ps_tp_dev *d0 = NULL;
	struct ps_tp_loop *l0 = NULL;
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = addr0, .numa_node = -1};
	struct ps_tp_loop_opts lo = {
		.recv_depth = 4, .msg_size = 4096, .connect_timeout_ms = 10000};
	uint64_t t0 = ps_clock_now_ns();
	int rc;

	/* Nobody listens on port 1 of rxe1's address. */
	rc = ps_tp_connect(p->cli.loop, addr1, 1, NULL, &c);
	rxe_check(&p->chk, rc == -ECONNREFUSED, "connect to %s:1 (no listener): %s (%.0f ms)",
		  addr1, ps_err_name(rc), ms_since(t0));
	if (!rc)
		ps_tp_conn_close(c);
	/* A dev on rxe0 cannot reach rxe1's address: the route runs over rxe1. */
	rc = ps_tp_dev_open(&o, &d0);
	if (!rc)
		rc = ps_tp_loop_create(d0, &lo, &l0);
	if (!rxe_check(&p->chk, rc == 0, "dev + loop on %s: %s", addr0, ps_err_name(rc)))
		goto out;
	t0 = ps_clock_now_ns();
	rc = ps_tp_connect(l0, addr1, ps_tp_listener_port(p->lst), NULL, &c);
	rxe_check(&p->chk, rc == -ENETUNREACH,
		  "connect from a dev on %s to %s (another device): %s (%.0f ms)", addr0, addr1,
		  ps_err_name(rc), ms_since(t0));
	if (!rc)
		ps_tp_conn_close(c);
out:
	ps_tp_loop_destroy(l0);
	ps_tp_dev_close(d0);
}

/* The server sends the target's rbuf (16 bytes LE) to the client; 3-element write_imm into it. */
static void check_write_imm(struct part1 *p)
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
	put64(p->stx, rb.addr);
	put32(p->stx + 8, rb.rkey);
	put32(p->stx + 12, rb.len);
	rc = ps_tp_send(p->sc, &sg, 1, &marker);
	if (!rc)
		rc = wait_ev(&p->cli, &p->srv, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
	if (!rxe_check(&p->chk, rc == 0 && ev.len == 16, "rbuf message: %s, %u bytes",
		       ps_err_name(rc), rc ? 0 : ev.len))
		return;
	p->dst.addr = get64(ev.buf);
	p->dst.rkey = get32((uint8_t *)ev.buf + 8);
	p->dst.len = get32((uint8_t *)ev.buf + 12);
	ps_tp_recv_release(p->cc, ev.buf);
	rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_SEND_DONE, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && ev.status == 0,
		  "server's SEND_DONE for the rbuf message: %s", ps_err_name(rc ? rc : ev.status));

	rxe_pattern_fill(p->cbuf, 64 * 1024, 101);
	memset(p->tgt, 0, TGT_LEN);
	memset(p->tgt + TGT_LEN, GUARD, TGT_GUARD);
	n = gather_copy(g, 3, p->expect);
	stats_now(p->cdev, &s0);
	rc = ps_tp_write_imm(p->cc, g, 3, &p->dst, IMM1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s1);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, STEP_TIMEOUT_MS, &ev);
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
	rc = wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && ev.status == 0,
		  "client's WRITE_DONE: %s", ps_err_name(rc ? rc : ev.status));
	rxe_check(&p->chk, s1.bytes_copied == s0.bytes_copied && s1.doorbells == s0.doorbells + 1,
		  "registered write_imm: bytes_copied +%" PRIu64 " (want 0), doorbells +%" PRIu64
		  " (want 1)",
		  s1.bytes_copied - s0.bytes_copied, s1.doorbells - s0.doorbells);
}

/* 8 sends, only the last with a ctx, one flush: one doorbell, one SEND_DONE, 8 RECVs in order. */
static void check_batch(struct part1 *p)
{
	struct ps_tp_stats s0, s1;
	struct ps_tp_event ev;
	struct ps_tp_sge g;
	uint32_t off[8], len[8], o = 0;
	int rc = 0, marker, ok = 0, dones;

	rxe_pattern_fill(p->cbuf, 64 * 1024, 202);
	stats_now(p->cdev, &s0);
	for (int i = 0; i < 8 && !rc; i++) {
		off[i] = o;
		len[i] = 100 + 100 * (uint32_t)i;
		o += len[i] + 64;
		g = (struct ps_tp_sge){p->cbuf + off[i], len[i], p->cmr};
		rc = ps_tp_send(p->cc, &g, 1, i == 7 ? &marker : NULL);
	}
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s1);
	rxe_check(
		&p->chk, rc == 0 && s1.doorbells == s0.doorbells + 1 && s1.tx_ops == s0.tx_ops + 8,
		"8 sends queued, one flush: %s, doorbells +%" PRIu64 " (want 1), tx_ops +%" PRIu64,
		ps_err_name(rc), s1.doorbells - s0.doorbells, s1.tx_ops - s0.tx_ops);
	for (int i = 0; i < 8; i++) {
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
		if (rc)
			break;
		ok += ev.len == len[i] && !memcmp(ev.buf, p->cbuf + off[i], len[i]);
		ps_tp_recv_release(p->sc, ev.buf);
	}
	rxe_check(&p->chk, ok == 8, "8 messages arrived in order with their contents: %d of 8 (%s)",
		  ok, ps_err_name(rc));
	rc = wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, STEP_TIMEOUT_MS, &ev);
	/* Any stray completion would be queued by now (the last one completes after the rest). */
	side_pump(&p->cli, 50);
	dones = side_count(&p->cli, PS_TP_EV_SEND_DONE);
	rxe_check(&p->chk, rc == 0 && ev.ctx == &marker && dones == 0,
		  "one SEND_DONE (the op with a ctx): %s, %d more", ps_err_name(rc), dones);
}

/* 256 non-contiguous elements: write_imm splits over WRs (zero copy); send copies its tail. */
static void check_256(struct part1 *p)
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
	n = gather_copy(g, 256, p->expect);
	d.addr += 65536;
	d.len -= 65536;
	memset(p->tgt + 65536, 0, n + 64);
	stats_now(p->cdev, &s0);
	rc = ps_tp_write_imm(p->cc, g, 256, &d, IMM256, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s1);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, STEP_TIMEOUT_MS, &ev);
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
	rc = wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.status == 0, "its WRITE_DONE: %s",
		  ps_err_name(rc ? rc : ev.status));

	/* The same list as a SEND: max_sge - 1 SGEs stay zero copy, the rest is copied. */
	want_copy = p->max_sge < 256 ? (uint64_t)(256 - (p->max_sge - 1)) * 64 : 0;
	rc = ps_tp_send(p->cc, g, 256, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s2);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
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
	rc = wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.status == 0, "its SEND_DONE: %s",
		  ps_err_name(rc ? rc : ev.status));
}

/* Unregistered memory is copied (counted), except a message small enough to go inline. */
static void check_unregistered(struct part1 *p)
{
	uint8_t *heap = malloc(16384);
	struct ps_tp_stats s0, s1, s2, s3;
	struct ps_tp_event ev;
	struct ps_tp_sge g = {heap, 8192, NULL};
	int rc, marker;

	if (!heap)
		return;
	rxe_pattern_fill(heap, 16384, 404);
	stats_now(p->cdev, &s0);
	rc = ps_tp_send(p->cc, &g, 1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s1);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.len == 8192 && !memcmp(ev.buf, heap, 8192),
		  "unregistered 8 KiB send: %s, contents", ps_err_name(rc));
	if (!rc)
		ps_tp_recv_release(p->sc, ev.buf);
	rxe_check(&p->chk, s1.bytes_copied - s0.bytes_copied == (8192 > p->max_inline ? 8192 : 0),
		  "unregistered 8 KiB send: bytes_copied +%" PRIu64 " (inline limit %u)",
		  s1.bytes_copied - s0.bytes_copied, p->max_inline);
	wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, STEP_TIMEOUT_MS, &ev);

	g.len = 12000;
	memset(p->tgt, 0, 12001);
	rc = ps_tp_write_imm(p->cc, &g, 1, &p->dst, 7, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s2);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_WRITE_IMM, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk,
		  rc == 0 && ev.len == 12000 && !memcmp(p->tgt, heap, 12000) &&
			  s2.bytes_copied - s1.bytes_copied == 12000,
		  "unregistered 12000-byte write_imm: %s, contents, bytes_copied +%" PRIu64,
		  ps_err_name(rc), s2.bytes_copied - s1.bytes_copied);
	wait_ev(&p->cli, &p->srv, PS_TP_EV_WRITE_DONE, STEP_TIMEOUT_MS, &ev);

	g.len = 64;
	rc = ps_tp_send(p->cc, &g, 1, &marker);
	if (!rc)
		rc = ps_tp_flush(p->cli.loop);
	stats_now(p->cdev, &s3);
	if (!rc)
		rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk,
		  rc == 0 && ev.len == 64 && !memcmp(ev.buf, heap, 64) &&
			  s3.bytes_copied - s2.bytes_copied == (p->max_inline >= 64 ? 0 : 64),
		  "unregistered 64-byte send: %s, bytes_copied +%" PRIu64 " (%s)", ps_err_name(rc),
		  s3.bytes_copied - s2.bytes_copied, p->max_inline >= 64 ? "inline" : "bounce");
	if (!rc)
		ps_tp_recv_release(p->sc, ev.buf);
	wait_ev(&p->cli, &p->srv, PS_TP_EV_SEND_DONE, STEP_TIMEOUT_MS, &ev);
	free(heap);
}

/* recv_depth 4 on both sides: the 5th op waits for a released buffer. */
static void check_credits(struct part1 *p)
{
	struct ps_tp_loop_opts lo = {.recv_depth = 4, .msg_size = 4096, .send_depth = 16};
	struct side cli = {0}, srv = {0};
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
		rc = ps_tp_listen(srv.loop, addr1, 0, &lst);
	if (!rxe_check(&p->chk, rc == 0, "recv_depth 4 loops and listener: %s", ps_err_name(rc)))
		goto out;
	if (pair_connect(&p->chk, &cli, &srv, addr1, ps_tp_listener_port(lst), &cc, &sc))
		goto out;

	stats_now(p->cdev, &s0);
	for (n = 0; n < 6; n++) {
		rxe_pattern_fill(p->cbuf + n * 256, 256, 500 + (uint32_t)n);
		g.addr = p->cbuf + n * 256;
		rc = ps_tp_send(cc, &g, 1, NULL);
		if (rc)
			break;
	}
	stats_now(p->cdev, &s1);
	rxe_check(&p->chk, n == 4 && rc == -EAGAIN && s1.eagain == s0.eagain + 1,
		  "recv_depth 4: %d sends taken, the next: %s, eagain +%" PRIu64, n,
		  ps_err_name(rc), s1.eagain - s0.eagain);
	ps_tp_flush(cli.loop);
	ok = 0;
	for (int i = 0; i < 4; i++) {
		rc = wait_ev(&srv, &cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &held[i]);
		ok += !rc && held[i].len == 256 && !memcmp(held[i].buf, p->cbuf + i * 256, 256);
	}
	rxe_check(&p->chk, ok == 4, "the 4 messages arrived: %d", ok);
	/* Nothing released: still no credit, however long the client polls. */
	for (int i = 0; i < 10; i++) {
		side_pump(&cli, 10);
		side_pump(&srv, 10);
	}
	g.addr = p->cbuf + 4 * 256;
	rc = ps_tp_send(cc, &g, 1, NULL);
	rxe_check(&p->chk, rc == -EAGAIN, "after 200 ms with the buffers held: %s",
		  ps_err_name(rc));
	/* Release one: the server's next poll reposts it and writes the credit. */
	ps_tp_recv_release(sc, held[0].buf);
	side_pump(&srv, 0);
	t0 = ps_clock_now_ns();
	rc = -EAGAIN;
	while (rc == -EAGAIN && ms_since(t0) < STEP_TIMEOUT_MS) {
		side_pump(&cli, 1000);
		rc = ps_tp_send(cc, &g, 1, NULL);
	}
	rxe_check(&p->chk, rc == 0 && ms_since(t0) < 500,
		  "one release: the 5th send taken after %.1f ms of client polls (poll timeout "
		  "1000 ms: it returned when the credit landed)",
		  ms_since(t0));
	ps_tp_flush(cli.loop);
	rc = wait_ev(&srv, &cli, PS_TP_EV_RECV, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && !memcmp(ev.buf, p->cbuf + 4 * 256, 256),
		  "the 5th message: %s", ps_err_name(rc));
	if (!rc)
		ps_tp_recv_release(sc, ev.buf);
	for (int i = 1; i < 4; i++)
		ps_tp_recv_release(sc, held[i].buf);

	/* write_imm takes credits too; its event gives the buffer back when handed over. */
	side_pump(&srv, 0);
	t0 = ps_clock_now_ns();
	for (n = 0; n < 4 && ms_since(t0) < STEP_TIMEOUT_MS;) {
		rc = ps_tp_write_imm(cc, &g, 1, &p->dst, 100 + (uint32_t)n, NULL);
		if (rc == -EAGAIN) {
			side_pump(&cli, 10);
			side_pump(&srv, 0);
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
		rc = wait_ev(&srv, &cli, PS_TP_EV_WRITE_IMM, STEP_TIMEOUT_MS, &ev);
		ok += !rc && ev.imm == 100u + (uint32_t)i && ev.len == 256;
	}
	rxe_check(&p->chk, ok == 4, "4 WRITE_IMM events in order (imm, len): %d", ok);
	t0 = ps_clock_now_ns();
	rc = -EAGAIN;
	while (rc == -EAGAIN && ms_since(t0) < STEP_TIMEOUT_MS) {
		side_pump(&srv, 0);
		side_pump(&cli, 1000);
		rc = ps_tp_write_imm(cc, &g, 1, &p->dst, 999, NULL);
	}
	rxe_check(&p->chk, rc == 0, "credits back after the WRITE_IMM events: %s (%.1f ms)",
		  ps_err_name(rc), ms_since(t0));
	ps_tp_flush(cli.loop);
	rc = wait_ev(&srv, &cli, PS_TP_EV_WRITE_IMM, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.imm == 999, "the 5th write_imm: %s", ps_err_name(rc));

	/* Orderly close: the peer sees CLOSED with status 0. */
	ps_tp_conn_close(cc);
	cc = NULL;
	rc = wait_ev(&srv, NULL, PS_TP_EV_CLOSED, STEP_TIMEOUT_MS, &ev);
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
static void check_peer_lost(struct part1 *p)
{
	struct ps_tp_conn *cc = NULL, *sc = NULL;
	struct ps_tp_rbuf bad = p->dst;
	struct ps_tp_event ev;
	struct ps_tp_sge g = {p->cbuf, 512, p->cmr};
	int rc, m[3], closed, lost = 0, before = 0;

	/* (a) */
	if (pair_connect(&p->chk, &p->cli, &p->srv, addr1, ps_tp_listener_port(p->lst), &cc, &sc))
		return;
	bad.rkey ^= 0x5a5a00u;
	rc = ps_tp_write_imm(cc, &g, 1, &bad, 1, &m[0]);
	if (!rc)
		rc = ps_tp_send(cc, &g, 1, &m[1]);
	if (!rc)
		rc = wait_queued(&p->cli, &p->srv, PS_TP_EV_CLOSED, STEP_TIMEOUT_MS);
	closed = side_find(&p->cli, PS_TP_EV_CLOSED);
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
	side_count(&p->cli, PS_TP_EV_WRITE_DONE);
	side_count(&p->cli, PS_TP_EV_SEND_DONE);
	side_count(&p->cli, PS_TP_EV_CLOSED);
	rc = ps_tp_send(cc, &g, 1, NULL);
	rxe_check(&p->chk, rc == PS_EPEER_LOST, "send on the broken connection: %s",
		  ps_err_name(rc));
	rc = wait_ev(&p->srv, &p->cli, PS_TP_EV_CLOSED, STEP_TIMEOUT_MS, &ev);
	rxe_check(&p->chk, rc == 0 && ev.conn == sc, "the peer's CLOSED: %s, status %s",
		  ps_err_name(rc), ps_err_name(rc ? 0 : ev.status));
	ps_tp_conn_close(cc);
	ps_tp_conn_close(sc);

	/* (b) */
	if (pair_connect(&p->chk, &p->cli, &p->srv, addr1, ps_tp_listener_port(p->lst), &cc, &sc))
		return;
	for (int i = 0; i < 3; i++)
		ps_tp_send(cc, &g, 1, &m[i]);
	ps_tp_conn_close(sc);
	rc = wait_queued(&p->cli, NULL, PS_TP_EV_CLOSED, STEP_TIMEOUT_MS);
	closed = side_find(&p->cli, PS_TP_EV_CLOSED);
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
	side_count(&p->cli, PS_TP_EV_SEND_DONE);
	side_count(&p->cli, PS_TP_EV_CLOSED);
	ps_tp_conn_close(cc);
}

static int part1_run(void)
{
	struct part1 *p = calloc(1, sizeof(*p));
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = addr1, .numa_node = -1};
	struct ps_tp_loop_opts lo = {.recv_depth = 16, .msg_size = MSG_SIZE, .send_depth = 64};
	uint64_t t0 = ps_clock_now_ns();
	int rc, failures;

	if (!p)
		return 1;
	p->chk.role = "part1";
	p->cbuf = map(CBUF_LEN);
	p->tgt = map(TGT_LEN + TGT_GUARD);
	p->stx = map(4096);
	p->expect = malloc(CBUF_LEN);
	rc = p->cbuf && p->tgt && p->stx && p->expect ? 0 : -ENOMEM;
	if (!rc)
		rc = ps_tp_dev_open(&o, &p->sdev);
	if (!rc)
		rc = ps_tp_dev_open(&o, &p->cdev);
	if (!rxe_check(&p->chk, rc == 0, "two devs on %s: %s", addr1, ps_err_name(rc)))
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
		rc = ps_tp_listen(p->srv.loop, addr1, 0, &p->lst);
	if (!rxe_check(&p->chk, rc == 0, "regions, loops, listener on %s port %u: %s", addr1,
		       rc ? 0 : ps_tp_listener_port(p->lst), ps_err_name(rc)))
		goto out;
	check_connect_errors(p);
	if (pair_connect(&p->chk, &p->cli, &p->srv, addr1, ps_tp_listener_port(p->lst), &p->cc,
			 &p->sc))
		goto out;
	check_write_imm(p);
	check_batch(p);
	check_256(p);
	check_unregistered(p);
	check_credits(p);
	check_peer_lost(p);
	rxe_check(&p->chk, p->cli.nq == 0 && p->srv.nq == 0,
		  "no stray events (client %d, server %d%s%s)", p->cli.nq, p->srv.nq,
		  p->cli.nq ? ", first " : "", p->cli.nq ? ev_name(p->cli.q[0].type) : "");
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
	rxe_info(&p->chk, "part 1: %.0f ms", ms_since(t0));
	failures = p->chk.failures;
	free(p->expect);
	free(p);
	return failures;
}

/* ---- part 2: servers and clients ------------------------------------------------------------ */

/* Request: [client][seq][len][REQ_MAGIC] + pattern; reply: same header with REP_MAGIC. */
static uint32_t req_len(uint32_t seq)
{
	return 16 + (seq * 97u) % 1009u;
}

static uint32_t rep_len(uint32_t seq)
{
	return 16 + (seq * 37u) % 241u;
}

static uint32_t seed_of(uint32_t client, uint32_t seq, bool reply)
{
	return client * 1000003u + seq * 7u + (reply ? 0x5a5a5a5au : 0);
}

static void msg_build(uint8_t *p, uint32_t client, uint32_t seq, bool reply)
{
	uint32_t len = reply ? rep_len(seq) : req_len(seq);

	put32(p, client);
	put32(p + 4, seq);
	put32(p + 8, len);
	put32(p + 12, reply ? REP_MAGIC : REQ_MAGIC);
	rxe_pattern_fill(p + 16, len - 16, seed_of(client, seq, reply));
}

/* 0 if @p (of @len bytes) is message @seq of @client (any seq when @seq is UINT32_MAX). */
static int msg_check(const uint8_t *p, uint32_t len, uint32_t client, uint32_t seq, bool reply)
{
	uint32_t s = get32(p + 4);

	if (len < 16 || get32(p + 12) != (reply ? REP_MAGIC : REQ_MAGIC) || get32(p + 8) != len)
		return -1;
	if ((client != UINT32_MAX && get32(p) != client) || (seq != UINT32_MAX && s != seq))
		return -2;
	if (len != (reply ? rep_len(s) : req_len(s)))
		return -3;
	return rxe_pattern_mismatch(p + 16, len - 16, seed_of(get32(p), s, reply)) == len - 16 ? 0
											       : -4;
}

/* What a server reports; for the forked one in MAP_SHARED memory. */
struct srv_report {
	atomic_int ready;
	atomic_int stop;
	atomic_ushort port;
	atomic_ulong accepted, msgs_ok, msgs_bad, replies, closed, errors;
};

#define SRV_SLOTS 32 /* reply slots per connection = send_depth */
#define SRV_CONNS 16
#define SRV_MSG	  4096

struct srv_conn {
	struct ps_tp_conn *conn;
	uint8_t *slots; /* SRV_SLOTS x SRV_MSG, registered */
	bool busy[SRV_SLOTS];
	struct ps_tp_event pend[64]; /* received, not yet replied (buffers held) */
	int npend;
};

static void srv_reply(struct srv_conn *sc, struct ps_tp_mr *mr, struct srv_report *r)
{
	while (sc->npend) {
		struct ps_tp_event *e = &sc->pend[0];
		uint32_t seq = get32((uint8_t *)e->buf + 4), client = get32(e->buf);
		struct ps_tp_sge g;
		int slot = -1, rc;

		for (int i = 0; i < SRV_SLOTS && slot < 0; i++)
			if (!sc->busy[i])
				slot = i;
		if (slot < 0)
			return;
		msg_build(sc->slots + slot * SRV_MSG, client, seq, true);
		g = (struct ps_tp_sge){sc->slots + slot * SRV_MSG, rep_len(seq), mr};
		rc = ps_tp_send(sc->conn, &g, 1, &sc->busy[slot]);
		if (rc == -EAGAIN)
			return;
		if (rc) {
			r->errors++;
			return;
		}
		sc->busy[slot] = true;
		r->replies++;
		ps_tp_recv_release(sc->conn, e->buf);
		memmove(&sc->pend[0], &sc->pend[1], (size_t)(sc->npend - 1) * sizeof(sc->pend[0]));
		sc->npend--;
	}
}

/* One server: a loop listening on @addr; replies to each request; until r->stop. */
static void server_run(const char *addr, struct srv_report *r, const char *role)
{
	struct rxe_check chk = {.role = role};
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = addr, .numa_node = -1};
	struct ps_tp_loop_opts lo = {.recv_depth = 16,
				     .msg_size = SRV_MSG,
				     .send_depth = SRV_SLOTS,
				     .max_conns = SRV_CONNS};
	struct srv_conn *conns = calloc(SRV_CONNS, sizeof(*conns));
	size_t arena_len = (size_t)SRV_CONNS * SRV_SLOTS * SRV_MSG;
	uint8_t *arena = map(arena_len);
	struct ps_tp_dev *dev = NULL;
	struct ps_tp_loop *loop = NULL;
	struct ps_tp_listener *lst = NULL;
	struct ps_tp_mr *mr = NULL;
	struct ps_tp_event evs[64];
	int rc, n;

	rc = conns && arena ? 0 : -ENOMEM;
	if (!rc)
		rc = ps_tp_dev_open(&o, &dev);
	if (!rc)
		rc = ps_tp_mr_reg(dev, arena, arena_len, &mr);
	if (!rc)
		rc = ps_tp_loop_create(dev, &lo, &loop);
	if (!rc)
		rc = ps_tp_listen(loop, addr, 0, &lst);
	if (rc) {
		rxe_failed(&chk, "server set-up", rc);
		r->errors++;
		r->ready = -1;
		goto out;
	}
	for (int i = 0; i < SRV_CONNS; i++)
		conns[i].slots = arena + (size_t)i * SRV_SLOTS * SRV_MSG;
	r->port = ps_tp_listener_port(lst);
	r->ready = 1;
	rxe_info(&chk, "listening on %s port %u", addr, r->port);
	while (!r->stop) {
		n = ps_tp_poll(loop, evs, 64, 50);
		if (n < 0) {
			rxe_failed(&chk, "poll", n);
			r->errors++;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct ps_tp_event *e = &evs[i];
			struct srv_conn *sc = ps_tp_conn_user(e->conn);

			switch (e->type) {
			case PS_TP_EV_ACCEPT:
				for (int k = 0; k < SRV_CONNS && !sc; k++)
					if (!conns[k].conn)
						sc = &conns[k];
				if (!sc) {
					r->errors++;
					ps_tp_conn_close(e->conn);
					break;
				}
				sc->conn = e->conn;
				ps_tp_conn_set_user(e->conn, sc);
				r->accepted++;
				break;
			case PS_TP_EV_RECV:
				if (msg_check(e->buf, e->len, UINT32_MAX, UINT32_MAX, false) ||
				    sc->npend == 64) {
					r->msgs_bad++;
					ps_tp_recv_release(e->conn, e->buf);
					break;
				}
				r->msgs_ok++;
				sc->pend[sc->npend++] = *e;
				break;
			case PS_TP_EV_SEND_DONE:
				if (e->status)
					r->errors++;
				*(bool *)e->ctx = false;
				break;
			case PS_TP_EV_CLOSED:
				r->closed++;
				ps_tp_conn_close(e->conn);
				memset(sc->busy, 0, sizeof(sc->busy));
				sc->npend = 0;
				sc->conn = NULL;
				break;
			default:
				r->errors++;
				break;
			}
		}
		for (int k = 0; k < SRV_CONNS; k++)
			if (conns[k].conn && conns[k].npend)
				srv_reply(&conns[k], mr, r);
	}
out:
	ps_tp_listener_close(lst);
	ps_tp_loop_destroy(loop); /* closes the connections left */
	ps_tp_mr_dereg(mr);
	ps_tp_dev_close(dev);
	if (arena)
		munmap(arena, arena_len);
	free(conns);
}

struct client {
	pthread_t thread;
	struct rxe_check chk;
	char role[16];
	uint32_t id;
	bool victim; /* its server gets killed */
	struct ps_tp_dev *dev;
	const char *host;
	uint16_t port;
	uint32_t nmsgs;
	atomic_int *phase;	   /* 1: exchange; 2: after the kill */
	atomic_int *done1;	   /* clients that finished phase 1 */
	double ms1, ms2, close_ms; /* measured */
	int lost_ops, close_status;
	bool closed;
};

struct cl_state {
	struct ps_tp_loop *loop;
	struct ps_tp_conn *conn;
	uint8_t *slots; /* WINDOW x 4096, registered */
	struct ps_tp_mr *mr;
	bool busy[WINDOW];
	uint32_t next_send, next_recv;
};

/* Exchange requests [from, to) with the window full; 0 or a failure code. */
static int cl_exchange(struct client *c, struct cl_state *s, uint32_t to)
{
	uint64_t deadline = ps_clock_deadline_ms(PHASE_TIMEOUT_MS);
	struct ps_tp_event evs[32];
	int n, rc;

	while (s->next_recv < to) {
		while (s->next_send < to && s->next_send - s->next_recv < WINDOW) {
			int slot = -1;
			struct ps_tp_sge g;

			for (int i = 0; i < WINDOW && slot < 0; i++)
				if (!s->busy[i])
					slot = i;
			if (slot < 0)
				break;
			msg_build(s->slots + slot * 4096, c->id, s->next_send, false);
			g = (struct ps_tp_sge){s->slots + slot * 4096, req_len(s->next_send),
					       s->mr};
			rc = ps_tp_send(s->conn, &g, 1, &s->busy[slot]);
			if (rc == -EAGAIN)
				break;
			if (rc)
				return rxe_failed(&c->chk, "send", rc);
			s->busy[slot] = true;
			s->next_send++;
		}
		if (!ps_clock_remaining_ms(deadline))
			return rxe_failed(&c->chk, "exchange", PS_ETIMEOUT);
		n = ps_tp_poll(s->loop, evs, 32, 100);
		if (n < 0)
			return rxe_failed(&c->chk, "poll", n);
		for (int i = 0; i < n; i++) {
			struct ps_tp_event *e = &evs[i];

			switch (e->type) {
			case PS_TP_EV_RECV:
				rc = msg_check(e->buf, e->len, c->id, s->next_recv, true);
				ps_tp_recv_release(s->conn, e->buf);
				if (rc) {
					rxe_check(&c->chk, false, "reply %u: bad (%d)",
						  s->next_recv, rc);
					return -EPROTO;
				}
				s->next_recv++;
				break;
			case PS_TP_EV_SEND_DONE:
				if (e->status)
					return rxe_failed(&c->chk, "request completion", e->status);
				*(bool *)e->ctx = false;
				break;
			default:
				rxe_check(&c->chk, false, "unexpected event %s (status %s)",
					  ev_name(e->type), ps_err_name(e->status));
				return -EPROTO;
			}
		}
	}
	return 0;
}

/* When server A was killed (set before phase 2 starts, so the victims see it). */
static _Atomic uint64_t t_kill_ns;

/* After the kill: keep trying to send (some ops are in flight then) until CLOSED arrives. */
static void cl_wait_closed(struct client *c, struct cl_state *s)
{
	uint64_t deadline = ps_clock_deadline_ms(CLOSE_TIMEOUT_MS);
	struct ps_tp_event evs[32];
	int n, rc;

	while (!c->closed && ps_clock_remaining_ms(deadline)) {
		for (int i = 0; i < WINDOW; i++) {
			struct ps_tp_sge g = {s->slots + i * 4096, 64, s->mr};

			if (s->busy[i])
				continue;
			msg_build(s->slots + i * 4096, c->id, s->next_send, false);
			g.len = req_len(s->next_send);
			rc = ps_tp_send(s->conn, &g, 1, &s->busy[i]);
			if (!rc) {
				s->busy[i] = true;
				s->next_send++;
			}
			break;
		}
		n = ps_tp_poll(s->loop, evs, 32, 20);
		for (int i = 0; i < n; i++) {
			struct ps_tp_event *e = &evs[i];

			if (e->type == PS_TP_EV_SEND_DONE) {
				if (e->status == PS_EPEER_LOST)
					c->lost_ops++;
				else if (e->status)
					rxe_check(&c->chk, false, "completion status %s",
						  ps_err_name(e->status));
				*(bool *)e->ctx = false;
			} else if (e->type == PS_TP_EV_RECV) {
				ps_tp_recv_release(s->conn, e->buf);
			} else if (e->type == PS_TP_EV_CLOSED) {
				c->closed = true;
				c->close_status = e->status;
				c->close_ms = ms_since(atomic_load(&t_kill_ns));
			}
		}
	}
	/* Every op with a ctx came back before CLOSED. */
	for (int i = 0; i < WINDOW; i++)
		if (s->busy[i])
			rxe_check(&c->chk, false, "op in slot %d never completed", i);
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct ps_tp_loop_opts lo = {
		.recv_depth = 16, .msg_size = 4096, .send_depth = 32, .max_conns = 2};
	struct cl_state s = {0};
	uint64_t t0, wait_deadline;
	int rc;

	c->chk.role = c->role;
	s.slots = map(WINDOW * 4096);
	rc = s.slots ? 0 : -ENOMEM;
	if (!rc)
		rc = ps_tp_mr_reg(c->dev, s.slots, WINDOW * 4096, &s.mr);
	if (!rc)
		rc = ps_tp_loop_create(c->dev, &lo, &s.loop);
	if (!rc)
		rc = ps_tp_connect(s.loop, c->host, c->port, c, &s.conn);
	if (rc) {
		rxe_failed(&c->chk, "set-up/connect", rc);
		atomic_fetch_add(c->done1, 1);
		goto out;
	}
	t0 = ps_clock_now_ns();
	rc = cl_exchange(c, &s, c->nmsgs);
	c->ms1 = ms_since(t0);
	rxe_check(&c->chk, rc == 0, "%u requests and replies checked (%.0f ms, %.0f msgs/s)",
		  s.next_recv, c->ms1, 2.0 * s.next_recv / (c->ms1 / 1000.0));
	atomic_fetch_add(c->done1, 1);
	if (rc)
		goto out;
	wait_deadline = ps_clock_deadline_ms(PHASE_TIMEOUT_MS);
	while (atomic_load(c->phase) < 2 && ps_clock_remaining_ms(wait_deadline)) {
		struct ps_tp_event evs[8];

		/* Keep the loop moving; nothing arrives (a victim may see its CLOSED already). */
		rc = ps_tp_poll(s.loop, evs, 8, 20);
		for (int i = 0; i < rc; i++) {
			if (evs[i].type == PS_TP_EV_SEND_DONE) {
				*(bool *)evs[i].ctx = false;
			} else if (evs[i].type == PS_TP_EV_CLOSED && c->victim) {
				c->closed = true;
				c->close_status = evs[i].status;
				c->close_ms = ms_since(atomic_load(&t_kill_ns));
			} else {
				rxe_check(&c->chk, false, "idle: event %s", ev_name(evs[i].type));
			}
		}
	}
	if (c->victim) {
		cl_wait_closed(c, &s);
		rxe_check(&c->chk, c->closed && c->close_ms < CLOSE_TIMEOUT_MS,
			  "server killed: CLOSED after %.0f ms (status %s), %d ops lost "
			  "(PS_EPEER_LOST)",
			  c->close_ms, ps_err_name(c->close_status), c->lost_ops);
	} else {
		t0 = ps_clock_now_ns();
		rc = cl_exchange(c, &s, s.next_recv + PHASE2_MSGS);
		c->ms2 = ms_since(t0);
		rxe_check(&c->chk, rc == 0,
			  "after the other server's death: %u more exchanged "
			  "(%.0f ms)",
			  PHASE2_MSGS, c->ms2);
	}
out:
	ps_tp_conn_close(s.conn);
	ps_tp_loop_destroy(s.loop);
	ps_tp_mr_dereg(s.mr);
	if (s.slots)
		munmap(s.slots, WINDOW * 4096);
	return NULL;
}

static void *server_thread(void *arg)
{
	server_run(addr1, arg, "srvB");
	return NULL;
}

static bool wait_ready(struct srv_report *r, int timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);

	while (!r->ready && ps_clock_remaining_ms(deadline))
		usleep(10000);
	return r->ready == 1;
}

static int part2_run(pid_t pid_a, struct srv_report *ra)
{
	struct rxe_check chk = {.role = "part2"};
	struct srv_report *rb = calloc(1, sizeof(*rb));
	struct client *cl = calloc(2 * NCLIENTS, sizeof(*cl));
	struct ps_tp_dev *dev0 = NULL, *dev1 = NULL;
	struct ps_tp_dev_opts o0 = {.kind = "rdma", .bind_addr = addr0, .numa_node = -1};
	struct ps_tp_dev_opts o1 = {.kind = "rdma", .bind_addr = addr1, .numa_node = -1};
	atomic_int phase = 1, done1 = 0;
	const char *env = getenv("PS_RDMA_TEST_MSGS");
	uint32_t nmsgs = env && atoi(env) > 0 ? (uint32_t)atoi(env) : DEFAULT_MSGS;
	pthread_t tb;
	bool b_started = false;
	uint64_t t0, deadline;
	struct timespec ts;
	int rc, failures = 0, status = 0, started = 0;
	bool ok;

	if (!rb || !cl)
		return 1;
	rc = pthread_create(&tb, NULL, server_thread, rb);
	b_started = rc == 0;
	ok = b_started && wait_ready(rb, STEP_TIMEOUT_MS) && wait_ready(ra, STEP_TIMEOUT_MS);
	if (!rxe_check(&chk, ok,
		       "server A (pid %d, %s port %u) and server B (thread, %s port %u) listening",
		       (int)pid_a, addr0, ra->port, addr1, rb->port))
		goto out;
	rc = ps_tp_dev_open(&o0, &dev0);
	if (!rc)
		rc = ps_tp_dev_open(&o1, &dev1);
	if (!rxe_check(&chk, rc == 0, "client devs on %s and %s: %s", addr0, addr1,
		       ps_err_name(rc)))
		goto out;
	rxe_info(&chk, "%d clients x 2 servers, %u request/reply pairs each, window %d", NCLIENTS,
		 nmsgs, WINDOW);
	t0 = ps_clock_now_ns();
	for (int i = 0; i < 2 * NCLIENTS; i++) {
		struct client *c = &cl[i];

		c->id = (uint32_t)i;
		c->victim = i < NCLIENTS;
		snprintf(c->role, sizeof(c->role), "c%c%d", c->victim ? 'A' : 'B', i % NCLIENTS);
		c->dev = c->victim ? dev0 : dev1;
		c->host = c->victim ? addr0 : addr1;
		c->port = c->victim ? ra->port : rb->port;
		c->nmsgs = nmsgs;
		c->phase = &phase;
		c->done1 = &done1;
		if (pthread_create(&c->thread, NULL, client_main, c)) {
			rxe_check(&chk, false, "pthread_create");
			break;
		}
		started++;
	}
	deadline = ps_clock_deadline_ms(PHASE_TIMEOUT_MS + 30000);
	while (atomic_load(&done1) < started && ps_clock_remaining_ms(deadline))
		usleep(20000);
	rxe_check(&chk, atomic_load(&done1) == 2 * NCLIENTS,
		  "phase 1: %d of %d clients done in %.0f ms (%.0f request+reply msgs/s in all)",
		  atomic_load(&done1), 2 * NCLIENTS, ms_since(t0),
		  2.0 * 2 * NCLIENTS * nmsgs / (ms_since(t0) / 1000.0));
	rxe_check(&chk,
		  ra->msgs_ok == (unsigned long)NCLIENTS * nmsgs && ra->msgs_bad == 0 &&
			  ra->errors == 0 && ra->accepted == NCLIENTS,
		  "server A: %lu connections, %lu requests ok, %lu bad, %lu replies, %lu errors",
		  ra->accepted, ra->msgs_ok, ra->msgs_bad, ra->replies, ra->errors);
	rxe_check(&chk,
		  rb->msgs_ok == (unsigned long)NCLIENTS * nmsgs && rb->msgs_bad == 0 &&
			  rb->errors == 0 && rb->accepted == NCLIENTS,
		  "server B: %lu connections, %lu requests ok, %lu bad, %lu replies, %lu errors",
		  rb->accepted, rb->msgs_ok, rb->msgs_bad, rb->replies, rb->errors);

	/*
	 * Server A dies without a word. Phase 2 starts first: A's clients keep sending, so ops are
	 * in flight when it dies.
	 */
	atomic_store(&t_kill_ns, ps_clock_now_ns());
	atomic_store(&phase, 2);
	usleep(100000);
	atomic_store(&t_kill_ns, ps_clock_now_ns());
	rxe_check(&chk, kill(pid_a, SIGKILL) == 0, "SIGKILL to server A (pid %d)", (int)pid_a);
	for (int i = 0; i < started; i++) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (PHASE_TIMEOUT_MS + CLOSE_TIMEOUT_MS) / 1000;
		if (pthread_timedjoin_np(cl[i].thread, NULL, &ts)) {
			rxe_check(&chk, false, "client %s did not finish", cl[i].role);
			return chk.failures + 1; /* cannot free what threads still use */
		}
		failures += cl[i].chk.failures;
	}
	rxe_info(&chk, "phase 2 (A's clients closed, B's %d more each): %.0f ms after the kill",
		 PHASE2_MSGS, ms_since(t_kill_ns));
	rxe_check(&chk, rb->errors == 0 && rb->msgs_bad == 0,
		  "server B after phase 2: %lu requests ok, %lu closed, %lu errors", rb->msgs_ok,
		  rb->closed, rb->errors);
out:
	if (b_started) {
		rb->stop = 1;
		pthread_join(tb, NULL);
	}
	if (pid_a > 0) {
		kill(pid_a, SIGKILL);
		waitpid(pid_a, &status, 0);
		rxe_check(&chk, WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			  "server A ended by SIGKILL");
	}
	ps_tp_dev_close(dev0);
	ps_tp_dev_close(dev1);
	free(cl);
	free(rb);
	return failures + chk.failures;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(void)
{
	struct rxe_check chk = {.role = "main"};
	struct srv_report *ra;
	uint64_t t0 = ps_clock_now_ns();
	int rc, failures;
	pid_t pid;

	rxe_test_init();
	rc = rxe_device_present(&chk, "test_rdma_transport");
	if (rc)
		return rc;
	addr0 = getenv("PS_RXE0_ADDR") && *getenv("PS_RXE0_ADDR") ? getenv("PS_RXE0_ADDR")
								  : "192.0.2.1";
	addr1 = getenv("PS_RXE1_ADDR") && *getenv("PS_RXE1_ADDR") ? getenv("PS_RXE1_ADDR")
								  : "192.0.2.2";
	/*
	 * Server A is forked first, before this process registers any memory or starts a thread
	 * (registered pages and fork do not mix on older kernels; threads and fork never do).
	 */
	ra = mmap(NULL, sizeof(*ra), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ra == MAP_FAILED) {
		rxe_failed(&chk, "shared memory", -errno);
		return 1;
	}
	memset(ra, 0, sizeof(*ra));
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		rxe_failed(&chk, "fork", -errno);
		return 1;
	}
	if (pid == 0) {
		/* Die with the parent; and never outlive the tier's timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(600);
		server_run(addr0, ra, "srvA");
		_exit(0);
	}
	failures = part1_run();
	failures += part2_run(pid, ra);
	rxe_info(&chk, "total %.1f s", ms_since(t0) / 1000.0);
	printf("test_rdma_transport: %s (%d failed checks)\n", failures ? "FAIL" : "PASS",
	       failures);
	return failures ? 1 : 0;
}
