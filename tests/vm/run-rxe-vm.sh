#!/bin/bash
# run-rxe-vm.sh -- run one command inside a throw-away qemu VM that has
# Soft-RoCE (rdma_rxe) devices, and exit with the command's exit code.
#
#   tests/vm/run-rxe-vm.sh --setup        install packages, fetch the Debian kernel,
#                                          build the initramfs (cached)
#   tests/vm/run-rxe-vm.sh --check        exit 0 when a VM can boot now, else 77
#                                          (meson's "skipped") with the reason on stderr
#   tests/vm/run-rxe-vm.sh [--] CMD ARGS  boot, run CMD in the current directory, power off
#
# The guest boots Debian's own kernel (linux-image-amd64, unpacked with dpkg -x,
# never installed on the host) under TCG with a busybox initramfs. The host's
# "/" is shared read-only over virtio-9p with a tmpfs overlay on top (the guest
# may write anywhere, the writes vanish at power-off); RXE_VM_RW_DIRS="d1 d2"
# are shared read-write at the same paths. Every host binary and library
# (rdma-core, perftest, the project's build tree) runs in the guest unchanged.
#
# Before CMD starts, the guest has RXE_VM_RAILS (default 1) Soft-RoCE devices:
#   rxe<i> on dummy<i>, address 10.78.<i>.1/24, MTU $RXE_VM_MTU (9000 -> RoCE 4096)
# GID index 1 is the IPv4-mapped RoCEv2 GID (::ffff:10.78.<i>.1). rxe loops
# packets for its own address back internally, so server and client of a test
# both run in this one VM on the same device:
#   ib_write_bw -d rxe0 -x 1 -n 1000 & sleep 1; ib_write_bw -d rxe0 -x 1 -n 1000 127.0.0.1
#   rping -s -a 10.78.0.1 &  sleep 1; rping -c -a 10.78.0.1 -C 10
# CMD sees RXE_VM=1 RXE_VM_RAILS=N RXE_DEV=rxe0 RXE_GID=1 RXE_IP=10.78.0.1.
#
# Knobs: RXE_VM_CACHE (default $HOME/.cache/kvwire-rxe)  RXE_VM_MEM (1024M)
#   RXE_VM_SMP (host nproc)  RXE_VM_TIMEOUT (s, 1800)  RXE_VM_MTU (9000)
#   RXE_VM_RAILS (1..8)  RXE_VM_RW_DIRS  RXE_VM_VERBOSE=1 (kernel + setup log)
#   RXE_VM_SETUP=0 (never install or download: exit 77 when not set up; tests use it)
#   RXE_VM_PVH=0 (boot the bzImage rather than the extracted vmlinux)
# Exit code: CMD's; 124 on timeout; 125 when the VM died without a result;
#   77 when the VM cannot be set up (no qemu, no kernel package reachable).
#
# KVM stays off: on these nested hosts L1 KVM has no nested paging, runs ~100x
# slower than TCG and crashes the guest (see docs/drivers/rdma.md).
set -euo pipefail

CACHE=${RXE_VM_CACHE:-${HOME:-/root}/.cache/kvwire-rxe}
MEM=${RXE_VM_MEM:-1024M}
SMP=${RXE_VM_SMP:-$(nproc)}
TMO=${RXE_VM_TIMEOUT:-1800}
MTU=${RXE_VM_MTU:-9000}
RAILS=${RXE_VM_RAILS:-1}
VERBOSE=${RXE_VM_VERBOSE:-0}
log() { echo "[rxe-vm] $*" >&2; }

PKGS="qemu-system-x86 busybox-static kmod cpio xz-utils rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest libibverbs-dev librdmacm-dev iproute2"

case "$RAILS" in [1-8]) ;; *) log "RXE_VM_RAILS must be 1..8 (got '$RAILS')"; exit 2 ;; esac

# is everything there to boot now? (no installs, no downloads)
ready() {
	command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: run $0 --setup (needs apt)"; return 1; }
	[ -x /bin/busybox ] || { echo "busybox-static missing: run $0 --setup"; return 1; }
	[ -e "$CACHE/kernel/.done" ] || { echo "no guest kernel in $CACHE: run $0 --setup"; return 1; }
	[ -e "$CACHE/initrd.img" ] || { echo "no initramfs in $CACHE: run $0 --setup"; return 1; }
	[ "$0" -nt "$CACHE/initrd.img" ] && { echo "initramfs older than $0: run $0 --setup"; return 1; }
	return 0
}

install_pkgs() {
	local missing=() p
	for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
	((${#missing[@]})) || return 0
	log "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_kernel() {
	[ -e "$CACHE/kernel/.done" ] && return 0
	log "fetching + unpacking Debian's kernel package into $CACHE/kernel"
	local kpkg kver vz off
	kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	[ -n "$kpkg" ] || { log "apt-cache knows no linux-image-amd64: run apt-get update"; return 1; }
	rm -rf "$CACHE/kernel" "$CACHE"/linux-image-*.deb
	(cd "$CACHE" && apt-get download "$kpkg" >/dev/null)
	dpkg -x "$CACHE"/linux-image-*.deb "$CACHE/kernel"
	rm -f "$CACHE"/linux-image-*.deb
	kver=$(ls "$CACHE/kernel/lib/modules")
	depmod -b "$CACHE/kernel" "$kver"
	# an uncompressed ELF vmlinux boots via PVH and skips the slow (under TCG)
	# bzImage decompressor
	vz="$CACHE/kernel/boot/vmlinuz-$kver"
	off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$vz" | head -1 | cut -d: -f1)
	tail -c +$((off + 1)) "$vz" | xz -dc 2>/dev/null >"$CACHE/kernel/boot/vmlinux-$kver" || true
	touch "$CACHE/kernel/.done"
}

build_initrd() {
	[ -e "$CACHE/initrd.img" ] && [ ! "$0" -nt "$CACHE/initrd.img" ] && return 0
	log "building initramfs"
	local kver d m f
	kver=$(ls "$CACHE/kernel/lib/modules")
	d="$CACHE/initrd.d"; rm -rf "$d"
	mkdir -p "$d"/{bin,dev,proc,sys,mnt/lower,mnt/upper,newroot,xfer,mods}
	cp /bin/busybox "$d/bin/busybox"
	# modules needed before the host root is reachable, in dependency order
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		modprobe -d "$CACHE/kernel" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}'
	done | awk '!seen[$0]++' | while read -r f; do
		cp "$f" "$d/mods/"; basename "$f" >>"$d/mods/order"
	done
	write_init >"$d/init"; chmod +x "$d/init"
	(cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initrd.img.tmp"
	mv "$CACHE/initrd.img.tmp" "$CACHE/initrd.img"
}

setup() {
	mkdir -p "$CACHE"
	install_pkgs && fetch_kernel && build_initrd
}

write_init() {
cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m failed"; done
p=$(cat /proc/cmdline)
arg() { for w in $p; do case $w in $1=*) echo "${w#*=}";; esac; done; }
KDIR=$(arg rxevm.kdir)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /mnt/lower || { echo "9p mount failed"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer /xfer || { echo "xfer mount failed"; poweroff -f; }
mount -t tmpfs -o mode=755 tmp /mnt/upper; mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w ovl /newroot || { echo "overlay failed"; poweroff -f; }
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t tmpfs run $R/run
mkdir -p $R/run/rxe-xfer; mount --bind /xfer $R/run/rxe-xfer
KVER=$(uname -r); mkdir -p $R/lib/modules/$KVER
mount --bind $R$KDIR/lib/modules/$KVER $R/lib/modules/$KVER
i=0; for t in $(cat /xfer/rwdirs 2>/dev/null); do
  mkdir -p "$R$t"; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw$i "$R$t" || echo "rw mount $t failed"; i=$((i+1)); done
# kernel module autoload (request_module) must run modprobe inside the new root
printf '#!/bin/busybox sh\nexec /bin/chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-chroot; chmod +x /bin/modprobe-chroot
echo /bin/modprobe-chroot > /proc/sys/kernel/modprobe
hostname rxevm; echo rxevm > $R/etc/hostname 2>/dev/null
echo "127.0.0.1 localhost rxevm" > $R/etc/hosts
chroot $R /bin/sh /run/rxe-xfer/guest-setup.sh > /xfer/setup.log 2>&1
src=$?; echo "setup rc=$src" >> /xfer/setup.log
[ $src = 0 ] || echo "RXE-VM: guest setup FAILED (log follows on stderr)"
stty -onlcr 2>/dev/null   # no CRLF in the captured console output
echo "RXE-VM: ready $(cut -d' ' -f1 /proc/uptime)s after kernel start"
if [ $src = 0 ]; then chroot $R /bin/sh /run/rxe-xfer/cmd.sh; echo $? > /xfer/rc; else echo 125 > /xfer/rc; fi
sync
poweroff -f
EOF
}

# guest side: modules, then one rxe device per rail on its own dummy netdev
write_guest_setup() {
cat <<EOF
set -x
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up
modprobe -a crc32_generic rdma_rxe ib_uverbs rdma_ucm dummy || exit 1
i=0
while [ \$i -lt $RAILS ]; do
  ip link add dummy\$i mtu $MTU type dummy || exit 1
  ip addr add 10.78.\$i.1/24 dev dummy\$i || exit 1
  ip link set dummy\$i up || exit 1
  rdma link add rxe\$i type rxe netdev dummy\$i || exit 1
  i=\$((i+1))
done
# wait (<= 10 s) until every port says ACTIVE and has its IPv4 GID (index 1,
# sysfs spells it 0000:0000:0000:0000:0000:ffff:0a4e:0001)
set +x
n=100
while :; do
  ok=1; i=0
  while [ \$i -lt $RAILS ]; do
    grep -q ACTIVE /sys/class/infiniband/rxe\$i/ports/1/state 2>/dev/null || ok=0
    grep -q '^0000:0000:0000:0000:0000:ffff:' /sys/class/infiniband/rxe\$i/ports/1/gids/1 2>/dev/null || ok=0
    i=\$((i+1))
  done
  [ \$ok = 1 ] && break
  n=\$((n-1)); [ \$n -gt 0 ] || { echo "rxe ports not ACTIVE with an IPv4 GID after 10 s"; rdma link show; cat /sys/class/infiniband/*/ports/1/gids/1; exit 1; }
  sleep 0.1
done
rdma link show
EOF
}

write_cmd() {
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	echo "export HOME=${HOME:-/root} TERM=dumb LANG=C.UTF-8"
	echo "export RXE_VM=1 RXE_VM_RAILS=$RAILS RXE_DEV=rxe0 RXE_GID=1 RXE_IP=10.78.0.1"
	# pass the caller's KVW_* / test knobs through
	local v
	for v in $(compgen -e | grep -E '^(KVW_|CRITERION_|ASAN_|UBSAN_|MESON_TEST)' || true); do
		printf 'export %s=%q\n' "$v" "${!v}"
	done
	echo "ulimit -l unlimited"
	printf 'cd %q || exit 126\n' "$PWD"
	printf 'exec'; printf ' %q' "$@"; printf '\n'
}

case "${1:-}" in
--setup) setup; exit $? ;;
--check) why=$(ready) || { echo "[rxe-vm] skip: $why" >&2; exit 77; }; exit 0 ;;
--) shift ;;
esac
[ $# -ge 1 ] || { echo "usage: $0 [--] CMD [ARGS...] | --setup | --check" >&2; exit 2; }

if [ "${RXE_VM_SETUP:-1}" = 0 ]; then
	why=$(ready) || { log "skip: $why"; exit 77; }
else
	setup || { log "setup failed: the VM cannot run here"; exit 77; }
fi

KVER=$(ls "$CACHE/kernel/lib/modules")
mkdir -p "$CACHE/runs"
XFER=$(mktemp -d "$CACHE/runs/xfer.XXXXXX")
trap 'rm -rf "$XFER"' EXIT
write_guest_setup >"$XFER/guest-setup.sh"
write_cmd "$@" >"$XFER/cmd.sh"

RW=()
i=0
: >"$XFER/rwdirs"
for d in ${RXE_VM_RW_DIRS:-}; do
	d=$(realpath "$d")
	RW+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
	echo "$d" >>"$XFER/rwdirs"; i=$((i + 1))
done

KIMG=$CACHE/kernel/boot/vmlinux-$KVER
if [ "${RXE_VM_PVH:-1}" = 0 ] || [ ! -s "$KIMG" ]; then KIMG=$CACHE/kernel/boot/vmlinuz-$KVER; fi
QUIET=quiet; [ "$VERBOSE" = 1 ] && QUIET=""
log "booting (TCG, mem=$MEM, smp=$SMP, rails=$RAILS, mtu=$MTU, kernel=$KVER)"
set +e
timeout --foreground -k 10 "$TMO" qemu-system-x86_64 -accel tcg,thread=multi -cpu max \
	-m "$MEM" -smp "$SMP" -nodefaults -no-user-config -display none -no-reboot \
	-serial stdio -monitor none \
	-kernel "$KIMG" -initrd "$CACHE/initrd.img" \
	-append "console=ttyS0 $QUIET panic=-1 tsc=reliable clocksource=tsc rdinit=/init rxevm.kdir=$CACHE/kernel" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$XFER,mount_tag=xfer,security_model=none" \
	"${RW[@]}" </dev/null
qrc=$?
set -e
if [ "$VERBOSE" = 1 ] || [ ! -s "$XFER/rc" ] || [ "$(cat "$XFER/rc")" = 125 ]; then
	log "---- guest setup log ----"; cat "$XFER/setup.log" >&2 2>/dev/null || true
fi
if [ "$qrc" = 124 ]; then log "TIMEOUT after ${TMO}s (RXE_VM_TIMEOUT)"; exit 124; fi
if [ ! -s "$XFER/rc" ]; then log "VM exited (qemu rc=$qrc) without a result"; exit 125; fi
exit "$(cat "$XFER/rc")"
