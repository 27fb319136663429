/*
 * Helpers of the rxe guest tier's verbs tests; see rxe_test.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "tests/rxe/rxe_test.h"

void rxe_test_init(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* ---- reporting ------------------------------------------------------------------------------- */

static void vline(struct rxe_check *c, const char *tag, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	/* One printf per line: stdio's lock keeps lines of concurrent threads whole. */
	printf("[%s] %s %s\n", c->role, tag, line);
}

bool rxe_check(struct rxe_check *c, bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline(c, ok ? "ok  " : "FAIL", fmt, ap);
	va_end(ap);
	if (!ok)
		c->failures++;
	return ok;
}

int rxe_failed(struct rxe_check *c, const char *what, int rc)
{
	rxe_check(c, false, "%s: %s (%s)", what, ps_strerror(rc), ps_err_name(rc));
	return rc;
}

void rxe_info(struct rxe_check *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline(c, "    ", fmt, ap);
	va_end(ap);
}

/* ---- data ------------------------------------------------------------------------------------ */

/* Multiplicative hashing of the offset: a block shifted or copied to the wrong place shows. */
static uint8_t pattern_byte(uint32_t seed, size_t i)
{
	uint32_t x = (uint32_t)i * 2654435761u + seed * 40503u;

	return (uint8_t)(x >> 24 ^ x >> 11 ^ (uint32_t)(i >> 12));
}

void rxe_pattern_fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern_byte(seed, i);
}

size_t rxe_pattern_mismatch(const uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pattern_byte(seed, i))
			return i;
	return len;
}

/* ---- environment ----------------------------------------------------------------------------- */

bool rxe_in_guest(void)
{
	const char *s = getenv("PS_IN_RXE_GUEST");

	return s && strcmp(s, "1") == 0;
}

int rxe_device_present(struct rxe_check *c, const char *test_name)
{
	struct ibv_device **list;
	int n = 0, rc;

	rc = ps_vshim_device_list_get(&list, &n);
	if (rc == 0) {
		ps_vshim_device_list_free(list);
	} else if (rc != -ENOSYS) { /* ENOSYS: no RDMA in this kernel, the same as no device */
		rxe_failed(c, "list RDMA devices", rc);
		return 1;
	}
	if (n > 0)
		return 0;
	if (rxe_in_guest()) {
		rxe_check(c, false, "no RDMA device inside the rxe guest");
		return 1;
	}
	printf("%s: SKIP: no RDMA device (%s)\n", test_name,
	       rc ? ps_strerror(rc) : "empty device list");
	return RXE_EXIT_SKIP;
}

const char *rxe_default_addr(void)
{
	const char *s = getenv("PS_RXE1_ADDR");

	if (!s || !*s)
		s = getenv("PS_RXE0_ADDR");
	return s && *s ? s : "192.0.2.2";
}

void rxe_addr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

int rxe_addr_parse(const char *s, uint16_t port, struct sockaddr_storage *out)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res;

	if (getaddrinfo(s, NULL, &hints, &res))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	rxe_addr_set_port(out, port);
	return 0;
}

/* ---- hw_counters ----------------------------------------------------------------------------- */

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

int rxe_counters_read(const char *dev, int port, struct rxe_pkt_counters *out)
{
	int rc = counter_read(dev, port, "sent_pkts", &out->sent);

	return rc ? rc : counter_read(dev, port, "rcvd_pkts", &out->rcvd);
}

/* ---- cm events ------------------------------------------------------------------------------- */

int rxe_cm_expect(struct rxe_check *c, struct rdma_event_channel *ch, enum rdma_cm_event_type type,
		  struct rdma_cm_event **out)
{
	struct rdma_cm_event *ev;
	char what[128];
	int rc;

	rc = ps_vshim_cm_event_get(ch, RXE_CM_TIMEOUT_MS, &ev);
	if (rc) {
		snprintf(what, sizeof(what), "waiting for %s", ps_vshim_cm_event_str(type));
		return rxe_failed(c, what, rc);
	}
	if (ev->event != type) {
		rxe_check(c, false, "expected %s, got %s (status %d)", ps_vshim_cm_event_str(type),
			  ps_vshim_cm_event_str(ev->event), ev->status);
		rc = ev->event == RDMA_CM_EVENT_DISCONNECTED ? -ECONNRESET : -EPROTO;
		ps_vshim_cm_event_ack(ev);
		return rc;
	}
	*out = ev;
	return 0;
}

int rxe_cm_expect_ack(struct rxe_check *c, struct rdma_event_channel *ch,
		      enum rdma_cm_event_type type)
{
	struct rdma_cm_event *ev;
	int rc = rxe_cm_expect(c, ch, type, &ev);

	return rc ? rc : ps_vshim_cm_event_ack(ev);
}

/* ---- completions ----------------------------------------------------------------------------- */

/*
 * With a channel: arm, poll again, then sleep (a completion landing between the empty poll and
 * the arming would otherwise wait for the next one). Without: busy-poll, as the data path will,
 * yielding so that the guest's two vCPUs still run rxe's kernel work.
 */
int rxe_cq_next(struct rxe_cq *q, struct ibv_wc *wc, uint64_t deadline)
{
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	int n, rc;

	for (;;) {
		n = ps_vshim_cq_poll(q->cq, 1, wc);
		if (n != 0)
			return n < 0 ? n : 0;
		if (!q->ch) {
			if (ps_clock_remaining_ms(deadline) == 0)
				return PS_ETIMEOUT;
			sched_yield();
			continue;
		}
		if (!q->armed) {
			rc = ps_vshim_cq_req_notify(q->cq, 0);
			if (rc)
				return rc;
			q->armed = true;
			continue;
		}
		rc = ps_vshim_cq_event_get(q->ch, ps_clock_remaining_ms(deadline), &ev_cq, &ev_ctx);
		if (rc)
			return rc;
		/* One at a time keeps teardown simple; a data path would ack in batches. */
		ps_vshim_cq_event_ack(ev_cq, 1);
		q->armed = false;
	}
}

int rxe_cq_expect(struct rxe_check *c, struct rxe_cq *q, uint32_t qp_num, struct rxe_wc_expect *exp,
		  size_t n)
{
	uint64_t deadline = ps_clock_deadline_ms(RXE_CQ_TIMEOUT_MS);
	struct rxe_wc_expect *e;
	struct ibv_wc wc;
	size_t got, i;
	int rc;

	for (got = 0; got < n; got++) {
		rc = rxe_cq_next(q, &wc, deadline);
		if (rc)
			return rxe_failed(c, "waiting for completions", rc);
		for (i = 0; i < n && (exp[i].seen || exp[i].wr_id != wc.wr_id); i++)
			;
		if (i == n) {
			rxe_check(c, false, "unexpected completion: wr_id %" PRIu64 ", status %s",
				  wc.wr_id, ps_vshim_wc_status_str(wc.status));
			return -EPROTO;
		}
		e = &exp[i];
		e->seen = true;
		e->wc = wc;
		if (!rxe_check(c,
			       wc.status == IBV_WC_SUCCESS && wc.opcode == e->opcode &&
				       wc.qp_num == qp_num &&
				       (e->byte_len == UINT32_MAX || wc.byte_len == e->byte_len),
			       "completion wr_id %" PRIu64
			       ": status %s, opcode %d (want %d), byte_len %u",
			       e->wr_id, ps_vshim_wc_status_str(wc.status), wc.opcode, e->opcode,
			       wc.byte_len))
			return -EPROTO;
	}
	return 0;
}
