/*
 * The server role (seed: ServerRun + ServerService::Init).
 *
 * Start-up: block SIGINT/SIGTERM and read them from a signalfd (so every wait below can be
 * cut short by one), open the data-plane listening socket so the advertised port is real, log
 * what we run with, then the control cycle: register, heartbeat, and on a lost connection
 * re-read the kv entry and register again for up to kv_wait_ms.
 *
 * The data plane itself (transport, storage, request handling) is not in this build: the
 * listener only reserves the port and accepts nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/log.h"
#include "server/server_internal.h"

static void fmt_limit(rlim_t v, char *buf, size_t len)
{
	if (v == RLIM_INFINITY)
		snprintf(buf, len, "unlimited");
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)v / 1024);
}

/* The facts an operator needs first when a server misbehaves. */
static void log_start(const struct ps_srv *s)
{
	const struct ps_server_opts *o = s->opts;
	char listen[PS_CTL_ADDR_STRLEN], soft[32], hard[32];
	struct rlimit rl;

	ps_ctl_addr_format(o->host && *o->host ? o->host : "0.0.0.0", s->data_port, listen,
			   sizeof(listen));
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
		fmt_limit(rl.rlim_cur, soft, sizeof(soft));
		fmt_limit(rl.rlim_max, hard, sizeof(hard));
	} else {
		snprintf(soft, sizeof(soft), "unknown");
		snprintf(hard, sizeof(hard), "unknown");
	}
	ps_log_info(SRV_LOG,
		    "server %u starting: transport %s requested, data-plane listener %s "
		    "(placeholder, no request handling yet), memlock limit %s (hard %s), "
		    "%u threads, bind_cores %s, kv %s%s",
		    o->server_id, o->transport, listen, soft, hard, o->threads,
		    o->bind_cores ? "True" : "False", o->kv_path, s->auth ? ", auth token" : "");
}

static void srv_destroy(struct ps_srv *s)
{
	struct signalfd_siginfo si;

	if (!s)
		return;
	ps_srv_disconnect(s);
	if (s->data_fd >= 0)
		close(s->data_fd);
	if (s->sig_fd >= 0) {
		/* Consume signals that raced the shutdown: we are stopping anyway. */
		while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(s->sig_fd);
	}
	free(s);
}

static int srv_create(const struct ps_server_opts *o, const sigset_t *sigs, struct ps_srv **out)
{
	const char *bind_host = o->host && strcmp(o->host, "0.0.0.0") ? o->host : "";
	struct ps_srv *s;
	char err[512];
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = o;
	s->sig_fd = s->data_fd = s->ctl_fd = -1;
	ps_ctl_reader_init(&s->rd, 0);
	if (o->auth_token_file) {
		rc = ps_ctl_token_load(o->auth_token_file, s->token, &s->token_len, err,
				       sizeof(err));
		if (rc) {
			ps_log_err(SRV_LOG, "%s", err);
			goto fail;
		}
		s->auth = true;
	}
	s->sig_fd = signalfd(-1, sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->sig_fd < 0) {
		rc = -errno;
		ps_log_err(SRV_LOG, "signalfd: %s", strerror(errno));
		goto fail;
	}
	rc = ps_ctl_listen(bind_host, o->port, &s->data_fd);
	if (!rc)
		rc = ps_ctl_sock_name(s->data_fd, false, err, sizeof(err), &s->data_port);
	if (rc) {
		ps_log_err(SRV_LOG, "server %u: cannot listen on %s:%u for the data plane: %s",
			   o->server_id, bind_host[0] ? bind_host : "*", o->port, ps_strerror(rc));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	srv_destroy(s);
	return rc;
}

static int check_opts(const struct ps_server_opts *o)
{
	if (!o || !o->kv_path || !o->transport) {
		ps_log_err(SRV_LOG, "invalid options: need a kv path and a transport");
		return -EINVAL;
	}
	return 0;
}

int ps_server_main(const struct ps_server_opts *opts)
{
	struct ps_srv *s = NULL;
	sigset_t sigs;
	bool first = true;
	int rc;

	rc = check_opts(opts);
	if (rc)
		return rc;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	/* Blocked for good: see server.h on why the mask is not restored. */
	rc = -pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (rc)
		return rc;
	rc = srv_create(opts, &sigs, &s);
	if (rc)
		return rc;
	log_start(s);
	for (;;) {
		rc = ps_srv_connect_register(s, first);
		if (rc)
			break;
		first = false;
		rc = ps_srv_heartbeat_loop(s);
		ps_srv_disconnect(s);
		if (rc != PS_EPEER_LOST)
			break;
		ps_log_warn(SRV_LOG,
			    "server %u: re-reading the kv entry and registering again "
			    "(up to %u ms)",
			    opts->server_id, opts->kv_wait_ms);
	}
	/* A signal, or the scheduler's word: both are a clean end. */
	if (rc == PS_ESHUTDOWN)
		rc = 0;
	if (!rc)
		ps_log_info(SRV_LOG, "server %u stopped", opts->server_id);
	srv_destroy(s);
	return rc;
}
