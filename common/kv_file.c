/*
 * The scheduler kv entry: file:// backend (atomic replace), the text format, and the URL
 * schemes that cannot hold an entry in this build.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/kv.h"
#include "common/options.h"

static void errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* @url to a file path, or the error that says why this URL cannot hold a kv entry. */
static int kv_path(const char *url, char *path, char *err, size_t errlen)
{
	struct ps_url u;
	size_t n;
	int rc;

	rc = ps_url_parse(url, &u, err, errlen);
	if (rc)
		return rc;
	if (!strcmp(u.scheme, "zk")) {
		errf(err, errlen,
		     "kv path '%s': ZooKeeper support is not built into this psplus; use a file:// "
		     "path on a file system every host can read",
		     url);
		return PS_EUNSUPPORTED_SCHEME;
	}
	if (!strcmp(u.scheme, "none")) {
		errf(err, errlen,
		     "kv path '%s': none:// cannot hold the scheduler address; use "
		     "file:///path",
		     url);
		return PS_EBAD_URL;
	}
	if (strcmp(u.scheme, "file")) {
		errf(err, errlen, "kv path '%s': scheme '%s' has no kv backend (built in: file://)",
		     url, u.scheme);
		return PS_EUNSUPPORTED_SCHEME;
	}
	n = strlen(u.path);
	if (u.path[n - 1] == '/') {
		errf(err, errlen, "kv path '%s': names a directory, expected a file", url);
		return PS_EBAD_URL;
	}
	memcpy(path, u.path, n + 1);
	return 0;
}

/* The directory part of @path ("/" for a file in the root), for the temp file and the fsync. */
static void dir_of(const char *path, char *dir)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash == path ? 1 : (size_t)(slash - path);

	memcpy(dir, path, n);
	dir[n] = '\0';
}

/* fsync the directory so the rename (or unlink) itself survives a crash. */
static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

int ps_kv_format(const struct ps_kv_entry *e, char *buf, size_t buflen)
{
	bool v6 = strchr(e->host, ':') != NULL;
	char addr[PS_URL_HOST_MAX + 16];
	int n;

	snprintf(addr, sizeof(addr), "%s%s%s:%u", v6 ? "[" : "", e->host, v6 ? "]" : "", e->port);
	n = snprintf(buf, buflen, "# psplus scheduler address\nformat=%d\naddr=%s\nserver_num=%u\n",
		     PS_KV_FORMAT, addr, e->server_num);
	return n < 0 || (size_t)n >= buflen ? -ENOSPC : n;
}

static int write_all_fd(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ps_kv_publish(const char *url, const struct ps_kv_entry *e, char *err, size_t errlen)
{
	char path[PS_URL_PATH_MAX], dir[PS_URL_PATH_MAX], tmp[PS_URL_PATH_MAX + 32];
	char text[PS_KV_FILE_MAX];
	const char *base;
	int fd, len, rc;

	rc = kv_path(url, path, err, errlen);
	if (rc)
		return rc;
	if (!e->host[0] || !e->port || !e->server_num) {
		errf(err, errlen, "kv path '%s': refusing to publish an empty address or count",
		     url);
		return -EINVAL;
	}
	len = ps_kv_format(e, text, sizeof(text));
	if (len < 0) {
		errf(err, errlen, "kv path '%s': entry does not fit %d bytes", url, PS_KV_FILE_MAX);
		return len;
	}
	dir_of(path, dir);
	base = strrchr(path, '/') + 1;
	/* Same directory as the target: rename(2) is atomic only within one file system. */
	if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.XXXXXX", strcmp(dir, "/") ? dir : "", base) >=
	    (int)sizeof(tmp)) {
		errf(err, errlen, "kv path '%s': path too long", url);
		return -ENAMETOOLONG;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		errf(err, errlen, "kv path '%s': cannot create a temporary file in '%s': %s", url,
		     dir, strerror(-rc));
		return rc;
	}
	/* mkostemp makes 0600; servers may run as other users on a shared file system. */
	if (fchmod(fd, 0644) || (rc = write_all_fd(fd, text, (size_t)len)) || fsync(fd)) {
		rc = rc ? rc : -errno;
		errf(err, errlen, "kv path '%s': writing '%s': %s", url, tmp, strerror(-rc));
		goto fail_close;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		errf(err, errlen, "kv path '%s': closing '%s': %s", url, tmp, strerror(-rc));
		goto fail_close;
	}
	fd = -1;
	if (rename(tmp, path)) {
		rc = -errno;
		errf(err, errlen, "kv path '%s': rename: %s", url, strerror(-rc));
		goto fail_close;
	}
	rc = sync_dir(dir);
	if (rc)
		errf(err, errlen, "kv path '%s': fsync of '%s': %s", url, dir, strerror(-rc));
	return rc;

fail_close:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

/* A value from the file: points into the caller's buffer, not terminated. */
struct kv_val {
	const char *p;
	size_t n;
	bool set;
};

static int set_val(struct kv_val *v, const char *key, const char *p, size_t n, unsigned line,
		   char *err, size_t errlen)
{
	if (v->set) {
		errf(err, errlen, "line %u: key '%s' given twice", line, key);
		return PS_ECORRUPT;
	}
	*v = (struct kv_val){.p = p, .n = n, .set = true};
	return 0;
}

/* The value as a NUL-terminated copy in @buf, or PS_ECORRUPT if it cannot fit. */
static int val_str(const struct kv_val *v, const char *key, char *buf, size_t buflen, char *err,
		   size_t errlen)
{
	if (v->n >= buflen) {
		errf(err, errlen, "value of '%s' is too long", key);
		return PS_ECORRUPT;
	}
	memcpy(buf, v->p, v->n);
	buf[v->n] = '\0';
	return 0;
}

int ps_kv_parse(const char *buf, size_t len, struct ps_kv_entry *out, char *err, size_t errlen)
{
	struct kv_val format = {0}, addr = {0}, num = {0};
	char tmp[PS_URL_HOST_MAX + 16], sub[256];
	const char *p = buf, *end = buf + len;
	struct ps_url_host h;
	unsigned line = 0;
	int64_t v;
	int rc;

	if (memchr(buf, '\0', len)) {
		errf(err, errlen, "binary data (NUL byte) in a text entry");
		return PS_ECORRUPT;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end, *eq;
		size_t klen;

		line++;
		if (le > p && le[-1] == '\r')
			le--;
		if (le == p || *p == '#')
			goto next;
		eq = memchr(p, '=', (size_t)(le - p));
		if (!eq || eq == p) {
			errf(err, errlen, "line %u: expected key=value", line);
			return PS_ECORRUPT;
		}
		klen = (size_t)(eq - p);
		for (size_t i = 0; i < klen; i++) {
			if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') ||
			      p[i] == '_')) {
				errf(err, errlen, "line %u: invalid key", line);
				return PS_ECORRUPT;
			}
		}
		rc = 0;
		if (klen == 6 && !memcmp(p, "format", 6))
			rc = set_val(&format, "format", eq + 1, (size_t)(le - eq - 1), line, err,
				     errlen);
		else if (klen == 4 && !memcmp(p, "addr", 4))
			rc = set_val(&addr, "addr", eq + 1, (size_t)(le - eq - 1), line, err,
				     errlen);
		else if (klen == 10 && !memcmp(p, "server_num", 10))
			rc = set_val(&num, "server_num", eq + 1, (size_t)(le - eq - 1), line, err,
				     errlen);
		/* Any other key: written by a newer psplus, ignored on purpose. */
		if (rc)
			return rc;
	next:
		p = nl ? nl + 1 : end;
	}
	/* The format first: a newer format may change what the other keys look like. */
	if (!format.set || !addr.set || !num.set) {
		errf(err, errlen, "missing key '%s'",
		     !format.set ? "format"
		     : !addr.set ? "addr"
				 : "server_num");
		return PS_ECORRUPT;
	}
	if ((rc = val_str(&format, "format", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_opt_parse_int(tmp, &v) || v < 1) {
		errf(err, errlen, "format '%s' is not a positive number", tmp);
		return PS_ECORRUPT;
	}
	if (v != PS_KV_FORMAT) {
		errf(err, errlen, "format %lld, this build reads format %d", (long long)v,
		     PS_KV_FORMAT);
		return PS_EPROTO_VERSION;
	}
	if ((rc = val_str(&addr, "addr", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_url_parse_hostport(tmp, 0, &h, sub, sizeof(sub)) || !h.host[0]) {
		errf(err, errlen, "addr: %s", h.host[0] ? sub : "expected host:port");
		return PS_ECORRUPT;
	}
	if ((rc = val_str(&num, "server_num", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_opt_parse_int(tmp, &v) || v < 1 || v > 65536) {
		errf(err, errlen, "server_num '%s' is not a number from 1 to 65536", tmp);
		return PS_ECORRUPT;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out->host, h.host, sizeof(out->host));
	out->port = h.port;
	out->server_num = (uint32_t)v;
	return 0;
}

int ps_kv_read(const char *url, struct ps_kv_entry *out, char *err, size_t errlen)
{
	char path[PS_URL_PATH_MAX], buf[PS_KV_FILE_MAX + 1], sub[256];
	size_t n = 0;
	ssize_t r;
	int fd, rc;

	rc = kv_path(url, path, err, errlen);
	if (rc)
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		errf(err, errlen, "kv path '%s': %s", url,
		     rc == -ENOENT ? "no scheduler entry (yet)" : strerror(-rc));
		return rc;
	}
	/* One byte past the limit tells a full file from an oversized one. */
	while (n < sizeof(buf)) {
		r = read(fd, buf + n, sizeof(buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			close(fd);
			errf(err, errlen, "kv path '%s': read: %s", url, strerror(-rc));
			return rc;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n > PS_KV_FILE_MAX) {
		errf(err, errlen, "kv path '%s': not a psplus kv entry (larger than %d bytes)", url,
		     PS_KV_FILE_MAX);
		return PS_ECORRUPT;
	}
	rc = ps_kv_parse(buf, n, out, sub, sizeof(sub));
	if (rc)
		errf(err, errlen, "kv path '%s': not a valid psplus kv entry: %s", url, sub);
	return rc;
}

int ps_kv_wait(const char *url, int timeout_ms, int stop_fd, struct ps_kv_entry *out, char *err,
	       size_t errlen)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};
	int rc, nap = 10, left;
	char last[512];

	for (;;) {
		rc = ps_kv_read(url, out, last, sizeof(last));
		if (!rc || rc == PS_EBAD_URL || rc == PS_EUNSUPPORTED_SCHEME) {
			if (rc)
				errf(err, errlen, "%s", last);
			return rc;
		}
		left = ps_clock_remaining_ms(deadline);
		if (!left) {
			errf(err, errlen, "gave up after %d ms: %s", timeout_ms, last);
			return PS_ETIMEOUT;
		}
		/* Back off to 200 ms: quick when the scheduler is just starting, cheap on NFS. */
		if (poll(&p, stop_fd >= 0 ? 1 : 0, nap < left ? nap : left) > 0) {
			errf(err, errlen, "interrupted while waiting for '%s'", url);
			return PS_ESHUTDOWN;
		}
		nap = nap * 2 > 200 ? 200 : nap * 2;
	}
}

int ps_kv_remove(const char *url, const struct ps_kv_entry *expect, char *err, size_t errlen)
{
	char path[PS_URL_PATH_MAX], dir[PS_URL_PATH_MAX];
	struct ps_kv_entry cur;
	int rc;

	rc = kv_path(url, path, err, errlen);
	if (rc)
		return rc;
	if (expect) {
		rc = ps_kv_read(url, &cur, err, errlen);
		if (rc == -ENOENT)
			return 0;
		if (rc || strcmp(cur.host, expect->host) || cur.port != expect->port ||
		    cur.server_num != expect->server_num) {
			errf(err, errlen,
			     "kv path '%s' holds another scheduler's entry; left in place", url);
			return -ESTALE;
		}
	}
	if (unlink(path)) {
		rc = -errno;
		if (rc == -ENOENT)
			return 0;
		errf(err, errlen, "kv path '%s': unlink: %s", url, strerror(-rc));
		return rc;
	}
	dir_of(path, dir);
	rc = sync_dir(dir);
	if (rc)
		errf(err, errlen, "kv path '%s': fsync of '%s': %s", url, dir, strerror(-rc));
	return rc;
}
