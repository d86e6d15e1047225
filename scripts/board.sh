#!/usr/bin/env bash
# Boots a board's firmware under QEMU with the serial console on this terminal.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
b=${1:?usage: board.sh BOARD}
fw=$ROOT/target/firmware/$b
# cpevisor-board prints the argv shell-quoted.
cmd=$("$ROOT/target/debug/cpevisor-board" qemu-cmd "$b" --kernel "$fw/kernel" --initrd "$fw/initramfs.cpio.gz")
echo "board: $cmd" >&2
echo "board: quit with Ctrl-A then X" >&2
eval "exec $cmd"
