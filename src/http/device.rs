//! Where a browser is: the coarse description of a new session's browser and network that
//! "my sessions" shows and suspicious-use detection compares.
//!
//! Coarse on purpose: the browser family and system from the User-Agent (`woothee`, a
//! dataset-driven parser without version noise) and the client's network, never its address.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};

use crate::http::server::client_address::client_network;
use crate::session::SessionOrigin;

/// What `woothee` answers for a part it does not recognise.
const UNKNOWN: &str = "UNKNOWN";

/// The browser family and the device description of a `User-Agent` value.
pub fn describe(user_agent: Option<&str>) -> (String, String) {
    let parsed = user_agent.and_then(|agent| woothee::parser::Parser::new().parse(agent));
    let known = |part: &str| (!part.is_empty() && part != UNKNOWN).then(|| part.to_owned());
    let family = parsed.as_ref().and_then(|result| known(result.name));
    let system = parsed.as_ref().and_then(|result| known(result.os));
    let device = match (&family, &system) {
        (Some(family), Some(system)) => format!("{family} on {system}"),
        (Some(family), None) => family.clone(),
        (None, Some(system)) => format!("Unknown browser on {system}"),
        (None, None) => "Unknown browser".to_owned(),
    };
    (family.unwrap_or_else(|| "Unknown".to_owned()), device)
}

/// The origin of a session created now by `client` with these request headers; the provider
/// session is the caller's to add.
pub fn session_origin(client: IpAddr, headers: &HeaderMap) -> SessionOrigin {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    let (browser_family, device) = describe(user_agent);
    SessionOrigin {
        device,
        network: client_network(client).to_string(),
        browser_family,
        provider_session: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_described_by_family_and_system_only() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
        assert_eq!(
            describe(Some(firefox)),
            ("Firefox".into(), "Firefox on Linux".into())
        );
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";
        let (family, device) = describe(Some(chrome));
        assert_eq!(family, "Chrome");
        assert!(device.starts_with("Chrome on Windows"), "{device}");
        assert_eq!(describe(None), ("Unknown".into(), "Unknown browser".into()));
        assert_eq!(describe(Some("curl/8.5.0")).1, "HTTP Library");
    }

    #[test]
    fn the_network_is_truncated() {
        let origin = session_origin("203.0.113.77".parse().unwrap(), &HeaderMap::new());
        assert_eq!(origin.network, "203.0.113.0/24");
        let origin = session_origin("2001:db8:1:2::5".parse().unwrap(), &HeaderMap::new());
        assert_eq!(origin.network, "2001:db8:1::/48");
    }
}
