# shellcheck shell=bash
# Shared by the test_ckpt_*.sh scripts: a local cluster (tcp on 127.0.0.1) with a checkpoint
# root, on cluster_lib.sh (which see: pid[], fail, kv, url, wait_for, log_has, pass, flunk,
# cl_stop, ...). Source it after setting bin (the psplus binary) and work (a fresh folder); it
# also sets root (the checkpoint root) and gen (clusters started so far). run needs drv (the
# ckpt_driver binary).
. "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
root=$work/ckpt
gen=0

# start_sched N [extra scheduler options...]: a scheduler for N servers, logs in sched.log
# (appended: a restarted scheduler keeps one log).
start_sched() {
	local n=$1
	shift
	rm -f "$kv"
	cl_sched sched -sn "$n" -snet 1000 -smem "${SMEM:-64}" -sqps 10000000 \
		-bc False -cp "file://$root" --host 127.0.0.1 --heartbeat_ms 100 \
		--liveness_timeout_ms 1500 "$@"
	cl_wait_kv 5000 || exit 1
}

# start_server ID [extra options...]
start_server() {
	local i=$1
	shift
	cl_server "s$i" "$i" -bc False --transport tcp --host 127.0.0.1 \
		--threads "${THREADS:-2}" --kv_wait_ms 20000 "$@"
}

# cluster N: scheduler + N servers, up and past the start-up restore.
cluster() {
	local n=$1 i
	gen=$((gen + 1))
	echo "--- cluster $gen: $n servers" >>"$work/sched.log"
	start_sched "$n"
	for ((i = 0; i < n; i++)); do
		start_server "$i"
	done
	if ! wait_for 20000 log_ready; then
		flunk "cluster of $n servers did not come up"
		cl_dump_logs 20
		exit 1
	fi
}
# The scheduler's main loop runs once the start-up restore is over (or there was none).
log_ready() {
	[[ $(grep -c "main loop ready" "$work/sched.log") -ge $gen ]]
}

# run WHAT DRIVER_ARGS...: one ckpt_driver command against the cluster, its output appended to
# driver.out (stderr to driver.log); a PASS or FAIL line WHAT (with the output's tail).
# shellcheck disable=SC2154 # drv is the caller's
run() {
	local what=$1
	shift
	if timeout 120 "$drv" "$url" "$@" >>"$work/driver.out" 2>>"$work/driver.log"; then
		pass "$what"
	else
		flunk "$what (see $work/driver.out)"
		tail -n 5 "$work/driver.out"
	fi
}
