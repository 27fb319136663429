/*
 * The verbs shim: every call psplus makes into libibverbs and librdmacm, and the conversion of
 * their error conventions into 0 or a negative errno. See verbs_shim.h for the why; the unit
 * tests link tests/unit/fake_verbs in place of this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "transport/rdma/verbs_shim.h"

/* Largest errno value; anything more negative is not an errno (see ret_err()). */
#define MAX_ERRNO 4095

/*
 * For calls that report failure with NULL or -1 and errno. A few library paths fail without
 * setting errno (callers clear it first); report -EIO rather than a success.
 */
static int errno_err(void)
{
	return errno > 0 && errno <= MAX_ERRNO ? -errno : -EIO;
}

/*
 * For calls documented to return 0 or a positive errno (ibv_post_*, ibv_query_*, ibv_destroy_*,
 * ...). Providers do not all follow it: rxe's post_send returns -EINVAL/-ENOMEM for a bad or
 * overflowing request, and some return -1 with errno. Accept all three. Callers clear errno
 * first, so that the -1 case never picks up a stale value.
 */
static int ret_err(int ret)
{
	if (ret == 0)
		return 0;
	if (ret > 0)
		return ret <= MAX_ERRNO ? -ret : -EIO;
	if (ret == -1)
		return errno_err();
	return ret >= -MAX_ERRNO ? ret : -EIO;
}

/* The deadline for a wait of @timeout_ms (negative: forever, as UINT64_MAX). */
static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : ps_clock_deadline_ms((uint64_t)timeout_ms);
}

/*
 * Wait until @fd is readable or @deadline passes. Readability (or an error condition on the fd)
 * only says "try the non-blocking read again": the read itself reports the outcome.
 */
static int fd_wait_readable(int fd, uint64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int ms, n;

	for (;;) {
		ms = deadline == UINT64_MAX ? -1 : ps_clock_remaining_ms(deadline);
		if (ms == 0)
			return PS_ETIMEOUT;
		n = poll(&pfd, 1, ms);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
		/* n == 0: poll may return up to 1 ms early; the loop re-checks the deadline. */
	}
}

/*
 * The waiting calls below read from an fd that the shim keeps non-blocking (it creates the
 * channels that way), so that a read after a spurious or stolen wake-up returns EAGAIN instead of
 * blocking past the caller's timeout.
 */
static int fd_set_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -errno;
	if (flags & O_NONBLOCK)
		return 0;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
}

static int is_again(int err)
{
	return err == -EAGAIN || err == -EWOULDBLOCK || err == -EINTR;
}

/* ---- devices -------------------------------------------------------------------------------- */

int ps_vshim_device_list_get(struct ibv_device ***list_out, int *num_out)
{
	struct ibv_device **list;
	int num = 0;

	errno = 0;
	list = ibv_get_device_list(&num);
	if (!list)
		return errno_err(); /* ENOSYS: no uverbs in this kernel */
	*list_out = list;
	*num_out = num;
	return 0;
}

void ps_vshim_device_list_free(struct ibv_device **list)
{
	if (list)
		ibv_free_device_list(list);
}

const char *ps_vshim_device_name(struct ibv_device *dev)
{
	const char *name = dev ? ibv_get_device_name(dev) : NULL;

	return name ? name : "(none)";
}

int ps_vshim_device_open(struct ibv_device *dev, struct ibv_context **ctx_out)
{
	struct ibv_context *ctx;

	errno = 0;
	ctx = ibv_open_device(dev);
	if (!ctx)
		return errno_err();
	*ctx_out = ctx;
	return 0;
}

int ps_vshim_device_close(struct ibv_context *ctx)
{
	if (!ctx)
		return 0;
	errno = 0;
	return ret_err(ibv_close_device(ctx));
}

int ps_vshim_device_query(struct ibv_context *ctx, struct ibv_device_attr *attr)
{
	errno = 0;
	return ret_err(ibv_query_device(ctx, attr));
}

int ps_vshim_port_query(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	errno = 0;
	return ret_err(ibv_query_port(ctx, port, attr));
}

int ps_vshim_gid_query(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid)
{
	/* Returns -1 on failure, with errno set on some paths only (hence errno = 0 first). */
	errno = 0;
	return ibv_query_gid(ctx, port, index, gid) ? errno_err() : 0;
}

int ps_vshim_async_event_get(struct ibv_context *ctx, int timeout_ms, struct ibv_async_event *ev)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int rc;

	rc = fd_set_nonblock(ctx->async_fd);
	if (rc)
		return rc;
	for (;;) {
		errno = 0;
		if (ibv_get_async_event(ctx, ev) == 0)
			return 0;
		rc = errno_err();
		if (!is_again(rc))
			return rc;
		rc = fd_wait_readable(ctx->async_fd, deadline);
		if (rc)
			return rc;
	}
}

void ps_vshim_async_event_ack(struct ibv_async_event *ev)
{
	ibv_ack_async_event(ev);
}

const char *ps_vshim_event_type_str(enum ibv_event_type type)
{
	const char *s = ibv_event_type_str(type);

	return s ? s : "unknown event";
}

/* ---- protection domains and memory regions ------------------------------------------------ */

int ps_vshim_pd_alloc(struct ibv_context *ctx, struct ibv_pd **pd_out)
{
	struct ibv_pd *pd;

	errno = 0;
	pd = ibv_alloc_pd(ctx);
	if (!pd)
		return errno_err();
	*pd_out = pd;
	return 0;
}

int ps_vshim_pd_dealloc(struct ibv_pd *pd)
{
	if (!pd)
		return 0;
	errno = 0;
	return ret_err(ibv_dealloc_pd(pd));
}

int ps_vshim_mr_reg(struct ibv_pd *pd, void *addr, size_t len, int access, struct ibv_mr **mr_out)
{
	struct ibv_mr *mr;

	errno = 0;
	mr = ibv_reg_mr(pd, addr, len, access);
	if (!mr)
		return errno_err();
	*mr_out = mr;
	return 0;
}

int ps_vshim_mr_dereg(struct ibv_mr *mr)
{
	if (!mr)
		return 0;
	errno = 0;
	return ret_err(ibv_dereg_mr(mr));
}

/* ---- completion queues ---------------------------------------------------------------------- */

int ps_vshim_comp_channel_create(struct ibv_context *ctx, struct ibv_comp_channel **ch_out)
{
	struct ibv_comp_channel *ch;
	int rc;

	errno = 0;
	ch = ibv_create_comp_channel(ctx);
	if (!ch)
		return errno_err();
	rc = fd_set_nonblock(ch->fd);
	if (rc) {
		ibv_destroy_comp_channel(ch);
		return rc;
	}
	*ch_out = ch;
	return 0;
}

int ps_vshim_comp_channel_destroy(struct ibv_comp_channel *ch)
{
	if (!ch)
		return 0;
	errno = 0;
	return ret_err(ibv_destroy_comp_channel(ch));
}

int ps_vshim_cq_create(struct ibv_context *ctx, int cqe, void *cq_context,
		       struct ibv_comp_channel *ch, int comp_vector, struct ibv_cq **cq_out)
{
	struct ibv_cq *cq;

	errno = 0;
	cq = ibv_create_cq(ctx, cqe, cq_context, ch, comp_vector);
	if (!cq)
		return errno_err();
	*cq_out = cq;
	return 0;
}

int ps_vshim_cq_destroy(struct ibv_cq *cq)
{
	if (!cq)
		return 0;
	errno = 0;
	return ret_err(ibv_destroy_cq(cq));
}

int ps_vshim_cq_poll(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	int got = ibv_poll_cq(cq, n, wc);

	/* Negative means failure, with no errno contract (mlx5 returns -2); say -EIO. */
	return got >= 0 ? got : -EIO;
}

int ps_vshim_cq_req_notify(struct ibv_cq *cq, int solicited_only)
{
	errno = 0;
	return ret_err(ibv_req_notify_cq(cq, solicited_only));
}

int ps_vshim_cq_event_get(struct ibv_comp_channel *ch, int timeout_ms, struct ibv_cq **cq_out,
			  void **cq_context_out)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int rc;

	for (;;) {
		errno = 0;
		if (ibv_get_cq_event(ch, cq_out, cq_context_out) == 0)
			return 0;
		rc = errno_err();
		if (!is_again(rc))
			return rc;
		rc = fd_wait_readable(ch->fd, deadline);
		if (rc)
			return rc;
	}
}

void ps_vshim_cq_event_ack(struct ibv_cq *cq, unsigned int nevents)
{
	ibv_ack_cq_events(cq, nevents);
}

const char *ps_vshim_wc_status_str(enum ibv_wc_status status)
{
	const char *s = ibv_wc_status_str(status);

	return s ? s : "unknown status";
}

/* ---- rdma_cm: channels, ids, addresses ---------------------------------------------------- */

int ps_vshim_cm_channel_create(struct rdma_event_channel **ch_out)
{
	struct rdma_event_channel *ch;
	int rc;

	errno = 0;
	ch = rdma_create_event_channel();
	if (!ch)
		return errno_err();
	rc = fd_set_nonblock(ch->fd);
	if (rc) {
		rdma_destroy_event_channel(ch);
		return rc;
	}
	*ch_out = ch;
	return 0;
}

void ps_vshim_cm_channel_destroy(struct rdma_event_channel *ch)
{
	if (ch)
		rdma_destroy_event_channel(ch);
}

int ps_vshim_cm_id_create(struct rdma_event_channel *ch, void *context, enum rdma_port_space ps,
			  struct rdma_cm_id **id_out)
{
	errno = 0;
	return rdma_create_id(ch, id_out, context, ps) ? errno_err() : 0;
}

int ps_vshim_cm_id_destroy(struct rdma_cm_id *id)
{
	if (!id)
		return 0;
	errno = 0;
	return rdma_destroy_id(id) ? errno_err() : 0;
}

int ps_vshim_cm_bind(struct rdma_cm_id *id, const struct sockaddr *addr)
{
	errno = 0;
	/* librdmacm does not modify the address; its prototype just lacks the const. */
	return rdma_bind_addr(id, (struct sockaddr *)addr) ? errno_err() : 0;
}

int ps_vshim_cm_listen(struct rdma_cm_id *id, int backlog)
{
	errno = 0;
	return rdma_listen(id, backlog) ? errno_err() : 0;
}

int ps_vshim_cm_resolve_addr(struct rdma_cm_id *id, const struct sockaddr *src,
			     const struct sockaddr *dst, int timeout_ms)
{
	errno = 0;
	return rdma_resolve_addr(id, (struct sockaddr *)src, (struct sockaddr *)dst, timeout_ms)
		       ? errno_err()
		       : 0;
}

int ps_vshim_cm_resolve_route(struct rdma_cm_id *id, int timeout_ms)
{
	errno = 0;
	return rdma_resolve_route(id, timeout_ms) ? errno_err() : 0;
}

uint16_t ps_vshim_cm_src_port(struct rdma_cm_id *id)
{
	return ntohs(rdma_get_src_port(id));
}

uint16_t ps_vshim_cm_dst_port(struct rdma_cm_id *id)
{
	return ntohs(rdma_get_dst_port(id));
}

/* ---- rdma_cm: events ------------------------------------------------------------------------- */

int ps_vshim_cm_event_get(struct rdma_event_channel *ch, int timeout_ms,
			  struct rdma_cm_event **ev_out)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int rc;

	for (;;) {
		errno = 0;
		if (rdma_get_cm_event(ch, ev_out) == 0)
			return 0;
		rc = errno_err();
		if (!is_again(rc))
			return rc;
		rc = fd_wait_readable(ch->fd, deadline);
		if (rc)
			return rc;
	}
}

int ps_vshim_cm_event_ack(struct rdma_cm_event *ev)
{
	errno = 0;
	return rdma_ack_cm_event(ev) ? errno_err() : 0;
}

const char *ps_vshim_cm_event_str(enum rdma_cm_event_type type)
{
	const char *s = rdma_event_str(type);

	return s ? s : "unknown cm event";
}

/* ---- queue pairs and connections ------------------------------------------------------------- */

int ps_vshim_qp_create(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	errno = 0;
	return rdma_create_qp(id, pd, attr) ? errno_err() : 0;
}

void ps_vshim_qp_destroy(struct rdma_cm_id *id)
{
	if (id && id->qp)
		rdma_destroy_qp(id);
}

int ps_vshim_qp_modify(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask)
{
	errno = 0;
	return ret_err(ibv_modify_qp(qp, attr, attr_mask));
}

int ps_vshim_qp_query(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask,
		      struct ibv_qp_init_attr *init_attr)
{
	errno = 0;
	return ret_err(ibv_query_qp(qp, attr, attr_mask, init_attr));
}

int ps_vshim_cm_connect(struct rdma_cm_id *id, struct rdma_conn_param *param)
{
	errno = 0;
	return rdma_connect(id, param) ? errno_err() : 0;
}

int ps_vshim_cm_accept(struct rdma_cm_id *id, struct rdma_conn_param *param)
{
	errno = 0;
	return rdma_accept(id, param) ? errno_err() : 0;
}

int ps_vshim_cm_reject(struct rdma_cm_id *id, const void *private_data, uint8_t len)
{
	errno = 0;
	return rdma_reject(id, private_data, len) ? errno_err() : 0;
}

int ps_vshim_cm_disconnect(struct rdma_cm_id *id)
{
	errno = 0;
	return rdma_disconnect(id) ? errno_err() : 0;
}

/* ---- data path ------------------------------------------------------------------------------- */

int ps_vshim_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr_out)
{
	struct ibv_send_wr *bad = NULL;
	int rc;

	errno = 0;
	rc = ret_err(ibv_post_send(qp, wr, &bad));
	if (bad_wr_out)
		*bad_wr_out = bad;
	return rc;
}

int ps_vshim_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr_out)
{
	struct ibv_recv_wr *bad = NULL;
	int rc;

	errno = 0;
	rc = ret_err(ibv_post_recv(qp, wr, &bad));
	if (bad_wr_out)
		*bad_wr_out = bad;
	return rc;
}
