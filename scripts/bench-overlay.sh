#!/usr/bin/env bash
# make bench, step "overlay": the bench-only initrd for the qemu-virt-a53 board.
#
#   target/bench/guest/Image                  the stock Debian arm64 kernel, uncompressed
#   target/bench/guest/initramfs.cpio.gz      busybox + scripts/bench-guest-init.sh as /init
#   target/bench/overlay.cpio                 /bench/{Image,guest.cpio.gz,board.sh} plus Debian's
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

apt_in_view() { APT_CONFIG=$CACHE/apt/apt.conf "$@"; }

# --- 1. QEMU arm64 and the library packages it depends on, unpacked once into the cache --------
# Each apt-cache call re-reads the private view's indices (seconds each on this machine), so the
# walk asks about a whole breadth-first level per call.
QROOT=$CACHE/bench/qemu-arm64
qver=$(apt_in_view apt-cache show --no-all-versions qemu-system-arm:arm64 | awk '/^Version:/ {print $2; exit}')
[ -n "$qver" ] || die "no qemu-system-arm:arm64 in the apt view (run make setup)"
if [ "$(cat "$QROOT/version" 2>/dev/null)" != "$qver" ]; then
  log "qemu-system-arm:arm64 $qver and its library packages"
  # Only library packages matter for the NEEDED closure below; the rest (qemu-system-common,
  # -data, gcc-12-base, debconf...) hold no shared objects QEMU loads.
  level=(qemu-system-arm) all=()
  while [ ${#level[@]} -gt 0 ]; do
    all+=("${level[@]}")
    [ ${#all[@]} -le $MAX_PACKAGES ] || die "more than $MAX_PACKAGES packages: dependency walk runaway"
    mapfile -t level < <(apt_in_view apt-cache depends --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${level[@]/%/:arm64}" |
      awk '$1 == "Depends:" && $2 !~ /^</ {sub(/:.*/, "", $2); print $2}' |
      grep -E '^(lib|zlib1g$)' | sort -u | grep -vxF -f <(printf '%s\n' "${all[@]}") || true)
  done
  # Name and version of each, from the signed index; apt-get fetches those not yet in debs/.
  mkdir -p "$CACHE/debs"
  mapfile -t specs < <(apt_in_view apt-cache show --no-all-versions "${all[@]/%/:arm64}" |
    awk '/^Package:/ {p = $2} /^Version:/ {print p "=" $2}')
  [ ${#specs[@]} -eq ${#all[@]} ] || die "apt-cache knows ${#specs[@]} of the ${#all[@]} packages: ${all[*]}"
  want=() debs=()
  for s in "${specs[@]}"; do
    f=$CACHE/debs/${s%%=*}_$(sed 's/:/%3a/g' <<<"${s#*=}")_arm64.deb
    debs+=("$f")
    [ -s "$f" ] || want+=("${s%%=*}:arm64=${s#*=}")
  done
  if [ ${#want[@]} -gt 0 ]; then
    (cd "$CACHE/debs" && apt_in_view apt-get download -q "${want[@]}" >&2)
  fi
  rm -rf "$QROOT.tmp" && mkdir -p "$QROOT.tmp/root"
  for f in "${debs[@]}"; do
    [ -s "$f" ] || die "download did not produce $f"
    dpkg-deb -x "$f" "$QROOT.tmp/root"
  done
  log "${#debs[@]} packages unpacked"
  echo "$qver" > "$QROOT.tmp/version"
  rm -rf "$QROOT" && mv "$QROOT.tmp" "$QROOT"
fi
QEMU_BIN=usr/bin/qemu-system-aarch64
[ -x "$QROOT/root/$QEMU_BIN" ] || die "$QROOT/root/$QEMU_BIN missing after unpacking"

# --- 2. Stage the overlay tree -------------------------------------------------------------------
STAGE=$OUT/overlay.tmp
rm -rf "$STAGE" "$OUT/guest.tmp" && mkdir -p "$STAGE/bench" "$STAGE/usr/bin" "$OUT/guest.tmp/bin"

# Follow NEEDED from the QEMU binary; copy each library (symlinks resolved) to where ld.so finds it.
LIBDIRS=(lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib usr/lib)
resolve() {
  local d
  for d in "${LIBDIRS[@]}"; do
    if [ -e "$QROOT/root/$d/$1" ]; then echo "$d/$1"; return; fi
  done
  return 1
}
cp "$QROOT/root/$QEMU_BIN" "$STAGE/$QEMU_BIN"
pending=("$QEMU_BIN") copied=" "
nlibs=0
while [ ${#pending[@]} -gt 0 ]; do
  f=${pending[0]} pending=("${pending[@]:1}")
  while read -r soname; do
    [[ $copied == *" $soname "* ]] && continue
    rel=$(resolve "$soname") || die "library $soname (needed by $f) is in none of the unpacked packages"
    mkdir -p "$STAGE/$(dirname "$rel")"
    cp -L "$QROOT/root/$rel" "$STAGE/$rel"
    copied="$copied$soname "
    pending+=("$rel")
    nlibs=$((nlibs + 1))
    [ $nlibs -le $MAX_LIBS ] || die "more than $MAX_LIBS libraries in the closure"
  done < <(readelf -d "$QROOT/root/$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
# The program interpreter (ld-linux-aarch64.so.1) is named by PT_INTERP, not NEEDED.
interp=$(readelf -l "$QROOT/root/$QEMU_BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || die "$QEMU_BIN has no program interpreter"
if [ ! -e "$STAGE$interp" ]; then
  rel=$(resolve "$(basename "$interp")") || die "interpreter $interp not unpacked"
  mkdir -p "$STAGE$(dirname "$interp")"
  cp -L "$QROOT/root/$rel" "$STAGE$interp"
  nlibs=$((nlibs + 1))
fi
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
