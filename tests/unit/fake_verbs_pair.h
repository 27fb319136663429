/*
 * Helpers of the fake verbs layer's own tests (test_fake_verbs*.c): one RC connection ("pair") on
 * the fake's default device, built and torn down through the ps_vshim_* API only, with cmocka
 * assertions at each step. A pair has a passive side (listener, accepted id, CQ on a completion
 * channel) and an active side (resolved, connected id, polled CQ), each with a registered buffer
 * followed by an unregistered guard area of the same allocation.
 */
#ifndef PS_TESTS_UNIT_FAKE_VERBS_PAIR_H
#define PS_TESTS_UNIT_FAKE_VERBS_PAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/unit/fake_verbs.h"

#define BUF_LEN	   8192u /* registered */
#define GUARD_LEN  64u	 /* right after the registered part, same allocation */
#define GUARD_BYTE 0xee
#define IMM	   0x50530001u

struct fvt_side {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cch; /* passive side only */
	struct ibv_cq *cq;
	uint8_t *buf; /* BUF_LEN + GUARD_LEN */
	struct ibv_mr *mr;
};

struct fvt_pair {
	struct fvt_side a, p; /* active, passive */
	struct rdma_cm_id *listen;
	uint16_t port;
};

struct fvt_pair_opts {
	uint32_t send_wr, recv_wr, sge, inline_len;
	int cqe;
	uint8_t a_rnr, p_rnr; /* rnr_retry_count in connect (governs p's QP) and accept (a's QP) */
	int recvs;	      /* receives pre-posted on each side (4096 bytes at offset 4096) */
	int sq_sig_all;
};

/* 8-deep queues, 4-element lists, a 64-entry CQ, rnr_retry_count 7 both ways, no receives. */
extern const struct fvt_pair_opts fvt_def_opts;

/* An IPv4 sockaddr of the dotted quad @ip and @port (host order). */
struct sockaddr_in fvt_addr4(const char *ip, uint16_t port);

/* Take the next cm event on @ch, which must be @type; the caller acks it. */
struct rdma_cm_event *fvt_cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type type);

/* Take and acknowledge the next cm event, which must be @type. */
void fvt_cm_expect_ack(struct rdma_event_channel *ch, enum rdma_cm_event_type type);

/* No cm event is waiting on @ch. */
void fvt_cm_expect_none(struct rdma_event_channel *ch);

/* Exactly one completion is waiting (the fake completes at post time): return it. */
struct ibv_wc fvt_poll_one(struct ibv_cq *cq);

/* No completion is waiting. */
void fvt_poll_none(struct ibv_cq *cq);

/* A gather/scatter element of @s's registered buffer. */
struct ibv_sge fvt_sge(struct fvt_side *s, uint32_t off, uint32_t len);

/* Post one receive of [@off, @off + @len) of @s's buffer. */
int fvt_post_recv(struct fvt_side *s, uint64_t wr_id, uint32_t off, uint32_t len);

/* Post one SEND of [@off, @off + @len) of @s's buffer with @flags. */
int fvt_post_send(struct fvt_side *s, uint64_t wr_id, uint32_t off, uint32_t len,
		  unsigned int flags);

/* PD, CQ (with a completion channel if @with_channel), buffer, MR, QP and receives of @s. */
void fvt_side_resources(struct fvt_side *s, const struct fvt_pair_opts *o, bool with_channel);

/* A listener on 192.0.2.1 (port 0) and an active id resolved to it, with its QP. */
void fvt_pair_prepare(struct fvt_pair *pr, const struct fvt_pair_opts *o);

/* Connect, accept (the passive side's resources made on the request) and see both ESTABLISHED. */
void fvt_pair_connect(struct fvt_pair *pr, const struct fvt_pair_opts *o);

/* fvt_pair_prepare() then fvt_pair_connect(). */
void fvt_pair_open(struct fvt_pair *pr, const struct fvt_pair_opts *o);

/* Poll @cq until it is empty. */
void fvt_drain(struct ibv_cq *cq);

/* Destroy what @s holds, in reverse order; every destroy must succeed. */
void fvt_side_close(struct fvt_side *s);

/* Tear the pair down (events still queued die with their ids). */
void fvt_pair_close(struct fvt_pair *pr);

/* The fake's live-object counters (and misuse count) are all zero. */
void fvt_assert_no_leaks(void);

/* cmocka setup: fake_verbs_reset(). */
int fvt_setup(void **state);

/* cmocka teardown: fvt_assert_no_leaks(). */
int fvt_teardown(void **state);

/* poll() says @fd is readable now. */
bool fvt_fd_readable(int fd);

/* Fill @p with a pattern of @seed. */
void fvt_fill(uint8_t *p, size_t n, uint8_t seed);

#endif
