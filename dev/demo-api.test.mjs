// Tests of dev/demo-api.mjs's local JWT checks (issue 31), with node:test and node:crypto only:
// `node --test dev/demo-api.test.mjs` (Node 20+, no packages).
//
// A stand-in provider on 127.0.0.1 serves a discovery document, its JWKS (RS256) and a userinfo
// endpoint; a stand-in Vestibule serves its assertion JWKS (ES256, RS256, EdDSA keys, rotated
// during the test). The real demo API runs as a child process against both, with
// AUDIENCE_PATHS=/orders=orders-api and ASSERTION_PATHS=/internal=internal-api, and every case
// is a real HTTP call to it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';

const DEMO_API = fileURLToPath(new URL('./demo-api.mjs', import.meta.url));
const ISSUER_PATH = '/realms/test';
const VESTIBULE_PATH = '/vestibule';
const OPAQUE_TOKEN = 'opaque-token-userinfo-knows';

const now = () => Math.floor(Date.now() / 1000);

/** A key pair with its public JWK (kid, alg, use) and a signer for compact JWS. */
function keyPair(alg, kid = randomUUID()) {
  const { publicKey, privateKey } = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ed25519');
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { alg, kid, jwk, privateKey };
}

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** A compact JWS of `claims` signed with `key` (header overridable to forge). */
function jws(key, claims, header = {}) {
  const head = b64({ alg: key.alg, typ: 'JWT', kid: key.kid, ...header });
  const body = b64(claims);
  const input = Buffer.from(`${head}.${body}`);
  const signature = key.alg === 'ES256'
    ? sign('sha256', input, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
    : sign(key.alg === 'RS256' ? 'sha256' : null, input, key.privateKey);
  return `${head}.${body}.${signature.toString('base64url')}`;
}

/** A loopback server answering `routes[path](req)` -> [status, body]; counts requests per path. */
async function serve(routes) {
  const counts = new Map();
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const route = routes[path];
    const [status, body] = route ? route(req) : [404, { error: 'not_found' }];
    const payload = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${server.address().port}`, counts };
}

/** Starts the demo API with `env`; answers { url, child, output }. */
async function startDemoApi(env) {
  const child = spawn(process.execPath, [DEMO_API], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (match) resolve(match[1]);
    });
    child.on('exit', (code) => reject(new Error(`demo API exited (${code}): ${output}`)));
  });
  return { url, child, output: () => output };
}

describe('demo API: audience-checked and assertion-checked paths', () => {
  const providerKey = keyPair('RS256');
  const vestibuleKeys = [keyPair('ES256'), keyPair('RS256'), keyPair('EdDSA')];
  let provider;
  let vestibule;
  let api;
  let issuer;
  let vestibuleIssuer;

  before(async () => {
    provider = await serve({
      [`${ISSUER_PATH}/.well-known/openid-configuration`]: () => [200, {
        issuer,
        jwks_uri: `${issuer}/certs`,
        userinfo_endpoint: `${issuer}/userinfo`,
      }],
      [`${ISSUER_PATH}/certs`]: () => [200, {
        keys: [{ ...keyPair('RS256').jwk, use: 'enc', alg: 'RSA-OAEP' }, providerKey.jwk],
      }],
      [`${ISSUER_PATH}/userinfo`]: (req) => (req.headers.authorization === `Bearer ${OPAQUE_TOKEN}`
        ? [200, { sub: 'opaque-user', preferred_username: 'opaque' }]
        : [401, { error: 'invalid_token' }]),
    });
    issuer = `${provider.url}${ISSUER_PATH}`;
    vestibule = await serve({
      [`${VESTIBULE_PATH}/.well-known/jwks.json`]: () => [200, { keys: vestibuleKeys.map((key) => key.jwk) }],
    });
    vestibuleIssuer = `${vestibule.url}${VESTIBULE_PATH}`;
    api = await startDemoApi({
      OIDC_DISCOVERY_URL: `${issuer}/.well-known/openid-configuration`,
      AUDIENCE_PATHS: '/orders=orders-api',
      ASSERTION_PATHS: '/internal=internal-api,/internal/billing=billing-api',
      ASSERTION_JWKS_URL: `${vestibuleIssuer}/.well-known/jwks.json`,
      ASSERTION_ISSUER: vestibuleIssuer,
    });
  });

  after(() => {
    api?.child.kill('SIGTERM');
    provider?.server.close();
    vestibule?.server.close();
  });

  /** Every token and assertion sent, to prove none reaches the log. */
  const sent = new Set();

  /** GET `path` at the demo API with `headers`: { status, challenge, body }. */
  async function call(path, headers = {}) {
    for (const value of Object.values(headers)) sent.add(value.replace(/^Bearer /, ''));
    const response = await fetch(`${api.url}${path}`, { headers });
    return {
      status: response.status,
      challenge: response.headers.get('www-authenticate'),
      body: await response.json(),
    };
  }

  function assertRefused(answer, reason) {
    assert.equal(answer.status, 401, JSON.stringify(answer));
    assert.match(answer.challenge, /^Bearer error="invalid_token", error_description="/);
    assert.equal(answer.body.error, 'invalid_token');
    assert.match(answer.body.error_description, reason);
  }

  const assertionClaims = (overrides = {}) => ({
    iss: vestibuleIssuer,
    aud: 'internal-api',
    sub: 'alice-sub',
    iat: now(),
    exp: now() + 30,
    jti: randomUUID(),
    sid: 'c2lkLWhhc2g',
    acr: 'gold',
    auth_time: now() - 100,
    email: 'alice@example.test',
    ...overrides,
  });
  const assertionHeader = (token) => ({ 'x-vestibule-assertion': token });

  test('a good ES256 assertion passes and its verified claims are echoed', async () => {
    const [es256] = vestibuleKeys;
    const claims = assertionClaims();
    const answer = await call('/internal/report', assertionHeader(jws(es256, claims)));
    assert.equal(answer.status, 200, JSON.stringify(answer));
    assert.deepEqual(answer.body.assertion.claims, claims);
    assert.equal(answer.body.assertion.kid, es256.kid);
    assert.equal(answer.body.assertion.alg, 'ES256');
    assert.equal(answer.body.caller.sub, 'alice-sub');
    assert.equal(answer.body.caller.email, 'alice@example.test');
    assert.equal(answer.body.bearer, false);
    assert.equal(answer.body.path, '/internal/report');
  });

  test('RS256 and EdDSA assertions pass too, with a bearer token beside them', async () => {
    for (const key of vestibuleKeys.slice(1)) {
      const answer = await call('/internal', {
        ...assertionHeader(jws(key, assertionClaims())),
        authorization: 'Bearer something-else',
      });
      assert.equal(answer.status, 200, `${key.alg}: ${JSON.stringify(answer)}`);
      assert.equal(answer.body.assertion.alg, key.alg);
      assert.equal(answer.body.bearer, true);
    }
  });

  test('an assertion for another audience is refused, also on a longer prefix for another service', async () => {
    const [es256] = vestibuleKeys;
    assertRefused(await call('/internal', assertionHeader(jws(es256, assertionClaims({ aud: 'orders-api' })))),
      /aud "orders-api" does not name internal-api/);
    // /internal/billing belongs to billing-api: internal-api's assertion is useless there.
    assertRefused(await call('/internal/billing/x', assertionHeader(jws(es256, assertionClaims()))),
      /does not name billing-api/);
    const billing = await call('/internal/billing/x', assertionHeader(jws(es256, assertionClaims({ aud: ['billing-api'] }))));
    assert.equal(billing.status, 200, JSON.stringify(billing));
  });

  test('expired, too long-lived, future, wrongly issued and unsigned assertions are refused', async () => {
    const [es256] = vestibuleKeys;
    const sent = (claims) => call('/internal', assertionHeader(jws(es256, assertionClaims(claims))));
    assertRefused(await sent({ iat: now() - 40, exp: now() - 1 }), /^expired$/);
    assertRefused(await sent({ exp: now() + 120 }), /more than 60 s/);
    assertRefused(await sent({ iat: now() + 60, exp: now() + 90 }), /issued in the future/);
    assertRefused(await sent({ iat: undefined }), /^no iat$/);
    assertRefused(await sent({ exp: undefined }), /^no exp$/);
    assertRefused(await sent({ iss: 'https://someone-else.example' }), /^iss /);
    const unsigned = `${b64({ alg: 'none', kid: es256.kid })}.${b64(assertionClaims())}.`;
    assertRefused(await call('/internal', assertionHeader(unsigned)), /alg "none" is not accepted/);
    assertRefused(await call('/internal', assertionHeader('not-a-jws')), /not a compact JWS/);
    assertRefused(await call('/internal'), /no x-vestibule-assertion header/);
  });

  test('a bad signature is refused: another key under a known kid, or a changed payload', async () => {
    const [es256] = vestibuleKeys;
    const impostor = { ...keyPair('ES256'), kid: es256.kid };
    assertRefused(await call('/internal', assertionHeader(jws(impostor, assertionClaims()))), /^bad signature$/);
    const [head, , signature] = jws(es256, assertionClaims()).split('.');
    const tampered = `${head}.${b64(assertionClaims({ sub: 'mallory' }))}.${signature}`;
    assertRefused(await call('/internal', assertionHeader(tampered)), /^bad signature$/);
  });

  test('an unknown kid makes the demo API fetch the JWKS again, once, and a rotated-in key then passes', async () => {
    const jwksPath = `${VESTIBULE_PATH}/.well-known/jwks.json`;
    const stranger = keyPair('ES256');
    const fetchesBefore = vestibule.counts.get(jwksPath);
    assertRefused(await call('/internal', assertionHeader(jws(stranger, assertionClaims()))),
      new RegExp(`no ES256 key ${stranger.kid}`));
    assert.equal(vestibule.counts.get(jwksPath), fetchesBefore + 1, 'one more JWKS fetch for the unknown kid');

    // Rotation: Vestibule publishes a new key beside the old one.
    const rotated = keyPair('ES256');
    vestibuleKeys.push(rotated);
    const fresh = await call('/internal', assertionHeader(jws(rotated, assertionClaims())));
    assert.equal(fresh.status, 200, JSON.stringify(fresh));
    assert.equal(fresh.body.assertion.kid, rotated.kid);
    assert.equal(vestibule.counts.get(jwksPath), fetchesBefore + 2);
    // The old key's assertions still pass, from the cached set (no fetch).
    const old = await call('/internal', assertionHeader(jws(vestibuleKeys[0], assertionClaims())));
    assert.equal(old.status, 200, JSON.stringify(old));
    assert.equal(vestibule.counts.get(jwksPath), fetchesBefore + 2, 'known kids need no fetch');
  });

  const accessClaims = (overrides = {}) => ({
    iss: issuer,
    aud: 'orders-api',
    azp: 'vestibule',
    sub: 'alice-sub',
    typ: 'Bearer',
    scope: 'orders:read',
    preferred_username: 'alice',
    realm_access: { roles: ['admin'] },
    iat: now(),
    exp: now() + 60,
    ...overrides,
  });
  const bearer = (token) => ({ authorization: `Bearer ${token}` });

  test('an audience path accepts the provider\'s token for that audience, checked with its JWKS', async () => {
    const answer = await call('/orders/42', bearer(jws(providerKey, accessClaims())));
    assert.equal(answer.status, 200, JSON.stringify(answer));
    assert.equal(answer.body.caller.preferred_username, 'alice');
    assert.deepEqual(answer.body.token, { aud: 'orders-api', azp: 'vestibule', scope: 'orders:read', kid: providerKey.kid });
    const listed = await call('/orders', bearer(jws(providerKey, accessClaims({ aud: ['account', 'orders-api'] }))));
    assert.equal(listed.status, 200, JSON.stringify(listed));
  });

  test('an audience path refuses a login token for another audience, expired, foreign and non-access tokens', async () => {
    const sent = (claims, key = providerKey) => call('/orders', bearer(jws(key, accessClaims(claims))));
    assertRefused(await sent({ aud: 'account' }), /aud "account" does not name orders-api/);
    assertRefused(await sent({ aud: undefined }), /aud null does not name orders-api/);
    assertRefused(await sent({ exp: now() - 1 }), /^expired$/);
    assertRefused(await sent({ iss: `${issuer}-other` }), /^iss /);
    assertRefused(await sent({ typ: 'ID' }), /typ ID is not an access token/);
    assertRefused(await sent({}, { ...keyPair('RS256'), kid: providerKey.kid }), /^bad signature$/);
    assertRefused(await call('/orders', bearer(OPAQUE_TOKEN)), /not a compact JWS/);
    assertRefused(await call('/orders'), /^no bearer token$/);
  });

  test('other paths still check the bearer token at userinfo, as before', async () => {
    const answer = await call('/anything', bearer(OPAQUE_TOKEN));
    assert.equal(answer.status, 200, JSON.stringify(answer));
    assert.equal(answer.body.caller.sub, 'opaque-user');
    assert.equal(answer.body.token, undefined);
    assertRefused(await call('/anything', bearer('unknown')), /token rejected by userinfo/);
    // Neither the assertion nor an /orders token is a userinfo token.
    assertRefused(await call('/ordersx', bearer(jws(providerKey, accessClaims()))), /token rejected by userinfo/);
  });

  test('no token or assertion reaches the log', () => {
    assert.ok(sent.size > 20, `the cases above sent tokens (${sent.size})`);
    const log = api.output();
    for (const token of sent) {
      const secret = token.split('.').at(-1) || token;
      assert.ok(!log.includes(secret), `the log shows a token sent: ${token.slice(0, 20)}…`);
    }
  });
});

test('the demo API refuses to start with ASSERTION_PATHS but no JWKS URL or issuer', async () => {
  const child = spawn(process.execPath, [DEMO_API], {
    env: { ...process.env, PORT: '0', OIDC_DISCOVERY_URL: 'http://127.0.0.1:9/x', ASSERTION_PATHS: '/internal=internal-api' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (chunk) => { output += chunk; });
  const [code] = await once(child, 'exit');
  assert.equal(code, 2);
  assert.match(output, /ASSERTION_PATHS needs ASSERTION_JWKS_URL and ASSERTION_ISSUER/);
});
