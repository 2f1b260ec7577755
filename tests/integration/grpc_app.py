#!/usr/bin/python3
"""A tiny gRPC server and client for the proxyless gRPC tests
(test_proxyless.py), on Debian's python3-grpcio (C-core 1.51).

No generated code: the one method, /weft.test.Echo/Who, is registered with
a generic handler and identity (bytes) serializers.  The server answers
every call with its --name; the client counts the names it gets back.

    grpc_app.py server --name v1 [--port 0]
        Listens on 127.0.0.1:PORT (0 = a free port), prints "PORT <n>" on
        stdout once serving, and runs until SIGTERM/SIGINT.

    grpc_app.py client --target xds:///HOST:PORT [--metadata k=v]...
                       (--count N | --phase SPEC...) [--window W]
                       [--deadline SECONDS] [--timeout SECONDS]
        --count N: makes N calls and prints one JSON line
            {"calls": N, "counts": {"v1": 790, ...}, "errors": {"UNAVAILABLE": 2, ...},
             "first_error": "..."}.
        --phase SPEC (repeatable): SPEC is a comma-separated set of names;
            the client calls until the last W calls (--window, default 20)
            all answered with names of the set and every name of the set
            is among them, prints {"phase": i, "calls": ..., "counts": ...,
            "errors": ..., "window": [...]} and goes on to the next phase.
            The process exits 0 after the last phase (with --hold it first
            keeps its channel, and so its xDS stream, open until SIGTERM),
            or prints {"phase": i, "timeout": true, ...} and exits 1 when
            --deadline passes in a phase (the deadline restarts with each
            phase).
            Calls made while waiting count too, so a test sees whether any
            failed while the configuration changed under a live client.
        The xDS bootstrap comes from $GRPC_XDS_BOOTSTRAP as usual.

Everything printed on stdout is one JSON object per line (except the
server's PORT line); diagnostics go to stderr.
"""
import argparse
import collections
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"
METHOD = "/%s/Who" % SERVICE


def serve(args):
    name = args.name.encode()

    def who(request, context):
        return name

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(who)}),))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        print("grpc_app: cannot listen on 127.0.0.1:%d" % args.port, file=sys.stderr)
        return 1
    server.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print("PORT %d" % port, flush=True)
    done.wait()
    server.stop(grace=1).wait()
    return 0


class Caller:
    def __init__(self, args):
        self.channel = grpc.insecure_channel(args.target)
        self.call = self.channel.unary_unary(METHOD)  # bytes in, bytes out
        self.metadata = []
        for kv in args.metadata:
            k, sep, v = kv.partition("=")
            if not sep:
                raise SystemExit("grpc_app: --metadata wants KEY=VALUE, got %r" % kv)
            self.metadata.append((k.lower(), v))
        self.timeout = args.timeout
        self.counts = collections.Counter()
        self.errors = collections.Counter()
        self.first_error = None
        self.calls = 0

    def once(self):
        """One call: the answering backend's name, or None on an error."""
        self.calls += 1
        try:
            name = self.call(b"", timeout=self.timeout, metadata=self.metadata).decode()
        except grpc.RpcError as e:
            self.errors[e.code().name] += 1
            if self.first_error is None:
                self.first_error = "%s: %s" % (e.code().name, e.details())
            return None
        self.counts[name] += 1
        return name

    def report(self, **extra):
        out = {"calls": self.calls, "counts": dict(self.counts), "errors": dict(self.errors),
               "first_error": self.first_error}
        out.update(extra)
        print(json.dumps(out, sort_keys=True), flush=True)


def client(args):
    c = Caller(args)
    if args.count is not None:
        for _ in range(args.count):
            c.once()
        c.report()
        return 0
    for i, spec in enumerate(args.phase):
        want = {s.strip() for s in spec.split(",") if s.strip()}
        window = collections.deque(maxlen=args.window)
        end = time.monotonic() + args.deadline
        while True:
            window.append(c.once())
            if (len(window) == args.window and all(n in want for n in window)
                    and want <= set(window)):
                c.report(phase=i, window=list(window))
                break
            if time.monotonic() > end:
                c.report(phase=i, timeout=True, window=list(window))
                return 1
    if args.hold:
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--metadata", action="append", default=[])
    c.add_argument("--count", type=int)
    c.add_argument("--phase", action="append", default=[])
    c.add_argument("--window", type=int, default=20)
    c.add_argument("--deadline", type=float, default=20.0)
    c.add_argument("--timeout", type=float, default=5.0, help="per call, seconds")
    c.add_argument("--hold", action="store_true",
                   help="after the last phase, stay connected until SIGTERM")
    args = ap.parse_args()
    if args.mode == "server":
        return serve(args)
    if (args.count is None) == (not args.phase):
        ap.error("client: give exactly one of --count or --phase")
    return client(args)


if __name__ == "__main__":
    sys.exit(main())
