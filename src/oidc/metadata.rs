//! The discovery document's shape (OIDC Discovery 1.0), including the logout, revocation,
//! RFC 9207 and DPoP fields openidconnect does not model.
//!
//! Types only: fetching and checking the document is [`super::discovery`]'s job.

use openidconnect::AdditionalProviderMetadata;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use serde::{Deserialize, Serialize};
use url::Url;

/// Discovery fields beyond OIDC Discovery 1.0 that Vestibule uses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RP-Initiated Logout 1.0.
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// RFC 7009 token revocation.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// RFC 9207: the provider adds `iss` to authorization responses.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// RFC 9126: where authorization requests may be pushed.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// RFC 9126: the provider accepts pushed authorization requests only.
    #[serde(default)]
    pub require_pushed_authorization_requests: Option<bool>,
    /// RFC 9449 §5.1: the algorithms the provider accepts DPoP proofs in (it offers DPoP).
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// The provider's discovery document.
pub type ProviderMetadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
