#!/usr/bin/python3
"""A small HTTP/1.1 test backend for weft's integration tests and demo.

Run as a subprocess:

    backend.py --port N --name NAME      (N = 0 picks a free port)

It prints "ready PORT" on stdout once it is listening, then serves until
SIGTERM or SIGINT.  Every response carries `x-backend: NAME`.  Paths:

    /echo              the request body back (octet-stream); x-body-len header
    /big?n=BYTES       n bytes of 'x', chunked, written as fast as the peer reads
    /slow?ms=N         waits N milliseconds, then answers like any other path
    /sink?pause_ms=N   reads the first MiB of the body, waits N ms, reads the
                       rest: a slow consumer, to test back-pressure on uploads
    /status?code=N     answers with status N
    /_inflight         how many requests are being served right now and
                       how many were served in all (control paths like this
                       one not counted), as JSON {"inflight": N, "served": M}
    anything else      JSON {name, method, path, headers, body_len, peer,
                       conn_requests}

Request bodies may use Content-Length or chunked transfer encoding; they are
read as a stream, so a large upload costs no memory unless it is echoed.
Keep-alive is on: one handler serves every request of a connection, and
conn_requests counts them, so tests can see upstream connection reuse.
"""
import argparse
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024

_inflight = 0
_served = 0
_inflight_lock = threading.Lock()


def _add_inflight(n):
    global _inflight, _served
    with _inflight_lock:
        _inflight += n
        if n > 0:
            _served += n


class BadBody(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "weft-test-backend"
    # Headers and body leave in one write, with Nagle off: otherwise the
    # body waits for the peer's delayed ACK of the headers (40 ms a
    # request), which says nothing about the proxy under test.
    wbufsize = 256 * 1024
    disable_nagle_algorithm = True
    backend_name = "backend"

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        self.conn_requests = 0

    def log_message(self, fmt, *args):  # keep stdout/stderr quiet
        pass

    # --- request body -------------------------------------------------

    def _body_chunks(self, pause_after=None, pause_ms=0):
        """Yields the request body in pieces (Content-Length or chunked)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        seen = 0
        paused = pause_after is None

        def maybe_pause():
            nonlocal paused
            if not paused and seen >= pause_after:
                paused = True
                time.sleep(pause_ms / 1000.0)

        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadBody("connection closed inside a chunked body")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BadBody("bad chunk size %r" % size_s)
                if size == 0:
                    # trailers, up to the empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            return
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise BadBody("connection closed inside a chunk")
                    left -= len(data)
                    seen += len(data)
                    yield data
                    maybe_pause()
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BadBody("chunk not followed by CRLF")
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise BadBody("connection closed inside the body")
                left -= len(data)
                seen += len(data)
                yield data
                maybe_pause()

    # --- responses ----------------------------------------------------

    def _send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("x-backend", self.backend_name)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _info(self, body_len):
        hdrs = {}
        for k, v in self.headers.items():
            k = k.lower()
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        peer = self.client_address
        return {
            "name": self.backend_name,
            "method": self.command,
            "path": self.path,
            "headers": hdrs,
            "body_len": body_len,
            "peer": "%s:%d" % (peer[0], peer[1]),
            "conn_requests": self.conn_requests,
        }

    def _handle(self):
        self.conn_requests += 1
        url = urlsplit(self.path)
        q = parse_qs(url.query)

        def qint(name, default):
            try:
                return int(q.get(name, [default])[0])
            except ValueError:
                return default

        if url.path == "/_inflight":
            with _inflight_lock:
                counts = {"inflight": _inflight, "served": _served}
            for _ in self._body_chunks():
                pass
            self._send(200, json.dumps(counts).encode())
            return
        _add_inflight(1)
        try:
            self._serve(url, qint)
        except BadBody as e:
            self.close_connection = True
            try:
                self._send(400, json.dumps({"error": str(e)}).encode())
            except OSError:
                pass
        finally:
            _add_inflight(-1)

    def _serve(self, url, qint):
        if url.path == "/echo":
            body = b"".join(self._body_chunks())
            self._send(200, body, "application/octet-stream",
                       [("x-body-len", str(len(body)))])
            return

        if url.path == "/sink":
            n = sum(len(c) for c in self._body_chunks(1 << 20, qint("pause_ms", 0)))
        else:
            n = sum(len(c) for c in self._body_chunks())

        if url.path == "/big":
            self._send_big(max(0, qint("n", 0)))
            return
        if url.path == "/slow":
            time.sleep(max(0, qint("ms", 0)) / 1000.0)
        status = 200
        if url.path == "/status":
            status = qint("code", 200)
        self._send(status, json.dumps(self._info(n)).encode())

    def _send_big(self, n):
        self.send_response(200)
        self.send_header("x-backend", self.backend_name)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"x" * CHUNK
        left = n
        while left:
            k = min(left, CHUNK)
            self.wfile.write(b"%x\r\n" % k + block[:k] + b"\r\n")
            left -= k
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A peer resetting a connection is normal in tests; anything else
        # is worth a line on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="weft test backend")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    ap.add_argument("--name", required=True, help="value of the x-backend header")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()

    Handler.backend_name = args.name
    srv = Server((args.host, args.port), Handler)

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so call it from
        # another thread than the one running serve_forever.
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
