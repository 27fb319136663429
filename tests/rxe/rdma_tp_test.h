/*
 * Shared by the source files of test_rdma_transport (what it checks: test_rdma_transport.c):
 * the addresses, byte and time helpers, a loop driven by the test thread ("side") with bounded
 * waits on its events, and the state of part 1 (one connection) and of part 2's servers.
 *
 * Files: test_rdma_transport.c (main), rdma_tp_test.c (these helpers), and one per test group:
 * test_rdma_transport_basic.c (part 1 set-up, dev_query, connect errors, write_imm, batching),
 * test_rdma_transport_gather.c (256-element gathers, unregistered memory),
 * test_rdma_transport_fail.c (credits, close, broken connections),
 * test_rdma_transport_multi.c (part 2: 8 clients x 2 servers, a server killed).
 */
#ifndef PS_TESTS_RXE_RDMA_TP_TEST_H
#define PS_TESTS_RXE_RDMA_TP_TEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tests/rxe/rxe_test.h"
#include "transport/transport.h"

#define TPT_STEP_TIMEOUT_MS 20000 /* one step of part 1 (TCG: connection set-up takes ~1 s) */
#define TPT_EVQ		    1024

/* The listen addresses: $PS_RXE0_ADDR (192.0.2.1, rxe0) and $PS_RXE1_ADDR (192.0.2.2, rxe1). */
extern const char *tpt_addr0, *tpt_addr1;

/* ---- little helpers ------------------------------------------------------------------------ */

/* Little-endian integers in messages. */
void tpt_put32(uint8_t *p, uint32_t v);
uint32_t tpt_get32(const uint8_t *p);
void tpt_put64(uint8_t *p, uint64_t v);
uint64_t tpt_get64(const uint8_t *p);

/** tpt_map() - @len bytes of private anonymous memory (page-aligned), or NULL. */
void *tpt_map(size_t len);

/** tpt_ms_since() - milliseconds since @t0 (ps_clock_now_ns()). */
double tpt_ms_since(uint64_t t0);

/** tpt_ev_name() - the name of event type @t ("ACCEPT", ...; "?" if unknown). */
const char *tpt_ev_name(int t);

/** tpt_gather_copy() - build the expected bytes of a gather list in @out; returns its length. */
size_t tpt_gather_copy(const struct ps_tp_sge *sgl, int n, uint8_t *out);

/* ---- part 1: two loops driven by one thread ------------------------------------------------ */

/* A loop and the events it produced that no step has taken yet. */
struct tpt_side {
	struct ps_tp_loop *loop;
	struct ps_tp_event q[TPT_EVQ];
	int nq;
};

/** tpt_side_pump() - poll @s's loop once (up to @timeout_ms), queueing the events; n or -errno. */
int tpt_side_pump(struct tpt_side *s, int timeout_ms);

/** tpt_wait_ev() - take the first event of @type from @s, waiting for it, keeping @other moving. */
int tpt_wait_ev(struct tpt_side *s, struct tpt_side *other, enum ps_tp_ev_type type, int timeout_ms,
		struct ps_tp_event *out);

/** tpt_side_find() - index of the first queued event of @type, or -1. */
int tpt_side_find(const struct tpt_side *s, enum ps_tp_ev_type type);

/** tpt_wait_queued() - wait until an event of @type is queued on @s (not taken). */
int tpt_wait_queued(struct tpt_side *s, struct tpt_side *other, enum ps_tp_ev_type type,
		    int timeout_ms);

/** tpt_side_count() - count (and drop) the queued events of @type. */
int tpt_side_count(struct tpt_side *s, enum ps_tp_ev_type type);

/**
 * tpt_pair_connect() - connect @cli to @srv's listener at @host:@port; both loops stay this
 * thread's. Checks and reports the connect; 0 or its error.
 */
int tpt_pair_connect(struct rxe_check *chk, struct tpt_side *cli, struct tpt_side *srv,
		     const char *host, uint16_t port, struct ps_tp_conn **cconn,
		     struct ps_tp_conn **sconn);

/* Part 1's state: one device per end on rxe1's address, one connection between two loops. */
struct tpt_part1 {
	struct rxe_check chk;
	struct ps_tp_dev *cdev, *sdev;
	struct tpt_side cli, srv;
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

/** tpt_part1_run() - part 1 (test_rdma_transport_basic.c); returns the failed checks. */
int tpt_part1_run(void);

/* The test groups of part 1 on its connection (test_rdma_transport_gather.c, _fail.c). */
void tpt_check_256(struct tpt_part1 *p);
void tpt_check_unregistered(struct tpt_part1 *p);
void tpt_check_credits(struct tpt_part1 *p);
void tpt_check_peer_lost(struct tpt_part1 *p);

/* ---- part 2: servers and clients (test_rdma_transport_multi.c) ------------------------------ */

/* What a server reports; for the forked one in MAP_SHARED memory. */
struct tpt_srv_report {
	atomic_int ready;
	atomic_int stop;
	atomic_ushort port;
	atomic_ulong accepted, msgs_ok, msgs_bad, replies, closed, errors;
};

/**
 * tpt_server_run() - one server: a loop listening on @addr that replies to each request, until
 * r->stop; reports in @r (r->ready: 1 listening, -1 set-up failed). @role prefixes its lines.
 */
void tpt_server_run(const char *addr, struct tpt_srv_report *r, const char *role);

/**
 * tpt_part2_run() - part 2 against server A (process @pid_a, reporting in @ra, shared memory)
 * and server B (a thread it starts); kills server A. Returns the failed checks.
 */
int tpt_part2_run(pid_t pid_a, struct tpt_srv_report *ra);

#endif
