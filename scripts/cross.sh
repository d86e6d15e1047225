#!/usr/bin/env bash
# make cross: static, size-optimized release binaries for router CPUs (shared/PLATFORM.md):
# Debian's rustc-web (1.96) builds std from rust-web-src for every target (rustup here has only
# the x86_64 std), linked statically against musl, the C library of OpenWrt, where these boards'
# firmware comes from (docs/flash.md has what it saves against static glibc).
#
# musl comes from Debian too: `musl-dev:<arch>` unpacked by `make setup` into
# $CPEVISOR_CACHE/musl/<debian arch>/root, linked by the same cross gcc as glibc was, through a
# gcc specs file (written here, next to it) that swaps glibc's headers, start files and library
# path for musl's, as Debian's own musl-gcc does. Rust links it with `-C link-self-contained=no`
# (its bundled musl start files are not in Debian's Rust). Rust's musl std links `-lunwind`
# (LLVM's libunwind in rustup's builds); here that name is gcc's libgcc_eh.a, which the glibc
# builds linked as well: panics abort, only backtrace capture calls into it.
#
# Why build-std even where Debian ships a prebuilt std (aarch64, x86_64): std is then built
# without its `backtrace` feature (`-Z build-std-features=` drops the default set), which removes
# the DWARF symbolizer (addr2line, gimli, miniz_oxide) from every binary: -195 KiB each, measured
# on a static aarch64 hello world (845 -> 650 KiB). Panics still print their message.
#
# Usage: scripts/cross.sh [RUST_TARGET...]   (default: the five musl targets; the *-linux-gnu
# ones still build, against static glibc, for comparisons)
# Output: target/cross/<rust target>/: cpevisor, with cpevisord, cpevisorctl (and cpevisor-vmm on
# the KVM targets) as symlinks to it; build products live in $CPEVISOR_CROSS_TARGET_DIR, by default
# $CPEVISOR_CACHE/target-cross (a second checkout building at the same time names its own).
# CPEVISOR_CROSS_RUSTFLAGS: more rustc flags for every target, for measuring builds only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
OUT=$ROOT/target/cross
ALL=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl
  mips64el-unknown-linux-muslabi64 x86_64-unknown-linux-musl)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=${CPEVISOR_CROSS_TARGET_DIR:-$CACHE/target-cross}
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

# The cross gcc (Debian's gcc-<triplet>, for glibc and musl alike) and Debian's name of the arch.
gcc_for() {
  case $1 in
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) echo aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf | armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf-gcc ;;
    mipsel-unknown-linux-gnu | mipsel-unknown-linux-musl) echo mipsel-linux-gnu-gcc ;;
    mips64el-unknown-linux-gnuabi64 | mips64el-unknown-linux-muslabi64) echo mips64el-linux-gnuabi64-gcc ;;
    x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) echo gcc ;;
    *) echo "cross: unknown target $1" >&2; exit 2 ;;
  esac
}
debian_arch_for() {
  case $1 in
    aarch64-*) echo arm64 ;;
    armv7-*) echo armhf ;;
    mipsel-*) echo mipsel ;;
    mips64el-*) echo mips64el ;;
    x86_64-*) echo amd64 ;;
  esac
}

# musl_specs GCC DEBIAN_ARCH: writes the gcc specs file that compiles and links against Debian's
# musl-dev unpacked in $CACHE/musl/<arch>/root and prints its path. As musl-dev's own
# musl-gcc.specs, but keeping the cross gcc's link spec (emulation, errata fixes) and with
# -static-pie's start file (rcrt1.o: x86_64's musl target is static-pie, as the glibc one was).
# The `-nostdlib` added to the link spec is ld's: search only the directories named here, never
# glibc's.
musl_specs() {
  local gcc=$1 arch=$2 dir=$CACHE/musl/$2 lib inc
  lib=$(echo "$dir"/root/usr/lib/*-linux-musl*)
  inc=$(echo "$dir"/root/usr/include/*-linux-musl*)
  if [ ! -f "$lib/libc.a" ] || [ ! -d "$inc" ]; then
    echo "cross: musl-dev:$arch is not unpacked in $dir/root (run make setup)" >&2
    exit 1
  fi
  # libunwind.a: gcc's libgcc_eh.a plus `_dl_find_object`, which Debian's gcc (built against
  # glibc 2.36) calls to find a PC's unwind tables and musl does not have. This one finds none:
  # panics abort, so only backtrace capture asks, and gets an empty backtrace.
  mkdir -p "$dir/unwind"
  cp "$("$gcc" -print-file-name=libgcc_eh.a)" "$dir/unwind/libunwind.a.tmp"
  echo 'int _dl_find_object(void *pc, void *result) { (void)pc; (void)result; return -1; }' |
    "$gcc" -Os -c -x c -o "$dir/unwind/dl_find_object.o" -
  "${gcc%gcc}ar" rs "$dir/unwind/libunwind.a.tmp" "$dir/unwind/dl_find_object.o"
  mv "$dir/unwind/libunwind.a.tmp" "$dir/unwind/libunwind.a"
  cat > "$dir/musl.specs.tmp" <<EOF
%rename cpp_options old_cpp_options
%rename cc1 old_cc1
%rename link old_link

*cpp_options:
-nostdinc -isystem $inc -isystem include%s %(old_cpp_options)

*cc1:
%(old_cc1) -nostdinc -isystem $inc -isystem include%s

*link_libgcc:
-L$lib -L$dir/unwind -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
%{static-pie:$lib/rcrt1.o;!shared:$lib/crt1.o} $lib/crti.o crtbeginS.o%s

*endfile:
crtendS.o%s $lib/crtn.o

*link:
%(old_link) -nostdlib
EOF
  mv "$dir/musl.specs.tmp" "$dir/musl.specs"
  echo "$dir/musl.specs"
}

for t in "${targets[@]}"; do
  gcc=$(gcc_for "$t")
  T=$(echo "$t" | tr 'a-z-' 'A-Z_')
  t_=${t//-/_}
  # No unwind tables: panics abort (the release profile) and std is built without backtraces,
  # so nothing reads .eh_frame; it was 14% of the agent binary (aarch64 cpevisord: 435 of 3,019
  # KiB); without: -384 KiB on aarch64, -192 on mipsel.
  # Panics still print their message, not their source location: -Z location-detail=none
  # drops the file:line strings and arguments of every panic site (-64 KiB on aarch64).
  # -z max-page-size=4096: segments aligned to 4 KiB pages, not the linker's 64 KiB default for
  # aarch64, arm and mips, which padded the file by up to that (-12 KiB on aarch64); every
  # board's kernel has 4 KiB pages (OpenWrt's and Debian's for these arches), a kernel with 16
  # or 64 KiB pages cannot run the binary. (docs/flash.md)
  flags="-C target-feature=+crt-static -C force-unwind-tables=no -Z location-detail=none"
  flags="$flags -C link-arg=-Wl,-z,max-page-size=4096"
  cflags=
  case $t in
    *-musl*)
      specs=$(musl_specs "$gcc" "$(debian_arch_for "$t")")
      flags="$flags -C link-self-contained=no -C link-arg=-specs=$specs"
      cflags="-specs=$specs"
      ;;
  esac
  # Rust's mipsel musl target is soft-float (OpenWrt's ABI), Debian's musl-dev:mipsel is
  # hard-float FPXX, as the mipsel glibc target was: Rust code calling into libc's math (f64::min
  # is a call to fmin there) would pass its doubles in the wrong registers. So the Rust side
  # uses the glibc target's float ABI; rustc warns that these features are unstable.
  case $t in
    mipsel-unknown-linux-musl) flags="$flags -C target-feature=-soft-float,+fpxx,+nooddspreg" ;;
  esac
  # armv7: Thumb-2, ARMv7's mixed 16/32-bit encoding of the same instruction set, for all Rust
  # code (std too, through build-std): -604 KiB of 2,041 (-30%). Debian's arm gcc already
  # compiles C (ring, musl) as Thumb-2; every ARMv7-A core runs both. (docs/flash.md, section 8)
  case $t in
    armv7-*) flags="$flags -C target-feature=+thumb-mode" ;;
  esac
  # mipsel and armv7: code for a non-PIE executable. The binaries are static and not
  # position-independent (`ELF executable`) already, but Rust compiled their code as PIC, which on
  # MIPS loads every call and address through the GOT and sets up $gp in each function. With
  # `-C relocation-model=static`: mipsel -397 KiB (-13%), armv7 -25 KiB; gcc's `-fno-pic
  # -fno-pie` (cc puts its -fPIC before CFLAGS) and `-mno-shared` on MIPS do the same for ring's
  # C: -5.5 KiB on mipsel. Same load addresses, so no ASLR is lost. (docs/flash.md, section 8)
  case $t in
    mipsel-* | armv7-*)
      flags="$flags -C relocation-model=static"
      cflags="$cflags -fno-pic -fno-pie"
      ;;
  esac
  case $t in
    mipsel-*) cflags="$cflags -mno-shared" ;;
  esac
  # The sha2 crate's compact SHA-256/512 (rounds in a loop, not unrolled) on mipsel and armv7,
  # which have no SHA instructions for its other backends: its SHA-512 (ed25519's) was 53 KiB of
  # code on mipsel; -61 KiB on mipsel, -31 KiB on armv7. On aarch64 the crate picks the ARMv8
  # SHA-256 (and SHA-512, ARMv8.2) instructions at run time where the CPU has them, and keeps the
  # software code for CPUs without (the RPi 4's A72; SHA-512 on most cores): compact there,
  # -16 KiB. (docs/flash.md, section 8)
  case $t in
    mipsel-* | armv7-* | aarch64-*) flags="$flags --cfg sha2_backend_soft=\"compact\"" ;;
  esac
  flags="$flags ${CPEVISOR_CROSS_RUSTFLAGS:-}"
  echo "cross: building $t" >&2
  # build-std is unstable: RUSTC_BOOTSTRAP lets Debian's stable rustc use it.
  env RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${T}_LINKER=$gcc" "CARGO_TARGET_${T}_RUSTFLAGS=$flags" \
    "CC_${t_}=$gcc" "CFLAGS_${t_}=$cflags" "AR_${t_}=${gcc%gcc}ar" \
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

# Size table; fail if any binary is not statically linked, or not musl on a musl target: glibc's
# start files carry its ABI note, which `file` shows as "for GNU/Linux 3.x", musl's do not.
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
    case $t:$info in
      *-musl*:*"GNU/Linux"*) link="NOT MUSL (glibc): $info"; status=1 ;;
      *-musl*:*) link="$link, musl" ;;
      *) link="$link, glibc" ;;
    esac
    printf '%-34s %-14s %10s  %s\n' "$t" "$(basename "$f")" "$kib" "$link"
  done
done
exit $status
