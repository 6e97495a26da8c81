//! Notification channels of the communication plan: the fixed ones (from
//! the configuration file, given when the service is built) and the ones
//! security responders add and remove through the API, which are stored
//! beside the incidents so every node and every restart sees them.
//!
//! An added webhook channel gets a signing secret generated here and shown
//! once, in the answer to the request that added it; receivers check the
//! `X-Kura-Signature` header with it. Adding and removing a channel are
//! security events, committed with the change. Names are unique across
//! fixed and added channels; fixed channels cannot be removed through the
//! API (the configuration file owns them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kura_store::StoreError;
use kura_store::incidents::ChannelRecord;
use kura_types::{Action, Actor, Clock, Outcome, SecurityEvent};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::notify::{CommunicationPlan, NotificationChannel, Route, WebhookChannel};
use super::service::IncidentService;
use super::{IncidentError, Severity, actions};
use crate::sink::prepare;

/// The longest channel name.
pub const MAX_CHANNEL_NAME: usize = 64;
/// Bytes of randomness in a generated webhook secret (shown as hex).
const SECRET_BYTES: usize = 32;
/// Seconds a webhook try may take unless the channel says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Where a channel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrigin {
    /// The configuration file (or the code that built the service).
    Config,
    /// Added by a security responder through the API.
    Api,
}

impl ChannelOrigin {
    /// `config` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }
}

/// One channel of the plan, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Its unique name.
    pub name: String,
    /// `webhook`.
    pub kind: String,
    /// Where it delivers (a URL without its query).
    pub target: String,
    /// The least severe incidents it hears of.
    pub min_severity: Severity,
    /// Where it came from.
    pub origin: ChannelOrigin,
    /// Who added it (API channels).
    pub created_by: Option<String>,
    /// When (API channels).
    pub created_at: Option<OffsetDateTime>,
}

/// A webhook channel to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookChannel {
    /// 1-64 characters of a-z, 0-9, `-` and `_`.
    pub name: String,
    /// `https://` (or `http://` to a loopback address).
    pub url: String,
    /// The least severe incidents it hears of.
    pub min_severity: Severity,
    /// Seconds one try may take (1 to 60; default 10).
    pub timeout_secs: Option<u64>,
}

/// An added channel and its signing secret, which is shown only here.
pub struct AddedChannel {
    /// The channel.
    pub info: ChannelInfo,
    /// The HMAC secret receivers verify signatures with (64 hex digits,
    /// used as its ASCII bytes).
    pub secret: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for AddedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddedChannel")
            .field("info", &self.info)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The stored settings of a webhook channel (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSettings {
    url: String,
    timeout_secs: u64,
}

struct ApiChannel {
    record: ChannelRecord,
    min_severity: Severity,
    channel: Arc<dyn NotificationChannel>,
}

impl std::fmt::Debug for ApiChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiChannel")
            .field("record", &self.record)
            .field("channel", &self.channel)
            .finish()
    }
}

/// The channels a service delivers through.
#[derive(Debug, Default)]
pub(super) struct Channels {
    plan: CommunicationPlan,
    fixed: HashMap<String, Arc<dyn NotificationChannel>>,
    api: RwLock<BTreeMap<String, ApiChannel>>,
}

impl Channels {
    pub(super) fn new(plan: CommunicationPlan) -> Self {
        Self {
            plan,
            fixed: HashMap::new(),
            api: RwLock::new(BTreeMap::new()),
        }
    }

    pub(super) fn add_fixed(&mut self, channel: Arc<dyn NotificationChannel>) {
        self.fixed.insert(channel.name().to_owned(), channel);
    }

    pub(super) fn add_fixed_route(&mut self, route: Route) {
        self.plan.routes.push(route);
    }

    fn is_fixed(&self, name: &str) -> bool {
        self.fixed.contains_key(name) || self.plan.routes.iter().any(|r| r.channel == name)
    }

    /// The channels that hear of an incident of `severity`: the fixed plan's,
    /// then the added ones by name.
    pub(super) fn channels_for(&self, severity: Severity) -> Vec<String> {
        let mut out: Vec<String> = self
            .plan
            .channels_for(severity)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for (name, c) in self.api.read().iter() {
            if severity <= c.min_severity && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<dyn NotificationChannel>> {
        self.fixed
            .get(name)
            .cloned()
            .or_else(|| self.api.read().get(name).map(|c| Arc::clone(&c.channel)))
    }

    fn list(&self) -> Vec<ChannelInfo> {
        let mut out: Vec<ChannelInfo> = self
            .plan
            .routes
            .iter()
            .map(|r| {
                let channel = self.fixed.get(&r.channel);
                ChannelInfo {
                    name: r.channel.clone(),
                    kind: channel.map_or("none", |c| c.kind()).to_owned(),
                    target: channel.map(|c| c.target()).unwrap_or_default(),
                    min_severity: r.min_severity,
                    origin: ChannelOrigin::Config,
                    created_by: None,
                    created_at: None,
                }
            })
            .collect();
        out.extend(self.api.read().values().map(api_info));
        out
    }

    /// Brings the added channels in line with `records`, rebuilding only
    /// those whose stored row changed. A row that no longer builds (say, a
    /// URL this build refuses) is left out and reported.
    fn sync(&self, records: Vec<ChannelRecord>, clock: &Arc<dyn Clock>) {
        let current: BTreeMap<String, &ChannelRecord> =
            records.iter().map(|r| (r.name.clone(), r)).collect();
        let mut api = self.api.write();
        api.retain(|name, c| current.get(name).is_some_and(|r| **r == c.record));
        for record in records {
            if api.contains_key(&record.name) {
                continue;
            }
            if self.is_fixed(&record.name) {
                // The configuration file gained a channel of this name after
                // a responder added theirs; the configured one wins.
                tracing::warn!(channel = %record.name, "an added incident channel is shadowed by a configured one of the same name");
                continue;
            }
            match build(&record, clock) {
                Ok(c) => {
                    api.insert(record.name.clone(), c);
                }
                Err(e) => {
                    tracing::error!(channel = %record.name, error = %e, "stored incident channel is unusable");
                }
            }
        }
    }
}

fn api_info(c: &ApiChannel) -> ChannelInfo {
    ChannelInfo {
        name: c.record.name.clone(),
        kind: c.record.kind.clone(),
        target: c.channel.target(),
        min_severity: c.min_severity,
        origin: ChannelOrigin::Api,
        created_by: Some(c.record.created_by.clone()),
        created_at: Some(c.record.created_at),
    }
}

fn build(record: &ChannelRecord, clock: &Arc<dyn Clock>) -> Result<ApiChannel, IncidentError> {
    let bad = |m: String| IncidentError::Store(StoreError::Malformed(m));
    let min_severity: Severity = record
        .min_severity
        .parse()
        .map_err(|e| bad(format!("channel {}: {e}", record.name)))?;
    let channel: Arc<dyn NotificationChannel> = match record.kind.as_str() {
        "webhook" => {
            let settings: WebhookSettings = serde_json::from_str(&record.settings)
                .map_err(|e| bad(format!("channel {}: {e}", record.name)))?;
            let secret = record
                .secret
                .as_deref()
                .ok_or_else(|| bad(format!("channel {} has no secret", record.name)))?;
            Arc::new(
                WebhookChannel::one_try(
                    &record.name,
                    &settings.url,
                    secret,
                    Duration::from_secs(settings.timeout_secs),
                    Arc::clone(clock),
                )
                .map_err(|e| IncidentError::Invalid(e.to_string()))?,
            )
        }
        other => return Err(bad(format!("channel kind `{other}` is unknown"))),
    };
    Ok(ApiChannel {
        record: record.clone(),
        min_severity,
        channel,
    })
}

/// Checks a channel name: 1-64 characters of a-z, 0-9, `-` and `_`.
pub fn check_channel_name(name: &str) -> Result<(), IncidentError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(IncidentError::Invalid(format!(
            "a channel name is 1-{MAX_CHANNEL_NAME} characters of a-z, 0-9, `-` and `_`"
        )))
    }
}

fn channel_event(
    by: &Actor,
    at: OffsetDateTime,
    action: &str,
    name: &str,
    details: Vec<(&str, serde_json::Value)>,
) -> Result<kura_store::events::EventRecord, IncidentError> {
    let action = Action::parse(action).map_err(|e| IncidentError::Invalid(e.to_string()))?;
    let mut event = SecurityEvent::new(at, by.clone(), action, Outcome::Success)
        .with_target(format!("incident-channel:{name}"))
        .with_detail("channel", name);
    for (k, v) in details {
        event = event.with_detail(k, v);
    }
    Ok(prepare(event)?)
}

impl IncidentService {
    /// Re-reads the channels added through the API (another node or a
    /// restart may have changed them). The notifier does this every round.
    pub async fn refresh_channels(&self) -> Result<(), IncidentError> {
        let records = self.store.channels().await?;
        self.channels.sync(records, &self.clock);
        Ok(())
    }

    /// Every channel of the plan: fixed ones first, then added ones by name.
    pub async fn list_channels(&self) -> Result<Vec<ChannelInfo>, IncidentError> {
        self.refresh_channels().await?;
        Ok(self.channels.list())
    }

    /// Adds a webhook channel with a freshly generated signing secret, which
    /// the answer carries once. Bad input changes nothing.
    pub async fn add_webhook_channel(
        &self,
        by: &Actor,
        new: NewWebhookChannel,
    ) -> Result<AddedChannel, IncidentError> {
        check_channel_name(&new.name)?;
        let timeout_secs = new.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=60).contains(&timeout_secs) {
            return Err(IncidentError::Invalid(
                "timeout_secs must be between 1 and 60".into(),
            ));
        }
        if self.channels.is_fixed(&new.name) {
            return Err(IncidentError::ChannelExists(new.name));
        }
        let random = kura_crypto::random::array::<SECRET_BYTES>()
            .map_err(|e| IncidentError::Invalid(format!("no randomness for a secret: {e}")))?;
        let secret = zeroize::Zeroizing::new(hex::encode(random));
        let now = self.clock.now();
        let record = ChannelRecord {
            name: new.name.clone(),
            kind: "webhook".into(),
            min_severity: new.min_severity.as_str().into(),
            settings: serde_json::to_string(&WebhookSettings {
                url: new.url.clone(),
                timeout_secs,
            })
            .map_err(|e| IncidentError::Invalid(e.to_string()))?,
            secret: Some(secret.as_bytes().to_vec()),
            created_by: by.key(),
            created_at: now,
        };
        // Building checks the URL (https, or http only to loopback) before
        // anything is stored.
        let built = build(&record, &self.clock)?;
        let event = channel_event(
            by,
            now,
            actions::CHANNEL_ADDED,
            &new.name,
            vec![
                ("kind", "webhook".into()),
                ("target", built.channel.target().into()),
                ("min_severity", new.min_severity.as_str().into()),
            ],
        )?;
        self.store
            .add_channel(record, vec![event])
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => IncidentError::ChannelExists(new.name.clone()),
                other => IncidentError::Store(other),
            })?;
        let info = api_info(&built);
        self.channels.api.write().insert(new.name, built);
        Ok(AddedChannel { info, secret })
    }

    /// Removes a channel added through the API. Notifications still pending
    /// for it are marked failed at their next round, naming the channel.
    pub async fn remove_channel(&self, by: &Actor, name: &str) -> Result<(), IncidentError> {
        check_channel_name(name)?;
        if self.channels.is_fixed(name) {
            return Err(IncidentError::ChannelFixed(name.to_owned()));
        }
        let event = channel_event(
            by,
            self.clock.now(),
            actions::CHANNEL_REMOVED,
            name,
            Vec::new(),
        )?;
        self.store
            .remove_channel(name.to_owned(), vec![event])
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => IncidentError::ChannelNotFound(name.to_owned()),
                other => IncidentError::Store(other),
            })?;
        self.channels.api.write().remove(name);
        Ok(())
    }
}
