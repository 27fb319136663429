/*
 * tcp backend: the loop (one epoll set, owned by one thread), the event ring, how connections
 * are made (listen and accept; connect, which blocks through the handshake), flush and poll.
 *
 * A poll: write what is queued, drop accepted connections whose hello is overdue, wait in
 * epoll_wait (bounded by the caller's timeout, by the next hello deadline, and not at all when
 * events are already waiting), accept, read and write what is ready, then hand out up to @max
 * events in the order they happened. Handing an event over is what frees the send slot or the
 * receive buffer behind it (tcp_internal.h explains why that bounds the ring).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/tcp/tcp_internal.h"

/* epoll events taken per epoll_wait; the rest wait for the next poll (level-triggered). */
#define EPOLL_BATCH 64
/* Connections accepted per listener wakeup, so a connect storm cannot starve the data path. */
#define ACCEPT_BUDGET 32

/* ---- event ring ------------------------------------------------------------------------- */

void ps_tcp_ev_push(struct tcp_loop *l, const struct ps_tp_qev *e)
{
	/* Full cannot happen: see the sizing argument in tcp_internal.h. */
	if (ps_tp_evq_push(&l->evq, e))
		ps_log_err(TCP_LOG, "event ring full (%u): event %d lost", l->evq.cap, e->ev.type);
}

static int ev_pop(struct tcp_loop *l, struct ps_tp_event *evs, int max)
{
	const struct ps_tp_qev *e;
	int n = 0;

	while (n < max && (e = ps_tp_evq_pop(&l->evq))) {
		evs[n++] = e->ev;
		/* Nothing is pushed from here, so *e stays intact for the call. */
		ps_tcp_conn_delivered(tcp_conn_of(e->ev.conn), e);
	}
	return n;
}

/* ---- loop ---------------------------------------------------------------------------------- */

int ps_tcp_loop_create(struct ps_tp_dev *dev, const struct ps_tp_loop_opts *opts,
		       struct ps_tp_loop **out)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	const struct ps_tp_loop_opts *o;
	struct tcp_loop *l;
	uint64_t cap;
	int rc = -ENOMEM;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = l->evq.wakefd = -1;
	ps_tp_loop_base_init(&l->base, dev, opts);
	o = &l->base.opts;
	l->dev = container_of(dev, struct tcp_dev, base);
	tcp_list_init(&l->conns);
	tcp_list_init(&l->hello);
	tcp_list_init(&l->txq);
	tcp_list_init(&l->starved);
	tcp_list_init(&l->listeners);
	cap = (uint64_t)o->max_conns * ((uint64_t)o->send_depth + o->recv_depth + 2);
	if (cap > UINT32_MAX)
		goto err;
	rc = ps_tp_evq_init(&l->evq, (uint32_t)cap);
	if (rc)
		goto err;
	rc = -ENOMEM;
	l->scratch = calloc(IOV_MAX, sizeof(*l->scratch));
	l->pack = malloc(TCP_PACK_BYTES);
	if (!l->scratch || !l->pack)
		goto err;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		goto err_errno;
	/* data.ptr NULL marks the eventfd: it only makes the fd readable, poll ignores it. */
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evq.wakefd, &ev))
		goto err_errno;
	*out = &l->base;
	return 0;

err_errno:
	rc = -errno;
err:
	if (l->epfd >= 0)
		close(l->epfd);
	free(l->scratch);
	free(l->pack);
	ps_tp_evq_fini(&l->evq);
	ps_tp_loop_base_fini(&l->base);
	free(l);
	return rc;
}

void ps_tcp_loop_destroy(struct ps_tp_loop *loop)
{
	struct tcp_loop *l = tcp_loop_of(loop);

	l->evq.count = 0; /* every event goes; no need to purge them one connection at a time */
	while (!tcp_list_empty(&l->conns))
		ps_tcp_conn_free(container_of(l->conns.next, struct tcp_conn, link));
	while (!tcp_list_empty(&l->listeners))
		ps_tcp_listener_close(
			&container_of(l->listeners.next, struct tcp_listener, link)->base);
	close(l->epfd);
	free(l->scratch);
	free(l->pack);
	ps_tp_evq_fini(&l->evq);
	ps_tp_loop_base_fini(&l->base);
	free(l);
}

int ps_tcp_loop_fd(struct ps_tp_loop *loop)
{
	return container_of(loop, const struct tcp_loop, base)->epfd;
}

void ps_tcp_conn_want_out(struct tcp_conn *c, bool on)
{
	struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = &c->ep};

	if (c->epollout == on || c->fd < 0)
		return;
	if (!epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev))
		c->epollout = on;
}

/* ---- listeners and accept ----------------------------------------------------------------- */

int ps_tcp_listen(struct ps_tp_loop *loop, const char *host, uint16_t port,
		  struct ps_tp_listener **out)
{
	struct tcp_loop *l = tcp_loop_of(loop);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
	struct epoll_event ev = {.events = EPOLLIN};
	struct addrinfo *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct tcp_listener *lst;
	char svc[8];
	int fd = -1, one = 1, rc;

	hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
	if (!*host) {
		/* Every IPv4 address, as the control plane does for an empty host. */
		hints.ai_family = AF_INET;
		host = NULL;
	}
	snprintf(svc, sizeof(svc), "%u", port);
	rc = getaddrinfo(host, svc, &hints, &res);
	if (rc) {
		ps_log_warn(TCP_LOG, "listen on %s: %s", host ? host : "*", gai_strerror(rc));
		return rc == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
	}
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (!setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) &&
		    !bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, SOMAXCONN))
			break;
		rc = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return rc;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl)) {
		rc = -errno;
		goto err_close;
	}
	lst = calloc(1, sizeof(*lst));
	if (!lst) {
		rc = -ENOMEM;
		goto err_close;
	}
	lst->base.loop = loop;
	lst->ep.kind = TCP_EP_LISTENER;
	lst->fd = fd;
	lst->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	ev.data.ptr = &lst->ep;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev)) {
		rc = -errno;
		free(lst);
		goto err_close;
	}
	tcp_list_add_tail(&l->listeners, &lst->link);
	*out = &lst->base;
	return 0;

err_close:
	close(fd);
	return rc;
}

uint16_t ps_tcp_listener_port(const struct ps_tp_listener *l)
{
	return container_of(l, const struct tcp_listener, base)->port;
}

void ps_tcp_listener_close(struct ps_tp_listener *base)
{
	struct tcp_listener *lst = container_of(base, struct tcp_listener, base);

	tcp_list_del(&lst->link);
	epoll_ctl(tcp_loop_of(base->loop)->epfd, EPOLL_CTL_DEL, lst->fd, NULL);
	close(lst->fd);
	free(lst);
}

/*
 * A new inbound socket: send our hello at once (the peer's ps_tp_connect waits for it) and
 * wait, without blocking, for the peer's; the caller hears of the connection (ACCEPT) only
 * when that has arrived and checked out.
 */
static void accept_one(struct tcp_loop *l, int fd)
{
	uint8_t hello[TCP_HELLO_LEN];
	struct tcp_conn *c;
	char peer[sizeof(c->base.peer)];
	int one = 1, rc;

	ps_tcp_peer_name(fd, peer, sizeof(peer));
	if (l->nconns >= l->base.opts.max_conns) {
		ps_log_warn(TCP_LOG, "%s: refused: the loop holds max_conns (%u) connections", peer,
			    l->base.opts.max_conns);
		goto err_close;
	}
	rc = ps_tcp_conn_alloc(l, &c);
	if (rc) {
		ps_log_warn(TCP_LOG, "%s: refused: %s", peer, ps_strerror(rc));
		goto err_close;
	}
	memcpy(c->base.peer, peer, sizeof(peer));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A new socket's send buffer always has room for 16 bytes; anything else is a failure. */
	ps_tcp_hello_fill(l, hello);
	if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof(hello)) {
		ps_log_debug(TCP_LOG, "%s: hello not sent: %s", peer, strerror(errno));
		goto err_free;
	}
	rc = ps_tcp_conn_attach(c, fd, TCP_CONN_HELLO);
	if (rc) {
		ps_log_warn(TCP_LOG, "%s: refused: %s", peer, ps_strerror(rc));
		goto err_free;
	}
	return;

err_free:
	ps_tcp_conn_free(c);
err_close:
	close(fd);
}

static void accept_all(struct tcp_loop *l, struct tcp_listener *lst)
{
	for (int i = 0; i < ACCEPT_BUDGET; i++) {
		int fd = accept4(lst->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			accept_one(l, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		/* EMFILE and the like repeat on every poll while they last: say so once a second. */
		if (errno != EAGAIN && errno != EWOULDBLOCK &&
		    ps_clock_now_ns() - lst->warned_ns > PS_NSEC_PER_SEC) {
			lst->warned_ns = ps_clock_now_ns();
			ps_log_warn(TCP_LOG, "accept on port %u: %s", lst->port, strerror(errno));
		}
		return;
	}
}

/* Drop accepted connections whose hello is overdue; the wait is cut to the next deadline. */
static int hello_expire(struct tcp_loop *l, int timeout_ms)
{
	uint64_t now = ps_clock_now_ns();
	int left;

	while (!tcp_list_empty(&l->hello)) {
		struct tcp_conn *c = container_of(l->hello.next, struct tcp_conn, hello_link);

		if (c->hello_deadline_ns > now) {
			left = ps_clock_remaining_ms(c->hello_deadline_ns);
			return left < timeout_ms ? left : timeout_ms;
		}
		ps_log_warn(TCP_LOG, "%s: no hello within %u ms: dropped", c->base.peer,
			    l->base.opts.connect_timeout_ms);
		ps_tcp_conn_free(c);
	}
	return timeout_ms;
}

/* ---- connect ----------------------------------------------------------------------------- */

static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int n;

	for (;;) {
		n = poll(&p, 1, ps_clock_remaining_ms(deadline));
		if (n > 0)
			return 0; /* ready, or an error the next call will report */
		if (n == 0)
			return PS_ETIMEOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Move exactly @len bytes of the handshake by @deadline (the socket is nonblocking). */
static int xfer_all(int fd, uint8_t *buf, size_t len, bool out, uint64_t deadline)
{
	size_t done = 0;
	ssize_t n;
	int rc;

	while (done < len) {
		n = out ? send(fd, buf + done, len - done, MSG_NOSIGNAL)
			: recv(fd, buf + done, len - done, 0);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return PS_EPEER_LOST; /* the peer closed: it refused us (full, bad hello) */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == ECONNRESET || errno == EPIPE ? PS_EPEER_LOST : -errno;
		rc = wait_fd(fd, out ? POLLOUT : POLLIN, deadline);
		if (rc)
			return rc;
	}
	return 0;
}

static int connect_one(const struct addrinfo *ai, uint64_t deadline, int *out)
{
	socklen_t sl = sizeof(int);
	int fd, soerr = 0, rc;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto err;
		}
		rc = wait_fd(fd, POLLOUT, deadline);
		if (rc)
			goto err;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl)) {
			rc = -errno;
			goto err;
		}
		if (soerr) {
			rc = -soerr;
			goto err;
		}
	}
	*out = fd;
	return 0;

err:
	close(fd);
	return rc;
}

static int dial(const char *host, uint16_t port, uint64_t deadline, int *out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
	struct addrinfo *res, *ai;
	char svc[8];
	int rc;

	hints.ai_flags = AI_NUMERICSERV;
	snprintf(svc, sizeof(svc), "%u", port);
	rc = getaddrinfo(host, svc, &hints, &res);
	if (rc) {
		ps_log_warn(TCP_LOG, "%s: %s", host, gai_strerror(rc));
		return rc == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
	}
	/* Every address in turn ("localhost" may be ::1 first while we listen on 127.0.0.1). */
	rc = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		rc = connect_one(ai, deadline, out);
		if (!rc || rc == PS_ETIMEOUT)
			break;
	}
	freeaddrinfo(res);
	return rc;
}

int ps_tcp_connect(struct ps_tp_loop *loop, const char *host, uint16_t port, void *user,
		   struct ps_tp_conn **out)
{
	struct tcp_loop *l = tcp_loop_of(loop);
	uint64_t deadline = ps_clock_deadline_ms(loop->opts.connect_timeout_ms);
	struct tcp_conn *c;
	int fd = -1, one = 1, rc;

	if (l->nconns >= loop->opts.max_conns)
		return -ENOSPC;
	/* Buffers first: failing for memory must not leave a half-open connection behind. */
	rc = ps_tcp_conn_alloc(l, &c);
	if (rc)
		return rc;
	rc = dial(host, port, deadline, &fd);
	if (rc)
		goto err_free;
	ps_tcp_peer_name(fd, c->base.peer, sizeof(c->base.peer));
	/* Small messages (requests, completions) must not wait for Nagle. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		rc = -errno;
		goto err_close;
	}
	ps_tcp_hello_fill(l, c->rx_raw);
	rc = xfer_all(fd, c->rx_raw, TCP_HELLO_LEN, true, deadline);
	if (!rc)
		rc = xfer_all(fd, c->rx_raw, TCP_HELLO_LEN, false, deadline);
	if (!rc)
		rc = ps_tcp_hello_take(c);
	if (rc)
		goto err_close;
	rc = ps_tcp_conn_attach(c, fd, TCP_CONN_OPEN);
	if (rc)
		goto err_close;
	c->base.user = user;
	*out = &c->base;
	return 0;

err_close:
	close(fd);
err_free:
	ps_tcp_conn_free(c);
	return rc;
}

/* ---- flush and poll ------------------------------------------------------------------------ */

static void flush_all(struct tcp_loop *l)
{
	struct tcp_list *n, *next;

	/* A flush takes only its own connection off the list, so the saved next stays valid. */
	for (n = l->txq.next; n != &l->txq; n = next) {
		next = n->next;
		ps_tcp_conn_flush(container_of(n, struct tcp_conn, tx_link));
	}
}

int ps_tcp_flush(struct ps_tp_loop *loop)
{
	struct tcp_loop *l = tcp_loop_of(loop);

	flush_all(l);
	ps_tp_evq_wake_sync(&l->evq);
	return 0;
}

/* Take every starved connection that can take its op now off the list; was there one? */
static bool starved_fed(struct tcp_loop *l)
{
	struct tcp_list *n, *next;
	bool fed = false;

	for (n = l->starved.next; n != &l->starved; n = next) {
		struct tcp_conn *c = container_of(n, struct tcp_conn, starved_link);

		next = n->next;
		if (ps_tcp_conn_fed(c)) {
			tcp_list_del(&c->starved_link);
			fed = true;
		}
	}
	return fed;
}

int ps_tcp_poll(struct ps_tp_loop *loop, struct ps_tp_event *evs, int max, int timeout_ms)
{
	struct tcp_loop *l = tcp_loop_of(loop);
	struct epoll_event epevs[EPOLL_BATCH];
	int n, cnt;

	flush_all(l);
	if (l->evq.count || starved_fed(l))
		timeout_ms = 0;
	timeout_ms = hello_expire(l, timeout_ms);
	n = epoll_wait(l->epfd, epevs, EPOLL_BATCH, timeout_ms);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		struct tcp_ep *ep = epevs[i].data.ptr;

		if (!ep)
			continue; /* the eventfd */
		if (ep->kind == TCP_EP_LISTENER)
			accept_all(l, container_of(ep, struct tcp_listener, ep));
		else
			ps_tcp_conn_io(container_of(ep, struct tcp_conn, ep), epevs[i].events);
	}
	cnt = ev_pop(l, evs, max);
	ps_tp_evq_wake_sync(&l->evq);
	return cnt;
}
