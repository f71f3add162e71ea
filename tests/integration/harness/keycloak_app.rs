//! Vestibule in front of the real Keycloak: its own Redis, the compose split (issuer on the
//! browser's name, discovery through the back channel), the realm's client and secret, and the
//! demo API behind compose's routes (`/api/demo`, the admin, step-up and live routes). It can be
//! restarted in place, as a deployment would be, and given more instances (same Redis, same
//! public URL, as behind a load balancer).

use super::compose::compose_env;
use super::keycloak::Keycloak;
use super::redis::RedisServer;
use super::relay::Relay;
use super::tls::make_p256_key;
use super::{Browser, ENCRYPTION_KEY, free_port, spawn_vestibule};

/// Where Vestibule publishes the public keys of its client assertions (`private_key_jwt`),
/// the URL a provider is given as the client's JWKS URL.
pub const CLIENT_JWKS_PATH: &str = "/.well-known/client-jwks.json";

/// One Vestibule deployment registered at the shared Keycloak.
pub struct KeycloakApp {
    /// Vestibule's public URL, `http://localhost:<port>` (same site as Keycloak, as in compose).
    pub url: String,
    /// The shared Keycloak.
    pub keycloak: &'static Keycloak,
    /// This deployment's Redis (stopped when the app is dropped).
    redis: RedisServer,
    /// This deployment's own way to Keycloak (its "service name"): every back-channel call
    /// it makes, and nothing else, passes here.
    pub back: Relay,
    config: String,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Instances started by [`KeycloakApp::start_another_instance`].
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl KeycloakApp {
    /// Starts Keycloak (once per process), Redis and Vestibule with `refresh_skew_secs`.
    pub async fn start(refresh_skew_secs: u64) -> Self {
        Self::start_with(refresh_skew_secs, false).await
    }

    /// [`KeycloakApp::start`] with a Keycloak client of its own whose back-channel logout URL
    /// is this Vestibule's `/api/auth/backchannel-logout`.
    pub async fn start_with_backchannel_logout(refresh_skew_secs: u64) -> Self {
        Self::start_with(refresh_skew_secs, true).await
    }

    async fn start_with(refresh_skew_secs: u64, own_client: bool) -> Self {
        let routes = demo_routes(&Keycloak::shared().demo_api_url);
        Self::start_with_routes(refresh_skew_secs, own_client, &routes).await
    }

    /// [`KeycloakApp::start`] (with its own client and back-channel logout URL when
    /// `own_client`) whose routes are `routes`, a TOML array of route tables (see
    /// [`demo_routes`]).
    pub async fn start_with_routes(refresh_skew_secs: u64, own_client: bool, routes: &str) -> Self {
        let keycloak = Keycloak::shared();
        let port = free_port();
        let url = format!("http://localhost:{port}");
        let (client_id, client_secret) = if own_client {
            keycloak
                .register_client_with_backchannel_logout(
                    &url,
                    &format!("http://127.0.0.1:{port}/api/auth/backchannel-logout"),
                )
                .await
        } else {
            keycloak.register_vestibule(&url).await;
            (keycloak.client_id.clone(), keycloak.client_secret.clone())
        };
        Self::start_at(
            port,
            (&client_id, &client_secret),
            refresh_skew_secs,
            routes,
        )
        .await
    }

    /// Starts Vestibule on `port` (public URL `http://localhost:<port>`) with a client already
    /// registered at Keycloak for that URL, and `routes`: either a TOML array of route tables
    /// (compose's `VESTIBULE_ROUTES`, see [`demo_routes`]) or `[[routes]]` tables, which come
    /// after the demo API's own route.
    pub async fn start_at(
        port: u16,
        (client_id, client_secret): (&str, &str),
        refresh_skew_secs: u64,
        routes: &str,
    ) -> Self {
        let credential = format!("client_secret = \"{client_secret}\"");
        Self::start_with_credential(port, client_id, &credential, refresh_skew_secs, routes).await
    }

    /// Starts Vestibule on `port` with a client that requires everything FAPI 2.0 asks for
    /// (see [`Keycloak::register_sender_constrained_client`]): no secret, an ES256 client
    /// assertion signed with a key made here (Keycloak fetches its public half from Vestibule's
    /// [`CLIENT_JWKS_PATH`]), PAR and DPoP required. `routes` as in [`KeycloakApp::start_at`].
    pub async fn start_sender_constrained(refresh_skew_secs: u64, routes: &str) -> Self {
        let keycloak = Keycloak::shared();
        let port = free_port();
        let url = format!("http://localhost:{port}");
        let jwks_url = format!("http://127.0.0.1:{port}{CLIENT_JWKS_PATH}");
        let client_id = keycloak
            .register_sender_constrained_client(&url, &jwks_url)
            .await;
        let dir = std::env::temp_dir().join(format!("vestibule-fapi-client-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = make_p256_key(&dir);
        let credential = format!(
            "client_auth_method = \"private_key_jwt\"\n\
             client_key_file = \"{}\"\n\
             par = \"required\"\n\
             dpop = \"required\"",
            key_file.display()
        );
        Self::start_with_credential(port, &client_id, &credential, refresh_skew_secs, routes).await
    }

    /// [`KeycloakApp::start_at`] for a client that authenticates with `credential`, the
    /// `[oidc]` lines in place of `client_secret` (`client_auth_method = "private_key_jwt"`
    /// and its keys, and whatever else it asks of Keycloak: `par`, `dpop`).
    pub async fn start_with_credential(
        port: u16,
        client_id: &str,
        credential: &str,
        refresh_skew_secs: u64,
        routes: &str,
    ) -> Self {
        let keycloak = Keycloak::shared();
        let redis = RedisServer::start().await;
        let back = Relay::start(keycloak.http_port).await;
        let url = format!("http://localhost:{port}");
        let (inline, tables) = if routes.trim_start().starts_with("[[routes]]") {
            let demo_api = &keycloak.demo_api_url;
            let demo = format!("[[routes]]\nprefix = \"/api/demo\"\nupstream = \"{demo_api}\"\n");
            (String::new(), format!("{demo}{routes}"))
        } else {
            (format!("routes = {routes}"), String::new())
        };
        let config = format!(
            r#"
listen = "127.0.0.1:{port}"
public_url = "{url}"
{inline}

[oidc]
issuer = "{issuer}"
discovery_url = "{discovery}"
client_id = "{client_id}"
{credential}
refresh_skew_secs = {refresh_skew_secs}
scopes = {scopes}

[session]
redis_url = "{redis}"
encryption_key = "{ENCRYPTION_KEY}"

[login]
rate_limit_burst = 10000

{tables}
"#,
            issuer = keycloak.issuer(),
            discovery = keycloak.discovery_url_via(&format!("http://127.0.0.1:{}", back.port)),
            client_id = client_id,
            // The scopes compose asks Keycloak for (online refresh tokens).
            scopes = compose_env("vestibule", "VESTIBULE_OIDC__SCOPES"),
            redis = redis.url(),
        );
        let task = spawn_vestibule(&config).await;
        Self {
            url,
            keycloak,
            redis,
            back,
            config,
            task: Some(task),
            others: Vec::new(),
        }
    }

    /// Starts one more Vestibule instance with the same configuration (same Redis, client and
    /// public URL, as behind a load balancer) and returns its base URL.
    pub async fn start_another_instance(&mut self) -> String {
        let port = free_port();
        let listen = self.url.replacen("http://localhost:", "127.0.0.1:", 1);
        let toml = self.config.replacen(
            &format!("listen = \"{listen}\""),
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
        assert_ne!(toml, self.config, "the config names where it listens");
        self.others.push(spawn_vestibule(&toml).await);
        format!("http://127.0.0.1:{port}")
    }

    /// This deployment's Redis.
    pub fn redis(&self) -> &RedisServer {
        &self.redis
    }

    /// How many times this deployment fetched the discovery document.
    pub fn discoveries(&self) -> usize {
        self.back.requests_to(&format!(
            "/realms/{}/.well-known/openid-configuration",
            self.keycloak.realm
        ))
    }

    /// A new browser (own cookie jar) pointed at this Vestibule.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// Stops this Vestibule and starts it again with the same configuration and Redis.
    pub async fn restart(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.task = Some(spawn_vestibule(&self.config).await);
    }
}

/// The routes compose gives Vestibule (`VESTIBULE_ROUTES`, a TOML array of route tables), with
/// the demo API's service name replaced by `demo_api_url`: the tests run the demo's routes as
/// shipped.
pub fn demo_routes(demo_api_url: &str) -> String {
    let routes = compose_env("vestibule", "VESTIBULE_ROUTES");
    let service = compose_env("demo-api", "PORT");
    let name = format!("http://demo-api:{service}");
    assert!(
        routes.contains(&name),
        "compose's routes go to the demo API at {name}: {routes}"
    );
    routes.replace(&name, demo_api_url)
}

impl Drop for KeycloakApp {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        for task in &self.others {
            task.abort();
        }
    }
}
