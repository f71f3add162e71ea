//! Pushed authorization requests (RFC 9126) as the provider's discovery offers them, against
//! `oidc.par`: what Vestibule will do at each login, and whether it can log anyone in.
//!
//! A pure decision over the discovery document already fetched; it sends no request.

use serde_json::Value;

use super::report::Check;
use crate::oidc::ParMode;

const ID: &str = "provider.par";

/// Whether logins will push their authorization requests under `mode`, given `document`.
pub fn pushed_authorization_requests(document: &Value, mode: ParMode) -> Check {
    let endpoint = document
        .get("pushed_authorization_request_endpoint")
        .and_then(Value::as_str);
    let required_by_provider = document
        .get("require_pushed_authorization_requests")
        .and_then(Value::as_bool)
        == Some(true);
    match (mode, endpoint) {
        (ParMode::Off, _) if required_by_provider => Check::fail(
            ID,
            "the provider requires pushed authorization requests \
             (require_pushed_authorization_requests), but oidc.par is \"off\": it will refuse \
             every login",
            "set oidc.par = \"auto\" (or remove it: auto is the default)",
        ),
        (ParMode::Off, _) => Check::ok(
            ID,
            "oidc.par = \"off\": authorization requests go through the browser",
        ),
        (_, Some(endpoint)) => Check::ok(
            ID,
            format!(
                "authorization requests are pushed to {} (RFC 9126): the browser carries \
                 client_id and request_uri only",
                endpoint.parse::<url::Url>().map_or_else(
                    |_| format!("{endpoint:?} (not a URL)"),
                    |url| crate::redact::url(&url)
                )
            ),
        ),
        (ParMode::Required, None) => Check::fail(
            ID,
            "oidc.par is \"required\", but discovery names no \
             pushed_authorization_request_endpoint: discovery fails and no login can start",
            "enable pushed authorization requests at the provider, or set oidc.par = \"auto\"",
        ),
        (ParMode::Auto, None) if required_by_provider => Check::fail(
            ID,
            "the provider says require_pushed_authorization_requests but names no \
             pushed_authorization_request_endpoint: no login can succeed",
            "fix the provider's PAR configuration",
        ),
        (ParMode::Auto, None) => Check::ok(
            ID,
            "no pushed_authorization_request_endpoint: authorization requests go through the \
             browser (oidc.par = \"auto\")",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;
    use serde_json::json;

    #[test]
    fn required_without_an_endpoint_and_off_against_a_provider_that_requires_it_fail() {
        let offered = json!({ "pushed_authorization_request_endpoint": "https://op/par" });
        let required = json!({
            "pushed_authorization_request_endpoint": "https://op/par",
            "require_pushed_authorization_requests": true
        });
        let none = json!({});
        let status = |document: &Value, mode| pushed_authorization_requests(document, mode).status;
        assert_eq!(status(&offered, ParMode::Auto), Status::Ok);
        assert_eq!(status(&offered, ParMode::Required), Status::Ok);
        assert_eq!(status(&none, ParMode::Auto), Status::Ok);
        assert_eq!(status(&none, ParMode::Off), Status::Ok);
        assert_eq!(status(&none, ParMode::Required), Status::Fail);
        assert_eq!(status(&required, ParMode::Off), Status::Fail);
        let check = pushed_authorization_requests(&none, ParMode::Required);
        assert!(check.summary.contains("oidc.par"), "{check:?}");
    }
}
