/*
 * Control-plane sockets: connect with a deadline, listen, addresses for logs and for the kv
 * entry, and the shared-secret check.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/ctl.h"

int ps_ctl_set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ? -errno : 0;
}

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
	char svc[8];
	int rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	if (passive && (!host || !*host)) {
		/* All IPv4 addresses: the default a user with no --host expects on Linux. */
		hints.ai_family = AF_INET;
		host = NULL;
	}
	snprintf(svc, sizeof(svc), "%u", port);
	rc = getaddrinfo(host, svc, &hints, res);
	if (rc == EAI_SYSTEM)
		return -errno;
	if (rc == EAI_MEMORY)
		return -ENOMEM;
	return rc ? -ENOENT : 0;
}

/* One non-blocking connect attempt, finished (or not) by @deadline. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline, int stop_fd, int *out_fd)
{
	struct pollfd p[2];
	socklen_t sl = sizeof(int);
	int fd, soerr = 0, rc, n;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		goto connected;
	if (errno != EINPROGRESS) {
		rc = -errno;
		goto fail;
	}
	p[0] = (struct pollfd){.fd = fd, .events = POLLOUT};
	p[1] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
	for (;;) {
		n = poll(p, stop_fd >= 0 ? 2 : 1, ps_clock_remaining_ms(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto fail;
		}
		if (n == 0) {
			rc = PS_ETIMEOUT;
			goto fail;
		}
		if (stop_fd >= 0 && p[1].revents) {
			rc = PS_ESHUTDOWN;
			goto fail;
		}
		break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl)) {
		rc = -errno;
		goto fail;
	}
	if (soerr) {
		rc = -soerr;
		goto fail;
	}
connected:
	rc = ps_ctl_set_nodelay(fd);
	if (rc)
		goto fail;
	*out_fd = fd;
	return 0;
fail:
	close(fd);
	return rc;
}

int ps_ctl_connect(const char *host, uint16_t port, int timeout_ms, int stop_fd, int *out_fd)
{
	uint64_t deadline = ps_clock_deadline_ms((uint64_t)(timeout_ms < 0 ? 0 : timeout_ms));
	struct addrinfo *res, *ai;
	int rc;

	rc = resolve(host, port, false, &res);
	if (rc)
		return rc;
	rc = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		rc = connect_one(ai, deadline, stop_fd, out_fd);
		if (!rc || rc == PS_ESHUTDOWN || rc == PS_ETIMEOUT)
			break;
	}
	freeaddrinfo(res);
	return rc;
}

int ps_ctl_listen(const char *host, uint16_t port, int *out_fd)
{
	struct addrinfo *res, *ai;
	int fd = -1, one = 1, rc;

	rc = resolve(host, port, true, &res);
	if (rc)
		return rc;
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
			rc = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		rc = 0;
		break;
	}
	freeaddrinfo(res);
	if (!rc)
		*out_fd = fd;
	return rc;
}

int ps_ctl_sock_name(int fd, bool peer, char *host, size_t hostlen, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const void *a;
	uint16_t p;

	if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &sl)
		  : getsockname(fd, (struct sockaddr *)&ss, &sl)))
		return -errno;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

		a = &sin->sin_addr;
		p = ntohs(sin->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

		a = &sin6->sin6_addr;
		p = ntohs(sin6->sin6_port);
	} else {
		return -EAFNOSUPPORT;
	}
	if (!inet_ntop(ss.ss_family, a, host, (socklen_t)hostlen))
		return -errno;
	if (port)
		*port = p;
	return 0;
}

void ps_ctl_addr_format(const char *host, uint16_t port, char *buf, size_t buflen)
{
	if (strchr(host, ':'))
		snprintf(buf, buflen, "[%s]:%u", host, port);
	else
		snprintf(buf, buflen, "%s:%u", host, port);
}

/*
 * Interfaces rather than gethostname(): Debian maps the host name to 127.0.1.1 in /etc/hosts,
 * which other machines cannot reach.
 */
int ps_ctl_default_host(char *host, size_t hostlen)
{
	struct ifaddrs *ifs, *i;
	int found = 0;

	if (getifaddrs(&ifs) == 0) {
		for (i = ifs; i && !found; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
			    !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
				continue;
			found = inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr,
					  host, (socklen_t)hostlen) != NULL;
		}
		freeifaddrs(ifs);
	}
	if (found)
		return 0;
	snprintf(host, hostlen, "127.0.0.1");
	return 1;
}

int ps_ctl_token_load(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen)
{
	size_t n = 0;
	ssize_t r;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "auth token file '%s': %s", path, strerror(-rc));
		return rc;
	}
	/* Read one byte more than the limit to tell "exactly full" from "too long". */
	while (n <= PS_CTL_TOKEN_MAX) {
		uint8_t tmp[256];
		size_t want = PS_CTL_TOKEN_MAX + 1 - n;

		r = read(fd, tmp, want < sizeof(tmp) ? want : sizeof(tmp));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "auth token file '%s': %s", path, strerror(-rc));
			goto out;
		}
		if (r == 0)
			break;
		if (n + (size_t)r > PS_CTL_TOKEN_MAX) {
			rc = -E2BIG;
			snprintf(err, errlen, "auth token file '%s': longer than %u bytes", path,
				 PS_CTL_TOKEN_MAX);
			goto out;
		}
		memcpy(buf + n, tmp, (size_t)r);
		n += (size_t)r;
	}
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
		     buf[n - 1] == '\t'))
		n--;
	if (!n) {
		rc = -EINVAL;
		snprintf(err, errlen, "auth token file '%s' is empty", path);
		goto out;
	}
	*len = n;
out:
	close(fd);
	return rc;
}

bool ps_ctl_token_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	/* Walk the longer length always; a length mismatch still fails, without an early exit. */
	size_t n = alen > blen ? alen : blen;
	volatile uint8_t diff = alen != blen;

	for (size_t i = 0; i < n; i++)
		diff |= (uint8_t)((i < alen ? a[i] : 0) ^ (i < blen ? b[i] : 0));
	return diff == 0;
}
