#!/bin/busybox sh
# /init of the nested bench guest (make bench), the same under cpevisor-vmm and under QEMU: print
# the marker the board-side watcher times, send the VMM's boot-ready signal when asked to, then
# stay idle so the board can read the monitor's memory; the board ends the monitor with SIGTERM.
#
# The kernel hands unknown command-line words to init as environment: `bench_signal=devmem` is
# given only to cpevisor-vmm, whose boot-signal device sits at 0x09020000 (QEMU virt has fw_cfg
# there, which must not be written).
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo BENCH-MARKER
if [ "$bench_signal" = devmem ]; then
    /bin/busybox devmem 0x09020000 8 1
fi
while :; do
    /bin/busybox sleep 3600
done
