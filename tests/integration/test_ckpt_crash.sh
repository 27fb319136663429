#!/usr/bin/env bash
# SIGKILL during saves, 20 times (ROUNDS=n to change): the previous checkpoint survives.
#   - 2 servers train 2 steps and save "base" (the model no longer changes after that);
#   - each round starts `psplus-admin save rN` and SIGKILLs the scheduler or a server (in
#     turn) at a random moment within about the time a save takes;
#   - then: the index is readable and every checkpoint it lists verifies (never an incomplete
#     one; rN is listed only if it was committed before the kill), the killed process is
#     started again, the model is restored from the latest checkpoint (a restarted scheduler
#     does it by itself; after a server restart, psplus-admin restore latest), and every row
#     equals the model at "base".
# usage: test_ckpt_crash.sh PSPLUS CKPT_DRIVER PSPLUS_MODEL PSPLUS_ADMIN  (KEEP_LOGS=1)
set -uo pipefail
bin=$1
drv=$2
model=$3
admin=$4
work=$(mktemp -d /tmp/psplus_ckpt_crash.XXXXXX)
. "$(dirname "$0")/ckpt_lib.sh"
rounds=${ROUNDS:-20}

SMEM=3 cluster 2
if timeout 120 "$drv" "$url" train 0 2 base >>"$work/driver.out" 2>>"$work/driver.log" &&
	timeout 60 "$drv" "$url" dump "$work/base.bin" >>"$work/driver.out" 2>>"$work/driver.log"
then
	pass "2 servers: 2 steps, save base"
else
	flunk "training or saving base (see $work/driver.out)"
	exit 1
fi
out=$("$admin" save --kv "$url" warm 2>&1) || flunk "a plain save failed: $out"
# The save's own duration in the scheduler, plus a little for the tool to connect.
span=$(sed -nE 's/.* in ([0-9]+)\.([0-9]{3}) s.*/\1\2/p' <<<"$out" | head -1)
span=$((10#${span:-50} + 5))
echo "a save takes about $span ms: kills land within that time of the request"

committed=0 killed_in=0
for ((i = 1; i <= rounds; i++)); do
	case $((i % 3)) in
	0) victim=sched ;;
	1) victim=s0 ;;
	2) victim=s1 ;;
	esac
	deaths=$(grep -c "server ${victim#s} dead" "$work/sched.log")
	"$admin" save --kv "$url" "r$i" --timeout_ms 20000 >"$work/admin$i.out" 2>&1 &
	apid=$!
	delay=$((RANDOM % span))
	sleep "$(printf '0.%03d' "$delay")"
	kill -9 "${pid[$victim]}" 2>/dev/null
	wait "${pid[$victim]}" 2>/dev/null
	unset "pid[$victim]"
	wait $apid
	arc=$?
	# The index names only complete checkpoints.
	list=$("$model" list "$root" 2>&1)
	if [[ $? -ne 0 ]]; then
		flunk "round $i: the index is unreadable: $list"
		break
	fi
	names=$(awk 'NR > 1 && !/ checkpoints? under / {print $1}' <<<"$list")
	latest=$(tail -1 <<<"$names")
	ok=1
	for n in $latest $(grep -x "r$i" <<<"$names"); do
		"$model" verify "$root" "$n" >"$work/verify$i.out" 2>&1 || ok=0
	done
	if grep -qx "r$i" <<<"$names"; then
		committed=$((committed + 1))
	else
		killed_in=$((killed_in + 1))
		[[ $arc -eq 0 ]] && { flunk "round $i: save r$i reported success but is not listed"; ok=0; }
	fi
	[[ $ok -eq 1 ]] || flunk "round $i: a listed checkpoint does not verify ($work/verify$i.out)"
	# Back to full strength, and the model back from the latest checkpoint.
	if [[ $victim == sched ]]; then
		gen=$((gen + 1))
		echo "--- round $i: scheduler restarted" >>"$work/sched.log"
		start_sched 2
		wait_for 20000 log_ready || { flunk "round $i: the scheduler did not come back"; break; }
		log_has sched "restored checkpoint '$latest'" ||
			flunk "round $i: the restarted scheduler did not restore '$latest'"
	else
		# The scheduler sees the connection close at once; the id is free again then.
		wait_for 5000 bash -c "[[ \$(grep -c 'server ${victim#s} dead' '$work/sched.log') -gt $deaths ]]" ||
			true
		start_server "${victim#s}"
		rr=1
		for ((k = 0; k < 50 && rr != 0; k++)); do
			"$admin" restore --kv "$url" latest >"$work/restore$i.out" 2>&1
			rr=$?
			[[ $rr -ne 0 ]] && sleep 0.1
		done
		[[ $rr -eq 0 ]] || flunk "round $i: restore latest: $(cat "$work/restore$i.out")"
	fi
	if ! timeout 60 "$drv" "$url" compare "$work/base.bin" 0 >"$work/compare$i.out" 2>&1; then
		flunk "round $i ($victim killed after ${delay} ms): the restored model differs ($work/compare$i.out)"
	fi
	echo "round $i: $victim killed ${delay} ms into save r$i: $(grep -qx "r$i" <<<"$names" && echo committed before the kill || echo not listed), latest '$latest' verified and restored"
done
[[ $fail -eq 0 ]] && pass "$rounds kills during saves ($killed_in interrupted, $committed committed first): the index only ever named complete checkpoints, and the latest was restored every time"
cl_stop
[[ $fail -eq 0 ]] && echo "PASS: test_ckpt_crash"
exit $fail
