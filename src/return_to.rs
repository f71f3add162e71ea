//! `returnTo`: where the browser goes after login, restricted to this origin.
//!
//! Only a relative path on our own origin is accepted. Anything that a browser could read as
//! another host (`//host`, `/\host`, schemes, encoded or control-character variants) becomes `/`.

use percent_encoding::percent_decode_str;
use url::Url;

/// Longest `returnTo` kept; longer values fall back to `/`.
const MAX_LEN: usize = 2048;

/// A validated same-origin path (with optional query and fragment), safe for `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// The root path, the fallback for every rejected value.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Validates a `returnTo` value against `public_url`'s origin; invalid input yields `/`.
    pub fn parse_or_root(candidate: Option<&str>, public_url: &Url) -> Self {
        candidate
            .and_then(|value| Self::parse(value, public_url))
            .unwrap_or_else(Self::root)
    }

    fn parse(candidate: &str, public_url: &Url) -> Option<Self> {
        if candidate.is_empty() || candidate.len() > MAX_LEN || !looks_like_local_path(candidate) {
            return None;
        }
        // Encoded variants (`/%2F%2Fevil`, `/%5Cevil`, `%09`) must not decode into anything unsafe.
        let mut decoded = candidate.to_owned();
        for _ in 0..3 {
            let next = percent_decode_str(&decoded)
                .decode_utf8()
                .ok()?
                .into_owned();
            if !looks_like_local_path(&next) {
                return None;
            }
            if next == decoded {
                break;
            }
            decoded = next;
        }
        // Final check with a real URL parser: the result must stay on our origin.
        let resolved = public_url.join(candidate).ok()?;
        if resolved.origin() != public_url.origin() {
            return None;
        }
        let mut local = resolved.path().to_owned();
        if let Some(query) = resolved.query() {
            local.push('?');
            local.push_str(query);
        }
        if let Some(fragment) = resolved.fragment() {
            local.push('#');
            local.push_str(fragment);
        }
        // Dot segments collapse during resolution (`/.//evil` → `//evil`): check the result too.
        looks_like_local_path(&local).then_some(Self(local))
    }

    /// The path to redirect to.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `/`, then no second `/` or `\`, no backslash or control character anywhere.
fn looks_like_local_path(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        && !value
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(candidate: &str) -> String {
        let base = Url::parse("http://localhost:8080").unwrap();
        ReturnTo::parse_or_root(Some(candidate), &base).0
    }

    #[test]
    fn local_paths_are_kept() {
        assert_eq!(check("/"), "/");
        assert_eq!(check("/orders/42"), "/orders/42");
        assert_eq!(check("/search?q=a&b=c#top"), "/search?q=a&b=c#top");
    }

    #[test]
    fn anything_off_origin_falls_back_to_root() {
        for evil in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%255C%255Cevil.example",
            "/\tevil",
            "/%09/evil.example",
            "/\r\nLocation: https://evil.example",
            "/%0d%0aSet-Cookie:x=1",
            "javascript:alert(1)",
            "evil.example",
            "",
            " /x",
            "/ /evil.example",
            "https:evil.example",
            "/.//evil.example",
            "/a/..//evil.example",
            "/%2e//evil.example",
            "/./\\evil.example",
            "/a/../..//evil.example",
        ] {
            assert_eq!(check(evil), "/", "{evil:?} must fall back to /");
        }
    }

    #[test]
    fn overlong_values_fall_back_to_root() {
        assert_eq!(check(&format!("/{}", "a".repeat(3000))), "/");
    }

    #[test]
    fn missing_value_is_root() {
        let base = Url::parse("http://localhost:8080").unwrap();
        assert_eq!(ReturnTo::parse_or_root(None, &base), ReturnTo::root());
    }
}
