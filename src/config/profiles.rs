//! `oidc.provider` and the keys a provider profile gives defaults to: which profile applies
//! (configured, else detected from the issuer, else `generic`), and each of its defaults
//! (scopes, `prompt`, extra authorization parameters, logout strategy, template and hint
//! claim) wherever the configuration leaves the key out. A key that is set always wins.
//!
//! The profiles themselves are data in [`crate::oidc::Profile`]; this module only merges them
//! with the file and checks the result, naming the key of every problem.

use url::Url;

use super::error::ConfigError;
use super::file::OidcSection;
use crate::oidc::{GENERIC, LogoutStrategy, LogoutTemplate, Profile};

/// Authorization parameters Vestibule sends itself (or another key owns): never in
/// `oidc.extra_auth_params`. Each with what owns it.
const OWNED_AUTH_PARAMS: &[(&str, &str)] = &[
    ("response_type", "the authorization code flow"),
    ("response_mode", "the authorization code flow"),
    ("client_id", "oidc.client_id"),
    ("redirect_uri", "public_url"),
    ("scope", "oidc.scopes"),
    ("state", "each login"),
    ("nonce", "each login"),
    ("code_challenge", "PKCE"),
    ("code_challenge_method", "PKCE"),
    ("prompt", "oidc.prompt and each login's prompt"),
    ("max_age", "each login's max_age"),
    ("acr_values", "each login's acr_values"),
    ("login_hint", "each login's login_hint"),
    ("resource", "oidc.resource"),
    ("audience", "oidc.audience"),
    (
        "request",
        "Vestibule (a request object would replace the parameters it checks)",
    ),
    (
        "request_uri",
        "Vestibule (a request object would replace the parameters it checks)",
    ),
];

/// How the profile in use was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChoice {
    /// `oidc.provider` names it.
    Configured,
    /// The issuer's shape names it.
    Detected,
    /// Neither: `generic`.
    Default,
}

/// The profile in use, how it was chosen, and which of its defaults took effect.
#[derive(Debug, Clone)]
pub struct ProviderProfile {
    /// The profile.
    pub profile: &'static Profile,
    /// How it was chosen.
    pub choice: ProfileChoice,
    /// The keys the configuration left out whose profile default differs from `generic`'s,
    /// each as `key = value`.
    pub applied: Vec<String>,
}

impl ProviderProfile {
    /// One line for the start-up log and `--check-config`: the profile, how it was chosen,
    /// and what it set.
    pub fn describe(&self) -> String {
        let chosen = match self.choice {
            ProfileChoice::Configured => "oidc.provider",
            ProfileChoice::Detected => "detected from the issuer",
            ProfileChoice::Default => "default; no provider detected from the issuer",
        };
        let applied = if self.applied.is_empty() {
            "no default differs from generic's".to_owned()
        } else {
            format!("sets {}", self.applied.join(", "))
        };
        format!("{} ({chosen}; {applied})", self.profile.name)
    }
}

/// The `[oidc]` values a profile gives defaults to, with the profile's applied.
pub(super) struct Profiled {
    pub provider: ProviderProfile,
    pub scopes: Vec<String>,
    pub prompt: Option<String>,
    pub extra_auth_params: Vec<(String, String)>,
    pub logout: LogoutStrategy,
    pub logout_url: Option<LogoutTemplate>,
    pub logout_hint_claim: Option<String>,
}

/// Applies the profile `oidc` names (or its issuer's shape) to the keys `oidc` leaves out.
pub(super) fn apply(oidc: &mut OidcSection, issuer: &Url) -> Result<Profiled, ConfigError> {
    let (profile, choice) = match oidc.provider.as_deref() {
        Some(name) => (
            Profile::named(name).ok_or_else(|| {
                ConfigError::new(
                    "oidc.provider",
                    format!("must be one of {}", Profile::names()),
                )
            })?,
            ProfileChoice::Configured,
        ),
        None => match Profile::detect(issuer) {
            Some(profile) => (profile, ProfileChoice::Detected),
            None => (&GENERIC, ProfileChoice::Default),
        },
    };
    let mut applied = Vec::new();
    let mut note = |key: &str, differs: bool, value: String| {
        if differs {
            applied.push(format!("{key} = {value}"));
        }
    };
    let scopes = match oidc.scopes.take() {
        Some(scopes) => scopes,
        None => {
            note(
                "oidc.scopes",
                profile.scopes != GENERIC.scopes,
                profile.scopes.join(" "),
            );
            profile
                .scopes
                .iter()
                .map(|scope| scope.to_string())
                .collect()
        }
    };
    let prompt = match oidc.prompt.take() {
        Some(prompt) if prompt.is_empty() => None,
        Some(prompt) => Some(prompt),
        None => match profile.prompt {
            Some(prompt) => {
                note("oidc.prompt", true, prompt.to_owned());
                Some(prompt.to_owned())
            }
            // OIDC Core §11: offline_access is asked for with prompt=consent.
            None if scopes.iter().any(|scope| scope == "offline_access") => {
                Some("consent".to_owned())
            }
            None => None,
        },
    };
    let extra_auth_params = match oidc.extra_auth_params.take() {
        Some(params) => extra_auth_params(params)?,
        None => {
            let params: Vec<(String, String)> = profile
                .extra_auth_params
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
            note(
                "oidc.extra_auth_params",
                !params.is_empty(),
                params
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
            params
        }
    };
    let logout = oidc.logout.unwrap_or_else(|| {
        // A template the file sets wins over a profile that logs out locally (Google's).
        let chosen = if profile.logout == LogoutStrategy::Local && oidc.logout_url.is_some() {
            LogoutStrategy::UrlTemplate
        } else {
            profile.logout
        };
        note(
            "oidc.logout",
            chosen != GENERIC.logout,
            chosen.name().to_owned(),
        );
        chosen
    });
    let logout_url_text = match oidc.logout_url.as_deref() {
        Some(_) if logout == LogoutStrategy::Local => {
            return Err(ConfigError::new(
                "oidc.logout_url",
                "is set but oidc.logout is \"local\" (nothing is sent to the provider); \
                 remove one of them",
            ));
        }
        Some(text) => Some(text),
        None => match profile.logout_url {
            Some(text) if logout != LogoutStrategy::Local => {
                note("oidc.logout_url", true, text.to_owned());
                Some(text)
            }
            _ => None,
        },
    };
    let logout_url = logout_url_text
        .map(LogoutTemplate::parse)
        .transpose()
        .map_err(|problem| ConfigError::new("oidc.logout_url", problem))?;
    if logout == LogoutStrategy::UrlTemplate && logout_url.is_none() {
        return Err(ConfigError::new(
            "oidc.logout",
            "is \"url_template\" but oidc.logout_url is not set",
        ));
    }
    let logout_hint_claim = match oidc.logout_hint_claim.take() {
        Some(claim) if claim.is_empty() => None,
        Some(claim) if claim.trim() != claim || claim.contains(' ') => {
            return Err(ConfigError::new(
                "oidc.logout_hint_claim",
                "must be a claim name (one word), or \"\" for none",
            ));
        }
        Some(claim) => Some(claim),
        None => {
            if let Some(claim) = profile.logout_hint_claim {
                note("oidc.logout_hint_claim", true, claim.to_owned());
            }
            profile.logout_hint_claim.map(str::to_owned)
        }
    };
    Ok(Profiled {
        provider: ProviderProfile {
            profile,
            choice,
            applied,
        },
        scopes,
        prompt,
        extra_auth_params,
        logout,
        logout_url,
        logout_hint_claim,
    })
}

/// `oidc.extra_auth_params`, refusing a parameter Vestibule sends itself or another key owns.
fn extra_auth_params(
    params: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    params
        .into_iter()
        .map(|(name, value)| {
            let key = format!("oidc.extra_auth_params.{name}");
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '=' || c == '&')
            {
                return Err(ConfigError::new(key, "must be a parameter name"));
            }
            if let Some((_, owner)) = OWNED_AUTH_PARAMS
                .iter()
                .find(|(owned, _)| owned.eq_ignore_ascii_case(&name))
            {
                return Err(ConfigError::new(
                    key,
                    format!("is a parameter Vestibule sends itself (set by {owner})"),
                ));
            }
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;
    use crate::config::{ConfigError, OidcSettings, Settings};

    /// A configuration whose `[oidc]` has `issuer` and `lines`.
    fn oidc(issuer: &str, lines: &str) -> Result<OidcSettings, ConfigError> {
        let toml = format!(
            r#"
            listen = "127.0.0.1:8080"
            public_url = "http://localhost:8080"
            [oidc]
            issuer = "{issuer}"
            client_id = "vestibule"
            client_secret = "s3cret"
            {lines}
            [session]
            encryption_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            "#
        );
        Settings::from_figment(Figment::new().merge(Toml::string(&toml))).map(|s| s.oidc)
    }

    fn error(issuer: &str, lines: &str) -> ConfigError {
        match oidc(issuer, lines) {
            Ok(_) => panic!("accepted: {lines}"),
            Err(error) => error,
        }
    }

    const CUSTOM: &str = "https://login.example.com";

    #[test]
    fn a_custom_issuer_is_generic_with_todays_defaults() {
        let settings = oidc(CUSTOM, "").unwrap();
        assert_eq!(settings.provider.profile.name, "generic");
        assert_eq!(settings.provider.choice, ProfileChoice::Default);
        assert!(settings.provider.applied.is_empty());
        assert_eq!(
            settings.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert_eq!(settings.prompt.as_deref(), Some("consent"));
        assert!(settings.extra_auth_params.is_empty());
        assert_eq!(settings.logout, LogoutStrategy::RpInitiated);
        assert!(settings.logout_url.is_none() && settings.logout_hint_claim.is_none());
    }

    #[test]
    fn each_profile_sets_its_defaults_and_says_which() {
        let google = oidc("https://accounts.google.com", "").unwrap();
        assert_eq!(google.provider.choice, ProfileChoice::Detected);
        assert_eq!(google.scopes, ["openid", "profile", "email"]);
        assert_eq!(google.prompt.as_deref(), Some("consent"));
        assert_eq!(
            google.extra_auth_params,
            [("access_type".to_owned(), "offline".to_owned())]
        );
        assert_eq!(google.logout, LogoutStrategy::Local);
        let described = google.provider.describe();
        assert!(
            described.starts_with("google (detected from the issuer; sets oidc.scopes = openid profile email, oidc.prompt = consent, oidc.extra_auth_params = access_type=offline, oidc.logout = local"),
            "{described}"
        );
        let cognito = oidc(CUSTOM, "provider = \"cognito\"").unwrap();
        assert_eq!(cognito.provider.choice, ProfileChoice::Configured);
        assert_eq!(cognito.logout, LogoutStrategy::UrlTemplate);
        assert!(cognito.logout_url.is_some());
        assert_eq!(cognito.prompt, None, "no offline_access, no consent");
        let entra = oidc(CUSTOM, "provider = \"entra\"").unwrap();
        assert_eq!(entra.logout_hint_claim.as_deref(), Some("login_hint"));
        let auth0 = oidc(CUSTOM, "provider = \"auth0\"").unwrap();
        assert_eq!(auth0.logout, LogoutStrategy::RpInitiated);
        assert!(auth0.logout_url.is_some(), "the legacy /v2/logout fallback");
        let keycloak = oidc("https://sso.example.com/realms/staff", "").unwrap();
        assert_eq!(keycloak.scopes, ["openid", "profile", "email"]);
        assert_eq!(keycloak.prompt, None);
    }

    #[test]
    fn an_explicit_key_wins_over_the_profile() {
        let google = oidc(
            "https://accounts.google.com",
            "scopes = [\"openid\", \"email\"]\nprompt = \"\"\nlogout = \"rp_initiated\"\n\
             logout_url = \"https://accounts.google.com/logout?continue={post_logout_redirect_uri}\"\n\
             [oidc.extra_auth_params]\nhd = \"example.com\"",
        )
        .unwrap();
        assert_eq!(google.scopes, ["openid", "email"]);
        assert_eq!(google.prompt, None);
        assert_eq!(
            google.extra_auth_params,
            [("hd".to_owned(), "example.com".to_owned())],
            "the table replaces the profile's"
        );
        assert_eq!(google.logout, LogoutStrategy::RpInitiated);
        assert!(google.logout_url.is_some());
        assert!(google.provider.applied.is_empty(), "{:?}", google.provider);
        let generic = oidc("https://accounts.google.com", "provider = \"generic\"").unwrap();
        assert_eq!(generic.logout, LogoutStrategy::RpInitiated);
        assert!(generic.extra_auth_params.is_empty());
        let entra = oidc(CUSTOM, "provider = \"entra\"\nlogout_hint_claim = \"\"").unwrap();
        assert_eq!(entra.logout_hint_claim, None);
        let auth0 = oidc(CUSTOM, "provider = \"auth0\"\nlogout = \"local\"").unwrap();
        assert!(auth0.logout_url.is_none(), "local uses no template");
        // A template alone wins over a profile that logs out locally: it is used.
        let templated = oidc(
            "https://accounts.google.com",
            "logout_url = \"https://accounts.google.com/logout?continue={post_logout_redirect_uri}\"",
        )
        .unwrap();
        assert_eq!(templated.logout, LogoutStrategy::UrlTemplate);
        assert!(templated.logout_url.is_some());
    }

    #[test]
    fn vestibules_own_parameters_and_bad_logout_settings_are_refused_by_key() {
        for (lines, key, problem) in [
            ("provider = \"azure\"", "oidc.provider", "\"entra\""),
            (
                "[oidc.extra_auth_params]\nstate = \"x\"",
                "oidc.extra_auth_params.state",
                "each login",
            ),
            (
                "[oidc.extra_auth_params]\nscope = \"x\"",
                "oidc.extra_auth_params.scope",
                "oidc.scopes",
            ),
            (
                "[oidc.extra_auth_params]\nCode_Challenge_Method = \"plain\"",
                "oidc.extra_auth_params.Code_Challenge_Method",
                "PKCE",
            ),
            (
                "[oidc.extra_auth_params]\nprompt = \"consent\"",
                "oidc.extra_auth_params.prompt",
                "oidc.prompt",
            ),
            (
                "logout = \"url_template\"",
                "oidc.logout",
                "oidc.logout_url",
            ),
            ("logout = \"front\"", "oidc.logout", ""),
            (
                "logout_url = \"{authorization_origin}/logout?t={tenant}\"",
                "oidc.logout_url",
                "{tenant}",
            ),
            (
                "logout = \"local\"\nlogout_url = \"https://x.example/logout\"",
                "oidc.logout_url",
                "local",
            ),
            (
                "logout_hint_claim = \"a b\"",
                "oidc.logout_hint_claim",
                "one word",
            ),
        ] {
            let error = error(CUSTOM, lines);
            assert_eq!(error.key, key, "{lines}: {error}");
            assert!(error.problem.contains(problem), "{lines}: {error}");
        }
    }
}
