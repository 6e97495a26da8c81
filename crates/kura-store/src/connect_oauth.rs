//! The persistence boundary of Kura Connect's OAuth 2.0 credentials: the
//! pending authorisations (state → credential, PKCE verifier sealed,
//! single use, expiring) and each credential's sealed tokens, written
//! together with the security events that describe them.

use async_trait::async_trait;
use kura_types::{FlowCredentialId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::EventRecord;

/// An authorisation in progress: the browser is at the provider.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthStateRecord {
    /// SHA-256 of the `state` parameter.
    pub state_hash: [u8; 32],
    /// The team.
    pub team: TeamId,
    /// The credential being authorised.
    pub credential: FlowCredentialId,
    /// The PKCE verifier, sealed under the team's data key.
    pub sealed_verifier: Vec<u8>,
    /// Who started it, as an actor key.
    pub created_by: String,
    /// When the state stops working.
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for OAuthStateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthStateRecord")
            .field("team", &self.team)
            .field("credential", &self.credential)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// OAuth credentials' state.
#[async_trait]
pub trait OAuthStore: Send + Sync {
    /// Stores a pending authorisation with the events describing it.
    async fn put_oauth_state(
        &self,
        state: OAuthStateRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// Takes (deletes and returns) a pending authorisation: a state works
    /// once, whatever comes of it.
    async fn take_oauth_state(
        &self,
        state_hash: [u8; 32],
    ) -> Result<Option<OAuthStateRecord>, StoreError>;

    /// A credential's sealed tokens, if it has been authorised.
    async fn oauth_tokens(
        &self,
        team: TeamId,
        credential: FlowCredentialId,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces a credential's sealed tokens, with the events describing
    /// it, in one transaction; false if the credential is gone.
    async fn set_oauth_tokens(
        &self,
        team: TeamId,
        credential: FlowCredentialId,
        sealed: Vec<u8>,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;
}
