//! Which keys sign and which are published, and the assertion itself as a compact JWS (RFC
//! 7515 §7.1): `base64url(header) . base64url(claims) . base64url(R ‖ S)`.
//!
//! The first configured key signs and every configured key is published, so a key can be
//! replaced while assertions it signed are still in flight. Without configured keys, one key
//! per entry of the session key ring is derived (the sealing key's signs): instances sharing
//! the encryption keys sign alike with no configuration, and rotate when the ring does.

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Value, json};

use super::claims::{Envelope, claim_set};
use super::keys::SigningKey;
use crate::authz::Principal;
use crate::routes::{AssertionSpec, Credential, Route};
use crate::session::KeyRing;

/// The JWS `typ` (RFC 7519 §5.1): the plain `JWT` every JWT library accepts; what sets an
/// assertion apart is its `iss` (Vestibule), its keys (its own) and its `aud` (one route's).
pub const TYPE: &str = "JWT";

/// `assertion.lifetime_secs` when left out, and its ceiling: an assertion is for one call.
pub const DEFAULT_LIFETIME_SECS: u64 = 60;
/// The longest `assertion.lifetime_secs` accepted.
pub const MAX_LIFETIME_SECS: u64 = 60;

/// Where the key set is served (public contract).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The label the derived signing keys are made under from the session key ring.
pub const SIGNING_KEY_PURPOSE: &[u8] = b"vestibule assertion signing key v1";
/// The label of the key `sid` is hashed under.
const SESSION_ID_PURPOSE: &[u8] = b"vestibule assertion sid v1";

/// `[assertion]`, checked: the configured keys (first signs) and the lifetime.
#[derive(Debug)]
pub struct AssertionSettings {
    /// `assertion.signing_keys`; empty: derived from the session key ring.
    pub signing_keys: Vec<SigningKey>,
    /// `assertion.lifetime_secs`.
    pub lifetime_secs: u64,
}

impl Default for AssertionSettings {
    fn default() -> Self {
        Self {
            signing_keys: Vec::new(),
            lifetime_secs: DEFAULT_LIFETIME_SECS,
        }
    }
}

/// Where the signing keys come from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `assertion.signing_keys`.
    Configured,
    /// Derived from the session key ring, because a route sends assertions.
    Derived,
    /// Derived but unused and unpublished: no route sends assertions and none are configured.
    Unused,
}

/// Signs the assertions of every route and answers the key set.
pub struct Assertions {
    issuer: String,
    lifetime_secs: u64,
    /// The key that signs.
    signing: SigningKey,
    source: KeySource,
    session_key: SecretBox<[u8; 32]>,
    /// Every header some route sends an assertion in: a browser may send none of them.
    headers: Vec<HeaderName>,
    /// The published key set, serialised once.
    key_set: String,
}

impl Assertions {
    /// The signer for `routes`, issuing as `issuer` (the public origin, no trailing slash).
    pub fn new(
        issuer: String,
        settings: AssertionSettings,
        ring: &KeyRing,
        routes: &[Route],
    ) -> Self {
        let mut headers: Vec<HeaderName> = routes
            .iter()
            .filter_map(|route| match &route.credential {
                Credential::Assertion(spec) => Some(spec.header.clone()),
                _ => None,
            })
            .collect();
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        let mut configured = settings.signing_keys.into_iter();
        let (keys, source): (Vec<SigningKey>, KeySource) = match configured.next() {
            Some(signing) => (
                std::iter::once(signing).chain(configured).collect(),
                KeySource::Configured,
            ),
            None if headers.is_empty() => (derived_keys(ring), KeySource::Unused),
            None => (derived_keys(ring), KeySource::Derived),
        };
        let published: Vec<Value> = match source {
            KeySource::Unused => Vec::new(),
            _ => keys.iter().map(SigningKey::public_jwk).collect(),
        };
        let signing = match keys.into_iter().next() {
            Some(signing) => signing,
            None => sealing_key_derived(ring),
        };
        Self {
            issuer,
            lifetime_secs: settings.lifetime_secs,
            key_set: json!({ "keys": published }).to_string(),
            signing,
            source,
            session_key: ring.derive_purpose_key(SESSION_ID_PURPOSE),
            headers,
        }
    }

    /// The key set served at `/.well-known/jwks.json` (JSON): every key that may have signed
    /// an assertion still valid; empty when nothing signs.
    pub fn key_set(&self) -> &str {
        &self.key_set
    }

    /// Where the keys come from.
    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The `kid` assertions are signed under now.
    pub fn signing_kid(&self) -> &str {
        self.signing.kid()
    }

    /// Removes every header some route sends an assertion in: whatever a browser sends under
    /// those names never reaches an upstream, on any route.
    pub fn strip_forged(&self, headers: &mut HeaderMap) {
        for name in &self.headers {
            headers.remove(name);
        }
    }

    /// A fresh assertion for `spec`'s audience about `principal`, vouched for by the provider
    /// issuer `idp`, in the session whose public handle is `handle` (empty: no `sid`), issued
    /// at `now` (unix seconds).
    pub fn sign(
        &self,
        spec: &AssertionSpec,
        principal: &Principal,
        idp: Option<&str>,
        handle: &str,
        now: u64,
    ) -> String {
        let id = crate::random::url_safe_id();
        let session = (!handle.is_empty()).then(|| self.session_id(handle));
        let envelope = Envelope {
            issuer: &self.issuer,
            audience: &spec.audience,
            issued_at: now,
            lifetime_secs: self.lifetime_secs,
            id: &id,
            session: session.as_deref(),
            idp,
        };
        let claims = claim_set(&envelope, principal, &spec.claims);
        self.compact(&Value::Object(claims))
    }

    /// `sid`: the keyed hash of a session's public handle (128 bits, base64url). It names a
    /// session consistently across calls and instances, and reveals neither the handle nor
    /// anything that finds the session's record.
    fn session_id(&self, handle: &str) -> String {
        let mac = crate::session::crypto::hmac_sha256(
            self.session_key.expose_secret(),
            &[handle.as_bytes()],
        );
        URL_SAFE_NO_PAD.encode(&mac[..16])
    }

    /// The compact JWS of `claims` under the signing key.
    fn compact(&self, claims: &Value) -> String {
        self.signing.sign_jwt(claims)
    }
}

/// The key derived from the ring's sealing key.
fn sealing_key_derived(ring: &KeyRing) -> SigningKey {
    SigningKey::derived(ring.derive_purpose_key(SIGNING_KEY_PURPOSE).expose_secret())
}

/// One key per entry of `ring`, the sealing key's first; entries with equal key bytes give one.
fn derived_keys(ring: &KeyRing) -> Vec<SigningKey> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for seed in ring.derive_purpose_keys(SIGNING_KEY_PURPOSE) {
        let key = SigningKey::derived(seed.expose_secret());
        if !keys.iter().any(|known| known.kid() == key.kid()) {
            keys.push(key);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use p256::ecdsa::signature::Verifier;
    use serde_json::Map;

    use super::*;
    use crate::authz::ClaimPath;
    use crate::session::{KeyId, MasterKey};

    fn ring(ids: &[(&str, u8)]) -> KeyRing {
        let keys = ids
            .iter()
            .map(|(id, byte)| {
                let mut bytes = [*byte; 32];
                bytes[0] = 1;
                (KeyId::parse(id).unwrap(), MasterKey::new(bytes))
            })
            .collect();
        KeyRing::labelled(keys).unwrap()
    }

    fn spec(header: &str) -> AssertionSpec {
        AssertionSpec {
            audience: "https://orders.internal".into(),
            header: HeaderName::try_from(header).unwrap(),
            claims: vec![ClaimPath::parse("realm_access.roles").unwrap()],
            also_bearer: false,
        }
    }

    fn routes(header: &str) -> Vec<Route> {
        let mut route = Route::new(
            "/api/orders".into(),
            "http://127.0.0.1:9".parse().unwrap(),
            Duration::from_secs(5),
        );
        route.credential = Credential::Assertion(spec(header));
        vec![route]
    }

    fn alice() -> Principal {
        let Value::Object(claims) = json!({
            "sub": "alice", "acr": "1", "auth_time": 1_767_000_000u64,
            "realm_access": { "roles": ["admin"] }, "email": "alice@example.com",
        }) else {
            unreachable!()
        };
        Principal::from_claims(&claims).unwrap()
    }

    fn signer(ring: &KeyRing, settings: AssertionSettings) -> Assertions {
        Assertions::new(
            "https://app.example".into(),
            settings,
            ring,
            &routes("x-vestibule-assertion"),
        )
    }

    fn part(token: &str, index: usize) -> Map<String, Value> {
        let encoded = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
    }

    fn published(signer: &Assertions) -> Vec<Value> {
        let set: Value = serde_json::from_str(signer.key_set()).unwrap();
        set["keys"].as_array().unwrap().clone()
    }

    /// Checks `token`'s signature with the published JWK of its `kid`.
    fn verifies_with(token: &str, keys: &[Value]) -> bool {
        let kid = part(token, 0)["kid"].as_str().unwrap().to_owned();
        let Some(jwk) = keys.iter().find(|jwk| jwk["kid"] == kid.as_str()) else {
            return false;
        };
        let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let mut point = vec![4u8];
        point.extend(coordinate("x"));
        point.extend(coordinate("y"));
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
                .unwrap();
        key.verify(input.as_bytes(), &signature).is_ok()
    }

    #[test]
    fn an_assertion_is_an_es256_jwt_with_the_claims_and_a_short_life() {
        let ring = ring(&[("k1", 1)]);
        let signer = signer(&ring, AssertionSettings::default());
        let token = signer.sign(
            &spec("x-vestibule-assertion"),
            &alice(),
            None,
            "handle-1",
            1_000,
        );
        let header = part(&token, 0);
        assert_eq!(
            Value::Object(header.clone()),
            json!({"alg": "ES256", "typ": "JWT", "kid": signer.signing_kid()})
        );
        let claims = part(&token, 1);
        assert_eq!(claims["iss"], "https://app.example");
        assert_eq!(claims["aud"], "https://orders.internal");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iat"], 1_000);
        assert!(claims["exp"].as_u64().unwrap() - 1_000 <= 60);
        assert_eq!(claims["exp"], 1_060);
        assert_eq!(claims["realm_access"], json!({"roles": ["admin"]}));
        assert!(!claims.contains_key("email"), "not listed");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        assert!(verifies_with(&token, &published(&signer)));
        let other = signer.sign(
            &spec("x-vestibule-assertion"),
            &alice(),
            None,
            "handle-1",
            1_000,
        );
        assert_ne!(
            part(&other, 1)["jti"],
            claims["jti"],
            "a fresh jti each time"
        );
        let tampered = token.replacen('.', ".e", 1);
        assert!(!verifies_with(&tampered, &published(&signer)));
    }

    #[test]
    fn sid_is_a_keyed_hash_of_the_handle_stable_per_session() {
        let signer = signer_for_ring(&ring(&[("k1", 1)]));
        let sid = |handle: &str| {
            let token = signer.sign(&spec("x-vestibule-assertion"), &alice(), None, handle, 0);
            part(&token, 1).get("sid").cloned()
        };
        let first = sid("handle-1").unwrap();
        assert_eq!(sid("handle-1").unwrap(), first);
        assert_ne!(sid("handle-2").unwrap(), first);
        assert!(!first.as_str().unwrap().contains("handle"));
        assert_eq!(sid(""), None, "a session without a handle has no sid");
        let elsewhere = signer_for_ring(&ring(&[("k1", 9)]));
        let token = elsewhere.sign(
            &spec("x-vestibule-assertion"),
            &alice(),
            None,
            "handle-1",
            0,
        );
        assert_ne!(
            part(&token, 1)["sid"],
            first,
            "keyed: another key, another sid"
        );
    }

    fn signer_for_ring(ring: &KeyRing) -> Assertions {
        signer(ring, AssertionSettings::default())
    }

    #[test]
    fn derived_keys_are_the_same_on_every_instance_with_the_same_ring() {
        let one = signer_for_ring(&ring(&[("k1", 1)]));
        let two = signer_for_ring(&ring(&[("k1", 1)]));
        assert_eq!(one.source(), KeySource::Derived);
        assert_eq!(one.signing_kid(), two.signing_kid());
        assert_eq!(one.key_set(), two.key_set());
        let token = one.sign(&spec("x-vestibule-assertion"), &alice(), None, "h", 0);
        assert!(verifies_with(&token, &published(&two)));
        let other = signer_for_ring(&ring(&[("k1", 2)]));
        assert_ne!(one.signing_kid(), other.signing_kid());
    }

    #[test]
    fn a_rotated_ring_signs_with_its_new_key_and_still_publishes_the_old() {
        let before = signer_for_ring(&ring(&[("k1", 1)]));
        let after = signer_for_ring(&ring(&[("k2", 2), ("k1", 1)]));
        assert_ne!(after.signing_kid(), before.signing_kid());
        let kids: Vec<Value> = published(&after)
            .iter()
            .map(|jwk| jwk["kid"].clone())
            .collect();
        assert_eq!(
            kids,
            [json!(after.signing_kid()), json!(before.signing_kid())]
        );
        let old = before.sign(&spec("x-vestibule-assertion"), &alice(), None, "h", 0);
        assert!(verifies_with(&old, &published(&after)));
        let new = after.sign(&spec("x-vestibule-assertion"), &alice(), None, "h", 0);
        assert_eq!(part(&new, 0)["kid"], after.signing_kid());
        assert!(!verifies_with(&new, &published(&before)));
    }

    #[test]
    fn configured_keys_sign_in_order_and_are_all_published() {
        let pem = super::super::keys::tests::PKCS8_PEM;
        let derived = SigningKey::derived(&[5; 32]);
        let settings = AssertionSettings {
            signing_keys: vec![
                SigningKey::from_pem("2026-12", pem).unwrap(),
                derived.clone(),
            ],
            lifetime_secs: 30,
        };
        let signer = signer(&ring(&[("k1", 1)]), settings);
        assert_eq!(signer.source(), KeySource::Configured);
        assert_eq!(signer.signing_kid(), "2026-12");
        let kids: Vec<Value> = published(&signer)
            .iter()
            .map(|jwk| jwk["kid"].clone())
            .collect();
        assert_eq!(kids, [json!("2026-12"), json!(derived.kid())]);
        let token = signer.sign(&spec("x-vestibule-assertion"), &alice(), None, "h", 100);
        assert_eq!(part(&token, 1)["exp"], 130);
        assert!(verifies_with(&token, &published(&signer)));
    }

    #[test]
    fn without_assertion_routes_or_keys_nothing_is_published() {
        let signer = Assertions::new(
            "https://app.example".into(),
            AssertionSettings::default(),
            &ring(&[("k1", 1)]),
            &[],
        );
        assert_eq!(signer.source(), KeySource::Unused);
        assert_eq!(signer.key_set(), r#"{"keys":[]}"#);
    }

    #[test]
    fn every_assertion_header_is_stripped_from_a_browser_request() {
        let ring = ring(&[("k1", 1)]);
        let mut all = routes("x-vestibule-assertion");
        all.extend(routes("x-service-identity"));
        let signer = Assertions::new(
            "https://app.example".into(),
            AssertionSettings::default(),
            &ring,
            &all,
        );
        let mut headers = HeaderMap::new();
        for name in ["x-vestibule-assertion", "x-service-identity", "x-other"] {
            headers.append(name, "forged".parse().unwrap());
        }
        headers.append("x-vestibule-assertion", "forged twice".parse().unwrap());
        signer.strip_forged(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-other"));
    }
}
