"""WebSocket through the mesh (issue 5): an HTTP/1.1 Upgrade the listener
allows (Istio allows websocket) is relayed to the app over HTTP/1.1 (mTLS
between the proxies), and once the app answers 101 the connection carries
frames both ways until either side closes.  Upgrades the listener does not
allow are refused with 403; h2c is never an upgrade a proxy relays.

The WebSocket server and client are written here on Python's standard
library (RFC 6455: handshake, masked client frames, 7/16/64-bit lengths,
close frames)."""
import base64
import hashlib
import os
import socket
import struct
import threading

import pytest

from conftest import DEADLINE, STRICT, mtls_args, service_entry, workload_entry

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "chat.default.svc.cluster.local"


# --------------------------------------------------------------------------
# RFC 6455, just enough

def accept_key(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode, payload, mask):
    head = bytes([0x80 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
        out += b
    return bytes(out)


def read_frame(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    key = recv_exact(s, 4) if b1 & 0x80 else None
    data = recv_exact(s, n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0f, data


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(1)
        if not b:
            raise EOFError("closed before the end of the head: %r" % buf)
        buf += b
    lines = buf.decode("latin-1").split("\r\n")
    status = lines[0]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


class WsServer:
    """Echoes text/binary frames; "bye" makes it close; greets first when
    asked to (the greeting goes in the same write as the 101)."""

    def __init__(self, greet=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.greet = greet
        self.requests = []
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            status, h = read_head(c)
            self.requests.append((status, h))
            if h.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in h:
                c.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nnot upgrade")
                return
            resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                    accept_key(h["sec-websocket-key"].encode()) + b"\r\n\r\n")
            if self.greet:
                resp += frame(1, b"welcome", False)
            c.sendall(resp)
            while True:
                op, data = read_frame(c)
                if op == 8:
                    c.sendall(frame(8, data, False))
                    return
                if data == b"bye":
                    c.sendall(frame(8, struct.pack("!H", 1000), False))
                    return
                c.sendall(frame(op, data, False))
        except (OSError, EOFError):
            pass
        finally:
            c.close()

    def close(self):
        # Wake the accept() blocked in loop() (see test_tcp.App.close).
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def ws_connect(port, host=HOST, upgrade="websocket", addr="127.0.0.1"):
    s = socket.create_connection((addr, port), timeout=DEADLINE)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: " +
              upgrade.encode() + b"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, h = read_head(s)
    return s, status, h, key


# --------------------------------------------------------------------------
# mesh

@pytest.fixture
def mesh(weft, ca):
    made = []

    def make(greet=False):
        c = ca()
        app = WsServer(greet)
        made.append(app)
        server = weft(name="server", start=False)
        client = weft(name="client", start=False)
        y = service_entry("chat") + workload_entry(
            "chat-1", server.in_port, app="chat", service_account="chat",
            extra_labels={"security.istio.io/tlsMode": "istio"}) + STRICT
        server.write(y)
        client.write(y)
        server.start(app_port=app.port, service_account="chat", labels={"app": "chat"},
                     extra=mtls_args(c, "default", "chat"))
        client.start(service_account="client", extra=mtls_args(c, "default", "client"))
        return client, server, app
    yield make
    for a in made:
        a.close()


# --------------------------------------------------------------------------
# tests

def test_websocket_echo_through_two_proxies(mesh):
    client, server, app = mesh()
    s, status, h, key = ws_connect(client.out_port)
    assert status.startswith("HTTP/1.1 101"), (status, h)
    assert h.get("upgrade", "").lower() == "websocket"
    assert h.get("connection", "").lower() == "upgrade"
    assert h.get("sec-websocket-accept", "").encode() == accept_key(key)
    for size in (0, 1, 125, 126, 65535, 65536, 300000):
        msg = os.urandom(size)
        s.sendall(frame(2, msg, True))
        op, data = read_frame(s)
        assert (op, data) == (2, msg), "size %d" % size
    s.sendall(frame(8, struct.pack("!H", 1000), True))
    op, data = read_frame(s)
    assert op == 8
    assert s.recv(10) == b""  # both sides closed after the close handshake
    s.close()
    # The app saw an upgrade request carried by the server proxy (mTLS
    # between proxies: the client's identity in XFCC).
    (_, req), = app.requests
    assert req["upgrade"].lower() == "websocket"
    assert "spiffe://cluster.local/ns/default/sa/client" in req.get(
        "x-forwarded-client-cert", ""), req
    st = server.stats()
    assert st.get("ssl.handshake", 0) >= 1, st


def test_server_speaks_right_after_101(mesh):
    """Frames the app sends in the same write as its 101 reach the client."""
    client, _, _ = mesh(greet=True)
    s, status, _, _ = ws_connect(client.out_port)
    assert status.startswith("HTTP/1.1 101")
    assert read_frame(s) == (1, b"welcome")
    s.sendall(frame(1, b"bye", True))
    op, _ = read_frame(s)
    assert op == 8
    assert s.recv(10) == b""
    s.close()


def test_many_websockets_at_once(mesh):
    client, _, _ = mesh()
    socks = []
    for i in range(20):
        s, status, _, _ = ws_connect(client.out_port)
        assert status.startswith("HTTP/1.1 101")
        socks.append(s)
    for round_ in range(5):
        for i, s in enumerate(socks):
            s.sendall(frame(1, b"%d/%d" % (i, round_), True))
        for i, s in enumerate(socks):
            assert read_frame(s) == (1, b"%d/%d" % (i, round_))
    for s in socks:
        s.close()


def test_upgrade_not_allowed_is_refused(mesh):
    client, _, app = mesh()
    s, status, h, _ = ws_connect(client.out_port, upgrade="foo-proto")
    assert status.startswith("HTTP/1.1 403"), status
    body = s.recv(4096)
    assert b"foo-proto" in body and b"not allowed" in body, body
    s.close()
    assert not app.requests  # never reached the app


def test_app_refusing_the_upgrade(weft, backend):
    """The app answers the upgrade request with a plain response: the client
    gets it and the connection is not upgraded."""
    b = backend("plain")
    w = weft(config=service_entry("plain") + workload_entry("plain-1", b.port, app="plain"))
    s, status, h, _ = ws_connect(w.out_port, host="plain.default.svc.cluster.local")
    assert status.startswith("HTTP/1.1 200"), status
    assert "upgrade" not in h
    s.close()


def test_h2c_upgrade_is_served_as_http1(weft, backend):
    b = backend("plain")
    w = weft(config=service_entry("plain") + workload_entry("plain-1", b.port, app="plain"))
    s, status, h, _ = ws_connect(w.out_port, host="plain.default.svc.cluster.local",
                                 upgrade="h2c")
    assert status.startswith("HTTP/1.1 200"), status
    s.close()
