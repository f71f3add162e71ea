/*
 * Vestibule browser helper — served at /api/auth/client.js, no dependencies; its TypeScript
 * declarations at /api/auth/client.d.ts.
 *
 *   <script src="/api/auth/client.js"></script>
 *   const me = await vestibule.user();            // claims object, or null when logged out
 *   const res = await vestibule.fetch('/api/orders/42');   // X-CSRF added; 401 → login
 *   await vestibule.logout();                     // ends the session, then the provider's
 *   const mine = await vestibule.sessions();      // [{id, device, network, created_at, …}]
 *   await vestibule.endSession(id);               // ends one of them (refresh token revoked)
 *   await vestibule.endOtherSessions();           // ends all but this one
 *   const stop = vestibule.onExpiring(60, (w) => …);  // a minute before the session ends
 *   vestibule.login(undefined, null, {prompt: 'none'});  // a silent check at the provider, then:
 *   const silent = vestibule.silentLoginResult();  // 'login_required' (…) once back, or null
 *
 * What `vestibule.fetch` does with Vestibule's answers (compatible with earlier versions: every
 * answer but a 401 still resolves to the Response, untouched and unread):
 *   401 {"error": "step_up_required", "login_url"}  → navigates to that login_url (the route
 *       wants a stronger or fresher login: its acr_values and max_age are in it), returnTo =
 *       this page. With the option {rejectStepUp: true} it rejects with a VestibuleError
 *       (code 'step_up_required', .loginUrl) instead, for an SPA that asks the user first.
 *   any other 401                                   → navigates to the login, as always.
 *   403 {"error": "insufficient_permissions", "route"} → no navigation (logging in again would
 *       not help). The promise resolves to the Response as before; in addition
 *       vestibule.insufficientPermissions(response) returns {code, status, route, message} for
 *       it (null for any other answer), every onInsufficientPermissions(callback) is called,
 *       and with the option {rejectInsufficientPermissions: true} the promise rejects with a
 *       VestibuleError (code 'insufficient_permissions', .status 403, .route) instead.
 * A login_url is followed only when it is this origin's /api/auth/login (an upstream's answer
 * passes through Vestibule and must not send the browser elsewhere); otherwise the plain login.
 *
 * The session lives in an HttpOnly cookie this script cannot read; that is the point.
 */
(function (global) {
  'use strict';

  var CSRF_HEADER = 'X-CSRF';
  var LOGIN_PATH = '/api/auth/login';
  var USER_PATH = '/api/auth/user';
  // The query parameter with which Vestibule reports a declined silent check on returnTo.
  var SILENT_LOGIN_MARKER = 'vestibule_login';
  var SILENT_LOGIN_RESULTS = ['login_required', 'interaction_required', 'consent_required', 'account_selection_required'];
  // setTimeout's longest delay (2^31 - 1 ms); a longer wait is taken in steps.
  var LONGEST_TIMER_MS = 2147483647;

  /** An answer of Vestibule's the SPA has to act on (see the options of `fetch`). */
  class VestibuleError extends Error {
    constructor(code, message, details) {
      super(message);
      this.name = 'VestibuleError';
      this.code = code;
      this.status = details.status;
      this.route = details.route || null;
      this.loginUrl = details.loginUrl || null;
      this.response = details.response || null;
    }
  }

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

  /** `url` with `params` ([name, value] pairs; empty values left out) added to its query. */
  function withQuery(url, params) {
    var pairs = params
      .filter(function (pair) { return pair[1] !== undefined && pair[1] !== null && pair[1] !== ''; })
      .map(function (pair) { return encodeURIComponent(pair[0]) + '=' + encodeURIComponent(String(pair[1])); });
    if (pairs.length === 0) return url;
    var hashAt = url.indexOf('#');
    var hash = hashAt < 0 ? '' : url.slice(hashAt);
    var base = hashAt < 0 ? url : url.slice(0, hashAt);
    var separator = base.indexOf('?') < 0 ? '?' : (/[?&]$/.test(base) ? '' : '&');
    return base + separator + pairs.join('&') + hash;
  }

  /** `candidate` when it is this origin's login endpoint (any query), else the plain one. */
  function trustedLoginUrl(candidate) {
    if (typeof candidate !== 'string' || candidate === '') return LOGIN_PATH;
    try {
      var url = new URL(candidate, global.location.href);
      if (url.origin === global.location.origin && url.pathname === LOGIN_PATH) {
        return url.pathname + url.search;
      }
    } catch (ignored) { /* not a URL */ }
    return LOGIN_PATH;
  }

  function acrString(acrValues) {
    return Array.isArray(acrValues) ? acrValues.join(' ') : acrValues;
  }

  /**
   * Navigates to the login endpoint (or `loginUrl`, e.g. a step-up answer's), coming back to
   * `returnTo` (default: this page). `options`: `prompt` ('none' asks the provider for a
   * silent check), `acrValues`, `maxAge` (seconds), sent on to the provider.
   */
  function login(returnTo, loginUrl, options) {
    var extra = options || {};
    global.location.assign(withQuery(trustedLoginUrl(loginUrl), [
      ['returnTo', returnTo || currentPath()],
      ['acr_values', acrString(extra.acrValues)],
      ['max_age', extra.maxAge],
      ['prompt', extra.prompt],
    ]));
    // The page is going away; never settle, so callers do not act on a stale state.
    return new Promise(function () {});
  }

  /** Logs in again with a stronger or fresher authentication (`{acrValues, maxAge, returnTo}`). */
  function stepUp(options) {
    var wanted = options || {};
    return login(wanted.returnTo, LOGIN_PATH, { acrValues: wanted.acrValues, maxAge: wanted.maxAge });
  }

  /**
   * How a silent check (`login(…, {prompt: 'none'})`) ended, read once from this page's URL:
   * the provider's answer ('login_required', 'interaction_required', 'consent_required',
   * 'account_selection_required') when it could not sign the user in without a page, or null
   * (no silent check came back here, or it signed the user in). The `vestibule_login` query
   * parameter Vestibule added is removed from the address bar (history.replaceState).
   */
  function silentLoginResult() {
    var url = new URL(global.location.href);
    var result = url.searchParams.get(SILENT_LOGIN_MARKER);
    if (result === null) return null;
    url.searchParams.delete(SILENT_LOGIN_MARKER);
    global.history.replaceState(global.history.state, '', url.pathname + url.search + url.hash);
    return SILENT_LOGIN_RESULTS.indexOf(result) === -1 ? null : result;
  }

  function isJson(response) {
    return /^application\/([\w.+-]*\+)?json/i.test(response.headers.get('Content-Type') || '');
  }

  function readJson(response) {
    if (!isJson(response)) return Promise.resolve(null);
    return response.clone().json().catch(function () { return null; });
  }

  function isSameOrigin(response) {
    try {
      return new URL(response.url, global.location.href).origin === global.location.origin;
    } catch (ignored) {
      return false;
    }
  }

  // What fetch learnt about the 403s it returned, kept beside them (the body stays unread).
  var refusals = new WeakMap();
  var refusalListeners = [];

  /** `{code, status, route, message}` when `response` (from `fetch`) is such a refusal, else null. */
  function insufficientPermissions(response) {
    return refusals.get(response) || null;
  }

  /** Calls `callback(refusal, response)` for every such 403 `fetch` returns; returns an unsubscribe. */
  function onInsufficientPermissions(callback) {
    if (typeof callback !== 'function') throw new TypeError('onInsufficientPermissions needs a function');
    var entry = { callback: callback };
    refusalListeners.push(entry);
    return function () { refusalListeners = refusalListeners.filter(function (e) { return e !== entry; }); };
  }

  function callEach(entries, argumentsList) {
    entries.slice().forEach(function (entry) {
      try {
        entry.callback.apply(null, argumentsList);
      } catch (error) {
        // One listener's mistake must not break the call or the other listeners.
        setTimeout(function () { throw error; });
      }
    });
  }

  function answerUnauthorized(response, options) {
    return readJson(response).then(function (body) {
      if (body && body.error === 'step_up_required' && typeof body.login_url === 'string') {
        if (options.rejectStepUp) {
          throw new VestibuleError('step_up_required', body.message || 'this call needs a stronger login', {
            status: 401, loginUrl: trustedLoginUrl(body.login_url), response: response,
          });
        }
        return login(currentPath(), body.login_url);
      }
      expiry.forget();
      return login(currentPath(), body && body.login_url);
    });
  }

  function answerForbidden(response, options) {
    return readJson(response).then(function (body) {
      if (!body || body.error !== 'insufficient_permissions') return response;
      var refusal = {
        code: 'insufficient_permissions',
        status: 403,
        route: typeof body.route === 'string' ? body.route : null,
        message: typeof body.message === 'string' ? body.message : null,
      };
      refusals.set(response, refusal);
      callEach(refusalListeners, [refusal, response]);
      if (options.rejectInsufficientPermissions) {
        throw new VestibuleError('insufficient_permissions', refusal.message || 'not permitted', {
          status: 403, route: refusal.route, response: response,
        });
      }
      return response;
    });
  }

  /**
   * `fetch` with the anti-forgery header. A 401 navigates to the login (a step-up answer to
   * its login_url), keeping the current path as returnTo; every other response is returned as
   * is. `options`: `{rejectStepUp, rejectInsufficientPermissions}` (see the top of this file).
   */
  function vestibuleFetch(input, init, options) {
    var settings = options || {};
    var sentAt = Date.now();
    return global.fetch(input, withCsrf(init)).then(function (response) {
      if (response.status === 401) return answerUnauthorized(response, settings);
      // An answer through Vestibule counts as use of the session: the idle deadline moved.
      if (isSameOrigin(response)) expiry.used(sentAt);
      if (response.status === 403) return answerForbidden(response, settings);
      return response;
    });
  }

  /** The logged-in user (`{sub, claims, session, logout_url}`), or null when logged out. */
  function user() {
    var sentAt = Date.now();
    return global.fetch(USER_PATH, withCsrf()).then(function (response) {
      if (response.status === 401) {
        expiry.forget();
        return null;
      }
      if (!response.ok) throw new Error('GET /api/auth/user answered ' + response.status);
      var receivedAt = Date.now();
      return response.json().then(function (body) {
        expiry.learn(body && body.session, response.headers.get('Date'), sentAt, receivedAt);
        return body;
      });
    });
  }

  /*
   * Session deadlines, as the server's clock reads them: `/api/auth/user` reports them in unix
   * seconds; the browser's clock may be off by any amount, so it is corrected by the `Date` of
   * that answer (whole seconds: taken as its middle, at the middle of the round trip). The
   * idle timeout is read off the same answer (the call itself pushed the idle deadline back);
   * a later call through `fetch` moves the estimate, less the interval at which Vestibule may
   * defer pushing it back (a tenth of the idle timeout, 1–60 s), so a warning is never late.
   * Warnings run on one timer set for the next one due; nothing polls.
   */
  var expiry = (function () {
    var known = null; // {absoluteAt, idleAt, idleTimeout} in server seconds
    var skewMs = 0; // server clock - browser clock
    var listeners = [];
    var timer = null;
    var asking = null;
    var watchingVisibility = false;

    function serverNow() {
      return (Date.now() + skewMs) / 1000;
    }

    function learn(session, dateHeader, sentAt, receivedAt) {
      if (!session || typeof session.expires_at !== 'number' || typeof session.idle_expires_at !== 'number') return;
      var date = Date.parse(dateHeader || '');
      if (!isNaN(date)) skewMs = date + 500 - (sentAt + receivedAt) / 2;
      var answeredAt = (receivedAt + skewMs) / 1000;
      var idleTimeout = known ? known.idleTimeout : null;
      if (session.idle_expires_at < session.expires_at) {
        idleTimeout = Math.max(1, Math.round(session.idle_expires_at - answeredAt));
      }
      known = { absoluteAt: session.expires_at, idleAt: session.idle_expires_at, idleTimeout: idleTimeout };
      schedule();
    }

    function used(sentAt) {
      if (!known || !known.idleTimeout) return;
      var deferred = Math.min(60, Math.max(1, known.idleTimeout / 10));
      var estimate = (sentAt + skewMs) / 1000 + known.idleTimeout - deferred;
      if (estimate > known.idleAt) {
        known.idleAt = estimate;
        schedule();
      }
    }

    function forget() {
      known = null;
      schedule();
    }

    /** The end that comes first: {reason, expiresAt}. */
    function nextEnd() {
      return known.idleAt < known.absoluteAt
        ? { reason: 'idle', expiresAt: known.idleAt }
        : { reason: 'absolute', expiresAt: known.absoluteAt };
    }

    function endKey(end) {
      return end.reason + ':' + Math.floor(end.expiresAt);
    }

    /** When `listener` is to be warned of `end` (server seconds), or null: already warned. */
    function dueAt(listener, end) {
      if (listener.warned === endKey(end)) return null;
      var at = end.expiresAt - listener.secondsBefore;
      // A warning window as long as the idle timeout must not turn keepAlive into a loop.
      if (end.reason === 'idle' && listener.lastWarnedAt !== null && known.idleTimeout) {
        at = Math.max(at, listener.lastWarnedAt + known.idleTimeout / 2);
      }
      return Math.min(at, end.expiresAt);
    }

    function schedule() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      if (!known || listeners.length === 0) return;
      var end = nextEnd();
      var soonest = null;
      listeners.forEach(function (listener) {
        var at = dueAt(listener, end);
        if (at !== null && (soonest === null || at < soonest)) soonest = at;
      });
      if (soonest === null) return;
      var delay = Math.min(LONGEST_TIMER_MS, Math.max(0, (soonest - serverNow()) * 1000));
      timer = setTimeout(warnDue, delay);
    }

    function warnDue() {
      timer = null;
      if (!known) return;
      var end = nextEnd();
      var now = serverNow();
      var due = listeners.filter(function (listener) {
        var at = dueAt(listener, end);
        return at !== null && at <= now + 0.05;
      });
      due.forEach(function (listener) {
        listener.warned = endKey(end);
        listener.lastWarnedAt = now;
      });
      var warning = {
        reason: end.reason,
        expiresAt: Math.floor(end.expiresAt),
        secondsLeft: Math.max(0, Math.round(end.expiresAt - now)),
        keepAlive: user,
      };
      schedule();
      callEach(due, [warning]);
    }

    function watchVisibility() {
      if (watchingVisibility || !global.document) return;
      watchingVisibility = true;
      // Timers sleep with the tab or the machine; look again when the page is seen.
      global.document.addEventListener('visibilitychange', function () {
        if (global.document.visibilityState === 'visible') schedule();
      });
    }

    function onExpiring(secondsBefore, callback) {
      if (typeof secondsBefore !== 'number' || !(secondsBefore >= 0)) {
        throw new TypeError('onExpiring needs a number of seconds (0 or more)');
      }
      if (typeof callback !== 'function') throw new TypeError('onExpiring needs a function');
      var listener = { secondsBefore: secondsBefore, callback: callback, warned: null, lastWarnedAt: null };
      listeners.push(listener);
      watchVisibility();
      if (known) {
        schedule();
      } else if (asking === null) {
        asking = user().catch(function () { return null; }).then(function () { asking = null; });
      }
      return function () {
        listeners = listeners.filter(function (l) { return l !== listener; });
        schedule();
      };
    }

    return { learn: learn, used: used, forget: forget, onExpiring: onExpiring };
  })();

  /** Ends the session, then goes to the provider's end-session page (or `/`). */
  function logout() {
    return global.fetch('/api/auth/logout', withCsrf({ method: 'POST' }))
      .then(function (response) {
        if (!response.ok) throw new Error('POST /api/auth/logout answered ' + response.status);
        return response.json();
      })
      .then(function (body) {
        expiry.forget();
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
    stepUp: stepUp, silentLoginResult: silentLoginResult, onExpiring: expiry.onExpiring,
    insufficientPermissions: insufficientPermissions, onInsufficientPermissions: onInsufficientPermissions,
    VestibuleError: VestibuleError,
  });
})(window);
