//! The verdict on one request: [`decide`] turns a route's policy, the request's method, the
//! principal (if the request has a valid session) and the time into a [`Decision`] the proxy acts
//! on; [`step_up_login_url`] is where a step-up sends the browser. Pure.
//!
//! The checks run in a fixed order, each deciding alone:
//! 1. the method: a method the route does not accept is `405` for everyone, signed in or not, so
//!    the answer does not reveal whether a session exists;
//! 2. the access: `anonymous` forwards without a credential, always; `optional` forwards with the
//!    session's credential when there is a principal, without one otherwise; `user` without a
//!    principal is unauthenticated;
//! 3. the claim rules, in order, the first failing one deciding: a user without the role gains
//!    nothing from a second factor, so they are told no before being asked for one;
//! 4. the step-up.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Access, Principal, RoutePolicy, RuleOutcome, StepUp};

/// What to do with a request. Carries nothing of the user's claims, so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward it with the session's credential.
    ForwardWithCredential,
    /// Forward it with no credential (none of ours, and not the browser's `Authorization`).
    ForwardAnonymously,
    /// `405`: the route does not accept the method; `allow` is the `Allow` header's value.
    MethodNotAllowed {
        /// The methods the route accepts, as `Allow` lists them.
        allow: String,
    },
    /// `401`: the route needs a signed-in user and the request has no valid session.
    Unauthenticated,
    /// `403`: a claim rule does not hold.
    Forbidden {
        /// The index of the first rule that failed, in the route's `require` list (for logs).
        rule: usize,
        /// Why it failed.
        reason: ForbiddenReason,
    },
    /// `401 step_up_required`: the login is not strong or recent enough; log in again with these.
    StepUpRequired(StepUp),
}

/// Why a claim rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// The claim is missing or does not hold the expected values.
    NotSatisfied,
    /// The provider only referenced the claim (Entra ID's groups overage): report it as such,
    /// never as "the user has no groups".
    ClaimUnavailable,
}

/// Decides `method` on a route with `policy`, for `principal` (a valid session's, or `None`), at
/// `now` (unix seconds). See the module's docs for the order of the checks.
pub fn decide(
    policy: &RoutePolicy,
    method: &str,
    principal: Option<&Principal>,
    now: u64,
) -> Decision {
    if !policy.methods().allows(method) {
        return Decision::MethodNotAllowed {
            allow: policy.methods().allow_header(),
        };
    }
    let principal = match (policy.access(), principal) {
        (Access::Anonymous, _) | (Access::Optional, None) => return Decision::ForwardAnonymously,
        (Access::Optional, Some(_)) => return Decision::ForwardWithCredential,
        (Access::User, None) => return Decision::Unauthenticated,
        (Access::User, Some(principal)) => principal,
    };
    for (index, rule) in policy.require().iter().enumerate() {
        let reason = match rule.check(principal) {
            RuleOutcome::Holds => continue,
            RuleOutcome::Fails => ForbiddenReason::NotSatisfied,
            RuleOutcome::Unavailable => ForbiddenReason::ClaimUnavailable,
        };
        return Decision::Forbidden {
            rule: index,
            reason,
        };
    }
    match policy.step_up() {
        Some(step_up) if !step_up.satisfied_by(principal.acr(), principal.auth_time(), now) => {
            Decision::StepUpRequired(step_up.clone())
        }
        _ => Decision::ForwardWithCredential,
    }
}

/// Characters left as they are in a query value: RFC 3986's unreserved ones. Spaces become `%20`
/// (not `+`), which every query parser reads as a space.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL that logs the user in again strongly and recently enough: `login_path` (the login
/// endpoint, e.g. `/api/auth/login`) with `acr_values` (space-separated) and `max_age` (seconds)
/// when given. The SPA adds `returnTo`. Also fits an upstream's RFC 9470 challenge.
pub fn step_up_login_url(
    login_path: &str,
    acr_values: &[String],
    max_age: Option<Duration>,
) -> String {
    let mut url = login_path.to_owned();
    let mut separator = if login_path.contains('?') { '&' } else { '?' };
    if !acr_values.is_empty() {
        let joined = acr_values.join(" ");
        url.push(separator);
        url.push_str("acr_values=");
        url.extend(utf8_percent_encode(&joined, QUERY_VALUE));
        separator = '&';
    }
    if let Some(max_age) = max_age {
        url.push(separator);
        url.push_str("max_age=");
        url.push_str(&max_age.as_secs().to_string());
    }
    url
}

impl StepUp {
    /// [`step_up_login_url`] for this step-up.
    pub fn login_url(&self, login_path: &str) -> String {
        step_up_login_url(login_path, self.acr_values(), self.max_age())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{ClaimPath, ClaimRule, Expected, MethodSet};
    use serde_json::{Value, json};

    const NOW: u64 = 10_000;

    fn principal(claims: Value) -> Principal {
        match claims {
            Value::Object(map) => Principal::from_claims(&map).unwrap(),
            _ => unreachable!(),
        }
    }

    fn rule(path: &str, value: &str) -> ClaimRule {
        let expected = Expected::AnyOf(vec![value.to_owned()]);
        ClaimRule::new(ClaimPath::parse(path).unwrap(), expected).unwrap()
    }

    fn admin_route() -> RoutePolicy {
        let step_up = StepUp::new(vec!["mfa".into()], Some(Duration::from_secs(300))).unwrap();
        RoutePolicy::new(
            Access::User,
            MethodSet::parse(["GET", "POST"]).unwrap(),
            vec![
                rule("realm_access.roles", "admin"),
                rule("email_verified", "true"),
            ],
            Some(step_up),
        )
        .unwrap()
    }

    fn alice(acr: &str, auth_time: u64) -> Principal {
        principal(json!({ "sub": "alice", "acr": acr, "auth_time": auth_time,
            "email_verified": true, "realm_access": { "roles": ["admin"] } }))
    }

    #[test]
    fn default_policy_is_todays_behaviour() {
        let policy = RoutePolicy::default();
        let anyone = principal(json!({ "sub": "bob" }));
        assert_eq!(
            decide(&policy, "DELETE", Some(&anyone), NOW),
            Decision::ForwardWithCredential
        );
        assert_eq!(decide(&policy, "GET", None, NOW), Decision::Unauthenticated);
    }

    #[test]
    fn method_is_checked_first_even_without_a_session() {
        let expected = Decision::MethodNotAllowed {
            allow: "GET, HEAD, POST".into(),
        };
        assert_eq!(decide(&admin_route(), "DELETE", None, NOW), expected);
        assert_eq!(
            decide(&admin_route(), "DELETE", Some(&alice("mfa", NOW)), NOW),
            expected
        );
        let anonymous = RoutePolicy::new(
            Access::Anonymous,
            MethodSet::parse(["GET"]).unwrap(),
            vec![],
            None,
        )
        .unwrap();
        assert!(matches!(
            decide(&anonymous, "POST", None, NOW),
            Decision::MethodNotAllowed { .. }
        ));
        assert_eq!(
            decide(&anonymous, "HEAD", None, NOW),
            Decision::ForwardAnonymously
        );
    }

    #[test]
    fn anonymous_never_sends_a_credential_and_optional_only_with_a_session() {
        let every = MethodSet::every;
        let anonymous = RoutePolicy::new(Access::Anonymous, every(), vec![], None).unwrap();
        let optional = RoutePolicy::new(Access::Optional, every(), vec![], None).unwrap();
        let someone = alice("1", 0);
        assert_eq!(
            decide(&anonymous, "GET", Some(&someone), NOW),
            Decision::ForwardAnonymously
        );
        assert_eq!(
            decide(&anonymous, "GET", None, NOW),
            Decision::ForwardAnonymously
        );
        assert_eq!(
            decide(&optional, "GET", Some(&someone), NOW),
            Decision::ForwardWithCredential
        );
        assert_eq!(
            decide(&optional, "GET", None, NOW),
            Decision::ForwardAnonymously
        );
    }

    #[test]
    fn rules_come_before_step_up_and_name_the_failing_rule() {
        let bob = principal(
            json!({ "sub": "bob", "email_verified": true, "realm_access": { "roles": ["user"] } }),
        );
        let forbidden = Decision::Forbidden {
            rule: 0,
            reason: ForbiddenReason::NotSatisfied,
        };
        assert_eq!(
            decide(&admin_route(), "GET", Some(&bob), NOW),
            forbidden,
            "no step-up for bob"
        );
        let unverified = principal(json!({ "sub": "c", "acr": "mfa", "auth_time": NOW,
            "email_verified": false, "realm_access": { "roles": ["admin"] } }));
        assert!(matches!(
            decide(&admin_route(), "GET", Some(&unverified), NOW),
            Decision::Forbidden { rule: 1, .. }
        ));
        let overage = principal(json!({ "sub": "d", "_claim_names": { "realm_access": "src1" } }));
        assert_eq!(
            decide(&admin_route(), "GET", Some(&overage), NOW),
            Decision::Forbidden {
                rule: 0,
                reason: ForbiddenReason::ClaimUnavailable
            }
        );
    }

    #[test]
    fn step_up_demands_the_acr_and_a_recent_login() {
        let route = admin_route();
        let step_up = route.step_up().unwrap().clone();
        assert_eq!(
            decide(&route, "GET", Some(&alice("mfa", NOW - 300)), NOW),
            Decision::ForwardWithCredential
        );
        assert_eq!(
            decide(&route, "GET", Some(&alice("mfa", NOW - 301)), NOW),
            Decision::StepUpRequired(step_up.clone())
        );
        assert_eq!(
            decide(&route, "GET", Some(&alice("1", NOW)), NOW),
            Decision::StepUpRequired(step_up)
        );
        let no_auth_time = principal(
            json!({ "sub": "a", "acr": "mfa", "email_verified": true, "realm_access": { "roles": ["admin"] } }),
        );
        assert!(matches!(
            decide(&route, "GET", Some(&no_auth_time), NOW),
            Decision::StepUpRequired(_)
        ));
    }

    #[test]
    fn login_url_is_encoded() {
        let values = vec!["mfa".to_owned(), "urn:x:loa 2".to_owned()];
        assert_eq!(
            step_up_login_url("/api/auth/login", &values, Some(Duration::from_secs(300))),
            "/api/auth/login?acr_values=mfa%20urn%3Ax%3Aloa%202&max_age=300"
        );
        assert_eq!(
            step_up_login_url("/api/auth/login", &[], Some(Duration::from_secs(5))),
            "/api/auth/login?max_age=5"
        );
        assert_eq!(
            step_up_login_url("/login?x=1", &["a&b=c".to_owned()], None),
            "/login?x=1&acr_values=a%26b%3Dc"
        );
        let step_up = StepUp::new(vec!["gold".into()], None).unwrap();
        assert_eq!(
            step_up.login_url("/api/auth/login"),
            "/api/auth/login?acr_values=gold"
        );
    }
}
