//! The keyring end to end: what opens, what must not, and rotation.

use super::*;

const TOKEN: &[u8] = b"ya29.a0AfH6SMB-access-token";

fn place() -> Aad<'static> {
    Aad::new("connector_tokens", "access_token", "row-1", "user-1")
}

fn keyring() -> MasterKeyring {
    MasterKeyring::generate().expect("a keyring")
}

fn is_auth_failure(result: Result<impl Sized, CryptoError>) -> bool {
    matches!(result, Err(CryptoError::Authentication))
}

/// SplitMix64: deterministic noise, so that a failing input can be reproduced.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn round_trip() {
    let keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    assert_eq!(stored.len(), MIN_STORED_LEN + TOKEN.len());
    assert_eq!(keyring.decrypt(&place(), &stored).expect("opens").as_slice(), TOKEN);
}

#[test]
fn empty_and_large_plaintexts_round_trip() {
    let keyring = keyring();
    for plaintext in [Vec::new(), vec![0xa5; 1 << 20]] {
        let stored = keyring.encrypt(&place(), &plaintext).expect("seals");
        assert_eq!(*keyring.decrypt(&place(), &stored).expect("opens"), plaintext);
    }
}

#[test]
fn each_encryption_uses_fresh_keys_and_nonces() {
    let keyring = keyring();
    let first = keyring.encrypt(&place(), TOKEN).expect("seals");
    let second = keyring.encrypt(&place(), TOKEN).expect("seals");
    // Wrap nonce, wrapped data key, data nonce, and the ciphertext itself all differ.
    for (start, end) in [(5, 17), (17, 65), (65, 77), (77, first.len())] {
        assert_ne!(first[start..end], second[start..end], "bytes {start}..{end}");
    }
}

#[test]
fn every_flipped_bit_fails() {
    let keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    for index in 0..stored.len() {
        for bit in 0..8 {
            let mut altered = stored.clone();
            altered[index] ^= 1 << bit;
            assert!(keyring.rewrap(&place(), &altered).is_err(), "byte {index} bit {bit}");
            let result = keyring.decrypt(&place(), &altered);
            match index {
                // The format byte is read before anything else; the key version then names
                // another key (unknown here). Every other byte is covered by a GCM tag.
                0 => assert!(matches!(result, Err(CryptoError::Malformed(_))), "byte {index} bit {bit}"),
                1..=4 => assert!(matches!(result, Err(CryptoError::UnknownKeyVersion(_))), "byte {index} bit {bit}"),
                _ => assert!(is_auth_failure(result), "byte {index} bit {bit}"),
            }
        }
    }
}

#[test]
fn another_place_fails() {
    let keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    let elsewhere = [
        Aad { row_id: "row-2", ..place() },
        Aad { owner: "user-2", ..place() },
        Aad { column: "refresh_token", ..place() },
        Aad { table: "api_keys", ..place() },
    ];
    for aad in elsewhere {
        assert!(is_auth_failure(keyring.decrypt(&aad, &stored)), "{aad:?}");
        assert!(is_auth_failure(keyring.rewrap(&aad, &stored)), "{aad:?}");
    }
}

#[test]
fn values_swapped_between_rows_fail() {
    let keyring = keyring();
    let row_1 = place();
    let row_2 = Aad { row_id: "row-2", ..place() };
    let stored_1 = keyring.encrypt(&row_1, b"token of row 1").expect("seals");
    let stored_2 = keyring.encrypt(&row_2, b"token of row 2").expect("seals");
    assert!(is_auth_failure(keyring.decrypt(&row_1, &stored_2)));
    assert!(is_auth_failure(keyring.decrypt(&row_2, &stored_1)));

    // Splicing row 2's data part behind row 1's wrapped key fails too.
    let mut spliced = stored_1[..65].to_vec();
    spliced.extend_from_slice(&stored_2[65..]);
    assert!(is_auth_failure(keyring.decrypt(&row_1, &spliced)));
}

#[test]
fn another_master_key_fails() {
    let stored = keyring().encrypt(&place(), TOKEN).expect("seals");
    // Same version number, different key: what a replaced ATOM_MASTER_KEY looks like.
    assert!(is_auth_failure(keyring().decrypt(&place(), &stored)));
}

#[test]
fn a_relabelled_key_version_fails_even_under_the_same_key() {
    // Versions 1 and 2 hold the same key bytes, so only the key version in the wrap AAD can
    // tell a stored form whose header was changed from 1 to 2.
    let key = || keyring::decode_key("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=").expect("a key");
    let keys = std::collections::BTreeMap::from([(1, key()), (2, key())]);
    let keyring = MasterKeyring::from_parts(keys, 1).expect("a keyring");
    let mut stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    stored[1..5].copy_from_slice(&2_u32.to_be_bytes());
    assert!(is_auth_failure(keyring.decrypt(&place(), &stored)));
}

#[test]
fn truncated_and_random_input_is_an_error_never_a_panic() {
    let keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    let mut noise = Noise(0x5eed);
    for len in 0..200_usize {
        let mut header_then_noise = vec![FORMAT_VERSION, 0, 0, 0, 1];
        header_then_noise.extend(noise.bytes(len.saturating_sub(5)));
        header_then_noise.truncate(len);
        let mut candidates = vec![noise.bytes(len), header_then_noise];
        if len < stored.len() {
            candidates.push(stored[..len].to_vec());
            candidates.push(stored[stored.len() - len..].to_vec());
        }
        for candidate in candidates {
            assert!(keyring.decrypt(&place(), &candidate).is_err(), "length {len}");
            assert!(keyring.rewrap(&place(), &candidate).is_err(), "length {len}");
            // Must not panic; whether it parses depends only on the length and first byte.
            let _ = key_version(&candidate);
        }
    }
}

#[test]
fn unknown_key_version_is_reported() {
    let mut keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    keyring.add_key_and_make_primary().expect("adds v2");
    keyring.remove_key(1).expect("removes v1");
    assert!(matches!(keyring.decrypt(&place(), &stored), Err(CryptoError::UnknownKeyVersion(1))));
}

#[test]
fn older_keys_still_decrypt_after_rotation() {
    let mut keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    assert_eq!(keyring.add_key_and_make_primary().expect("adds v2"), 2);
    assert_eq!(keyring.primary_version(), 2);
    assert_eq!(keyring.versions().collect::<Vec<_>>(), [1, 2]);

    assert_eq!(key_version(&stored).expect("parses"), 1);
    assert!(keyring.needs_rewrap(&stored));
    assert_eq!(keyring.decrypt(&place(), &stored).expect("opens").as_slice(), TOKEN);

    let fresh = keyring.encrypt(&place(), TOKEN).expect("seals");
    assert_eq!(key_version(&fresh).expect("parses"), 2);
    assert!(!keyring.needs_rewrap(&fresh));
}

#[test]
fn rewrap_moves_the_data_key_and_keeps_the_data_bytes() {
    let mut keyring = keyring();
    let stored = keyring.encrypt(&place(), TOKEN).expect("seals");
    keyring.add_key_and_make_primary().expect("adds v2");

    let rewrapped = keyring.rewrap(&place(), &stored).expect("rewraps");
    assert_eq!(key_version(&rewrapped).expect("parses"), 2);
    assert!(!keyring.needs_rewrap(&rewrapped));
    assert_eq!(rewrapped.len(), stored.len());
    // Data nonce, ciphertext and tag start at offset 65 and are carried over unchanged.
    assert_eq!(rewrapped[65..], stored[65..]);
    assert_ne!(rewrapped[..65], stored[..65]);

    keyring.remove_key(1).expect("removes v1");
    assert_eq!(keyring.decrypt(&place(), &rewrapped).expect("opens").as_slice(), TOKEN);
}

#[test]
fn needs_rewrap_is_true_for_bytes_that_are_not_a_stored_form() {
    let keyring = keyring();
    assert!(keyring.needs_rewrap(b""));
    assert!(keyring.needs_rewrap(b"plaintext that was never encrypted"));
}

#[test]
fn the_primary_key_cannot_be_removed() {
    let mut keyring = keyring();
    assert!(matches!(keyring.remove_key(1), Err(CryptoError::RemovePrimary(1))));
    assert!(matches!(keyring.remove_key(7), Err(CryptoError::UnknownKeyVersion(7))));
}

#[test]
fn env_value_accepts_either_base64_alphabet_with_or_without_padding() {
    // Bytes 0xfb 0xff... make '+' and '/' (standard) or '-' and '_' (URL-safe) appear.
    let key = [0xfb_u8; 32];
    let standard = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    let url_safe = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key);
    assert!(standard.contains('+') || standard.contains('/'));
    assert!(url_safe.contains('-') || url_safe.contains('_'));

    let sealed = MasterKeyring::from_env_value(&standard).expect("standard").encrypt(&place(), TOKEN).expect("seals");
    for value in [url_safe.clone(), format!("  {url_safe}\n"), standard.trim_end_matches('=').to_owned()] {
        let keyring = MasterKeyring::from_env_value(&value).expect("accepted");
        assert_eq!(keyring.primary_version(), 1);
        assert_eq!(keyring.decrypt(&place(), &sealed).expect("same key").as_slice(), TOKEN);
    }
}

#[test]
fn a_bad_env_value_is_refused_without_being_quoted() {
    let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 31]);
    let long = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 33]);
    for value in ["", "   ", "s3cr3t-but-not!base64", "hunter2hunter2", short.as_str(), long.as_str()] {
        let err = MasterKeyring::from_env_value(value).expect_err("refused");
        assert!(matches!(err, CryptoError::BadKey(_)), "{value:?}: {err}");
        let message = err.to_string();
        assert!(value.trim().is_empty() || !message.contains(value.trim()), "{message}");
    }
}

#[test]
fn debug_never_shows_key_material() {
    let key = [0x42_u8; 32];
    let value = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    let mut keyring = MasterKeyring::from_env_value(&value).expect("accepted");
    keyring.add_key_and_make_primary().expect("adds v2");
    let debug = format!("{keyring:?} {keyring:#?}");
    assert!(!debug.contains(&value) && !debug.contains("66, 66") && !debug.contains("4242"), "{debug}");
    assert!(debug.contains("primary: 2"), "{debug}");
}
