//! Refresh single-flight across processes: two real `atom` processes on one PostgreSQL,
//! callers on both asking at once for a connection whose token is due, make one request to
//! the provider (the real authorization server counts them), and every caller on either node
//! sees the same new token generation.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{atom_command, free_port, wait_until_healthy};
use crate::common::TestDb;
use crate::oauth_peer::{self, OAuthPeer, consent};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_refresh_a_due_token_with_one_provider_request() {
    // The first token is due at once (60 s left, within the 300 s margin); the refreshed one
    // is not, so a caller arriving after the refresh uses it without another.
    let peer = OAuthPeer::start_with(60, 3600).await;
    let db = TestDb::postgres().await;
    let providers = db.dir.path().join("providers");
    peer.write_templates(&providers);
    let master_key = {
        use base64::Engine;
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    };
    let pg_url = db.pg.as_ref().expect("PostgreSQL").url.clone();
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for node in ["a", "b"] {
        let port = free_port().await;
        let data_dir = db.dir.path().join(node);
        let pairs: Vec<(String, String)> = [
            ("LISTEN", format!("127.0.0.1:{port}")),
            ("DATA_DIR", data_dir.display().to_string()),
            ("DATABASE_URL", pg_url.clone()),
            ("MASTER_KEY", master_key.clone()),
            ("PUBLIC_URL", oauth_peer::PUBLIC_URL.to_owned()),
            ("CONNECTORS_PROVIDERS_DIR", providers.display().to_string()),
            ("CONNECTORS_RETURN_URLS", format!("[\"{}\"]", oauth_peer::RETURN_URL)),
            ("CONNECTORS_REFRESH_MARGIN_SECS", "300".to_owned()),
            ("CONNECTORS_REFRESH_INTERVAL_SECS", "0".to_owned()),
            ("RATE_LIMIT_ENABLED", "false".to_owned()),
            ("AUTH_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let child = atom_command(&pairs).arg("serve").spawn().expect("atom starts");
        let url = format!("http://127.0.0.1:{port}");
        wait_until_healthy(&format!("{url}/health"), Duration::from_secs(60)).await;
        nodes.push(child);
        urls.push(url);
    }
    let http = no_redirects();
    let login: Value = http
        .post(format!("{}/v1/auth/login", urls[0]))
        .json(&json!({ "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("access token").to_owned();
    let (client_id, secret) = oauth_peer::BASIC_CLIENT;
    let set = http
        .put(format!("{}/v1/admin/providers/peer-basic/app", urls[0]))
        .bearer_auth(&token)
        .json(&json!({ "client_id": client_id, "client_secret": secret }))
        .send()
        .await
        .expect("sent");
    assert_eq!(set.status(), 200);

    // Connect through node A.
    let started: Value = http
        .post(format!("{}/v1/connections/authorize", urls[0]))
        .bearer_auth(&token)
        .json(&json!({ "provider": "peer-basic" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let callback = consent(started["authorization_url"].as_str().expect("url"), "allow", "alice").await;
    let path = callback.strip_prefix(oauth_peer::PUBLIC_URL).expect("callback");
    let landed = http.get(format!("{}{path}", urls[0])).send().await.expect("sent");
    let location = landed.headers().get("location").and_then(|v| v.to_str().ok()).expect("redirect").to_owned();
    let id = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .unwrap_or_else(|| panic!("connected: {location}"))
        .1
        .into_owned();

    // Callers on both nodes at once, while the provider takes its time.
    peer.delay_tokens(300).await;
    let before = peer.token_requests().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let mut callers = Vec::new();
    for i in 0..100 {
        let (http, url, token, id, barrier) =
            (http.clone(), urls[i % 2].clone(), token.clone(), id.clone(), barrier.clone());
        callers.push(tokio::spawn(async move {
            barrier.wait().await;
            let response =
                http.post(format!("{url}/v1/connections/{id}/refresh")).bearer_auth(&token).send().await.expect("sent");
            assert_eq!(response.status(), 200);
            let view: Value = response.json().await.expect("json");
            (view["expires_at"].to_string(), view["last_refresh_at"].to_string())
        }));
    }
    let mut generations = BTreeSet::new();
    for caller in callers {
        generations.insert(caller.await.expect("caller"));
    }
    assert_eq!(peer.token_requests().await - before, 1, "one request to the provider for both nodes");
    assert_eq!(generations.len(), 1, "every caller on both nodes sees the same refresh: {generations:?}");
    assert!(generations.iter().all(|(_, refreshed)| refreshed != "null"));
    for mut node in nodes {
        let _ = node.kill().await;
    }
}
