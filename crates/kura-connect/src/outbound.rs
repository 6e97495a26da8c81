//! Outbound HTTP for `http` steps, safe against server-side request forgery.
//!
//! Names are resolved here, every address is checked (loopback, private,
//! link-local, unique-local, multicast, CGNAT, unspecified and the cloud
//! metadata address are refused unless the operator's allow-list holds
//! them), and the request is pinned to the checked address, so a DNS answer
//! that changes between check and connect (rebinding) cannot redirect it.
//! Redirects are not followed automatically: each hop is checked again.
//! Responses are cut at a size limit and every request has a time limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 5;

/// The operator's outbound policy.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Ranges allowed even though they are internal.
    pub allow: Vec<IpNet>,
    /// The largest response body read, in bytes.
    pub max_response_bytes: usize,
    /// The time limit when a step sets none.
    pub default_timeout: Duration,
    /// Clients pinned to checked addresses, kept for reuse.
    pub clients: PinnedClients,
}

/// HTTP clients by (host, checked address): each is pinned to the address
/// that passed the policy, so reusing it for the same pair keeps its
/// connections and TLS set-up without widening what it may reach (a name
/// that resolves elsewhere gets a client of its own, after its own check).
#[derive(Debug, Clone, Default)]
pub struct PinnedClients {
    map: std::sync::Arc<
        parking_lot::Mutex<std::collections::HashMap<(String, SocketAddr), reqwest::Client>>,
    >,
}

impl PinnedClients {
    /// The most pairs kept; past it the cache starts over.
    const MAX: usize = 256;

    fn get(&self, host: &str, addr: SocketAddr) -> Result<reqwest::Client, OutboundError> {
        let key = (host.to_owned(), addr);
        if let Some(c) = self.map.lock().get(&key) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve(host, addr)
            .build()
            .map_err(|e| OutboundError::Failed(e.to_string()))?;
        let mut map = self.map.lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, client.clone());
        Ok(client)
    }
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_response_bytes: 1024 * 1024,
            default_timeout: Duration::from_secs(10),
            clients: PinnedClients::default(),
        }
    }
}

/// Why a call did not happen or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The SSRF policy refused the target.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else (DNS, connection, time limit, size limit).
    #[error("{0}")]
    Failed(String),
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The method.
    pub method: reqwest::Method,
    /// The URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body and its media type.
    pub body: Option<(Vec<u8>, String)>,
    /// The time limit.
    pub timeout: Option<Duration>,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// The status.
    pub status: u16,
    /// Headers (the last hop's).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why an address is internal, or `None` for a public one.
pub fn internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (fc00::/7)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64: judge the IPv4 address inside.
                let v4 = Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    (s[6] & 0xff) as u8,
                    (s[7] >> 8) as u8,
                    (s[7] & 0xff) as u8,
                );
                v4_reason(v4)
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if o == [169, 254, 169, 254] {
        Some("the cloud metadata address")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if o[0] == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared address space (100.64.0.0/10)")
    } else if o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

impl OutboundPolicy {
    /// Refuses an address the policy does not let out.
    pub fn check(&self, ip: IpAddr) -> Result<(), OutboundError> {
        match internal_reason(ip) {
            Some(_) if self.allow.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(reason) => Err(OutboundError::Refused(format!(
                "{ip} is {reason}; outbound calls to internal addresses are refused unless the operator allow-lists them"
            ))),
            None => Ok(()),
        }
    }

    /// Resolves a host name (or takes an address) for a non-HTTP protocol
    /// (SMTP) and checks every address; returns the one to connect to.
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<SocketAddr, OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check(ip)?;
            return Ok(SocketAddr::new(ip, port));
        }
        if bare.is_empty() {
            return Err(OutboundError::Failed("no host".into()));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Failed(format!("cannot resolve {bare}: {e}")))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| OutboundError::Failed(format!("{bare} has no address")))?;
        for a in &addrs {
            self.check(a.ip())?;
        }
        Ok(first)
    }

    /// Resolves `url`'s host and checks every address; returns the one to
    /// connect to.
    async fn resolve(&self, url: &reqwest::Url) -> Result<(String, SocketAddr), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Refused(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| OutboundError::Failed("the URL has no port".into()))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => {
                self.check(IpAddr::V4(ip))?;
                return Ok((ip.to_string(), SocketAddr::new(IpAddr::V4(ip), port)));
            }
            Some(url::Host::Ipv6(ip)) => {
                self.check(IpAddr::V6(ip))?;
                return Ok((ip.to_string(), SocketAddr::new(IpAddr::V6(ip), port)));
            }
            None => return Err(OutboundError::Failed("the URL has no host".into())),
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| OutboundError::Failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| OutboundError::Failed(format!("{host} has no address")))?;
        // Every address must pass, so the answer cannot smuggle in an
        // internal one behind a public one.
        for a in &addrs {
            self.check(a.ip())?;
        }
        Ok((host, first))
    }

    /// Sends a request, checking the target and every redirect hop.
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let mut url = reqwest::Url::parse(&req.url)
            .map_err(|e| OutboundError::Failed(format!("not a URL: {e}")))?;
        let timeout = req.timeout.unwrap_or(self.default_timeout);
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (host, addr) = self.resolve(&url).await?;
            let client = self.clients.get(&host, addr)?;
            let mut rb = client.request(method.clone(), url.clone()).timeout(timeout);
            for (k, v) in &req.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if let Some((bytes, ct)) = &body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, ct.as_str())
                    .body(bytes.clone());
            }
            let mut resp = rb
                .send()
                .await
                .map_err(|e| OutboundError::Failed(format!("request failed: {e}")))?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(loc) = resp.headers().get(reqwest::header::LOCATION)
            {
                let loc = loc
                    .to_str()
                    .map_err(|_| OutboundError::Failed("a redirect to a bad location".into()))?;
                url = url
                    .join(loc)
                    .map_err(|e| OutboundError::Failed(format!("bad redirect: {e}")))?;
                if status == reqwest::StatusCode::SEE_OTHER
                    || ((status == reqwest::StatusCode::MOVED_PERMANENTLY
                        || status == reqwest::StatusCode::FOUND)
                        && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                continue;
            }
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            let mut out = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| OutboundError::Failed(format!("reading the response: {e}")))?
            {
                if out.len() + chunk.len() > self.max_response_bytes {
                    return Err(OutboundError::Failed(format!(
                        "the response is larger than {} bytes",
                        self.max_response_bytes
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            return Ok(OutboundResponse {
                status: status.as_u16(),
                headers,
                body: out,
            });
        }
        Err(OutboundError::Failed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let p = OutboundPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                matches!(p.check(ip), Err(OutboundError::Refused(_))),
                "{ip}"
            );
        }
        for ip in ["93.184.215.14", "2606:4700::1111"] {
            p.check(ip.parse().unwrap()).unwrap();
        }
        let allowed = OutboundPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..OutboundPolicy::default()
        };
        allowed.check("127.0.0.1".parse().unwrap()).unwrap();
        assert!(allowed.check("169.254.169.254".parse().unwrap()).is_err());
    }
}
