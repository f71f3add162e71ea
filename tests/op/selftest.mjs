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
  let url = `${op.issuer}/auth?${new URLSearchParams(params)}`;
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
  const form = { ...params };
  const headers = { accept: 'application/json' };
  if (method === 'client_secret_post') {
    form.client_id = id;
    form.client_secret = secret;
  } else {
    headers.authorization = basic(id, secret);
  }
  const res = await httpReq(null, url, { method: 'POST', form, headers });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
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
    assert.ok(Object.values(stats).every((v) => v === 0));

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
      sub: 'alice', email: 'alice@example.test', email_verified: true, name: 'Test alice', given_name: 'Test', family_name: 'alice', preferred_username: 'alice',
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
    const postLogout = (envOverrides.OP_POST_LOGOUT_REDIRECT_URIS ?? 'http://127.0.0.1:8080/').split(',')[0];
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
    assert.ok(Object.values(stats).every((v) => v === 0));
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

await scenario('defaults');
log('forms seen:', JSON.stringify(seenForms, null, 2));
await scenario('ES256 + client_secret_post', { OP_ID_TOKEN_ALG: 'ES256', OP_TOKEN_AUTH_METHOD: 'client_secret_post' });
await scenario('PS256 + custom ttl + post-logout uri', {
  OP_ID_TOKEN_ALG: 'PS256', OP_ACCESS_TOKEN_TTL: '3', OP_ID_TOKEN_TTL: '120', OP_POST_LOGOUT_REDIRECT_URIS: 'http://127.0.0.1:8080/logged-out,http://127.0.0.1:8080/',
});
await keysFileScenario();
await stockRefreshScenario();
log('\nALL OK');
