#!/usr/bin/env bash
# Conformance of the parameter service: for N servers (N = 1 and 3 by default; --threads 2 each)
# a scheduler and the servers (psplus binary) are started, and the conformance driver
# (tests/integration/conformance.c) trains every optimizer on every variable kind through the
# client and compares every row with its double-precision model; then two workers in sync mode
# against one worker pushing the sums.
#
# Clusters: dense and sparse variables are declared with load hints that make each need
# (N - 1) / 4 + 0.04 of a server's network budget (-snet), so the placementer spreads them over
# ceil(size / part_fraction 0.25) = N servers, one part each. A cluster then holds
# floor(0.95 N / ((N - 1) / 4 + 0.04)) of them (5 for N = 3, 6 for N = 2; the share is
# conformance.c's declare()), so for N > 1 the async cases run in slices, each on a fresh cluster
# (N = 3, all 10 optimizers: 4 slices of 5 dense/sparse variables, with the hash ones), and the
# sync cases (4 dense/sparse variables) on one more. For N = 1 (no hints) everything shares one
# cluster. Logs of failed runs are printed (the guest's /tmp does not outlive it) and kept.
#
# usage: test_conformance.sh PSPLUS_BINARY CONFORMANCE_BINARY
# Environment:
#   PS_CONF_NS         server counts to run (default "1 3")
#   PS_CONF_TRANSPORT  data-plane transport of servers and client (default tcp)
#   PS_CONF_HOSTS      server i listens on word i (mod count) of this list (default 127.0.0.1)
#   PS_CONF_STEPS      training steps (default 100)
#   PS_CONF_OPTIMS     optimizers of the async cases, comma-separated driver names (default all)
#   KEEP_LOGS=1        keep the logs
# Output: one line per (optimizer, kind, N) from the driver, PASS/FAIL lines for the processes.
set -uo pipefail
bin=$1
drv=$2
ns=${PS_CONF_NS:-1 3}
transport=${PS_CONF_TRANSPORT:-tcp}
read -r -a hosts <<<"${PS_CONF_HOSTS:-127.0.0.1}"
steps=${PS_CONF_STEPS:-100}
optims=${PS_CONF_OPTIMS:-}
threads=2
snet=100 # MB/s per server: only the load hints' scale
work=$(mktemp -d /tmp/psplus_conformance.XXXXXX)
fail=0
run=0
declare -A pid=()

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
log_has() { grep -qE -- "$2" "$1"; }

# cluster N: a scheduler and N servers in $dir, kv URL in $url. Returns 1 if they did not start.
cluster() {
	local n=$1 i
	run=$((run + 1))
	dir=$work/c$run
	mkdir -p "$dir"
	url=file://$dir/sched.kv
	"$bin" -r scheduler -sp "$url" -sn "$n" -snet $snet -smem 65536 -sqps 1000000000 -bc False \
		--host 127.0.0.1 --heartbeat_ms 200 --liveness_timeout_ms 20000 2>"$dir/sched.log" &
	pid[sched]=$!
	if ! wait_for 20000 test -s "$dir/sched.kv"; then
		echo "FAIL: the scheduler did not publish $url (log $dir/sched.log)"
		return 1
	fi
	for ((i = 0; i < n; i++)); do
		"$bin" -r server -sp "$url" -si $i -bc False --transport "$transport" \
			--host "${hosts[i % ${#hosts[@]}]}" --threads $threads 2>"$dir/s$i.log" &
		pid[s$i]=$!
	done
	if ! wait_for 30000 log_has "$dir/sched.log" "all $n servers registered"; then
		echo "FAIL: the servers did not register (logs in $dir)"
		return 1
	fi
}

# stop: TERM the scheduler (the servers leave with it); every process must exit 0.
stop() {
	local p rc
	for p in "${!pid[@]}"; do
		if ! kill -0 "${pid[$p]}" 2>/dev/null; then
			echo "FAIL: $p died during the test (log $dir/$p.log)"
			fail=1
		fi
	done
	kill -TERM "${pid[sched]}" 2>/dev/null
	for p in "${!pid[@]}"; do
		wait "${pid[$p]}" 2>/dev/null
		rc=$?
		if [[ $rc -ne 0 ]]; then
			echo "FAIL: $p exited with status $rc (log $dir/$p.log):"
			tail -n 20 "$dir/$p.log"
			fail=1
		fi
	done
	pid=()
}

# drive N ARGS...: the driver against the current cluster.
drive() {
	local n=$1 log t0 rc
	shift
	log=$dir/driver_$(tr ' /' '__' <<<"$*").log
	t0=$(now_ms)
	timeout 240 "$drv" --servers "$n" --threads $threads --snet $snet --steps "$steps" \
		--transport "$transport" ${optims:+--optims "$optims"} "$url" "$@" 2>"$log"
	rc=$?
	echo "    (conformance $*: $(($(now_ms) - t0)) ms)"
	if ((rc != 0)); then
		echo "FAIL: conformance $* on $n servers (exit $rc; stderr in $log):"
		tail -n 20 "$log" # the guest's /tmp is gone after the run
		fail=1
	fi
}

# Dense and sparse async variables: two per optimizer.
if [[ -n $optims ]]; then
	nsplit=$((2 * ($(tr -cd , <<<"$optims" | wc -c) + 1)))
else
	nsplit=20
fi
start=$(now_ms)
for n in $ns; do
	echo "--- $n server(s), $threads threads each, $transport, $steps steps," \
		"optimizers: ${optims:-all}"
	if ((n == 1)); then
		cluster 1 || { fail=1; exit 1; }
		drive 1 async
		drive 1 sync
		stop
		continue
	fi
	cap=$(awk -v n="$n" 'BEGIN { print int(0.95 * n / (0.25 * (n - 1) + 0.04)) }')
	slices=$(((nsplit + cap - 1) / cap))
	for ((g = 0; g < slices; g++)); do
		cluster "$n" || { fail=1; exit 1; }
		drive "$n" --slice $g/$slices async
		stop
	done
	cluster "$n" || { fail=1; exit 1; }
	drive "$n" sync
	stop
done
secs=$((($(now_ms) - start) / 1000))
if [[ $fail -eq 0 ]]; then
	echo "PASS: conformance ($secs s)"
else
	echo "FAIL: conformance ($secs s)"
fi
exit $fail
