//! Randomness from the operating system's CSPRNG, the only source of ids, secrets and nonces.

/// Returns `N` bytes from the OS random source.
///
/// An OS without a working CSPRNG cannot run a security product; aborting is the only safe answer,
/// so a failure here panics instead of silently producing weak values.
#[allow(clippy::expect_used)]
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system random source failed");
    out
}

/// 256 random bits as base64url without padding (43 characters): for `state`, `nonce`, ids.
pub fn url_safe_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<32>())
}

/// 128 random bits as base64url without padding (22 characters): public handles that must be
/// unique and unguessable but are not secrets.
pub fn url_safe_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<16>())
}
