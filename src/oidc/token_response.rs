//! The token endpoint's answer to the login's code exchange and to refreshes: openidconnect's
//! standard response, read leniently in one field. Entra ID's v1 and B2C endpoints send
//! `expires_in` as a string (`"3599"`), which the standard response refuses
//! (openidconnect-rs#106): a string of digits counts as that number, and any other value that
//! is not a whole number of seconds is taken as absent (the assumed lifetime applies), never as
//! a failed login.
//!
//! Only `expires_in` is touched, before the answer is read; the tokens are never altered.

use std::time::Duration;

use openidconnect::core::{
    CoreGenderClaim, CoreIdToken, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreTokenResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, EmptyAdditionalClaims, OAuth2TokenResponse, RefreshToken, Scope, TokenResponse,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A token response whose `expires_in` may also be a string of digits.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(super) struct LenientTokenResponse(CoreTokenResponse);

impl<'de> Deserialize<'de> for LenientTokenResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = Map::<String, Value>::deserialize(deserializer)?;
        lenient_expires_in(&mut fields);
        CoreTokenResponse::deserialize(Value::Object(fields))
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// Rewrites `expires_in` in `fields` to a whole number of seconds, or removes it: a number
/// stays, a string of digits becomes its number, anything else goes.
pub(super) fn lenient_expires_in(fields: &mut Map<String, Value>) {
    let seconds = match fields.get("expires_in") {
        None => return,
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => {
            let text = text.trim();
            text.bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
        }
        Some(_) => None,
    };
    match seconds {
        Some(seconds) => fields.insert("expires_in".into(), Value::from(seconds)),
        None => fields.remove("expires_in"),
    };
}

impl OAuth2TokenResponse for LenientTokenResponse {
    type TokenType = CoreTokenType;

    fn access_token(&self) -> &AccessToken {
        self.0.access_token()
    }

    fn token_type(&self) -> &CoreTokenType {
        self.0.token_type()
    }

    fn expires_in(&self) -> Option<Duration> {
        self.0.expires_in()
    }

    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.0.refresh_token()
    }

    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.0.scopes()
    }
}

impl
    TokenResponse<
        EmptyAdditionalClaims,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    > for LenientTokenResponse
{
    fn id_token(&self) -> Option<&CoreIdToken> {
        self.0.id_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(expires_in: &str) -> Result<LenientTokenResponse, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"access_token":"at","token_type":"Bearer"{expires_in}}}"#
        ))
    }

    #[test]
    fn expires_in_is_a_number_or_a_string_of_digits() {
        for (field, expected) in [
            (r#","expires_in":3599"#, Some(3599)),
            (r#","expires_in":"3599""#, Some(3599)),
            (r#","expires_in":" 60 ""#, Some(60)),
            ("", None),
        ] {
            let response = read(field).unwrap();
            assert_eq!(
                response.expires_in(),
                expected.map(Duration::from_secs),
                "{field}"
            );
            assert_eq!(response.access_token().secret(), "at");
        }
    }

    #[test]
    fn any_other_expires_in_is_taken_as_absent_not_as_a_bad_answer() {
        for field in [
            r#","expires_in":"soon""#,
            r#","expires_in":"-5""#,
            r#","expires_in":"1e3""#,
            r#","expires_in":"""#,
            r#","expires_in":-5"#,
            r#","expires_in":1.5"#,
            r#","expires_in":null"#,
            r#","expires_in":true"#,
            r#","expires_in":"99999999999999999999999""#,
        ] {
            let response = read(field).unwrap_or_else(|error| panic!("{field}: {error}"));
            assert_eq!(response.expires_in(), None, "{field}");
        }
    }

    #[test]
    fn the_rest_of_the_answer_is_read_as_strictly_as_before() {
        assert!(
            serde_json::from_str::<LenientTokenResponse>(r#"{"token_type":"Bearer"}"#).is_err()
        );
        assert!(serde_json::from_str::<LenientTokenResponse>("[1]").is_err());
    }
}
