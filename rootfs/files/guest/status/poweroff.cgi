#!/bin/sh
# GET /cgi-bin/poweroff: answer first, then the app's clean power-off once httpd has sent the
# reply (the detached child holds none of httpd's pipes, so the response is not held open).
printf 'Content-Type: text/plain\r\n\r\n'
echo "powering off"
setsid sh -c 'sleep 1; /sbin/app-shutdown cgi' </dev/null >/dev/null 2>&1 &
