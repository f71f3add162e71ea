//! A resource server on loopback that accepts only DPoP-bound calls (RFC 9449 §7) and checks
//! each proof as a real one would: `Authorization: DPoP`, one `DPoP` header whose JWT has
//! `typ` `dpop+jwt`, `alg` `ES256` and a public `jwk` it verifies the signature with, `htm` and
//! `htu` of the request as this server was called (its own URL, no query), `iat` within a
//! window, a `jti` never seen before, `ath` the hash of the token, and, when asked to, its
//! current nonce (`401 WWW-Authenticate: DPoP error="use_dpop_nonce"` with `DPoP-Nonce`
//! otherwise). Optionally it requires the token's `cnf.jkt` to be the proof key's thumbprint,
//! read by introspection at the provider (which must also say the token is active, or it is
//! `DPoP error="invalid_token"`, as a real one says of a revoked token; the issuer given at
//! start or once the provider is up, [`DpopUpstream::introspect_at`], as the upstream usually
//! starts first) or, for a JWT access token (Keycloak's), from the token itself.
//!
//! Every request is recorded with its verdict ([`DpopCall`]); a call that passes is answered
//! `200` with what was seen (`thumbprint`, `jti`, `htu`, `nonce`) as JSON. [`verify_proof`] is
//! the check itself, usable without a server. Reusable by any suite (oidc-provider, Keycloak).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How far a proof's `iat` may be from this server's clock, in seconds.
pub const IAT_WINDOW_SECS: u64 = 60;

/// What a valid proof said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofFacts {
    /// The RFC 7638 thumbprint of the proof's key (what the token's `cnf.jkt` must name).
    pub thumbprint: String,
    /// The proof's `jti`.
    pub jti: String,
    /// The proof's `htu`.
    pub htu: String,
    /// The proof's `nonce`, if any.
    pub nonce: Option<String>,
}

/// One call as the server saw it.
#[derive(Clone, Debug)]
pub struct DpopCall {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// The `Authorization` scheme (`DPoP`, `Bearer`, …), if any.
    pub scheme: Option<String>,
    /// The token after the scheme, if any.
    pub token: Option<String>,
    /// The raw `DPoP` header, if any (to replay it in a test).
    pub proof: Option<String>,
    /// The proof's facts, or why the call was refused.
    pub verdict: Result<ProofFacts, String>,
}

/// Options of a [`DpopUpstream`].
#[derive(Clone, Default)]
pub struct DpopUpstreamOptions {
    /// Require proofs to carry this server's current nonce.
    pub require_nonce: bool,
    /// Introspect each token at this provider (its issuer URL) with the upstream client's
    /// credentials and require it active with `cnf.jkt` equal to the proof key's thumbprint
    /// (also settable later: [`DpopUpstream::introspect_at`]).
    pub introspect_at: Option<String>,
    /// Require the token to be a JWT whose `cnf.jkt` is the proof key's thumbprint, as a
    /// resource server of a provider with JWT access tokens (Keycloak) reads it. The token's
    /// own signature is not checked: a test asks the provider what it thinks of the token.
    pub cnf_in_jwt: bool,
}

struct Shared {
    calls: Mutex<Vec<DpopCall>>,
    seen_jtis: Mutex<HashSet<String>>,
    nonce: Mutex<String>,
    introspect_at: Mutex<Option<String>>,
    options: DpopUpstreamOptions,
    base: String,
    http: reqwest::Client,
}

/// The running resource server.
pub struct DpopUpstream {
    /// Its base URL, e.g. `http://127.0.0.1:1234/v1` (route upstreams point here).
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl DpopUpstream {
    /// A server that checks proofs, without nonces or introspection.
    pub async fn start() -> Self {
        Self::start_with(DpopUpstreamOptions::default()).await
    }

    /// A server with `options`.
    pub async fn start_with(options: DpopUpstreamOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            seen_jtis: Mutex::new(HashSet::new()),
            nonce: Mutex::new(new_nonce()),
            introspect_at: Mutex::new(options.introspect_at.clone()),
            options,
            base: base.clone(),
            http: reqwest::Client::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url: format!("{base}/v1"),
            shared,
            task,
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<DpopCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The nonce proofs must carry now (with `require_nonce`).
    pub fn nonce(&self) -> String {
        self.shared.nonce.lock().unwrap().clone()
    }

    /// From now on, introspects each token at the provider `issuer` and requires it active
    /// and bound to the proof's key (`cnf.jkt`).
    pub fn introspect_at(&self, issuer: &str) {
        *self.shared.introspect_at.lock().unwrap() = Some(issuer.to_owned());
    }

    /// Hands out a new nonce: proofs with the old one are refused from now on.
    pub fn rotate_nonce(&self) -> String {
        let nonce = new_nonce();
        *self.shared.nonce.lock().unwrap() = nonce.clone();
        nonce
    }
}

impl Drop for DpopUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes
}

/// Why a call is refused, and how the server answers it.
enum Refusal {
    /// `DPoP error="use_dpop_nonce"` with a `DPoP-Nonce`.
    Nonce(String),
    /// `DPoP error="invalid_dpop_proof"`, or `invalid_token` for the token itself.
    Invalid(&'static str, String),
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let headers = &parts.headers;
    let (scheme, token) = match headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
    {
        Some((scheme, token)) => (Some(scheme.to_owned()), Some(token.trim().to_owned())),
        None => (None, None),
    };
    if let Some(token) = &token {
        super::logs::note_secret(token);
    }
    let proofs: Vec<String> = headers
        .get_all("dpop")
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_owned))
        .collect();
    // The URL as this server was called: its own origin and the request's path.
    let htu = format!("{}{}", shared.base, parts.uri.path());
    let current_nonce = shared.nonce.lock().unwrap().clone();
    let verdict = check_call(
        &shared,
        scheme.as_deref(),
        token.as_deref(),
        &proofs,
        parts.method.as_str(),
        &htu,
        &current_nonce,
    )
    .await;
    shared.calls.lock().unwrap().push(DpopCall {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        scheme,
        token,
        proof: proofs.first().cloned(),
        verdict: verdict.as_ref().map_err(refusal_text).cloned(),
    });
    let nonce_header = [("dpop-nonce", current_nonce.clone())];
    match verdict {
        Ok(facts) => {
            let body = Json(json!({
                "thumbprint": facts.thumbprint,
                "jti": facts.jti,
                "htu": facts.htu,
                "nonce": facts.nonce,
                "path": parts.uri.path(),
            }));
            if shared.options.require_nonce {
                (nonce_header, body).into_response()
            } else {
                body.into_response()
            }
        }
        Err(Refusal::Nonce(_)) => (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
                    .to_owned(),
            )],
            nonce_header,
        )
            .into_response(),
        Err(Refusal::Invalid(error, why)) => (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                format!(r#"DPoP algs="ES256", error="{error}""#),
            )],
            why,
        )
            .into_response(),
    }
}

use axum::Json;

fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Nonce(why) => format!("use_dpop_nonce: {why}"),
        Refusal::Invalid(error, why) => format!("{error}: {why}"),
    }
}

async fn check_call(
    shared: &Shared,
    scheme: Option<&str>,
    token: Option<&str>,
    proofs: &[String],
    method: &str,
    htu: &str,
    current_nonce: &str,
) -> Result<ProofFacts, Refusal> {
    let invalid_request = |why: &str| Refusal::Invalid("invalid_request", why.to_owned());
    let (Some(scheme), Some(token)) = (scheme, token) else {
        return Err(invalid_request("no Authorization"));
    };
    if !scheme.eq_ignore_ascii_case("dpop") {
        return Err(invalid_request(&format!(
            "the {scheme} scheme: a DPoP-bound token only with DPoP"
        )));
    }
    let [proof] = proofs else {
        return Err(Refusal::Invalid(
            "invalid_dpop_proof",
            format!("{} DPoP headers, not one", proofs.len()),
        ));
    };
    let facts = verify_proof(proof, method, htu, token, super::unix_now())
        .map_err(|why| Refusal::Invalid("invalid_dpop_proof", why))?;
    if shared.options.require_nonce && facts.nonce.as_deref() != Some(current_nonce) {
        return Err(Refusal::Nonce(format!(
            "the proof's nonce is {:?}",
            facts.nonce
        )));
    }
    // A jti is spent once it was presented with a valid proof (RFC 9449 §11.1).
    if !shared.seen_jtis.lock().unwrap().insert(facts.jti.clone()) {
        return Err(Refusal::Invalid(
            "invalid_dpop_proof",
            format!("jti {} replayed", facts.jti),
        ));
    }
    if shared.options.cnf_in_jwt {
        let jkt =
            jwt_claims(token).and_then(|claims| claims["cnf"]["jkt"].as_str().map(str::to_owned));
        if jkt.as_deref() != Some(facts.thumbprint.as_str()) {
            return Err(Refusal::Invalid(
                "invalid_token",
                format!(
                    "the token's cnf.jkt {jkt:?} is not the proof key {}",
                    facts.thumbprint
                ),
            ));
        }
    }
    let introspect_at = shared.introspect_at.lock().unwrap().clone();
    if let Some(issuer) = &introspect_at {
        let introspection = super::provider::introspect(&shared.http, issuer, token).await;
        if introspection["active"] != true {
            return Err(Refusal::Invalid(
                "invalid_token",
                "the token is not active".into(),
            ));
        }
        if introspection["cnf"]["jkt"].as_str() != Some(facts.thumbprint.as_str()) {
            return Err(Refusal::Invalid(
                "invalid_token",
                format!(
                    "the token's cnf.jkt {} is not the proof key {}",
                    introspection["cnf"]["jkt"], facts.thumbprint
                ),
            ));
        }
    }
    Ok(facts)
}

/// Checks `proof` as a resource server would for a `method` call to `htu` (the URL it was
/// called at, without query) carrying `token`, at `now` (unix seconds); the replay and nonce
/// checks are the server's. `Err` says why it is refused.
pub fn verify_proof(
    proof: &str,
    method: &str,
    htu: &str,
    token: &str,
    now: u64,
) -> Result<ProofFacts, String> {
    let segments: Vec<&str> = proof.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err("not a compact JWS".into());
    };
    let decode = |segment: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| "a segment is not base64url".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|_| "a segment is not JSON".to_owned())
    };
    let header_json = decode(header)?;
    let claims_json = decode(claims)?;
    if header_json["typ"] != "dpop+jwt" {
        return Err(format!("typ is {}", header_json["typ"]));
    }
    if header_json["alg"] != "ES256" {
        return Err(format!("alg is {}", header_json["alg"]));
    }
    let jwk = &header_json["jwk"];
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("d").is_some() {
        return Err("jwk is not a public P-256 key".into());
    }
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        jwk[name]
            .as_str()
            .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| format!("jwk.{name} is not a coordinate"))
    };
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    let mut point = vec![4u8];
    point.extend(&x);
    point.extend(&y);
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url".to_owned())?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the header's jwk".to_owned())?;
    if claims_json["htm"] != method {
        return Err(format!(
            "htm is {}, the call is {method}",
            claims_json["htm"]
        ));
    }
    if claims_json["htu"] != htu {
        return Err(format!(
            "htu is {}, the call is to {htu}",
            claims_json["htu"]
        ));
    }
    let iat = claims_json["iat"].as_u64().ok_or("no iat")?;
    if iat.abs_diff(now) > IAT_WINDOW_SECS {
        return Err(format!("iat {iat} is too far from {now}"));
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    if claims_json["ath"] != ath.as_str() {
        return Err("ath is not the hash of the token".into());
    }
    let jti = claims_json["jti"]
        .as_str()
        .filter(|jti| !jti.is_empty())
        .ok_or("no jti")?;
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&x),
        URL_SAFE_NO_PAD.encode(&y)
    );
    Ok(ProofFacts {
        thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        jti: jti.to_owned(),
        htu: htu.to_owned(),
        nonce: claims_json["nonce"].as_str().map(str::to_owned),
    })
}

/// The claims of `jwt` (a compact JWS), unverified; `None` when it is not one.
pub fn jwt_claims(jwt: &str) -> Option<Value> {
    let claims = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// The `WWW-Authenticate` of `headers`, for assertions.
pub fn challenge_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
