#!/usr/bin/env bash
# Builds microVM guest images (kernel Image, initramfs with the sample app, ext2 app disk) with
# `cpevisor-rootfs guest`, one directory per ARCH:KERNEL into target/guest/<arch>-<app>-<kernel>/.
#
#   scripts/guest-images.sh [ARCH:KERNEL ...]     (default: aarch64:stock)
#   ARCH: aarch64 | x86_64    KERNEL: stock (Debian's package) | minimal (make guest-kernels)
#   GUEST_APP=status (the only app so far)
#
# The e2e tests build their own copies (each run puts a fresh token on the disk); these are for
# trying a guest by hand: copy a directory into a board and run cpevisor-vmm on it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
APP=${GUEST_APP:-status}
[ $# -gt 0 ] || set -- aarch64:stock
cargo build -q -p cpevisor-rootfs
for spec in "$@"; do
  case "$spec" in
    *:*) arch=${spec%%:*} kernel=${spec#*:} ;;
    *) echo "guest-images.sh: $spec: expected ARCH:KERNEL, e.g. aarch64:stock" >&2; exit 2 ;;
  esac
  target/debug/cpevisor-rootfs guest --arch "$arch" --app "$APP" --kernel "$kernel" \
    --out "target/guest/$arch-$APP-$kernel"
done
