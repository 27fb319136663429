# Shared by the test_ckpt_*.sh scripts: start and stop a local cluster (tcp on 127.0.0.1) with a
# checkpoint root, wait for log lines, count failures. Source it after setting
#   bin (the psplus binary), work (a fresh folder); it sets kv, url, root, fail and pid[].
kv=$work/sched.kv
url=file://$kv
root=$work/ckpt
fail=0
declare -A pid=()
gen=0

ckpt_cleanup() {
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
trap ckpt_cleanup EXIT
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
log_has() { grep -qE -- "$2" "$work/$1.log" 2>/dev/null; }
pass() { echo "PASS: $*"; }
flunk() { echo "FAIL: $*"; fail=1; }

# start_sched N [extra scheduler options...]: a scheduler for N servers, logs in sched.log
# (appended: a restarted scheduler keeps one log).
start_sched() {
	local n=$1
	shift
	rm -f "$kv"
	"$bin" -r scheduler -sp "$url" -sn "$n" -snet 1000 -smem "${SMEM:-64}" -sqps 10000000 \
		-bc False -cp "file://$root" --host 127.0.0.1 --heartbeat_ms 100 \
		--liveness_timeout_ms 1500 "$@" 2>>"$work/sched.log" &
	pid[sched]=$!
	wait_for 5000 test -s "$kv" || { flunk "the scheduler did not publish $url"; exit 1; }
}

# start_server ID [extra options...]
start_server() {
	local i=$1
	shift
	"$bin" -r server -sp "$url" -si "$i" -bc False --transport tcp --host 127.0.0.1 \
		--threads "${THREADS:-2}" --kv_wait_ms 20000 "$@" 2>>"$work/s$i.log" &
	pid[s$i]=$!
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
		exit 1
	fi
}
# The scheduler's main loop runs once the start-up restore is over (or there was none).
log_ready() {
	[[ $(grep -c "main loop ready" "$work/sched.log") -ge $gen ]]
}

# stop_all: SIGTERM the scheduler (servers exit with it); every process must exit 0 (under
# the sanitizers that also means no leak and no error).
stop_all() {
	local p rc
	[[ -n ${pid[sched]:-} ]] && kill -TERM "${pid[sched]}" 2>/dev/null
	for p in "${!pid[@]}"; do
		if ! timeout 20 tail --pid="${pid[$p]}" -f /dev/null 2>/dev/null; then
			kill -9 "${pid[$p]}" 2>/dev/null
		fi
		wait "${pid[$p]}" 2>/dev/null
		rc=$?
		[[ $rc -eq 0 ]] || flunk "$p exited with status $rc (log $work/$p.log)"
		unset "pid[$p]"
	done
}
