/*
 * The scheduler kv entry's backends (module ps_kv, internal): common/kv.c parses the URL, formats
 * and parses the entry's text (kv_text.c) and calls one of these to store the bytes.
 *
 * Every function fills @err with a message that quotes @url, and returns 0 or a negative code.
 */
#ifndef PS_COMMON_KV_INTERNAL_H
#define PS_COMMON_KV_INTERNAL_H

#include <stddef.h>

#include "common/errbuf.h"
#include "common/kv.h"
#include "common/url.h"

/* ---- file:// -------------------------------------------------------------------------------- */

/* Replace the file @path by @len bytes of @text atomically (temp file, fsync, rename, fsync of
 * the directory). -ENOENT when the directory does not exist, or -errno. */
int kv_file_put(const char *url, const char *path, const char *text, size_t len, char *err,
		size_t errlen);
/* Read the file @path into @buf (@cap bytes): *@len is how many bytes it read, @cap when the
 * file is larger (the caller tells a full buffer from an oversized file by reading @cap bytes
 * for a limit of @cap - 1). -ENOENT: no entry. */
int kv_file_get(const char *url, const char *path, char *buf, size_t cap, size_t *len, char *err,
		size_t errlen);
/* Unlink @path and fsync its directory; an absent file is 0. */
int kv_file_del(const char *url, const char *path, char *err, size_t errlen);

/* ---- zk:// ---------------------------------------------------------------------------------- */

/* A ZooKeeper session with the ensemble of one zk:// URL, and the znode the URL names. */
struct kv_zk;

/* How long kv_zk calls wait for a session when the caller gives no deadline. */
#define KV_ZK_CONNECT_MS 10000
/* ps_kv_wait() makes no further zk:// read with less time than this left. */
#define KV_ZK_MIN_TRY_MS 50

/*
 * kv_zk_open() - start a session with @u's ensemble (asynchronous: the calls below wait until it
 * is connected). PS_EUNSUPPORTED_SCHEME when this build has no ZooKeeper client, -ENOMEM, or
 * -errno from the client library.
 */
int kv_zk_open(const char *url, const struct ps_url *u, struct kv_zk **out, char *err,
	       size_t errlen);
/* kv_zk_close() - end the session (NULL is a no-op). */
void kv_zk_close(struct kv_zk *z);
/* kv_zk_lost() - true when the session can no longer recover (expired, authentication failed):
 * the caller closes it and opens another. */
int kv_zk_lost(const struct kv_zk *z);

/*
 * Each call first waits up to @timeout_ms for the session to be connected (PS_ETIMEOUT, naming
 * the ensemble, when it is not).
 *
 * kv_zk_put(): create the znode (its missing parents too, empty, persistent) or replace its
 * data. kv_zk_get(): its data into @buf as kv_file_get(), and its data version into *@version.
 * kv_zk_del(): delete it if its version still is @version (-1: any); -ESTALE when it changed,
 * 0 when absent.
 *
 * ZooKeeper's errors map to: no node -ENOENT, no permission -EACCES, connection lost or an
 * operation timeout PS_ETIMEOUT, a path the server refuses PS_EBAD_URL, the rest -EIO.
 */
int kv_zk_put(struct kv_zk *z, const char *text, size_t len, int timeout_ms, char *err,
	      size_t errlen);
int kv_zk_get(struct kv_zk *z, char *buf, size_t cap, size_t *len, int *version, int timeout_ms,
	      char *err, size_t errlen);
int kv_zk_del(struct kv_zk *z, int version, int timeout_ms, char *err, size_t errlen);

#endif
