"""The store-scale part: Redis filled with sessions by examples/store_fill.rs (the real session
store, Keycloak-sized tokens) in steps, the proxied p50 of one logged-in session measured at
each step, and Redis's memory per session. Full mode goes to 1,000,000 sessions (issue 12).
A mixin of load.Bench, which supplies key, quick, up_port, res, notes, problems and
not_measured."""

import json
import os
import statistics
import subprocess
import time
import traceback

from .clients import wrk
from .context import CALLBACK, FOREIGN_LIMIT, PROFILE, ROOT, SESSION_COOKIE, CSRF, STORE_FILL_BIN, STORE_FILL_SRC, Skip, log
from .processes import Contention, free_port, stop, vm_hwm_mb
from .resp import redis_cmd, redis_info
from .servers import start_provider, start_redis, start_vestibule

# One fill may take this long (1,000,000 sessions take about a minute on 2 cores).
FILL_TIMEOUT_S = 900
# Load rounds at each step; the figures are their median.
STORE_ROUNDS = 3


def label(n):
    """1000 -> "1k", 1000000 -> "1m": the name of a step in the figures' keys."""
    return f"{n // 1000000}m" if n % 1000000 == 0 else f"{n // 1000}k"


class StoreScale:

    def build_store_fill(self):
        """Builds examples/store_fill.rs (bench/run already did; this is for bench.py alone)."""
        b = subprocess.run(["cargo", "build", "--locked", "--example", "store_fill"]
                           + (["--release"] if PROFILE == "release" else []),
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
        if b.returncode != 0:
            err = b.stderr.strip().splitlines()
            err = " / ".join(line for line in err if line.startswith("error"))[:300] or b.stderr[-300:]
            if not os.path.exists(STORE_FILL_BIN):
                raise Skip("cannot build the store_fill example: " + err)
            built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(STORE_FILL_BIN)))
            self.res["store_fill_note"] = f"build failed ({err}); used the existing binary built {built}"
            log(f"  WARNING: store_fill {self.res['store_fill_note']}")

    def run_store_scale(self):
        """Sessions in Redis: 1k, then 100k, then 1M (quick: 1k, 10k); at each step the
        proxied p50 of one logged-in session, and Redis's used_memory at the largest."""
        steps = (1000, 10000) if self.quick else (1000, 100000, 1000000)
        small, large = steps[0], steps[-1]
        self.res["store_sessions_small"] = small
        self.res["store_sessions_large"] = large
        self.res["store_sessions_steps"] = list(steps)
        fields = ["redis_bytes_per_session", "p50_ms_1k_sessions", "p50_ms_100k_sessions",
                  "p50_ms_1m_sessions", "redis_used_memory_mb_largest"]
        for k in fields:
            self.res[k] = None
        if not os.path.exists(STORE_FILL_SRC):
            for k in fields:
                self.not_measured(k, "not measured: store_fill example missing (examples/store_fill.rs)")
            return
        started = []
        try:
            self.build_store_fill()
            sport, sp = start_redis("redis-store")
            started.append(sp)
            mem0 = int(redis_info(sport, "memory")["used_memory"])
            keys0 = redis_cmd(sport, "DBSIZE")
            fills = {}

            def fill(n, upto):
                """n more sessions, by store_fill's 64 concurrent creates on one multiplexed
                (so pipelined) connection."""
                t0 = time.monotonic()
                r = subprocess.run([STORE_FILL_BIN, "--redis", f"redis://127.0.0.1:{sport}",
                                    "--count", str(n), "--key", self.key],
                                   capture_output=True, text=True, timeout=FILL_TIMEOUT_S)
                if r.returncode != 0:
                    raise Skip(f"store_fill failed: {r.stderr.strip()[-400:]}")
                reply = json.loads(r.stdout.strip().splitlines()[-1])
                if "plaintext_bytes" in reply:
                    self.res["store_fill_plaintext_bytes"] = reply["plaintext_bytes"]
                took = time.monotonic() - t0
                fills[label(upto)] = {"sessions_added": reply["created"], "seconds": round(took, 1),
                                      "sessions_per_s": round(reply["created"] / took) if took else None}
                log(f"  store_fill: {reply['created']} sessions in {took:.1f} s (now {upto})")

            port = free_port()
            issuer, op = start_provider("provider-store", [f"http://127.0.0.1:{port}{CALLBACK}"], 3600)
            started.append(op)
            v = start_vestibule("vestibule-store", port, issuer, self.up_port, self.key, sport)
            started.append(v)
            cookie = self.vestibule_login(port)
            self.prove_vestibule("store", port, cookie)
            hdr = [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"]
            dur = 2 if self.quick else 5
            have = 0
            for n in steps:
                fill(n - have, n)
                have = n
                wrk(port, 1, hdr)
                # The median of several rounds: one round right after a fill that left Redis
                # with gigabytes measures the machine settling as much as Vestibule.
                with Contention() as busy:
                    rounds = [wrk(port, dur, hdr, name=f"store {n} round {i + 1}")
                              for i in range(STORE_ROUNDS)]
                r = {k: statistics.median(x[k] for x in rounds) for k in ("p50_ms", "p99_ms", "rps")}
                self.res[f"p50_ms_{label(n)}_sessions"] = r["p50_ms"]
                self.res[f"p99_ms_{label(n)}_sessions"] = r["p99_ms"]
                fills[label(n)]["p50_ms_rounds"] = [x["p50_ms"] for x in rounds]
                fills[label(n)]["foreign_cpu_percent"] = round(busy.foreign_percent, 1)
                if busy.foreign_percent > FOREIGN_LIMIT:
                    self.problems.append(f"store scale at {n} sessions: the machine was busy with other "
                                         f"processes ({busy.foreign_percent:.0f}% CPU): not comparable")
                log(f"  {n} sessions: p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms {r['rps']:.0f} req/s "
                    f"other-procs CPU {busy.foreign_percent:.0f}%")
            mem = redis_info(sport, "memory")
            mem1 = int(mem["used_memory"])
            keys1 = redis_cmd(sport, "DBSIZE")
            n = keys1 - keys0
            try:
                sample = redis_cmd(sport, "RANDOMKEY")
                self.res["redis_sample_key_memory_usage"] = redis_cmd(sport, "MEMORY", "USAGE", sample)
                self.res["redis_sample_key_type"] = redis_cmd(sport, "TYPE", sample)
                if self.res["redis_sample_key_type"] == "string":
                    self.res["redis_sample_value_bytes"] = redis_cmd(sport, "STRLEN", sample)
            except Exception:  # noqa: BLE001
                pass
            self.res["store_fill"] = fills
            # Per session, not per key: a session is its record, its escrowed refresh token and
            # its entries in the user, provider-session and live indexes.
            sessions = sum(step["sessions_added"] for step in fills.values())
            self.res["redis_keys_per_session"] = round(n / sessions, 2) if sessions else None
            self.res["redis_bytes_per_session"] = round((mem1 - mem0) / sessions, 1) if sessions else None
            self.res["redis_keys_after_fill"] = keys1
            self.res["redis_used_memory_mb_largest"] = round(mem1 / 2**20, 1)
            self.res["redis_used_memory_rss_mb_largest"] = round(int(mem["used_memory_rss"]) / 2**20, 1)
            for n in (100000, 1000000):
                if n not in steps:
                    self.res.pop(f"p50_ms_{label(n)}_sessions", None)
                    self.notes[f"p50_ms_{label(n)}_sessions"] = (
                        f"quick mode: {large} sessions at most (see p50_ms_{label(large)}_sessions)")
            p_small, p_large = self.res["p50_ms_1k_sessions"], self.res[f"p50_ms_{label(large)}_sessions"]
            self.res["p50_ratio_largest_to_1k_sessions"] = round(p_large / p_small, 3) if p_small else None
            log(f"  {(mem1 - mem0) / max(n, 1):.0f} bytes/session over {n} keys; used_memory "
                f"{mem1 / 2**20:.0f} MB at {large}; p50 {p_small} ms at {small}, {p_large} ms at {large}")
            self.peak_rss["vestibule_store"] = round(vm_hwm_mb(v.pid), 1)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for k in fields:
                if self.res.get(k) is None and k not in self.notes:
                    self.not_measured(k, f"{type(e).__name__}: {e}")
        finally:
            for p in reversed(started):
                stop(p)
