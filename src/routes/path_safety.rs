//! Whether a path remainder could leave its route on some server behind us: each rule names
//! the server behaviour it defends against, so a remainder is judged as the most lenient
//! of them would read it. Pure functions; nothing here allocates for a plain ASCII segment.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use unicode_normalization::{UnicodeNormalization, is_nfkc};

/// Whether some segment of `remainder` could take the call out of the route's base path.
pub(super) fn climbs_out(remainder: &str) -> bool {
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
