/*
 * Running one call's requests over the data plane.
 *
 * A call is a list of requests ("chunks"), each for one destination. They are sent with up to
 * max_inflight in flight per destination - enough to cover the round trip without one server
 * thread hoarding every request slot - and answered by a REPLY (pushes, DECLARE, failed pulls)
 * or a write_imm whose immediate is the request id (a pull's rows landing). A request slot is
 * free again when both its answer and its send completion arrived: the send completion is what
 * proves the transport no longer reads the gather list, which may point into caller memory.
 *
 * On the first failure no further request is sent, but those in flight are waited for: a call
 * never returns while the transport may still read or write caller memory. On the deadline the
 * connections with requests in flight are closed (after ps_tp_conn_close nothing lands), and
 * reconnected by the next call.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

#define POLL_BATCH 32 /* completions per poll, as SPDK does */

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
/* The wire is little-endian: on a big-endian host every id and float is converted (staged). */
#define HOST_IS_WIRE 0
#else
#define HOST_IS_WIRE 1
#endif

static bool is_pull(uint8_t op)
{
	return op == PS_DP_PULL_DENSE || op == PS_DP_PULL_SPARSE || op == PS_DP_PULL_HASH;
}

/* Copy @n 8-byte words to little-endian wire order. */
static void put_words(uint8_t *dst, const void *src, size_t nwords)
{
#if HOST_IS_WIRE
	memcpy(dst, src, nwords * 8);
#else
	const uint64_t *s = src;

	for (size_t i = 0; i < nwords; i++) {
		uint64_t v = htole64(s[i]);

		memcpy(dst + i * 8, &v, 8);
	}
#endif
}

/* Copy @n floats to wire order. */
static void put_floats(uint8_t *dst, const float *src, size_t n)
{
#if HOST_IS_WIRE
	memcpy(dst, src, n * 4);
#else
	for (size_t i = 0; i < n; i++) {
		uint32_t v;

		memcpy(&v, &src[i], 4);
		v = htole32(v);
		memcpy(dst + i * 4, &v, 4);
	}
#endif
}

/* A free slot index with a block of dev @dev, or -1. */
static int slot_get(struct ps_client *c, uint32_t dev)
{
	if (c->slots_used == c->nslots)
		return -1;
	for (uint32_t i = 0; i < c->nslots; i++) {
		if (!c->slots[i].req_id) {
			c->slots[i].blk = ps_tp_pool_get(c->devs[dev].pool);
			if (!c->slots[i].blk)
				return -1;
			c->slots[i].dev = dev;
			if (!++c->req_gen || !(c->req_gen & 0xffff))
				c->req_gen = 1;
			c->slots[i].req_id = (c->req_gen & 0xffff) << 16 | i;
			c->slots[i].send_done = c->slots[i].answered = false;
			c->slots_used++;
			return (int)i;
		}
	}
	return -1;
}

static void slot_put(struct ps_client *c, struct cli_slot *s)
{
	ps_tp_pool_put(c->devs[s->dev].pool, s->blk);
	s->blk = NULL;
	s->req_id = 0;
	c->slots_used--;
}

static struct cli_slot *slot_of(struct ps_client *c, uint32_t req_id)
{
	uint32_t i = req_id & 0xffff;

	return i < c->nslots && req_id && c->slots[i].req_id == req_id ? &c->slots[i] : NULL;
}

/*
 * Record a chunk's answer. A stale version, and -E2BIG for a pull of more than one row (the
 * server's bounce budget: the destination's rows per pull are halved), mark it for another
 * round; the first other failure stops the call.
 */
static void chunk_answer(struct ps_client *c, struct cli_call *call, struct cli_slot *s, int st)
{
	struct cli_chunk *ch = &call->chunks[s->chunk];
	struct cli_dest *ds = &c->dests[s->dest];
	uint32_t rows = call->op == PS_DP_PULL_DENSE ? ch->n / call->var->spec.width : ch->n;

	if (s->answered)
		return;
	s->answered = true;
	ds->inflight--;
	ch->state = CH_DONE;
	ch->status = st;
	if (st == PS_ESTALE_VERSION) {
		ch->state = CH_RETRY;
		call->nstale++;
		call->nretry++;
	} else if (st == -E2BIG && is_pull(call->op) && rows > 1) {
		ch->state = CH_RETRY;
		call->nretry++;
		/* Half, rounded up: the same rows again go in two requests, not three. */
		if (!ds->pull_rows || (rows + 1) / 2 < ds->pull_rows)
			ds->pull_rows = (rows + 1) / 2;
	} else if (st && !call->status) {
		call->status = st;
		call->failed = s->chunk;
	}
}

static void slot_maybe_free(struct ps_client *c, struct cli_slot *s)
{
	if (s->answered && s->send_done)
		slot_put(c, s);
}

/*
 * The payload of a chunk: its ids/keys and gradients, gathered from caller memory when it is
 * one registered run, else copied behind the header in the request block.
 */
static int build(struct ps_client *c, struct cli_call *call, struct cli_chunk *ch, uint8_t *blk,
		 struct ps_tp_sge *sge, uint32_t *payload)
{
	uint32_t dev = c->dests[ch->dest].dev;
	const struct ps_tp_mr *bmr = ps_tp_pool_mr(c->devs[dev].pool);
	uint32_t kb = call->key_bytes, rb = call->row_bytes, off = PS_DP_REQ_BYTES, nsge = 1;
	bool run = ch->n && call->order && cli_run_contiguous(call->order, ch->first, ch->n);
	bool dense = call->op == PS_DP_PULL_DENSE || call->op == PS_DP_PUSH_DENSE;
	bool push = call->op == PS_DP_PUSH_SPARSE || call->op == PS_DP_PUSH_HASH;

	*payload = 0;
	sge[0] = (struct ps_tp_sge){.addr = blk, .len = PS_DP_REQ_BYTES, .mr = bmr};
	if (call->op == PS_DP_DECLARE) {
		ps_dp_declare_encode(&call->decl[ch - call->chunks], blk + off);
		sge[0].len += PS_DP_DECLARE_BYTES;
		return 1;
	}
	if (dense) {
		if (call->op == PS_DP_PULL_DENSE)
			return 1;
		*payload = ch->n * 4;
		if (HOST_IS_WIRE && call->gbuf) {
			sge[1] = (struct ps_tp_sge){.addr = call->grads + ch->fbegin,
						    .len = ch->n * 4,
						    .mr = call->gbuf->mr[dev]};
			return 2;
		}
		put_floats(blk + off, call->grads + ch->fbegin, ch->n);
		sge[0].len += ch->n * 4;
		c->st.bytes_staged += (uint64_t)ch->n * 4;
		return 1;
	}
	/* ids or keys */
	if (HOST_IS_WIRE && run && call->kbuf) {
		sge[nsge++] = (struct ps_tp_sge){.addr = (const uint8_t *)call->keys +
							 (size_t)call->order[ch->first] * kb,
						 .len = ch->n * kb,
						 .mr = call->kbuf->mr[dev]};
	} else {
		for (uint32_t k = 0; k < ch->n; k++)
			put_words(blk + off + k * kb,
				  (const uint8_t *)call->keys +
					  (size_t)call->order[ch->first + k] * kb,
				  kb / 8);
		off += ch->n * kb;
		sge[0].len = off;
		c->st.bytes_staged += (uint64_t)ch->n * kb;
	}
	if (!push)
		return (int)nsge;
	*payload = ch->n * rb;
	if (HOST_IS_WIRE && run && call->gbuf) {
		sge[nsge++] = (struct ps_tp_sge){.addr = (const uint8_t *)call->grads +
							 (size_t)call->order[ch->first] * rb,
						 .len = ch->n * rb,
						 .mr = call->gbuf->mr[dev]};
		return (int)nsge;
	}
	/* Staged rows follow staged keys in the block; after gathered keys they need their own
	 * element, since the block and the caller's keys alternate. */
	for (uint32_t k = 0; k < ch->n; k++)
		put_floats(blk + off + k * rb,
			   (const float *)((const uint8_t *)call->grads +
					   (size_t)call->order[ch->first + k] * rb),
			   rb / 4);
	if (nsge == 1) {
		sge[0].len = off + ch->n * rb;
	} else {
		sge[nsge++] = (struct ps_tp_sge){.addr = blk + off, .len = ch->n * rb, .mr = bmr};
	}
	c->st.bytes_staged += (uint64_t)ch->n * rb;
	return (int)nsge;
}

/* Send chunk @ci on its destination. 0, -EAGAIN (no slot or credit: later), or a failure. */
static int send_chunk(struct ps_client *c, struct cli_call *call, uint32_t ci)
{
	struct cli_chunk *ch = &call->chunks[ci];
	struct cli_dest *ds = &c->dests[ch->dest];
	struct ps_tp_sge sge[4];
	struct ps_dp_req r;
	struct ps_tp_rbuf rb = {0};
	struct cli_slot *s;
	uint32_t payload;
	int si, nsge, rc;

	si = slot_get(c, ds->dev);
	if (si < 0)
		return -EAGAIN;
	s = &c->slots[si];
	s->chunk = ci;
	s->dest = ch->dest;
	nsge = build(c, call, ch, s->blk, sge, &payload);
	if (is_pull(call->op)) {
		uint32_t len = call->op == PS_DP_PULL_DENSE ? ch->n * 4 : ch->n * call->row_bytes;

		if (len && ps_tp_mr_rbuf(ch->mr, ch->dst, len, &rb)) {
			slot_put(c, s);
			return PS_EBAD_MESSAGE; /* a bug: the result range is outside its region */
		}
	}
	memset(&r, 0, sizeof(r));
	r.magic = PS_DP_REQ_MAGIC;
	r.version = PS_DP_VERSION;
	r.op = call->op;
	r.flags = call->flags;
	r.req_id = s->req_id;
	r.var_id = call->var->id;
	r.count = ch->n;
	r.width = call->var->spec.width;
	r.cluster_version = c->cluster_version;
	r.begin = ch->fbegin;
	r.worker_id = c->o.worker_id;
	r.step = call->step;
	r.dst_addr = rb.addr;
	r.dst_rkey = rb.rkey;
	r.dst_len = rb.len;
	ps_dp_req_encode(&r, s->blk);
	rc = ps_tp_send(ds->conn, sge, nsge, s);
	if (rc) {
		slot_put(c, s);
		return rc;
	}
	ch->status = 0;
	ch->state = CH_SENT;
	ds->inflight++;
	c->st.requests++;
	c->st.bytes_pushed += payload;
	return 0;
}

/* Send what the windows allow, round-robin over destinations. */
static void issue(struct ps_client *c, struct cli_call *call, uint64_t deadline)
{
	uint32_t w = c->o.max_inflight;
	bool more = true;

	while (more && !call->status) {
		more = false;
		for (uint32_t d = 0; d < c->ndests && !call->status; d++) {
			struct cli_dest *ds = &c->dests[d];
			uint32_t ci;
			int rc;

			if (ds->next == ds->end || ds->inflight >= w)
				continue;
			ci = c->corder[ds->next];
			rc = cli_dest_connect(c, d, deadline);
			if (!rc)
				rc = send_chunk(c, call, ci);
			if (rc == -EAGAIN)
				continue;
			ds->next++;
			if (rc) {
				char name[160];

				cli_dest_name(c, d, name, sizeof(name));
				call->chunks[ci].state = CH_DONE;
				call->chunks[ci].status = rc;
				call->status = rc;
				call->failed = ci;
				ps_log_debug(CLI_LOG, "request to %s failed: %s", name,
					     ps_strerror(rc));
				if (rc == PS_EPEER_LOST && ds->conn) {
					ps_tp_conn_close(ds->conn);
					ds->conn = NULL;
				}
				return;
			}
			more = true;
		}
	}
}

/* A connection is gone: everything in flight on it failed. */
static void dest_lost(struct ps_client *c, struct cli_call *call, uint32_t d, int why)
{
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct cli_slot *s = &c->slots[i];

		if (!s->req_id || s->dest != d)
			continue;
		chunk_answer(c, call, s, why);
		slot_put(c, s);
	}
	ps_tp_conn_close(c->dests[d].conn);
	c->dests[d].conn = NULL;
	c->dests[d].inflight = 0;
	/* The server may come back elsewhere (new ports): re-read the cluster before reconnecting. */
	c->refresh_due = true;
}

static void on_event(struct ps_client *c, struct cli_call *call, const struct ps_tp_event *ev)
{
	uint32_t d = (uint32_t)(uintptr_t)ps_tp_conn_user(ev->conn) - 1;
	struct ps_dp_reply rep;
	struct cli_slot *s;
	int rc;

	if (d >= c->ndests || c->dests[d].conn != ev->conn)
		return; /* not a connection of the current table */
	switch (ev->type) {
	case PS_TP_EV_RECV:
		rc = ps_dp_reply_decode(ev->buf, ev->len, &rep);
		ps_tp_recv_release(ev->conn, ev->buf);
		if (rc) {
			ps_log_warn(CLI_LOG, "malformed reply from %s; closing the connection",
				    ps_tp_conn_peer(ev->conn));
			dest_lost(c, call, d, PS_EBAD_MESSAGE);
			return;
		}
		s = slot_of(c, rep.req_id);
		if (!s)
			return;
		/* A pull answered by a REPLY failed; a REPLY saying 0 to a pull is a server bug. */
		if (is_pull(call->op) && !rep.status)
			rep.status = PS_EBAD_MESSAGE;
		if (rep.status == PS_ESTALE_VERSION)
			ps_log_debug(CLI_LOG, "server holds cluster version 0x%016llx",
				     (unsigned long long)rep.cluster_version);
		chunk_answer(c, call, s, rep.status);
		slot_maybe_free(c, s);
		break;
	case PS_TP_EV_WRITE_IMM:
		s = slot_of(c, ev->imm);
		if (!s)
			return;
		{
			const struct cli_chunk *ch = &call->chunks[s->chunk];
			uint32_t want =
				call->op == PS_DP_PULL_DENSE ? ch->n * 4 : ch->n * call->row_bytes;

			c->st.bytes_pulled += ev->len;
			chunk_answer(c, call, s, ev->len == want ? 0 : PS_EBAD_MESSAGE);
		}
		slot_maybe_free(c, s);
		break;
	case PS_TP_EV_SEND_DONE:
	case PS_TP_EV_WRITE_DONE:
		s = ev->ctx;
		if (!s || !s->req_id)
			return;
		s->send_done = true;
		if (ev->status)
			chunk_answer(c, call, s, ev->status);
		slot_maybe_free(c, s);
		break;
	case PS_TP_EV_CLOSED:
		dest_lost(c, call, d, ev->status ? ev->status : PS_EPEER_LOST);
		break;
	default:
		break;
	}
}

/* Group the chunks by destination (stable) into each destination's queue. */
static void queue_chunks(struct ps_client *c, struct cli_call *call)
{
	uint32_t *cs = c->cstart, sum = 0;

	memset(cs, 0, sizeof(*cs) * ((size_t)c->ndests + 1));
	for (uint32_t i = 0; i < call->nchunks; i++)
		cs[call->chunks[i].dest]++;
	for (uint32_t d = 0; d < c->ndests; d++) {
		uint32_t n = cs[d];

		cs[d] = sum;
		c->dests[d].next = c->dests[d].end = sum;
		sum += n;
	}
	for (uint32_t i = 0; i < call->nchunks; i++)
		c->corder[c->dests[call->chunks[i].dest].end++] = i;
}

int cli_dp_run(struct ps_client *c, struct cli_call *call, uint64_t deadline)
{
	struct ps_tp_event evs[POLL_BATCH];
	int n = 0, rc;

	call->nstale = call->nretry = 0;
	call->status = 0;
	for (uint32_t i = 0; i < call->nchunks; i++)
		call->chunks[i].state = CH_QUEUED;
	queue_chunks(c, call);
	for (;;) {
		bool queued = false;

		issue(c, call, deadline);
		for (uint32_t d = 0; d < c->ndests && !call->status; d++)
			queued |= c->dests[d].next < c->dests[d].end;
		if (!c->slots_used && !queued)
			return 0;
		if (!ps_clock_remaining_ms(deadline))
			break;
		n = cli_poll(c, evs, POLL_BATCH,
			     ps_clock_remaining_ms(deadline) < 100 ? ps_clock_remaining_ms(deadline)
								   : 100);
		if (n < 0)
			break;
		for (int i = 0; i < n; i++)
			on_event(c, call, &evs[i]);
	}
	/* Out of time (or the loop failed): cancel what is in flight by closing its connection. */
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].req_id)
			dest_lost(c, call, c->slots[i].dest, PS_ETIMEOUT);
	rc = n < 0 ? n : PS_ETIMEOUT;
	call->status = rc;
	return rc;
}
