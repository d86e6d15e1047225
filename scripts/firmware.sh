#!/usr/bin/env bash
# Builds the firmware (board kernel + initramfs with busybox, the project's binaries and init) for
# each board named, into target/firmware/<board>/. Cross-builds the binaries for each board's CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ $# -gt 0 ] || { echo "usage: firmware.sh BOARD..." >&2; exit 2; }
cargo build -q -p cpevisor-boards -p cpevisor-rootfs
BIN=$ROOT/target/debug
targets=()
for b in "$@"; do
  "$BIN/cpevisor-board" show "$b" >/dev/null  # fails with the reason for an unknown/bad board
  t=$("$BIN/cpevisor-board" get "$b" cpu.rust_target)
  [[ " ${targets[*]} " == *" $t "* ]] || targets+=("$t")
done
bash scripts/cross.sh "${targets[@]}" >&2
for b in "$@"; do
  t=$("$BIN/cpevisor-board" get "$b" cpu.rust_target)
  "$BIN/cpevisor-rootfs" firmware --board "$b" --bins "target/cross/$t" --out "target/firmware/$b"
done
