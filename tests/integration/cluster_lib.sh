# shellcheck shell=bash disable=SC2154 # bin and work are the caller's (checked below)
# cluster_lib.sh: a local psplus cluster for the integration test scripts (test_cluster.sh,
# test_client_e2e.sh, test_conformance.sh, and the test_ckpt_*.sh scripts through ckpt_lib.sh).
# Each script keeps its own psplus options; this file starts the processes, waits for them with a
# deadline, stops them and cleans up.
#
# Reads (set before sourcing): bin (the psplus binary), work (a fresh folder); KEEP_LOGS (keep
# $work even if every check passed).
# Sets: fail=0; pid=() (NAME -> process id of every background process, see cl_sched); logs, kv
# and url (cl_dir "$work"); traps on EXIT (cl_cleanup), INT and TERM.
#
# Provides:
#   now_ms                     milliseconds since the epoch
#   wait_for MS CMD...         run CMD every 20 ms until it succeeds (0) or MS ms pass (1)
#   log_has NAME ERE           a line of $logs/NAME.log matches ERE
#   gone PID, alive PID        the process has exited (a zombie counts as gone), or not
#   all_gone PID...            every one has exited
#   pass MSG, flunk MSG        print "PASS: MSG" / "FAIL: MSG"; flunk also sets fail=1
#   cl_dir DIR                 the next cluster keeps its logs in DIR (logs), its kv file at
#                              DIR/sched.kv (kv) and url=file://$kv
#   cl_sched NAME OPTS...      psplus -r scheduler -sp $url OPTS in the background: pid[NAME],
#                              stderr appended to $logs/NAME.log
#   cl_server NAME ID OPTS...  psplus -r server -sp $url -si ID OPTS, likewise
#   cl_wait_kv MS              until the scheduler has published $kv; else a FAIL line, 1
#   cl_wait_registered N MS    until $logs/sched.log says "all N servers registered"; else a
#                              FAIL line, the logs' tails, 1
#   cl_check_alive             a FAIL line for every process of pid[] that has exited
#   cl_stop                    SIGTERM to pid[sched] (the servers leave with it); every process
#                              of pid[] must exit 0 within 20 s (else it is killed): a FAIL line
#                              and its log's tail for each that does not (under the
#                              sanitizers exit 0 also means no leak and no error). Empties pid[].
#   cl_dump_logs LINES [ERE]   the last LINES lines of every $logs/*.log (without lines
#                              matching ERE)
#   cl_cleanup                 the EXIT trap: SIGKILL whatever is left in pid[], remove $work
#                              unless a check failed or KEEP_LOGS is set
: "${bin:?cluster_lib.sh: set bin (the psplus binary) first}"
: "${work:?cluster_lib.sh: set work (a fresh folder) first}"
fail=0
declare -A pid=()

now_ms() { echo $(($(date +%s%N) / 1000000)); }

wait_for() {
	local deadline=$(($(now_ms) + $1))
	shift
	until "$@"; do
		(($(now_ms) >= deadline)) && return 1
		sleep 0.02
	done
}

log_has() { grep -qE -- "$2" "$logs/$1.log" 2>/dev/null; }

gone() { [[ ! -e /proc/$1 ]] || [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) == Z ]]; }
alive() { ! gone "$1"; }
all_gone() {
	local p
	for p in "$@"; do gone "$p" || return 1; done
}

pass() { echo "PASS: $*"; }
flunk() {
	echo "FAIL: $*"
	fail=1
}

cl_dir() {
	logs=$1
	kv=$1/sched.kv
	url=file://$kv
}

cl_sched() {
	local name=$1
	shift
	"$bin" -r scheduler -sp "$url" "$@" 2>>"$logs/$name.log" &
	pid[$name]=$!
}

cl_server() {
	local name=$1 id=$2
	shift 2
	"$bin" -r server -sp "$url" -si "$id" "$@" 2>>"$logs/$name.log" &
	pid[$name]=$!
}

cl_wait_kv() {
	wait_for "$1" test -s "$kv" && return 0
	flunk "the scheduler did not publish $url within $1 ms (log $logs/sched.log)"
	return 1
}

cl_wait_registered() {
	wait_for "$2" log_has sched "all $1 servers registered" && return 0
	flunk "the servers did not register within $2 ms (logs in $logs)"
	cl_dump_logs 20
	return 1
}

cl_check_alive() {
	local p
	for p in "${!pid[@]}"; do
		alive "${pid[$p]}" || flunk "$p died during the test (log $logs/$p.log)"
	done
}

cl_stop() {
	local p rc
	[[ -n ${pid[sched]:-} ]] && kill -TERM "${pid[sched]}" 2>/dev/null
	for p in "${!pid[@]}"; do
		wait_for 20000 gone "${pid[$p]}" || kill -9 "${pid[$p]}" 2>/dev/null
		wait "${pid[$p]}" 2>/dev/null
		rc=$?
		if [[ $rc -ne 0 ]]; then
			flunk "$p exited with status $rc (log $logs/$p.log):"
			tail -n 20 "$logs/$p.log"
		fi
	done
	pid=()
}

cl_dump_logs() {
	local f
	for f in "$logs"/*.log; do
		[[ -e $f ]] || continue
		echo "---- $(basename "$f") (last $1 lines)"
		if [[ -n ${2:-} ]]; then
			grep -vE -- "$2" "$f" | tail -n "$1"
		else
			tail -n "$1" "$f"
		fi
	done
}

cl_cleanup() {
	local p
	for p in "${pid[@]}"; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [[ $fail -eq 0 && -z ${KEEP_LOGS:-} ]]; then
		rm -rf "$work"
	else
		echo "logs kept in $work"
	fi
}

cl_dir "$work"
trap cl_cleanup EXIT
trap 'exit 130' INT TERM
