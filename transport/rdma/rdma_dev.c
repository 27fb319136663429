/*
 * rdma backend: the dev (which device, its PD and limits), memory registration, the ops table.
 *
 * Which device. rdma_cm picks the device of a connection from the addresses (both ends of a
 * connection run on the device that owns the destination address when both are local, see
 * /work/shared/rxe-vm.md), and a QP created through rdma_cm must sit on rdma_cm's own context
 * of that device. So the dev finds its device the way rdma_cm will: it binds an rdma_cm id (the
 * "anchor") to bind_addr, or, without one, to an IP address of the first device with an ACTIVE
 * port, and uses anchor->verbs as its context for the dev's whole life.
 */
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <psplus/error.h>

#include "common/log.h"
#include "transport/rdma/rdma_internal.h"

/* ---- addresses ------------------------------------------------------------------------------ */

void ps_rdma_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
}

static void addr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

int ps_rdma_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	int rc;

	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc) {
		ps_log_warn(RD_LOG, "%s: %s", host, gai_strerror(rc));
		return rc == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	addr_set_port(out, port);
	return 0;
}

/* ---- sysfs ---------------------------------------------------------------------------------- */

/* First line of a sysfs file, without the newline; -errno if unreadable. */
static int sysfs_read(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	n = strcspn(buf, "\n");
	buf[n] = '\0';
	return n ? 0 : -ENODATA;
}

static int sysfs_numa_node(const char *dev)
{
	char path[256], buf[32];

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/numa_node", dev);
	if (sysfs_read(path, buf, sizeof(buf)))
		return -1; /* soft devices (rxe) have no device/ folder */
	return atoi(buf) >= 0 ? atoi(buf) : -1;
}

/*
 * The netdev behind port @port's GID @gid_index: gid_attrs/ndevs (RoCE, kernel >= 4.9), then
 * "parent" (rxe, siw), then the device's net/ folder (IPoIB, RoCE NICs).
 */
static void sysfs_netdev(const char *dev, int port, int gid_index, char *out, size_t len)
{
	char path[256];
	struct dirent *de;
	DIR *d;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/gid_attrs/ndevs/%d", dev,
		 port, gid_index);
	if (!sysfs_read(path, out, len))
		return;
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/parent", dev);
	if (!sysfs_read(path, out, len))
		return;
	out[0] = '\0';
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/net", dev);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] != '.') {
			snprintf(out, len, "%.*s", (int)len - 1, de->d_name);
			break;
		}
	}
	closedir(d);
}

/* ---- GIDs ----------------------------------------------------------------------------------- */

/* GID entries looked at; RoCE fills the table from index 0, addresses follow the default GID. */
#define GID_SCAN 64

static bool gid_is_v4mapped(const union ibv_gid *g)
{
	static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return !memcmp(g->raw, pfx, sizeof(pfx));
}

static bool gid_is_zero(const union ibv_gid *g)
{
	static const union ibv_gid zero;

	return !memcmp(g->raw, zero.raw, sizeof(zero.raw));
}

/* The GID that carries @addr (RoCE: ::ffff:a.b.c.d or the IPv6 address), else -1. */
static int gid_find_addr(struct ibv_context *ctx, uint8_t port, int tbl_len,
			 const struct sockaddr_storage *addr, union ibv_gid *out)
{
	union ibv_gid g;

	for (int i = 0; i < tbl_len && i < GID_SCAN; i++) {
		if (ps_vshim_gid_query(ctx, port, i, &g) || gid_is_zero(&g))
			continue;
		if (addr->ss_family == AF_INET && gid_is_v4mapped(&g) &&
		    !memcmp(g.raw + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4)) {
			*out = g;
			return i;
		}
		if (addr->ss_family == AF_INET6 &&
		    !memcmp(g.raw, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16)) {
			*out = g;
			return i;
		}
	}
	return -1;
}

/*
 * An IP address of port @port of @ctx that rdma_cm can bind to: an IPv4-mapped GID (RoCE), a
 * global IPv6 GID, else an address of the port's netdev (IPoIB).
 */
static int port_ip_addr(struct ibv_context *ctx, const char *name, uint8_t port, int tbl_len,
			struct sockaddr_storage *out)
{
	struct ifaddrs *ifa, *i;
	char netdev[IF_NAMESIZE + 1];
	union ibv_gid g;
	int rc = -EADDRNOTAVAIL;

	memset(out, 0, sizeof(*out));
	for (int k = 0; k < tbl_len && k < GID_SCAN; k++) {
		if (ps_vshim_gid_query(ctx, port, k, &g) || gid_is_zero(&g))
			continue;
		if (gid_is_v4mapped(&g)) {
			struct sockaddr_in *in = (struct sockaddr_in *)out;

			in->sin_family = AF_INET;
			memcpy(&in->sin_addr, g.raw + 12, 4);
			return 0;
		}
		if (!(g.raw[0] == 0xfe && (g.raw[1] & 0xc0) == 0x80) && out->ss_family == 0) {
			/* Global IPv6 (not fe80::/10): used if no IPv4 one turns up. */
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

			in6->sin6_family = AF_INET6;
			memcpy(&in6->sin6_addr, g.raw, 16);
		}
	}
	if (out->ss_family)
		return 0;
	sysfs_netdev(name, port, 0, netdev, sizeof(netdev));
	if (!netdev[0] || getifaddrs(&ifa))
		return rc;
	for (i = ifa; i; i = i->ifa_next) {
		if (i->ifa_addr && !strcmp(i->ifa_name, netdev) &&
		    i->ifa_addr->sa_family == AF_INET) {
			memcpy(out, i->ifa_addr, sizeof(struct sockaddr_in));
			rc = 0;
			break;
		}
	}
	freeifaddrs(ifa);
	return rc;
}

/*
 * The first device with an ACTIVE port and an IP address, and that address. Devices are opened
 * here only to look at them (rdma_cm opens its own context on bind).
 */
static int find_active_addr(struct sockaddr_storage *out, char *name, size_t name_len)
{
	struct ibv_device **list;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	struct ibv_context *ctx;
	int n = 0, rc;
	bool active_seen = false;

	rc = ps_vshim_device_list_get(&list, &n);
	if (rc)
		return rc == -ENOSYS ? PS_ENO_DEVICE : rc;
	rc = PS_ENO_DEVICE;
	for (int i = 0; i < n && rc; i++) {
		if (ps_vshim_device_open(list[i], &ctx))
			continue;
		if (!ps_vshim_device_query(ctx, &da)) {
			for (uint8_t p = 1; p <= da.phys_port_cnt && rc; p++) {
				if (ps_vshim_port_query(ctx, p, &pa) || pa.state != IBV_PORT_ACTIVE)
					continue;
				active_seen = true;
				if (!port_ip_addr(ctx, ps_vshim_device_name(list[i]), p,
						  pa.gid_tbl_len, out)) {
					snprintf(name, name_len, "%s",
						 ps_vshim_device_name(list[i]));
					rc = 0;
				}
			}
		}
		ps_vshim_device_close(ctx);
	}
	ps_vshim_device_list_free(list);
	if (rc && active_seen)
		ps_log_err(RD_LOG, "active RDMA ports have no IP address: rdma_cm cannot use them");
	return rc;
}

bool ps_tp_rdma_available(void)
{
	struct ibv_device **list;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	struct ibv_context *ctx;
	bool found = false;
	int n = 0;

	if (ps_vshim_device_list_get(&list, &n))
		return false;
	for (int i = 0; i < n && !found; i++) {
		if (ps_vshim_device_open(list[i], &ctx))
			continue;
		if (!ps_vshim_device_query(ctx, &da))
			for (uint8_t p = 1; p <= da.phys_port_cnt && !found; p++)
				found = !ps_vshim_port_query(ctx, p, &pa) &&
					pa.state == IBV_PORT_ACTIVE;
		ps_vshim_device_close(ctx);
	}
	ps_vshim_device_list_free(list);
	return found;
}

/* ---- inline probe ------------------------------------------------------------------------- */

/*
 * What inline size a QP of this device gets: devices say so only when a QP is created (rxe
 * reports no inline capability anywhere else). A throw-away QP on the anchor tells; any failure
 * means "no inline".
 */
static uint32_t probe_inline(struct rd_dev *d)
{
	struct ibv_qp_init_attr qa;
	struct ibv_cq *cq = NULL;
	uint32_t got = 0;
	int rc;

	if (ps_vshim_cq_create(d->ctx, 4, NULL, NULL, 0, &cq))
		return 0;
	memset(&qa, 0, sizeof(qa));
	qa.qp_type = IBV_QPT_RC;
	qa.send_cq = qa.recv_cq = cq;
	qa.cap.max_send_wr = qa.cap.max_recv_wr = 1;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
	qa.cap.max_inline_data = RD_INLINE_WANT;
	rc = ps_vshim_qp_create(d->anchor, d->pd, &qa);
	if (!rc) {
		got = qa.cap.max_inline_data;
		ps_vshim_qp_destroy(d->anchor);
	} else {
		ps_log_debug(RD_LOG, "inline probe: %s: no inline sends", ps_strerror(rc));
	}
	ps_vshim_cq_destroy(cq);
	return got;
}

/* ---- dev ------------------------------------------------------------------------------------ */

static void dev_free(struct rd_dev *d)
{
	ps_vshim_pd_dealloc(d->pd);
	ps_vshim_cm_id_destroy(d->anchor);
	ps_vshim_cm_channel_destroy(d->anchor_ch);
	ps_tp_dev_base_fini(&d->base);
	free(d);
}

/* Fill d->info and the limits from the device the anchor is bound to. */
static int dev_describe(struct rd_dev *d, int want_node)
{
	struct ps_tp_dev_info *info = &d->info;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	union ibv_gid gid;
	int gid_index, rc;

	rc = ps_vshim_device_query(d->ctx, &da);
	if (rc)
		return rc;
	rc = ps_vshim_port_query(d->ctx, info->port, &pa);
	if (rc)
		return rc;
	if (pa.state != IBV_PORT_ACTIVE) {
		ps_log_err(RD_LOG, "%s port %u is not ACTIVE (state %d)", info->name, info->port,
			   pa.state);
		return PS_ENO_DEVICE;
	}
	info->kind = PS_TP_KIND_RDMA;
	info->active_mtu = ps_vshim_mtu_bytes(pa.active_mtu);
	d->max_sge = da.max_sge < RD_MAX_SGE ? (uint32_t)da.max_sge : RD_MAX_SGE;
	info->max_sge = d->max_sge;
	d->max_qp_wr = (uint32_t)da.max_qp_wr;
	d->max_cqe = (uint32_t)da.max_cqe;
	gid_index = gid_find_addr(d->ctx, info->port, pa.gid_tbl_len, &d->addr, &gid);
	if (gid_index < 0) {
		gid_index = 0;
		if (ps_vshim_gid_query(d->ctx, info->port, 0, &gid))
			memset(&gid, 0, sizeof(gid));
	}
	inet_ntop(AF_INET6, gid.raw, info->gid, sizeof(info->gid));
	sysfs_netdev(info->name, info->port, gid_index, info->netdev, sizeof(info->netdev));
	info->numa_node = sysfs_numa_node(info->name);
	d->alloc_node = want_node >= 0 ? want_node : info->numa_node;
	return 0;
}

static int rd_dev_open(const struct ps_tp_dev_opts *opts, struct ps_tp_dev **out)
{
	const char *bind = opts && opts->bind_addr && *opts->bind_addr ? opts->bind_addr : NULL;
	char name[64] = "", astr[80], memlock[32];
	struct rd_dev *d;
	int rc;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	ps_tp_dev_base_init(&d->base, &ps_tp_rdma_ops);
	if (bind) {
		rc = ps_rdma_addr_parse(bind, 0, &d->addr);
		if (rc)
			goto err;
	} else {
		rc = find_active_addr(&d->addr, name, sizeof(name));
		if (rc) {
			ps_log_err(RD_LOG, "no RDMA device with an ACTIVE port and an address");
			goto err;
		}
	}
	ps_rdma_addr_str((struct sockaddr *)&d->addr, astr, sizeof(astr));
	rc = ps_vshim_cm_channel_create(&d->anchor_ch);
	if (rc)
		goto err;
	rc = ps_vshim_cm_id_create(d->anchor_ch, NULL, RDMA_PS_TCP, &d->anchor);
	if (rc)
		goto err;
	rc = ps_vshim_cm_bind(d->anchor, (struct sockaddr *)&d->addr);
	if (rc || !d->anchor->verbs) {
		ps_log_err(RD_LOG, "no RDMA device owns %s%s%s", astr, rc ? ": " : "",
			   rc ? ps_strerror(rc) : "");
		rc = PS_ENO_DEVICE;
		goto err;
	}
	d->ctx = d->anchor->verbs;
	snprintf(d->info.name, sizeof(d->info.name), "%s", ps_vshim_device_name(d->ctx->device));
	if (name[0] && strcmp(name, d->info.name))
		ps_log_warn(RD_LOG, "%s: rdma_cm chose %s, not %s", astr, d->info.name, name);
	d->info.port = d->anchor->port_num;
	rc = dev_describe(d, opts ? opts->numa_node : -1);
	if (rc)
		goto err;
	rc = ps_vshim_pd_alloc(d->ctx, &d->pd);
	if (rc)
		goto err;
	d->max_inline = probe_inline(d);
	d->info.max_inline = d->max_inline;
	ps_mem_memlock_describe(memlock, sizeof(memlock));
	ps_log_info(RD_LOG,
		    "device %s port %u (%s, netdev %s): GID %s, MTU %u, max_sge %u, inline %u, "
		    "NUMA node %d, memlock %s",
		    d->info.name, d->info.port, astr, d->info.netdev[0] ? d->info.netdev : "?",
		    d->info.gid, d->info.active_mtu, d->max_sge, d->max_inline, d->info.numa_node,
		    memlock);
	*out = &d->base;
	return 0;

err:
	dev_free(d);
	return rc;
}

static void rd_dev_close(struct ps_tp_dev *dev)
{
	struct rd_dev *d = rd_dev_of(dev);

	if (d->base.loops)
		ps_log_err(RD_LOG, "dev %s closed with loops still open", d->info.name);
	dev_free(d);
}

static void rd_dev_query(const struct ps_tp_dev *dev, struct ps_tp_dev_info *info)
{
	*info = container_of(dev, const struct rd_dev, base)->info;
}

/* ---- memory regions ------------------------------------------------------------------------- */

int ps_rdma_reg(struct rd_dev *d, void *addr, size_t len, int access, struct ibv_mr **out)
{
	char err[512], lim[32];
	int rc, rc2;

	rc = ps_vshim_mr_reg(d->pd, addr, len, access, out);
	if (rc != -ENOMEM && rc != -EPERM && rc != -EAGAIN)
		return rc;
	/*
	 * Pinning failed: most often RLIMIT_MEMLOCK. Raise it where allowed and try once more,
	 * else say what is missing. (Not checked up front: the common case needs no system call
	 * beyond the registration itself.)
	 */
	rc2 = ps_mem_memlock_ensure(len, err, sizeof(err));
	if (!rc2) {
		rc = ps_vshim_mr_reg(d->pd, addr, len, access, out);
		if (!rc)
			return 0;
		ps_mem_memlock_describe(lim, sizeof(lim));
		ps_log_err(RD_LOG,
			   "registering %zu bytes on %s: %s (RLIMIT_MEMLOCK is %s; raise it with "
			   "'ulimit -l unlimited', 'memlock unlimited' in limits.conf or "
			   "LimitMEMLOCK=infinity)",
			   len, d->info.name, ps_strerror(rc), lim);
	} else {
		ps_log_err(RD_LOG, "registering %zu bytes on %s: %s", len, d->info.name, err);
	}
	return rc;
}

static int rd_mr_reg(struct ps_tp_dev *dev, void *addr, size_t len, struct ps_tp_mr **out)
{
	struct rd_dev *d = rd_dev_of(dev);
	struct rd_mr *m;
	int rc;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	/* LOCAL_WRITE is required with REMOTE_WRITE, and lets receives land in the region. */
	rc = ps_rdma_reg(d, addr, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, &m->mr);
	if (rc) {
		free(m);
		return rc;
	}
	m->base.dev = dev;
	m->base.info.addr = addr;
	m->base.info.len = len;
	m->base.info.lkey = m->mr->lkey;
	m->base.info.rkey = m->mr->rkey;
	*out = &m->base;
	return 0;
}

static void rd_mr_dereg(struct ps_tp_mr *mr)
{
	struct rd_mr *m = container_of(mr, struct rd_mr, base);
	int rc = ps_vshim_mr_dereg(m->mr);

	if (rc)
		ps_log_err(RD_LOG, "deregistering %zu bytes: %s", mr->info.len, ps_strerror(rc));
	free(m);
}

const struct ps_tp_ops ps_tp_rdma_ops = {
	.name = "rdma",
	.kind = PS_TP_KIND_RDMA,
	.dev_open = rd_dev_open,
	.dev_close = rd_dev_close,
	.dev_query = rd_dev_query,
	.mr_reg = rd_mr_reg,
	.mr_dereg = rd_mr_dereg,
	.loop_create = ps_rdma_loop_create,
	.loop_destroy = ps_rdma_loop_destroy,
	.loop_fd = ps_rdma_loop_fd,
	.listen = ps_rdma_listen,
	.listener_port = ps_rdma_listener_port,
	.listener_close = ps_rdma_listener_close,
	.connect = ps_rdma_connect,
	.conn_close = ps_rdma_conn_close,
	.send = ps_rdma_send,
	.write_imm = ps_rdma_write_imm,
	.flush = ps_rdma_flush,
	.poll = ps_rdma_poll,
	.recv_release = ps_rdma_recv_release,
};
