//! Anti-forgery for API calls: a custom header that a cross-site form or link cannot send,
//! plus `Origin` / `Sec-Fetch-Site` when the browser provides them.

use axum::http::{HeaderMap, HeaderName};

use crate::error::AppError;

/// The header every API call must carry, with the value `1`.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf");

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Refuses requests without `X-CSRF: 1` or with a cross-site `Origin` / `Sec-Fetch-Site`.
pub fn check(headers: &HeaderMap, own_origin: &str) -> Result<(), AppError> {
    if headers.get(&CSRF_HEADER).map(|value| value.as_bytes()) != Some(b"1") {
        return Err(AppError::Forbidden("the X-CSRF: 1 header is required"));
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE)
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(AppError::Forbidden("cross-site request"));
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN)
        && origin.as_bytes() != own_origin.as_bytes()
    {
        return Err(AppError::Forbidden("cross-origin request"));
    }
    Ok(())
}

/// The check for a WebSocket handshake, which a browser cannot give an `X-CSRF` header: the
/// `Origin` a browser always sends on one (RFC 6455 §4.1) must be the public origin, and
/// `Sec-Fetch-Site`, when sent, must not say the request came from another site. A page on
/// another origin cannot open a socket on the user's session (cross-site WebSocket hijacking).
pub fn check_upgrade(headers: &HeaderMap, own_origin: &str) -> Result<(), AppError> {
    match headers.get(axum::http::header::ORIGIN) {
        Some(origin) if origin.as_bytes() == own_origin.as_bytes() => {}
        Some(_) => return Err(AppError::Forbidden("cross-origin WebSocket")),
        None => return Err(AppError::Forbidden("a WebSocket needs an Origin")),
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE)
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(AppError::Forbidden("cross-site WebSocket"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ORIGIN: &str = "http://localhost:8080";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn header_is_required_with_value_one() {
        assert!(check(&headers(&[]), ORIGIN).is_err());
        assert!(check(&headers(&[("x-csrf", "0")]), ORIGIN).is_err());
        assert!(check(&headers(&[("x-csrf", "1")]), ORIGIN).is_ok());
    }

    #[test]
    fn cross_site_signals_are_refused() {
        let bad = [
            [("x-csrf", "1"), ("sec-fetch-site", "cross-site")],
            [("x-csrf", "1"), ("sec-fetch-site", "same-site")],
            [("x-csrf", "1"), ("origin", "https://evil.example")],
            [("x-csrf", "1"), ("origin", "null")],
        ];
        for case in bad {
            assert!(check(&headers(&case), ORIGIN).is_err(), "{case:?}");
        }
        let good = [
            ("x-csrf", "1"),
            ("sec-fetch-site", "same-origin"),
            ("origin", ORIGIN),
        ];
        assert!(check(&headers(&good), ORIGIN).is_ok());
    }

    #[test]
    fn a_websocket_needs_our_origin_and_no_x_csrf() {
        assert!(check_upgrade(&headers(&[("origin", ORIGIN)]), ORIGIN).is_ok());
        assert!(
            check_upgrade(
                &headers(&[("origin", ORIGIN), ("sec-fetch-site", "same-origin")]),
                ORIGIN
            )
            .is_ok()
        );
        for refused in [
            headers(&[]),
            headers(&[("origin", "http://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", ORIGIN), ("sec-fetch-site", "cross-site")]),
            headers(&[("origin", ORIGIN), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(matches!(
                check_upgrade(&refused, ORIGIN),
                Err(AppError::Forbidden(_))
            ));
        }
    }
}
