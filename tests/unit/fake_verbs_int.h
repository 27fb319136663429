/*
 * The fake verbs layer's private structures, shared by fake_verbs*.c. Each fake object embeds the
 * rdma-core struct the shim API hands out (struct ibv_pd, struct rdma_cm_id, ...) and gets back to
 * its own with container_of(). One global lock (fv.lock) protects everything here.
 */
#ifndef PS_TESTS_UNIT_FAKE_VERBS_INT_H
#define PS_TESTS_UNIT_FAKE_VERBS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/unit/fake_verbs.h"

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

#define FV_MAX_DEVS    4
#define FV_MAX_ADDRS   4
#define FV_GID_TBL_LEN 16
#define FV_PORT_FIRST  20000 /* first port handed out for port 0 / ephemeral ports */
#define FV_PORT_LAST   60999

/* IB CM private data sizes as rdma_cm delivers them (the REQ/REP/REJ areas less its header). */
#define FV_REQ_PDATA 56
#define FV_REP_PDATA 196
#define FV_REJ_PDATA 148

struct fv_ctx;

/* A device: what device lists hold, the addresses it owns, and the context rdma_cm hands out. */
struct fv_dev {
	struct ibv_device ibdev;
	struct fv_ctx *cm_ctx;	      /* id->verbs of every id on this device; owned by the fake */
	uint32_t addrs[FV_MAX_ADDRS]; /* IPv4, network byte order */
	int naddrs;
	enum ibv_port_state port_state;
	int max_sge, max_inline, max_qp_wr, max_cqe;
	uint64_t guid;
};

/* An async event waiting in a context's queue. */
struct fv_async {
	struct ibv_async_event ev;
	struct fv_async *next;
};

struct fv_ctx {
	struct ibv_context ibctx; /* async_fd: an eventfd, readable while async events wait */
	struct fv_dev *dev;
	bool cm_owned; /* rdma_cm's context: not counted, not closable */
	int nchildren; /* PDs, CQs, completion channels on it */
	struct fv_async *async_head, *async_tail;
	struct fv_ctx *next; /* fv.ctxs */
};

struct fv_pd {
	struct ibv_pd ibpd;
	int nmrs, nqps;
	struct fv_pd *next;
};

struct fv_mr {
	struct ibv_mr ibmr;
	int access;
	struct fv_mr *next;
};

/* A completion queued on a CQ, with what retiring it frees. */
struct fv_cqe {
	struct ibv_wc wc;
	struct fv_qp *qp; /* the QP it belongs to (send or receive side) */
	uint64_t sq_seq;  /* send side: the request's sequence number; 0 for receives */
	bool solicited;	  /* counts for a CQ armed with solicited_only */
};

struct fv_cq {
	struct ibv_cq ibcq;
	struct fv_cqe *ring;
	int head, count; /* ring of ibcq.cqe entries */
	bool armed, solicited_only;
	bool overflowed;	   /* lost a completion: polls fail with -EIO from then on */
	unsigned int events_taken; /* completion events taken by cq_event_get, not yet acked */
	int nqps;
	struct fv_cq *next;
};

/* A fired CQ waiting on a completion channel. */
struct fv_chev {
	struct fv_cq *cq;
	struct fv_chev *next;
};

struct fv_comp_ch {
	struct ibv_comp_channel ibch; /* fd: an eventfd, readable while events wait */
	struct fv_chev *head, *tail;
	int ncqs;
	struct fv_comp_ch *next;
};

/* One send-queue work request as the fake keeps it (the caller's WR may be reused at once). */
struct fv_swr {
	uint64_t wr_id;
	uint64_t seq; /* position in the send queue, from 1 */
	enum ibv_wr_opcode opcode;
	unsigned int send_flags;
	uint32_t imm_data; /* network byte order, as posted */
	uint64_t remote_addr;
	uint32_t rkey;
	int num_sge;
	struct ibv_sge *sge; /* num_sge entries in the QP's pool (not for inline) */
	uint8_t *inline_buf; /* inline data copied at post time */
	uint32_t inline_len;
};

struct fv_rwr {
	uint64_t wr_id;
	int num_sge;
	struct ibv_sge *sge;
};

struct fv_id;

struct fv_qp {
	struct ibv_qp ibqp;
	struct fv_id *id;
	struct fv_qp *peer;    /* the connected QP; NULL before accept and once it is gone */
	struct ibv_qp_cap cap; /* granted */
	bool sq_sig_all;
	uint8_t rnr_retry; /* how often a receiver-not-ready is retried (7: forever) */
	/* send queue: a ring of not-yet-executed requests, and the slots in use */
	struct fv_swr *sq;
	int sq_head, sq_count;
	uint64_t sq_next_seq;	   /* sequence of the next posted request */
	uint64_t sq_retired;	   /* highest sequence whose completion was polled */
	uint64_t sq_last_signaled; /* helps retire unsignalled requests on flush */
	struct ibv_sge *sq_sges;   /* cap.max_send_wr * cap.max_send_sge */
	uint8_t *sq_inline;	   /* cap.max_send_wr * cap.max_inline_data */
	/* receive queue */
	struct fv_rwr *rq;
	int rq_head, rq_count;
	struct ibv_sge *rq_sges;
	bool rnr_blocked; /* the head request waits for the peer's receive */
	struct fv_qp *next;
};

/* rdma_cm id states (a subset of the kernel's). */
enum fv_id_state {
	FV_ID_IDLE,
	FV_ID_BOUND,
	FV_ID_LISTEN,
	FV_ID_ADDR_QUERY, /* resolve_addr in progress (never seen: it completes at once) */
	FV_ID_ADDR_RESOLVED,
	FV_ID_ROUTE_RESOLVED,
	FV_ID_CONNECT, /* active: connect sent; passive: request received */
	FV_ID_ESTABLISHED,
	FV_ID_DISC_SENT, /* disconnected, waiting for the peer's answer */
	FV_ID_DISC_RCVD, /* the peer disconnected; our answer not given yet */
	FV_ID_DISCONNECTED,
	FV_ID_REJECTED,
};

struct fv_cm_ch;

struct fv_id {
	struct rdma_cm_id ibid;
	struct fv_cm_ch *ch;
	enum fv_id_state state;
	bool passive; /* created by a connect request */
	bool bound;   /* holds a port in the port table */
	bool listening;
	struct fv_dev *dev; /* the device it runs on, NULL for a wildcard listener */
	struct fv_id *peer; /* the other end (active <-> passive child), while connecting/up */
	struct rdma_conn_param req_param; /* the request's parameters (passive: from the active) */
	unsigned int events_taken;	  /* events taken by cm_event_get and not yet acked */
	struct fv_id *next;
};

struct fv_cm_ev {
	struct rdma_cm_event ev;
	struct fv_id *owner; /* the id the event is accounted to (the listener for a request) */
	uint8_t pdata[256];
	struct fv_cm_ev *next;
};

struct fv_cm_ch {
	struct rdma_event_channel ibch; /* fd: an eventfd, readable while events wait */
	struct fv_cm_ev *head, *tail;
	int nids;
	struct fv_cm_ch *next;
};

/* A pending injection of a synchronous failure. */
struct fv_fail {
	int err;
	unsigned int nth;
};

/* The whole fake: one instance, under one lock. */
struct fv_state {
	pthread_mutex_t lock;
	bool inited;
	bool no_devices, hold;
	struct fv_dev *devs[FV_MAX_DEVS];
	int ndevs;
	int def_max_sge, def_max_inline, def_max_qp_wr, def_max_cqe;
	uint64_t memlock, registered;
	uint32_t next_key, next_qpn, next_handle;
	uint16_t next_port;
	/* live objects */
	struct fv_ctx *ctxs;
	struct fv_pd *pds;
	struct fv_mr *mrs;
	struct fv_cq *cqs;
	struct fv_comp_ch *comp_chs;
	struct fv_qp *qps;
	struct fv_cm_ch *cm_chs;
	struct fv_id *ids;
	struct fv_cm_ev *cm_taken; /* cm events taken and not yet acked */
	struct fake_verbs_counts counts;
	struct fake_verbs_stats stats;
	char last_misuse[256];
	/* injections */
	struct fv_fail fail[FAKE_VERBS_NCALLS];
	enum ibv_wc_status wc_err_status;
	unsigned int wc_err_nth;
	struct {
		bool set;
		enum rdma_cm_event_type type;
		int status;
	} cm_next[3]; /* resolve_addr, resolve_route, connect */
};

extern struct fv_state fv;

/* fake_verbs.c, fake_verbs_dev.c */
void fv_lock(void);
void fv_unlock(void);
int fv_injected(enum fake_verbs_call call);
void fv_misuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int fv_eventfd_create(void);
void fv_eventfd_signal(int fd);
void fv_eventfd_drain(int fd);
int fv_wait_fd(int fd, uint64_t deadline);
uint64_t fv_deadline(int timeout_ms);
struct fv_dev *fv_dev_by_addr(uint32_t addr);
void fv_async_push(struct fv_ctx *ctx, enum ibv_event_type type, void *element, int port);
struct fv_mr *fv_mr_by_lkey(uint32_t lkey);
struct fv_mr *fv_mr_by_rkey(uint32_t rkey);
void fv_ctx_traps(struct ibv_context *ctx);
struct fv_ctx *fv_ctx_new(struct fv_dev *dev, bool cm_owned);
void fv_ctx_free(struct fv_ctx *c);
void fv_free_all_ctx(void);

/* fake_verbs_cq.c */
void fv_cq_push(struct fv_cq *cq, const struct fv_cqe *cqe);
void fv_cq_purge_qp(struct fv_cq *cq, struct fv_qp *qp);
int fv_free_all_cq(void);

/* fake_verbs_qp.c */
void fv_qp_to_error(struct fv_qp *qp);
void fv_qp_progress(struct fv_qp *qp, bool force);
void fv_qp_progress_all(void);
void fv_qp_free(struct fv_qp *qp);
void fv_qp_retire(struct fv_qp *qp, uint64_t seq);
int fv_free_all_qp(void);

/* fake_verbs_cm.c */
struct fv_id *fv_id_of(struct rdma_cm_id *ibid);
uint32_t fv_src_addr(const struct fv_id *id);
uint16_t fv_src_port(const struct fv_id *id);
void fv_set_addr(struct sockaddr_in *sin, uint32_t addr, uint16_t port);
struct fv_cm_ev *fv_ev_push(struct fv_id *owner, struct fv_id *id, enum rdma_cm_event_type type,
			    int status, const void *pdata, size_t len, size_t padded);
void fv_id_set_dev(struct fv_id *id, struct fv_dev *d);
void fv_id_leave(struct fv_id *id);
struct fv_id *fv_id_new(struct fv_cm_ch *ch, void *context, enum rdma_port_space ps);
int fv_free_all_cm(void);

/* fake_verbs_conn.c */
int fv_kill_peer(struct rdma_cm_id *id);

#endif
