//! The catalog: every provider template, the built-in ones (`providers/*.toml` at the
//! repository root, compiled into the binary) overlaid by an operator's directory
//! (`connectors.providers_dir`: a file there replaces the built-in one of the same id, or
//! adds a provider).
//!
//! *Invariant*: a [`Catalog`] that exists holds only templates that passed [`validate`], so
//! the flows never re-check a template: every placeholder is declared and available where it
//! is used, every URL parses once filled with the examples, every pattern is anchored and
//! matches its example. Each failure is a [`CatalogError`] naming the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::template::Template;
use super::validate::validate;

/// The built-in templates, `(file name, contents)`, listed by `build.rs`.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/providers.rs"));

/// One problem in one template file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct CatalogError {
    /// The file's name (built-in) or path (override directory).
    pub file: String,
    /// The TOML path of the field (`oauth2.token_url`, `params[0].pattern`); `.` for the
    /// file as a whole.
    pub field: String,
    pub message: String,
}

/// Where a template came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    Override(PathBuf),
}

/// The validated templates by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    templates: BTreeMap<String, (Arc<Template>, Source)>,
}

impl Catalog {
    /// The built-in templates only.
    pub fn builtin() -> Result<Self, Vec<CatalogError>> {
        Self::load(None)
    }

    /// The built-in templates overlaid by `dir`'s `*.toml` files. Every problem of every file
    /// is reported, not only the first.
    pub fn load(dir: Option<&Path>) -> Result<Self, Vec<CatalogError>> {
        let mut catalog = Catalog::default();
        let mut errors = Vec::new();
        for (file, text) in EMBEDDED {
            match parse(file, text) {
                Ok(t) => {
                    catalog.templates.insert(t.id.clone(), (Arc::new(t), Source::BuiltIn));
                }
                Err(e) => errors.extend(e),
            }
        }
        if let Some(dir) = dir {
            match override_files(dir) {
                Ok(files) => {
                    for path in files {
                        let file = path.display().to_string();
                        let text = match std::fs::read_to_string(&path) {
                            Ok(text) => text,
                            Err(e) => {
                                errors.push(CatalogError {
                                    file,
                                    field: ".".into(),
                                    message: format!("cannot read: {e}"),
                                });
                                continue;
                            }
                        };
                        match parse(&file, &text) {
                            Ok(t) => {
                                catalog.templates.insert(t.id.clone(), (Arc::new(t), Source::Override(path)));
                            }
                            Err(e) => errors.extend(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(catalog) } else { Err(errors) }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Template>> {
        self.templates.get(id).map(|(t, _)| t)
    }

    pub fn source(&self, id: &str) -> Option<&Source> {
        self.templates.get(id).map(|(_, s)| s)
    }

    /// Every template, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.templates.values().map(|(t, _)| t)
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

/// The built-in files, `(file name, contents)`: for tests that go through each one.
pub fn embedded() -> &'static [(&'static str, &'static str)] {
    EMBEDDED
}

/// The `*.toml` files of an override directory, sorted; other files are ignored.
fn override_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let unreadable = |e: std::io::Error| CatalogError {
        file: dir.display().to_string(),
        field: "connectors.providers_dir".into(),
        message: format!("cannot read the directory: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses and validates one template; `file` names it in errors and its stem must be the id.
pub fn parse(file: &str, text: &str) -> Result<Template, Vec<CatalogError>> {
    let error = |field: String, message: String| vec![CatalogError { file: file.to_owned(), field, message }];
    let template: Template = serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let at = inner.span().map(|s| format!(" (line {})", 1 + text[..s.start.min(text.len())].matches('\n').count()));
        error(field, format!("{}{}", inner.message().trim(), at.unwrap_or_default()))
    })?;
    let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let mut errors = validate(&template);
    if template.id != stem {
        errors.push(("id".into(), format!("{:?} must equal the file name's stem {stem:?}", template.id)));
    }
    if errors.is_empty() {
        Ok(template)
    } else {
        Err(errors.into_iter().map(|(field, message)| CatalogError { file: file.to_owned(), field, message }).collect())
    }
}
