/*
 * Helpers of the tcp transport tests; see tcp_test_util.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/clock.h"
#include "tests/unit/tcp_test_util.h"

void side_open(struct side *s, const struct ps_tp_loop_opts *o)
{
	struct ps_tp_dev_opts d = {.kind = "tcp", .numa_node = -1};

	memset(s, 0, sizeof(*s));
	assert_int_equal(ps_tp_dev_open(&d, &s->dev), 0);
	assert_int_equal(ps_tp_loop_create(s->dev, o, &s->loop), 0);
}

void side_close(struct side *s)
{
	ps_tp_loop_destroy(s->loop);
	ps_tp_dev_close(s->dev);
}

uint16_t side_listen(struct side *s, const struct ps_tp_loop_opts *o, struct ps_tp_listener **l)
{
	side_open(s, o);
	assert_int_equal(ps_tp_listen(s->loop, "127.0.0.1", 0, l), 0);
	assert_int_not_equal(ps_tp_listener_port(*l), 0);
	return ps_tp_listener_port(*l);
}

void poll_side(struct side *s, int timeout_ms)
{
	int n;

	if (!s)
		return;
	n = ps_tp_poll(s->loop, s->ev + s->nev, MAXEV - s->nev, timeout_ms);
	assert_true(n >= 0);
	s->nev += n;
}

/* Remove and return the first collected event of @type. */
bool take_ev(struct side *s, enum ps_tp_ev_type type, struct ps_tp_event *out)
{
	for (int i = 0; i < s->nev; i++) {
		if (s->ev[i].type != type)
			continue;
		*out = s->ev[i];
		memmove(s->ev + i, s->ev + i + 1, (size_t)(s->nev - i - 1) * sizeof(s->ev[0]));
		s->nev--;
		return true;
	}
	return false;
}

/* Poll both sides until @s has an event of @type; fail the test after WAIT_MS. */
struct ps_tp_event expect_ev(struct side *s, struct side *other, enum ps_tp_ev_type type)
{
	uint64_t deadline = ps_clock_deadline_ms(WAIT_MS);
	struct ps_tp_event e;

	while (!take_ev(s, type, &e)) {
		if (ps_clock_now_ns() > deadline)
			fail_msg("no event of type %d within %d ms", type, WAIT_MS);
		poll_side(s, 2);
		poll_side(other, 0);
	}
	return e;
}

/* Poll both sides for @ms. */
void pump(struct side *a, struct side *b, int ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)ms);

	while (ps_clock_now_ns() < deadline) {
		poll_side(a, 1);
		poll_side(b, 1);
	}
}

struct connect_job {
	struct ps_tp_loop *loop;
	uint16_t port;
	struct ps_tp_conn *conn;
	int rc;
	int done;
};

static void *connect_thread(void *arg)
{
	struct connect_job *j = arg;

	j->rc = ps_tp_connect(j->loop, "127.0.0.1", j->port, CLI_USER, &j->conn);
	__atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int connect_async(struct side *cli, struct side *srv, uint16_t port, struct ps_tp_conn **out)
{
	struct connect_job j = {.loop = cli->loop, .port = port};
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, connect_thread, &j), 0);
	while (!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE))
		poll_side(srv, 2);
	pthread_join(t, NULL);
	*out = j.conn;
	return j.rc;
}

void pair_open(struct pair *p, const struct ps_tp_loop_opts *so, const struct ps_tp_loop_opts *co)
{
	struct ps_tp_event e;

	memset(p, 0, sizeof(*p));
	side_open(&p->srv, so);
	side_open(&p->cli, co);
	assert_int_equal(ps_tp_listen(p->srv.loop, "127.0.0.1", 0, &p->lst), 0);
	p->port = ps_tp_listener_port(p->lst);
	assert_int_not_equal(p->port, 0);
	assert_int_equal(connect_async(&p->cli, &p->srv, p->port, &p->cc), 0);
	e = expect_ev(&p->srv, &p->cli, PS_TP_EV_ACCEPT);
	assert_int_equal(e.status, 0);
	p->sc = e.conn;
	assert_non_null(p->sc);
}

void pair_close(struct pair *p)
{
	ps_tp_conn_close(p->cc);
	ps_tp_conn_close(p->sc);
	ps_tp_listener_close(p->lst);
	side_close(&p->cli);
	side_close(&p->srv);
}

void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

bool all_bytes(const uint8_t *p, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* ---- raw wire helpers: an independent encoding of docs/transport.md ---------------------- */

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void raw_hello(uint8_t *b, uint32_t magic, uint16_t version, uint32_t depth, uint32_t msg_size)
{
	le32(b, magic);
	le16(b + 4, version);
	le16(b + 6, 0);
	le32(b + 8, depth);
	le32(b + 12, msg_size);
}

void raw_hdr(uint8_t *b, uint8_t op, uint32_t len, uint32_t imm, uint32_t credits, uint64_t raddr,
	     uint32_t rkey)
{
	memset(b, 0, 32);
	b[0] = op;
	le32(b + 4, len);
	le32(b + 8, imm);
	le32(b + 12, credits);
	le64(b + 16, raddr);
	le32(b + 24, rkey);
}

int raw_connect(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	return fd;
}

void raw_send(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read exactly @len bytes from the raw socket while the server loop runs. */
void raw_recv(int fd, struct side *srv, uint8_t *buf, size_t len)
{
	uint64_t deadline = ps_clock_deadline_ms(WAIT_MS);
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		assert_true(ps_clock_now_ns() < deadline);
		poll_side(srv, 2);
		n = recv(fd, buf + got, len - got, 0);
		if (n > 0)
			got += (size_t)n;
		else
			assert_true(n < 0 && errno == EAGAIN);
	}
}

/* True once the server closed the raw socket (EOF or reset); false after @ms. */
bool raw_closed(int fd, struct side *srv, int ms)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)ms);
	uint8_t b[256];
	ssize_t n;

	while (ps_clock_now_ns() < deadline) {
		poll_side(srv, 2);
		n = recv(fd, b, sizeof(b), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
	}
	return false;
}

void region_reg(struct ps_tp_dev *dev, struct region *r, size_t len)
{
	r->len = len;
	r->mem = malloc(len + 2 * GUARD);
	assert_non_null(r->mem);
	memset(r->mem, 0xAA, GUARD);
	memset(r->mem + GUARD, 0, len);
	memset(r->mem + GUARD + len, 0xAA, GUARD);
	r->buf = r->mem + GUARD;
	assert_int_equal(ps_tp_mr_reg(dev, r->buf, len, &r->mr), 0);
	assert_int_equal(ps_tp_mr_rbuf(r->mr, r->buf, (uint32_t)len, &r->rb), 0);
}

void region_check_guards(const struct region *r)
{
	assert_true(all_bytes(r->mem, GUARD, 0xAA));
	assert_true(all_bytes(r->buf + r->len, GUARD, 0xAA));
}

void region_free(struct region *r)
{
	ps_tp_mr_dereg(r->mr);
	free(r->mem);
}

int send_u32(struct ps_tp_conn *c, uint32_t *v)
{
	struct ps_tp_sge s = {v, sizeof(*v), NULL};

	return ps_tp_send(c, &s, 1, NULL);
}

int raw_open(uint16_t port, struct side *srv, uint8_t *hello)
{
	int fd = raw_connect(port);

	raw_recv(fd, srv, hello, 16);
	return fd;
}
