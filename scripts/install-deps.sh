#!/bin/bash
# Installs everything kvwire builds and tests with, from Debian 12 packages.
# Idempotent: packages already present are skipped. Needs root (or sudo).
set -euo pipefail
PKGS=(
  build-essential meson ninja-build pkg-config python3   # build
  libsodium-dev      # shared-secret authentication of peers (CPace, HMAC)
  libjansson-dev     # JSON output of kvwire-bench and the kvwire CLI
  libxxhash-dev      # checksums that verify every landed byte in the bench
  libpcap-dev        # `kvwire decode` reads pcap captures
  scdoc              # man pages
  libcriterion-dev   # test suite
  libcurl4-openssl-dev  # libkvwire-dir: the optional fleet directory on etcd (JSON gateway)
  etcd-server etcd-client  # the 'dir' suite and tools-pools run a real etcd
  clang libclang-rt-14-dev  # libFuzzer target of the wire parser
  libibverbs-dev librdmacm-dev rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest  # rdma driver + peers
  libdpdk-dev dpdk   # dpdk driver; dpdk-testpmd is its bench peer
  libfabric-dev libfabric-bin  # ofi driver (libfabric: tcp;ofi_rxm, shm here, efa on AWS); fi_info, fi_pingpong
  iperf3 ucx-utils   # bench peers for tcp and shm
  qemu-system-x86 busybox-static kmod cpio xz-utils iproute2 nftables procps  # Soft-RoCE VM, netns fault tests
  python3-numpy python3-torch python3-pytest python3-setuptools python3-pip python3-venv libopenblas0-pthread  # Python binding, examples/disagg, tests/python (OpenBLAS: torch's BLAS, ~5x the reference one)
)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "kvwire: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi
