"""A minimal Redis client (RESP over one socket per command), enough to read INFO, count
keys and probe the store; the benchmark needs no Redis library."""

import re
import socket


def redis_cmd(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline().rstrip(b"\r\n")
    t, rest = line[:1], line[1:]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if t == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad RESP line {line!r}")


def redis_info(port, section):
    out = {}
    for line in redis_cmd(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def redis_cmdstats(port):
    """Command calls so far, per command, excluding INFO (our own probe)."""
    out = {}
    for k, v in redis_info(port, "commandstats").items():
        if k.startswith("cmdstat_") and k != "cmdstat_info":
            m = re.search(r"calls=(\d+)", v)
            if m:
                out[k[len("cmdstat_"):]] = int(m.group(1))
    return out


def redis_calls(port):
    return sum(redis_cmdstats(port).values())

def redis_count_keys(port, pattern):
    """Keys matching pattern, by SCAN (KEYS through EVAL would grow Redis's Lua memory)."""
    cursor, n = "0", 0
    while True:
        cursor, keys = redis_cmd(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        n += len(keys)
        if cursor == "0":
            return n
