#!/bin/sh
# GET /cgi-bin/meminfo: where the guest's memory goes, for the density figures (docs/density.md):
# the kernel's boot-time "Memory:" line (code, data, bss, reserved), /proc/meminfo, and the
# root file system's size (the unpacked initramfs lives in guest RAM as tmpfs/ramfs pages).
printf 'Content-Type: text/plain\r\n\r\n'
dmesg 2>/dev/null | grep -m1 'Memory: [0-9]*K/' | sed 's/^.*Memory: /kernel-memory=/'
sed 's/^/meminfo./; s/: */=/' /proc/meminfo
# Whether the log buffer still holds the whole boot (its first line is the kernel banner).
echo "dmesg_lines=$(dmesg 2>/dev/null | wc -l)"
echo "dmesg_first=$(dmesg 2>/dev/null | head -n1)"
echo "rootfs_kib=$(du -sxk / 2>/dev/null | cut -f1)"
