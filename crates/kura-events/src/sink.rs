//! [`EventSink`]: the one interface every crate emits security events through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use kura_store::StoreError;
use kura_store::events::{EventLog, EventQuery, EventRecord, Order, Seq, VerifyOptions};
use kura_types::{Action, Actor, Outcome, SecurityEvent};
use parking_lot::Mutex;

use crate::detect::{Alert, Detector};
use crate::report::VerifyReport;

/// The largest canonical event accepted (64 KiB). Events are facts, not
/// payloads; anything bigger is a caller bug or an attack on the log.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Why an event was not recorded. Callers must fail the action the event
/// describes: no event, no action.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The event itself is unacceptable (too large, not encodable).
    #[error("security event rejected: {0}")]
    Invalid(String),
    /// The log could not record it (storage failed or the writer stopped).
    #[error("security event could not be recorded: {0}")]
    Unavailable(#[from] StoreError),
}

/// Sanitises and encodes an event for the log, refusing oversized ones. Use
/// it to build the record a state change commits together with its event:
///
/// ```text
/// let record = kura_events::prepare(event)?;
/// pool.write(move |tx| {
///     change_state(tx)?;
///     kura_store::events::append_in_tx(tx, &[record])?;
///     Ok(())
/// }).await?;
/// ```
pub fn prepare(event: SecurityEvent) -> Result<EventRecord, EventError> {
    let record = EventRecord::new(event).map_err(|e| EventError::Invalid(e.to_string()))?;
    if record.body().len() > MAX_EVENT_BYTES {
        return Err(EventError::Invalid(format!(
            "event is {} bytes encoded; the limit is {MAX_EVENT_BYTES}",
            record.body().len()
        )));
    }
    Ok(record)
}

/// Where security events go. Every crate that emits events takes an
/// `Arc<dyn EventSink>`; `record` returns only once the event is durable.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Records one event durably, or says why it could not.
    async fn record(&self, event: SecurityEvent) -> Result<(), EventError>;

    /// Records several events durably and atomically, in order: either all
    /// of them are recorded (in one transaction, next to each other in the
    /// log) or, with an error, none is. An empty list records nothing.
    async fn record_all(&self, events: Vec<SecurityEvent>) -> Result<(), EventError>;

    /// Takes note of events that are already durable because a store
    /// appended them in the transaction of the state change they describe
    /// ([`kura_store::events::TxEvents`]), so what watches recorded events
    /// (detection rules) sees them too. Never records anything itself and
    /// never fails: the events are in the log already.
    async fn observe(&self, events: &[SecurityEvent]);
}

/// What happens to an alert after it is recorded in the log (the incident
/// service opens or joins an incident). Failures are the handler's to log:
/// they never fail the event that caused the alert.
#[async_trait]
pub trait AlertHandler: Send + Sync + std::fmt::Debug {
    /// Takes one alert, already recorded as a `detect.alert.raised` event.
    async fn handle_alert(&self, alert: &Alert);
}

/// The production sink: the tamper-evident log in the platform database,
/// with detection rules evaluated on every event of the log.
///
/// Detection follows the log itself, in sequence order, not only the events
/// recorded through this sink: a state change that commits its event in its
/// own transaction (`kura_store::events::append_in_tx`) is detected too.
///
/// Detection never makes a request wait for another's detection. Recorded
/// events, with their sequence numbers, go to a pending set; whoever finds
/// the detector free observes everything pending in sequence order (reading
/// any gap before it, events committed elsewhere, back from the log), and a
/// caller that finds it busy leaves its events to the one holding it. An
/// uncontended `record` has therefore run detection over its events before
/// it returns. Events committed elsewhere with nothing recorded here after
/// them are picked up by [`LogSink::catch_up`], which the server calls when
/// it starts (detection begins at that point of the log), after identity
/// changes ([`EventSink::observe`]) and every second.
#[derive(Debug, Clone)]
pub struct LogSink {
    log: EventLog,
    detection: Option<Arc<Detection>>,
    alerts: Option<Arc<dyn AlertHandler>>,
}

/// The detector, how far into the log it has looked, and what waits for it.
#[derive(Debug)]
struct Detection {
    feed: tokio::sync::Mutex<Feed>,
    /// Events recorded through the sink that the detector has not yet
    /// observed, by sequence number.
    pending: Mutex<BTreeMap<Seq, SecurityEvent>>,
    /// Set when events were committed elsewhere and a caller could not
    /// read them because the detector was busy: its holder reads the log to
    /// its head before it lets go.
    behind: AtomicBool,
}

#[derive(Debug)]
struct Feed {
    detector: Detector,
    /// The next sequence number to observe; `None` until the first event
    /// (detection starts at the log's head when the server starts).
    next: Option<Seq>,
}

impl LogSink {
    /// A sink over `log` without detection.
    pub fn new(log: EventLog) -> Self {
        Self {
            log,
            detection: None,
            alerts: None,
        }
    }

    /// A sink that also runs `detector` on every event it records and records
    /// each alert as a `detect.alert.raised` event linked to its causes.
    pub fn with_detector(log: EventLog, detector: Detector) -> Self {
        Self {
            log,
            detection: Some(Arc::new(Detection {
                feed: tokio::sync::Mutex::new(Feed {
                    detector,
                    next: None,
                }),
                pending: Mutex::new(BTreeMap::new()),
                behind: AtomicBool::new(false),
            })),
            alerts: None,
        }
    }

    /// Hands every alert, once recorded, to `handler` (the incident service).
    #[must_use]
    pub fn with_alert_handler(mut self, handler: Arc<dyn AlertHandler>) -> Self {
        self.alerts = Some(handler);
        self
    }

    /// The log, for queries, checkpoints, exports and retention.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Walks the log and its checkpoints.
    pub async fn verify(&self, options: VerifyOptions) -> Result<VerifyReport, EventError> {
        Ok(VerifyReport::from(self.log.verify(options).await?))
    }

    /// Records an alert; the alert event itself goes to detection like any
    /// other recorded event.
    async fn raise(&self, detection: &Detection, alert: Alert) {
        let encoded = alert
            .to_event()
            .and_then(|event| Ok((prepare(event.clone())?, event)));
        let (record, event) = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(rule = alert.rule, error = %e, "cannot encode a detection alert");
                return;
            }
        };
        match self.log.append_records(vec![record]).await {
            Ok(seqs) => {
                if let Some(&seq) = seqs.first() {
                    detection.pending.lock().insert(seq, event);
                }
                if let Some(handler) = &self.alerts {
                    handler.handle_alert(&alert).await;
                }
            }
            Err(e) => {
                tracing::error!(rule = alert.rule, error = %e, "cannot record a detection alert");
            }
        }
    }
}

#[async_trait]
impl EventSink for LogSink {
    async fn record(&self, event: SecurityEvent) -> Result<(), EventError> {
        self.record_all(vec![event]).await
    }

    async fn record_all(&self, events: Vec<SecurityEvent>) -> Result<(), EventError> {
        // Every event is checked before any is handed to the writer, so one
        // bad event refuses the whole list; the writer then appends the list
        // as one job, in one transaction.
        let records = events
            .iter()
            .cloned()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let seqs = self.log.append_records(records).await?;
        // The events are durable; detection runs after and never fails them.
        if let Some(detection) = &self.detection
            && !seqs.is_empty()
        {
            detection
                .pending
                .lock()
                .extend(seqs.into_iter().zip(events));
            self.detect(detection, false, false).await;
        }
        Ok(())
    }

    /// Detection reads such events back from the log in sequence order
    /// (with anything else committed since), so this only makes it look
    /// now rather than at the next periodic catch-up. It does not wait for
    /// a busy detector: the caller holding it reads the log before it lets
    /// go.
    async fn observe(&self, _events: &[SecurityEvent]) {
        if let Some(detection) = &self.detection {
            detection.behind.store(true, Ordering::SeqCst);
            self.detect(detection, false, false).await;
        }
    }
}

/// What one pass of the detector found to raise, and whether it moved.
struct Pass {
    alerts: Vec<Alert>,
    progressed: bool,
}

impl LogSink {
    /// The last sequence number in the log (0 when empty).
    async fn head(&self) -> Result<Seq, StoreError> {
        let page = self
            .log
            .query(EventQuery {
                order: Order::NewestFirst,
                limit: 1,
                ..EventQuery::default()
            })
            .await?;
        Ok(page.events.first().map_or(0, |e| e.seq))
    }

    /// Runs detection over every event committed since the last one it
    /// observed (events other components committed in their own
    /// transactions), and raises what fires. Waits for the detector if
    /// another caller holds it.
    pub async fn catch_up(&self) {
        if let Some(detection) = &self.detection {
            self.detect(detection, true, true).await;
        }
    }

    /// Observes what is pending (and with `to_head`, the log up to its head)
    /// and raises the alerts, until nothing observable is left. Unless
    /// `wait`, returns at once when another caller holds the detector: that
    /// caller observes what this one left pending before it lets go.
    async fn detect(&self, detection: &Detection, mut wait: bool, mut to_head: bool) {
        /// How many passes one caller makes for others before it returns.
        const MAX_ROUNDS: usize = 4;
        let mut rounds = 0;
        loop {
            let pass = {
                let mut feed = if wait {
                    detection.feed.lock().await
                } else {
                    match detection.feed.try_lock() {
                        Ok(feed) => feed,
                        Err(_) => return,
                    }
                };
                // Cleared only by the holder, which reads to the head now.
                to_head |= detection.behind.swap(false, Ordering::SeqCst);
                self.pass(detection, &mut feed, to_head).await
            };
            for alert in pass.alerts {
                self.raise(detection, alert).await;
            }
            // Events left pending by callers that found the detector busy,
            // alerts just raised, or events committed elsewhere that an
            // observer could not read: take them on too, a few rounds at
            // most (a steady stream of them must not hold one request; the
            // periodic catch-up covers what is left), and only while the
            // passes move (the log may be unreadable until the next one).
            rounds += 1;
            let behind = detection.behind.load(Ordering::SeqCst);
            let pending = !detection.pending.lock().is_empty();
            if rounds >= MAX_ROUNDS || !(behind || pending && pass.progressed) {
                return;
            }
            wait = false;
            to_head = false;
        }
    }

    /// One pass under the detector: pending events in sequence order, with
    /// any gap before them read back from the log; with `to_head`, the rest
    /// of the log too.
    async fn pass(&self, detection: &Detection, feed: &mut Feed, to_head: bool) -> Pass {
        let mut pass = Pass {
            alerts: Vec::new(),
            progressed: false,
        };
        let first_pending = detection.pending.lock().keys().next().copied();
        let mut next = match (feed.next, first_pending) {
            (Some(next), _) => next,
            // Detection starts with the first event recorded…
            (None, Some(first)) if !to_head => first,
            // …or after the log's head at the first catch-up.
            (None, _) => match self.head().await {
                Ok(head) => head + 1,
                Err(e) => {
                    tracing::error!(error = %e, "detection cannot read the log");
                    return pass;
                }
            },
        };
        loop {
            // Pending events that follow on without a gap.
            let ready: Vec<SecurityEvent> = {
                let mut pending = detection.pending.lock();
                let mut ready = Vec::new();
                while let Some(entry) = pending.first_entry() {
                    let seq = *entry.key();
                    if seq > next {
                        break;
                    }
                    let event = entry.remove();
                    // Below `next`: already observed from the log.
                    if seq == next {
                        ready.push(event);
                        next += 1;
                    }
                }
                ready
            };
            pass.progressed |= !ready.is_empty();
            for event in &ready {
                pass.alerts.extend(feed.detector.observe(event));
            }
            let gap_until = detection.pending.lock().keys().next().copied();
            if gap_until.is_none() && !to_head {
                break;
            }
            // A gap before the next pending event (or the rest of the log):
            // events committed elsewhere, read back in order.
            let page = self
                .log
                .query(EventQuery {
                    cursor: next.checked_sub(1),
                    order: Order::OldestFirst,
                    limit: kura_store::events::MAX_PAGE,
                    ..EventQuery::default()
                })
                .await;
            let events = match page {
                Ok(page) => page.events,
                Err(e) => {
                    tracing::error!(error = %e, "detection cannot read the log");
                    break;
                }
            };
            let before = next;
            for stored in events {
                if stored.seq < next {
                    continue;
                }
                if !to_head && gap_until.is_some_and(|g| stored.seq >= g) {
                    break;
                }
                pass.alerts.extend(feed.detector.observe(&stored.event));
                next = stored.seq + 1;
            }
            if next == before {
                // Nothing more in the log: the rest is pending or future.
                break;
            }
            pass.progressed = true;
        }
        feed.next = Some(next);
        pass
    }
}

/// A sink that keeps events in memory, for tests of crates that emit events.
/// It sanitises like the real log, and can be told to fail so a test can
/// prove that an action without its event does not happen.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<SecurityEvent>>>,
    failing: Arc<Mutex<bool>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event recorded so far, sanitised.
    pub fn events(&self) -> Vec<SecurityEvent> {
        self.events.lock().clone()
    }

    /// Makes every later `record` fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock() = failing;
    }
}

#[async_trait]
impl EventSink for MemorySink {
    async fn record(&self, mut event: SecurityEvent) -> Result<(), EventError> {
        if *self.failing.lock() {
            return Err(EventError::Unavailable(StoreError::Worker(
                "memory sink set to fail".into(),
            )));
        }
        event.sanitize();
        self.events.lock().push(event);
        Ok(())
    }

    async fn record_all(&self, events: Vec<SecurityEvent>) -> Result<(), EventError> {
        if *self.failing.lock() {
            return Err(EventError::Unavailable(StoreError::Worker(
                "memory sink set to fail".into(),
            )));
        }
        let events = events.into_iter().map(|mut e| {
            e.sanitize();
            e
        });
        self.events.lock().extend(events);
        Ok(())
    }

    /// Keeps the observed events too (sanitised), so a test sees every event
    /// of an action, whichever way it reached the log.
    async fn observe(&self, events: &[SecurityEvent]) {
        let events = events.iter().cloned().map(|mut e| {
            e.sanitize();
            e
        });
        self.events.lock().extend(events);
    }
}

/// A convenience for the common case: an event now, by `actor`, doing
/// `action` with `outcome`, timestamped by `clock`.
pub fn event(
    clock: &dyn kura_types::Clock,
    actor: Actor,
    action: &Action,
    outcome: Outcome,
) -> SecurityEvent {
    SecurityEvent::new(clock.now(), actor, action.clone(), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_types::{ManualClock, SystemClock};
    use serde_json::json;

    #[tokio::test]
    async fn memory_sink_sanitises_and_can_fail() {
        let sink = MemorySink::new();
        let action = Action::parse("auth.signin.failed").unwrap();
        let e = event(&SystemClock, Actor::Anonymous, &action, Outcome::Failure)
            .with_detail("password", "hunter2");
        sink.record(e.clone()).await.unwrap();
        assert_eq!(sink.events()[0].details["password"], json!("[REDACTED]"));
        sink.set_failing(true);
        assert!(sink.record(e).await.is_err());
        assert_eq!(sink.events().len(), 1);
    }

    #[test]
    fn oversized_events_are_refused() {
        let clock = ManualClock::new(time::OffsetDateTime::UNIX_EPOCH);
        let action = Action::parse("data.export").unwrap();
        let big = event(&clock, Actor::Anonymous, &action, Outcome::Success)
            .with_detail("blob", "x".repeat(MAX_EVENT_BYTES));
        let err = prepare(big).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
