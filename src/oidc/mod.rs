//! The OpenID Provider, as seen by a confidential client; one file per protocol step, from
//! `settings` and `discovery` (with `attempts`, `metadata`, `client_auth`, `back_channel`)
//! through `issuer` (which `iss` values are the provider's), `authorization` (with
//! `authentication`: what a login asks and its check, and `par`: the request pushed), `grants` and `id_token` (with
//! `signing_algs`) and `userinfo` (with `token_response`: the answers read leniently) to
//! `logout` (with `end_session`: the logout strategies) and `logout_token`; `dpop` (a
//! session's key and its proofs) with `dpop_client` (DPoP negotiated and put on the back
//! channel's requests); `profile` holds the providers' defaults as data.
//!
//! Protocol only: it never imports the session or HTTP layers. Tokens leave it only as plain,
//! non-`Debug` values ([`LoginTokens`], [`RefreshedTokens`]) that the session converts.

mod api_tokens;
mod attempts;
mod authentication;
mod authorization;
mod back_channel;
mod claim_sources;
mod client_assertion;
mod client_auth;
mod discovery;
pub mod dpop;
mod dpop_client;
mod end_session;
mod grants;
mod id_token;
mod issuer;
mod jws;
mod logout;
mod logout_token;
mod metadata;
mod par;
mod profile;
mod providers;
mod session_claims;
mod settings;
mod signing_algs;
mod token_response;
mod userinfo;

use std::time::Duration;

use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;

pub use api_tokens::{ApiGrant, ApiToken};
pub use authentication::{
    AUTH_TIME_LEEWAY_SECS, AuthenticationRequest, ParameterError, SILENT_LOGIN_ERRORS, Shortfall,
};
pub use authorization::AuthorizationRequest;
pub use back_channel::BackChannel;
pub use client_assertion::{
    ASSERTION_LIFETIME_SECS, ASSERTION_TYPE, CLIENT_JWKS_PATH, ClientKeys, client_key_set,
};
pub use client_auth::{Credentials, client_authenticated_post};
pub use dpop_client::DpopNegotiated;
pub use end_session::{LogoutStrategy, LogoutTemplate};
pub use grants::{GrantedTokens, LoginTokens, RefreshedTokens};
pub use id_token::{jwt_issuer, jwt_payload};
pub use issuer::discovered_issuer_fits;
pub use logout::{EndSession, EndSessionUrl};
pub use logout_token::{LogoutCheckError, LogoutRequest, LogoutTokenError, unverified_issuer};
pub use par::ParMode;
pub use profile::{GENERIC, PROFILES, Profile};
pub use providers::{ProviderKey, Providers};
pub use session_claims::{MAX_USERINFO_CLAIMS_BYTES, PROTOCOL_CLAIMS, merge_claims};
pub use settings::{ClientAuthMethod, ProviderSettings, UserInfoMode, UserInfoTokenMethod};
pub use signing_algs::SigningAlg;
pub use userinfo::UserInfoError;

use attempts::Attempts;
use client_auth::ClientAuth;
use discovery::Discovered;

/// What went wrong talking to the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense (a 502/503 for the caller).
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// Discovery is needed but not attempted for this request: it failed moments ago and backs
    /// off for this long, or another request's attempt is running. Unavailable like
    /// [`OidcError::Unavailable`], but no new failure: the attempt that failed was reported.
    #[error(
        "identity provider unavailable: discovery failed recently or is running; next attempt in {} s",
        .0.as_secs_f64().ceil()
    )]
    Deferred(Duration),
    /// The provider refused the grant (`invalid_grant`): the tokens are no longer valid.
    #[error("identity provider rejected the grant: {0}")]
    Rejected(String),
    /// The token endpoint refused the request for another reason (`invalid_client`, …):
    /// a configuration problem, not worth an immediate retry.
    #[error("identity provider refused the request: {0}")]
    Refused(String),
    /// The provider refused a login's pushed authorization request (RFC 9126) with this OAuth
    /// error: the login fails, never sent through the browser instead.
    #[error("identity provider refused the pushed authorization request: {0}")]
    PushRefused(String),
    /// The provider refused the grant and says its token (or code) was used before: a refresh
    /// token reused by someone else. Like [`OidcError::Rejected`], plus a security event.
    #[error("identity provider rejected the grant as reused: {0}")]
    ReuseReported(String),
    /// A refreshed ID token names another user (OIDC Core §12.2): the session must end.
    #[error("refreshed ID token is for another subject")]
    SubjectChanged,
    /// A refreshed ID token fails its checks (another issuer or audience, a bad signature,
    /// a required claim missing), or the refresh answer is otherwise unusable:
    /// the whole answer is untrustworthy, its tokens unusable, and the session must end
    /// (with a rotating provider its refresh token was spent on this answer anyway).
    #[error("refreshed ID token is invalid: {0}")]
    RefreshedIdTokenInvalid(String),
    /// The provider's answer failed validation (bad ID token, wrong issuer, …).
    #[error("identity provider response is invalid: {0}")]
    Invalid(String),
    /// The UserInfo endpoint's answer cannot be used at a login (OIDC Core §5.3): it names
    /// another subject (under every `oidc.userinfo` mode), or, under `required`, it refused
    /// the access token or its answer is invalid. A bad answer (502), never an outage.
    #[error(transparent)]
    UserInfo(#[from] UserInfoError),
    /// The login's ID token verified, but does not show the authentication the login asked for
    /// (`acr_values`, `max_age`: OIDC Core §3.1.2.1, §5.5.1.1).
    #[error("the provider did not authenticate as requested: {0}")]
    NotAuthenticatedAsRequested(Shortfall),
    /// `oidc.dpop = "required"`, and the provider does not bind tokens to the session's key:
    /// its discovery does not offer ES256 proofs, or it answered a Bearer token to a request
    /// with a proof. Never a silent fall-back to Bearer.
    #[error("the identity provider does not bind tokens with DPoP: {0}")]
    DpopUnsupported(String),
}

impl Provider {
    /// The provider's id among the configured ones.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// The name the login chooser shows.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// When, before its expiry, an access token from this provider is refreshed.
    pub fn refresh_skew(&self) -> Duration {
        self.settings.refresh_skew
    }

    /// The HTTP client for the OAuth library's requests, adding the trace context to each.
    fn traced_http(&self) -> TracedHttp<'_> {
        TracedHttp(&self.http)
    }
}

/// The provider's HTTP client, adding the current trace context to each request.
struct TracedHttp<'a>(&'a reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for TracedHttp<'_> {
    type Error = <reqwest::Client as openidconnect::AsyncHttpClient<'c>>::Error;
    type Future = <reqwest::Client as openidconnect::AsyncHttpClient<'c>>::Future;

    fn call(&'c self, mut request: openidconnect::HttpRequest) -> Self::Future {
        crate::traces::inject(request.headers_mut());
        self.0.call(request)
    }
}

/// Times `request` to the provider's `endpoint` and records it in the metrics: `ok`,
/// `rejected` (the provider said no) or `error` (unreachable, invalid answer).
async fn observed<T>(
    endpoint: &'static str,
    request: impl std::future::Future<Output = Result<T, OidcError>>,
) -> Result<T, OidcError> {
    let started = std::time::Instant::now();
    let result = request.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(
            OidcError::Rejected(_)
            | OidcError::ReuseReported(_)
            | OidcError::Refused(_)
            | OidcError::PushRefused(_)
            | OidcError::UserInfo(UserInfoError::Refused(_)),
        ) => "rejected",
        Err(_) => "error",
    };
    crate::metrics::metrics().provider_request(endpoint, outcome, started.elapsed());
    result
}

/// The OpenID Provider client. Its steps are `impl` blocks in the files named above.
pub struct Provider {
    settings: ProviderSettings,
    http: reqwest::Client,
    discovered: ArcSwapOption<Discovered>,
    /// Held by the one discovery attempt running.
    discovery_lock: Mutex<()>,
    /// When discovery may be attempted again.
    attempts: std::sync::Mutex<Attempts>,
    client_auth: ClientAuth,
    /// Whether the operator was told that HS-signed ID tokens teach nothing (once).
    warned_client_secret_alg: AtomicBool,
    /// When the operator was last told that UserInfo is unusable under `auto` (once an hour,
    /// not once a login).
    userinfo_warnings: crate::clock::OncePerInterval,
    /// The DPoP nonces the provider's endpoints handed out (token endpoint, UserInfo).
    dpop_nonces: dpop::DpopNonces,
}

/// The HTTP client a provider is reached with: the public roots plus `ca_certificates`, and
/// never a redirect followed on the back channel (SSRF and token leaks). `vestibule doctor`
/// uses the same one, so it sees the provider as Vestibule does.
pub fn provider_http_client(
    ca_certificates: &[reqwest::Certificate],
) -> reqwest::Result<reqwest::Client> {
    ca_certificates
        .iter()
        .cloned()
        .fold(reqwest::Client::builder(), |builder, certificate| {
            builder.add_root_certificate(certificate)
        })
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
}

impl Provider {
    /// A provider client; discovery happens on first use (or in [`Provider::discover`]).
    pub fn new(settings: ProviderSettings) -> Result<Self, OidcError> {
        let http = provider_http_client(&settings.ca_certificates).map_err(|error| {
            OidcError::Unavailable(format!("cannot build HTTP client: {error}"))
        })?;
        Ok(Self {
            client_auth: ClientAuth::new(settings.auth_method),
            settings,
            http,
            discovered: ArcSwapOption::empty(),
            discovery_lock: Mutex::new(()),
            attempts: std::sync::Mutex::new(Attempts::default()),
            warned_client_secret_alg: AtomicBool::new(false),
            userinfo_warnings: userinfo::warnings(),
            dpop_nonces: dpop::DpopNonces::default(),
        })
    }
}
