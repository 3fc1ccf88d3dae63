//! The proxy's own errors, as opposed to the provider's answers (which pass through as they
//! are): problem+json with a stable `code` and a `fault` saying whose it was, so that the
//! agent knows whether to fix its call (`caller`), ask the user to authorize again
//! (`connection`), wait and retry (`provider`), or tell an operator (`server`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ConnectorError, ErrorCode};
use crate::error::{ApiError, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyCode {
    /// The user must authorize the connection again (409).
    ConnectionNeedsReauth,
    /// The connection's stored parameters no longer pass the template's patterns (409).
    ConnectionInvalid,
    /// The connection's provider has no template in this server's catalog, or the proxy
    /// lacks what it needs to sign (the instance's OAuth 1.0a app) (409).
    NotConfigured,
    /// The path would leave the provider's base URL (400).
    InvalidPath,
    /// The request body is larger than `connectors.proxy_max_body_bytes`, or a form body to
    /// be signed for an OAuth 1.0a provider than `connectors.proxy_signed_form_max_bytes` (413).
    BodyTooLarge,
    /// The caller sent too many calls for this connection or key (429).
    RateLimited,
    /// The provider's host resolves only to addresses the proxy may not reach (502).
    DestinationRefused,
    /// The provider could not be reached, or the connection broke (502).
    ProviderUnreachable,
    /// The provider sent no response head within `connectors.proxy_timeout_secs` (504).
    ProviderTimeout,
}

impl ProxyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionNeedsReauth => "connection_needs_reauth",
            Self::ConnectionInvalid => "connection_invalid",
            Self::NotConfigured => "not_configured",
            Self::InvalidPath => "invalid_path",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::DestinationRefused => "destination_refused",
            Self::ProviderUnreachable => "provider_unreachable",
            Self::ProviderTimeout => "provider_timeout",
        }
    }

    /// Whose fault: `caller`, `connection`, `provider` or `server`.
    pub fn fault(self) -> &'static str {
        match self {
            Self::InvalidPath | Self::BodyTooLarge | Self::RateLimited => "caller",
            Self::ConnectionNeedsReauth | Self::ConnectionInvalid => "connection",
            Self::ProviderUnreachable | Self::ProviderTimeout => "provider",
            Self::NotConfigured | Self::DestinationRefused => "server",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::ConnectionNeedsReauth | Self::ConnectionInvalid | Self::NotConfigured => StatusCode::CONFLICT,
            Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::DestinationRefused | Self::ProviderUnreachable => StatusCode::BAD_GATEWAY,
            Self::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// A proxy failure: one of ours, or an API error (404, 403, 500) before the call.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{}: {detail}", code.as_str())]
    Proxy { code: ProxyCode, detail: String, retry_after_secs: Option<u64> },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ProxyError {
    pub fn new(code: ProxyCode, detail: impl Into<String>) -> Self {
        Self::Proxy { code, detail: detail.into(), retry_after_secs: None }
    }

    /// The code for the metrics' `status` label when no provider status exists.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Proxy { code, .. } => code.as_str(),
            Self::Api(_) => "refused",
        }
    }
}

impl From<sqlx::Error> for ProxyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(ApiError::from(e))
    }
}

impl From<crate::crypto::CryptoError> for ProxyError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        Self::Api(ApiError::internal(e))
    }
}

impl From<ConnectorError> for ProxyError {
    /// A refresh's failure, as the proxy's caller sees it.
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Api(e) => Self::Api(e),
            ConnectorError::Connect(e) => {
                let code = match e.code {
                    ErrorCode::NeedsReauth | ErrorCode::InvalidGrant => ProxyCode::ConnectionNeedsReauth,
                    ErrorCode::Timeout => ProxyCode::ProviderTimeout,
                    ErrorCode::UnknownProvider | ErrorCode::NotConfigured | ErrorCode::WrongAuthKind => {
                        ProxyCode::NotConfigured
                    }
                    _ => ProxyCode::ProviderUnreachable,
                };
                Self::Proxy { code, detail: e.description, retry_after_secs: e.retry_after_secs }
            }
        }
    }
}

impl IntoResponse for ProxyError {
    /// A problem of type `urn:atom:problem:proxy-<code>`, with `code` and `fault`.
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Proxy { code, detail, retry_after_secs } => {
                let slug = format!("proxy-{}", code.as_str().replace('_', "-"));
                let mut problem = Problem::new(code.status(), &slug, detail);
                problem.extensions.insert("code".to_owned(), code.as_str().into());
                problem.extensions.insert("fault".to_owned(), code.fault().into());
                let mut response = problem.into_response();
                if let Some(secs) = retry_after_secs {
                    response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
                }
                response
            }
        }
    }
}
