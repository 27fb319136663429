/*
 * The fake verbs layer, part 5: rdma_cm event channels, ids and addresses. Connections (connect,
 * accept, reject, disconnect) are in fake_verbs_conn.c, whose header comment lists the
 * behaviours checked against rdma_cm on rxe and where the fake differs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "tests/unit/fake_verbs_int.h"

/* IB CM reject reason the kernel uses when the active side gives up on a request it sent. */
#define REJ_TIMEOUT 4

struct fv_id *fv_id_of(struct rdma_cm_id *ibid)
{
	return container_of(ibid, struct fv_id, ibid);
}

uint32_t fv_src_addr(const struct fv_id *id)
{
	return id->ibid.route.addr.src_sin.sin_addr.s_addr;
}

uint16_t fv_src_port(const struct fv_id *id)
{
	return ntohs(id->ibid.route.addr.src_sin.sin_port);
}

void fv_set_addr(struct sockaddr_in *sin, uint32_t addr, uint16_t port)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = addr;
	sin->sin_port = htons(port);
}

/* ---- events ---------------------------------------------------------------------------------- */

/*
 * Queue an event for @id (ev->id) on @owner's channel (@owner: the id it is accounted to; the
 * listener for a connect request). @pdata of @len bytes is delivered zero-padded to @padded.
 */
struct fv_cm_ev *fv_ev_push(struct fv_id *owner, struct fv_id *id, enum rdma_cm_event_type type,
			    int status, const void *pdata, size_t len, size_t padded)
{
	struct fv_cm_ch *ch = owner->ch;
	struct fv_cm_ev *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->owner = owner;
	e->ev.id = &id->ibid;
	e->ev.event = type;
	e->ev.status = status;
	if (padded) {
		if (pdata && len)
			memcpy(e->pdata, pdata, len);
		e->ev.param.conn.private_data = e->pdata;
		e->ev.param.conn.private_data_len = (uint8_t)padded;
	}
	if (ch->tail)
		ch->tail->next = e;
	else
		ch->head = e;
	ch->tail = e;
	if (ch->head == e)
		fv_eventfd_signal(ch->ibch.fd);
	return e;
}

/* Drop the queued (not yet taken) events that concern @id, as the kernel does on destroy. */
static void ev_forget(struct fv_cm_ch *ch, struct fv_id *id)
{
	struct fv_cm_ev **pp = &ch->head, *e;

	ch->tail = NULL;
	while ((e = *pp)) {
		if (e->owner == id || e->ev.id == &id->ibid) {
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

int ps_vshim_cm_channel_create(struct rdma_event_channel **ch_out)
{
	struct fv_cm_ch *ch;
	int rc, fd;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_CHANNEL_CREATE);
	if (!rc) {
		ch = calloc(1, sizeof(*ch));
		fd = ch ? fv_eventfd_create() : -ENOMEM;
		if (fd < 0) {
			free(ch);
			rc = fd;
		} else {
			ch->ibch.fd = fd;
			ch->next = fv.cm_chs;
			fv.cm_chs = ch;
			fv.counts.cm_channels++;
			*ch_out = &ch->ibch;
		}
	}
	fv_unlock();
	return rc;
}

static void cm_ch_free(struct fv_cm_ch *ch)
{
	struct fv_cm_ev *e;

	while ((e = ch->head)) {
		ch->head = e->next;
		free(e);
	}
	close(ch->ibch.fd);
	free(ch);
}

void ps_vshim_cm_channel_destroy(struct rdma_event_channel *ibch)
{
	struct fv_cm_ch *ch, **pp;

	if (!ibch)
		return;
	ch = container_of(ibch, struct fv_cm_ch, ibch);
	fv_lock();
	if (ch->nids) {
		/* librdmacm would leave the ids pointing at a freed channel. */
		fv_misuse("ps_vshim_cm_channel_destroy() with %d id(s) still on it", ch->nids);
		fv_unlock();
		return;
	}
	for (pp = &fv.cm_chs; *pp && *pp != ch; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = ch->next;
	fv.counts.cm_channels--;
	cm_ch_free(ch);
	fv_unlock();
}

int ps_vshim_cm_event_get(struct rdma_event_channel *ibch, int timeout_ms,
			  struct rdma_cm_event **ev_out)
{
	struct fv_cm_ch *ch = container_of(ibch, struct fv_cm_ch, ibch);
	uint64_t deadline = fv_deadline(timeout_ms);
	struct fv_cm_ev *e;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_EVENT_GET);
	fv_unlock();
	if (rc)
		return rc;
	for (;;) {
		fv_lock();
		e = ch->head;
		if (e) {
			struct fv_id *id = fv_id_of(e->ev.id);

			ch->head = e->next;
			e->next = fv.cm_taken;
			fv.cm_taken = e;
			if (!ch->head) {
				ch->tail = NULL;
				fv_eventfd_drain(ibch->fd);
			}
			e->owner->events_taken++;
			fv.counts.cm_events++;
			/* librdmacm moves the active QP to RTR and RTS while handing out ESTABLISHED. */
			if (e->ev.event == RDMA_CM_EVENT_ESTABLISHED && !id->passive &&
			    id->ibid.qp &&
			    (id->ibid.qp->state == IBV_QPS_INIT ||
			     id->ibid.qp->state == IBV_QPS_RTR))
				id->ibid.qp->state = IBV_QPS_RTS;
			*ev_out = &e->ev;
		}
		fv_unlock();
		if (e)
			return 0;
		rc = fv_wait_fd(ibch->fd, deadline);
		if (rc)
			return rc;
	}
}

int ps_vshim_cm_event_ack(struct rdma_cm_event *ev)
{
	struct fv_cm_ev *e = container_of(ev, struct fv_cm_ev, ev);
	int rc;

	struct fv_cm_ev **pp;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_EVENT_ACK);
	for (pp = &fv.cm_taken; !rc && *pp && *pp != e; pp = &(*pp)->next)
		;
	if (!rc && !*pp) {
		fv_misuse("ps_vshim_cm_event_ack() of an event not taken (acked twice?)");
		rc = -EINVAL;
	}
	if (!rc) {
		*pp = e->next;
		e->owner->events_taken--;
		fv.counts.cm_events--;
		free(e);
	}
	fv_unlock();
	return rc;
}

/* ---- ids ------------------------------------------------------------------------------------- */

struct fv_id *fv_id_new(struct fv_cm_ch *ch, void *context, enum rdma_port_space ps)
{
	struct fv_id *id = calloc(1, sizeof(*id));

	if (!id)
		return NULL;
	id->ch = ch;
	id->ibid.channel = &ch->ibch;
	id->ibid.context = context;
	id->ibid.ps = ps;
	id->ibid.qp_type = IBV_QPT_RC;
	id->next = fv.ids;
	fv.ids = id;
	ch->nids++;
	fv.counts.cm_ids++;
	return id;
}

int ps_vshim_cm_id_create(struct rdma_event_channel *ibch, void *context, enum rdma_port_space ps,
			  struct rdma_cm_id **id_out)
{
	struct fv_id *id;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_ID_CREATE);
	/* A NULL channel (librdmacm's synchronous mode) and other port spaces: not modelled. */
	if (!rc && (!ibch || ps != RDMA_PS_TCP))
		rc = -EINVAL;
	if (!rc) {
		id = fv_id_new(container_of(ibch, struct fv_cm_ch, ibch), context, ps);
		if (!id)
			rc = -ENOMEM;
		else
			*id_out = &id->ibid;
	}
	fv_unlock();
	return rc;
}

/* Forget @id's connection partner, telling it what the kernel's CM would on @id's teardown. */
void fv_id_leave(struct fv_id *id)
{
	struct fv_id *p = id->peer;

	if (!p)
		return;
	switch (id->state) {
	case FV_ID_ESTABLISHED: /* our DREQ */
		if (p->state == FV_ID_ESTABLISHED) {
			fv_ev_push(p, p, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
			p->state = FV_ID_DISC_RCVD;
		}
		break;
	case FV_ID_DISC_RCVD: /* our DREP */
		if (p->state == FV_ID_DISC_SENT) {
			fv_ev_push(p, p, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
			p->state = FV_ID_DISCONNECTED;
		}
		break;
	case FV_ID_CONNECT:
		if (id->passive) {
			/* A request never answered: the kernel rejects it when the id goes. */
			fv_ev_push(p, p, RDMA_CM_EVENT_REJECTED, FAKE_VERBS_REJ_CONSUMER_DEFINED,
				   NULL, 0, FV_REJ_PDATA);
		} else {
			/* The active side gave up on its request: the passive side gets a REJ. */
			fv_ev_push(p, p, RDMA_CM_EVENT_REJECTED, REJ_TIMEOUT, NULL, 0,
				   FV_REJ_PDATA);
		}
		p->state = FV_ID_REJECTED;
		break;
	default:
		break;
	}
	p->peer = NULL;
	id->peer = NULL;
}

static void id_free(struct fv_id *id)
{
	struct fv_id **pp;

	for (pp = &fv.ids; *pp && *pp != id; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = id->next;
	id->ch->nids--;
	free(id);
}

int ps_vshim_cm_id_destroy(struct rdma_cm_id *ibid)
{
	struct fv_id *id;
	int rc;

	if (!ibid)
		return 0;
	id = fv_id_of(ibid);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_ID_DESTROY);
	if (!rc && id->events_taken) {
		/* librdmacm blocks until every event reported for the id is acknowledged. */
		fv_misuse("ps_vshim_cm_id_destroy() with %u event(s) not acknowledged",
			  id->events_taken);
		rc = -EBUSY;
	}
	if (!rc && ibid->qp) {
		fv_misuse("ps_vshim_cm_id_destroy() before ps_vshim_qp_destroy()");
		rc = -EBUSY;
	}
	if (rc) {
		fv_unlock();
		return rc;
	}
	/* Requests not taken yet die with the listener: their ids go, their peers get a REJ. */
	while (id->listening) {
		struct fv_cm_ev *e = id->ch->head;
		struct fv_id *child;

		while (e && !(e->owner == id && e->ev.event == RDMA_CM_EVENT_CONNECT_REQUEST))
			e = e->next;
		if (!e)
			break;
		child = fv_id_of(e->ev.id);
		fv_id_leave(child); /* may queue on this channel: rescan from the head */
		ev_forget(child->ch, child);
		id_free(child);
		fv.counts.cm_ids--;
	}
	fv_id_leave(id);
	ev_forget(id->ch, id);
	id_free(id);
	fv.counts.cm_ids--;
	fv_unlock();
	return 0;
}

/* ---- addresses ----------------------------------------------------------------------------- */

static bool port_in_use(uint32_t addr, uint16_t port)
{
	for (struct fv_id *i = fv.ids; i; i = i->next) {
		if (i->bound && fv_src_port(i) == port &&
		    (fv_src_addr(i) == INADDR_ANY || addr == INADDR_ANY || fv_src_addr(i) == addr))
			return true;
	}
	return false;
}

static int port_alloc(uint32_t addr, uint16_t *port)
{
	for (int n = 0; n <= FV_PORT_LAST - FV_PORT_FIRST; n++) {
		uint16_t p = fv.next_port;

		fv.next_port = p == FV_PORT_LAST ? FV_PORT_FIRST : p + 1;
		if (!port_in_use(addr, p)) {
			*port = p;
			return 0;
		}
	}
	return -EADDRINUSE;
}

/* The device that owns @addr even while devices are hidden (for bind's -EADDRNOTAVAIL). */
static bool addr_is_local(uint32_t addr)
{
	bool hidden = fv.no_devices, found;

	fv.no_devices = false;
	found = fv_dev_by_addr(addr) != NULL;
	fv.no_devices = hidden;
	return found;
}

void fv_id_set_dev(struct fv_id *id, struct fv_dev *d)
{
	id->dev = d;
	id->ibid.verbs = d ? &d->cm_ctx->ibctx : NULL;
	id->ibid.port_num = d ? 1 : 0;
}

static int bind_locked(struct fv_id *id, const struct sockaddr *sa)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	uint32_t addr;
	uint16_t port;
	int rc;

	if (!sa)
		return -EINVAL;
	if (sa->sa_family != AF_INET)
		return -EAFNOSUPPORT; /* IPv6 and AF_IB are not modelled */
	if (id->state != FV_ID_IDLE)
		return -EINVAL;
	addr = sin->sin_addr.s_addr;
	if (addr != INADDR_ANY && !addr_is_local(addr))
		return -EADDRNOTAVAIL;
	port = ntohs(sin->sin_port);
	if (!port) {
		rc = port_alloc(addr, &port);
		if (rc)
			return rc;
	} else if (port_in_use(addr, port)) {
		return -EADDRINUSE;
	}
	fv_set_addr(&id->ibid.route.addr.src_sin, addr, port);
	id->bound = true;
	id->state = FV_ID_BOUND;
	/* An address of a hidden device is like one on a netdev without RDMA: no id->verbs. */
	fv_id_set_dev(id, addr == INADDR_ANY ? NULL : fv_dev_by_addr(addr));
	return 0;
}

int ps_vshim_cm_bind(struct rdma_cm_id *ibid, const struct sockaddr *addr)
{
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_BIND);
	if (!rc)
		rc = bind_locked(fv_id_of(ibid), addr);
	fv_unlock();
	return rc;
}

int ps_vshim_cm_listen(struct rdma_cm_id *ibid, int backlog)
{
	struct fv_id *id = fv_id_of(ibid);
	struct sockaddr_in any;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_LISTEN);
	if (!rc && id->state == FV_ID_IDLE) {
		/* librdmacm binds an unbound id to the wildcard address and a free port. */
		fv_set_addr(&any, INADDR_ANY, 0);
		rc = bind_locked(id, (struct sockaddr *)&any);
	}
	if (!rc && id->state != FV_ID_BOUND)
		rc = -EINVAL;
	if (!rc) {
		id->listening = true;
		id->state = FV_ID_LISTEN;
	}
	fv_unlock();
	return rc;
}

int ps_vshim_cm_resolve_addr(struct rdma_cm_id *ibid, const struct sockaddr *src,
			     const struct sockaddr *dst, int timeout_ms)
{
	struct fv_id *id = fv_id_of(ibid);
	const struct sockaddr_in *d = (const struct sockaddr_in *)dst;
	struct fv_dev *dev;
	uint16_t port;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_RESOLVE_ADDR);
	if (!rc && (!dst || dst->sa_family != AF_INET))
		rc = dst ? -EAFNOSUPPORT : -EINVAL;
	if (!rc && id->state != FV_ID_IDLE && id->state != FV_ID_BOUND)
		rc = -EINVAL;
	if (!rc && src && id->state == FV_ID_IDLE)
		rc = bind_locked(id, src);
	if (rc)
		goto out;
	if (fv.cm_next[0].set) {
		fv.cm_next[0].set = false;
		fv_ev_push(id, id, fv.cm_next[0].type, fv.cm_next[0].status, NULL, 0, 0);
		goto out;
	}
	dev = fv_dev_by_addr(d->sin_addr.s_addr);
	if (!dev) {
		fv_ev_push(id, id, RDMA_CM_EVENT_ADDR_ERROR, -EHOSTUNREACH, NULL, 0, 0);
		goto out;
	}
	if (!id->bound) {
		/* The source is the device's address the destination is on, with a free port. */
		rc = port_alloc(d->sin_addr.s_addr, &port);
		if (rc)
			goto out;
		fv_set_addr(&ibid->route.addr.src_sin, d->sin_addr.s_addr, port);
		id->bound = true;
	}
	fv_set_addr(&ibid->route.addr.dst_sin, d->sin_addr.s_addr, ntohs(d->sin_port));
	fv_id_set_dev(id, dev);
	id->state = FV_ID_ADDR_RESOLVED;
	fv_ev_push(id, id, RDMA_CM_EVENT_ADDR_RESOLVED, 0, NULL, 0, 0);
out:
	fv_unlock();
	return rc;
}

int ps_vshim_cm_resolve_route(struct rdma_cm_id *ibid, int timeout_ms)
{
	struct fv_id *id = fv_id_of(ibid);
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_CM_RESOLVE_ROUTE);
	if (!rc && id->state != FV_ID_ADDR_RESOLVED)
		rc = -EINVAL;
	if (!rc && fv.cm_next[1].set) {
		fv.cm_next[1].set = false;
		fv_ev_push(id, id, fv.cm_next[1].type, fv.cm_next[1].status, NULL, 0, 0);
	} else if (!rc) {
		ibid->route.num_paths = 1;
		id->state = FV_ID_ROUTE_RESOLVED;
		fv_ev_push(id, id, RDMA_CM_EVENT_ROUTE_RESOLVED, 0, NULL, 0, 0);
	}
	fv_unlock();
	return rc;
}

uint16_t ps_vshim_cm_src_port(struct rdma_cm_id *ibid)
{
	return ntohs(ibid->route.addr.src_sin.sin_port);
}

uint16_t ps_vshim_cm_dst_port(struct rdma_cm_id *ibid)
{
	return ntohs(ibid->route.addr.dst_sin.sin_port);
}

/* Under the lock, for fake_verbs_reset(): free every id and channel; returns how many. */
int fv_free_all_cm(void)
{
	int n = 0;

	while (fv.cm_taken) {
		struct fv_cm_ev *e = fv.cm_taken;

		fv.cm_taken = e->next;
		free(e);
	}
	while (fv.ids) {
		id_free(fv.ids);
		n++;
	}
	while (fv.cm_chs) {
		struct fv_cm_ch *ch = fv.cm_chs;

		fv.cm_chs = ch->next;
		cm_ch_free(ch);
		n++;
	}
	return n;
}
