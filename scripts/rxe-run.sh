#!/usr/bin/env bash
# rxe-run.sh CMD [ARGS...]
#
# Runs CMD inside a throw-away QEMU guest that has soft-RoCE (rdma_rxe) devices, so that real
# verbs / rdma_cm code can be exercised on machines without RDMA hardware and whose kernel cannot
# load modules. See docs/rxe-guest.md (usage) and /work/shared/rxe-vm.md (measured background).
#
# How it works:
#   1. scripts/setup.sh installs the Debian packages (qemu, busybox-static, kmod, cpio, rdma-core,
#      perftest, ...).
#   2. A guest (Debian's current amd64 kernel + a tiny busybox initramfs holding only the modules
#      we need) is built once into <repo>/.cache/rxe-vm/guest-<hash>/, where <hash> is taken over
#      the guest's init script (which embeds the module list). It is rebuilt only when that
#      directory is missing or the init script changed. Builds happen in a temp dir that is renamed
#      into place at the end, under a lock, so an interrupted build leaves nothing half-made.
#   3. QEMU (TCG; KVM does not work here) boots the guest. The host's / is shared read-only over
#      virtio-9p and becomes /host in the guest; a second, writable 9p share (a fresh temp dir per
#      run) carries the command in and the results (output, exit status, init log) out.
#   4. The guest init loads the modules, prepares /host (tmpfs on /tmp and /run, proc/sys/dev),
#      creates PS_RXE_NDEV rxe devices, each on its own dummy netdev with its own address, waits
#      until they are ACTIVE, then runs CMD with `chroot /host` in the caller's cwd, writing its
#      output to a file in the writable share, which this script streams live to its stdout.
#
# Output contract: stdout carries CMD's stdout+stderr only; this script's own messages go to
# stderr. Exit status: CMD's exit status; 125 if the guest could not be built/booted or the
# devices could not be set up (or on bad usage); 124 if PS_RXE_TIMEOUT expired.
#
# Environment (host side):
#   PS_RXE_NDEV     number of rxe devices, 1..8 (default 2)
#   PS_RXE_TIMEOUT  seconds allowed for the guest run, boot to poweroff (default 600)
#   PS_RXE_VERBOSE  1: print boot/command timings and log locations on stderr
#   PS_RXE_PASSENV  space-separated names of host variables to pass into CMD's environment
# Environment seen by CMD in the guest (N = PS_RXE_NDEV):
#   PS_IN_RXE_GUEST=1, PS_RXE_DEVS="rxe0 .. rxe<N-1>", PS_RXE_ADDRS="192.0.2.1 .. 192.0.2.N",
#   PS_RXE<i>_ADDR=192.0.2.<i+1>, PATH (standard), HOME=/root, LANG=C.UTF-8.
#   Only /tmp, /run and /dev/shm are writable in the guest; the rest of the host fs is read-only.
#
# Logs of the last run (console, init, qemu, CMD output) are kept in <repo>/.cache/rxe-vm/last-run/.
set -euo pipefail

prog=rxe-run
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd -- "$script_dir/.." && pwd -P)
cache=$repo/.cache/rxe-vm

# Modules for the initramfs; their dependencies are added automatically. crc32_generic is needed:
# without it rdma_rxe cannot add a device ("failed to init crc32 algorithm err:-2").
MODULES="virtio_pci 9pnet_virtio 9p crc32_generic veth dummy rdma_rxe ib_uverbs rdma_ucm"

# Guest addresses come from the documentation range 192.0.2.0/24 (never routed anywhere).
ADDR_PREFIX=192.0.2.

msg() { echo "$prog: $*" >&2; }
# Runner-side failure (bad usage, build or boot failure): exit 125 so that it cannot be confused
# with an ordinary failure of CMD.
die() {
	msg "$*"
	exit 125
}

usage() {
	cat >&2 <<EOF
usage: scripts/rxe-run.sh CMD [ARGS...]
Runs CMD (via chroot into the host's read-only /) inside a QEMU guest with soft-RoCE devices.
env: PS_RXE_NDEV (1..8, default 2), PS_RXE_TIMEOUT (seconds, default 600),
     PS_RXE_VERBOSE=1, PS_RXE_PASSENV="VAR ..."; see docs/rxe-guest.md
EOF
	exit 125
}

(($# >= 1)) || usage
case $1 in -h | --help) usage ;; esac

ndev=${PS_RXE_NDEV:-2}
[[ $ndev =~ ^[1-8]$ ]] || die "PS_RXE_NDEV must be an integer in 1..8 (got '$ndev')"
timeout_s=${PS_RXE_TIMEOUT:-600}
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "PS_RXE_TIMEOUT must be a positive integer (got '$timeout_s')"
verbose=${PS_RXE_VERBOSE:-0}

# ---------------------------------------------------------------------------------------------
# 1. Packages. setup.sh is idempotent and cheap when everything is installed. Its output goes to
#    stderr so that our stdout stays CMD's output only.
"$script_dir/setup.sh" >&2 || die "scripts/setup.sh failed"

# ---------------------------------------------------------------------------------------------
# The guest's /init (busybox ash, PID 1). Its text, with the module list, determines the cache
# key. It talks to the host through the writable 9p share mounted at /share:
#   in:  /share/ndev (number of devices), /share/cmd.sh (the command, a bash script)
#   out: /share/init.log (this script's chatter), /share/out (CMD's stdout+stderr),
#        /share/setup-failed (reason, when the set-up failed), /share/cmd-start (guest uptime
#        when CMD started), /share/rc (CMD's exit status)
# Before /share is mounted, messages go to the console (ttyS0, a log file on the host).
IFS= read -r -d '' init_body <<'INIT_EOF' || true
export PATH=/bin
HOSTPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SETUP_TIMEOUT=60     # seconds to wait for each rxe port to become ACTIVE

log() { echo "init: [$(cut -d" " -f1 /proc/uptime)] $*"; }
finish() {
	sync
	poweroff -f
	sleep 10 # poweroff -f does not return; never let PID 1 exit
}
fail() {
	log "FAILED: $*"
	grep -q ' /share ' /proc/mounts 2>/dev/null && echo "$*" >/share/setup-failed
	finish
}
# Run a program of the host inside /host, with a clean environment: busybox's ip cannot create
# dummy links, and busybox has no rdma.
H() { chroot /host /usr/bin/env -i PATH="$HOSTPATH" "$@"; }

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"

# Only what is needed to reach the shares first, so that errors after that land in init.log.
for m in virtio_pci 9pnet_virtio 9p; do
	modprobe "$m" || fail "modprobe $m"
done
mkdir -p /share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 psrun /share || fail "mount the run share"
exec >>/share/init.log 2>&1
log "kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s"

log "loading modules"
for m in $MODULES; do
	case $m in
	dummy) modprobe dummy numdummies=0 || fail "modprobe dummy" ;; # no stray dummy0
	*) modprobe "$m" || fail "modprobe $m" ;;
	esac
done

# The host's / read-only at /host, with writable tmpfs on /tmp and /run and the guest's own
# proc, sys and dev over the host's (which 9p would otherwise show).
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /host || fail "mount hostroot"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "tmpfs on /host/tmp"
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "tmpfs on /host/run"
# A caller's folder under the host's /tmp or /run (hidden by the tmpfs above; CI clones there)
# comes as its own read-only share, mounted at the same path.
if [ -s /share/cwdshare ]; then
	d=$(cat /share/cwdshare)
	mkdir -p "/host$d" || fail "mkdir /host$d"
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostcwd "/host$d" ||
		fail "mount the share of $d"
fi
mount --bind /proc /host/proc || fail "bind /proc"
mount --bind /sys /host/sys || fail "bind /sys"
mount --bind /dev /host/dev || fail "bind /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=0666 devpts /host/dev/pts || fail "mount devpts"
mount -t tmpfs -o mode=1777 shm /host/dev/shm || fail "tmpfs on /dev/shm"
ulimit -l unlimited || fail "ulimit -l unlimited"
ulimit -c 0

log "/host ready"
ndev=$(cat /share/ndev) || fail "read /share/ndev"
ip link set lo up || fail "loopback up"
i=0
while [ "$i" -lt "$ndev" ]; do
	a=192.0.2.$((i + 1))
	H ip link add "psdummy$i" type dummy || fail "ip link add psdummy$i"
	# (busybox's ip can do these two; each host program started costs ~0.5 s under TCG + 9p)
	ip addr add "$a/32" dev "psdummy$i" || fail "ip addr add $a/32 dev psdummy$i"
	ip link set "psdummy$i" up || fail "ip link set psdummy$i up"
	H rdma link add "rxe$i" type rxe netdev "psdummy$i" || fail "rdma link add rxe$i"
	log "rxe$i added"
	i=$((i + 1))
done
i=0
while [ "$i" -lt "$ndev" ]; do
	f=/sys/class/infiniband/rxe$i/ports/1/state
	t=0
	until grep -q ACTIVE "$f" 2>/dev/null; do
		[ "$t" -ge $((SETUP_TIMEOUT * 10)) ] && fail "rxe$i: port not ACTIVE after ${SETUP_TIMEOUT}s ($(cat "$f" 2>&1))"
		sleep 0.1
		t=$((t + 1))
	done
	i=$((i + 1))
done
log "$ndev rxe device(s) ACTIVE:"
H rdma link

# The command script must be visible inside the chroot: copy it to the guest-only /run.
mkdir -p /host/run/rxe-run
cp /share/cmd.sh /host/run/rxe-run/cmd.sh || fail "copy cmd.sh"
cut -d' ' -f1 /proc/uptime >/share/cmd-start
log "running the command at uptime $(cat /share/cmd-start) s"
chroot /host /usr/bin/env -i PATH="$HOSTPATH" HOME=/root LANG=C.UTF-8 \
	/bin/bash /run/rxe-run/cmd.sh </dev/null >>/share/out 2>&1
rc=$?
echo "$rc" >/share/rc
log "command exited with status $rc at uptime $(cut -d' ' -f1 /proc/uptime) s"
finish
INIT_EOF
init_script="#!/bin/busybox sh
# /init of the psplus soft-RoCE guest, generated by scripts/rxe-run.sh
MODULES='$MODULES'
$init_body
"
# Bump "v1" when the build recipe below changes in a way that needs a rebuild.
guest_hash=$(printf 'rxe-guest-v1\n%s' "$init_script" | sha256sum | cut -c1-16)
guest=$cache/guest-$guest_hash

# ---------------------------------------------------------------------------------------------
# 2. Build the guest (kernel + initramfs) unless the cache already has this version.
build_tmp=
build_guest() {
	local kpkg deb root initrd out kver line path rel f a
	# Leftovers of an interrupted build (we hold the lock, so nobody else is building).
	rm -rf "$cache"/tmp.build.* "$cache"/tmp.dl.*
	build_tmp=$(mktemp -d "$cache/tmp.build.XXXXXX")
	msg "building the guest in $guest (once)"

	# Debian's current kernel image package, e.g. linux-image-6.1.0-56-amd64.
	kpkg_name() { apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: <\{0,1\}\(linux-image-[^ >]*\)>\{0,1\}$/\1/p' | head -n1; }
	kpkg=$(kpkg_name)
	if [[ -z $kpkg ]]; then
		msg "apt-cache knows no linux-image-amd64; running apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
		kpkg=$(kpkg_name)
	fi
	[[ -n $kpkg ]] || die "cannot find the kernel package (apt-cache depends linux-image-amd64)"

	# The .deb is kept in the cache (it survives a change of the init script). A download is made
	# in a temp dir and moved in only when complete; a damaged .deb is fetched again.
	mkdir -p "$cache/debs"
	deb=
	for f in "$cache/debs/${kpkg}"_*.deb; do
		[[ -f $f ]] && dpkg-deb --info "$f" >/dev/null 2>&1 && deb=$f
	done
	if [[ -z $deb ]]; then
		local dl
		dl=$(mktemp -d "$cache/tmp.dl.XXXXXX")
		local -a aptopt=()
		# apt drops to the _apt user for downloads, which cannot write into our 0700 temp dir.
		[[ $(id -u) -eq 0 ]] && aptopt=(-o APT::Sandbox::User=root)
		(cd "$dl" && apt-get download -qq "${aptopt[@]}" "$kpkg") >&2 ||
			die "apt-get download $kpkg failed"
		for f in "$dl"/*.deb; do
			dpkg-deb --info "$f" >/dev/null || die "downloaded $f is damaged"
			rm -f "$cache/debs"/*.deb # older kernels are no longer needed
			mv -f "$f" "$cache/debs/" && deb=$cache/debs/${f##*/}
		done
		rm -rf "$dl"
	fi
	[[ -n $deb ]] || die "no .deb for $kpkg"

	root=$build_tmp/root
	initrd=$build_tmp/initrd
	out=$build_tmp/out
	mkdir -p "$root" "$initrd" "$out"
	dpkg -x "$deb" "$root"
	kver=$(basename "$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
	[[ -n $kver && -f $root/boot/vmlinuz-$kver ]] || die "unexpected layout in $deb"
	# The package ships no modules.dep (its postinst makes it): make one for modprobe -D.
	depmod -b "$root" "$kver"

	# The initramfs: static busybox with all its applets in /bin, /init, and the modules.
	mkdir -p "$initrd"/{bin,dev,proc,sys,share,host,tmp,run,lib/modules/"$kver"}
	cp /bin/busybox "$initrd/bin/busybox"
	file /bin/busybox 2>/dev/null | grep -q 'statically linked' ||
		ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || die "/bin/busybox is not static (install busybox-static)"
	for a in $("$initrd/bin/busybox" --list); do
		[[ $a == busybox ]] || ln -s busybox "$initrd/bin/$a"
	done
	printf '%s' "$init_script" >"$initrd/init"
	chmod 0755 "$initrd/init"

	local -a mods
	read -r -a mods <<<"$MODULES"
	for m in "${mods[@]}"; do
		# Lines look like "insmod /ROOT/lib/modules/VER/kernel/.../x.ko [opts]" or "builtin x".
		modprobe -d "$root" -S "$kver" --show-depends "$m" >"$build_tmp/deps" ||
			die "modprobe --show-depends $m failed for kernel $kver"
		while read -r line; do
			[[ $line == insmod\ * ]] || continue
			path=${line#insmod }
			path=${path%% *}
			rel=${path#"$root"}
			[[ -f $initrd$rel || -f $initrd${rel%.*} ]] && continue
			mkdir -p "$(dirname "$initrd$rel")"
			# busybox modprobe wants plain .ko files; newer kernels ship them compressed.
			case $rel in
			*.ko.xz) busybox xz -dc "$path" >"$initrd${rel%.xz}" ;;
			*.ko.gz) gzip -dc "$path" >"$initrd${rel%.gz}" ;;
			*.ko.zst) zstd -qdc "$path" >"$initrd${rel%.zst}" ;;
			*) cp "$path" "$initrd$rel" ;;
			esac
		done <"$build_tmp/deps"
	done
	for f in modules.order modules.builtin modules.builtin.modinfo; do
		[[ -f $root/lib/modules/$kver/$f ]] && cp "$root/lib/modules/$kver/$f" "$initrd/lib/modules/$kver/"
	done
	depmod -b "$initrd" "$kver"

	(cd "$initrd" && find . -print0 | LC_ALL=C sort -z |
		cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -6 >"$out/initrd.gz"
	cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
	echo "$kver" >"$out/kernel-version"
	echo "$guest_hash" >"$out/stamp"
	# Atomic publish: the directory appears complete or not at all.
	rm -rf "$guest" # only ever an incomplete leftover here
	mv -T "$out" "$guest"
	rm -rf "$build_tmp"
	build_tmp=
	msg "guest ready: kernel $kver, initramfs $(du -h "$guest/initrd.gz" | cut -f1)"
}

# ---------------------------------------------------------------------------------------------
# Cleanup of everything this run created, on any exit (normal, error, or signal).
run=
qpid=
tpid=
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
	local rc=$?
	set +e
	# Stop qemu (via its `timeout` wrapper, which forwards the signal) and the output tailer.
	if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
		kill -TERM "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
	if [[ -n $tpid ]] && kill -0 "$tpid" 2>/dev/null; then
		kill -TERM "$tpid" 2>/dev/null
		wait "$tpid" 2>/dev/null
	fi
	[[ -n $build_tmp ]] && rm -rf "$build_tmp"
	if [[ -n $run && -d $run ]]; then
		# Keep the logs of the last run for post-mortems (copied aside, then swapped in, since
		# other runs may finish at the same time).
		mkdir -p "$cache/last-run.$$"
		cp -p "$run"/console.log "$run"/qemu.log "$run"/share/init.log "$run"/share/out \
			"$run"/share/cmd.sh "$cache/last-run.$$/" 2>/dev/null
		rm -rf "$cache/last-run"
		mv -T "$cache/last-run.$$" "$cache/last-run" 2>/dev/null || rm -rf "$cache/last-run.$$"
		rm -rf "$run"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$cache"
# One builder at a time; runs that find the guest ready only hold the lock briefly.
exec {lockfd}>"$cache/.lock"
flock "$lockfd"
# (Not `[[ ]] || build_guest`: a function called on the left of || runs without set -e.)
if ! [[ -f $guest/stamp && $(<"$guest/stamp") == "$guest_hash" && -f $guest/vmlinuz && -f $guest/initrd.gz ]]; then
	build_guest
fi
# Drop guests built from other init scripts, once unused for an hour (a run that has just passed
# this check, with another version of this script, may be about to boot one). Each run touches
# the stamp of the guest it uses.
touch "$guest/stamp"
for f in "$cache"/guest-*; do
	if [[ $f != "$guest" && -z $(find "$f/stamp" -mmin -60 2>/dev/null) ]]; then
		rm -rf "$f"
	fi
done
flock -u "$lockfd"
exec {lockfd}>&-

# ---------------------------------------------------------------------------------------------
# 3. Prepare this run's share: the device count and the command as a bash script. Arguments and
#    the cwd are quoted with printf %q (run by the same bash, from the host's /), so any argument
#    survives exactly.
run=$(mktemp -d "${TMPDIR:-/tmp}/rxe-run.XXXXXX")
mkdir "$run/share"
echo "$ndev" >"$run/share/ndev"
# The guest puts fresh tmpfs on /tmp and /run; a caller working below them gets its folder
# exported on its own (read-only), so a clone in /tmp (as CI makes) works like any other.
cwd_share=
case $PWD/ in
/tmp/* | /run/*) cwd_share=$PWD ;;
esac
[[ -n $cwd_share ]] && printf '%s\n' "$cwd_share" >"$run/share/cwdshare"
: >"$run/share/out"
: >"$run/console.log"
{
	echo "# generated by scripts/rxe-run.sh"
	devs='' addrs=''
	for ((i = 0; i < ndev; i++)); do
		devs+="${devs:+ }rxe$i"
		addrs+="${addrs:+ }$ADDR_PREFIX$((i + 1))"
		printf 'export PS_RXE%d_ADDR=%q\n' "$i" "$ADDR_PREFIX$((i + 1))"
	done
	printf 'export PS_IN_RXE_GUEST=1 PS_RXE_DEVS=%q PS_RXE_ADDRS=%q\n' "$devs" "$addrs"
	for v in ${PS_RXE_PASSENV:-}; do
		[[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "PS_RXE_PASSENV: bad variable name '$v'"
		[[ -v $v ]] && printf 'export %s=%q\n' "$v" "${!v}"
	done
	printf 'cd -- %q || { echo %q >&2; exit 125; }\n' "$PWD" \
		"rxe-run: cannot enter $PWD in the guest"
	printf 'exec --'
	printf ' %q' "$@"
	printf '\n'
} >"$run/share/cmd.sh"

# ---------------------------------------------------------------------------------------------
# 4. Boot. qemu runs under `timeout` (overall limit, then KILL 10 s later); the guest console
#    (kernel messages) goes to console.log, qemu's own messages to qemu.log.
# shellcheck disable=SC2054 # commas belong to qemu's option syntax
qemu=(
	qemu-system-x86_64
	-accel tcg,thread=multi -cpu max -smp 2 -m 4096
	-no-reboot -nographic -nic none -monitor none
	-serial "file:$run/console.log"
	-kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz"
	-append "console=ttyS0 panic=-1 quiet"
	-fsdev local,id=h,path=/,security_model=none,readonly=on,multidevs=remap
	-device virtio-9p-pci,fsdev=h,mount_tag=hostroot
	-fsdev "local,id=r,path=$run/share,security_model=none"
	-device virtio-9p-pci,fsdev=r,mount_tag=psrun
)
if [[ -n $cwd_share ]]; then
	qemu+=(-fsdev "local,id=c,path=$cwd_share,security_model=none,readonly=on,multidevs=remap"
		-device virtio-9p-pci,fsdev=c,mount_tag=hostcwd)
fi
t0=$(date +%s.%N)
timeout --kill-after=10 "$timeout_s" "${qemu[@]}" </dev/null >"$run/qemu.log" 2>&1 &
qpid=$!

# 5. Stream CMD's output live; tail exits (after a final read) once qemu's wrapper has exited.
tail -n +1 -s 0.2 --pid="$qpid" -f "$run/share/out" &
tpid=$!

qrc=0
wait "$qpid" || qrc=$?
qpid=
t1=$(date +%s.%N)
wait "$tpid" || true
tpid=

elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
share=$run/share
if [[ -f $share/cmd-start ]]; then
	ready=$(awk -v a="$t0" -v b="$(date -r "$share/cmd-start" +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	guest_ready=$(<"$share/cmd-start")
else
	ready=- guest_ready=-
fi
[[ $verbose == 1 ]] &&
	msg "qemu start to command: ${ready} s (guest uptime ${guest_ready} s); whole run ${elapsed} s; logs in $cache/last-run/"

show_tail() { # FILE TITLE: last 50 lines of a log, on stderr
	[[ -s $1 ]] || return 0
	echo "----- $prog: last 50 lines of $2 -----" >&2
	tail -n 50 "$1" >&2
	echo "----- end of $2 -----" >&2
}

# ---------------------------------------------------------------------------------------------
# 6. Result.
if [[ -f $share/rc ]]; then
	rc=$(<"$share/rc")
	[[ $rc =~ ^[0-9]+$ ]] || die "bad exit status '$rc' from the guest"
	exit "$rc"
fi
if ((qrc == 124 || qrc == 137)); then
	msg "timed out after ${timeout_s} s (PS_RXE_TIMEOUT); qemu killed"
	[[ -f $share/cmd-start ]] || {
		show_tail "$run/console.log" "the guest console"
		show_tail "$share/init.log" "the guest init log"
	}
	exit 124
fi
if [[ -f $share/setup-failed ]]; then
	show_tail "$share/init.log" "the guest init log"
	die "guest set-up failed: $(<"$share/setup-failed")"
fi
show_tail "$run/qemu.log" "qemu's messages"
show_tail "$run/console.log" "the guest console"
show_tail "$share/init.log" "the guest init log"
die "the guest failed to boot or the command never ran (qemu status $qrc)"
