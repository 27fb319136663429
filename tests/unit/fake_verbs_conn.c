/*
 * The fake verbs layer, part 6: rdma_cm connections (connect, accept, reject, disconnect) and
 * fake_verbs_kill_peer().
 *
 * Every asynchronous outcome (address and route resolution, a connect's answer, a disconnect) is
 * queued on the right channel at the moment of the call that causes it: there are no timers. The
 * behaviours below were checked against rdma_cm on rxe (Linux 6.x, rdma-core 44):
 *  - connecting to a port nobody listens on: RDMA_CM_EVENT_REJECTED, status 8 (IB CM "invalid
 *    service ID"); a peer's rdma_reject(): REJECTED, status 28 ("consumer defined"). Both carry
 *    148 bytes of private data (zero-padded);
 *  - private data arrives padded: 56 bytes in CONNECT_REQUEST, 196 in the active side's
 *    ESTABLISHED, none in the passive side's ESTABLISHED;
 *  - the passive QP is RTS when rdma_accept() returns; the active QP becomes RTS when its
 *    ESTABLISHED event is taken (librdmacm modifies it then); a connect after REJECTED: -EINVAL;
 *  - rnr_retry_count: the active side's value (connect) governs the passive QP's retries, the
 *    passive side's (accept) the active QP's;
 *  - disconnect: the caller's QP goes to error at once and the peer gets DISCONNECTED; the
 *    caller's own DISCONNECTED comes when the peer answers (disconnects or destroys its id);
 *    disconnecting again is 0;
 *  - bind to an address no interface has: -EADDRNOTAVAIL.
 * Choices where the fake differs: an address no fake device owns resolves to
 * RDMA_CM_EVENT_ADDR_ERROR with status -EHOSTUNREACH (the kernel returns -ENETUNREACH at once when
 * there is no route at all); 127.0.0.1 belongs to the default device (on rxe, loopback binds with
 * no device and its route never resolves); only IPv4 and RDMA_PS_TCP are modelled.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "tests/unit/fake_verbs_int.h"

/* ---- connections ----------------------------------------------------------------------------- */

static struct fv_id *listener_for(uint32_t addr, uint16_t port)
{
	for (struct fv_id *i = fv.ids; i; i = i->next) {
		if (i->listening && fv_src_port(i) == port &&
		    (fv_src_addr(i) == INADDR_ANY || fv_src_addr(i) == addr))
			return i;
	}
	return NULL;
}

/* The parameters the other side sees: its responder resources are our initiator depth. */
static void param_for_peer(struct rdma_conn_param *out, const struct rdma_conn_param *p,
			   uint32_t qp_num)
{
	memset(out, 0, sizeof(*out));
	if (p) {
		out->responder_resources = p->initiator_depth;
		out->initiator_depth = p->responder_resources;
		out->flow_control = p->flow_control;
		out->retry_count = p->retry_count;
		out->rnr_retry_count = p->rnr_retry_count;
	}
	out->qp_num = qp_num;
}

int ps_vshim_cm_connect(struct rdma_cm_id *ibid, struct rdma_conn_param *param)
{
	struct fv_id *id = fv_id_of(ibid), *l, *child;
	struct fv_cm_ev *e;
	uint32_t dst;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_CONNECT);
	if (!rc && id->state != FV_ID_ROUTE_RESOLVED)
		rc = -EINVAL;
	if (!rc && param && param->private_data_len > FV_REQ_PDATA)
		rc = -EINVAL;
	if (rc)
		goto out;
	id->state = FV_ID_CONNECT;
	if (fv.cm_next[2].set) {
		fv.cm_next[2].set = false;
		fv_ev_push(id, id, fv.cm_next[2].type, fv.cm_next[2].status, NULL, 0,
			   fv.cm_next[2].type == RDMA_CM_EVENT_REJECTED ? FV_REJ_PDATA : 0);
		id->state = FV_ID_REJECTED;
		goto out;
	}
	dst = ibid->route.addr.dst_sin.sin_addr.s_addr;
	l = listener_for(dst, ps_vshim_cm_dst_port(ibid));
	if (!l) {
		fv_ev_push(id, id, RDMA_CM_EVENT_REJECTED, FAKE_VERBS_REJ_INVALID_SERVICE_ID, NULL,
			   0, FV_REJ_PDATA);
		id->state = FV_ID_REJECTED;
		goto out;
	}
	child = fv_id_new(l->ch, l->ibid.context, l->ibid.ps);
	if (!child) {
		id->state = FV_ID_ROUTE_RESOLVED;
		rc = -ENOMEM;
		goto out;
	}
	child->passive = true;
	child->state = FV_ID_CONNECT;
	fv_id_set_dev(child, fv_dev_by_addr(dst));
	fv_set_addr(&child->ibid.route.addr.src_sin, dst, fv_src_port(l));
	child->ibid.route.addr.dst_sin = ibid->route.addr.src_sin;
	child->ibid.route.num_paths = 1;
	child->peer = id;
	id->peer = child;
	if (param)
		child->req_param = *param;
	child->req_param.private_data = NULL;
	e = fv_ev_push(l, child, RDMA_CM_EVENT_CONNECT_REQUEST, 0,
		       param ? param->private_data : NULL, param ? param->private_data_len : 0,
		       FV_REQ_PDATA);
	if (e) {
		e->ev.listen_id = &l->ibid;
		param_for_peer(&e->ev.param.conn, param, ibid->qp ? ibid->qp->qp_num : 0);
		e->ev.param.conn.private_data = e->pdata;
		e->ev.param.conn.private_data_len = FV_REQ_PDATA;
	}
out:
	fv_unlock();
	return rc;
}

int ps_vshim_cm_accept(struct rdma_cm_id *ibid, struct rdma_conn_param *param)
{
	struct fv_id *id = fv_id_of(ibid), *a;
	struct fv_qp *q, *aq;
	struct fv_cm_ev *e;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_ACCEPT);
	if (!rc && (!id->passive || id->state != FV_ID_CONNECT || !id->peer))
		rc = -EINVAL;
	if (!rc && param && param->private_data_len > FV_REP_PDATA)
		rc = -EINVAL;
	if (rc)
		goto out;
	a = id->peer;
	q = ibid->qp ? container_of(ibid->qp, struct fv_qp, ibqp) : NULL;
	aq = a->ibid.qp ? container_of(a->ibid.qp, struct fv_qp, ibqp) : NULL;
	if (q) {
		/* librdmacm takes the passive QP to RTR and RTS inside rdma_accept(). */
		q->ibqp.state = IBV_QPS_RTS;
		q->rnr_retry = id->req_param.rnr_retry_count;
		q->peer = aq;
	}
	if (aq) {
		aq->rnr_retry = param ? param->rnr_retry_count : 0;
		aq->peer = q;
	}
	id->state = FV_ID_ESTABLISHED;
	a->state = FV_ID_ESTABLISHED;
	e = fv_ev_push(a, a, RDMA_CM_EVENT_ESTABLISHED, 0, param ? param->private_data : NULL,
		       param ? param->private_data_len : 0, FV_REP_PDATA);
	if (e) {
		param_for_peer(&e->ev.param.conn, param, q ? q->ibqp.qp_num : 0);
		e->ev.param.conn.private_data = e->pdata;
		e->ev.param.conn.private_data_len = FV_REP_PDATA;
	}
	fv_ev_push(id, id, RDMA_CM_EVENT_ESTABLISHED, 0, NULL, 0, 0);
out:
	fv_unlock();
	return rc;
}

int ps_vshim_cm_reject(struct rdma_cm_id *ibid, const void *private_data, uint8_t len)
{
	struct fv_id *id = fv_id_of(ibid), *a;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_REJECT);
	if (!rc && (!id->passive || id->state != FV_ID_CONNECT || len > FV_REJ_PDATA))
		rc = -EINVAL;
	if (!rc) {
		a = id->peer;
		if (a) {
			fv_ev_push(a, a, RDMA_CM_EVENT_REJECTED, FAKE_VERBS_REJ_CONSUMER_DEFINED,
				   private_data, len, FV_REJ_PDATA);
			a->state = FV_ID_REJECTED;
			a->peer = NULL;
		}
		id->peer = NULL;
		id->state = FV_ID_REJECTED;
	}
	fv_unlock();
	return rc;
}

static void qp_of_id_to_error(struct fv_id *id)
{
	if (id->ibid.qp)
		fv_qp_to_error(container_of(id->ibid.qp, struct fv_qp, ibqp));
}

int ps_vshim_cm_disconnect(struct rdma_cm_id *ibid)
{
	struct fv_id *id = fv_id_of(ibid), *p;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_DISCONNECT);
	if (rc)
		goto out;
	p = id->peer;
	switch (id->state) {
	case FV_ID_ESTABLISHED:
		qp_of_id_to_error(id);
		if (p && p->state == FV_ID_ESTABLISHED) {
			fv_ev_push(p, p, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
			p->state = FV_ID_DISC_RCVD;
			id->state = FV_ID_DISC_SENT;
		} else {
			/* Nobody answers the DREQ: it times out (here at once) into DISCONNECTED. */
			fv_ev_push(id, id, RDMA_CM_EVENT_DISCONNECTED, -ETIMEDOUT, NULL, 0, 0);
			id->state = FV_ID_DISCONNECTED;
		}
		break;
	case FV_ID_DISC_RCVD:
		qp_of_id_to_error(id);
		if (p && p->state == FV_ID_DISC_SENT) {
			fv_ev_push(p, p, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
			p->state = FV_ID_DISCONNECTED;
		}
		if (p)
			p->peer = NULL;
		id->peer = NULL;
		id->state = FV_ID_DISCONNECTED;
		break;
	case FV_ID_CONNECT:
	case FV_ID_DISC_SENT:
	case FV_ID_DISCONNECTED:
	case FV_ID_REJECTED:
		qp_of_id_to_error(id);
		break;
	default:
		rc = -EINVAL; /* never connected: the kernel has no CM id to disconnect */
		break;
	}
out:
	fv_unlock();
	return rc;
}

/* Under the lock: fake_verbs_kill_peer(). */
int fv_kill_peer(struct rdma_cm_id *ibid)
{
	struct fv_id *id = fv_id_of(ibid), *p = id->peer;
	struct fv_qp *q = ibid->qp ? container_of(ibid->qp, struct fv_qp, ibqp) : NULL;

	if (!p || id->state != FV_ID_ESTABLISHED)
		return -ENOTCONN;
	if (q && q->peer)
		q->peer->peer = NULL;
	if (q)
		q->peer = NULL;
	/* The peer's id is left established, talking to nobody, until the test tears it down. */
	p->peer = NULL;
	id->peer = NULL;
	fv_ev_push(id, id, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
	id->state = FV_ID_DISC_RCVD;
	if (q)
		fv_qp_progress(q, true); /* requests in flight time out */
	return 0;
}
