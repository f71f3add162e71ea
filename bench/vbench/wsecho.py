"""A WebSocket echo upstream for the WebSocket part: `python3 -m vbench.wsecho PORT` (from
bench/) listens on 127.0.0.1:PORT, accepts any GET upgrade on any path, answers every text or
binary message with the same message, a ping with a pong, a close with a close. One asyncio
Protocol per connection (no streams, no task per socket), so 10,000 idle sockets cost a few
tens of MB. Stops on SIGTERM. Standard library only."""

import asyncio
import signal
import sys

from vbench.wsproto import BINARY, CLOSE, PING, PONG, TEXT, accept_value, frame, take_frames


class Echo(asyncio.Protocol):
    __slots__ = ("transport", "buf", "upgraded")

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.upgraded = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 16384:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            key = None
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            if key is None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()
                return
            self.transport.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_value(key)}\r\n\r\n")
                                 .encode())
            self.upgraded = True
        for opcode, payload in take_frames(self.buf):
            if opcode in (TEXT, BINARY):
                self.transport.write(frame(opcode, payload))
            elif opcode == PING:
                self.transport.write(frame(PONG, payload))
            elif opcode == CLOSE:
                self.transport.write(frame(CLOSE, payload[:2]))
                self.transport.close()
                return


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    stopped = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stopped.set_result, None)
    print(f"wsecho listening on 127.0.0.1:{port}", flush=True)
    await stopped
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
