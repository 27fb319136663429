/*
 * URLs used by psplus: the scheduler kv path, checkpoint roots and streaming-model outputs.
 *
 *   file:///abs/path          a local (or shared) file system path; "file://localhost/abs" too
 *   none://                   nothing (checkpoints or streaming off)
 *   zk://h1:p1[,h2:p2...]/path a ZooKeeper ensemble and a znode path (port defaults to 2181;
 *                              IPv6 hosts in brackets: zk://[::1]:2181/psplus)
 *   <plugin scheme>://rest    schemes registered by plugins; 'rest' is handed over unparsed
 *
 * Also host:port parsing for listen/connect addresses.
 */
#ifndef PS_COMMON_URL_H
#define PS_COMMON_URL_H

#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>

#define PS_URL_SCHEME_MAX 32
#define PS_URL_HOST_MAX	  256
#define PS_URL_PATH_MAX	  4096
#define PS_URL_MAX_HOSTS  16

struct ps_url_host {
	char host[PS_URL_HOST_MAX]; /* without IPv6 brackets */
	uint16_t port;
};

struct ps_url {
	char scheme[PS_URL_SCHEME_MAX]; /* "file", "none", "zk", or a plugin's */
	char path[PS_URL_PATH_MAX];	/* file: absolute path; zk: znode path; plugin: the rest */
	size_t nhosts;			/* zk only */
	struct ps_url_host hosts[PS_URL_MAX_HOSTS];
};

/**
 * ps_url_parse() - parse and validate @s into @out.
 * @err: receives a message that quotes the URL and says what is wrong.
 *
 * Returns 0, PS_EBAD_URL (malformed) or PS_EUNSUPPORTED_SCHEME (scheme neither built in nor
 * registered), with @err filled. Thread-safe.
 */
PS_EXPORT int ps_url_parse(const char *s, struct ps_url *out, char *err, size_t errlen);

/**
 * ps_url_register_scheme() - accept "@scheme://..." URLs (called by plugins).
 *
 * @scheme: lowercase letters, digits, '+', '-', '.'; starts with a letter; at most 31 bytes.
 * Returns 0, -EINVAL for a bad name, -EEXIST for a built-in or already registered scheme,
 * -ENOSPC when the table (64 entries) is full. Thread-safe.
 */
PS_EXPORT int ps_url_register_scheme(const char *scheme);

/**
 * ps_url_parse_hostport() - "host:port", "[v6]:port" or ":port" (host "" = any).
 * @default_port: used when ":port" is absent (pass 0 to require a port).
 *
 * Returns 0 or -EINVAL with @err filled.
 */
PS_EXPORT int ps_url_parse_hostport(const char *s, uint16_t default_port, struct ps_url_host *out,
				    char *err, size_t errlen);

#endif
