/*
 * The data-plane wire format (common/dp_proto.h): host-order structs to and from little-endian
 * bytes, one field at a time. Nothing is ever cast onto the wire bytes, so the encoding is the
 * same on every host and a decoder never depends on the buffer's alignment. The byte layout is
 * documented in docs/wire.md, "Data plane".
 *
 * Decoders check everything structural (magic, version, op, the flags the op allows, lengths,
 * reserved bytes, NUL termination, the kinds in the initializer and optimizer slots) and return
 * PS_EBAD_MESSAGE or PS_EPROTO_VERSION; they never read past @len. Semantic checks (are these
 * hyper-parameters valid, does this var exist) belong to the server.
 */
#include <errno.h>
#include <string.h>

#include <psplus/error.h>

#include "common/dp_proto.h"

/* ---- little-endian helpers ------------------------------------------------------------------ */

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void putf(uint8_t *p, float f)
{
	uint32_t v;

	memcpy(&v, &f, sizeof(v));
	put32(p, v);
}

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline float getf(const uint8_t *p)
{
	uint32_t v = get32(p);
	float f;

	memcpy(&f, &v, sizeof(f));
	return f;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i])
			return false;
	}
	return true;
}

/* ---- request header ------------------------------------------------------------------------- */

/* The flags each op may carry; anything else is malformed. */
static uint16_t op_flags(uint8_t op)
{
	switch (op) {
	case PS_DP_PULL_DENSE:
	case PS_DP_PULL_SPARSE:
		return PS_DP_F_SNAPSHOT;
	case PS_DP_PULL_HASH:
		return PS_DP_F_SNAPSHOT | PS_DP_F_KEY128;
	case PS_DP_PUSH_DENSE:
	case PS_DP_PUSH_SPARSE:
		return PS_DP_F_SYNC;
	case PS_DP_PUSH_HASH:
		return PS_DP_F_SYNC | PS_DP_F_KEY128;
	case PS_DP_DELETE_HASH:
		return PS_DP_F_KEY128;
	default:
		return 0;
	}
}

void ps_dp_req_encode(const struct ps_dp_req *r, uint8_t out[PS_DP_REQ_BYTES])
{
	put32(out + 0, r->magic);
	out[4] = r->version;
	out[5] = r->op;
	put16(out + 6, r->flags);
	put32(out + 8, r->req_id);
	put32(out + 12, r->var_id);
	put32(out + 16, r->count);
	put32(out + 20, r->width);
	put64(out + 24, r->cluster_version);
	put64(out + 32, r->begin);
	put32(out + 40, r->worker_id);
	put32(out + 44, r->step);
	put64(out + 48, r->dst_addr);
	put32(out + 56, r->dst_rkey);
	put32(out + 60, r->dst_len);
}

int ps_dp_req_decode(const void *buf, size_t len, struct ps_dp_req *r)
{
	const uint8_t *p = buf;

	if (!p || len < PS_DP_REQ_BYTES)
		return PS_EBAD_MESSAGE;
	r->magic = get32(p + 0);
	r->version = p[4];
	r->op = p[5];
	r->flags = get16(p + 6);
	if (r->magic != PS_DP_REQ_MAGIC)
		return PS_EBAD_MESSAGE;
	/* A newer header may be laid out differently: judge nothing else of it. */
	if (r->version != PS_DP_VERSION)
		return PS_EPROTO_VERSION;
	if (r->op < PS_DP_PULL_DENSE || r->op > PS_DP_OP_MAX)
		return PS_EBAD_MESSAGE;
	if (r->flags & ~op_flags(r->op))
		return PS_EBAD_MESSAGE;
	r->req_id = get32(p + 8);
	r->var_id = get32(p + 12);
	r->count = get32(p + 16);
	r->width = get32(p + 20);
	r->cluster_version = get64(p + 24);
	r->begin = get64(p + 32);
	r->worker_id = get32(p + 40);
	r->step = get32(p + 44);
	r->dst_addr = get64(p + 48);
	r->dst_rkey = get32(p + 56);
	r->dst_len = get32(p + 60);
	return 0;
}

/* ---- reply ---------------------------------------------------------------------------------- */

void ps_dp_reply_encode(const struct ps_dp_reply *r, uint8_t out[PS_DP_REPLY_BYTES])
{
	put32(out + 0, r->magic);
	out[4] = r->version;
	out[5] = r->op;
	put16(out + 6, r->flags);
	put32(out + 8, r->req_id);
	put32(out + 12, (uint32_t)r->status);
	put64(out + 16, r->cluster_version);
}

int ps_dp_reply_decode(const void *buf, size_t len, struct ps_dp_reply *r)
{
	const uint8_t *p = buf;

	if (!p || len < PS_DP_REPLY_BYTES)
		return PS_EBAD_MESSAGE;
	r->magic = get32(p + 0);
	r->version = p[4];
	r->op = p[5];
	r->flags = get16(p + 6);
	if (r->magic != PS_DP_REPLY_MAGIC)
		return PS_EBAD_MESSAGE;
	if (r->version != PS_DP_VERSION)
		return PS_EPROTO_VERSION;
	if (r->op < PS_DP_PULL_DENSE || r->op > PS_DP_OP_MAX || r->flags)
		return PS_EBAD_MESSAGE;
	r->req_id = get32(p + 8);
	r->status = (int32_t)get32(p + 12);
	r->cluster_version = get64(p + 16);
	return 0;
}

/* ---- the initializer and optimizer slots ---------------------------------------------------- */

/*
 * Initializer slot (64 bytes): kind u32 @0, value @4, min @8, max @12, mean @16, stddev @20
 * (f32 each), seed u64 @24, zeros @32..63. Every field is written whatever the kind, so a
 * spec and its round trip compare equal field by field.
 */
#define INIT_RESERVED 32

static void init_encode(const struct ps_initializer *in, uint8_t *o)
{
	memset(o, 0, 64);
	put32(o + 0, (uint32_t)in->kind);
	putf(o + 4, in->value);
	putf(o + 8, in->min);
	putf(o + 12, in->max);
	putf(o + 16, in->mean);
	putf(o + 20, in->stddev);
	put64(o + 24, in->seed);
}

static int init_decode(const uint8_t *o, struct ps_initializer *in)
{
	uint32_t kind = get32(o + 0);

	if (kind > PS_INIT_TRUNCATED_NORMAL || !all_zero(o + INIT_RESERVED, 64 - INIT_RESERVED))
		return PS_EBAD_MESSAGE;
	memset(in, 0, sizeof(*in));
	in->kind = (enum ps_init_kind)kind;
	in->value = getf(o + 4);
	in->min = getf(o + 8);
	in->max = getf(o + 12);
	in->mean = getf(o + 16);
	in->stddev = getf(o + 20);
	in->seed = get64(o + 24);
	return 0;
}

/*
 * Optimizer slot (64 bytes): kind u32 @0, flags u32 @4 (bit 0: use_nesterov, momentum and
 * Adam only), then the kind's hyper-parameters as f32 from @8 in the order below, zeros after
 * them up to byte 63.
 */
#define OPT_F_NESTEROV 1u
#define OPT_MAX_PARAMS 6

/* Pointers to the kind's hyper-parameters in wire order; the count is returned. */
static int optim_params(struct ps_optimizer *o, float *p[OPT_MAX_PARAMS], bool **nesterov)
{
	*nesterov = NULL;
	switch (o->kind) {
	case PS_OPTIM_SGD:
		p[0] = &o->sgd.learning_rate;
		return 1;
	case PS_OPTIM_MOMENTUM:
		p[0] = &o->momentum.learning_rate;
		p[1] = &o->momentum.momentum;
		*nesterov = &o->momentum.use_nesterov;
		return 2;
	case PS_OPTIM_ADAGRAD:
		p[0] = &o->adagrad.learning_rate;
		p[1] = &o->adagrad.initial_accumulator_value;
		return 2;
	case PS_OPTIM_ADAM:
		p[0] = &o->adam.learning_rate;
		p[1] = &o->adam.beta1;
		p[2] = &o->adam.beta2;
		p[3] = &o->adam.epsilon;
		*nesterov = &o->adam.use_nesterov;
		return 4;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		p[0] = &o->rmsprop.learning_rate;
		p[1] = &o->rmsprop.rho;
		p[2] = &o->rmsprop.momentum;
		p[3] = &o->rmsprop.epsilon;
		p[4] = &o->rmsprop.initial_ms;
		return 5;
	case PS_OPTIM_FTRL:
		p[0] = &o->ftrl.learning_rate;
		p[1] = &o->ftrl.learning_rate_power;
		p[2] = &o->ftrl.l1;
		p[3] = &o->ftrl.l2;
		p[4] = &o->ftrl.l2_shrinkage;
		p[5] = &o->ftrl.initial_accumulator_value;
		return 6;
	default:
		return -1;
	}
}

static void optim_encode(const struct ps_optimizer *in, uint8_t *o)
{
	struct ps_optimizer copy = *in;
	float *p[OPT_MAX_PARAMS];
	bool *nesterov;
	int n;

	memset(o, 0, 64);
	n = optim_params(&copy, p, &nesterov);
	if (n < 0) {
		/* An unknown kind cannot be expressed: write it as it is, the decoder refuses it. */
		put32(o + 0, (uint32_t)in->kind);
		return;
	}
	put32(o + 0, (uint32_t)in->kind);
	put32(o + 4, nesterov && *nesterov ? OPT_F_NESTEROV : 0);
	for (int i = 0; i < n; i++)
		putf(o + 8 + 4 * i, *p[i]);
}

static int optim_decode(const uint8_t *o, struct ps_optimizer *out)
{
	uint32_t kind = get32(o + 0), flags = get32(o + 4);
	float *p[OPT_MAX_PARAMS];
	bool *nesterov;
	int n;

	if (kind > PS_OPTIM_FTRL)
		return PS_EBAD_MESSAGE;
	memset(out, 0, sizeof(*out));
	out->kind = (enum ps_optim_kind)kind;
	n = optim_params(out, p, &nesterov);
	if (n < 0 || flags & ~(nesterov ? OPT_F_NESTEROV : 0u) ||
	    !all_zero(o + 8 + 4 * n, 64 - 8 - 4 * (size_t)n))
		return PS_EBAD_MESSAGE;
	for (int i = 0; i < n; i++)
		*p[i] = getf(o + 8 + 4 * i);
	if (nesterov)
		*nesterov = flags & OPT_F_NESTEROV;
	return 0;
}

void ps_dp_spec_encode(const struct ps_var_spec *spec, struct ps_dp_declare *d)
{
	d->kind = (uint32_t)spec->kind;
	d->width = spec->width;
	d->rows = spec->rows;
	init_encode(&spec->init, d->init);
	optim_encode(&spec->optim, d->optim);
	d->admit_prob = spec->admit_prob;
	d->admit_seed = spec->admit_seed;
}

int ps_dp_spec_decode(const struct ps_dp_declare *d, struct ps_var_spec *spec)
{
	struct ps_var_spec s;
	int rc;

	memset(&s, 0, sizeof(s));
	if (d->kind > PS_VAR_HASH128)
		return PS_EBAD_MESSAGE;
	s.kind = (enum ps_var_kind)d->kind;
	s.dtype = PS_DTYPE_FLOAT32;
	s.rows = d->rows;
	s.width = d->width;
	rc = init_decode(d->init, &s.init);
	if (!rc)
		rc = optim_decode(d->optim, &s.optim);
	if (rc)
		return rc;
	s.admit_prob = d->admit_prob;
	s.admit_seed = d->admit_seed;
	*spec = s;
	return 0;
}

/* ---- DECLARE payload ------------------------------------------------------------------------ */

#define NAME_LEN 64

void ps_dp_declare_encode(const struct ps_dp_declare *d, uint8_t out[PS_DP_DECLARE_BYTES])
{
	size_t n = strnlen(d->name, NAME_LEN - 1);

	put32(out + 0, d->kind);
	put32(out + 4, d->width);
	put64(out + 8, d->rows);
	put64(out + 16, d->part_begin);
	put64(out + 24, d->part_end);
	put32(out + 32, d->shard);
	put32(out + 36, d->nshards);
	memcpy(out + 40, d->init, 64);
	memcpy(out + 104, d->optim, 64);
	putf(out + 168, d->admit_prob);
	put32(out + 172, d->num_workers);
	put64(out + 176, d->admit_seed);
	/* Canonical: the name, then zeros, so equal declarations are equal bytes. */
	memset(out + 184, 0, NAME_LEN);
	memcpy(out + 184, d->name, n);
}

int ps_dp_declare_decode(const void *buf, size_t len, struct ps_dp_declare *d)
{
	const uint8_t *p = buf;
	struct ps_var_spec spec;
	const uint8_t *name;
	size_t n;
	int rc;

	if (!p || len < PS_DP_DECLARE_BYTES)
		return PS_EBAD_MESSAGE;
	memset(d, 0, sizeof(*d));
	d->kind = get32(p + 0);
	d->width = get32(p + 4);
	d->rows = get64(p + 8);
	d->part_begin = get64(p + 16);
	d->part_end = get64(p + 24);
	d->shard = get32(p + 32);
	d->nshards = get32(p + 36);
	memcpy(d->init, p + 40, 64);
	memcpy(d->optim, p + 104, 64);
	d->admit_prob = getf(p + 168);
	d->num_workers = get32(p + 172);
	d->admit_seed = get64(p + 176);
	name = p + 184;
	n = strnlen((const char *)name, NAME_LEN);
	if (n == NAME_LEN || !all_zero(name + n, NAME_LEN - n))
		return PS_EBAD_MESSAGE;
	memcpy(d->name, name, NAME_LEN);

	if (d->kind > PS_VAR_HASH128 || !d->width || d->part_begin >= d->part_end || !d->nshards ||
	    d->shard >= d->nshards || !d->num_workers)
		return PS_EBAD_MESSAGE;
	if (d->kind >= PS_VAR_HASH64 ? d->part_end > PS_HASH_BUCKETS : d->part_end > d->rows)
		return PS_EBAD_MESSAGE;
	rc = ps_dp_spec_decode(d, &spec);
	return rc;
}
