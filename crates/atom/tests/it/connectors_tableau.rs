//! Tableau's sign-in, against a strict local stub of Tableau's REST API: a connection is
//! submitted (a personal access token's name and secret, the server, the site's content URL)
//! and signed in (`POST /api/3.24/auth/signin`, the JSON body Tableau documents); the session
//! token is what the proxy injects (`X-Tableau-Auth`) into calls under
//! `/sites/{site_id}/`, the site id being the value the sign-in keeps. When the session ends
//! (Tableau's idle timeout, played by the stub) the proxy's 401 makes the vault sign in again
//! with the stored token and retry once; a token Tableau no longer accepts makes the
//! connection `needs_reauth`; disconnecting signs the session out. A wrong secret is refused
//! at submission with nothing stored, and no secret or session token appears in an answer.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;

use crate::common::{TestApp, TestDb, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::provider_stub::{Record, Seen, Stub};

const PAT_NAME: &str = "atom";
const PAT_SECRET: &str = "Q2h5c2FudGhlbXVtMDEyMzQ1Njc4OQ==:aBcDeFgHiJkLmNoPqRsTuVwXyZ012345";
const SITE: &str = "acme";
const SITE_ID: &str = "9a8b7c6d-5e4f-3a2b-1c0d-9e8f7a6b5c4d";
const USER_ID: &str = "d5704762-603a-42b2-a9a7-f9cd2b2c4253";

#[derive(Debug, Clone, Default)]
struct Tableau {
    record: Record,
    /// Session tokens signed in and not yet ended.
    sessions: Arc<Mutex<BTreeSet<String>>>,
    signins: Arc<Mutex<u64>>,
    /// The PAT was revoked at Tableau: every sign-in with it is refused.
    pat_revoked: Arc<Mutex<bool>>,
}

impl Tableau {
    /// Tableau's idle timeout: every session ends.
    fn end_sessions(&self) {
        self.sessions.lock().expect("lock").clear();
    }

    fn live(&self, seen: &Seen) -> bool {
        seen.header("x-tableau-auth").is_some_and(|t| self.sessions.lock().expect("lock").contains(t))
    }
}

fn tableau_error(status: StatusCode, code: &str, summary: &str) -> Response {
    (status, axum::Json(json!({ "error": { "summary": summary, "detail": summary, "code": code } }))).into_response()
}

async fn handle(State(t): State<Tableau>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = t.record.seen(method, &uri, headers, body);
    let sites = format!("/api/3.24/sites/{SITE_ID}/");
    match (seen.method.clone(), seen.path.as_str()) {
        (Method::POST, "/api/3.24/auth/signin") => {
            if seen.content_type() != Some("application/json") {
                t.record.violation(format!("sign-in with content type {:?}", seen.content_type()));
            }
            if seen.header("accept") != Some("application/json") {
                t.record.violation("sign-in without Accept: application/json (Tableau answers XML)");
            }
            if seen.header("x-tableau-auth").is_some() {
                t.record.violation("a session token on the sign-in");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&seen.body) else {
                t.record.violation("a sign-in body that is not JSON");
                return tableau_error(StatusCode::BAD_REQUEST, "400000", "Bad Request");
            };
            let credentials = &body["credentials"];
            let keys: BTreeSet<&str> =
                credentials.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            if body.as_object().map(|o| o.len()) != Some(1)
                || keys != BTreeSet::from(["personalAccessTokenName", "personalAccessTokenSecret", "site"])
                || credentials["site"] != json!({ "contentUrl": SITE })
            {
                t.record.violation(format!("a sign-in body Tableau does not expect: {keys:?}"));
                return tableau_error(StatusCode::BAD_REQUEST, "400000", "Bad Request");
            }
            let accepted = credentials["personalAccessTokenName"] == PAT_NAME
                && credentials["personalAccessTokenSecret"] == PAT_SECRET
                && !*t.pat_revoked.lock().expect("lock");
            if !accepted {
                // Wrong or revoked tokens are cases the tests make on purpose.
                return tableau_error(StatusCode::UNAUTHORIZED, "401001", "Signin Error");
            }
            let n = {
                let mut signins = t.signins.lock().expect("lock");
                *signins += 1;
                *signins
            };
            let token = format!("session-{n:04}-HvZMqFFfQQmOM4L-AZNIQA|5fI6T54OPK1Gn1p4w0RtHv6EkojWRTwq");
            t.sessions.lock().expect("lock").insert(token.clone());
            axum::Json(json!({
                "credentials": {
                    "site": { "id": SITE_ID, "contentUrl": SITE },
                    "user": { "id": USER_ID },
                    "token": token,
                    "estimatedTimeToExpiration": "361:24:17"
                }
            }))
            .into_response()
        }
        (Method::POST, "/api/3.24/auth/signout") => {
            let token = seen.header("x-tableau-auth").unwrap_or_default().to_owned();
            if !t.sessions.lock().expect("lock").remove(&token) {
                return tableau_error(StatusCode::UNAUTHORIZED, "401002", "Unauthorized Access");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, path) if path.starts_with(&sites) => {
            if !t.live(&seen) {
                // An ended session: the case that makes the vault sign in again.
                return tableau_error(StatusCode::UNAUTHORIZED, "401002", "Unauthorized Access");
            }
            axum::Json(json!({ "pagination": { "pageNumber": "1", "pageSize": "100", "totalAvailable": "0" }, "workbooks": { "workbook": [] } }))
                .into_response()
        }
        (method, path) => {
            t.record.violation(format!("unexpected {method} {path}"));
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

struct Setup {
    app: TestApp,
    stub: Stub,
    tableau: Tableau,
    server: String,
}

async fn setup() -> Setup {
    let tableau = Tableau::default();
    let router = Router::new().route("/{*rest}", axum::routing::any(handle)).with_state(tableau.clone());
    let stub = Stub::start(router, tableau.record.clone()).await;
    let server = stub.addr.to_string();
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    std::fs::create_dir_all(&dir).expect("dir");
    // The catalog's template with its host moved to the stub: plain http on loopback, and a
    // server parameter that admits `127.0.0.1:<port>`.
    let template = include_str!("../../../../providers/tableau.toml")
        .replace("https://{server}", "http://{server}")
        .replace(
            r#"pattern = "^[a-z0-9][a-z0-9-]*(\\.[a-z0-9][a-z0-9-]*)+$""#,
            r#"pattern = "^127\\.0\\.0\\.1:[0-9]+$""#,
        )
        .replace(r#"example = "10ax.online.tableau.com""#, &format!(r#"example = "{server}""#));
    assert!(!template.contains("https://{server}") && template.contains("127\\\\.0"), "{template}");
    std::fs::write(dir.join("tableau.toml"), template).expect("write");
    let dir = dir.display().to_string();
    let config = [("CONNECTORS_PROVIDERS_DIR", dir.as_str()), ("CONNECTORS_PROXY_ALLOW_RANGES", "[\"127.0.0.0/8\"]")];
    let app = TestApp::spawn_on(db, &config, Router::new()).await;
    Setup { app, stub, tableau, server }
}

async fn submit(s: &Setup, user: &TestUser, secret: &str) -> reqwest::Response {
    s.app
        .client
        .post(s.app.url("/v1/connections"))
        .bearer_auth(&user.access_token)
        .json(&json!({
            "provider": "tableau",
            "params": { "server": s.server, "site": SITE },
            "credentials": { "pat_name": PAT_NAME, "pat_secret": secret },
        }))
        .send()
        .await
        .expect("sent")
}

async fn workbooks(s: &Setup, user: &TestUser, id: &str) -> reqwest::Response {
    s.app.get_as(&user.access_token, &format!("/v1/proxy/{id}/workbooks")).await
}

fn credentials(s: &Setup, row: &sql::ConnectionRow) -> Credentials {
    Credentials::open(&s.app.state.identity.keyring(), row).expect("decrypts")
}

#[tokio::test]
async fn a_tableau_token_signs_in_its_session_carries_the_calls_and_an_ended_session_signs_in_again() {
    let s = setup().await;
    let user = s.app.user("user").await;

    // A secret Tableau refuses: 422, nothing stored.
    let refused = assert_problem(submit(&s, &user, "WrongSecret0123456789==:nope").await, 422).await;
    assert_eq!(refused["code"], "invalid_credentials", "{refused}");
    assert!(!refused.to_string().contains("WrongSecret"), "{refused}");

    let response = submit(&s, &user, PAT_SECRET).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let view: Value = response.json().await.expect("json");
    let id = view["id"].as_str().expect("id").to_owned();
    assert_eq!(view["auth_kind"], "api_key");
    assert_eq!(view["params"]["site_id"], SITE_ID, "kept from the sign-in: {view}");
    assert_eq!(view["params"]["user_id"], USER_ID);
    assert_eq!(view["params"]["site"], SITE);
    assert!(view["expires_at"].is_string(), "the session's assumed end: {view}");
    let row = sql::by_id(&s.app.state.db, &id).await.expect("query").expect("row");
    let first = credentials(&s, &row).access_token.clone().expect("the session token");
    assert!(first.starts_with("session-0001"), "the sign-in's token is the access token");
    assert_eq!(credentials(&s, &row).fields.get("pat_secret").map(String::as_str), Some(PAT_SECRET));

    // The proxy injects the session token into a call under the site.
    let response = workbooks(&s, &user, &id).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let call = s.stub.seen().into_iter().rfind(|r| r.path.ends_with("/workbooks")).expect("the call");
    assert_eq!(call.path, format!("/api/3.24/sites/{SITE_ID}/workbooks"));
    assert_eq!(call.header("x-tableau-auth"), Some(first.as_str()));

    // Tableau ends idle sessions: the 401 makes the vault sign in again with the stored
    // token, store the new session, and retry the call once.
    s.tableau.end_sessions();
    let response = workbooks(&s, &user, &id).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(*s.tableau.signins.lock().expect("lock"), 2, "one sign-in again");
    let row = sql::by_id(&s.app.state.db, &id).await.expect("query").expect("row");
    let second = credentials(&s, &row).access_token.clone().expect("token");
    assert!(second.starts_with("session-0002"), "the new session stored");
    assert!(row.last_refresh_at.is_some());
    let retried = s.stub.seen().into_iter().rfind(|r| r.path.ends_with("/workbooks")).expect("the retry");
    assert_eq!(retried.header("x-tableau-auth"), Some(second.as_str()));

    // Disconnecting signs the session out, then deletes.
    let response = s
        .app
        .client
        .delete(s.app.url(&format!("/v1/connections/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["revoked"], true, "{body}");
    assert!(s.tableau.sessions.lock().expect("lock").is_empty(), "the session ended at Tableau");

    let audit = serde_json::to_string(&audit_rows(&s.app).await).expect("json");
    assert!(audit.contains("connection.refreshed"), "the sign-in again is audited as a refresh");
    for secret in [PAT_SECRET, first.as_str(), second.as_str()] {
        assert!(!audit.contains(secret) && !view.to_string().contains(secret), "no secret shown");
    }
    s.stub.assert_no_violations();
    s.app.stop().await;
}

#[tokio::test]
async fn a_token_tableau_no_longer_accepts_makes_the_connection_need_its_user() {
    let s = setup().await;
    let user = s.app.user("user").await;
    let response = submit(&s, &user, PAT_SECRET).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    // The user revoked the token at Tableau, and the session ended.
    *s.tableau.pat_revoked.lock().expect("lock") = true;
    s.tableau.end_sessions();
    let problem = assert_problem(workbooks(&s, &user, &id).await, 409).await;
    assert_eq!(problem["code"], "connection_needs_reauth", "{problem}");
    let view: Value =
        s.app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["status"], "needs_reauth", "{view}");
    assert!(view["last_error"].as_str().is_some_and(|e| e.starts_with("invalid_credentials")), "{view}");
    s.stub.assert_no_violations();
    s.app.stop().await;
}
