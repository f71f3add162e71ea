//! Log output: one line per event on standard error, as text or as JSON, and the audit trail
//! ([`crate::audit`]) among them, always as JSON and whatever `VESTIBULE_LOG` filters out.
//!
//! Colour codes are written only to a terminal (and never with `NO_COLOR` set), so files,
//! pipes and log collectors get plain lines. Nothing here decides *what* is logged: callers
//! log method and path, never a token, secret, cookie or query string.

use std::io::IsTerminal;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::audit;
use crate::config::{IgnoredVariable, LogFormat};

/// A layer of the global subscriber, boxed so that the log, the audit trail and the trace
/// exporter can be stacked whichever are configured.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The variable that sets the log filter (`info` when unset), e.g. `vestibule=debug`.
pub const FILTER_VARIABLE: &str = "VESTIBULE_LOG";

/// Installs the global subscriber, with `extra` layers (the trace exporter's) beside the log;
/// call once, before anything logs.
pub fn init(format: LogFormat, extra: Vec<BoxedLayer<Registry>>) {
    tracing_subscriber::registry()
        .with(
            layers(format, filter(), std::io::stderr, wants_colour())
                .into_iter()
                .chain(extra)
                .collect::<Vec<_>>(),
        )
        .init();
}

/// The filter `VESTIBULE_LOG` sets (`info` when unset or invalid).
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_env(FILTER_VARIABLE).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The layers that write events to `writer`: the log (what `filter` lets through, in
/// `format`, coloured if `colour`) and the audit trail (JSON, every event). The log leaves the
/// audit trail's events to the latter, so each is written once.
pub fn layers<S, W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    colour: bool,
) -> Vec<BoxedLayer<S>>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Clone + Send + Sync + 'static,
{
    // A directive, not a closure: the filter stays static, so callsites it turns off (the
    // debug spans of the hot path) cost nothing per call.
    let log_filter = match format!("{}=off", audit::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let log = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    let log = match format {
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Text => log.with_ansi(colour).with_filter(log_filter).boxed(),
    };
    let audit = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_filter(Targets::new().with_target(audit::TARGET, Level::INFO))
        .boxed();
    vec![log, audit]
}

/// Colour only for a person watching a terminal.
fn wants_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Warns once about each ignored `VESTIBULE_*` variable that looks like a misspelt setting
/// (by name only: its value may be a secret). Variables a platform sets, such as the ones
/// Kubernetes injects for a Service named `vestibule`, are only mentioned at debug level.
pub fn report_ignored_environment(variables: &[IgnoredVariable]) {
    for variable in variables {
        if variable.looks_like_a_typo() {
            match &variable.suggestion {
                Some(suggestion) => tracing::warn!(
                    variable = %variable.name,
                    did_you_mean = %suggestion,
                    "environment variable is not a setting and is ignored"
                ),
                None => tracing::warn!(
                    variable = %variable.name,
                    "environment variable is not a setting and is ignored"
                ),
            }
        } else {
            tracing::debug!(variable = %variable.name, "environment variable is not a setting; ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Kept {
        type Writer = Kept;
        fn make_writer(&'a self) -> Kept {
            self.clone()
        }
    }

    fn written(format: LogFormat, filter: &str) -> String {
        let kept = Kept::default();
        let subscriber = tracing_subscriber::registry().with(layers(
            format,
            EnvFilter::new(filter),
            kept.clone(),
            false,
        ));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: audit::TARGET, event = "login_succeeded", "login succeeded");
            tracing::info!("an ordinary line");
        });
        let bytes = kept.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn the_audit_trail_is_json_once_whatever_the_log_filter_and_format() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let silent = written(format, "off");
            assert_eq!(silent.lines().count(), 1, "{silent}");
            let event: serde_json::Value = serde_json::from_str(silent.trim()).unwrap_or_default();
            assert_eq!(event["event"], "login_succeeded");
            assert_eq!(event["target"], audit::TARGET);
            let all = written(format, "info");
            assert_eq!(
                all.lines().count(),
                2,
                "the audit line is not repeated: {all}"
            );
            assert!(all.contains("an ordinary line"));
        }
    }
}
