//! The address guard for media URLs: qunbridge fetches pictures from URLs that chat users and
//! `api` clients chose, and hands such URLs to OneBot implementations, so without a guard any
//! group member could make the daemon (or the implementation next to it) request
//! `http://127.0.0.1:…/admin`, a cloud metadata address or a router on the LAN.
//!
//! The guard refuses non-http(s) schemes and every address that is not public — loopback,
//! private, link-local, CGNAT, multicast, broadcast, unspecified, reserved, IPv6 unique-local
//! and site-local, and IPv6 forms that embed such an IPv4 address (mapped, compatible, NAT64,
//! 6to4) — unless the operator listed the URL's host in `allow_hosts` (an internal picture
//! server). Host names are resolved and every address checked:
//! - [`AddressGuard::check_url`]: scheme and literal-IP hosts, synchronous (redirects).
//! - [`AddressGuard::check_resolved`]: also resolves names; refuses if ANY address is blocked
//!   (before a URL is handed to a OneBot implementation, which resolves it again itself).
//! - [`GuardedResolver`]: the resolver of the fetcher's HTTP client, which drops blocked
//!   addresses, so the fetcher connects only to addresses it checked (no DNS-rebinding gap
//!   between a check and the connection).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// How long [`AddressGuard::check_resolved`] waits for the system resolver before refusing.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the guard refused a URL. Its text names the host and the address, never the path or
/// query (QQ URLs carry keys there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// Not a URL at all.
    #[error("not a valid URL")]
    NotUrl,
    /// A scheme other than http and https (`file:`, `ftp:`, `gopher:`, …).
    #[error("scheme {0:?} is neither http nor https")]
    Scheme(String),
    /// A URL without a host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves to, an address that is not public.
    #[error("{host} is a {range} address ({ip})")]
    Address {
        /// The URL's host as written (a name or an IP literal).
        host: String,
        /// The offending address.
        ip: IpAddr,
        /// The range it falls in (`loopback`, `private`, …), for logs.
        range: &'static str,
    },
    /// The host name does not resolve (in time): nothing could be checked.
    #[error("{host} does not resolve")]
    Unresolved {
        /// The host name.
        host: String,
    },
}

/// The range a non-public address falls in, or `None` for an address the guard lets through.
/// IPv6 addresses that embed an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) are judged by that IPv4
/// address.
pub fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

/// [`blocked_range`] for IPv4.
fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        (192, 0, 0) => "reserved",
        (198, 18..=19, _) => "benchmarking",
        _ => return None,
    };
    Some(range)
}

/// [`blocked_range`] for IPv6.
fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judged by it.
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    let v4 = match segments {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff, high, low] | [0, 0, 0, 0, 0, 0, high, low] => {
            Some(embedded(high, low))
        }
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix).
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(embedded(high, low)),
        // 2002:aabb:ccdd::/48 (6to4).
        [0x2002, high, low, ..] => Some(embedded(high, low)),
        _ => None,
    };
    if let Some(v4) = v4 {
        return blocked_v4(v4);
    }
    let first = segments[0];
    let range = if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xffc0 == 0xfec0 {
        "site-local"
    } else if first & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if first & 0xff00 == 0xff00 {
        "multicast"
    } else {
        return None;
    };
    Some(range)
}

/// A host as the allow list compares it: lower case, without IPv6 brackets or a trailing dot.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The hosts the operator allowed, as names and as parsed addresses.
#[derive(Debug, Default)]
struct AllowList {
    /// Normalized host names and IP literals, as written.
    names: HashSet<String>,
    /// The entries that are IP literals, so `::1` also matches `0:0::1`.
    ips: HashSet<IpAddr>,
}

/// Refuses URLs whose host is not a public address unless the operator allowed that host.
/// Cheap to clone (the allow list is shared).
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    /// `allow_hosts` from the config.
    allow: Arc<AllowList>,
}

impl AddressGuard {
    /// A guard that lets through, in addition to public addresses, the hosts in
    /// `allow_hosts`: host names or IP literals (`[::1]` or `::1`), matched exactly and
    /// case-insensitively against a URL's host (an allowed name lets its addresses through
    /// whatever they are; an allowed address does not allow the names that resolve to it).
    pub fn new(allow_hosts: Vec<String>) -> AddressGuard {
        let mut allow = AllowList::default();
        for host in allow_hosts {
            let host = normalize(&host);
            if host.is_empty() {
                continue;
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                allow.ips.insert(ip);
            }
            allow.names.insert(host);
        }
        AddressGuard {
            allow: Arc::new(allow),
        }
    }

    /// Whether `host` (a name or an IP literal, as in a URL) is on the allow list.
    pub fn is_allowed(&self, host: &str) -> bool {
        let host = normalize(host);
        if self.allow.names.contains(&host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => self.allow.ips.contains(&ip),
            Err(_) => false,
        }
    }

    /// Checks what can be checked without resolving: the scheme, and the address when the
    /// host is an IP literal. Host names pass (see [`AddressGuard::check_resolved`] and
    /// [`GuardedResolver`]).
    ///
    /// # Errors
    /// [`Blocked`] saying why.
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Blocked::Scheme(other.to_owned())),
        }
        let host = url.host().ok_or(Blocked::NoHost)?;
        let ip = match host {
            Host::Domain(name) => {
                // A non-special scheme would keep `[::1]`-like text as a name; http(s) URLs
                // parse IP literals into addresses, but a name that is an address is one.
                match normalize(name).parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return Ok(()),
                }
            }
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
        };
        let written = url.host_str().unwrap_or_default();
        self.check_addr(written, ip)
    }

    /// [`AddressGuard::check_url`], then resolves a host name and refuses the URL if ANY of
    /// its addresses is blocked (or it does not resolve within [`RESOLVE_TIMEOUT`]), unless
    /// the host is allowed. For URLs handed to another program that resolves them itself.
    ///
    /// # Errors
    /// [`Blocked`] saying why.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), Blocked> {
        self.check_url(url)?;
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        if self.is_allowed(name) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let unresolved = || Blocked::Unresolved {
            host: name.to_owned(),
        };
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| unresolved())?
                .map_err(|_| unresolved())?
                .collect();
        if addrs.is_empty() {
            return Err(unresolved());
        }
        for addr in addrs {
            self.check_addr(name, addr.ip())?;
        }
        Ok(())
    }

    /// Checks one address that `host` stands for: refused when it is not public and `host`
    /// is not allowed.
    ///
    /// # Errors
    /// [`Blocked::Address`].
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        match blocked_range(ip) {
            Some(range) if !self.is_allowed(host) => Err(Blocked::Address {
                host: host.to_owned(),
                ip,
                range,
            }),
            _ => Ok(()),
        }
    }

    /// The resolver for an HTTP client that must only connect to addresses this guard lets
    /// through.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            guard: self.clone(),
        })
    }
}

/// A [`reqwest`] resolver that resolves names with the system resolver and drops the
/// addresses the guard blocks; it fails when none is left (unless the host is allowed, then
/// every address is kept). Literal IP hosts never reach a resolver: check them with
/// [`AddressGuard::check_url`] (the fetcher does, for every redirect too).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    /// The guard whose rules apply.
    guard: AddressGuard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if guard.is_allowed(&host) {
                if resolved.is_empty() {
                    return Err(Box::new(Blocked::Unresolved { host }) as _);
                }
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let mut refusal = None;
            let kept: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match guard.check_addr(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        refusal.get_or_insert(blocked);
                        false
                    }
                })
                .collect();
            if kept.is_empty() {
                let blocked = refusal.unwrap_or(Blocked::Unresolved { host });
                return Err(Box::new(blocked) as _);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn the_address_table() {
        let blocked = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.255", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456:789a::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "multicast"),
            // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of blocked IPv4 addresses.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:172.16.0.1", "private"),
            ("::ffff:192.168.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:100.64.0.1", "shared (CGNAT)"),
            ("::ffff:224.0.0.1", "multicast"),
            ("::ffff:255.255.255.255", "broadcast"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::169.254.1.1", "link-local"),
            ("::192.168.0.1", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ];
        for (ip, range) in blocked {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(blocked_range(parsed), Some(range), "{ip}");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2400:3200::1",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::",
            "fe7f::1",
            "fbff::1",
        ];
        for ip in public {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(blocked_range(parsed), None, "{ip}");
        }
    }

    #[test]
    fn urls_with_literal_addresses_and_other_schemes_are_refused() {
        let guard = AddressGuard::new(Vec::new());
        for text in [
            "http://127.0.0.1/x.png",
            "http://127.0.0.1:8080/x.png?key=secret",
            "https://10.0.0.1/",
            "http://[::1]:5700/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://100.100.100.200/",
        ] {
            assert!(
                matches!(guard.check_url(&url(text)), Err(Blocked::Address { .. })),
                "{text}"
            );
        }
        for (text, scheme) in [
            ("file:///etc/passwd", "file"),
            ("ftp://example.com/x.png", "ftp"),
            ("gopher://example.com/", "gopher"),
            ("data:image/png;base64,AAAA", "data"),
        ] {
            assert_eq!(
                guard.check_url(&url(text)),
                Err(Blocked::Scheme(scheme.into())),
                "{text}"
            );
        }
        for text in [
            "https://multimedia.nt.qq.com.cn/download?appid=1407&rkey=abc",
            "http://1.1.1.1/x.png",
            "https://[2001:4860:4860::8888]/",
            "http://localhost/",
        ] {
            assert_eq!(guard.check_url(&url(text)), Ok(()), "{text}");
        }
    }

    #[test]
    fn allowed_hosts_pass_exactly_and_case_insensitively() {
        let guard = AddressGuard::new(vec![
            "Pictures.Internal".into(),
            "10.1.2.3".into(),
            "[::1]".into(),
            "".into(),
        ]);
        for text in [
            "http://pictures.internal/x.png",
            "http://PICTURES.internal:8080/x.png",
            "http://10.1.2.3/x.png",
            "http://[0:0::1]:8080/x.png",
        ] {
            assert_eq!(guard.check_url(&url(text)), Ok(()), "{text}");
        }
        assert!(guard.is_allowed("pictures.internal."));
        assert!(!guard.is_allowed("evil.pictures.internal"));
        assert!(!guard.is_allowed("pictures.internal.evil"));
        assert!(!guard.is_allowed(""));
        for text in ["http://10.1.2.4/", "http://127.0.0.1/", "ftp://10.1.2.3/"] {
            assert!(guard.check_url(&url(text)).is_err(), "{text}");
        }
        // An allowed address does not allow a name that resolves to it: names are checked
        // by their addresses.
        assert_eq!(
            guard.check_addr("sneaky.example", "10.1.2.3".parse().expect("ip")),
            Err(Blocked::Address {
                host: "sneaky.example".into(),
                ip: "10.1.2.3".parse().expect("ip"),
                range: "private"
            })
        );
        assert_eq!(
            guard.check_addr("pictures.internal", "10.9.9.9".parse().expect("ip")),
            Ok(())
        );
    }

    #[test]
    fn a_refusal_names_the_host_but_not_the_path_or_query() {
        let guard = AddressGuard::new(Vec::new());
        let refusal = guard
            .check_url(&url("http://127.0.0.1:9/download?rkey=SECRET"))
            .expect_err("blocked");
        let text = refusal.to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(
            !text.contains("SECRET") && !text.contains("download"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn names_are_resolved_and_refused_when_any_address_is_blocked() {
        let guard = AddressGuard::new(Vec::new());
        assert!(matches!(
            guard
                .check_resolved(&url("http://localhost:8080/x.png"))
                .await,
            Err(Blocked::Address {
                range: "loopback",
                ..
            })
        ));
        assert!(matches!(
            guard.check_resolved(&url("http://127.0.0.1/")).await,
            Err(Blocked::Address { .. })
        ));
        assert!(matches!(
            guard
                .check_resolved(&url("http://no-such-host.invalid/"))
                .await,
            Err(Blocked::Unresolved { .. })
        ));
        // Allowed by name: not resolved at all.
        let allowing = AddressGuard::new(vec!["localhost".into()]);
        assert_eq!(
            allowing
                .check_resolved(&url("http://localhost:8080/x.png"))
                .await,
            Ok(())
        );
        // Allowing the address does not allow the name.
        let by_address = AddressGuard::new(vec!["127.0.0.1".into(), "::1".into()]);
        assert!(by_address
            .check_resolved(&url("http://localhost:8080/"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses() {
        let guard = AddressGuard::new(Vec::new());
        let name: Name = "localhost".parse().expect("a name");
        let refusal = match guard.resolver().resolve(name).await {
            Ok(_) => panic!("localhost resolved through the guard"),
            Err(error) => error,
        };
        assert!(
            matches!(
                refusal.downcast_ref::<Blocked>(),
                Some(Blocked::Address { .. })
            ),
            "{refusal}"
        );
        let allowing = AddressGuard::new(vec!["LOCALHOST".into()]);
        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = allowing
            .resolver()
            .resolve(name)
            .await
            .expect("allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
