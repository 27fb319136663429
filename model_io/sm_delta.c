/*
 * file:// streaming deltas, consumer side: the delta and record headers, the manifest, the
 * delta reader (whole-file CRC before the first record) and the follower.
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
#include "model_io/mio_internal.h"
#include "model_io/sm_internal.h"

_Static_assert(sizeof(struct ps_sm_delta_hdr) == PS_SM_DELTA_HEADER_BYTES, "delta header size");
_Static_assert(offsetof(struct ps_sm_delta_hdr, content_crc) == 56, "delta content_crc offset");
_Static_assert(offsetof(struct ps_sm_delta_hdr, header_crc) == 60, "delta header_crc offset");
_Static_assert(sizeof(struct ps_sm_record_hdr) == PS_SM_RECORD_HEADER_BYTES, "record header size");
_Static_assert(offsetof(struct ps_sm_record_hdr, payload_bytes) == 32, "record payload offset");

#define DOFF(f)		offsetof(struct ps_sm_delta_hdr, f)
#define ROFF(f)		offsetof(struct ps_sm_record_hdr, f)
#define MANIFEST_MAGIC	"psplus-deltas 1\n"
#define MANIFEST_MAX	(256u << 20)
#define MANIFEST_FIELDS 8
#define PATH_BYTES	4200

int ps_sm_delta_file_name(uint64_t seq, char *out, size_t len)
{
	return mio_path(out, len, "delta-%06" PRIu64 ".psd", seq);
}

void ps_sm_delta_header_encode(const struct ps_sm_delta_hdr *h, uint8_t out[64])
{
	memset(out, 0, PS_SM_DELTA_HEADER_BYTES);
	mio_put32(out + DOFF(magic), h->magic);
	mio_put16(out + DOFF(format), h->format);
	mio_put16(out + DOFF(flags), h->flags);
	mio_put64(out + DOFF(created_unix_ns), h->created_unix_ns);
	mio_put64(out + DOFF(writer_id), h->writer_id);
	mio_put64(out + DOFF(rows), h->rows);
	mio_put64(out + DOFF(deletes), h->deletes);
	mio_put64(out + DOFF(records), h->records);
	mio_put64(out + DOFF(content_bytes), h->content_bytes);
	mio_put32(out + DOFF(content_crc), h->content_crc);
	mio_put32(out + DOFF(header_crc), ps_crc32c(0, out, DOFF(header_crc)));
}

int ps_sm_delta_header_decode(const uint8_t in[64], struct ps_sm_delta_hdr *h, char *err,
			      size_t errlen)
{
	uint32_t crc = ps_crc32c(0, in, DOFF(header_crc));

	h->magic = mio_get32(in + DOFF(magic));
	h->format = mio_get16(in + DOFF(format));
	h->flags = mio_get16(in + DOFF(flags));
	h->created_unix_ns = mio_get64(in + DOFF(created_unix_ns));
	h->writer_id = mio_get64(in + DOFF(writer_id));
	h->rows = mio_get64(in + DOFF(rows));
	h->deletes = mio_get64(in + DOFF(deletes));
	h->records = mio_get64(in + DOFF(records));
	h->content_bytes = mio_get64(in + DOFF(content_bytes));
	h->content_crc = mio_get32(in + DOFF(content_crc));
	h->header_crc = mio_get32(in + DOFF(header_crc));
	if (h->magic != PS_SM_DELTA_MAGIC) {
		ps_errf(err, errlen, "bad magic 0x%08x (want 0x%08x, \"PSSD\"): not a delta file",
			h->magic, PS_SM_DELTA_MAGIC);
		return PS_ECORRUPT;
	}
	if (crc != h->header_crc) {
		ps_errf(err, errlen, "header CRC mismatch (stored 0x%08x, computed 0x%08x)",
			h->header_crc, crc);
		return PS_ECORRUPT;
	}
	if (h->format != PS_SM_DELTA_FORMAT || h->flags) {
		ps_errf(err, errlen, "format %u flags 0x%x; this build reads format %u", h->format,
			h->flags, PS_SM_DELTA_FORMAT);
		return PS_ECORRUPT;
	}
	return 0;
}

void ps_sm_record_header_encode(const struct ps_sm_record_hdr *h, uint8_t out[40])
{
	out[ROFF(type)] = h->type;
	out[ROFF(nslots)] = h->nslots;
	mio_put16(out + ROFF(name_len), h->name_len);
	mio_put32(out + ROFF(width), h->width);
	mio_put64(out + ROFF(var_id), h->var_id);
	mio_put64(out + ROFF(count), h->count);
	mio_put64(out + ROFF(begin), h->begin);
	mio_put64(out + ROFF(payload_bytes), h->payload_bytes);
}

void ps_sm_record_header_decode(const uint8_t in[40], struct ps_sm_record_hdr *h)
{
	h->type = in[ROFF(type)];
	h->nslots = in[ROFF(nslots)];
	h->name_len = mio_get16(in + ROFF(name_len));
	h->width = mio_get32(in + ROFF(width));
	h->var_id = mio_get64(in + ROFF(var_id));
	h->count = mio_get64(in + ROFF(count));
	h->begin = mio_get64(in + ROFF(begin));
	h->payload_bytes = mio_get64(in + ROFF(payload_bytes));
}

uint64_t ps_sm_record_payload_bytes(const struct ps_sm_record_hdr *h, bool *ok)
{
	const uint64_t lim = UINT64_C(1) << 60;
	uint64_t kw, fl = 0;

	*ok = false;
	switch (h->type) {
	case PS_SM_REC_DENSE:
		kw = 0;
		break;
	case PS_SM_REC_SPARSE:
	case PS_SM_REC_HASH64:
	case PS_SM_REC_HASH64_DEL:
		kw = 1;
		break;
	case PS_SM_REC_HASH128:
	case PS_SM_REC_HASH128_DEL:
		kw = 2;
		break;
	default:
		return 0;
	}
	if (h->type != PS_SM_REC_HASH64_DEL && h->type != PS_SM_REC_HASH128_DEL) {
		if (!h->width)
			return 0;
		fl = 4ull * h->width * (1ull + h->nslots);
	} else if (h->width || h->nslots) {
		return 0;
	}
	if (h->count > lim / (8 * kw + fl))
		return 0;
	*ok = true;
	return h->count * (8 * kw + fl);
}

/* ---- manifest -------------------------------------------------------------------------------- */

int ps_sm_manifest_write(const char *dir, const struct ps_sm_manifest_entry *e, size_t n, char *err,
			 size_t errlen)
{
	size_t cap = sizeof(MANIFEST_MAGIC) + (n + 1) * 200, len;
	char *buf = malloc(cap);
	int rc;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "%s", MANIFEST_MAGIC);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, cap - len,
					"%" PRIu64 " %s %" PRIu64 " %08x %" PRIu64 " %" PRIu64
					" %" PRIu64 " %" PRIu64 "\n",
					e[i].seq, e[i].file, e[i].size, e[i].crc32c, e[i].rows,
					e[i].deletes, e[i].writer_id, e[i].created_unix_ns);
	len += (size_t)snprintf(buf + len, cap - len, "end %zu %08x\n", n, ps_crc32c(0, buf, len));
	rc = mio_replace_file(dir, PS_SM_MANIFEST_FILE, buf, len, PS_MIO_CRASH_MANIFEST_TMP, 0, err,
			      errlen);
	free(buf);
	return rc;
}

static int parse_line(const char *p, size_t len, struct ps_sm_manifest_entry *e)
{
	const char *f[MANIFEST_FIELDS];
	size_t fl[MANIFEST_FIELDS];
	char want[PS_SM_FILE_MAX];

	if (mio_split(p, len, f, fl, MANIFEST_FIELDS) != MANIFEST_FIELDS ||
	    !mio_parse_dec(f[0], fl[0], &e->seq) || fl[1] >= sizeof(e->file) ||
	    !mio_parse_dec(f[2], fl[2], &e->size) || !mio_parse_hex32(f[3], fl[3], &e->crc32c) ||
	    !mio_parse_dec(f[4], fl[4], &e->rows) || !mio_parse_dec(f[5], fl[5], &e->deletes) ||
	    !mio_parse_dec(f[6], fl[6], &e->writer_id) ||
	    !mio_parse_dec(f[7], fl[7], &e->created_unix_ns))
		return -1;
	memcpy(e->file, f[1], fl[1]);
	e->file[fl[1]] = '\0';
	/* The name is a function of the number: nothing else may be referenced. */
	ps_sm_delta_file_name(e->seq, want, sizeof(want));
	return strcmp(want, e->file) ? -1 : 0;
}

int ps_sm_manifest_read(const char *dir, struct ps_sm_manifest_entry **out, size_t *n, char *err,
			size_t errlen)
{
	struct ps_sm_manifest_entry *e = NULL;
	char path[PATH_BYTES];
	uint8_t *buf;
	const char *s, *p, *end;
	size_t len, cnt = 0, lineno = 1;
	int rc;

	*out = NULL;
	*n = 0;
	if (mio_path(path, sizeof(path), "%s/%s", dir, PS_SM_MANIFEST_FILE))
		return -ENAMETOOLONG;
	rc = mio_read_file(path, MANIFEST_MAX, &buf, &len, err, errlen);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	s = (const char *)buf;
	end = s + len;
	if (len < sizeof(MANIFEST_MAGIC) - 1 ||
	    memcmp(s, MANIFEST_MAGIC, sizeof(MANIFEST_MAGIC) - 1)) {
		ps_errf(err, errlen, "%s: bad magic (not a psplus delta manifest)", path);
		goto bad;
	}
	p = s + sizeof(MANIFEST_MAGIC) - 1;
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		struct ps_sm_manifest_entry *ne;

		lineno++;
		if (!nl) {
			ps_errf(err, errlen, "%s: truncated at offset %zu (line %zu unfinished)",
				path, len, lineno);
			goto bad;
		}
		if (nl - p > 4 && !memcmp(p, "end ", 4)) {
			const char *f[3];
			size_t fl[3];
			uint64_t count;
			uint32_t crc, want = ps_crc32c(0, s, (size_t)(p - s));

			if (mio_split(p, (size_t)(nl - p), f, fl, 3) != 3 ||
			    !mio_parse_dec(f[1], fl[1], &count) ||
			    !mio_parse_hex32(f[2], fl[2], &crc) || count != cnt) {
				ps_errf(err, errlen, "%s: malformed end line %zu", path, lineno);
				goto bad;
			}
			if (crc != want) {
				ps_errf(err, errlen,
					"%s: CRC mismatch (stored 0x%08x, computed 0x%08x)", path,
					crc, want);
				goto bad;
			}
			if (nl + 1 != end) {
				ps_errf(err, errlen, "%s: %zu trailing bytes", path,
					(size_t)(end - nl - 1));
				goto bad;
			}
			break;
		}
		ne = realloc(e, (cnt + 1) * sizeof(*e));
		if (!ne) {
			rc = -ENOMEM;
			goto out;
		}
		e = ne;
		if (parse_line(p, (size_t)(nl - p), &e[cnt]) ||
		    (cnt && e[cnt].seq != e[cnt - 1].seq + 1) || !e[cnt].seq) {
			ps_errf(err, errlen, "%s: malformed line %zu at offset %zu", path, lineno,
				(size_t)(p - s));
			goto bad;
		}
		cnt++;
		p = nl + 1;
	}
	*out = e;
	*n = cnt;
	e = NULL;
	rc = 0;
	goto out;
bad:
	rc = PS_ECORRUPT;
out:
	free(e);
	free(buf);
	return rc;
}

/* ---- delta reader ---------------------------------------------------------------------------- */

struct ps_sm_delta_reader {
	struct ps_sm_delta_hdr hdr;
	struct mio_rbuf rb;
	int fd;
	uint64_t nrec; /* records returned */
	uint64_t rows, deletes;
	uint8_t *payload; /* the current record's keys and floats */
	size_t payload_cap;
	char name[PS_SM_NAME_MAX + 1];
	int err;
	char path[PATH_BYTES];
	char errmsg[PATH_BYTES + 256];
};

static int dr_fail(struct ps_sm_delta_reader *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int dr_fail(struct ps_sm_delta_reader *r, int rc, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(r->errmsg, sizeof(r->errmsg), "%s: ", r->path);

	va_start(ap, fmt);
	vsnprintf(r->errmsg + n, sizeof(r->errmsg) - (size_t)n, fmt, ap);
	va_end(ap);
	r->err = rc;
	return rc;
}

static int dr_prescan(struct ps_sm_delta_reader *r)
{
	uint64_t off = PS_SM_DELTA_HEADER_BYTES, end = off + r->hdr.content_bytes;
	uint32_t crc = 0;

	while (off < end) {
		size_t want = end - off < r->rb.cap ? (size_t)(end - off) : r->rb.cap, got;
		int rc = mio_pread_full(r->fd, r->rb.buf, want, off, &got);

		if (rc)
			return dr_fail(r, rc, "read failed: %s", strerror(-rc));
		if (got < want)
			return dr_fail(r, PS_ECORRUPT, "truncated at offset %" PRIu64, off + got);
		crc = ps_crc32c(crc, r->rb.buf, got);
		off += got;
	}
	if (crc != r->hdr.content_crc)
		return dr_fail(r, PS_ECORRUPT,
			       "content CRC mismatch (header says 0x%08x, computed 0x%08x)",
			       r->hdr.content_crc, crc);
	return 0;
}

int ps_sm_delta_reader_open(const char *path, struct ps_sm_delta_reader **out, char *err,
			    size_t errlen)
{
	struct ps_sm_delta_reader *r = calloc(1, sizeof(*r));
	uint8_t raw[PS_SM_DELTA_HEADER_BYTES];
	char sub[256];
	struct stat st;
	size_t got;
	int rc;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0) {
		rc = dr_fail(r, -errno, "cannot open: %s", strerror(errno));
		goto fail;
	}
	if (fstat(r->fd, &st)) {
		rc = dr_fail(r, -errno, "cannot stat: %s", strerror(errno));
		goto fail;
	}
	rc = mio_pread_full(r->fd, raw, sizeof(raw), 0, &got);
	if (rc) {
		dr_fail(r, rc, "read failed: %s", strerror(-rc));
		goto fail;
	}
	if (got < sizeof(raw)) {
		rc = dr_fail(r, PS_ECORRUPT, "truncated at offset %zu (inside the %u-byte header)",
			     got, PS_SM_DELTA_HEADER_BYTES);
		goto fail;
	}
	rc = ps_sm_delta_header_decode(raw, &r->hdr, sub, sizeof(sub));
	if (rc) {
		dr_fail(r, rc, "%s", sub);
		goto fail;
	}
	if (r->hdr.content_bytes > (uint64_t)st.st_size - PS_SM_DELTA_HEADER_BYTES) {
		rc = dr_fail(r, PS_ECORRUPT,
			     "truncated at offset %lld (the header promises %" PRIu64 " bytes)",
			     (long long)st.st_size,
			     PS_SM_DELTA_HEADER_BYTES + r->hdr.content_bytes);
		goto fail;
	}
	if (r->hdr.content_bytes < (uint64_t)st.st_size - PS_SM_DELTA_HEADER_BYTES) {
		rc = dr_fail(r, PS_ECORRUPT, "%" PRIu64 " trailing bytes",
			     (uint64_t)st.st_size - PS_SM_DELTA_HEADER_BYTES -
				     r->hdr.content_bytes);
		goto fail;
	}
	rc = mio_rbuf_init(&r->rb, r->fd, PS_SM_DELTA_HEADER_BYTES,
			   PS_SM_DELTA_HEADER_BYTES + r->hdr.content_bytes, 0);
	if (rc) {
		dr_fail(r, rc, "out of memory");
		goto fail;
	}
	rc = dr_prescan(r);
	if (rc)
		goto fail;
	*out = r;
	return 0;
fail:
	ps_errf(err, errlen, "%s", r->errmsg);
	ps_sm_delta_reader_close(r);
	return rc;
}

const struct ps_sm_delta_hdr *ps_sm_delta_reader_header(const struct ps_sm_delta_reader *r)
{
	return &r->hdr;
}

const char *ps_sm_delta_reader_errmsg(const struct ps_sm_delta_reader *r)
{
	return r->errmsg[0] ? r->errmsg : "no error";
}

static int dr_get(struct ps_sm_delta_reader *r, void *dst, size_t len, const char *what)
{
	uint64_t at = mio_rbuf_offset(&r->rb);
	int rc = mio_rbuf_get(&r->rb, dst, len);

	if (rc == -ENODATA)
		return dr_fail(r, PS_ECORRUPT, "truncated at offset %" PRIu64 " (in %s)",
			       mio_rbuf_offset(&r->rb), what);
	if (rc)
		return dr_fail(r, rc, "read failed at offset %" PRIu64 ": %s", at, strerror(-rc));
	return 0;
}

int ps_sm_delta_reader_next(struct ps_sm_delta_reader *r, struct ps_sm_record *rec)
{
	struct ps_sm_record_hdr h;
	uint8_t raw[PS_SM_RECORD_HEADER_BYTES], pad[8];
	uint64_t at, remain, want, kwords;
	bool ok, del;
	int rc;

	if (r->err)
		return r->err;
	at = mio_rbuf_offset(&r->rb);
	remain = r->rb.end - at;
	if (!remain) {
		if (r->nrec != r->hdr.records || r->rows != r->hdr.rows ||
		    r->deletes != r->hdr.deletes)
			return dr_fail(r, PS_ECORRUPT,
				       "the header counts %" PRIu64 " records, %" PRIu64
				       " rows, %" PRIu64 " deletes; the file holds %" PRIu64
				       ", %" PRIu64 ", %" PRIu64,
				       r->hdr.records, r->hdr.rows, r->hdr.deletes, r->nrec,
				       r->rows, r->deletes);
		if (r->rb.crc != r->hdr.content_crc) /* changed since the prescan */
			return dr_fail(r, PS_ECORRUPT, "content CRC mismatch on the second read");
		return 0;
	}
	if ((rc = dr_get(r, raw, sizeof(raw), "a record header")))
		return rc;
	ps_sm_record_header_decode(raw, &h);
	want = ps_sm_record_payload_bytes(&h, &ok);
	if (!ok || h.payload_bytes != want || h.name_len > PS_SM_NAME_MAX ||
	    (h.type != PS_SM_REC_DENSE && h.begin)) {
		return dr_fail(r, PS_ECORRUPT,
			       "bad record header at offset %" PRIu64
			       " (type %u, width %u, slots %u, "
			       "count %" PRIu64 ", payload %" PRIu64 ")",
			       at, h.type, h.width, h.nslots, h.count, h.payload_bytes);
	}
	if (h.type == PS_SM_REC_DENSE && h.begin + h.count < h.begin)
		return dr_fail(r, PS_ECORRUPT, "record at offset %" PRIu64 ": row range overflows",
			       at);
	if ((rc = dr_get(r, r->name, h.name_len, "a variable name")))
		return rc;
	r->name[h.name_len] = '\0';
	if (h.name_len % 8 && (rc = dr_get(r, pad, 8 - h.name_len % 8u, "name padding")))
		return rc;
	if (h.payload_bytes > r->rb.end - mio_rbuf_offset(&r->rb))
		return dr_fail(r, PS_ECORRUPT,
			       "record at offset %" PRIu64 " claims %" PRIu64
			       " bytes, past the end of the file",
			       at, h.payload_bytes);
	if (h.payload_bytes > r->payload_cap) {
		/* 8-byte alignment for the keys; floats follow at a multiple of 8. */
		uint8_t *p = realloc(r->payload, (size_t)h.payload_bytes);

		if (!p)
			return dr_fail(r, -ENOMEM, "out of memory for a %" PRIu64 "-byte record",
				       h.payload_bytes);
		r->payload = p;
		r->payload_cap = (size_t)h.payload_bytes;
	}
	if ((rc = dr_get(r, r->payload, (size_t)h.payload_bytes, "a record payload")))
		return rc;
	del = h.type == PS_SM_REC_HASH64_DEL || h.type == PS_SM_REC_HASH128_DEL;
	kwords = h.type == PS_SM_REC_DENSE					  ? 0
		 : h.type == PS_SM_REC_HASH128 || h.type == PS_SM_REC_HASH128_DEL ? 2 * h.count
										  : h.count;
	mio_le_u64s((uint64_t *)(void *)r->payload, (size_t)kwords);
	memset(rec, 0, sizeof(*rec));
	rec->type = (enum ps_sm_rec_type)h.type;
	rec->var_id = h.var_id;
	rec->var_name = r->name;
	rec->width = h.width;
	rec->nslots = h.nslots;
	rec->count = h.count;
	rec->begin = h.begin;
	rec->keys = kwords ? (const uint64_t *)(void *)r->payload : NULL;
	if (!del) {
		float *v = r->payload ? (float *)(void *)(r->payload + 8 * kwords) : NULL;

		mio_le_f32s(v, (size_t)h.count * h.width * (1u + h.nslots));
		rec->values = v;
		r->rows += h.count;
	} else {
		r->deletes += h.count;
	}
	r->nrec++;
	return 1;
}

void ps_sm_delta_reader_close(struct ps_sm_delta_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	mio_rbuf_free(&r->rb);
	free(r->payload);
	free(r);
}

int ps_sm_delta_verify(const char *path, const struct ps_sm_manifest_entry *e, char *err,
		       size_t errlen)
{
	struct ps_sm_delta_reader *r;
	struct ps_sm_record rec;
	int rc = ps_sm_delta_reader_open(path, &r, err, errlen);

	if (rc)
		return rc;
	if (e && (e->size != PS_SM_DELTA_HEADER_BYTES + r->hdr.content_bytes ||
		  e->crc32c != r->hdr.content_crc || e->rows != r->hdr.rows ||
		  e->deletes != r->hdr.deletes)) {
		ps_errf(err, errlen,
			"%s: does not match the manifest (size %" PRIu64 "/%" PRIu64
			", crc 0x%08x/0x%08x, rows %" PRIu64 "/%" PRIu64 ")",
			path, PS_SM_DELTA_HEADER_BYTES + r->hdr.content_bytes, e->size,
			r->hdr.content_crc, e->crc32c, r->hdr.rows, e->rows);
		ps_sm_delta_reader_close(r);
		return PS_ECORRUPT;
	}
	while ((rc = ps_sm_delta_reader_next(r, &rec)) == 1)
		;
	if (rc)
		ps_errf(err, errlen, "%s", ps_sm_delta_reader_errmsg(r));
	ps_sm_delta_reader_close(r);
	return rc;
}

/* ---- follower -------------------------------------------------------------------------------- */

struct ps_sm_follower {
	char dir[PATH_BYTES];
	uint64_t last; /* last sequence handed out */
};

int ps_sm_follower_create(const char *dir, uint64_t after_seq, struct ps_sm_follower **out)
{
	struct ps_sm_follower *f = calloc(1, sizeof(*f));

	*out = NULL;
	if (!f)
		return -ENOMEM;
	if (mio_path(f->dir, sizeof(f->dir), "%s", dir)) {
		free(f);
		return -ENAMETOOLONG;
	}
	f->last = after_seq;
	*out = f;
	return 0;
}

int ps_sm_follower_next(struct ps_sm_follower *f, struct ps_sm_manifest_entry *e, char *path,
			size_t pathlen, char *err, size_t errlen)
{
	struct ps_sm_manifest_entry *all;
	size_t n;
	int rc = ps_sm_manifest_read(f->dir, &all, &n, err, errlen);

	if (rc)
		return rc;
	rc = 0;
	/* Sequences are dense from the first listed one, so the next is found by arithmetic. */
	if (n && all[n - 1].seq > f->last) {
		size_t i = f->last < all[0].seq ? 0 : (size_t)(f->last - all[0].seq + 1);

		*e = all[i];
		if (mio_path(path, pathlen, "%s/%s", f->dir, e->file)) {
			rc = -ENAMETOOLONG;
		} else {
			f->last = e->seq;
			rc = 1;
		}
	}
	free(all);
	return rc;
}

void ps_sm_follower_destroy(struct ps_sm_follower *f)
{
	free(f);
}
