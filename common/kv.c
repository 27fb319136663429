/*
 * The scheduler kv entry: the URL to a backend (file:// or zk://), and the calls of common/kv.h
 * on top of the backends' put/get/del.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/kv.h"
#include "common/kv_internal.h"

/* Where an entry lives: a file path, or a ZooKeeper session (opened by kv_open()). */
struct kv_loc {
	const char *url;
	struct ps_url u;
	struct kv_zk *zk; /* zk:// only */
};

/* Parse @url into @l (no I/O), or the error that says why it cannot hold a kv entry. */
static int kv_parse_loc(const char *url, struct kv_loc *l, char *err, size_t errlen)
{
	size_t n;
	int rc;

	memset(l, 0, sizeof(*l));
	l->url = url;
	rc = ps_url_parse(url, &l->u, err, errlen);
	if (rc)
		return rc;
	if (!strcmp(l->u.scheme, "zk"))
		return 0;
	if (!strcmp(l->u.scheme, "none")) {
		ps_errf(err, errlen,
			"kv path '%s': none:// cannot hold the scheduler address; use "
			"file:///path or zk://host:port/path",
			url);
		return PS_EBAD_URL;
	}
	if (strcmp(l->u.scheme, "file")) {
		ps_errf(err, errlen,
			"kv path '%s': scheme '%s' has no kv backend (built in: file://, zk://)",
			url, l->u.scheme);
		return PS_EUNSUPPORTED_SCHEME;
	}
	n = strlen(l->u.path);
	if (l->u.path[n - 1] == '/') {
		ps_errf(err, errlen, "kv path '%s': names a directory, expected a file", url);
		return PS_EBAD_URL;
	}
	return 0;
}

static bool kv_is_zk(const struct kv_loc *l)
{
	return l->u.scheme[0] == 'z';
}

/* kv_parse_loc(), then for zk:// start the session. Undo with kv_close(). */
static int kv_open(const char *url, struct kv_loc *l, char *err, size_t errlen)
{
	int rc = kv_parse_loc(url, l, err, errlen);

	if (!rc && kv_is_zk(l))
		rc = kv_zk_open(url, &l->u, &l->zk, err, errlen);
	return rc;
}

static void kv_close(struct kv_loc *l)
{
	kv_zk_close(l->zk);
	l->zk = NULL;
}

/* Read and parse the entry at @l; *@version is the zk data version (file: -1). */
static int kv_get_entry(struct kv_loc *l, int timeout_ms, struct ps_kv_entry *out, int *version,
			char *err, size_t errlen)
{
	char buf[PS_KV_FILE_MAX + 1], sub[256];
	size_t n = 0;
	int rc;

	/* One byte past the limit tells a full entry from an oversized one. */
	*version = -1;
	if (kv_is_zk(l))
		rc = kv_zk_get(l->zk, buf, sizeof(buf), &n, version, timeout_ms, err, errlen);
	else
		rc = kv_file_get(l->url, l->u.path, buf, sizeof(buf), &n, err, errlen);
	if (rc)
		return rc;
	if (n > PS_KV_FILE_MAX) {
		ps_errf(err, errlen, "kv path '%s': not a psplus kv entry (larger than %d bytes)",
			l->url, PS_KV_FILE_MAX);
		return PS_ECORRUPT;
	}
	rc = ps_kv_parse(buf, n, out, sub, sizeof(sub));
	if (rc)
		ps_errf(err, errlen, "kv path '%s': not a valid psplus kv entry: %s", l->url, sub);
	return rc;
}

int ps_kv_publish(const char *url, const struct ps_kv_entry *e, char *err, size_t errlen)
{
	char text[PS_KV_FILE_MAX];
	struct kv_loc l;
	int len, rc;

	rc = kv_parse_loc(url, &l, err, errlen);
	if (rc)
		return rc;
	if (!e->host[0] || !e->port || !e->server_num) {
		ps_errf(err, errlen, "kv path '%s': refusing to publish an empty address or count",
			url);
		return -EINVAL;
	}
	len = ps_kv_format(e, text, sizeof(text));
	if (len < 0) {
		ps_errf(err, errlen, "kv path '%s': entry does not fit %d bytes", url,
			PS_KV_FILE_MAX);
		return len;
	}
	if (!kv_is_zk(&l))
		return kv_file_put(url, l.u.path, text, (size_t)len, err, errlen);
	rc = kv_zk_open(url, &l.u, &l.zk, err, errlen);
	if (!rc)
		rc = kv_zk_put(l.zk, text, (size_t)len, KV_ZK_CONNECT_MS, err, errlen);
	kv_close(&l);
	return rc;
}

int ps_kv_read(const char *url, struct ps_kv_entry *out, char *err, size_t errlen)
{
	struct kv_loc l;
	int rc, version;

	rc = kv_open(url, &l, err, errlen);
	if (!rc)
		rc = kv_get_entry(&l, KV_ZK_CONNECT_MS, out, &version, err, errlen);
	kv_close(&l);
	return rc;
}

int ps_kv_wait(const char *url, int timeout_ms, int stop_fd, struct ps_kv_entry *out, char *err,
	       size_t errlen)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};
	int rc, nap = 10, left, version, tries = 0;
	struct kv_loc l;
	char last[512];

	rc = kv_parse_loc(url, &l, err, errlen);
	if (rc)
		return rc;
	for (;;) {
		/* zk://: one session for the whole wait, replaced only when it is lost for good;
		 * each read waits at most a second for it, so @stop_fd is watched meanwhile. */
		if (kv_is_zk(&l) && l.zk && kv_zk_lost(l.zk))
			kv_close(&l);
		left = ps_clock_remaining_ms(deadline);
		/* A zk:// read needs a round trip: with almost no time left, the last answer
		 * (say, no entry yet) says more than a timeout of a few ms would. */
		if (kv_is_zk(&l) && tries++ && left < KV_ZK_MIN_TRY_MS) {
			ps_errf(err, errlen, "gave up after %d ms: %s", timeout_ms, last);
			rc = PS_ETIMEOUT;
			break;
		}
		rc = 0;
		if (kv_is_zk(&l) && !l.zk)
			rc = kv_zk_open(url, &l.u, &l.zk, last, sizeof(last));
		if (!rc)
			rc = kv_get_entry(&l, left < 1000 ? left : 1000, out, &version, last,
					  sizeof(last));
		if (!rc || rc == PS_EBAD_URL || rc == PS_EUNSUPPORTED_SCHEME) {
			if (rc)
				ps_errf(err, errlen, "%s", last);
			break;
		}
		left = ps_clock_remaining_ms(deadline);
		if (!left) {
			ps_errf(err, errlen, "gave up after %d ms: %s", timeout_ms, last);
			rc = PS_ETIMEOUT;
			break;
		}
		/* Back off to 200 ms: quick when the scheduler is just starting, cheap on NFS. */
		if (poll(&p, stop_fd >= 0 ? 1 : 0, nap < left ? nap : left) > 0) {
			ps_errf(err, errlen, "interrupted while waiting for '%s'", url);
			rc = PS_ESHUTDOWN;
			break;
		}
		nap = nap * 2 > 200 ? 200 : nap * 2;
	}
	kv_close(&l);
	return rc;
}

int ps_kv_remove(const char *url, const struct ps_kv_entry *expect, char *err, size_t errlen)
{
	struct ps_kv_entry cur;
	int rc, version = -1;
	struct kv_loc l;

	rc = kv_open(url, &l, err, errlen);
	if (rc)
		goto out;
	if (expect) {
		rc = kv_get_entry(&l, KV_ZK_CONNECT_MS, &cur, &version, err, errlen);
		if (rc == -ENOENT) {
			rc = 0;
			goto out;
		}
		if (rc && rc != PS_ECORRUPT && rc != PS_EPROTO_VERSION)
			goto out;
		if (rc || strcmp(cur.host, expect->host) || cur.port != expect->port ||
		    cur.server_num != expect->server_num) {
			ps_errf(err, errlen,
				"kv path '%s' holds another scheduler's entry; left in place", url);
			rc = -ESTALE;
			goto out;
		}
	}
	/* zk://: deleted only if nobody replaced the entry since it was compared. */
	if (kv_is_zk(&l))
		rc = kv_zk_del(l.zk, version, KV_ZK_CONNECT_MS, err, errlen);
	else
		rc = kv_file_del(url, l.u.path, err, errlen);
out:
	kv_close(&l);
	return rc;
}
