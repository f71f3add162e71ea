//! Bounded fuzzing of the claim-path matcher and of [`decide`]: properties that must hold for
//! every claim shape and every policy, not only the examples in the unit tests.

use std::time::Duration;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use super::*;

/// 512 cases and no failure files: well under a second in a debug build, nothing on disk.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const NOW: u64 = 1_000_000;
const WORDS: &[&str] = &[
    "admin",
    "ops",
    "read",
    "orders:write",
    "viewer",
    "x.y",
    "1",
    "true",
];
const SEGMENTS: &[&str] = &["a", "b", "roles", "realm_access"];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND",
];
const ACRS: &[&str] = &["0", "1", "mfa", "gold"];

fn word() -> impl Strategy<Value = String> {
    select(WORDS).prop_map(str::to_owned)
}

/// Any JSON value built from the words and segments, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..30).prop_map(Value::from),
        word().prop_map(Value::String),
        vec(word(), 0..4).prop_map(|parts| Value::String(parts.join(" "))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((select(SEGMENTS).prop_map(str::to_owned), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A path of 1–4 segments and claims holding `value` at it (nested objects along the way).
fn nest(segments: &[String], value: Value) -> Map<String, Value> {
    let mut value = value;
    for segment in segments.iter().rev() {
        value = Value::Object(Map::from_iter([(segment.clone(), value)]));
    }
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn path() -> impl Strategy<Value = Vec<String>> {
    vec(select(SEGMENTS).prop_map(str::to_owned), 1..4)
}

fn rule(segments: &[String], expected: Expected) -> ClaimRule {
    let path = ClaimPath::parse(&segments.join(".")).unwrap();
    ClaimRule::new(path, expected).unwrap()
}

fn outcome(segments: &[String], expected: Expected, claims: &Map<String, Value>) -> RuleOutcome {
    rule(segments, expected).check_claims(claims, &[])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_array_of_strings_holds_exactly_its_items(
        segments in path(), items in vec(word(), 0..5), wanted in word(),
    ) {
        let claims = nest(&segments, Value::from(items.clone()));
        let found = outcome(&segments, Expected::AnyOf(vec![wanted.clone()]), &claims);
        prop_assert_eq!(found == RuleOutcome::Holds, items.contains(&wanted));
        let all = outcome(&segments, Expected::AllOf(items.clone()), &claims);
        prop_assert!(items.is_empty() || all == RuleOutcome::Holds);
    }

    #[test]
    fn non_string_array_items_never_match(
        segments in path(),
        items in vec(json().prop_filter("not a string", |v| !v.is_string()), 1..5),
        wanted in word(),
    ) {
        let texts: Vec<String> = items.iter().map(Value::to_string).chain([wanted]).collect();
        let claims = nest(&segments, Value::Array(items));
        prop_assert_eq!(outcome(&segments, Expected::AnyOf(texts), &claims), RuleOutcome::Fails);
    }

    #[test]
    fn a_space_separated_string_holds_each_part_and_nothing_else(
        segments in path(),
        parts in vec(select(&["admin", "ops", "read", "orders:write"][..]), 1..5),
        separators in vec(select(&[" ", "  ", "\t", "\n "][..]), 4),
        stranger in select(&["viewer", "adm", "ops read", ""][..]),
    ) {
        let mut text = String::new();
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                text.push_str(separators[index % separators.len()]);
            }
            text.push_str(part);
        }
        let claims = nest(&segments, Value::String(text.clone()));
        let all = Expected::AllOf(parts.iter().map(|p| (*p).to_owned()).collect());
        prop_assert_eq!(outcome(&segments, all, &claims), RuleOutcome::Holds);
        if !stranger.is_empty() && stranger != text {
            let other = Expected::AnyOf(vec![stranger.to_owned()]);
            prop_assert_eq!(outcome(&segments, other, &claims), RuleOutcome::Fails);
        }
    }

    #[test]
    fn an_object_holds_its_keys_not_its_values(
        segments in path(), keys in btree_set(word(), 0..5), wanted in word(),
    ) {
        let object: Map<String, Value> =
            keys.iter().map(|k| (k.clone(), Value::String(format!("{k}-value")))).collect();
        let claims = nest(&segments, Value::Object(object));
        let found = outcome(&segments, Expected::AnyOf(vec![wanted.clone()]), &claims);
        prop_assert_eq!(found == RuleOutcome::Holds, keys.contains(&wanted));
        let value = Expected::AnyOf(vec![format!("{wanted}-value")]);
        prop_assert_eq!(outcome(&segments, value, &claims), RuleOutcome::Fails);
    }

    #[test]
    fn a_missing_path_never_holds(
        claims in json(), segments in path(), tail in path(), wanted in vec(word(), 1..3),
    ) {
        let claims = match claims { Value::Object(map) => map, other => nest(&segments, other) };
        let mut missing = vec!["absent".to_owned()];
        missing.extend(tail);
        for expected in [Expected::AnyOf(wanted.clone()), Expected::AllOf(wanted.clone())] {
            prop_assert_eq!(outcome(&missing, expected, &claims), RuleOutcome::Fails);
        }
        // Through a value that is not an object: nothing further down.
        let mut through = segments.clone();
        through.push("deeper".to_owned());
        let scalar = nest(&segments, Value::String(wanted.join(" ")));
        prop_assert_eq!(outcome(&through, Expected::AnyOf(wanted), &scalar), RuleOutcome::Fails);
    }

    #[test]
    fn any_of_and_all_of_are_built_from_single_values(
        segments in path(), value in json(), wanted in vec(word(), 1..4),
    ) {
        let claims = nest(&segments, value);
        let single: Vec<bool> = wanted
            .iter()
            .map(|w| outcome(&segments, Expected::AnyOf(vec![w.clone()]), &claims) == RuleOutcome::Holds)
            .collect();
        let any = outcome(&segments, Expected::AnyOf(wanted.clone()), &claims);
        let all = outcome(&segments, Expected::AllOf(wanted), &claims);
        prop_assert_eq!(any == RuleOutcome::Holds, single.iter().any(|h| *h));
        prop_assert_eq!(all == RuleOutcome::Holds, single.iter().all(|h| *h));
        prop_assert_ne!(any, RuleOutcome::Unavailable);
    }

    #[test]
    fn a_principal_round_trips_and_keeps_no_protocol_claim(
        claims in json(), acr in proptest::option::of(select(ACRS)), auth_time in proptest::option::of(0u64..NOW),
    ) {
        let mut map = match claims { Value::Object(map) => map, other => Map::from_iter([("x".to_owned(), other)]) };
        for protocol in ["iss", "aud", "exp", "nonce", "sid", "jti"] {
            map.insert(protocol.to_owned(), Value::from("p"));
        }
        map.insert("sub".to_owned(), Value::from("subject"));
        if let Some(acr) = acr { map.insert("acr".to_owned(), Value::from(acr)); }
        if let Some(at) = auth_time { map.insert("auth_time".to_owned(), Value::from(at)); }
        let principal = Principal::from_claims(&map).unwrap();
        prop_assert_eq!(principal.acr(), acr);
        prop_assert_eq!(principal.auth_time(), auth_time);
        for protocol in ["iss", "aud", "exp", "nonce", "sid", "jti", "sub", "acr", "auth_time"] {
            prop_assert!(!principal.claims().contains_key(protocol));
        }
        let packed = rmp_serde::to_vec_named(&principal).unwrap();
        prop_assert!(rmp_serde::from_slice::<Principal>(&packed).unwrap() == principal);
    }
}

/// A policy of any shape (rules and step-up only where access is `user`).
fn policy() -> impl Strategy<Value = RoutePolicy> {
    let access = select(&[Access::User, Access::Optional, Access::Anonymous][..]);
    let methods = proptest::option::of(vec(select(METHODS), 1..4));
    let rules = vec((path(), vec(word(), 1..3), any::<bool>()), 0..3);
    let step_up = proptest::option::of((
        vec(select(ACRS).prop_map(str::to_owned), 0..3),
        proptest::option::of(1u64..600),
    ));
    (access, methods, rules, step_up).prop_map(|(access, methods, rules, step_up)| {
        let methods = methods.map_or_else(MethodSet::every, |m| MethodSet::parse(m).unwrap());
        let user = access == Access::User;
        let require = rules
            .into_iter()
            .filter(|_| user)
            .map(|(segments, values, all)| {
                rule(
                    &segments,
                    if all {
                        Expected::AllOf(values)
                    } else {
                        Expected::AnyOf(values)
                    },
                )
            })
            .collect();
        let step_up = step_up
            .filter(|_| user)
            .and_then(|(acrs, age)| StepUp::new(acrs, age.map(Duration::from_secs)).ok());
        RoutePolicy::new(access, methods, require, step_up).unwrap()
    })
}

/// Any principal: claims from [`json`], an `acr`, an `auth_time` up to an hour old.
fn principal() -> impl Strategy<Value = Principal> {
    (
        json(),
        proptest::option::of(select(ACRS)),
        proptest::option::of(0u64..3600),
    )
        .prop_map(|(claims, acr, age)| {
            let mut map = match claims {
                Value::Object(map) => map,
                other => Map::from_iter([("x".to_owned(), other)]),
            };
            map.insert("sub".to_owned(), Value::from("someone"));
            if let Some(acr) = acr {
                map.insert("acr".to_owned(), Value::from(acr));
            }
            if let Some(age) = age {
                map.insert("auth_time".to_owned(), Value::from(NOW - age));
            }
            Principal::from_claims(&map).unwrap()
        })
}

/// The claims and login that satisfy every rule and the step-up of `policy`.
fn satisfying(policy: &RoutePolicy) -> Principal {
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), Value::from("someone"));
    for rule in policy.require() {
        let segments: Vec<String> = rule
            .claim()
            .as_str()
            .split('.')
            .map(str::to_owned)
            .collect();
        let mut held = nest(&segments, Value::from(rule.expected().values().to_vec()));
        merge(&mut claims, &mut held);
    }
    if let Some(step_up) = policy.step_up() {
        if let Some(acr) = step_up.acr_values().first() {
            claims.insert("acr".to_owned(), Value::from(acr.clone()));
        }
        claims.insert("auth_time".to_owned(), Value::from(NOW));
    }
    Principal::from_claims(&claims).unwrap()
}

/// Deep-merges `extra` into `into`, arrays concatenated (so every rule's values are held).
fn merge(into: &mut Map<String, Value>, extra: &mut Map<String, Value>) {
    for (key, value) in std::mem::take(extra) {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(mine)), Value::Object(mut theirs)) => merge(mine, &mut theirs),
            (Some(Value::Array(mine)), Value::Array(theirs)) => mine.extend(theirs),
            // A path that is a prefix of another: the nested one, as an object, cannot also be
            // an array; keep the object (the rule on the shorter path then holds its keys).
            (Some(Value::Object(mine)), Value::Array(theirs)) => {
                for item in theirs
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                {
                    mine.entry(item).or_insert(Value::Null);
                }
            }
            (Some(Value::Array(mine)), Value::Object(theirs)) => {
                let mut object: Map<String, Value> = mine
                    .iter()
                    .filter_map(|v| v.as_str().map(|s| (s.to_owned(), Value::Null)))
                    .collect();
                let mut theirs = theirs;
                merge(&mut object, &mut theirs);
                into.insert(key, Value::Object(object));
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decide_keeps_its_promises(
        policy in policy(), principal in proptest::option::of(principal()), method in select(METHODS),
    ) {
        let decision = decide(&policy, method, principal.as_ref(), NOW);
        let allowed = policy.methods().allows(method);
        prop_assert_eq!(matches!(decision, Decision::MethodNotAllowed { .. }), !allowed);
        if let Decision::MethodNotAllowed { allow } = &decision {
            prop_assert!(!allow.is_empty() && !allow.split(", ").any(|m| m == method));
        }
        if policy.access() == Access::Anonymous || principal.is_none() {
            prop_assert_ne!(&decision, &Decision::ForwardWithCredential);
        }
        if policy.access() == Access::Optional && allowed {
            let credential = principal.is_some();
            prop_assert_eq!(decision == Decision::ForwardWithCredential, credential);
        }
        if policy.access() == Access::User && allowed && principal.is_none() {
            prop_assert_eq!(&decision, &Decision::Unauthenticated);
        }
        if policy.require().is_empty() {
            prop_assert!(
                !matches!(decision, Decision::Forbidden { .. }),
                "forbidden without rules"
            );
        }
        if policy.step_up().is_none() {
            prop_assert!(
                !matches!(decision, Decision::StepUpRequired(_)),
                "step-up without step_up"
            );
        }
        if let (Decision::Forbidden { rule, .. }, Some(principal)) = (&decision, &principal) {
            let outcomes: Vec<RuleOutcome> = policy.require().iter().map(|r| r.check(principal)).collect();
            prop_assert!(outcomes[..*rule].iter().all(|o| *o == RuleOutcome::Holds));
            prop_assert_ne!(outcomes[*rule], RuleOutcome::Holds);
        }
    }

    #[test]
    fn a_user_who_satisfies_everything_is_forwarded_with_the_credential(
        policy in policy().prop_filter("a user route", |p| p.access() == Access::User),
        method in select(METHODS),
    ) {
        let user = satisfying(&policy);
        let decision = decide(&policy, method, Some(&user), NOW);
        let expected = if policy.methods().allows(method) {
            Decision::ForwardWithCredential
        } else {
            Decision::MethodNotAllowed { allow: policy.methods().allow_header() }
        };
        prop_assert_eq!(decision, expected);
    }
}
