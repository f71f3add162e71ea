//! A provider on a private CA (`oidc.ca_file`): the real provider behind nginx terminating TLS
//! with a certificate from a CA the test made. With the CA configured every provider call
//! (discovery, JWKS, token) succeeds and a login completes; without it the same deployment
//! refuses the provider's certificate and says the provider is unavailable.

use reqwest::StatusCode;

use crate::harness::nginx::Nginx;
use crate::harness::tls::make_certificates;
use crate::harness::{
    Browser, ENCRYPTION_KEY, ProviderOptions, TestProvider, free_port, provider, spawn_vestibule,
};

/// A Vestibule on `port` for the provider at `issuer`, trusting `ca_file` when given.
fn config(port: u16, issuer: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca_line = ca_file
        .map(|path| format!("ca_file = \"{}\"\n", path.display()))
        .unwrap_or_default();
    format!(
        "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\n\
         client_secret = \"{client_secret}\"\n{ca_line}\n\
         [session]\nencryption_key = \"{ENCRYPTION_KEY}\"\n",
        client_id = provider::client_id(),
        client_secret = provider::client_secret(),
    )
}

#[tokio::test]
async fn a_provider_on_a_private_ca_is_reached_through_oidc_ca_file_and_not_without_it() {
    let dir = std::env::temp_dir().join(format!("vestibule-provider-ca-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = make_certificates(&dir);
    let ca_pem = std::fs::read(&files.ca).unwrap();

    let (front_port, port) = (free_port(), free_port());
    let issuer = format!("https://localhost:{front_port}");
    let base = format!("http://127.0.0.1:{port}");
    let provider = TestProvider::start(
        &format!("{base}/api/auth/callback"),
        &format!("{base}/"),
        &ProviderOptions {
            issuer_behind_front: Some(issuer.clone()),
            ..ProviderOptions::default()
        },
    );
    assert_eq!(provider.issuer, issuer);
    let _front =
        Nginx::tls_front(front_port, provider.port, &files.server.0, &files.server.1).await;

    let _trusting = spawn_vestibule(&config(port, &issuer, Some(&files.ca))).await;
    let browser = Browser::trusting(&base, &ca_pem);
    browser.login("alice").await;
    let (status, user) = browser.user().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["sub"], "alice");
    assert_eq!(user["claims"]["iss"], issuer.as_str());

    // The same deployment without the CA: the public roots do not include it.
    let other_port = free_port();
    let _untrusting = spawn_vestibule(&config(other_port, &issuer, None)).await;
    let response = Browser::trusting(&format!("http://127.0.0.1:{other_port}"), &ca_pem)
        .get(&format!("http://127.0.0.1:{other_port}/api/auth/login"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "without oidc.ca_file the provider's certificate is not trusted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
