/*
 * The client's transport devs and the memory its requests use.
 *
 * The transport is chosen once, at create: tcp when asked, or when "auto" and any server was
 * told to use tcp (a verbs client cannot reach a socket server); rdma when asked, or "auto" and
 * an active device exists. rdma_cm runs a connection over the device owning the route to the
 * peer, so the client opens one dev (with its loop) per local device the servers are reached
 * through: the device owning the source address of the route to each server. A worker on one
 * NIC gets one dev; a multi-rail host, or the test guest with one soft-RoCE device per server,
 * gets several, polled together. tcp uses one dev.
 *
 * Memory, registered once on every dev: the request blocks (one tp_pool per dev, each block the
 * largest message: header plus any staged ids and gradients), the staging region for pull
 * results that cannot land in the caller's memory (grown to the largest call), and the
 * caller's registered buffers.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/log.h"
#include "common/mem.h"

/* The local address the route to @host leaves from (no packet is sent). */
static int local_addr_toward(const char *host, char *out, size_t outlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, rc = -1;

	if (getaddrinfo(host, "4791", &hints, &ai) || !ai)
		return -1;
	fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && !connect(fd, ai->ai_addr, ai->ai_addrlen) &&
	    !getsockname(fd, (struct sockaddr *)&ss, &sl))
		rc = getnameinfo((struct sockaddr *)&ss, sl, out, (socklen_t)outlen, NULL, 0,
				 NI_NUMERICHOST)
			     ? -1
			     : 0;
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return rc;
}

/*
 * Request slots: a window per destination, at most CLI_MAX_SLOTS, and - when RLIMIT_MEMLOCK is
 * limited - what a quarter of it holds (as the server sizes its bounce pools), so that an
 * unprivileged worker starts on the default 8 MiB. Fewer slots than windows only means that
 * destinations share them.
 */
static uint32_t request_slots(uint64_t want, uint32_t blk)
{
	struct rlimit rl;
	uint64_t fit;

	if (want > CLI_MAX_SLOTS)
		want = CLI_MAX_SLOTS;
	if (!getrlimit(RLIMIT_MEMLOCK, &rl) && rl.rlim_cur != RLIM_INFINITY) {
		fit = rl.rlim_cur / 4 / blk;
		if (want > fit)
			want = fit;
	}
	return want < CLI_MIN_SLOTS ? CLI_MIN_SLOTS : (uint32_t)want;
}

static void dev_close(struct ps_client *c, struct cli_dev *v, uint32_t idx)
{
	for (struct ps_client_buf *b = c->bufs; b; b = b->next) {
		ps_tp_mr_dereg(b->mr[idx]);
		b->mr[idx] = NULL;
	}
	ps_tp_mr_dereg(v->stage_mr);
	ps_tp_pool_destroy(v->pool);
	ps_tp_loop_destroy(v->loop);
	ps_tp_dev_close(v->dev);
	memset(v, 0, sizeof(*v));
}

/* Open dev c->ndevs for @local ("" : tcp, or the first active device). Undone on failure. */
static int dev_open(struct ps_client *c, const char *local, uint32_t *idx)
{
	uint32_t i = c->ndevs;
	struct cli_dev *v = &c->devs[i];
	struct ps_tp_dev_opts o = {.kind = c->rdma ? "rdma" : "tcp",
				   .bind_addr = local[0] ? local : NULL,
				   .numa_node = -1};
	struct ps_tp_pool_opts po = {
		.block_size = c->blk_size, .nblocks = c->nslots, .numa_node = -1};
	struct epoll_event ev = {.events = EPOLLIN};
	int rc, fd;

	if (i == CLI_MAX_DEVS)
		return cli_fail(-ENOSPC,
				"the servers are reached through more than %u local devices",
				CLI_MAX_DEVS);
	snprintf(v->local, sizeof(v->local), "%s", local);
	rc = ps_tp_dev_open(&o, &v->dev);
	if (rc) {
		cli_fail(rc, "cannot open the %s transport%s%s: %s", o.kind,
			 local[0] ? " for local address " : "", local, ps_strerror(rc));
		goto fail;
	}
	rc = ps_tp_loop_create(v->dev, &c->lo, &v->loop);
	if (rc) {
		cli_fail(rc, "cannot create a transport loop: %s", ps_strerror(rc));
		goto fail;
	}
	rc = ps_tp_pool_create(v->dev, &po, &v->pool);
	if (rc) {
		cli_fail(rc, "cannot create %u registered request buffers of %u bytes: %s",
			 c->nslots, c->blk_size, ps_strerror(rc));
		goto fail;
	}
	if (c->stage.addr &&
	    (rc = ps_tp_mr_reg(v->dev, c->stage.addr, c->stage.len, &v->stage_mr))) {
		cli_fail(rc, "registering the staging buffer: %s", ps_strerror(rc));
		goto fail;
	}
	for (struct ps_client_buf *b = c->bufs; b; b = b->next) {
		rc = ps_tp_mr_reg(v->dev, b->addr, b->len, &b->mr[i]);
		if (rc) {
			cli_fail(rc, "registering a buffer of %zu bytes: %s", b->len,
				 ps_strerror(rc));
			goto fail;
		}
	}
	fd = ps_tp_loop_fd(v->loop);
	ev.data.u32 = i;
	if (c->epfd >= 0 && fd >= 0 && epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev)) {
		rc = cli_fail(-errno, "epoll_ctl: %s", ps_strerror(-errno));
		goto fail;
	}
	c->ndevs++;
	*idx = i;
	return 0;
fail:
	dev_close(c, v, i);
	return rc;
}

/* The dev for servers at @host: the open one of the same local device, or a new one. */
int cli_dev_for(struct ps_client *c, const char *host, uint32_t *idx)
{
	char local[64] = "";

	if (c->rdma && local_addr_toward(host, local, sizeof(local)))
		local[0] = 0; /* no route known: the first active device */
	for (uint32_t i = 0; i < c->ndevs; i++) {
		if (!strcmp(c->devs[i].local, local)) {
			*idx = i;
			return 0;
		}
	}
	return dev_open(c, local, idx);
}

int cli_conn_open(struct ps_client *c, uint64_t deadline)
{
	const char *kind = c->o.transport;
	uint32_t w = c->o.max_inflight, msg = CLI_DEF_MSG_SIZE;
	struct ps_tp_dev_info info;
	int rc = 0;

	(void)deadline;
	if (!strcmp(kind, "auto"))
		for (uint32_t i = 0; i < c->server_num; i++)
			if (!strcmp(c->servers[i].transport, "tcp"))
				kind = "tcp";
	c->rdma = !strcmp(kind, "rdma") || (!strcmp(kind, "auto") && ps_tp_rdma_available());
	/* Our message size bounds what we may send too (the smaller side's wins): the largest. */
	for (uint32_t i = 0; i < c->server_num; i++)
		if (c->servers[i].msg_size > msg)
			msg = c->servers[i].msg_size;
	c->lo = (struct ps_tp_loop_opts){
		.recv_depth = w + 2, /* one reply or write per request in flight, and slack */
		.msg_size = msg,
		.send_depth = 2 * w + 8,
		.max_conns = c->ndests * 2 + 16, /* room for replacements after a rebuild */
		.connect_timeout_ms = CLI_CONNECT_MS};
	c->blk_size = msg;
	c->nslots = request_slots((uint64_t)c->ndests * w, msg);
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	if (!c->slots)
		return cli_fail(-ENOMEM, "out of memory");
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0)
		return cli_fail(-errno, "epoll_create1: %s", ps_strerror(-errno));
	for (uint32_t s = 0; s < c->server_num && !rc; s++) {
		uint32_t idx = 0, T = c->servers[s].nshards ? c->servers[s].nshards : 1;

		rc = cli_dev_for(c, c->servers[s].host, &idx);
		if (rc == PS_ENO_DEVICE && c->rdma && !c->ndevs && !strcmp(kind, "auto")) {
			/* An active device that does not own the route: tcp for everyone. */
			ps_log_info(CLI_LOG, "no RDMA device reaches server %u at %s: using tcp", s,
				    c->servers[s].host);
			c->rdma = false;
			rc = cli_dev_for(c, c->servers[s].host, &idx);
		}
		for (uint32_t t = 0; t < T && !rc; t++)
			c->dests[c->servers[s].dest0 + t].dev = idx;
	}
	if (rc)
		return rc;
	ps_tp_dev_query(c->devs[0].dev, &info);
	snprintf(c->tp_name, sizeof(c->tp_name), "%s",
		 info.kind == PS_TP_KIND_RDMA ? "rdma" : "tcp");
	return cli_stage_reserve(c, CLI_STAGE_MIN);
}

static void stage_free(struct ps_client *c)
{
	for (uint32_t i = 0; i < c->ndevs; i++) {
		ps_tp_mr_dereg(c->devs[i].stage_mr);
		c->devs[i].stage_mr = NULL;
	}
	ps_mem_free(&c->stage);
	memset(&c->stage, 0, sizeof(c->stage));
}

int cli_stage_reserve(struct ps_client *c, size_t len)
{
	char err[300] = "";
	size_t want;
	int rc = 0;

	if (len <= c->stage.len)
		return 0;
	want = c->stage.len * 2 > len ? c->stage.len * 2 : len;
	stage_free(c);
	/* Only verbs pins registered memory; the tcp backend's regions are plain memory. */
	if (c->rdma)
		rc = ps_mem_memlock_ensure(want * c->ndevs, err, sizeof(err));
	if (!rc)
		rc = ps_mem_alloc(want, -1, 0, &c->stage);
	if (rc)
		return cli_fail(rc, "staging buffer of %zu bytes: %s", want,
				err[0] ? err : ps_strerror(rc));
	for (uint32_t i = 0; i < c->ndevs; i++) {
		rc = ps_tp_mr_reg(c->devs[i].dev, c->stage.addr, c->stage.len,
				  &c->devs[i].stage_mr);
		if (rc) {
			stage_free(c);
			return cli_fail(rc, "registering a staging buffer of %zu bytes: %s", want,
					ps_strerror(rc));
		}
	}
	return 0;
}

void cli_conn_close_all(struct ps_client *c)
{
	for (uint32_t d = 0; c->dests && d < c->ndests; d++) {
		ps_tp_conn_close(c->dests[d].conn);
		c->dests[d].conn = NULL;
	}
	/* Blocks of abandoned requests go back before the pools go. */
	for (uint32_t i = 0; c->slots && i < c->nslots; i++)
		if (c->slots[i].blk)
			ps_tp_pool_put(c->devs[c->slots[i].dev].pool, c->slots[i].blk);
	free(c->slots);
	c->slots = NULL;
	stage_free(c);
	while (c->ndevs) {
		c->ndevs--;
		dev_close(c, &c->devs[c->ndevs], c->ndevs);
	}
	if (c->epfd >= 0)
		close(c->epfd);
	c->epfd = -1;
}

int cli_poll(struct ps_client *c, struct ps_tp_event *evs, int max, int wait_ms)
{
	struct epoll_event e;
	int n = 0, k;

	if (c->ndevs == 1)
		return ps_tp_poll(c->devs[0].loop, evs, max, wait_ms);
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t j = 0; j < c->ndevs && n < max; j++) {
			k = ps_tp_poll(c->devs[(c->poll_next + j) % c->ndevs].loop, evs + n,
				       max - n, 0);
			if (k < 0)
				return k;
			n += k;
		}
		c->poll_next++;
		if (n || !wait_ms || pass)
			break;
		/* Nothing anywhere: sleep on all the loops at once, then look again. */
		epoll_wait(c->epfd, &e, 1, wait_ms);
	}
	return n;
}

int cli_buf_reg(struct ps_client *c, struct ps_client_buf *b)
{
	int rc = 0;

	for (uint32_t i = 0; i < c->ndevs && !rc; i++)
		rc = ps_tp_mr_reg(c->devs[i].dev, b->addr, b->len, &b->mr[i]);
	if (rc)
		cli_buf_dereg(c, b);
	return rc;
}

void cli_buf_dereg(struct ps_client *c, struct ps_client_buf *b)
{
	for (uint32_t i = 0; i < CLI_MAX_DEVS; i++) {
		ps_tp_mr_dereg(b->mr[i]);
		b->mr[i] = NULL;
	}
	(void)c;
}

uint64_t cli_tp_copied(const struct ps_client *c)
{
	struct ps_tp_stats ts;
	uint64_t sum = 0;

	for (uint32_t i = 0; i < c->ndevs; i++) {
		ps_tp_stats_get(c->devs[i].dev, &ts);
		sum += ts.bytes_copied;
	}
	return sum;
}
