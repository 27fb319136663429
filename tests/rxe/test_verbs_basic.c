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
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "transport/rdma/verbs_shim.h"

#define EXIT_SKIP 77

/* Generous: under QEMU TCG, connection set-up and a 128 KiB transfer take whole seconds. */
#define CM_TIMEOUT_MS	   30000
#define CQ_TIMEOUT_MS	   30000
#define RESOLVE_TIMEOUT_MS 5000
/* Flushes follow a disconnect at once on a healthy device; this only bounds a broken one. */
#define DRAIN_TIMEOUT_MS 10000

#define MSG_LEN	    4096u
#define WRITE_LEN   (64u * 1024u)
#define IMM_VALUE   0x50530001u /* "PS" + 1: arbitrary, but not a value memory would hold by chance */
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
	const char *role;		  /* "server" or "client", prefixes every line */
	struct rdma_event_channel *cm_ch; /* cm events of this side's ids */
	struct rdma_cm_id *listen_id;	  /* server: the listener; its children report on cm_ch */
	struct rdma_cm_id *id;		  /* the connection's id; its QP is id->qp */
	struct ibv_pd *pd;		  /* on id->verbs */
	struct ibv_comp_channel *comp_ch; /* server: waits on CQ events; client: NULL, busy-polls */
	struct ibv_cq *cq;		  /* send and receive completions of id->qp */
	bool cq_armed;			  /* req_notify done since the last CQ event */
	uint8_t *buf;			  /* BUF_LEN, page-aligned, registered as mr */
	struct ibv_mr *mr;
	bool connected; /* ESTABLISHED seen, so teardown must disconnect */
	bool peer_gone; /* DISCONNECTED seen */
	int failures;	/* failed checks */
	/* server only */
	unsigned int mtu; /* active MTU of the port, bytes */
	/* client only */
	struct sockaddr_storage dst; /* the server's address and port */
	char dev_name[64];	     /* the device rdma_cm chose for the client */
};

/* ---- reporting -------------------------------------------------------------------------------- */

static bool check(struct endpoint *ep, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool check(struct endpoint *ep, bool ok, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("[%s] %s %s\n", ep->role, ok ? "ok  " : "FAIL", line);
	if (!ok)
		ep->failures++;
	return ok;
}

/* A failed call: report it with the psplus text of @rc and count it. Returns @rc. */
static int failed(struct endpoint *ep, const char *what, int rc)
{
	check(ep, false, "%s: %s (%s)", what, ps_strerror(rc), ps_err_name(rc));
	return rc;
}

static void info(struct endpoint *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void info(struct endpoint *ep, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("[%s]      %s\n", ep->role, line);
}

/* ---- data patterns ---------------------------------------------------------------------------- */

/* A byte pattern that differs per @seed and has no short period (a shifted copy would show). */
static uint8_t pattern_byte(uint32_t seed, size_t i)
{
	uint32_t x = (uint32_t)i * 2654435761u + seed * 40503u;

	return (uint8_t)(x >> 24 ^ x >> 11 ^ (uint32_t)(i >> 12));
}

static void pattern_fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(seed, i);
}

/* Returns the offset of the first byte that differs from the pattern, or @len if none does. */
static size_t pattern_mismatch(const uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pattern_byte(seed, i))
			return i;
	return len;
}

enum { SEED_MSG = 1, SEED_WRITE = 2, SEED_WRITE_IMM = 3 };

/* ---- hw_counters ------------------------------------------------------------------------------ */

static int counter_read(const char *dev, int port, const char *name, uint64_t *out)
{
	char path[256];
	unsigned long long v;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/hw_counters/%s", dev, port,
		 name);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	n = fscanf(f, "%llu", &v);
	fclose(f);
	if (n != 1)
		return -EIO;
	*out = v;
	return 0;
}

struct pkt_counters {
	uint64_t sent, rcvd;
};

static int counters_read(const char *dev, int port, struct pkt_counters *c)
{
	int rc = counter_read(dev, port, "sent_pkts", &c->sent);

	return rc ? rc : counter_read(dev, port, "rcvd_pkts", &c->rcvd);
}

/* ---- cm events and completions --------------------------------------------------------------- */

/*
 * Wait for the next cm event on @ep's channel and require it to be @type. On success the event is
 * returned unacknowledged (its private data is valid until the ack); on any failure it has been
 * acknowledged already.
 */
static int cm_expect(struct endpoint *ep, enum rdma_cm_event_type type, struct rdma_cm_event **out)
{
	struct rdma_cm_event *ev;
	char what[128];
	int rc;

	rc = ps_vshim_cm_event_get(ep->cm_ch, CM_TIMEOUT_MS, &ev);
	if (rc) {
		snprintf(what, sizeof(what), "waiting for %s", ps_vshim_cm_event_str(type));
		return failed(ep, what, rc);
	}
	if (ev->event != type) {
		check(ep, false, "expected %s, got %s (status %d)", ps_vshim_cm_event_str(type),
		      ps_vshim_cm_event_str(ev->event), ev->status);
		if (ev->event == RDMA_CM_EVENT_DISCONNECTED)
			ep->peer_gone = true;
		ps_vshim_cm_event_ack(ev);
		return -EPROTO;
	}
	*out = ev;
	return 0;
}

/* cm_expect() for events that carry nothing the caller needs. */
static int cm_expect_ack(struct endpoint *ep, enum rdma_cm_event_type type)
{
	struct rdma_cm_event *ev;
	int rc = cm_expect(ep, type, &ev);

	return rc ? rc : ps_vshim_cm_event_ack(ev);
}

/*
 * The next completion of @ep's CQ before @deadline. The server sleeps on its completion channel
 * (arm, poll again, then wait: a completion that lands between the empty poll and the arming
 * would otherwise wait for the next one); the client busy-polls, as the data path will.
 */
static int cq_next(struct endpoint *ep, struct ibv_wc *wc, uint64_t deadline)
{
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	int n, rc;

	for (;;) {
		n = ps_vshim_cq_poll(ep->cq, 1, wc);
		if (n != 0)
			return n < 0 ? n : 0;
		if (!ep->comp_ch) {
			if (ps_clock_remaining_ms(deadline) == 0)
				return PS_ETIMEOUT;
			sched_yield();
			continue;
		}
		if (!ep->cq_armed) {
			rc = ps_vshim_cq_req_notify(ep->cq, 0);
			if (rc)
				return rc;
			ep->cq_armed = true;
			continue;
		}
		rc = ps_vshim_cq_event_get(ep->comp_ch, ps_clock_remaining_ms(deadline), &ev_cq,
					   &ev_ctx);
		if (rc)
			return rc;
		/* One at a time keeps teardown simple; a data path would ack in batches. */
		ps_vshim_cq_event_ack(ev_cq, 1);
		ep->cq_armed = false;
	}
}

struct wc_expect {
	enum wr_tag tag;
	enum ibv_wc_opcode opcode;
	uint32_t byte_len; /* UINT32_MAX: not defined for this opcode, not checked */
	struct ibv_wc wc;  /* the completion, once seen */
	bool seen;
};

/*
 * Collect one successful completion per entry of @exp, in any order (a QP's send and receive
 * queues complete independently), and check each against its entry.
 */
static int cq_expect(struct endpoint *ep, struct wc_expect *exp, size_t n)
{
	uint64_t deadline = ps_clock_deadline_ms(CQ_TIMEOUT_MS);
	struct ibv_wc wc;
	size_t got = 0, i;
	int rc;

	while (got < n) {
		rc = cq_next(ep, &wc, deadline);
		if (rc)
			return failed(ep, "waiting for completions", rc);
		for (i = 0; i < n && (exp[i].seen || exp[i].tag != wc.wr_id); i++)
			;
		if (i == n) {
			check(ep, false, "unexpected completion wr_id %" PRIu64 " status %s",
			      wc.wr_id, ps_vshim_wc_status_str(wc.status));
			return -EPROTO;
		}
		exp[i].seen = true;
		exp[i].wc = wc;
		got++;
		if (!check(ep,
			   wc.status == IBV_WC_SUCCESS && wc.opcode == exp[i].opcode &&
				   wc.qp_num == ep->id->qp->qp_num &&
				   (exp[i].byte_len == UINT32_MAX ||
				    wc.byte_len == exp[i].byte_len),
			   "completion wr_id %d: status %s, opcode %d (want %d), byte_len %u",
			   exp[i].tag, ps_vshim_wc_status_str(wc.status), wc.opcode, exp[i].opcode,
			   wc.byte_len))
			return -EPROTO;
	}
	return 0;
}

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
		return failed(ep, "alloc PD", rc);
	if (use_comp_ch) {
		rc = ps_vshim_comp_channel_create(ctx, &ep->comp_ch);
		if (rc)
			return failed(ep, "create completion channel", rc);
	}
	rc = ps_vshim_cq_create(ctx, 32, ep, ep->comp_ch, 0, &ep->cq);
	if (rc)
		return failed(ep, "create CQ", rc);

	/*
	 * Page-aligned: registration pins whole pages, so an unaligned buffer would pin (and expose
	 * to the device) its neighbours on the first and last page too.
	 */
	rc = posix_memalign((void **)&ep->buf, 4096, BUF_LEN);
	if (rc) {
		ep->buf = NULL;
		return failed(ep, "allocate the buffer", -rc);
	}
	memset(ep->buf, 0, BUF_LEN);
	rc = ps_vshim_mr_reg(ep->pd, ep->buf, BUF_LEN, access, &ep->mr);
	if (rc) {
		if (rc == -ENOMEM || rc == -EPERM)
			info(ep, "hint: the memlock limit (ulimit -l) may be too low");
		return failed(ep, "register memory", rc);
	}

	memset(&qpa, 0, sizeof(qpa));
	qpa.qp_type = IBV_QPT_RC;
	qpa.send_cq = ep->cq;
	qpa.recv_cq = ep->cq;
	qpa.cap.max_send_wr = 8;
	qpa.cap.max_recv_wr = 8;
	qpa.cap.max_send_sge = 1;
	qpa.cap.max_recv_sge = 1;
	rc = ps_vshim_qp_create(ep->id, ep->pd, &qpa);
	if (rc)
		return failed(ep, "create QP", rc);
	check(ep, qpa.cap.max_send_wr >= 8 && qpa.cap.max_recv_wr >= 8,
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
		failed(ep, "disconnect", rc);
	if (!ep->peer_gone) {
		if (cm_expect_ack(ep, RDMA_CM_EVENT_DISCONNECTED) == 0)
			ep->peer_gone = true;
	}
	while (flushed < 1) {
		rc = cq_next(ep, &wc, deadline);
		if (rc) {
			failed(ep, "draining the CQ", rc);
			break;
		}
		if (wc.status == IBV_WC_WR_FLUSH_ERR) {
			flushed += wc.wr_id == WR_SPARE;
			continue;
		}
		check(ep, false, "drain: wr_id %" PRIu64 " completed with %s", wc.wr_id,
		      ps_vshim_wc_status_str(wc.status));
	}
	if (flushed)
		check(ep, true, "drain: the spare receive completed with IBV_WC_WR_FLUSH_ERR");
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
		failed(ep, "deregister memory", rc);
	free(ep->buf);
	rc = ps_vshim_cq_destroy(ep->cq);
	if (rc)
		failed(ep, "destroy CQ", rc);
	rc = ps_vshim_comp_channel_destroy(ep->comp_ch);
	if (rc)
		failed(ep, "destroy completion channel", rc);
	rc = ps_vshim_pd_dealloc(ep->pd);
	if (rc)
		failed(ep, "dealloc PD", rc);
	rc = ps_vshim_cm_id_destroy(ep->id);
	if (rc)
		failed(ep, "destroy cm id", rc);
	rc = ps_vshim_cm_id_destroy(ep->listen_id);
	if (rc)
		failed(ep, "destroy listen id", rc);
	ps_vshim_cm_channel_destroy(ep->cm_ch);
}

/* ---- client ----------------------------------------------------------------------------------- */

static int client_connect(struct endpoint *ep, struct wire_target *target)
{
	struct wire_hello hello = {.magic = htobe32(PROTO_MAGIC), .version = htobe32(1)};
	struct rdma_conn_param param;
	struct rdma_cm_event *ev;
	const struct wire_target *tgt;
	int rc;

	rc = ps_vshim_cm_channel_create(&ep->cm_ch);
	if (rc)
		return failed(ep, "create cm channel", rc);
	rc = ps_vshim_cm_id_create(ep->cm_ch, ep, RDMA_PS_TCP, &ep->id);
	if (rc)
		return failed(ep, "create cm id", rc);
	rc = ps_vshim_cm_resolve_addr(ep->id, NULL, (struct sockaddr *)&ep->dst,
				      RESOLVE_TIMEOUT_MS);
	if (rc)
		return failed(ep, "resolve address", rc);
	rc = cm_expect_ack(ep, RDMA_CM_EVENT_ADDR_RESOLVED);
	if (rc)
		return rc;
	rc = ps_vshim_cm_resolve_route(ep->id, RESOLVE_TIMEOUT_MS);
	if (rc)
		return failed(ep, "resolve route", rc);
	rc = cm_expect_ack(ep, RDMA_CM_EVENT_ROUTE_RESOLVED);
	if (rc)
		return rc;
	snprintf(ep->dev_name, sizeof(ep->dev_name), "%s",
		 ps_vshim_device_name(ep->id->verbs->device));
	info(ep, "address and route resolved: device %s port %u", ep->dev_name, ep->id->port_num);

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
		return failed(ep, "post receives", rc);

	memset(&param, 0, sizeof(param));
	param.private_data = &hello;
	param.private_data_len = sizeof(hello);
	param.retry_count = 7;
	param.rnr_retry_count = 7; /* "infinite": a receiver that is late to post never fails us */
	rc = ps_vshim_cm_connect(ep->id, &param);
	if (rc)
		return failed(ep, "connect", rc);
	rc = cm_expect(ep, RDMA_CM_EVENT_ESTABLISHED, &ev);
	if (rc)
		return rc;
	ep->connected = true;
	tgt = ev->param.conn.private_data;
	if (check(ep,
		  tgt && ev->param.conn.private_data_len >= sizeof(*tgt) &&
			  be32toh(tgt->magic) == PROTO_MAGIC,
		  "ESTABLISHED with the server's target in its private data (%u bytes)",
		  ev->param.conn.private_data_len)) {
		target->addr = be64toh(tgt->addr);
		target->rkey = be32toh(tgt->rkey);
		target->len = be32toh(tgt->len);
	}
	ps_vshim_cm_event_ack(ev);
	if (ep->failures)
		return -EPROTO;
	return check(ep, target->len >= 2 * WRITE_LEN,
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
	struct wc_expect exp[] = {
		{.tag = WR_MSG, .opcode = IBV_WC_SEND, .byte_len = UINT32_MAX},
		{.tag = WR_WRITE, .opcode = IBV_WC_RDMA_WRITE, .byte_len = UINT32_MAX},
		{.tag = WR_WRITE_IMM, .opcode = IBV_WC_RDMA_WRITE, .byte_len = UINT32_MAX},
		{.tag = WR_ACK, .opcode = IBV_WC_RECV, .byte_len = 4},
	};
	struct ibv_send_wr *bad = NULL;
	uint64_t t0;
	uint32_t verdict;
	int rc;

	pattern_fill(ep->buf + OFF_MSG, MSG_LEN, SEED_MSG);
	pattern_fill(ep->buf + OFF_DATA, WRITE_LEN, SEED_WRITE);
	pattern_fill(ep->buf + OFF_DATA + WRITE_LEN, WRITE_LEN, SEED_WRITE_IMM);

	/* One chain, one doorbell: SEND, WRITE, WRITE_WITH_IMM execute in this order on an RC QP. */
	t0 = ps_clock_now_ns();
	rc = ps_vshim_post_send(ep->id->qp, &msg, &bad);
	if (rc)
		return failed(ep, "post SEND + WRITE + WRITE_WITH_IMM", rc);
	rc = cq_expect(ep, exp, sizeof(exp) / sizeof(exp[0]));
	if (rc)
		return rc;
	info(ep, "SEND 4 KiB + 2 x 64 KiB WRITE + verdict: %.1f ms",
	     (double)(ps_clock_now_ns() - t0) / 1e6);
	memcpy(&verdict, ep->buf + OFF_ACK, sizeof(verdict));
	return check(ep, be32toh(verdict) == 0, "server's verdict: %u failed check(s)",
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

/* ---- server ----------------------------------------------------------------------------------- */

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
		return failed(ep, "query device", rc);
	rc = ps_vshim_port_query(ctx, port, &pattr);
	if (rc)
		return failed(ep, "query port", rc);
	ep->mtu = ps_vshim_mtu_bytes(pattr.active_mtu);
	check(ep, pattr.state == IBV_PORT_ACTIVE && ep->mtu > 0,
	      "%s port %u: state %d (ACTIVE=%d), active MTU %u, link layer %s",
	      ps_vshim_device_name(ctx->device), port, pattr.state, IBV_PORT_ACTIVE, ep->mtu,
	      pattr.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand");
	check(ep, dattr.max_sge >= 1 && dattr.max_qp_wr >= 8 && dattr.max_cqe >= 32,
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
		check(ep, found >= 0, "GID %s of the listen address at index %d (of %d)", gid_str,
		      found, pattr.gid_tbl_len);
	return ep->failures ? -EPROTO : 0;
}

static int server_listen(struct endpoint *ep, const struct sockaddr *addr, char *dev, size_t devsz)
{
	int rc;

	rc = ps_vshim_cm_channel_create(&ep->cm_ch);
	if (rc)
		return failed(ep, "create cm channel", rc);
	rc = ps_vshim_cm_id_create(ep->cm_ch, ep, RDMA_PS_TCP, &ep->listen_id);
	if (rc)
		return failed(ep, "create listen id", rc);
	rc = ps_vshim_cm_bind(ep->listen_id, addr);
	if (rc)
		return failed(ep, "bind the listen address", rc);
	if (!check(ep, ep->listen_id->verbs != NULL, "listen address is on an RDMA device"))
		return PS_ENO_DEVICE;
	snprintf(dev, devsz, "%s", ps_vshim_device_name(ep->listen_id->verbs->device));
	rc = server_describe_device(ep, addr);
	if (rc)
		return rc;
	rc = ps_vshim_cm_listen(ep->listen_id, 4);
	if (rc)
		return failed(ep, "listen", rc);
	info(ep, "listening on %s port %u", dev, ps_vshim_cm_src_port(ep->listen_id));
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

	rc = cm_expect(ep, RDMA_CM_EVENT_CONNECT_REQUEST, &ev);
	if (rc)
		return rc;
	ep->id = ev->id;
	hello = ev->param.conn.private_data;
	hello_ok = hello && ev->param.conn.private_data_len >= sizeof(*hello) &&
		   be32toh(hello->magic) == PROTO_MAGIC && be32toh(hello->version) == 1;
	ps_vshim_cm_event_ack(ev);
	if (!check(ep, hello_ok, "CONNECT_REQUEST with the client's hello in its private data"))
		goto reject;
	if (ep_resources_create(ep, true, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE))
		goto reject;
	memset(ep->buf + OFF_GUARD, GUARD_BYTE, 4096);

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
		failed(ep, "post receives", rc);
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
		return failed(ep, "accept", rc);
	rc = cm_expect_ack(ep, RDMA_CM_EVENT_ESTABLISHED);
	if (rc)
		return rc;
	ep->connected = true;
	return check(ep, true, "ESTABLISHED on %s", ps_vshim_device_name(ep->id->verbs->device))
		       ? 0
		       : -EPROTO;

reject:
	/* Tell the client now rather than let it wait for its timeout. */
	ps_vshim_cm_reject(ep->id, NULL, 0);
	return -EPROTO;
}

static int server_verify(struct endpoint *ep)
{
	struct wc_expect exp[] = {
		{.tag = WR_MSG, .opcode = IBV_WC_RECV, .byte_len = MSG_LEN},
		{.tag = WR_IMM_RECV, .opcode = IBV_WC_RECV_RDMA_WITH_IMM, .byte_len = WRITE_LEN},
	};
	struct wc_expect ack_exp[] = {
		{.tag = WR_ACK, .opcode = IBV_WC_SEND, .byte_len = UINT32_MAX},
	};
	const struct ibv_wc *wc = &exp[1].wc;
	size_t off, guard_bad = 0;
	uint32_t verdict;
	int rc;

	rc = cq_expect(ep, exp, 2);
	if (rc == 0) {
		check(ep, (wc->wc_flags & IBV_WC_WITH_IMM) && ntohl(wc->imm_data) == IMM_VALUE,
		      "WRITE_WITH_IMM completion carries imm 0x%x (want 0x%x)", ntohl(wc->imm_data),
		      IMM_VALUE);
		off = pattern_mismatch(ep->buf + OFF_MSG, MSG_LEN, SEED_MSG);
		check(ep, off == MSG_LEN, "SEND payload: %zu of %u bytes match the pattern", off,
		      MSG_LEN);
		/* The imm completion comes after the earlier WRITE's data is placed (RC ordering). */
		off = pattern_mismatch(ep->buf + OFF_DATA, WRITE_LEN, SEED_WRITE);
		check(ep, off == WRITE_LEN, "RDMA WRITE block: %zu of %u bytes match", off,
		      WRITE_LEN);
		off = pattern_mismatch(ep->buf + OFF_DATA + WRITE_LEN, WRITE_LEN, SEED_WRITE_IMM);
		check(ep, off == WRITE_LEN, "RDMA WRITE_WITH_IMM block: %zu of %u bytes match", off,
		      WRITE_LEN);
		for (off = 0; off < 4096; off++)
			guard_bad += ep->buf[OFF_GUARD + off] != GUARD_BYTE;
		check(ep, guard_bad == 0, "guard after the target untouched (%zu bytes changed)",
		      guard_bad);
	}

	/* Send the verdict whatever it is, so the client knows without waiting for a timeout. */
	verdict = htobe32((uint32_t)ep->failures);
	memcpy(ep->buf + OFF_ACK, &verdict, sizeof(verdict));
	struct ibv_sge sge = sge_of(ep, OFF_ACK, sizeof(verdict));
	struct ibv_send_wr ack = {.wr_id = WR_ACK,
				  .sg_list = &sge,
				  .num_sge = 1,
				  .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED};
	rc = ps_vshim_post_send(ep->id->qp, &ack, NULL);
	if (rc)
		return failed(ep, "post the verdict SEND", rc);
	rc = cq_expect(ep, ack_exp, 1);
	if (rc)
		return rc;
	/* The client disconnects once it has the verdict; wait for that before tearing down. */
	rc = cm_expect_ack(ep, RDMA_CM_EVENT_DISCONNECTED);
	if (rc == 0)
		ep->peer_gone = true;
	return rc;
}

/* ---- main ------------------------------------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_storage *out)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res;
	int rc = getaddrinfo(s, NULL, &hints, &res);

	if (rc)
		return -EINVAL;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static const char *default_addr(void)
{
	const char *s = getenv("PS_RXE1_ADDR");

	if (!s || !*s)
		s = getenv("PS_RXE0_ADDR");
	return s && *s ? s : "192.0.2.2";
}

/* Is there any RDMA device? 0 yes, EXIT_SKIP no, 1 on an unexpected error. */
static int any_device(struct endpoint *ep, bool in_guest)
{
	struct ibv_device **list;
	int n = 0, rc;

	rc = ps_vshim_device_list_get(&list, &n);
	if (rc == 0) {
		ps_vshim_device_list_free(list);
	} else if (rc != -ENOSYS) {
		failed(ep, "list RDMA devices", rc);
		return 1;
	}
	if (n > 0)
		return 0;
	if (in_guest) {
		check(ep, false, "no RDMA device inside the rxe guest");
		return 1;
	}
	printf("test_verbs_basic: SKIP: no RDMA device (%s)\n",
	       rc ? ps_strerror(rc) : "empty device list");
	return EXIT_SKIP;
}

int main(int argc, char **argv)
{
	struct endpoint srv = {.role = "server"}, cli = {.role = "client"};
	const char *in_guest_env = getenv("PS_IN_RXE_GUEST");
	bool in_guest = in_guest_env && strcmp(in_guest_env, "1") == 0;
	const char *addr_str = argc > 1 ? argv[1] : default_addr();
	struct sockaddr_storage addr = {0};
	struct pkt_counters before = {0}, after = {0};
	char dev[64] = "";
	bool have_counters = false, client_started = false;
	pthread_t client;
	uint64_t t0 = ps_clock_now_ns(), min_pkts;
	int rc, port_num = 1;

	setvbuf(stdout, NULL, _IOLBF, 0); /* two threads print; keep each line whole */
	rc = any_device(&srv, in_guest);
	if (rc)
		return rc;
	if (parse_addr(addr_str, &addr)) {
		fprintf(stderr, "test_verbs_basic: bad address '%s'\n", addr_str);
		return 1;
	}
	info(&srv, "listen address %s", addr_str);

	/* Port 0: the kernel picks a free one, so parallel runs never collide. */
	if (server_listen(&srv, (struct sockaddr *)&addr, dev, sizeof(dev)))
		goto out;
	port_num = srv.listen_id->port_num;
	rc = counters_read(dev, port_num, &before);
	have_counters = rc == 0;
	if (!have_counters)
		check(&srv, !in_guest, "read hw_counters of %s: %s", dev, ps_strerror(rc));

	cli.dst = addr;
	set_port(&cli.dst, ps_vshim_cm_src_port(srv.listen_id));
	if (pthread_create(&client, NULL, client_main, &cli) != 0) {
		check(&srv, false, "start the client thread");
		goto out;
	}
	client_started = true;
	if (server_accept(&srv) == 0) {
		info(&srv, "connected in %.1f ms since start",
		     (double)(ps_clock_now_ns() - t0) / 1e6);
		server_verify(&srv);
	}

out:
	/*
	 * The server tears down before joining the client: the client's DISCONNECTED event only
	 * comes once the server answers its disconnect request (rdma_disconnect in ep_teardown()).
	 */
	ep_teardown(&srv);
	if (client_started)
		pthread_join(client, NULL);
	if (client_started)
		check(&cli, strcmp(cli.dev_name, dev) == 0,
		      "client ran on the listen address's device too (%s)", cli.dev_name);

	if (have_counters && counters_read(dev, port_num, &after) == 0) {
		/*
		 * Both ends ran on this device, so each data packet is counted once as sent and once as
		 * received; the payload alone needs this many MTU-sized packets.
		 */
		min_pkts = (MSG_LEN + srv.mtu - 1) / srv.mtu +
			   2 * ((WRITE_LEN + srv.mtu - 1) / srv.mtu);
		check(&srv,
		      after.sent - before.sent >= min_pkts && after.rcvd - before.rcvd >= min_pkts,
		      "%s hw_counters: sent_pkts +%" PRIu64 ", rcvd_pkts +%" PRIu64 " (>= %" PRIu64
		      " each)",
		      dev, after.sent - before.sent, after.rcvd - before.rcvd, min_pkts);
	} else if (have_counters) {
		check(&srv, false, "re-read hw_counters of %s", dev);
	}

	rc = srv.failures + cli.failures;
	printf("test_verbs_basic: %s (%d failed check(s), %.1f s)\n", rc ? "FAIL" : "PASS", rc,
	       (double)(ps_clock_now_ns() - t0) / 1e9);
	return rc ? 1 : 0;
}
