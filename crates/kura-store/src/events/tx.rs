//! [`TxEvents`]: the security events a store write appends in its own
//! transaction.

use rusqlite::Transaction;

use super::EventRecord;
use crate::StoreError;

type Describe<T> = Box<dyn FnOnce(&T) -> Result<Vec<EventRecord>, StoreError> + Send>;

/// The security events that describe one store write, appended to the event
/// log inside the write's own transaction: the state change and its events
/// become durable together, or (when an event cannot be built or appended)
/// neither does.
///
/// The events are built from the write's result while the transaction is
/// still open, so they can state what the write did (how many sessions a
/// password change revoked) and say nothing when it did nothing (a session
/// that was already revoked).
pub struct TxEvents<T> {
    describe: Option<Describe<T>>,
}

impl<T> TxEvents<T> {
    /// Events built from the write's result; an error from `describe` fails
    /// the write and rolls it back.
    pub fn from_result(
        describe: impl FnOnce(&T) -> Result<Vec<EventRecord>, StoreError> + Send + 'static,
    ) -> Self {
        Self {
            describe: Some(Box::new(describe)),
        }
    }

    /// These events, whatever the result.
    pub fn fixed(records: Vec<EventRecord>) -> Self {
        Self::from_result(move |_| Ok(records))
    }

    /// No event: for a write whose event travels with another write of the
    /// same action (a throttle counter cleared by a successful sign-in, whose
    /// own event goes with the new session) or that no event describes.
    pub fn none() -> Self {
        Self { describe: None }
    }

    /// Builds the events from `result` and appends them in `tx`.
    pub(crate) fn append(self, tx: &Transaction<'_>, result: &T) -> Result<(), StoreError> {
        if let Some(describe) = self.describe {
            let records = describe(result)?;
            if !records.is_empty() {
                super::append_in_tx(tx, &records)?;
            }
        }
        Ok(())
    }
}

impl<T> std::fmt::Debug for TxEvents<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxEvents")
            .field("describes", &self.describe.is_some())
            .finish()
    }
}
