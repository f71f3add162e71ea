//! A scripted browser: its own cookie jar, no automatic redirects, and the ability to fill
//! and submit the provider's HTML forms, as a person would.

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::{Response, StatusCode, Url};
use scraper::{Html, Selector};
use serde_json::Value;

use super::stack::STACK;

/// No test request may take longer: a hung server fails the test with a message instead of
/// stalling the whole run.
const REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A kept-alive connection idle this long is not reused, as a browser would not reuse it: it
/// is below the test provider's keep-alive (Node's 5 s) and Vestibule's (75 s), so a request
/// never meets a connection the server is closing at that instant (a race real browsers
/// answer by retrying, which this client does not do).
const IDLE_CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// Where a login attempt ended.
pub struct LoginOutcome {
    /// The last response (Vestibule's redirect to `returnTo`, or an error page).
    pub response: Response,
}

/// One browser profile.
#[derive(Clone)]
pub struct Browser {
    base: Url,
    jar: Arc<RecordingJar>,
    http: reqwest::Client,
    bare: reqwest::Client,
}

impl Browser {
    /// A browser with an empty cookie jar.
    pub fn new(base: &str) -> Self {
        Self::build(base, None, None)
    }

    /// A browser with an empty cookie jar that sends `user_agent` on every request.
    pub fn with_user_agent(base: &str, user_agent: &str) -> Self {
        Self::build(base, Some(user_agent), None)
    }

    /// A browser with an empty cookie jar whose trust store also holds the CA in `ca_pem`
    /// (a provider on a private CA, trusted by the organisation's browsers).
    pub fn trusting(base: &str, ca_pem: &[u8]) -> Self {
        Self::build(base, None, Some(ca_pem))
    }

    fn build(base: &str, user_agent: Option<&str>, ca_pem: Option<&[u8]>) -> Self {
        let jar = Arc::new(RecordingJar::default());
        let mut http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(IDLE_CONNECTION_LIMIT)
            .timeout(REQUEST_LIMIT);
        if let Some(user_agent) = user_agent {
            http = http.user_agent(user_agent);
        }
        if let Some(pem) = ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
        }
        let http = http.build().unwrap();
        let bare = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(IDLE_CONNECTION_LIMIT)
            .timeout(REQUEST_LIMIT)
            .build()
            .unwrap();
        Self {
            base: Url::parse(base).unwrap(),
            jar,
            http,
            bare,
        }
    }

    /// A browser at `base` holding the session cookie `session` (the same browser reaching
    /// another door: another instance, or the balancer).
    pub fn with_session(base: &str, session: &str) -> Self {
        let browser = Self::new(base);
        browser.set_cookie("vestibule", session);
        browser
    }

    /// The underlying HTTP client (cookies included, redirects not followed).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Absolute URL for a path on Vestibule.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap()
    }

    /// Raw `Cookie` header this browser would send to Vestibule.
    pub fn cookie_header(&self) -> String {
        self.jar
            .cookies(&self.base)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The value of one of Vestibule's cookies.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_header().split("; ").find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| v.to_owned())
        })
    }

    /// Replaces a cookie's value (to simulate tampering or another browser's cookie).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .add_cookie_str(&format!("{name}={value}; Path=/"), &self.base);
    }

    /// A GET without following redirects.
    pub async fn get(&self, url: impl AsRef<str>) -> Response {
        self.http
            .get(self.resolve(url.as_ref()))
            .send()
            .await
            .unwrap()
    }

    /// An API call as a SPA makes it: `X-CSRF: 1`.
    pub async fn api_get(&self, path: &str) -> Response {
        self.api_call(reqwest::Method::GET, path).await
    }

    /// An API DELETE as a SPA makes it: `X-CSRF: 1`.
    pub async fn api_delete(&self, path: &str) -> Response {
        self.api_call(reqwest::Method::DELETE, path).await
    }

    /// An API call with `method` as a SPA makes it: `X-CSRF: 1`.
    pub async fn api_call(&self, method: reqwest::Method, path: &str) -> Response {
        self.http
            .request(method, self.url(path))
            .header("x-csrf", "1")
            .send()
            .await
            .unwrap()
    }

    /// An API GET with the path sent byte for byte (HTTP clients normalise `%2e%2e` away).
    pub async fn raw_api_get(&self, raw_path: &str) -> u16 {
        self.raw_request(raw_path, "X-CSRF: 1\r\n").await.0
    }

    /// A navigation GET with the path sent byte for byte: (status, body).
    pub async fn raw_get(&self, raw_path: &str) -> (u16, String) {
        self.raw_request(raw_path, "").await
    }

    async fn raw_request(&self, raw_path: &str, extra_headers: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = format!(
            "{}:{}",
            self.base.host_str().unwrap(),
            self.base.port().unwrap()
        );
        let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!(
            "GET {raw_path} HTTP/1.1\r\nHost: {host}\r\nCookie: {}\r\n{extra_headers}Connection: close\r\n\r\n",
            self.cookie_header()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// A GET with exactly this `Cookie` header (raw bytes, not from the jar, e.g. a name or
    /// value a cookie jar would refuse), as an API call (`X-CSRF: 1`) or a navigation.
    pub async fn get_with_cookie_header(&self, path: &str, cookie: &[u8], api: bool) -> Response {
        let mut request = self.bare.get(self.resolve(path)).header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(cookie).unwrap(),
        );
        if api {
            request = request.header("x-csrf", "1");
        }
        request.send().await.unwrap()
    }

    /// `GET /api/auth/user` as JSON (status, body).
    pub async fn user(&self) -> (StatusCode, Value) {
        let response = self.api_get("/api/auth/user").await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits (by polling the clock) until this session's access token has expired.
    pub async fn wait_past_access_token_expiry(&self) {
        let (_, user) = self.user().await;
        let expires_at = user["session"]["access_token_expires_at"]
            .as_u64()
            .expect("access token expiry");
        super::wait_for(
            "the access token to expire",
            std::time::Duration::from_secs(30),
            || async move { (super::unix_now() > expires_at).then_some(()) },
        )
        .await;
    }

    /// `POST /api/auth/logout` with the anti-forgery header.
    pub async fn logout(&self) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/api/auth/logout"))
            .header("x-csrf", "1")
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn resolve(&self, url: &str) -> Url {
        self.base.join(url).unwrap()
    }

    /// Visits the callback with a state no login issued (a forged or replayed answer).
    pub async fn forged_callback(&self) -> Response {
        self.get(
            self.url("/api/auth/callback?state=forged-state&code=x")
                .as_str(),
        )
        .await
    }

    /// Starts a login and returns the provider URL Vestibule redirected to.
    pub async fn begin_login(&self, return_to: Option<&str>) -> Url {
        let mut url = self.url("/api/auth/login");
        if let Some(r) = return_to {
            url.query_pairs_mut().append_pair("returnTo", r);
        }
        self.begin_login_at(url.as_str()).await
    }

    /// Starts a login at `login_url` (a path with its query, such as a `step_up_required`
    /// answer's `login_url`) and returns the provider URL Vestibule redirected to.
    pub async fn begin_login_at(&self, login_url: &str) -> Url {
        let url = self.resolve(login_url);
        let response = self.get(url.as_str()).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "login redirects to the provider"
        );
        location(&response, &url)
    }

    /// Drives the provider from its authorization URL: fills the login form with `user`,
    /// accepts consent, and stops at the first response from Vestibule (the callback).
    /// Returns the callback URL the provider redirected to (not yet visited).
    pub async fn authorize_at_provider(&self, authorization_url: Url, user: &str) -> Url {
        self.authorize_with_password(authorization_url, user, &STACK.users.password)
            .await
    }

    /// [`Browser::authorize_at_provider`] with the user's own password (a real provider's
    /// users have one: Keycloak's realm).
    pub async fn authorize_with_password(
        &self,
        authorization_url: Url,
        user: &str,
        password: &str,
    ) -> Url {
        // Back at Vestibule: this instance, or the public URL's when the login started at
        // another instance of the deployment (the callback is registered there).
        let back = |url: &Url| {
            url.origin() == self.base.origin() || url.path() == STACK.vestibule.callback_path
        };
        self.through_provider_pages(authorization_url, (user, password), 20, back)
            .await
            .unwrap_or_else(|| panic!("the provider did not redirect back to Vestibule"))
    }

    /// Follows the provider's redirects from `start` and submits its forms (with
    /// `credentials` where they ask for them), at most `steps` pages, until a URL is `back`;
    /// returns it, not yet visited (`None`: never back).
    async fn through_provider_pages(
        &self,
        start: Url,
        credentials: (&str, &str),
        steps: usize,
        back: impl Fn(&Url) -> bool,
    ) -> Option<Url> {
        self.walk_provider_pages(start, credentials, steps, back, &mut Vec::new())
            .await
    }

    /// [`Browser::authorize_with_password`] that also returns every page the provider showed
    /// (the HTML of each form it filled), so a test can tell which prompts were asked.
    pub async fn authorize_with_password_seeing_pages(
        &self,
        authorization_url: Url,
        user: &str,
        password: &str,
    ) -> (Url, Vec<String>) {
        let back = |url: &Url| {
            url.origin() == self.base.origin() || url.path() == STACK.vestibule.callback_path
        };
        let mut pages = Vec::new();
        let callback = self
            .walk_provider_pages(authorization_url, (user, password), 20, back, &mut pages)
            .await
            .unwrap_or_else(|| panic!("the provider did not redirect back to Vestibule"));
        (callback, pages)
    }

    /// [`Browser::through_provider_pages`], keeping the HTML of each page it filled in `pages`.
    async fn walk_provider_pages(
        &self,
        start: Url,
        (user, password): (&str, &str),
        steps: usize,
        back: impl Fn(&Url) -> bool,
        pages: &mut Vec<String>,
    ) -> Option<Url> {
        let mut next = start;
        for _ in 0..steps {
            if back(&next) {
                return Some(next);
            }
            let response = self.get(next.as_str()).await;
            if response.status().is_redirection() {
                next = location(&response, &next);
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK, "provider page at {next}");
            let page_url = next.clone();
            let html = response.text().await.unwrap();
            next = self.submit_form(&page_url, &html, user, password).await;
            pages.push(html);
        }
        None
    }

    /// Signs in to the test provider's second client ("portal") in this browser's provider
    /// session, as that application would: its own authorization request (with PKCE), stopped
    /// at its redirect URI with a code it never redeems.
    pub async fn authorize_portal(&self, issuer: &str, user: &str) {
        use base64::Engine;
        use sha2::Digest;
        let origin = self.base.origin().ascii_serialization();
        let (client_id, redirect_uri) = super::provider::portal_client(&origin);
        let verifier = "portal-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut url = Url::parse(&format!("{issuer}/auth")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", "portal-state")
            .append_pair("nonce", "portal-nonce")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let back = self.authorize_at_provider(url, user).await;
        assert!(
            back.as_str().starts_with(&redirect_uri)
                && back.query().unwrap_or("").contains("code="),
            "the portal got a code: {back}"
        );
    }

    /// RP-initiated logout of `client_id` at the test provider, confirmed on its page: the
    /// provider ends its session and, before it answers, posts back-channel logout tokens to
    /// every client of that session.
    pub async fn logout_at_provider(&self, issuer: &str, client_id: &str) {
        let page_url = Url::parse(&format!("{issuer}/session/end?client_id={client_id}")).unwrap();
        let response = self.get(page_url.as_str()).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the provider's logout page"
        );
        let html = response.text().await.unwrap();
        let mut next = self.submit_form(&page_url, &html, "", "").await;
        for _ in 0..5 {
            let response = self.get(next.as_str()).await;
            if !response.status().is_redirection() {
                assert_eq!(
                    response.status(),
                    StatusCode::OK,
                    "after the provider's logout"
                );
                return;
            }
            next = location(&response, &next);
        }
        panic!("the provider's logout kept redirecting");
    }

    /// Follows an end-session URL Vestibule handed out (RP-initiated logout), confirms the
    /// logout on the provider's page, and stops at the provider's redirect back to Vestibule:
    /// that URL (its `post_logout_redirect_uri` with the `state`), not yet visited.
    pub async fn end_session_at_provider(&self, end_session_url: &str) -> Url {
        let start = Url::parse(end_session_url).unwrap();
        let back = |url: &Url| url.origin() == self.base.origin();
        self.through_provider_pages(start, ("", ""), 6, back)
            .await
            .unwrap_or_else(|| {
                panic!("the provider did not redirect back to Vestibule after its logout")
            })
    }

    /// Submits the first form on a provider page, filling the login name (`login` at the test
    /// provider, `username` at Keycloak) and `password` if present.
    async fn submit_form(&self, page_url: &Url, html: &str, user: &str, password: &str) -> Url {
        let (action, method, fields) = {
            let document = Html::parse_document(html);
            let form = document
                .select(&Selector::parse("form").unwrap())
                .next()
                .unwrap_or_else(|| panic!("no form on provider page {page_url}: {html}"));
            let action = page_url
                .join(form.value().attr("action").unwrap_or(""))
                .unwrap();
            let method = form
                .value()
                .attr("method")
                .unwrap_or("get")
                .to_ascii_lowercase();
            let mut fields = Vec::new();
            for input in form.select(&Selector::parse("input[name]").unwrap()) {
                let name = input.value().attr("name").unwrap().to_owned();
                let value = match name.as_str() {
                    "login" | "username" => user.to_owned(),
                    "password" => password.to_owned(),
                    _ => input.value().attr("value").unwrap_or("").to_owned(),
                };
                fields.push((name, value));
            }
            (action, method, fields)
        };
        let request = if method == "post" {
            self.http.post(action.clone()).form(&fields)
        } else {
            self.http.get(action.clone()).query(&fields)
        };
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "form submission at {action} answered {}",
            response.status()
        );
        location(&response, &action)
    }

    /// Follows the provider's redirects from `authorization_url` without submitting anything
    /// (a silent check, `prompt=none`) until it sends the browser back to Vestibule; returns that
    /// URL, not yet visited. Panics if the provider shows a page instead.
    pub async fn through_provider_silently(&self, authorization_url: Url) -> Url {
        let mut next = authorization_url;
        for _ in 0..10 {
            if next.origin() == self.base.origin() {
                return next;
            }
            let response = self.get(next.as_str()).await;
            assert!(
                response.status().is_redirection(),
                "the provider showed a page ({}) at {next}",
                response.status()
            );
            next = location(&response, &next);
        }
        panic!("the provider kept redirecting");
    }

    /// A login started at `login_url` (see [`Browser::begin_login_at`]) as `user` through the
    /// provider's pages; returns the callback's response.
    pub async fn login_at(&self, login_url: &str, user: &str) -> Response {
        let authorization = self.begin_login_at(login_url).await;
        let callback = self.authorize_at_provider(authorization, user).await;
        self.get(callback.as_str()).await
    }

    /// Full login as `user`: Vestibule → provider forms → callback. Returns the callback's response.
    pub async fn login_as(&self, user: &str, return_to: Option<&str>) -> LoginOutcome {
        let authorization = self.begin_login(return_to).await;
        let callback = self.authorize_at_provider(authorization, user).await;
        LoginOutcome {
            response: self.get(callback.as_str()).await,
        }
    }

    /// Logs in and asserts success.
    pub async fn login(&self, user: &str) {
        self.login_with_password(user, &STACK.users.password).await;
    }

    /// Logs in with the user's own password and asserts success.
    pub async fn login_with_password(&self, user: &str, password: &str) {
        let authorization = self.begin_login(None).await;
        let callback = self
            .authorize_with_password(authorization, user, password)
            .await;
        let outcome = LoginOutcome {
            response: self.get(callback.as_str()).await,
        };
        assert_eq!(
            outcome.response.status(),
            StatusCode::SEE_OTHER,
            "callback redirects"
        );
        let (status, _) = self.user().await;
        assert_eq!(status, StatusCode::OK, "logged in after the callback");
    }
}

/// Sends `count` API calls at once, spread over `browsers` in turn; returns their statuses.
pub async fn call_concurrently(browsers: &[Browser], count: usize, path: &str) -> Vec<StatusCode> {
    let calls = (0..count).map(|i| {
        let browser = browsers[i % browsers.len()].clone();
        let path = format!("{path}/{i}");
        async move { browser.api_get(&path).await.status() }
    });
    futures_util::future::join_all(calls).await
}

/// The `Location` of a redirect, resolved against the request URL. Codes and states in it are
/// noted as secrets no log may contain.
pub fn location(response: &Response, base: &Url) -> Url {
    let value = response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("{} without Location", response.status()))
        .to_str()
        .unwrap();
    let url = base.join(value).unwrap();
    for (name, value) in url.query_pairs() {
        if matches!(&*name, "code" | "state" | "id_token_hint" | "logout_token") {
            super::logs::note_secret(&value);
        }
    }
    url
}

/// A cookie jar that notes every cookie value it is given as a secret no log may contain.
#[derive(Default)]
pub struct RecordingJar(Jar);

impl CookieStore for RecordingJar {
    fn set_cookies(
        &self,
        cookie_headers: &mut dyn Iterator<Item = &reqwest::header::HeaderValue>,
        url: &Url,
    ) {
        let headers: Vec<reqwest::header::HeaderValue> = cookie_headers.cloned().collect();
        for header in &headers {
            if let Some(value) = header
                .to_str()
                .ok()
                .and_then(|text| text.split(';').next())
                .and_then(|pair| pair.split_once('='))
                .map(|(_, value)| value)
            {
                super::logs::note_secret(value);
            }
        }
        self.0.set_cookies(&mut headers.iter(), url);
    }

    fn cookies(&self, url: &Url) -> Option<reqwest::header::HeaderValue> {
        self.0.cookies(url)
    }
}

impl RecordingJar {
    /// Adds a cookie as `Set-Cookie` would.
    pub fn add_cookie_str(&self, cookie: &str, url: &Url) {
        if let Some((_, value)) = cookie.split(';').next().and_then(|p| p.split_once('=')) {
            super::logs::note_secret(value);
        }
        self.0.add_cookie_str(cookie, url);
    }
}
