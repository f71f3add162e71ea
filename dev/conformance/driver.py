#!/usr/bin/env python3
"""Runs one OpenID conformance-suite RP (client) test plan against Vestibule.

The suite plays the OpenID Provider; Vestibule is the Relying Party; this script is the browser.
For every module of the plan it:
  1. creates the test module (the suite then serves an OP at <suite>/test/a/<alias>/),
  2. starts a fresh Vestibule (new keys per module) behind the stack's TLS front, trusting the
     stack's private CA through oidc.ca_file,
  3. plays the browser for the plan's scenario (login; logout; third-party initiated login;
     front-channel logout; a call after the access token's assumed lifetime for refresh),
  4. asks Vestibule itself (/api/auth/user, the API route) whether it accepted what it was
     sent, and compares with EXPECT (the "oracle"),
  5. waits for the suite's own verdict, stops Vestibule, keeps the suite's log and Vestibule's
     log of the module (the evidence a certification asks for).

Vestibule calls UserInfo itself (oidc.userinfo = "auto"), which is what ends the suite's
happy-path modules; the "must reject" modules pass when no UserInfo call follows.
Used by dev/conformance/run; by hand:
  python3 driver.py --plan oidcc-client-basic-certification-test-plan --out results/basic
"""
import argparse
import base64
import html
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# What a correct RP does in each module, judged by Vestibule's own answer afterwards.
# accept: a session exists after the login; reject: none does; either: both are correct.
EXPECT = {
    "oidcc-client-test": "accept",
    "oidcc-client-test-invalid-iss": "reject",
    "oidcc-client-test-missing-sub": "reject",
    "oidcc-client-test-invalid-aud": "reject",
    "oidcc-client-test-missing-aud": "reject",
    "oidcc-client-test-missing-iat": "reject",
    "oidcc-client-test-kid-absent-single-jwks": "accept",
    "oidcc-client-test-kid-absent-multiple-jwks": "either",
    "oidcc-client-test-idtoken-sig-rs256": "accept",
    "oidcc-client-test-idtoken-sig-none": "either",
    "oidcc-client-test-invalid-sig-rs256": "reject",
    "oidcc-client-test-invalid-sig-hs256": "reject",
    "oidcc-client-test-invalid-sig-es256": "reject",
    "oidcc-client-test-userinfo-invalid-sub": "reject",
    "oidcc-client-test-nonce-invalid": "reject",
    "oidcc-client-test-nonce": "accept",
    "oidcc-client-test-scope-userinfo-claims": "accept",
    "oidcc-client-test-client-secret-basic": "accept",
    "oidcc-client-test-userinfo-bearer-header": "accept",
    "oidcc-client-test-userinfo-bearer-body": "accept",
    "oidcc-client-test-userinfo-signed": "accept",
    "oidcc-client-test-aggregated-claims": "accept",
    "oidcc-client-test-distributed-claims": "accept",
    "oidcc-client-test-discovery-openid-config": "accept",
    "oidcc-client-test-discovery-issuer-mismatch": "reject",
    "oidcc-client-test-discovery-jwks-uri-keys": "accept",
    "oidcc-client-test-discovery-webfinger-acct": "either",
    "oidcc-client-test-discovery-webfinger-url": "either",
    "oidcc-client-test-signing-key-rotation": "accept",
    "oidcc-client-test-signing-key-rotation-just-before-signing": "accept",
    "oidcc-client-test-3rd-party-init-login": "accept",
    # logout plans: the login must succeed, the logout must end the session
    "oidcc-client-test-rp-init-logout": "accept",
    "oidcc-client-test-rp-init-logout-other-state": "accept",
    "oidcc-client-test-rp-init-logout-no-state": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-alg-none": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-no-event": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-with-nonce": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-wrong-alg": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-wrong-aud": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-wrong-event": "accept",
    "oidcc-client-test-rp-backchannel-rpinitlogout-wrong-iss": "accept",
    "oidcc-client-test-rp-frontchannel-rpinitlogout": "accept",
    "oidcc-client-test-rp-frontchannel-opinitlogout": "accept",
    # refresh plan: the login is accepted; the refresh is (refresh-ok) or is not (refresh-refused)
    "oidcc-client-test-refresh-token": "refresh-ok",
    "oidcc-client-test-refresh-token-invalid-issuer": "refresh-refused",
    "oidcc-client-test-refresh-token-invalid-sub": "refresh-refused",
}

# FAPI 2.0 Security Profile (final), client plan with private_key_jwt, DPoP and OpenID Connect.
# "accept" there also needs the resource call (the suite's accounts endpoint, through a
# Vestibule route with the DPoP-bound token) to be answered 200: that call ends the module.
FAPI2 = "fapi2-security-profile-final-client-test-"
EXPECT.update({FAPI2 + name: verdict for name, verdict in {
    "happy-path": "accept",
    "happy-path-no-dpop-nonce": "accept",
    "valid-aud-as-array": "accept",
    "token-endpoint-response-without-expires_in": "accept",
    "token-type-case-insensitivity": "accept",
    "rs-dpop-auth-scheme-case-insensitivity": "accept",
    "discovery-issuer-mismatch": "reject",
    "invalid-iss": "reject",
    "invalid-aud": "reject",
    "invalid-secondary-aud": "reject",
    "invalid-null-alg": "reject",
    "invalid-alternate-alg": "reject",
    "invalid-expired-exp": "reject",
    "invalid-missing-exp": "reject",
    "invalid-missing-aud": "reject",
    "invalid-missing-iss": "reject",
    "invalid-nonce": "reject",
    "invalid-missing-nonce": "reject",
    "invalid-authorization-response-iss": "reject",
    "remove-authorization-response-iss": "reject",
    "ensure-authorization-response-with-invalid-state-fails": "reject",
    "ensure-authorization-response-with-invalid-missing-state-fails": "reject",
}.items()})

# Where the FAPI 2.0 plan's resource server is, under the module's issuer (the suite's
# AbstractFAPI2SPFinalClientTest.ACCOUNTS_PATH), and the Vestibule route that reaches it.
FAPI2_ACCOUNTS_PATH = "open-banking/v1.1/accounts"
FAPI2_ACCOUNTS_ROUTE = "/api/accounts"

# What Vestibule is told for the FAPI 2.0 plan: every mechanism the profile asks for, required
# (a silent fall-back to the front channel, to a secret or to a bearer token must fail the run).
FAPI2_OIDC = (
    'client_auth_method = "private_key_jwt"\n'
    'client_key_file = "{key}"\n'
    'par = "required"\n'
    'dpop = "required"\n'
)

# What Vestibule's callback must answer where a refusal has one right status: an ID token
# without `sub` or `iat` is a bad token (502), not a provider outage (503).
CALLBACK_STATUS = {
    "oidcc-client-test-missing-sub": 502,
    "oidcc-client-test-missing-iat": 502,
}

# What the post-logout landing must answer, per RP-initiated logout module.
# A state that is not ours, or none although we sent one (the OP MUST return it: RP-Initiated
# Logout §3), is refused with an error page; the session ended already.
LOGOUT_LANDING = {
    "oidcc-client-test-rp-init-logout-other-state": "error page",
    "oidcc-client-test-rp-init-logout-no-state": "error page",
}

# Modules that need more than one login through the same Vestibule process.
LOGINS = {"oidcc-client-test-signing-key-rotation": 2}

# Modules that test an option rather than the defaults, and the [oidc] setting that turns it on.
MODULE_OIDC = {
    # RFC 6750 §2.2: the access token to UserInfo in a form body (header is the default).
    "oidcc-client-test-userinfo-bearer-body": 'userinfo_token_method = "body"\n',
}

# How long the refresh plan's access tokens are assumed to live (the suite sends no expires_in).
ASSUMED_LIFETIME = 10


class Suite:
    def __init__(self, base, ca):
        self.base = base.rstrip("/") + "/"
        self.http = requests.Session()
        self.http.verify = ca

    def create_plan(self, name, variant, config):
        r = self.http.post(self.base + "api/plan", params={"planName": name, "variant": json.dumps(variant)},
                           json=config, timeout=60)
        r.raise_for_status()
        return r.json()

    def create_module(self, plan_id, module, variant):
        params = {"test": module, "plan": plan_id}
        if variant:
            params["variant"] = json.dumps(variant)
        r = self.http.post(self.base + "api/runner", params=params, timeout=60)
        if r.status_code != 201:
            raise RuntimeError("create module %s: HTTP %s %s" % (module, r.status_code, r.text[:500]))
        return r.json()["id"]

    def info(self, module_id):
        r = self.http.get(self.base + "api/info/" + module_id, timeout=30)
        return r.json() if r.status_code == 200 else {}

    def wait(self, module_id, states, timeout):
        end = time.time() + timeout
        info = {}
        while time.time() < end:
            info = self.info(module_id)
            if info.get("status") in states:
                return info
            time.sleep(0.5)
        return info

    def browser_url(self, module_id, contains, timeout):
        """Waits until the module asks the browser to visit a URL containing `contains`; marks
        it visited (as the suite's UI does) and returns it."""
        end = time.time() + timeout
        while time.time() < end:
            r = self.http.get(self.base + "api/runner/browser/" + module_id, timeout=30)
            if r.status_code == 200:
                for url in r.json().get("urls", []):
                    if contains in url:
                        self.http.post(self.base + "api/runner/browser/%s/visit" % module_id,
                                       params={"url": url}, timeout=30)
                        return url
            time.sleep(0.5)
        return None

    def stop(self, module_id):
        self.http.delete(self.base + "api/runner/" + module_id, timeout=30)

    def log(self, module_id):
        r = self.http.get(self.base + "api/log/" + module_id, timeout=60)
        return r.json() if r.status_code == 200 else []


class Upstream(BaseHTTPRequestHandler):
    """The API behind Vestibule's route: answers 200 and keeps the bearer token of each call
    (in memory only, to tell whether a refreshed token arrived)."""
    tokens = []

    def do_GET(self):  # noqa: N802 (the standard library's name)
        Upstream.tokens.append(self.headers.get("authorization", ""))
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_vestibule(args, issuer, workdir, upstream_port, oidc_extra, extra_routes="", server_extra=""):
    conf = os.path.join(workdir, "vestibule.toml")
    scopes = "" if args.vestibule_defaults else 'scopes = ["openid", "profile", "email"]\nprompt = ""\n'
    with open(conf, "w") as f:
        f.write(f'''listen = "127.0.0.1:{args.vestibule_port}"
public_url = "{args.vestibule_url}"

[oidc]
issuer = "{issuer}"
client_id = "{args.client_id}"
ca_file = "{args.ca}"
{scopes}{oidc_extra}
[session]
encryption_key = "{base64.b64encode(os.urandom(32)).decode()}"

[[routes]]
prefix = "/api/echo"
upstream = "http://127.0.0.1:{upstream_port}"
{extra_routes}
[server]
shutdown_delay_secs = 0
{server_extra}''')
    env = dict(os.environ, VESTIBULE_LOG="info,vestibule=debug", NO_COLOR="1")
    if args.scenario != "fapi2":  # private_key_jwt: no shared secret at all
        env["VESTIBULE_OIDC__CLIENT_SECRET"] = args.client_secret
    log = open(os.path.join(workdir, "vestibule.log"), "w")
    proc = subprocess.Popen(["nice", "-n", "19", args.vestibule, "--config", conf], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    # /healthz, not /readyz: a readiness probe could make Vestibule fetch discovery after the
    # module finished, which the suite records as a failure.
    alive = None
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            r = requests.get(args.vestibule_url + "/healthz", timeout=2, verify=args.ca)
            alive = r.status_code
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return proc, alive


def client_key(out):
    """Makes the ES256 key Vestibule authenticates with (private_key_jwt) for the FAPI 2.0
    plan: the private key as PKCS#8 PEM (oidc.client_key_file) and its public JWK, whose kid
    is its RFC 7638 thumbprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import hashlib
    key = ec.generate_private_key(ec.SECP256R1())
    path = os.path.abspath(os.path.join(out, "client-key.pem"))
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)
    numbers = key.public_key().public_numbers()
    b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x), "y": b64(numbers.y)}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return path, dict(jwk, kid=kid, use="sig", alg="ES256")


def follow(s, url, vbase, hops, stop_at_landing=True):
    """Follows redirects like a browser; stops at Vestibule's landing page `/` (not fetched).
    Returns the last response."""
    r = None
    for _ in range(12):
        r = s.get(url, allow_redirects=False, timeout=30)
        hop = {"url": url.split("?")[0], "status": r.status_code}
        if r.status_code >= 400 or "text/html" in r.headers.get("content-type", ""):
            text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", r.text, flags=re.S)
            text = re.sub(r"<[^>]+>", " ", text)
            hop["text"] = re.sub(r"\s+", " ", html.unescape(text)).strip()[:300]
        hops.append(hop)
        loc = r.headers.get("location")
        if r.status_code in (301, 302, 303, 307, 308) and loc:
            url = urllib.parse.urljoin(url, loc)
            if stop_at_landing and url.split("?")[0] == vbase + "/":
                hops.append({"url": vbase + "/", "status": "(landing page, not fetched)"})
                break
            continue
        break
    return r


def js_string(page, name):
    """The JavaScript string literal assigned in the suite's front-channel page."""
    m = re.search(name + r"\s*=\s*'((?:[^'\\]|\\.)*)'", page)
    if not m:
        return None
    # Unescape what StringEscapeUtils.escapeEcmaScript escaped (\\x for a character, \\uXXXX).
    return re.sub(r"\\u([0-9a-fA-F]{4})|\\(.)",
                  lambda e: chr(int(e.group(1), 16)) if e.group(1) else e.group(2), m.group(1))


def frontchannel_page(s, page, vbase, hops, ca):
    """Plays the suite's front-channel logout page: loads the RP's frontchannel_logout_uri as
    its iframe would (a third-party frame: no cookie of Vestibule's is sent), reports it
    loaded, then follows the page's own redirect to post_logout_redirect_uri."""
    rp_uri = js_string(page, r"iframe\.src")
    callback = js_string(page, r"let url")
    frame = requests.get(rp_uri, allow_redirects=False, timeout=30, verify=ca) if rp_uri else None
    hops.append({"url": (rp_uri or "(no iframe)").split("?")[0] + " (iframe, no cookies)",
                 "status": frame.status_code if frame is not None else None,
                 "csp": frame.headers.get("content-security-policy") if frame is not None else None})
    if callback:
        cb = s.get(callback + ("&" if "?" in callback else "?") + "loaded=true", timeout=30)
        hops.append({"url": callback.split("?")[0], "status": cb.status_code})
    m = re.search(r"window\.location\.href='([^']*)'", page)
    if m and m.group(1) != "OPINIT":
        follow(s, m.group(1), vbase, hops, stop_at_landing=False)


def logout(s, vbase, hops, ca):
    """RP-initiated logout through Vestibule: POST /api/auth/logout, then the browser goes to
    the provider's end-session URL and follows it back."""
    lo = s.post(vbase + "/api/auth/logout", headers={"X-CSRF": "1"}, timeout=30)
    hops.append({"url": vbase + "/api/auth/logout", "status": lo.status_code})
    end = lo.json().get("end_session_url") if lo.status_code == 200 else None
    if end:
        last = follow(s, end, vbase, hops)
        if last is not None and "frontchannel_logout_callback" in last.text:
            frontchannel_page(s, last.text, vbase, hops, ca)


def user_status(s, vbase):
    u = s.get(vbase + "/api/auth/user", headers={"X-CSRF": "1"}, timeout=30)
    user = u.json() if u.headers.get("content-type", "").startswith("application/json") else None
    return u.status_code, user


def summarize_log(entries):
    out = []
    for e in entries:
        if e.get("src") == "CallRPBackChannelLogoutEndpoint" and e.get("response_status_code"):
            out.append({"src": e["src"], "result": "INFO", "msg": "RP answered the logout token: %s" % e["response_status_code"]})
        res = e.get("result")
        if res in ("FAILURE", "WARNING", "REVIEW", "SKIPPED") or (e.get("src") == "TEST-RUNNER" and e.get("msg")):
            out.append({k: e.get(k) for k in ("src", "result", "msg") if e.get(k) is not None})
    return out


def run_module(args, suite, mid, name, rec, issuer, workdir, upstream):
    oidc_extra = MODULE_OIDC.get(name, "")
    if args.scenario == "refresh":
        oidc_extra += "assumed_token_lifetime_secs = %d\nrefresh_skew_secs = 1\n" % ASSUMED_LIFETIME
    extra_routes = server_extra = ""
    if args.scenario == "fapi2":
        oidc_extra += FAPI2_OIDC.format(key=args.client_key_file)
        extra_routes = '\n[[routes]]\nprefix = "%s"\nupstream = "%s%s"\n' % (
            FAPI2_ACCOUNTS_ROUTE, issuer, FAPI2_ACCOUNTS_PATH)
        # The suite's resource endpoint is served with the stack's private CA, as its OP is.
        server_extra = 'upstream_ca_file = "%s"\n' % args.ca
    proc, alive = start_vestibule(args, issuer, workdir, upstream.server_address[1], oidc_extra, extra_routes,
                                  server_extra)
    vbase = args.vestibule_url
    s = requests.Session()
    s.verify = args.ca
    hops = []
    try:
        rec["vestibule_healthz"] = alive
        if args.scenario == "third-party":
            url = suite.browser_url(mid, args.vestibule_url, 30)
            rec["initiate_login_url"] = url and url.split("?")[0]
            if url:
                follow(s, url, vbase, hops)
        else:
            for attempt in range(LOGINS.get(name, 1)):
                if attempt:
                    rec["earlier_logins"] = rec.get("earlier_logins", []) + [hops]
                    hops = []
                    time.sleep(1)
                follow(s, vbase + "/api/auth/login", vbase, hops)
        rec["hops"] = hops
        status, user = user_status(s, vbase)
        rec["session"] = status
        if status == 200 and user:
            rec["sub"] = user.get("sub")
            rec["claims"] = sorted(user.get("claims", {}).keys())
        got = "accept" if status == 200 else "reject"
        callback = [h["status"] for h in hops if h["url"].endswith("/api/auth/callback")]
        rec["callback_status"] = callback[-1] if callback else None
        if name in CALLBACK_STATUS and rec["callback_status"] != CALLBACK_STATUS[name]:
            got = "callback answered %s, expected %s" % (rec["callback_status"], CALLBACK_STATUS[name])
        if args.scenario == "fapi2" and status == 200:
            # The resource call the suite waits for: Vestibule sends the DPoP-bound token with
            # a fresh proof (and answers the suite's use_dpop_nonce challenge itself).
            resource = s.get(vbase + FAPI2_ACCOUNTS_ROUTE, headers={"X-CSRF": "1"}, timeout=30)
            rec["resource_status"] = resource.status_code
            if resource.status_code != 200:
                got = "resource call answered %s" % resource.status_code
        if args.scenario == "refresh" and status == 200:
            Upstream.tokens.clear()
            first = s.get(vbase + "/api/echo/before-refresh", headers={"X-CSRF": "1"}, timeout=30)
            # The token's assumed lifetime (less the refresh skew) must pass: the next call
            # then refreshes first.
            time.sleep(ASSUMED_LIFETIME)
            call = s.get(vbase + "/api/echo/after-refresh", headers={"X-CSRF": "1"}, timeout=30)
            rec["calls"] = [first.status_code, call.status_code]
            new_token = len(Upstream.tokens) == 2 and Upstream.tokens[0] != Upstream.tokens[1]
            rec["upstream_got_a_new_token"] = new_token
            got = "refresh-ok" if call.status_code == 200 and new_token else "refresh-refused"
        if args.scenario in ("logout", "frontchannel") and status == 200:
            logout_hops = []
            logout(s, vbase, logout_hops, args.ca)
            rec["logout_hops"] = logout_hops
            after, _ = user_status(s, vbase)
            logout_hops.append({"url": vbase + "/api/auth/user (after logout)", "status": after})
            landing = logout_hops[-2] if len(logout_hops) >= 2 else {}
            expected_landing = LOGOUT_LANDING.get(name, "home")
            landed = ("error page" if isinstance(landing.get("status"), int) and landing["status"] >= 400
                      else "home" if "landing page" in str(landing.get("status")) else "?")
            rec["logout_landing"] = landed
            if after != 401:
                got = "session survived logout"
            elif args.scenario == "logout" and landed != expected_landing:
                got = "post-logout landing: %s, expected %s" % (landed, expected_landing)
        rec["vestibule"] = got
        exp = rec["expect"]
        rec["oracle"] = "ok" if exp in ("either", got) else "FAIL"
    finally:
        # Stop Vestibule before waiting for the verdict: no late retry may reach the suite.
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="https://localhost:8981")
    ap.add_argument("--ca", required=True, help="the stack's private CA (PEM)")
    ap.add_argument("--plan", default="oidcc-client-basic-certification-test-plan")
    ap.add_argument("--variant", default='{"client_registration":"static_client","request_type":"plain_http_request"}')
    ap.add_argument("--scenario", default="login", choices=["login", "logout", "frontchannel", "third-party", "refresh", "fapi2"])
    ap.add_argument("--alias", default="vestibule")
    ap.add_argument("--client-id", default="vestibule-rp")
    ap.add_argument("--client-secret", default="conformance-secret-0123456789abcdef")
    ap.add_argument("--vestibule", default="target/debug/vestibule")
    ap.add_argument("--vestibule-port", type=int, default=8990, help="where Vestibule listens (plain HTTP)")
    ap.add_argument("--vestibule-url", default="https://localhost:8991", help="Vestibule behind the TLS front")
    ap.add_argument("--vestibule-defaults", action="store_true",
                    help="keep Vestibule's default scopes (with offline_access) and prompt (consent)")
    ap.add_argument("--wait-timeout", type=int, default=5, help="waitTimeoutSeconds given to the suite")
    ap.add_argument("--only", default="", help="comma-separated module names")
    ap.add_argument("--out", default="conformance-results")
    args = ap.parse_args()
    args.vestibule_url = args.vestibule_url.rstrip("/")
    # requests prefers these to a session's own `verify`: the stack's CA must win.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)

    os.makedirs(args.out, exist_ok=True)
    args.client_key_file = None
    suite = Suite(args.suite, args.ca)
    upstream = start_upstream()
    client = {"client_id": args.client_id, "client_secret": args.client_secret,
              "redirect_uri": args.vestibule_url + "/api/auth/callback"}
    if args.scenario == "fapi2":
        # private_key_jwt: the suite verifies client assertions with the public half of the
        # key Vestibule signs with (one key for the plan, written next to the evidence).
        args.client_key_file, public_jwk = client_key(args.out)
        client = {"client_id": args.client_id, "redirect_uri": client["redirect_uri"],
                  "scope": "openid profile email", "jwks": {"keys": [public_jwk]}}
    if args.scenario in ("logout", "frontchannel"):
        client["post_logout_redirect_uri"] = args.vestibule_url + "/api/auth/logout-callback"
    if args.scenario == "logout":
        # The suite posts logout tokens to Vestibule directly (it does not trust the stack's CA).
        client["backchannel_logout_uri"] = "http://localhost:%d/api/auth/backchannel-logout" % args.vestibule_port
    if args.scenario == "frontchannel":
        client["frontchannel_logout_uri"] = args.vestibule_url + "/api/auth/frontchannel-logout"
        client["frontchannel_logout_session_required"] = True
    if args.scenario == "third-party":
        client["initiate_login_uri"] = args.vestibule_url + "/api/auth/login"
    config = {"alias": args.alias, "description": "Vestibule RP", "client": client,
              "waitTimeoutSeconds": args.wait_timeout}
    plan = suite.create_plan(args.plan, json.loads(args.variant), config)
    print("plan", plan["id"], args.suite + "/plan-detail.html?plan=" + plan["id"], flush=True)
    only = set(filter(None, args.only.split(",")))
    results = []
    for m in plan["modules"]:
        name = m["testModule"]
        if only and name not in only:
            continue
        t0 = time.time()
        workdir = os.path.join(args.out, name)
        os.makedirs(workdir, exist_ok=True)
        mid = suite.create_module(plan["id"], name, m.get("variant"))
        info = suite.wait(mid, ("WAITING", "FINISHED", "INTERRUPTED"), 60)
        rec = {"module": name, "id": mid, "expect": EXPECT.get(name, "?")}
        if info.get("status") not in ("WAITING", "FINISHED"):
            rec.update(suite_status=info.get("status"), suite_result=info.get("result"),
                       note="module did not reach WAITING")
        elif info.get("status") == "WAITING":
            issuer = args.suite.rstrip("/") + "/test/a/" + args.alias + "/"
            run_module(args, suite, mid, name, rec, issuer, workdir, upstream)
        info = suite.wait(mid, ("FINISHED", "INTERRUPTED"), args.wait_timeout + 10)
        if info.get("status") not in ("FINISHED", "INTERRUPTED"):
            rec["note"] = "suite still %s; stopped by the driver" % info.get("status")
            suite.stop(mid)
            info = suite.wait(mid, ("FINISHED", "INTERRUPTED"), 15)
        rec["suite_status"] = info.get("status")
        rec["suite_result"] = info.get("result")
        entries = suite.log(mid)
        with open(os.path.join(workdir, "suite-log.json"), "w") as f:
            json.dump(entries, f, indent=1)
        rec["suite_findings"] = summarize_log(entries)
        rec["secs"] = round(time.time() - t0, 1)
        results.append(rec)
        print(json.dumps({k: rec.get(k) for k in ("module", "expect", "vestibule", "oracle", "suite_status",
                                                 "suite_result", "secs") if k in rec}), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"plan": plan["id"], "plan_name": args.plan, "variant": json.loads(args.variant),
                   "results": results}, f, indent=1)
    bad = [r for r in results if r.get("oracle") == "FAIL" or r.get("suite_result") == "FAILED"]
    for r in bad:
        print("FAILED:", r["module"], "oracle=%s (%s) suite=%s" % (r.get("oracle"), r.get("vestibule"), r.get("suite_result")),
              [f.get("msg") for f in r.get("suite_findings", []) if f.get("result") == "FAILURE"][:3])
    print("%d modules, %d with a failure (oracle or suite)" % (len(results), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
