#!/usr/bin/python3
"""A TCP echo app for the demo: reads until the client's EOF, answers
"NAME: <what it read>" and closes (only a relay that carries half-close
gets an answer through).

    tcp_app.py --port N --name NAME     (N = 0 picks a free port)

Prints "ready PORT" on stdout once listening; serves until SIGTERM."""
import argparse
import signal
import socket
import sys
import threading


def read_all(c):
    """Every byte until the peer's EOF."""
    out = bytearray()
    while True:
        b = c.recv(65536)
        if not b:
            return bytes(out)
        out += b


def serve(c, name):
    try:
        c.sendall(name.encode() + b": " + read_all(c))
    except OSError:
        pass
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="tcp")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(64)
    print("ready %d" % s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, a.name), daemon=True).start()


if __name__ == "__main__":
    main()
