#!/usr/bin/env bash
# The conformance test (tests/integration/test_conformance.sh and conformance.c) over rdma in
# the soft-RoCE guest: the scheduler on 127.0.0.1 (the control plane is tcp), server i started
# with --transport rdma --host on device i's address (one rxe device per server: every
# connection to a server then runs on its device), the client with transport rdma.
#
# N = 1 and N = min(3, devices): rxe-run.sh gives PS_RXE_NDEV devices (scripts/test.sh asks for 3;
# with 2, the default of rxe-run.sh, the guest runs N = 1 and N = 2).
# Optimizers: under TCG each declaration, pull and push costs milliseconds and each cluster
# start seconds, so the guest trains three of the ten optimizers on every kind - sgd (no slots),
# adam (two slots; its per-part step counts check the request count per thread) and
# centered_rmsprop (three slots): every row stride, the rdma data path being what the guest adds
# to the host run, which covers all ten. PS_CONF_OPTIMS overrides (comma-separated driver names).
# The sync cases run unchanged. Steps: 50 (the host runs 100); PS_CONF_STEPS overrides. Measured
# on a loaded 2-core host: about 125 s with 100 steps, so 50 keeps the test near 60-90 s.
#
# usage: conformance_rxe.sh PSPLUS_BINARY CONFORMANCE_BINARY
#   (build/tests/rxe/conformance_rxe runs it with the build's binaries)
# Exits 77 (skipped) without rxe devices, i.e. outside the guest.
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

if [[ -z ${PS_RXE_ADDRS:-} ]] || ! compgen -G '/sys/class/infiniband/*' >/dev/null; then
	echo "conformance_rxe: no rxe devices (run in the guest: scripts/rxe-run.sh)"
	exit 77
fi
read -r -a addrs <<<"$PS_RXE_ADDRS"
n=${#addrs[@]}
((n > 3)) && n=3
if ((n < 3)); then
	echo "conformance_rxe: ${#addrs[@]} rxe device(s), one per server: N = 1 and N = $n" \
		"(PS_RXE_NDEV=3 for N = 3)"
fi
ns="1 $n"
((n == 1)) && ns=1
optims=${PS_CONF_OPTIMS:-sgd,adam,centered_rmsprop}
steps=${PS_CONF_STEPS:-50}
echo "conformance_rxe: reduced for TCG: optimizers $optims (of 10) and $steps steps" \
	"(the host runs all 10 for 100 steps)"
PS_CONF_NS=$ns PS_CONF_TRANSPORT=rdma PS_CONF_HOSTS="${addrs[*]:0:n}" PS_CONF_OPTIMS=$optims \
	PS_CONF_STEPS=$steps exec "$here/../integration/test_conformance.sh" "$@"
