/*
 * test_fake_verbs_data: the fake verbs layer's data path through the ps_vshim_* API: SEND/RECV,
 * RDMA WRITE, WRITE_WITH_IMM and READ bytes and completions, the checks of lkeys, rkeys and
 * bounds, RNR, send-queue depth and selective signalling, gather-list and inline limits,
 * completion channels, CQ overflow and injected completion errors.
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

/* ---- data path ------------------------------------------------------------------------------- */

static void test_send_recv(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct fvt_pair_opts o = fvt_def_opts;

	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	fvt_fill(pr.a.buf, 1000, 3);
	/* Two-element gather list: 600 + 400 bytes land contiguously at the receiver. */
	struct ibv_sge sg[2] = {fvt_sge(&pr.a, 0, 600), fvt_sge(&pr.a, 600, 400)};
	struct ibv_send_wr wr = {.wr_id = 7,
				 .sg_list = sg,
				 .num_sge = 2,
				 .opcode = IBV_WR_SEND_WITH_IMM,
				 .imm_data = htonl(IMM),
				 .send_flags = IBV_SEND_SIGNALED};
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &wr, NULL), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.wr_id, 7);
	assert_int_equal(wc.opcode, IBV_WC_SEND);
	wc = fvt_poll_one(pr.p.cq);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.wr_id, 100);
	assert_int_equal(wc.opcode, IBV_WC_RECV);
	assert_int_equal(wc.byte_len, 1000);
	assert_true(wc.wc_flags & IBV_WC_WITH_IMM);
	assert_int_equal(ntohl(wc.imm_data), IMM);
	assert_int_equal(wc.qp_num, pr.p.id->qp->qp_num);
	assert_int_equal(wc.src_qp, pr.a.id->qp->qp_num);
	assert_memory_equal(pr.p.buf + 4096, pr.a.buf, 1000);
	assert_int_equal(pr.p.buf[4096 + 1000], 0);

	/* Unsignalled success: no completion at the sender, the receive still completes. */
	assert_int_equal(fvt_post_recv(&pr.p, 101, 4096, 4096), 0);
	assert_int_equal(fvt_post_send(&pr.a, 8, 0, 10, 0), 0);
	fvt_poll_none(pr.a.cq);
	wc = fvt_poll_one(pr.p.cq);
	assert_int_equal(wc.byte_len, 10);
	assert_false(wc.wc_flags & IBV_WC_WITH_IMM);
	fvt_pair_close(&pr);
}

static void test_write_write_imm_read(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct fvt_pair_opts o = fvt_def_opts;

	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	fvt_fill(pr.a.buf, 2048, 9);
	struct ibv_sge s0 = fvt_sge(&pr.a, 0, 1024), s1 = fvt_sge(&pr.a, 1024, 1024);
	struct ibv_send_wr w1 = {
		.wr_id = 2,
		.sg_list = &s1,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(IMM),
		.wr.rdma = {.remote_addr = (uintptr_t)pr.p.buf + 1024, .rkey = pr.p.mr->rkey}};
	struct ibv_send_wr w0 = {
		.wr_id = 1,
		.next = &w1,
		.sg_list = &s0,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = {.remote_addr = (uintptr_t)pr.p.buf, .rkey = pr.p.mr->rkey}};
	struct fake_verbs_stats st;

	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w0, NULL), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 1);
	assert_int_equal(wc.opcode, IBV_WC_RDMA_WRITE);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 2);
	assert_int_equal(wc.opcode, IBV_WC_RDMA_WRITE); /* a requester's WRITE_WITH_IMM */
	wc = fvt_poll_one(pr.p.cq);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.wr_id, 100);
	assert_int_equal(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
	assert_int_equal(wc.byte_len, 1024);
	assert_true(wc.wc_flags & IBV_WC_WITH_IMM);
	assert_int_equal(ntohl(wc.imm_data), IMM);
	assert_memory_equal(pr.p.buf, pr.a.buf, 2048);
	/* One doorbell for the chain. */
	fake_verbs_stats_get(&st);
	assert_int_equal(st.post_send_calls, 1);
	assert_int_equal(st.send_wrs, 2);
	assert_int_equal(st.bytes_moved, 2048);

	/* RDMA READ of the passive's bytes 4000..4099 into the active's 6000. */
	fvt_fill(pr.p.buf + 4000, 100, 77);
	struct ibv_sge rs = fvt_sge(&pr.a, 6000, 100);
	struct ibv_send_wr rd = {
		.wr_id = 3,
		.sg_list = &rs,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_READ,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = {.remote_addr = (uintptr_t)pr.p.buf + 4000, .rkey = pr.p.mr->rkey}};
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &rd, NULL), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.opcode, IBV_WC_RDMA_READ);
	assert_int_equal(wc.byte_len, 100);
	assert_memory_equal(pr.a.buf + 6000, pr.p.buf + 4000, 100);
	fvt_pair_close(&pr);
}

/* A WRITE one byte past the peer's MR: REM_ACCESS_ERR, nothing written, the QP in error. */
static void test_rkey_bounds(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct fvt_pair_opts o = fvt_def_opts;

	o.recvs = 2;
	fvt_pair_open(&pr, &o);
	memset(pr.a.buf, 0x5a, 64);
	struct ibv_sge s = fvt_sge(&pr.a, 0, 64);
	struct ibv_send_wr w = {.wr_id = 1,
				.sg_list = &s,
				.num_sge = 1,
				.opcode = IBV_WR_RDMA_WRITE,
				.send_flags = IBV_SEND_SIGNALED,
				.wr.rdma = {.remote_addr = (uintptr_t)pr.p.buf + BUF_LEN - 63,
					    .rkey = pr.p.mr->rkey}};

	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w, NULL), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 1);
	assert_int_equal(wc.status, IBV_WC_REM_ACCESS_ERR);
	for (uint32_t i = BUF_LEN - 63; i < BUF_LEN; i++)
		assert_int_equal(pr.p.buf[i], 0);
	for (uint32_t i = 0; i < GUARD_LEN; i++)
		assert_int_equal(pr.p.buf[BUF_LEN + i], GUARD_BYTE);
	/* The sender's QP is in error: its posted receives flushed, new requests flush. */
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_ERR);
	for (int i = 0; i < 2; i++) {
		wc = fvt_poll_one(pr.a.cq);
		assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
		assert_int_equal(wc.wr_id, 100 + i);
	}
	assert_int_equal(fvt_post_send(&pr.a, 9, 0, 4, IBV_SEND_SIGNALED), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 9);
	assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
	fvt_poll_none(pr.p.cq);
	fvt_pair_close(&pr);
}

/* Exactly to the end is fine; the lkey used as an rkey and a read-only MR are not. */
static void test_rkey_checks(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct ibv_mr *ro;

	fvt_pair_open(&pr, &fvt_def_opts);
	struct ibv_sge s = fvt_sge(&pr.a, 0, 64);
	struct ibv_send_wr w = {.wr_id = 1,
				.sg_list = &s,
				.num_sge = 1,
				.opcode = IBV_WR_RDMA_WRITE,
				.send_flags = IBV_SEND_SIGNALED,
				.wr.rdma = {.remote_addr = (uintptr_t)pr.p.buf + BUF_LEN - 64,
					    .rkey = pr.p.mr->rkey}};
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w, NULL), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_SUCCESS);

	assert_int_not_equal(pr.p.mr->lkey, pr.p.mr->rkey);
	w.wr.rdma.rkey = pr.p.mr->lkey;
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w, NULL), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.status, IBV_WC_REM_ACCESS_ERR);
	/* Only wr_id, status, qp_num, vendor_err are valid on error: the rest is poisoned. */
	assert_int_not_equal(wc.opcode, IBV_WC_RDMA_WRITE);
	fvt_pair_close(&pr);

	fake_verbs_reset();
	fvt_pair_open(&pr, &fvt_def_opts);
	assert_int_equal(ps_vshim_mr_reg(pr.p.pd, pr.p.buf, 128, IBV_ACCESS_LOCAL_WRITE, &ro), 0);
	s = fvt_sge(&pr.a, 0, 64);
	w.wr.rdma.remote_addr = (uintptr_t)pr.p.buf;
	w.wr.rdma.rkey = ro->rkey;
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w, NULL), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_REM_ACCESS_ERR);
	assert_int_equal(ps_vshim_mr_dereg(ro), 0);
	/* Remote write without local write: refused at registration, like the kernel. */
	assert_int_equal(ps_vshim_mr_reg(pr.p.pd, pr.p.buf, 128, IBV_ACCESS_REMOTE_WRITE, &ro),
			 -EINVAL);
	fvt_pair_close(&pr);
}

static void test_local_errors(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct fvt_pair_opts o = fvt_def_opts;

	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	/* A gather element past the local MR: LOC_PROT_ERR, nothing sent. */
	assert_int_equal(fvt_post_send(&pr.a, 1, BUF_LEN - 10, 20, IBV_SEND_SIGNALED), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.status, IBV_WC_LOC_PROT_ERR);
	fvt_poll_none(pr.p.cq);
	assert_int_equal(fake_verbs_qp_recvs_posted(pr.p.id->qp), 1);
	fvt_drain(pr.a.cq);
	fvt_pair_close(&pr);

	/* A SEND bigger than the receive buffer: LOC_LEN_ERR there, REM_INV_REQ_ERR here. */
	fake_verbs_reset();
	fvt_pair_open(&pr, &fvt_def_opts);
	assert_int_equal(fvt_post_recv(&pr.p, 50, 0, 100), 0);
	assert_int_equal(fvt_post_send(&pr.a, 2, 0, 101, IBV_SEND_SIGNALED), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_REM_INV_REQ_ERR);
	wc = fvt_poll_one(pr.p.cq);
	assert_int_equal(wc.wr_id, 50);
	assert_int_equal(wc.status, IBV_WC_LOC_LEN_ERR);
	assert_int_equal(pr.p.id->qp->state, IBV_QPS_ERR);
	fvt_pair_close(&pr);
}

static void test_rnr(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct fvt_pair_opts o = fvt_def_opts;

	/* The passive side's accept says rnr_retry_count 0: the active QP fails at once. */
	o.p_rnr = 0;
	fvt_pair_open(&pr, &o);
	assert_int_equal(fvt_post_recv(&pr.a, 100, 4096, 4096), 0);
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 8, IBV_SEND_SIGNALED), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_RNR_RETRY_EXC_ERR);
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_ERR);
	wc = fvt_poll_one(pr.a.cq); /* the active's own receive flushes */
	assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
	assert_int_equal(wc.wr_id, 100);
	fvt_pair_close(&pr);

	/* rnr_retry_count 7 retries forever: the SEND waits until the peer posts a receive. */
	fake_verbs_reset();
	fvt_pair_open(&pr, &fvt_def_opts);
	assert_int_equal(fvt_post_send(&pr.a, 2, 0, 8, IBV_SEND_SIGNALED), 0);
	fvt_poll_none(pr.a.cq);
	assert_int_equal(fake_verbs_qp_outstanding(pr.a.id->qp), 1);
	assert_int_equal(fvt_post_recv(&pr.p, 60, 0, 64), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.wr_id, 2);
	assert_int_equal(fvt_poll_one(pr.p.cq).wr_id, 60);
	assert_int_equal(fake_verbs_qp_outstanding(pr.a.id->qp), 0);
	fvt_pair_close(&pr);
}

static void test_sq_depth_and_signalling(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_sge s;
	struct ibv_send_wr wr[6], *bad = NULL;

	o.send_wr = 4;
	o.recvs = 8;
	fvt_pair_open(&pr, &o);
	s = fvt_sge(&pr.a, 0, 8);
	for (int i = 0; i < 6; i++) {
		wr[i] = (struct ibv_send_wr){.wr_id = (uint64_t)i,
					     .next = i < 5 ? &wr[i + 1] : NULL,
					     .sg_list = &s,
					     .num_sge = 1,
					     .opcode = IBV_WR_SEND,
					     .send_flags = i == 3 ? IBV_SEND_SIGNALED : 0};
	}
	/* A chain of 6 on a queue of 4: 4 are posted, the 5th is bad_wr, -ENOMEM. */
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &wr[0], &bad), -ENOMEM);
	assert_ptr_equal(bad, &wr[4]);
	assert_int_equal(fake_verbs_qp_outstanding(pr.a.id->qp), 4);
	/* Polling the signalled 4th frees its slot and those of the 3 unsignalled before it. */
	struct ibv_wc wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 3);
	fvt_poll_none(pr.a.cq);
	assert_int_equal(fake_verbs_qp_outstanding(pr.a.id->qp), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(fvt_poll_one(pr.p.cq).wr_id, 100 + i);

	/* Unsignalled requests hold their slots: 4 of them fvt_fill the queue for good. */
	wr[3].send_flags = 0;
	wr[3].next = NULL;
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &wr[0], &bad), 0);
	assert_int_equal(fvt_post_send(&pr.a, 9, 0, 8, IBV_SEND_SIGNALED), -ENOMEM);
	fvt_pair_close(&pr);

	/* sq_sig_all: every request completes. */
	fake_verbs_reset();
	o = fvt_def_opts;
	o.sq_sig_all = 1;
	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	assert_int_equal(fvt_post_send(&pr.a, 5, 0, 8, 0), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).wr_id, 5);
	fvt_pair_close(&pr);
}

static void test_sge_and_inline_limits(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_sge sg[3];
	struct ibv_send_wr wr = {.wr_id = 1, .sg_list = sg, .num_sge = 3, .opcode = IBV_WR_SEND},
			   *bad = NULL;

	o.sge = 2;
	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	sg[0] = sg[1] = sg[2] = fvt_sge(&pr.a, 0, 8);
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &wr, &bad), -EINVAL);
	assert_ptr_equal(bad, &wr);
	/* Inline on a device without inline data. */
	wr.num_sge = 1;
	wr.send_flags = IBV_SEND_INLINE;
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &wr, &bad), -EINVAL);
	assert_ptr_equal(bad, &wr);
	fvt_pair_close(&pr);
}

static void test_qp_caps_refused(void **state)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct sockaddr_in d = fvt_addr4("192.0.2.1", 1);
	struct ibv_qp_init_attr qa = {.qp_type = IBV_QPT_RC};

	fake_verbs_set_caps(2, 64, 16);
	assert_int_equal(ps_vshim_cm_channel_create(&ch), 0);
	assert_int_equal(ps_vshim_cm_id_create(ch, NULL, RDMA_PS_TCP, &id), 0);
	/* No device chosen yet: no QP. */
	assert_int_equal(ps_vshim_cm_resolve_addr(id, NULL, (struct sockaddr *)&d, 10), 0);
	fvt_cm_expect_ack(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_int_equal(ps_vshim_pd_alloc(id->verbs, &pd), 0);
	assert_int_equal(ps_vshim_cq_create(id->verbs, 16, NULL, NULL, 0, &cq), 0);
	qa.send_cq = qa.recv_cq = cq;
	qa.cap = (struct ibv_qp_cap){
		.max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 3, .max_recv_sge = 1};
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), -EINVAL);
	qa.cap.max_send_sge = 2;
	qa.cap.max_send_wr = 17;
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), -EINVAL);
	qa.cap.max_send_wr = 16;
	qa.cap.max_inline_data = 65;
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), -EINVAL);
	qa.cap.max_inline_data = 64;
	qa.qp_type = IBV_QPT_UD;
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), -EINVAL);
	qa.qp_type = IBV_QPT_RC;
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), 0);
	assert_int_equal(ps_vshim_qp_create(id, pd, &qa), -EINVAL); /* one QP per id */
	/* Teardown order is checked: CQ and PD are busy while the QP exists. */
	assert_int_equal(ps_vshim_cq_destroy(cq), -EBUSY);
	assert_int_equal(ps_vshim_pd_dealloc(pd), -EBUSY);
	ps_vshim_qp_destroy(id);
	assert_int_equal(ps_vshim_cq_destroy(cq), 0);
	assert_int_equal(ps_vshim_pd_dealloc(pd), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(id), 0);
	ps_vshim_cm_channel_destroy(ch);
}

static void test_inline(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_wc wc;

	fake_verbs_set_caps(0, 64, 0);
	o.inline_len = 64;
	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	/* Inline data is copied at post time: the buffer may change before execution. */
	fake_verbs_hold_sends(true);
	memset(pr.a.buf, 0x11, 64);
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 64, IBV_SEND_SIGNALED | IBV_SEND_INLINE), 0);
	memset(pr.a.buf, 0x22, 64);
	fvt_poll_none(pr.a.cq);
	fake_verbs_hold_sends(false);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_SUCCESS);
	wc = fvt_poll_one(pr.p.cq);
	assert_int_equal(wc.byte_len, 64);
	assert_int_equal(pr.p.buf[4096], 0x11);
	assert_int_equal(pr.p.buf[4096 + 63], 0x11);
	assert_int_equal(fvt_post_send(&pr.a, 2, 0, 65, IBV_SEND_INLINE), -EINVAL);
	fvt_pair_close(&pr);
}

/* ---- completion channels and CQs ------------------------------------------------------------- */

static void test_comp_channel(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	uint64_t t0;

	o.recvs = 3;
	fvt_pair_open(&pr, &o);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_vshim_cq_event_get(pr.p.cch, 30, &ev_cq, &ev_ctx), PS_ETIMEOUT);
	assert_true(ps_clock_now_ms() - t0 >= 29);
	/* Not armed: a completion raises no event. */
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 8, 0), 0);
	assert_false(fvt_fd_readable(pr.p.cch->fd));
	fvt_poll_one(pr.p.cq);
	/* Armed: the next completion makes the fd readable, once. */
	assert_int_equal(ps_vshim_cq_req_notify(pr.p.cq, 0), 0);
	assert_int_equal(fvt_post_send(&pr.a, 2, 0, 8, 0), 0);
	assert_true(fvt_fd_readable(pr.p.cch->fd));
	assert_int_equal(ps_vshim_cq_event_get(pr.p.cch, 0, &ev_cq, &ev_ctx), 0);
	assert_ptr_equal(ev_cq, pr.p.cq);
	assert_ptr_equal(ev_ctx, &pr.p);
	assert_false(fvt_fd_readable(pr.p.cch->fd));
	assert_int_equal(fvt_post_send(&pr.a, 3, 0, 8, 0), 0);
	assert_false(fvt_fd_readable(pr.p.cch->fd));
	fvt_drain(pr.p.cq);
	/* Destroying the CQ before acknowledging is refused (libibverbs would hang). */
	struct fake_verbs_counts c;
	fake_verbs_live_objects(&c);
	assert_int_equal(c.cq_events, 1);
	ps_vshim_cq_event_ack(ev_cq, 1);
	/* Solicited only: an unsolicited SEND does not fire, a solicited one does. */
	assert_int_equal(ps_vshim_cq_req_notify(pr.p.cq, 1), 0);
	assert_int_equal(fvt_post_recv(&pr.p, 7, 0, 64), 0);
	assert_int_equal(fvt_post_recv(&pr.p, 8, 0, 64), 0);
	assert_int_equal(fvt_post_send(&pr.a, 4, 0, 8, 0), 0);
	assert_false(fvt_fd_readable(pr.p.cch->fd));
	assert_int_equal(fvt_post_send(&pr.a, 5, 0, 8, IBV_SEND_SOLICITED), 0);
	assert_int_equal(ps_vshim_cq_event_get(pr.p.cch, 100, &ev_cq, &ev_ctx), 0);
	ps_vshim_cq_event_ack(ev_cq, 1);
	/* A CQ with no channel cannot be armed. */
	assert_int_equal(ps_vshim_cq_req_notify(pr.a.cq, 0), -EINVAL);
	fvt_pair_close(&pr);
}

static void test_cq_overflow(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_wc wc[4];
	struct ibv_async_event ae;
	struct fake_verbs_stats st;

	o.cqe = 2;
	fvt_pair_open(&pr, &o);
	for (int i = 0; i < 3; i++)
		assert_int_equal(
			ps_vshim_post_send(pr.a.id->qp,
					   &(struct ibv_send_wr){.wr_id = (uint64_t)i,
								 .opcode = IBV_WR_RDMA_WRITE,
								 .send_flags = IBV_SEND_SIGNALED},
					   NULL),
			0);
	assert_int_equal(ps_vshim_cq_poll(pr.a.cq, 4, wc), -EIO);
	fake_verbs_stats_get(&st);
	assert_int_equal(st.cq_overflows, 1);
	assert_int_equal(ps_vshim_async_event_get(pr.a.id->verbs, 100, &ae), 0);
	assert_int_equal(ae.event_type, IBV_EVENT_CQ_ERR);
	assert_ptr_equal(ae.element.cq, pr.a.cq);
	ps_vshim_async_event_ack(&ae);
	fvt_pair_close(&pr);
}

static void test_inject_wc_error(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_wc wc;
	static const enum ibv_wc_status statuses[] = {
		IBV_WC_RETRY_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_REM_ACCESS_ERR};

	for (size_t k = 0; k < sizeof(statuses) / sizeof(statuses[0]); k++) {
		fake_verbs_reset();
		o.recvs = 4;
		fvt_pair_open(&pr, &o);
		struct ibv_sge s = fvt_sge(&pr.a, 0, 8);
		struct ibv_send_wr w[3];

		for (int i = 0; i < 3; i++)
			w[i] = (struct ibv_send_wr){.wr_id = (uint64_t)i,
						    .next = i < 2 ? &w[i + 1] : NULL,
						    .sg_list = &s,
						    .num_sge = 1,
						    .opcode = IBV_WR_SEND,
						    .send_flags = IBV_SEND_SIGNALED};
		fake_verbs_inject_wc_error(statuses[k], 2);
		assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w[0], NULL), 0);
		/* One chain: the 1st succeeds, the 2nd fails with the injected status, the 3rd
		 * flushes, then the receives. */
		assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_SUCCESS);
		wc = fvt_poll_one(pr.a.cq);
		assert_int_equal(wc.wr_id, 1);
		assert_int_equal(wc.status, statuses[k]);
		wc = fvt_poll_one(pr.a.cq);
		assert_int_equal(wc.wr_id, 2);
		assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
		/* The peer got exactly one message. */
		assert_int_equal(fvt_poll_one(pr.p.cq).status, IBV_WC_SUCCESS);
		fvt_poll_none(pr.p.cq);
		fvt_drain(pr.a.cq);
		fvt_pair_close(&pr);
		fvt_assert_no_leaks();
	}

	/* A flush injection: that request flushes too. */
	fake_verbs_reset();
	fvt_pair_open(&pr, &o);
	fake_verbs_inject_wc_error(IBV_WC_WR_FLUSH_ERR, 1);
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 8, IBV_SEND_SIGNALED), 0);
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 1);
	assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_ERR);
	fvt_poll_none(pr.p.cq);
	fvt_pair_close(&pr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_send_recv, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_write_write_imm_read, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_rkey_bounds, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_rkey_checks, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_local_errors, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_rnr, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_sq_depth_and_signalling, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_sge_and_inline_limits, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_qp_caps_refused, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_inline, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_comp_channel, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_cq_overflow, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_inject_wc_error, fvt_setup, fvt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
