/*
 * The scheduler kv entry (module ps_kv): where the scheduler publishes "address + server count"
 * and where servers and clients find it (-sp / --scheduler_kv_path).
 *
 * Backends by URL scheme:
 *   file:///path  a small text file, replaced atomically (temp file in the same directory,
 *                 fsync, rename, fsync of the directory), so a reader sees the old entry or the
 *                 new one, never a mix. The format is documented in docs/wire.md, "The kv file":
 *
 *                   # psplus scheduler address
 *                   format=1
 *                   addr=127.0.0.1:40123
 *                   server_num=3
 *
 *                 One key=value per line; '#' starts a comment line; unknown keys are ignored
 *                 (so newer writers can add keys); format, addr and server_num are required,
 *                 each at most once. The file is at most PS_KV_FILE_MAX bytes.
 *   zk://h1:p1[,h2:p2...]/path
 *                 the same text as the data of the persistent znode /path in that ZooKeeper
 *                 ensemble (common/kv_zk.c). Publishing creates the znode's missing parents
 *                 (empty, persistent) and replaces the data in one write; a read is one get;
 *                 removal with @expect deletes only the version it compared (another
 *                 scheduler's later entry stays). Each call opens a session and closes it;
 *                 ps_kv_wait() keeps one for the whole wait. A session that cannot connect
 *                 within 10 s (ps_kv_wait(): its own deadline) is PS_ETIMEOUT, with a message
 *                 naming the ensemble; so is a call the server does not answer by then. One
 *                 overrun remains: closing a session whose server stopped answering takes
 *                 the client library about 1.5 s more (measured with the server SIGSTOPped). Builds without the ZooKeeper C client (libzookeeper-mt)
 *                 return PS_EUNSUPPORTED_SCHEME for zk:// with a message saying so.
 *   none://       cannot hold an address: PS_EBAD_URL.
 *   plugin://     no plugin kv backends yet: PS_EUNSUPPORTED_SCHEME.
 *
 * Errors: 0 or a negative code, with @err (if not NULL) receiving a message that names the
 * path. Thread-safe (no shared state); concurrent writers to one path are the operator's error,
 * but each write is still atomic.
 */
#ifndef PS_COMMON_KV_H
#define PS_COMMON_KV_H

#include <stddef.h>
#include <stdint.h>

#include "common/url.h"

/* The largest kv file a reader accepts; the entry is a few dozen bytes. */
#define PS_KV_FILE_MAX 4096
/* The one format this build reads and writes. */
#define PS_KV_FORMAT 1

struct ps_kv_entry {
	char host[PS_URL_HOST_MAX]; /* scheduler control address, without IPv6 brackets */
	uint16_t port;		    /* scheduler control port */
	uint32_t server_num;	    /* servers the cluster is configured for */
};

/**
 * ps_kv_publish() - write @e at @url, replacing any previous entry atomically.
 *
 * Returns 0, PS_EBAD_URL, PS_EUNSUPPORTED_SCHEME, -EINVAL (empty host, zero port or
 * server_num), -errno from the file system (-ENOENT when the directory does not exist), or for
 * zk:// PS_ETIMEOUT (no server reachable), -EACCES (the znode's ACL) or -EIO.
 */
int ps_kv_publish(const char *url, const struct ps_kv_entry *e, char *err, size_t errlen);

/**
 * ps_kv_read() - read the entry at @url once.
 *
 * Returns 0, -ENOENT (no entry yet), PS_ECORRUPT (not a psplus kv entry: unparsable, too long,
 * a required key missing or repeated, a bad address or count), PS_EPROTO_VERSION (a format this
 * build does not know), PS_EBAD_URL, PS_EUNSUPPORTED_SCHEME, or -errno.
 */
int ps_kv_read(const char *url, struct ps_kv_entry *out, char *err, size_t errlen);

/**
 * ps_kv_wait() - ps_kv_read() until it succeeds or @timeout_ms passes.
 * @stop_fd: a descriptor (signalfd) whose readability ends the wait with PS_ESHUTDOWN, or -1.
 *
 * Missing, unreadable and malformed entries are retried (a scheduler may be starting, or a
 * foreign file being replaced); bad and unsupported URLs fail at once. On timeout returns
 * PS_ETIMEOUT with @err holding the last reason.
 */
int ps_kv_wait(const char *url, int timeout_ms, int stop_fd, struct ps_kv_entry *out, char *err,
	       size_t errlen);

/**
 * ps_kv_remove() - remove the entry at @url (clean scheduler shutdown).
 * @expect: if not NULL, remove only when the stored entry still matches it (host, port,
 *          server_num), so a scheduler never deletes the entry of one that replaced it.
 *
 * Returns 0 (removed, or already absent), -ESTALE (someone else's entry, left in place),
 * the URL errors, or -errno.
 */
int ps_kv_remove(const char *url, const struct ps_kv_entry *expect, char *err, size_t errlen);

/** ps_kv_format() - the file contents for @e into @buf. Returns the length or -ENOSPC. */
int ps_kv_format(const struct ps_kv_entry *e, char *buf, size_t buflen);

/**
 * ps_kv_parse() - parse file contents (@len bytes, need not be NUL-terminated).
 *
 * Returns 0, PS_ECORRUPT or PS_EPROTO_VERSION with @err saying what is wrong (not the path).
 */
int ps_kv_parse(const char *buf, size_t len, struct ps_kv_entry *out, char *err, size_t errlen);

#endif
