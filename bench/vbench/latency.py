"""Issue 34's added latency: what one proxied call through Vestibule adds over a direct call to
the upstream, beside what the nginx proxy adds. One keep-alive connection per target (the
upstream nginx directly, the nginx proxy, Vestibule with Redis and a logged-in session on the
usual /api route), requests one at a time from this process with http.client, the same
request (path, cookie and X-CSRF headers: the upstream and nginx ignore them) to all three so
the client's own cost is the same; the targets take turns in blocks, the order rotated each
round, so a busier moment of the machine does not weigh on one target only. Figures: p50 and
p99 per target and the differences to the direct call (a difference of percentiles, not a
percentile of differences). A figure, not a target. A mixin of load.Bench, which supplies
quick, key, up_port, res, problems, not_measured, vestibule_login and prove_vestibule."""

import gc
import http.client
import math
import time
import traceback

from .context import CALLBACK, CSRF, FOREIGN_LIMIT, PATH, SESSION_COOKIE, Skip, log
from .processes import Contention, free_port, stop
from .servers import start_nginx_proxy, start_provider, start_redis, start_vestibule

# The three targets, in the report's order, and what the upstream must have seen from each.
TARGETS = ("direct", "nginx_proxy", "vestibule_redis")
EXPECTED_BEARER = {"direct": "no", "nginx_proxy": "no", "vestibule_redis": "yes"}
# Requests per target in one turn before the next target's.
BLOCK = 100
# The published figures (null with a reason when the part fails).
FIELDS = ("added_latency_p50_ms", "added_latency_p99_ms",
          "nginx_added_latency_p50_ms", "nginx_added_latency_p99_ms")


def percentile(sorted_values, q):
    """The nearest-rank percentile `q` (0-1) of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class Target:
    """One keep-alive connection to one target and its timed calls."""

    def __init__(self, name, port, headers):
        self.name, self.port, self.headers = name, port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.times_ns = []
        self.reconnects = 0

    def call(self, record):
        """One GET PATH, timed from sending to the last byte read; raises on anything but 200
        with the expected X-Saw-Bearer."""
        opened = self.conn.sock is not None
        t0 = time.perf_counter_ns()
        self.conn.request("GET", PATH, headers=self.headers)
        r = self.conn.getresponse()
        r.read()
        t1 = time.perf_counter_ns()
        if r.status != 200 or r.getheader("X-Saw-Bearer") != EXPECTED_BEARER[self.name]:
            raise Skip(f"{self.name} answered {r.status}, X-Saw-Bearer={r.getheader('X-Saw-Bearer')}")
        if record:
            self.times_ns.append(t1 - t0)
            # http.client reopens a closed connection silently: the call then paid a connect
            self.reconnects += not opened

    def figures(self):
        ms = sorted(t / 1e6 for t in self.times_ns)
        return {"p50_ms": round(percentile(ms, 0.50), 3), "p99_ms": round(percentile(ms, 0.99), 3),
                "mean_ms": round(sum(ms) / len(ms), 3), "max_ms": round(ms[-1], 3),
                "calls": len(ms), "reconnects": self.reconnects}

    def close(self):
        self.conn.close()


class AddedLatency:

    def run_added_latency(self):
        """Starts an nginx proxy and a Vestibule (own provider and Redis) in front of the
        shared upstream, then times calls one at a time on each target's keep-alive connection."""
        calls, warm = (300, 100) if self.quick else (3000, 500)
        for k in FIELDS:
            self.res[k] = None
        started, targets = [], []
        try:
            pport, px = start_nginx_proxy(self.up_port)
            started.append(px)
            vport = free_port()
            issuer, op = start_provider("provider-latency", [f"http://127.0.0.1:{vport}{CALLBACK}"], 3600)
            started.append(op)
            rport, rp = start_redis("redis-latency-added")
            started.append(rp)
            v = start_vestibule("vestibule-latency", vport, issuer, self.up_port, self.key, rport)
            started.append(v)
            cookie = self.vestibule_login(vport)
            self.prove_vestibule("added-latency", vport, cookie)
            headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"}
            ports = {"direct": self.up_port, "nginx_proxy": pport, "vestibule_redis": vport}
            targets = [Target(name, ports[name], headers) for name in TARGETS]
            log(f"added latency: {warm} warm-up then {calls} calls one at a time per target, keep-alive, "
                f"in turns of {BLOCK}")
            for t in targets:
                for _ in range(warm):
                    t.call(record=False)
            gc_was_on = gc.isenabled()
            gc.disable()  # no collection pause inside one target's turn
            try:
                with Contention() as busy:
                    for i in range(math.ceil(calls / BLOCK)):
                        shift = i % len(targets)
                        for t in targets[shift:] + targets[:shift]:
                            for _ in range(min(BLOCK, calls - i * BLOCK)):
                                t.call(record=True)
            finally:
                if gc_was_on:
                    gc.enable()
            by = {t.name: t.figures() for t in targets}
            d, n, ve = by["direct"], by["nginx_proxy"], by["vestibule_redis"]

            def over(a, b):
                return {"p50_ms": round(a["p50_ms"] - b["p50_ms"], 3), "p99_ms": round(a["p99_ms"] - b["p99_ms"], 3)}

            self.res["added_latency"] = {
                "calls_per_target": calls, "warm_up_per_target": warm, "turn": BLOCK,
                "targets": by,
                "vestibule_over_direct": over(ve, d),
                "nginx_proxy_over_direct": over(n, d),
                "vestibule_over_nginx_proxy": over(ve, n),
                "foreign_cpu_percent": round(busy.foreign_percent, 1),
            }
            self.res["added_latency_p50_ms"] = over(ve, d)["p50_ms"]
            self.res["added_latency_p99_ms"] = over(ve, d)["p99_ms"]
            self.res["nginx_added_latency_p50_ms"] = over(n, d)["p50_ms"]
            self.res["nginx_added_latency_p99_ms"] = over(n, d)["p99_ms"]
            log("  " + "; ".join(f"{name} p50 {f['p50_ms']:.3f} ms p99 {f['p99_ms']:.3f} ms" for name, f in by.items())
                + f"; added by Vestibule p50 {self.res['added_latency_p50_ms']:.3f} ms p99 "
                f"{self.res['added_latency_p99_ms']:.3f} ms, by nginx p50 {self.res['nginx_added_latency_p50_ms']:.3f}"
                f" ms p99 {self.res['nginx_added_latency_p99_ms']:.3f} ms")
            if busy.foreign_percent > FOREIGN_LIMIT:
                self.problems.append(f"added latency: the machine was busy with other processes "
                                     f"({busy.foreign_percent:.0f}% CPU not from this benchmark): not comparable")
            for name, f in by.items():
                if f["reconnects"]:
                    self.problems.append(f"added latency: {name}'s keep-alive connection was reopened "
                                         f"{f['reconnects']} time(s) (those calls paid a connect)")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.res["added_latency"] = {"not_measured": f"{type(e).__name__}: {e}"}
            for k in FIELDS:
                self.not_measured(k, f"{type(e).__name__}: {e}")
        finally:
            for t in targets:
                t.close()
            for p in reversed(started):
                stop(p)
