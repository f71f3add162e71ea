"""The measurements: each config loaded with wrk (warm-up, runs, median), the login cost and
the refresh under load; the other parts are mixins (deploy: scale-out and Redis latency,
store: store scale, latency: the added latency of one call over a direct one, credentials:
Redis bytes per extra credential and the exchange and claim-rule routes' cost, dpop: a DPoP-bound call's CPU against a bearer call's, websockets: WebSockets through Vestibule and nginx, flood: login flood). A config or figure that cannot be measured is recorded with its reason (the run
then fails, see report.unmeasured)."""

import base64
import concurrent.futures
import contextlib
import secrets
import statistics
import time
import traceback

from .clients import login, probe, wrk
from .context import CALLBACK, CSRF, FOREIGN_LIMIT, PATH, SESSION_COOKIE, Skip, log
from .credentials import Credentials
from .deploy import Deploy
from .dpop import Dpop
from .flood import LoginFlood
from .latency import AddedLatency
from .processes import Contention, CpuMeter, free_port, stop, tail, vm_hwm_mb
from .resp import redis_cmdstats
from .store import StoreScale
from .websockets import WebSockets
from .servers import (provider_stats, start_apache, start_nginx_proxy, start_provider, start_redis,
                      start_upstream, start_vestibule)


# What --only can select: the five configs, then the extra measurements.
CONFIGS = ["direct", "nginx_proxy", "mod_auth_openidc", "vestibule_redis", "vestibule_memory"]
EXTRAS = ["added-latency", "refresh", "scale-out", "redis-latency", "store-scale", "credential-memory", "credential-cost",
          "dpop-cost", "websockets", "login-flood"]
PARTS = CONFIGS + EXTRAS


class Bench(Deploy, StoreScale, Credentials, Dpop, WebSockets, LoginFlood, AddedLatency):
    """One run: the selected parts, their figures (cfg, res), what could not be measured
    (failures, with the reason) and what was measured but is doubtful (problems)."""

    def __init__(self, quick, parts=PARTS):
        self.parts = list(parts)
        self.quick = quick
        self.duration = 2 if quick else 15
        self.warmup = 1 if quick else 3
        self.runs = 1 if quick else 3
        self.notes = {}  # field -> reason it is null
        self.cfg = {}
        self.cpu = {}
        self.res = {}
        self.problems = []
        self.failures = []  # "what: why" for everything selected that could not be measured
        self.peak_rss = {}
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()

    def not_measured(self, field, reason):
        self.notes[field] = reason
        self.failures.append(f"{field}: {reason}")
        log(f"NOT MEASURED {field}: {reason}")

    def load(self, name, port, headers, pid, redis_port=None, also=None, path=PATH):
        """Warm-up + `runs` measured runs of GET `path`; fills self.cfg[name]. `pid` may be
        a list (several instances: their CPU is added up); `redis_port` a list (a Cluster: the
        nodes' commands are added up); `also` {label: pid or [pids]} are the other processes
        whose CPU% is reported beside (`cpu_percent_<label>`: a load balancer, Redis)."""
        log(f"{name}: warm-up {self.warmup} s, then {self.runs} x {self.duration} s (-t2 -c32)")
        wrk(port, self.warmup, headers, name=f"{name} warm-up", path=path)
        runs, cpus, calls, reqs = [], [], {}, 0
        also = also or {}
        others = {label: [] for label in also}
        redis_ports = redis_port if isinstance(redis_port, (list, tuple)) else [redis_port] if redis_port else []

        def cmdstats():
            total = {}
            for rp in redis_ports:
                for cmd, n in redis_cmdstats(rp).items():
                    total[cmd] = total.get(cmd, 0) + n
            return total

        for i in range(self.runs):
            c0 = cmdstats()
            with contextlib.ExitStack() as meters:
                busy = meters.enter_context(Contention())
                m = meters.enter_context(CpuMeter(pid))
                side = {label: meters.enter_context(CpuMeter(p)) for label, p in also.items()}
                r = wrk(port, self.duration, headers, name=f"{name} run {i + 1}", path=path)
            for label, meter in side.items():
                others[label].append(meter.percent)
            r["foreign_cpu_percent"] = round(busy.foreign_percent, 1)
            if busy.foreign_percent > FOREIGN_LIMIT:
                self.problems.append(f"{name} run {i + 1}: the machine was busy with other processes "
                                     f"({busy.foreign_percent:.0f}% CPU not from this benchmark): not comparable")
            if redis_ports:
                for cmd, n in cmdstats().items():
                    calls[cmd] = calls.get(cmd, 0) + n - c0.get(cmd, 0)
                reqs += r["requests"]
            r["cpu_percent"] = round(m.percent, 1)
            runs.append(r)
            cpus.append(m.percent)
            log(f"  run {i + 1}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                f"CPU {m.percent:.0f}% non-2xx {r['non_2xx_3xx']} sock-err {r['socket_errors']} "
                f"other-procs CPU {r['foreign_cpu_percent']:.0f}%")
            if r["non_2xx_3xx"] or r["socket_errors"]:
                self.problems.append(f"{name} run {i + 1}: {r['non_2xx_3xx']} non-2xx/3xx, "
                                     f"{r['socket_errors']} socket errors")
        med = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        self.cfg[name] = {
            "rps": round(med["rps"], 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
            "runs": [round(r["rps"], 1) for r in runs],
            "cpu_percent": round(statistics.median(cpus), 1),
            "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "foreign_cpu_percent": [r["foreign_cpu_percent"] for r in runs],
        }
        for label, values in others.items():
            self.cfg[name][f"cpu_percent_{label}"] = round(statistics.median(values), 1)
        if redis_port and reqs:
            self.cfg[name]["redis_commands"] = {k: v for k, v in calls.items() if v}
            log(f"  Redis commands during the measured runs: {self.cfg[name]['redis_commands']} "
                f"for {reqs} requests")
            # wrk counts completed requests only; up to `runs x 32` requests still in flight when
            # it stops were served (and hit Redis) too, hence 2 decimals.
            self.cfg[name]["redis_calls_total"] = sum(calls.values())
            self.cfg[name]["redis_in_flight_bound"] = 32 * self.runs
            return sum(calls.values()) / reqs
        return None

    def config_failed(self, name, reason):
        self.cfg[name] = {"rps": None, "p50_ms": None, "p99_ms": None, "runs": [],
                          "not_measured": reason}
        self.failures.append(f"{name}: {reason}")
        log(f"NOT MEASURED {name}: {reason}")

    # ---------------------------------------------------------------- the configurations
    def run(self):
        """Runs the selected parts in their fixed order (the upstream first, if any needs it)."""
        want = set(self.parts)
        if want & (set(CONFIGS) | {"added-latency", "refresh", "scale-out", "redis-latency", "store-scale", "credential-cost", "dpop-cost"}):
            self.start_upstream()

        # 1. direct
        if "direct" in want:
            try:
                self.load("direct", self.up_port, [], self.up.pid)
            except Exception as e:  # noqa: BLE001
                self.config_failed("direct", str(e))

        # 2. nginx_proxy
        if "nginx_proxy" in want:
            try:
                pport, px = start_nginx_proxy(self.up_port)
                self.load("nginx_proxy", pport, [], px.pid)
                stop(px)
            except Exception as e:  # noqa: BLE001
                self.config_failed("nginx_proxy", str(e))

        # 3. mod_auth_openidc
        if "mod_auth_openidc" in want:
            try:
                self.run_modoidc()
            except Exception as e:  # noqa: BLE001
                self.config_failed("mod_auth_openidc", f"{type(e).__name__}: {e}")
                self.res["modoidc_redis_commands_per_request"] = None
                self.notes.setdefault("modoidc_redis_commands_per_request", "mod_auth_openidc not measured")

        # 4./5. Vestibule (one provider for both, long access-token lifetime: steady state)
        if want & {"vestibule_redis", "vestibule_memory"}:
            self.run_vestibule(want)
        if "added-latency" in want:
            self.run_added_latency()
        if "refresh" in want:
            self.run_refresh()
        if "scale-out" in want:
            self.run_scale_out()
        if "redis-latency" in want:
            self.run_redis_latency()
        if "store-scale" in want:
            self.run_store_scale()
        if "credential-memory" in want:
            self.run_credential_memory()
        if "credential-cost" in want:
            self.run_credential_cost()
        if "dpop-cost" in want:
            self.run_dpop_cost()
        if "websockets" in want:
            self.run_websockets()
        if "login-flood" in want:
            self.run_login_flood()

    def start_upstream(self):
        """The upstream every config proxies to, checked to tell a bearer token from none."""
        self.up_port, self.up = start_upstream()
        log(f"upstream nginx on 127.0.0.1:{self.up_port}")
        s, saw = probe(self.up_port, {})
        if s != 200 or saw != "no":
            raise Skip(f"upstream without a token answered {s}, X-Saw-Bearer={saw}")
        s, saw = probe(self.up_port, {"Authorization": "Bearer x"})
        if s != 200 or saw != "yes":
            raise Skip(f"upstream with a token answered {s}, X-Saw-Bearer={saw}")

    def run_modoidc(self):
        aport = free_port()
        issuer, op = start_provider("provider-apache", [f"http://127.0.0.1:{aport}/redirect_uri"], 3600)
        rport, rp = start_redis("redis-apache")
        ap = start_apache(aport, issuer, self.up_port, rport)
        log(f"mod_auth_openidc on 127.0.0.1:{aport}, provider {issuer}, its Redis :{rport}")
        try:
            cookie = login(f"http://127.0.0.1:{aport}{PATH}", "mod_auth_openidc_session")
        except Exception as e:
            raise Skip(f"login through mod_auth_openidc failed: {e}{tail('apache')}")
        hdr = [f"Cookie: mod_auth_openidc_session={cookie}"]
        s, saw = probe(aport, {"Cookie": f"mod_auth_openidc_session={cookie}"})
        s2, _ = probe(aport, {"Accept": "text/html"})  # a browser navigation
        log(f"  proof: with cookie {s} X-Saw-Bearer={saw}; without cookie {s2}")
        if s != 200 or saw != "yes":
            raise Skip(f"authenticated request answered {s}, X-Saw-Bearer={saw}")
        if not 300 <= s2 < 400:
            raise Skip(f"request without cookie answered {s2}, expected a redirect")
        cpr = self.load("mod_auth_openidc", aport, hdr, ap.pid, redis_port=rport)
        s, saw = probe(aport, {"Cookie": f"mod_auth_openidc_session={cookie}"})
        if s != 200 or saw != "yes":
            self.problems.append(f"mod_auth_openidc after load: {s} X-Saw-Bearer={saw}")
        self.res["modoidc_redis_commands_per_request"] = round(cpr, 2) if cpr is not None else None
        for p in (ap, rp, op):
            stop(p)

    def vestibule_login(self, port):
        return login(f"http://127.0.0.1:{port}/api/auth/login", SESSION_COOKIE)

    def prove_vestibule(self, name, port, cookie):
        h = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"}
        s, saw = probe(port, h)
        s2, _ = probe(port, {CSRF: "1"})
        log(f"  proof: with cookie {s} X-Saw-Bearer={saw}; without cookie {s2}")
        if s != 200 or saw != "yes":
            raise Skip(f"authenticated request answered {s}, X-Saw-Bearer={saw}")
        if s2 != 401:
            raise Skip(f"request without cookie answered {s2}, expected 401")

    def run_vestibule(self, want):
        names = [n for n in ("vestibule_redis", "vestibule_memory") if n in want]
        vr_port, vm_port = free_port(), free_port()
        try:
            issuer, op = start_provider(
                "provider", [f"http://127.0.0.1:{p}{CALLBACK}" for p in (vr_port, vm_port)], 3600)
        except Exception as e:  # noqa: BLE001
            for n in names:
                self.config_failed(n, f"provider: {e}")
            return
        log(f"provider {issuer}")
        # 4. vestibule_redis (with the login cost), 5. vestibule_memory
        for name, port, redis in (("vestibule_redis", vr_port, True), ("vestibule_memory", vm_port, False)):
            if name not in want:
                continue
            try:
                self.measure_vestibule(name, port, issuer, redis)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.config_failed(name, f"{type(e).__name__}: {e}")
        stop(op)

    def measure_vestibule(self, name, port, issuer, redis):
        """One Vestibule config: started, logged in, proven, loaded; its Redis (if any) kept for
        the refresh run."""
        rport = None
        if redis:
            rport, _ = start_redis("redis-vestibule")
            self.vr_redis = rport
        v = start_vestibule(name.replace("_", "-"), port, issuer, self.up_port, self.key, rport)
        cookie = self.vestibule_login(port)
        self.prove_vestibule(name, port, cookie)
        hdr = [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"]
        cpr = self.load(name, port, hdr, v.pid, redis_port=rport)
        if redis:
            self.res["redis_commands_per_request"] = round(cpr, 2) if cpr is not None else None
            self.run_login_cost(port, v.pid)
        self.peak_rss[name] = round(vm_hwm_mb(v.pid), 1)
        stop(v)

    # ---------------------------------------------------------------- login cost
    def run_login_cost(self, port, pid):
        n_seq, n_par = (5, 4) if self.quick else (20, 16)
        log(f"login cost: {n_seq} sequential, {n_par} concurrent")
        try:
            with CpuMeter(pid) as m:
                times = []
                for i in range(n_seq):
                    t0 = time.perf_counter()
                    login(f"http://127.0.0.1:{port}/api/auth/login", SESSION_COOKIE, user=f"seq{i}")
                    times.append((time.perf_counter() - t0) * 1000)

                def one(i):
                    t0 = time.perf_counter()
                    login(f"http://127.0.0.1:{port}/api/auth/login", SESSION_COOKIE, user=f"par{i}")
                    return (time.perf_counter() - t0) * 1000

                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(n_par) as ex:
                    par = list(ex.map(one, range(n_par)))
                wall = (time.perf_counter() - t0) * 1000
            self.res["login_ms_p50"] = round(statistics.median(times), 1)
            self.res["login_sequential_count"] = n_seq
            self.res["login_concurrent_count"] = n_par
            self.res["login_concurrent_wall_ms"] = round(wall, 1)
            self.res["login_concurrent_mean_ms"] = round(statistics.mean(par), 1)
            self.res["login_concurrent_wall_per_login_ms"] = round(wall / n_par, 1)
            self.res["vestibule_cpu_ms_per_login"] = round(m.cpu_s * 1000 / (n_seq + n_par), 2)
            log(f"  p50 {self.res['login_ms_p50']} ms; {n_par} concurrent in {wall:.0f} ms "
                f"(mean {self.res['login_concurrent_mean_ms']} ms); Vestibule CPU "
                f"{self.res['vestibule_cpu_ms_per_login']} ms/login")
        except Exception as e:  # noqa: BLE001
            for k in ("login_ms_p50", "vestibule_cpu_ms_per_login"):
                self.res[k] = None
                self.not_measured(k, f"{type(e).__name__}: {e}")

    # ---------------------------------------------------------------- refresh under load
    def run_refresh(self):
        ttl, skew, dur, conns = (4, 2, 6, 64) if self.quick else (6, 2, 15, 64)
        eff_skew = min(skew, ttl / 2)  # Vestibule caps the skew at half the token's lifetime
        period = ttl - eff_skew
        fields = ("refresh_grants_per_expiry", "refresh_failed_requests", "refresh_p99_ms")
        try:
            port = free_port()
            issuer, op = start_provider("provider-refresh", [f"http://127.0.0.1:{port}{CALLBACK}"], ttl)
            rport = getattr(self, "vr_redis", None)
            rp = None
            if rport is None:
                rport, rp = start_redis("redis-refresh")
            v = start_vestibule("vestibule-refresh", port, issuer, self.up_port, self.key, rport, skew=skew)
            cookie = self.vestibule_login(port)
            t_login = time.monotonic()  # the access token was issued during the callback
            self.prove_vestibule("refresh", port, cookie)
            before = provider_stats(issuer)
            log(f"refresh under load: TTL {ttl} s, skew {skew} s, wrk -t2 -c{conns} {dur} s on ONE session")
            t0 = time.monotonic()
            with CpuMeter(v.pid) as m:
                r = wrk(port, dur, [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"], conns=conns,
                        name="refresh")
            t1 = time.monotonic()
            after = provider_stats(issuer)
            grants = after["refresh_token"] - before["refresh_token"]
            errors = after.get("refresh_token_errors", 0) - before.get("refresh_token_errors", 0)
            # One expiry, however many grants it caused: grants closer together than half a
            # refresh period answer the same expiry (a second instance or request refreshing
            # too). Counting expiries from the clock instead (below, for the record) is off by
            # one at either end of a short run: Vestibule's expiries are whole unix seconds, so
            # the first refresh comes up to a second before `period` has passed.
            times = sorted(after.get("refresh_token_at", []))[-grants:] if grants else []
            expiries = sum(1 for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= period * 500)
            # Refresh points: the token from the login enters the skew window at t_login + period,
            # each refreshed token again `period` later; count those inside the wrk run.
            k0 = max(1, int((t0 - t_login) // period) + 1)
            crossed = 0
            k = k0
            while t_login + k * period <= t1:
                crossed += 1
                k += 1
            s_after, saw_after = probe(port, {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"})
            self.res.update({
                "refresh_grants": grants,
                "refresh_grant_errors": errors,
                "refresh_expiries_crossed": crossed,
                "refresh_expiries_by_ttl": round(dur / ttl, 2),
                "refresh_expiries_answered": expiries,
                "refresh_grants_per_expiry": round(grants / expiries, 2) if expiries else None,
                "refresh_grants_per_clock_expiry": round(grants / crossed, 2) if crossed else None,
                "refresh_failed_requests": r["non_2xx_3xx"],
                "refresh_socket_errors": r["socket_errors"],
                "refresh_p99_ms": r["p99_ms"],
                "refresh_p50_ms": r["p50_ms"],
                "refresh_rps": r["rps"],
                "refresh_ttl_s": ttl, "refresh_skew_s": skew, "refresh_run_s": dur,
                "refresh_session_alive_after": s_after == 200 and saw_after == "yes",
            })
            log(f"  {grants} refresh grants ({errors} errors) answering {expiries} expiries ({crossed} by the "
                f"clock, refresh every {period:g} s) -> {self.res['refresh_grants_per_expiry']} per expiry; "
                f"{r['non_2xx_3xx']} failed requests; p99 {r['p99_ms']} ms; {r['rps']:.0f} req/s; "
                f"session after: {s_after}")
            if r["non_2xx_3xx"] or errors or s_after != 200:
                self.problems.append(f"refresh under load: {r['non_2xx_3xx']} non-2xx, {errors} grant errors, "
                                     f"status after run {s_after}")
            self.peak_rss["vestibule_refresh"] = round(vm_hwm_mb(v.pid), 1)
            stop(v)
            stop(op)
            if rp:
                stop(rp)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for k in fields:
                self.res[k] = None
                self.not_measured(k, f"{type(e).__name__}: {e}")
