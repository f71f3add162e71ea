// Test OpenID Provider for Vestibule integration tests, the benchmark and dev/run.
//
// Its defaults are the local stack's description (dev/stack.json: client, secrets, token
// lifetimes, fixed settings); OP_* environment variables override them (see README.md). Once listening it
// prints exactly one line of JSON to stdout:
//   {"issuer":"http://127.0.0.1:<port>","port":<port>}
// Everything else (oidc-provider notices/warnings, request errors) goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as util from 'node:util';

// oidc-provider prints some notices with console.info (stdout). Keep stdout clean:
// route every console method to stderr before the library is loaded.
for (const method of ['log', 'info', 'debug', 'warn', 'error']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => {
    process.stderr.write(`${util.format(...args)}\n`);
  };
}

const startedAt = Date.now();
// Start-up milestones on stderr, so a start that stalls says where.
function milestone(what) {
  process.stderr.write(`test-op: ${what} (${Date.now() - startedAt} ms)\n`);
}

const { default: Provider, errors: oidcErrors, interactionPolicy } = await import('oidc-provider');
milestone('oidc-provider loaded');

// ---------------------------------------------------------------------------
// configuration from the environment
// ---------------------------------------------------------------------------

const env = process.env;
// The local stack's shared facts; every OP_* variable below overrides one of them.
const STACK = JSON.parse(fs.readFileSync(new URL('../../dev/stack.json', import.meta.url), 'utf8')).provider;

function intEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0 || String(value) !== raw.trim()) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function listEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

function boolEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  return ['1', 'true', 'yes', 'on'].includes(raw.trim().toLowerCase());
}

const PORT = intEnv('OP_PORT', 0);
const CLIENT_ID = env.OP_CLIENT_ID || STACK.client_id;
const CLIENT_SECRET = env.OP_CLIENT_SECRET || STACK.client_secret;
const REDIRECT_URIS = listEnv('OP_REDIRECT_URIS', STACK.redirect_uris);
const POST_LOGOUT_REDIRECT_URIS = listEnv(
  'OP_POST_LOGOUT_REDIRECT_URIS',
  [...new Set(REDIRECT_URIS.map((uri) => `${new URL(uri).origin}/api/auth/logout-callback`))],
);
const TOKEN_AUTH_METHOD = env.OP_TOKEN_AUTH_METHOD || STACK.token_auth_method;
const ID_TOKEN_ALG = env.OP_ID_TOKEN_ALG || STACK.id_token_alg;
const UPSTREAM_CLIENT_ID = env.OP_UPSTREAM_CLIENT_ID || STACK.upstream_client_id;
const UPSTREAM_CLIENT_SECRET = env.OP_UPSTREAM_CLIENT_SECRET || STACK.upstream_client_secret;
const UPSTREAM_TOKEN_AUTH_METHOD = env.OP_UPSTREAM_TOKEN_AUTH_METHOD || STACK.upstream_token_auth_method;
const KEYS_FILE = env.OP_KEYS_FILE || undefined;
// Provider profiles (issue 32). OP_HIDE_END_SESSION=1: discovery names no end_session_endpoint
// (Google; an Auth0 tenant without RP-initiated logout; Cognito before 2024). OP_LEGACY_LOGOUT=1:
// serve the providers' own logout endpoints, GET /v2/logout?client_id&returnTo (Auth0) and
// GET /logout?client_id&logout_uri (Cognito), which record their query (stats.legacy_logouts),
// refuse another client or an unregistered return URI (400), and redirect there without a
// state. OP_LOGIN_HINT_CLAIM=1: ID tokens carry Entra ID's optional login_hint claim
// ("hint-for-<account>").
const HIDE_END_SESSION = boolEnv('OP_HIDE_END_SESSION', false);
const LEGACY_LOGOUT = boolEnv('OP_LEGACY_LOGOUT', false);
const LOGIN_HINT_CLAIM = boolEnv('OP_LOGIN_HINT_CLAIM', false);
const ACCESS_TOKEN_TTL = intEnv('OP_ACCESS_TOKEN_TTL', STACK.access_token_ttl_secs);
const ID_TOKEN_TTL = intEnv('OP_ID_TOKEN_TTL', STACK.id_token_ttl_secs);
const REFRESH_TOKEN_TTL = intEnv('OP_REFRESH_TOKEN_TTL', STACK.refresh_token_ttl_secs);
// Lifetimes of the tokens issued for a resource server (RFC 8707: a resource at login or at a
// refresh), by client credentials and by token exchange (RFC 8693); each defaults to the
// access-token lifetime.
const RESOURCE_TOKEN_TTL = intEnv('OP_RESOURCE_TOKEN_TTL', ACCESS_TOKEN_TTL);
const CLIENT_CREDENTIALS_TTL = intEnv('OP_CLIENT_CREDENTIALS_TTL', ACCESS_TOKEN_TTL);
const EXCHANGED_TOKEN_TTL = intEnv('OP_EXCHANGED_TOKEN_TTL', ACCESS_TOKEN_TTL);
// When true (default) every refresh grant consumes its refresh token and answers a new one
// (a reuse of the old one then revokes the whole grant); when false the same refresh token
// is answered again and stays valid.
const ROTATE_REFRESH_TOKEN = boolEnv('OP_ROTATE_REFRESH_TOKEN', true);
// RFC 8693's names (the token exchange is below).
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
// When true (default) the vestibule client gets a refresh token from every
// authorization_code grant (offline_access requested or not, prompt=consent or not);
// when false only if offline_access ended up granted (oidc-provider's stock behaviour,
// which needs prompt=consent in the authorization request).
const ALWAYS_ISSUE_REFRESH_TOKEN = boolEnv('OP_ALWAYS_ISSUE_REFRESH_TOKEN', STACK.always_issue_refresh_token);
// Reject client_secret_post for a client registered with client_secret_basic and vice versa.
const STRICT_CLIENT_AUTH = boolEnv('OP_STRICT_CLIENT_AUTH', STACK.strict_client_auth);
const COOKIE_KEYS = listEnv('OP_COOKIE_KEYS', STACK.cookie_keys);
// Where the provider posts back-channel logout tokens for the vestibule client (empty: none).
const BACKCHANNEL_LOGOUT_URI = env.OP_BACKCHANNEL_LOGOUT_URI ?? `${new URL(REDIRECT_URIS[0]).origin}/api/auth/backchannel-logout`;
// A second relying party on the same provider sessions ("another client"): its code flow is
// driven by tests, which never serve its redirect URI.
const PORTAL_CLIENT_ID = 'portal';
const PORTAL_CLIENT_SECRET = 'portal-secret-long-enough-for-hs256-keys';
const PORTAL_REDIRECT_URI = `${new URL(REDIRECT_URIS[0]).origin}/portal/callback`;

// ---------------------------------------------------------------------------
// private_key_jwt (issue 33): OP_TOKEN_AUTH_METHOD=private_key_jwt registers the vestibule
// client with no secret and a jwks_uri (OP_CLIENT_JWKS_URI; default: the first redirect URI's
// origin + /.well-known/client-jwks.json, Vestibule's client key set). oidc-provider fetches
// it when a client assertion arrives and refetches it, once the copy is stale (at least 60 s,
// longer when Cache-Control says so), on an unknown kid. Its SSRF guard is lifted by the
// `fetch` hook below (loopback only here).
// ---------------------------------------------------------------------------
const PRIVATE_KEY_JWT = 'private_key_jwt';
// The methods discovery lists: private_key_jwt only when the vestibule client uses it, so
// every other scenario sees the provider as before.
function clientAuthMethods() {
  const methods = ['client_secret_basic', 'client_secret_post'];
  return TOKEN_AUTH_METHOD === PRIVATE_KEY_JWT ? [...methods, PRIVATE_KEY_JWT] : methods;
}
// A token request's client assertion as recorded in stats.token_requests: its type, header
// and claims, never its signature (so a recorded one cannot be replayed).
function assertionParts(form) {
  const [header, claims] = form.get('client_assertion').split('.').slice(0, 2).map((part) => {
    try { return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')); } catch { return null; }
  });
  return { type: form.get('client_assertion_type'), header, claims };
}
function vestibuleClientAuth() {
  if (TOKEN_AUTH_METHOD !== PRIVATE_KEY_JWT) return { client_secret: CLIENT_SECRET };
  if (ID_TOKEN_ALG === 'HS256') throw new Error('OP_ID_TOKEN_ALG=HS256 needs a client secret; private_key_jwt has none');
  return {
    jwks_uri: env.OP_CLIENT_JWKS_URI || `${new URL(REDIRECT_URIS[0]).origin}/.well-known/client-jwks.json`,
  };
}

const AUTH_METHODS = new Set(['client_secret_basic', 'client_secret_post']);
for (const [name, value] of [['OP_TOKEN_AUTH_METHOD', TOKEN_AUTH_METHOD], ['OP_UPSTREAM_TOKEN_AUTH_METHOD', UPSTREAM_TOKEN_AUTH_METHOD]]) {
  if (!AUTH_METHODS.has(value) && !(name === 'OP_TOKEN_AUTH_METHOD' && value === PRIVATE_KEY_JWT)) {
    throw new Error(`${name} must be one of ${[...AUTH_METHODS].join(', ')}, got ${value}`);
  }
}
if (!['RS256', 'PS256', 'ES256', 'HS256'].includes(ID_TOKEN_ALG)) {
  throw new Error(`OP_ID_TOKEN_ALG must be RS256, PS256, ES256 or HS256, got ${ID_TOKEN_ALG}`);
}
// HS256 ID tokens are keyed with the client secret; the JWKS still needs an asymmetric key.
const JWKS_ALG = ID_TOKEN_ALG === 'HS256' ? 'RS256' : ID_TOKEN_ALG;
// More algorithms the provider supports (id_token_signing_alg_values_supported), beyond the one
// it signs the vestibule client's tokens with, as Keycloak and Auth0 list several; each
// asymmetric one gets a key of its own in the JWKS.
const EXTRA_ID_TOKEN_ALGS = listEnv('OP_EXTRA_ID_TOKEN_ALGS', []);
for (const alg of EXTRA_ID_TOKEN_ALGS) {
  if (!['RS256', 'PS256', 'ES256', 'HS256'].includes(alg)) {
    throw new Error(`OP_EXTRA_ID_TOKEN_ALGS may list RS256, PS256, ES256 and HS256, got ${alg}`);
  }
}
const ID_TOKEN_ALGS = [...new Set([ID_TOKEN_ALG, ...EXTRA_ID_TOKEN_ALGS])];
const KEY_ALGS = [...new Set([JWKS_ALG, ...EXTRA_ID_TOKEN_ALGS.filter((alg) => alg !== 'HS256')])];

// ---------------------------------------------------------------------------
// signing keys
// ---------------------------------------------------------------------------

function keyMatchesAlg(jwk, alg) {
  if (jwk.alg && jwk.alg !== alg) return false;
  if (alg === 'ES256') return jwk.kty === 'EC' && jwk.crv === 'P-256';
  return jwk.kty === 'RSA';
}

// The key is generated as DER and re-imported before its JWK export. Exporting the generated
// KeyObject itself can deadlock Node 20's main thread on its own mutex: ExportJWK holds the
// key's lock while allocating, a GC then finalizes the finished key-generation job, whose
// destructor takes the same lock (seen with gdb in a stalled start, about 1 start in 200; a
// loop of generate + export hangs within seconds for P-256 and after ~1000 RSA keys, while the
// same loop through a re-imported key, which has a lock of its own, runs 20000 and 3000).
function generateSigningKey(alg) {
  const der = { publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } };
  const generated = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256', ...der })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048, ...der });
  const privateKey = crypto.createPrivateKey({ key: generated.privateKey, format: 'der', type: 'pkcs8' });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return {
    ...jwk, kid, use: 'sig', alg,
  };
}

let SIGNING_JWKS;

function loadOrCreateJwks() {
  let jwks = { keys: [] };
  let dirty = false;
  if (KEYS_FILE && fs.existsSync(KEYS_FILE)) {
    jwks = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
    if (!Array.isArray(jwks.keys)) throw new Error(`${KEYS_FILE} is not a JWKS ({"keys":[...]})`);
    process.stderr.write(`test-op: loaded ${jwks.keys.length} key(s) from ${KEYS_FILE}\n`);
  }
  for (const alg of KEY_ALGS) {
    if (!jwks.keys.some((jwk) => keyMatchesAlg(jwk, alg))) {
      jwks.keys.push(generateSigningKey(alg));
      dirty = true;
    }
  }
  if (KEYS_FILE && dirty) {
    fs.writeFileSync(KEYS_FILE, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
    process.stderr.write(`test-op: wrote signing keys to ${KEYS_FILE}\n`);
  }
  // Put the key for the selected algorithm first so it is the one used for signing.
  const preferred = jwks.keys.filter((jwk) => keyMatchesAlg(jwk, JWKS_ALG));
  const others = jwks.keys.filter((jwk) => !keyMatchesAlg(jwk, JWKS_ALG));
  SIGNING_JWKS = { keys: [...preferred, ...others] };
  return SIGNING_JWKS;
}

// ---------------------------------------------------------------------------
// in-memory adapter (inspectable / wipeable by the /__test/ endpoints)
// ---------------------------------------------------------------------------

const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'ClientCredentials',
]);

class MemoryStore {
  constructor() {
    /** @type {Map<string, Map<string, {payload: object, expiresAt: number}>>} */
    this.models = new Map();
  }

  model(name) {
    let m = this.models.get(name);
    if (!m) {
      m = new Map();
      this.models.set(name, m);
    }
    return m;
  }

  counts() {
    const out = {};
    const now = Date.now();
    for (const [name, entries] of this.models) {
      let live = 0;
      for (const { expiresAt } of entries.values()) if (expiresAt > now) live += 1;
      out[name] = { stored: entries.size, unexpired: live };
    }
    return out;
  }

  clear(names) {
    const out = {};
    for (const name of names) {
      const m = this.models.get(name);
      out[name] = m ? m.size : 0;
      m?.clear();
    }
    return out;
  }

  // Drop entries that expired more than a minute ago (oidc-provider itself checks
  // exp, so keeping recently expired entries around only yields nicer errors).
  sweep() {
    const cutoff = Date.now() - 60_000;
    for (const entries of this.models.values()) {
      for (const [id, { expiresAt }] of entries) if (expiresAt < cutoff) entries.delete(id);
    }
  }
}

const store = new MemoryStore();

// Every secret value this provider handed out (opaque token values are their ids), kept after
// the token expires or is revoked: GET /__test/secrets lets a test look for them in logs.
const SECRET_MODELS = new Set(['AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials']);
const issuedSecrets = [];
setInterval(() => store.sweep(), 30_000).unref();

class MemoryAdapter {
  constructor(name) {
    this.name = name;
  }

  get entries() {
    return store.model(this.name);
  }

  async upsert(id, payload, expiresIn) {
    if (SECRET_MODELS.has(this.name) && !this.entries.has(id)) issuedSecrets.push(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.entries.set(id, { payload: structuredClone(payload), expiresAt });
  }

  async find(id) {
    const entry = this.entries.get(id);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUserCode(userCode) {
    for (const { payload } of this.entries.values()) {
      if (payload.userCode === userCode) return structuredClone(payload);
    }
    return undefined;
  }

  async findByUid(uid) {
    for (const { payload } of this.entries.values()) {
      if (payload.uid === uid) return structuredClone(payload);
    }
    return undefined;
  }

  async consume(id) {
    const entry = this.entries.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.entries.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const name of GRANTABLE) {
      const entries = store.models.get(name);
      if (!entries) continue;
      for (const [id, { payload }] of entries) {
        if (payload.grantId === grantId) entries.delete(id);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// accounts
// ---------------------------------------------------------------------------

async function findAccount(ctx, id) {
  if (typeof id !== 'string' || id === '') return undefined;
  return {
    accountId: id,
    async claims(use) {
      return withUserinfoSwitches(use, {
        sub: id,
        email: `${id}@example.test`,
        email_verified: true,
        name: `Test ${id}`,
        given_name: 'Test',
        family_name: id,
        preferred_username: id,
        // Route claim rules (issue 30): alice administers, everyone else only uses.
        roles: id === 'alice' ? ['admin', 'user'] : ['user'],
        ...(LOGIN_HINT_CLAIM ? { login_hint: `hint-for-${id}` } : {}),
      });
    },
  };
}

// ---------------------------------------------------------------------------
// acr: how strongly the user authenticated (step-up, issue 30)
// ---------------------------------------------------------------------------
// Two levels: "1" (a password: every login) and "mfa" (a second factor). A login gets "mfa" only
// when its authorization request asks for it in acr_values and the user "has a second factor",
// which POST /__test/acr {"mfa": false} takes away ({"mfa": true} gives it back; the default):
// the provider then authenticates with the password alone and says acr "1", as real providers do
// (acr_values is a voluntary request). A request for "mfa" from a session at "1" shows the login
// page again (the step-up), whatever prompt says. amr follows: ["pwd"] or ["pwd", "otp"].
// GET /__test/acr answers the switch.

const ACR_VALUES = ['1', 'mfa'];
let acrSwitches = { mfa: true };

function asksForMfa(params) {
  return String(params?.acr_values ?? '').split(' ').includes('mfa');
}

// The login prompt, plus: re-authenticate when "mfa" is asked for, possible and not yet had.
function stepUpPolicy() {
  const policy = interactionPolicy.base();
  policy.get('login').checks.push(new interactionPolicy.Check(
    'acr_step_up',
    'a stronger authentication (mfa) was requested',
    (ctx) => {
      const { oidc } = ctx;
      if (!asksForMfa(oidc.params) || !acrSwitches.mfa || oidc.result?.login) {
        return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      }
      return oidc.session.acr === 'mfa'
        ? interactionPolicy.Check.NO_NEED_TO_PROMPT
        : interactionPolicy.Check.REQUEST_PROMPT;
    },
  ));
  return policy;
}

// devInteractions finish a login with only the account: give it the acr and amr it earned.
function withAcrOnLogin(provider) {
  const finished = provider.interactionFinished.bind(provider);
  // eslint-disable-next-line no-param-reassign
  provider.interactionFinished = async (req, res, result, options) => {
    if (result?.login) {
      const { params } = await provider.interactionDetails(req, res);
      const mfa = asksForMfa(params) && acrSwitches.mfa;
      Object.assign(result.login, { acr: mfa ? 'mfa' : '1', amr: mfa ? ['pwd', 'otp'] : ['pwd'] });
    }
    return finished(req, res, result, options);
  };
}

function acrTestEndpoint(req, res) {
  if (req.method === 'GET') {
    req.resume();
    sendJson(res, 200, acrSwitches);
    return;
  }
  readBody(req).then((raw) => {
    acrSwitches = { mfa: true, ...JSON.parse(raw || '{}') };
    sendJson(res, 200, acrSwitches);
  }).catch((err) => sendJson(res, 400, { error: String(err.message ?? err) }));
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

function zeroStats() {
  return {
    authorization_code: 0, // successful authorization_code grants at the token endpoint
    authorization_code_errors: 0, // failed authorization_code grants
    refresh_token: 0, // successful refresh_token grants
    refresh_token_errors: 0, // failed refresh_token grants (invalid_grant, invalid_client, ...)
    refresh_token_at: [], // when each of the last 1000 successful refresh_token grants happened (ms)
    introspections: 0, // requests to the introspection endpoint (any outcome)
    introspections_active: 0, // of those, answered with active:true
    introspection_errors: 0, // of those, answered with an error (e.g. invalid_client)
    revocations: 0, // requests to the revocation endpoint (any outcome)
    revocation_errors: 0, // of those, answered with an error
    end_sessions: 0, // requests to the end_session_endpoint (GET or POST, any outcome)
    end_session_success: 0, // completed logouts (logout confirmation form submitted)
    userinfo: 0, // requests to the userinfo endpoint (any outcome)
    backchannel_logouts: 0, // logout tokens delivered (answered 200 or 204)
    backchannel_logout_errors: 0, // logout tokens refused or undeliverable
    backchannel_last_error: '', // why the last one was (for a failing test's message)
    token_traceparents: [], // the W3C traceparent of each token request (null when absent)
    refresh_token_with_resource: 0, // of the successful refresh_token grants, those naming a resource
    refresh_token_by_resource: {}, // successful refresh_token grants per resource named ("" for none)
    client_credentials: 0, // successful client_credentials grants
    client_credentials_errors: 0, // failed client_credentials grants
    client_credentials_by_target: {}, // successful client_credentials grants per resource ("" for none)
    token_exchange: 0, // successful token exchanges (RFC 8693)
    token_exchange_errors: 0, // failed token exchanges (the /__test/grant-error switch's included)
    token_exchange_at: [], // when each of the last 1000 successful token exchanges happened (ms)
    token_exchange_by_target: {}, // successful token exchanges per target ("audience resource", or the client id)
    token_requests: [], // the last 1000 token requests' parameters, secrets left out (see README)
    authorization_requests: [], // the last 1000 authorization requests' resource, audience, scope, prompt, params
    legacy_logouts: [], // the last 1000 requests to the legacy logout endpoints: {path, query}
    par_requests: [], // the last 1000 pushed authorization requests: {client_id, names, params} (OP_PAR)
    par_errors: 0, // pushes answered by the /__test/par-error switch
  };
}

let stats = zeroStats();

// Per grant type, milliseconds to hold every grant before oidc-provider sees it (a slow
// provider: POST /__test/grant-delay?grant_type=…&ms=N; /__test/refresh-delay?ms=N for
// refresh_token).
const grantDelays = new Map();

// Per grant type, the answers that replace oidc-provider's for the next grants, first first
// (POST /__test/grant-error with {"grant_type", "error", "error_description", "status",
// "count"}; /__test/refresh-error for the next refresh_token grant): the words other providers
// use, such as Keycloak's "Maximum allowed refresh token reuse exceeded", or a provider that
// refuses token exchanges for a while.
const grantErrors = new Map();

const GRANT_ERROR_COUNTERS = {
  authorization_code: 'authorization_code_errors',
  refresh_token: 'refresh_token_errors',
  client_credentials: 'client_credentials_errors',
  [TOKEN_EXCHANGE]: 'token_exchange_errors',
};

// Sets the answers for the next `count` grants of a type from a switch's JSON body.
function setGrantErrors(body) {
  const grantType = body.grant_type;
  if (typeof grantType !== 'string' || !grantType) throw new Error('grant_type is required');
  const status = body.status ?? 400;
  const count = body.count ?? 1;
  if (!Number.isInteger(status) || status < 400 || status > 599) throw new Error('status must be 400-599');
  if (!Number.isInteger(count) || count < 0) throw new Error('count must be a non-negative integer');
  const answer = { error: body.error ?? 'invalid_grant', ...(body.error_description ? { error_description: body.error_description } : {}) };
  grantErrors.set(grantType, Array.from({ length: count }, () => ({ status, answer })));
  return { grant_type: grantType, status, count, ...answer };
}

// ---------------------------------------------------------------------------
// resource servers (RFC 8707) and targets of client-credentials and exchanged tokens
// ---------------------------------------------------------------------------
// Every `https://<name>.example/…` URL is a resource server (e.g. https://orders.example/,
// https://billing.example/), except https://refused.example/…, which the provider refuses
// (invalid_target). Its scopes are `<name>:read <name>:write`; its access tokens are JWTs
// (typ at+jwt, signed with the provider's key) whose `aud` is the resource URL exactly.
// A request that names no resource gets what it gets today (opaque tokens).

const RESOURCE_URL = /^https:\/\/([a-z0-9-]+)\.example\/[^#]*$/;
const REFUSED_TARGETS = new Set(['refused', 'refused-api']);

// The name of a resource URL or an exchange audience: `https://orders.example/` and
// `orders-api` are both `orders`; undefined for a URL that is no test resource server.
function targetName(target) {
  const url = RESOURCE_URL.exec(target);
  if (url) return url[1];
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return undefined;
  return target.replace(/-api$/, '');
}

function resourceScopes(name) {
  return [`${name}:read`, `${name}:write`];
}

function isTestResource(value) {
  return typeof value === 'string' && RESOURCE_URL.test(value);
}

async function getResourceServerInfo(ctx, indicator) {
  const name = RESOURCE_URL.exec(indicator)?.[1];
  if (!name) throw new oidcErrors.InvalidTarget(`test-op: ${indicator} is no resource server here (https://<name>.example/ is)`);
  if (REFUSED_TARGETS.has(name)) throw new oidcErrors.InvalidTarget(`test-op: refuses tokens for ${indicator}`);
  return {
    scope: resourceScopes(name).join(' '),
    audience: indicator,
    accessTokenFormat: 'jwt',
    accessTokenTTL: RESOURCE_TOKEN_TTL,
    jwt: { sign: { alg: JWKS_ALG } },
  };
}

// Auth0's `audience` names the API a token is for; here an `audience` that is a test resource
// URL stands for `resource` when a request names none (authorization, code, refresh and
// client-credentials requests; the token exchange reads `audience` itself). Any other
// `audience` is ignored, as oidc-provider ignores every parameter it does not know.
function audienceAsResource(params) {
  if (params.has('resource')) return false;
  const audiences = params.getAll('audience').filter(isTestResource);
  for (const audience of audiences) params.append('resource', audience);
  return audiences.length > 0;
}

// ---------------------------------------------------------------------------
// token exchange (RFC 8693), which oidc-provider does not implement
// ---------------------------------------------------------------------------
// grant_type=urn:ietf:params:oauth:grant-type:token-exchange for the vestibule client:
//   subject_token       an access token this provider issued and that is still valid: an opaque
//                       one (looked up in the store) or a JWT one (a resource or exchanged
//                       token: signature by this provider's key, iss and exp checked);
//   subject_token_type  urn:ietf:params:oauth:token-type:access_token;
//   audience, resource  at most one each: the token's `aud` is both (an array) or the one
//                       given, or the client's id when neither is; https://refused.example/
//                       and the audience `refused-api` are refused (invalid_target);
//   scope               the issued token's scope is the asked ones the target allows
//                       (`<name>:read <name>:write`, name from the resource or the audience
//                       without `-api`); none allowed: invalid_scope; none asked: no scope;
//   requested_token_type  absent, …:access_token or …:jwt.
// The answer: {access_token (a JWT: iss, sub, aud, iat, exp, jti, client_id, scope), issued_token_type,
// token_type: "Bearer", expires_in (OP_EXCHANGED_TOKEN_TTL), scope (when one was granted)}.

const TOKEN_EXCHANGE_PARAMETERS = ['subject_token', 'subject_token_type', 'audience', 'resource', 'scope', 'requested_token_type', 'actor_token', 'actor_token_type'];

function asList(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

// A JWT access token this provider signed (resource, client-credentials or exchanged token):
// its claims, or undefined when the signature, issuer or expiry says otherwise.
function verifiedOwnJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  let header;
  let payload;
  try {
    [header, payload] = parts.slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
  } catch {
    return undefined;
  }
  const jwk = SIGNING_JWKS.keys.find((key) => key.kid === header.kid && keyMatchesAlg(key, header.alg));
  if (!jwk) return undefined;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  const hash = `sha${header.alg.slice(2)}`;
  let valid;
  if (header.alg.startsWith('RS')) valid = crypto.verify(hash, data, key, signature);
  else if (header.alg.startsWith('PS')) valid = crypto.verify(hash, data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature);
  else valid = crypto.verify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  if (!valid || payload.iss !== providerInstance.issuer) return undefined;
  if (typeof payload.exp !== 'number' || payload.exp <= Math.floor(Date.now() / 1000)) return undefined;
  return payload;
}

// The subject (account id) and scopes of a subject token, or invalid_grant.
async function subjectOf(provider, token) {
  if (token.split('.').length === 3) {
    const claims = verifiedOwnJwt(token);
    if (!claims) throw new oidcErrors.InvalidGrant('subject token invalid, expired or not issued here');
    if (!claims.sub || claims.sub === claims.client_id) throw new oidcErrors.InvalidGrant('subject token names no user');
    return { sub: claims.sub, scopes: String(claims.scope ?? '').split(' ').filter(Boolean) };
  }
  const accessToken = await provider.AccessToken.find(token);
  if (!accessToken || accessToken.isExpired) throw new oidcErrors.InvalidGrant('subject token invalid, expired or revoked');
  return { sub: accessToken.accountId, scopes: [...accessToken.scopes] };
}

function tokenExchangeHandler(provider) {
  return async function tokenExchange(ctx) {
    const { params, client } = ctx.oidc;
    for (const name of ['subject_token', 'subject_token_type']) {
      if (!params[name]) throw new oidcErrors.InvalidRequest(`missing required parameter '${name}'`);
    }
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new oidcErrors.InvalidRequest(`test-op: subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    if (params.actor_token) throw new oidcErrors.InvalidRequest('test-op: actor_token (delegation) is not supported');
    const requestedType = params.requested_token_type ?? ACCESS_TOKEN_TYPE;
    if (![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(requestedType)) {
      throw new oidcErrors.InvalidRequest(`test-op: requested_token_type must be ${ACCESS_TOKEN_TYPE} or ${JWT_TOKEN_TYPE}`);
    }
    const audiences = asList(params.audience);
    const resources = asList(params.resource);
    if (audiences.length > 1 || resources.length > 1) {
      throw new oidcErrors.InvalidTarget('test-op: exchanges for one audience and one resource at a time');
    }
    for (const resource of resources) {
      // Absolute, no fragment, a test resource server not refused (as at the other grants).
      await getResourceServerInfo(ctx, resource);
    }
    const targets = [...audiences, ...resources];
    const names = targets.map(targetName);
    if (names.some((name) => REFUSED_TARGETS.has(name))) {
      throw new oidcErrors.InvalidTarget(`test-op: refuses tokens for ${targets.join(' ')}`);
    }
    const subject = await subjectOf(provider, params.subject_token);
    const allowed = new Set(names.length ? names.filter(Boolean).flatMap(resourceScopes) : subject.scopes);
    const asked = String(params.scope ?? '').split(' ').filter(Boolean);
    const granted = asked.filter((scope) => allowed.has(scope));
    if (asked.length && !granted.length) {
      throw new oidcErrors.InvalidScope(`test-op: ${targets.join(' ') || 'this token'} allows none of the requested scopes`, asked.join(' '));
    }
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: provider.issuer,
      sub: subject.sub,
      aud: targets.length === 0 ? client.clientId : (targets.length === 1 ? targets[0] : targets),
      iat: now,
      exp: now + EXCHANGED_TOKEN_TTL,
      jti: crypto.randomBytes(16).toString('base64url'),
      client_id: client.clientId,
      ...(granted.length ? { scope: granted.join(' ') } : {}),
    };
    const { kid } = SIGNING_JWKS.keys.find((key) => keyMatchesAlg(key, JWKS_ALG));
    const accessToken = signToken({ alg: JWKS_ALG, typ: 'at+jwt', kid }, claims, 'provider');
    ctx.body = {
      access_token: accessToken,
      issued_token_type: requestedType,
      token_type: 'Bearer',
      expires_in: EXCHANGED_TOKEN_TTL,
      ...(granted.length ? { scope: granted.join(' ') } : {}),
    };
  };
}

// ---------------------------------------------------------------------------
// DPoP (RFC 9449, issue 33): OP_DPOP and GET /__test/dpop
// ---------------------------------------------------------------------------
// OP_DPOP=1 (default): oidc-provider's stock DPoP (enabled, discovery lists
// dpop_signing_alg_values_supported, a token request with a proof gets a DPoP-bound token,
// nonces not required). 0: DPoP disabled (no dpop_signing_alg_values_supported; proofs are
// ignored and every token is Bearer). nonce: as 1, and every proof must carry a server nonce
// (use_dpop_nonce challenges at the token endpoint, 400, and at userinfo, 401 with
// WWW-Authenticate). required: as nonce, and the vestibule client is registered with
// dpop_bound_access_tokens (a token request without a proof is refused).
// GET /__test/dpop answers { mode, nonce_challenges, bound_token_responses }: the use_dpop_nonce
// challenges answered (any endpoint) and the token-endpoint answers with token_type DPoP.
const DPOP_MODE = env.OP_DPOP || '1';
if (!['0', '1', 'nonce', 'required'].includes(DPOP_MODE)) {
  throw new Error(`OP_DPOP must be 0, 1, nonce or required, got ${DPOP_MODE}`);
}
const dpopStats = { nonce_challenges: 0, bound_token_responses: 0 };

function dpopFeature() {
  if (DPOP_MODE === '0') return { enabled: false };
  if (DPOP_MODE === '1') return { enabled: true };
  return { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true };
}

function dpopClientMetadata() {
  return DPOP_MODE === 'required' ? { dpop_bound_access_tokens: true } : {};
}

function withDpopCounters(provider) {
  provider.use(async (ctx, next) => {
    await next();
    const challenge = ctx.body?.error === 'use_dpop_nonce'
      || String(ctx.response.get('WWW-Authenticate') ?? '').includes('use_dpop_nonce');
    if (challenge) dpopStats.nonce_challenges += 1;
    if (ctx.oidc?.route === 'token' && ctx.status === 200 && ctx.body?.token_type === 'DPoP') {
      dpopStats.bound_token_responses += 1;
    }
  });
}

function dpopTestEndpoint(req, res) {
  req.resume();
  sendJson(res, 200, { mode: DPOP_MODE, ...dpopStats });
}

// ---------------------------------------------------------------------------
// provider
// ---------------------------------------------------------------------------

function logoutSource(ctx, form) {
  // Same as the default page, but the confirmation button and a hidden logout=yes
  // input live *inside* the <form> so a generic form parser submits a full logout.
  const inner = '<input type="hidden" name="logout" value="yes"/>'
    + '<button autofocus type="submit">Yes, sign me out</button>';
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Logout Request</title></head>
<body>
  <h1>Do you want to sign-out from ${String(ctx.host).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}?</h1>
  ${form.replace('</form>', `${inner}</form>`)}
</body>
</html>`;
}

function buildProvider(issuer) {
  const clients = [
    {
      client_id: CLIENT_ID,
      ...vestibuleClientAuth(),
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
      // client_credentials and the token exchange for the credential kinds of issue 31.
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials', TOKEN_EXCHANGE],
      response_types: ['code'],
      token_endpoint_auth_method: TOKEN_AUTH_METHOD,
      id_token_signed_response_alg: ID_TOKEN_ALG,
      // Every ID token says when the user authenticated (as Keycloak's do), so a route's
      // max_age_secs has an auth_time to judge; a max_age request would add it anyway.
      require_auth_time: true,
      ...(USERINFO_SIGNED ? { userinfo_signed_response_alg: 'RS256' } : {}),
      ...dpopClientMetadata(),
      ...(BACKCHANNEL_LOGOUT_URI ? {
        backchannel_logout_uri: BACKCHANNEL_LOGOUT_URI,
        backchannel_logout_session_required: true,
      } : {}),
    },
    {
      client_id: PORTAL_CLIENT_ID,
      client_secret: PORTAL_CLIENT_SECRET,
      redirect_uris: [PORTAL_REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: JWKS_ALG,
    },
    {
      client_id: UPSTREAM_CLIENT_ID,
      client_secret: UPSTREAM_CLIENT_SECRET,
      redirect_uris: [],
      grant_types: [],
      response_types: [],
      token_endpoint_auth_method: UPSTREAM_TOKEN_AUTH_METHOD,
      id_token_signed_response_alg: JWKS_ALG,
    },
  ];

  const configuration = {
    adapter: MemoryAdapter,
    clients,
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: JWKS_ALG,
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    clientAuthMethods: clientAuthMethods(),
    enabledJWA: {
      idTokenSigningAlgValues: ID_TOKEN_ALG === 'HS256' ? [...new Set([...ID_TOKEN_ALGS, 'RS256'])] : ID_TOKEN_ALGS,
    },
    // Put scope-requested claims (email, profile) into the ID token, as Keycloak does;
    // oidc-provider's default returns them from userinfo only.
    conformIdTokenClaims: false,
    jwks: loadOrCreateJwks(),
    cookies: { keys: COOKIE_KEYS },
    findAccount,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    // The authentication levels (step-up, issue 30): see "acr" below.
    acrValues: ACR_VALUES,
    interactions: { policy: stepUpPolicy() },
    claims: {
      // acr and amr in every ID token, as Keycloak sends acr: a route can then judge any session.
      openid: ['sub', 'acr', 'amr', ...(LOGIN_HINT_CLAIM ? ['login_hint'] : [])],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username', 'roles', ...USERINFO_TEST_CLAIMS, ...CLAIM_SOURCE_TEST_CLAIMS],
    },
    responseTypes: ['code'],
    pkce: {
      // v9 only supports S256; by default it is only *required* for public clients,
      // so require it for every client here.
      required: () => true,
    },
    features: {
      devInteractions: { enabled: true },
      dPoP: dpopFeature(),
      introspection: {
        enabled: true,
        async allowedPolicy(ctx, client, token) {
          // The upstream API may introspect anything; other clients only their own tokens.
          if (client.clientId === UPSTREAM_CLIENT_ID) return true;
          return token.clientId === client.clientId;
        },
      },
      revocation: {
        enabled: true,
        async allowedPolicy(ctx, client, token) {
          return token.clientId === client.clientId;
        },
      },
      rpInitiatedLogout: { enabled: true, logoutSource },
      backchannelLogout: { enabled: true },
      userinfo: { enabled: USERINFO_ENABLED },
      jwtUserinfo: { enabled: USERINFO_SIGNED },
      clientCredentials: { enabled: true },
      // RFC 8707, see "resource servers" above. No default resource: a request without one is
      // answered as before. A token request naming several (a login that asked for several)
      // gets a token for the first; a code or refresh grant naming none gets one for the first
      // resource its authorization request named (useGrantedResource), so a login with
      // resources keeps one audience across its refreshes, and one without stays opaque.
      pushedAuthorizationRequests: parFeature(),
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, client, oneOf) {
          return oneOf ? oneOf[0] : undefined;
        },
        async useGrantedResource() {
          return true;
        },
        getResourceServerInfo,
      },
    },
    // oidc-provider silently drops offline_access from the requested scope unless the
    // authorization request carries prompt=consent. So by default (OP_ALWAYS_ISSUE_REFRESH_TOKEN=1)
    // refresh-capable clients get a refresh token from every code grant anyway, and their
    // tokens behave like offline_access ones (not bound to the OP browser session).
    async issueRefreshToken(ctx, client, source) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      if (ALWAYS_ISSUE_REFRESH_TOKEN) return true;
      return source.scopes.has('offline_access');
    },
    async expiresWithSession(ctx, source) {
      if (ALWAYS_ISSUE_REFRESH_TOKEN && ctx.oidc.client?.grantTypeAllowed('refresh_token')) return false;
      return !source.scopes.has('offline_access');
    },
    // Called after the refresh token was validated and before it is consumed: a refused
    // resource is refused here, so it does not burn the refresh token (stock oidc-provider
    // consumes it first and then answers invalid_target; the next use then counts as a reuse
    // and revokes the grant).
    async rotateRefreshToken(ctx) {
      const refreshToken = ctx.oidc.entities.RefreshToken;
      for (const resource of asList(ctx.oidc.params.resource)) {
        await getResourceServerInfo(ctx, resource);
        if (!refreshToken.resourceIndicators.has(resource)) {
          throw new oidcErrors.InvalidTarget(`test-op: the authorization request did not name ${resource}`);
        }
      }
      return ROTATE_REFRESH_TOKEN;
    },
    ttl: {
      AccessToken(ctx, token) {
        return token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL;
      },
      ClientCredentials: CLIENT_CREDENTIALS_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Grant: Math.max(REFRESH_TOKEN_TTL, 24 * 60 * 60),
      Session: 24 * 60 * 60,
      Interaction: 60 * 60,
    },
    clockTolerance: 0,
    // oidc-provider refuses outgoing requests to special-use addresses (SSRF protection), and
    // every relying party of this test provider is on loopback: back-channel logout tokens
    // must reach them.
    fetch(url, options) {
      const { dispatcher, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>error</title></head><body><h1>oops! something went wrong</h1>${
        Object.entries(out).map(([k, v]) => `<pre><strong>${k}</strong>: ${String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</pre>`).join('')
      }</body></html>`;
    },
  };

  const provider = new Provider(issuer, configuration);
  withAcrOnLogin(provider);
  withDpopCounters(provider);
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchangeHandler(provider), TOKEN_EXCHANGE_PARAMETERS, ['audience', 'resource']);

  // ---- counters -------------------------------------------------------------
  const bump = (counts, key) => { counts[key] = (counts[key] ?? 0) + 1; };
  const stamp = (times) => {
    times.push(Date.now());
    if (times.length > 1000) times.shift();
  };
  provider.on('grant.success', (ctx) => {
    const { params, client } = ctx.oidc;
    const gt = params?.grant_type;
    const resource = asList(params?.resource).join(' ');
    if (gt === 'authorization_code') stats.authorization_code += 1;
    else if (gt === 'refresh_token') {
      stats.refresh_token += 1;
      stamp(stats.refresh_token_at);
      if (resource) stats.refresh_token_with_resource += 1;
      bump(stats.refresh_token_by_resource, resource);
    } else if (gt === 'client_credentials') {
      stats.client_credentials += 1;
      bump(stats.client_credentials_by_target, resource);
    } else if (gt === TOKEN_EXCHANGE) {
      stats.token_exchange += 1;
      stamp(stats.token_exchange_at);
      bump(stats.token_exchange_by_target, [...asList(params.audience), ...asList(params.resource)].join(' ') || client.clientId);
    }
  });
  provider.on('grant.error', (ctx, err) => {
    const gt = ctx.oidc?.params?.grant_type;
    const counter = GRANT_ERROR_COUNTERS[gt];
    if (counter) stats[counter] += 1;
    process.stderr.write(`test-op: grant.error grant_type=${gt} ${err.error}: ${err.error_description ?? ''} ${err.error_detail ?? ''}\n`);
  });
  provider.on('introspection.error', () => { stats.introspection_errors += 1; });
  provider.on('revocation.error', () => { stats.revocation_errors += 1; });
  provider.on('end_session.success', () => { stats.end_session_success += 1; });
  provider.on('backchannel.success', () => { stats.backchannel_logouts += 1; });
  provider.on('backchannel.error', (ctx, err) => {
    stats.backchannel_logout_errors += 1;
    stats.backchannel_last_error = String(err.message ?? err);
    process.stderr.write(`test-op: backchannel.error ${err.message ?? err}\n`);
  });
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`test-op: server_error ${ctx.method} ${ctx.path}: ${err.stack ?? err}\n`);
  });
  for (const event of ['authorization.error', 'end_session.error', 'end_session_confirm.error', 'userinfo.error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (ctx, err) => {
      process.stderr.write(`test-op: ${event} ${err.error}: ${err.error_description ?? ''} ${err.error_detail ?? ''}\n`);
    });
  }

  // Request-level counting: ctx.oidc.route is known once the router has run, and
  // this runs before the response is written, so the numbers are exact by the time
  // the client has read the response.
  provider.use(async (ctx, next) => {
    await next();
    switch (ctx.oidc?.route) {
      case 'introspection':
        stats.introspections += 1;
        if (ctx.status === 200 && ctx.body?.active === true) stats.introspections_active += 1;
        break;
      case 'revocation':
        stats.revocations += 1;
        break;
      case 'end_session':
        stats.end_sessions += 1;
        break;
      case 'userinfo':
        stats.userinfo += 1;
        break;
      default:
    }
  });

  return provider;
}

// ---------------------------------------------------------------------------
// UserInfo test switches (POST /__test/userinfo with a JSON body; {} restores the defaults)
// ---------------------------------------------------------------------------
// What the userinfo endpoint answers, set by a test:
//   "claims": {...}   claims the account has in UserInfo only (never in the ID token), under
//                     the profile scope (names from USERINFO_TEST_CLAIMS, or standard ones);
//   "sub": "…"        UserInfo names this subject instead of the account's (answered here,
//                     before oidc-provider, which always names the account's);
//   "refuse": true    401 invalid_token before oidc-provider sees the request (what Entra's
//                     Graph UserInfo answers a token issued for another API);
//   "status": N       answers N (a 503: UserInfo down while the rest of the provider works).
// OP_USERINFO_SIGNED=1 registers the vestibule client with userinfo_signed_response_alg RS256:
// UserInfo answers a signed JWT (application/jwt) instead of JSON. OP_NO_USERINFO=1 turns the
// endpoint off.

const USERINFO_SIGNED = boolEnv('OP_USERINFO_SIGNED', false);
// OP_NO_USERINFO=1: no userinfo endpoint at all (none in discovery).
const USERINFO_ENABLED = !boolEnv('OP_NO_USERINFO', false);
// Claim names only a test's switch gives an account (in UserInfo only).
const USERINFO_TEST_CLAIMS = ['nickname', 'groups'];
let userinfoSwitches = {};

function withUserinfoSwitches(use, claims) {
  if (use !== 'userinfo') return claims;
  return withClaimSources({ ...claims, ...(userinfoSwitches.claims ?? {}) });
}

// The W3C traceparent of each request to the userinfo endpoint (null when absent).
const userinfoTraceparents = [];

// POST sets the switches; GET answers them with the traceparents seen.
function userinfoTestEndpoint(req, res) {
  if (req.method === 'GET') {
    req.resume();
    sendJson(res, 200, { switches: userinfoSwitches, traceparents: userinfoTraceparents });
    return;
  }
  readBody(req).then((raw) => {
    userinfoSwitches = JSON.parse(raw || '{}');
    sendJson(res, 200, userinfoSwitches);
  }).catch((err) => sendJson(res, 400, { error: String(err.message ?? err) }));
}

// oidc-provider always answers the account's own sub, so an answer about another subject is
// made here, signed like oidc-provider's own when OP_USERINFO_SIGNED is set.
function answerForAnotherSub(res) {
  const claims = { sub: userinfoSwitches.sub, name: 'Someone Else' };
  let type = 'application/json; charset=utf-8';
  let text = JSON.stringify(claims);
  if (USERINFO_SIGNED) {
    const now = Math.floor(Date.now() / 1000);
    text = signToken({ alg: 'RS256', typ: 'JWT' }, {
      ...claims, iss: issuer, aud: CLIENT_ID, iat: now, exp: now + 60,
    }, 'provider');
    type = 'application/jwt; charset=utf-8';
  }
  res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function refusedByUserinfoSwitch(req, res) {
  const status = userinfoSwitches.refuse ? 401 : userinfoSwitches.status;
  if (new URL(req.url, 'http://localhost').pathname !== '/me') return false;
  userinfoTraceparents.push(req.headers.traceparent ?? null);
  if (!status && !userinfoSwitches.sub) return false;
  req.resume();
  stats.userinfo += 1;
  if (!status) {
    answerForAnotherSub(res);
    return true;
  }
  const error = status === 401 ? 'invalid_token' : 'server_error';
  const text = JSON.stringify({ error, error_description: 'test-op: answered by /__test/userinfo' });
  res.writeHead(status, {
    ...(status === 401 ? { 'www-authenticate': 'Bearer error="invalid_token"' } : {}),
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
  return true;
}

// ---------------------------------------------------------------------------
// Aggregated and distributed claims, and how the UserInfo token arrived (issue 29, "claims")
// ---------------------------------------------------------------------------
// POST /__test/claim-sources with a JSON body ({} restores the defaults) makes UserInfo answer
// `_claim_names` / `_claim_sources` (OIDC Core §5.6.2) besides its own claims:
//   "aggregated":  {"claims": {...}, "key": "provider" | "unknown", "iss": "…"}
//                  source "agg": a JWT of those claims (with `iss` = this issuer unless "iss"
//                  is given), signed with the provider's own key (or a key not in its JWKS);
//   "distributed": {"claims": {...}, "key": …, "access_token": "…", "endpoint": "…"}
//                  source "dist": an endpoint (default: GET /__test/claims-endpoint on this
//                  origin) that answers those claims as a signed JWT when called with
//                  `Authorization: Bearer <access_token>`, 401 otherwise; without
//                  "access_token" the source names none (the caller's own token is not checked).
// Claim names must be in CLAIM_SOURCE_TEST_CLAIMS (oidc-provider keeps `_claim_names` only for
// claims the granted scopes allow). GET /__test/claim-sources answers the switches, each
// claims-endpoint request ({bearer_ok}), and how each UserInfo request carried its token
// ({method, header, body, query}: whether an `Authorization: Bearer` header, a form body
// `access_token`, a query `access_token` was present). Never a token value.

const CLAIM_SOURCE_TEST_CLAIMS = ['team', 'credit_score'];
let claimSourceSwitches = {};
const claimsEndpointRequests = [];
const userinfoTransports = [];

function claimSourceJwt(source) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { ...(source.claims ?? {}), iat: now, exp: now + 300 };
  if (source.iss !== null) claims.iss = source.iss ?? issuer;
  return signToken({ alg: JWKS_ALG, typ: 'JWT' }, claims, source.key ?? 'provider');
}

function withClaimSources(claims) {
  const { aggregated, distributed } = claimSourceSwitches;
  if (!aggregated && !distributed) return claims;
  const names = {};
  const sources = {};
  if (aggregated) {
    for (const name of Object.keys(aggregated.claims ?? {})) names[name] = 'agg';
    sources.agg = { JWT: claimSourceJwt(aggregated) };
  }
  if (distributed) {
    for (const name of Object.keys(distributed.claims ?? {})) names[name] = 'dist';
    sources.dist = { endpoint: distributed.endpoint ?? `${issuer}/__test/claims-endpoint` };
    if (distributed.access_token) sources.dist.access_token = distributed.access_token;
  }
  return { ...claims, _claim_names: names, _claim_sources: sources };
}

function claimSourceTestEndpoint(req, res) {
  if (req.method === 'GET') {
    req.resume();
    sendJson(res, 200, { switches: claimSourceSwitches, claims_endpoint_requests: claimsEndpointRequests, userinfo_transports: userinfoTransports });
    return;
  }
  readBody(req).then((raw) => {
    claimSourceSwitches = JSON.parse(raw || '{}');
    sendJson(res, 200, claimSourceSwitches);
  }).catch((err) => sendJson(res, 400, { error: String(err.message ?? err) }));
}

function claimsEndpoint(req, res) {
  req.resume();
  const distributed = claimSourceSwitches.distributed ?? {};
  const expected = distributed.access_token;
  const bearerOk = !expected || req.headers.authorization === `Bearer ${expected}`;
  claimsEndpointRequests.push({ method: req.method, bearer_ok: bearerOk });
  if (!bearerOk) {
    res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-length': 0 });
    res.end();
    return;
  }
  const text = claimSourceJwt(distributed);
  res.writeHead(200, { 'content-type': 'application/jwt', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// Records how a UserInfo request carries its token; a form body is read here and handed on
// to oidc-provider (as strictClientAuth does).
async function recordUserinfoTransport(req) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/me') return;
  let body = false;
  if (req.method === 'POST' && /^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '')) {
    req.body = await readBody(req);
    body = new URLSearchParams(req.body).has('access_token');
  }
  userinfoTransports.push({
    method: req.method,
    header: /^bearer /i.test(req.headers.authorization ?? ''),
    body,
    query: url.searchParams.has('access_token'),
  });
}

// ---------------------------------------------------------------------------
// HTTP server: /__test/* control endpoints, everything else -> oidc-provider
// ---------------------------------------------------------------------------

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

// ---------------------------------------------------------------------------
// logout tokens made by hand, and provider-side session ends
// ---------------------------------------------------------------------------

const b64url = (data) => Buffer.from(data).toString('base64url');

// Signs `claims` under `header` with the provider's own signing key ("provider"), a key the
// provider never published ("unknown"), or the vestibule client's secret ("client-secret",
// for HS256): logout tokens that only differ from real ones where a test says so.
function signToken(header, claims, keyChoice) {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const alg = header.alg;
  let signature;
  if (keyChoice === 'client-secret') {
    signature = crypto.createHmac(`sha${alg.slice(2)}`, CLIENT_SECRET).update(signingInput).digest();
  } else {
    const jwk = keyChoice === 'unknown' ? generateSigningKey(alg) : SIGNING_JWKS.keys.find((key) => keyMatchesAlg(key, alg));
    if (!jwk) throw new Error(`no ${alg} key`);
    const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
    const hash = `sha${alg.slice(2)}`;
    if (alg.startsWith('RS')) signature = crypto.sign(hash, Buffer.from(signingInput), key);
    else if (alg.startsWith('PS')) signature = crypto.sign(hash, Buffer.from(signingInput), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    else signature = crypto.sign(hash, Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    if (!('kid' in header) && keyChoice !== 'unknown') header.kid = jwk.kid;
  }
  return `${signingInput}.${b64url(signature)}`;
}

// Ends every provider session of `sub` (what an administrator's "log out this user" does):
// each client the session authorized that has a back-channel logout URI gets a logout token.
async function endSessionsOf(sub) {
  const sessions = store.model('Session');
  let ended = 0;
  let notified = 0;
  for (const [id, { payload }] of [...sessions]) {
    if (payload.accountId !== sub) continue;
    for (const [clientId, authorization] of Object.entries(payload.authorizations ?? {})) {
      const client = await providerInstance.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        await client.backchannelLogout(sub, authorization.sid);
        stats.backchannel_logouts += 1;
        notified += 1;
      }
    }
    sessions.delete(id);
    ended += 1;
  }
  return { ended, notified };
}

// ---------------------------------------------------------------------------
// front-channel logout (OpenID Connect Front-Channel Logout 1.0), which oidc-provider v9 no
// longer implements: the URLs this provider's logout page would load in iframes
// ---------------------------------------------------------------------------

// The vestibule client's front-channel logout URI (frontchannel_logout_session_required=true,
// so every URL carries iss and sid); empty: none.
const FRONTCHANNEL_LOGOUT_URI = env.OP_FRONTCHANNEL_LOGOUT_URI ?? `${new URL(REDIRECT_URIS[0]).origin}/api/auth/frontchannel-logout`;

// GET /__test/frontchannel-logout-urls?sub=…: for each provider session of `sub` (oldest
// first) in which the vestibule client signed in, the URL the provider's logout page would
// frame, with the provider's own issuer and the sid of that client's ID tokens. Nothing is
// ended here: a test loads the URLs as the iframes would, without the browser's cookies.
function frontchannelLogoutUrls(sub) {
  const urls = [];
  if (!FRONTCHANNEL_LOGOUT_URI) return { urls };
  for (const { payload } of store.model('Session').values()) {
    const authorization = payload.accountId === sub ? payload.authorizations?.[CLIENT_ID] : undefined;
    if (!authorization?.sid) continue;
    const url = new URL(FRONTCHANNEL_LOGOUT_URI);
    url.searchParams.set('iss', providerInstance.issuer);
    url.searchParams.set('sid', authorization.sid);
    urls.push(url.href);
  }
  return { urls };
}

async function handleTestPost(req, res, route) {
  const body = JSON.parse((await readBody(req)) || '{}');
  if (route === 'POST /__test/refresh-error') {
    const { status, count, grant_type: _, ...answer } = setGrantErrors({ ...body, grant_type: 'refresh_token', status: 400, count: 1 });
    return sendJson(res, 200, answer);
  }
  if (route === 'POST /__test/grant-error') {
    try {
      return sendJson(res, 200, setGrantErrors(body));
    } catch (err) {
      return sendJson(res, 400, { error: String(err.message ?? err) });
    }
  }
  if (route === 'POST /__test/logout-token') {
    const header = { ...(body.header ?? { alg: JWKS_ALG, typ: 'logout+jwt' }) };
    return sendJson(res, 200, { token: signToken(header, body.claims ?? {}, body.key ?? 'provider') });
  }
  const sub = new URL(req.url, 'http://localhost').searchParams.get('sub');
  return sendJson(res, 200, await endSessionsOf(sub));
}

function handleTest(req, res) {
  const { pathname } = new URL(req.url, 'http://localhost');
  const route = `${req.method} ${pathname}`;
  if (route === 'POST /__test/par-error') {
    parErrorSwitch(req, res);
    return;
  }
  if (route === 'POST /__test/token-response') {
    handleTokenResponseSwitch(req, res);
    return;
  }
  if (route === 'POST /__test/revoke-access-tokens') {
    req.resume();
    revokeAccessTokens(res);
    return;
  }
  if (pathname === '/__test/userinfo') {
    userinfoTestEndpoint(req, res);
    return;
  }
  if (pathname === '/__test/claim-sources') {
    claimSourceTestEndpoint(req, res);
    return;
  }
  if (pathname === '/__test/acr') {
    acrTestEndpoint(req, res);
    return;
  }
  if (pathname === '/__test/dpop') {
    dpopTestEndpoint(req, res);
    return;
  }
  if (pathname === '/__test/claims-endpoint') {
    claimsEndpoint(req, res);
    return;
  }
  if (['POST /__test/logout-token', 'POST /__test/end-sessions', 'POST /__test/refresh-error', 'POST /__test/grant-error'].includes(route)) {
    handleTestPost(req, res, route).catch((err) => sendJson(res, 500, { error: String(err.message ?? err) }));
    return;
  }
  // drain any request body
  req.resume();
  switch (route) {
    case 'GET /__test/health':
      return sendJson(res, 200, { ok: true });
    case 'GET /__test/stats':
      return sendJson(res, 200, stats);
    case 'POST /__test/reset-stats':
      stats = zeroStats();
      return sendJson(res, 200, stats);
    case 'POST /__test/revoke-all':
      return sendJson(res, 200, { deleted: store.clear(['RefreshToken', 'AccessToken', 'Grant']) });
    case 'GET /__test/store':
      return sendJson(res, 200, store.counts());
    case 'GET /__test/secrets':
      return sendJson(res, 200, { issued: issuedSecrets });
    case 'GET /__test/frontchannel-logout-urls':
      return sendJson(res, 200, frontchannelLogoutUrls(new URL(req.url, 'http://localhost').searchParams.get('sub')));
    case 'POST /__test/refresh-delay':
    case 'POST /__test/grant-delay': {
      const query = new URL(req.url, 'http://localhost').searchParams;
      const ms = Number.parseInt(query.get('ms') ?? '', 10);
      if (!Number.isFinite(ms) || ms < 0) return sendJson(res, 400, { error: 'ms must be a non-negative integer' });
      const grantType = route === 'POST /__test/refresh-delay' ? 'refresh_token' : query.get('grant_type');
      if (!grantType) return sendJson(res, 400, { error: 'grant_type is required' });
      grantDelays.set(grantType, ms);
      return sendJson(res, 200, route === 'POST /__test/refresh-delay' ? { refresh_delay_ms: ms } : { grant_type: grantType, delay_ms: ms });
    }
    default:
      return sendJson(res, 404, { error: 'not_found', route });
  }
}

// oidc-provider treats client_secret_basic and client_secret_post as interchangeable
// for a client registered with either. To let tests prove the BFF really uses the
// configured method, enforce it (OP_STRICT_CLIENT_AUTH=1, default) for the token,
// introspection and revocation endpoints: the body is read here and handed to
// oidc-provider as req.body.
const CLIENT_AUTH_PATHS = new Map([
  ['/token', 'token'],
  ['/token/introspection', 'introspection'],
  ['/token/revocation', 'revocation'],
  ['/request', 'pushed_authorization_request'],
]);
const REGISTERED_AUTH_METHOD = new Map([
  [CLIENT_ID, TOKEN_AUTH_METHOD],
  [UPSTREAM_CLIENT_ID, UPSTREAM_TOKEN_AUTH_METHOD],
]);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 64 * 1024) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function usedAuthMethod(req, form) {
  const authz = req.headers.authorization;
  if (authz && /^basic\s/i.test(authz)) {
    let clientId;
    try {
      const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
      clientId = decodeURIComponent(decoded.slice(0, decoded.indexOf(':')).replace(/\+/g, '%20'));
    } catch {
      return undefined;
    }
    return { method: 'client_secret_basic', clientId, both: form.has('client_secret') };
  }
  if (form.has('client_secret')) return { method: 'client_secret_post', clientId: form.get('client_id') };
  return undefined;
}

async function strictClientAuth(req, res) {
  const route = CLIENT_AUTH_PATHS.get(new URL(req.url, 'http://localhost').pathname);
  if (route === 'token') stats.token_traceparents.push(req.headers.traceparent ?? null);
  if (req.method !== 'POST' || !route || (!STRICT_CLIENT_AUTH && route !== 'token')
    || !/^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '')) {
    return true;
  }
  const raw = await readBody(req);
  req.body = raw; // picked up by oidc-provider's body parser (req is no longer readable)
  const form = new URLSearchParams(raw);
  if (route === 'token') prepareTokenRequest(req, form);
  if (!STRICT_CLIENT_AUTH) return true;
  const used = usedAuthMethod(req, form);
  const expected = used && REGISTERED_AUTH_METHOD.get(used.clientId);
  if (!used || !expected || (expected === used.method && !used.both)) return true;

  const description = `client authentication failed (test-op: client ${used.clientId} is registered with ${expected}, request used ${used.both ? 'both methods' : used.method})`;
  process.stderr.write(`test-op: ${route} rejected: ${description}\n`);
  if (route === 'token') {
    const gt = form.get('grant_type');
    if (gt === 'authorization_code') stats.authorization_code_errors += 1;
    else if (gt === 'refresh_token') stats.refresh_token_errors += 1;
  } else if (route === 'introspection') {
    stats.introspections += 1;
    stats.introspection_errors += 1;
  } else if (route === 'revocation') {
    stats.revocations += 1;
    stats.revocation_errors += 1;
  }
  const headers = used.method === 'client_secret_basic' ? { 'www-authenticate': 'Basic realm="test-op"' } : {};
  const text = JSON.stringify({ error: 'invalid_client', error_description: description });
  res.writeHead(401, {
    ...headers, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text),
  });
  res.end(text);
  return false;
}

// ---------------------------------------------------------------------------
// token responses changed on the way out (issue 29: what the conformance suite sends)
// ---------------------------------------------------------------------------

// POST /__test/token-response with {"drop_id_token_claims": ["sub"], "set_id_token_claims":
// {"iss": "…"}, "omit_expires_in": true} changes every later token-endpoint answer (code and
// refresh grants) until it is posted again ({} restores them): the ID token loses or gets
// those claims and is signed again with the provider's own key (so only the claims are
// wrong), and expires_in goes (RFC 6749 only RECOMMENDS it).
let tokenResponseChanges = {};

function changedTokenResponse(text) {
  const answer = JSON.parse(text);
  if (answer.error) return text;
  if (tokenResponseChanges.omit_expires_in) delete answer.expires_in;
  if (EXPIRES_IN_AS_STRING && answer.expires_in !== undefined) answer.expires_in = String(answer.expires_in);
  const drop = tokenResponseChanges.drop_id_token_claims ?? [];
  const set = { ...tenantClaims(), ...idTokenIssuerSpelling(), ...(tokenResponseChanges.set_id_token_claims ?? {}) };
  if (answer.id_token && (drop.length > 0 || Object.keys(set).length > 0)) {
    const [header, payload] = answer.id_token.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
    for (const claim of drop) delete payload[claim];
    Object.assign(payload, set);
    answer.id_token = signToken(header, payload, header.alg.startsWith('HS') ? 'client-secret' : 'provider');
  }
  return JSON.stringify(answer);
}

// Buffers what oidc-provider writes for a token request and sends the changed answer instead.
function changeTokenResponse(req, res) {
  if (new URL(req.url, 'http://localhost').pathname !== '/token') return;
  if (!TENANT && !EXPIRES_IN_AS_STRING && !ID_TOKEN_ISS
    && !tokenResponseChanges.omit_expires_in
    && !(tokenResponseChanges.drop_id_token_claims ?? []).length
    && !Object.keys(tokenResponseChanges.set_id_token_claims ?? {}).length) return;
  rewriteResponse(res, changedTokenResponse);
}

// Buffers what oidc-provider writes and sends `change(text)` instead (the text unchanged when
// `change` throws).
function rewriteResponse(res, change) {
  const chunks = [];
  const { write, end } = res;
  res.write = (chunk) => { chunks.push(Buffer.from(chunk)); return true; };
  res.end = (chunk, ...rest) => {
    if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
    let text = Buffer.concat(chunks).toString('utf8');
    try {
      text = change(text);
    } catch (err) {
      process.stderr.write(`test-op: response left unchanged: ${err}\n`);
    }
    if (!res.headersSent) res.setHeader('content-length', Buffer.byteLength(text));
    res.write = write;
    res.end = end;
    return res.end(text);
  };
}

// ---------------------------------------------------------------------------
// a multi-tenant provider (issue 32: Entra ID discovered through /common or /organizations)
// ---------------------------------------------------------------------------

// OP_TENANT=<id> makes the provider look like Entra ID discovered through /organizations: the
// discovery document names as its issuer the template `<issuer>/{tenantid}/v2.0` (and no longer
// says it sends RFC 9207's `iss`, which authorization responses then leave out, as Entra ID's
// do), and every ID token from the token endpoint carries `tid` <id> and that tenant's issuer
// `<issuer>/<id>/v2.0`, signed again with the provider's key. POST /__test/token-response
// changes apply on top (another `tid` or `iss`). Unset: none of this.
const TENANT = env.OP_TENANT || undefined;

function tenantClaims() {
  return TENANT ? { tid: TENANT, iss: `${issuer}/${TENANT}/v2.0` } : {};
}

function changeDiscovery(req, res) {
  if (!TENANT || new URL(req.url, 'http://localhost').pathname !== '/.well-known/openid-configuration') return;
  rewriteResponse(res, (text) => {
    const document = JSON.parse(text);
    document.issuer = `${issuer}/{tenantid}/v2.0`;
    delete document.authorization_response_iss_parameter_supported;
    return JSON.stringify(document);
  });
}

// OP_EXPIRES_IN_AS_STRING=1: every token-endpoint answer (code, refresh, client credentials,
// exchange grants) sends expires_in as a JSON string ("600"), as Entra ID's v1 and B2C
// endpoints do (openidconnect-rs#106).
const EXPIRES_IN_AS_STRING = env.OP_EXPIRES_IN_AS_STRING === '1';

// OP_ID_TOKEN_ISS=<iss>: every ID token from the token endpoint names this `iss` instead of the
// provider's issuer (signed again with the provider's key), another spelling of the same
// issuer, as Google's `accounts.google.com` beside `https://accounts.google.com`. The word
// `schemeless` stands for the provider's issuer without its scheme (`127.0.0.1:<port>`), the
// very shape of Google's. Discovery still names the provider's own issuer.
const ID_TOKEN_ISS = env.OP_ID_TOKEN_ISS || undefined;

function idTokenIssuerSpelling() {
  if (!ID_TOKEN_ISS) return {};
  return { iss: ID_TOKEN_ISS === 'schemeless' ? issuer.replace(/^[a-z]+:\/\//, '') : ID_TOKEN_ISS };
}

// The authorization response's redirect to a client, without RFC 9207's `iss`.
function withoutIssInAuthorizationResponses(res) {
  if (!TENANT) return;
  const { setHeader } = res;
  res.setHeader = function settingHeader(name, value) {
    let changed = value;
    if (String(name).toLowerCase() === 'location' && typeof value === 'string'
      && REDIRECT_URIS.some((uri) => value.startsWith(uri))) {
      const url = new URL(value);
      url.searchParams.delete('iss');
      changed = url.toString();
    }
    return setHeader.call(this, name, changed);
  };
}

// POST /__test/revoke-access-tokens forgets every access token (introspection then calls them
// inactive) and keeps the refresh tokens: a token revoked before its expiry.
function revokeAccessTokens(res) {
  sendJson(res, 200, { deleted: store.clear(['AccessToken']) });
}

function handleTokenResponseSwitch(req, res) {
  readBody(req).then((raw) => {
    tokenResponseChanges = JSON.parse(raw || '{}');
    sendJson(res, 200, tokenResponseChanges);
  }).catch((err) => sendJson(res, 400, { error: String(err.message ?? err) }));
}

// ---------------------------------------------------------------------------
// what token and authorization requests carried (issue 31: resources, audiences, exchanges)
// ---------------------------------------------------------------------------

// Parameters of a token request worth a test's assertion; never a secret (no code, verifier,
// refresh, subject or actor token, client secret).
const RECORDED_TOKEN_PARAMS = ['grant_type', 'scope', 'requested_token_type', 'subject_token_type'];

function pushCapped(list, entry) {
  list.push(entry);
  if (list.length > 1000) list.shift();
}

// Records a token request (stats.token_requests) and lets an `audience` stand for `resource`
// (see audienceAsResource) in every grant but the token exchange, rewriting req.body.
function prepareTokenRequest(req, form) {
  const entry = { client_id: usedAuthMethod(req, form)?.clientId ?? form.get('client_id') ?? null };
  for (const name of RECORDED_TOKEN_PARAMS) entry[name] = form.get(name);
  entry.resource = form.getAll('resource');
  entry.audience = form.getAll('audience');
  entry.has_subject_token = form.has('subject_token');
  if (form.has('client_assertion')) entry.client_assertion = assertionParts(form);
  pushCapped(stats.token_requests, entry);
  if (form.get('grant_type') !== TOKEN_EXCHANGE && audienceAsResource(form)) req.body = form.toString();
}

function tokenRequestGrantType(req) {
  if (typeof req.body !== 'string' || new URL(req.url, 'http://localhost').pathname !== '/token') return undefined;
  return new URLSearchParams(req.body).get('grant_type') ?? undefined;
}

// Records an authorization request (GET /auth) and lets its `audience` stand for `resource`.
function prepareAuthorizationRequest(req) {
  const url = new URL(req.url, 'http://localhost');
  if (req.method !== 'GET' || url.pathname !== '/auth') return;
  const query = url.searchParams;
  pushCapped(stats.authorization_requests, {
    resource: query.getAll('resource'), audience: query.getAll('audience'), scope: query.get('scope'), prompt: query.get('prompt'),
    params: Object.fromEntries(query),
  });
  if (audienceAsResource(query)) req.url = `${url.pathname}?${query}`;
}

// JWT access tokens are never stored (only opaque ones are, and the adapter lists those in
// /__test/secrets): take them from the token endpoint's answers.
function recordIssuedJwts(req, res) {
  if (new URL(req.url, 'http://localhost').pathname !== '/token') return;
  const chunks = [];
  const { write, end } = res;
  const keep = (chunk) => {
    if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
  };
  res.write = function recordingWrite(chunk, ...rest) {
    keep(chunk);
    return write.call(this, chunk, ...rest);
  };
  res.end = function recordingEnd(chunk, ...rest) {
    keep(chunk);
    try {
      const token = JSON.parse(Buffer.concat(chunks).toString('utf8')).access_token;
      if (typeof token === 'string' && token.includes('.')) issuedSecrets.push(token);
    } catch {
      // not JSON: nothing issued
    }
    return end.call(this, chunk, ...rest);
  };
}

// ---------------------------------------------------------------------------
// pushed authorization requests (RFC 9126): OP_PAR
// ---------------------------------------------------------------------------
// 0 (default): the feature off, no pushed_authorization_request_endpoint in discovery (stock
// oidc-provider has it on; off keeps the front-channel requests other tests inspect); 1: on;
// required: on and required (require_pushed_authorization_requests: true in discovery, and
// an authorization request that was not pushed is refused).
const PAR_MODE = (env.OP_PAR ?? '').trim() || '0';
if (!['0', '1', 'required'].includes(PAR_MODE)) {
  throw new Error(`OP_PAR must be 0, 1 or required, got ${JSON.stringify(env.OP_PAR)}`);
}

function parFeature() {
  return { enabled: PAR_MODE !== '0', requirePushedAuthorizationRequests: PAR_MODE === 'required' };
}

// The answers that replace oidc-provider's for the next pushes, first first (POST
// /__test/par-error with {"error", "error_description", "status", "count"}): a provider that
// refuses a pushed request.
const parErrors = [];

function parErrorSwitch(req, res) {
  readBody(req).then((raw) => {
    const body = JSON.parse(raw || '{}');
    const status = body.status ?? 400;
    const count = body.count ?? 1;
    if (!Number.isInteger(status) || status < 400 || status > 599) throw new Error('status must be 400-599');
    if (!Number.isInteger(count) || count < 0) throw new Error('count must be a non-negative integer');
    const answer = { error: body.error ?? 'invalid_request', ...(body.error_description ? { error_description: body.error_description } : {}) };
    parErrors.length = 0;
    for (let i = 0; i < count; i += 1) parErrors.push({ status, answer });
    sendJson(res, 200, { status, count, ...answer });
  }).catch((err) => sendJson(res, 400, { error: String(err.message ?? err) }));
}

// Records a push (stats.par_requests: the client, the parameter names in order and their
// values, the client secret left out) and answers it from the switch when one is set. The
// body was read by strictClientAuth (the route is one of CLIENT_AUTH_PATHS).
function pushedRequestSwitch(req, res) {
  if (req.method !== 'POST' || new URL(req.url, 'http://localhost').pathname !== '/request') return false;
  const form = new URLSearchParams(typeof req.body === 'string' ? req.body : '');
  form.delete('client_secret');
  pushCapped(stats.par_requests, {
    client_id: usedAuthMethod(req, new URLSearchParams(req.body ?? ''))?.clientId ?? form.get('client_id'),
    names: [...form.keys()],
    params: Object.fromEntries(form),
  });
  const switched = parErrors.shift();
  if (!switched) return false;
  stats.par_errors += 1;
  sendJson(res, switched.status, switched.answer);
  return true;
}

let providerHandler;
let providerInstance;

// The providers' own logout endpoints (OP_LEGACY_LOGOUT): Auth0's /v2/logout sends the
// browser to returnTo, Cognito's /logout to logout_uri; neither passes a state on.
function legacyLogout(req, res) {
  if (!LEGACY_LOGOUT || req.method !== 'GET') return false;
  const url = new URL(req.url, 'http://localhost');
  const returnParam = { '/v2/logout': 'returnTo', '/logout': 'logout_uri' }[url.pathname];
  if (!returnParam) return false;
  req.resume();
  pushCapped(stats.legacy_logouts, { path: url.pathname, query: Object.fromEntries(url.searchParams) });
  const target = url.searchParams.get(returnParam);
  if (url.searchParams.get('client_id') !== CLIENT_ID) {
    sendJson(res, 400, { error: 'invalid_request', error_description: 'unknown client_id' });
  } else if (!POST_LOGOUT_REDIRECT_URIS.includes(target)) {
    sendJson(res, 400, { error: 'invalid_request', error_description: `${returnParam} is not registered` });
  } else {
    res.writeHead(302, { Location: target });
    res.end();
  }
  return true;
}

// Discovery without end_session_endpoint (OP_HIDE_END_SESSION): the provider's own document,
// asked for on the side, less that field.
function discoveryWithoutEndSession(req, res) {
  if (!HIDE_END_SESSION || req.method !== 'GET' || req.headers['x-test-inner']) return false;
  if (new URL(req.url, 'http://localhost').pathname !== '/.well-known/openid-configuration') return false;
  req.resume();
  const inner = http.get({
    host: '127.0.0.1', port: server.address().port, path: req.url,
    headers: { ...req.headers, 'x-test-inner': '1' },
  }, (answer) => {
    const chunks = [];
    answer.on('data', (chunk) => chunks.push(chunk));
    answer.on('end', () => {
      const document = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      delete document.end_session_endpoint;
      sendJson(res, answer.statusCode, document);
    });
  });
  inner.on('error', (err) => sendJson(res, 502, { error: String(err.message ?? err) }));
  return true;
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/__test/')) {
    handleTest(req, res);
    return;
  }
  if (legacyLogout(req, res) || discoveryWithoutEndSession(req, res)) return;
  if (!providerHandler) {
    sendJson(res, 503, { error: 'starting' });
    return;
  }
  if (refusedByUserinfoSwitch(req, res)) return;
  prepareAuthorizationRequest(req);
  recordUserinfoTransport(req).then(() => strictClientAuth(req, res)).then((proceed) => {
    if (!proceed) return;
    if (pushedRequestSwitch(req, res)) return;
    changeTokenResponse(req, res);
    changeDiscovery(req, res);
    withoutIssInAuthorizationResponses(res);
    recordIssuedJwts(req, res);
    const grantType = tokenRequestGrantType(req);
    const switched = grantErrors.get(grantType)?.shift();
    if (switched) {
      const counter = GRANT_ERROR_COUNTERS[grantType];
      if (counter) stats[counter] += 1;
      sendJson(res, switched.status, switched.answer);
    } else if (grantDelays.get(grantType) > 0) {
      setTimeout(() => providerHandler(req, res), grantDelays.get(grantType));
    } else {
      providerHandler(req, res);
    }
  }, (err) => {
    process.stderr.write(`test-op: failed to read request body: ${err}\n`);
    if (!res.headersSent) sendJson(res, 400, { error: 'invalid_request', error_description: String(err.message ?? err) });
  });
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});

const { port } = server.address();
milestone(`listening on port ${port}`);
const issuer = (env.OP_ISSUER || `http://127.0.0.1:${port}`).replace(/\/+$/, '');
const provider = buildProvider(issuer);
providerInstance = provider;
// Behind a front that terminates TLS (OP_ISSUER is https): believe its X-Forwarded-Proto.
if (env.OP_TRUST_PROXY === '1') provider.proxy = true;
milestone('provider built');
providerHandler = provider.callback();

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
process.stderr.write(`test-op: listening on 127.0.0.1:${port}, issuer ${issuer}, client ${CLIENT_ID} (${TOKEN_AUTH_METHOD}, ${ID_TOKEN_ALG}), redirect_uris ${REDIRECT_URIS.join(' ')}\n`);

let shuttingDown = false;
function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  process.stderr.write(`test-op: ${signal} received, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
