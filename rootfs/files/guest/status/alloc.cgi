#!/bin/sh
# GET /cgi-bin/alloc?MIB: the guest takes MIB MiB of its memory (1 to 256) and holds it: a tmpfs
# of its own on /run/alloc filled with that much, so no process has to stay alive to hold it.
# GET /cgi-bin/alloc?0: gives it back (unmounts the tmpfs; the pages return to the guest's free
# lists, where free page reporting hands them to the host). For the balloon's end-to-end test
# (tests/tests/density_in_board.rs).
printf 'Content-Type: text/plain\r\n\r\n'
mib=$QUERY_STRING
case $mib in
'' | *[!0-9]* | ????*)
    echo "alloc-error=expected a number of MiB, 0 to 256"
    exit 0
    ;;
esac
if grep -q ' /run/alloc ' /proc/mounts; then
    umount /run/alloc || { echo "alloc-error=umount failed"; exit 0; }
fi
if [ "$mib" -eq 0 ]; then
    echo "freed=yes"
elif [ "$mib" -gt 256 ]; then
    echo "alloc-error=at most 256 MiB"
else
    mkdir -p /run/alloc &&
        mount -t tmpfs -o size=${mib}m,mode=0700 tmpfs /run/alloc &&
        dd if=/dev/zero of=/run/alloc/held bs=1M count="$mib" 2>/dev/null &&
        echo "held_kib=$(du -k /run/alloc/held | cut -f1)" ||
        echo "alloc-error=could not fill $mib MiB"
fi
