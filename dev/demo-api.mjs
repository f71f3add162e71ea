#!/usr/bin/env node
// Demo upstream API for the Vestibule docker-compose stack. Zero dependencies (Node 20+).
//
// Every request must carry `Authorization: Bearer <access token>`. The token is checked by
// calling the OpenID Provider's userinfo endpoint with it (found through discovery); a positive
// answer is cached for at most 5 seconds, keyed by the SHA-256 of the token. Tokens are never
// logged.
//
//   OIDC_DISCOVERY_URL=http://localhost:8081/realms/vestibule/.well-known/openid-configuration \
//     node dev/demo-api.mjs
//
// Environment: OIDC_DISCOVERY_URL (required), PORT (default 9000), HOST (default 127.0.0.1).

import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

const PORT = Number.parseInt(process.env.PORT ?? '9000', 10);
const HOST = process.env.HOST ?? '127.0.0.1';
const DISCOVERY_URL = process.env.OIDC_DISCOVERY_URL;
const CACHE_TTL_MS = 5_000;
const FETCH_TIMEOUT_MS = 5_000;

if (!DISCOVERY_URL) {
  console.error('demo-api: OIDC_DISCOVERY_URL is required (the provider\'s .well-known/openid-configuration URL)');
  process.exit(2);
}
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error('demo-api: PORT must be a port number');
  process.exit(2);
}

const log = (message) => console.error(`${new Date().toISOString()} demo-api: ${message}`);

// ---------------------------------------------------------------- discovery (cached)
let userinfoEndpoint = null;
let discoveryInFlight = null;

async function getUserinfoEndpoint() {
  if (userinfoEndpoint) return userinfoEndpoint;
  // One discovery at a time; a failure is not cached, so the next request retries.
  discoveryInFlight ??= (async () => {
    try {
      const response = await fetch(DISCOVERY_URL, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`discovery answered ${response.status}`);
      const metadata = await response.json();
      if (typeof metadata.userinfo_endpoint !== 'string') {
        throw new Error('discovery has no userinfo_endpoint');
      }
      userinfoEndpoint = metadata.userinfo_endpoint;
      log(`userinfo endpoint: ${userinfoEndpoint}`);
      return userinfoEndpoint;
    } finally {
      discoveryInFlight = null;
    }
  })();
  return discoveryInFlight;
}

// ---------------------------------------------------------------- token check (cached)
/** sha256(token) -> { claims, expires } ; only positive answers are cached. */
const cache = new Map();

class ProviderUnavailable extends Error {}

/** Returns the userinfo claims, or null when the provider rejects the token. */
async function verify(token) {
  const key = createHash('sha256').update(token).digest('hex');
  const now = Date.now();
  const hit = cache.get(key);
  if (hit && hit.expires > now) return hit.claims;
  if (hit) cache.delete(key);

  let response;
  try {
    const endpoint = await getUserinfoEndpoint();
    response = await fetch(endpoint, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (error) {
    throw new ProviderUnavailable(error.message);
  }
  if (response.status === 401 || response.status === 403 || response.status === 400) {
    await response.body?.cancel();
    return null;
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new ProviderUnavailable(`userinfo answered ${response.status}`);
  }
  const claims = await response.json().catch(() => null);
  if (!claims || typeof claims.sub !== 'string') {
    throw new ProviderUnavailable('userinfo answer has no sub');
  }
  cache.set(key, { claims, expires: now + CACHE_TTL_MS });
  return claims;
}

// Drop expired entries now and then so the cache cannot grow without bound.
const sweeper = setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of cache) if (entry.expires <= now) cache.delete(key);
}, CACHE_TTL_MS);
sweeper.unref();

// ---------------------------------------------------------------- HTTP
function send(res, status, body, extraHeaders = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...extraHeaders,
  });
  res.end(payload);
}

function bearerToken(req) {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return null;
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(header);
  return match ? match[1] : null;
}

const unauthorized = (res) =>
  send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });

async function handle(req, res) {
  const path = new URL(req.url ?? '/', 'http://demo-api').pathname;
  // Drain any request body; this API only echoes who called it.
  req.resume();

  const token = bearerToken(req);
  if (!token) {
    log(`${req.method} ${path} -> 401 (no bearer token)`);
    return unauthorized(res);
  }
  let claims;
  try {
    claims = await verify(token);
  } catch (error) {
    log(`${req.method} ${path} -> 503 (provider unavailable: ${error.message})`);
    return send(res, 503, { error: 'provider_unavailable' }, { 'retry-after': '5' });
  }
  if (!claims) {
    log(`${req.method} ${path} -> 401 (token rejected by userinfo)`);
    return unauthorized(res);
  }
  const roles = Array.isArray(claims.realm_access?.roles) ? claims.realm_access.roles : [];
  log(`${req.method} ${path} -> 200 (sub ${claims.sub})`);
  return send(res, 200, {
    message: 'Hello from the demo API',
    caller: {
      sub: claims.sub,
      name: claims.name ?? null,
      preferred_username: claims.preferred_username ?? null,
      email: claims.email ?? null,
      roles,
    },
    method: req.method,
    path,
    served_at: new Date().toISOString(),
  });
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    log(`internal error: ${error.message}`);
    if (!res.headersSent) send(res, 500, { error: 'internal_error' });
    else res.destroy();
  });
});
server.keepAliveTimeout = 65_000;

server.listen(PORT, HOST, () => {
  const address = server.address();
  log(`listening on http://${HOST}:${address.port} (discovery: ${DISCOVERY_URL})`);
});
server.on('error', (error) => {
  log(`cannot listen: ${error.message}`);
  process.exit(1);
});

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 5_000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
