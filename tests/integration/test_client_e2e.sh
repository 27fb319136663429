#!/usr/bin/env bash
# The client library end to end: a scheduler and two servers (psplus binary, tcp on
# 127.0.0.1, --threads 2 each) and the client_e2e driver:
#   basic    dense/sparse/hash64/hash128 with SGD: pull, push, pull against computed values;
#            zero copy and staging; calls split over many requests; id out of range (no row
#            changed), unknown variable, wrong width or kind, re-declaration, push before declare;
#            four threads on one client
#   bounded  two workers with staleness 1: the fast one waits when one step ahead
#   sync     two workers in synchronous mode: one update with the summed gradients per step
# -smem 4 (MiB per server) makes the 100,000-row sparse variable two parts, one per server.
# usage: test_client_e2e.sh PSPLUS_BINARY CLIENT_E2E_BINARY    (KEEP_LOGS=1 keeps the logs)
# In the soft-RoCE guest (scripts/rxe-run.sh), over verbs, one rxe device per server:
#   PS_E2E_TRANSPORT=rdma PS_E2E_HOSTS="$PS_RXE0_ADDR $PS_RXE1_ADDR" test_client_e2e.sh ...
set -uo pipefail
bin=$1
drv=$2
work=$(mktemp -d /tmp/psplus_client_e2e.XXXXXX)
. "$(dirname "$0")/cluster_lib.sh"
transport=${PS_E2E_TRANSPORT:-tcp}
read -r -a hosts <<<"${PS_E2E_HOSTS:-127.0.0.1 127.0.0.1}"
export PS_E2E_TRANSPORT=$transport

cl_sched sched -sn 2 -snet 1000 -smem 4 -sqps 1000000 -bc False \
	--host 127.0.0.1 --heartbeat_ms 100 --liveness_timeout_ms 2000
cl_wait_kv 5000 || exit 1
for i in 0 1; do
	cl_server "s$i" "$i" -bc False --transport "$transport" --host "${hosts[$i]}" --threads 2
done
cl_wait_registered 2 10000 || exit 1
pass "scheduler and 2 servers (2 data-path threads each, $transport) up"

for t in basic bounded sync; do
	echo "--- $t"
	if timeout 60 "$drv" "$url" "$t" 2>"$work/client_$t.log"; then
		pass "client_e2e $t"
	else
		flunk "client_e2e $t (exit $?; log $work/client_$t.log)"
	fi
done
cl_check_alive
cl_stop
[[ $fail -eq 0 ]] && pass "all processes exited cleanly"
exit $fail
