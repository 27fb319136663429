/*
 * The fake verbs layer, part 3: completion channels and completion queues.
 *
 * A CQ is a ring of exactly the requested size (cq->cqe == what was asked: real providers round
 * up, so code that relies on the rounding breaks here first). A completion that finds the ring
 * full is lost: the CQ is marked overflowed, an IBV_EVENT_CQ_ERR async event is raised on its
 * context, and every later poll fails with -EIO, which is what an overrun CQ does on real
 * hardware (mlx5 reports the CQ error and stops).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <psplus/error.h>

#include "tests/unit/fake_verbs_int.h"

/* ---- completion channels -------------------------------------------------------------------- */

int ps_vshim_comp_channel_create(struct ibv_context *ctx, struct ibv_comp_channel **ch_out)
{
	struct fv_comp_ch *ch;
	int rc, fd;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_COMP_CHANNEL_CREATE);
	if (!rc && !ctx)
		rc = -EINVAL;
	if (!rc) {
		ch = calloc(1, sizeof(*ch));
		fd = ch ? fv_eventfd_create() : -ENOMEM;
		if (fd < 0) {
			free(ch);
			rc = fd;
		} else {
			ch->ibch.context = ctx;
			ch->ibch.fd = fd;
			ch->ibch.refcnt = 0;
			ch->next = fv.comp_chs;
			fv.comp_chs = ch;
			container_of(ctx, struct fv_ctx, ibctx)->nchildren++;
			fv.counts.comp_channels++;
			*ch_out = &ch->ibch;
		}
	}
	fv_unlock();
	return rc;
}

static void comp_ch_free(struct fv_comp_ch *ch)
{
	struct fv_chev *e;

	while ((e = ch->head)) {
		ch->head = e->next;
		free(e);
	}
	close(ch->ibch.fd);
	free(ch);
}

int ps_vshim_comp_channel_destroy(struct ibv_comp_channel *ibch)
{
	struct fv_comp_ch *ch, **pp;
	int rc;

	if (!ibch)
		return 0;
	ch = container_of(ibch, struct fv_comp_ch, ibch);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_COMP_CHANNEL_DESTROY);
	if (!rc && ch->ncqs)
		rc = -EBUSY; /* libibverbs: EBUSY while CQs use it */
	if (!rc) {
		for (pp = &fv.comp_chs; *pp && *pp != ch; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = ch->next;
		container_of(ibch->context, struct fv_ctx, ibctx)->nchildren--;
		fv.counts.comp_channels--;
		comp_ch_free(ch);
	}
	fv_unlock();
	return rc;
}

/* Under the lock: queue "@cq fired" on its channel. */
static void comp_ch_push(struct fv_comp_ch *ch, struct fv_cq *cq)
{
	struct fv_chev *e = calloc(1, sizeof(*e));

	if (!e)
		return;
	e->cq = cq;
	if (ch->tail)
		ch->tail->next = e;
	else
		ch->head = e;
	ch->tail = e;
	if (ch->head == e)
		fv_eventfd_signal(ch->ibch.fd);
}

/* Under the lock: forget events of @cq not yet taken (the kernel drops them on destroy). */
static void comp_ch_forget(struct fv_comp_ch *ch, struct fv_cq *cq)
{
	struct fv_chev **pp = &ch->head, *e;

	ch->tail = NULL;
	while ((e = *pp)) {
		if (e->cq == cq) {
			*pp = e->next;
			free(e);
		} else {
			ch->tail = e;
			pp = &e->next;
		}
	}
	if (!ch->head)
		fv_eventfd_drain(ch->ibch.fd);
}

/* ---- completion queues ---------------------------------------------------------------------- */

int ps_vshim_cq_create(struct ibv_context *ctx, int cqe, void *cq_context,
		       struct ibv_comp_channel *ibch, int comp_vector, struct ibv_cq **cq_out)
{
	struct fv_cq *cq;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CQ_CREATE);
	if (!rc && (!ctx || cqe < 1 || comp_vector < 0 || comp_vector >= ctx->num_comp_vectors))
		rc = -EINVAL;
	if (!rc && cqe > container_of(ctx, struct fv_ctx, ibctx)->dev->max_cqe)
		rc = -EINVAL;
	if (!rc && ibch && ibch->context->device != ctx->device)
		rc = -EINVAL;
	if (!rc) {
		cq = calloc(1, sizeof(*cq));
		if (cq)
			cq->ring = calloc((size_t)cqe, sizeof(*cq->ring));
		if (!cq || !cq->ring) {
			free(cq);
			rc = -ENOMEM;
		} else {
			cq->ibcq.context = ctx;
			cq->ibcq.channel = ibch;
			cq->ibcq.cq_context = cq_context;
			cq->ibcq.handle = fv.next_handle++;
			cq->ibcq.cqe = cqe;
			if (ibch)
				container_of(ibch, struct fv_comp_ch, ibch)->ncqs++;
			cq->next = fv.cqs;
			fv.cqs = cq;
			container_of(ctx, struct fv_ctx, ibctx)->nchildren++;
			fv.counts.cqs++;
			*cq_out = &cq->ibcq;
		}
	}
	fv_unlock();
	return rc;
}

static void cq_unlink_free(struct fv_cq *cq)
{
	struct fv_cq **pp;

	for (pp = &fv.cqs; *pp && *pp != cq; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = cq->next;
	if (cq->ibcq.channel) {
		struct fv_comp_ch *ch = container_of(cq->ibcq.channel, struct fv_comp_ch, ibch);

		comp_ch_forget(ch, cq);
		ch->ncqs--;
	}
	container_of(cq->ibcq.context, struct fv_ctx, ibctx)->nchildren--;
	free(cq->ring);
	free(cq);
}

int ps_vshim_cq_destroy(struct ibv_cq *ibcq)
{
	struct fv_cq *cq;
	int rc;

	if (!ibcq)
		return 0;
	cq = container_of(ibcq, struct fv_cq, ibcq);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_CQ_DESTROY);
	if (!rc && cq->nqps)
		rc = -EBUSY; /* the provider refuses while QPs use it */
	if (!rc && cq->events_taken) {
		/* libibverbs would block forever in ibv_destroy_cq() waiting for the acks. */
		fv_misuse("ps_vshim_cq_destroy() with %u completion event(s) not acknowledged",
			  cq->events_taken);
		rc = -EBUSY;
	}
	if (!rc) {
		fv.counts.cqs--;
		cq_unlink_free(cq);
	}
	fv_unlock();
	return rc;
}

/*
 * Under the lock: add a completion. Arming fires once: the first completion after
 * ps_vshim_cq_req_notify() (the first solicited or error one, with solicited_only) queues one
 * event on the channel and disarms.
 */
void fv_cq_push(struct fv_cq *cq, const struct fv_cqe *cqe)
{
	bool fires;

	if (cq->overflowed)
		return;
	fv.stats.completions++;
	if (cqe->wc.status != IBV_WC_SUCCESS)
		fv.stats.error_completions++;
	if (cq->count == cq->ibcq.cqe) {
		cq->overflowed = true;
		fv.stats.cq_overflows++;
		fv_async_push(container_of(cq->ibcq.context, struct fv_ctx, ibctx),
			      IBV_EVENT_CQ_ERR, &cq->ibcq, 0);
		return;
	}
	cq->ring[(cq->head + cq->count) % cq->ibcq.cqe] = *cqe;
	cq->count++;
	fires = cq->armed &&
		(!cq->solicited_only || cqe->solicited || cqe->wc.status != IBV_WC_SUCCESS);
	if (fires) {
		cq->armed = false;
		if (cq->ibcq.channel)
			comp_ch_push(container_of(cq->ibcq.channel, struct fv_comp_ch, ibch), cq);
	}
}

/* Under the lock: drop @qp's completions from @cq (a destroyed QP's, as providers clean them). */
void fv_cq_purge_qp(struct fv_cq *cq, struct fv_qp *qp)
{
	int n = cq->ibcq.cqe, kept = 0;

	for (int i = 0; i < cq->count; i++) {
		struct fv_cqe e = cq->ring[(cq->head + i) % n];

		if (e.qp != qp)
			cq->ring[(cq->head + kept++) % n] = e;
	}
	cq->count = kept;
}

int ps_vshim_cq_poll(struct ibv_cq *ibcq, int n, struct ibv_wc *wc)
{
	struct fv_cq *cq = container_of(ibcq, struct fv_cq, ibcq);
	int got = 0, rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CQ_POLL);
	if (!rc && cq->overflowed)
		rc = -EIO;
	if (!rc && n < 0)
		rc = -EINVAL;
	if (rc) {
		fv_unlock();
		return rc;
	}
	while (got < n && cq->count) {
		struct fv_cqe *e = &cq->ring[cq->head];

		wc[got++] = e->wc;
		/* Polling a send completion frees its slot and those of the unsignalled before it. */
		if (e->sq_seq)
			fv_qp_retire(e->qp, e->sq_seq);
		cq->head = (cq->head + 1) % ibcq->cqe;
		cq->count--;
	}
	fv_unlock();
	return got;
}

int ps_vshim_cq_req_notify(struct ibv_cq *ibcq, int solicited_only)
{
	struct fv_cq *cq = container_of(ibcq, struct fv_cq, ibcq);
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CQ_REQ_NOTIFY);
	if (!rc && !ibcq->channel)
		rc = -EINVAL;
	if (!rc) {
		/* Re-arming an armed CQ for all completions widens it, as verbs specifies. */
		cq->solicited_only =
			cq->armed ? cq->solicited_only && solicited_only : solicited_only != 0;
		cq->armed = true;
	}
	fv_unlock();
	return rc;
}

int ps_vshim_cq_event_get(struct ibv_comp_channel *ibch, int timeout_ms, struct ibv_cq **cq_out,
			  void **cq_context_out)
{
	struct fv_comp_ch *ch = container_of(ibch, struct fv_comp_ch, ibch);
	uint64_t deadline = fv_deadline(timeout_ms);
	struct fv_chev *e;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CQ_EVENT_GET);
	fv_unlock();
	if (rc)
		return rc;
	for (;;) {
		fv_lock();
		e = ch->head;
		if (e) {
			ch->head = e->next;
			if (!ch->head) {
				ch->tail = NULL;
				fv_eventfd_drain(ibch->fd);
			}
			e->cq->events_taken++;
			fv.counts.cq_events++;
			*cq_out = &e->cq->ibcq;
			*cq_context_out = e->cq->ibcq.cq_context;
		}
		fv_unlock();
		if (e) {
			free(e);
			return 0;
		}
		rc = fv_wait_fd(ibch->fd, deadline);
		if (rc)
			return rc;
	}
}

void ps_vshim_cq_event_ack(struct ibv_cq *ibcq, unsigned int nevents)
{
	struct fv_cq *cq = container_of(ibcq, struct fv_cq, ibcq);

	fv_lock();
	if (nevents > cq->events_taken) {
		fv_misuse("ps_vshim_cq_event_ack(%u) with only %u event(s) taken", nevents,
			  cq->events_taken);
		nevents = cq->events_taken;
	}
	cq->events_taken -= nevents;
	fv.counts.cq_events -= (int)nevents;
	fv_unlock();
}

/* Under the lock, for fake_verbs_reset(): free every CQ and channel; returns how many. */
int fv_free_all_cq(void)
{
	int n = 0;

	while (fv.cqs) {
		fv.cqs->nqps = 0;
		cq_unlink_free(fv.cqs);
		n++;
	}
	while (fv.comp_chs) {
		struct fv_comp_ch *ch = fv.comp_chs;

		fv.comp_chs = ch->next;
		comp_ch_free(ch);
		n++;
	}
	return n;
}
