//! Our request extractors: [`Json`] and [`Query`] turn every malformed input into a precise
//! problem response (400 for syntax, 415 for a wrong content type, 422 with
//! `errors: [{field, message}]` for values), instead of axum's plain-text rejections.
//!
//! Every JSON body is checked before it reaches a handler: nesting at most [`MAX_DEPTH`]
//! levels, no NUL or other control characters in any string (tab, newline and carriage
//! return excepted), no unknown fields (request types use `deny_unknown_fields`), then the
//! type's own [`Validate`] rules, all failing fields reported at once.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// The deepest nesting a request body may have.
pub const MAX_DEPTH: usize = 32;

/// Field rules a request type checks after it has been deserialized.
pub trait Validate {
    /// Every failing field; empty when the value is valid.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Whether `text` holds a character that does not print: a control (Unicode category Cc), a
/// format character (Cf: the bidirectional overrides, embeddings and isolates, zero-width
/// space, the byte order mark) or a line or paragraph separator. Names and emails are shown
/// to people; such characters make them read as something they are not. The zero-width
/// joiner and non-joiner (also Cf) are allowed: emoji sequences and several scripts (Persian,
/// the Indic ones) need them to be written at all.
pub fn has_unprintable(text: &str) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    text.chars().any(|c| {
        !matches!(c, '\u{200C}' | '\u{200D}')
            && matches!(
                c.general_category(),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
    })
}

/// A JSON request body, checked and validated.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")));
        if !json_type {
            return Err(ApiError::UnsupportedMediaType("Expected Content-Type: application/json.".to_owned()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("The request body could not be read.".to_owned())
            }
        })?;
        parse(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Parses and validates a JSON body (the whole of [`Json`]'s work, for reuse and tests).
pub fn parse<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Eof => ApiError::BadRequest("The JSON body ends early.".to_owned()),
        _ => ApiError::BadRequest(format!("The body is not valid JSON: {e}.")),
    })?;
    if depth(&value) > MAX_DEPTH {
        return Err(ApiError::BadRequest(format!("The JSON body is nested deeper than {MAX_DEPTH} levels.")));
    }
    let mut errors = Vec::new();
    control_characters(&value, &mut String::new(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::Validation(vec![FieldError::new(field, e.into_inner().to_string())])
    })?;
    let errors = parsed.validate();
    if errors.is_empty() { Ok(parsed) } else { Err(ApiError::Validation(errors)) }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn control_characters(value: &Value, path: &mut String, errors: &mut Vec<FieldError>) {
    let bad = |s: &str| s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    match value {
        Value::String(s) if bad(s) => {
            let field = if path.is_empty() { "body".to_owned() } else { path.clone() };
            errors.push(FieldError::new(field, "must not contain NUL or control characters"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                control_characters(item, path, errors);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if bad(key) {
                    errors.push(FieldError::new(path.clone(), "field names must not contain control characters"));
                }
                control_characters(item, path, errors);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Query parameters, deserialized with the failing parameter named in a 422.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        let parsed: T = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "query".to_owned() } else { path };
            ApiError::Validation(vec![FieldError::new(field, e.into_inner().to_string())])
        })?;
        let errors = parsed.validate();
        if errors.is_empty() { Ok(Query(parsed)) } else { Err(ApiError::Validation(errors)) }
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
        count: u8,
    }

    impl Validate for Sample {
        fn validate(&self) -> Vec<FieldError> {
            let mut errors = Vec::new();
            if self.name.is_empty() {
                errors.push(FieldError::new("name", "must not be empty"));
            }
            if self.count == 0 {
                errors.push(FieldError::new("count", "must be at least 1"));
            }
            errors
        }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => vec![format!("not a validation error: {other:?}")],
        }
    }

    #[test]
    fn valid_bodies_pass() {
        let s: Sample = parse(br#"{"name":"a","tags":["x\ty"],"count":3}"#).expect("valid");
        assert_eq!((s.name.as_str(), s.count, s.tags.len()), ("a", 3, 1));
    }

    #[test]
    fn every_failing_rule_is_reported_at_once() {
        let err = parse::<Sample>(br#"{"name":"","count":0}"#).expect_err("invalid");
        assert_eq!(fields(err), ["name", "count"]);
    }

    #[test]
    fn unknown_fields_wrong_types_and_control_characters_name_the_field() {
        assert_eq!(fields(parse::<Sample>(br#"{"name":"a","count":1,"admin":true}"#).expect_err("x")), ["admin"]);
        assert_eq!(fields(parse::<Sample>(br#"{"name":"a","count":300}"#).expect_err("x")), ["count"]);
        assert_eq!(fields(parse::<Sample>(br#"{"name":"a\u0000b","count":1}"#).expect_err("x")), ["name"]);
        assert_eq!(
            fields(parse::<Sample>(br#"{"name":"a","tags":["ok","\u001b[31m"],"count":1}"#).expect_err("x")),
            ["tags[1]"]
        );
    }

    #[test]
    fn unprintable_characters_are_found() {
        for bad in
            ["a\u{202E}b", "\u{FEFF}", "x\u{200B}", "\u{2066}", "\u{061C}", "\u{200E}", "a\nb", "\u{7}", "\u{2029}"]
        {
            assert!(has_unprintable(bad), "{bad:?}");
        }
        for good in ["", "plain", "café ☕ 日本語", "a b", "emoji 👩\u{200D}💻", "می\u{200C}خواهم"] {
            assert!(!has_unprintable(good), "{good:?}");
        }
    }

    #[test]
    fn syntax_depth_and_encoding_errors_are_bad_requests() {
        for body in [&b"{"[..], b"{\"name\": \"\xff\"}", b"[1,2", b""] {
            assert!(matches!(parse::<Sample>(body), Err(ApiError::BadRequest(_))), "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(parse::<Sample>(deep.as_bytes()), Err(ApiError::BadRequest(d)) if d.contains("nested")));
    }
}
