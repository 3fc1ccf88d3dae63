//! Connection errors: every way connecting or refreshing can fail, each with a stable code
//! that clients match on (in the problem's `code`, and in the `error` of a callback's
//! redirect), and a description that never holds a secret.
//!
//! Provider text (an OAuth `error_description`, an HTML page) passes through [`scrub`] before
//! it is stored, logged or shown: anything that looks like a credential is cut out.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Problem};

/// What went wrong, by stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The user refused at the provider's consent screen.
    AccessDenied,
    /// The provider refused the code or the refresh token (expired, revoked, replayed).
    InvalidGrant,
    /// The provider answered with something that is not the JSON it should send (an HTML page).
    InvalidResponse,
    /// A field the flow needs is missing from the provider's answer.
    MissingField,
    /// The provider did not answer in time.
    Timeout,
    /// The provider failed (5xx) or could not be reached.
    ProviderUnavailable,
    /// The provider asked us to slow down (429).
    RateLimited,
    /// Another OAuth error from the provider.
    ProviderError,
    /// The callback's state is unknown: never issued, or already used.
    StateInvalid,
    /// The callback's state was issued more than its lifetime ago.
    StateExpired,
    /// The state belongs to another user than the one completing the flow.
    StateWrongUser,
    /// The callback's `iss` is not the provider's issuer (RFC 9207).
    IssuerMismatch,
    /// The callback misses its code or state.
    InvalidCallback,
    /// No such provider in the catalog.
    UnknownProvider,
    /// The instance has no OAuth app for this provider, or no public URL to be called back at.
    NotConfigured,
    /// The provider is not connected this way (an OAuth flow for an API-key service).
    WrongAuthKind,
    /// The connection needs the user to authorize again.
    NeedsReauth,
    /// A submitted credential or parameter is not valid for the template.
    InvalidCredentials,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidResponse => "invalid_response",
            Self::MissingField => "missing_field",
            Self::Timeout => "timeout",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::RateLimited => "rate_limited",
            Self::ProviderError => "provider_error",
            Self::StateInvalid => "state_invalid",
            Self::StateExpired => "state_expired",
            Self::StateWrongUser => "state_wrong_user",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::InvalidCallback => "invalid_callback",
            Self::UnknownProvider => "unknown_provider",
            Self::NotConfigured => "not_configured",
            Self::WrongAuthKind => "wrong_auth_kind",
            Self::NeedsReauth => "needs_reauth",
            Self::InvalidCredentials => "invalid_credentials",
        }
    }

    /// Failures that may pass by themselves, and so are retried (point 10).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Timeout | Self::ProviderUnavailable | Self::RateLimited)
    }

    fn status(self) -> StatusCode {
        match self {
            Self::UnknownProvider => StatusCode::NOT_FOUND,
            Self::NotConfigured | Self::WrongAuthKind | Self::NeedsReauth => StatusCode::CONFLICT,
            Self::InvalidCredentials | Self::InvalidCallback => StatusCode::UNPROCESSABLE_ENTITY,
            Self::StateInvalid | Self::StateExpired | Self::StateWrongUser | Self::IssuerMismatch => {
                StatusCode::BAD_REQUEST
            }
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::InvalidGrant
            | Self::InvalidResponse
            | Self::MissingField
            | Self::ProviderUnavailable
            | Self::ProviderError => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A connection error: a stable code and a scrubbed description.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct ConnectError {
    pub code: ErrorCode,
    pub description: String,
    /// Seconds the provider asked us to wait (429 `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl ConnectError {
    /// `description` is scrubbed here, so no caller can forget to.
    pub fn new(code: ErrorCode, description: impl AsRef<str>) -> Self {
        Self { code, description: scrub(description.as_ref()), retry_after_secs: None }
    }

    /// `code: description`, as stored in a connection's `last_error`.
    pub fn stored(&self) -> String {
        format!("{}: {}", self.code.as_str(), self.description)
    }
}

/// Why a connector operation failed: the connection's own error, or ours.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<sqlx::Error> for ConnectorError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(ApiError::from(e))
    }
}

impl From<crate::crypto::CryptoError> for ConnectorError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        Self::Api(ApiError::internal(e))
    }
}

impl ConnectorError {
    pub fn connect(code: ErrorCode, description: impl AsRef<str>) -> Self {
        Self::Connect(ConnectError::new(code, description))
    }
}

impl IntoResponse for ConnectError {
    /// A problem of type `urn:atom:problem:connection-<code>`, with `code` as an extension.
    fn into_response(self) -> Response {
        let slug = format!("connection-{}", self.code.as_str().replace('_', "-"));
        let mut problem = Problem::new(self.code.status(), &slug, self.description.clone());
        problem.extensions.insert("code".to_owned(), serde_json::Value::from(self.code.as_str()));
        let mut response = problem.into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl IntoResponse for ConnectorError {
    fn into_response(self) -> Response {
        match self {
            Self::Connect(e) => e.into_response(),
            Self::Api(e) => e.into_response(),
        }
    }
}

/// Names whose value is a credential wherever they appear as `name=value` or `"name": "value"`.
const SECRET_NAMES: &[&str] =
    &["token", "secret", "password", "passwd", "code", "key", "assertion", "authorization", "bearer", "verifier"];

/// Provider text made safe to store and show: control characters dropped, values of
/// credential-like names and long opaque strings (which a token is) replaced by `[redacted]`,
/// cut to 300 characters.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(300));
    let mut redact_next = false;
    for word in text.split(|c: char| c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if redact_next {
            redact_next = false;
            out.push_str("[redacted]");
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if let Some((name, _)) = word.split_once(['=', ':']) {
            let name_lower = name.to_ascii_lowercase();
            if SECRET_NAMES.iter().any(|s| name_lower.contains(s)) {
                out.push_str(name.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'));
                out.push_str("=[redacted]");
                if word.ends_with(['=', ':']) {
                    redact_next = true;
                }
                continue;
            }
        }
        if lower == "bearer" || lower == "basic" {
            out.push_str(word);
            redact_next = true;
            continue;
        }
        if looks_opaque(word) {
            out.push_str("[redacted]");
        } else {
            out.extend(word.chars().filter(|c| !c.is_control()));
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect();
        out.push('…');
    }
    out
}

/// A run of 16+ token characters with letters and digits both: the shape of a key or token,
/// not of a word.
fn looks_opaque(word: &str) -> bool {
    let core = word.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '.' | ';' | '(' | ')' | '[' | ']'));
    core.len() >= 16
        && core.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '='))
        && core.chars().any(|c| c.is_ascii_digit())
        && core.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_credential_shaped_text() {
        let text = "grant request is invalid; refresh_token=leaked-secret-value access_token=abc.def.ghi \
                    Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0 code=abc and sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let clean = scrub(text);
        for secret in ["leaked-secret-value", "abc.def.ghi", "eyJhbGci", "sk_live_4eC39", "code=abc"] {
            assert!(!clean.contains(secret), "{secret} left in {clean}");
        }
        assert!(clean.starts_with("grant request is invalid;"), "{clean}");
    }

    #[test]
    fn scrub_keeps_plain_words_and_cuts_long_text() {
        assert_eq!(scrub("The user denied\naccess"), "The user denied access");
        assert!(scrub(&"word ".repeat(200)).chars().count() <= 301);
    }
}
