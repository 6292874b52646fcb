#!/bin/bash
# run-rxe-pair.sh -- boot TWO throw-away qemu VMs (A and B) joined by a virtual
# Ethernet wire, each with its own Soft-RoCE device rxe0 on its virtio-net NIC,
# run one command in each, collect both exit codes/outputs, shut both down.
# RDMA traffic between A and B really crosses between two kernels.
#
# Usage:  run-rxe-pair.sh [--] 'CMD_FOR_A' 'CMD_FOR_B'
#         run-rxe-pair.sh --setup        # install packages + build kernel/initramfs
#         run-rxe-pair.sh --check        # 0 when both VMs can boot now, else 77
# RXE_VM_SETUP=0: never install/download; exit 77 (meson skip) when not set up.
# KVW_* variables of the caller are passed into both guests.
# Each CMD is a bash string, run as `bash -c CMD` in the guest, in the host's
# current directory (host / is shared read-only with a tmpfs overlay on top).
#
# In the guests (env): RXE_ROLE=A|B  RXE_SELF_IP  RXE_PEER_IP  RXE_DEV=rxe0
#   RXE_GID=1 (IPv4-mapped RoCEv2 GID index)  RXE_NETDEV (virtio NIC, eth0)
#   RXE_PAIR_SHARED (a host dir mounted read-write in both VMs, cache=none)
#   A = 10.79.0.1, B = 10.79.0.2 (/24), MTU 9000 -> RoCE active_mtu 4096.
# Helpers on PATH in both guests (they use the shared dir):
#   rxe-signal NAME          create flag NAME (visible to the other VM)
#   rxe-wait NAME [SECS]     wait until flag NAME exists (default 120 s), rc 1 on timeout
#   rxe-wait-listen PORT [SECS]  wait until a local TCP socket listens on PORT
#   rxe-kill-peer [VM]       ask the host to SIGKILL the other VM's qemu (or VM=A|B)
#                            now; the host polls every 0.1 s (peer-death tests); once
#                            done, flag killed.B (or killed.A) exists: `rxe-wait killed.B`
# Both VMs wait for each other after setup (boot barrier), so the commands
# start together.  A typical perftest pair:
#   run-rxe-pair.sh \
#     'ib_write_bw -d rxe0 -x 1 -n 2000 & rxe-wait-listen 18515 && rxe-signal srv; wait $!' \
#     'rxe-wait srv && ib_write_bw -d rxe0 -x 1 -n 2000 $RXE_PEER_IP'
#
# Results: directory $RXE_PAIR_OUT (default: a new $CACHE/runs/pair.XXXXXX,
# kept, printed at the end) holds per VM X in {A,B}:
#   X.rc       the command's exit code (absent if the VM died / was killed)
#   X.out      the command's stdout+stderr only
#   X.console  the whole serial console (kernel msgs, "ready" line, command output)
#   X.setup.log guest setup log;  X.pid  qemu PID (host);  X.ready  ready time
#   X.killed   host epoch time when X was killed on request (rxe-kill-peer)
#   summary    one line per VM
# Both consoles are also printed to stdout at the end, prefixed with [A] / [B].
# Exit code: A's rc if non-zero, else B's rc; a VM killed on request via
#   rxe-kill-peer counts as 0 (its X.rc says "killed"); 124 if a VM hit the
#   timeout; 125 if a VM died without a result.
#
# Env knobs: RXE_VM_CACHE (default $HOME/.cache/rxe-vm)  RXE_VM_MEM (default 256M per VM)
#   RXE_VM_SMP (default 1 per VM)  RXE_VM_TIMEOUT (s, per VM, default 1800)
#   RXE_VM_MTU (default 9000)  RXE_PAIR_NET=stream|socket|dgram (qemu netdev; default
#   stream = -netdev stream over a unix socket (no Nagle, no loss: best); socket = legacy
#   -netdev socket listen/connect=127.0.0.1:PORT (TCP: Nagle/delayed-ACK makes RDMA
#   round trips ~22 ms); dgram = two UDP sockets on 127.0.0.1 (fast RTT, but drops
#   bursts -> RC retransmits, half the bandwidth))  RXE_PAIR_GRACE (s a VM may run on
#   after the other ended, default 60)  RXE_PAIR_OUT  RXE_VM_RW_DIRS ("dir ..." shared
#   read-write with both VMs)  RXE_VM_VERBOSE=1  RXE_PAIR_NETEM="loss 2% delay 1ms"
#   (tc netem qdisc on both NICs)
set -euo pipefail

CACHE=${RXE_VM_CACHE:-${HOME:-/root}/.cache/kvwire-rxe}
MEM=${RXE_VM_MEM:-256M}
SMP=${RXE_VM_SMP:-1}
TMO=${RXE_VM_TIMEOUT:-1800}
MTU=${RXE_VM_MTU:-9000}
PNET=${RXE_PAIR_NET:-stream}
GRACE=${RXE_PAIR_GRACE:-60}
VERBOSE=${RXE_VM_VERBOSE:-0}
log() { echo "[rxe-pair] $*" >&2; }

PKGS="qemu-system-x86 busybox-static kmod cpio xz-utils rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest libibverbs-dev librdmacm-dev iproute2"

setup() {
    local missing=()
    for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    mkdir -p "$CACHE"
    if [ ! -e "$CACHE/kernel/.done" ]; then
        log "fetching + extracting Debian kernel package"
        local kpkg
        kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
        rm -rf "$CACHE/kernel" "$CACHE"/linux-image-*.deb
        (cd "$CACHE" && apt-get download "$kpkg" 2>/dev/null)
        dpkg -x "$CACHE"/linux-image-*.deb "$CACHE/kernel"
        rm -f "$CACHE"/linux-image-*.deb
        local kver; kver=$(ls "$CACHE/kernel/lib/modules")
        depmod -b "$CACHE/kernel" "$kver"
        local vz="$CACHE/kernel/boot/vmlinuz-$kver" off
        off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$vz" | head -1 | cut -d: -f1)
        tail -c +$((off+1)) "$vz" | xz -dc 2>/dev/null > "$CACHE/kernel/boot/vmlinux-$kver" || true
        touch "$CACHE/kernel/.done"
    fi
    local kver; kver=$(ls "$CACHE/kernel/lib/modules")
    # separate initramfs name: the single-VM script rebuilds its own initrd.img
    if [ ! -e "$CACHE/initrd-pair.img" ] || [ "$0" -nt "$CACHE/initrd-pair.img" ]; then
        log "building initramfs"
        local d="$CACHE/initrd-pair.d"; rm -rf "$d"
        mkdir -p "$d"/{bin,dev,proc,sys,mnt/lower,mnt/upper,newroot,xfer,mods}
        cp /bin/busybox "$d/bin/busybox"
        local m f
        # virtio_net (+ net_failover, failover) early, so the NIC exists at setup
        for m in virtio_pci 9pnet_virtio 9p overlay virtio_net; do
            modprobe -d "$CACHE/kernel" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}'
        done | awk '!seen[$0]++' | while read -r f; do
            cp "$f" "$d/mods/"; echo "$(basename "$f")" >> "$d/mods/order"
        done
        write_init > "$d/init"; chmod +x "$d/init"
        (cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initrd-pair.img"
    fi
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
KDIR=$(arg rxevm.kdir); ROLE=$(arg rxevm.role)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /mnt/lower || { echo "9p mount failed"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer /xfer || { echo "xfer mount failed"; poweroff -f; }
mount -t tmpfs -o mode=755 tmp /mnt/upper; mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w ovl /newroot || { echo "overlay failed"; poweroff -f; }
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t tmpfs run $R/run
mkdir -p $R/run/netns $R/run/rxe-xfer; mount --bind /xfer $R/run/rxe-xfer
KVER=$(uname -r); mkdir -p $R/lib/modules/$KVER
mount --bind $R$KDIR/lib/modules/$KVER $R/lib/modules/$KVER
i=0; for t in $(cat /xfer/rwdirs 2>/dev/null); do
  mkdir -p "$R$t"; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rw$i "$R$t" || echo "rw mount $t failed"; i=$((i+1)); done
printf '#!/bin/busybox sh\nexec /bin/chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-chroot; chmod +x /bin/modprobe-chroot
echo /bin/modprobe-chroot > /proc/sys/kernel/modprobe
hostname rxevm-$ROLE; echo rxevm-$ROLE > $R/etc/hostname 2>/dev/null
printf '127.0.0.1 localhost rxevm-%s\n10.79.0.1 rxevm-A\n10.79.0.2 rxevm-B\n' $ROLE > $R/etc/hosts
chroot $R /bin/sh /run/rxe-xfer/guest-setup.sh > /xfer/setup.log 2>&1
src=$?; echo "setup rc=$src" >> /xfer/setup.log
[ $src = 0 ] || { echo "RXE-VM: guest setup FAILED:"; cat /xfer/setup.log; }
stty -onlcr 2>/dev/null
T=$(cut -d' ' -f1 /proc/uptime); echo "$T" > /xfer/ready
echo "RXE-VM[$ROLE]: ready ${T}s after kernel start"
chroot $R /bin/bash /run/rxe-xfer/cmd.sh
echo $? > /xfer/rc
sync
poweroff -f
EOF
}

# $1 role  $2 self ip  $3 peer ip  $4 peer mac
write_guest_setup() {
cat <<EOF
set -x
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up
modprobe -a crc32_generic rdma_rxe ib_uverbs rdma_ucm virtio_net sch_netem
ulimit -l unlimited
NIC=\$(for n in /sys/class/net/*; do [ -e \$n/device ] && basename \$n; done | head -1)
[ -n "\$NIC" ] || { echo "no virtio NIC"; ip link; exit 1; }
ip link set \$NIC mtu $MTU || exit 1
ip addr add $2/24 dev \$NIC
ip link set \$NIC up
# static neighbour: no ARP round trip before the first RoCE/TCP packet
ip neigh replace $3 lladdr $4 dev \$NIC nud permanent
${RXE_PAIR_NETEM:+tc qdisc add dev \$NIC root netem $RXE_PAIR_NETEM || exit 1}
rdma link add rxe0 type rxe netdev \$NIC || exit 1
echo \$NIC > /run/rxe-xfer/netdev
ip -d link show \$NIC; ip addr show \$NIC
rdma link show
ibv_devinfo -d rxe0 | grep -E 'state|mtu'
EOF
}

write_helpers() {  # $1 = bin dir, $2 = shared dir
    local b=$1 s=$2
    printf '#!/bin/sh\n: > %q/flag.$1\n' "$s" > "$b/rxe-signal"
    cat > "$b/rxe-wait" <<EOF
#!/bin/sh
n=\$(( \${2:-120} * 10 ))
while [ ! -e $s/flag.\$1 ]; do n=\$((n-1)); [ \$n -gt 0 ] || { echo "rxe-wait \$1: timeout" >&2; exit 1; }; sleep 0.1; done
EOF
    cat > "$b/rxe-wait-listen" <<EOF
#!/bin/sh
n=\$(( \${2:-120} * 10 ))
until ss -Hltn "sport = :\$1" | grep -q .; do n=\$((n-1)); [ \$n -gt 0 ] || { echo "rxe-wait-listen \$1: timeout" >&2; exit 1; }; sleep 0.1; done
EOF
    cat > "$b/rxe-kill-peer" <<EOF
#!/bin/sh
v=\${1:-}; [ -n "\$v" ] || { [ "\$RXE_ROLE" = A ] && v=B || v=A; }
: > $s/kill.\$v
EOF
    chmod +x "$b"/*
}

# is everything there to boot now? (no installs, no downloads)
ready() {
    command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: run $0 --setup"; return 1; }
    [ -e "$CACHE/kernel/.done" ] || { echo "no guest kernel in $CACHE: run $0 --setup"; return 1; }
    [ -e "$CACHE/initrd-pair.img" ] || { echo "no initramfs in $CACHE: run $0 --setup"; return 1; }
    [ "$0" -nt "$CACHE/initrd-pair.img" ] && { echo "initramfs older than $0: run $0 --setup"; return 1; }
    return 0
}
if [ "${1:-}" = "--setup" ]; then setup; exit 0; fi
if [ "${1:-}" = "--check" ]; then why=$(ready) || { echo "[rxe-pair] skip: $why" >&2; exit 77; }; exit 0; fi
[ "${1:-}" = "--" ] && shift
[ $# -eq 2 ] || { echo "usage: $0 [--] 'CMD_FOR_A' 'CMD_FOR_B' | --setup" >&2; exit 2; }
CMD_A=$1; CMD_B=$2
if [ "${RXE_VM_SETUP:-1}" = 0 ]; then
    why=$(ready) || { log "skip: $why"; exit 77; }
else
    setup || { log "setup failed: the VMs cannot run here"; exit 77; }
fi

KVER=$(ls "$CACHE/kernel/lib/modules")
mkdir -p "$CACHE/runs"
OUT=${RXE_PAIR_OUT:-$(mktemp -d "$CACHE/runs/pair.XXXXXX")}
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
RUN=$(mktemp -d "$CACHE/runs/pairtmp.XXXXXX")
SHARED=$RUN/shared; mkdir -p "$SHARED/bin"
write_helpers "$SHARED/bin" "$SHARED"

declare -A IP=([A]=10.79.0.1 [B]=10.79.0.2) MAC=([A]=52:54:00:79:00:01 [B]=52:54:00:79:00:02)
declare -A PEER=([A]=B [B]=A) QPID=() CMD=([A]="$CMD_A" [B]="$CMD_B")

free_port() { local p; while :; do p=$((20000 + RANDOM % 40000)); ss -Hltun "sport = :$p" | grep -q . || { echo $p; return; }; done; }
P1=$(free_port); P2=$(free_port)
case "$PNET" in
socket) NETDEV_A="socket,id=n0,listen=127.0.0.1:$P1"; NETDEV_B="socket,id=n0,connect=127.0.0.1:$P1" ;;
dgram)  NETDEV_A="dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$P1,remote.type=inet,remote.host=127.0.0.1,remote.port=$P2"
        NETDEV_B="dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$P2,remote.type=inet,remote.host=127.0.0.1,remote.port=$P1" ;;
stream) SOCK=$RUN/wire.sock; [ ${#SOCK} -lt 100 ] || SOCK=$(mktemp -u /tmp/rxe-pair-XXXXXX.sock)
        NETDEV_A="stream,id=n0,server=on,addr.type=unix,addr.path=$SOCK"
        NETDEV_B="stream,id=n0,server=off,addr.type=unix,addr.path=$SOCK" ;;
*) echo "RXE_PAIR_NET must be stream, socket or dgram" >&2; exit 2 ;;
esac
declare -A NETDEV=([A]="$NETDEV_A" [B]="$NETDEV_B")

for v in A B; do
    X=$RUN/xfer.$v; mkdir -p "$X"
    write_guest_setup "$v" "${IP[$v]}" "${IP[${PEER[$v]}]}" "${MAC[${PEER[$v]}]}" > "$X/guest-setup.sh"
    {
        echo "export PATH=$SHARED/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        echo "export HOME=${HOME:-/root} TERM=dumb LANG=C.UTF-8"
        echo "export RXE_ROLE=$v RXE_SELF_IP=${IP[$v]} RXE_PEER_IP=${IP[${PEER[$v]}]} RXE_DEV=rxe0 RXE_GID=1"
        echo "export RXE_NETDEV=\$(cat /run/rxe-xfer/netdev 2>/dev/null) RXE_PAIR_SHARED=$SHARED"
        echo "ulimit -l unlimited"
        # boot barrier: both VMs start their commands together
        echo ": > $SHARED/up.$v"
        echo "n=1200; while [ ! -e $SHARED/up.${PEER[$v]} ]; do n=\$((n-1)); [ \$n -gt 0 ] || { echo 'RXE-PAIR: peer VM never came up' >&2; exit 125; }; sleep 0.1; done"
        for e in $(compgen -e | grep -E '^(KVW_|CRITERION_)' || true); do printf 'export %s=%q\n' "$e" "${!e}"; done
        printf 'cd %q || exit 126\n' "$PWD"
        echo "set -o pipefail"
        printf 'bash -c %q 2>&1 | tee /run/rxe-xfer/out\n' "${CMD[$v]}"
    } > "$X/cmd.sh"
    : > "$X/rwdirs"
    echo "$SHARED" >> "$X/rwdirs"
done
RW=(-virtfs "local,path=$SHARED,mount_tag=rw0,security_model=none,multidevs=remap")
i=1
for d in ${RXE_VM_RW_DIRS:-}; do
    d=$(realpath "$d")
    RW+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
    for v in A B; do echo "$d" >> "$RUN/xfer.$v/rwdirs"; done; i=$((i+1))
done

KIMG=$CACHE/kernel/boot/vmlinux-$KVER
if [ "${RXE_VM_PVH:-1}" = 0 ] || [ ! -s "$KIMG" ]; then KIMG=$CACHE/kernel/boot/vmlinuz-$KVER; fi
QUIET=quiet; [ "$VERBOSE" = 1 ] && QUIET=""

cleanup() {
    for v in A B; do [ -n "${QPID[$v]:-}" ] && kill -9 "${QPID[$v]}" 2>/dev/null; done
    rm -rf "$RUN"; [ -n "${SOCK:-}" ] && rm -f "$SOCK"; :
}
trap cleanup EXIT

start_vm() {  # $1 = A|B
    local v=$1
    timeout -k 5 "$TMO" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$MEM" -smp "$SMP" \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$OUT/$v.console" -monitor none \
        -kernel "$KIMG" -initrd "$CACHE/initrd-pair.img" \
        -append "console=ttyS0 $QUIET panic=-1 tsc=reliable clocksource=tsc rdinit=/init rxevm.kdir=$CACHE/kernel rxevm.role=$v" \
        -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$RUN/xfer.$v,mount_tag=xfer,security_model=none" \
        "${RW[@]}" \
        -netdev "${NETDEV[$v]}" -device "virtio-net-pci,netdev=n0,mac=${MAC[$v]}" \
        </dev/null >"$OUT/$v.qemu.log" 2>&1 &
    QPID[$v]=$!
    date +%s.%N > "$OUT/$v.started"
}

log "booting A and B (TCG, mem=$MEM, smp=$SMP each, net=$PNET ports $P1/$P2, kernel=$KVER), results in $OUT"
T0=$(date +%s.%N)
start_vm A
# timeout(1) forks qemu: record qemu's own PID for the user
if [ "$PNET" = socket ]; then
    # B's connect= fails if A is not listening yet
    for _ in $(seq 100); do ss -Hltn "sport = :$P1" | grep -q . && break; sleep 0.05; done
elif [ "$PNET" = stream ]; then
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
fi
start_vm B
for v in A B; do
    for _ in $(seq 40); do q=$(pgrep -P "${QPID[$v]}" qemu-system-x86 || true); [ -n "$q" ] && break; sleep 0.05; done
    echo "${q:-${QPID[$v]}}" > "$OUT/$v.pid"
done

declare -A DONE=() KILLED=()
first_end=""
while :; do
    for v in A B; do
        [ -n "${DONE[$v]:-}" ] && continue
        if [ -e "$SHARED/kill.$v" ]; then
            rm -f "$SHARED/kill.$v"
            kill -9 "$(cat "$OUT/$v.pid")" 2>/dev/null || true
            date +%s.%N > "$OUT/$v.killed"; KILLED[$v]=1; : > "$SHARED/flag.killed.$v"
            log "VM $v killed on request"
        fi
        if ! kill -0 "${QPID[$v]}" 2>/dev/null; then
            wait "${QPID[$v]}" 2>/dev/null && qrc=0 || qrc=$?; echo $qrc > "$OUT/$v.qemu_rc"; DONE[$v]=1
            date +%s.%N > "$OUT/$v.ended"
            [ -n "$first_end" ] || first_end=$(date +%s)
        fi
    done
    [ -n "${DONE[A]:-}" ] && [ -n "${DONE[B]:-}" ] && break
    if [ -n "$first_end" ] && [ $(( $(date +%s) - first_end )) -ge "$GRACE" ]; then
        for v in A B; do
            [ -n "${DONE[$v]:-}" ] && continue
            log "VM $v still running ${GRACE}s after its peer ended: killing it"
            kill -9 "$(cat "$OUT/$v.pid")" 2>/dev/null || true; echo grace > "$OUT/$v.grace_killed"
        done
        first_end=$(( $(date +%s) + 100000 ))   # only once
    fi
    sleep 0.1
done
QPID=()

rc_all=0
for v in A B; do
    X=$RUN/xfer.$v
    cp "$X/setup.log" "$OUT/$v.setup.log" 2>/dev/null || true
    cp "$X/out" "$OUT/$v.out" 2>/dev/null || : > "$OUT/$v.out"
    [ -s "$X/ready" ] && echo "$(cat "$X/ready")" > "$OUT/$v.ready"
    if [ -s "$X/rc" ]; then r=$(cat "$X/rc"); echo "$r" > "$OUT/$v.rc"
    elif [ -n "${KILLED[$v]:-}" ]; then r=killed; echo killed > "$OUT/$v.rc"
    elif [ "$(cat "$OUT/$v.qemu_rc")" = 124 ]; then r=124
    else r=125; fi
    echo "$v rc=$r ready_after_kernel_start=$(cat "$OUT/$v.ready" 2>/dev/null || echo -)s qemu_rc=$(cat "$OUT/$v.qemu_rc") wall=$(awk -v a="$(cat "$OUT/$v.ended")" -v b="$T0" 'BEGIN{printf "%.1f", a-b}')s" >> "$OUT/summary"
    if [ "$VERBOSE" = 1 ] || [ ! -s "$X/rc" ]; then
        [ -n "${KILLED[$v]:-}" ] || { log "---- $v guest setup log ----"; sed "s/^/[$v setup] /" "$OUT/$v.setup.log" >&2 2>/dev/null || true; }
    fi
    sed "s/^/[$v] /" "$OUT/$v.console"
    case $r in killed) ;; *) [ "$rc_all" = 0 ] && rc_all=$r ;; esac
done
sed 's/^/RXE-PAIR: /' "$OUT/summary"
log "results in $OUT"
exit "$rc_all"
