/*
 * The scheduler's service thread: one level-triggered epoll loop over the listening socket, a
 * signalfd for SIGINT/SIGTERM, and every control connection.
 *
 * A connection that sends something malformed (garbage, an oversized length, a frame cut
 * short, another protocol version) is closed and logged at warn with its address; nothing else
 * is affected. Replies are queued per connection and written when the socket allows, so a peer
 * that stops reading can stall only itself (and is dropped past SCHED_OUT_MAX).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "scheduler/sched_internal.h"

#define MAX_EVENTS 64

/* epoll tags for the descriptors that are not connections. */
static char tag_listen, tag_signal, tag_call;

static int conn_set_events(struct ps_sched *s, struct sched_conn *c)
{
	struct epoll_event ev = {.data.ptr = c};

	ev.events = (c->closing ? 0 : EPOLLIN) | (c->out_len > c->out_off ? EPOLLOUT : 0);
	if (ev.events == c->events)
		return 0;
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev))
		return -errno;
	c->events = ev.events;
	return 0;
}

static void conn_destroy(struct ps_sched *s, struct sched_conn *c, const char *why)
{
	ps_sched_conn_lost(s, c, why);
	ps_sched_sync_conn_lost(s, c);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	s->nconns--;
	ps_ctl_reader_fini(&c->rd);
	free(c->out);
	free(c);
}

/* Write queued bytes until done or EAGAIN. Marks @c dead when the peer is gone. */
static void conn_flush(struct ps_sched *s, struct sched_conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		c->dead = true;
		return;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->closing)
			c->dead = true;
	}
	if (!c->dead && conn_set_events(s, c))
		c->dead = true;
}

void ps_sched_conn_send(struct ps_sched *s, struct sched_conn *c, const ps_ctl_env_t *env)
{
	uint8_t *frame;
	size_t len, need;

	if (c->dead)
		return;
	if (ps_ctl_encode(env, &frame, &len)) {
		ps_log_err(SCHED_LOG, "cannot encode a %s reply to %s", ps_ctl_body_name(env),
			   c->peer);
		c->dead = true;
		return;
	}
	need = c->out_len - c->out_off + len;
	if (need > SCHED_OUT_MAX) {
		ps_log_warn(SCHED_LOG, "%s is not reading its replies (%zu bytes queued); closing",
			    c->peer, need);
		free(frame);
		c->dead = true;
		return;
	}
	if (c->out_len + len > c->out_cap) {
		/* Compact first: the queue is usually empty or nearly so. */
		if (c->out_off) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		if (c->out_len + len > c->out_cap) {
			size_t cap = c->out_cap ? c->out_cap : 1024;
			uint8_t *p;

			while (cap < c->out_len + len)
				cap *= 2;
			p = realloc(c->out, cap);
			if (!p) {
				free(frame);
				c->dead = true;
				return;
			}
			c->out = p;
			c->out_cap = cap;
		}
	}
	memcpy(c->out + c->out_len, frame, len);
	c->out_len += len;
	free(frame);
	conn_flush(s, c);
}

void ps_sched_conn_close_after(struct ps_sched *s, struct sched_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->closing_ns = ps_clock_now_ns();
	conn_flush(s, c);
}

static void conn_accept(struct ps_sched *s)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct sched_conn *c;
	char host[INET6_ADDRSTRLEN];
	uint16_t port = 0;
	int fd;

	for (;;) {
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
			    errno == ENOBUFS) {
				/* Level-triggered: leaving it armed would spin until an fd frees. */
				ps_log_warn(SCHED_LOG, "accept: %s; pausing new connections",
					    strerror(errno));
				epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
				s->listen_paused = true;
			}
			return;
		}
		if (s->nconns >= s->max_conns) {
			ps_log_warn(SCHED_LOG, "%u connections open; refusing another", s->nconns);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->id = ++s->next_conn_id;
		c->server_id = -1;
		c->accepted_ns = ps_clock_now_ns();
		ps_ctl_reader_init(&c->rd, SCHED_HANDSHAKE_FRAME_MAX);
		if (ps_ctl_sock_name(fd, true, host, sizeof(host), &port))
			snprintf(host, sizeof(host), "?");
		ps_ctl_addr_format(host, port, c->peer, sizeof(c->peer));
		ps_ctl_set_nodelay(fd);
		ev.data.ptr = c;
		if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev)) {
			ps_log_warn(SCHED_LOG, "epoll_ctl for %s: %s", c->peer, strerror(errno));
			close(fd);
			free(c);
			continue;
		}
		c->events = EPOLLIN;
		c->next = &s->conns;
		c->prev = s->conns.prev;
		s->conns.prev->next = c;
		s->conns.prev = c;
		s->nconns++;
		ps_log_debug(SCHED_LOG, "connection from %s", c->peer);
	}
}

/* Frames until EAGAIN, an error, or a reply that ends the conversation. */
static void conn_read(struct ps_sched *s, struct sched_conn *c)
{
	ps_ctl_env_t *env;
	int rc;

	while (!c->closing && !c->dead) {
		rc = ps_ctl_reader_read_fd(&c->rd, c->fd, &env);
		if (rc == 0)
			return;
		if (rc == 1) {
			if (!c->greeted) {
				/* Past the handshake: full-size frames from now on. */
				c->greeted = true;
				c->rd.max_frame = PS_CTL_FRAME_MAX;
			}
			ps_log_debug(SCHED_LOG, "%s from %s", ps_ctl_body_name(env), c->peer);
			ps_sched_handle(s, c, env);
			ps_ctl_env_free(env);
			continue;
		}
		if (rc == PS_EPEER_LOST) {
			ps_log_debug(SCHED_LOG, "%s closed the connection", c->peer);
			c->dead = true;
			return;
		}
		ps_log_warn(SCHED_LOG, "bad frame from %s: %s (%s); closing the connection",
			    c->peer, c->rd.why, ps_err_name(rc));
		if (rc == PS_EPROTO_VERSION) {
			/* A peer of another version deserves to be told why. */
			Psplus__Ctl__Status st = PSPLUS__CTL__STATUS__INIT;
			ps_ctl_env_t out;

			ps_ctl_env_init(&out, 0);
			st.code = rc;
			st.message = c->rd.why;
			out.body_case = PSPLUS__CTL__ENVELOPE__BODY_STATUS;
			out.status = &st;
			ps_sched_conn_send(s, c, &out);
			ps_sched_conn_close_after(s, c);
		} else {
			c->dead = true;
		}
		return;
	}
}

static void conn_event(struct ps_sched *s, struct sched_conn *c, uint32_t events)
{
	if (events & EPOLLOUT)
		conn_flush(s, c);
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->closing)
		conn_read(s, c);
	else if (events & (EPOLLHUP | EPOLLERR))
		c->dead = true; /* closing, and the peer is gone: nothing left to deliver */
	if (c->dead)
		conn_destroy(s, c, "closed");
}

/* Periodic: handshake and linger timeouts, revoked registrations, paused accept. */
static void sweep(struct ps_sched *s)
{
	uint64_t now = ps_clock_now_ns();
	uint64_t handshake_ns = (uint64_t)s->opts->liveness_timeout_ms * PS_NSEC_PER_MSEC;
	struct sched_conn *c, *next;

	for (c = s->conns.next; c != &s->conns; c = next) {
		next = c->next;
		if (!c->greeted && !c->closing && now - c->accepted_ns > handshake_ns) {
			ps_log_warn(SCHED_LOG,
				    "%s sent no complete message within %u ms%s; closing", c->peer,
				    s->opts->liveness_timeout_ms,
				    ps_ctl_reader_mid_frame(&c->rd) ? " (stuck mid-frame)" : "");
			c->dead = true;
		} else if (c->closing && now - c->closing_ns > SCHED_LINGER_MS * PS_NSEC_PER_MSEC) {
			c->dead = true;
		} else {
			ps_sched_conn_check_revoked(s, c);
		}
		if (c->dead)
			conn_destroy(s, c, "closed");
	}
	if (s->listen_paused) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};

		if (!epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev))
			s->listen_paused = false;
	}
}

/* Tell every live server to exit, give the messages a bounded time to leave, close all. */
static void shutdown_conns(struct ps_sched *s, const char *signame)
{
	Psplus__Ctl__Shutdown sd = PSPLUS__CTL__SHUTDOWN__INIT;
	uint64_t deadline = ps_clock_deadline_ms(SCHED_LINGER_MS);
	struct epoll_event evs[MAX_EVENTS];
	struct sched_conn *c, *next;
	char reason[96];
	ps_ctl_env_t env;
	uint32_t told = 0;
	int n;

	/* Pending accepts or a second signal would make every epoll_wait below return at once. */
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->signal_fd, NULL);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->call_fd, NULL);
	snprintf(reason, sizeof(reason), "scheduler shutting down (%s)", signame);
	sd.reason = reason;
	for (c = s->conns.next; c != &s->conns; c = next) {
		next = c->next;
		if (c->server_id >= 0 && !c->closing) {
			ps_ctl_env_init(&env, ++s->next_request_id);
			env.body_case = PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN;
			env.shutdown = &sd;
			ps_sched_conn_send(s, c, &env);
			told++;
		}
		ps_sched_conn_close_after(s, c);
		if (c->dead)
			conn_destroy(s, c, "closed");
	}
	ps_log_info(SCHED_LOG, "shutting down on %s: told %u live servers to exit", signame, told);
	/* Only connections with unsent bytes remain; each closes once drained. */
	while (s->conns.next != &s->conns && ps_clock_remaining_ms(deadline) > 0) {
		n = epoll_wait(s->epoll_fd, evs, MAX_EVENTS, ps_clock_remaining_ms(deadline));
		for (int i = 0; i < n; i++)
			if (evs[i].data.ptr != &tag_listen && evs[i].data.ptr != &tag_signal &&
			    evs[i].data.ptr != &tag_call)
				conn_event(s, evs[i].data.ptr, evs[i].events);
	}
	while (s->conns.next != &s->conns)
		conn_destroy(s, s->conns.next, "closed");
}

int ps_sched_service_run(struct ps_sched *s)
{
	struct epoll_event ev, evs[MAX_EVENTS];
	uint64_t sweep_ns = (uint64_t)s->opts->liveness_timeout_ms * PS_NSEC_PER_MSEC / 10;
	uint64_t next_sweep;
	struct signalfd_siginfo si;
	char signame[32];
	int n, signo = 0, rc = 0;

	s->conns.next = s->conns.prev = &s->conns;
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &tag_listen};
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev))
		return -errno;
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &tag_signal};
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->signal_fd, &ev))
		return -errno;
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &tag_call};
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->call_fd, &ev))
		return -errno;
	if (sweep_ns < 10 * PS_NSEC_PER_MSEC)
		sweep_ns = 10 * PS_NSEC_PER_MSEC;
	if (sweep_ns > 500 * PS_NSEC_PER_MSEC)
		sweep_ns = 500 * PS_NSEC_PER_MSEC;
	next_sweep = ps_clock_now_ns() + sweep_ns;
	while (!signo && !rc) {
		n = epoll_wait(s->epoll_fd, evs, MAX_EVENTS, ps_clock_remaining_ms(next_sweep));
		if (n < 0 && errno != EINTR) {
			/* Not expected; still close every connection on the way out. */
			rc = -errno;
			ps_log_err(SCHED_LOG, "epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == &tag_signal) {
				if (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
					signo = (int)si.ssi_signo;
			} else if (evs[i].data.ptr == &tag_listen) {
				conn_accept(s);
			} else if (evs[i].data.ptr == &tag_call) {
				/* The main loop asks for something only this thread may do. */
				ps_sched_service_calls_run(s);
			} else {
				/* Each fd appears once per batch, so destroying c here is safe. */
				conn_event(s, evs[i].data.ptr, evs[i].events);
			}
		}
		if (ps_clock_now_ns() >= next_sweep) {
			sweep(s);
			next_sweep = ps_clock_now_ns() + sweep_ns;
		}
	}
	/* Registrations arriving from here on are refused with PS_ESHUTDOWN. */
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	/* The main loop's calls from now on fail: it sees stopping and winds down. */
	ps_sched_service_calls_fail(s);
	if (signo)
		snprintf(signame, sizeof(signame), "SIG%s",
			 sigabbrev_np(signo) ? sigabbrev_np(signo) : "?");
	else
		snprintf(signame, sizeof(signame), "error");
	shutdown_conns(s, signame);
	return rc;
}
