#!/bin/busybox sh
# GET /cgi-bin/write?TOKEN: writes TOKEN to the app's data volume (/data/written, on the board's
# flash) WITHOUT sync, so the write sits in the board's page cache: only a clean shutdown (the
# board's init unmounting /data) or the kernel's own writeback puts it on the flash.
# GET /cgi-bin/write: what the volume holds. TOKEN: 1 to 128 characters of A-Z a-z 0-9 . _ -
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
