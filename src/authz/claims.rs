//! Claim rules: a dotted path into a user's claims ([`ClaimPath`]) and the values that must be
//! found there ([`ClaimRule`]). Pure; a rule's outcome never carries the claims it read.
//!
//! What a claim "holds", by its JSON type:
//! - an array: its string items, compared exactly (a number or object in it never matches);
//! - a string: its whole text and each of its space-separated parts (`scope = "read write"`);
//! - an object: its keys (Zitadel's `urn:zitadel:iam:org:project:roles` is keyed by role);
//! - a boolean or number: its JSON text (`email_verified` holds `"true"`); `null`: nothing.
//!
//! A missing path holds nothing. A path into a claim the provider left out and only referenced
//! (`_claim_names`, Entra ID's groups overage) is [`RuleOutcome::Unavailable`], never a quiet
//! "no groups".

use serde_json::{Map, Value};

use super::principal::{DROPPED_CLAIMS, KEPT_PROTOCOL_CLAIMS};
use super::{PolicyError, Principal};

/// A dotted path into the claims, e.g. `realm_access.roles`.
///
/// Claim names may hold dots themselves (Auth0's namespaced `https://example.com/roles`), so at
/// each level the longest part of the remaining path that is a key there is taken: the whole
/// rest first, then shorter prefixes ending before a dot. The first key found is followed; there
/// is no backtracking. Array indexes are not addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    text: String,
}

impl ClaimPath {
    /// A path of non-empty segments separated by single dots, not into a protocol claim.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(PolicyError::InvalidClaimPath(text.to_owned()));
        }
        let first = text.split('.').next().unwrap_or(text);
        let protocol =
            |name: &str| DROPPED_CLAIMS.contains(&name) || KEPT_PROTOCOL_CLAIMS.contains(&name);
        if protocol(text) || protocol(first) {
            return Err(PolicyError::ProtocolClaim(text.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `claims`, if there is one.
    pub fn resolve<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut object = claims;
        let mut rest = self.text.as_str();
        loop {
            let (_, value, remainder) = longest_key(object, rest)?;
            match remainder {
                None => return Some(value),
                Some(remainder) => {
                    object = value.as_object()?;
                    rest = remainder;
                }
            }
        }
    }

    /// The keys this path follows in `claims` and the value it reaches, if it reaches one: where
    /// a copy of the claim goes to sit at the same place (`realm_access.roles` follows
    /// `realm_access`, then `roles`; Auth0's `https://example.com/roles` is one key).
    pub fn locate<'a>(&self, claims: &'a Map<String, Value>) -> Option<(Vec<&'a str>, &'a Value)> {
        let mut keys = Vec::new();
        let mut object = claims;
        let mut rest = self.text.as_str();
        loop {
            let (key, value, remainder) = longest_key(object, rest)?;
            keys.push(key.as_str());
            match remainder {
                None => return Some((keys, value)),
                Some(remainder) => {
                    object = value.as_object()?;
                    rest = remainder;
                }
            }
        }
    }

    /// The top-level claim names this path may start with, longest first.
    fn top_level_names(&self) -> impl Iterator<Item = &str> {
        let text = self.text.as_str();
        std::iter::once(text).chain(text.rmatch_indices('.').map(move |(dot, _)| &text[..dot]))
    }
}

/// The longest key of `object` that is `rest` or a prefix of it ending before a dot, its
/// value, and what remains of the path after that dot.
fn longest_key<'a, 'p>(
    object: &'a Map<String, Value>,
    rest: &'p str,
) -> Option<(&'a String, &'a Value, Option<&'p str>)> {
    if let Some((key, value)) = object.get_key_value(rest) {
        return Some((key, value, None));
    }
    rest.rmatch_indices('.').find_map(|(dot, _)| {
        object
            .get_key_value(&rest[..dot])
            .map(|(key, value)| (key, value, Some(&rest[dot + 1..])))
    })
}

/// The values a rule looks for, and how many of them must be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// At least one must be found (`any_of`).
    AnyOf(Vec<String>),
    /// Every one must be found (`all_of`).
    AllOf(Vec<String>),
}

impl Expected {
    /// From the config's `any_of` / `all_of`: exactly one present, non-empty.
    pub fn parse(
        any_of: Option<Vec<String>>,
        all_of: Option<Vec<String>>,
    ) -> Result<Self, PolicyError> {
        match (any_of, all_of) {
            (Some(values), None) if !values.is_empty() => Ok(Self::AnyOf(values)),
            (None, Some(values)) if !values.is_empty() => Ok(Self::AllOf(values)),
            _ => Err(PolicyError::RuleValues),
        }
    }

    /// The values looked for.
    pub fn values(&self) -> &[String] {
        match self {
            Self::AnyOf(values) | Self::AllOf(values) => values,
        }
    }

    /// Whether `value` holds what is expected.
    fn found_in(&self, value: &Value) -> bool {
        match self {
            Self::AnyOf(values) => values.iter().any(|wanted| holds(value, wanted)),
            Self::AllOf(values) => values.iter().all(|wanted| holds(value, wanted)),
        }
    }
}

/// Whether the claim `value` holds `wanted` (see the module's table).
fn holds(value: &Value, wanted: &str) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(wanted)),
        Value::String(text) => {
            text == wanted || text.split_ascii_whitespace().any(|part| part == wanted)
        }
        Value::Object(keys) => keys.contains_key(wanted),
        Value::Bool(flag) => wanted == if *flag { "true" } else { "false" },
        Value::Number(number) => number.to_string() == wanted,
        Value::Null => false,
    }
}

/// One `[[routes.require]]` entry: the claim at `claim` must hold the expected values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    claim: ClaimPath,
    expected: Expected,
}

/// What a rule found for one principal. Carries no claim value, so it may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOutcome {
    /// The rule holds.
    Holds,
    /// The claim is missing or does not hold the expected values.
    Fails,
    /// The provider only referenced the claim (`_claim_names`: Entra ID's groups overage), so
    /// whether it holds is unknown.
    Unavailable,
}

impl ClaimRule {
    /// A rule; its values must not be empty strings (they could never be found).
    pub fn new(claim: ClaimPath, expected: Expected) -> Result<Self, PolicyError> {
        if expected.values().iter().any(String::is_empty) {
            return Err(PolicyError::EmptyRuleValue);
        }
        Ok(Self { claim, expected })
    }

    /// The path the rule reads.
    pub fn claim(&self) -> &ClaimPath {
        &self.claim
    }

    /// What it expects there.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Whether the rule holds for `principal`.
    pub fn check(&self, principal: &Principal) -> RuleOutcome {
        self.check_claims(principal.claims(), principal.unavailable())
    }

    /// [`Self::check`] on bare claims and the names only referenced (`_claim_names`).
    pub(super) fn check_claims(
        &self,
        claims: &Map<String, Value>,
        unavailable: &[String],
    ) -> RuleOutcome {
        match self.claim.resolve(claims) {
            Some(value) if self.expected.found_in(value) => RuleOutcome::Holds,
            Some(_) => RuleOutcome::Fails,
            None if self
                .claim
                .top_level_names()
                .any(|name| unavailable.iter().any(|gone| gone == name)) =>
            {
                RuleOutcome::Unavailable
            }
            None => RuleOutcome::Fails,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn check(path: &str, expected: Expected, claims_json: Value) -> RuleOutcome {
        let rule = ClaimRule::new(ClaimPath::parse(path).unwrap(), expected).unwrap();
        rule.check_claims(&claims(claims_json), &[])
    }

    fn any(values: &[&str]) -> Expected {
        Expected::AnyOf(values.iter().map(|v| (*v).to_owned()).collect())
    }

    fn all(values: &[&str]) -> Expected {
        Expected::AllOf(values.iter().map(|v| (*v).to_owned()).collect())
    }

    #[test]
    fn paths_are_validated() {
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert_eq!(
                ClaimPath::parse(bad),
                Err(PolicyError::InvalidClaimPath(bad.into()))
            );
        }
        for protocol in ["sub", "iss", "acr", "auth_time", "aud.x", "_claim_names"] {
            assert_eq!(
                ClaimPath::parse(protocol),
                Err(PolicyError::ProtocolClaim(protocol.into()))
            );
        }
        for good in [
            "groups",
            "realm_access.roles",
            "amr",
            "https://example.com/roles",
        ] {
            assert_eq!(ClaimPath::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn keycloak_realm_roles_nested_array() {
        let kc = json!({ "realm_access": { "roles": ["admin", "offline_access"] } });
        assert_eq!(
            check("realm_access.roles", any(&["admin"]), kc.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check(
                "realm_access.roles",
                all(&["admin", "offline_access"]),
                kc.clone()
            ),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("realm_access.roles", all(&["admin", "ops"]), kc.clone()),
            RuleOutcome::Fails
        );
        assert_eq!(
            check("realm_access.roles", any(&["Admin"]), kc.clone()),
            RuleOutcome::Fails,
            "exact"
        );
        assert_eq!(
            check("realm_access.groups", any(&["admin"]), kc.clone()),
            RuleOutcome::Fails,
            "missing"
        );
        assert_eq!(
            check("realm_access.roles.x", any(&["admin"]), kc),
            RuleOutcome::Fails,
            "through an array"
        );
    }

    #[test]
    fn arrays_match_only_string_items() {
        let mixed = json!({ "groups": [1, true, null, {"admin": 1}, ["admin"], "ops"] });
        for value in ["1", "true", "null", "admin"] {
            assert_eq!(
                check("groups", any(&[value]), mixed.clone()),
                RuleOutcome::Fails,
                "{value}"
            );
        }
        assert_eq!(check("groups", any(&["ops"]), mixed), RuleOutcome::Holds);
    }

    #[test]
    fn strings_hold_their_text_and_their_space_separated_parts() {
        let token =
            json!({ "scope": "openid  orders:read\torders:write", "department": "Sales Team" });
        assert_eq!(
            check(
                "scope",
                all(&["orders:read", "orders:write"]),
                token.clone()
            ),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("scope", any(&["orders"]), token.clone()),
            RuleOutcome::Fails
        );
        assert_eq!(
            check("department", any(&["Sales Team"]), token.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("department", any(&["Sales"]), token),
            RuleOutcome::Holds
        );
    }

    #[test]
    fn objects_hold_their_keys() {
        let zitadel = json!({ "urn:zitadel:iam:org:project:roles": {
            "admin": { "123": "org.example" }, "viewer": {} } });
        let path = "urn:zitadel:iam:org:project:roles";
        assert_eq!(
            check(path, any(&["admin"]), zitadel.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check(path, any(&["org.example"]), zitadel),
            RuleOutcome::Fails,
            "values are not keys"
        );
    }

    #[test]
    fn booleans_and_numbers_hold_their_json_text() {
        let claims_json = json!({ "email_verified": true, "level": 3, "ratio": 1.5, "none": null });
        assert_eq!(
            check("email_verified", any(&["true"]), claims_json.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("email_verified", any(&["false"]), claims_json.clone()),
            RuleOutcome::Fails
        );
        assert_eq!(
            check("level", any(&["3"]), claims_json.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("level", any(&["3.0"]), claims_json.clone()),
            RuleOutcome::Fails
        );
        assert_eq!(
            check("ratio", any(&["1.5"]), claims_json.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check("none", any(&["null"]), claims_json),
            RuleOutcome::Fails
        );
    }

    #[test]
    fn dotted_claim_names_take_the_longest_key_first() {
        let auth0 = json!({
            "https://example.com/roles": ["admin"],
            "https://example": { "com/roles": ["viewer"] },
            "a": { "b.c": { "d": ["deep"] } },
        });
        let path = "https://example.com/roles";
        assert_eq!(
            check(path, any(&["admin"]), auth0.clone()),
            RuleOutcome::Holds
        );
        assert_eq!(
            check(path, any(&["viewer"]), auth0.clone()),
            RuleOutcome::Fails,
            "longest wins"
        );
        assert_eq!(
            check("a.b.c.d", any(&["deep"]), auth0),
            RuleOutcome::Holds,
            "dots inside a nested key"
        );
        let two_prefixes = json!({
            "p.q": { "r": ["long"] },
            "p": { "q.r": ["short"] },
        });
        assert_eq!(
            check("p.q.r", any(&["long"]), two_prefixes.clone()),
            RuleOutcome::Holds,
            "the longer of two prefixes"
        );
        assert_eq!(
            check("p.q.r", any(&["short"]), two_prefixes),
            RuleOutcome::Fails,
            "no backtracking to the shorter"
        );
    }

    #[test]
    fn a_referenced_claim_is_unavailable_not_absent() {
        let rule = ClaimRule::new(ClaimPath::parse("groups").unwrap(), any(&["admins"])).unwrap();
        let overage = vec!["groups".to_owned()];
        assert_eq!(
            rule.check_claims(&Map::new(), &overage),
            RuleOutcome::Unavailable
        );
        assert_eq!(rule.check_claims(&Map::new(), &[]), RuleOutcome::Fails);
        let present = claims(json!({ "groups": ["admins"] }));
        assert_eq!(
            rule.check_claims(&present, &overage),
            RuleOutcome::Holds,
            "a value beats a reference"
        );
        let nested = ClaimRule::new(ClaimPath::parse("groups.x").unwrap(), any(&["y"])).unwrap();
        assert_eq!(
            nested.check_claims(&Map::new(), &overage),
            RuleOutcome::Unavailable
        );
    }

    #[test]
    fn rules_need_exactly_one_non_empty_list_of_non_empty_values() {
        let v = || Some(vec!["a".to_owned()]);
        assert_eq!(Expected::parse(v(), None), Ok(any(&["a"])));
        assert_eq!(Expected::parse(None, v()), Ok(all(&["a"])));
        assert_eq!(Expected::parse(v(), v()), Err(PolicyError::RuleValues));
        assert_eq!(Expected::parse(None, None), Err(PolicyError::RuleValues));
        assert_eq!(
            Expected::parse(Some(vec![]), None),
            Err(PolicyError::RuleValues)
        );
        let path = ClaimPath::parse("groups").unwrap();
        assert_eq!(
            ClaimRule::new(path, any(&["a", ""])),
            Err(PolicyError::EmptyRuleValue)
        );
    }
}
