//! The local stack's description (`dev/stack.json`): the client, secrets and provider defaults
//! that the benchmark, `dev/run` and the test provider itself read too. The harness overrides
//! only what a scenario needs (ports, redirect URIs, lifetimes); it never restates a shared fact.

use std::sync::LazyLock;

use serde::Deserialize;

/// The parts of `dev/stack.json` the harness uses.
#[derive(Deserialize)]
pub struct Stack {
    /// The test provider's defaults.
    pub provider: ProviderFacts,
    /// What a driver types into the provider's login form.
    pub users: Users,
    /// Vestibule's fixed names.
    pub vestibule: VestibuleFacts,
}

/// Names Vestibule fixes (paths, cookies).
#[derive(Deserialize)]
pub struct VestibuleFacts {
    /// Where the provider sends the browser back.
    pub callback_path: String,
}

/// The provider's dev login takes any name (it becomes `sub`) and ignores the password.
#[derive(Deserialize)]
pub struct Users {
    /// The password typed (any will do).
    pub password: String,
}

/// The test provider's registered clients and defaults.
#[derive(Deserialize)]
pub struct ProviderFacts {
    /// The confidential client (Vestibule).
    pub client_id: String,
    /// Its secret (long enough to key HS256 ID tokens).
    pub client_secret: String,
    /// How it authenticates at the token endpoint.
    pub token_auth_method: String,
    /// The ID-token signing algorithm.
    pub id_token_alg: String,
    /// The upstream API's introspection client.
    pub upstream_client_id: String,
    /// Its secret.
    pub upstream_client_secret: String,
}

/// The description, read once (it is compiled in, so a test never depends on the working directory).
pub static STACK: LazyLock<Stack> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../../dev/stack.json"))
        .expect("dev/stack.json describes the local stack")
});
