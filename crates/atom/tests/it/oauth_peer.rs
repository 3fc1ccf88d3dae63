//! The real OAuth 2.0 authorization server the connector tests run against: npm
//! `oidc-provider` 8.8 (`tests/peers/oauth-server.mjs`), started as a child process on a free
//! loopback port, with its token-request counters and fault switches; and the browser the
//! tests play (redirects followed by hand, with the provider's cookies sent back).
//!
//! Node.js and `tests/peers/node_modules` (`npm ci` in `scripts/test`) are required: a test
//! that cannot start the peer fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use atom::connectors::spec::{AuthSpec, OAuth2Spec, ProviderSpec, TokenAuth};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{TestApp, TestUser};

/// The public URL test applications run under: callbacks are addressed to it, and the
/// test's browser hands them to the application's real address.
pub const PUBLIC_URL: &str = "http://atom.test";
pub const CALLBACK: &str = "http://atom.test/v1/connections/callback";
pub const RETURN_URL: &str = "https://app.example.com/connections/done";

pub const BASIC_CLIENT: (&str, &str) = ("basic-client", "basic-client-secret-value-0123456789");
pub const POST_CLIENT: (&str, &str) = ("post-client", "post-client-secret-value-0123456789");

#[derive(Debug)]
pub struct OAuthPeer {
    pub issuer: String,
    child: tokio::process::Child,
    http: reqwest::Client,
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

impl OAuthPeer {
    /// Starts the server; access tokens it issues live `access_ttl_secs`.
    pub async fn start(access_ttl_secs: u64) -> Self {
        Self::start_with(access_ttl_secs, access_ttl_secs).await
    }

    /// Starts the server; the code exchange's access token lives `first_access_ttl_secs`,
    /// refreshed ones `access_ttl_secs`.
    pub async fn start_with(first_access_ttl_secs: u64, access_ttl_secs: u64) -> Self {
        Self::start_options(json!({ "access_ttl": access_ttl_secs, "first_access_ttl": first_access_ttl_secs })).await
    }

    /// Starts the server with `options` (see `oauth-server.mjs`: `require_par`, the TTLs).
    pub async fn start_options(options: Value) -> Self {
        let mut config = json!({ "redirect_uri": CALLBACK, "access_ttl": 3600 });
        if let (Some(config), Some(options)) = (config.as_object_mut(), options.as_object()) {
            config.extend(options.clone());
        }
        let mut child = tokio::process::Command::new("node")
            .arg("oauth-server.mjs")
            .current_dir(peers_dir())
            .env("PEER_CONFIG", config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs tests/peers/oauth-server.mjs (Node.js 20 and `npm ci` in tests/peers are required)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OAuth peer started within 30 s")
            .expect("read")
            .expect("the OAuth peer printed its address");
        let ready: Value = serde_json::from_str(&first).expect("the peer's first line is JSON");
        let issuer = ready["issuer"].as_str().expect("issuer").to_owned();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { issuer, child, http }
    }

    pub async fn stats(&self) -> Value {
        self.http.get(format!("{}/__test/stats", self.issuer)).send().await.expect("stats").json().await.expect("json")
    }

    pub async fn token_requests(&self) -> u64 {
        self.stats().await["token_requests"].as_u64().expect("count")
    }

    /// The next `count` token (or revocation) requests fail as `fault` says.
    pub async fn fault(&self, fault: Value) {
        let response =
            self.http.post(format!("{}/__test/fault", self.issuer)).json(&fault).send().await.expect("fault");
        assert!(response.status().is_success());
    }

    pub async fn delay_tokens(&self, ms: u64) {
        let response =
            self.http.post(format!("{}/__test/delay", self.issuer)).json(&json!({ "token_ms": ms })).send().await;
        assert!(response.expect("delay").status().is_success());
    }

    /// A provider spec for this server, authenticating as `client`'s method.
    pub fn spec(&self, name: &str, token_auth: TokenAuth) -> ProviderSpec {
        ProviderSpec {
            name: name.to_owned(),
            display_name: format!("Peer {name}"),
            auth: AuthSpec::OAuth2(Box::new(OAuth2Spec {
                authorization_url: format!("{}/auth", self.issuer),
                token_url: format!("{}/token", self.issuer),
                revocation_url: Some(format!("{}/token/revocation", self.issuer)),
                provider_revocation: None,
                params: Vec::new(),
                discovery_issuer: None,
                par: false,
                par_url: None,
                identity_url: Some(format!("{}/me", self.issuer)),
                issuer: Some(self.issuer.clone()),
                default_scopes: vec!["openid".to_owned(), "offline_access".to_owned(), "email".to_owned()],
                scope_separator: " ".to_owned(),
                pkce: token_auth == TokenAuth::Basic,
                token_auth,
                account_id_pointer: "/sub".to_owned(),
                label_pointer: "/email".to_owned(),
                authorize_params: BTreeMap::from([("prompt".to_owned(), "consent".to_owned())]),
                refreshable: true,
            })),
        }
    }

    /// A catalog template for this server, as an operator would write it into
    /// `connectors.providers_dir`: `client_auth` is `basic` (with PKCE) or `form`.
    pub fn template(&self, id: &str, client_auth: &str) -> String {
        let issuer = &self.issuer;
        let pkce = client_auth == "basic";
        format!(
            r#"id = "{id}"
name = "Peer {id}"
auth_mode = "oauth2_authorization_code"

[oauth2]
authorization_url = "{issuer}/auth"
token_url = "{issuer}/token"
issuer = "{issuer}"
pkce = {pkce}
scopes = ["openid", "offline_access", "email"]
client_auth = "{client_auth}"

[oauth2.authorization_params]
prompt = "consent"

[oauth2.revocation]
style = "rfc7009"
url = "{issuer}/token/revocation"
client_auth = "{client_auth}"

[api]
base_url = "{issuer}"

[api.credential]
in = "bearer"

[identity]
url = "{issuer}/me"
label = "/email"
account_id = "/sub"
"#
        )
    }

    /// Writes `peer-basic` and `peer-post` templates into `dir`.
    pub fn write_templates(&self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).expect("providers dir");
        std::fs::write(dir.join("peer-basic.toml"), self.template("peer-basic", "basic")).expect("write");
        std::fs::write(dir.join("peer-post.toml"), self.template("peer-post", "form")).expect("write");
    }
}

/// Configuration for an application whose users connect to the peer.
pub fn app_config() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PUBLIC_URL", PUBLIC_URL),
        ("CONNECTORS_RETURN_URLS", "[\"https://app.example.com/connections/done\"]"),
        ("CONNECTORS_REFRESH_INTERVAL_SECS", "0"),
        ("CONNECTORS_HTTP_TIMEOUT_SECS", "2"),
    ]
}

/// An application with `peer` in its catalog, from templates in its providers directory:
/// `peer-basic` (client_secret_basic, PKCE) and `peer-post` (client_secret_post), their apps
/// set by an admin through the API.
pub async fn spawn_app(peer: &OAuthPeer, extra: &[(&str, &str)]) -> TestApp {
    let db = crate::common::TestDb::new().await;
    let dir = db.dir.path().join("providers");
    peer.write_templates(&dir);
    let dir = dir.display().to_string();
    let mut config = app_config();
    config.push(("CONNECTORS_PROVIDERS_DIR", dir.as_str()));
    config.extend_from_slice(extra);
    let app = TestApp::spawn_on(db, &config, axum::Router::new()).await;
    set_apps(&app).await;
    app
}

/// Sets the app of provider `name` through the admin API.
pub async fn set_app(app: &TestApp, name: &str, (id, secret): (&str, &str)) {
    let admin = app.user("admin").await;
    let response = app
        .client
        .put(app.url(&format!("/v1/admin/providers/{name}/app")))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "client_id": id, "client_secret": secret }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "app set for {name}: {}", response.text().await.unwrap_or_default());
}

/// Sets the peer's two apps through the admin API.
pub async fn set_apps(app: &TestApp) {
    let admin = app.user("admin").await;
    for (name, (id, secret)) in [("peer-basic", BASIC_CLIENT), ("peer-post", POST_CLIENT)] {
        let response = app
            .client
            .put(app.url(&format!("/v1/admin/providers/{name}/app")))
            .bearer_auth(&admin.access_token)
            .json(&json!({ "client_id": id, "client_secret": secret }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "app set for {name}: {}", response.text().await.unwrap_or_default());
    }
}

/// Starts an authorization as `user`; the authorization URL.
pub async fn start(app: &TestApp, user: &TestUser, provider: &str) -> String {
    let response = app
        .client
        .post(app.url("/v1/connections/authorize"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": provider, "return_to": RETURN_URL }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let body: Value = response.json().await.expect("json");
    body["authorization_url"].as_str().expect("authorization_url").to_owned()
}

/// The browser at the provider: follows `authorization_url` through the consent screen,
/// allowing as `account` or denying, until the provider redirects to our callback; that URL.
pub async fn consent(authorization_url: &str, decision: &str, account: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut url = authorization_url.to_owned();
    for _ in 0..10 {
        if url.starts_with(PUBLIC_URL) {
            return url;
        }
        let target = if url.contains("/interaction/") && !url.contains("decision=") {
            format!("{url}?decision={decision}&account={account}")
        } else {
            url.clone()
        };
        let cookie = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = http.get(&target).header("cookie", cookie).send().await.expect("provider answers");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().expect("ascii");
            if let Some((pair, _)) = set.split_once(';').or(Some((set, "")))
                && let Some((name, value)) = pair.split_once('=')
            {
                cookies.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let status = response.status();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(location) = location else {
            panic!(
                "the provider stopped redirecting at {target}: {status} {}",
                response.text().await.unwrap_or_default()
            )
        };
        url = if location.starts_with('/') { format!("{}{}", origin(&target), location) } else { location };
    }
    panic!("too many redirects from {authorization_url}")
}

fn origin(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("url");
    parsed.origin().ascii_serialization()
}

/// Hands the provider's redirect to the application, as the browser would: the response.
pub async fn deliver(app: &TestApp, callback_url: &str) -> reqwest::Response {
    let path = callback_url.strip_prefix(PUBLIC_URL).expect("a callback to the public URL");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    http.get(app.url(path)).send().await.expect("callback sent")
}

/// Where the callback sent the browser: the query of the 303 to the return URL.
pub async fn landing(response: reqwest::Response) -> BTreeMap<String, String> {
    let status = response.status();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(location) = location else {
        panic!("callback answered {status} without a redirect: {}", response.text().await.unwrap_or_default())
    };
    assert_eq!(status, 303, "the callback redirects with 303");
    assert!(location.starts_with(RETURN_URL), "{location}");
    url::Url::parse(&location).expect("url").query_pairs().into_owned().collect()
}

/// A whole connection of `user` to `provider` as `account`: the connection id.
pub async fn connect(app: &TestApp, user: &TestUser, provider: &str, account: &str) -> String {
    let url = start(app, user, provider).await;
    let callback = consent(&url, "allow", account).await;
    let landed = landing(deliver(app, &callback).await).await;
    assert!(!landed.contains_key("error"), "connected: {landed:?}");
    landed["connection_id"].clone()
}
