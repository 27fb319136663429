/*
 * The public calls: declare, dense/sparse/hash pulls and pushes, step_end, barrier.
 *
 * Every data call has the same shape: check the arguments against the declaration (kind,
 * width, ids in range) before anything is sent, so bad input changes nothing anywhere; route
 * and group the ids; cut the groups into requests; run them (client_dp.c); permute staged pull
 * results into the caller's memory. Requests refused for a stale cluster version are routed
 * again after re-reading the cluster, and retried until the call's timeout: only those, since
 * the others were applied.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "client/client_internal.h"
#include "common/clock.h"
#include "common/log.h"

static const char *kind_name(enum ps_var_kind k)
{
	return k == PS_VAR_DENSE    ? "dense"
	       : k == PS_VAR_SPARSE ? "sparse"
	       : k == PS_VAR_HASH64 ? "hash64"
				    : "hash128";
}

void cli_dest_name(const struct ps_client *c, uint32_t d, char *buf, size_t len)
{
	const struct cli_dest *ds = &c->dests[d];
	const struct cli_server *sv = &c->servers[ds->server];

	snprintf(buf, len, "server %u shard %u (%s:%u)", ds->server, ds->shard, sv->host,
		 sv->ports ? sv->ports[ds->shard] : 0);
}

/* The call failed on chunk @call->failed: say which variable, server and why. */
static int call_fail(struct ps_client *c, const struct cli_call *call, const char *what)
{
	const struct cli_chunk *ch = &call->chunks[call->failed];
	int rc = call->status;
	char name[400];

	cli_dest_name(c, ch->dest, name, sizeof(name));
	/* Time ran out while retrying after stale answers: the cause is the version, not the
	 * network (a loaded machine may spend the last milliseconds on the re-send). */
	if (rc == PS_ETIMEOUT && call->stale_seen)
		return cli_fail(
			PS_ESTALE_VERSION,
			"%s '%s' (id %u): servers still refuse cluster version 0x%016" PRIx64
			" at the timeout",
			what, call->var->name, call->var->id, c->cluster_version);
	if (rc == PS_ETIMEOUT)
		return cli_fail(rc, "%s '%s' (id %u): no answer from %s within %u ms", what,
				call->var->name, call->var->id, name, c->o.timeout_ms);
	/* A reply's status, or the transport's word on the request (a refused connect, a lost
	 * peer): either way the destination and the code say what happened. */
	return cli_fail(rc, "%s '%s' (id %u): %s: %s (%s)", what, call->var->name, call->var->id,
			name, ps_strerror(rc), ps_err_name(rc));
}

/* Stale answers: re-read the cluster, pausing if it did not change (a server lags behind). */
static int stale_refresh(struct ps_client *c, struct cli_call *call, const char *what,
			 uint64_t deadline)
{
	uint64_t before = c->cluster_version;
	int rc;

	call->stale_seen = true;
	c->st.retries += call->nstale;
	rc = cli_ctl_refresh(c, false, deadline);
	if (rc == PS_ETIMEOUT)
		return cli_fail(
			PS_ESTALE_VERSION,
			"%s '%s' (id %u): servers still refuse cluster version 0x%016" PRIx64
			" at the timeout (the scheduler did not answer in time)",
			what, call->var->name, call->var->id, c->cluster_version);
	if (rc)
		return rc;
	if (c->cluster_version == before) {
		if (ps_clock_remaining_ms(deadline) <= CLI_POLL_MS)
			return cli_fail(PS_ESTALE_VERSION,
					"%s '%s' (id %u): servers still refuse cluster version "
					"0x%016" PRIx64 " at the timeout",
					what, call->var->name, call->var->id, c->cluster_version);
		poll(NULL, 0, CLI_POLL_MS);
	}
	ps_log_debug(CLI_LOG, "%s '%s': %u requests hit a stale version; retrying", what,
		     call->var->name, call->nstale);
	return 0;
}

/* Lock, find variable @id, check its kind. On success the lock is held. */
static int enter(struct ps_client *c, uint32_t id, enum ps_var_kind kind, const char *what,
		 struct cli_var **v)
{
	pthread_mutex_lock(&c->lock);
	*v = cli_var_find(c, id);
	if (!*v) {
		pthread_mutex_unlock(&c->lock);
		return cli_fail(PS_EUNKNOWN_VAR,
				"%s: variable id %u was not declared by this client", what, id);
	}
	if ((*v)->spec.kind != kind) {
		pthread_mutex_unlock(&c->lock);
		return cli_fail(-EINVAL, "%s: variable '%s' (id %u) is %s, not %s", what,
				(*v)->name, id, kind_name((*v)->spec.kind), kind_name(kind));
	}
	return 0;
}

/*
 * Ids per request to each destination (dense: floats). Pushes are bounded by the destination's
 * message size; pulls by it (ids) and by the rows a server thread serves without -E2BIG
 * (CLI_PULL_ZC_ROWS, CLI_PULL_BOUNCE, and what the destination taught us), at least one row.
 * -EMSGSIZE when one row of a push fits no request.
 */
static int caps(struct ps_client *c, const struct cli_call *call, bool push)
{
	const struct ps_var_spec *sp = &call->var->spec;
	uint32_t kb = call->key_bytes, rb = call->row_bytes;
	/* Hash admission makes the server copy every row it answers. */
	bool copied = (sp->kind == PS_VAR_HASH64 || sp->kind == PS_VAR_HASH128) &&
		      sp->admit_prob > 0.f && sp->admit_prob < 1.f;
	/* rb is 0 for deletions (keys only): they are sized like pushes. */
	uint64_t rows = rb ? (copied ? 0 : CLI_PULL_ZC_ROWS) + CLI_PULL_BOUNCE / rb : 0;

	if (rb && rows > CLI_MAX_PULL_BYTES / rb)
		rows = CLI_MAX_PULL_BYTES / rb;
	for (uint32_t d = 0; d < c->ndests; d++) {
		uint32_t room =
			c->dests[d].max_req < c->blk_size ? c->dests[d].max_req : c->blk_size;
		uint64_t body = room > PS_DP_REQ_BYTES ? room - PS_DP_REQ_BYTES : 0, n, r = rows;
		char name[400];

		if (c->dests[d].pull_rows && c->dests[d].pull_rows < r)
			r = c->dests[d].pull_rows;
		if (!r)
			r = 1;
		if (!kb)
			n = push ? (body / rb) * (rb / 4) : r * (rb / 4);
		else if (push)
			n = body / (kb + rb);
		else
			n = body / kb < r ? body / kb : r;
		if (!n) {
			cli_dest_name(c, d, name, sizeof(name));
			return cli_fail(
				-EMSGSIZE,
				"variable '%s': a row of %u floats does not fit one request "
				"of %u bytes to %s",
				call->var->name, call->var->spec.width, room, name);
		}
		c->cap[d] = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
	}
	return 0;
}

/*
 * A synchronous push is one request per thread: the server counts one contribution per worker
 * and step (a second is -EALREADY), so a push that needs more is refused before anything goes.
 */
static int sync_single(struct ps_client *c, const struct cli_call *call)
{
	char name[400];

	memset(c->mark, 0, c->ndests);
	for (uint32_t k = 0; k < call->nchunks; k++) {
		uint32_t d = call->chunks[k].dest;

		if (!c->mark[d]) {
			c->mark[d] = 1;
			continue;
		}
		cli_dest_name(c, d, name, sizeof(name));
		return cli_fail(-EMSGSIZE,
				"synchronous push '%s' (id %u): its share for %s needs more than "
				"one request (at most %u %s per request); in sync mode a worker's "
				"push to one thread must fit one message",
				call->var->name, call->var->id, name, c->cap[d],
				call->key_bytes ? "rows" : "floats");
	}
	return 0;
}

/* ---- sparse and hash ------------------------------------------------------------------------ */

/* rows_call() without gradients nor results: a hash deletion. */
static const float delete_mark;

static int rows_call(struct ps_client *c, uint32_t id, enum ps_var_kind kind, const void *keys,
		     size_t n, const float *grads, float *out)
{
	bool del = grads == &delete_mark;
	bool push = grads != NULL && !del, sync = push && c->o.sync_mode == PS_SYNC_SYNC;
	const char *what = del ? "delete" : push ? "push" : "pull";
	const uint32_t *pos = NULL;
	struct cli_call call;
	struct cli_shape sh;
	struct cli_var *v;
	uint64_t deadline;
	size_t m = n, bad, nch;
	int rc;

	if (!c || (n && !keys) || (n && !push && !del && !out))
		return cli_fail(-EINVAL, "%s: NULL argument", what);
	if (n > UINT32_MAX)
		return cli_fail(-E2BIG, "%s: %zu ids in one call (at most 2^32 - 1)", what, n);
	rc = enter(c, id, kind, what, &v);
	if (rc)
		return rc;
	if (!n && !sync) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	deadline = ps_clock_deadline_ms(c->o.timeout_ms);
	cli_refresh_if_due(c, deadline);
	memset(&call, 0, sizeof(call));
	call.var = v;
	call.op = del	 ? PS_DP_DELETE_HASH
		  : push ? (kind == PS_VAR_SPARSE ? PS_DP_PUSH_SPARSE : PS_DP_PUSH_HASH)
			 : (kind == PS_VAR_SPARSE ? PS_DP_PULL_SPARSE : PS_DP_PULL_HASH);
	call.flags = (kind == PS_VAR_HASH128 ? PS_DP_F_KEY128 : 0) | (sync ? PS_DP_F_SYNC : 0);
	call.step = (uint32_t)c->step_next;
	call.row_bytes = v->spec.width * 4;
	call.key_bytes = cli_key_bytes(kind);
	call.keys = keys;
	call.grads = grads;
	call.out = out;
	call.kbuf = n ? cli_buf_find(c, keys, n * call.key_bytes) : NULL;
	call.gbuf = push && n ? cli_buf_find(c, grads, n * call.row_bytes) : NULL;
	call.obuf = !push && !del && n ? cli_buf_find(c, out, n * call.row_bytes) : NULL;
	/* A deletion carries keys only: size its requests like a push of zero-width rows. */
	if (del)
		call.row_bytes = 0;
	c->dd.ndup = 0;
	if (!push && !del && n > 1 &&
	    (c->o.pull_dedupe == PS_PULL_DEDUPE_ALWAYS ||
	     (c->o.pull_dedupe == PS_PULL_DEDUPE_AUTO && !call.obuf))) {
		if (cli_dedupe(c, keys, n, call.key_bytes, &m)) {
			rc = cli_fail(-ENOMEM, "out of memory");
			goto out;
		}
		/* A few repeats are not worth the copies: from 1/8 repeated on. */
		if (c->dd.ndup * 8 >= n) {
			pos = c->dd.uniq;
		} else {
			c->dd.ndup = 0;
			m = n;
		}
	}
	for (;;) {
		rc = cli_shape_get(c, v, &sh);
		if (!rc)
			rc = cli_scratch_reserve(c, m ? m : 1, 0);
		if (rc)
			goto out;
		rc = cli_route(&sh, keys, pos, m, c->dest_of, &bad);
		if (rc == PS_EOUT_OF_RANGE && kind == PS_VAR_SPARSE) {
			rc = cli_fail(rc,
				      "%s '%s' (id %u): id %" PRIu64 " at position %zu is out of "
				      "range [0, %" PRIu64 "); nothing was sent",
				      what, v->name, id, ((const uint64_t *)keys)[bad], bad,
				      v->spec.rows);
			goto out;
		}
		if (rc) {
			rc = cli_fail(rc, "%s '%s' (id %u): cannot route position %zu: %s", what,
				      v->name, id, bad, ps_strerror(rc));
			goto out;
		}
		cli_group(c->dest_of, pos, m, c->ndests, c->start, c->order);
		call.order = c->order;
		rc = caps(c, &call, push || del);
		if (rc)
			goto out;
		if (sync) {
			memset(c->mark, 0, c->ndests);
			cli_var_dests(&sh, c->mark);
		}
		nch = cli_split(c->start, c->ndests, c->cap, sync ? c->mark : NULL, NULL);
		rc = cli_scratch_reserve(c, m ? m : 1, nch);
		if (!rc && !push && !del && !call.obuf)
			rc = cli_stage_reserve(c, m * call.row_bytes);
		if (rc)
			goto out;
		call.chunks = c->chunks;
		call.nchunks = (uint32_t)cli_split(c->start, c->ndests, c->cap,
						   sync ? c->mark : NULL, c->chunks);
		if (sync && (rc = sync_single(c, &call)))
			goto out;
		for (uint32_t k = 0; !push && !del && k < call.nchunks; k++) {
			struct cli_chunk *ch = &call.chunks[k];

			/* Zero copy when the rows of this request are one run of the caller's
			 * registered buffer; else staging, then a permuting copy. */
			if (call.obuf && cli_run_contiguous(c->order, ch->first, ch->n)) {
				ch->dst = (uint8_t *)out +
					  (size_t)c->order[ch->first] * call.row_bytes;
				ch->mr = call.obuf->mr[c->dests[ch->dest].dev];
			} else {
				if (!c->stage.addr || c->stage.len < m * call.row_bytes) {
					rc = cli_stage_reserve(c, m * call.row_bytes);
					if (rc)
						goto out;
				}
				ch->dst = (uint8_t *)c->stage.addr +
					  (size_t)ch->first * call.row_bytes;
				ch->mr = c->devs[c->dests[ch->dest].dev].stage_mr;
			}
		}
		rc = cli_dp_run(c, &call, deadline);
		for (uint32_t k = 0; !push && !del && k < call.nchunks; k++) {
			const struct cli_chunk *ch = &call.chunks[k];

			if (ch->state != CH_DONE || ch->status ||
			    ch->mr != c->devs[c->dests[ch->dest].dev].stage_mr)
				continue;
			for (uint32_t j = 0; j < ch->n; j++)
				memcpy((uint8_t *)out +
					       (size_t)c->order[ch->first + j] * call.row_bytes,
				       (uint8_t *)ch->dst + (size_t)j * call.row_bytes,
				       call.row_bytes);
			c->st.bytes_staged += (uint64_t)ch->n * call.row_bytes;
		}
		if (rc || call.status) {
			rc = call_fail(c, &call, what);
			goto out;
		}
		if (!call.nretry) {
			if (c->dd.ndup)
				cli_dedupe_fill(c, out, call.row_bytes);
			goto out;
		}
		/* Send again only the refused requests: their positions, routed afresh. */
		if (c->retry_cap < m) {
			uint32_t *r = realloc(c->retry_pos, m * sizeof(*r));

			if (!r) {
				rc = cli_fail(-ENOMEM, "out of memory");
				goto out;
			}
			c->retry_pos = r;
			c->retry_cap = m;
		}
		m = 0;
		for (uint32_t k = 0; k < call.nchunks; k++)
			if (call.chunks[k].state == CH_RETRY)
				for (uint32_t j = 0; j < call.chunks[k].n; j++)
					c->retry_pos[m++] = c->order[call.chunks[k].first + j];
		pos = c->retry_pos;
		rc = call.nstale ? stale_refresh(c, &call, what, deadline) : 0;
		if (rc)
			goto out;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int ps_client_sparse_pull(struct ps_client *c, uint32_t var_id, const uint64_t *ids, size_t n,
			  float *out)
{
	return rows_call(c, var_id, PS_VAR_SPARSE, ids, n, NULL, out);
}

int ps_client_sparse_push(struct ps_client *c, uint32_t var_id, const uint64_t *ids, size_t n,
			  const float *grads)
{
	if (n && !grads)
		return cli_fail(-EINVAL, "push: NULL gradients");
	return rows_call(c, var_id, PS_VAR_SPARSE, ids, n, grads ? grads : (const float *)ids,
			 NULL);
}

int ps_client_hash_pull(struct ps_client *c, uint32_t var_id, const uint64_t *keys, size_t n,
			float *out)
{
	return rows_call(c, var_id, PS_VAR_HASH64, keys, n, NULL, out);
}

int ps_client_hash_push(struct ps_client *c, uint32_t var_id, const uint64_t *keys, size_t n,
			const float *grads)
{
	if (n && !grads)
		return cli_fail(-EINVAL, "push: NULL gradients");
	return rows_call(c, var_id, PS_VAR_HASH64, keys, n, grads ? grads : (const float *)keys,
			 NULL);
}

int ps_client_hash128_pull(struct ps_client *c, uint32_t var_id, const struct ps_key128 *keys,
			   size_t n, float *out)
{
	return rows_call(c, var_id, PS_VAR_HASH128, keys, n, NULL, out);
}

int ps_client_hash128_push(struct ps_client *c, uint32_t var_id, const struct ps_key128 *keys,
			   size_t n, const float *grads)
{
	if (n && !grads)
		return cli_fail(-EINVAL, "push: NULL gradients");
	return rows_call(c, var_id, PS_VAR_HASH128, keys, n, grads ? grads : (const float *)keys,
			 NULL);
}

int ps_client_hash_delete(struct ps_client *c, uint32_t var_id, const uint64_t *keys, size_t n)
{
	return rows_call(c, var_id, PS_VAR_HASH64, keys, n, &delete_mark, NULL);
}

int ps_client_hash128_delete(struct ps_client *c, uint32_t var_id, const struct ps_key128 *keys,
			     size_t n)
{
	return rows_call(c, var_id, PS_VAR_HASH128, keys, n, &delete_mark, NULL);
}

/* ---- dense ---------------------------------------------------------------------------------- */

/* Float ranges [2k, 2k+1) still to do, grown as needed (only stale retries make several). */
struct ranges {
	uint64_t *r;
	size_t n, cap;
};

static int ranges_add(struct ranges *rs, uint64_t a, uint64_t b)
{
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 8;
		uint64_t *r = realloc(rs->r, cap * 2 * sizeof(*r));

		if (!r)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[2 * rs->n] = a;
	rs->r[2 * rs->n + 1] = b;
	rs->n++;
	return 0;
}

static int dense_call(struct ps_client *c, uint32_t id, const float *grad, float *out,
		      size_t nfloats)
{
	bool push = grad != NULL;
	const char *what = push ? "dense push" : "dense pull";
	struct ranges todo = {0}, next = {0};
	struct cli_call call;
	struct cli_shape sh;
	struct cli_var *v;
	uint64_t deadline, total;
	size_t nch;
	int rc;

	if (!c || (!push && !out))
		return cli_fail(-EINVAL, "%s: NULL argument", what);
	rc = enter(c, id, PS_VAR_DENSE, what, &v);
	if (rc)
		return rc;
	total = v->spec.rows * v->spec.width;
	if (nfloats != total) {
		pthread_mutex_unlock(&c->lock);
		return cli_fail(-EINVAL,
				"%s '%s' (id %u): %zu floats given, the variable has %" PRIu64
				" (%" PRIu64 " rows x width %u)",
				what, v->name, id, nfloats, total, v->spec.rows, v->spec.width);
	}
	deadline = ps_clock_deadline_ms(c->o.timeout_ms);
	cli_refresh_if_due(c, deadline);
	memset(&call, 0, sizeof(call));
	call.var = v;
	call.op = push ? PS_DP_PUSH_DENSE : PS_DP_PULL_DENSE;
	call.flags = push && c->o.sync_mode == PS_SYNC_SYNC ? PS_DP_F_SYNC : 0;
	call.step = (uint32_t)c->step_next;
	call.row_bytes = v->spec.width * 4;
	call.grads = grad;
	call.out = out;
	call.gbuf = push ? cli_buf_find(c, grad, total * 4) : NULL;
	call.obuf = push ? NULL : cli_buf_find(c, out, total * 4);
	rc = ranges_add(&todo, 0, total);
	while (!rc) {
		rc = cli_shape_get(c, v, &sh);
		if (!rc)
			rc = caps(c, &call, push);
		if (!rc && !push && !call.obuf)
			rc = cli_stage_reserve(c, total * 4);
		if (rc)
			break;
		nch = 0;
		for (size_t i = 0; i < todo.n; i++)
			nch += cli_split_dense(&sh, todo.r[2 * i], todo.r[2 * i + 1], c->cap, NULL);
		rc = cli_scratch_reserve(c, 1, nch);
		if (rc)
			break;
		call.chunks = c->chunks;
		call.nchunks = 0;
		for (size_t i = 0; i < todo.n; i++)
			call.nchunks +=
				(uint32_t)cli_split_dense(&sh, todo.r[2 * i], todo.r[2 * i + 1],
							  c->cap, c->chunks + call.nchunks);
		if (call.flags & PS_DP_F_SYNC && (rc = sync_single(c, &call)))
			break;
		for (uint32_t k = 0; !push && k < call.nchunks; k++) {
			struct cli_chunk *ch = &call.chunks[k];
			uint8_t *base = call.obuf ? (uint8_t *)out : (uint8_t *)c->stage.addr;

			ch->dst = base + ch->fbegin * 4;
			ch->mr = call.obuf ? call.obuf->mr[c->dests[ch->dest].dev]
					   : c->devs[c->dests[ch->dest].dev].stage_mr;
		}
		rc = cli_dp_run(c, &call, deadline);
		for (uint32_t k = 0; !push && !call.obuf && k < call.nchunks; k++) {
			const struct cli_chunk *ch = &call.chunks[k];

			if (ch->state == CH_DONE && !ch->status) {
				memcpy(out + ch->fbegin, ch->dst, (size_t)ch->n * 4);
				c->st.bytes_staged += (uint64_t)ch->n * 4;
			}
		}
		if (rc || call.status) {
			rc = call_fail(c, &call, what);
			break;
		}
		if (!call.nretry)
			break;
		next.n = 0;
		for (uint32_t k = 0; k < call.nchunks && !rc; k++)
			if (call.chunks[k].state == CH_RETRY)
				rc = ranges_add(&next, call.chunks[k].fbegin,
						call.chunks[k].fbegin + call.chunks[k].n);
		if (rc) {
			rc = cli_fail(rc, "out of memory");
			break;
		}
		{
			struct ranges t = todo;

			todo = next;
			next = t;
		}
		rc = call.nstale ? stale_refresh(c, &call, what, deadline) : 0;
	}
	free(todo.r);
	free(next.r);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int ps_client_dense_pull(struct ps_client *c, uint32_t var_id, float *out, size_t nfloats)
{
	return dense_call(c, var_id, NULL, out, nfloats);
}

int ps_client_dense_push(struct ps_client *c, uint32_t var_id, const float *grad, size_t nfloats)
{
	if (!grad)
		return cli_fail(-EINVAL, "dense push: NULL gradient");
	return dense_call(c, var_id, grad, NULL, nfloats);
}

/* ---- declare -------------------------------------------------------------------------------- */

static int check_spec(const char *name, const struct ps_var_spec *spec)
{
	size_t len = strlen(name);

	if (!len || len > CLI_NAME_MAX)
		return cli_fail(-EINVAL, "declare: name '%.80s' must be 1 to %u bytes", name,
				CLI_NAME_MAX);
	if ((unsigned)spec->kind > PS_VAR_HASH128 || spec->dtype != PS_DTYPE_FLOAT32 ||
	    !spec->width || spec->width > (1u << 24))
		return cli_fail(-EINVAL,
				"declare '%s': need a known kind, float32 and a width of 1 to 2^24 "
				"(kind %u, dtype %u, width %u)",
				name, (unsigned)spec->kind, (unsigned)spec->dtype, spec->width);
	if ((spec->kind == PS_VAR_DENSE || spec->kind == PS_VAR_SPARSE) &&
	    (!spec->rows || spec->rows > (UINT64_MAX >> 2) / spec->width))
		return cli_fail(-EINVAL,
				"declare '%s': rows %" PRIu64 " (need >= 1, and rows x "
				"width x 4 bytes must fit 64 bits)",
				name, spec->rows);
	if (spec->kind == PS_VAR_DENSE && spec->rows * spec->width > UINT32_MAX * (uint64_t)4096)
		return cli_fail(-EINVAL,
				"declare '%s': a dense variable of %" PRIu64 " floats is too large",
				name, spec->rows * spec->width);
	return 0;
}

/*
 * DECLARE to every data-path thread of every server holding a part of @v, carrying the part's
 * range (rows or buckets): the thread takes its own shard of it (ps_placement_shard_range for
 * dense and sparse, key_shard for hash), possibly empty. Idempotent on the servers, so a stale
 * retry re-sends all of them.
 */
static int declare_servers(struct ps_client *c, struct cli_var *v, uint64_t deadline)
{
	struct ps_dp_declare *decl = NULL;
	struct cli_call call;
	struct cli_shape sh;
	uint32_t n;
	int rc;

	for (;;) {
		rc = cli_shape_get(c, v, &sh);
		if (rc)
			break;
		n = 0;
		for (uint32_t j = 0; j < sh.e->nparts; j++)
			n += c->nshards[sh.e->parts[j].server];
		rc = cli_scratch_reserve(c, 1, n);
		if (!rc && !(decl = calloc(n ? n : 1, sizeof(*decl))))
			rc = cli_fail(-ENOMEM, "out of memory");
		if (rc)
			break;
		n = 0;
		for (uint32_t j = 0; j < sh.e->nparts; j++) {
			const struct ps_placement_part *p = &sh.e->parts[j];
			uint32_t T = c->nshards[p->server];

			for (uint32_t t = 0; t < T; t++, n++) {
				struct ps_dp_declare *d = &decl[n];

				ps_dp_spec_encode(&v->spec, d);
				d->part_begin = p->begin;
				d->part_end = p->end;
				d->shard = t;
				d->nshards = T;
				d->num_workers = c->o.num_workers;
				snprintf(d->name, sizeof(d->name), "%s", v->name);
				c->chunks[n] = (struct cli_chunk){.dest = c->dest0[p->server] + t};
			}
		}
		memset(&call, 0, sizeof(call));
		call.op = PS_DP_DECLARE;
		call.var = v;
		call.chunks = c->chunks;
		call.nchunks = n;
		call.decl = decl;
		rc = cli_dp_run(c, &call, deadline);
		if (rc || call.status) {
			rc = call_fail(c, &call, "declare");
			break;
		}
		if (!call.nstale)
			break;
		free(decl);
		decl = NULL;
		rc = stale_refresh(c, &call, "declare", deadline);
		if (rc)
			break;
	}
	free(decl);
	return rc;
}

int ps_client_declare_load(struct ps_client *c, const char *name, const struct ps_var_spec *spec,
			   const struct ps_var_load *load, uint32_t *var_id)
{
	uint64_t deadline;
	struct cli_var *v;
	uint32_t id = 0;
	int rc;

	if (!c || !name || !spec || !var_id)
		return cli_fail(-EINVAL, "declare: NULL argument");
	rc = check_spec(name, spec);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	deadline = ps_clock_deadline_ms(c->o.timeout_ms);
	cli_refresh_if_due(c, deadline);
	rc = cli_ctl_declare(c, name, spec, load, &id, deadline);
	if (rc)
		goto out;
	v = cli_var_find(c, id);
	if (!v) {
		if (c->nvars == c->vars_cap) {
			uint32_t cap = c->vars_cap ? c->vars_cap * 2 : 8;
			struct cli_var *nv = realloc(c->vars, cap * sizeof(*nv));

			if (!nv) {
				rc = cli_fail(-ENOMEM, "out of memory");
				goto out;
			}
			c->vars = nv;
			c->vars_cap = cap;
		}
		v = &c->vars[c->nvars++];
	}
	memset(v, 0, sizeof(*v));
	v->id = id;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->spec = *spec;
	rc = declare_servers(c, v, deadline);
	if (!rc)
		*var_id = id;
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int ps_client_declare(struct ps_client *c, const char *name, const struct ps_var_spec *spec,
		      uint32_t *var_id)
{
	return ps_client_declare_load(c, name, spec, NULL, var_id);
}

/* ---- steps and barriers --------------------------------------------------------------------- */

int ps_client_step_end(struct ps_client *c, uint64_t step)
{
	int rc = 0;

	if (!c)
		return cli_fail(-EINVAL, "step_end: NULL client");
	pthread_mutex_lock(&c->lock);
	if (c->o.sync_mode != PS_SYNC_ASYNC)
		rc = cli_ctl_step(c, step, ps_clock_deadline_ms(c->o.timeout_ms));
	if (!rc)
		c->step_next = step + 1;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int ps_client_barrier(struct ps_client *c)
{
	int rc;

	if (!c)
		return cli_fail(-EINVAL, "barrier: NULL client");
	pthread_mutex_lock(&c->lock);
	rc = cli_ctl_barrier(c, ++c->barrier_seq, ps_clock_deadline_ms(c->o.timeout_ms));
	pthread_mutex_unlock(&c->lock);
	return rc;
}
