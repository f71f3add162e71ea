//! Secrets from files, the Docker and Kubernetes way: `oidc.client_secret_file`,
//! `session.encryption_key_file`, each `session.encryption_keys` entry's `key_file` and
//! `session.redis_password_file` name a file whose content is the secret (one trailing newline
//! is dropped). A value and a file for the same secret is an
//! error, never a silent choice.
//!
//! Errors name the keys and the file's path, never its content.

use std::path::Path;

use secrecy::SecretString;

use super::environment::ENV_PREFIX;
use super::error::ConfigError;
use super::file::RingKeySection;
use crate::session::KeyId;

/// One entry of the key ring `ring` (e.g. `session.encryption_keys`) at `index`: its checked
/// id, its secret from `key` or `key_file`, and the key that errors about the secret name.
pub(super) fn ring_entry(
    ring: &str,
    index: usize,
    entry: RingKeySection,
) -> Result<(KeyId, SecretString, String), ConfigError> {
    let path = format!("{ring}[{index}]");
    let id = KeyId::parse(&entry.id)
        .ok_or_else(|| ConfigError::new(format!("{path}.id"), KeyId::RULE))?;
    let key_name = format!("{path}.key");
    let secret = value_or_file(&key_name, entry.key, entry.key_file.as_deref())?
        .ok_or_else(|| ConfigError::new(&path, "needs key or key_file"))?;
    Ok((id, secret, key_name))
}

/// The secret `key` from its value or from `key`_file, exactly one of them; `None` when both
/// are absent.
pub(super) fn value_or_file(
    key: &str,
    value: Option<SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            format!("is set both directly and as {key}_file; set only one"),
        )),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read(&format!("{key}_file"), path).map(Some),
        (None, None) => Ok(None),
    }
}

/// [`value_or_file`] for a secret that must be given one way or the other.
pub(super) fn required(
    key: &str,
    value: Option<SecretString>,
    file: Option<&Path>,
) -> Result<SecretString, ConfigError> {
    value_or_file(key, value, file)?.ok_or_else(|| {
        let env = format!("{ENV_PREFIX}{}", key.replace('.', "__")).to_uppercase();
        ConfigError::new(
            key,
            format!(
                "is missing (set it in the config file or as {env}, or name a file holding it \
                 with {key}_file / {env}_FILE)"
            ),
        )
    })
}

/// A file's bytes (certificates, keys), the error naming `key` and the path.
pub(super) fn read_bytes(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|error| ConfigError::new(key, format!("cannot read {}: {error}", path.display())))
}

/// The file's content without one trailing newline (`\n` or `\r\n`).
fn read(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let content = String::from_utf8(read_bytes(key, path)?)
        .map_err(|_| ConfigError::new(key, format!("{} is not UTF-8 text", path.display())))?;
    let secret = content
        .strip_suffix("\r\n")
        .or_else(|| content.strip_suffix('\n'))
        .unwrap_or(&content);
    if secret.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn file_with(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vestibule-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_file_gives_its_content_without_one_trailing_newline() {
        for (name, content, expected) in [
            ("plain", "s3cret", "s3cret"),
            ("newline", "s3cret\n", "s3cret"),
            ("crlf", "s3cret\r\n", "s3cret"),
            ("two", "s3cret\n\n", "s3cret\n"),
            ("spaces", " s3cret ", " s3cret "),
        ] {
            let path = file_with(name, content);
            let secret = value_or_file("oidc.client_secret", None, Some(&path))
                .unwrap()
                .unwrap();
            assert_eq!(secret.expose_secret(), expected, "{name}");
        }
    }

    #[test]
    fn a_value_and_a_file_for_one_secret_is_an_error() {
        let path = file_with("both", "from-file");
        let error = value_or_file(
            "oidc.client_secret",
            Some(SecretString::from("from-value")),
            Some(&path),
        )
        .unwrap_err();
        assert_eq!(error.key, "oidc.client_secret");
        assert!(error.problem.contains("oidc.client_secret_file"), "{error}");
    }

    #[test]
    fn unreadable_or_empty_files_name_the_key_and_path_not_the_content() {
        let missing = std::env::temp_dir().join("vestibule-no-such-secret");
        let error = required("session.encryption_key", None, Some(&missing)).unwrap_err();
        assert_eq!(error.key, "session.encryption_key_file");
        assert!(
            error.problem.contains("vestibule-no-such-secret"),
            "{error}"
        );

        let empty = file_with("empty", "\n");
        let error = required("session.encryption_key", None, Some(&empty)).unwrap_err();
        assert!(error.problem.ends_with("is empty"), "{error}");

        let error = required("oidc.client_secret", None, None).unwrap_err();
        assert_eq!(error.key, "oidc.client_secret");
        assert!(
            error.problem.contains("VESTIBULE_OIDC__CLIENT_SECRET_FILE"),
            "{error}"
        );
    }
}
