//! Flow versions parsed once: a saved version never changes (every save
//! is a new version), so its document is parsed from the store's JSON the
//! first time a run needs it and shared by every later run of that version
//! in this process. The cache is bounded; a version pushed out is parsed
//! again when it is next needed.

use std::collections::HashMap;
use std::sync::Arc;

use kura_types::{FlowId, TeamId};
use parking_lot::Mutex;

use crate::document::{Action, FlowDocument};

/// Versions kept parsed at once.
const CAPACITY: usize = 256;

/// A parsed flow version.
#[derive(Debug)]
pub struct CompiledFlow {
    /// The version's document.
    pub document: FlowDocument,
    /// Whether every step is free of side effects and of waiting
    /// (`transform`, `condition`, `respond`, `fail`), so a run can execute
    /// whole in the request and be recorded in one transaction.
    pub(crate) inline: bool,
}

impl CompiledFlow {
    pub(crate) fn new(document: FlowDocument) -> Self {
        let inline = document.steps.iter().all(|s| is_inline(&s.action));
        Self { document, inline }
    }
}

/// Steps that only compute from the run's input and earlier outputs: they
/// touch nothing outside the run and never pause it, so running one again
/// after a crash cannot do anything twice.
pub(crate) fn is_inline(action: &Action) -> bool {
    matches!(
        action,
        Action::Transform { .. }
            | Action::Condition { .. }
            | Action::Respond { .. }
            | Action::Fail { .. }
    )
}

type Key = (TeamId, FlowId, u32);

/// The bounded cache of parsed versions, by team, flow and version.
#[derive(Debug, Default)]
pub(crate) struct FlowCache {
    entries: Mutex<HashMap<Key, Arc<CompiledFlow>>>,
}

impl FlowCache {
    pub(crate) fn get(
        &self,
        team: TeamId,
        flow: FlowId,
        version: u32,
    ) -> Option<Arc<CompiledFlow>> {
        self.entries.lock().get(&(team, flow, version)).cloned()
    }

    pub(crate) fn insert(
        &self,
        team: TeamId,
        flow: FlowId,
        version: u32,
        compiled: Arc<CompiledFlow>,
    ) {
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&(team, flow, version)) {
            // Any entry will do: a version pushed out is only parsed again.
            if let Some(old) = entries.keys().next().copied() {
                entries.remove(&old);
            }
        }
        entries.insert((team, flow, version), compiled);
    }

    /// Forgets a flow's versions (the flow was deleted).
    pub(crate) fn forget(&self, flow: FlowId) {
        self.entries.lock().retain(|(_, f, _), _| *f != flow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(steps: serde_json::Value) -> FlowDocument {
        serde_json::from_value(serde_json::json!({
            "name": "t", "trigger": {"kind": "webhook"}, "steps": steps
        }))
        .unwrap()
    }

    #[test]
    fn only_flows_of_computing_steps_run_inline() {
        let pure = doc(serde_json::json!([
            {"id": "a", "kind": "transform", "set": {"x": "1"}},
            {"id": "b", "kind": "condition", "branches": [{"when": "steps.a.x", "goto": "c"}]},
            {"id": "c", "kind": "respond", "body": "steps.a"},
            {"id": "d", "kind": "fail", "message": "no"}
        ]));
        assert!(CompiledFlow::new(pure).inline);
        for step in [
            serde_json::json!({"id": "s", "kind": "store_set", "key": "k", "value": "1"}),
            serde_json::json!({"id": "s", "kind": "store_get", "key": "k"}),
            serde_json::json!({"id": "s", "kind": "delay", "seconds": 1}),
            serde_json::json!({"id": "s", "kind": "http", "method": "GET", "url": "https://example.test/"}),
        ] {
            let d = doc(serde_json::json!([
                {"id": "a", "kind": "transform", "set": {"x": "1"}},
                step.clone()
            ]));
            assert!(!CompiledFlow::new(d).inline, "{step}");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_keyed_by_team_flow_and_version() {
        let cache = FlowCache::default();
        let team = TeamId::new();
        let flow = FlowId::new();
        let one = Arc::new(CompiledFlow::new(doc(serde_json::json!([]))));
        cache.insert(team, flow, 1, Arc::clone(&one));
        assert!(cache.get(team, flow, 1).is_some());
        assert!(cache.get(team, flow, 2).is_none());
        assert!(cache.get(TeamId::new(), flow, 1).is_none());
        for v in 2..(CAPACITY as u32 + 50) {
            cache.insert(team, flow, v, Arc::clone(&one));
        }
        assert_eq!(cache.entries.lock().len(), CAPACITY);
        cache.forget(flow);
        assert!(cache.entries.lock().is_empty());
    }
}
