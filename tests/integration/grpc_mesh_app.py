#!/usr/bin/python3
"""A gRPC app for the mesh tests (test_grpc_mesh.py): the server behind a
proxy, on Debian's python3-grpcio (C-core 1.51).

No generated code: the service weft.test.Mesh is registered with a generic
handler, and every message is bytes (identity serializers), mostly JSON.

    grpc_mesh_app.py server [--port 0]
        Listens on 127.0.0.1:PORT (0 = a free port), prints "PORT <n>" on
        stdout once serving, runs until SIGTERM/SIGINT and then exits 0.

Methods of /weft.test.Mesh/:

    Echo    unary: the request back; initial metadata x-echo-initial: yes,
            trailing metadata x-echo-len: <request length>.
    Info    unary: {"metadata": {key: value}} of the text metadata the call
            arrived with (what the server proxy passed to the app).
    Count   server streaming: request {"n": N, "size": S}; N messages, the
            i-th is b"%06d:" % i padded with '.' to S bytes (at least 7).
    Chat    bidirectional: answers each message M with b"pong:" + M, in turn.
    Fail    unary: request {"code": "NOT_FOUND", "message": "..."}; fails
            with that status code and message.
    Sleep   unary: request {"ms": N}; answers b"slept" after N ms unless the
            call ends first (cancelled, deadline), which it counts.
    Stats   unary: {"ended_early": calls of Sleep that ended before their
            time, "calls": {method: count}}.

Diagnostics go to stderr.
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

SERVICE = "weft.test.Mesh"
MAX_MESSAGE = 16 << 20

_lock = threading.Lock()
_calls = collections.Counter()
_ended_early = 0


def _count(method):
    with _lock:
        _calls[method] += 1


def echo(request, context):
    _count("Echo")
    context.send_initial_metadata((("x-echo-initial", "yes"),))
    context.set_trailing_metadata((("x-echo-len", str(len(request))),))
    return request


def info(request, context):
    _count("Info")
    md = {}
    for k, v in context.invocation_metadata():
        if not k.endswith("-bin"):
            md[k] = v
    return json.dumps({"metadata": md}).encode()


def count(request, context):
    _count("Count")
    q = json.loads(request)
    size = max(7, int(q.get("size", 7)))
    for i in range(int(q["n"])):
        head = b"%06d:" % i
        yield head + b"." * (size - len(head))


def chat(requests, context):
    _count("Chat")
    for m in requests:
        yield b"pong:" + m


def fail(request, context):
    _count("Fail")
    q = json.loads(request)
    context.abort(grpc.StatusCode[q["code"]], q["message"])


def sleep(request, context):
    global _ended_early
    _count("Sleep")
    end = time.monotonic() + json.loads(request)["ms"] / 1000.0
    # The app's own behaviour, not a test's synchronisation: it notices
    # within 10 ms that its caller went away.
    while time.monotonic() < end:
        if not context.is_active():
            with _lock:
                _ended_early += 1
            return b""
        time.sleep(0.01)
    return b"slept"


def stats(request, context):
    with _lock:
        return json.dumps({"ended_early": _ended_early, "calls": dict(_calls)}).encode()


def serve(args):
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Info": grpc.unary_unary_rpc_method_handler(info),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        "Stats": grpc.unary_unary_rpc_method_handler(stats),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        print("grpc_mesh_app: cannot listen on 127.0.0.1:%d" % args.port, file=sys.stderr)
        return 1
    server.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print("PORT %d" % port, flush=True)
    done.wait()
    server.stop(grace=0.5).wait()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
