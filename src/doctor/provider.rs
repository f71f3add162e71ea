//! The provider as Vestibule will see it from here: discovery reachable, its issuer identical
//! to `oidc.issuer`, the JWKS reachable with a key for the ID-token algorithms, the logout and
//! revocation endpoints it advertises, and its clock against ours.
//!
//! Gathering is thin ([`fetch`]); every decision is a pure function over what was fetched.
//! Back-channel URLs go where Vestibule sends them (see [`crate::oidc::BackChannel`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use url::Url;

use super::report::Check;
use crate::oidc::{AUTH_TIME_LEEWAY_SECS, LogoutStrategy, Profile, discovered_issuer_fits};

/// Clock skew above this many seconds is worth a warning.
pub const SKEW_WARNING_SECS: u64 = 5;

/// A GET answered by the provider.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The HTTP status.
    pub status: u16,
    /// The body as JSON (`None`: not JSON).
    pub json: Option<Value>,
    /// The `Date` header, in Unix seconds.
    pub date: Option<u64>,
    /// Our clock when the request left and when the answer came, in Unix milliseconds.
    pub sent_ms: u128,
    /// See `sent_ms`.
    pub received_ms: u128,
}

/// GETs `url` as JSON.
pub async fn fetch(http: &reqwest::Client, url: &Url) -> Result<Fetched, String> {
    let sent_ms = now_ms();
    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| super::error_chain(&error.without_url()))?;
    let received_ms = now_ms();
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| httpdate::parse_http_date(value).ok())
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|since| since.as_secs());
    let body = response
        .bytes()
        .await
        .map_err(|error| super::error_chain(&error.without_url()))?;
    Ok(Fetched {
        status,
        json: serde_json::from_slice(&body).ok(),
        date,
        sent_ms,
        received_ms,
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// Discovery reachable and a JSON document; the document when it is.
pub fn discovery<'a>(
    url: &Url,
    fetched: &'a Result<Fetched, String>,
) -> (Check, Option<&'a Value>) {
    const ID: &str = "provider.discovery";
    let shown = crate::redact::url(url);
    let remedy = "check oidc.issuer (or oidc.discovery_url when this machine reaches the \
                  provider under another name), DNS, firewalls and HTTPS_PROXY from here, and \
                  oidc.ca_file for a provider with a private CA";
    match fetched {
        Err(error) => (
            Check::fail(
                ID,
                format!("discovery at {shown} is unreachable: {error}"),
                remedy,
            ),
            None,
        ),
        Ok(fetched) if !(200..300).contains(&fetched.status) => (
            Check::fail(
                ID,
                format!("discovery at {shown} answered HTTP {}", fetched.status),
                remedy,
            ),
            None,
        ),
        Ok(Fetched {
            json: Some(document),
            ..
        }) if document.is_object() => (
            Check::ok(ID, format!("discovery answered at {shown}")),
            Some(document),
        ),
        Ok(_) => (
            Check::fail(
                ID,
                format!("discovery at {shown} is not a JSON document"),
                remedy,
            ),
            None,
        ),
    }
}

/// The document's `issuer` against `oidc.issuer`: identical, or what differs.
pub fn issuer(configured: &str, allowed_tenants: &[String], document: &Value) -> Check {
    const ID: &str = "provider.issuer";
    let Some(found) = document.get("issuer").and_then(Value::as_str) else {
        return Check::fail(
            ID,
            "the discovery document has no issuer",
            "point oidc.issuer (or oidc.discovery_url) at the provider's OpenID discovery",
        );
    };
    if found == configured {
        return Check::ok(ID, format!("issuer {found} is identical to oidc.issuer"));
    }
    if found.contains('{') {
        // A multi-tenant template (Entra ID's /organizations): the rule discovery applies.
        return match discovered_issuer_fits(configured, allowed_tenants, found) {
            Ok(_) => Check::ok(
                ID,
                format!(
                    "issuer template {found}: tokens must name it filled with their own tenant, \
                     one of the {} in oidc.allowed_tenants",
                    allowed_tenants.len()
                ),
            ),
            Err(why) => Check::fail(
                ID,
                why,
                "list the tenants to accept in oidc.allowed_tenants (and discover through \
                 /organizations or /common), or set oidc.issuer to one tenant's own issuer",
            ),
        };
    }
    let difference = if found.trim_end_matches('/') == configured.trim_end_matches('/') {
        if found.ends_with('/') {
            "the provider's has a trailing slash, oidc.issuer has none"
        } else {
            "oidc.issuer has a trailing slash, the provider's has none"
        }
    } else if found.eq_ignore_ascii_case(configured) {
        "they differ in upper/lower case"
    } else if found.split_once("://").map(|(_, rest)| rest)
        == configured.split_once("://").map(|(_, rest)| rest)
    {
        "the scheme differs (http vs https)"
    } else {
        "they are different URLs"
    };
    Check::fail(
        ID,
        format!(
            "discovery names issuer {found:?}, oidc.issuer is {configured:?}: {difference}; every \
             login would fail (ID tokens must name the issuer exactly)"
        ),
        format!("set oidc.issuer = {found:?} exactly"),
    )
}

/// The JWKS: reachable, and with a signing key for at least one algorithm ID tokens use.
pub fn jwks(url: &Url, fetched: &Result<Fetched, String>, algs: &[String]) -> Check {
    const ID: &str = "provider.jwks";
    let shown = crate::redact::url(url);
    let unreachable = |what: String| {
        Check::fail(
            ID,
            format!("the JWKS at {shown} {what}: no ID token can be verified"),
            "make the provider's jwks_uri reachable from here (firewall, DNS, proxy); if it \
             names a host only browsers reach, set oidc.discovery_url to the address this \
             machine uses",
        )
    };
    let keys = match fetched {
        Err(error) => return unreachable(format!("is unreachable ({error})")),
        Ok(fetched) if !(200..300).contains(&fetched.status) => {
            return unreachable(format!("answered HTTP {}", fetched.status));
        }
        Ok(fetched) => match fetched.json.as_ref().and_then(|json| json.get("keys")) {
            Some(Value::Array(keys)) => keys,
            _ => return unreachable("is not a JSON Web Key Set".to_owned()),
        },
    };
    let usable: Vec<&String> = algs
        .iter()
        .filter(|alg| keys.iter().any(|key| key_fits(key, alg)))
        .collect();
    if usable.is_empty() {
        return Check::fail(
            ID,
            format!(
                "the JWKS at {shown} has {} key(s), none for the ID-token algorithm(s) {}",
                keys.len(),
                if algs.is_empty() {
                    "(none advertised)".to_owned()
                } else {
                    algs.join(", ")
                }
            ),
            "publish a signing key for the algorithm the provider signs ID tokens with, or set \
             oidc.id_token_signed_response_alg to the one it uses",
        );
    }
    let usable: Vec<&str> = usable.iter().map(|alg| alg.as_str()).collect();
    Check::ok(
        ID,
        format!(
            "the JWKS has {} key(s), usable for {}",
            keys.len(),
            usable.join(", ")
        ),
    )
}

/// Whether a JWK can verify signatures made with `alg`.
fn key_fits(key: &Value, alg: &str) -> bool {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|usage| usage != "sig") {
        return false;
    }
    if let Some(declared) = field("alg") {
        return declared == alg;
    }
    match (field("kty"), alg) {
        (Some("RSA"), alg) => alg.starts_with("RS") || alg.starts_with("PS"),
        (Some("EC"), "ES256") => field("crv") == Some("P-256"),
        (Some("EC"), "ES384") => field("crv") == Some("P-384"),
        (Some("EC"), "ES512") => field("crv") == Some("P-521"),
        (Some("OKP"), "EdDSA") => true,
        _ => false,
    }
}

/// The algorithms ID tokens are signed with: the configured one, else the asymmetric ones the
/// provider advertises.
pub fn id_token_algs(configured: Option<String>, document: &Value) -> Vec<String> {
    if let Some(alg) = configured {
        return vec![alg];
    }
    document
        .get("id_token_signing_alg_values_supported")
        .and_then(Value::as_array)
        .map(|algs| {
            algs.iter()
                .filter_map(Value::as_str)
                .filter(|alg| !alg.starts_with("HS") && *alg != "none")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An audience where the profile's provider needs one for an API token (Auth0).
pub fn audience(profile: &Profile, audience: Option<&str>) -> Option<Check> {
    const ID: &str = "provider.audience";
    if !profile.audience_needed {
        return None;
    }
    Some(match audience {
        Some(audience) => Check::ok(
            ID,
            format!("access tokens asked for the audience {audience}"),
        ),
        None => Check::warn(
            ID,
            format!(
                "oidc.audience is not set: {} then issues an access token only its UserInfo \
                 accepts, which your APIs refuse",
                profile.name
            ),
            "set oidc.audience to your API's identifier (its token gets that audience)",
        ),
    })
}

/// End-session (against the configured `oidc.logout`), revocation and back-channel logout as
/// advertised: a warning each when absent.
pub fn logout_support(document: &Value, logout: LogoutStrategy, has_template: bool) -> Vec<Check> {
    let has = |field: &str| document.get(field).and_then(Value::as_str).is_some();
    let flag = |field: &str| document.get(field).and_then(Value::as_bool) == Some(true);
    let mut checks = Vec::new();
    checks.push(if logout == LogoutStrategy::Local {
        Check::ok(
            "provider.end_session",
            "oidc.logout = \"local\": logout ends the Vestibule session only, by configuration",
        )
    } else if logout == LogoutStrategy::UrlTemplate
        || (has_template && !has("end_session_endpoint"))
    {
        Check::ok(
            "provider.end_session",
            "logout sends the browser to the oidc.logout_url template",
        )
    } else if has("end_session_endpoint") {
        Check::ok(
            "provider.end_session",
            "end_session_endpoint advertised: logout also ends the provider's session",
        )
    } else {
        Check::warn(
            "provider.end_session",
            "no end_session_endpoint: logout ends the Vestibule session only; the user stays \
             signed in at the provider, and the next login may not ask for a password",
            "enable RP-initiated logout at the provider if it offers it; otherwise tell users \
             that logging out does not sign them out of the provider",
        )
    });
    checks.push(if has("revocation_endpoint") {
        Check::ok(
            "provider.revocation",
            "revocation_endpoint advertised: refresh tokens are revoked at logout",
        )
    } else {
        Check::warn(
            "provider.revocation",
            "no revocation_endpoint: refresh tokens are dropped at logout but stay valid at \
             the provider until they expire",
            "enable token revocation (RFC 7009) at the provider if it offers it, and keep \
             refresh-token lifetimes short",
        )
    });
    checks.push(if flag("backchannel_logout_supported") {
        Check::ok("provider.backchannel_logout", "back-channel logout supported: register public_url + /api/auth/backchannel-logout at the provider")
    } else {
        Check::warn(
            "provider.backchannel_logout",
            "back-channel logout not advertised: a logout elsewhere (the provider, another \
             app) does not end Vestibule sessions; they last until their idle or absolute timeout",
            "enable OIDC back-channel logout at the provider and register public_url + \
             /api/auth/backchannel-logout, or keep session.idle_timeout short",
        )
    });
    checks
}

/// Our clock against the provider's `Date` (one-second resolution, so a difference below the
/// request's own duration plus a second is none).
pub fn clock(fetched: &Fetched) -> Check {
    const ID: &str = "provider.clock";
    let Some(date) = fetched.date else {
        return Check::skip(
            ID,
            "the provider sent no Date header: clock skew not measured",
        );
    };
    // The provider's clock read somewhere between [date, date + 1 s) while ours ran from
    // sent to received.
    let (earliest, latest) = (u128::from(date) * 1000, u128::from(date) * 1000 + 999);
    let skew_ms = if latest < fetched.sent_ms {
        fetched.sent_ms - latest
    } else {
        earliest.saturating_sub(fetched.received_ms)
    };
    let ahead = earliest > fetched.received_ms;
    let skew = Duration::from_millis(u64::try_from(skew_ms).unwrap_or(u64::MAX)).as_secs();
    let direction = if ahead { "ahead of" } else { "behind" };
    let remedy = "synchronise this machine's clock with NTP (chrony, systemd-timesyncd); if \
                  this machine is right, tell the provider's operator";
    if skew > AUTH_TIME_LEEWAY_SECS {
        Check::fail(
            ID,
            format!(
                "the provider's clock is {skew} s {direction} ours, more than the {AUTH_TIME_LEEWAY_SECS} s \
                 leeway Vestibule allows: fresh tokens can look expired or not yet issued"
            ),
            remedy,
        )
    } else if skew > SKEW_WARNING_SECS {
        Check::warn(
            ID,
            format!("the provider's clock is {skew} s {direction} ours"),
            remedy,
        )
    } else {
        Check::ok(ID, format!("clocks agree within {SKEW_WARNING_SECS} s"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;
    use serde_json::json;

    #[test]
    fn an_issuer_that_differs_by_a_trailing_slash_says_so_and_names_the_exact_value() {
        let check = issuer(
            "https://op.example/realms/a",
            &[],
            &json!({"issuer": "https://op.example/realms/a/"}),
        );
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("trailing slash"), "{check:?}");
        assert_eq!(
            check.remedy.as_deref(),
            Some("set oidc.issuer = \"https://op.example/realms/a/\" exactly")
        );
        let scheme = issuer(
            "http://op.example",
            &[],
            &json!({"issuer": "https://op.example"}),
        );
        assert!(scheme.summary.contains("scheme"), "{scheme:?}");
        assert_eq!(
            issuer(
                "https://op.example",
                &[],
                &json!({"issuer": "https://op.example"})
            )
            .status,
            Status::Ok
        );
    }

    #[test]
    fn an_audience_is_asked_of_the_profiles_that_need_one_only() {
        let auth0 = crate::oidc::PROFILES
            .iter()
            .find(|profile| profile.name == "auth0")
            .unwrap();
        let missing = audience(auth0, None).unwrap();
        assert_eq!(missing.status, Status::Warn, "{missing:?}");
        assert_eq!(
            audience(auth0, Some("https://api")).unwrap().status,
            Status::Ok
        );
        assert_eq!(audience(&crate::oidc::GENERIC, None), None);
    }

    #[test]
    fn a_tenant_template_passes_with_allowed_tenants_and_fails_without() {
        let organizations = "https://login.microsoftonline.com/organizations/v2.0";
        let document = json!({"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"});
        let allowed = issuer(organizations, &["tenant-a".to_owned()], &document);
        assert_eq!(allowed.status, Status::Ok, "{allowed:?}");
        let refused = issuer(organizations, &[], &document);
        assert_eq!(refused.status, Status::Fail, "{refused:?}");
        assert!(
            refused
                .remedy
                .as_deref()
                .is_some_and(|remedy| remedy.contains("oidc.allowed_tenants")),
            "{refused:?}"
        );
    }

    fn fetched(json: Value) -> Result<Fetched, String> {
        Ok(Fetched {
            status: 200,
            json: Some(json),
            date: None,
            sent_ms: 0,
            received_ms: 0,
        })
    }

    #[test]
    fn a_jwks_needs_a_key_for_an_id_token_algorithm() {
        let url = Url::parse("https://op.example/jwks").unwrap();
        let rs = json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]});
        assert_eq!(
            jwks(&url, &fetched(rs.clone()), &["RS256".into()]).status,
            Status::Ok
        );
        assert_eq!(
            jwks(&url, &fetched(rs), &["ES256".into()]).status,
            Status::Fail
        );
        let enc = json!({"keys": [{"kty": "RSA", "use": "enc"}]});
        assert_eq!(
            jwks(&url, &fetched(enc), &["RS256".into()]).status,
            Status::Fail
        );
        let down = jwks(&url, &Err("connection refused".into()), &["RS256".into()]);
        assert_eq!(down.status, Status::Fail);
        assert!(down.remedy.unwrap().contains("jwks_uri"));
        let algs = id_token_algs(
            None,
            &json!({"id_token_signing_alg_values_supported": ["HS256", "RS256", "none"]}),
        );
        assert_eq!(algs, ["RS256"]);
    }

    #[test]
    fn missing_logout_endpoints_warn_with_what_it_means() {
        let checks = logout_support(&json!({}), LogoutStrategy::RpInitiated, false);
        assert!(
            checks.iter().all(|c| c.status == Status::Warn),
            "{checks:?}"
        );
        let checks = logout_support(
            &json!({
                "end_session_endpoint": "https://op/x", "revocation_endpoint": "https://op/r",
                "backchannel_logout_supported": true
            }),
            LogoutStrategy::RpInitiated,
            false,
        );
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
    }

    #[test]
    fn a_configured_local_or_template_logout_needs_no_end_session_endpoint() {
        for (logout, has_template) in [
            (LogoutStrategy::Local, false),
            (LogoutStrategy::UrlTemplate, true),
            (LogoutStrategy::RpInitiated, true),
        ] {
            let checks = logout_support(&json!({}), logout, has_template);
            let end_session = checks.iter().find(|c| c.id == "provider.end_session");
            assert_eq!(
                end_session.map(|c| c.status),
                Some(Status::Ok),
                "{logout:?}: {checks:?}"
            );
        }
    }

    #[test]
    fn clock_skew_warns_past_a_few_seconds_and_fails_past_the_leeway() {
        let at = |date: u64, now_ms: u128| Fetched {
            status: 200,
            json: None,
            date: Some(date),
            sent_ms: now_ms,
            received_ms: now_ms + 50,
        };
        assert_eq!(clock(&at(1000, 1_000_500)).status, Status::Ok);
        assert_eq!(clock(&at(1010, 1_000_500)).status, Status::Warn);
        let behind = clock(&at(900, 1_000_500));
        assert_eq!(behind.status, Status::Fail);
        assert!(behind.summary.contains("behind"), "{behind:?}");
        assert_eq!(clock(&at(1_100, 1_000_500)).status, Status::Fail);
    }
}
