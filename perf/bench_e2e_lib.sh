# shellcheck shell=bash
# bench_e2e_lib.sh: the end-to-end part of scripts/bench-tcp.sh (host, tcp) and of
# perf/rxe_bench_inner.sh (the soft-RoCE guest, rdma), sourced by both:
#
#   a scheduler and 2 servers (psplus, one data-path thread each), psplus-bench-ps against them
#   (sparse pull of 1,024 ids x 64 floats, uniform and Zipf(1.1), Zipf again with each distinct
#   id sent once (--dedupe always), and sparse push, uniform), the
#   goodput of each as a ratio to the caller's reference bandwidth measured in the same run, and
#   the latency per operation.
#
# The caller sets, before e2e_cluster_start:
#   E2E_BIN       the psplus binary         E2E_PS    the psplus-bench-ps binary
#   E2E_DIR       folder for logs (fresh)   E2E_TRANSPORT  tcp or rdma
#   E2E_HOSTS     array: server i listens on E2E_HOSTS[i]
#   E2E_START_TIMEOUT  seconds a cluster may take to come up (and to go down)
#   E2E_RUN_TIMEOUT    seconds one psplus-bench-ps may take
#   e2e_on_server, e2e_on_client: arrays prefixed to the commands (e.g. taskset), may be empty
# and defines e2e_reference TAG: run the reference once (its logs named after TAG) and set
# E2E_REF_VALUE to its MB/sec ("" if it could not be read); optionally e2e_before NAME.REP and
# e2e_after NAME.REP, run around each test (counters, say). Then it calls e2e_cluster_start,
# e2e_runs REPEAT ARGS..., e2e_cluster_stop and e2e_summary REF_NAME REPEAT. Functions return
# non-zero on failure and say why on stderr; nothing here exits.
#
# The reference brackets every test: per repetition R T1 R T2 R T3 R, and each test's ratio is
# its goodput over the mean of the two references beside it. On a shared host (and in the TCG
# guest even more) the load changes within seconds; one reference per repetition, measured a
# minute before the last test, gave ratios anywhere from 0.3 to 1.3 for the same code.
#
# Names of the tests (and of the lines): pull_1024x64_uniform, pull_1024x64_zipf,
# pull_1024x64_zipf_dedupe (information), push_1024x64_uniform. The lines e2e_summary prints:
#   raw.REP NAME goodput=.. REF_NAME=BEFORE/AFTER MB/sec ratio .. p50=.. p99=.. usec
#   ratio NAME <median over repetitions of goodput / reference>
#   latency NAME p50=.. p99=.. usec (medians over repetitions; per operation, not halved)
#   cpu NAME client=.. server0=.. server1=.. us per call (medians; see e2e_test)
#   target pull_1024x64_uniform>=0.8 met|MISSED, the same for pull_1024x64_zipf

E2E_TESTS=(pull_1024x64_uniform pull_1024x64_zipf pull_1024x64_zipf_dedupe push_1024x64_uniform)
# What the caller sets (after sourcing), with their defaults.
declare -ga E2E_HOSTS=(127.0.0.1 127.0.0.1) e2e_on_server=() e2e_on_client=()
declare -gA e2e_pid=() e2e_ratio_of=()
declare -gA E2E_REFS=() # [REP.K]: the reference before test K + 1 (after test K) of REP
E2E_REF_VALUE=

e2e_msg() { echo "bench-e2e: $*" >&2; }

# e2e_wait_log FILE REGEX SECONDS PID: until FILE matches (0), PID died or time ran out (1).
e2e_wait_log() {
	local deadline=$((SECONDS + $3))
	until grep -qE -- "$2" "$1" 2>/dev/null; do
		kill -0 "$4" 2>/dev/null || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# e2e_cluster_start: the scheduler on 127.0.0.1 (the control plane is tcp) and the servers.
# Budgets: -smem 700 MB per server makes each 256 MiB variable (1,048,576 rows x 64 floats)
# wanted on 2 servers (over a quarter of a server: docs/placement.md), one half each; network
# and query budgets far above the load.
e2e_cluster_start() {
	local i kv=$E2E_DIR/sched.kv
	mkdir -p "$E2E_DIR"
	# Nothing of an earlier run for the waits below to find before the children write.
	rm -f "$kv" "$E2E_DIR"/sched.log "$E2E_DIR"/s[01].log
	E2E_KV=file://$kv
	"${e2e_on_server[@]}" "$E2E_BIN" -r scheduler -sp "$E2E_KV" -sn 2 -snet 1000000 -smem 700 \
		-sqps 1000000000 -bc False --host 127.0.0.1 >"$E2E_DIR/sched.log" 2>&1 &
	e2e_pid[sched]=$!
	for i in 0 1; do
		"${e2e_on_server[@]}" "$E2E_BIN" -r server -sp "$E2E_KV" -si $i -bc False \
			--transport "$E2E_TRANSPORT" --host "${E2E_HOSTS[i]}" --threads 1 \
			>"$E2E_DIR/s$i.log" 2>&1 &
		e2e_pid[s$i]=$!
	done
	if ! e2e_wait_log "$E2E_DIR/sched.log" "all 2 servers registered" "$E2E_START_TIMEOUT" \
		"${e2e_pid[sched]}"; then
		e2e_msg "the cluster did not come up within $E2E_START_TIMEOUT s:"
		tail -n 5 "$E2E_DIR"/sched.log "$E2E_DIR"/s0.log "$E2E_DIR"/s1.log >&2
		e2e_cluster_kill
		return 1
	fi
	e2e_msg "cluster up: $E2E_KV, 2 servers over $E2E_TRANSPORT on ${E2E_HOSTS[*]}"
}

e2e_cluster_kill() {
	local p
	for p in "${e2e_pid[@]}"; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	e2e_pid=()
}

# e2e_cluster_stop: SIGTERM to the scheduler (the servers leave with it); every process must
# exit 0 within E2E_START_TIMEOUT seconds, else it is killed and the stop fails.
e2e_cluster_stop() {
	local p rc=0 deadline
	for p in "${!e2e_pid[@]}"; do
		kill -0 "${e2e_pid[$p]}" 2>/dev/null || { e2e_msg "$p died during the run"; rc=1; }
	done
	kill -TERM "${e2e_pid[sched]}" 2>/dev/null
	deadline=$((SECONDS + E2E_START_TIMEOUT))
	for p in sched s0 s1; do
		while kill -0 "${e2e_pid[$p]}" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if kill -0 "${e2e_pid[$p]}" 2>/dev/null; then
			e2e_msg "$p did not stop within $E2E_START_TIMEOUT s; killed"
			kill -KILL "${e2e_pid[$p]}" 2>/dev/null
			rc=1
		fi
		wait "${e2e_pid[$p]}" 2>/dev/null || {
			e2e_msg "$p exited with an error (log $E2E_DIR/$p.log):"
			tail -n 5 "$E2E_DIR/$p.log" >&2
			rc=1
		}
		unset "e2e_pid[$p]"
	done
	return $rc
}

# e2e_ticks PID: user + system CPU clock ticks of PID so far (0 if it is gone).
e2e_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# e2e_test NAME REP ARGS...: psplus-bench-ps ARGS against the cluster, output to stdout and
# E2E_DIR/NAME.REP.log (JSON next to it), then a line
#   cpu NAME.REP client=.. server0=.. server1=.. us per call
# (the client's from its own measure over the loop; each server's CPU over the whole run divided
# by every call the client made, preparation included). Fails unless it exits 0 with its data
# checked.
e2e_test() {
	local name=$1 rep=$2 log rc a0 a1 b0 b1 calls hz
	shift 2
	log=$E2E_DIR/$name.$rep.log
	a0=$(e2e_ticks "${e2e_pid[s0]}") b0=$(e2e_ticks "${e2e_pid[s1]}")
	timeout --kill-after=5 "$E2E_RUN_TIMEOUT" "${e2e_on_client[@]}" "$E2E_PS" --kv "$E2E_KV" \
		--transport "$E2E_TRANSPORT" --json "$E2E_DIR/$name.$rep.json" "$@" >"$log" 2>&1
	rc=$?
	a1=$(e2e_ticks "${e2e_pid[s0]}") b1=$(e2e_ticks "${e2e_pid[s1]}")
	cat "$log"
	if ((rc != 0)) || ! grep -q '^ data check *: ok' "$log"; then
		e2e_msg "$name (repetition $rep) failed: exit $rc"
		return 1
	fi
	grep -q "^ result $name " "$log" || { e2e_msg "$name: no 'result $name' line"; return 1; }
	calls=$(e2e_field "$name" "$rep" calls)
	hz=$(getconf CLK_TCK)
	awk -v n="$name.$rep" -v c="$(e2e_field "$name" "$rep" client_cpu_us)" -v k="$calls" \
		-v s0=$((a1 - a0)) -v s1=$((b1 - b0)) -v hz="$hz" 'BEGIN {
		printf "cpu %s client=%s server0=%.1f server1=%.1f us per call\n", n, c,
			s0 * 1e6 / hz / k, s1 * 1e6 / hz / k }' >"$E2E_DIR/$name.$rep.cpu"
	cat "$E2E_DIR/$name.$rep.cpu"
}

# e2e_args NAME: the psplus-bench-ps options of test NAME.
e2e_args() {
	case $1 in
	pull_*_uniform) echo "-t pull --ids uniform" ;;
	pull_*_zipf) echo "-t pull --ids zipf" ;;
	pull_*_zipf_dedupe) echo "-t pull --ids zipf --dedupe always" ;;
	push_*_uniform) echo "-t push --ids uniform" ;;
	esac
}

# e2e_runs REPEAT ARGS...: REPEAT repetitions of R T1 R T2 R T3 R (R: e2e_reference; Tk: the
# tests with their options and ARGS). Returns 1 if a test failed (the others still run).
e2e_runs() {
	local repeat=$1 rep k rc=0
	shift
	for ((rep = 1; rep <= repeat; rep++)); do
		e2e_reference "$rep.0"
		E2E_REFS[$rep.0]=$E2E_REF_VALUE
		for ((k = 1; k <= ${#E2E_TESTS[@]}; k++)); do
			if declare -F e2e_before >/dev/null; then e2e_before "${E2E_TESTS[k - 1]}.$rep"; fi
			# shellcheck disable=SC2046 # the test's options are words
			e2e_test "${E2E_TESTS[k - 1]}" "$rep" $(e2e_args "${E2E_TESTS[k - 1]}") "$@" ||
				rc=1
			if declare -F e2e_after >/dev/null; then e2e_after "${E2E_TESTS[k - 1]}.$rep"; fi
			e2e_reference "$rep.$k"
			E2E_REFS[$rep.$k]=$E2E_REF_VALUE
		done
	done
	return $rc
}

# e2e_ref_median: the median of every reference measured.
e2e_ref_median() {
	e2e_median "${E2E_REFS[@]}"
}

# e2e_field NAME REP KEY: KEY's value on the result line of that run ("" if none).
e2e_field() {
	sed -n "s/^ result $1 .*[ ]$3=\([^ ]*\).*/\1/p" "$E2E_DIR/$1.$2.log" 2>/dev/null | head -n 1
}

e2e_median() {
	printf '%s\n' "$@" | grep -E '^[0-9]+([.][0-9]+)?$' | sort -g | awk '{ v[NR] = $1 } END {
		if (!NR) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
		else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

e2e_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { n = "^[0-9]+([.][0-9]+)?$"
		if (a ~ n && b ~ n && b + 0 > 0) printf "%.3f", a / b; else print "nan" }'
}

# e2e_cpu_summary NAME REPEAT: "cpu NAME client=.. server0=.. server1=.. us per call", the
# medians over the repetitions.
e2e_cpu_summary() {
	local rep k line
	local -A v=()
	for ((rep = 1; rep <= $2; rep++)); do
		line=$(cat "$E2E_DIR/$1.$rep.cpu" 2>/dev/null)
		for k in client server0 server1; do
			v[$k]+=" $(sed -n "s/.* $k=\([^ ]*\).*/\1/p" <<<"$line")"
		done
	done
	# shellcheck disable=SC2086 # the values are words
	echo "cpu $1 client=$(e2e_median ${v[client]}) server0=$(e2e_median ${v[server0]})" \
		"server1=$(e2e_median ${v[server1]}) us per call (medians of the repetitions)"
}

# e2e_summary REF_NAME REPEAT: the raw, ratio, latency and target lines (see the top).
e2e_summary() {
	local ref_name=$1 repeat=$2 name rep g p50 p99 r k=0 before after ref
	local -a rs p50s p99s
	for name in "${E2E_TESTS[@]}"; do
		rs=() p50s=() p99s=()
		k=$((k + 1))
		for ((rep = 1; rep <= repeat; rep++)); do
			g=$(e2e_field "$name" "$rep" goodput_mbs)
			p50=$(e2e_field "$name" "$rep" p50_us)
			p99=$(e2e_field "$name" "$rep" p99_us)
			before=${E2E_REFS[$rep.$((k - 1))]:-} after=${E2E_REFS[$rep.$k]:-}
			# The mean of the references on either side (one if the other is missing).
			ref=$(awk -v a="$before" -v b="$after" 'BEGIN { n = "^[0-9]+([.][0-9]+)?$"
				if (a ~ n && b ~ n) printf "%.2f", (a + b) / 2
				else if (a ~ n) print a; else if (b ~ n) print b; else print "nan" }')
			r=$(e2e_ratio "${g:-nan}" "$ref")
			rs+=("$r") p50s+=("${p50:-nan}") p99s+=("${p99:-nan}")
			echo "raw.$rep $name goodput=${g:-?} $ref_name=${before:-?}/${after:-?} MB/sec" \
				"ratio $r p50=${p50:-?} p99=${p99:-?} usec"
		done
		e2e_ratio_of[$name]=$(e2e_median "${rs[@]}")
		echo "ratio $name ${e2e_ratio_of[$name]}"
		echo "latency $name p50=$(e2e_median "${p50s[@]}") p99=$(e2e_median "${p99s[@]}")" \
			"usec (per operation; medians of the repetitions)"
		e2e_cpu_summary "$name" "$repeat"
	done
	for name in pull_1024x64_uniform pull_1024x64_zipf; do
		r=${e2e_ratio_of[$name]}
		if awk -v v="$r" 'BEGIN { exit !(v != "nan" && v >= 0.8) }'; then
			echo "target $name>=0.8 met"
		else
			echo "target $name>=0.8 MISSED"
		fi
	done
}
