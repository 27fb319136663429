#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls exactly this).
#
#   1. host: a -Werror build, then every ctest test (unit on the fake verbs layer, integration
#      over TCP on loopback);
#   2. sanitizers: an ASan+UBSan build running the unit and integration tests again;
#   3. guest: the verbs tier on soft-RoCE in the project's QEMU guest (scripts/rxe-run.sh).
#
# Every tier runs even if an earlier one failed, so one run shows everything; the exit status is
# non-zero if anything failed. The last line is the total: "test: N passed, N failed".
#
# Environment: PS_TEST_TIERS (default "host asan guest") picks tiers; PS_BUILD_DIR (default
# build/) the host build folder; JOBS the build parallelism.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tiers=${PS_TEST_TIERS:-host asan guest}
build=${PS_BUILD_DIR:-$root/build}
asan_build=$root/build-asan
jobs=${JOBS:-$(nproc)}
total_pass=0 total_fail=0

bash "$root/scripts/setup.sh" || exit 1

log() { printf '\n=== test: %s ===\n' "$*"; }

# configure_build DIR CMAKE_ARGS...: configure and build, or count one failure.
configure_build() {
	local dir=$1
	shift
	if cmake -S "$root" -B "$dir" -DPS_WERROR=ON "$@" >"$dir/configure.log" 2>&1 &&
		cmake --build "$dir" -j "$jobs" >"$dir/build.log" 2>&1; then
		return 0
	fi
	echo "test: build in $dir failed:" >&2
	tail -n 40 "$dir/configure.log" "$dir/build.log" >&2 2>/dev/null
	total_fail=$((total_fail + 1))
	return 1
}

# run_ctest DIR ARGS...: run ctest and add its counts to the totals.
run_ctest() {
	local dir=$1 out summary n_fail n_total
	shift
	out=$(mktemp)
	ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$out"
	summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1)
	rm -f "$out"
	if [[ -z $summary ]]; then
		echo "test: ctest in $dir printed no summary" >&2
		total_fail=$((total_fail + 1))
		return
	fi
	n_fail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")
	n_total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$summary")
	total_fail=$((total_fail + n_fail))
	total_pass=$((total_pass + n_total - n_fail))
}

mkdir -p "$build"
for tier in $tiers; do
	case $tier in
	host)
		log "host build (-Werror) and tests"
		configure_build "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo && run_ctest "$build"
		;;
	asan)
		log "ASan+UBSan build, unit and integration tests"
		mkdir -p "$asan_build"
		configure_build "$asan_build" -DCMAKE_BUILD_TYPE=Debug "-DPS_SANITIZE=address;undefined" &&
			ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
				LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
				run_ctest "$asan_build" -L 'unit|integration'
		;;
	guest)
		log "soft-RoCE guest tier"
		if [[ ! -x $build/bin/psplus ]] && ! configure_build "$build"; then
			continue
		fi
		out=$(mktemp)
		# rxe-run.sh shares the caller's folder with the guest when it lies under /tmp: run
		# from the repository so the build tree is inside what the guest sees.
		cd "$root"
		# Three devices: the conformance test runs 1 and 3 servers, one device each.
		PS_RXE_NDEV=${PS_RXE_NDEV:-3} "$root/scripts/rxe-run.sh" "$root/tests/rxe/run_guest_tier.sh" "$build" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
		rm -f "$out"
		if [[ -n $line ]]; then
			total_pass=$((total_pass + $(cut -d' ' -f1 <<<"$line")))
			total_fail=$((total_fail + $(cut -d' ' -f3 <<<"$line")))
		fi
		if [[ $rc -ne 0 && ( -z $line || $(cut -d' ' -f3 <<<"$line") -eq 0 ) ]]; then
			echo "test: guest tier exited $rc" >&2
			total_fail=$((total_fail + 1))
		fi
		;;
	*)
		echo "test: unknown tier '$tier' (host, asan, guest)" >&2
		exit 2
		;;
	esac
done

echo
echo "test: $total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 && $total_pass -gt 0 ]]
