/*
 * The scheduler role (seed: SchedulerImpl::Start and Main).
 *
 * Start, as in the seed: the main thread, the meta thread, then the service. Here the service
 * runs on the calling thread, which owns every descriptor; the main thread runs Main
 * (WaitForServers, then MainLoop); the meta thread watches liveness (sched_registry.c).
 *
 * Signals: SIGINT and SIGTERM are blocked before any thread starts (threads inherit the mask)
 * and read from a signalfd in the service loop, so no handler runs at an arbitrary point and
 * shutdown happens in one place, in order: stop accepting, tell live servers, remove the kv
 * entry, join the threads, free.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "scheduler/sched_internal.h"

/* How often WaitForServers says who is still missing. */
#define WAIT_LOG_MS 10000u

static bool host_is_any(const char *h)
{
	return !h || !*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::");
}

/* Listen on opts->host:port and work out the address to publish. */
static int sched_listen(struct ps_sched *s)
{
	const struct ps_scheduler_opts *o = s->opts;
	const char *bind_host = host_is_any(o->host) ? "" : o->host;
	int rc;

	rc = ps_ctl_listen(bind_host, o->port, &s->listen_fd);
	if (rc) {
		ps_log_err(SCHED_LOG, "cannot listen on %s:%u: %s", bind_host[0] ? bind_host : "*",
			   o->port, ps_strerror(rc));
		return rc;
	}
	rc = ps_ctl_sock_name(s->listen_fd, false, s->kv.host, sizeof(s->kv.host), &s->kv.port);
	if (rc)
		return rc;
	if (host_is_any(o->host)) {
		/* Bound to every address: publish one that other hosts can reach. */
		if (ps_ctl_default_host(s->kv.host, sizeof(s->kv.host)))
			ps_log_warn(SCHED_LOG,
				    "no non-loopback IPv4 interface is up: publishing "
				    "127.0.0.1, reachable from this host only (use --host)");
	} else {
		snprintf(s->kv.host, sizeof(s->kv.host), "%s", o->host);
	}
	s->kv.server_num = o->server_num;
	ps_ctl_addr_format(s->kv.host, s->kv.port, s->addr, sizeof(s->addr));
	return 0;
}

static void sched_destroy(struct ps_sched *s)
{
	char err[512];

	if (!s)
		return;
	if (s->kv_published && ps_kv_remove(s->opts->kv_path, &s->kv, err, sizeof(err)))
		ps_log_warn(SCHED_LOG, "%s", err);
	if (s->signal_fd >= 0) {
		struct signalfd_siginfo si;

		/* Consume signals that raced the shutdown: we are stopping anyway. */
		while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(s->signal_fd);
	}
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	if (s->call_fd >= 0)
		close(s->call_fd);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	ps_sched_sync_free(s);
	ps_sched_vars_free(s);
	for (uint32_t i = 0; s->slots && i < s->opts->server_num; i++)
		free(s->slots[i].shard_ports);
	free(s->slots);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Everything but the threads. @sigs: the signals the signalfd reports (already blocked). */
static int sched_create(const struct ps_scheduler_opts *o, const sigset_t *sigs,
			struct ps_sched **out)
{
	pthread_condattr_t ca;
	struct ps_sched *s;
	char err[512];
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = o;
	s->listen_fd = s->epoll_fd = s->signal_fd = s->call_fd = -1;
	s->starting = true;
	s->max_conns = o->server_num + SCHED_EXTRA_CONNS;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->slots = calloc(o->server_num, sizeof(*s->slots));
	if (!s->slots) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = ps_sched_random_version(&s->cluster_version);
	if (rc) {
		ps_log_err(SCHED_LOG, "getrandom: %s", ps_strerror(rc));
		goto fail;
	}
	if (o->auth_token_file) {
		rc = ps_ctl_token_load(o->auth_token_file, s->token, &s->token_len, err,
				       sizeof(err));
		if (rc) {
			ps_log_err(SCHED_LOG, "%s", err);
			goto fail;
		}
		s->auth = true;
	}
	if (strcmp(o->checkpoint_path ? o->checkpoint_path : "none://", "none://")) {
		rc = ps_ckpt_root_path(o->checkpoint_path, s->ckpt_root, sizeof(s->ckpt_root), err,
				       sizeof(err));
		if (rc) {
			ps_log_err(SCHED_LOG, "--checkpoint_path: %s", err);
			goto fail;
		}
	}
	s->signal_fd = signalfd(-1, sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	s->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->signal_fd < 0 || s->epoll_fd < 0 || s->call_fd < 0) {
		rc = -errno;
		ps_log_err(SCHED_LOG, "signalfd/epoll: %s", strerror(errno));
		goto fail;
	}
	rc = sched_listen(s);
	if (rc)
		goto fail;
	/* Last: once published, servers may connect (they wait in the backlog until served). */
	rc = ps_kv_publish(o->kv_path, &s->kv, err, sizeof(err));
	if (rc) {
		ps_log_err(SCHED_LOG, "%s", err);
		goto fail;
	}
	s->kv_published = true;
	*out = s;
	return 0;
fail:
	sched_destroy(s);
	return rc;
}

/* WaitForServers: until server_num servers are live or shutdown. Lock held. */
static bool wait_for_servers(struct ps_sched *s)
{
	uint64_t next_log = ps_clock_deadline_ms(WAIT_LOG_MS);

	while (!s->stopping && s->nlive < s->opts->server_num) {
		ps_sched_cond_wait_until(s, next_log);
		if (ps_clock_now_ns() >= next_log && !s->stopping &&
		    s->nlive < s->opts->server_num) {
			ps_log_info(SCHED_LOG, "waiting for servers: %u of %u registered", s->nlive,
				    s->opts->server_num);
			next_log = ps_clock_deadline_ms(WAIT_LOG_MS);
		}
	}
	return !s->stopping;
}

/* The main thread (seed: Main). */
static void *main_thread(void *arg)
{
	struct ps_sched *s = arg;

	bool up;

	pthread_mutex_lock(&s->lock);
	up = wait_for_servers(s);
	if (up)
		ps_log_info(SCHED_LOG, "all %u servers registered, cluster version 0x%016" PRIx64,
			    s->opts->server_num, s->cluster_version);
	pthread_mutex_unlock(&s->lock);
	/* MainLoop: the start-up restore, then one operation at a time (sched_ops.c). */
	if (up)
		ps_sched_main_loop(s);
	return NULL;
}

static void stop_threads(struct ps_sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static int check_opts(const struct ps_scheduler_opts *o)
{
	if (!o || !o->kv_path || !o->server_num || !o->heartbeat_ms ||
	    o->liveness_timeout_ms < 2 * o->heartbeat_ms) {
		ps_log_err(SCHED_LOG,
			   "invalid options: need a kv path, server_num >= 1, "
			   "heartbeat_ms >= 1 and liveness_timeout_ms >= 2 * heartbeat_ms");
		return -EINVAL;
	}
	return 0;
}

int ps_scheduler_main(const struct ps_scheduler_opts *opts)
{
	pthread_t main_tid, meta_tid;
	bool main_started = false, meta_started = false;
	struct ps_sched *s = NULL;
	sigset_t sigs;
	int rc;

	rc = check_opts(opts);
	if (rc)
		return rc;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	/* Blocked for good: see scheduler.h on why the mask is not restored. */
	rc = -pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (rc)
		return rc;
	rc = sched_create(opts, &sigs, &s);
	if (rc)
		return rc;
	ps_log_info(SCHED_LOG,
		    "scheduler listening on %s, published at %s; cluster version 0x%016" PRIx64
		    ", waiting for %u servers (heartbeat %u ms, liveness timeout %u ms%s)",
		    s->addr, opts->kv_path, s->cluster_version, opts->server_num,
		    opts->heartbeat_ms, opts->liveness_timeout_ms, s->auth ? ", auth token" : "");
	rc = -pthread_create(&main_tid, NULL, main_thread, s);
	if (rc)
		goto out_threads;
	main_started = true;
	rc = -pthread_create(&meta_tid, NULL, ps_sched_meta_thread, s);
	if (rc)
		goto out_threads;
	meta_started = true;
	rc = ps_sched_service_run(s);
out_threads:
	if (rc)
		ps_log_err(SCHED_LOG, "scheduler failed: %s", ps_strerror(rc));
	stop_threads(s);
	if (meta_started)
		pthread_join(meta_tid, NULL);
	if (main_started)
		pthread_join(main_tid, NULL);
	sched_destroy(s);
	if (!rc)
		ps_log_info(SCHED_LOG, "scheduler stopped");
	return rc;
}
