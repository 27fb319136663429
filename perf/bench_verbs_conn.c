/*
 * psplus-bench-verbs: set-up and teardown (bench_verbs.h). One process, one RC connection to
 * itself over rdma_cm on the device that owns -d: a listener and a connecting id on one event
 * channel, driven by one loop; the accepted id writes, the connecting id owns the destination.
 * Every step that fails says what it was doing; bv_teardown() undoes whatever was built.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/mem.h"
#include "perf/bench_verbs.h"

#define RX_LEN		   64u	/* --target imm: the receive buffer (trailers are 8 bytes) */
#define RESOLVE_TIMEOUT_MS 5000 /* local addresses resolve at once; this bounds a broken set-up */
#define DRAIN_TIMEOUT_MS   5000 /* the disconnect handshake and the last receives */

static int failed(const char *what, int rc)
{
	fprintf(stderr, BV_PROG ": %s: %s\n", what, ps_strerror(rc));
	return rc;
}

/*
 * The target's thread: busy-polls the target's CQ as psplus-bench-tp's receiving process polls
 * its loop, and puts back (one doorbell per batch) the receives that immediates consumed.
 */
static void *target_main(void *arg)
{
	struct bv *b = arg;
	struct ibv_wc wc[BV_POLL_BATCH];
	int n, rc;

	while (!atomic_load(&b->rx_stop)) {
		n = ps_vshim_cq_poll(b->cli_cq, BV_POLL_BATCH, wc);
		for (int i = 0; i < n; i++)
			if (wc[i].status != IBV_WC_SUCCESS)
				atomic_store(&b->rx_err, -EIO);
		if (n < 0)
			atomic_store(&b->rx_err, n);
		if (n <= 0)
			continue;
		b->rx_wr[n - 1].next = NULL;
		rc = ps_vshim_post_recv(b->cli_id->qp, b->rx_wr, NULL);
		b->rx_wr[n - 1].next = n < BV_POLL_BATCH ? &b->rx_wr[n] : NULL;
		if (rc)
			atomic_store(&b->rx_err, rc);
		atomic_fetch_add(&b->rx_seen, (uint_fast64_t)n);
	}
	return NULL;
}

/* Allocate (huge pages if any, faulted in), fill and register the table, as psplus-bench-tp. */
static int memory_setup(struct bv *b, uint64_t seed)
{
	uint64_t t0 = ps_clock_now_ns(), t1;
	char err[512];
	int rc;

	if (ps_mem_memlock_ensure(b->o->table_size + BV_DST_MAX + RX_LEN, err, sizeof(err)))
		fprintf(stderr, BV_PROG ": %s\n", err);
	rc = ps_mem_alloc(b->o->table_size, -1, PS_MEM_HUGEPAGES | PS_MEM_POPULATE, &b->table);
	if (rc)
		return failed("allocating the table", rc);
	bench_fill_index(b->table.addr, b->table_len, seed);
	t1 = ps_clock_now_ns();
	rc = ps_vshim_mr_reg(b->pd, b->table.addr, b->table_len, IBV_ACCESS_LOCAL_WRITE,
			     &b->table_mr);
	if (rc)
		return failed("registering the table", rc);
	printf(" Table           : %" PRIu64 " MiB (%s pages), filled in %.2f s, registered in "
	       "%.2f s\n",
	       b->table_len >> 20, b->table.huge ? "huge" : "4 KiB", (double)(t1 - t0) / 1e9,
	       (double)(ps_clock_now_ns() - t1) / 1e9);
	rc = ps_mem_alloc((size_t)b->nslots * b->stride + RX_LEN, -1, PS_MEM_POPULATE, &b->dst);
	if (!rc)
		rc = ps_vshim_mr_reg(b->pd, b->dst.addr, b->dst.len,
				     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, &b->dst_mr);
	if (rc)
		return failed("allocating and registering the destination", rc);
	b->rx_sge = (struct ibv_sge){.addr = (uintptr_t)b->dst.addr + b->nslots * b->stride,
				     .length = RX_LEN,
				     .lkey = b->dst_mr->lkey};
	for (int i = 0; i < BV_POLL_BATCH; i++)
		b->rx_wr[i] = (struct ibv_recv_wr){.next = i + 1 < BV_POLL_BATCH ? &b->rx_wr[i + 1]
										 : NULL,
						   .sg_list = &b->rx_sge,
						   .num_sge = 1};
	return 0;
}

/* The device behind the listen address: its limits decide the SGEs per WR and the queues. */
static int device_setup(struct bv *b)
{
	const struct bv_opts *o = b->o;
	struct ibv_context *ctx = b->listen_id->verbs;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	uint32_t gather_wrs;
	int rc;

	b->port = b->listen_id->port_num;
	snprintf(b->dev, sizeof(b->dev), "%s", ps_vshim_device_name(ctx->device));
	rc = ps_vshim_device_query(ctx, &da);
	if (!rc)
		rc = ps_vshim_port_query(ctx, b->port, &pa);
	if (rc)
		return failed("querying the device", rc);
	b->mtu = ps_vshim_mtu_bytes(pa.active_mtu);
	b->dev_max_sge = da.max_sge > 0 ? (uint32_t)da.max_sge : 1;
	b->max_sge = b->dev_max_sge < BV_SGE_CAP ? b->dev_max_sge : BV_SGE_CAP;
	if (o->max_sge && o->max_sge < b->max_sge)
		b->max_sge = o->max_sge;
	gather_wrs = (o->rows + b->max_sge - 1) / b->max_sge + 1; /* + the trailer */
	b->send_wr = o->depth * gather_wrs;
	/* Receives outlive their operation's completion until the thread reposts them. */
	b->recv_wr =
		o->target == BV_TGT_IMM ? (2 * o->depth / BV_POLL_BATCH + 2) * BV_POLL_BATCH : 1;
	if (b->send_wr > (uint32_t)da.max_qp_wr || b->recv_wr + 1 > (uint32_t)da.max_cqe) {
		fprintf(stderr,
			BV_PROG ": option -q/--tx-depth %u: %u work requests exceed %s's "
				"max_qp_wr %d or max_cqe %d\n",
			o->depth, b->send_wr, b->dev, da.max_qp_wr, da.max_cqe);
		return PS_EBAD_OPTION;
	}
	b->table_len = o->table_size; /* rows are drawn from the size asked for */
	b->size = (uint64_t)o->rows * o->row_size;
	b->stride = (b->size + 63) & ~63ull;
	b->nslots =
		BV_DST_MAX / b->stride < o->depth ? (uint32_t)(BV_DST_MAX / b->stride) : o->depth;
	b->wrs = calloc(gather_wrs, sizeof(*b->wrs));
	b->sges = calloc(o->rows + 1, sizeof(*b->sges));
	if (!b->wrs || !b->sges)
		return failed("allocating the work requests", -ENOMEM);
	rc = ps_vshim_pd_alloc(ctx, &b->pd);
	if (!rc)
		rc = ps_vshim_cq_create(ctx, (int)o->depth + 1, b, NULL, 0, &b->srv_cq);
	if (!rc)
		rc = ps_vshim_cq_create(ctx, (int)b->recv_wr + 1, b, NULL, 0, &b->cli_cq);
	return rc ? failed("creating the PD and CQs", rc) : 0;
}

/* The RC QP of @id: rdma_cm gives both ids the listener's device, so the one PD serves both. */
static int qp_create(struct bv *b, struct rdma_cm_id *id, bool writer)
{
	struct ibv_qp_init_attr a = {.send_cq = writer ? b->srv_cq : b->cli_cq,
				     .recv_cq = writer ? b->srv_cq : b->cli_cq,
				     .cap = {.max_send_wr = writer ? b->send_wr : 1,
					     .max_recv_wr = writer ? 1 : b->recv_wr,
					     .max_send_sge = writer ? b->max_sge : 1,
					     .max_recv_sge = 1},
				     .qp_type = IBV_QPT_RC};
	int rc;

	if (id->verbs != b->pd->context) {
		fprintf(stderr, BV_PROG ": the connection is not on %s's context\n", b->dev);
		return -EXDEV;
	}
	rc = ps_vshim_qp_create(id, b->pd, &a);
	if (rc)
		return failed("creating a QP", rc);
	/* The target's receives go up before connecting: the first immediate may come at once. */
	for (uint32_t k = 0; !rc && !writer && b->o->target == BV_TGT_IMM && k < b->recv_wr;
	     k += BV_POLL_BATCH)
		rc = ps_vshim_post_recv(id->qp, b->rx_wr, NULL);
	return rc ? failed("posting receives", rc) : 0;
}

/* One event of the connection set-up; both ids' events arrive on the one channel. */
static int cm_step(struct bv *b, struct rdma_cm_event *ev, struct rdma_cm_id **stray)
{
	struct rdma_conn_param param = {.retry_count = 7, .rnr_retry_count = 7};
	int rc;

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		rc = ps_vshim_cm_resolve_route(b->cli_id, RESOLVE_TIMEOUT_MS);
		return rc ? failed("resolving the route", rc) : 0;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		rc = qp_create(b, b->cli_id, false);
		if (!rc && (rc = ps_vshim_cm_connect(b->cli_id, &param)))
			failed("connecting", rc);
		return rc;
	case RDMA_CM_EVENT_CONNECT_REQUEST:
		if (b->srv_id) { /* not ours (the port is an ephemeral one): refuse, destroy */
			ps_vshim_cm_reject(ev->id, NULL, 0);
			*stray = ev->id;
			return 0;
		}
		b->srv_id = ev->id;
		rc = qp_create(b, b->srv_id, true);
		if (!rc && (rc = ps_vshim_cm_accept(b->srv_id, &param)))
			failed("accepting", rc);
		return rc;
	case RDMA_CM_EVENT_ESTABLISHED:
		b->cli_up |= ev->id == b->cli_id;
		b->srv_up |= ev->id == b->srv_id;
		return 0;
	default:
		fprintf(stderr, BV_PROG ": %s (status %d) while connecting\n",
			ps_vshim_cm_event_str(ev->event), ev->status);
		return -ECONNABORTED;
	}
}

/* Listen on port 0 of @addr (the kernel's choice never collides), connect to it, accept. */
static int connect_self(struct bv *b, struct sockaddr_storage *addr)
{
	uint64_t deadline = ps_clock_deadline_ms(b->o->timeout_ms);
	uint16_t port;
	struct rdma_cm_event *ev;
	int rc;

	rc = ps_vshim_cm_listen(b->listen_id, 1);
	if (rc)
		return failed("listening", rc);
	port = htons(ps_vshim_cm_src_port(b->listen_id));
	if (addr->ss_family == AF_INET)
		((struct sockaddr_in *)addr)->sin_port = port;
	else
		((struct sockaddr_in6 *)addr)->sin6_port = port;
	rc = ps_vshim_cm_id_create(b->cm_ch, b, RDMA_PS_TCP, &b->cli_id);
	if (!rc)
		rc = ps_vshim_cm_resolve_addr(b->cli_id, NULL, (struct sockaddr *)addr,
					      RESOLVE_TIMEOUT_MS);
	if (rc)
		return failed("resolving the address", rc);
	while (!(b->cli_up && b->srv_up)) {
		struct rdma_cm_id *stray = NULL;

		rc = ps_vshim_cm_event_get(b->cm_ch, ps_clock_remaining_ms(deadline), &ev);
		if (rc)
			return failed(rc == PS_ETIMEOUT ? "connecting within --timeout"
							: "waiting for a cm event",
				      rc);
		rc = cm_step(b, ev, &stray);
		ps_vshim_cm_event_ack(ev);
		ps_vshim_cm_id_destroy(stray);
		if (rc)
			return rc;
	}
	if (b->o->target != BV_TGT_PASSIVE) {
		rc = -pthread_create(&b->rx, NULL, target_main, b);
		b->rx_started = !rc;
	}
	return rc ? failed("starting the target's thread", rc) : 0;
}

int bv_setup(struct bv *b, const struct bv_opts *o, uint64_t seed)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res;
	struct sockaddr_storage addr = {0};
	struct bv_shape sg, sc;
	int rc;

	if (getaddrinfo(o->dev_addr, NULL, &hints, &res)) {
		fprintf(stderr, BV_PROG ": option -d/--dev: '%s' is not a numeric address\n",
			o->dev_addr);
		return PS_EBAD_OPTION;
	}
	memcpy(&addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	rc = ps_vshim_cm_channel_create(&b->cm_ch);
	if (!rc)
		rc = ps_vshim_cm_id_create(b->cm_ch, b, RDMA_PS_TCP, &b->listen_id);
	if (rc)
		return failed("creating the cm channel and id", rc);
	rc = ps_vshim_cm_bind(b->listen_id, (struct sockaddr *)&addr);
	if (rc)
		return failed("binding the address of -d", rc);
	if (!b->listen_id->verbs) {
		fprintf(stderr, BV_PROG ": %s is not the address of an RDMA device\n", o->dev_addr);
		return PS_ENO_DEVICE;
	}
	rc = device_setup(b);
	if (rc)
		return rc;
	sg = bv_shape_make(b, true);
	sc = bv_shape_make(b, false);
	bv_print_banner(b, &sg, &sc);
	rc = memory_setup(b, seed);
	return rc ? rc : connect_self(b, &addr);
}

/* --target imm: every operation's immediate reached the target (bounded wait). */
bool bv_target_check(struct bv *b)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);

	if (b->o->target != BV_TGT_IMM)
		return true;
	while (atomic_load(&b->rx_seen) < b->ops_total && !atomic_load(&b->rx_err) &&
	       ps_clock_remaining_ms(deadline))
		;
	printf(" target          : %" PRIu64 " receive completions for %" PRIu64 " operations%s\n",
	       (uint64_t)atomic_load(&b->rx_seen), b->ops_total,
	       atomic_load(&b->rx_err) ? ", a receive FAILED" : "");
	return atomic_load(&b->rx_seen) == b->ops_total && !atomic_load(&b->rx_err);
}

/*
 * Stop the target's thread, disconnect both ends and wait (bounded) for their DISCONNECTED
 * events, acknowledging them, so that destroying the ids never waits on an event in flight.
 */
static void disconnect_both(struct bv *b)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);
	int pending = b->cli_up + b->srv_up;
	struct rdma_cm_event *ev;

	atomic_store(&b->rx_stop, true);
	if (b->rx_started)
		pthread_join(b->rx, NULL);
	if (b->srv_up)
		ps_vshim_cm_disconnect(b->srv_id);
	if (b->cli_up)
		ps_vshim_cm_disconnect(b->cli_id);
	while (pending > 0 &&
	       !ps_vshim_cm_event_get(b->cm_ch, ps_clock_remaining_ms(deadline), &ev)) {
		pending -= ev->event == RDMA_CM_EVENT_DISCONNECTED;
		ps_vshim_cm_event_ack(ev);
	}
	if (pending > 0)
		fprintf(stderr, BV_PROG ": warning: %d DISCONNECTED event(s) missing\n", pending);
}

/* Everything in the reverse order of creation; fine on a partly built control block. */
void bv_teardown(struct bv *b)
{
	if (b->cm_ch)
		disconnect_both(b);
	if (b->srv_id)
		ps_vshim_qp_destroy(b->srv_id);
	if (b->cli_id)
		ps_vshim_qp_destroy(b->cli_id);
	ps_vshim_mr_dereg(b->dst_mr);
	ps_vshim_mr_dereg(b->table_mr);
	ps_mem_free(&b->dst);
	ps_mem_free(&b->table);
	ps_vshim_cq_destroy(b->cli_cq);
	ps_vshim_cq_destroy(b->srv_cq);
	ps_vshim_pd_dealloc(b->pd);
	ps_vshim_cm_id_destroy(b->srv_id);
	ps_vshim_cm_id_destroy(b->cli_id);
	ps_vshim_cm_id_destroy(b->listen_id);
	ps_vshim_cm_channel_destroy(b->cm_ch);
	free(b->sges);
	free(b->wrs);
}
