#!/usr/bin/env bash
# rxe_verbs_gather.sh BUILD_DIR
#
# In the soft-RoCE guest (scripts/rxe-run.sh), on ONE device in ONE boot: psplus-bench-tp's
# gather against its contiguous baseline (--contig-pairs, as perf/rxe_bench_inner.sh runs it)
# and psplus-bench-verbs, the same gather and contiguous writes in raw verbs, for three shapes
# of 64 KiB: 256 rows x 256 B, 128 x 512, 64 x 1024 (256, 128, 64 SGEs; 8, 4, 2 RDMA_WRITEs).
# Per shape the tools run back to back (psplus, then raw verbs), the whole repeated
# PS_VG_REPEAT times. Prints their output, then per shape (medians over the repetitions of each
# run's median gather/contiguous ratio over its pairs):
#   ratio gather_RxS <psplus-bench-tp>
#   ref gather_RxS_verbs <psplus-bench-verbs, the first PS_VG_TARGETS mode (default: passive)>
#   info gather_RxS_verbs_MODE <psplus-bench-verbs --target MODE>   (PS_VG_TARGETS beyond the first)
#   raw ... the per-repetition values
#
#   PS_RXE_NDEV=3 PS_RXE_TIMEOUT=1800 scripts/rxe-run.sh bash perf/rxe_verbs_gather.sh "$PWD/build"
#
# Environment (pass it with PS_RXE_PASSENV): PS_BENCH_DEV (default rxe1), PS_BENCH_DURATION
# (s per round, default 6), PS_BENCH_MARGIN (default 1), PS_BENCH_TABLE (default 1G),
# PS_BENCH_GATHER_PAIRS (default 5), PS_VG_SHAPES (default "256x256 128x512 64x1024"),
# PS_VG_TARGETS (psplus-bench-verbs --target modes, default "passive"; e.g. "passive spin imm"),
# PS_VG_REPEAT (default 1), PS_VG_VERBS_ARGS (more psplus-bench-verbs options), PS_VG_TP_ARGS
# (more psplus-bench-tp options, e.g. -e: both ends sleep on completion events).
# Every process runs under `timeout`; the server's listening line is awaited with a timeout.
# Exit: 0 if every run finished and passed its data check, 1 otherwise.
set -uo pipefail

if (($# != 1)) || [[ ! -x $1/bin/psplus-bench-tp || ! -x $1/bin/psplus-bench-verbs ]]; then
	echo "usage: $0 BUILD_DIR (with bin/psplus-bench-tp and bin/psplus-bench-verbs)" >&2
	exit 2
fi
build=$1
dev=${PS_BENCH_DEV:-rxe1}
addr_var=PS_RXE${dev#rxe}_ADDR
addr=${!addr_var:?$addr_var is not set: run this inside scripts/rxe-run.sh}
dur=${PS_BENCH_DURATION:-6}
margin=${PS_BENCH_MARGIN:-1}
table=${PS_BENCH_TABLE:-1G}
pairs=${PS_BENCH_GATHER_PAIRS:-5}
repeat=${PS_VG_REPEAT:-1}
read -r -a shapes <<<"${PS_VG_SHAPES:-256x256 128x512 64x1024}"
read -r -a targets <<<"${PS_VG_TARGETS:-passive}"
read -r -a vargs <<<"${PS_VG_VERBS_ARGS:-}"
read -r -a targs <<<"${PS_VG_TP_ARGS:-}"
start_timeout=180 # the gather server fills and registers its table before it listens
run_timeout=$(awk -v p="$pairs" -v d="$dur" 'BEGIN { printf "%d", 2 * p * (d + 10) + 240 }')
out=/tmp/verbs-gather
port=18900
failed=0
mkdir -p "$out"
ulimit -l unlimited 2>/dev/null || true
bw=(-D "$dur" -f "$margin" --contig-pairs "$pairs" --table-size "$table")

# sent: the device's sent_pkts (both ends are on it: what a run put on the wire).
sent() { cat "/sys/class/infiniband/$dev/ports/1/hw_counters/sent_pkts" 2>/dev/null || echo 0; }
# ratio_of LOG: the ratio_median of a tool's "gather_vs_contiguous" line, or nan.
ratio_of() {
	sed -n 's/^ gather_vs_contiguous ratio_median=\([0-9.]*\).*/\1/p' "$1" 2>/dev/null |
		grep . || echo nan
}
# median V...: the middle value of the numeric arguments (nan ones left out), or nan.
median() {
	printf '%s\n' "$@" | grep -v nan | sort -g |
		awk '{ v[NR] = $1 } END { if (!NR) print "nan"
			else printf "%.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# tp NAME ROWS ROW_SIZE: psplus-bench-tp's gather, server and client on $dev.
tp() {
	local name=$1 spid rc src t0 p0
	local -a cmd=("$build/bin/psplus-bench-tp" --transport rdma -d "$addr" -t gather
		--rows "$2" --row-size "$3" "${bw[@]}" "${targs[@]}")
	port=$((port + 1))
	p0=$(sent)
	timeout --kill-after=5 "$run_timeout" "${cmd[@]}" -p "$port" >"$out/$name.server.log" 2>&1 &
	spid=$!
	t0=$(date +%s)
	until grep -q 'Waiting for a client' "$out/$name.server.log"; do
		if ! kill -0 "$spid" 2>/dev/null || (($(date +%s) - t0 > start_timeout)); then
			echo "$name: the server did not get ready:" >&2
			cat "$out/$name.server.log" >&2
			kill "$spid" 2>/dev/null
			wait "$spid" 2>/dev/null
			failed=1
			return 1
		fi
		sleep 0.2
	done
	timeout --kill-after=5 "$run_timeout" "${cmd[@]}" -p "$port" --json "$out/$name.json" \
		"$addr" >"$out/$name.log" 2>&1
	rc=$?
	((rc == 0)) || kill "$spid" 2>/dev/null
	wait "$spid"
	src=$?
	cat "$out/$name.log"
	echo "info $name: sent_pkts +$(($(sent) - p0)); client exit $rc, server exit $src"
	if ((rc != 0 || src != 0)); then
		echo "--- $name server output:"
		cat "$out/$name.server.log"
		failed=1
	fi
}

# verbs NAME ROWS ROW_SIZE TARGET: psplus-bench-verbs on $dev.
verbs() {
	local name=$1 rc p0
	p0=$(sent)
	timeout --kill-after=5 "$run_timeout" "$build/bin/psplus-bench-verbs" -d "$addr" \
		--rows "$2" --row-size "$3" --target "$4" "${bw[@]}" "${vargs[@]}" \
		--json "$out/$name.json" >"$out/$name.log" 2>&1
	rc=$?
	cat "$out/$name.log"
	echo "info $name: sent_pkts +$(($(sent) - p0)); exit $rc"
	((rc == 0)) || failed=1
}

echo "=== gather: psplus-bench-tp vs raw verbs, soft-RoCE $dev ($addr), $(uname -r)," \
	"$(nproc) vCPUs (TCG), $(date -u +%Y-%m-%dT%H:%M:%SZ); -D $dur -f $margin, $pairs pairs," \
	"table $table, $repeat repetition(s), verbs targets: ${targets[*]}"
for ((rep = 1; rep <= repeat; rep++)); do
	for s in "${shapes[@]}"; do
		tp "tp_gather_$s.$rep" "${s%x*}" "${s#*x}"
		for t in "${targets[@]}"; do
			verbs "verbs_gather_${s}_$t.$rep" "${s%x*}" "${s#*x}" "$t"
		done
	done
done
echo "=== results: median gather/contiguous (same device, same boot)"
for s in "${shapes[@]}"; do
	names=("tp_gather_$s" "${targets[@]/#/verbs_gather_${s}_}")
	for ((i = 0; i < ${#names[@]}; i++)); do
		vals=()
		for ((rep = 1; rep <= repeat; rep++)); do
			vals+=("$(ratio_of "$out/${names[i]}.$rep.log")")
		done
		case $i in
		0) line="ratio gather_$s" ;;
		1) line="ref gather_${s}_verbs" ;;
		*) line="info gather_${s}_verbs_${targets[i - 1]}" ;;
		esac
		echo "$line $(median "${vals[@]}")"
		((repeat > 1)) && echo "raw $line per repetition: ${vals[*]}"
	done
done
exit "$failed"
