//! One line per configuration problem, naming the key, never quoting a value (it may be a
//! secret).

use super::environment::{ENV_PREFIX, IgnoredVariable};

/// A setting is missing or wrong; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {problem}")]
pub struct ConfigError {
    /// The key path, e.g. `oidc.client_secret`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// An error about `key`.
    pub(super) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Names an ignored variable that looks like a misspelling of this error's key, so a
    /// "missing" setting whose variable has a typo explains itself.
    pub(super) fn mention_misspelt(mut self, ignored: &[IgnoredVariable]) -> Self {
        let wanted = format!("{ENV_PREFIX}{}", self.key.replace('.', "__")).to_uppercase();
        if let Some(variable) = ignored
            .iter()
            .find(|variable| variable.suggestion.as_deref() == Some(wanted.as_str()))
        {
            self.problem
                .push_str(&format!("; {} is set but is not a setting", variable.name));
        }
        self
    }
}

/// Turns figment's error into one line naming the key.
pub(super) fn describe_figment_error(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.clone();
    let problem = match &error.kind {
        Kind::MissingField(field) => {
            path.push(field.to_string());
            let env = format!("{ENV_PREFIX}{}", path.join("__").to_uppercase());
            format!("is missing (set it in the config file or as {env})")
        }
        Kind::UnknownField(field, _) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            "is not a known setting (check the spelling)".to_owned()
        }
        other => {
            let source = error
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.source.as_ref())
                .map(|source| format!(" (from {source})"))
                .unwrap_or_default();
            // Kind's text describes the value's type, never echoes a secret's content.
            format!("{}{source}", redact_kind(other))
        }
    };
    let key = if path.is_empty() {
        "(file)".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::new(key, problem)
}

/// Describes an error kind without quoting the offending value (it may be a secret).
fn redact_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "has the wrong type: found {}, expected {expected}",
                type_only(actual)
            )
        }
        Kind::InvalidValue(_, expected) => format!("has an invalid value: expected {expected}"),
        Kind::UnknownVariant(_, allowed) => format!("must be one of: {}", allowed.join(", ")),
        // Parser messages span several lines and quote the source: keep the prose lines only.
        Kind::Message(message) => message
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.contains('|'))
            .collect::<Vec<_>>()
            .join(": "),
        other => other.to_string(),
    }
}

fn type_only(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) | Actual::Other(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::NewtypeStruct | Actual::Seq | Actual::Map | Actual::Enum => "a table or list",
        _ => "another type",
    }
}
