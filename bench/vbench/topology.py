"""The production-like pieces around Vestibule (issue 12): an nginx load balancer in front of
several instances, a 3-master Redis Cluster and Toxiproxy, the latency-injecting TCP proxy
put between Vestibule and Redis. Each is our own process on free loopback ports, stopped by
PID like every other server of the benchmark."""

import json
import os
import socket
import subprocess
import time
import urllib.request

from .context import WORK, Skip, log
from .processes import free_port, port_open, start, stop, tail, wait_for
from .resp import redis_cmd, redis_info
from .servers import start_nginx

# bench/run installs Toxiproxy with `go install` (only when missing) and names it here.
TOXIPROXY_SERVER = os.environ.get("TOXIPROXY_SERVER", "")


# --------------------------------------------------------------------------------------
# nginx as the load balancer
# --------------------------------------------------------------------------------------
def start_balancer(name, port, instances):
    """nginx on 127.0.0.1:`port` balancing over `instances` (ports): round-robin, no
    stickiness, keep-alive to the instances. `max_fails=0` as in the test harness
    (tests/integration/harness/nginx.rs): open-source nginx has no active health checks, so
    an instance is never marked down for fail_timeout; a refused connection moves on."""
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in instances)
    body = f"""  upstream vestibule {{
{servers}
    keepalive 64;
    keepalive_requests 10000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://vestibule;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}"""
    p = start_nginx(name, body)
    wait_for(name, lambda: port_open(port), p, 15, name)
    return p


# --------------------------------------------------------------------------------------
# Redis Cluster: three masters, no replicas
# --------------------------------------------------------------------------------------
def cluster_port():
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        p = free_port()
        if p + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p
    raise Skip("no free port pair (port, port + 10000) for a Redis Cluster node")


def start_redis_cluster(name, masters=3):
    """`masters` `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create
    --cluster-replicas 0`; returns (ports, Popens) once every node reports cluster_state:ok."""
    ports, procs = [], []
    for i in range(masters):
        port = cluster_port()
        d = os.path.join(WORK, f"{name}-{i}")
        os.makedirs(d, exist_ok=True)
        p = start(f"{name}-{i}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                                  "--save", "", "--appendonly", "no", "--daemonize", "no",
                                  "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "5000"])
        wait_for(f"{name}-{i}", lambda port=port: _pong(port), p, 15, f"{name}-{i}")
        ports.append(port)
        procs.append(p)
    r = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       capture_output=True, text=True, timeout=60)
    with open(os.path.join(WORK, "logs", f"{name}-create.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise Skip(f"redis-cli --cluster create failed: {(r.stdout + r.stderr).strip()[-300:]}")

    def ok():
        try:
            return all(redis_info(p, "cluster").get("cluster_enabled") == "1"
                       and "cluster_state:ok" in redis_cmd(p, "CLUSTER", "INFO") for p in ports)
        except (OSError, RuntimeError):
            return False

    wait_for(f"{name} (cluster_state:ok on every node)", ok, None, 30)
    return ports, procs


def _pong(port):
    try:
        return redis_cmd(port, "PING") == "PONG"
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# Toxiproxy: a TCP proxy that adds latency
# --------------------------------------------------------------------------------------
class Toxiproxy:
    """One toxiproxy-server (its HTTP API on a free port) and the proxies made through it."""

    def __init__(self, name="toxiproxy"):
        if not TOXIPROXY_SERVER or not os.access(TOXIPROXY_SERVER, os.X_OK):
            raise Skip("Toxiproxy is not installed (bench/run installs it with `go install "
                       "github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0`; it needs Go)")
        self.api_port = free_port()
        self.name = name
        self.proc = start(name, [TOXIPROXY_SERVER, "-host", "127.0.0.1", "-port", str(self.api_port)])
        wait_for(name, lambda: port_open(self.api_port), self.proc, 15, name)
        self.version = self._call("GET", "/version")

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
        except OSError as e:
            raise Skip(f"Toxiproxy API {method} {path}: {e}{tail(self.name)}") from None
        try:
            return json.loads(text)
        except ValueError:
            return text.strip()

    def proxy(self, name, upstream_port):
        """A proxy from a free loopback port to 127.0.0.1:upstream_port; returns its port."""
        port = free_port()
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{port}",
                                        "upstream": f"127.0.0.1:{upstream_port}", "enabled": True})
        wait_for(f"Toxiproxy proxy {name}", lambda: port_open(port), self.proc, 10, self.name)
        return port

    def set_latency(self, proxy, ms):
        """`ms` added to every answer (downstream), so one round trip costs `ms` more; 0 removes it.
        Toxiproxy's latency toxic is a delay line: each chunk waits until `ms` after it arrived,
        so pipelined commands are not serialised behind each other."""
        toxics = self._call("GET", f"/proxies/{proxy}/toxics") or []
        if any(t.get("name") == "latency" for t in toxics):
            self._call("DELETE", f"/proxies/{proxy}/toxics/latency")
        if ms:
            self._call("POST", f"/proxies/{proxy}/toxics", {
                "name": "latency", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                "attributes": {"latency": ms, "jitter": 0}})

    def stop(self):
        stop(self.proc)


def ping_p50_ms(port, n=2000):
    """Median round trip of PING on one connection to 127.0.0.1:port, in ms (one command at a
    time: this is the latency one uncached Redis call adds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise OSError("connection closed")
                got += chunk
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    log(f"  PING via :{port}: p50 {times[len(times) // 2]:.3f} ms over {n}")
    return round(times[len(times) // 2], 3)
