//! Password hashing (argon2id, OWASP parameters) and the password policy.
//!
//! Hashing runs on the blocking pool: at ~19 MiB and two passes it takes tens of
//! milliseconds of CPU, which would stall every other request on an async worker. Unknown
//! accounts are checked against a dummy hash, so that a login with an unknown email costs the
//! same as one with a wrong password. Every verification run, real or dummy, is counted in
//! `password_verifications_total`: the CPU that sign-ins cost, and the proof (in the tests)
//! that both kinds of failed sign-in do the same work.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::error::FieldError;

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 256;

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Hashes `password` into a PHC string, off the async runtime.
pub async fn hash(password: SecretString) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string().into()))
    })
    .await
    .map_err(|e| HashError(Box::new(e)))?
}

/// Checks `password` against `stored` (a PHC string), or against a dummy hash when there is
/// no account, so both cases take the same time. Always false without an account.
pub async fn verify(stored: Option<String>, password: SecretString) -> Result<bool, HashError> {
    tokio::task::spawn_blocking(move || {
        let (phc, real) = match &stored {
            Some(phc) => (phc.as_str(), true),
            None => (dummy_hash(), false),
        };
        let parsed = PasswordHash::new(phc).map_err(|e| HashError(e.to_string().into()))?;
        let matches = argon2().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok();
        metrics::counter!("password_verifications_total").increment(1);
        Ok(real && matches)
    })
    .await
    .map_err(|e| HashError(Box::new(e)))?
}

/// Computes the dummy hash now, at start-up, so that the first login with an unknown email
/// does not take longer than the others (and so tell that the email is unknown).
pub async fn warm_up() {
    let _ = tokio::task::spawn_blocking(dummy_hash).await;
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"not a real password, only for timing", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The password policy (OWASP ASVS 2.1): 12 to 256 characters, not containing the email or
/// its local part, not a single repeated character. Returns every failing rule.
pub fn check_policy(field: &str, password: &str, email: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let length = password.chars().count();
    if length < MIN_LENGTH {
        errors.push(FieldError::new(field, format!("must be at least {MIN_LENGTH} characters")));
    }
    if length > MAX_LENGTH {
        errors.push(FieldError::new(field, format!("must be at most {MAX_LENGTH} characters")));
    }
    if password.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must not contain control characters"));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if !email.is_empty() && (lower.contains(&email.to_lowercase()) || (local.len() >= 3 && lower.contains(&local))) {
        errors.push(FieldError::new(field, "must not contain the email address"));
    }
    if length >= 1 && password.chars().all(|c| password.starts_with(c)) {
        errors.push(FieldError::new(field, "must not be one repeated character"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_fail() {
        let phc = hash(SecretString::from("correct horse battery")).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(Some(phc.clone()), SecretString::from("correct horse battery")).await.expect("verify"));
        assert!(!verify(Some(phc), SecretString::from("wrong horse battery")).await.expect("verify"));
        assert!(!verify(None, SecretString::from("correct horse battery")).await.expect("verify"));
    }

    /// The dummy hash costs what a real one does: the same algorithm, version and parameters
    /// (memory, passes, lanes), so an unknown email's verification is no quicker.
    #[tokio::test]
    async fn the_dummy_hash_has_the_parameters_of_a_real_one() {
        let real = hash(SecretString::from("correct horse battery")).await.expect("hash");
        let (real, dummy) = (PasswordHash::new(&real).expect("real"), PasswordHash::new(dummy_hash()).expect("dummy"));
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
    }

    #[test]
    fn policy_names_each_failing_rule() {
        assert!(check_policy("password", "a long enough passphrase", "ann@example.com").is_empty());
        assert_eq!(check_policy("password", "short", "ann@example.com").len(), 1);
        assert!(!check_policy("password", "my name is annabel!", "annabel@example.com").is_empty());
        assert!(!check_policy("password", "aaaaaaaaaaaaaaa", "x@example.com").is_empty());
        assert!(!check_policy("password", "tab\tinside password", "x@example.com").is_empty());
    }
}
