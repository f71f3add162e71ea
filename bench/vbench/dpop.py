"""Issue 33's DPoP cost: Vestibule's CPU per proxied call when the session's token is DPoP-bound
(`Authorization: DPoP` plus a proof signed per call with the session's key) against the same
call with a Bearer token. One Vestibule on Redis, two logins on the same route and upstream;
the second session is bound to a key of its own by examples/dpop_bind.rs (the record a DPoP
login writes: the key sealed in it, the token marked bound), so the only difference between
the two loads is the binding. Loaded alternately (bearer first, then DPoP first, ...); per
session the median of its runs' CPU seconds / requests. Target: DPoP <= 1.3 x bearer. A mixin
of load.Bench, which supplies key, quick, runs, up_port, res, problems, not_measured and load."""

import http.client
import json
import os
import statistics
import subprocess
import traceback

from .context import CALLBACK, CSRF, PATH, ROOT, SESSION_COOKIE, Skip, log
from .processes import free_port, stop
from .servers import UNLIMITED_LOGINS, start_provider, start_redis, start_vestibule

# Rewrites one record; its speed does not matter, so it is always the debug build.
DPOP_BIND_BIN = os.path.join(ROOT, "target", "debug", "examples", "dpop_bind")
# The target: a bound call costs at most this many times a bearer call's CPU.
DPOP_CPU_LIMIT = 1.3


def probe_scheme(port, cookie):
    """One GET PATH with the session's cookie: (status, the scheme the upstream saw)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", PATH, headers={"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"})
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("X-Saw-Scheme")
    finally:
        c.close()


class Dpop:

    def build_dpop_bind(self):
        """Builds examples/dpop_bind.rs (debug; bench/run already did for --quick)."""
        b = subprocess.run(["cargo", "build", "--locked", "--example", "dpop_bind"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
        if b.returncode != 0 and not os.path.exists(DPOP_BIND_BIN):
            raise Skip("cannot build the dpop_bind example: " + b.stderr[-300:])

    def run_dpop_cost(self):
        """Bearer and DPoP-bound sessions loaded alike; Vestibule CPU microseconds per call."""
        fields = ("dpop_cpu_ratio", "dpop_cpu_us_per_call", "bearer_cpu_us_per_call")
        for k in fields:
            self.res[k] = None
        started = []
        try:
            self.build_dpop_bind()
            port = free_port()
            issuer, op = start_provider("provider-dpop", [f"http://127.0.0.1:{port}{CALLBACK}"], 3600)
            started.append(op)
            rport, rp = start_redis("redis-dpop")
            started.append(rp)
            v = start_vestibule("vestibule-dpop", port, issuer, self.up_port, self.key, rport,
                                extra=UNLIMITED_LOGINS)
            started.append(v)
            cookies = {"bearer": self.vestibule_login(port), "dpop": self.vestibule_login(port)}
            bound = subprocess.run([DPOP_BIND_BIN, "--redis", f"redis://127.0.0.1:{rport}", "--key", self.key,
                                    "--cookie", cookies["dpop"]], capture_output=True, text=True, timeout=60)
            if bound.returncode != 0:
                raise Skip(f"dpop_bind failed: {bound.stderr[-300:]}")
            thumbprint = json.loads(bound.stdout)["thumbprint"]
            for name, scheme in (("bearer", "Bearer"), ("dpop", "DPoP")):
                s, saw = probe_scheme(port, cookies[name])
                log(f"  {name} session: {s}, the upstream saw {saw}")
                if s != 200 or saw != scheme:
                    raise Skip(f"the {name} session's call answered {s}, the upstream saw {saw}, not {scheme}")
            runs = {name: [] for name in cookies}
            total_runs, self.runs = self.runs, 1
            try:
                for i in range(total_runs):
                    for name in (("bearer", "dpop") if i % 2 == 0 else ("dpop", "bearer")):
                        hdr = [f"Cookie: {SESSION_COOKIE}={cookies[name]}", f"{CSRF}: 1"]
                        self.load(f"dpop_{name}", port, hdr, v.pid, redis_port=rport)
                        r = self.cfg.pop(f"dpop_{name}")
                        # CPU seconds per second / calls per second = CPU seconds per call.
                        r["cpu_us_per_call"] = r["cpu_percent"] / 100 / r["rps"] * 1e6 if r["rps"] else None
                        runs[name].append(r)
            finally:
                self.runs = total_runs
            per_call = {name: statistics.median(r["cpu_us_per_call"] for r in rs) for name, rs in runs.items()}
            ratio = round(per_call["dpop"] / per_call["bearer"], 3)
            self.res["dpop_cost"] = {
                name: {"cpu_us_per_call": round(per_call[name], 1),
                       "rps": statistics.median(r["rps"] for r in rs),
                       "cpu_percent": statistics.median(r["cpu_percent"] for r in rs),
                       "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                       "runs_cpu_us_per_call": [round(r["cpu_us_per_call"], 1) for r in rs]}
                for name, rs in runs.items()
            }
            self.res["dpop_cost"]["key_thumbprint"] = thumbprint
            self.res["dpop_cpu_ratio"] = ratio
            self.res["dpop_cpu_us_per_call"] = round(per_call["dpop"], 1)
            self.res["bearer_cpu_us_per_call"] = round(per_call["bearer"], 1)
            log(f"  Vestibule CPU per call: bearer {per_call['bearer']:.1f} us, DPoP {per_call['dpop']:.1f} us: "
                f"x{ratio} (target <= {DPOP_CPU_LIMIT})")
            s, saw = probe_scheme(port, cookies["dpop"])
            if s != 200 or saw != "DPoP":
                self.problems.append(f"dpop cost: the bound session's call after the load answered {s}, "
                                     f"the upstream saw {saw}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for k in fields:
                if self.res.get(k) is None:
                    self.not_measured(k, f"{type(e).__name__}: {e}")
        finally:
            for p in reversed(started):
                stop(p)
