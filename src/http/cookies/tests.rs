//! The cookie rules, case by case: names that only resemble ours, duplicates, attributes.

use super::*;
use proptest::prelude::*;

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
    }
    map
}

#[test]
fn https_cookies_are_host_prefixed_and_secure() {
    let policy = CookiePolicy::new(true);
    let value = policy.session_cookie(&SessionCookie::generate());
    let text = value.to_str().unwrap();
    assert!(text.starts_with("__Host-vestibule="));
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(text.contains(attribute), "{text}");
    }
    assert!(!text.contains("Domain"));
    let removal = policy.session_removal();
    assert!(removal.to_str().unwrap().contains("Max-Age=0"));
}

#[test]
fn http_cookies_are_not_secure_but_still_http_only() {
    let policy = CookiePolicy::new(false);
    let value = policy.login_cookie(&BrowserBinding::generate());
    let text = value.to_str().unwrap();
    assert!(text.starts_with("vestibule-login="));
    assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax"));
    assert!(text.contains("Max-Age=600"));
    assert!(!text.contains("Secure"));
}

#[test]
fn tampered_and_truncated_cookies_parse_to_nothing() {
    let policy = CookiePolicy::new(false);
    let value = SessionCookie::generate().encode();
    let session = |v: &str| {
        policy
            .read(&headers(&[format!("vestibule={v}").as_bytes()]))
            .session
    };
    assert!(session(&value).is_some());
    assert!(session(&value[..40]).is_none());
    assert!(session("garbage").is_none());
    assert!(policy.read(&HeaderMap::new()).session.is_none());
}

#[test]
fn only_byte_exact_names_are_ours() {
    let token = SessionCookie::generate().encode();
    let binding = BrowserBinding::generate().encode();
    for (https, name) in [
        (false, "%76estibule"),
        (false, "Vestibule"),
        (false, "vestibule%2Dlogin"),
        (true, "%5F_Host-vestibule"),
        (true, "%5F_Host-vestibule-login"),
        (true, "__host-vestibule"),
        (true, "vestibule"),
    ] {
        let policy = CookiePolicy::new(https);
        let header = format!("{name}={token}; {name}={binding}");
        let found = policy.read(&headers(&[header.as_bytes()]));
        assert!(found.session.is_none() && found.login.is_none(), "{name}");
        let mut map = headers(&[header.as_bytes()]);
        assert!(policy.strip(&mut map).session.is_none());
        assert_eq!(
            map[header::COOKIE].as_bytes(),
            header.as_bytes(),
            "kept as sent"
        );
    }
}

#[test]
fn two_different_values_under_one_of_our_names_are_both_refused() {
    let policy = CookiePolicy::new(true);
    let (mine, planted) = (BrowserBinding::generate(), BrowserBinding::generate());
    let conflicting = format!(
        "__Host-vestibule-login={}; __Host-vestibule-login={}",
        planted.encode(),
        mine.encode()
    );
    assert!(
        policy
            .read(&headers(&[conflicting.as_bytes()]))
            .login
            .is_none()
    );
    let repeated = format!(
        "__Host-vestibule-login={0}; a=1; __Host-vestibule-login={0}",
        mine.encode()
    );
    assert!(
        policy
            .read(&headers(&[repeated.as_bytes()]))
            .login
            .is_some()
    );
    let token = SessionCookie::generate().encode();
    let split = [
        format!("__Host-vestibule={token}"),
        "__Host-vestibule=x".to_owned(),
    ];
    let mut map = headers(&[split[0].as_bytes(), split[1].as_bytes()]);
    assert!(policy.strip(&mut map).session.is_none());
    assert!(
        map.get(header::COOKIE).is_none(),
        "ours are stripped all the same"
    );
}

#[test]
fn non_ascii_cookies_do_not_hide_ours_and_pass_through_untouched() {
    let policy = CookiePolicy::new(false);
    let token = SessionCookie::generate().encode();
    let header = format!("pref=caf\u{e9}; vestibule={token}; x=\u{1F600}");
    let found = policy.read(&headers(&[header.as_bytes()]));
    assert_eq!(found.session.unwrap().encode(), token);
    let latin1 = [b"pref=caf\xe9; vestibule=".as_slice(), token.as_bytes()].concat();
    let mut map = headers(&[&latin1]);
    assert_eq!(policy.strip(&mut map).session.unwrap().encode(), token);
    assert_eq!(map[header::COOKIE].as_bytes(), b"pref=caf\xe9");
}

#[test]
fn stripping_keeps_other_cookies_and_returns_the_session_token() {
    let policy = CookiePolicy::new(false);
    let token = SessionCookie::generate().encode();
    let first = format!("a=1; vestibule={token}; b=2");
    let mut map = headers(&[first.as_bytes(), b"vestibule-login=x; c=3; flag"]);
    let found = policy.strip(&mut map).session.expect("session token");
    assert_eq!(found.encode(), token);
    assert_eq!(map.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(map[header::COOKIE], "a=1; b=2; c=3; flag");
}

#[test]
fn stripping_removes_the_header_when_only_ours_were_sent() {
    let policy = CookiePolicy::new(true);
    let mut map = headers(&[b"__Host-vestibule=bad"]);
    assert!(policy.strip(&mut map).session.is_none());
    assert!(map.get(header::COOKIE).is_none());
    // The http names are not ours over https: they pass through untouched.
    let mut map = headers(&[b"vestibule=s"]);
    assert!(policy.strip(&mut map).session.is_none());
    assert_eq!(map[header::COOKIE], "vestibule=s");
}

#[test]
fn upstream_set_cookies_that_a_browser_or_server_would_take_as_ours_are_recognised() {
    for own in [
        "vestibule=fixated; Path=/",
        "__Host-vestibule=x; Secure; Path=/",
        " vestibule =x",
        "VESTIBULE=x",
        "%76estibule=x",
        "%2576estibule=x",
        "%5F_Host-vestibule-login=x",
        "__HOST-Vestibule-Login=x",
        "=vestibule=x",
        "vestibule",
        "=vestibule-login=x; Path=/",
    ] {
        assert!(CookiePolicy::is_own_set_cookie(own.as_bytes()), "{own}");
    }
    for theirs in [
        "app=1; Path=/",
        "vestibule_pref=1",
        "=plain",
        "",
        "pref=caf\u{e9}",
    ] {
        assert!(
            !CookiePolicy::is_own_set_cookie(theirs.as_bytes()),
            "{theirs}"
        );
    }
}

/// Bounded fuzzing of the parser: a few hundred cases per property in every `cargo test`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes a header value may hold (no control characters).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_map(|b| if b < 0x20 || b == 0x7f { b'x' } else { b }),
        0..max,
    )
}

/// Cookie pairs as a browser or an attacker might send them.
fn pair() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just(b"vestibule".to_vec()),
        Just(b"vestibule-login".to_vec()),
        Just(b"%76estibule".to_vec()),
        Just(b"Vestibule".to_vec()),
        Just(b"pref".to_vec()),
        Just(Vec::new()),
        header_bytes(8),
    ];
    let value = prop_oneof![
        Just(SessionCookie::generate().encode().into_bytes()),
        Just(b"caf\xc3\xa9".to_vec()),
        header_bytes(12),
    ];
    (name, value, any::<bool>()).prop_map(|(name, value, with_equals)| {
        let mut pair = name;
        if with_equals {
            pair.push(b'=');
        }
        pair.extend(value);
        pair
    })
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(pair(), 0..6).prop_map(|pairs| pairs.join(b"; ".as_slice()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_never_panics_and_stripping_removes_exactly_ours(
        values in proptest::collection::vec(header_value(), 1..3),
        https in any::<bool>(),
    ) {
        let policy = CookiePolicy::new(https);
        let mut map = HeaderMap::new();
        for value in &values {
            map.append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        let read = policy.read(&map);
        let expected_others: Vec<Vec<u8>> = values
            .iter()
            .flat_map(|value| cookie_pairs(value).map(|pair| (pair.name.to_vec(), pair.raw.to_vec())).collect::<Vec<_>>())
            .filter(|(name, _)| policy.own(name).is_none())
            .map(|(_, raw)| raw)
            .collect();
        let stripped = policy.strip(&mut map);
        prop_assert_eq!(read.session.map(|t| t.encode()), stripped.session.map(|t| t.encode()));
        prop_assert_eq!(read.login.map(|b| b.encode()), stripped.login.map(|b| b.encode()));
        let kept: Vec<Vec<u8>> = map
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|value| cookie_pairs(value.as_bytes()).map(|pair| pair.raw.to_vec()).collect::<Vec<_>>())
            .collect();
        prop_assert_eq!(kept, expected_others);
        prop_assert!(policy.read(&map).session.is_none());
    }

    #[test]
    fn a_session_is_found_under_its_exact_name_unless_another_value_competes(
        before in header_value(),
        after in header_value(),
    ) {
        let policy = CookiePolicy::new(false);
        let token = SessionCookie::generate().encode();
        let mut header = before.clone();
        if !header.is_empty() {
            header.extend_from_slice(b"; ");
        }
        header.extend_from_slice(format!("vestibule={token}").as_bytes());
        header.extend_from_slice(b"; ");
        header.extend_from_slice(&after);
        let competing = cookie_pairs(&before)
            .chain(cookie_pairs(&after))
            .any(|pair| pair.name == b"vestibule" && pair.value != token.as_bytes());
        let found = policy.read(&headers(&[&header])).session.map(|t| t.encode());
        prop_assert_eq!(found, (!competing).then_some(token));
    }

    #[test]
    fn set_cookie_check_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = CookiePolicy::is_own_set_cookie(&bytes);
    }

    #[test]
    fn encoded_or_recased_own_names_are_never_settable(
        name_index in 0usize..4,
        encode_mask in any::<u32>(),
        upper_mask in any::<u32>(),
        nameless in any::<bool>(),
    ) {
        let name = ALL_OWN_NAMES[name_index];
        let mut disguised = String::new();
        for (index, character) in name.chars().enumerate() {
            let character = if upper_mask & (1 << (index % 32)) != 0 {
                character.to_ascii_uppercase()
            } else {
                character
            };
            if encode_mask & (1 << (index % 32)) != 0 {
                disguised.push_str(&format!("%{:02X}", character as u32));
            } else {
                disguised.push(character);
            }
        }
        let set_cookie = if nameless {
            format!("={disguised}=x; Path=/")
        } else {
            format!("{disguised}=x; Path=/")
        };
        prop_assert!(CookiePolicy::is_own_set_cookie(set_cookie.as_bytes()), "{}", set_cookie);
    }
}
