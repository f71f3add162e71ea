//! Reading an upstream's `401` challenge: whether its `WWW-Authenticate` says the bearer token
//! is invalid (RFC 6750 §3.1 `error="invalid_token"`: expired, revoked, malformed), the one
//! answer a refresh can cure, or that the user's authentication is not strong or recent
//! enough (RFC 9470 `error="insufficient_user_authentication"`), which a new login cures, or,
//! to a DPoP-bound token (RFC 9449 §9), that the proof must carry the upstream's nonce
//! (`DPoP error="use_dpop_nonce"`). A challenge counts only under the scheme the token was sent
//! with ([`Scheme`]). Parsed as RFC 9110 §11.6.1 writes challenges: schemes and
//! parameter names case-insensitive, values tokens or quoted strings, several challenges per
//! field and several fields per response. It only reads headers; it never decides what to do.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::WWW_AUTHENTICATE;

/// The authentication scheme a token was sent with, whose challenges an answer is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP` with a proof (RFC 9449 §7.1).
    Dpop,
}

impl Scheme {
    /// The scheme's name as challenges write it.
    fn name(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Dpop => "dpop",
        }
    }
}

/// Whether a challenge of `scheme` in `headers` carries `error="invalid_token"`.
pub fn says_invalid_token(headers: &HeaderMap, scheme: Scheme) -> bool {
    challenges_of(headers, scheme)
        .iter()
        .any(|params| param(params, "error") == Some("invalid_token"))
}

/// Whether a `DPoP` challenge in `headers` asks for a proof with the server's nonce
/// (`error="use_dpop_nonce"`, RFC 9449 §9; the nonce itself is in `DPoP-Nonce`).
pub fn says_use_dpop_nonce(headers: &HeaderMap) -> bool {
    challenges_of(headers, Scheme::Dpop)
        .iter()
        .any(|params| param(params, "error") == Some(crate::oidc::dpop::USE_NONCE_ERROR))
}

/// What an upstream's RFC 9470 challenge (`Bearer error="insufficient_user_authentication"`)
/// demands of the user's authentication.
#[derive(Debug, PartialEq, Eq)]
pub struct StepUpDemand {
    /// `acr_values`, space-separated in the challenge (empty when not given).
    pub acr_values: Vec<String>,
    /// `max_age`, when given as whole seconds.
    pub max_age: Option<Duration>,
}

/// The authentication an RFC 9470 challenge of `scheme` in `headers` demands, if there is one.
pub fn step_up_demanded(headers: &HeaderMap, scheme: Scheme) -> Option<StepUpDemand> {
    challenges_of(headers, scheme)
        .iter()
        .find(|params| param(params, "error") == Some("insufficient_user_authentication"))
        .map(|params| StepUpDemand {
            acr_values: param(params, "acr_values")
                .map(|values| values.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            max_age: param(params, "max_age")
                .and_then(|secs| secs.parse::<u64>().ok())
                .map(Duration::from_secs),
        })
}

/// The parameters (`name` lower-cased, value unquoted) of every challenge of `scheme` in
/// `headers`.
fn challenges_of(headers: &HeaderMap, scheme: Scheme) -> Vec<Vec<(String, String)>> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(challenges)
        .filter(|(name, _)| name.eq_ignore_ascii_case(scheme.name()))
        .map(|(_, params)| params)
        .collect()
}

/// The value of parameter `name` among `params`.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The challenges of one `WWW-Authenticate` field value: each scheme with its parameters.
fn challenges(field: &str) -> Vec<(&str, Vec<(String, String)>)> {
    let mut challenges: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    for element in elements(field) {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        // `scheme [param]` starts a challenge; `name=value` continues the current one.
        let param = match split_scheme(element) {
            Some((scheme, rest)) => {
                challenges.push((scheme, Vec::new()));
                rest
            }
            None => element,
        };
        let Some((name, value)) = param.split_once('=') else {
            continue; // a token68 or an empty challenge
        };
        if let Some((_, params)) = challenges.last_mut() {
            params.push((name.trim().to_ascii_lowercase(), unquote(value.trim())));
        }
    }
    challenges
}

/// `element` as `(scheme, rest)` when it begins a challenge: a token followed by whitespace
/// (or nothing), not by `=`.
fn split_scheme(element: &str) -> Option<(&str, &str)> {
    let end = element
        .find(|c: char| !is_token_char(c))
        .unwrap_or(element.len());
    let (token, rest) = element.split_at(end);
    if token.is_empty() || rest.trim_start().starts_with('=') {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some((token, rest.trim_start()))
}

/// The comma-separated elements of a field value, commas inside quoted strings kept.
fn elements(field: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, c) in field.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                elements.push(&field[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    elements.push(&field[start..]);
    elements
}

/// A parameter value as a string: a token as it is, a quoted string without its quotes and
/// escapes.
fn unquote(value: &str) -> String {
    match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                } else {
                    out.push(c);
                    escaped = false;
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// RFC 9110 `tchar`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn says(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(value).unwrap());
        }
        says_invalid_token(&headers, Scheme::Bearer)
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_dpop_token_is_read_under_the_dpop_scheme_only() {
        let dpop = headers(&[r#"DPoP error="invalid_token", algs="ES256 PS256""#]);
        assert!(says_invalid_token(&dpop, Scheme::Dpop));
        assert!(!says_invalid_token(&dpop, Scheme::Bearer));
        let bearer = headers(&[r#"Bearer error="invalid_token""#]);
        assert!(!says_invalid_token(&bearer, Scheme::Dpop));
        let both = headers(&[r#"Bearer realm="api", dpop ERROR=invalid_token"#]);
        assert!(says_invalid_token(&both, Scheme::Dpop));
        assert!(
            step_up_demanded(
                &headers(&[r#"DPoP error="insufficient_user_authentication""#]),
                Scheme::Dpop
            )
            .is_some()
        );
    }

    #[test]
    fn a_nonce_is_asked_for_by_a_dpop_challenge_with_use_dpop_nonce() {
        for value in [
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
            r#"Bearer realm="x", DPoP algs="ES256", error=use_dpop_nonce"#,
            r#"dpop Error="use_dpop_nonce""#,
        ] {
            assert!(says_use_dpop_nonce(&headers(&[value])), "{value}");
        }
        for value in [
            r#"Bearer error="use_dpop_nonce""#,
            r#"DPoP error="invalid_token""#,
            r#"DPoP error_description="use_dpop_nonce""#,
            "DPoP",
        ] {
            assert!(!says_use_dpop_nonce(&headers(&[value])), "{value}");
        }
    }

    #[test]
    fn invalid_token_is_read_however_it_is_written() {
        for value in [
            r#"Bearer error="invalid_token""#,
            r#"Bearer realm="api", error="invalid_token", error_description="The access token expired""#,
            "bearer error=invalid_token",
            r#"BEARER   Error = "invalid_token""#,
            r#"Bearer realm="a, b", error="invalid_token""#,
            r#"Basic realm="x", Bearer error="invalid_token""#,
            r#"Bearer error="invalid\_token""#,
        ] {
            assert!(says(&[value]), "{value}");
        }
        assert!(says(&[
            r#"Basic realm="x""#,
            r#"Bearer error="invalid_token""#
        ]));
    }

    #[test]
    fn other_challenges_are_not_an_invalid_token() {
        for value in [
            "Bearer",
            r#"Bearer realm="api""#,
            r#"Bearer error="insufficient_scope", scope="orders""#,
            r#"Bearer error="invalid_request""#,
            r#"Basic error="invalid_token""#,
            r#"Bearer realm="error=invalid_token""#,
            r#"Bearer error_description="invalid_token""#,
            r#"DPoP error="invalid_token""#,
            r#"Basic realm="x", DPoP error="invalid_token""#,
        ] {
            assert!(!says(&[value]), "{value}");
        }
        assert!(!says(&[]));
    }

    fn demanded(value: &str) -> Option<StepUpDemand> {
        let mut headers = HeaderMap::new();
        headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(value).unwrap());
        step_up_demanded(&headers, Scheme::Bearer)
    }

    #[test]
    fn an_rfc_9470_challenge_names_what_it_demands() {
        assert_eq!(
            demanded(
                r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR mfa""#
            ),
            Some(StepUpDemand {
                acr_values: vec!["myACR".into(), "mfa".into()],
                max_age: None,
            })
        );
        assert_eq!(
            demanded(
                r#"Basic realm="x", Bearer error=insufficient_user_authentication, max_age="5""#
            ),
            Some(StepUpDemand {
                acr_values: Vec::new(),
                max_age: Some(Duration::from_secs(5)),
            })
        );
        for other in [
            r#"Bearer error="invalid_token""#,
            r#"DPoP error="insufficient_user_authentication""#,
            r#"Bearer error_description="insufficient_user_authentication""#,
        ] {
            assert_eq!(demanded(other), None, "{other}");
        }
    }
}
