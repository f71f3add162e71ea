//! Header hygiene between the browser and the servers behind Vestibule, in both directions:
//! hop-by-hop fields, the headers that tell a server who called and through which URL, and
//! the `Set-Cookie`s an upstream may not send.
//!
//! Many servers and frameworks *route* or *trust* on request headers: IIS and Symfony take
//! the path from `X-Original-URL` / `X-Rewrite-URL`, Spring and ASP.NET rebuild URLs from
//! `X-Forwarded-Prefix` / `-Port`, and CDNs and frameworks read the client's address from a
//! dozen headers. A browser must not be able to send any of them through Vestibule: every
//! name in [`CLIENT_SUPPLIED_ROUTING`] is dropped, and Vestibule sets the forwarding headers
//! it owns from facts it knows (the client's address, the public origin).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::http::cookies::CookiePolicy;

/// This proxy's `Via` entry (RFC 9110 §7.6.3), added in both directions.
pub const VIA: &str = "1.1 vestibule";

/// Request headers that steer an upstream's routing, its idea of the client, or its idea of
/// who the user is, as a browser might send them: never forwarded. (The forwarding headers
/// Vestibule owns are set afresh.) Names are compared with `_` read as `-`, since Puma, CGI
/// and WSGI servers fold one into the other (CVE-2024-45614).
pub const CLIENT_SUPPLIED_ROUTING: [&str; 62] = [
    // RFC 7239 and the de-facto X-Forwarded-* family (Spring, ASP.NET, Express, Rails, …);
    // every other `x-forwarded-*` name goes too, see CLIENT_SUPPLIED_PREFIXES.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-protocol",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-client-cert",
    "x-original-forwarded-for",
    "x-scheme",
    // Path, host and method rewrites (IIS URL Rewrite, Symfony, Laravel, Zend, nginx
    // auth_request, Rails and Express method overrides that would dodge per-method rules).
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-original-method",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // The client's address, as CDNs, load balancers and frameworks report it.
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-proxyuser-ip",
    // TLS-terminator hints that make a server believe the request came over https, and the
    // client certificate it would trust (RFC 9440, nginx, IIS ARR).
    "front-end-https",
    "x-url-scheme",
    "x-arr-ssl",
    "x-arr-clientcert",
    "client-cert",
    "client-cert-chain",
    "ssl-client-cert",
    "x-client-cert",
    "x-client-verify",
    // Identities asserted by authenticating proxies (oauth2-proxy, nginx auth_request,
    // Apache, Grafana, AWS ALB, Google IAP, Azure App Service, Cloudflare Access): an upstream
    // behind one of them trusts these instead of the bearer token.
    "remote-user",
    "x-remote-user",
    "x-remote-group",
    "x-webauth-user",
    "x-user",
    "x-email",
    "x-preferred-username",
    "x-access-token",
    "x-id-token",
    "x-goog-iap-jwt-assertion",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "x-ms-client-principal",
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    // Vestibule's own identity assertion under its default name (a route's own header name
    // is removed on every route too, see `crate::assertion::Assertions::strip_forged`).
    "x-vestibule-assertion",
];

/// Whole families dropped by prefix (compared the same way): every `X-Forwarded-*` (the
/// ones Vestibule owns are set afresh), Envoy's internal headers, oauth2-proxy's
/// `X-Auth-Request-*`, AWS ALB's `X-Amzn-Oidc-*`, Azure's `X-MS-Client-Principal*` and
/// `X-MS-Token-*`, and the `X-SSL-Client-*` certificate details.
pub const CLIENT_SUPPLIED_PREFIXES: [&str; 7] = [
    "x-forwarded-",
    "x-envoy-",
    "x-auth-request-",
    "x-amzn-oidc-",
    "x-ms-client-principal",
    "x-ms-token-",
    "x-ssl-client-",
];

/// Whether a request header named `name` (lower case, as `HeaderName` holds it) is one a
/// browser may not send through Vestibule.
pub fn is_client_supplied_routing(name: &str) -> bool {
    if name.contains('_') {
        return is_client_supplied_routing(&name.replace('_', "-"));
    }
    CLIENT_SUPPLIED_ROUTING.contains(&name)
        || CLIENT_SUPPLIED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// `X-Forwarded-For`, which Vestibule sets and also reads behind trusted proxies.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The forwarding headers Vestibule sets, with the parts that never change computed once.
#[derive(Clone)]
pub struct ForwardingHeaders {
    host: Option<HeaderValue>,
    proto: HeaderValue,
    port: HeaderValue,
}

impl ForwardingHeaders {
    /// The `X-Forwarded-Host` / `-Proto` / `-Port` values for the public origin.
    pub fn new(public_url: &url::Url) -> Self {
        let host = public_url.host_str().and_then(|host| {
            let host = match public_url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            HeaderValue::try_from(host).ok()
        });
        let https = public_url.scheme() == "https";
        let proto = HeaderValue::from_static(if https { "https" } else { "http" });
        let port = public_url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        Self {
            host,
            proto,
            port: HeaderValue::from(port),
        }
    }

    /// Drops every routing header the browser sent and tells the upstream who called and
    /// how: the client's address, the public origin, and this proxy in `Via`.
    pub fn apply(&self, headers: &mut HeaderMap, client: IpAddr) {
        remove_client_supplied_routing(headers);
        if let Ok(value) = HeaderValue::try_from(client.to_string()) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
        headers.insert(X_FORWARDED_PORT, self.port.clone());
        headers.append(header::VIA, HeaderValue::from_static(VIA));
    }
}

/// Removes every header [`is_client_supplied_routing`] names: one pass over the headers
/// present (usually a dozen) rather than one lookup per listed name.
fn remove_client_supplied_routing(headers: &mut HeaderMap) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_client_supplied_routing(name.as_str()))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Hop-by-hop header fields (RFC 9110 §7.6.1) plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields and every field listed in `Connection`. One pass over the fields
/// present finds them (most requests and answers carry none but `Connection`), rather than a
/// lookup per listed name.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        remove_listed_in_connection(headers);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the fields a `Connection` header names (it is itself removed with the others).
fn remove_listed_in_connection(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in &listed {
        headers.remove(name);
    }
}

/// What no upstream response may pass on to the browser: hop-by-hop fields and any
/// `Set-Cookie` that could be taken as ours.
pub fn clean_upstream_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    remove_own_set_cookies(headers);
}

/// An upstream must not be able to set, shadow or overwrite Vestibule's cookies (session
/// fixation, login CSRF): every `Set-Cookie` a browser or Vestibule would take as ours goes.
pub fn remove_own_set_cookies(headers: &mut HeaderMap) {
    if !headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|value| CookiePolicy::is_own_set_cookie(value.as_bytes()))
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| !CookiePolicy::is_own_set_cookie(value.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_supplied_routing_header_is_replaced_or_dropped() {
        let mut headers = HeaderMap::new();
        for name in CLIENT_SUPPLIED_ROUTING {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("/admin"),
            );
        }
        headers.insert("x-app", HeaderValue::from_static("kept"));
        let public = url::Url::parse("https://app.example.com").unwrap();
        ForwardingHeaders::new(&public).apply(&mut headers, "203.0.113.9".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9");
        assert_eq!(headers["x-forwarded-host"], "app.example.com");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], "443");
        assert_eq!(headers["via"], VIA);
        assert_eq!(headers["x-app"], "kept");
        let owned = [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
        ];
        for name in CLIENT_SUPPLIED_ROUTING {
            if !owned.contains(&name) {
                assert!(headers.get(name).is_none(), "{name} must not be forwarded");
            }
        }
        let local = url::Url::parse("http://localhost:8080").unwrap();
        let mut headers = HeaderMap::new();
        ForwardingHeaders::new(&local).apply(&mut headers, "127.0.0.1".parse().unwrap());
        assert_eq!(headers["x-forwarded-host"], "localhost:8080");
        assert_eq!(headers["x-forwarded-port"], "8080");
    }

    #[test]
    fn underscore_spellings_and_whole_families_are_dropped_too() {
        for name in [
            "x_forwarded_for",
            "x_original_url",
            "x-forwarded-anything-new",
            "x-envoy-internal",
            "x-auth-request-email",
            "x_amzn_oidc_data",
            "x-ms-client-principal-idp",
            "x-ms-token-aad-access-token",
            "x-ssl-client-s-dn",
            "remote_user",
        ] {
            assert!(is_client_supplied_routing(name), "{name}");
        }
        for name in [
            "x-app",
            "x-request-id",
            "authorization-extra",
            "x-remoteuser-pref",
        ] {
            assert!(!is_client_supplied_routing(name), "{name}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        headers.insert("x_original_url", HeaderValue::from_static("/admin"));
        let public = url::Url::parse("https://app.example.com").unwrap();
        ForwardingHeaders::new(&public).apply(&mut headers, "203.0.113.9".parse().unwrap());
        assert!(headers.get("x_forwarded_for").is_none());
        assert!(headers.get("x_original_url").is_none());
    }

    #[test]
    fn upstream_cannot_set_our_cookies_under_any_disguise() {
        let mut headers = HeaderMap::new();
        for value in [
            "vestibule=fixated; Path=/",
            "%76estibule=x; Path=/",
            "=vestibule-login=x",
            "app=1; Path=/",
        ] {
            headers.append(header::SET_COOKIE, HeaderValue::from_static(value));
        }
        remove_own_set_cookies(&mut headers);
        let left: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, vec!["app=1; Path=/"]);
    }
}
