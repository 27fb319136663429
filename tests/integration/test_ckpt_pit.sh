#!/usr/bin/env bash
# Point-in-time saves while workers push (tests/integration/ckpt_driver.c, "pit_*"):
#   - 3 servers (2 data-path threads each); two workers in bounded-staleness mode add 1 to
#     every row of three counter variables (sparse, hash64, dense; SGD with rate 1 and
#     gradient -1) each step, then call step_end;
#   - meanwhile five saves run, then three clients at a time ask for a save until one of them
#     is refused at once with PS_EOP_IN_PROGRESS;
#   - in every checkpoint, read back with the reader API, every row of every counter holds the
#     same step count, and the counts grow from one checkpoint to the next.
# usage: test_ckpt_pit.sh PSPLUS_BINARY CKPT_DRIVER    (KEEP_LOGS=1 keeps the logs)
set -uo pipefail
bin=$1
drv=$2
work=$(mktemp -d /tmp/psplus_ckpt_pit.XXXXXX)
. "$(dirname "$0")/ckpt_lib.sh"

cluster 3
for w in 0 1; do
	timeout 120 "$drv" "$url" pit_worker $w 2 "$work/stop" >"$work/w$w.out" 2>"$work/w$w.log" &
	pid[w$w]=$!
done
sleep 0.5
if timeout 120 "$drv" "$url" pit_saver 5 p >"$work/saver.out" 2>"$work/saver.log"; then
	pass "five saves while two workers push; concurrent requests refused"
else
	flunk "saver (see $work/saver.out)"
fi
touch "$work/stop"
for w in 0 1; do
	if wait "${pid[w$w]}"; then
		pass "worker $w: $(grep -o 'pushed [0-9]* steps' "$work/w$w.out")"
	else
		flunk "worker $w failed (see $work/w$w.out)"
	fi
	unset "pid[w$w]"
done
if timeout 60 "$drv" "$root" pit_check p1 p2 p3 p4 p5 >"$work/check.out" 2>&1; then
	pass "every checkpoint holds one step count in every row"
else
	flunk "pit_check (see $work/check.out)"
fi
cl_stop
grep -hE "^(PASS|FAIL)" "$work/saver.out" "$work/check.out" | sed 's/^/  driver /'
[[ $fail -eq 0 ]] && echo "PASS: test_ckpt_pit"
exit $fail
