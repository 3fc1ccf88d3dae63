//! Verification of bearer credentials at the HTTP level: every rejected access token is a 401
//! problem with a `WWW-Authenticate: Bearer` challenge, and a hand-made token differs from an
//! accepted one only in the one thing each case changes (the first test proves the crafting).

use atom::identity::tokens::{AccessTokens, TokenConfig};
use serde_json::{Value, json};

use crate::common::{TestApp, TestUser};
use crate::identity_support::{
    assert_unauthorized, b64, b64_json, hmac_sha256, post, sign, signing_key, unb64_json, unix_now, valid_claims,
    valid_header,
};

/// A change to a token's header and claims.
type Change = dyn FnOnce(&mut Value, &mut Value);

/// A user's token with its claims re-signed by our own key after `change`.
async fn resigned(app: &TestApp, user: &TestUser, change: impl FnOnce(&mut Value, &mut Value)) -> String {
    let (mut header, mut claims) = (valid_header(app).await, valid_claims(app, &user.id));
    change(&mut header, &mut claims);
    sign(&signing_key(app).await, &header, &claims)
}

#[tokio::test]
async fn a_hand_crafted_token_is_accepted_so_each_rejection_below_has_one_cause() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let token = resigned(&app, &user, |_, _| {}).await;
    let response = app.get_as(&token, "/v1/me").await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.expect("json");
    assert_eq!(me["id"], user.id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn no_token_gets_a_challenge_without_an_error_attribute() {
    let app = TestApp::spawn().await;
    let body = assert_unauthorized(app.get("/v1/me").await, None).await;
    assert_eq!(body["detail"], "Authentication required.");
    app.stop().await;
}

#[tokio::test]
async fn malformed_authorization_headers_are_401_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let basic = format!("Basic {}", b64(b"user:password"));
    let no_scheme = user.access_token.clone();
    for value in [basic.as_str(), "Bearer", "Bearer ", no_scheme.as_str(), "Token abc.def.ghi"] {
        let response = app.client.get(app.url("/v1/me")).header("authorization", value).send().await.expect("sent");
        assert_unauthorized(response, Some("invalid_request")).await;
    }
    // Not visible ASCII: the header value is not even a string.
    let raw = b"GET /v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xc3\xa9t\xc3\xa9\r\nConnection: close\r\n\r\n";
    let response = crate::common::raw_http(app.addr, raw).await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.to_ascii_lowercase().contains("www-authenticate: bearer"), "{response}");
    app.stop().await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let mut header = valid_header(&app).await;
    for alg in ["none", "None", "NONE"] {
        header["alg"] = json!(alg);
        let token = format!("{}.{}.", b64_json(&header), b64_json(&valid_claims(&app, &user.id)));
        assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn hs256_signed_with_the_published_public_key_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let jwks: Value = app.get("/.well-known/jwks.json").await.json().await.expect("jwks");
    let jwk = &jwks["keys"][0];
    let x = jwk["x"].as_str().expect("x");
    let public = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, x).expect("x is base64url");
    assert_eq!(public.len(), 32, "an Ed25519 public key");
    let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": jwk["kid"] });
    let input = format!("{}.{}", b64_json(&header), b64_json(&valid_claims(&app, &user.id)));
    // The raw key bytes, and the `x` text, both as the HMAC secret.
    for secret in [public.as_slice(), x.as_bytes()] {
        let token = format!("{input}.{}", b64(&hmac_sha256(secret, input.as_bytes())));
        assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_kid_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let token = resigned(&app, &user, |header, _| header["kid"] = json!("not-one-of-ours")).await;
    assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    // No kid at all.
    let token = resigned(&app, &user, |header, _| {
        header.as_object_mut().expect("object").remove("kid");
    })
    .await;
    assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_payload_or_signature_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let parts: Vec<&str> = user.access_token.split('.').collect();
    assert_eq!(parts.len(), 3);

    // The user's token claiming to be the admin, with the user's signature.
    let mut claims = unb64_json(parts[1]);
    claims["sub"] = json!(admin.id);
    claims["roles"] = json!(["admin"]);
    let token = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    assert_unauthorized(app.get_as(&token, "/v1/admin/users").await, Some("invalid_token")).await;

    // One signature character changed (the first: every bit of it counts).
    let first = if parts[2].starts_with('A') { "B" } else { "A" };
    let token = format!("{}.{}.{first}{}", parts[0], parts[1], &parts[2][1..]);
    assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;

    // Signed by another Ed25519 key under our kid.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let token = sign(&other, &valid_header(&app).await, &valid_claims(&app, &user.id));
    assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;

    // Signature stripped.
    let token = format!("{}.{}.", parts[0], parts[1]);
    assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_issuer_or_audience_is_rejected_even_with_our_key() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let issuer = app.state.config.token_issuer();
    let audience = app.state.config.auth.audience.clone();
    for config in [TokenConfig::new("other", audience.as_str()), TokenConfig::new(issuer.as_str(), "other-api")] {
        let keys = atom::identity::signing::load(app.state.identity.db(), &app.state.identity.keyring())
            .await
            .expect("keys load")
            .expect("a key exists");
        let foreign = AccessTokens::new(config, keys).expect("valid token config");
        let (token, _) = foreign.issue(&user.id, vec!["user".to_owned()], None).expect("issued");
        assert_unauthorized(app.get_as(&token, "/v1/me").await, Some("invalid_token")).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn expired_future_untyped_and_incomplete_tokens_are_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let now = unix_now();
    let cases: Vec<(&str, Box<Change>)> = vec![
        ("expired beyond the leeway", Box::new(move |_, c| c["exp"] = json!(now - 120))),
        ("not valid before the future", Box::new(move |_, c| c["nbf"] = json!(now + 3600))),
        ("issued in the future", Box::new(move |_, c| c["iat"] = json!(now + 3600))),
        ("typ JWT, not at+jwt", Box::new(|h, _| h["typ"] = json!("JWT"))),
        ("no jti", Box::new(|_, c| drop(c.as_object_mut().expect("object").remove("jti")))),
        ("no sub", Box::new(|_, c| drop(c.as_object_mut().expect("object").remove("sub")))),
        ("sub of no account", Box::new(|_, c| c["sub"] = json!(uuid::Uuid::new_v4().to_string()))),
    ];
    for (case, change) in cases {
        let token = resigned(&app, &user, change).await;
        let response = app.get_as(&token, "/v1/me").await;
        assert_eq!(response.status(), 401, "{case}");
        assert_unauthorized(response, Some("invalid_token")).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    assert!(user.refresh_token.starts_with("atom_rt_"), "{}", user.refresh_token);
    assert_unauthorized(app.get_as(&user.refresh_token, "/v1/me").await, Some("invalid_token")).await;
    // And an access token is not a refresh token.
    let response = post(&app, None, "/v1/auth/refresh", &json!({ "refresh_token": user.access_token })).await;
    assert_unauthorized(response, Some("invalid_token")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_users_token_stops_working_at_once() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    // Used first, so that the account's status is cached on this node.
    assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 200);

    let path = format!("/v1/admin/users/{}/disable", user.id);
    let response = post(&app, Some(&admin.access_token), &path, &json!({})).await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["disabled"], true);

    let body = assert_unauthorized(app.get_as(&user.access_token, "/v1/me").await, Some("invalid_token")).await;
    assert_eq!(body["detail"], "The account is disabled.");
    // Its refresh token and its password are dead too.
    let response = post(&app, None, "/v1/auth/refresh", &json!({ "refresh_token": user.refresh_token })).await;
    assert_unauthorized(response, Some("invalid_token")).await;
    let response = crate::identity_support::try_login(&app.client, &app, &user.email, crate::common::PASSWORD).await;
    assert_eq!(response.status(), 401);

    // An admin cannot disable themselves; an unknown account is a 404.
    let own = format!("/v1/admin/users/{}/disable", admin.id);
    assert_eq!(post(&app, Some(&admin.access_token), &own, &json!({})).await.status(), 400);
    let unknown = format!("/v1/admin/users/{}/disable", uuid::Uuid::new_v4());
    assert_eq!(post(&app, Some(&admin.access_token), &unknown, &json!({})).await.status(), 404);

    // Re-enabled, the account signs in again.
    let enable = format!("/v1/admin/users/{}/enable", user.id);
    assert_eq!(post(&app, Some(&admin.access_token), &enable, &json!({})).await.status(), 200);
    app.login(&user.email, crate::common::PASSWORD).await;
    app.stop().await;
}
