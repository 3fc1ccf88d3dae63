//! Deleting an account (the user's own with their password, or another's by an admin):
//! every connection is revoked at its provider (the real oidc-provider peer sees it) and
//! deleted, the account's sessions, keys and conversation memberships are erased, its messages
//! in other people's conversations stay, it can no longer sign in or use a token, and it is
//! audited. A failure at the provider does not stop the deletion; it is recorded.

use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::oauth_peer::{self, OAuthPeer, connect};

async fn delete_me(app: &TestApp, user: &TestUser, password: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "password": password }))
        .send()
        .await
        .expect("sent")
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.expect("sent");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_user_deletes_their_account_and_every_connection_is_revoked_at_the_provider() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[]).await;
    let user = app.user("user").await;
    let friend = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;

    // A conversation shared with a friend (with a message from the user), and one of their own.
    let shared = post(&app, &user.access_token, "/v1/conversations", json!({ "member_ids": [friend.id] })).await;
    let shared_id = shared["id"].as_str().expect("id").to_owned();
    post(
        &app,
        &user.access_token,
        &format!("/v1/conversations/{shared_id}/messages"),
        json!({ "client_msg_id": "m1", "body": "hello" }),
    )
    .await;
    let own = post(&app, &user.access_token, "/v1/conversations", json!({ "title": "notes" })).await;
    let own_id = own["id"].as_str().expect("id").to_owned();

    // The wrong password changes nothing.
    let problem = assert_problem(delete_me(&app, &user, "not the password").await, 422).await;
    assert_eq!(problem["errors"][0]["field"], "password", "{problem}");
    assert_eq!(peer.stats().await["revocations"], 0);
    assert_eq!(app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.status(), 200);

    let response = delete_me(&app, &user, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["connections_deleted"], 1, "{body}");
    assert_eq!(body["connections_not_revoked"], 0, "{body}");

    let stats = peer.stats().await;
    assert_eq!(stats["revocations"], 2, "refresh then access token revoked at the provider: {stats}");
    assert!(atom::storage::connections::by_id(&app.state.db, &id).await.expect("query").is_none());

    // The account is gone for every purpose.
    assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 401, "its access token is refused");
    let login = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": user.email, "password": PASSWORD }))
        .send()
        .await
        .expect("sent");
    assert_eq!(login.status(), 401, "it cannot sign in");
    let refreshed = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": user.refresh_token }))
        .send()
        .await
        .expect("sent");
    assert_eq!(refreshed.status(), 401, "its sessions are gone");
    let admin = app.user("admin").await;
    let listed: Value = app.get_as(&admin.access_token, "/v1/admin/users?limit=200").await.json().await.expect("json");
    assert!(
        listed["users"]
            .as_array()
            .expect("users")
            .iter()
            .all(|u| u["id"] != user.id.as_str() && u["email"] != user.email.as_str()),
        "not listed: {listed}"
    );

    // Its own conversation is gone; the shared one stays for the friend, without the user.
    let mut tx = app.state.db.begin().await.expect("tx");
    let gone = atom::storage::conversations::lock(&mut tx, &own_id).await.expect("query");
    assert!(gone.is_none(), "the conversation no member is left in is deleted");
    let kept = atom::storage::conversations::lock(&mut tx, &shared_id).await.expect("query");
    assert!(kept.is_some(), "the shared conversation stays");
    drop(tx);
    let members = atom::storage::conversations::member_ids(&app.state.db, &shared_id).await.expect("query");
    assert_eq!(members, std::slice::from_ref(&friend.id), "the user is no longer a member");
    let view: Value =
        app.get_as(&friend.access_token, &format!("/v1/conversations/{shared_id}")).await.json().await.expect("json");
    let text = view.to_string();
    assert!(!text.contains(&user.email), "no trace of the email: {text}");
    let messages: Value = app
        .get_as(&friend.access_token, &format!("/v1/conversations/{shared_id}/messages"))
        .await
        .json()
        .await
        .expect("json");
    assert!(messages.to_string().contains("hello"), "the friend keeps the conversation's history: {messages}");

    let audit = audit_rows(&app).await;
    let deleted: Vec<&Value> = audit.iter().filter(|r| r["action"] == "account.deleted").collect();
    assert!(deleted.iter().any(|r| r["outcome"] == "failure"), "the wrong password is audited: {deleted:?}");
    let done = deleted.iter().find(|r| r["outcome"] == "success").expect("the deletion is audited");
    assert_eq!(done["target"], user.id.as_str());
    let connection = audit
        .iter()
        .find(|r| r["action"] == "connection.deleted" && r["target"] == id.as_str())
        .expect("the connection's deletion is audited");
    assert_eq!(connection["details"]["reason"], "account_deleted");
    assert_eq!(connection["details"]["revoked"], true);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_deletes_an_account_even_when_the_provider_is_down() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[]).await;
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let other = app.user("user").await;
    let id = connect(&app, &user, "peer-post", "bob").await;
    let path = format!("/v1/admin/users/{}", user.id);
    let delete = |token: &str, path: &str| app.client.delete(app.url(path)).bearer_auth(token).send();

    assert_problem(delete(&other.access_token, &path).await.expect("sent"), 403).await;
    assert_problem(delete(&admin.access_token, &format!("/v1/admin/users/{}", admin.id)).await.expect("sent"), 400)
        .await;
    assert_problem(delete(&admin.access_token, "/v1/admin/users/no-such-user").await.expect("sent"), 404).await;

    peer.fault(json!({ "revocation": "down", "count": 1 })).await;
    let response = delete(&admin.access_token, &path).await.expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["connections_deleted"], 1, "{body}");
    assert_eq!(body["connections_not_revoked"], 1, "the provider was down: {body}");
    assert!(atom::storage::connections::by_id(&app.state.db, &id).await.expect("query").is_none());
    assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 401);

    // Deleted once: a second deletion, or enabling it again, finds nothing.
    assert_problem(delete(&admin.access_token, &path).await.expect("sent"), 404).await;
    let enable = app
        .client
        .post(app.url(&format!("/v1/admin/users/{}/enable", user.id)))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    assert_problem(enable, 404).await;

    let audit = audit_rows(&app).await;
    let connection =
        audit.iter().find(|r| r["action"] == "connection.deleted" && r["target"] == id.as_str()).expect("audited");
    assert_eq!(connection["details"]["revoked"], false);
    assert!(connection["details"]["revocation_error"].as_str().is_some_and(|e| e.starts_with("provider_unavailable")));
    app.stop().await;
}

#[tokio::test]
async fn the_last_admin_cannot_delete_their_own_account() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let problem = assert_problem(delete_me(&app, &admin, PASSWORD).await, 409).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("last admin")), "{problem}");
    assert_eq!(app.get_as(&admin.access_token, "/v1/me").await.status(), 200);
    app.stop().await;
}
