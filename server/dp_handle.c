/*
 * One data-plane request on its owner thread: decode, validate, then pull (a gather list over
 * the rows, one write_imm) or push (the store applies gradients read in place from the receive
 * buffer), and the answer.
 *
 * Validation comes first and in a fixed order, so every failure is answered with a status and
 * leaves every row as it was (the store validates a batch whole before changing anything, and
 * the checks here - lengths, version, variable, kind, width, destination size, routing - come
 * before the store is called at all):
 *
 *   1. header          does not decode: the connection is closed (nothing to answer to)
 *   2. length          the message is not exactly header + the payload count/width/flags imply:
 *                      PS_EBAD_MESSAGE
 *   3. cluster version none known yet: PS_ENOT_READY; different: PS_ESTALE_VERSION
 *   4. variable        unknown: PS_EUNKNOWN_VAR (DECLARE: see dp_var.c)
 *   5. op vs kind      a dense op on a sparse variable, KEY128 on a hash64 one...: -EINVAL
 *   6. width           not the declared one: -EINVAL
 *   7. destination     a pull whose dst_len is below the bytes it asks for: -EMSGSIZE
 *   8. routing         an id outside this thread's rows, a key of another bucket range or
 *                      thread: PS_EOUT_OF_RANGE
 *   9. size            a pull needing more bounce memory than one pull may take: -E2BIG
 *
 * While the data plane is paused (a checkpoint is being taken or a restore switched in) every
 * request waits on its connection, unhandled, and is handled from scratch after the resume.
 *
 * Hash deletions free rows that the next new key reuses, so a deletion waits until no pull
 * write of this thread is in flight (a zero-copy gather list could still be reading the rows),
 * and new pulls wait behind it so that it cannot starve.
 *
 * Ids, keys and gradients are read in place (zero copy): little-endian on the wire, so only a
 * little-endian host may do that.
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "scheduler/placement.h"
#include "server/dp_internal.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the data plane reads little-endian ids and floats in place"
#endif

/* handle_req() results besides a status to reply with. */
#define ANSWERED 1 /* a pull's rows are on their way: no reply */

int dp_check_ids(const struct dp_var *v, const uint64_t *ids, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] < v->begin || ids[i] >= v->end)
			return PS_EOUT_OF_RANGE;
	}
	return 0;
}

int dp_check_keys(const struct dp_var *v, const uint64_t *keys, uint32_t n, bool key128)
{
	uint32_t threads = v->t->dp->nthreads, me = v->t->idx;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t h = key128 ? ps_placement_key_hash128(keys[2 * i + 1], keys[2 * i])
				    : ps_placement_key_hash(keys[i]);
		uint32_t b = ps_placement_bucket(h);

		if (b < v->begin || b >= v->end || ps_placement_key_shard(h, threads) != me)
			return PS_EOUT_OF_RANGE;
	}
	return 0;
}

/* ---- lengths ------------------------------------------------------------------------------ */

static uint32_t key_bytes(const struct ps_dp_req *r)
{
	return r->flags & PS_DP_F_KEY128 ? 16 : 8;
}

/* The payload length the header implies, or UINT64_MAX when it overflows. */
static uint64_t payload_len(const struct ps_dp_req *r)
{
	uint64_t grads, keys;

	switch (r->op) {
	case PS_DP_DECLARE:
		return PS_DP_DECLARE_BYTES;
	case PS_DP_PULL_DENSE:
		return 0;
	case PS_DP_PUSH_DENSE:
		return (uint64_t)r->count * 4;
	case PS_DP_PULL_SPARSE:
		return (uint64_t)r->count * 8;
	case PS_DP_PULL_HASH:
	case PS_DP_DELETE_HASH:
		return (uint64_t)r->count * key_bytes(r);
	default:
		/* Pushes of rows: count keys, then count x width floats. */
		keys = (uint64_t)r->count * (r->op == PS_DP_PUSH_HASH ? key_bytes(r) : 8);
		if (__builtin_mul_overflow((uint64_t)r->count * r->width, 4, &grads) ||
		    __builtin_add_overflow(keys, grads, &keys))
			return UINT64_MAX;
		return keys;
	}
}

/* Does the op fit the variable's kind (and the key width its flag says)? */
static bool op_fits(const struct ps_dp_req *r, const struct dp_var *v)
{
	switch (r->op) {
	case PS_DP_PULL_DENSE:
	case PS_DP_PUSH_DENSE:
		return v->kind == PS_VAR_DENSE;
	case PS_DP_PULL_SPARSE:
	case PS_DP_PUSH_SPARSE:
		return v->kind == PS_VAR_SPARSE;
	default:
		return v->kind == (r->flags & PS_DP_F_KEY128 ? PS_VAR_HASH128 : PS_VAR_HASH64);
	}
}

/* ---- pulls ---------------------------------------------------------------------------------- */

/* A gather list in the making: zero-copy entries, then (past gather_zc) bounce copies. */
struct gather {
	struct dp_thread *t;
	const struct dp_var *v;
	uint32_t nsge;
	bool copy;
	struct dp_bounce bb;
};

static int g_bytes(struct gather *g, const void *src, uint32_t len)
{
	struct dp_thread *t = g->t;
	struct ps_tp_sge *last = g->nsge ? &t->sgl[g->nsge - 1] : NULL;
	const struct ps_tp_mr *mr;

	if (!g->copy && g->nsge >= t->gather_zc)
		g->copy = true;
	if (g->copy)
		return dp_bounce_put(&g->bb, src, len, t->sgl, &g->nsge);
	mr = dp_var_mr(g->v, src);
	/* Adjacent rows (dense rows without slots, 64-byte multiples) become one entry. */
	if (last && last->mr == mr && (const uint8_t *)last->addr + last->len == src &&
	    last->len <= UINT32_MAX - len) {
		last->len += len;
		return 0;
	}
	t->sgl[g->nsge++] = (struct ps_tp_sge){.addr = src, .len = len, .mr = mr};
	return 0;
}

/* A row that has no stable address (a hash key not admitted): its initial value, copied. */
static int g_init_row(struct gather *g, const uint64_t *key, bool key128)
{
	struct dp_thread *t = g->t;

	ps_store_init_value(g->v->part, key[0], key128 ? key[1] : 0, t->row_tmp);
	return dp_bounce_put(&g->bb, t->row_tmp, g->v->width * 4, t->sgl, &g->nsge);
}

/*
 * Can the pull ever fit its bounce budget? @pieces gather entries of @piece_bytes each, all of
 * them copied or only those past gather_zc. Checked before anything (a hash pull creates rows)
 * so that a pull refused for size changes nothing.
 */
static int bounce_fits(const struct dp_thread *t, uint64_t pieces, uint64_t piece_bytes,
		       bool all_copied)
{
	uint64_t copied = all_copied ? pieces : pieces > t->gather_zc ? pieces - t->gather_zc : 0;
	uint64_t blocks = (copied * piece_bytes + DP_BOUNCE_DATA - 1) / DP_BOUNCE_DATA;

	return blocks <= t->bounce_max_pull ? 0 : -E2BIG;
}

/* Post the gather list as one write_imm. ANSWERED, -EAGAIN, a status, or a broken conn. */
static int pull_post(struct dp_conn *c, const struct ps_dp_req *r, struct gather *g, int *status)
{
	struct dp_thread *t = c->t;
	struct ps_tp_rbuf dst = {.addr = r->dst_addr, .rkey = r->dst_rkey, .len = r->dst_len};
	struct dp_blk *ctx = g->bb.head;
	int rc;

	/* Every pull gets a ctx, so its completion tells when its rows are no longer read. */
	if (!ctx) {
		ctx = ps_tp_pool_get(t->replies);
		if (!ctx)
			return -EAGAIN;
		memset(ctx, 0, sizeof(*ctx));
		ctx->type = DP_BLK_PULL;
	}
	rc = ps_tp_write_imm(c->tc, t->sgl, (int)g->nsge, &dst, r->req_id, ctx);
	if (rc) {
		if (!g->bb.head)
			ps_tp_pool_put(t->replies, ctx);
		dp_bounce_release(&g->bb);
		if (rc == -EAGAIN || rc == PS_EPEER_LOST || rc == -ENOTCONN)
			return rc;
		*status = rc; /* the transport refused the list itself: nothing was written */
		return 0;
	}
	dp_inflight_add(c, ctx);
	atomic_fetch_add_explicit(&t->pulls_inflight, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->n_bounced, g->bb.bytes, memory_order_relaxed);
	return ANSWERED;
}

/* Finish a gather (or give its blocks back on failure) and post it. */
static int pull_finish(struct dp_conn *c, const struct ps_dp_req *r, struct gather *g, int rc,
		       int *status)
{
	if (rc == -EAGAIN) {
		dp_bounce_release(&g->bb);
		return -EAGAIN;
	}
	if (rc) {
		dp_bounce_release(&g->bb);
		*status = rc;
		return 0;
	}
	return pull_post(c, r, g, status);
}

static int pull_dense(struct dp_conn *c, const struct ps_dp_req *r, struct dp_var *v, int *status)
{
	struct gather g = {.t = c->t, .v = v, .copy = r->flags & PS_DP_F_SNAPSHOT};
	unsigned __int128 lo = (unsigned __int128)v->begin * v->width;
	unsigned __int128 hi = (unsigned __int128)v->end * v->width;
	uint64_t f = r->begin, end = r->begin + r->count, rows;
	int rc = 0;

	g.bb.t = c->t;
	if (hi > UINT64_MAX)
		hi = UINT64_MAX; /* float indexes are u64 on the wire */
	if (r->count && (r->begin < lo || (unsigned __int128)r->begin + r->count > hi)) {
		*status = PS_EOUT_OF_RANGE;
		return 0;
	}
	/* Rows touched: each is at most one gather entry. */
	rows = r->count ? (end - 1) / v->width - r->begin / v->width + 1 : 0;
	rc = bounce_fits(c->t, rows, (uint64_t)v->width * 4, g.copy);
	while (!rc && f < end) {
		uint64_t row = f / v->width, col = f % v->width;
		uint64_t n = v->width - col < end - f ? v->width - col : end - f;

		rc = g_bytes(&g, ps_store_row_addr(v->part, row) + col, (uint32_t)n * 4);
		f += n;
	}
	return pull_finish(c, r, &g, rc, status);
}

static int pull_rows(struct dp_conn *c, const struct ps_dp_req *r, struct dp_var *v,
		     const uint64_t *keys, int *status)
{
	struct dp_thread *t = c->t;
	struct gather g = {.t = t, .v = v, .copy = r->flags & PS_DP_F_SNAPSHOT};
	bool key128 = r->flags & PS_DP_F_KEY128, hash = v->kind >= PS_VAR_HASH64;
	bool admit_all = v->spec.admit_prob == 0.f || v->spec.admit_prob == 1.f;
	uint32_t n = r->count, kw = key128 ? 2 : 1;
	int rc;

	g.bb.t = t;
	rc = hash ? dp_check_keys(v, keys, n, key128) : dp_check_ids(v, keys, n);
	if (!rc && n > t->scratch_batch)
		rc = -E2BIG; /* cannot happen: a message holds fewer ids than the scratch */
	/* With admission, any key may turn out not admitted and be copied. */
	if (!rc)
		rc = bounce_fits(t, n, (uint64_t)v->width * 4, g.copy || (hash && !admit_all));
	if (rc) {
		*status = rc;
		return 0;
	}
	if (!n)
		return pull_post(c, r, &g, status);
	if (!hash)
		rc = ps_store_row_addrs(v->part, keys, n, t->addrs);
	else if (key128)
		rc = ps_store_hash_row_addrs128(v->part, t->scratch,
						(const struct ps_key128 *)(const void *)keys, n,
						t->addrs);
	else
		rc = ps_store_hash_row_addrs64(v->part, t->scratch, keys, n, t->addrs);
	for (uint32_t i = 0; !rc && i < n; i++) {
		if (t->addrs[i])
			rc = g_bytes(&g, t->addrs[i], v->width * 4);
		else
			rc = g_init_row(&g, keys + (size_t)i * kw, key128);
	}
	return pull_finish(c, r, &g, rc, status);
}

/* ---- pushes --------------------------------------------------------------------------------- */

static int push_dense(struct dp_thread *t, const struct ps_dp_req *r, struct dp_var *v,
		      const float *grads)
{
	uint64_t w = v->width, row0, nrows;

	if (r->begin % w || r->count % w)
		return -EINVAL; /* gradients are applied to whole rows */
	row0 = r->begin / w;
	nrows = r->count / w;
	if (nrows && (row0 < v->begin || row0 > v->end || nrows > v->end - row0))
		return PS_EOUT_OF_RANGE;
	if (r->flags & PS_DP_F_SYNC)
		return dp_sync_push(t, v, r, NULL, grads);
	if (!nrows)
		return 0;
	if (row0 == v->begin && nrows == v->end - v->begin)
		return ps_store_dense_push(v->part, grads, r->count);
	/* A slice of the shard (a worker split a big tensor over messages): rows by id. */
	if (nrows > t->scratch_batch)
		return -E2BIG;
	for (uint64_t i = 0; i < nrows; i++)
		t->ids[i] = row0 + i;
	return ps_store_push(v->part, t->scratch, t->ids, nrows, grads, v->width);
}

static int push_rows(struct dp_thread *t, const struct ps_dp_req *r, struct dp_var *v,
		     const uint64_t *keys)
{
	bool key128 = r->flags & PS_DP_F_KEY128, hash = v->kind >= PS_VAR_HASH64;
	uint32_t n = r->count;
	const float *grads = (const float *)(const void *)((const uint8_t *)keys +
							   (size_t)n * (key128 ? 16 : 8));
	int rc;

	rc = hash ? dp_check_keys(v, keys, n, key128) : dp_check_ids(v, keys, n);
	if (rc)
		return rc;
	if (r->flags & PS_DP_F_SYNC)
		return dp_sync_push(t, v, r, keys, grads);
	if (!n)
		return 0;
	if (n > t->scratch_batch)
		return -E2BIG;
	if (!hash)
		return ps_store_push(v->part, t->scratch, keys, n, grads, v->width);
	if (key128)
		return ps_store_hash_push128(v->part, t->scratch,
					     (const struct ps_key128 *)(const void *)keys, n, grads,
					     v->width);
	return ps_store_hash_push64(v->part, t->scratch, keys, n, grads, v->width);
}

/* ---- hash deletions ------------------------------------------------------------------------- */

static int delete_keys(struct dp_thread *t, struct dp_pend *p, const struct ps_dp_req *r,
		       struct dp_var *v, const uint64_t *keys)
{
	bool key128 = r->flags & PS_DP_F_KEY128;
	int rc;

	rc = dp_check_keys(v, keys, r->count, key128);
	if (rc || !r->count || !v->part)
		return rc;
	/* A freed row is reused by the next new key: no gather list may still be reading it. */
	if (atomic_load_explicit(&t->pulls_inflight, memory_order_acquire)) {
		if (!p->delete_wait) {
			p->delete_wait = true;
			t->deletes_waiting++;
		}
		return -EAGAIN;
	}
	if (key128)
		return ps_store_hash_delete128(
			v->part, (const struct ps_key128 *)(const void *)keys, r->count, NULL);
	return ps_store_hash_delete64(v->part, keys, r->count, NULL);
}

/* ---- one request ---------------------------------------------------------------------------- */

/* A new cluster version (a restore): partial synchronous steps belong to the old one. */
static void version_changed(struct dp_thread *t, uint64_t version)
{
	for (uint32_t i = 0; i < t->vars.cap; i++) {
		if (t->vars.tab[i])
			dp_sync_reset(t->vars.tab[i]);
	}
	t->seen_version = version;
}

/* ANSWERED, 0 with *status to reply, -EAGAIN, or a broken connection. */
static int handle_req(struct dp_conn *c, struct dp_pend *p, const struct ps_dp_req *r,
		      const uint8_t *buf, uint32_t len, int *status)
{
	struct dp_thread *t = c->t;
	uint64_t version = atomic_load_explicit(&t->dp->cluster_version, memory_order_acquire);
	const uint8_t *payload = buf + PS_DP_REQ_BYTES;
	uint32_t plen = len - PS_DP_REQ_BYTES;
	uint64_t want;
	struct dp_var *v;

	if (version != t->seen_version)
		version_changed(t, version);
	*status = 0;
	if (payload_len(r) != plen) {
		*status = PS_EBAD_MESSAGE;
		return 0;
	}
	if (!version || r->cluster_version != version) {
		*status = version ? PS_ESTALE_VERSION : PS_ENOT_READY;
		return 0;
	}
	if (r->op == PS_DP_DECLARE) {
		*status = dp_declare(t, r, payload, plen);
		return 0;
	}
	v = dp_var_find(t, r->var_id);
	if (!v) {
		*status = PS_EUNKNOWN_VAR;
		return 0;
	}
	if (!op_fits(r, v) || r->width != v->width || ((uintptr_t)payload & 7)) {
		*status = -EINVAL;
		return 0;
	}
	switch (r->op) {
	case PS_DP_PULL_DENSE:
	case PS_DP_PULL_SPARSE:
	case PS_DP_PULL_HASH:
		want = (uint64_t)r->count * (r->op == PS_DP_PULL_DENSE ? 1 : v->width) * 4;
		if (want > r->dst_len) {
			*status = -EMSGSIZE;
			return 0;
		}
		/* A deletion is waiting for the pulls in flight to finish: do not add to them. */
		if (t->deletes_waiting)
			return -EAGAIN;
		if (r->op == PS_DP_PULL_DENSE)
			return pull_dense(c, r, v, status);
		return pull_rows(c, r, v, (const uint64_t *)(const void *)payload, status);
	case PS_DP_DELETE_HASH: {
		int rc = delete_keys(t, p, r, v, (const uint64_t *)(const void *)payload);

		if (rc == -EAGAIN)
			return rc;
		*status = rc;
		return 0;
	}
	case PS_DP_PUSH_DENSE:
		*status = push_dense(t, r, v, (const float *)(const void *)payload);
		return 0;
	default:
		*status = push_rows(t, r, v, (const uint64_t *)(const void *)payload);
		return 0;
	}
}

int dp_handle(struct dp_conn *c, void *buf, uint32_t len, struct dp_pend *p)
{
	struct dp_thread *t = c->t;
	int rc, status;

	if (!p->answered) {
		/* Paused: not even decoded; handled from scratch after the resume. */
		if (t->paused)
			return -EAGAIN;
		rc = ps_dp_req_decode(buf, len, &p->req);
		if (rc)
			return PS_EBAD_MESSAGE; /* also PS_EPROTO_VERSION: no reply it could read */
		rc = handle_req(c, p, &p->req, buf, len, &status);
		if (rc == -EAGAIN)
			return rc;
		if (p->delete_wait) {
			/* Done one way or another (stale, refused, applied): it waits no more. */
			p->delete_wait = false;
			t->deletes_waiting--;
		}
		if (rc < 0)
			return rc;
		if (rc == ANSWERED) {
			ps_tp_recv_release(c->tc, buf);
			atomic_fetch_add_explicit(&t->n_requests, 1, memory_order_relaxed);
			return 0;
		}
		/* Done: from here on only the reply may have to wait. */
		p->answered = true;
		p->status = status;
		if (status)
			ps_log_debug(DP_LOG, "thread %u: %s: op %u var %u req %u: %s", t->idx,
				     c->peer, p->req.op, p->req.var_id, p->req.req_id,
				     ps_err_name(status));
	}
	rc = dp_reply(c, &p->req, p->status);
	if (rc)
		return rc;
	/* A push's gradients were read in place until now: only now may the buffer go back. */
	ps_tp_recv_release(c->tc, buf);
	atomic_fetch_add_explicit(&t->n_requests, 1, memory_order_relaxed);
	if (p->status)
		atomic_fetch_add_explicit(&t->n_failed, 1, memory_order_relaxed);
	return 0;
}
