//! Accounts: registration (open, invite-only, off), the password policy with every failing
//! field in one 422, sign-in, password change (which signs every session out), and the
//! admin's view of accounts.

use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, assert_problem};
use crate::identity_support::{assert_unauthorized, post, try_login, try_refresh};

async fn register(app: &TestApp, body: Value) -> reqwest::Response {
    post(app, None, "/v1/auth/register", &body).await
}

fn fields(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .expect("errors listed")
        .iter()
        .map(|e| (e["field"].as_str().expect("field").to_owned(), e["message"].as_str().expect("message").to_owned()))
        .collect()
}

async fn invite(app: &TestApp, admin_token: &str, body: Value) -> String {
    let response = post(app, Some(admin_token), "/v1/admin/invites", &body).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    body["invite_code"].as_str().expect("invite_code").to_owned()
}

#[tokio::test]
async fn open_registration_creates_an_account_that_signs_in() {
    let app = TestApp::spawn_with(&[("AUTH_REGISTRATION", "open")], axum::Router::new()).await;
    let response = register(&app, json!({ "email": "  Ann@Example.com ", "password": PASSWORD })).await;
    assert_eq!(response.status(), 201);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["email"], "ann@example.com", "trimmed and lower-cased");
    assert_eq!(user["role"], "user");
    assert_eq!(user["disabled"], false);
    assert!(user.get("password_hash").is_none() && !user.to_string().contains("argon2"), "{user}");

    let session = app.login("ANN@example.com", PASSWORD).await;
    assert_eq!(session["user"]["id"], user["id"]);
    assert_eq!(session["token_type"], "Bearer");
    let me: Value =
        app.get_as(session["access_token"].as_str().expect("token"), "/v1/me").await.json().await.expect("json");
    assert_eq!(me["id"], user["id"]);

    // The same address again, whatever its case, is a 409 naming the field.
    let body =
        assert_problem(register(&app, json!({ "email": "ann@EXAMPLE.com", "password": PASSWORD })).await, 409).await;
    assert_eq!(fields(&body), vec![("email".to_owned(), "is already registered".to_owned())]);
    // Unknown fields are refused rather than ignored.
    let response = register(&app, json!({ "email": "bo@example.com", "password": PASSWORD, "role": "admin" })).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_problem(response, 422).await;
    app.stop().await;
}

#[tokio::test]
async fn the_password_policy_lists_every_failing_field_at_once() {
    let app = TestApp::spawn_with(&[("AUTH_REGISTRATION", "open")], axum::Router::new()).await;

    let body = assert_problem(register(&app, json!({ "email": "not an email", "password": "short" })).await, 422).await;
    let failing = fields(&body);
    assert!(failing.iter().any(|(f, _)| f == "email"), "{failing:?}");
    assert!(failing.iter().any(|(f, m)| f == "password" && m.contains("at least 12")), "{failing:?}");
    assert_eq!(body["type"], "urn:atom:problem:validation");

    // Too short and containing the email: both rules named.
    let response = register(&app, json!({ "email": "annabel@example.com", "password": "annabel!" })).await;
    let failing = fields(&assert_problem(response, 422).await);
    assert!(failing.iter().any(|(f, m)| f == "password" && m.contains("at least 12")), "{failing:?}");
    assert!(failing.iter().any(|(f, m)| f == "password" && m.contains("email")), "{failing:?}");

    let long = "x".repeat(257) + "yz";
    let cases = [
        ("annabel@example.com", "my name is ANNABEL, hello", "email"),
        ("bo@example.com", "aaaaaaaaaaaaaaaaaa", "repeated"),
        ("bo@example.com", long.as_str(), "at most 256"),
        ("bo@example.com", "tab\tinside a password", "control"),
    ];
    for (email, password, rule) in cases {
        let response = register(&app, json!({ "email": email, "password": password })).await;
        let failing = fields(&assert_problem(response, 422).await);
        assert!(failing.iter().any(|(f, m)| f == "password" && m.contains(rule)), "{rule}: {failing:?}");
    }
    // Nothing was created along the way (besides the built-in echo agent's account).
    let admin = app.user("admin").await;
    let users: Value = app.get_as(&admin.access_token, "/v1/admin/users").await.json().await.expect("json");
    let people = users["users"].as_array().expect("users").iter().filter(|u| u["id"] != "echo-agent").count();
    assert_eq!(people, 1, "{users}");
    app.stop().await;
}

#[tokio::test]
async fn invite_only_registration_is_the_default_and_needs_a_valid_unused_code() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;

    // Without a code, every failing field is still listed.
    let response = register(&app, json!({ "email": "cy@example.com", "password": "short" })).await;
    let failing = fields(&assert_problem(response, 422).await);
    assert!(failing.iter().any(|(f, _)| f == "invite_code"), "{failing:?}");
    assert!(failing.iter().any(|(f, _)| f == "password"), "{failing:?}");

    let bogus = json!({ "email": "cy@example.com", "password": PASSWORD, "invite_code": "atom_inv_bogus" });
    let failing = fields(&assert_problem(register(&app, bogus).await, 422).await);
    assert_eq!(failing[0].0, "invite_code");

    // An invite for one address does not admit another.
    let code = invite(&app, &admin.access_token, json!({ "email": "Cy@Example.com", "ttl_hours": 1 })).await;
    assert!(code.starts_with("atom_inv_"), "{code}");
    let other = json!({ "email": "dee@example.com", "password": PASSWORD, "invite_code": code });
    assert_problem(register(&app, other).await, 422).await;
    let ok = json!({ "email": "cy@example.com", "password": PASSWORD, "invite_code": code });
    assert_eq!(register(&app, ok.clone()).await.status(), 201);
    app.login("cy@example.com", PASSWORD).await;
    // Used once, it is spent.
    let again = json!({ "email": "cy2@example.com", "password": PASSWORD, "invite_code": code });
    assert_problem(register(&app, again).await, 422).await;

    // An open invite admits any one address.
    let open = invite(&app, &admin.access_token, json!({})).await;
    let body = json!({ "email": "eve@example.com", "password": PASSWORD, "invite_code": open });
    assert_eq!(register(&app, body).await.status(), 201);

    // Invites are the admin's: a user gets 403, and bad fields are all listed.
    let user = app.user("user").await;
    assert_problem(post(&app, Some(&user.access_token), "/v1/admin/invites", &json!({})).await, 403).await;
    let bad = json!({ "email": "nope", "ttl_hours": 0 });
    let failing =
        fields(&assert_problem(post(&app, Some(&admin.access_token), "/v1/admin/invites", &bad).await, 422).await);
    assert_eq!(failing.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["email", "ttl_hours"]);
    app.stop().await;
}

/// The answer to a registration with an invite that does not admit it is the same whether
/// or not the email has an account: the invite is checked first, so a bogus code cannot probe
/// which addresses are registered. A refused attempt leaves the invite and the accounts as
/// they were.
#[tokio::test]
async fn a_refused_invite_answers_alike_for_registered_and_unknown_emails() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let known = app.user("user").await;
    let for_other = invite(&app, &admin.access_token, json!({ "email": "someone@example.com" })).await;
    let spent = invite(&app, &admin.access_token, json!({})).await;
    let use_it = json!({ "email": "first@example.com", "password": PASSWORD, "invite_code": spent });
    assert_eq!(register(&app, use_it).await.status(), 201);

    for code in ["atom_inv_bogus", for_other.as_str(), spent.as_str()] {
        let mut answers = Vec::new();
        for email in [known.email.as_str(), "nobody-yet@example.com"] {
            let body = json!({ "email": email, "password": PASSWORD, "invite_code": code });
            let mut problem = assert_problem(register(&app, body).await, 422).await;
            problem.as_object_mut().expect("object").remove("request_id");
            answers.push(problem);
        }
        assert_eq!(answers[0], answers[1], "a registered email is not told apart");
        assert_eq!(fields(&answers[0]), [("invite_code".to_owned(), "is not valid for this email".to_owned())]);
    }

    // A valid invite and a registered email: the conflict is named, and the invite is not spent.
    let open = invite(&app, &admin.access_token, json!({})).await;
    let taken = json!({ "email": known.email, "password": PASSWORD, "invite_code": open });
    let conflict = assert_problem(register(&app, taken).await, 409).await;
    assert_eq!(fields(&conflict)[0].0, "email");
    let fresh = json!({ "email": "later@example.com", "password": PASSWORD, "invite_code": open });
    assert_eq!(register(&app, fresh).await.status(), 201, "the invite still admits one account");
    app.stop().await;
}

#[tokio::test]
async fn registration_off_refuses_everyone() {
    let app = TestApp::spawn_with(&[("AUTH_REGISTRATION", "off")], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let code = invite(&app, &admin.access_token, json!({})).await;
    for body in [
        json!({ "email": "fay@example.com", "password": PASSWORD }),
        json!({ "email": "fay@example.com", "password": PASSWORD, "invite_code": code }),
    ] {
        assert_problem(register(&app, body).await, 403).await;
    }
    let response = try_login(&app.client, &app, "fay@example.com", PASSWORD).await;
    assert_eq!(response.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn changing_the_password_signs_out_every_session_and_retires_the_old_password() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let second = app.login(&user.email, PASSWORD).await;
    let new_password = "a brand new passphrase 42";

    // Wrong current password and a weak new one: both reported, nothing changed.
    let bad = json!({ "current_password": "not it at all!!", "new_password": "short" });
    let response = post(&app, Some(&user.access_token), "/v1/me/password", &bad).await;
    let failing = fields(&assert_problem(response, 422).await);
    assert!(failing.iter().any(|(f, _)| f == "current_password"), "{failing:?}");
    assert!(failing.iter().any(|(f, _)| f == "new_password"), "{failing:?}");
    app.login(&user.email, PASSWORD).await;

    let good = json!({ "current_password": PASSWORD, "new_password": new_password });
    let response = post(&app, Some(&user.access_token), "/v1/me/password", &good).await;
    assert_eq!(response.status(), 204);

    for refresh in [user.refresh_token.as_str(), second["refresh_token"].as_str().expect("refresh")] {
        assert_unauthorized(try_refresh(&app.client, &app, refresh).await, Some("invalid_token")).await;
    }
    assert_eq!(try_login(&app.client, &app, &user.email, PASSWORD).await.status(), 401);
    app.login(&user.email, new_password).await;

    // The change needs a token.
    assert_unauthorized(post(&app, None, "/v1/me/password", &good).await, None).await;
    app.stop().await;
}

#[tokio::test]
async fn admins_list_accounts_page_by_page() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    for _ in 0..4 {
        app.user("user").await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/admin/users?limit=2".to_owned();
    loop {
        let page: Value = app.get_as(&admin.access_token, &path).await.json().await.expect("json");
        let users = page["users"].as_array().expect("users");
        assert!(users.len() <= 2);
        // The built-in echo agent's account is listed too; these are the people.
        let people = users.iter().filter(|u| u["id"] != "echo-agent");
        seen.extend(people.map(|u| u["email"].as_str().expect("email").to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/admin/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in order, without repeats");
    assert_eq!(seen.len(), 5);
    assert!(seen.contains(&admin.email));
    assert_problem(app.get_as(&admin.access_token, "/v1/admin/users?limit=0").await, 422).await;
    app.stop().await;
}
