#!/usr/bin/env bash
# zk:// kv paths against a real ZooKeeper server (Debian's libzookeeper-java, standalone, on a
# free port of 127.0.0.1, its data in the test's folder):
#   - a server started before its scheduler waits for the znode (whose parents do not exist
#     yet), then registers once the scheduler has published it;
#   - psplus-ctr trains a model and psplus-admin saves a checkpoint, both finding the scheduler
#     through zk://;
#   - a second scheduler publishing at the same path replaces the entry; the first one's
#     shutdown then leaves it in place (compare-and-delete on the znode's version), and a server
#     registers with the second; its shutdown removes the znode;
#   - with the entry gone, psplus-admin fails naming the missing entry; with ZooKeeper paused
#     (SIGSTOP) a waiting server gives up by its --kv_wait_ms (plus the close); with it killed, a
#     server gives up after its --kv_wait_ms naming the ensemble it could not reach.
# Every wait is polled with a deadline; every process is killed by the EXIT trap.
# usage: test_kv_zk.sh PSPLUS PSPLUS_CTR PSPLUS_ADMIN      (KEEP_LOGS=1 keeps the temp dir)
set -uo pipefail
bin=$1 ctr=$2 admin=$3
work=$(mktemp -d /tmp/psplus_zk.XXXXXX)
. "$(dirname "$0")/cluster_lib.sh"
zkjar=/usr/share/java/zookeeper.jar
zkpid= bpid= b0= hp=
# The ZooKeeper server and the second cluster (started outside pid[]) go with the rest.
trap 'kill -9 $zkpid $bpid $b0 $hp 2>/dev/null; cl_cleanup' EXIT

if ! command -v java >/dev/null || [[ ! -r $zkjar ]]; then
	flunk "java or $zkjar missing (scripts/setup.sh installs default-jre-headless and libzookeeper-java)"
	exit 1
fi

# ---- a ZooKeeper server ---------------------------------------------------------------------
# zk_ok: the server answers "ruok" with "imok".
zk_ok() {
	local r
	exec 4<>"/dev/tcp/127.0.0.1/$zkport" 2>/dev/null || return 1
	printf ruok >&4
	r=$(timeout 2 cat <&4)
	exec 4>&-
	[[ $r == imok ]]
}
# start_zk: on a random free port (three tries); sets zkport and zkpid.
start_zk() {
	local try
	mkdir -p "$work/zkdata"
	for try in 1 2 3; do
		zkport=$((20000 + RANDOM % 40000))
		(exec 4<>"/dev/tcp/127.0.0.1/$zkport") 2>/dev/null && continue # taken
		cat >"$work/zoo.cfg" <<-EOF
			tickTime=500
			dataDir=$work/zkdata
			clientPort=$zkport
			clientPortAddress=127.0.0.1
			maxSessionTimeout=10000
			admin.enableServer=false
			4lw.commands.whitelist=ruok
		EOF
		java -Xmx256m -cp "$zkjar" org.apache.zookeeper.server.ZooKeeperServerMain \
			"$work/zoo.cfg" >>"$logs/zk.log" 2>&1 &
		zkpid=$!
		wait_for 60000 zk_ok && return 0
		kill -9 "$zkpid" 2>/dev/null
		wait "$zkpid" 2>/dev/null
		zkpid=
	done
	return 1
}
t0=$(now_ms)
if ! start_zk; then
	flunk "ZooKeeper did not start (log $logs/zk.log)"
	tail -n 20 "$logs/zk.log"
	exit 1
fi
pass "ZooKeeper answers on 127.0.0.1:$zkport after $(($(now_ms) - t0)) ms"

url="zk://127.0.0.1:$zkport/psplus/it/sched"
sched_opts=(-snet 100 -smem 1024 -sqps 100000 -bc False --host 127.0.0.1)
srv_opts=(-bc False --host 127.0.0.1 --transport tcp)

# ---- a cluster found through ZooKeeper ------------------------------------------------------
cl_server s0 0 "${srv_opts[@]}" --kv_wait_ms 30000
sleep 0.5
if alive "${pid[s0]}"; then
	pass "a server started before the scheduler waits for the znode"
else
	flunk "server 0 exited before the scheduler started (log $logs/s0.log)"
fi
cl_sched sched -sn 2 "${sched_opts[@]}" -cp "file://$work/ckpt"
if wait_for 20000 log_has sched "published at zk://"; then
	pass "the scheduler published its address at $url"
else
	flunk "the scheduler did not publish at $url"
	cl_dump_logs 20
	exit 1
fi
cl_server s1 1 "${srv_opts[@]}" --kv_wait_ms 30000
cl_wait_registered 2 30000 || exit 1
pass "both servers found the scheduler through ZooKeeper and registered"

out=$(timeout 300 "$ctr" --kv "$url" --epochs 1 --train 20000 --test 5000 --transport tcp \
	--timeout-ms 30000 2>&1)
rc=$?
if [[ $rc -eq 0 ]] && grep -qE 'auc' <<<"$out"; then
	pass "psplus-ctr trained through zk:// ($(grep -oE 'auc[=: ]+[0-9.]+' <<<"$out" | tail -n1))"
else
	flunk "psplus-ctr --kv $url: exit $rc: $(tail -n 5 <<<"$out")"
fi
out=$(timeout 120 "$admin" save --kv "$url" --timeout_ms 60000 zk1 2>&1)
rc=$?
if [[ $rc -eq 0 && -d $work/ckpt/zk1 ]]; then
	pass "psplus-admin saved checkpoint zk1 through zk://"
else
	flunk "psplus-admin save --kv $url: exit $rc: $out ($(ls "$work/ckpt" 2>&1))"
fi

# ---- a second scheduler replaces the entry; the first leaves it in place --------------------
"$bin" -r scheduler -sp "$url" -sn 1 "${sched_opts[@]}" 2>>"$logs/schedb.log" &
bpid=$!
if wait_for 20000 log_has schedb "published at zk://"; then
	pass "a second scheduler published at the same path"
else
	flunk "the second scheduler did not publish"
fi
cl_stop
if log_has sched "another scheduler's entry; left in place|replaced by another scheduler's entry"; then
	pass "the first scheduler's shutdown left the second one's entry in place"
else
	flunk "the first scheduler's shutdown did not report the other entry (log $logs/sched.log)"
fi
"$bin" -r server -sp "$url" -si 0 "${srv_opts[@]}" --kv_wait_ms 20000 2>>"$logs/sb0.log" &
b0=$!
if wait_for 30000 log_has schedb "all 1 servers registered"; then
	pass "a server registered with the second scheduler through the same znode"
else
	flunk "no server registered with the second scheduler"
fi
kill -TERM "$bpid"
wait_for 20000 all_gone "$bpid" "$b0" || kill -9 "$bpid" "$b0" 2>/dev/null
wait "$bpid"
rc1=$?
wait "$b0"
rc2=$?
if [[ $rc1 -eq 0 && $rc2 -eq 0 ]]; then
	pass "the second scheduler and its server exit 0 on SIGTERM"
else
	flunk "second cluster exit statuses: scheduler $rc1, server $rc2"
fi

# ---- the entry is gone; then ZooKeeper is gone ----------------------------------------------
out=$(timeout 30 "$admin" export --kv "$url" --timeout_ms 1500 2>&1)
rc=$?
if [[ $rc -ne 0 ]] && grep -q "no scheduler entry" <<<"$out"; then
	pass "after a clean shutdown the znode is gone: psplus-admin exits $rc naming the missing entry"
else
	flunk "psplus-admin after the shutdown: exit $rc: $out"
fi
# ZooKeeper stops answering (SIGSTOP) while a server waits on a connected session: the read in
# flight is given up at the wait's deadline, not at the client library's session timeout.
t0=$(now_ms)
"$bin" -r server -sp "$url" -si 0 "${srv_opts[@]}" --kv_wait_ms 3000 2>>"$logs/hung.log" &
hp=$!
sleep 1 # connected by now, reading "no entry" every 200 ms
kill -STOP "$zkpid"
wait_for 20000 gone "$hp" || kill -9 "$hp"
wait "$hp"
rc=$?
took=$(($(now_ms) - t0))
kill -CONT "$zkpid"
if [[ $rc -eq 1 ]] && log_has hung "gave up after 3000 ms" && ((took < 8000)); then
	pass "ZooKeeper stopped mid-wait: the server gives up after $took ms (kv_wait_ms 3000)"
else
	flunk "ZooKeeper stopped mid-wait: exit $rc after $took ms (log $logs/hung.log)"
fi
kill -9 "$zkpid"
wait "$zkpid" 2>/dev/null
zkpid=
t0=$(now_ms)
out=$(timeout 30 "$bin" -r server -sp "$url" -si 0 "${srv_opts[@]}" --kv_wait_ms 1500 2>&1)
rc=$?
took=$(($(now_ms) - t0))
if [[ $rc -eq 1 ]] && grep -q "no ZooKeeper server of 127.0.0.1:$zkport answered" <<<"$out" &&
	((took < 10000)); then
	pass "with ZooKeeper down a server gives up after $took ms naming the ensemble"
else
	flunk "server with ZooKeeper down: exit $rc after $took ms: $(tail -n 3 <<<"$out")"
fi

[[ $fail -eq 0 ]] || cl_dump_logs 15 'heartbeat from'
exit $fail
