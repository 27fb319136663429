/*
 * rdma backend: the data path. Queueing sends and write_imms (gather planning, bounce copies,
 * work requests chained per connection), flushing them with one doorbell per connection,
 * selective signalling, credits, receive reposts, and the bookkeeping of completions.
 *
 * Gather lists. Elements with an mr go to the NIC as they are (zero copy); adjacent elements
 * that are contiguous in the same region share one SGE. The common op (at most max_sge elements,
 * all registered, room for it now) is checked and built in one walk straight into its WR slot
 * (op_queue_one_wr()); everything else is planned by gather walks (op_queue()). Elements
 * without an mr are copied into the connection's registered bounce ring (stats.bytes_copied).
 * A message that fits the QP's inline size goes inline instead: the provider copies it into the
 * WQE at post time, so neither registration nor bounce is needed (not counted as copied: no
 * bounce buffer is involved).
 *   - write_imm: SGEs beyond max_sge split over chained RDMA_WRITEs to consecutive remote
 *     addresses, all zero copy. One WR: RDMA_WRITE_WITH_IMM. More: RDMA_WRITEs, then a
 *     SEND_WITH_IMM carrying the total length (4 bytes LE), because the receiver of a
 *     WRITE_WITH_IMM learns only the length of that last WR; RC ordering puts the data in place
 *     before the receiver sees the completion either way.
 *   - send: a SEND lands in one receive buffer, so it cannot be split over WRs: the first
 *     max_sge - 1 SGEs stay zero copy and the rest of the list is copied into one bounce SGE.
 *
 * Credits. Every SEND (and trailer) carries our "released" counter in its imm, filled in at
 * flush time once the receives it announces are posted, so a request/response exchange returns
 * credits for free. A separate 8-byte credit write goes out only when no SEND carries them:
 * when a quarter of the peer's window is pending, when the buffers we hold plus those pending
 * reach half the window (the peer may be short), or when the loop is about to sleep. Liveness:
 * the peer's outstanding count is what is in flight + what we hold + what is pending; after
 * the flights land, if we hold less than half the window, the rules keep pending below a
 * quarter, so the peer has credits; if we hold more, the caller holds them, not the transport.
 *
 * Signalling. A WR is signalled when it is the last of an op with a ctx (the caller wants the
 * event), when max(sq_depth/2) WRs passed since the last signalled one (so completions retire the
 * send queue before it fills, even when every op has a NULL ctx), and the last WR of a flush is
 * signalled when an op without ctx was queued since the last signalled WR (so its slot and
 * bounce bytes come back without waiting for a later op). A send completion retires every WR
 * before it (a send queue completes in order).
 */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/rdma/rdma_internal.h"

static inline struct rd_wqe *wqe_at(struct rd_conn *c, uint64_t seq)
{
	return &c->wqes[seq & c->sq_mask];
}

static inline struct ps_tp_stats *stats_of(struct rd_conn *c)
{
	return &c->loop->base.stats;
}

void ps_rdma_flushq_add(struct rd_conn *c)
{
	if (c->on_credq)
		ps_rdma_flush_unlink(c);
	if (!rd_list_linked(&c->flush_link))
		rd_list_add_tail(&c->loop->flushq, &c->flush_link);
}

/* ---- credits -------------------------------------------------------------------------------- */

uint32_t ps_rdma_credits(struct rd_conn *c)
{
	/* The peer RDMA-writes this word at any time: one aligned 8-byte load. */
	uint64_t v = le64toh(__atomic_load_n(c->credit_word, __ATOMIC_ACQUIRE));

	/*
	 * Monotonic: a value below what we saw (a stale write overtaken) is ignored, and so is one
	 * above what we sent (a broken peer).
	 */
	if (v > c->peer_released && v <= c->msgs_sent)
		c->peer_released = v;
	return c->peer_depth - (uint32_t)(c->msgs_sent - c->peer_released);
}

/* Credits that came in a SEND's imm: the peer's counter modulo 2^31, widened below msgs_sent. */
static void credit_take_imm(struct rd_conn *c, uint32_t imm)
{
	uint64_t v = c->msgs_sent - ((uint32_t)(c->msgs_sent - imm) & RD_IMM_CREDIT_MASK);

	if (v > c->peer_released)
		c->peer_released = v;
}

/* ---- gather planning ------------------------------------------------------------------------ */

/*
 * One walk over a gather list, either counting (to size and admit an op) or building the SGEs
 * into the WR slots from seq0 on. Both walks follow the same rules, so they agree. A long
 * zero-copy write_imm is built in one walk, without the count: see op_build_zc().
 */
struct gather {
	struct rd_conn *c;
	uint32_t keep;	    /* output SGEs before everything else is copied (UINT32_MAX: none) */
	bool build;	    /* write SGEs and copy bytes (else count only) */
	bool zc_only;	    /* an element without an mr ends the walk with RD_GATHER_COPY */
	uint64_t seq0;	    /* build: first WR of the op */
	uint64_t raddr;	    /* build: the remote address of the op's first byte (writes) */
	uint8_t *bounce;    /* build: the op's bounce bytes */
	uint64_t vbase;	    /* the address bounce bytes get (virtual when counting) */
	uint32_t nout;	    /* output SGEs so far */
	uint64_t copied;    /* bytes copied so far */
	uint64_t total;	    /* payload bytes */
	uint32_t nin;	    /* non-empty input elements */
	uint64_t last_addr; /* the last output SGE, for coalescing */
	uint32_t last_len;
	uint32_t last_lkey;
	uint64_t wseq;		  /* build: the WR being filled, */
	struct rd_wqe *w;	  /* its slot */
	uint32_t k;		  /* and the SGEs it has */
	struct ibv_sge *last_sge; /* build: the last SGE written */
};

/* gather_walk() with zc_only met an element that has to be copied. */
#define RD_GATHER_COPY 1

/* Emit @len bytes at @addr, the payload's bytes from @off on. */
static void gather_emit(struct gather *g, uint64_t addr, uint32_t len, uint32_t lkey, uint64_t off)
{
	struct ibv_sge *s;

	if (g->nout && g->last_lkey == lkey && g->last_addr + g->last_len == addr) {
		g->last_len += len;
		if (g->build)
			g->last_sge->length = g->last_len;
		return;
	}
	g->last_addr = addr;
	g->last_len = len;
	g->last_lkey = lkey;
	g->nout++;
	if (!g->build)
		return;
	/* WRs are filled max_sge SGEs at a time; each learns where its first byte goes. */
	if (!g->w || g->k == g->c->max_sge) {
		g->wseq = g->w ? g->wseq + 1 : g->seq0;
		g->w = wqe_at(g->c, g->wseq);
		g->w->wr.wr.rdma.remote_addr = g->raddr + off;
		g->k = 0;
	}
	s = &g->w->sge[g->k++];
	s->addr = addr;
	s->length = len;
	s->lkey = lkey;
	g->last_sge = s;
}

/*
 * Does [@a, @a + @len) lie inside @mr, registered on @dev? A foreign or out-of-range region
 * would fail at the NIC and kill the QP, so every registered element is checked before use.
 */
static inline bool sge_in_mr(const struct ps_tp_mr *mr, const struct ps_tp_dev *dev, uintptr_t a,
			     uint32_t len)
{
	uintptr_t base = (uintptr_t)mr->info.addr;

	return mr->dev == dev && a >= base && a - base <= mr->info.len &&
	       len <= mr->info.len - (a - base);
}

static int gather_walk(struct gather *g, const struct ps_tp_sge *sgl, int nsge)
{
	const struct ps_tp_dev *dev = &g->c->loop->dev->base;
	uint32_t bounce_lkey = g->c->data_mr->lkey;

	for (int i = 0; i < nsge; i++) {
		const struct ps_tp_sge *e = &sgl[i];
		const struct ps_tp_mr *mr = e->mr;
		uint64_t off = g->total;

		if (!e->len)
			continue;
		if (!e->addr)
			return -EINVAL;
		if (mr) {
			if (!sge_in_mr(mr, dev, (uintptr_t)e->addr, e->len))
				return -EINVAL;
		} else if (g->zc_only) {
			return RD_GATHER_COPY;
		}
		g->total += e->len;
		g->nin++;
		if (g->nout >= g->keep && g->keep != UINT32_MAX)
			mr = NULL; /* tail: copied into one contiguous bounce run */
		if (mr) {
			gather_emit(g, (uintptr_t)e->addr, e->len, mr->info.lkey, off);
		} else {
			if (g->build)
				memcpy(g->bounce + g->copied, e->addr, e->len);
			gather_emit(g, g->vbase + g->copied, e->len, bounce_lkey, off);
			g->copied += e->len;
		}
	}
	return g->total > UINT32_MAX ? -EMSGSIZE : 0;
}

/* ---- bounce ring ---------------------------------------------------------------------------- */

/* The bytes to skip at the end of the ring before @n contiguous ones, or -1: not free now. */
static int64_t bounce_skip(const struct rd_conn *c, uint64_t n)
{
	uint64_t pos = c->bounce_head % c->bounce_size;
	uint64_t skip = pos + n > c->bounce_size ? c->bounce_size - pos : 0;

	return c->bounce_head + skip + n - c->bounce_tail > c->bounce_size ? -1 : (int64_t)skip;
}

/* @n contiguous bytes of the ring, or NULL when they are not free now. */
static uint8_t *bounce_alloc(struct rd_conn *c, uint64_t n)
{
	int64_t skip = bounce_skip(c, n);
	uint8_t *p;

	if (skip < 0)
		return NULL;
	c->bounce_head += skip;
	p = c->bounce + c->bounce_head % c->bounce_size;
	c->bounce_head += n;
	return p;
}

/* ---- queueing ------------------------------------------------------------------------------- */

/* Append the WR of slot sq_head to the queued chain; decide its signalling. */
static inline struct rd_wqe *wqe_queue(struct rd_conn *c, bool want_signal)
{
	struct rd_wqe *w = wqe_at(c, c->sq_head);

	w->seq = c->sq_head;
	w->wr.wr_id = (uintptr_t)&w->tag;
	w->wr.next = NULL;
	w->wr.sg_list = w->sge;
	w->wr.send_flags = 0;
	if (c->sq_head > c->sq_posted)
		wqe_at(c, c->sq_head - 1)->wr.next = &w->wr;
	if (want_signal || w->seq - c->sq_last_signal >= c->sq_depth / 2) {
		w->wr.send_flags = IBV_SEND_SIGNALED;
		c->sq_last_signal = w->seq;
		c->unsig_ops = 0;
	}
	c->sq_head++;
	return w;
}

/* An op of @nwr WRs and @copied bounce bytes was refused: remember what it needs. */
static int eagain(struct rd_conn *c, uint32_t nwr, uint64_t copied)
{
	stats_of(c)->eagain++;
	/*
	 * poll returns early once the connection can take this op (credits show no fd, and
	 * freed slots need not come with an event for the caller).
	 */
	c->starved_nwr = nwr;
	c->starved_bytes = copied;
	if (!rd_list_linked(&c->starved_link))
		rd_list_add_tail(&c->loop->starved, &c->starved_link);
	return -EAGAIN;
}

/* Does the op fit the connection's resources now: a credit, an op slot, @nwr WR slots? */
static inline bool op_room(struct rd_conn *c, uint64_t nwr)
{
	return ps_rdma_credits(c) && c->op_head - c->op_tail < c->send_depth &&
	       c->sq_head - c->sq_done + nwr <= c->sq_depth;
}

/*
 * The single walk of a long zero-copy write_imm: validate and build the SGEs straight into the
 * WR slots, when the slots for the worst case (no element coalesced) and a credit are free now.
 * 0 when built; RD_GATHER_COPY when the general path must plan it (an element to copy, an op
 * that goes inline, no room now); or an error about the list.
 */
static int op_build_zc(struct rd_conn *c, struct gather *g, const struct ps_tp_sge *sgl, int nsge,
		       const struct ps_tp_rbuf *dst)
{
	uint64_t worst = ((uint64_t)nsge + c->max_sge - 1) / c->max_sge + 1;
	int rc;

	if (nsge <= (int)c->max_sge || !op_room(c, worst))
		return RD_GATHER_COPY;
	*g = (struct gather){.c = c,
			     .keep = UINT32_MAX,
			     .build = true,
			     .zc_only = true,
			     .seq0 = c->sq_head,
			     .raddr = dst->addr};
	rc = gather_walk(g, sgl, nsge);
	if (rc)
		return rc;
	if (g->total > dst->len)
		return -EMSGSIZE;
	/* Empty elements made it short enough to go inline: the general path decides. */
	if (c->max_inline && g->total <= c->max_inline && g->nin <= c->max_sge)
		return RD_GATHER_COPY;
	return 0;
}

bool ps_rdma_conn_fed(struct rd_conn *c)
{
	return c->state != RD_CONN_OPEN ||
	       (op_room(c, c->starved_nwr) &&
		(!c->starved_bytes || bounce_skip(c, c->starved_bytes) >= 0));
}

/* Open op slot @op for its caller: the state every path gives it before building its WRs. */
static struct rd_op *op_open(struct rd_conn *c, bool write, void *ctx)
{
	struct rd_op *op = &c->ops[c->op_head & c->op_mask];

	op->ctx = ctx;
	op->bounce_end = c->bounce_head;
	op->state = RD_OP_PENDING;
	op->ev_type = write ? PS_TP_EV_WRITE_DONE : PS_TP_EV_SEND_DONE;
	return op;
}

/* The op whose last WR is @w is queued: account for it and ask for a flush. */
static inline void op_commit(struct rd_conn *c, struct rd_op *op, const struct rd_wqe *w,
			     uint64_t bytes, uint64_t copied)
{
	if (!(w->wr.send_flags & IBV_SEND_SIGNALED))
		c->unsig_ops++;
	op->seq_last = w->seq;
	c->op_head++;
	c->msgs_sent++;
	stats_of(c)->tx_ops++;
	stats_of(c)->tx_bytes += bytes;
	stats_of(c)->bytes_copied += copied;
	ps_rdma_flushq_add(c);
}

/*
 * The common op, in one walk: at most max_sge elements, each non-empty one registered, room
 * for it now. Its SGEs are checked and written straight into the WR slot (adjacent elements of
 * one region merged, as gather_walk() does), and it goes inline when it fits. Anything else
 * (an element to copy, a longer list, no room) returns RD_GATHER_COPY for the general path,
 * which finds the same errors about the list. A ping-pong's per-message instructions fell by a
 * third with it (callgrind over the fake, docs/performance.md).
 */
static int op_queue_one_wr(struct rd_conn *c, const struct ps_tp_sge *sgl, int nsge,
			   const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx)
{
	const struct ps_tp_dev *dev = &c->loop->dev->base;
	struct ibv_sge *s = wqe_at(c, c->sq_head)->sge;
	uint64_t total = 0;
	uint32_t k = 0;
	struct rd_wqe *w;
	struct rd_op *op;

	if (nsge > (int)c->max_sge || !op_room(c, 1))
		return RD_GATHER_COPY;
	for (int i = 0; i < nsge; i++) {
		const struct ps_tp_mr *mr = sgl[i].mr;
		uintptr_t a = (uintptr_t)sgl[i].addr;
		uint32_t len = sgl[i].len;

		if (!len)
			continue;
		if (!a)
			return -EINVAL;
		if (!mr)
			return RD_GATHER_COPY;
		if (!sge_in_mr(mr, dev, a, len))
			return -EINVAL;
		total += len;
		if (k && s[k - 1].lkey == mr->info.lkey && s[k - 1].addr + s[k - 1].length == a) {
			s[k - 1].length += len;
			continue;
		}
		s[k++] = (struct ibv_sge){.addr = a, .length = len, .lkey = mr->info.lkey};
	}
	if (dst ? total > dst->len : total > c->max_msg)
		return -EMSGSIZE;
	op = op_open(c, dst != NULL, ctx);
	w = wqe_queue(c, ctx != NULL);
	w->wr.num_sge = (int)k;
	if (dst) {
		w->wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
		w->wr.imm_data = htonl(imm);
		w->wr.wr.rdma.remote_addr = dst->addr;
		w->wr.wr.rdma.rkey = dst->rkey;
	} else {
		w->wr.opcode = IBV_WR_SEND_WITH_IMM;
		w->wr.imm_data = 0; /* the credits, at flush */
	}
	if (c->max_inline && total <= c->max_inline)
		w->wr.send_flags |= IBV_SEND_INLINE;
	op_commit(c, op, w, total, 0);
	return 0;
}

/*
 * The general path: long lists, copies, splits (op_post() tried the one-WR path first). Not
 * inlined into op_post(): its frame and the gather state's initialisation would then be paid
 * by every op, the one-WR ones included.
 */
static __attribute__((noinline)) int op_queue(struct rd_conn *c, const struct ps_tp_sge *sgl,
					      int nsge, const struct ps_tp_rbuf *dst, uint32_t imm,
					      void *ctx)
{
	struct gather g = {.c = c, .keep = UINT32_MAX, .vbase = 1ull << 62};
	uint32_t keep = UINT32_MAX, nwr, chunks = 1, nout;
	uint64_t copied = 0;
	struct rd_op *op;
	struct rd_wqe *w = NULL;
	uint8_t *bounce = NULL;
	bool inl = false, built;
	int rc;

	rc = dst ? op_build_zc(c, &g, sgl, nsge, dst) : RD_GATHER_COPY;
	if (rc < 0)
		return rc;
	built = !rc;
	if (!built) {
		g = (struct gather){.c = c, .keep = UINT32_MAX, .vbase = 1ull << 62};
		rc = gather_walk(&g, sgl, nsge);
		if (rc)
			return rc;
		if (dst ? g.total > dst->len : g.total > c->max_msg)
			return -EMSGSIZE;
		inl = c->max_inline && g.total <= c->max_inline && g.nin <= c->max_sge;
		copied = inl ? 0 : g.copied;
	}
	nout = inl ? g.nin : g.nout;
	if (!inl && !dst && g.nout > c->max_sge) {
		/* A SEND with too many SGEs: keep max_sge - 1 of them, copy the rest. */
		keep = c->max_sge - 1;
		g = (struct gather){.c = c, .keep = keep, .vbase = 1ull << 62};
		gather_walk(&g, sgl, nsge);
		copied = g.copied;
		nout = g.nout;
	}
	if (dst) {
		chunks = nout > c->max_sge ? (nout + c->max_sge - 1) / c->max_sge : 1;
		nwr = chunks + (chunks > 1);
	} else {
		nwr = 1;
	}
	if (nwr > c->sq_depth || copied > c->bounce_size)
		return -EMSGSIZE; /* can never fit: register the memory, or split the op */

	/* Resources: a credit, an op slot, send-queue room, bounce bytes (built: all checked). */
	if (!built && !op_room(c, nwr))
		return eagain(c, nwr, copied);
	if (copied && !(bounce = bounce_alloc(c, copied)))
		return eagain(c, nwr, copied);

	op = op_open(c, dst != NULL, ctx);

	/* Build the SGEs into the WR slots from sq_head on. */
	if (inl) {
		uint32_t k = 0;

		for (int i = 0; i < nsge; i++) {
			struct ibv_sge *s;

			if (!sgl[i].len)
				continue;
			s = &wqe_at(c, c->sq_head)->sge[k++];
			s->addr = (uintptr_t)sgl[i].addr;
			s->length = sgl[i].len;
			s->lkey = sgl[i].mr ? sgl[i].mr->info.lkey : 0; /* unused inline */
		}
	} else if (!built) {
		g = (struct gather){.c = c,
				    .keep = keep,
				    .build = true,
				    .seq0 = c->sq_head,
				    .raddr = dst ? dst->addr : 0,
				    .bounce = bounce,
				    .vbase = (uintptr_t)bounce};
		gather_walk(&g, sgl, nsge);
	}

	if (!dst) {
		w = wqe_queue(c, ctx != NULL);
		w->wr.opcode = IBV_WR_SEND_WITH_IMM;
		w->wr.imm_data = 0; /* the credits, at flush */
		w->wr.num_sge = (int)nout;
		if (inl)
			w->wr.send_flags |= IBV_SEND_INLINE;
	} else {
		/* Each WR's remote_addr was set by the build, which emits no SGE here. */
		if (inl || !nout)
			wqe_at(c, c->sq_head)->wr.wr.rdma.remote_addr = dst->addr;
		for (uint32_t k = 0; k < chunks; k++) {
			uint32_t first = k * c->max_sge;
			uint32_t n = nout - first < c->max_sge ? nout - first : c->max_sge;

			w = wqe_queue(c, chunks == 1 && ctx != NULL);
			w->wr.opcode = chunks == 1 ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
			w->wr.num_sge = (int)n;
			w->wr.imm_data = htonl(imm);
			w->wr.wr.rdma.rkey = dst->rkey;
			if (inl)
				w->wr.send_flags |= IBV_SEND_INLINE;
		}
		if (chunks > 1) {
			/* The trailer; its bytes live in the op's slot of trailers[]. */
			uint8_t *t = c->trailers + (c->op_head & c->op_mask) * RD_TRAILER_LEN;

			rd_put32(t, (uint32_t)g.total);
			rd_put32(t + 4, imm);
			w = wqe_queue(c, ctx != NULL);
			w->wr.opcode = IBV_WR_SEND_WITH_IMM;
			w->wr.imm_data = htonl(RD_IMM_TRAILER); /* and the credits, at flush */
			w->wr.num_sge = 1;
			w->sge[0].addr = (uintptr_t)t;
			w->sge[0].length = RD_TRAILER_LEN;
			w->sge[0].lkey = c->data_mr->lkey;
			if (c->max_inline >= RD_TRAILER_LEN)
				w->wr.send_flags |= IBV_SEND_INLINE;
		}
	}
	op_commit(c, op, w, g.total, copied);
	return 0;
}

static int op_post(struct rd_conn *c, const struct ps_tp_sge *sgl, int nsge,
		   const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx)
{
	int rc;

	if (c->state != RD_CONN_OPEN)
		return c->state == RD_CONN_DEAD ? PS_EPEER_LOST : -ENOTCONN;
	rc = op_queue_one_wr(c, sgl, nsge, dst, imm, ctx);
	return rc == RD_GATHER_COPY ? op_queue(c, sgl, nsge, dst, imm, ctx) : rc;
}

int ps_rdma_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx)
{
	return op_post(rd_conn_of(conn), sgl, nsge, NULL, 0, ctx);
}

int ps_rdma_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		      const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx)
{
	return op_post(rd_conn_of(conn), sgl, nsge, dst, imm, ctx);
}

/* ---- flush ---------------------------------------------------------------------------------- */

/* Queue an RDMA WRITE of our cumulative "released" count into the peer's credit word. */
static void credit_queue(struct rd_conn *c)
{
	uint64_t *src = &c->credit_src[c->sq_head & c->sq_mask];
	struct rd_wqe *w;

	/*
	 * The source slot is indexed like the WR, so it is rewritten only after this WR completed;
	 * the NIC never reads a half-written value.
	 */
	*src = htole64(c->reposted);
	w = wqe_queue(c, false);
	w->wr.opcode = IBV_WR_RDMA_WRITE;
	w->wr.num_sge = 1;
	w->sge[0].addr = (uintptr_t)src;
	w->sge[0].length = sizeof(*src);
	w->sge[0].lkey = c->data_mr->lkey;
	w->wr.wr.rdma.remote_addr = c->peer_credit_addr;
	w->wr.wr.rdma.rkey = c->peer_credit_rkey;
	if (c->max_inline >= sizeof(*src))
		w->wr.send_flags |= IBV_SEND_INLINE;
	c->credit_written = c->reposted;
}

/* Put our "released" count into the imm of every queued SEND; did any take it? */
static bool credits_ride(struct rd_conn *c)
{
	uint32_t v = (uint32_t)c->reposted & RD_IMM_CREDIT_MASK;
	bool any = false;

	for (uint64_t seq = c->sq_posted; seq < c->sq_head; seq++) {
		struct ibv_send_wr *wr = &wqe_at(c, seq)->wr;

		if (wr->opcode != IBV_WR_SEND_WITH_IMM)
			continue;
		wr->imm_data = htonl((ntohl(wr->imm_data) & RD_IMM_TRAILER) | v);
		any = true;
	}
	return any;
}

void ps_rdma_conn_flush(struct rd_conn *c, bool force_credit)
{
	struct ibv_send_wr *bad_s;
	struct ibv_recv_wr *bad_r;
	uint64_t pending;
	bool due;
	int rc;

	if (c->state != RD_CONN_OPEN) {
		ps_rdma_flush_unlink(c);
		return;
	}
	/* Receive buffers before the credit write that announces them. */
	if (c->nrepost) {
		*c->repost_tail = NULL;
		rc = ps_vshim_post_recv(c->id->qp, c->repost, &bad_r);
		if (rc) {
			ps_log_err(RD_LOG, "%s: posting %u receives: %s", c->base.peer, c->nrepost,
				   ps_strerror(rc));
			ps_rdma_conn_break(c, PS_EPEER_LOST);
			return;
		}
		for (struct ibv_recv_wr *r = c->repost; r; r = r->next)
			container_of(r, struct rd_rx, wr)->state = RD_RX_POSTED;
		c->reposted += c->nrepost;
		c->nrepost = 0;
		c->repost = NULL;
		c->repost_tail = &c->repost;
	}
	/* Credits: in the imm of every SEND of the chain, else a write when due (see the top). */
	if (c->sq_head > c->sq_posted && credits_ride(c))
		c->credit_written = c->reposted;
	pending = c->reposted - c->credit_written;
	due = pending && (pending >= c->credit_thresh || force_credit ||
			  c->rx_count - c->credit_written >= c->recv_depth / 2);
	if (due && c->sq_head - c->sq_done < c->sq_depth)
		credit_queue(c);
	if (c->sq_head > c->sq_posted) {
		struct rd_wqe *last = wqe_at(c, c->sq_head - 1);

		if (c->unsig_ops && !(last->wr.send_flags & IBV_SEND_SIGNALED)) {
			last->wr.send_flags |= IBV_SEND_SIGNALED;
			c->sq_last_signal = last->seq;
			c->unsig_ops = 0;
		}
		rc = ps_vshim_post_send(c->id->qp, &wqe_at(c, c->sq_posted)->wr, &bad_s);
		stats_of(c)->doorbells++;
		if (rc) {
			ps_log_err(RD_LOG, "%s: posting %llu WRs: %s", c->base.peer,
				   (unsigned long long)(c->sq_head - c->sq_posted),
				   ps_strerror(rc));
			ps_rdma_conn_break(c, PS_EPEER_LOST);
			return;
		}
		c->sq_posted = c->sq_head;
	}
	/*
	 * Credits pending but not due: park the connection on the credit queue, which only the
	 * poll about to sleep walks (on the flush queue every busy poll would call this for it).
	 * New work, a repost or a receive (ps_rdma_rx_done()) brings it back. Due but no room in
	 * the send queue: stay, completions make room.
	 */
	if (c->reposted == c->credit_written) {
		ps_rdma_flush_unlink(c);
	} else if (!due && !c->on_credq) {
		rd_list_del(&c->flush_link);
		rd_list_add_tail(&c->loop->credq, &c->flush_link);
		c->on_credq = true;
	}
}

/* ---- receive buffers ------------------------------------------------------------------------ */

int ps_rdma_rx_post_all(struct rd_conn *c)
{
	struct ibv_recv_wr *bad;
	int rc;

	for (uint32_t i = 0; i < c->recv_depth; i++) {
		c->rx[i].wr.next = i + 1 < c->recv_depth ? &c->rx[i + 1].wr : NULL;
		c->rx[i].state = RD_RX_POSTED;
	}
	rc = ps_vshim_post_recv(c->id->qp, &c->rx[0].wr, &bad);
	if (rc)
		ps_log_warn(RD_LOG, "%s: posting %u receives: %s", c->base.peer, c->recv_depth,
			    ps_strerror(rc));
	return rc;
}

static void rx_repost(struct rd_conn *c, struct rd_rx *rx)
{
	if (c->state != RD_CONN_OPEN) {
		rx->state = 0; /* the QP is gone or flushing: nothing to post to */
		return;
	}
	rx->state = RD_RX_REPOST;
	rx->wr.next = NULL;
	*c->repost_tail = &rx->wr;
	c->repost_tail = &rx->wr.next;
	c->nrepost++;
	ps_rdma_flushq_add(c);
}

void ps_rdma_recv_release(struct ps_tp_conn *conn, void *buf)
{
	struct rd_conn *c = rd_conn_of(conn);
	uintptr_t off = (uintptr_t)buf - (uintptr_t)c->rxbuf;
	uintptr_t idx = c->rx_shift ? off >> c->rx_shift : off / c->rx_stride;
	struct rd_rx *rx;

	if ((uintptr_t)buf < (uintptr_t)c->rxbuf || idx * c->rx_stride != off ||
	    idx >= c->recv_depth) {
		ps_log_err(RD_LOG, "%s: release of %p: not a receive buffer of this connection",
			   c->base.peer, buf);
		return;
	}
	rx = &c->rx[idx];
	if (rx->state != RD_RX_HELD) {
		ps_log_err(RD_LOG, "%s: release of %p: not held (released twice?)", c->base.peer,
			   buf);
		return;
	}
	rx_repost(c, rx);
}

/* ---- completions ---------------------------------------------------------------------------- */

/* Move completed ops' bounce bytes and slots back, in order. */
static void ops_reclaim(struct rd_conn *c)
{
	while (c->op_tail < c->op_comp) {
		struct rd_op *op = &c->ops[c->op_tail & c->op_mask];

		if (op->state != RD_OP_DONE)
			break;
		c->bounce_tail = op->bounce_end;
		op->state = 0;
		c->op_tail++;
	}
	/*
	 * No op left at all: restart the ring at 0, so a large copy never finds it fragmented
	 * (with ops left, their bounce_end positions must stay valid).
	 */
	if (c->op_tail == c->op_head)
		c->bounce_tail = c->bounce_head = 0;
}

/* Every op whose last WR is before @done is complete (with @status). */
static void ops_complete(struct rd_conn *c, uint64_t done, int status)
{
	while (c->op_comp < c->op_head) {
		uint32_t slot = (uint32_t)(c->op_comp & c->op_mask);
		struct rd_op *op = &c->ops[slot];

		if (op->seq_last >= done)
			break;
		if (op->ctx) {
			op->state = RD_OP_WAIT_EVENT;
			ps_rdma_ev_push(c->loop, op->ev_type, c, status, op->ctx, NULL, 0, 0, slot);
		} else {
			op->state = RD_OP_DONE;
		}
		c->op_comp++;
	}
	ops_reclaim(c);
}

void ps_rdma_ops_fail(struct rd_conn *c)
{
	ops_complete(c, UINT64_MAX, PS_EPEER_LOST);
}

/* A flushed completion on an open connection: the QP is in error; DISCONNECTED should follow. */
static void conn_flushed(struct rd_conn *c)
{
	if (c->flushed)
		return;
	c->flushed = true;
	c->loop->nflushing++;
	c->deadline_ns = ps_clock_deadline_ms(RD_FLUSH_GRACE_MS);
}

/* A completion with an error status: a flush is drain, anything else breaks the connection. */
static void wc_error(struct rd_conn *c, const struct ibv_wc *wc)
{
	if (wc->status == IBV_WC_WR_FLUSH_ERR) {
		conn_flushed(c);
		return;
	}
	ps_log_warn(RD_LOG, "%s: completion error: %s (vendor error %#x, opcode %d)", c->base.peer,
		    ps_vshim_wc_status_str(wc->status), wc->vendor_err, wc->opcode);
	ps_rdma_conn_break(c, PS_EPEER_LOST);
}

void ps_rdma_wqe_done(struct rd_wqe *w, const struct ibv_wc *wc)
{
	struct rd_conn *c = w->conn;

	if (c->state != RD_CONN_OPEN)
		return; /* DEAD, CLOSING: its ops were failed already; flushes are drain */
	if (wc->status != IBV_WC_SUCCESS) {
		wc_error(c, wc);
		return;
	}
	if (w->seq + 1 > c->sq_done)
		c->sq_done = w->seq + 1;
	ops_complete(c, c->sq_done, 0);
}

void ps_rdma_rx_done(struct rd_rx *rx, const struct ibv_wc *wc)
{
	struct rd_conn *c = rx->conn;
	uint32_t idx = (uint32_t)(rx - c->rx);
	uint8_t *buf = c->rxbuf + (size_t)idx * c->rx_stride;
	uint32_t len, imm;

	/* Data before ESTABLISHED: the peer got our accept, so the connection is up. */
	if (c->state == RD_CONN_ACCEPTING && wc->status == IBV_WC_SUCCESS)
		ps_rdma_conn_established(c);
	if (c->state != RD_CONN_OPEN)
		return;
	if (wc->status != IBV_WC_SUCCESS) {
		rx->state = 0;
		wc_error(c, wc);
		return;
	}
	c->rx_count++;
	stats_of(c)->rx_ops++;
	if (c->on_credq) /* the buffers held may now make the parked credits due */
		ps_rdma_flushq_add(c);
	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		rx->state = RD_RX_IMM;
		stats_of(c)->rx_bytes += wc->byte_len;
		ps_rdma_ev_push(c->loop, PS_TP_EV_WRITE_IMM, c, 0, NULL, NULL, wc->byte_len,
				ntohl(wc->imm_data), idx);
	} else if (wc->opcode == IBV_WC_RECV && !(wc->wc_flags & IBV_WC_WITH_IMM)) {
		ps_log_warn(RD_LOG, "%s: a SEND without imm (no credits): not protocol %u",
			    c->base.peer, RD_PROTO_VERSION);
		rx->state = 0;
		ps_rdma_conn_break(c, PS_EBAD_MESSAGE);
	} else if (wc->opcode == IBV_WC_RECV) {
		imm = ntohl(wc->imm_data);
		credit_take_imm(c, imm & RD_IMM_CREDIT_MASK);
		if (!(imm & RD_IMM_TRAILER)) {
			rx->state = RD_RX_HELD;
			stats_of(c)->rx_bytes += wc->byte_len;
			ps_rdma_ev_push(c->loop, PS_TP_EV_RECV, c, 0, NULL, buf, wc->byte_len, 0,
					idx);
			return;
		}
		/* The trailer of a split write_imm: the total length and the caller's imm. */
		if (wc->byte_len != RD_TRAILER_LEN) {
			ps_log_warn(RD_LOG, "%s: trailer of %u bytes, not %u", c->base.peer,
				    wc->byte_len, RD_TRAILER_LEN);
			rx->state = 0;
			ps_rdma_conn_break(c, PS_EBAD_MESSAGE);
			return;
		}
		len = rd_get32(buf);
		rx->state = RD_RX_IMM;
		stats_of(c)->rx_bytes += len;
		ps_rdma_ev_push(c->loop, PS_TP_EV_WRITE_IMM, c, 0, NULL, NULL, len,
				rd_get32(buf + 4), idx);
	} else {
		ps_log_warn(RD_LOG, "%s: receive completion with opcode %d", c->base.peer,
			    wc->opcode);
		rx->state = 0;
		ps_rdma_conn_break(c, PS_EBAD_MESSAGE);
	}
}

void ps_rdma_delivered(struct rd_conn *c, const struct ps_tp_qev *e)
{
	switch (e->ev.type) {
	case PS_TP_EV_SEND_DONE:
	case PS_TP_EV_WRITE_DONE:
		c->ops[e->ref].state = RD_OP_DONE;
		ops_reclaim(c);
		break;
	case PS_TP_EV_WRITE_IMM:
		/* The buffer carried no data the caller keeps: its credit goes back at once. */
		rx_repost(c, &c->rx[e->ref]);
		break;
	default:
		break;
	}
}
