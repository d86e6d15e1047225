#!/usr/bin/env bash
# make setup: installs every host dependency and fills the download cache. Idempotent: a second run
# checks stamps and returns in about a second.
#
# Cache ($CPEVISOR_CACHE, default ~/.cache/cpevisor), keyed by Debian package name + version:
#   apt/                     a private apt view (own sources, lists, config) for foreign-arch downloads
#   debs/                    the downloaded .deb files
#   kernel/<flavour>/        root/ = the kernel package unpacked, release = its `uname -r`
#   busybox/<debian_arch>/   busybox (static)
#   musl/<debian_arch>/      root/ = musl-dev unpacked (scripts/cross.sh adds its specs file there)
set -euo pipefail

CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
mkdir -p "$CACHE"
log() { printf 'setup: %s\n' "$*" >&2; }

# --- 1. Host packages (Debian) -------------------------------------------------------------------
HOST_PKGS=(
  # emulated boards and cross binaries under user-mode emulation
  qemu-system-arm qemu-system-mips qemu-system-x86 qemu-user-static
  # Debian's Rust (1.96) with std sources: cross builds build std for each target (build-std)
  rustc-web cargo-web rust-web-src
  # cross linkers and C libraries for static glibc binaries
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  gcc-mipsel-linux-gnu libc6-dev-mipsel-cross gcc-mips64el-linux-gnuabi64 libc6-dev-mips64el-cross
  # images, tests and benchmarks (acpica-tools: iasl disassembles the VMM's x86 ACPI tables in a test)
  busybox-static cpio file openssl python3 mosquitto mosquitto-clients iproute2 e2fsprogs acpica-tools
  # the microVM app's read-only root file system image (mkfs.erofs, `cpevisor-rootfs guest`)
  erofs-utils
  # the bench's flash.device_binaries_squashfs_kib: the device binaries as firmware stores them
  squashfs-tools
  # the apps' port mappings and egress policy (agent/src/netfilter, its host tests): the nft tool
  nftables
  # the controller's store tests and usp_serve on PostgreSQL: Debian's server, started by the
  # tests themselves on a temporary directory and port (controller/src/store/test_postgres.rs)
  postgresql
  # the controller's dashboard checked in a real headless browser (agent/tests/usp_api.rs), with
  # a font for its screenshots (recommends are not installed here)
  chromium fonts-dejavu-core
  # minimal guest kernels (scripts/guest-kernel.sh): source, kconfig and build tools; libelf for
  # x86_64's objtool, xz for its compressed bzImage
  linux-source-6.1 make gcc flex bison bc libelf-dev xz-utils
)

missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Some images carry a newer qemu-utils (backports) that Breaks bookworm's qemu-system-common:
  # pin qemu-utils to the emulators' own version so both install together.
  pin=()
  qver=$(apt-cache policy qemu-system-common | awk '/Candidate:/ {print $2}')
  if [ -n "$qver" ] && dpkg-query -W qemu-utils >/dev/null 2>&1; then
    [ "$(dpkg-query -W -f '${Version}' qemu-utils)" = "$qver" ] || pin=("qemu-utils=$qver")
  fi
  apt-get install -y -q --no-install-recommends --allow-downgrades "${pin[@]}" "${missing[@]}"
fi

# --- 2. A private apt view for foreign architectures --------------------------------------------
# apt_view, apt_in_view and download: scripts/lib/apt-view.sh (shared with the bench overlay and
# the DNS filter app's tree).
# shellcheck source=lib/apt-view.sh
source "$(dirname "$0")/lib/apt-view.sh"
ARCHES=("${APT_ARCHES[@]}")

# --- 3. Kernels, one per Debian flavour the boards use -------------------------------------------
# flavour -> debian arch
declare -A FLAVOURS=([arm64]=arm64 [armmp]=armhf [4kc-malta]=mipsel [5kc-malta]=mips64el [amd64]=amd64)
for flavour in "${!FLAVOURS[@]}"; do
  arch=${FLAVOURS[$flavour]}
  dir=$CACHE/kernel/$flavour
  [ -s "$dir/release" ] && [ -d "$dir/root/lib/modules" ] && continue
  apt_view
  # The meta package linux-image-<flavour> names the current ABI package; prefer its -unsigned build
  # (same kernel, no signature wrapper) where one exists.
  pkg=$(apt_in_view apt-cache depends "linux-image-$flavour:$arch" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  pkg=${pkg%%:*}
  [ -n "$pkg" ] || { log "no kernel package found for flavour $flavour ($arch)"; exit 1; }
  if apt_in_view apt-cache show "$pkg-unsigned:$arch" >/dev/null 2>&1; then pkg=$pkg-unsigned; fi
  log "kernel $flavour: $pkg ($arch)"
  deb=$(download "$pkg:$arch")
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/root"
  dpkg-deb -x "$deb" "$dir.tmp/root"
  ls "$dir.tmp/root/lib/modules" | head -1 > "$dir.tmp/release"
  basename "$deb" > "$dir.tmp/deb"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
done

# --- 4. Static busybox per architecture ----------------------------------------------------------
for arch in "${ARCHES[@]}"; do
  dir=$CACHE/busybox/$arch
  [ -x "$dir/busybox" ] && continue
  apt_view
  log "busybox-static ($arch)"
  deb=$(download "busybox-static:$arch")
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/x"
  dpkg-deb -x "$deb" "$dir.tmp/x"
  mv "$dir.tmp/x/bin/busybox" "$dir.tmp/busybox" && rm -rf "$dir.tmp/x"
  basename "$deb" > "$dir.tmp/deb"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
done

# --- 5. musl per architecture -------------------------------------------------------------------
# Debian's musl-dev (headers, start files, libc.a; ~0.6 MB each): `make cross` links the device
# binaries against it with the cross gcc above (scripts/cross.sh).
for arch in "${ARCHES[@]}"; do
  dir=$CACHE/musl/$arch
  [ -s "$dir/deb" ] && [ -n "$(find "$dir/root/usr/lib" -name libc.a 2>/dev/null)" ] && continue
  apt_view
  log "musl-dev ($arch)"
  deb=$(download "musl-dev:$arch")
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/root"
  dpkg-deb -x "$deb" "$dir.tmp/root"
  basename "$deb" > "$dir.tmp/deb"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
done

log "ready (cache: $CACHE)"
