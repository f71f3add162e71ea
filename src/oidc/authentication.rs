//! What a login asks of the user's authentication (OIDC Core §3.1.2.1: `acr_values`, `max_age`,
//! `prompt`), validated from the login start's query, and the check at the callback that the ID
//! token shows the provider authenticated as asked (§2, §3.1.2.1, §5.5.1.1).
//!
//! Pure: no network, no clock (the time is passed in). Vestibule enforces the `acr` it asked for,
//! although the standard makes `acr_values` a voluntary claim: a session whose `acr` is not one
//! the route accepts would be sent to log in again and again ([`crate::authz::decide`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::authz::unix_seconds;

/// The most `acr` values one login may ask for.
pub const MAX_ACR_VALUES: usize = 10;

/// The longest `acr_values` parameter accepted (bytes, separators included).
pub const MAX_ACR_VALUES_LEN: usize = 512;

/// The largest `max_age` accepted: one year, in seconds.
pub const MAX_MAX_AGE_SECS: u64 = 365 * 24 * 60 * 60;

/// How far the provider's clock may be behind ours when `auth_time` is checked against `max_age`
/// (as for a logout token's `iat`).
pub const AUTH_TIME_LEEWAY_SECS: u64 = 30;

/// The `error` codes with which a provider answers `prompt=none` when it would have to show a
/// page (OIDC Core §3.1.2.6): the user is not signed in there, or must consent or choose.
pub const SILENT_LOGIN_ERRORS: [&str; 4] = [
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
];

/// The `prompt` values of OIDC Core §3.1.2.1.
const PROMPT_VALUES: [&str; 4] = ["none", "login", "consent", "select_account"];

/// What a login asks the provider for, beyond identifying the user. Empty by default: a plain
/// login. Kept in the pending login so the callback checks what was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationRequest {
    /// `acr_values`: the ID token's `acr` must be one of these (empty: not asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// `max_age` in seconds: the ID token must carry an `auth_time` at most this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// `prompt`, space-separated; replaces `oidc.prompt` for this login when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// Why a login start's authentication parameters were refused (a `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterError {
    /// `acr_values` is empty, too long, has too many values or a character outside visible ASCII.
    AcrValues,
    /// `max_age` is not a whole number of seconds from 0 to one year.
    MaxAge,
    /// `prompt` is not a space-separated set of `none`, `login`, `consent`, `select_account`,
    /// or combines `none` with another value.
    Prompt,
}

impl ParameterError {
    /// What is wrong, in words for the error page (a static string: no input is echoed).
    pub fn message(self) -> &'static str {
        match self {
            Self::AcrValues => {
                "acr_values must be 1 to 10 space-separated values of visible ASCII, at most 512 \
                 characters"
            }
            Self::MaxAge => "max_age must be a whole number of seconds from 0 to 31536000",
            Self::Prompt => {
                "prompt must be none (alone) or a space-separated set of login, consent and \
                 select_account"
            }
        }
    }
}

impl std::fmt::Display for ParameterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParameterError {}

/// How the ID token fell short of what the login asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    /// `acr_values` was sent and the `acr` is missing or not one of them.
    #[error("the ID token's acr is missing or not one of the requested acr_values")]
    AcrNotRequested,
    /// `max_age` was sent and the ID token has no `auth_time` (OIDC Core §2 requires it).
    #[error("max_age was requested and the ID token has no auth_time")]
    AuthTimeMissing,
    /// `auth_time + max_age` is before now (beyond the leeway).
    #[error("the ID token's auth_time is older than the requested max_age")]
    AuthenticationTooOld,
}

impl AuthenticationRequest {
    /// Reads the login start's `acr_values`, `max_age` and `prompt` (each absent: not asked).
    pub fn parse(
        acr_values: Option<&str>,
        max_age: Option<&str>,
        prompt: Option<&str>,
    ) -> Result<Self, ParameterError> {
        Ok(Self {
            acr_values: acr_values
                .map(parse_acr_values)
                .transpose()?
                .unwrap_or_default(),
            max_age: max_age.map(parse_max_age).transpose()?,
            prompt: prompt.map(parse_prompt).transpose()?,
        })
    }

    /// Whether this is a silent check (`prompt=none`): the provider shows no page.
    pub fn is_silent(&self) -> bool {
        self.prompt.as_deref() == Some("none")
    }

    /// The provider's `error` at the callback, as one of [`SILENT_LOGIN_ERRORS`], when it is
    /// its "not without showing a page" answer to this silent check (never for a login that
    /// may show pages).
    pub fn declined_silently(&self, error: &str) -> Option<&'static str> {
        SILENT_LOGIN_ERRORS
            .into_iter()
            .find(|code| *code == error)
            .filter(|_| self.is_silent())
    }

    /// Checks the verified ID token's `claims` against what was asked, at `now` (unix seconds).
    pub fn check(&self, claims: &Map<String, Value>, now: u64) -> Result<(), Shortfall> {
        if !self.acr_values.is_empty() {
            let acr = claims.get("acr").and_then(Value::as_str);
            if !acr.is_some_and(|acr| self.acr_values.iter().any(|value| value == acr)) {
                return Err(Shortfall::AcrNotRequested);
            }
        }
        if let Some(max_age) = self.max_age {
            let auth_time = claims
                .get("auth_time")
                .and_then(unix_seconds)
                .ok_or(Shortfall::AuthTimeMissing)?;
            let valid_until = auth_time
                .saturating_add(max_age)
                .saturating_add(AUTH_TIME_LEEWAY_SECS);
            if valid_until < now {
                return Err(Shortfall::AuthenticationTooOld);
            }
        }
        Ok(())
    }
}

fn parse_acr_values(raw: &str) -> Result<Vec<String>, ParameterError> {
    if raw.len() > MAX_ACR_VALUES_LEN || raw.bytes().any(|b| !(b == b' ' || b.is_ascii_graphic())) {
        return Err(ParameterError::AcrValues);
    }
    let values: Vec<String> = raw
        .split(' ')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if values.is_empty() || values.len() > MAX_ACR_VALUES {
        return Err(ParameterError::AcrValues);
    }
    Ok(values)
}

fn parse_max_age(raw: &str) -> Result<u64, ParameterError> {
    // Digits only: `u64::from_str` would also take a leading `+`.
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParameterError::MaxAge);
    }
    raw.parse::<u64>()
        .ok()
        .filter(|secs| *secs <= MAX_MAX_AGE_SECS)
        .ok_or(ParameterError::MaxAge)
}

fn parse_prompt(raw: &str) -> Result<String, ParameterError> {
    let mut seen = BTreeSet::new();
    for value in raw.split(' ').filter(|v| !v.is_empty()) {
        if !PROMPT_VALUES.contains(&value) || !seen.insert(value) {
            return Err(ParameterError::Prompt);
        }
    }
    if seen.is_empty() || (seen.contains("none") && seen.len() > 1) {
        return Err(ParameterError::Prompt);
    }
    // In the order of the specification, whatever order the caller wrote them in.
    let ordered: Vec<&str> = PROMPT_VALUES
        .into_iter()
        .filter(|value| seen.contains(value))
        .collect();
    Ok(ordered.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parses_each_parameter_within_its_bounds() {
        let request =
            AuthenticationRequest::parse(Some("mfa  urn:x:loa:2"), Some("300"), Some("login"))
                .unwrap();
        assert_eq!(request.acr_values, ["mfa", "urn:x:loa:2"]);
        assert_eq!(request.max_age, Some(300));
        assert_eq!(request.prompt.as_deref(), Some("login"));
        assert_eq!(
            AuthenticationRequest::parse(None, None, None).unwrap(),
            AuthenticationRequest::default()
        );
        assert_eq!(
            AuthenticationRequest::parse(None, Some("0"), None)
                .unwrap()
                .max_age,
            Some(0)
        );
        let ordered = AuthenticationRequest::parse(None, None, Some("select_account login"));
        assert_eq!(
            ordered.unwrap().prompt.as_deref(),
            Some("login select_account")
        );
        let ten = ["a"; 10].join(" ");
        assert!(AuthenticationRequest::parse(Some(&ten), None, None).is_ok());
    }

    #[test]
    fn refuses_each_bad_value_with_its_parameter_named() {
        let eleven = ["a"; 11].join(" ");
        let long = "a".repeat(513);
        for bad in ["", " ", "a\tb", "é", "a\"\u{7f}", &eleven, &long] {
            assert_eq!(
                AuthenticationRequest::parse(Some(bad), None, None),
                Err(ParameterError::AcrValues),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "-1",
            "+5",
            "1.5",
            "abc",
            "31536001",
            "99999999999",
            " 5",
        ] {
            assert_eq!(
                AuthenticationRequest::parse(None, Some(bad), None),
                Err(ParameterError::MaxAge),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "None",
            "none login",
            "consent none",
            "login login",
            "create",
            "login,consent",
        ] {
            assert_eq!(
                AuthenticationRequest::parse(None, None, Some(bad)),
                Err(ParameterError::Prompt),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_acr_must_be_one_of_those_asked_for() {
        let asked = AuthenticationRequest::parse(Some("mfa gold"), None, None).unwrap();
        assert_eq!(asked.check(&claims(json!({ "acr": "gold" })), NOW), Ok(()));
        for weaker in [json!({ "acr": "1" }), json!({}), json!({ "acr": 2 })] {
            assert_eq!(
                asked.check(&claims(weaker.clone()), NOW),
                Err(Shortfall::AcrNotRequested),
                "{weaker}"
            );
        }
        let plain = AuthenticationRequest::default();
        assert_eq!(plain.check(&claims(json!({})), NOW), Ok(()));
    }

    #[test]
    fn max_age_needs_a_recent_enough_auth_time_with_a_little_leeway() {
        let asked = AuthenticationRequest::parse(None, Some("60"), None).unwrap();
        let at = |auth_time: Value| asked.check(&claims(json!({ "auth_time": auth_time })), NOW);
        assert_eq!(at(json!(NOW - 5)), Ok(()));
        assert_eq!(at(json!(NOW - 60 - AUTH_TIME_LEEWAY_SECS)), Ok(()));
        assert_eq!(
            at(json!(NOW - 61 - AUTH_TIME_LEEWAY_SECS)),
            Err(Shortfall::AuthenticationTooOld)
        );
        assert_eq!(at(json!((NOW - 5) as f64 + 0.5)), Ok(()));
        assert_eq!(at(json!("recently")), Err(Shortfall::AuthTimeMissing));
        assert_eq!(
            asked.check(&claims(json!({})), NOW),
            Err(Shortfall::AuthTimeMissing)
        );
    }

    #[test]
    fn only_a_silent_check_is_declined_silently() {
        let silent = AuthenticationRequest::parse(None, None, Some("none")).unwrap();
        assert!(silent.is_silent());
        for code in SILENT_LOGIN_ERRORS {
            assert_eq!(silent.declined_silently(code), Some(code));
        }
        assert_eq!(silent.declined_silently("access_denied"), None);
        let interactive = AuthenticationRequest::parse(None, None, Some("login")).unwrap();
        assert_eq!(interactive.declined_silently("login_required"), None);
    }

    #[test]
    fn an_empty_request_is_stored_as_nothing() {
        assert_eq!(
            serde_json::to_string(&AuthenticationRequest::default()).unwrap(),
            "{}"
        );
        let old: AuthenticationRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(old, AuthenticationRequest::default());
    }
}
