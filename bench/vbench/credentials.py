"""Issue 31's credential figures. credential-memory: Redis bytes per session when each session
also holds 0, 1, 3 and 5 API tokens (examples/store_fill.rs --credentials N, the real
Sessions::keep_held_token path), each N in a fresh Redis. credential-cost: one Vestibule with
a session route, a session route with a claim rule (issue 34) and an exchange route (RFC 8693,
audience orders-api) on the same upstream, one login, the exchanged token held after one call,
then the three routes loaded alike (req/s, p50/p99, Redis commands per call). A mixin of load.Bench, which supplies key, quick, up_port,
res, notes, problems, not_measured, load and build_store_fill (store.StoreScale)."""

import json
import os
import statistics
import subprocess
import time
import traceback

from .clients import probe
from .context import CALLBACK, CSRF, PATH, SESSION_COOKIE, STORE_FILL_BIN, STORE_FILL_SRC, Skip, log
from .processes import stop, free_port, vm_hwm_mb
from .resp import redis_cmd, redis_count_keys, redis_info
from .servers import UNLIMITED_LOGINS, provider_stats, start_provider, start_redis, start_vestibule

# The numbers of extra credentials per session measured (0: the session alone).
CREDENTIAL_COUNTS = (0, 1, 3, 5)
# One fill may take this long.
FILL_TIMEOUT_S = 600
# Sessions filled (with their N tokens) before the measured fill, not counted.
WARM_UP_SESSIONS = 100
# The exchange route: the same upstream as the session route (PATH, /api/x), under its own prefix.
EXCHANGE_PREFIX = "/api/orders"
EXCHANGE_PATH = EXCHANGE_PREFIX + "/x"
EXCHANGE_ROUTE = f"""
[[routes]]
prefix = "{EXCHANGE_PREFIX}"
upstream = "http://127.0.0.1:{{upstream_port}}"
[routes.credential]
kind = "exchange"
audience = "orders-api"
scope = "orders:read"
"""
# The claim-rule route (issue 34): a session route whose [[routes.require]] the bench's user
# passes (tests/op/server.js gives alice roles ["admin", "user"], in the profile scope Vestibule
# asks for by default), and a route whose rule she fails, called once to prove the rule is
# enforced (403 insufficient_permissions), never loaded.
CLAIM_PREFIX = "/api/admin"
CLAIM_PATH = CLAIM_PREFIX + "/x"
DENIED_PREFIX = "/api/root"
DENIED_PATH = DENIED_PREFIX + "/x"
CLAIM_ROUTES = f"""
[[routes]]
prefix = "{CLAIM_PREFIX}"
upstream = "http://127.0.0.1:{{upstream_port}}"
[routes.credential]
kind = "session"
[[routes.require]]
claim = "roles"
any_of = ["admin"]

[[routes]]
prefix = "{DENIED_PREFIX}"
upstream = "http://127.0.0.1:{{upstream_port}}"
[[routes.require]]
claim = "roles"
any_of = ["root"]
"""
# The routes credential-cost loads, by name.
ROUTE_PATHS = {"session": PATH, "claim": CLAIM_PATH, "exchange": EXCHANGE_PATH}
# How much slower (req/s) the exchange route may be than the session route before it is flagged.
EXCHANGE_SLOWDOWN_FLAG = 0.10


class Credentials:

    def run_credential_memory(self):
        """Fresh Redis per N in CREDENTIAL_COUNTS, filled with the same number of sessions each
        holding N extra tokens; bytes per session (used_memory growth / sessions) for each N
        and bytes per extra credential ((bytes at N - bytes at 0) / N)."""
        sessions = 1000 if self.quick else 20000
        fields = [f"redis_bytes_per_session_{n}_credentials" for n in CREDENTIAL_COUNTS]
        fields.append("redis_bytes_per_extra_credential")
        for k in fields:
            self.res[k] = None
        if not os.path.exists(STORE_FILL_SRC):
            for k in fields:
                self.not_measured(k, "the store_fill example is missing (examples/store_fill.rs)")
            return
        by_count = {}
        try:
            self.build_store_fill()
        except Exception as e:  # noqa: BLE001
            for k in fields:
                self.not_measured(k, f"{type(e).__name__}: {e}")
            return
        log(f"credential memory: {sessions} sessions with {', '.join(map(str, CREDENTIAL_COUNTS))} "
            "extra credentials each, a fresh Redis per count")
        for n in CREDENTIAL_COUNTS:
            try:
                by_count[n] = self.fill_with_credentials(sessions, n)
                self.res[f"redis_bytes_per_session_{n}_credentials"] = by_count[n]["redis_bytes_per_session"]
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.not_measured(f"redis_bytes_per_session_{n}_credentials", f"{type(e).__name__}: {e}")
        # Issue 34: sessions per GB with and without escrow and the indexes (no extra credential).
        self.res["redis_bytes_per_session_no_escrow"] = None
        self.res["redis_bytes_per_session_record_only"] = None
        try:
            no_escrow = self.fill_with_credentials(sessions, 0, escrow=False)
            self.res["redis_bytes_per_session_no_escrow"] = no_escrow["redis_bytes_per_session"]
            by_count["0-no-escrow"] = no_escrow
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.not_measured("redis_bytes_per_session_no_escrow", f"{type(e).__name__}: {e}")
        record_only = (by_count.get(0) or {}).get("session_key_memory_usage")
        if record_only:
            self.res["redis_bytes_per_session_record_only"] = record_only
        else:
            self.not_measured("redis_bytes_per_session_record_only",
                              "no MEMORY USAGE of a session key from the fill without extra credentials")
        base = by_count.get(0)
        for n, step in by_count.items():
            if not isinstance(n, int):
                continue
            if n and base:
                step["bytes_per_extra_credential"] = round(
                    (step["redis_bytes_per_session"] - base["redis_bytes_per_session"]) / n, 1)
        largest = max((n for n in by_count if isinstance(n, int) and n), default=None)
        if base and largest:
            # The largest count: its growth is the least blurred by Redis's table resizes.
            self.res["redis_bytes_per_extra_credential"] = by_count[largest]["bytes_per_extra_credential"]
        else:
            self.not_measured("redis_bytes_per_extra_credential",
                              "needs the fill with 0 and with at least one extra credential")
        self.res["credential_memory"] = {"sessions": sessions,
                                         "by_credentials": {str(n): s for n, s in by_count.items()}}

    def fill_with_credentials(self, sessions, n, escrow=True):
        """One fresh Redis filled with `sessions` sessions holding `n` extra tokens each (their
        refresh tokens in escrow unless `escrow` is false); its figures."""
        port, rp = start_redis(f"redis-credentials-{n}{'' if escrow else '-no-escrow'}")

        def fill(count, first):
            r = subprocess.run([STORE_FILL_BIN, "--redis", f"redis://127.0.0.1:{port}", "--count", str(count),
                                "--first", str(first), "--key", self.key, "--credentials", str(n),
                                "--escrow", "on" if escrow else "off"],
                               capture_output=True, text=True, timeout=FILL_TIMEOUT_S)
            if r.returncode != 0:
                raise Skip(f"store_fill --credentials {n} failed: {r.stderr.strip()[-400:]}")
            reply = json.loads(r.stdout.strip().splitlines()[-1])
            if reply.get("credentials") != n:
                raise Skip(f"store_fill ignored --credentials {n} (an older example?): {reply}")
            if reply.get("escrow") is not escrow:
                raise Skip(f"store_fill ignored --escrow (an older example?): {reply}")
            return reply

        try:
            # A warm-up fill first: Redis's one-time costs (the store's scripts, the first
            # tables: about 400 kB) would otherwise be counted as 400 bytes per session of
            # a 1,000-session fill.
            warm = fill(WARM_UP_SESSIONS, 0)["created"]
            mem0 = int(redis_info(port, "memory")["used_memory"])
            keys0 = redis_cmd(port, "DBSIZE")
            t0 = time.monotonic()
            reply = fill(sessions, WARM_UP_SESSIONS)  # other users than the warm-up's
            took = time.monotonic() - t0
            created = reply["created"]
            mem1 = int(redis_info(port, "memory")["used_memory"])
            keys1 = redis_cmd(port, "DBSIZE")
            held_keys = redis_count_keys(port, "vestibule:credential:*")
            if held_keys != (warm + created) * n:
                raise Skip(f"{held_keys} held-token keys in Redis for {warm + created} sessions x {n} credentials")
            step = {
                "sessions": created,
                "redis_keys_per_session": round((keys1 - keys0) / created, 2),
                "redis_bytes_per_session": round((mem1 - mem0) / created, 1),
                "redis_used_memory_mb": round(mem1 / 2**20, 1),
                "fill_s": round(took, 1),
            }
            # The session record's own key (no index, no held token): what a session costs
            # without the indexes that find it by user and by provider session.
            records = redis_cmd(port, "SCAN", "0", "MATCH", "vestibule:session:*", "COUNT", 1000)[1]
            if records:
                step["session_key_memory_usage"] = redis_cmd(port, "MEMORY", "USAGE", records[0])
            if n:
                sample = redis_cmd(port, "SCAN", "0", "MATCH", "vestibule:credential:*", "COUNT", 1000)[1]
                if sample:
                    step["held_token_key_memory_usage"] = redis_cmd(port, "MEMORY", "USAGE", sample[0])
                    step["held_token_value_bytes"] = redis_cmd(port, "STRLEN", sample[0])
                step["held_token_bytes"] = reply.get("held_token_bytes")
                step["held_token_plaintext_bytes"] = reply.get("held_token_plaintext_bytes")
            log(f"  {n} extra credential(s): {step['redis_bytes_per_session']:.0f} bytes/session, "
                f"{step['redis_keys_per_session']} keys/session ({created} sessions in {took:.1f} s)")
            return step
        finally:
            stop(rp)

    def load_routes_alternately(self, port, pid, rport, cookie, names):
        """The routes `names` (of ROUTE_PATHS) loaded as a config is (load.Bench.load), one run
        at a time, the order rotated each round (session, claim, exchange; then claim,
        exchange, session; ...), so a machine busier at one moment does not weigh on one route
        only; per route the median run and the Redis commands per call over all its runs."""
        hdr = [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"]
        paths = {name: ROUTE_PATHS[name] for name in names}
        runs = {name: [] for name in paths}
        total_runs, self.runs = self.runs, 1
        try:
            for i in range(total_runs):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    self.load(f"credential_{name}", port, hdr, pid, redis_port=rport, path=paths[name])
                    runs[name].append(self.cfg.pop(f"credential_{name}"))
        finally:
            self.runs = total_runs
        routes = {}
        for name, rs in runs.items():
            med = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
            requests = sum(r["requests"] for r in rs)
            calls = sum(r.get("redis_calls_total", 0) for r in rs)
            routes[name] = {
                "path": paths[name],
                "rps": med["rps"],
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "runs": [r["rps"] for r in rs],
                "cpu_percent": statistics.median(r["cpu_percent"] for r in rs),
                "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in rs),
                "socket_errors": sum(r["socket_errors"] for r in rs),
                "requests": requests,
                "foreign_cpu_percent": [x for r in rs for x in r["foreign_cpu_percent"]],
                # wrk counts completed requests only (see load.Bench.load): 2 decimals
                "redis_commands_per_call": round(calls / requests, 2) if requests else None,
                "redis_commands": {k: sum(r.get("redis_commands", {}).get(k, 0) for r in rs)
                                   for k in {k for r in rs for k in r.get("redis_commands", {})}},
            }
        return routes

    def prove_claim_routes(self, port, h):
        """The claim-rule route answers alice 200 with her bearer token, and the route whose
        rule she fails 403 without reaching the upstream; the reason when either does not."""
        s, saw = probe(port, h, CLAIM_PATH)
        d, dsaw = probe(port, h, DENIED_PATH)
        log(f"  claim-rule route: {s} X-Saw-Bearer={saw}; a rule alice fails: {d} X-Saw-Bearer={dsaw}")
        if s != 200 or saw != "yes":
            return f"the claim-rule route ({CLAIM_PREFIX}, roles any_of admin) answered {s}, X-Saw-Bearer={saw}"
        if d != 403 or dsaw is not None:
            return (f"the route whose rule alice fails ({DENIED_PREFIX}, roles any_of root) answered {d}, "
                    f"X-Saw-Bearer={dsaw}; expected 403 before the upstream: the rule is not enforced")
        return None

    def run_credential_cost(self):
        """A session route, a claim-rule route and an exchange route on one Vestibule and one
        session, the exchanged token held first; the three loaded alike; their req/s, p50/p99,
        Redis commands per call. A claim-rule route that cannot be proven leaves its figure
        NOT MEASURED and the other two are still loaded."""
        fields = ("credential_cost_rps_ratio", "credential_cost_session_rps", "credential_cost_exchange_rps",
                  "credential_cost_claim_rps")
        for k in fields:
            self.res[k] = None
        started = []
        try:
            port = free_port()
            issuer, op = start_provider("provider-credentials", [f"http://127.0.0.1:{port}{CALLBACK}"], 3600)
            started.append(op)
            rport, rp = start_redis("redis-credentials")
            started.append(rp)
            routes_toml = (EXCHANGE_ROUTE + CLAIM_ROUTES).format(upstream_port=self.up_port)
            v = start_vestibule("vestibule-credentials", port, issuer, self.up_port, self.key, rport,
                                extra=UNLIMITED_LOGINS + routes_toml)
            started.append(v)
            cookie = self.vestibule_login(port)
            self.prove_vestibule("credentials", port, cookie)
            h = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1"}
            claim_problem = self.prove_claim_routes(port, h)
            if claim_problem:
                self.not_measured("credential_cost_claim_rps", claim_problem)
            before = provider_stats(issuer).get("token_exchange", 0)
            s, saw = probe(port, h, EXCHANGE_PATH)
            exchanged = provider_stats(issuer).get("token_exchange", 0) - before
            held = redis_count_keys(rport, "vestibule:credential:*")
            log(f"  exchange route's first call: {s} X-Saw-Bearer={saw}; {exchanged} token exchange(s), "
                f"{held} held token(s) in Redis")
            if s != 200 or saw != "yes":
                raise Skip(f"exchange route answered {s}, X-Saw-Bearer={saw}")
            if exchanged != 1 or held != 1:
                raise Skip(f"the first exchange-route call made {exchanged} exchange(s) and left {held} held "
                           "token(s); expected one of each")
            names = ["session", "exchange"] if claim_problem else ["session", "claim", "exchange"]
            routes = self.load_routes_alternately(port, v.pid, rport, cookie, names)
            during = provider_stats(issuer).get("token_exchange", 0) - before - 1
            s_after, saw_after = probe(port, h, EXCHANGE_PATH)
            if s_after != 200 or saw_after != "yes":
                self.problems.append(f"credential cost: exchange route after the load answered {s_after}, "
                                     f"X-Saw-Bearer={saw_after}")
            sr, er = routes["session"], routes["exchange"]
            ratio = round(er["rps"] / sr["rps"], 3) if sr["rps"] else None
            cr = routes.get("claim")
            if claim_problem:
                routes["claim"] = {"path": CLAIM_PATH, "rps": None, "not_measured": claim_problem}
            else:
                d_after, _ = probe(port, h, DENIED_PATH)
                c_after, csaw_after = probe(port, h, CLAIM_PATH)
                if c_after != 200 or csaw_after != "yes" or d_after != 403:
                    self.problems.append(f"credential cost: after the load the claim-rule route answered {c_after} "
                                         f"(X-Saw-Bearer={csaw_after}), the failing rule's {d_after}")
            self.res["credential_cost"] = {
                "routes": routes,
                "exchange_prefix": EXCHANGE_PREFIX,
                "claim_prefix": CLAIM_PREFIX,
                "claim_rule": 'claim = "roles", any_of = ["admin"]',
                "denied_prefix": DENIED_PREFIX,
                "denied_status": None if claim_problem else 403,
                "token_exchanges_during_load": during,
                "rps_exchange_over_session": ratio,
                "p50_exchange_over_session": round(er["p50_ms"] / sr["p50_ms"], 3) if sr["p50_ms"] else None,
                "p99_exchange_over_session": round(er["p99_ms"] / sr["p99_ms"], 3) if sr["p99_ms"] else None,
                "rps_claim_over_session": round(cr["rps"] / sr["rps"], 3) if cr and sr["rps"] else None,
                "p50_claim_over_session": round(cr["p50_ms"] / sr["p50_ms"], 3) if cr and sr["p50_ms"] else None,
                "p99_claim_over_session": round(cr["p99_ms"] / sr["p99_ms"], 3) if cr and sr["p99_ms"] else None,
            }
            self.res["credential_cost_rps_ratio"] = ratio
            self.res["credential_cost_session_rps"] = sr["rps"]
            self.res["credential_cost_exchange_rps"] = er["rps"]
            if cr:
                self.res["credential_cost_claim_rps"] = cr["rps"]
                log(f"  claim / session: req/s x{self.res['credential_cost']['rps_claim_over_session']}, p50 "
                    f"{sr['p50_ms']:.2f} -> {cr['p50_ms']:.2f} ms, p99 {sr['p99_ms']:.2f} -> {cr['p99_ms']:.2f} ms; "
                    f"Redis commands per call {cr['redis_commands_per_call']}")
            log(f"  exchange / session: req/s x{ratio}, p50 {sr['p50_ms']:.2f} -> {er['p50_ms']:.2f} ms, "
                f"p99 {sr['p99_ms']:.2f} -> {er['p99_ms']:.2f} ms; Redis commands per call "
                f"{sr['redis_commands_per_call']} -> {er['redis_commands_per_call']}; "
                f"{during} exchange(s) during the load")
            if ratio is not None and ratio < 1 - EXCHANGE_SLOWDOWN_FLAG:
                self.problems.append(f"credential cost: the exchange route served {ratio:.0%} of the session "
                                     f"route's req/s (more than {EXCHANGE_SLOWDOWN_FLAG:.0%} slower; a flag, "
                                     "not a failure)")
            if during:
                self.problems.append(f"credential cost: {during} token exchange(s) during the load (the held "
                                     "token should have served every call)")
            self.peak_rss["vestibule_credentials"] = round(vm_hwm_mb(v.pid), 1)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for k in fields:
                if self.res.get(k) is None and k not in self.notes:
                    self.not_measured(k, f"{type(e).__name__}: {e}")
        finally:
            for p in reversed(started):
                stop(p)
