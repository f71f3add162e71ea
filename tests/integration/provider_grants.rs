//! The test provider's grants for issue 31's credential kinds, called directly (no Vestibule):
//! what the harness's options, counters and switches promise reaches the real provider. The
//! login-bound parts (resources at login and refresh, exchanges of a user's token) are proven
//! by tests/op/selftest.mjs (`node selftest.mjs credentials`), which drives the login forms.

use crate::harness::provider::client_id;
use crate::harness::provider_grants::{
    ACCESS_TOKEN_TYPE, BILLING, ORDERS, REFUSED_AUDIENCE, REFUSED_RESOURCE, TOKEN_EXCHANGE,
    jwt_header, jwt_payload,
};
use crate::harness::{ProviderOptions, TestProvider};

fn provider() -> TestProvider {
    TestProvider::start(
        "http://127.0.0.1:9/api/auth/callback",
        "http://127.0.0.1:9/",
        &ProviderOptions {
            client_credentials_ttl: Some(7),
            exchanged_token_ttl: Some(3),
            ..ProviderOptions::default()
        },
    )
}

#[tokio::test]
async fn client_credentials_answer_a_jwt_for_the_resource_with_their_own_lifetime_and_are_counted()
{
    let provider = provider();
    let (status, answer) = provider
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("resource", ORDERS),
            ("scope", "orders:read billing:read"),
        ])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expires_in"], 7);
    let token = answer["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(token)["typ"], "at+jwt");
    let claims = jwt_payload(token);
    assert_eq!(claims["aud"], ORDERS);
    assert_eq!(claims["sub"], client_id());
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        7
    );

    // Auth0's audience stands for the resource.
    let (status, answer) = provider
        .token_request(&[("grant_type", "client_credentials"), ("audience", BILLING)])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        jwt_payload(answer["access_token"].as_str().unwrap())["aud"],
        BILLING
    );

    // The refused resource, then a slow provider.
    let (status, answer) = provider
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("resource", REFUSED_RESOURCE),
        ])
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let delay = std::time::Duration::from_millis(300);
    provider.delay_grants("client_credentials", delay).await;
    let started = std::time::Instant::now();
    let (status, _) = provider
        .token_request(&[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay, "held for {delay:?}");

    assert_eq!(provider.client_credentials_grants().await, 3);
    assert_eq!(provider.client_credentials_grants_for(ORDERS).await, 1);
    assert_eq!(provider.client_credentials_grants_for(BILLING).await, 1);
    let requests = provider.token_requests().await;
    assert_eq!(requests[0]["resource"], serde_json::json!([ORDERS]));
    assert_eq!(requests[1]["audience"], serde_json::json!([BILLING]));
    assert!(provider.authorization_requests().await.is_empty());
    // The JWTs are listed with the other secrets the provider issued (for log checks).
    assert!(
        provider
            .issued_secrets()
            .iter()
            .any(|secret| secret == token)
    );
}

#[tokio::test]
async fn the_token_exchange_refuses_with_rfc_8693_errors_and_the_switch_answers_for_it() {
    let provider = provider();
    let exchange = |audience: &'static str| {
        let provider = &provider;
        async move {
            provider
                .token_request(&[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", "not-a-token-this-provider-issued"),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("audience", audience),
                ])
                .await
        }
    };
    let (status, answer) = exchange(REFUSED_AUDIENCE).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, answer) = exchange("orders-api").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    provider
        .fail_next_exchanges(2, 503, "temporarily_unavailable")
        .await;
    for _ in 0..2 {
        let (status, answer) = exchange("orders-api").await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "temporarily_unavailable");
    }
    // The switch is spent: the provider's own answer again.
    let (status, answer) = exchange("orders-api").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    assert_eq!(provider.exchange_errors().await, 5);
    assert_eq!(provider.exchange_grants().await, 0);
    assert_eq!(provider.exchange_grants_for("orders-api").await, 0);
    assert_eq!(provider.refresh_grants_with_resource().await, 0);
    assert_eq!(provider.refresh_grants_for(ORDERS).await, 0);
    let requests = provider.token_requests().await;
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0]["has_subject_token"], true);
    assert!(
        !serde_json::to_string(&requests)
            .unwrap()
            .contains("not-a-token"),
        "no subject token in the records"
    );
}
