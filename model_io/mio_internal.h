/*
 * model_io internals: little-endian fields, buffered file I/O with a running CRC32C, the
 * durability steps (fsync, rename, directory fsync, advisory locks) and the crash-test hook.
 * Not installed; used by ckpt_*.c, sm_*.c and delta_apply.c only.
 */
#ifndef PS_MODEL_IO_MIO_INTERNAL_H
#define PS_MODEL_IO_MIO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/errbuf.h"

/* ---- little-endian fields -------------------------------------------------------------------- */

static inline void mio_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void mio_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void mio_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t mio_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t mio_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t mio_get64(const uint8_t *p)
{
	return (uint64_t)mio_get32(p) | (uint64_t)mio_get32(p + 4) << 32;
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#define MIO_BIG_ENDIAN 1
#endif

/* ---- errors ------------------------------------------------------------------------------------ */

/** mio_now_ns() - CLOCK_REALTIME in nanoseconds. */
uint64_t mio_now_ns(void);

/* ---- buffered writing with a running CRC ----------------------------------------------------- */

struct mio_wbuf {
	int fd;
	uint8_t *buf;
	size_t cap, fill;
	uint64_t off;	  /* file offset of buf[0] */
	uint32_t crc;	  /* CRC32C of everything flushed so far (from the start offset) */
	int err;	  /* first write error (sticky) */
	const char *path; /* for messages; borrowed */
};

/** mio_wbuf_init() - writes start at file offset @off. Returns 0 or -ENOMEM. */
int mio_wbuf_init(struct mio_wbuf *w, int fd, const char *path, uint64_t off, size_t cap);
void mio_wbuf_free(struct mio_wbuf *w);
int mio_wbuf_put(struct mio_wbuf *w, const void *data, size_t len);
/** Little-endian arrays: a plain copy on little-endian hosts. */
int mio_wbuf_put_u64s(struct mio_wbuf *w, const uint64_t *v, size_t n);
int mio_wbuf_put_f32s(struct mio_wbuf *w, const float *v, size_t n);
int mio_wbuf_flush(struct mio_wbuf *w);

/* ---- buffered reading with a running CRC ----------------------------------------------------- */

struct mio_rbuf {
	int fd;
	uint8_t *buf;
	size_t cap, pos, len; /* buf[pos, len) not yet consumed */
	uint64_t off;	      /* file offset of buf[len] (the next byte to read from the file) */
	uint64_t end;	      /* file offset where reading stops (the size from fstat) */
	uint32_t crc;	      /* CRC32C of every byte consumed */
	void *map;	      /* mio_rbuf_map(): the mapping (buf points into it), else NULL */
	size_t map_len;
};

int mio_rbuf_init(struct mio_rbuf *r, int fd, uint64_t off, uint64_t end, size_t cap);
/**
 * mio_rbuf_map() - as mio_rbuf_init(), but map [0, @end) of the file read-only instead of
 * reading it: the "buffer" is the page cache itself, every byte already there (the kernel reads
 * on first touch, ahead of it with MADV_SEQUENTIAL). No copy into a buffer, so
 * mio_rbuf_window() hands out the file's bytes in place, read-only. The file must keep its size
 * while mapped: touching a page past a truncation raises SIGBUS. Returns 0, or -ENOTSUP on
 * big-endian hosts (whose callers convert records in place) or mmap's error: the caller then
 * uses mio_rbuf_init().
 */
int mio_rbuf_map(struct mio_rbuf *r, int fd, uint64_t off, uint64_t end);
void mio_rbuf_free(struct mio_rbuf *r);
/**
 * mio_rbuf_get() - the next @len bytes into @dst (CRC'd). Returns 0, -EIO, or -ENODATA when
 * fewer than @len bytes remain before @end (truncation; mio_rbuf_offset() says where).
 */
int mio_rbuf_get(struct mio_rbuf *r, void *dst, size_t len);
/**
 * mio_rbuf_window() - make at least @min bytes readable in place (reading more from the file
 * when fewer are buffered; @min <= cap) and point *@p at everything buffered, *@avail bytes
 * from the next one. Nothing is consumed. Returns 0, -EIO, or -ENODATA when fewer than @min
 * bytes remain before @end. For callers that use records in the buffer instead of copying
 * them out, then mio_rbuf_consume() them; *@p is 4-byte aligned (records of floats), and
 * writable unless the buffer is a mapping (mio_rbuf_map()).
 */
int mio_rbuf_window(struct mio_rbuf *r, size_t min, uint8_t **p, size_t *avail);
/** mio_rbuf_consume() - consume (and CRC) the next @n buffered bytes, @n <= what is buffered. */
void mio_rbuf_consume(struct mio_rbuf *r, size_t n);
/** The file offset of the next byte mio_rbuf_get() would return. */
static inline uint64_t mio_rbuf_offset(const struct mio_rbuf *r)
{
	return r->off - (r->len - r->pos);
}
/** Convert little-endian arrays in place (no-op on little-endian hosts). */
void mio_le_u64s(uint64_t *v, size_t n);
void mio_le_f32s(float *v, size_t n);

/* ---- files and durability -------------------------------------------------------------------- */

/**
 * mio_readahead_step() - the most the kernel reads ahead of @fd's file per POSIX_FADV_WILLNEED
 * call: its read_ahead_kb (sysfs, of the file system's device), which it honours whole
 * (it reads up to the larger of that and the device's largest request); 128 KiB when unknown.
 */
uint64_t mio_readahead_step(int fd);
/**
 * mio_readahead() - ask the kernel to read [@from, @to) of @fd's file into the page cache now,
 * in steps of @step (mio_readahead_step()): a larger range in one call would be cut to one
 * step. Advice: errors are ignored.
 */
void mio_readahead(int fd, uint64_t from, uint64_t to, uint64_t step);

int mio_write_all(int fd, const void *buf, size_t len);
int mio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/** mio_pread_full() - read up to @len bytes at @off; *@got receives how many (EOF shortens). */
int mio_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got);
/** mio_fsync_dir() - fsync a directory, so renames and creations in it are durable. */
int mio_fsync_dir(const char *dir);
/** mio_mkdir_p() - create @dir and its parents (mode 0755); an existing directory is fine. */
int mio_mkdir_p(const char *dir);
/**
 * mio_replace_file() - make @dir/@name hold exactly @data, atomically: write @dir/.@name.tmp,
 * fsync it, rename over @name, fsync @dir. A crash leaves the old or the new file, never a mix.
 * @crash_tmp / @crash_renamed: crash-test points hit after the temp file is durable and after
 * the rename (before the directory fsync).
 */
int mio_replace_file(const char *dir, const char *name, const void *data, size_t len, int crash_tmp,
		     int crash_renamed, char *err, size_t errlen);
/**
 * mio_read_file() - read a whole file of at most @max bytes into a malloc'd buffer.
 * Returns 0, -ENOENT, -EFBIG (larger than @max) or another negative errno, with @err filled.
 */
int mio_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
		  size_t errlen);
/** mio_lock_dir() - take an exclusive flock() on @dir/.lock (created), for read-modify-write. */
int mio_lock_dir(const char *dir, int *fd, char *err, size_t errlen);
void mio_unlock_dir(int fd);
/**
 * mio_remove_dir() - remove the regular files in @dir, then @dir. Refuses (-ENOTEMPTY) when it
 * holds a subdirectory: checkpoint folders are flat, so one means the path is not ours.
 */
int mio_remove_dir(const char *dir);
/** mio_path() - snprintf a path; -ENAMETOOLONG when it does not fit. */
int mio_path(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- strict text fields (index, manifest) ---------------------------------------------------- */

/** mio_parse_dec() - 1..20 decimal digits, no sign or space, no overflow. */
bool mio_parse_dec(const char *s, size_t n, uint64_t *out);
/** mio_parse_hex32() - exactly 8 lowercase hex digits. */
bool mio_parse_hex32(const char *s, size_t n, uint32_t *out);
/**
 * mio_split() - split @line[0, @len) at single spaces into at most @max non-empty fields.
 * Returns the field count, or 0 when a field is empty or there are more than @max.
 */
size_t mio_split(const char *line, size_t len, const char **f, size_t *fl, size_t max);

/* ---- crash-test hook ------------------------------------------------------------------------- */

/*
 * Tests set ps_mio_crash_point (in a fork()ed child) to one of these; when the code reaches that
 * step the process _exit()s with PS_MIO_CRASH_EXIT at once, as if it had lost power there
 * (without the kernel's page cache loss, which the fsyncs are for).
 */
enum ps_mio_crash {
	PS_MIO_CRASH_NONE = 0,
	PS_MIO_CRASH_PART_TMP,	      /* a part file written and fsync'ed under its temp name */
	PS_MIO_CRASH_META_TMP,	      /* checkpoint.meta durable under its temp name */
	PS_MIO_CRASH_META_RENAMED,    /* checkpoint.meta renamed, folder not yet fsync'ed */
	PS_MIO_CRASH_INDEX_TMP,	      /* the new index durable under its temp name */
	PS_MIO_CRASH_INDEX_RENAMED,   /* index renamed, root not yet fsync'ed */
	PS_MIO_CRASH_DELTA_TMP,	      /* a delta file durable under its temp name */
	PS_MIO_CRASH_DELTA_RENAMED,   /* delta renamed to delta-N.psd, manifest not yet written */
	PS_MIO_CRASH_MANIFEST_TMP,    /* the new manifest durable under its temp name */
	PS_MIO_CRASH_REMOVE_UNLISTED, /* remove: index rewritten, folder not yet deleted */
};
#define PS_MIO_CRASH_EXIT 97

extern int ps_mio_crash_point;

/** mio_crash() - _exit(PS_MIO_CRASH_EXIT) if @point is the armed crash point. */
void mio_crash(int point);

#endif
