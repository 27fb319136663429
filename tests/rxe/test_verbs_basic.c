/*
 * test_verbs_basic: real verbs through the verbs shim, on one RDMA device (soft-RoCE in the rxe
 * guest). A server thread listens on the address of the device under test; a client thread
 * connects to it with rdma_cm. Both ends then run on that device (rdma_cm binds both ends of a
 * connection to the device owning the destination address, see /work/shared/rxe-vm.md), so the
 * device's hw_counters count this test's packets.
 *
 * What it checks, with values:
 *  - the listen address resolves to an RDMA device whose port is ACTIVE; its limits and the GID
 *    that carries the address;
 *  - the shim's waits (cm events, CQ events) end with PS_ETIMEOUT on an idle channel, on time;
 *  - private data in both directions of the connection handshake;
 *  - SEND/RECV of 4 KiB with a known pattern (byte_len and bytes);
 *  - RDMA WRITE of 64 KiB then RDMA WRITE_WITH_IMM of another 64 KiB into the server's
 *    registered buffer, posted as one chain with one doorbell; the immediate value and byte_len of
 *    the receive completion; every byte of both blocks, and a guard area that must stay untouched;
 *  - a SEND back from the server carrying its verdict;
 *  - teardown: a spare receive on each side completes with IBV_WC_WR_FLUSH_ERR (the drain);
 *  - sent_pkts/rcvd_pkts of the device moved by at least the packets the payload needs.
 *
 * Usage: test_verbs_basic [LISTEN_ADDR]; the default is $PS_RXE1_ADDR, then $PS_RXE0_ADDR, then
 * 192.0.2.2 (rxe1 in the guest). Exit status: 0 pass, 1 fail, 77 skipped (no RDMA device; only
 * outside the rxe guest: inside it, a missing device is a failure).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rxe_test.h"
#include "transport/rdma/verbs_shim.h"

/* Local addresses resolve at once; this bounds a broken set-up (cm waits: rxe_test.h). */
#define RESOLVE_TIMEOUT_MS 5000
/* Flushes follow a disconnect at once on a healthy device; this only bounds a broken one. */
#define DRAIN_TIMEOUT_MS 10000
/* The timeout of the waits on idle channels that check the shim's own timeouts. */
#define IDLE_WAIT_MS 100

#define MSG_LEN	    4096u
#define WRITE_LEN   (64u * 1024u)
#define IMM_VALUE   0x50530001u /* "PS" + 1: not a value memory holds by chance */
#define PROTO_MAGIC 0x50535642u /* "PSVB" */

/*
 * One registered buffer per endpoint. The server's areas are targets (receives, RDMA WRITEs), the
 * client's are sources; the layout is shared so that offsets mean the same on both sides.
 */
#define OFF_MSG	   0u			       /* server: SEND target; client: SEND source */
#define OFF_DATA   (OFF_MSG + MSG_LEN)	       /* two WRITE_LEN blocks: WRITE, WRITE_WITH_IMM */
#define OFF_GUARD  (OFF_DATA + 2u * WRITE_LEN) /* server: must stay untouched */
#define OFF_ACK	   (OFF_GUARD + 4096u)	       /* server: verdict SEND source; client: target */
#define OFF_SPARE  (OFF_ACK + 4096u)	       /* a receive nobody consumes: flushed at teardown */
#define BUF_LEN	   (OFF_SPARE + 4096u)
#define GUARD_BYTE 0xee

/* wr_id tags, so that each completion is matched to the request it completes. */
enum wr_tag {
	WR_MSG = 1,   /* SEND (client) / its RECV (server) */
	WR_WRITE,     /* RDMA WRITE, block 0 */
	WR_WRITE_IMM, /* RDMA WRITE_WITH_IMM, block 1 */
	WR_IMM_RECV,  /* server: the RECV that WRITE_WITH_IMM consumes */
	WR_ACK,	      /* server's verdict SEND / the client's RECV for it */
	WR_SPARE,     /* never consumed; completes with a flush at teardown */
};

/* Connect private data (client to server). Big-endian on the wire. */
struct wire_hello {
	uint32_t magic;
	uint32_t version;
};
_Static_assert(sizeof(struct wire_hello) == 8, "wire_hello is 8 bytes on the wire");

/* Accept private data (server to client): where the client may RDMA WRITE. Big-endian. */
struct wire_target {
	uint32_t magic;
	uint32_t rkey;
	uint64_t addr;
	uint32_t len;
	uint32_t reserved;
};
_Static_assert(sizeof(struct wire_target) == 24, "wire_target is 24 bytes on the wire");

/* One side of the connection and everything it owns; torn down by ep_teardown(). */
struct endpoint {
	struct rdma_event_channel *cm_ch; /* cm events of this side's ids */
	struct rdma_cm_id *listen_id;	  /* server: the listener; its children report on cm_ch */
	struct rdma_cm_id *id;		  /* the connection's id; its QP is id->qp */
	struct ibv_pd *pd;		  /* on id->verbs */
	struct rxe_cq cq; /* completions of id->qp; server: with a channel; client: busy-polled */
	uint8_t *buf;	  /* BUF_LEN, page-aligned, registered as mr */
	struct ibv_mr *mr;
	bool connected;	      /* ESTABLISHED seen, so teardown must disconnect */
	bool peer_gone;	      /* DISCONNECTED seen */
	struct rxe_check chk; /* role and failed checks */
	/* server only */
	unsigned int mtu; /* active MTU of the port, bytes */
	/* client only */
	struct sockaddr_storage dst; /* the server's address and port */
	char dev_name[64];	     /* the device rdma_cm chose for the client */
};

/* Pattern seeds: each block has its own, so a block landing in the wrong place shows. */
enum { SEED_MSG = 1, SEED_WRITE = 2, SEED_WRITE_IMM = 3 };

/* ---- set-up and teardown of one endpoint ----------------------------------------------------- */

/*
 * PD, CQ (with a completion channel if @use_comp_ch), registered buffer and RC QP on the device
 * rdma_cm chose for ep->id. Partial results are left for ep_teardown().
 */
static int ep_resources_create(struct endpoint *ep, bool use_comp_ch, int access)
{
	struct ibv_context *ctx = ep->id->verbs;
	struct ibv_qp_init_attr qpa;
	int rc;

	rc = ps_vshim_pd_alloc(ctx, &ep->pd);
	if (rc)
		return rxe_failed(&ep->chk, "alloc PD", rc);
	if (use_comp_ch) {
		rc = ps_vshim_comp_channel_create(ctx, &ep->cq.ch);
		if (rc)
			return rxe_failed(&ep->chk, "create completion channel", rc);
	}
	rc = ps_vshim_cq_create(ctx, 32, ep, ep->cq.ch, 0, &ep->cq.cq);
	if (rc)
		return rxe_failed(&ep->chk, "create CQ", rc);

	/*
	 * Page-aligned: registration pins whole pages, so an unaligned buffer would pin (and expose
	 * to the device) its neighbours on the first and last page too.
	 */
	rc = posix_memalign((void **)&ep->buf, 4096, BUF_LEN);
	if (rc) {
		ep->buf = NULL;
		return rxe_failed(&ep->chk, "allocate the buffer", -rc);
	}
	memset(ep->buf, 0, BUF_LEN);
	rc = ps_vshim_mr_reg(ep->pd, ep->buf, BUF_LEN, access, &ep->mr);
	if (rc) {
		if (rc == -ENOMEM || rc == -EPERM)
			rxe_info(&ep->chk, "hint: the memlock limit (ulimit -l) may be too low");
		return rxe_failed(&ep->chk, "register memory", rc);
	}

	memset(&qpa, 0, sizeof(qpa));
	qpa.qp_type = IBV_QPT_RC;
	qpa.send_cq = ep->cq.cq;
	qpa.recv_cq = ep->cq.cq;
	qpa.cap.max_send_wr = 8;
	qpa.cap.max_recv_wr = 8;
	qpa.cap.max_send_sge = 1;
	qpa.cap.max_recv_sge = 1;
	rc = ps_vshim_qp_create(ep->id, ep->pd, &qpa);
	if (rc)
		return rxe_failed(&ep->chk, "create QP", rc);
	rxe_check(&ep->chk, qpa.cap.max_send_wr >= 8 && qpa.cap.max_recv_wr >= 8,
		  "QP %u created: max_send_wr %u, max_recv_wr %u, max_inline_data %u",
		  ep->id->qp->qp_num, qpa.cap.max_send_wr, qpa.cap.max_recv_wr,
		  qpa.cap.max_inline_data);
	return 0;
}

static struct ibv_sge sge_of(struct endpoint *ep, uint32_t off, uint32_t len)
{
	return (struct ibv_sge){
		.addr = (uintptr_t)ep->buf + off, .length = len, .lkey = ep->mr->lkey};
}

/*
 * Disconnect and drain: after rdma_disconnect the QP is in the error state and every receive
 * still posted (the spare) completes with IBV_WC_WR_FLUSH_ERR. That flush is expected; any other
 * status here is a failure.
 */
static void ep_disconnect_drain(struct endpoint *ep)
{
	uint64_t deadline = ps_clock_deadline_ms(DRAIN_TIMEOUT_MS);
	struct ibv_wc wc;
	int flushed = 0, rc;

	rc = ps_vshim_cm_disconnect(ep->id);
	if (rc)
		rxe_failed(&ep->chk, "disconnect", rc);
	if (!ep->peer_gone) {
		if (rxe_cm_expect_ack(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_DISCONNECTED) == 0)
			ep->peer_gone = true;
	}
	while (flushed < 1) {
		rc = rxe_cq_next(&ep->cq, &wc, deadline);
		if (rc) {
			rxe_failed(&ep->chk, "draining the CQ", rc);
			break;
		}
		if (wc.status == IBV_WC_WR_FLUSH_ERR) {
			flushed += wc.wr_id == WR_SPARE;
			continue;
		}
		rxe_check(&ep->chk, false, "drain: wr_id %" PRIu64 " completed with %s", wc.wr_id,
			  ps_vshim_wc_status_str(wc.status));
	}
	if (flushed)
		rxe_check(&ep->chk, true,
			  "drain: the spare receive completed with IBV_WC_WR_FLUSH_ERR");
}

/* Destroy whatever @ep holds, in the reverse order of creation; fine on a partial endpoint. */
static void ep_teardown(struct endpoint *ep)
{
	int rc;

	if (ep->connected && ep->id && ep->id->qp)
		ep_disconnect_drain(ep);
	if (ep->id)
		ps_vshim_qp_destroy(ep->id);
	rc = ps_vshim_mr_dereg(ep->mr);
	if (rc)
		rxe_failed(&ep->chk, "deregister memory", rc);
	free(ep->buf);
	rc = ps_vshim_cq_destroy(ep->cq.cq);
	if (rc)
		rxe_failed(&ep->chk, "destroy CQ", rc);
	rc = ps_vshim_comp_channel_destroy(ep->cq.ch);
	if (rc)
		rxe_failed(&ep->chk, "destroy completion channel", rc);
	rc = ps_vshim_pd_dealloc(ep->pd);
	if (rc)
		rxe_failed(&ep->chk, "dealloc PD", rc);
	rc = ps_vshim_cm_id_destroy(ep->id);
	if (rc)
		rxe_failed(&ep->chk, "destroy cm id", rc);
	rc = ps_vshim_cm_id_destroy(ep->listen_id);
	if (rc)
		rxe_failed(&ep->chk, "destroy listen id", rc);
	ps_vshim_cm_channel_destroy(ep->cm_ch);
}

/* ---- client ---------------------------------------------------------------------------------- */

static int client_connect(struct endpoint *ep, struct wire_target *target)
{
	struct wire_hello hello = {.magic = htobe32(PROTO_MAGIC), .version = htobe32(1)};
	struct rdma_conn_param param;
	struct rdma_cm_event *ev;
	const struct wire_target *tgt;
	int rc;

	rc = ps_vshim_cm_channel_create(&ep->cm_ch);
	if (rc)
		return rxe_failed(&ep->chk, "create cm channel", rc);
	rc = ps_vshim_cm_id_create(ep->cm_ch, ep, RDMA_PS_TCP, &ep->id);
	if (rc)
		return rxe_failed(&ep->chk, "create cm id", rc);
	rc = ps_vshim_cm_resolve_addr(ep->id, NULL, (struct sockaddr *)&ep->dst,
				      RESOLVE_TIMEOUT_MS);
	if (rc)
		return rxe_failed(&ep->chk, "resolve address", rc);
	rc = rxe_cm_expect_ack(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	if (rc)
		return rc;
	rc = ps_vshim_cm_resolve_route(ep->id, RESOLVE_TIMEOUT_MS);
	if (rc)
		return rxe_failed(&ep->chk, "resolve route", rc);
	rc = rxe_cm_expect_ack(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	if (rc)
		return rc;
	snprintf(ep->dev_name, sizeof(ep->dev_name), "%s",
		 ps_vshim_device_name(ep->id->verbs->device));
	rxe_info(&ep->chk, "address and route resolved: device %s port %u", ep->dev_name,
		 ep->id->port_num);

	rc = ep_resources_create(ep, false, IBV_ACCESS_LOCAL_WRITE);
	if (rc)
		return rc;

	/* Receives go up before connecting, so the server's verdict always finds a buffer. */
	struct ibv_sge ack_sge = sge_of(ep, OFF_ACK, 4096), spare_sge = sge_of(ep, OFF_SPARE, 4096);
	struct ibv_recv_wr spare = {.wr_id = WR_SPARE, .sg_list = &spare_sge, .num_sge = 1};
	struct ibv_recv_wr ack = {
		.wr_id = WR_ACK, .next = &spare, .sg_list = &ack_sge, .num_sge = 1};
	rc = ps_vshim_post_recv(ep->id->qp, &ack, NULL);
	if (rc)
		return rxe_failed(&ep->chk, "post receives", rc);

	memset(&param, 0, sizeof(param));
	param.private_data = &hello;
	param.private_data_len = sizeof(hello);
	param.retry_count = 7;
	param.rnr_retry_count = 7; /* "infinite": a receiver that is late to post never fails us */
	rc = ps_vshim_cm_connect(ep->id, &param);
	if (rc)
		return rxe_failed(&ep->chk, "connect", rc);
	rc = rxe_cm_expect(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_ESTABLISHED, &ev);
	if (rc)
		return rc;
	ep->connected = true;
	tgt = ev->param.conn.private_data;
	if (rxe_check(&ep->chk,
		      tgt && ev->param.conn.private_data_len >= sizeof(*tgt) &&
			      be32toh(tgt->magic) == PROTO_MAGIC,
		      "ESTABLISHED with the server's target in its private data (%u bytes)",
		      ev->param.conn.private_data_len)) {
		target->addr = be64toh(tgt->addr);
		target->rkey = be32toh(tgt->rkey);
		target->len = be32toh(tgt->len);
	}
	ps_vshim_cm_event_ack(ev);
	if (ep->chk.failures)
		return -EPROTO;
	return rxe_check(&ep->chk, target->len >= 2 * WRITE_LEN,
			 "target: %u bytes at 0x%" PRIx64 " rkey 0x%x", target->len, target->addr,
			 target->rkey)
		       ? 0
		       : -EPROTO;
}

static int client_transfer(struct endpoint *ep, const struct wire_target *target)
{
	struct ibv_sge msg_sge = sge_of(ep, OFF_MSG, MSG_LEN);
	struct ibv_sge w0_sge = sge_of(ep, OFF_DATA, WRITE_LEN);
	struct ibv_sge w1_sge = sge_of(ep, OFF_DATA + WRITE_LEN, WRITE_LEN);
	struct ibv_send_wr w1 = {
		.wr_id = WR_WRITE_IMM,
		.sg_list = &w1_sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(IMM_VALUE),
		.wr.rdma = {.remote_addr = target->addr + WRITE_LEN, .rkey = target->rkey}};
	struct ibv_send_wr w0 = {.wr_id = WR_WRITE,
				 .next = &w1,
				 .sg_list = &w0_sge,
				 .num_sge = 1,
				 .opcode = IBV_WR_RDMA_WRITE,
				 .send_flags = IBV_SEND_SIGNALED,
				 .wr.rdma = {.remote_addr = target->addr, .rkey = target->rkey}};
	struct ibv_send_wr msg = {.wr_id = WR_MSG,
				  .next = &w0,
				  .sg_list = &msg_sge,
				  .num_sge = 1,
				  .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED};
	/* A requester's WRITE_WITH_IMM completes as IBV_WC_RDMA_WRITE. */
	struct rxe_wc_expect exp[] = {
		{.wr_id = WR_MSG, .opcode = IBV_WC_SEND, .byte_len = UINT32_MAX},
		{.wr_id = WR_WRITE, .opcode = IBV_WC_RDMA_WRITE, .byte_len = UINT32_MAX},
		{.wr_id = WR_WRITE_IMM, .opcode = IBV_WC_RDMA_WRITE, .byte_len = UINT32_MAX},
		{.wr_id = WR_ACK, .opcode = IBV_WC_RECV, .byte_len = 4},
	};
	struct ibv_send_wr *bad = NULL;
	uint64_t t0;
	uint32_t verdict;
	int rc;

	rxe_pattern_fill(ep->buf + OFF_MSG, MSG_LEN, SEED_MSG);
	rxe_pattern_fill(ep->buf + OFF_DATA, WRITE_LEN, SEED_WRITE);
	rxe_pattern_fill(ep->buf + OFF_DATA + WRITE_LEN, WRITE_LEN, SEED_WRITE_IMM);

	/* One chain, one doorbell; an RC QP executes SEND, WRITE, WRITE_WITH_IMM in this order. */
	t0 = ps_clock_now_ns();
	rc = ps_vshim_post_send(ep->id->qp, &msg, &bad);
	if (rc)
		return rxe_failed(&ep->chk, "post SEND + WRITE + WRITE_WITH_IMM", rc);
	rc = rxe_cq_expect(&ep->chk, &ep->cq, ep->id->qp->qp_num, exp,
			   sizeof(exp) / sizeof(exp[0]));
	if (rc)
		return rc;
	rxe_info(&ep->chk, "SEND 4 KiB + 2 x 64 KiB WRITE + verdict: %.1f ms",
		 (double)(ps_clock_now_ns() - t0) / 1e6);
	memcpy(&verdict, ep->buf + OFF_ACK, sizeof(verdict));
	return rxe_check(&ep->chk, be32toh(verdict) == 0, "server's verdict: %u failed check(s)",
			 be32toh(verdict))
		       ? 0
		       : -EPROTO;
}

static void *client_main(void *arg)
{
	struct endpoint *ep = arg;
	struct wire_target target = {0};

	if (client_connect(ep, &target) == 0)
		client_transfer(ep, &target);
	ep_teardown(ep);
	return NULL;
}

/* ---- server ---------------------------------------------------------------------------------- */

/*
 * A wait on an idle channel started at @t0 must end with PS_ETIMEOUT, not before IDLE_WAIT_MS and
 * not much after (TCG allows for some slack).
 */
static void timeout_check(struct endpoint *ep, const char *what, int rc, uint64_t t0)
{
	double ms = (double)(ps_clock_now_ns() - t0) / 1e6;

	rxe_check(&ep->chk, rc == PS_ETIMEOUT && ms >= IDLE_WAIT_MS && ms < IDLE_WAIT_MS + 2000,
		  "%s wait on an idle channel: %s after %.1f ms (timeout %d ms)", what,
		  ps_err_name(rc), ms, IDLE_WAIT_MS);
}

/* Print the device, port and GID the listen address maps to, and check the port is usable. */
static int server_describe_device(struct endpoint *ep, const struct sockaddr *addr)
{
	struct ibv_context *ctx = ep->listen_id->verbs;
	uint8_t port = ep->listen_id->port_num;
	struct ibv_device_attr dattr;
	struct ibv_port_attr pattr;
	union ibv_gid gid, want;
	char gid_str[INET6_ADDRSTRLEN];
	int rc, i, found = -1;

	rc = ps_vshim_device_query(ctx, &dattr);
	if (rc)
		return rxe_failed(&ep->chk, "query device", rc);
	rc = ps_vshim_port_query(ctx, port, &pattr);
	if (rc)
		return rxe_failed(&ep->chk, "query port", rc);
	ep->mtu = ps_vshim_mtu_bytes(pattr.active_mtu);
	rxe_check(&ep->chk, pattr.state == IBV_PORT_ACTIVE && ep->mtu > 0,
		  "%s port %u: state %d (ACTIVE=%d), active MTU %u, link layer %s",
		  ps_vshim_device_name(ctx->device), port, pattr.state, IBV_PORT_ACTIVE, ep->mtu,
		  pattr.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand");
	rxe_check(&ep->chk, dattr.max_sge >= 1 && dattr.max_qp_wr >= 8 && dattr.max_cqe >= 32,
		  "device limits: max_sge %d, max_qp_wr %d, max_cqe %d, max_mr_size %" PRIu64,
		  dattr.max_sge, dattr.max_qp_wr, dattr.max_cqe, (uint64_t)dattr.max_mr_size);

	/* RoCE derives GIDs from the netdev's addresses: IPv4 a.b.c.d is ::ffff:a.b.c.d. */
	memset(&want, 0, sizeof(want));
	if (addr->sa_family == AF_INET) {
		want.raw[10] = want.raw[11] = 0xff;
		memcpy(&want.raw[12], &((const struct sockaddr_in *)addr)->sin_addr, 4);
	} else {
		memcpy(want.raw, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
	}
	for (i = 0; i < pattr.gid_tbl_len && found < 0; i++) {
		if (ps_vshim_gid_query(ctx, port, i, &gid) == 0 &&
		    !memcmp(&gid, &want, sizeof(gid)))
			found = i;
	}
	inet_ntop(AF_INET6, want.raw, gid_str, sizeof(gid_str));
	if (pattr.link_layer == IBV_LINK_LAYER_ETHERNET)
		rxe_check(&ep->chk, found >= 0, "GID %s of the listen address at index %d (of %d)",
			  gid_str, found, pattr.gid_tbl_len);
	return ep->chk.failures ? -EPROTO : 0;
}

static int server_listen(struct endpoint *ep, const struct sockaddr *addr, char *dev, size_t devsz)
{
	int rc;

	rc = ps_vshim_cm_channel_create(&ep->cm_ch);
	if (rc)
		return rxe_failed(&ep->chk, "create cm channel", rc);
	rc = ps_vshim_cm_id_create(ep->cm_ch, ep, RDMA_PS_TCP, &ep->listen_id);
	if (rc)
		return rxe_failed(&ep->chk, "create listen id", rc);
	rc = ps_vshim_cm_bind(ep->listen_id, addr);
	if (rc)
		return rxe_failed(&ep->chk, "bind the listen address", rc);
	if (!rxe_check(&ep->chk, ep->listen_id->verbs != NULL,
		       "listen address is on an RDMA device"))
		return PS_ENO_DEVICE;
	snprintf(dev, devsz, "%s", ps_vshim_device_name(ep->listen_id->verbs->device));
	rc = server_describe_device(ep, addr);
	if (rc)
		return rc;
	rc = ps_vshim_cm_listen(ep->listen_id, 4);
	if (rc)
		return rxe_failed(&ep->chk, "listen", rc);
	rxe_info(&ep->chk, "listening on %s port %u", dev, ps_vshim_cm_src_port(ep->listen_id));

	/* Nothing can be pending yet (the client starts later): the shim's wait must time out. */
	uint64_t t0 = ps_clock_now_ns();
	struct rdma_cm_event *ev;
	rc = ps_vshim_cm_event_get(ep->cm_ch, IDLE_WAIT_MS, &ev);
	if (rc == 0)
		ps_vshim_cm_event_ack(ev);
	timeout_check(ep, "cm event", rc, t0);
	return 0;
}

/* Take the connection request, set up the QP with receives posted, and accept. */
static int server_accept(struct endpoint *ep)
{
	struct rdma_conn_param param;
	struct rdma_cm_event *ev;
	struct wire_target target;
	const struct wire_hello *hello;
	bool hello_ok;
	int rc;

	rc = rxe_cm_expect(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_CONNECT_REQUEST, &ev);
	if (rc)
		return rc;
	ep->id = ev->id;
	hello = ev->param.conn.private_data;
	hello_ok = hello && ev->param.conn.private_data_len >= sizeof(*hello) &&
		   be32toh(hello->magic) == PROTO_MAGIC && be32toh(hello->version) == 1;
	ps_vshim_cm_event_ack(ev);
	if (!rxe_check(&ep->chk, hello_ok,
		       "CONNECT_REQUEST with the client's hello in its private data"))
		goto reject;
	if (ep_resources_create(ep, true, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE))
		goto reject;
	memset(ep->buf + OFF_GUARD, GUARD_BYTE, 4096);

	/* No receive is posted yet, so no completion event can come: the wait must time out. */
	uint64_t t0 = ps_clock_now_ns();
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	rc = ps_vshim_cq_event_get(ep->cq.ch, IDLE_WAIT_MS, &ev_cq, &ev_ctx);
	if (rc == 0)
		ps_vshim_cq_event_ack(ev_cq, 1);
	timeout_check(ep, "CQ event", rc, t0);

	/*
	 * Receives before the accept: the client's SEND may arrive as soon as the connection is up.
	 * The WRITE_WITH_IMM consumes a receive too (with no buffer: its data goes where the WRITE
	 * says), and the spare one is left to be flushed at teardown.
	 */
	struct ibv_sge msg_sge = sge_of(ep, OFF_MSG, MSG_LEN),
		       spare_sge = sge_of(ep, OFF_SPARE, 4096);
	struct ibv_recv_wr spare = {.wr_id = WR_SPARE, .sg_list = &spare_sge, .num_sge = 1};
	struct ibv_recv_wr imm = {.wr_id = WR_IMM_RECV, .next = &spare};
	struct ibv_recv_wr msg = {.wr_id = WR_MSG, .next = &imm, .sg_list = &msg_sge, .num_sge = 1};
	rc = ps_vshim_post_recv(ep->id->qp, &msg, NULL);
	if (rc) {
		rxe_failed(&ep->chk, "post receives", rc);
		goto reject;
	}

	target = (struct wire_target){.magic = htobe32(PROTO_MAGIC),
				      .rkey = htobe32(ep->mr->rkey),
				      .addr = htobe64((uintptr_t)ep->buf + OFF_DATA),
				      .len = htobe32(2 * WRITE_LEN)};
	memset(&param, 0, sizeof(param));
	param.private_data = &target;
	param.private_data_len = sizeof(target);
	param.rnr_retry_count = 7;
	rc = ps_vshim_cm_accept(ep->id, &param);
	if (rc)
		return rxe_failed(&ep->chk, "accept", rc);
	rc = rxe_cm_expect_ack(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_ESTABLISHED);
	if (rc)
		return rc;
	ep->connected = true;
	return rxe_check(&ep->chk, true, "ESTABLISHED on %s",
			 ps_vshim_device_name(ep->id->verbs->device))
		       ? 0
		       : -EPROTO;

reject:
	/* Tell the client now rather than let it wait for its timeout. */
	ps_vshim_cm_reject(ep->id, NULL, 0);
	return -EPROTO;
}

static int server_verify(struct endpoint *ep)
{
	struct rxe_wc_expect exp[] = {
		{.wr_id = WR_MSG, .opcode = IBV_WC_RECV, .byte_len = MSG_LEN},
		{.wr_id = WR_IMM_RECV, .opcode = IBV_WC_RECV_RDMA_WITH_IMM, .byte_len = WRITE_LEN},
	};
	struct rxe_wc_expect ack_exp[] = {
		{.wr_id = WR_ACK, .opcode = IBV_WC_SEND, .byte_len = UINT32_MAX},
	};
	const struct ibv_wc *wc = &exp[1].wc;
	size_t off, guard_bad = 0;
	uint32_t verdict;
	int rc;

	rc = rxe_cq_expect(&ep->chk, &ep->cq, ep->id->qp->qp_num, exp, 2);
	if (rc == 0) {
		rxe_check(&ep->chk,
			  (wc->wc_flags & IBV_WC_WITH_IMM) && ntohl(wc->imm_data) == IMM_VALUE,
			  "WRITE_WITH_IMM completion carries imm 0x%x (want 0x%x)",
			  ntohl(wc->imm_data), IMM_VALUE);
		off = rxe_pattern_mismatch(ep->buf + OFF_MSG, MSG_LEN, SEED_MSG);
		rxe_check(&ep->chk, off == MSG_LEN,
			  "SEND payload: %zu of %u bytes match the pattern", off, MSG_LEN);
		/* The imm completion follows the placement of the earlier WRITE (RC ordering). */
		off = rxe_pattern_mismatch(ep->buf + OFF_DATA, WRITE_LEN, SEED_WRITE);
		rxe_check(&ep->chk, off == WRITE_LEN, "RDMA WRITE block: %zu of %u bytes match",
			  off, WRITE_LEN);
		off = rxe_pattern_mismatch(ep->buf + OFF_DATA + WRITE_LEN, WRITE_LEN,
					   SEED_WRITE_IMM);
		rxe_check(&ep->chk, off == WRITE_LEN,
			  "RDMA WRITE_WITH_IMM block: %zu of %u bytes match", off, WRITE_LEN);
		for (off = 0; off < 4096; off++)
			guard_bad += ep->buf[OFF_GUARD + off] != GUARD_BYTE;
		rxe_check(&ep->chk, guard_bad == 0,
			  "guard after the target untouched (%zu bytes changed)", guard_bad);
	}

	/* Send the verdict whatever it is, so the client knows without waiting for a timeout. */
	verdict = htobe32((uint32_t)ep->chk.failures);
	memcpy(ep->buf + OFF_ACK, &verdict, sizeof(verdict));
	struct ibv_sge sge = sge_of(ep, OFF_ACK, sizeof(verdict));
	struct ibv_send_wr ack = {.wr_id = WR_ACK,
				  .sg_list = &sge,
				  .num_sge = 1,
				  .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED};
	rc = ps_vshim_post_send(ep->id->qp, &ack, NULL);
	if (rc)
		return rxe_failed(&ep->chk, "post the verdict SEND", rc);
	rc = rxe_cq_expect(&ep->chk, &ep->cq, ep->id->qp->qp_num, ack_exp, 1);
	if (rc)
		return rc;
	/* The client disconnects once it has the verdict; wait for that before tearing down. */
	rc = rxe_cm_expect_ack(&ep->chk, ep->cm_ch, RDMA_CM_EVENT_DISCONNECTED);
	if (rc == 0)
		ep->peer_gone = true;
	return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct endpoint srv = {.chk.role = "server"}, cli = {.chk.role = "client"};
	const char *addr_str = argc > 1 ? argv[1] : rxe_default_addr();
	struct sockaddr_storage addr = {0};
	struct rxe_pkt_counters before = {0}, after = {0};
	char dev[64] = "";
	bool have_counters = false, client_started = false;
	pthread_t client;
	uint64_t t0 = ps_clock_now_ns(), min_pkts;
	int rc, port_num = 1;

	rxe_test_init();
	rc = rxe_device_present(&srv.chk, "test_verbs_basic");
	if (rc)
		return rc;
	/* Port 0: the kernel picks a free one, so parallel runs never collide. */
	if (rxe_addr_parse(addr_str, 0, &addr)) {
		fprintf(stderr, "test_verbs_basic: bad address '%s'\n", addr_str);
		return 1;
	}
	rxe_info(&srv.chk, "listen address %s", addr_str);

	if (server_listen(&srv, (struct sockaddr *)&addr, dev, sizeof(dev)))
		goto out;
	port_num = srv.listen_id->port_num;
	rc = rxe_counters_read(dev, port_num, &before);
	have_counters = rc == 0;
	if (!have_counters)
		rxe_check(&srv.chk, !rxe_in_guest(), "read hw_counters of %s: %s", dev,
			  ps_strerror(rc));

	cli.dst = addr;
	rxe_addr_set_port(&cli.dst, ps_vshim_cm_src_port(srv.listen_id));
	if (pthread_create(&client, NULL, client_main, &cli) != 0) {
		rxe_check(&srv.chk, false, "start the client thread");
		goto out;
	}
	client_started = true;
	if (server_accept(&srv) == 0) {
		rxe_info(&srv.chk, "connected in %.1f ms since start",
			 (double)(ps_clock_now_ns() - t0) / 1e6);
		server_verify(&srv);
	}

out:
	/*
	 * The server tears down before joining the client: the client's DISCONNECTED event only
	 * comes once the server answers its disconnect request (rdma_disconnect in ep_teardown()).
	 */
	ep_teardown(&srv);
	if (client_started) {
		pthread_join(client, NULL);
		rxe_check(&cli.chk, strcmp(cli.dev_name, dev) == 0,
			  "client ran on the listen address's device too (%s)", cli.dev_name);
	}

	if (have_counters && rxe_counters_read(dev, port_num, &after) == 0) {
		/*
		 * Both ends ran on this device, so each data packet is counted once as sent and
		 * once as received; the payload alone needs this many MTU-sized packets.
		 */
		min_pkts = (MSG_LEN + srv.mtu - 1) / srv.mtu +
			   2 * ((WRITE_LEN + srv.mtu - 1) / srv.mtu);
		rxe_check(&srv.chk,
			  after.sent - before.sent >= min_pkts &&
				  after.rcvd - before.rcvd >= min_pkts,
			  "%s hw_counters: sent_pkts +%" PRIu64 ", rcvd_pkts +%" PRIu64
			  " (>= %" PRIu64 " each)",
			  dev, after.sent - before.sent, after.rcvd - before.rcvd, min_pkts);
	} else if (have_counters) {
		rxe_check(&srv.chk, false, "re-read hw_counters of %s", dev);
	}

	rc = srv.chk.failures + cli.chk.failures;
	printf("test_verbs_basic: %s (%d failed check(s), %.1f s)\n", rc ? "FAIL" : "PASS", rc,
	       (double)(ps_clock_now_ns() - t0) / 1e9);
	return rc ? 1 : 0;
}
