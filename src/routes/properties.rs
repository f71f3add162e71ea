//! Bounded fuzzing of the resolver against a model of the most lenient server we know.

use super::*;
use proptest::prelude::*;
use proptest::sample::select;
use unicode_normalization::UnicodeNormalization;

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
    RouteTable::new(vec![Route::new(
        "/api/orders".into(),
        Url::parse(BASE).unwrap(),
        std::time::Duration::from_secs(1),
    )])
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
    let name = prop::collection::vec(select(SAFE_PIECES), 1..4).prop_map(|parts| parts.concat());
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
