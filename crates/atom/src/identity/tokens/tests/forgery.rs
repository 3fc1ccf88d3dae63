//! Attacks on the token's shape, its header, its signature and the keys.

use jsonwebtoken::{Algorithm, EncodingKey};

use super::*;

#[test]
fn rejects_no_token_and_garbage() {
    let (tokens, _) = setup();
    for garbage in ["", " ", "Bearer", "garbage", "....", "a.b.c", "%%%.%%%.%%%", "\u{0}.\u{0}.\u{0}"] {
        assert_rejected!(tokens, garbage, TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_two_or_four_segments() {
    let (tokens, key) = setup();
    let token = sign(&header_for(&key), &valid_claims(), &key);
    let (input, _) = token.rsplit_once('.').expect("three segments");
    assert_rejected!(tokens, input, TokenError::Malformed { .. });
    assert_rejected!(tokens, format!("{token}.{}", b64(b"extra")), TokenError::Malformed { .. });
    // A JWE (five segments) is not a JWS either.
    assert_rejected!(tokens, format!("{token}.a.b"), TokenError::Malformed { .. });
}

#[test]
fn rejects_alg_none_with_an_empty_signature() {
    let (tokens, key) = setup();
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = with(header_for(&key), "alg", json!(none));
        let input = signing_input(header.to_string().as_bytes(), valid_claims().to_string().as_bytes());
        assert_rejected!(tokens, format!("{input}."), TokenError::UnsupportedAlgorithm);
    }
}

#[test]
fn rejects_hs256_signed_with_our_public_key_as_the_secret() {
    // The classic key confusion: a verifier that takes `alg` from the header would check an
    // HMAC keyed with the public key, which everybody has from the JWKS.
    let (tokens, key) = setup();
    let public = key.public_key().to_bytes();
    let jwk = key.public_jwk();
    let x = jwk["x"].as_str().expect("x is a string").to_owned();
    let jwk_text = jwk.to_string();
    let secrets: [&[u8]; 3] = [&public, x.as_bytes(), jwk_text.as_bytes()];
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        for secret in secrets {
            let header = with(header_for(&key), "alg", json!(format!("{alg:?}")));
            let input = signing_input(header.to_string().as_bytes(), valid_claims().to_string().as_bytes());
            let mac = jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), alg)
                .expect("HMAC signs");
            assert_rejected!(tokens, format!("{input}.{mac}"), TokenError::UnsupportedAlgorithm);
        }
    }
}

#[test]
fn rejects_rsa_ecdsa_and_unknown_algorithms() {
    let (tokens, key) = setup();
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA ", "EDDSA", "Ed25519", ""] {
        let header = with(header_for(&key), "alg", json!(alg));
        let input = signing_input(header.to_string().as_bytes(), valid_claims().to_string().as_bytes());
        let token = format!("{input}.{}", ed25519_signature(&key, &input));
        assert_rejected!(tokens, token, TokenError::UnsupportedAlgorithm);
    }
    for alg in [json!(null), json!(["EdDSA"]), json!(1)] {
        let token = sign(&with(header_for(&key), "alg", alg), &valid_claims(), &key);
        assert_rejected!(tokens, token, TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_unknown_missing_and_non_string_kids() {
    let (tokens, key) = setup();
    for kid in [json!("no-such-key"), json!("../../../etc/passwd"), json!(""), json!(7), json!(null)] {
        let token = sign(&with(header_for(&key), "kid", kid), &valid_claims(), &key);
        assert_rejected!(tokens, token, TokenError::UnknownKey);
    }
}

#[test]
fn rejects_a_tampered_payload_with_the_original_signature() {
    let (tokens, key) = setup();
    let token = sign(&header_for(&key), &valid_claims(), &key);
    let signature = token.rsplit('.').next().expect("a signature");
    let elevated = with(with(valid_claims(), "sub", json!("admin")), "roles", json!(["admin"]));
    let input = signing_input(header_for(&key).to_string().as_bytes(), elevated.to_string().as_bytes());
    assert_rejected!(tokens, format!("{input}.{signature}"), TokenError::BadSignature);
}

#[test]
fn rejects_any_flipped_signature_bit() {
    let (tokens, key) = setup();
    let token = sign(&header_for(&key), &valid_claims(), &key);
    let (input, signature) = token.rsplit_once('.').expect("three segments");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    for bit in [0, 1, 7, 100, 255, 256, 511] {
        let mut flipped = signature.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_rejected!(tokens, format!("{input}.{}", b64(&flipped)), TokenError::BadSignature);
    }
    assert_rejected!(tokens, format!("{input}.{}", b64(&signature[..63])), TokenError::BadSignature);
    assert_rejected!(tokens, format!("{input}."), TokenError::BadSignature);
}

#[test]
fn rejects_a_bad_signature_before_looking_at_the_claims() {
    // An attacker must not learn which claim checks a forged token would pass.
    let (tokens, key) = setup();
    let foreign = generate();
    let expired = with(with(valid_claims(), "exp", json!(1)), "iss", json!("https://evil.example"));
    assert_rejected!(tokens, sign(&header_for(&key), &expired, &foreign), TokenError::BadSignature);
}

#[test]
fn rejects_a_foreign_key_that_claims_our_kid() {
    let (tokens, key) = setup();
    let foreign = generate();
    assert_rejected!(tokens, sign(&header_for(&key), &valid_claims(), &foreign), TokenError::BadSignature);
}

#[test]
fn ignores_an_embedded_jwk_or_jku_naming_the_attackers_key() {
    // RFC 8725 §3.10: keys are never taken from the token (cf. CVE-2018-0114).
    let (tokens, key) = setup();
    let foreign = generate();
    let header = with(header_for(&key), "jwk", foreign.public_jwk());
    let header = with(header, "jku", json!("https://evil.example/jwks.json"));
    assert_rejected!(tokens, sign(&header, &valid_claims(), &foreign), TokenError::BadSignature);
    let header = with(header_for(&foreign), "jwk", foreign.public_jwk());
    assert_rejected!(tokens, sign(&header, &valid_claims(), &foreign), TokenError::UnknownKey);
}

#[test]
fn rejects_a_retired_key_and_accepts_the_previous_key_until_then() {
    let (mut tokens, old) = setup();
    let (old_token, _) = tokens.issue("user-1", Vec::new(), None).expect("issues");
    let hand_made = sign(&header_for(&old), &valid_claims(), &old);

    let new = generate();
    tokens.keys_mut().rotate(new.clone());
    assert!(tokens.verify(&old_token).is_ok(), "the previous key still verifies");
    assert!(tokens.verify(&hand_made).is_ok());
    let (new_token, _) = tokens.issue("user-1", Vec::new(), None).expect("issues");
    assert_eq!(kid_of(&new_token), new.kid(), "new tokens are signed with the new key");
    assert!(tokens.verify(&new_token).is_ok());

    tokens.keys_mut().retire(old.kid()).expect("the previous key retires");
    assert_rejected!(tokens, old_token, TokenError::UnknownKey);
    assert_rejected!(tokens, hand_made, TokenError::UnknownKey);
    assert!(tokens.verify(&new_token).is_ok());
}

#[test]
fn rejects_a_huge_token_quickly_before_decoding() {
    let (tokens, key) = setup();
    let padding = "x".repeat(1024 * 1024);
    let huge = sign(&header_for(&key), &with(valid_claims(), "pad", json!(padding)), &key);
    // Refused for its size, before any decoding: the reason is the size cap, not a decoding
    // failure (a bound on the time would measure the machine's load instead).
    match tokens.verify(&huge) {
        Err(TokenError::Malformed { reason, source: None }) => assert_eq!(reason, "token larger than the size cap"),
        other => panic!("a huge token is refused for its size: {other:?}"),
    }

    let just_over = format!("{}.{}", "A".repeat(MAX_TOKEN_BYTES / 2), "A".repeat(MAX_TOKEN_BYTES / 2));
    assert_rejected!(tokens, just_over, TokenError::Malformed { .. });
}

#[test]
fn rejects_a_header_that_is_not_utf8_json_or_an_object() {
    let (tokens, key) = setup();
    let claims = valid_claims().to_string();
    let headers: [&[u8]; 7] = [
        b"\xff\xfe\xfd",
        b"{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"\xff\"}",
        b"not json",
        b"[\"EdDSA\"]",
        b"\"EdDSA\"",
        b"{\"alg\":\"EdDSA\"",
        b"{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\"} trailing",
    ];
    for header in headers {
        assert_rejected!(tokens, sign_raw(header, claims.as_bytes(), &key), TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_a_header_that_repeats_a_member() {
    // A last-wins parser reads EdDSA here, a first-wins one reads none: we read neither.
    let (tokens, key) = setup();
    let kid = key.kid();
    let claims = valid_claims().to_string();
    let repeated = [
        format!(r#"{{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"EdDSA","typ":"JWT","typ":"at+jwt","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"other","kid":"{kid}"}}"#),
    ];
    for header in repeated {
        assert_rejected!(tokens, sign_raw(header.as_bytes(), claims.as_bytes(), &key), TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_any_crit_header() {
    // RFC 7515 §4.1.11; `b64: false` (RFC 7797) would change what the signature covers.
    let (tokens, key) = setup();
    let crits = [
        (json!(["exp"]), None),
        (json!(["b64"]), Some(("b64", json!(false)))),
        (json!([]), None),
        (json!("b64"), None),
    ];
    for (crit, extra) in crits {
        let mut header = with(header_for(&key), "crit", crit);
        if let Some((name, value)) = extra {
            header = with(header, name, value);
        }
        assert_rejected!(tokens, sign(&header, &valid_claims(), &key), TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_padded_or_non_url_safe_base64() {
    let (tokens, key) = setup();
    let token = sign(&header_for(&key), &valid_claims(), &key);
    let (header, rest) = token.split_once('.').expect("segments");
    assert_rejected!(tokens, format!("{header}==.{rest}"), TokenError::Malformed { .. });

    // Three `?` (0x3F) put a 0b111111 sextet in the standard encoding at any alignment, so
    // it holds a `/`; sign that exact text, so that only the alphabet is wrong.
    let header = with(header_for(&key), "note", json!("???"));
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode(header.to_string());
    assert!(standard.contains('/'));
    let input = format!("{standard}.{}", b64(valid_claims().to_string().as_bytes()));
    let token = format!("{input}.{}", ed25519_signature(&key, &input));
    assert_rejected!(tokens, token, TokenError::Malformed { .. });
}
