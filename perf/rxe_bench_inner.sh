#!/usr/bin/env bash
# rxe_bench_inner.sh BUILD_DIR
#
# The guest half of scripts/bench-rxe.sh: runs inside the soft-RoCE guest (scripts/rxe-run.sh),
# in one boot, perftest and psplus-bench-tp over rdma on the SAME device, both ends on it:
#
#   perftest (rdma_cm, -R), server and client on rxe1, the client connecting to rxe1's address:
#     ib_write_bw -s 65536 -D N       the reference for psplus write_bw 64 KiB
#     ib_send_lat -s 64               the reference for psplus send_lat 64 B (both one-way)
#     ib_write_bw -s 262144 -D N      stored for the end-to-end comparisons to come
#   psplus-bench-tp --transport rdma on the same device:
#     write_bw 64 KiB, send_lat 64 B, gather 256 rows x 256 B from a registered 1 GiB table
#
# The perftest/psplus comparison runs are repeated PS_BENCH_REPEAT times, interleaved; in each
# repetition the latency pair runs PS_BENCH_LAT_PAIRS times (this host's latency is bimodal:
# either tool's typical latency jumps from ~16 to ~30 us for a whole run now and then, so more
# short pairs give a steadier median of the per-pair ratios). The
# gather runs once, as PS_BENCH_GATHER_PAIRS pairs of rounds in one connection: a gather round,
# then a round writing the same 64 KiB as one row of the same table (the contiguous baseline:
# same memory, same direction, one SGE). It prints each tool's output, "raw..." lines, then the
# lines scripts/bench-rxe.sh and people read (medians of the per-repetition / per-pair ratios):
#   ratio write_bw_64k <psplus / perftest>              (target >= 0.9)
#   ratio send_lat_64 <psplus p50 / perftest t_typical> (one-way both; lower is better; <= 1.2;
#                                                        the median over every latency pair)
#   ratio gather_256x256 <gather bw / contiguous 64 KiB bw>               (target >= 0.85)
#   info write_bw_64k_events <psplus -e / perftest>     (both psplus ends sleep on events)
#   copied_bytes gather <n>                             (the sender's bytes_copied; must be 0)
#   ref write_bw_256k <perftest MB/sec>
#   target NAME met|MISSED ...
# and each psplus JSON file between "BEGIN-JSON name" and "END-JSON" lines.
#
# Then the parameter service end to end (perf/bench_e2e_lib.sh): a scheduler on 127.0.0.1 and
# 2 servers with --transport rdma, server i on device i's address (PS_RXE<i>_ADDR: one rxe device
# per server, as tests/rxe/conformance_rxe.sh runs them), and psplus-bench-ps --transport rdma:
# sparse pull of 1,024 ids x 64 floats (uniform and Zipf(1.1) ids) and sparse push (uniform),
# each PS_BENCH_DURATION seconds, PS_BENCH_REPEAT times, each test bracketed by perftest
# `ib_write_bw -s 262144` on rxe1 (the reference: a test's ratio is over the mean of the runs
# before and after it; "ref write_bw_256k" is the median of all of them):
#   ratio pull_1024x64_uniform <pull goodput / ib_write_bw 256 KiB>   (target >= 0.8)
#   ratio pull_1024x64_zipf, pull_1024x64_zipf_dedupe (information: each distinct id once),
#   ratio push_1024x64_uniform                                        (the same reference)
#   latency NAME p50=.. p99=.. usec                  (per operation, one whole call)
#   target pull_1024x64_uniform>=0.8 met|MISSED, the same for pull_1024x64_zipf
#
# Every wait is bounded: servers must show their listening line within PS_BENCH_START_TIMEOUT
# seconds, every process runs under `timeout`. Exit status: 0 if every run finished and passed
# its data check, 1 otherwise (a missed target is reported, not an error).
#
# After each run a line "counters NAME: sent_pkts +N rcvd_pkts +N ..." gives the device's
# hw_counters that moved (what each tool put on the wire).
#
# Environment: PS_RXE1_ADDR (set by rxe-run.sh), PS_BENCH_DEV (default rxe1),
# PS_BENCH_DURATION (s, default 6), PS_BENCH_MARGIN (s, default 1), PS_BENCH_LAT_ITERS
# (default 1000, perftest's), PS_BENCH_TABLE (gather table, default 1G),
# PS_BENCH_START_TIMEOUT (default 180: the gather server fills and registers its table first),
# PS_BENCH_REPEAT (interleaved repetitions of the comparison runs, default 3; the ratios are the
# medians of the per-repetition ratios), PS_BENCH_LAT_PAIRS (latency pairs per repetition,
# default 3), PS_BENCH_GATHER_PAIRS (default 5),
# PS_BENCH_PARTS (default "transport e2e"), PS_BENCH_PS_CLIENTS (psplus-bench-ps -q, default 1),
# PS_BENCH_PS_ARGS (more psplus-bench-ps options).
set -uo pipefail

if (($# != 1)) || [[ ! -x $1/bin/psplus-bench-tp || ! -x $1/bin/psplus ||
	! -x $1/bin/psplus-bench-ps ]]; then
	echo "usage: $0 BUILD_DIR (with bin/psplus-bench-tp, bin/psplus-bench-ps, bin/psplus)" >&2
	exit 2
fi
# shellcheck source=SCRIPTDIR/bench_e2e_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench_e2e_lib.sh"
build=$1
tp_bin=$build/bin/psplus-bench-tp
dev=${PS_BENCH_DEV:-rxe1}
addr=${PS_RXE1_ADDR:?PS_RXE1_ADDR is not set: run this inside scripts/rxe-run.sh}
dur=${PS_BENCH_DURATION:-6}
margin=${PS_BENCH_MARGIN:-1}
lat_iters=${PS_BENCH_LAT_ITERS:-1000}
table=${PS_BENCH_TABLE:-1G}
start_timeout=${PS_BENCH_START_TIMEOUT:-180}
repeat=${PS_BENCH_REPEAT:-3}
lat_pairs=${PS_BENCH_LAT_PAIRS:-3}
gather_pairs=${PS_BENCH_GATHER_PAIRS:-5}
parts=${PS_BENCH_PARTS:-transport e2e}
read -r -a sdevs <<<"${PS_RXE_DEVS:-rxe0 rxe1}"
sdevs=("${sdevs[@]:0:2}") # the servers' devices (end-to-end part)
ps_clients=${PS_BENCH_PS_CLIENTS:-1}
read -r -a ps_args <<<"${PS_BENCH_PS_ARGS:-}"
run_timeout=$((dur + 180)) # one process, start to end, under TCG
out=/tmp/bench-rxe
port=18800
failed=0
mkdir -p "$out"
ulimit -l unlimited 2>/dev/null || true

log() { echo "bench-rxe: $*" >&2; }
# counters_snap FILE [DEV]: "name value" per hw_counter of DEV (default: the device).
counters_snap() {
	local f
	for f in "/sys/class/infiniband/${2:-$dev}/ports/1/hw_counters"/*; do
		[[ -r $f ]] && echo "$(basename "$f") $(<"$f")"
	done >"$1" 2>/dev/null
}
counters_diff() {
	awk -v name="$3" 'NR == FNR { a[$1] = $2; next }
		($1 in a) && $2 != a[$1] { d = d sprintf(" %s +%d", $1, $2 - a[$1]) }
		END { print "counters " name ":" (d == "" ? " none" : d) }' "$1" "$2"
}
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_line FILE REGEX PID: until FILE has a line matching REGEX (0), PID exits (1), or
# start_timeout passes (1).
wait_line() {
	local f=$1 re=$2 pid=$3 t0
	t0=$(date +%s)
	while (($(date +%s) - t0 < start_timeout)); do
		grep -qE "$re" "$f" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || { grep -qE "$re" "$f" 2>/dev/null; return; }
		sleep 0.2
	done
	return 1
}

# run_pair NAME READY_REGEX CONNECTED_REGEX CMD...: server `CMD -p PORT`, then, once the server
# printed READY_REGEX, client `CMD -p PORT ADDR`. A client that fails before its output shows
# CONNECTED_REGEX is started again while the server waits (perftest's server prints its banner a
# moment before rdma_cm listens); a client that fails after connecting (perftest crashes now and
# then under TCG) gets the whole pair started again, once. Client output to stdout and
# $out/NAME.log, the server's to $out/NAME.server.log.
run_pair() {
	local name=$1 ready=$2 connected=$3 spid rc=1 src=1 try attempt t0
	shift 3
	counters_snap "$out/$name.cnt0"
	t0=$(date +%s.%N)
	for ((attempt = 1; attempt <= 2; attempt++)); do
		port=$((port + 1))
		rm -f "$out/$name.server.log" # not seen by wait_line before the child truncates it
		timeout --kill-after=5 "$run_timeout" "$@" -p "$port" >"$out/$name.server.log" 2>&1 &
		spid=$!
		if ! wait_line "$out/$name.server.log" "$ready" "$spid"; then
			log "$name: the server did not get ready within ${start_timeout} s:"
			cat "$out/$name.server.log" >&2
			kill "$spid" 2>/dev/null
			wait "$spid" 2>/dev/null
			rc=1
			continue
		fi
		for ((try = 1; try <= 5; try++)); do
			timeout --kill-after=5 "$run_timeout" "$@" -p "$port" "$addr" \
				>"$out/$name.log" 2>&1
			rc=$?
			((rc == 0)) && break
			grep -qE "$connected" "$out/$name.log" && break
			kill -0 "$spid" 2>/dev/null || break
			log "$name: client attempt $try exited $rc before connecting; retrying"
			sleep 1
		done
		if ((rc == 0)); then
			# The server ends by itself after a client's run; bounded by its own timeout.
			wait "$spid"
			src=$?
			break
		fi
		log "$name: client exited $rc; starting the pair again"
		cat "$out/$name.log" >&2
		kill "$spid" 2>/dev/null
		wait "$spid" 2>/dev/null
	done
	cat "$out/$name.log"
	counters_snap "$out/$name.cnt1"
	counters_diff "$out/$name.cnt0" "$out/$name.cnt1" "$name"
	log "$name: client exit $rc, server exit $src, $(elapsed "$t0") s"
	if ((rc != 0 || src != 0)); then
		echo "--- $name server output:"
		cat "$out/$name.server.log"
		failed=1
		return 1
	fi
	return 0
}

# col LOG COLUMN SIZE: the value of COLUMN (a header token such as "average[MB/sec]" or
# "t_typical[usec]") in the table row whose first field is SIZE. Header tokens that start with
# '#' or contain '[' end a column (perftest's "BW peak[MB/sec]" is one column of two words).
col() {
	awk -v c="$2" -v s="$3" '
		!idx { n = split($0, t, " "); k = 0
		       for (i = 1; i <= n; i++) { if (t[i] ~ /^#/ || index(t[i], "[")) k++
						  if (t[i] == c) { idx = k; break } }
		       next }
		$1 == s && NF >= idx { print $idx; exit }' "$1"
}
# median V...: the middle value of the numeric arguments ("nan" ones are left out).
median() { e2e_median "$@"; }
# ratio A B: A / B, or nan unless both are plain positive numbers (perftest prints "inf" when
# its cycle counter misbehaves).
ratio() { e2e_ratio "$@"; }
# target NAME VALUE OP LIMIT
target() {
	if awk -v v="$2" -v l="$4" -v op="$3" \
		'BEGIN { exit !(v != "nan" && (op == ">=" ? v >= l : v <= l)) }'; then
		echo "target $1$3$4 met"
	else
		echo "target $1$3$4 MISSED"
	fi
}

echo "=== psplus rdma transport vs perftest, soft-RoCE $dev ($addr), $(uname -r)," \
	"$(nproc) vCPUs (TCG), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "=== perftest $(dpkg-query -W -f='${Version}' perftest 2>/dev/null); bandwidth -D $dur" \
	"-f $margin; latency -n $lat_iters; $repeat interleaved repetitions"
echo "=== ratio lines: bandwidth psplus/perftest (higher is better); latency psplus p50 /"
echo "===   perftest t_typical, both one-way = RTT/2 (LOWER is better); gather / contiguous."
# What the servers print once they wait for a client, and the clients once connected.
pt_ready='Waiting for client'
tp_ready='Waiting for a client'
pt_conn='remote address'
tp_conn='^ #bytes|data check'

# pt NAME ARGS... / tp NAME ARGS...: a perftest pair / a psplus-bench-tp pair over rdma.
# perftest writes its stdout through stdio: stdbuf line-buffers it so its lines show up.
pt() { run_pair "$1" "$pt_ready" "$pt_conn" stdbuf -oL -eL "${@:2}"; }
tp() { run_pair "$1" "$tp_ready" "$tp_conn" "$tp_bin" --transport rdma -d "$addr" "${@:2}"; }
bw=(-D "$dur" -f "$margin")
# The transport runs. Interleaved repetitions: a run and its reference are minutes apart at
# most, so a change of the host's load (the guest is emulated on a shared host) hits both; the
# ratios are the medians of the per-repetition ratios.
transport_runs() {
	for ((rep = 1; rep <= repeat; rep++)); do
		# The latency pair first: right after the bandwidth runs both tools ran slower and
		# apart (psplus 1.24-1.26 x perftest there, 1.10 on its own; docs/performance.md).
		for ((k = 1; k <= lat_pairs; k++)); do
			pt "pt_send_lat_64.$rep.$k" ib_send_lat -R -d "$dev" -s 64 -n "$lat_iters"
			tp "tp_send_lat_64.$rep.$k" -t send_lat -s 64 -n "$lat_iters" \
				--json "$out/tp_send_lat_64.$rep.$k.json"
		done
		pt "pt_write_bw_64k.$rep" ib_write_bw -R -d "$dev" -s 65536 "${bw[@]}"
		tp "tp_write_bw_64k.$rep" -t write_bw -s 64K "${bw[@]}" \
			--json "$out/tp_write_bw_64k.$rep.json"
		# Information: the same with both ends sleeping on completion events (-e), which
		# leaves the guest's two vCPUs to rxe's softirq work instead of two spinning pollers.
		tp "tp_write_bw_64k_e.$rep" -t write_bw -s 64K "${bw[@]}" -e
	done
	# The gather against its contiguous baseline, in one connection: each gather round is
	# followed by a round writing the same 64 KiB as one row of the same table (one SGE), so
	# the two see the same moment of the host; the ratio is the median over the pairs.
	tp tp_gather_256x256 -t gather --rows 256 --row-size 256 --table-size "$table" "${bw[@]}" \
		--contig-pairs "$gather_pairs" --json "$out/tp_gather_256x256.json"
}

# The reference of the end-to-end ratios: perftest's ib_write_bw 256 KiB on rxe1.
e2e_reference() {
	pt "pt_write_bw_256k.$1" ib_write_bw -R -d "$dev" -s 262144 "${bw[@]}"
	E2E_REF_VALUE=$(col "$out/pt_write_bw_256k.$1.log" 'average[MB/sec]' 262144)
}

# Around each end-to-end test: the hw_counters of both servers' devices that moved.
e2e_before() {
	local d
	for d in "${sdevs[@]}"; do counters_snap "$out/$1.$d.cnt0" "$d"; done
}
e2e_after() {
	local d
	for d in "${sdevs[@]}"; do
		counters_snap "$out/$1.$d.cnt1" "$d"
		counters_diff "$out/$1.$d.cnt0" "$out/$1.$d.cnt1" "$1 ($d)"
	done
}

# The end-to-end part (perf/bench_e2e_lib.sh): a cluster over rdma, one rxe device per server,
# the three psplus-bench-ps tests, each bracketed by the reference.
e2e_part() {
	local -a common=(-D "$dur" -f "$margin" -q "$ps_clients" "${ps_args[@]}")
	E2E_BIN=$build/bin/psplus
	E2E_PS=$build/bin/psplus-bench-ps
	E2E_DIR=$out/e2e
	E2E_TRANSPORT=rdma
	E2E_HOSTS=("${PS_RXE0_ADDR:?}" "${PS_RXE1_ADDR:?}")
	E2E_START_TIMEOUT=$start_timeout
	E2E_RUN_TIMEOUT=$run_timeout
	e2e_on_server=() e2e_on_client=()
	echo
	echo "=== the parameter service end to end: 2 servers (rdma on ${E2E_HOSTS[*]}, 1 data-path" \
		"thread each), psplus-bench-ps -q $ps_clients -D $dur -f $margin ${ps_args[*]}"
	if ! e2e_cluster_start; then
		failed=1
		return 1
	fi
	e2e_runs "$repeat" "${common[@]}" || failed=1
	e2e_cluster_stop || failed=1
}

# Per repetition: the raw numbers and the ratios against perftest.
transport_summary() {
	local g gline m_gather g_med copied m_bw m_lat
	r_bw=() r_bw_e=() r_lat=() tp_bws=()
	echo
	for ((rep = 1; rep <= repeat; rep++)); do
		pt_bw=$(col "$out/pt_write_bw_64k.$rep.log" 'average[MB/sec]' 65536)
		tp_bw=$(col "$out/tp_write_bw_64k.$rep.log" 'average[MB/sec]' 65536)
		tp_bw_e=$(col "$out/tp_write_bw_64k_e.$rep.log" 'average[MB/sec]' 65536)
		r_bw+=("$(ratio "$tp_bw" "$pt_bw")")
		r_bw_e+=("$(ratio "$tp_bw_e" "$pt_bw")")
		tp_bws+=("${tp_bw:-nan}")
		echo "raw.$rep write_bw_64k psplus=${tp_bw:-?} perftest=${pt_bw:-?} MB/sec ratio" \
			"${r_bw[-1]} (psplus -e: ${tp_bw_e:-?}, ratio ${r_bw_e[-1]})"
		for ((k = 1; k <= lat_pairs; k++)); do
			pt_lat=$(col "$out/pt_send_lat_64.$rep.$k.log" 't_typical[usec]' 64)
			tp_lat=$(col "$out/tp_send_lat_64.$rep.$k.log" 't_typical[usec]' 64)
			r_lat+=("$(ratio "$tp_lat" "$pt_lat")")
			echo "raw.$rep.$k send_lat_64 psplus_p50=${tp_lat:-?}" \
				"perftest_t_typical=${pt_lat:-?} usec (one-way) ratio ${r_lat[-1]}"
		done
	done
	g=$out/tp_gather_256x256.log
	gline=$(grep -m1 '^ gather_vs_contiguous ' "$g" 2>/dev/null)
	kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$gline"; }
	m_gather=$(kv ratio_median)
	g_med=$(kv gather_median)
	copied=$(awk -F: '/^ bytes_copied/ { split($2, a, " "); print a[1]; exit }' "$g" 2>/dev/null)
	echo "raw gather_256x256 gather_median=${g_med:-?} contiguous_median=$(kv contiguous_median)" \
		"MB/sec pairs=$(kv pairs) ($(grep -m1 '^ gather/contiguous:' "$g" | cut -d: -f2 | xargs))"
	echo "raw gather_256x256 vs psplus write_bw 64 KiB runs:" \
		"$(ratio "$g_med" "$(median "${tp_bws[@]}")")"
	echo "ref write_bw_256k $pt_bw_256k"
	m_bw=$(median "${r_bw[@]}")
	m_lat=$(median "${r_lat[@]}")
	echo "ratio write_bw_64k $m_bw"
	echo "info write_bw_64k_events $(median "${r_bw_e[@]}") (psplus -e on both ends / perftest)"
	echo "ratio send_lat_64 $m_lat"
	echo "ratio gather_256x256 ${m_gather:-nan}"
	echo "copied_bytes gather ${copied:-?}"
	target write_bw_64k "$m_bw" ">=" 0.9
	target send_lat_64 "$m_lat" "<=" 1.2
	target gather_256x256 "${m_gather:-nan}" ">=" 0.85
	if [[ $copied == 0 ]]; then
		echo "target copied_bytes_gather==0 met"
	else
		echo "target copied_bytes_gather==0 MISSED"
	fi
}

if [[ " $parts " == *" transport "* ]]; then
	transport_runs
fi
if [[ " $parts " == *" e2e "* ]]; then
	e2e_part
else
	pt pt_write_bw_256k.1 ib_write_bw -R -d "$dev" -s 262144 "${bw[@]}"
fi

for j in "$out"/*.json "$out"/e2e/*.json; do
	[[ -f $j ]] || continue
	echo "BEGIN-JSON $(basename "$j")"
	cat "$j"
	echo "END-JSON"
done

for f in "$out"/tp_*.log; do
	[[ -f $f && $f != *.server.log ]] || continue
	grep -q '^ data check *: ok' "$f" || { log "$(basename "$f"): data check did not pass"; failed=1; }
done

# The 256 KiB reference: the median of its runs (one per repetition with the end-to-end part).
refs=()
for f in "$out"/pt_write_bw_256k.*.log; do
	[[ $f == *.server.log ]] || refs+=("$(col "$f" 'average[MB/sec]' 262144)")
done
pt_bw_256k=$(median "${refs[@]}")
if [[ " $parts " == *" transport "* ]]; then
	transport_summary
else
	echo
	echo "ref write_bw_256k $pt_bw_256k"
fi
if [[ " $parts " == *" e2e "* ]]; then
	echo
	e2e_summary write_bw_256k "$repeat"
fi
exit "$failed"
