//! [`MasterKeyring`]: the master keys by version, one of them primary, and the operations
//! on stored forms that need them.
//!
//! Invariants: a keyring holds at least one key, every version is at least 1, and the primary
//! version is one of its keys. Each key sits in its own [`SecretBox`], so moving the keyring
//! or its map never copies key bytes, and dropping it wipes them.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use zeroize::Zeroizing;

use super::CryptoError;
use super::envelope::{self, Aad, Envelope, KEY_LEN};

/// One master key.
pub(super) type MasterKey = SecretBox<[u8; KEY_LEN]>;

/// The version [`MasterKeyring::from_env_value`] and [`MasterKeyring::generate`] give their key.
const FIRST_VERSION: u32 = 1;

/// Master keys are accepted in either alphabet, padded or not: operators paste them from
/// `openssl rand -base64 32` as often as from URL-safe generators.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// The master keys by version, and which one new values are sealed under.
///
/// Read-only use needs `&self` only, so a server shares one keyring behind an `Arc`; a
/// rotation changes a copy loaded from the key file, saves it, and then swaps it in.
pub struct MasterKeyring {
    keys: BTreeMap<u32, MasterKey>,
    primary: u32,
}

impl fmt::Debug for MasterKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyring")
            .field("primary", &self.primary)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MasterKeyring {
    /// A keyring of one fresh random key, version 1.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self { keys: BTreeMap::from([(FIRST_VERSION, generate_key()?)]), primary: FIRST_VERSION })
    }

    /// A keyring of the one key in `ATOM_MASTER_KEY`, as version 1: 32 bytes in standard or
    /// URL-safe base64, padding optional, surrounding whitespace ignored.
    ///
    /// Such a keyring cannot hold older versions, so rotating means moving to a key file.
    pub fn from_env_value(value: &str) -> Result<Self, CryptoError> {
        let key = decode_key(value).map_err(CryptoError::BadKey)?;
        Ok(Self { keys: BTreeMap::from([(FIRST_VERSION, key)]), primary: FIRST_VERSION })
    }

    /// Builds a keyring from parsed parts, checking its invariants; the error is a reason.
    pub(super) fn from_parts(keys: BTreeMap<u32, MasterKey>, primary: u32) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("holds no key".to_owned());
        }
        if keys.contains_key(&0) {
            return Err("key versions start at 1".to_owned());
        }
        if !keys.contains_key(&primary) {
            return Err(format!("primary = {primary} names no key in the file"));
        }
        Ok(Self { keys, primary })
    }

    /// The keys in ascending version order, for writing the key file.
    pub(super) fn keys(&self) -> impl Iterator<Item = (u32, &[u8; KEY_LEN])> {
        self.keys.iter().map(|(version, key)| (*version, key.expose_secret()))
    }

    /// The version new values are sealed under.
    pub fn primary_version(&self) -> u32 {
        self.primary
    }

    /// Every version this keyring holds, ascending.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Adds a fresh random key, one version above the highest, and makes it the primary.
    /// Returns its version. Save the keyring before sealing anything under it.
    pub fn add_key_and_make_primary(&mut self) -> Result<u32, CryptoError> {
        let highest = self.keys.last_key_value().map_or(0, |(version, _)| *version);
        let version = highest.checked_add(1).ok_or(CryptoError::VersionsExhausted)?;
        self.keys.insert(version, generate_key()?);
        self.primary = version;
        Ok(version)
    }

    /// Drops an old key once no stored form uses it any more. The primary cannot be removed.
    pub fn remove_key(&mut self, version: u32) -> Result<(), CryptoError> {
        if version == self.primary {
            return Err(CryptoError::RemovePrimary(version));
        }
        self.keys.remove(&version).map(drop).ok_or(CryptoError::UnknownKeyVersion(version))
    }

    /// Seals `plaintext` for `aad` under a fresh data key wrapped by the primary key.
    pub fn encrypt(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(self.primary, self.key(self.primary)?, aad, plaintext)
    }

    /// Opens a stored form sealed for `aad`, with the master key version it names.
    pub fn decrypt(&self, aad: &Aad<'_>, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let envelope = Envelope::parse(stored)?;
        let data_key = envelope.unwrap_data_key(self.key(envelope.key_version)?, aad)?;
        envelope.open_data(&data_key, aad)
    }

    /// The stored form with its data key re-wrapped under the primary key; the data nonce,
    /// ciphertext and tag are copied unchanged. The whole value is authenticated first, so a
    /// rotation pass never carries a damaged or misplaced value forward as if it were sound.
    pub fn rewrap(&self, aad: &Aad<'_>, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let envelope = Envelope::parse(stored)?;
        let data_key = envelope.unwrap_data_key(self.key(envelope.key_version)?, aad)?;
        // Values are small (tokens, credentials): opening one costs next to nothing.
        drop(envelope.open_data(&data_key, aad)?);
        envelope.rewrap(&data_key, self.primary, self.key(self.primary)?, aad)
    }

    /// Whether `stored` is under another key than the primary. Also true for bytes that are not
    /// a stored form, so that a rotation pass reports them through [`Self::rewrap`]'s error
    /// instead of passing over them.
    pub fn needs_rewrap(&self, stored: &[u8]) -> bool {
        envelope::key_version(stored).map_or(true, |version| version != self.primary)
    }

    fn key(&self, version: u32) -> Result<&[u8; KEY_LEN], CryptoError> {
        self.keys.get(&version).map(|key| key.expose_secret()).ok_or(CryptoError::UnknownKeyVersion(version))
    }
}

fn generate_key() -> Result<MasterKey, CryptoError> {
    let bytes = envelope::random_key()?;
    Ok(key_from_bytes(&bytes))
}

/// Copies key bytes into their own box: the box is allocated first, so the key is written to
/// the heap once and never moved.
fn key_from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
    let mut key = MasterKey::default();
    key.expose_secret_mut().copy_from_slice(bytes);
    key
}

/// Decodes a base64 master key. The error is a reason that never quotes the input; base64's
/// own errors are dropped on purpose, because they quote the offending character.
pub(super) fn decode_key(text: &str) -> Result<MasterKey, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    let decoded = STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map(Zeroizing::new)
        .map_err(|_| "is not valid base64 (standard or URL-safe)".to_owned())?;
    let bytes: &[u8; KEY_LEN] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| format!("decodes to {} bytes; a master key is exactly {KEY_LEN}", decoded.len()))?;
    Ok(key_from_bytes(bytes))
}
