/*
 * Checkpoint part files: the 64-byte header, the streaming writer and the validating reader.
 *
 * The writer reserves the header, streams records through a buffer (CRC computed as each buffer
 * is flushed, while it is in cache), then writes the header last: until then the file has a
 * zero header, which no reader accepts, and it lives under a temp name anyway. fsync before the
 * rename, so the final name never shows a file whose contents are not on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/crc32c.h"
#include "model_io/ckpt.h"
#include "model_io/mio_internal.h"

_Static_assert(sizeof(struct ps_ckpt_part_hdr) == PS_CKPT_PART_HEADER_BYTES, "part header size");
_Static_assert(offsetof(struct ps_ckpt_part_hdr, width) == 8, "width offset");
_Static_assert(offsetof(struct ps_ckpt_part_hdr, var_id) == 16, "var_id offset");
_Static_assert(offsetof(struct ps_ckpt_part_hdr, content_bytes) == 48, "content_bytes offset");
_Static_assert(offsetof(struct ps_ckpt_part_hdr, header_crc) == 60, "header_crc offset");

#define OFF(f) offsetof(struct ps_ckpt_part_hdr, f)

const char *ps_ckpt_kind_name(enum ps_var_kind kind)
{
	switch (kind) {
	case PS_VAR_DENSE:
		return "dense";
	case PS_VAR_SPARSE:
		return "sparse";
	case PS_VAR_HASH64:
		return "hash64";
	case PS_VAR_HASH128:
		return "hash128";
	}
	return "unknown";
}

static bool is_hash(unsigned kind)
{
	return kind == PS_VAR_HASH64 || kind == PS_VAR_HASH128;
}

uint64_t ps_ckpt_record_bytes(enum ps_var_kind kind, uint32_t width, uint32_t nslots)
{
	return (kind == PS_VAR_HASH128 ? 16u : 8u) + 4ull * width * (1ull + nslots);
}

int ps_ckpt_part_file_name(uint64_t var_id, uint64_t begin, uint64_t end, char *out, size_t len)
{
	return mio_path(out, len, "v%" PRIu64 "-%" PRIu64 "-%" PRIu64 ".psp", var_id, begin, end);
}

void ps_ckpt_part_header_encode(const struct ps_ckpt_part_hdr *h, uint8_t out[64])
{
	memset(out, 0, PS_CKPT_PART_HEADER_BYTES);
	mio_put32(out + OFF(magic), h->magic);
	mio_put16(out + OFF(format), h->format);
	out[OFF(kind)] = h->kind;
	out[OFF(nslots)] = h->nslots;
	mio_put32(out + OFF(width), h->width);
	mio_put32(out + OFF(flags), h->flags);
	mio_put64(out + OFF(var_id), h->var_id);
	mio_put64(out + OFF(begin), h->begin);
	mio_put64(out + OFF(end), h->end);
	mio_put64(out + OFF(rows), h->rows);
	mio_put64(out + OFF(content_bytes), h->content_bytes);
	mio_put32(out + OFF(content_crc), h->content_crc);
	mio_put32(out + OFF(header_crc), ps_crc32c(0, out, OFF(header_crc)));
}

int ps_ckpt_part_header_decode(const uint8_t in[64], struct ps_ckpt_part_hdr *h, char *err,
			       size_t errlen)
{
	uint32_t crc = ps_crc32c(0, in, OFF(header_crc));
	uint64_t rec;

	h->magic = mio_get32(in + OFF(magic));
	h->format = mio_get16(in + OFF(format));
	h->kind = in[OFF(kind)];
	h->nslots = in[OFF(nslots)];
	h->width = mio_get32(in + OFF(width));
	h->flags = mio_get32(in + OFF(flags));
	h->var_id = mio_get64(in + OFF(var_id));
	h->begin = mio_get64(in + OFF(begin));
	h->end = mio_get64(in + OFF(end));
	h->rows = mio_get64(in + OFF(rows));
	h->content_bytes = mio_get64(in + OFF(content_bytes));
	h->content_crc = mio_get32(in + OFF(content_crc));
	h->header_crc = mio_get32(in + OFF(header_crc));

	if (h->magic != PS_CKPT_PART_MAGIC) {
		ps_errf(err, errlen, "bad magic 0x%08x (want 0x%08x, \"PSCP\"): not a part file",
			h->magic, PS_CKPT_PART_MAGIC);
		return PS_ECORRUPT;
	}
	if (crc != h->header_crc) {
		ps_errf(err, errlen, "header CRC mismatch (stored 0x%08x, computed 0x%08x)",
			h->header_crc, crc);
		return PS_ECORRUPT;
	}
	if (h->format != PS_CKPT_FORMAT_VERSION) {
		ps_errf(err, errlen, "format version %u, this build reads %u", h->format,
			PS_CKPT_FORMAT_VERSION);
		return PS_ECORRUPT;
	}
	if (h->flags) {
		ps_errf(err, errlen, "unknown flags 0x%x", h->flags);
		return PS_ECORRUPT;
	}
	if (h->kind > PS_VAR_HASH128 || !h->width || h->nslots > PS_OPTIM_MAX_SLOTS) {
		ps_errf(err, errlen, "bad kind %u, width %u or slot count %u", h->kind, h->width,
			h->nslots);
		return PS_ECORRUPT;
	}
	if (h->begin >= h->end || (is_hash(h->kind) && h->end > PS_HASH_BUCKETS)) {
		ps_errf(err, errlen, "bad range [%" PRIu64 ", %" PRIu64 ")", h->begin, h->end);
		return PS_ECORRUPT;
	}
	if (!is_hash(h->kind) && h->rows != h->end - h->begin) {
		ps_errf(err, errlen, "%" PRIu64 " rows for the range [%" PRIu64 ", %" PRIu64 ")",
			h->rows, h->begin, h->end);
		return PS_ECORRUPT;
	}
	rec = ps_ckpt_record_bytes(h->kind, h->width, h->nslots);
	if (h->rows > (UINT64_MAX >> 2) / rec || h->content_bytes != h->rows * rec) {
		ps_errf(err, errlen,
			"content size %" PRIu64 " is not %" PRIu64 " rows of %" PRIu64 " bytes",
			h->content_bytes, h->rows, rec);
		return PS_ECORRUPT;
	}
	return 0;
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct ps_ckpt_part_writer {
	struct ps_ckpt_part_hdr hdr;
	struct mio_wbuf wb;
	int fd;
	bool finished;
	uint64_t rows;
	char tmp[4200];
	char path[4200];
	char file[PS_CKPT_FILE_MAX];
	char errmsg[4400];
};

static bool file_name_ok(const char *f)
{
	return f && *f && *f != '.' && !strchr(f, '/') && strlen(f) < PS_CKPT_FILE_MAX;
}

int ps_ckpt_part_writer_create(const struct ps_ckpt_part_writer_opts *o,
			       struct ps_ckpt_part_writer **out, char *err, size_t errlen)
{
	struct ps_ckpt_part_writer *w;
	uint8_t zero[PS_CKPT_PART_HEADER_BYTES] = {0};
	int rc;

	*out = NULL;
	if (!o || !o->dir || o->kind > PS_VAR_HASH128 || !o->width ||
	    o->nslots > PS_OPTIM_MAX_SLOTS || o->begin >= o->end ||
	    (is_hash(o->kind) && o->end > PS_HASH_BUCKETS) || (o->file && !file_name_ok(o->file))) {
		ps_errf(err, errlen,
			"part writer: bad options (kind, width, slots, range or name)");
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	if (o->file)
		snprintf(w->file, sizeof(w->file), "%s", o->file);
	else if (ps_ckpt_part_file_name(o->var_id, o->begin, o->end, w->file, sizeof(w->file)))
		goto toolong;
	if (mio_path(w->path, sizeof(w->path), "%s/%s", o->dir, w->file) ||
	    mio_path(w->tmp, sizeof(w->tmp), "%s/.%s.tmp", o->dir, w->file))
		goto toolong;
	w->hdr = (struct ps_ckpt_part_hdr){
		.magic = PS_CKPT_PART_MAGIC,
		.format = PS_CKPT_FORMAT_VERSION,
		.kind = (uint8_t)o->kind,
		.nslots = (uint8_t)o->nslots,
		.width = o->width,
		.var_id = o->var_id,
		.begin = o->begin,
		.end = o->end,
	};
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot create: %s", w->tmp, strerror(-rc));
		goto fail;
	}
	rc = mio_write_all(w->fd, zero, sizeof(zero));
	if (rc) {
		ps_errf(err, errlen, "%s: write failed: %s", w->tmp, strerror(-rc));
		goto fail;
	}
	rc = mio_wbuf_init(&w->wb, w->fd, w->tmp, PS_CKPT_PART_HEADER_BYTES, o->buffer_bytes);
	if (rc)
		goto fail;
	*out = w;
	return 0;
toolong:
	ps_errf(err, errlen, "%s: part file path too long", o->dir);
	rc = -ENAMETOOLONG;
fail:
	ps_ckpt_part_writer_destroy(w);
	return rc;
}

int ps_ckpt_part_writer_append(struct ps_ckpt_part_writer *w, uint64_t id, uint64_t key_hi,
			       const float *data)
{
	const struct ps_ckpt_part_hdr *h = &w->hdr;
	uint64_t key[2] = {id, key_hi};
	int rc;

	if (w->finished || !data)
		return -EINVAL;
	if (w->wb.err)
		return w->wb.err;
	switch (h->kind) {
	case PS_VAR_DENSE:
	case PS_VAR_SPARSE:
		if (id != h->begin + w->rows || id >= h->end) {
			snprintf(w->errmsg, sizeof(w->errmsg),
				 "%s: row %" PRIu64 " appended where row %" PRIu64 " is due",
				 w->tmp, id, h->begin + w->rows);
			return PS_EOUT_OF_RANGE;
		}
		break;
	case PS_VAR_HASH64:
	case PS_VAR_HASH128: {
		uint32_t b = h->kind == PS_VAR_HASH64 ? ps_hash_bucket64(id)
						      : ps_hash_bucket128(id, key_hi);

		if (h->kind == PS_VAR_HASH64 && key_hi)
			return -EINVAL;
		if (b < h->begin || b >= h->end) {
			snprintf(w->errmsg, sizeof(w->errmsg),
				 "%s: key %" PRIu64 " is in bucket %u, outside [%" PRIu64
				 ", %" PRIu64 ")",
				 w->tmp, id, b, h->begin, h->end);
			return PS_EOUT_OF_RANGE;
		}
		break;
	}
	}
	rc = mio_wbuf_put_u64s(&w->wb, key, h->kind == PS_VAR_HASH128 ? 2 : 1);
	if (!rc)
		rc = mio_wbuf_put_f32s(&w->wb, data, (size_t)h->width * (1u + h->nslots));
	if (rc) {
		snprintf(w->errmsg, sizeof(w->errmsg), "%s: write failed: %s", w->tmp,
			 strerror(-rc));
		return rc;
	}
	w->rows++;
	return 0;
}

int ps_ckpt_part_writer_finish(struct ps_ckpt_part_writer *w, struct ps_ckpt_part_desc *desc)
{
	struct ps_ckpt_part_hdr *h = &w->hdr;
	uint8_t raw[PS_CKPT_PART_HEADER_BYTES];
	int rc;

	if (w->finished)
		return -EINVAL;
	if (!is_hash(h->kind) && w->rows != h->end - h->begin) {
		snprintf(w->errmsg, sizeof(w->errmsg),
			 "%s: %" PRIu64 " rows written, the range [%" PRIu64 ", %" PRIu64
			 ") needs %" PRIu64,
			 w->tmp, w->rows, h->begin, h->end, h->end - h->begin);
		return -EINVAL;
	}
	rc = mio_wbuf_flush(&w->wb);
	if (rc) {
		snprintf(w->errmsg, sizeof(w->errmsg), "%s: write failed: %s", w->tmp,
			 strerror(-rc));
		return rc;
	}
	h->rows = w->rows;
	h->content_bytes = w->wb.off - PS_CKPT_PART_HEADER_BYTES;
	h->content_crc = w->wb.crc;
	ps_ckpt_part_header_encode(h, raw);
	rc = mio_pwrite_all(w->fd, raw, sizeof(raw), 0);
	if (!rc && fsync(w->fd))
		rc = -errno;
	if (rc) {
		snprintf(w->errmsg, sizeof(w->errmsg), "%s: write/fsync failed: %s", w->tmp,
			 strerror(-rc));
		return rc;
	}
	close(w->fd);
	w->fd = -1;
	mio_crash(PS_MIO_CRASH_PART_TMP);
	if (rename(w->tmp, w->path)) {
		rc = -errno;
		snprintf(w->errmsg, sizeof(w->errmsg), "%s: rename failed: %s", w->tmp,
			 strerror(-rc));
		return rc;
	}
	w->finished = true;
	memset(desc, 0, sizeof(*desc));
	snprintf(desc->file, sizeof(desc->file), "%s", w->file);
	desc->begin = h->begin;
	desc->end = h->end;
	desc->rows = h->rows;
	desc->size = w->wb.off;
	desc->crc32c = h->content_crc;
	return 0;
}

const char *ps_ckpt_part_writer_errmsg(const struct ps_ckpt_part_writer *w)
{
	return w->errmsg[0] ? w->errmsg : "no error";
}

void ps_ckpt_part_writer_destroy(struct ps_ckpt_part_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (!w->finished && w->tmp[0])
		unlink(w->tmp);
	mio_wbuf_free(&w->wb);
	free(w);
}

/* ---- reader ---------------------------------------------------------------------------------- */

struct ps_ckpt_part_reader {
	struct ps_ckpt_part_hdr hdr;
	struct mio_rbuf rb;
	int fd;
	uint64_t next_row; /* records consumed */
	uint64_t fbegin, fend;
	uint64_t rec_bytes;
	size_t nfloats;
	float *row;		    /* one record's floats */
	int err;		    /* sticky */
	uint64_t ra_ahead, ra_step; /* readahead option: bytes kept asked for, per call */
	uint64_t ra_next;	    /* file offset asked for up to */
	char path[4200];
	char errmsg[4400];
};

/* The readahead option: keep the kernel reading ra_ahead bytes past the position, asking for
 * whole steps once at least one is due (the end of the file as the last, shorter, one). */
static void reader_ahead(struct ps_ckpt_part_reader *r)
{
	uint64_t end = PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes, want, to;

	if (!r->ra_ahead || r->ra_next >= end)
		return;
	want = mio_rbuf_offset(&r->rb) + r->ra_ahead;
	if (want >= end)
		to = end;
	else if (want >= r->ra_next + r->ra_step)
		to = want;
	else
		return;
	mio_readahead(r->fd, r->ra_next, to, r->ra_step);
	r->ra_next = to;
}

void ps_ckpt_part_prefetch(const char *path, uint64_t bytes)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	mio_readahead(fd, 0, bytes, mio_readahead_step(fd));
	close(fd);
}

static int reader_fail(struct ps_ckpt_part_reader *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int reader_fail(struct ps_ckpt_part_reader *r, int rc, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(r->errmsg, sizeof(r->errmsg), "%s: ", r->path);

	va_start(ap, fmt);
	vsnprintf(r->errmsg + n, sizeof(r->errmsg) - (size_t)n, fmt, ap);
	va_end(ap);
	r->err = rc;
	return rc;
}

/* Checks the content CRC over the whole file before rows are handed out (verify_first). */
static int reader_prescan(struct ps_ckpt_part_reader *r)
{
	uint64_t off = PS_CKPT_PART_HEADER_BYTES, end = off + r->hdr.content_bytes;
	uint32_t crc = 0;

	if (r->rb.map) {
		crc = ps_crc32c(0, r->rb.buf, r->rb.len);
		off = end;
	}
	while (off < end) {
		size_t want = end - off < r->rb.cap ? (size_t)(end - off) : r->rb.cap, got;
		int rc = mio_pread_full(r->fd, r->rb.buf, want, off, &got);

		if (rc)
			return reader_fail(r, rc, "read failed: %s", strerror(-rc));
		if (got < want)
			return reader_fail(r, PS_ECORRUPT, "truncated at offset %" PRIu64,
					   off + got);
		crc = ps_crc32c(crc, r->rb.buf, got);
		off += got;
	}
	if (crc != r->hdr.content_crc)
		return reader_fail(r, PS_ECORRUPT,
				   "content CRC mismatch (header says 0x%08x, computed 0x%08x)",
				   r->hdr.content_crc, crc);
	return 0;
}

int ps_ckpt_part_reader_open(const struct ps_ckpt_part_reader_opts *o,
			     struct ps_ckpt_part_reader **out, char *err, size_t errlen)
{
	struct ps_ckpt_part_reader *r;
	uint8_t raw[PS_CKPT_PART_HEADER_BYTES];
	char sub[512];
	struct stat st;
	size_t got, cap;
	int rc;

	*out = NULL;
	if (!o || !o->path || o->filter_begin > o->filter_end)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	snprintf(r->path, sizeof(r->path), "%s", o->path);
	r->fd = open(o->path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0) {
		rc = reader_fail(r, -errno, "cannot open: %s", strerror(errno));
		goto fail;
	}
	if (fstat(r->fd, &st)) {
		rc = reader_fail(r, -errno, "cannot stat: %s", strerror(errno));
		goto fail;
	}
	rc = mio_pread_full(r->fd, raw, sizeof(raw), 0, &got);
	if (rc) {
		reader_fail(r, rc, "read failed: %s", strerror(-rc));
		goto fail;
	}
	if (got < sizeof(raw)) {
		rc = reader_fail(r, PS_ECORRUPT,
				 "truncated at offset %zu (inside the %u-byte header)", got,
				 PS_CKPT_PART_HEADER_BYTES);
		goto fail;
	}
	rc = ps_ckpt_part_header_decode(raw, &r->hdr, sub, sizeof(sub));
	if (rc) {
		reader_fail(r, rc, "%s", sub);
		goto fail;
	}
	if ((uint64_t)st.st_size < PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes) {
		rc = reader_fail(r, PS_ECORRUPT,
				 "truncated at offset %lld (the header promises %" PRIu64 " bytes)",
				 (long long)st.st_size,
				 PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes);
		goto fail;
	}
	if ((uint64_t)st.st_size > PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes) {
		rc = reader_fail(r, PS_ECORRUPT, "%" PRIu64 " trailing bytes after the last row",
				 (uint64_t)st.st_size - PS_CKPT_PART_HEADER_BYTES -
					 r->hdr.content_bytes);
		goto fail;
	}
	r->rec_bytes = ps_ckpt_record_bytes(r->hdr.kind, r->hdr.width, r->hdr.nslots);
	r->nfloats = (size_t)r->hdr.width * (1u + r->hdr.nslots);
	r->row = malloc(r->nfloats * sizeof(float));
	/* Room for one whole record at least: ps_ckpt_part_reader_next_batch() hands records out
	 * in place. (A file without rows needs none, whatever its header's width.) */
	cap = o->buffer_bytes ? o->buffer_bytes : 1u << 20;
	if (cap < r->rec_bytes && r->rec_bytes <= r->hdr.content_bytes)
		cap = (size_t)r->rec_bytes;
	rc = r->row ? 0 : -ENOMEM;
	if (!rc && (!o->map || !r->hdr.content_bytes ||
		    mio_rbuf_map(&r->rb, r->fd, PS_CKPT_PART_HEADER_BYTES,
				 PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes)))
		rc = mio_rbuf_init(&r->rb, r->fd, PS_CKPT_PART_HEADER_BYTES,
				   PS_CKPT_PART_HEADER_BYTES + r->hdr.content_bytes, cap);
	if (rc) {
		reader_fail(r, rc, "out of memory");
		goto fail;
	}
	r->fbegin = o->filter_begin;
	r->fend = o->filter_end ? o->filter_end : UINT64_MAX;
	if (o->readahead) {
		r->ra_ahead = o->readahead;
		r->ra_step = mio_readahead_step(r->fd);
		r->ra_next = PS_CKPT_PART_HEADER_BYTES;
		reader_ahead(r);
	}
	if (o->verify_first && (rc = reader_prescan(r)))
		goto fail;
	*out = r;
	return 0;
fail:
	ps_errf(err, errlen, "%s", r->errmsg);
	ps_ckpt_part_reader_close(r);
	return rc;
}

const struct ps_ckpt_part_hdr *ps_ckpt_part_reader_header(const struct ps_ckpt_part_reader *r)
{
	return &r->hdr;
}

uint64_t ps_ckpt_part_reader_offset(const struct ps_ckpt_part_reader *r)
{
	return mio_rbuf_offset(&r->rb);
}

const char *ps_ckpt_part_reader_errmsg(const struct ps_ckpt_part_reader *r)
{
	return r->errmsg[0] ? r->errmsg : "no error";
}

/* A record's key, read at file offset @at as record @rowno: ids in sequence (dense/sparse), the
 * bucket inside the part's range (hash). */
static int check_key(struct ps_ckpt_part_reader *r, const uint64_t key[2], uint64_t at,
		     uint64_t rowno)
{
	const struct ps_ckpt_part_hdr *h = &r->hdr;
	uint32_t b;

	if (h->kind == PS_VAR_DENSE || h->kind == PS_VAR_SPARSE) {
		if (key[0] != h->begin + rowno)
			return reader_fail(r, PS_ECORRUPT,
					   "row at offset %" PRIu64 " has id %" PRIu64
					   " where %" PRIu64 " is due",
					   at, key[0], h->begin + rowno);
		return 0;
	}
	b = h->kind == PS_VAR_HASH64 ? ps_hash_bucket64(key[0]) : ps_hash_bucket128(key[0], key[1]);
	if (b < h->begin || b >= h->end)
		return reader_fail(r, PS_ECORRUPT,
				   "key at offset %" PRIu64 " is in bucket %u, outside [%" PRIu64
				   ", %" PRIu64 ")",
				   at, b, h->begin, h->end);
	return 0;
}

/* Does the filter take the row with @key? */
static bool in_filter(const struct ps_ckpt_part_reader *r, const uint64_t key[2])
{
	const struct ps_ckpt_part_hdr *h = &r->hdr;
	uint64_t x = h->kind == PS_VAR_HASH64	 ? ps_hash_bucket64(key[0])
		     : h->kind == PS_VAR_HASH128 ? ps_hash_bucket128(key[0], key[1])
						 : key[0];

	return x >= r->fbegin && x < r->fend;
}

static int read_record(struct ps_ckpt_part_reader *r, uint64_t key[2])
{
	const struct ps_ckpt_part_hdr *h = &r->hdr;
	uint64_t at = mio_rbuf_offset(&r->rb);
	int nk = h->kind == PS_VAR_HASH128 ? 2 : 1;
	int rc;

	key[1] = 0;
	rc = mio_rbuf_get(&r->rb, key, 8u * (unsigned)nk);
	if (!rc)
		rc = mio_rbuf_get(&r->rb, r->row, r->nfloats * sizeof(float));
	if (rc == -ENODATA)
		return reader_fail(r, PS_ECORRUPT,
				   "truncated at offset %" PRIu64 " (row %" PRIu64 ")",
				   mio_rbuf_offset(&r->rb), r->next_row);
	if (rc)
		return reader_fail(r, rc, "read failed at offset %" PRIu64 ": %s", at,
				   strerror(-rc));
	mio_le_u64s(key, (size_t)nk);
	mio_le_f32s(r->row, r->nfloats);
	r->next_row++;
	return check_key(r, key, at, r->next_row - 1);
}

/* Every record consumed: 0 when the content CRC matches. */
static int reader_end(struct ps_ckpt_part_reader *r)
{
	if (r->rb.crc != r->hdr.content_crc)
		return reader_fail(r, PS_ECORRUPT,
				   "content CRC mismatch (header says 0x%08x, computed 0x%08x)",
				   r->hdr.content_crc, r->rb.crc);
	return 0;
}

int ps_ckpt_part_reader_next(struct ps_ckpt_part_reader *r, struct ps_ckpt_row *row)
{
	const struct ps_ckpt_part_hdr *h = &r->hdr;
	uint64_t key[2];

	if (r->err)
		return r->err;
	reader_ahead(r);
	while (r->next_row < h->rows) {
		int rc = read_record(r, key);

		if (rc)
			return rc;
		if (!in_filter(r, key))
			continue;
		row->id = key[0];
		row->key_hi = key[1];
		row->data = r->row;
		row->width = h->width;
		row->nslots = h->nslots;
		return 1;
	}
	return reader_end(r);
}

/*
 * One buffer window per call: the rows handed out point into the buffer, which the next fill
 * moves. The records of the window are checksummed in one pass just before the caller copies
 * them, so they are read from cache, not from memory, the second time.
 */
int ps_ckpt_part_reader_next_batch(struct ps_ckpt_part_reader *r, struct ps_ckpt_row *rows,
				   size_t max, size_t *n)
{
	const struct ps_ckpt_part_hdr *h = &r->hdr;
	size_t kb = h->kind == PS_VAR_HASH128 ? 16 : 8, rec = (size_t)r->rec_bytes;

	*n = 0;
	if (r->err)
		return r->err;
	if (!rows || !max)
		return -EINVAL;
	reader_ahead(r);
	while (!*n && r->next_row < h->rows) {
		uint64_t at = mio_rbuf_offset(&r->rb), left = h->rows - r->next_row;
		size_t avail, k;
		uint8_t *p;
		int rc = mio_rbuf_window(&r->rb, rec, &p, &avail);

		if (rc == -ENODATA)
			return reader_fail(r, PS_ECORRUPT,
					   "truncated at offset %" PRIu64 " (row %" PRIu64 ")",
					   r->rb.off, r->next_row);
		if (rc)
			return reader_fail(r, rc, "read failed at offset %" PRIu64 ": %s", at,
					   strerror(-rc));
		k = avail / rec;
		if (k > max)
			k = max;
		if (k > left)
			k = (size_t)left;
		mio_rbuf_consume(&r->rb, k * rec);
		for (size_t i = 0; i < k; i++, p += rec, at += rec) {
			uint64_t key[2] = {0, 0};

			memcpy(key, p, kb);
			mio_le_u64s(key, kb / 8);
			rc = check_key(r, key, at, r->next_row++);
			if (rc)
				return rc;
			if (!in_filter(r, key))
				continue;
			mio_le_f32s((float *)(void *)(p + kb), r->nfloats);
			rows[*n] = (struct ps_ckpt_row){.id = key[0],
							.key_hi = key[1],
							.data = (const float *)(void *)(p + kb),
							.width = h->width,
							.nslots = h->nslots};
			++*n;
		}
	}
	return *n ? 0 : reader_end(r);
}

void ps_ckpt_part_reader_close(struct ps_ckpt_part_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	mio_rbuf_free(&r->rb);
	free(r->row);
	free(r);
}

/* ---- whole-file verification ----------------------------------------------------------------- */

int ps_ckpt_part_verify(const char *path, const struct ps_ckpt_part_desc *e, uint64_t var_id,
			enum ps_var_kind kind, uint32_t width, uint32_t nslots,
			ps_mio_progress_fn progress, void *parg, char *err, size_t errlen)
{
	struct ps_ckpt_part_reader_opts o = {.path = path};
	struct ps_ckpt_part_reader *r;
	const struct ps_ckpt_part_hdr *h;
	struct ps_ckpt_row row;
	uint64_t last = 0;
	int rc;

	rc = ps_ckpt_part_reader_open(&o, &r, err, errlen);
	if (rc)
		return rc;
	h = &r->hdr;
	if (e && (h->var_id != var_id || h->kind != kind || h->width != width ||
		  h->nslots != nslots || h->begin != e->begin || h->end != e->end ||
		  h->rows != e->rows || PS_CKPT_PART_HEADER_BYTES + h->content_bytes != e->size ||
		  h->content_crc != e->crc32c)) {
		ps_errf(err, errlen,
			"%s: header does not match the metadata (var %" PRIu64 "/%" PRIu64
			", kind %u/%u, width %u/%u, slots %u/%u, range [%" PRIu64 ", %" PRIu64
			")/[%" PRIu64 ", %" PRIu64 "), rows %" PRIu64 "/%" PRIu64
			", crc 0x%08x/0x%08x)",
			path, h->var_id, var_id, h->kind, (unsigned)kind, h->width, width,
			h->nslots, nslots, h->begin, h->end, e->begin, e->end, h->rows, e->rows,
			h->content_crc, e->crc32c);
		ps_ckpt_part_reader_close(r);
		return PS_ECORRUPT;
	}
	while ((rc = ps_ckpt_part_reader_next(r, &row)) == 1) {
		uint64_t off = ps_ckpt_part_reader_offset(r);

		if (progress && off - last >= (4u << 20)) {
			progress(parg, off - last);
			last = off;
		}
	}
	if (progress)
		progress(parg, ps_ckpt_part_reader_offset(r) - last);
	if (rc)
		ps_errf(err, errlen, "%s", ps_ckpt_part_reader_errmsg(r));
	ps_ckpt_part_reader_close(r);
	return rc;
}
