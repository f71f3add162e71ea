#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: repeatable where wall-clock
throughput on a shared 2-core machine varies by ±10% between runs.

    python3 bench/instructions.py BINARY [BINARY ...]

Each binary runs under `valgrind --tool=callgrind` behind the benchmark's stack (the test
provider, Redis, an nginx upstream), logs in, serves 300 warm-up calls, then exactly N proxied
calls (keep-alive, one at a time) between a zeroing and a dump of its counters; the figure is
the dump's instruction total divided by N. Prints one line per binary, then the ratio of each to
the first. Needs valgrind, redis-server, nginx and node (bench/run installs the last three).
"""

import http.client
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vbench.clients import login  # noqa: E402
from vbench.context import CALLBACK, CSRF, PATH, SESSION_COOKIE, WORK  # noqa: E402
from vbench.processes import free_port, stop, stop_all  # noqa: E402
from vbench.servers import start_provider, start_redis, start_upstream, start_vestibule  # noqa: E402

CALLS = int(os.environ.get("CALLS", "3000"))
WARM_UP = 300
KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="


def calls(port, cookie, count):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"}
    for _ in range(count):
        connection.request("GET", PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"a proxied call answered {response.status}")
    connection.close()


def callgrind_control(*args):
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def measure(binary, issuer, upstream_port, port, index):
    redis_port, redis = start_redis(f"instructions-redis-{index}")
    name = f"instructions-{index}"
    directory = os.path.join(WORK, name)
    out = os.path.join(directory, "callgrind.out")
    valgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no")
    process = start_vestibule(name, port, issuer, upstream_port, KEY, redis_port,
                              binary=binary, launcher=valgrind, start_timeout=180)
    cookie = login(f"http://127.0.0.1:{port}/api/auth/login", SESSION_COOKIE)
    calls(port, cookie, WARM_UP)
    callgrind_control("--zero", str(process.pid))
    calls(port, cookie, CALLS)
    callgrind_control("--dump=measured", str(process.pid))
    time.sleep(1)
    stop(process)
    stop(redis)
    dumps = [name for name in os.listdir(directory) if name.startswith("callgrind.out")]
    total = None
    for name in dumps:
        with open(os.path.join(directory, name)) as f:
            text = f.read()
        if "measured" in text:
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
            total = int(match.group(1)) if match else None
    if total is None:
        sys.exit(f"no callgrind dump with the measured calls in {directory}")
    return total / CALLS


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    try:
        upstream_port, _ = start_upstream()
        ports = [free_port() for _ in binaries]
        issuer, _ = start_provider("instructions-provider",
                                   [f"http://127.0.0.1:{p}{CALLBACK}" for p in ports], 3600)
        figures = [measure(binary, issuer, upstream_port, port, i)
                   for i, (binary, port) in enumerate(zip(binaries, ports))]
    finally:
        stop_all()
    for binary, figure in zip(binaries, figures):
        print(f"{binary}: {figure:,.0f} instructions per proxied call "
              f"({figure / figures[0]:.3f} x the first)")


if __name__ == "__main__":
    main()
