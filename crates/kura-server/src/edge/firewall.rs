//! The network firewall: allow and deny lists of CIDR ranges per scope, and
//! which client address a request really comes from.
//!
//! A scope's lists decide on their own: deny wins over allow, and an empty
//! allow list allows every address not denied. A request passes only when
//! every scope that applies to it (the platform, then its team, then its
//! host) lets it through. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are
//! judged as the IPv4 address they carry, so a dual-stack listener cannot be
//! used to slip past an IPv4 rule.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The most ranges one list may hold.
pub const MAX_RANGES: usize = 1000;

/// Why a firewall policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// An entry is not a CIDR range or address.
    #[error(
        "`{entry}` in {list} is not an IPv4 or IPv6 address or CIDR range (such as 203.0.113.0/24 or 2001:db8::/32)"
    )]
    InvalidRange {
        /// `allow` or `deny`.
        list: &'static str,
        /// The entry, shortened.
        entry: String,
    },
    /// A range has host bits set (`10.0.0.1/8`), which usually means a typo.
    #[error("`{entry}` in {list} has host bits set; did you mean {suggestion}?")]
    HostBits {
        /// `allow` or `deny`.
        list: &'static str,
        /// The entry.
        entry: String,
        /// The network it probably meant.
        suggestion: String,
    },
    /// The same range appears twice in one list.
    #[error("`{entry}` appears twice in {list}")]
    Duplicate {
        /// `allow` or `deny`.
        list: &'static str,
        /// The entry.
        entry: String,
    },
    /// An allowed range is entirely inside a denied one, so it can never
    /// allow anything: the policy contradicts itself.
    #[error(
        "allow entry `{allow}` lies entirely inside deny entry `{deny}`, so it would never allow anything; remove one of them"
    )]
    Contradiction {
        /// The allow entry.
        allow: String,
        /// The deny entry covering it.
        deny: String,
    },
    /// A list is too long.
    #[error("{list} holds {count} ranges; at most {MAX_RANGES} are allowed")]
    TooMany {
        /// `allow` or `deny`.
        list: &'static str,
        /// How many.
        count: usize,
    },
}

/// One scope's lists, as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallPolicy {
    /// Ranges allowed in; empty allows every address that is not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Ranges refused; deny wins over allow.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// One scope's lists, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// Parses one list entry: a CIDR range or a single address.
pub fn parse_range(list: &'static str, entry: &str) -> Result<IpNet, FirewallError> {
    let entry = entry.trim();
    let invalid = || FirewallError::InvalidRange {
        list,
        entry: entry.chars().take(64).collect(),
    };
    let net = if entry.contains('/') {
        entry.parse::<IpNet>().map_err(|_| invalid())?
    } else {
        IpNet::from(entry.parse::<IpAddr>().map_err(|_| invalid())?)
    };
    if net.trunc() != net {
        return Err(FirewallError::HostBits {
            list,
            entry: entry.to_owned(),
            suggestion: net.trunc().to_string(),
        });
    }
    Ok(canonical_net(net))
}

/// An IPv4-mapped IPv6 range becomes the IPv4 range it maps.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

/// The address a rule judges: IPv4-mapped IPv6 is treated as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn parse_list(list: &'static str, entries: &[String]) -> Result<Vec<IpNet>, FirewallError> {
    if entries.len() > MAX_RANGES {
        return Err(FirewallError::TooMany {
            list,
            count: entries.len(),
        });
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(entries.len());
    for entry in entries {
        let net = parse_range(list, entry)?;
        if out.contains(&net) {
            return Err(FirewallError::Duplicate {
                list,
                entry: net.to_string(),
            });
        }
        out.push(net);
    }
    Ok(out)
}

impl FirewallRules {
    /// Checks a policy: every entry parses, no duplicates, and no allow
    /// entry is swallowed by a deny entry.
    pub fn parse(policy: &FirewallPolicy) -> Result<Self, FirewallError> {
        let allow = parse_list("allow", &policy.allow)?;
        let deny = parse_list("deny", &policy.deny)?;
        for a in &allow {
            if let Some(d) = deny.iter().find(|d| d.contains(a)) {
                return Err(FirewallError::Contradiction {
                    allow: a.to_string(),
                    deny: d.to_string(),
                });
            }
        }
        Ok(Self { allow, deny })
    }

    /// The policy these rules came from, normalised.
    pub fn to_policy(&self) -> FirewallPolicy {
        FirewallPolicy {
            allow: self.allow.iter().map(ToString::to_string).collect(),
            deny: self.deny.iter().map(ToString::to_string).collect(),
        }
    }

    /// Whether the rules say nothing.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether there is an allow list.
    pub fn has_allow_list(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Whether `ip` may pass; `None` (an unknown address) passes only when
    /// the scope restricts nothing by address.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(canonical_ip) else {
            return self.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Trusted reverse proxies: only connections from these ranges may say, in
/// `Forwarded` or `X-Forwarded-For`, whom they forward for.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses the configured ranges.
    pub fn parse(entries: &[String]) -> Result<Self, FirewallError> {
        Ok(Self {
            ranges: parse_list("trusted proxies", entries)?,
        })
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn client_is_proxy(&self, ip: IpAddr) -> bool {
        self.trusts(ip)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.ranges.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer itself unless the peer is a trusted
    /// proxy, in which case the forwarding chain is walked from the nearest
    /// hop back and the first address that is not a trusted proxy is the
    /// client. `forwarded` is the `Forwarded` header values, `xff` the
    /// `X-Forwarded-For` ones (used only when there is no `Forwarded`). A
    /// malformed chain from a trusted proxy yields the proxy itself.
    pub fn client_ip(&self, peer: IpAddr, forwarded: &[&str], xff: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return canonical_ip(peer);
        }
        let hops: Option<Vec<IpAddr>> = if forwarded.is_empty() {
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(|h| parse_hop(h.trim()))
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .map(|element| {
                    element
                        .split(';')
                        .filter_map(|pair| pair.trim().split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                        .and_then(|(_, v)| parse_hop(v.trim().trim_matches('"')))
                })
                .collect()
        };
        let Some(hops) = hops else {
            return canonical_ip(peer);
        };
        for hop in hops.iter().rev() {
            if !self.trusts(*hop) {
                return canonical_ip(*hop);
            }
        }
        hops.first()
            .copied()
            .map_or(canonical_ip(peer), canonical_ip)
    }
}

/// One hop: `203.0.113.7`, `[2001:db8::1]`, `[2001:db8::1]:443` or
/// `203.0.113.7:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.rsplit_once(':')
        .and_then(|(ip, port)| port.parse::<u16>().ok().and(ip.parse::<IpAddr>().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Result<FirewallRules, FirewallError> {
        FirewallRules::parse(&FirewallPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_all() {
        let r = rules(&[], &["203.0.113.0/24"]).unwrap();
        assert!(!r.permits(ip("203.0.113.9")));
        assert!(r.permits(ip("198.51.100.1")));
        let r = rules(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"]).unwrap();
        assert!(r.permits(ip("10.1.2.3")));
        assert!(!r.permits(ip("10.9.2.3")), "deny wins over allow");
        assert!(!r.permits(ip("192.0.2.1")), "outside the allow list");
        assert!(r.permits(ip("2001:db8::5")));
        assert!(!r.permits(ip("2001:db9::5")));
        assert!(!r.permits(None), "unknown address with an allow list");
        assert!(rules(&[], &[]).unwrap().permits(None));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_as_ipv4() {
        let r = rules(&[], &["192.0.2.0/24"]).unwrap();
        assert!(!r.permits(ip("::ffff:192.0.2.7")));
        let r = rules(&["::ffff:192.0.2.0/120"], &[]).unwrap();
        assert!(r.permits(ip("192.0.2.7")));
        assert_eq!(r.to_policy().allow, vec!["192.0.2.0/24"]);
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        let e = rules(&["10.0.0.0/33"], &[]).unwrap_err();
        assert!(matches!(e, FirewallError::InvalidRange { .. }), "{e}");
        let e = rules(&["not-an-ip"], &[]).unwrap_err();
        assert!(e.to_string().contains("not-an-ip"), "{e}");
        let e = rules(&["10.0.0.1/8"], &[]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
        let e = rules(&["10.1.0.0/16"], &["10.0.0.0/8"]).unwrap_err();
        assert!(matches!(e, FirewallError::Contradiction { .. }), "{e}");
        let e = rules(&["10.0.0.0/8"], &["10.0.0.0/8"]).unwrap_err();
        assert!(matches!(e, FirewallError::Contradiction { .. }), "{e}");
        let e = rules(&["10.0.0.0/8", "10.0.0.0/8"], &[]).unwrap_err();
        assert!(matches!(e, FirewallError::Duplicate { .. }), "{e}");
        // A deny carved out of a wider allow is fine.
        assert!(rules(&["10.0.0.0/8"], &["10.1.0.0/16"]).is_ok());
        let many: Vec<String> = (0..=MAX_RANGES)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let e = FirewallRules::parse(&FirewallPolicy {
            allow: many,
            deny: vec![],
        })
        .unwrap_err();
        assert!(matches!(e, FirewallError::TooMany { .. }), "{e}");
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(
            t.client_ip(stranger, &[], &["203.0.113.1"]),
            stranger,
            "an untrusted peer cannot claim another address"
        );
        assert_eq!(
            t.client_ip(proxy, &[], &["203.0.113.1, 10.0.0.7"]),
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            "trusted hops are skipped from the right"
        );
        assert_eq!(
            t.client_ip(proxy, &[], &["6.6.6.6, 203.0.113.1"]),
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            "a client-supplied left-most entry is not believed"
        );
        assert_eq!(
            t.client_ip(
                proxy,
                &["for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3"],
                &["6.6.6.6"]
            ),
            "2001:db8::1".parse::<IpAddr>().unwrap(),
            "Forwarded takes precedence over X-Forwarded-For"
        );
        assert_eq!(t.client_ip(proxy, &[], &["garbage"]), proxy);
        assert_eq!(t.client_ip(proxy, &[], &[]), proxy);
    }
}
