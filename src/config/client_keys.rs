//! How a provider's client authenticates: its secret (`oidc.client_secret`, `_file`) for the
//! secret methods, or its keys for `private_key_jwt` (`oidc.client_key_file`, one PEM named by
//! its thumbprint, or `oidc.client_keys`, a ring of `{ id, key | key_file }`, the first
//! signing). Exactly one of the two kinds: a secret kept beside keys would be one more
//! credential to leak and would keep HS-signed ID tokens acceptable. Errors name the key,
//! never a key's or secret's content.

use secrecy::{ExposeSecret, SecretString};

use super::error::ConfigError;
use super::file::OidcSection;
use super::secret_files;
use crate::assertion::SigningKey;
use crate::oidc::{ClientAuthMethod, ClientKeys};

/// The client's credential, checked against its method: a secret, or keys.
pub(super) fn credential(
    oidc: &mut OidcSection,
) -> Result<(Option<SecretString>, Option<ClientKeys>), ConfigError> {
    let keys = keys(oidc.client_key_file.take(), oidc.client_keys.take())?;
    if oidc.client_auth_method != Some(ClientAuthMethod::PrivateKeyJwt) {
        if let Some((key, _)) = keys {
            return Err(ConfigError::new(
                key,
                "is set, but oidc.client_auth_method is not \"private_key_jwt\": set it to use \
                 the key, or remove the key",
            ));
        }
        let secret = secret_files::required(
            "oidc.client_secret",
            oidc.client_secret.take(),
            oidc.client_secret_file.as_deref(),
        )?;
        if secret.expose_secret().is_empty() {
            return Err(ConfigError::new("oidc.client_secret", "must not be empty"));
        }
        return Ok((Some(secret), None));
    }
    if oidc.client_secret.is_some() || oidc.client_secret_file.is_some() {
        return Err(ConfigError::new(
            "oidc.client_secret",
            "is set, but oidc.client_auth_method = \"private_key_jwt\" uses no secret: remove \
             it (an unused secret is one more credential to leak, and it would keep HS-signed \
             ID tokens acceptable)",
        ));
    }
    match keys {
        Some((_, keys)) => Ok((None, Some(keys))),
        None => Err(ConfigError::new(
            "oidc.client_key_file",
            "is missing: oidc.client_auth_method = \"private_key_jwt\" signs with a P-256 \
             private key (PEM) in oidc.client_key_file, or a ring of them in oidc.client_keys",
        )),
    }
}

/// The keys of `oidc.client_key_file` or `oidc.client_keys` (never both), with the key that
/// names them in errors.
fn keys(
    file: Option<std::path::PathBuf>,
    ring: Option<Vec<super::file::RingKeySection>>,
) -> Result<Option<(&'static str, ClientKeys)>, ConfigError> {
    let keys = match (file, ring) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "oidc.client_keys",
                "is set together with oidc.client_key_file; set only one (a ring lists the \
                 single key as its first entry)",
            ));
        }
        (Some(path), None) => {
            const KEY: &str = "oidc.client_key_file";
            let pem = String::from_utf8(secret_files::read_bytes(KEY, &path)?).map_err(|_| {
                ConfigError::new(KEY, format!("{} is not UTF-8 text", path.display()))
            })?;
            let key = SigningKey::from_pem_named_by_thumbprint(&pem)
                .map_err(|error| ConfigError::new(KEY, error.to_string()))?;
            ("oidc.client_key_file", vec![key])
        }
        (None, Some(entries)) => {
            let mut keys: Vec<SigningKey> = Vec::with_capacity(entries.len());
            for (index, entry) in entries.into_iter().enumerate() {
                let (id, pem, key_name) =
                    secret_files::ring_entry("oidc.client_keys", index, entry)?;
                let key = SigningKey::from_pem(id.as_str(), pem.expose_secret())
                    .map_err(|error| ConfigError::new(key_name, error.to_string()))?;
                if keys.iter().any(|known| known.kid() == key.kid()) {
                    return Err(ConfigError::new(
                        format!("oidc.client_keys[{index}].id"),
                        "repeats an earlier entry's id; ids must be unique",
                    ));
                }
                keys.push(key);
            }
            ("oidc.client_keys", keys)
        }
    };
    let (name, keys) = keys;
    ClientKeys::new(keys)
        .map(|ring| Some((name, ring)))
        .ok_or_else(|| {
            ConfigError::new(
                name,
                "is empty; list at least one { id, key_file } (the first signs)",
            )
        })
}

/// A `kid` that names different keys in two providers' rings (the published key set holds
/// each `kid` once): the later ring's, with the earlier's id.
pub(super) fn conflicting_kid<'a>(
    ring: &'a ClientKeys,
    others: impl Iterator<Item = (&'a str, &'a ClientKeys)> + Clone,
) -> Option<(&'a str, &'a str)> {
    ring.all().find_map(|key| {
        others.clone().find_map(|(provider, other)| {
            other
                .all()
                .any(|known| known.kid() == key.kid() && known.thumbprint() != key.thumbprint())
                .then_some((key.kid(), provider))
        })
    })
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use crate::config::{ConfigError, Settings};

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgm+zbYdZMRxTLsrxV
5TXP6E64Q7mEv7bAd7qF5EL29pmhRANCAARlenaNumwtZuLsDUmE4DdHtmTwtrV3
+Xqh9GLiBqF4Z9q9gmqFnSPHR4iwI+K4dCIhQ9mE/i9weFSPw/3Muc3J
-----END PRIVATE KEY-----";
    const OTHER_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+mCYmwTLJgU5m5JN
NaDUkDp0/3th4xOF2kWx6M9X4WyhRANCAASjGlhKDLkrxcGdhfNM8K2cabaUc9qi
4Pr80/AFU/A+dUDqWutJmxTwMwrXdJyfjuFBymB+6unS15fUIovnEPef
-----END PRIVATE KEY-----";

    /// A configuration whose `[oidc]` has `credential` in place of a secret.
    fn config(credential: &str) -> String {
        format!(
            "listen = \"127.0.0.1:8080\"\npublic_url = \"http://localhost:8080\"\n[oidc]\n\
             issuer = \"http://localhost:8081/realms/vestibule\"\nclient_id = \"vestibule\"\n\
             {credential}\n[session]\n\
             encryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n"
        )
    }

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn key_file(name: &str, pem: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vestibule-client-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, format!("{pem}\n")).unwrap();
        file
    }

    const METHOD: &str = "client_auth_method = \"private_key_jwt\"";

    #[test]
    fn private_key_jwt_needs_a_key_and_no_secret() {
        let file = key_file("one.pem", PEM);
        let settings = load(&config(&format!(
            "{METHOD}\nclient_key_file = \"{}\"",
            file.display()
        )))
        .unwrap();
        assert!(settings.oidc.client_secret.is_none());
        let keys = settings.oidc.client_keys.unwrap();
        let only: Vec<_> = keys.all().collect();
        assert_eq!(only.len(), 1);
        assert_eq!(
            only[0].kid(),
            only[0].thumbprint(),
            "named by its thumbprint"
        );
    }

    #[test]
    fn a_ring_keeps_its_order_and_its_ids() {
        let file = key_file("ring.pem", OTHER_PEM);
        let settings = load(&config(&format!(
            "{METHOD}\nclient_keys = [{{ id = \"2027-01\", key = \"\"\"{PEM}\"\"\" }}, \
             {{ id = \"2026-12\", key_file = \"{}\" }}]",
            file.display()
        )))
        .unwrap();
        let keys = settings.oidc.client_keys.unwrap();
        let kids: Vec<&str> = keys.all().map(|key| key.kid()).collect();
        assert_eq!(kids, ["2027-01", "2026-12"]);
        assert_eq!(keys.signing_kid(), "2027-01");
    }

    #[test]
    fn bad_credentials_name_the_key_and_never_the_pem() {
        let file = key_file("bad.pem", PEM);
        let path = file.display();
        let cases = [
            (METHOD.to_owned(), "oidc.client_key_file", "is missing"),
            (
                format!("{METHOD}\nclient_secret = \"SECRETVALUE\"\nclient_key_file = \"{path}\""),
                "oidc.client_secret",
                "uses no secret",
            ),
            (
                format!("client_secret = \"s\"\nclient_key_file = \"{path}\""),
                "oidc.client_key_file",
                "not \"private_key_jwt\"",
            ),
            (
                format!(
                    "{METHOD}\nclient_key_file = \"{path}\"\nclient_keys = [{{ id = \"a\", \
                     key_file = \"{path}\" }}]"
                ),
                "oidc.client_keys",
                "only one",
            ),
            (
                format!("{METHOD}\nclient_keys = []"),
                "oidc.client_keys",
                "at least one",
            ),
            (
                format!("{METHOD}\nclient_keys = [{{ id = \"a\", key = \"SECRETVALUE\" }}]"),
                "oidc.client_keys[0].key",
                "P-256",
            ),
            (
                format!(
                    "{METHOD}\nclient_keys = [{{ id = \"a\", key_file = \"{path}\" }}, \
                     {{ id = \"a\", key_file = \"{path}\" }}]"
                ),
                "oidc.client_keys[1].id",
                "unique",
            ),
            (
                format!(
                    "{METHOD}\nclient_key_file = \"{path}\"\nid_token_signed_response_alg = \
                     \"HS256\""
                ),
                "oidc.id_token_signed_response_alg",
                "has none",
            ),
        ];
        for (credential, key, problem) in cases {
            let error = match load(&config(&credential)) {
                Ok(_) => panic!("accepted {credential}"),
                Err(error) => error,
            };
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(problem), "{error}");
            assert!(!error.to_string().contains("SECRETVALUE"), "{error}");
            assert!(!error.to_string().contains("MIGH"), "{error}");
        }
    }

    #[test]
    fn each_provider_has_its_own_credential_and_an_id_names_one_key() {
        let one = key_file("p1.pem", PEM);
        let two = key_file("p2.pem", OTHER_PEM);
        let providers = |second_key: &std::path::Path| {
            format!(
                "listen = \"127.0.0.1:8080\"\npublic_url = \"http://localhost:8080\"\n\
                 [[providers]]\nid = \"a\"\nissuer = \"http://a.example\"\nclient_id = \"v\"\n\
                 {METHOD}\nclient_keys = [{{ id = \"k\", key_file = \"{}\" }}]\n\
                 [[providers]]\nid = \"b\"\nissuer = \"http://b.example\"\nclient_id = \"v\"\n\
                 {METHOD}\nclient_keys = [{{ id = \"k\", key_file = \"{}\" }}]\n\
                 [session]\nencryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n",
                one.display(),
                second_key.display()
            )
        };
        let same = load(&providers(&one)).unwrap();
        assert!(same.other_providers[0].client_keys.is_some());
        let error = match load(&providers(&two)) {
            Ok(_) => panic!("accepted one id for two keys"),
            Err(error) => error,
        };
        assert_eq!(error.key, "providers[1].client_keys", "{error}");
        assert!(error.problem.contains("another key"), "{error}");
        let keyless = providers(&two).replacen(
            &format!(
                "client_keys = [{{ id = \"k\", key_file = \"{}\" }}]",
                two.display()
            ),
            "",
            1,
        );
        match load(&keyless) {
            Ok(_) => panic!("accepted private_key_jwt without a key"),
            Err(error) => assert_eq!(error.key, "providers[1].client_key_file", "{error}"),
        }
    }
}
