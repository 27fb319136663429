/*
 * The verbs shim: the only code in psplus that calls libibverbs (ibv_*) or librdmacm (rdma_*).
 *
 * Why a shim:
 *  - One place converts the libraries' three error conventions into psplus's single one (0 or a
 *    negative errno):
 *      a) pointer-returning calls (ibv_open_device, ibv_alloc_pd, ibv_reg_mr, ibv_create_cq,
 *         rdma_create_event_channel, ...) return NULL and set errno;
 *      b) librdmacm calls (rdma_create_id, rdma_bind_addr, rdma_connect, rdma_get_cm_event, ...)
 *         and ibv_get_cq_event/ibv_query_gid return -1 and set errno (ibv_query_gid may not set
 *         it at all);
 *      c) ibv_post_send/ibv_post_recv, ibv_query_device/ibv_query_port/ibv_query_qp,
 *         ibv_modify_qp, ibv_req_notify_cq and the ibv destroy, dealloc and dereg calls return a
 *         positive errno (a few providers return -1 + errno or a negative errno instead).
 *    Every ps_vshim_* function returns 0 (or a count, where documented) or a negative errno;
 *    when a library reports failure without saying why, the shim reports -EIO, never success.
 *  - Unit tests link a fake verbs layer (tests/unit/fake_verbs) that implements these same
 *    functions with in-memory PDs, MRs, CQs and QP pairs, instead of this file. So the API is
 *    expressed in the libraries' own structs (struct ibv_pd, struct ibv_send_wr, struct
 *    rdma_cm_event, ...): callers build work requests exactly as they would for libibverbs, and
 *    the fake fills the same structs. Callers may read the public fields of these structs
 *    (id->verbs, id->qp, mr->lkey, cq->channel, ...) but must not call ibv_* / rdma_* themselves,
 *    not even the static inline ones of <infiniband/verbs.h>.
 *
 * Waits: the functions that wait (cm events, completion events, async events) take a timeout in
 * milliseconds (-1: wait forever, 0: do not block) and return PS_ETIMEOUT when it expires. That
 * is a psplus code on purpose: -ETIMEDOUT stays free to mean what the network reports (e.g. a
 * route that could not be resolved, a peer that stopped answering).
 *
 * The data-path calls (ps_vshim_post_send, ps_vshim_post_recv, ps_vshim_cq_poll) are plain
 * out-of-line wrappers: one extra direct call per doorbell or per batch of completions, which is
 * noise next to the provider's own work, and what lets the fake replace them at link time.
 *
 * Thread-safety: the same as the underlying call (libibverbs objects may be used from several
 * threads; one thread should own a given QP's send queue or a given CQ, as psplus's shared-nothing
 * data-path threads do). Nothing here keeps global state.
 *
 * Ownership: the shim never frees what it did not create; each create/alloc/reg has a
 * destroy/dealloc/dereg that accepts NULL (returns 0) so that goto-unwind ladders can call them
 * unconditionally.
 */
#ifndef PS_TRANSPORT_RDMA_VERBS_SHIM_H
#define PS_TRANSPORT_RDMA_VERBS_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

/* ---- devices -------------------------------------------------------------------------------- */

/**
 * ps_vshim_device_list_get() - the RDMA devices of this host.
 * @list_out: on success the NULL-terminated list (free with ps_vshim_device_list_free()).
 * @num_out: on success the number of devices (may be 0: an empty list is not an error).
 *
 * Returns 0, -ENOSYS when the kernel has no RDMA support at all (no uverbs: the usual case on a
 * machine without RDMA), or another negative errno. Callers looking for "is there a device?"
 * treat -ENOSYS like an empty list.
 */
int ps_vshim_device_list_get(struct ibv_device ***list_out, int *num_out);

/** ps_vshim_device_list_free() - free a list from ps_vshim_device_list_get(); NULL is fine. */
void ps_vshim_device_list_free(struct ibv_device **list);

/** ps_vshim_device_name() - the kernel name of a device ("rxe0", "mlx5_0"); never NULL. */
const char *ps_vshim_device_name(struct ibv_device *dev);

/**
 * ps_vshim_device_open() - open a device for verbs.
 * @ctx_out: the context; close it with ps_vshim_device_close() after everything made on it.
 *
 * Contexts owned by rdma_cm (id->verbs) are not opened here and must not be closed here.
 */
int ps_vshim_device_open(struct ibv_device *dev, struct ibv_context **ctx_out);

/** ps_vshim_device_close() - close a context from ps_vshim_device_open(); NULL is fine. */
int ps_vshim_device_close(struct ibv_context *ctx);

/** ps_vshim_device_query() - device limits (max_sge, max_qp_wr, max_cqe, max_mr_size, ...). */
int ps_vshim_device_query(struct ibv_context *ctx, struct ibv_device_attr *attr);

/**
 * ps_vshim_port_query() - port attributes: state (IBV_PORT_ACTIVE when usable), active_mtu,
 * max_mtu, link_layer (IBV_LINK_LAYER_ETHERNET for RoCE), gid_tbl_len, ... @port counts from 1.
 */
int ps_vshim_port_query(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);

/**
 * ps_vshim_gid_query() - GID table entry @index of @port.
 *
 * An unused entry reads as all zeroes (returns 0). For RoCE, the entries are derived from the
 * netdev's addresses (an IPv4 address a.b.c.d appears as ::ffff:a.b.c.d).
 */
int ps_vshim_gid_query(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid);

/** ps_vshim_mtu_bytes() - an enum ibv_mtu in bytes (IBV_MTU_1024 -> 1024); 0 if invalid. */
static inline unsigned int ps_vshim_mtu_bytes(enum ibv_mtu mtu)
{
	return mtu >= IBV_MTU_256 && mtu <= IBV_MTU_4096 ? 128u << mtu : 0;
}

/**
 * ps_vshim_async_event_get() - the next asynchronous event of a device (port up/down, QP fatal,
 * CQ error, ...), waiting up to @timeout_ms.
 *
 * Returns 0 and fills @ev (acknowledge it with ps_vshim_async_event_ack() before destroying the
 * object it names), PS_ETIMEOUT, or a negative errno. Switches ctx->async_fd to non-blocking on
 * first use, so that a wait can never outlive its timeout; one reader per context.
 */
int ps_vshim_async_event_get(struct ibv_context *ctx, int timeout_ms, struct ibv_async_event *ev);

/** ps_vshim_async_event_ack() - acknowledge an event from ps_vshim_async_event_get(). */
void ps_vshim_async_event_ack(struct ibv_async_event *ev);

/** ps_vshim_event_type_str() - the name of an asynchronous event type; never NULL. */
const char *ps_vshim_event_type_str(enum ibv_event_type type);

/* ---- protection domains and memory regions ------------------------------------------------ */

/** ps_vshim_pd_alloc() - allocate a protection domain on @ctx. */
int ps_vshim_pd_alloc(struct ibv_context *ctx, struct ibv_pd **pd_out);

/** ps_vshim_pd_dealloc() - free a PD; -EBUSY while MRs or QPs still use it. NULL is fine. */
int ps_vshim_pd_dealloc(struct ibv_pd *pd);

/**
 * ps_vshim_mr_reg() - register [@addr, @addr + @len) for access @access (IBV_ACCESS_* flags;
 * remote write/read need IBV_ACCESS_LOCAL_WRITE too).
 *
 * The memory is pinned: it must stay allocated and must not move until deregistered. Fails with
 * -ENOMEM or -EPERM when RLIMIT_MEMLOCK is too small for @len. Not for the hot path: registration
 * is a system call and page pinning.
 */
int ps_vshim_mr_reg(struct ibv_pd *pd, void *addr, size_t len, int access, struct ibv_mr **mr_out);

/** ps_vshim_mr_dereg() - deregister (unpin) an MR. NULL is fine. */
int ps_vshim_mr_dereg(struct ibv_mr *mr);

/* ---- completion queues ---------------------------------------------------------------------- */

/**
 * ps_vshim_comp_channel_create() - a completion channel: a file descriptor (ch->fd) that becomes
 * readable when an armed CQ gets a completion. Created non-blocking, for poll/epoll loops.
 */
int ps_vshim_comp_channel_create(struct ibv_context *ctx, struct ibv_comp_channel **ch_out);

/** ps_vshim_comp_channel_destroy() - -EBUSY while a CQ still uses it. NULL is fine. */
int ps_vshim_comp_channel_destroy(struct ibv_comp_channel *ch);

/**
 * ps_vshim_cq_create() - a completion queue of at least @cqe entries.
 * @cq_context: returned by ps_vshim_cq_event_get() (borrowed).
 * @ch: a completion channel, or NULL for a CQ that is only polled.
 * @comp_vector: the interrupt vector (0 .. ctx->num_comp_vectors - 1).
 *
 * The provider may round @cqe up; cq->cqe holds the actual size.
 */
int ps_vshim_cq_create(struct ibv_context *ctx, int cqe, void *cq_context,
		       struct ibv_comp_channel *ch, int comp_vector, struct ibv_cq **cq_out);

/**
 * ps_vshim_cq_destroy() - destroy a CQ. Destroy the QPs that use it first, and acknowledge all
 * its completion events (ps_vshim_cq_event_ack()), or the library waits for them. NULL is fine.
 */
int ps_vshim_cq_destroy(struct ibv_cq *cq);

/**
 * ps_vshim_cq_poll() - take up to @n completions from @cq into @wc.
 *
 * Returns the number taken (0 .. @n) or a negative errno (-EIO when the provider gives no
 * reason). Never blocks. Each wc's status must be checked: at teardown, work requests still
 * posted complete with IBV_WC_WR_FLUSH_ERR, which is a drain, not a failure.
 */
int ps_vshim_cq_poll(struct ibv_cq *cq, int n, struct ibv_wc *wc);

/**
 * ps_vshim_cq_req_notify() - arm @cq: the next completion (the next solicited one if
 * @solicited_only) raises one event on its channel. Poll once more after arming, or a completion
 * that arrived in between waits for the next one.
 */
int ps_vshim_cq_req_notify(struct ibv_cq *cq, int solicited_only);

/**
 * ps_vshim_cq_event_get() - wait up to @timeout_ms for an event on @ch.
 * @cq_out, @cq_context_out: the CQ that fired and its context.
 *
 * Returns 0, PS_ETIMEOUT or a negative errno. Each event must be acknowledged
 * (ps_vshim_cq_event_ack(), may be batched) before the CQ is destroyed.
 */
int ps_vshim_cq_event_get(struct ibv_comp_channel *ch, int timeout_ms, struct ibv_cq **cq_out,
			  void **cq_context_out);

/** ps_vshim_cq_event_ack() - acknowledge @nevents events of @cq. */
void ps_vshim_cq_event_ack(struct ibv_cq *cq, unsigned int nevents);

/** ps_vshim_wc_status_str() - the text of a completion status; never NULL. */
const char *ps_vshim_wc_status_str(enum ibv_wc_status status);

/* ---- rdma_cm: channels, ids, addresses ---------------------------------------------------- */

/**
 * ps_vshim_cm_channel_create() - an rdma_cm event channel (ch->fd), created non-blocking so that
 * ps_vshim_cm_event_get() can honour its timeout and the fd can join a poll/epoll loop.
 */
int ps_vshim_cm_channel_create(struct rdma_event_channel **ch_out);

/** ps_vshim_cm_channel_destroy() - destroy a channel after all its ids. NULL is fine. */
void ps_vshim_cm_channel_destroy(struct rdma_event_channel *ch);

/**
 * ps_vshim_cm_id_create() - an rdma_cm id (the connection-manager side of one endpoint) whose
 * events go to @ch.
 * @context: stored in id->context (borrowed).
 * @ps: RDMA_PS_TCP for reliable connected (RC) QPs.
 */
int ps_vshim_cm_id_create(struct rdma_event_channel *ch, void *context, enum rdma_port_space ps,
			  struct rdma_cm_id **id_out);

/**
 * ps_vshim_cm_id_destroy() - destroy an id (destroy its QP first). Blocks until every event
 * reported for it has been acknowledged: ack before destroying. NULL is fine.
 */
int ps_vshim_cm_id_destroy(struct rdma_cm_id *id);

/**
 * ps_vshim_cm_bind() - bind @id to a local address (and port; port 0 picks a free one, see
 * ps_vshim_cm_src_port()).
 *
 * When the address belongs to an RDMA device, id->verbs and id->port_num are set afterwards: this
 * is how a server finds the device that owns its listen address. id->verbs stays NULL for a
 * wildcard address or one on a netdev without an RDMA device.
 */
int ps_vshim_cm_bind(struct rdma_cm_id *id, const struct sockaddr *addr);

/** ps_vshim_cm_listen() - start listening on a bound id; requests arrive as events. */
int ps_vshim_cm_listen(struct rdma_cm_id *id, int backlog);

/**
 * ps_vshim_cm_resolve_addr() - start resolving @dst (and choosing the local device); completes
 * with RDMA_CM_EVENT_ADDR_RESOLVED or RDMA_CM_EVENT_ADDR_ERROR within about @timeout_ms.
 * @src: a local address to bind to, or NULL to let routing choose.
 */
int ps_vshim_cm_resolve_addr(struct rdma_cm_id *id, const struct sockaddr *src,
			     const struct sockaddr *dst, int timeout_ms);

/**
 * ps_vshim_cm_resolve_route() - start resolving the route; completes with
 * RDMA_CM_EVENT_ROUTE_RESOLVED or RDMA_CM_EVENT_ROUTE_ERROR within about @timeout_ms.
 */
int ps_vshim_cm_resolve_route(struct rdma_cm_id *id, int timeout_ms);

/** ps_vshim_cm_src_port() - the local port of @id in host byte order (0 if unbound). */
uint16_t ps_vshim_cm_src_port(struct rdma_cm_id *id);

/** ps_vshim_cm_dst_port() - the peer's port of @id in host byte order. */
uint16_t ps_vshim_cm_dst_port(struct rdma_cm_id *id);

/* ---- rdma_cm: events ------------------------------------------------------------------------- */

/**
 * ps_vshim_cm_event_get() - the next event on @ch, waiting up to @timeout_ms.
 *
 * Returns 0 and sets *@ev_out, PS_ETIMEOUT, or a negative errno. The event (and the private data
 * it points to) stays valid until ps_vshim_cm_event_ack(); for RDMA_CM_EVENT_CONNECT_REQUEST,
 * (*ev_out)->id is the new id of the incoming connection and (*ev_out)->listen_id the listener.
 * Events of several ids may share a channel; one reader per channel.
 */
int ps_vshim_cm_event_get(struct rdma_event_channel *ch, int timeout_ms,
			  struct rdma_cm_event **ev_out);

/** ps_vshim_cm_event_ack() - release an event; every event must be acknowledged exactly once. */
int ps_vshim_cm_event_ack(struct rdma_cm_event *ev);

/** ps_vshim_cm_event_str() - the name of an event type ("RDMA_CM_EVENT_ESTABLISHED"). */
const char *ps_vshim_cm_event_str(enum rdma_cm_event_type type);

/* ---- queue pairs and connections ------------------------------------------------------------- */

/**
 * ps_vshim_qp_create() - create the QP of @id on @pd (which must be on id->verbs).
 * @attr: in: qp_type (IBV_QPT_RC), send_cq/recv_cq, cap, sq_sig_all; out: attr->cap holds what
 *        the device actually granted (which may exceed the request).
 *
 * The QP is then id->qp; rdma_cm moves it through INIT/RTR/RTS as the connection is set up, so
 * receives may be posted as soon as this returns (and should be, before accepting or connecting,
 * so that the peer's first SEND finds a buffer).
 */
int ps_vshim_qp_create(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr);

/** ps_vshim_qp_destroy() - destroy the QP of @id (no-op if it has none). */
void ps_vshim_qp_destroy(struct rdma_cm_id *id);

/**
 * ps_vshim_qp_modify() - ibv_modify_qp(). Moving a QP to IBV_QPS_ERR flushes its outstanding
 * work requests (IBV_WC_WR_FLUSH_ERR), which is how a connection is drained when no peer will
 * answer a disconnect.
 */
int ps_vshim_qp_modify(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask);

/** ps_vshim_qp_query() - current QP attributes (state, path MTU, ...) for @attr_mask. */
int ps_vshim_qp_query(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask,
		      struct ibv_qp_init_attr *init_attr);

/**
 * ps_vshim_cm_connect() - start connecting a route-resolved @id (with a QP); completes with
 * RDMA_CM_EVENT_ESTABLISHED (or CONNECT_ERROR / REJECTED / UNREACHABLE).
 * @param: responder_resources/initiator_depth (for RDMA READ), retry_count, rnr_retry_count and
 *         up to 56 bytes of private data for the peer.
 */
int ps_vshim_cm_connect(struct rdma_cm_id *id, struct rdma_conn_param *param);

/**
 * ps_vshim_cm_accept() - accept the connection of @id (from a CONNECT_REQUEST event) after
 * creating its QP; the passive side sees RDMA_CM_EVENT_ESTABLISHED next.
 * @param: as for ps_vshim_cm_connect(); up to 196 bytes of private data.
 */
int ps_vshim_cm_accept(struct rdma_cm_id *id, struct rdma_conn_param *param);

/** ps_vshim_cm_reject() - refuse the connection of @id, with optional private data. */
int ps_vshim_cm_reject(struct rdma_cm_id *id, const void *private_data, uint8_t len);

/**
 * ps_vshim_cm_disconnect() - disconnect @id: its QP goes to the error state (outstanding work
 * requests flush) and both sides get RDMA_CM_EVENT_DISCONNECTED. Calling it on an id the peer has
 * already disconnected is fine.
 */
int ps_vshim_cm_disconnect(struct rdma_cm_id *id);

/* ---- data path ------------------------------------------------------------------------------- */

/**
 * ps_vshim_post_send() - post a chain of send-queue work requests (SEND, SEND_WITH_IMM,
 * RDMA_WRITE, RDMA_WRITE_WITH_IMM, RDMA_READ, ...) with one doorbell.
 * @bad_wr_out: NULL, or where to store, on failure, the first request that was not posted (those
 *              before it were posted and will complete).
 *
 * Returns 0 or a negative errno (-ENOMEM: send queue full, -EINVAL: a malformed request).
 */
int ps_vshim_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr_out);

/** ps_vshim_post_recv() - post a chain of receive buffers; as ps_vshim_post_send(). */
int ps_vshim_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr_out);

#endif
