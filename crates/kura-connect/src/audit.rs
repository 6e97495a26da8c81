//! Connect's own security events, committed in the same transaction as
//! the change they describe: a flow created, saved, enabled, disabled or
//! deleted, a credential created or deleted, a run cancelled. The store
//! appends them with `kura_store::events::append_in_tx` inside the write,
//! so the change and its event are durable together or not at all; an
//! event that cannot be encoded fails the change before it is tried.
//!
//! [`Audit`] carries who asks and how the caller completes each event
//! (request id, source address, user agent).

use kura_store::events::EventRecord;
use kura_types::{Actor, FlowCredentialId, FlowId, Outcome, RunId, SecurityEvent, TeamId};

use crate::ConnectError;
use crate::service::Connect;

/// Who asks for a change, and how its events are completed.
pub struct Audit<'a> {
    /// The actor (a signed-in account, a token).
    pub actor: Actor,
    /// Adds the request's facts to each event.
    pub decorate: &'a (dyn Fn(SecurityEvent) -> SecurityEvent + Sync),
}

impl std::fmt::Debug for Audit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Audit<'_> {
    /// The actor as stored in records (`account:<id>`).
    pub fn key(&self) -> String {
        self.actor.key()
    }

    /// One successful change's event, ready for the store's transaction.
    pub(crate) fn event(
        &self,
        at: time::OffsetDateTime,
        team: TeamId,
        action: &str,
        target: String,
        details: &[(&str, String)],
    ) -> Result<EventRecord, ConnectError> {
        let action =
            kura_types::Action::parse(action).map_err(|e| ConnectError::Event(e.to_string()))?;
        let mut e = SecurityEvent::new(at, self.actor.clone(), action, Outcome::Success)
            .with_team(team)
            .with_target(target);
        for (k, v) in details {
            e = e.with_detail(*k, v.clone());
        }
        kura_events::prepare((self.decorate)(e)).map_err(|e| ConnectError::Event(e.to_string()))
    }
}

impl Connect {
    /// Deletes a flow with its versions and runs, with its
    /// `connect.flow.deleted` event.
    pub async fn delete_flow(
        &self,
        team: TeamId,
        id: FlowId,
        audit: &Audit<'_>,
    ) -> Result<(), ConnectError> {
        let event = audit.event(
            self.inner.clock.now(),
            team,
            "connect.flow.deleted",
            format!("flow:{id}"),
            &[],
        )?;
        if !self.inner.store.delete_flow(team, id, vec![event]).await? {
            return Err(ConnectError::NotFound("flow"));
        }
        self.inner.flows.forget(id);
        Ok(())
    }

    /// Cancels a run that is not over, with its `connect.run.cancelled`
    /// event; false if it was already over.
    pub async fn cancel_run(
        &self,
        team: TeamId,
        run: RunId,
        flow: FlowId,
        audit: &Audit<'_>,
    ) -> Result<bool, ConnectError> {
        let now = self.inner.clock.now();
        let event = audit.event(
            now,
            team,
            "connect.run.cancelled",
            format!("run:{run}"),
            &[("flow", flow.to_string())],
        )?;
        Ok(self
            .inner
            .store
            .cancel_run(team, run, now, vec![event])
            .await?)
    }

    /// Deletes a credential, with its `connect.credential.deleted` event.
    pub async fn delete_credential(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        audit: &Audit<'_>,
    ) -> Result<(), ConnectError> {
        // The event names the credential, so it is read first; the delete
        // itself is conditional on the same row.
        let name = self
            .inner
            .store
            .credentials(team)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.name)
            .ok_or(ConnectError::NotFound("credential"))?;
        let event = audit.event(
            self.inner.clock.now(),
            team,
            "connect.credential.deleted",
            format!("credential:{id}"),
            &[("name", name)],
        )?;
        self.inner
            .store
            .delete_credential(team, id, vec![event])
            .await?
            .ok_or(ConnectError::NotFound("credential"))?;
        Ok(())
    }
}
