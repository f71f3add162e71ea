//! A resource server on loopback that takes only DPoP-bound access tokens (RFC 9449 §7) and
//! checks every proof as RFC 9449 §4.3 asks: `typ` `dpop+jwt`, `ES256` with a public `jwk` in
//! the header and a valid signature by it, `htm` and `htu` of the request as this server sees
//! it, `iat` within a minute, a `jti` never seen before, `ath` the hash of the access token,
//! and the token's `cnf.jkt` the RFC 7638 thumbprint of the proof's key. It answers `200` only
//! then, `401` with the reason otherwise, and records what it accepted (the token, its key's
//! thumbprint and the proof) so a test can replay them as a thief would.
//!
//! The token's own signature is not checked here: the tests take tokens from Keycloak and
//! prove at Keycloak what it thinks of them. (The DPoP work's own resource server,
//! `harness/dpop_upstream.rs` on its branch, checks the same proof rules for oidc-provider; once
//! both are on main this one can give way to it.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::unix_now;

/// One call the server accepted.
#[derive(Clone, Debug)]
pub struct AcceptedCall {
    /// Method and path, e.g. `GET /hello`.
    pub request: String,
    /// The access token (from `Authorization: DPoP <token>`).
    pub access_token: String,
    /// The RFC 7638 thumbprint of the proof's key (= the token's `cnf.jkt`).
    pub jkt: String,
    /// The proof, as received.
    pub proof: String,
}

#[derive(Default)]
struct Seen {
    accepted: Vec<AcceptedCall>,
    refused: Vec<String>,
    jtis: HashSet<String>,
}

/// The running resource server.
pub struct DpopApi {
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub base_url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl DpopApi {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .fallback(handle)
            .with_state((base_url.clone(), seen.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url,
            seen,
            task,
        }
    }

    /// The calls accepted so far, oldest first.
    pub fn accepted(&self) -> Vec<AcceptedCall> {
        self.seen.lock().unwrap().accepted.clone()
    }

    /// Why each refused call was refused, oldest first.
    pub fn refusals(&self) -> Vec<String> {
        self.seen.lock().unwrap().refused.clone()
    }
}

impl Drop for DpopApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State((base_url, seen)): State<(String, Arc<Mutex<Seen>>)>,
    request: Request,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, proof) = (header("authorization"), header("dpop"));
    let mut seen = seen.lock().unwrap();
    let checked = check(
        &method,
        &format!("{base_url}{path}"),
        authorization.as_deref(),
        proof.as_deref(),
        &seen.jtis,
    );
    match checked {
        Ok((call, jti)) => {
            seen.jtis.insert(jti);
            let jkt = call.jkt.clone();
            seen.accepted.push(AcceptedCall {
                request: format!("{method} {path}"),
                ..call
            });
            Json200(json!({ "ok": true, "jkt": jkt })).into_response()
        }
        Err(reason) => {
            seen.refused.push(reason.clone());
            (
                StatusCode::UNAUTHORIZED,
                [(
                    "www-authenticate",
                    format!("DPoP error=\"invalid_dpop_proof\", error_description=\"{reason}\""),
                )],
                reason,
            )
                .into_response()
        }
    }
}

struct Json200(Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        (StatusCode::OK, axum::Json(self.0)).into_response()
    }
}

/// RFC 9449 §4.3 and §7.1 for one request to `url`: the accepted call and the proof's `jti`,
/// or why the request is refused.
fn check(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    proof: Option<&str>,
    seen_jtis: &HashSet<String>,
) -> Result<(AcceptedCall, String), String> {
    let authorization = authorization.ok_or("no Authorization header")?;
    let (scheme, token) = authorization
        .split_once(' ')
        .ok_or("Authorization has no scheme")?;
    if !scheme.eq_ignore_ascii_case("DPoP") {
        return Err(format!("Authorization scheme {scheme}, not DPoP"));
    }
    let proof = proof.ok_or("no DPoP header")?;
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the proof is not a compact JWS".into());
    };
    let header = json_part(header_b64)?;
    let claims = json_part(claims_b64)?;
    if header["typ"] != "dpop+jwt" {
        return Err(format!("typ {}", header["typ"]));
    }
    if header["alg"] != "ES256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err("the proof's jwk holds a private key".into());
    }
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(format!("jwk is not an EC P-256 key: {jwk}"));
    }
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().unwrap_or(""))
            .map_err(|_| format!("jwk.{name} is not base64url"))
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| "jwk is not a point on P-256".to_owned())?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .ok()
        .and_then(|bytes| p256::ecdsa::Signature::from_slice(&bytes).ok())
        .ok_or("the signature is not an ES256 signature")?;
    key.verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the header's jwk".to_owned())?;
    if claims["htm"] != method {
        return Err(format!("htm {} for a {method}", claims["htm"]));
    }
    if claims["htu"] != url {
        return Err(format!("htu {} for {url}", claims["htu"]));
    }
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat.abs_diff(unix_now()) > 60 {
        return Err(format!("iat {iat} is more than a minute off"));
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?.to_owned();
    if seen_jtis.contains(&jti) {
        return Err(format!("jti {jti} was used before (a replayed proof)"));
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    if claims["ath"] != ath.as_str() {
        return Err("ath is not the hash of this access token".into());
    }
    let jkt = jwk_thumbprint(jwk);
    let token_claims = token
        .split('.')
        .nth(1)
        .ok_or("the access token is not a JWT")
        .and_then(|part| json_part(part).map_err(|_| "the access token is not a JWT"))?;
    if token_claims["cnf"]["jkt"] != jkt.as_str() {
        return Err(format!(
            "the token's cnf.jkt {} is not the proof key's thumbprint {jkt}",
            token_claims["cnf"]["jkt"]
        ));
    }
    Ok((
        AcceptedCall {
            request: String::new(),
            access_token: token.to_owned(),
            jkt,
            proof: proof.to_owned(),
        },
        jti,
    ))
}

/// The RFC 7638 thumbprint of an EC public key: SHA-256 of its required members in
/// lexicographic order, no white space, base64url.
pub fn jwk_thumbprint(jwk: &Value) -> String {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap_or(""),
        jwk["kty"].as_str().unwrap_or(""),
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or(""),
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The claims of a JWT (its payload), unverified.
pub fn jwt_claims(jwt: &str) -> Value {
    jwt.split('.')
        .nth(1)
        .and_then(|part| json_part(part).ok())
        .unwrap_or(Value::Null)
}

fn json_part(part: &str) -> Result<Value, String> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| "a JWT part is not base64url JSON".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example, an RSA key, has no EC twin in the RFC; RFC 9449 §7.1's example
    /// key and its thumbprint stand in.
    #[test]
    fn the_thumbprint_is_rfc_9449s_example() {
        let jwk = json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256",
        });
        assert_eq!(
            jwk_thumbprint(&jwk),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    /// A proof for `url` by a fixed key, over a token bound to `jkt` (the key's own when
    /// `None`).
    fn proof_and_token(url: &str, jti: &str, jkt: Option<&str>) -> (String, String) {
        use p256::ecdsa::signature::Signer;
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let b64 = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let own = jwk_thumbprint(&jwk);
        let token = format!(
            "{}.{}.sig",
            b64(&json!({ "alg": "RS256" })),
            b64(&json!({ "cnf": { "jkt": jkt.unwrap_or(&own) } }))
        );
        let header = b64(&json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk }));
        let claims = b64(&json!({
            "htm": "GET",
            "htu": url,
            "iat": unix_now(),
            "jti": jti,
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())),
        }));
        let signature: p256::ecdsa::Signature = key.sign(format!("{header}.{claims}").as_bytes());
        let proof = format!(
            "{header}.{claims}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        );
        (proof, token)
    }

    #[test]
    fn a_proof_is_accepted_only_for_its_request_its_token_and_once() {
        let url = "http://127.0.0.1:1/hello";
        let (proof, token) = proof_and_token(url, "one", None);
        let auth = format!("DPoP {token}");
        let mut jtis = HashSet::new();
        let (call, jti) = check("GET", url, Some(&auth), Some(&proof), &jtis).unwrap();
        assert_eq!(call.access_token, token);
        jtis.insert(jti);
        let refused = |method: &str, url: &str, auth: &str, proof: &str, jtis: &HashSet<String>| {
            check(method, url, Some(auth), Some(proof), jtis).unwrap_err()
        };
        assert!(refused("GET", url, &auth, &proof, &jtis).contains("used before"));
        let none = HashSet::new();
        assert!(refused("POST", url, &auth, &proof, &none).contains("htm"));
        assert!(refused("GET", "http://127.0.0.1:1/other", &auth, &proof, &none).contains("htu"));
        let bearer = format!("Bearer {token}");
        assert!(refused("GET", url, &bearer, &proof, &none).contains("not DPoP"));
        let (other_proof, other_token) = proof_and_token(url, "two", Some("someone-else"));
        let other_auth = format!("DPoP {other_token}");
        assert!(refused("GET", url, &other_auth, &other_proof, &none).contains("cnf.jkt"));
        assert!(refused("GET", url, &other_auth, &proof, &none).contains("ath"));
        let mut forged = proof.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(refused("GET", url, &auth, &forged, &none).contains("signature"));
    }
}
