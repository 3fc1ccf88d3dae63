//! The provider catalog over HTTP and on the command line: `GET /v1/providers[/{id}]` (what a
//! UI needs, authenticated, 404 problem+json for an unknown id), an override directory
//! replacing and adding templates, `atom providers list|check`, and a broken template that
//! stops start-up naming its file and field.

use serde_json::Value;

use crate::common::{TestApp, assert_problem, pairs, run_atom};
use crate::identity_support::assert_unauthorized;

const ACME: &str = r#"
id = "acme"
name = "Acme"
auth_mode = "oauth2_authorization_code"

[[params]]
name = "subdomain"
label = "Subdomain"
pattern = "^[a-z0-9-]+$"
example = "acme"

[oauth2]
authorization_url = "https://{subdomain}.acme.example/oauth/authorize"
token_url = "https://{subdomain}.acme.example/oauth/token"
scopes = ["read"]
client_auth = "basic"

[api]
base_url = "https://{subdomain}.acme.example/api"

[api.credential]
in = "bearer"
"#;

fn provider<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["providers"].as_array().expect("providers").iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{id}"))
}

#[tokio::test]
async fn the_list_shows_what_a_ui_needs() {
    let app = TestApp::spawn_with(
        &[("PUBLIC_URL", "https://atom.example.com"), ("CONNECTORS_APPS", r#"{slack={client_id="123.456"}}"#)],
        axum::Router::new(),
    )
    .await;
    let user = app.user("user").await;
    let response = app.get_as(&user.access_token, "/v1/providers").await;
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.expect("json");
    assert_eq!(list["callback_url"], "https://atom.example.com/v1/connections/callback");
    assert!(list["providers"].as_array().expect("array").len() >= 40, "{list}");

    let slack = provider(&list, "slack");
    assert_eq!(slack["name"], "Slack");
    assert_eq!(slack["auth_mode"], "oauth2_authorization_code");
    assert!(slack["scopes"].as_array().is_some_and(|s| s.iter().any(|s| s == "chat:write")), "{slack}");
    assert_eq!(slack["app_configured"], true, "configured in connectors.apps");

    let shopify = provider(&list, "shopify");
    assert_eq!(shopify["app_configured"], false, "no app for Shopify");
    assert_eq!(shopify["params"][0]["name"], "shop");
    assert_eq!(shopify["params"][0]["pattern"], "^[a-z0-9][a-z0-9-]*$");
    assert_eq!(shopify["params"][0]["example"], "my-shop");

    let freshdesk = provider(&list, "freshdesk");
    assert_eq!(freshdesk["auth_mode"], "api_key");
    assert_eq!(freshdesk["app_configured"], true, "an API-key service needs no app");
    assert_eq!(freshdesk["fields"][0]["name"], "api_key");
    assert_eq!(freshdesk["fields"][0]["secret"], true);
    assert_eq!(provider(&list, "trello")["auth_mode"], "oauth1a");
}

#[tokio::test]
async fn one_provider_by_id_and_an_unknown_id_is_a_404_problem() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let response = app.get_as(&user.access_token, "/v1/providers/zendesk").await;
    assert_eq!(response.status(), 200);
    let zendesk: Value = response.json().await.expect("json");
    assert_eq!(zendesk["id"], "zendesk");
    assert_eq!(zendesk["params"][0]["name"], "subdomain");
    assert_eq!(zendesk["app_configured"], false);

    for id in ["nope", "SLACK", "slack.toml", "..%2Fslack"] {
        assert_problem(app.get_as(&user.access_token, &format!("/v1/providers/{id}")).await, 404).await;
    }
}

#[tokio::test]
async fn the_catalog_needs_credentials() {
    let app = TestApp::spawn().await;
    assert_unauthorized(app.get("/v1/providers").await, None).await;
    assert_unauthorized(app.get("/v1/providers/slack").await, None).await;
}

#[tokio::test]
async fn an_override_directory_replaces_and_adds_providers() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("acme.toml"), ACME).expect("write");
    let slack = ACME.replace("id = \"acme\"", "id = \"slack\"").replace("name = \"Acme\"", "name = \"Slack (ours)\"");
    std::fs::write(dir.path().join("slack.toml"), slack).expect("write");
    let path = dir.path().display().to_string();
    let app = TestApp::spawn_with(&[("CONNECTORS_PROVIDERS_DIR", &path)], axum::Router::new()).await;
    let user = app.user("user").await;
    let acme: Value = app.get_as(&user.access_token, "/v1/providers/acme").await.json().await.expect("json");
    assert_eq!(acme["params"][0]["name"], "subdomain");
    let slack: Value = app.get_as(&user.access_token, "/v1/providers/slack").await.json().await.expect("json");
    assert_eq!(slack["name"], "Slack (ours)");
}

#[tokio::test]
async fn providers_check_passes_the_built_ins_and_names_the_file_and_field_at_fault() {
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().display().to_string();
    let env = pairs(&[("DATA_DIR", &data_dir)]);
    let (code, _, stderr) = run_atom(&env, &["providers", "check"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("valid"), "{stderr}");

    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("acme.toml"), ACME).expect("write");
    let path = dir.path().display().to_string();
    let (code, _, stderr) = run_atom(&env, &["providers", "check", "--dir", &path]).await;
    assert_eq!(code, 0, "a valid override directory: {stderr}");

    let broken = ACME.replace("^[a-z0-9-]+$", "[a-z0-9-]+");
    std::fs::write(dir.path().join("broken.toml"), broken.replace("id = \"acme\"", "id = \"broken\"")).expect("write");
    let unknown = ACME
        .replace("id = \"acme\"", "id = \"unknown\"")
        .replace("{subdomain}.acme.example/api", "{tenant}.acme.example/api");
    std::fs::write(dir.path().join("unknown.toml"), unknown).expect("write");
    let (code, stdout, stderr) = run_atom(&env, &["providers", "check", "--dir", &path]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let broken_line = stderr.lines().find(|l| l.contains("broken.toml")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(broken_line.contains("params[0].pattern") && broken_line.contains("anchored"), "{broken_line}");
    let unknown_line = stderr.lines().find(|l| l.contains("unknown.toml")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        unknown_line.contains("api.base_url") && unknown_line.contains("{tenant} is not declared"),
        "{unknown_line}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The same directory configured stops `serve` at once: a configuration problem, exit 2.
    let env = pairs(&[("DATA_DIR", &data_dir), ("CONNECTORS_PROVIDERS_DIR", &path), ("LISTEN", "127.0.0.1:0")]);
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.toml: params[0].pattern"), "{stderr}");
}

#[tokio::test]
async fn providers_list_shows_each_provider_and_the_callback_url() {
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().display().to_string();
    let env = pairs(&[
        ("DATA_DIR", &data_dir),
        ("PUBLIC_URL", "https://atom.example.com"),
        ("CONNECTORS_APPS", r#"{github={client_id="Iv1.abc"}}"#),
    ]);
    let (code, stdout, stderr) = run_atom(&env, &["providers", "list"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("callback URL: https://atom.example.com/v1/connections/callback"), "{stdout}");
    let line = |id: &str| {
        stdout.lines().find(|l| l.split_whitespace().next() == Some(id)).unwrap_or_else(|| panic!("{id}: {stdout}"))
    };
    assert!(line("github").contains("oauth2_authorization_code") && line("github").ends_with("configured"));
    assert!(line("slack").ends_with("not configured"), "{}", line("slack"));
    assert!(line("stripe").contains("api_key") && line("stripe").ends_with("not needed"));
    assert!(line("trello").contains("oauth1a"));
    assert!(stdout.lines().count() >= 42, "a line per provider: {stdout}");

    // An app for a provider the catalog does not have is a configuration error naming it.
    let env = pairs(&[("DATA_DIR", &data_dir), ("CONNECTORS_APPS", r#"{nosuch={client_id="x"}}"#)]);
    let (code, _, stderr) = run_atom(&env, &["providers", "list"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("connectors.apps.nosuch"), "{stderr}");
}
