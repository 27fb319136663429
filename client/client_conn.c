/*
 * The client's data-plane endpoints and the memory its requests use.
 *
 * Destinations: one per (server, shard), shard t of server s at index servers[s].dest0 + t,
 * rebuilt from every ClusterInfo; a connection survives a rebuild when its endpoint (host,
 * port, shard count) did not change. Connections are made at create and again on first use
 * after a loss.
 *
 * Memory, all registered once: the request blocks (a tp_pool of CLI_MAX_SLOTS blocks of the
 * largest message size: header plus any staged ids and gradients), and the staging region for
 * pull results that cannot land in the caller's memory, grown to the largest call.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/mem.h"

static void *dest_user(uint32_t d)
{
	return (void *)(uintptr_t)(d + 1);
}

static bool same_endpoint(const struct cli_server *a, const struct cli_server *b, uint32_t t)
{
	return a->ports && b->ports && a->nshards == b->nshards && !strcmp(a->host, b->host) &&
	       a->ports[t] == b->ports[t];
}

int cli_dests_rebuild(struct ps_client *c, struct cli_server *sv, uint32_t n)
{
	struct cli_dest *nd;
	uint32_t *dest0, *nsh, *start, *cap, *cstart, total = 0, k = 0;
	uint8_t *mark;

	for (uint32_t i = 0; i < n; i++)
		total += sv[i].nshards ? sv[i].nshards : 1;
	nd = calloc(total, sizeof(*nd));
	dest0 = calloc(n, sizeof(*dest0));
	nsh = calloc(n, sizeof(*nsh));
	start = calloc((size_t)total + 1, sizeof(*start));
	cap = calloc(total, sizeof(*cap));
	mark = calloc(total, 1);
	cstart = calloc((size_t)total + 1, sizeof(*cstart));
	if (!nd || !dest0 || !nsh || !start || !cap || !mark || !cstart) {
		free(cstart);
		free(nd);
		free(dest0);
		free(nsh);
		free(start);
		free(cap);
		free(mark);
		return cli_fail(-ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t T = sv[i].nshards ? sv[i].nshards : 1;
		const struct cli_server *o =
			i < c->server_num && c->servers ? &c->servers[i] : NULL;

		sv[i].dest0 = dest0[i] = k;
		nsh[i] = T;
		for (uint32_t t = 0; t < T; t++, k++) {
			nd[k].server = i;
			nd[k].shard = t;
			nd[k].max_req = sv[i].msg_size;
			if (o && same_endpoint(o, &sv[i], t) && c->dests[o->dest0 + t].conn) {
				nd[k].conn = c->dests[o->dest0 + t].conn;
				c->dests[o->dest0 + t].conn = NULL;
				ps_tp_conn_set_user(nd[k].conn, dest_user(k));
			}
		}
	}
	for (uint32_t d = 0; d < c->ndests; d++)
		ps_tp_conn_close(c->dests[d].conn);
	free(c->dests);
	free(c->dest0);
	free(c->nshards);
	free(c->start);
	free(c->cap);
	free(c->mark);
	free(c->cstart);
	c->cstart = cstart;
	c->dests = nd;
	c->ndests = total;
	c->dest0 = dest0;
	c->nshards = nsh;
	c->start = start;
	c->cap = cap;
	c->mark = mark;
	return 0;
}

/* The local address the route to @host leaves from (no packet is sent), for rdma. */
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
 * "auto" follows the servers: any server told to use tcp makes the job tcp (a verbs client
 * cannot talk to a socket server); otherwise rdma when a device is up, as the servers decide.
 */
static int open_dev(struct ps_client *c)
{
	const char *kind = c->o.transport;
	struct ps_tp_dev_opts o = {.kind = kind, .bind_addr = NULL, .numa_node = -1};
	struct ps_tp_dev_info info;
	char local[64];
	int rc;

	if (!strcmp(kind, "auto"))
		for (uint32_t i = 0; i < c->server_num; i++)
			if (!strcmp(c->servers[i].transport, "tcp"))
				o.kind = kind = "tcp";
	if (strcmp(kind, "tcp") && c->server_num && c->servers[0].ports &&
	    !local_addr_toward(c->servers[0].host, local, sizeof(local)))
		o.bind_addr =
			local; /* the device owning the address the servers are reached from */
	rc = ps_tp_dev_open(&o, &c->dev);
	if (rc == PS_ENO_DEVICE && o.bind_addr && !strcmp(kind, "auto")) {
		o.kind = "tcp";
		rc = ps_tp_dev_open(&o, &c->dev);
	}
	if (rc)
		return cli_fail(rc, "cannot open the %s transport%s%s: %s", kind,
				o.bind_addr ? " for local address " : "",
				o.bind_addr ? o.bind_addr : "", ps_strerror(rc));
	ps_tp_dev_query(c->dev, &info);
	snprintf(c->tp_name, sizeof(c->tp_name), "%s",
		 info.kind == PS_TP_KIND_RDMA ? "rdma" : "tcp");
	return 0;
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

int cli_conn_open(struct ps_client *c, uint64_t deadline)
{
	struct ps_tp_loop_opts lo = {0};
	struct ps_tp_pool_opts po = {0};
	uint32_t w = c->o.max_inflight, msg = CLI_DEF_MSG_SIZE, nslots;
	int rc;

	(void)deadline;
	rc = open_dev(c);
	if (rc)
		return rc;
	/* Our message size bounds what we may send too (the smaller side's wins): the largest. */
	for (uint32_t i = 0; i < c->server_num; i++)
		if (c->servers[i].msg_size > msg)
			msg = c->servers[i].msg_size;
	c->loop_msg_size = msg;
	lo.recv_depth = w + 2; /* one reply or write per request in flight, and slack */
	lo.msg_size = msg;
	lo.send_depth = 2 * w + 8;
	lo.max_conns = c->ndests * 2 + 16; /* room for replacements after a rebuild */
	lo.connect_timeout_ms = CLI_CONNECT_MS;
	rc = ps_tp_loop_create(c->dev, &lo, &c->loop);
	if (rc)
		return cli_fail(rc, "cannot create the transport loop: %s", ps_strerror(rc));
	nslots = request_slots(c->ndests * w, msg);
	po = (struct ps_tp_pool_opts){.block_size = msg, .nblocks = nslots, .numa_node = -1};
	rc = ps_tp_pool_create(c->dev, &po, &c->req_pool);
	if (rc)
		return cli_fail(rc, "cannot create %u registered request buffers of %u bytes: %s",
				nslots, msg, ps_strerror(rc));
	c->blk_size = msg;
	c->slots = calloc(nslots, sizeof(*c->slots));
	if (!c->slots)
		return cli_fail(-ENOMEM, "out of memory");
	c->nslots = nslots;
	return cli_stage_reserve(c, CLI_STAGE_MIN);
}

static void stage_free(struct ps_client *c)
{
	ps_tp_mr_dereg(c->stage_mr);
	ps_mem_free(&c->stage);
	c->stage_mr = NULL;
	memset(&c->stage, 0, sizeof(c->stage));
}

int cli_stage_reserve(struct ps_client *c, size_t len)
{
	struct ps_mem m;
	char err[300] = "";
	size_t want;
	int rc = 0;

	if (len <= c->stage.len)
		return 0;
	want = c->stage.len * 2 > len ? c->stage.len * 2 : len;
	stage_free(c);
	/* Only verbs pins registered memory; the tcp backend's regions are plain memory. */
	if (!strcmp(c->tp_name, "rdma"))
		rc = ps_mem_memlock_ensure(want, err, sizeof(err));
	if (!rc)
		rc = ps_mem_alloc(want, -1, 0, &m);
	if (rc)
		return cli_fail(rc, "staging buffer of %zu bytes: %s", want,
				err[0] ? err : ps_strerror(rc));
	rc = ps_tp_mr_reg(c->dev, m.addr, m.len, &c->stage_mr);
	if (rc) {
		ps_mem_free(&m);
		return cli_fail(rc, "registering a staging buffer of %zu bytes: %s", m.len,
				ps_strerror(rc));
	}
	c->stage = m;
	return 0;
}

void cli_conn_close_all(struct ps_client *c)
{
	for (uint32_t d = 0; c->dests && d < c->ndests; d++) {
		ps_tp_conn_close(c->dests[d].conn);
		c->dests[d].conn = NULL;
	}
	/* Blocks of abandoned requests go back before the pool goes. */
	for (uint32_t i = 0; c->slots && i < c->nslots; i++)
		if (c->slots[i].blk)
			ps_tp_pool_put(c->req_pool, c->slots[i].blk);
	free(c->slots);
	c->slots = NULL;
	ps_tp_pool_destroy(c->req_pool);
	c->req_pool = NULL;
	stage_free(c);
	ps_tp_loop_destroy(c->loop);
	c->loop = NULL;
	ps_tp_dev_close(c->dev);
	c->dev = NULL;
	free(c->dests);
	free(c->dest0);
	free(c->nshards);
	free(c->start);
	free(c->cap);
	free(c->mark);
	free(c->cstart);
	c->dests = NULL;
	c->dest0 = c->nshards = c->start = c->cap = c->cstart = NULL;
	c->mark = NULL;
	c->ndests = 0;
}

int cli_dest_connect(struct ps_client *c, uint32_t d, uint64_t deadline)
{
	struct cli_dest *ds = &c->dests[d];
	const struct cli_server *sv = &c->servers[ds->server];
	int rc;

	if (ds->conn)
		return 0;
	if (!sv->ports)
		return cli_fail(PS_EPEER_LOST, "server %u has never been live", ds->server);
	if (!ps_clock_remaining_ms(deadline))
		return cli_fail(PS_ETIMEOUT, "no time left to connect to server %u", ds->server);
	rc = ps_tp_connect(c->loop, sv->host, sv->ports[ds->shard], dest_user(d), &ds->conn);
	if (rc) {
		ds->conn = NULL;
		return cli_fail(rc, "cannot connect to server %u shard %u at %s:%u over %s: %s%s",
				ds->server, ds->shard, sv->host, sv->ports[ds->shard], c->tp_name,
				ps_strerror(rc), sv->live ? "" : " (the server is not live)");
	}
	return 0;
}

int cli_shape_get(struct ps_client *c, const struct cli_var *v, struct cli_shape *sh)
{
	const struct ps_placement_entry *e =
		c->placement ? ps_placement_find(c->placement, v->id) : NULL;

	if (!e)
		return cli_fail(
			PS_EUNKNOWN_VAR,
			"variable '%s' (id %u) is not in the scheduler's placement (was the "
			"scheduler restarted?)",
			v->name, v->id);
	*sh = (struct cli_shape){.e = e,
				 .kind = v->spec.kind,
				 .width = v->spec.width,
				 .nservers = c->server_num,
				 .dest0 = c->dest0,
				 .nshards = c->nshards};
	return 0;
}

void cli_refresh_if_due(struct ps_client *c, uint64_t deadline)
{
	int rc;

	if (!c->refresh_due)
		return;
	c->refresh_due = false;
	rc = cli_ctl_refresh(c, false, deadline);
	if (rc)
		ps_log_info(CLI_LOG, "re-reading the cluster after a lost connection: %s",
			    ps_client_last_error());
}

int cli_scratch_reserve(struct ps_client *c, size_t n, size_t nchunks)
{
	if (n > c->scratch_n) {
		uint32_t *a = realloc(c->dest_of, n * sizeof(*a));
		uint32_t *b = a ? realloc(c->order, n * sizeof(*b)) : NULL;

		if (a)
			c->dest_of = a;
		if (b)
			c->order = b;
		if (!a || !b)
			return cli_fail(-ENOMEM, "out of memory for %zu ids", n);
		c->scratch_n = n;
	}
	if (nchunks > c->chunks_cap) {
		struct cli_chunk *ch = realloc(c->chunks, nchunks * sizeof(*ch));
		uint32_t *co = ch ? realloc(c->corder, nchunks * sizeof(*co)) : NULL;

		if (ch)
			c->chunks = ch;
		if (co)
			c->corder = co;
		if (!ch || !co)
			return cli_fail(-ENOMEM, "out of memory for %zu requests", nchunks);
		c->chunks_cap = nchunks;
	}
	return 0;
}
