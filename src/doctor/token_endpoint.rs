//! Whether the token endpoint accepts the client's authentication, asked without side effects:
//! an authorization-code grant with a made-up code. A provider checks the client before the
//! code, so `invalid_grant` means the client authenticated and `invalid_client` (or a 401)
//! means it did not; where the provider's description says more (an unknown client, a wrong
//! secret), the check repeats it.
//!
//! The secret leaves only inside the request; no line of the report carries it.

use serde_json::Value;
use url::Url;

use super::report::Check;
use crate::oidc::{ClientAuthMethod, Credentials, client_authenticated_post};

const ID: &str = "provider.client_auth";

/// The token endpoint's answer to the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The OAuth `error`, if any.
    pub error: Option<String>,
    /// The OAuth `error_description`, if any.
    pub description: Option<String>,
}

impl Answer {
    fn authenticated(&self) -> bool {
        self.error.as_deref() == Some("invalid_grant")
    }

    /// The provider refused the client's credentials (Keycloak says `unauthorized_client`
    /// with "Invalid client credentials" for a wrong secret).
    fn refused_client(&self) -> bool {
        self.error.as_deref() == Some("invalid_client")
            || (self.status == 401 && self.error.as_deref() != Some("invalid_grant"))
            || (self.error.as_deref() == Some("unauthorized_client")
                && self
                    .description
                    .as_deref()
                    .is_some_and(|text| text.to_ascii_lowercase().contains("credentials")))
    }

    fn shown(&self) -> String {
        match (&self.error, &self.description) {
            (Some(error), Some(description)) => format!("{error}: {description}"),
            (Some(error), None) => error.clone(),
            _ => format!("HTTP {}", self.status),
        }
    }
}

/// The method Vestibule uses: the configured one, else the one it picks from what discovery
/// lists ([`ClientAuthMethod::when_unconfigured`]).
pub fn method(configured: Option<ClientAuthMethod>, document: &Value) -> ClientAuthMethod {
    configured.unwrap_or_else(|| {
        let listed = document
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|methods| {
                let lists = |name: &str| methods.iter().any(|method| method.as_str() == Some(name));
                (lists("client_secret_basic"), lists("client_secret_post"))
            });
        ClientAuthMethod::when_unconfigured(listed)
    })
}

/// The client and where the probe goes.
pub struct Client<'a> {
    /// The token endpoint (routed as Vestibule routes it).
    pub endpoint: Url,
    /// `oidc.client_id` and `oidc.client_secret` or `oidc.client_keys`.
    pub credentials: Credentials<'a>,
    /// The redirect URI Vestibule sends with a code.
    pub redirect_uri: Url,
}

/// Posts the probe grant with `method`.
pub async fn probe(
    http: &reqwest::Client,
    client: &Client<'_>,
    method: ClientAuthMethod,
) -> Result<Answer, String> {
    let code = format!("vestibule-doctor-{}", crate::random::url_safe_id());
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", client.redirect_uri.to_string()),
    ];
    let request = client_authenticated_post(
        http,
        client.endpoint.clone(),
        &client.credentials,
        method,
        form,
    );
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| super::error_chain(&error.without_url()))?;
    let status = response.status().as_u16();
    let json: Value = response.json().await.unwrap_or(Value::Null);
    let text = |field: &str| json.get(field).and_then(Value::as_str).map(str::to_owned);
    Ok(Answer {
        status,
        error: text("error"),
        description: text("error_description"),
    })
}

/// Judges the probe with `method` (`configured`: set in `oidc.client_auth_method`), and, when
/// the first was refused and Vestibule would switch, the probe with the other method.
pub fn judge(
    method: ClientAuthMethod,
    configured: bool,
    first: &Result<Answer, String>,
    switched: Option<&Result<Answer, String>>,
) -> Check {
    let answer = match first {
        Ok(answer) => answer,
        Err(error) => {
            return Check::fail(
                ID,
                format!("the token endpoint is unreachable: {error}"),
                "make the provider's token_endpoint reachable from here (firewall, DNS, proxy)",
            );
        }
    };
    let used = method.name();
    if answer.authenticated() {
        return Check::ok(
            ID,
            format!(
                "the token endpoint accepts the client's authentication ({used}; a made-up \
                 code was refused as invalid_grant)"
            ),
        );
    }
    if answer.refused_client() {
        if let Some(Ok(other_answer)) = switched
            && other_answer.authenticated()
        {
            let other_name = method.other().name();
            return Check::warn(
                ID,
                format!(
                    "the provider refused {used} but accepts {other_name}: Vestibule switches \
                     after the first refusal, costing one failed request per start"
                ),
                format!("set oidc.client_auth_method = \"{other_name}\""),
            );
        }
        let description = answer
            .description
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let cause = if ["not found", "unknown", "does not exist", "no such client"]
            .iter()
            .any(|words| description.contains(words))
        {
            "the provider does not know this client_id"
        } else if method == ClientAuthMethod::PrivateKeyJwt {
            "the provider does not accept the client assertion (a key it does not know, a JWKS \
             URL it cannot fetch, or a client not registered for private_key_jwt)"
        } else if description.contains("secret") || description.contains("credentials") {
            "the client secret is wrong (or the client_id unknown: the provider does not say which)"
        } else {
            "a wrong client secret, an unknown client_id, or a method the client is not \
             registered for (the provider does not say which)"
        };
        let method_hint = if configured {
            format!(
                ", and that oidc.client_auth_method = \"{used}\" is what the client is registered for"
            )
        } else {
            String::new()
        };
        return Check::fail(
            ID,
            format!(
                "the token endpoint refused the client's authentication ({used}; {}): {cause}",
                answer.shown()
            ),
            if method == ClientAuthMethod::PrivateKeyJwt {
                format!(
                    "check that oidc.client_id is the client registered at the provider and that \
                     the provider trusts Vestibule's client keys: its JWKS URL for the client is \
                     {} on Vestibule's public_url (reachable from the provider), or it holds \
                     the public half of the first key of oidc.client_keys{method_hint}",
                    crate::oidc::CLIENT_JWKS_PATH
                )
            } else {
                format!(
                    "check that oidc.client_id is the client registered at the provider and that \
                     oidc.client_secret (or oidc.client_secret_file) holds its current \
                     secret{method_hint}"
                )
            },
        );
    }
    match answer.error.as_deref() {
        Some("unauthorized_client" | "unsupported_grant_type") => Check::fail(
            ID,
            format!(
                "the client authenticated but may not use the authorization-code grant ({})",
                answer.shown()
            ),
            "allow the authorization_code (and refresh_token) grant for this client at the provider",
        ),
        _ if answer.status >= 500 => Check::fail(
            ID,
            format!("the token endpoint failed: {}", answer.shown()),
            "see the provider's logs; Vestibule's logins fail the same way",
        ),
        _ => Check::warn(
            ID,
            format!(
                "cannot tell whether the client authenticates: the token endpoint answered {}",
                answer.shown()
            ),
            "try a login; if it fails at the callback, check oidc.client_id, oidc.client_secret \
             and oidc.client_auth_method",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;
    use serde_json::json;

    fn answer(status: u16, error: &str, description: &str) -> Result<Answer, String> {
        Ok(Answer {
            status,
            error: Some(error.into()),
            description: Some(description.into()),
        })
    }

    const BASIC: ClientAuthMethod = ClientAuthMethod::ClientSecretBasic;

    #[test]
    fn invalid_grant_means_authenticated_and_invalid_client_means_not() {
        let ok = judge(
            BASIC,
            false,
            &answer(400, "invalid_grant", "grant request is invalid"),
            None,
        );
        assert_eq!(ok.status, Status::Ok);
        let refused = answer(401, "invalid_client", "client authentication failed");
        let bad = judge(BASIC, false, &refused, Some(&refused.clone()));
        assert_eq!(bad.status, Status::Fail);
        assert!(bad.remedy.unwrap().contains("oidc.client_secret"));
        let unknown = judge(
            BASIC,
            true,
            &answer(401, "invalid_client", "client not found"),
            None,
        );
        assert!(
            unknown.summary.contains("does not know this client_id"),
            "{unknown:?}"
        );
        let keycloak = judge(
            BASIC,
            true,
            &answer(
                401,
                "unauthorized_client",
                "Invalid client or Invalid client credentials",
            ),
            None,
        );
        assert!(keycloak.summary.contains("secret is wrong"), "{keycloak:?}");
        let no_code = judge(
            BASIC,
            true,
            &answer(400, "unauthorized_client", "grant not allowed"),
            None,
        );
        assert!(
            no_code.summary.contains("authorization-code grant"),
            "{no_code:?}"
        );
    }

    #[test]
    fn a_method_accepted_only_after_a_switch_warns_to_configure_it() {
        let refused = answer(401, "invalid_client", "client authentication failed");
        let accepted = answer(400, "invalid_grant", "grant request is invalid");
        let check = judge(BASIC, false, &refused, Some(&accepted));
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.remedy.as_deref(),
            Some("set oidc.client_auth_method = \"client_secret_post\"")
        );
        let post_only = json!({"token_endpoint_auth_methods_supported": ["client_secret_post"]});
        assert_eq!(method(None, &post_only), ClientAuthMethod::ClientSecretPost);
        assert_eq!(method(None, &json!({})), BASIC);
    }
}
