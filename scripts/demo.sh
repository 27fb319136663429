#!/usr/bin/env bash
# The main job (the README's first command): a local psplus cluster on loopback.
#
# Today: a scheduler and two servers with a file:// kv path in a temporary folder; they
# register, heartbeat for a few seconds, and shut down cleanly on SIGTERM. (Training a model end
# to end comes with the data plane and the client library.)
#
# Environment: PS_BUILD_DIR (default build/), PS_DEMO_SECONDS (default 3).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${PS_BUILD_DIR:-$root/build}
seconds=${PS_DEMO_SECONDS:-3}

bash "$root/scripts/setup.sh"
echo "demo: building in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target psplus_bin >/dev/null

bin=$build/bin/psplus
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN SECONDS: poll until PATTERN shows up in FILE.
wait_for() {
	local deadline=$((SECONDS + $3))
	until grep -q -- "$2" "$1" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			echo "demo: timed out waiting for '$2' in $1" >&2
			tail -n 20 "$1" >&2
			exit 1
		fi
		sleep 0.1
	done
}

kv="file://$work/scheduler.kv"
echo "demo: scheduler kv path $kv"
PSPLUS_LOG_LEVEL=debug "$bin" -r scheduler -sp "$kv" -sn 2 -snet 1000 -smem 1024 -sqps 100000 \
	-bc False --host 127.0.0.1 --heartbeat_ms 500 --liveness_timeout_ms 3000 \
	>"$work/scheduler.log" 2>&1 &
pids+=($!)
for id in 0 1; do
	"$bin" -r server -sp "$kv" -si "$id" -bc False --host 127.0.0.1 >"$work/server$id.log" 2>&1 &
	pids+=($!)
done

wait_for "$work/scheduler.log" "all 2 servers registered" 30
grep -E "listening|registered" "$work/scheduler.log" | sed 's/^/  /'
echo "demo: cluster up; heartbeats for ${seconds}s"
sleep "$seconds"
grep -E "heartbeat from server" "$work/scheduler.log" | tail -n 4 | sed 's/^/  /'
n=$(grep -c "heartbeat from server" "$work/scheduler.log" || true)
echo "demo: scheduler received $n heartbeats"

echo "demo: SIGTERM to the scheduler and the servers"
kill -TERM "${pids[@]}"
status=0
for p in "${pids[@]}"; do
	deadline=$((SECONDS + 5))
	while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
	if kill -0 "$p" 2>/dev/null; then
		echo "demo: process $p did not stop within 5 s" >&2
		status=1
	elif ! wait "$p"; then
		echo "demo: process $p exited with an error" >&2
		status=1
	fi
done
pids=()
grep -hE "stopped|shutting down|removed" "$work"/*.log | sed 's/^/  /'
if [[ -e $work/scheduler.kv ]]; then
	echo "demo: the kv entry was not removed" >&2
	status=1
fi
[[ $status -eq 0 ]] && echo "demo: clean shutdown"
exit $status
