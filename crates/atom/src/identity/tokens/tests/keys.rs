//! Keys: RFC 8037 test vectors, export and import, redaction, rotation and retirement.

use super::*;

/// RFC 8037 Appendix A.1: an Ed25519 key pair, and A.3: its RFC 7638 thumbprint.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

fn rfc8037_key() -> SigningKey {
    let seed = URL_SAFE_NO_PAD.decode(RFC8037_D).expect("test vector is base64url");
    SigningKey::from_bytes(&seed).expect("test vector is a valid seed")
}

#[test]
fn kid_is_the_rfc7638_thumbprint_of_the_rfc8037_vector() {
    let key = rfc8037_key();
    assert_eq!(key.kid(), RFC8037_THUMBPRINT);
    assert_eq!(key.public_jwk()["x"], RFC8037_X);
}

#[test]
fn signs_the_rfc8037_example_exactly() {
    // RFC 8037 A.4: Ed25519 is deterministic, so our PKCS#8 path must give this signature.
    let message = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), rfc8037_key().encoding_key(), jsonwebtoken::Algorithm::EdDSA)
            .expect("signing works");
    assert_eq!(signature, "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
}

#[test]
fn public_jwk_has_exactly_the_published_members() {
    let key = rfc8037_key();
    let expected = json!({
        "kty": "OKP", "crv": "Ed25519", "x": RFC8037_X,
        "kid": RFC8037_THUMBPRINT, "alg": "EdDSA", "use": "sig",
    });
    assert_eq!(key.public_jwk(), expected);
    assert!(key.public_jwk().get("d").is_none(), "the private part is never published");
}

#[test]
fn private_key_round_trips_through_bytes() {
    let key = generate();
    let restored = SigningKey::from_bytes(key.to_bytes().as_slice()).expect("exported bytes import");
    assert_eq!(restored.kid(), key.kid());
    assert_eq!(*restored.to_bytes(), *key.to_bytes());
    assert_ne!(generate().kid(), key.kid(), "two generated keys differ");
}

#[test]
fn public_key_round_trips_through_bytes() {
    let key = generate();
    let public = PublicKey::from_bytes(&key.public_key().to_bytes()).expect("exported bytes import");
    assert_eq!(public.kid(), key.kid());
    assert_eq!(public.jwk(), key.public_jwk());
}

#[test]
fn import_rejects_wrong_lengths_and_weak_public_keys() {
    assert!(matches!(SigningKey::from_bytes(&[7; 31]), Err(KeyError::Length(31))));
    assert!(matches!(PublicKey::from_bytes(&[7; 33]), Err(KeyError::Length(33))));
    // The identity point (y = 1) has small order: any signature with R = identity and
    // S = 0 would verify for every message under it.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(PublicKey::from_bytes(&identity), Err(KeyError::InvalidPublicKey(_))));
}

#[test]
fn debug_never_shows_private_material() {
    let key = rfc8037_key();
    let shown = format!("{key:?} {:?}", TokenKeys::new(key.clone()));
    assert!(shown.contains(RFC8037_THUMBPRINT));
    let seed_hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    for secret in [RFC8037_D, seed_hex.as_str(), "157, 97"] {
        assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
    }
}

#[test]
fn rotation_keeps_the_previous_key_for_verification_until_retired() {
    let (first, second, third) = (generate(), generate(), generate());
    let mut keys = TokenKeys::new(first.clone());
    keys.rotate(second.clone());
    assert_eq!(keys.current().kid(), second.kid());
    assert!(keys.find(first.kid()).is_some());
    keys.rotate(second.clone());
    assert_eq!(keys.previous().len(), 1, "rotating to the current key changes nothing");
    keys.rotate(third.clone());
    let kids: Vec<_> = keys.jwks()["keys"].as_array().expect("keys array").iter().map(|k| k["kid"].clone()).collect();
    assert_eq!(kids, [third.kid(), second.kid(), first.kid()]);

    assert_eq!(keys.retire(third.kid()).map(|_| ()), Err(RetireError::Current(third.kid().to_owned())));
    assert_eq!(keys.retire(first.kid()).map(|k| k.kid().to_owned()), Ok(first.kid().to_owned()));
    assert_eq!(keys.retire(first.kid()).map(|_| ()), Err(RetireError::Unknown(first.kid().to_owned())));
    assert!(keys.find(first.kid()).is_none());
    assert_eq!(keys.jwks()["keys"].as_array().map(Vec::len), Some(2));
}

#[test]
fn previous_keys_loaded_from_storage_skip_duplicates_and_the_current_key() {
    let (current, old) = (generate(), generate());
    let keys = TokenKeys::new(current.clone()).with_previous([
        old.public_key().clone(),
        old.public_key().clone(),
        current.public_key().clone(),
    ]);
    assert_eq!(keys.previous().len(), 1);
    assert_eq!(keys.previous()[0].kid(), old.kid());
}
