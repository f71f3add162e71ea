//! What a route demands: who may call it ([`Access`]), with which methods ([`MethodSet`]), which
//! claims must hold ([`ClaimRule`]) and how recent and strong the login must be ([`StepUp`]).
//! Each is validated when built, so a [`RoutePolicy`] that exists can be decided on. Pure.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ClaimRule, PolicyError};

/// Who may call a route: the config's `access`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// A signed-in user is required; the session's credential is sent (today's behaviour).
    #[default]
    User,
    /// The session's credential when there is a valid session, nothing otherwise.
    Optional,
    /// No session needed and no credential ever sent, even when there is a session.
    Anonymous,
}

impl Access {
    /// Parses `"user"`, `"optional"` or `"anonymous"`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        match text {
            "user" => Ok(Self::User),
            "optional" => Ok(Self::Optional),
            "anonymous" => Ok(Self::Anonymous),
            other => Err(PolicyError::UnknownAccess(other.to_owned())),
        }
    }

    /// The config word for this access.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Optional => "optional",
            Self::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The methods a route accepts: the config's `methods`, or every method when absent.
///
/// `HEAD` is allowed wherever `GET` is, listed or not (and named in `Allow`): RFC 9110 §9.3.2
/// makes it `GET` without content, so it grants nothing `GET` does not, and servers and proxies
/// alike treat it so (nginx's `limit_except GET`). Nothing else is implied: `OPTIONS` must be
/// listed to pass. Methods compare case-sensitively (RFC 9110 §9.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodSet {
    /// `None`: every method. Otherwise the listed methods, deduplicated, in the config's order.
    listed: Option<Vec<String>>,
}

impl MethodSet {
    /// Every method (the default).
    pub fn every() -> Self {
        Self { listed: None }
    }

    /// The listed methods; each must be an uppercase HTTP method token, the list non-empty.
    pub fn parse<I, S>(methods: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut listed: Vec<String> = Vec::new();
        for method in methods {
            let method = method.as_ref();
            if method.is_empty() || !method.bytes().all(is_tchar) {
                return Err(PolicyError::InvalidMethod(method.to_owned()));
            }
            if method.bytes().any(|byte| byte.is_ascii_lowercase()) {
                return Err(PolicyError::LowercaseMethod(method.to_owned()));
            }
            if !listed.iter().any(|known| known == method) {
                listed.push(method.to_owned());
            }
        }
        if listed.is_empty() {
            return Err(PolicyError::NoMethods);
        }
        Ok(Self {
            listed: Some(listed),
        })
    }

    /// Whether a request with `method` (as the request line has it) may pass.
    pub fn allows(&self, method: &str) -> bool {
        match &self.listed {
            None => true,
            Some(listed) => {
                listed.iter().any(|known| known == method)
                    || (method == "HEAD" && listed.iter().any(|known| known == "GET"))
            }
        }
    }

    /// The listed methods (`None`: every method), as configured.
    pub fn listed(&self) -> Option<&[String]> {
        self.listed.as_deref()
    }

    /// The `Allow` header's value for a `405` (RFC 9110 §10.2.1): the listed methods, with `HEAD`
    /// after `GET` when implied. Empty for every method, where no `405` arises.
    pub fn allow_header(&self) -> String {
        let Some(listed) = &self.listed else {
            return String::new();
        };
        let implied_head = listed.iter().any(|m| m == "GET") && !listed.iter().any(|m| m == "HEAD");
        let mut names: Vec<&str> = Vec::with_capacity(listed.len() + 1);
        for method in listed {
            names.push(method);
            if implied_head && method == "GET" {
                names.push("HEAD");
            }
        }
        names.join(", ")
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.listed {
            None => f.write_str("every method"),
            Some(_) => f.write_str(&self.allow_header()),
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// How strong and how recent the user's login must be: the config's `[routes.step_up]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    acr_values: Vec<String>,
    max_age: Option<Duration>,
}

impl StepUp {
    /// `acr_values` (the ID token's `acr` must be one; empty: any) and `max_age` (`auth_time` at
    /// most this old); at least one must demand something.
    pub fn new(acr_values: Vec<String>, max_age: Option<Duration>) -> Result<Self, PolicyError> {
        if let Some(bad) = acr_values
            .iter()
            .find(|value| value.is_empty() || value.chars().any(char::is_whitespace))
        {
            return Err(PolicyError::InvalidAcrValue(bad.clone()));
        }
        if max_age.is_some_and(|age| age.as_secs() == 0) {
            return Err(PolicyError::ZeroMaxAge);
        }
        if acr_values.is_empty() && max_age.is_none() {
            return Err(PolicyError::EmptyStepUp);
        }
        Ok(Self {
            acr_values,
            max_age,
        })
    }

    /// The `acr` values accepted (empty: any).
    pub fn acr_values(&self) -> &[String] {
        &self.acr_values
    }

    /// How old `auth_time` may be, if limited (whole seconds).
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether a login with `acr` at `auth_time` satisfies this at `now` (unix seconds). An
    /// `auth_time` in the future (clock skew) counts as now; a missing one never satisfies a
    /// `max_age` (OIDC Core §2 makes it required once `max_age` was requested).
    pub fn satisfied_by(&self, acr: Option<&str>, auth_time: Option<u64>, now: u64) -> bool {
        let strong_enough = self.acr_values.is_empty()
            || acr.is_some_and(|acr| self.acr_values.iter().any(|v| v == acr));
        let recent_enough = match self.max_age {
            None => true,
            Some(max_age) => {
                auth_time.is_some_and(|at| now.saturating_sub(at) <= max_age.as_secs())
            }
        };
        strong_enough && recent_enough
    }
}

/// Everything a route demands, checked by [`super::decide`]. `Default` is today's behaviour: a
/// signed-in user, every method, no rules, no step-up.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    access: Access,
    methods: MethodSet,
    require: Vec<ClaimRule>,
    step_up: Option<StepUp>,
}

impl RoutePolicy {
    /// A policy; claim rules and step-up need `access = "user"` (on an optional route a visitor
    /// without a session would get more than a user who fails the rules).
    pub fn new(
        access: Access,
        methods: MethodSet,
        require: Vec<ClaimRule>,
        step_up: Option<StepUp>,
    ) -> Result<Self, PolicyError> {
        if access != Access::User && (!require.is_empty() || step_up.is_some()) {
            return Err(PolicyError::RulesNeedUser(access.as_str()));
        }
        Ok(Self {
            access,
            methods,
            require,
            step_up,
        })
    }

    /// Who may call the route.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The methods it accepts.
    pub fn methods(&self) -> &MethodSet {
        &self.methods
    }

    /// The claim rules, every one of which must hold.
    pub fn require(&self) -> &[ClaimRule] {
        &self.require
    }

    /// The step-up demanded, if any.
    pub fn step_up(&self) -> Option<&StepUp> {
        self.step_up.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{ClaimPath, Expected};

    #[test]
    fn access_parses_the_three_words_and_serde_agrees() {
        for access in [Access::User, Access::Optional, Access::Anonymous] {
            assert_eq!(Access::parse(access.as_str()), Ok(access));
            let json = serde_json::to_string(&access).unwrap();
            assert_eq!(json, format!("\"{access}\""));
            assert_eq!(serde_json::from_str::<Access>(&json).unwrap(), access);
        }
        assert_eq!(
            Access::parse("User"),
            Err(PolicyError::UnknownAccess("User".into()))
        );
        assert!(serde_json::from_str::<Access>("\"public\"").is_err());
        assert_eq!(Access::default(), Access::User);
    }

    #[test]
    fn methods_are_validated_and_head_follows_get() {
        let set = MethodSet::parse(["GET", "POST", "GET"]).unwrap();
        assert!(set.allows("GET") && set.allows("HEAD") && set.allows("POST"));
        assert!(!set.allows("PUT") && !set.allows("OPTIONS") && !set.allows("get"));
        assert_eq!(set.allow_header(), "GET, HEAD, POST");
        assert_eq!(set.listed().unwrap(), ["GET", "POST"]);

        let both = MethodSet::parse(["HEAD", "GET"]).unwrap();
        assert_eq!(
            both.allow_header(),
            "HEAD, GET",
            "HEAD listed: not added twice"
        );
        let head_only = MethodSet::parse(["HEAD"]).unwrap();
        assert!(head_only.allows("HEAD") && !head_only.allows("GET"));

        assert_eq!(
            MethodSet::parse(["get"]),
            Err(PolicyError::LowercaseMethod("get".into()))
        );
        assert_eq!(
            MethodSet::parse(["GE T"]),
            Err(PolicyError::InvalidMethod("GE T".into()))
        );
        assert_eq!(
            MethodSet::parse([""]),
            Err(PolicyError::InvalidMethod(String::new()))
        );
        assert_eq!(
            MethodSet::parse(Vec::<String>::new()),
            Err(PolicyError::NoMethods)
        );
        assert!(MethodSet::parse(["PROPFIND", "M-SEARCH"]).is_ok());
        assert!(MethodSet::every().allows("ANYTHING"));
        assert_eq!(MethodSet::every().to_string(), "every method");
    }

    #[test]
    fn step_up_is_validated_and_checks_acr_and_age() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(StepUp::new(vec![], None), Err(PolicyError::EmptyStepUp));
        assert_eq!(
            StepUp::new(vec![], Some(Duration::ZERO)),
            Err(PolicyError::ZeroMaxAge)
        );
        assert_eq!(
            StepUp::new(vec!["a b".into()], None),
            Err(PolicyError::InvalidAcrValue("a b".into()))
        );
        assert_eq!(
            StepUp::new(vec![String::new()], None),
            Err(PolicyError::InvalidAcrValue(String::new()))
        );

        let step_up = StepUp::new(vec!["mfa".into(), "2".into()], minute).unwrap();
        assert!(step_up.satisfied_by(Some("mfa"), Some(1000), 1060));
        assert!(step_up.satisfied_by(Some("2"), Some(1100), 1060), "skew");
        assert!(
            !step_up.satisfied_by(Some("mfa"), Some(1000), 1061),
            "too old"
        );
        assert!(
            !step_up.satisfied_by(Some("mfa"), None, 1000),
            "no auth_time"
        );
        assert!(
            !step_up.satisfied_by(Some("1"), Some(1000), 1000),
            "weak acr"
        );
        assert!(!step_up.satisfied_by(None, Some(1000), 1000), "no acr");

        let age_only = StepUp::new(vec![], minute).unwrap();
        assert!(age_only.satisfied_by(None, Some(1000), 1010));
    }

    #[test]
    fn rules_and_step_up_need_a_user_route() {
        let rule = ClaimRule::new(
            ClaimPath::parse("groups").unwrap(),
            Expected::AnyOf(vec!["x".into()]),
        )
        .unwrap();
        let step_up = StepUp::new(vec!["mfa".into()], None).unwrap();
        for access in [Access::Optional, Access::Anonymous] {
            let every = MethodSet::every;
            assert_eq!(
                RoutePolicy::new(access, every(), vec![rule.clone()], None).err(),
                Some(PolicyError::RulesNeedUser(access.as_str()))
            );
            assert!(RoutePolicy::new(access, every(), vec![], Some(step_up.clone())).is_err());
            assert!(RoutePolicy::new(access, every(), vec![], None).is_ok());
        }
        let policy =
            RoutePolicy::new(Access::User, MethodSet::every(), vec![rule], Some(step_up)).unwrap();
        assert_eq!(policy.require().len(), 1);
        assert!(policy.step_up().is_some());
        let default = RoutePolicy::default();
        assert_eq!(default.access(), Access::User);
        assert_eq!(default.methods(), &MethodSet::every());
        assert!(default.require().is_empty() && default.step_up().is_none());
    }
}
