//! `[assertion]`: the identity assertions' signing keys (`signing_keys`, a ring of `{ id,
//! key | key_file }` PEMs, the first signing) and their lifetime. Errors name the key and the
//! ring entry by index, never a key's content.

use secrecy::ExposeSecret;

use super::error::ConfigError;
use super::file::{AssertionSection, RingKeySection};
use super::secret_files;
use crate::assertion::{AssertionSettings, DEFAULT_LIFETIME_SECS, MAX_LIFETIME_SECS, SigningKey};

/// The checked `[assertion]` section.
pub(super) fn assertion(section: AssertionSection) -> Result<AssertionSettings, ConfigError> {
    let lifetime_secs = section.lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !(1..=MAX_LIFETIME_SECS).contains(&lifetime_secs) {
        return Err(ConfigError::new(
            "assertion.lifetime_secs",
            format!(
                "must be between 1 and {MAX_LIFETIME_SECS} seconds (an assertion is for one \
                 call; {DEFAULT_LIFETIME_SECS} when left out)"
            ),
        ));
    }
    let mut signing_keys: Vec<SigningKey> = Vec::new();
    if let Some(entries) = section.signing_keys {
        if entries.is_empty() {
            return Err(ConfigError::new(
                "assertion.signing_keys",
                "is empty; list at least one { id, key_file } (the first signs), or leave it \
                 out to derive the key from the session keys",
            ));
        }
        for (index, entry) in entries.into_iter().enumerate() {
            let key = ring_entry(index, entry)?;
            if signing_keys.iter().any(|known| known.kid() == key.kid()) {
                return Err(ConfigError::new(
                    format!("assertion.signing_keys[{index}].id"),
                    "repeats an earlier entry's id; ids must be unique",
                ));
            }
            signing_keys.push(key);
        }
    }
    Ok(AssertionSettings {
        signing_keys,
        lifetime_secs,
    })
}

/// One ring entry: its checked id and the key its PEM holds.
fn ring_entry(index: usize, entry: RingKeySection) -> Result<SigningKey, ConfigError> {
    let (id, pem, key_name) = secret_files::ring_entry("assertion.signing_keys", index, entry)?;
    SigningKey::from_pem(id.as_str(), pem.expose_secret())
        .map_err(|error| ConfigError::new(key_name, error.to_string()))
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;
    use crate::assertion::SigningKey;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgm+zbYdZMRxTLsrxV
5TXP6E64Q7mEv7bAd7qF5EL29pmhRANCAARlenaNumwtZuLsDUmE4DdHtmTwtrV3
+Xqh9GLiBqF4Z9q9gmqFnSPHR4iwI+K4dCIhQ9mE/i9weFSPw/3Muc3J
-----END PRIVATE KEY-----";

    fn parse(toml: &str) -> Result<AssertionSettings, ConfigError> {
        let section: AssertionSection = Figment::from(Toml::string(toml))
            .extract()
            .map_err(|error| ConfigError::new("toml", error.to_string()))?;
        assertion(section)
    }

    #[test]
    fn defaults_to_derived_keys_and_a_minute() {
        let settings = parse("").unwrap();
        assert!(settings.signing_keys.is_empty());
        assert_eq!(settings.lifetime_secs, 60);
    }

    #[test]
    fn keys_come_in_order_from_values_and_files() {
        let dir = std::env::temp_dir().join(format!("vestibule-assertion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("assertion.pem");
        std::fs::write(&file, format!("{PEM}\n")).unwrap();
        let settings = parse(&format!(
            "lifetime_secs = 30\n[[signing_keys]]\nid = \"2027-01\"\nkey_file = \"{}\"\n\
             [[signing_keys]]\nid = \"2026-12\"\nkey = \"\"\"{PEM}\"\"\"",
            file.display()
        ))
        .unwrap();
        let kids: Vec<&str> = settings.signing_keys.iter().map(SigningKey::kid).collect();
        assert_eq!(kids, ["2027-01", "2026-12"]);
        assert_eq!(settings.lifetime_secs, 30);
    }

    #[test]
    fn bad_settings_name_the_key_and_never_the_pem() {
        let cases = [
            (
                "lifetime_secs = 61".to_owned(),
                "assertion.lifetime_secs",
                "between 1 and 60",
            ),
            (
                "lifetime_secs = 0".to_owned(),
                "assertion.lifetime_secs",
                "between 1 and 60",
            ),
            (
                "signing_keys = []".to_owned(),
                "assertion.signing_keys",
                "at least one",
            ),
            (
                "signing_keys = [{ id = \"a\" }]".to_owned(),
                "assertion.signing_keys[0]",
                "key or key_file",
            ),
            (
                "signing_keys = [{ id = \"a b\", key = \"x\" }]".to_owned(),
                "assertion.signing_keys[0].id",
                "without spaces",
            ),
            (
                "signing_keys = [{ id = \"a\", key = \"SECRETVALUE\" }]".to_owned(),
                "assertion.signing_keys[0].key",
                "P-256",
            ),
            (
                format!(
                    "signing_keys = [{{ id = \"a\", key = \"\"\"{PEM}\"\"\" }}, {{ id = \"a\", \
                     key = \"\"\"{PEM}\"\"\" }}]"
                ),
                "assertion.signing_keys[1].id",
                "unique",
            ),
        ];
        for (toml, key, problem) in cases {
            let error = match parse(&toml) {
                Ok(settings) => panic!("accepted {settings:?}"),
                Err(error) => error,
            };
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(problem), "{error}");
            assert!(!error.to_string().contains("SECRETVALUE"), "{error}");
            assert!(!error.to_string().contains("MIGH"), "{error}");
        }
    }
}
