#!/bin/sh
# GET /cgi-bin/meminfo: where the guest's memory goes, for the density figures (docs/density.md):
# the kernel's boot-time "Memory:" line (code, data, bss, reserved), /proc/meminfo, and the
# root file system's size and type (an unpacked initramfs lives in guest RAM as tmpfs/ramfs
# pages; an erofs root is a read-only disk whose pages the guest only caches).
printf 'Content-Type: text/plain\r\n\r\n'
dmesg 2>/dev/null | grep -m1 'Memory: [0-9]*K/' | sed 's/^.*Memory: /kernel-memory=/'
sed 's/^/meminfo./; s/: */=/' /proc/meminfo
# Whether the log buffer still holds the whole boot (its first line is the kernel banner).
echo "dmesg_lines=$(dmesg 2>/dev/null | wc -l)"
echo "dmesg_first=$(dmesg 2>/dev/null | head -n1)"
echo "rootfs_kib=$(du -sxk / 2>/dev/null | cut -f1)"
# rootfs (an initramfs, in guest RAM) or erofs (a read-only disk, its pages in the host's cache)
echo "rootfs_type=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)"
