/*
 * Helpers shared by the client drivers of the integration tests (ckpt_driver.c, client_e2e.c):
 * the PASS/FAIL lines their scripts read, calls that must succeed, and clients of the cluster
 * under test.
 *
 * Output: one line per check on stdout, "PASS: ..." or "FAIL: ... [last error: ...]", flushed at
 * once so that it comes before whatever the script prints after the driver has exited.
 */
#ifndef PS_TESTS_INTEGRATION_ITEST_H
#define PS_TESTS_INTEGRATION_ITEST_H

#include <stdbool.h>
#include <stdint.h>

#include <psplus/client.h>

/**
 * itest_check() - print "PASS: <message>" if @ok, else "FAIL: <message> [last error: <the
 * calling thread's ps_client_last_error()>]" and count a failure. Thread-safe: lines of
 * concurrent checks do not mix.
 */
void itest_check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * itest_must() - a call that must succeed: if @rc (0, a negative errno or a PS_E* code) is not
 * 0, print "FAIL: @what: <error text> (<error name>): <last error>" and exit(1).
 */
void itest_must(int rc, const char *what);

/** itest_status() - 0 if every check so far passed, else 1: main()'s exit status. */
int itest_status(void);

/**
 * itest_client_setup() - what itest_client() connects with: the scheduler's kv URL @kv and the
 * data-plane @transport (both borrowed, must outlive every client), the per-call timeout
 * @timeout_ms. Call once in main(), before any thread starts.
 */
void itest_client_setup(const char *kv, const char *transport, uint32_t timeout_ms);

/**
 * itest_client() - a client of the cluster set up above, worker @worker of @nworkers in sync
 * mode @mode with @staleness (PS_SYNC_BOUNDED); exits through itest_must() if it cannot be
 * created. The caller owns it (ps_client_destroy()).
 */
struct ps_client *itest_client(uint32_t worker, uint32_t nworkers, enum ps_sync_mode mode,
			       uint32_t staleness);

#endif
