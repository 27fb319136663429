/*
 * The tcp backend of the transport interface (transport.h): what its three files share.
 *
 *   tcp_dev.c   the dev, the registered-region table (rkeys, bounds-checked lookups), ops table
 *   tcp_conn.c  one connection: set-up and teardown, send slots and tx, the rx state machine
 *   tcp_loop.c  one loop: epoll set, the event ring, listen/accept and connect, poll and flush
 *
 * Wire format (docs/transport.md, "TCP backend wire format"): after connect/accept each side
 * sends a 16-byte hello; then frames, each a 32-byte header followed by len payload bytes.
 * Every field is little-endian and encoded by the helpers below, never by casting a struct
 * onto the byte stream (alignment and byte order stay the helpers' business).
 *
 * Choices the interface leaves open, and why:
 *   - Events wait in one preallocated ring per loop, sized so it cannot overflow: a send slot
 *     is reclaimed only when its completion has been handed to the caller, a receive buffer
 *     (also taken by every WRITE_IMM) only when the caller releases it / the WRITE_IMM event
 *     has been handed over, and a loop holds at most max_conns connections. So the ring needs
 *     max_conns * (send_depth + recv_depth + 2) entries (the 2: ACCEPT and CLOSED). Reading
 *     never stops for lack of room, and ps_tp_flush() (which has no event array) can complete
 *     operations too.
 *   - The message size limit of a connection is the smaller of both sides' msg_size: the
 *     peer's bounds its receive buffers, ours is what the caller configured.
 *   - Connections (handshaking ones included) beyond max_conns are refused: ps_tp_connect()
 *     returns -ENOSPC, an inbound one is accepted and closed at once (logged).
 */
#ifndef PS_TRANSPORT_TCP_INTERNAL_H
#define PS_TRANSPORT_TCP_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include "common/mem.h"
#include "transport/tp_evq.h"
#include "transport/tp_internal.h"

#define TCP_LOG "tcp"

/* ---- wire format ------------------------------------------------------------------------ */

#define TCP_HELLO_MAGIC	  0x50545350u /* encoded little-endian: the bytes "PSTP" */
#define TCP_PROTO_VERSION 1u
#define TCP_HELLO_LEN	  16u
#define TCP_HDR_LEN	  32u
/*
 * Largest recv_depth a peer may announce. Credits are only a counter on the sending side, so
 * this bounds nothing we allocate; it rejects hellos that are garbage.
 */
#define TCP_MAX_DEPTH (1u << 20)

enum tcp_op {
	TCP_OP_SEND = 1,      /* payload lands in a receive buffer: PS_TP_EV_RECV */
	TCP_OP_WRITE_IMM = 2, /* payload lands at (raddr, rkey): PS_TP_EV_WRITE_IMM */
	TCP_OP_CREDIT = 3,    /* no payload; only returns credits */
};

/* The hello, field by field in wire order (offsets are the wire offsets). */
struct tcp_hello {
	uint32_t magic;	  /* TCP_HELLO_MAGIC */
	uint16_t version; /* TCP_PROTO_VERSION; a peer with another version is refused */
	uint16_t flags;	  /* 0; reserved */
	uint32_t
		recv_depth; /* receive buffers the sender of the hello posts = the peer's credits */
	uint32_t msg_size;  /* bytes per receive buffer: the largest SEND it accepts */
};
_Static_assert(sizeof(struct tcp_hello) == TCP_HELLO_LEN, "hello is 16 bytes on the wire");
_Static_assert(offsetof(struct tcp_hello, recv_depth) == 8, "hello layout");

/* The frame header, field by field in wire order (offsets are the wire offsets). */
struct tcp_hdr {
	uint8_t op;	    /* enum tcp_op */
	uint8_t flags;	    /* 0; reserved */
	uint16_t reserved0; /* 0 */
	uint32_t len;	    /* payload bytes following the header (0 for CREDIT) */
	uint32_t imm;	    /* WRITE_IMM: the immediate value; else 0 */
	uint32_t credits;   /* receive buffers the sender released since its previous header */
	uint64_t raddr;	    /* WRITE_IMM: destination address in the receiver; else 0 */
	uint32_t rkey;	    /* WRITE_IMM: the destination region's rkey; else 0 */
	uint32_t reserved1; /* 0 */
};
_Static_assert(sizeof(struct tcp_hdr) == TCP_HDR_LEN, "frame header is 32 bytes on the wire");
_Static_assert(offsetof(struct tcp_hdr, credits) == 12 && offsetof(struct tcp_hdr, raddr) == 16 &&
		       offsetof(struct tcp_hdr, rkey) == 24,
	       "frame header layout");

static inline void tcp_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void tcp_put32(uint8_t *p, uint32_t v)
{
	tcp_put16(p, (uint16_t)v);
	tcp_put16(p + 2, (uint16_t)(v >> 16));
}

static inline void tcp_put64(uint8_t *p, uint64_t v)
{
	tcp_put32(p, (uint32_t)v);
	tcp_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t tcp_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t tcp_get32(const uint8_t *p)
{
	return tcp_get16(p) | (uint32_t)tcp_get16(p + 2) << 16;
}

static inline uint64_t tcp_get64(const uint8_t *p)
{
	return tcp_get32(p) | (uint64_t)tcp_get32(p + 4) << 32;
}

#define TCP_OFF(type, field) offsetof(struct type, field)

static inline void tcp_hello_encode(const struct tcp_hello *h, uint8_t *p)
{
	tcp_put32(p + TCP_OFF(tcp_hello, magic), h->magic);
	tcp_put16(p + TCP_OFF(tcp_hello, version), h->version);
	tcp_put16(p + TCP_OFF(tcp_hello, flags), h->flags);
	tcp_put32(p + TCP_OFF(tcp_hello, recv_depth), h->recv_depth);
	tcp_put32(p + TCP_OFF(tcp_hello, msg_size), h->msg_size);
}

static inline void tcp_hello_decode(const uint8_t *p, struct tcp_hello *h)
{
	h->magic = tcp_get32(p + TCP_OFF(tcp_hello, magic));
	h->version = tcp_get16(p + TCP_OFF(tcp_hello, version));
	h->flags = tcp_get16(p + TCP_OFF(tcp_hello, flags));
	h->recv_depth = tcp_get32(p + TCP_OFF(tcp_hello, recv_depth));
	h->msg_size = tcp_get32(p + TCP_OFF(tcp_hello, msg_size));
}

static inline void tcp_hdr_encode(const struct tcp_hdr *h, uint8_t *p)
{
	p[TCP_OFF(tcp_hdr, op)] = h->op;
	p[TCP_OFF(tcp_hdr, flags)] = h->flags;
	tcp_put16(p + TCP_OFF(tcp_hdr, reserved0), h->reserved0);
	tcp_put32(p + TCP_OFF(tcp_hdr, len), h->len);
	tcp_put32(p + TCP_OFF(tcp_hdr, imm), h->imm);
	tcp_put32(p + TCP_OFF(tcp_hdr, credits), h->credits);
	tcp_put64(p + TCP_OFF(tcp_hdr, raddr), h->raddr);
	tcp_put32(p + TCP_OFF(tcp_hdr, rkey), h->rkey);
	tcp_put32(p + TCP_OFF(tcp_hdr, reserved1), h->reserved1);
}

static inline void tcp_hdr_decode(const uint8_t *p, struct tcp_hdr *h)
{
	h->op = p[TCP_OFF(tcp_hdr, op)];
	h->flags = p[TCP_OFF(tcp_hdr, flags)];
	h->reserved0 = tcp_get16(p + TCP_OFF(tcp_hdr, reserved0));
	h->len = tcp_get32(p + TCP_OFF(tcp_hdr, len));
	h->imm = tcp_get32(p + TCP_OFF(tcp_hdr, imm));
	h->credits = tcp_get32(p + TCP_OFF(tcp_hdr, credits));
	h->raddr = tcp_get64(p + TCP_OFF(tcp_hdr, raddr));
	h->rkey = tcp_get32(p + TCP_OFF(tcp_hdr, rkey));
	h->reserved1 = tcp_get32(p + TCP_OFF(tcp_hdr, reserved1));
}

/* ---- intrusive circular list (the loop's sets of connections and listeners) -------------- */

struct tcp_list {
	struct tcp_list *next, *prev;
};

static inline void tcp_list_init(struct tcp_list *l)
{
	l->next = l->prev = l;
}

static inline bool tcp_list_empty(const struct tcp_list *l)
{
	return l->next == l;
}

/* Also true for a node that was initialised and never added, or removed again. */
static inline bool tcp_list_linked(const struct tcp_list *n)
{
	return n->next != n;
}

static inline void tcp_list_add_tail(struct tcp_list *head, struct tcp_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void tcp_list_del(struct tcp_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	tcp_list_init(n);
}

/* ---- dev and registered regions ------------------------------------------------------- */

/*
 * rkey = generation << TCP_MR_IDX_BITS | table index. The index makes a lookup one array load;
 * the generation (random, nonzero, different from the slot's previous one) makes keys hard to
 * guess and makes a stale key of a deregistered region fail instead of hitting its successor.
 */
#define TCP_MR_IDX_BITS 12
#define TCP_MR_MAX	(1u << TCP_MR_IDX_BITS) /* regions per dev; more: -ENOSPC */

struct tcp_mr {
	struct ps_tp_mr base; /* first: transport.c dispatches on it */
	uint32_t idx;	      /* slot in tcp_dev.mrs */
};

struct tcp_dev {
	struct ps_tp_dev base; /* first */
	int numa_node;	       /* for receive buffers; -1: no preference */
	/*
	 * Registration is rare and any thread may do it; lookups come from every loop thread on
	 * each read into a region. An rwlock lets the loops look up in parallel; writer preference
	 * keeps a dereg from starving behind a busy data path.
	 */
	pthread_rwlock_t mr_lock;
	struct tcp_mr **mrs; /* mr_cap slots, NULL when free */
	uint32_t *mr_gen;    /* last generation handed out per slot */
	uint32_t mr_cap;
	uint32_t mr_count;
};

/*
 * ps_tcp_mr_lock_range() - find the region of @rkey on @dev and check that [addr, addr+len)
 * lies inside it. Returns 0 with mr_lock held for reading (the region cannot be deregistered
 * until ps_tcp_mr_unlock()), or PS_EBAD_MESSAGE with nothing held.
 */
int ps_tcp_mr_lock_range(struct tcp_dev *dev, uint32_t rkey, uint64_t addr, uint64_t len);
void ps_tcp_mr_unlock(struct tcp_dev *dev);

/* ---- loop, listener, connection ------------------------------------------------------- */

/* What an epoll_event's data.ptr points to: the kind tells the owning struct. */
enum tcp_ep_kind {
	TCP_EP_LISTENER,
	TCP_EP_CONN,
};

struct tcp_ep {
	enum tcp_ep_kind kind;
};

struct tcp_listener {
	struct ps_tp_listener base; /* first */
	struct tcp_ep ep;
	int fd;
	uint16_t port;
	uint64_t warned_ns;   /* last accept() failure logged (they repeat on every poll) */
	struct tcp_list link; /* loop->listeners */
};

struct tcp_loop {
	struct ps_tp_loop base; /* first */
	struct tcp_dev *dev;
	int epfd;
	struct tcp_list conns;	   /* every connection, handshaking ones included */
	struct tcp_list hello;	   /* accepted, waiting for the peer's hello; oldest first */
	struct tcp_list txq;	   /* connections with bytes to write */
	struct tcp_list starved;   /* refused an op (-EAGAIN); poll returns when it can take one */
	struct tcp_list listeners; /* open listeners */
	uint32_t nconns;	   /* entries of conns (bounded by opts.max_conns) */
	/*
	 * The event ring (see the top of this file for its size; ref: the send slot of a
	 * SEND_DONE/WRITE_DONE, the receive buffer of a RECV/WRITE_IMM). Its eventfd is in the
	 * epoll set.
	 */
	struct ps_tp_evq evq;
	struct iovec *scratch; /* IOV_MAX entries: one sendmsg's gather list */
	uint8_t *pack;	       /* TCP_PACK_BYTES: small pieces of that list, copied (tcp_conn.c) */
};

/* Pieces of at most TCP_PACK_PIECE bytes are packed, up to TCP_PACK_BYTES per sendmsg. */
#define TCP_PACK_PIECE 1024u
#define TCP_PACK_BYTES (256u << 10)

enum tcp_conn_state {
	TCP_CONN_HELLO, /* accepted, waiting for the peer's hello; the caller has not seen it */
	TCP_CONN_OPEN,	/* established */
	TCP_CONN_DEAD,	/* broken: completions and CLOSED queued, socket closed; close only */
};

enum tcp_rx_state {
	TCP_RX_HELLO,	  /* reading the peer's hello into rx_raw */
	TCP_RX_HDR,	  /* reading a frame header into rx_raw */
	TCP_RX_SEND,	  /* reading a SEND payload into receive buffer rx_buf */
	TCP_RX_WRITE_IMM, /* reading a WRITE_IMM payload into registered memory at rx_hdr.raddr */
};

enum tcp_slot_state {
	TCP_SLOT_QUEUED,     /* not (fully) written yet */
	TCP_SLOT_WAIT_EVENT, /* written or failed; its completion waits in the event ring */
	TCP_SLOT_DONE,	     /* nothing left to do; reclaimed when it reaches the tail */
};

/* One queued operation: the frame header and where its gather list lives in conn->iovs. */
struct tcp_slot {
	uint8_t hdr[TCP_HDR_LEN]; /* encoded when first gathered, so credits ride on it */
	bool hdr_ready;
	uint8_t op;
	uint8_t state; /* enum tcp_slot_state */
	uint32_t len;  /* payload bytes */
	uint32_t imm;
	uint32_t rkey;
	uint64_t raddr;
	void *ctx;
	uint32_t iov_start; /* first of niov iovecs in conn->iovs: the header, then the payload */
	uint32_t niov;
};

struct tcp_conn {
	struct ps_tp_conn base; /* first */
	struct tcp_ep ep;
	struct tcp_loop *loop;
	int fd; /* -1 once dead */
	enum tcp_conn_state state;
	struct tcp_list link;	      /* loop->conns */
	struct tcp_list hello_link;   /* loop->hello while TCP_CONN_HELLO */
	struct tcp_list tx_link;      /* loop->txq while there is something to write */
	struct tcp_list starved_link; /* loop->starved: an op was refused (-EAGAIN) */
	uint32_t starved_iovs;	      /* the iovecs that op needed */
	uint64_t hello_deadline_ns;   /* TCP_CONN_HELLO: dropped when the hello is not in by then */
	bool epollout;		      /* EPOLLOUT armed: the socket buffer was full */

	/* Send side. */
	uint32_t credits;	 /* peer receive buffers we may still consume */
	uint32_t peer_depth;	 /* the peer's recv_depth: credits never exceed it */
	uint32_t max_msg;	 /* min(our msg_size, the peer's) */
	struct tcp_slot *slots;	 /* send_depth slots, a ring: tail <= tx <= head */
	uint32_t depth;		 /* send_depth */
	uint32_t head;		 /* next slot to fill */
	uint32_t tx;		 /* first slot not fully written */
	uint32_t tail;		 /* oldest slot not reclaimed */
	uint32_t nbusy;		 /* slots between tail and head */
	uint32_t nqueued;	 /* slots between tx and head */
	uint32_t tx_iov, tx_off; /* progress inside slot tx: iovec index, bytes of that iovec */
	struct iovec *iovs;	 /* copies of the gather lists, a ring of iov_cap entries */
	uint32_t iov_cap, iov_head;
	uint8_t credit_hdr[TCP_HDR_LEN]; /* a CREDIT frame, written ahead of any queued slot */
	bool credit_pending, credit_ready;
	uint32_t credit_off;
	uint32_t owed; /* credits released here and not yet sent to the peer */

	/* Receive side. */
	struct ps_mem rx_mem; /* recv_depth buffers of msg_size, one block */
	uint32_t msg_size, recv_depth;
	uint32_t *free_bufs; /* stack of free buffer indexes */
	uint32_t nfree;
	uint8_t *
		buf_held; /* per buffer: 0 free, else the event type holding it (RECV, WRITE_IMM) */
	enum tcp_rx_state rx_state;
	uint8_t rx_raw[TCP_HDR_LEN]; /* the hello or header being read */
	uint32_t rx_got;	     /* bytes of rx_raw, or of the payload, read so far */
	struct tcp_hdr rx_hdr;	     /* the frame whose payload is being read */
	uint32_t rx_buf;	     /* its receive buffer */
};

static inline struct tcp_loop *tcp_loop_of(struct ps_tp_loop *l)
{
	return container_of(l, struct tcp_loop, base);
}

static inline struct tcp_conn *tcp_conn_of(struct ps_tp_conn *c)
{
	return container_of(c, struct tcp_conn, base);
}

/* tcp_loop.c: the loop ops of transport.h, as documented there, and helpers. */
int ps_tcp_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
		       struct ps_tp_loop **out);
void ps_tcp_loop_destroy(struct ps_tp_loop *loop);
int ps_tcp_loop_fd(struct ps_tp_loop *loop);
int ps_tcp_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		  struct ps_tp_listener **out);
uint16_t ps_tcp_listener_port(const struct ps_tp_listener *l);
void ps_tcp_listener_close(struct ps_tp_listener *l);
int ps_tcp_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		   struct ps_tp_conn **out);
int ps_tcp_flush(struct ps_tp_loop *loop);
int ps_tcp_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms);
/* Queue an event (the ring is sized so this cannot fail; see the top of the file). */
void ps_tcp_ev_push(struct tcp_loop *loop, const struct ps_tp_qev *e);
/* Arm or disarm EPOLLOUT for @c. */
void ps_tcp_conn_want_out(struct tcp_conn *c, bool on);

/* tcp_conn.c */
/* A connection with all its buffers, not yet on a socket (so failing costs no connection). */
int ps_tcp_conn_alloc(struct tcp_loop *loop, struct tcp_conn **out);
/* Put a connected socket under the loop (epoll, lists). Takes @fd on success. */
int ps_tcp_conn_attach(struct tcp_conn *c, int fd, enum tcp_conn_state state);
/* Close the socket and free everything, events still queued for it included. NULL ok. */
void ps_tcp_conn_free(struct tcp_conn *c);
/*
 * The connection broke (@status: 0 for a clean EOF, PS_EPEER_LOST, PS_EBAD_MESSAGE): queue the
 * PS_EPEER_LOST completions and CLOSED, close the socket. A connection still in its handshake
 * is freed instead (the caller never saw it): do not touch @c afterwards.
 */
void ps_tcp_conn_fail(struct tcp_conn *c, int status);
/* epoll reported @events for @c: write on EPOLLOUT, read on anything else. May free @c. */
void ps_tcp_conn_io(struct tcp_conn *c, uint32_t events);
/* Write what is queued until done or the socket is full (then EPOLLOUT is armed). */
void ps_tcp_conn_flush(struct tcp_conn *c);

/* Could the starved connection @c take the op it was refused now (or is it closed)? */
bool ps_tcp_conn_fed(struct tcp_conn *c);
/* Event @e of @c was handed to the caller: free the slot or buffer it held. */
void ps_tcp_conn_delivered(struct tcp_conn *c, const struct ps_tp_qev *e);
/* Our hello, encoded into @raw (TCP_HELLO_LEN bytes). */
void ps_tcp_hello_fill(const struct tcp_loop *loop, uint8_t *raw);
/* Check the peer's hello in c->rx_raw and take its credits: 0 or PS_EBAD_MESSAGE (logged). */
int ps_tcp_hello_take(struct tcp_conn *c);
/* "host:port" ("[v6]:port") of the socket's peer, "?" if unknown. */
void ps_tcp_peer_name(int fd, char *buf, size_t len);
/* The ops of transport.h, as documented there. */
void ps_tcp_conn_close(struct ps_tp_conn *conn);
int ps_tcp_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx);
int ps_tcp_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		     const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx);
void ps_tcp_recv_release(struct ps_tp_conn *conn, void *buf);

#endif
