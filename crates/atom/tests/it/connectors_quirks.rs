//! Provider quirks no real server here shows, each against a strict local stub that checks the
//! token request as that provider does (method, client authentication style, content type,
//! `grant_type`, the code and redirect URI, the PKCE verifier's presence and its S256 match):
//! Slack's user token nested under `authed_user`, Notion's JSON body with HTTP Basic,
//! Salesforce's `instance_url` (and no `expires_in`), QuickBooks' `realmId` in the callback,
//! GitHub's tokens that never expire, Mailchimp's metadata lookup (`OAuth <token>`), and
//! Atlassian's accessible resources (Jira's cloud id). The catalog's own templates are used,
//! their hosts moved to the stub through `connectors.providers_dir`. Kept values are shown with
//! the connection; a missing or malformed one, or a failed lookup, fails the connection with
//! its stable code and stores nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;

use crate::common::{TestApp, TestDb, TestUser};
use crate::oauth_peer::{self, deliver, landing};
use crate::provider_stub::{Record, Seen, Stub};

const CLIENT_ID: &str = "quirk-client";
const CLIENT_SECRET: &str = "quirk-client-secret-0123456789";
const PROVIDERS: &[&str] = &["slack", "notion", "salesforce", "quickbooks", "github", "mailchimp", "jira"];

const SLACK_USER_TOKEN: &str = "xoxp-1111-2222-3333-abcdefabcdef";
const NOTION_TOKEN: &str = "secret_notionAccessToken0123456789";
const SALESFORCE_TOKEN: &str = "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog";
const SALESFORCE_REFRESH: &str = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJ";
const SALESFORCE_REFRESHED: &str = "00Dxx0000001gPL!AR8AQRefreshed0123456789";
const SALESFORCE_NOT_STORED: &str = "00Dxx0000001gPL!AR8AQNotStored0123456789";
const QUICKBOOKS_TOKEN: &str = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.quickbooks";
const GITHUB_TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";
const MAILCHIMP_TOKEN: &str = "5c6ccc561059aa386da9d112215bae55";
const JIRA_TOKEN: &str = "eyJraWQiOiJhdGxhc3NpYW4.jira";
const JIRA_REFRESHED: &str = "eyJraWQiOiJhdGxhc3NpYW4.jira-refreshed";
const CLOUD_ID: &str = "11223344-a1b2-3b33-c444-def123456789";
const REALM_ID: &str = "9130346988465766";

/// How each provider's token endpoint takes the client's credentials and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    /// `Authorization: Basic` of the id and secret; neither in the body.
    Basic,
    /// `client_id` and `client_secret` in the form body; no `Authorization`.
    Form,
    /// `client_id` and `client_secret` in a JSON body; no `Authorization`.
    Json,
}

#[derive(Debug, Clone, Default)]
struct Quirks {
    record: Record,
    /// The S256 challenge each provider's authorization URL carried.
    challenges: Arc<Mutex<BTreeMap<String, String>>>,
    /// A failure a test asks a provider for.
    modes: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Quirks {
    fn mode(&self, provider: &str) -> Option<String> {
        self.modes.lock().expect("lock").get(provider).cloned()
    }
}

fn unreserved(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks a code exchange as `provider`'s token endpoint does; its parameters, or the refusal.
fn check_token(
    q: &Quirks,
    seen: &Seen,
    provider: &str,
    auth: ClientAuth,
    pkce: bool,
) -> Result<BTreeMap<String, String>, Box<Response>> {
    let mut problems = Vec::new();
    if seen.method != Method::POST {
        problems.push(format!("token request by {}", seen.method));
    }
    let json = auth == ClientAuth::Json || provider == "notion";
    let expected_type = if json { "application/json" } else { "application/x-www-form-urlencoded" };
    if seen.content_type() != Some(expected_type) {
        problems.push(format!("content type {:?}, expected {expected_type}", seen.content_type()));
    }
    let params: BTreeMap<String, String> = if json {
        match serde_json::from_slice::<serde_json::Map<String, Value>>(&seen.body) {
            Ok(map) => map.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or("<not a string>").to_owned())).collect(),
            Err(_) => {
                problems.push("a body that is not a JSON object".into());
                BTreeMap::new()
            }
        }
    } else {
        seen.form()
    };
    let get = |name: &str| params.get(name).map(String::as_str);
    if get("grant_type") != Some("authorization_code") {
        problems.push(format!("grant_type {:?}", get("grant_type")));
    }
    if get("code") != Some(format!("code-{provider}").as_str()) {
        problems.push(format!("code {:?}", get("code")));
    }
    if get("redirect_uri") != Some(oauth_peer::CALLBACK) {
        problems.push(format!("redirect_uri {:?}", get("redirect_uri")));
    }
    match (pkce, get("code_verifier")) {
        (true, Some(verifier)) => {
            let challenge =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
            let expected = q.challenges.lock().expect("lock").get(provider).cloned();
            if !(43..=128).contains(&verifier.len())
                || !unreserved(verifier)
                || expected.as_deref() != Some(challenge.as_str())
            {
                problems.push("a code_verifier that does not match the S256 challenge".into());
            }
        }
        (true, None) => problems.push("no code_verifier (PKCE)".into()),
        (false, Some(_)) => problems.push("a code_verifier without PKCE".into()),
        (false, None) => {}
    }
    match auth {
        ClientAuth::Basic => {
            if seen.basic() != Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned())) {
                problems.push("no HTTP Basic client authentication".into());
            }
            if params.contains_key("client_secret") {
                problems.push("the client secret in the body besides Basic".into());
            }
        }
        ClientAuth::Form | ClientAuth::Json => {
            if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(CLIENT_SECRET) {
                problems.push("client_id and client_secret not in the body".into());
            }
            if seen.header("authorization").is_some() {
                problems.push("an Authorization header besides the body's credentials".into());
            }
        }
    }
    if problems.is_empty() {
        return Ok(params);
    }
    for p in &problems {
        q.record.violation(format!("{provider}: {p}"));
    }
    Err(Box::new((StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "invalid_request" }))).into_response()))
}

fn bearer_is(q: &Quirks, seen: &Seen, provider: &str, scheme: &str, token: &str) -> bool {
    let ok = seen.header("authorization") == Some(format!("{scheme} {token}").as_str());
    if !ok {
        q.record.violation(format!("{provider}: {} {} without {scheme} <token>", seen.method, seen.path));
    }
    ok
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "unauthorized" }))).into_response()
}

async fn handle(State(q): State<Quirks>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = q.record.seen(method, &uri, headers, body);
    let ok = |v: Value| axum::Json(v).into_response();
    match seen.path.as_str() {
        "/slack/api/oauth.v2.access" => {
            if let Err(refusal) = check_token(&q, &seen, "slack", ClientAuth::Basic, false) {
                return *refusal;
            }
            if q.mode("slack").as_deref() == Some("error") {
                // Slack answers its errors with a 200.
                return ok(json!({ "ok": false, "error": "invalid_code" }));
            }
            ok(json!({
                "ok": true, "app_id": "A0KRD7HC3",
                "authed_user": { "id": "U1234567890", "scope": "chat:write,channels:read", "access_token": SLACK_USER_TOKEN, "token_type": "user" },
                "scope": "", "team": { "name": "Slack Softball Team", "id": "T9TK3CUKW" },
                "enterprise": null, "is_enterprise_install": false
            }))
        }
        "/slack/api/auth.test" => {
            if seen.method != Method::POST {
                q.record.violation("slack: auth.test by GET");
            }
            if !bearer_is(&q, &seen, "slack", "Bearer", SLACK_USER_TOKEN) {
                return ok(json!({ "ok": false, "error": "invalid_auth" }));
            }
            ok(
                json!({ "ok": true, "url": "https://softball.slack.com/", "team": "Slack Softball Team", "user": "grace", "team_id": "T9TK3CUKW", "user_id": "U1234567890" }),
            )
        }
        "/notion/v1/oauth/token" => {
            if let Err(refusal) = check_token(&q, &seen, "notion", ClientAuth::Basic, false) {
                return *refusal;
            }
            ok(json!({
                "access_token": NOTION_TOKEN, "token_type": "bearer", "bot_id": "b0b0b0b0-0000-4000-8000-000000000001",
                "workspace_name": "Acme Notes", "workspace_icon": null, "workspace_id": "b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                "owner": { "type": "user", "user": { "object": "user", "id": "u5e2" } }, "duplicated_template_id": null
            }))
        }
        "/notion/v1/users/me" => {
            if seen.header("notion-version") != Some("2022-06-28") {
                q.record.violation("notion: no Notion-Version header");
            }
            if !bearer_is(&q, &seen, "notion", "Bearer", NOTION_TOKEN) {
                return unauthorized();
            }
            ok(
                json!({ "object": "user", "id": "b0b0b0b0-0000-4000-8000-000000000001", "type": "bot", "name": "Atom at Acme Notes" }),
            )
        }
        "/salesforce/services/oauth2/token"
            if seen.form().get("grant_type").map(String::as_str) == Some("refresh_token") =>
        {
            let form = seen.form();
            let valid = form.get("refresh_token").map(String::as_str) == Some(SALESFORCE_REFRESH)
                && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                && seen.header("authorization").is_none()
                && seen.content_type() == Some("application/x-www-form-urlencoded");
            if !valid {
                q.record.violation(format!(
                    "salesforce: a refresh request Salesforce refuses: {:?}",
                    form.keys().collect::<Vec<_>>()
                ));
                return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "invalid_grant" }))).into_response();
            }
            // An org moved to another instance answers its new instance URL with the tokens.
            let host = seen.header("host").unwrap_or_default().to_owned();
            let (token, instance) = match q.mode("salesforce").as_deref() {
                Some("moving") => (SALESFORCE_REFRESHED, format!("http://{host}/instance/moved")),
                Some("moving_bad") => (SALESFORCE_NOT_STORED, "https://evil.example.com".to_owned()),
                _ => (SALESFORCE_REFRESHED, "https://acme.my.salesforce.com".to_owned()),
            };
            // No refresh token in the answer: the old one stays valid.
            ok(json!({
                "access_token": token, "signature": "uXkYvmZ4QyKu+2aK6cOMt9ZHBHpAGkrZrU0eF0YQx6s=",
                "scope": "refresh_token api", "instance_url": instance,
                "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS", "token_type": "Bearer", "issued_at": "1278448932702"
            }))
        }
        "/salesforce/services/oauth2/token" => {
            if let Err(refusal) = check_token(&q, &seen, "salesforce", ClientAuth::Form, true) {
                return *refusal;
            }
            let host = seen.header("host").unwrap_or_default().to_owned();
            let instance = match q.mode("salesforce").as_deref() {
                Some("bad_instance") => "https://evil.example.com".to_owned(),
                Some("moving" | "moving_bad") => format!("http://{host}/instance/acme"),
                _ => "https://acme.my.salesforce.com".to_owned(),
            };
            ok(json!({
                "access_token": SALESFORCE_TOKEN, "refresh_token": SALESFORCE_REFRESH,
                "signature": "CMJ4l+CCaPQiKjoOEwEig9H4wqhpuLSk4J2urAe+fVg=", "scope": "refresh_token api",
                "instance_url": instance, "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
                "token_type": "Bearer", "issued_at": "1278448832702"
            }))
        }
        // A Salesforce instance's REST API (the proxy's calls), at the instance URL the
        // connection keeps.
        p if p.starts_with("/instance/") => {
            if !p.contains("/services/data/v62.0/") {
                q.record.violation(format!("salesforce: a call outside the REST API: {p}"));
            }
            if !bearer_is(&q, &seen, "salesforce", "Bearer", SALESFORCE_REFRESHED) {
                return unauthorized();
            }
            ok(json!({ "encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [] }))
        }
        "/quickbooks/oauth2/v1/tokens/bearer" => {
            if let Err(refusal) = check_token(&q, &seen, "quickbooks", ClientAuth::Basic, false) {
                return *refusal;
            }
            ok(json!({
                "token_type": "bearer", "access_token": QUICKBOOKS_TOKEN, "expires_in": 3600,
                "refresh_token": "AB11587196498RaIrwVWA7u3YDLCNw", "x_refresh_token_expires_in": 8726400
            }))
        }
        p if p == format!("/quickbooks/v3/company/{REALM_ID}/companyinfo/{REALM_ID}") => {
            if !bearer_is(&q, &seen, "quickbooks", "Bearer", QUICKBOOKS_TOKEN) {
                return unauthorized();
            }
            ok(json!({ "CompanyInfo": { "CompanyName": "Acme Books", "Id": "1" }, "time": "2026-01-01T00:00:00Z" }))
        }
        "/github/login/oauth/access_token" => {
            // Without `Accept: application/json` GitHub answers form-encoded.
            if seen.header("accept") != Some("application/json") {
                q.record.violation("github: no Accept: application/json");
            }
            if let Err(refusal) = check_token(&q, &seen, "github", ClientAuth::Form, true) {
                return *refusal;
            }
            ok(json!({ "access_token": GITHUB_TOKEN, "scope": "repo,read:user,user:email", "token_type": "bearer" }))
        }
        "/github/api/user" => {
            if seen.header("x-github-api-version") != Some("2022-11-28") {
                q.record.violation("github: no X-GitHub-Api-Version");
            }
            if !bearer_is(&q, &seen, "github", "Bearer", GITHUB_TOKEN) {
                return unauthorized();
            }
            ok(json!({ "login": "octocat", "id": 583231, "name": "The Octocat" }))
        }
        "/mailchimp/oauth2/token" => {
            if let Err(refusal) = check_token(&q, &seen, "mailchimp", ClientAuth::Form, false) {
                return *refusal;
            }
            ok(json!({ "access_token": MAILCHIMP_TOKEN, "expires_in": 0, "scope": null }))
        }
        "/mailchimp/oauth2/metadata" => {
            if !bearer_is(&q, &seen, "mailchimp", "OAuth", MAILCHIMP_TOKEN) {
                return unauthorized();
            }
            if q.mode("mailchimp").as_deref() == Some("metadata_down") {
                return (StatusCode::SERVICE_UNAVAILABLE, "<html>down</html>").into_response();
            }
            ok(
                json!({ "dc": "us6", "role": "owner", "accountname": "Acme", "user_id": 123, "login_url": "https://login.mailchimp.com", "api_endpoint": "https://us6.api.mailchimp.com" }),
            )
        }
        "/mailchimp/mc/us6/3.0/" => {
            if !bearer_is(&q, &seen, "mailchimp", "OAuth", MAILCHIMP_TOKEN) {
                return unauthorized();
            }
            ok(json!({ "account_id": "8d3a3db4d97663a9074efcc16", "account_name": "Acme", "email": "owner@acme.test" }))
        }
        "/atlassian/oauth/token"
            if serde_json::from_slice::<Value>(&seen.body)
                .ok()
                .and_then(|b| b["grant_type"].as_str().map(str::to_owned))
                .as_deref()
                == Some("refresh_token") =>
        {
            // Atlassian's refresh: a JSON body with the client's credentials; it rotates the
            // refresh token.
            let body: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            let valid = seen.content_type() == Some("application/json")
                && body["client_id"] == CLIENT_ID
                && body["client_secret"] == CLIENT_SECRET
                && body["refresh_token"] == "atlassian-refresh-0123"
                && seen.header("authorization").is_none();
            if !valid {
                q.record.violation(format!("jira: a refresh request Atlassian refuses: {body}"));
                return (StatusCode::FORBIDDEN, axum::Json(json!({ "error": "invalid_grant" }))).into_response();
            }
            ok(
                json!({ "access_token": JIRA_REFRESHED, "expires_in": 3600, "scope": "read:jira-work offline_access", "refresh_token": "atlassian-refresh-rotated", "token_type": "Bearer" }),
            )
        }
        "/atlassian/oauth/token" => {
            if let Err(refusal) = check_token(&q, &seen, "jira", ClientAuth::Json, false) {
                return *refusal;
            }
            ok(
                json!({ "access_token": JIRA_TOKEN, "expires_in": 3600, "scope": "read:jira-work offline_access", "refresh_token": "atlassian-refresh-0123", "token_type": "Bearer" }),
            )
        }
        "/atlassian/oauth/token/accessible-resources" => {
            if !bearer_is(&q, &seen, "jira", "Bearer", JIRA_TOKEN) {
                return unauthorized();
            }
            if q.mode("jira").as_deref() == Some("no_sites") {
                return ok(json!([]));
            }
            ok(
                json!([{ "id": CLOUD_ID, "url": "https://acme.atlassian.net", "name": "acme", "scopes": ["read:jira-work"], "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flag.png" }]),
            )
        }
        "/atlassian/me" => {
            if !bearer_is(&q, &seen, "jira", "Bearer", JIRA_TOKEN) {
                return unauthorized();
            }
            ok(json!({ "account_id": "5b10ac8d82e05b22cc7d4ef5", "email": "me@acme.test", "name": "Me" }))
        }
        other => {
            q.record.violation(format!("unexpected {} {other}", seen.method));
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

/// `text` without the TOML table `header` (up to the next table).
fn drop_table(text: &str, header: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == header;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

fn templates(base: &str) -> Vec<(&'static str, String)> {
    let s = |p: &str| format!("{base}{p}");
    let slack = include_str!("../../../../providers/slack.toml")
        .replace("https://slack.com/oauth/v2/authorize", &s("/slack/oauth/v2/authorize"))
        .replace("https://slack.com/api", &s("/slack/api"));
    let notion = include_str!("../../../../providers/notion.toml").replace("https://api.notion.com", &s("/notion"));
    // Salesforce's identity endpoint lives at the instance URL (a real salesforce.com host,
    // as its pattern demands), so the test leaves it out; the label is then the service's name.
    // Its instance URL's pattern also admits the stub's `/instance/<name>`, so that a refresh
    // can move a connection to another instance the proxy then reaches.
    let port = base.rsplit(':').next().unwrap_or_default();
    let instance_pattern = r#"pattern = "^https://[a-zA-Z0-9][a-zA-Z0-9.-]*\\.(salesforce|force)\\.com$""#;
    let original = include_str!("../../../../providers/salesforce.toml");
    assert!(original.contains(instance_pattern), "the instance URL's pattern as the template has it");
    let salesforce = drop_table(
        &original.replace("https://{domain}.salesforce.com", &s("/salesforce")).replace(
            instance_pattern,
            &format!(
                r#"pattern = "^(https://[a-zA-Z0-9][a-zA-Z0-9.-]*\\.(salesforce|force)\\.com|http://127\\.0\\.0\\.1:{port}/instance/[a-z]+)$""#
            ),
        ),
        "[identity]",
    );
    let quickbooks = include_str!("../../../../providers/quickbooks.toml")
        .replace("https://appcenter.intuit.com/connect/oauth2", &s("/quickbooks/connect"))
        .replace("https://oauth.platform.intuit.com", &s("/quickbooks"))
        .replace("https://developer.api.intuit.com", &s("/quickbooks"))
        .replace("https://quickbooks.api.intuit.com", &s("/quickbooks"));
    let github = include_str!("../../../../providers/github.toml")
        .replace("https://api.github.com", &s("/github/api"))
        .replace("https://github.com", &s("/github"));
    let mailchimp = include_str!("../../../../providers/mailchimp.toml")
        .replace("https://{dc}.api.mailchimp.com", &s("/mailchimp/mc/{dc}"))
        .replace("https://login.mailchimp.com", &s("/mailchimp"))
        .replace(
            "lookup = \"mailchimp_metadata\"",
            &format!("lookup = \"mailchimp_metadata\"\nlookup_url = \"{}\"", s("/mailchimp/oauth2/metadata")),
        );
    let jira = include_str!("../../../../providers/jira.toml")
        .replace("https://auth.atlassian.com", &s("/atlassian"))
        .replace("https://api.atlassian.com", &s("/atlassian"))
        .replace(
            "lookup = \"atlassian_accessible_resources\"",
            &format!(
                "lookup = \"atlassian_accessible_resources\"\nlookup_url = \"{}\"",
                s("/atlassian/oauth/token/accessible-resources")
            ),
        );
    let all = vec![
        ("slack", slack),
        ("notion", notion),
        ("salesforce", salesforce),
        ("quickbooks", quickbooks),
        ("github", github),
        ("mailchimp", mailchimp),
        ("jira", jira),
    ];
    for (id, text) in &all {
        for line in text.lines().filter(|l| l.contains("https://") && !l.trim_start().starts_with('#')) {
            let moved =
                ["docs", "  \"", "pattern", "example", "description", "label"].iter().any(|p| line.starts_with(p));
            assert!(moved, "{id}: a URL left unmoved: {line}");
        }
    }
    all
}

struct Setup {
    app: TestApp,
    stub: Stub,
    quirks: Quirks,
}

async fn setup() -> Setup {
    let quirks = Quirks::default();
    let router = Router::new().route("/{*rest}", axum::routing::any(handle)).with_state(quirks.clone());
    let stub = Stub::start(router, quirks.record.clone()).await;
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    std::fs::create_dir_all(&dir).expect("dir");
    for (id, text) in templates(&stub.url()) {
        std::fs::write(dir.join(format!("{id}.toml")), text).expect("write");
    }
    let dir = dir.display().to_string();
    let mut config = oauth_peer::app_config();
    config.push(("CONNECTORS_PROVIDERS_DIR", dir.as_str()));
    // Salesforce's two-hour tokens are due at once, so the refresh route refreshes them.
    config.push(("CONNECTORS_REFRESH_MARGIN_SECS", "10800"));
    // The proxy reaches the stub's Salesforce instance on loopback.
    config.push(("CONNECTORS_PROXY_ALLOW_RANGES", "[\"127.0.0.0/8\"]"));
    let app = TestApp::spawn_on(db, &config, Router::new()).await;
    let admin = app.user("admin").await;
    for provider in PROVIDERS {
        let response = app
            .client
            .put(app.url(&format!("/v1/admin/providers/{provider}/app")))
            .bearer_auth(&admin.access_token)
            .json(&json!({ "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{provider}: {}", response.text().await.unwrap_or_default());
    }
    Setup { app, stub, quirks }
}

/// Starts `provider`'s flow as `user`, plays the browser that consents (the provider's
/// redirect carries `code-<provider>`, the state and `extra`), delivers the callback: where
/// the browser lands.
async fn connect(s: &Setup, user: &TestUser, provider: &str, extra: &str) -> BTreeMap<String, String> {
    let response = s
        .app
        .client
        .post(s.app.url("/v1/connections/authorize"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": provider, "return_to": oauth_peer::RETURN_URL }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "{provider}: {}", response.text().await.unwrap_or_default());
    let started: Value = response.json().await.expect("json");
    let url = url::Url::parse(started["authorization_url"].as_str().expect("url")).expect("url");
    assert!(url.as_str().starts_with(&s.stub.url()), "{provider}'s authorization URL at its (stub) host: {url}");
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    if let Some(challenge) = query.get("code_challenge") {
        assert_eq!(query["code_challenge_method"], "S256");
        s.quirks.challenges.lock().expect("lock").insert(provider.to_owned(), challenge.clone());
    }
    let state = &query["state"];
    let callback = format!("{}?code=code-{provider}&state={state}{extra}", oauth_peer::CALLBACK);
    landing(deliver(&s.app, &callback).await).await
}

async fn connection(s: &Setup, user: &TestUser, id: &str) -> Value {
    let response = s.app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn count(s: &Setup, user: &TestUser) -> usize {
    let body: Value = s.app.get_as(&user.access_token, "/v1/connections").await.json().await.expect("json");
    body["connections"].as_array().expect("list").len()
}

async fn credentials(s: &Setup, id: &str) -> Credentials {
    let row = sql::by_id(&s.app.state.db, id).await.expect("query").expect("row");
    Credentials::open(&s.app.state.identity.keyring(), &row).expect("decrypts")
}

fn scopes(view: &Value) -> Vec<String> {
    view["scopes"].as_array().expect("scopes").iter().filter_map(Value::as_str).map(str::to_owned).collect()
}

#[tokio::test]
async fn slacks_user_token_nested_under_authed_user_and_its_team() {
    let s = setup().await;
    let user = s.app.user("user").await;
    let landed = connect(&s, &user, "slack", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["label"], "grace", "labelled by auth.test, called with the user token");
    assert_eq!(view["params"]["team_id"], "T9TK3CUKW");
    assert_eq!(view["params"]["user_id"], "U1234567890");
    assert_eq!(scopes(&view), ["chat:write", "channels:read"], "the user token's scopes, comma-separated");
    let c = credentials(&s, &id).await;
    assert_eq!(c.access_token.as_deref(), Some(SLACK_USER_TOKEN), "the nested user token, not the empty top level");
    let text = view.to_string();
    assert!(!text.contains(SLACK_USER_TOKEN));

    // Slack's errors come as a 200 with ok: false.
    s.quirks.modes.lock().expect("lock").insert("slack".into(), "error".into());
    let landed = connect(&s, &user, "slack", "").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("provider_error"), "{landed:?}");
    assert_eq!(count(&s, &user).await, 1, "nothing stored by the failure");
    s.stub.assert_no_violations();
    s.app.stop().await;
}

#[tokio::test]
async fn notions_json_body_with_basic_auth_and_githubs_tokens_that_never_expire() {
    let s = setup().await;
    let user = s.app.user("user").await;

    let landed = connect(&s, &user, "notion", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["label"], "Atom at Acme Notes");
    assert_eq!(view["params"]["workspace_id"], "b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
    assert_eq!(view["params"]["workspace_name"], "Acme Notes");
    assert_eq!(credentials(&s, &id).await.access_token.as_deref(), Some(NOTION_TOKEN));

    let landed = connect(&s, &user, "github", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["label"], "octocat");
    assert!(view["expires_at"].is_null(), "GitHub's OAuth app tokens do not expire");
    let c = credentials(&s, &id).await;
    assert_eq!(c.access_token.as_deref(), Some(GITHUB_TOKEN));
    assert!(c.refresh_token.is_none(), "and come without a refresh token");
    let row = sql::by_id(&s.app.state.db, &id).await.expect("query").expect("row");
    assert_eq!(row.account_id, "583231");
    // Asked for its token, the connection needs no refresh: the same token, no token request.
    let before = s.stub.seen().len();
    let response = s
        .app
        .client
        .post(s.app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(s.stub.seen().len(), before, "nothing to refresh");
    s.stub.assert_no_violations();
    s.app.stop().await;
}

#[tokio::test]
async fn salesforces_instance_url_and_quickbooks_realm_id_are_kept_and_shown() {
    let s = setup().await;
    let user = s.app.user("user").await;

    let landed = connect(&s, &user, "salesforce", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["params"]["instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(view["params"]["domain"], "login", "the parameter's default");
    assert!(view["expires_at"].is_string(), "no expires_in: the template's default lifetime applies");
    assert!(credentials(&s, &id).await.refresh_token.is_some());

    // A refresh reads the connection's parameters apart from its kept values, and keeps
    // both, and the refresh token Salesforce does not send again.
    let response = s
        .app
        .client
        .post(s.app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let refreshed: Value = response.json().await.expect("json");
    assert_eq!(refreshed["params"]["instance_url"], "https://acme.my.salesforce.com");
    let c = credentials(&s, &id).await;
    assert_eq!(c.access_token.as_deref(), Some(SALESFORCE_REFRESHED));
    assert_eq!(c.refresh_token.as_deref(), Some(SALESFORCE_REFRESH));

    // An instance URL that is not Salesforce's is refused by the kept value's pattern.
    s.quirks.modes.lock().expect("lock").insert("salesforce".into(), "bad_instance".into());
    let landed = connect(&s, &user, "salesforce", "").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("missing_field"), "{landed:?}");

    let landed = connect(&s, &user, "quickbooks", &format!("&realmId={REALM_ID}")).await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["params"]["realm_id"], REALM_ID, "from the callback's query");
    assert_eq!(view["label"], "Acme Books", "the identity call used the realm in its path");

    // Without its realmId the connection cannot be used: refused, nothing stored.
    let landed = connect(&s, &user, "quickbooks", "").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("missing_field"), "{landed:?}");
    let landed = connect(&s, &user, "quickbooks", "&realmId=../../evil").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("missing_field"), "{landed:?}");
    assert_eq!(count(&s, &user).await, 2);
    s.stub.assert_no_violations();
    s.app.stop().await;
}

async fn refresh(s: &Setup, user: &TestUser, id: &str) -> Value {
    let response = s
        .app
        .client
        .post(s.app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_refresh_that_moves_salesforces_instance_url_moves_the_connection_and_the_proxy() {
    let s = setup().await;
    let user = s.app.user("user").await;
    s.quirks.modes.lock().expect("lock").insert("salesforce".into(), "moving".into());
    let landed = connect(&s, &user, "salesforce", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let acme = format!("{}/instance/acme", s.stub.url());
    let moved = format!("{}/instance/moved", s.stub.url());
    assert_eq!(connection(&s, &user, &id).await["params"]["instance_url"], acme.as_str());

    // The refresh answers another instance URL: stored with the new token, shown at once.
    let refreshed = refresh(&s, &user, &id).await;
    assert_eq!(refreshed["params"]["instance_url"], moved.as_str(), "{refreshed}");
    assert_eq!(refreshed["params"]["domain"], "login", "the parameters stay");
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["params"]["instance_url"], moved.as_str());
    assert!(view["last_error"].is_null(), "{view}");
    assert_eq!(credentials(&s, &id).await.access_token.as_deref(), Some(SALESFORCE_REFRESHED));

    // The proxy's base URL is the moved instance's.
    let response = s.app.get_as(&user.access_token, &format!("/v1/proxy/{id}/sobjects")).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let calls: Vec<String> =
        s.stub.seen().iter().filter(|r| r.path.starts_with("/instance/")).map(|r| r.path.clone()).collect();
    assert_eq!(calls, ["/instance/moved/services/data/v62.0/sobjects"], "the call went to the new instance");

    // A refresh answering an instance URL that fails its pattern stores nothing: the
    // connection keeps its instance, its token and its expiry, and records the failure.
    let before = sql::by_id(&s.app.state.db, &id).await.expect("query").expect("row");
    s.quirks.modes.lock().expect("lock").insert("salesforce".into(), "moving_bad".into());
    let refused = refresh(&s, &user, &id).await;
    assert_eq!(refused["params"]["instance_url"], moved.as_str(), "{refused}");
    let after = sql::by_id(&s.app.state.db, &id).await.expect("query").expect("row");
    assert_eq!(after.params, before.params);
    assert_eq!(after.credentials, before.credentials, "the token the refused answer carried is not stored");
    assert_eq!(after.expires_at, before.expires_at);
    assert!(after.last_error.as_deref().is_some_and(|e| e.starts_with("missing_field")), "{:?}", after.last_error);
    assert_eq!(credentials(&s, &id).await.access_token.as_deref(), Some(SALESFORCE_REFRESHED));
    let text = refused.to_string();
    assert!(!text.contains(SALESFORCE_NOT_STORED) && !text.contains("evil.example.com"), "{text}");
    s.stub.assert_no_violations();
    s.app.stop().await;
}

#[tokio::test]
async fn mailchimps_data_centre_and_atlassians_cloud_id_are_looked_up_after_the_exchange() {
    let s = setup().await;
    let user = s.app.user("user").await;

    let landed = connect(&s, &user, "mailchimp", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["params"]["dc"], "us6");
    assert_eq!(view["params"]["api_endpoint"], "https://us6.api.mailchimp.com");
    assert_eq!(view["label"], "Acme", "the identity call went to the looked-up data centre");
    assert!(view["expires_at"].is_null(), "Mailchimp's tokens do not expire");

    let landed = connect(&s, &user, "jira", "").await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let view = connection(&s, &user, &id).await;
    assert_eq!(view["params"]["cloud_id"], CLOUD_ID);
    assert_eq!(view["params"]["site_url"], "https://acme.atlassian.net");
    assert_eq!(view["label"], "me@acme.test");
    // Its refresh is sent as the template says (a JSON body), the rotated token stored, the
    // looked-up values kept.
    let response = s
        .app
        .client
        .post(s.app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let refreshed: Value = response.json().await.expect("json");
    assert_eq!(refreshed["params"]["cloud_id"], CLOUD_ID);
    let c = credentials(&s, &id).await;
    assert_eq!(c.access_token.as_deref(), Some(JIRA_REFRESHED));
    assert_eq!(c.refresh_token.as_deref(), Some("atlassian-refresh-rotated"));

    // A lookup that fails fails the connection, with a stable code; nothing is stored.
    s.quirks.modes.lock().expect("lock").insert("mailchimp".into(), "metadata_down".into());
    s.quirks.modes.lock().expect("lock").insert("jira".into(), "no_sites".into());
    let landed = connect(&s, &user, "mailchimp", "").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("provider_unavailable"), "{landed:?}");
    let landed = connect(&s, &user, "jira", "").await;
    assert_eq!(landed.get("error").map(String::as_str), Some("missing_field"), "{landed:?}");
    assert_eq!(count(&s, &user).await, 2);
    s.stub.assert_no_violations();
    s.app.stop().await;
}
