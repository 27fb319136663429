/*
 * rdma backend: connections. Their registered memory and QP, rdma_cm set-up both ways (connect
 * with a deadline over address resolution, route resolution and establishment; listen and
 * accept), the private data exchange, breaking (peer lost) and closing.
 *
 * Set-up order, both sides: memory and registration first (failing for memory must not leave
 * a half-open connection), then the QP, then every receive buffer posted (the peer may send as
 * soon as it is established), then rdma_connect/rdma_accept carrying our private data.
 *
 * Teardown (rping's order): disconnect (the QP goes to the error state, the peer gets
 * DISCONNECTED), destroy the QP, take the CQ's completions (the CQ is shared: completions of
 * this QP still in it would otherwise name freed memory later; those of this connection are
 * ignored, the flushes among them being the drain), destroy the id, free the memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/rdma/rdma_internal.h"

/* ---- state and counters ------------------------------------------------------------------- */

/* Every state change goes through here, so the loop's counters follow. */
static void set_state(struct rd_conn *c, enum rd_conn_state s)
{
	struct rd_loop *l = c->loop;

	if (c->state == RD_CONN_ACCEPTING)
		l->nhandshake--;
	if (c->state == RD_CONN_ACCEPTING || c->state == RD_CONN_CONNECTING)
		l->ncm_wait--;
	if (c->state == RD_CONN_OPEN && c->flushed)
		l->nflushing--;
	if (s == RD_CONN_ACCEPTING)
		l->nhandshake++;
	if (s == RD_CONN_ACCEPTING || s == RD_CONN_CONNECTING)
		l->ncm_wait++;
	c->state = s;
}

/* ---- memory --------------------------------------------------------------------------------- */

#define ALIGN_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))

/*
 * A connection with all its memory registered and its arrays built, not yet on the network.
 * The layout of the region is described at struct rd_conn.
 */
static int conn_alloc(struct rd_loop *l, struct rd_conn **out)
{
	const struct ps_tp_loop_opts *o = &l->base.opts;
	struct rd_dev *d = l->dev;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t off_src, off_trl, off_bounce, off_rx, total;
	struct rd_conn *c;
	int rc = -ENOMEM;

	if (l->nconns >= o->max_conns)
		return -ENOSPC;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cm_tag.type = RD_TAG_CONN;
	c->loop = l;
	c->base.loop = &l->base;
	snprintf(c->base.peer, sizeof(c->base.peer), "?");
	rd_list_init(&c->link);
	rd_list_init(&c->flush_link);
	rd_list_init(&c->starved_link);
	c->state = RD_CONN_RESOLVING;
	c->send_depth = o->send_depth;
	c->sq_depth = l->sq_depth;
	c->recv_depth = o->recv_depth;
	c->msg_size = o->msg_size;
	c->max_sge = d->max_sge;
	c->sq_mask = rd_pow2_at_least(c->sq_depth) - 1;
	c->op_mask = rd_pow2_at_least(c->send_depth) - 1;
	c->rx_stride = (uint32_t)ALIGN_UP(o->msg_size, 64);
	if (!(c->rx_stride & (c->rx_stride - 1)))
		c->rx_shift = (uint32_t)__builtin_ctz(c->rx_stride);
	/* Twice the largest message: a SEND's copies always fit while the previous one drains. */
	c->bounce_size =
		(uint32_t)ALIGN_UP(2ull * c->rx_stride > 4096 ? 2ull * c->rx_stride : 4096, 64);
	c->cq_need = c->sq_depth + c->recv_depth;
	if (l->cq_reserved + c->cq_need > l->cq_cap) {
		ps_log_warn(RD_LOG,
			    "CQ full (%u of %u entries promised): no room for another "
			    "connection",
			    l->cq_reserved, l->cq_cap);
		free(c);
		return -ENOSPC;
	}

	off_src = page;
	off_trl = off_src + 8ull * (c->sq_mask + 1ull);
	off_bounce = ALIGN_UP(off_trl + (uint64_t)RD_TRAILER_LEN * (c->op_mask + 1ull), 64);
	off_rx = ALIGN_UP(off_bounce + c->bounce_size, page);
	total = off_rx + (uint64_t)c->recv_depth * c->rx_stride;
	rc = ps_mem_alloc(total, d->alloc_node, 0, &c->mem);
	if (rc)
		goto err;
	c->credit_word = (uint64_t *)c->mem.addr;
	c->credit_src = (uint64_t *)((uint8_t *)c->mem.addr + off_src);
	c->trailers = (uint8_t *)c->mem.addr + off_trl;
	c->bounce = (uint8_t *)c->mem.addr + off_bounce;
	c->rxbuf = (uint8_t *)c->mem.addr + off_rx;
	/* Only the credit page is remote-writable: a peer cannot scribble over our buffers. */
	rc = ps_rdma_reg(d, c->mem.addr, page, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
			 &c->ctrl_mr);
	if (rc)
		goto err;
	rc = ps_rdma_reg(d, (uint8_t *)c->mem.addr + page, total - page, IBV_ACCESS_LOCAL_WRITE,
			 &c->data_mr);
	if (rc)
		goto err;

	rc = -ENOMEM;
	c->ops = calloc(c->op_mask + 1ull, sizeof(*c->ops));
	c->wqes = calloc(c->sq_mask + 1ull, sizeof(*c->wqes));
	c->sges = calloc((c->sq_mask + 1ull) * c->max_sge, sizeof(*c->sges));
	c->rx = calloc(c->recv_depth, sizeof(*c->rx));
	if (!c->ops || !c->wqes || !c->sges || !c->rx)
		goto err;
	for (uint32_t i = 0; i <= c->sq_mask; i++) {
		c->wqes[i].tag.type = RD_TAG_WQE;
		c->wqes[i].conn = c;
		c->wqes[i].sge = c->sges + (size_t)i * c->max_sge;
	}
	for (uint32_t i = 0; i < c->recv_depth; i++) {
		struct rd_rx *rx = &c->rx[i];

		rx->tag.type = RD_TAG_RX;
		rx->conn = c;
		rx->sge.addr = (uintptr_t)(c->rxbuf + (size_t)i * c->rx_stride);
		rx->sge.length = c->msg_size;
		rx->sge.lkey = c->data_mr->lkey;
		rx->wr.wr_id = (uintptr_t)&rx->tag;
		rx->wr.sg_list = &rx->sge;
		rx->wr.num_sge = 1;
	}
	c->credit_thresh = c->recv_depth / 4 ? c->recv_depth / 4 : 1;
	c->repost_tail = &c->repost;
	l->cq_reserved += c->cq_need;
	rd_list_add_tail(&l->conns, &c->link);
	l->nconns++;
	*out = c;
	return 0;

err:
	free(c->rx);
	free(c->sges);
	free(c->wqes);
	free(c->ops);
	ps_vshim_mr_dereg(c->data_mr);
	ps_vshim_mr_dereg(c->ctrl_mr);
	ps_mem_free(&c->mem);
	free(c);
	return rc;
}

void ps_rdma_conn_free(struct rd_conn *c)
{
	struct rd_loop *l = c->loop;
	bool connected = c->state == RD_CONN_OPEN || c->state == RD_CONN_CONNECTING ||
			 c->state == RD_CONN_ACCEPTING;

	if (c->reap) {
		l->nreap--;
		c->reap = false;
	}
	set_state(c, RD_CONN_CLOSING);
	ps_rdma_flush_unlink(c);
	if (rd_list_linked(&c->starved_link))
		rd_list_del(&c->starved_link);
	if (c->id) {
		if (connected)
			ps_vshim_cm_disconnect(c->id);
		if (c->id->qp) {
			ps_vshim_qp_destroy(c->id);
			if (!l->destroying)
				ps_rdma_cq_drain(l);
		}
		ps_vshim_cm_id_destroy(c->id);
	}
	ps_tp_evq_purge(&l->evq, &c->base);
	free(c->rx);
	free(c->sges);
	free(c->wqes);
	free(c->ops);
	ps_vshim_mr_dereg(c->data_mr);
	ps_vshim_mr_dereg(c->ctrl_mr);
	ps_mem_free(&c->mem);
	rd_list_del(&c->link);
	l->nconns--;
	l->cq_reserved -= c->cq_need;
	free(c);
}

void ps_rdma_reap(struct rd_loop *l)
{
	struct rd_list *n, *next;

	for (n = l->conns.next; l->nreap && n != &l->conns; n = next) {
		struct rd_conn *c = container_of(n, struct rd_conn, link);

		/* Freeing drains the CQ, which may mark others: restart from the head then. */
		next = n->next;
		if (c->reap) {
			ps_rdma_conn_free(c);
			next = l->conns.next;
		}
	}
}

/* Mark a connection the caller never saw for freeing at the next safe point. */
static void conn_drop(struct rd_conn *c)
{
	set_state(c, RD_CONN_CLOSING);
	if (!c->reap) {
		c->reap = true;
		c->loop->nreap++;
	}
}

/* ---- QP and private data -------------------------------------------------------------------- */

static int conn_qp_create(struct rd_conn *c)
{
	struct rd_dev *d = c->loop->dev;
	struct ibv_qp_init_attr qa;
	int rc;

	memset(&qa, 0, sizeof(qa));
	qa.qp_type = IBV_QPT_RC;
	qa.send_cq = qa.recv_cq = c->loop->cq;
	qa.sq_sig_all = 0; /* selective signalling (rdma_post.c) */
	qa.cap.max_send_wr = c->sq_depth;
	qa.cap.max_recv_wr = c->recv_depth;
	qa.cap.max_send_sge = c->max_sge;
	qa.cap.max_recv_sge = 1;
	qa.cap.max_inline_data = d->max_inline;
	rc = ps_vshim_qp_create(c->id, d->pd, &qa);
	if (rc && d->max_inline) {
		qa.cap.max_inline_data = 0;
		rc = ps_vshim_qp_create(c->id, d->pd, &qa);
	}
	if (rc) {
		ps_log_warn(RD_LOG, "%s: creating a QP (%u send WRs x %u SGEs, %u receives): %s",
			    c->base.peer, c->sq_depth, c->max_sge, c->recv_depth, ps_strerror(rc));
		return rc;
	}
	c->max_inline = qa.cap.max_inline_data;
	return ps_rdma_rx_post_all(c);
}

static void pdata_fill(const struct rd_conn *c, uint8_t *raw)
{
	struct rd_pdata p = {
		.magic = RD_PDATA_MAGIC,
		.version = RD_PROTO_VERSION,
		.recv_depth = c->recv_depth,
		.msg_size = c->msg_size,
		.credit_addr = (uintptr_t)c->credit_word,
		.credit_rkey = c->ctrl_mr->rkey,
	};

	rd_pdata_encode(&p, raw);
}

/* Check the peer's private data and take its credits: 0, PS_EPROTO_VERSION or PS_EBAD_MESSAGE. */
static int pdata_take(struct rd_conn *c, const void *data, uint8_t len)
{
	struct rd_pdata p;

	/* The CM may pad private data (IB: to 56/196 bytes); ours is at the front. */
	if (!data || len < RD_PDATA_LEN) {
		ps_log_warn(RD_LOG, "%s: private data of %u bytes: not a psplus peer", c->base.peer,
			    len);
		return PS_EBAD_MESSAGE;
	}
	rd_pdata_decode(data, &p);
	if (p.magic != RD_PDATA_MAGIC) {
		ps_log_warn(RD_LOG, "%s: private data magic %#x: not a psplus peer", c->base.peer,
			    p.magic);
		return PS_EBAD_MESSAGE;
	}
	if (p.version != RD_PROTO_VERSION) {
		ps_log_warn(RD_LOG, "%s: protocol version %u, we speak %u", c->base.peer, p.version,
			    RD_PROTO_VERSION);
		return PS_EPROTO_VERSION;
	}
	if (!p.recv_depth || p.recv_depth > RD_MAX_DEPTH || !p.msg_size || !p.credit_addr) {
		ps_log_warn(RD_LOG, "%s: bad private data (recv_depth %u, msg_size %u)",
			    c->base.peer, p.recv_depth, p.msg_size);
		return PS_EBAD_MESSAGE;
	}
	c->peer_depth = p.recv_depth;
	c->max_msg = p.msg_size < c->msg_size ? p.msg_size : c->msg_size;
	c->peer_credit_addr = p.credit_addr;
	c->peer_credit_rkey = p.credit_rkey;
	return 0;
}

static void conn_param_fill(struct rdma_conn_param *cp, const uint8_t *pdata)
{
	memset(cp, 0, sizeof(*cp));
	cp->private_data = pdata;
	cp->private_data_len = RD_PDATA_LEN;
	/* No RDMA READ is used: no read resources either way. */
	cp->responder_resources = 0;
	cp->initiator_depth = 0;
	cp->retry_count = RD_RETRY_COUNT;
	cp->rnr_retry_count = RD_RNR_RETRY_COUNT;
}

/* ---- events --------------------------------------------------------------------------------- */

void ps_rdma_conn_established(struct rd_conn *c)
{
	set_state(c, RD_CONN_OPEN);
	ps_rdma_ev_push(c->loop, PS_TP_EV_ACCEPT, c, 0, NULL, NULL, 0, 0, 0);
}

void ps_rdma_conn_break(struct rd_conn *c, int status)
{
	if (c->state == RD_CONN_ACCEPTING) {
		conn_drop(c);
		return;
	}
	if (c->state != RD_CONN_OPEN)
		return;
	set_state(c, RD_CONN_DEAD);
	/* Moves the QP to the error state (the rest flushes) and tells the peer, if it is there. */
	ps_vshim_cm_disconnect(c->id);
	ps_rdma_flush_unlink(c);
	if (rd_list_linked(&c->starved_link))
		rd_list_del(&c->starved_link);
	ps_rdma_ops_fail(c);
	ps_rdma_ev_push(c->loop, PS_TP_EV_CLOSED, c, status, NULL, NULL, 0, 0, 0);
	ps_log_debug(RD_LOG, "%s: connection closed (%s)", c->base.peer, ps_strerror(status));
}

/* The active side's handshake: each event moves it one step or fails it (c->connect_rc). */
static void connect_step(struct rd_conn *c, struct rdma_cm_event *ev)
{
	struct rd_dev *d = c->loop->dev;
	struct rdma_conn_param cp;
	uint8_t pdata[RD_PDATA_LEN];
	int rc = 0, ms = ps_clock_remaining_ms(c->deadline_ns);

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (c->id->verbs != d->ctx) {
			ps_log_err(RD_LOG,
				   "%s: the route runs over %s, but this loop's dev is %s "
				   "(open a dev with bind_addr on %s's address)",
				   c->base.peer,
				   c->id->verbs ? ps_vshim_device_name(c->id->verbs->device) : "?",
				   d->info.name,
				   c->id->verbs ? ps_vshim_device_name(c->id->verbs->device) : "?");
			rc = -ENETUNREACH;
			break;
		}
		rc = ps_vshim_cm_resolve_route(c->id, ms ? ms : 1);
		break;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		rc = conn_qp_create(c);
		if (rc)
			break;
		pdata_fill(c, pdata);
		conn_param_fill(&cp, pdata);
		rc = ps_vshim_cm_connect(c->id, &cp);
		if (!rc)
			set_state(c, RD_CONN_CONNECTING);
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		rc = pdata_take(c, ev->param.conn.private_data, ev->param.conn.private_data_len);
		if (!rc)
			set_state(c, RD_CONN_OPEN);
		break;
	case RDMA_CM_EVENT_REJECTED: {
		struct rd_pdata p;

		/* Our acceptor rejects with its private data: a version mismatch shows in it. */
		rc = -ECONNREFUSED;
		if (ev->param.conn.private_data &&
		    ev->param.conn.private_data_len >= RD_PDATA_LEN) {
			rd_pdata_decode(ev->param.conn.private_data, &p);
			if (p.magic == RD_PDATA_MAGIC && p.version != RD_PROTO_VERSION)
				rc = PS_EPROTO_VERSION;
		}
		break;
	}
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		rc = ev->status < 0 && ev->status > -4096 ? ev->status : -EHOSTUNREACH;
		break;
	case RDMA_CM_EVENT_CONNECT_ERROR:
		rc = -ECONNREFUSED;
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		rc = -ECONNRESET;
		break;
	default:
		ps_log_debug(RD_LOG, "%s: %s while connecting: ignored", c->base.peer,
			     ps_vshim_cm_event_str(ev->event));
		break;
	}
	if (rc) {
		ps_log_debug(RD_LOG, "%s: %s: %s", c->base.peer, ps_vshim_cm_event_str(ev->event),
			     ps_strerror(rc));
		c->connect_rc = rc;
	}
}

void ps_rdma_conn_cm_event(struct rd_conn *c, struct rdma_cm_event *ev)
{
	switch (c->state) {
	case RD_CONN_RESOLVING:
	case RD_CONN_CONNECTING:
		if (!c->connect_rc)
			connect_step(c, ev);
		return;
	case RD_CONN_ACCEPTING:
		if (ev->event == RDMA_CM_EVENT_ESTABLISHED) {
			ps_rdma_conn_established(c);
		} else if (ev->event != RDMA_CM_EVENT_TIMEWAIT_EXIT) {
			ps_log_info(RD_LOG, "%s: %s before the connection was established: dropped",
				    c->base.peer, ps_vshim_cm_event_str(ev->event));
			conn_drop(c);
		}
		return;
	case RD_CONN_OPEN:
		switch (ev->event) {
		case RDMA_CM_EVENT_DISCONNECTED:
			ps_rdma_conn_break(c, 0);
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
		case RDMA_CM_EVENT_REJECTED:
			ps_log_warn(RD_LOG, "%s: %s", c->base.peer,
				    ps_vshim_cm_event_str(ev->event));
			ps_rdma_conn_break(c, PS_EPEER_LOST);
			break;
		default: /* ESTABLISHED after the first completion did it, TIMEWAIT_EXIT, ... */
			break;
		}
		return;
	default: /* DEAD, CLOSING: nothing left to do */
		return;
	}
}

int ps_rdma_conn_expire(struct rd_loop *l, int timeout_ms)
{
	uint64_t now = ps_clock_now_ns();
	struct rd_list *n, *next;
	int left;

	for (n = l->conns.next; n != &l->conns; n = next) {
		struct rd_conn *c = container_of(n, struct rd_conn, link);

		next = n->next;
		if (c->state != RD_CONN_ACCEPTING && !(c->state == RD_CONN_OPEN && c->flushed))
			continue;
		if (c->deadline_ns <= now) {
			if (c->state == RD_CONN_ACCEPTING) {
				ps_log_warn(RD_LOG, "%s: not established within %u ms: dropped",
					    c->base.peer, l->base.opts.connect_timeout_ms);
				conn_drop(c);
			} else {
				ps_log_warn(RD_LOG, "%s: QP flushed without a disconnect: lost",
					    c->base.peer);
				ps_rdma_conn_break(c, PS_EPEER_LOST);
			}
			continue;
		}
		left = ps_clock_remaining_ms(c->deadline_ns);
		if (left < timeout_ms)
			timeout_ms = left;
	}
	return timeout_ms;
}

/* ---- connect --------------------------------------------------------------------------------- */

int ps_rdma_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		    struct ps_tp_conn **out)
{
	struct rd_loop *l = rd_loop_of(loop);
	struct sockaddr_storage dst;
	struct rdma_cm_event *ev;
	struct rd_conn *c;
	int rc, ms;

	rc = ps_rdma_addr_parse(host, port, &dst);
	if (rc)
		return rc;
	rc = conn_alloc(l, &c);
	if (rc)
		return rc;
	ps_rdma_addr_str((struct sockaddr *)&dst, c->base.peer, sizeof(c->base.peer));
	c->deadline_ns = ps_clock_deadline_ms(loop->opts.connect_timeout_ms);
	rc = ps_vshim_cm_id_create(l->cm_ch, &c->cm_tag, RDMA_PS_TCP, &c->id);
	if (rc)
		goto err;
	rc = ps_vshim_cm_resolve_addr(c->id, NULL, (struct sockaddr *)&dst,
				      (int)loop->opts.connect_timeout_ms);
	if (rc)
		goto err;
	/*
	 * The handshake's events come on the loop's channel, mixed with those of the loop's other
	 * ids: every event is dispatched as poll would, and this connection's move it along.
	 */
	while (c->state != RD_CONN_OPEN && !c->connect_rc) {
		ms = ps_clock_remaining_ms(c->deadline_ns);
		if (!ms) {
			rc = PS_ETIMEOUT;
			goto err;
		}
		rc = ps_vshim_cm_event_get(l->cm_ch, ms, &ev);
		if (rc == PS_ETIMEOUT)
			continue;
		if (rc)
			goto err;
		ps_rdma_cm_dispatch(l, ev);
	}
	rc = c->connect_rc;
	if (rc)
		goto err;
	c->base.user = user;
	*out = &c->base;
	return 0;

err:
	if (rc != -ECONNREFUSED)
		ps_log_info(RD_LOG, "connect to %s: %s", c->base.peer, ps_strerror(rc));
	ps_rdma_conn_free(c);
	return rc;
}

void ps_rdma_conn_close(struct ps_tp_conn *conn)
{
	ps_rdma_conn_free(rd_conn_of(conn));
}

/* ---- listen and accept ----------------------------------------------------------------------- */

void ps_rdma_conn_request(struct rd_listener *lst, struct rdma_cm_event *ev)
{
	struct rd_loop *l = rd_loop_of(lst->base.loop);
	struct rdma_cm_id *id = ev->id;
	struct rdma_conn_param cp;
	uint8_t pdata[RD_PDATA_LEN];
	struct rd_pdata ours = {.magic = RD_PDATA_MAGIC, .version = RD_PROTO_VERSION};
	struct rd_conn *c = NULL;
	char peer[sizeof(c->base.peer)];
	int rc;

	ps_rdma_addr_str((struct sockaddr *)&id->route.addr.dst_addr, peer, sizeof(peer));
	if (id->verbs != l->dev->ctx) {
		ps_log_warn(RD_LOG, "%s: request arrived on another device: refused", peer);
		rc = -EXDEV;
		goto refuse;
	}
	rc = conn_alloc(l, &c);
	if (rc) {
		ps_log_warn(RD_LOG, "%s: refused: %s", peer, ps_strerror(rc));
		goto refuse;
	}
	memcpy(c->base.peer, peer, sizeof(peer));
	rc = pdata_take(c, ev->param.conn.private_data, ev->param.conn.private_data_len);
	if (rc)
		goto refuse;
	c->id = id;
	id->context = &c->cm_tag;
	rc = conn_qp_create(c);
	if (rc)
		goto refuse;
	pdata_fill(c, pdata);
	conn_param_fill(&cp, pdata);
	rc = ps_vshim_cm_accept(id, &cp);
	if (rc) {
		ps_log_warn(RD_LOG, "%s: accept: %s", peer, ps_strerror(rc));
		goto refuse;
	}
	c->deadline_ns = ps_clock_deadline_ms(l->base.opts.connect_timeout_ms);
	set_state(c, RD_CONN_ACCEPTING);
	return;

refuse:
	/* The id is not ours to destroy yet: the dispatcher does that after the ack. */
	if (c) {
		if (id->qp) {
			ps_vshim_qp_destroy(id);
			ps_rdma_cq_drain(l);
		}
		c->id = NULL;
		ps_rdma_conn_free(c);
	}
	id->context = NULL;
	rd_pdata_encode(&ours, pdata);
	ps_vshim_cm_reject(id, pdata, RD_PDATA_LEN);
}

int ps_rdma_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		   struct ps_tp_listener **out)
{
	struct rd_loop *l = rd_loop_of(loop);
	struct sockaddr_storage ss;
	struct rd_listener *lst;
	char astr[80];
	int rc;

	if (*host) {
		rc = ps_rdma_addr_parse(host, port, &ss);
		if (rc)
			return rc;
	} else {
		/* No host: the dev's own address (a wildcard would take no device's side). */
		ss = l->dev->addr;
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(port);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	}
	ps_rdma_addr_str((struct sockaddr *)&ss, astr, sizeof(astr));
	lst = calloc(1, sizeof(*lst));
	if (!lst)
		return -ENOMEM;
	lst->base.loop = loop;
	lst->tag.type = RD_TAG_LISTENER;
	rd_list_init(&lst->link);
	rc = ps_vshim_cm_id_create(l->cm_ch, &lst->tag, RDMA_PS_TCP, &lst->id);
	if (rc)
		goto err;
	rc = ps_vshim_cm_bind(lst->id, (struct sockaddr *)&ss);
	if (rc) {
		ps_log_warn(RD_LOG, "listen on %s: %s", astr, ps_strerror(rc));
		goto err;
	}
	if (lst->id->verbs != l->dev->ctx) {
		ps_log_err(RD_LOG, "listen on %s: not an address of %s", astr, l->dev->info.name);
		rc = -EADDRNOTAVAIL;
		goto err;
	}
	rc = ps_vshim_cm_listen(lst->id, RD_BACKLOG);
	if (rc)
		goto err;
	lst->port = ps_vshim_cm_src_port(lst->id);
	rd_list_add_tail(&l->listeners, &lst->link);
	*out = &lst->base;
	return 0;

err:
	ps_vshim_cm_id_destroy(lst->id);
	free(lst);
	return rc;
}

uint16_t ps_rdma_listener_port(const struct ps_tp_listener *l)
{
	return container_of(l, const struct rd_listener, base)->port;
}

void ps_rdma_listener_close(struct ps_tp_listener *base)
{
	struct rd_listener *lst = container_of(base, struct rd_listener, base);

	rd_list_del(&lst->link);
	/* Connect requests not read yet go with it (the kernel rejects them). */
	ps_vshim_cm_id_destroy(lst->id);
	free(lst);
}
