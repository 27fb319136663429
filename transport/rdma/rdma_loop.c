/*
 * rdma backend: the loop. One CQ (send and receive completions of every connection) with a
 * completion channel, one rdma_cm event channel (every id of the loop: listeners, their
 * children, outgoing connections), an epoll fd holding both (and an eventfd), and the event ring.
 *
 * A poll: flush (post what is queued, one doorbell per connection), then take completions 32 at
 * a time and dispatch them by the tag in their wr_id, then handle cm events (when epoll saw the
 * channel readable, while a connection is being set up, or every RD_CM_PERIOD_MS of the coarse
 * clock: reading an empty channel is a system call). A poll with a timeout of 0 reads no precise
 * clock (in a virtual machine that can be an emulated device read), only the coarse one, which
 * is a memory read. If no event is ready and the caller
 * allows a wait: return pending credits, arm the CQ, poll it
 * once more (a completion may land between the last poll and the arming), and sleep in
 * epoll_wait on both channels, bounded by the caller's timeout. Handing an event to the caller
 * is what frees the op slot or reposts the receive buffer behind it (rdma_internal.h explains
 * why that bounds the ring).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/rdma/rdma_internal.h"

/* epoll data of the three fds of the set. */
enum { EP_COMP = 1, EP_CM = 2, EP_WAKE = 3 };

/* ---- event ring ------------------------------------------------------------------------- */

void ps_rdma_ev_push(struct rd_loop *l, enum ps_tp_ev_type type, struct rd_conn *c, int status,
		     void *ctx, void *buf, uint32_t len, uint32_t imm, uint32_t ref)
{
	struct ps_tp_qev e = {.ev = {.type = type,
				     .status = status,
				     .conn = &c->base,
				     .ctx = ctx,
				     .buf = buf,
				     .len = len,
				     .imm = imm},
			      .ref = ref};

	/* Full cannot happen: see the sizing argument in rdma_internal.h. */
	if (ps_tp_evq_push(&l->evq, &e))
		ps_log_err(RD_LOG, "event ring full (%u): event %d lost", l->evq.cap, type);
}

static int ev_pop(struct rd_loop *l, struct ps_tp_event *evs, int max)
{
	const struct ps_tp_qev *e;
	int n = 0;

	while (n < max && (e = ps_tp_evq_pop(&l->evq))) {
		evs[n++] = e->ev;
		/* Nothing is pushed from here, so *e stays intact for the call. */
		ps_rdma_delivered(rd_conn_of(e->ev.conn), e);
	}
	return n;
}

/* ---- completions ---------------------------------------------------------------------------- */

static void wc_dispatch(const struct ibv_wc *wc)
{
	struct rd_tag *t = (struct rd_tag *)(uintptr_t)wc->wr_id;

	switch (t ? t->type : 0) {
	case RD_TAG_WQE:
		ps_rdma_wqe_done(container_of(t, struct rd_wqe, tag), wc);
		break;
	case RD_TAG_RX:
		ps_rdma_rx_done(container_of(t, struct rd_rx, tag), wc);
		break;
	default:
		ps_log_err(RD_LOG, "completion with an unknown wr_id %#llx (status %s)",
			   (unsigned long long)wc->wr_id, ps_vshim_wc_status_str(wc->status));
	}
}

/* One batch: returns the number of completions taken, or a negative code. */
static int cq_batch(struct rd_loop *l)
{
	int n = ps_vshim_cq_poll(l->cq, RD_CQ_BATCH, l->wc);

	if (n < 0) {
		ps_log_err(RD_LOG, "polling the CQ: %s", ps_strerror(n));
		return n;
	}
	for (int i = 0; i < n; i++)
		wc_dispatch(&l->wc[i]);
	return n;
}

static void cq_progress(struct rd_loop *l)
{
	for (int i = 0; i < RD_CQ_BUDGET; i++)
		if (cq_batch(l) < RD_CQ_BATCH)
			break;
}

void ps_rdma_cq_drain(struct rd_loop *l)
{
	/*
	 * Until one batch comes back short: the CQ was empty at that moment, so everything it held
	 * before (in particular every completion of a QP destroyed just now) has been taken. New
	 * completions are bounded by what is posted, so this ends.
	 */
	while (cq_batch(l) == RD_CQ_BATCH)
		;
}

static void cq_ack(struct rd_loop *l)
{
	if (l->cq_unacked) {
		ps_vshim_cq_event_ack(l->cq, l->cq_unacked);
		l->cq_unacked = 0;
	}
}

/* Read the completion event behind a readable channel fd (the CQ is disarmed by it). */
static void comp_event(struct rd_loop *l)
{
	struct ibv_cq *cq;
	void *ctx;

	if (ps_vshim_cq_event_get(l->comp_ch, 0, &cq, &ctx))
		return; /* spurious wake-up */
	l->cq_armed = false;
	if (++l->cq_unacked >= RD_CQ_ACK_BATCH)
		cq_ack(l);
}

static int cq_arm(struct rd_loop *l)
{
	int rc = ps_vshim_cq_req_notify(l->cq, 0);

	if (rc) {
		ps_log_err(RD_LOG, "arming the CQ: %s", ps_strerror(rc));
		return rc;
	}
	l->cq_armed = true;
	return 0;
}

/* ---- cm events ------------------------------------------------------------------------------ */

void ps_rdma_cm_dispatch(struct rd_loop *l, struct rdma_cm_event *ev)
{
	struct rd_tag *t;
	struct rdma_cm_id *reject_id = NULL;

	if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
		t = ev->listen_id ? ev->listen_id->context : NULL;
		if (t && t->type == RD_TAG_LISTENER) {
			ps_rdma_conn_request(container_of(t, struct rd_listener, tag), ev);
			/* On refusal the new id is still ours (context cleared by the handler). */
			if (!ev->id->context)
				reject_id = ev->id;
		} else {
			reject_id = ev->id;
		}
	} else {
		t = ev->id ? ev->id->context : NULL;
		if (t && t->type == RD_TAG_CONN) {
			ps_rdma_conn_cm_event(container_of(t, struct rd_conn, cm_tag), ev);
		} else if (t && t->type == RD_TAG_LISTENER) {
			ps_log_warn(RD_LOG, "listener: %s (status %d)",
				    ps_vshim_cm_event_str(ev->event), ev->status);
		}
	}
	/* Acknowledge first: destroying an id waits for its events to be acknowledged. */
	ps_vshim_cm_event_ack(ev);
	if (reject_id)
		ps_vshim_cm_id_destroy(reject_id);
	/* A handshake that failed before the caller saw it is freed now that the event is acked. */
	ps_rdma_reap(l);
}

/*
 * Is a read of the cm channel due (see RD_CM_PERIOD_MS)? Inline: every poll asks. The clock is
 * read here only, for the periodic read; a read for another reason (epoll, a handshake) does
 * not restart the period, which costs at most one early empty read.
 */
static inline bool cm_due(struct rd_loop *l)
{
	uint64_t now;

	if (l->cm_ready || l->ncm_wait)
		return true;
	if (++l->cm_polls < RD_CM_CLOCK_EVERY)
		return false;
	l->cm_polls = 0;
	now = ps_clock_coarse_ms();
	if (now - l->cm_read_ms < RD_CM_PERIOD_MS)
		return false;
	l->cm_read_ms = now;
	return true;
}

/* Read and dispatch what waits on the cm channel (when cm_due()). */
static void cm_progress(struct rd_loop *l)
{
	struct rdma_cm_event *ev;
	int rc;

	l->cm_ready = false;
	for (int i = 0; i < RD_CM_BUDGET; i++) {
		rc = ps_vshim_cm_event_get(l->cm_ch, 0, &ev);
		if (rc) {
			if (rc != PS_ETIMEOUT)
				ps_log_err(RD_LOG, "reading cm events: %s", ps_strerror(rc));
			return;
		}
		ps_rdma_cm_dispatch(l, ev);
	}
}

/* ---- loop ---------------------------------------------------------------------------------- */

static int ep_add(int epfd, int fd, uint32_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/*
 * Send-queue WRs of a connection: two per op slot, room for split gather lists and credit
 * writes; more WRs than slots also keep a full SQ from stalling ops that fit in a slot.
 */
static uint32_t sq_depth_of(const struct rd_dev *d, uint32_t send_depth)
{
	uint64_t want = 2ull * send_depth;

	if (want < 16)
		want = 16;
	return want > d->max_qp_wr ? d->max_qp_wr : (uint32_t)want;
}

int ps_rdma_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
			struct ps_tp_loop **out)
{
	struct rd_dev *d = rd_dev_of(dev);
	const struct ps_tp_loop_opts *o;
	struct rd_loop *l;
	uint64_t cap, per_conn, want;
	int rc = -ENOMEM;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = l->evq.wakefd = -1;
	ps_tp_loop_base_init(&l->base, dev, opts);
	o = &l->base.opts;
	l->dev = d;
	rd_list_init(&l->conns);
	rd_list_init(&l->listeners);
	rd_list_init(&l->flushq);
	rd_list_init(&l->credq);
	rd_list_init(&l->starved);
	if (o->recv_depth > RD_MAX_DEPTH || o->send_depth > RD_MAX_DEPTH ||
	    o->recv_depth > d->max_qp_wr) {
		rc = -EINVAL;
		goto err;
	}
	cap = (uint64_t)o->max_conns * ((uint64_t)o->send_depth + o->recv_depth + 2);
	if (cap > UINT32_MAX) {
		rc = -EINVAL;
		goto err;
	}
	rc = ps_tp_evq_init(&l->evq, (uint32_t)cap);
	if (rc)
		goto err;

	/* Worst case per connection: its whole send and receive queues completing (flushing). */
	l->sq_depth = sq_depth_of(d, o->send_depth);
	per_conn = (uint64_t)l->sq_depth + o->recv_depth;
	want = per_conn * o->max_conns;
	if (want > d->max_cqe)
		want = d->max_cqe;
	if (want < per_conn) {
		ps_log_err(RD_LOG,
			   "send_depth %u + recv_depth %u need %llu CQ entries per "
			   "connection; %s has at most %u",
			   o->send_depth, o->recv_depth, (unsigned long long)per_conn, d->info.name,
			   d->max_cqe);
		rc = -EINVAL;
		goto err;
	}
	if (want < per_conn * o->max_conns)
		ps_log_info(RD_LOG,
			    "%s: CQ of %llu entries holds %llu connections of this loop, "
			    "not max_conns %u",
			    d->info.name, (unsigned long long)want,
			    (unsigned long long)(want / per_conn), o->max_conns);
	rc = ps_vshim_comp_channel_create(d->ctx, &l->comp_ch);
	if (rc)
		goto err;
	rc = ps_vshim_cq_create(d->ctx, (int)want, l, l->comp_ch, 0, &l->cq);
	if (rc)
		goto err;
	l->cq_cap = l->cq->cqe > 0 && (uint64_t)l->cq->cqe < want ? (uint32_t)l->cq->cqe
								  : (uint32_t)want;
	rc = ps_vshim_cm_channel_create(&l->cm_ch);
	if (rc)
		goto err;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		goto err_errno;
	rc = ep_add(l->epfd, l->comp_ch->fd, EP_COMP);
	if (!rc)
		rc = ep_add(l->epfd, l->cm_ch->fd, EP_CM);
	if (!rc)
		rc = ep_add(l->epfd, l->evq.wakefd, EP_WAKE);
	if (rc)
		goto err;
	*out = &l->base;
	return 0;

err_errno:
	rc = -errno;
err:
	if (l->epfd >= 0)
		close(l->epfd);
	ps_vshim_cm_channel_destroy(l->cm_ch);
	ps_vshim_cq_destroy(l->cq);
	ps_vshim_comp_channel_destroy(l->comp_ch);
	ps_tp_evq_fini(&l->evq);
	ps_tp_loop_base_fini(&l->base);
	free(l);
	return rc;
}

void ps_rdma_loop_destroy(struct ps_tp_loop *loop)
{
	struct rd_loop *l = rd_loop_of(loop);
	int rc;

	l->evq.count = 0; /* every event goes; no need to purge them one connection at a time */
	l->destroying = true;
	/*
	 * Connections first (their QPs use the CQ, their ids the channel). No CQ drain per
	 * connection: the CQ goes next, and its completions with it.
	 */
	while (!rd_list_empty(&l->conns))
		ps_rdma_conn_free(container_of(l->conns.next, struct rd_conn, link));
	while (!rd_list_empty(&l->listeners))
		ps_rdma_listener_close(
			&container_of(l->listeners.next, struct rd_listener, link)->base);
	cq_ack(l);
	rc = ps_vshim_cq_destroy(l->cq);
	if (rc)
		ps_log_err(RD_LOG, "destroying the CQ: %s", ps_strerror(rc));
	ps_vshim_comp_channel_destroy(l->comp_ch);
	ps_vshim_cm_channel_destroy(l->cm_ch);
	close(l->epfd);
	ps_tp_evq_fini(&l->evq);
	ps_tp_loop_base_fini(&l->base);
	free(l);
}

int ps_rdma_loop_fd(struct ps_tp_loop *loop)
{
	struct rd_loop *l = rd_loop_of(loop);

	/*
	 * The fd is readable while a completion notification or a cm event waits to be read;
	 * a busy poll reads neither (that would be a system call each), so from now on a poll
	 * that finds nothing drains the fd, else a caller sleeping on it would never sleep again.
	 */
	l->fd_shared = true;
	return l->epfd;
}

/* ---- flush and poll ------------------------------------------------------------------------ */

static void flush_list(struct rd_list *q, bool force_credit)
{
	struct rd_list *n, *next;

	/* A flush moves only its own connection off the list, so the saved next stays valid. */
	for (n = q->next; n != q; n = next) {
		next = n->next;
		ps_rdma_conn_flush(container_of(n, struct rd_conn, flush_link), force_credit);
	}
}

/* Flush what is queued; @force_credit (the loop is about to sleep): every pending credit too. */
static void flush_all(struct rd_loop *l, bool force_credit)
{
	flush_list(&l->flushq, force_credit);
	if (force_credit)
		flush_list(&l->credq, true);
}

int ps_rdma_flush(struct ps_tp_loop *loop)
{
	struct rd_loop *l = rd_loop_of(loop);

	flush_all(l, false);
	ps_tp_evq_wake_sync(&l->evq);
	return 0;
}

/* Can a connection that was refused an op take it now? Takes those that can off the list. */
static bool starved_fed(struct rd_loop *l)
{
	struct rd_list *n, *next;
	bool fed = false;

	for (n = l->starved.next; n != &l->starved; n = next) {
		struct rd_conn *c = container_of(n, struct rd_conn, starved_link);

		next = n->next;
		if (ps_rdma_conn_fed(c)) {
			rd_list_del(&c->starved_link);
			fed = true;
		}
	}
	return fed;
}

/* Handle what epoll_wait() on the loop's fd reported. */
static void ep_dispatch(struct rd_loop *l, const struct epoll_event *epevs, int n)
{
	for (int i = 0; i < n; i++) {
		if (epevs[i].data.u32 == EP_COMP)
			comp_event(l);
		else if (epevs[i].data.u32 == EP_CM)
			l->cm_ready = true; /* cm_progress reads them next */
	}
	/* EP_WAKE: the ring, checked by the caller. */
}

int ps_rdma_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms)
{
	struct rd_loop *l = rd_loop_of(loop);
	uint64_t deadline = 0; /* read the clock only once a wait is possible (a busy loop never) */
	struct epoll_event epevs[4];
	int left, wait, n, cnt;

	flush_all(l, false);
	for (;;) {
		cq_progress(l);
		if (cm_due(l))
			cm_progress(l);
		wait = INT32_MAX;
		if (l->nhandshake || l->nflushing)
			wait = ps_rdma_conn_expire(l, wait);
		if (l->nreap)
			ps_rdma_reap(l);
		if (l->evq.count || starved_fed(l))
			break;
		if (!timeout_ms)
			break;
		if (!deadline)
			deadline = ps_clock_deadline_ms((uint64_t)timeout_ms);
		left = ps_clock_remaining_ms(deadline);
		if (!left)
			break;
		/* About to sleep: the connections are idle, so return what credits are pending. */
		flush_all(l, true);
		if (!l->cq_armed) {
			if (cq_arm(l))
				break;
			continue; /* poll once more: a completion may have landed before the arming */
		}
		if (wait > left)
			wait = left;
		if (!rd_list_empty(&l->starved) && wait > RD_CREDIT_WATCH_MS)
			wait = RD_CREDIT_WATCH_MS;
		n = epoll_wait(l->epfd, epevs, 4, wait);
		if (n < 0 && errno != EINTR)
			return -errno;
		ep_dispatch(l, epevs, n > 0 ? n : 0);
	}
	/*
	 * Nothing for the caller, who may now sleep on ps_tp_loop_fd(): read what left it
	 * readable (a busy poll never reads the channels), then leave the CQ armed so that the
	 * next completion wakes it (and poll once more for one that beat the arming). Polls that
	 * return events skip this: a caller polls until nothing is left before it sleeps.
	 */
	if (!l->evq.count && l->fd_shared) {
		n = epoll_wait(l->epfd, epevs, 4, 0);
		if (n > 0) {
			ep_dispatch(l, epevs, n);
			cq_progress(l);
			if (cm_due(l))
				cm_progress(l);
		}
	}
	if (!l->evq.count && !l->cq_armed && !cq_arm(l))
		cq_progress(l);
	cnt = ev_pop(l, evs, max);
	ps_tp_evq_wake_sync(&l->evq);
	return cnt;
}
