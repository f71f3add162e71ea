//! Authorization per route: what a route demands ([`RoutePolicy`]), who is asking
//! ([`Principal`], built once at login), and the one pure verdict ([`decide`]) the proxy acts on.
//!
//! This module never touches the network, a session store, a clock or HTTP machinery: it takes
//! the request's method as text, the principal already loaded and the time as unix seconds, so
//! every rule is testable (and fuzzed, `properties.rs`) without a server. Its errors
//! ([`PolicyError`]) name what is wrong with a policy's settings; the config layer adds the key.
//!
//! - `policy.rs`: [`Access`], [`MethodSet`], [`StepUp`] and [`RoutePolicy`], validated on
//!   construction.
//! - `claims.rs`: [`ClaimPath`] (a dotted path into the claims) and [`ClaimRule`] (what must be
//!   found there).
//! - `principal.rs`: [`Principal`], the user as the rules see them, compact in the session record.
//! - `decision.rs`: [`decide`], [`Decision`] and the step-up login URL.

mod claims;
mod decision;
mod policy;
mod principal;
#[cfg(test)]
mod properties;

pub use claims::{ClaimPath, ClaimRule, Expected, RuleOutcome};
pub use decision::{Decision, ForbiddenReason, decide, step_up_login_url};
pub use policy::{Access, MethodSet, RoutePolicy, StepUp};
pub use principal::{Principal, unix_seconds};

/// Why a route's policy settings cannot be used. The messages quote the offending value (settings
/// are not secrets) but not the key, which the config layer knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `access` is not one of the three words.
    #[error("`{0}` is not an access: use \"user\", \"optional\" or \"anonymous\"")]
    UnknownAccess(String),
    /// `methods = []`: a route that allows nothing is a mistake.
    #[error("an empty list allows no method; leave it out to allow every method")]
    NoMethods,
    /// Not an HTTP method token (RFC 9110 §9.1).
    #[error("`{0}` is not an HTTP method")]
    InvalidMethod(String),
    /// Methods are case-sensitive (RFC 9110 §9.1); `get` would never match a browser's `GET`.
    #[error("`{0}`: methods are case-sensitive, write it in capitals")]
    LowercaseMethod(String),
    /// An empty claim path, or one with an empty segment (`a..b`, `.a`, `a.`).
    #[error("`{0}` is not a claim path: segments separated by single dots, none empty")]
    InvalidClaimPath(String),
    /// A path into a protocol claim, which a [`Principal`] does not keep for rules.
    #[error("`{0}` is a protocol claim, not kept for rules (acr and auth_time belong in step_up)")]
    ProtocolClaim(String),
    /// Not exactly one of `any_of` / `all_of`, or an empty list.
    #[error("a claim rule needs exactly one of any_of and all_of, with at least one value")]
    RuleValues,
    /// An empty string among a rule's values: it could never be found.
    #[error("a claim rule's values cannot be empty strings")]
    EmptyRuleValue,
    /// A step-up that demands nothing.
    #[error("step_up needs acr_values, max_age_secs or both")]
    EmptyStepUp,
    /// An `acr` value that is empty or holds whitespace (`acr_values` is space-separated).
    #[error("`{0}` is not an acr value: it must be non-empty, without spaces")]
    InvalidAcrValue(String),
    /// `max_age_secs = 0`: no authentication is ever that recent once the browser is back.
    #[error("max_age_secs must be at least 1")]
    ZeroMaxAge,
    /// Claim rules or step-up on a route that does not require a user.
    #[error("require and step_up need access = \"user\"; this route is `{0}`")]
    RulesNeedUser(&'static str),
}
