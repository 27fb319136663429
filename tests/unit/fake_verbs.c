/*
 * The fake verbs layer, part 1: global state, the lock, reset and injections, counters, the
 * device set and its limits. See fake_verbs.h for the model; fake_verbs_dev.c (devices, PDs,
 * MRs), fake_verbs_cq.c, fake_verbs_qp.c, fake_verbs_cm.c and fake_verbs_conn.c hold the rest.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/eventfd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/unit/fake_verbs_int.h"

struct fv_state fv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const char *const call_names[] = {
#define FAKE_VERBS_CALL_STR(name, str) str,
	FAKE_VERBS_CALLS(FAKE_VERBS_CALL_STR)
#undef FAKE_VERBS_CALL_STR
};

const char *fake_verbs_call_name(enum fake_verbs_call call)
{
	return (unsigned int)call < FAKE_VERBS_NCALLS ? call_names[call] : "(unknown call)";
}

/* ---- file descriptors and waits ----------------------------------------------------------- */

/*
 * Channels use an eventfd kept readable exactly while events wait: signalled when the queue goes
 * from empty to non-empty, drained when it becomes empty again. Non-blocking, like the shim's.
 */
int fv_eventfd_create(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

void fv_eventfd_signal(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		fv_misuse("eventfd %d: write failed", fd);
}

void fv_eventfd_drain(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

uint64_t fv_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : ps_clock_deadline_ms((uint64_t)timeout_ms);
}

/* As the shim: wait until @fd is readable or @deadline passes (PS_ETIMEOUT). */
int fv_wait_fd(int fd, uint64_t deadline)
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
	}
}

/* ---- lock, misuse, injections --------------------------------------------------------------- */

static void init_locked(void);

void fv_lock(void)
{
	pthread_mutex_lock(&fv.lock);
	if (!fv.inited)
		init_locked();
}

void fv_unlock(void)
{
	pthread_mutex_unlock(&fv.lock);
}

void fv_misuse(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fv.last_misuse, sizeof(fv.last_misuse), fmt, ap);
	va_end(ap);
	fv.counts.misuse++;
	fprintf(stderr, "fake_verbs: misuse: %s\n", fv.last_misuse);
}

/* Under the lock: the injected error for this call of @call, or 0. */
int fv_injected(enum fake_verbs_call call)
{
	struct fv_fail *f = &fv.fail[call];
	int err;

	if (!f->err || !f->nth)
		return 0;
	if (--f->nth)
		return 0;
	err = f->err;
	f->err = 0;
	return err;
}

void fake_verbs_fail_next(enum fake_verbs_call call, int err, unsigned int nth)
{
	if ((unsigned int)call >= FAKE_VERBS_NCALLS)
		return;
	fv_lock();
	fv.fail[call].err = err;
	fv.fail[call].nth = err ? (nth ? nth : 1) : 0;
	fv_unlock();
}

void fake_verbs_inject_wc_error(enum ibv_wc_status status, unsigned int nth)
{
	fv_lock();
	fv.wc_err_status = status;
	fv.wc_err_nth = status == IBV_WC_SUCCESS ? 0 : (nth ? nth : 1);
	fv_unlock();
}

int fake_verbs_cm_next_result(enum fake_verbs_call call, enum rdma_cm_event_type type, int status)
{
	int slot = call == FAKE_VERBS_CM_RESOLVE_ADDR	 ? 0
		   : call == FAKE_VERBS_CM_RESOLVE_ROUTE ? 1
		   : call == FAKE_VERBS_CM_CONNECT	 ? 2
							 : -1;

	if (slot < 0)
		return -EINVAL;
	fv_lock();
	fv.cm_next[slot].set = true;
	fv.cm_next[slot].type = type;
	fv.cm_next[slot].status = status;
	fv_unlock();
	return 0;
}

void fake_verbs_reject_next_connect(void)
{
	fake_verbs_cm_next_result(FAKE_VERBS_CM_CONNECT, RDMA_CM_EVENT_REJECTED,
				  FAKE_VERBS_REJ_CONSUMER_DEFINED);
}

int fake_verbs_kill_peer(struct rdma_cm_id *id)
{
	int rc;

	fv_lock();
	rc = fv_kill_peer(id);
	fv_unlock();
	return rc;
}

void fake_verbs_hold_sends(bool hold)
{
	fv_lock();
	fv.hold = hold;
	if (!hold)
		fv_qp_progress_all();
	fv_unlock();
}

/* ---- observation ----------------------------------------------------------------------------- */

int fake_verbs_live_objects(struct fake_verbs_counts *out)
{
	struct fake_verbs_counts c;

	fv_lock();
	c = fv.counts;
	fv_unlock();
	if (out)
		*out = c;
	return c.device_lists + c.contexts + c.pds + c.mrs + c.comp_channels + c.cqs + c.qps +
	       c.cm_channels + c.cm_ids + c.cm_events + c.cq_events + c.async_events + c.misuse;
}

const char *fake_verbs_last_misuse(void)
{
	return fv.last_misuse;
}

void fake_verbs_stats_get(struct fake_verbs_stats *out)
{
	fv_lock();
	*out = fv.stats;
	fv_unlock();
}

/* ---- devices ------------------------------------------------------------------------------- */

/* Calling the static inline data-path functions of verbs.h lands here (see fv_ctx_traps()). */
static int trap_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	fv_lock();
	fv_misuse("ibv_poll_cq() called directly: use ps_vshim_cq_poll()");
	fv_unlock();
	return -1;
}

static int trap_req_notify(struct ibv_cq *cq, int solicited_only)
{
	fv_lock();
	fv_misuse("ibv_req_notify_cq() called directly: use ps_vshim_cq_req_notify()");
	fv_unlock();
	return EINVAL;
}

static int trap_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	fv_lock();
	fv_misuse("ibv_post_send() called directly: use ps_vshim_post_send()");
	fv_unlock();
	*bad = wr;
	return EINVAL;
}

static int trap_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	fv_lock();
	fv_misuse("ibv_post_recv() called directly: use ps_vshim_post_recv()");
	fv_unlock();
	*bad = wr;
	return EINVAL;
}

/*
 * The inline functions of <infiniband/verbs.h> (ibv_post_send, ibv_poll_cq, ...) call through
 * ctx->ops; pointing those at traps turns a forbidden direct call into a counted misuse instead
 * of a jump through NULL.
 */
void fv_ctx_traps(struct ibv_context *ctx)
{
	ctx->ops.poll_cq = trap_poll_cq;
	ctx->ops.req_notify_cq = trap_req_notify;
	ctx->ops.post_send = trap_post_send;
	ctx->ops.post_recv = trap_post_recv;
}

struct fv_ctx *fv_ctx_new(struct fv_dev *dev, bool cm_owned)
{
	struct fv_ctx *c = calloc(1, sizeof(*c));
	int fd;

	if (!c)
		return NULL;
	fd = fv_eventfd_create();
	if (fd < 0) {
		free(c);
		return NULL;
	}
	c->dev = dev;
	c->cm_owned = cm_owned;
	c->ibctx.device = &dev->ibdev;
	c->ibctx.cmd_fd = -1;
	c->ibctx.async_fd = fd;
	c->ibctx.num_comp_vectors = 1;
	pthread_mutex_init(&c->ibctx.mutex, NULL);
	fv_ctx_traps(&c->ibctx);
	return c;
}

void fv_ctx_free(struct fv_ctx *c)
{
	struct fv_async *a;

	while ((a = c->async_head)) {
		c->async_head = a->next;
		free(a);
	}
	close(c->ibctx.async_fd);
	pthread_mutex_destroy(&c->ibctx.mutex);
	free(c);
}

static int dev_add_locked(const char *name, uint32_t addr1, uint32_t addr2)
{
	struct fv_dev *d;
	int i;

	if (fv.ndevs == FV_MAX_DEVS)
		return -ENOSPC;
	for (i = 0; i < fv.ndevs; i++) {
		if (!strcmp(fv.devs[i]->ibdev.name, name))
			return -EEXIST;
	}
	if (fv_dev_by_addr(addr1) || (addr2 && fv_dev_by_addr(addr2)))
		return -EEXIST;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	snprintf(d->ibdev.name, sizeof(d->ibdev.name), "%s", name);
	snprintf(d->ibdev.dev_name, sizeof(d->ibdev.dev_name), "uverbs%d", fv.ndevs);
	d->ibdev.node_type = IBV_NODE_CA;
	d->ibdev.transport_type = IBV_TRANSPORT_IB;
	d->addrs[d->naddrs++] = addr1;
	if (addr2)
		d->addrs[d->naddrs++] = addr2;
	d->port_state = IBV_PORT_ACTIVE;
	d->max_sge = fv.def_max_sge;
	d->max_inline = fv.def_max_inline;
	d->max_qp_wr = fv.def_max_qp_wr;
	d->max_cqe = fv.def_max_cqe;
	d->guid = 0x0200000000000000ull | (uint64_t)(fv.ndevs + 1);
	d->cm_ctx = fv_ctx_new(d, true);
	if (!d->cm_ctx) {
		free(d);
		return -ENOMEM;
	}
	fv.devs[fv.ndevs++] = d;
	return 0;
}

static void devs_free(void)
{
	for (int i = 0; i < fv.ndevs; i++) {
		fv_ctx_free(fv.devs[i]->cm_ctx);
		free(fv.devs[i]);
	}
	fv.ndevs = 0;
}

/* Under the lock: the default device set and limits. */
static void init_locked(void)
{
	fv.inited = true;
	fv.def_max_sge = 32;
	fv.def_max_inline = 0;
	fv.def_max_qp_wr = 16384;
	fv.def_max_cqe = 32767;
	fv.next_key = 0x1234;
	fv.next_qpn = 0x11;
	fv.next_handle = 1;
	fv.next_port = FV_PORT_FIRST;
	dev_add_locked("fake0", htonl(0xc0000201u) /* 192.0.2.1 */, htonl(INADDR_LOOPBACK));
}

int fake_verbs_reset(void)
{
	int freed = 0;

	pthread_mutex_lock(&fv.lock);
	if (fv.inited) {
		/* Dependents first: ids and QPs hold CQs and PDs, which hold contexts. */
		freed += fv_free_all_cm();
		freed += fv_free_all_qp();
		freed += fv_free_all_cq();
		while (fv.mrs) {
			struct fv_mr *m = fv.mrs;

			fv.mrs = m->next;
			free(m);
			freed++;
		}
		while (fv.pds) {
			struct fv_pd *p = fv.pds;

			fv.pds = p->next;
			free(p);
			freed++;
		}
		while (fv.ctxs) {
			struct fv_ctx *c = fv.ctxs;

			fv.ctxs = c->next;
			fv_ctx_free(c);
			freed++;
		}
		freed +=
			fv.counts.device_lists; /* the arrays themselves are the caller's to free */
		devs_free();
	}
	memset(&fv.counts, 0, sizeof(fv.counts));
	memset(&fv.stats, 0, sizeof(fv.stats));
	memset(fv.fail, 0, sizeof(fv.fail));
	memset(fv.cm_next, 0, sizeof(fv.cm_next));
	fv.last_misuse[0] = '\0';
	fv.wc_err_nth = 0;
	fv.no_devices = false;
	fv.hold = false;
	fv.memlock = 0;
	fv.registered = 0;
	init_locked();
	pthread_mutex_unlock(&fv.lock);
	return freed;
}

void fake_verbs_set_caps(int max_sge, int max_inline, int max_qp_wr)
{
	fv_lock();
	if (max_sge > 0)
		fv.def_max_sge = max_sge;
	if (max_inline >= 0)
		fv.def_max_inline = max_inline;
	if (max_qp_wr > 0)
		fv.def_max_qp_wr = max_qp_wr;
	for (int i = 0; i < fv.ndevs; i++) {
		fv.devs[i]->max_sge = fv.def_max_sge;
		fv.devs[i]->max_inline = fv.def_max_inline;
		fv.devs[i]->max_qp_wr = fv.def_max_qp_wr;
	}
	fv_unlock();
}

void fake_verbs_set_max_cqe(int max_cqe)
{
	fv_lock();
	if (max_cqe > 0) {
		fv.def_max_cqe = max_cqe;
		for (int i = 0; i < fv.ndevs; i++)
			fv.devs[i]->max_cqe = max_cqe;
	}
	fv_unlock();
}

void fake_verbs_no_devices(bool none)
{
	fv_lock();
	fv.no_devices = none;
	fv_unlock();
}

int fake_verbs_add_device(const char *name, const char *ipv4)
{
	struct in_addr a;
	int rc;

	if (!name || !*name || strlen(name) >= IBV_SYSFS_NAME_MAX || !ipv4 ||
	    inet_pton(AF_INET, ipv4, &a) != 1)
		return -EINVAL;
	fv_lock();
	rc = dev_add_locked(name, a.s_addr, 0);
	fv_unlock();
	return rc;
}

int fake_verbs_set_port_state(const char *name, enum ibv_port_state state)
{
	struct fv_dev *d = NULL;
	enum ibv_event_type type;

	fv_lock();
	for (int i = 0; i < fv.ndevs; i++) {
		if (!strcmp(fv.devs[i]->ibdev.name, name))
			d = fv.devs[i];
	}
	if (!d) {
		fv_unlock();
		return -ENODEV;
	}
	if (d->port_state != state) {
		d->port_state = state;
		type = state == IBV_PORT_ACTIVE ? IBV_EVENT_PORT_ACTIVE : IBV_EVENT_PORT_ERR;
		fv_async_push(d->cm_ctx, type, NULL, 1);
		for (struct fv_ctx *c = fv.ctxs; c; c = c->next) {
			if (c->dev == d)
				fv_async_push(c, type, NULL, 1);
		}
	}
	fv_unlock();
	return 0;
}

void fake_verbs_set_memlock(uint64_t bytes)
{
	fv_lock();
	fv.memlock = bytes;
	fv_unlock();
}

/* The device owning IPv4 @addr (network order), or NULL (also when devices are hidden). */
struct fv_dev *fv_dev_by_addr(uint32_t addr)
{
	if (fv.no_devices)
		return NULL;
	for (int i = 0; i < fv.ndevs; i++) {
		for (int j = 0; j < fv.devs[i]->naddrs; j++) {
			if (fv.devs[i]->addrs[j] == addr)
				return fv.devs[i];
		}
	}
	return NULL;
}
