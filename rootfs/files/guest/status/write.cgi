#!/bin/sh
# GET /cgi-bin/write?TOKEN: writes TOKEN to the app's data disk (/data/written) WITHOUT sync, so
# the write sits in the guest's page cache: only a clean power-off (the guest unmounting /data)
# or the kernel's own writeback puts it on the disk. GET /cgi-bin/write: what the disk holds.
# TOKEN: 1 to 128 characters of A-Z a-z 0-9 . _ -
printf 'Content-Type: text/plain\r\n\r\n'
token=$QUERY_STRING
case $token in
'')
    echo "written=$(head -c 256 /data/written 2>/dev/null)"
    ;;
*[!A-Za-z0-9._-]*)
    echo "write-error=token must be A-Z a-z 0-9 . _ -"
    ;;
*)
    if [ ${#token} -gt 128 ]; then
        echo "write-error=token longer than 128"
    elif echo "$token" >/data/written; then
        echo "wrote=$token"
    else
        echo "write-error=/data/written not writable"
    fi
    ;;
esac
