//! The webhook signature schemes a template can name, verified over the raw body bytes:
//! Slack's `v0` signing secret, GitHub's `X-Hub-Signature-256`, Stripe's `Stripe-Signature`,
//! Shopify's `X-Shopify-Hmac-Sha256` and Standard Webhooks.
//!
//! Pure functions, no I/O. Invariants: every comparison of a signature is constant-time
//! (`subtle`) over the decoded MAC; the signature is checked before the timestamp, so a
//! forged request is always `BadSignature` (audited) and only a genuine one can be `Stale`;
//! a header that is missing or does not parse is `Malformed`, never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2_v011::Sha256;
use subtle::ConstantTimeEq;

use super::template::{WebhookScheme, Webhooks};

/// How old (or how far in the future) a signed timestamp may be when the template says
/// nothing: the five minutes Slack, Stripe and Standard Webhooks recommend.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// A request's headers, names lower-case; the first value of each.
#[derive(Debug, Default, Clone)]
pub struct RequestHeaders(Vec<(String, String)>);

impl RequestHeaders {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A signature or timestamp header is missing or unreadable.
    Malformed(&'static str),
    /// No signature matches.
    BadSignature,
    /// Genuine, but its signed timestamp is outside the tolerance: a replay or a stuck queue.
    Stale,
}

impl Rejection {
    /// The `verdict` label of `connector_webhooks_total`.
    pub fn verdict(self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
        }
    }
}

/// What a verified request's signature covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp (Unix seconds), for timestamped schemes.
    pub timestamp: Option<i64>,
    /// The id the scheme itself signs (Standard Webhooks' `webhook-id`).
    pub signed_id: Option<String>,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn header<'a>(headers: &'a RequestHeaders, configured: Option<&'a str>, default: &'static str) -> Option<&'a str> {
    headers.get(configured.unwrap_or(default)).map(str::trim)
}

fn fresh(timestamp: i64, now_secs: i64, tolerance_secs: u64) -> bool {
    timestamp.abs_diff(now_secs) <= tolerance_secs
}

/// Verifies `body` as `webhooks` says, with `secret` (the provider's signing secret as the
/// admin stored it), at `now_secs`.
pub fn verify(
    webhooks: &Webhooks,
    headers: &RequestHeaders,
    body: &[u8],
    secret: &[u8],
    now_secs: i64,
) -> Result<Verified, Rejection> {
    let tolerance = webhooks.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
    let sig_header = webhooks.signature_header.as_deref();
    match webhooks.scheme {
        WebhookScheme::SlackV0 => {
            let signature =
                header(headers, sig_header, "x-slack-signature").ok_or(Rejection::Malformed("signature"))?;
            let ts_text = header(headers, webhooks.timestamp_header.as_deref(), "x-slack-request-timestamp")
                .ok_or(Rejection::Malformed("timestamp"))?;
            let timestamp: i64 = ts_text.parse().map_err(|_| Rejection::Malformed("timestamp"))?;
            let expected = format!("v0={}", hex(&mac(secret, &[b"v0:", ts_text.as_bytes(), b":", body])));
            if !equal(expected.as_bytes(), signature.as_bytes()) {
                return Err(Rejection::BadSignature);
            }
            if !fresh(timestamp, now_secs, tolerance) {
                return Err(Rejection::Stale);
            }
            Ok(Verified { timestamp: Some(timestamp), signed_id: None })
        }
        WebhookScheme::GithubSha256 => {
            let signature =
                header(headers, sig_header, "x-hub-signature-256").ok_or(Rejection::Malformed("signature"))?;
            let expected = format!("sha256={}", hex(&mac(secret, &[body])));
            if !equal(expected.as_bytes(), signature.as_bytes()) {
                return Err(Rejection::BadSignature);
            }
            Ok(Verified { timestamp: None, signed_id: None })
        }
        WebhookScheme::Stripe => {
            let value = header(headers, sig_header, "stripe-signature").ok_or(Rejection::Malformed("signature"))?;
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for item in value.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
                    Some(("t", _)) => return Err(Rejection::Malformed("signature")),
                    Some(("v1", s)) => signatures.push(s),
                    // Other schemes (`v0`, test-mode) are ignored, as Stripe says.
                    _ => {}
                }
            }
            let ts_text = timestamp.ok_or(Rejection::Malformed("signature"))?;
            let timestamp: i64 = ts_text.parse().map_err(|_| Rejection::Malformed("signature"))?;
            if signatures.is_empty() {
                return Err(Rejection::Malformed("signature"));
            }
            let expected = hex(&mac(secret, &[ts_text.as_bytes(), b".", body]));
            // Every candidate is compared, so the time taken does not say which one matched.
            let matched = signatures.iter().fold(false, |found, s| equal(expected.as_bytes(), s.as_bytes()) | found);
            if !matched {
                return Err(Rejection::BadSignature);
            }
            if !fresh(timestamp, now_secs, tolerance) {
                return Err(Rejection::Stale);
            }
            Ok(Verified { timestamp: Some(timestamp), signed_id: None })
        }
        WebhookScheme::ShopifyHmac => {
            let value =
                header(headers, sig_header, "x-shopify-hmac-sha256").ok_or(Rejection::Malformed("signature"))?;
            let given = STANDARD.decode(value).map_err(|_| Rejection::Malformed("signature"))?;
            if !equal(&mac(secret, &[body]), &given) {
                return Err(Rejection::BadSignature);
            }
            Ok(Verified { timestamp: None, signed_id: None })
        }
        WebhookScheme::StandardWebhooks => {
            let id = headers.get("webhook-id").map(str::trim).ok_or(Rejection::Malformed("webhook-id"))?;
            let ts_text = header(headers, webhooks.timestamp_header.as_deref(), "webhook-timestamp")
                .ok_or(Rejection::Malformed("timestamp"))?;
            let timestamp: i64 = ts_text.parse().map_err(|_| Rejection::Malformed("timestamp"))?;
            let value = header(headers, sig_header, "webhook-signature").ok_or(Rejection::Malformed("signature"))?;
            // The secret is `whsec_` and the base64 of the key.
            let key = match std::str::from_utf8(secret).ok().and_then(|s| s.strip_prefix("whsec_")) {
                Some(encoded) => STANDARD.decode(encoded).map_err(|_| Rejection::Malformed("secret"))?,
                None => secret.to_vec(),
            };
            let expected = mac(&key, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
            let matched = value
                .split(' ')
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|b64| STANDARD.decode(b64).ok())
                .fold(false, |found, given| equal(&expected, &given) | found);
            if !matched {
                return Err(Rejection::BadSignature);
            }
            if !fresh(timestamp, now_secs, tolerance) {
                return Err(Rejection::Stale);
            }
            Ok(Verified { timestamp: Some(timestamp), signed_id: Some(id.to_owned()) })
        }
        WebhookScheme::None => Err(Rejection::BadSignature),
    }
}

/// Signing, for the tests and the benchmark's load generator: the headers a provider sends
/// with `body` at `timestamp` (and `id`, for Standard Webhooks).
pub fn sign(scheme: WebhookScheme, secret: &[u8], body: &[u8], timestamp: i64, id: &str) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    match scheme {
        WebhookScheme::SlackV0 => vec![
            ("X-Slack-Request-Timestamp".to_owned(), ts.clone()),
            ("X-Slack-Signature".to_owned(), format!("v0={}", hex(&mac(secret, &[b"v0:", ts.as_bytes(), b":", body])))),
        ],
        WebhookScheme::GithubSha256 => vec![
            ("X-Hub-Signature-256".to_owned(), format!("sha256={}", hex(&mac(secret, &[body])))),
            ("X-GitHub-Delivery".to_owned(), id.to_owned()),
        ],
        WebhookScheme::Stripe => vec![(
            "Stripe-Signature".to_owned(),
            format!("t={ts},v1={}", hex(&mac(secret, &[ts.as_bytes(), b".", body]))),
        )],
        WebhookScheme::ShopifyHmac => vec![
            ("X-Shopify-Hmac-Sha256".to_owned(), STANDARD.encode(mac(secret, &[body]))),
            ("X-Shopify-Webhook-Id".to_owned(), id.to_owned()),
        ],
        WebhookScheme::StandardWebhooks => {
            let key = std::str::from_utf8(secret)
                .ok()
                .and_then(|s| s.strip_prefix("whsec_"))
                .and_then(|e| STANDARD.decode(e).ok())
                .unwrap_or_else(|| secret.to_vec());
            let signature = STANDARD.encode(mac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]));
            vec![
                ("webhook-id".to_owned(), id.to_owned()),
                ("webhook-timestamp".to_owned(), ts),
                ("webhook-signature".to_owned(), format!("v1,{signature}")),
            ]
        }
        WebhookScheme::None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhooks(scheme: WebhookScheme) -> Webhooks {
        Webhooks {
            scheme,
            signature_header: None,
            timestamp_header: None,
            tolerance_secs: None,
            id_header: None,
            id_pointer: None,
            type_header: None,
            type_pointer: None,
            route: None,
        }
    }

    fn headers(pairs: Vec<(String, String)>) -> RequestHeaders {
        RequestHeaders::new(pairs)
    }

    const NOW: i64 = 1_700_000_000;
    const SCHEMES: [WebhookScheme; 5] = [
        WebhookScheme::SlackV0,
        WebhookScheme::GithubSha256,
        WebhookScheme::Stripe,
        WebhookScheme::ShopifyHmac,
        WebhookScheme::StandardWebhooks,
    ];

    #[test]
    fn each_scheme_accepts_its_own_signature_and_refuses_a_tampered_body_or_another_secret() {
        for scheme in SCHEMES {
            let secret: &[u8] = if scheme == WebhookScheme::StandardWebhooks {
                b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            } else {
                b"s3cret"
            };
            let body = br#"{"type":"x","team_id":"T1"}"#;
            let signed = headers(sign(scheme, secret, body, NOW, "msg_1"));
            assert!(verify(&webhooks(scheme), &signed, body, secret, NOW + 10).is_ok(), "{scheme:?}");
            assert_eq!(
                verify(&webhooks(scheme), &signed, br#"{"type":"x","team_id":"T2"}"#, secret, NOW),
                Err(Rejection::BadSignature),
                "{scheme:?} tampered"
            );
            assert_eq!(verify(&webhooks(scheme), &signed, body, b"other", NOW), Err(Rejection::BadSignature));
            assert!(matches!(
                verify(&webhooks(scheme), &RequestHeaders::default(), body, secret, NOW),
                Err(Rejection::Malformed(_))
            ));
        }
    }

    #[test]
    fn timestamped_schemes_refuse_a_stale_timestamp_after_the_signature() {
        for scheme in [WebhookScheme::SlackV0, WebhookScheme::Stripe, WebhookScheme::StandardWebhooks] {
            let signed = headers(sign(scheme, b"k", b"{}", NOW - 301, "msg_1"));
            assert_eq!(verify(&webhooks(scheme), &signed, b"{}", b"k", NOW), Err(Rejection::Stale), "{scheme:?}");
            let future = headers(sign(scheme, b"k", b"{}", NOW + 301, "msg_1"));
            assert_eq!(verify(&webhooks(scheme), &future, b"{}", b"k", NOW), Err(Rejection::Stale), "{scheme:?}");
            // A stale forgery is a forgery.
            assert_eq!(verify(&webhooks(scheme), &signed, b"{}", b"x", NOW), Err(Rejection::BadSignature));
        }
    }

    #[test]
    fn stripe_accepts_any_of_several_v1_signatures_and_ignores_other_schemes() {
        let good = sign(WebhookScheme::Stripe, b"whsec_test", b"{}", NOW, "")[0].1.clone();
        let v1 = good.split_once(",v1=").expect("v1").1;
        let value = format!("t={NOW},v1={},v0=abc,v1={v1}", "0".repeat(64));
        let signed = headers(vec![("Stripe-Signature".to_owned(), value)]);
        assert!(verify(&webhooks(WebhookScheme::Stripe), &signed, b"{}", b"whsec_test", NOW).is_ok());
        let two_t = headers(vec![("Stripe-Signature".to_owned(), format!("t={NOW},t={NOW},v1={v1}"))]);
        assert!(matches!(
            verify(&webhooks(WebhookScheme::Stripe), &two_t, b"{}", b"whsec_test", NOW),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn the_reference_vectors_verify() {
        // Slack's documented example.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let slack = headers(vec![
            ("X-Slack-Request-Timestamp".to_owned(), "1531420618".to_owned()),
            (
                "X-Slack-Signature".to_owned(),
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_owned(),
            ),
        ]);
        assert!(
            verify(&webhooks(WebhookScheme::SlackV0), &slack, body, b"8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618)
                .is_ok()
        );
        // The Standard Webhooks specification's example.
        let body = br#"{"test": 2432232314}"#;
        let standard = headers(vec![
            ("webhook-id".to_owned(), "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()),
            ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
            ("webhook-signature".to_owned(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()),
        ]);
        assert!(
            verify(
                &webhooks(WebhookScheme::StandardWebhooks),
                &standard,
                body,
                b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                1_614_265_330
            )
            .is_ok()
        );
    }
}
