#!/bin/sh
# GET /status (busybox httpd runs /cgi-bin/index.cgi for the /status/ directory): live figures
# and the data file read from the app disk on every request.
printf 'Content-Type: text/plain\r\n\r\n'
echo "app=status"
echo "hostname=$(hostname)"
echo "uptime_s=$(cut -d' ' -f1 /proc/uptime)"
if [ -r /data/data.txt ]; then
    echo "data=$(head -c 4096 /data/data.txt)"
else
    echo "data-error=/data/data.txt not readable (is the app disk mounted?)"
fi
