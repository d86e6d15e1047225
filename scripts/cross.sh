#!/usr/bin/env bash
# make cross: static, size-optimized release binaries for router CPUs (shared/PLATFORM.md):
# Debian's rustc-web (1.96) builds std from rust-web-src for every target (rustup here has only
# the x86_64 std), linked statically against glibc.
#
# Why build-std even where Debian ships a prebuilt std (aarch64, x86_64): std is then built
# without its `backtrace` feature (`-Z build-std-features=` drops the default set), which removes
# the DWARF symbolizer (addr2line, gimli, miniz_oxide) from every binary: -195 KiB each, measured
# on a static aarch64 hello world (845 -> 650 KiB). Panics still print their message and location.
#
# Usage: scripts/cross.sh [RUST_TARGET...]   (default: all five)
# Output: target/cross/<rust target>/: cpevisor, with cpevisord, cpevisorctl (and cpevisor-vmm on
# the KVM targets) as symlinks to it; build products live in $CPEVISOR_CACHE/target-cross.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
OUT=$ROOT/target/cross
ALL=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf mipsel-unknown-linux-gnu
  mips64el-unknown-linux-gnuabi64 x86_64-unknown-linux-gnu)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=$CACHE/target-cross
CARGO=/usr/bin/cargo

# The agent runs on every board. The VMM needs KVM, which Linux offers only on aarch64 and x86_64
# among these (32-bit ARM KVM was removed in 5.7; MIPS routers have no virtualization): the other
# targets run apps in the jail backend and get no VMM.
# Device binaries only: the operator's controller (cpevisor-controller) never goes on a router,
# and everything of ours goes as the one multi-call binary `cpevisor`: cpevisord, cpevisorctl,
# the jail runner and, on the KVM targets, cpevisor-vmm share most of their code, on flash once
# (docs/flash.md has the numbers). Not the thin host binaries, and without default features:
# `operator-tools` (cpevisorctl pack, keygen) is the operator's.
# The multi-call binary's applet names per target: symlinks to it beside it, so the host can
# run target/cross/<target>/cpevisord as the device does; the firmware builder installs them.
applets_for() {
  case $1 in
    aarch64-* | x86_64-*) echo "cpevisord cpevisorctl cpevisor-vmm" ;;
    *) echo "cpevisord cpevisorctl" ;;
  esac
}

gcc_for() {
  case $1 in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
    mipsel-unknown-linux-gnu) echo mipsel-linux-gnu-gcc ;;
    mips64el-unknown-linux-gnuabi64) echo mips64el-linux-gnuabi64-gcc ;;
    x86_64-unknown-linux-gnu) echo gcc ;;
    *) echo "cross: unknown target $1" >&2; exit 2 ;;
  esac
}

for t in "${targets[@]}"; do
  gcc=$(gcc_for "$t")
  T=$(echo "$t" | tr 'a-z-' 'A-Z_')
  t_=${t//-/_}
  # No unwind tables: panics abort (the release profile) and std is built without backtraces,
  # so nothing reads .eh_frame; it was 14% of the agent binary (aarch64 cpevisord: 435 of 3,019
  # KiB); without: -384 KiB on aarch64, -192 on mipsel.
  # Panics still print their message and location. (docs/flash.md)
  flags="-C target-feature=+crt-static -C force-unwind-tables=no"
  echo "cross: building $t" >&2
  # build-std is unstable: RUSTC_BOOTSTRAP lets Debian's stable rustc use it.
  env RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${T}_LINKER=$gcc" "CARGO_TARGET_${T}_RUSTFLAGS=$flags" \
    "CC_${t_}=$gcc" "AR_${t_}=${gcc%gcc}ar" \
    $CARGO build --manifest-path "$ROOT/Cargo.toml" --locked --release --target "$t" \
    -p cpevisor-agent --bin cpevisor --no-default-features -Z build-std=std,panic_abort -Z build-std-features=
  # A fresh directory: binaries of an older layout (separate cpevisord/cpevisorctl) must not
  # linger and go into a firmware beside the multi-call binary.
  rm -rf "${OUT:?}/$t"
  mkdir -p "$OUT/$t"
  cp "$CARGO_TARGET_DIR/$t/release/cpevisor" "$OUT/$t/cpevisor"
  for applet in $(applets_for "$t"); do
    ln -s cpevisor "$OUT/$t/$applet"
  done
done

# Size table; fail if any binary is not statically linked.
printf '%-34s %-14s %10s  %s\n' target binary KiB linkage
status=0
for t in "${targets[@]}"; do
  for f in "$OUT/$t"/*; do
    if [ -L "$f" ]; then
      printf '%-34s %-14s %10s  %s\n' "$t" "$(basename "$f")" - "-> $(readlink "$f")"
      continue
    fi
    kib=$(( ($(stat -c %s "$f") + 1023) / 1024 ))
    info=$(file -b "$f")
    case $info in
      *"statically linked"* | *"static-pie linked"*) link=static ;;
      *) link="NOT STATIC: $info"; status=1 ;;
    esac
    printf '%-34s %-14s %10s  %s\n' "$t" "$(basename "$f")" "$kib" "$link"
  done
done
exit $status
