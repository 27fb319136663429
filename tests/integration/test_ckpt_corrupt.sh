#!/usr/bin/env bash
# A damaged checkpoint is named and refused, and the running model is left alone:
#   - 2 servers train 3 steps and save c1, then train on (the running model moves past c1);
#   - one byte in the content of one part file of c1 is flipped: `psplus-model verify` reports
#     exactly that file; a restore of c1, through psplus-admin and through the client API, is
#     refused with PS_ECORRUPT and a message naming the file;
#   - every row the servers hold is still the model from before the attempts, and training
#     goes on (no stale version);
#   - the same with a byte of a part header (refused when the file is opened).
# usage: test_ckpt_corrupt.sh PSPLUS CKPT_DRIVER PSPLUS_MODEL PSPLUS_ADMIN  (KEEP_LOGS=1)
set -uo pipefail
bin=$1
drv=$2
model=$3
admin=$4
work=$(mktemp -d /tmp/psplus_ckpt_corrupt.XXXXXX)
. "$(dirname "$0")/ckpt_lib.sh"

# flip FILE OFFSET: xor one byte with 0x5a in place
flip() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "$(printf '\\%03o' $((b ^ 0x5a)))" | dd of="$1" bs=1 seek="$2" conv=notrunc \
		status=none
}

SMEM=3 cluster 2
run "2 servers: 3 steps, save c1" train 0 3 c1
run "2 servers: save c2" save c2 ok
run "2 servers: 2 more steps" train 3 5
run "2 servers: the running model pulled" dump "$work/before.bin"

for case in content header; do
	ck=$([[ $case == content ]] && echo c1 || echo c2)
	# the largest part file: a sparse part
	victim=$(ls -S "$root/$ck"/*.psp | head -1)
	vname=$(basename "$victim")
	if [[ $case == content ]]; then
		flip "$victim" $(($(stat -c %s "$victim") / 2))
	else
		flip "$victim" 40
	fi
	out=$("$model" verify "$root" $ck 2>&1)
	rc=$?
	if [[ $rc -eq 1 ]] && grep -q "^BAD .*$vname" <<<"$out" &&
		[[ $(grep -c "^BAD" <<<"$out") -eq 1 ]]; then
		pass "$case: psplus-model verify names the damaged file: $(grep '^BAD' <<<"$out")"
	else
		flunk "$case: psplus-model verify (exit $rc): $out"
	fi
	out=$("$admin" restore --kv "$url" $ck 2>&1)
	rc=$?
	if [[ $rc -eq 1 ]] && grep -q "$vname" <<<"$out" && grep -q PS_ECORRUPT <<<"$out"; then
		pass "$case: psplus-admin restore refused: $out"
	else
		flunk "$case: psplus-admin restore (exit $rc): $out"
	fi
	run "$case: ps_client_restore refused with PS_ECORRUPT naming $vname" \
		restore $ck "PS_ECORRUPT:$vname"
	run "$case: the servers kept every row" compare "$work/before.bin" 0
done
run "training goes on after the refused restores" train 5 6
if log_has sched "restore c1 failed" && ! log_has sched "restored checkpoint 'c1'"; then
	pass "the scheduler logged the refusal and switched to nothing"
else
	flunk "scheduler log: restore of c1 not refused as expected"
fi
cl_stop
grep -E "^(PASS|FAIL)" "$work/driver.out" | sed 's/^/  driver /'
[[ $fail -eq 0 ]] && echo "PASS: test_ckpt_corrupt"
exit $fail
