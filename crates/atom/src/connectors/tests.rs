//! Tests generated from the templates: every built-in file gets its authorization URL built
//! and a token response shaped as it declares parsed, with the file's own example values.
//! A failure names the template. Plus the loader's and validator's refusals.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::catalog::{self, Catalog, embedded};
use super::oauth2::{self, AuthorizationRequest, FlowError};
use super::template::{AuthMode, Template};
use super::validate::EXAMPLE_CLIENT_ID;
use super::{Values, callback_url};

fn builtin() -> Catalog {
    match Catalog::builtin() {
        Ok(c) => c,
        Err(errors) => panic!("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
    }
}

/// The template's parameters filled with their examples.
fn example_values(t: &Template) -> Values {
    let given: BTreeMap<String, String> = t.params.iter().map(|p| (p.name.clone(), p.example.clone())).collect();
    Values::from_params(t, &given).unwrap_or_else(|e| panic!("{}: examples refused: {e:?}", t.id))
}

/// Sets `value` at JSON pointer `pointer` in `doc`, creating objects on the way.
fn put(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<String> = pointer.split('/').skip(1).map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = at else { panic!("{pointer} goes through a non-object") };
        if i + 1 == parts.len() {
            map.insert(part.clone(), value);
            return;
        }
        at = map.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

#[test]
fn the_catalog_covers_every_service_atom_integrates() {
    let catalog = builtin();
    assert_eq!(catalog.len(), embedded().len(), "one template per file");
    assert!(catalog.len() >= 40, "at least 40 templates, found {}", catalog.len());
}

#[test]
fn every_oauth2_template_builds_its_authorization_url() {
    let catalog = builtin();
    let mut checked = 0;
    for t in catalog.iter().filter(|t| t.auth_mode == AuthMode::Oauth2AuthorizationCode) {
        let o = t.oauth2.as_ref().expect("validated");
        let values = example_values(t);
        let extra = vec!["extra.scope".to_owned()];
        let req = AuthorizationRequest {
            client_id: "client-123",
            redirect_uri: "https://atom.example.com/v1/connections/callback",
            state: "state-xyz",
            pkce_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            extra_scopes: &extra,
            endpoint: None,
        };
        let url = match oauth2::authorization_url(t, &values, &req) {
            Ok(url) => url,
            Err(FlowError::Unsupported(_)) if o.authorization_url.is_none() => continue, // discovery only
            Err(e) => panic!("{}: {e}", t.id),
        };
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let id = &t.id;
        assert_eq!(url.scheme(), "https", "{id}");
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"), "{id}");
        assert_eq!(q.get("client_id").map(String::as_str), Some("client-123"), "{id}");
        assert_eq!(q.get("redirect_uri").map(String::as_str), Some(req.redirect_uri), "{id}");
        assert_eq!(q.get("state").map(String::as_str), Some("state-xyz"), "{id}");
        let mut scopes = o.scopes.clone();
        scopes.push("extra.scope".into());
        assert_eq!(
            q.get(&o.scope_param),
            Some(&scopes.join(&o.scope_separator)),
            "{id}: scopes joined by {:?}",
            o.scope_separator
        );
        if o.pkce {
            assert_eq!(q.get("code_challenge").map(String::as_str), req.pkce_challenge, "{id}");
            assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"), "{id}");
        } else {
            assert!(!q.contains_key("code_challenge"), "{id}: no PKCE unless the template says so");
        }
        for (k, v) in &o.authorization_params {
            let expected = values.substitute(v).expect("validated");
            assert_eq!(q.get(k), Some(&expected), "{id}: extra parameter {k}");
        }
        // Each parameter's example reaches the URL when the template uses it.
        for p in &t.params {
            if o.authorization_url.as_deref().is_some_and(|u| u.contains(&format!("{{{}}}", p.name))) {
                assert!(url.as_str().contains(&p.example), "{id}: {} in {url}", p.name);
            }
        }
        assert!(!url.as_str().contains('{'), "{id}: a placeholder left in {url}");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} authorization URLs checked");
}

#[test]
fn every_pkce_template_refuses_to_build_without_a_challenge() {
    for t in builtin().iter().filter(|t| t.oauth2.as_ref().is_some_and(|o| o.pkce && o.authorization_url.is_some())) {
        let req = AuthorizationRequest {
            client_id: "c",
            redirect_uri: "https://atom.example.com/cb",
            state: "s",
            pkce_challenge: None,
            extra_scopes: &[],
            endpoint: None,
        };
        let e = oauth2::authorization_url(t, &example_values(t), &req).expect_err(&t.id);
        assert_eq!(e, FlowError::MissingPkce, "{}", t.id);
    }
}

/// A token response shaped as `t` declares, with every pointer filled.
fn token_response(t: &Template, expires_in: Option<u64>, refresh: bool) -> (Value, BTreeMap<String, String>) {
    let o = t.oauth2.as_ref().expect("oauth2");
    let r = &o.response;
    let mut doc = json!({});
    put(&mut doc, &r.access_token, json!(format!("at-{}", t.id)));
    if refresh {
        put(&mut doc, &r.refresh_token, json!(format!("rt-{}", t.id)));
    }
    if let Some(secs) = expires_in {
        put(&mut doc, &r.expires_in, json!(secs));
    }
    put(&mut doc, &r.scope, json!(o.scopes.join(&o.scope_separator)));
    let mut kept = BTreeMap::new();
    for k in t.keep.iter().filter(|k| k.token.is_some()) {
        let value = k.example.clone().unwrap_or_else(|| format!("kept-{}", k.name));
        put(&mut doc, k.token.as_deref().expect("token"), json!(value));
        kept.insert(k.name.clone(), value);
    }
    (doc, kept)
}

#[test]
fn every_oauth2_template_parses_a_token_response_shaped_as_it_declares() {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
    let mut checked = 0;
    for t in builtin().iter().filter(|t| t.oauth2.is_some()) {
        let o = t.oauth2.as_ref().expect("oauth2");
        let id = &t.id;
        let (doc, kept) = token_response(t, Some(3600), true);
        let set = oauth2::parse_token_response(t, &doc, now).unwrap_or_else(|e| panic!("{id}: {e}: {doc}"));
        use secrecy::ExposeSecret;
        assert_eq!(set.access_token.expose_secret(), format!("at-{id}"), "{id}");
        assert_eq!(set.refresh_token.as_ref().map(|s| s.expose_secret().to_owned()), Some(format!("rt-{id}")), "{id}");
        let expected_expiry = if o.expiry.never { None } else { Some(now + time::Duration::seconds(3600)) };
        assert_eq!(set.expires_at, expected_expiry, "{id}");
        if !o.scopes.is_empty() {
            assert_eq!(set.scopes.as_ref(), Some(&o.scopes), "{id}: scopes split by {:?}", o.scope_separator);
        }
        assert_eq!(set.kept, kept, "{id}: kept values");

        // No expires_in: the template's default lifetime, or no known expiry.
        let (doc, _) = token_response(t, None, false);
        let set = oauth2::parse_token_response(t, &doc, now).unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected =
            o.expiry.default_lifetime_secs.filter(|_| !o.expiry.never).map(|s| now + time::Duration::seconds(s as i64));
        assert_eq!(set.expires_at, expected, "{id}: without expires_in");
        assert!(set.refresh_token.is_none(), "{id}");

        // The provider's error at the template's error pointer is refused, whatever else is there.
        let (mut doc, _) = token_response(t, Some(3600), true);
        set_error(&mut doc, &o.response.error);
        let e = oauth2::parse_token_response(t, &doc, now).expect_err(id);
        assert!(matches!(e, FlowError::Provider { ref error, .. } if error == "invalid_grant"), "{id}: {e}");

        // No access token where the template says it sits: refused.
        let mut empty = json!({});
        put(&mut empty, &o.response.refresh_token, json!("rt"));
        assert_eq!(
            oauth2::parse_token_response(t, &empty, now).expect_err(id),
            FlowError::Missing("access_token".into()),
            "{id}"
        );

        // A refresh answer without a refresh token keeps the old one when the template says so.
        let r = o.refresh_response.as_ref().unwrap_or(&o.response);
        let mut refreshed = json!({});
        put(&mut refreshed, &r.access_token, json!("at-2"));
        let mut set =
            oauth2::parse_refresh_response(t, &refreshed, now).unwrap_or_else(|e| panic!("{id}: refresh: {e}"));
        oauth2::keep_refresh_token(t, &mut set, Some("rt-old".to_owned().into()));
        let kept_old = set.refresh_token.as_ref().map(|s| s.expose_secret().to_owned());
        assert_eq!(kept_old.as_deref(), o.expiry.keep_refresh_token.then_some("rt-old"), "{id}: refresh token kept");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} token responses checked");
}

fn set_error(doc: &mut Value, pointer: &str) {
    put(doc, pointer, json!("invalid_grant"));
}

#[test]
fn kept_values_that_fail_their_pattern_are_refused() {
    let now = OffsetDateTime::now_utc();
    for t in builtin().iter().filter(|t| t.oauth2.is_some()) {
        for k in t.keep.iter().filter(|k| k.token.is_some() && k.pattern.is_some()) {
            let (mut doc, _) = token_response(t, Some(60), true);
            put(&mut doc, k.token.as_deref().expect("token"), json!("https://evil.example/#@"));
            let e = oauth2::parse_token_response(t, &doc, now).expect_err(&t.id);
            assert_eq!(e, FlowError::Missing(k.name.clone()), "{}", t.id);
        }
        for k in t.keep.iter().filter(|k| k.callback.is_some()) {
            let mut query = BTreeMap::new();
            if let Some(e) = &k.example {
                query.insert(k.callback.clone().expect("callback"), e.clone());
                let kept = oauth2::callback_values(t, &query).unwrap_or_else(|e| panic!("{}: {e}", t.id));
                assert_eq!(kept.get(&k.name), Some(e), "{}", t.id);
            }
            if k.required {
                assert!(oauth2::callback_values(t, &BTreeMap::new()).is_err(), "{}: {} is required", t.id, k.name);
            }
        }
    }
}

#[test]
fn no_parameter_pattern_lets_a_url_delimiter_through() {
    for t in builtin().iter() {
        for p in &t.params {
            for bad in ["evil.example/", "a@b", "a#b", "a?b", "a b", "a%2F", "a\\b", "a:1", ""] {
                if bad.is_empty() && p.default.as_deref() == Some("") {
                    continue; // declared: empty is a value (Tableau's default site)
                }
                assert!(!p.pattern.is_match(bad), "{}: param {} accepts {bad:?}", t.id, p.name);
            }
        }
    }
}

#[test]
fn parameters_are_checked_before_they_enter_a_url() {
    let t = builtin().get("shopify").cloned().expect("shopify");
    let mut given = BTreeMap::new();
    given.insert("shop".to_owned(), "evil.example/x?".to_owned());
    let errors = Values::from_params(&t, &given).expect_err("refused");
    assert_eq!(errors[0].field, "shop");
    let errors = Values::from_params(&t, &BTreeMap::new()).expect_err("required");
    assert_eq!(errors[0].message, "is required");
    given.clear();
    given.insert("shop".to_owned(), "acme".to_owned());
    given.insert("tenant".to_owned(), "x".to_owned());
    let errors = Values::from_params(&t, &given).expect_err("unknown");
    assert_eq!(errors[0].field, "tenant");
}

#[test]
fn the_callback_url_is_the_public_url_and_one_fixed_path() {
    assert_eq!(
        callback_url(Some("https://atom.example.com/")).as_deref(),
        Some("https://atom.example.com/v1/connections/callback")
    );
    assert_eq!(callback_url(None), None);
    assert_eq!(EXAMPLE_CLIENT_ID, "example-client-id");
}

/// A minimal valid template, for the refusal tests to break one field at a time.
const MINIMAL: &str = r#"
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
client_auth = "basic"

[api]
base_url = "https://{subdomain}.acme.example/api"

[api.credential]
in = "bearer"
"#;

fn refused(text: &str) -> Vec<(String, String)> {
    match catalog::parse("acme.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

#[test]
fn a_minimal_template_loads() {
    catalog::parse("acme.toml", MINIMAL).expect("valid");
}

#[test]
fn each_broken_field_is_named() {
    let cases: Vec<(String, &str, &str)> = vec![
        (MINIMAL.replace("id = \"acme\"", "id = \"other\""), "id", "stem"),
        (MINIMAL.replace("^[a-z0-9-]+$", "[a-z0-9-]+"), "params[0].pattern", "anchored"),
        (MINIMAL.replace("^[a-z0-9-]+$", "^[a-z$"), "params[0].pattern", ""),
        (MINIMAL.replace("example = \"acme\"", "example = \"ACME\""), "params[0].example", "does not match"),
        (
            MINIMAL.replace("{subdomain}.acme.example/oauth/token", "{tenant}.acme.example/oauth/token"),
            "oauth2.token_url",
            "{tenant} is not declared",
        ),
        (
            MINIMAL.replace("https://{subdomain}.acme.example/oauth/authorize", "ftp://acme.example/authorize"),
            "oauth2.authorization_url",
            "https",
        ),
        (
            MINIMAL.replace("https://{subdomain}.acme.example/api", "https://{subdomain.acme.example/api"),
            "api.base_url",
            "unclosed",
        ),
        (MINIMAL.replace("client_auth = \"basic\"\n", ""), "oauth2", "client_auth"),
        (
            MINIMAL.replace("client_auth = \"basic\"", "client_auth = \"header\""),
            "oauth2.client_auth",
            "unknown variant",
        ),
        (
            MINIMAL.replace("auth_mode = \"oauth2_authorization_code\"", "auth_mode = \"api_key\""),
            "oauth2",
            "does not apply",
        ),
        (
            MINIMAL.replace("\n[api]\n", "\n[oauth2.authorization_params]\nstate = \"x\"\n\n[api]\n"),
            "oauth2.authorization_params.state",
            "set by the flow",
        ),
        (format!("{MINIMAL}\n[identity]\nurl = \"/me\"\nlabel = \"email\"\n"), "identity.label", "JSON pointer"),
        (MINIMAL.replace("name = \"Acme\"", "name = \"Acme\"\nsurprise = 1"), "surprise", "unknown field"),
    ];
    for (text, field, message) in cases {
        let errors = refused(&text);
        assert!(
            errors.iter().any(|(f, m)| f == field && m.contains(message)),
            "expected {field}: …{message}…, got {errors:?}"
        );
    }
}

#[test]
fn a_token_kept_value_is_not_usable_before_the_exchange() {
    let text = MINIMAL
        .replace("https://{subdomain}.acme.example/oauth/authorize", "https://{region}.acme.example/oauth/authorize")
        + "\n[[keep]]\nname = \"region\"\ntoken = \"/region\"\npattern = \"^[a-z]+$\"\nexample = \"eu\"\n";
    let errors = refused(&text);
    assert!(errors.iter().any(|(f, m)| f == "oauth2.authorization_url" && m.contains("not known yet")), "{errors:?}");
}

#[test]
fn a_value_kept_without_a_pattern_never_enters_a_url() {
    let text = MINIMAL.replace("https://{subdomain}.acme.example/api", "https://{region}.acme.example/api")
        + "\n[[keep]]\nname = \"region\"\ntoken = \"/region\"\n";
    let errors = refused(&text);
    assert!(errors.iter().any(|(f, m)| f == "api.base_url" && m.contains("without a pattern")), "{errors:?}");
}

#[test]
fn secrets_stay_out_of_urls_other_than_the_credentials() {
    let text = MINIMAL.replace(
        "https://{subdomain}.acme.example/oauth/token",
        "https://{subdomain}.acme.example/oauth/token?t={access_token}",
    );
    let errors = refused(&text);
    assert!(errors.iter().any(|(f, _)| f == "oauth2.token_url"), "{errors:?}");
}

#[test]
fn an_override_directory_replaces_and_adds_templates() {
    let dir = tempfile::tempdir().expect("dir");
    let slack =
        MINIMAL.replace("id = \"acme\"", "id = \"slack\"").replace("name = \"Acme\"", "name = \"Slack (ours)\"");
    std::fs::write(dir.path().join("slack.toml"), slack).expect("write");
    std::fs::write(dir.path().join("acme.toml"), MINIMAL).expect("write");
    std::fs::write(dir.path().join("README.md"), "not a template").expect("write");
    let catalog = Catalog::load(Some(dir.path())).expect("valid");
    assert_eq!(catalog.len(), embedded().len() + 1);
    assert_eq!(catalog.get("slack").expect("slack").name, "Slack (ours)");
    assert!(catalog.get("acme").is_some());
    assert!(matches!(catalog.source("slack"), Some(catalog::Source::Override(_))));

    std::fs::write(dir.path().join("broken.toml"), MINIMAL).expect("write");
    let errors = Catalog::load(Some(dir.path())).expect_err("broken");
    assert!(errors.iter().all(|e| e.file.ends_with("broken.toml") && e.field == "id"), "{errors:?}");
}

/// The values a connection holds after the exchange: its parameters, and every kept and
/// lookup value at its example.
fn connected_values(t: &Template) -> Values {
    let mut values = example_values(t);
    for k in &t.keep {
        if let Some(e) = &k.example {
            values.insert_trusted(&k.name, e.clone());
        }
    }
    if let Some(lookup) = t.lookup {
        for (name, _, example) in lookup.provides() {
            values.insert_trusted(name, *example);
        }
    }
    values
}

#[test]
fn every_oauth2_template_builds_its_code_exchange_refresh_and_revocation() {
    use super::requests::{self, ClientCredentials, Encoding};
    use super::template::{ClientAuth, TokenPlacement};
    use secrecy::{ExposeSecret, SecretString};

    let secret = SecretString::from("client-secret".to_owned());
    let client = ClientCredentials { id: "client-123", secret: &secret };
    let refresh_token = SecretString::from("rt-old".to_owned());
    let access_token = SecretString::from("at-now".to_owned());
    let mut checked = 0;
    for t in builtin().iter().filter(|t| t.oauth2.is_some()) {
        let o = t.oauth2.as_ref().expect("oauth2");
        let id = &t.id;
        let values = connected_values(t);
        let Some(token_url) = &o.token_url else { continue }; // discovery only
        let req = requests::code_exchange(
            t,
            &values,
            &client,
            "code-1",
            "https://atom.example.com/cb",
            Some("verifier"),
            None,
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(req.url.as_str(), values.substitute(token_url).expect("filled"), "{id}");
        assert_eq!(req.param("grant_type"), Some("authorization_code"), "{id}");
        assert_eq!(req.param("code"), Some("code-1"), "{id}");
        assert_eq!(req.param("redirect_uri"), Some("https://atom.example.com/cb"), "{id}");
        assert_eq!(req.param("code_verifier"), o.pkce.then_some("verifier"), "{id}: a verifier exactly with PKCE");
        match o.client_auth {
            ClientAuth::Basic => {
                assert_eq!(
                    req.basic.as_ref().map(|(u, p)| (u.as_str(), p.expose_secret())),
                    Some(("client-123", "client-secret")),
                    "{id}"
                );
                assert_eq!(req.param("client_secret"), None, "{id}: the secret goes once");
            }
            ClientAuth::Form | ClientAuth::Json => {
                assert!(req.basic.is_none(), "{id}");
                assert_eq!(req.param("client_id"), Some("client-123"), "{id}");
                assert_eq!(req.param("client_secret"), Some("client-secret"), "{id}");
            }
            ClientAuth::None => assert_eq!(req.param("client_secret"), None, "{id}"),
        }
        let json = o.client_auth == ClientAuth::Json || o.token_body == super::template::BodyFormat::Json;
        assert_eq!(req.encoding, if json { Encoding::Json } else { Encoding::Form }, "{id}");
        let (content_type, body) = req.body().expect("a body");
        assert!(!body.is_empty() && content_type.starts_with("application/"), "{id}");
        for (k, v) in &o.token_params {
            assert_eq!(req.param(k), Some(values.substitute(v).expect("filled").as_str()), "{id}: {k}");
        }
        assert!(!format!("{req:?}").contains("client-secret"), "{id}: Debug hides secrets");

        let req = requests::refresh(t, &values, &client, &refresh_token, None).unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected = o.refresh_url.as_ref().unwrap_or(token_url);
        assert_eq!(req.url.as_str(), values.substitute(expected).expect("filled"), "{id}");
        assert_eq!(req.param("grant_type"), Some("refresh_token"), "{id}");
        assert_eq!(req.param("refresh_token"), Some("rt-old"), "{id}");

        if let Some(r) = &o.revocation {
            let req = requests::revocation(t, &values, &client, &access_token, Some(&refresh_token))
                .unwrap_or_else(|e| panic!("{id}: {e}"))
                .expect("declared");
            assert_eq!(req.method, r.method, "{id}");
            assert!(!req.url.as_str().contains('{'), "{id}: {}", req.url);
            let token = if r.token == super::template::WhichToken::Refresh { "rt-old" } else { "at-now" };
            let carried = match r.token_in {
                TokenPlacement::Form | TokenPlacement::Json => req.param(&r.token_field) == Some(token),
                TokenPlacement::Query => req.url.query_pairs().any(|(k, v)| k == r.token_field.as_str() && v == token),
                TokenPlacement::Bearer => req.bearer.as_ref().is_some_and(|b| b.expose_secret() == token),
            };
            assert!(carried, "{id}: the {token} goes {:?}", r.token_in);
        } else {
            assert!(requests::revocation(t, &values, &client, &access_token, None).expect("ok").is_none(), "{id}");
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} templates checked");
}

#[test]
fn githubs_revocation_names_the_client_in_its_path() {
    use super::requests::{self, ClientCredentials};
    use secrecy::SecretString;
    let t = builtin().get("github").cloned().expect("github");
    let secret = SecretString::from("s".to_owned());
    let client = ClientCredentials { id: "Iv1.abc", secret: &secret };
    let req = requests::revocation(&t, &Values::default(), &client, &SecretString::from("gho_x".to_owned()), None)
        .expect("ok")
        .expect("declared");
    assert_eq!(req.url.as_str(), "https://api.github.com/applications/Iv1.abc/grant");
    assert_eq!(req.method, super::template::HttpMethod::Delete);
    assert_eq!(req.param("access_token"), Some("gho_x"));
    assert_eq!(req.body().expect("body").0, "application/json");
}

#[test]
fn a_par_url_stands_in_for_discovery_and_is_checked_like_the_other_urls() {
    let with = |line: &str| MINIMAL.replace("client_auth = \"basic\"", &format!("client_auth = \"basic\"\n{line}"));
    let t =
        catalog::parse("acme.toml", &with("par_url = \"https://{subdomain}.acme.example/oauth/par\"")).expect("valid");
    let spec = super::spec::ProviderSpec::from_template(&t).expect("a spec");
    let super::spec::AuthSpec::OAuth2(o) = &spec.auth else { panic!("an OAuth 2.0 spec") };
    assert!(o.par, "a declared PAR endpoint is used");
    assert_eq!(o.par_url.as_deref(), Some("https://{subdomain}.acme.example/oauth/par"), "filled per connection");
    for (line, field, message) in [
        ("par = true", "oauth2.par", "par_url"),
        ("par_url = \"http://acme.example/par\"", "oauth2.par_url", "https"),
        ("par_url = \"https://{tenant}.acme.example/par\"", "oauth2.par_url", "{tenant} is not declared"),
    ] {
        let errors = refused(&with(line));
        assert!(errors.iter().any(|(f, m)| f == field && m.contains(message)), "{line}: {errors:?}");
    }
}

#[test]
fn a_sign_in_names_its_url_and_its_fields_and_an_oauth1_revocation_its_placeholders() {
    let parse = |id: &str, text: &str| catalog::parse(&format!("{id}.toml"), text);
    let tableau = include_str!("../../../../providers/tableau.toml");
    parse("tableau", tableau).expect("the catalog's template");
    let field_errors =
        |text: &str| parse("tableau", text).err().map(|e| e.into_iter().map(|e| e.field).collect::<Vec<_>>());
    let no_url = tableau.replace("lookup_url = \"https://{server}/api/3.24/auth/signin\"\n", "");
    assert_eq!(field_errors(&no_url), Some(vec!["lookup_url".to_owned()]));
    let no_secret = tableau.replace("name = \"pat_secret\"", "name = \"pat_password\"");
    assert!(field_errors(&no_secret).is_some_and(|f| f.contains(&"fields".to_owned())), "the sign-in's field");

    let trello = include_str!("../../../../providers/trello.toml");
    parse("trello", trello).expect("the catalog's template");
    let undeclared = trello.replace("tokens/{access_token}", "tokens/{token}");
    assert!(field_errors_of(parse("trello", &undeclared)).contains(&"oauth1.revocation.url".to_owned()));
}

fn field_errors_of(parsed: Result<Template, Vec<catalog::CatalogError>>) -> Vec<String> {
    parsed.err().map(|e| e.into_iter().map(|e| e.field).collect()).unwrap_or_default()
}
