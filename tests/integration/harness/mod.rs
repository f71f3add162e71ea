//! Test harness: a real Redis, a real OpenID Provider, a real upstream API and Vestibule,
//! each on a free loopback port, started per test.

pub mod binary;
pub mod browser;
pub mod compose;
pub mod dpop_upstream;
pub mod keycloak;
pub mod keycloak_app;
pub mod load;
pub mod logs;
pub mod nginx;
pub mod otlp;
pub mod provider;
pub mod provider_front;
pub mod provider_grants;
pub mod raw_http;
pub mod redis;
pub mod redis_topologies;
pub mod relay;
pub mod stack;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::{Format, Toml};
use vestibule::app::Application;
use vestibule::config::Settings;

pub use browser::Browser;
pub use keycloak_app::KeycloakApp;
pub use provider::{ProviderOptions, TestProvider};
pub use redis::RedisServer;
pub use upstream::Upstream;

/// The encryption key every test instance uses (32 random bytes, base64).
pub const ENCRYPTION_KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

/// A free TCP port on 127.0.0.1, checked by binding it.
///
/// Ports come from below Linux's ephemeral range (32768 and up), so no outgoing connection
/// can be given one between this call and the server binding it, and each call in this
/// process gets a different one, so parallel tests cannot be handed the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(FIRST + offset).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    );
}

/// Polls `probe` until it yields `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `tests/<folder>`, the home of a pinned Node package set.
pub fn node_project(folder: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder)
}

/// Runs `npm ci` in `tests/<folder>` unless `package` is already installed there. Callers
/// guard it with a `OnceLock` so one test binary installs each folder at most once.
pub fn npm_ci_unless_installed(folder: &str, package: &str) {
    let dir = node_project(folder);
    if dir
        .join("node_modules")
        .join(package)
        .join("package.json")
        .is_file()
    {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .expect("npm must be installed (Node 20 + npm)");
    assert!(status.success(), "npm ci in tests/{folder} failed");
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    vestibule::clock::unix_now()
}

/// Waits until the current unix second is over, so that what happens next is stamped later
/// than anything before it (Vestibule compares ID tokens and ends to the second).
pub async fn wait_for_the_next_second() {
    let second = unix_now();
    wait_for("the next second", Duration::from_secs(2), || async {
        (unix_now() > second).then_some(())
    })
    .await;
}

/// How a test wants its stack.
pub struct TestAppBuilder {
    provider: ProviderOptions,
    use_redis: bool,
    refresh_skew_secs: u64,
    idle_timeout_secs: u64,
    absolute_timeout_secs: u64,
    login_toml: String,
    extra_toml: String,
    redis_acl_user: Option<(String, String)>,
    redis_tls: bool,
    public_port: Option<u16>,
    external_redis: Option<String>,
    session_toml: String,
    oidc_toml: String,
    issuer_path: String,
    second_provider: bool,
    client_keys: Option<String>,
}

/// Everything a scenario talks to.
pub struct TestApp {
    /// Vestibule's base URL (its `public_url`).
    pub url: String,
    /// The Redis server (absent for the in-memory store).
    pub redis: Option<RedisServer>,
    /// The OpenID Provider.
    pub provider: TestProvider,
    /// The upstream API behind `/api/orders`.
    pub upstream: Upstream,
    /// With [`TestAppBuilder::second_provider`]: the provider `partners` (another issuer, its
    /// own keys), listed after [`TestApp::provider`] as `staff`.
    pub second_provider: Option<TestProvider>,
    /// With [`TestAppBuilder::second_provider`]: the upstream behind `/api/partners`, which
    /// introspects tokens at the second provider.
    pub second_upstream: Option<Upstream>,
    config: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where this scenario's part of the captured log begins.
    log_from: usize,
}

impl TestApp {
    /// A builder with defaults: Redis store, long-lived access tokens.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            provider: ProviderOptions::default(),
            use_redis: true,
            refresh_skew_secs: 1,
            idle_timeout_secs: 600,
            absolute_timeout_secs: 3600,
            // Tests log in many times from one address; the limits have tests of their own.
            login_toml: "rate_limit_burst = 10000\n".to_owned(),
            extra_toml: String::new(),
            redis_acl_user: None,
            redis_tls: false,
            public_port: None,
            external_redis: None,
            session_toml: String::new(),
            oidc_toml: String::new(),
            issuer_path: String::new(),
            second_provider: false,
            client_keys: None,
        }
    }

    /// The default stack.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A new browser (own cookie jar) pointed at this app.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// Starts one more Vestibule instance with the same configuration (same Redis, provider and
    /// public URL, as behind a load balancer) and returns its base URL.
    pub async fn start_another_instance(&mut self) -> String {
        let port = free_port();
        let toml = self.config_listening_on(port);
        self.tasks.push(spawn_vestibule(&toml).await);
        format!("http://127.0.0.1:{port}")
    }

    /// This app's configuration (TOML) with `listen` moved to 127.0.0.1:`port`: another
    /// instance of the same deployment (in process, or the real binary).
    pub fn config_listening_on(&self, port: u16) -> String {
        let listen = self.url.trim_start_matches("http://");
        self.config.replacen(
            &format!("listen = \"{listen}\""),
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        )
    }

    /// Builds (without serving) a Vestibule from this app's configuration with `from`
    /// replaced by `to`, to see whether it starts.
    pub async fn build_with(&self, from: &str, to: &str) -> anyhow::Result<Application> {
        assert!(self.config.contains(from), "the config has no {from:?}");
        let toml = self.config.replacen(from, to, 1);
        let settings = Settings::from_figment(Figment::new().merge(Toml::string(&toml)))
            .unwrap_or_else(|error| panic!("test config invalid: {error}\n{toml}"));
        Application::build(settings).await
    }

    /// The Redis server; panics for in-memory apps.
    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("this app uses Redis")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if std::thread::panicking() {
            return;
        }
        let mut secrets = self.provider.issued_secrets();
        if let Some(second) = &self.second_provider {
            secrets.extend(second.issued_secrets());
        }
        secrets.extend([
            provider::client_secret().to_owned(),
            ENCRYPTION_KEY.to_owned(),
        ]);
        logs::assert_no_secrets(&logs::since(self.log_from), &secrets, "vestibule's log");
    }
}

impl TestAppBuilder {
    /// Access-token lifetime at the provider.
    pub fn access_token_ttl(mut self, secs: u64) -> Self {
        self.provider.access_token_ttl = secs;
        self
    }

    /// Changes the provider's options (lifetimes of resource, exchanged and client tokens,
    /// refresh-token rotation: see [`ProviderOptions`]).
    pub fn provider_options(mut self, change: impl FnOnce(&mut ProviderOptions)) -> Self {
        change(&mut self.provider);
        self
    }

    /// Token endpoint authentication method registered at the provider.
    pub fn auth_method(mut self, method: &'static str) -> Self {
        self.provider.auth_method = method;
        self
    }

    /// ID-token signing algorithm of the provider.
    pub fn id_token_alg(mut self, alg: &'static str) -> Self {
        self.provider.id_token_alg = alg;
        self
    }

    /// Makes the provider list `algs` (comma-separated) as supported for ID tokens too, with a
    /// key for each asymmetric one, while it signs the vestibule client's tokens as before.
    pub fn provider_also_supports(mut self, algs: &'static str) -> Self {
        self.provider.extra_id_token_algs = algs;
        self
    }

    /// The provider's UserInfo: `"signed"` (a signed JWT), `"absent"` (not in discovery).
    pub fn provider_userinfo(mut self, userinfo: &'static str) -> Self {
        self.provider.userinfo = userinfo;
        self
    }

    /// More `[oidc]` settings (TOML lines).
    pub fn oidc_toml(mut self, toml: &str) -> Self {
        self.oidc_toml.push_str(toml);
        self
    }

    /// Configures `oidc.issuer` as the provider's issuer + `path` (discovery still at the
    /// provider's own well-known URL): the URL one discovers a multi-tenant provider through,
    /// e.g. `/organizations/v2.0` (see [`ProviderOptions::tenant`]).
    pub fn issuer_path(mut self, path: &str) -> Self {
        self.issuer_path = path.to_owned();
        self
    }

    /// Puts the provider on another site (`localhost`) than Vestibule (`127.0.0.1`), so a
    /// browser treats its redirects as cross-site.
    pub fn provider_on_another_site(mut self) -> Self {
        self.provider.issuer_host = "localhost";
        self
    }

    /// Use the in-memory store instead of Redis.
    pub fn in_memory(mut self) -> Self {
        self.use_redis = false;
        self
    }

    /// `oidc.refresh_skew_secs`.
    pub fn refresh_skew(mut self, secs: u64) -> Self {
        self.refresh_skew_secs = secs;
        self
    }

    /// `session.idle_timeout_secs`.
    pub fn idle_timeout(mut self, secs: u64) -> Self {
        self.idle_timeout_secs = secs;
        self
    }

    /// `session.absolute_timeout_secs` (default 3600).
    pub fn absolute_timeout(mut self, secs: u64) -> Self {
        self.absolute_timeout_secs = secs;
        self
    }

    /// The `[login]` section (replacing the harness's generous rate limit).
    pub fn login_settings(mut self, toml: &str) -> Self {
        self.login_toml = toml.to_owned();
        self
    }

    /// Vestibule connects to Redis as the ACL user `user`, with `password` read from a file
    /// (`session.redis_password_file`).
    pub fn redis_acl_user(mut self, user: &str, password: &str) -> Self {
        self.redis_acl_user = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The browser reaches Vestibule at `http://127.0.0.1:<port>` (a load balancer there),
    /// not at the instance's own address: `public_url` and the registered redirect URI.
    pub fn public_port(mut self, port: u16) -> Self {
        self.public_port = Some(port);
        self
    }

    /// Redis over TLS only, with a CA made by the test and a client certificate required.
    pub fn redis_tls(mut self) -> Self {
        self.redis_tls = true;
        self
    }

    /// Sessions in a Redis deployment the test started itself (a Sentinel group, a Cluster),
    /// named by `session.redis_url`, instead of a server of the app's own.
    pub fn external_redis(mut self, url: &str) -> Self {
        self.external_redis = Some(url.to_owned());
        self
    }

    /// More `[session]` settings (TOML lines).
    pub fn session_toml(mut self, toml: &str) -> Self {
        self.session_toml.push_str(toml);
        self
    }

    /// Two providers, as `[[providers]]`: the usual one as `staff` ("Staff", first) and a
    /// second oidc-provider as `partners` ("Partners"), with the same options, users and
    /// client registration but its own issuer and signing keys; `/api/partners` goes to an
    /// upstream that introspects at the second.
    pub fn second_provider(mut self) -> Self {
        self.second_provider = true;
        self
    }

    /// The client authenticates with `private_key_jwt` and no secret: the provider registers
    /// it with Vestibule's client key set as its `jwks_uri`, and `[oidc]` gets
    /// `client_auth_method = "private_key_jwt"` and `keys` (`client_keys = […]` or
    /// `client_key_file = …`) in place of `client_secret`.
    pub fn private_key_jwt(mut self, keys: &str) -> Self {
        self.provider.auth_method = "private_key_jwt";
        self.client_keys = Some(keys.to_owned());
        self
    }

    /// Extra TOML appended to the config (e.g. more routes).
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self
    }

    /// Starts Redis, the provider, the upstream and Vestibule.
    pub async fn start(self) -> TestApp {
        logs::capture();
        let log_from = logs::position();
        let redis = match (self.use_redis, self.redis_tls) {
            _ if self.external_redis.is_some() => None,
            (false, _) => None,
            (true, false) => Some(RedisServer::start().await),
            (true, true) => Some(RedisServer::start_tls().await),
        };
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let public_url = self.public_port.map_or_else(
            || url.clone(),
            |public| format!("http://127.0.0.1:{public}"),
        );
        let provider = TestProvider::start(
            &format!("{public_url}/api/auth/callback"),
            &format!("{public_url}/api/auth/logout-callback"),
            &self.provider,
        );
        let upstream = Upstream::start(&provider.issuer).await;
        let second = if self.second_provider {
            let second = TestProvider::start(
                &format!("{public_url}/api/auth/callback"),
                &format!("{public_url}/api/auth/logout-callback"),
                &self.provider,
            );
            let upstream = Upstream::start(&second.issuer).await;
            Some((second, upstream))
        } else {
            None
        };
        let mut redis_line = redis
            .as_ref()
            .map(RedisServer::url)
            .or(self.external_redis)
            .map(|url| format!("redis_url = \"{url}\"\n"))
            .unwrap_or_default();
        if let (Some(redis), Some((user, password))) = (&redis, &self.redis_acl_user) {
            redis.add_acl_user(user, password).await;
            let password_file = redis.dir().join(format!("{user}.password"));
            std::fs::write(&password_file, format!("{password}\n")).unwrap();
            redis_line = format!(
                "redis_url = \"{}\"\nredis_password_file = \"{}\"\n",
                redis.url().replacen("://", &format!("://{user}@"), 1),
                password_file.display()
            );
        }
        redis_line.push_str(&self.session_toml);
        if let Some(files) = redis.as_ref().and_then(RedisServer::tls_files) {
            redis_line.push_str(&format!(
                "redis_ca_file = \"{}\"\nredis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"\n",
                files.ca.display(),
                files.client.0.display(),
                files.client.1.display()
            ));
        }
        let toml = format!(
            r#"
listen = "127.0.0.1:{port}"
public_url = "{public_url}"

[oidc]
issuer = "{issuer}{issuer_path}"
{discovery}client_id = "{client_id}"
{client_credential}
refresh_skew_secs = {skew}
{oidc}
[session]
{redis_line}encryption_key = "{key}"
idle_timeout_secs = {idle}
absolute_timeout_secs = {absolute}

[login]
{login}
[[routes]]
prefix = "/api/orders"
upstream = "{upstream}"
timeout_secs = 2
{extra}
"#,
            issuer = provider.issuer,
            issuer_path = self.issuer_path,
            discovery = if self.issuer_path.is_empty() {
                String::new()
            } else {
                format!(
                    "discovery_url = \"{}/.well-known/openid-configuration\"\n",
                    provider.issuer
                )
            },
            client_id = provider::client_id(),
            client_credential = match &self.client_keys {
                None => format!("client_secret = \"{}\"", provider::client_secret()),
                Some(keys) => format!("client_auth_method = \"private_key_jwt\"\n{keys}"),
            },
            skew = self.refresh_skew_secs,
            oidc = self.oidc_toml,
            idle = self.idle_timeout_secs,
            absolute = self.absolute_timeout_secs,
            key = ENCRYPTION_KEY,
            upstream = upstream.base_url,
            login = self.login_toml,
            // Further routes may name the test upstream as `{upstream}`.
            extra = self.extra_toml.replace("{upstream}", &upstream.base_url),
        );
        let toml = match &second {
            None => toml,
            Some((second, second_upstream)) => two_providers(&toml, second, second_upstream),
        };
        let task = spawn_vestibule(&toml).await;
        let (second_provider, second_upstream) = second.unzip();
        TestApp {
            url,
            redis,
            provider,
            upstream,
            second_provider,
            second_upstream,
            config: toml,
            tasks: vec![task],
            log_from,
        }
    }
}

/// `toml` (with one `[oidc]`) with its provider listed as `[[providers]]` entry `staff` and
/// `second` after it as `partners` (same `[oidc]` lines otherwise), and the route
/// `/api/partners` to `second_upstream`.
pub fn two_providers(toml: &str, second: &TestProvider, second_upstream: &Upstream) -> String {
    let start = toml.find("[oidc]\n").unwrap();
    let end = toml.find("[session]").unwrap();
    let oidc = &toml[start + "[oidc]\n".len()..end];
    let first_issuer = oidc.lines().next().unwrap();
    let partners = oidc.replacen(first_issuer, &format!("issuer = \"{}\"", second.issuer), 1);
    format!(
        "{}[[providers]]\nid = \"staff\"\nname = \"Staff\"\n{oidc}\n[[providers]]\n\
         id = \"partners\"\nname = \"Partners\"\n{partners}\n{}\n[[routes]]\n\
         prefix = \"/api/partners\"\nupstream = \"{}\"\ntimeout_secs = 2\n",
        &toml[..start],
        &toml[end..],
        second_upstream.base_url
    )
}

/// Builds Vestibule from a TOML configuration and serves it in the background.
pub async fn spawn_vestibule(toml: &str) -> tokio::task::JoinHandle<()> {
    logs::capture();
    let settings = Settings::from_figment(Figment::new().merge(Toml::string(toml)))
        .unwrap_or_else(|error| panic!("test config invalid: {error}\n{toml}"));
    let app = Application::build(settings)
        .await
        .expect("vestibule builds");
    tokio::spawn(async move {
        app.run_until_stopped().await.unwrap();
    })
}
