//! Identity assertions (`kind = "assertion"` routes): a short-lived JWT Vestibule signs about
//! the session's user for one upstream, and the key set (`/.well-known/jwks.json`) upstreams
//! verify it with.
//!
//! `keys.rs` owns the ES256 keys (from a PEM, or derived from the session key ring), `claims.rs`
//! the claim set, `signer.rs` the compact JWS and which keys sign and are published. Pure: no
//! network, no axum. A private key never leaves `keys.rs`; a session's cookie or storage key
//! never enters an assertion (`sid` is a keyed hash of the session's public handle).

mod claims;
pub(crate) mod keys;
mod signer;

pub use claims::{Envelope, claim_set};
pub use keys::{ALGORITHM, KeyError, SigningKey};
pub use signer::{
    AssertionSettings, Assertions, DEFAULT_LIFETIME_SECS, JWKS_PATH, KeySource, MAX_LIFETIME_SECS,
    SIGNING_KEY_PURPOSE, TYPE,
};
