/*
 * tcp backend: one connection (its set-up and teardown, send queue and tx, rx state machine;
 * how a loop dials or accepts one is in tcp_loop.c).
 *
 * Send side. ps_tp_send()/ps_tp_write_imm() fill a slot of a preallocated ring (the frame
 * header and a copy of the gather list as iovecs) and take a credit; nothing is written until
 * flush/poll, which hands as many queued frames as fit into one sendmsg() (up to IOV_MAX
 * iovecs) to the kernel: one "doorbell". A slot lives from queueing until its completion has
 * been handed to the caller (or at once when it has no ctx), which bounds the loop's event
 * ring. Headers are encoded when first gathered, not when queued, so each carries the credits
 * released up to that moment. Building that sendmsg's list, runs of small pieces (at most
 * TCP_PACK_PIECE bytes: headers, rows of a sparse pull or push) are copied into the loop's pack
 * buffer and go as one iovec: the kernel spends about 150 ns per iovec on top of the copy it
 * makes anyway, against about 10 ns to copy 256 cached bytes, so a pull reply of 512 rows
 * costs its server about a third less CPU (docs/performance.md). The buffer is free again as
 * soon as sendmsg returns (the kernel has copied what it took; what it did not take is packed
 * again by the next flush). Packed payload bytes are counted in stats.bytes_packed, not in
 * bytes_copied, which stays the measure of zero copy (as rdma's inline data).
 *
 * Receive side. A state machine reads the hello, then per frame the 32-byte header into a
 * small buffer, then the payload straight to where it belongs: a free receive buffer (SEND)
 * or the registered destination (WRITE_IMM). Bytes are never copied in user space. The read
 * of a payload's tail also asks for the next header, which saves a system call per message
 * when messages stream in.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/tcp/tcp_internal.h"

/*
 * Steps (a read, or a header taken from what was read) on one connection per wakeup before the
 * loop turns to the others: a peer streaming a huge write must not starve them. What is left
 * is reported again by the (level-triggered) epoll.
 */
#define RX_BUDGET 128

/* rx_read() result for a clean end of stream between frames. */
#define RX_EOF 1

static uint32_t ring_next(const struct tcp_conn *c, uint32_t i)
{
	return i + 1 == c->depth ? 0 : i + 1;
}

static uint8_t *rbuf_addr(const struct tcp_conn *c, uint32_t idx)
{
	return (uint8_t *)c->rx_mem.addr + (size_t)idx * c->msg_size;
}

/* ---- set-up and teardown ---------------------------------------------------------------- */

int ps_tcp_conn_alloc(struct tcp_loop *l, struct tcp_conn **out)
{
	const struct ps_tp_loop_opts *o = &l->base.opts;
	struct tcp_conn *c;
	int rc = -ENOMEM;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->base.loop = &l->base;
	c->ep.kind = TCP_EP_CONN;
	c->loop = l;
	c->fd = -1;
	tcp_list_init(&c->link);
	tcp_list_init(&c->hello_link);
	tcp_list_init(&c->tx_link);
	tcp_list_init(&c->starved_link);
	c->depth = o->send_depth;
	c->slots = calloc(c->depth, sizeof(*c->slots));
	if (!c->slots)
		goto err;
	/*
	 * Room for send_depth gather lists of 7 elements (+ header) and one of IOV_MAX, so the
	 * longest list always fits once the ring drains; callers with longer lists on every op
	 * see -EAGAIN before all send slots are used.
	 */
	c->iov_cap = c->depth * 8 + IOV_MAX + 1;
	c->iovs = calloc(c->iov_cap, sizeof(*c->iovs));
	if (!c->iovs)
		goto err;
	/* One block for all receive buffers: allocated once, no allocation per message. */
	c->msg_size = o->msg_size;
	c->recv_depth = o->recv_depth;
	rc = ps_mem_alloc((size_t)c->recv_depth * c->msg_size, l->dev->numa_node, 0, &c->rx_mem);
	if (rc)
		goto err;
	rc = -ENOMEM;
	c->free_bufs = calloc(c->recv_depth, sizeof(*c->free_bufs));
	c->buf_held = calloc(c->recv_depth, sizeof(*c->buf_held));
	if (!c->free_bufs || !c->buf_held)
		goto err;
	/* Lowest index on top: buffers are reused from the front, warm in cache. */
	for (uint32_t i = 0; i < c->recv_depth; i++)
		c->free_bufs[i] = c->recv_depth - 1 - i;
	c->nfree = c->recv_depth;
	*out = c;
	return 0;

err:
	ps_tcp_conn_free(c);
	return rc;
}

int ps_tcp_conn_attach(struct tcp_conn *c, int fd, enum tcp_conn_state state)
{
	struct tcp_loop *l = c->loop;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->ep};

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	c->fd = fd;
	c->state = state;
	tcp_list_add_tail(&l->conns, &c->link);
	l->nconns++;
	if (state == TCP_CONN_HELLO) {
		c->rx_state = TCP_RX_HELLO;
		c->hello_deadline_ns = ps_clock_deadline_ms(l->base.opts.connect_timeout_ms);
		tcp_list_add_tail(&l->hello, &c->hello_link);
	} else {
		c->rx_state = TCP_RX_HDR;
	}
	return 0;
}

void ps_tcp_conn_free(struct tcp_conn *c)
{
	struct tcp_loop *l;

	if (!c)
		return;
	l = c->loop;
	if (tcp_list_linked(&c->tx_link))
		tcp_list_del(&c->tx_link);
	if (tcp_list_linked(&c->starved_link))
		tcp_list_del(&c->starved_link);
	if (tcp_list_linked(&c->hello_link))
		tcp_list_del(&c->hello_link);
	if (tcp_list_linked(&c->link)) {
		tcp_list_del(&c->link);
		l->nconns--;
	}
	if (c->fd >= 0) {
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	ps_tp_evq_purge(&l->evq, &c->base);
	free(c->buf_held);
	free(c->free_bufs);
	ps_mem_free(&c->rx_mem);
	free(c->iovs);
	free(c->slots);
	free(c);
}

void ps_tcp_conn_close(struct ps_tp_conn *conn)
{
	ps_tcp_conn_free(tcp_conn_of(conn));
}

void ps_tcp_peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* ---- handshake -------------------------------------------------------------------------- */

void ps_tcp_hello_fill(const struct tcp_loop *l, uint8_t *raw)
{
	struct tcp_hello h = {
		.magic = TCP_HELLO_MAGIC,
		.version = TCP_PROTO_VERSION,
		.flags = 0,
		.recv_depth = l->base.opts.recv_depth,
		.msg_size = l->base.opts.msg_size,
	};

	tcp_hello_encode(&h, raw);
}

/* Check the peer's hello in rx_raw and take its credits and message size. */
int ps_tcp_hello_take(struct tcp_conn *c)
{
	struct tcp_hello h;

	tcp_hello_decode(c->rx_raw, &h);
	if (h.magic != TCP_HELLO_MAGIC || h.version != TCP_PROTO_VERSION || h.flags ||
	    !h.recv_depth || h.recv_depth > TCP_MAX_DEPTH || !h.msg_size) {
		ps_log_warn(
			TCP_LOG,
			"%s: bad hello (magic %#x version %u flags %#x recv_depth %u msg_size %u)",
			c->base.peer, h.magic, h.version, h.flags, h.recv_depth, h.msg_size);
		return PS_EBAD_MESSAGE;
	}
	c->credits = c->peer_depth = h.recv_depth;
	c->max_msg = h.msg_size < c->msg_size ? h.msg_size : c->msg_size;
	return 0;
}

/* ---- send side --------------------------------------------------------------------------- */

/* Give back every slot at the tail whose work is over, in order. */
static void slots_reclaim(struct tcp_conn *c)
{
	while (c->nbusy > c->nqueued && c->slots[c->tail].state == TCP_SLOT_DONE) {
		c->tail = ring_next(c, c->tail);
		c->nbusy--;
	}
}

/*
 * @n contiguous iovecs from the ring. Chunks are freed in queue order (with their slots), so
 * the used part is [start of the tail slot's chunk, iov_head), possibly wrapped.
 */
static int iovs_fit(const struct tcp_conn *c, uint32_t n, uint32_t *start)
{
	uint32_t h = c->iov_head, t;

	if (!c->nbusy) {
		*start = 0;
		return n <= c->iov_cap ? 0 : -EAGAIN;
	}
	t = c->slots[c->tail].iov_start;
	if (h > t && h + n <= c->iov_cap)
		*start = h;
	else if (h > t && n <= t)
		*start = 0; /* wrap; the end of the ring stays unused this round */
	else if (h <= t && h + n <= t)
		*start = h;
	else
		return -EAGAIN;
	return 0;
}

static int iovs_get(struct tcp_conn *c, uint32_t n, uint32_t *start)
{
	if (iovs_fit(c, n, start))
		return -EAGAIN;
	c->iov_head = *start + n;
	return 0;
}

bool ps_tcp_conn_fed(struct tcp_conn *c)
{
	uint32_t start;

	return c->state != TCP_CONN_OPEN ||
	       (c->credits && c->nbusy < c->depth && !iovs_fit(c, c->starved_iovs, &start));
}

static void txq_add(struct tcp_conn *c)
{
	if (!tcp_list_linked(&c->tx_link))
		tcp_list_add_tail(&c->loop->txq, &c->tx_link);
}

/*
 * Elements of at most this many bytes are prefetched when queued. A gather list of rows spread
 * through a large table (a sparse pull) would otherwise be copied by sendmsg one row after the
 * other, each a TLB and cache miss the kernel's copy waits out; prefetched here, the misses of
 * all rows overlap and the copy finds them in cache. Large elements are contiguous: the
 * hardware prefetcher streams them.
 */
#define TCP_PREFETCH_MAX 4096u

static void prefetch_elem(const void *addr, uint32_t len)
{
	const char *p = addr;

	for (uint32_t off = 0; off < len; off += 64)
		__builtin_prefetch(p + off);
}

static int queue_op(struct tcp_conn *c, uint8_t op, const struct ps_tp_sge *sgl, int nsge,
		    uint32_t len, uint32_t imm, const struct ps_tp_rbuf *dst, void *ctx)
{
	struct tcp_slot *s;
	struct iovec *iov;
	uint32_t n = 1, start;

	for (int i = 0; i < nsge; i++)
		n += sgl[i].len ? 1 : 0; /* empty elements would only stall the tx accounting */
	if (!c->credits || c->nbusy == c->depth || iovs_get(c, n, &start))
		goto eagain;
	s = &c->slots[c->head];
	s->hdr_ready = false;
	s->op = op;
	s->state = TCP_SLOT_QUEUED;
	s->len = len;
	s->imm = imm;
	s->raddr = dst ? dst->addr : 0;
	s->rkey = dst ? dst->rkey : 0;
	s->ctx = ctx;
	s->iov_start = start;
	s->niov = n;
	iov = c->iovs + start;
	iov[0] = (struct iovec){.iov_base = s->hdr, .iov_len = TCP_HDR_LEN};
	for (int i = 0, k = 1; i < nsge; i++) {
		if (sgl[i].len)
			iov[k++] = (struct iovec){.iov_base = (void *)sgl[i].addr,
						  .iov_len = sgl[i].len};
		if (sgl[i].len <= TCP_PREFETCH_MAX)
			prefetch_elem(sgl[i].addr, sgl[i].len);
	}
	c->head = ring_next(c, c->head);
	c->nbusy++;
	c->nqueued++;
	c->credits--;
	txq_add(c);
	return 0;

eagain:
	c->loop->base.stats.eagain++;
	/* ps_tcp_poll() returns as soon as the connection can take it (sleeping callers too). */
	c->starved_iovs = n;
	if (!tcp_list_linked(&c->starved_link))
		tcp_list_add_tail(&c->loop->starved, &c->starved_link);
	return -EAGAIN;
}

/* Common checks of a gather list; the total length in @total. */
static int sgl_check(const struct tcp_conn *c, const struct ps_tp_sge *sgl, int nsge,
		     uint64_t *total)
{
	uint64_t t = 0;

	if (nsge > IOV_MAX)
		return -EINVAL;
	for (int i = 0; i < nsge; i++) {
		if (sgl[i].len && !sgl[i].addr)
			return -EINVAL;
		t += sgl[i].len;
	}
	if (c->state != TCP_CONN_OPEN)
		return PS_EPEER_LOST;
	*total = t;
	return 0;
}

int ps_tcp_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx)
{
	struct tcp_conn *c = tcp_conn_of(conn);
	uint64_t total;
	int rc;

	rc = sgl_check(c, sgl, nsge, &total);
	if (rc)
		return rc;
	if (total > c->max_msg)
		return -EMSGSIZE;
	return queue_op(c, TCP_OP_SEND, sgl, nsge, (uint32_t)total, 0, NULL, ctx);
}

int ps_tcp_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		     const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx)
{
	struct tcp_conn *c = tcp_conn_of(conn);
	uint64_t total;
	int rc;

	rc = sgl_check(c, sgl, nsge, &total);
	if (rc)
		return rc;
	if (total > dst->len)
		return -EMSGSIZE;
	return queue_op(c, TCP_OP_WRITE_IMM, sgl, nsge, (uint32_t)total, imm, dst, ctx);
}

/* One sendmsg's gather list in the making (loop->scratch), small pieces packed. */
struct tx_list {
	struct tcp_loop *l;
	int cnt;	 /* entries of scratch */
	uint32_t packed; /* bytes of l->pack used */
	bool in_pack;	 /* scratch[cnt - 1] is a run of l->pack that can grow */
	uint64_t copied; /* payload bytes packed (stats.bytes_packed) */
};

/*
 * Append @len bytes at @base; false when the list is full: IOV_MAX entries, or the pack buffer
 * (the flush loop sends what is listed and starts another list).
 */
static bool tx_add(struct tx_list *t, const void *base, size_t len, bool payload)
{
	struct iovec *sc = t->l->scratch;

	if (len <= TCP_PACK_PIECE) {
		if (t->packed + len > TCP_PACK_BYTES)
			return false;
		if (!t->in_pack) {
			if (t->cnt == IOV_MAX)
				return false;
			sc[t->cnt++] = (struct iovec){.iov_base = t->l->pack + t->packed};
			t->in_pack = true;
		}
		memcpy(t->l->pack + t->packed, base, len);
		sc[t->cnt - 1].iov_len += len;
		t->packed += (uint32_t)len;
		t->copied += payload ? len : 0;
		return true;
	}
	if (t->cnt == IOV_MAX)
		return false;
	sc[t->cnt++] = (struct iovec){.iov_base = (void *)base, .iov_len = len};
	t->in_pack = false;
	return true;
}

/* Collect the unwritten bytes (a pending CREDIT frame first, then queued slots) into scratch. */
static int tx_gather(struct tcp_conn *c)
{
	struct tx_list t = {.l = c->loop};
	uint32_t s = c->tx, j = c->tx_iov, off = c->tx_off;
	bool room = true;

	if (c->credit_pending) {
		if (!c->credit_ready) {
			struct tcp_hdr h = {.op = TCP_OP_CREDIT, .credits = c->owed};

			tcp_hdr_encode(&h, c->credit_hdr);
			c->owed = 0;
			c->credit_ready = true;
		}
		room = tx_add(&t, c->credit_hdr + c->credit_off, TCP_HDR_LEN - c->credit_off,
			      false);
	}
	for (uint32_t q = 0; q < c->nqueued && room; q++, s = ring_next(c, s), j = 0) {
		struct tcp_slot *slot = &c->slots[s];
		const struct iovec *iov = c->iovs + slot->iov_start;

		if (!slot->hdr_ready) {
			struct tcp_hdr h = {.op = slot->op,
					    .len = slot->len,
					    .imm = slot->imm,
					    .credits = c->owed,
					    .raddr = slot->raddr,
					    .rkey = slot->rkey};

			tcp_hdr_encode(&h, slot->hdr);
			c->owed = 0;
			slot->hdr_ready = true;
		}
		/* iovs[0] of a slot is its header, the rest its payload. */
		for (; j < slot->niov && room; j++, off = 0)
			room = tx_add(&t, (char *)iov[j].iov_base + off, iov[j].iov_len - off,
				      j > 0);
	}
	c->loop->base.stats.bytes_packed += t.copied;
	return t.cnt;
}

/* The kernel has every byte of slot @i. */
static void slot_written(struct tcp_conn *c, uint32_t i)
{
	struct tcp_slot *s = &c->slots[i];
	struct ps_tp_stats *st = &c->loop->base.stats;

	st->tx_ops++;
	st->tx_bytes += s->len;
	if (s->ctx) {
		s->state = TCP_SLOT_WAIT_EVENT;
		ps_tcp_ev_push(c->loop,
			       &(struct ps_tp_qev){.ev = {.type = s->op == TCP_OP_SEND
									  ? PS_TP_EV_SEND_DONE
									  : PS_TP_EV_WRITE_DONE,
							  .conn = &c->base,
							  .ctx = s->ctx,
							  .len = s->len},
						   .ref = i});
	} else {
		s->state = TCP_SLOT_DONE;
	}
}

static void tx_advance(struct tcp_conn *c, size_t n)
{
	if (c->credit_pending) {
		size_t k = TCP_HDR_LEN - c->credit_off;

		if (n < k) {
			c->credit_off += (uint32_t)n;
			return;
		}
		n -= k;
		c->credit_pending = c->credit_ready = false;
		c->credit_off = 0;
	}
	while (n) {
		struct tcp_slot *s = &c->slots[c->tx];
		size_t rem = c->iovs[s->iov_start + c->tx_iov].iov_len - c->tx_off;

		if (n < rem) {
			c->tx_off += (uint32_t)n;
			break;
		}
		n -= rem;
		c->tx_off = 0;
		if (++c->tx_iov == s->niov) {
			c->tx_iov = 0;
			c->nqueued--;
			slot_written(c, c->tx);
			c->tx = ring_next(c, c->tx);
		}
	}
	slots_reclaim(c);
}

/* Queue a CREDIT frame when enough credits are owed and no other frame would carry them. */
static void credit_maybe(struct tcp_conn *c)
{
	uint32_t thresh = c->recv_depth / 2 ? c->recv_depth / 2 : 1;

	if (c->owed >= thresh && !c->nqueued && !c->credit_pending) {
		c->credit_pending = true;
		txq_add(c);
	}
}

void ps_tcp_conn_flush(struct tcp_conn *c)
{
	struct tcp_loop *l = c->loop;
	struct msghdr msg = {.msg_iov = l->scratch};
	ssize_t n;

	while (c->state == TCP_CONN_OPEN) {
		if (!c->nqueued && !c->credit_pending)
			credit_maybe(c);
		if (!c->nqueued && !c->credit_pending) {
			tcp_list_del(&c->tx_link);
			ps_tcp_conn_want_out(c, false);
			return;
		}
		msg.msg_iovlen = (size_t)tx_gather(c);
		/* sendmsg, not writev: MSG_NOSIGNAL turns a dead peer into EPIPE, not SIGPIPE. */
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		l->base.stats.doorbells++;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				ps_tcp_conn_want_out(c, true);
				return;
			}
			ps_log_debug(TCP_LOG, "%s: send: %s", c->base.peer, strerror(errno));
			ps_tcp_conn_fail(c, PS_EPEER_LOST);
			return;
		}
		if (!n) { /* cannot happen with a header in every frame; never spin on it */
			ps_tcp_conn_want_out(c, true);
			return;
		}
		tx_advance(c, (size_t)n);
	}
}

/* The caller gave a receive buffer back (or a WRITE_IMM event was handed over). */
static void buf_put(struct tcp_conn *c, uint32_t idx)
{
	c->buf_held[idx] = 0;
	c->free_bufs[c->nfree++] = idx;
	if (c->state != TCP_CONN_OPEN)
		return;
	c->owed++;
	credit_maybe(c);
}

void ps_tcp_recv_release(struct ps_tp_conn *conn, void *buf)
{
	struct tcp_conn *c = tcp_conn_of(conn);
	uintptr_t base = (uintptr_t)c->rx_mem.addr, p = (uintptr_t)buf;
	uintptr_t off = p - base;
	uint32_t idx;

	/* A wrong or repeated release would corrupt the credit count: refuse it loudly. */
	if (p < base || off >= (uintptr_t)c->recv_depth * c->msg_size || off % c->msg_size ||
	    c->buf_held[off / c->msg_size] != PS_TP_EV_RECV) {
		ps_log_warn(TCP_LOG, "%s: release of %p: not a receive buffer held by the caller",
			    c->base.peer, buf);
		return;
	}
	idx = (uint32_t)(off / c->msg_size);
	buf_put(c, idx);
}

void ps_tcp_conn_delivered(struct tcp_conn *c, const struct ps_tp_qev *e)
{
	switch (e->ev.type) {
	case PS_TP_EV_SEND_DONE:
	case PS_TP_EV_WRITE_DONE:
		c->slots[e->ref].state = TCP_SLOT_DONE;
		slots_reclaim(c);
		break;
	case PS_TP_EV_WRITE_IMM:
		/* The data is in place and the caller has been told: the buffer's credit returns. */
		buf_put(c, e->ref);
		break;
	default:
		break;
	}
}

/* ---- failure ------------------------------------------------------------------------------ */

void ps_tcp_conn_fail(struct tcp_conn *c, int status)
{
	struct tcp_loop *l = c->loop;
	uint32_t s = c->tx;

	if (c->state == TCP_CONN_DEAD)
		return;
	if (c->state == TCP_CONN_HELLO) {
		/* The caller never saw it: drop it without a word. */
		ps_log_debug(TCP_LOG, "%s: dropped during handshake (%s)", c->base.peer,
			     ps_strerror(status));
		ps_tcp_conn_free(c);
		return;
	}
	if (!status && c->nqueued)
		status = PS_EPEER_LOST;
	for (uint32_t q = 0; q < c->nqueued; q++, s = ring_next(c, s)) {
		struct tcp_slot *slot = &c->slots[s];

		if (!slot->ctx) {
			slot->state = TCP_SLOT_DONE;
			continue;
		}
		slot->state = TCP_SLOT_WAIT_EVENT;
		ps_tcp_ev_push(l, &(struct ps_tp_qev){.ev = {.type = slot->op == TCP_OP_SEND
									     ? PS_TP_EV_SEND_DONE
									     : PS_TP_EV_WRITE_DONE,
							     .status = PS_EPEER_LOST,
							     .conn = &c->base,
							     .ctx = slot->ctx,
							     .len = slot->len},
						      .ref = s});
	}
	c->tx = c->head;
	c->nqueued = 0;
	c->tx_iov = c->tx_off = 0;
	c->credit_pending = c->credit_ready = false;
	slots_reclaim(c);
	ps_tcp_ev_push(
		l, &(struct ps_tp_qev){
			   .ev = {.type = PS_TP_EV_CLOSED, .status = status, .conn = &c->base}});
	if (tcp_list_linked(&c->tx_link))
		tcp_list_del(&c->tx_link);
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->state = TCP_CONN_DEAD;
	ps_log_debug(TCP_LOG, "%s: closed (%s)", c->base.peer, ps_strerror(status));
}

/* ---- receive side ------------------------------------------------------------------------- */

/* 0 with *got bytes (0: nothing to read now), RX_EOF at a frame boundary, or a status. */
static int rx_read(struct tcp_conn *c, struct iovec *iov, int cnt, size_t *got)
{
	ssize_t n;

	*got = 0;
	for (;;) {
		n = readv(c->fd, iov, cnt);
		if (n > 0) {
			*got = (size_t)n;
			return 0;
		}
		if (n == 0)
			return c->rx_state == TCP_RX_HDR && !c->rx_got ? RX_EOF : PS_EPEER_LOST;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		ps_log_debug(TCP_LOG, "%s: recv: %s", c->base.peer, strerror(errno));
		return PS_EPEER_LOST;
	}
}

static int rx_bad(struct tcp_conn *c, const char *why)
{
	const struct tcp_hdr *h = &c->rx_hdr;

	ps_log_warn(TCP_LOG,
		    "%s: %s (op %u len %u rkey %#x raddr %#llx credits %u): closing connection",
		    c->base.peer, why, h->op, h->len, h->rkey, (unsigned long long)h->raddr,
		    h->credits);
	return PS_EBAD_MESSAGE;
}

/* The frame (header and payload) is in: tell the caller. */
static void rx_deliver(struct tcp_conn *c)
{
	const struct tcp_hdr *h = &c->rx_hdr;
	struct ps_tp_stats *st = &c->loop->base.stats;
	bool send = h->op == TCP_OP_SEND;

	st->rx_ops++;
	st->rx_bytes += h->len;
	ps_tcp_ev_push(c->loop,
		       &(struct ps_tp_qev){.ev = {.type = send ? PS_TP_EV_RECV : PS_TP_EV_WRITE_IMM,
						  .conn = &c->base,
						  .buf = send ? rbuf_addr(c, c->rx_buf) : NULL,
						  .len = h->len,
						  .imm = h->imm},
					   .ref = c->rx_buf});
	c->rx_state = TCP_RX_HDR;
}

/* A header is in rx_raw: check it and set up the payload read. */
static int rx_header(struct tcp_conn *c)
{
	struct tcp_hdr *h = &c->rx_hdr;
	int rc;

	tcp_hdr_decode(c->rx_raw, h);
	if (h->flags || h->reserved0 || h->reserved1)
		return rx_bad(c, "reserved header fields set");
	if (h->credits > c->peer_depth - c->credits)
		return rx_bad(c, "more credits returned than used");
	c->credits += h->credits;
	switch (h->op) {
	case TCP_OP_CREDIT:
		if (h->len || h->imm || h->raddr || h->rkey)
			return rx_bad(c, "CREDIT frame with fields set");
		return 0;
	case TCP_OP_SEND:
		if (h->imm || h->raddr || h->rkey)
			return rx_bad(c, "SEND with write fields set");
		if (h->len > c->msg_size)
			return rx_bad(c, "SEND longer than msg_size");
		break;
	case TCP_OP_WRITE_IMM:
		rc = ps_tcp_mr_lock_range(c->loop->dev, h->rkey, h->raddr, h->len);
		if (rc)
			return rx_bad(c, "WRITE_IMM outside any region registered with its rkey");
		ps_tcp_mr_unlock(c->loop->dev);
		break;
	default:
		return rx_bad(c, "unknown op");
	}
	/* Both ops hold a receive buffer (as on rdma, where each consumes a posted receive). */
	if (!c->nfree)
		return rx_bad(c, "no receive buffer free: the peer exceeded its credits");
	c->rx_buf = c->free_bufs[--c->nfree];
	c->buf_held[c->rx_buf] = h->op == TCP_OP_SEND ? PS_TP_EV_RECV : PS_TP_EV_WRITE_IMM;
	if (!h->len)
		rx_deliver(c);
	else
		c->rx_state = h->op == TCP_OP_SEND ? TCP_RX_SEND : TCP_RX_WRITE_IMM;
	return 0;
}

/*
 * Read payload straight to its place, and the next header behind it. For WRITE_IMM the region
 * is looked up again for each read with the read lock held across it: another thread may have
 * deregistered it since the header was checked, and must not free it under our recv().
 */
static int rx_payload(struct tcp_conn *c, size_t *got)
{
	struct tcp_dev *d = c->loop->dev;
	size_t rem = c->rx_hdr.len - c->rx_got;
	struct iovec iov[2];
	int rc;

	if (c->rx_state == TCP_RX_SEND) {
		iov[0].iov_base = rbuf_addr(c, c->rx_buf) + c->rx_got;
	} else {
		uint64_t dst = c->rx_hdr.raddr + c->rx_got;

		if (ps_tcp_mr_lock_range(d, c->rx_hdr.rkey, dst, rem))
			return rx_bad(c, "region deregistered during WRITE_IMM");
		iov[0].iov_base = (void *)(uintptr_t)dst;
	}
	iov[0].iov_len = rem;
	iov[1] = (struct iovec){.iov_base = c->rx_raw, .iov_len = TCP_HDR_LEN};
	rc = rx_read(c, iov, 2, got);
	if (c->rx_state == TCP_RX_WRITE_IMM)
		ps_tcp_mr_unlock(d);
	if (rc || !*got)
		return rc;
	if (*got < rem) {
		c->rx_got += (uint32_t)*got;
		return 0;
	}
	rx_deliver(c);
	c->rx_got = (uint32_t)(*got - rem); /* bytes of the next header already in rx_raw */
	return 0;
}

static void rx(struct tcp_conn *c)
{
	struct iovec iov;
	size_t got, want;
	int rc = 0;

	for (int step = 0; step < RX_BUDGET; step++) {
		if (c->rx_state == TCP_RX_SEND || c->rx_state == TCP_RX_WRITE_IMM) {
			rc = rx_payload(c, &got);
			if (rc || !got)
				break;
			continue;
		}
		want = c->rx_state == TCP_RX_HELLO ? TCP_HELLO_LEN : TCP_HDR_LEN;
		if (c->rx_got < want) {
			iov = (struct iovec){.iov_base = c->rx_raw + c->rx_got,
					     .iov_len = want - c->rx_got};
			rc = rx_read(c, &iov, 1, &got);
			if (rc || !got)
				break;
			c->rx_got += (uint32_t)got;
			if (c->rx_got < want)
				continue;
		}
		c->rx_got = 0;
		if (c->rx_state == TCP_RX_HDR) {
			rc = rx_header(c);
		} else {
			rc = ps_tcp_hello_take(c);
			if (!rc) {
				c->state = TCP_CONN_OPEN;
				c->rx_state = TCP_RX_HDR;
				tcp_list_del(&c->hello_link);
				ps_tcp_ev_push(c->loop,
					       &(struct ps_tp_qev){.ev = {.type = PS_TP_EV_ACCEPT,
									  .conn = &c->base}});
			}
		}
		if (rc)
			break;
	}
	if (rc)
		ps_tcp_conn_fail(c, rc == RX_EOF ? 0 : rc);
}

void ps_tcp_conn_io(struct tcp_conn *c, uint32_t events)
{
	if (c->state == TCP_CONN_DEAD)
		return;
	if ((events & EPOLLOUT) && c->state == TCP_CONN_OPEN) {
		ps_tcp_conn_flush(c);
		if (c->state != TCP_CONN_OPEN)
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
		rx(c);
}
