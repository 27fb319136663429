/*
 * Helpers of the fake verbs layer's own tests: see fake_verbs_pair.h.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/unit/fake_verbs_pair.h"

const struct fvt_pair_opts fvt_def_opts = {
	.send_wr = 8, .recv_wr = 8, .sge = 4, .cqe = 64, .a_rnr = 7, .p_rnr = 7, .recvs = 0};

struct sockaddr_in fvt_addr4(const char *ip, uint16_t port)
{
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(port)};

	assert_int_equal(inet_pton(AF_INET, ip, &s.sin_addr), 1);
	return s;
}

/* Take the next cm event, which must be @type; returned for inspection, caller acks. */
struct rdma_cm_event *fvt_cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type type)
{
	struct rdma_cm_event *ev = NULL;

	assert_int_equal(ps_vshim_cm_event_get(ch, 1000, &ev), 0);
	if (ev->event != type)
		fail_msg("got %s, want %s", ps_vshim_cm_event_str(ev->event),
			 ps_vshim_cm_event_str(type));
	return ev;
}

void fvt_cm_expect_ack(struct rdma_event_channel *ch, enum rdma_cm_event_type type)
{
	assert_int_equal(ps_vshim_cm_event_ack(fvt_cm_expect(ch, type)), 0);
}

void fvt_cm_expect_none(struct rdma_event_channel *ch)
{
	struct rdma_cm_event *ev;

	assert_int_equal(ps_vshim_cm_event_get(ch, 0, &ev), PS_ETIMEOUT);
}

/* Exactly one completion must be waiting (the fake completes at post time). */
struct ibv_wc fvt_poll_one(struct ibv_cq *cq)
{
	struct ibv_wc wc[2];

	assert_int_equal(ps_vshim_cq_poll(cq, 1, wc), 1);
	return wc[0];
}

void fvt_poll_none(struct ibv_cq *cq)
{
	struct ibv_wc wc;

	assert_int_equal(ps_vshim_cq_poll(cq, 1, &wc), 0);
}

struct ibv_sge fvt_sge(struct fvt_side *s, uint32_t off, uint32_t len)
{
	return (struct ibv_sge){
		.addr = (uintptr_t)s->buf + off, .length = len, .lkey = s->mr->lkey};
}

int fvt_post_recv(struct fvt_side *s, uint64_t wr_id, uint32_t off, uint32_t len)
{
	struct ibv_sge sge = fvt_sge(s, off, len);
	struct ibv_recv_wr wr = {.wr_id = wr_id, .sg_list = &sge, .num_sge = 1};

	return ps_vshim_post_recv(s->id->qp, &wr, NULL);
}

int fvt_post_send(struct fvt_side *s, uint64_t wr_id, uint32_t off, uint32_t len,
		  unsigned int flags)
{
	struct ibv_sge sge = fvt_sge(s, off, len);
	struct ibv_send_wr wr = {.wr_id = wr_id,
				 .sg_list = &sge,
				 .num_sge = 1,
				 .opcode = IBV_WR_SEND,
				 .send_flags = flags};

	return ps_vshim_post_send(s->id->qp, &wr, NULL);
}

void fvt_side_resources(struct fvt_side *s, const struct fvt_pair_opts *o, bool with_channel)
{
	struct ibv_qp_init_attr qa = {0};

	assert_int_equal(ps_vshim_pd_alloc(s->id->verbs, &s->pd), 0);
	if (with_channel)
		assert_int_equal(ps_vshim_comp_channel_create(s->id->verbs, &s->cch), 0);
	assert_int_equal(ps_vshim_cq_create(s->id->verbs, o->cqe, s, s->cch, 0, &s->cq), 0);
	s->buf = malloc(BUF_LEN + GUARD_LEN);
	assert_non_null(s->buf);
	memset(s->buf, 0, BUF_LEN);
	memset(s->buf + BUF_LEN, GUARD_BYTE, GUARD_LEN);
	assert_int_equal(ps_vshim_mr_reg(s->pd, s->buf, BUF_LEN,
					 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
						 IBV_ACCESS_REMOTE_READ,
					 &s->mr),
			 0);
	qa.qp_type = IBV_QPT_RC;
	qa.send_cq = qa.recv_cq = s->cq;
	qa.cap.max_send_wr = o->send_wr;
	qa.cap.max_recv_wr = o->recv_wr;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = o->sge;
	qa.cap.max_inline_data = o->inline_len;
	qa.sq_sig_all = o->sq_sig_all;
	assert_int_equal(ps_vshim_qp_create(s->id, s->pd, &qa), 0);
	assert_int_equal(qa.cap.max_send_wr, o->send_wr);
	assert_int_equal(s->id->qp->state, IBV_QPS_INIT);
	for (int i = 0; i < o->recvs; i++)
		assert_int_equal(fvt_post_recv(s, 100 + i, 4096, 4096), 0);
}

/* Listener on 192.0.2.1 (port 0) and an active id resolved to it; no connect yet. */
void fvt_pair_prepare(struct fvt_pair *pr, const struct fvt_pair_opts *o)
{
	struct sockaddr_in l = fvt_addr4("192.0.2.1", 0), d;

	memset(pr, 0, sizeof(*pr));
	assert_int_equal(ps_vshim_cm_channel_create(&pr->p.ch), 0);
	assert_int_equal(ps_vshim_cm_channel_create(&pr->a.ch), 0);
	assert_int_equal(ps_vshim_cm_id_create(pr->p.ch, &pr->p, RDMA_PS_TCP, &pr->listen), 0);
	assert_int_equal(ps_vshim_cm_bind(pr->listen, (struct sockaddr *)&l), 0);
	assert_non_null(pr->listen->verbs);
	assert_string_equal(ps_vshim_device_name(pr->listen->verbs->device), "fake0");
	assert_int_equal(ps_vshim_cm_listen(pr->listen, 8), 0);
	pr->port = ps_vshim_cm_src_port(pr->listen);
	assert_true(pr->port != 0);

	d = fvt_addr4("192.0.2.1", pr->port);
	assert_int_equal(ps_vshim_cm_id_create(pr->a.ch, &pr->a, RDMA_PS_TCP, &pr->a.id), 0);
	assert_int_equal(ps_vshim_cm_resolve_addr(pr->a.id, NULL, (struct sockaddr *)&d, 100), 0);
	fvt_cm_expect_ack(pr->a.ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_int_equal(ps_vshim_cm_resolve_route(pr->a.id, 100), 0);
	fvt_cm_expect_ack(pr->a.ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	assert_ptr_equal(pr->a.id->verbs, pr->listen->verbs);
	fvt_side_resources(&pr->a, o, false);
}

void fvt_pair_connect(struct fvt_pair *pr, const struct fvt_pair_opts *o)
{
	struct rdma_conn_param cp = {.rnr_retry_count = o->a_rnr, .retry_count = 7};
	struct rdma_cm_event *ev;

	assert_int_equal(ps_vshim_cm_connect(pr->a.id, &cp), 0);
	ev = fvt_cm_expect(pr->p.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	pr->p.id = ev->id;
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	fvt_side_resources(&pr->p, o, true);
	cp.rnr_retry_count = o->p_rnr;
	assert_int_equal(ps_vshim_cm_accept(pr->p.id, &cp), 0);
	assert_int_equal(pr->p.id->qp->state, IBV_QPS_RTS);
	fvt_cm_expect_ack(pr->a.ch, RDMA_CM_EVENT_ESTABLISHED);
	fvt_cm_expect_ack(pr->p.ch, RDMA_CM_EVENT_ESTABLISHED);
	assert_int_equal(pr->a.id->qp->state, IBV_QPS_RTS);
}

void fvt_pair_open(struct fvt_pair *pr, const struct fvt_pair_opts *o)
{
	fvt_pair_prepare(pr, o);
	fvt_pair_connect(pr, o);
}

/* Poll until the CQ is empty (flushes expected at fvt_teardown). */
void fvt_drain(struct ibv_cq *cq)
{
	struct ibv_wc wc[16];

	while (ps_vshim_cq_poll(cq, 16, wc) > 0)
		;
}

void fvt_side_close(struct fvt_side *s)
{
	if (s->id)
		ps_vshim_qp_destroy(s->id);
	assert_int_equal(ps_vshim_mr_dereg(s->mr), 0);
	free(s->buf);
	assert_int_equal(ps_vshim_cq_destroy(s->cq), 0);
	assert_int_equal(ps_vshim_comp_channel_destroy(s->cch), 0);
	assert_int_equal(ps_vshim_pd_dealloc(s->pd), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(s->id), 0);
}

/* Tear everything down (events still queued are dropped with their ids) and check for leaks. */
void fvt_pair_close(struct fvt_pair *pr)
{
	fvt_side_close(&pr->a);
	fvt_side_close(&pr->p);
	assert_int_equal(ps_vshim_cm_id_destroy(pr->listen), 0);
	ps_vshim_cm_channel_destroy(pr->a.ch);
	ps_vshim_cm_channel_destroy(pr->p.ch);
}

void fvt_assert_no_leaks(void)
{
	struct fake_verbs_counts c;
	int total = fake_verbs_live_objects(&c);

	if (total)
		fail_msg("live: lists %d ctx %d pd %d mr %d cch %d cq %d qp %d cmch %d id %d "
			 "cmev %d cqev %d async %d misuse %d (%s)",
			 c.device_lists, c.contexts, c.pds, c.mrs, c.comp_channels, c.cqs, c.qps,
			 c.cm_channels, c.cm_ids, c.cm_events, c.cq_events, c.async_events,
			 c.misuse, fake_verbs_last_misuse());
}

int fvt_setup(void **state)
{
	fake_verbs_reset(); /* after a failed test, frees what it left */
	return 0;
}

int fvt_teardown(void **state)
{
	fvt_assert_no_leaks();
	return 0;
}

bool fvt_fd_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) == 1;
}

void fvt_fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}
