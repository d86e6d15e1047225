#!/usr/bin/env bash
# The DNS filter app's server: Debian's dnsmasq (package dnsmasq-base) for one architecture with
# its shared-library closure, as a tree that `cpevisor-rootfs jail-app|guest --app dns-filter
# --tree DIR` puts into the app's root file system (scripts/debian-tree.sh says what DIR holds).
#
#   scripts/dns-filter-tree.sh ARCH    ARCH: aarch64 armv7 mipsel mips64el x86_64; prints DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 ARCH (aarch64, armv7, mipsel, mips64el or x86_64)" >&2; exit 2; }
exec bash "$(dirname "$0")/debian-tree.sh" dns-filter dnsmasq-base usr/sbin/dnsmasq "$1"
