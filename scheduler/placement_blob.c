/*
 * The placement table as a blob for control messages and checkpoints (docs/placement.md,
 * "Blob format"): explicit little-endian fields, a format number, the cluster version, and a
 * CRC32C trailer. The decoder walks the input once to validate every field and count what to
 * allocate, allocates once, then fills the table - so nothing is allocated from an untrusted
 * count before the bytes behind it have been seen.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "scheduler/placement_int.h"

#define BLOB_MAGIC	UINT32_C(0x4c505350) /* "PSPL" in file order */
#define BLOB_HDR_BYTES	24u
#define BLOB_VAR_BYTES	20u
#define BLOB_CRC_BYTES	4u
#define PART_BYTES_ROWS 10u /* u64 last row, u16 server */
#define PART_BYTES_HASH 4u  /* u16 last bucket, u16 server */

/* ---- CRC32C (Castagnoli, reflected, as in iSCSI and ext4): byte-wise table ------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ UINT32_C(0x82f63b78) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = UINT32_MAX;

	pthread_once(&crc_once, crc_init);
	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ UINT32_MAX;
}

/* ---- little-endian fields --------------------------------------------------------------------- */

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static size_t part_bytes(enum ps_place_kind k)
{
	return k == PS_PLACE_HASH ? PART_BYTES_HASH : PART_BYTES_ROWS;
}

/* ---- encode ----------------------------------------------------------------------------------- */

int ps_placement_encode(const struct ps_placement *t, uint8_t **buf, size_t *len)
{
	size_t n = BLOB_HDR_BYTES + BLOB_CRC_BYTES;
	uint8_t *b, *p;

	if (!t || !buf || !len || t->nservers == 0 || t->nservers > PS_PLACEMENT_MAX_SERVERS)
		return -EINVAL;
	for (uint32_t i = 0; i < t->nvars; i++) {
		const struct ps_placement_entry *e = &t->vars[i];
		size_t nl = strlen(e->name);

		if (nl == 0 || nl > PS_PLACEMENT_NAME_MAX || e->nparts == 0 || e->domain == 0 ||
		    (e->kind != PS_PLACE_DENSE && e->kind != PS_PLACE_SPARSE &&
		     e->kind != PS_PLACE_HASH) ||
		    (e->kind == PS_PLACE_HASH && e->domain != PS_PLACEMENT_BUCKETS))
			return -EINVAL;
		for (uint32_t j = 0; j < e->nparts; j++)
			if (e->parts[j].server >= t->nservers)
				return -EINVAL;
		n += BLOB_VAR_BYTES + nl + (size_t)e->nparts * part_bytes(e->kind);
	}
	b = malloc(n);
	if (!b)
		return -ENOMEM;
	p = put32(b, BLOB_MAGIC);
	p = put16(p, PS_PLACEMENT_FORMAT);
	p = put16(p, 0); /* flags: none defined */
	p = put64(p, t->cluster_version);
	p = put32(p, t->nservers);
	p = put32(p, t->nvars);
	for (uint32_t i = 0; i < t->nvars; i++) {
		const struct ps_placement_entry *e = &t->vars[i];
		size_t nl = strlen(e->name);

		p = put32(p, e->id);
		*p++ = (uint8_t)e->kind;
		*p++ = (uint8_t)nl;
		p = put16(p, 0); /* reserved */
		p = put64(p, e->domain);
		p = put32(p, e->nparts);
		memcpy(p, e->name, nl);
		p += nl;
		for (uint32_t j = 0; j < e->nparts; j++) {
			/* Parts tile the domain, so each is stored as its last unit only. */
			if (e->kind == PS_PLACE_HASH)
				p = put16(p, (uint16_t)(e->parts[j].end - 1));
			else
				p = put64(p, e->parts[j].end - 1);
			p = put16(p, (uint16_t)e->parts[j].server);
		}
	}
	put32(p, crc32c(b, n - BLOB_CRC_BYTES));
	*buf = b;
	*len = n;
	return 0;
}

/* ---- decode ----------------------------------------------------------------------------------- */

struct reader {
	const uint8_t *buf;
	size_t len; /* without the CRC trailer */
	size_t off;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int bad(struct reader *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->err && r->errlen) {
		n = snprintf(r->err, r->errlen, "placement blob: ");
		if (n >= 0 && (size_t)n < r->errlen) {
			va_start(ap, fmt);
			vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return PS_EBAD_MESSAGE;
}

static int need(struct reader *r, size_t n, const char *what)
{
	if (r->len - r->off >= n)
		return 0;
	return bad(r, "truncated at offset %zu: %s needs %zu bytes, %zu left", r->off, what, n,
		   r->len - r->off);
}

/* Walks one variable record; with @e, also fills it (the second pass, input already valid). */
static int read_var(struct reader *r, uint32_t i, uint32_t nservers, struct ps_placement_entry *e,
		    struct ps_placement_part *parts, char *name, uint64_t *nparts_out,
		    size_t *name_out)
{
	const uint8_t *p;
	size_t at = r->off, pb;
	uint32_t id, nparts;
	uint8_t kind, nl;
	uint64_t domain, prev_last = 0;
	int rc;

	if ((rc = need(r, BLOB_VAR_BYTES, "a variable header")))
		return rc;
	p = r->buf + r->off;
	id = get32(p);
	kind = p[4];
	nl = p[5];
	domain = get64(p + 8);
	nparts = get32(p + 16);
	if (kind > PS_PLACE_HASH)
		return bad(r, "variable %" PRIu32 " at offset %zu: unknown kind %u", i, at, kind);
	if (nl == 0)
		return bad(r, "variable %" PRIu32 " at offset %zu: empty name", i, at);
	if (get16(p + 6) != 0)
		return bad(r, "variable %" PRIu32 " at offset %zu: reserved field is %u", i, at,
			   get16(p + 6));
	if (domain == 0 || (kind == PS_PLACE_HASH && domain != PS_PLACEMENT_BUCKETS))
		return bad(r,
			   "variable %" PRIu32 " at offset %zu: domain %" PRIu64 " invalid for %s",
			   i, at, domain, kind == PS_PLACE_HASH ? "a hash variable" : "rows");
	if (nparts == 0 || nparts > domain)
		return bad(r,
			   "variable %" PRIu32 " at offset %zu: %" PRIu32
			   " parts for domain %" PRIu64,
			   i, at, nparts, domain);
	r->off += BLOB_VAR_BYTES;
	if ((rc = need(r, nl, "a variable name")))
		return rc;
	if (memchr(r->buf + r->off, 0, nl))
		return bad(r, "variable %" PRIu32 " at offset %zu: NUL byte in the name", i, at);
	if (e) {
		memcpy(name, r->buf + r->off, nl);
		name[nl] = '\0';
		*e = (struct ps_placement_entry){.id = id,
						 .kind = (enum ps_place_kind)kind,
						 .name = name,
						 .domain = domain,
						 .nparts = nparts,
						 .parts = parts};
	}
	r->off += nl;
	pb = part_bytes((enum ps_place_kind)kind);
	if (r->len - r->off < (size_t)nparts * pb) /* nparts < 2^32, pb <= 10: no overflow */
		return need(r, (size_t)nparts * pb, "the parts");
	for (uint32_t j = 0; j < nparts; j++) {
		uint64_t last;
		uint32_t server;

		p = r->buf + r->off;
		last = kind == PS_PLACE_HASH ? get16(p) : get64(p);
		server = get16(p + pb - 2);
		if (last >= domain || (j > 0 && last <= prev_last))
			return bad(r,
				   "variable %" PRIu32 " part %" PRIu32
				   " at offset %zu: last unit %" PRIu64 " does not follow %" PRIu64
				   " within domain %" PRIu64,
				   i, j, r->off, last, j ? prev_last : 0, domain);
		if (j == nparts - 1 && last != domain - 1)
			return bad(r,
				   "variable %" PRIu32 ": parts end at %" PRIu64
				   ", domain is %" PRIu64,
				   i, last + 1, domain);
		if (server >= nservers)
			return bad(r,
				   "variable %" PRIu32 " part %" PRIu32
				   " at offset %zu: server %" PRIu32 " of %" PRIu32,
				   i, j, r->off, server, nservers);
		if (e)
			parts[j] = (struct ps_placement_part){
				.begin = j ? prev_last + 1 : 0, .end = last + 1, .server = server};
		prev_last = last;
		r->off += pb;
	}
	*nparts_out += nparts;
	*name_out += (size_t)nl + 1;
	return 0;
}

int ps_placement_decode(const uint8_t *buf, size_t len, struct ps_placement **out, char *err,
			size_t errlen)
{
	struct reader r = {.buf = buf, .err = err, .errlen = errlen};
	struct ps_placement *t = NULL;
	uint64_t nparts = 0, filled = 0;
	size_t names = 0, name_off = 0;
	uint32_t nservers, nvars, format, dup;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!buf && len)
		return -EINVAL;
	if (len < BLOB_HDR_BYTES + BLOB_CRC_BYTES)
		return bad(&r, "truncated: %zu bytes, the header and checksum alone take %u", len,
			   BLOB_HDR_BYTES + BLOB_CRC_BYTES);
	r.len = len - BLOB_CRC_BYTES;
	if (get32(buf) != BLOB_MAGIC)
		return bad(&r, "bad magic 0x%08" PRIx32, get32(buf));
	format = get16(buf + 4);
	if (format != PS_PLACEMENT_FORMAT) {
		bad(&r, "format %" PRIu32 ", this build reads format %u", format,
		    PS_PLACEMENT_FORMAT);
		return PS_EPROTO_VERSION;
	}
	if (get16(buf + 6) != 0)
		return bad(&r, "unknown flags 0x%04x", get16(buf + 6));
	nservers = get32(buf + 16);
	nvars = get32(buf + 20);
	if (nservers == 0 || nservers > PS_PLACEMENT_MAX_SERVERS)
		return bad(&r, "server count %" PRIu32 " (1..%u allowed)", nservers,
			   PS_PLACEMENT_MAX_SERVERS);

	/* Pass 1: validate everything and count. */
	r.off = BLOB_HDR_BYTES;
	for (uint32_t i = 0; i < nvars; i++) {
		rc = read_var(&r, i, nservers, NULL, NULL, NULL, &nparts, &names);
		if (rc)
			return rc;
	}
	if (r.off != r.len)
		return bad(&r, "%zu bytes after the last variable", r.len - r.off);
	if (crc32c(buf, r.len) != get32(buf + r.len))
		return bad(&r,
			   "checksum mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")",
			   get32(buf + r.len), crc32c(buf, r.len));

	/* Pass 2: fill; the input is known good. */
	rc = ps_placement_table_alloc(nservers, nvars, nparts, names, &t);
	if (rc)
		return rc;
	t->cluster_version = get64(buf + 8);
	r.off = BLOB_HDR_BYTES;
	names = 0;
	for (uint32_t i = 0; i < nvars; i++) {
		read_var(&r, i, nservers, &t->vars[i], t->part_mem + filled, t->name_mem + name_off,
			 &filled, &names);
		name_off = names;
	}
	if (ps_placement_table_index(t, &dup)) {
		ps_placement_destroy(t);
		return bad(&r, "variable id %" PRIu32 " appears twice", dup);
	}
	*out = t;
	return 0;
}
