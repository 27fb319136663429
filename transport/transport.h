/*
 * The psplus transport interface: the only way scheduler, server and client code move data.
 *
 * Two backends implement it behind one ops table (struct ps_tp_ops): "rdma" (libibverbs +
 * librdmacm, RC queue pairs; transport/rdma/) and "tcp" (sockets + epoll; transport/tcp/).
 * The code above never sees verbs or sockets.
 *
 * Objects and lifetimes
 *
 *   ps_tp_dev       an opened backend: for rdma a device context and protection domain, for
 *                   tcp a table of registered regions. Thread-safe. Every other object hangs
 *                   off a dev and must be destroyed before it.
 *   ps_tp_mr        a registered memory region on a dev (ps_tp_mr_reg). Registered once, used
 *                   by any loop of the dev. The memory must not move or be freed while
 *                   registered. A remote peer can only write into registered memory, and only
 *                   inside the bounds it was given (struct ps_tp_rbuf).
 *   ps_tp_loop      a completion loop: one CQ (rdma) or one epoll set (tcp), its listeners and
 *                   connections. NOT thread-safe: one thread owns a loop and makes every call on
 *                   it and on its listeners and connections. Shared-nothing servers run one
 *                   loop per data-path thread.
 *   ps_tp_listener  accepts connections on host:port; new ones arrive as PS_TP_EV_ACCEPT.
 *   ps_tp_conn      a reliable, ordered, message-oriented connection.
 *
 * Operations
 *
 *   ps_tp_send()       a two-sided message whose payload is a gather list; it lands in one
 *                      of the peer's receive buffers (PS_TP_EV_RECV). At most msg_size bytes.
 *   ps_tp_write_imm()  a one-sided write of a gather list into the peer's registered buffer
 *                      (struct ps_tp_rbuf, obtained from the peer in a message), completed at
 *                      the peer by PS_TP_EV_WRITE_IMM carrying a 32-bit immediate value and the
 *                      length. The data is in place when the event is seen.
 *
 *   Both are queued on the connection and posted by ps_tp_flush() or ps_tp_poll() (for rdma:
 *   the queued work requests of a connection are chained and posted with one doorbell).
 *   Payload bytes are read from the caller's memory when the operation executes, not when it
 *   is queued: the gather list's memory must stay untouched until the operation's completion
 *   (PS_TP_EV_SEND_DONE / PS_TP_EV_WRITE_DONE) when @ctx is non-NULL. An operation with a NULL
 *   @ctx produces no completion event (selective signalling); its memory is reusable once any
 *   later operation with a non-NULL ctx on the same connection has completed.
 *
 *   Zero copy: the rdma backend hands gather lists to the NIC as they are when every element
 *   lies in a registered region; elements that are not registered are copied into a
 *   registered bounce buffer and counted in ps_tp_stats.bytes_copied. The tcp backend hands
 *   gather lists to sendmsg (runs of pieces of at most 1 KiB packed into one iovec first:
 *   bytes_packed) and reads write_imm payloads straight into the destination region.
 *
 * Flow control
 *
 *   Each connection has recv_depth receive buffers of msg_size bytes, posted ahead. Each send
 *   and each write_imm consumes one of the peer's receive buffers, so the sender holds one
 *   credit per peer buffer and never sends without one (no receiver-not-ready storms). Credits
 *   come back when the receiver releases the buffer (ps_tp_recv_release() for PS_TP_EV_RECV;
 *   immediately for PS_TP_EV_WRITE_IMM). When a connection has no credit or no send slot,
 *   ps_tp_send() and ps_tp_write_imm() return -EAGAIN: poll, then retry. A poll after
 *   -EAGAIN returns (with 0 events if nothing else happened) as soon as the connection can
 *   take the refused op, so a caller may sleep in it.
 *
 * Errors
 *
 *   All functions return 0 (or a count) or a negative errno / PS_E* code. A peer that vanishes
 *   (disconnect, retry exceeded, reset) turns into a PS_TP_EV_CLOSED event for the connection,
 *   preceded by a completion with status PS_EPEER_LOST for every operation still outstanding
 *   that asked for one. After PS_TP_EV_CLOSED the caller must ps_tp_conn_close() it.
 */
#ifndef PS_TRANSPORT_H
#define PS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>

struct ps_tp_dev;
struct ps_tp_mr;
struct ps_tp_loop;
struct ps_tp_listener;
struct ps_tp_conn;

enum ps_tp_kind {
	PS_TP_KIND_TCP = 1,
	PS_TP_KIND_RDMA = 2,
};

struct ps_tp_dev_opts {
	/* "auto" (rdma when an active verbs device exists, else tcp), "tcp" or "rdma". */
	const char *kind;
	/*
	 * rdma: the local address whose device to use (the device that owns it), or NULL to take
	 * the first active device. tcp: ignored.
	 */
	const char *bind_addr;
	/* NUMA node for memory the transport allocates itself (bounce and receive buffers); -1:
	 * the device's node if known, else no preference. */
	int numa_node;
};

struct ps_tp_dev_info {
	enum ps_tp_kind kind;
	char name[64];	     /* "rxe0", "mlx5_0", or "tcp" */
	uint8_t port;	     /* rdma port number, 0 for tcp */
	uint32_t active_mtu; /* bytes; 0 for tcp */
	uint32_t max_sge;    /* longest gather list one work request takes (tcp: IOV_MAX) */
	uint32_t max_inline; /* inline data the device accepts, bytes (0: none) */
	int numa_node;	     /* -1 when unknown */
	char gid[40];	     /* rdma: the GID in use, text; "" for tcp */
	char netdev[32];     /* rdma: the netdev the port sits on (RoCE/rxe), else "" */
};

/**
 * ps_tp_dev_open() - open a backend.
 *
 * Returns 0, PS_ENO_DEVICE (kind "rdma" and no active device, or none owns bind_addr), -EINVAL
 * (unknown kind), -ENOMEM or the device's error.
 */
int ps_tp_dev_open(const struct ps_tp_dev_opts *opts, struct ps_tp_dev **out);

/** ps_tp_dev_close() - close a dev whose loops and regions are gone. Accepts NULL. */
void ps_tp_dev_close(struct ps_tp_dev *dev);

/** ps_tp_dev_query() - what the dev is and what it can do. */
void ps_tp_dev_query(const struct ps_tp_dev *dev, struct ps_tp_dev_info *info);

/**
 * ps_tp_rdma_available() - an active verbs device exists (what "auto" decides on).
 * Cheap enough to call at start-up; never fails (false on any error).
 */
bool ps_tp_rdma_available(void);

/*
 * Registered memory.
 */
struct ps_tp_mr_info {
	void *addr;
	size_t len;
	uint32_t lkey; /* local key, for gather lists */
	uint32_t rkey; /* remote key, handed to peers inside struct ps_tp_rbuf */
};

/**
 * ps_tp_mr_reg() - register [addr, addr+len) for local gathers and remote writes.
 *
 * Slow (pins pages, talks to the device): do it at start-up, never per request.
 * Returns 0, -EINVAL (NULL or empty range), -ENOMEM, or a code naming the limit hit; on
 * -ENOMEM from the device because of RLIMIT_MEMLOCK, the message logged says how much is
 * needed and how to allow it. Thread-safe.
 */
int ps_tp_mr_reg(struct ps_tp_dev *dev, void *addr, size_t len, struct ps_tp_mr **out);

/** ps_tp_mr_dereg() - undo ps_tp_mr_reg(); no operation may still use it. Accepts NULL. */
void ps_tp_mr_dereg(struct ps_tp_mr *mr);

/** ps_tp_mr_query() - the region's address, length and keys. */
void ps_tp_mr_query(const struct ps_tp_mr *mr, struct ps_tp_mr_info *info);

/*
 * Where a peer may write: sent inside messages (fixed layout, little-endian on the wire; see
 * docs/transport.md), built by ps_tp_mr_rbuf().
 */
struct ps_tp_rbuf {
	uint64_t addr;
	uint32_t rkey;
	uint32_t len;
};

/**
 * ps_tp_mr_rbuf() - describe [addr, addr+len) of @mr for a peer's write_imm.
 * Returns 0 or -ERANGE when the range is not inside the region.
 */
int ps_tp_mr_rbuf(const struct ps_tp_mr *mr, const void *addr, uint32_t len,
		  struct ps_tp_rbuf *out);

/* One element of a gather list. @mr may be NULL for unregistered memory (rdma copies it). */
struct ps_tp_sge {
	const void *addr;
	uint32_t len;
	const struct ps_tp_mr *mr;
};

/*
 * Loops, listeners, connections.
 */
struct ps_tp_loop_opts {
	uint32_t recv_depth;	     /* receive buffers per connection; 0: 64 */
	uint32_t msg_size;	     /* largest two-sided message, bytes; 0: 64 KiB */
	uint32_t send_depth;	     /* outstanding operations per connection; 0: 128 */
	uint32_t max_conns;	     /* connections this loop may hold; 0: 256 */
	uint32_t connect_timeout_ms; /* 0: 5000 */
};

/** ps_tp_loop_create() - a completion loop on @dev. Returns 0, -ENOMEM, or the device's error. */
int ps_tp_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
		      struct ps_tp_loop **out);

/**
 * ps_tp_loop_destroy() - close every listener and connection of the loop (outstanding
 * operations are dropped without events) and free it. Accepts NULL.
 */
void ps_tp_loop_destroy(struct ps_tp_loop *loop);

/**
 * ps_tp_loop_fd() - a file descriptor that becomes readable when ps_tp_poll() has something,
 * for callers that sleep in their own epoll. -1 if the backend has none. Poll until no event
 * is left before sleeping on it: once the fd was asked for, a ps_tp_poll() that returns no
 * event also reads what made it readable (rdma: a completion notification or a cm event; one
 * non-blocking epoll_wait), so that it stays readable only while something is pending;
 * without that a caller sleeping on it would spin.
 */
int ps_tp_loop_fd(struct ps_tp_loop *loop);

/**
 * ps_tp_listen() - accept connections on @host:@port (@port 0: any free port; read it back
 * with ps_tp_listener_port()). rdma: @host must be an address of the loop's device.
 */
int ps_tp_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		 struct ps_tp_listener **out);

/** ps_tp_listener_port() - the port the listener is bound to. */
uint16_t ps_tp_listener_port(const struct ps_tp_listener *l);

/** ps_tp_listener_close() - stop accepting. Accepts NULL. Connections already made live on. */
void ps_tp_listener_close(struct ps_tp_listener *l);

/**
 * ps_tp_connect() - connect to @host:@port and wait until established or the loop's
 * connect_timeout_ms passed (PS_ETIMEOUT). -ECONNREFUSED when nobody listens.
 * @user is returned by ps_tp_conn_user() and in events.
 */
int ps_tp_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		  struct ps_tp_conn **out);

/** ps_tp_conn_close() - disconnect and free. Outstanding operations get no events. NULL ok. */
void ps_tp_conn_close(struct ps_tp_conn *conn);

void *ps_tp_conn_user(const struct ps_tp_conn *conn);
void ps_tp_conn_set_user(struct ps_tp_conn *conn, void *user);

/** ps_tp_conn_peer() - "host:port" of the peer, for logs. */
const char *ps_tp_conn_peer(const struct ps_tp_conn *conn);

/**
 * ps_tp_send() - queue a two-sided message of the gather list (total <= msg_size).
 * Returns 0, -EAGAIN (no credit or send slot: poll and retry), -EMSGSIZE, -EINVAL,
 * PS_EPEER_LOST (connection already broken).
 */
int ps_tp_send(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx);

/**
 * ps_tp_write_imm() - queue a write of the gather list into @dst (total <= dst->len),
 * completed at the peer with @imm. Returns as ps_tp_send(); -EMSGSIZE when the list exceeds
 * dst->len.
 */
int ps_tp_write_imm(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
		    const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx);

/** ps_tp_flush() - post everything queued on the loop's connections (one doorbell each). */
int ps_tp_flush(struct ps_tp_loop *loop);

enum ps_tp_ev_type {
	PS_TP_EV_ACCEPT = 1, /* conn: a new inbound connection (user pointer NULL) */
	PS_TP_EV_RECV,	     /* conn, buf, len: a message; release buf with ps_tp_recv_release */
	PS_TP_EV_WRITE_IMM,  /* conn, imm, len: the peer's write_imm landed in our memory */
	PS_TP_EV_SEND_DONE,  /* conn, ctx, status: a send with a ctx completed */
	PS_TP_EV_WRITE_DONE, /* conn, ctx, status: a write_imm with a ctx completed */
	PS_TP_EV_CLOSED,     /* conn, status: the connection is gone (0: orderly close by peer) */
};

struct ps_tp_event {
	enum ps_tp_ev_type type;
	int status; /* 0 or a negative code (PS_EPEER_LOST, ...) */
	struct ps_tp_conn *conn;
	void *ctx; /* the operation's ctx (SEND_DONE, WRITE_DONE) */
	void *buf; /* RECV: the message, valid until released */
	uint32_t len;
	uint32_t imm;
};

/**
 * ps_tp_poll() - flush queued operations, then return up to @max events, waiting up to
 * @timeout_ms (0: don't wait; -1 is not allowed: every wait has a bound).
 * Returns the number of events (0 on timeout) or a negative code.
 */
int ps_tp_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms);

/** ps_tp_recv_release() - give a PS_TP_EV_RECV buffer back (reposts it; returns a credit). */
void ps_tp_recv_release(struct ps_tp_conn *conn, void *buf);

/*
 * Counters, per dev (summed over its loops), for stats and the zero-copy check.
 */
struct ps_tp_stats {
	uint64_t tx_bytes, rx_bytes; /* payload bytes sent and received */
	uint64_t tx_ops, rx_ops;     /* operations posted and messages/writes received */
	uint64_t bytes_copied;	     /* payload bytes the library copied (0 on a zero-copy path) */
	uint64_t bytes_packed;	     /* tcp: small pieces copied into one iovec for sendmsg; like
				      * rdma's inline data, not bytes_copied (the kernel copies
				      * every byte anyway; tcp_conn.c says why) */
	uint64_t doorbells;	     /* post calls to the device (rdma) or writev calls (tcp) */
	uint64_t eagain;	     /* operations refused for lack of credit or slots */
};

void ps_tp_stats_get(const struct ps_tp_dev *dev, struct ps_tp_stats *out);

/*
 * The ops table each backend fills (transport/tcp/, transport/rdma/). The functions above
 * dispatch through it; nothing outside transport/ uses it directly.
 */
struct ps_tp_ops {
	const char *name;
	enum ps_tp_kind kind;
	int (*dev_open)(const struct ps_tp_dev_opts *opts, struct ps_tp_dev **out);
	void (*dev_close)(struct ps_tp_dev *dev);
	void (*dev_query)(const struct ps_tp_dev *dev, struct ps_tp_dev_info *info);
	int (*mr_reg)(struct ps_tp_dev *dev, void *addr, size_t len, struct ps_tp_mr **out);
	void (*mr_dereg)(struct ps_tp_mr *mr);
	int (*loop_create)(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
			   struct ps_tp_loop **out);
	void (*loop_destroy)(struct ps_tp_loop *loop);
	int (*loop_fd)(struct ps_tp_loop *loop);
	int (*listen)(struct ps_tp_loop *loop, const char *host, uint16_t port,
		      struct ps_tp_listener **out);
	uint16_t (*listener_port)(const struct ps_tp_listener *l);
	void (*listener_close)(struct ps_tp_listener *l);
	int (*connect)(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		       struct ps_tp_conn **out);
	void (*conn_close)(struct ps_tp_conn *conn);
	int (*send)(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge, void *ctx);
	int (*write_imm)(struct ps_tp_conn *conn, const struct ps_tp_sge *sgl, int nsge,
			 const struct ps_tp_rbuf *dst, uint32_t imm, void *ctx);
	int (*flush)(struct ps_tp_loop *loop);
	int (*poll)(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms);
	void (*recv_release)(struct ps_tp_conn *conn, void *buf);
};

#endif
