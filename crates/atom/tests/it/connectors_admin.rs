//! The admin view of every connection: the listing with its filters (status, provider,
//! owner, label) and cursor pages, the counts per provider and status, a connection's
//! history (refreshes, failures, webhooks received, admin actions), a forced refresh and a
//! revocation against the real authorization server, each audited; users are refused every
//! admin route, and no answer carries a credential.

use serde_json::{Value, json};

use atom::connectors::template::WebhookScheme;
use atom::connectors::webhook_schemes::sign;
use atom::storage::connections as conn_sql;

use crate::common::{TestApp, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::connectors_webhooks::{connection, new_secret, now_secs, post_webhook, set_webhook_secret, spawn};
use crate::oauth_peer::{self, OAuthPeer};

async fn get_json(app: &TestApp, admin: &TestUser, path: &str) -> Value {
    let response = app.get_as(&admin.access_token, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

fn ids(page: &Value) -> Vec<String> {
    page["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn admins_list_every_connection_with_filters_and_pages_and_count_them() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let (alice, bob) = (app.user("user").await, app.user("user").await);
    let a1 = connection(&app, &alice, "slack", "Alice at Acme", json!({ "team_id": "T0ACME" })).await;
    let a2 = connection(&app, &alice, "github", "alice-gh", json!({})).await;
    let b1 = connection(&app, &bob, "slack", "Bob at Acme", json!({ "team_id": "T0ACME" })).await;
    let b2 = connection(&app, &bob, "notion", "Bob's 100%_notes", json!({})).await;
    let mut tx = app.state.db.begin().await.expect("tx");
    conn_sql::record_failure(&mut tx, &b1, "needs_reauth", "invalid_grant: revoked", atom::storage::now_ms())
        .await
        .expect("failure");
    tx.commit().await.expect("commit");

    let all = get_json(&app, &admin, "/v1/admin/connections").await;
    assert_eq!(ids(&all), vec![b2.clone(), b1.clone(), a2.clone(), a1.clone()], "newest first");
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["connections"][3];
    assert_eq!(first["user_id"], alice.id.as_str());
    assert_eq!(first["owner_email"], alice.email.as_str());
    assert_eq!(first["provider"], "slack");
    assert_eq!(first["params"]["team_id"], "T0ACME");
    let text = all.to_string();
    assert!(!text.contains("at-") && !text.contains("credentials") && !text.contains("access_token"), "{text}");

    let page = |q: &str| format!("/v1/admin/connections?{q}");
    assert_eq!(ids(&get_json(&app, &admin, &page("status=needs_reauth")).await), vec![b1.clone()]);
    assert_eq!(ids(&get_json(&app, &admin, &page("provider=slack")).await), vec![b1.clone(), a1.clone()]);
    assert_eq!(ids(&get_json(&app, &admin, &page(&format!("owner={}", alice.id))).await), vec![a2.clone(), a1.clone()]);
    assert_eq!(ids(&get_json(&app, &admin, &page("label=acme")).await), vec![b1.clone(), a1.clone()], "any case");
    // LIKE's wildcards are taken literally.
    assert_eq!(ids(&get_json(&app, &admin, &page("label=100%25_")).await), vec![b2.clone()]);
    assert_eq!(ids(&get_json(&app, &admin, &page("label=a%25e")).await), Vec::<String>::new(), "% is no wildcard");
    assert_eq!(ids(&get_json(&app, &admin, &page("provider=slack&status=active")).await), vec![a1.clone()]);

    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let body = get_json(&app, &admin, &page(&query)).await;
        seen.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all), "pages cover every connection once");

    for bad in ["status=broken", "limit=0", "cursor=nope", "label="] {
        assert_problem(app.get_as(&admin.access_token, &page(bad)).await, 422).await;
    }

    let stats = get_json(&app, &admin, "/v1/admin/connections/stats").await;
    assert_eq!(stats["total"], 4, "{stats}");
    assert_eq!(stats["by_status"], json!({ "active": 3, "needs_reauth": 1 }));
    let slack = stats["providers"].as_array().expect("providers").iter().find(|p| p["provider"] == "slack").cloned();
    assert_eq!(
        slack,
        Some(json!({ "provider": "slack", "total": 2, "by_status": { "active": 1, "needs_reauth": 1 } }))
    );
    app.stop().await;
}

#[tokio::test]
async fn users_are_refused_every_admin_connection_route_and_see_only_their_own_events() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let (alice, bob) = (app.user("user").await, app.user("user").await);
    let id = connection(&app, &alice, "github", "alice-gh", json!({})).await;
    let secret = new_secret(WebhookScheme::GithubSha256);
    set_webhook_secret(&app, &admin, "github", &secret).await;
    let body = json!({ "zen": "Keep it logically awesome." }).to_string();
    let headers = sign(WebhookScheme::GithubSha256, secret.as_bytes(), body.as_bytes(), 0, "delivery-alice");
    assert_eq!(post_webhook(&app, &format!("/v1/webhooks/github/{id}"), &headers, &body).await.status(), 200);

    for user in [&alice, &bob] {
        for (method, path) in [
            ("GET", "/v1/admin/connections".to_owned()),
            ("GET", "/v1/admin/connections/stats".to_owned()),
            ("GET", format!("/v1/admin/connections/{id}/history")),
            ("POST", format!("/v1/admin/connections/{id}/refresh")),
            ("DELETE", format!("/v1/admin/connections/{id}")),
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let response = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(&user.access_token)
                .send()
                .await
                .expect("sent");
            let problem = assert_problem(response, 403).await;
            assert_eq!(problem["type"], "urn:atom:problem:forbidden", "{method} {path}");
        }
    }
    // A user's own connections route does not reach another user's connection either.
    assert_problem(app.get_as(&bob.access_token, &format!("/v1/connections/{id}")).await, 404).await;
    let bob_events: Value = app.get_as(&bob.access_token, "/v1/webhooks/events").await.json().await.expect("json");
    assert_eq!(bob_events["events"], json!([]));
    let alice_events: Value = app.get_as(&alice.access_token, "/v1/webhooks/events").await.json().await.expect("json");
    assert_eq!(alice_events["events"][0]["event_id"], "delivery-alice");
    // Still there: nothing the users tried changed it.
    assert!(conn_sql::by_id(&app.state.db, &id).await.expect("query").is_some());
    app.stop().await;
}

#[tokio::test]
async fn an_admin_forces_a_refresh_sees_the_history_and_revokes_against_the_real_provider() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let id = oauth_peer::connect(&app, &owner, "peer-basic", "alice").await;
    let keyring = app.state.identity.keyring();
    let token_of = |row: &conn_sql::ConnectionRow| {
        atom::connectors::vault::Credentials::open(&keyring, row).expect("decrypts").access_token.clone()
    };
    let before = token_of(&conn_sql::by_id(&app.state.db, &id).await.expect("query").expect("row"));
    let requests = peer.token_requests().await;

    // Not due (the token lives an hour): refreshed all the same.
    let response = app
        .client
        .post(app.url(&format!("/v1/admin/connections/{id}/refresh")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["user_id"], owner.id.as_str());
    assert!(view["last_refresh_at"].is_string(), "{view}");
    let after = token_of(&conn_sql::by_id(&app.state.db, &id).await.expect("query").expect("row"));
    assert_ne!(after, before, "a new access token is stored");
    assert!(!view.to_string().contains(after.as_deref().expect("token")), "never the token");
    assert_eq!(peer.token_requests().await, requests + 1, "one refresh at the provider");

    // A refresh the provider fails (every attempt): the admin is told, and it is recorded.
    peer.fault(json!({ "token": "server_error", "count": 3 })).await;
    let response = app
        .client
        .post(app.url(&format!("/v1/admin/connections/{id}/refresh")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(response, 502).await;
    assert_eq!(problem["code"], "provider_unavailable", "{problem}");

    let history = get_json(&app, &admin, &format!("/v1/admin/connections/{id}/history")).await;
    assert_eq!(history["connection"]["id"], id.as_str());
    let actions: Vec<(String, String)> = history["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| (a["action"].as_str().expect("action").to_owned(), a["outcome"].as_str().expect("outcome").to_owned()))
        .collect();
    assert!(actions.contains(&("connection.refreshed".to_owned(), "success".to_owned())), "{actions:?}");
    assert!(actions.contains(&("connection.admin_refresh".to_owned(), "success".to_owned())), "{actions:?}");
    assert!(actions.contains(&("connection.admin_refresh".to_owned(), "failure".to_owned())), "{actions:?}");
    assert!(actions.contains(&("connection.refresh_failed".to_owned(), "failure".to_owned())), "{actions:?}");
    let admin_refresh = history["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["action"] == "connection.admin_refresh")
        .cloned()
        .expect("admin refresh");
    assert_eq!(admin_refresh["actor_id"], admin.id.as_str(), "the admin is named");
    assert!(!history.to_string().contains(after.as_deref().expect("token")));
    assert_problem(app.get_as(&admin.access_token, "/v1/admin/connections/no-such-id/history").await, 404).await;

    // Revocation: at the provider, then deleted, audited with the admin as actor.
    let response = app
        .client
        .delete(app.url(&format!("/v1/admin/connections/{id}")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["revoked"], true, "{body}");
    assert!(peer.stats().await["revocations"].as_u64().expect("count") >= 1);
    assert!(conn_sql::by_id(&app.state.db, &id).await.expect("query").is_none(), "deleted");
    let rows = audit_rows(&app).await;
    let deleted = rows.iter().find(|r| r["action"] == "connection.deleted" && r["target"] == id.as_str()).expect("row");
    assert_eq!(deleted["actor_id"], admin.id.as_str());
    let response = app
        .client
        .delete(app.url(&format!("/v1/admin/connections/{id}")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn the_history_lists_the_webhooks_a_connection_received() {
    let app = spawn(&[]).await;
    let admin = app.user("admin").await;
    let owner = app.user("user").await;
    let id = connection(&app, &owner, "slack", "workspace", json!({ "team_id": "T0HIST" })).await;
    let secret = new_secret(WebhookScheme::SlackV0);
    set_webhook_secret(&app, &admin, "slack", &secret).await;
    for n in 0..3 {
        let body = json!({ "type": "event_callback", "team_id": "T0HIST", "event_id": format!("EvHIST{n}"),
            "event": { "type": "reaction_added" } })
        .to_string();
        let headers = sign(WebhookScheme::SlackV0, secret.as_bytes(), body.as_bytes(), now_secs(), "");
        assert_eq!(post_webhook(&app, "/v1/webhooks/slack", &headers, &body).await.status(), 200);
    }
    let history = get_json(&app, &admin, &format!("/v1/admin/connections/{id}/history?limit=2")).await;
    let webhooks = history["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    assert_eq!(webhooks[0]["event_id"], "EvHIST2");
    assert_eq!(webhooks[0]["event_type"], "reaction_added");
    assert_problem(app.get_as(&admin.access_token, &format!("/v1/admin/connections/{id}/history?limit=0")).await, 422)
        .await;
    app.stop().await;
}
