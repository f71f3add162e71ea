//! Which provider a login goes to: the one `provider=ID` names, the one whose issuer a
//! third-party-initiated login's `iss` names, the only one, or, with several and neither
//! given, the user's choice on a small page listing each (`templates/login_chooser.html`).
//!
//! It only chooses: the login itself is [`crate::workflows::login`]'s. The page carries the
//! login's other parameters (`acr_values`, `login_hint`, …) into each provider's link, and
//! `returnTo` only as already validated (a local path), so the page never relays a foreign
//! URL; every value is URL-encoded and the template HTML-escapes it.

use std::sync::Arc;

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::no_store;
use crate::error::AppError;
use crate::http::QueryParams;
use crate::oidc::{Provider, Providers};

/// The login's query parameter naming a provider by id.
pub const PROVIDER_PARAMETER: &str = "provider";

/// Where a login goes.
pub enum Choice {
    /// To this provider.
    Provider(Arc<Provider>),
    /// To the chooser page: several providers, none named.
    Chooser,
}

/// The login parameters a chooser link does not copy: the provider it sets itself, and where
/// to return, which it sets from the validated value.
const NOT_COPIED: [&str; 3] = [PROVIDER_PARAMETER, "returnTo", "target_link_uri"];

/// The provider `query` asks for among `providers` (`provider`, else `iss`), the only one,
/// or the chooser; a `400` for an id (`unknown_provider`) or issuer no provider has, or for
/// both disagreeing.
pub fn choose(providers: &Providers, query: &QueryParams) -> Result<Choice, AppError> {
    let by_id = match query.get(PROVIDER_PARAMETER) {
        None => None,
        Some(id) => Some(providers.by_id(id).ok_or(AppError::UnknownProvider)?),
    };
    let by_issuer = match query.get("iss") {
        None => None,
        Some(iss) => Some(providers.by_issuer(iss).ok_or(AppError::BadRequest(
            "the login was initiated for another issuer",
        ))?),
    };
    match (by_id, by_issuer) {
        (Some(named), Some(issuing)) if named.id() != issuing.id() => Err(AppError::BadRequest(
            "the login names one provider and the issuer of another",
        )),
        (Some(provider), _) | (None, Some(provider)) => Ok(Choice::Provider(provider.clone())),
        (None, None) if providers.is_several() => Ok(Choice::Chooser),
        (None, None) => Ok(Choice::Provider(providers.first().clone())),
    }
}

/// Whether a failed choice is answered as JSON: the request asks for JSON and not for a page
/// (a script's `fetch`; a browser navigation always accepts `text/html`).
pub fn asks_for_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// One provider on the page.
struct ProviderLink {
    name: String,
    href: String,
}

#[derive(Template)]
#[template(path = "login_chooser.html")]
struct ChooserPage {
    options: Vec<ProviderLink>,
}

/// The chooser page: each provider's name, linked to this login with `provider=ID`, the
/// validated `return_to` and the same other parameters. Never cached; no script; framed by
/// nobody.
pub fn chooser_page(providers: &Providers, query: &QueryParams, return_to: &str) -> Response {
    let options = providers
        .iter()
        .map(|provider| {
            let mut link = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in query.iter() {
                if !NOT_COPIED.contains(&name) {
                    link.append_pair(name, value);
                }
            }
            link.append_pair("returnTo", return_to);
            link.append_pair(PROVIDER_PARAMETER, provider.id());
            ProviderLink {
                name: provider.name().to_owned(),
                href: format!("{}?{}", crate::error::LOGIN_URL, link.finish()),
            }
        })
        .collect();
    let html = ChooserPage { options }.render().unwrap_or_else(|_| {
        "<!doctype html><title>Sign in</title><p>Choose a provider.</p>".into()
    });
    let mut response = (StatusCode::OK, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::ProviderSettings;

    fn providers(count: usize) -> Providers {
        let provider = |id: &str| {
            Provider::new(ProviderSettings::for_testing(
                id,
                &format!("https://{id}.example"),
            ))
            .unwrap()
        };
        let others = ["partners", "bank"][..count - 1]
            .iter()
            .map(|id| provider(id))
            .collect();
        Providers::new(provider("staff"), others)
    }

    fn chosen(providers: &Providers, query: &str) -> Result<String, String> {
        match choose(providers, &QueryParams::parse(Some(query))) {
            Ok(Choice::Provider(provider)) => Ok(provider.id().to_owned()),
            Ok(Choice::Chooser) => Ok("chooser".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn a_login_goes_to_the_named_provider_the_issuers_the_only_one_or_the_chooser() {
        let several = providers(3);
        assert_eq!(chosen(&several, "provider=partners").unwrap(), "partners");
        assert_eq!(
            chosen(&several, "iss=https%3A%2F%2Fbank.example").unwrap(),
            "bank"
        );
        assert_eq!(chosen(&several, "returnTo=%2Fx").unwrap(), "chooser");
        assert_eq!(chosen(&providers(1), "").unwrap(), "staff", "no chooser");
        assert_eq!(
            chosen(&providers(1), "provider=staff").unwrap(),
            "staff",
            "the only one may be named"
        );
        let unknown = chosen(&several, "provider=nobody").unwrap_err();
        assert!(unknown.contains("unknown provider"), "{unknown}");
        assert!(chosen(&several, "iss=https%3A%2F%2Fevil.example").is_err());
        let disagreeing =
            chosen(&several, "provider=partners&iss=https%3A%2F%2Fbank.example").unwrap_err();
        assert!(disagreeing.contains("issuer of another"), "{disagreeing}");
    }

    #[tokio::test]
    async fn the_chooser_links_each_provider_carrying_only_a_validated_return_path() {
        let query = QueryParams::parse(Some(
            "returnTo=https%3A%2F%2Fevil.example%2F&acr_values=gold&provider=x\
             &login_hint=%22%3E%3Cscript%3E",
        ));
        let response = chooser_page(&providers(2), &query, "/orders?a=1&b=2");
        assert_eq!(response.status(), StatusCode::OK);
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].clone();
        assert!(csp.to_str().unwrap().contains("frame-ancestors 'none'"));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let page = String::from_utf8(body.to_vec()).unwrap();
        assert!(page.contains("staff (name)") && page.contains("partners (name)"));
        assert!(!page.contains("evil.example"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains(
                "/api/auth/login?acr_values=gold&#38;login_hint=%22%3E%3Cscript%3E\
                 &#38;returnTo=%2Forders%3Fa%3D1%26b%3D2&#38;provider=partners"
            ),
            "{page}"
        );
    }
}
