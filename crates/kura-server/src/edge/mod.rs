//! The edge: everything a request passes before any handler sees it.
//!
//! In order: the network firewall ([`firewall`]; the platform lists are
//! also applied to connections before the TLS handshake), rate limits
//! ([`ratelimit`]), and the WAF ([`waf`]). Policies are state, kept in the
//! platform database through [`kura_store::edge::EdgeStore`]; this module
//! holds the parsed snapshot every request reads, replaced whole when a
//! policy changes (here or, every few seconds, on another node).
//! Refusals become security events through the aggregating [`report`].

pub mod firewall;
pub mod layer;
pub mod ratelimit;
pub mod report;
pub mod waf;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use kura_events::EventSink;
use kura_store::StoreError;
use kura_store::edge::{EdgeHost, EdgePolicyRecord, EdgePolicyWrite, EdgeStore};
use kura_store::events::EventRecord;
use kura_types::{Clock, HostId, TeamId};
use parking_lot::RwLock;

use firewall::{FirewallPolicy, FirewallRules, TrustedProxies};
use ratelimit::{RateLimitPolicy, RateLimits};
use waf::{Mode, Modes, RuleId, Waf, WafPolicy};

/// Where a policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every request.
    Platform,
    /// Requests about one team.
    Team(TeamId),
    /// Requests to one host.
    Host(HostId),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Team(t) => write!(f, "team:{t}"),
            Self::Host(h) => write!(f, "host:{h}"),
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "platform" {
            return Ok(Self::Platform);
        }
        if let Some(id) = s.strip_prefix("team:") {
            return id.parse().map(Self::Team).map_err(|e| e.to_string());
        }
        if let Some(id) = s.strip_prefix("host:") {
            return id.parse().map(Self::Host).map_err(|e| e.to_string());
        }
        Err(format!("`{s}` is not an edge scope"))
    }
}

/// The kinds of edge policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Allow and deny lists.
    Firewall,
    /// Budgets (platform scope only).
    RateLimits,
    /// WAF rule modes.
    Waf,
}

impl Kind {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firewall => "firewall",
            Self::RateLimits => "rate_limits",
            Self::Waf => "waf",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "firewall" => Some(Self::Firewall),
            "rate_limits" => Some(Self::RateLimits),
            "waf" => Some(Self::Waf),
            _ => None,
        }
    }
}

/// What a request is about, for the team and host scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    /// The team named in the path.
    pub team: Option<TeamId>,
    /// The host named in the path.
    pub host: Option<HostId>,
    /// Whether the path is the FileMaker Data API (refusals then answer
    /// in FileMaker's envelope).
    pub data_api: bool,
}

impl Target {
    /// Reads the team and host from a path: `/api/v1/teams/{team}/…` and
    /// `…/hosts/{host}/…`, where the host is an id (admin API) or a name
    /// (the Data API's `/hosts/{name}/fmi/…`). A name is looked up in
    /// `hosts` (lower-case name → host and team); a host found by name
    /// also brings its team, so the team's lists apply to its hosts.
    pub fn of(path: &str, hosts: &HashMap<String, (HostId, TeamId)>) -> Self {
        let mut t = Self {
            data_api: ratelimit::is_data_api(path),
            ..Self::default()
        };
        let mut segments = path.split('/');
        let mut named_team = None;
        while let Some(s) = segments.next() {
            match s {
                "teams" if t.team.is_none() => {
                    t.team = segments.next().and_then(|id| id.parse().ok())
                }
                "hosts" if t.host.is_none() => {
                    let Some(segment) = segments.next() else {
                        break;
                    };
                    // The admin API names hosts by id, everything else
                    // (the Data API) by name; a host named like an id
                    // must not borrow another host's scope.
                    if path.starts_with("/api/") {
                        t.host = segment.parse().ok();
                    } else if let Some((id, team)) = hosts.get(&segment.to_ascii_lowercase()) {
                        t.host = Some(*id);
                        named_team = Some(*team);
                    }
                }
                _ => {}
            }
        }
        if t.team.is_none() {
            t.team = named_team;
        }
        t
    }
}

/// The parsed policies every request reads.
#[derive(Debug)]
pub struct Snapshot {
    firewall: HashMap<Scope, FirewallRules>,
    waf: HashMap<Scope, Vec<(RuleId, Mode)>>,
    rates: Arc<RateLimits>,
    records: HashMap<(Scope, Kind), EdgePolicyRecord>,
    hosts: HashMap<String, (HostId, TeamId)>,
}

impl Snapshot {
    /// What a request path is about, host names resolved.
    pub fn target(&self, path: &str) -> Target {
        Target::of(path, &self.hosts)
    }

    /// The host a name denotes, with its team (names compare without case).
    pub fn host_named(&self, name: &str) -> Option<(HostId, TeamId)> {
        self.hosts.get(&name.to_ascii_lowercase()).copied()
    }

    /// Whether `ip` passes the platform lists (the check made before TLS).
    pub fn platform_permits(&self, ip: IpAddr) -> bool {
        self.firewall
            .get(&Scope::Platform)
            .is_none_or(|r| r.permits(Some(ip)))
    }

    /// The first scope whose lists refuse `ip` for `target`, if any.
    pub fn refusing_scope(&self, ip: Option<IpAddr>, target: Target) -> Option<Scope> {
        let scopes = [
            Some(Scope::Platform),
            target.team.map(Scope::Team),
            target.host.map(Scope::Host),
        ];
        scopes
            .into_iter()
            .flatten()
            .find(|s| self.firewall.get(s).is_some_and(|r| !r.permits(ip)))
    }

    /// The WAF modes for `target`: platform, then team, then host.
    pub fn modes(&self, target: Target) -> Modes {
        let mut modes = Modes::default();
        for scope in [
            Some(Scope::Platform),
            target.team.map(Scope::Team),
            target.host.map(Scope::Host),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(overrides) = self.waf.get(&scope) {
                modes.apply(overrides);
            }
        }
        modes
    }

    /// The rate limiters.
    pub fn rates(&self) -> &Arc<RateLimits> {
        &self.rates
    }

    /// The stored policy of one kind at one scope.
    pub fn record(&self, scope: Scope, kind: Kind) -> Option<&EdgePolicyRecord> {
        self.records.get(&(scope, kind))
    }

    /// Whether the platform has an allow list.
    pub fn platform_allow_list(&self) -> bool {
        self.firewall
            .get(&Scope::Platform)
            .is_some_and(FirewallRules::has_allow_list)
    }
}

/// Why the edge cannot start or a policy change failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored policy no longer parses (it was valid when written).
    #[error("stored edge policy {scope} {kind} is unusable: {detail}")]
    Stored {
        /// Its scope.
        scope: String,
        /// Its kind.
        kind: String,
        /// Why.
        detail: String,
    },
    /// The WAF signatures do not compile.
    #[error("WAF signatures do not compile: {0}")]
    Signatures(String),
    /// A configured trusted-proxy range is invalid.
    #[error("edge.trusted_proxies: {0}")]
    Proxies(String),
}

/// One policy change.
#[derive(Debug)]
pub struct Change {
    /// Where it applies.
    pub scope: Scope,
    /// Which policy.
    pub kind: Kind,
    /// The validated policy as JSON, or `None` to remove it.
    pub body: Option<String>,
    /// The version it was decided on (0: none was stored).
    pub expected_version: u64,
    /// Who, as an actor key.
    pub by: String,
    /// When.
    pub at: time::OffsetDateTime,
    /// The security events describing it, committed with it.
    pub events: Vec<EventRecord>,
}

/// Route-family body limits the edge buffers up to before inspecting.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Sign-in requests.
    pub sign_in: usize,
    /// Everything else.
    pub other: usize,
}

/// The edge's state, shared by the listener and the middleware.
pub struct Edge {
    snapshot: RwLock<Arc<Snapshot>>,
    store: Arc<dyn EdgeStore>,
    waf: Waf,
    proxies: TrustedProxies,
    reporter: report::Reporter,
    body_limits: BodyLimits,
    enabled: bool,
}

impl fmt::Debug for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edge")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn build(
    records: Vec<EdgePolicyRecord>,
    hosts: Vec<EdgeHost>,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, EdgeError> {
    let mut firewall = HashMap::new();
    let mut waf = HashMap::new();
    let mut rate_policy = RateLimitPolicy::default();
    let mut by_key = HashMap::new();
    for record in records {
        let unusable = |detail: String| EdgeError::Stored {
            scope: record.scope.clone(),
            kind: record.kind.clone(),
            detail,
        };
        let scope: Scope = record.scope.parse().map_err(unusable)?;
        let kind = Kind::parse(&record.kind).ok_or_else(|| unusable("unknown kind".into()))?;
        match kind {
            Kind::Firewall => {
                let policy: FirewallPolicy =
                    serde_json::from_str(&record.body).map_err(|e| unusable(e.to_string()))?;
                firewall.insert(
                    scope,
                    FirewallRules::parse(&policy).map_err(|e| unusable(e.to_string()))?,
                );
            }
            Kind::Waf => {
                let policy: WafPolicy =
                    serde_json::from_str(&record.body).map_err(|e| unusable(e.to_string()))?;
                waf.insert(
                    scope,
                    policy
                        .modes(scope != Scope::Platform)
                        .map_err(|e| unusable(e.to_string()))?,
                );
            }
            Kind::RateLimits => {
                let policy: RateLimitPolicy =
                    serde_json::from_str(&record.body).map_err(|e| unusable(e.to_string()))?;
                policy.validate().map_err(|e| unusable(e.to_string()))?;
                rate_policy = policy;
            }
        }
        by_key.insert((scope, kind), record);
    }
    // Limiters keep their buckets unless the budgets changed.
    let rates = match previous {
        Some(p) if *p.rates.policy() == rate_policy => Arc::clone(&p.rates),
        _ => Arc::new(RateLimits::new(rate_policy)),
    };
    Ok(Snapshot {
        firewall,
        waf,
        rates,
        records: by_key,
        hosts: hosts
            .into_iter()
            .map(|h| (h.name.to_ascii_lowercase(), (h.id, h.team)))
            .collect(),
    })
}

impl Edge {
    /// Loads the stored policies. `enabled: false` builds an edge that lets
    /// everything through (benchmarks compare against it).
    pub async fn open(
        store: Arc<dyn EdgeStore>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        trusted_proxies: &[String],
        body_limits: BodyLimits,
        enabled: bool,
    ) -> Result<Self, EdgeError> {
        let snapshot = build(store.policies().await?, store.hosts().await?, None)?;
        Ok(Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            store,
            waf: Waf::new(waf::Limits::default())
                .map_err(|e| EdgeError::Signatures(e.to_string()))?,
            proxies: TrustedProxies::parse(trusted_proxies)
                .map_err(|e| EdgeError::Proxies(e.to_string()))?,
            reporter: report::Reporter::new(events, clock),
            body_limits,
            enabled,
        })
    }

    /// The policies in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read())
    }

    /// Whether the edge inspects anything.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Trusted proxies.
    pub fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    /// The WAF engine.
    pub fn waf(&self) -> &Waf {
        &self.waf
    }

    /// The refusal aggregator.
    pub fn reporter(&self) -> &report::Reporter {
        &self.reporter
    }

    /// Body limits per family.
    pub fn body_limits(&self) -> BodyLimits {
        self.body_limits
    }

    /// Re-reads the stored policies and the host names (another node may
    /// have changed them; a host was created, renamed or deleted).
    pub async fn reload(&self) -> Result<(), EdgeError> {
        let records = self.store.policies().await?;
        let hosts = self.store.hosts().await?;
        let previous = self.snapshot();
        let next = build(records, hosts, Some(&previous))?;
        *self.snapshot.write() = Arc::new(next);
        Ok(())
    }

    /// Stores one validated policy with its events, then applies it.
    /// Fails with a conflict when the policy changed since
    /// `expected_version` was read.
    pub async fn write(&self, change: Change) -> Result<u64, EdgeError> {
        let version = self
            .store
            .write_policy(EdgePolicyWrite {
                scope: change.scope.to_string(),
                kind: change.kind.as_str().into(),
                body: change.body,
                expected_version: change.expected_version,
                at: change.at,
                by: change.by,
                events: change.events,
            })
            .await?;
        self.reload().await?;
        Ok(version)
    }

    /// Periodic housekeeping: closes the refusal window, forgets idle rate
    /// buckets and picks up policy changes made elsewhere.
    pub async fn maintain(&self) -> Result<(), EdgeError> {
        if let Err(e) = self.reporter.flush(false).await {
            tracing::error!(error = %e, "edge refusal summaries not recorded");
        }
        self.snapshot().rates().forget_idle();
        self.reload().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_targets_come_from_paths() {
        let team = TeamId::new();
        let host = HostId::new();
        for s in [Scope::Platform, Scope::Team(team), Scope::Host(host)] {
            assert_eq!(s.to_string().parse::<Scope>().unwrap(), s);
        }
        assert!("team:nope".parse::<Scope>().is_err());
        assert!("galaxy".parse::<Scope>().is_err());
        let none = HashMap::new();
        let t = Target::of(&format!("/api/v1/teams/{team}/hosts/{host}/apps"), &none);
        assert_eq!(
            t,
            Target {
                team: Some(team),
                host: Some(host),
                data_api: false,
            }
        );
        let data = "/hosts/AcMe/fmi/data/vLatest/databases/Contacts/sessions";
        assert_eq!(
            Target::of(data, &none),
            Target {
                data_api: true,
                ..Target::default()
            },
            "an unknown host name names no scope"
        );
        let named = HashMap::from([("acme".to_owned(), (host, team))]);
        assert_eq!(
            Target::of(data, &named),
            Target {
                team: Some(team),
                host: Some(host),
                data_api: true,
            },
            "a host name brings its id and its team, whatever its case"
        );
        assert_eq!(
            Target::of("/api/v1/teams/not-an-id/members", &none),
            Target::default()
        );
        let other = HostId::new();
        assert_eq!(
            Target::of(
                &format!("/hosts/{other}/fmi/data/vLatest/productInfo"),
                &named
            )
            .host,
            None,
            "a Data API host named like an id is looked up by name only"
        );
    }
}
