#!/usr/bin/env bash
# run_guest_tier.sh BUILD_DIR
#
# The rxe guest tier: runs every verbs test program of tests/rxe against the soft-RoCE devices of
# the guest. Meant to run inside it:
#   scripts/rxe-run.sh tests/rxe/run_guest_tier.sh "$PWD/build"
# (rxe-run.sh runs the command in the caller's cwd; BUILD_DIR must be outside /tmp and /run, which
# the guest does not share.) Outside the guest each program exits 77 and is reported as SKIP.
#
# Per test: one line "PASS|FAIL|SKIP NAME (SECONDS s[, exit N])"; the test's own output is shown
# above it. Last line, alone: "N passed, N failed". Exit status: 0 if none failed, 1 otherwise,
# 2 on bad usage.
#
# Environment: PS_RXE_TEST_TIMEOUT seconds per test (default 300: the guest runs under TCG).
set -uo pipefail

# The verbs test programs, in the order they run. Later tests append their name here.
TESTS=(
	test_verbs_basic
	test_rdma_transport
	test_server_dp_rxe
	test_server_dp_sync_rxe
	conformance_rxe
)

if (($# != 1)) || [[ ! -d $1 ]]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
bin_dir=$1/tests/rxe
per_test_timeout=${PS_RXE_TEST_TIMEOUT:-300}

passed=0 failed=0 skipped=0
for t in "${TESTS[@]}"; do
	echo "=== $t"
	start=$(date +%s.%N)
	if [[ ! -x $bin_dir/$t ]]; then
		echo "$bin_dir/$t: not built" >&2
		rc=127
	else
		# KILL 10 s after TERM: a test stuck in the kernel must not hold up the tier.
		timeout --kill-after=10 "$per_test_timeout" "$bin_dir/$t"
		rc=$?
	fi
	secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	case $rc in
	0)
		echo "PASS $t ($secs s)"
		passed=$((passed + 1))
		;;
	77)
		echo "SKIP $t ($secs s)"
		skipped=$((skipped + 1))
		;;
	124 | 137)
		echo "FAIL $t ($secs s, timed out after ${per_test_timeout} s)"
		failed=$((failed + 1))
		;;
	*)
		echo "FAIL $t ($secs s, exit $rc)"
		failed=$((failed + 1))
		;;
	esac
done

((skipped == 0)) || echo "($skipped skipped)"
echo "$passed passed, $failed failed"
((failed == 0))
