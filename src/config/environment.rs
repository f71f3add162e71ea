//! `VESTIBULE_*` environment variables as settings: `VESTIBULE_A__B=…` is key `a.b`.
//!
//! Values are parsed (numbers, arrays, tables) unless the setting they fill expects a string:
//! which ones do is learnt from the settings' own types, never from a list kept by hand. A
//! variable that is no setting is left out and reported by name only, never by value.

use figment::Figment;
use figment::providers::{Env, Serialized};

/// The prefix of every environment variable Vestibule reads.
pub const ENV_PREFIX: &str = "VESTIBULE_";

/// Variables with the prefix that are not settings at all.
const NOT_SETTINGS: [&str; 2] = ["CONFIG", "LOG"];

/// The `VESTIBULE_*` variables as settings: `VESTIBULE_A__B=…` → key `a.b`.
pub(super) fn environment() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").ignore(&NOT_SETTINGS)
}

/// Merges the environment over `figment`, leaving out the keys in `skip`. Keys in `verbatim`
/// are taken as the strings they are; others are parsed (numbers, arrays, tables).
pub(super) fn merge_environment(figment: Figment, skip: &[String], verbatim: &[String]) -> Figment {
    let skip = skip.to_vec();
    let kept = move |key: &str| !skip.iter().any(|skipped| covers(skipped, key));
    let verbatim = verbatim.to_vec();
    let is_verbatim = move |key: &str| verbatim.iter().any(|known| known.eq_ignore_ascii_case(key));
    let (parsed, not_verbatim) = (kept.clone(), is_verbatim.clone());
    let mut figment = figment.merge(
        environment().filter(move |key| !not_verbatim(key.as_str()) && parsed(key.as_str())),
    );
    for (key, value) in environment().iter() {
        if is_verbatim(key.as_str()) && kept(key.as_str()) {
            let key = key.as_str().to_ascii_lowercase();
            figment = figment.merge(Serialized::default(&key, value));
        }
    }
    figment
}

/// The environment key behind a type error that a verbatim string would not have caused:
/// `VESTIBULE_OIDC__CLIENT_SECRET=0123` is parsed as a number, but the setting wants the
/// string `0123`. `None` when the value was a string already or did not come from the
/// environment.
pub(super) fn wants_verbatim(
    error: &figment::Error,
    environment_keys: &[String],
) -> Option<String> {
    use figment::error::{Actual, Kind};
    let Kind::InvalidType(actual, _) = &error.kind else {
        return None;
    };
    if matches!(actual, Actual::Str(_) | Actual::Char(_)) {
        return None;
    }
    let key = error.path.join(".").to_ascii_lowercase();
    environment_keys.iter().find(|set| **set == key).cloned()
}

/// Whether the (unknown) key `unknown` is `key` or a table above it: `foo` covers `foo.bar`.
pub(super) fn covers(unknown: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == unknown
        || key
            .strip_prefix(unknown)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// A `VESTIBULE_*` environment variable that is not a setting. Only its name is kept, never
/// its value (it may be a secret with a misspelt name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredVariable {
    /// The variable's name, e.g. `VESTIBULE_OIDC__CLIENT_SECRT`.
    pub name: String,
    /// The real setting it most resembles, as a variable name, if any is close.
    pub suggestion: Option<String>,
    /// Whether it sits inside a real section (`VESTIBULE_OIDC__…`), which only a person does.
    pub in_section: bool,
    pub(super) key: String,
}

/// How alike (normalised Levenshtein) a name must be to a real key to count as its typo.
const TYPO_SIMILARITY: f64 = 0.75;

impl IgnoredVariable {
    /// The variable behind an "unknown field" error, if the field came from the environment.
    pub(super) fn from_error(error: &figment::Error, environment_keys: &[String]) -> Option<Self> {
        let figment::error::Kind::UnknownField(field, expected) = &error.kind else {
            return None;
        };
        let mut path = error.path.clone();
        if path.last() != Some(field) {
            path.push(field.clone());
        }
        let key = path.join(".").to_ascii_lowercase();
        // `VESTIBULE_FOO__BAR` is reported by serde as the unknown table `foo`.
        let set = environment_keys
            .iter()
            .find(|environment_key| covers(&key, environment_key))?;
        let variable = |path: &[String]| format!("{ENV_PREFIX}{}", path.join("__")).to_uppercase();
        let suggestion = expected
            .iter()
            .map(|candidate| (strsim::normalized_levenshtein(field, candidate), candidate))
            .filter(|(similarity, _)| *similarity >= TYPO_SIMILARITY)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, candidate)| {
                let mut path = path[..path.len() - 1].to_vec();
                path.push((*candidate).to_owned());
                variable(&path)
            });
        let set_path: Vec<String> = set.split('.').map(str::to_owned).collect();
        Some(Self {
            name: variable(&set_path),
            suggestion,
            in_section: path.len() > 1,
            key,
        })
    }

    /// Whether a person probably meant a real setting (worth a warning), rather than a
    /// platform exporting its own variable.
    pub fn looks_like_a_typo(&self) -> bool {
        self.suggestion.is_some() || self.in_section
    }
}
