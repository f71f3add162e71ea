"""The login-flood phase (issue 9, item 7): anonymous login starts must not grow the store
(Redis or in memory) without bound. A mixin of load.Bench, which supplies key, quick, res,
problems and not_measured."""

import concurrent.futures
import statistics
import time
import traceback
import urllib.parse

from .clients import (LOGIN_COOKIE, flood_address, login, login_browser_key, login_flood, login_member,
                      login_record_key, merge_floods, status_counts)
from .context import STACK, Skip, log
from .processes import count_in_log, free_port, stop, tail, vm_hwm_mb, vm_rss_mb
from .resp import redis_cmd, redis_count_keys, redis_info
from .servers import start_provider, start_redis, start_vestibule


class LoginFlood:


    def run_login_flood(self):
        """Anonymous login starts cannot grow the store without bound (issue 9, item 7).

        N: a NAT: many distinct browsers log in (the whole flow) through one address, at the
        default rate limit: every one must get in (issue 22);
        A: one client address hammers /api/auth/login at the default rate limit (the burst and
        what the rate refills get in, the rest is refused);
        C: one browser (its login cookie) starts many logins from many addresses (it keeps
        only its newest max_pending_per_browser); B: many addresses, no cookie, the largest
        returnTo (the cap on logins in progress holds: the oldest are displaced; Redis and Vestibule memory
        stay flat once there); M: B again against the in-memory store (Vestibule's RSS)."""
        q = self.quick
        cap = 200 if q else 2000
        per_browser, conns = 5, 4
        # the rate limit is left at its defaults (src/config/file.rs): what a NAT gets
        rate, burst = 300, 1200
        n_nat, nat_conns = (100, 8) if q else (1000, 16)
        n_single, n_browser, n_many = (3 * burst, 200, 2000) if q else (6 * burst, 2000, 20000)
        half = n_many // 2  # B and M in two halves: filling the cap, then at the cap
        return_to = "/" + "r" * 2000  # near Vestibule's 2048-byte limit: the largest record
        query = "returnTo=" + urllib.parse.quote(return_to, safe="/")
        f = self.res["login_flood"] = {
            "max_pending_total": cap, "max_pending_per_browser": per_browser,
            "rate_limit_per_minute": rate, "rate_limit_burst": burst, "connections": conns,
            "trusted_proxies": ["127.0.0.1"],
            # 16 MB at the full run's cap of 2000 (8 kB per pending login), scaled with the cap
            "redis_growth_limit_mb": round(16.0 * cap / 2000, 2),
        }
        extra = f"""
[server]
trusted_proxies = ["127.0.0.1"]

[login]
max_pending_per_browser = {per_browser}
max_pending_total = {cap}
"""
        started = []
        t_phase = time.monotonic()
        try:
            rport, rp = start_redis("redis-flood")
            started.append(rp)
            vport, mport = free_port(), free_port()
            issuer, op = start_provider(
                "provider-flood", [f"http://127.0.0.1:{p}{STACK['vestibule']['callback_path']}" for p in (vport, mport)], 3600)
            started.append(op)
            up_port = getattr(self, "up_port", None) or free_port()  # no route is called
            v = start_vestibule("vestibule-flood", vport, issuer, up_port, self.key, rport, extra=extra)
            started.append(v)
            # one start first: Vestibule's first use of Redis (client tracking, its cache probe)
            # costs a one-off ~150 kB that is not the pending logins' doing
            warm = login_flood(vport, 1, 1, lambda i: {"X-Forwarded-For": flood_address(131071)})
            if not warm["admitted"]:
                raise Skip(f"first login start answered {warm['status']}{tail('vestibule-flood')}")
            log(f"login flood: Redis store, max_pending_total {cap}, max_pending_per_browser "
                f"{per_browser}, {rate}/min burst {burst} per address (the defaults), {conns} connections")

            # N. a NAT: distinct browsers, one address, whole logins (start, provider, callback)
            nat = "192.0.2.50"
            start_url = f"http://127.0.0.1:{vport}/api/auth/login"
            session_cookie = STACK["vestibule"]["session_cookie"]

            def nat_login(i):
                return bool(login(start_url, session_cookie, vestibule_headers={"X-Forwarded-For": nat}))

            t0 = time.monotonic()
            failures = []
            with concurrent.futures.ThreadPoolExecutor(nat_conns) as pool:
                futures = [pool.submit(nat_login, i) for i in range(n_nat)]
                for fut in futures:
                    try:
                        if not fut.result():
                            failures.append("no session cookie")
                    except Exception as e:  # noqa: BLE001 - a failed login is a figure here
                        failures.append(f"{type(e).__name__}: {e}")
            n_elapsed = time.monotonic() - t0
            nf = f["nat"] = {
                "browsers": n_nat, "connections": nat_conns, "logged_in": n_nat - len(failures),
                "failed": len(failures), "first_failure": failures[0][:200] if failures else None,
                "elapsed_s": round(n_elapsed, 2), "logins_per_s": round(n_nat / n_elapsed, 1),
            }
            log(f"  N one NAT address: {n_nat} browsers, whole logins over {nat_conns} connections -> "
                f"{nf['logged_in']} logged in, {nf['failed']} failed in {nf['elapsed_s']} s "
                f"({nf['logins_per_s']} logins/s)" + (f"; first failure: {nf['first_failure']}" if failures else ""))

            # the flood's baseline: after the NAT's sessions, which are not pending logins
            mem0 = int(redis_info(rport, "memory")["used_memory"])
            pend_base = redis_cmd(rport, "ZCARD", "vestibule:pending-logins")

            # A. one address
            single = "203.0.113.7"
            ra = login_flood(vport, n_single, conns, lambda i: {"X-Forwarded-For": single})
            a = f["single_address"] = status_counts(ra)
            a["admitted_limit"] = round(burst + rate * ra["elapsed_s"] / 60 + 1, 2)
            a["pending_after"] = redis_count_keys(rport, "vestibule:login:*") - pend_base
            log(f"  A one address: {a['requests']} starts in {a['elapsed_s']} s -> {a['admitted_303']} "
                f"admitted (limit {a['admitted_limit']}), {a['refused_429']} x 429; "
                f"{a['pending_after']} pending logins in Redis")

            # C. one browser: its login cookie on every start, from changing addresses (so that
            # the rate limit does not hide the per-browser cap)
            r0 = login_flood(vport, 1, 1, lambda i: {"X-Forwarded-For": flood_address(65536)})
            if not r0["admitted"] or not r0["admitted"][0][2]:
                raise Skip(f"first login start of the browser: {r0['status']}, no {LOGIN_COOKIE} cookie")
            cookie = r0["admitted"][0][2]
            bkey = login_browser_key(cookie)

            def browser(i):
                return {"X-Forwarded-For": flood_address(65537 + i), "Cookie": f"{LOGIN_COOKIE}={cookie}"}

            rc = login_flood(vport, n_browser, conns, browser)
            after_concurrent = redis_cmd(rport, "ZCARD", bkey)
            # then max_pending_per_browser starts one after the other: exactly these must be left
            rs = login_flood(vport, per_browser, 1, lambda i: browser(n_browser + i))
            final = set(redis_cmd(rport, "ZRANGE", bkey, 0, -1))
            newest = [login_member(s) for _, s, _ in rs["admitted"]]
            older = [login_record_key(s) for _, s, _ in r0["admitted"] + rc["admitted"]]
            older_left = sum(redis_cmd(rport, "EXISTS", *older[i:i + 500]) for i in range(0, len(older), 500))
            c = f["one_browser"] = status_counts(merge_floods(rc, rs))
            c.update({
                "pending_after_concurrent": after_concurrent,
                "pending_final": len(final),
                "newest_kept": final == set(newest)
                and redis_cmd(rport, "EXISTS", *[login_record_key(m, True) for m in newest]) == len(newest),
                "older_records_left": older_left,
                "cookie_reused": all(ck == cookie for _, _, ck in rc["admitted"] + rs["admitted"]),
            })
            log(f"  C one browser: {c['requests']} starts ({conns} connections, then {per_browser} one by one) -> "
                f"{c['admitted_303']} admitted; its pending logins: {after_concurrent} after the concurrent "
                f"starts, {len(final)} at the end (newest {per_browser} kept: {c['newest_kept']}; "
                f"older records left: {older_left}; same cookie: {c['cookie_reused']})")

            # B. many addresses, no cookie, largest returnTo
            pend0 = redis_cmd(rport, "ZCARD", "vestibule:pending-logins")
            rss0 = vm_rss_mb(v.pid)
            err0 = count_in_log("vestibule-flood", " ERROR ")
            rb1 = login_flood(vport, half, conns, lambda i: {"X-Forwarded-For": flood_address(i)}, query)
            mem1 = int(redis_info(rport, "memory")["used_memory"])
            pend1 = redis_cmd(rport, "ZCARD", "vestibule:pending-logins")
            rss1 = vm_rss_mb(v.pid)
            rb2 = login_flood(vport, n_many - half, conns,
                              lambda i: {"X-Forwarded-For": flood_address(half + i)}, query)
            mem2 = int(redis_info(rport, "memory")["used_memory"])
            rss2 = vm_rss_mb(v.pid)
            indexed = redis_cmd(rport, "ZRANGE", "vestibule:pending-logins", 0, -1)
            # members of the index of all: "<login hash>:<its browser index's hash>"
            indexed_keys = [login_record_key(m.split(":")[0], True) for m in indexed]
            present = sum(redis_cmd(rport, "EXISTS", *indexed_keys[i:i + 500])
                          for i in range(0, len(indexed_keys), 500))
            records = redis_count_keys(rport, "vestibule:login:*")
            browsers = redis_count_keys(rport, "vestibule:login-browser:*")
            # what one pending login costs, key by key: its record, its browser's index (one
            # per anonymous start) and its share of the global index
            sample = rb2["admitted"][-50:]  # the newest: still pending (older ones are displaced)
            rec = [redis_cmd(rport, "MEMORY", "USAGE", login_record_key(s)) for _, s, _ in sample]
            idx = [redis_cmd(rport, "MEMORY", "USAGE", login_browser_key(ck)) for _, _, ck in sample if ck]
            rec, idx = [x for x in rec if x], [x for x in idx if x]
            all_idx = redis_cmd(rport, "MEMORY", "USAGE", "vestibule:pending-logins", "SAMPLES", "0") or 0
            value_len = redis_cmd(rport, "STRLEN", login_record_key(sample[0][1])) if sample else None
            b = f["many_addresses"] = status_counts(merge_floods(rb1, rb2))
            per_login = (statistics.mean(rec) + statistics.mean(idx) + all_idx / max(len(indexed), 1)
                         if rec and idx else None)
            b.update({
                "pending_before": pend0,
                "pending_after_first_half": pend1,
                "pending_after": len(indexed),
                "records_after": records,
                "browser_indexes_after": browsers,
                "orphans": (len(indexed) - present) + (records - present) + max(0, browsers - records),
                "return_to_bytes": len(return_to),
                "record_value_bytes": value_len,
                "redis_used_memory_before": mem0,
                "redis_used_memory_at_cap": mem1,
                "redis_used_memory_after": mem2,
                "redis_growth_bytes": mem2 - mem0,
                "redis_growth_mb": round((mem2 - mem0) / 1e6, 3),
                "redis_growth_at_cap_bytes": mem2 - mem1,
                "redis_bytes_per_pending_login":
                    round((mem2 - mem0) / (len(indexed) - pend_base), 1) if len(indexed) > pend_base else None,
                "overshoot": max(0, len(indexed) - cap),
                "displaced_warnings": count_in_log("vestibule-flood", "login.max_pending_total reached"),
                "redis_memory_usage_per_pending_login": round(per_login, 1) if per_login else None,
                "redis_growth_limit_bytes": round(cap * per_login * 1.5) if per_login else None,
                "vestibule_rss_mb_before": round(rss0, 1),
                "vestibule_rss_mb_at_cap": round(rss1, 1),
                "vestibule_rss_mb_after": round(rss2, 1),
                "vestibule_peak_rss_mb": round(vm_hwm_mb(v.pid), 1),
                "error_log_lines": count_in_log("vestibule-flood", " ERROR ") - err0,
            })
            log(f"  B many addresses: {b['requests']} starts in {b['elapsed_s']} s ({b['req_per_s']} req/s) -> "
                f"{b['admitted_303']} admitted (the oldest displaced past the cap), {b['refused_429']} x 429; pending "
                f"{pend0} -> {pend1} -> {len(indexed)} (cap {cap}); Redis +{mem2 - mem0} B "
                f"({b['redis_bytes_per_pending_login']} B per pending login, MEMORY USAGE "
                f"{b['redis_memory_usage_per_pending_login']}), +{mem2 - mem1} B at the cap; Vestibule RSS "
                f"{rss0:.1f} -> {rss1:.1f} -> {rss2:.1f} MB, peak {b['vestibule_peak_rss_mb']} MB; "
                f"{b['error_log_lines']} ERROR log lines, {b['displaced_warnings']} displacement warnings")
            stop(v)

            # M. the same flood against the in-memory store: the pending logins live in Vestibule
            vm = start_vestibule("vestibule-flood-memory", mport, issuer, up_port, self.key, None, extra=extra)
            started.append(vm)
            # warm-up: 2 x burst starts from one address (the 303 and the 429 paths)
            wm = login_flood(mport, 2 * burst, 1, lambda i: {"X-Forwarded-For": flood_address(131071)})
            rss0 = vm_rss_mb(vm.pid)
            rm1 = login_flood(mport, half, conns, lambda i: {"X-Forwarded-For": flood_address(i)}, query)
            rss1 = vm_rss_mb(vm.pid)
            rm2 = login_flood(mport, n_many - half, conns,
                              lambda i: {"X-Forwarded-For": flood_address(half + i)}, query)
            rss2 = vm_rss_mb(vm.pid)
            m = f["memory_store"] = status_counts(merge_floods(rm1, rm2))
            m.update({
                "admitted_first_half": status_counts(rm1)["admitted_303"],
                "warmup_admitted": status_counts(wm)["admitted_303"],
                # the in-memory count is not visible from outside: a flat RSS while at the cap is
                "rss_growth_at_cap_mb": round(rss2 - rss1, 1),
                "vestibule_rss_mb_before": round(rss0, 1),
                "vestibule_rss_mb_at_cap": round(rss1, 1),
                "vestibule_rss_mb_after": round(rss2, 1),
                "vestibule_peak_rss_mb": round(vm_hwm_mb(vm.pid), 1),
            })
            log(f"  M in-memory store: {m['requests']} starts in {m['elapsed_s']} s ({m['req_per_s']} req/s) -> "
                f"{m['admitted_303']} admitted; Vestibule RSS {rss0:.1f} -> "
                f"{rss1:.1f} -> {rss2:.1f} MB, peak {m['vestibule_peak_rss_mb']} MB")
            stop(vm)

            phases = (a, c, b, m)
            if nf["failed"]:
                self.problems.append(f"login flood N: {nf['failed']} of {n_nat} NAT logins failed "
                                     f"({nf['first_failure']})")
            if not a["refused_429"]:
                self.problems.append(f"login flood A: none of {n_single} starts from one address refused")
            f["server_errors"] = sum(p["server_errors"] for p in phases)
            f["vestibule_peak_rss_mb"] = max(b["vestibule_peak_rss_mb"], m["vestibule_peak_rss_mb"])
            for name, p in zip(("A one address", "C one browser", "B many addresses", "M in-memory store"), phases):
                if p["connection_errors"] or p["other_status"] or p["refusals_without_retry_after"]:
                    self.problems.append(f"login flood {name}: {p['connection_errors']} connection errors, "
                                         f"{p['other_status']} unexpected statuses, "
                                         f"{p['refusals_without_retry_after']} refusals without Retry-After")
            if len(indexed) < cap or m["admitted_first_half"] < cap:
                self.problems.append(f"login flood: the cap of {cap} was not reached (Redis {len(indexed)} "
                                     f"pending, in-memory {m['admitted_first_half']} admitted): not tested")
            if c["admitted_303"] <= per_browser:
                self.problems.append("login flood C: too few admitted starts to test the per-browser cap")
            if not c["newest_kept"] or not c["cookie_reused"]:
                self.problems.append(f"login flood C: newest {per_browser} logins kept: {c['newest_kept']}, "
                                     f"the browser's cookie reused: {c['cookie_reused']}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            f["not_measured"] = f"{type(e).__name__}: {e}"
            self.not_measured("login_flood", f["not_measured"])
        finally:
            for p in reversed(started):
                stop(p)
        f["elapsed_s"] = round(time.monotonic() - t_phase, 1)
        log(f"  login flood: {f['elapsed_s']} s")
