//! DPoP between Vestibule and the provider (RFC 9449): whether logins use it with the provider
//! as discovered (`oidc.dpop`), and the proofs on the back-channel requests of a session whose
//! key binds its tokens (code exchange, refresh, the grants for APIs, UserInfo).
//!
//! A request goes out with a fresh proof for its method and URL, carrying the nonce this
//! instance last learnt from that origin; a server that answers with a nonce challenge
//! (`use_dpop_nonce`: a `400` from a token endpoint, §8; a `401` with `WWW-Authenticate`
//! from a resource such as UserInfo, §9) gets the request once more with the nonce it sent.
//! Any `DPoP-Nonce` a response carries is remembered, so later requests carry it up front.
//! A retried request that authenticates with a client assertion carries a fresh one: an
//! assertion's `jti` is spent once sent. Never logs a proof, a token or the key.

use std::future::Future;
use std::pin::Pin;

use openidconnect::http::{self, HeaderValue, StatusCode, header};
use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};

use super::client_assertion::Asserter;
use super::discovery::Discovered;
use super::dpop::{
    ALGORITHM, DpopKey, DpopMode, DpopNonces, NONCE_HEADER, PROOF_HEADER, USE_NONCE_ERROR,
    is_acceptable_nonce, origin_of,
};
use super::{OidcError, Provider};

/// What a request to the provider fails with (as openidconnect's reqwest client's).
pub(super) type HttpError = HttpClientError<reqwest::Error>;

/// The future of one request to the provider.
pub(super) type HttpFuture<'c> =
    Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + Sync + 'c>>;

/// What the negotiation of `oidc.dpop` with a discovered provider came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopNegotiated {
    /// Logins bind their tokens to a key of their own.
    On,
    /// Tokens are Bearer tokens (`off`, or `auto` with a provider that does not offer ES256).
    Off,
    /// `required`, and the provider's discovery does not offer ES256 proofs: logins fail.
    NotOffered,
}

impl DpopNegotiated {
    /// The word the readiness probe reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::NotOffered => "not_offered",
        }
    }

    /// `mode` with a provider whose discovery lists `algorithms` for proofs.
    fn of(mode: DpopMode, algorithms: Option<&[String]>) -> Self {
        let offered = DpopMode::Auto.applies(algorithms);
        match mode {
            DpopMode::Off => Self::Off,
            DpopMode::Auto if offered => Self::On,
            DpopMode::Auto => Self::Off,
            DpopMode::Required if offered => Self::On,
            DpopMode::Required => Self::NotOffered,
        }
    }
}

impl Provider {
    /// What `oidc.dpop` came to with the provider as last discovered; `None` before discovery.
    pub fn dpop_negotiated(&self) -> Option<DpopNegotiated> {
        self.discovered
            .load()
            .as_deref()
            .map(|discovered| self.dpop_with(discovered))
    }

    /// What `oidc.dpop` comes to with `discovered`.
    pub(super) fn dpop_with(&self, discovered: &Discovered) -> DpopNegotiated {
        DpopNegotiated::of(
            self.settings.dpop,
            discovered
                .extra
                .dpop_signing_alg_values_supported
                .as_deref(),
        )
    }

    /// A fresh key for a login when DPoP applies with `discovered`; `None` when it does not;
    /// [`OidcError::DpopUnsupported`] under `required` with a provider that does not offer it.
    pub(super) fn login_dpop_key(
        &self,
        discovered: &Discovered,
    ) -> Result<Option<DpopKey>, OidcError> {
        match self.dpop_with(discovered) {
            DpopNegotiated::Off => Ok(None),
            DpopNegotiated::On => DpopKey::generate()
                .map(Some)
                .map_err(|error| OidcError::Unavailable(format!("DPoP key: {error}"))),
            DpopNegotiated::NotOffered => Err(OidcError::DpopUnsupported(format!(
                "oidc.dpop is required, and the provider's discovery does not list \
                 {ALGORITHM} in dpop_signing_alg_values_supported"
            ))),
        }
    }

    /// The HTTP client for openidconnect's requests with a proof of `key` on each (`ath` of
    /// `access_token` when the request carries one).
    pub(super) fn dpop_http<'a>(
        &'a self,
        key: &'a DpopKey,
        access_token: Option<&'a str>,
    ) -> DpopHttp<'a> {
        DpopHttp {
            http: &self.http,
            prover: Prover {
                key,
                nonces: &self.dpop_nonces,
                access_token,
                asserter: self.asserter(),
            },
        }
    }
}

impl Provider {
    /// Sends `request` (a form POST to the token endpoint, for the grants openidconnect does
    /// not make) with a proof of `key`, answering one nonce challenge.
    pub(super) async fn send_with_proof(
        &self,
        request: reqwest::RequestBuilder,
        key: &DpopKey,
    ) -> Result<HttpResponse, OidcError> {
        let unreachable = |error: HttpError| {
            OidcError::Unavailable(format!("token endpoint unreachable: {error}"))
        };
        let request = request.build().map_err(|error| {
            OidcError::Unavailable(format!("token request: {}", error.without_url()))
        })?;
        let prover = Prover {
            key,
            nonces: &self.dpop_nonces,
            access_token: None,
            asserter: self.asserter(),
        };
        send(
            &self.http,
            from_reqwest(request).map_err(unreachable)?,
            &prover,
        )
        .await
        .map_err(unreachable)
    }
}

/// Who signs a request's proofs, with which nonces, for which access token.
pub(super) struct Prover<'a> {
    /// The session's key.
    pub(super) key: &'a DpopKey,
    /// The nonces learnt per origin.
    pub(super) nonces: &'a DpopNonces,
    /// The access token the request carries (`ath`), if any.
    pub(super) access_token: Option<&'a str>,
    /// What signs a fresh client assertion for a retry (`private_key_jwt`), if the client
    /// authenticates so.
    pub(super) asserter: Option<Asserter<'a>>,
}

/// openidconnect's HTTP client with a DPoP proof on every request (and the trace context).
pub(super) struct DpopHttp<'a> {
    http: &'a reqwest::Client,
    prover: Prover<'a>,
}

impl<'c> AsyncHttpClient<'c> for DpopHttp<'_> {
    type Error = HttpError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, mut request: HttpRequest) -> Self::Future {
        crate::traces::inject(request.headers_mut());
        Box::pin(send(self.http, request, &self.prover))
    }
}

/// Sends `request` with a proof by `prover`, answering one nonce challenge.
pub(super) async fn send(
    http: &reqwest::Client,
    mut request: HttpRequest,
    prover: &Prover<'_>,
) -> Result<HttpResponse, HttpError> {
    let target = request.uri().to_string();
    let origin = origin_of(&target).to_owned();
    let mut nonce = prover.nonces.get(&origin);
    let mut challenged = false;
    loop {
        let proof = prover
            .key
            .proof(
                request.method().as_str(),
                &target,
                prover.access_token,
                nonce.as_deref(),
                crate::clock::unix_now(),
            )
            .map_err(|error| HttpClientError::Other(format!("DPoP proof: {error}")))?;
        let mut attempt = copy(&request)?;
        attempt.headers_mut().insert(
            PROOF_HEADER,
            HeaderValue::from_str(&proof)
                .map_err(|error| HttpClientError::Other(error.to_string()))?,
        );
        let response = http.call(attempt).await?;
        let fresh = response
            .headers()
            .get(NONCE_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|fresh| is_acceptable_nonce(fresh));
        if let Some(fresh) = fresh {
            prover.nonces.remember(&origin, fresh);
        }
        match fresh {
            Some(fresh) if !challenged && asks_for_nonce(&response) => {
                challenged = true;
                nonce = Some(fresh.into());
                if let Some(body) = prover
                    .asserter
                    .and_then(|asserter| asserter.renewed_in(request.body()))
                {
                    *request.body_mut() = body;
                }
            }
            _ => return Ok(response),
        }
    }
}

/// A copy of `request` (an `http::Request` is not `Clone`: its extensions may not be).
fn copy(request: &HttpRequest) -> Result<HttpRequest, HttpError> {
    let mut copy = http::Request::builder()
        .method(request.method().clone())
        .uri(request.uri().clone())
        .version(request.version())
        .body(request.body().clone())
        .map_err(HttpClientError::Http)?;
    *copy.headers_mut() = request.headers().clone();
    Ok(copy)
}

/// Whether `response` is a nonce challenge: a token endpoint's `400` with the JSON error
/// `use_dpop_nonce` (RFC 9449 §8), or a resource's `401` whose `WWW-Authenticate` says it (§9).
fn asks_for_nonce(response: &HttpResponse) -> bool {
    match response.status() {
        StatusCode::BAD_REQUEST => serde_json::from_slice::<serde_json::Value>(response.body())
            .ok()
            .is_some_and(|body| {
                body.get("error").and_then(|e| e.as_str()) == Some(USE_NONCE_ERROR)
            }),
        StatusCode::UNAUTHORIZED => response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains(USE_NONCE_ERROR)),
        _ => false,
    }
}

/// `request` (built by reqwest, for the requests openidconnect does not make) as the request
/// [`send`] signs: its body must be in memory (a form).
pub(super) fn from_reqwest(request: reqwest::Request) -> Result<HttpRequest, HttpError> {
    let body = request
        .body()
        .and_then(reqwest::Body::as_bytes)
        .unwrap_or_default()
        .to_vec();
    let mut converted = http::Request::builder()
        .method(request.method().clone())
        .uri(request.url().as_str())
        .body(body)
        .map_err(HttpClientError::Http)?;
    *converted.headers_mut() = request.headers().clone();
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server answering each connection with the next of `answers`, recording the
    /// `DPoP` header each request carried.
    async fn server(answers: Vec<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
        let (url, proofs, _) = server_with_bodies(answers).await;
        (url, proofs)
    }

    /// [`server`], also recording each request's body.
    async fn server_with_bodies(
        answers: Vec<&'static str>,
    ) -> (String, Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let (proofs, bodies) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (seen, seen_bodies) = (proofs.clone(), bodies.clone());
        tokio::spawn(async move {
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                let head_end = loop {
                    if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                };
                let text = String::from_utf8_lossy(&request[..head_end]).to_string();
                let length: usize = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |length| length.trim().parse().unwrap());
                while request.len() < head_end + length {
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                }
                let proof = text
                    .lines()
                    .find_map(|line| line.strip_prefix("dpop: "))
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(proof);
                let body = String::from_utf8_lossy(&request[head_end..]).to_string();
                seen_bodies.lock().unwrap().push(body);
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, proofs, bodies)
    }

    fn claims(proof: &str) -> serde_json::Value {
        use base64::Engine;
        let payload = proof.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }

    fn post(url: &str) -> HttpRequest {
        http::Request::builder()
            .method("POST")
            .uri(format!("{url}?q=1"))
            .body(b"grant_type=x".to_vec())
            .unwrap()
    }

    const CHALLENGE_400: &str = "HTTP/1.1 400 Bad Request\r\nDPoP-Nonce: n-1\r\ncontent-type: application/json\r\ncontent-length: 26\r\nconnection: close\r\n\r\n{\"error\":\"use_dpop_nonce\"}";
    const CHALLENGE_401: &str = "HTTP/1.1 401 Unauthorized\r\nDPoP-Nonce: n-2\r\nWWW-Authenticate: DPoP error=\"use_dpop_nonce\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const OK: &str =
        "HTTP/1.1 200 OK\r\nDPoP-Nonce: n-3\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";

    #[tokio::test]
    async fn a_nonce_challenge_is_answered_once_and_the_nonce_kept_for_the_origin() {
        let (url, proofs) = server(vec![CHALLENGE_400, OK, OK]).await;
        let key = DpopKey::generate().unwrap();
        let nonces = DpopNonces::default();
        let prover = Prover {
            key: &key,
            nonces: &nonces,
            access_token: None,
            asserter: None,
        };
        let http = reqwest::Client::new();
        let response = send(&http, post(&url), &prover).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The next request carries the latest nonce up front: no challenge.
        send(&http, post(&url), &prover).await.unwrap();
        let proofs = proofs.lock().unwrap().clone();
        assert_eq!(proofs.len(), 3);
        let [first, retry, next] = [0, 1, 2].map(|at| claims(&proofs[at]));
        assert!(first.get("nonce").is_none());
        assert_eq!(retry["nonce"], "n-1");
        assert_eq!(next["nonce"], "n-3");
        assert_ne!(first["jti"], retry["jti"], "a fresh proof for the retry");
        assert_eq!(retry["htm"], "POST");
        assert_eq!(retry["htu"], url, "no query in htu");
        assert_eq!(nonces.get(origin_of(&url)).as_deref(), Some("n-3"));
    }

    #[tokio::test]
    async fn a_resource_challenge_is_answered_but_never_twice() {
        let (url, proofs) = server(vec![CHALLENGE_401, CHALLENGE_401]).await;
        let key = DpopKey::generate().unwrap();
        let nonces = DpopNonces::default();
        let prover = Prover {
            key: &key,
            nonces: &nonces,
            access_token: Some("at-1"),
            asserter: None,
        };
        let response = send(&reqwest::Client::new(), post(&url), &prover)
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "one retry only"
        );
        let proofs = proofs.lock().unwrap().clone();
        assert_eq!(proofs.len(), 2);
        assert_eq!(claims(&proofs[1])["nonce"], "n-2");
        assert_eq!(
            claims(&proofs[1])["ath"],
            super::super::dpop::access_token_hash("at-1")
        );
    }

    #[test]
    fn the_negotiation_follows_the_mode_and_the_discovered_algorithms() {
        let es256 = vec!["ES256".to_owned()];
        let eddsa = vec!["EdDSA".to_owned()];
        use DpopNegotiated::*;
        for (mode, algorithms, negotiated) in [
            (DpopMode::Off, Some(&es256), Off),
            (DpopMode::Auto, Some(&es256), On),
            (DpopMode::Auto, Some(&eddsa), Off),
            (DpopMode::Auto, None, Off),
            (DpopMode::Required, Some(&es256), On),
            (DpopMode::Required, Some(&eddsa), NotOffered),
            (DpopMode::Required, None, NotOffered),
        ] {
            assert_eq!(
                DpopNegotiated::of(mode, algorithms.map(Vec::as_slice)),
                negotiated,
                "{mode:?} {algorithms:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_retry_carries_a_fresh_client_assertion_never_the_spent_one() {
        let (url, _, bodies) = server_with_bodies(vec![CHALLENGE_400, OK]).await;
        let key = DpopKey::generate().unwrap();
        let nonces = DpopNonces::default();
        let signing = crate::assertion::SigningKey::from_pem(
            "kid-1",
            crate::assertion::keys::tests::PKCS8_PEM,
        )
        .unwrap();
        let keys = super::super::ClientKeys::new(vec![signing.into()]).unwrap();
        let asserter = Asserter {
            keys: &keys,
            client_id: "rp",
            audience: "https://op.example",
        };
        let prover = Prover {
            key: &key,
            nonces: &nonces,
            access_token: None,
            asserter: Some(asserter),
        };
        let mut request = post(&url);
        *request.body_mut() =
            format!("grant_type=x&client_assertion={}", asserter.assertion()).into_bytes();
        let response = send(&reqwest::Client::new(), request, &prover)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bodies = bodies.lock().unwrap().clone();
        let assertion = |body: &str| {
            url::form_urlencoded::parse(body.as_bytes())
                .find(|(name, _)| name == "client_assertion")
                .map(|(_, value)| value.into_owned())
                .unwrap()
        };
        let (first, retry) = (assertion(&bodies[0]), assertion(&bodies[1]));
        assert_ne!(
            claims(&first)["jti"],
            claims(&retry)["jti"],
            "a fresh assertion"
        );
        assert!(bodies[1].starts_with("grant_type=x&"), "{}", bodies[1]);
    }
}
