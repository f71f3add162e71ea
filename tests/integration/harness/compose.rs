//! `docker-compose.yml`, read as the bundled stack's single description: the checks in
//! `bundle.rs` and the real Keycloak the harness starts both take their settings from it.
//! A line-oriented reader for this one file's simple shape, not a YAML parser.

/// The text of the repository's `docker-compose.yml`.
pub fn read_compose_file() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The lines of one top-level service (`  name:` under `services:`), by indentation.
pub fn compose_service(compose: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|line| line.trim_end() != header);
    assert!(
        lines.next().is_some(),
        "docker-compose.yml has no service {name:?}"
    );
    lines
        .take_while(|line| {
            line.trim().is_empty() || line.starts_with("    ") || line.starts_with("  #")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `KEY: value` inside a service block, with YAML quotes removed.
pub fn compose_value(block: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    block.lines().map(str::trim).find_map(|line| {
        let value = line.strip_prefix(&prefix)?.trim();
        Some(unquote(value))
    })
}

/// A YAML scalar without its quotes.
pub fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        inner.replace("\\\"", "\"")
    } else {
        value.to_owned()
    }
}

pub fn compose_env(service: &str, key: &str) -> String {
    let compose = read_compose_file();
    let block = compose_service(&compose, service);
    compose_value(&block, key)
        .unwrap_or_else(|| panic!("docker-compose.yml: service {service} does not set {key}"))
}

/// Every `KEY: value` line of `service` whose key starts with `prefix` (its environment).
pub fn compose_environment(service: &str, prefix: &str) -> Vec<(String, String)> {
    let compose = read_compose_file();
    let block = compose_service(&compose, service);
    block
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_owned(), unquote(value.trim())))
        })
        .collect()
}

/// Every `VESTIBULE_*` variable the compose file gives the `vestibule` service.
pub fn compose_vestibule_environment() -> Vec<(String, String)> {
    compose_environment("vestibule", "VESTIBULE_")
}
