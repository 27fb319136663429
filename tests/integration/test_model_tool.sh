#!/usr/bin/env bash
# psplus-model, every subcommand and its exit codes (0 ok, 1 bad data / failed operation,
# 2 bad input), on a fixture checkpoint and two streaming deltas (model_fixture.c), then on
# damaged copies of them.
# usage: test_model_tool.sh PSPLUS_MODEL_BINARY FIXTURE_BINARY
set -uo pipefail
bin=$1 fixture=$2
pass=0 fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/psplus-model-tool.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/ckpt deltas=$tmp/deltas

ok() { echo "PASS: $*"; pass=$((pass + 1)); }
ko() { echo "FAIL: $*"; fail=$((fail + 1)); }

# expect CODE PATTERN ARGS...: exit status CODE and output (stdout + stderr) containing PATTERN
# (a fixed string; "" matches anything).
expect() {
	local code=$1 pat=$2 out rc
	shift 2
	out=$(timeout 30 "$bin" "$@" 2>&1)
	rc=$?
	if [[ $rc -eq $code ]] && grep -qF -- "$pat" <<<"$out"; then
		ok "psplus-model $* -> $rc, '$pat'"
	else
		ko "psplus-model $* -> $rc (want $code, '$pat'), output: $out"
	fi
}

# flip FILE OFFSET: change one byte in place.
flip() {
	local b
	b=$(od -An -tx1 -j "$2" -N1 "$1" | tr -d ' ')
	if [[ $b == ff ]]; then printf '\x00'; else printf '\xff'; fi |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

"$fixture" "$root" "$deltas" || { echo "FAIL: fixture"; exit 1; }

# usage and bad input
expect 0 "usage: psplus-model" --help
expect 0 "checkpoint format 1" --version
expect 2 "no command"
expect 2 "unknown command 'frobnicate'" frobnicate
expect 2 "list takes ROOT" list
expect 2 "no such directory" list "$tmp/nowhere"
expect 2 "checkpoints are read and written under file:// roots" list none://
expect 2 "a file URL needs an absolute path" list file://relative

# list / show
expect 0 "base" list "$root"
expect 0 "1 checkpoint under" list "file://$root"
expect 0 "kind sparse, width 3, rows 100, 1 slot: accum" show "$root" base
expect 0 "adam lr=0.001 beta1=0.9 beta2=0.999 eps=1e-08" show "$root" latest
expect 0 "kind hash64, width 2, live rows 50, 2 slots: m v" show "$root" base
expect 0 "cluster version 0x0000000000abcdef" show "$root" base
expect 0 "initializer truncated_normal(0,0.05) seed=42" show "$root" base
expect 2 "no checkpoint 'nosuch'" show "$root" nosuch
expect 2 "show takes ROOT NAME|latest" show "$root"

# verify
expect 0 "every CRC good" verify "$root" base
expect 0 "checkpoint 'base': 9 files" verify "$root" latest
expect 2 "no checkpoint 'x'" verify "$root" x

# dump
expect 0 "row 5: value [5, -5, 1.25] accum [0.100000001, 0.100000001, 0.100000001]" \
	dump "$root" base emb --ids 5,99
expect 0 "row 99: value [99, -99, 24.75]" dump "$root" base 2 --ids 99
expect 0 "row 3: value [3, 3.5]" dump "$root" latest bias --ids 3
expect 0 "key 3: value [3, 6] m [0, 0] v [0, 0]" dump "$root" base ids --keys 3,77
expect 0 "key 77: absent" dump "$root" base ids --keys 3,77
expect 0 "key 0x0000000000000002:0x00000000000003ea: value [2] accum [0.100000001] linear [0]" \
	dump "$root" base pairs --keys 2:1002
expect 0 "key 0x0000000000000002:0x00000000000003ea:" dump "$root" base pairs --keys 2:0x3ea
expect 2 "row 100 is out of range: 'emb' has rows 0..99" dump "$root" base emb --ids 100
expect 2 "'abc' is not a number" dump "$root" base emb --ids 5,abc
expect 2 "use --keys" dump "$root" base ids --ids 5
expect 2 "use --ids" dump "$root" base emb --keys 5
expect 2 "LO:HI keys are for hash128 variables" dump "$root" base ids --keys 1:2
expect 2 "has no variable 'nosuch'" dump "$root" base nosuch --ids 1
expect 2 "one of --ids or --keys" dump "$root" base emb

# deltas
expect 0 "2 deltas in" deltas "$deltas"
expect 0 "every CRC good" deltas "file://$deltas" --verify
expect 0 "delta-000002.psd" deltas "$deltas"
expect 2 "no such directory" deltas "$tmp/nowhere"

# apply-deltas
expect 2 "no such directory" apply-deltas "$root" base "$tmp/nowhere" new
expect 2 "'latest' is not a valid checkpoint name" apply-deltas "$root" base "$deltas" latest
expect 2 "already exists" apply-deltas "$root" base "$deltas" base
expect 2 "no checkpoint 'nosuch'" apply-deltas "$root" nosuch "$deltas" new
expect 2 "--after: 'x' is not a sequence number" apply-deltas "$root" base "$deltas" new --after x
expect 0 "checkpoint 'new' = 'base' + deltas 1..2 (2 files): 4 rows replaced, 1 inserted, 2 deleted, 0 deletions of absent keys" \
	apply-deltas "$root" base "$deltas" new
expect 0 "derived from    base + deltas through seq 2" show "$root" latest
expect 0 "row 5: value [50, 51, 52] accum [0.100000001, 0.100000001, 0.100000001]" \
	dump "$root" new emb --ids 5
expect 0 "row 6: value [6, -6, 1.5]" dump "$root" new emb --ids 6
expect 0 "key 3: absent" dump "$root" new ids --keys 3,1000
expect 0 "key 1000: value [9, 9] m [0, 0] v [0, 0]" dump "$root" new ids --keys 3,1000
expect 0 "row 2: value [12, 12.5]" dump "$root" new bias --ids 2
expect 0 "key 0x0000000000000002:0x00000000000003ea: absent" dump "$root" new pairs --keys 2:1002
expect 0 "every CRC good" verify "$root" new
expect 2 "already exists" apply-deltas "$root" base "$deltas" new
expect 1 "no delta in" apply-deltas "$root" new "$deltas" newer
expect 0 "'prefix' = 'base' + deltas 1..1 (1 files)" apply-deltas "$root" base "$deltas" prefix --upto 1
expect 0 "row 2: value [2, 2.5]" dump "$root" prefix bias --ids 2
expect 0 "3 checkpoints under" list "$root"

# no progress-bar escapes when stderr is not a terminal
out=$("$bin" verify "$root" new 2>&1 >/dev/null)
if [[ -z $out ]]; then ok "no progress output without a tty"; else ko "progress output without a tty: $out"; fi

# damage: a flipped byte in a part file, a truncated part, a flipped byte in a delta
part=$(ls "$root"/new/v2-*.psp | head -1)
flip "$part" 80
expect 1 "BAD $part: $part: content CRC mismatch" verify "$root" new
expect 1 "of 9 files bad" verify "$root" new
expect 1 "CRC mismatch" dump "$root" new emb --ids 0,99
expect 0 "every CRC good" verify "$root" base
part2=$(ls "$root"/base/v3-*.psp | head -1)
truncate -s -5 "$part2"
expect 1 "truncated at offset" verify "$root" base
flip "$deltas/delta-000001.psd" 70
expect 1 "BAD $deltas/delta-000001.psd: content CRC mismatch" deltas "$deltas" --verify
expect 1 "content CRC mismatch" apply-deltas "$root" prefix "$deltas" again --after 0
expect 2 "no checkpoint 'again'" show "$root" again
flip "$root/index" 30
expect 1 "$root/index: " list "$root"

# remove (on a fresh index)
rm -rf "$root" "$deltas"
"$fixture" "$root" "$deltas" || { echo "FAIL: fixture"; exit 1; }
expect 2 "not a checkpoint name" remove "$root" latest
expect 0 "removed checkpoint 'base'" remove "$root" base
expect 2 "no checkpoint 'base'" remove "$root" base
expect 2 "no checkpoint under" show "$root" latest
expect 0 "0 checkpoints under" list "$root"

echo "model tool: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
