"""The little of RFC 6455 the WebSocket part needs, for the echo upstream (wsecho.py) and the
client (wsclient.py): the handshake's accept value, building a frame, and taking whole frames
off a buffer. No extensions, no fragmented messages (each message here is one frame), frames
up to 2^63 bytes. Standard library only."""

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def new_key():
    """A fresh Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_value(key):
    """The Sec-WebSocket-Accept answering `key` (str or bytes), RFC 6455 §4.2.2."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest()).decode()


def frame(opcode, payload=b"", mask=False):
    """One final frame; a client's frames are masked (§5.3)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    m = os.urandom(4)
    return head + m + unmask(payload, m)


def unmask(payload, m):
    """XOR with the 4-byte mask (its own inverse)."""
    if not payload:
        return b""
    n = len(payload)
    key = int.from_bytes((m * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def take_frames(buf):
    """Removes every whole frame from the bytearray `buf`; returns [(opcode, payload)],
    payloads unmasked."""
    out = []
    while len(buf) >= 2:
        b1 = buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        masked = b1 & 0x80
        if masked:
            if len(buf) < pos + 4:
                break
            m = bytes(buf[pos:pos + 4])
            pos += 4
        if len(buf) < pos + n:
            break
        payload = bytes(buf[pos:pos + n])
        if masked:
            payload = unmask(payload, m)
        out.append((buf[0] & 0x0F, payload))
        del buf[:pos + n]
    return out


def parse_close(payload):
    """(code, reason) of a close frame's payload; (None, "") when it has none."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")
