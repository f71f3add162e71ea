#!/usr/bin/env node
// Demo upstream API for the Vestibule docker-compose stack. Zero dependencies (Node 20+).
//
// Every request must carry `Authorization: Bearer <access token>`. The token is checked by
// calling the OpenID Provider's userinfo endpoint with it (found through discovery); a positive
// answer is cached for at most 5 seconds, keyed by the SHA-256 of the token. Tokens are never
// logged.
//
//   GET /admin/...      the caller's claims must name the role admin (Keycloak's
//                       realm_access.roles, or roles), else 403: the API's own check, behind
//                       the route's claim rule in Vestibule
//   GET /live/...       with `Upgrade: websocket`: a WebSocket (RFC 6455, by hand: text frames,
//                       ping/pong, close) pushing {"tick": n, ...} every second
//   GET /events, GET /live/events
//                       server-sent events (text/event-stream), one tick a second
//   anything else       who called (sub, name, roles), method and path
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
const TICK_MS = 1_000;

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
  const caller = callerOf(claims);
  if (path === '/events' || path === '/live/events') {
    log(`${req.method} ${path} -> 200 event stream (sub ${claims.sub})`);
    return streamEvents(req, res, caller);
  }
  if (path === '/live' || path.startsWith('/live/')) {
    log(`${req.method} ${path} -> 426 (not a WebSocket handshake; sub ${claims.sub})`);
    return send(res, 426, { error: 'upgrade_required' }, { upgrade: 'websocket', connection: 'Upgrade' });
  }
  let message = 'Hello from the demo API';
  if (path === '/admin' || path.startsWith('/admin/')) {
    if (!caller.roles.includes('admin')) {
      log(`${req.method} ${path} -> 403 (not an admin; sub ${claims.sub})`);
      return send(res, 403, { error: 'forbidden', message: 'the admin API needs the role admin' });
    }
    message = 'Hello, administrator: the demo API\'s admin report';
  } else if (path === '/step-up' || path.startsWith('/step-up/')) {
    message = 'Hello from the step-up route: your login was recent (or strong) enough';
  }
  log(`${req.method} ${path} -> 200 (sub ${claims.sub})`);
  return send(res, 200, {
    message,
    caller,
    method: req.method,
    path,
    served_at: new Date().toISOString(),
  });
}

/** What the answers say about the caller (Keycloak names realm roles realm_access.roles). */
function callerOf(claims) {
  const roles = Array.isArray(claims.realm_access?.roles)
    ? claims.realm_access.roles
    : Array.isArray(claims.roles) ? claims.roles : [];
  return {
    sub: claims.sub,
    name: claims.name ?? null,
    preferred_username: claims.preferred_username ?? null,
    email: claims.email ?? null,
    roles,
  };
}

const tick = (n, caller) =>
  JSON.stringify({ tick: n, at: new Date().toISOString(), user: caller.preferred_username ?? caller.sub });

// ---------------------------------------------------------------- server-sent events
function streamEvents(req, res, caller) {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
  });
  let n = 0;
  const push = () => res.write(`data: ${tick(n++, caller)}\n\n`);
  push();
  const timer = setInterval(push, TICK_MS);
  res.on('close', () => {
    clearInterval(timer);
    log(`event stream of ${caller.sub} ended after ${n} events`);
  });
}

// ---------------------------------------------------------------- WebSocket (RFC 6455)
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_FRAME_BYTES = 64 * 1024;
const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

/** One unmasked frame (a server never masks, §5.1) with FIN set. */
function frame(opcode, payload = Buffer.alloc(0)) {
  const length = payload.length;
  let header;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header.writeUInt16BE(length, 2);
    header[1] = 126;
  } else {
    header = Buffer.alloc(10);
    header.writeBigUInt64BE(BigInt(length), 2);
    header[1] = 127;
  }
  header[0] = 0x80 | opcode;
  return Buffer.concat([header, payload]);
}

function closeFrame(code, reason = '') {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return frame(OPCODE.close, payload);
}

/** Reads the client's frames from `buffer`: [frames, rest], or null for a frame we refuse. */
function parseFrames(buffer) {
  const frames = [];
  for (;;) {
    if (buffer.length < 2) break;
    const opcode = buffer[0] & 0x0f;
    const masked = (buffer[1] & 0x80) !== 0;
    let length = buffer[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buffer.length < 4) break;
      length = buffer.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buffer.length < 10) break;
      const long = buffer.readBigUInt64BE(2);
      if (long > BigInt(MAX_FRAME_BYTES)) return null;
      length = Number(long);
      offset = 10;
    }
    if (!masked || length > MAX_FRAME_BYTES) return null; // clients must mask (§5.1)
    if (buffer.length < offset + 4 + length) break;
    const mask = buffer.subarray(offset, offset + 4);
    const payload = Buffer.from(buffer.subarray(offset + 4, offset + 4 + length));
    for (let i = 0; i < payload.length; i += 1) payload[i] ^= mask[i % 4];
    frames.push({ opcode, payload });
    buffer = buffer.subarray(offset + 4 + length);
  }
  return [frames, buffer];
}

function refuseHandshake(socket, status, reason, extra = '') {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n${extra}\r\n`);
}

async function upgrade(req, socket) {
  const path = new URL(req.url ?? '/', 'http://demo-api').pathname;
  socket.on('error', () => socket.destroy());
  const key = req.headers['sec-websocket-key'];
  if (
    req.method !== 'GET' || !(path === '/live' || path.startsWith('/live/'))
    || String(req.headers.upgrade).toLowerCase() !== 'websocket'
    || req.headers['sec-websocket-version'] !== '13' || typeof key !== 'string'
  ) {
    log(`${req.method} ${path} -> 400 (not a WebSocket handshake this API accepts)`);
    return refuseHandshake(socket, 400, 'Bad Request');
  }
  const token = bearerToken(req);
  let claims = null;
  try {
    claims = token ? await verify(token) : null;
  } catch (error) {
    log(`${req.method} ${path} -> 503 (provider unavailable: ${error.message})`);
    return refuseHandshake(socket, 503, 'Service Unavailable', 'Retry-After: 5\r\n');
  }
  if (!claims) {
    log(`${req.method} ${path} -> 401 (WebSocket handshake without a valid bearer token)`);
    return refuseHandshake(socket, 401, 'Unauthorized', 'WWW-Authenticate: Bearer error="invalid_token"\r\n');
  }
  const accept = createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
      + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  const caller = callerOf(claims);
  log(`${req.method} ${path} -> 101 WebSocket (sub ${claims.sub})`);
  let n = 0;
  let closing = false;
  const sendTick = () => socket.write(frame(OPCODE.text, Buffer.from(tick(n++, caller))));
  sendTick();
  const timer = setInterval(sendTick, TICK_MS);
  const close = (code, reason) => {
    if (closing) return;
    closing = true;
    clearInterval(timer);
    socket.end(closeFrame(code, reason));
  };
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    const parsed = parseFrames(Buffer.concat([pending, chunk]));
    if (!parsed) return close(1009, 'frame refused');
    const [frames, rest] = parsed;
    pending = rest;
    for (const { opcode, payload } of frames) {
      if (opcode === OPCODE.ping) socket.write(frame(OPCODE.pong, payload));
      else if (opcode === OPCODE.close) {
        // Echo the peer's code (§5.5.1); Vestibule sends 1001 when the session ended.
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1000;
        log(`WebSocket of ${caller.sub} closed by the peer (${code}) after ${n} ticks`);
        return close(code === 1005 || code === 1006 ? 1000 : code);
      }
      // Text, binary, pong and continuation frames are read and ignored: the feed only pushes.
    }
  });
  socket.on('close', () => clearInterval(timer));
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    log(`internal error: ${error.message}`);
    if (!res.headersSent) send(res, 500, { error: 'internal_error' });
    else res.destroy();
  });
});
server.keepAliveTimeout = 65_000;
server.on('upgrade', (req, socket) => {
  upgrade(req, socket).catch((error) => {
    log(`internal error in a WebSocket: ${error.message}`);
    socket.destroy();
  });
});

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
