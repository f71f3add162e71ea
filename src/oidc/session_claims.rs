//! What a session's claims are: the ID token's, merged with those UserInfo (and the claim
//! sources it names) answered; which claims never move; how large the UserInfo part may be.
//! Pure: shared by [`super::userinfo`] and [`super::claim_sources`].

use serde_json::{Map, Value};

/// The ID token's claims that no UserInfo answer replaces: who the user is, for whom and when
/// the token was issued, and how the user authenticated.
pub const PROTOCOL_CLAIMS: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "sid",
    "at_hash",
    "c_hash",
    "jti",
];

/// The most UserInfo claims a session keeps (their JSON, in bytes): every session record
/// carries them. A larger answer is unusable (refused under `required`, ignored under `auto`),
/// never trimmed, so no claim a rule may depend on goes missing unnoticed.
pub const MAX_USERINFO_CLAIMS_BYTES: usize = 4096;

/// The size of `claims` (their JSON, in bytes) when it is over [`MAX_USERINFO_CLAIMS_BYTES`].
pub(super) fn oversize(claims: &Map<String, Value>) -> Option<usize> {
    let size = serde_json::to_vec(claims).map_or(usize::MAX, |json| json.len());
    (size > MAX_USERINFO_CLAIMS_BYTES).then_some(size)
}

/// The session's claims: the ID token's, with UserInfo's wherever UserInfo has a claim (its
/// profile data is the fresher, re-read at each refresh), except the [`PROTOCOL_CLAIMS`], where
/// the ID token's always stand.
pub fn merge_claims(
    mut id_token: Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> Map<String, Value> {
    for (name, value) in userinfo {
        if !PROTOCOL_CLAIMS.contains(&name.as_str()) {
            id_token.insert(name.clone(), value.clone());
        }
    }
    id_token
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

    #[test]
    fn userinfo_wins_for_profile_claims_and_never_for_protocol_ones() {
        let id_token = map(json!({
            "iss": "https://op", "sub": "alice", "aud": "vestibule", "exp": 10, "iat": 1,
            "nonce": "n", "acr": "1", "amr": ["pwd"], "sid": "s", "auth_time": 1,
            "name": "Old Name", "email": "a@old",
        }));
        let userinfo = map(json!({
            "sub": "mallory", "iss": "https://evil", "aud": "other", "exp": 99, "acr": "0",
            "amr": [], "sid": "x", "nonce": "m", "auth_time": 5, "jti": "j", "azp": "other",
            "name": "New Name", "groups": ["admins"],
        }));
        let merged = merge_claims(id_token.clone(), &userinfo);
        assert_eq!(merged["name"], "New Name", "UserInfo is the fresher");
        assert_eq!(
            merged["groups"],
            json!(["admins"]),
            "UserInfo-only claims are added"
        );
        assert_eq!(merged["email"], "a@old", "ID-token-only claims stay");
        for protocol in PROTOCOL_CLAIMS {
            assert_eq!(merged.get(protocol), id_token.get(protocol), "{protocol}");
        }
    }
}
