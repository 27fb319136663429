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
. "$(dirname "$0")/cluster_lib.sh"
run=0

# cluster N: a scheduler and N servers in $dir, kv URL in $url. Returns 1 if they did not start.
cluster() {
	local n=$1 i
	run=$((run + 1))
	dir=$work/c$run
	mkdir -p "$dir"
	cl_dir "$dir"
	cl_sched sched -sn "$n" -snet $snet -smem 65536 -sqps 1000000000 -bc False \
		--host 127.0.0.1 --heartbeat_ms 200 --liveness_timeout_ms 20000
	cl_wait_kv 20000 || return 1
	for ((i = 0; i < n; i++)); do
		cl_server "s$i" "$i" -bc False --transport "$transport" \
			--host "${hosts[i % ${#hosts[@]}]}" --threads $threads
	done
	cl_wait_registered "$n" 30000
}

# stop: TERM the scheduler (the servers leave with it); every process must exit 0.
stop() {
	cl_check_alive
	cl_stop
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
		flunk "conformance $* on $n servers (exit $rc; stderr in $log):"
		tail -n 20 "$log" # the guest's /tmp is gone after the run
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
		cluster 1 || exit 1
		drive 1 async
		drive 1 sync
		stop
		continue
	fi
	cap=$(awk -v n="$n" 'BEGIN { print int(0.95 * n / (0.25 * (n - 1) + 0.04)) }')
	slices=$(((nsplit + cap - 1) / cap))
	for ((g = 0; g < slices; g++)); do
		cluster "$n" || exit 1
		drive "$n" --slice $g/$slices async
		stop
	done
	cluster "$n" || exit 1
	drive "$n" sync
	stop
done
secs=$((($(now_ms) - start) / 1000))
if [[ $fail -eq 0 ]]; then
	pass "conformance ($secs s)"
else
	flunk "conformance ($secs s)"
fi
exit $fail
