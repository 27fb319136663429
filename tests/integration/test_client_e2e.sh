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
kv=$work/sched.kv
url=file://$kv
fail=0
declare -A pid=()
transport=${PS_E2E_TRANSPORT:-tcp}
read -r -a hosts <<<"${PS_E2E_HOSTS:-127.0.0.1 127.0.0.1}"
export PS_E2E_TRANSPORT=$transport

cleanup() {
	local p
	for p in "${pid[@]}"; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [[ $fail -eq 0 && -z ${KEEP_LOGS:-} ]]; then
		rm -rf "$work"
	else
		echo "logs kept in $work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_for() {
	local deadline=$(($(now_ms) + $1))
	shift
	until "$@"; do
		(($(now_ms) >= deadline)) && return 1
		sleep 0.02
	done
}
log_has() { grep -qE -- "$2" "$work/$1.log"; }

"$bin" -r scheduler -sp "$url" -sn 2 -snet 1000 -smem 4 -sqps 1000000 -bc False \
	--host 127.0.0.1 --heartbeat_ms 100 --liveness_timeout_ms 2000 2>"$work/sched.log" &
pid[sched]=$!
wait_for 5000 test -s "$kv" || { echo "FAIL: the scheduler did not publish $url"; fail=1; exit 1; }
for i in 0 1; do
	"$bin" -r server -sp "$url" -si $i -bc False --transport "$transport" \
		--host "${hosts[$i]}" --threads 2 2>"$work/s$i.log" &
	pid[s$i]=$!
done
if ! wait_for 10000 log_has sched "all 2 servers registered"; then
	echo "FAIL: the servers did not register"
	fail=1
	exit 1
fi
echo "PASS: scheduler and 2 servers (2 data-path threads each, $transport) up"

for t in basic bounded sync; do
	echo "--- $t"
	if timeout 60 "$drv" "$url" "$t" 2>"$work/client_$t.log"; then
		echo "PASS: client_e2e $t"
	else
		echo "FAIL: client_e2e $t (exit $?; log $work/client_$t.log)"
		fail=1
	fi
done
for p in sched s0 s1; do
	if ! kill -0 "${pid[$p]}" 2>/dev/null; then
		echo "FAIL: $p died during the test"
		fail=1
	fi
done
kill -TERM "${pid[sched]}" 2>/dev/null
for p in sched s0 s1; do
	wait "${pid[$p]}" 2>/dev/null
	rc=$?
	unset "pid[$p]"
	if [[ $rc -ne 0 ]]; then
		echo "FAIL: $p exited with status $rc"
		fail=1
	fi
done
[[ $fail -eq 0 ]] && echo "PASS: all processes exited cleanly"
exit $fail
