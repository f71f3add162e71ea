//! Everything Vestibule logs in this test process, written by its own log layers in both
//! formats (text and JSON, the audit trail included, at trace level), and the check every
//! scenario ends with: no secret the scenario handled is in it.
//!
//! Secrets are what the harness saw pass by (cookies the browsers were given, codes and states
//! in redirects, bearer tokens the upstream received, the provider's issued token values, the
//! configured secrets), plus anything shaped like a JWT (ID, logout and JWT access tokens).

use std::collections::HashSet;
use std::io::Write;
use std::sync::{LazyLock, Mutex, Once};

use aho_corasick::AhoCorasick;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use vestibule::config::LogFormat;
use vestibule::logging::layers;

static CAPTURED: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(Mutex::default);
static SECRETS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Shortest value taken for a secret (shorter ones would match ordinary words).
const MIN_SECRET_LEN: usize = 12;

/// Appends to the captured log.
#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        Capture
    }
}

/// Starts capturing (once per process): Vestibule's events at every level, in both formats.
pub fn capture() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let filter = || EnvFilter::new("info,vestibule=trace");
        let _ = tracing_subscriber::registry()
            .with(layers(LogFormat::Json, filter(), Capture, false))
            .with(layers(LogFormat::Text, filter(), Capture, false))
            .try_init();
    });
}

/// What Vestibule's own log layers (both formats) write for the events `emit` logs, kept
/// apart from the process's capture.
pub fn written_by_vestibules_layers(emit: impl FnOnce()) -> String {
    let kept = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let kept = kept.clone();
        move || KeptWriter(kept.clone())
    };
    let filter = || EnvFilter::new("trace");
    let subscriber = tracing_subscriber::registry()
        .with(layers(LogFormat::Json, filter(), writer.clone(), false))
        .with(layers(LogFormat::Text, filter(), writer, false));
    tracing::subscriber::with_default(subscriber, emit);
    let bytes = kept.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

struct KeptWriter(std::sync::Arc<Mutex<Vec<u8>>>);

impl Write for KeptWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the captured log ends now (a scenario checks from here on).
pub fn position() -> usize {
    CAPTURED.lock().unwrap().len()
}

/// The captured log from `position` on.
pub fn since(position: usize) -> String {
    let captured = CAPTURED.lock().unwrap();
    String::from_utf8_lossy(&captured[position.min(captured.len())..]).into_owned()
}

/// Remembers `value` as a secret no log may contain.
pub fn note_secret(value: &str) {
    let value = value.trim();
    if value.len() >= MIN_SECRET_LEN {
        SECRETS.lock().unwrap().insert(value.to_owned());
    }
}

/// Panics, naming where, if `log` contains a noted secret, one of `more`, or a JWT.
pub fn assert_no_secrets(log: &str, more: &[String], source: &str) {
    for value in more {
        note_secret(value);
    }
    let secrets: Vec<String> = SECRETS.lock().unwrap().iter().cloned().collect();
    if !secrets.is_empty() {
        let matcher = AhoCorasick::new(&secrets).unwrap();
        if let Some(found) = matcher.find(log) {
            let line = log[..found.start()].rsplit('\n').next().unwrap_or("");
            panic!(
                "{source}: a secret is in the log (a {}-character value), on the line starting: {:?}",
                found.len(),
                &line[..line.len().min(200)]
            );
        }
    }
    if let Some(at) = find_jwt(log) {
        panic!(
            "{source}: a JWT is in the log: {:?}",
            &log[at..(at + 40).min(log.len())]
        );
    }
}

/// Where something shaped like a JWT (`eyJ…` base64url, a dot, base64url, a dot) starts.
fn find_jwt(log: &str) -> Option<usize> {
    let bytes = log.as_bytes();
    let part = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
            .count()
    };
    let mut from = 0;
    while let Some(offset) = log[from..].find("eyJ") {
        let start = from + offset;
        let header = part(start);
        let after_header = start + header;
        if header >= 10 && bytes.get(after_header) == Some(&b'.') {
            let payload = part(after_header + 1);
            if payload >= 10 && bytes.get(after_header + 1 + payload) == Some(&b'.') {
                return Some(start);
            }
        }
        from = start + 3;
    }
    None
}

#[test]
fn the_jwt_shape_is_found_and_ordinary_text_is_not() {
    assert_eq!(
        find_jwt("x eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig"),
        Some(2)
    );
    assert_eq!(
        find_jwt("eyJ short.x.y and eyJhbGciOiJSUzI1NiJ9 alone"),
        None
    );
}
