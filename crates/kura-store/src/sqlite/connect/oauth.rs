//! [`OAuthStore`] on the platform database (platform migration 11).

use async_trait::async_trait;
use kura_types::{FlowCredentialId, TeamId};
use rusqlite::{OptionalExtension as _, params};

use super::SqliteConnectStore;
use super::rows::{from_ns, ns, parse_id};
use crate::StoreError;
use crate::connect_oauth::{OAuthStateRecord, OAuthStore};
use crate::events::EventRecord;
use crate::sqlite::events::append_in_tx;

#[async_trait]
impl OAuthStore for SqliteConnectStore {
    async fn put_oauth_state(
        &self,
        s: OAuthStateRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO connect_oauth_states
                         (state_hash, team, credential, sealed_verifier, created_by, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        &s.state_hash[..],
                        s.team.to_string(),
                        s.credential.to_string(),
                        s.sealed_verifier,
                        s.created_by,
                        ns(s.expires_at)?,
                    ],
                )?;
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }

    async fn take_oauth_state(
        &self,
        state_hash: [u8; 32],
    ) -> Result<Option<OAuthStateRecord>, StoreError> {
        self.pool
            .write(move |tx| {
                let row: Option<(String, String, Vec<u8>, String, i64)> = tx
                    .query_row(
                        "DELETE FROM connect_oauth_states WHERE state_hash = ?1
                         RETURNING team, credential, sealed_verifier, created_by, expires_at",
                        params![&state_hash[..]],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                row.map(|(team, credential, sealed_verifier, created_by, e)| {
                    Ok(OAuthStateRecord {
                        state_hash,
                        team: parse_id(&team)?,
                        credential: parse_id(&credential)?,
                        sealed_verifier,
                        created_by,
                        expires_at: from_ns(e)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn oauth_tokens(
        &self,
        team: TeamId,
        credential: FlowCredentialId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.pool
            .read(move |c| {
                let v: Option<Option<Vec<u8>>> = c
                    .query_row(
                        "SELECT oauth_tokens FROM connect_credentials WHERE id = ?1 AND team = ?2",
                        params![credential.to_string(), team.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(v.flatten())
            })
            .await
    }

    async fn set_oauth_tokens(
        &self,
        team: TeamId,
        credential: FlowCredentialId,
        sealed: Vec<u8>,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE connect_credentials SET oauth_tokens = ?1 WHERE id = ?2 AND team = ?3",
                    params![sealed, credential.to_string(), team.to_string()],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                append_in_tx(tx, &events)?;
                Ok(true)
            })
            .await
    }
}
