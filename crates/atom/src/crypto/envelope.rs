//! The stored form (laid out in the [module docs](super)), the [`Aad`] a value is bound to,
//! and the AES-256-GCM steps that seal and open it. Keys come in as plain references: which
//! master key to use is the keyring's business, not this file's.
//!
//! Invariants: parsing never indexes past the input (every split is checked), and a buffer
//! that ever holds a data key or a plaintext is a [`Zeroizing`] one, allocated at its final
//! size so that no reallocation leaves a copy behind.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;

/// The first byte of every stored form this version writes.
pub const FORMAT_VERSION: u8 = 1;
/// The length of the stored form of an empty plaintext; every stored form is at least this long.
pub const MIN_STORED_LEN: usize = HEADER_LEN + TAG_LEN;

pub(super) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Format version, key version, wrap nonce, wrapped data key and tag, data nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN + KEY_LEN + TAG_LEN + NONCE_LEN;
/// The largest plaintext AES-GCM seals under one nonce (NIST SP 800-38D: 2^39 - 256 bits).
const MAX_PLAINTEXT_LEN: u64 = (1 << 36) - 32;

const DATA_LABEL: &[u8; 16] = b"atom.crypto.data";
const WRAP_LABEL: &[u8; 16] = b"atom.crypto.wrap";

/// The place a value is sealed for. A stored form opens only with the same four strings.
///
/// `row_id` and `owner` are whatever the table uses as its key and its owning account, in
/// their canonical text form (the same UUID must always be spelled the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: &'a str,
    pub owner: &'a str,
}

impl<'a> Aad<'a> {
    pub fn new(table: &'a str, column: &'a str, row_id: &'a str, owner: &'a str) -> Self {
        Self { table, column, row_id, owner }
    }

    /// `label ‖ format version ‖ [key version] ‖ (length ‖ bytes) for each field`.
    fn encode(&self, label: &[u8; 16], key_version: Option<u32>) -> Vec<u8> {
        let fields = [self.table, self.column, self.row_id, self.owner];
        let len = label.len() + 1 + 4 + fields.iter().map(|f| 8 + f.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(label);
        out.push(FORMAT_VERSION);
        if let Some(version) = key_version {
            out.extend_from_slice(&version.to_be_bytes());
        }
        for field in fields {
            // usize is at most 64 bits on every target Rust supports, so this never truncates.
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// A borrowed, length-checked view of a stored form.
pub(super) struct Envelope<'a> {
    pub key_version: u32,
    wrap_nonce: &'a [u8; NONCE_LEN],
    wrapped_key: &'a [u8; KEY_LEN],
    wrap_tag: &'a [u8; TAG_LEN],
    /// Data nonce, ciphertext and tag: what a rewrap copies unchanged.
    sealed_data: &'a [u8],
}

impl<'a> Envelope<'a> {
    pub fn parse(stored: &'a [u8]) -> Result<Self, CryptoError> {
        let Some((&format, rest)) = stored.split_first() else {
            return Err(CryptoError::Malformed("empty"));
        };
        if format != FORMAT_VERSION {
            return Err(CryptoError::Malformed("unknown format version"));
        }
        if stored.len() < MIN_STORED_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        let too_short = || CryptoError::Malformed("too short");
        let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(too_short)?;
        let (wrap_nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(too_short)?;
        let (wrapped_key, rest) = rest.split_first_chunk::<KEY_LEN>().ok_or_else(too_short)?;
        let (wrap_tag, sealed_data) = rest.split_first_chunk::<TAG_LEN>().ok_or_else(too_short)?;
        Ok(Self { key_version: u32::from_be_bytes(*version), wrap_nonce, wrapped_key, wrap_tag, sealed_data })
    }

    /// Opens the wrapped data key with the master key named by [`Self::key_version`].
    pub fn unwrap_data_key(
        &self,
        master: &[u8; KEY_LEN],
        aad: &Aad<'_>,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let mut data_key = Zeroizing::new(*self.wrapped_key);
        Aes256Gcm::new(master.into())
            .decrypt_in_place_detached(
                self.wrap_nonce.into(),
                &aad.encode(WRAP_LABEL, Some(self.key_version)),
                data_key.as_mut_slice(),
                self.wrap_tag.into(),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(data_key)
    }

    /// Opens the data with its unwrapped data key.
    pub fn open_data(&self, data_key: &[u8; KEY_LEN], aad: &Aad<'_>) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let too_short = || CryptoError::Malformed("too short");
        let (nonce, rest) = self.sealed_data.split_first_chunk::<NONCE_LEN>().ok_or_else(too_short)?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or_else(too_short)?;
        // Decrypted in place in a zeroizing buffer, so that neither the plaintext nor anything
        // written before a failed tag check outlives this call unwiped.
        let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        plaintext.extend_from_slice(ciphertext);
        Aes256Gcm::new(data_key.into())
            .decrypt_in_place_detached(nonce.into(), &aad.encode(DATA_LABEL, None), &mut plaintext, tag.into())
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plaintext)
    }

    /// The same value with its data key wrapped anew under `master`, version `key_version`.
    pub fn rewrap(
        &self,
        data_key: &[u8; KEY_LEN],
        key_version: u32,
        master: &[u8; KEY_LEN],
        aad: &Aad<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(HEADER_LEN - NONCE_LEN + self.sealed_data.len());
        write_wrapped_key(&mut out, data_key, key_version, master, aad)?;
        out.extend_from_slice(self.sealed_data);
        Ok(out)
    }
}

/// Seals `plaintext` for `aad` under a fresh data key wrapped by `master`, version `key_version`.
pub(super) fn seal(
    key_version: u32,
    master: &[u8; KEY_LEN],
    aad: &Aad<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() as u64 > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::TooLarge);
    }
    let data_key = random_key()?;
    let data_nonce: [u8; NONCE_LEN] = random_bytes()?;

    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    write_wrapped_key(&mut out, &data_key, key_version, master, aad)?;
    out.extend_from_slice(&data_nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let sealed = Aes256Gcm::new((&*data_key).into()).encrypt_in_place_detached(
        (&data_nonce).into(),
        &aad.encode(DATA_LABEL, None),
        &mut out[start..],
    );
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(out)
        }
        Err(_) => {
            // Only AES-GCM's length limits fail a seal; the buffer may still hold plaintext.
            out.zeroize();
            Err(CryptoError::TooLarge)
        }
    }
}

/// Appends format version, key version, wrap nonce and the sealed data key to `out`.
fn write_wrapped_key(
    out: &mut Vec<u8>,
    data_key: &[u8; KEY_LEN],
    key_version: u32,
    master: &[u8; KEY_LEN],
    aad: &Aad<'_>,
) -> Result<(), CryptoError> {
    let wrap_nonce: [u8; NONCE_LEN] = random_bytes()?;
    let mut wrapped = Zeroizing::new(*data_key);
    let tag = Aes256Gcm::new(master.into())
        .encrypt_in_place_detached(
            (&wrap_nonce).into(),
            &aad.encode(WRAP_LABEL, Some(key_version)),
            wrapped.as_mut_slice(),
        )
        .map_err(|_| CryptoError::TooLarge)?;
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(wrapped.as_slice());
    out.extend_from_slice(&tag);
    Ok(())
}

/// A fresh random 256-bit key in a zeroizing buffer.
pub(super) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.try_fill_bytes(key.as_mut_slice()).map_err(CryptoError::Random)?;
    Ok(key)
}

/// Random bytes that are not secret (nonces, file name suffixes).
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(CryptoError::Random)?;
    Ok(bytes)
}

/// The master key version a stored form was sealed under, without opening it.
pub fn key_version(stored: &[u8]) -> Result<u32, CryptoError> {
    Envelope::parse(stored).map(|envelope| envelope.key_version)
}

/// A stored form as standard, padded base64, for a TEXT column.
pub fn to_base64(stored: &[u8]) -> String {
    STANDARD.encode(stored)
}

/// The stored form back from [`to_base64`]'s text. Its contents are checked on decryption.
pub fn from_base64(text: &str) -> Result<Vec<u8>, CryptoError> {
    STANDARD.decode(text).map_err(|_| CryptoError::Malformed("not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits")).collect()
    }

    /// Test Case 16 of McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)"
    /// (revised 2005, the vectors NIST SP 800-38D refers to): AES-256, 96-bit IV, a 60-byte
    /// plaintext (a partial last block) and 20 bytes of AAD. Proves the primitive is wired
    /// right: key, nonce, AAD and the detached tag each reach the place they should.
    #[test]
    fn aes_256_gcm_matches_gcm_spec_test_case_16() {
        let key: [u8; 32] =
            hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308").try_into().expect("32 bytes");
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().expect("12 bytes");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plaintext = hex(concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ));
        let expected_ciphertext = hex(concat!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        ));
        let expected_tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");

        let cipher = Aes256Gcm::new((&key).into());
        let mut buffer = plaintext.clone();
        let tag = cipher.encrypt_in_place_detached((&nonce).into(), &aad, &mut buffer).expect("seals");
        assert_eq!(buffer, expected_ciphertext);
        assert_eq!(tag[..], expected_tag[..]);

        cipher.decrypt_in_place_detached((&nonce).into(), &aad, &mut buffer, &tag).expect("opens");
        assert_eq!(buffer, plaintext);
    }

    #[test]
    fn aad_encoding_is_unambiguous() {
        let a = Aad::new("ab", "c", "1", "u");
        let b = Aad::new("a", "bc", "1", "u");
        assert_ne!(a.encode(DATA_LABEL, None), b.encode(DATA_LABEL, None));
        let moved = Aad::new("t", "c", "1", "");
        let moved_too = Aad::new("t", "c", "", "1");
        assert_ne!(moved.encode(DATA_LABEL, None), moved_too.encode(DATA_LABEL, None));
        assert_ne!(a.encode(DATA_LABEL, None), a.encode(WRAP_LABEL, None));
        assert_ne!(a.encode(WRAP_LABEL, Some(1)), a.encode(WRAP_LABEL, Some(2)));
    }

    #[test]
    fn stored_form_has_the_documented_layout() {
        let master = [7u8; KEY_LEN];
        let aad = Aad::new("t", "c", "r", "o");
        let stored = seal(0x0102_0304, &master, &aad, b"hello").expect("seals");
        assert_eq!(stored.len(), MIN_STORED_LEN + 5);
        assert_eq!(MIN_STORED_LEN, 93);
        assert_eq!(stored[0], FORMAT_VERSION);
        assert_eq!(&stored[1..5], &[1, 2, 3, 4]);
        assert_eq!(key_version(&stored).expect("parses"), 0x0102_0304);
    }

    #[test]
    fn parse_names_what_is_wrong() {
        assert!(matches!(Envelope::parse(&[]), Err(CryptoError::Malformed("empty"))));
        assert!(matches!(Envelope::parse(&[2; 100]), Err(CryptoError::Malformed("unknown format version"))));
        let mut short = vec![FORMAT_VERSION];
        short.resize(MIN_STORED_LEN - 1, 0);
        assert!(matches!(Envelope::parse(&short), Err(CryptoError::Malformed("too short"))));
        short.push(0);
        assert!(Envelope::parse(&short).is_ok());
    }

    #[test]
    fn base64_text_round_trips() {
        let stored = seal(1, &[9u8; KEY_LEN], &Aad::new("t", "c", "r", "o"), b"token").expect("seals");
        let text = to_base64(&stored);
        assert_eq!(from_base64(&text).expect("decodes"), stored);
        assert!(matches!(from_base64("not base64!"), Err(CryptoError::Malformed(_))));
    }
}
