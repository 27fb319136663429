/*
 * model_io file helpers: buffered I/O with a running CRC32C, atomic replacement, directory
 * fsync, locks, and the crash-test hook.
 *
 * Durability rule used everywhere in model_io: a file becomes visible under its final name
 * only by rename() of a temp file that was fsync'ed first, and the rename is made durable by
 * fsync'ing the directory before anything that refers to the file is written. So a name that
 * is reachable (from an index or a manifest) always points to complete, durable contents.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "model_io/mio_internal.h"

int ps_mio_crash_point;

void mio_crash(int point)
{
	if (ps_mio_crash_point && ps_mio_crash_point == point)
		_exit(PS_MIO_CRASH_EXIT);
}

int mio_path(char *out, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, len, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

uint64_t mio_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- raw I/O ------------------------------------------------------------------------------- */

int mio_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int mio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int mio_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	uint8_t *p = buf;

	*got = 0;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
		*got += (size_t)n;
	}
	return 0;
}

/* ---- write buffer ---------------------------------------------------------------------------- */

int mio_wbuf_init(struct mio_wbuf *w, int fd, const char *path, uint64_t off, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->path = path;
	w->off = off;
	w->cap = cap ? cap : 1u << 20;
	w->buf = malloc(w->cap);
	return w->buf ? 0 : -ENOMEM;
}

void mio_wbuf_free(struct mio_wbuf *w)
{
	free(w->buf);
	w->buf = NULL;
}

int mio_wbuf_flush(struct mio_wbuf *w)
{
	if (w->err)
		return w->err;
	if (!w->fill)
		return 0;
	/* CRC while the bytes are still in cache, then write them. */
	w->crc = ps_crc32c(w->crc, w->buf, w->fill);
	w->err = mio_pwrite_all(w->fd, w->buf, w->fill, w->off);
	w->off += w->fill;
	w->fill = 0;
	return w->err;
}

int mio_wbuf_put(struct mio_wbuf *w, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len) {
		size_t k;

		if (w->fill == w->cap && mio_wbuf_flush(w))
			return w->err;
		k = w->cap - w->fill < len ? w->cap - w->fill : len;
		memcpy(w->buf + w->fill, p, k);
		w->fill += k;
		p += k;
		len -= k;
	}
	return w->err;
}

int mio_wbuf_put_u64s(struct mio_wbuf *w, const uint64_t *v, size_t n)
{
#ifdef MIO_BIG_ENDIAN
	for (size_t i = 0; i < n; i++) {
		uint8_t b[8];

		mio_put64(b, v[i]);
		if (mio_wbuf_put(w, b, 8))
			return w->err;
	}
	return w->err;
#else
	return mio_wbuf_put(w, v, n * sizeof(*v));
#endif
}

int mio_wbuf_put_f32s(struct mio_wbuf *w, const float *v, size_t n)
{
#ifdef MIO_BIG_ENDIAN
	for (size_t i = 0; i < n; i++) {
		uint32_t x;
		uint8_t b[4];

		memcpy(&x, &v[i], 4);
		mio_put32(b, x);
		if (mio_wbuf_put(w, b, 4))
			return w->err;
	}
	return w->err;
#else
	return mio_wbuf_put(w, v, n * sizeof(*v));
#endif
}

/* ---- read buffer ----------------------------------------------------------------------------- */

int mio_rbuf_init(struct mio_rbuf *r, int fd, uint64_t off, uint64_t end, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->off = off;
	r->end = end;
	r->cap = cap ? cap : 1u << 20;
	r->buf = malloc(r->cap);
	return r->buf ? 0 : -ENOMEM;
}

int mio_rbuf_map(struct mio_rbuf *r, int fd, uint64_t off, uint64_t end)
{
#ifdef MIO_BIG_ENDIAN
	return -ENOTSUP;
#else
	void *m;

	if (off >= end || end > SIZE_MAX)
		return -EINVAL;
	m = mmap(NULL, (size_t)end, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	/* Read ahead aggressively, as for read(); advice only. */
	(void)madvise(m, (size_t)end, MADV_SEQUENTIAL);
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->map = m;
	r->map_len = (size_t)end;
	r->buf = (uint8_t *)m + off;
	r->cap = r->len = (size_t)(end - off);
	r->off = r->end = end;
	return 0;
#endif
}

void mio_rbuf_free(struct mio_rbuf *r)
{
	if (r->map)
		munmap(r->map, r->map_len);
	else
		free(r->buf);
	r->map = NULL;
	r->buf = NULL;
}

static int rbuf_fill(struct mio_rbuf *r)
{
	size_t want, got;
	int rc;

	if (r->map) /* the whole file is in the window already */
		return -ENODATA;

	/* Keep the unconsumed tail, then read as much as fits and the file allows. */
	memmove(r->buf, r->buf + r->pos, r->len - r->pos);
	r->len -= r->pos;
	r->pos = 0;
	want = r->cap - r->len;
	if (want > r->end - r->off)
		want = (size_t)(r->end - r->off);
	if (!want)
		return -ENODATA;
	rc = mio_pread_full(r->fd, r->buf + r->len, want, r->off, &got);
	if (rc)
		return rc;
	if (!got) /* shorter than fstat said: the file shrank under us */
		return -ENODATA;
	r->len += got;
	r->off += got;
	return 0;
}

int mio_rbuf_get(struct mio_rbuf *r, void *dst, size_t len)
{
	uint8_t *d = dst;

	while (len) {
		size_t k;
		int rc;

		if (r->pos == r->len && (rc = rbuf_fill(r)))
			return rc;
		k = r->len - r->pos < len ? r->len - r->pos : len;
		memcpy(d, r->buf + r->pos, k);
		r->crc = ps_crc32c(r->crc, r->buf + r->pos, k);
		r->pos += k;
		d += k;
		len -= k;
	}
	return 0;
}

int mio_rbuf_window(struct mio_rbuf *r, size_t min, uint8_t **p, size_t *avail)
{
	int rc;

	if (min > r->cap)
		return r->map ? -ENODATA : -EINVAL;
	/* Records handed out in place hold floats: start the window 4-byte aligned. It is,
	 * unless mio_rbuf_get() filled the buffer from an odd offset (a short read). */
	if (!r->map && (uintptr_t)(r->buf + r->pos) % sizeof(float)) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->pos = 0;
	}
	while (r->len - r->pos < min) {
		rc = rbuf_fill(r);
		if (rc)
			return rc;
	}
	*p = r->buf + r->pos;
	*avail = r->len - r->pos;
	return 0;
}

void mio_rbuf_consume(struct mio_rbuf *r, size_t n)
{
	r->crc = ps_crc32c(r->crc, r->buf + r->pos, n);
	r->pos += n;
}

void mio_le_u64s(uint64_t *v, size_t n)
{
#ifdef MIO_BIG_ENDIAN
	for (size_t i = 0; i < n; i++)
		v[i] = __builtin_bswap64(v[i]);
#else
	(void)v;
	(void)n;
#endif
}

void mio_le_f32s(float *v, size_t n)
{
#ifdef MIO_BIG_ENDIAN
	for (size_t i = 0; i < n; i++) {
		uint32_t x;

		memcpy(&x, &v[i], 4);
		x = __builtin_bswap32(x);
		memcpy(&v[i], &x, 4);
	}
#else
	(void)v;
	(void)n;
#endif
}

/* ---- readahead ------------------------------------------------------------------------------ */

uint64_t mio_readahead_step(int fd)
{
	unsigned long long kb = 0;
	struct stat st;
	char path[96];
	FILE *f;

	if (fstat(fd, &st))
		return 128u << 10;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev),
		 minor(st.st_dev));
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%llu", &kb) != 1)
			kb = 0;
		fclose(f);
	}
	if (kb < 128)
		kb = 128;
	if (kb > (64u << 10))
		kb = 64u << 10;
	return (uint64_t)kb << 10;
}

void mio_readahead(int fd, uint64_t from, uint64_t to, uint64_t step)
{
	for (uint64_t off = from; off < to; off += step) {
		uint64_t len = to - off < step ? to - off : step;

		(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
	}
}

/* ---- directories, atomic replacement, locks ------------------------------------------------ */

int mio_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) && errno != EINVAL) /* some file systems cannot fsync a directory */
		rc = -errno;
	close(fd);
	return rc;
}

int mio_mkdir_p(const char *dir)
{
	char p[4096];
	size_t n = strlen(dir);

	if (n >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		p[i] = '\0';
		if (mkdir(p, 0755) && errno != EEXIST)
			return -errno;
		p[i] = i < n ? '/' : '\0';
	}
	{
		struct stat st;

		if (stat(dir, &st))
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
	}
	return 0;
}

int mio_replace_file(const char *dir, const char *name, const void *data, size_t len, int crash_tmp,
		     int crash_renamed, char *err, size_t errlen)
{
	char tmp[4200], fin[4200];
	int fd, rc;

	if (mio_path(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) ||
	    mio_path(fin, sizeof(fin), "%s/%s", dir, name)) {
		ps_errf(err, errlen, "%s/%s: path too long", dir, name);
		return -ENAMETOOLONG;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(-rc));
		return rc;
	}
	rc = mio_write_all(fd, data, len);
	if (!rc && fsync(fd))
		rc = -errno;
	close(fd);
	if (rc) {
		ps_errf(err, errlen, "%s: write failed: %s", tmp, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	mio_crash(crash_tmp);
	if (rename(tmp, fin)) {
		rc = -errno;
		ps_errf(err, errlen, "%s: rename to %s failed: %s", tmp, fin, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	mio_crash(crash_renamed);
	rc = mio_fsync_dir(dir);
	if (rc)
		ps_errf(err, errlen, "%s: fsync of the folder failed: %s", dir, strerror(-rc));
	return rc;
}

int mio_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
		  size_t errlen)
{
	struct stat st;
	uint8_t *buf;
	size_t got;
	int fd, rc;

	*out = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot stat: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	if ((uint64_t)st.st_size > max) {
		ps_errf(err, errlen, "%s: %lld bytes, more than the %zu allowed", path,
			(long long)st.st_size, max);
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	rc = mio_pread_full(fd, buf, (size_t)st.st_size, 0, &got);
	close(fd);
	if (rc) {
		ps_errf(err, errlen, "%s: read failed: %s", path, strerror(-rc));
		free(buf);
		return rc;
	}
	buf[got] = '\0'; /* text files (index, manifest) can be parsed as strings */
	*out = buf;
	*len = got;
	return 0;
}

int mio_lock_dir(const char *dir, int *fd, char *err, size_t errlen)
{
	char p[4200];
	int rc;

	if (mio_path(p, sizeof(p), "%s/.lock", dir)) {
		ps_errf(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	*fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (*fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "%s: cannot open the lock file: %s", p, strerror(-rc));
		return rc;
	}
	while (flock(*fd, LOCK_EX)) {
		if (errno == EINTR)
			continue;
		rc = -errno;
		ps_errf(err, errlen, "%s: flock failed: %s", p, strerror(-rc));
		close(*fd);
		*fd = -1;
		return rc;
	}
	return 0;
}

void mio_unlock_dir(int fd)
{
	if (fd >= 0)
		close(fd); /* releases the flock */
}

int mio_remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[4400];
	int rc = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (mio_path(p, sizeof(p), "%s/%s", dir, e->d_name)) {
			rc = -ENAMETOOLONG;
			break;
		}
		if (lstat(p, &st)) {
			rc = -errno;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			rc = -ENOTEMPTY;
			break;
		}
		if (unlink(p) && errno != ENOENT) {
			rc = -errno;
			break;
		}
	}
	closedir(d);
	if (!rc && rmdir(dir))
		rc = -errno;
	return rc;
}

/* ---- strict text fields (index, manifest) ---------------------------------------------------- */

bool mio_parse_dec(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (!n || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

bool mio_parse_hex32(const char *s, size_t n, uint32_t *out)
{
	uint32_t v = 0;

	if (n != 8)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		uint32_t d;

		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (uint32_t)(c - 'a' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return true;
}

size_t mio_split(const char *line, size_t len, const char **f, size_t *fl, size_t max)
{
	size_t k = 0, start = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != ' ')
			continue;
		if (k == max || i == start)
			return 0;
		f[k] = line + start;
		fl[k++] = i - start;
		start = i + 1;
	}
	return k;
}
