/*
 * The streaming-model manager: scheme -> writer ops (built-ins, then plugins), the writer
 * handle, model validation and counting. Writers (built-in or plugin) only ever see models that
 * passed validate_*(), so a plugin need not repeat those checks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <psplus/error.h>
#include <psplus/plugin.h>

#include "common/url.h"
#include "model_io/mio_internal.h"
#include "model_io/sm.h"
#include "model_io/sm_internal.h"

struct ps_sm_writer {
	const struct ps_sm_writer_ops *ops;
	void *state;
	struct ps_sm_writer_stats stats;
	char scheme[PS_URL_SCHEME_MAX];
	char errmsg[512];
};

const struct ps_sm_writer_ops *ps_sm_manager_get(const char *scheme)
{
	if (!scheme)
		return NULL;
	if (!strcmp(scheme, "file"))
		return &ps_sm_file_ops;
	if (!strcmp(scheme, "none"))
		return &ps_sm_none_ops;
	return ps_plugin_model_writer(scheme);
}

int ps_sm_open_writer(const char *url, const struct ps_sm_writer_opts *opts,
		      struct ps_sm_writer **out, char *err, size_t errlen)
{
	const struct ps_sm_writer_opts dflt = {0};
	const struct ps_sm_writer_ops *ops;
	struct ps_sm_writer *w;
	struct ps_url *u;
	int rc;

	*out = NULL;
	u = malloc(sizeof(*u)); /* ~8 KiB: not on a server thread's stack */
	if (!u)
		return -ENOMEM;
	rc = ps_url_parse(url, u, err, errlen);
	if (rc) {
		free(u);
		return rc;
	}
	ops = ps_sm_manager_get(u->scheme);
	if (!ops) {
		ps_errf(err, errlen,
			"'%s': no streaming-model writer for scheme '%s' (built in: "
			"file, none; others come from plugins)",
			url, u->scheme);
		free(u);
		return PS_EUNSUPPORTED_SCHEME;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		free(u);
		return -ENOMEM;
	}
	w->ops = ops;
	snprintf(w->scheme, sizeof(w->scheme), "%s", u->scheme);
	free(u);
	rc = ops->open(url, strstr(url, "://") + 3, opts ? opts : &dflt, &w->state, err, errlen);
	if (rc) {
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* ---- validation ------------------------------------------------------------------------------ */

static int bad(struct ps_sm_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct ps_sm_writer *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof(w->errmsg), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Rows of (1 + nslots) * width floats: the byte count, or 0 on overflow past 2^62. */
static uint64_t row_bytes(uint64_t n, uint32_t width, uint32_t nslots)
{
	uint64_t per = 4ull * width * (1ull + nslots);

	return n > (UINT64_C(1) << 62) / per ? 0 : n * per;
}

static int check_common(struct ps_sm_writer *w, const char *what, const char *name, uint32_t width,
			uint32_t nslots, uint64_t n, uint64_t *bytes)
{
	if (name && strlen(name) > PS_SM_NAME_MAX)
		return bad(w, "%s: variable name longer than %d bytes", what, PS_SM_NAME_MAX);
	if (!width || nslots > PS_SM_MAX_SLOTS)
		return bad(w, "%s: width %u or slot count %u out of range", what, width, nslots);
	*bytes = row_bytes(n, width, nslots);
	if (n && !*bytes)
		return bad(w, "%s: %llu rows of width %u overflow", what, (unsigned long long)n,
			   width);
	return 0;
}

static int finish_call(struct ps_sm_writer *w, int rc)
{
	if (!rc) {
		w->stats.models++;
		return 0;
	}
	if (w->ops->size >= offsetof(struct ps_sm_writer_ops, errmsg) + sizeof(w->ops->errmsg) &&
	    w->ops->errmsg && w->ops->errmsg(w->state))
		snprintf(w->errmsg, sizeof(w->errmsg), "%s", w->ops->errmsg(w->state));
	else
		snprintf(w->errmsg, sizeof(w->errmsg), "%s:// writer: %s", w->scheme,
			 ps_strerror(rc));
	return rc;
}

int ps_sm_write_dense(struct ps_sm_writer *w, const struct ps_sm_dense_model *m)
{
	uint64_t bytes;
	int rc;

	if (!w || !m)
		return -EINVAL;
	rc = check_common(w, "dense model", m->var_name, m->width, m->nslots, m->nrows, &bytes);
	if (rc)
		return rc;
	if (m->nrows && !m->values)
		return bad(w, "dense model: no values for %llu rows", (unsigned long long)m->nrows);
	if (m->rows_begin + m->nrows < m->rows_begin)
		return bad(w, "dense model: rows_begin + nrows overflows");
	rc = finish_call(w, w->ops->write_dense(w->state, m));
	if (!rc) {
		w->stats.dense_rows += m->nrows;
		w->stats.value_bytes += bytes;
	}
	return rc;
}

int ps_sm_write_sparse(struct ps_sm_writer *w, const struct ps_sm_sparse_model *m)
{
	uint64_t bytes;
	int rc;

	if (!w || !m)
		return -EINVAL;
	rc = check_common(w, "sparse model", m->var_name, m->width, m->nslots, m->n, &bytes);
	if (rc)
		return rc;
	if (m->n && (!m->ids || !m->values))
		return bad(w, "sparse model: no ids or values for %zu rows", m->n);
	rc = finish_call(w, w->ops->write_sparse(w->state, m));
	if (!rc) {
		w->stats.sparse_rows += m->n;
		w->stats.value_bytes += bytes;
	}
	return rc;
}

int ps_sm_write_hash(struct ps_sm_writer *w, const struct ps_sm_hash_model *m)
{
	uint64_t bytes;
	bool k64;
	int rc;

	if (!w || !m)
		return -EINVAL;
	rc = check_common(w, "hash model", m->var_name, m->width, m->nslots, m->n, &bytes);
	if (rc)
		return rc;
	if (m->key_bits != 64 && m->key_bits != 128)
		return bad(w, "hash model: key_bits %u (64 or 128)", m->key_bits);
	k64 = m->key_bits == 64;
	if ((k64 && (m->keys128 || m->deleted128)) || (!k64 && (m->keys || m->deleted)))
		return bad(w, "hash model: %u-bit keys given in the %u-bit arrays", m->key_bits,
			   k64 ? 128 : 64);
	if (m->n && (!m->values || (k64 ? !m->keys : !m->keys128)))
		return bad(w, "hash model: no keys or values for %zu rows", m->n);
	if (m->ndeleted && (k64 ? !m->deleted : !m->deleted128))
		return bad(w, "hash model: no array for %zu deleted keys", m->ndeleted);
	if (m->ndeleted > (SIZE_MAX >> 5))
		return bad(w, "hash model: too many deleted keys");
	rc = finish_call(w, w->ops->write_hash(w->state, m));
	if (!rc) {
		w->stats.hash_rows += m->n;
		w->stats.hash_deletes += m->ndeleted;
		w->stats.value_bytes += bytes;
	}
	return rc;
}

int ps_sm_writer_commit(struct ps_sm_writer *w)
{
	int rc;

	if (!w)
		return -EINVAL;
	rc = w->ops->commit(w->state);
	if (!rc) {
		w->stats.commits++;
		return 0;
	}
	return finish_call(w, rc);
}

void ps_sm_writer_close(struct ps_sm_writer *w)
{
	if (!w)
		return;
	w->ops->close(w->state);
	free(w);
}

const char *ps_sm_writer_errmsg(const struct ps_sm_writer *w)
{
	return w->errmsg[0] ? w->errmsg : "no error";
}

void ps_sm_writer_stats(const struct ps_sm_writer *w, struct ps_sm_writer_stats *st)
{
	*st = w->stats;
}

int ps_sm_open_write_any(const char *url, const struct ps_sm_writer_opts *opts,
			 const struct ps_sm_batch *b, char *err, size_t errlen)
{
	struct ps_sm_writer *w;
	int rc;

	if (!b)
		return -EINVAL;
	rc = ps_sm_open_writer(url, opts, &w, err, errlen);
	if (rc)
		return rc;
	for (size_t i = 0; i < b->ndense && !rc; i++)
		rc = ps_sm_write_dense(w, &b->dense[i]);
	for (size_t i = 0; i < b->nsparse && !rc; i++)
		rc = ps_sm_write_sparse(w, &b->sparse[i]);
	for (size_t i = 0; i < b->nhash && !rc; i++)
		rc = ps_sm_write_hash(w, &b->hash[i]);
	if (!rc)
		rc = ps_sm_writer_commit(w);
	if (rc)
		ps_errf(err, errlen, "'%s': %s", url, ps_sm_writer_errmsg(w));
	ps_sm_writer_close(w);
	return rc;
}

/* ---- none:// ---------------------------------------------------------------------------------- */

/* Discards; the manager counts. A static non-NULL state: open allocates nothing. */
static char none_state;

static int none_open(const char *url, const char *rest, const struct ps_sm_writer_opts *opts,
		     void **state, char *err, size_t errlen)
{
	if (*rest) {
		ps_errf(err, errlen, "'%s': none:// takes nothing after the scheme", url);
		return PS_EBAD_URL;
	}
	*state = &none_state;
	return 0;
}

static int none_dense(void *state, const struct ps_sm_dense_model *m)
{
	return 0;
}

static int none_sparse(void *state, const struct ps_sm_sparse_model *m)
{
	return 0;
}

static int none_hash(void *state, const struct ps_sm_hash_model *m)
{
	return 0;
}

static int none_commit(void *state)
{
	return 0;
}

static void none_close(void *state)
{
}

const struct ps_sm_writer_ops ps_sm_none_ops = {
	.size = sizeof(struct ps_sm_writer_ops),
	.open = none_open,
	.write_dense = none_dense,
	.write_sparse = none_sparse,
	.write_hash = none_hash,
	.commit = none_commit,
	.close = none_close,
};
