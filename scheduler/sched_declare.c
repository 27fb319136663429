/*
 * Declared variables and the placement table (DeclareReq).
 *
 * The first declaration of a name creates the variable: the placementer runs over every
 * declared variable with the table in force as the previous one, so parts already placed stay
 * where they are (their servers hold their rows). The cluster version does not change: the new
 * table only adds a variable, and every client learns it from the DeclareResp or the next
 * ClusterInfo. Later declarations of the name must carry a byte-identical canonical spec and
 * get the same id back.
 *
 * Service thread only: the variables, the table and its blob are read and written here and in
 * the ClusterInfo handler, both on the service thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/log.h"
#include "scheduler/sched_internal.h"

static const char *kind_name(enum ps_var_kind k)
{
	switch (k) {
	case PS_VAR_DENSE:
		return "dense";
	case PS_VAR_SPARSE:
		return "sparse";
	case PS_VAR_HASH64:
		return "hash64";
	case PS_VAR_HASH128:
		return "hash128";
	}
	return "?";
}

uint32_t ps_sched_optim_slots(enum ps_optim_kind k)
{
	switch (k) {
	case PS_OPTIM_SGD:
		return 0;
	case PS_OPTIM_MOMENTUM:
	case PS_OPTIM_ADAGRAD:
		return 1;
	case PS_OPTIM_ADAM:
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_FTRL:
		return 2;
	case PS_OPTIM_CENTERED_RMSPROP:
		return 3;
	}
	return PS_OPTIM_MAX_SLOTS;
}

void ps_sched_spec_canon(const struct ps_var_spec *vs, uint8_t out[PS_DP_DECLARE_BYTES])
{
	struct ps_dp_declare d;

	memset(&d, 0, sizeof(d));
	ps_dp_spec_encode(vs, &d);
	/* The fixed stand-ins of the DeclareReq spec: part [0, 1), shard 0 of 1, one worker. */
	d.part_begin = 0;
	d.part_end = 1;
	d.shard = 0;
	d.nshards = 1;
	d.num_workers = 1;
	ps_dp_declare_encode(&d, out);
}

static bool finite_nonneg(double x)
{
	return isfinite(x) && x >= 0;
}

/*
 * Decode and check a DeclareReq. Its spec is a whole DECLARE payload (so the data plane's strict
 * decoder checks it), of which only the spec fields count. On success @canon holds the
 * canonical spec bytes (ps_sched_spec_canon: equal specs give equal bytes whatever the sender
 * put in the other fields) and @vs the spec.
 */
static int check_declare(const Psplus__Ctl__DeclareReq *rq, uint8_t canon[PS_DP_DECLARE_BYTES],
			 struct ps_var_spec *vs, char *msg, size_t msglen)
{
	struct ps_dp_declare d;
	size_t nlen = strlen(rq->name);
	int rc;

	if (!nlen || nlen > SCHED_VAR_NAME_MAX) {
		snprintf(msg, msglen, "variable name must be 1 to %u bytes (got %zu)",
			 SCHED_VAR_NAME_MAX, nlen);
		return -EINVAL;
	}
	if (rq->spec.len != PS_DP_DECLARE_BYTES) {
		snprintf(msg, msglen, "variable '%s': spec is %zu bytes, expected %u", rq->name,
			 rq->spec.len, PS_DP_DECLARE_BYTES);
		return PS_EBAD_MESSAGE;
	}
	rc = ps_dp_declare_decode(rq->spec.data, rq->spec.len, &d);
	if (!rc)
		rc = ps_dp_spec_decode(&d, vs);
	if (rc) {
		snprintf(msg, msglen, "variable '%s': malformed spec (%s)", rq->name,
			 ps_err_name(rc));
		return rc;
	}
	if ((unsigned)vs->kind > PS_VAR_HASH128 || vs->dtype != PS_DTYPE_FLOAT32 || !vs->width ||
	    ((vs->kind == PS_VAR_DENSE || vs->kind == PS_VAR_SPARSE) && !vs->rows)) {
		snprintf(msg, msglen,
			 "variable '%s': invalid spec (kind %u, dtype %u, rows %" PRIu64
			 ", width %u): need a known kind, float32, width >= 1 and, for dense and "
			 "sparse, rows >= 1",
			 rq->name, (unsigned)vs->kind, (unsigned)vs->dtype, vs->rows, vs->width);
		return -EINVAL;
	}
	if (!finite_nonneg(rq->rows_read_per_step) || !finite_nonneg(rq->rows_pushed_per_step) ||
	    !finite_nonneg(rq->steps_per_s)) {
		snprintf(msg, msglen, "variable '%s': load hints must be finite and >= 0",
			 rq->name);
		return -EINVAL;
	}
	ps_sched_spec_canon(vs, canon);
	return 0;
}

static struct sched_var *find_var(struct ps_sched *s, const char *name)
{
	for (uint32_t i = 0; i < s->nvars; i++)
		if (!strcmp(s->vars[i].name, name))
			return &s->vars[i];
	return NULL;
}

void ps_sched_place_var(const struct sched_var *v, struct ps_placement_var *p)
{
	bool hash = v->vs.kind == PS_VAR_HASH64 || v->vs.kind == PS_VAR_HASH128;

	memset(p, 0, sizeof(*p));
	p->name = v->name;
	p->id = v->id;
	p->kind = hash			       ? PS_PLACE_HASH
		  : v->vs.kind == PS_VAR_DENSE ? PS_PLACE_DENSE
					       : PS_PLACE_SPARSE;
	p->rows = hash ? v->expected_keys : v->vs.rows;
	p->width = v->vs.width;
	p->elem_bytes = 4;
	p->slots = ps_sched_optim_slots(v->vs.optim.kind);
	p->rows_read_per_step = v->rows_read_per_step;
	p->rows_pushed_per_step = v->rows_pushed_per_step;
}

/* MB (and MB/s) to bytes, saturating: the option allows up to 2^40 MB. */
static uint64_t mb_to_bytes(uint64_t mb)
{
	return mb > (UINT64_MAX >> 20) ? UINT64_MAX : mb << 20;
}

/*
 * Parts of @prev must not move: nothing migrates rows yet, so a moved part would lose them.
 * With fixed budgets and no live stats the placementer keeps every part that still fits, and
 * a part that fitted still fits; this check makes the rule hold even if that ever changes.
 */
static int check_kept(const struct ps_placement *prev, const struct ps_placement *next, char *msg,
		      size_t msglen)
{
	for (uint32_t i = 0; prev && i < prev->nvars; i++) {
		const struct ps_placement_entry *a = &prev->vars[i];
		const struct ps_placement_entry *b = ps_placement_find(next, a->id);
		bool same = b && b->nparts == a->nparts;

		for (uint32_t j = 0; same && j < a->nparts; j++)
			same = a->parts[j].begin == b->parts[j].begin &&
			       a->parts[j].end == b->parts[j].end &&
			       a->parts[j].server == b->parts[j].server;
		if (!same) {
			snprintf(msg, msglen,
				 "placing it would move parts of variable '%s' (id %u), and moving "
				 "parts is not supported yet",
				 a->name, a->id);
			return PS_EOVER_BUDGET;
		}
	}
	return 0;
}

void ps_sched_budgets(const struct ps_sched *s, struct ps_placement_budget *b)
{
	const struct ps_scheduler_opts *o = s->opts;

	for (uint32_t i = 0; i < o->server_num; i++)
		b[i] = (struct ps_placement_budget){.mem_bytes = mb_to_bytes(o->mem_limit_mb),
						    .net_bytes_per_s =
							    mb_to_bytes(o->net_limit_mbps),
						    .qps = o->query_limit};
}

/* Place every variable plus @nv; on success the table and its blob replace the old ones. */
static int place_with(struct ps_sched *s, const struct sched_var *nv, double steps, char *msg,
		      size_t msglen)
{
	const struct ps_scheduler_opts *o = s->opts;
	struct ps_placement_var *pv = NULL;
	struct ps_placement_budget *b = NULL;
	struct ps_placement *t = NULL;
	struct ps_placement_input in;
	char err[512] = "";
	uint8_t *blob = NULL;
	size_t blen = 0;
	int rc = -ENOMEM;

	pv = calloc((size_t)s->nvars + 1, sizeof(*pv));
	b = calloc(o->server_num, sizeof(*b));
	if (!pv || !b) {
		snprintf(msg, msglen, "scheduler out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < s->nvars; i++)
		ps_sched_place_var(&s->vars[i], &pv[i]);
	ps_sched_place_var(nv, &pv[s->nvars]);
	ps_sched_budgets(s, b);
	in = (struct ps_placement_input){.vars = pv,
					 .nvars = s->nvars + 1,
					 .nservers = o->server_num,
					 .budgets = b,
					 .prev = s->placement,
					 .steps_per_s = steps,
					 .rows_per_request = SCHED_DEFAULT_ROWS_PER_REQ,
					 .cluster_version = s->cluster_version};
	rc = ps_placement_compute(&in, &t, err, sizeof(err));
	if (rc) {
		snprintf(msg, msglen, "variable '%s': %s", nv->name,
			 err[0] ? err : ps_strerror(rc));
		goto out;
	}
	rc = check_kept(s->placement, t, msg, msglen);
	if (!rc)
		rc = ps_placement_encode(t, &blob, &blen);
	if (rc) {
		if (!msg[0])
			snprintf(msg, msglen, "cannot encode the placement: %s", ps_strerror(rc));
		goto out;
	}
	ps_placement_destroy(s->placement);
	free(s->placement_blob);
	s->placement = t;
	s->placement_blob = blob;
	s->placement_len = blen;
	t = NULL;
out:
	ps_placement_destroy(t);
	free(b);
	free(pv);
	return rc;
}

/* Create the variable @rq names. Returns 0 with *@id set, or a code with @msg. */
static int declare_new(struct ps_sched *s, const Psplus__Ctl__DeclareReq *rq, const uint8_t *canon,
		       const struct ps_var_spec *vs, uint32_t *id, char *msg, size_t msglen)
{
	double steps = s->steps_per_s > 0 ? s->steps_per_s : SCHED_DEFAULT_STEPS_PER_S;
	struct sched_var nv;
	int rc;

	if (s->nvars >= SCHED_MAX_VARS || s->next_var_id == UINT32_MAX) {
		snprintf(msg, msglen, "variable '%s': the cluster holds %u variables already",
			 rq->name, s->nvars);
		return -ENOSPC;
	}
	if (s->nvars == s->vars_cap) {
		uint32_t cap = s->vars_cap ? s->vars_cap * 2 : 16;
		struct sched_var *v = realloc(s->vars, cap * sizeof(*v));

		if (!v) {
			snprintf(msg, msglen, "scheduler out of memory");
			return -ENOMEM;
		}
		s->vars = v;
		s->vars_cap = cap;
	}
	memset(&nv, 0, sizeof(nv));
	snprintf(nv.name, sizeof(nv.name), "%s", rq->name);
	/* Ids start at 1, so a zeroed id in a caller's struct is never a variable. */
	nv.id = s->next_var_id ? s->next_var_id : 1;
	memcpy(nv.spec, canon, PS_DP_DECLARE_BYTES);
	nv.vs = *vs;
	nv.rows_read_per_step = rq->rows_read_per_step;
	nv.rows_pushed_per_step = rq->rows_pushed_per_step;
	nv.expected_keys = rq->expected_keys;
	nv.num_workers = rq->num_workers;
	if (rq->steps_per_s > steps)
		steps = rq->steps_per_s;
	rc = place_with(s, &nv, steps, msg, msglen);
	if (rc)
		return rc;
	s->vars[s->nvars++] = nv;
	s->next_var_id = nv.id + 1;
	s->steps_per_s = steps;
	*id = nv.id;
	ps_log_info(SCHED_LOG,
		    "declared variable '%s' as id %u: %s, rows %" PRIu64 ", width %u, parts: %u",
		    nv.name, nv.id, kind_name(vs->kind), vs->rows, vs->width,
		    ps_placement_find(s->placement, nv.id)->nparts);
	return 0;
}

void ps_sched_on_declare(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	const Psplus__Ctl__DeclareReq *rq = env->declare_req;
	Psplus__Ctl__DeclareResp resp = PSPLUS__CTL__DECLARE_RESP__INIT;
	uint8_t canon[PS_DP_DECLARE_BYTES];
	struct ps_var_spec vs;
	struct sched_var *v;
	char msg[768] = "";
	ps_ctl_env_t out;
	uint32_t id = 0;
	int status;

	if (!ps_sched_authorized(s, c, &rq->auth_token)) {
		ps_log_warn(SCHED_LOG, "declare from %s: auth token mismatch", c->peer);
		ps_sched_reply_status(s, c, env->request_id, -EACCES,
				      "authentication failed (auth token mismatch)");
		ps_sched_conn_close_after(s, c);
		return;
	}
	status = check_declare(rq, canon, &vs, msg, sizeof(msg));
	if (!status && s->restoring) {
		/* The variable table is about to be replaced: ask again once it is. */
		snprintf(msg, sizeof(msg),
			 "a restore is in progress; declare '%s' again when it is "
			 "done",
			 rq->name);
		status = PS_EOP_IN_PROGRESS;
	} else if (!status && (v = find_var(s, rq->name))) {
		if (memcmp(v->spec, canon, PS_DP_DECLARE_BYTES)) {
			snprintf(msg, sizeof(msg),
				 "variable '%s' exists (id %u: %s, rows %" PRIu64
				 ", width %u) with a different spec than this declaration (%s, "
				 "rows %" PRIu64 ", width %u, or its initializer, optimizer or "
				 "admission differ)",
				 v->name, v->id, kind_name(v->vs.kind), v->vs.rows, v->vs.width,
				 kind_name(vs.kind), vs.rows, vs.width);
			status = -EEXIST;
		} else {
			id = v->id;
			if (rq->num_workers)
				v->num_workers = rq->num_workers;
		}
	} else if (!status) {
		status = declare_new(s, rq, canon, &vs, &id, msg, sizeof(msg));
	}
	if (status)
		ps_log_warn(SCHED_LOG, "declaration refused (%s): %s", ps_err_name(status), msg);
	ps_ctl_env_init(&out, env->request_id);
	resp.status = status;
	resp.message = msg;
	resp.var_id = status ? 0 : id;
	resp.cluster_version = s->cluster_version;
	if (!status) {
		resp.placement.data = s->placement_blob;
		resp.placement.len = s->placement_len;
	}
	out.body_case = PSPLUS__CTL__ENVELOPE__BODY_DECLARE_RESP;
	out.declare_resp = &resp;
	ps_sched_conn_send(s, c, &out);
}

void ps_sched_vars_replace(struct ps_sched *s, struct sched_var *vars, uint32_t nvars,
			   struct ps_placement *t, uint8_t *blob, size_t blen)
{
	uint32_t next = 0;

	/* Load hints are not saved: keep those of the variables that were declared before. */
	for (uint32_t i = 0; i < nvars; i++) {
		const struct sched_var *old = find_var(s, vars[i].name);

		if (old) {
			vars[i].rows_read_per_step = old->rows_read_per_step;
			vars[i].rows_pushed_per_step = old->rows_pushed_per_step;
			if (!vars[i].num_workers)
				vars[i].num_workers = old->num_workers;
		}
		if (vars[i].id >= next)
			next = vars[i].id + 1;
	}
	ps_sched_vars_free(s);
	s->vars = vars;
	s->nvars = s->vars_cap = nvars;
	if (!nvars) {
		free(vars);
		s->vars = NULL;
		s->vars_cap = 0;
	}
	/* Ids only grow: a variable declared later never takes a restored or an older id. */
	if (next > s->next_var_id)
		s->next_var_id = next;
	pthread_mutex_lock(&s->lock);
	ps_placement_destroy(s->placement);
	free(s->placement_blob);
	s->placement = nvars ? t : NULL;
	s->placement_blob = nvars ? blob : NULL;
	s->placement_len = nvars ? blen : 0;
	s->cluster_version = t->cluster_version;
	pthread_mutex_unlock(&s->lock);
	if (!nvars) {
		ps_placement_destroy(t);
		free(blob);
	}
}

void ps_sched_vars_free(struct ps_sched *s)
{
	ps_placement_destroy(s->placement);
	free(s->placement_blob);
	free(s->vars);
	s->placement = NULL;
	s->placement_blob = NULL;
	s->vars = NULL;
	s->nvars = s->vars_cap = 0;
}
