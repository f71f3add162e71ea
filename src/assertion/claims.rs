//! The claim set of one identity assertion: who issued it (`iss`), for which service (`aud`),
//! about whom (`sub` with `idp`, the provider's issuer that vouches for it, `acr`, `auth_time`, the route's listed claims, each at the same place as
//! in the user's claims), for how long (`iat`, `exp`), and which login session (`sid`, a keyed
//! hash). Pure: no clock, no randomness, no key; the signer passes them in.

use serde_json::{Map, Value};

use crate::authz::{ClaimPath, Principal};

/// What an assertion is made of besides the user.
pub struct Envelope<'a> {
    /// `iss`: Vestibule's public origin.
    pub issuer: &'a str,
    /// `aud`: the route's audience.
    pub audience: &'a str,
    /// `iat` (unix seconds).
    pub issued_at: u64,
    /// `exp - iat`, in seconds.
    pub lifetime_secs: u64,
    /// `jti`: unique per assertion.
    pub id: &'a str,
    /// `sid`: the session's keyed hash, if the session has a handle.
    pub session: Option<&'a str>,
    /// `idp`: the provider's issuer that vouches for `sub` (the session's ID token's `iss`).
    pub idp: Option<&'a str>,
}

/// The claims of an assertion about `principal` with the route's `listed` claims.
///
/// A listed claim the user does not have is left out; the protocol claims above are never
/// overwritten by one (a [`ClaimPath`] cannot name them).
pub fn claim_set(
    envelope: &Envelope<'_>,
    principal: &Principal,
    listed: &[ClaimPath],
) -> Map<String, Value> {
    let mut claims = Map::new();
    for path in listed {
        if let Some((keys, value)) = path.locate(principal.claims()) {
            place(&mut claims, &keys, value);
        }
    }
    let mut set = |name: &str, value: Value| {
        claims.insert(name.to_owned(), value);
    };
    set("iss", envelope.issuer.into());
    set("aud", envelope.audience.into());
    set("sub", principal.subject().into());
    // Whose `sub` it is: with several providers one `sub` may name two people.
    if let Some(idp) = envelope.idp {
        set("idp", idp.into());
    }
    set("iat", envelope.issued_at.into());
    set(
        "exp",
        envelope
            .issued_at
            .saturating_add(envelope.lifetime_secs)
            .into(),
    );
    set("jti", envelope.id.into());
    if let Some(session) = envelope.session {
        set("sid", session.into());
    }
    if let Some(acr) = principal.acr() {
        set("acr", acr.into());
    }
    if let Some(auth_time) = principal.auth_time() {
        set("auth_time", auth_time.into());
    }
    claims
}

/// Puts `value` under the nested `keys` of `claims`, creating the objects on the way and
/// keeping what another listed claim put there (`realm_access.roles` beside
/// `realm_access.groups`). A place already holding a non-object is left as it is.
fn place(claims: &mut Map<String, Value>, keys: &[&str], value: &Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut object = claims;
    for key in parents {
        let entry = object
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = entry else {
            return;
        };
        object = inner;
    }
    object.insert((*last).to_owned(), value.clone());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn principal() -> Principal {
        let claims = json!({
            "sub": "alice-sub", "acr": "urn:mfa", "auth_time": 1_767_000_000u64,
            "iss": "https://op.example", "aud": "vestibule", "sid": "op-session",
            "email": "alice@example.com",
            "roles": ["admin", "user"],
            "realm_access": { "roles": ["admin"], "groups": ["staff"], "secret": "no" },
            "https://example.com/roles": ["editor"],
            "phone_number": "+1 555",
        });
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        Principal::from_claims(&claims).unwrap()
    }

    fn envelope() -> Envelope<'static> {
        Envelope {
            issuer: "https://app.example",
            audience: "https://orders.internal",
            issued_at: 1_767_000_100,
            lifetime_secs: 60,
            id: "jti-1",
            session: Some("sid-hash"),
            idp: Some("https://op.example"),
        }
    }

    fn paths(paths: &[&str]) -> Vec<ClaimPath> {
        paths.iter().map(|p| ClaimPath::parse(p).unwrap()).collect()
    }

    #[test]
    fn carries_the_envelope_the_user_and_only_the_listed_claims() {
        let listed = paths(&["email", "realm_access.roles", "realm_access.groups"]);
        let claims = Value::Object(claim_set(&envelope(), &principal(), &listed));
        assert_eq!(
            claims,
            json!({
                "iss": "https://app.example",
                "aud": "https://orders.internal",
                "sub": "alice-sub",
                "idp": "https://op.example",
                "iat": 1_767_000_100u64,
                "exp": 1_767_000_160u64,
                "jti": "jti-1",
                "sid": "sid-hash",
                "acr": "urn:mfa",
                "auth_time": 1_767_000_000u64,
                "email": "alice@example.com",
                "realm_access": { "roles": ["admin"], "groups": ["staff"] },
            })
        );
    }

    #[test]
    fn a_dotted_claim_name_stays_one_key_and_a_missing_claim_is_left_out() {
        let listed = paths(&["https://example.com/roles", "roles", "address.country"]);
        let claims = claim_set(&envelope(), &principal(), &listed);
        assert_eq!(claims["https://example.com/roles"], json!(["editor"]));
        assert_eq!(claims["roles"], json!(["admin", "user"]));
        assert!(!claims.contains_key("address"));
        assert!(!claims.contains_key("phone_number"), "not listed");
    }

    #[test]
    fn without_acr_auth_time_or_handle_those_claims_are_absent() {
        let Value::Object(claims) = json!({ "sub": "bob" }) else {
            unreachable!()
        };
        let bob = Principal::from_claims(&claims).unwrap();
        let envelope = Envelope {
            session: None,
            ..envelope()
        };
        let claims = claim_set(&envelope, &bob, &[]);
        for absent in ["acr", "auth_time", "sid"] {
            assert!(!claims.contains_key(absent), "{absent}");
        }
        assert_eq!(claims["sub"], "bob");
    }

    #[test]
    fn a_whole_object_and_a_path_into_it_agree() {
        let listed = paths(&["realm_access", "realm_access.roles"]);
        let claims = claim_set(&envelope(), &principal(), &listed);
        assert_eq!(claims["realm_access"]["roles"], json!(["admin"]));
        assert_eq!(
            claims["realm_access"]["secret"], "no",
            "the whole object was listed"
        );
    }
}
