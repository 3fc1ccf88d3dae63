//! Edge protection over real HTTP: security headers, CORS, rate limits per address (clients
//! bound to different loopback addresses), per user, shared by two processes through Redis,
//! the local fallback when Redis is down, bans, forwarded headers from trusted proxies only.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::{
    TcpProxy, TestApp, TestDb, assert_problem, atom_command, free_port, redis_url, socket_addr_of, via,
    wait_until_healthy,
};

fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, last_octet])).build().expect("client")
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let responses = [
        app.get("/health").await,
        app.get("/no/such/path").await,
        app.get_as(&user.access_token, "/v1/me").await,
        app.client
            .post(app.url("/v1/auth/login"))
            .json(&serde_json::json!({"email": "x@y.z", "password": "p"}))
            .send()
            .await
            .expect("sent"),
    ];
    for response in responses {
        let h = response.headers();
        let url = response.url().path().to_owned();
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(h["x-frame-options"], "DENY", "{url}");
        assert_eq!(h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'", "{url}");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin", "{url}");
        assert_eq!(h["cache-control"], "no-store", "{url}");
        // The headers that act only on an HTML document are not spent on JSON.
        for document_only in ["referrer-policy", "cross-origin-opener-policy", "permissions-policy"] {
            assert!(!h.contains_key(document_only), "{document_only} on {url}");
        }
        assert!(!h.contains_key("server"), "{url}");
        assert!(!h.contains_key("strict-transport-security"), "no HSTS without an https public URL: {url}");
    }
    let jwks = app.get("/.well-known/jwks.json").await;
    assert!(jwks.headers()["cache-control"].to_str().is_ok_and(|c| c.starts_with("public")), "JWKS is cacheable");
    app.stop().await;

    let app = TestApp::spawn_with(&[("PUBLIC_URL", "https://atom.example.com")], axum::Router::new()).await;
    let hsts = app.get("/health").await.headers().get("strict-transport-security").cloned();
    assert_eq!(hsts.as_ref().and_then(|v| v.to_str().ok()), Some("max-age=63072000; includeSubDomains"));
    app.stop().await;
}

#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let origins = r#"["https://app.example.com", "http://localhost:5173"]"#;
    let app = TestApp::spawn_with(&[("HTTP_CORS_ALLOWED_ORIGINS", origins)], axum::Router::new()).await;
    let preflight = |origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("sent");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600", "preflights are cached");
    assert!(h.get_all("vary").iter().any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("origin"))));

    for hostile in [
        "https://evil.example.com",
        "null",
        "https://app.example.com.evil.com",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
    ] {
        let response = preflight(hostile).await.expect("sent");
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{hostile} must not be allowed");
    }

    let simple =
        app.client.get(app.url("/health")).header("origin", "http://localhost:5173").send().await.expect("sent");
    assert_eq!(simple.headers()["access-control-allow-origin"], "http://localhost:5173");
    app.stop().await;

    let closed = TestApp::spawn().await;
    let response = closed.client.get(closed.url("/health")).header("origin", "https://app.example.com").send().await;
    assert!(
        !response.expect("sent").headers().contains_key("access-control-allow-origin"),
        "no CORS unless configured"
    );
    closed.stop().await;
}

/// With CORS on, the guard runs inside the CORS service (so that a browser can read its 429s),
/// a different path from the one without: the per-address limit must still see each client's
/// own address there.
#[tokio::test]
async fn with_cors_on_the_address_limit_keys_on_each_client_and_its_429_is_readable() {
    let extra = [
        ("HTTP_CORS_ALLOWED_ORIGINS", r#"["https://app.example.com"]"#),
        ("RATE_LIMIT_ANONYMOUS_BURST", "1"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let get = |client: &reqwest::Client| {
        client.get(app.url("/openapi.json")).header("origin", "https://app.example.com").send()
    };
    let (first, second) = (client_from(21), client_from(22));
    assert_eq!(get(&first).await.expect("sent").status(), 200);
    let limited = get(&first).await.expect("sent");
    assert_eq!(limited.status(), 429, "the same address, over its burst");
    assert_eq!(limited.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(get(&second).await.expect("sent").status(), 200, "another address has its own limit");
    app.stop().await;
}

async fn login_attempt(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    login_attempt_as(client, app, "nobody@example.com").await
}

async fn login_attempt_as(client: &reqwest::Client, app: &TestApp, email: &str) -> reqwest::Response {
    let body = serde_json::json!({"email": email, "password": "not the password"});
    client.post(app.url("/v1/auth/login")).json(&body).send().await.expect("sent")
}

#[tokio::test]
async fn auth_routes_are_limited_per_client_address_with_ietf_headers() {
    let extra =
        [("RATE_LIMIT_AUTH_PER_MINUTE", "6"), ("RATE_LIMIT_AUTH_BURST", "3"), ("AUTH_LOCKOUT_THRESHOLD", "100")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let first = client_from(2);
    for i in 0..3 {
        let response = login_attempt(&first, &app).await;
        assert_eq!(response.status(), 401, "attempt {i} is within the burst");
        assert_eq!(response.headers()["ratelimit-policy"], "\"auth\";q=6;w=60");
        let remaining = format!("\"auth\";r={};", 2 - i);
        assert!(response.headers()["ratelimit"].to_str().is_ok_and(|v| v.starts_with(&remaining)), "{remaining}");
    }
    let limited = login_attempt(&first, &app).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=10).contains(&retry_after), "retry after {retry_after}");
    assert_problem(limited, 429).await;

    let other = client_from(3);
    let status = login_attempt_as(&other, &app, "someone-else@example.com").await.status();
    assert_eq!(status, 401, "another address has its own budget");
    for _ in 0..20 {
        assert_eq!(first.get(app.url("/health")).send().await.expect("sent").status(), 200, "health is never limited");
    }
    app.stop().await;
}

#[tokio::test]
async fn authenticated_routes_are_limited_per_user() {
    let app =
        TestApp::spawn_with(&[("RATE_LIMIT_API_BURST", "3"), ("RATE_LIMIT_API_PER_MINUTE", "3")], axum::Router::new())
            .await;
    let (alice, bob) = (app.user("user").await, app.user("user").await);
    for _ in 0..3 {
        assert_eq!(app.get_as(&alice.access_token, "/v1/me").await.status(), 200);
    }
    let limited = app.get_as(&alice.access_token, "/v1/me").await;
    assert!(limited.headers()["ratelimit-policy"].to_str().is_ok_and(|p| p.starts_with("\"api\"")));
    assert_problem(limited, 429).await;
    assert_eq!(app.get_as(&bob.access_token, "/v1/me").await.status(), 200, "bob has his own budget");
    app.stop().await;
}

#[tokio::test]
async fn clients_that_keep_hitting_limits_are_banned_and_the_ban_is_audited() {
    let extra = [
        ("RATE_LIMIT_ANONYMOUS_BURST", "1"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"),
        ("RATE_LIMIT_BAN_THRESHOLD", "3"),
        ("RATE_LIMIT_BAN_SECS", "60"),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let client = client_from(4);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = client.get(app.url("/openapi.json")).send().await.expect("sent");
        statuses.push((response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap_or_default()));
    }
    assert_eq!(statuses[0].0, 200);
    assert!(statuses[1..].iter().all(|(s, _)| *s == 429), "{statuses:?}");
    assert!(statuses[5].1["detail"].as_str().is_some_and(|d| d.contains("banned")), "{:?}", statuses[5]);
    let admin = app.user("admin").await;
    let audit: serde_json::Value =
        app.get_as(&admin.access_token, "/v1/admin/audit?action=edge.ban").await.json().await.expect("json");
    let entry = &audit["entries"][0];
    assert_eq!(entry["target"], "addr:127.0.0.4", "{audit}");
    assert_eq!(entry["outcome"], "denied");
    app.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let extra = [
        ("RATE_LIMIT_ANONYMOUS_BURST", "1"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"),
        ("HTTP_TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let via_proxy = |xff: &'static str| app.client.get(app.url("/openapi.json")).header("x-forwarded-for", xff).send();
    assert_eq!(via_proxy("203.0.113.9").await.expect("sent").status(), 200);
    assert_eq!(via_proxy("203.0.113.9").await.expect("sent").status(), 429, "keyed on the forwarded client");
    assert_eq!(via_proxy("203.0.113.10").await.expect("sent").status(), 200, "another forwarded client");

    // From an address that is not a trusted proxy, X-Forwarded-For is ignored.
    let direct = client_from(5);
    let spoof =
        |c: &reqwest::Client, xff: &'static str| c.get(app.url("/openapi.json")).header("x-forwarded-for", xff).send();
    assert_eq!(spoof(&direct, "198.51.100.1").await.expect("sent").status(), 200);
    assert_eq!(spoof(&direct, "198.51.100.2").await.expect("sent").status(), 429, "keyed on the peer");
    app.stop().await;
}

#[tokio::test]
async fn the_audit_log_records_the_forwarded_client_behind_a_trusted_proxy_only() {
    let app = TestApp::spawn_with(&[("HTTP_TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#)], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let failed_login = |client: &reqwest::Client, xff: &'static str| {
        let body = serde_json::json!({ "email": "nobody@example.com", "password": "not the password" });
        client.post(app.url("/v1/auth/login")).header("x-forwarded-for", xff).json(&body).send()
    };
    assert_eq!(failed_login(&app.client, "203.0.113.7").await.expect("sent").status(), 401);
    assert_eq!(failed_login(&client_from(12), "198.51.100.7").await.expect("sent").status(), 401);
    let audit: serde_json::Value = app
        .get_as(&admin.access_token, "/v1/admin/audit?action=auth.login&outcome=failure")
        .await
        .json()
        .await
        .expect("json");
    let mut addresses: Vec<&str> =
        audit["entries"].as_array().expect("entries").iter().filter_map(|e| e["client_addr"].as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["127.0.0.12", "203.0.113.7"], "the proxy's client; a spoofed header ignored: {audit}");
    app.stop().await;
}

/// Two `atom serve` processes sharing the machine's Redis enforce one combined limit.
#[tokio::test]
async fn two_processes_share_one_limit_through_redis() {
    let db = TestDb::new().await;
    let redis = redis_url();
    let mut base = db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect::<Vec<_>>();
    base.extend(crate::common::pairs(&[
        ("REDIS_URL", &redis),
        ("RATE_LIMIT_AUTH_BURST", "4"),
        ("RATE_LIMIT_AUTH_PER_MINUTE", "4"),
    ]));
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let port = free_port().await;
        let mut env = base.clone();
        env.push(("LISTEN".into(), format!("127.0.0.1:{port}")));
        children.push(atom_command(&env).arg("serve").spawn().expect("atom starts"));
        urls.push(format!("http://127.0.0.1:{port}"));
        wait_until_healthy(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;
    }
    let client = client_from(6);
    let attempt = |url: String| {
        let body = serde_json::json!({"email": "nobody@example.com", "password": "not the password"});
        client.post(format!("{url}/v1/auth/login")).json(&body).send()
    };
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(attempt(urls[i % 2].clone()).await.expect("sent").status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429], "one budget of 4 across both processes");
    for mut child in children {
        child.kill().await.expect("kill");
    }
}

#[tokio::test]
async fn without_redis_limits_fall_back_to_the_node() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let redis_via_proxy = via(&redis, proxy.addr);
    let extra = [
        ("REDIS_URL", redis_via_proxy.as_str()),
        ("RATE_LIMIT_ANONYMOUS_BURST", "2"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    proxy.set_down(true);
    let client = client_from(7);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(client.get(app.url("/openapi.json")).send().await.expect("sent").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "local limits apply while Redis is down");
    assert!(app.state.edge.limiter.degraded());
    let ready: serde_json::Value = app.get("/ready").await.json().await.expect("json");
    assert_eq!(ready["status"], "degraded");
    app.stop().await;
}

#[tokio::test]
async fn made_up_credentials_count_against_the_address() {
    let extra = [("RATE_LIMIT_ANONYMOUS_BURST", "3"), ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let client = client_from(11);
    let mut statuses = Vec::new();
    for i in 0..5 {
        let bogus = format!("atom_sk_{i:012}_bogus");
        let response = client.get(app.url("/v1/me")).bearer_auth(bogus).send().await.expect("sent");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    app.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_account_across_addresses() {
    let extra = [
        ("RATE_LIMIT_AUTH_PER_MINUTE", "2"),
        ("RATE_LIMIT_AUTH_BURST", "4"),
        ("AUTH_LOCKOUT_THRESHOLD", "100"),
        ("AUTH_LOCKOUT_ADDR_THRESHOLD", "100"),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let mut statuses = Vec::new();
    // Two attempts from each of three addresses: each address stays within its burst of 4,
    // the account's budget of 4 runs out.
    for octet in [12, 12, 13, 13, 14, 14] {
        statuses.push(login_attempt(&client_from(octet), &app).await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    app.stop().await;
}
