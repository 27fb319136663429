/*
 * The fake verbs layer, part 2: what libibverbs gives about devices (lists, contexts, queries,
 * GIDs, async events), protection domains, memory regions, and the names of statuses and
 * events. The fake calls nothing of libibverbs, not even ibv_wc_status_str(): these tables are
 * its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>

#include "tests/unit/fake_verbs_int.h"

#define MAX_MR_SIZE (1ull << 40)

int ps_vshim_device_list_get(struct ibv_device ***list_out, int *num_out)
{
	struct ibv_device **list;
	int n, rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_DEVICE_LIST_GET);
	n = fv.no_devices ? 0 : fv.ndevs;
	list = rc ? NULL : calloc((size_t)n + 1, sizeof(*list));
	if (!rc && !list)
		rc = -ENOMEM;
	if (!rc) {
		for (int i = 0; i < n; i++)
			list[i] = &fv.devs[i]->ibdev;
		fv.counts.device_lists++;
		*list_out = list;
		*num_out = n;
	}
	fv_unlock();
	return rc;
}

void ps_vshim_device_list_free(struct ibv_device **list)
{
	if (!list)
		return;
	fv_lock();
	fv.counts.device_lists--;
	fv_unlock();
	free(list);
}

const char *ps_vshim_device_name(struct ibv_device *dev)
{
	return dev ? dev->name : "(none)";
}

int ps_vshim_device_open(struct ibv_device *dev, struct ibv_context **ctx_out)
{
	struct fv_ctx *c;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_DEVICE_OPEN);
	if (!rc && !dev)
		rc = -EINVAL;
	if (!rc) {
		c = fv_ctx_new(container_of(dev, struct fv_dev, ibdev), false);
		if (!c) {
			rc = -ENOMEM;
		} else {
			c->next = fv.ctxs;
			fv.ctxs = c;
			fv.counts.contexts++;
			*ctx_out = &c->ibctx;
		}
	}
	fv_unlock();
	return rc;
}

int ps_vshim_device_close(struct ibv_context *ctx)
{
	struct fv_ctx *c, **pp;
	int rc;

	if (!ctx)
		return 0;
	c = container_of(ctx, struct fv_ctx, ibctx);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_DEVICE_CLOSE);
	if (!rc && c->cm_owned) {
		fv_misuse("ps_vshim_device_close() on rdma_cm's context (id->verbs)");
		rc = -EINVAL;
	}
	if (!rc && c->nchildren) {
		fv_misuse("ps_vshim_device_close() with %d PDs/CQs/channels still open",
			  c->nchildren);
		rc = -EBUSY;
	}
	if (!rc) {
		for (pp = &fv.ctxs; *pp && *pp != c; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = c->next;
		fv.counts.contexts--;
		fv_ctx_free(c);
	}
	fv_unlock();
	return rc;
}

int ps_vshim_device_query(struct ibv_context *ctx, struct ibv_device_attr *attr)
{
	struct fv_dev *d = container_of(ctx, struct fv_ctx, ibctx)->dev;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_DEVICE_QUERY);
	if (!rc) {
		memset(attr, 0, sizeof(*attr));
		snprintf(attr->fw_ver, sizeof(attr->fw_ver), "fake-1.0");
		attr->node_guid = htobe64(d->guid);
		attr->sys_image_guid = attr->node_guid;
		attr->max_mr_size = MAX_MR_SIZE;
		attr->page_size_cap = 0xfffff000;
		attr->vendor_id = 0xffffff;
		attr->max_qp = 4096;
		attr->max_qp_wr = d->max_qp_wr;
		attr->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN;
		attr->max_sge = d->max_sge;
		attr->max_sge_rd = d->max_sge;
		attr->max_cq = 4096;
		attr->max_cqe = d->max_cqe;
		attr->max_mr = 65536;
		attr->max_pd = 4096;
		attr->max_qp_rd_atom = 16;
		attr->max_qp_init_rd_atom = 16;
		attr->max_res_rd_atom = 16 * 4096;
		attr->atomic_cap = IBV_ATOMIC_NONE;
		attr->max_pkeys = 1;
		attr->phys_port_cnt = 1;
	}
	fv_unlock();
	return rc;
}

int ps_vshim_port_query(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	struct fv_dev *d = container_of(ctx, struct fv_ctx, ibctx)->dev;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_PORT_QUERY);
	if (!rc && port != 1)
		rc = -EINVAL;
	if (!rc) {
		memset(attr, 0, sizeof(*attr));
		attr->state = d->port_state;
		attr->max_mtu = IBV_MTU_4096;
		attr->active_mtu = IBV_MTU_1024;
		attr->gid_tbl_len = FV_GID_TBL_LEN;
		attr->max_msg_sz = 1u << 31;
		attr->pkey_tbl_len = 1;
		attr->link_layer = IBV_LINK_LAYER_ETHERNET;
		attr->active_width = 1;	 /* 1X */
		attr->active_speed = 32; /* 10 Gb/s (FDR10 encoding), for display only */
		attr->phys_state = d->port_state == IBV_PORT_ACTIVE ? 5 : 3; /* LinkUp / Disabled */
	}
	fv_unlock();
	return rc;
}

/* RoCE GIDs: index 0 the link-local fe80::<guid>, then ::ffff:a.b.c.d per IPv4 address. */
int ps_vshim_gid_query(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid)
{
	struct fv_dev *d = container_of(ctx, struct fv_ctx, ibctx)->dev;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_GID_QUERY);
	if (!rc && (port != 1 || index < 0 || index >= FV_GID_TBL_LEN))
		rc = -EINVAL;
	if (!rc) {
		memset(gid, 0, sizeof(*gid));
		if (index == 0) {
			gid->global.subnet_prefix = htobe64(0xfe80000000000000ull);
			gid->global.interface_id = htobe64(d->guid);
		} else if (index - 1 < d->naddrs) {
			gid->raw[10] = gid->raw[11] = 0xff;
			memcpy(&gid->raw[12], &d->addrs[index - 1], 4);
		}
	}
	fv_unlock();
	return rc;
}

/* ---- async events --------------------------------------------------------------------------- */

void fv_async_push(struct fv_ctx *c, enum ibv_event_type type, void *element, int port)
{
	struct fv_async *a = calloc(1, sizeof(*a));

	if (!a)
		return;
	a->ev.event_type = type;
	switch (type) {
	case IBV_EVENT_CQ_ERR:
		a->ev.element.cq = element;
		break;
	case IBV_EVENT_SRQ_ERR:
	case IBV_EVENT_SRQ_LIMIT_REACHED:
		a->ev.element.srq = element;
		break;
	case IBV_EVENT_PORT_ACTIVE:
	case IBV_EVENT_PORT_ERR:
	case IBV_EVENT_LID_CHANGE:
	case IBV_EVENT_PKEY_CHANGE:
	case IBV_EVENT_SM_CHANGE:
	case IBV_EVENT_CLIENT_REREGISTER:
	case IBV_EVENT_GID_CHANGE:
		a->ev.element.port_num = port;
		break;
	case IBV_EVENT_DEVICE_FATAL:
		break;
	default:
		a->ev.element.qp = element;
		break;
	}
	if (c->async_tail)
		c->async_tail->next = a;
	else
		c->async_head = a;
	c->async_tail = a;
	if (c->async_head == a)
		fv_eventfd_signal(c->ibctx.async_fd);
}

void fake_verbs_inject_async_event(struct ibv_context *ctx, enum ibv_event_type type, void *element,
				   int port_num)
{
	fv_lock();
	fv_async_push(container_of(ctx, struct fv_ctx, ibctx), type, element, port_num);
	fv_unlock();
}

int ps_vshim_async_event_get(struct ibv_context *ctx, int timeout_ms, struct ibv_async_event *ev)
{
	struct fv_ctx *c = container_of(ctx, struct fv_ctx, ibctx);
	uint64_t deadline = fv_deadline(timeout_ms);
	struct fv_async *a;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_ASYNC_EVENT_GET);
	fv_unlock();
	if (rc)
		return rc;
	for (;;) {
		fv_lock();
		a = c->async_head;
		if (a) {
			c->async_head = a->next;
			if (!c->async_head) {
				c->async_tail = NULL;
				fv_eventfd_drain(ctx->async_fd);
			}
			fv.counts.async_events++;
		}
		fv_unlock();
		if (a) {
			*ev = a->ev;
			free(a);
			return 0;
		}
		rc = fv_wait_fd(ctx->async_fd, deadline);
		if (rc)
			return rc;
	}
}

void ps_vshim_async_event_ack(struct ibv_async_event *ev)
{
	fv_lock();
	if (fv.counts.async_events > 0)
		fv.counts.async_events--;
	else
		fv_misuse("ps_vshim_async_event_ack() without an event taken");
	fv_unlock();
}

/* ---- protection domains and memory regions ------------------------------------------------ */

int ps_vshim_pd_alloc(struct ibv_context *ctx, struct ibv_pd **pd_out)
{
	struct fv_pd *p;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_PD_ALLOC);
	if (!rc && !ctx)
		rc = -EINVAL;
	if (!rc) {
		p = calloc(1, sizeof(*p));
		if (!p) {
			rc = -ENOMEM;
		} else {
			p->ibpd.context = ctx;
			p->ibpd.handle = fv.next_handle++;
			p->next = fv.pds;
			fv.pds = p;
			container_of(ctx, struct fv_ctx, ibctx)->nchildren++;
			fv.counts.pds++;
			*pd_out = &p->ibpd;
		}
	}
	fv_unlock();
	return rc;
}

int ps_vshim_pd_dealloc(struct ibv_pd *pd)
{
	struct fv_pd *p, **pp;
	int rc;

	if (!pd)
		return 0;
	p = container_of(pd, struct fv_pd, ibpd);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_PD_DEALLOC);
	if (!rc && (p->nmrs || p->nqps)) {
		/* libibverbs returns EBUSY here too: not a misuse the library hides. */
		rc = -EBUSY;
	}
	if (!rc) {
		for (pp = &fv.pds; *pp && *pp != p; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = p->next;
		container_of(pd->context, struct fv_ctx, ibctx)->nchildren--;
		fv.counts.pds--;
		free(p);
	}
	fv_unlock();
	return rc;
}

int ps_vshim_mr_reg(struct ibv_pd *pd, void *addr, size_t len, int access, struct ibv_mr **mr_out)
{
	const int remote = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
	struct fv_mr *m;
	int rc;

	fv_lock();
	rc = fv_injected(FAKE_VERBS_MR_REG);
	if (!rc && (!pd || !addr || !len || len > MAX_MR_SIZE))
		rc = -EINVAL;
	/* As the kernel: remote write/atomic access needs local write. */
	if (!rc && (access & remote) && !(access & IBV_ACCESS_LOCAL_WRITE))
		rc = -EINVAL;
	if (!rc && fv.memlock && fv.registered + len > fv.memlock)
		rc = -ENOMEM;
	if (!rc) {
		m = calloc(1, sizeof(*m));
		if (!m) {
			rc = -ENOMEM;
		} else {
			/*
			 * Distinct lkey and rkey (mlx5 uses one value for both): code that hands out
			 * an lkey as an rkey fails here as it would on rxe.
			 */
			uint32_t k = fv.next_key++;

			m->ibmr.context = pd->context;
			m->ibmr.pd = pd;
			m->ibmr.addr = addr;
			m->ibmr.length = len;
			m->ibmr.handle = fv.next_handle++;
			m->ibmr.lkey = k << 8 | 0x01;
			m->ibmr.rkey = k << 8 | 0x02;
			m->access = access;
			m->next = fv.mrs;
			fv.mrs = m;
			fv.registered += len;
			container_of(pd, struct fv_pd, ibpd)->nmrs++;
			fv.counts.mrs++;
			*mr_out = &m->ibmr;
		}
	}
	fv_unlock();
	return rc;
}

int ps_vshim_mr_dereg(struct ibv_mr *mr)
{
	struct fv_mr *m, **pp;
	int rc;

	if (!mr)
		return 0;
	m = container_of(mr, struct fv_mr, ibmr);
	fv_lock();
	rc = fv_injected(FAKE_VERBS_MR_DEREG);
	if (!rc) {
		for (pp = &fv.mrs; *pp && *pp != m; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = m->next;
		fv.registered -= mr->length;
		container_of(mr->pd, struct fv_pd, ibpd)->nmrs--;
		fv.counts.mrs--;
		free(m);
	}
	fv_unlock();
	return rc;
}

struct fv_mr *fv_mr_by_lkey(uint32_t lkey)
{
	for (struct fv_mr *m = fv.mrs; m; m = m->next) {
		if (m->ibmr.lkey == lkey)
			return m;
	}
	return NULL;
}

struct fv_mr *fv_mr_by_rkey(uint32_t rkey)
{
	for (struct fv_mr *m = fv.mrs; m; m = m->next) {
		if (m->ibmr.rkey == rkey)
			return m;
	}
	return NULL;
}

/* ---- names ----------------------------------------------------------------------------------- */

const char *ps_vshim_event_type_str(enum ibv_event_type type)
{
	static const char *const names[] = {
		[IBV_EVENT_CQ_ERR] = "CQ error",
		[IBV_EVENT_QP_FATAL] = "local work queue catastrophic error",
		[IBV_EVENT_QP_REQ_ERR] = "invalid request local work queue error",
		[IBV_EVENT_QP_ACCESS_ERR] = "local access violation work queue error",
		[IBV_EVENT_COMM_EST] = "communication established",
		[IBV_EVENT_SQ_DRAINED] = "send queue drained",
		[IBV_EVENT_PATH_MIG] = "path migrated",
		[IBV_EVENT_PATH_MIG_ERR] = "path migration request error",
		[IBV_EVENT_DEVICE_FATAL] = "local catastrophic error",
		[IBV_EVENT_PORT_ACTIVE] = "port active",
		[IBV_EVENT_PORT_ERR] = "port error",
		[IBV_EVENT_LID_CHANGE] = "LID change",
		[IBV_EVENT_PKEY_CHANGE] = "P_Key change",
		[IBV_EVENT_SM_CHANGE] = "SM change",
		[IBV_EVENT_SRQ_ERR] = "SRQ catastrophic error",
		[IBV_EVENT_SRQ_LIMIT_REACHED] = "SRQ limit reached",
		[IBV_EVENT_QP_LAST_WQE_REACHED] = "last WQE reached",
		[IBV_EVENT_CLIENT_REREGISTER] = "client reregistration",
		[IBV_EVENT_GID_CHANGE] = "GID table change",
		[IBV_EVENT_WQ_FATAL] = "WQ fatal",
	};

	return (unsigned int)type < sizeof(names) / sizeof(names[0]) && names[type]
		       ? names[type]
		       : "unknown event";
}

const char *ps_vshim_wc_status_str(enum ibv_wc_status status)
{
	static const char *const names[] = {
		[IBV_WC_SUCCESS] = "success",
		[IBV_WC_LOC_LEN_ERR] = "local length error",
		[IBV_WC_LOC_QP_OP_ERR] = "local QP operation error",
		[IBV_WC_LOC_EEC_OP_ERR] = "local EE context operation error",
		[IBV_WC_LOC_PROT_ERR] = "local protection error",
		[IBV_WC_WR_FLUSH_ERR] = "Work Request Flushed Error",
		[IBV_WC_MW_BIND_ERR] = "memory management operation error",
		[IBV_WC_BAD_RESP_ERR] = "bad response error",
		[IBV_WC_LOC_ACCESS_ERR] = "local access error",
		[IBV_WC_REM_INV_REQ_ERR] = "remote invalid request error",
		[IBV_WC_REM_ACCESS_ERR] = "remote access error",
		[IBV_WC_REM_OP_ERR] = "remote operation error",
		[IBV_WC_RETRY_EXC_ERR] = "transport retry counter exceeded",
		[IBV_WC_RNR_RETRY_EXC_ERR] = "RNR retry counter exceeded",
		[IBV_WC_LOC_RDD_VIOL_ERR] = "local RDD violation error",
		[IBV_WC_REM_INV_RD_REQ_ERR] = "remote invalid RD request",
		[IBV_WC_REM_ABORT_ERR] = "aborted error",
		[IBV_WC_INV_EECN_ERR] = "invalid EE context number",
		[IBV_WC_INV_EEC_STATE_ERR] = "invalid EE context state",
		[IBV_WC_FATAL_ERR] = "fatal error",
		[IBV_WC_RESP_TIMEOUT_ERR] = "response timeout error",
		[IBV_WC_GENERAL_ERR] = "general error",
		[IBV_WC_TM_ERR] = "TM error",
		[IBV_WC_TM_RNDV_INCOMPLETE] = "TM software rendezvous",
	};

	return (unsigned int)status < sizeof(names) / sizeof(names[0]) && names[status]
		       ? names[status]
		       : "unknown status";
}

const char *ps_vshim_cm_event_str(enum rdma_cm_event_type type)
{
	static const char *const names[] = {
		[RDMA_CM_EVENT_ADDR_RESOLVED] = "RDMA_CM_EVENT_ADDR_RESOLVED",
		[RDMA_CM_EVENT_ADDR_ERROR] = "RDMA_CM_EVENT_ADDR_ERROR",
		[RDMA_CM_EVENT_ROUTE_RESOLVED] = "RDMA_CM_EVENT_ROUTE_RESOLVED",
		[RDMA_CM_EVENT_ROUTE_ERROR] = "RDMA_CM_EVENT_ROUTE_ERROR",
		[RDMA_CM_EVENT_CONNECT_REQUEST] = "RDMA_CM_EVENT_CONNECT_REQUEST",
		[RDMA_CM_EVENT_CONNECT_RESPONSE] = "RDMA_CM_EVENT_CONNECT_RESPONSE",
		[RDMA_CM_EVENT_CONNECT_ERROR] = "RDMA_CM_EVENT_CONNECT_ERROR",
		[RDMA_CM_EVENT_UNREACHABLE] = "RDMA_CM_EVENT_UNREACHABLE",
		[RDMA_CM_EVENT_REJECTED] = "RDMA_CM_EVENT_REJECTED",
		[RDMA_CM_EVENT_ESTABLISHED] = "RDMA_CM_EVENT_ESTABLISHED",
		[RDMA_CM_EVENT_DISCONNECTED] = "RDMA_CM_EVENT_DISCONNECTED",
		[RDMA_CM_EVENT_DEVICE_REMOVAL] = "RDMA_CM_EVENT_DEVICE_REMOVAL",
		[RDMA_CM_EVENT_MULTICAST_JOIN] = "RDMA_CM_EVENT_MULTICAST_JOIN",
		[RDMA_CM_EVENT_MULTICAST_ERROR] = "RDMA_CM_EVENT_MULTICAST_ERROR",
		[RDMA_CM_EVENT_ADDR_CHANGE] = "RDMA_CM_EVENT_ADDR_CHANGE",
		[RDMA_CM_EVENT_TIMEWAIT_EXIT] = "RDMA_CM_EVENT_TIMEWAIT_EXIT",
	};

	return (unsigned int)type < sizeof(names) / sizeof(names[0]) && names[type]
		       ? names[type]
		       : "unknown cm event";
}
