"""The deployment measurements of issue 12: scale-out (1, 2, 3 instances behind an nginx load
balancer, on one Redis and on a 3-master Redis Cluster) and redis-latency (Redis behind
Toxiproxy adding 1 ms per round trip, the per-instance cache on and off). A mixin of
load.Bench, which supplies key, quick, up_port, load, cfg, res and not_measured."""

import os
import traceback

from .context import CALLBACK, CSRF, SESSION_COOKIE, VESTIBULE_BIN, Skip, log
from .processes import free_port, stop, tail
from .servers import start_provider, start_redis, start_vestibule
from .topology import Toxiproxy, ping_p50_ms, start_balancer, start_redis_cluster

# Toxiproxy adds this much to every Redis answer (one round trip), about a cross-zone hop.
REDIS_LATENCY_MS = 1
NO_CACHE = "local_cache_entries = 0"


def knows_cluster_urls():
    """Whether this Vestibule binary parses `redis+cluster://` URLs at all (Cluster support is
    being added on main while this part is written; an older binary has no such string)."""
    with open(VESTIBULE_BIN, "rb") as f:
        return b"redis+cluster" in f.read()


class Deploy:

    # ---------------------------------------------------------------- scale-out
    def run_scale_out(self):
        """Proxied throughput and latency through nginx (round-robin, keep-alive) in front of
        1, 2 and 3 instances (quick: 1 and 3), on one Redis and on a 3-master Cluster. On 2
        cores more instances cannot add CPU: the figure shows what the extra hop and the
        spreading cost, and that nothing degrades."""
        counts = (1, 3) if self.quick else (1, 2, 3)
        so = self.res["scale_out"] = {"instances": list(counts), "one_redis": {}, "cluster": {}}
        started = []
        try:
            rport, rp = start_redis("redis-scale")
            started.append(rp)
            self.scale_out_series("one_redis", counts, f"redis://127.0.0.1:{rport}", [rport], [rp.pid])
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            so["one_redis"]["not_measured"] = f"{type(e).__name__}: {e}"
            self.not_measured("scale_out.one_redis", so["one_redis"]["not_measured"])
        finally:
            for p in started:
                stop(p)

        if not knows_cluster_urls():
            so["cluster"]["not_run"] = ("this Vestibule binary does not parse redis+cluster:// URLs "
                                        "(Redis Cluster support has not been merged into it)")
            log(f"scale-out on the Cluster: NOT RUN: {so['cluster']['not_run']}")
            return
        started = []
        try:
            ports, procs = start_redis_cluster("redis-cluster")
            started += procs
            url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
            log(f"Redis Cluster: {url}")
            self.scale_out_series("cluster", counts, url, ports, [p.pid for p in procs])
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            so["cluster"]["not_measured"] = f"{type(e).__name__}: {e}"
            self.not_measured("scale_out.cluster", so["cluster"]["not_measured"])
        finally:
            for p in started:
                stop(p)

    def scale_out_series(self, topology, counts, redis_url, redis_ports, redis_pids):
        """Three instances on `redis_url`; for each count, nginx over the first `count` of them
        loaded like every config. One session, logged in through the balancer."""
        out = self.res["scale_out"][topology]
        lb_port = free_port()
        ports = [free_port() for _ in range(max(counts))]
        issuer, op = start_provider(f"provider-{topology}", [f"http://127.0.0.1:{lb_port}{CALLBACK}"], 3600)
        instances = []
        try:
            for i, port in enumerate(ports, 1):
                instances.append(start_vestibule(f"vestibule-{topology}-{i}", port, issuer, self.up_port,
                                                 self.key, redis_url=redis_url, public_port=lb_port))
            hdr, cookie = None, None
            for n in counts:
                lb = start_balancer(f"lb-{topology}-{n}", lb_port, ports[:n])
                try:
                    if cookie is None:
                        cookie = self.vestibule_login(lb_port)
                        hdr = [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"]
                    self.prove_vestibule(f"{topology} x{n}", lb_port, cookie)
                    name = f"scale_out_{topology}_{n}"
                    also = {"nginx_lb": lb.pid, "redis": redis_pids}
                    also.update({f"instance_{i}": v.pid for i, v in enumerate(instances[:n], 1)})
                    cpr = self.load(name, lb_port, hdr, [v.pid for v in instances[:n]],
                                    redis_port=redis_ports, also=also)
                    fig = self.cfg.pop(name)
                    fig["redis_commands_per_request"] = round(cpr, 3) if cpr is not None else None
                    # how evenly round-robin spread the load
                    fig["cpu_percent_per_instance"] = [fig.pop(f"cpu_percent_instance_{i}") for i in range(1, n + 1)]
                    out[str(n)] = fig
                finally:
                    stop(lb)
        finally:
            for p in instances + [op]:
                stop(p)

    # ---------------------------------------------------------------- redis-latency
    def run_redis_latency(self):
        """Vestibule with its per-instance cache on and off, on plain loopback and behind a
        Toxiproxy that adds REDIS_LATENCY_MS to every Redis round trip."""
        rl = self.res["redis_latency"] = {"added_ms_per_round_trip": REDIS_LATENCY_MS, "cases": {}}
        started, tp = [], None
        try:
            rport, rp = start_redis("redis-latency")
            started.append(rp)
            tp = Toxiproxy()
            rl["proxy"] = (f"Toxiproxy {os.environ.get('TOXIPROXY_VERSION') or tp.version} "
                           "(latency toxic on the answers, jitter 0)")
            pport = tp.proxy("redis", rport)
            # The proxy's own cost, and the latency it adds, seen by one command at a time.
            rl["ping_p50_ms_direct"] = ping_p50_ms(rport)
            tp.set_latency("redis", 0)
            rl["ping_p50_ms_proxy_0ms"] = ping_p50_ms(pport)
            tp.set_latency("redis", REDIS_LATENCY_MS)
            rl["ping_p50_ms_proxy_latency"] = ping_p50_ms(pport, n=500)
            cases = [("loopback", True), ("loopback", False), ("latency", True), ("latency", False)]
            vports = {c: free_port() for c in cases}
            issuer, op = start_provider("provider-latency",
                                        [f"http://127.0.0.1:{p}{CALLBACK}" for p in vports.values()], 3600)
            started.append(op)
            for (path, cache), vport in vports.items():
                name = f"{path}_cache_{'on' if cache else 'off'}"
                try:
                    self.redis_latency_case(name, vport, issuer, rport if path == "loopback" else pport,
                                            cache, rport, rp.pid, tp.proc.pid if path == "latency" else None)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    rl["cases"][name] = {"not_measured": f"{type(e).__name__}: {e}"}
                    self.not_measured(f"redis_latency.{name}", rl["cases"][name]["not_measured"])
            c = rl["cases"]
            for path in ("loopback", "latency"):
                on, off = c.get(f"{path}_cache_on") or {}, c.get(f"{path}_cache_off") or {}
                if on.get("rps") and off.get("rps"):
                    rl[f"cache_gain_{path}"] = {
                        "rps_on_over_off": round(on["rps"] / off["rps"], 3),
                        "p50_ms_saved": round(off["p50_ms"] - on["p50_ms"], 3),
                        "p99_ms_saved": round(off["p99_ms"] - on["p99_ms"], 3),
                    }
                    log(f"  cache gain, {path}: req/s x{rl[f'cache_gain_{path}']['rps_on_over_off']}, "
                        f"p50 {rl[f'cache_gain_{path}']['p50_ms_saved']} ms less")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rl["not_measured"] = f"{type(e).__name__}: {e}"
            self.not_measured("redis_latency", rl["not_measured"])
        finally:
            for p in reversed(started):
                stop(p)
            if tp:
                tp.stop()

    def redis_latency_case(self, name, vport, issuer, redis_port_seen, cache, rport, redis_pid, proxy_pid):
        """One Vestibule whose Redis is at `redis_port_seen` (Redis itself or the proxy),
        logged in, proven and loaded; Redis's own command counts give the calls per request."""
        v = start_vestibule(f"vestibule-{name.replace('_', '-')}", vport, issuer, self.up_port, self.key,
                            redis_port_seen, session_extra="" if cache else NO_CACHE)
        try:
            cookie = self.vestibule_login(vport)
            self.prove_vestibule(name, vport, cookie)
            hdr = [f"Cookie: {SESSION_COOKIE}={cookie}", f"{CSRF}: 1"]
            also = {"redis": redis_pid}
            if proxy_pid:
                also["toxiproxy"] = proxy_pid
            cpr = self.load(f"redis_latency_{name}", vport, hdr, v.pid, redis_port=rport, also=also)
            fig = self.cfg.pop(f"redis_latency_{name}")
            fig["redis_commands_per_request"] = round(cpr, 3) if cpr is not None else None
            fig["cache"] = cache
            self.res["redis_latency"]["cases"][name] = fig
        except Skip as e:
            raise Skip(f"{e}{tail('vestibule-' + name.replace('_', '-'))}") from None
        finally:
            stop(v)
