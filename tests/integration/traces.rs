//! OpenTelemetry traces, through the real binary exporting to a real OTLP/HTTP receiver: the
//! span tree of one proxied call that triggers a refresh, the trace context the upstream and
//! the provider receive, and a `traceparent` (and `baggage`) believed only from a trusted front
//! proxy.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::binary::{VestibuleProcess, binary_in_front};
use crate::harness::otlp::{OtlpReceiver, ReceivedSpan};
use crate::harness::{Browser, TestApp, wait_for};

/// A browser's own trace context (its trace and span ids).
const BROWSER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const BROWSER_SPAN: &str = "00f067aa0ba902b7";

/// A browser's own baggage.
const BROWSER_BAGGAGE: &str = "user.tier=gold";

/// `[traces]` lines that trust the context from the browsers' own address, as if they were the
/// front proxy.
const TRUSTING_THE_SENDER: &str =
    "trust_traceparent = true\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";

/// `[traces]` lines that trust a front proxy at another address than the browsers'.
const TRUSTING_ANOTHER_PROXY: &str =
    "trust_traceparent = true\n[server]\ntrusted_proxies = [\"127.0.0.2/32\"]\n";

/// An app whose public URL is the real binary's, exporting spans to `receiver` (`[traces]`
/// with `trust` added), with 3-second access tokens.
async fn stack(
    receiver: &OtlpReceiver,
    trust: &str,
) -> (TestApp, VestibuleProcess, std::path::PathBuf) {
    let builder = TestApp::builder().access_token_ttl(3).extra_toml(&format!(
        "\n[traces]\notlp_endpoint = \"{}\"\nservice_name = \"vestibule-test\"\n{trust}",
        receiver.url
    ));
    binary_in_front(builder, |config| config).await
}

/// What the upstream received of one call.
struct UpstreamSaw {
    /// The call's request id (from its response).
    request_id: String,
    /// The upstream's `traceparent`.
    traceparent: String,
    /// The upstream's `baggage`, if any.
    baggage: Option<String>,
}

/// Logs `alice` in, waits until her access token is due, then makes one call with the
/// browser's own `traceparent` and `baggage`.
async fn one_refreshing_call(app: &TestApp, binary: &VestibuleProcess) -> UpstreamSaw {
    let alice = Browser::new(&binary.base);
    alice.login("alice").await;
    alice.wait_past_access_token_expiry().await;
    let response = alice
        .http()
        .get(format!("{}/api/orders/x", binary.base))
        .header("x-csrf", "1")
        .header(
            "traceparent",
            format!("00-{BROWSER_TRACE}-{BROWSER_SPAN}-01"),
        )
        .header("baggage", BROWSER_BAGGAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = app.upstream.seen();
    let headers = &seen.last().unwrap().headers;
    let text = |name: &str| Some(headers.get(name)?.to_str().unwrap().to_owned());
    UpstreamSaw {
        request_id,
        traceparent: text("traceparent").unwrap(),
        baggage: text("baggage"),
    }
}

/// Waits until the receiver holds the whole trace of the request `request_id` (down to the
/// refresh grant); its spans by name.
async fn trace_of(receiver: &OtlpReceiver, request_id: &str) -> HashMap<String, ReceivedSpan> {
    wait_for(
        "the proxied call's spans to be exported",
        std::time::Duration::from_secs(20),
        || async {
            let spans = receiver.spans();
            let request = spans.iter().find(|span| {
                span.name == "request"
                    && span.attributes.get("request_id").map(String::as_str) == Some(request_id)
            })?;
            let trace: HashMap<String, ReceivedSpan> = spans
                .iter()
                .filter(|span| span.trace_id == request.trace_id)
                .map(|span| (span.name.clone(), span.clone()))
                .collect();
            [
                "proxy",
                "refresh",
                "refresh_grant",
                "session_store",
                "upstream",
            ]
            .iter()
            .all(|name| trace.contains_key(*name))
            .then_some(trace)
        },
    )
    .await
}

/// `(trace id, parent id)` of a `traceparent` value.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_proxied_call_that_refreshes_is_one_span_tree_continued_by_the_upstream_and_the_provider()
{
    let receiver = OtlpReceiver::start().await;
    let (app, binary, dir) = stack(&receiver, TRUSTING_THE_SENDER).await;
    let saw = one_refreshing_call(&app, &binary).await;
    let trace = trace_of(&receiver, &saw.request_id).await;
    let span = |name: &str| &trace[name];
    let parent_of = |name: &str| span(name).parent_span_id.clone();

    // The trusted browser context is the parent; the tree below it is Vestibule's.
    assert_eq!(span("request").trace_id, BROWSER_TRACE);
    assert_eq!(parent_of("request"), BROWSER_SPAN);
    assert_eq!(span("request").service, "vestibule-test");
    assert_eq!(span("request").attributes["path"], "/api/orders/x");
    assert_eq!(parent_of("proxy"), span("request").span_id);
    assert_eq!(span("proxy").attributes["route"], "/api/orders");
    assert_eq!(parent_of("refresh"), span("proxy").span_id);
    assert_eq!(parent_of("refresh_grant"), span("refresh").span_id);
    assert_eq!(parent_of("session_store"), span("refresh").span_id);
    assert_eq!(parent_of("upstream"), span("proxy").span_id);
    let loads: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "session_load" && s.trace_id == BROWSER_TRACE)
        .collect();
    assert!(
        loads
            .iter()
            .any(|load| load.parent_span_id == span("proxy").span_id),
        "the session is loaded under the proxied call: {loads:?}"
    );

    // The login that came before is traced too: its start, and the callback with its code
    // exchange and the session it stored.
    let login_spans: HashMap<String, ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| {
            ["login", "callback", "code_exchange", "session_store"].contains(&s.name.as_str())
        })
        .filter(|s| s.trace_id != BROWSER_TRACE)
        .map(|s| (s.name.clone(), s))
        .collect();
    let login_span = |name: &str| {
        login_spans
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span: {login_spans:?}"))
    };
    assert_eq!(
        login_span("code_exchange").parent_span_id,
        login_span("callback").span_id
    );
    assert_eq!(
        login_span("session_store").parent_span_id,
        login_span("callback").span_id
    );
    assert!(!login_span("login").trace_id.is_empty());

    // The upstream continues the trace from the upstream span, with the trusted baggage.
    assert_eq!(
        parse_traceparent(&saw.traceparent),
        (BROWSER_TRACE.to_owned(), span("upstream").span_id.clone())
    );
    assert_eq!(saw.baggage.as_deref(), Some(BROWSER_BAGGAGE));
    // So does the provider, from the refresh grant.
    let stats: Value = app.provider.stats().await;
    let token_requests = stats["token_traceparents"].as_array().unwrap();
    let refresh_traceparent = token_requests.last().unwrap().as_str().unwrap();
    assert_eq!(
        parse_traceparent(refresh_traceparent),
        (
            BROWSER_TRACE.to_owned(),
            span("refresh_grant").span_id.clone()
        )
    );
    // And from the UserInfo call the refresh makes with its new access token.
    let userinfo_traceparent = app.provider.userinfo_traceparents().await.pop().flatten();
    assert_eq!(
        parse_traceparent(&userinfo_traceparent.expect("UserInfo got a traceparent")),
        (
            BROWSER_TRACE.to_owned(),
            span("refresh_grant").span_id.clone()
        )
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A browser's context, not trusted under `trust`, starts nothing and goes no further.
async fn a_browsers_context_is_ignored(trust: &str) {
    let receiver = OtlpReceiver::start().await;
    let (app, binary, dir) = stack(&receiver, trust).await;
    let saw = one_refreshing_call(&app, &binary).await;
    let trace = trace_of(&receiver, &saw.request_id).await;
    let request = &trace["request"];
    assert_ne!(
        request.trace_id, BROWSER_TRACE,
        "a trace of Vestibule's own"
    );
    assert_eq!(request.parent_span_id, "", "a root span");
    assert_eq!(
        parse_traceparent(&saw.traceparent),
        (request.trace_id.clone(), trace["upstream"].span_id.clone()),
        "the upstream continues Vestibule's trace, not the browser's"
    );
    assert_eq!(saw.baggage, None, "the browser's baggage went no further");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_untrusted_browser_traceparent_starts_nothing_and_goes_no_further() {
    a_browsers_context_is_ignored("").await;
}

#[tokio::test]
async fn with_trust_on_a_browser_that_is_not_the_trusted_proxy_still_starts_nothing() {
    a_browsers_context_is_ignored(TRUSTING_ANOTHER_PROXY).await;
}
