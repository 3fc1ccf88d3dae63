//! The vault's secrets under the operator's tools: a master-key rotation re-wraps the
//! connection credentials, pending authorizations and app secrets with the rest, and the
//! decrypt check behind `atom backup verify|restore` covers them (a credential bound to
//! another row or user fails it). And the vault's metrics: refreshes by provider and outcome,
//! their latency, connections by status.

use std::time::Duration;

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;
use atom::storage::encrypted::{ENCRYPTED_COLUMNS, check_all_decrypt, rewrap_all};

use crate::oauth_peer::{self, OAuthPeer, connect, start};

#[tokio::test]
async fn key_rotation_and_the_restore_check_cover_every_vault_secret() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    start(&app, &user, "peer-post").await; // a pending authorization, with its sealed verifier
    for table in ["provider_apps", "connections", "connection_authorizations"] {
        assert!(ENCRYPTED_COLUMNS.iter().any(|c| c.table == table), "{table} is in ENCRYPTED_COLUMNS");
    }
    let keyring = app.state.identity.keyring();
    // The signing key, two app secrets, one connection, one pending authorization.
    assert_eq!(check_all_decrypt(&app.state.db, &keyring).await.expect("all decrypt"), 5);

    // A copy of the key file's keyring, as `atom keys rotate` loads it.
    let key_file = app.db.dir.path().join(atom::crypto::KEY_FILE_NAME);
    let mut rotated = atom::crypto::MasterKeyring::load(&key_file).expect("key file");
    rotated.add_key_and_make_primary().expect("new key");
    let report = rewrap_all(&app.state.db, &rotated, None).await.expect("rewrap");
    assert_eq!(report.rewrapped, 5, "{report:?}");
    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    assert!(Credentials::open(&rotated, &row).is_ok(), "the rotated credentials open under the new primary");

    // A credential copied onto another user's row is what a restore must refuse.
    let other = app.user("user").await;
    let moved = "UPDATE connections SET user_id = $1 WHERE id = $2";
    match &app.state.db {
        atom::Db::Sqlite(pool) => sqlx::query(moved).bind(&other.id).bind(&id).execute(pool).await.map(drop),
        atom::Db::Postgres(pool, ..) => sqlx::query(moved).bind(&other.id).bind(&id).execute(pool).await.map(drop),
    }
    .expect("moved");
    let err = check_all_decrypt(&app.state.db, &rotated).await.expect_err("the moved credential does not decrypt");
    assert!(err.to_string().contains("connections.credentials"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn refreshes_and_connection_statuses_are_in_metrics() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(
        &peer,
        &[("CONNECTORS_REFRESH_MARGIN_SECS", "7200"), ("CONNECTORS_REFRESH_INTERVAL_SECS", "1")],
    )
    .await;
    let user = app.user("user").await;
    // The metrics are process-wide and other tests refresh too: this one compares its counter
    // before and after its own worker's refresh.
    let successes = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("connector_refreshes_total")
                    && l.contains("provider=\"peer-basic\"")
                    && l.contains("outcome=\"success\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = successes(&app.get("/metrics").await.text().await.expect("metrics"));
    connect(&app, &user, "peer-basic", "alice").await;
    // The background refresher finds the due token, refreshes it and counts connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let refreshed = peer.token_requests().await >= 2;
        let text = app.get("/metrics").await.text().await.expect("metrics");
        let line = |prefix: &str, labels: &[&str]| {
            text.lines().any(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
        };
        if refreshed
            && successes(&text) > before
            && line("connector_refresh_duration_seconds", &["provider=\"peer-basic\""])
            && line("connector_connections", &["status=\"active\""])
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker's refresh in the metrics within 20 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// One row in each vault table, through the vault's own code (sealed as in production), for
/// the backup tests: an app set by the admin API, a connection, a pending authorization.
pub async fn seed_vault(app: &crate::common::TestApp, admin: &crate::common::TestUser, user: &crate::common::TestUser) {
    let response = app
        .client
        .put(app.url("/v1/admin/providers/github/app"))
        .bearer_auth(&admin.access_token)
        .json(&serde_json::json!({ "client_id": "Iv1.seed", "client_secret": "seed-client-secret-0123456789" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let keyring = app.state.identity.keyring();
    let obtained = atom::connectors::vault::Obtained {
        user_id: user.id.clone(),
        provider: "github".to_owned(),
        auth_kind: "oauth2",
        account_id: "seed-account".to_owned(),
        label: "seed".to_owned(),
        scopes: vec!["repo".to_owned()],
        params: serde_json::json!({}),
        credentials: seed_credentials(),
        expires_at: None,
    };
    let mut tx = app.state.db.begin().await.expect("tx");
    atom::connectors::vault::store(&mut tx, &keyring, &obtained, atom::storage::now_ms()).await.expect("stored");
    let state_hash = "seed-state-hash";
    let sealed = keyring
        .encrypt(&atom::crypto::Aad::new("connection_authorizations", "secrets", state_hash, &user.id), b"{}")
        .expect("sealed");
    let pending = sql::AuthorizationRow {
        state_hash: state_hash.to_owned(),
        user_id: user.id.clone(),
        provider: "github".to_owned(),
        secrets: atom::crypto::to_base64(&sealed),
        scopes: String::new(),
        params: "{}".to_owned(),
        return_to: String::new(),
        created_at: 1,
        expires_at: i64::MAX,
    };
    sql::insert_authorization(&mut tx, &pending).await.expect("pending");
    tx.commit().await.expect("commit");
}

fn seed_credentials() -> Credentials {
    let mut credentials = Credentials::default();
    credentials.access_token = Some("gho_seed-token-0123456789".to_owned());
    credentials
}
