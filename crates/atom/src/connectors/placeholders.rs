//! `{name}` placeholders in the templates' URLs and values, and the checked values that fill
//! them.
//!
//! A name is `[a-z][a-z0-9_]*`; a `{` or `}` that is not part of a placeholder is an error,
//! so a template never carries a brace by accident. [`Values`] only holds values that passed
//! their pattern (or that Atom produced itself, like the client id), which is what makes
//! substitution safe: nothing unchecked reaches a host name or a path.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

use super::template::{Param, Template};

/// The placeholder names in `template`, in order, or what is malformed.
pub fn names(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if rest.as_bytes()[i] == b'}' {
            return Err(format!("unmatched '}}' in {template:?}"));
        }
        let after = &rest[i + 1..];
        let end = after.find('}').ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..end];
        if !is_name(name) {
            return Err(format!("placeholder {{{name}}} in {template:?} is not a name ([a-z][a-z0-9_]*)"));
        }
        names.push(name);
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// Whether `s` is a placeholder (and parameter) name.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checked values for a connection's placeholders. Secret ones (an access token, a pasted
/// key) are held as [`SecretString`]s.
#[derive(Debug, Default, Clone)]
pub struct Values {
    plain: BTreeMap<String, String>,
    secret: BTreeMap<String, SecretString>,
}

/// A value that did not pass its pattern, or a required one that is missing. `field` is the
/// parameter's name, for the API's `errors[].field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValueError {
    pub field: String,
    pub message: String,
}

impl Values {
    /// The template's connection parameters from what the user gave: each checked by its
    /// pattern, defaults applied, unknown names refused.
    pub fn from_params(template: &Template, given: &BTreeMap<String, String>) -> Result<Self, Vec<ValueError>> {
        Self::from_param_list(&template.params, given)
    }

    /// As [`Values::from_params`], for a template's parameter declarations alone (what the
    /// flows keep of a template).
    pub fn from_param_list(params: &[Param], given: &BTreeMap<String, String>) -> Result<Self, Vec<ValueError>> {
        let mut errors = Vec::new();
        for name in given.keys() {
            if !params.iter().any(|p| &p.name == name) {
                errors.push(ValueError { field: name.clone(), message: "is not a parameter of this provider".into() });
            }
        }
        let mut values = Values::default();
        for param in params {
            match given.get(&param.name).or(param.default.as_ref()) {
                Some(v) if param.pattern.is_match(v) => {
                    values.plain.insert(param.name.clone(), v.clone());
                }
                Some(_) => errors.push(ValueError {
                    field: param.name.clone(),
                    message: format!("must match {}", param.pattern.as_str()),
                }),
                None => errors.push(ValueError { field: param.name.clone(), message: "is required".into() }),
            }
        }
        if errors.is_empty() { Ok(values) } else { Err(errors) }
    }

    /// Adds a value that Atom itself holds (the client id), without a pattern.
    pub fn insert_trusted(&mut self, name: &str, value: impl Into<String>) {
        self.plain.insert(name.to_owned(), value.into());
    }

    /// Adds a secret (an access token, a pasted key) that credential templates may use.
    pub fn insert_secret(&mut self, name: &str, value: SecretString) {
        self.secret.insert(name.to_owned(), value);
    }

    /// Adds a kept value after checking it against `pattern`, when it has one.
    pub fn insert_checked(
        &mut self,
        name: &str,
        value: &str,
        pattern: Option<&super::pattern::Pattern>,
    ) -> Result<(), ValueError> {
        if let Some(p) = pattern
            && !p.is_match(value)
        {
            return Err(ValueError { field: name.to_owned(), message: format!("must match {}", p.as_str()) });
        }
        self.plain.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// The plain (non-secret) values by name: a connection's parameters with their defaults
    /// applied, as stored with it.
    pub fn plain(&self) -> &BTreeMap<String, String> {
        &self.plain
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.plain.get(name).map(String::as_str).or_else(|| self.secret.get(name).map(|s| s.expose_secret()))
    }

    /// `template` with every placeholder replaced; a name without a value is an error naming it.
    pub fn substitute(&self, template: &str) -> Result<String, ValueError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| ValueError { field: template.to_owned(), message: "unclosed '{'".into() })?;
            let name = &after[..end];
            let value = self
                .get(name)
                .ok_or_else(|| ValueError { field: name.to_owned(), message: "has no value here".into() })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_and_malformed_braces_refused() {
        assert_eq!(names("https://{shop}.example.com/{a_1}").expect("valid"), ["shop", "a_1"]);
        assert!(names("https://x/{Shop}").is_err());
        assert!(names("https://x/{shop").is_err());
        assert!(names("https://x/shop}").is_err());
        assert!(names("https://x/{}").is_err());
    }

    #[test]
    fn substitution_needs_every_value() {
        let mut v = Values::default();
        v.insert_trusted("shop", "acme");
        assert_eq!(v.substitute("https://{shop}.myshopify.com").expect("known"), "https://acme.myshopify.com");
        let e = v.substitute("https://{tenant}.example.com").expect_err("unknown");
        assert_eq!(e.field, "tenant");
    }
}
