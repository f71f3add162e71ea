#!/usr/bin/env python3
"""Vestibule benchmark harness (Python 3 standard library only).

Started by bench/run, which installs the Debian packages and builds the release binary first.
Everything listens on 127.0.0.1; generated configs, logs and data go to target/bench/;
results go to bench/results/latest.{json,md}.

Usage: python3 bench/bench.py [--quick] [--only login-flood]
(--only runs one measurement; its results go to target/bench/results, never bench/results.)
"""

import argparse
import base64
import concurrent.futures
import datetime
import hashlib
import html.parser
import http.client
import http.cookiejar
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
RESULTS = os.path.join(ROOT, "bench", "results")
VESTIBULE_BIN = os.path.join(ROOT, "target", os.environ.get("BENCH_PROFILE", "release"), "vestibule")
STORE_FILL_SRC = os.path.join(ROOT, "examples", "store_fill.rs")
# --quick (the CI smoke run) uses the debug build that `cargo test` already made.
PROFILE = os.environ.get("BENCH_PROFILE", "release")
STORE_FILL_BIN = os.path.join(ROOT, "target", PROFILE, "examples", "store_fill")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FOREIGN_LIMIT = 30.0  # % CPU used by processes not started by the benchmark -> run flagged
PATH = "/api/x"  # every config is loaded on this path; the upstream answers any path


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Skip(Exception):
    """A measurement that cannot be made; the message is the reason, recorded in the results."""


# --------------------------------------------------------------------------------------
# processes (only the ones we start; stopped by PID)
# --------------------------------------------------------------------------------------
PROCS = []  # (name, Popen)


def start(name, argv, env=None, stdout=None, cwd=None):
    logf = open(os.path.join(WORK, "logs", f"{name}.log"), "ab")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(argv, env=full_env, cwd=cwd or ROOT, stdin=subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else logf, stderr=logf,
                         start_new_session=True)
    PROCS.append((name, p))
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    for i, (_, q) in enumerate(PROCS):
        if q is p:
            del PROCS[i]
            break


def stop_all():
    for _, p in reversed(list(PROCS)):
        try:
            stop(p)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(what, pred, proc=None, timeout=30, logname=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise Skip(f"{what} exited during start-up (code {proc.returncode}){tail(logname)}")
        time.sleep(0.1)
    raise Skip(f"{what} not ready within {timeout} s{tail(logname)}")


def tail(logname, n=6):
    if not logname:
        return ""
    try:
        with open(os.path.join(WORK, "logs", f"{logname}.log"), errors="replace") as f:
            lines = f.read().splitlines()[-n:]
        return " | log: " + " / ".join(lines)
    except OSError:
        return ""


def proc_tree(pid):
    """pid plus all its descendants (for nginx / apache masters and their workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total[p] = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
        except (OSError, ValueError):
            pass
    return total


def system_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...; irq/softirq left out: on loopback
    # they are mostly our own packets, not attributed to any process
    return v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)


def ours_ticks():
    """CPU ticks of every process tree this run started (servers, providers, Redis)."""
    pids = set()
    for _, p in PROCS:
        if p.poll() is None:
            pids.update(proc_tree(p.pid))
    return cpu_ticks(pids)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Contention:
    """CPU used on the machine during an interval by processes NOT started by this run
    (e.g. a compiler running in parallel): such runs are not comparable."""

    def __enter__(self):
        self.t0 = time.monotonic()
        self.sys0, self.ours0, self.kids0 = system_busy_ticks(), ours_ticks(), children_cpu_s()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        ours1 = ours_ticks()
        ours = sum(v - self.ours0.get(p, 0) for p, v in ours1.items()) / CLK_TCK
        busy = (system_busy_ticks() - self.sys0) / CLK_TCK
        kids = children_cpu_s() - self.kids0  # wrk
        self.system_percent = 100.0 * busy / wall
        self.foreign_percent = max(0.0, 100.0 * (busy - ours - kids) / wall)
        return False


class CpuMeter:
    """CPU time of a process tree over an interval, from /proc/<pid>/stat."""

    def __init__(self, root_pid):
        self.root = root_pid

    def __enter__(self):
        self.t0 = time.monotonic()
        self.c0 = cpu_ticks(proc_tree(self.root))
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        c1 = cpu_ticks(proc_tree(self.root))
        # processes present at both ends; new ones count from zero
        self.cpu_s = sum(v - self.c0.get(p, 0) for p, v in c1.items()) / CLK_TCK
        self.percent = 100.0 * self.cpu_s / self.wall if self.wall > 0 else None
        return False


def vm_hwm_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------
# minimal Redis client (RESP)
# --------------------------------------------------------------------------------------
def redis_cmd(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline().rstrip(b"\r\n")
    t, rest = line[:1], line[1:]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if t == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad RESP line {line!r}")


def redis_info(port, section):
    out = {}
    for line in redis_cmd(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def redis_cmdstats(port):
    """Command calls so far, per command, excluding INFO (our own probe)."""
    out = {}
    for k, v in redis_info(port, "commandstats").items():
        if k.startswith("cmdstat_") and k != "cmdstat_info":
            m = re.search(r"calls=(\d+)", v)
            if m:
                out[k[len("cmdstat_"):]] = int(m.group(1))
    return out


def redis_calls(port):
    return sum(redis_cmdstats(port).values())


def start_redis(name):
    port = free_port()
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    p = start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                     "--save", "", "--appendonly", "no", "--daemonize", "no"])

    def ready():
        try:
            return redis_cmd(port, "PING") == "PONG"
        except OSError:
            return False

    wait_for(name, ready, p, 15, name)
    return port, p


# --------------------------------------------------------------------------------------
# nginx (upstream and plain proxy)
# --------------------------------------------------------------------------------------
NGINX_COMMON = """daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
{body}
}}
"""


def start_nginx(name, body):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(d=d, body=body))
    p = start(name, ["nginx", "-p", d + "/", "-c", conf])
    return p


def start_upstream():
    port = free_port()
    body = f"""  map $http_authorization $saw_bearer {{ "~^Bearer [^ ]+" yes; default no; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      default_type application/json;
      add_header X-Saw-Bearer $saw_bearer always;
      return 200 '{{"ok":true}}';
    }}
  }}"""
    p = start_nginx("upstream-nginx", body)
    wait_for("upstream nginx", lambda: port_open(port), p, 15, "upstream-nginx")
    return port, p


def start_nginx_proxy(upstream_port):
    port = free_port()
    body = f"""  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
    p = start_nginx("proxy-nginx", body)
    wait_for("proxy nginx", lambda: port_open(port), p, 15, "proxy-nginx")
    return port, p


# --------------------------------------------------------------------------------------
# the test OpenID Provider (tests/op/server.js)
# --------------------------------------------------------------------------------------
def start_provider(name, redirect_uris, access_ttl, client_id="vestibule",
                   client_secret="vestibule-bench-secret"):
    env = {
        "OP_PORT": "0",
        "OP_CLIENT_ID": client_id,
        "OP_CLIENT_SECRET": client_secret,
        "OP_REDIRECT_URIS": ",".join(redirect_uris),
        "OP_ACCESS_TOKEN_TTL": str(access_ttl),
        "OP_ID_TOKEN_TTL": "3600",
        "OP_REFRESH_TOKEN_TTL": "86400",
        "OP_KEYS_FILE": os.path.join(WORK, f"{name}-keys.json"),
    }
    p = start(name, ["node", os.path.join(ROOT, "tests", "op", "server.js")], env=env,
              stdout=subprocess.PIPE)
    line = [None]

    def reader():
        line[0] = p.stdout.readline()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(60)
    if not line[0]:
        raise Skip(f"provider {name} printed nothing{tail(name)}")
    info = json.loads(line[0])
    return info["issuer"], p


def provider_stats(issuer):
    with urllib.request.urlopen(issuer + "/__test/stats", timeout=10) as r:
        return json.load(r)


# --------------------------------------------------------------------------------------
# Vestibule
# --------------------------------------------------------------------------------------
# The benchmark logs in many times from one address: the login rate limit (measured by the
# login-flood phase, which passes its own [login]) would only get in the way.
UNLIMITED_LOGINS = """
[login]
rate_limit_per_minute = 0
"""


def start_vestibule(name, port, issuer, upstream_port, key, redis_port=None, skew=30,
                    client_secret="vestibule-bench-secret", extra=UNLIMITED_LOGINS):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "vestibule.toml")
    redis_line = f'redis_url = "redis://127.0.0.1:{redis_port}"' if redis_port else "# in-memory store"
    with open(conf, "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[oidc]
issuer = "{issuer}"
client_id = "vestibule"
client_secret = "{client_secret}"
refresh_skew_secs = {skew}

[session]
{redis_line}
encryption_key = "{key}"

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:{upstream_port}"
{extra}""")
    os.chmod(conf, 0o600)
    p = start(name, [VESTIBULE_BIN, "--config", conf], env={"VESTIBULE_LOG": "warn"})
    wait_for(name, lambda: port_open(port), p, 60, name)
    return p


# --------------------------------------------------------------------------------------
# Apache httpd + mod_auth_openidc
# --------------------------------------------------------------------------------------
def start_apache(port, issuer, upstream_port, redis_port, client_secret):
    d = os.path.join(WORK, "apache")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    mods = "/usr/lib/apache2/modules"
    if not os.path.exists(f"{mods}/mod_auth_openidc.so"):
        raise Skip("mod_auth_openidc.so missing (libapache2-mod-auth-openidc not installed)")
    conf = os.path.join(d, "httpd.conf")
    passphrase = secrets.token_hex(16)
    load = "\n".join(f"LoadModule {m}_module {mods}/mod_{m}.so" for m in (
        "mpm_event", "authz_core", "authn_core", "authz_user", "headers", "env",
        "proxy", "proxy_http", "auth_openidc"))
    with open(conf, "w") as f:
        f.write(f"""{load}
ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
ErrorLog {d}/error.log
LogLevel warn
User www-data
Group www-data
# MPM event: one process, 64 threads, enough for 32 keep-alive connections
StartServers 1
ServerLimit 2
ThreadsPerChild 64
MaxRequestWorkers 128
MinSpareThreads 16
MaxSpareThreads 256
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60

OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID modoidc
OIDCClientSecret {client_secret}
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI http://127.0.0.1:{port}/redirect_uri
OIDCCryptoPassphrase {passphrase}
OIDCScope "openid profile email"
OIDCPKCEMethod S256
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:{redis_port}
OIDCSessionType server-cache
OIDCPassClaimsAs environment
OIDCPassIDTokenAs claims
OIDCSessionInactivityTimeout 3600

<Location /redirect_uri>
  AuthType openid-connect
  Require valid-user
</Location>
<Location /api>
  AuthType openid-connect
  Require valid-user
  ProxyPass http://127.0.0.1:{upstream_port}
  RequestHeader set Authorization "Bearer %{{OIDC_access_token}}e"
</Location>
""")
    env = {"APACHE_RUN_DIR": d, "APACHE_PID_FILE": f"{d}/httpd.pid", "APACHE_LOCK_DIR": d,
           "APACHE_LOG_DIR": d, "APACHE_RUN_USER": "www-data", "APACHE_RUN_GROUP": "www-data"}
    check = subprocess.run(["/usr/sbin/apache2", "-f", conf, "-t"], env={**os.environ, **env},
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise Skip("apache2 -t failed: " + (check.stderr or check.stdout).strip().replace("\n", " / "))
    p = start("apache", ["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"], env=env)
    wait_for("apache2", lambda: port_open(port), p, 20, "apache")
    return p


# --------------------------------------------------------------------------------------
# browser-like login driver (urllib + cookie jar + no redirects + html.parser)
# --------------------------------------------------------------------------------------
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class FormParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": (a.get("method") or "get").lower(),
                               "inputs": []})
        elif tag == "input" and self.forms:
            if a.get("name"):
                self.forms[-1]["inputs"].append((a["name"], a.get("value") or ""))


def login(start_url, cookie_name, user="bench", max_steps=20):
    """Runs a full login from start_url; returns the value of cookie_name set by the client."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    url, data = start_url, None
    for _ in range(max_steps):
        req = urllib.request.Request(url, data=data, headers={
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            resp = opener.open(req, timeout=30)
            status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        for c in jar:
            if c.name == cookie_name:
                return c.value
        if 300 <= status < 400:
            url, data = urllib.parse.urljoin(url, headers["Location"]), None
            continue
        if status == 200:
            fp = FormParser()
            fp.feed(body.decode(errors="replace"))
            if len(fp.forms) != 1:
                raise RuntimeError(f"login: {len(fp.forms)} forms at {url}")
            form = fp.forms[0]
            fields = []
            for k, v in form["inputs"]:
                if k == "login":
                    v = user
                elif k == "password":
                    v = "pw"
                fields.append((k, v))
            action = urllib.parse.urljoin(url, form["action"] or url)
            enc = urllib.parse.urlencode(fields)
            if form["method"] == "post":
                url, data = action, enc.encode()
            else:
                url, data = action + "?" + enc, None
            continue
        raise RuntimeError(f"login: HTTP {status} at {url}: {body[:300]!r}")
    raise RuntimeError("login: too many steps")


def probe(port, headers):
    """One GET PATH; returns (status, X-Saw-Bearer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", PATH, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("X-Saw-Bearer")
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# login flood driver (anonymous GET /api/auth/login, issue 9 item 7)
# --------------------------------------------------------------------------------------
LOGIN_COOKIE = "vestibule-login"  # the login cookie's name when public_url is http://


def flood_address(i):
    """The i-th address of 198.18.0.0/15 (RFC 2544, for benchmarks), i < 131072; consecutive
    ones fall in different /24 networks (Vestibule also limits login starts per /24)."""
    return f"198.{18 + (i >> 16)}.{i & 255}.{(i >> 8) & 255}"


def login_member(state):
    """The index member of the pending login for `state`: the hash in its key."""
    return hashlib.sha256(state.encode()).hexdigest()


def login_record_key(member_or_state, is_member=False):
    """The store key of a pending login (src/session/token.rs storage_key), from its `state`
    or its index member."""
    return "vestibule:login:" + (member_or_state if is_member else login_member(member_or_state))


def login_browser_key(cookie):
    """The store key of a browser's index of pending logins, from its login cookie value."""
    raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
    return "vestibule:login-browser:" + hashlib.sha256(raw).hexdigest()


def login_flood(port, count, conns, headers_for, query=""):
    """`count` GET /api/auth/login over `conns` keep-alive connections; headers_for(i) gives
    request i's headers. Returns the status counts, the wall time, the refusals (429)
    without Retry-After, connection errors, and for each admitted start (303) its `state` and login cookie, in
    the order the answers came."""
    path = "/api/auth/login" + (f"?{query}" if query else "")
    lock = threading.Lock()
    nxt = [0]
    out = {"status": {}, "no_retry_after": 0, "errors": 0, "admitted": []}

    def worker():
        conn, status, admitted = None, {}, []
        no_ra = errors = 0
        while True:
            with lock:
                i = nxt[0]
                if i >= count:
                    break
                nxt[0] = i + 1
            resp = body = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", path, headers=headers_for(i))
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                # never retried: the server may have stored the login already
                errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            s = resp.status
            status[s] = status.get(s, 0) + 1
            if s == 429 and not resp.getheader("Retry-After"):
                no_ra += 1
            if 300 <= s < 400:
                loc = urllib.parse.urlsplit(resp.getheader("Location") or "")
                state = (urllib.parse.parse_qs(loc.query).get("state") or [None])[0]
                cookie = None
                for k, v in resp.getheaders():
                    if k.lower() == "set-cookie" and v.startswith(LOGIN_COOKIE + "="):
                        cookie = v.split(";", 1)[0].split("=", 1)[1]
                admitted.append((time.monotonic(), state, cookie))
        if conn is not None:
            conn.close()
        with lock:
            for s, n in status.items():
                out["status"][s] = out["status"].get(s, 0) + n
            out["no_retry_after"] += no_ra
            out["errors"] += errors
            out["admitted"].extend(admitted)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    out["elapsed_s"] = time.monotonic() - t0
    out["admitted"].sort(key=lambda a: a[0])
    out["rps"] = count / out["elapsed_s"] if out["elapsed_s"] > 0 else None
    return out


def status_counts(r):
    """The figures of a flood worth keeping: counts by status class and refusal kind."""
    st = r["status"]
    return {
        "requests": sum(st.values()) + r["errors"],
        "admitted_303": sum(n for s, n in st.items() if 300 <= s < 400),
        "refused_429": st.get(429, 0),
        "server_errors": sum(n for s, n in st.items() if s >= 500),
        "other_status": sum(n for s, n in st.items() if s < 300 or (400 <= s < 500 and s != 429)),
        "connection_errors": r["errors"],
        "refusals_without_retry_after": r["no_retry_after"],
        "elapsed_s": round(r["elapsed_s"], 2),
        "req_per_s": round(r["rps"], 1) if r["rps"] else None,
    }


def merge_floods(*rs):
    """One flood result from several (consecutive) ones."""
    out = {"status": {}, "no_retry_after": 0, "errors": 0, "admitted": [], "elapsed_s": 0.0}
    for r in rs:
        for s, n in r["status"].items():
            out["status"][s] = out["status"].get(s, 0) + n
        for k in ("no_retry_after", "errors", "elapsed_s"):
            out[k] += r[k]
        out["admitted"] += r["admitted"]
    n = sum(out["status"].values()) + out["errors"]
    out["rps"] = n / out["elapsed_s"] if out["elapsed_s"] > 0 else None
    return out


def redis_count_keys(port, pattern):
    """Keys matching pattern, by SCAN (KEYS through EVAL would grow Redis's Lua memory)."""
    cursor, n = "0", 0
    while True:
        cursor, keys = redis_cmd(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        n += len(keys)
        if cursor == "0":
            return n


def vm_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def count_in_log(name, needle):
    try:
        with open(os.path.join(WORK, "logs", f"{name}.log"), errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


# --------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out):
    def lat(pct):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else None,
        "p50_ms": lat(50),
        "p99_ms": lat(99),
        "requests": int(total.group(1)) if total else None,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def wrk(port, seconds, headers=(), threads=2, conns=32, name=None):
    argv = ["wrk", "--latency", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    argv.append(f"http://127.0.0.1:{port}{PATH}")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if name:
        with open(os.path.join(WORK, "logs", "wrk.log"), "a") as f:
            f.write(f"=== {name}: {' '.join(argv)}\n{r.stdout}{r.stderr}\n")
    res = parse_wrk(r.stdout)
    if res["rps"] is None:
        raise Skip(f"wrk failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return res


# --------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------
class Bench:
    def __init__(self, quick):
        self.quick = quick
        self.duration = 2 if quick else 15
        self.warmup = 1 if quick else 3
        self.runs = 1 if quick else 3
        self.notes = {}  # field -> reason it is null
        self.cfg = {}
        self.cpu = {}
        self.res = {}
        self.problems = []
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()

    def not_measured(self, field, reason):
        self.notes[field] = reason
        log(f"NOT MEASURED {field}: {reason}")

    def load(self, name, port, headers, pid, redis_port=None):
        """Warm-up + `runs` measured runs; fills self.cfg[name] and self.cpu[name]."""
        log(f"{name}: warm-up {self.warmup} s, then {self.runs} x {self.duration} s (-t2 -c32)")
        wrk(port, self.warmup, headers, name=f"{name} warm-up")
        runs, cpus, calls, reqs = [], [], {}, 0
        for i in range(self.runs):
            c0 = redis_cmdstats(redis_port) if redis_port else {}
            with Contention() as busy, CpuMeter(pid) as m:
                r = wrk(port, self.duration, headers, name=f"{name} run {i + 1}")
            r["foreign_cpu_percent"] = round(busy.foreign_percent, 1)
            if busy.foreign_percent > FOREIGN_LIMIT:
                self.problems.append(f"{name} run {i + 1}: the machine was busy with other processes "
                                     f"({busy.foreign_percent:.0f}% CPU not from this benchmark): not comparable")
            if redis_port:
                for cmd, n in redis_cmdstats(redis_port).items():
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
        log(f"NOT MEASURED {name}: {reason}")

    # ---------------------------------------------------------------- the configurations
    def run(self):
        up_port, up = start_upstream()
        self.up_port = up_port
        log(f"upstream nginx on 127.0.0.1:{up_port}")
        s, saw = probe(up_port, {})
        assert s == 200 and saw == "no", (s, saw)
        s, saw = probe(up_port, {"Authorization": "Bearer x"})
        assert s == 200 and saw == "yes", (s, saw)

        # 1. direct
        try:
            self.load("direct", up_port, [], up.pid)
        except Exception as e:  # noqa: BLE001
            self.config_failed("direct", str(e))

        # 2. nginx_proxy
        try:
            pport, px = start_nginx_proxy(up_port)
            self.load("nginx_proxy", pport, [], px.pid)
            stop(px)
        except Exception as e:  # noqa: BLE001
            self.config_failed("nginx_proxy", str(e))

        # 3. mod_auth_openidc
        try:
            self.run_modoidc()
        except Exception as e:  # noqa: BLE001
            self.config_failed("mod_auth_openidc", f"{type(e).__name__}: {e}")
            self.res["modoidc_redis_commands_per_request"] = None
            self.notes.setdefault("modoidc_redis_commands_per_request", "mod_auth_openidc not measured")

        # 4./5. Vestibule (one provider for both, long access-token lifetime: steady state)
        self.run_vestibule()
        self.run_refresh()
        self.run_store_scale()
        self.run_login_flood()

    def run_modoidc(self):
        aport = free_port()
        secret = "modoidc-bench-secret"
        issuer, op = start_provider("provider-apache", [f"http://127.0.0.1:{aport}/redirect_uri"],
                                    3600, client_id="modoidc", client_secret=secret)
        rport, rp = start_redis("redis-apache")
        ap = start_apache(aport, issuer, self.up_port, rport, secret)
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
        return login(f"http://127.0.0.1:{port}/api/auth/login", "vestibule")

    def prove_vestibule(self, name, port, cookie):
        h = {"Cookie": f"vestibule={cookie}", "X-CSRF": "1"}
        s, saw = probe(port, h)
        s2, _ = probe(port, {"X-CSRF": "1"})
        log(f"  proof: with cookie {s} X-Saw-Bearer={saw}; without cookie {s2}")
        if s != 200 or saw != "yes":
            raise Skip(f"authenticated request answered {s}, X-Saw-Bearer={saw}")
        if s2 != 401:
            raise Skip(f"request without cookie answered {s2}, expected 401")

    def run_vestibule(self):
        self.peak_rss = {}
        vr_port, vm_port = free_port(), free_port()
        try:
            issuer, op = start_provider(
                "provider", [f"http://127.0.0.1:{p}/api/auth/callback" for p in (vr_port, vm_port)], 3600)
        except Exception as e:  # noqa: BLE001
            for n in ("vestibule_redis", "vestibule_memory"):
                self.config_failed(n, f"provider: {e}")
            return
        log(f"provider {issuer}")
        # 4. vestibule_redis
        try:
            rport, rp = start_redis("redis-vestibule")
            self.vr_redis = rport
            vr = start_vestibule("vestibule-redis", vr_port, issuer, self.up_port, self.key, rport)
            cookie = self.vestibule_login(vr_port)
            self.prove_vestibule("vestibule_redis", vr_port, cookie)
            hdr = [f"Cookie: vestibule={cookie}", "X-CSRF: 1"]
            cpr = self.load("vestibule_redis", vr_port, hdr, vr.pid, redis_port=rport)
            self.res["redis_commands_per_request"] = round(cpr, 2) if cpr is not None else None
            self.run_login_cost(vr_port, vr.pid)
            self.peak_rss["vestibule_redis"] = round(vm_hwm_mb(vr.pid), 1)
            stop(vr)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.config_failed("vestibule_redis", f"{type(e).__name__}: {e}")
        # 5. vestibule_memory
        try:
            vm = start_vestibule("vestibule-memory", vm_port, issuer, self.up_port, self.key, None)
            cookie = self.vestibule_login(vm_port)
            self.prove_vestibule("vestibule_memory", vm_port, cookie)
            hdr = [f"Cookie: vestibule={cookie}", "X-CSRF: 1"]
            self.load("vestibule_memory", vm_port, hdr, vm.pid)
            self.peak_rss["vestibule_memory"] = round(vm_hwm_mb(vm.pid), 1)
            stop(vm)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.config_failed("vestibule_memory", f"{type(e).__name__}: {e}")
        stop(op)

    # ---------------------------------------------------------------- login cost
    def run_login_cost(self, port, pid):
        n_seq, n_par = (5, 4) if self.quick else (20, 16)
        log(f"login cost: {n_seq} sequential, {n_par} concurrent")
        try:
            with CpuMeter(pid) as m:
                times = []
                for i in range(n_seq):
                    t0 = time.perf_counter()
                    login(f"http://127.0.0.1:{port}/api/auth/login", "vestibule", user=f"seq{i}")
                    times.append((time.perf_counter() - t0) * 1000)

                def one(i):
                    t0 = time.perf_counter()
                    login(f"http://127.0.0.1:{port}/api/auth/login", "vestibule", user=f"par{i}")
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
            issuer, op = start_provider("provider-refresh", [f"http://127.0.0.1:{port}/api/auth/callback"], ttl)
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
                r = wrk(port, dur, [f"Cookie: vestibule={cookie}", "X-CSRF: 1"], conns=conns,
                        name="refresh")
            t1 = time.monotonic()
            after = provider_stats(issuer)
            grants = after["refresh_token"] - before["refresh_token"]
            errors = after.get("refresh_token_errors", 0) - before.get("refresh_token_errors", 0)
            # Refresh points: the token from the login enters the skew window at t_login + period,
            # each refreshed token again `period` later; count those inside the wrk run.
            k0 = max(1, int((t0 - t_login) // period) + 1)
            crossed = 0
            k = k0
            while t_login + k * period <= t1:
                crossed += 1
                k += 1
            s_after, saw_after = probe(port, {"Cookie": f"vestibule={cookie}", "X-CSRF": "1"})
            self.res.update({
                "refresh_grants": grants,
                "refresh_grant_errors": errors,
                "refresh_expiries_crossed": crossed,
                "refresh_expiries_by_ttl": round(dur / ttl, 2),
                "refresh_grants_per_expiry": round(grants / crossed, 2) if crossed else None,
                "refresh_failed_requests": r["non_2xx_3xx"],
                "refresh_socket_errors": r["socket_errors"],
                "refresh_p99_ms": r["p99_ms"],
                "refresh_p50_ms": r["p50_ms"],
                "refresh_rps": r["rps"],
                "refresh_ttl_s": ttl, "refresh_skew_s": skew, "refresh_run_s": dur,
                "refresh_session_alive_after": s_after == 200 and saw_after == "yes",
            })
            log(f"  {grants} refresh grants ({errors} errors) over {crossed} expiries crossed "
                f"(refresh every {period:g} s) -> {self.res['refresh_grants_per_expiry']} per expiry; "
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

    # ---------------------------------------------------------------- store scale
    def run_store_scale(self):
        small, large = (1000, 10000) if self.quick else (1000, 100000)
        self.res["store_sessions_small"] = small
        self.res["store_sessions_large"] = large
        fields = ["redis_bytes_per_session", "p50_ms_1k_sessions", "p50_ms_100k_sessions"]
        for k in fields:
            self.res[k] = None
        if not os.path.exists(STORE_FILL_SRC):
            for k in fields:
                self.not_measured(k, "not measured: store_fill example missing (examples/store_fill.rs)")
            return
        try:
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
            sport, sp = start_redis("redis-store")
            mem0 = int(redis_info(sport, "memory")["used_memory"])
            keys0 = redis_cmd(sport, "DBSIZE")

            def fill(n):
                t0 = time.monotonic()
                r = subprocess.run([STORE_FILL_BIN, "--redis", f"redis://127.0.0.1:{sport}",
                                    "--count", str(n), "--key", self.key],
                                   capture_output=True, text=True, timeout=900)
                if r.returncode != 0:
                    raise Skip(f"store_fill failed: {r.stderr.strip()[-400:]}")
                reply = json.loads(r.stdout.strip().splitlines()[-1])
                created = reply["created"]
                if "plaintext_bytes" in reply:
                    self.res["store_fill_plaintext_bytes"] = reply["plaintext_bytes"]
                log(f"  store_fill: {created} sessions in {time.monotonic() - t0:.1f} s")
                return created

            port = free_port()
            issuer, op = start_provider("provider-store", [f"http://127.0.0.1:{port}/api/auth/callback"], 3600)
            v = start_vestibule("vestibule-store", port, issuer, self.up_port, self.key, sport)
            cookie = self.vestibule_login(port)
            self.prove_vestibule("store", port, cookie)
            hdr = [f"Cookie: vestibule={cookie}", "X-CSRF: 1"]
            dur = 2 if self.quick else 5
            fill(small)
            wrk(port, 1, hdr)
            r1 = wrk(port, dur, hdr, name=f"store {small}")
            fill(large - small)
            mem1 = int(redis_info(sport, "memory")["used_memory"])
            keys1 = redis_cmd(sport, "DBSIZE")
            wrk(port, 1, hdr)
            r2 = wrk(port, dur, hdr, name=f"store {large}")
            n = keys1 - keys0
            try:
                sample = redis_cmd(sport, "RANDOMKEY")
                self.res["redis_sample_key_memory_usage"] = redis_cmd(sport, "MEMORY", "USAGE", sample)
                self.res["redis_sample_key_type"] = redis_cmd(sport, "TYPE", sample)
                if self.res["redis_sample_key_type"] == "string":
                    self.res["redis_sample_value_bytes"] = redis_cmd(sport, "STRLEN", sample)
            except Exception:  # noqa: BLE001
                pass
            self.res["redis_bytes_per_session"] = round((mem1 - mem0) / n, 1) if n else None
            self.res["redis_keys_after_fill"] = keys1
            self.res["p50_ms_1k_sessions"] = r1["p50_ms"]
            self.res[f"p50_ms_{large // 1000}k_sessions"] = r2["p50_ms"]
            if large != 100000:
                self.notes["p50_ms_100k_sessions"] = f"quick mode: {large} sessions instead (see p50_ms_{large // 1000}k_sessions)"
            log(f"  {(mem1 - mem0) / max(n, 1):.0f} bytes/session over {n} keys; p50 {r1['p50_ms']} ms at "
                f"{small}, {r2['p50_ms']} ms at {large}")
            self.peak_rss["vestibule_store"] = round(vm_hwm_mb(v.pid), 1)
            for p in (v, op, sp):
                stop(p)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            for k in fields:
                if self.res.get(k) is None:
                    self.not_measured(k, f"{type(e).__name__}: {e}")

    # ---------------------------------------------------------------- login flood
    def run_login_flood(self):
        """Anonymous login starts cannot grow the store without bound (issue 9, item 7).

        A: one client address hammers /api/auth/login (only the rate limit's burst gets in);
        C: one browser (its login cookie) starts many logins from many addresses (it keeps
        only its newest max_pending_per_browser); B: many addresses, no cookie, the largest
        returnTo (the cap on logins in progress holds: the oldest are displaced; Redis and Vestibule memory
        stay flat once there); M: B again against the in-memory store (Vestibule's RSS)."""
        q = self.quick
        cap = 200 if q else 2000
        per_browser, rate, burst, conns = 5, 30, 10, 4
        n_single, n_browser, n_many = (200, 200, 2000) if q else (2000, 2000, 20000)
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
rate_limit_per_minute = {rate}
rate_limit_burst = {burst}
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
                "provider-flood", [f"http://127.0.0.1:{p}/api/auth/callback" for p in (vport, mport)], 3600)
            started.append(op)
            up_port = getattr(self, "up_port", None) or free_port()  # no route is called
            v = start_vestibule("vestibule-flood", vport, issuer, up_port, self.key, rport, extra=extra)
            started.append(v)
            # one start first: Vestibule's first use of Redis (client tracking, its cache probe)
            # costs a one-off ~150 kB that is not the pending logins' doing
            warm = login_flood(vport, 1, 1, lambda i: {"X-Forwarded-For": flood_address(131071)})
            if not warm["admitted"]:
                raise Skip(f"first login start answered {warm['status']}{tail('vestibule-flood')}")
            mem0 = int(redis_info(rport, "memory")["used_memory"])
            pend_base = redis_cmd(rport, "ZCARD", "vestibule:pending-logins")
            log(f"login flood: Redis store, max_pending_total {cap}, max_pending_per_browser "
                f"{per_browser}, {rate}/min burst {burst} per address, {conns} connections")

            # A. one address
            single = "203.0.113.7"
            ra = login_flood(vport, n_single, conns, lambda i: {"X-Forwarded-For": single})
            a = f["single_address"] = status_counts(ra)
            a["admitted_limit"] = round(burst + rate * ra["elapsed_s"] / 60, 2)
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


# --------------------------------------------------------------------------------------
# versions, targets, output
# --------------------------------------------------------------------------------------
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


def targets(out):
    c = out["configs"]

    def g(name, k):
        return (c.get(name) or {}).get(k)

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    vr, vm = g("vestibule_redis", "rps"), g("vestibule_memory", "rps")
    rows = [
        ("vestibule_redis rps / mod_auth_openidc rps", ratio(vr, g("mod_auth_openidc", "rps")), ">=", 5),
        ("vestibule_redis rps / nginx_proxy rps", ratio(vr, g("nginx_proxy", "rps")), ">=", 0.5),
        ("vestibule_redis p99 / mod_auth_openidc p99",
         ratio(g("vestibule_redis", "p99_ms"), g("mod_auth_openidc", "p99_ms")), "<=", 0.2),
        ("|vestibule_memory - vestibule_redis| / vestibule_redis rps",
         round(abs(vm - vr) / vr, 3) if vm is not None and vr else None, "<=", 0.15),
        ("redis commands per proxied request", out.get("redis_commands_per_request"), "<=", 1),
        ("redis bytes per session", out.get("redis_bytes_per_session"), "<=", 5120),
        ("peak RSS MB (max over Vestibule processes)", out.get("peak_rss_mb"), "<=", 64),
    ]
    lf = out.get("login_flood") or {}
    la, lb, lc, lm = (lf.get(k) or {} for k in ("single_address", "many_addresses", "one_browser", "memory_store"))
    cap, per_browser = lf.get("max_pending_total"), lf.get("max_pending_per_browser")
    rows += [
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
    res = []
    for name, val, op, lim in rows:
        if val is None or lim is None:
            verdict = "NOT MEASURED"
        else:
            verdict = "PASS" if (val >= lim if op == ">=" else val <= lim) else "FAIL"
        res.append({"target": name, "value": val, "op": op, "limit": lim, "result": verdict})
    return res


CONFIGS = ["direct", "nginx_proxy", "mod_auth_openidc", "vestibule_redis", "vestibule_memory"]


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
        if c.get("rps") is None:
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
        ("p50_ms_1k_sessions", "proxied p50 ms with 1k sessions in Redis"),
        ("p50_ms_100k_sessions", "proxied p50 ms with 100k sessions in Redis"),
        ("login_ms_p50", "full login p50 ms (sequential)"),
        ("login_concurrent_wall_ms", f"{out.get('login_concurrent_count', 16)} concurrent logins, wall ms"),
        ("login_concurrent_mean_ms", "concurrent logins, mean ms per login"),
        ("vestibule_cpu_ms_per_login", "Vestibule CPU ms per login"),
        ("peak_rss_mb", "peak RSS MB (Vestibule)"),
    ]:
        v = out.get(k)
        note = out.get("not_measured", {}).get(k)
        lines.append(f"| {label} | {fmt(v) if v is not None else 'not measured' + (': ' + note if note else '')} |")
    lines += render_login_flood(out.get("login_flood"))
    lines += ["", "| target | value | limit | result |", "|---|---:|---:|---|"]
    for t in out["targets"]:
        lines.append(f"| {t['target']} | {fmt(t['value'], 3)} | {t['op']} {t['limit']} | {t['result']} |")
    return "\n".join(lines) + "\n"


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run x 2 s per config, reduced extras")
    ap.add_argument("--only", choices=["login-flood"],
                    help="run one measurement alone (results under target/bench/results)")
    args = ap.parse_args()

    for tool in ("redis-server", "node") if args.only else ("wrk", "nginx", "redis-server", "node"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (bench/run installs it)")
    if not os.access(VESTIBULE_BIN, os.X_OK):
        sys.exit(f"bench: {VESTIBULE_BIN} missing: cargo build --release --locked --bin vestibule")

    if os.path.isdir(WORK):
        shutil.rmtree(WORK)
    os.makedirs(os.path.join(WORK, "logs"))
    os.chmod(WORK, 0o755)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.monotonic()
    b = Bench(args.quick)
    try:
        if args.only == "login-flood":
            b.run_login_flood()
        else:
            b.run()
    except KeyboardInterrupt:
        log("interrupted; stopping everything this run started")
        stop_all()
        sys.exit(130)
    finally:
        stop_all()

    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "quick": args.quick,
        "load": {"wrk": "-t2 -c32 --latency keep-alive", "duration_s": b.duration,
                 "warmup_s": b.warmup, "runs": b.runs, "nginx_worker_processes": 1},
        "configs": {n: b.cfg.get(n, {"rps": None, "p50_ms": None, "p99_ms": None, "runs": []}) for n in CONFIGS},
    }
    for k in ("redis_commands_per_request", "refresh_grants_per_expiry", "refresh_failed_requests",
              "redis_bytes_per_session", "p50_ms_1k_sessions", "p50_ms_100k_sessions", "login_ms_p50"):
        out[k] = b.res.get(k)
    rss = getattr(b, "peak_rss", {})
    out["peak_rss_mb"] = max(rss.values()) if rss else None
    if not rss:
        b.notes["peak_rss_mb"] = "no Vestibule process ran"
    out["peak_rss_mb_by_process"] = rss
    out["cpu_percent"] = {n: (b.cfg.get(n) or {}).get("cpu_percent") for n in CONFIGS}
    for k, v in b.res.items():
        out.setdefault(k, v)
    out["targets"] = targets(out)
    out["ratios"] = {t["target"]: t["value"] for t in out["targets"]}
    out["problems"] = b.problems
    out["not_measured"] = b.notes
    out["elapsed_s"] = round(time.monotonic() - t_start, 1)

    out["only"] = args.only
    # A quick smoke run or a single measurement never replaces the published figures.
    results = os.path.join(WORK, "results") if args.quick or args.only else RESULTS
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "latest.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    md = render_md(out)
    with open(os.path.join(results, "latest.md"), "w") as f:
        f.write(md)

    print()
    print(md)
    if b.problems:
        print("Problems seen:")
        for p in b.problems:
            print("  -", p)
    print(f"written: {os.path.relpath(results, ROOT)}/latest.json and latest.md ({out['elapsed_s']} s); "
          f"logs and generated configs: target/bench/")


if __name__ == "__main__":
    main()
