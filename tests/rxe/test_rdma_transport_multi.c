/*
 * test_rdma_transport, part 2: many connections. Server A (a forked process, rxe0's address)
 * and server B (a thread, rxe1's), 8 client threads per server exchanging checked
 * request/reply pairs; then server A is killed: its clients must see CLOSED in time while
 * server B's clients go on.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rdma_tp_test.h"

#define CLOSE_TIMEOUT_MS 30000 /* a dead server's clients must see CLOSED within this */
#define PHASE_TIMEOUT_MS 240000
#define REQ_MAGIC	 0x51455251u /* "QREQ" */
#define REP_MAGIC	 0x50455251u /* "QREP" */
#define NCLIENTS	 8	     /* per server */
#define WINDOW		 8	     /* requests in flight per client */
#define DEFAULT_MSGS	 10000
#define PHASE2_MSGS	 500

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

	tpt_put32(p, client);
	tpt_put32(p + 4, seq);
	tpt_put32(p + 8, len);
	tpt_put32(p + 12, reply ? REP_MAGIC : REQ_MAGIC);
	rxe_pattern_fill(p + 16, len - 16, seed_of(client, seq, reply));
}

/* 0 if @p (of @len bytes) is message @seq of @client (any seq when @seq is UINT32_MAX). */
static int msg_check(const uint8_t *p, uint32_t len, uint32_t client, uint32_t seq, bool reply)
{
	uint32_t s = tpt_get32(p + 4);

	if (len < 16 || tpt_get32(p + 12) != (reply ? REP_MAGIC : REQ_MAGIC) ||
	    tpt_get32(p + 8) != len)
		return -1;
	if ((client != UINT32_MAX && tpt_get32(p) != client) || (seq != UINT32_MAX && s != seq))
		return -2;
	if (len != (reply ? rep_len(s) : req_len(s)))
		return -3;
	return rxe_pattern_mismatch(p + 16, len - 16, seed_of(tpt_get32(p), s, reply)) == len - 16
		       ? 0
		       : -4;
}

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

static void srv_reply(struct srv_conn *sc, struct ps_tp_mr *mr, struct tpt_srv_report *r)
{
	while (sc->npend) {
		struct ps_tp_event *e = &sc->pend[0];
		uint32_t seq = tpt_get32((uint8_t *)e->buf + 4), client = tpt_get32(e->buf);
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
void tpt_server_run(const char *addr, struct tpt_srv_report *r, const char *role)
{
	struct rxe_check chk = {.role = role};
	struct ps_tp_dev_opts o = {.kind = "rdma", .bind_addr = addr, .numa_node = -1};
	struct ps_tp_loop_opts lo = {.recv_depth = 16,
				     .msg_size = SRV_MSG,
				     .send_depth = SRV_SLOTS,
				     .max_conns = SRV_CONNS};
	struct srv_conn *conns = calloc(SRV_CONNS, sizeof(*conns));
	size_t arena_len = (size_t)SRV_CONNS * SRV_SLOTS * SRV_MSG;
	uint8_t *arena = tpt_map(arena_len);
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
					  tpt_ev_name(e->type), ps_err_name(e->status));
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
				c->close_ms = tpt_ms_since(atomic_load(&t_kill_ns));
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
	s.slots = tpt_map(WINDOW * 4096);
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
	c->ms1 = tpt_ms_since(t0);
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
				c->close_ms = tpt_ms_since(atomic_load(&t_kill_ns));
			} else {
				rxe_check(&c->chk, false, "idle: event %s",
					  tpt_ev_name(evs[i].type));
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
		c->ms2 = tpt_ms_since(t0);
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
	tpt_server_run(tpt_addr1, arg, "srvB");
	return NULL;
}

static bool wait_ready(struct tpt_srv_report *r, int timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);

	while (!r->ready && ps_clock_remaining_ms(deadline))
		usleep(10000);
	return r->ready == 1;
}

int tpt_part2_run(pid_t pid_a, struct tpt_srv_report *ra)
{
	struct rxe_check chk = {.role = "part2"};
	struct tpt_srv_report *rb = calloc(1, sizeof(*rb));
	struct client *cl = calloc(2 * NCLIENTS, sizeof(*cl));
	struct ps_tp_dev *dev0 = NULL, *dev1 = NULL;
	struct ps_tp_dev_opts o0 = {.kind = "rdma", .bind_addr = tpt_addr0, .numa_node = -1};
	struct ps_tp_dev_opts o1 = {.kind = "rdma", .bind_addr = tpt_addr1, .numa_node = -1};
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
	ok = b_started && wait_ready(rb, TPT_STEP_TIMEOUT_MS) &&
	     wait_ready(ra, TPT_STEP_TIMEOUT_MS);
	if (!rxe_check(&chk, ok,
		       "server A (pid %d, %s port %u) and server B (thread, %s port %u) listening",
		       (int)pid_a, tpt_addr0, ra->port, tpt_addr1, rb->port))
		goto out;
	rc = ps_tp_dev_open(&o0, &dev0);
	if (!rc)
		rc = ps_tp_dev_open(&o1, &dev1);
	if (!rxe_check(&chk, rc == 0, "client devs on %s and %s: %s", tpt_addr0, tpt_addr1,
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
		c->host = c->victim ? tpt_addr0 : tpt_addr1;
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
		  atomic_load(&done1), 2 * NCLIENTS, tpt_ms_since(t0),
		  2.0 * 2 * NCLIENTS * nmsgs / (tpt_ms_since(t0) / 1000.0));
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
		 PHASE2_MSGS, tpt_ms_since(t_kill_ns));
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
