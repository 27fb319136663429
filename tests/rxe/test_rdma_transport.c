/*
 * test_rdma_transport: the rdma backend of the transport interface (transport/rdma/), over the
 * ps_tp_* API only, on the soft-RoCE devices of the rxe guest.
 *
 * Part 1, one connection (both loops owned by the main thread after the connect, so every step
 * is deterministic), on rxe1's address:
 *  - dev_query: kind, device, port, MTU, max_sge, GID carrying the address, netdev;
 *  - connect errors: nobody listening (-ECONNREFUSED); a route over another device than the
 *    dev's (-ENETUNREACH);
 *  - a registered buffer's rbuf sent in a message; a 3-element write_imm into it (imm, length,
 *    every byte, a guard that stays untouched); 8 sends queued with one ctx (the last): one
 *    doorbell, one SEND_DONE, 8 messages in order;
 *  - a 256-element write_imm (non-contiguous elements: 256 SGEs split over WRs, since max_sge is
 *    32) and a 256-element send (a SEND cannot span WRs: the tail beyond max_sge - 1 SGEs is
 *    copied, exactly that many bytes counted), each in one doorbell;
 *  - stats.bytes_copied: 0 for registered memory; exactly the payload for unregistered memory
 *    above the inline size; 0 for a small unregistered message that goes inline;
 *  - credits with recv_depth 4: the 5th send and the 5th write_imm get -EAGAIN until the
 *    receiver releases; a poll returns early when the credit write lands; eagain counted;
 *  - an orderly close: the peer's CLOSED has status 0;
 *  - broken connections: a completion error (write_imm with a wrong rkey) and ops queued as the
 *    peer closes: each op with a ctx completes with PS_EPEER_LOST, before one CLOSED.
 *
 * Part 2, many connections: server A in a forked process listening on rxe0's address, server B
 * in a thread listening on rxe1's; 8 client threads per server, each with its own loop and one
 * connection, exchange N request/reply pairs each (contents checked on both sides; default
 * 10,000, PS_RDMA_TEST_MSGS overrides). Then server A is killed with SIGKILL: each of its
 * clients must see CLOSED (after PS_EPEER_LOST for any op in flight) within CLOSE_TIMEOUT_MS,
 * while server B's clients run another exchange to completion.
 *
 * Usage: test_rdma_transport. Addresses: $PS_RXE0_ADDR (192.0.2.1), $PS_RXE1_ADDR (192.0.2.2).
 * Exit status: 0 pass, 1 fail, 77 skipped (no RDMA device, outside the guest only).
 *
 * Files: this one (main), test_rdma_transport_basic.c (part 1's set-up and first steps), _gather.c
 * (256-element gathers, bytes_copied), _fail.c (credits, close, broken connections), _multi.c
 * (part 2); rdma_tp_test.{h,c} (their shared helpers).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/rxe/rdma_tp_test.h"

const char *tpt_addr0, *tpt_addr1;

int main(void)
{
	struct rxe_check chk = {.role = "main"};
	struct tpt_srv_report *ra;
	uint64_t t0 = ps_clock_now_ns();
	int rc, failures;
	pid_t pid;

	rxe_test_init();
	rc = rxe_device_present(&chk, "test_rdma_transport");
	if (rc)
		return rc;
	tpt_addr0 = getenv("PS_RXE0_ADDR") && *getenv("PS_RXE0_ADDR") ? getenv("PS_RXE0_ADDR")
								      : "192.0.2.1";
	tpt_addr1 = getenv("PS_RXE1_ADDR") && *getenv("PS_RXE1_ADDR") ? getenv("PS_RXE1_ADDR")
								      : "192.0.2.2";
	/*
	 * Server A is forked first, before this process registers any memory or starts a thread
	 * (registered pages and fork do not mix on older kernels; threads and fork never do).
	 */
	ra = mmap(NULL, sizeof(*ra), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ra == MAP_FAILED) {
		rxe_failed(&chk, "shared memory", -errno);
		return 1;
	}
	memset(ra, 0, sizeof(*ra));
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		rxe_failed(&chk, "fork", -errno);
		return 1;
	}
	if (pid == 0) {
		/* Die with the parent; and never outlive the tier's timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(600);
		tpt_server_run(tpt_addr0, ra, "srvA");
		_exit(0);
	}
	failures = tpt_part1_run();
	failures += tpt_part2_run(pid, ra);
	rxe_info(&chk, "total %.1f s", tpt_ms_since(t0) / 1000.0);
	printf("test_rdma_transport: %s (%d failed checks)\n", failures ? "FAIL" : "PASS",
	       failures);
	return failures ? 1 : 0;
}
