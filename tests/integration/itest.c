/*
 * Helpers of the integration tests' client drivers; see itest.h.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <psplus/error.h>

#include "tests/integration/itest.h"

/* Failed checks so far: threads of one driver (client_e2e's sharers, workers) check at once. */
static atomic_int failures;

/* Set once by itest_client_setup() before any thread starts; read-only afterwards. */
static const char *client_kv;
static const char *client_transport;
static uint32_t client_timeout_ms;

void itest_check(bool ok, const char *fmt, ...)
{
	va_list ap;

	/* One lock over the whole line: the pieces of concurrent checks would interleave. */
	flockfile(stdout);
	printf("%s: ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!ok)
		printf(" [last error: %s]", ps_client_last_error());
	printf("\n");
	fflush(stdout);
	funlockfile(stdout);
	if (!ok)
		atomic_fetch_add(&failures, 1);
}

void itest_must(int rc, const char *what)
{
	if (!rc)
		return;
	printf("FAIL: %s: %s (%s): %s\n", what, ps_strerror(rc), ps_err_name(rc),
	       ps_client_last_error());
	exit(1);
}

int itest_status(void)
{
	return atomic_load(&failures) ? 1 : 0;
}

void itest_client_setup(const char *kv, const char *transport, uint32_t timeout_ms)
{
	client_kv = kv;
	client_transport = transport;
	client_timeout_ms = timeout_ms;
}

struct ps_client *itest_client(uint32_t worker, uint32_t nworkers, enum ps_sync_mode mode,
			       uint32_t staleness)
{
	struct ps_client_opts o = ps_client_opts_default();
	struct ps_client *c = NULL;

	o.kv_path = client_kv;
	o.transport = client_transport;
	o.worker_id = worker;
	o.num_workers = nworkers;
	o.sync_mode = mode;
	o.staleness = staleness;
	o.timeout_ms = client_timeout_ms;
	itest_must(ps_client_create(&o, &c), "ps_client_create");
	return c;
}
