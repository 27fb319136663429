#!/usr/bin/env bash
# The main job (the README's first command): train a click-through-rate model end to end on a
# local psplus cluster.
#
# A scheduler and two servers on loopback (file:// kv path in a temporary folder, the data plane
# on rdma when an active device exists and tcp otherwise) and one psplus-ctr worker, which
# generates synthetic data with a planted true model, trains a hash embedding and a dense layer
# through the cluster (server-side Adagrad), and reports the test AUC next to the planted
# model's. Then SIGTERM to the cluster and a check that every process exits cleanly.
#
# Fails (non-zero) if anything does not start, the worker fails, its AUC is more than 0.02
# below the planted AUC, or the cluster does not shut down cleanly. Every wait is bounded.
#
# Environment: PS_BUILD_DIR (default build/); PS_DEMO_THREADS (data-path threads per server,
# default 1); PS_DEMO_TIMEOUT (seconds the worker may take, default 300); PS_DEMO_ARGS (extra
# psplus-ctr options, e.g. "--optimizer adam --epochs 3").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${PS_BUILD_DIR:-$root/build}
threads=${PS_DEMO_THREADS:-1}
worker_timeout=${PS_DEMO_TIMEOUT:-300}
read -r -a extra_args <<<"${PS_DEMO_ARGS:-}"
start=$SECONDS

bash "$root/scripts/setup.sh"
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "demo: building in $build"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
	cmake --build "$build" -j "$(nproc)" --target psplus_bin psplus-ctr; } >"$work/build.log" 2>&1; then
	tail -n 30 "$work/build.log" >&2
	echo "demo: the build failed (log above)" >&2
	exit 1
fi
bin=$build/bin/psplus
ctr=$build/bin/psplus-ctr
build_s=$((SECONDS - start))

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

# Budgets far above what the job needs: the demo is about training, not placement limits.
kv="file://$work/scheduler.kv"
echo "demo: scheduler kv path $kv"
"$bin" -r scheduler -sp "$kv" -sn 2 -snet 100000 -smem 16384 -sqps 100000000 -bc False \
	--host 127.0.0.1 >"$work/scheduler.log" 2>&1 &
pids+=($!)
for id in 0 1; do
	"$bin" -r server -sp "$kv" -si "$id" -bc False --host 127.0.0.1 --transport auto \
		--threads "$threads" >"$work/server$id.log" 2>&1 &
	pids+=($!)
done
wait_for "$work/scheduler.log" "all 2 servers registered" 30
grep -hE "listening|registered" "$work/scheduler.log" | sed 's/^/  /'
cluster_s=$((SECONDS - start))

echo "demo: psplus-ctr --kv $kv ${extra_args[*]}"
t0=$SECONDS
set +e
timeout --signal=TERM --kill-after=5 "$worker_timeout" \
	"$ctr" --kv "$kv" --transport auto "${extra_args[@]}" | tee "$work/ctr.out"
rc=${PIPESTATUS[0]}
set -e
train_s=$((SECONDS - t0))
status=0
if ((rc == 124)); then
	echo "demo: psplus-ctr did not finish within ${worker_timeout}s" >&2
	status=1
elif ((rc != 0)); then
	echo "demo: psplus-ctr failed (exit $rc)" >&2
	status=1
fi

echo "demo: SIGTERM to the scheduler and the servers"
kill -TERM "${pids[@]}" 2>/dev/null || true
for p in "${pids[@]}"; do
	deadline=$((SECONDS + 10))
	while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
	if kill -0 "$p" 2>/dev/null; then
		echo "demo: process $p did not stop within 10 s" >&2
		status=1
	elif ! wait "$p"; then
		echo "demo: process $p exited with an error" >&2
		status=1
	fi
done
pids=()
grep -hE "stopped|shutting down|removed" "$work"/*.log | sed 's/^/  /' || true
if [[ -e $work/scheduler.kv ]]; then
	echo "demo: the kv entry was not removed" >&2
	status=1
fi
if ((status != 0)); then
	for f in "$work"/scheduler.log "$work"/server0.log "$work"/server1.log; do
		echo "--- last lines of $(basename "$f")" >&2
		tail -n 15 "$f" >&2
	done
fi

# The worker's verdict: its last line, "demo: auc=A planted_auc=P".
last=$(tail -n 1 "$work/ctr.out" 2>/dev/null || true)
if ((rc == 0)); then
	if [[ $last =~ ^demo:\ auc=([0-9.]+)\ planted_auc=([0-9.]+)$ ]]; then
		auc=${BASH_REMATCH[1]} planted=${BASH_REMATCH[2]}
		if awk -v a="$auc" -v p="$planted" 'BEGIN { exit !(a >= p - 0.02) }'; then
			echo "demo: the model's AUC $auc is within 0.02 of the planted $planted"
		else
			echo "demo: the model's AUC $auc is more than 0.02 below the planted $planted" >&2
			status=1
		fi
	else
		echo "demo: psplus-ctr's last line is not 'demo: auc=... planted_auc=...'" >&2
		status=1
	fi
fi
echo "demo: times: build ${build_s}s, cluster up at ${cluster_s}s, training ${train_s}s, total $((SECONDS - start))s"
if ((status == 0)); then
	echo "demo: clean shutdown"
	echo "$last"
fi
exit $status
