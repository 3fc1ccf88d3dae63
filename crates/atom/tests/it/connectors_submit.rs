//! Connecting API-key and basic-auth services by submitting the credential
//! (`POST /v1/connections`): Telegram's bot token (in the URL's path) and Freshdesk's API key
//! (HTTP Basic, at the helpdesk's own domain, a connection parameter), each proven at the
//! template's identity endpoint (a strict local stub) before it is stored in the vault. A
//! wrong key is refused with `invalid_credentials` and nothing stored; a malformed one never
//! leaves the server; no submitted value appears in any answer or audit row.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;

use crate::common::{CapturedLogs, TestApp, TestDb, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::provider_stub::{Record, Stub};

const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const OTHER_BOT_TOKEN: &str = "123456789:ZZZdqTcvCH1vGWJxfSeofSAs0K5PALDzzz";
const FRESHDESK_KEY: &str = "Fd0123456789abcdefKEY";

/// Telegram's Bot API: `GET /bot<token>/getMe`; a token it did not issue is a 401.
async fn telegram(
    State(record): State<Record>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let seen = record.seen(method, &uri, headers, body);
    if seen.method != Method::GET {
        record.violation(format!("getMe by {}", seen.method));
    }
    if !seen.body.is_empty() {
        record.violation("getMe with a body");
    }
    match seen.path.as_str() {
        p if p == format!("/bot{BOT_TOKEN}/getMe") => (
            StatusCode::OK,
            axum::Json(
                json!({ "ok": true, "result": { "id": 7001, "is_bot": true, "first_name": "Atom", "username": "atom_test_bot" } }),
            ),
        ),
        p if p.starts_with("/bot") && p.ends_with("/getMe") => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })),
        ),
        other => {
            record.violation(format!("unexpected path {other}"));
            (StatusCode::NOT_FOUND, axum::Json(json!({ "ok": false, "error_code": 404, "description": "Not Found" })))
        }
    }
}

/// Freshdesk: `GET /api/v2/agents/me` at the helpdesk's domain (here a path prefix), HTTP
/// Basic with the API key as the user name and `X` as the password.
async fn freshdesk(
    State(record): State<Record>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let seen = record.seen(method, &uri, headers, body);
    if seen.method != Method::GET || seen.path != "/acme/api/v2/agents/me" {
        record.violation(format!("unexpected {} {}", seen.method, seen.path));
    }
    match seen.basic() {
        Some((key, password)) if key == FRESHDESK_KEY && password == "X" => (
            StatusCode::OK,
            axum::Json(json!({ "id": 43000123, "contact": { "email": "agent@acme.test", "name": "Agent" } })),
        ),
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({ "code": "invalid_credentials", "message": "You have to be logged in to perform this action." }),
            ),
        ),
        None => {
            record.violation("no HTTP Basic credentials");
            (StatusCode::UNAUTHORIZED, axum::Json(json!({ "code": "invalid_credentials", "message": "no auth" })))
        }
    }
}

struct Setup {
    app: TestApp,
    stub: Stub,
}

/// The catalog's Telegram and Freshdesk templates with their hosts moved to the stub, as an
/// operator's `connectors.providers_dir` would.
async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(extra: &[(&str, &str)]) -> Setup {
    let record = Record::default();
    let router = Router::new().route("/{*rest}", axum::routing::any(dispatch)).with_state(record.clone());
    let stub = Stub::start(router, record).await;
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    std::fs::create_dir_all(&dir).expect("dir");
    let base = stub.url();
    let telegram = include_str!("../../../../providers/telegram.toml")
        .replace("https://api.telegram.org/bot{bot_token}", &format!("{base}/telegram/bot{{bot_token}}"));
    let freshdesk = include_str!("../../../../providers/freshdesk.toml")
        .replace("https://{domain}.freshdesk.com/api/v2", &format!("{base}/freshdesk/{{domain}}/api/v2"));
    assert!(telegram.contains(&base) && freshdesk.contains(&base), "the templates' hosts moved");
    std::fs::write(dir.join("telegram.toml"), telegram).expect("write");
    std::fs::write(dir.join("freshdesk.toml"), freshdesk).expect("write");
    let dir = dir.display().to_string();
    let mut config = vec![("CONNECTORS_PROVIDERS_DIR", dir.as_str())];
    config.extend_from_slice(extra);
    let app = TestApp::spawn_on(db, &config, Router::new()).await;
    Setup { app, stub }
}

/// Routes `/telegram/…` and `/freshdesk/…` to their handlers, with the prefix removed.
async fn dispatch(
    state: State<Record>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path();
    let rest = |prefix: &str| -> Uri {
        let stripped = &path[prefix.len()..];
        let pq = match uri.query() {
            Some(q) => format!("{stripped}?{q}"),
            None => stripped.to_owned(),
        };
        pq.parse().expect("uri")
    };
    if path.starts_with("/telegram/") {
        telegram(state, method, rest("/telegram"), headers, body).await.into_response()
    } else if path.starts_with("/freshdesk/") {
        freshdesk(state, method, rest("/freshdesk"), headers, body).await.into_response()
    } else {
        state.0.violation(format!("unknown stub path {path}"));
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn submit(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.client.post(app.url("/v1/connections")).bearer_auth(&user.access_token).json(&body).send().await.expect("sent")
}

async fn count(app: &TestApp, user: &TestUser) -> usize {
    let body: Value = app.get_as(&user.access_token, "/v1/connections").await.json().await.expect("json");
    body["connections"].as_array().expect("list").len()
}

#[tokio::test]
async fn a_bot_token_is_proven_at_the_identity_endpoint_then_stored_encrypted() {
    let Setup { app, stub } = setup().await;
    let user = app.user("user").await;

    let response =
        submit(&app, &user, json!({ "provider": "telegram", "credentials": { "bot_token": BOT_TOKEN } })).await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.expect("body");
    assert!(!text.contains(BOT_TOKEN) && !text.contains("AAHdqTcvCH1vGWJ"), "the token is never shown: {text}");
    let view: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(view["provider"], "telegram");
    assert_eq!(view["auth_kind"], "api_key");
    assert_eq!(view["label"], "atom_test_bot", "labelled from getMe");
    assert_eq!(view["status"], "active");
    assert!(view["expires_at"].is_null());
    let id = view["id"].as_str().expect("id").to_owned();

    // In the same vault: listed, encrypted at rest, bound to the row and its owner.
    let list: Value = app.get_as(&user.access_token, "/v1/connections").await.json().await.expect("json");
    assert_eq!(list["connections"][0]["id"], id.as_str());
    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    assert_eq!(row.account_id, "7001", "the bot's id at Telegram");
    assert!(!row.credentials.contains(BOT_TOKEN));
    let credentials = Credentials::open(&app.state.identity.keyring(), &row).expect("decrypts");
    assert_eq!(credentials.fields.get("bot_token").map(String::as_str), Some(BOT_TOKEN));
    assert!(credentials.access_token.is_none());

    // The same bot again updates its connection.
    let again = submit(&app, &user, json!({ "provider": "telegram", "credentials": { "bot_token": BOT_TOKEN } })).await;
    assert_eq!(again.status(), 200, "the same account: updated");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(count(&app, &user).await, 1);

    // Disconnecting deletes it (Telegram has nothing to revoke).
    let response = app
        .client
        .delete(app.url(&format!("/v1/connections/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(count(&app, &user).await, 0);

    let audit = audit_rows(&app).await;
    assert!(audit.iter().any(|r| r["action"] == "connection.created" && r["target"] == id.as_str()));
    assert!(audit.iter().any(|r| r["action"] == "connection.reauthorized" && r["target"] == id.as_str()));
    let audit = serde_json::to_string(&audit).expect("json");
    assert!(!audit.contains(BOT_TOKEN) && !audit.contains("AAHdqTcvCH1vGWJ"), "no token in the audit log");
    assert_eq!(stub.seen().len(), 2, "one identity call per submission");
    stub.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn a_key_the_provider_refuses_is_invalid_credentials_and_nothing_is_stored() {
    let Setup { app, stub } = setup().await;
    let user = app.user("user").await;

    let response =
        submit(&app, &user, json!({ "provider": "telegram", "credentials": { "bot_token": OTHER_BOT_TOKEN } })).await;
    let body = assert_problem(response, 422).await;
    assert_eq!(body["code"], "invalid_credentials");
    assert!(!body.to_string().contains(OTHER_BOT_TOKEN) && !body.to_string().contains("ZZZdqTcv"), "{body}");

    let response = submit(
        &app,
        &user,
        json!({ "provider": "freshdesk", "params": { "domain": "acme" }, "credentials": { "api_key": "WrongKey0123456789" } }),
    )
    .await;
    let body = assert_problem(response, 422).await;
    assert_eq!(body["code"], "invalid_credentials");
    assert!(!body.to_string().contains("WrongKey0123456789"));

    assert_eq!(count(&app, &user).await, 0, "nothing stored");
    let audit = audit_rows(&app).await;
    let failed: Vec<&Value> = audit.iter().filter(|r| r["action"] == "connection.failed").collect();
    assert_eq!(failed.len(), 2, "each refusal audited");
    assert!(failed.iter().all(|r| r["details"]["error"] == "invalid_credentials"), "{failed:?}");
    let audit = serde_json::to_string(&audit).expect("json");
    assert!(!audit.contains("ZZZdqTcv") && !audit.contains("WrongKey0123456789"));
    stub.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn freshdesk_takes_its_domain_parameter_and_the_key_as_the_basic_user_name() {
    let Setup { app, stub } = setup().await;
    let user = app.user("user").await;
    let response = submit(
        &app,
        &user,
        json!({ "provider": "freshdesk", "params": { "domain": "acme" }, "credentials": { "api_key": FRESHDESK_KEY } }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["auth_kind"], "api_key");
    assert_eq!(view["label"], "agent@acme.test");
    assert_eq!(view["params"], json!({ "domain": "acme" }), "the parameter is shown, the key is not");
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].basic(), Some((FRESHDESK_KEY.to_owned(), "X".to_owned())));
    stub.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn malformed_submissions_are_refused_before_the_provider_is_asked() {
    let Setup { app, stub } = setup().await;
    let user = app.user("user").await;
    let cases = [
        // Not the shape of a bot token: the value is never echoed.
        (
            json!({ "provider": "telegram", "credentials": { "bot_token": "not-a-token secret-part" } }),
            422,
            "credentials.bot_token",
        ),
        (json!({ "provider": "telegram", "credentials": {} }), 422, "credentials"),
        (
            json!({ "provider": "telegram", "credentials": { "bot_token": BOT_TOKEN, "extra": "x" } }),
            422,
            "credentials.extra",
        ),
        // A domain that would change the host is refused by its pattern.
        (
            json!({ "provider": "freshdesk", "params": { "domain": "evil.example.com/x" }, "credentials": { "api_key": FRESHDESK_KEY } }),
            422,
            "params.domain",
        ),
        (json!({ "provider": "freshdesk", "credentials": { "api_key": FRESHDESK_KEY } }), 422, "params.domain"),
    ];
    for (body, status, field) in cases {
        let problem = assert_problem(submit(&app, &user, body.clone()).await, status).await;
        let fields: Vec<&str> =
            problem["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
        assert!(fields.contains(&field), "{body} names {field}: {problem}");
        assert!(!problem.to_string().contains("secret-part"), "{problem}");
    }

    // An OAuth provider is connected by authorization, an unknown one is a 404.
    let problem = assert_problem(
        submit(&app, &user, json!({ "provider": "github", "credentials": { "token": "x" } })).await,
        409,
    )
    .await;
    assert_eq!(problem["code"], "wrong_auth_kind");
    let problem =
        assert_problem(submit(&app, &user, json!({ "provider": "nope", "credentials": { "k": "v" } })).await, 404)
            .await;
    assert_eq!(problem["code"], "unknown_provider");

    // An API-key provider is not started as an authorization either.
    let response = app
        .client
        .post(app.url("/v1/connections/authorize"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": "telegram" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(assert_problem(response, 409).await["code"], "wrong_auth_kind");

    assert!(stub.seen().is_empty(), "the provider was never asked");
    assert_eq!(count(&app, &user).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn no_submitted_credential_appears_in_logs_answers_or_audit_rows() {
    let (logs, _guard) = CapturedLogs::install();
    let Setup { app, stub } = setup_with(&[("LOG", "debug")]).await;
    let user = app.user("user").await;
    let mut bodies = Vec::new();
    for body in [
        json!({ "provider": "telegram", "credentials": { "bot_token": BOT_TOKEN } }),
        json!({ "provider": "telegram", "credentials": { "bot_token": OTHER_BOT_TOKEN } }),
        json!({ "provider": "telegram", "credentials": { "bot_token": format!("{BOT_TOKEN} tail") } }),
        json!({ "provider": "freshdesk", "params": { "domain": "acme" }, "credentials": { "api_key": FRESHDESK_KEY } }),
        json!({ "provider": "freshdesk", "params": { "domain": "acme" }, "credentials": { "api_key": "WrongKey0123456789" } }),
    ] {
        bodies.push(submit(&app, &user, body).await.text().await.expect("text"));
    }
    bodies.push(app.get_as(&user.access_token, "/v1/connections").await.text().await.expect("text"));
    let audit = serde_json::to_string(&audit_rows(&app).await).expect("json");
    app.stop().await;
    let logged = logs.text();
    assert!(!logged.is_empty(), "logs were captured");
    for secret in
        [BOT_TOKEN, OTHER_BOT_TOKEN, FRESHDESK_KEY, "WrongKey0123456789", "AAHdqTcvCH1vGWJ", "ZZZdqTcvCH1vGWJ"]
    {
        assert!(!logged.contains(secret), "a credential in the logs");
        assert!(!audit.contains(secret), "a credential in the audit log");
        for body in &bodies {
            assert!(!body.contains(secret), "a credential in an answer: {body}");
        }
    }
    stub.assert_no_violations();
}
