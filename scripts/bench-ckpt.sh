#!/usr/bin/env bash
# bench-ckpt.sh: checkpoint save and restore throughput of a live cluster against dd, on the
# same file system, in the same run.
#
#   scripts/bench-ckpt.sh
#
# Builds psplus, psplus-admin and the test driver (scripts/setup.sh, then cmake into build/ as
# scripts/test.sh does), starts a scheduler and ONE server (tcp on 127.0.0.1) with a checkpoint
# root under PS_BENCH_DIR, declares PS_BENCH_VARS sparse variables of PS_BENCH_ROWS x
# PS_BENCH_WIDTH floats (default 4 x 1,100,000 x 64: 1.05 GiB of rows, 1.08 GiB of part files),
# then, after one unmeasured round (in a VM the host backs guest memory on first touch, which
# would penalise whichever step comes first), PS_BENCH_REPEAT times, psplus first in odd runs
# and dd first in even ones:
#   save      psplus-admin save: every row written through the part writers and fsync'ed,
#             timed by the scheduler (pause, write, commit; ModelOpResp.elapsed_us)
#   dd write  dd if=/dev/zero bs=4M conv=fsync of the same number of bytes, same folder
#   (evict)   both files' pages dropped from the page cache (dd iflag=nocache count=0, i.e.
#             posix_fadvise DONTNEED on clean pages), so both reads below start cold; the file
#             read first is evicted again before the second read. Root is not needed, unlike
#             drop_caches, which would also empty every other user's cache on the machine.
#             fincore measures, right before each read, what of its files is still resident.
#   dd read   dd of=/dev/null bs=4M of the dd file
#   restore   psplus-admin restore: every part file read and CRC-checked into staged parts
#             (memory mapped and faulted in by the restore: part of its cost), then switched in
# Before each timed step the script waits until the server has used no CPU for 0.2 s (at most
# 5 s): after a restore the server frees the replaced model, which must not overlap the next
# dd (it would slow dd, not psplus).
# It prints a table (with the server's user/sys CPU seconds for the save and the restore, and
# the most bytes found resident in the page cache before a read), "raw.N ..." lines (with the
# load average: other work on the machine slows psplus, which needs CPU, more than dd), then
# "order ..." lines (the median ratio of the runs where psplus went first, and of those where
# dd did), then the ratios: for each pair of runs (one of each order) the geometric mean of
# its two ratios, which cancels the order effects (see pairs() below), and the median of those
# over the pairs (of an even count, the lower middle one):
#   ratio ckpt_save <save MB/s / dd write MB/s>        (higher is better; target >= 0.7)
#   ratio ckpt_restore <restore MB/s / dd read MB/s>   (higher is better; target >= 0.7)
#   target ckpt_save>=0.7 met|MISSED, target ckpt_restore>=0.7 met|MISSED
# MB/s are of part-file bytes (rows, ids, headers). Exit status: 0 when every step worked (a
# missed target is reported, not an error), 1 otherwise.
#
# Environment: PS_BUILD_DIR (default build/), JOBS, PS_BENCH_DIR (default /tmp; the file system
# measured), PS_BENCH_REPEAT (default 4, rounded up to even: pairs of runs), PS_BENCH_VARS,
# PS_BENCH_ROWS, PS_BENCH_WIDTH, PS_BENCH_THREADS (server data-path threads, default nproc),
# PS_BENCH_SETTLE (seconds between the two writes of a run, default 3), PS_BENCH_OUT (logs,
# default BUILD/bench-ckpt).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${PS_BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
repeat=${PS_BENCH_REPEAT:-4}
repeat=$(((repeat + 1) / 2 * 2)) # whole pairs: one run of each order
nvars=${PS_BENCH_VARS:-4}
rows=${PS_BENCH_ROWS:-1100000}
width=${PS_BENCH_WIDTH:-64}
threads=${PS_BENCH_THREADS:-$(nproc)}
settle=${PS_BENCH_SETTLE:-3}
out=${PS_BENCH_OUT:-$build/bench-ckpt}
work=$(mktemp -d "${PS_BENCH_DIR:-/tmp}/psplus-bench-ckpt.XXXXXX")
ckroot=$work/ckpt
kv=$work/sched.kv
url=file://$kv
declare -a pids=()

msg() { echo "bench-ckpt: $*" >&2; }
die() {
	msg "$*"
	exit 1
}
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	sleep 0.5
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

bash "$root/scripts/setup.sh" || die "scripts/setup.sh failed"
mkdir -p "$build" "$out"
msg "building in $build (logs: $build/configure.log, $build/bench-build.log)"
cmake -S "$root" -B "$build" -DPS_WERROR=ON >"$build/configure.log" 2>&1 ||
	{ tail -n 30 "$build/configure.log" >&2; die "cmake configure failed"; }
cmake --build "$build" -j "$jobs" --target psplus_bin psplus_admin psplus_model ckpt_driver \
	>"$build/bench-build.log" 2>&1 ||
	{ tail -n 30 "$build/bench-build.log" >&2; die "build failed"; }
bin=$build/bin/psplus
admin=$build/bin/psplus-admin
drv=$build/tests/ckpt_driver

now_ns() { date +%s%N; }
# mbps BYTES NS
mbps() { awk -v b="$1" -v n="$2" 'BEGIN { printf "%.1f", b / 1e6 / (n / 1e9) }'; }
# seconds "X.YYY" from psplus-admin's "... in X.YYY s" -> ns
admin_ns() { sed -nE 's/.* in ([0-9]+)\.([0-9]{3}) s.*/\1\2000000/p' <<<"$1" | head -1; }
admin_bytes() { sed -nE "s/.*: [0-9]+ rows, ([0-9]+) bytes in .*/\1/p" <<<"$1" | head -1; }
evict() {
	local f
	for f in "$@"; do
		dd if="$f" iflag=nocache count=0 status=none
	done
}
# resident FILE...: bytes of the files in the page cache ("n/a" without fincore)
resident() {
	command -v fincore >/dev/null || { echo n/a; return; }
	fincore -b -n -o RES "$@" | awk '{ s += $1 } END { print s + 0 }'
}
# idle PID: wait until PID used no CPU for 0.2 s (at most 5 s)
idle() {
	local a b i
	a=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
	for ((i = 0; i < 50; i++)); do
		sleep 0.1
		b=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
		if [[ $a == "$b" ]]; then
			sleep 0.1
			a=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
			[[ $a == "$b" ]] && return 0
		fi
		a=$b
	done
}
# cpu PID: "user sys" of a process, in clock ticks
cpu() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
# cpu_s BEFORE AFTER: "user s / sys s" spent between two cpu() readings
cpu_s() {
	awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
		split(a, x, " "); split(b, y, " ");
		printf "%.2f/%.2f", (y[1] - x[1]) / hz, (y[2] - x[2]) / hz }'
}

mem_mb=$((nvars * rows * width * 4 / 1000000 * 2 + 1024))
"$bin" -r scheduler -sp "$url" -sn 1 -snet 100000 -smem "$mem_mb" -sqps 100000000 -bc False \
	-cp "file://$ckroot" --host 127.0.0.1 2>"$out/sched.log" &
pids+=($!)
for ((i = 0; i < 100; i++)); do [[ -s $kv ]] && break; sleep 0.05; done
[[ -s $kv ]] || die "the scheduler did not start (see $out/sched.log)"
"$bin" -r server -sp "$url" -si 0 -bc False --transport tcp --host 127.0.0.1 \
	--threads "$threads" 2>"$out/server.log" &
spid=$!
pids+=($spid)
for ((i = 0; i < 200; i++)); do grep -q "main loop ready" "$out/sched.log" && break; sleep 0.05; done
grep -q "main loop ready" "$out/sched.log" || die "the cluster did not come up (see $out/)"
"$drv" "$url" bench_declare "$nvars" "$rows" "$width" >"$out/declare.log" 2>&1 ||
	die "declaring the variables failed (see $out/declare.log)"
msg "$nvars sparse variables of $rows x $width floats on one server ($threads threads);" \
	"folder $work ($(df -h --output=fstype,target "$work" | tail -1))"

# One unmeasured round first: in a VM, memory the guest never touched is backed by the host
# on first touch, which would make whichever step runs first look slow.
"$admin" save --kv "$url" warm >/dev/null 2>&1 || die "warm-up save failed"
"$admin" restore --kv "$url" warm >/dev/null 2>&1 || die "warm-up restore failed"
dd if=/dev/zero of="$work/dd.bin" bs=4M count=$((nvars * rows * (width * 4 + 8) / 4194304 + 1)) \
	conv=fsync status=none
dd if="$work/dd.bin" of=/dev/null bs=4M status=none
rm -f "$work/dd.bin"
"$build/bin/psplus-model" remove "$ckroot" warm >/dev/null 2>&1
declare -a r_save=() r_rest=()
printf "%-4s %12s %10s %10s %12s %10s %10s %12s %9s\n" run "bytes" "save MB/s" "dd-w MB/s" \
	"restore MB/s" "dd-r MB/s" "resident" "save cpu" "restore cpu"
for ((k = 1; k <= repeat; k++)); do
	# Odd runs measure psplus first, even runs dd first: neither always follows the other's
	# writeback.
	save() {
		idle "$spid"
		c0=$(cpu "$spid")
		o=$("$admin" save --kv "$url" "b$k" 2>&1) || die "save: $o"
		scpu=$(cpu_s "$c0" "$(cpu "$spid")")
		s_ns=$(admin_ns "$o")
		bytes=$(admin_bytes "$o")
		[[ -n $s_ns && -n $bytes ]] || die "cannot read the save's time and size from: $o"
	}
	ddwrite() {
		idle "$spid"
		t0=$(now_ns)
		dd if=/dev/zero of="$work/dd.bin" bs=4M count="$count" conv=fsync status=none
		w_ns=$(($(now_ns) - t0))
	}
	restore() {
		idle "$spid"
		rres=$(resident "$ckroot/b$k"/*.psp)
		c0=$(cpu "$spid")
		o=$("$admin" restore --kv "$url" "b$k" 2>&1) || die "restore: $o"
		rcpu=$(cpu_s "$c0" "$(cpu "$spid")")
		l_ns=$(admin_ns "$o")
		lbytes=$(admin_bytes "$o")
	}
	ddread() {
		idle "$spid"
		dres=$(resident "$work/dd.bin")
		t0=$(now_ns)
		dd if="$work/dd.bin" of=/dev/null bs=4M status=none
		r_ns=$(($(now_ns) - t0))
	}
	# Between the two writes, a pause: the storage under a VM goes on writing back after an
	# fsync returned, and would slow whichever write comes second.
	if ((k % 2)); then
		save
		count=$(((bytes + 4194303) / 4194304))
		sync
		sleep "$settle"
		ddwrite
	else
		count=${count:-$((nvars * rows * (width * 4 + 8) / 4194304 + 1))}
		ddwrite
		sync
		sleep "$settle"
		save
	fi
	dbytes=$((count * 4194304))
	evict "$work/dd.bin" "$ckroot/b$k"/*.psp
	# Each read starts with neither file in the page cache: what the first one read is
	# dropped again before the second.
	if ((k % 2)); then
		restore
		evict "$ckroot/b$k"/*.psp
		ddread
	else
		ddread
		evict "$work/dd.bin"
		restore
	fi
	res=$(printf "%s\n" "$rres" "$dres" | sort -g | tail -1)
	sv=$(mbps "$bytes" "$s_ns")
	dw=$(mbps "$dbytes" "$w_ns")
	rs=$(mbps "$lbytes" "$l_ns")
	dr=$(mbps "$dbytes" "$r_ns")
	printf "%-4s %12s %10s %10s %12s %10s %10s %12s %9s\n" "$k" "$bytes" "$sv" "$dw" "$rs" \
		"$dr" "$res" "$scpu" "$rcpu"
	echo "raw.$k save_bytes=$bytes save_ns=$s_ns dd_write_bytes=$dbytes dd_write_ns=$w_ns" \
		"restore_bytes=$lbytes restore_ns=$l_ns dd_read_ns=$r_ns resident_before_restore=$rres" \
		"resident_before_dd_read=$dres loadavg=$(cut -d' ' -f1 /proc/loadavg)"
	r_save+=("$(awk -v a="$sv" -v b="$dw" 'BEGIN { printf "%.3f", a / b }')")
	r_rest+=("$(awk -v a="$rs" -v b="$dr" 'BEGIN { printf "%.3f", a / b }')")
	rm -f "$work/dd.bin"
	# Older checkpoints are not needed: keep the disk use at one model's worth.
	[[ $k -gt 1 ]] && "$build/bin/psplus-model" remove "$ckroot" "b$((k - 1))" >/dev/null 2>&1
done
# The median; of an even count, the lower middle value (the conservative one).
median() { printf "%s\n" "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# pairs RATIO...: for each pair of runs (psplus first, then dd first) the geometric mean of its
# two ratios, one per line. The step that comes second in a run is slowed by what the first
# left behind (the host's writeback of a write, up to 10x on this VM; memory a read freed),
# which multiplies one order's ratio by about what it divides the other's by: the geometric
# mean of the pair cancels that, whichever side suffers more.
pairs() {
	local i j
	for ((i = 1; i + 1 <= $#; i += 2)); do
		j=$((i + 1))
		awk -v a="${!i}" -v b="${!j}" 'BEGIN { printf "%.3f\n", sqrt(a * b) }'
	done
}
# order_line NAME RATIO...: each order's own median, for information.
order_line() {
	local name=$1 i odd=() even=()
	shift
	for ((i = 1; i <= $#; i++)); do
		if ((i % 2)); then odd+=("${!i}"); else even+=("${!i}"); fi
	done
	echo "order $name psplus_first=$(median "${odd[@]}") dd_first=$(median "${even[@]}")"
}
# shellcheck disable=SC2046 # one ratio per word
ms=$(median $(pairs "${r_save[@]}"))
# shellcheck disable=SC2046
mr=$(median $(pairs "${r_rest[@]}"))
order_line ckpt_save "${r_save[@]}"
order_line ckpt_restore "${r_rest[@]}"
echo "ratio ckpt_save $ms"
echo "ratio ckpt_restore $mr"
echo "target ckpt_save>=0.7 $(awk -v r="$ms" 'BEGIN { print (r >= 0.7) ? "met" : "MISSED" }')," \
	"target ckpt_restore>=0.7 $(awk -v r="$mr" 'BEGIN { print (r >= 0.7) ? "met" : "MISSED" }')"
grep -h "pushes held" "$out/server.log" | tail -1 >&2 || true
