#!/usr/bin/env bash
# Save on 3 servers, restore on 2 and on 5 (tests/integration/ckpt_driver.c, "train"):
#   - a model of four variables (dense with Adam, sparse with FTRL, hash64 with Adagrad,
#     hash128 with Adam: optimizer slots and Adam's powers) is trained for 6 steps on 3 servers (2 data-path
#     threads each) and saved as c1; training goes on for 6 more steps: the reference.
#   - a cluster of 2 servers (then of 5) restores c1 by itself at start (latest under -cp):
#     every row equals the model at c1 exactly; training the same 6 steps again gives the
#     reference to 1e-6 (so slots and optimizer state came back too); an explicit restore of c1
#     through the client brings the rows at c1 back once more.
# -smem makes the sparse variable several parts, so every layout reads saved parts clipped to
# new ranges, and hash keys move between servers and threads.
# usage: test_ckpt_layout.sh PSPLUS_BINARY CKPT_DRIVER    (KEEP_LOGS=1 keeps the logs)
set -uo pipefail
bin=$1
drv=$2
work=$(mktemp -d /tmp/psplus_ckpt_layout.XXXXXX)
. "$(dirname "$0")/ckpt_lib.sh"

SMEM=3 cluster 3
run "3 servers: 6 steps, save c1" train 0 6 c1 "$work/at_c1.bin"
run "3 servers: 6 more steps (reference)" train 6 12
run "3 servers: reference model pulled" dump "$work/ref.bin"
cl_stop

for n in 2 5; do
	SMEM=$((n == 2 ? 4 : 3)) cluster $n
	if log_has sched "restored checkpoint 'c1' \(saved on 3 servers\) onto $n servers"; then
		pass "$n servers: the scheduler restored c1 at start"
	else
		flunk "$n servers: no start-up restore of c1 in the scheduler log"
	fi
	run "$n servers: every row equals the model at c1" compare "$work/at_c1.bin" 0
	run "$n servers: 6 more steps after the restore" train 6 12
	run "$n servers: continued training equals uninterrupted training (1e-6)" \
		compare "$work/ref.bin" 1e-6
	run "$n servers: explicit restore of c1 through the client" restore c1 ok
	run "$n servers: every row equals the model at c1 again" compare "$work/at_c1.bin" 0
	cl_stop
done
grep -E "^(PASS|FAIL)" "$work/driver.out" | sed 's/^/  driver /'
[[ $fail -eq 0 ]] && echo "PASS: test_ckpt_layout"
exit $fail
