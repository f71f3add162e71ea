//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): the client proves who it is with a short
//! JWT signed by a key only it holds, instead of a shared secret. This file owns the client's
//! key ring ([`ClientKeys`]: the first key signs, every key is published), the assertion's
//! header and claims, and the key set published for providers at [`CLIENT_JWKS_PATH`].
//!
//! The assertion's `aud` is the provider's issuer identifier as one string, never an array
//! and never the endpoint's URL (draft-ietf-oauth-rfc7523bis, FAPI 2.0 after the 2025
//! audience-confusion disclosure: an assertion meant for one provider cannot be replayed at
//! another that shares an endpoint name). A private key never leaves `assertion::keys` (EC)
//! or `client_key` (RSA).

use serde_json::{Value, json};

use super::client_key::ClientKey;

/// `client_assertion_type` (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: one request, with room for clock skew at the provider.
pub const ASSERTION_LIFETIME_SECS: u64 = 60;

/// Where the client keys are published (public contract): apart from the identity assertions'
/// `/.well-known/jwks.json`, so a key set trusted for one purpose never vouches for the other.
pub const CLIENT_JWKS_PATH: &str = "/.well-known/client-jwks.json";

/// The client's signing keys for `private_key_jwt` (`oidc.client_key_file` or
/// `oidc.client_keys`): never empty, the first signs, all are published (rotation: a new key
/// is published before it signs, an old one stays published until nothing signed by it is in
/// flight).
#[derive(Debug, Clone)]
pub struct ClientKeys {
    signing: ClientKey,
    others: Vec<ClientKey>,
}

impl ClientKeys {
    /// The ring of `keys` in order (the first signs); `None` when there is none.
    pub fn new(keys: Vec<ClientKey>) -> Option<Self> {
        let mut keys = keys.into_iter();
        let signing = keys.next()?;
        Some(Self {
            signing,
            others: keys.collect(),
        })
    }

    /// Every key of the ring, the signing one first.
    pub fn all(&self) -> impl Iterator<Item = &ClientKey> {
        std::iter::once(&self.signing).chain(&self.others)
    }

    /// The `kid` assertions are signed under now.
    pub fn signing_kid(&self) -> &str {
        self.signing.kid()
    }

    /// The algorithm assertions are signed with now.
    pub fn signing_alg(&self) -> super::ClientKeyAlg {
        self.signing.alg()
    }

    /// A fresh client assertion of `client_id` for the provider whose issuer is `audience`,
    /// issued at `now` (unix seconds): `iss` = `sub` = the client id, `aud` the issuer (one
    /// string), a random `jti`, `iat`, and `exp` a minute later.
    pub fn assertion(&self, client_id: &str, audience: &str, now: u64) -> String {
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": crate::random::url_safe_id(),
            "iat": now,
            "exp": now.saturating_add(ASSERTION_LIFETIME_SECS),
        });
        self.signing.sign_jwt(&claims)
    }

    /// The two form parameters that authenticate a request (RFC 7523 §2.2):
    /// `client_assertion_type` and a fresh `client_assertion`.
    pub fn form(&self, client_id: &str, audience: &str, now: u64) -> [(&'static str, String); 2] {
        [
            ("client_assertion_type", ASSERTION_TYPE.to_owned()),
            ("client_assertion", self.assertion(client_id, audience, now)),
        ]
    }
}

/// What signs fresh client assertions for one provider: its key ring, the client id and the
/// issuer (`aud`).
#[derive(Clone, Copy)]
pub(super) struct Asserter<'a> {
    /// The ring (the first key signs).
    pub(super) keys: &'a ClientKeys,
    /// `iss` and `sub`.
    pub(super) client_id: &'a str,
    /// `aud`: the provider's issuer identifier.
    pub(super) audience: &'a str,
}

impl Asserter<'_> {
    /// A fresh assertion issued now (see [`ClientKeys::assertion`]).
    pub(super) fn assertion(&self) -> String {
        self.keys
            .assertion(self.client_id, self.audience, crate::clock::unix_now())
    }

    /// The form `body` of a request about to be sent again (a DPoP nonce challenge's retry)
    /// with a fresh `client_assertion` in place of the one already spent, every other
    /// parameter as it was; `None` when the body carries no assertion. A provider may refuse
    /// a `jti` it has seen (RFC 7523 §3, FAPI 2.0 §5.3.2.1), so an assertion is never resent.
    pub(super) fn renewed_in(&self, body: &[u8]) -> Option<Vec<u8>> {
        renew_assertion(body, &self.assertion())
    }
}

/// `body` (`application/x-www-form-urlencoded`) with its `client_assertion` replaced by
/// `fresh`; `None` when it has none.
fn renew_assertion(body: &[u8], fresh: &str) -> Option<Vec<u8>> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    if !pairs.iter().any(|(name, _)| name == "client_assertion") {
        return None;
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in &pairs {
        let value = if name == "client_assertion" {
            fresh
        } else {
            value
        };
        form.append_pair(name, value);
    }
    Some(form.finish().into_bytes())
}

/// The key set served at [`CLIENT_JWKS_PATH`] (JSON): the public half of every key of every
/// provider's ring, each `kid` once (`{"keys":[]}` when no provider uses `private_key_jwt`).
pub fn client_key_set<'a>(rings: impl IntoIterator<Item = &'a ClientKeys>) -> String {
    let mut kids: Vec<&str> = Vec::new();
    let mut keys: Vec<Value> = Vec::new();
    for key in rings.into_iter().flat_map(ClientKeys::all) {
        if !kids.contains(&key.kid()) {
            kids.push(key.kid());
            keys.push(key.public_jwk());
        }
    }
    json!({ "keys": keys }).to_string()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Map;

    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+mCYmwTLJgU5m5JN
NaDUkDp0/3th4xOF2kWx6M9X4WyhRANCAASjGlhKDLkrxcGdhfNM8K2cabaUc9qi
4Pr80/AFU/A+dUDqWutJmxTwMwrXdJyfjuFBymB+6unS15fUIovnEPef
-----END PRIVATE KEY-----";
    const OTHER_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgm+zbYdZMRxTLsrxV
5TXP6E64Q7mEv7bAd7qF5EL29pmhRANCAARlenaNumwtZuLsDUmE4DdHtmTwtrV3
+Xqh9GLiBqF4Z9q9gmqFnSPHR4iwI+K4dCIhQ9mE/i9weFSPw/3Muc3J
-----END PRIVATE KEY-----";

    fn ring() -> ClientKeys {
        ClientKeys::new(vec![
            ClientKey::from_pem(Some("new"), PEM).unwrap(),
            ClientKey::from_pem(Some("old"), OTHER_PEM).unwrap(),
        ])
        .unwrap()
    }

    fn part(token: &str, index: usize) -> Map<String, Value> {
        let segment = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    /// Whether the published key `kid` of `set` verifies `token`'s signature.
    fn verifies(set: &str, kid: &str, token: &str) -> bool {
        let set: Value = serde_json::from_str(set).unwrap();
        let jwk = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|jwk| jwk["kid"] == kid)
            .unwrap();
        crate::assertion::keys::tests::es256_verifies(jwk, token)
    }

    #[test]
    fn the_assertion_names_the_client_and_the_issuer_as_its_one_audience() {
        let token = ring().assertion("vestibule", "https://op.example", 1_000);
        let header = part(&token, 0);
        assert_eq!(
            Value::Object(header),
            json!({"alg": "ES256", "typ": "JWT", "kid": "new"})
        );
        let claims = part(&token, 1);
        assert_eq!(claims["iss"], "vestibule");
        assert_eq!(claims["sub"], "vestibule");
        assert_eq!(
            claims["aud"],
            json!("https://op.example"),
            "a single string, never an array"
        );
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_060);
        assert!(claims["jti"].as_str().unwrap().len() >= 22, "{claims:?}");
        assert_eq!(claims.len(), 6, "nothing else: {claims:?}");
    }

    #[test]
    fn every_assertion_has_its_own_jti_and_the_first_key_signs() {
        let keys = ring();
        let one = keys.assertion("c", "https://op.example", 1);
        let two = keys.assertion("c", "https://op.example", 1);
        assert_ne!(part(&one, 1)["jti"], part(&two, 1)["jti"]);
        let set = client_key_set([&keys]);
        assert!(verifies(&set, "new", &one));
        assert!(!verifies(&set, "old", &one));
        assert_eq!(keys.signing_kid(), "new");
        let [kind, assertion] = keys.form("c", "https://op.example", 1);
        assert_eq!(kind, ("client_assertion_type", ASSERTION_TYPE.to_owned()));
        assert_eq!(assertion.0, "client_assertion");
        assert!(verifies(&set, "new", &assertion.1));
    }

    #[test]
    fn a_mixed_ring_signs_with_its_rsa_key_and_publishes_both_kinds() {
        let rsa =
            ClientKey::from_pem(Some("rsa"), super::super::client_key::tests::RSA_2048).unwrap();
        let keys = ClientKeys::new(vec![
            rsa.with_alg(crate::oidc::ClientKeyAlg::Ps256).unwrap(),
            ClientKey::from_pem(Some("ec"), PEM).unwrap(),
        ])
        .unwrap();
        let token = keys.assertion("c", "https://op.example", 1);
        assert_eq!(part(&token, 0)["alg"], "PS256");
        assert_eq!(part(&token, 0)["kid"], "rsa");
        let set: Value = serde_json::from_str(&client_key_set([&keys])).unwrap();
        let published: Vec<(&str, &str)> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| (jwk["kid"].as_str().unwrap(), jwk["kty"].as_str().unwrap()))
            .collect();
        assert_eq!(published, [("rsa", "RSA"), ("ec", "EC")]);
        assert!(super::super::client_key::tests::rsa_verifies(
            &set["keys"][0],
            &token
        ));
        for jwk in set["keys"].as_array().unwrap() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none(), "{jwk}");
            }
        }
    }

    #[test]
    fn the_key_set_publishes_every_key_of_every_ring_once_and_no_private_half() {
        let keys = ring();
        let set: Value = serde_json::from_str(&client_key_set([&keys, &keys])).unwrap();
        let kids: Vec<&str> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| jwk["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["new", "old"]);
        for jwk in set["keys"].as_array().unwrap() {
            assert!(jwk.get("d").is_none(), "{jwk}");
            assert_eq!(jwk["alg"], "ES256");
        }
        assert_eq!(client_key_set([]), r#"{"keys":[]}"#);
        assert!(ClientKeys::new(Vec::new()).is_none());
    }

    #[test]
    fn a_resent_form_gets_a_fresh_assertion_and_keeps_everything_else() {
        let body = b"grant_type=authorization_code&code=a%2Bb&client_assertion_type=urn%3Aietf&client_assertion=spent.jwt.x&code_verifier=v";
        let renewed = String::from_utf8(renew_assertion(body, "fresh.jwt.y").unwrap()).unwrap();
        assert_eq!(
            renewed,
            "grant_type=authorization_code&code=a%2Bb&client_assertion_type=urn%3Aietf&client_assertion=fresh.jwt.y&code_verifier=v"
        );
        assert_eq!(
            renew_assertion(b"grant_type=refresh_token&refresh_token=r", "x"),
            None
        );
        let keys = ring();
        let asserter = Asserter {
            keys: &keys,
            client_id: "rp",
            audience: "https://op.example",
        };
        let first = asserter.assertion();
        let renewed = asserter
            .renewed_in(format!("client_assertion={first}").as_bytes())
            .unwrap();
        let again = String::from_utf8(renewed).unwrap();
        let again = again.strip_prefix("client_assertion=").unwrap();
        assert_ne!(part(&first, 1)["jti"], part(again, 1)["jti"], "a new jti");
    }
}
