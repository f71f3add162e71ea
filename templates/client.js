/*
 * Vestibule browser helper — served at /api/auth/client.js, no dependencies.
 *
 *   <script src="/api/auth/client.js"></script>
 *   const me = await vestibule.user();            // claims object, or null when logged out
 *   const res = await vestibule.fetch('/api/orders/42');   // X-CSRF added; 401 → login
 *   await vestibule.logout();                     // ends the session, then the provider's
 *   const mine = await vestibule.sessions();      // [{id, device, network, created_at, …}]
 *   await vestibule.endSession(id);               // ends one of them (refresh token revoked)
 *   await vestibule.endOtherSessions();           // ends all but this one
 *
 * The session lives in an HttpOnly cookie this script cannot read; that is the point.
 */
(function (global) {
  'use strict';

  var CSRF_HEADER = 'X-CSRF';

  function withCsrf(init) {
    var options = Object.assign({ credentials: 'same-origin' }, init || {});
    var headers = new Headers(options.headers || {});
    headers.set(CSRF_HEADER, '1');
    options.headers = headers;
    return options;
  }

  function currentPath() {
    return global.location.pathname + global.location.search + global.location.hash;
  }

  /** Navigates to the login endpoint, coming back to `returnTo` (default: this page). */
  function login(returnTo, loginUrl) {
    var target = (loginUrl || '/api/auth/login') +
      '?returnTo=' + encodeURIComponent(returnTo || currentPath());
    global.location.assign(target);
    // The page is going away; never settle, so callers do not act on a stale state.
    return new Promise(function () {});
  }

  /**
   * `fetch` with the anti-forgery header. A 401 (no or expired session) navigates to the
   * login, keeping the current path as returnTo; every other response is returned as is.
   */
  function vestibuleFetch(input, init) {
    return global.fetch(input, withCsrf(init)).then(function (response) {
      if (response.status !== 401) return response;
      return response.json().catch(function () { return {}; }).then(function (body) {
        return login(currentPath(), body && body.login_url);
      });
    });
  }

  /** The logged-in user (`{sub, claims, session, logout_url}`), or null when logged out. */
  function user() {
    return global.fetch('/api/auth/user', withCsrf()).then(function (response) {
      if (response.status === 401) return null;
      if (!response.ok) throw new Error('GET /api/auth/user answered ' + response.status);
      return response.json();
    });
  }

  /** Ends the session, then goes to the provider's end-session page (or `/`). */
  function logout() {
    return global.fetch('/api/auth/logout', withCsrf({ method: 'POST' }))
      .then(function (response) {
        if (!response.ok) throw new Error('POST /api/auth/logout answered ' + response.status);
        return response.json();
      })
      .then(function (body) {
        global.location.assign((body && body.end_session_url) || '/');
        return new Promise(function () {});
      });
  }

  /** This user's sessions (`[{id, created_at, last_seen_at, device, network, current}]`). */
  function sessions() {
    return global.fetch('/api/auth/sessions', withCsrf()).then(function (response) {
      if (!response.ok) throw new Error('GET /api/auth/sessions answered ' + response.status);
      return response.json();
    }).then(function (body) { return body.sessions; });
  }

  /** Ends one of this user's sessions by its id (from `sessions()`). */
  function endSession(id) {
    var path = '/api/auth/sessions/' + encodeURIComponent(id);
    return global.fetch(path, withCsrf({ method: 'DELETE' })).then(function (response) {
      if (!response.ok) throw new Error('DELETE ' + path + ' answered ' + response.status);
    });
  }

  /** Ends every session of this user but this one; resolves to how many ended. */
  function endOtherSessions() {
    return global.fetch('/api/auth/sessions', withCsrf({ method: 'DELETE' })).then(function (response) {
      if (!response.ok) throw new Error('DELETE /api/auth/sessions answered ' + response.status);
      return response.json();
    }).then(function (body) { return body.ended; });
  }

  global.vestibule = Object.freeze({
    fetch: vestibuleFetch, user: user, login: login, logout: logout,
    sessions: sessions, endSession: endSession, endOtherSessions: endOtherSessions,
  });
})(window);
