#!/usr/bin/env bash
# make bench, step "overlay": the bench-only initrd for the qemu-virt-a53 board.
#
#   target/bench/guest/Image                  the stock Debian arm64 kernel, uncompressed
#   target/bench/guest/initramfs.cpio.gz      busybox + scripts/bench-guest-init.sh as /init
#   target/bench/overlay.cpio                 /bench/{Image,guest.cpio.gz,board.sh}, /bench/app/ (the
#                                             sample app `status` 1.0 as its package carries it:
#                                             the minimal kernel's Image, root.erofs, disk.img, from
#                                             scripts/sample-app.sh's staging) plus Debian's
#                                             qemu-system-aarch64 (arm64) and its shared-library
#                                             closure (NEEDED, followed with readelf -d)
#   target/bench/board-initrd                 the board firmware's initramfs with the overlay appended
#
# The Linux kernel unpacks every archive in a concatenated initrd, so the firmware builder is not
# touched. The overlay stays uncompressed: the board (TCG) copies 100 MB faster than it gunzips it.
# Needs: make setup (private apt view, kernel, busybox) and make firmware BOARDS=qemu-virt-a53.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
BOARD=qemu-virt-a53
OUT=$ROOT/target/bench
FIRMWARE=$ROOT/target/firmware/$BOARD/initramfs.cpio.gz
# The sample app's microVM files as scripts/sample-app.sh staged them for status-1.0.cpkg.
APP=$ROOT/target/packages/build/status-1.0/guest
# Bounds on what the package walk may pull: a dependency loop or a changed package set fails
# loudly instead of filling the disk.
MAX_PACKAGES=120
MAX_LIBS=120
log() { printf 'bench-overlay: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ -f "$CACHE/apt/apt.conf" ] || die "$CACHE/apt/apt.conf missing: run make setup"
kernel=$(ls "$CACHE"/kernel/arm64/root/boot/vmlinuz-* 2>/dev/null | head -1)
[ -n "$kernel" ] || die "no arm64 kernel in $CACHE/kernel/arm64: run make setup"
busybox=$CACHE/busybox/arm64/busybox
[ -x "$busybox" ] || die "$busybox missing: run make setup"
for f in Image root.erofs disk.img; do
  [ -s "$APP/$f" ] || die "$APP/$f missing: run make firmware BOARDS=$BOARD (the minimal-kernel sample app)"
done

# shellcheck source=lib/apt-view.sh
source "$ROOT/scripts/lib/apt-view.sh"

# --- 1. QEMU arm64 and the library packages it depends on, unpacked once into the cache --------
QROOT=$CACHE/bench/qemu-arm64
unpack_with_libs qemu-system-arm arm64 "$QROOT" $MAX_PACKAGES
QEMU_BIN=usr/bin/qemu-system-aarch64
[ -x "$QROOT/root/$QEMU_BIN" ] || die "$QROOT/root/$QEMU_BIN missing after unpacking"

# --- 2. Stage the overlay tree -------------------------------------------------------------------
STAGE=$OUT/overlay.tmp
rm -rf "$STAGE" "$OUT/guest.tmp" && mkdir -p "$STAGE/bench" "$STAGE/usr/bin" "$OUT/guest.tmp/bin"

# Follow NEEDED from the QEMU binary; copy each library (symlinks resolved) to where ld.so finds
# it, and the program interpreter (ld-linux-aarch64.so.1).
copy_with_libs "$QROOT/root" "$QEMU_BIN" "$STAGE" $MAX_LIBS \
  lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib usr/lib
nlibs=$COPIED_LIBS
qemu_kb=$(du -sk "$STAGE" | cut -f1)
log "qemu-system-aarch64 + $nlibs shared objects: $((qemu_kb / 1024)) MiB"
# Flash a QEMU peer needs, for the binary-size figures: arm64 from the tree above, amd64 from this
# host's own qemu-system-x86_64 and the libraries its loader resolves.
{
  echo "# written by scripts/bench-overlay.sh: bytes on disk, symlinks resolved"
  echo "qemu_arm64_binary_bytes=$(stat -c %s "$STAGE/$QEMU_BIN")"
  echo "qemu_arm64_total_bytes=$(find "$STAGE" -type f -exec stat -c %s {} + | awk '{s += $1} END {print s}')"
  echo "qemu_arm64_files=$(find "$STAGE" -type f | wc -l)"
  if host_qemu=$(command -v qemu-system-x86_64); then
    mapfile -t host_libs < <(ldd "$host_qemu" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
    echo "qemu_amd64_binary_bytes=$(stat -L -c %s "$host_qemu")"
    echo "qemu_amd64_total_bytes=$(stat -L -c %s "$host_qemu" "${host_libs[@]}" | awk '{s += $1} END {print s}')"
    echo "qemu_amd64_files=$((${#host_libs[@]} + 1))"
  fi
} > "$OUT/peer-sizes.env"

# The guest kernel: Debian ships arm64 vmlinuz either as a raw Image or gzip'd; both boot loaders
# want it raw (QEMU would otherwise allocate a 256 MiB decompression buffer).
if gzip -t "$kernel" 2>/dev/null; then
  gzip -dc "$kernel" > "$OUT/guest.tmp/Image"
else
  cp "$kernel" "$OUT/guest.tmp/Image"
fi
# The guest's initramfs: busybox and the bench init; /dev/console comes from devtmpfs in /init.
G=$OUT/guest.tmp/root
mkdir -p "$G/bin" "$G/dev" "$G/proc"
cp "$busybox" "$G/bin/busybox"
cp "$ROOT/scripts/bench-guest-init.sh" "$G/init"
chmod 0755 "$G/init" "$G/bin/busybox"
(cd "$G" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n > "$OUT/guest.tmp/initramfs.cpio.gz"
rm -rf "$G"
rm -rf "$OUT/guest" && mv "$OUT/guest.tmp" "$OUT/guest"

cp "$OUT/guest/Image" "$STAGE/bench/Image"
cp "$OUT/guest/initramfs.cpio.gz" "$STAGE/bench/guest.cpio.gz"
mkdir -p "$STAGE/bench/app"
cp "$APP/Image" "$APP/root.erofs" "$APP/disk.img" "$STAGE/bench/app/"
cp "$ROOT/scripts/bench-board.sh" "$STAGE/bench/board.sh"
chmod 0755 "$STAGE/bench/board.sh"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$OUT/overlay.cpio"
rm -rf "$STAGE"

[ -s "$FIRMWARE" ] || die "$FIRMWARE missing: run make firmware BOARDS=$BOARD"
# The firmware's gzip stream, zero padding to a 512-byte boundary (the kernel skips zeros between
# archives), then the overlay.
{
  cat "$FIRMWARE"
  pad=$(( (512 - $(stat -c %s "$FIRMWARE") % 512) % 512 ))
  head -c "$pad" /dev/zero
  cat "$OUT/overlay.cpio"
} > "$OUT/board-initrd.tmp"
mv "$OUT/board-initrd.tmp" "$OUT/board-initrd"
log "wrote $OUT/board-initrd ($(( $(stat -c %s "$OUT/board-initrd") / 1048576 )) MiB)"
