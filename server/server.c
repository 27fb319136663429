/*
 * The server role (seed: ServerRun + ServerService::Init).
 *
 * Start-up: block SIGINT/SIGTERM and read them from a signalfd (so every wait below can be
 * cut short by one), start the data plane (server/dp.h: one transport dev, --threads data-path
 * threads each listening on its own port) so the advertised ports are real before anyone
 * learns them, log what we run with, then the control cycle: register (with every thread's
 * port), heartbeat with live stats, and on a lost connection re-read the kv entry and register
 * again for up to kv_wait_ms. The data plane keeps serving while the control connection is
 * re-established; it stops when the server does.
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

/* "41000,41001,..." */
static void fmt_ports(const struct ps_srv *s, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (uint32_t i = 0; i < ps_dp_threads(s->dp) && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%u", i ? "," : "",
					ps_dp_port(s->dp, i));
}

/* The facts an operator needs first when a server misbehaves. */
static void log_start(const struct ps_srv *s)
{
	const struct ps_server_opts *o = s->opts;
	char listen[PS_CTL_ADDR_STRLEN], dev[256], ports[1600], soft[32], hard[32];
	struct ps_tp_dev_info di;
	struct rlimit rl;

	ps_ctl_addr_format(o->host && *o->host ? o->host : "0.0.0.0", s->data_port, listen,
			   sizeof(listen));
	ps_dp_dev_info(s->dp, &di);
	if (di.kind == PS_TP_KIND_RDMA)
		snprintf(dev, sizeof(dev),
			 "rdma device %s port %u%s%s, GID %s, MTU %u, max_sge %u, NUMA node %d",
			 di.name, di.port, di.netdev[0] ? " netdev " : "", di.netdev, di.gid,
			 di.active_mtu, di.max_sge, di.numa_node);
	else
		snprintf(dev, sizeof(dev), "tcp (no RDMA device in use)");
	fmt_ports(s, ports, sizeof(ports));
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
		fmt_limit(rl.rlim_cur, soft, sizeof(soft));
		fmt_limit(rl.rlim_max, hard, sizeof(hard));
	} else {
		snprintf(soft, sizeof(soft), "unknown");
		snprintf(hard, sizeof(hard), "unknown");
	}
	ps_log_info(SRV_LOG,
		    "server %u starting: transport %s requested, data-plane listener %s (%u "
		    "threads, ports %s), using %s; memlock limit %s (hard %s), bind_cores %s, "
		    "kv %s%s",
		    o->server_id, o->transport, listen, ps_dp_threads(s->dp), ports, dev, soft,
		    hard,
		    o->bind_cores ? "True (memory and data-path threads on the device's node)"
				  : "False",
		    o->kv_path, s->auth ? ", auth token" : "");
	if (di.kind == PS_TP_KIND_RDMA && !(o->host && *o->host))
		ps_log_warn(SRV_LOG,
			    "server %u: rdma without --host: using the first active device, which "
			    "may not own the address advertised to workers; pass --host",
			    o->server_id);
}

static void srv_destroy(struct ps_srv *s)
{
	struct signalfd_siginfo si;

	if (!s)
		return;
	ps_srv_disconnect(s);
	ps_srv_ckpt_destroy(s);
	ps_dp_destroy(s->dp);
	if (s->sig_fd >= 0) {
		/* Consume signals that raced the shutdown: we are stopping anyway. */
		while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(s->sig_fd);
	}
	free(s);
}

/*
 * Host for the data plane: --host names the address to listen on and, for rdma, the device
 * that owns it; "", "0.0.0.0" and "::" listen on every address (and rdma takes the first
 * active device).
 */
static const char *specific_host(const char *h)
{
	return h && *h && strcmp(h, "0.0.0.0") && strcmp(h, "::") ? h : NULL;
}

static int srv_create(const struct ps_server_opts *o, const sigset_t *sigs, struct ps_srv **out)
{
	struct ps_dp_opts dpo = {0};
	struct ps_srv *s;
	char err[512];
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = o;
	s->sig_fd = s->ctl_fd = -1;
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
	dpo.transport = o->transport;
	dpo.bind_addr = specific_host(o->host);
	dpo.host = specific_host(o->host);
	dpo.port = o->port;
	dpo.threads = o->threads ? o->threads : 1;
	dpo.numa_node = -1;
	dpo.numa_dev = o->bind_cores;
	rc = ps_dp_create(&dpo, &s->dp);
	if (rc) {
		ps_log_err(SRV_LOG, "server %u: cannot start the data plane on %s:%u: %s",
			   o->server_id, dpo.host ? dpo.host : "*", o->port, ps_strerror(rc));
		goto fail;
	}
	s->data_port = ps_dp_port(s->dp, 0);
	rc = ps_srv_ckpt_create(s);
	if (rc)
		goto fail;
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
		ps_srv_ckpt_reset(s, "the scheduler connection ended");
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
