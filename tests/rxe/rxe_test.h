/*
 * Helpers shared by the verbs test programs of the rxe guest tier (tests/rxe): check reporting,
 * byte patterns, hw_counters, addresses, the skip rule, and waits with timeouts on cm events and
 * completions. All verbs calls go through the verbs shim.
 *
 * Output: each check prints one line "[role] ok   ..." or "[role] FAIL ...". stdout should be
 * line-buffered (rxe_test_init()) so that lines of concurrent threads never mix.
 */
#ifndef PS_TESTS_RXE_RXE_TEST_H
#define PS_TESTS_RXE_RXE_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "transport/rdma/verbs_shim.h"

/* Exit status of a test that cannot run here (automake/ctest convention). */
#define RXE_EXIT_SKIP 77

/* Generous: under QEMU TCG, connection set-up and a 128 KiB transfer take up to seconds. */
#define RXE_CM_TIMEOUT_MS 30000
#define RXE_CQ_TIMEOUT_MS 30000

/* The checks of one role (thread) of a test. */
struct rxe_check {
	const char *role; /* "server", "client", ...: prefixes every line */
	int failures;	  /* failed checks so far */
};

/** rxe_test_init() - line-buffer stdout; call first in main(). */
void rxe_test_init(void);

/** rxe_check() - print an ok/FAIL line for @ok and count a failure. Returns @ok. */
bool rxe_check(struct rxe_check *c, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** rxe_failed() - report that @what failed with @rc (0/negative errno/PS_E*). Returns @rc. */
int rxe_failed(struct rxe_check *c, const char *what, int rc);

/** rxe_info() - print an informational line (not a check). */
void rxe_info(struct rxe_check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- data ------------------------------------------------------------------------------------ */

/** rxe_pattern_fill() - fill @p with the pattern of @seed (no short period, differs per seed). */
void rxe_pattern_fill(uint8_t *p, size_t len, uint32_t seed);

/** rxe_pattern_mismatch() - offset of the first byte off the pattern, or @len if none. */
size_t rxe_pattern_mismatch(const uint8_t *p, size_t len, uint32_t seed);

/* ---- environment ----------------------------------------------------------------------------- */

/** rxe_in_guest() - running inside the rxe guest (PS_IN_RXE_GUEST=1)? */
bool rxe_in_guest(void);

/**
 * rxe_device_present() - 0 if the host has an RDMA device; RXE_EXIT_SKIP (after printing why) if
 * not, outside the guest; 1 (a failed check) if not, inside the guest, where that is a bug of the
 * set-up rather than a reason to skip, or on an unexpected error.
 */
int rxe_device_present(struct rxe_check *c, const char *test_name);

/**
 * rxe_default_addr() - the address a test listens on by default: $PS_RXE1_ADDR, else
 * $PS_RXE0_ADDR, else 192.0.2.2 (rxe1 in the guest).
 */
const char *rxe_default_addr(void);

/** rxe_addr_parse() - a numeric IPv4/IPv6 address and a port (host order); -EINVAL if bad. */
int rxe_addr_parse(const char *s, uint16_t port, struct sockaddr_storage *out);

/** rxe_addr_set_port() - set the port (host order) of an AF_INET/AF_INET6 address. */
void rxe_addr_set_port(struct sockaddr_storage *ss, uint16_t port);

/* ---- hw_counters ----------------------------------------------------------------------------- */

struct rxe_pkt_counters {
	uint64_t sent; /* hw_counters/sent_pkts */
	uint64_t rcvd; /* hw_counters/rcvd_pkts */
};

/** rxe_counters_read() - packet counters of @dev port @port; -errno if unreadable. */
int rxe_counters_read(const char *dev, int port, struct rxe_pkt_counters *out);

/* ---- cm events ------------------------------------------------------------------------------- */

/**
 * rxe_cm_expect() - wait up to RXE_CM_TIMEOUT_MS for the next event on @ch and require @type.
 *
 * On success, *@out is the event, not yet acknowledged (its private data stays valid until
 * ps_vshim_cm_event_ack()). On failure the event, if any, is acknowledged already, and the
 * failure reported; returns -ECONNRESET if it was an unexpected RDMA_CM_EVENT_DISCONNECTED (the
 * caller then need not wait for one), -EPROTO for another unexpected event, or the wait's error.
 */
int rxe_cm_expect(struct rxe_check *c, struct rdma_event_channel *ch, enum rdma_cm_event_type type,
		  struct rdma_cm_event **out);

/** rxe_cm_expect_ack() - rxe_cm_expect() for an event whose contents are not needed. */
int rxe_cm_expect_ack(struct rxe_check *c, struct rdma_event_channel *ch,
		      enum rdma_cm_event_type type);

/* ---- completions ----------------------------------------------------------------------------- */

/* A CQ and how to wait on it. */
struct rxe_cq {
	struct ibv_cq *cq;	     /* owned by the test */
	struct ibv_comp_channel *ch; /* NULL: busy-poll; else sleep on CQ events */
	bool armed;		     /* req_notify done since the last CQ event */
};

/**
 * rxe_cq_next() - the next completion of @q before @deadline (monotonic ns). Returns 0,
 * PS_ETIMEOUT or a negative errno. CQ events are acknowledged as they come.
 */
int rxe_cq_next(struct rxe_cq *q, struct ibv_wc *wc, uint64_t deadline);

/* One completion a test waits for. */
struct rxe_wc_expect {
	uint64_t wr_id;		   /* the request's tag */
	enum ibv_wc_opcode opcode; /* the opcode its completion must have */
	uint32_t byte_len;	   /* UINT32_MAX: not defined for this opcode, not checked */
	struct ibv_wc wc;	   /* out: the completion */
	bool seen;		   /* out */
};

/**
 * rxe_cq_expect() - collect one successful completion per entry of @exp, in any order (a QP's
 * send and receive queues complete independently), within RXE_CQ_TIMEOUT_MS; each must be on
 * @qp_num with the entry's opcode (and byte_len). Reports each as a check. Returns 0 or an error.
 */
int rxe_cq_expect(struct rxe_check *c, struct rxe_cq *q, uint32_t qp_num, struct rxe_wc_expect *exp,
		  size_t n);

#endif
