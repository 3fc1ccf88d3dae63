//! Identity: who the caller is and what they may do.
//!
//! [`tokens`] signs and verifies the access tokens (JWTs) that authenticate every request and
//! manages the Ed25519 keys behind them. It holds no database or HTTP code: accounts, key
//! storage and the middleware that turns a [`tokens::TokenError`] into a 401 build on it.

pub mod tokens;

pub use tokens::{AccessClaims, AccessTokens, SigningKey, TokenConfig, TokenError, TokenKeys};
