//! [`validate`]: the checks a template must pass beyond its types, each failure a
//! `(field, message)` pair naming the TOML path.
//!
//! The central one is placeholder availability. A connection learns values in stages: its
//! parameters before the user leaves for the provider, the client id and the callback's
//! values at the code exchange, the token response's and the lookup's values afterwards, the
//! credential itself for the agent's calls. A placeholder may only be used at a stage where
//! its value is known, and only a value guarded by a pattern may enter a URL; secrets (a
//! token, a pasted key) only enter the agent's calls. Every URL is then filled with the
//! examples and must parse, over https (or http to a loopback host, for local test servers).

use std::collections::{BTreeMap, BTreeSet};

use super::placeholders;
use super::template::{
    AuthMode, ClientAuth, CredentialPlacement, Lookup, OAuth2, RevocationStyle, Template, TokenPlacement,
};

/// Names no parameter, field or kept value may take: the flows fill them.
pub const RESERVED: &[&str] = &["client_id", "client_secret", "access_token", "refresh_token", "redirect_uri", "state"];

/// Example values of the reserved names that templates may use, for the checks.
pub const EXAMPLE_CLIENT_ID: &str = "example-client-id";
pub const EXAMPLE_ACCESS_TOKEN: &str = "example-access-token";

/// Authorization request parameters the flow sets itself.
const FLOW_AUTHORIZATION_PARAMS: &[&str] =
    &["response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "request_uri"];
/// Token request parameters the flow sets itself.
const FLOW_TOKEN_PARAMS: &[&str] =
    &["grant_type", "code", "redirect_uri", "client_id", "client_secret", "code_verifier", "refresh_token"];

/// The stages of a connection; a placeholder is usable from the stage its value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Before the user leaves for the provider: connection parameters only.
    Authorize,
    /// The code exchange: also the client id and the values kept from the callback query.
    Token,
    /// After the exchange (refresh, revocation): also the token response's kept values and
    /// the lookup's.
    Connected,
    /// The agent's calls and the identity endpoint: also the credential itself.
    Api,
}

/// The checks beyond types, as `(field, message)` pairs; empty when the template is valid.
pub fn validate(t: &Template) -> Vec<(String, String)> {
    let mut v = Validator::default();
    v.check(t);
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<(String, String)>,
    /// Each usable placeholder: its example and the first stage it is known at.
    available: BTreeMap<String, (String, Stage)>,
    /// Names holding secrets: only the agent's calls may use them.
    secret: BTreeSet<String>,
    /// Kept values without a pattern: recorded, never substituted.
    unchecked: BTreeSet<String>,
    /// Every name the agent's calls use, to find fields nothing uses.
    used_by_api: BTreeSet<String>,
}

impl Validator {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push((field.into(), message.into()));
    }

    fn declare(&mut self, field: String, name: &str, example: &str, stage: Stage) {
        if !placeholders::is_name(name) {
            self.err(field, format!("{name:?} is not a name ([a-z][a-z0-9_]*)"));
        } else if RESERVED.contains(&name) {
            self.err(field, format!("{name:?} is reserved"));
        } else if self.available.contains_key(name) || self.unchecked.contains(name) {
            self.err(field, format!("{name:?} is declared twice"));
        } else {
            self.available.insert(name.to_owned(), (example.to_owned(), stage));
        }
    }

    fn check(&mut self, t: &Template) {
        let id_ok = t.id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && t.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !id_ok {
            self.err("id", "must be [a-z0-9][a-z0-9_-]*");
        }
        if t.name.trim().is_empty() {
            self.err("name", "must not be empty");
        }
        for (i, doc) in t.docs.iter().enumerate() {
            if !doc.starts_with("https://") || url::Url::parse(doc).is_err() {
                self.err(format!("docs[{i}]"), "must be an https:// URL");
            }
        }
        self.check_sections(t);
        self.declare_values(t);
        if let Some(o) = &t.oauth2 {
            self.check_oauth2(t, o);
        }
        if let Some(o) = &t.oauth1 {
            for (field, url) in [
                ("oauth1.request_token_url", &o.request_token_url),
                ("oauth1.authorization_url", &o.authorization_url),
                ("oauth1.access_token_url", &o.access_token_url),
            ] {
                self.url(field.into(), url, Stage::Authorize, false);
            }
            for (k, val) in &o.authorization_params {
                self.text(format!("oauth1.authorization_params.{k}"), val, Stage::Authorize, false);
            }
            if let Some(r) = &o.revocation {
                // The token revoked is in the URL (Trello's path), as in the agent's calls.
                self.url("oauth1.revocation.url".into(), &r.url, Stage::Api, true);
            }
        }
        self.check_api(t);
        self.check_webhooks(t);
    }

    /// Pointers are RFC 6901; a route names a parameter or kept value (never a secret) and
    /// says where the event carries it, in exactly one place.
    fn check_webhooks(&mut self, t: &Template) {
        let Some(w) = &t.webhooks else { return };
        for (field, pointer) in [("webhooks.id_pointer", &w.id_pointer), ("webhooks.type_pointer", &w.type_pointer)] {
            if pointer.as_deref().is_some_and(|p| !p.starts_with('/')) {
                self.err(field, "must be a JSON pointer (starting with /)");
            }
        }
        let Some(route) = &w.route else { return };
        let known = self.available.contains_key(&route.param) || self.unchecked.contains(&route.param);
        if !known || self.secret.contains(&route.param) {
            self.err("webhooks.route.param", format!("{:?} is no parameter or kept value", route.param));
        }
        match (&route.header, &route.pointer) {
            (Some(h), None) if !h.trim().is_empty() => {}
            (None, Some(p)) if p.starts_with('/') => {}
            _ => self.err("webhooks.route", "needs exactly one of header and pointer (a JSON pointer)"),
        }
    }

    /// The sections each auth mode needs, and no others.
    fn check_sections(&mut self, t: &Template) {
        let mode = t.auth_mode;
        let oauth2 = matches!(mode, AuthMode::Oauth2AuthorizationCode | AuthMode::Oauth2ClientCredentials);
        match (oauth2, t.oauth2.is_some()) {
            (true, false) => self.err("oauth2", format!("is required for auth_mode {}", mode.as_str())),
            (false, true) => self.err("oauth2", format!("does not apply to auth_mode {}", mode.as_str())),
            _ => {}
        }
        match (mode == AuthMode::Oauth1a, t.oauth1.is_some()) {
            (true, false) => self.err("oauth1", "is required for auth_mode oauth1a"),
            (false, true) => self.err("oauth1", format!("does not apply to auth_mode {}", mode.as_str())),
            _ => {}
        }
        let keyed = matches!(mode, AuthMode::ApiKey | AuthMode::Basic);
        match (keyed, t.fields.is_empty()) {
            (true, true) => self.err("fields", format!("auth_mode {} needs at least one field", mode.as_str())),
            (false, false) => self.err("fields", format!("do not apply to auth_mode {}", mode.as_str())),
            _ => {}
        }
    }

    /// Declares the parameters, fields, kept values and lookup values, checking each.
    fn declare_values(&mut self, t: &Template) {
        for (i, p) in t.params.iter().enumerate() {
            self.declare(format!("params[{i}].name"), &p.name, &p.example, Stage::Authorize);
            if !p.pattern.is_match(&p.example) {
                self.err(format!("params[{i}].example"), format!("{:?} does not match the pattern", p.example));
            }
            if let Some(d) = &p.default
                && !p.pattern.is_match(d)
            {
                self.err(format!("params[{i}].default"), format!("{d:?} does not match the pattern"));
            }
        }
        for (i, f) in t.fields.iter().enumerate() {
            self.declare(format!("fields[{i}].name"), &f.name, &f.example, Stage::Api);
            if f.secret {
                self.secret.insert(f.name.clone());
            }
            if !f.pattern.is_match(&f.example) {
                self.err(format!("fields[{i}].example"), format!("{:?} does not match the pattern", f.example));
            }
        }
        let redirected = matches!(t.auth_mode, AuthMode::Oauth2AuthorizationCode | AuthMode::Oauth1a);
        for (i, k) in t.keep.iter().enumerate() {
            let stage = match (&k.callback, &k.token) {
                (Some(_), None) => {
                    if !redirected {
                        self.err(format!("keep[{i}].callback"), "this auth mode has no callback");
                    }
                    Stage::Token
                }
                (None, Some(pointer)) => {
                    if t.oauth2.is_none() {
                        self.err(format!("keep[{i}].token"), "only an OAuth 2.0 token response has JSON to point into");
                    }
                    self.pointer(format!("keep[{i}].token"), pointer);
                    Stage::Connected
                }
                _ => {
                    self.err(format!("keep[{i}]"), "needs exactly one of callback and token");
                    Stage::Connected
                }
            };
            match (&k.pattern, &k.example) {
                (Some(p), Some(e)) => {
                    if !p.is_match(e) {
                        self.err(format!("keep[{i}].example"), format!("{e:?} does not match the pattern"));
                    }
                    self.declare(format!("keep[{i}].name"), &k.name, e, stage);
                }
                (None, None) => {
                    if !placeholders::is_name(&k.name) || RESERVED.contains(&k.name.as_str()) {
                        self.err(format!("keep[{i}].name"), format!("{:?} is not a usable name", k.name));
                    } else if self.available.contains_key(&k.name) || !self.unchecked.insert(k.name.clone()) {
                        self.err(format!("keep[{i}].name"), format!("{:?} is declared twice", k.name));
                    }
                }
                _ => self.err(format!("keep[{i}]"), "pattern and example go together"),
            }
        }
        if let Some(lookup) = t.lookup {
            let fits = match lookup {
                Lookup::TableauSignin => t.auth_mode == AuthMode::ApiKey,
                _ => t.auth_mode == AuthMode::Oauth2AuthorizationCode,
            };
            if !fits {
                self.err("lookup", format!("does not apply to auth_mode {}", t.auth_mode.as_str()));
            }
            if lookup == Lookup::TableauSignin {
                // The session token the sign-in returns is what calls carry.
                self.available.insert("access_token".into(), (EXAMPLE_ACCESS_TOKEN.into(), Stage::Api));
                self.secret.insert("access_token".into());
            }
            for (name, _, example) in lookup.provides() {
                self.declare("lookup".into(), name, example, Stage::Connected);
            }
        }
        match (&t.lookup, &t.lookup_url) {
            (Some(_), Some(url)) => self.url("lookup_url".into(), url, Stage::Token, false),
            (None, Some(_)) => self.err("lookup_url", "applies only with a lookup"),
            // A sign-in has no fixed host: the template says where it goes.
            (Some(l), None) if l.signs_in() => self.err("lookup_url", "is required: where the sign-in goes"),
            _ => {}
        }
        if t.lookup == Some(Lookup::TableauSignin) {
            for name in ["pat_name", "pat_secret"] {
                if !t.fields.iter().any(|f| f.name == name) {
                    self.err("fields", format!("the sign-in needs a field {name:?}"));
                }
            }
        }
        if t.auth_mode.needs_app() {
            self.available.insert("client_id".into(), (EXAMPLE_CLIENT_ID.into(), Stage::Token));
            self.available.insert("access_token".into(), (EXAMPLE_ACCESS_TOKEN.into(), Stage::Api));
            self.secret.insert("access_token".into());
        }
    }

    fn check_oauth2(&mut self, t: &Template, o: &OAuth2) {
        let code = t.auth_mode == AuthMode::Oauth2AuthorizationCode;
        if let Some(issuer) = &o.issuer {
            self.url("oauth2.issuer".into(), issuer, Stage::Authorize, false);
        }
        if o.par && o.issuer.is_none() && o.par_url.is_none() {
            self.err("oauth2.par", "needs oauth2.issuer (the PAR endpoint from discovery) or oauth2.par_url");
        }
        if let Some(url) = &o.par_url {
            self.url("oauth2.par_url".into(), url, Stage::Authorize, false);
        }
        match (&o.authorization_url, code) {
            (Some(url), true) => {
                self.url("oauth2.authorization_url".into(), url, Stage::Authorize, false);
            }
            (None, true) if o.issuer.is_none() => {
                self.err("oauth2.authorization_url", "is required (or oauth2.issuer)")
            }
            (Some(_), false) => self.err("oauth2.authorization_url", "does not apply to the client credentials grant"),
            _ => {}
        }
        match &o.token_url {
            Some(url) => {
                self.url("oauth2.token_url".into(), url, Stage::Token, false);
            }
            None if o.issuer.is_none() => self.err("oauth2.token_url", "is required (or oauth2.issuer)"),
            None => {}
        }
        if let Some(url) = &o.refresh_url {
            self.url("oauth2.refresh_url".into(), url, Stage::Connected, false);
        }
        if !code && (o.pkce || o.par || o.par_url.is_some()) {
            self.err("oauth2.pkce", "PKCE and PAR apply to the authorization code grant only");
        }
        if o.client_auth == ClientAuth::None && !(code && o.pkce) {
            self.err("oauth2.client_auth", "\"none\" (a public client) needs the authorization code grant with PKCE");
        }
        if o.scope_separator.is_empty() {
            self.err("oauth2.scope_separator", "must not be empty");
        }
        if o.scope_param.is_empty() {
            self.err("oauth2.scope_param", "must not be empty");
        }
        for (i, s) in o.scopes.iter().enumerate() {
            if s.is_empty() || s.contains(o.scope_separator.as_str()) || s.chars().any(|c| c.is_control()) {
                self.err(
                    format!("oauth2.scopes[{i}]"),
                    "must be non-empty, without the separator or control characters",
                );
            }
        }
        let reserved_auth: Vec<&str> =
            FLOW_AUTHORIZATION_PARAMS.iter().copied().chain([o.scope_param.as_str()]).collect();
        for (table, params, stage, reserved) in [
            ("authorization_params", &o.authorization_params, Stage::Authorize, reserved_auth.as_slice()),
            ("token_params", &o.token_params, Stage::Token, FLOW_TOKEN_PARAMS),
            ("refresh_params", &o.refresh_params, Stage::Connected, FLOW_TOKEN_PARAMS),
        ] {
            if !code && table == "authorization_params" && !params.is_empty() {
                self.err("oauth2.authorization_params", "does not apply to the client credentials grant");
            }
            for (k, val) in params {
                let field = format!("oauth2.{table}.{k}");
                if reserved.contains(&k.as_str()) {
                    self.err(field, "is set by the flow itself");
                } else {
                    self.text(field, val, stage, false);
                }
            }
        }
        for (table, r) in [("response", Some(&o.response)), ("refresh_response", o.refresh_response.as_ref())] {
            let Some(r) = r else { continue };
            for (field, pointer) in [
                ("access_token", &r.access_token),
                ("refresh_token", &r.refresh_token),
                ("expires_in", &r.expires_in),
                ("scope", &r.scope),
                ("error", &r.error),
            ] {
                self.pointer(format!("oauth2.{table}.{field}"), pointer);
            }
        }
        if o.expiry.never && o.expiry.default_lifetime_secs.is_some() {
            self.err("oauth2.expiry.default_lifetime_secs", "contradicts oauth2.expiry.never");
        }
        if o.expiry.default_lifetime_secs == Some(0) {
            self.err("oauth2.expiry.default_lifetime_secs", "must be at least 1");
        }
        if let Some(rev) = &o.revocation {
            self.url("oauth2.revocation.url".into(), &rev.url, Stage::Connected, false);
            if rev.style == RevocationStyle::Rfc7009 && rev.token_in != TokenPlacement::Form {
                self.err("oauth2.revocation.token_in", "RFC 7009 sends the token in a form body");
            }
            if rev.token_field.is_empty() {
                self.err("oauth2.revocation.token_field", "must not be empty");
            }
        }
    }

    fn check_api(&mut self, t: &Template) {
        let c = &t.api.credential;
        let oauth = t.auth_mode.needs_app();
        let url_credential = c.placement == CredentialPlacement::Url;
        self.url("api.base_url".into(), &t.api.base_url, Stage::Api, url_credential);
        for (name, value) in &t.api.headers {
            if !is_header_name(name) {
                self.err(format!("api.headers.{name}"), "is not a header name");
            }
            self.text(format!("api.headers.{name}"), value, Stage::Api, true);
        }
        let needs_name = matches!(c.placement, CredentialPlacement::Header | CredentialPlacement::Query);
        match (&c.name, needs_name) {
            (None, true) => self.err("api.credential.name", "is required for a header or query credential"),
            (Some(_), false) => self.err("api.credential.name", "applies only to a header or query credential"),
            (Some(n), true) if c.placement == CredentialPlacement::Header && !is_header_name(n) => {
                self.err("api.credential.name", "is not a header name")
            }
            _ => {}
        }
        let takes_value = matches!(
            c.placement,
            CredentialPlacement::Bearer | CredentialPlacement::Header | CredentialPlacement::Query
        );
        match (&c.value, takes_value) {
            (Some(v), true) => self.text("api.credential.value".into(), v, Stage::Api, true),
            (None, true) if !oauth => self.err("api.credential.value", "is required: which field it carries"),
            (Some(_), false) => {
                self.err("api.credential.value", "applies only to bearer, header and query credentials")
            }
            _ => {}
        }
        let basic = c.placement == CredentialPlacement::Basic;
        for (field, value) in [("api.credential.username", &c.username), ("api.credential.password", &c.password)] {
            match (value, basic) {
                (Some(v), true) => self.text(field.into(), v, Stage::Api, true),
                (None, true) => self.err(field, "is required for a basic credential"),
                (Some(_), false) => self.err(field, "applies only to a basic credential"),
                (None, false) => {}
            }
        }
        if (c.placement == CredentialPlacement::Oauth1) != (t.auth_mode == AuthMode::Oauth1a) {
            self.err("api.credential.in", "oauth1 goes with auth_mode oauth1a, and only with it");
        }
        if takes_value && oauth && c.value.is_none() {
            self.used_by_api.insert("access_token".into());
        }
        // Tableau's fields are spent by its sign-in step, not by the calls.
        let signin = t.lookup == Some(Lookup::TableauSignin);
        for (i, f) in t.fields.iter().enumerate() {
            if !signin && !self.used_by_api.contains(&f.name) {
                self.err(format!("fields[{i}].name"), format!("{{{}}} is used by no api template", f.name));
            }
        }
        if let Some(id) = &t.identity {
            let url = if id.url.starts_with('/') {
                format!("{}{}", t.api.base_url.trim_end_matches('/'), id.url)
            } else {
                id.url.clone()
            };
            self.url("identity.url".into(), &url, Stage::Api, url_credential);
            self.pointer("identity.label".into(), &id.label);
            if let Some(p) = &id.account_id {
                self.pointer("identity.account_id".into(), p);
            }
        }
    }

    /// Checks the placeholders of `template` at `stage`, returning it filled with examples.
    fn text(&mut self, field: String, template: &str, stage: Stage, allow_secret: bool) {
        self.fill(&field, template, stage, allow_secret);
    }

    fn fill(&mut self, field: &str, template: &str, stage: Stage, allow_secret: bool) -> Option<String> {
        let names = match placeholders::names(template) {
            Ok(names) => names,
            Err(e) => {
                self.err(field, e);
                return None;
            }
        };
        let mut examples = placeholders::Values::default();
        let mut ok = true;
        for name in names {
            if stage == Stage::Api {
                self.used_by_api.insert(name.to_owned());
            }
            let problem = match self.available.get(name) {
                Some((_, known)) if *known > stage => Some(format!("{{{name}}} is not known yet at this stage")),
                Some(_) if self.secret.contains(name) && !allow_secret => {
                    Some(format!("{{{name}}} is a secret and may not appear here"))
                }
                Some((example, _)) => {
                    examples.insert_trusted(name, example.clone());
                    None
                }
                None if self.unchecked.contains(name) => {
                    Some(format!("{{{name}}} is kept without a pattern, so it may not be substituted"))
                }
                None => Some(format!("{{{name}}} is not declared")),
            };
            if let Some(message) = problem {
                self.err(field, message);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        examples.substitute(template).ok()
    }

    /// Checks a URL template: placeholders as [`Self::fill`], then the filled URL parses, is
    /// https (http only to a loopback host) and has no fragment.
    fn url(&mut self, field: String, template: &str, stage: Stage, allow_secret: bool) {
        let Some(filled) = self.fill(&field, template, stage, allow_secret) else { return };
        match url::Url::parse(&filled) {
            Err(e) => self.err(field, format!("{filled:?} (filled with the examples) is not a URL: {e}")),
            Ok(u) => {
                let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if !(u.scheme() == "https" || (u.scheme() == "http" && loopback)) {
                    self.err(field, format!("{filled:?} must be https (http only to a loopback host)"));
                } else if u.host_str().is_none_or(str::is_empty) {
                    self.err(field, format!("{filled:?} has no host"));
                } else if u.fragment().is_some() {
                    self.err(field, format!("{filled:?} must not have a fragment"));
                }
            }
        }
    }

    /// A JSON pointer (RFC 6901): `/`-separated, `~` only as `~0` or `~1`.
    fn pointer(&mut self, field: String, pointer: &str) {
        let escapes_ok = pointer.split('~').skip(1).all(|s| s.starts_with(['0', '1']));
        if !pointer.starts_with('/') || !escapes_ok {
            self.err(field, format!("{pointer:?} is not a JSON pointer (\"/a/b\")"));
        }
    }
}

/// An HTTP header name (RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
