#!/usr/bin/env bash
# A local cluster over the control plane: a scheduler with -sn 3 and three servers on
# 127.0.0.1 with a file:// kv path, then every way a peer can misbehave:
#   - a fourth server with a duplicate id (and one out of range) is refused and exits non-zero
#     with a message naming the id, while the others keep heartbeating;
#   - garbage bytes, an oversized length prefix, a truncated frame, another proto_version and a
#     silent connection each cost only their own connection: the scheduler stays up, keeps
#     taking heartbeats and registrations;
#   - a stopped server (SIGSTOP) is declared dead by the liveness timeout and re-registers
#     after SIGCONT; a killed one (kill -9) is declared dead within the liveness timeout and a
#     replacement takes its id;
#   - SIGTERM to everyone: all exit 0 within 2 seconds and the kv file is gone;
#   - with --auth_token_file, a wrong or missing token is refused and the right one accepted;
#   - a none:// kv path fails with a clear message (zk://: test_kv_zk.sh).
# Every wait is polled with a deadline; every process is killed by the EXIT trap.
# usage: test_cluster.sh PSPLUS_BINARY      (KEEP_LOGS=1 keeps the temp dir)
set -uo pipefail
bin=$1
work=$(mktemp -d /tmp/psplus_cluster.XXXXXX)
. "$(dirname "$0")/cluster_lib.sh"
hb_ms=100 live_ms=1000
pass=0 fail=0

ok() { echo "PASS: $*"; pass=$((pass + 1)); }
ko() {
	echo "FAIL: $*"
	fail=$((fail + 1))
}
count() { grep -cE -- "$2" "$work/$1.log"; }
hb() { count sched "heartbeat from server $1:"; }
# hb_grows N ID...: every server ID has N more heartbeats than when hb_base was recorded.
declare -A base=()
hb_base() { for i in "$@"; do base[$i]=$(hb "$i"); done; }
hb_grows() {
	local n=$1 i
	shift
	for i in "$@"; do (($(hb "$i") >= ${base[$i]} + n)) || return 1; done
}

start_sched() {
	cl_sched sched -sn 3 -snet 100 -smem 1024 -sqps 100000 -bc False \
		--host 127.0.0.1 --heartbeat_ms $hb_ms --liveness_timeout_ms $live_ms \
		--log_level debug
}
# start_server NAME ID [BIND_CORES]: a server process whose log is NAME.log (-bc False unless
# told).
start_server() {
	cl_server "$1" "$2" -bc "${3:-False}" --host 127.0.0.1 --transport tcp --kv_wait_ms 5000
}
# send_raw PRINTF_FORMAT: open a connection to the scheduler, write the bytes, close.
send_raw() {
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	# The scheduler may reset the connection before all bytes are written: expected.
	printf "$1" >&3 2>/dev/null
	exec 3>&-
}
show_logs() { cl_dump_logs 15 'heartbeat from'; }

# ---- cluster start ------------------------------------------------------------------------
# Server 0 starts before the scheduler: it must wait for the kv entry, not fail.
start_server s0 0
sleep 0.2
start_sched
if wait_for 5000 test -s "$kv"; then ok "scheduler published $url"; else ko "no kv file at $kv"; fi
port=$(sed -n 's/^addr=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$kv")
if [[ $port =~ ^[0-9]+$ ]] && grep -qx 'server_num=3' "$kv"; then
	ok "kv file holds the address (port $port) and server_num=3"
else
	ko "kv file content: $(cat "$kv")"
	show_logs
	exit 1
fi
start_server s1 1
start_server s2 2 True
for i in 0 1 2; do
	if wait_for 5000 log_has sched "server $i registered: data plane 127\.0\.0\.1:[0-9]+ \(transport tcp\)"; then
		ok "scheduler logged server $i registered"
	else
		ko "server $i did not register"
	fi
done
if wait_for 3000 log_has sched "all 3 servers registered, cluster version 0x[0-9a-f]{16}"; then
	ok "scheduler logged all 3 servers registered with the cluster version"
else
	ko "no 'all 3 servers registered' line"
fi
if log_has s0 "server 0 starting: transport tcp requested, data-plane listener 127\.0\.0\.1:[0-9]+.*memlock limit"; then
	ok "server start-up log names id, transport, listener and memlock limit"
else
	ko "server 0 start-up log line missing"
fi
# --bind_cores: s2 pins its data-path threads and logs the plan (tcp: no device node, so every
# allowed CPU); s0 (-bc False) pins nothing.
if log_has s2 "bind_cores: no NUMA node for the device .*: all allowed CPUs [0-9].*; data-path thread->CPU: 0->[0-9]+" &&
	! log_has s0 "bind_cores:"; then
	ok "-bc True logs the thread->CPU layout it pinned; -bc False pins nothing"
else
	ko "bind_cores layout line wrong or missing: $(grep -h bind_cores "$work/s0.log" "$work/s2.log")"
fi

# ---- refused registrations ----------------------------------------------------------------
hb_base 0 1 2
start_server dup 1
if wait_for 5000 gone "${pid[dup]}"; then
	wait "${pid[dup]}"
	rc=$?
	unset 'pid[dup]'
	if [[ $rc -ne 0 ]] && log_has dup "server id 1 is already registered" &&
		log_has dup "psplus: server 1: server id already registered and live"; then
		ok "duplicate -si 1 exits $rc naming id 1"
	else
		ko "duplicate -si 1: exit $rc, log: $(cat "$work/dup.log")"
	fi
else
	ko "duplicate server still running after 5 s"
fi
if log_has sched "refused registration from .*server id 1 is already registered.*PS_EDUP_SERVER_ID"; then
	ok "scheduler logged the duplicate refusal"
else
	ko "no duplicate refusal in the scheduler log"
fi
start_server oor 3
if wait_for 5000 gone "${pid[oor]}"; then
	wait "${pid[oor]}"
	rc=$?
	unset 'pid[oor]'
	if [[ $rc -ne 0 ]] && log_has oor "server id 3 is out of range"; then
		ok "out-of-range -si 3 exits $rc naming id 3"
	else
		ko "out-of-range -si 3: exit $rc, log: $(cat "$work/oor.log")"
	fi
else
	ko "out-of-range server still running after 5 s"
fi
if wait_for 3000 hb_grows 5 0 1 2 && ! log_has sched "server [012] (dead|left)"; then
	ok "servers 0, 1, 2 keep heartbeating after the refusals"
else
	ko "heartbeats stalled after the refusals"
fi

# ---- malformed input ----------------------------------------------------------------------
# name | bytes | what the scheduler's warning must say
cases=(
	'garbage bytes|\x00\x00\x00\x08garbage!|does not decode'
	'oversized length prefix|\xff\xff\xff\xff|exceeds the limit'
	'oversized after a valid prefix size|\x01\x00\x00\x01|exceeds the limit'
	'truncated frame|\x00\x00\x00\x64\x08\x01\x72|truncated frame: closed after 3 of 100 bytes'
	'wrong proto_version|\x00\x00\x00\x04\x08\x02\x72\x00|proto_version 2, this build speaks 1'
	'HTTP request|GET / HTTP/1.0\r\n\r\n|exceeds the limit'
)
for c in "${cases[@]}"; do
	IFS='|' read -r name bytes want <<<"$c"
	before=$(count sched "bad frame from 127\.0\.0\.1:[0-9]+: .*$want")
	if ! send_raw "$bytes"; then
		ko "$name: cannot connect to the scheduler"
		continue
	fi
	if wait_for 3000 eval '(($(count sched "bad frame from 127\.0\.0\.1:[0-9]+: .*$want") > before))' &&
		alive "${pid[sched]}"; then
		ok "$name: connection closed with a warning naming the peer; scheduler alive"
	else
		ko "$name: no warning '$want' or the scheduler died"
	fi
done
# A connection that never sends a whole frame is dropped after the handshake timeout.
exec 4<>"/dev/tcp/127.0.0.1/$port"
printf '\x00\x00' >&4
if wait_for $((live_ms + 2000)) log_has sched "sent no complete message within $live_ms ms \(stuck mid-frame\)"; then
	ok "silent half-frame connection dropped after $live_ms ms"
else
	ko "silent connection not dropped"
fi
exec 4>&-
hb_base 0 1 2
if wait_for 3000 hb_grows 5 0 1 2 && alive "${pid[sched]}"; then
	ok "scheduler still takes heartbeats from all servers after the bad input"
else
	ko "heartbeats stalled after the bad input"
fi

# ---- liveness -----------------------------------------------------------------------------
# SIGSTOP: the connection stays open, so only the heartbeat timeout can notice.
t0=$(now_ms)
kill -STOP "${pid[s2]}"
if wait_for $((2 * live_ms + 1000)) log_has sched "server 2 dead: no heartbeat for [0-9]+ ms \(liveness timeout $live_ms ms\)"; then
	dt=$(($(now_ms) - t0))
	if ((dt <= 2 * live_ms)); then
		ok "stopped server 2 declared dead by the liveness timeout after ${dt} ms"
	else
		ko "stopped server 2 declared dead only after ${dt} ms"
	fi
else
	ko "stopped server 2 never declared dead"
fi
kill -CONT "${pid[s2]}"
if wait_for 5000 log_has sched "server 2 re-registered"; then
	ok "server 2 re-registered after SIGCONT"
else
	ko "server 2 did not re-register after SIGCONT"
fi

# kill -9: the kernel closes the socket; the scheduler must notice within the timeout.
t0=$(now_ms)
kill -9 "${pid[s1]}"
{ wait "${pid[s1]}"; } 2>/dev/null # bash reports "Killed" on the wait's stderr
unset 'pid[s1]'
if wait_for $((2 * live_ms)) log_has sched "server 1 dead: "; then
	dt=$(($(now_ms) - t0))
	if ((dt <= live_ms)); then
		ok "killed server 1 declared dead after ${dt} ms (liveness timeout $live_ms ms)"
	else
		ko "killed server 1 declared dead only after ${dt} ms"
	fi
else
	ko "killed server 1 never declared dead"
fi
start_server s1b 1
if wait_for 5000 log_has sched "server 1 re-registered.*3 of 3 servers live"; then
	ok "a new server 1 registers in the freed id after the bad input; 3 of 3 live"
else
	ko "replacement server 1 did not register"
fi
hb_base 0 1 2
if wait_for 3000 hb_grows 3 0 1 2; then
	ok "all three servers heartbeating"
else
	ko "heartbeats missing after the replacement"
fi

# ---- shutdown -----------------------------------------------------------------------------
procs=(sched s0 s1b s2)
kill -TERM "${pid[sched]}" "${pid[s0]}" "${pid[s1b]}" "${pid[s2]}"
t0=$(now_ms)
if wait_for 2000 all_gone "${pid[sched]}" "${pid[s0]}" "${pid[s1b]}" "${pid[s2]}"; then
	ok "all processes exited within $(($(now_ms) - t0)) ms of SIGTERM"
else
	ko "processes still running 2 s after SIGTERM"
fi
for n in "${procs[@]}"; do
	if gone "${pid[$n]}"; then
		wait "${pid[$n]}"
		rc=$?
		unset "pid[$n]"
		if [[ $rc -eq 0 ]]; then ok "$n exited with status 0"; else ko "$n exited with status $rc"; fi
	fi
done
if [[ ! -e $kv ]]; then ok "kv file removed"; else ko "kv file still present"; fi
if log_has sched "shutting down on SIGTERM" && log_has sched "scheduler stopped"; then
	ok "scheduler logged its shutdown"
else
	ko "scheduler shutdown not logged"
fi
if [[ -z $(find "$work" -name '.*.tmp.*') ]]; then
	ok "no temporary files left next to the kv path"
else
	ko "left in $work: $(ls -A "$work")"
fi

# ---- auth token ---------------------------------------------------------------------------
printf 'right-token\n' >"$work/token"
printf 'wrong-token\n' >"$work/bad_token"
akv=$work/auth.kv
url=file://$akv # from here on cl_sched and cl_server use the auth cluster's kv path
cl_sched asched -sn 1 -snet 100 -smem 1024 -sqps 100000 -bc False \
	--host 127.0.0.1 --heartbeat_ms $hb_ms --liveness_timeout_ms $live_ms \
	--auth_token_file "$work/token"
wait_for 5000 test -s "$akv" || ko "auth scheduler did not publish $akv"
# auth_server NAME [TOKEN_FILE]: a server of the auth cluster; returns its exit status.
auth_server() {
	local extra=()
	[[ -n ${2:-} ]] && extra=(--auth_token_file "$2")
	timeout 10 "$bin" -r server -sp "file://$akv" -si 0 -bc False --host 127.0.0.1 \
		--kv_wait_ms 3000 "${extra[@]}" 2>"$work/$1.log"
}
for t in "wrong token:$work/bad_token" "no token:"; do
	auth_server abad "${t#*:}"
	rc=$?
	if [[ $rc -eq 1 ]] && log_has abad "server 0: authentication failed"; then
		ok "server with ${t%%:*} refused (exit $rc)"
	else
		ko "server with ${t%%:*}: exit $rc, log: $(cat "$work/abad.log")"
	fi
done
cl_server agood 0 -bc False --host 127.0.0.1 --kv_wait_ms 3000 --auth_token_file "$work/token"
if wait_for 5000 log_has asched "all 1 servers registered"; then
	ok "server with the right token registers"
else
	ko "server with the right token did not register"
fi
kill -TERM "${pid[asched]}"
if wait_for 2000 all_gone "${pid[asched]}" "${pid[agood]}"; then
	wait "${pid[asched]}"
	rc1=$?
	wait "${pid[agood]}"
	rc2=$?
	unset 'pid[asched]' 'pid[agood]'
	if [[ $rc1 -eq 0 && $rc2 -eq 0 ]] && log_has agood "scheduler shutting down \(SIGTERM\); exiting"; then
		ok "SIGTERM to the scheduler alone: it tells the server, both exit 0"
	else
		ko "auth cluster exit statuses: scheduler $rc1, server $rc2"
	fi
else
	ko "auth cluster still running 2 s after SIGTERM to the scheduler"
fi

# ---- a kv path that cannot work -----------------------------------------------------------
out=$(timeout 10 "$bin" -r scheduler -sp none:// -sn 1 -snet 1 -smem 1 -sqps 1 -bc False 2>&1)
rc=$?
if [[ $rc -eq 1 ]] && grep -q "none:// cannot hold the scheduler address" <<<"$out"; then
	ok "scheduler with none:// as kv path exits 1 with a clear message"
else
	ko "none:// scheduler: exit $rc, output: $out"
fi

[[ $fail -eq 0 ]] || show_logs
echo "cluster: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
