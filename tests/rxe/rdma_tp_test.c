/*
 * Helpers of test_rdma_transport's source files; see rdma_tp_test.h.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rdma_tp_test.h"

/* ---- little helpers ------------------------------------------------------------------------ */

void tpt_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t tpt_get32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

void tpt_put64(uint8_t *p, uint64_t v)
{
	tpt_put32(p, (uint32_t)v);
	tpt_put32(p + 4, (uint32_t)(v >> 32));
}

uint64_t tpt_get64(const uint8_t *p)
{
	return tpt_get32(p) | (uint64_t)tpt_get32(p + 4) << 32;
}

void *tpt_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

double tpt_ms_since(uint64_t t0)
{
	return (double)(ps_clock_now_ns() - t0) / 1e6;
}

const char *tpt_ev_name(int t)
{
	static const char *n[] = {"?",	       "ACCEPT",     "RECV",  "WRITE_IMM",
				  "SEND_DONE", "WRITE_DONE", "CLOSED"};

	return t >= 1 && t <= 6 ? n[t] : "?";
}

/* ---- part 1: two loops driven by one thread ------------------------------------------------ */

int tpt_side_pump(struct tpt_side *s, int timeout_ms)
{
	int room = TPT_EVQ - s->nq, n;

	if (room <= 0)
		return -ENOSPC;
	n = ps_tp_poll(s->loop, s->q + s->nq, room < 64 ? room : 64, timeout_ms);
	if (n > 0)
		s->nq += n;
	return n;
}

static bool side_take(struct tpt_side *s, enum ps_tp_ev_type type, struct ps_tp_event *out)
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
int tpt_wait_ev(struct tpt_side *s, struct tpt_side *other, enum ps_tp_ev_type type, int timeout_ms,
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
			rc = tpt_side_pump(other, 0);
			if (rc < 0)
				return rc;
		}
		rc = tpt_side_pump(s, 5);
		if (rc < 0)
			return rc;
	}
}

/* Index of the first queued event of @type, or -1. */
int tpt_side_find(const struct tpt_side *s, enum ps_tp_ev_type type)
{
	for (int i = 0; i < s->nq; i++)
		if (s->q[i].type == type)
			return i;
	return -1;
}

/* Wait until an event of @type is queued on @s (not taken), keeping @other moving. */
int tpt_wait_queued(struct tpt_side *s, struct tpt_side *other, enum ps_tp_ev_type type,
		    int timeout_ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);

	while (tpt_side_find(s, type) < 0) {
		if (!ps_clock_remaining_ms(deadline))
			return PS_ETIMEOUT;
		if (other)
			tpt_side_pump(other, 0);
		tpt_side_pump(s, 5);
	}
	return 0;
}

/* Count (and drop) the queued events of @type. */
int tpt_side_count(struct tpt_side *s, enum ps_tp_ev_type type)
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
int tpt_pair_connect(struct rxe_check *chk, struct tpt_side *cli, struct tpt_side *srv,
		     const char *host, uint16_t port, struct ps_tp_conn **cconn,
		     struct ps_tp_conn **sconn)
{
	struct connect_job j = {.loop = cli->loop, .host = host, .port = port};
	struct ps_tp_event ev;
	uint64_t t0 = ps_clock_now_ns();
	pthread_t t;
	int rc;

	if (pthread_create(&t, NULL, connect_thread, &j))
		return rxe_failed(chk, "pthread_create", -EAGAIN);
	rc = tpt_wait_ev(srv, NULL, PS_TP_EV_ACCEPT, TPT_STEP_TIMEOUT_MS, &ev);
	pthread_join(t, NULL);
	if (!rxe_check(chk, j.rc == 0 && rc == 0, "connect to %s:%u: %s, accept: %s (%.0f ms)",
		       host, port, ps_err_name(j.rc), ps_err_name(rc), tpt_ms_since(t0)))
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

/* Build the expected bytes of a gather list. */
size_t tpt_gather_copy(const struct ps_tp_sge *sgl, int n, uint8_t *out)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		memcpy(out + off, sgl[i].addr, sgl[i].len);
		off += sgl[i].len;
	}
	return off;
}
