/*
 * psplus-admin: ask a running cluster's scheduler for a model operation.
 *
 *	psplus-admin save    --kv URL [NAME]        checkpoint the whole model (point in time)
 *	psplus-admin restore --kv URL NAME|latest   replace the model by a checkpoint
 *	psplus-admin export  --kv URL               streaming export of the rows changed
 *	  options: --timeout_ms MS (default 600000), --auth_token_file PATH
 *
 * The operations run in the scheduler's main loop, one at a time (a second request while one
 * runs fails at once: exit 3). `psplus-model` works on checkpoint files; this tool works on the
 * live cluster and writes through its servers. Exit codes: 0 done; 1 the operation failed (the
 * message says why and, for a damaged checkpoint, which file); 2 bad usage; 3 another operation
 * is in progress.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psplus/client.h>
#include <psplus/error.h>

#include "client/client_internal.h"

#define EXIT_FAILED 1
#define EXIT_USAGE  2
#define EXIT_BUSY   3

static const char usage[] =
	"usage: psplus-admin save    --kv URL [NAME]\n"
	"       psplus-admin restore --kv URL NAME|latest\n"
	"       psplus-admin export  --kv URL\n"
	"options: --timeout_ms MS (default 600000)  --auth_token_file PATH\n"
	"\n"
	"Asks the scheduler published at URL (-sp of the cluster) to save the whole model as\n"
	"checkpoint NAME under its -cp root (default name ckpt-<unix ms>), to restore a checkpoint\n"
	"onto the current servers, or to export the rows changed since the last export through\n"
	"the streaming-model URLs. Exit: 0 done, 1 failed, 2 usage, 3 another operation runs.\n";

static int die_usage(const char *msg)
{
	fprintf(stderr, "psplus-admin: %s\n%s", msg, usage);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	const char *kv = NULL, *name = NULL, *token_file = NULL, *cmd;
	uint8_t token[PS_CTL_TOKEN_MAX];
	size_t token_len = 0;
	struct ps_model_op_info info;
	unsigned long timeout = 600000;
	char err[2400];
	uint32_t op;
	int rc;

	if (argc < 2)
		return die_usage("no command");
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "save"))
		op = 1;
	else if (!strcmp(cmd, "restore"))
		op = 2;
	else if (!strcmp(cmd, "export"))
		op = 3;
	else
		return die_usage("unknown command");
	for (int i = 2; i < argc; i++) {
		char *end;

		if (!strcmp(argv[i], "--kv") && i + 1 < argc) {
			kv = argv[++i];
		} else if (!strcmp(argv[i], "--timeout_ms") && i + 1 < argc) {
			errno = 0;
			timeout = strtoul(argv[++i], &end, 10);
			if (errno || *end || !timeout || timeout > UINT32_MAX)
				return die_usage("--timeout_ms: expected 1 to 4294967295");
		} else if (!strcmp(argv[i], "--auth_token_file") && i + 1 < argc) {
			token_file = argv[++i];
		} else if (argv[i][0] == '-') {
			return die_usage("unknown or incomplete option");
		} else if (!name) {
			name = argv[i];
		} else {
			return die_usage("too many arguments");
		}
	}
	if (!kv)
		return die_usage("--kv URL is required");
	if (op == 2 && !name)
		return die_usage("restore takes a checkpoint name or latest");
	if (op == 3 && name)
		return die_usage("export takes no name");
	if (token_file && ps_ctl_token_load(token_file, token, &token_len, err, sizeof(err))) {
		fprintf(stderr, "psplus-admin: %s\n", err);
		return EXIT_USAGE;
	}
	rc = cli_model_op(kv, token_file ? token : NULL, token_len, op, name, (uint32_t)timeout,
			  &info, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "psplus-admin: %s failed: %s (%s)\n", cmd, err, ps_err_name(rc));
		return rc == PS_EOP_IN_PROGRESS ? EXIT_BUSY : EXIT_FAILED;
	}
	if (op == 3)
		printf("export: %" PRIu64 " rows, %" PRIu64 " deletions in %.3f s\n", info.rows,
		       info.bytes, (double)info.elapsed_us / 1e6);
	else
		printf("%s '%s': %" PRIu64 " rows, %" PRIu64 " bytes in %.3f s%s, cluster version "
		       "0x%016" PRIx64 "\n",
		       op == 1 ? "saved" : "restored", info.name, info.rows, info.bytes,
		       (double)info.elapsed_us / 1e6, "", info.cluster_version);
	if (op == 1)
		printf("pushes held at most %.3f ms\n", (double)info.pause_us / 1e3);
	return 0;
}
