/*
 * The server's control session: kv lookup, connect, Register (with the data-path threads'
 * ports), then Heartbeat every heartbeat_ms with live stats (requests served, transport bytes,
 * NIC counters, memory) until the scheduler or a signal says stop. The cluster version it
 * learns is handed to the data plane, which fences requests with it.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <psplus/error.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/server_internal.h"

/* Whether a registration refusal can go away by itself on a retry. */
static bool refusal_transient(int status, bool first)
{
	return status == PS_EDUP_SERVER_ID && !first;
}

/*
 * Whether a failed registration is worth retrying: the connection failing is (the scheduler
 * may be restarting); the scheduler's considered refusal is not, except refusal_transient().
 */
static bool retryable(int rc, bool first)
{
	if (rc == PS_EPEER_LOST || rc == PS_ETIMEOUT || refusal_transient(rc, first))
		return true;
	return rc > PS_ERR_BASE && rc != -EACCES;
}

void ps_srv_disconnect(struct ps_srv *s)
{
	if (s->ctl_fd >= 0)
		close(s->ctl_fd);
	s->ctl_fd = -1;
	ps_ctl_reader_fini(&s->rd);
}

/* Resident memory from /proc/self/statm (second field, in pages); 0 if unreadable. */
static uint64_t mem_in_use(void)
{
	unsigned long long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	long page = sysconf(_SC_PAGESIZE);

	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
}

/* The address to advertise: --host if it names one, else how the scheduler sees us. */
static int advertised_host(struct ps_srv *s, int fd, char *host, size_t hostlen)
{
	const char *h = s->opts->host;

	if (h && *h && strcmp(h, "0.0.0.0") && strcmp(h, "::")) {
		snprintf(host, hostlen, "%s", h);
		return 0;
	}
	/* The local end of the control connection is an address on the scheduler's route. */
	return ps_ctl_sock_name(fd, false, host, hostlen, NULL);
}

/* One Register round trip on a connected @fd. 0 or the scheduler's (or transport's) error. */
static int do_register(struct ps_srv *s, int fd, bool first)
{
	Psplus__Ctl__RegisterReq rq = PSPLUS__CTL__REGISTER_REQ__INIT;
	Psplus__Ctl__Address addr = PSPLUS__CTL__ADDRESS__INIT;
	const Psplus__Ctl__RegisterResp *rr;
	char host[PS_URL_HOST_MAX], why[200];
	uint32_t ports[256], nports = ps_dp_threads(s->dp);
	ps_ctl_env_t env, *in = NULL;
	int rc, status;

	rc = advertised_host(s, fd, host, sizeof(host));
	if (rc)
		return rc;
	ps_ctl_addr_format(host, s->data_port, s->data_addr, sizeof(s->data_addr));
	addr.host = host;
	addr.port = s->data_port;
	rq.server_id = s->opts->server_id;
	rq.data_addr = &addr;
	for (uint32_t i = 0; i < nports && i < 256; i++)
		ports[i] = ps_dp_port(s->dp, i);
	rq.n_shard_ports = nports < 256 ? nports : 256;
	rq.shard_ports = ports;
	rq.msg_size = ps_dp_msg_size(s->dp);
	rq.transport = (char *)s->opts->transport;
	rq.auth_token.data = s->token;
	rq.auth_token.len = s->auth ? s->token_len : 0;
	ps_ctl_env_init(&env, ++s->next_request_id);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_REGISTER_REQ;
	env.register_req = &rq;
	rc = ps_ctl_send(fd, &env, SRV_REGISTER_TIMEOUT_MS, s->sig_fd);
	if (!rc)
		rc = ps_ctl_recv(fd, SRV_REGISTER_TIMEOUT_MS, s->sig_fd, &in, why, sizeof(why));
	if (rc) {
		if (rc != PS_ESHUTDOWN)
			ps_log_warn(SRV_LOG, "register with %s: %s", s->sched_addr,
				    rc == PS_EPEER_LOST || rc == PS_ETIMEOUT ? ps_strerror(rc)
									     : why);
		return rc;
	}
	if (in->body_case == PSPLUS__CTL__ENVELOPE__BODY_STATUS) {
		/* A scheduler that could not parse us (other version) answers with a Status. */
		status = in->status->code ? in->status->code : PS_EBAD_MESSAGE;
		ps_log_err(SRV_LOG, "scheduler at %s refused server %u: %s (%s)", s->sched_addr,
			   s->opts->server_id, in->status->message, ps_err_name(status));
		ps_ctl_env_free(in);
		return status;
	}
	if (in->body_case != PSPLUS__CTL__ENVELOPE__BODY_REGISTER_RESP) {
		ps_log_err(SRV_LOG, "scheduler at %s answered register with %s", s->sched_addr,
			   ps_ctl_body_name(in));
		ps_ctl_env_free(in);
		return PS_EBAD_MESSAGE;
	}
	rr = in->register_resp;
	status = rr->status;
	if (status) {
		if (refusal_transient(status, first))
			ps_log_warn(SRV_LOG, "scheduler at %s: %s; retrying", s->sched_addr,
				    rr->message);
		else if (status != PS_ESHUTDOWN)
			ps_log_err(SRV_LOG, "scheduler at %s refused registration: %s (%s)",
				   s->sched_addr, rr->message, ps_err_name(status));
		ps_ctl_env_free(in);
		return status;
	}
	if (s->cluster_version && s->cluster_version != rr->cluster_version)
		ps_log_info(SRV_LOG,
			    "cluster version changed from 0x%016" PRIx64 " to 0x%016" PRIx64
			    " (scheduler restarted)",
			    s->cluster_version, rr->cluster_version);
	s->cluster_version = rr->cluster_version;
	ps_dp_set_cluster_version(s->dp, s->cluster_version);
	s->heartbeat_ms = rr->heartbeat_ms ? rr->heartbeat_ms : 500;
	/* Use the scheduler's own limit for its silence: both sides give up at the same time. */
	s->liveness_ms = rr->liveness_timeout_ms > s->heartbeat_ms ? rr->liveness_timeout_ms
								   : 3 * s->heartbeat_ms;
	ps_log_info(SRV_LOG,
		    "server %u %sregistered with the scheduler at %s: advertising data plane %s, "
		    "cluster version 0x%016" PRIx64 ", %u servers, heartbeat every %u ms",
		    s->opts->server_id, first ? "" : "re-", s->sched_addr, s->data_addr,
		    s->cluster_version, rr->server_num, s->heartbeat_ms);
	ps_ctl_env_free(in);
	return 0;
}

/* Sleep up to @ms, or until a signal is pending. */
static int nap(struct ps_srv *s, int ms)
{
	struct pollfd p = {.fd = s->sig_fd, .events = POLLIN};

	return poll(&p, 1, ms) > 0 ? PS_ESHUTDOWN : 0;
}

int ps_srv_connect_register(struct ps_srv *s, bool first)
{
	uint64_t deadline = ps_clock_deadline_ms(s->opts->kv_wait_ms);
	char err[600], last[600] = "";
	struct ps_kv_entry kv;
	int rc, left, backoff = 20, fd;

	for (;;) {
		left = ps_clock_remaining_ms(deadline);
		/* Re-read every time: a restarted scheduler publishes a new address. */
		rc = ps_kv_wait(s->opts->kv_path, left, s->sig_fd, &kv, err, sizeof(err));
		if (rc) {
			if (rc != PS_ESHUTDOWN)
				ps_log_err(SRV_LOG, "server %u: scheduler not found: %s",
					   s->opts->server_id, err);
			return rc;
		}
		ps_ctl_addr_format(kv.host, kv.port, s->sched_addr, sizeof(s->sched_addr));
		left = ps_clock_remaining_ms(deadline);
		rc = ps_ctl_connect(kv.host, kv.port,
				    left < SRV_CONNECT_TIMEOUT_MS ? (left ? left : 1)
								  : SRV_CONNECT_TIMEOUT_MS,
				    s->sig_fd, &fd);
		if (rc == PS_ESHUTDOWN)
			return rc;
		if (rc) {
			snprintf(err, sizeof(err), "cannot connect to the scheduler at %s: %s",
				 s->sched_addr, ps_strerror(rc));
		} else {
			rc = do_register(s, fd, first);
			if (!rc) {
				s->ctl_fd = fd;
				ps_ctl_reader_init(&s->rd, 0);
				return 0;
			}
			close(fd);
			if (rc == PS_ESHUTDOWN)
				return rc;
			if (!retryable(rc, first))
				return rc;
			snprintf(err, sizeof(err), "registration with %s failed: %s", s->sched_addr,
				 ps_strerror(rc));
		}
		/* Say it once per distinct failure, not once per retry. */
		if (strcmp(err, last)) {
			ps_log_warn(SRV_LOG, "%s; retrying for up to %u ms", err,
				    s->opts->kv_wait_ms);
			snprintf(last, sizeof(last), "%s", err);
		}
		left = ps_clock_remaining_ms(deadline);
		if (!left) {
			ps_log_err(SRV_LOG,
				   "server %u: gave up reaching the scheduler after %u ms: "
				   "%s",
				   s->opts->server_id, s->opts->kv_wait_ms, err);
			return PS_ETIMEOUT;
		}
		if (nap(s, backoff < left ? backoff : left))
			return PS_ESHUTDOWN;
		backoff = backoff * 2 > SRV_RETRY_MAX_MS ? SRV_RETRY_MAX_MS : backoff * 2;
	}
}

/* NIC counters into the heartbeat: at most this many, names in one arena. */
#define HB_MAX_COUNTERS 128

struct hb_counters {
	Psplus__Ctl__Counter c[HB_MAX_COUNTERS];
	Psplus__Ctl__Counter *p[HB_MAX_COUNTERS];
	char names[HB_MAX_COUNTERS][96];
	size_t n;
};

static int add_counter(void *arg, const char *name, uint64_t value)
{
	struct hb_counters *h = arg;

	if (h->n == HB_MAX_COUNTERS)
		return 1; /* enough: stop reading */
	psplus__ctl__counter__init(&h->c[h->n]);
	snprintf(h->names[h->n], sizeof(h->names[h->n]), "%s", name);
	h->c[h->n].name = h->names[h->n];
	h->c[h->n].value = value;
	h->p[h->n] = &h->c[h->n];
	h->n++;
	return 0;
}

static int send_heartbeat(struct ps_srv *s)
{
	Psplus__Ctl__Heartbeat hb = PSPLUS__CTL__HEARTBEAT__INIT;
	Psplus__Ctl__Stats st = PSPLUS__CTL__STATS__INIT;
	struct ps_tp_dev_info di;
	struct ps_dp_stats ds;
	struct hb_counters *nic;
	ps_ctl_env_t env;
	int rc;

	ps_dp_stats_get(s->dp, &ds);
	st.mem_bytes = mem_in_use();
	st.requests_served = ds.requests;
	st.transport_tx_bytes = ds.tx_bytes;
	st.transport_rx_bytes = ds.rx_bytes;
	/* A few KiB: on the heap, once per heartbeat, off the data path. */
	nic = calloc(1, sizeof(*nic));
	if (nic) {
		ps_dp_dev_info(s->dp, &di);
		ps_dp_nic_counters(NULL, &di, add_counter, nic);
		st.n_nic = nic->n;
		st.nic = nic->p;
	}
	hb.server_id = s->opts->server_id;
	hb.cluster_version = s->cluster_version;
	hb.stats = &st;
	ps_ctl_env_init(&env, ++s->next_request_id);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	ps_log_debug(SRV_LOG,
		     "heartbeat to %s: mem %" PRIu64 " bytes, %" PRIu64 " requests, tx %" PRIu64
		     " rx %" PRIu64 " bytes, %zu NIC counters",
		     s->sched_addr, st.mem_bytes, st.requests_served, st.transport_tx_bytes,
		     st.transport_rx_bytes, st.n_nic);
	rc = ps_ctl_send(s->ctl_fd, &env, (int)s->heartbeat_ms, s->sig_fd);
	free(nic);
	return rc;
}

/* Tell the scheduler we are leaving, so it logs a departure rather than a death. */
static void send_goodbye(struct ps_srv *s, const char *reason)
{
	Psplus__Ctl__Shutdown sd = PSPLUS__CTL__SHUTDOWN__INIT;
	ps_ctl_env_t env;

	sd.reason = (char *)reason;
	ps_ctl_env_init(&env, ++s->next_request_id);
	env.body_case = PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN;
	env.shutdown = &sd;
	/* Best effort, briefly: the signal asked us to go now. No stop_fd: it is readable. */
	ps_ctl_send(s->ctl_fd, &env, 200, -1);
}

/* One message from the scheduler: 0 to go on, PS_ESHUTDOWN to stop, PS_EPEER_LOST to reconnect. */
static int handle(struct ps_srv *s, const ps_ctl_env_t *in)
{
	const Psplus__Ctl__HeartbeatResp *hr;

	switch (in->body_case) {
	case PSPLUS__CTL__ENVELOPE__BODY_HEARTBEAT_RESP:
		hr = in->heartbeat_resp;
		if (hr->shutdown) {
			ps_log_info(SRV_LOG, "server %u: the scheduler is shutting down; exiting",
				    s->opts->server_id);
			return PS_ESHUTDOWN;
		}
		if (hr->status == PS_ESTALE_VERSION) {
			/* Fencing: adopt the new version (re-reading placement comes later). */
			ps_log_info(SRV_LOG, "cluster version is now 0x%016" PRIx64 ": %s",
				    hr->cluster_version, hr->message);
			s->cluster_version = hr->cluster_version;
			ps_dp_set_cluster_version(s->dp, s->cluster_version);
			return 0;
		}
		if (hr->status) {
			ps_log_warn(SRV_LOG, "scheduler refused our heartbeat: %s (%s)",
				    hr->message, ps_err_name(hr->status));
			return PS_EPEER_LOST;
		}
		return 0;
	case PSPLUS__CTL__ENVELOPE__BODY_CKPT_CMD:
		return ps_srv_ckpt_on_cmd(s, in);
	case PSPLUS__CTL__ENVELOPE__BODY_SHUTDOWN:
		ps_log_info(SRV_LOG, "server %u: %s; exiting", s->opts->server_id,
			    in->shutdown->reason[0] ? in->shutdown->reason
						    : "the scheduler asked us to shut down");
		return PS_ESHUTDOWN;
	case PSPLUS__CTL__ENVELOPE__BODY_STATUS:
		if (!in->status->code)
			return 0;
		ps_log_warn(SRV_LOG, "scheduler: %s (%s)", in->status->message,
			    ps_err_name(in->status->code));
		return PS_EPEER_LOST;
	default:
		ps_log_warn(SRV_LOG, "unexpected %s from the scheduler", ps_ctl_body_name(in));
		return PS_EPEER_LOST;
	}
}

/* Read and handle whatever frames have arrived. */
static int drain(struct ps_srv *s, uint64_t *last_rx)
{
	ps_ctl_env_t *in;
	int rc;

	for (;;) {
		rc = ps_ctl_reader_read_fd(&s->rd, s->ctl_fd, &in);
		if (rc == 0)
			return 0;
		if (rc < 0) {
			ps_log_warn(SRV_LOG, "lost the scheduler connection (%s): %s",
				    s->sched_addr, s->rd.why);
			return PS_EPEER_LOST;
		}
		*last_rx = ps_clock_now_ns();
		rc = handle(s, in);
		ps_ctl_env_free(in);
		if (rc)
			return rc;
	}
}

int ps_srv_heartbeat_loop(struct ps_srv *s)
{
	uint64_t hb_ns = (uint64_t)s->heartbeat_ms * PS_NSEC_PER_MSEC;
	uint64_t silence_ns = (uint64_t)s->liveness_ms * PS_NSEC_PER_MSEC;
	uint64_t now = ps_clock_now_ns(), next_hb = now + hb_ns, last_rx = now, until;
	struct pollfd p[3] = {{.fd = s->ctl_fd, .events = POLLIN},
			      {.fd = s->sig_fd, .events = POLLIN},
			      {.fd = ps_srv_ckpt_fd(s), .events = POLLIN}};
	struct signalfd_siginfo si;
	char reason[96];
	int rc, n, wait, lease;

	for (;;) {
		until = next_hb < last_rx + silence_ns ? next_hb : last_rx + silence_ns;
		wait = ps_clock_remaining_ms(until);
		lease = ps_srv_ckpt_timeout_ms(s);
		if (lease >= 0 && lease < wait)
			wait = lease;
		n = poll(p, 3, wait);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0 && p[1].revents) {
			if (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				snprintf(reason, sizeof(reason), "server %u got SIG%s",
					 s->opts->server_id,
					 sigabbrev_np((int)si.ssi_signo) ?: "?");
				ps_log_info(SRV_LOG, "%s; shutting down", reason);
				send_goodbye(s, reason);
				return PS_ESHUTDOWN;
			}
		}
		if (n > 0 && p[0].revents) {
			rc = drain(s, &last_rx);
			if (rc)
				return rc;
		}
		if (n > 0 && p[2].revents) {
			rc = ps_srv_ckpt_on_event(s);
			if (rc)
				return rc;
		}
		ps_srv_ckpt_tick(s);
		now = ps_clock_now_ns();
		if (now >= next_hb) {
			rc = send_heartbeat(s);
			if (rc == PS_ESHUTDOWN)
				continue; /* the signal is handled at the top */
			if (rc) {
				ps_log_warn(SRV_LOG, "heartbeat to %s failed: %s", s->sched_addr,
					    ps_strerror(rc));
				return PS_EPEER_LOST;
			}
			/* Fixed cadence, but never a burst to catch up after a stall. */
			next_hb += hb_ns;
			if (next_hb <= now)
				next_hb = now + hb_ns;
		}
		if (now - last_rx > silence_ns) {
			ps_log_warn(SRV_LOG, "no reply from the scheduler at %s for %u ms",
				    s->sched_addr, s->liveness_ms);
			return PS_EPEER_LOST;
		}
	}
}
