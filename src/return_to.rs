//! `returnTo`: where the browser goes after login, restricted to this origin.
//!
//! Only a relative path on our own origin is accepted. Anything that a browser could read as
//! another host (`//host`, `/\host`, schemes, encoded or control-character variants) becomes `/`.

use std::borrow::Cow;

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

    /// A third-party-initiated login's `target_link_uri` (OIDC Core §4): an absolute URL on
    /// `public_url`'s origin (without user info), or a local path, kept as its local part
    /// under the same checks as `returnTo`; anything else is `None`.
    pub fn from_target_link_uri(candidate: &str, public_url: &Url) -> Option<Self> {
        if candidate.len() > MAX_LEN
            || candidate
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return None;
        }
        if candidate.starts_with('/') {
            return Self::parse(candidate, public_url);
        }
        let url = Url::parse(candidate).ok()?;
        if url.origin() != public_url.origin()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        let mut local = url.path().to_owned();
        if let Some(query) = url.query() {
            local.push('?');
            local.push_str(query);
        }
        if let Some(fragment) = url.fragment() {
            local.push('#');
            local.push_str(fragment);
        }
        Self::parse(&local, public_url)
    }

    fn parse(candidate: &str, public_url: &Url) -> Option<Self> {
        if !is_acceptable(candidate) {
            return None;
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
        // Resolution collapses dot segments (`/.//evil` → `//evil`, `/./%2f` → `/%2f`) and
        // percent-encodes non-ASCII (up to three times longer): the result must pass the same
        // checks as the candidate, which also makes parsing a kept value return it unchanged.
        is_acceptable(&local).then_some(Self(local))
    }

    /// The path to redirect to.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A kept `returnTo` (`return_to`) with the query parameter `name=value` added before any
/// fragment, replacing an earlier `name` (so a marker never piles up). `name` and `value` are
/// fixed words of our own (no encoding needed); the result stays a local path.
pub fn with_query_marker(return_to: &str, name: &str, value: &str) -> String {
    let (before_fragment, fragment) = match return_to.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (return_to, None),
    };
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect();
    let marker = format!("{name}={value}");
    pairs.push(&marker);
    let mut url = format!("{path}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    url
}

/// Within [`MAX_LEN`] and a local path, as written and as decoded.
fn is_acceptable(value: &str) -> bool {
    value.len() <= MAX_LEN && looks_like_local_path(value) && decodes_to_local_paths(value)
}

/// Whether each of up to three percent-decodings is still a local path.
///
/// Encoded variants (`/%2F%2Fevil`, `/%5Cevil`, `%09`) must not decode into anything unsafe.
fn decodes_to_local_paths(value: &str) -> bool {
    let mut current = Cow::Borrowed(value);
    for _ in 0..3 {
        let Ok(next) = percent_decode_str(&current).decode_utf8() else {
            return false;
        };
        if !looks_like_local_path(&next) {
            return false;
        }
        if next == current {
            return true;
        }
        current = Cow::Owned(next.into_owned());
    }
    true
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
    fn a_target_link_uri_is_kept_only_on_our_origin() {
        let base = Url::parse("http://localhost:8080").unwrap();
        let target =
            |candidate: &str| ReturnTo::from_target_link_uri(candidate, &base).map(|kept| kept.0);
        assert_eq!(
            target("http://localhost:8080/orders/42?tab=a#x").as_deref(),
            Some("/orders/42?tab=a#x")
        );
        assert_eq!(target("/orders/42").as_deref(), Some("/orders/42"));
        for foreign in [
            "https://evil.example/",
            "https://localhost:8080/",
            "http://localhost:8081/",
            "http://evil@localhost:8080/",
            "http://localhost:8080//evil.example",
            "http://localhost:8080/%2F%2Fevil.example",
            "http://localhost:8080/\t/evil",
            "http://localhost:8080/	/evil.example",
            "//evil.example",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(target(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_marker_goes_into_the_query_before_the_fragment_once() {
        let marked = |to: &str| with_query_marker(to, "vestibule_login", "login_required");
        assert_eq!(marked("/"), "/?vestibule_login=login_required");
        assert_eq!(
            marked("/orders?tab=a#/x?y=1"),
            "/orders?tab=a&vestibule_login=login_required#/x?y=1"
        );
        assert_eq!(
            marked("/?vestibule_login=consent_required&b=2"),
            "/?b=2&vestibule_login=login_required"
        );
        assert_eq!(marked("/#hash"), "/?vestibule_login=login_required#hash");
        let base = Url::parse("http://localhost:8080").unwrap();
        let kept = ReturnTo::parse_or_root(Some(&marked("/a?b=c#d")), &base);
        assert_eq!(kept.as_str(), marked("/a?b=c#d"), "still a local path");
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
            "/./%2f",
            "/./%2f%2fevil.example",
            "/a/../%5Cevil.example",
            "/%2e/%252f%252fevil.example",
        ] {
            assert_eq!(check(evil), "/", "{evil:?} must fall back to /");
        }
    }

    #[test]
    fn overlong_values_fall_back_to_root() {
        assert_eq!(check(&format!("/{}", "a".repeat(3000))), "/");
        // 2,001 bytes as written, 6,001 once the URL parser percent-encodes the `é`s.
        assert_eq!(check(&format!("/{}", "\u{e9}".repeat(1000))), "/");
    }

    #[test]
    fn missing_value_is_root() {
        let base = Url::parse("http://localhost:8080").unwrap();
        assert_eq!(ReturnTo::parse_or_root(None, &base), ReturnTo::root());
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing: whatever comes in, what goes out is a local path that stays local.

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    const PUBLIC_URL: &str = "http://localhost:8080";

    /// 512 cases and no failure files: well under a second in a debug build, nothing on disk.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Pieces that browsers, URL parsers or decoders could turn into another origin.
    const DANGEROUS_PIECES: &[&str] = &[
        "/",
        "//",
        "\\",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%252f",
        "%255c",
        "%09",
        "%0a",
        "%0d",
        "%00",
        "%20",
        "%25",
        ".",
        "..",
        "%2e",
        "%2e%2e",
        ":",
        "@",
        "http:",
        "https:",
        "javascript:",
        "\t",
        "\r",
        "\n",
        " ",
        "\u{a0}",
        "\u{3000}",
        "\u{ff0f}",
        "?",
        "#",
        "a",
        "evil.example",
        "\u{e9}",
        "%C3%A9",
        "%ff",
    ];

    /// Whole segments a URL parser removes, which can bring what follows them to the front.
    const DOT_SEGMENTS: &[&str] = &["", ".", "..", "%2e", "%2E%2E", ".%2e"];

    /// Concatenations of dangerous pieces, with and without a leading `/`.
    fn dangerous_candidate() -> impl Strategy<Value = String> {
        let body = prop::collection::vec(select(DANGEROUS_PIECES), 0..10)
            .prop_map(|pieces| pieces.concat());
        (any::<bool>(), body)
            .prop_map(|(slash, body)| if slash { format!("/{body}") } else { body })
    }

    /// Paths whose dot segments, once resolved, leave dangerous pieces at the front.
    fn dot_segment_candidate() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            2 => select(DOT_SEGMENTS).prop_map(str::to_owned),
            1 => prop::collection::vec(select(DANGEROUS_PIECES), 1..3)
                .prop_map(|pieces| pieces.concat()),
        ];
        prop::collection::vec(segment, 1..6).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    /// Local paths near the length limit, where percent-encoding by the URL parser makes the
    /// kept value longer than the candidate.
    fn long_candidate() -> impl Strategy<Value = String> {
        prop::collection::vec(select(&["a", "/", "\u{e9}", "%C3%A9"][..]), 600..1100)
            .prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    /// Every property a kept `returnTo` must have, whatever the candidate was.
    fn check_stays_local(candidate: &str) -> Result<(), TestCaseError> {
        let public_url = Url::parse(PUBLIC_URL).unwrap();
        let kept = ReturnTo::parse_or_root(Some(candidate), &public_url);
        let path = kept.as_str();
        prop_assert!(path.starts_with('/'), "{candidate:?} kept as {path:?}");
        prop_assert!(
            !path.starts_with("//") && !path.starts_with("/\\"),
            "{candidate:?} kept as {path:?}"
        );
        prop_assert!(
            !path.chars().any(|c| c.is_control() || c.is_whitespace()),
            "{candidate:?} kept as {path:?}"
        );
        prop_assert!(path.len() <= MAX_LEN, "{candidate:?} kept as {path:?}");
        let resolved = public_url.join(path).unwrap();
        prop_assert_eq!(
            resolved.origin(),
            public_url.origin(),
            "{:?} kept as {:?}",
            candidate,
            path
        );
        let again = ReturnTo::parse_or_root(Some(path), &public_url);
        prop_assert_eq!(&again, &kept, "{:?} kept as {:?}", candidate, path);
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_candidates_stay_local(candidate in any::<String>()) {
            check_stays_local(&candidate)?;
            check_stays_local(&format!("/{candidate}"))?;
        }

        #[test]
        fn dangerous_candidates_stay_local(candidate in dangerous_candidate()) {
            check_stays_local(&candidate)?;
        }

        #[test]
        fn candidates_with_dot_segments_stay_local(candidate in dot_segment_candidate()) {
            check_stays_local(&candidate)?;
        }

        #[test]
        fn long_candidates_stay_local(candidate in long_candidate()) {
            check_stays_local(&candidate)?;
        }
    }
}
