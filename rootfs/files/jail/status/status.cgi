#!/bin/busybox sh
# GET /status (busybox httpd runs /cgi-bin/index.cgi for the /status/ directory): the same
# fields as the microVM app's page, read on every request.
printf 'Content-Type: text/plain\r\n\r\n'
echo "app=status"
echo "backend=jail"
echo "hostname=$(hostname)"
echo "uptime_s=$(cut -d' ' -f1 /proc/uptime)"
if [ -r /etc/status/token ]; then
    echo "data=$(head -c 4096 /etc/status/token)"
else
    echo "data-error=/etc/status/token not readable"
fi
echo "starts=$(head -c 32 /data/starts 2>/dev/null)"
