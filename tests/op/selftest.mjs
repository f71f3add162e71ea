// End-to-end self-test of the test OP (server.js). Run: node selftest.mjs
// Spawns server.js for several configurations, drives the devInteractions login and
// consent forms like a browser (cookie jar, manual redirects) and checks discovery,
// code+PKCE, refresh rotation, introspection, revocation, logout, stats and revoke-all.
// Uses only node built-ins. Exit code 0 = all good.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

// The provider's defaults come from the local stack's description.
const STACK = JSON.parse(fs.readFileSync(new URL('../../dev/stack.json', import.meta.url), 'utf8')).provider;

const here = path.dirname(fileURLToPath(import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);

// ---------------------------------------------------------------------------- OP process
async function startOp(extraEnv = {}) {
  const child = spawn(process.execPath, [path.join(here, 'server.js')], {
    env: { ...process.env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  let stdout = '';
  const line = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('\n')) resolve(stdout.slice(0, stdout.indexOf('\n')));
    });
    child.once('exit', (code) => reject(new Error(`OP exited early (${code}): ${stderr}`)));
  });
  const info = JSON.parse(line);
  assert.deepEqual(Object.keys(info).sort(), ['issuer', 'port']);
  assert.equal(info.issuer, extraEnv.OP_ISSUER ?? `http://127.0.0.1:${info.port}`);
  const stop = async () => {
    const exited = new Promise((r) => child.once('exit', (code, sig) => r({ code, sig })));
    child.kill('SIGTERM');
    const res = await exited;
    assert.equal(res.code, 0, `OP exit code ${JSON.stringify(res)}`);
    // exactly one line on stdout over the whole lifetime
    assert.equal(stdout, `${line}\n`, `unexpected stdout: ${JSON.stringify(stdout)}`);
    return res;
  };
  return { ...info, child, stop, stderr: () => stderr };
}

// ---------------------------------------------------------------------------- browser-ish
class Jar {
  constructor() { this.cookies = new Map(); } // key name|path -> {name,value,path}

  store(setCookies) {
    for (const sc of setCookies) {
      const [nv, ...attrs] = sc.split(';').map((s) => s.trim());
      const name = nv.slice(0, nv.indexOf('='));
      const value = nv.slice(nv.indexOf('=') + 1);
      let cpath = '/';
      let expired = false;
      for (const a of attrs) {
        const [k, v] = a.split('=');
        if (k.toLowerCase() === 'path') cpath = v;
        if (k.toLowerCase() === 'expires' && new Date(v) < new Date()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name}|${cpath}`;
      if (expired || value === '') this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path: cpath });
    }
  }

  header(url) {
    const p = new URL(url).pathname;
    return [...this.cookies.values()]
      .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

async function httpReq(jar, url, { method = 'GET', form, headers = {} } = {}) {
  const h = { ...headers };
  const cookie = jar?.header(url);
  if (cookie) h.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h['content-type'] = 'application/x-www-form-urlencoded';
  }
  const res = await fetch(url, {
    method, headers: h, body, redirect: 'manual',
  });
  jar?.store(res.headers.getSetCookie());
  return res;
}

function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos|#39);/gi, (m, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return {
      amp: '&', lt: '<', gt: '>', quot: '"', apos: "'",
    }[e.toLowerCase()];
  });
}

function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:.-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

// generic form parse: first <form>, its action/method and its <input>s
function parseForm(html) {
  const fm = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
  assert.ok(fm, `no form in page: ${html.slice(0, 500)}`);
  const fa = attrs(fm[1]);
  const inputs = [];
  for (const m of fm[2].matchAll(/<input\b([^>]*)>/gi)) {
    const a = attrs(m[1]);
    inputs.push({ name: a.name, type: a.type ?? 'text', value: a.value ?? '' });
  }
  return { action: fa.action, method: (fa.method ?? 'get').toUpperCase(), inputs };
}

function fillForm(form, values) {
  const out = {};
  for (const i of form.inputs) {
    if (!i.name) continue;
    out[i.name] = values[i.name] ?? i.value;
  }
  return out;
}

function pkcePair() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.hash('sha256', verifier, 'base64url');
  return { verifier, challenge };
}

const seenForms = {};

// Follow redirects from an authorization URL until we hit the client's redirect_uri,
// filling login/consent forms on the way. Returns the final callback URL.
async function authorize(op, jar, params, login = 'alice') {
  // an array value is a repeated parameter (resource=…&resource=…)
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [value].flat()) query.append(name, one);
  }
  let url = `${op.issuer}/auth?${query}`;
  for (let i = 0; i < 20; i += 1) {
    if (url.startsWith(params.redirect_uri)) return new URL(url);
    const res = await httpReq(jar, url);
    if ([302, 303].includes(res.status)) {
      url = new URL(res.headers.get('location'), url).href;
      continue;
    }
    const html = await res.text();
    assert.equal(res.status, 200, `unexpected ${res.status} at ${url}: ${html}`);
    const form = parseForm(html);
    // prompt=login/consent for the devInteractions forms; no prompt input for the
    // auto-submitting (JS) form_post page shown when the login switches accounts.
    const prompt = form.inputs.find((x) => x.name === 'prompt')?.value ?? 'auto_submit';
    seenForms[prompt] = { pageUrl: url, ...form };
    const fields = fillForm(form, { login, password: 'any-password' });
    const post = await httpReq(jar, new URL(form.action, url).href, { method: form.method, form: fields });
    if (![302, 303].includes(post.status)) assert.fail(`form post -> ${post.status}: ${await post.text()}`);
    url = new URL(post.headers.get('location'), url).href;
  }
  throw new Error('too many redirects');
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

async function clientPost(url, clientAuth, params) {
  const { id, secret, method } = clientAuth;
  const form = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [value].flat()) form.append(name, one);
  }
  const headers = { accept: 'application/json' };
  if (method === 'client_secret_post') {
    form.set('client_id', id);
    form.set('client_secret', secret);
  } else {
    headers.authorization = basic(id, secret);
  }
  const res = await httpReq(null, url, { method: 'POST', form, headers });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

// Counters are 0, lists and maps empty (what a fresh or reset provider answers).
function allZero(stats) {
  return Object.entries(stats).filter(([, v]) => !(v === 0 || v === '' || (typeof v === 'object' && Object.keys(v).length === 0))).map(([k]) => k);
}

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')) };
}

function verifyJwt(jwt, jwks, expectedAlg) {
  const [h, p, s] = jwt.split('.');
  const { header, payload } = decodeJwt(jwt);
  assert.equal(header.alg, expectedAlg);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `kid ${header.kid} not in jwks`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  let ok;
  if (expectedAlg === 'RS256') ok = crypto.verify('sha256', data, key, sig);
  else if (expectedAlg === 'PS256') ok = crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig);
  else if (expectedAlg === 'ES256') ok = crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  assert.ok(ok, 'id_token signature invalid');
  return payload;
}

async function getJson(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return res.json();
}

// ---------------------------------------------------------------------------- scenario
async function scenario(name, envOverrides = {}) {
  log(`\n=== scenario ${name} ${JSON.stringify(envOverrides)}`);
  const alg = envOverrides.OP_ID_TOKEN_ALG ?? 'RS256';
  const authMethod = envOverrides.OP_TOKEN_AUTH_METHOD ?? 'client_secret_basic';
  const redirectUri = 'http://127.0.0.1:8080/api/auth/callback';
  const op = await startOp({ OP_REDIRECT_URIS: redirectUri, ...envOverrides });
  const client = { id: STACK.client_id, secret: STACK.client_secret, method: authMethod };
  const upstream = { id: STACK.upstream_client_id, secret: STACK.upstream_client_secret, method: 'client_secret_basic' };
  try {
    // -- discovery
    const disco = await getJson(`${op.issuer}/.well-known/openid-configuration`);
    assert.equal(disco.issuer, op.issuer);
    assert.equal(disco.end_session_endpoint, `${op.issuer}/session/end`);
    assert.equal(disco.introspection_endpoint, `${op.issuer}/token/introspection`);
    assert.equal(disco.revocation_endpoint, `${op.issuer}/token/revocation`);
    assert.equal(disco.token_endpoint, `${op.issuer}/token`);
    assert.equal(disco.userinfo_endpoint, `${op.issuer}/me`);
    assert.deepEqual(disco.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post']);
    assert.ok(disco.id_token_signing_alg_values_supported.includes(alg));
    assert.deepEqual(disco.code_challenge_methods_supported, ['S256']);
    const jwks = await getJson(disco.jwks_uri);
    assert.ok(jwks.keys.every((k) => k.kid && !k.d), 'jwks must be public keys with kid');
    log('discovery ok', JSON.stringify(disco.id_token_signing_alg_values_supported), jwks.keys.map((k) => k.kid).join(','));

    assert.equal((await fetch(`${op.issuer}/__test/health`)).status, 200);
    let stats = await getJson(`${op.issuer}/__test/stats`);
    assert.deepEqual(allZero(stats), []);

    // -- PKCE is required: no code_challenge -> error redirect
    {
      const jar = new Jar();
      const res = await httpReq(jar, `${op.issuer}/auth?${new URLSearchParams({
        client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 's0',
      })}`);
      assert.equal(res.status, 303);
      const loc = new URL(res.headers.get('location'));
      assert.equal(loc.searchParams.get('error'), 'invalid_request', loc.href);
      log('pkce required ok:', loc.searchParams.get('error_description'));
      const res2 = await httpReq(jar, `${op.issuer}/auth?${new URLSearchParams({
        client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 's0', code_challenge: pkcePair().challenge, code_challenge_method: 'plain',
      })}`);
      const loc2 = new URL(res2.headers.get('location'));
      assert.equal(loc2.searchParams.get('error'), 'invalid_request', loc2.href);
      log('pkce plain rejected ok:', loc2.searchParams.get('error_description'));
    }

    // -- authorization code + PKCE
    const jar = new Jar();
    const { verifier, challenge } = pkcePair();
    const state = crypto.randomBytes(8).toString('hex');
    const nonce = crypto.randomBytes(8).toString('hex');
    const cb = await authorize(op, jar, {
      client_id: client.id,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'openid profile email offline_access',
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    assert.equal(cb.searchParams.get('state'), state);
    assert.equal(cb.searchParams.get('iss'), op.issuer);
    const code = cb.searchParams.get('code');
    assert.ok(code, cb.href);
    log('callback ok', cb.href.replace(code, '<code>'));
    log('cookies in jar:', [...jar.cookies.values()].map((c) => `${c.name}(path=${c.path})`).join(' '));

    // the other client auth method is rejected (OP_STRICT_CLIENT_AUTH) and leaves the code usable
    const otherMethod = authMethod === 'client_secret_post' ? 'client_secret_basic' : 'client_secret_post';
    const wrongMethod = await clientPost(disco.token_endpoint, { ...client, method: otherMethod }, {
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
    });
    assert.equal(wrongMethod.status, 401, JSON.stringify(wrongMethod.body));
    assert.equal(wrongMethod.body.error, 'invalid_client');
    log('wrong client auth method ->', JSON.stringify(wrongMethod.body));

    // wrong verifier -> invalid_grant (and the code is then burnt? no: PKCE check fails before consume)
    const bad = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: pkcePair().verifier,
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid_grant');

    const tok = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
    });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    assert.ok(tok.body.access_token && tok.body.refresh_token && tok.body.id_token, JSON.stringify(tok.body));
    assert.equal(tok.body.token_type, 'Bearer');
    assert.ok(!tok.body.access_token.includes('.'), 'a login without resources gets an opaque access token');
    assert.equal(tok.body.expires_in, Number(envOverrides.OP_ACCESS_TOKEN_TTL ?? 5));
    // offline_access is dropped by oidc-provider unless prompt=consent (see README)
    assert.deepEqual(tok.body.scope.split(' ').sort(), ['email', 'openid', 'profile']);
    const idt = verifyJwt(tok.body.id_token, jwks, alg);
    assert.equal(idt.iss, op.issuer);
    assert.equal(idt.aud, client.id);
    assert.equal(idt.sub, 'alice');
    assert.equal(idt.nonce, nonce);
    assert.equal(idt.exp - idt.iat, Number(envOverrides.OP_ID_TOKEN_TTL ?? 300));
    log('token ok; id_token claims:', JSON.stringify(idt));

    // -- userinfo
    const ui = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
    assert.equal(ui.status, 200);
    const uiBody = await ui.json();
    assert.deepEqual(uiBody, {
      sub: 'alice', email: 'alice@example.test', email_verified: true, name: 'Test alice', given_name: 'Test', family_name: 'alice', preferred_username: 'alice', roles: ['admin', 'user'],
    });
    log('userinfo ok', JSON.stringify(uiBody));

    // -- introspection by upstream
    const intro = await clientPost(disco.introspection_endpoint, upstream, { token: tok.body.access_token });
    assert.equal(intro.status, 200);
    assert.equal(intro.body.active, true, JSON.stringify(intro.body));
    assert.equal(intro.body.client_id, client.id);
    assert.equal(intro.body.sub, 'alice');
    log('introspection (upstream) ok', JSON.stringify(intro.body));
    const introBadAuth = await clientPost(disco.introspection_endpoint, { ...upstream, secret: 'nope' }, { token: tok.body.access_token });
    assert.equal(introBadAuth.status, 401);
    const introWrongMethod = await clientPost(disco.introspection_endpoint, { ...upstream, method: 'client_secret_post' }, { token: tok.body.access_token });
    assert.equal(introWrongMethod.status, 401);
    assert.equal(introWrongMethod.body.error, 'invalid_client');

    // -- refresh + rotation
    const ref = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token });
    assert.equal(ref.status, 200, JSON.stringify(ref.body));
    assert.ok(ref.body.refresh_token && ref.body.refresh_token !== tok.body.refresh_token, 'rotated refresh token');
    assert.ok(ref.body.id_token, 'id_token on refresh');
    assert.notEqual(ref.body.access_token, tok.body.access_token);
    const idt2 = verifyJwt(ref.body.id_token, jwks, alg);
    assert.equal(idt2.sub, 'alice');
    log('refresh ok (rotated, id_token present)');

    const reuse = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token });
    assert.equal(reuse.status, 400);
    assert.equal(reuse.body.error, 'invalid_grant');
    log('reuse of rotated refresh token ->', JSON.stringify(reuse.body));
    // reuse detection revokes the whole grant, so the new refresh token is dead too
    const afterReuse = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: ref.body.refresh_token });
    assert.equal(afterReuse.body.error, 'invalid_grant');
    log('new refresh token also revoked after reuse ->', JSON.stringify(afterReuse.body));

    // -- second login (session cookie present: no login form, consent again since grant was revoked)
    const p2 = pkcePair();
    const cb2 = await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid profile email offline_access', state: 'st2', code_challenge: p2.challenge, code_challenge_method: 'S256',
    });
    const tok2 = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code: cb2.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p2.verifier,
    });
    assert.equal(tok2.status, 200, JSON.stringify(tok2.body));
    assert.ok(tok2.body.refresh_token);

    // -- prompt=login drops offline_access from scope but a refresh token is still issued
    const p3 = pkcePair();
    const cb3 = await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid profile email offline_access', prompt: 'login', state: 'st3', code_challenge: p3.challenge, code_challenge_method: 'S256',
    }, 'bob');
    const tok3 = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code: cb3.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p3.verifier,
    });
    assert.equal(tok3.status, 200, JSON.stringify(tok3.body));
    assert.ok(tok3.body.refresh_token, 'refresh token issued with prompt=login');
    assert.equal(decodeJwt(tok3.body.id_token).payload.sub, 'bob');
    log('prompt=login: scope =', tok3.body.scope, '; refresh_token issued:', !!tok3.body.refresh_token);

    // -- prompt=consent keeps offline_access in the granted scope
    const p6 = pkcePair();
    const cb6 = await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid profile email offline_access', prompt: 'consent', state: 'st6', code_challenge: p6.challenge, code_challenge_method: 'S256',
    }, 'bob');
    const tok6 = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code: cb6.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p6.verifier,
    });
    assert.equal(tok6.status, 200, JSON.stringify(tok6.body));
    assert.deepEqual(tok6.body.scope.split(' ').sort(), ['email', 'offline_access', 'openid', 'profile']);
    assert.ok(tok6.body.refresh_token);
    log('prompt=consent: scope =', tok6.body.scope);

    // -- access token expiry -> introspection inactive
    const ttl = Number(envOverrides.OP_ACCESS_TOKEN_TTL ?? 5);
    await sleep((ttl + 1) * 1000);
    const intro2 = await clientPost(disco.introspection_endpoint, upstream, { token: tok2.body.access_token });
    assert.deepEqual(intro2.body, { active: false });
    log('introspection after expiry ->', JSON.stringify(intro2.body));

    // -- revocation of tok3's refresh token (by owner)
    const rev = await clientPost(disco.revocation_endpoint, client, { token: tok3.body.refresh_token, token_type_hint: 'refresh_token' });
    assert.equal(rev.status, 200);
    const afterRev = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: tok3.body.refresh_token });
    assert.equal(afterRev.body.error, 'invalid_grant');

    // -- revoke-all
    const ref2 = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: tok2.body.refresh_token });
    assert.equal(ref2.status, 200, JSON.stringify(ref2.body));
    const storeBefore = await getJson(`${op.issuer}/__test/store`);
    const ra = await (await fetch(`${op.issuer}/__test/revoke-all`, { method: 'POST' })).json();
    log('store before revoke-all', JSON.stringify(storeBefore), '\nrevoke-all ->', JSON.stringify(ra));
    const afterAll = await clientPost(disco.token_endpoint, client, { grant_type: 'refresh_token', refresh_token: ref2.body.refresh_token });
    assert.equal(afterAll.status, 400);
    assert.equal(afterAll.body.error, 'invalid_grant');
    const introAfterAll = await clientPost(disco.introspection_endpoint, upstream, { token: ref2.body.access_token });
    assert.deepEqual(introAfterAll.body, { active: false });
    log('refresh after revoke-all ->', JSON.stringify(afterAll.body));

    // -- RP-initiated logout (drive the confirmation form generically)
    const p4 = pkcePair();
    const cb4 = await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 'st4', code_challenge: p4.challenge, code_challenge_method: 'S256',
    }, 'bob');
    const tok4 = await clientPost(disco.token_endpoint, client, {
      grant_type: 'authorization_code', code: cb4.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p4.verifier,
    });
    assert.equal(tok4.status, 200);
    const postLogout = (envOverrides.OP_POST_LOGOUT_REDIRECT_URIS ?? 'http://127.0.0.1:8080/api/auth/logout-callback').split(',')[0];
    const es = await httpReq(jar, `${disco.end_session_endpoint}?${new URLSearchParams({ id_token_hint: tok4.body.id_token, post_logout_redirect_uri: postLogout, state: 'bye' })}`);
    assert.equal(es.status, 200);
    const esHtml = await es.text();
    const esForm = parseForm(esHtml);
    seenForms.logout = { ...esForm };
    const esPost = await httpReq(jar, new URL(esForm.action, disco.end_session_endpoint).href, { method: esForm.method, form: fillForm(esForm, {}) });
    if (esPost.status !== 303) assert.fail(`logout confirm -> ${esPost.status}: ${await esPost.text()}`);
    assert.equal(esPost.headers.get('location'), `${postLogout}?state=bye`);
    log('logout ok ->', esPost.headers.get('location'));
    // session gone: next authorize shows the login form again
    delete seenForms.login;
    const p5 = pkcePair();
    await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 'st5', code_challenge: p5.challenge, code_challenge_method: 'S256',
    }, 'carol');
    assert.ok(seenForms.login, 'login form shown after logout');

    // -- stats exact
    stats = await getJson(`${op.issuer}/__test/stats`);
    log('stats', JSON.stringify(stats));
    assert.equal(stats.authorization_code, 5); // tok, tok2, tok3, tok6, tok4
    assert.equal(stats.authorization_code_errors, 2); // wrong auth method, bad verifier
    assert.equal(stats.refresh_token, 2);
    assert.equal(stats.refresh_token_errors, 4); // reuse, afterReuse, afterRev, afterAll
    assert.equal(stats.introspections, 5); // intro, introBadAuth, introWrongMethod, intro2, introAfterAll
    assert.equal(stats.introspections_active, 1);
    assert.equal(stats.introspection_errors, 2);
    assert.equal(stats.revocations, 1);
    assert.equal(stats.revocation_errors, 0);
    assert.equal(stats.end_sessions, 1);
    // 2: the alice->bob account switch (prompt=login) auto-posts to /session/end/confirm too
    assert.equal(stats.end_session_success, 2);
    assert.equal(stats.userinfo, 1);
    const reset = await fetch(`${op.issuer}/__test/reset-stats`, { method: 'POST' });
    assert.equal(reset.status, 200);
    stats = await getJson(`${op.issuer}/__test/stats`);
    assert.deepEqual(allZero(stats), []);
    log('stats + reset ok');
  } catch (err) {
    log('--- OP stderr ---\n', op.stderr());
    throw err;
  } finally {
    await op.stop();
  }
}

async function keysFileScenario() {
  log('\n=== scenario keys-file restart');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'test-op-'));
  const file = path.join(dir, 'jwks.json');
  try {
    const op1 = await startOp({ OP_KEYS_FILE: file, OP_ID_TOKEN_ALG: 'ES256' });
    const k1 = await getJson(`${op1.issuer}/jwks`);
    await op1.stop();
    assert.ok(fs.existsSync(file));
    const op2 = await startOp({
      OP_KEYS_FILE: file, OP_ID_TOKEN_ALG: 'ES256', OP_PORT: String(op1.port),
    });
    assert.equal(op2.port, op1.port);
    const k2 = await getJson(`${op2.issuer}/jwks`);
    assert.deepEqual(k2, k1);
    await op2.stop();
    log('same port + same keys after restart ok', k1.keys.map((k) => `${k.kid}/${k.alg}`).join(','));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function stockRefreshScenario() {
  log('\n=== scenario OP_ALWAYS_ISSUE_REFRESH_TOKEN=0');
  const redirectUri = 'http://127.0.0.1:8080/api/auth/callback';
  const op = await startOp({ OP_ALWAYS_ISSUE_REFRESH_TOKEN: '0' });
  const client = { id: STACK.client_id, secret: STACK.client_secret, method: 'client_secret_basic' };
  try {
    const jar = new Jar();
    for (const [prompt, expectRt] of [[undefined, false], ['consent', true]]) {
      const p = pkcePair();
      const cb = await authorize(op, jar, {
        client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid offline_access', state: 'x', code_challenge: p.challenge, code_challenge_method: 'S256', ...(prompt ? { prompt } : {}),
      });
      const tok = await clientPost(`${op.issuer}/token`, client, {
        grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p.verifier,
      });
      assert.equal(tok.status, 200);
      assert.equal(!!tok.body.refresh_token, expectRt, `prompt=${prompt}`);
      log(`prompt=${prompt}: scope=${tok.body.scope} refresh_token=${!!tok.body.refresh_token}`);
    }
  } finally {
    await op.stop();
  }
}


// ---------------------------------------------------------------------------- issue 31
// Resource indicators (RFC 8707) at login and refresh, Auth0's audience, client credentials,
// token exchange (RFC 8693), the grant switches and counters, with the Rust harness's
// settings (OP_ALWAYS_ISSUE_REFRESH_TOKEN=0: a refresh token needs prompt=consent).
const ORDERS = 'https://orders.example/';
const BILLING = 'https://billing.example/';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

async function credentialsScenario() {
  log('\n=== scenario credentials (resources, client credentials, token exchange)');
  const redirectUri = 'http://127.0.0.1:8080/api/auth/callback';
  const op = await startOp({
    OP_ALWAYS_ISSUE_REFRESH_TOKEN: '0', OP_RESOURCE_TOKEN_TTL: '40', OP_CLIENT_CREDENTIALS_TTL: '50', OP_EXCHANGED_TOKEN_TTL: '2', OP_ACCESS_TOKEN_TTL: '30',
  });
  const client = { id: STACK.client_id, secret: STACK.client_secret, method: 'client_secret_basic' };
  const tokenEndpoint = `${op.issuer}/token`;
  const token = (params) => clientPost(tokenEndpoint, client, params);
  const jwks = await getJson(`${op.issuer}/jwks`);
  const stats = () => getJson(`${op.issuer}/__test/stats`);
  async function login(params, who = 'alice') {
    const jar = new Jar();
    const p = pkcePair();
    const { tokenParams = {}, ...authParams } = params;
    const cb = await authorize(op, jar, {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', state: 's', code_challenge: p.challenge, code_challenge_method: 'S256', prompt: 'consent', ...authParams,
    }, who);
    return token({
      grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p.verifier, ...tokenParams,
    });
  }
  // A JWT access token for `aud`: signed by the provider, typed at+jwt, with its lifetime.
  function resourceToken(answer, aud, ttl) {
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const { header } = decodeJwt(answer.body.access_token);
    assert.equal(header.typ, 'at+jwt');
    const claims = verifyJwt(answer.body.access_token, jwks, 'RS256');
    assert.deepEqual(claims.aud, aud);
    assert.equal(claims.iss, op.issuer);
    assert.equal(claims.exp - claims.iat, ttl);
    assert.equal(answer.body.expires_in, ttl);
    assert.equal(answer.body.token_type, 'Bearer');
    return claims;
  }
  try {
    const disco = await getJson(`${op.issuer}/.well-known/openid-configuration`);
    for (const gt of ['client_credentials', TOKEN_EXCHANGE]) assert.ok(disco.grant_types_supported.includes(gt), gt);

    // -- 1. login with two resources (and their scopes), sent on both requests
    const scope = 'openid profile offline_access orders:read billing:read billing:write';
    const tok = await login({ scope, resource: [ORDERS, BILLING], tokenParams: { resource: [ORDERS, BILLING] } });
    let claims = resourceToken(tok, ORDERS, 40);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.client_id, client.id);
    assert.equal(claims.scope, 'orders:read');
    assert.ok(tok.body.refresh_token && tok.body.id_token, JSON.stringify(tok.body));
    log('login with resources: access token for the first, scope', claims.scope, '; token scope', tok.body.scope);
    // the same login naming the resources at authorization only: the token is still the first's
    const tokAuthOnly = await login({ scope, resource: [ORDERS, BILLING] });
    resourceToken(tokAuthOnly, ORDERS, 40);

    // -- 2. refresh once per resource (each rotates the refresh token)
    const billing = await token({ grant_type: 'refresh_token', refresh_token: tok.body.refresh_token, resource: BILLING });
    claims = resourceToken(billing, BILLING, 40);
    assert.equal(claims.scope, 'billing:read billing:write');
    assert.ok(billing.body.refresh_token && billing.body.refresh_token !== tok.body.refresh_token, 'rotated');
    const orders = await token({
      grant_type: 'refresh_token', refresh_token: billing.body.refresh_token, resource: ORDERS, scope: 'orders:read',
    });
    claims = resourceToken(orders, ORDERS, 40);
    assert.equal(claims.scope, 'orders:read');
    assert.equal(orders.body.scope, 'orders:read');
    // without a resource: the login's first resource again
    const plain = await token({ grant_type: 'refresh_token', refresh_token: orders.body.refresh_token });
    resourceToken(plain, ORDERS, 40);
    // a resource the login did not name, a refused one, a scope of another resource
    const other = await token({ grant_type: 'refresh_token', refresh_token: plain.body.refresh_token, resource: 'https://other.example/' });
    assert.equal(other.status, 400);
    assert.equal(other.body.error, 'invalid_target', JSON.stringify(other.body));
    const refused = await token({ grant_type: 'refresh_token', refresh_token: plain.body.refresh_token, resource: 'https://refused.example/' });
    assert.equal(refused.body.error, 'invalid_target', JSON.stringify(refused.body));
    // the old refresh token is consumed: reusing it revokes the grant (reuse detection)
    const reuse = await token({ grant_type: 'refresh_token', refresh_token: tok.body.refresh_token, resource: ORDERS });
    assert.equal(reuse.body.error, 'invalid_grant');
    log('refresh per resource ok; reuse of a rotated one ->', JSON.stringify(reuse.body));

    // -- 3. a login without resources: opaque, userinfo works; a refresh naming a resource is refused
    const opaque = await login({ scope: 'openid profile offline_access' });
    assert.equal(opaque.status, 200);
    assert.ok(!opaque.body.access_token.includes('.'), 'opaque');
    assert.equal((await fetch(`${op.issuer}/me`, { headers: { authorization: `Bearer ${opaque.body.access_token}` } })).status, 200);
    const notNamed = await token({ grant_type: 'refresh_token', refresh_token: opaque.body.refresh_token, resource: ORDERS });
    assert.equal(notNamed.body.error, 'invalid_target', JSON.stringify(notNamed.body));

    // -- 4. Auth0's audience: a resource URL stands for resource; another value is ignored
    const aud = await login({ scope: 'openid offline_access orders:write', audience: ORDERS, tokenParams: { audience: ORDERS } });
    claims = resourceToken(aud, ORDERS, 40);
    assert.equal(claims.scope, 'orders:write');
    const audRefresh = await token({ grant_type: 'refresh_token', refresh_token: aud.body.refresh_token, audience: ORDERS });
    resourceToken(audRefresh, ORDERS, 40);
    const named = await login({ scope: 'openid', audience: 'orders-api', tokenParams: { audience: 'orders-api' } });
    assert.equal(named.status, 200, JSON.stringify(named.body));
    assert.ok(!named.body.access_token.includes('.'), 'a non-URL audience is ignored');
    log('audience ok');

    // -- 5. client credentials
    const ccPlain = await token({ grant_type: 'client_credentials' });
    assert.equal(ccPlain.status, 200, JSON.stringify(ccPlain.body));
    assert.equal(ccPlain.body.expires_in, 50);
    const cc = await token({ grant_type: 'client_credentials', resource: ORDERS, scope: 'orders:read orders:write billing:read' });
    claims = resourceToken(cc, ORDERS, 50);
    assert.equal(claims.sub, client.id);
    assert.equal(claims.client_id, client.id);
    assert.equal(claims.scope, 'orders:read orders:write');
    const ccAud = await token({ grant_type: 'client_credentials', audience: BILLING, scope: 'billing:read' });
    assert.equal(resourceToken(ccAud, BILLING, 50).scope, 'billing:read');
    const ccRefused = await token({ grant_type: 'client_credentials', resource: 'https://refused.example/' });
    assert.equal(ccRefused.body.error, 'invalid_target');
    const portal = await clientPost(tokenEndpoint, { id: 'portal', secret: 'portal-secret-long-enough-for-hs256-keys', method: 'client_secret_basic' }, { grant_type: 'client_credentials' });
    assert.equal(portal.body.error, 'invalid_request', JSON.stringify(portal.body));
    log('client credentials ok');

    // -- 6. token exchange
    const exchange = (params) => token({
      grant_type: TOKEN_EXCHANGE, subject_token: opaque.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE, ...params,
    });
    const ex = await exchange({ audience: 'orders-api', scope: 'orders:read profile' });
    assert.equal(ex.status, 200, JSON.stringify(ex.body));
    assert.deepEqual(Object.keys(ex.body).sort(), ['access_token', 'expires_in', 'issued_token_type', 'scope', 'token_type']);
    assert.equal(ex.body.issued_token_type, ACCESS_TOKEN_TYPE);
    claims = resourceToken(ex, 'orders-api', 2);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.client_id, client.id);
    assert.equal(claims.scope, 'orders:read');
    assert.equal(ex.body.scope, 'orders:read');
    resourceToken(await exchange({ resource: ORDERS }), ORDERS, 2);
    resourceToken(await exchange({ audience: 'orders-api', resource: ORDERS }), ['orders-api', ORDERS], 2);
    // no target: a token for the client itself, scopes from the subject token's
    assert.equal(resourceToken(await exchange({}), client.id, 2).scope, undefined);
    const exNoTarget = await exchange({ scope: 'profile orders:read' });
    assert.equal(resourceToken(exNoTarget, client.id, 2).scope, 'profile');
    // a JWT subject token (the login's resource token) works too
    const exJwt = await token({
      grant_type: TOKEN_EXCHANGE, subject_token: aud.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'billing-api',
    });
    assert.equal(resourceToken(exJwt, 'billing-api', 2).sub, 'alice');
    for (const [params, status, error] of [
      [{ audience: 'refused-api' }, 400, 'invalid_target'],
      [{ resource: 'https://refused.example/' }, 400, 'invalid_target'],
      [{ resource: 'not a url' }, 400, 'invalid_target'],
      [{ audience: ['a-api', 'b-api'] }, 400, 'invalid_target'],
      [{ audience: 'orders-api', scope: 'billing:read' }, 400, 'invalid_scope'],
      [{ subject_token: 'nope' }, 400, 'invalid_grant'],
      [{ subject_token: `${aud.body.access_token.slice(0, -4)}AAAA` }, 400, 'invalid_grant'],
      [{ subject_token: ccPlain.body.access_token }, 400, 'invalid_grant'],
      [{ subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, 400, 'invalid_request'],
      [{ requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, 400, 'invalid_request'],
    ]) {
      const answer = await exchange(params);
      assert.equal(answer.status, status, `${JSON.stringify(params)} -> ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, error, `${JSON.stringify(params)} -> ${JSON.stringify(answer.body)}`);
    }
    const wrongSecret = await clientPost(tokenEndpoint, { ...client, secret: 'nope' }, {
      grant_type: TOKEN_EXCHANGE, subject_token: opaque.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE,
    });
    assert.equal(wrongSecret.status, 401);
    // an exchanged token expires with OP_EXCHANGED_TOKEN_TTL; then it is no subject token
    await sleep(3000);
    const expired = await token({ grant_type: TOKEN_EXCHANGE, subject_token: ex.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE });
    assert.equal(expired.body.error, 'invalid_grant', JSON.stringify(expired.body));
    // a revoked subject token
    await fetch(`${op.issuer}/__test/revoke-access-tokens`, { method: 'POST' });
    const revoked = await exchange({ audience: 'orders-api' });
    assert.equal(revoked.body.error, 'invalid_grant', JSON.stringify(revoked.body));
    log('token exchange ok');

    // -- 7. switches: the next two exchanges fail with 503, then they work again; a delay
    const opaque2 = await login({ scope: 'openid offline_access' });
    const exchange2 = () => token({
      grant_type: TOKEN_EXCHANGE, subject_token: opaque2.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'orders-api',
    });
    const set = await (await fetch(`${op.issuer}/__test/grant-error`, {
      method: 'POST', body: JSON.stringify({ grant_type: TOKEN_EXCHANGE, error: 'temporarily_unavailable', error_description: 'down', status: 503, count: 2 }),
    })).json();
    assert.equal(set.count, 2);
    for (let i = 0; i < 2; i += 1) {
      const answer = await exchange2();
      assert.equal(answer.status, 503);
      assert.deepEqual(answer.body, { error: 'temporarily_unavailable', error_description: 'down' });
    }
    assert.equal((await exchange2()).status, 200);
    await fetch(`${op.issuer}/__test/grant-error`, { method: 'POST', body: JSON.stringify({ grant_type: 'client_credentials', error: 'invalid_client' }) });
    assert.equal((await token({ grant_type: 'client_credentials' })).body.error, 'invalid_client');
    assert.equal((await token({ grant_type: 'client_credentials' })).status, 200);
    await fetch(`${op.issuer}/__test/grant-delay?grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&ms=400`, { method: 'POST' });
    const started = Date.now();
    assert.equal((await exchange2()).status, 200);
    assert.ok(Date.now() - started >= 400, 'delayed');
    await fetch(`${op.issuer}/__test/grant-delay?grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&ms=0`, { method: 'POST' });

    // -- 8. counters and records
    const s = await stats();
    log('stats', JSON.stringify({ ...s, token_requests: s.token_requests.length, authorization_requests: s.authorization_requests.length }));
    assert.equal(s.refresh_token, 4); // billing, orders, plain, audRefresh
    assert.equal(s.refresh_token_with_resource, 3); // billing, orders, audRefresh (audience -> resource)
    assert.deepEqual(s.refresh_token_by_resource, { [BILLING]: 1, [ORDERS]: 2, '': 1 });
    assert.equal(s.refresh_token_errors, 4); // other, refused, reuse, notNamed
    assert.equal(s.client_credentials, 4); // ccPlain, cc, ccAud, after the switch
    assert.equal(s.client_credentials_errors, 3); // ccRefused, portal, the switch
    assert.deepEqual(s.client_credentials_by_target, { '': 2, [ORDERS]: 1, [BILLING]: 1 });
    assert.equal(s.token_exchange, 8); // ex, resource, both, two without target, exJwt, after the switch, delayed
    assert.equal(s.token_exchange_at.length, 8);
    assert.equal(s.token_exchange_errors, 15); // 10 refusals, wrong secret, expired, revoked, 2 switched
    assert.deepEqual(s.token_exchange_by_target, {
      'orders-api': 3, [ORDERS]: 1, [`orders-api ${ORDERS}`]: 1, [client.id]: 2, 'billing-api': 1,
    });
    const first = s.token_requests.find((r) => r.grant_type === 'authorization_code');
    assert.deepEqual(first, {
      client_id: client.id, grant_type: 'authorization_code', scope: null, requested_token_type: null, subject_token_type: null, resource: [ORDERS, BILLING], audience: [], has_subject_token: false,
    });
    assert.ok(s.token_requests.some((r) => r.grant_type === TOKEN_EXCHANGE && r.audience[0] === 'orders-api' && r.has_subject_token));
    assert.ok(!JSON.stringify(s).includes(opaque.body.access_token), 'no token in the stats');
    const { params, ...request } = s.authorization_requests[0];
    assert.deepEqual(request, {
      resource: [ORDERS, BILLING], audience: [], scope, prompt: 'consent',
    });
    // the request's own parameters, as the provider received them (provider profiles)
    assert.equal(params.scope, scope);
    assert.equal(params.prompt, 'consent');
    assert.equal(params.client_id, client.id);
    // every JWT access token issued is listed with the secrets
    const { issued } = await getJson(`${op.issuer}/__test/secrets`);
    for (const value of [tok.body.access_token, cc.body.access_token, ex.body.access_token]) assert.ok(issued.includes(value));
    log('counters ok');
  } catch (err) {
    log('--- OP stderr ---\n', op.stderr());
    throw err;
  } finally {
    await op.stop();
  }
}

// ---------------------------------------------------------------------------- issue 33
// DPoP on the token exchange (OP_DPOP=nonce): a request with a valid proof gets a token bound
// to its key (token_type DPoP, cnf.jkt in the JWT and at introspection) after one nonce
// challenge; without a proof a Bearer token (no cnf); a replayed or forged proof is refused.
function dpopKeyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const jwk = { kty, crv, x, y };
  const thumbprint = crypto.hash('sha256', JSON.stringify({ crv, kty, x, y }), 'base64url');
  return { privateKey, jwk, thumbprint };
}

function dpopProof({ privateKey, jwk }, htu, nonce) {
  const header = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk })).toString('base64url');
  const claims = Buffer.from(JSON.stringify({
    htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID(), ...(nonce ? { nonce } : {}),
  })).toString('base64url');
  const signature = crypto.sign('sha256', Buffer.from(`${header}.${claims}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${claims}.${signature.toString('base64url')}`;
}

async function dpopExchangeScenario() {
  log('\n=== scenario OP_DPOP=nonce: DPoP on the token exchange');
  const redirectUri = 'http://127.0.0.1:8080/api/auth/callback';
  const op = await startOp({ OP_DPOP: 'nonce' });
  const client = { id: STACK.client_id, secret: STACK.client_secret, method: 'client_secret_basic' };
  const tokenEndpoint = `${op.issuer}/token`;
  // A token-endpoint POST with an optional DPoP proof: status, body and the DPoP-Nonce header.
  async function post(params, proof) {
    const res = await httpReq(null, tokenEndpoint, {
      method: 'POST', form: new URLSearchParams(params), headers: { accept: 'application/json', authorization: basic(client.id, client.secret), ...(proof ? { dpop: proof } : {}) },
    });
    return { status: res.status, body: await res.json(), nonce: res.headers.get('dpop-nonce') };
  }
  const introspect = (token) => clientPost(`${op.issuer}/token/introspection`, { id: STACK.upstream_client_id, secret: STACK.upstream_client_secret, method: 'client_secret_basic' }, { token });
  try {
    const p = pkcePair();
    const cb = await authorize(op, new Jar(), {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 's', code_challenge: p.challenge, code_challenge_method: 'S256',
    });
    const login = await post({ grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p.verifier });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const exchange = { grant_type: TOKEN_EXCHANGE, subject_token: login.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE, audience: 'orders-api' };
    const key = dpopKeyPair();

    // A proof without the server's nonce: challenged like the stock grants, then bound.
    const challenged = await post(exchange, dpopProof(key, tokenEndpoint));
    assert.equal(challenged.status, 400, JSON.stringify(challenged.body));
    assert.equal(challenged.body.error, 'use_dpop_nonce');
    assert.ok(challenged.nonce);
    const proof = dpopProof(key, tokenEndpoint, challenged.nonce);
    const bound = await post(exchange, proof);
    assert.equal(bound.status, 200, JSON.stringify(bound.body));
    assert.equal(bound.body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(bound.body.access_token).payload.cnf, { jkt: key.thumbprint });
    let seen = await introspect(bound.body.access_token);
    assert.equal(seen.body.active, true, JSON.stringify(seen.body));
    assert.equal(seen.body.token_type, 'DPoP');
    assert.equal(seen.body.aud, 'orders-api');
    assert.equal(seen.body.sub, 'alice');
    assert.deepEqual(seen.body.cnf, { jkt: key.thumbprint });

    // The same proof again: a replay.
    const replayed = await post(exchange, proof);
    assert.equal(replayed.status, 400, JSON.stringify(replayed.body));
    assert.equal(replayed.body.error, 'invalid_grant');
    // Another key's signature under this key's header: forged.
    const other = dpopProof(dpopKeyPair(), tokenEndpoint, challenged.nonce).split('.');
    const forged = [proof.split('.')[0], other[1], other[2]].join('.');
    const refused = await post(exchange, forged);
    assert.equal(refused.body.error, 'invalid_dpop_proof', JSON.stringify(refused.body));

    // Without a proof: a Bearer token, no cnf.
    const plain = await post(exchange);
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.token_type, 'Bearer');
    assert.equal(decodeJwt(plain.body.access_token).payload.cnf, undefined);
    seen = await introspect(plain.body.access_token);
    assert.equal(seen.body.active, true, JSON.stringify(seen.body));
    assert.equal(seen.body.token_type, 'Bearer');
    assert.equal(seen.body.cnf, undefined);
    // Introspection answers only the upstream API and the token's own client.
    const portal = await clientPost(`${op.issuer}/token/introspection`, { id: 'portal', secret: 'portal-secret-long-enough-for-hs256-keys', method: 'client_secret_basic' }, { token: plain.body.access_token });
    assert.notEqual(portal.body.active, true, JSON.stringify(portal.body));
    log('dpop exchange ok');
  } finally {
    await op.stop();
  }
}

// OP_ROTATE_REFRESH_TOKEN=0: a refresh answers the same refresh token, which stays valid.
async function noRotationScenario() {
  log('\n=== scenario OP_ROTATE_REFRESH_TOKEN=0');
  const redirectUri = 'http://127.0.0.1:8080/api/auth/callback';
  const op = await startOp({ OP_ROTATE_REFRESH_TOKEN: '0' });
  const client = { id: STACK.client_id, secret: STACK.client_secret, method: 'client_secret_basic' };
  try {
    const p = pkcePair();
    const cb = await authorize(op, new Jar(), {
      client_id: client.id, redirect_uri: redirectUri, response_type: 'code', scope: 'openid orders:read billing:read', resource: [ORDERS, BILLING], state: 'x', code_challenge: p.challenge, code_challenge_method: 'S256',
    });
    const tok = await clientPost(`${op.issuer}/token`, client, {
      grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: p.verifier,
    });
    for (const resource of [BILLING, ORDERS, BILLING]) {
      const answer = await clientPost(`${op.issuer}/token`, client, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token, resource });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.refresh_token, tok.body.refresh_token);
      assert.equal(decodeJwt(answer.body.access_token).payload.aud, resource);
    }
    log('no rotation ok');
  } finally {
    await op.stop();
  }
}

// `node selftest.mjs [name …]` runs only the named scenarios (default: all).
const SCENARIOS = {
  defaults: async () => {
    await scenario('defaults');
    log('forms seen:', JSON.stringify(seenForms, null, 2));
  },
  es256: () => scenario('ES256 + client_secret_post', { OP_ID_TOKEN_ALG: 'ES256', OP_TOKEN_AUTH_METHOD: 'client_secret_post' }),
  ps256: () => scenario('PS256 + custom ttl + post-logout uri', {
    OP_ID_TOKEN_ALG: 'PS256', OP_ACCESS_TOKEN_TTL: '3', OP_ID_TOKEN_TTL: '120', OP_POST_LOGOUT_REDIRECT_URIS: 'http://127.0.0.1:8080/logged-out,http://127.0.0.1:8080/',
  }),
  'keys-file': keysFileScenario,
  'stock-refresh': stockRefreshScenario,
  credentials: credentialsScenario,
  'no-rotation': noRotationScenario,
  'dpop-exchange': dpopExchangeScenario,
};
const chosen = process.argv.slice(2);
for (const name of chosen) assert.ok(SCENARIOS[name], `no scenario ${name}; there are ${Object.keys(SCENARIOS).join(', ')}`);
for (const [name, run] of Object.entries(SCENARIOS)) {
  if (chosen.length === 0 || chosen.includes(name)) await run();
}
log('\nALL OK');
