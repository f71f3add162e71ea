"""The load generators and client drivers: a browser-like login (urllib + cookie jar, forms
parsed, no redirect followed), one probe request, wrk runs and their parsing, and the
anonymous login-start flood with the store keys it is checked against."""

import base64
import hashlib
import html.parser
import http.client
import http.cookiejar
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .context import PATH, STACK, WORK, Skip


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


def login(start_url, cookie_name, user=STACK["users"]["login"], max_steps=20, vestibule_headers=None):
    """Runs a full login from start_url; returns the value of cookie_name set by the client.
    vestibule_headers are added to the requests to start_url's origin (e.g. the address a
    trusted balancer reports), never to the provider's."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    origin = urllib.parse.urlsplit(start_url)[:2]
    url, data = start_url, None
    for _ in range(max_steps):
        req = urllib.request.Request(url, data=data, headers={
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
        if vestibule_headers and urllib.parse.urlsplit(url)[:2] == origin:
            for k, v in vestibule_headers.items():
                req.add_header(k, v)
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
                    v = STACK["users"]["password"]
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


def probe(port, headers, path=PATH):
    """One GET `path`; returns (status, X-Saw-Bearer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("X-Saw-Bearer")
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# login flood driver (anonymous GET /api/auth/login, issue 9 item 7)
# --------------------------------------------------------------------------------------
LOGIN_COOKIE = STACK["vestibule"]["login_cookie"]  # its name when public_url is http://


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


def wrk(port, seconds, headers=(), threads=2, conns=32, name=None, path=PATH):
    argv = ["wrk", "--latency", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    argv.append(f"http://127.0.0.1:{port}{path}")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if name:
        with open(os.path.join(WORK, "logs", "wrk.log"), "a") as f:
            f.write(f"=== {name}: {' '.join(argv)}\n{r.stdout}{r.stderr}\n")
    res = parse_wrk(r.stdout)
    if res["rps"] is None:
        raise Skip(f"wrk failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return res
