/*
 * The scheduler kv entry's text (docs/wire.md, "The kv file"): the same bytes in a file:// entry
 * and in a zk:// znode's data.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/kv.h"
#include "common/kv_internal.h"
#include "common/options.h"

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
		ps_errf(err, errlen, "line %u: key '%s' given twice", line, key);
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
		ps_errf(err, errlen, "value of '%s' is too long", key);
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
		ps_errf(err, errlen, "binary data (NUL byte) in a text entry");
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
			ps_errf(err, errlen, "line %u: expected key=value", line);
			return PS_ECORRUPT;
		}
		klen = (size_t)(eq - p);
		for (size_t i = 0; i < klen; i++) {
			if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') ||
			      p[i] == '_')) {
				ps_errf(err, errlen, "line %u: invalid key", line);
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
		ps_errf(err, errlen, "missing key '%s'",
			!format.set ? "format"
			: !addr.set ? "addr"
				    : "server_num");
		return PS_ECORRUPT;
	}
	if ((rc = val_str(&format, "format", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_opt_parse_int(tmp, &v) || v < 1) {
		ps_errf(err, errlen, "format '%s' is not a positive number", tmp);
		return PS_ECORRUPT;
	}
	if (v != PS_KV_FORMAT) {
		ps_errf(err, errlen, "format %lld, this build reads format %d", (long long)v,
			PS_KV_FORMAT);
		return PS_EPROTO_VERSION;
	}
	if ((rc = val_str(&addr, "addr", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_url_parse_hostport(tmp, 0, &h, sub, sizeof(sub)) || !h.host[0]) {
		ps_errf(err, errlen, "addr: %s", h.host[0] ? sub : "expected host:port");
		return PS_ECORRUPT;
	}
	if ((rc = val_str(&num, "server_num", tmp, sizeof(tmp), err, errlen)))
		return rc;
	if (ps_opt_parse_int(tmp, &v) || v < 1 || v > 65536) {
		ps_errf(err, errlen, "server_num '%s' is not a number from 1 to 65536", tmp);
		return PS_ECORRUPT;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out->host, h.host, sizeof(out->host));
	out->port = h.port;
	out->server_num = (uint32_t)v;
	return 0;
}
