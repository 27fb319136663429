/*
 * The rdma backend of the transport interface (transport.h): what its four files share.
 *
 *   rdma_dev.c   the dev (device chosen through rdma_cm, PD, limits), memory regions, ops table
 *   rdma_loop.c  one loop: CQ + completion channel, cm event channel, epoll fd, the event ring
 *                (transport/tp_evq.h, shared with tcp),
 *                CQ and cm event dispatch, poll and flush
 *   rdma_conn.c  one connection: registered memory, QP, connect/accept/listen, private data,
 *                breaking and closing
 *   rdma_post.c  the data path: send and write_imm (gather planning, bounce copies, WR chains,
 *                signalling), credits, receive reposts, completion bookkeeping
 *
 * Every verbs and rdma_cm call goes through the verbs shim (verbs_shim.h); nothing here calls
 * ibv_* or rdma_* directly, not even the static inline ones of <infiniband/verbs.h>.
 *
 * Protocol (docs/transport.md, "RDMA backend"):
 *   - rdma_cm private data, both ways: struct rd_pdata (32 bytes, little-endian): version,
 *     recv_depth, msg_size and where the peer writes our credits (address + rkey).
 *   - SEND payload = the caller's bytes, no header; every SEND goes as SEND_WITH_IMM whose imm
 *     carries the sender's "released" counter (bits 0-30, credits piggy-backed) and bit 31
 *     clear. write_imm = RDMA_WRITE_WITH_IMM carrying the caller's imm; a gather list longer
 *     than the device's max_sge becomes RDMA_WRITEs then a SEND_WITH_IMM with bit 31 set (the
 *     "trailer") whose 8-byte payload is the total length and the caller's imm (the receiver
 *     of a plain WRITE_WITH_IMM only learns the length of the last WR).
 *   - Credits: a sender has at most the peer's recv_depth messages (SEND or WRITE_IMM)
 *     outstanding. The receiver returns them in the imm of its next SEND, or by RDMA-writing
 *     a cumulative 64-bit "released" counter (little-endian) into the sender's credit word
 *     when no SEND carries them soon enough (ps_rdma_conn_flush() says when): no receive
 *     buffer is consumed by a credit return, so returning credits can never deadlock on
 *     credits.
 *
 * Choices the interface leaves open, and why:
 *   - One dev = one device, found through rdma_cm (the device that owns bind_addr, or the first
 *     one with an ACTIVE port and an IP address). The dev keeps an rdma_cm id bound to that
 *     address ("anchor") for its whole life: QPs made by rdma_cm must live on rdma_cm's own
 *     device context (rdma_create_qp rejects a PD of another context), and the anchor keeps that
 *     context open. A connection whose route runs over another device is refused (logged).
 *   - Events wait in one preallocated ring per loop that cannot overflow: an op slot is
 *     reclaimed only when its completion has been handed to the caller, a receive buffer only
 *     when it is released / its WRITE_IMM event has been handed over, and a loop holds at most
 *     max_conns connections: max_conns * (send_depth + recv_depth + 2) entries.
 *   - The CQ is shared by the loop's connections and sized for the worst case of each (its whole
 *     send and receive queue flushing at once); a connection that would not fit is refused.
 */
#ifndef PS_TRANSPORT_RDMA_INTERNAL_H
#define PS_TRANSPORT_RDMA_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/mem.h"
#include "transport/rdma/verbs_shim.h"
#include "transport/tp_evq.h"
#include "transport/tp_internal.h"

#define RD_LOG "rdma"

/* ---- constants ---------------------------------------------------------------------------- */

#define RD_PDATA_MAGIC	 0x44525350u /* encoded little-endian: the bytes "PSRD" */
#define RD_PROTO_VERSION 2u
#define RD_PDATA_LEN	 32u
/* Completions taken per ps_vshim_cq_poll() (SPDK's batch). */
#define RD_CQ_BATCH 32
/* Batches per CQ drain in one poll, so a flood of completions cannot starve cm events. */
#define RD_CQ_BUDGET 16
/* cm events handled per poll. */
#define RD_CM_BUDGET 32
/*
 * Reading the cm channel is a system call even when it is empty, so a poll reads it only when
 * epoll said the fd is readable, while a handshake of the loop is in progress, or, for a loop
 * that never sleeps, once this many milliseconds of the coarse clock have passed since the last
 * read. A cadence in time, not in polls: a server's polls can each take milliseconds (64 events
 * and their replies), and a connection request must not wait for thousands of them (in the
 * soft-RoCE guest one waited 8 s, past the client's connect timeout).
 */
#define RD_CM_PERIOD_MS 10
/* The coarse clock itself is read every this many polls only (a poll can take under 1 us). */
#define RD_CM_CLOCK_EVERY 16
/*
 * Gather elements per WR we use at most: the device's max_sge, capped so the per-connection WR
 * storage stays small (rxe reports 32, mlx5 30).
 */
#define RD_MAX_SGE 32
/* Inline bytes asked of the device (what it grants is used; 0 when it has no inline). */
#define RD_INLINE_WANT 256
/* Largest recv_depth a peer may announce: rejects private data that is garbage. */
#define RD_MAX_DEPTH (1u << 20)
/* Completion events acknowledged in batches (ibv_ack_cq_events takes a lock). */
#define RD_CQ_ACK_BATCH 64
/*
 * While a connection waits for credits, poll checks its credit word this often (a credit return
 * is an RDMA WRITE, which wakes no completion channel).
 */
#define RD_CREDIT_WATCH_MS 1
/*
 * A flushed completion on an open connection means the QP went to the error state; the cm's
 * DISCONNECTED event normally follows at once. If it has not come after this long, the
 * connection is declared broken anyway.
 */
#define RD_FLUSH_GRACE_MS 2000
/* rdma_cm listen backlog. */
#define RD_BACKLOG 128
/* Transport retries of the QP (7: the most IB allows). */
#define RD_RETRY_COUNT 7
/*
 * Receiver-not-ready retries. Credits mean a SEND never finds the peer without a posted receive;
 * a few retries, not infinite (7), so that a bug shows as PS_EPEER_LOST instead of a hang.
 */
#define RD_RNR_RETRY_COUNT 3

/* ---- wire format: connection private data ------------------------------------------------- */

/* Field by field in wire order (offsets are the wire offsets); encoded by rd_pdata_encode(). */
struct rd_pdata {
	uint32_t magic;	      /* RD_PDATA_MAGIC */
	uint16_t version;     /* RD_PROTO_VERSION; a peer with another version is refused */
	uint16_t flags;	      /* 0; reserved */
	uint32_t recv_depth;  /* receive buffers the sender of this posts = the peer's credits */
	uint32_t msg_size;    /* bytes per receive buffer: the largest SEND it accepts */
	uint64_t credit_addr; /* where the peer RDMA-writes its cumulative "released" counter */
	uint32_t credit_rkey; /* rkey of that 8-byte word */
	uint32_t reserved;    /* 0 */
};
_Static_assert(sizeof(struct rd_pdata) == RD_PDATA_LEN, "private data is 32 bytes on the wire");
_Static_assert(offsetof(struct rd_pdata, recv_depth) == 8 &&
		       offsetof(struct rd_pdata, credit_addr) == 16 &&
		       offsetof(struct rd_pdata, credit_rkey) == 24,
	       "private data layout");
/* rdma_connect() carries at most 56 bytes of private data on IB/RoCE, rdma_accept() 196. */
_Static_assert(RD_PDATA_LEN <= 56, "private data fits a connect request");

static inline void rd_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void rd_put32(uint8_t *p, uint32_t v)
{
	rd_put16(p, (uint16_t)v);
	rd_put16(p + 2, (uint16_t)(v >> 16));
}

static inline void rd_put64(uint8_t *p, uint64_t v)
{
	rd_put32(p, (uint32_t)v);
	rd_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t rd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t rd_get32(const uint8_t *p)
{
	return rd_get16(p) | (uint32_t)rd_get16(p + 2) << 16;
}

static inline uint64_t rd_get64(const uint8_t *p)
{
	return rd_get32(p) | (uint64_t)rd_get32(p + 4) << 32;
}

#define RD_OFF(field) offsetof(struct rd_pdata, field)

/* The smallest power of two >= @n (1 for 0); @n <= 2^31. */
static inline uint32_t rd_pow2_at_least(uint32_t n)
{
	return n <= 1 ? 1 : 1u << (32 - __builtin_clz(n - 1));
}

static inline void rd_pdata_encode(const struct rd_pdata *d, uint8_t *p)
{
	rd_put32(p + RD_OFF(magic), d->magic);
	rd_put16(p + RD_OFF(version), d->version);
	rd_put16(p + RD_OFF(flags), d->flags);
	rd_put32(p + RD_OFF(recv_depth), d->recv_depth);
	rd_put32(p + RD_OFF(msg_size), d->msg_size);
	rd_put64(p + RD_OFF(credit_addr), d->credit_addr);
	rd_put32(p + RD_OFF(credit_rkey), d->credit_rkey);
	rd_put32(p + RD_OFF(reserved), d->reserved);
}

static inline void rd_pdata_decode(const uint8_t *p, struct rd_pdata *d)
{
	d->magic = rd_get32(p + RD_OFF(magic));
	d->version = rd_get16(p + RD_OFF(version));
	d->flags = rd_get16(p + RD_OFF(flags));
	d->recv_depth = rd_get32(p + RD_OFF(recv_depth));
	d->msg_size = rd_get32(p + RD_OFF(msg_size));
	d->credit_addr = rd_get64(p + RD_OFF(credit_addr));
	d->credit_rkey = rd_get32(p + RD_OFF(credit_rkey));
	d->reserved = rd_get32(p + RD_OFF(reserved));
}

/*
 * The imm of every SEND we post: bit 31 marks the trailer of a split write_imm, bits 0-30 are
 * our "released" counter modulo 2^31 (the receiver widens it against its own count of messages
 * sent: at most 2^20 of them are ever unreleased, so the widening is exact).
 */
#define RD_IMM_TRAILER	   0x80000000u
#define RD_IMM_CREDIT_MASK 0x7fffffffu
/* The payload of a trailer: the total length, then the caller's imm (both LE). */
#define RD_TRAILER_LEN 8u

/* ---- tags: what a wr_id or a cm id's context points to ------------------------------------ */

/*
 * Every wr_id is the address of a struct rd_tag embedded in the object the work request
 * belongs to, and every cm id's context likewise; the type says which struct to container_of()
 * back to.
 */
enum rd_tag_type {
	RD_TAG_WQE = 1,	 /* struct rd_wqe: a send-queue WR (op part or credit write) */
	RD_TAG_RX,	 /* struct rd_rx: a receive buffer */
	RD_TAG_CONN,	 /* struct rd_conn (cm id context) */
	RD_TAG_LISTENER, /* struct rd_listener (cm id context) */
};

struct rd_tag {
	uint8_t type; /* enum rd_tag_type */
};

/* ---- intrusive circular list -------------------------------------------------------------- */

struct rd_list {
	struct rd_list *next, *prev;
};

static inline void rd_list_init(struct rd_list *l)
{
	l->next = l->prev = l;
}

static inline bool rd_list_empty(const struct rd_list *l)
{
	return l->next == l;
}

/* True for a node on a list; false for one initialised and never added, or removed again. */
static inline bool rd_list_linked(const struct rd_list *n)
{
	return n->next != n;
}

static inline void rd_list_add_tail(struct rd_list *head, struct rd_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void rd_list_del(struct rd_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	rd_list_init(n);
}

/* ---- dev and memory regions --------------------------------------------------------------- */

struct rd_dev {
	struct ps_tp_dev base;		      /* first: transport.c dispatches on it */
	struct rdma_event_channel *anchor_ch; /* the anchor's channel; it never has events */
	struct rdma_cm_id *anchor;    /* bound to addr: pins rdma_cm's context of the device */
	struct ibv_context *ctx;      /* anchor->verbs: owned by librdmacm, never closed here */
	struct ibv_pd *pd;	      /* every MR and QP of this dev */
	struct sockaddr_storage addr; /* the device address (port 0): default listen host */
	uint32_t max_sge;	      /* gather elements per WR we use (<= RD_MAX_SGE) */
	uint32_t max_inline;	      /* inline bytes a QP was granted at open (0: none) */
	uint32_t max_qp_wr;	      /* device limit on a queue's WRs */
	uint32_t max_cqe;	      /* device limit on a CQ's entries */
	int alloc_node;		      /* NUMA node for transport memory, -1: none */
	struct ps_tp_dev_info info;   /* what dev_query reports */
};

struct rd_mr {
	struct ps_tp_mr base; /* first */
	struct ibv_mr *mr;    /* the verbs registration */
};

static inline struct rd_dev *rd_dev_of(struct ps_tp_dev *d)
{
	return container_of(d, struct rd_dev, base);
}

/* ---- loop ----------------------------------------------------------------------------------- */

struct rd_loop {
	struct ps_tp_loop base;		  /* first */
	struct rd_dev *dev;		  /* the dev it was created on */
	struct ibv_comp_channel *comp_ch; /* fires when the armed CQ gets a completion */
	struct ibv_cq *cq;		  /* send and receive completions of every connection */
	uint32_t cq_cap;		  /* entries the CQ has (cq->cqe) */
	uint32_t cq_reserved;		  /* entries promised to connections (worst case each) */
	bool cq_armed;			  /* req_notify done since the last completion event */
	unsigned int cq_unacked;	  /* completion events read and not yet acknowledged */
	struct rdma_event_channel *cm_ch; /* cm events of every id of the loop */
	bool cm_ready;			  /* epoll saw cm_ch->fd readable */
	bool fd_shared;			  /* ps_tp_loop_fd was called: polls drain the fd */
	uint32_t cm_polls;		  /* polls since the coarse clock was last read */
	uint64_t cm_read_ms;		  /* coarse clock at the last periodic cm read */
	int epfd;			  /* loop_fd: comp_ch->fd, cm_ch->fd and evq.wakefd */
	struct rd_list conns;		  /* every connection, handshaking ones included */
	struct rd_list listeners;	  /* open listeners */
	struct rd_list flushq;		  /* connections with WRs, reposts or credits to post */
	struct rd_list credq;		  /* connections whose only flush work is credits not
					   * yet due: flushed when the loop is about to sleep */
	struct rd_list starved;		  /* refused an op (-EAGAIN); poll returns when it can */
	uint32_t nconns;		  /* entries of conns (<= opts.max_conns) */
	uint32_t nflushing;		  /* open connections with a flushed completion (grace) */
	uint32_t nhandshake;		  /* passive connections waiting for ESTABLISHED */
	uint32_t ncm_wait;    /* CONNECTING or ACCEPTING: the cm channel is read every poll */
	uint32_t nreap;	      /* failed handshakes waiting to be freed (ps_rdma_reap) */
	uint32_t sq_depth;    /* send-queue WRs of each connection (2 x send_depth) */
	bool destroying;      /* loop_destroy: the CQ goes too, no per-connection drain */
	struct ps_tp_evq evq; /* the event ring (size: see the top of this file) */
	struct ibv_wc wc[RD_CQ_BATCH]; /* one batch of completions */
};

static inline struct rd_loop *rd_loop_of(struct ps_tp_loop *l)
{
	return container_of(l, struct rd_loop, base);
}

struct rd_listener {
	struct ps_tp_listener base; /* first */
	struct rd_tag tag;	    /* RD_TAG_LISTENER: the cm id's context */
	struct rdma_cm_id *id;	    /* bound and listening */
	uint16_t port;		    /* host order */
	struct rd_list link;	    /* loop->listeners */
};

/* ---- connection ----------------------------------------------------------------------------- */

enum rd_conn_state {
	RD_CONN_RESOLVING,  /* active: resolving address, then route */
	RD_CONN_CONNECTING, /* active: rdma_connect issued, waiting for ESTABLISHED */
	RD_CONN_ACCEPTING,  /* passive: accepted, waiting for ESTABLISHED; the caller has not
			      * seen it */
	RD_CONN_OPEN,	    /* established */
	RD_CONN_DEAD,	    /* broken: completions and CLOSED queued; close is all that is left */
	RD_CONN_CLOSING,    /* being freed: every completion of it is ignored */
};

/* Where an op slot is (slots are reclaimed in order, see struct rd_conn). */
enum rd_op_state {
	RD_OP_PENDING = 1, /* queued or posted, not known complete */
	RD_OP_WAIT_EVENT,  /* complete; its SEND_DONE/WRITE_DONE waits in the event ring */
	RD_OP_DONE,	   /* nothing left to do; reclaimed when it reaches the tail */
};

/* One send or write_imm. */
struct rd_op {
	void *ctx;	     /* the caller's; NULL: no completion event */
	uint64_t seq_last;   /* SQ sequence number of its last WR */
	uint64_t bounce_end; /* bounce ring position after its copies (freed when reclaimed) */
	uint8_t state;	     /* enum rd_op_state */
	uint8_t ev_type;     /* PS_TP_EV_SEND_DONE or PS_TP_EV_WRITE_DONE */
};

/*
 * One send-queue WR slot. WR with sequence number s lives in wqes[s & sq_mask], a ring of a
 * power of two >= sq_depth slots: at most sq_depth WRs are queued or outstanding, so a slot is
 * rewritten only after its WR completed. (Masks, not a modulo: a 64-bit division per ring index
 * was a tenth of the per-message instructions, and an emulated guest pays a helper call each.)
 */
struct rd_wqe {
	struct rd_tag tag;     /* RD_TAG_WQE: the wr_id */
	struct rd_conn *conn;  /* owner */
	uint64_t seq;	       /* this WR's sequence number */
	struct ibv_send_wr wr; /* built here, chained to the next queued one, posted at flush */
	struct ibv_sge *sge;   /* max_sge entries (conn->sges) */
};

/* Receive buffer states. */
enum rd_rx_state {
	RD_RX_POSTED = 1, /* on the QP's receive queue */
	RD_RX_HELD,	  /* PS_TP_EV_RECV given or queued: the caller releases it */
	RD_RX_IMM,	  /* consumed by a write_imm; reposted when its event is handed over */
	RD_RX_REPOST,	  /* on the repost chain, posted at the next flush */
};

struct rd_rx {
	struct rd_tag tag;     /* RD_TAG_RX: the wr_id */
	struct rd_conn *conn;  /* owner */
	struct ibv_recv_wr wr; /* one SGE: the whole buffer */
	struct ibv_sge sge;    /* buffer, msg_size, data_mr's lkey */
	uint8_t state;	       /* enum rd_rx_state */
};

/*
 * A connection control block. Send side: op slots form a ring, ops[i & op_mask] for
 * op_tail <= i < op_head (a power of two >= send_depth slots, at most send_depth in use);
 * [op_tail, op_comp) are complete (waiting for event delivery or reclaim), [op_comp, op_head)
 * pending. WR sequence numbers: [sq_done, sq_posted) are on the QP, [sq_posted, sq_head) queued
 * for the next flush (chained in wqes[]), sq_head - sq_done <= sq_depth. All counters are 64-bit
 * and never wrap in practice.
 *
 * Registered memory, one mmap per connection (page-aligned, on the dev's NUMA node):
 *   [credit page: the credit word]                      ctrl_mr (LOCAL|REMOTE_WRITE)
 *   [credit sources: sq_mask + 1 x 8][trailers: op_mask + 1 x 8]
 *   [bounce ring: bounce_size][receive buffers: recv_depth x rx_stride]   data_mr (LOCAL_WRITE)
 * Only the credit word is writable by the peer, so a peer cannot scribble over our buffers.
 */
struct rd_conn {
	struct ps_tp_conn base;	     /* first */
	struct rd_tag cm_tag;	     /* RD_TAG_CONN: the cm id's context */
	struct rd_loop *loop;	     /* owner */
	struct rdma_cm_id *id;	     /* its rdma_cm id; the QP is id->qp (NULL until created) */
	enum rd_conn_state state;    /* see enum rd_conn_state */
	int connect_rc;		     /* active set-up: 0 while in progress or done, else why */
	struct rd_list link;	     /* loop->conns */
	struct rd_list flush_link;   /* loop->flushq while something waits for a flush, or
				      * loop->credq (on_credq) while only credits not yet due do */
	bool on_credq;		     /* flush_link is on loop->credq */
	struct rd_list starved_link; /* loop->starved while an op refused (-EAGAIN) waits */
	uint32_t starved_nwr;	     /* what it needs: WR slots, */
	uint64_t starved_bytes;	     /* bounce bytes (and a credit and an op slot) */
	uint64_t deadline_ns;	     /* ACCEPTING: dropped if not established by then;
				      * OPEN with flushed: broken if no DISCONNECTED by then */
	bool flushed;		     /* a flushed completion was seen while OPEN */
	bool reap;		     /* CLOSING, counted in loop->nreap: freed at a safe point */
	uint32_t cq_need;	     /* CQ entries reserved for it (sq_depth + recv_depth) */

	/* Memory. */
	struct ps_mem mem;	/* the region described above */
	struct ibv_mr *ctrl_mr; /* the credit page, remote-writable */
	struct ibv_mr *data_mr; /* the rest, local only */
	uint64_t *credit_word;	/* the peer writes its "released" counter here (LE) */
	uint64_t *credit_src;	/* sq_mask + 1 sources of our credit writes (LE) */
	uint8_t *trailers;	/* op_mask + 1 x RD_TRAILER_LEN: split write_imm ends */
	uint8_t *bounce;	/* bounce ring for unregistered or tail-copied bytes */
	uint32_t bounce_size;	/* bytes in it */
	uint64_t bounce_head;	/* next byte to allocate (monotonic) */
	uint64_t bounce_tail;	/* first byte still in use (monotonic) */
	uint8_t *rxbuf;		/* receive buffers */
	uint32_t rx_stride;	/* msg_size rounded up to 64 */
	uint32_t rx_shift;	/* log2(rx_stride) when it is a power of two, else 0 */

	/* The peer, from its private data. */
	uint32_t peer_depth;	   /* its recv_depth: our credits */
	uint32_t max_msg;	   /* min(our msg_size, the peer's) */
	uint64_t peer_credit_addr; /* its credit word */
	uint32_t peer_credit_rkey; /* and the rkey for it */

	/* Send side. */
	uint32_t send_depth;	 /* op slots */
	uint32_t sq_depth;	 /* send queue WRs (max_send_wr) */
	uint32_t sq_mask;	 /* WR slots - 1 (a power of two >= sq_depth) */
	uint32_t op_mask;	 /* op slots - 1 (a power of two >= send_depth) */
	uint32_t max_sge;	 /* gather elements per WR */
	uint32_t max_inline;	 /* inline bytes the QP was granted */
	struct rd_op *ops;	 /* op_mask + 1 slots */
	uint64_t op_head;	 /* next slot to fill */
	uint64_t op_comp;	 /* first slot not known complete */
	uint64_t op_tail;	 /* first slot not reclaimed */
	struct rd_wqe *wqes;	 /* sq_mask + 1 WR slots */
	struct ibv_sge *sges;	 /* sq_mask + 1 x max_sge gather elements */
	uint64_t sq_head;	 /* next WR sequence number */
	uint64_t sq_posted;	 /* WRs before this one were posted */
	uint64_t sq_done;	 /* WRs before this one are complete */
	uint64_t sq_last_signal; /* sequence number of the last signalled WR queued */
	uint32_t unsig_ops;	 /* ops queued since the last signalled WR (need one later) */
	uint64_t msgs_sent;	 /* SENDs + write_imms queued: credits consumed */
	uint64_t peer_released;	 /* the peer's "released" counter, as last read */

	/* Receive side. */
	uint32_t recv_depth;		  /* receive buffers */
	uint32_t msg_size;		  /* bytes each (ours) */
	struct rd_rx *rx;		  /* recv_depth descriptors */
	struct ibv_recv_wr *repost;	  /* chain of buffers to post at the next flush */
	struct ibv_recv_wr **repost_tail; /* where to link the next one */
	uint32_t nrepost;		  /* entries of that chain */
	uint64_t reposted;		  /* buffers reposted after the first posting: "released" */
	uint64_t credit_written;	  /* "released" as last told to the peer (write or imm) */
	uint32_t credit_thresh; /* write credits when this many are pending (recv_depth/4) */
	uint64_t rx_count;	/* messages received (receive completions with data) */
};

static inline struct rd_conn *rd_conn_of(struct ps_tp_conn *c)
{
	return container_of(c, struct rd_conn, base);
}

/* ---- rdma_dev.c ----------------------------------------------------------------------------- */

extern const struct ps_tp_ops ps_tp_rdma_ops;

/* Register with the given access (IBV_ACCESS_*); logs what RLIMIT_MEMLOCK needs on failure. */
int ps_rdma_reg(struct rd_dev *dev, void *addr, size_t len, int access, struct ibv_mr **out);
/* "a.b.c.d:port" or "[v6]:port" of a socket address, "?" if it is neither. */
void ps_rdma_addr_str(const struct sockaddr *sa, char *buf, size_t len);
/* Resolve @host (numeric or name) and @port into @out. 0 or -EADDRNOTAVAIL/-ENOMEM. */
int ps_rdma_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *out);

/* ---- rdma_loop.c ---------------------------------------------------------------------------- */

int ps_rdma_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
			struct ps_tp_loop **out);
void ps_rdma_loop_destroy(struct ps_tp_loop *loop);
int ps_rdma_loop_fd(struct ps_tp_loop *loop);
int ps_rdma_flush(struct ps_tp_loop *loop);
int ps_rdma_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms);
/* Queue an event (the ring is sized so this cannot fail; see the top of this file). */
void ps_rdma_ev_push(struct rd_loop *l, enum ps_tp_ev_type type, struct rd_conn *c, int status,
		     void *ctx, void *buf, uint32_t len, uint32_t imm, uint32_t ref);
/* Handle the cm event @ev (acknowledges it). */
void ps_rdma_cm_dispatch(struct rd_loop *l, struct rdma_cm_event *ev);
/*
 * Take every completion the CQ holds now (dispatching them). After a QP is destroyed, this is
 * what guarantees that no completion naming it is left behind.
 */
void ps_rdma_cq_drain(struct rd_loop *l);

/* ---- rdma_conn.c ---------------------------------------------------------------------------- */

int ps_rdma_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		   struct ps_tp_listener **out);
uint16_t ps_rdma_listener_port(const struct ps_tp_listener *l);
void ps_rdma_listener_close(struct ps_tp_listener *l);
int ps_rdma_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		    struct ps_tp_conn **out);
void ps_rdma_conn_close(struct ps_tp_conn *conn);
/*
 * Free a connection: disconnect (if it got that far), destroy the QP, take the CQ's completions
 * (none naming it can be left behind), destroy the id, purge its events, free its memory. Not
 * from inside CQ dispatch (it polls the CQ itself) nor before the cm event being handled for
 * its id is acknowledged (destroying an id waits for that).
 */
void ps_rdma_conn_free(struct rd_conn *c);
/* Free the connections marked for reaping (failed handshakes). */
void ps_rdma_reap(struct rd_loop *l);
/* A cm event for connection @c (ev->id == c->id); the caller acknowledges it afterwards. */
void ps_rdma_conn_cm_event(struct rd_conn *c, struct rdma_cm_event *ev);
/* A connect request on listener @lst; the caller acknowledges the event afterwards. */
void ps_rdma_conn_request(struct rd_listener *lst, struct rdma_cm_event *ev);
/*
 * The connection is broken (@status for CLOSED: 0 for an orderly disconnect by the peer, else
 * PS_EPEER_LOST): every pending op with a ctx completes with PS_EPEER_LOST, then CLOSED. A
 * connection the caller never saw (ACCEPTING) is freed instead: do not touch @c afterwards.
 */
void ps_rdma_conn_break(struct rd_conn *c, int status);
/* A passive connection becomes OPEN (ESTABLISHED, or its first completion): queue ACCEPT. */
void ps_rdma_conn_established(struct rd_conn *c);
/*
 * Sweep deadlines: overdue handshakes are dropped, flushed connections without a cm event
 * broken. Returns the ms until the next deadline, at most @timeout_ms.
 */
int ps_rdma_conn_expire(struct rd_loop *l, int timeout_ms);

/* ---- rdma_post.c ---------------------------------------------------------------------------- */

int ps_rdma_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx);
int ps_rdma_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		      const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx);
void ps_rdma_recv_release(struct ps_tp_conn *conn, void *buf);
/* Put @c on the loop's flush queue (idempotent). */
void ps_rdma_flushq_add(struct rd_conn *c);

/* Take @c off the flush queue or the credit queue, whichever holds it. */
static inline void ps_rdma_flush_unlink(struct rd_conn *c)
{
	if (rd_list_linked(&c->flush_link))
		rd_list_del(&c->flush_link);
	c->on_credq = false;
}
/*
 * Post what @c has queued: receive reposts (one post_recv), the send chain (one post_send = one
 * doorbell) with our "released" count in every SEND's imm, and before it a credit write if one
 * is still due (always when @force_credit and any are pending).
 */
void ps_rdma_conn_flush(struct rd_conn *c, bool force_credit);
/* Initial receive buffers (all recv_depth, one post_recv), before connect/accept. */
int ps_rdma_rx_post_all(struct rd_conn *c);
/* A send-queue completion. */
void ps_rdma_wqe_done(struct rd_wqe *w, const struct ibv_wc *wc);
/* A receive completion. */
void ps_rdma_rx_done(struct rd_rx *rx, const struct ibv_wc *wc);
/* Event @e of @c was handed to the caller: free the slot or repost the buffer behind it. */
void ps_rdma_delivered(struct rd_conn *c, const struct ps_tp_qev *e);
/* Mark every pending op complete with PS_EPEER_LOST (events for those with a ctx). */
void ps_rdma_ops_fail(struct rd_conn *c);
/* Credits available now (reads the credit word). */
uint32_t ps_rdma_credits(struct rd_conn *c);
/* Could @c take the op it was last refused now (or is it no longer open)? */
bool ps_rdma_conn_fed(struct rd_conn *c);

#endif
