/*
 * The data-path threads: creation and teardown, the event loop, connections and their queues
 * of waiting requests, completions, replies and the bounce-block allocator.
 *
 * One thread per shard, each with its own loop (see dp.h for the shared-nothing rules). A
 * thread polls its loop for up to DP_POLL_BATCH events, handles each (a request is answered
 * before the next is looked at: the rows a pull gathers and a push changes are this thread's
 * alone, so there is no lock anywhere on the path), then retries the requests that had to wait
 * and closes the connections that died during the batch. The writes and sends queued while
 * handling the batch are posted by the next ps_tp_poll() (one doorbell per connection).
 *
 * Waiting. An answer the transport refuses (-EAGAIN: the worker has no receive buffer free, or
 * the connection has no send slot; or this thread has no free reply or bounce block) makes
 * the request wait on its connection's FIFO, and every later request of that connection
 * queues behind it, so a connection's answers keep the order of its requests. A waiting
 * request keeps its receive buffer: the queue is bounded by recv_depth per connection and
 * costs no allocation. A pull waits whole (retried from scratch: pulls change nothing, except
 * that a hash pull may have created rows, which the retry finds); a push waits only for its
 * reply (its effect is never applied twice).
 *
 * Blocks. Replies are written into 64-byte blocks of a registered pool (header + 24-byte
 * reply) and sent zero copy; a pull's bounce bytes go into 64 KiB blocks of another pool,
 * chained. The block that is an operation's ctx is on its connection's in-flight list until
 * the completion arrives, so closing a connection ourselves (which suppresses its completions)
 * still returns every block.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include <psplus/error.h>

#include "common/cpu_bind.h"
#include "common/log.h"
#include "server/dp_internal.h"

#define DEF_RECV_DEPTH 64
#define DEF_MSG_SIZE   (64u << 10)
#define DEF_SEND_DEPTH 128
#define DEF_MAX_CONNS  256

/* ---- blocks --------------------------------------------------------------------------------- */

void dp_inflight_add(struct dp_conn *c, struct dp_blk *b)
{
	b->conn = c;
	b->prev = NULL;
	b->next = c->inflight;
	if (c->inflight)
		c->inflight->prev = b;
	c->inflight = b;
}

static void inflight_unlink(struct dp_blk *b)
{
	struct dp_conn *c = b->conn;

	if (b->prev)
		b->prev->next = b->next;
	else if (c)
		c->inflight = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->prev = b->next = NULL;
}

/* Give a block (and, for a bounce chain, every block after it) back to its pool. */
static void blk_free(struct dp_thread *t, struct dp_blk *b)
{
	struct dp_blk *n;

	/* A pull's ctx (its marker, or its bounce chain): the write no longer reads any row. */
	if (b->type == DP_BLK_PULL || b->type == DP_BLK_BOUNCE)
		atomic_fetch_sub_explicit(&t->pulls_inflight, 1, memory_order_release);
	if (b->type == DP_BLK_REPLY || b->type == DP_BLK_PULL) {
		ps_tp_pool_put(t->replies, b);
		return;
	}
	for (; b; b = n) {
		n = b->chain;
		ps_tp_pool_put(t->bounce, b);
	}
}

int dp_bounce_put(struct dp_bounce *b, const void *src, uint32_t len, struct ps_tp_sge *sgl,
		  uint32_t *nsge)
{
	struct dp_thread *t = b->t;
	const struct ps_tp_mr *mr = ps_tp_pool_mr(t->bounce);
	const uint8_t *s = src;

	while (len) {
		uint8_t *dst;
		uint32_t n;

		if (!b->cur || b->off == DP_BOUNCE_DATA) {
			struct dp_blk *blk;

			if (b->nblocks >= t->bounce_max_pull)
				return -E2BIG;
			blk = ps_tp_pool_get(t->bounce);
			if (!blk)
				return -EAGAIN;
			memset(blk, 0, sizeof(*blk));
			blk->type = DP_BLK_BOUNCE;
			if (b->cur)
				b->cur->chain = blk;
			else
				b->head = blk;
			b->cur = blk;
			b->off = 0;
			b->nblocks++;
			b->head->nblocks = b->nblocks;
		}
		n = DP_BOUNCE_DATA - b->off < len ? DP_BOUNCE_DATA - b->off : len;
		dst = (uint8_t *)b->cur + DP_BLK_HDR + b->off;
		memcpy(dst, s, n);
		if (*nsge && sgl[*nsge - 1].mr == mr &&
		    (const uint8_t *)sgl[*nsge - 1].addr + sgl[*nsge - 1].len == dst) {
			sgl[*nsge - 1].len += n;
		} else {
			if (*nsge >= t->gather_max)
				return -E2BIG;
			sgl[(*nsge)++] = (struct ps_tp_sge){.addr = dst, .len = n, .mr = mr};
		}
		b->off += n;
		b->bytes += n;
		s += n;
		len -= n;
	}
	return 0;
}

void dp_bounce_release(struct dp_bounce *b)
{
	if (b->head)
		blk_free(b->t, b->head);
	b->head = b->cur = NULL;
	b->off = b->nblocks = 0;
	b->bytes = 0;
}

int dp_reply(struct dp_conn *c, const struct ps_dp_req *req, int status)
{
	struct dp_thread *t = c->t;
	struct ps_dp_reply r = {
		.magic = PS_DP_REPLY_MAGIC,
		.version = PS_DP_VERSION,
		.op = req->op,
		.req_id = req->req_id,
		.status = status,
		.cluster_version =
			atomic_load_explicit(&t->dp->cluster_version, memory_order_relaxed),
	};
	struct dp_blk *b = ps_tp_pool_get(t->replies);
	struct ps_tp_sge sge;
	int rc;

	if (!b)
		return -EAGAIN;
	memset(b, 0, sizeof(*b));
	b->type = DP_BLK_REPLY;
	ps_dp_reply_encode(&r, (uint8_t *)b + DP_BLK_HDR);
	sge = (struct ps_tp_sge){.addr = (uint8_t *)b + DP_BLK_HDR,
				 .len = PS_DP_REPLY_BYTES,
				 .mr = ps_tp_pool_mr(t->replies)};
	rc = ps_tp_send(c->tc, &sge, 1, b);
	if (rc) {
		ps_tp_pool_put(t->replies, b);
		return rc;
	}
	dp_inflight_add(c, b);
	return 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_accept(struct dp_thread *t, struct ps_tp_conn *tc)
{
	struct dp_conn *c = calloc(1, sizeof(*c));

	if (c)
		c->pend = calloc(t->dp->recv_depth, sizeof(*c->pend));
	if (!c || !c->pend) {
		ps_log_warn(DP_LOG, "thread %u: out of memory accepting %s; closing it", t->idx,
			    ps_tp_conn_peer(tc));
		free(c);
		/* Not now: later events of this batch may name it. At the end of the batch. */
		if (t->norphans < DP_MAX_ORPHANS)
			t->orphans[t->norphans++] = tc;
		else
			ps_tp_conn_close(tc);
		return;
	}
	c->tc = tc;
	c->t = t;
	c->pend_cap = t->dp->recv_depth;
	snprintf(c->peer, sizeof(c->peer), "%s", ps_tp_conn_peer(tc));
	c->next = t->conns;
	if (t->conns)
		t->conns->prev = c;
	t->conns = c;
	ps_tp_conn_set_user(tc, c);
	atomic_fetch_add_explicit(&t->n_conns, 1, memory_order_relaxed);
	ps_log_debug(DP_LOG, "thread %u: connection from %s", t->idx, c->peer);
}

/* Close now: the connection is gone from the loop, its blocks back in the pools. */
static void conn_free(struct dp_thread *t, struct dp_conn *c)
{
	struct dp_blk *b;

	for (uint32_t i = 0; i < c->pend_n; i++)
		if (c->pend[(c->pend_head + i) % c->pend_cap].delete_wait)
			t->deletes_waiting--;

	/* After the close no operation of it runs any more, so its memory may be reused. */
	ps_tp_conn_close(c->tc);
	while ((b = c->inflight)) {
		inflight_unlink(b);
		blk_free(t, b);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->pend);
	free(c);
	atomic_fetch_sub_explicit(&t->n_conns, 1, memory_order_relaxed);
}

static struct dp_pend *pend_front(struct dp_conn *c)
{
	return &c->pend[c->pend_head];
}

static void pend_push(struct dp_conn *c, const struct dp_pend *p)
{
	/* Each entry holds one of the connection's recv_depth buffers: a full ring is a peer
	 * that sent beyond its credits, which the transport refuses before we see it. */
	if (c->pend_n == c->pend_cap) {
		ps_log_warn(DP_LOG,
			    "thread %u: %s has more requests waiting than receive buffers; "
			    "closing it",
			    c->t->idx, c->peer);
		c->dead = true;
		return;
	}
	c->pend[(c->pend_head + c->pend_n) % c->pend_cap] = *p;
	c->pend_n++;
}

static void pend_pop(struct dp_conn *c)
{
	c->pend_head = (c->pend_head + 1) % c->pend_cap;
	c->pend_n--;
}

static void plist_add(struct dp_thread *t, struct dp_conn *c)
{
	if (c->on_plist)
		return;
	c->on_plist = true;
	c->pnext = NULL;
	*t->plist_tail = c;
	t->plist_tail = &c->pnext;
}

/*
 * Handle one request (or retry a waiting one). 0: done. -EAGAIN: it must wait (p updated).
 * Anything else: the connection is finished (marked dead).
 */
static int run(struct dp_conn *c, struct dp_pend *p)
{
	int rc = dp_handle(c, p->buf, p->len, p);

	if (rc == 0 || rc == -EAGAIN)
		return rc;
	if (rc == PS_EBAD_MESSAGE)
		ps_log_warn(DP_LOG,
			    "thread %u: closing the connection from %s: a %u-byte message that is "
			    "no data-plane request",
			    c->t->idx, c->peer, p->len);
	else
		ps_log_debug(DP_LOG, "thread %u: %s: %s", c->t->idx, c->peer, ps_strerror(rc));
	c->dead = true;
	return rc;
}

static void conn_recv(struct dp_conn *c, void *buf, uint32_t len)
{
	struct dp_pend p = {.buf = buf, .len = len};

	if (c->dead)
		return; /* the buffer goes with the connection */
	if (c->pend_n) {
		pend_push(c, &p);
		return;
	}
	if (run(c, &p) == -EAGAIN) {
		pend_push(c, &p);
		plist_add(c->t, c);
		atomic_fetch_add_explicit(&c->t->n_waits, 1, memory_order_relaxed);
	}
}

/* Retry the waiting requests, each connection's in order, until one has to wait again. */
static void pending_run(struct dp_thread *t)
{
	struct dp_conn *c = t->plist, *next;

	t->plist = NULL;
	t->plist_tail = &t->plist;
	for (; c; c = next) {
		next = c->pnext;
		c->on_plist = false;
		while (c->pend_n && !c->dead) {
			if (run(c, pend_front(c)) == -EAGAIN)
				break;
			pend_pop(c);
		}
		if (c->pend_n && !c->dead)
			plist_add(t, c);
	}
}

static void sweep_dead(struct dp_thread *t)
{
	struct dp_conn *c = t->conns, *next;
	struct dp_conn **pp;

	while (t->norphans)
		ps_tp_conn_close(t->orphans[--t->norphans]);

	/* Unlink dead connections from the wait list first: it points into them. */
	for (pp = &t->plist; *pp;) {
		if ((*pp)->dead) {
			(*pp)->on_plist = false;
			*pp = (*pp)->pnext;
		} else {
			pp = &(*pp)->pnext;
		}
	}
	t->plist_tail = pp;
	for (; c; c = next) {
		next = c->next;
		if (c->dead)
			conn_free(t, c);
	}
}

static void completion(struct dp_thread *t, const struct ps_tp_event *ev)
{
	struct dp_blk *b = ev->ctx;

	if (ev->status)
		ps_log_debug(DP_LOG, "thread %u: %s to %s failed: %s", t->idx,
			     ev->type == PS_TP_EV_SEND_DONE ? "reply" : "pull write",
			     ps_tp_conn_peer(ev->conn), ps_strerror(ev->status));
	if (!b)
		return;
	inflight_unlink(b);
	blk_free(t, b);
}

static void dispatch(struct dp_thread *t, const struct ps_tp_event *ev)
{
	struct dp_conn *c = ev->conn ? ps_tp_conn_user(ev->conn) : NULL;
	bool dead;

	switch (ev->type) {
	case PS_TP_EV_ACCEPT:
		conn_accept(t, ev->conn);
		break;
	case PS_TP_EV_RECV:
		if (c)
			conn_recv(c, ev->buf, ev->len);
		break;
	case PS_TP_EV_SEND_DONE:
	case PS_TP_EV_WRITE_DONE:
		completion(t, ev);
		break;
	case PS_TP_EV_CLOSED:
		if (!c)
			break;
		dead = c->dead;
		c->dead = true;
		if (!dead)
			ps_log_debug(DP_LOG, "thread %u: %s disconnected (%s)", t->idx, c->peer,
				     ps_strerror(ev->status));
		break;
	case PS_TP_EV_WRITE_IMM:
		/* Workers never write into server memory: nothing to do (its credit is back). */
		break;
	}
}

/* How long a poll may sleep: short while paused (the resume); 1 ms with requests pending;
 * short when a pause is coming (its acknowledgement); else long, bounding the stop latency. */
static int poll_timeout_ms(const struct dp_thread *t)
{
	if (t->paused)
		return DP_PAUSED_POLL_MS;
	if (t->plist)
		return 1;
	if (atomic_load_explicit(&t->dp->pause_soon, memory_order_relaxed))
		return DP_PAUSED_POLL_MS;
	return DP_IDLE_POLL_MS;
}

/*
 * --bind_cores: pin each data-path thread to a CPU of the device's NUMA node (cpu_bind.h says
 * what happens without one) and log the layout. Failing to pin is logged, not fatal: the
 * threads run where the scheduler puts them, as without the option.
 */
static void bind_threads(struct ps_dp *dp)
{
	struct ps_cpu_plan plan;
	char layout[256] = "";
	size_t used = 0;
	int rc;

	rc = ps_cpu_plan_for_node(dp->info.numa_node, &plan);
	if (rc) {
		ps_log_warn(DP_LOG, "bind_cores: no CPU plan (%s): threads not pinned",
			    ps_strerror(rc));
		return;
	}
	for (unsigned i = 0; i < dp->nthreads; i++) {
		int cpu = plan.cpus[i % plan.ncpus];

		rc = ps_cpu_bind(dp->threads[i].tid, cpu);
		if (rc) {
			ps_log_warn(DP_LOG, "bind_cores: pinning thread %u to CPU %d: %s", i, cpu,
				    ps_strerror(rc));
			continue;
		}
		if (used < sizeof(layout))
			used += (size_t)snprintf(layout + used, sizeof(layout) - used, "%s%u->%d",
						 used ? " " : "", i, cpu);
	}
	ps_log_info(DP_LOG, "bind_cores: %s; data-path thread->CPU: %s%s", plan.why, layout,
		    dp->nthreads > plan.ncpus ? " (more threads than CPUs: shared round-robin)"
					      : "");
	ps_cpu_plan_free(&plan);
}

static void *thread_main(void *arg)
{
	struct dp_thread *t = arg;
	struct ps_tp_event evs[DP_POLL_BATCH];
	bool warned = false;
	int n;

	while (!atomic_load_explicit(&t->dp->stop, memory_order_acquire)) {
		bool pause = atomic_load_explicit(&t->dp->pause, memory_order_acquire);

		/*
		 * Paused (checkpoints, dp_ckpt.c): every request is held on its connection from
		 * now on, so the parts stay as they are while other threads read or swap them.
		 * The acknowledgement is published after the last request this thread handled.
		 */
		if (pause != t->paused) {
			t->paused = pause;
			atomic_store_explicit(&t->paused_ack, pause, memory_order_release);
		}
		n = ps_tp_poll(t->loop, evs, DP_POLL_BATCH, poll_timeout_ms(t));
		if (n < 0) {
			if (!warned)
				ps_log_err(DP_LOG, "thread %u: poll: %s", t->idx, ps_strerror(n));
			warned = true;
			usleep(1000);
			continue;
		}
		for (int i = 0; i < n; i++)
			dispatch(t, &evs[i]);
		if (t->plist && !t->paused)
			pending_run(t);
		sweep_dead(t);
	}
	return NULL;
}

/* ---- set-up and teardown ------------------------------------------------------------------- */

static void thread_teardown(struct dp_thread *t)
{
	while (t->norphans)
		ps_tp_conn_close(t->orphans[--t->norphans]);
	while (t->conns)
		conn_free(t, t->conns);
	ps_tp_listener_close(t->lst);
	ps_tp_loop_destroy(t->loop);
	dp_vars_destroy(t);
	ps_store_scratch_destroy(t->scratch);
	free(t->addrs);
	free(t->ids);
	free(t->row_tmp);
	free(t->sgl);
	ps_tp_pool_destroy(t->replies);
	ps_tp_pool_destroy(t->bounce);
}

/*
 * Bounce blocks per thread when not configured: 16 MiB where the memlock limit can be raised
 * (pools are registered, so they count against it), else an eighth of the limit split over the
 * threads - the rest is for the transport's own buffers (on rdma, recv_depth x msg_size per
 * connection) and the table memory.
 */
static uint32_t default_bounce_blocks(uint32_t threads)
{
	struct rlimit rl;
	uint64_t n;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_max == RLIM_INFINITY)
		return DP_BOUNCE_BLOCKS;
	n = rl.rlim_cur / 8 / threads / DP_BOUNCE_BLOCK;
	return n < 4 ? 4 : n > DP_BOUNCE_BLOCKS ? DP_BOUNCE_BLOCKS : (uint32_t)n;
}

static int thread_setup(struct ps_dp *dp, struct dp_thread *t, uint32_t idx)
{
	const struct ps_dp_opts *o = &dp->opts;
	struct ps_tp_loop_opts lo = {.recv_depth = dp->recv_depth,
				     .msg_size = dp->msg_size,
				     .send_depth = dp->send_depth,
				     .max_conns = o->max_conns ? o->max_conns : DEF_MAX_CONNS};
	struct ps_tp_pool_opts po = {.numa_node = o->numa_node};
	uint16_t port = o->port ? (uint16_t)(o->port + idx) : 0;
	int rc;

	t->dp = dp;
	t->idx = idx;
	t->plist_tail = &t->plist;
	rc = ps_tp_loop_create(dp->dev, &lo, &t->loop);
	if (rc) {
		ps_log_err(DP_LOG, "thread %u: loop: %s", idx, ps_strerror(rc));
		return rc;
	}
	rc = ps_tp_listen(t->loop, dp->host, port, &t->lst);
	if (rc) {
		ps_log_err(DP_LOG, "thread %u: cannot listen on %s:%u: %s", idx, dp->host, port,
			   ps_strerror(rc));
		return rc;
	}
	t->port = ps_tp_listener_port(t->lst);
	po.block_size = DP_REPLY_BLOCK;
	po.nblocks = DP_REPLY_BLOCKS;
	rc = ps_tp_pool_create(dp->dev, &po, &t->replies);
	if (rc)
		return rc;
	po.block_size = DP_BOUNCE_BLOCK;
	po.nblocks = o->bounce_blocks ? o->bounce_blocks : default_bounce_blocks(dp->nthreads);
	rc = ps_tp_pool_create(dp->dev, &po, &t->bounce);
	if (rc)
		return rc;
	t->bounce_nblocks = po.nblocks;

	/*
	 * The gather list of one write_imm: tcp takes IOV_MAX iovecs per frame (one is the
	 * header); rdma chains max_sge per work request, and a quarter of the send queue for one
	 * pull keeps room for the replies of other requests. Up to half of it may be bounce
	 * blocks, so the rows gathered zero copy before a pull switches to copying are the rest.
	 */
	if (dp->info.kind == PS_TP_KIND_TCP)
		t->gather_max = dp->info.max_sge > 1 ? dp->info.max_sge - 1 : 1;
	else
		t->gather_max = dp->info.max_sge * (dp->send_depth / 4 ? dp->send_depth / 4 : 1);
	if (t->gather_max > DP_GATHER_MAX)
		t->gather_max = DP_GATHER_MAX;
	if (t->gather_max < 4)
		t->gather_max = 4;
	t->bounce_max_pull =
		t->bounce_nblocks < t->gather_max / 2 ? t->bounce_nblocks : t->gather_max / 2;
	/* One more entry: the block a pull was filling when it switched to copying. */
	t->gather_zc = t->gather_max - t->bounce_max_pull - 1;
	t->sgl = calloc(t->gather_max, sizeof(*t->sgl));
	if (!t->sgl)
		return -ENOMEM;
	/* Ids per message at most msg_size / 8; dense pushes need one id per row (>= 4 bytes). */
	rc = dp_scratch_ensure(t, dp->msg_size / 4, 16);
	if (rc)
		return rc;
	t->vars.cap = 16;
	t->vars.tab = calloc(t->vars.cap, sizeof(*t->vars.tab));
	return t->vars.tab ? 0 : -ENOMEM;
}

static int check_opts(const struct ps_dp_opts *o)
{
	if (!o || !o->transport || !o->threads || o->threads > 256) {
		ps_log_err(DP_LOG, "invalid data-plane options (need a transport, 1..256 threads)");
		return -EINVAL;
	}
	if (o->port && (uint32_t)o->port + o->threads - 1 > 65535) {
		ps_log_err(DP_LOG, "ports %u..%u: beyond 65535", o->port,
			   (uint32_t)o->port + o->threads - 1);
		return -EINVAL;
	}
	return 0;
}

int ps_dp_create(const struct ps_dp_opts *o, struct ps_dp **out)
{
	struct ps_tp_dev_opts dopts = {0};
	struct ps_dp *dp;
	uint32_t i;
	int rc;

	rc = check_opts(o);
	if (rc)
		return rc;
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return -ENOMEM;
	dp->opts = *o;
	snprintf(dp->host, sizeof(dp->host), "%s", o->host && *o->host ? o->host : "0.0.0.0");
	dp->opts.host = dp->host;
	dp->opts.transport = NULL; /* borrowed pointers are not kept */
	dp->opts.bind_addr = NULL;
	/* Whole cache lines, so the payload after each receive buffer's header stays aligned. */
	dp->msg_size = ((o->msg_size ? o->msg_size : DEF_MSG_SIZE) + 63) & ~63u;
	dp->recv_depth = o->recv_depth ? o->recv_depth : DEF_RECV_DEPTH;
	dp->send_depth = o->send_depth ? o->send_depth : DEF_SEND_DEPTH;
	dopts.kind = o->transport;
	dopts.bind_addr = o->bind_addr && *o->bind_addr ? o->bind_addr : NULL;
	dopts.numa_node = o->numa_node;
	rc = ps_tp_dev_open(&dopts, &dp->dev);
	if (rc) {
		ps_log_err(DP_LOG, "cannot open the %s transport%s%s: %s", o->transport,
			   dopts.bind_addr ? " for " : "", dopts.bind_addr ? dopts.bind_addr : "",
			   ps_strerror(rc));
		free(dp);
		return rc;
	}
	ps_tp_dev_query(dp->dev, &dp->info);
	dp->reg_rows = dp->info.kind == PS_TP_KIND_RDMA;
	if (o->numa_dev && dp->info.numa_node >= 0)
		dp->opts.numa_node = dp->info.numa_node;
	dp->nthreads = o->threads;
	dp->threads = calloc(o->threads, sizeof(*dp->threads));
	if (!dp->threads) {
		rc = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < o->threads; i++) {
		rc = thread_setup(dp, &dp->threads[i], i);
		if (rc)
			goto fail;
	}
	for (i = 0; i < o->threads; i++) {
		rc = -pthread_create(&dp->threads[i].tid, NULL, thread_main, &dp->threads[i]);
		if (rc) {
			ps_log_err(DP_LOG, "cannot start data-path thread %u: %s", i,
				   ps_strerror(rc));
			goto fail;
		}
		dp->threads[i].started = true;
	}
	if (o->numa_dev)
		bind_threads(dp);
	ps_log_info(DP_LOG,
		    "%u data-path threads on %s: %u-byte messages, %u receive buffers and %u "
		    "sends per connection, bounce %u KiB per thread (%u KiB per pull), gather "
		    "lists of %u entries (%u zero copy)",
		    dp->nthreads, dp->info.name, dp->msg_size, dp->recv_depth, dp->send_depth,
		    dp->threads[0].bounce_nblocks * (DP_BOUNCE_BLOCK >> 10),
		    dp->threads[0].bounce_max_pull * (DP_BOUNCE_BLOCK >> 10),
		    dp->threads[0].gather_max, dp->threads[0].gather_zc);
	*out = dp;
	return 0;
fail:
	ps_dp_destroy(dp);
	return rc;
}

void ps_dp_destroy(struct ps_dp *dp)
{
	if (!dp)
		return;
	atomic_store_explicit(&dp->stop, true, memory_order_release);
	for (uint32_t i = 0; dp->threads && i < dp->nthreads; i++) {
		if (dp->threads[i].started)
			pthread_join(dp->threads[i].tid, NULL);
	}
	/* Connections and loops first (no operation may still read a region), then regions. */
	for (uint32_t i = 0; dp->threads && i < dp->nthreads; i++)
		thread_teardown(&dp->threads[i]);
	dp_graveyard_free(dp);
	free(dp->threads);
	ps_tp_dev_close(dp->dev);
	free(dp);
}

/* ---- accessors ------------------------------------------------------------------------------ */

uint32_t ps_dp_threads(const struct ps_dp *dp)
{
	return dp->nthreads;
}

uint16_t ps_dp_port(const struct ps_dp *dp, uint32_t shard)
{
	return shard < dp->nthreads ? dp->threads[shard].port : 0;
}

uint32_t ps_dp_msg_size(const struct ps_dp *dp)
{
	return dp->msg_size;
}

void ps_dp_dev_info(const struct ps_dp *dp, struct ps_tp_dev_info *info)
{
	*info = dp->info;
}

void ps_dp_set_cluster_version(struct ps_dp *dp, uint64_t version)
{
	atomic_store_explicit(&dp->cluster_version, version, memory_order_release);
}

uint64_t ps_dp_cluster_version(const struct ps_dp *dp)
{
	return atomic_load_explicit(&dp->cluster_version, memory_order_acquire);
}
