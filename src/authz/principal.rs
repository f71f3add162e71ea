//! The user as route policies see them: built once at login (and again at each refresh) from the
//! session's merged claims, kept in the sealed session record, read on every proxied call
//! without parsing a token. Pure.
//!
//! It keeps the subject, `acr` and `auth_time` apart (step-up reads them) and every other claim
//! except the protocol ones, which no rule should read ([`DROPPED_CLAIMS`]). Serialized compactly
//! (one-letter names, nothing for what is absent): for a Keycloak user with realm and client roles,
//! name and email it is about 350 bytes of MessagePack (measured in the tests below). Not
//! `Debug`-printable beyond counts: the claims are personal data.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protocol claims a principal does not keep: who issued the token, for whom, when, and the
/// references to claims held elsewhere (OIDC Core §5.6.2), which become [`Principal::unavailable`].
pub(super) const DROPPED_CLAIMS: [&str; 16] = [
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "jti",
    "sid",
    "session_state",
    "typ",
    "_claim_names",
    "_claim_sources",
];

/// Protocol claims a principal keeps in fields of their own, not among [`Principal::claims`].
pub(super) const KEPT_PROTOCOL_CLAIMS: [&str; 3] = ["sub", "acr", "auth_time"];

/// The most claim names kept as unavailable (a verified ID token names a handful at most).
const MAX_UNAVAILABLE: usize = 16;

/// The signed-in user, as the session's claims describe them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    #[serde(rename = "s")]
    subject: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    acr: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
    #[serde(rename = "c", default, skip_serializing_if = "Map::is_empty")]
    claims: Map<String, Value>,
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    unavailable: Vec<String>,
}

impl Principal {
    /// The principal the merged claims (ID token's with UserInfo's) describe; `None` without a
    /// string `sub` (a verified ID token always has one).
    ///
    /// A claim named in `_claim_names` but absent is [`Self::unavailable`], as is `groups` when
    /// Entra ID says `hasgroups: true` without listing them (its overage in implicit flows).
    pub fn from_claims(claims: &Map<String, Value>) -> Option<Self> {
        let subject = claims.get("sub")?.as_str()?.to_owned();
        let acr = claims.get("acr").and_then(Value::as_str).map(str::to_owned);
        let auth_time = claims.get("auth_time").and_then(unix_seconds);
        let mut unavailable: Vec<String> = claims
            .get("_claim_names")
            .and_then(Value::as_object)
            .map(|names| {
                names
                    .keys()
                    .filter(|name| !claims.contains_key(*name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if claims.get("hasgroups") == Some(&Value::Bool(true)) && !claims.contains_key("groups") {
            unavailable.push("groups".to_owned());
        }
        unavailable.sort();
        unavailable.dedup();
        unavailable.truncate(MAX_UNAVAILABLE);
        let kept = claims
            .iter()
            .filter(|(name, _)| {
                !DROPPED_CLAIMS.contains(&name.as_str())
                    && !KEPT_PROTOCOL_CLAIMS.contains(&name.as_str())
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Self {
            subject,
            acr,
            auth_time,
            claims: kept,
            unavailable,
        })
    }

    /// The subject (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The authentication context class reference (`acr`), if the provider named one.
    pub fn acr(&self) -> Option<&str> {
        self.acr.as_deref()
    }

    /// When the user last authenticated (`auth_time`, unix seconds), if the provider said.
    pub fn auth_time(&self) -> Option<u64> {
        self.auth_time
    }

    /// The claims rules read: all but the protocol claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// Claims the provider only referenced (`_claim_names`) and did not deliver.
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }
}

/// A JWT NumericDate claim (`auth_time`) as whole unix seconds: an integer, or a non-negative
/// number truncated (RFC 7519 §2 allows fractions).
pub fn unix_seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < u64::MAX as f64)
            .map(|seconds| seconds as u64)
    })
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("claims", &self.claims.len())
            .field("acr", &self.acr)
            .field("auth_time", &self.auth_time)
            .field("unavailable", &self.unavailable)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// What Keycloak's ID token for the bundled realm's `alice` carries, UserInfo merged.
    fn keycloak_alice() -> Map<String, Value> {
        map(json!({
            "exp": 1_767_000_300, "iat": 1_767_000_000, "auth_time": 1_766_999_990,
            "jti": "7c0b7f5e-1c1b-4a8e-9e55-0a6b1e0c2f11",
            "iss": "http://127.0.0.1:8080/realms/vestibule", "aud": "vestibule",
            "sub": "5d0f3b8a-1e7c-4a53-8c0e-2b1f6c9d4e7a", "typ": "ID", "azp": "vestibule",
            "nonce": "Jw2yq7m0pY2sZ1cVZ8yH4Q", "session_state": "a9d3f0c2-6b7e-4c1d-9f2a-3e5b8c7d6a10",
            "at_hash": "x1y2z3w4v5u6t7s8r9q0pA", "acr": "1",
            "sid": "a9d3f0c2-6b7e-4c1d-9f2a-3e5b8c7d6a10",
            "email_verified": true, "name": "Alice Liddell", "preferred_username": "alice",
            "given_name": "Alice", "family_name": "Liddell", "email": "alice@example.com",
            "realm_access": { "roles": ["admin", "default-roles-vestibule", "offline_access", "uma_authorization"] },
            "resource_access": { "account": { "roles": ["manage-account", "manage-account-links", "view-profile"] } },
        }))
    }

    #[test]
    fn keeps_identity_and_rule_claims_and_drops_protocol_claims() {
        let principal = Principal::from_claims(&keycloak_alice()).unwrap();
        assert_eq!(principal.subject(), "5d0f3b8a-1e7c-4a53-8c0e-2b1f6c9d4e7a");
        assert_eq!(principal.acr(), Some("1"));
        assert_eq!(principal.auth_time(), Some(1_766_999_990));
        for name in DROPPED_CLAIMS.iter().chain(&KEPT_PROTOCOL_CLAIMS) {
            assert!(!principal.claims().contains_key(*name), "{name}");
        }
        assert_eq!(principal.claims()["realm_access"]["roles"][0], "admin");
        assert_eq!(principal.claims()["email"], "alice@example.com");
        assert!(principal.unavailable().is_empty());
    }

    #[test]
    fn round_trips_compactly_in_the_records_encoding() {
        let principal = Principal::from_claims(&keycloak_alice()).unwrap();
        let packed = rmp_serde::to_vec_named(&principal).unwrap();
        assert!(packed.len() < 400, "{} bytes of MessagePack", packed.len());
        assert!(rmp_serde::from_slice::<Principal>(&packed).unwrap() == principal);
        let json = serde_json::to_string(&principal).unwrap();
        assert!(json.starts_with(r#"{"s":"#), "{json}");
        assert!(serde_json::from_str::<Principal>(&json).unwrap() == principal);

        let bare = Principal::from_claims(&map(json!({ "sub": "bob" }))).unwrap();
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"s":"bob"}"#,
            "nothing absent written"
        );
    }

    #[test]
    fn needs_a_string_subject_and_reads_auth_time_leniently() {
        assert!(Principal::from_claims(&map(json!({ "name": "x" }))).is_none());
        assert!(Principal::from_claims(&map(json!({ "sub": 7 }))).is_none());
        let float =
            Principal::from_claims(&map(json!({ "sub": "a", "auth_time": 12.9, "acr": 2 })))
                .unwrap();
        assert_eq!(float.auth_time(), Some(12));
        assert_eq!(float.acr(), None, "a non-string acr is no acr");
        let negative =
            Principal::from_claims(&map(json!({ "sub": "a", "auth_time": -1 }))).unwrap();
        assert_eq!(negative.auth_time(), None);
    }

    #[test]
    fn referenced_claims_are_unavailable() {
        let entra = map(json!({
            "sub": "a", "_claim_names": { "groups": "src1", "name": "src1" },
            "_claim_sources": { "src1": { "endpoint": "https://graph.microsoft.com/v1.0/x" } },
            "name": "delivered anyway",
        }));
        let principal = Principal::from_claims(&entra).unwrap();
        assert_eq!(principal.unavailable(), ["groups"]);
        assert!(!principal.claims().contains_key("_claim_sources"));

        let implicit = map(json!({ "sub": "a", "hasgroups": true }));
        assert_eq!(
            Principal::from_claims(&implicit).unwrap().unavailable(),
            ["groups"]
        );
    }

    #[test]
    fn debug_shows_no_claim_value() {
        let shown = format!("{:?}", Principal::from_claims(&keycloak_alice()).unwrap());
        assert!(
            !shown.contains("alice") && !shown.contains("admin") && !shown.contains("5d0f"),
            "{shown}"
        );
    }
}
