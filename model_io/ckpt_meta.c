/*
 * Checkpoint metadata: the C structs, their consistency check, and the checkpoint.meta file
 * (16-byte header + protobuf-c psplus.ckpt.Checkpoint).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <psplus/error.h>

#include "common/crc32c.h"
#include "model_io/ckpt.h"
#include "model_io/mio_internal.h"
#include "proto/checkpoint.pb-c.h"

/* The 16-byte header of checkpoint.meta; little-endian on disk at the offsets shown. */
struct ps_ckpt_meta_hdr {
	uint32_t magic;	 /*  0: PS_CKPT_META_MAGIC */
	uint16_t format; /*  4: PS_CKPT_FORMAT_VERSION */
	uint16_t flags;	 /*  6: 0 */
	uint32_t length; /*  8: bytes of protobuf that follow */
	uint32_t crc32c; /* 12: CRC32C of those bytes */
};
_Static_assert(sizeof(struct ps_ckpt_meta_hdr) == PS_CKPT_META_HEADER_BYTES, "meta header size");
_Static_assert(offsetof(struct ps_ckpt_meta_hdr, crc32c) == 12, "meta header crc offset");

/* ---- building ------------------------------------------------------------------------------ */

struct ps_ckpt_meta *ps_ckpt_meta_create(const char *name)
{
	struct ps_ckpt_meta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->format_version = PS_CKPT_FORMAT_VERSION;
	snprintf(m->name, sizeof(m->name), "%s", name ? name : "");
	return m;
}

void ps_ckpt_meta_free(struct ps_ckpt_meta *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nvars; i++)
		free(m->vars[i].parts);
	free(m->vars);
	free(m->placement);
	free(m);
}

int ps_ckpt_meta_set_placement(struct ps_ckpt_meta *m, const void *blob, size_t len)
{
	uint8_t *p = len ? malloc(len) : NULL;

	if (len && !p)
		return -ENOMEM;
	if (len)
		memcpy(p, blob, len);
	free(m->placement);
	m->placement = p;
	m->placement_len = len;
	return 0;
}

struct ps_ckpt_var *ps_ckpt_meta_add_var(struct ps_ckpt_meta *m, const char *name, uint64_t id,
					 const struct ps_var_spec *spec, uint32_t nslots)
{
	struct ps_ckpt_var *vars = realloc(m->vars, (m->nvars + 1) * sizeof(*vars)), *v;

	if (!vars)
		return NULL;
	m->vars = vars;
	v = &vars[m->nvars++];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name ? name : "");
	v->id = id;
	v->spec = *spec;
	v->nslots = nslots;
	return v;
}

int ps_ckpt_var_add_part(struct ps_ckpt_var *v, const struct ps_ckpt_part_desc *d)
{
	struct ps_ckpt_part_desc *p = realloc(v->parts, (v->nparts + 1) * sizeof(*p));
	size_t i;

	if (!p)
		return -ENOMEM;
	v->parts = p;
	/* Insertion keeps them sorted by begin: parts finish in any order. */
	for (i = v->nparts; i > 0 && p[i - 1].begin > d->begin; i--)
		p[i] = p[i - 1];
	p[i] = *d;
	v->nparts++;
	return 0;
}

struct ps_ckpt_var *ps_ckpt_meta_find_var(const struct ps_ckpt_meta *m, uint64_t id)
{
	for (size_t i = 0; i < m->nvars; i++)
		if (m->vars[i].id == id)
			return &m->vars[i];
	return NULL;
}

struct ps_ckpt_var *ps_ckpt_meta_find_var_name(const struct ps_ckpt_meta *m, const char *name)
{
	for (size_t i = 0; i < m->nvars; i++)
		if (!strcmp(m->vars[i].name, name))
			return &m->vars[i];
	return NULL;
}

size_t ps_ckpt_var_overlaps(const struct ps_ckpt_var *v, uint64_t begin, uint64_t end, size_t *idx)
{
	size_t n = 0;

	for (size_t i = 0; i < v->nparts; i++)
		if (v->parts[i].begin < end && begin < v->parts[i].end)
			idx[n++] = i;
	return n;
}

void ps_ckpt_var_state_for_range(const struct ps_ckpt_var *v, uint64_t begin, uint64_t end,
				 struct ps_ckpt_state *st)
{
	bool found = false;

	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < v->nparts; i++) {
		const struct ps_ckpt_part_desc *p = &v->parts[i];

		if (p->begin < end && begin < p->end && (!found || p->state.step > st->step)) {
			*st = p->state;
			found = true;
		}
	}
}

/* ---- checking -------------------------------------------------------------------------------- */

static bool is_hash(enum ps_var_kind k)
{
	return k == PS_VAR_HASH64 || k == PS_VAR_HASH128;
}

static int check_var(const struct ps_ckpt_var *v, char *err, size_t errlen)
{
	uint64_t dom, at = 0;

	if ((unsigned)v->spec.kind > PS_VAR_HASH128 || !v->spec.width ||
	    v->nslots > PS_OPTIM_MAX_SLOTS || v->spec.dtype != PS_DTYPE_FLOAT32) {
		ps_errf(err, errlen,
			"variable '%s' (id %" PRIu64 "): bad kind, dtype, width or slots", v->name,
			v->id);
		return PS_ECORRUPT;
	}
	if (!is_hash(v->spec.kind) && !v->spec.rows) {
		ps_errf(err, errlen, "variable '%s' (id %" PRIu64 "): no rows", v->name, v->id);
		return PS_ECORRUPT;
	}
	dom = is_hash(v->spec.kind) ? PS_HASH_BUCKETS : v->spec.rows;
	for (size_t i = 0; i < v->nparts; i++) {
		const struct ps_ckpt_part_desc *p = &v->parts[i];
		uint64_t rec = ps_ckpt_record_bytes(v->spec.kind, v->spec.width, v->nslots);

		if (!p->file[0] || p->file[0] == '.' || strchr(p->file, '/') ||
		    !memchr(p->file, '\0', sizeof(p->file))) {
			ps_errf(err, errlen, "variable '%s': part %zu has a bad file name", v->name,
				i);
			return PS_ECORRUPT;
		}
		if (p->begin != at || p->end <= p->begin || p->end > dom) {
			ps_errf(err, errlen,
				"variable '%s': part %s covers [%" PRIu64 ", %" PRIu64
				") where [%" PRIu64 ", ...) is due (domain [0, %" PRIu64 "))",
				v->name, p->file, p->begin, p->end, at, dom);
			return PS_ECORRUPT;
		}
		if ((!is_hash(v->spec.kind) && p->rows != p->end - p->begin) ||
		    p->rows > (UINT64_MAX >> 2) / rec ||
		    p->size != PS_CKPT_PART_HEADER_BYTES + p->rows * rec) {
			ps_errf(err, errlen,
				"variable '%s': part %s lists %" PRIu64 " rows and %" PRIu64
				" bytes, which do not agree",
				v->name, p->file, p->rows, p->size);
			return PS_ECORRUPT;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(v->parts[j].file, p->file)) {
				ps_errf(err, errlen, "variable '%s': part file %s listed twice",
					v->name, p->file);
				return PS_ECORRUPT;
			}
		at = p->end;
	}
	if (at != dom) {
		ps_errf(err, errlen,
			"variable '%s': parts cover [0, %" PRIu64 ") of the domain [0, %" PRIu64
			")",
			v->name, at, dom);
		return PS_ECORRUPT;
	}
	return 0;
}

int ps_ckpt_meta_check(const struct ps_ckpt_meta *m, char *err, size_t errlen)
{
	if (!ps_ckpt_name_valid(m->name)) {
		ps_errf(err, errlen, "bad checkpoint name '%s'", m->name);
		return -EINVAL;
	}
	for (size_t i = 0; i < m->nvars; i++) {
		int rc = check_var(&m->vars[i], err, errlen);

		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (m->vars[j].id == m->vars[i].id ||
			    (m->vars[i].name[0] && !strcmp(m->vars[j].name, m->vars[i].name))) {
				ps_errf(err, errlen, "variable id %" PRIu64 " or name '%s' twice",
					m->vars[i].id, m->vars[i].name);
				return PS_ECORRUPT;
			}
		/* Part file names must be unique across variables too: one folder. */
		for (size_t j = 0; j < i; j++)
			for (size_t a = 0; a < m->vars[i].nparts; a++)
				for (size_t b = 0; b < m->vars[j].nparts; b++)
					if (!strcmp(m->vars[i].parts[a].file,
						    m->vars[j].parts[b].file)) {
						ps_errf(err, errlen, "part file %s listed twice",
							m->vars[i].parts[a].file);
						return PS_ECORRUPT;
					}
	}
	return 0;
}

/* ---- protobuf conversion --------------------------------------------------------------------- */

static void optim_to_pb(const struct ps_optimizer *o, Psplus__Ckpt__Optimizer *p)
{
	p->kind = (uint32_t)o->kind;
	switch (o->kind) {
	case PS_OPTIM_SGD:
		p->learning_rate = o->sgd.learning_rate;
		break;
	case PS_OPTIM_MOMENTUM:
		p->learning_rate = o->momentum.learning_rate;
		p->momentum = o->momentum.momentum;
		p->use_nesterov = o->momentum.use_nesterov;
		break;
	case PS_OPTIM_ADAGRAD:
		p->learning_rate = o->adagrad.learning_rate;
		p->initial_accumulator_value = o->adagrad.initial_accumulator_value;
		break;
	case PS_OPTIM_ADAM:
		p->learning_rate = o->adam.learning_rate;
		p->beta1 = o->adam.beta1;
		p->beta2 = o->adam.beta2;
		p->epsilon = o->adam.epsilon;
		p->use_nesterov = o->adam.use_nesterov;
		break;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		p->learning_rate = o->rmsprop.learning_rate;
		p->rho = o->rmsprop.rho;
		p->momentum = o->rmsprop.momentum;
		p->epsilon = o->rmsprop.epsilon;
		p->initial_ms = o->rmsprop.initial_ms;
		break;
	case PS_OPTIM_FTRL:
		p->learning_rate = o->ftrl.learning_rate;
		p->learning_rate_power = o->ftrl.learning_rate_power;
		p->l1 = o->ftrl.l1;
		p->l2 = o->ftrl.l2;
		p->l2_shrinkage = o->ftrl.l2_shrinkage;
		p->initial_accumulator_value = o->ftrl.initial_accumulator_value;
		break;
	}
}

static int optim_from_pb(const Psplus__Ckpt__Optimizer *p, struct ps_optimizer *o)
{
	memset(o, 0, sizeof(*o));
	if (!p)
		return 0; /* absent: SGD with learning rate 0, as zero values decode */
	o->kind = (enum ps_optim_kind)p->kind;
	switch (p->kind) {
	case PS_OPTIM_SGD:
		o->sgd.learning_rate = p->learning_rate;
		return 0;
	case PS_OPTIM_MOMENTUM:
		o->momentum =
			(struct ps_optim_momentum){p->learning_rate, p->momentum, p->use_nesterov};
		return 0;
	case PS_OPTIM_ADAGRAD:
		o->adagrad =
			(struct ps_optim_adagrad){p->learning_rate, p->initial_accumulator_value};
		return 0;
	case PS_OPTIM_ADAM:
		o->adam = (struct ps_optim_adam){p->learning_rate, p->beta1, p->beta2, p->epsilon,
						 p->use_nesterov};
		return 0;
	case PS_OPTIM_RMSPROP:
	case PS_OPTIM_CENTERED_RMSPROP:
		o->rmsprop = (struct ps_optim_rmsprop){p->learning_rate, p->rho, p->momentum,
						       p->epsilon, p->initial_ms};
		return 0;
	case PS_OPTIM_FTRL:
		o->ftrl = (struct ps_optim_ftrl){
			p->learning_rate, p->learning_rate_power,      p->l1, p->l2,
			p->l2_shrinkage,  p->initial_accumulator_value};
		return 0;
	}
	return PS_ECORRUPT;
}

/* Everything the packed message points to, allocated in one go and freed in one go. */
struct pb_arena {
	Psplus__Ckpt__Variable *vars;
	Psplus__Ckpt__Variable **varp;
	Psplus__Ckpt__Initializer *inits;
	Psplus__Ckpt__Optimizer *optims;
	Psplus__Ckpt__PartFile *parts;
	Psplus__Ckpt__PartFile **partp;
	Psplus__Ckpt__OptimState *states;
};

static void arena_free(struct pb_arena *a)
{
	free(a->vars);
	free(a->varp);
	free(a->inits);
	free(a->optims);
	free(a->parts);
	free(a->partp);
	free(a->states);
}

int ps_ckpt_meta_encode(const struct ps_ckpt_meta *m, uint8_t **buf, size_t *len)
{
	Psplus__Ckpt__Checkpoint c = PSPLUS__CKPT__CHECKPOINT__INIT;
	struct pb_arena a = {0};
	size_t nparts = 0, pi = 0, body;
	uint8_t *out;
	int rc = -ENOMEM;

	*buf = NULL;
	*len = 0;
	for (size_t i = 0; i < m->nvars; i++)
		nparts += m->vars[i].nparts;
	a.vars = calloc(m->nvars + 1, sizeof(*a.vars));
	a.varp = calloc(m->nvars + 1, sizeof(*a.varp));
	a.inits = calloc(m->nvars + 1, sizeof(*a.inits));
	a.optims = calloc(m->nvars + 1, sizeof(*a.optims));
	a.parts = calloc(nparts + 1, sizeof(*a.parts));
	a.partp = calloc(nparts + 1, sizeof(*a.partp));
	a.states = calloc(nparts + 1, sizeof(*a.states));
	if (!a.vars || !a.varp || !a.inits || !a.optims || !a.parts || !a.partp || !a.states)
		goto out;
	c.format_version = m->format_version;
	c.name = (char *)m->name;
	c.created_unix_ns = m->created_unix_ns;
	c.cluster_version = m->cluster_version;
	c.server_count = m->server_count;
	c.placement.data = m->placement;
	c.placement.len = m->placement_len;
	c.derived_from = (char *)m->derived_from;
	c.last_delta_seq = m->last_delta_seq;
	c.n_variables = m->nvars;
	c.variables = a.varp;
	for (size_t i = 0; i < m->nvars; i++) {
		const struct ps_ckpt_var *v = &m->vars[i];
		Psplus__Ckpt__Variable *pv = &a.vars[i];
		Psplus__Ckpt__Initializer *pi_ = &a.inits[i];

		psplus__ckpt__variable__init(pv);
		psplus__ckpt__initializer__init(pi_);
		psplus__ckpt__optimizer__init(&a.optims[i]);
		a.varp[i] = pv;
		pv->name = (char *)v->name;
		pv->id = v->id;
		pv->kind = (uint32_t)v->spec.kind;
		pv->dtype = (uint32_t)v->spec.dtype;
		pv->rows = is_hash(v->spec.kind) ? 0 : v->spec.rows;
		pv->width = v->spec.width;
		pv->nslots = v->nslots;
		pi_->kind = (uint32_t)v->spec.init.kind;
		pi_->value = v->spec.init.value;
		pi_->min = v->spec.init.min;
		pi_->max = v->spec.init.max;
		pi_->mean = v->spec.init.mean;
		pi_->stddev = v->spec.init.stddev;
		pi_->seed = v->spec.init.seed;
		pv->init = pi_;
		optim_to_pb(&v->spec.optim, &a.optims[i]);
		pv->optim = &a.optims[i];
		pv->admit_prob = v->spec.admit_prob;
		pv->admit_seed = v->spec.admit_seed;
		pv->n_parts = v->nparts;
		pv->parts = &a.partp[pi];
		for (size_t j = 0; j < v->nparts; j++, pi++) {
			const struct ps_ckpt_part_desc *d = &v->parts[j];
			Psplus__Ckpt__PartFile *pf = &a.parts[pi];

			psplus__ckpt__part_file__init(pf);
			psplus__ckpt__optim_state__init(&a.states[pi]);
			a.partp[pi] = pf;
			pf->file = (char *)d->file;
			pf->begin = d->begin;
			pf->end = d->end;
			pf->rows = d->rows;
			pf->size = d->size;
			pf->crc32c = d->crc32c;
			a.states[pi].step = d->state.step;
			a.states[pi].beta1_power = d->state.beta1_power;
			a.states[pi].beta2_power = d->state.beta2_power;
			pf->state = &a.states[pi];
		}
	}
	body = psplus__ckpt__checkpoint__get_packed_size(&c);
	if (body > PS_CKPT_META_MAX_BYTES - PS_CKPT_META_HEADER_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	out = malloc(PS_CKPT_META_HEADER_BYTES + body);
	if (!out)
		goto out;
	psplus__ckpt__checkpoint__pack(&c, out + PS_CKPT_META_HEADER_BYTES);
	mio_put32(out + offsetof(struct ps_ckpt_meta_hdr, magic), PS_CKPT_META_MAGIC);
	mio_put16(out + offsetof(struct ps_ckpt_meta_hdr, format), PS_CKPT_FORMAT_VERSION);
	mio_put16(out + offsetof(struct ps_ckpt_meta_hdr, flags), 0);
	mio_put32(out + offsetof(struct ps_ckpt_meta_hdr, length), (uint32_t)body);
	mio_put32(out + offsetof(struct ps_ckpt_meta_hdr, crc32c),
		  ps_crc32c(0, out + PS_CKPT_META_HEADER_BYTES, body));
	*buf = out;
	*len = PS_CKPT_META_HEADER_BYTES + body;
	rc = 0;
out:
	arena_free(&a);
	return rc;
}

static int var_from_pb(const Psplus__Ckpt__Variable *pv, struct ps_ckpt_meta *m, const char *what,
		       char *err, size_t errlen)
{
	struct ps_var_spec spec = {0};
	struct ps_ckpt_var *v;

	if (strlen(pv->name) > PS_CKPT_VAR_NAME_MAX || pv->kind > PS_VAR_HASH128) {
		ps_errf(err, errlen, "%s: variable id %" PRIu64 ": name too long or bad kind %u",
			what, pv->id, pv->kind);
		return PS_ECORRUPT;
	}
	spec.kind = (enum ps_var_kind)pv->kind;
	spec.dtype = (enum ps_dtype)pv->dtype;
	spec.rows = pv->rows;
	spec.width = pv->width;
	if (pv->init) {
		spec.init.kind = (enum ps_init_kind)pv->init->kind;
		spec.init.value = pv->init->value;
		spec.init.min = pv->init->min;
		spec.init.max = pv->init->max;
		spec.init.mean = pv->init->mean;
		spec.init.stddev = pv->init->stddev;
		spec.init.seed = pv->init->seed;
	}
	if (optim_from_pb(pv->optim, &spec.optim)) {
		ps_errf(err, errlen, "%s: variable '%s': unknown optimizer kind %u", what, pv->name,
			pv->optim->kind);
		return PS_ECORRUPT;
	}
	spec.admit_prob = pv->admit_prob;
	spec.admit_seed = pv->admit_seed;
	v = ps_ckpt_meta_add_var(m, pv->name, pv->id, &spec, pv->nslots);
	if (!v)
		return -ENOMEM;
	for (size_t j = 0; j < pv->n_parts; j++) {
		const Psplus__Ckpt__PartFile *pf = pv->parts[j];
		struct ps_ckpt_part_desc d = {0};

		if (strlen(pf->file) >= sizeof(d.file)) {
			ps_errf(err, errlen, "%s: variable '%s': part file name too long", what,
				pv->name);
			return PS_ECORRUPT;
		}
		memcpy(d.file, pf->file, strlen(pf->file) + 1);
		d.begin = pf->begin;
		d.end = pf->end;
		d.rows = pf->rows;
		d.size = pf->size;
		d.crc32c = pf->crc32c;
		if (pf->state) {
			d.state.step = pf->state->step;
			d.state.beta1_power = pf->state->beta1_power;
			d.state.beta2_power = pf->state->beta2_power;
		}
		if (ps_ckpt_var_add_part(&m->vars[m->nvars - 1], &d))
			return -ENOMEM;
	}
	return 0;
}

int ps_ckpt_meta_decode(const uint8_t *buf, size_t len, const char *what, struct ps_ckpt_meta **out,
			char *err, size_t errlen)
{
	Psplus__Ckpt__Checkpoint *c;
	struct ps_ckpt_meta *m;
	uint32_t magic, blen, crc, want;
	char sub[512];
	int rc = 0;

	*out = NULL;
	if (len < PS_CKPT_META_HEADER_BYTES) {
		ps_errf(err, errlen, "%s: truncated at offset %zu (inside the %u-byte header)",
			what, len, PS_CKPT_META_HEADER_BYTES);
		return PS_ECORRUPT;
	}
	magic = mio_get32(buf);
	blen = mio_get32(buf + offsetof(struct ps_ckpt_meta_hdr, length));
	want = mio_get32(buf + offsetof(struct ps_ckpt_meta_hdr, crc32c));
	if (magic != PS_CKPT_META_MAGIC) {
		ps_errf(err, errlen, "%s: bad magic 0x%08x (want 0x%08x, \"PSCM\")", what, magic,
			PS_CKPT_META_MAGIC);
		return PS_ECORRUPT;
	}
	if (mio_get16(buf + 4) != PS_CKPT_FORMAT_VERSION || mio_get16(buf + 6)) {
		ps_errf(err, errlen, "%s: format %u flags 0x%x, this build reads format %u", what,
			mio_get16(buf + 4), mio_get16(buf + 6), PS_CKPT_FORMAT_VERSION);
		return PS_ECORRUPT;
	}
	if ((uint64_t)blen + PS_CKPT_META_HEADER_BYTES > len) {
		ps_errf(err, errlen,
			"%s: truncated at offset %zu (the header promises %" PRIu64 " bytes)", what,
			len, (uint64_t)blen + PS_CKPT_META_HEADER_BYTES);
		return PS_ECORRUPT;
	}
	if ((uint64_t)blen + PS_CKPT_META_HEADER_BYTES < len) {
		ps_errf(err, errlen, "%s: %zu trailing bytes", what,
			len - blen - PS_CKPT_META_HEADER_BYTES);
		return PS_ECORRUPT;
	}
	crc = ps_crc32c(0, buf + PS_CKPT_META_HEADER_BYTES, blen);
	if (crc != want) {
		ps_errf(err, errlen, "%s: CRC mismatch (header says 0x%08x, computed 0x%08x)", what,
			want, crc);
		return PS_ECORRUPT;
	}
	c = psplus__ckpt__checkpoint__unpack(NULL, blen, buf + PS_CKPT_META_HEADER_BYTES);
	if (!c) {
		ps_errf(err, errlen, "%s: the protobuf does not decode", what);
		return PS_ECORRUPT;
	}
	if (c->format_version != PS_CKPT_FORMAT_VERSION || strlen(c->name) > PS_CKPT_NAME_MAX ||
	    strlen(c->derived_from) > PS_CKPT_NAME_MAX) {
		ps_errf(err, errlen, "%s: format version %u or a name too long", what,
			c->format_version);
		psplus__ckpt__checkpoint__free_unpacked(c, NULL);
		return PS_ECORRUPT;
	}
	m = ps_ckpt_meta_create(c->name);
	if (!m) {
		psplus__ckpt__checkpoint__free_unpacked(c, NULL);
		return -ENOMEM;
	}
	m->created_unix_ns = c->created_unix_ns;
	m->cluster_version = c->cluster_version;
	m->server_count = c->server_count;
	m->last_delta_seq = c->last_delta_seq;
	snprintf(m->derived_from, sizeof(m->derived_from), "%s", c->derived_from);
	rc = ps_ckpt_meta_set_placement(m, c->placement.data, c->placement.len);
	for (size_t i = 0; i < c->n_variables && !rc; i++)
		rc = var_from_pb(c->variables[i], m, what, err, errlen);
	psplus__ckpt__checkpoint__free_unpacked(c, NULL);
	if (!rc && (rc = ps_ckpt_meta_check(m, sub, sizeof(sub)))) {
		ps_errf(err, errlen, "%s: %s", what, sub);
		rc = PS_ECORRUPT;
	}
	if (rc) {
		ps_ckpt_meta_free(m);
		return rc;
	}
	*out = m;
	return 0;
}
