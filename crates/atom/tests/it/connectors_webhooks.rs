//! Incoming webhooks over real HTTP, for every signature scheme the catalog names (Slack v0,
//! GitHub, Stripe, Shopify, Standard Webhooks): a valid event is stored before the answer and
//! published once to its owner (on the bus, and to a real socket.io-client); a forged
//! signature, a tampered body and a stale timestamp are refused (401, audited) with nothing
//! stored; a replayed id stores and publishes nothing more; events nobody owns are kept and
//! counted; the owner's listing pages newest first and only shows their own; retention
//! purges; deliveries reach a connection in order, and the outbox republishes what a stopped
//! node left behind. Secrets are generated per test.

use std::time::Duration;

use atom::bus::{Event, EventKind};
use atom::connectors::template::WebhookScheme;
use atom::connectors::vault::{self, Credentials, Obtained};
use atom::connectors::webhook_schemes::sign;
use atom::storage::webhooks as sql;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::common::{TestApp, TestDb, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;

/// A Standard Webhooks service, as an operator would add one.
const STANDARD_TEMPLATE: &str = r#"id = "hooks-std"
name = "Standard Webhooks sender"
auth_mode = "api_key"

[[fields]]
name = "api_key"
label = "API key"
secret = true
pattern = "^[A-Za-z0-9_]{8,64}$"
example = "key_0123456789"

[api]
base_url = "https://api.example.com"

[api.credential]
in = "bearer"
value = "{api_key}"

[webhooks]
scheme = "standard_webhooks"
type_pointer = "/type"
"#;

/// A random secret of the shape the provider gives.
pub fn new_secret(scheme: WebhookScheme) -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    match scheme {
        WebhookScheme::StandardWebhooks => {
            format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        WebhookScheme::Stripe => format!("whsec_{}", hex(&bytes)),
        _ => hex(&bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_secs() -> i64 {
    atom::storage::now_ms() / 1000
}

/// An application with the Standard Webhooks template beside the built-in ones.
pub async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    std::fs::create_dir_all(&dir).expect("providers dir");
    std::fs::write(dir.join("hooks-std.toml"), STANDARD_TEMPLATE).expect("template");
    let dir = dir.display().to_string();
    let mut config = vec![("CONNECTORS_PROVIDERS_DIR", dir.as_str()), ("CONNECTORS_REFRESH_INTERVAL_SECS", "0")];
    config.extend_from_slice(extra);
    TestApp::spawn_on(db, &config, axum::Router::new()).await
}

/// Sets `provider`'s app with `webhook_secret` through the admin API.
pub async fn set_webhook_secret(app: &TestApp, admin: &TestUser, provider: &str, webhook_secret: &str) {
    let response = app
        .client
        .put(app.url(&format!("/v1/admin/providers/{provider}/app")))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "client_id": "test-client", "client_secret": new_secret(WebhookScheme::GithubSha256),
            "webhook_secret": webhook_secret }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["has_webhook_secret"], true, "{view}");
    assert!(!view.to_string().contains(webhook_secret), "the secret is never shown: {view}");
}

/// A connection of `user` to `provider` with `params`, stored by the vault as a flow does.
pub async fn connection(app: &TestApp, user: &TestUser, provider: &str, label: &str, params: Value) -> String {
    let mut credentials = Credentials::default();
    credentials.access_token = Some(format!("at-{}", uuid::Uuid::new_v4()));
    let obtained = Obtained {
        user_id: user.id.clone(),
        provider: provider.to_owned(),
        auth_kind: "oauth2",
        account_id: uuid::Uuid::new_v4().to_string(),
        label: label.to_owned(),
        scopes: vec!["read".to_owned()],
        params,
        credentials,
        expires_at: None,
    };
    let mut tx = app.state.db.begin().await.expect("tx");
    let (row, _) =
        vault::store(&mut tx, &app.state.identity.keyring(), &obtained, atom::storage::now_ms()).await.expect("stored");
    tx.commit().await.expect("commit");
    row.id
}

/// Posts `body` to `path` with `headers`.
pub async fn post_webhook(app: &TestApp, path: &str, headers: &[(String, String)], body: &str) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).header("content-type", "application/json").body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request.send().await.expect("sent")
}

/// The `webhook.received` notifications waiting on `events`, in arrival order.
fn received(events: &mut broadcast::Receiver<Event>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::Notification { notification_type, data } = event.kind
            && notification_type == "webhook.received"
        {
            out.push((event.user_id, data));
        }
    }
    out
}

async fn events_of(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let response = app.get_as(&user.access_token, &format!("/v1/webhooks/events{query}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// A webhook secret (sealed) and one received event with its delivery, for the backup's
/// every-table round trip.
pub async fn seed_webhooks(app: &TestApp, admin: &TestUser, user: &TestUser) {
    let secret = new_secret(WebhookScheme::GithubSha256);
    set_webhook_secret(app, admin, "github", &secret).await;
    let id = connection(app, user, "github", "seed-hooks", json!({})).await;
    let body = json!({ "zen": "seeded" }).to_string();
    let headers = sign(WebhookScheme::GithubSha256, secret.as_bytes(), body.as_bytes(), 0, "seed-delivery");
    let response = post_webhook(app, &format!("/v1/webhooks/github/{id}"), &headers, &body).await;
    assert_eq!(response.status(), 200);
}

/// One scheme's case: where its events go and how one is signed.
struct Case {
    provider: &'static str,
    scheme: WebhookScheme,
    /// The connection's parameters (routing values).
    params: Value,
    /// Posted to the per-connection URL rather than routed by the template's rule.
    per_connection: bool,
    timestamped: bool,
}

fn body_for(case: &Case, event_id: &str) -> String {
    match case.provider {
        "slack" => json!({ "type": "event_callback", "team_id": "T0WEBHOOK1", "event_id": event_id,
            "event": { "type": "message", "text": "hello" } })
        .to_string(),
        "stripe" => json!({ "id": event_id, "type": "invoice.paid", "object": "event" }).to_string(),
        _ => json!({ "type": "thing.happened", "n": 1 }).to_string(),
    }
}

fn headers_for(case: &Case, secret: &str, body: &str, timestamp: i64, event_id: &str) -> Vec<(String, String)> {
    let mut headers = sign(case.scheme, secret.as_bytes(), body.as_bytes(), timestamp, event_id);
    if case.provider == "shopify" {
        headers.push(("X-Shopify-Shop-Domain".to_owned(), "hook-shop.myshopify.com".to_owned()));
        headers.push(("X-Shopify-Topic".to_owned(), "orders/create".to_owned()));
    }
    if case.provider == "github" {
        headers.push(("X-GitHub-Event".to_owned(), "push".to_owned()));
    }
    headers
}

#[tokio::test]
async fn each_scheme_stores_a_valid_event_publishes_it_once_and_refuses_forgeries_tampering_staleness_and_replays() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let other = app.user("user").await;
    let cases = [
        Case {
            provider: "slack",
            scheme: WebhookScheme::SlackV0,
            params: json!({ "team_id": "T0WEBHOOK1" }),
            per_connection: false,
            timestamped: true,
        },
        Case {
            provider: "github",
            scheme: WebhookScheme::GithubSha256,
            params: json!({}),
            per_connection: true,
            timestamped: false,
        },
        Case {
            provider: "stripe",
            scheme: WebhookScheme::Stripe,
            params: json!({}),
            per_connection: true,
            timestamped: true,
        },
        Case {
            provider: "shopify",
            scheme: WebhookScheme::ShopifyHmac,
            params: json!({ "shop": "hook-shop" }),
            per_connection: false,
            timestamped: false,
        },
        Case {
            provider: "hooks-std",
            scheme: WebhookScheme::StandardWebhooks,
            params: json!({}),
            per_connection: true,
            timestamped: true,
        },
    ];
    let mut stored_total = 0;
    for case in &cases {
        let provider = case.provider;
        let secret = new_secret(case.scheme);
        set_webhook_secret(&app, &admin, provider, &secret).await;
        let connection_id =
            connection(&app, &owner, provider, &format!("{provider} account"), case.params.clone()).await;
        // Another user's connection of another account of the same provider: not an owner.
        connection(&app, &other, provider, "elsewhere", json!({ "team_id": "T0OTHER", "shop": "other-shop" })).await;
        let path = if case.per_connection {
            format!("/v1/webhooks/{provider}/{connection_id}")
        } else {
            format!("/v1/webhooks/{provider}")
        };
        let mut events = app.state.bus.subscribe();

        // Valid: stored before the answer, published once, to the owner only.
        let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let body = body_for(case, &event_id);
        let headers = headers_for(case, &secret, &body, now_secs(), &event_id);
        let response = post_webhook(&app, &path, &headers, &body).await;
        assert_eq!(response.status(), 200, "{provider}: {}", response.text().await.unwrap_or_default());
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["status"], "stored", "{provider}: {answer}");
        assert_eq!(answer["owners"], 1, "{provider}: {answer}");
        let stored_id = answer["event_id"].as_str().expect("event id").to_owned();
        if provider != "shopify" {
            // Shopify's id comes from its header, which `sign` fills with the same id.
            assert_eq!(stored_id, event_id, "{provider}: the provider's id is the replay key");
        }
        assert!(sql::event_exists(&app.state.db, provider, &stored_id).await.expect("query"), "{provider} stored");
        stored_total += 1;
        let published = received(&mut events);
        assert_eq!(published.len(), 1, "{provider}: published once: {published:?}");
        let (user_id, data) = &published[0];
        assert_eq!(user_id, &owner.id, "{provider}: to its owner");
        assert_eq!(data["connection_id"], connection_id.as_str());
        assert_eq!(data["provider"], provider);
        assert_eq!(data["event_id"], stored_id.as_str());
        assert!(!data.to_string().contains(&secret));

        let listed = events_of(&app, &owner, "").await;
        assert_eq!(listed["events"][0]["event_id"], stored_id.as_str(), "{provider}: {listed}");
        assert_eq!(listed["events"][0]["connection_id"], connection_id.as_str());
        assert_eq!(listed["events"][0]["payload"], serde_json::from_str::<Value>(&body).expect("json"));
        assert_eq!(listed["events"].as_array().map(Vec::len), Some(stored_total));

        // A forged signature (another secret), a tampered body: 401, audited, nothing stored.
        let forged_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let forged_body = body_for(case, &forged_id);
        let forged = headers_for(case, &new_secret(case.scheme), &forged_body, now_secs(), &forged_id);
        let problem = assert_problem(post_webhook(&app, &path, &forged, &forged_body).await, 401).await;
        assert_eq!(problem["code"], "bad_signature", "{provider}: {problem}");
        let tampered_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let signed_body = body_for(case, &tampered_id);
        let tampered = headers_for(case, &secret, &signed_body, now_secs(), &tampered_id);
        let altered = signed_body.replacen('{', "{ ", 1);
        let problem = assert_problem(post_webhook(&app, &path, &tampered, &altered).await, 401).await;
        assert_eq!(problem["code"], "bad_signature", "{provider}: {problem}");
        for id in [&forged_id, &tampered_id] {
            assert!(
                !sql::event_exists(&app.state.db, provider, id).await.expect("query"),
                "{provider}: nothing stored"
            );
        }
        // Missing headers: refused the same way.
        let problem = assert_problem(post_webhook(&app, &path, &[], &body).await, 401).await;
        assert_eq!(problem["code"], "malformed", "{provider}: {problem}");

        // A stale timestamp, correctly signed: refused, nothing stored.
        if case.timestamped {
            let stale_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
            let stale_body = body_for(case, &stale_id);
            let stale = headers_for(case, &secret, &stale_body, now_secs() - 600, &stale_id);
            let problem = assert_problem(post_webhook(&app, &path, &stale, &stale_body).await, 401).await;
            assert_eq!(problem["code"], "stale", "{provider}: {problem}");
            assert!(!sql::event_exists(&app.state.db, provider, &stale_id).await.expect("query"));
        }

        // The valid request again: nothing more stored or published.
        let replay = post_webhook(&app, &path, &headers, &body).await;
        assert_eq!(replay.status(), 200);
        let answer: Value = replay.json().await.expect("json");
        assert_eq!(answer["status"], "duplicate", "{provider}: {answer}");
        // Re-signed with a fresh timestamp, as a provider's retry is: still the same event.
        let retry = headers_for(case, &secret, &body, now_secs(), &event_id);
        let answer: Value = post_webhook(&app, &path, &retry, &body).await.json().await.expect("json");
        assert_eq!(answer["status"], "duplicate", "{provider}: {answer}");
        assert!(received(&mut events).is_empty(), "{provider}: nothing published for the refusals and replays");
        let listed = events_of(&app, &owner, "").await;
        assert_eq!(listed["events"].as_array().map(Vec::len), Some(stored_total), "{provider}: {listed}");
    }

    // The other user sees none of the owner's events.
    assert_eq!(events_of(&app, &other, "").await["events"], json!([]));
    // Each refusal left an audit row naming the provider and the reason, and no secret.
    let rows = audit_rows(&app).await;
    let rejected: Vec<&Value> = rows.iter().filter(|r| r["action"] == "webhook.rejected").collect();
    assert_eq!(rejected.len(), 5 * 3 + 3, "bad signature ×2, malformed ×1 per scheme, stale ×3: {rejected:?}");
    assert!(rejected.iter().all(|r| r["outcome"] == "denied" && r["actor_type"] == "anonymous"));
    assert!(rejected.iter().any(|r| r["details"]["reason"] == "bad_signature" && r["details"]["provider"] == "stripe"));
    app.stop().await;
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_its_challenge_and_nothing_is_stored() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let secret = new_secret(WebhookScheme::SlackV0);
    set_webhook_secret(&app, &admin, "slack", &secret).await;
    let challenge = uuid::Uuid::new_v4().to_string();
    let body = json!({ "token": "legacy", "challenge": challenge, "type": "url_verification" }).to_string();
    let headers = sign(WebhookScheme::SlackV0, secret.as_bytes(), body.as_bytes(), now_secs(), "");
    let response = post_webhook(&app, "/v1/webhooks/slack", &headers, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({ "challenge": challenge }));
    // Unsigned, the challenge is a forgery like any other.
    assert_problem(post_webhook(&app, "/v1/webhooks/slack", &[], &body).await, 401).await;
    let user = app.user("user").await;
    assert_eq!(events_of(&app, &user, "").await["events"], json!([]));
    app.stop().await;
}

async fn metric(app: &TestApp, provider: &str, verdict: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    let series = format!("connector_webhooks_total{{provider=\"{provider}\",verdict=\"{verdict}\"}}");
    text.lines().find_map(|line| line.strip_prefix(&series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test]
async fn events_no_connection_owns_are_kept_and_counted_and_unknown_or_unset_providers_are_refused() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let secret = new_secret(WebhookScheme::SlackV0);
    // No secret yet: nothing can be verified, so nothing is taken.
    let body = json!({ "type": "event_callback", "team_id": "T0NOBODY", "event_id": "Ev0NOBODY" }).to_string();
    let headers = sign(WebhookScheme::SlackV0, secret.as_bytes(), body.as_bytes(), now_secs(), "");
    let problem = assert_problem(post_webhook(&app, "/v1/webhooks/slack", &headers, &body).await, 409).await;
    assert_eq!(problem["code"], "not_configured");
    set_webhook_secret(&app, &admin, "slack", &secret).await;

    let before = metric(&app, "slack", "unrouted").await;
    let response = post_webhook(&app, "/v1/webhooks/slack", &headers, &body).await;
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["status"], "stored", "{answer}");
    assert_eq!(answer["owners"], 0, "{answer}");
    assert!(sql::event_exists(&app.state.db, "slack", "Ev0NOBODY").await.expect("query"), "kept");
    assert_eq!(metric(&app, "slack", "unrouted").await, before + 1.0, "counted");
    // A per-connection URL naming no connection of the provider: kept without an owner too.
    let body = json!({ "type": "event_callback", "team_id": "T0NOBODY", "event_id": "Ev0GONE" }).to_string();
    let headers = sign(WebhookScheme::SlackV0, secret.as_bytes(), body.as_bytes(), now_secs(), "");
    let path = format!("/v1/webhooks/slack/{}", uuid::Uuid::new_v4());
    let answer: Value = post_webhook(&app, &path, &headers, &body).await.json().await.expect("json");
    assert_eq!(answer["owners"], 0, "{answer}");
    assert!(metric(&app, "slack", "accepted").await >= 0.0);

    // No such provider, or one whose template receives no webhooks.
    for path in ["/v1/webhooks/no-such-provider", "/v1/webhooks/notion"] {
        let problem = assert_problem(post_webhook(&app, path, &headers, &body).await, 404).await;
        assert_eq!(problem["code"], "not_received", "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_anything_is_stored() {
    let app = spawn(&[("CONNECTORS_WEBHOOK_MAX_BODY_BYTES", "2048")]).await;
    let admin = app.user("admin").await;
    let secret = new_secret(WebhookScheme::GithubSha256);
    set_webhook_secret(&app, &admin, "github", &secret).await;
    let body = json!({ "pad": "x".repeat(4096) }).to_string();
    let headers = sign(WebhookScheme::GithubSha256, secret.as_bytes(), body.as_bytes(), now_secs(), "big-delivery");
    assert_problem(post_webhook(&app, "/v1/webhooks/github", &headers, &body).await, 413).await;
    assert!(!sql::event_exists(&app.state.db, "github", "big-delivery").await.expect("query"));
    app.stop().await;
}

#[tokio::test]
async fn the_owners_events_page_newest_first_and_retention_purges_them() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let secret = new_secret(WebhookScheme::GithubSha256);
    set_webhook_secret(&app, &admin, "github", &secret).await;
    let id = connection(&app, &owner, "github", "octocat", json!({})).await;
    let path = format!("/v1/webhooks/github/{id}");
    for n in 0..5 {
        let body = json!({ "n": n }).to_string();
        let headers =
            sign(WebhookScheme::GithubSha256, secret.as_bytes(), body.as_bytes(), 0, &format!("delivery-{n}"));
        assert_eq!(post_webhook(&app, &path, &headers, &body).await.status(), 200);
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = events_of(&app, &owner, &query).await;
        let events = page["events"].as_array().expect("events");
        assert!(events.len() <= 2);
        seen.extend(events.iter().map(|e| e["event_id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..5).rev().map(|n| format!("delivery-{n}")).collect();
    assert_eq!(seen, expected, "every event once, newest first");
    let problem = assert_problem(app.get_as(&owner.access_token, "/v1/webhooks/events?cursor=nope").await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "cursor");
    assert_problem(app.get_as(&owner.access_token, "/v1/webhooks/events?limit=0").await, 422).await;
    assert_problem(app.client.get(app.url("/v1/webhooks/events")).send().await.expect("sent"), 401).await;

    // Retention: events received before the cutoff go, with their deliveries.
    assert_eq!(atom::connectors::webhooks::purge(&app.state.db, 0).await.expect("purge"), 0, "none is that old");
    let purged = atom::connectors::webhooks::purge(&app.state.db, atom::storage::now_ms() + 1).await.expect("purge");
    assert_eq!(purged, 5);
    assert_eq!(events_of(&app, &owner, "").await["events"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_reach_a_connection_in_order_and_the_outbox_republishes_what_was_left() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let secret = new_secret(WebhookScheme::SlackV0);
    set_webhook_secret(&app, &admin, "slack", &secret).await;
    let connection_id = connection(&app, &owner, "slack", "workspace", json!({ "team_id": "T0ORDER" })).await;
    let mut events = app.state.bus.subscribe();
    let mut senders = Vec::new();
    for n in 0..20 {
        let (client, url, secret) = (app.client.clone(), app.url("/v1/webhooks/slack"), secret.clone());
        senders.push(tokio::spawn(async move {
            let body =
                json!({ "type": "event_callback", "team_id": "T0ORDER", "event_id": format!("Ev{n:04}") }).to_string();
            let mut request = client.post(url).body(body.clone());
            for (k, v) in sign(WebhookScheme::SlackV0, secret.as_bytes(), body.as_bytes(), now_secs(), "") {
                request = request.header(k, v);
            }
            request.send().await.expect("sent").status().as_u16()
        }));
    }
    for sender in senders {
        assert_eq!(sender.await.expect("task"), 200);
    }
    let published = received(&mut events);
    let seqs: Vec<i64> = published.iter().map(|(_, d)| d["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs.len(), 20, "each once: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

    // A node that stopped between commit and publish: the deliveries are still unpublished.
    let reset = "UPDATE webhook_deliveries SET published_at = NULL, created_at = 0";
    match &app.state.db {
        atom::storage::Db::Sqlite(pool) => sqlx::query(reset).execute(pool).await.map(drop),
        atom::storage::Db::Postgres(pool, _) => sqlx::query(reset).execute(pool).await.map(drop),
    }
    .expect("reset");
    let listed = events_of(&app, &owner, "").await;
    assert!(listed["events"].as_array().expect("events").iter().all(|e| e["published"] == false));
    // The background pass runs every few seconds; it is waited for by its effect.
    let republished = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = Vec::new();
        while got.len() < 20 {
            let event = events.recv().await.expect("bus open");
            if let EventKind::Notification { notification_type, data } = event.kind
                && notification_type == "webhook.received"
            {
                got.push(data["seq"].as_i64().expect("seq"));
            }
        }
        got
    })
    .await
    .expect("republished by the background pass");
    assert_eq!(republished, seqs, "the same deliveries, in the same order");
    // Marked in the transaction that published them, which commits after the last publish.
    let listed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let listed = events_of(&app, &owner, "").await;
            if listed["events"].as_array().expect("events").iter().all(|e| e["published"] == true) {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("marked published");
    assert!(listed["events"].as_array().expect("events").iter().all(|e| e["connection_id"] == connection_id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn the_owners_socket_receives_the_notification() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let secret = new_secret(WebhookScheme::ShopifyHmac);
    set_webhook_secret(&app, &admin, "shopify", &secret).await;
    let connection_id = connection(&app, &owner, "shopify", "hook shop", json!({ "shop": "hook-shop" })).await;
    let mut peer = crate::socket_peer::SocketPeer::start().await;
    let url = app.url("");
    peer.connected(
        "owner",
        crate::socket_peer::Open { url: &url, transport: "websocket", token: &owner.access_token, reconnection: false },
    )
    .await;
    let body = json!({ "id": 820982911946154508_u64, "email": "jon@example.com" }).to_string();
    let mut headers = sign(WebhookScheme::ShopifyHmac, secret.as_bytes(), body.as_bytes(), 0, "b54557e4-bdd9-4b37");
    headers.push(("X-Shopify-Shop-Domain".to_owned(), "hook-shop.myshopify.com".to_owned()));
    assert_eq!(post_webhook(&app, "/v1/webhooks/shopify", &headers, &body).await.status(), 200);
    let notification = peer.server_event("owner", "notification").await;
    let text = notification.to_string();
    assert!(text.contains("webhook.received") && text.contains(&connection_id), "{notification}");
    peer.kill().await;
    app.stop().await;
}
