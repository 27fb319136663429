/*
 * The fake verbs layer, part 4: RC queue pairs and the data path.
 *
 * Execution model: ps_vshim_post_send() validates the chain (what a provider refuses at post
 * time: -EINVAL, -ENOMEM), queues each request, then executes the queue in order before returning
 * (unless fake_verbs_hold_sends() holds it). Executing a request does what the two NICs would: it
 * checks the local gather list (lkeys, bounds), the peer's receive buffer or remote range (rkey,
 * bounds, access), copies the bytes with memcpy, and queues the completions: the requester's
 * (when signalled, or on error) and the responder's receive completion for SEND and
 * WRITE_WITH_IMM. A request that needs a receive the peer has not posted gets
 * IBV_WC_RNR_RETRY_EXC_ERR if the connection's rnr_retry_count is below 7, and otherwise waits
 * (as "retry forever" does) until the peer posts one; the requests behind it wait too (RC order).
 *
 * Send-queue slots: a request occupies a slot from post until a completion of it, or of a later
 * request of the same QP, is polled: an unsignalled request's slot is freed only by a later
 * signalled completion, which is what the hardware does and why selective signalling must signal
 * at least every max_send_wr-th request.
 *
 * Errors: any error completion moves the QP to the error state (IBV_QPS_ERR): the requests still
 * queued, those posted later, and every posted receive complete with IBV_WC_WR_FLUSH_ERR. For an
 * error completion only wr_id, status, qp_num and vendor_err are valid (verbs(7)); the fake puts
 * poison in opcode and byte_len so that code reading them shows up in tests.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/fake_verbs_int.h"

#define POISON_OPCODE  ((enum ibv_wc_opcode)0x7f)
#define POISON_BYTELEN 0xdeadbeefu
#define RNR_INFINITE   7

/* ---- helpers --------------------------------------------------------------------------------- */

static bool range_in_mr(const struct fv_mr *m, uint64_t addr, uint64_t len)
{
	uint64_t base = (uintptr_t)m->ibmr.addr, mlen = m->ibmr.length;

	return addr >= base && len <= mlen && addr - base <= mlen - len;
}

/* A local gather/scatter element: its lkey names an MR of @pd that covers it with @access. */
static bool local_sge_ok(struct ibv_pd *pd, const struct ibv_sge *s, int access)
{
	struct fv_mr *m;

	if (!s->length)
		return true;
	m = fv_mr_by_lkey(s->lkey);
	return m && m->ibmr.pd == pd && (m->access & access) == access &&
	       range_in_mr(m, s->addr, s->length);
}

static bool local_sgl_ok(struct ibv_pd *pd, const struct ibv_sge *s, int n, int access)
{
	for (int i = 0; i < n; i++) {
		if (!local_sge_ok(pd, &s[i], access))
			return false;
	}
	return true;
}

static uint64_t sgl_len(const struct ibv_sge *s, int n)
{
	uint64_t t = 0;

	for (int i = 0; i < n; i++)
		t += s[i].length;
	return t;
}

/* Copy the request's payload (inline copy or gather list) into @buf. */
static void gather(const struct fv_swr *w, uint8_t *buf)
{
	if (w->inline_buf) {
		memcpy(buf, w->inline_buf, w->inline_len);
		return;
	}
	for (int i = 0; i < w->num_sge; i++) {
		memcpy(buf, (void *)(uintptr_t)w->sge[i].addr, w->sge[i].length);
		buf += w->sge[i].length;
	}
}

static void scatter(const uint8_t *buf, uint64_t len, const struct ibv_sge *s, int n)
{
	for (int i = 0; i < n && len; i++) {
		uint64_t k = s[i].length < len ? s[i].length : len;

		memcpy((void *)(uintptr_t)s[i].addr, buf, k);
		buf += k;
		len -= k;
	}
}

static struct fv_cq *cq_of(struct ibv_cq *cq)
{
	return container_of(cq, struct fv_cq, ibcq);
}

static void complete_send(struct fv_qp *qp, const struct fv_swr *w, enum ibv_wc_status st,
			  uint32_t byte_len)
{
	struct fv_cqe e = {.qp = qp, .sq_seq = w->seq};

	e.wc.wr_id = w->wr_id;
	e.wc.status = st;
	e.wc.qp_num = qp->ibqp.qp_num;
	if (st == IBV_WC_SUCCESS) {
		e.wc.opcode = w->opcode == IBV_WR_RDMA_READ ? IBV_WC_RDMA_READ
			      : w->opcode == IBV_WR_SEND || w->opcode == IBV_WR_SEND_WITH_IMM
				      ? IBV_WC_SEND
				      : IBV_WC_RDMA_WRITE;
		e.wc.byte_len = byte_len;
	} else {
		e.wc.opcode = POISON_OPCODE;
		e.wc.byte_len = POISON_BYTELEN;
		e.wc.vendor_err = 0x100 | st;
	}
	fv_cq_push(cq_of(qp->ibqp.send_cq), &e);
}

static void complete_recv(struct fv_qp *qp, const struct fv_rwr *r, enum ibv_wc_status st,
			  enum ibv_wc_opcode op, uint32_t byte_len, const struct fv_swr *w,
			  uint32_t src_qp)
{
	struct fv_cqe e = {.qp = qp};

	e.wc.wr_id = r->wr_id;
	e.wc.status = st;
	e.wc.qp_num = qp->ibqp.qp_num;
	if (st == IBV_WC_SUCCESS) {
		e.wc.opcode = op;
		e.wc.byte_len = byte_len;
		e.wc.src_qp = src_qp;
		if (w && (w->opcode == IBV_WR_SEND_WITH_IMM ||
			  w->opcode == IBV_WR_RDMA_WRITE_WITH_IMM)) {
			e.wc.wc_flags = IBV_WC_WITH_IMM;
			e.wc.imm_data =
				w->imm_data; /* stays in network byte order, as on the wire */
		}
		e.solicited = w && (w->send_flags & IBV_SEND_SOLICITED);
	} else {
		e.wc.opcode = POISON_OPCODE;
		e.wc.byte_len = POISON_BYTELEN;
		e.wc.vendor_err = 0x100 | st;
	}
	fv_cq_push(cq_of(qp->ibqp.recv_cq), &e);
}

/* Take the receive at the head of @qp's receive queue (the caller checked there is one). */
static struct fv_rwr rq_pop(struct fv_qp *qp)
{
	struct fv_rwr r = qp->rq[qp->rq_head];

	qp->rq_head = (qp->rq_head + 1) % (int)qp->cap.max_recv_wr;
	qp->rq_count--;
	return r;
}

/* ---- state ----------------------------------------------------------------------------------- */

/* Complete every queued send request and every posted receive of @qp with a flush. */
static void flush_all(struct fv_qp *qp)
{
	while (qp->sq_count) {
		complete_send(qp, &qp->sq[qp->sq_head], IBV_WC_WR_FLUSH_ERR, 0);
		qp->sq_head = (qp->sq_head + 1) % (int)qp->cap.max_send_wr;
		qp->sq_count--;
	}
	while (qp->rq_count) {
		struct fv_rwr r = rq_pop(qp);

		complete_recv(qp, &r, IBV_WC_WR_FLUSH_ERR, 0, 0, NULL, 0);
	}
	qp->rnr_blocked = false;
}

void fv_qp_to_error(struct fv_qp *qp)
{
	qp->ibqp.state = IBV_QPS_ERR;
	flush_all(qp);
}

void fv_qp_retire(struct fv_qp *qp, uint64_t seq)
{
	if (seq > qp->sq_retired)
		qp->sq_retired = seq;
}

static int sq_outstanding(const struct fv_qp *qp)
{
	return (int)(qp->sq_next_seq - 1 - qp->sq_retired);
}

/* ---- execution ------------------------------------------------------------------------------- */

enum exec_result { EXEC_DONE, EXEC_BLOCKED };

/*
 * The responder can take a request that needs a receive: one is posted, or else RNR (blocked if
 * retried forever). Returns false with *st or *blocked set when it cannot.
 */
static bool need_recv(struct fv_qp *qp, struct fv_qp *peer, enum ibv_wc_status *st, bool *blocked)
{
	if (peer->rq_count)
		return true;
	if (qp->rnr_retry == RNR_INFINITE) {
		if (!qp->rnr_blocked)
			fv.stats.rnr_waits++;
		*blocked = true;
	} else {
		*st = IBV_WC_RNR_RETRY_EXC_ERR;
	}
	return false;
}

/*
 * Execute @w (the head of @qp's send queue). Returns its status; *blocked when it must wait for
 * a receive at the peer; *len the bytes moved.
 */
static enum ibv_wc_status exec_one(struct fv_qp *qp, struct fv_swr *w, bool *blocked, uint32_t *len)
{
	struct fv_qp *peer = qp->peer;
	enum ibv_wc_status st = IBV_WC_SUCCESS;
	uint64_t total = w->inline_buf ? w->inline_len : sgl_len(w->sge, w->num_sge);
	int local_access = w->opcode == IBV_WR_RDMA_READ ? IBV_ACCESS_LOCAL_WRITE : 0;
	struct fv_mr *rmr = NULL;
	struct fv_rwr r = {0};
	uint8_t *buf;

	*blocked = false;
	/* An injected error counts requests, not attempts: a retry after RNR is not a new one. */
	if (!qp->rnr_blocked && fv.wc_err_nth && --fv.wc_err_nth == 0)
		return fv.wc_err_status;
	if (total > (1u << 31))
		return IBV_WC_LOC_LEN_ERR;
	if (!w->inline_buf && !local_sgl_ok(qp->ibqp.pd, w->sge, w->num_sge, local_access))
		return IBV_WC_LOC_PROT_ERR;
	/* Nobody answers: the transport retries, then gives up. */
	if (!peer || peer->ibqp.state == IBV_QPS_ERR || peer->ibqp.state == IBV_QPS_RESET)
		return IBV_WC_RETRY_EXC_ERR;

	switch (w->opcode) {
	case IBV_WR_SEND:
	case IBV_WR_SEND_WITH_IMM:
		if (!need_recv(qp, peer, &st, blocked))
			return st;
		r = peer->rq[peer->rq_head];
		if (!local_sgl_ok(peer->ibqp.pd, r.sge, r.num_sge, IBV_ACCESS_LOCAL_WRITE)) {
			rq_pop(peer);
			complete_recv(peer, &r, IBV_WC_LOC_PROT_ERR, 0, 0, NULL, 0);
			fv_qp_to_error(peer);
			return IBV_WC_REM_OP_ERR;
		}
		if (total > sgl_len(r.sge, r.num_sge)) {
			rq_pop(peer);
			complete_recv(peer, &r, IBV_WC_LOC_LEN_ERR, 0, 0, NULL, 0);
			fv_qp_to_error(peer);
			return IBV_WC_REM_INV_REQ_ERR;
		}
		break;
	case IBV_WR_RDMA_WRITE_WITH_IMM:
		if (!need_recv(qp, peer, &st, blocked))
			return st;
		/* fall through */
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_READ:
		/* A zero-length RDMA operation carries no key to check (IB spec). */
		if (total) {
			int access = w->opcode == IBV_WR_RDMA_READ ? IBV_ACCESS_REMOTE_READ
								   : IBV_ACCESS_REMOTE_WRITE;

			rmr = fv_mr_by_rkey(w->rkey);
			if (!rmr || rmr->ibmr.pd != peer->ibqp.pd || !(rmr->access & access) ||
			    !range_in_mr(rmr, w->remote_addr, total))
				return IBV_WC_REM_ACCESS_ERR;
		}
		break;
	default:
		return IBV_WC_LOC_QP_OP_ERR; /* refused at post time; never here */
	}

	/* Through a bounce buffer: source and destination may overlap (a loopback test). */
	buf = malloc(total ? total : 1);
	if (!buf)
		return IBV_WC_LOC_QP_OP_ERR;
	if (w->opcode == IBV_WR_RDMA_READ) {
		memcpy(buf, (void *)(uintptr_t)w->remote_addr, total);
		scatter(buf, total, w->sge, w->num_sge);
	} else {
		gather(w, buf);
		if (w->opcode == IBV_WR_SEND || w->opcode == IBV_WR_SEND_WITH_IMM)
			scatter(buf, total, r.sge, r.num_sge);
		else if (total)
			memcpy((void *)(uintptr_t)w->remote_addr, buf, total);
	}
	free(buf);
	fv.stats.bytes_moved += total;
	*len = (uint32_t)total;

	if (w->opcode == IBV_WR_SEND || w->opcode == IBV_WR_SEND_WITH_IMM) {
		r = rq_pop(peer);
		complete_recv(peer, &r, IBV_WC_SUCCESS, IBV_WC_RECV, *len, w, qp->ibqp.qp_num);
	} else if (w->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
		r = rq_pop(peer);
		complete_recv(peer, &r, IBV_WC_SUCCESS, IBV_WC_RECV_RDMA_WITH_IMM, *len, w,
			      qp->ibqp.qp_num);
	}
	return IBV_WC_SUCCESS;
}

/*
 * Execute @qp's queued send requests in order, until the queue is empty, a request waits for a
 * receive, or an error sends the QP to the error state. Held requests stay unless @force.
 */
void fv_qp_progress(struct fv_qp *qp, bool force)
{
	if (qp->ibqp.state == IBV_QPS_ERR) {
		flush_all(qp);
		return;
	}
	while (qp->sq_count && (force || !fv.hold)) {
		struct fv_swr *w = &qp->sq[qp->sq_head];
		enum ibv_wc_status st;
		uint32_t len = 0;
		bool blocked;

		st = exec_one(qp, w, &blocked, &len);
		qp->rnr_blocked = blocked;
		if (blocked)
			return;
		if (st == IBV_WC_WR_FLUSH_ERR) {
			/* Injected: the QP failed just before this request; it flushes too. */
			fv_qp_to_error(qp);
			return;
		}
		qp->sq_head = (qp->sq_head + 1) % (int)qp->cap.max_send_wr;
		qp->sq_count--;
		if (st != IBV_WC_SUCCESS) {
			complete_send(qp, w, st, 0);
			fv_qp_to_error(qp);
			return;
		}
		if ((w->send_flags & IBV_SEND_SIGNALED) || qp->sq_sig_all)
			complete_send(qp, w, IBV_WC_SUCCESS, len);
	}
}

void fv_qp_progress_all(void)
{
	for (struct fv_qp *q = fv.qps; q; q = q->next)
		fv_qp_progress(q, false);
}

/* ---- create, destroy, modify, query ---------------------------------------------------------- */

static int qp_check_attr(struct fv_dev *d, const struct ibv_qp_init_attr *a)
{
	if (a->qp_type != IBV_QPT_RC || a->srq || !a->send_cq || !a->recv_cq)
		return -EINVAL; /* UD, UC, XRC and SRQs are not modelled */
	if (a->send_cq->context->device != &d->ibdev || a->recv_cq->context->device != &d->ibdev)
		return -EINVAL;
	if (a->cap.max_send_wr > (uint32_t)d->max_qp_wr ||
	    a->cap.max_recv_wr > (uint32_t)d->max_qp_wr ||
	    a->cap.max_send_sge > (uint32_t)d->max_sge ||
	    a->cap.max_recv_sge > (uint32_t)d->max_sge ||
	    a->cap.max_inline_data > (uint32_t)d->max_inline)
		return -EINVAL;
	return 0;
}

int ps_vshim_qp_create(struct rdma_cm_id *ibid, struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	struct fv_id *id = ibid ? container_of(ibid, struct fv_id, ibid) : NULL;
	struct fv_dev *d;
	struct fv_qp *q;
	struct ibv_qp_cap c;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_QP_CREATE);
	/* librdmacm: the PD must be on id->verbs, the context rdma_cm chose. */
	if (!rc && (!id || !pd || !attr || ibid->qp || !ibid->verbs || pd->context != ibid->verbs))
		rc = -EINVAL;
	d = rc ? NULL : container_of(ibid->verbs, struct fv_ctx, ibctx)->dev;
	if (!rc)
		rc = qp_check_attr(d, attr);
	if (rc) {
		fv_unlock();
		return rc;
	}
	c = attr->cap;
	q = calloc(1, sizeof(*q));
	if (q) {
		size_t swr = c.max_send_wr ? c.max_send_wr : 1,
		       rwr = c.max_recv_wr ? c.max_recv_wr : 1;

		q->sq = calloc(swr, sizeof(*q->sq));
		q->sq_sges =
			calloc(swr * (c.max_send_sge ? c.max_send_sge : 1), sizeof(struct ibv_sge));
		q->sq_inline = c.max_inline_data ? calloc(swr, c.max_inline_data) : NULL;
		q->rq = calloc(rwr, sizeof(*q->rq));
		q->rq_sges =
			calloc(rwr * (c.max_recv_sge ? c.max_recv_sge : 1), sizeof(struct ibv_sge));
	}
	if (!q || !q->sq || !q->sq_sges || (c.max_inline_data && !q->sq_inline) || !q->rq ||
	    !q->rq_sges) {
		if (q) {
			free(q->sq);
			free(q->sq_sges);
			free(q->sq_inline);
			free(q->rq);
			free(q->rq_sges);
			free(q);
		}
		fv_unlock();
		return -ENOMEM;
	}
	q->ibqp.context = ibid->verbs;
	q->ibqp.qp_context = attr->qp_context;
	q->ibqp.pd = pd;
	q->ibqp.send_cq = attr->send_cq;
	q->ibqp.recv_cq = attr->recv_cq;
	q->ibqp.handle = fv.next_handle++;
	q->ibqp.qp_num = fv.next_qpn++ & 0xffffff;
	q->ibqp.qp_type = IBV_QPT_RC;
	/* rdma_cm moves it to INIT at once, so receives can be posted before connecting. */
	q->ibqp.state = IBV_QPS_INIT;
	q->id = id;
	q->cap = c; /* granted exactly as asked (rxe grants more inline than asked for) */
	q->sq_sig_all = attr->sq_sig_all != 0;
	q->rnr_retry = RNR_INFINITE;
	q->sq_next_seq = 1;
	cq_of(attr->send_cq)->nqps++;
	cq_of(attr->recv_cq)->nqps++;
	container_of(pd, struct fv_pd, ibpd)->nqps++;
	q->next = fv.qps;
	fv.qps = q;
	fv.counts.qps++;
	ibid->qp = &q->ibqp;
	fv_unlock();
	return 0;
}

/* Under the lock: unlink and free @q, dropping its completions from its CQs. */
void fv_qp_free(struct fv_qp *q)
{
	struct fv_qp **pp;

	for (pp = &fv.qps; *pp && *pp != q; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = q->next;
	fv_cq_purge_qp(cq_of(q->ibqp.send_cq), q);
	fv_cq_purge_qp(cq_of(q->ibqp.recv_cq), q);
	cq_of(q->ibqp.send_cq)->nqps--;
	cq_of(q->ibqp.recv_cq)->nqps--;
	container_of(q->ibqp.pd, struct fv_pd, ibpd)->nqps--;
	free(q->sq);
	free(q->sq_sges);
	free(q->sq_inline);
	free(q->rq);
	free(q->rq_sges);
	free(q);
}

void ps_vshim_qp_destroy(struct rdma_cm_id *ibid)
{
	struct fv_qp *q, *peer;

	if (!ibid || !ibid->qp)
		return;
	fv_lock();
	q = container_of(ibid->qp, struct fv_qp, ibqp);
	peer = q->peer;
	if (peer) {
		/* The peer now talks to nobody: what it has waiting or sends later times out. */
		peer->peer = NULL;
		fv_qp_progress(peer, false);
	}
	fv_qp_free(q);
	fv.counts.qps--;
	ibid->qp = NULL;
	fv_unlock();
}

int ps_vshim_qp_modify(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int attr_mask)
{
	struct fv_qp *q = container_of(ibqp, struct fv_qp, ibqp);
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_QP_MODIFY);
	if (!rc && (attr_mask & IBV_QP_RNR_RETRY))
		q->rnr_retry = attr->rnr_retry;
	if (!rc && (attr_mask & IBV_QP_STATE)) {
		switch (attr->qp_state) {
		case IBV_QPS_ERR:
			fv_qp_to_error(q);
			break;
		case IBV_QPS_RESET:
			/* Reset drops everything without completions, as providers clean the CQ. */
			q->sq_count = q->rq_count = 0;
			q->sq_retired = q->sq_next_seq - 1;
			q->rnr_blocked = false;
			fv_cq_purge_qp(cq_of(ibqp->send_cq), q);
			fv_cq_purge_qp(cq_of(ibqp->recv_cq), q);
			ibqp->state = IBV_QPS_RESET;
			break;
		default:
			/* Transitions rdma_cm would make; their validity is not checked. */
			ibqp->state = attr->qp_state;
			if (attr->qp_state == IBV_QPS_RTS)
				fv_qp_progress(q, false);
			break;
		}
	}
	fv_unlock();
	return rc;
}

int ps_vshim_qp_query(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int attr_mask,
		      struct ibv_qp_init_attr *init_attr)
{
	struct fv_qp *q = container_of(ibqp, struct fv_qp, ibqp);
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_QP_QUERY);
	if (!rc) {
		memset(attr, 0, sizeof(*attr));
		attr->qp_state = attr->cur_qp_state = ibqp->state;
		attr->path_mtu = IBV_MTU_1024;
		attr->qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
		attr->cap = q->cap;
		attr->dest_qp_num = q->peer ? q->peer->ibqp.qp_num : 0;
		attr->max_rd_atomic = attr->max_dest_rd_atomic = 16;
		attr->port_num = 1;
		attr->timeout = 14;
		attr->retry_cnt = 7;
		attr->rnr_retry = q->rnr_retry;
		attr->sq_draining = 0;
		if (init_attr) {
			memset(init_attr, 0, sizeof(*init_attr));
			init_attr->qp_context = ibqp->qp_context;
			init_attr->send_cq = ibqp->send_cq;
			init_attr->recv_cq = ibqp->recv_cq;
			init_attr->cap = q->cap;
			init_attr->qp_type = IBV_QPT_RC;
			init_attr->sq_sig_all = q->sq_sig_all;
		}
	}
	fv_unlock();
	return rc;
}

/* ---- posting ----------------------------------------------------------------------------------- */

/* What a provider refuses at post time (with bad_wr): -EINVAL or -ENOMEM. */
static int send_wr_check(const struct fv_qp *q, const struct ibv_send_wr *w)
{
	uint64_t total;

	switch (w->opcode) {
	case IBV_WR_SEND:
	case IBV_WR_SEND_WITH_IMM:
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_WRITE_WITH_IMM:
	case IBV_WR_RDMA_READ:
		break;
	default:
		return -EINVAL; /* atomics, invalidation, memory windows, TSO: not modelled */
	}
	if (w->num_sge < 0 || (uint32_t)w->num_sge > q->cap.max_send_sge ||
	    (w->num_sge && !w->sg_list))
		return -EINVAL;
	if (w->send_flags & IBV_SEND_INLINE) {
		total = sgl_len(w->sg_list, w->num_sge);
		if (w->opcode == IBV_WR_RDMA_READ || total > q->cap.max_inline_data)
			return -EINVAL;
	}
	if (sq_outstanding(q) >= (int)q->cap.max_send_wr)
		return -ENOMEM;
	return 0;
}

static void sq_push(struct fv_qp *q, const struct ibv_send_wr *w)
{
	int slot = (q->sq_head + q->sq_count) % (int)q->cap.max_send_wr;
	struct fv_swr *s = &q->sq[slot];

	memset(s, 0, sizeof(*s));
	s->wr_id = w->wr_id;
	s->seq = q->sq_next_seq++;
	s->opcode = w->opcode;
	s->send_flags = w->send_flags;
	s->imm_data = w->imm_data;
	s->remote_addr = w->wr.rdma.remote_addr;
	s->rkey = w->wr.rdma.rkey;
	s->num_sge = w->num_sge;
	s->sge = q->sq_sges + (size_t)slot * (q->cap.max_send_sge ? q->cap.max_send_sge : 1);
	if (w->num_sge)
		memcpy(s->sge, w->sg_list, (size_t)w->num_sge * sizeof(*s->sge));
	if (w->send_flags & IBV_SEND_INLINE) {
		/* Inline data is copied at post time: the buffers are reusable on return. */
		uint8_t *p = q->sq_inline + (size_t)slot * q->cap.max_inline_data;

		s->inline_buf = p;
		for (int i = 0; i < w->num_sge; i++) {
			memcpy(p, (void *)(uintptr_t)w->sg_list[i].addr, w->sg_list[i].length);
			p += w->sg_list[i].length;
		}
		s->inline_len = (uint32_t)(p - s->inline_buf);
		fv.stats.inline_wrs++;
	}
	q->sq_count++;
	fv.stats.send_wrs++;
	fv.stats.send_sges += (uint64_t)w->num_sge;
}

int ps_vshim_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr_out)
{
	struct fv_qp *q = container_of(ibqp, struct fv_qp, ibqp);
	struct ibv_send_wr *w = wr;
	int rc;

	fv_lock();
	fv.stats.post_send_calls++;
	rc = fv_injected(FAKE_VERBS_POST_SEND);
	/* Before RTS (the active side before its ESTABLISHED event): providers refuse. */
	if (!rc && ibqp->state != IBV_QPS_RTS && ibqp->state != IBV_QPS_ERR)
		rc = -EINVAL;
	for (; !rc && w; w = w->next) {
		rc = send_wr_check(q, w);
		if (!rc)
			sq_push(q, w);
		else
			break;
	}
	fv_qp_progress(q, false);
	fv_unlock();
	if (bad_wr_out)
		*bad_wr_out = rc ? w : NULL;
	return rc;
}

int ps_vshim_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr_out)
{
	struct fv_qp *q = container_of(ibqp, struct fv_qp, ibqp);
	struct ibv_recv_wr *w = wr;
	int rc;

	fv_lock();
	fv.stats.post_recv_calls++;
	rc = fv_injected(FAKE_VERBS_POST_RECV);
	if (!rc && ibqp->state == IBV_QPS_RESET)
		rc = -EINVAL;
	for (; !rc && w; w = w->next) {
		int slot = (q->rq_head + q->rq_count) %
			   (int)(q->cap.max_recv_wr ? q->cap.max_recv_wr : 1);
		struct fv_rwr *r = &q->rq[slot];

		if (w->num_sge < 0 || (uint32_t)w->num_sge > q->cap.max_recv_sge ||
		    (w->num_sge && !w->sg_list)) {
			rc = -EINVAL;
			break;
		}
		if (q->rq_count >= (int)q->cap.max_recv_wr) {
			rc = -ENOMEM;
			break;
		}
		r->wr_id = w->wr_id;
		r->num_sge = w->num_sge;
		r->sge =
			q->rq_sges + (size_t)slot * (q->cap.max_recv_sge ? q->cap.max_recv_sge : 1);
		if (w->num_sge)
			memcpy(r->sge, w->sg_list, (size_t)w->num_sge * sizeof(*r->sge));
		q->rq_count++;
		fv.stats.recv_wrs++;
	}
	if (ibqp->state == IBV_QPS_ERR)
		flush_all(q); /* posted to a QP in error: flushed at once */
	else if (q->peer && q->peer->rnr_blocked)
		fv_qp_progress(q->peer, false);
	fv_unlock();
	if (bad_wr_out)
		*bad_wr_out = rc ? w : NULL;
	return rc;
}

int fake_verbs_qp_outstanding(struct ibv_qp *ibqp)
{
	int n;

	fv_lock();
	n = sq_outstanding(container_of(ibqp, struct fv_qp, ibqp));
	fv_unlock();
	return n;
}

int fake_verbs_qp_recvs_posted(struct ibv_qp *ibqp)
{
	int n;

	fv_lock();
	n = container_of(ibqp, struct fv_qp, ibqp)->rq_count;
	fv_unlock();
	return n;
}

/* Under the lock, for fake_verbs_reset(): free every QP; returns how many. */
int fv_free_all_qp(void)
{
	int n = 0;

	while (fv.qps) {
		fv_qp_free(fv.qps);
		n++;
	}
	return n;
}
