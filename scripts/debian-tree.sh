#!/usr/bin/env bash
# One program from Debian's packages for one architecture, with its shared-library closure, as
# a tree of plain files that the firmware builder (`cpevisor-rootfs firmware --tree DIR`) or an
# app's root file system (`cpevisor-rootfs jail-app|guest --tree DIR`) takes in.
#
#   scripts/debian-tree.sh NAME PACKAGE BINARY ARCH    prints DIR
#     NAME     the tree's name in the cache (dns-filter, nft)
#     PACKAGE  the Debian package holding BINARY (dnsmasq-base, nftables)
#     BINARY   its path in the package, relative (usr/sbin/dnsmasq)
#     ARCH     aarch64 armv7 mipsel mips64el x86_64
#
# DIR = $CACHE/trees/NAME/<debian arch>-<12 hex>, the hex from the sha256 of the package list
# (name=version of PACKAGE and each library package), so a new version of any of them makes a
# new tree and an unchanged set reuses the old one. It holds:
#   tree/BINARY, tree/<lib dirs>/<soname> (the ELF NEEDED closure, symlinks resolved to plain
#   files) and the program interpreter at its absolute path (PT_INTERP)
#   packages   name=version of every package unpacked (the cache key's input)
#   sizes      bytes of the binary and of the whole tree
# The packages come from the project's private apt view (scripts/lib/apt-view.sh), unpacked once
# into $CACHE/apps/<package>-<debian arch>/.
set -euo pipefail
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
# Bounds on what the package walk and the closure may pull (dnsmasq-base needs ~20 of each).
MAX_PACKAGES=60
MAX_LIBS=60
log() { printf 'debian-tree: %s\n' "$*" >&2; }
# shellcheck source=lib/apt-view.sh
source "$(dirname "$0")/lib/apt-view.sh"

[ $# -eq 4 ] || { log "usage: $0 NAME PACKAGE BINARY ARCH"; exit 2; }
name=$1 pkg=$2 bin=$3
[[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || { log "name $name: expected a-z, 0-9, '-'"; exit 2; }
[[ $bin =~ ^[a-z0-9][a-zA-Z0-9_./+-]*$ && $bin != *..* ]] ||
  { log "binary $bin: expected a relative path inside the package"; exit 2; }
# The jail's and package's arch name -> Debian's arch and its multiarch library directory.
case $4 in
  aarch64) arch=arm64 triplet=aarch64-linux-gnu ;;
  armv7) arch=armhf triplet=arm-linux-gnueabihf ;;
  mipsel) arch=mipsel triplet=mipsel-linux-gnu ;;
  mips64el) arch=mips64el triplet=mips64el-linux-gnuabi64 ;;
  x86_64) arch=amd64 triplet=x86_64-linux-gnu ;;
  *) log "arch $4: expected aarch64, armv7, mipsel, mips64el or x86_64"; exit 2 ;;
esac

apt_view
SRC=$CACHE/apps/$pkg-$arch
unpack_with_libs "$pkg" "$arch" "$SRC" $MAX_PACKAGES
key=$(sha256sum "$SRC/packages" | cut -c1-12)
DIR=$CACHE/trees/$name/$arch-$key
if [ ! -s "$DIR/sizes" ]; then
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp/tree"
  copy_with_libs "$SRC/root" "$bin" "$DIR.tmp/tree" $MAX_LIBS \
    "lib/$triplet" "usr/lib/$triplet" lib usr/lib
  cp "$SRC/packages" "$DIR.tmp/packages"
  {
    echo "binary_bytes=$(stat -c %s "$DIR.tmp/tree/$bin")"
    echo "tree_bytes=$(find "$DIR.tmp/tree" -type f -exec stat -c %s {} + | awk '{s += $1} END {print s}')"
    echo "shared_objects=$COPIED_LIBS"
  } > "$DIR.tmp/sizes"
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
  log "$pkg $(cat "$SRC/version") for $arch: $(tr '\n' ' ' < "$DIR/sizes")"
fi
echo "$DIR"
