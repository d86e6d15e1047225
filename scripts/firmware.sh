#!/usr/bin/env bash
# Builds the firmware (board kernel + initramfs with busybox, the project's binaries and init) for
# each board named, into target/firmware/<board>/. Cross-builds the binaries for each board's CPU.
# The agent trusts the app signing key of $CPEVISOR_CACHE/keys/ (made on first use by
# scripts/sample-app.sh). When a board is aarch64, the sample app's packages signed with that key
# are built too (target/packages/, see scripts/sample-app.sh): the agent's e2e test and
# `make demo` install them. When a board runs apps in jails (armv7, mipsel), the jail packages of
# its arch are built too (`scripts/sample-app.sh jail ARCH`): the jail e2e test installs them.
# When a board's profile has a [network] section (a WAN and a LAN side), its firmware carries
# Debian's `nft` with its shared libraries for the apps' rules (scripts/debian-tree.sh), and the
# DNS filter's package for its arch is built (`scripts/sample-app.sh dns-filter ARCH`): the
# jail e2e test resolves through it from the LAN.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ $# -gt 0 ] || { echo "usage: firmware.sh BOARD..." >&2; exit 2; }
cargo build -q -p cpevisor-boards -p cpevisor-rootfs
# The host tools as cargo just built them (CARGO_TARGET_DIR when set, as scripts/sample-app.sh).
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
targets=()
jail_archs=()
filter_archs=()
for b in "$@"; do
  "$BIN/cpevisor-board" show "$b" >/dev/null  # fails with the reason for an unknown/bad board
  t=$("$BIN/cpevisor-board" get "$b" cpu.rust_target)
  [[ " ${targets[*]} " == *" $t "* ]] || targets+=("$t")
  if [ "$("$BIN/cpevisor-board" get "$b" isolation)" = jail ]; then
    a=$("$BIN/cpevisor-board" get "$b" cpu.arch)
    [[ " ${jail_archs[*]} " == *" $a "* ]] || jail_archs+=("$a")
  fi
  if "$BIN/cpevisor-board" get "$b" network.wan >/dev/null 2>&1; then
    a=$("$BIN/cpevisor-board" get "$b" cpu.arch)
    [[ " ${filter_archs[*]} " == *" $a "* ]] || filter_archs+=("$a")
  fi
done
bash scripts/cross.sh "${targets[@]}" >&2
key=$(bash scripts/sample-app.sh key)
for b in "$@"; do
  t=$("$BIN/cpevisor-board" get "$b" cpu.rust_target)
  tree=()
  if "$BIN/cpevisor-board" get "$b" network.wan >/dev/null 2>&1; then
    a=$("$BIN/cpevisor-board" get "$b" cpu.arch)
    tree=(--tree "$(bash scripts/debian-tree.sh nft nftables usr/sbin/nft "$a")/tree")
  fi
  "$BIN/cpevisor-rootfs" firmware --board "$b" --bins "target/cross/$t" --out "target/firmware/$b" \
    --trusted-key "$key" "${tree[@]}"
done
if [[ " ${targets[*]} " == *" aarch64-"* ]]; then
  bash scripts/sample-app.sh
fi
if [ ${#jail_archs[@]} -gt 0 ]; then
  bash scripts/sample-app.sh jail "${jail_archs[@]}"
fi
if [ ${#filter_archs[@]} -gt 0 ]; then
  bash scripts/sample-app.sh dns-filter "${filter_archs[@]}"
fi
