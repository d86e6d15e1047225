#!/bin/sh
# GET /cgi-bin/meminfo: where the guest's memory goes, for the density figures (docs/density.md):
# the kernel's boot-time "Memory:" line (code, data, bss, reserved), /proc/meminfo, and the
# root file system's size (the unpacked initramfs lives in guest RAM as tmpfs/ramfs pages).
printf 'Content-Type: text/plain\r\n\r\n'
dmesg 2>/dev/null | grep -m1 ' Memory: ' | sed 's/^.*Memory: /kernel-memory=/'
sed 's/^/meminfo./; s/: */=/' /proc/meminfo
echo "rootfs_kib=$(du -sxk / 2>/dev/null | cut -f1)"
