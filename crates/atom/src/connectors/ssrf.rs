//! The proxy's guard against being turned on the server's own network (SSRF).
//!
//! Three checks, each closing a way around the others:
//! - [`AddressPolicy`]: which addresses the proxy may connect to. Private, loopback,
//!   link-local, CGNAT, multicast, unspecified, reserved and documentation ranges are refused,
//!   for IPv4 and IPv6 alike, and an IPv6 address that carries an IPv4 one (v4-mapped,
//!   v4-compatible, NAT64, 6to4) is judged by the IPv4 address inside. An operator may allow
//!   ranges (`connectors.proxy_allow_ranges`); the cloud metadata addresses never are.
//! - [`GuardedResolver`]: the proxy's HTTP client resolves host names only through it, and it
//!   hands the connector only the addresses the policy permits. The check is at connect time,
//!   on the very addresses connected to, so a name that resolves to a public address when a
//!   template is checked and to a private one later (DNS rebinding) gets nowhere. A host that
//!   is an IP literal is not resolved at all, so [`AddressPolicy::check_url`] checks it first.
//! - [`join_path`]: the caller's path stays below the template's base URL: no `.` or `..`
//!   segment, plain or percent-encoded, no encoded `/` or `\`, no backslash, no control
//!   character, and the joined URL keeps the base's scheme, host, port and path prefix, with no
//!   user information.
//!
//! Redirects are never followed (the client's policy is `none`): a provider's 3xx goes back
//! to the caller as it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::net::Cidr;

/// The cloud metadata endpoints (AWS, GCP, Azure, and AWS's IPv6 one): refused even when an
/// allowed range covers them.
const METADATA: &[IpAddr] =
    &[IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254))];

/// Which addresses the proxy may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
}

/// Why an address is refused, for the error (never shown with the address to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Metadata,
    Internal,
}

impl AddressPolicy {
    /// The policy with `allow` as the operator's allowed ranges (already validated).
    pub fn new(allow: &[String]) -> Self {
        Self { allow: allow.iter().filter_map(|r| Cidr::parse(r)).collect() }
    }

    /// Whether the proxy may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if METADATA.contains(&ip) {
            return Err(Refusal::Metadata);
        }
        if internal(ip) && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::Internal);
        }
        Ok(())
    }

    /// Checks a URL whose host is an IP literal, which no resolver sees.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// `ip`, or the IPv4 address an IPv6 one carries (v4-mapped `::ffff:a.b.c.d`, v4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`).
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(hi, lo),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => embedded(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        _ => ip,
    }
}

/// Whether `ip` (canonical) is anything but a public unicast address.
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_unspecified()
                || a == 0 // "this network"
                || a == 10
                || a == 127
                || (a == 100 && (64..128).contains(&b)) // CGNAT, RFC 6598
                || (a == 169 && b == 254) // link-local
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 0 && c == 2) // documentation
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 224 // multicast, reserved, broadcast
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7 (fd00:ec2::254 among them)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        }
    }
}

/// The error a refused name resolves to; the proxy maps it to `destination_refused`.
#[derive(Debug, thiserror::Error)]
#[error("{host} {}", Self::MARKER)]
pub struct Refused {
    pub host: String,
}

impl Refused {
    pub const MARKER: &str = "resolves only to addresses the proxy may not reach";
}

/// A reqwest resolver that resolves with the system's resolver and keeps only the addresses
/// `policy` permits; none left is an error.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted = filter(&policy, resolved);
            if permitted.is_empty() {
                return Err(Box::new(Refused { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `resolved` that `policy` permits.
pub fn filter(policy: &AddressPolicy, resolved: Vec<SocketAddr>) -> Vec<SocketAddr> {
    resolved.into_iter().filter(|a| policy.check(a.ip()).is_ok()).collect()
}

/// Why a caller's path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathRefused(pub &'static str);

/// `base` with the caller's raw (still percent-encoded) `path` below its path, and `query`;
/// refused when the path could leave the base (see the module's paragraph).
pub fn join_path(base: &url::Url, path: &str, query: Option<&str>) -> Result<url::Url, PathRefused> {
    for segment in path.split('/') {
        if segment.bytes().any(|b| b == b'\\' || b.is_ascii_control() || b == b' ') {
            return Err(PathRefused("the path holds a backslash, a space or a control character"));
        }
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded == b"." || decoded == b".." {
            return Err(PathRefused("the path holds a . or .. segment"));
        }
        if decoded.iter().any(|&b| b == b'/' || b == b'\\' || b == b'%' || b.is_ascii_control()) {
            return Err(PathRefused("the path holds an encoded /, \\, % or control character"));
        }
    }
    let base_path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    // No path is the base URL itself, as the template writes it (`…/1`, not `…/1/`).
    if !path.is_empty() {
        url.set_path(&format!("{base_path}/{}", path.trim_start_matches('/')));
    }
    url.set_query(query.filter(|q| !q.is_empty()));
    let same_origin = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if !same_origin || !url.path().starts_with(base_path) {
        return Err(PathRefused("the path leaves the provider's base URL"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(policy.check(ip(refused)).is_err(), "{refused} is refused");
        }
        for permitted in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(policy.check(ip(permitted)), Ok(()), "{permitted} is permitted");
        }
    }

    #[test]
    fn allowed_ranges_open_internal_addresses_but_never_metadata() {
        let policy =
            AddressPolicy::new(&["127.0.0.0/8".to_owned(), "169.254.0.0/16".to_owned(), "fd00::/8".to_owned()]);
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()), "a v4-mapped loopback is loopback");
        assert_eq!(policy.check(ip("169.254.169.254")), Err(Refusal::Metadata));
        assert_eq!(policy.check(ip("::ffff:169.254.169.254")), Err(Refusal::Metadata));
        assert_eq!(policy.check(ip("fd00:ec2::254")), Err(Refusal::Metadata));
        assert_eq!(policy.check(ip("10.0.0.1")), Err(Refusal::Internal), "outside the allowed ranges");
    }

    /// What the resolver hands the connector: a name that resolves to a mix keeps only the
    /// public addresses; one that resolves only to private ones (a rebinding) is refused.
    #[test]
    fn the_resolver_keeps_only_permitted_addresses() {
        let policy = AddressPolicy::default();
        let sa = |s: &str| SocketAddr::new(ip(s), 443);
        let mixed = vec![sa("10.0.0.5"), sa("93.184.215.14"), sa("::1"), sa("::ffff:192.168.0.1")];
        assert_eq!(filter(&policy, mixed), vec![sa("93.184.215.14")]);
        assert!(filter(&policy, vec![sa("127.0.0.1"), sa("169.254.169.254")]).is_empty());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_resolution() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let err = resolver.resolve(name).await.err().expect("localhost resolves only to loopback");
        assert!(err.to_string().contains("localhost"), "{err}");
        let allowed = GuardedResolver::new(Arc::new(AddressPolicy::new(&["127.0.0.0/8".into(), "::1/128".into()])));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(allowed.resolve(name).await.is_ok(), "allowed by the operator");
    }

    #[test]
    fn paths_stay_below_the_base() {
        let base = url::Url::parse("https://api.example.com/v2").expect("base");
        let ok = |p: &str| join_path(&base, p, Some("a=1")).expect(p).to_string();
        assert_eq!(ok("users/me"), "https://api.example.com/v2/users/me?a=1");
        assert_eq!(ok("users/@me"), "https://api.example.com/v2/users/@me?a=1");
        assert_eq!(ok("@evil.com/x"), "https://api.example.com/v2/@evil.com/x?a=1", "an @ stays in the path");
        assert_eq!(ok("a%20b"), "https://api.example.com/v2/a%20b?a=1");
        assert_eq!(ok(""), "https://api.example.com/v2?a=1", "no path: the base URL itself");
        let slashed = url::Url::parse("https://api.example.com/v2/").expect("base");
        assert_eq!(join_path(&slashed, "", None).expect("joined").as_str(), "https://api.example.com/v2/");
        for refused in [
            "../admin",
            "a/../../admin",
            "%2e%2e/admin",
            "%2E%2e/admin",
            ".%2e/admin",
            "a/%2f%2fevil.com",
            "a%2F..%2Fb",
            "a\\..\\b",
            "a%5c..%5cb",
            "./x",
            "a%00b",
            "%252e%252e/admin",
        ] {
            assert!(join_path(&base, refused, None).is_err(), "{refused} is refused");
        }
    }
}
