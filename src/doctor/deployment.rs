//! Checks of the deployment's own settings, no network: `public_url` against cookie security,
//! and the client-address settings (trusted proxies, the per-address login rate limit) against
//! what a load balancer in front implies.
//!
//! Vestibule has no development switch: a deployment is *local* when `public_url` names a
//! loopback host (`localhost`, `127.0.0.1`, `[::1]`), where browsers treat plain http as a
//! secure context; anywhere else it is a production deployment and needs https.

use std::net::IpAddr;

use ipnet::IpNet;
use url::{Host, Url};

use super::report::Check;

/// What these checks read from the settings.
pub struct DeploymentFacts {
    /// `public_url`.
    pub public_url: Url,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether `login.rate_limit_per_minute` is on (not 0).
    pub login_rate_limited: bool,
}

/// Whether `url` names this machine (a development or local deployment).
pub fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// `public_url` vs the cookies' protection.
pub fn cookie_security(facts: &DeploymentFacts) -> Check {
    const ID: &str = "deployment.public_url";
    let url = &facts.public_url;
    if url.scheme() == "https" {
        return Check::ok(
            ID,
            "https: cookies are Secure with the __Host- prefix (__Host-vestibule)",
        );
    }
    if is_local(url) {
        return Check::ok(
            ID,
            format!(
                "http on a loopback host ({}): local/development mode, cookies without Secure \
                 or the __Host- prefix",
                url.origin().ascii_serialization()
            ),
        );
    }
    Check::fail(
        ID,
        format!(
            "public_url {} is plain http on a host that is not loopback: session cookies would \
             travel unencrypted, without Secure or the __Host- prefix",
            url.origin().ascii_serialization()
        ),
        "serve Vestibule behind https and set public_url = \"https://…\" (plain http is only \
         for localhost/127.0.0.1 during development)",
    )
}

/// `server.trusted_proxies` and the login rate limit against a front that terminates TLS.
///
/// Vestibule does not terminate TLS itself, so an https `public_url` means something in front
/// (a load balancer, an ingress, a reverse proxy) does, and every request's TCP peer is that
/// front's address.
pub fn client_addresses(facts: &DeploymentFacts) -> Vec<Check> {
    const ID: &str = "deployment.trusted_proxies";
    let mut checks = Vec::new();
    let behind_front = facts.public_url.scheme() == "https";
    let too_wide: Vec<String> = facts
        .trusted_proxies
        .iter()
        .filter(|net| net.prefix_len() == 0 || !is_private(net.network()))
        .map(ToString::to_string)
        .collect();
    if !too_wide.is_empty() {
        checks.push(Check::warn(
            ID,
            format!(
                "server.trusted_proxies includes {} (public or all addresses): anyone there can \
                 choose the client address Vestibule believes (X-Forwarded-For)",
                too_wide.join(", ")
            ),
            "list only your load balancers' own addresses or subnets (e.g. \"10.0.0.0/16\")",
        ));
    } else if facts.trusted_proxies.is_empty() && behind_front {
        let consequence = if facts.login_rate_limited {
            "every user shares the front's login rate limit (login.rate_limit_per_minute is \
             per client address), and logs and audit show the front's address"
        } else {
            "logs and audit show the front's address instead of the user's"
        };
        checks.push(Check::warn(
            ID,
            format!(
                "public_url is https, so a load balancer or proxy in front terminates TLS, but \
                 server.trusted_proxies is empty: {consequence}"
            ),
            "set server.trusted_proxies to the load balancer's private address or subnet \
             (e.g. [\"10.0.0.0/8\"]), or to \"127.0.0.1\" for a proxy on the same machine",
        ));
    } else if facts.trusted_proxies.is_empty() {
        checks.push(Check::ok(
            ID,
            "no trusted proxies: the TCP peer is the client (no load balancer in front)",
        ));
    } else {
        let listed: Vec<String> = facts
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        checks.push(Check::ok(
            ID,
            format!("X-Forwarded-For believed from {}", listed.join(", ")),
        ));
    }
    checks
}

/// Loopback, RFC 1918, link-local, CGNAT (RFC 6598) or IPv6 unique-local addresses: where a
/// load balancer's own address lives.
fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    fn facts(url: &str, proxies: &[&str]) -> DeploymentFacts {
        DeploymentFacts {
            public_url: Url::parse(url).unwrap(),
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            login_rate_limited: true,
        }
    }

    #[test]
    fn plain_http_fails_outside_loopback_and_passes_on_it() {
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert_eq!(
                cookie_security(&facts(local, &[])).status,
                Status::Ok,
                "{local}"
            );
        }
        let production = cookie_security(&facts("http://app.example.com", &[]));
        assert_eq!(production.status, Status::Fail);
        assert!(production.remedy.unwrap().contains("https"));
        let https = cookie_security(&facts("https://app.example.com", &[]));
        assert_eq!(https.status, Status::Ok);
        assert!(https.summary.contains("__Host-"));
    }

    #[test]
    fn a_front_without_trusted_proxies_or_with_public_ones_warns() {
        let shared = client_addresses(&facts("https://app.example.com", &[]));
        assert_eq!(shared[0].status, Status::Warn);
        assert!(shared[0].summary.contains("rate limit"), "{:?}", shared[0]);
        let wide = client_addresses(&facts("https://app.example.com", &["0.0.0.0/0"]));
        assert_eq!(wide[0].status, Status::Warn);
        let public = client_addresses(&facts("https://app.example.com", &["203.0.113.7/32"]));
        assert_eq!(public[0].status, Status::Warn);
        for fine in [
            &["10.0.0.0/8"][..],
            &["127.0.0.1/32"],
            &["fd00::/8"],
            &["100.64.0.0/10"],
        ] {
            let checks = client_addresses(&facts("https://app.example.com", fine));
            assert_eq!(checks[0].status, Status::Ok, "{fine:?}");
        }
        let direct = client_addresses(&facts("http://localhost:8080", &[]));
        assert_eq!(direct[0].status, Status::Ok);
    }
}
