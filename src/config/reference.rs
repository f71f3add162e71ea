//! The configuration reference (`docs/configuration.md`) documents exactly the schema's keys.
//!
//! The schema's keys are learnt from the code, never from a list kept by hand: every section
//! of [`FileSettings`] denies unknown fields, so a configuration holding one unknown key in a
//! section fails with serde's "unknown field, expected one of …", which names every key of
//! that section. Probing each key in turn as a table and as an array of tables finds the
//! nested sections (`[oidc]`, `[[routes]]`, `session.encryption_keys`, …) without naming them.
//! A new section must deny unknown fields too, like every other (else it reads as one key).
//!
//! The reference's convention: one table row per key, whose first cell is the key's full path
//! in backticks and nothing else, e.g. ``| `session.idle_timeout_secs` |``; an entry of an
//! array of tables is written `[]`, e.g. ``| `routes[].prefix` |``. A `[[providers]]` entry is
//! an `[oidc]` table: its keys are documented by the `oidc.*` rows, except those with a
//! `providers[].*` row of their own.

use std::collections::BTreeSet;

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Toml};

use super::file::FileSettings;

/// A key no schema will ever have, placed in a table to make serde list that table's keys.
const PROBE: &str = "zz_undocumented_probe";

/// One step of a key's path: a field, and whether it holds an array of tables.
#[derive(Clone)]
struct Step {
    name: &'static str,
    array: bool,
}

/// The full key, as the reference writes it: `session.encryption_keys[].id`.
fn key_of(path: &[Step]) -> String {
    path.iter()
        .map(|step| {
            if step.array {
                format!("{}[]", step.name)
            } else {
                step.name.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A TOML document that places [`PROBE`] in the table at `path`.
fn probe_document(path: &[Step]) -> String {
    let mut inner = format!("{{ {PROBE} = 1 }}");
    let Some((first, rest)) = path.split_first() else {
        return format!("{PROBE} = 1");
    };
    let wrap = |step: &Step, value: String| {
        if step.array {
            format!("[{value}]")
        } else {
            value
        }
    };
    for step in rest.iter().rev() {
        inner = format!("{{ {} = {} }}", step.name, wrap(step, inner));
    }
    format!("{} = {}", first.name, wrap(first, inner))
}

/// The keys of the table at `path`, or `None` when `path` holds no table of the schema.
fn table_keys(path: &[Step]) -> Option<&'static [&'static str]> {
    let error = Figment::from(Toml::string(&probe_document(path)))
        .extract::<FileSettings>()
        .err()?;
    match error.kind {
        Kind::UnknownField(field, expected) if field == PROBE => Some(expected),
        _ => None,
    }
}

/// Every key of the schema below `path`, found by probing.
fn schema_keys(path: &[Step], keys: &mut BTreeSet<String>) {
    let Some(fields) = table_keys(path) else {
        return;
    };
    for &name in fields {
        let nested = |array| {
            let mut nested = path.to_vec();
            nested.push(Step { name, array });
            nested
        };
        let (table, array_of_tables) = (nested(false), nested(true));
        if table_keys(&table).is_some() {
            schema_keys(&table, keys);
        } else if table_keys(&array_of_tables).is_some() {
            schema_keys(&array_of_tables, keys);
        } else {
            keys.insert(key_of(&table));
        }
    }
}

/// The reference's rows: the key in each row's first cell. A first cell that starts with a
/// key but holds more is refused, so every key gets a row of its own.
fn documented_keys(reference: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for line in reference.lines() {
        let Some(cell) = line.trim().strip_prefix("| `") else {
            continue;
        };
        let (key, rest) = cell.split_once('`').unwrap_or((cell, ""));
        if !rest.trim_start().starts_with('|') {
            return Err(format!(
                "row {line:?}: the first cell must be one key in backticks and nothing else"
            ));
        }
        keys.push(key.to_owned());
    }
    Ok(keys)
}

#[test]
fn the_probe_finds_the_sections_and_their_keys() {
    let mut keys = BTreeSet::new();
    schema_keys(&[], &mut keys);
    for expected in [
        "listen",
        "oidc.issuer",
        "session.encryption_keys[].key_file",
        "routes[].prefix",
        "frontend.dir",
        "traces.sample_ratio",
    ] {
        assert!(keys.contains(expected), "{expected} not found in {keys:?}");
    }
    for section in ["oidc", "session", "session.encryption_keys", "routes"] {
        assert!(!keys.contains(section), "{section} is a section, not a key");
    }
}

#[test]
fn the_configuration_reference_documents_exactly_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let reference = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
    let documented = documented_keys(&reference).unwrap_or_else(|error| panic!("{error}"));
    let mut schema = BTreeSet::new();
    schema_keys(&[], &mut schema);

    // Every `[oidc]` key is a key of each `[[providers]]` entry, documented once, as `oidc.*`.
    let full = schema.clone();
    schema.retain(|key| {
        key.strip_prefix("providers[].").is_none_or(|key| {
            documented.contains(&format!("providers[].{key}"))
                || !full.contains(&format!("oidc.{key}"))
        })
    });
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = documented
        .iter()
        .filter(|key| !seen.insert((*key).clone()))
        .collect();
    let missing: Vec<&String> = schema.difference(&seen).collect();
    let extra: Vec<&String> = seen.difference(&schema).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "docs/configuration.md must have one row per key of the schema (src/config/file.rs), \
         whose first cell is the key in backticks, e.g. | `session.idle_timeout_secs` |\n\
         undocumented keys: {missing:?}\n\
         documented keys the schema does not have: {extra:?}\n\
         keys documented twice: {twice:?}"
    );
}

#[test]
fn a_row_with_more_than_one_key_is_refused() {
    let error = documented_keys("| `a.b`, `a.c` | x |").unwrap_err();
    assert!(error.contains("one key in backticks"), "{error}");
    assert_eq!(
        documented_keys("| `a.b` | x |\n| key | default |\n| `c` |").unwrap(),
        ["a.b", "c"]
    );
}
