//! Log output: one line per event on standard error, as text or as JSON.
//!
//! Colour codes are written only to a terminal (and never with `NO_COLOR` set), so files,
//! pipes and log collectors get plain lines. Nothing here decides *what* is logged: callers
//! log method and path, never a token, secret, cookie or query string.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{IgnoredVariable, LogFormat};

/// The variable that sets the log filter (`info` when unset), e.g. `vestibule=debug`.
pub const FILTER_VARIABLE: &str = "VESTIBULE_LOG";

/// Installs the global subscriber; call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env(FILTER_VARIABLE).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(wants_colour()).init(),
    }
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
