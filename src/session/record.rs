//! What one session remembers: the user's tokens and lifetimes, built from the provider's
//! grants ([`TokenSet::from_login`], [`TokenSet::refreshed`] keeps what a refresh did not replace).
//!
//! Records exist in plaintext only in memory; [`super::Sessions`] seals them before storing.
//! Nothing here is `Debug`, so a token cannot reach a log line by accident. Records are
//! encoded compactly (MessagePack with one-letter field names, JWT segments as raw bytes) so a
//! session with Keycloak-sized tokens stays within 5 KB of Redis memory, its index entries
//! included; records written with the full field names still decode (`alias`). The ID-token
//! claims are read from the stored, already verified ID token rather than stored twice; the
//! UserInfo claims (bounded by [`crate::oidc::MAX_USERINFO_CLAIMS_BYTES`]) are stored beside
//! it, and [`SessionRecord::claims`] merges the two ([`crate::oidc::merge_claims`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dpop_key::StoredDpopKey;
use crate::authz::Principal;
use crate::oidc::{GrantedTokens, LoginTokens, RefreshedTokens, jwt_payload, merge_claims};

/// The provider's tokens for one session.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    /// The bearer token forwarded to upstream APIs.
    #[serde(rename = "a", alias = "access_token", with = "compact_token")]
    pub access_token: String,
    /// When the access token expires (unix seconds), if the provider said so.
    #[serde(rename = "e", alias = "access_expires_at")]
    pub access_expires_at: Option<u64>,
    /// When the access token was obtained (unix seconds).
    #[serde(rename = "o", alias = "obtained_at")]
    pub obtained_at: u64,
    /// The refresh token, if the provider issued one.
    #[serde(rename = "r", alias = "refresh_token")]
    pub refresh_token: Option<StoredToken>,
    /// The most recent verified ID token (claims for `/api/auth/user`, `id_token_hint` at logout).
    #[serde(rename = "i", alias = "id_token")]
    pub id_token: StoredToken,
    /// Whether `access_expires_at` was assumed (`oidc.assumed_token_lifetime_secs`: the provider
    /// named no lifetime): it is when to refresh, never a reason to think the token dead.
    #[serde(rename = "y", default, skip_serializing_if = "is_false")]
    pub expiry_assumed: bool,
    /// Whether the access token came from a refresh forced by an upstream's `invalid_token`:
    /// such a token is never the reason for another forced refresh (see [`crate::refresh`]).
    #[serde(rename = "f", default, skip_serializing_if = "is_false")]
    pub from_forced_refresh: bool,
    /// The claims UserInfo last answered (without the protocol claims), read with an access
    /// token of this session; `None` when never read or never usable.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub userinfo: Option<Map<String, Value>>,
    /// The user as route rules see them ([`Principal`]), built from the merged claims when
    /// the tokens were obtained (at login and at each refresh), so no call parses a token;
    /// `None` in records written before it was kept (see [`TokenSet::principal`]).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// The session's own DPoP key (`oidc.dpop`), sealed with the record; `None` when the
    /// session's tokens are not bound to a key.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<StoredDpopKey>,
    /// Whether the access token is DPoP-bound (`token_type` `DPoP`): it is then only ever sent
    /// with a proof of `dpop_key`, never as `Bearer`.
    #[serde(rename = "d", default, skip_serializing_if = "is_false")]
    pub dpop_bound: bool,
}

/// For `skip_serializing_if`: records without the flag stay as compact as before.
fn is_false(flag: &bool) -> bool {
    !flag
}

/// A token kept in its stored form and turned back into text only where it is used, so
/// that proxied calls, which need only the access token, do not rebuild the ID and refresh
/// tokens on every request.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredToken(#[serde(with = "compact_token::raw")] Vec<u8>);

impl StoredToken {
    /// Stores a token compactly.
    pub fn new(text: &str) -> Self {
        Self(compact_token::encode(text))
    }

    /// The stored form (for sealing it on its own: see `escrow.rs`).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A token from its stored form; `None` unless it is well-formed.
    pub(super) fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        compact_token::is_well_formed(&bytes).then_some(Self(bytes))
    }

    /// The token as the provider issued it.
    pub fn text(&self) -> String {
        // Well-formedness was checked when the record was decoded.
        compact_token::decode(&self.0).unwrap_or_default()
    }
}

impl From<&str> for StoredToken {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl TokenSet {
    /// The tokens of a new login: what the code exchange granted, with its verified ID token
    /// and the UserInfo claims read with its access token.
    pub fn from_login(login: LoginTokens) -> Self {
        let mut tokens = Self::from_grant(login.granted, None, StoredToken::new(&login.id_token));
        tokens.userinfo = login.userinfo;
        tokens.dpop_key = login.dpop_key.as_ref().map(StoredDpopKey::new);
        tokens.with_principal()
    }

    /// The tokens after a refresh: the new ones, keeping the refresh token, the ID token and
    /// the UserInfo claims the provider did not replace (none returned, or the new ID token
    /// failed verification, or UserInfo was unusable).
    pub fn refreshed(&self, refreshed: RefreshedTokens) -> Self {
        let id_token = match refreshed.id_token {
            Some(id_token) => StoredToken::new(&id_token),
            None => self.id_token.clone(),
        };
        let mut tokens = Self::from_grant(refreshed.granted, self.refresh_token.clone(), id_token);
        tokens.userinfo = refreshed.userinfo.or_else(|| self.userinfo.clone());
        tokens.dpop_key = self.dpop_key.clone();
        tokens.with_principal()
    }

    /// These tokens with the principal of their claims.
    fn with_principal(mut self) -> Self {
        self.principal = Principal::from_claims(&self.claims());
        self
    }

    /// The claims of these tokens: those of the ID token (verified before it was stored),
    /// merged with those UserInfo answered ([`merge_claims`]: UserInfo's win, except the ID
    /// token's protocol claims).
    pub fn claims(&self) -> Map<String, Value> {
        let id_token = jwt_payload(&self.id_token.text()).unwrap_or_default();
        match &self.userinfo {
            Some(userinfo) => merge_claims(id_token, userinfo),
            None => id_token,
        }
    }

    /// The user as route rules see them: the principal kept with the tokens or, for a record
    /// written before it was kept, one built from the claims now. `None` without a subject.
    pub fn principal(&self) -> Option<Cow<'_, Principal>> {
        match &self.principal {
            Some(principal) => Some(Cow::Borrowed(principal)),
            None => Principal::from_claims(&self.claims()).map(Cow::Owned),
        }
    }

    /// The one place a granted token set becomes a stored one.
    fn from_grant(
        granted: GrantedTokens,
        previous_refresh_token: Option<StoredToken>,
        id_token: StoredToken,
    ) -> Self {
        Self {
            access_token: granted.access_token,
            access_expires_at: granted.access_expires_at,
            expiry_assumed: granted.access_expiry_assumed,
            from_forced_refresh: false,
            obtained_at: granted.obtained_at,
            refresh_token: granted
                .refresh_token
                .as_deref()
                .map(StoredToken::new)
                .or(previous_refresh_token),
            id_token,
            userinfo: None,
            principal: None,
            dpop_key: None,
            dpop_bound: granted.dpop_bound,
        }
    }

    /// Whether the access token should be refreshed at `now` given the configured skew.
    ///
    /// The skew is capped at half the token's lifetime, so a provider issuing tokens shorter
    /// than the skew does not cause a refresh on every request.
    pub fn needs_refresh(&self, now: u64, skew_secs: u64) -> bool {
        match self.access_expires_at {
            Some(expires_at) => {
                let lifetime = expires_at.saturating_sub(self.obtained_at);
                let skew = skew_secs.min(lifetime / 2);
                now + skew >= expires_at
            }
            None => false,
        }
    }

    /// Whether the access token is already past its expiry at `now` (never for an assumed
    /// expiry: the provider did not say the token ends then).
    pub fn is_expired(&self, now: u64) -> bool {
        !self.expiry_assumed && self.access_expires_at.is_some_and(|at| now >= at)
    }
}

/// One logged-in session.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's subject identifier at the provider.
    #[serde(rename = "s", alias = "sub")]
    pub sub: String,
    /// The provider's tokens.
    #[serde(rename = "t", alias = "tokens")]
    pub tokens: TokenSet,
    /// When the session was created (unix seconds).
    #[serde(rename = "c", alias = "created_at")]
    pub created_at: u64,
    /// Absolute end of the session (unix seconds), however active it is.
    #[serde(rename = "x", alias = "expires_at")]
    pub expires_at: u64,
    /// Random value that authorises `GET /api/auth/logout?sid=…` for this session only.
    #[serde(rename = "l", alias = "logout_sid")]
    pub logout_sid: String,
    /// The session's public name in the user's session list (random; never derived from the
    /// cookie). Empty for sessions created before the list existed: they are not listed.
    #[serde(rename = "h", default)]
    pub handle: String,
    /// The client network the session was created from (see suspicious use); empty for
    /// sessions created before it was recorded.
    #[serde(rename = "n", default)]
    pub origin_network: String,
    /// The browser family the session was created with.
    #[serde(rename = "b", default)]
    pub origin_browser: String,
    /// The id of the provider the session logged in at; `None` for the first provider (as
    /// every record was written before several providers existed, so none is lost on
    /// upgrade, and earlier releases still read it).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl SessionRecord {
    /// A record of `sub` with placeholder tokens and lifetimes, for tests.
    #[cfg(test)]
    pub(crate) fn for_testing(sub: &str, expires_at: u64) -> Self {
        Self {
            sub: sub.into(),
            tokens: TokenSet {
                access_token: "at".into(),
                access_expires_at: None,
                obtained_at: 0,
                refresh_token: None,
                id_token: "id".into(),
                expiry_assumed: false,
                from_forced_refresh: false,
                userinfo: None,
                principal: None,
                dpop_key: None,
                dpop_bound: false,
            },
            created_at: crate::clock::unix_now(),
            expires_at,
            logout_sid: "sid".into(),
            handle: crate::random::url_safe_id(),
            origin_network: String::new(),
            origin_browser: String::new(),
            provider: None,
        }
    }

    /// The session's claims (see [`TokenSet::claims`]).
    pub fn claims(&self) -> Map<String, Value> {
        self.tokens.claims()
    }

    /// What the user's indexes file this session under: its `sub`, within its provider.
    pub fn user_key(&self) -> Cow<'_, str> {
        scoped_identifier(self.provider.as_deref(), &self.sub)
    }

    /// What the provider-session index files this session under: its ID token's `sid`
    /// within its provider; `None` without one.
    pub fn provider_session_key(&self) -> Option<String> {
        let claims = self.claims();
        let sid = claims.get("sid").and_then(Value::as_str)?;
        Some(scoped_identifier(self.provider.as_deref(), sid).into_owned())
    }

    /// Encodes the record for sealing.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// Decodes a record opened from the store; `None` if it is not a record.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        rmp_serde::from_slice(bytes).ok()
    }
}

/// `identifier` (a `sub` or a `sid`) within its provider, as the indexes file it: the first
/// provider's (`None`) as it is, as earlier releases filed it; another's as
/// `NUL ‖ id ‖ NUL ‖ identifier`. The two never meet: ids hold no NUL and are never empty, and
/// a first provider's identifier that starts with NUL is filed as `NUL NUL ‖ identifier`.
/// So a provider's logout names only its own users and sessions.
pub fn scoped_identifier<'a>(provider: Option<&str>, identifier: &'a str) -> Cow<'a, str> {
    match provider {
        None if identifier.starts_with('\0') => Cow::Owned(format!("\0\0{identifier}")),
        None => Cow::Borrowed(identifier),
        Some(id) => Cow::Owned(format!("\0{id}\0{identifier}")),
    }
}

/// Tokens as bytes: a compact JWT's three base64url segments are stored decoded (a quarter
/// smaller); anything else (opaque tokens, non-canonical encodings) is stored verbatim.
mod compact_token {
    use super::*;
    use serde::{Deserializer, Serializer};

    const VERBATIM: u8 = 0;
    const JWT: u8 = 1;

    pub fn encode(token: &str) -> Vec<u8> {
        jwt_bytes(token).unwrap_or_else(|| {
            let mut out = Vec::with_capacity(token.len() + 1);
            out.push(VERBATIM);
            out.extend_from_slice(token.as_bytes());
            out
        })
    }

    fn jwt_bytes(token: &str) -> Option<Vec<u8>> {
        let mut segments = token.split('.');
        let (header, payload, signature) = (segments.next()?, segments.next()?, segments.next()?);
        if segments.next().is_some() {
            return None;
        }
        let decoded: Vec<Vec<u8>> = [header, payload, signature]
            .iter()
            .map(|segment| URL_SAFE_NO_PAD.decode(segment).ok())
            .collect::<Option<_>>()?;
        // Only canonical encodings round-trip byte for byte; keep the others verbatim.
        let canonical = decoded
            .iter()
            .zip([header, payload, signature])
            .all(|(bytes, segment)| URL_SAFE_NO_PAD.encode(bytes) == segment);
        let header_len = u16::try_from(decoded[0].len()).ok()?;
        let payload_len = u32::try_from(decoded[1].len()).ok()?;
        if !canonical {
            return None;
        }
        let mut out = Vec::with_capacity(7 + decoded.iter().map(Vec::len).sum::<usize>());
        out.push(JWT);
        out.extend_from_slice(&header_len.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        for part in &decoded {
            out.extend_from_slice(part);
        }
        Some(out)
    }

    pub fn decode(bytes: &[u8]) -> Option<String> {
        match bytes.split_first()? {
            (&VERBATIM, rest) => String::from_utf8(rest.to_vec()).ok(),
            (&JWT, _) => {
                let parts = jwt_parts(bytes)?;
                let mut text = String::with_capacity(bytes.len() * 4 / 3 + 4);
                for (index, part) in parts.iter().enumerate() {
                    if index > 0 {
                        text.push('.');
                    }
                    URL_SAFE_NO_PAD.encode_string(part, &mut text);
                }
                Some(text)
            }
            _ => None,
        }
    }

    /// The header, payload and signature of a stored JWT.
    fn jwt_parts(bytes: &[u8]) -> Option<[&[u8]; 3]> {
        let rest = bytes.get(1..)?;
        let header_len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let payload_len =
            usize::try_from(u32::from_be_bytes(rest.get(2..6)?.try_into().ok()?)).ok()?;
        let body = rest.get(6..)?;
        let header = body.get(..header_len)?;
        let payload = body.get(header_len..header_len.checked_add(payload_len)?)?;
        let signature = body.get(header_len + payload_len..)?;
        Some([header, payload, signature])
    }

    pub fn serialize<S: Serializer>(token: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&encode(token))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let bytes: crate::session::byte_string::ByteBuf = Deserialize::deserialize(deserializer)?;
        decode(&bytes.0).ok_or_else(|| serde::de::Error::custom("malformed stored token"))
    }

    /// The stored bytes as they are, checked to be well-formed so that decoding them later
    /// cannot fail.
    pub mod raw {
        use super::*;

        pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(bytes)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<u8>, D::Error> {
            let bytes: crate::session::byte_string::ByteBuf =
                Deserialize::deserialize(deserializer)?;
            if is_well_formed(&bytes.0) {
                Ok(bytes.0)
            } else {
                Err(serde::de::Error::custom("malformed stored token"))
            }
        }
    }

    /// Whether `decode` will succeed, without building the text.
    pub fn is_well_formed(bytes: &[u8]) -> bool {
        match bytes.split_first() {
            Some((&VERBATIM, rest)) => std::str::from_utf8(rest).is_ok(),
            Some((&JWT, _)) => jwt_parts(bytes).is_some(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(obtained_at: u64, expires_at: Option<u64>) -> TokenSet {
        TokenSet {
            access_token: "at".into(),
            access_expires_at: expires_at,
            obtained_at,
            refresh_token: None,
            id_token: "id".into(),
            expiry_assumed: false,
            from_forced_refresh: false,
            userinfo: None,
            principal: None,
            dpop_key: None,
            dpop_bound: false,
        }
    }

    #[test]
    fn an_assumed_expiry_says_when_to_refresh_never_that_the_token_is_dead() {
        let mut t = tokens(1000, Some(1300));
        t.expiry_assumed = true;
        assert!(t.needs_refresh(1270, 30));
        assert!(!t.is_expired(1400));
        t.expiry_assumed = false;
        assert!(t.is_expired(1400));
    }

    #[test]
    fn refresh_is_due_within_the_skew() {
        let t = tokens(1000, Some(1300));
        assert!(!t.needs_refresh(1200, 30));
        assert!(t.needs_refresh(1270, 30));
        assert!(t.needs_refresh(1400, 30));
    }

    #[test]
    fn skew_is_capped_at_half_the_lifetime() {
        // A 10 s token with a 30 s skew: refresh after 5 s, not on every request.
        let t = tokens(1000, Some(1010));
        assert!(!t.needs_refresh(1001, 30));
        assert!(t.needs_refresh(1005, 30));
    }

    fn granted(refresh_token: Option<&str>) -> GrantedTokens {
        GrantedTokens {
            access_token: "at-2".into(),
            access_expires_at: Some(2300),
            access_expiry_assumed: false,
            obtained_at: 2000,
            refresh_token: refresh_token.map(str::to_owned),
            dpop_bound: false,
        }
    }

    /// The refresh and ID tokens of a set, as text.
    fn refresh_and_id(tokens: &TokenSet) -> (Option<String>, String) {
        (
            tokens.refresh_token.as_ref().map(StoredToken::text),
            tokens.id_token.text(),
        )
    }

    #[test]
    fn a_login_stores_what_was_granted() {
        let tokens = TokenSet::from_login(LoginTokens {
            sub: "alice".into(),
            provider_session: None,
            id_token: "id-1".into(),
            userinfo: Some(
                serde_json::json!({ "name": "A" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            granted: granted(Some("rt-1")),
            dpop_key: None,
        });
        assert_eq!(tokens.userinfo.as_ref().unwrap()["name"], "A");
        assert!(tokens.dpop_key.is_none());
        assert_eq!(tokens.access_token, "at-2");
        assert_eq!(
            (tokens.access_expires_at, tokens.obtained_at),
            (Some(2300), 2000)
        );
        assert_eq!(
            refresh_and_id(&tokens),
            (Some("rt-1".into()), "id-1".into())
        );
    }

    #[test]
    fn a_bound_login_keeps_its_key_in_the_record_and_across_refreshes() {
        let key = crate::oidc::dpop::DpopKey::generate().unwrap();
        let thumbprint = key.thumbprint().to_owned();
        let mut bound = granted(Some("rt-1"));
        bound.dpop_bound = true;
        let tokens = TokenSet::from_login(LoginTokens {
            sub: "alice".into(),
            provider_session: None,
            id_token: "id-1".into(),
            userinfo: None,
            granted: bound,
            dpop_key: Some(key),
        });
        assert!(tokens.dpop_bound);
        let stored = |tokens: &TokenSet| tokens.dpop_key.as_ref().unwrap().key().unwrap();
        assert_eq!(stored(&tokens).thumbprint(), thumbprint);
        let read: TokenSet =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&tokens).unwrap()).unwrap();
        assert_eq!(stored(&read).thumbprint(), thumbprint);
        // A refresh answering Bearer (`auto`): the key stays, the new token is unbound.
        let refreshed = read.refreshed(RefreshedTokens {
            id_token: None,
            userinfo: None,
            granted: granted(None),
        });
        assert_eq!(stored(&refreshed).thumbprint(), thumbprint);
        assert!(!refreshed.dpop_bound);
    }

    #[test]
    fn a_refresh_keeps_the_tokens_the_provider_did_not_replace() {
        let mut before = tokens(1000, Some(1300));
        before.refresh_token = Some("rt-1".into());
        let userinfo = |name: &str| {
            Some(
                serde_json::json!({ "name": name })
                    .as_object()
                    .unwrap()
                    .clone(),
            )
        };
        before.userinfo = userinfo("before");
        let kept = before.refreshed(RefreshedTokens {
            id_token: None,
            userinfo: None,
            granted: granted(None),
        });
        assert_eq!(kept.access_token, "at-2");
        assert_eq!(refresh_and_id(&kept), (Some("rt-1".into()), "id".into()));
        assert_eq!(kept.userinfo, userinfo("before"), "UserInfo unusable: kept");
        let replaced = before.refreshed(RefreshedTokens {
            id_token: Some("id-2".into()),
            userinfo: userinfo("after"),
            granted: granted(Some("rt-2")),
        });
        assert_eq!(
            refresh_and_id(&replaced),
            (Some("rt-2".into()), "id-2".into())
        );
        assert_eq!(replaced.userinfo, userinfo("after"));
    }

    #[test]
    fn tokens_without_expiry_are_never_refreshed_proactively() {
        assert!(!tokens(1000, None).needs_refresh(u64::MAX / 2, 30));
        assert!(!tokens(1000, None).is_expired(u64::MAX / 2));
    }

    #[test]
    fn tokens_survive_compact_encoding_exactly() {
        let jwt = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","email":"a@example.com"}"#),
            URL_SAFE_NO_PAD.encode([7u8; 256])
        );
        for token in [
            jwt.as_str(),
            "opaque-token_with.dots",
            "a.b.c.d",
            "eyJ.not base64.x",
            "YR.YQ.YQ", // non-canonical base64 (trailing bits set): kept verbatim
            "",
            "ünïcödé",
        ] {
            let encoded = compact_token::encode(token);
            assert_eq!(
                compact_token::decode(&encoded).as_deref(),
                Some(token),
                "{token:?}"
            );
        }
        assert!(
            compact_token::encode(&jwt).len() < jwt.len() * 4 / 5,
            "JWTs shrink by a quarter"
        );
        assert_eq!(
            compact_token::decode(&[1, 0]),
            None,
            "truncated input is rejected, not a panic"
        );
        assert_eq!(compact_token::decode(&[1, 0xff, 0xff, 0, 0, 0, 1]), None);
        assert_eq!(compact_token::decode(&[9]), None);
    }

    #[test]
    fn record_round_trips_and_exposes_id_token_claims() {
        let id_token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","email":"a@example.com"}"#),
            URL_SAFE_NO_PAD.encode([1u8; 64])
        );
        let record = SessionRecord {
            sub: "alice".into(),
            tokens: TokenSet {
                access_token: "opaque".into(),
                access_expires_at: Some(5),
                obtained_at: 1,
                refresh_token: Some("refresh".into()),
                id_token: StoredToken::new(&id_token),
                expiry_assumed: false,
                from_forced_refresh: false,
                userinfo: None,
                principal: None,
                dpop_key: None,
                dpop_bound: false,
            },
            created_at: 1,
            expires_at: 2,
            logout_sid: "sid".into(),
            handle: "h".into(),
            origin_network: String::new(),
            origin_browser: String::new(),
            provider: None,
        };
        let decoded = SessionRecord::decode(&record.encode().unwrap()).unwrap();
        assert_eq!(
            decoded.tokens.refresh_token.as_ref().map(StoredToken::text),
            Some("refresh".to_owned())
        );
        assert_eq!(decoded.tokens.id_token.text(), id_token);
        assert_eq!(decoded.claims()["email"], "a@example.com");
        assert!(SessionRecord::decode(b"not a record").is_none());
        // UserInfo claims are kept in the record and merged over the ID token's, never over
        // its protocol claims.
        let mut with_userinfo = record.clone();
        with_userinfo.tokens.userinfo = serde_json::json!({
            "email": "fresh@example.com", "groups": ["admins"], "sub": "mallory",
        })
        .as_object()
        .cloned();
        let decoded = SessionRecord::decode(&with_userinfo.encode().unwrap()).unwrap();
        let claims = decoded.claims();
        assert_eq!(claims["email"], "fresh@example.com");
        assert_eq!(claims["groups"], serde_json::json!(["admins"]));
        assert_eq!(claims["sub"], "alice");
        // A record written before the short field names (and before handles) still decodes.
        #[derive(Serialize)]
        struct OldTokens<'a> {
            #[serde(with = "compact_token")]
            access_token: String,
            access_expires_at: Option<u64>,
            obtained_at: u64,
            refresh_token: Option<&'a StoredToken>,
            id_token: &'a StoredToken,
        }
        #[derive(Serialize)]
        struct OldRecord<'a> {
            sub: &'a str,
            tokens: OldTokens<'a>,
            created_at: u64,
            expires_at: u64,
            logout_sid: &'a str,
        }
        let old = rmp_serde::to_vec_named(&OldRecord {
            sub: "alice",
            tokens: OldTokens {
                access_token: "opaque".into(),
                access_expires_at: Some(5),
                obtained_at: 1,
                refresh_token: record.tokens.refresh_token.as_ref(),
                id_token: &record.tokens.id_token,
            },
            created_at: 1,
            expires_at: 2,
            logout_sid: "sid",
        })
        .unwrap();
        let decoded = SessionRecord::decode(&old).unwrap();
        assert_eq!((decoded.sub.as_str(), decoded.expires_at), ("alice", 2));
        assert_eq!(decoded.tokens.refresh_token.unwrap().text(), "refresh");
        assert_eq!(decoded.handle, "", "not listed, never an error");
        assert_eq!(
            decoded.provider, None,
            "an old record is the first provider's"
        );
        assert!(
            record.encode().unwrap().len() < old.len(),
            "short names are shorter"
        );
    }

    #[test]
    fn a_record_remembers_its_provider_and_the_first_one_is_stored_as_before() {
        let first = SessionRecord::for_testing("alice", 2);
        let encoded = first.encode().unwrap();
        let mut other = first.clone();
        other.provider = Some("partners".into());
        let decoded = SessionRecord::decode(&other.encode().unwrap()).unwrap();
        assert_eq!(decoded.provider.as_deref(), Some("partners"));
        // The first provider's records are byte for byte what earlier releases wrote and read
        // (they ignore the field they do not know, which only other providers' records have).
        #[derive(Serialize)]
        struct WithoutProvider<'a> {
            #[serde(rename = "s")]
            sub: &'a str,
            #[serde(rename = "t")]
            tokens: &'a TokenSet,
            #[serde(rename = "c")]
            created_at: u64,
            #[serde(rename = "x")]
            expires_at: u64,
            #[serde(rename = "l")]
            logout_sid: &'a str,
            #[serde(rename = "h")]
            handle: &'a str,
            #[serde(rename = "n")]
            origin_network: &'a str,
            #[serde(rename = "b")]
            origin_browser: &'a str,
        }
        let before = rmp_serde::to_vec_named(&WithoutProvider {
            sub: &first.sub,
            tokens: &first.tokens,
            created_at: first.created_at,
            expires_at: first.expires_at,
            logout_sid: &first.logout_sid,
            handle: &first.handle,
            origin_network: &first.origin_network,
            origin_browser: &first.origin_browser,
        })
        .unwrap();
        assert_eq!(encoded, before);
        assert_eq!(SessionRecord::decode(&before).unwrap().provider, None);
    }

    #[test]
    fn identifiers_are_filed_within_their_provider() {
        assert_eq!(scoped_identifier(None, "alice"), "alice", "as before");
        let at_partners = scoped_identifier(Some("partners"), "alice");
        assert_ne!(at_partners, "alice");
        assert_ne!(at_partners, scoped_identifier(Some("staff"), "alice"));
        // No first-provider identifier takes another provider's form.
        assert_ne!(scoped_identifier(None, &at_partners), at_partners);
        let mut record = SessionRecord::for_testing("alice", 2);
        assert_eq!(record.user_key(), "alice");
        record.provider = Some("partners".into());
        assert_eq!(record.user_key(), at_partners);
    }
}
