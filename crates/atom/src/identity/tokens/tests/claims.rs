//! Correctly signed tokens whose type, issuer, audience, times or claims are wrong.
//!
//! The leeway is the default 30 s; times beyond it are a minute or more off and times within
//! it ten seconds off, so a slow test machine cannot move a case across the line.

use super::*;

/// A token signed by our key with `claims` changed as given.
fn signed_with(key: &SigningKey, changes: &[(&str, Value)]) -> String {
    let claims = changes.iter().fold(valid_claims(), |claims, (name, value)| with(claims, name, value.clone()));
    sign(&header_for(key), &claims, key)
}

#[test]
fn rejects_untyped_jwt_refresh_and_id_tokens() {
    let (tokens, key) = setup();
    let types = [
        json!("JWT"),
        json!("jwt"),
        json!("application/jwt"),
        json!("rt+jwt"),
        json!("refresh+jwt"),
        json!("id_token+jwt"),
        json!("at+jwt "),
        json!("application/at+jwt; charset=utf-8"),
        json!("xapplication/at+jwt"),
        json!(["at+jwt"]),
        json!(null),
    ];
    for typ in types {
        let token = sign(&with(header_for(&key), "typ", typ.clone()), &valid_claims(), &key);
        assert_rejected!(tokens, token, TokenError::WrongType);
    }
}

#[test]
fn accepts_at_jwt_in_any_case_and_as_a_full_media_type() {
    let (tokens, key) = setup();
    for typ in ["at+jwt", "AT+JWT", "At+Jwt", "application/at+jwt", "Application/AT+JWT"] {
        let token = sign(&with(header_for(&key), "typ", json!(typ)), &valid_claims(), &key);
        assert!(tokens.verify(&token).is_ok(), "typ {typ} is an access token");
    }
}

#[test]
fn rejects_a_wrong_issuer() {
    let (tokens, key) = setup();
    let issuers = [json!("https://evil.example"), json!("https://atom.example/"), json!("")];
    for iss in issuers {
        assert_rejected!(tokens, signed_with(&key, &[("iss", iss)]), TokenError::WrongIssuer);
    }
    // An array is not an issuer (RFC 7519 §4.1.1), even one that holds ours.
    assert_rejected!(tokens, signed_with(&key, &[("iss", json!([ISSUER]))]), TokenError::Malformed { .. });
}

#[test]
fn rejects_a_wrong_audience() {
    let (tokens, key) = setup();
    let audiences = [
        json!("https://other.example/v1"),
        json!(""),
        json!(["https://other.example/v1"]),
        json!(["https://other.example/v1", "https://third.example"]),
        json!([]),
    ];
    for aud in audiences {
        assert_rejected!(tokens, signed_with(&key, &[("aud", aud)]), TokenError::WrongAudience);
    }
}

#[test]
fn accepts_an_audience_array_that_contains_ours() {
    let (tokens, key) = setup();
    let token = signed_with(&key, &[("aud", json!(["https://other.example", AUDIENCE]))]);
    assert_eq!(tokens.verify(&token).expect("ours is among them").aud, AUDIENCE);
}

#[test]
fn rejects_a_token_expired_beyond_the_leeway() {
    let (tokens, key) = setup();
    for ago in [60, 3600, 365 * 86400] {
        let exp = now() - ago;
        let token = signed_with(&key, &[("exp", json!(exp)), ("nbf", json!(exp - 600)), ("iat", json!(exp - 600))]);
        assert_rejected!(tokens, token, TokenError::Expired);
    }
}

#[test]
fn accepts_a_token_expired_within_the_leeway() {
    let (tokens, key) = setup();
    let token = signed_with(&key, &[("exp", json!(now() - 10))]);
    assert!(tokens.verify(&token).is_ok());
}

#[test]
fn rejects_nbf_or_iat_in_the_future_beyond_the_leeway() {
    let (tokens, key) = setup();
    let later = json!(now() + 120);
    assert_rejected!(tokens, signed_with(&key, &[("nbf", later.clone())]), TokenError::NotYetValid);
    assert_rejected!(tokens, signed_with(&key, &[("iat", later)]), TokenError::NotYetValid);
}

#[test]
fn accepts_nbf_and_iat_in_the_future_within_the_leeway() {
    let (tokens, key) = setup();
    let soon = json!(now() + 10);
    assert!(tokens.verify(&signed_with(&key, &[("nbf", soon.clone()), ("iat", soon)])).is_ok());
}

#[test]
fn rejects_each_missing_registered_claim() {
    let (tokens, key) = setup();
    for claim in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"] {
        let token = signed_with(&key, &[(claim, Value::Null)]);
        let result = tokens.verify(&token);
        assert!(
            matches!(result, Err(TokenError::MissingClaim(missing)) if missing == claim),
            "without {claim}: {result:?}"
        );
    }
}

#[test]
fn rejects_null_or_empty_subject_and_jti() {
    let (tokens, key) = setup();
    for (claim, value) in [("sub", json!("")), ("jti", json!("")), ("jti", json!(null))] {
        let claims = valid_claims();
        let claims = claims.as_object().expect("an object").clone();
        let mut claims = Value::Object(claims);
        claims[claim] = value;
        let result = tokens.verify(&sign(&header_for(&key), &claims, &key));
        assert!(matches!(result, Err(TokenError::MissingClaim(missing)) if missing == claim), "{result:?}");
    }
}

#[test]
fn rejects_claims_of_the_wrong_json_type() {
    let (tokens, key) = setup();
    let wrong = [
        ("exp", json!("9999999999")),
        ("exp", json!(-1)),
        ("nbf", json!(true)),
        ("iat", json!({ "at": 1 })),
        ("sub", json!(42)),
        ("jti", json!(["a"])),
        ("roles", json!("admin")),
        ("scope", json!(["read"])),
    ];
    for (claim, value) in wrong {
        let token = signed_with(&key, &[(claim, value)]);
        assert_rejected!(tokens, token, TokenError::Malformed { .. });
    }
}

#[test]
fn rejects_a_payload_that_repeats_a_claim() {
    let (tokens, key) = setup();
    let now = now();
    let claims = format!(
        r#"{{"iss":"{ISSUER}","sub":"user-42","sub":"admin","aud":"{AUDIENCE}","exp":{},"nbf":{now},"iat":{now},"jti":"j"}}"#,
        now + 600
    );
    let header = header_for(&key).to_string();
    assert_rejected!(tokens, sign_raw(header.as_bytes(), claims.as_bytes(), &key), TokenError::Malformed { .. });
}

#[test]
fn absent_roles_read_as_none() {
    let (tokens, key) = setup();
    let claims = tokens.verify(&signed_with(&key, &[("roles", Value::Null)])).expect("valid");
    assert!(claims.roles.is_empty());
}
