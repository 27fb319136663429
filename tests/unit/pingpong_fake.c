/*
 * pingpong_fake: a ping-pong of small SENDs between two connections of one loop, over the rdma
 * backend on the fake verbs layer. Not a test and not a timing benchmark: it gives a fixed,
 * repeatable workload for counting the backend's instructions per message, which is what an
 * emulated guest (the soft-RoCE tier) pays for most. docs/performance.md has the command:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=cg.out build/tests/pingpong_fake 20000
 *   callgrind_annotate --auto=no cg.out | grep -E 'transport/|common/'
 *
 * and divides by the 2 x N messages. Every 32nd message asks for its completion event, as
 * psplus-bench-tp's latency test does. Usage: pingpong_fake [ROUND_TRIPS] (default 10000).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <psplus/error.h>

#include "transport/transport.h"

#define SLOTS 17u /* psplus-bench-tp's rings at -q 1: 1 + 16 control slots */

static const struct ps_tp_loop_opts loop_opts = {.recv_depth = SLOTS,
						 .msg_size = 4096,
						 .send_depth = SLOTS,
						 .max_conns = 4,
						 .connect_timeout_ms = 2000};

/* Poll until @on receives a message; its event, or an event of type 0 after ~1 s of nothing. */
static struct ps_tp_event wait_recv(struct ps_tp_loop *loop, struct ps_tp_conn *on)
{
	struct ps_tp_event ev[8], none = {0};

	for (int idle = 0; idle < 1000;) {
		int n = ps_tp_poll(loop, ev, 8, 1);

		idle = n > 0 ? 0 : idle + 1;
		for (int i = 0; i < n; i++)
			if (ev[i].type == PS_TP_EV_RECV && ev[i].conn == on)
				return ev[i];
	}
	return none;
}

int main(int argc, char **argv)
{
	struct ps_tp_dev_opts d = {.kind = "rdma", .bind_addr = "192.0.2.1", .numa_node = -1};
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 10000;
	struct ps_tp_conn *cli = NULL, *srv = NULL;
	struct ps_tp_listener *lst = NULL;
	struct ps_tp_loop *loop = NULL;
	struct ps_tp_dev *dev = NULL;
	struct ps_tp_mr *mr = NULL;
	static uint8_t buf[65536];
	struct ps_tp_event ev;
	int rc;

	if (n <= 0) {
		fprintf(stderr, "usage: %s [ROUND_TRIPS > 0]\n", argv[0]);
		return 2;
	}
	rc = ps_tp_dev_open(&d, &dev);
	if (!rc)
		rc = ps_tp_loop_create(dev, &loop_opts, &loop);
	if (!rc)
		rc = ps_tp_listen(loop, "192.0.2.1", 0, &lst);
	if (!rc)
		rc = ps_tp_connect(loop, "192.0.2.1", ps_tp_listener_port(lst), NULL, &cli);
	for (int i = 0; !rc && !srv && i < 100; i++)
		if (ps_tp_poll(loop, &ev, 1, 10) == 1 && ev.type == PS_TP_EV_ACCEPT)
			srv = ev.conn;
	if (!rc && !srv)
		rc = PS_ETIMEOUT;
	if (!rc)
		rc = ps_tp_mr_reg(dev, buf, sizeof(buf), &mr);
	for (long i = 0; !rc && i < n; i++) {
		struct ps_tp_sge ping = {buf + (i % SLOTS) * 64, 64, mr};
		struct ps_tp_sge pong = {buf + 8192 + (i % SLOTS) * 64, 64, mr};
		void *ctx = (i + 1) % 32 == 0 ? buf : NULL;

		rc = ps_tp_send(cli, &ping, 1, ctx);
		ps_tp_flush(loop);
		ev = rc ? ev : wait_recv(loop, srv);
		if (!rc && ev.type != PS_TP_EV_RECV)
			rc = PS_ETIMEOUT;
		if (!rc)
			rc = ps_tp_send(srv, &pong, 1, ctx);
		ps_tp_flush(loop);
		if (!rc)
			ps_tp_recv_release(srv, ev.buf);
		ev = rc ? ev : wait_recv(loop, cli);
		if (!rc && ev.type != PS_TP_EV_RECV)
			rc = PS_ETIMEOUT;
		if (!rc)
			ps_tp_recv_release(cli, ev.buf);
	}
	if (rc)
		fprintf(stderr, "pingpong_fake: %s\n", ps_strerror(rc));
	else
		printf("pingpong_fake: %ld round trips, %ld messages\n", n, 2 * n);
	if (cli)
		ps_tp_conn_close(cli);
	if (srv)
		ps_tp_conn_close(srv);
	if (lst)
		ps_tp_listener_close(lst);
	if (mr)
		ps_tp_mr_dereg(mr);
	if (loop)
		ps_tp_loop_destroy(loop);
	if (dev)
		ps_tp_dev_close(dev);
	return rc ? 1 : 0;
}
