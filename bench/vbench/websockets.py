"""The WebSocket part (issue 30): many idle WebSockets held through Vestibule and, in the same
run, through nginx's WebSocket proxy, to one echo upstream (wsecho.py): each proxy's memory
(RSS growth / sockets) and file descriptors per socket, message round trips through each,
and, through Vestibule, the time from a session's end (a logout) to the close frame (4401) of
each of its sockets while all the others stay open. A mixin of load.Bench, which supplies
key, quick, res, problems and not_measured."""

import asyncio
import concurrent.futures
import http.client
import math
import os
import resource
import time
import traceback

from .clients import login
from .context import CALLBACK, CSRF, FOREIGN_LIMIT, ROOT, SESSION_COOKIE, log
from .processes import Contention, CpuMeter, free_port, port_open, proc_tree, start, stop, vm_rss_mb, wait_for
from .resp import redis_cmdstats
from .servers import UNLIMITED_LOGINS, start_nginx_websocket_proxy, start_provider, start_redis, start_vestibule
from .wsclient import close_all, echo_each, open_many, rtt_ms

# Full run: 1,000 sessions x 10 sockets (a user's few tabs, under the default
# server.max_websockets_per_session of 16, which the benchmark leaves as it is); one session
# in ten is ended while all are open. --quick: 20 x 10. Fewer where the file-descriptor
# limit cannot be raised (see run_websockets).
SESSIONS, QUICK_SESSIONS = 1000, 20
PER_SESSION = 10
ENDED_EVERY = 10  # sessions 0, 10, 20, ... are ended
# Vestibule's route for the sockets (the rest of /api goes to the same upstream, unused).
WS_PATH = "/api/ws/feed"
# Descriptors a proxy needs besides two per relay (listener, Redis, provider, logs, epoll).
FD_HEADROOM = 200


def percentile(values, p):
    """The p-th percentile (nearest rank) of `values`, None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def rounded(x, nd=2):
    return None if x is None else round(x, nd)


def fds(pid):
    """Open file descriptors of a process tree (nginx: master and workers)."""
    n = 0
    for p in proc_tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def rss_mb(pid):
    """Resident memory of a process tree, MB."""
    return sum(vm_rss_mb(p) or 0 for p in proc_tree(pid))


def raise_fd_limit(want):
    """Raises this process's file-descriptor limit (inherited by what it starts) to `want` if
    it can; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def logout(port, cookie):
    """POST /api/auth/logout; returns (monotonic time sent, time answered, status)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.connect()
        sent = time.monotonic()
        c.request("POST", "/api/auth/logout", headers={"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF: "1",
                                                       "Content-Length": "0"})
        r = c.getresponse()
        r.read()
        return sent, time.monotonic(), r.status
    finally:
        c.close()


class WebSockets:

    def run_websockets(self):
        wanted = QUICK_SESSIONS if self.quick else SESSIONS
        # A proxy holds two descriptors per relay (browser and upstream side): where the
        # limit cannot be raised enough (a hard limit of 20,000 and no CAP_SYS_RESOURCE, as
        # on the project's machines), fewer sessions, in whole steps of ENDED_EVERY.
        limit = raise_fd_limit(65536)
        fit = (limit - FD_HEADROOM) // 2 // (PER_SESSION * ENDED_EVERY) * ENDED_EVERY
        sessions = min(wanted, fit)
        n = sessions * PER_SESSION
        ws = self.res["websockets"] = {
            "sockets": n, "sessions": sessions, "sockets_per_session": PER_SESSION,
            "ended_sessions": len(range(0, sessions, ENDED_EVERY)), "fd_limit": limit,
            "vestibule_max_connections": n + 2000, "websocket_idle_timeout_secs": 3600,
            "round_trips": 200 if self.quick else 1000, "round_trip_sockets": 2 if self.quick else 4,
        }
        if sessions < wanted:
            ws["scaled_down"] = (f"{n:,} sockets instead of {wanted * PER_SESSION:,}: ulimit -n is {limit:,} "
                                 "and cannot be raised here (a proxy needs two descriptors per socket)")
            log(f"websockets: {ws['scaled_down']}")
        started = []
        try:
            if sessions < ENDED_EVERY:
                raise RuntimeError(f"ulimit -n is {limit}: too low for the WebSocket part")
            self.websockets_measure(ws, sessions, n, started)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            ws["not_measured"] = f"{type(e).__name__}: {e}"
            self.not_measured("websockets", ws["not_measured"])
        finally:
            for p in reversed(started):
                stop(p)

    def websockets_measure(self, ws, sessions, n, started):
        echo_port = free_port()
        echo = start("ws-echo", ["python3", "-m", "vbench.wsecho", str(echo_port)], cwd=os.path.join(ROOT, "bench"))
        started.append(echo)
        wait_for("WebSocket echo upstream", lambda: port_open(echo_port), echo, 15, "ws-echo")
        nport, nginx = start_nginx_websocket_proxy(echo_port, n)
        started.append(nginx)
        rport, rp = start_redis("redis-websockets")
        started.append(rp)
        vport = free_port()
        issuer, op = start_provider("provider-websockets", [f"http://127.0.0.1:{vport}{CALLBACK}"], 3600)
        started.append(op)
        extra = UNLIMITED_LOGINS + f"""
[server]
max_connections = {ws['vestibule_max_connections']}
websocket_idle_timeout_secs = {ws['websocket_idle_timeout_secs']}

[[routes]]
prefix = "/api/ws"
upstream = "http://127.0.0.1:{echo_port}"
websocket = true
"""
        v = start_vestibule("vestibule-websockets", vport, issuer, echo_port, self.key, rport, extra=extra)
        started.append(v)

        log(f"websockets: logging {sessions} sessions in (distinct users)")
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            cookies = list(ex.map(lambda i: login(f"http://127.0.0.1:{vport}/api/auth/login", SESSION_COOKIE,
                                                  user=f"ws{i}"), range(sessions)))
        ws["login_s"] = round(time.monotonic() - t0, 1)
        self.echo_pid = echo.pid
        asyncio.run(self.websockets_async(ws, cookies, n, echo_port, (nport, nginx.pid), (vport, v.pid), rport))

    async def websockets_async(self, ws, cookies, n, echo_port, nginx, vestibule, rport):
        rtts, rtt_sockets = ws["round_trips"], ws["round_trip_sockets"]

        # The echo upstream alone: what any proxy adds to.
        direct, errors = await open_many(echo_port, "/", lambda i: ({}, None), rtt_sockets)
        if errors:
            raise RuntimeError(f"the echo upstream refused sockets: {errors[:3]}")
        await rtt_ms(direct, 50)
        d = await rtt_ms(direct, rtts)
        ws["direct"] = {"rtt_p50_ms": rounded(percentile(d, 50), 3), "rtt_p99_ms": rounded(percentile(d, 99), 3)}
        close_all(direct)

        nport, npid = nginx
        ws["nginx"] = await self.websockets_hold("nginx", nport, npid, "/feed", lambda i: ({}, None), n, rtts,
                                                 rtt_sockets, None)

        vport, vpid = vestibule
        origin = f"http://127.0.0.1:{vport}"

        def vestibule_socket(i):
            s = i // PER_SESSION
            return {"Origin": origin, "Cookie": f"{SESSION_COOKIE}={cookies[s]}"}, s

        ws["vestibule"] = await self.websockets_hold(
            "Vestibule", vport, vpid, WS_PATH, vestibule_socket, n, rtts, rtt_sockets,
            lambda sockets, out: self.websockets_end(ws, out, sockets, cookies, vport, vpid, rport))

    async def websockets_hold(self, name, port, pid, path, headers_for, n, rtts, rtt_sockets, then):
        """Opens n sockets through one proxy and measures it; `then(sockets, figures)` runs
        while they are open."""
        out = {}
        # Warm-up: a few sockets opened, used and closed, so that the figures below count
        # sockets, not the first allocations of a process that has served nothing yet.
        warm, errors = await open_many(port, path, lambda i: headers_for(i * PER_SESSION), min(50, n // PER_SESSION))
        if errors:
            raise RuntimeError(f"{name}: warm-up sockets refused: {errors[:3]}")
        await echo_each(warm)
        base_fds = None
        close_all(warm)
        for _ in range(100):  # until the proxy has let the warm-up sockets go
            await asyncio.sleep(0.1)
            f = fds(pid)
            if base_fds is not None and f == base_fds:
                break
            base_fds = f
        rss0, fds0, echo0 = rss_mb(pid), fds(pid), rss_mb(self.echo_pid)
        log(f"websockets through {name}: opening {n} sockets (RSS {rss0:.1f} MB, {fds0} fds)")
        sockets = []
        try:
            # Other processes' CPU from the first handshake to the last round trip: seconds,
            # so that their CPU ticks (1/100 s) say something.
            with Contention() as busy:
                t0 = time.monotonic()
                sockets, errors = await open_many(port, path, headers_for, n)
                out.update({"open_s": round(time.monotonic() - t0, 2), "opened": len(sockets),
                            "open_errors": len(errors)})
                if errors:
                    self.problems.append(f"websockets through {name}: {len(errors)} of {n} sockets not opened, "
                                         f"e.g. {errors[0]}")
                if not sockets:
                    raise RuntimeError(f"{name}: no socket opened: {errors[:3]}")
                await asyncio.sleep(1)
                rss1, fds1, echo1 = rss_mb(pid), fds(pid), rss_mb(self.echo_pid)
                k = len(sockets)
                echo_errors = await echo_each(sockets)
                await asyncio.sleep(1)
                rss2 = rss_mb(pid)
                r = await rtt_ms(sockets[:rtt_sockets], rtts)
            out.update({
                "rss_mb_before": round(rss0, 1), "rss_mb_idle": round(rss1, 1), "rss_mb_after_one_message": round(rss2, 1),
                "kb_per_socket_idle": round((rss1 - rss0) * 1024 / k, 2),
                "kb_per_socket_after_one_message": round((rss2 - rss0) * 1024 / k, 2),
                "fds_before": fds0, "fds_open": fds1, "fds_per_socket": round((fds1 - fds0) / k, 2),
                "echo_errors": len(echo_errors),
                "echo_upstream_kb_per_socket_idle": round((echo1 - echo0) * 1024 / k, 2),
                "rtt_p50_ms": rounded(percentile(r, 50), 3), "rtt_p99_ms": rounded(percentile(r, 99), 3),
            })
            self.websockets_busy(out, "measure", busy, f"sockets through {name}")
            if echo_errors:
                self.problems.append(f"websockets through {name}: {len(echo_errors)} sockets did not echo, "
                                     f"e.g. {echo_errors[0]}")
            log(f"  {k} sockets in {out['open_s']} s: {out['kb_per_socket_idle']} kB/socket idle, "
                f"{out['kb_per_socket_after_one_message']} kB after one message each, {out['fds_per_socket']} fds/socket; "
                f"round trip p50 {out['rtt_p50_ms']} ms p99 {out['rtt_p99_ms']} ms")
            if then is not None:
                await then(sockets, out)
        finally:
            close_all(sockets)
        return out

    def websockets_busy(self, figures, what, busy, label):
        """Notes the CPU other processes used while `what` was measured; a busy machine makes
        latencies not comparable."""
        figures[f"{what}_foreign_cpu_percent"] = round(busy.foreign_percent, 1)
        if busy.foreign_percent > FOREIGN_LIMIT:
            self.problems.append(f"websockets, {label}: the machine was busy with other processes "
                                 f"({busy.foreign_percent:.0f}% CPU not from this benchmark): not comparable")

    async def websockets_end(self, ws, figures, sockets, cookies, vport, vpid, rport):
        """While every socket is open: Vestibule's cost of holding them (CPU, Redis commands),
        then one session in ten ended by a logout, each of its sockets timed to its close."""
        # 60 s: every watch's safety poll (one read per 30-60 s) falls in the window once.
        idle_s = 2 if self.quick else 60
        c0 = redis_cmdstats(rport)
        with CpuMeter(vpid) as m:
            await asyncio.sleep(idle_s)
        c1 = redis_cmdstats(rport)
        calls = {k: c1[k] - c0.get(k, 0) for k in c1 if c1[k] - c0.get(k, 0)}
        figures["idle_window_s"] = idle_s
        figures["idle_cpu_percent"] = round(m.percent, 1)
        figures["idle_redis_commands_per_s"] = round(sum(calls.values()) / idle_s, 1)
        figures["idle_redis_commands"] = calls
        log(f"  holding them: Vestibule CPU {m.percent:.1f}%, Redis {figures['idle_redis_commands_per_s']} "
            f"commands/s {calls}")

        ended = set(range(0, len(cookies), ENDED_EVERY))
        mine = [s for s in sockets if s.tag in ended]
        others = [s for s in sockets if s.tag not in ended]
        log(f"  ending {len(ended)} sessions ({len(mine)} sockets) at once by logout; {len(others)} sockets stay")
        loop = asyncio.get_running_loop()
        with Contention() as busy:  # until 3 s after the last close: long enough to count
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                answers = await asyncio.gather(*(loop.run_in_executor(ex, logout, vport, cookies[s])
                                                 for s in sorted(ended)))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(s.closed_at is None for s in mine):
                await asyncio.sleep(0.05)
            await asyncio.sleep(3)  # a close that should not come would come by now
        at = dict(zip(sorted(ended), answers))
        bad = [a[2] for a in answers if a[2] != 200]
        since_sent = [(s.closed_at - at[s.tag][0]) * 1000 for s in mine if s.closed_at is not None]
        since_answer = [(s.closed_at - at[s.tag][1]) * 1000 for s in mine if s.closed_at is not None]
        closed_4401 = sum(1 for s in mine if s.close_code == 4401)
        others_closed = [s for s in others if s.closed_at is not None]
        alive_errors = await echo_each([s for s in others if s.closed_at is None])
        e = ws["end_to_close"] = {
            "sessions_ended": len(ended), "logout_failures": len(bad),
            "logout_answer_p50_ms": rounded(percentile([(a[1] - a[0]) * 1000 for a in answers], 50)),
            "sockets_of_ended_sessions": len(mine), "closed": len(since_sent), "closed_4401": closed_4401,
            "close_reasons": sorted({f"{s.close_code} {s.close_reason}" for s in mine if s.closed_at is not None}),
            "p50_ms": rounded(percentile(since_sent, 50)), "p99_ms": rounded(percentile(since_sent, 99)),
            "max_ms": rounded(max(since_sent) if since_sent else None),
            "after_logout_answer_p50_ms": rounded(percentile(since_answer, 50)),
            "after_logout_answer_max_ms": rounded(max(since_answer) if since_answer else None),
            "sockets_of_other_sessions": len(others), "other_sockets_closed": len(others_closed),
            "other_sockets_not_echoing": len(alive_errors),
        }
        self.websockets_busy(e, "end", busy, "the session ends")
        if bad:
            self.problems.append(f"websockets: {len(bad)} logouts answered {sorted(set(bad))}")
        if others_closed:
            self.problems.append(f"websockets: {len(others_closed)} sockets of sessions not ended closed, e.g. "
                                 f"{others_closed[0].close_code} {others_closed[0].close_reason}")
        log(f"  session end -> close frame: {e['closed_4401']}/{e['sockets_of_ended_sessions']} closed with 4401 "
            f"({e['close_reasons']}); p50 {e['p50_ms']} ms p99 {e['p99_ms']} ms max {e['max_ms']} ms "
            f"(from the logout's answer: p50 {e['after_logout_answer_p50_ms']} ms); other sockets closed "
            f"{e['other_sockets_closed']}, not echoing {e['other_sockets_not_echoing']}")
