//! Vestibule's cookies: the session cookie, the short-lived login cookie and the short-lived
//! logout cookie (the `state` of an RP-initiated logout, see [`super::logout`]).
//!
//! All are HttpOnly (never readable by JavaScript) and without `Domain`. The session and login
//! cookies are `Path=/`; over https they are `Secure` and carry the `__Host-` prefix, which
//! browsers enforce. The logout cookie is scoped to the logout callback's path, which
//! `__Host-` forbids: over https it is `Secure` with the `__Secure-` prefix.
//!
//! Every path reads cookies through the one byte-wise parser here. A cookie is ours only if
//! its name is *byte for byte* ours: `__Host-` protection holds for the exact name only, so a
//! name that merely decodes to ours (`%5F_Host-vestibule-login`, planted by a sibling
//! subdomain) must never be taken as ours. Bytes outside ASCII (`pref=café`, set by the SPA
//! or a sibling) do not stop the parser, and every cookie that is not ours reaches the
//! upstream unchanged.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::time::Duration;
use cookie::{Cookie, SameSite};
use percent_encoding::percent_decode;

use super::logout_state::{LOGOUT_CALLBACK_PATH, LOGOUT_STATE_TTL, LogoutState};
use crate::session::{BrowserBinding, PENDING_LOGIN_TTL, SessionCookie};

/// Every name Vestibule uses, over http and over https: an upstream may set none of them.
const ALL_OWN_NAMES: [&str; 6] = [
    "vestibule",
    "vestibule-login",
    "vestibule-logout",
    "__Host-vestibule",
    "__Host-vestibule-login",
    "__Secure-vestibule-logout",
];

/// Cookie names and attributes derived from `public_url`.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
    session_name: &'static str,
    login_name: &'static str,
    logout_name: &'static str,
}

/// Vestibule's cookies as a request carried them. Each is present only if the request sent
/// exactly one distinct, well-formed value under that name: two different values mean someone
/// else (a sibling subdomain, a nameless cookie a browser let through) planted one, and
/// choosing either could hand the victim the attacker's session or login.
#[derive(Default)]
pub struct OwnCookies {
    /// The session cookie.
    pub session: Option<SessionCookie>,
    /// The login-binding cookie.
    pub login: Option<BrowserBinding>,
    /// The logout cookie: the `state` of the RP-initiated logout this browser started.
    pub logout: Option<LogoutState>,
}

/// Which of our cookies a name is, compared byte for byte.
enum Own {
    Session,
    Login,
    Logout,
}

/// The values seen under one of our names.
#[derive(Default)]
enum Seen<'a> {
    #[default]
    None,
    One(&'a [u8]),
    /// Two different values: neither is trusted.
    Conflicting,
}

impl<'a> Seen<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Seen::None => Seen::One(value),
            Seen::One(first) if *first == value => Seen::One(first),
            _ => Seen::Conflicting,
        };
    }

    fn value(&self) -> Option<&'a str> {
        match self {
            Seen::One(value) => std::str::from_utf8(value).ok(),
            _ => None,
        }
    }
}

/// Our cookies' values as they are read from the headers.
#[derive(Default)]
struct SeenOwn<'a> {
    session: Seen<'a>,
    login: Seen<'a>,
    logout: Seen<'a>,
}

impl SeenOwn<'_> {
    fn parsed(&self) -> OwnCookies {
        OwnCookies {
            session: self.session.value().and_then(SessionCookie::parse),
            login: self.login.value().and_then(BrowserBinding::parse),
            logout: self.logout.value().and_then(LogoutState::parse),
        }
    }
}

impl CookiePolicy {
    /// Names with the `__Host-` prefix and `Secure` when the public URL is https.
    pub fn new(https: bool) -> Self {
        if https {
            Self {
                secure: true,
                session_name: "__Host-vestibule",
                login_name: "__Host-vestibule-login",
                logout_name: "__Secure-vestibule-logout",
            }
        } else {
            Self {
                secure: false,
                session_name: "vestibule",
                login_name: "vestibule-login",
                logout_name: "vestibule-logout",
            }
        }
    }

    fn own(&self, name: &[u8]) -> Option<Own> {
        if name == self.session_name.as_bytes() {
            Some(Own::Session)
        } else if name == self.login_name.as_bytes() {
            Some(Own::Login)
        } else if name == self.logout_name.as_bytes() {
            Some(Own::Logout)
        } else {
            None
        }
    }

    /// Finds our cookies in a request's `Cookie` headers.
    pub fn read(&self, headers: &HeaderMap) -> OwnCookies {
        let mut seen = SeenOwn::default();
        for value in headers.get_all(header::COOKIE) {
            for pair in cookie_pairs(value.as_bytes()) {
                self.note_if_own(&pair, &mut seen);
            }
        }
        seen.parsed()
    }

    /// Finds our cookies and removes them from a request that is about to be forwarded,
    /// keeping every other cookie byte for byte in one `Cookie` header. One pass, no
    /// allocation per cookie: this runs on every proxied call.
    pub fn strip(&self, headers: &mut HeaderMap) -> OwnCookies {
        if !headers.contains_key(header::COOKIE) {
            return OwnCookies::default();
        }
        let mut seen = SeenOwn::default();
        let mut kept: Vec<u8> = Vec::new();
        let mut any_own = false;
        for value in headers.get_all(header::COOKIE) {
            for pair in cookie_pairs(value.as_bytes()) {
                if self.note_if_own(&pair, &mut seen) {
                    any_own = true;
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair.raw);
            }
        }
        let found = seen.parsed();
        if !any_own && headers.get_all(header::COOKIE).iter().count() == 1 {
            return found;
        }
        headers.remove(header::COOKIE);
        // The kept bytes came from valid header values, joined by "; ": still valid.
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_bytes(&kept)
        {
            headers.insert(header::COOKIE, value);
        }
        found
    }

    /// Notes `pair` in `seen` if it is one of ours; whether it was.
    fn note_if_own<'a>(&self, pair: &CookiePair<'a>, seen: &mut SeenOwn<'a>) -> bool {
        match self.own(pair.name) {
            Some(Own::Session) => seen.session.add(pair.value),
            Some(Own::Login) => seen.login.add(pair.value),
            Some(Own::Logout) => seen.logout.add(pair.value),
            None => return false,
        }
        true
    }

    /// Whether an upstream's `Set-Cookie` would set or shadow one of our cookies in a browser,
    /// or be read back as ours: its name equals one of ours ignoring case, percent-encoding or
    /// surrounding whitespace, or it is a nameless cookie whose value looks like `ours=…`
    /// (browsers send a nameless cookie as its bare value).
    pub fn is_own_set_cookie(set_cookie: &[u8]) -> bool {
        let pair = set_cookie.split(|byte| *byte == b';').next().unwrap_or(&[]);
        let Some(first) = cookie_pairs(pair).next() else {
            return false;
        };
        if first.name.is_empty() {
            // Sent back as the bare value, which a server splits at its first '=' (or, in
            // some frameworks, takes whole as a name).
            let inner = cookie_pairs(first.value)
                .next()
                .map_or(&[][..], |inner| inner.name);
            resembles_own_name(inner) || resembles_own_name(first.value)
        } else {
            resembles_own_name(first.name)
        }
    }

    /// `Set-Cookie` for a new session: `SameSite=Strict`, a session cookie (no `Max-Age`),
    /// since the server enforces idle and absolute timeouts.
    pub fn session_cookie(&self, cookie: &SessionCookie) -> HeaderValue {
        self.header(
            self.session_name,
            cookie.encode(),
            SameSite::Strict,
            "/",
            None,
        )
    }

    /// `Set-Cookie` for the login binding: `SameSite=Lax` so it comes back on the provider's
    /// cross-site redirect to the callback, and only as long as a pending login lives.
    pub fn login_cookie(&self, binding: &BrowserBinding) -> HeaderValue {
        let max_age = Duration::seconds(PENDING_LOGIN_TTL.as_secs() as i64);
        self.header(
            self.login_name,
            binding.encode(),
            SameSite::Lax,
            "/",
            Some(max_age),
        )
    }

    /// `Set-Cookie` for the logout cookie, holding the `state` of the RP-initiated logout
    /// this browser is leaving for: `SameSite=Lax` so the provider's top-level redirect back
    /// carries it, sent to the logout callback only, and only for [`LOGOUT_STATE_TTL`].
    pub fn logout_cookie(&self, state: &LogoutState) -> HeaderValue {
        let max_age = Duration::seconds(LOGOUT_STATE_TTL.as_secs() as i64);
        self.header(
            self.logout_name,
            state.cookie_value(),
            SameSite::Lax,
            LOGOUT_CALLBACK_PATH,
            Some(max_age),
        )
    }

    /// `Set-Cookie` that removes the logout cookie.
    pub fn logout_removal(&self) -> HeaderValue {
        self.header(
            self.logout_name,
            String::new(),
            SameSite::Lax,
            LOGOUT_CALLBACK_PATH,
            Some(Duration::ZERO),
        )
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn session_removal(&self) -> HeaderValue {
        self.header(
            self.session_name,
            String::new(),
            SameSite::Strict,
            "/",
            Some(Duration::ZERO),
        )
    }

    fn header(
        &self,
        name: &'static str,
        value: String,
        same_site: SameSite,
        path: &'static str,
        max_age: Option<Duration>,
    ) -> HeaderValue {
        let mut cookie = Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path(path)
            .build();
        if let Some(max_age) = max_age {
            cookie.set_max_age(max_age);
        }
        // A constant name and a base64url value always form a valid header value.
        HeaderValue::try_from(cookie.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("vestibule-invalid=; Max-Age=0"))
    }
}

/// Whether a cookie name would be treated as one of ours by a browser or by a server that
/// decodes names: compared without case, surrounding whitespace or percent-encoding.
fn resembles_own_name(name: &[u8]) -> bool {
    let mut current = name.trim_ascii().to_vec();
    // Decoding repeatedly also catches double encoding (`%2576estibule`).
    for _ in 0..4 {
        if ALL_OWN_NAMES
            .iter()
            .any(|own| own.as_bytes().eq_ignore_ascii_case(current.trim_ascii()))
        {
            return true;
        }
        let decoded: Vec<u8> = percent_decode(&current).collect();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    false
}

/// One `name=value` pair of a `Cookie` header, as bytes.
struct CookiePair<'a> {
    name: &'a [u8],
    value: &'a [u8],
    /// The whole pair as sent (without surrounding whitespace), forwarded unchanged.
    raw: &'a [u8],
}

/// The pairs of a `Cookie` header value, byte-wise: split at `;`, whitespace around pairs,
/// names and values trimmed, empty pairs skipped. A pair without `=` is a nameless cookie
/// (RFC 6265bis §5.6), never a cookie whose *name* is the text.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = CookiePair<'_>> {
    header
        .split(|byte| *byte == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
        .map(|raw| match raw.iter().position(|byte| *byte == b'=') {
            Some(at) => CookiePair {
                name: raw[..at].trim_ascii(),
                value: raw[at + 1..].trim_ascii(),
                raw,
            },
            None => CookiePair {
                name: &[],
                value: raw,
                raw,
            },
        })
}

#[cfg(test)]
mod tests;
