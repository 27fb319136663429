/*
 * The fake verbs layer: an in-process implementation of every ps_vshim_* function
 * (transport/rdma/verbs_shim.h) for unit tests, and the knobs tests turn to make it fail.
 *
 * Test programs built with ps_fake_unit_test() (tests/unit/CMakeLists.txt) link psplus_fake: all
 * of libpsplus except the shim, plus this layer. They include the rdma-core headers (the shim's
 * API is written in their structs) but link neither libibverbs nor librdmacm, so they run on any
 * machine, RDMA device or not.
 *
 * What is modelled (docs/transport.md, "Fake verbs layer", has the full list and the choices):
 *  - devices: by default one, "fake0", owning 192.0.2.1 and 127.0.0.1; port 1 ACTIVE, RoCE
 *    (Ethernet link layer), MTU 1024, max_sge 32, max_qp_wr 16384, max_cqe 32767, no inline data;
 *  - rdma_cm: event channels and completion channels with real file descriptors (eventfd), so
 *    poll()/epoll and the shim's timed waits work; bind/listen (port 0 picks one), address and
 *    route resolution, connect/accept/reject with private data (padded to the lengths IB CM
 *    carries: 56 bytes in a request, 196 in an accept, 148 in a reject), disconnect;
 *  - RC queue pairs: SEND, SEND_WITH_IMM, RDMA_WRITE, RDMA_WRITE_WITH_IMM and RDMA_READ performed
 *    with memcpy between the two ends' memory, with the checks a NIC makes (lkeys and bounds of
 *    gather/scatter lists, rkeys, bounds and access rights of remote ranges, receive buffer
 *    sizes), RNR, send queue depth, inline limits, CQ overflow, the error state and its flush.
 *
 * Work requests execute when posted (post_send runs the chain before returning; a SEND or
 * WRITE_WITH_IMM that finds no receive at the peer waits, if the connection's rnr_retry_count is
 * 7, until the peer posts one), unless fake_verbs_hold_sends() holds them.
 *
 * Thread-safety: every function, fake or shim, may be called from any thread; one global lock
 * serialises them (the waits sleep outside it).
 */
#ifndef PS_TESTS_UNIT_FAKE_VERBS_H
#define PS_TESTS_UNIT_FAKE_VERBS_H

#include <stdbool.h>
#include <stdint.h>

#include "transport/rdma/verbs_shim.h"

/*
 * The shim calls whose failure can be injected, as an X-macro: XX(ENUM_SUFFIX, "ps_vshim_name").
 * The void ones (list_free, cm_channel_destroy, qp_destroy, event acks) cannot fail.
 */
#define FAKE_VERBS_CALLS(XX)                                      \
	XX(DEVICE_LIST_GET, "ps_vshim_device_list_get")           \
	XX(DEVICE_OPEN, "ps_vshim_device_open")                   \
	XX(DEVICE_CLOSE, "ps_vshim_device_close")                 \
	XX(DEVICE_QUERY, "ps_vshim_device_query")                 \
	XX(PORT_QUERY, "ps_vshim_port_query")                     \
	XX(GID_QUERY, "ps_vshim_gid_query")                       \
	XX(ASYNC_EVENT_GET, "ps_vshim_async_event_get")           \
	XX(PD_ALLOC, "ps_vshim_pd_alloc")                         \
	XX(PD_DEALLOC, "ps_vshim_pd_dealloc")                     \
	XX(MR_REG, "ps_vshim_mr_reg")                             \
	XX(MR_DEREG, "ps_vshim_mr_dereg")                         \
	XX(COMP_CHANNEL_CREATE, "ps_vshim_comp_channel_create")   \
	XX(COMP_CHANNEL_DESTROY, "ps_vshim_comp_channel_destroy") \
	XX(CQ_CREATE, "ps_vshim_cq_create")                       \
	XX(CQ_DESTROY, "ps_vshim_cq_destroy")                     \
	XX(CQ_POLL, "ps_vshim_cq_poll")                           \
	XX(CQ_REQ_NOTIFY, "ps_vshim_cq_req_notify")               \
	XX(CQ_EVENT_GET, "ps_vshim_cq_event_get")                 \
	XX(CM_CHANNEL_CREATE, "ps_vshim_cm_channel_create")       \
	XX(CM_ID_CREATE, "ps_vshim_cm_id_create")                 \
	XX(CM_ID_DESTROY, "ps_vshim_cm_id_destroy")               \
	XX(CM_BIND, "ps_vshim_cm_bind")                           \
	XX(CM_LISTEN, "ps_vshim_cm_listen")                       \
	XX(CM_RESOLVE_ADDR, "ps_vshim_cm_resolve_addr")           \
	XX(CM_RESOLVE_ROUTE, "ps_vshim_cm_resolve_route")         \
	XX(CM_EVENT_GET, "ps_vshim_cm_event_get")                 \
	XX(CM_EVENT_ACK, "ps_vshim_cm_event_ack")                 \
	XX(QP_CREATE, "ps_vshim_qp_create")                       \
	XX(QP_MODIFY, "ps_vshim_qp_modify")                       \
	XX(QP_QUERY, "ps_vshim_qp_query")                         \
	XX(CM_CONNECT, "ps_vshim_cm_connect")                     \
	XX(CM_ACCEPT, "ps_vshim_cm_accept")                       \
	XX(CM_REJECT, "ps_vshim_cm_reject")                       \
	XX(CM_DISCONNECT, "ps_vshim_cm_disconnect")               \
	XX(POST_SEND, "ps_vshim_post_send")                       \
	XX(POST_RECV, "ps_vshim_post_recv")

enum fake_verbs_call {
#define FAKE_VERBS_CALL_ENUM(name, str) FAKE_VERBS_##name,
	FAKE_VERBS_CALLS(FAKE_VERBS_CALL_ENUM)
#undef FAKE_VERBS_CALL_ENUM
		FAKE_VERBS_NCALLS
};

/* IB CM reject reasons (RDMA_CM_EVENT_REJECTED's status), as the kernel's ib_cm reports them. */
#define FAKE_VERBS_REJ_INVALID_SERVICE_ID 8  /* nobody listens on that port */
#define FAKE_VERBS_REJ_CONSUMER_DEFINED	  28 /* the peer called rdma_reject() */

/** fake_verbs_call_name() - "ps_vshim_mr_reg" for FAKE_VERBS_MR_REG; never NULL. */
const char *fake_verbs_call_name(enum fake_verbs_call call);

/* ---- set-up ------------------------------------------------------------------------------- */

/**
 * fake_verbs_reset() - back to the defaults: frees every object still alive (a test that leaked
 * must not poison the next one), forgets pending injections, restores the default device and
 * capabilities, zeroes statistics and the misuse count.
 *
 * Returns the number of objects it had to free (0 after a clean test). Call it at the start of
 * each test, before any other thread uses the fake; pointers to freed objects become invalid.
 */
int fake_verbs_reset(void);

/**
 * fake_verbs_set_caps() - the default device's limits, for objects created afterwards: the
 * longest gather/scatter list (max_sge), inline bytes per send (max_inline; 0 = no inline), and
 * the deepest work queue (max_qp_wr). max_sge or max_qp_wr <= 0, or max_inline < 0, leaves that
 * limit unchanged.
 */
void fake_verbs_set_caps(int max_sge, int max_inline, int max_qp_wr);

/** fake_verbs_set_max_cqe() - the largest CQ the devices accept (default 32767). */
void fake_verbs_set_max_cqe(int max_cqe);

/**
 * fake_verbs_no_devices() - hide every device (or show them again). Hidden: the device list is
 * empty (ps_vshim_device_list_get() returns 0 with *num_out == 0, which is what libibverbs gives
 * on a kernel with RDMA support but no device; for a kernel without it, inject -ENOSYS with
 * fake_verbs_fail_next(FAKE_VERBS_DEVICE_LIST_GET, -ENOSYS, 1)), no address belongs to a device
 * (bind: -ENODEV; resolve: RDMA_CM_EVENT_ADDR_ERROR).
 */
void fake_verbs_no_devices(bool none);

/**
 * fake_verbs_add_device() - add a device named @name owning the IPv4 address @ipv4 (dotted
 * quad), with the current limits. Returns 0, -EEXIST (name or address taken), -EINVAL or
 * -ENOSPC (at most 4 devices).
 */
int fake_verbs_add_device(const char *name, const char *ipv4);

/**
 * fake_verbs_set_port_state() - the state port 1 of device @name reports (default
 * IBV_PORT_ACTIVE); a change raises IBV_EVENT_PORT_ERR or IBV_EVENT_PORT_ACTIVE on every context
 * of the device. Returns 0 or -ENODEV.
 */
int fake_verbs_set_port_state(const char *name, enum ibv_port_state state);

/**
 * fake_verbs_set_memlock() - a budget in bytes for the sum of registered lengths (like
 * RLIMIT_MEMLOCK); ps_vshim_mr_reg() beyond it fails with -ENOMEM. 0: no limit (the default).
 */
void fake_verbs_set_memlock(uint64_t bytes);

/* ---- injection ----------------------------------------------------------------------------- */

/**
 * fake_verbs_fail_next() - make the @nth next call (1: the very next) of @call return @err (a
 * negative errno or PS_E* code) without doing anything: no object is created or destroyed, no
 * work request is posted (*bad_wr is the first of the chain), no event is taken. One injection
 * per call; a new one replaces the old. @err == 0 cancels.
 */
void fake_verbs_fail_next(enum fake_verbs_call call, int err, unsigned int nth);

/**
 * fake_verbs_inject_wc_error() - the @nth send-queue work request executed from now on (on any
 * QP; 1: the next one) completes with @status instead of executing: nothing reaches the peer.
 * As on real devices, the QP then goes to the error state: the requests after it and every posted
 * receive complete with IBV_WC_WR_FLUSH_ERR. @status IBV_WC_WR_FLUSH_ERR itself models a QP that
 * went to error just before that request (it and everything after it flush).
 * Typical: IBV_WC_RETRY_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_REM_ACCESS_ERR.
 */
void fake_verbs_inject_wc_error(enum ibv_wc_status status, unsigned int nth);

/**
 * fake_verbs_cm_next_result() - the next asynchronous outcome of @call (FAKE_VERBS_CM_RESOLVE_ADDR,
 * _CM_RESOLVE_ROUTE or _CM_CONNECT) is the event @type with @status, e.g. (CM_RESOLVE_ADDR,
 * RDMA_CM_EVENT_ADDR_ERROR, -ETIMEDOUT), (CM_CONNECT, RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT),
 * (CM_CONNECT, RDMA_CM_EVENT_CONNECT_ERROR, -ECONNRESET). For CM_CONNECT the listener sees
 * nothing. Returns 0 or -EINVAL for another call.
 */
int fake_verbs_cm_next_result(enum fake_verbs_call call, enum rdma_cm_event_type type, int status);

/**
 * fake_verbs_reject_next_connect() - the next ps_vshim_cm_connect() ends in
 * RDMA_CM_EVENT_REJECTED with status FAKE_VERBS_REJ_CONSUMER_DEFINED (what a peer's rdma_reject()
 * gives), without the listener seeing the request.
 */
void fake_verbs_reject_next_connect(void);

/**
 * fake_verbs_kill_peer() - the peer of the connected @id vanishes (a crashed host, a cut cable):
 * its QP never answers again. On @id's side, as a real RC QP would see it: the first send-queue
 * request still outstanding or posted later completes with IBV_WC_RETRY_EXC_ERR, the QP goes to
 * the error state, and everything after it (and every posted receive) flushes with
 * IBV_WC_WR_FLUSH_ERR; RDMA_CM_EVENT_DISCONNECTED arrives on @id's channel. The peer's side gets
 * no event (it is gone); its objects stay for the test to destroy. Returns 0 or -ENOTCONN.
 */
int fake_verbs_kill_peer(struct rdma_cm_id *id);

/**
 * fake_verbs_hold_sends() - while held, posted send-queue requests stay outstanding (not
 * executed), so that tests can act on in-flight requests (kill the peer, disconnect, fill the
 * send queue). Releasing executes everything held, in order.
 */
void fake_verbs_hold_sends(bool hold);

/**
 * fake_verbs_inject_async_event() - queue an asynchronous event of @type on @ctx, for
 * ps_vshim_async_event_get(). @element: the QP, CQ, SRQ or port number the event names (cast to
 * the right type by the caller's switch on @type); NULL/0 for device events.
 */
void fake_verbs_inject_async_event(struct ibv_context *ctx, enum ibv_event_type type, void *element,
				   int port_num);

/* ---- observation --------------------------------------------------------------------------- */

/* Objects alive now; every field returns to 0 after a clean teardown. */
struct fake_verbs_counts {
	int device_lists; /* from ps_vshim_device_list_get() not yet freed */
	int contexts;	  /* opened with ps_vshim_device_open() (not rdma_cm's own) */
	int pds, mrs, comp_channels, cqs, qps;
	int cm_channels, cm_ids;
	int cm_events;	  /* delivered (taken by cm_event_get) and not yet acked */
	int cq_events;	  /* completion events taken and not yet acked */
	int async_events; /* async events taken and not yet acked */
	int misuse;	  /* API contract violations seen (see fake_verbs_last_misuse()) */
};

/**
 * fake_verbs_live_objects() - the counts, and their total (misuse included). Tests assert the
 * total is 0 after teardown.
 */
int fake_verbs_live_objects(struct fake_verbs_counts *out);

/**
 * fake_verbs_last_misuse() - the last contract violation the fake saw, as text ("" if none):
 * destroying a CQ with unacknowledged events or a QP still attached, destroying an id with
 * unacknowledged events or a QP, calling ibv_post_send()/ibv_poll_cq() inline functions instead of
 * the shim, acknowledging more events than were taken, ... Where libibverbs/librdmacm would
 * block forever or crash, the fake returns -EBUSY/-EINVAL and counts a misuse instead. Each misuse
 * is also printed on stderr.
 */
const char *fake_verbs_last_misuse(void);

/* What the data path did since the last reset. */
struct fake_verbs_stats {
	uint64_t post_send_calls; /* doorbells */
	uint64_t post_recv_calls;
	uint64_t send_wrs;	    /* send-queue work requests posted */
	uint64_t recv_wrs;	    /* receive work requests posted */
	uint64_t send_sges;	    /* gather elements of those (num_sge summed) */
	uint64_t inline_wrs;	    /* of send_wrs, with IBV_SEND_INLINE */
	uint64_t bytes_moved;	    /* payload bytes delivered by SEND/WRITE/READ */
	uint64_t completions;	    /* work completions generated */
	uint64_t error_completions; /* of those, status != IBV_WC_SUCCESS */
	uint64_t rnr_waits;	    /* times a request waited for the peer to post a receive */
	uint64_t cq_overflows;	    /* CQs that overflowed */
};

void fake_verbs_stats_get(struct fake_verbs_stats *out);

/** fake_verbs_qp_outstanding() - send-queue slots @qp holds (posted, not yet retired by a poll). */
int fake_verbs_qp_outstanding(struct ibv_qp *qp);

/** fake_verbs_qp_recvs_posted() - receives posted on @qp and not yet consumed or flushed. */
int fake_verbs_qp_recvs_posted(struct ibv_qp *qp);

#endif
