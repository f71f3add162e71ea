"""The servers under test and around them, each started on free loopback ports from a config
generated under target/bench/: Redis, nginx (upstream and plain proxy), the test provider
(tests/op/server.js, from the stack description), Vestibule, Apache + mod_auth_openidc.
A start that fails raises Skip with the reason and the tail of the server's log."""

import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import time
import urllib.request

from .context import ROOT, STACK, VESTIBULE_BIN, WORK, Skip, log
from .processes import free_port, port_open, read_log, start, stop, tail, wait_for
from .resp import redis_cmd


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
events {{ worker_connections {worker_connections}; }}
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


def start_nginx(name, body, worker_connections=4096):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(d=d, body=body, worker_connections=worker_connections))
    p = start(name, ["nginx", "-p", d + "/", "-c", conf])
    return p


def start_upstream():
    port = free_port()
    body = f"""  map $http_authorization $saw_bearer {{ "~^Bearer [^ ]+" yes; default no; }}
  map "$http_authorization|$http_dpop" $saw_scheme {{ "~^Bearer [^ |]+\\|$" Bearer; "~^DPoP [^ |]+\\|ey" DPoP; default none; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      default_type application/json;
      add_header X-Saw-Bearer $saw_bearer always;
      add_header X-Saw-Scheme $saw_scheme always;
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


def start_nginx_websocket_proxy(upstream_port, sockets):
    """nginx's WebSocket proxy (proxy_http_version 1.1, Upgrade and Connection passed on) in
    front of the echo upstream, with room for `sockets` relays (two connections each). The
    room is a quarter more than they need: nginx closes waiting connections (a handshake not
    yet read) once fewer than 1/16 of its worker_connections are free. Its file-descriptor
    limit is the one it inherits (bench/run raises it)."""
    port = free_port()
    room = 2 * sockets * 5 // 4 + 1024
    body = f"""  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://127.0.0.1:{upstream_port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
  }}"""
    p = start_nginx("websocket-nginx", body, worker_connections=room)
    wait_for("WebSocket proxy nginx", lambda: port_open(port), p, 15, "websocket-nginx")
    return port, p


# --------------------------------------------------------------------------------------
# the test OpenID Provider (tests/op/server.js)
# --------------------------------------------------------------------------------------
# How long one start may take to print its address (it takes about 0.5 s; a start that
# stalls is retried once).
PROVIDER_START_S = 30


def start_provider(name, redirect_uris, access_ttl):
    """Starts tests/op/server.js with the stack's client and users (dev/stack.json) and the
    benchmark's overrides (free port, these redirect URIs, long ID and refresh tokens); returns
    (issuer, Popen). A start that does not print its address is retried once, its log shown."""
    env = {
        "OP_PORT": "0",
        "OP_REDIRECT_URIS": ",".join(redirect_uris),
        "OP_ACCESS_TOKEN_TTL": str(access_ttl),
        "OP_ID_TOKEN_TTL": "3600",
        "OP_REFRESH_TOKEN_TTL": "86400",
        "OP_KEYS_FILE": os.path.join(WORK, f"{name}-keys.json"),
    }
    try:
        return _start_provider_once(name, env)
    except Skip as first:
        log(f"provider {name}: start failed ({first}); its log:\n{read_log(name)}"
            f"provider {name}: retrying once (log: target/bench/logs/{name}-retry.log)")
        try:
            return _start_provider_once(f"{name}-retry", env)
        except Skip as second:
            raise Skip(f"provider {name} failed to start twice: {first}; then: {second}") from None


def _start_provider_once(logname, env):
    """One start. The address is read from the first stdout line on a thread (stdout stays
    drained into the log afterwards, so the pipe can never fill and block the provider); a
    start that stalls is asked for a Node diagnostic report (SIGUSR2) before it is stopped."""
    report = f"{logname}-stall-report.json"
    p = start(logname, ["node", "--report-on-signal", "--report-signal=SIGUSR2",
                        f"--report-directory={os.path.join(WORK, 'logs')}", f"--report-filename={report}",
                        os.path.join(ROOT, "tests", "op", "server.js")],
              env=env, stdout=subprocess.PIPE)
    first_line = queue.Queue()

    def drain():
        with p.stdout, open(os.path.join(WORK, "logs", f"{logname}.log"), "ab") as logf:
            first_line.put(p.stdout.readline())
            for later in p.stdout:
                logf.write(b"stdout: " + later)
                logf.flush()

    threading.Thread(target=drain, daemon=True).start()
    try:
        line = first_line.get(timeout=PROVIDER_START_S)
    except queue.Empty:
        os.kill(p.pid, signal.SIGUSR2)
        time.sleep(2)
        stop(p)
        raise Skip(f"printed nothing within {PROVIDER_START_S} s (Node report, if it could write one: "
                   f"target/bench/logs/{report}){tail(logname)}") from None
    if not line:
        p.wait(5)
        stop(p)
        raise Skip(f"exited during start-up (code {p.returncode}){tail(logname)}")
    info = json.loads(line)
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
                    extra=UNLIMITED_LOGINS, redis_url=None, public_port=None, session_extra="",
                    binary=VESTIBULE_BIN, launcher=(), start_timeout=60):
    """One Vestibule on 127.0.0.1:port (`public_port`: the load balancer's, when it has one),
    on Redis at `redis_port` (or any `redis_url`) or in memory; `session_extra` adds lines
    to `[session]`, `extra` whole sections. `binary` runs under `launcher` (e.g. valgrind)
    when given; its files are in target/bench/<name>/."""
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "vestibule.toml")
    redis_url = redis_url or (f"redis://127.0.0.1:{redis_port}" if redis_port else None)
    redis_line = f'redis_url = "{redis_url}"' if redis_url else "# in-memory store"
    with open(conf, "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{public_port or port}"

[oidc]
issuer = "{issuer}"
client_id = "{STACK['provider']['client_id']}"
client_secret = "{STACK['provider']['client_secret']}"
refresh_skew_secs = {skew}

[session]
{redis_line}
encryption_key = "{key}"
{session_extra}

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:{upstream_port}"
{extra}""")
    os.chmod(conf, 0o600)
    # Stopped and restarted between scenarios: no load balancer to wait for.
    p = start(name, [*launcher, binary, "--config", conf],
              env={"VESTIBULE_LOG": "warn", "VESTIBULE_SERVER__SHUTDOWN_DELAY_SECS": "0"})
    wait_for(name, lambda: port_open(port), p, start_timeout, name)
    return p


# --------------------------------------------------------------------------------------
# Apache httpd + mod_auth_openidc
# --------------------------------------------------------------------------------------
def start_apache(port, issuer, upstream_port, redis_port):
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
OIDCClientID {STACK['provider']['client_id']}
OIDCClientSecret {STACK['provider']['client_secret']}
OIDCProviderTokenEndpointAuth {STACK['provider']['token_auth_method']}
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
