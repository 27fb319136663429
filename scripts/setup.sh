#!/usr/bin/env bash
# Installs every Debian package that psplus needs to build, test, run the demo and the
# benchmarks, and to build the soft-RoCE guest. Idempotent: when everything is present it only
# runs dpkg-query once and returns.
set -euo pipefail

PKGS=(
	# build
	build-essential cmake pkg-config clang-format
	# data path and control plane
	libibverbs-dev librdmacm-dev ibverbs-providers rdma-core
	libprotobuf-c-dev protobuf-c-compiler libnuma-dev
	# zk:// kv paths: the ZooKeeper C client; its tests run a ZooKeeper server (Java)
	libzookeeper-mt-dev libzookeeper-java default-jre-headless
	# tests and tools
	libcmocka-dev ibverbs-utils rdmacm-utils perftest iproute2 procps
	# soft-RoCE guest
	qemu-system-x86 busybox-static kmod cpio
)

missing=()
for p in "${PKGS[@]}"; do
	st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ "$st" == "ii "* ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "setup: missing packages: ${missing[*]}; run this script as root" >&2
	exit 1
fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists on a fresh machine may be empty or stale: refresh them once per run.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
