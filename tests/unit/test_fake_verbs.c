/*
 * test_fake_verbs: the fake verbs layer behaves like verbs (and rdma_cm) through the ps_vshim_*
 * API only: devices, waits with timeouts, connection set-up with private data, rejects,
 * disconnects and peers that vanish, the injections, misuse detection and the memlock budget.
 * The data path is in test_fake_verbs_data.c. Each test starts from fake_verbs_reset() and ends
 * with the live-object counters (and the misuse count) back at zero.
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

/* ---- devices --------------------------------------------------------------------------------- */

static void test_devices(void **state)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	union ibv_gid gid;
	struct ibv_pd *pd;
	int n;

	assert_int_equal(ps_vshim_device_list_get(&list, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ps_vshim_device_name(list[0]), "fake0");
	assert_null(list[1]);
	assert_int_equal(ps_vshim_device_open(list[0], &ctx), 0);
	assert_int_equal(ps_vshim_device_query(ctx, &da), 0);
	assert_int_equal(da.max_sge, 32);
	assert_int_equal(da.max_qp_wr, 16384);
	assert_int_equal(da.phys_port_cnt, 1);
	assert_int_equal(ps_vshim_port_query(ctx, 1, &pa), 0);
	assert_int_equal(pa.state, IBV_PORT_ACTIVE);
	assert_int_equal(ps_vshim_mtu_bytes(pa.active_mtu), 1024);
	assert_int_equal(pa.link_layer, IBV_LINK_LAYER_ETHERNET);
	assert_int_equal(ps_vshim_port_query(ctx, 2, &pa), -EINVAL);
	assert_int_equal(ps_vshim_gid_query(ctx, 1, 1, &gid), 0);
	assert_int_equal(gid.raw[10], 0xff);
	assert_int_equal(gid.raw[12], 192);
	assert_int_equal(gid.raw[15], 1);

	fake_verbs_set_caps(2, 64, 16);
	assert_int_equal(ps_vshim_device_query(ctx, &da), 0);
	assert_int_equal(da.max_sge, 2);
	assert_int_equal(da.max_qp_wr, 16);

	/* Closing a context that still has a PD is refused (and counted as a misuse). */
	assert_int_equal(ps_vshim_pd_alloc(ctx, &pd), 0);
	assert_int_equal(ps_vshim_device_close(ctx), -EBUSY);
	assert_int_equal(ps_vshim_pd_dealloc(pd), 0);
	assert_int_equal(ps_vshim_device_close(ctx), 0);
	ps_vshim_device_list_free(list);
	assert_int_equal(fake_verbs_live_objects(NULL), 1); /* the misuse */

	/* No device: an empty list, not an error; a kernel without RDMA: -ENOSYS (injected). */
	fake_verbs_reset();
	fake_verbs_no_devices(true);
	assert_int_equal(ps_vshim_device_list_get(&list, &n), 0);
	assert_int_equal(n, 0);
	assert_null(list[0]);
	ps_vshim_device_list_free(list);
	fake_verbs_fail_next(FAKE_VERBS_DEVICE_LIST_GET, -ENOSYS, 1);
	assert_int_equal(ps_vshim_device_list_get(&list, &n), -ENOSYS);

	/* A second device and port events. */
	fake_verbs_no_devices(false);
	assert_int_equal(fake_verbs_add_device("fake1", "192.0.2.2"), 0);
	assert_int_equal(fake_verbs_add_device("fake1", "192.0.2.3"), -EEXIST);
	assert_int_equal(ps_vshim_device_list_get(&list, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ps_vshim_device_open(list[1], &ctx), 0);
	assert_int_equal(fake_verbs_set_port_state("fake1", IBV_PORT_DOWN), 0);
	struct ibv_async_event ae;
	assert_int_equal(ps_vshim_async_event_get(ctx, 100, &ae), 0);
	assert_int_equal(ae.event_type, IBV_EVENT_PORT_ERR);
	assert_int_equal(ae.element.port_num, 1);
	ps_vshim_async_event_ack(&ae);
	assert_int_equal(ps_vshim_async_event_get(ctx, 0, &ae), PS_ETIMEOUT);
	assert_int_equal(ps_vshim_port_query(ctx, 1, &pa), 0);
	assert_int_equal(pa.state, IBV_PORT_DOWN);
	assert_int_equal(ps_vshim_device_close(ctx), 0);
	ps_vshim_device_list_free(list);
}

/* ---- waits and channels ---------------------------------------------------------------------- */

static void test_waits_time_out(void **state)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	struct sockaddr_in d = fvt_addr4("192.0.2.1", 1);
	uint64_t t0;

	assert_int_equal(ps_vshim_cm_channel_create(&ch), 0);
	t0 = ps_clock_now_ms();
	assert_int_equal(ps_vshim_cm_event_get(ch, 50, &ev), PS_ETIMEOUT);
	assert_true(ps_clock_now_ms() - t0 >= 49);
	assert_false(fvt_fd_readable(ch->fd));

	/* An event makes the fd readable; taking the last one makes it quiet again. */
	assert_int_equal(ps_vshim_cm_id_create(ch, NULL, RDMA_PS_TCP, &id), 0);
	assert_int_equal(ps_vshim_cm_resolve_addr(id, NULL, (struct sockaddr *)&d, 10), 0);
	assert_true(fvt_fd_readable(ch->fd));
	ev = fvt_cm_expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_ptr_equal(ev->id, id);
	assert_false(fvt_fd_readable(ch->fd));
	/* An id with an unacknowledged event cannot be destroyed (librdmacm would hang). */
	assert_int_equal(ps_vshim_cm_id_destroy(id), -EBUSY);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(id), 0);
	ps_vshim_cm_channel_destroy(ch);
	assert_int_equal(fake_verbs_live_objects(NULL), 1); /* the misuse above */
	fake_verbs_reset();
}

/* ---- connections ----------------------------------------------------------------------------- */

static void test_connect_accept_private_data(void **state)
{
	struct fvt_pair pr;
	const char hello[] = "hello, server";
	const char reply[] = "welcome, client";
	struct rdma_conn_param cp = {.private_data = hello, .private_data_len = sizeof(hello)};
	struct rdma_cm_event *ev;

	fvt_pair_prepare(&pr, &fvt_def_opts);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, &cp), 0);
	ev = fvt_cm_expect(pr.p.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	assert_ptr_equal(ev->listen_id, pr.listen);
	assert_ptr_not_equal(ev->id, pr.listen);
	assert_ptr_equal(ev->id->context, &pr.p); /* inherited from the listener */
	/* IB CM carries 56 bytes of request private data: what was sent, zero-padded. */
	assert_int_equal(ev->param.conn.private_data_len, 56);
	assert_memory_equal(ev->param.conn.private_data, hello, sizeof(hello));
	assert_int_equal(((const uint8_t *)ev->param.conn.private_data)[55], 0);
	assert_int_equal(ev->param.conn.qp_num, pr.a.id->qp->qp_num);
	pr.p.id = ev->id;
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_src_port(pr.p.id), pr.port);
	assert_int_equal(ps_vshim_cm_dst_port(pr.p.id), ps_vshim_cm_src_port(pr.a.id));
	assert_int_equal(ps_vshim_cm_dst_port(pr.a.id), pr.port);
	fvt_side_resources(&pr.p, &fvt_def_opts, true);

	/* Sending before ESTABLISHED: the active QP is not RTS yet. */
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 4, IBV_SEND_SIGNALED), -EINVAL);

	cp.private_data = reply;
	cp.private_data_len = sizeof(reply);
	assert_int_equal(ps_vshim_cm_accept(pr.p.id, &cp), 0);
	ev = fvt_cm_expect(pr.a.ch, RDMA_CM_EVENT_ESTABLISHED);
	assert_int_equal(ev->param.conn.private_data_len, 196);
	assert_memory_equal(ev->param.conn.private_data, reply, sizeof(reply));
	assert_int_equal(ev->param.conn.qp_num, pr.p.id->qp->qp_num);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	ev = fvt_cm_expect(pr.p.ch, RDMA_CM_EVENT_ESTABLISHED);
	assert_int_equal(ev->param.conn.private_data_len, 0);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_RTS);

	/* Too much private data is refused as librdmacm does. */
	char big[57] = {0};
	cp.private_data = big;
	cp.private_data_len = sizeof(big);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, &cp), -EINVAL);
	fvt_pair_close(&pr);
}

static void test_no_listener_rejected(void **state)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct rdma_cm_event *ev;
	struct sockaddr_in d = fvt_addr4("192.0.2.1", 4999);

	assert_int_equal(ps_vshim_cm_channel_create(&ch), 0);
	assert_int_equal(ps_vshim_cm_id_create(ch, NULL, RDMA_PS_TCP, &id), 0);
	assert_int_equal(ps_vshim_cm_resolve_addr(id, NULL, (struct sockaddr *)&d, 10), 0);
	fvt_cm_expect_ack(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_int_equal(ps_vshim_cm_resolve_route(id, 10), 0);
	fvt_cm_expect_ack(ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	assert_int_equal(ps_vshim_cm_connect(id, NULL), 0);
	ev = fvt_cm_expect(ch, RDMA_CM_EVENT_REJECTED);
	assert_int_equal(ev->status, FAKE_VERBS_REJ_INVALID_SERVICE_ID); /* 8, as rxe gives */
	assert_int_equal(ev->param.conn.private_data_len, 148);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	/* A rejected id cannot connect again. */
	assert_int_equal(ps_vshim_cm_connect(id, NULL), -EINVAL);

	/* An address no device owns: ADDR_ERROR; one no interface has: bind fails. */
	struct rdma_cm_id *id2;
	struct sockaddr_in far = fvt_addr4("10.9.9.9", 1);
	assert_int_equal(ps_vshim_cm_id_create(ch, NULL, RDMA_PS_TCP, &id2), 0);
	assert_int_equal(ps_vshim_cm_bind(id2, (struct sockaddr *)&far), -EADDRNOTAVAIL);
	assert_int_equal(ps_vshim_cm_resolve_addr(id2, NULL, (struct sockaddr *)&far, 10), 0);
	ev = fvt_cm_expect(ch, RDMA_CM_EVENT_ADDR_ERROR);
	assert_int_equal(ev->status, -EHOSTUNREACH);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(id2), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(id), 0);
	ps_vshim_cm_channel_destroy(ch);
}

static void test_reject_and_injected_outcomes(void **state)
{
	struct fvt_pair pr;
	struct rdma_cm_event *ev;
	const char why[] = "full";

	fvt_pair_prepare(&pr, &fvt_def_opts);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, NULL), 0);
	ev = fvt_cm_expect(pr.p.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	pr.p.id = ev->id;
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_reject(pr.p.id, why, sizeof(why)), 0);
	ev = fvt_cm_expect(pr.a.ch, RDMA_CM_EVENT_REJECTED);
	assert_int_equal(ev->status, FAKE_VERBS_REJ_CONSUMER_DEFINED);
	assert_int_equal(ev->param.conn.private_data_len, 148);
	assert_memory_equal(ev->param.conn.private_data, why, sizeof(why));
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.p.id), 0);
	ps_vshim_qp_destroy(pr.a.id);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.a.id), 0);

	/* Injected outcomes of the next connect: rejected (the listener sees nothing), unreachable. */
	struct sockaddr_in d = fvt_addr4("192.0.2.1", pr.port);
	fake_verbs_reject_next_connect();
	assert_int_equal(ps_vshim_cm_id_create(pr.a.ch, NULL, RDMA_PS_TCP, &pr.a.id), 0);
	assert_int_equal(ps_vshim_cm_resolve_addr(pr.a.id, NULL, (struct sockaddr *)&d, 10), 0);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_int_equal(fake_verbs_cm_next_result(FAKE_VERBS_CM_RESOLVE_ROUTE,
						   RDMA_CM_EVENT_ROUTE_ERROR, -ETIMEDOUT),
			 0);
	assert_int_equal(ps_vshim_cm_resolve_route(pr.a.id, 10), 0);
	ev = fvt_cm_expect(pr.a.ch, RDMA_CM_EVENT_ROUTE_ERROR);
	assert_int_equal(ev->status, -ETIMEDOUT);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_resolve_route(pr.a.id, 10), 0);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, NULL), 0);
	ev = fvt_cm_expect(pr.a.ch, RDMA_CM_EVENT_REJECTED);
	assert_int_equal(ev->status, FAKE_VERBS_REJ_CONSUMER_DEFINED);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	fvt_cm_expect_none(pr.p.ch);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.a.id), 0);

	assert_int_equal(fake_verbs_cm_next_result(FAKE_VERBS_CM_CONNECT, RDMA_CM_EVENT_UNREACHABLE,
						   -ETIMEDOUT),
			 0);
	assert_int_equal(ps_vshim_cm_id_create(pr.a.ch, NULL, RDMA_PS_TCP, &pr.a.id), 0);
	assert_int_equal(ps_vshim_cm_resolve_addr(pr.a.id, NULL, (struct sockaddr *)&d, 10), 0);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	assert_int_equal(ps_vshim_cm_resolve_route(pr.a.id, 10), 0);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, NULL), 0);
	ev = fvt_cm_expect(pr.a.ch, RDMA_CM_EVENT_UNREACHABLE);
	assert_int_equal(ev->status, -ETIMEDOUT);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.a.id), 0);
	pr.a.id = pr.p.id = NULL;
	fvt_side_close(&pr.a);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.listen), 0);
	ps_vshim_cm_channel_destroy(pr.a.ch);
	ps_vshim_cm_channel_destroy(pr.p.ch);
}

/* A listener destroyed with a request not taken: the active side is rejected, nothing leaks. */
static void test_listener_destroy_rejects_pending(void **state)
{
	struct fvt_pair pr;

	fvt_pair_prepare(&pr, &fvt_def_opts);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, NULL), 0);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.listen), 0);
	pr.listen = NULL;
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_REJECTED);
	fvt_cm_expect_none(pr.p.ch);
	fvt_side_close(&pr.a);
	ps_vshim_cm_channel_destroy(pr.a.ch);
	ps_vshim_cm_channel_destroy(pr.p.ch);
}

/* ---- teardown, disconnects, peers that vanish ------------------------------------------------ */

static void test_disconnect_flushes_recvs(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_wc wc;
	struct rdma_cm_event *ev;

	o.recvs = 2;
	fvt_pair_open(&pr, &o);
	assert_int_equal(ps_vshim_cm_disconnect(pr.a.id), 0);
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_ERR);
	for (int i = 0; i < 2; i++) {
		wc = fvt_poll_one(pr.a.cq);
		assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
		assert_int_equal(wc.wr_id, 100 + i);
	}
	ev = fvt_cm_expect(pr.p.ch, RDMA_CM_EVENT_DISCONNECTED);
	assert_ptr_equal(ev->id, pr.p.id);
	assert_int_equal(ps_vshim_cm_event_ack(ev), 0);
	/* The active side's DISCONNECTED waits for the peer's answer, as on rxe. */
	fvt_cm_expect_none(pr.a.ch);
	/* Meanwhile the passive QP still works but nobody answers it. */
	assert_int_equal(fvt_post_send(&pr.p, 5, 0, 8, IBV_SEND_SIGNALED), 0);
	assert_int_equal(fvt_poll_one(pr.p.cq).status, IBV_WC_RETRY_EXC_ERR);
	assert_int_equal(ps_vshim_cm_disconnect(pr.p.id), 0);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_DISCONNECTED);
	for (int i = 0; i < 2; i++)
		assert_int_equal(fvt_poll_one(pr.p.cq).status, IBV_WC_WR_FLUSH_ERR);
	assert_int_equal(ps_vshim_cm_disconnect(pr.p.id), 0); /* again: fine */
	fvt_cm_expect_none(pr.p.ch);
	fvt_pair_close(&pr);
}

static void test_destroy_peer_disconnects(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;

	o.recvs = 1;
	fvt_pair_open(&pr, &o);
	/* The passive side goes away without disconnecting: the active side hears of it. */
	struct fvt_side p = pr.p;
	fvt_side_close(&p);
	pr.p = (struct fvt_side){.ch = p.ch};
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_DISCONNECTED);
	assert_int_equal(fvt_post_send(&pr.a, 1, 0, 8, IBV_SEND_SIGNALED), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_RETRY_EXC_ERR);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_WR_FLUSH_ERR);
	assert_int_equal(ps_vshim_cm_disconnect(pr.a.id), 0);
	fvt_cm_expect_none(pr.a.ch);
	fvt_side_close(&pr.a);
	assert_int_equal(ps_vshim_cm_id_destroy(pr.listen), 0);
	ps_vshim_cm_channel_destroy(pr.a.ch);
	ps_vshim_cm_channel_destroy(pr.p.ch);
}

static void test_kill_peer(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_wc wc;

	o.recvs = 2;
	fvt_pair_open(&pr, &o);
	fake_verbs_hold_sends(true);
	for (int i = 0; i < 3; i++)
		assert_int_equal(fvt_post_send(&pr.a, 10 + i, 0, 8, IBV_SEND_SIGNALED), 0);
	fvt_poll_none(pr.a.cq);
	assert_int_equal(fake_verbs_kill_peer(pr.a.id), 0);
	/* The first in flight times out, the rest flush, then the receives. */
	wc = fvt_poll_one(pr.a.cq);
	assert_int_equal(wc.wr_id, 10);
	assert_int_equal(wc.status, IBV_WC_RETRY_EXC_ERR);
	for (int i = 1; i < 3; i++) {
		wc = fvt_poll_one(pr.a.cq);
		assert_int_equal(wc.wr_id, 10 + i);
		assert_int_equal(wc.status, IBV_WC_WR_FLUSH_ERR);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_WR_FLUSH_ERR);
	fvt_cm_expect_ack(pr.a.ch, RDMA_CM_EVENT_DISCONNECTED);
	fake_verbs_hold_sends(false);
	assert_int_equal(fvt_post_send(&pr.a, 20, 0, 8, IBV_SEND_SIGNALED), 0);
	assert_int_equal(fvt_poll_one(pr.a.cq).status, IBV_WC_WR_FLUSH_ERR);
	/* The dead side heard nothing and received nothing. */
	fvt_cm_expect_none(pr.p.ch);
	fvt_poll_none(pr.p.cq);
	assert_int_equal(fake_verbs_kill_peer(pr.a.id), -ENOTCONN);
	assert_int_equal(ps_vshim_cm_disconnect(pr.a.id), 0);
	fvt_pair_close(&pr);
}

/* ---- injections ------------------------------------------------------------------------------ */

static void test_fail_next(void **state)
{
	struct fvt_pair pr;
	struct fvt_pair_opts o = fvt_def_opts;
	struct ibv_mr *mr;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_send_wr *bad = NULL;

	o.recvs = 2;
	fvt_pair_open(&pr, &o);
	fake_verbs_fail_next(FAKE_VERBS_MR_REG, -ENOMEM, 2);
	assert_int_equal(ps_vshim_mr_reg(pr.a.pd, pr.a.buf, 64, IBV_ACCESS_LOCAL_WRITE, &mr), 0);
	assert_int_equal(ps_vshim_mr_dereg(mr), 0);
	assert_int_equal(ps_vshim_mr_reg(pr.a.pd, pr.a.buf, 64, IBV_ACCESS_LOCAL_WRITE, &mr),
			 -ENOMEM);
	fake_verbs_fail_next(FAKE_VERBS_PD_ALLOC, -ENOMEM, 1);
	assert_int_equal(ps_vshim_pd_alloc(pr.a.id->verbs, &pd), -ENOMEM);
	fake_verbs_fail_next(FAKE_VERBS_CQ_CREATE, -EINVAL, 1);
	assert_int_equal(ps_vshim_cq_create(pr.a.id->verbs, 4, NULL, NULL, 0, &cq), -EINVAL);
	fake_verbs_fail_next(FAKE_VERBS_CQ_POLL, -EIO, 1);
	assert_int_equal(ps_vshim_cq_poll(pr.a.cq, 1, &(struct ibv_wc){0}), -EIO);

	/* post_send: nothing of the chain is posted, bad_wr is its head. */
	struct ibv_sge s = fvt_sge(&pr.a, 0, 8);
	struct ibv_send_wr w2 = {.wr_id = 2, .sg_list = &s, .num_sge = 1, .opcode = IBV_WR_SEND};
	struct ibv_send_wr w1 = {.wr_id = 1,
				 .next = &w2,
				 .sg_list = &s,
				 .num_sge = 1,
				 .opcode = IBV_WR_SEND,
				 .send_flags = IBV_SEND_SIGNALED};
	fake_verbs_fail_next(FAKE_VERBS_POST_SEND, -ENOMEM, 1);
	assert_int_equal(ps_vshim_post_send(pr.a.id->qp, &w1, &bad), -ENOMEM);
	assert_ptr_equal(bad, &w1);
	assert_int_equal(fake_verbs_qp_outstanding(pr.a.id->qp), 0);
	fake_verbs_fail_next(FAKE_VERBS_POST_RECV, -EINVAL, 1);
	assert_int_equal(fvt_post_recv(&pr.a, 1, 0, 8), -EINVAL);
	fake_verbs_fail_next(FAKE_VERBS_CM_DISCONNECT, -EIO, 1);
	assert_int_equal(ps_vshim_cm_disconnect(pr.a.id), -EIO);
	assert_int_equal(pr.a.id->qp->state, IBV_QPS_RTS);
	fake_verbs_fail_next(FAKE_VERBS_CM_EVENT_GET, -EIO, 1);
	struct rdma_cm_event *ev;
	assert_int_equal(ps_vshim_cm_event_get(pr.a.ch, 0, &ev), -EIO);
	/* A cancelled injection does nothing. */
	fake_verbs_fail_next(FAKE_VERBS_CQ_POLL, -EIO, 1);
	fake_verbs_fail_next(FAKE_VERBS_CQ_POLL, 0, 0);
	assert_int_equal(ps_vshim_cq_poll(pr.a.cq, 1, &(struct ibv_wc){0}), 0);
	/* A destroy that fails leaves the object in place. */
	fake_verbs_fail_next(FAKE_VERBS_MR_DEREG, -EIO, 1);
	assert_int_equal(ps_vshim_mr_dereg(pr.a.mr), -EIO);
	assert_string_equal(fake_verbs_call_name(FAKE_VERBS_MR_DEREG), "ps_vshim_mr_dereg");
	fvt_pair_close(&pr);

	/* A connect that fails synchronously; an accept that fails. */
	fake_verbs_reset();
	fvt_pair_prepare(&pr, &o);
	fake_verbs_fail_next(FAKE_VERBS_CM_CONNECT, -ENOMEM, 1);
	assert_int_equal(ps_vshim_cm_connect(pr.a.id, NULL), -ENOMEM);
	fvt_cm_expect_none(pr.p.ch);
	fvt_pair_connect(&pr, &o);
	fvt_pair_close(&pr);
}

static void test_misuse_counted(void **state)
{
	struct fvt_pair pr;
	struct ibv_wc wc;
	struct ibv_send_wr wr = {.opcode = IBV_WR_SEND}, *bad;

	fvt_pair_open(&pr, &fvt_def_opts);
	/* The inline functions of verbs.h are forbidden: the fake traps them. */
	assert_int_not_equal(ibv_post_send(pr.a.id->qp, &wr, &bad), 0);
	assert_int_equal(ibv_poll_cq(pr.a.cq, 1, &wc), -1);
	assert_non_null(strstr(fake_verbs_last_misuse(), "ibv_poll_cq"));
	fvt_pair_close(&pr);
	struct fake_verbs_counts c;
	assert_int_equal(fake_verbs_live_objects(&c), 2);
	assert_int_equal(c.misuse, 2);

	/* reset() frees what a test leaked and says how much. */
	fvt_pair_open(&pr, &fvt_def_opts);
	free(pr.a.buf);
	free(pr.p.buf);
	assert_true(fake_verbs_reset() > 0);
	assert_int_equal(fake_verbs_live_objects(NULL), 0);
}

static void test_memlock(void **state)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_mr *m1, *m2;
	static uint8_t buf[8192];
	int n;

	fake_verbs_set_memlock(6000);
	assert_int_equal(ps_vshim_device_list_get(&list, &n), 0);
	assert_int_equal(ps_vshim_device_open(list[0], &ctx), 0);
	assert_int_equal(ps_vshim_pd_alloc(ctx, &pd), 0);
	assert_int_equal(ps_vshim_mr_reg(pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE, &m1), 0);
	assert_int_equal(ps_vshim_mr_reg(pd, buf + 4096, 4096, IBV_ACCESS_LOCAL_WRITE, &m2),
			 -ENOMEM);
	assert_int_equal(ps_vshim_mr_dereg(m1), 0);
	assert_int_equal(ps_vshim_mr_reg(pd, buf + 4096, 4096, IBV_ACCESS_LOCAL_WRITE, &m2), 0);
	assert_int_equal(ps_vshim_mr_dereg(m2), 0);
	assert_int_equal(ps_vshim_pd_dealloc(pd), 0);
	assert_int_equal(ps_vshim_device_close(ctx), 0);
	ps_vshim_device_list_free(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_devices, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_waits_time_out, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_connect_accept_private_data, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_no_listener_rejected, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_reject_and_injected_outcomes, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_listener_destroy_rejects_pending, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_flushes_recvs, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_peer_disconnects, fvt_setup,
						fvt_teardown),
		cmocka_unit_test_setup_teardown(test_kill_peer, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_fail_next, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_misuse_counted, fvt_setup, fvt_teardown),
		cmocka_unit_test_setup_teardown(test_memlock, fvt_setup, fvt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
