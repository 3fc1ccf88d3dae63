//! Ed25519 keys for access tokens and the keyset that signs and verifies them.
//!
//! A [`SigningKey`] is the private half: it signs, it can be exported as its 32-byte seed so
//! the caller can store it encrypted, and it is zeroized on drop and never shown by `Debug`.
//! A [`PublicKey`] is what verification needs. [`TokenKeys`] holds one current signing key and
//! the public halves of the keys it replaced, so tokens signed before a rotation stay valid
//! until the previous key is retired.
//!
//! Invariants: every key here is an Ed25519 key (`kty` OKP, `crv` Ed25519, `alg` EdDSA);
//! there is no other key type to confuse it with. A key's `kid` is its RFC 7638 JWK
//! thumbprint (SHA-256, base64url), so it is derived from the public key alone: it needs no
//! storage, it is the same on every node and after every restart, and no two different keys
//! share one. Within a [`TokenKeys`] the kids are unique and the current key is never also a
//! previous key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of an Ed25519 private key seed and of a public key, in bytes.
pub const ED25519_KEY_LEN: usize = 32;

/// Why key material could not be imported or prepared.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not 32 long.
    #[error("an Ed25519 key is {ED25519_KEY_LEN} bytes, got {0}")]
    Length(usize),
    /// The bytes are not a valid Ed25519 public key, or one of small order, which would let
    /// one signature verify for many messages.
    #[error("the bytes are not a usable Ed25519 public key")]
    InvalidPublicKey(#[source] Option<ed25519_dalek::SignatureError>),
    /// The operating system's random number generator failed.
    #[error("the operating system could not supply randomness for a new key")]
    Random(#[source] rand_core::Error),
    /// The private key could not be encoded as PKCS#8 for the JWT library.
    #[error("could not encode the Ed25519 private key as PKCS#8")]
    Pkcs8(#[source] ed25519_dalek::pkcs8::Error),
}

/// Why a key could not be retired from a [`TokenKeys`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetireError {
    /// The current key signs new tokens; rotate to a new key before retiring it.
    #[error("key {0} is the current signing key; rotate before retiring it")]
    Current(String),
    /// No previous key has this kid.
    #[error("no previous key has kid {0}")]
    Unknown(String),
}

/// The public half of an access-token key: verifies signatures, appears in the JWKS.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    bytes: [u8; ED25519_KEY_LEN],
    decoding: DecodingKey,
}

impl PublicKey {
    /// Imports a raw 32-byte Ed25519 public key (the JWK `x` member, decoded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; ED25519_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Length(bytes.len()))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::InvalidPublicKey(Some(e)))?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey(None));
        }
        Ok(Self::from_verified(key))
    }

    fn from_verified(key: ed25519_dalek::VerifyingKey) -> Self {
        let bytes = key.to_bytes();
        // Despite its name, `from_ed_der` takes the raw 32-byte key: that is what the
        // rust_crypto verifier reads (`from_ed_components` is the same after base64 decoding).
        Self { kid: thumbprint(&bytes), bytes, decoding: DecodingKey::from_ed_der(&bytes) }
    }

    /// The RFC 7638 thumbprint that names this key in token headers and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key, for storage next to the encrypted private key.
    pub fn to_bytes(&self) -> [u8; ED25519_KEY_LEN] {
        self.bytes
    }

    /// The public JWK: `{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"}`.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(&self.bytes),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// An Ed25519 private key that signs access tokens (JWS `alg` EdDSA).
///
/// The seed is zeroized when the key is dropped (by `ed25519-dalek` and `jsonwebtoken`, which
/// each hold a copy) and `Debug` shows only the kid.
#[derive(Clone)]
pub struct SigningKey {
    secret: ed25519_dalek::SigningKey,
    /// The same key as PKCS#8 DER, the form `jsonwebtoken` signs with; built once here so that
    /// issuing a token does not re-encode it.
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    /// Generates a new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        // `try_fill_bytes` rather than `ed25519_dalek::SigningKey::generate`, whose `OsRng`
        // panics when the OS cannot supply randomness; here that is an error to report.
        let mut seed = Zeroizing::new([0u8; ED25519_KEY_LEN]);
        OsRng.try_fill_bytes(seed.as_mut()).map_err(KeyError::Random)?;
        Self::from_bytes(seed.as_slice())
    }

    /// Imports a key from its 32-byte seed, as returned by [`SigningKey::to_bytes`].
    pub fn from_bytes(seed: &[u8]) -> Result<Self, KeyError> {
        let seed: Zeroizing<[u8; ED25519_KEY_LEN]> =
            Zeroizing::new(seed.try_into().map_err(|_| KeyError::Length(seed.len()))?);
        Self::from_secret(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    fn from_secret(secret: ed25519_dalek::SigningKey) -> Result<Self, KeyError> {
        // The DER document zeroizes itself on drop; `EncodingKey` keeps (and zeroizes) a copy.
        let der = secret.to_pkcs8_der().map_err(KeyError::Pkcs8)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = PublicKey::from_verified(secret.verifying_key());
        Ok(Self { secret, encoding, public })
    }

    /// The 32-byte seed, to be stored encrypted. Zeroized when the returned value drops.
    pub fn to_bytes(&self) -> Zeroizing<[u8; ED25519_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public JWK of this key; see [`PublicKey::jwk`].
    pub fn public_jwk(&self) -> Value {
        self.public.jwk()
    }

    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid()).field("secret", &"[redacted]").finish()
    }
}

/// The access-token keyset: one current key that signs, and previous keys that still verify.
///
/// Rotation keeps the replaced key for verification so tokens it signed stay valid; retire it
/// once they have all expired (after the longest access-token lifetime plus the leeway).
#[derive(Debug, Clone)]
pub struct TokenKeys {
    current: SigningKey,
    /// Public halves only: an old key never signs again, so its private half is not kept.
    previous: Vec<PublicKey>,
}

impl TokenKeys {
    pub fn new(current: SigningKey) -> Self {
        Self { current, previous: Vec::new() }
    }

    /// Adds keys that verify but no longer sign, e.g. reloaded from storage at start-up.
    /// Duplicates and the current key itself are skipped.
    pub fn with_previous(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        for key in keys {
            self.keep_previous(key);
        }
        self
    }

    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    pub fn previous(&self) -> &[PublicKey] {
        &self.previous
    }

    /// Makes `new_key` the current signing key; the replaced key keeps verifying until it is
    /// [retired](TokenKeys::retire). Rotating to the current key changes nothing.
    pub fn rotate(&mut self, new_key: SigningKey) {
        if new_key.kid() == self.current.kid() {
            return;
        }
        self.previous.retain(|k| k.kid() != new_key.kid());
        let old = std::mem::replace(&mut self.current, new_key);
        // Newest first, so the JWKS lists keys from the most to the least recently used.
        // The old current key is in `previous` nowhere: the invariant keeps them disjoint.
        self.previous.insert(0, old.public_key().clone());
    }

    /// Stops accepting tokens signed by the previous key `kid`, and returns it.
    pub fn retire(&mut self, kid: &str) -> Result<PublicKey, RetireError> {
        if kid == self.current.kid() {
            return Err(RetireError::Current(kid.to_owned()));
        }
        let index =
            self.previous.iter().position(|k| k.kid() == kid).ok_or_else(|| RetireError::Unknown(kid.to_owned()))?;
        Ok(self.previous.remove(index))
    }

    /// The JWK Set for `GET /.well-known/jwks.json`: the current key, then the previous ones,
    /// most recently replaced first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> =
            std::iter::once(self.current.public_key()).chain(&self.previous).map(PublicKey::jwk).collect();
        json!({ "keys": keys })
    }

    /// The verification key named `kid`, looked up among our keys only.
    pub(super) fn find(&self, kid: &str) -> Option<&PublicKey> {
        std::iter::once(self.current.public_key()).chain(&self.previous).find(|k| k.kid() == kid)
    }

    fn keep_previous(&mut self, key: PublicKey) {
        if key.kid() != self.current.kid() && self.previous.iter().all(|k| k.kid() != key.kid()) {
            self.previous.push(key);
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638 §3.2: SHA-256 over the required members, in lexicographic order, with no spaces.
fn thumbprint(public: &[u8; ED25519_KEY_LEN]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(public));
    b64(&Sha256::digest(canonical.as_bytes()))
}
