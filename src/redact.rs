//! How a URL is shown wherever Vestibule writes one for people to read: log lines, error
//! messages, `--check-config`. A credential written into a URL (`https://user:pass@host/…`,
//! `…?api_key=…`) must never be repeated there, so every such URL goes through [`url`], the
//! one place that decides what is hidden.
//!
//! It depends on nothing of Vestibule's own, so every layer (`config`, `oidc`, …) may use it
//! without an import cycle. It only formats: the URLs that are *used* keep their credentials.

use url::Url;

/// What a query value (or a fragment) is replaced with.
const HIDDEN: &str = "***";

/// `url` as it may be shown: without user name and password, with every query value replaced
/// by `***` (the parameter names stay, so a reader sees which ones are set) and any fragment
/// replaced too. Scheme, host, port and path are shown as they are.
pub fn url(url: &Url) -> String {
    let mut shown = url.clone();
    // Fails only for URLs that cannot have credentials (`mailto:`, `data:`): nothing to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = String::from(shown);
    if let Some(query) = url.query() {
        text.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                text.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) => {
                    text.push_str(name);
                    text.push('=');
                    text.push_str(HIDDEN);
                }
                // A bare value (`?token`) may be the secret itself: nothing of it is shown.
                None if !pair.is_empty() => text.push_str(HIDDEN),
                None => {}
            }
        }
    }
    if url.fragment().is_some() {
        text.push('#');
        text.push_str(HIDDEN);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        url(&Url::parse(text).unwrap())
    }

    #[test]
    fn user_name_and_password_are_removed() {
        assert_eq!(
            shown("https://svc:s3cr3t@idp.example.com/realms/x/.well-known/openid-configuration"),
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            shown("http://only-a-user@10.0.0.1:8080/v1"),
            "http://10.0.0.1:8080/v1"
        );
        assert_eq!(shown("http://:pw@[::1]:9000/"), "http://[::1]:9000/");
    }

    #[test]
    fn query_values_are_hidden_and_their_names_kept() {
        assert_eq!(
            shown("https://otlp.example.com/?api_key=abc123&tenant=t%201"),
            "https://otlp.example.com/?api_key=***&tenant=***"
        );
        assert_eq!(
            shown("https://x.example/p?empty=&bare-secret-value"),
            "https://x.example/p?empty=***&***"
        );
        assert_eq!(shown("https://x.example/p?"), "https://x.example/p?");
        assert_eq!(
            shown("https://u:p@x.example/p?k=v#access_token=t"),
            "https://x.example/p?k=***#***"
        );
    }

    #[test]
    fn a_url_without_secrets_is_shown_as_it_is() {
        for plain in [
            "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
            "http://127.0.0.1:9000/v1/",
            "https://collector.example.com:4318/v1/traces",
        ] {
            assert_eq!(shown(plain), plain);
        }
    }
}
