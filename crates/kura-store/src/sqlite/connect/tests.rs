//! Unit tests of the Kura Connect store: leases, takeovers, the team
//! concurrency limit, and schedules that fire once per fire time.

use kura_crypto::DataKey;
use time::Duration;

use super::*;
use crate::sqlite::{Durability, SqlitePlatformStore};

fn open(dir: &tempfile::TempDir) -> SqliteConnectStore {
    let platform = SqlitePlatformStore::open(
        &dir.path().join("platform.db"),
        &DataKey::from_bytes([7; 32]),
        true,
        Durability::Full,
        2,
    )
    .unwrap();
    SqliteConnectStore::new(platform.pool().clone())
}

async fn flow(store: &SqliteConnectStore, team: TeamId, now: OffsetDateTime) -> FlowRecord {
    let f = FlowRecord {
        id: FlowId::new(),
        team,
        name: "f".into(),
        enabled: true,
        version: 1,
        webhook_token: FlowId::new().to_string(),
        webhook_secret: vec![1; 32],
        created_at: now,
        updated_at: now,
    };
    let v = FlowVersionRecord {
        flow: f.id,
        version: 1,
        document: "{}".into(),
        created_by: "test".into(),
        created_at: now,
    };
    store.create_flow(f.clone(), v, Vec::new()).await.unwrap();
    f
}

fn new_run(f: &FlowRecord, at: OffsetDateTime) -> NewRun {
    NewRun {
        id: RunId::new(),
        team: f.team,
        flow: f.id,
        version: 1,
        trigger: "manual".into(),
        input: "{}".into(),
        context: "{}".into(),
        first_step: Some("a".into()),
        at,
    }
}

fn step(run: RunId, at: OffsetDateTime) -> StepRecord {
    StepRecord {
        run,
        seq: 1,
        step: "a".into(),
        status: "succeeded".into(),
        input: "{}".into(),
        output: Some("1".into()),
        error: None,
        attempts: 1,
        idempotency_key: None,
        started_at: at,
        finished_at: Some(at),
    }
}

#[tokio::test]
async fn an_expired_lease_passes_the_run_to_another_worker_and_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let f = flow(&store, TeamId::new(), now).await;
    let run = new_run(&f, now);
    let id = run.id;
    store.insert_run(run).await.unwrap();
    let a = store
        .claim_run("a", now, now + Duration::seconds(10), 4, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.id, a.claims), (id, 0));
    // Within the lease nobody else gets it.
    let none = store
        .claim_run(
            "b",
            now + Duration::seconds(5),
            now + Duration::seconds(15),
            4,
            None,
        )
        .await
        .unwrap();
    assert!(none.is_none());
    // After it, worker b takes it over (counted) and a is fenced off.
    let later = now + Duration::seconds(11);
    let b = store
        .claim_run("b", later, later + Duration::seconds(10), 4, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.id, b.claims, b.lease_owner.as_deref()),
        (id, 1, Some("b"))
    );
    let advance = |owner: &str| RunAdvance {
        run: id,
        owner: owner.into(),
        step: step(id, later),
        context: "{\"a\":1}".into(),
        next_step: None,
        status: RunStatus::Succeeded,
        not_before: None,
        response: None,
        error: None,
        lease_until: None,
        at: later,
    };
    assert!(
        !store.advance(advance("a")).await.unwrap(),
        "a lost its lease"
    );
    assert!(store.steps(id).await.unwrap().is_empty(), "a wrote nothing");
    assert!(store.advance(advance("b")).await.unwrap());
    let done = store.run(id).await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(store.steps(id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_team_at_its_limit_waits_and_other_teams_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let busy = flow(&store, TeamId::new(), now).await;
    let other = flow(&store, TeamId::new(), now).await;
    for _ in 0..2 {
        store.insert_run(new_run(&busy, now)).await.unwrap();
    }
    store.insert_run(new_run(&other, now)).await.unwrap();
    let lease = now + Duration::seconds(60);
    let first = store
        .claim_run("w", now, lease, 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.team, busy.team);
    let second = store
        .claim_run("w", now, lease, 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.team, other.team, "the busy team's second run waits");
    assert!(
        store
            .claim_run("w", now, lease, 1, None)
            .await
            .unwrap()
            .is_none()
    );
    // A webhook run of the busy team is queued, not claimed.
    assert!(
        !store
            .insert_claimed_run(new_run(&busy, now), "w", lease, 1)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_run_computed_in_memory_is_recorded_finished_in_one_write_or_queued_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let team = TeamId::new();
    let f = flow(&store, team, now).await;
    let finished = |new: NewRun| {
        let id = new.id;
        let mut second = step(id, now);
        second.seq = 2;
        second.step = "b".into();
        FinishedRun {
            new,
            status: RunStatus::Succeeded,
            context: r#"{"a":1,"b":1}"#.into(),
            response: Some(r#"{"status":200,"body":1}"#.into()),
            error: None,
            steps: vec![step(id, now), second],
            finished_at: now,
        }
    };
    // Only a final status can be recorded this way; a refusal writes nothing.
    let mut running = finished(new_run(&f, now));
    running.status = RunStatus::Running;
    let refused = running.new.id;
    assert!(store.insert_finished_run(running, 1).await.is_err());
    assert!(store.run(refused).await.unwrap().is_none());
    let done = finished(new_run(&f, now));
    let id = done.new.id;
    assert!(store.insert_finished_run(done, 1).await.unwrap());
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.steps_done, 2);
    assert_eq!(run.context, r#"{"a":1,"b":1}"#);
    assert_eq!(run.response.as_deref(), Some(r#"{"status":200,"body":1}"#));
    assert_eq!(
        (run.next_step, run.lease_owner, run.lease_until),
        (None, None, None)
    );
    assert_eq!((run.started_at, run.finished_at), (Some(now), Some(now)));
    let steps = store.steps(id).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.seq, s.step.as_str()))
            .collect::<Vec<_>>(),
        [(1, "a"), (2, "b")]
    );
    // A finished run holds no slot: the team can still claim one.
    assert!(
        store
            .insert_claimed_run(new_run(&f, now), "w", now + Duration::minutes(2), 1)
            .await
            .unwrap()
    );
    // Now at its limit of one running run, the team's next computed run
    // is queued from its start, without its steps.
    let queued = finished(new_run(&f, now));
    let id = queued.new.id;
    assert!(!store.insert_finished_run(queued, 1).await.unwrap());
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!((run.steps_done, run.context.as_str()), (0, "{}"));
    assert_eq!(run.next_step.as_deref(), Some("a"));
    assert!(store.steps(id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_schedule_fires_once_per_fire_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let f = flow(&store, TeamId::new(), now).await;
    let due_at = now - Duration::seconds(1);
    store
        .set_schedule(
            f.id,
            Some(ScheduleRecord {
                flow: f.id,
                team: f.team,
                cron: "* * * * *".into(),
                timezone: "UTC".into(),
                next_fire_at: due_at,
            }),
        )
        .await
        .unwrap();
    let due = store.due_schedules(now).await.unwrap();
    assert_eq!(due.len(), 1);
    let next = now + Duration::minutes(1);
    // Two nodes (or a restart) race for the same fire time: one wins.
    assert!(
        store
            .fire_schedule(&due[0], next, new_run(&f, now))
            .await
            .unwrap()
    );
    assert!(
        !store
            .fire_schedule(&due[0], next, new_run(&f, now))
            .await
            .unwrap()
    );
    let runs = store.runs(f.team, RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(store.due_schedules(now).await.unwrap().is_empty());
    // A disabled flow's schedule is not due.
    store
        .set_enabled(f.team, f.id, false, now, Vec::new())
        .await
        .unwrap();
    assert!(store.due_schedules(next).await.unwrap().is_empty());
}

fn event(team: TeamId, action: &str, at: OffsetDateTime) -> EventRecord {
    EventRecord::new(
        kura_types::SecurityEvent::new(
            at,
            kura_types::Actor::Account { id: "ann".into() },
            kura_types::Action::parse(action).unwrap(),
            kura_types::Outcome::Success,
        )
        .with_team(team),
    )
    .unwrap()
}

async fn logged(store: &SqliteConnectStore) -> Vec<String> {
    store
        .pool
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT json_extract(CAST(body AS TEXT), '$.action') FROM events ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn changes_commit_with_their_events_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let team = TeamId::new();
    let f = flow(&store, team, now).await;
    let created = event(team, "connect.flow.enabled", now);
    assert!(
        store
            .set_enabled(team, f.id, true, now, vec![created.clone()])
            .await
            .unwrap()
    );
    assert_eq!(logged(&store).await, ["connect.flow.enabled"]);

    // An event that cannot be appended (the log refuses it) fails the
    // change it describes, which leaves nothing behind.
    let refused = created.id().to_string();
    store
        .pool
        .write(move |tx| {
            Ok(tx.execute_batch(&format!(
                "CREATE TRIGGER refuse_event BEFORE INSERT ON events
                 WHEN json_extract(CAST(NEW.body AS TEXT), '$.id') = '{refused}'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;"
            ))?)
        })
        .await
        .unwrap();
    assert!(
        store
            .set_enabled(team, f.id, false, now, vec![created.clone()])
            .await
            .is_err()
    );
    assert!(store.flow(team, f.id).await.unwrap().unwrap().enabled);
    assert!(
        store
            .delete_flow(team, f.id, vec![created.clone()])
            .await
            .is_err()
    );
    assert!(store.flow(team, f.id).await.unwrap().is_some());
    let credential = FlowCredentialRecord {
        id: FlowCredentialId::new(),
        team,
        name: "crm".into(),
        kind: "bearer".into(),
        settings: "{}".into(),
        sealed: vec![1, 2, 3],
        created_by: "account:ann".into(),
        created_at: now,
    };
    assert!(
        store
            .create_credential(credential.clone(), vec![created.clone()])
            .await
            .is_err()
    );
    assert!(store.credentials(team).await.unwrap().is_empty());
    let run = new_run(&f, now);
    let id = run.id;
    store.insert_run(run).await.unwrap();
    assert!(
        store
            .cancel_run(team, id, now, vec![created])
            .await
            .is_err()
    );
    assert_eq!(
        store.run(id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );

    // With good events each change and its event land together; a change
    // that finds nothing to change records nothing.
    store
        .create_credential(
            credential.clone(),
            vec![event(team, "connect.credential.created", now)],
        )
        .await
        .unwrap();
    assert!(
        store
            .cancel_run(
                team,
                id,
                now,
                vec![event(team, "connect.run.cancelled", now)]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .cancel_run(
                team,
                id,
                now,
                vec![event(team, "connect.run.cancelled", now)]
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_flow(team, f.id, vec![event(team, "connect.flow.deleted", now)])
            .await
            .unwrap()
    );
    assert_eq!(
        logged(&store).await,
        [
            "connect.flow.enabled",
            "connect.credential.created",
            "connect.run.cancelled",
            "connect.flow.deleted",
        ]
    );
}

#[tokio::test]
async fn an_approval_is_decided_once_through_an_unspent_link_before_it_expires() {
    use crate::connect_approvals::{
        ApprovalDecision, ApprovalLinkRecord, ApprovalRecord, ApprovalStatus, ApprovalStore,
        DecisionOutcome,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let team = TeamId::new();
    let f = flow(&store, team, now).await;
    let run = new_run(&f, now);
    let run_id = run.id;
    assert!(
        store
            .insert_claimed_run(run, "w1", now + Duration::minutes(2), 10)
            .await
            .unwrap()
    );
    let approval = ApprovalRecord {
        id: kura_types::ApprovalId::new(),
        team,
        flow: f.id,
        run: run_id,
        step: "ask".into(),
        approvers: vec!["ann@example.org".into()],
        message: "ok?".into(),
        status: ApprovalStatus::Pending,
        decided_by: None,
        decided_via: None,
        comment: None,
        created_at: now,
        expires_at: now + Duration::hours(1),
        decided_at: None,
        closed: false,
    };
    let link = |hash: u8| ApprovalLinkRecord {
        token_hash: [hash; 32],
        approval: approval.id,
        approver: "ann@example.org".into(),
        expires_at: approval.expires_at,
        used_at: None,
    };
    // Only the worker holding the run opens its approval.
    assert!(
        !store
            .open_approval("w2", approval.clone(), vec![link(1)], Vec::new())
            .await
            .unwrap()
    );
    assert!(
        store
            .open_approval(
                "w1",
                approval.clone(),
                vec![link(1)],
                vec![event(team, "connect.approval.requested", now)]
            )
            .await
            .unwrap()
    );
    let decision = |link: Option<[u8; 32]>, at: OffsetDateTime, action: &str| ApprovalDecision {
        approval: approval.id,
        status: ApprovalStatus::Approved,
        by: "account:ann".into(),
        via: "link".into(),
        comment: None,
        link,
        at,
        events: vec![event(team, action, at)],
    };
    let later = now + Duration::hours(2);
    assert_eq!(
        store
            .decide(decision(Some([1; 32]), later, "connect.approval.approved"))
            .await
            .unwrap(),
        DecisionOutcome::Expired
    );
    assert_eq!(
        store
            .decide(decision(Some([9; 32]), now, "connect.approval.approved"))
            .await
            .unwrap(),
        DecisionOutcome::LinkUsed,
        "a link that was never issued"
    );
    // Decided while the run is still pausing (running): recorded; the
    // worker wakes the run once it has paused.
    assert_eq!(
        store
            .decide(decision(Some([1; 32]), now, "connect.approval.approved"))
            .await
            .unwrap(),
        DecisionOutcome::Recorded
    );
    assert_eq!(
        store
            .decide(decision(Some([1; 32]), now, "connect.approval.rejected"))
            .await
            .unwrap(),
        DecisionOutcome::NotPending
    );
    assert!(
        !store
            .time_out_approval(approval.id, later, Vec::new())
            .await
            .unwrap()
    );
    let stored = store.approval(approval.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ApprovalStatus::Approved);
    assert!(
        store
            .approval_link([1; 32])
            .await
            .unwrap()
            .unwrap()
            .used_at
            .is_some()
    );
    assert!(
        !store.wake_waiting_run(run_id, now).await.unwrap(),
        "still running"
    );
    assert_eq!(
        logged(&store).await,
        ["connect.approval.requested", "connect.approval.approved"]
    );
}

#[tokio::test]
async fn app_events_move_the_cursor_with_the_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let f = flow(&store, TeamId::new(), now).await;
    let sub = AppSubscriptionRecord {
        flow: f.id,
        team: f.team,
        app: kura_types::AppId::new(),
        cursor: 3,
    };
    store
        .set_app_subscription(f.id, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.app_subscriptions().await.unwrap(),
        std::slice::from_ref(&sub)
    );
    let runs = vec![new_run(&f, now), new_run(&f, now)];
    assert!(store.deliver_app_events(&sub, 9, runs).await.unwrap());
    // A second reader that read from the old place loses, and queues nothing.
    let late = vec![new_run(&f, now)];
    let late_id = late[0].id;
    assert!(!store.deliver_app_events(&sub, 9, late).await.unwrap());
    assert!(store.run(late_id).await.unwrap().is_none());
    assert_eq!(
        store.app_subscription(f.id).await.unwrap().unwrap().cursor,
        9
    );
    let queued = store.runs(f.team, RunFilter::default()).await.unwrap();
    assert_eq!(queued.len(), 2);
    // Disabled flows are not followed.
    store
        .set_enabled(f.team, f.id, false, now, Vec::new())
        .await
        .unwrap();
    assert!(store.app_subscriptions().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_the_holder_renews_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let f = flow(&store, TeamId::new(), now).await;
    let run = new_run(&f, now);
    let id = run.id;
    assert!(
        store
            .insert_claimed_run(run, "w1", now + Duration::seconds(10), 16)
            .await
            .unwrap()
    );
    let later = now + Duration::seconds(60);
    assert!(!store.renew_lease(id, "w2", later).await.unwrap());
    assert!(store.renew_lease(id, "w1", later).await.unwrap());
    // Renewed: another worker cannot take it over before the new expiry.
    let taken = store
        .claim_run("w2", now + Duration::seconds(30), later, 16, Some(id))
        .await
        .unwrap();
    assert!(taken.is_none());
}
