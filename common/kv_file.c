/*
 * The scheduler kv entry's file:// backend: a small text file replaced atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kv_internal.h"

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

int kv_file_put(const char *url, const char *path, const char *text, size_t len, char *err,
		size_t errlen)
{
	char dir[PS_URL_PATH_MAX], tmp[PS_URL_PATH_MAX + 32];
	const char *base;
	int fd, rc;

	dir_of(path, dir);
	base = strrchr(path, '/') + 1;
	/* Same directory as the target: rename(2) is atomic only within one file system. */
	if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.XXXXXX", strcmp(dir, "/") ? dir : "", base) >=
	    (int)sizeof(tmp)) {
		ps_errf(err, errlen, "kv path '%s': path too long", url);
		return -ENAMETOOLONG;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "kv path '%s': cannot create a temporary file in '%s': %s",
			url, dir, strerror(-rc));
		return rc;
	}
	/* mkostemp makes 0600; servers may run as other users on a shared file system. */
	rc = 0;
	if (fchmod(fd, 0644) || (rc = write_all_fd(fd, text, len)) || fsync(fd)) {
		rc = rc ? rc : -errno;
		ps_errf(err, errlen, "kv path '%s': writing '%s': %s", url, tmp, strerror(-rc));
		goto fail_close;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		ps_errf(err, errlen, "kv path '%s': closing '%s': %s", url, tmp, strerror(-rc));
		goto fail_close;
	}
	fd = -1;
	if (rename(tmp, path)) {
		rc = -errno;
		ps_errf(err, errlen, "kv path '%s': rename: %s", url, strerror(-rc));
		goto fail_close;
	}
	rc = sync_dir(dir);
	if (rc)
		ps_errf(err, errlen, "kv path '%s': fsync of '%s': %s", url, dir, strerror(-rc));
	return rc;

fail_close:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

int kv_file_get(const char *url, const char *path, char *buf, size_t cap, size_t *len, char *err,
		size_t errlen)
{
	size_t n = 0;
	ssize_t r;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		ps_errf(err, errlen, "kv path '%s': %s", url,
			rc == -ENOENT ? "no scheduler entry (yet)" : strerror(-rc));
		return rc;
	}
	while (n < cap) {
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			close(fd);
			ps_errf(err, errlen, "kv path '%s': read: %s", url, strerror(-rc));
			return rc;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return 0;
}

int kv_file_del(const char *url, const char *path, char *err, size_t errlen)
{
	char dir[PS_URL_PATH_MAX];
	int rc;

	if (unlink(path)) {
		rc = -errno;
		if (rc == -ENOENT)
			return 0;
		ps_errf(err, errlen, "kv path '%s': unlink: %s", url, strerror(-rc));
		return rc;
	}
	dir_of(path, dir);
	rc = sync_dir(dir);
	if (rc)
		ps_errf(err, errlen, "kv path '%s': fsync of '%s': %s", url, dir, strerror(-rc));
	return rc;
}
