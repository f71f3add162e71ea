//! The route table: which upstream serves a request path, and what path it sees.
//!
//! A prefix matches whole path segments only and the longest prefix wins. The remainder is
//! forwarded byte for byte and never rewritten; instead it is refused ([`RouteError::Traversal`])
//! when any common server behind us could read one of its segments as `.` or `..`, or as more
//! than one segment. Each rule below names the server behaviour it defends against, so the
//! remainder is judged as the most lenient of them would read it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use unicode_normalization::{UnicodeNormalization, is_nfkc};
use url::Url;

/// One configured `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path prefix, starting with `/`, without a trailing `/`.
    pub prefix: String,
    /// The upstream base URL the remainder is appended to.
    pub upstream: Url,
    /// How long to wait for the upstream's response headers.
    pub timeout: std::time::Duration,
}

/// Why a path could not be routed.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No prefix matches.
    NoRoute,
    /// The remainder tries to leave the prefix.
    Traversal,
}

/// Routes sorted so that the longest prefix is tried first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// A matched route and the upstream URL for the request.
#[derive(Debug)]
pub struct Target<'a> {
    /// The matched route.
    pub route: &'a Route,
    /// The full upstream URL (path remainder and query appended).
    pub url: String,
}

impl RouteTable {
    /// Builds the table; prefixes are normalised by the config layer.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// Finds the route for `path` and builds the upstream URL with `query`.
    pub fn resolve(&self, path: &str, query: Option<&str>) -> Result<Target<'_>, RouteError> {
        let (route, remainder) = self
            .routes
            .iter()
            .find_map(|route| remainder_after(path, &route.prefix).map(|rest| (route, rest)))
            .ok_or(RouteError::NoRoute)?;
        if climbs_out(remainder) {
            return Err(RouteError::Traversal);
        }
        let base = route.upstream.as_str().trim_end_matches('/');
        let mut url =
            String::with_capacity(base.len() + remainder.len() + 1 + query.map_or(0, str::len));
        url.push_str(base);
        if remainder.is_empty() && route.upstream.path() == "/" {
            url.push('/');
        }
        url.push_str(remainder);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Ok(Target { route, url })
    }
}

/// `Some(rest)` when `prefix` matches whole segments of `path`.
fn remainder_after<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Whether some segment of `remainder` could take the call out of the route's base path.
fn climbs_out(remainder: &str) -> bool {
    remainder.split('/').any(segment_escapes)
}

/// Whether one raw segment could, on some server, be a dot segment or several segments.
///
/// A plain ASCII segment without `%` is checked without allocating; decoding allocates only
/// when there is an escape, Unicode folding only when the text is not already in NFKC form.
fn segment_escapes(raw: &str) -> bool {
    if has_malformed_escape(raw) {
        return true;
    }
    let Some(decoded) = decode_escapes(raw) else {
        return true;
    };
    if breaks_segment(&decoded) {
        return true;
    }
    let folded = fold_compatibility_forms(&decoded);
    if let Cow::Owned(changed) = &folded
        && breaks_segment(changed)
    {
        return true;
    }
    names_dot_segment(without_parameters(&folded))
}

/// Whether a `%` is not followed by two hex digits.
///
/// Decoders disagree on such input: most keep it as it is, IIS reads `%uXXXX` as a UTF-16
/// code unit (`%u002e` is `.`), others drop or guess. Refusing it leaves nothing to guess.
fn has_malformed_escape(raw: &str) -> bool {
    raw.match_indices('%')
        .any(|(index, _)| !is_escape_at(raw.as_bytes(), index))
}

/// The segment with its `%XX` escapes decoded, or `None` if the result is not UTF-8.
///
/// Invalid UTF-8 includes the overlong forms of `.` and `/` (`%c0%ae`, `%e0%80%ae`, `%c0%af`)
/// that lenient decoders fold into ASCII (IIS in CVE-2000-0884, Tomcat in CVE-2008-2938).
fn decode_escapes(raw: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(raw).decode_utf8().ok()
}

/// Whether decoded text holds a separator, a control character or another escape.
fn breaks_segment(text: &str) -> bool {
    contains_separator(text) || contains_control(text) || hides_another_escape(text)
}

/// Whether the text holds `/` or `\`.
///
/// Servers that decode before splitting (Tomcat with `ALLOW_ENCODED_SLASH`, many proxies) see
/// `%2f` as a separator, and IIS, Windows and Tomcat with `ALLOW_BACKSLASH` treat `\` as `/`.
fn contains_separator(text: &str) -> bool {
    text.contains(['/', '\\'])
}

/// Whether the text holds a control character (C0, DEL or C1).
///
/// C-based servers and filesystems end a path at NUL (`..%00` is `..` to them), the WHATWG URL
/// parser drops raw tab, CR and LF (`.\t.` is `..`), and CR/LF can split a request line.
fn contains_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Whether decoding left another escape behind (`%252e` decodes to `%2e`).
///
/// A server that decodes twice (IIS in CVE-2001-0333, a proxy or rewrite rule that decodes and
/// forwards again) would turn it into `.`. A literal percent (`100%25`, `%25zz`) is not an
/// escape and stays allowed; IIS's `%uXXXX` counts as one.
fn hides_another_escape(decoded: &str) -> bool {
    let bytes = decoded.as_bytes();
    decoded
        .match_indices('%')
        .any(|(index, _)| is_escape_at(bytes, index) || is_unicode_escape_at(bytes, index))
}

/// Whether `bytes[index..]` starts with `%` and two hex digits.
fn is_escape_at(bytes: &[u8], index: usize) -> bool {
    matches!(
        bytes.get(index..index + 3),
        Some([b'%', high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit()
    )
}

/// Whether `bytes[index..]` starts with IIS's `%uXXXX` escape.
fn is_unicode_escape_at(bytes: &[u8], index: usize) -> bool {
    matches!(
        bytes.get(index..index + 6),
        Some([b'%', b'u' | b'U', digits @ ..]) if digits.iter().all(u8::is_ascii_hexdigit)
    )
}

/// The text in Unicode NFKC form, as servers that fold compatibility characters compare it.
///
/// Unicode-normalising frameworks and filesystems, and Windows' "best fit" code-page mapping,
/// turn the fullwidth full stop U+FF0E, the one and two dot leaders U+2024/U+2025, the small
/// full stop U+FE52 or the fullwidth solidus U+FF0F into `.`, `..` and `/`. Text already in
/// NFKC form (all ASCII, most accented names) is borrowed.
fn fold_compatibility_forms(decoded: &str) -> Cow<'_, str> {
    if decoded.is_ascii() || is_nfkc(decoded) {
        Cow::Borrowed(decoded)
    } else {
        Cow::Owned(decoded.nfkc().collect())
    }
}

/// The segment without its `;parameters`.
///
/// Tomcat, Jetty and Spring drop path parameters (matrix parameters, `;jsessionid=`) before
/// they resolve dot segments, so `..;x` is `..` to them and leaves the route.
fn without_parameters(segment: &str) -> &str {
    segment.split_once(';').map_or(segment, |(name, _)| name)
}

/// Whether a segment name is made only of dots and whitespace, with at least one dot.
///
/// Covers `.` and `..` themselves, ` .. ` once surrounding whitespace is trimmed, and `...` or
/// `.. ` that Windows file APIs (and so IIS) reduce by stripping trailing dots and spaces.
/// `..foo`, `a..b` and `.well-known` are ordinary names.
fn names_dot_segment(name: &str) -> bool {
    name.contains('.') && name.chars().all(|c| c == '.' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let route = |prefix: &str, upstream: &str| Route {
            prefix: prefix.into(),
            upstream: Url::parse(upstream).unwrap(),
            timeout: std::time::Duration::from_secs(1),
        };
        RouteTable::new(vec![
            route("/api/orders", "http://127.0.0.1:9000/v1"),
            route("/api/orders/admin", "http://127.0.0.1:9001/"),
            route("/api", "http://127.0.0.1:9002"),
        ])
    }

    fn url(path: &str, query: Option<&str>) -> Result<String, RouteError> {
        table().resolve(path, query).map(|t| t.url)
    }

    #[test]
    fn remainder_and_query_are_appended() {
        assert_eq!(
            url("/api/orders/42", Some("x=1")).unwrap(),
            "http://127.0.0.1:9000/v1/42?x=1"
        );
        assert_eq!(
            url("/api/orders", None).unwrap(),
            "http://127.0.0.1:9000/v1"
        );
        assert_eq!(
            url("/api/orders/", None).unwrap(),
            "http://127.0.0.1:9000/v1/"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(
            url("/api/orders/admin/x", None).unwrap(),
            "http://127.0.0.1:9001/x"
        );
        assert_eq!(
            url("/api/orders/admin", None).unwrap(),
            "http://127.0.0.1:9001/"
        );
        assert_eq!(
            url("/api/other", None).unwrap(),
            "http://127.0.0.1:9002/other"
        );
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert_eq!(
            url("/api/ordersX", None).unwrap(),
            "http://127.0.0.1:9002/ordersX"
        );
        assert_eq!(url("/apix", None), Err(RouteError::NoRoute));
        assert_eq!(url("/", None), Err(RouteError::NoRoute));
    }

    #[test]
    fn traversal_is_refused() {
        for path in [
            // Plain and percent-encoded dot segments.
            "/api/orders/../admin",
            "/api/orders/..",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E",
            "/api/orders/.%2e/x",
            "/api/orders/./x",
            "/api/orders/.",
            // Double encoding.
            "/api/orders/%252e%252e/x",
            "/api/orders/%25%32%65%25%32%65/x",
            "/api/orders/%25u002e/x",
            // Separators inside a segment.
            "/api/orders/..%2fadmin",
            "/api/orders/a%2f..%2f..%2fb",
            "/api/orders/a%5cb",
            "/api/orders\\..\\x",
            "/api/orders/a\\b",
            // Path parameters on dot segments (Tomcat, Jetty, Spring).
            "/api/orders/..;/admin",
            "/api/orders/..;x=1/admin",
            "/api/orders/.;/x",
            "/api/orders/%2e%2e%3b/admin",
            "/api/orders/%2e%2e%3B/admin",
            "/api/orders/.%2e;x/y",
            // Control characters, raw and encoded.
            "/api/orders/..%00",
            "/api/orders/..%00/x",
            "/api/orders/a%00b",
            "/api/orders/.%09./x",
            "/api/orders/a%0ab",
            "/api/orders/a%0d%0ab",
            "/api/orders/a%7f",
            "/api/orders/a%c2%85",
            "/api/orders/a\u{0}b",
            "/api/orders/a\tb",
            "/api/orders/a\u{85}b",
            // Overlong and other invalid UTF-8.
            "/api/orders/%c0%ae%c0%ae/x",
            "/api/orders/%e0%80%ae%e0%80%ae/x",
            "/api/orders/%c0%af",
            "/api/orders/%ed%a0%80",
            "/api/orders/caf%e9",
            // Malformed percent-encoding and IIS's %uXXXX.
            "/api/orders/%u002e%u002e/x",
            "/api/orders/%U002E",
            "/api/orders/%",
            "/api/orders/%2",
            "/api/orders/%zz",
            "/api/orders/%%32%65",
            // Unicode compatibility forms of dots and separators.
            "/api/orders/%EF%BC%8E%EF%BC%8E/x",
            "/api/orders/\u{ff0e}\u{ff0e}/x",
            "/api/orders/%E2%80%A5/x",
            "/api/orders/%E2%80%A4%E2%80%A4/x",
            "/api/orders/%EF%B9%92/x",
            "/api/orders/%E2%80%A6/x",
            "/api/orders/..%EF%BC%8Fadmin",
            "/api/orders/..%EF%BC%BCadmin",
            "/api/orders/%EF%BC%852e%EF%BC%852e/x",
            "/api/orders/%EF%BC%8E%EF%BC%8E%EF%BC%9Bx/y",
            // Whitespace and Windows' trailing dots and spaces.
            "/api/orders/.../x",
            "/api/orders/..%20/x",
            "/api/orders/%20../x",
            "/api/orders/. ./x",
            "/api/orders/..%E3%80%80/x",
            "/api/orders/..%C2%A0/x",
            "/api/orders/....;x/y",
        ] {
            assert_eq!(url(path, None), Err(RouteError::Traversal), "{path}");
        }
    }

    #[test]
    fn legitimate_paths_are_forwarded_byte_exact() {
        for remainder in [
            "/a;b=c/d",
            "/a;b=c",
            "/caf%C3%A9",
            "/caf\u{e9}",
            "/100%25",
            "/%25zz",
            "/%25",
            "/..foo",
            "/a..b",
            "/foo..",
            "/.well-known/x",
            "/a%20b",
            "/%20",
            "/a//b",
            "/;x",
            "/a%3fb%23c",
            "/~user/_x-y",
        ] {
            assert_eq!(
                url(&format!("/api/orders{remainder}"), Some("q=1")).as_deref(),
                Ok(format!("http://127.0.0.1:9000/v1{remainder}?q=1").as_str()),
                "{remainder}"
            );
        }
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing of the resolver against a model of the most lenient server we know.

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    const BASE: &str = "http://127.0.0.1:9000/v1";
    const BASE_PATH: &str = "/v1";

    /// 512 cases and no failure files: well under a second in a debug build, nothing on disk.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![Route {
            prefix: "/api/orders".into(),
            upstream: Url::parse(BASE).unwrap(),
            timeout: std::time::Duration::from_secs(1),
        }])
    }

    /// Pieces that a lenient server could assemble into a dot segment or a separator.
    const DANGEROUS_PIECES: &[&str] = &[
        ".",
        "..",
        "%2e",
        "%2E",
        "%252e",
        "%25%32%65",
        "%32%65",
        ";",
        ";x=1",
        "%3b",
        "%3B",
        "%00",
        "%09",
        "%0a",
        "%7f",
        "%c2%85",
        "%c0%ae",
        "%e0%80%ae",
        "%c0%af",
        "%c1%9c",
        "%2f",
        "%5c",
        "\\",
        "%u002e",
        "%U002F",
        "%25u002e",
        "%EF%BC%8E",
        "\u{ff0e}",
        "%E2%80%A5",
        "\u{2024}",
        "%EF%B9%92",
        "%EF%BC%8F",
        "%EF%BC%85",
        "%E3%80%80",
        " ",
        "%20",
        "a",
        "b",
        "/",
        "%25",
        "%",
        "%2",
        "2e",
        "e",
    ];

    /// Pieces of ordinary names that must always be forwarded.
    const SAFE_PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        "9",
        "-",
        "_",
        "~",
        "%20",
        "%C3%A9",
        "caf\u{e9}",
        "..foo",
        "a..b",
        ".well-known",
        "%25zz",
    ];

    /// Spellings of a dot, each of which some server reads as `.`.
    const DOT_SPELLINGS: &[&str] = &[
        ".",
        "%2e",
        "%2E",
        "%252e",
        "%25%32%65",
        "%c0%ae",
        "%e0%80%ae",
        "%u002e",
        "%25u002e",
        "%EF%BC%8E",
        "\u{ff0e}",
        "%E2%80%A4",
        "\u{2024}",
        "%EF%B9%92",
        "%E2%80%A5",
    ];

    /// What a server may drop around a dot segment: parameters, whitespace, NUL, controls.
    const DOT_DECORATIONS: &[&str] = &[
        "",
        ";",
        ";x=1",
        "%3b",
        "%3Bx",
        "%EF%BC%9B",
        " ",
        "%20",
        "%E3%80%80",
        "%C2%A0",
        "%00",
        "%09",
        "%0a",
        "%0d",
        ".",
        "%2e",
    ];

    /// Any mix of `pieces`, a few segments long.
    fn remainder_from(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
        let segment = prop::collection::vec(select(pieces), 0..5).prop_map(|parts| parts.concat());
        prop::collection::vec(segment, 1..5).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    /// Remainders whose first segment is a (decorated, perhaps disguised) dot segment, the
    /// shape that escapes `/v1` with a single `..`.
    fn dot_like_remainder() -> impl Strategy<Value = String> {
        let dots = prop::collection::vec(select(DOT_SPELLINGS), 1..4);
        let decoration = || select(DOT_DECORATIONS);
        let rest = prop::collection::vec(select(&["a", "..", "%2e%2e", "b;c"][..]), 0..3);
        (decoration(), dots, decoration(), rest).prop_map(|(before, dots, after, rest)| {
            let mut remainder = format!("/{before}{}{after}", dots.concat());
            for segment in rest {
                remainder.push('/');
                remainder.push_str(segment);
            }
            remainder
        })
    }

    /// Remainders built from ordinary names, with path parameters on some of them.
    fn safe_remainder() -> impl Strategy<Value = String> {
        let name =
            prop::collection::vec(select(SAFE_PIECES), 1..4).prop_map(|parts| parts.concat());
        let parameter = prop::option::of(select(&[";k=v", ";jsessionid=1", ";a"][..]));
        let segment = (name, parameter)
            .prop_map(|(name, parameter)| format!("{name}{}", parameter.unwrap_or_default()));
        prop::collection::vec(segment, 1..5).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    /// Decodes `%XX` and IIS's `%uXXXX` once; anything else is kept as it is.
    fn decode_once_leniently(bytes: &[u8]) -> Vec<u8> {
        let hex = |digits: &[u8]| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| u32::from_str_radix(text, 16).ok())
        };
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let rest = &bytes[index..];
            if let [b'%', b'u' | b'U', digits @ ..] = rest
                && let Some(unit) = digits.get(..4).and_then(hex)
                && let Some(character) = char::from_u32(unit)
            {
                decoded.extend_from_slice(character.to_string().as_bytes());
                index += 6;
            } else if let [b'%', digits @ ..] = rest
                && let Some(byte) = digits.get(..2).and_then(hex)
            {
                decoded.push(byte as u8);
                index += 3;
            } else {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
        decoded
    }

    /// Folds the overlong UTF-8 forms of `.`, `/` and `\` into ASCII, as old decoders did.
    fn fold_overlong_utf8(bytes: &[u8]) -> Vec<u8> {
        let mut folded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let (ascii, length) = match &bytes[index..] {
                [0xc0, 0xae, ..] => (Some(b'.'), 2),
                [0xc0, 0xaf, ..] => (Some(b'/'), 2),
                [0xc1, 0x9c, ..] => (Some(b'\\'), 2),
                [0xe0, 0x80, 0xae, ..] => (Some(b'.'), 3),
                [0xe0, 0x80, 0xaf, ..] => (Some(b'/'), 3),
                [byte, ..] => (Some(*byte), 1),
                [] => (None, 1),
            };
            folded.extend(ascii);
            index += length;
        }
        folded
    }

    /// The path the union of common servers would serve: decoded until stable (`%XX`,
    /// `%uXXXX`, overlong UTF-8), cut at NUL, tab/CR/LF dropped, NFKC, `\` as `/`, per segment
    /// `;params` stripped, whitespace trimmed and Windows' trailing dots and spaces stripped,
    /// then dot segments resolved as in RFC 3986 §5.2.4.
    fn lenient_server_path(path: &str) -> String {
        let mut bytes = path.as_bytes().to_vec();
        for _ in 0..8 {
            let decoded = fold_overlong_utf8(&decode_once_leniently(&bytes));
            if decoded == bytes {
                break;
            }
            bytes = decoded;
        }
        let text = String::from_utf8_lossy(&bytes);
        let text = text.split('\0').next().unwrap_or_default();
        let text: String = text
            .chars()
            .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
            .collect::<String>()
            .nfkc()
            .collect::<String>()
            .replace('\\', "/");
        let mut resolved: Vec<&str> = Vec::new();
        for segment in text.split('/').skip(1) {
            let name = segment.split(';').next().unwrap_or_default().trim();
            let dots_and_spaces = name.chars().all(|c| c == '.' || c.is_whitespace());
            let name = match name.matches('.').count() {
                1 if dots_and_spaces => ".",
                2.. if dots_and_spaces => "..",
                _ => name.trim_end_matches(['.', ' ']),
            };
            match name {
                "." => {}
                ".." => {
                    resolved.pop();
                }
                other => resolved.push(other),
            }
        }
        format!("/{}", resolved.join("/"))
    }

    /// Whether `path` is `base` itself or lies under it.
    fn stays_under(path: &str, base: &str) -> bool {
        path.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Properties (a) and (b): an accepted remainder is forwarded as it is and, read by the
    /// lenient model, never leaves the route's upstream base path.
    fn check_accepted_stays_in_route(remainder: &str, query: &str) -> Result<(), TestCaseError> {
        let table = table();
        if let Ok(target) = table.resolve(&format!("/api/orders{remainder}"), Some(query)) {
            prop_assert_eq!(&target.url, &format!("{BASE}{remainder}?{query}"));
            let upstream_path = lenient_server_path(&format!("{BASE_PATH}{remainder}"));
            prop_assert!(
                stays_under(&upstream_path, BASE_PATH),
                "{remainder:?} was accepted but a lenient server serves {upstream_path:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn model_server_sees_the_escapes_the_resolver_refuses() {
        for remainder in [
            "/..;/x",
            "/%252e%252e/x",
            "/%c0%ae%c0%ae/x",
            "/%u002e%u002e/x",
            "/%EF%BC%8E%EF%BC%8E/x",
            "/.../x",
            "/..%20/x",
            "/..%00",
        ] {
            let served = lenient_server_path(&format!("{BASE_PATH}{remainder}"));
            assert!(!stays_under(&served, BASE_PATH), "{remainder} -> {served}");
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn accepted_dangerous_remainders_never_leave_the_route(
            remainder in remainder_from(DANGEROUS_PIECES),
            query in "[a-z=&%.]{0,8}",
        ) {
            check_accepted_stays_in_route(&remainder, &query)?;
        }

        #[test]
        fn accepted_dot_like_remainders_never_leave_the_route(remainder in dot_like_remainder()) {
            check_accepted_stays_in_route(&remainder, "q=1")?;
        }

        #[test]
        fn accepted_percent_heavy_remainders_never_leave_the_route(
            remainder in "/[%./;\\\\ 0-9a-fuU]{0,24}",
        ) {
            check_accepted_stays_in_route(&remainder, "q=1")?;
        }

        #[test]
        fn safe_remainders_are_always_forwarded(remainder in safe_remainder()) {
            let path = format!("/api/orders{remainder}");
            let url = table().resolve(&path, None).map(|target| target.url);
            prop_assert_eq!(url, Ok(format!("{BASE}{remainder}")));
        }

        #[test]
        fn resolve_never_panics_on_arbitrary_paths(path in any::<String>(), tail in any::<String>()) {
            let table = table();
            let _ = table.resolve(&path, Some(&tail));
            let _ = table.resolve(&format!("/api/orders/{tail}"), None);
        }
    }
}
