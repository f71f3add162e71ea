"""The WebSocket client of the WebSocket part: many sockets held in one asyncio loop, one
Protocol each (no task per socket), so 10,000 idle sockets cost little. Each socket notes
when and how it was closed (the close frame's code and reason, or none) on the monotonic
clock, the moment its bytes arrived. Standard library only."""

import asyncio
import time

from .wsproto import BINARY, CLOSE, PING, PONG, TEXT, accept_value, close_payload, frame, new_key, parse_close, take_frames


class WsClient(asyncio.Protocol):
    """One client socket: the handshake, then message round trips and the close."""

    def __init__(self, request, key, tag=None):
        self.request = request
        self.accept = accept_value(key)
        self.tag = tag  # e.g. the session it belongs to
        self.transport = None
        self.buf = bytearray()
        self.opened = asyncio.get_running_loop().create_future()
        self.reply = None  # the future of the answer awaited, if any
        self.closed_at = None
        self.close_code = None
        self.close_reason = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        now = time.monotonic()
        self.buf += data
        if not self.opened.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "101" or self.accept not in head:
                self.opened.set_exception(RuntimeError(f"handshake answered {head.splitlines()[0]!r}"))
                self.transport.close()
                return
            self.opened.set_result(None)
        for opcode, payload in take_frames(self.buf):
            if opcode in (TEXT, BINARY):
                if self.reply is not None and not self.reply.done():
                    self.reply.set_result(payload)
            elif opcode == PING:
                self.transport.write(frame(PONG, payload, mask=True))
            elif opcode == CLOSE:
                self.ended(now, *parse_close(payload))
                self.transport.close()
                return

    def connection_lost(self, exc):
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(f"connection lost during the handshake: {exc}"))
        self.ended(time.monotonic(), None, "connection lost without a close frame")

    def ended(self, at, code, reason):
        if self.closed_at is None:
            self.closed_at, self.close_code, self.close_reason = at, code, reason
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(RuntimeError(f"closed ({code} {reason}) while a reply was awaited"))

    async def round_trip(self, payload, timeout=10):
        """Sends one text message and waits for its echo; returns the seconds it took."""
        self.reply = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.transport.write(frame(TEXT, payload, mask=True))
        got = await asyncio.wait_for(self.reply, timeout)
        took = time.perf_counter() - t0
        if got != payload:
            raise RuntimeError("the echo differs from the message")
        return took

    def close(self):
        """A normal close frame, then the connection (the peers need not answer)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(CLOSE, close_payload(1000), mask=True))
            self.transport.close()


def upgrade_request(port, path, headers):
    """The handshake of one socket to 127.0.0.1:port: (request bytes, key)."""
    key = new_key()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


async def open_many(port, path, headers_for, count, in_flight=200, timeout=30):
    """Opens `count` sockets (headers_for(i) -> (headers, tag)), at most `in_flight`
    handshakes at once; returns (the open sockets, [error texts])."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(in_flight)
    opened, errors = [], []

    async def one(i):
        headers, tag = headers_for(i)
        request, key = upgrade_request(port, path, headers)
        async with gate:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(lambda: WsClient(request, key, tag), "127.0.0.1", port), timeout)
                await asyncio.wait_for(client.opened, timeout)
                opened.append(client)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one(i) for i in range(count)))
    return opened, errors


async def echo_each(sockets, payload=b"ping", in_flight=500):
    """One round trip on every socket (at most `in_flight` at once); returns the errors."""
    gate = asyncio.Semaphore(in_flight)
    errors = []

    async def one(s):
        async with gate:
            try:
                await s.round_trip(payload)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one(s) for s in sockets))
    return errors


async def rtt_ms(sockets, total, payload=b'{"type":"tick","n":12345}'):
    """`total` round trips one at a time, spread over `sockets`; the milliseconds of each."""
    out = []
    for i in range(total):
        out.append(await sockets[i % len(sockets)].round_trip(payload) * 1000)
    return out


def close_all(sockets):
    for s in sockets:
        s.close()
