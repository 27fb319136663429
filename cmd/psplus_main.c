/*
 * psplus: one binary, two roles (seed: main -> LoadPlugins -> ParseOptions -> Run{Scheduler,
 * Server}).
 *
 * Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad command line (unknown, missing,
 * malformed or out-of-range option, or a plugin that does not load).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/error.h>
#include <psplus/plugin.h>

#include "common/log.h"
#include "common/options.h"
#include "common/url.h"
#include "scheduler/scheduler.h"
#include "server/server.h"

#define EXIT_USAGE 2

/* Required-ness groups for ps_opt_check_required(). */
#define R_SCHED	 (1u << 0)
#define R_SERVER (1u << 1)
#define R_BOTH	 (R_SCHED | R_SERVER)

#define MB_MAX (INT64_C(1) << 40)

static const struct ps_opt_spec option_table[] = {
	{"-r", "--role", "role", PS_OPT_STRING, R_BOTH, NULL, 0, 0, false, "ROLE",
	 "scheduler or server"},
	{"-sp", "--scheduler_kv_path", "scheduler_kv_path", PS_OPT_STRING, R_BOTH, NULL, 0, 0,
	 false, "URL",
	 "where the scheduler publishes its address (file:///path or zk://host:port/path)"},
	{"-si", "--server_id", "server_id", PS_OPT_INT, R_SERVER, NULL, 0, 65535, false, "ID",
	 "server: 0-based id, unique in the cluster"},
	{"-sn", "--server_num", "server_num", PS_OPT_INT, R_SCHED, NULL, 1, 65536, false, "N",
	 "scheduler: number of servers to wait for"},
	{"-snet", "--server_network_limit", "server_network_limit", PS_OPT_INT, R_SCHED, NULL, 1,
	 MB_MAX, false, "MB/s", "scheduler: per-server network budget"},
	{"-smem", "--server_memory_limit", "server_memory_limit", PS_OPT_INT, R_SCHED, NULL, 1,
	 MB_MAX, false, "MB", "scheduler: per-server memory budget"},
	{"-sqps", "--server_query_limit", "server_query_limit", PS_OPT_INT, R_SCHED, NULL, 1,
	 INT64_C(1) << 50, false, "QPS", "scheduler: per-server request budget, requests/s"},
	{"-cp", "--checkpoint_path", "checkpoint_path", PS_OPT_STRING, 0, "none://", 0, 0, false,
	 "URL", "scheduler: checkpoint root"},
	{"-smdense", "--streaming_model_dense", "streaming_model_dense", PS_OPT_STRING, 0, "", 0, 0,
	 false, "URL", "streaming-model output for dense variables (empty: off)"},
	{"-smsparse", "--streaming_model_sparse", "streaming_model_sparse", PS_OPT_STRING, 0, "", 0,
	 0, false, "URL", "streaming-model output for sparse variables (empty: off)"},
	{"-smhash", "--streaming_model_hash", "streaming_model_hash", PS_OPT_STRING, 0, "", 0, 0,
	 false, "URL", "streaming-model output for hash variables (empty: off)"},
	{"-bc", "--bind_cores", "bind_cores", PS_OPT_BOOL, R_BOTH, NULL, 0, 0, false, NULL,
	 "NUMA-aware core binding"},
	{NULL, "--transport", "transport", PS_OPT_STRING, 0, "auto", 0, 0, false, "auto|tcp|rdma",
	 "server: data-plane transport (auto: rdma when an active device exists)"},
	{NULL, "--host", "host", PS_OPT_STRING, 0, "", 0, 0, false, "ADDR",
	 "address to listen on and advertise (empty: chosen automatically)"},
	{NULL, "--port", "port", PS_OPT_INT, 0, "0", 0, 65535, false, "PORT",
	 "listen port: control (scheduler) or data plane (server); 0 = any free port"},
	{NULL, "--threads", "threads", PS_OPT_INT, 0, "1", 1, 256, false, "N",
	 "server: data-path threads"},
	{NULL, "--heartbeat_ms", "heartbeat_ms", PS_OPT_INT, 0, "500", 10, 60000, false, "MS",
	 "scheduler: heartbeat period servers use"},
	{NULL, "--liveness_timeout_ms", "liveness_timeout_ms", PS_OPT_INT, 0, "3000", 50, 600000,
	 false, "MS", "scheduler: silence after which a server is declared dead"},
	{NULL, "--streaming_period_s", "streaming_period_s", PS_OPT_INT, 0, "0", 0, 86400 * 365,
	 false, "S", "scheduler: streaming-model export every S seconds (0: only on request)"},
	{NULL, "--kv_wait_ms", "kv_wait_ms", PS_OPT_INT, 0, "30000", 0, 3600000, false, "MS",
	 "server: how long to wait for the scheduler's kv entry"},
	{NULL, "--auth_token_file", "auth_token_file", PS_OPT_STRING, 0, NULL, 0, 0, false, "PATH",
	 "file holding a shared secret every peer must present"},
	{NULL, "--log_level", "log_level", PS_OPT_STRING, 0, NULL, 0, 0, false,
	 "error|warn|info|debug", "log level (overrides PSPLUS_LOG_LEVEL)"},
	{NULL, "--plugin", "plugin", PS_OPT_STRING, 0, NULL, 0, 0, true, "PATH.so",
	 "load a plugin before anything else"},
	{"-h", "--help", "help", PS_OPT_FLAG, 0, NULL, 0, 0, false, NULL, "print this help"},
	{NULL, "--version", "version", PS_OPT_FLAG, 0, NULL, 0, 0, false, NULL,
	 "print the version"},
};

static void usage(const struct ps_opt_parser *p, FILE *f)
{
	fprintf(f, "usage: psplus -r scheduler -sp URL -sn N -snet MB/s -smem MB -sqps QPS -bc B "
		   "[options]\n"
		   "       psplus -r server -sp URL -si ID -bc B [options]\n\noptions:\n");
	ps_opt_print_help(p, f);
}

static int die_usage(const char *msg)
{
	fprintf(stderr, "psplus: %s\n", msg);
	return EXIT_USAGE;
}

/* Seed order: plugins first, before any other option is interpreted. */
static int load_plugins(int argc, char **argv)
{
	char err[512];

	for (int i = 1; i < argc; i++) {
		const char *path = NULL;

		if (!strcmp(argv[i], "--plugin")) {
			if (i + 1 >= argc)
				return die_usage("option --plugin needs a value");
			path = argv[++i];
		} else if (!strncmp(argv[i], "--plugin=", 9)) {
			path = argv[i] + 9;
		}
		if (path && ps_plugin_load(path, err, sizeof(err)))
			return die_usage(err);
	}
	return 0;
}

static int check_url(const char *opt, const char *v, int allow_empty)
{
	struct ps_url u;
	char err[512], msg[700];

	if (allow_empty && (!v || !*v))
		return 0;
	if (ps_url_parse(v, &u, err, sizeof(err))) {
		snprintf(msg, sizeof(msg), "option %s: %s", opt, err);
		return die_usage(msg);
	}
	return 0;
}

static int get_u32(const struct ps_opt_parser *p, const char *name, uint32_t *out)
{
	int64_t v = 0;
	int rc = ps_opt_get_int(p, name, &v);

	*out = (uint32_t)v;
	return rc;
}

static int run_scheduler(const struct ps_opt_parser *p)
{
	struct ps_scheduler_opts o = {0};
	int64_t v;
	int rc;

	ps_opt_get_str(p, "scheduler_kv_path", &o.kv_path);
	ps_opt_get_str(p, "checkpoint_path", &o.checkpoint_path);
	ps_opt_get_str(p, "streaming_model_dense", &o.sm_dense);
	ps_opt_get_str(p, "streaming_model_sparse", &o.sm_sparse);
	ps_opt_get_str(p, "streaming_model_hash", &o.sm_hash);
	ps_opt_get_str(p, "host", &o.host);
	ps_opt_get_str(p, "auth_token_file", &o.auth_token_file);
	ps_opt_get_bool(p, "bind_cores", &o.bind_cores);
	get_u32(p, "server_num", &o.server_num);
	ps_opt_get_int(p, "server_network_limit", &v);
	o.net_limit_mbps = (uint64_t)v;
	ps_opt_get_int(p, "server_memory_limit", &v);
	o.mem_limit_mb = (uint64_t)v;
	ps_opt_get_int(p, "server_query_limit", &v);
	o.query_limit = (uint64_t)v;
	ps_opt_get_int(p, "port", &v);
	o.port = (uint16_t)v;
	get_u32(p, "heartbeat_ms", &o.heartbeat_ms);
	get_u32(p, "liveness_timeout_ms", &o.liveness_timeout_ms);
	get_u32(p, "streaming_period_s", &o.streaming_period_s);
	if ((rc = check_url("--scheduler_kv_path (-sp)", o.kv_path, 0)) ||
	    (rc = check_url("--checkpoint_path (-cp)", o.checkpoint_path, 0)) ||
	    (rc = check_url("--streaming_model_dense (-smdense)", o.sm_dense, 1)) ||
	    (rc = check_url("--streaming_model_sparse (-smsparse)", o.sm_sparse, 1)) ||
	    (rc = check_url("--streaming_model_hash (-smhash)", o.sm_hash, 1)))
		return rc;
	if (o.liveness_timeout_ms < 2 * o.heartbeat_ms)
		return die_usage("option --liveness_timeout_ms must be at least twice "
				 "--heartbeat_ms");
	rc = ps_scheduler_main(&o);
	if (rc) {
		fprintf(stderr, "psplus: scheduler: %s\n", ps_strerror(rc));
		return 1;
	}
	return 0;
}

static int run_server(const struct ps_opt_parser *p)
{
	struct ps_server_opts o = {0};
	int64_t v;
	int rc;

	ps_opt_get_str(p, "scheduler_kv_path", &o.kv_path);
	ps_opt_get_str(p, "streaming_model_dense", &o.sm_dense);
	ps_opt_get_str(p, "streaming_model_sparse", &o.sm_sparse);
	ps_opt_get_str(p, "streaming_model_hash", &o.sm_hash);
	ps_opt_get_str(p, "transport", &o.transport);
	ps_opt_get_str(p, "host", &o.host);
	ps_opt_get_str(p, "auth_token_file", &o.auth_token_file);
	ps_opt_get_bool(p, "bind_cores", &o.bind_cores);
	get_u32(p, "server_id", &o.server_id);
	get_u32(p, "threads", &o.threads);
	get_u32(p, "kv_wait_ms", &o.kv_wait_ms);
	ps_opt_get_int(p, "port", &v);
	o.port = (uint16_t)v;
	if (strcmp(o.transport, "auto") && strcmp(o.transport, "tcp") &&
	    strcmp(o.transport, "rdma"))
		return die_usage("option --transport: expected auto, tcp or rdma");
	if ((rc = check_url("--scheduler_kv_path (-sp)", o.kv_path, 0)) ||
	    (rc = check_url("--streaming_model_dense (-smdense)", o.sm_dense, 1)) ||
	    (rc = check_url("--streaming_model_sparse (-smsparse)", o.sm_sparse, 1)) ||
	    (rc = check_url("--streaming_model_hash (-smhash)", o.sm_hash, 1)))
		return rc;
	rc = ps_server_main(&o);
	if (rc) {
		fprintf(stderr, "psplus: server %u: %s\n", o.server_id, ps_strerror(rc));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ps_opt_parser *p = NULL;
	const char *role = NULL, *level = NULL;
	enum ps_log_level lvl;
	bool flag = false;
	char err[512];
	int rc;

	if (ps_log_init_from_env())
		fprintf(stderr,
			"psplus: ignoring PSPLUS_LOG_LEVEL='%s' (expected error, warn, "
			"info or debug)\n",
			getenv("PSPLUS_LOG_LEVEL"));
	rc = load_plugins(argc, argv);
	if (rc)
		return rc;
	if (ps_opt_parser_create(&p))
		return 1;
	for (size_t i = 0; i < sizeof(option_table) / sizeof(option_table[0]); i++) {
		if (ps_opt_add(p, &option_table[i])) {
			fprintf(stderr, "psplus: internal error adding %s\n",
				option_table[i].long_name);
			rc = 1;
			goto out;
		}
	}
	if (ps_opt_parse(p, argc, argv, err, sizeof(err))) {
		rc = die_usage(err);
		goto out;
	}
	if (!ps_opt_get_bool(p, "help", &flag) && flag) {
		usage(p, stdout);
		goto out;
	}
	if (!ps_opt_get_bool(p, "version", &flag) && flag) {
		printf("psplus %s\n", PS_VERSION_STRING);
		goto out;
	}
	ps_opt_get_str(p, "log_level", &level);
	if (level) {
		if (ps_log_level_parse(level, &lvl)) {
			rc = die_usage("option --log_level: expected error, warn, info or debug");
			goto out;
		}
		ps_log_set_level(lvl);
	}
	ps_opt_get_str(p, "role", &role);
	if (!role) {
		rc = die_usage("missing required option --role (-r): scheduler or server");
		goto out;
	}
	if (strcmp(role, "scheduler") && strcmp(role, "server")) {
		snprintf(err, sizeof(err), "option --role (-r): '%s' is not scheduler or server",
			 role);
		rc = die_usage(err);
		goto out;
	}
	if (ps_opt_check_required(p, !strcmp(role, "scheduler") ? R_SCHED : R_SERVER, err,
				  sizeof(err))) {
		rc = die_usage(err);
		goto out;
	}
	rc = !strcmp(role, "scheduler") ? run_scheduler(p) : run_server(p);
out:
	ps_opt_parser_destroy(p);
	return rc;
}
