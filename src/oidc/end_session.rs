//! How a logout leaves for the provider (`oidc.logout`): RP-initiated logout through the
//! discovered `end_session_endpoint`, a URL built from a template (`oidc.logout_url`) for
//! providers with their own logout endpoint (Cognito's `/logout`, Auth0's `/v2/logout`), or
//! nowhere (Google: the session ends here only).
//!
//! Pure values: the template is checked once at configuration load and filled per logout; it
//! never fetches anything (the provider's origin comes from discovery, handed in).

use serde::Deserialize;
use url::Url;
use url::form_urlencoded::byte_serialize;

/// Where a logout sends the browser (`oidc.logout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogoutStrategy {
    /// The discovered `end_session_endpoint` (RP-Initiated Logout 1.0); without one, the
    /// `oidc.logout_url` template when set, else nowhere.
    #[default]
    RpInitiated,
    /// Always the `oidc.logout_url` template.
    UrlTemplate,
    /// Nowhere: the session ends here (its refresh token is still revoked).
    Local,
}

impl LogoutStrategy {
    /// The configuration's name for it.
    pub fn name(self) -> &'static str {
        match self {
            LogoutStrategy::RpInitiated => "rp_initiated",
            LogoutStrategy::UrlTemplate => "url_template",
            LogoutStrategy::Local => "local",
        }
    }
}

/// The placeholders a logout URL template may hold.
const PLACEHOLDERS: &[&str] = &[
    "authorization_origin",
    "issuer",
    "client_id",
    "post_logout_redirect_uri",
    "id_token_hint",
    "state",
    "logout_hint",
];

/// The placeholders inserted as they are: they begin the URL rather than fill a parameter.
const VERBATIM: &[&str] = &["authorization_origin", "issuer"];

/// A checked `oidc.logout_url`: an absolute http(s) URL once its placeholders are filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTemplate(String);

/// What one logout fills a template's placeholders with.
pub struct TemplateValues<'a> {
    /// The origin of the discovered authorization endpoint (Cognito's hosted UI).
    pub authorization_origin: &'a str,
    /// The configured issuer.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// Where the provider sends the browser back.
    pub post_logout_redirect_uri: &'a str,
    /// The session's ID token.
    pub id_token_hint: &'a str,
    /// The logout's `state`.
    pub state: &'a str,
    /// The session's logout hint (`oidc.logout_hint_claim`), empty when none.
    pub logout_hint: &'a str,
}

impl TemplateValues<'_> {
    fn value(&self, placeholder: &str) -> &str {
        match placeholder {
            "authorization_origin" => self.authorization_origin,
            "issuer" => self.issuer.trim_end_matches('/'),
            "client_id" => self.client_id,
            "post_logout_redirect_uri" => self.post_logout_redirect_uri,
            "id_token_hint" => self.id_token_hint,
            "state" => self.state,
            _ => self.logout_hint,
        }
    }
}

impl LogoutTemplate {
    /// Checks `text`: only known `{placeholders}`, and an absolute http(s) URL once filled.
    pub fn parse(text: &str) -> Result<Self, String> {
        let template = Self(text.to_owned());
        template.pieces()?;
        let sample = TemplateValues {
            authorization_origin: "https://provider.example",
            issuer: "https://provider.example",
            client_id: "client",
            post_logout_redirect_uri: "https://app.example/api/auth/logout-callback",
            id_token_hint: "token",
            state: "state",
            logout_hint: "hint",
        };
        match template.render(&sample) {
            Some(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(template)
            }
            _ => Err(
                "must be an absolute http(s) URL once its placeholders are filled (begin \
                 it with {authorization_origin}, {issuer} or https://…)"
                    .to_owned(),
            ),
        }
    }

    /// Whether the URL carries the logout's `state` (so the provider may send it back).
    pub fn sends_state(&self) -> bool {
        self.0.contains("{state}")
    }

    /// The template filled with `values` (each URL-encoded, but the origin and the issuer);
    /// `None` when the result is no URL.
    pub fn render(&self, values: &TemplateValues<'_>) -> Option<Url> {
        let mut text = String::with_capacity(self.0.len());
        for piece in self.pieces().ok()? {
            match piece {
                Piece::Text(literal) => text.push_str(literal),
                Piece::Placeholder(name) if VERBATIM.contains(&name) => {
                    text.push_str(values.value(name))
                }
                Piece::Placeholder(name) => {
                    text.extend(byte_serialize(values.value(name).as_bytes()))
                }
            }
        }
        Url::parse(&text).ok()
    }

    /// The template as literal text and placeholders; an unknown or unclosed one is an error.
    fn pieces(&self) -> Result<Vec<Piece<'_>>, String> {
        let mut pieces = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            pieces.push(Piece::Text(&rest[..open]));
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "has a '{' without its '}'".to_owned())?;
            let name = &after[..close];
            let known = PLACEHOLDERS
                .iter()
                .find(|known| **known == name)
                .ok_or_else(|| {
                    format!(
                        "has an unknown placeholder {{{name}}} (known: {})",
                        PLACEHOLDERS
                            .iter()
                            .map(|known| format!("{{{known}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            pieces.push(Piece::Placeholder(known));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err("has a '}' without its '{'".to_owned());
        }
        pieces.push(Piece::Text(rest));
        Ok(pieces)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues<'static> {
        TemplateValues {
            authorization_origin: "https://pool.auth.eu-west-1.amazoncognito.com",
            issuer: "https://tenant.eu.auth0.com/",
            client_id: "my client",
            post_logout_redirect_uri: "https://app.example/api/auth/logout-callback",
            id_token_hint: "a.b.c",
            state: "s&t=1",
            logout_hint: "",
        }
    }

    #[test]
    fn a_template_fills_each_placeholder_encoding_all_but_the_origin_and_issuer() {
        let cognito = LogoutTemplate::parse(
            "{authorization_origin}/logout?client_id={client_id}&logout_uri={post_logout_redirect_uri}",
        )
        .unwrap();
        assert_eq!(
            cognito.render(&values()).unwrap().as_str(),
            "https://pool.auth.eu-west-1.amazoncognito.com/logout?client_id=my+client\
             &logout_uri=https%3A%2F%2Fapp.example%2Fapi%2Fauth%2Flogout-callback"
        );
        assert!(!cognito.sends_state());
        let all = LogoutTemplate::parse(
            "{issuer}/v2/logout?returnTo={post_logout_redirect_uri}&id_token_hint={id_token_hint}\
             &state={state}&logout_hint={logout_hint}",
        )
        .unwrap();
        let url = all.render(&values()).unwrap();
        assert_eq!(
            url.path(),
            "/v2/logout",
            "the issuer's trailing slash is dropped"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(
            pairs.contains(&("state".into(), "s&t=1".into())),
            "{pairs:?}"
        );
        assert!(pairs.contains(&("logout_hint".into(), String::new())));
        assert!(all.sends_state());
    }

    #[test]
    fn a_template_with_an_unknown_placeholder_or_no_absolute_url_is_refused() {
        for (template, problem) in [
            (
                "{authorization_origin}/logout?x={tenant}",
                "unknown placeholder {tenant}",
            ),
            (
                "{authorization_origin}/logout?x={client_id",
                "without its '}'",
            ),
            ("{authorization_origin}/logout?x=}", "without its '{'"),
            ("/logout?client_id={client_id}", "absolute http(s) URL"),
            ("javascript:alert({client_id})", "absolute http(s) URL"),
        ] {
            let error = LogoutTemplate::parse(template).unwrap_err();
            assert!(error.contains(problem), "{template}: {error}");
        }
        assert!(LogoutTemplate::parse("https://login.example/logout").is_ok());
    }
}
