//! Vestibule's two cookies: the session cookie and the short-lived login cookie.
//!
//! Both are HttpOnly (never readable by JavaScript), `Path=/`, without `Domain`; over https
//! they are `Secure` and carry the `__Host-` prefix, which browsers enforce.

use axum::http::{HeaderMap, HeaderValue, header};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use cookie::time::Duration;

use crate::session::{BrowserBinding, PENDING_LOGIN_TTL, SessionToken};

/// Cookie names and attributes derived from `public_url`.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
    session_name: &'static str,
    login_name: &'static str,
}

impl CookiePolicy {
    /// Names with the `__Host-` prefix and `Secure` when the public URL is https.
    pub fn new(https: bool) -> Self {
        if https {
            Self {
                secure: true,
                session_name: "__Host-vestibule",
                login_name: "__Host-vestibule-login",
            }
        } else {
            Self {
                secure: false,
                session_name: "vestibule",
                login_name: "vestibule-login",
            }
        }
    }

    /// Whether `name` is one of Vestibule's cookies (these never reach an upstream).
    pub fn is_own(&self, name: &str) -> bool {
        name == self.session_name || name == self.login_name
    }

    /// The session token the browser sent, if well-formed.
    pub fn session_token(&self, jar: &CookieJar) -> Option<SessionToken> {
        jar.get(self.session_name)
            .and_then(|cookie| SessionToken::parse(cookie.value()))
    }

    /// Removes Vestibule's cookies from a request that is about to be forwarded, keeping the
    /// others in one `Cookie` header, and returns the session token it carried (the first
    /// well-formed one). One pass, no per-cookie allocation: this runs on every proxied call.
    pub fn strip_own_cookies(&self, headers: &mut HeaderMap) -> Option<SessionToken> {
        if !headers.contains_key(header::COOKIE) {
            return None;
        }
        let mut session = None;
        let mut kept = String::new();
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty());
        for pair in pairs {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = name.trim();
            if name == self.session_name {
                session = session.or_else(|| SessionToken::parse(value.trim()));
            } else if name != self.login_name {
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
        headers.remove(header::COOKIE);
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::try_from(kept)
        {
            headers.insert(header::COOKIE, value);
        }
        session
    }

    /// The login binding the browser sent, if well-formed.
    pub fn browser_binding(&self, jar: &CookieJar) -> Option<BrowserBinding> {
        jar.get(self.login_name)
            .and_then(|cookie| BrowserBinding::parse(cookie.value()))
    }

    /// `Set-Cookie` for a new session: `SameSite=Strict`, a session cookie (no `Max-Age`),
    /// since the server enforces idle and absolute timeouts.
    pub fn session_cookie(&self, token: &SessionToken) -> Cookie<'static> {
        self.base(self.session_name, token.encode(), SameSite::Strict)
    }

    /// `Set-Cookie` for the login binding: `SameSite=Lax` so it comes back on the provider's
    /// cross-site redirect to the callback, and only as long as a pending login lives.
    pub fn login_cookie(&self, binding: &BrowserBinding) -> Cookie<'static> {
        let mut cookie = self.base(self.login_name, binding.encode(), SameSite::Lax);
        cookie.set_max_age(Duration::seconds(PENDING_LOGIN_TTL.as_secs() as i64));
        cookie
    }

    /// A cookie that removes the session cookie.
    pub fn session_removal(&self) -> Cookie<'static> {
        let mut cookie = self.base(self.session_name, String::new(), SameSite::Strict);
        cookie.make_removal();
        cookie
    }

    fn base(&self, name: &'static str, value: String, same_site: SameSite) -> Cookie<'static> {
        Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path("/")
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_cookies_are_host_prefixed_and_secure() {
        let policy = CookiePolicy::new(true);
        let text = policy.session_cookie(&SessionToken::generate()).to_string();
        assert!(text.starts_with("__Host-vestibule="));
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(text.contains(attribute), "{text}");
        }
        assert!(!text.contains("Domain"));
    }

    #[test]
    fn http_cookies_are_not_secure_but_still_http_only() {
        let policy = CookiePolicy::new(false);
        let text = policy.login_cookie(&BrowserBinding::generate()).to_string();
        assert!(text.starts_with("vestibule-login="));
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax"));
        assert!(text.contains("Max-Age=600"));
        assert!(!text.contains("Secure"));
    }

    #[test]
    fn tampered_and_truncated_cookies_parse_to_nothing() {
        let policy = CookiePolicy::new(false);
        let value = SessionToken::generate().encode();
        let jar = |v: &str| CookieJar::new().add(Cookie::new("vestibule", v.to_owned()));
        assert!(policy.session_token(&jar(&value)).is_some());
        assert!(policy.session_token(&jar(&value[..40])).is_none());
        assert!(policy.session_token(&jar("garbage")).is_none());
        assert!(policy.session_token(&CookieJar::new()).is_none());
    }

    #[test]
    fn stripping_keeps_other_cookies_and_returns_the_session_token() {
        let policy = CookiePolicy::new(false);
        let token = SessionToken::generate().encode();
        let mut headers = HeaderMap::new();
        let first = format!("a=1; vestibule={token}; b=2");
        headers.insert(header::COOKIE, HeaderValue::try_from(first).unwrap());
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("vestibule-login=x; c=3"),
        );
        let found = policy
            .strip_own_cookies(&mut headers)
            .expect("session token");
        assert_eq!(found.encode(), token);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2; c=3");
    }

    #[test]
    fn stripping_removes_the_header_when_only_ours_were_sent() {
        let policy = CookiePolicy::new(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-vestibule=bad"),
        );
        assert!(policy.strip_own_cookies(&mut headers).is_none());
        assert!(headers.get(header::COOKIE).is_none());
        // The http names are not ours over https: they pass through untouched.
        headers.insert(header::COOKIE, HeaderValue::from_static("vestibule=s"));
        assert!(policy.strip_own_cookies(&mut headers).is_none());
        assert_eq!(headers[header::COOKIE], "vestibule=s");
    }
}
