//! OAuth 1.0a request signing (RFC 5849) with HMAC-SHA1, for the providers that still use it
//! (Trello): the signature base string (§3.4.1), the RFC 3986 percent-encoding it requires
//! (§3.6: only unreserved characters stay as they are, hex digits upper case), the signature
//! (§3.4.2) and the `Authorization: OAuth …` header (§3.5.1).
//!
//! Pure functions: the caller supplies the nonce and the timestamp, so tests check them
//! against the published examples and the flows supply fresh ones.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

/// Everything but RFC 3986's unreserved characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`).
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// RFC 5849 §3.6 percent-encoding.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// The credentials a signed request carries.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    /// Absent for the temporary-credentials request.
    pub token: Option<&'a str>,
    pub token_secret: &'a str,
}

/// The signature base string (§3.4.1): the method, the base string URI, and every parameter
/// of the query, the form body and the protocol, encoded, sorted and joined.
pub fn base_string(method: &str, url: &url::Url, params: &[(String, String)]) -> String {
    let mut uri = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default().to_ascii_lowercase());
    if let Some(port) = url.port() {
        uri.push_str(&format!(":{port}"));
    }
    uri.push_str(url.path());
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k), encode(&v)))
        .chain(params.iter().map(|(k, v)| (encode(k), encode(v))))
        .collect();
    pairs.sort();
    let normalized = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    format!("{}&{}&{}", method.to_ascii_uppercase(), encode(&uri), encode(&normalized))
}

/// The HMAC-SHA1 signature of `base` (§3.4.2), base64.
pub fn hmac_sha1(base: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `Authorization` header of a signed request. `form` is the request's
/// `application/x-www-form-urlencoded` body (signed too); `extra` are protocol parameters
/// beyond the usual ones (`oauth_callback`, `oauth_verifier`).
pub fn authorization_header(
    method: &str,
    url: &url::Url,
    form: &[(String, String)],
    signer: &Signer<'_>,
    extra: &[(&str, &str)],
    nonce: &str,
    timestamp: u64,
) -> String {
    let timestamp = timestamp.to_string();
    let mut oauth: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), signer.consumer_key.into()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), timestamp),
        ("oauth_version".into(), "1.0".into()),
    ];
    if let Some(token) = signer.token {
        oauth.push(("oauth_token".into(), token.into()));
    }
    oauth.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let signed: Vec<(String, String)> = oauth.iter().chain(form).cloned().collect();
    let signature = hmac_sha1(&base_string(method, url, &signed), signer.consumer_secret, signer.token_secret);
    oauth.push(("oauth_signature".into(), signature));
    oauth.sort();
    let fields = oauth.iter().map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v))).collect::<Vec<_>>().join(", ");
    format!("OAuth {fields}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// RFC 5849 §3.4.1.1's example: query parameters with encoded and doubly encoded values, a
    /// form body with an empty value and a `+`, and the protocol parameters (without the
    /// realm, which is not signed).
    #[test]
    fn the_base_string_of_rfc_5849_section_3_4_1() {
        let url = url::Url::parse("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b").expect("url");
        let mut params: Vec<(String, String)> =
            form_urlencoded::parse(b"c2&a3=2+q").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        params.extend(pairs(&[
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
        ]));
        let expected = concat!(
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q",
            "%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_",
            "key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m",
            "ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk",
            "9d7dh3k39sjv7"
        );
        assert_eq!(base_string("POST", &url, &params), expected);
    }

    /// Twitter's published "Creating a signature" example: the parameter string, the base
    /// string and the signature under the consumer and token secrets.
    #[test]
    fn twitters_creating_a_signature_example() {
        let url = url::Url::parse("https://api.twitter.com/1/statuses/update.json?include_entities=true").expect("url");
        let params = pairs(&[
            ("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            ("oauth_token", "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            ("oauth_version", "1.0"),
        ]);
        let base = base_string("POST", &url, &params);
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        let signature = hmac_sha1(
            &base,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        );
        assert_eq!(signature, "tnnArxj06cWHq44gCs1OSKk/jLY=");

        // The header signs the same parameters and carries the signature, encoded.
        let signer = Signer {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            token: Some("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        };
        let form = pairs(&[("status", "Hello Ladies + Gentlemen, a signed OAuth request!")]);
        let header = authorization_header(
            "POST",
            &url,
            &form,
            &signer,
            &[],
            "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            1318622958,
        );
        assert!(header.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", "), "{header}");
        assert!(header.contains("oauth_signature=\"tnnArxj06cWHq44gCs1OSKk%2FjLY%3D\""), "{header}");
        assert!(header.contains("oauth_version=\"1.0\""), "{header}");
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode("Ladies + Gentlemen!*'()~-._é"), "Ladies%20%2B%20Gentlemen%21%2A%27%28%29~-._%C3%A9");
    }
}
