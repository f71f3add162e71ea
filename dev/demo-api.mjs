#!/usr/bin/env node
// Demo upstream API for the Vestibule docker-compose stack. Zero dependencies (Node 20+).
//
// Every request must carry `Authorization: Bearer <access token>`. The token is checked by
// calling the OpenID Provider's userinfo endpoint with it (found through discovery); a positive
// answer is cached for at most 5 seconds, keyed by the SHA-256 of the token. Tokens are never
// logged. Two kinds of path are checked differently (issue 31's per-route credentials):
//
//   AUDIENCE_PATHS      the bearer token must be a JWT access token meant for this API:
//                       signature checked locally with the provider's JWKS (jwks_uri from
//                       discovery; RS256, ES256, EdDSA), `iss` = discovery's issuer, unexpired,
//                       `aud` containing the path's audience. Keycloak's exchanged tokens carry
//                       no `openid` scope, so its userinfo would refuse them: this check does not
//                       ask it. A login's own token (another audience) gets 401 here.
//   ASSERTION_PATHS     no provider token: the request must carry Vestibule's identity
//                       assertion (header ASSERTION_HEADER), a compact JWS (ES256, RS256 or
//                       EdDSA) whose `kid` is in ASSERTION_JWKS_URL's key set (fetched again,
//                       once, on an unknown kid: key rotation), with `iss` = ASSERTION_ISSUER,
//                       `aud` = the path's audience, `iat` and `exp` (in the future, at most 60 s
//                       after `iat`). The answer echoes the verified claims, the `kid` and `alg`.
//
// Anything refused answers 401 with `WWW-Authenticate: Bearer error="invalid_token",
// error_description="…"` (the reason is also in the JSON body and the log; the token is not).
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
//     AUDIENCE_PATHS=/orders=orders-api node dev/demo-api.mjs
//
// Environment: OIDC_DISCOVERY_URL (required), PORT (default 9000), HOST (default 127.0.0.1),
// AUDIENCE_PATHS and ASSERTION_PATHS (comma-separated `prefix=audience` pairs, e.g.
// `/orders=orders-api,/billing=billing-api`; a prefix covers itself and what lies below it, the
// longest prefix wins, audience paths before assertion paths), ASSERTION_JWKS_URL and
// ASSERTION_ISSUER (required with ASSERTION_PATHS: Vestibule's `<public_url>/.well-known/jwks.json`
// and its `public_url`), ASSERTION_HEADER (default X-Vestibule-Assertion).

import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { createServer } from 'node:http';

const PORT = Number.parseInt(process.env.PORT ?? '9000', 10);
const HOST = process.env.HOST ?? '127.0.0.1';
const DISCOVERY_URL = process.env.OIDC_DISCOVERY_URL;
const CACHE_TTL_MS = 5_000;
const FETCH_TIMEOUT_MS = 5_000;
const TICK_MS = 1_000;
/** How long an assertion may live (`exp` - `iat`), and the clock skew allowed on `iat`/`nbf`. */
const ASSERTION_MAX_LIFETIME_S = 60;
const CLOCK_SKEW_S = 5;

/** `prefix=audience,prefix=audience` -> [{ prefix, audience }], longest prefix first. */
function parsePaths(name) {
  const value = process.env[name];
  if (!value) return [];
  const paths = value.split(',').map((pair) => pair.trim()).filter(Boolean).map((pair) => {
    const [prefix, audience, ...rest] = pair.split('=');
    if (!prefix?.startsWith('/') || !audience || rest.length > 0) {
      console.error(`demo-api: ${name} must be comma-separated prefix=audience pairs (got ${JSON.stringify(pair)})`);
      process.exit(2);
    }
    return { prefix: prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix, audience };
  });
  return paths.sort((a, b) => b.prefix.length - a.prefix.length);
}

const AUDIENCE_PATHS = parsePaths('AUDIENCE_PATHS');
const ASSERTION_PATHS = parsePaths('ASSERTION_PATHS');
const ASSERTION_JWKS_URL = process.env.ASSERTION_JWKS_URL;
const ASSERTION_ISSUER = process.env.ASSERTION_ISSUER;
const ASSERTION_HEADER = (process.env.ASSERTION_HEADER ?? 'X-Vestibule-Assertion').toLowerCase();

if (ASSERTION_PATHS.length > 0 && (!ASSERTION_JWKS_URL || !ASSERTION_ISSUER)) {
  console.error('demo-api: ASSERTION_PATHS needs ASSERTION_JWKS_URL and ASSERTION_ISSUER');
  process.exit(2);
}

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
let metadata = null;
let discoveryInFlight = null;

/** The provider's discovery document, fetched once (a failure is not cached). */
async function getMetadata() {
  if (metadata) return metadata;
  // One discovery at a time; a failure is not cached, so the next request retries.
  discoveryInFlight ??= (async () => {
    try {
      const response = await fetch(DISCOVERY_URL, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`discovery answered ${response.status}`);
      const document = await response.json();
      if (typeof document.issuer !== 'string') throw new Error('discovery has no issuer');
      metadata = document;
      log(`discovery: issuer ${metadata.issuer}, userinfo ${metadata.userinfo_endpoint}, jwks ${metadata.jwks_uri}`);
      return metadata;
    } finally {
      discoveryInFlight = null;
    }
  })();
  return discoveryInFlight;
}

async function getUserinfoEndpoint() {
  const { userinfo_endpoint: endpoint } = await getMetadata();
  if (typeof endpoint !== 'string') throw new Error('discovery has no userinfo_endpoint');
  return endpoint;
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

// ---------------------------------------------------------------- JWT verification (local)
/** A token this API refuses (answered with 401 and the reason). */
class InvalidToken extends Error {}

/** JWS `alg` -> the key it needs and how node:crypto verifies it (RFC 7518 §3, RFC 8037). */
const ALGORITHMS = {
  RS256: { kty: 'RSA', digest: 'sha256', options: {} },
  ES256: { kty: 'EC', crv: 'P-256', digest: 'sha256', options: { dsaEncoding: 'ieee-p1363' }, length: 64 },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', digest: null, options: {} },
};

const base64url = (part) => Buffer.from(part, 'base64url');

function decodeJson(part, what) {
  try {
    const value = JSON.parse(base64url(part).toString('utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) return value;
  } catch { /* refused below */ }
  throw new InvalidToken(`the ${what} is not a JSON object`);
}

/** A JWKS, fetched on first use and once more on an unknown `kid` (concurrent misses share it). */
class KeySet {
  constructor(name, url) {
    this.name = name;
    this.url = url; // a string, or an async function answering one
    this.keys = null;
    this.inFlight = null;
  }

  async fetchKeys() {
    this.inFlight ??= (async () => {
      try {
        const url = typeof this.url === 'function' ? await this.url() : this.url;
        const response = await fetch(url, {
          headers: { accept: 'application/json' },
          signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
        });
        if (!response.ok) throw new Error(`${this.name} JWKS answered ${response.status}`);
        const { keys } = await response.json();
        if (!Array.isArray(keys)) throw new Error(`${this.name} JWKS has no keys`);
        this.keys = keys;
        log(`${this.name} JWKS: ${keys.map((key) => key.kid).join(', ')}`);
        return keys;
      } finally {
        this.inFlight = null;
      }
    })();
    return this.inFlight;
  }

  /** The public key `kid` for `alg`; throws InvalidToken when the set has none. */
  async key(kid, alg) {
    const find = (keys) => keys?.find((key) => key.kid === kid
      && (key.use === undefined || key.use === 'sig') && (key.alg === undefined || key.alg === alg));
    let jwk = find(this.keys);
    if (!jwk) {
      let keys;
      try {
        keys = await this.fetchKeys();
      } catch (error) {
        throw new ProviderUnavailable(error.message);
      }
      jwk = find(keys);
    }
    if (!jwk) throw new InvalidToken(`no ${alg} key ${kid} in the ${this.name} key set`);
    const wanted = ALGORITHMS[alg];
    if (jwk.kty !== wanted.kty || (wanted.crv && jwk.crv !== wanted.crv)) {
      throw new InvalidToken(`key ${kid} is not a ${alg} key`);
    }
    try {
      return createPublicKey({ key: jwk, format: 'jwk' });
    } catch {
      throw new InvalidToken(`key ${kid} is not a usable public key`);
    }
  }
}

/**
 * Verifies a compact JWS with `keys` and answers { header, claims }. Checks, in order: form,
 * alg, kid, signature, then `iss`, `aud`, `exp`, `nbf` and `iat` (what `expect` asks for).
 */
async function verifyJwt(token, keys, expect) {
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]*$/.test(part))) {
    throw new InvalidToken('not a compact JWS');
  }
  const header = decodeJson(parts[0], 'header');
  const algorithm = Object.hasOwn(ALGORITHMS, header.alg) ? ALGORITHMS[header.alg] : null;
  if (!algorithm) throw new InvalidToken(`alg ${JSON.stringify(header.alg)} is not accepted`);
  if (typeof header.kid !== 'string') throw new InvalidToken('the header names no kid');
  if (header.crit !== undefined) throw new InvalidToken('crit header parameters are not understood');
  const key = await keys.key(header.kid, header.alg);
  const signature = base64url(parts[2]);
  if (algorithm.length && signature.length !== algorithm.length) throw new InvalidToken('bad signature');
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`, 'ascii');
  if (!verifySignature(algorithm.digest, signed, { key, ...algorithm.options }, signature)) {
    throw new InvalidToken('bad signature');
  }
  const claims = decodeJson(parts[1], 'payload');
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== expect.issuer) throw new InvalidToken(`iss ${JSON.stringify(claims.iss)} is not ${expect.issuer}`);
  const audiences = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (!audiences.includes(expect.audience)) {
    throw new InvalidToken(`aud ${JSON.stringify(claims.aud ?? null)} does not name ${expect.audience}`);
  }
  if (typeof claims.exp !== 'number') throw new InvalidToken('no exp');
  if (claims.exp <= now) throw new InvalidToken('expired');
  if (typeof claims.nbf === 'number' && claims.nbf > now + CLOCK_SKEW_S) throw new InvalidToken('not valid yet (nbf)');
  if (expect.maxLifetime !== undefined) {
    if (typeof claims.iat !== 'number') throw new InvalidToken('no iat');
    if (claims.iat > now + CLOCK_SKEW_S) throw new InvalidToken('issued in the future (iat)');
    if (claims.exp - claims.iat > expect.maxLifetime) {
      throw new InvalidToken(`lives ${claims.exp - claims.iat} s, more than ${expect.maxLifetime} s`);
    }
  }
  return { header, claims };
}

const providerKeys = new KeySet('provider', async () => {
  const { jwks_uri: uri } = await getMetadata();
  if (typeof uri !== 'string') throw new Error('discovery has no jwks_uri');
  return uri;
});
const assertionKeys = ASSERTION_JWKS_URL ? new KeySet('assertion', ASSERTION_JWKS_URL) : null;

/** The audience of the first entry of `paths` covering `path`, or null. */
function audienceFor(paths, path) {
  const hit = paths.find(({ prefix }) => prefix === '/' || path === prefix || path.startsWith(`${prefix}/`));
  return hit ? hit.audience : null;
}

/**
 * Who is calling `path`, checked as the path asks: { kind, claims, header? } where kind is
 * `userinfo`, `audience` or `assertion`. Throws InvalidToken (401) or ProviderUnavailable (503).
 */
async function authenticate(req, path) {
  const audience = audienceFor(AUDIENCE_PATHS, path);
  const assertionAudience = audience ? null : audienceFor(ASSERTION_PATHS, path);
  if (assertionAudience) {
    const assertion = req.headers[ASSERTION_HEADER];
    if (typeof assertion !== 'string' || assertion.length === 0) {
      throw new InvalidToken(`no ${ASSERTION_HEADER} header`);
    }
    const { header, claims } = await verifyJwt(assertion.trim(), assertionKeys, {
      issuer: ASSERTION_ISSUER,
      audience: assertionAudience,
      maxLifetime: ASSERTION_MAX_LIFETIME_S,
    });
    return { kind: 'assertion', claims, header, audience: assertionAudience };
  }
  const token = bearerToken(req);
  if (!token) throw new InvalidToken('no bearer token');
  if (audience) {
    let issuer;
    try {
      issuer = (await getMetadata()).issuer;
    } catch (error) {
      throw new ProviderUnavailable(error.message);
    }
    const { header, claims } = await verifyJwt(token, providerKeys, { issuer, audience });
    // Keycloak marks its ID and refresh tokens with `typ`; only an access token calls an API.
    if (typeof claims.typ === 'string' && claims.typ.toLowerCase() !== 'bearer') {
      throw new InvalidToken(`typ ${claims.typ} is not an access token`);
    }
    return { kind: 'audience', claims, header, audience };
  }
  const claims = await verify(token);
  if (!claims) throw new InvalidToken('token rejected by userinfo');
  return { kind: 'userinfo', claims };
}

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

/** A reason fit for a quoted header parameter (RFC 6750 §3: printable ASCII, no quote). */
const headerSafe = (reason) => reason.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'").slice(0, 200);

const unauthorized = (res, reason) =>
  send(res, 401, { error: 'invalid_token', error_description: reason }, {
    'www-authenticate': `Bearer error="invalid_token", error_description="${headerSafe(reason)}"`,
  });

/** `authenticate`, with its refusals logged: the caller, or null once `refuse` has answered. */
async function caller401(req, path, refuse) {
  try {
    return await authenticate(req, path);
  } catch (error) {
    if (error instanceof InvalidToken) {
      log(`${req.method} ${path} -> 401 (${error.message})`);
      refuse(401, error.message);
      return null;
    }
    if (error instanceof ProviderUnavailable) {
      log(`${req.method} ${path} -> 503 (provider unavailable: ${error.message})`);
      refuse(503, error.message);
      return null;
    }
    throw error;
  }
}

async function handle(req, res) {
  const path = new URL(req.url ?? '/', 'http://demo-api').pathname;
  // Drain any request body; this API only echoes who called it.
  req.resume();

  const who = await caller401(req, path, (status, reason) => (status === 401
    ? unauthorized(res, reason)
    : send(res, 503, { error: 'provider_unavailable' }, { 'retry-after': '5' })));
  if (!who) return undefined;
  const { claims } = who;
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
  const checked = {};
  if (who.kind === 'audience') {
    message = `${message}: an access token for ${who.audience}`;
    checked.token = { aud: claims.aud, azp: claims.azp ?? null, scope: claims.scope ?? null, kid: who.header.kid };
  } else if (who.kind === 'assertion') {
    message = `${message}: Vestibule's identity assertion for ${who.audience}`;
    checked.assertion = { claims, kid: who.header.kid, alg: who.header.alg };
    checked.bearer = bearerToken(req) !== null;
  }
  log(`${req.method} ${path} -> 200 (sub ${claims.sub}, checked by ${who.kind})`);
  return send(res, 200, {
    message,
    caller,
    ...checked,
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
  const who = await caller401(req, path, (status, reason) => (status === 401
    ? refuseHandshake(socket, 401, 'Unauthorized',
      `WWW-Authenticate: Bearer error="invalid_token", error_description="${headerSafe(reason)}"\r\n`)
    : refuseHandshake(socket, 503, 'Service Unavailable', 'Retry-After: 5\r\n')));
  if (!who) return undefined;
  const { claims } = who;
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
