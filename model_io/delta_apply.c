/*
 * Applying file:// streaming deltas to a checkpoint, producing a new checkpoint.
 *
 * Two passes. First every selected delta is read (each verified whole before use) into one
 * overlay per variable: a hash table from row id / key to the latest state of that row (new
 * values, optionally slots, or "deleted"), later deltas overriding earlier ones. Then every part
 * file of the base is streamed through the overlay into a part file of the same name and range
 * in the new checkpoint: rows replaced or dropped, and, for hash variables, the keys new to the
 * checkpoint appended to the part whose bucket range holds them. The new checkpoint is
 * committed only when every part is written; any error removes the partial folder.
 *
 * Slot rules for a row in the result: the delta's slots when the latest write carried them
 * (an earlier write's slots when only a later one lacked them); otherwise the base row's slots,
 * unless the key was deleted at some point in the sequence (its base slots are then stale) or
 * is new, in which case fresh slots from init_slots.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <psplus/error.h>

#include "model_io/mio_internal.h"
#include "model_io/sm.h"

#define NO_DATA UINT64_MAX

enum ov_state { OV_EMPTY = 0, OV_ROW = 1, OV_DELETED = 2 };

struct ov_entry {
	uint64_t lo, hi;   /* row id, or key (lo, hi) */
	uint64_t data;	   /* row index into the arena, NO_DATA before the first write */
	uint8_t state;	   /* enum ov_state */
	uint8_t has_slots; /* the arena row's slots are valid */
	uint8_t reset;	   /* deleted somewhere in the sequence: base slots are stale */
	uint8_t consumed;  /* matched a base row */
};

struct overlay {
	const struct ps_ckpt_var *v;
	size_t nf; /* floats per row: (1 + nslots) * width */
	struct ov_entry *tab;
	size_t cap, used; /* cap is a power of two (or 0) */
	float *arena;
	size_t arows, acap; /* rows used / allocated in the arena */
};

struct apply {
	const struct ps_ckpt_apply_opts *o;
	struct ps_ckpt_apply_stats *st;
	struct ps_ckpt_meta *base;
	struct overlay *ov; /* one per base variable, same order */
	char *err;
	size_t errlen;
};

static int fail(struct apply *a, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct apply *a, int rc, const char *fmt, ...)
{
	va_list ap;

	if (a->err && a->errlen) {
		va_start(ap, fmt);
		vsnprintf(a->err, a->errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static bool is_hash(enum ps_var_kind k)
{
	return k == PS_VAR_HASH64 || k == PS_VAR_HASH128;
}

/* ---- the overlay ----------------------------------------------------------------------------- */

static size_t ov_slot(uint64_t lo, uint64_t hi, size_t mask)
{
	return (size_t)(ps_mix64(lo ^ ps_mix64(hi ^ UINT64_C(0x9e3779b97f4a7c15))) & mask);
}

static int ov_grow(struct overlay *ov)
{
	size_t ncap = ov->cap ? ov->cap * 2 : 1024;
	struct ov_entry *t = calloc(ncap, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < ov->cap; i++) {
		struct ov_entry *e = &ov->tab[i];
		size_t j;

		if (e->state == OV_EMPTY)
			continue;
		for (j = ov_slot(e->lo, e->hi, ncap - 1); t[j].state != OV_EMPTY;
		     j = (j + 1) & (ncap - 1))
			;
		t[j] = *e;
	}
	free(ov->tab);
	ov->tab = t;
	ov->cap = ncap;
	return 0;
}

static struct ov_entry *ov_find(const struct overlay *ov, uint64_t lo, uint64_t hi)
{
	if (!ov->cap)
		return NULL;
	for (size_t j = ov_slot(lo, hi, ov->cap - 1);; j = (j + 1) & (ov->cap - 1)) {
		struct ov_entry *e = &ov->tab[j];

		if (e->state == OV_EMPTY)
			return NULL;
		if (e->lo == lo && e->hi == hi)
			return e;
	}
}

/* The entry of (lo, hi), created empty-but-claimed (state set by the caller). NULL: -ENOMEM. */
static struct ov_entry *ov_upsert(struct overlay *ov, uint64_t lo, uint64_t hi)
{
	struct ov_entry *e = ov_find(ov, lo, hi);
	size_t j;

	if (e)
		return e;
	if ((ov->used + 1) * 2 > ov->cap && ov_grow(ov))
		return NULL;
	for (j = ov_slot(lo, hi, ov->cap - 1); ov->tab[j].state != OV_EMPTY;
	     j = (j + 1) & (ov->cap - 1))
		;
	e = &ov->tab[j];
	*e = (struct ov_entry){.lo = lo, .hi = hi, .data = NO_DATA, .state = OV_DELETED};
	ov->used++;
	return e;
}

static float *ov_row(struct overlay *ov, const struct ov_entry *e)
{
	return ov->arena + e->data * ov->nf;
}

static int ov_write_row(struct overlay *ov, uint64_t lo, uint64_t hi, const float *src,
			uint32_t src_slots)
{
	struct ov_entry *e = ov_upsert(ov, lo, hi);
	uint32_t w = ov->v->spec.width;

	if (!e)
		return -ENOMEM;
	if (e->data == NO_DATA) {
		if (ov->arows == ov->acap) {
			size_t ncap = ov->acap ? ov->acap * 2 : 256;
			float *na = realloc(ov->arena, ncap * ov->nf * sizeof(float));

			if (!na)
				return -ENOMEM;
			ov->arena = na;
			ov->acap = ncap;
		}
		e->data = ov->arows++;
	}
	if (e->state != OV_ROW)
		e->has_slots = 0; /* fresh, or re-created after a deletion */
	e->state = OV_ROW;
	memcpy(ov_row(ov, e), src, (size_t)w * (1u + src_slots) * sizeof(float));
	if (src_slots)
		e->has_slots = 1;
	return 0;
}

static int ov_delete(struct overlay *ov, uint64_t lo, uint64_t hi)
{
	struct ov_entry *e = ov_upsert(ov, lo, hi);

	if (!e)
		return -ENOMEM;
	e->state = OV_DELETED;
	e->has_slots = 0;
	e->reset = 1;
	return 0;
}

static void ov_free(struct overlay *ov)
{
	free(ov->tab);
	free(ov->arena);
}

/* ---- pass 1: deltas into the overlay ---------------------------------------------------------- */

static int apply_record(struct apply *a, const char *path, const struct ps_sm_record *r)
{
	struct ps_ckpt_var *v = ps_ckpt_meta_find_var(a->base, r->var_id);
	struct overlay *ov;
	enum ps_var_kind k;
	bool del = r->type == PS_SM_REC_HASH64_DEL || r->type == PS_SM_REC_HASH128_DEL;
	size_t stride;
	int rc = 0;

	if (!v || (r->var_name[0] && v->name[0] && strcmp(r->var_name, v->name)))
		return fail(a, PS_EUNKNOWN_VAR,
			    "%s: variable id %" PRIu64 " ('%s') is not in checkpoint '%s'", path,
			    r->var_id, r->var_name, a->base->name);
	ov = &a->ov[v - a->base->vars];
	k = v->spec.kind;
	if (((r->type == PS_SM_REC_DENSE || r->type == PS_SM_REC_SPARSE) && is_hash(k)) ||
	    ((r->type == PS_SM_REC_HASH64 || r->type == PS_SM_REC_HASH64_DEL) &&
	     k != PS_VAR_HASH64) ||
	    ((r->type == PS_SM_REC_HASH128 || r->type == PS_SM_REC_HASH128_DEL) &&
	     k != PS_VAR_HASH128))
		return fail(a, PS_ECORRUPT, "%s: a record of type %u for %s variable '%s'", path,
			    r->type, ps_ckpt_kind_name(k), v->name);
	if (!del && (r->width != v->spec.width || (r->nslots && r->nslots != v->nslots)))
		return fail(a, PS_ECORRUPT,
			    "%s: variable '%s' has width %u and %u slots, a record has %u and %u",
			    path, v->name, v->spec.width, v->nslots, r->width, r->nslots);
	stride = (size_t)r->width * (1u + r->nslots);
	for (uint64_t i = 0; i < r->count && !rc; i++) {
		switch (r->type) {
		case PS_SM_REC_DENSE:
		case PS_SM_REC_SPARSE: {
			uint64_t id = r->type == PS_SM_REC_DENSE ? r->begin + i : r->keys[i];

			if (id >= v->spec.rows)
				return fail(a, PS_EOUT_OF_RANGE,
					    "%s: row %" PRIu64 " of '%s', which has %" PRIu64
					    " rows",
					    path, id, v->name, v->spec.rows);
			rc = ov_write_row(ov, id, 0, r->values + i * stride, r->nslots);
			break;
		}
		case PS_SM_REC_HASH64:
			rc = ov_write_row(ov, r->keys[i], 0, r->values + i * stride, r->nslots);
			break;
		case PS_SM_REC_HASH128:
			rc = ov_write_row(ov, r->keys[2 * i], r->keys[2 * i + 1],
					  r->values + i * stride, r->nslots);
			break;
		case PS_SM_REC_HASH64_DEL:
			rc = ov_delete(ov, r->keys[i], 0);
			break;
		case PS_SM_REC_HASH128_DEL:
			rc = ov_delete(ov, r->keys[2 * i], r->keys[2 * i + 1]);
			break;
		}
	}
	return rc ? fail(a, rc, "%s: out of memory for the overlay", path) : 0;
}

static int read_delta(struct apply *a, const char *path, const struct ps_sm_manifest_entry *e)
{
	struct ps_sm_delta_reader *r;
	struct ps_sm_record rec;
	int rc = ps_sm_delta_reader_open(path, &r, a->err, a->errlen);

	if (rc)
		return rc;
	if (ps_sm_delta_reader_header(r)->content_crc != e->crc32c) {
		ps_sm_delta_reader_close(r);
		return fail(a, PS_ECORRUPT, "%s: is not the delta the manifest lists (CRC differs)",
			    path);
	}
	while ((rc = ps_sm_delta_reader_next(r, &rec)) == 1) {
		rc = apply_record(a, path, &rec); /* fills the message itself */
		if (rc) {
			ps_sm_delta_reader_close(r);
			return rc;
		}
	}
	if (rc)
		fail(a, rc, "%s", ps_sm_delta_reader_errmsg(r));
	ps_sm_delta_reader_close(r);
	return rc;
}

/* ---- pass 2: base parts through the overlay --------------------------------------------------- */

struct pending {
	uint32_t bucket;
	size_t idx; /* into the overlay table */
};

static int cmp_pending(const void *x, const void *y)
{
	const struct pending *p = x, *q = y;

	return p->bucket < q->bucket ? -1 : p->bucket > q->bucket;
}

static void fresh_slots(struct apply *a, const struct ps_ckpt_var *v, float *row)
{
	if (!v->nslots)
		return;
	if (a->o->init_slots)
		a->o->init_slots(a->o->init_arg, &v->spec.optim, row, v->spec.width);
	else
		memset(row + v->spec.width, 0, (size_t)v->spec.width * v->nslots * sizeof(float));
}

/* Builds the row written for overlay entry @e into @out (base row @base or NULL if new). */
static void merge_row(struct apply *a, struct overlay *ov, const struct ov_entry *e,
		      const float *base, float *out)
{
	const struct ps_ckpt_var *v = ov->v;
	size_t w = v->spec.width;

	memcpy(out, ov_row(ov, e), w * sizeof(float));
	if (e->has_slots)
		memcpy(out + w, ov_row(ov, e) + w, w * v->nslots * sizeof(float));
	else if (base && !e->reset)
		memcpy(out + w, base + w, w * v->nslots * sizeof(float));
	else
		fresh_slots(a, v, out);
}

static int write_part(struct apply *a, struct overlay *ov, const char *base_dir,
		      const char *new_dir, const struct ps_ckpt_part_desc *d,
		      const struct pending *pend, size_t npend, struct ps_ckpt_var *nv)
{
	const struct ps_ckpt_var *v = ov->v;
	struct ps_ckpt_part_writer_opts wo = {
		.dir = new_dir,
		.file = d->file,
		.var_id = v->id,
		.kind = v->spec.kind,
		.width = v->spec.width,
		.nslots = v->nslots,
		.begin = d->begin,
		.end = d->end,
	};
	struct ps_ckpt_part_reader_opts ro = {0};
	struct ps_ckpt_part_reader *r = NULL;
	struct ps_ckpt_part_writer *w = NULL;
	struct ps_ckpt_part_desc nd;
	struct ps_ckpt_row row;
	char path[4400];
	uint64_t last = 0;
	float *tmp = malloc(ov->nf * sizeof(float));
	int rc;

	if (!tmp)
		return fail(a, -ENOMEM, "out of memory");
	if (mio_path(path, sizeof(path), "%s/%s", base_dir, d->file)) {
		free(tmp);
		return fail(a, -ENAMETOOLONG, "%s/%s: path too long", base_dir, d->file);
	}
	ro.path = path;
	rc = ps_ckpt_part_reader_open(&ro, &r, a->err, a->errlen);
	if (!rc)
		rc = ps_ckpt_part_writer_create(&wo, &w, a->err, a->errlen);
	while (!rc) {
		struct ov_entry *e;
		const float *src;
		int n = ps_ckpt_part_reader_next(r, &row);

		if (n == 0)
			break;
		if (n < 0) {
			rc = fail(a, n, "%s", ps_ckpt_part_reader_errmsg(r));
			break;
		}
		e = ov_find(ov, row.id, row.key_hi);
		src = row.data;
		if (e) {
			e->consumed = 1;
			if (e->state == OV_DELETED) {
				a->st->keys_deleted++;
				continue;
			}
			merge_row(a, ov, e, row.data, tmp);
			src = tmp;
			a->st->rows_replaced++;
		}
		rc = ps_ckpt_part_writer_append(w, row.id, row.key_hi, src);
		if (rc)
			fail(a, rc, "%s", ps_ckpt_part_writer_errmsg(w));
		if (a->o->progress && ps_ckpt_part_reader_offset(r) - last >= (4u << 20)) {
			a->o->progress(a->o->parg, ps_ckpt_part_reader_offset(r) - last);
			last = ps_ckpt_part_reader_offset(r);
		}
	}
	/* Keys new to the checkpoint whose bucket this part holds. */
	for (size_t i = 0; !rc && i < npend && pend[i].bucket < d->end; i++) {
		struct ov_entry *e = &ov->tab[pend[i].idx];

		if (pend[i].bucket < d->begin || e->consumed)
			continue;
		merge_row(a, ov, e, NULL, tmp);
		rc = ps_ckpt_part_writer_append(w, e->lo, e->hi, tmp);
		if (rc)
			fail(a, rc, "%s", ps_ckpt_part_writer_errmsg(w));
		a->st->rows_inserted++;
	}
	if (!rc && (rc = ps_ckpt_part_writer_finish(w, &nd)))
		fail(a, rc, "%s", ps_ckpt_part_writer_errmsg(w));
	if (!rc) {
		nd.state = d->state;
		rc = ps_ckpt_var_add_part(nv, &nd);
	}
	if (a->o->progress && r)
		a->o->progress(a->o->parg, d->size - last);
	ps_ckpt_part_reader_close(r);
	ps_ckpt_part_writer_destroy(w);
	free(tmp);
	return rc;
}

static int write_var(struct apply *a, size_t vi, const char *base_dir, const char *new_dir,
		     struct ps_ckpt_meta *nm)
{
	struct overlay *ov = &a->ov[vi];
	const struct ps_ckpt_var *v = &a->base->vars[vi];
	struct ps_ckpt_var *nv = ps_ckpt_meta_add_var(nm, v->name, v->id, &v->spec, v->nslots);
	struct pending *pend = NULL;
	size_t npend = 0, lo;
	int rc = 0;

	if (!nv)
		return fail(a, -ENOMEM, "out of memory");
	if (is_hash(v->spec.kind) && ov->used) {
		pend = malloc(ov->used * sizeof(*pend));
		if (!pend)
			return fail(a, -ENOMEM, "out of memory");
		for (size_t i = 0; i < ov->cap; i++)
			if (ov->tab[i].state == OV_ROW)
				pend[npend++] = (struct pending){
					v->spec.kind == PS_VAR_HASH64
						? ps_hash_bucket64(ov->tab[i].lo)
						: ps_hash_bucket128(ov->tab[i].lo, ov->tab[i].hi),
					i};
		qsort(pend, npend, sizeof(*pend), cmp_pending);
	}
	for (size_t j = 0, at = 0; j < v->nparts && !rc; j++) {
		/* Skip to the pending keys of this part's buckets (parts are sorted). */
		for (lo = at; lo < npend && pend[lo].bucket < v->parts[j].begin; lo++)
			;
		at = lo;
		rc = write_part(a, ov, base_dir, new_dir, &v->parts[j], pend ? pend + at : NULL,
				npend - at, nv);
	}
	for (size_t i = 0; !rc && i < ov->cap; i++)
		if (ov->tab[i].state == OV_DELETED && !ov->tab[i].consumed)
			a->st->deletes_absent++;
	free(pend);
	return rc;
}

/* ---- driver ---------------------------------------------------------------------------------- */

static int load_deltas(struct apply *a, struct ps_sm_manifest_entry **sel, size_t *nsel)
{
	const struct ps_ckpt_apply_opts *o = a->o;
	struct ps_sm_manifest_entry *all;
	uint64_t after = o->after_seq == UINT64_MAX ? a->base->last_delta_seq : o->after_seq;
	size_t n, k = 0;
	int rc = ps_sm_manifest_read(o->delta_dir, &all, &n, a->err, a->errlen);

	*sel = NULL;
	*nsel = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (all[i].seq > after && (!o->upto_seq || all[i].seq <= o->upto_seq))
			all[k++] = all[i];
	if (!k) {
		free(all);
		return fail(a, -ENOENT, "no delta in %s with %" PRIu64 " < seq%s (%zu listed)",
			    o->delta_dir, after, o->upto_seq ? " <= upto" : "", n);
	}
	*sel = all;
	*nsel = k;
	for (size_t i = 0; i < k; i++)
		a->st->bytes_in += all[i].size;
	return 0;
}

int ps_ckpt_apply_deltas(const struct ps_ckpt_apply_opts *o, struct ps_ckpt_apply_stats *st,
			 char *err, size_t errlen)
{
	struct ps_ckpt_apply_stats dummy;
	struct apply a = {.o = o, .st = st ? st : &dummy, .err = err, .errlen = errlen};
	struct ps_sm_manifest_entry *sel = NULL;
	struct ps_ckpt_meta *nm = NULL;
	char base_dir[4200], new_dir[4200], path[4400];
	bool begun = false;
	size_t nsel = 0;
	int rc;

	memset(a.st, 0, sizeof(*a.st));
	if (!o || !o->root || !o->base || !o->delta_dir || !o->new_name)
		return -EINVAL;
	if (!ps_ckpt_name_valid(o->new_name))
		return fail(&a, -EINVAL, "bad checkpoint name '%s'", o->new_name);
	rc = ps_ckpt_meta_load(o->root, o->base, &a.base, err, errlen);
	if (rc)
		return rc;
	if (ps_ckpt_dir(o->root, a.base->name, base_dir, sizeof(base_dir))) {
		rc = fail(&a, -ENAMETOOLONG, "%s: path too long", o->root);
		goto out;
	}
	a.ov = calloc(a.base->nvars + 1, sizeof(*a.ov));
	if (!a.ov) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < a.base->nvars; i++) {
		a.ov[i].v = &a.base->vars[i];
		a.ov[i].nf = (size_t)a.base->vars[i].spec.width * (1u + a.base->vars[i].nslots);
		for (size_t j = 0; j < a.base->vars[i].nparts; j++)
			a.st->bytes_in += a.base->vars[i].parts[j].size;
	}
	rc = load_deltas(&a, &sel, &nsel);
	for (size_t i = 0; i < nsel && !rc; i++) {
		if (mio_path(path, sizeof(path), "%s/%s", o->delta_dir, sel[i].file)) {
			rc = fail(&a, -ENAMETOOLONG, "%s: path too long", o->delta_dir);
			break;
		}
		rc = read_delta(&a, path, &sel[i]);
		if (o->progress)
			o->progress(o->parg, sel[i].size);
	}
	if (rc)
		goto out;
	a.st->deltas = nsel;
	a.st->first_seq = sel[0].seq;
	a.st->last_seq = sel[nsel - 1].seq;

	rc = ps_ckpt_begin(o->root, o->new_name, new_dir, sizeof(new_dir), err, errlen);
	if (rc)
		goto out;
	begun = true;
	nm = ps_ckpt_meta_create(o->new_name);
	if (!nm || ps_ckpt_meta_set_placement(nm, a.base->placement, a.base->placement_len)) {
		rc = -ENOMEM;
		goto out;
	}
	nm->cluster_version = a.base->cluster_version;
	nm->server_count = a.base->server_count;
	snprintf(nm->derived_from, sizeof(nm->derived_from), "%s", a.base->name);
	nm->last_delta_seq = a.st->last_seq;
	for (size_t i = 0; i < a.base->nvars && !rc; i++)
		rc = write_var(&a, i, base_dir, new_dir, nm);
	if (!rc)
		rc = ps_ckpt_commit(o->root, nm, err, errlen);
out:
	if (rc && begun)
		ps_ckpt_abort(o->root, o->new_name);
	for (size_t i = 0; a.ov && i < a.base->nvars; i++)
		ov_free(&a.ov[i]);
	free(a.ov);
	free(sel);
	ps_ckpt_meta_free(nm);
	ps_ckpt_meta_free(a.base);
	return rc;
}
