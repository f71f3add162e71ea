"""The results: versions and machine, the targets and their verdicts, latest.json and
latest.md. A target that could not be measured fails the run (unmeasured)."""

import datetime
import json
import os
import re
import subprocess

from .context import RESULTS, ROOT, VESTIBULE_BIN, WORK
from .load import CONFIGS


def cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT)
        return (r.stdout + r.stderr).strip()
    except Exception:  # noqa: BLE001
        return None


def first(pattern, text):
    m = re.search(pattern, text or "")
    return m.group(1) if m else None


def versions():
    dpkg = lambda p: cmd_out(["dpkg-query", "-W", "-f", "${Version}", p])  # noqa: E731
    return {
        "wrk": first(r"wrk (\S+)", cmd_out(["wrk", "-v"])),
        "nginx": first(r"nginx/([\w.\-]+)", cmd_out(["nginx", "-v"])),
        "apache2": first(r"Apache/([\w.\-]+)", cmd_out(["/usr/sbin/apache2", "-v"])),
        "mod_auth_openidc": dpkg("libapache2-mod-auth-openidc"),
        "redis": first(r"v=([\w.\-]+)", cmd_out(["redis-server", "--version"])),
        "node": cmd_out(["node", "--version"]),
        "oidc_provider": json.load(open(os.path.join(ROOT, "tests/op/node_modules/oidc-provider/package.json")))["version"]
        if os.path.exists(os.path.join(ROOT, "tests/op/node_modules/oidc-provider/package.json")) else None,
        "vestibule": cmd_out(["git", "describe", "--always", "--dirty", "--tags"]),
        "vestibule_binary": cmd_out([VESTIBULE_BIN, "--version"]),
        "kernel": os.uname().release,
    }


def machine():
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = first(r"model name\s*:\s*(.+)", f.read())
    except OSError:
        pass
    return {"cores": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1), "cpu_model": model}


def targets(out, parts):
    """Each target with its verdict: PASS, FAIL, NOT MEASURED (its parts ran, a figure is
    missing: the run fails) or NOT RUN (a part it needs was left out by --only)."""
    c = out["configs"]

    def ran(*names):
        return all(n in parts for n in names)

    def g(name, k):
        return (c.get(name) or {}).get(k)

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    vr, vm = g("vestibule_redis", "rps"), g("vestibule_memory", "rps")
    rows = [
        ("vestibule_redis rps / mod_auth_openidc rps", ratio(vr, g("mod_auth_openidc", "rps")), ">=", 5,
         ran("vestibule_redis", "mod_auth_openidc")),
        # issue 34: "Vestibule with Redis >= 0.70x the nginx proxy" in the same run
        ("vestibule_redis rps / nginx_proxy rps", ratio(vr, g("nginx_proxy", "rps")), ">=", 0.70,
         ran("vestibule_redis", "nginx_proxy")),
        ("vestibule_redis p99 / mod_auth_openidc p99",
         ratio(g("vestibule_redis", "p99_ms"), g("mod_auth_openidc", "p99_ms")), "<=", 0.2,
         ran("vestibule_redis", "mod_auth_openidc")),
        ("|vestibule_memory - vestibule_redis| / vestibule_redis rps",
         round(abs(vm - vr) / vr, 3) if vm is not None and vr else None, "<=", 0.15,
         ran("vestibule_redis", "vestibule_memory")),
        ("redis commands per proxied request", out.get("redis_commands_per_request"), "<=", 1,
         ran("vestibule_redis")),
        # single-flight refresh: never two grants for one expiry (64 connections, one session)
        ("refresh grants per access-token expiry", out.get("refresh_grants_per_expiry"), "<=", 1,
         ran("refresh")),
        ("redis bytes per session", out.get("redis_bytes_per_session"), "<=", 5120, ran("store-scale")),
        # issue 12: "p50 unchanged against 1,000" (full mode: 1,000,000 sessions; quick: 10,000)
        ("proxied p50 with the most sessions / with 1k sessions", out.get("p50_ratio_largest_to_1k_sessions"),
         "<=", 1.2, ran("store-scale")),
        ("peak RSS MB (max over Vestibule processes)", out.get("peak_rss_mb"), "<=", 64,
         any(ran(n) for n in ("vestibule_redis", "vestibule_memory", "refresh", "store-scale"))),
    ]
    lf = out.get("login_flood") or {}
    la, lb, lc, lm = (lf.get(k) or {} for k in ("single_address", "many_addresses", "one_browser", "memory_store"))
    cap, per_browser = lf.get("max_pending_total"), lf.get("max_pending_per_browser")
    ln = lf.get("nat") or {}
    flood_rows = [
        ("login flood: browsers behind one NAT address logged in (all, at the default rate limit)",
         ln.get("logged_in"), ">=", ln.get("browsers")),
        ("login flood: one address, starts admitted (burst + rate x elapsed)",
         la.get("admitted_303"), "<=", la.get("admitted_limit")),
        # each cap is kept by one atomic script: concurrent starts never exceed it
        ("login flood: pending logins in Redis (max_pending_total)", lb.get("pending_after"), "<=", cap),
        ("login flood: one browser's pending logins, concurrent starts (max_pending_per_browser)",
         lc.get("pending_after_concurrent"), "<=", per_browser),
        ("login flood: one browser's pending logins, then one by one (max_pending_per_browser)",
         lc.get("pending_final"), "<=", per_browser),
        ("login flood: one browser, records of its dropped logins left in Redis", lc.get("older_records_left"), "<=", 0),
        ("login flood: store entries without their pending login (orphans)", lb.get("orphans"), "<=", 0),
        ("login flood: Redis growth bytes (cap x MEMORY USAGE per login x 1.5)",
         lb.get("redis_growth_bytes"), "<=", lb.get("redis_growth_limit_bytes")),
        ("login flood: Redis growth MB (absolute)", lb.get("redis_growth_mb"), "<=", lf.get("redis_growth_limit_mb")),
        ("login flood: in-memory store, RSS growth MB while at the cap", lm.get("rss_growth_at_cap_mb"), "<=", 4),
        ("login flood: Vestibule peak RSS MB (Redis and in-memory store)", lf.get("vestibule_peak_rss_mb"), "<=", 64),
        ("login flood: 5xx answers (none: a full cap displaces, never refuses)", lf.get("server_errors"), "<=", 0),
    ]
    rows += [(*row, ran("login-flood")) for row in flood_rows]
    ws = out.get("websockets") or {}
    wv, we = ws.get("vestibule") or {}, ws.get("end_to_close") or {}
    others = (None if we.get("other_sockets_closed") is None
              else we["other_sockets_closed"] + we["other_sockets_not_echoing"])
    ws_rows = [
        ("websockets: sockets held open through Vestibule", wv.get("opened"), ">=", ws.get("sockets")),
        ("websockets: sockets of ended sessions closed with 4401", we.get("closed_4401"), ">=",
         we.get("sockets_of_ended_sessions")),
        ("websockets: session end (logout sent) to close frame, max ms", we.get("max_ms"), "<=", 2000),
        ("websockets: sockets of other sessions closed or not echoing", others, "<=", 0),
    ]
    rows += [(*row, ran("websockets")) for row in ws_rows]
    rows += [
        # issue 31: the session alone, measured beside 1, 3 and 5 extra credentials
        ("redis bytes per session, no extra credential (credential-memory)",
         out.get("redis_bytes_per_session_0_credentials"), "<=", 5120, ran("credential-memory")),
        # issue 31: "within 10 % once the token is held"; a FLAG, not a failure (noisy on 2 shared cores)
        ("exchange route req/s / session route req/s, token held", out.get("credential_cost_rps_ratio"),
         ">=", 0.9, ran("credential-cost"), "FLAG"),
        # issue 34: a call on a route with a claim rule and on an exchange-credential route, each
        # >= 0.65x the nginx proxy of the same run (credential-cost's routes, token held)
        ("claim-rule route rps / nginx_proxy rps", ratio(out.get("credential_cost_claim_rps"), g("nginx_proxy", "rps")),
         ">=", 0.65, ran("credential-cost", "nginx_proxy")),
        ("exchange route rps / nginx_proxy rps",
         ratio(out.get("credential_cost_exchange_rps"), g("nginx_proxy", "rps")),
         ">=", 0.65, ran("credential-cost", "nginx_proxy")),
        # issue 33: a proof signed per call; "<= 1.3 x the CPU of a bearer call"
        ("Vestibule CPU per DPoP-bound call / per bearer call", out.get("dpop_cpu_ratio"),
         "<=", 1.3, ran("dpop-cost")),
    ]
    res = []
    for name, val, op, lim, selected, *missed in rows:
        if not selected:
            verdict = "NOT RUN"
        elif val is None or lim is None:
            verdict = "NOT MEASURED"
        else:
            # `missed`: the verdict of a target that only flags (default FAIL)
            verdict = "PASS" if (val >= lim if op == ">=" else val <= lim) else (missed or ["FAIL"])[0]
        res.append({"target": name, "value": val, "op": op, "limit": lim, "result": verdict})
    return res


def fmt(v, nd=2):
    return "n/a" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else str(v))


def render_md(out):
    mode = "quick (1 run x 2 s)" if out.get("quick") else "3 runs x 15 s, median"
    lines = [f"Benchmark {out['date']} — {out['machine']['cores']} cores, {out['machine']['mem_gb']} GB, "
             f"`wrk -t2 -c32` keep-alive on loopback, {mode}; Vestibule {out['versions'].get('vestibule')}.",
             "",
             "| config | req/s | p50 ms | p99 ms | CPU% |",
             "|---|---:|---:|---:|---:|"]
    for n in CONFIGS:
        c = out["configs"].get(n, {})
        if c.get("not_run"):
            lines.append(f"| {n} | not run ({c['not_run']}) | | | |")
        elif c.get("rps") is None:
            lines.append(f"| {n} | not measured: {c.get('not_measured', '?')} | | | |")
        else:
            lines.append(f"| {n} | {c['rps']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | "
                         f"{fmt(c.get('cpu_percent'), 0)} |")
    lines += ["", "| figure | value |", "|---|---:|"]
    for k, label in [
        ("redis_commands_per_request", "Redis commands per proxied request (Vestibule)"),
        ("modoidc_redis_commands_per_request", "Redis commands per request (mod_auth_openidc)"),
        ("refresh_grants_per_expiry", "refresh grants per access-token expiry (64 conns, one session)"),
        ("refresh_failed_requests", "failed requests during refresh under load"),
        ("refresh_p99_ms", "p99 ms during refresh under load"),
        ("redis_bytes_per_session", "Redis bytes per session"),
        ("redis_bytes_per_session_0_credentials", "Redis bytes per session, no extra credential"),
        ("redis_bytes_per_session_1_credentials", "Redis bytes per session, 1 extra credential"),
        ("redis_bytes_per_session_3_credentials", "Redis bytes per session, 3 extra credentials"),
        ("redis_bytes_per_session_5_credentials", "Redis bytes per session, 5 extra credentials"),
        ("redis_bytes_per_extra_credential", "Redis bytes per extra credential (the fill with the most)"),
        ("sessions_per_gb_redis", "sessions per GB of Redis (store scale, 10^9 / bytes per session)"),
        ("sessions_per_gb_redis_0_credentials", "sessions per GB of Redis, no extra credential (credential-memory)"),
        ("sessions_per_gb_redis_1_credentials", "sessions per GB of Redis, 1 extra credential"),
        ("sessions_per_gb_redis_3_credentials", "sessions per GB of Redis, 3 extra credentials"),
        ("sessions_per_gb_redis_5_credentials", "sessions per GB of Redis, 5 extra credentials"),
        ("sessions_per_gb_redis_no_escrow", "sessions per GB of Redis, no extra credential, refresh tokens not in escrow"),
        ("sessions_per_gb_redis_record_only", "sessions per GB of Redis, the session record alone (no index; MEMORY USAGE of one key)"),
        ("credential_cost_rps_ratio", "exchange route req/s / session route req/s (token held)"),
        ("credential_cost_claim_rps", "claim-rule route req/s (credential-cost)"),
        ("bearer_cpu_us_per_call", "Vestibule CPU µs per proxied call, Bearer token (dpop-cost)"),
        ("dpop_cpu_us_per_call", "Vestibule CPU µs per proxied call, DPoP-bound token (dpop-cost)"),
        ("dpop_cpu_ratio", "CPU per DPoP-bound call / per bearer call"),
        ("p50_ms_1k_sessions", "proxied p50 ms with 1k sessions in Redis"),
        ("p50_ms_100k_sessions", "proxied p50 ms with 100k sessions in Redis"),
        ("p50_ms_1m_sessions", "proxied p50 ms with 1,000,000 sessions in Redis"),
        ("redis_used_memory_mb_largest", "Redis used_memory MB with the most sessions"),
        ("login_ms_p50", "full login p50 ms (sequential)"),
        ("login_concurrent_wall_ms", f"{out.get('login_concurrent_count', 16)} concurrent logins, wall ms"),
        ("login_concurrent_mean_ms", "concurrent logins, mean ms per login"),
        ("vestibule_cpu_ms_per_login", "Vestibule CPU ms per login"),
        ("peak_rss_mb", "peak RSS MB (Vestibule)"),
        ("added_latency_p50_ms", "added latency p50 ms, Vestibule (Redis) over a direct call"),
        ("added_latency_p99_ms", "added latency p99 ms, Vestibule (Redis) over a direct call"),
        ("nginx_added_latency_p50_ms", "added latency p50 ms, nginx proxy over a direct call"),
        ("nginx_added_latency_p99_ms", "added latency p99 ms, nginx proxy over a direct call"),
    ]:
        v = out.get(k)
        note = out.get("not_measured", {}).get(k)
        nd = 3 if "added_latency" in k else 2  # tenths of a millisecond matter there
        if k.startswith("sessions_per_gb") and v is not None:
            v = f"{v:,}"
        lines.append(f"| {label} | {fmt(v, nd) if v is not None else 'not measured' + (': ' + note if note else '')} |")
    lines += render_added_latency(out.get("added_latency"))
    lines += render_store_fill(out)
    lines += render_credentials(out)
    lines += render_scale_out(out.get("scale_out"))
    lines += render_redis_latency(out.get("redis_latency"))
    lines += render_websockets(out.get("websockets"))
    lines += render_login_flood(out.get("login_flood"))
    lines += ["", "| target | value | limit | result |", "|---|---:|---:|---|"]
    for t in out["targets"]:
        lines.append(f"| {t['target']} | {fmt(t['value'], 3)} | {t['op']} {t['limit']} | {t['result']} |")
    return "\n".join(lines) + "\n"


def render_added_latency(al):
    """Issue 34: one call at a time on a keep-alive connection, direct, through nginx, through Vestibule."""
    if not al:
        return []
    if al.get("not_measured"):
        return ["", f"Added latency: not measured: {al['not_measured']}"]
    lines = ["", f"Added latency: {al['calls_per_target']:,} calls one at a time per target (after "
                 f"{al['warm_up_per_target']:,} of warm-up) on one keep-alive connection each, the same request "
                 f"from Python's http.client, the targets taking turns of {al['turn']} calls; other processes "
                 f"{al['foreign_cpu_percent']}% CPU. Added = the target's percentile minus the direct call's.", "",
             "| target | p50 ms | p99 ms | mean ms | max ms | added p50 ms | added p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    added = {"direct": None, "nginx_proxy": al.get("nginx_proxy_over_direct"),
             "vestibule_redis": al.get("vestibule_over_direct")}
    for name, t in al["targets"].items():
        a = added.get(name) or {}
        lines.append(f"| {name} | {fmt(t['p50_ms'], 3)} | {fmt(t['p99_ms'], 3)} | {fmt(t['mean_ms'], 3)} | "
                     f"{fmt(t['max_ms'], 3)} | {fmt(a.get('p50_ms'), 3) if a else ''} | "
                     f"{fmt(a.get('p99_ms'), 3) if a else ''} |")
    return lines


def render_store_fill(out):
    fills = out.get("store_fill")
    if not fills:
        return []
    steps = ", ".join(f"{k}: {v['sessions_added']:,} added in {v['seconds']} s ({v['sessions_per_s']:,}/s)"
                      for k, v in fills.items())
    return ["", f"Store scale: sessions filled by examples/store_fill.rs ({steps}); Redis used_memory "
                f"{fmt(out.get('redis_used_memory_mb_largest'), 1)} MB (RSS "
                f"{fmt(out.get('redis_used_memory_rss_mb_largest'), 1)} MB) with "
                f"{out.get('redis_keys_after_fill', 0):,} keys."]


def render_credentials(out):
    """Issue 31: Redis bytes per session by extra credentials, and the exchange route's cost."""
    lines = []
    cm = out.get("credential_memory")
    if cm:
        lines += ["", f"Credentials in Redis: {cm['sessions']:,} sessions per fill (examples/store_fill.rs "
                      "--credentials N: each session then keeps N Keycloak-sized API tokens through "
                      "Sessions::keep_held_token), a fresh Redis per N.", "",
                  "| extra credentials per session | Redis bytes per session | sessions per GB of Redis | "
                  "bytes per extra credential | keys per session | MEMORY USAGE of one held token's key |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for n, step in cm["by_credentials"].items():
            no_escrow = n == "0-no-escrow"
            per_gb = out.get("sessions_per_gb_redis_no_escrow" if no_escrow
                             else f"sessions_per_gb_redis_{n}_credentials")
            label = "0, refresh tokens not in escrow" if no_escrow else n
            lines.append(f"| {label} | {fmt(step['redis_bytes_per_session'], 0)} | "
                         f"{'n/a' if per_gb is None else f'{per_gb:,}'} | "
                         f"{fmt(step.get('bytes_per_extra_credential'), 0) if not n.startswith('0') else ''} | "
                         f"{fmt(step['redis_keys_per_session'])} | {fmt(step.get('held_token_key_memory_usage'))} |")
        for n in ("0", "1", "3", "5"):
            if n not in cm["by_credentials"]:
                note = out.get("not_measured", {}).get(f"redis_bytes_per_session_{n}_credentials", "")
                lines.append(f"| {n} | not measured{': ' + note if note else ''} | | | | |")
    cc = out.get("credential_cost")
    if cc:
        claim = cc.get("claim_prefix")
        claim_text = (f", a `session` route with a claim rule (`{claim}`, {cc.get('claim_rule')}; "
                      + (f"a route whose rule the user fails, `{cc.get('denied_prefix')}`, answered "
                         f"{cc['denied_status']} once)" if cc.get("denied_status")
                         else "not proven, not loaded: see its row)") if claim else "")
        lines += ["", f"Credential cost: one session, a `session` route{claim_text} and a `kind = \"exchange\"` "
                      f"route (`{cc['exchange_prefix']}`, audience orders-api) on the same upstream, the exchanged "
                      f"token held before the load, the routes loaded in rotating order; "
                      f"{cc['token_exchanges_during_load']} exchange(s) during it.", "",
                  "| route | req/s | p50 ms | p99 ms | Vestibule CPU% | Redis commands / call |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in ("session", "claim", "exchange"):
            if name in cc["routes"]:
                lines.append(load_row(name, cc["routes"].get(name), ["redis_commands_per_call"]))
        lines.append(f"\nExchange / session: req/s x{fmt(cc['rps_exchange_over_session'], 3)}, p50 "
                     f"x{fmt(cc['p50_exchange_over_session'], 3)}, p99 x{fmt(cc['p99_exchange_over_session'], 3)}.")
        if cc.get("rps_claim_over_session") is not None:
            lines.append(f"\nClaim rule / session: req/s x{fmt(cc['rps_claim_over_session'], 3)}, p50 "
                         f"x{fmt(cc['p50_claim_over_session'], 3)}, p99 x{fmt(cc['p99_claim_over_session'], 3)}.")
    elif "credential_cost_rps_ratio" in out.get("not_measured", {}):
        lines += ["", f"Credential cost: not measured: {out['not_measured']['credential_cost_rps_ratio']}"]
    return lines


def load_row(label, c, extra_cols):
    """One table row of a loaded config (see load.Bench.load), or why it has none."""
    if not c or c.get("rps") is None:
        why = (c or {}).get("not_measured") or (c or {}).get("not_run") or "not measured"
        return f"| {label} | {why} |" + " |" * (3 + len(extra_cols))
    cols = [" / ".join(fmt(x, 0) for x in c[k]) if isinstance(c.get(k), list) else fmt(c.get(k), 0 if "cpu" in k else 3)
            for k in extra_cols]
    return (f"| {label} | {c['rps']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | "
            f"{fmt(c.get('cpu_percent'), 0)} | " + " | ".join(cols) + " |")


def render_scale_out(so):
    if not so:
        return []
    lines = ["", "Scale-out: nginx (round-robin, no stickiness, keep-alive, `max_fails=0`) in front of N "
                 "instances, one session. Two cores: more instances cannot add CPU, only spread it.", "",
             "| Redis | instances | req/s | p50 ms | p99 ms | Vestibule CPU% | per instance | nginx CPU% | "
             "Redis CPU% | Redis commands / request |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for topology, label in (("one_redis", "one Redis"), ("cluster", "Cluster, 3 masters")):
        t = so.get(topology) or {}
        reason = t.get("not_run") or t.get("not_measured")
        if reason:
            lines.append(f"| {label} | {'NOT RUN' if t.get('not_run') else 'NOT MEASURED'}: {reason} "
                         "| | | | | | | | |")
            continue
        for n in so.get("instances", []):
            row = load_row(f"{label} | {n}", t.get(str(n)),
                           ["cpu_percent_per_instance", "cpu_percent_nginx_lb", "cpu_percent_redis",
                            "redis_commands_per_request"])
            lines.append(row)
    return lines


def render_redis_latency(rl):
    if not rl:
        return []
    head = (f"Redis latency: Redis behind {rl.get('proxy', 'a proxy')} adding "
            f"{rl['added_ms_per_round_trip']} ms per round trip, per-instance cache on and off.")
    if rl.get("not_measured"):
        return ["", head, "", f"Not measured: {rl['not_measured']}"]
    lines = ["", head + f" PING p50 (one at a time): direct {fmt(rl.get('ping_p50_ms_direct'), 3)} ms, "
                        f"through the proxy with no latency {fmt(rl.get('ping_p50_ms_proxy_0ms'), 3)} ms, "
                        f"with the latency {fmt(rl.get('ping_p50_ms_proxy_latency'), 3)} ms.", "",
             "| Redis | cache | req/s | p50 ms | p99 ms | Vestibule CPU% | Redis CPU% | proxy CPU% | "
             "Redis commands / request |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path, label in (("loopback", "loopback"), ("latency", f"+{rl['added_ms_per_round_trip']} ms")):
        for cache in ("on", "off"):
            lines.append(load_row(f"{label} | {cache}", rl["cases"].get(f"{path}_cache_{cache}"),
                                  ["cpu_percent_redis", "cpu_percent_toxiproxy", "redis_commands_per_request"]))
    for path, label in (("loopback", "loopback"), ("latency", f"+{rl['added_ms_per_round_trip']} ms")):
        g = rl.get(f"cache_gain_{path}")
        on, off = rl["cases"].get(f"{path}_cache_on") or {}, rl["cases"].get(f"{path}_cache_off") or {}
        if g:
            lines.append(f"\nThe cache on {label}: req/s x{g['rps_on_over_off']} (on / off), p50 "
                         f"{off['p50_ms']:.2f} -> {on['p50_ms']:.2f} ms, p99 {off['p99_ms']:.2f} -> "
                         f"{on['p99_ms']:.2f} ms (off -> on).")
    return lines


def render_websockets(ws):
    if not ws:
        return []
    head = (f"WebSockets: {ws['sockets']:,} idle sockets ({ws['sessions']:,} sessions x {ws['sockets_per_session']}) "
            "to one echo upstream, through nginx's WebSocket proxy, then through Vestibule (Redis store); "
            f"{ws['round_trips']:,} round trips one at a time on {ws['round_trip_sockets']} of them.")
    if ws.get("scaled_down"):
        head += f" Scaled down: {ws['scaled_down']}."
    if ws.get("not_measured"):
        return ["", head, "", f"Not measured: {ws['not_measured']}"]
    lines = ["", head, "",
             "| proxy | sockets open | open s | RSS MB before / open / after one message each | kB per socket "
             "(idle / after a message) | fds per socket | round trip p50 ms | p99 ms |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    d = ws.get("direct") or {}
    lines.append(f"| none (echo upstream alone) | | | | | | {fmt(d.get('rtt_p50_ms'), 3)} | {fmt(d.get('rtt_p99_ms'), 3)} |")
    for key, label in (("nginx", "nginx"), ("vestibule", "Vestibule")):
        p = ws.get(key) or {}
        if "kb_per_socket_idle" not in p:
            lines.append(f"| {label} | not measured | | | | | | |")
            continue
        lines.append(f"| {label} | {p['opened']:,} | {p['open_s']} | {p['rss_mb_before']} / {p['rss_mb_idle']} / "
                     f"{p['rss_mb_after_one_message']} | {fmt(p['kb_per_socket_idle'], 1)} / "
                     f"{fmt(p['kb_per_socket_after_one_message'], 1)} | {p['fds_per_socket']} | "
                     f"{fmt(p.get('rtt_p50_ms'), 3)} | {fmt(p.get('rtt_p99_ms'), 3)} |")
    v, e = ws.get("vestibule") or {}, ws.get("end_to_close") or {}
    if "idle_cpu_percent" in v:
        lines.append(f"\nHolding them ({v['idle_window_s']} s): Vestibule CPU {v['idle_cpu_percent']}%, Redis "
                     f"{v['idle_redis_commands_per_s']} commands/s ({v['idle_redis_commands']}).")
    if e:
        lines.append(f"\nSession end to close: {e['sessions_ended']} sessions ended at once by logout "
                     f"(answer p50 {fmt(e['logout_answer_p50_ms'])} ms) while all sockets were open; "
                     f"{e['closed_4401']} of their {e['sockets_of_ended_sessions']} sockets closed with 4401 "
                     f"({', '.join(e['close_reasons'])}), from the logout's sending: p50 {fmt(e['p50_ms'])} ms, "
                     f"p99 {fmt(e['p99_ms'])} ms, max {fmt(e['max_ms'])} ms (from its answer: p50 "
                     f"{fmt(e['after_logout_answer_p50_ms'])} ms, max {fmt(e['after_logout_answer_max_ms'])} ms); "
                     f"of the {e['sockets_of_other_sessions']:,} other sockets {e['other_sockets_closed']} closed, "
                     f"{e['other_sockets_not_echoing']} did not echo afterwards.")
    return lines


def render_login_flood(lf):
    if not lf:
        return []
    head = (f"Login flood (anonymous `GET /api/auth/login`, {lf['connections']} connections): "
            f"max_pending_total {lf['max_pending_total']}, max_pending_per_browser "
            f"{lf['max_pending_per_browser']}, {lf['rate_limit_per_minute']}/min burst "
            f"{lf['rate_limit_burst']} per address; {lf.get('elapsed_s')} s.")
    if lf.get("not_measured"):
        return ["", head, "", f"Not measured: {lf['not_measured']}"]
    lines = ["", head, "",
             "| phase | starts | 303 | 429 | 5xx | s | pending logins after |",
             "|---|---:|---:|---:|---:|---:|---|"]
    phases = [
        ("A one address", "single_address", lambda p: f"{p['pending_after']} in Redis"),
        ("C one browser, many addresses", "one_browser",
         lambda p: f"{p['pending_after_concurrent']} of this browser after the concurrent starts, "
                   f"{p['pending_final']} at the end (newest kept: {p['newest_kept']})"),
        ("B many addresses, no cookie", "many_addresses",
         lambda p: f"{p['pending_after']} in Redis, {p['overshoot']} over the cap, {p['orphans']} orphan entries"),
        ("M same as B, in-memory store", "memory_store",
         lambda p: f"in Vestibule; RSS grew {p['rss_growth_at_cap_mb']} MB while at the cap"),
    ]
    n = lf.get("nat") or {}
    if n:
        lines.append(f"| N one NAT address, {n['browsers']} browsers, whole logins | {n['browsers']} | "
                     f"{n['logged_in']} logged in | {n['failed']} failed | | {n['elapsed_s']} | "
                     f"{n['logins_per_s']} logins/s over {n['connections']} connections |")
    for label, key, after in phases:
        p = lf.get(key) or {}
        if not p:
            continue
        lines.append(f"| {label} | {p['requests']} | {p['admitted_303']} | {p['refused_429']} | "
                     f"{p['server_errors']} | {p['elapsed_s']} | {after(p)} |")
    b, m = lf.get("many_addresses") or {}, lf.get("memory_store") or {}
    if b:
        lines += ["", "| login flood figure | value |", "|---|---:|",
                  f"| pending login record value bytes (returnTo of {b['return_to_bytes']} bytes) | "
                  f"{fmt(b['record_value_bytes'])} |",
                  f"| Redis used_memory growth, bytes (baseline to end) | {b['redis_growth_bytes']:,} |",
                  f"| Redis growth while at the cap (second half of B), bytes | {b['redis_growth_at_cap_bytes']:,} |",
                  f"| Redis bytes per pending login (growth / pending) | {fmt(b['redis_bytes_per_pending_login'], 1)} |",
                  f"| Redis MEMORY USAGE per pending login (record + browser index + share of global index) | "
                  f"{fmt(b['redis_memory_usage_per_pending_login'], 1)} |",
                  f"| Vestibule RSS MB, Redis store: before / at cap / after / peak | {b['vestibule_rss_mb_before']} / "
                  f"{b['vestibule_rss_mb_at_cap']} / {b['vestibule_rss_mb_after']} / {b['vestibule_peak_rss_mb']} |",
                  f"| login starts per second, Redis store (B) | {fmt(b['req_per_s'], 0)} |",
                  f"| ERROR log lines written during B | {b['error_log_lines']} |",
                  f"| displacement warnings during B (at most one a minute) | {b['displaced_warnings']} |"]
    if m:
        lines += [f"| Vestibule RSS MB, in-memory store: before / at cap / after / peak | {m['vestibule_rss_mb_before']} / "
                  f"{m['vestibule_rss_mb_at_cap']} / {m['vestibule_rss_mb_after']} / {m['vestibule_peak_rss_mb']} |",
                  f"| login starts per second, in-memory store (M) | {fmt(m['req_per_s'], 0)} |"]
    return lines


# Issue 34's "sessions per GB of Redis": each figure from the bytes per session it is derived from.
SESSIONS_PER_GB = [("sessions_per_gb_redis", "redis_bytes_per_session")] + [
    (f"sessions_per_gb_redis_{n}_credentials", f"redis_bytes_per_session_{n}_credentials") for n in (0, 1, 3, 5)] + [
    ("sessions_per_gb_redis_no_escrow", "redis_bytes_per_session_no_escrow"),
    ("sessions_per_gb_redis_record_only", "redis_bytes_per_session_record_only")]


def sessions_per_gb(out, notes):
    """Sessions one GB (10^9 bytes) of Redis used_memory holds: 10^9 / bytes per session, for
    store scale's figure and credential-memory's per number of extra credentials. A figure
    whose source was not measured is null with that reason (the source already fails the run)."""
    for k, source in SESSIONS_PER_GB:
        per_session = out.get(source)
        out[k] = round(1e9 / per_session) if per_session else None
        if out[k] is None and source in notes:
            notes[k] = f"{source} not measured"


def assemble(b, only, elapsed_s):
    """The results document (latest.json) of a finished run `b`."""
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "quick": b.quick,
        "load": {"wrk": "-t2 -c32 --latency keep-alive", "duration_s": b.duration,
                 "warmup_s": b.warmup, "runs": b.runs, "nginx_worker_processes": 1},
        "configs": {n: b.cfg.get(n, {"rps": None, "p50_ms": None, "p99_ms": None, "runs": []}
                                 if n in b.parts else {"rps": None, "p50_ms": None, "p99_ms": None,
                                                       "runs": [], "not_run": "left out by --only"})
                    for n in CONFIGS},
    }
    for k in ("redis_commands_per_request", "refresh_grants_per_expiry", "refresh_failed_requests",
              "redis_bytes_per_session", "p50_ms_1k_sessions", "p50_ms_100k_sessions", "p50_ms_1m_sessions",
              "login_ms_p50"):
        out[k] = b.res.get(k)
    rss = b.peak_rss
    out["peak_rss_mb"] = max(rss.values()) if rss else None
    if not rss:
        b.notes["peak_rss_mb"] = "no Vestibule process ran"
    out["peak_rss_mb_by_process"] = rss
    out["cpu_percent"] = {n: (b.cfg.get(n) or {}).get("cpu_percent") for n in CONFIGS}
    for k, v in b.res.items():
        out.setdefault(k, v)
    sessions_per_gb(out, b.notes)
    out["targets"] = targets(out, b.parts)
    out["ratios"] = {t["target"]: t["value"] for t in out["targets"]}
    out["problems"] = b.problems
    out["not_measured"] = b.notes
    # Everything selected that has no figure: a run with any fails (bench.py exits 1).
    out["unmeasured"] = b.failures + [f"target {t['target']}: NOT MEASURED" for t in out["targets"]
                                      if t["result"] == "NOT MEASURED"]
    out["elapsed_s"] = elapsed_s
    out["only"] = only
    return out


def write(out, published):
    """Writes latest.json and latest.md (bench/results for a full run of everything, else
    target/bench/results, where each run also keeps a copy named by its time); returns the
    markdown and the folder."""
    results = RESULTS if published else os.path.join(WORK, "results")
    os.makedirs(results, exist_ok=True)
    md = render_md(out)
    names = ["latest"]
    if not published:
        names.append("run-" + out["date"].replace(":", "").replace("+0000", "Z"))
    for name in names:
        with open(os.path.join(results, f"{name}.json"), "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        with open(os.path.join(results, f"{name}.md"), "w") as f:
            f.write(md)
    return md, results
