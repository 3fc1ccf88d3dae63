//! Secrets at rest and the operator commands: the generated master key file, a wrong master
//! key at start-up, master-key rotation (online, interrupted and resumed), signing-key
//! rotation, `atom admin create`, the bootstrap admin and `atom audit verify`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use atom::crypto::MasterKeyring;
use atom::storage::encrypted;
use serde_json::Value;

use crate::common::{PASSWORD, TestApp, TestDb, TestUser, run_atom};

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url");
    let header: Value = serde_json::from_slice(&header).expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app.get("/.well-known/jwks.json").await.json().await.expect("json");
    jwks["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().unwrap_or("").to_owned()).collect()
}

/// Lets `app` pick up keys changed under it, on its own: a node started on the same
/// database after the change signs in `user`, and `app` meets that token, whose `kid` it has
/// not loaded; its reload on an unknown `kid` (at most every few seconds) re-reads the master
/// key file and the signing keys. Polls until `app` accepts the token; the new `kid`.
async fn let_the_server_reload_its_keys(app: &TestApp, user: &TestUser) -> String {
    let shared = app.db.pairs();
    let pairs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = TestApp::spawn_with(&pairs, axum::Router::new()).await;
    let token = node.login(&user.email, PASSWORD).await["access_token"].as_str().expect("token").to_owned();
    node.stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get_as(&token, "/v1/me").await.status() != 200 {
        assert!(Instant::now() < deadline, "the server did not pick up the new signing key within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kid_of(&token)
}

#[tokio::test]
async fn a_generated_master_key_file_is_private_to_its_owner() {
    let app = TestApp::spawn().await;
    let path = app.db.dir.path().join(atom::crypto::KEY_FILE_NAME);
    let mode = std::fs::metadata(&path).expect("key file generated").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_master_key_with_encrypted_data_present_stops_start_up_clearly() {
    let db = TestDb::new().await;
    let mut app = TestApp::spawn_on(db, &[], axum::Router::new()).await;
    app.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db, .. } = app;
    let mut env = db.pairs();
    env.push(("LISTEN".into(), "127.0.0.1:0".into()));
    env.push(("MASTER_KEY".into(), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("master key does not decrypt signing key"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("AAECAwQF"), "{stderr}");

    // A key file that went missing is as wrong: a fresh one does not decrypt the data.
    std::fs::remove_file(db.dir.path().join(atom::crypto::KEY_FILE_NAME)).expect("remove key file");
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "MASTER_KEY").collect();
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("master key does not decrypt"), "{stderr}");
}

#[tokio::test]
async fn master_key_rotation_rewraps_online_resumes_after_interruption_and_retires_the_old_key() {
    let app = TestApp::spawn().await;
    let mut env = app.db.pairs();
    // Several encrypted values: one signing key per rotation.
    for _ in 0..3 {
        let (code, _, stderr) = run_atom(&env, &["keys", "rotate-signing"]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    let user = app.user("user").await;
    let key_file = app.db.dir.path().join(atom::crypto::KEY_FILE_NAME);
    assert_eq!(encrypted::versions_in_use(&app.state.db).await.expect("versions").into_iter().collect::<Vec<_>>(), [1]);

    // Interrupted after one value.
    let (code, stdout, stderr) = run_atom(&env, &["keys", "rotate", "--max-values", "1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("master key v2 is primary") && stdout.contains("--resume"), "{stdout}");
    let keyring = MasterKeyring::load(&key_file).expect("key file");
    assert_eq!(keyring.primary_version(), 2);
    let in_use = encrypted::versions_in_use(&app.state.db).await.expect("versions");
    assert!(in_use.contains(&1) && in_use.contains(&2), "half done: {in_use:?}");
    assert_eq!(encrypted::check_all_decrypt(&app.state.db, &keyring).await.expect("every value decrypts"), 4);

    // Resumed: everything under v2, v1 retired from the file, all values still decrypt.
    let (code, stdout, stderr) = run_atom(&env, &["keys", "rotate", "--resume"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("retired master key(s) [1]"), "{stdout}");
    let keyring = MasterKeyring::load(&key_file).expect("key file");
    assert_eq!(keyring.versions().collect::<Vec<_>>(), [2]);
    assert_eq!(encrypted::versions_in_use(&app.state.db).await.expect("versions").into_iter().collect::<Vec<_>>(), [2]);
    assert_eq!(encrypted::check_all_decrypt(&app.state.db, &keyring).await.expect("decrypts"), 4);

    // The running server picks up the new key file on its own: a signing key added now is
    // wrapped under v2 only, and the server signs with it once it has reloaded both.
    let (code, stdout, stderr) = run_atom(&env, &["keys", "rotate-signing"]).await;
    assert_eq!(code, 0, "{stderr}");
    let new_kid = stdout.split_whitespace().nth(3).expect("kid printed").to_owned();
    assert_eq!(let_the_server_reload_its_keys(&app, &user).await, new_kid);
    assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 200);
    let fresh = app.login(&user.email, PASSWORD).await;
    assert_eq!(kid_of(fresh["access_token"].as_str().expect("token")), new_kid, "signed with the new key");

    // An environment key cannot be rotated in place.
    env.push(("MASTER_KEY".into(), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    let (code, _, stderr) = run_atom(&env, &["keys", "rotate"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("needs a key file"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let old_kid = kid_of(&user.access_token);
    assert_eq!(jwks_kids(&app).await, std::slice::from_ref(&old_kid));

    let (code, stdout, stderr) = run_atom(&app.db.pairs(), &["keys", "rotate-signing"]).await;
    assert_eq!(code, 0, "{stderr}");
    let new_kid = stdout.split_whitespace().nth(3).expect("kid printed").to_owned();
    assert_eq!(let_the_server_reload_its_keys(&app, &user).await, new_kid);

    assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 200, "old token still valid");
    let fresh = app.login(&user.email, PASSWORD).await;
    let fresh_token = fresh["access_token"].as_str().expect("token");
    assert_eq!(kid_of(fresh_token), new_kid, "new tokens use the new key");
    let mut kids = jwks_kids(&app).await;
    kids.sort();
    let mut expected = vec![old_kid, new_kid];
    expected.sort();
    assert_eq!(kids, expected, "JWKS publishes current and previous");
    app.stop().await;
}

#[tokio::test]
async fn admin_create_makes_an_admin_who_can_sign_in_and_refuses_weak_passwords() {
    let app = TestApp::spawn().await;
    let mut env = app.db.pairs();
    env.push(("ADMIN_PASSWORD".into(), "short".into()));
    let (code, _, stderr) = run_atom(&env, &["admin", "create", "--email", "boss@example.com"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("password must be at least 12 characters"), "{stderr}");
    assert!(!stderr.contains("short"), "the password is never echoed: {stderr}");

    env.pop();
    env.push(("ADMIN_PASSWORD".into(), PASSWORD.into()));
    let (code, stdout, stderr) = run_atom(&env, &["admin", "create", "--email", "Boss@Example.com"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created admin boss@example.com"), "{stdout}");
    let session = app.login("boss@example.com", PASSWORD).await;
    assert_eq!(session["user"]["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_only_on_an_empty_installation() {
    let extra = [("AUTH_BOOTSTRAP_ADMIN_EMAIL", "first@example.com"), ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let session = app.login("first@example.com", PASSWORD).await;
    assert_eq!(session["user"]["role"], "admin");

    let half = atom::Config::from_pairs([("AUTH_BOOTSTRAP_ADMIN_EMAIL", "x@example.com")]);
    assert!(half.is_err(), "an email without a password is a configuration error");
    let mut app = app;
    app.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db, .. } = app;

    // Restarted on the now non-empty database with other bootstrap credentials: no new admin,
    // and the first one's password is not reset.
    let other = [
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "second@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "another long password"),
    ];
    let app = TestApp::spawn_on(db, &other, axum::Router::new()).await;
    let refused = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&serde_json::json!({ "email": "second@example.com", "password": "another long password" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401, "no bootstrap admin on a non-empty installation");
    let session = app.login("first@example.com", PASSWORD).await;
    assert_eq!(session["user"]["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn audit_verify_reports_an_intact_chain_and_names_the_first_tampered_row() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.user("user").await;
    }
    let env = app.db.pairs();
    let (code, stdout, stderr) = run_atom(&env, &["audit", "verify"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");

    let tamper = "UPDATE audit_log SET outcome = 'failure' WHERE seq = 3";
    match &app.state.db {
        atom::Db::Sqlite(pool) => sqlx::query(tamper).execute(pool).await.map(drop),
        atom::Db::Postgres(pool, ..) => sqlx::query(tamper).execute(pool).await.map(drop),
    }
    .expect("tamper");
    let (code, _, stderr) = run_atom(&env, &["audit", "verify"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("audit log tampered at row 3"), "{stderr}");

    app.stop().await;
}
