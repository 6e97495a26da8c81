//! [`PlatformStore`] on an encrypted SQLite file.

use std::path::Path;

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_crypto::{DataKey, WrappedKey};
use kura_types::{DataKeyId, KeyScope};
use rusqlite::{OptionalExtension as _, Row, Transaction, params};
use time::OffsetDateTime;

use super::{Durability, Migration, Pool, migrate};
use crate::StoreError;
use crate::platform::{PlatformStore, SetupTokenCheck, StoredDataKey};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "key registry, setup tokens, settings",
        sql: "
        CREATE TABLE data_keys (
            id             TEXT PRIMARY KEY,
            scope          TEXT NOT NULL UNIQUE,
            provider       TEXT,
            key_id         TEXT,
            master_version INTEGER,
            wrapped        BLOB,
            created_at     INTEGER NOT NULL,
            rotated_at     INTEGER,
            destroyed_at   INTEGER,
            CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
        ) STRICT;
        CREATE INDEX data_keys_by_version ON data_keys(key_id, master_version);
        CREATE TABLE setup_tokens (
            token_hash TEXT PRIMARY KEY,
            issued_at  INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at    INTEGER,
            revoked_at INTEGER
        ) STRICT;
        CREATE TABLE settings (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 2,
        name: "security event log: hash chain, signed checkpoints, signing key, prune anchor",
        // See `crate::events` for the chain format. `time` is Unix nanoseconds
        // (UTC); `seq` is assigned by the appender, never reused, and continues
        // from `event_anchor` after pruning. The signing key's PKCS#8 is sealed
        // with AES-256-GCM under the platform data key (the same KMS-wrapped key
        // SQLCipher encrypts this file with), bound to its key id.
        sql: "
        CREATE TABLE events (
            seq        INTEGER PRIMARY KEY,
            id         TEXT NOT NULL,
            time       INTEGER NOT NULL,
            team       TEXT,
            action     TEXT NOT NULL,
            outcome    TEXT NOT NULL,
            actor      TEXT NOT NULL,
            source     TEXT,
            request_id TEXT,
            body       BLOB NOT NULL,
            prev_hash  BLOB NOT NULL,
            hash       BLOB NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX events_by_id ON events(id);
        CREATE INDEX events_by_time ON events(time);
        CREATE INDEX events_by_team ON events(team, seq) WHERE team IS NOT NULL;
        CREATE INDEX events_by_action ON events(action, seq);
        CREATE INDEX events_by_actor ON events(actor, seq);
        CREATE INDEX events_by_request ON events(request_id) WHERE request_id IS NOT NULL;
        CREATE TABLE event_checkpoints (
            tree_size  INTEGER PRIMARY KEY,
            head_hash  BLOB NOT NULL,
            signed_at  INTEGER NOT NULL,
            key_id     TEXT NOT NULL,
            signature  BLOB NOT NULL
        ) STRICT;
        CREATE TABLE event_signing_keys (
            key_id       TEXT PRIMARY KEY,
            public_key   BLOB NOT NULL,
            sealed_pkcs8 BLOB NOT NULL,
            created_at   INTEGER NOT NULL,
            retired_at   INTEGER
        ) STRICT;
        CREATE TABLE event_anchor (
            id        INTEGER PRIMARY KEY CHECK (id = 1),
            seq       INTEGER NOT NULL,
            hash      BLOB NOT NULL,
            pruned_at INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 3,
        name: "Kura ID: accounts, credentials, teams, groups, roles, sessions, tokens, MFA, invitations, throttling",
        // Times are Unix seconds (UTC). Tokens of every kind are stored only as
        // SHA-256 hex digests. TOTP secrets are stored as raw bytes: this file
        // is SQLCipher-encrypted (AES-256) under the KMS-wrapped platform data
        // key, which is the at-rest protection for everything in it.
        // `role_grants.team` is '' for operator (platform) roles so the
        // uniqueness constraint holds without NULL semantics.
        sql: "
        CREATE TABLE accounts (
            id           TEXT PRIMARY KEY,
            email        TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            phone        TEXT,
            status       TEXT NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
            kind         TEXT NOT NULL CHECK (kind IN ('operator', 'customer')),
            created_at   INTEGER NOT NULL,
            updated_at   INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE password_credentials (
            account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
            phc        TEXT NOT NULL,
            changed_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE teams (
            id         TEXT PRIMARY KEY,
            name       TEXT NOT NULL,
            mfa_policy TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE team_members (
            team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            joined_at  INTEGER NOT NULL,
            PRIMARY KEY (team_id, account_id)
        ) STRICT;
        CREATE INDEX team_members_by_account ON team_members(account_id);
        CREATE TABLE groups (
            id         TEXT PRIMARY KEY,
            team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            name       TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (team_id, name)
        ) STRICT;
        CREATE TABLE group_members (
            group_id   TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            added_at   INTEGER NOT NULL,
            PRIMARY KEY (group_id, account_id)
        ) STRICT;
        CREATE INDEX group_members_by_account ON group_members(account_id);
        CREATE TABLE role_grants (
            subject_kind TEXT NOT NULL CHECK (subject_kind IN ('account', 'group')),
            subject_id   TEXT NOT NULL,
            team         TEXT NOT NULL,
            role         TEXT NOT NULL,
            granted_by   TEXT,
            granted_at   INTEGER NOT NULL,
            PRIMARY KEY (subject_kind, subject_id, team, role)
        ) STRICT;
        CREATE TABLE sessions (
            id              TEXT PRIMARY KEY,
            token_hash      TEXT NOT NULL UNIQUE,
            account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            stage           TEXT NOT NULL,
            created_at      INTEGER NOT NULL,
            last_seen_at    INTEGER NOT NULL,
            expires_at      INTEGER NOT NULL,
            mfa_verified_at INTEGER,
            revoked_at      INTEGER,
            source          TEXT,
            mfa_method      TEXT
        ) STRICT;
        CREATE INDEX sessions_by_account ON sessions(account_id);
        CREATE TABLE api_tokens (
            id           TEXT PRIMARY KEY,
            token_hash   TEXT NOT NULL UNIQUE,
            account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            team_id      TEXT REFERENCES teams(id) ON DELETE CASCADE,
            kind         TEXT NOT NULL CHECK (kind IN ('personal', 'service')),
            role         TEXT,
            name         TEXT NOT NULL,
            scopes       TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            expires_at   INTEGER NOT NULL,
            last_used_at INTEGER,
            revoked_at   INTEGER
        ) STRICT;
        CREATE INDEX api_tokens_by_account ON api_tokens(account_id);
        CREATE TABLE totp_credentials (
            account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            secret         BLOB NOT NULL,
            confirmed_at   INTEGER,
            last_used_step INTEGER,
            created_at     INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX totp_one_confirmed ON totp_credentials(account_id) WHERE confirmed_at IS NOT NULL;
        CREATE UNIQUE INDEX totp_one_pending ON totp_credentials(account_id) WHERE confirmed_at IS NULL;
        CREATE TABLE recovery_codes (
            account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            code_hash  TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            used_at    INTEGER,
            PRIMARY KEY (account_id, code_hash)
        ) STRICT;
        CREATE TABLE invitations (
            id          TEXT PRIMARY KEY,
            token_hash  TEXT NOT NULL UNIQUE,
            team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            email       TEXT NOT NULL,
            role        TEXT NOT NULL,
            invited_by  TEXT NOT NULL,
            created_at  INTEGER NOT NULL,
            expires_at  INTEGER NOT NULL,
            accepted_at INTEGER,
            accepted_by TEXT,
            revoked_at  INTEGER
        ) STRICT;
        CREATE TABLE throttle_counters (
            key              TEXT PRIMARY KEY,
            failures         INTEGER NOT NULL,
            first_failure_at INTEGER NOT NULL,
            last_failure_at  INTEGER NOT NULL,
            locked_until     INTEGER
        ) STRICT;
    ",
    },
    Migration {
        version: 4,
        name: "SIEM export cursors, delivery attempts, alerts and incidents",
        // Export cursors hold the last `events.seq` each sink acknowledged.
        // Delivery attempts are kept for every outgoing try (SIEM batches and
        // incident notifications). Incident, alert, timeline and notification
        // times are Unix nanoseconds (UTC) like `events.time`; states and
        // severities are the stable names `kura-events` defines. Linked events
        // are not foreign keys: retention may prune an event an incident still
        // names.
        sql: "
        CREATE TABLE event_export_cursors (
            name       TEXT PRIMARY KEY,
            seq        INTEGER NOT NULL CHECK (seq >= 0),
            exported   INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE delivery_attempts (
            id      INTEGER PRIMARY KEY,
            channel TEXT NOT NULL,
            subject TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at      INTEGER NOT NULL,
            ok      INTEGER NOT NULL,
            status  INTEGER,
            error   TEXT
        ) STRICT;
        CREATE INDEX delivery_attempts_by_channel ON delivery_attempts(channel, id);
        CREATE TABLE incidents (
            id            TEXT PRIMARY KEY,
            title         TEXT NOT NULL,
            severity      TEXT NOT NULL,
            state         TEXT NOT NULL,
            owner         TEXT,
            team          TEXT,
            rule          TEXT,
            subject       TEXT,
            opened_at     INTEGER NOT NULL,
            updated_at    INTEGER NOT NULL,
            last_alert_at INTEGER,
            version       INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX incidents_for_joining ON incidents(rule, subject, last_alert_at)
            WHERE rule IS NOT NULL;
        CREATE INDEX incidents_by_state ON incidents(state, id);
        CREATE TABLE alerts (
            id          TEXT PRIMARY KEY,
            incident_id TEXT NOT NULL REFERENCES incidents(id),
            rule        TEXT NOT NULL,
            severity    TEXT NOT NULL,
            subject     TEXT NOT NULL,
            summary     TEXT NOT NULL,
            team        TEXT,
            raised_at   INTEGER NOT NULL,
            events      TEXT NOT NULL
        ) STRICT;
        CREATE INDEX alerts_by_incident ON alerts(incident_id, raised_at);
        CREATE TABLE incident_events (
            incident_id TEXT NOT NULL REFERENCES incidents(id),
            event_id    TEXT NOT NULL,
            PRIMARY KEY (incident_id, event_id)
        ) STRICT;
        CREATE TABLE incident_timeline (
            id          INTEGER PRIMARY KEY,
            incident_id TEXT NOT NULL REFERENCES incidents(id),
            at          INTEGER NOT NULL,
            actor       TEXT NOT NULL,
            kind        TEXT NOT NULL,
            text        TEXT NOT NULL
        ) STRICT;
        CREATE INDEX incident_timeline_by_incident ON incident_timeline(incident_id, id);
        CREATE TABLE incident_notifications (
            id              TEXT PRIMARY KEY,
            incident_id     TEXT NOT NULL REFERENCES incidents(id),
            channel         TEXT NOT NULL,
            reason          TEXT NOT NULL,
            severity        TEXT NOT NULL,
            text            TEXT NOT NULL,
            created_at      INTEGER NOT NULL,
            status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts        INTEGER NOT NULL,
            last_attempt_at INTEGER,
            last_error      TEXT,
            delivered_at    INTEGER
        ) STRICT;
        CREATE INDEX incident_notifications_by_incident ON incident_notifications(incident_id);
        CREATE INDEX incident_notifications_pending ON incident_notifications(created_at)
            WHERE status = 'pending';
    ",
    },
    Migration {
        version: 5,
        name: "security event log: keep only the id and time indexes on events",
        // Every secondary index on `events` is maintained inside the group
        // commit, and four of them (team, action, actor, request id) cost more
        // than half the append rate (BENCHMARKS.md, security event pipeline).
        // Queries filtering on those columns walk the log by `seq` instead,
        // stopping after one page of matches. `events_by_id` stays for
        // incident links and id uniqueness; `events_by_time` stays because
        // time grows with `seq`, so its inserts land on the rightmost page and
        // cost little, and it keeps time ranges and pruning exact.
        sql: "
        DROP INDEX IF EXISTS events_by_team;
        DROP INDEX IF EXISTS events_by_action;
        DROP INDEX IF EXISTS events_by_actor;
        DROP INDEX IF EXISTS events_by_request;
    ",
    },
    Migration {
        version: 6,
        name: "hosts and hosted apps",
        // Host names are unique across the platform because they are part
        // of the Data API's URL; app names are unique on their host.
        sql: "
        CREATE TABLE hosts (
            id         TEXT PRIMARY KEY,
            team_id    TEXT NOT NULL REFERENCES teams(id),
            name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
            settings   TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX hosts_by_team ON hosts(team_id);
        CREATE TABLE apps (
            id         TEXT PRIMARY KEY,
            host_id    TEXT NOT NULL REFERENCES hosts(id),
            team_id    TEXT NOT NULL REFERENCES teams(id),
            name       TEXT NOT NULL COLLATE NOCASE,
            status     TEXT NOT NULL CHECK (status IN ('open', 'closed')),
            created_at INTEGER NOT NULL,
            UNIQUE (host_id, name)
        ) STRICT;
    ",
    },
    Migration {
        version: 7,
        name: "incident notification channels, per-try delivery records and back-off",
        // Channels added by security responders through the API (channels in
        // the configuration file are not stored). `settings` is the channel's
        // JSON as `kura-events` defines it, without secrets; a webhook's
        // signing secret is kept as raw bytes, protected at rest like TOTP
        // secrets by this file's SQLCipher encryption. Each delivery try of a
        // notification is one row; `next_attempt_at` (Unix nanoseconds, NULL:
        // due now) holds a pending notification back after a failure.
        sql: "
        CREATE TABLE incident_channels (
            name         TEXT PRIMARY KEY,
            kind         TEXT NOT NULL,
            min_severity TEXT NOT NULL,
            settings     TEXT NOT NULL,
            secret       BLOB,
            created_by   TEXT NOT NULL,
            created_at   INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE incident_notification_attempts (
            notification_id TEXT NOT NULL REFERENCES incident_notifications(id),
            attempt         INTEGER NOT NULL,
            at              INTEGER NOT NULL,
            ok              INTEGER NOT NULL,
            status          INTEGER,
            error           TEXT,
            PRIMARY KEY (notification_id, attempt)
        ) STRICT;
        ALTER TABLE incident_notifications ADD COLUMN next_attempt_at INTEGER;
    ",
    },
    Migration {
        version: 8,
        name: "edge policies: firewall lists, rate limits and WAF rule modes per scope",
        // One row per (scope, kind): the policy's JSON as the server parsed
        // and validated it. The store does not interpret it; `version` is
        // bumped by every replacement so a change decided on a stale copy
        // fails instead of overwriting a newer one.
        sql: "
        CREATE TABLE edge_policies (
            scope      TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('firewall', 'rate_limits', 'waf')),
            body       TEXT NOT NULL,
            version    INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (scope, kind)
        ) STRICT;
    ",
    },
    Migration {
        version: 9,
        name: "Kura ID: WebAuthn passkeys, ceremony state, time-boxed operator access to teams",
        // `data` and `state` are the WebAuthn library's serialised forms,
        // opaque here; the columns beside them are what the rules read.
        // Credential ids are unique across accounts: one authenticator
        // credential signs in one account. Times are Unix seconds (UTC).
        sql: "
        CREATE TABLE passkeys (
            id              TEXT PRIMARY KEY,
            account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            credential_id   TEXT NOT NULL UNIQUE,
            name            TEXT NOT NULL,
            data            TEXT NOT NULL,
            counter         INTEGER NOT NULL CHECK (counter >= 0),
            backup_eligible INTEGER NOT NULL,
            backup_state    INTEGER NOT NULL,
            created_at      INTEGER NOT NULL,
            last_used_at    INTEGER
        ) STRICT;
        CREATE INDEX passkeys_by_account ON passkeys(account_id);
        CREATE TABLE webauthn_ceremonies (
            id         TEXT PRIMARY KEY,
            kind       TEXT NOT NULL,
            account_id TEXT REFERENCES accounts(id) ON DELETE CASCADE,
            session_id TEXT,
            state      TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies(expires_at);
        CREATE TABLE team_operator_access (
            id          TEXT PRIMARY KEY,
            team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            operator_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            role        TEXT NOT NULL,
            reason      TEXT NOT NULL,
            granted_by  TEXT NOT NULL,
            granted_at  INTEGER NOT NULL,
            expires_at  INTEGER NOT NULL,
            revoked_at  INTEGER,
            CHECK (expires_at > granted_at)
        ) STRICT;
        CREATE INDEX team_operator_access_by_operator ON team_operator_access(operator_id, expires_at);
        CREATE INDEX team_operator_access_by_team ON team_operator_access(team_id, granted_at);
    ",
    },
    Migration {
        version: 10,
        name: "Kura Connect: flows, immutable versions, runs with leases, step records, schedules, key-value store, sealed credentials",
        // Times are Unix nanoseconds (UTC). Documents, inputs, contexts and
        // outputs are JSON text. `lease_owner`/`lease_until` let any worker
        // claim a run whose worker died; a PostgreSQL backend claims the same
        // rows with SKIP LOCKED. Credential secrets are sealed (AES-256-GCM)
        // under the team's data key before they reach this file.
        sql: "
        CREATE TABLE connect_flows (
            id             TEXT PRIMARY KEY,
            team           TEXT NOT NULL,
            name           TEXT NOT NULL,
            enabled        INTEGER NOT NULL,
            version        INTEGER NOT NULL,
            webhook_token  TEXT NOT NULL UNIQUE,
            webhook_secret BLOB NOT NULL,
            created_at     INTEGER NOT NULL,
            updated_at     INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX connect_flows_by_team ON connect_flows(team, name);
        CREATE TABLE connect_flow_versions (
            flow       TEXT NOT NULL REFERENCES connect_flows(id) ON DELETE CASCADE,
            version    INTEGER NOT NULL,
            document   TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (flow, version)
        ) STRICT;
        CREATE TABLE connect_runs (
            id          TEXT PRIMARY KEY,
            team        TEXT NOT NULL,
            flow        TEXT NOT NULL REFERENCES connect_flows(id) ON DELETE CASCADE,
            version     INTEGER NOT NULL,
            status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'waiting',
                            'succeeded', 'failed', 'cancelled', 'dead_letter')),
            trigger     TEXT NOT NULL,
            input       TEXT NOT NULL,
            context     TEXT NOT NULL,
            next_step   TEXT,
            steps_done  INTEGER NOT NULL DEFAULT 0,
            response    TEXT,
            error       TEXT,
            claims      INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until INTEGER,
            not_before  INTEGER NOT NULL,
            created_at  INTEGER NOT NULL,
            started_at  INTEGER,
            finished_at INTEGER
        ) STRICT;
        CREATE INDEX connect_runs_due ON connect_runs(status, not_before);
        CREATE INDEX connect_runs_by_team ON connect_runs(team, created_at);
        CREATE INDEX connect_runs_by_flow ON connect_runs(flow, created_at);
        CREATE TABLE connect_steps (
            run             TEXT NOT NULL REFERENCES connect_runs(id) ON DELETE CASCADE,
            seq             INTEGER NOT NULL,
            step            TEXT NOT NULL,
            status          TEXT NOT NULL,
            input           TEXT NOT NULL,
            output          TEXT,
            error           TEXT,
            attempts        INTEGER NOT NULL,
            idempotency_key TEXT,
            started_at      INTEGER NOT NULL,
            finished_at     INTEGER,
            PRIMARY KEY (run, seq)
        ) STRICT;
        CREATE TABLE connect_schedules (
            flow         TEXT PRIMARY KEY REFERENCES connect_flows(id) ON DELETE CASCADE,
            team         TEXT NOT NULL,
            cron         TEXT NOT NULL,
            timezone     TEXT NOT NULL,
            next_fire_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX connect_schedules_due ON connect_schedules(next_fire_at);
        CREATE TABLE connect_kv (
            team       TEXT NOT NULL,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (team, key)
        ) STRICT;
        CREATE TABLE connect_credentials (
            id         TEXT PRIMARY KEY,
            team       TEXT NOT NULL,
            name       TEXT NOT NULL,
            kind       TEXT NOT NULL,
            settings   TEXT NOT NULL,
            sealed     BLOB NOT NULL,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (team, name)
        ) STRICT;
    ",
    },
    Migration {
        version: 11,
        name: "remembered devices: a device cookie that stands in for the second factor",
        // Only the token's hash is stored; times are Unix seconds (UTC). Every
        // revocation of an account's sessions deletes its rows (see
        // `revoke_sessions`), so signing out everywhere or changing the
        // password forgets every remembered device.
        sql: "
        CREATE TABLE remembered_devices (
            token_hash TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX remembered_devices_by_account ON remembered_devices(account_id);
    ",
    },
    Migration {
        version: 12,
        name: "Kura Connect approvals (runs paused for a person's decision, one-time links stored as hashes) and OAuth 2.0 credentials (sealed tokens, pending authorisations)",
        // `approvers` is a JSON array of lower-case e-mail addresses. A
        // link's token is never stored, only its SHA-256. `closed` marks an
        // approval whose run has moved on along the decision's path. OAuth
        // tokens and PKCE verifiers are sealed under the team's data key
        // before they reach this file; a state is stored as its SHA-256.
        sql: "
        CREATE TABLE connect_approvals (
            id          TEXT PRIMARY KEY,
            team        TEXT NOT NULL,
            flow        TEXT NOT NULL,
            run         TEXT NOT NULL REFERENCES connect_runs(id) ON DELETE CASCADE,
            step        TEXT NOT NULL,
            approvers   TEXT NOT NULL,
            message     TEXT NOT NULL,
            status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'timed_out')),
            decided_by  TEXT,
            decided_via TEXT,
            comment     TEXT,
            created_at  INTEGER NOT NULL,
            expires_at  INTEGER NOT NULL,
            decided_at  INTEGER,
            closed      INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE INDEX connect_approvals_by_run ON connect_approvals(run, step);
        CREATE INDEX connect_approvals_by_team ON connect_approvals(team, created_at);
        CREATE TABLE connect_approval_links (
            token_hash BLOB PRIMARY KEY,
            approval   TEXT NOT NULL REFERENCES connect_approvals(id) ON DELETE CASCADE,
            approver   TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at    INTEGER
        ) STRICT;
        ALTER TABLE connect_credentials ADD COLUMN oauth_tokens BLOB;
        CREATE TABLE connect_oauth_states (
            state_hash      BLOB PRIMARY KEY,
            team            TEXT NOT NULL,
            credential      TEXT NOT NULL REFERENCES connect_credentials(id) ON DELETE CASCADE,
            sealed_verifier BLOB NOT NULL,
            created_by      TEXT NOT NULL,
            expires_at      INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 13,
        name: "Kura Connect: app-event subscriptions",
        // Each enabled flow with an app-event trigger keeps the sequence
        // number of the last change-outbox entry of its app it handled; it
        // moves in the transaction that queues the runs.
        sql: "
        CREATE TABLE connect_app_subscriptions (
            flow   TEXT PRIMARY KEY REFERENCES connect_flows(id) ON DELETE CASCADE,
            team   TEXT NOT NULL,
            app    TEXT NOT NULL,
            cursor INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 14,
        name: "remembered devices: when each last stood in for the second factor",
        // Set (Unix seconds, UTC) in the transaction of the sign-in it
        // finished, with that sign-in's events.
        sql: "
        ALTER TABLE remembered_devices ADD COLUMN last_used_at INTEGER;
    ",
    },
    Migration {
        version: 15,
        name: "security event log: id and time lookups kept beside the log, filled in batches",
        // The unique index on `events(id)` and the index on `events(time)`
        // put two more pages into every commit that records an event, which
        // was most of what an audited write cost over a plain one at low
        // concurrency. Both lookups are now derived data, extended in batches
        // (`crate::sqlite::events::extend_lookups`) over every entry up to
        // `event_lookups_upto.seq`; entries after that (the log's short tail)
        // are searched directly. `event_ids` maps ids to entries (ids are
        // UUIDv7 generated by Kura, unique without an index enforcing it);
        // `event_time_blocks` holds the earliest and latest time of each run
        // of 256 entries (`seq >> 8`), so a time range becomes a few ranges
        // of `seq` to walk. Times follow `seq` closely but not exactly
        // (concurrent writers, ingested events), which the per-block bounds
        // absorb: they only narrow the walk, the rows' own times decide.
        sql: "
        DROP INDEX IF EXISTS events_by_id;
        DROP INDEX IF EXISTS events_by_time;
        CREATE TABLE event_ids (
            id  TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE event_time_blocks (
            block    INTEGER PRIMARY KEY,
            min_time INTEGER NOT NULL,
            max_time INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE event_lookups_upto (
            id  INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL
        ) STRICT;
        INSERT OR IGNORE INTO event_ids (id, seq) SELECT id, seq FROM events;
        INSERT INTO event_time_blocks (block, min_time, max_time)
            SELECT seq >> 8, min(time), max(time) FROM events GROUP BY seq >> 8;
        INSERT INTO event_lookups_upto (id, seq) SELECT 1, coalesce(max(seq), 0) FROM events;
    ",
    },
    Migration {
        version: 16,
        name: "security event log: entries hold their time, body and hash alone",
        // The id, team, action, outcome, actor, source and request id columns
        // repeated fields of the body, and `prev_hash` repeated the previous
        // entry's hash: 37% of an entry's pages (821 against 513 bytes for a
        // typical audited write's event), encrypted, authenticated and
        // written at every commit that records an event, and none of it
        // covered by the chain (a changed team column would have hidden an
        // event from its team's queries without failing verification).
        // Queries now decide on the decoded body, the lookups read the id
        // from it, the walk links each entry to the hash it recomputed for
        // the one before, and checks the time column (kept to walk time
        // ranges by) against the body's time. The chain's bytes (seq, body,
        // hash) are copied unchanged, so the log verifies against its
        // existing checkpoints.
        sql: "
        CREATE TABLE events_chain (
            seq  INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            body BLOB NOT NULL,
            hash BLOB NOT NULL
        ) STRICT;
        INSERT INTO events_chain (seq, time, body, hash)
            SELECT seq, time, body, hash FROM events ORDER BY seq;
        DROP TABLE events;
        ALTER TABLE events_chain RENAME TO events;
    ",
    },
];

/// The embedded platform store.
#[derive(Debug, Clone)]
pub struct SqlitePlatformStore {
    pool: Pool,
}

impl SqlitePlatformStore {
    /// Opens (creating with `create`) the platform database and migrates it.
    pub fn open(
        path: &Path,
        key: &DataKey,
        create: bool,
        durability: Durability,
        readers: usize,
    ) -> Result<Self, StoreError> {
        let pool = Pool::open(path, Some(key), create, durability, readers, |conn| {
            migrate(conn, path, MIGRATIONS).map(|_| ())
        })?;
        Ok(Self { pool })
    }

    /// The connection pool, for crates that keep their own tables here.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn row_to_key(row: &Row<'_>) -> rusqlite::Result<RawKeyRow> {
    Ok(RawKeyRow {
        id: row.get(0)?,
        scope: row.get(1)?,
        provider: row.get(2)?,
        key_id: row.get(3)?,
        version: row.get(4)?,
        wrapped: row.get(5)?,
        created_at: row.get(6)?,
        destroyed_at: row.get(7)?,
    })
}

struct RawKeyRow {
    id: String,
    scope: String,
    provider: Option<String>,
    key_id: Option<String>,
    version: Option<u32>,
    wrapped: Option<Vec<u8>>,
    created_at: i64,
    destroyed_at: Option<i64>,
}

impl RawKeyRow {
    fn decode(self) -> Result<StoredDataKey, StoreError> {
        let malformed = |what: &str| StoreError::Malformed(format!("data key {}: {what}", self.id));
        let wrapped = match (&self.provider, &self.key_id, self.version, &self.wrapped) {
            (Some(provider), Some(key_id), Some(version), Some(ct)) => Some(WrappedKey {
                provider: provider.clone(),
                key_id: key_id.clone(),
                version,
                ciphertext: ct.clone(),
            }),
            (_, _, _, None) => None,
            _ => return Err(malformed("incomplete wrapping metadata")),
        };
        Ok(StoredDataKey {
            id: self.id.parse().map_err(|_| malformed("bad id"))?,
            scope: self.scope.parse().map_err(|_| malformed("bad scope"))?,
            wrapped,
            created_at: from_ts(self.created_at)?,
            destroyed_at: self.destroyed_at.map(from_ts).transpose()?,
        })
    }
}

const KEY_COLUMNS: &str =
    "id, scope, provider, key_id, master_version, wrapped, created_at, destroyed_at";

#[async_trait]
impl PlatformStore for SqlitePlatformStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(|_| ())
    }

    async fn insert_data_key(&self, key: StoredDataKey) -> Result<(), StoreError> {
        let Some(wrapped) = key.wrapped else {
            return Err(StoreError::Malformed(
                "a new data key must be wrapped".into(),
            ));
        };
        self.pool
            .write(move |tx| {
                let inserted = tx.execute(
                    "INSERT INTO data_keys (id, scope, provider, key_id, master_version, wrapped, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(scope) DO NOTHING",
                    params![
                        key.id.to_string(),
                        key.scope.to_string(),
                        wrapped.provider,
                        wrapped.key_id,
                        wrapped.version,
                        wrapped.ciphertext,
                        ts(key.created_at),
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!("data key for {}", key.scope)));
                }
                Ok(())
            })
            .await
    }

    async fn data_key(&self, scope: KeyScope) -> Result<Option<StoredDataKey>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM data_keys WHERE scope = ?1"),
                    [scope.to_string()],
                    row_to_key,
                )
                .optional()?
                .map(RawKeyRow::decode)
                .transpose()
            })
            .await
    }

    async fn data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        self.pool
            .read(|c| {
                let mut stmt =
                    c.prepare(&format!("SELECT {KEY_COLUMNS} FROM data_keys ORDER BY id"))?;
                let rows = stmt.query_map([], row_to_key)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(row?.decode()?);
                }
                Ok(out)
            })
            .await
    }

    async fn replace_wrapped_key(
        &self,
        id: DataKeyId,
        expected: &WrappedKey,
        replacement: &WrappedKey,
    ) -> Result<bool, StoreError> {
        let expected = expected.ciphertext.clone();
        let new = replacement.clone();
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE data_keys
                        SET provider = ?1, key_id = ?2, master_version = ?3, wrapped = ?4,
                            rotated_at = unixepoch()
                      WHERE id = ?5 AND wrapped = ?6 AND destroyed_at IS NULL",
                    params![
                        new.provider,
                        new.key_id,
                        new.version,
                        new.ciphertext,
                        id.to_string(),
                        expected
                    ],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn destroy_data_key(
        &self,
        scope: KeyScope,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE data_keys
                        SET wrapped = NULL, provider = NULL, key_id = NULL, master_version = NULL,
                            destroyed_at = ?1
                      WHERE scope = ?2 AND destroyed_at IS NULL",
                    params![ts(at), scope.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn issue_setup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE setup_tokens SET revoked_at = ?1
                      WHERE used_at IS NULL AND revoked_at IS NULL",
                    [ts(now)],
                )?;
                tx.execute(
                    "INSERT INTO setup_tokens (token_hash, issued_at, expires_at) VALUES (?1, ?2, ?3)",
                    params![hash, ts(now), ts(expires_at)],
                )?;
                Ok(())
            })
            .await
    }

    async fn check_setup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        consume: bool,
    ) -> Result<SetupTokenCheck, StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .write(move |tx| {
                let verdict = setup_token_verdict(tx, &hash, now)?;
                if consume && verdict == SetupTokenCheck::Valid {
                    consume_setup_token(tx, &hash, now)?;
                }
                Ok(verdict)
            })
            .await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.pool
            .read(move |c| {
                Ok(
                    c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                        r.get(0)
                    })
                    .optional()?,
                )
            })
            .await
    }

    async fn set_setting(
        &self,
        key: &str,
        value: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.pool
            .write(move |tx| put_setting(tx, &key, &value, now))
            .await
    }
}

/// What presenting the setup token with hash `hash` finds at `now`.
pub(super) fn setup_token_verdict(
    tx: &Transaction<'_>,
    hash: &str,
    now: OffsetDateTime,
) -> Result<SetupTokenCheck, StoreError> {
    let row: Option<(i64, Option<i64>, Option<i64>)> = tx
        .query_row(
            "SELECT expires_at, used_at, revoked_at FROM setup_tokens WHERE token_hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match row {
        None | Some((_, None, Some(_))) => SetupTokenCheck::Unknown,
        Some((_, Some(_), _)) => SetupTokenCheck::Used,
        Some((expires, None, None)) if expires <= ts(now) => SetupTokenCheck::Expired,
        Some(_) => SetupTokenCheck::Valid,
    })
}

/// Uses up a setup token.
pub(super) fn consume_setup_token(
    tx: &Transaction<'_>,
    hash: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE setup_tokens SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL",
        params![ts(now), hash],
    )?;
    Ok(())
}

/// A platform setting, read inside a transaction.
pub(super) fn setting_in(tx: &Transaction<'_>, key: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Sets a platform setting.
pub(super) fn put_setting(
    tx: &Transaction<'_>,
    key: &str,
    value: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, ts(now)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};
    use time::OffsetDateTime;

    use super::MIGRATIONS;
    use crate::events::{EventQuery, GENESIS, Order, VerifyOptions, chain_hash};
    use crate::sqlite::events::{extend_lookups, query_conn, verify_conn};
    use crate::sqlite::migrate;
    use kura_types::{Action, Actor, Outcome, SecurityEvent, TeamId};

    /// A log written in the column layout before migration 16 keeps every
    /// byte its chain covers: it verifies from the same genesis to the same
    /// head, its lookups find entries by the id in their bodies, and
    /// queries filter on the bodies as they did on the columns.
    #[test]
    fn the_slimmer_event_rows_keep_the_chain_and_every_filter() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = std::path::Path::new("platform.db");
        migrate(&mut conn, path, &MIGRATIONS[..15]).unwrap();
        let team = TeamId::new();
        let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let mut prev = GENESIS;
        let mut events = Vec::new();
        for (i, (action, outcome)) in [
            ("auth.signin.failed", Outcome::Failure),
            ("auth.signin.succeeded", Outcome::Success),
            ("authz.check", Outcome::Denied),
        ]
        .into_iter()
        .enumerate()
        {
            let mut event = SecurityEvent::new(
                now + time::Duration::seconds(i as i64),
                Actor::Account {
                    id: format!("acc-{i}"),
                },
                Action::parse(action).unwrap(),
                outcome,
            )
            .with_request_id(format!("req-{i}"));
            if i != 1 {
                event = event.with_team(team);
            }
            let seq = i as u64 + 1;
            let body = event.canonical_json().unwrap();
            let hash = chain_hash(seq, &prev, &body);
            conn.execute(
                "INSERT INTO events (seq, id, time, team, action, outcome, actor, source,
                                     request_id, body, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10, ?11)",
                params![
                    seq as i64,
                    event.id.to_string(),
                    i64::try_from(event.time.unix_timestamp_nanos()).unwrap(),
                    event.team.map(|t| t.to_string()),
                    action,
                    outcome.as_str(),
                    event.actor.key(),
                    event.request_id,
                    body,
                    &prev[..],
                    &hash[..],
                ],
            )
            .unwrap();
            prev = hash;
            events.push(event);
        }

        assert_eq!(migrate(&mut conn, path, MIGRATIONS).unwrap(), 1);
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('events') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["seq", "time", "body", "hash"]);

        let report = verify_conn(&conn, &VerifyOptions::default()).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, 3);
        assert_eq!(report.head_hash, Some(prev));

        let tx = conn.transaction().unwrap();
        assert_eq!(extend_lookups(&tx).unwrap(), 3);
        tx.commit().unwrap();
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM event_ids WHERE id = ?1",
                [events[2].id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seq, 3);

        let found = |q: EventQuery| -> Vec<u64> {
            let q = EventQuery {
                order: Order::OldestFirst,
                ..q
            };
            let page = query_conn(&conn, &q).unwrap();
            page.events.iter().map(|e| e.seq).collect()
        };
        assert_eq!(
            found(EventQuery {
                team: Some(team),
                ..EventQuery::default()
            }),
            [1, 3]
        );
        assert_eq!(
            found(EventQuery {
                action_prefix: Some("auth".into()),
                ..EventQuery::default()
            }),
            [1, 2],
            "`auth` is a whole segment: `authz.check` is not under it"
        );
        assert_eq!(
            found(EventQuery {
                actor: Some("account:acc-1".into()),
                outcome: Some(Outcome::Success),
                request_id: Some("req-1".into()),
                ..EventQuery::default()
            }),
            [2]
        );
        assert_eq!(
            found(EventQuery {
                since: Some(now + time::Duration::seconds(1)),
                until: Some(now + time::Duration::seconds(2)),
                ..EventQuery::default()
            }),
            [2]
        );
    }
}
