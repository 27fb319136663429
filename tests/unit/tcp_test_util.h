/*
 * Helpers of the tcp transport tests (test_tcp_transport.c): loops driven from the test thread,
 * events collected and waited for, a connect that runs beside the accepting loop, registered
 * regions with guard bytes, and raw sockets that speak the wire format of docs/transport.md
 * with their own encoding (so the tests check the documented layout, not the backend's
 * helpers against themselves). Every wait is bounded: a helper fails the test instead.
 */
#ifndef PS_TESTS_TCP_TEST_UTIL_H
#define PS_TESTS_TCP_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

#define MAXEV	 4096
#define WAIT_MS	 5000
#define CLI_USER ((void *)0x1234)

struct side {
	struct ps_tp_dev *dev;
	struct ps_tp_loop *loop;
	struct ps_tp_event ev[MAXEV]; /* collected, not yet taken by the test */
	int nev;
};

struct pair {
	struct side srv, cli;
	struct ps_tp_listener *lst;
	uint16_t port;
	struct ps_tp_conn *sc, *cc; /* the server's and the client's end */
};

/* A registered region with 64 guard bytes on each side. */
struct region {
	uint8_t *mem; /* guard | len bytes | guard */
	uint8_t *buf;
	size_t len;
	struct ps_tp_mr *mr;
	struct ps_tp_rbuf rb; /* the whole region */
};

#define GUARD 64 /* bytes of 0xAA before and after a region */

/* A dev ("tcp") and a loop with @o. */
void side_open(struct side *s, const struct ps_tp_loop_opts *o);
void side_close(struct side *s);
/* side_open(), then a listener on 127.0.0.1 (any port): returns the port. */
uint16_t side_listen(struct side *s, const struct ps_tp_loop_opts *o, struct ps_tp_listener **l);
/* One ps_tp_poll(), appending to s->ev. NULL @s: nothing. */
void poll_side(struct side *s, int timeout_ms);
/* Remove and return the first collected event of @type. */
bool take_ev(struct side *s, enum ps_tp_ev_type type, struct ps_tp_event *out);
/* Poll both sides until @s has an event of @type; fails the test after WAIT_MS. */
struct ps_tp_event expect_ev(struct side *s, struct side *other, enum ps_tp_ev_type type);
/* Poll both sides for @ms. */
void pump(struct side *a, struct side *b, int ms);
/*
 * ps_tp_connect() from @cli to 127.0.0.1:@port with user CLI_USER. It blocks through the
 * handshake, which needs the accepting loop polled: it runs on a helper thread (which owns
 * @cli's loop for that call only, joined before returning) while this thread polls @srv.
 */
int connect_async(struct side *cli, struct side *srv, uint16_t port, struct ps_tp_conn **out);
/* Two sides, a listener on 127.0.0.1, one connection accepted; and its teardown. */
void pair_open(struct pair *p, const struct ps_tp_loop_opts *so, const struct ps_tp_loop_opts *co);
void pair_close(struct pair *p);

void fill(uint8_t *p, size_t len, uint32_t seed);
bool all_bytes(const uint8_t *p, size_t len, uint8_t v);

/* @len zeroed bytes between guards, registered on @dev; guards checked; deregistered. */
void region_reg(struct ps_tp_dev *dev, struct region *r, size_t len);
void region_check_guards(const struct region *r);
void region_free(struct region *r);

/* A 4-byte message, no ctx. */
int send_u32(struct ps_tp_conn *c, uint32_t *v);

/* Raw wire: little-endian read; a hello; a frame header (reserved fields 0). */
uint32_t rd32(const uint8_t *p);
void raw_hello(uint8_t *b, uint32_t magic, uint16_t version, uint32_t depth, uint32_t msg_size);
void raw_hdr(uint8_t *b, uint8_t op, uint32_t len, uint32_t imm, uint32_t credits, uint64_t raddr,
	     uint32_t rkey);
/* A plain nonblocking socket connected to 127.0.0.1:@port. */
int raw_connect(uint16_t port);
/* raw_connect(), then the server's hello into @hello (16 bytes) while its loop runs. */
int raw_open(uint16_t port, struct side *srv, uint8_t *hello);
void raw_send(int fd, const void *buf, size_t len);
/* Read exactly @len bytes while the server loop runs. */
void raw_recv(int fd, struct side *srv, uint8_t *buf, size_t len);
/* True once the server closed the socket (EOF or reset), false after @ms. */
bool raw_closed(int fd, struct side *srv, int ms);

#endif
