//! The API's one error type and its wire form, RFC 9457 problem details.
//!
//! Handlers return [`ApiError`]. Its `IntoResponse` puts a [`Problem`] into the response
//! extensions; the outer middleware ([`crate::http::middleware::observe`]) then stamps the request id and
//! writes the `application/problem+json` body, and also rewrites every other error response
//! (axum's own 404/405/413/415 and extractor rejections, timeouts) into the same shape.
//!
//! Invariant: a 5xx body never carries the cause. Internal errors keep their cause chain for
//! the log line written here, once, and reach the client as an opaque message.

use std::error::Error as StdError;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One failing input field in a 422 response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, stable for clients to match on.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The `X-Request-Id` of the request, to quote when reporting a problem.
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension members, e.g. the failing checks of `GET /ready`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:atom:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    /// The problem for an error response that carries no [`Problem`] of its own.
    pub fn for_status(status: StatusCode, body_text: &str) -> Self {
        let slug = match status {
            StatusCode::BAD_REQUEST => "bad-request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::REQUEST_TIMEOUT => "request-timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::URI_TOO_LONG => "uri-too-long",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            StatusCode::TOO_MANY_REQUESTS => "too-many-requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            s if s.is_server_error() => "internal",
            _ => "client-error",
        };
        let body_text = body_text.trim();
        let detail = match status {
            StatusCode::NOT_FOUND => "No resource at this path.".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "This path does not accept this method.".to_owned(),
            StatusCode::REQUEST_TIMEOUT => "The request body did not arrive in time.".to_owned(),
            StatusCode::GATEWAY_TIMEOUT => "The request took longer than the server allows.".to_owned(),
            StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the server accepts.".to_owned(),
            // Client errors from axum's extractors explain themselves and reveal nothing of ours.
            s if s.is_client_error() && !body_text.is_empty() => body_text.chars().take(500).collect(),
            s => s.canonical_reason().unwrap_or("Error").to_owned(),
        };
        Self::new(status, slug, detail)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Serializes the problem as the response body.
    pub fn into_body_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl IntoResponse for Problem {
    /// Defers serialization to the finalizing middleware, which knows the request id.
    fn into_response(self) -> Response {
        let mut response = self.status_code().into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed in a way no field error describes.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials. `error` is the RFC 6750 code (`invalid_token`) or empty
    /// when none were sent; `description` is safe to show.
    #[error("unauthorized: {description}")]
    Unauthorized { error: &'static str, description: &'static str },
    /// 429: too many attempts; try again after `retry_after_secs`.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64, detail: String },
    /// 403: authenticated (or local) but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 413: the body is larger than `http.body_limit_bytes`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: the body is not in a media type the route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 404: no such resource, or not one the caller may see.
    #[error("not found")]
    NotFound,
    /// 409: the change conflicts with stored state (a unique value taken).
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    /// 422: one or more fields are invalid; all of them are listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 503: a dependency (database, Redis) is unreachable or saturated.
    #[error("{what} is unavailable")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// 500: a bug or an unexpected failure; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    pub fn internal(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }

    fn to_problem(&self) -> Problem {
        match self {
            Self::BadRequest(detail) => Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail.clone()),
            Self::Forbidden(detail) => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail.clone()),
            Self::Unauthorized { description, .. } => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", (*description).to_owned())
            }
            Self::TooManyRequests { detail, .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", detail.clone())
            }
            Self::NotFound => Problem::for_status(StatusCode::NOT_FOUND, ""),
            Self::PayloadTooLarge => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE, ""),
            Self::UnsupportedMediaType(detail) => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", detail.clone())
            }
            Self::Conflict { field, message } => {
                let mut p = Problem::new(StatusCode::CONFLICT, "conflict", format!("{field}: {message}"));
                p.errors.push(FieldError::new(field.clone(), message.clone()));
                p
            }
            Self::Validation(errors) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation",
                    format!("{} field(s) failed validation", errors.len()),
                );
                p.errors = errors.clone();
                p
            }
            Self::Unavailable { what, .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("The {what} is unavailable; try again shortly."),
            ),
            Self::Internal(_) => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(_) => tracing::error!(error = %ErrorChain(&self), "internal error"),
            Self::Unavailable { .. } => tracing::warn!(error = %ErrorChain(&self), "dependency unavailable"),
            _ => {}
        }
        let mut response = self.to_problem().into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::TooManyRequests { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unauthorized { error, description } => {
                // RFC 6750 §3: no error attributes when the request carried no credentials.
                let challenge = if error.is_empty() {
                    r#"Bearer realm="atom""#.to_owned()
                } else {
                    format!(r#"Bearer realm="atom", error="{error}", error_description="{description}""#)
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            e if database_unreachable(e) => Self::Unavailable { what: "database", source: Box::new(err) },
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict {
                field: db.constraint().unwrap_or("value").to_owned(),
                message: "is already taken".to_owned(),
            },
            _ => Self::Internal(Box::new(err)),
        }
    }
}

/// Whether `err` says the database cannot be reached or is going away, rather than that a
/// query is wrong: the connection failed or was cut (I/O, TLS, protocol, SQLSTATE class 08),
/// the server is shutting down or starting up (57P01 admin shutdown, as a fast stop or a
/// failover does; 57P02 crash shutdown; 57P03 cannot connect now), or the pool could not hand
/// out a connection in time or is closed. A client can retry these (503); anything else is a
/// bug or a data problem (500).
pub fn database_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLite's codes are numbers, so these SQLSTATEs only ever come from PostgreSQL.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// Displays an error with its whole `source()` chain: `outer: middle: root`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
