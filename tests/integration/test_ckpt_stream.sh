#!/usr/bin/env bash
# Streaming models (tests/integration/ckpt_driver.c, "stream"):
#   - 2 servers; the scheduler's -smdense/-smsparse/-smhash point at one file:// folder;
#   - four variables (dense, sparse, hash64, hash128; Adagrad) are trained, checkpoint "base"
#     is saved, then 5 rounds each push rows, create hash keys, delete others
#     (ps_client_hash_delete) and ask for an export (ps_client_export_streaming);
#   - `psplus-model deltas --verify` checks every delta; `psplus-model apply-deltas` writes
#     base + deltas as checkpoint "applied", which equals the live model pulled from the
#     servers: every row, and the hash key sets (deleted keys absent, nothing extra);
#   - a scheduler with --streaming_period_s 1 exports on its own.
# usage: test_ckpt_stream.sh PSPLUS CKPT_DRIVER PSPLUS_MODEL PSPLUS_ADMIN  (KEEP_LOGS=1)
set -uo pipefail
bin=$1
drv=$2
model=$3
admin=$4
work=$(mktemp -d /tmp/psplus_ckpt_stream.XXXXXX)
. "$(dirname "$0")/ckpt_lib.sh"
deltas=$work/deltas
mkdir -p "$deltas"
rounds=5

gen=1
start_sched 2 -smdense "file://$deltas" -smsparse "file://$deltas" -smhash "file://$deltas"
start_server 0
start_server 1
wait_for 20000 log_ready || { flunk "cluster did not come up"; exit 1; }
if timeout 120 "$drv" "$url" stream $rounds >"$work/driver.out" 2>"$work/driver.log"; then
	pass "save base, then $rounds rounds of pushes, new and deleted keys, exports"
else
	flunk "stream driver (see $work/driver.out)"
fi
out=$("$model" deltas "$deltas" --verify 2>&1)
if [[ $? -eq 0 ]]; then
	pass "psplus-model deltas --verify: $(tail -1 <<<"$out")"
else
	flunk "psplus-model deltas --verify: $out"
fi
out=$("$model" apply-deltas "$root" base "$deltas" applied 2>&1)
if [[ $? -eq 0 ]]; then
	pass "psplus-model apply-deltas: $(tail -1 <<<"$out")"
else
	flunk "psplus-model apply-deltas: $out"
fi
if timeout 60 "$drv" "$url" stream_check "$root" applied $rounds >>"$work/driver.out" \
	2>>"$work/driver.log"; then
	pass "base + deltas = the live model pulled from the servers"
else
	flunk "stream_check (see $work/driver.out)"
fi
out=$("$admin" export --kv "$url" 2>&1)
if [[ $? -eq 0 ]]; then
	pass "psplus-admin export: $out"
else
	flunk "psplus-admin export: $out"
fi
cl_stop

# The period: exports nobody asked for, about once a second.
gen=2
n0=$(grep -c "^[0-9]" "$deltas/manifest")
start_sched 2 -smdense "file://$deltas" -smsparse "file://$deltas" -smhash "file://$deltas" \
	--streaming_period_s 1
start_server 0
start_server 1
wait_for 20000 log_ready || { flunk "cluster did not come up"; exit 1; }
timeout 60 "$drv" "$url" train 0 1 >>"$work/driver.out" 2>>"$work/driver.log"
if wait_for 5000 bash -c "[[ \$(grep -c '^[0-9]' '$deltas/manifest') -gt $n0 ]]" &&
	log_has sched "export streaming-export done"; then
	pass "--streaming_period_s 1: the scheduler exported by itself"
else
	flunk "--streaming_period_s 1: no export within 5 s"
fi
cl_stop
grep -E "^(PASS|FAIL)" "$work/driver.out" | sed 's/^/  driver /'
[[ $fail -eq 0 ]] && echo "PASS: test_ckpt_stream"
exit $fail
