/*
 * The file:// streaming-model writer.
 *
 * Each delta is written under a temp name unique to this writer (".delta-w<id>-<pid>-<ns>.tmp"),
 * records appended as the write calls come, the CRC computed as buffers are flushed. Commit
 * writes the header, fsyncs, then under the folder's flock takes the next sequence number from
 * the manifest, renames the file to delta-<seq>.psd and rewrites the manifest atomically. The
 * manifest is what consumers trust: a delta file not (yet) in it does not exist for them, so a
 * crash between the rename and the manifest leaves an orphan that the next commit's rename of
 * the same number replaces.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/url.h"
#include "model_io/mio_internal.h"
#include "model_io/sm_internal.h"

struct file_writer {
	char dir[PS_URL_PATH_MAX];
	uint64_t writer_id;
	int fd; /* the current delta's temp file, or -1 */
	char tmp[PS_URL_PATH_MAX + 96];
	struct mio_wbuf wb;
	uint64_t rows, deletes, records;
	int err; /* sticky for the current delta */
	char errmsg[PS_URL_PATH_MAX + 256];
};

static int fw_fail(struct file_writer *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fw_fail(struct file_writer *w, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof(w->errmsg), fmt, ap);
	va_end(ap);
	if (!w->err)
		w->err = rc;
	return rc;
}

static void fw_discard(struct file_writer *w)
{
	if (w->fd >= 0) {
		close(w->fd);
		unlink(w->tmp);
	}
	w->fd = -1;
	mio_wbuf_free(&w->wb);
	w->rows = w->deletes = w->records = 0;
	w->err = 0;
}

/*
 * Temp files of this writer id left by a crash are garbage (never listed): remove them. Writers
 * sharing a folder must have distinct ids, so this never touches a live writer's delta.
 */
static void remove_stale_temps(const struct file_writer *w)
{
	char prefix[64], p[PS_URL_PATH_MAX + 96];
	DIR *d = opendir(w->dir);
	struct dirent *e;

	if (!d)
		return;
	snprintf(prefix, sizeof(prefix), ".delta-w%" PRIu64 "-", w->writer_id);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (!strncmp(e->d_name, prefix, strlen(prefix)) && n > 4 &&
		    !strcmp(e->d_name + n - 4, ".tmp") &&
		    !mio_path(p, sizeof(p), "%s/%s", w->dir, e->d_name))
			unlink(p);
	}
	closedir(d);
}

static int file_open(const char *url, const char *rest, const struct ps_sm_writer_opts *opts,
		     void **state, char *err, size_t errlen)
{
	struct file_writer *w;
	struct ps_url *u = malloc(sizeof(*u));
	int rc;

	if (!u)
		return -ENOMEM;
	rc = ps_url_parse(url, u, err, errlen);
	if (rc) {
		free(u);
		return rc;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		free(u);
		return -ENOMEM;
	}
	snprintf(w->dir, sizeof(w->dir), "%s", u->path);
	free(u);
	w->fd = -1;
	w->writer_id = opts->writer_id;
	rc = mio_mkdir_p(w->dir);
	if (rc) {
		ps_errf(err, errlen, "'%s': cannot create the folder %s: %s", url, w->dir,
			strerror(-rc));
		free(w);
		return rc;
	}
	remove_stale_temps(w);
	*state = w;
	return 0;
}

static int fw_start(struct file_writer *w)
{
	uint8_t zero[PS_SM_DELTA_HEADER_BYTES] = {0};
	int rc;

	if (w->err)
		return w->err;
	if (w->fd >= 0)
		return 0;
	if (mio_path(w->tmp, sizeof(w->tmp), "%s/.delta-w%" PRIu64 "-%ld-%" PRIu64 ".tmp", w->dir,
		     w->writer_id, (long)getpid(), mio_now_ns()))
		return fw_fail(w, -ENAMETOOLONG, "%s: path too long", w->dir);
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0)
		return fw_fail(w, -errno, "%s: cannot create: %s", w->tmp, strerror(errno));
	rc = mio_write_all(w->fd, zero, sizeof(zero));
	if (!rc)
		rc = mio_wbuf_init(&w->wb, w->fd, w->tmp, PS_SM_DELTA_HEADER_BYTES, 0);
	if (rc)
		return fw_fail(w, rc, "%s: %s", w->tmp, strerror(-rc));
	return 0;
}

/* One record: header, name padded to 8, then keys and floats as given. */
static int fw_record(struct file_writer *w, enum ps_sm_rec_type type, const char *name,
		     uint64_t var_id, uint32_t width, uint32_t nslots, uint64_t count,
		     uint64_t begin, const uint64_t *keys, size_t nkeywords, const float *values)
{
	struct ps_sm_record_hdr h = {
		.type = (uint8_t)type,
		.nslots = (uint8_t)nslots,
		.name_len = (uint16_t)(name ? strlen(name) : 0),
		.width = width,
		.var_id = var_id,
		.count = count,
		.begin = begin,
	};
	static const uint8_t pad[8];
	uint8_t raw[PS_SM_RECORD_HEADER_BYTES];
	bool ok;
	int rc = fw_start(w);

	if (rc)
		return rc;
	h.payload_bytes = ps_sm_record_payload_bytes(&h, &ok);
	ps_sm_record_header_encode(&h, raw);
	rc = mio_wbuf_put(&w->wb, raw, sizeof(raw));
	if (!rc && h.name_len)
		rc = mio_wbuf_put(&w->wb, name, h.name_len);
	if (!rc && h.name_len % 8)
		rc = mio_wbuf_put(&w->wb, pad, 8 - h.name_len % 8);
	if (!rc && nkeywords)
		rc = mio_wbuf_put_u64s(&w->wb, keys, nkeywords);
	if (!rc && values && count)
		rc = mio_wbuf_put_f32s(&w->wb, values, (size_t)count * width * (1u + nslots));
	if (rc)
		return fw_fail(w, rc, "%s: write failed: %s", w->tmp, strerror(-rc));
	w->records++;
	return 0;
}

static int file_dense(void *state, const struct ps_sm_dense_model *m)
{
	struct file_writer *w = state;
	int rc;

	if (!m->nrows)
		return w->err;
	rc = fw_record(w, PS_SM_REC_DENSE, m->var_name, m->var_id, m->width, m->nslots, m->nrows,
		       m->rows_begin, NULL, 0, m->values);
	if (!rc)
		w->rows += m->nrows;
	return rc;
}

static int file_sparse(void *state, const struct ps_sm_sparse_model *m)
{
	struct file_writer *w = state;
	int rc;

	if (!m->n)
		return w->err;
	rc = fw_record(w, PS_SM_REC_SPARSE, m->var_name, m->var_id, m->width, m->nslots, m->n, 0,
		       m->ids, m->n, m->values);
	if (!rc)
		w->rows += m->n;
	return rc;
}

static int file_hash(void *state, const struct ps_sm_hash_model *m)
{
	struct file_writer *w = state;
	bool k64 = m->key_bits == 64;
	int rc = w->err;

	/* Deletions first: a key deleted and re-created within one export ends up present. */
	if (!rc && m->ndeleted) {
		rc = fw_record(w, k64 ? PS_SM_REC_HASH64_DEL : PS_SM_REC_HASH128_DEL, m->var_name,
			       m->var_id, 0, 0, m->ndeleted, 0,
			       k64 ? m->deleted : (const uint64_t *)(const void *)m->deleted128,
			       k64 ? m->ndeleted : 2 * m->ndeleted, NULL);
		if (!rc)
			w->deletes += m->ndeleted;
	}
	if (!rc && m->n) {
		rc = fw_record(w, k64 ? PS_SM_REC_HASH64 : PS_SM_REC_HASH128, m->var_name,
			       m->var_id, m->width, m->nslots, m->n, 0,
			       k64 ? m->keys : (const uint64_t *)(const void *)m->keys128,
			       k64 ? m->n : 2 * m->n, m->values);
		if (!rc)
			w->rows += m->n;
	}
	return rc;
}

static int file_commit(void *state)
{
	struct file_writer *w = state;
	struct ps_sm_delta_hdr h = {0};
	struct ps_sm_manifest_entry *e = NULL, *ne;
	uint8_t raw[PS_SM_DELTA_HEADER_BYTES];
	char final[PS_URL_PATH_MAX + 96], sub[PS_URL_PATH_MAX + 256];
	size_t n = 0;
	int lfd = -1, rc;

	if (w->err) {
		/* The delta is poisoned: drop it, report, start clean next time. */
		rc = w->err;
		fw_discard(w);
		return rc;
	}
	if (w->fd < 0)
		return 0; /* nothing written since the last commit: no empty delta */
	rc = mio_wbuf_flush(&w->wb);
	if (rc) {
		fw_fail(w, rc, "%s: write failed: %s", w->tmp, strerror(-rc));
		goto discard;
	}
	h.magic = PS_SM_DELTA_MAGIC;
	h.format = PS_SM_DELTA_FORMAT;
	h.created_unix_ns = mio_now_ns();
	h.writer_id = w->writer_id;
	h.rows = w->rows;
	h.deletes = w->deletes;
	h.records = w->records;
	h.content_bytes = w->wb.off - PS_SM_DELTA_HEADER_BYTES;
	h.content_crc = w->wb.crc;
	ps_sm_delta_header_encode(&h, raw);
	rc = mio_pwrite_all(w->fd, raw, sizeof(raw), 0);
	if (!rc && fsync(w->fd))
		rc = -errno;
	if (rc) {
		fw_fail(w, rc, "%s: write/fsync failed: %s", w->tmp, strerror(-rc));
		goto discard;
	}
	mio_crash(PS_MIO_CRASH_DELTA_TMP);
	rc = mio_lock_dir(w->dir, &lfd, sub, sizeof(sub));
	if (!rc)
		rc = ps_sm_manifest_read(w->dir, &e, &n, sub, sizeof(sub));
	if (rc) {
		fw_fail(w, rc, "%s", sub);
		goto discard;
	}
	ne = realloc(e, (n + 1) * sizeof(*e));
	if (!ne) {
		rc = fw_fail(w, -ENOMEM, "out of memory");
		goto discard;
	}
	e = ne;
	memset(&e[n], 0, sizeof(e[n]));
	e[n].seq = n ? e[n - 1].seq + 1 : 1;
	ps_sm_delta_file_name(e[n].seq, e[n].file, sizeof(e[n].file));
	e[n].size = w->wb.off;
	e[n].crc32c = h.content_crc;
	e[n].rows = h.rows;
	e[n].deletes = h.deletes;
	e[n].writer_id = h.writer_id;
	e[n].created_unix_ns = h.created_unix_ns;
	if (mio_path(final, sizeof(final), "%s/%s", w->dir, e[n].file)) {
		rc = fw_fail(w, -ENAMETOOLONG, "%s: path too long", w->dir);
		goto discard;
	}
	if (rename(w->tmp, final)) {
		rc = fw_fail(w, -errno, "%s: rename to %s failed: %s", w->tmp, final,
			     strerror(errno));
		goto discard;
	}
	mio_crash(PS_MIO_CRASH_DELTA_RENAMED);
	rc = ps_sm_manifest_write(w->dir, e, n + 1, sub, sizeof(sub));
	if (rc) {
		fw_fail(w, rc, "%s", sub);
		unlink(final); /* never listed: remove, so the number is reused cleanly */
		goto discard;
	}
	close(w->fd);
	w->fd = -1;
	fw_discard(w);
	w->errmsg[0] = '\0';
	free(e);
	mio_unlock_dir(lfd);
	return 0;
discard:
	fw_discard(w);
	free(e);
	mio_unlock_dir(lfd);
	return rc;
}

static void file_close(void *state)
{
	struct file_writer *w = state;

	fw_discard(w);
	free(w);
}

static const char *file_errmsg(void *state)
{
	struct file_writer *w = state;

	return w->errmsg[0] ? w->errmsg : NULL;
}

const struct ps_sm_writer_ops ps_sm_file_ops = {
	.size = sizeof(struct ps_sm_writer_ops),
	.open = file_open,
	.write_dense = file_dense,
	.write_sparse = file_sparse,
	.write_hash = file_hash,
	.commit = file_commit,
	.close = file_close,
	.errmsg = file_errmsg,
};
