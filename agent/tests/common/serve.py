#!/usr/bin/env python3
"""A real HTTP/1.1 file server for the agent's download tests.

Serves files from --root with Range support (python's http.server has none), optionally over
TLS, and can misbehave on purpose: --drop-after N sends only N body bytes of the first
--drop-count GET requests (-1: all) and then closes the connection. Prints "PORT <n>" once
listening; logs one line per request ("GET <path> range=<Range or ->") to --log.
"""
import argparse
import http.server
import os
import re
import ssl
import sys
import threading

args = None
lock = threading.Lock()
drops_left = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def do_GET(self):
        global drops_left
        rng = self.headers.get("Range")
        if args.log:
            with lock, open(args.log, "a") as f:
                f.write(f"GET {self.path} range={rng or '-'}\n")
        path = os.path.join(args.root, self.path.split("?")[0].lstrip("/"))
        if ".." in self.path or not os.path.isfile(path):
            self.send_error(404, "Not Found")
            return
        with open(path, "rb") as f:
            data = f.read()
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not args.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{len(data)}-{int(os.path.getmtime(path))}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        with lock:
            drop = args.drop_after is not None and drops_left != 0
            if drop and drops_left > 0:
                drops_left -= 1
        if drop:
            self.wfile.write(body[: args.drop_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                # Cuts the TCP stream (no TLS close_notify either), like a lost link.
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.wfile.write(body)


def main():
    global args, drops_left
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--drop-after", type=int)
    p.add_argument("--drop-count", type=int, default=1)
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--log")
    args = p.parse_args()
    drops_left = args.drop_count
    # socketserver listens with a backlog of 5: the fleet test's 200 agents connecting at once
    # overflowed it, and the dropped SYNs were retried after 1, 3, 7, 15, 31 s, which read as
    # a server sending nothing for 30 s (the agent's rate floor then refused the download).
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
