/*
 * The scheduler kv entry's zk:// backend: the entry's text as the data of one persistent znode,
 * through the ZooKeeper C client (libzookeeper_mt: its own I/O and completion threads keep the
 * session alive). Built when CMake finds the client (PS_HAVE_ZOOKEEPER); otherwise every call
 * says that this build has no ZooKeeper support.
 *
 * The znode is persistent, like the file:// entry: a clean scheduler shutdown deletes it
 * (compare-and-delete on its data version), a crashed scheduler's entry stays until the next
 * scheduler replaces it, and readers that connect to a dead address retry.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>

#include "common/kv_internal.h"

#ifdef PS_HAVE_ZOOKEEPER

#include <pthread.h>
#include <time.h>

#include <zookeeper/zookeeper.h>

#include "common/clock.h"
#include "common/log.h"

struct kv_zk {
	const char *url;
	char path[PS_URL_PATH_MAX];
	/* "h1:p1,::1:p2" (IPv6 hosts without brackets) */
	char hosts[PS_URL_MAX_HOSTS * (PS_URL_HOST_MAX + 16)];
	zhandle_t *zh;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;		 /* the last session state the watcher saw */
	struct zk_op *abandoned; /* calls given up on: freed after zookeeper_close() */
};

/*
 * One asynchronous call. The client's synchronous calls wait for an answer without a bound (up
 * to the session's timeout when the server stops answering); these wait until the caller's
 * deadline. A call given up on stays allocated on the session's abandoned list (its completion
 * may still run, and then touches nothing but its own flags) and is freed by kv_zk_close()
 * once zookeeper_close() has returned: the library does not always complete calls that never
 * got an answer when it closes.
 */
struct zk_op {
	struct kv_zk *z;
	struct zk_op *next; /* on z->abandoned */
	bool done, abandoned;
	int zrc;
	char *buf; /* get: where the data goes (@cap bytes), *len how much came */
	size_t cap, len;
	int version;
};

/* The client library's log lines: ours at debug level (a refused connection is retried, and the
 * caller's error says what finally went wrong). */
static void zk_log(const char *msg)
{
	ps_log_debug("kv", "zookeeper: %s", msg);
}

/* Session events arrive on the client's completion thread. */
static void zk_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct kv_zk *z = ctx;

	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&z->lock);
	z->state = state;
	pthread_cond_broadcast(&z->cond);
	pthread_mutex_unlock(&z->lock);
}

static pthread_once_t zk_once = PTHREAD_ONCE_INIT;

static void zk_init_once(void)
{
	/* Process-wide: the library formats nothing below a warning. */
	zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
}

int kv_zk_open(const char *url, const struct ps_url *u, struct kv_zk **out, char *err,
	       size_t errlen)
{
	struct kv_zk *z;
	size_t off = 0;
	int rc;

	*out = NULL;
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->url = url;
	memcpy(z->path, u->path, sizeof(z->path));
	/* The client splits the port off at the last ':' and resolves the rest as it is: IPv6
	 * hosts go without brackets ("::1:2181"). */
	for (size_t i = 0; i < u->nhosts; i++) {
		off += (size_t)snprintf(z->hosts + off, sizeof(z->hosts) - off, "%s%s:%u",
					i ? "," : "", u->hosts[i].host, u->hosts[i].port);
		if (off >= sizeof(z->hosts)) /* cannot happen: room for 16 hosts of 255 bytes */
			break;
	}
	pthread_mutex_init(&z->lock, NULL);
	pthread_cond_init(&z->cond, NULL);
	pthread_once(&zk_once, zk_init_once);
	/* The session timeout the server is asked for; it grants 2-20 ticks (4-40 s by default). */
	z->zh = zookeeper_init2(z->hosts, zk_watch, KV_ZK_CONNECT_MS, NULL, z, 0, zk_log);
	if (!z->zh) {
		/* The client resolves every host first: ENOENT or EINVAL is a name with no
		 * address (or a resolver that did not answer), worth retrying. */
		int e = errno ? errno : EIO;

		rc = e == ENOENT || e == EINVAL ? -EHOSTUNREACH : -e;
		ps_errf(err, errlen, "kv path '%s': cannot start a ZooKeeper session with %s: %s",
			url, z->hosts,
			rc == -EHOSTUNREACH ? "a host name has no address (does it resolve?)"
					    : strerror(e));
		kv_zk_close(z);
		return rc;
	}
	*out = z;
	return 0;
}

void kv_zk_close(struct kv_zk *z)
{
	if (!z)
		return;
	/* Joins the client's threads: no watcher or completion runs after this. */
	if (z->zh)
		zookeeper_close(z->zh);
	while (z->abandoned) {
		struct zk_op *op = z->abandoned;

		z->abandoned = op->next;
		free(op);
	}
	pthread_cond_destroy(&z->cond);
	pthread_mutex_destroy(&z->lock);
	free(z);
}

int kv_zk_lost(const struct kv_zk *z)
{
	return z->zh && is_unrecoverable(z->zh) == ZINVALIDSTATE;
}

/* Wait until @deadline (monotonic ns) for the session to be connected. */
static int zk_connected(struct kv_zk *z, uint64_t deadline, int timeout_ms, char *err,
			size_t errlen)
{
	struct timespec until = ps_clock_timespec(deadline);
	int rc = 0;

	pthread_mutex_lock(&z->lock);
	while (z->state != ZOO_CONNECTED_STATE && !rc) {
		if (z->state == ZOO_EXPIRED_SESSION_STATE || z->state == ZOO_AUTH_FAILED_STATE) {
			rc = z->state == ZOO_AUTH_FAILED_STATE ? -EACCES : -ECONNRESET;
			break;
		}
		if (pthread_cond_clockwait(&z->cond, &z->lock, CLOCK_MONOTONIC, &until) ==
		    ETIMEDOUT)
			rc = PS_ETIMEOUT;
	}
	if (z->state == ZOO_CONNECTED_STATE)
		rc = 0;
	pthread_mutex_unlock(&z->lock);
	if (rc == PS_ETIMEOUT)
		ps_errf(err, errlen,
			"kv path '%s': no ZooKeeper server of %s answered within %d ms", z->url,
			z->hosts, timeout_ms);
	else if (rc)
		ps_errf(err, errlen, "kv path '%s': the ZooKeeper session with %s %s", z->url,
			z->hosts, rc == -EACCES ? "failed authentication" : "expired");
	return rc;
}

/* A ZooKeeper result code to ours, with a message naming @what. */
static int zk_err(const struct kv_zk *z, int zrc, const char *what, int timeout_ms, char *err,
		  size_t errlen)
{
	int rc;

	switch (zrc) {
	case ZOK:
		return 0;
	case ZNONODE:
		rc = -ENOENT;
		break;
	case ZNOAUTH:
	case ZAUTHFAILED:
		rc = -EACCES;
		break;
	case ZCONNECTIONLOSS:
	case ZOPERATIONTIMEOUT:
		rc = PS_ETIMEOUT;
		break;
	case ZBADVERSION:
		rc = -ESTALE;
		break;
	case ZBADARGUMENTS:
		rc = PS_EBAD_URL;
		break;
	case ZSESSIONEXPIRED:
	case ZINVALIDSTATE:
		rc = -ECONNRESET;
		break;
	default:
		rc = -EIO;
	}
	if (zrc == ZOPERATIONTIMEOUT)
		ps_errf(err, errlen, "kv path '%s': %s '%s': no answer from %s within %d ms",
			z->url, what, z->path, z->hosts, timeout_ms);
	else
		ps_errf(err, errlen, "kv path '%s': %s '%s': %s", z->url, what, z->path,
			rc == -ENOENT ? "no scheduler entry (yet)" : zerror(zrc));
	return rc;
}

/* Under z->lock: true when the waiter has gone (the lock is then released). */
static bool zk_op_gone(struct zk_op *op)
{
	if (!op->abandoned)
		return false;
	op->done = true;
	pthread_mutex_unlock(&op->z->lock);
	return true;
}

static void zk_op_finish(struct zk_op *op, int zrc)
{
	op->zrc = zrc;
	op->done = true;
	pthread_cond_broadcast(&op->z->cond);
	pthread_mutex_unlock(&op->z->lock);
}

static void zk_void_done(int zrc, const void *data)
{
	struct zk_op *op = (struct zk_op *)data;

	pthread_mutex_lock(&op->z->lock);
	if (!zk_op_gone(op))
		zk_op_finish(op, zrc);
}

static void zk_stat_done(int zrc, const struct Stat *st, const void *data)
{
	zk_void_done(zrc, data);
}

static void zk_string_done(int zrc, const char *value, const void *data)
{
	zk_void_done(zrc, data);
}

static void zk_data_done(int zrc, const char *value, int value_len, const struct Stat *st,
			 const void *data)
{
	struct zk_op *op = (struct zk_op *)data;
	size_t n = value && value_len > 0 ? (size_t)value_len : 0;

	pthread_mutex_lock(&op->z->lock);
	if (zk_op_gone(op))
		return;
	if (zrc == ZOK) {
		/* More than @cap bytes: the caller sees a full buffer and calls it oversized. */
		op->len = n > op->cap ? op->cap : n;
		memcpy(op->buf, value, op->len);
		op->version = st ? st->version : -1;
	}
	zk_op_finish(op, zrc);
}

static struct zk_op *zk_op_new(struct kv_zk *z)
{
	struct zk_op *op = calloc(1, sizeof(*op));

	if (op)
		op->z = z;
	return op;
}

/*
 * Wait for @op, issued with result @issued (not ZOK: the call was refused at once and no
 * completion will run), until @deadline. Returns the call's ZooKeeper code, ZOPERATIONTIMEOUT
 * when the deadline passed first; @op is freed or handed to its completion either way. A get's
 * results are copied to *@len and *@version (when not NULL) before @op is freed.
 */
static int zk_op_wait(struct zk_op *op, int issued, uint64_t deadline, size_t *len, int *version)
{
	struct timespec until = ps_clock_timespec(deadline);
	struct kv_zk *z = op->z;
	int zrc;

	if (issued != ZOK) {
		free(op);
		return issued;
	}
	pthread_mutex_lock(&z->lock);
	while (!op->done)
		if (pthread_cond_clockwait(&z->cond, &z->lock, CLOCK_MONOTONIC, &until) ==
		    ETIMEDOUT)
			break;
	if (!op->done) {
		op->abandoned = true;
		op->next = z->abandoned;
		z->abandoned = op;
		pthread_mutex_unlock(&z->lock);
		return ZOPERATIONTIMEOUT;
	}
	zrc = op->zrc;
	if (len && zrc == ZOK) {
		*len = op->len;
		*version = op->version;
	}
	pthread_mutex_unlock(&z->lock);
	free(op);
	return zrc;
}

/* zoo_aset/zoo_acreate/zoo_adelete/zoo_aget of @path, waited for until @deadline. */
static int zk_set(struct kv_zk *z, const char *text, size_t len, uint64_t deadline)
{
	struct zk_op *op = zk_op_new(z);

	if (!op)
		return ZSYSTEMERROR;
	return zk_op_wait(op, zoo_aset(z->zh, z->path, text, (int)len, -1, zk_stat_done, op),
			  deadline, NULL, NULL);
}

static int zk_create(struct kv_zk *z, const char *path, const char *text, int len,
		     uint64_t deadline)
{
	struct zk_op *op = zk_op_new(z);

	if (!op)
		return ZSYSTEMERROR;
	return zk_op_wait(op,
			  zoo_acreate(z->zh, path, text, len, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT,
				      zk_string_done, op),
			  deadline, NULL, NULL);
}

/* Create every missing ancestor of the znode, empty and persistent. */
static int zk_make_parents(struct kv_zk *z, uint64_t deadline, int timeout_ms, char *err,
			   size_t errlen)
{
	char p[PS_URL_PATH_MAX];
	int zrc;

	memcpy(p, z->path, sizeof(p));
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		zrc = zk_create(z, p, NULL, -1, deadline);
		*s = '/';
		if (zrc != ZOK && zrc != ZNODEEXISTS)
			return zk_err(z, zrc, "creating the parents of", timeout_ms, err, errlen);
	}
	return 0;
}

/* The monotonic deadline @timeout_ms from now (negative: now). */
static uint64_t zk_deadline(int timeout_ms)
{
	return ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
}

/* What kv_zk_get() and kv_zk_del() start with: the session connected, and an op for the call. */
static int zk_begin(struct kv_zk *z, int timeout_ms, uint64_t *deadline, struct zk_op **op,
		    char *err, size_t errlen)
{
	int rc;

	*deadline = zk_deadline(timeout_ms);
	rc = zk_connected(z, *deadline, timeout_ms, err, errlen);
	if (rc)
		return rc;
	*op = zk_op_new(z);
	return *op ? 0 : -ENOMEM;
}

int kv_zk_put(struct kv_zk *z, const char *text, size_t len, int timeout_ms, char *err,
	      size_t errlen)
{
	uint64_t deadline = zk_deadline(timeout_ms);
	int rc, zrc = ZOK;

	/* Replace, or create; a concurrent delete between the two sends us round again, and so
	 * does a lost connection (setting the data twice is harmless) while time is left. */
	for (int tries = 0; tries < 8; tries++) {
		rc = zk_connected(z, deadline, timeout_ms, err, errlen);
		if (rc)
			return rc;
		zrc = zk_set(z, text, len, deadline);
		if (zrc == ZNONODE) {
			zrc = zk_create(z, z->path, text, (int)len, deadline);
			if (zrc == ZNONODE) {
				rc = zk_make_parents(z, deadline, timeout_ms, err, errlen);
				if (rc)
					return rc;
				continue; /* create again */
			}
			if (zrc == ZNODEEXISTS)
				continue; /* created meanwhile: set again */
		}
		if (zrc != ZCONNECTIONLOSS || !ps_clock_remaining_ms(deadline))
			break;
	}
	return zk_err(z, zrc, "writing", timeout_ms, err, errlen);
}

int kv_zk_get(struct kv_zk *z, char *buf, size_t cap, size_t *len, int *version, int timeout_ms,
	      char *err, size_t errlen)
{
	struct zk_op *op;
	uint64_t deadline;
	int rc, zrc;

	rc = zk_begin(z, timeout_ms, &deadline, &op, err, errlen);
	if (rc)
		return rc;
	op->buf = buf;
	op->cap = cap;
	zrc = zk_op_wait(op, zoo_aget(z->zh, z->path, 0, zk_data_done, op), deadline, len, version);
	return zk_err(z, zrc, "reading", timeout_ms, err, errlen);
}

int kv_zk_del(struct kv_zk *z, int version, int timeout_ms, char *err, size_t errlen)
{
	struct zk_op *op;
	uint64_t deadline;
	int rc, zrc;

	rc = zk_begin(z, timeout_ms, &deadline, &op, err, errlen);
	if (rc)
		return rc;
	zrc = zk_op_wait(op, zoo_adelete(z->zh, z->path, version, zk_void_done, op), deadline, NULL,
			 NULL);
	if (zrc == ZNONODE)
		return 0;
	if (zrc == ZBADVERSION) {
		ps_errf(err, errlen,
			"kv path '%s' was replaced by another scheduler's entry; left in place",
			z->url);
		return -ESTALE;
	}
	return zk_err(z, zrc, "deleting", timeout_ms, err, errlen);
}

#else /* !PS_HAVE_ZOOKEEPER */

static int zk_unsupported(const char *url, char *err, size_t errlen)
{
	ps_errf(err, errlen,
		"kv path '%s': ZooKeeper support is not built into this psplus (configure with "
		"libzookeeper-mt-dev installed); use a file:// path on a file system every host "
		"can read",
		url);
	return PS_EUNSUPPORTED_SCHEME;
}

int kv_zk_open(const char *url, const struct ps_url *u, struct kv_zk **out, char *err,
	       size_t errlen)
{
	*out = NULL;
	return zk_unsupported(url, err, errlen);
}

void kv_zk_close(struct kv_zk *z)
{
}

int kv_zk_lost(const struct kv_zk *z)
{
	return 1;
}

int kv_zk_put(struct kv_zk *z, const char *text, size_t len, int timeout_ms, char *err,
	      size_t errlen)
{
	return zk_unsupported("zk://", err, errlen);
}

int kv_zk_get(struct kv_zk *z, char *buf, size_t cap, size_t *len, int *version, int timeout_ms,
	      char *err, size_t errlen)
{
	return zk_unsupported("zk://", err, errlen);
}

int kv_zk_del(struct kv_zk *z, int version, int timeout_ms, char *err, size_t errlen)
{
	return zk_unsupported("zk://", err, errlen);
}

#endif
