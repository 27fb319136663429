#!/usr/bin/env bash
# bench-rxe.sh: psplus's rdma transport against perftest on soft-RoCE, in one guest boot.
#
#   scripts/bench-rxe.sh
#
# Builds psplus-bench-tp, psplus-bench-ps and psplus (scripts/setup.sh, then cmake into build/
# as scripts/test.sh does), then boots the QEMU guest once (scripts/rxe-run.sh) to run
# perf/rxe_bench_inner.sh, which runs perftest (ib_write_bw 64 KiB and 256 KiB, ib_send_lat
# 64 B, all with rdma_cm) and psplus-bench-tp over rdma (write_bw 64 KiB, send_lat 64 B, gather
# 256 x 256 B) on the same rxe device, then the parameter service end to end (a scheduler and
# 2 servers over rdma, one rxe device each; psplus-bench-ps sparse pulls and pushes of 1,024 ids
# x 64 floats), and prints the tables and the lines
#   ratio write_bw_64k <psplus/perftest>            target >= 0.9
#   ratio send_lat_64 <psplus p50/perftest t_typical, one-way both; lower is better>  <= 1.2
#   ratio gather_256x256 <gather bw/psplus contiguous 64 KiB bw, same table, same connection>
#                                                                                     >= 0.85
#   copied_bytes gather <n>                         must be 0
#   ref write_bw_256k <perftest MB/sec>
#   info write_bw_64k_events <psplus with -e on both ends / perftest>
#   ratio pull_1024x64_uniform <pull goodput / ib_write_bw 256 KiB>   target >= 0.8
#   ratio pull_1024x64_zipf <the same with Zipf(1.1) ids>            target >= 0.8
#   ratio push_1024x64_uniform <push goodput / ib_write_bw 256 KiB>
#   latency NAME p50=.. p99=.. usec                  (per operation, one whole call)
# Under TCG the absolute numbers mean little; the ratios (same device, same boot) do.
#
# The guest's output is also kept in BUILD/bench-rxe/bench-rxe.log, and the psplus JSON files
# it printed are extracted next to it. Exit status: that of the guest script (0: every run
# finished and its data checked), or rxe-run.sh's (124 timeout, 125 guest trouble).
#
# Environment: PS_BUILD_DIR (default build/, not under /tmp), JOBS, PS_RXE_TIMEOUT (default
# 2400 s for the whole guest run: 15 to 20 minutes on a quiet host, 25 and more beside
# another guest), PS_RXE_NDEV (default 2: the servers need rxe0 and rxe1), and,
# passed into the guest: PS_BENCH_DURATION (default 6), PS_BENCH_MARGIN (default 1),
# PS_BENCH_LAT_ITERS (default 1000), PS_BENCH_TABLE (default 1G), PS_BENCH_START_TIMEOUT
# (default 180), PS_BENCH_REPEAT (default 3 interleaved repetitions; the ratios are the medians
# of the per-repetition ratios), PS_BENCH_LAT_PAIRS (latency pairs per repetition, default 3;
# send_lat_64 is the median over all of them), PS_BENCH_GATHER_PAIRS (default 5), PS_BENCH_PARTS (default
# "transport e2e"), PS_BENCH_PS_CLIENTS (psplus-bench-ps -q, default 1), PS_BENCH_PS_ARGS.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${PS_BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
out=$build/bench-rxe

msg() { echo "bench-rxe: $*" >&2; }
die() {
	msg "$*"
	exit 1
}

bash "$root/scripts/setup.sh" || die "scripts/setup.sh failed"
mkdir -p "$build" "$out"
rm -f "$out"/*.json # the JSON of this run only
msg "building in $build (logs: $build/configure.log, $build/bench-build.log)"
cmake -S "$root" -B "$build" -DPS_WERROR=ON >"$build/configure.log" 2>&1 ||
	{ tail -n 30 "$build/configure.log" >&2; die "cmake configure failed"; }
cmake --build "$build" -j "$jobs" --target psplus-bench-tp psplus-bench-ps psplus_bin \
	>"$build/bench-build.log" 2>&1 ||
	{ tail -n 30 "$build/bench-build.log" >&2; die "build failed"; }
grep -q '^PS_WITH_VERBS:BOOL=ON' "$build/CMakeCache.txt" ||
	die "$build is configured with PS_WITH_VERBS=OFF: the rdma transport is not built"

export PS_RXE_TIMEOUT=${PS_RXE_TIMEOUT:-2400}
export PS_RXE_NDEV=${PS_RXE_NDEV:-2}
((PS_RXE_NDEV >= 2)) || die "PS_RXE_NDEV must be at least 2 (one rxe device per server)"
export PS_RXE_PASSENV="PS_BENCH_DURATION PS_BENCH_MARGIN PS_BENCH_LAT_ITERS PS_BENCH_TABLE
PS_BENCH_START_TIMEOUT PS_BENCH_REPEAT PS_BENCH_LAT_PAIRS PS_BENCH_GATHER_PAIRS PS_BENCH_PARTS PS_BENCH_PS_CLIENTS
PS_BENCH_PS_ARGS"
rc=0
"$root/scripts/rxe-run.sh" "$root/perf/rxe_bench_inner.sh" "$build" | tee "$out/bench-rxe.log" ||
	rc=${PIPESTATUS[0]}

# The JSON files were written in the guest's /tmp, which is gone: take them from the output.
awk -v dir="$out" '
	/^BEGIN-JSON / { f = dir "/" $2; printf "" > f; next }
	/^END-JSON$/ { close(f); f = ""; next }
	f != "" { print > f }' "$out/bench-rxe.log"
msg "output and JSON in $out"
exit "$rc"
