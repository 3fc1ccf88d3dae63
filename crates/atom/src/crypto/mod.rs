//! Envelope encryption of secrets at rest (connector tokens, credentials): AES-256-GCM under
//! a fresh data key per value, the data key wrapped by a versioned master key.
//!
//! [`MasterKeyring::encrypt`] turns a plaintext into one self-describing byte string, the
//! *stored form*, which the storage layer keeps in a BLOB (or, through [`to_base64`], a TEXT)
//! column. [`MasterKeyring::decrypt`] reads the master key version from it, unwraps the data
//! key and opens the value. Rotation is online: [`MasterKeyring::add_key_and_make_primary`]
//! makes a new master key the one new values use, older keys stay to decrypt what exists,
//! and [`MasterKeyring::rewrap`] moves one value to the primary key by re-wrapping only its
//! 48-byte data key; the data ciphertext is carried over byte for byte. Once no stored form
//! names an old version ([`key_version`]), [`MasterKeyring::remove_key`] retires it.
//!
//! # Stored form (format version 1)
//!
//! ```text
//! offset  size    field
//!      0  1       format version, 0x01
//!      1  4       master key version, u32 big-endian
//!      5  12      wrap nonce (random)
//!     17  32+16   the 32-byte data key sealed under the master key: ciphertext, then GCM tag
//!     65  12      data nonce (random)
//!     77  n+16    the n-byte plaintext sealed under the data key: ciphertext, then GCM tag
//! ```
//!
//! A stored form is therefore `93 + n` bytes long. Everything before offset 65 belongs to the
//! wrap and is rewritten by a rewrap; everything from offset 65 belongs to the data.
//!
//! # Associated data
//!
//! Every value is sealed for one place, an [`Aad`] naming its table, column, row and owner.
//! Each of the four strings is written as its length (u64 big-endian) and its UTF-8 bytes, so
//! no two different places encode alike. The AAD of each seal is a 16-byte domain label, the
//! format version, and that encoding; the wrap's AAD also carries the master key version:
//!
//! ```text
//! data AAD = "atom.crypto.data" ‖ 0x01 ‖ place
//! wrap AAD = "atom.crypto.wrap" ‖ 0x01 ‖ key version (u32 BE) ‖ place
//! ```
//!
//! A stored form copied to another row, column, table or owner, or given a different key
//! version in its header, fails to open with [`CryptoError::Authentication`].
//!
//! # Invariants
//!
//! - Master and data keys live only in zeroize-on-drop buffers ([`secrecy::SecretBox`],
//!   [`zeroize::Zeroizing`]); no `Debug` or `Display` of this module shows key material, and
//!   no error quotes a key, a key file's contents or an environment value.
//! - Decrypted plaintext is returned in [`zeroize::Zeroizing`] and only once authenticated.
//! - No input makes this module panic: every malformed stored form or key file is an `Err`.
//! - A master key encrypts only data keys, one random 96-bit nonce each. NIST SP 800-38D
//!   bounds random nonces to 2^32 seals per key; that is billions of rotations or writes away,
//!   and rotating the master key resets it.
//!
//! # Layout
//!
//! - `envelope`: the stored form, [`Aad`] and the AES-256-GCM seal and open steps.
//! - `keyring`: [`MasterKeyring`], its keys by version, and encrypt, decrypt and rewrap.
//! - `keyfile`: the `master.key` file format, loading, generation and atomic saving.
//! - `tests`: the keyring's behaviour end to end: round trips, tampering, places, rotation.

mod envelope;
mod keyfile;
mod keyring;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use envelope::{Aad, FORMAT_VERSION, MIN_STORED_LEN, from_base64, key_version, to_base64};
pub use keyfile::KEY_FILE_NAME;
pub use keyring::MasterKeyring;

/// Why a value or a master key could not be used. No variant carries key material or
/// plaintext, and [`CryptoError::Authentication`] says nothing about which check failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The bytes are not a stored form this version reads: too short, or an unknown format.
    #[error("stored ciphertext is malformed: {0}")]
    Malformed(&'static str),
    /// The stored form names a master key version the keyring does not hold.
    #[error("master key version {0} is not in the keyring")]
    UnknownKeyVersion(u32),
    /// A wrong key, an altered byte or the wrong [`Aad`]: deliberately one variant for all.
    #[error("decryption failed: the value, its place or the master key does not match")]
    Authentication,
    /// A master key that is not 32 bytes of standard or URL-safe base64.
    #[error("invalid master key: {0}")]
    BadKey(String),
    /// A plaintext or an [`Aad`] beyond AES-GCM's limits (64 GiB).
    #[error("the value or its AAD is too large for AES-GCM")]
    TooLarge,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random(#[source] rand::rand_core::OsError),
    /// The primary master key cannot be removed from its keyring.
    #[error("master key version {0} is the primary key and cannot be removed")]
    RemovePrimary(u32),
    /// Every u32 version number is taken.
    #[error("no master key version number is left")]
    VersionsExhausted,
    /// The key file's contents are not a keyring; the reason names a line, never its text.
    #[error("master key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    /// The key file may be read or written by other users than its owner.
    #[error(
        "master key file {path} has mode {mode:04o}; it must not be accessible to group or others \
         (chmod 600 {path})"
    )]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    /// Reading or writing the key file or its directory failed.
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
