//! The console's record browser runs on the Data API's own read and write
//! paths (`reads::page`, `writes::write`: find, read one, create, edit,
//! delete), in a short app session opened
//! for the signed-in Kura ID account: the app account mapped to it decides
//! the privilege set, so the console shows and changes exactly what the
//! Data API would allow that person. The session ends with the request.

use std::sync::Arc;

use kura_apps::sessions::FmSession;
use kura_apps::{AppCredential, FmError, LoadedApp};
use kura_types::AccountId;
use serde_json::{Map, Value};

use super::reads::{PageAnswer, PageRequest, page};
use super::records::{Call, Options, Scripts};
use super::writes::{WriteOp, write};
use crate::http::AppState;

/// An app session for a Kura ID account (the caller has asked the policy).
pub(crate) struct Browse {
    app: Arc<LoadedApp>,
    token: String,
    session: FmSession,
}

impl Browse {
    /// Opens a session as the app account mapped to `account`.
    pub(crate) async fn open(
        state: &AppState,
        app: Arc<LoadedApp>,
        account: AccountId,
    ) -> Result<Self, FmError> {
        let (token, session) = state
            .apps
            .login(&app, AppCredential::KuraId(account))
            .await
            .map_err(|f| f.fm_error())?;
        Ok(Self {
            app,
            token,
            session,
        })
    }

    /// The privilege set in force.
    pub(crate) fn privilege_set(&self) -> &str {
        &self.session.privilege_set
    }

    /// The app account's name.
    pub(crate) fn account(&self) -> &str {
        &self.session.account
    }

    fn call(&self, state: &AppState, layout: &str) -> Call {
        let record = self.app.record();
        Call {
            schema: self.app.schema(),
            session: self.session.clone(),
            layout: layout.to_owned(),
            database: record.name.clone(),
            container_base: format!("/console/containers/{}", record.id),
            key: Arc::clone(&state.container_key),
            now: state.clock.now(),
            app: Arc::clone(&self.app),
        }
    }

    /// A page of a layout's records: `find` is a Data API find request's
    /// `query` array, `sort` (field, descending) pairs. Returns the Data
    /// API's `{ data, dataInfo }`; no match is FileMaker's 401.
    pub(crate) async fn page(
        &self,
        state: &AppState,
        layout: &str,
        find: Option<Value>,
        sort: Vec<(String, bool)>,
        offset: u64,
        limit: u64,
    ) -> Result<Value, FmError> {
        let req = PageRequest {
            filter: find,
            rid: None,
            offset,
            limit,
            sort,
            portals: Some(Vec::new()),
            ranges: Default::default(),
            format: Default::default(),
            response_layout: None,
            scripts: Scripts::default(),
        };
        page(self.call(state, layout), req)
            .await
            .and_then(PageAnswer::into_value)
    }

    /// Creates a record through `layout`.
    pub(crate) async fn create(
        &self,
        state: &AppState,
        layout: &str,
        fields: Map<String, Value>,
    ) -> Result<Value, FmError> {
        let o = Options { values: Map::new() };
        let call = self.call(state, layout);
        let op = WriteOp::create(&call, &o, &fields, Map::new())?;
        write(call, op, &o).await
    }

    /// One record through `layout` (the Data API's `{ data, dataInfo }`
    /// with at most one row); a record the privilege set hides is
    /// FileMaker's 101.
    pub(crate) async fn record(
        &self,
        state: &AppState,
        layout: &str,
        rid: i64,
    ) -> Result<Value, FmError> {
        let req = PageRequest {
            filter: None,
            rid: Some(rid),
            offset: 1,
            limit: 1,
            sort: Vec::new(),
            portals: Some(Vec::new()),
            ranges: Default::default(),
            format: Default::default(),
            response_layout: None,
            scripts: Scripts::default(),
        };
        page(self.call(state, layout), req)
            .await
            .and_then(PageAnswer::into_value)
    }

    /// Changes a record's fields through `layout`; with `modid`, only if
    /// nobody changed the record since it was read (else FileMaker's 306).
    pub(crate) async fn edit(
        &self,
        state: &AppState,
        layout: &str,
        rid: i64,
        modid: Option<i64>,
        fields: Map<String, Value>,
    ) -> Result<Value, FmError> {
        let op = WriteOp::Edit {
            rid,
            modid,
            fields,
            portals: Map::new(),
        };
        let o = Options { values: Map::new() };
        write(self.call(state, layout), op, &o).await
    }

    /// Deletes a record through `layout`.
    pub(crate) async fn delete(
        &self,
        state: &AppState,
        layout: &str,
        rid: i64,
    ) -> Result<Value, FmError> {
        let o = Options { values: Map::new() };
        write(self.call(state, layout), WriteOp::Delete { rid }, &o).await
    }

    /// Ends the session.
    pub(crate) fn close(self, state: &AppState) {
        state.apps.sessions.close(&self.token, self.app.record().id);
    }
}
