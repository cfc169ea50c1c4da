#!/usr/bin/env python3
"""opsloop's example service: a small HTTP server to deploy.

GET /        answers "<VERSION>\n"
GET /health  answers 200 ("ok"), or 503 with HEALTH=fail
GET /stream  a 32 KiB download streamed over STREAM_MS (default 1000), never failing
Every answer names its version in `X-Version`.

Switches (environment variables), so a test or a demo can make a version bad:
  PORT          where it listens (opsloop gives it)
  VERSION       what it says it is (default "dev")
  FAIL_PERCENT  this share of requests to / answers 500 (default 0)
  SLOW_MS       every answer waits this long first (default 0)
  HEALTH=fail   its health check fails, so it never takes traffic
"""
import http.server
import os
import random
import socketserver
import sys
import time

VERSION = os.environ.get("VERSION", "dev")
FAIL_PERCENT = float(os.environ.get("FAIL_PERCENT", "0"))
SLOW_MS = float(os.environ.get("SLOW_MS", "0"))
HEALTHY = os.environ.get("HEALTH", "ok") != "fail"
STREAM_MS = float(os.environ.get("STREAM_MS", "1000"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body would wait for
    # the peer's delayed ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", VERSION)
        self.end_headers()
        self.wfile.write(body)

    def stream(self):
        chunks = 32
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(chunks * 1024))
        self.send_header("X-Version", VERSION)
        self.end_headers()
        for _ in range(chunks):
            self.wfile.write(b"x" * 1024)
            self.wfile.flush()
            time.sleep(STREAM_MS / 1000 / chunks)

    def do_GET(self):
        if SLOW_MS:
            time.sleep(SLOW_MS / 1000)
        if self.path == "/stream":
            self.stream()
        elif self.path == "/health":
            self.answer(200 if HEALTHY else 503, "ok\n" if HEALTHY else "unhealthy\n")
        elif random.uniform(0, 100) < FAIL_PERCENT:
            self.answer(500, f"{VERSION} failed\n")
        else:
            self.answer(200, f"{VERSION}\n")

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a proxy opening connections in a burst would see
    # SYNs dropped and retried a second later.
    request_queue_size = 1024


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"{VERSION} listening on {port}", flush=True)
    try:
        Server(("127.0.0.1", port), Handler).serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
