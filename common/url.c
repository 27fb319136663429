/*
 * URL parsing and the plugin scheme table.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>

#include "common/errbuf.h"
#include "common/options.h"
#include "common/url.h"

#define ZK_DEFAULT_PORT	   2181
#define MAX_PLUGIN_SCHEMES 64

static pthread_mutex_t schemes_lock = PTHREAD_MUTEX_INITIALIZER;
static char plugin_schemes[MAX_PLUGIN_SCHEMES][PS_URL_SCHEME_MAX];
static size_t nplugin_schemes;

static const char *const builtin_schemes[] = {"file", "none", "zk"};

static bool scheme_name_ok(const char *s, size_t len)
{
	if (!len || len >= PS_URL_SCHEME_MAX || !islower((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!islower(c) && !isdigit(c) && c != '+' && c != '-' && c != '.')
			return false;
	}
	return true;
}

static bool is_builtin(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(builtin_schemes) / sizeof(builtin_schemes[0]); i++)
		if (strlen(builtin_schemes[i]) == len && !strncmp(builtin_schemes[i], s, len))
			return true;
	return false;
}

static bool is_registered(const char *s, size_t len)
{
	bool found = false;

	pthread_mutex_lock(&schemes_lock);
	for (size_t i = 0; i < nplugin_schemes && !found; i++)
		found = strlen(plugin_schemes[i]) == len && !strncmp(plugin_schemes[i], s, len);
	pthread_mutex_unlock(&schemes_lock);
	return found;
}

int ps_url_register_scheme(const char *scheme)
{
	size_t len = scheme ? strlen(scheme) : 0;
	int rc = 0;

	if (!scheme_name_ok(scheme, len))
		return -EINVAL;
	if (is_builtin(scheme, len))
		return -EEXIST;
	pthread_mutex_lock(&schemes_lock);
	for (size_t i = 0; i < nplugin_schemes; i++)
		if (!strcmp(plugin_schemes[i], scheme))
			rc = -EEXIST;
	if (!rc && nplugin_schemes == MAX_PLUGIN_SCHEMES)
		rc = -ENOSPC;
	if (!rc)
		memcpy(plugin_schemes[nplugin_schemes++], scheme, len + 1);
	pthread_mutex_unlock(&schemes_lock);
	return rc;
}

int ps_url_parse_hostport(const char *s, uint16_t default_port, struct ps_url_host *out, char *err,
			  size_t errlen)
{
	const char *host = s, *colon, *hend;
	size_t hlen;
	int64_t port;

	if (!s) {
		ps_errf(err, errlen, "missing address");
		return -EINVAL;
	}
	if (*s == '[') {
		hend = strchr(s, ']');
		if (!hend) {
			ps_errf(err, errlen, "'%s': unterminated '[' in IPv6 address", s);
			return -EINVAL;
		}
		host = s + 1;
		hlen = (size_t)(hend - host);
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] && !colon) {
			ps_errf(err, errlen, "'%s': expected ':port' after ']'", s);
			return -EINVAL;
		}
	} else {
		colon = strrchr(s, ':');
		if (colon && memchr(s, ':', (size_t)(colon - s))) {
			ps_errf(err, errlen, "'%s': IPv6 addresses need brackets, e.g. [::1]:7000",
				s);
			return -EINVAL;
		}
		hlen = colon ? (size_t)(colon - s) : strlen(s);
	}
	if (hlen >= PS_URL_HOST_MAX) {
		ps_errf(err, errlen, "'%s': host name too long", s);
		return -EINVAL;
	}
	for (size_t i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)host[i];

		if (!isalnum(c) && c != '.' && c != '-' && c != '_' && c != ':' && c != '%') {
			ps_errf(err, errlen, "'%s': invalid character '%c' in host", s, c);
			return -EINVAL;
		}
	}
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	if (!colon) {
		if (!default_port) {
			ps_errf(err, errlen, "'%s': missing ':port'", s);
			return -EINVAL;
		}
		out->port = default_port;
		return 0;
	}
	if (ps_opt_parse_int(colon + 1, &port) || port < 1 || port > 65535) {
		ps_errf(err, errlen, "'%s': port must be a number from 1 to 65535", s);
		return -EINVAL;
	}
	out->port = (uint16_t)port;
	return 0;
}

static int parse_file(const char *url, const char *rest, struct ps_url *out, char *err,
		      size_t errlen)
{
	/* file:///abs, or file://localhost/abs; never a relative path or another host. */
	if (!strncmp(rest, "localhost/", 10))
		rest += 9;
	if (rest[0] != '/') {
		ps_errf(err, errlen,
			"'%s': a file URL needs an absolute path (file:///path, three slashes)",
			url);
		return PS_EBAD_URL;
	}
	if (strlen(rest) >= PS_URL_PATH_MAX) {
		ps_errf(err, errlen, "'%s': path too long", url);
		return PS_EBAD_URL;
	}
	strcpy(out->path, rest);
	return 0;
}

static int parse_zk(const char *url, const char *rest, struct ps_url *out, char *err, size_t errlen)
{
	const char *slash = strchr(rest, '/');
	const char *p = rest;
	char hp[PS_URL_HOST_MAX + 16], sub[256];

	if (!slash || slash == rest) {
		ps_errf(err, errlen, "'%s': expected zk://host:port[,host:port...]/path", url);
		return PS_EBAD_URL;
	}
	/* A '/' inside brackets cannot happen: hosts are names or addresses. */
	while (p < slash) {
		const char *comma = memchr(p, ',', (size_t)(slash - p));
		const char *end = comma ? comma : slash;
		size_t len = (size_t)(end - p);

		if (!len) {
			ps_errf(err, errlen, "'%s': empty host in the ensemble list", url);
			return PS_EBAD_URL;
		}
		if (out->nhosts == PS_URL_MAX_HOSTS) {
			ps_errf(err, errlen, "'%s': more than %d hosts", url, PS_URL_MAX_HOSTS);
			return PS_EBAD_URL;
		}
		if (len >= sizeof(hp)) {
			ps_errf(err, errlen, "'%s': host too long", url);
			return PS_EBAD_URL;
		}
		memcpy(hp, p, len);
		hp[len] = '\0';
		if (ps_url_parse_hostport(hp, ZK_DEFAULT_PORT, &out->hosts[out->nhosts], sub,
					  sizeof(sub)) ||
		    !out->hosts[out->nhosts].host[0]) {
			ps_errf(err, errlen, "'%s': bad host: %s", url,
				out->hosts[out->nhosts].host[0] ? sub : "empty host name");
			return PS_EBAD_URL;
		}
		out->nhosts++;
		p = comma ? comma + 1 : slash;
		if (comma && p == slash) {
			ps_errf(err, errlen, "'%s': empty host in the ensemble list", url);
			return PS_EBAD_URL;
		}
	}
	if (!slash[1] || slash[strlen(slash) - 1] == '/' || strstr(slash, "//")) {
		ps_errf(err, errlen, "'%s': the znode path must be non-empty, e.g. /psplus/sched",
			url);
		return PS_EBAD_URL;
	}
	if (strlen(slash) >= PS_URL_PATH_MAX) {
		ps_errf(err, errlen, "'%s': path too long", url);
		return PS_EBAD_URL;
	}
	strcpy(out->path, slash);
	return 0;
}

int ps_url_parse(const char *s, struct ps_url *out, char *err, size_t errlen)
{
	const char *sep;
	size_t slen;

	memset(out, 0, sizeof(*out));
	if (!s || !*s) {
		ps_errf(err, errlen, "empty URL");
		return PS_EBAD_URL;
	}
	sep = strstr(s, "://");
	if (!sep) {
		ps_errf(err, errlen, "'%s': not a URL (expected scheme://..., e.g. file:///tmp/x)",
			s);
		return PS_EBAD_URL;
	}
	slen = (size_t)(sep - s);
	if (!scheme_name_ok(s, slen)) {
		ps_errf(err, errlen, "'%s': invalid scheme '%.*s'", s, (int)slen, s);
		return PS_EBAD_URL;
	}
	memcpy(out->scheme, s, slen);
	out->scheme[slen] = '\0';
	sep += 3;
	if (!strcmp(out->scheme, "file"))
		return parse_file(s, sep, out, err, errlen);
	if (!strcmp(out->scheme, "zk"))
		return parse_zk(s, sep, out, err, errlen);
	if (!strcmp(out->scheme, "none")) {
		if (*sep) {
			ps_errf(err, errlen, "'%s': none:// takes nothing after the scheme", s);
			return PS_EBAD_URL;
		}
		return 0;
	}
	if (!is_registered(s, slen)) {
		ps_errf(err, errlen,
			"'%s': unsupported scheme '%s' (built in: file, none, zk; others "
			"come from plugins)",
			s, out->scheme);
		return PS_EUNSUPPORTED_SCHEME;
	}
	if (strlen(sep) >= PS_URL_PATH_MAX) {
		ps_errf(err, errlen, "'%s': too long", s);
		return PS_EBAD_URL;
	}
	strcpy(out->path, sep);
	return 0;
}
