//! Signed webhooks: JSON POSTed to an HTTPS endpoint with an HMAC-SHA256
//! signature, retried with exponential back-off and jitter.
//!
//! Every request carries
//!
//! ```text
//! X-Kura-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! X-Kura-Delivery: <an id that stays the same across retries of one delivery>
//! ```
//!
//! Receivers recompute the HMAC over the timestamp, a dot and the raw body,
//! compare in constant time, and refuse timestamps far from their clock
//! ([`verify_signature`] does exactly this). Each try is signed afresh, so a
//! retry carries a current timestamp. 2xx acknowledges; 408, 425, 429, 5xx
//! and network errors are retried; any other status fails at once.
//! Redirects are not followed (a signed payload goes only where it was
//! configured to), and plain `http://` is accepted only for loopback
//! addresses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kura_crypto::hmac::HmacKey;
use kura_store::events::StoredEvent;
use kura_store::exports::{DeliveryAttempt, ExportStore};
use kura_types::Clock;

use super::{Backoff, ExportError, ExportSink, export_record};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Kura-Signature";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "X-Kura-Delivery";

/// How often and how patiently one delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per delivery, including the first.
    pub max_attempts: u32,
    /// The waits between tries.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
        }
    }
}

/// One webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The sink or channel name.
    pub name: String,
    /// The endpoint (`https://`, or `http://` to a loopback address).
    pub url: String,
    /// The shared signing secret.
    pub secret: HmacKey,
    /// Time allowed for one request, connection included.
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Retries of one delivery.
    pub retry: RetryPolicy,
}

impl WebhookConfig {
    /// A configuration with default timeouts (10 s per request, 5 s to
    /// connect) and retries.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secret: HmacKey) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            secret,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// The header value for `body` signed at `t`.
pub fn signature_header(key: &HmacKey, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", key.sign_hex(&signed_message(t, body)))
}

fn signed_message(t: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed {SIGNATURE_HEADER} header")]
    Malformed,
    /// The timestamp is further from now than allowed (a replay, or a
    /// badly wrong clock).
    #[error("signature timestamp is {0} s away from now")]
    Stale(i64),
    /// No `v1` signature matches.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a received webhook: `header` must sign `body` under `key` with a
/// timestamp within `tolerance_secs` of `now` (Unix seconds). Signatures are
/// compared in constant time; several `v1=` values (during secret rotation)
/// are accepted if any matches.
pub fn verify_signature(
    key: &HmacKey,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => {
                t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.saturating_sub(t);
    if skew.saturating_abs() > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    let msg = signed_message(t, body);
    if sigs.iter().any(|s| key.verify_hex(&msg, s)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What one delivery did.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    /// Every try, in order.
    pub attempts: Vec<DeliveryAttempt>,
    /// `Ok` if a try was acknowledged; otherwise the last failure.
    pub result: Result<(), String>,
}

/// Posts signed JSON to one endpoint with retries, recording every try.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    name: String,
    url: reqwest::Url,
    secret: HmacKey,
    retry: RetryPolicy,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    attempts: Option<Arc<dyn ExportStore>>,
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl WebhookClient {
    /// Checks the configuration and builds the HTTP client. With `attempts`
    /// set, every try is recorded there under the configured name.
    pub fn new(
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
        attempts: Option<Arc<dyn ExportStore>>,
    ) -> Result<Self, ExportError> {
        let bad = |detail: String| ExportError::Config {
            sink: config.name.clone(),
            detail,
        };
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| bad(format!("`{}` is not a URL: {e}", config.url)))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            "http" => {
                return Err(bad(
                    "plain http is allowed only to loopback addresses; use https".into(),
                ));
            }
            other => return Err(bad(format!("unsupported URL scheme `{other}`"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; the signature authenticates Kura".into(),
            ));
        }
        if config.retry.max_attempts == 0 {
            return Err(bad("max_attempts must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kura/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Self {
            name: config.name,
            url,
            secret: config.secret,
            retry: config.retry,
            http,
            clock,
            attempts,
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint for people: scheme, host, port and path, without the
    /// query (which may carry a token).
    pub fn target(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }

    /// POSTs `body` (JSON) until a try is acknowledged or the retry policy
    /// is spent. `delivery` is sent as [`DELIVERY_HEADER`] on every try so
    /// the receiver can drop repeats; `subject` names the delivery in the
    /// attempt records.
    pub async fn post(&self, delivery: &str, subject: &str, body: Vec<u8>) -> WebhookOutcome {
        let mut attempts = Vec::new();
        let mut result = Err("no attempt was made".to_owned());
        for n in 1..=self.retry.max_attempts {
            if n > 1 {
                tokio::time::sleep(self.retry.backoff.delay(n - 1)).await;
            }
            let at = self.clock.now();
            let signature = signature_header(&self.secret, at.unix_timestamp(), &body);
            let sent = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header(DELIVERY_HEADER, delivery)
                .body(body.clone())
                .send()
                .await;
            let (ok, status, error, retry) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        (true, Some(status.as_u16()), None, false)
                    } else {
                        let retry =
                            status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
                        (
                            false,
                            Some(status.as_u16()),
                            Some(format!("HTTP {status}")),
                            retry,
                        )
                    }
                }
                // Without the URL: it may carry a token in its query.
                Err(e) => (false, None, Some(e.without_url().to_string()), true),
            };
            attempts.push(DeliveryAttempt {
                channel: self.name.clone(),
                subject: subject.to_owned(),
                attempt: n,
                at,
                ok,
                status,
                error: error.clone(),
            });
            if ok {
                result = Ok(());
                break;
            }
            result = Err(error.unwrap_or_default());
            if !retry {
                break;
            }
        }
        if let Some(store) = &self.attempts
            && let Err(e) = store.record_attempts(attempts.clone()).await
        {
            tracing::warn!(webhook = %self.name, error = %e, "cannot record webhook delivery attempts");
        }
        WebhookOutcome { attempts, result }
    }
}

/// Exports batches to a webhook as
/// `{"sink":"<name>","events":[<export record>, …]}`, with the delivery id
/// `<name>:<first seq>-<last seq>`.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    client: WebhookClient,
}

impl WebhookSink {
    /// A sink posting through `client`.
    pub fn new(client: WebhookClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl ExportSink for WebhookSink {
    fn name(&self) -> &str {
        self.client.name()
    }

    async fn deliver(&self, batch: &[StoredEvent]) -> Result<(), ExportError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let name = serde_json::to_string(self.client.name())
            .map_err(|e| ExportError::Encode(e.to_string()))?;
        let mut body = format!("{{\"sink\":{name},\"events\":[");
        for (i, stored) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&export_record(stored)?);
        }
        body.push_str("]}");
        let delivery = format!("{}:{}-{}", self.client.name(), first.seq, last.seq);
        let subject = format!("events {}..={}", first.seq, last.seq);
        let outcome = self
            .client
            .post(&delivery, &subject, body.into_bytes())
            .await;
        outcome
            .result
            .map_err(|detail| ExportError::delivery(self.client.name(), detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_staleness_and_junk() {
        let key = HmacKey::new(b"whsec-test-0123456789abcdef0123456789");
        let body = br#"{"sink":"siem","events":[]}"#;
        let header = signature_header(&key, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify_signature(&key, &header, body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(&key, &header, b"{}", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&key, &header, body, 1_700_001_000, 300),
            Err(SignatureError::Stale(1000))
        );
        let other = HmacKey::new(b"another secret");
        assert_eq!(
            verify_signature(&other, &header, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        // Rotation: any of several signatures may match.
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(
            verify_signature(&key, &rotated, body, 1_700_000_000, 300),
            Ok(())
        );
        for junk in ["", "t=abc,v1=00", "v1=00", "t=1700000000"] {
            assert_eq!(
                verify_signature(&key, junk, body, 1_700_000_000, 300),
                Err(SignatureError::Malformed),
                "{junk}"
            );
        }
    }

    #[test]
    fn only_https_or_loopback_http_without_credentials() {
        let clock: Arc<dyn Clock> = Arc::new(kura_types::SystemClock);
        let key = HmacKey::new(b"k");
        let build = |url: &str| {
            WebhookClient::new(
                WebhookConfig::new("w", url, key.clone()),
                clock.clone(),
                None,
            )
        };
        assert!(build("https://siem.example/hook").is_ok());
        assert!(build("http://127.0.0.1:9/hook").is_ok());
        assert!(build("http://[::1]:9/hook").is_ok());
        assert!(build("http://localhost:9/hook").is_ok());
        for bad in [
            "http://siem.example/hook",
            "http://10.0.0.1/hook",
            "ftp://127.0.0.1/x",
            "https://user:pw@siem.example/",
            "not a url",
        ] {
            let err = build(bad).unwrap_err();
            assert!(matches!(err, ExportError::Config { .. }), "{bad}: {err}");
        }
    }
}
