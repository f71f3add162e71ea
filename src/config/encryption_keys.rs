//! `session.encryption_key` (one key, the format every release reads) or
//! `session.encryption_keys` (a ring of `{ id, key | key_file }`, the first sealing), never
//! both, converted into the [`KeyRing`] the sessions seal with. Errors name the key, and the
//! ring entry by index, never a key's bytes.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use super::error::ConfigError;
use super::file::{RingKeySection, SessionSection};
use super::secret_files;
use crate::session::{KeyId, KeyRing, MasterKey};

/// The keys of `[session]`: the ring if given, else the single key.
pub(super) fn key_ring(session: &mut SessionSection) -> Result<KeyRing, ConfigError> {
    let Some(entries) = session.encryption_keys.take() else {
        let encoded = secret_files::required(
            "session.encryption_key",
            session.encryption_key.take(),
            session.encryption_key_file.as_deref(),
        )?;
        return master_key("session.encryption_key", &encoded).map(KeyRing::single);
    };
    if session.encryption_key.is_some() || session.encryption_key_file.is_some() {
        return Err(ConfigError::new(
            "session.encryption_keys",
            "is set together with session.encryption_key(_file); set only one (to start \
             rotating, make the single key the ring's first entry)",
        ));
    }
    let mut keys: Vec<(KeyId, MasterKey)> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let (id, key) = ring_entry(index, entry)?;
        if keys.iter().any(|(known, _)| *known == id) {
            return Err(ConfigError::new(
                format!("session.encryption_keys[{index}].id"),
                "repeats an earlier entry's id; ids must be unique",
            ));
        }
        keys.push((id, key));
    }
    KeyRing::labelled(keys).ok_or_else(|| {
        ConfigError::new(
            "session.encryption_keys",
            "is empty; list at least one { id, key } (the first seals)",
        )
    })
}

/// One ring entry: its checked id and its key, from `key` or `key_file`.
fn ring_entry(index: usize, entry: RingKeySection) -> Result<(KeyId, MasterKey), ConfigError> {
    let (id, encoded, key_name) =
        secret_files::ring_entry("session.encryption_keys", index, entry)?;
    Ok((id, master_key(&key_name, &encoded)?))
}

/// The 32 bytes whose base64 `encoded` holds; errors name `key`.
fn master_key(key: &str, encoded: &SecretString) -> Result<MasterKey, ConfigError> {
    let problem =
        "must be the base64 encoding of exactly 32 random bytes (e.g. `openssl rand -base64 32`)";
    let encoded = encoded.expose_secret().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded))
        .map_err(|_| ConfigError::new(key, problem))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ConfigError::new(key, problem))?;
    if bytes.iter().all(|byte| *byte == bytes[0]) {
        return Err(ConfigError::new(key, "is not random (all bytes equal)"));
    }
    Ok(MasterKey::new(bytes))
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "HxwdHhobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE=";

    fn ring(session_toml: &str) -> Result<KeyRing, ConfigError> {
        let mut session: SessionSection = Figment::from(Toml::string(session_toml))
            .extract()
            .map_err(|error| ConfigError::new("toml", error.to_string()))?;
        key_ring(&mut session)
    }

    fn error(session_toml: &str) -> ConfigError {
        match ring(session_toml) {
            Ok(ring) => panic!("accepted {ring:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_ring_seals_with_its_first_entry_and_the_single_key_unlabelled() {
        let both = ring(&format!(
            r#"encryption_keys = [{{ id = "k2", key = "{K2}" }}, {{ id = "k1", key = "{K1}" }}]"#
        ))
        .unwrap();
        assert_eq!(both.sealing_id().map(KeyId::as_str), Some("k2"));
        assert_eq!(format!("{both:?}"), "KeyRing([k2, k1])");
        let single = ring(&format!(r#"encryption_key = "{K1}""#)).unwrap();
        assert!(single.sealing_id().is_none());
    }

    #[test]
    fn a_ring_key_can_come_from_a_file_but_not_from_both() {
        let dir = std::env::temp_dir().join(format!("vestibule-ring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k1");
        std::fs::write(&file, format!("{K1}\n")).unwrap();
        let from_file = format!(
            r#"encryption_keys = [{{ id = "k1", key_file = "{}" }}]"#,
            file.display()
        );
        assert!(ring(&from_file).is_ok());
        let both = from_file.replace("key_file", &format!("key = \"{K2}\", key_file"));
        let error = error(&both);
        assert_eq!(error.key, "session.encryption_keys[0].key");
        assert!(error.problem.contains("key_file"), "{error}");
    }

    #[test]
    fn bad_rings_name_the_entry_and_never_the_key() {
        let cases = [
            (
                r#"encryption_keys = []"#.to_owned(),
                "session.encryption_keys",
                "at least one",
            ),
            (
                format!(
                    r#"encryption_key = "{K1}"
                    encryption_keys = [{{ id = "k1", key = "{K1}" }}]"#
                ),
                "session.encryption_keys",
                "set only one",
            ),
            (
                format!(r#"encryption_keys = [{{ id = "k 1", key = "{K1}" }}]"#),
                "session.encryption_keys[0].id",
                "without spaces",
            ),
            (
                format!(r#"encryption_keys = [{{ id = "", key = "{K1}" }}]"#),
                "session.encryption_keys[0].id",
                "1 to 32",
            ),
            (
                format!(
                    r#"encryption_keys = [{{ id = "a", key = "{K1}" }}, {{ id = "a", key = "{K2}" }}]"#
                ),
                "session.encryption_keys[1].id",
                "unique",
            ),
            (
                r#"encryption_keys = [{ id = "a" }]"#.to_owned(),
                "session.encryption_keys[0]",
                "key or key_file",
            ),
            (
                r#"encryption_keys = [{ id = "a", key = "SECRETVALUE" }]"#.to_owned(),
                "session.encryption_keys[0].key",
                "32 random bytes",
            ),
            (String::new(), "session.encryption_key", "is missing"),
        ];
        for (toml, key, problem) in cases {
            let error = error(&toml);
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(problem), "{error}");
            assert!(!error.to_string().contains("SECRETVALUE"), "{error}");
            assert!(!error.to_string().contains(K1), "{error}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn the_ring_can_be_one_environment_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VESTIBULE_LISTEN", "127.0.0.1:8080");
            jail.set_env("VESTIBULE_PUBLIC_URL", "http://localhost:8080");
            jail.set_env("VESTIBULE_OIDC__ISSUER", "http://localhost:8081");
            jail.set_env("VESTIBULE_OIDC__CLIENT_ID", "vestibule");
            jail.set_env("VESTIBULE_OIDC__CLIENT_SECRET", "s3cret");
            jail.set_env(
                "VESTIBULE_SESSION__ENCRYPTION_KEYS",
                format!(r#"[{{id="2027-01",key="{K2}"}}, {{id="2026-12",key="{K1}"}}]"#),
            );
            let settings = match crate::config::Settings::load(None) {
                Ok(loaded) => loaded.settings,
                Err(error) => panic!("{error}"),
            };
            assert_eq!(
                format!("{:?}", settings.session.keys),
                "KeyRing([2027-01, 2026-12])"
            );
            Ok(())
        });
    }
}
