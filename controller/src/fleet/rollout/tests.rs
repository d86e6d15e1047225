use super::*;

fn rollout(canary: i64, wave_size: i64, in_flight: i64, pct: i64) -> Rollout {
    Rollout {
        id: 1,
        deployment_id: 2,
        previous_id: Some(1),
        canary,
        wave_size,
        max_in_flight: in_flight,
        max_failure_pct: pct,
        state: RolloutState::Running,
        wave: -1,
        accepted_wave: -1,
        reason: None,
        created: 0,
        updated: 0,
    }
}

fn targets(n: usize) -> Vec<TargetView> {
    (0..n)
        .map(|i| TargetView {
            endpoint_id: format!("os::{i}"),
            wave: None,
            state: TargetState::Pending,
            online: true,
            inventory_at: Some(1),
            has_new: false,
            du: Some(format!("du-{i}")),
            prev_version: Some("1.0".into()),
            prev_url: Some("http://h/app-1.0".into()),
            op: None,
        })
        .collect()
}

/// Stores a step's changes (what `serve` does through the store).
fn apply(r: &mut Rollout, ts: &mut [TargetView], s: &Step) {
    for c in &s.targets {
        let t = ts
            .iter_mut()
            .find(|t| t.endpoint_id == c.endpoint_id)
            .unwrap();
        t.state = c.state;
        t.wave = c.wave;
    }
    if let Some((state, wave, reason)) = &s.rollout {
        r.state = *state;
        r.wave = *wave;
        r.reason = reason.clone();
    }
}

fn run(r: &mut Rollout, ts: &mut [TargetView]) -> Step {
    let s = step(r, true, "app", "2.0", ts);
    apply(r, ts, &s);
    s
}

fn with(ts: &[TargetView], s: TargetState) -> Vec<usize> {
    (0..ts.len()).filter(|&i| ts[i].state == s).collect()
}

/// The agent answered the operation and its inventory was read after.
fn took(t: &mut TargetView) {
    t.op = Some(LastOp {
        state: "done".into(),
        finished: Some(10),
        ..LastOp::default()
    });
    t.inventory_at = Some(11);
    t.has_new = true;
}

fn failed(t: &mut TargetView, code: i64) {
    t.op = Some(LastOp {
        state: "failed".into(),
        fault_code: Some(code),
        fault_message: Some("digest mismatch".into()),
        finished: Some(10),
        ..LastOp::default()
    });
}

#[test]
fn a_canary_then_waves_with_a_maximum_in_flight() {
    let mut r = rollout(1, 4, 2, 50);
    let mut ts = targets(9);
    run(&mut r, &mut ts);
    assert_eq!(r.wave, 0, "the canary");
    assert_eq!(with(&ts, TargetState::Active), [0]);
    // Nothing more while the canary is out.
    assert_eq!(run(&mut r, &mut ts), Step::default());
    took(&mut ts[0]);
    run(&mut r, &mut ts);
    assert_eq!(ts[0].state, TargetState::Done);
    assert_eq!(r.wave, 1);
    // A wave of 4, 2 in flight at once.
    assert_eq!(with(&ts, TargetState::Active), [1, 2]);
    assert_eq!(with(&ts, TargetState::Queued), [3, 4]);
    assert!(ts[3..5].iter().all(|t| t.wave == Some(1)));
    took(&mut ts[1]);
    run(&mut r, &mut ts);
    assert_eq!(with(&ts, TargetState::Active), [2, 3]);
    assert_eq!(r.wave, 1, "the wave is not over");
    for i in 2..5 {
        took(&mut ts[i]);
        run(&mut r, &mut ts);
    }
    assert_eq!(r.wave, 2);
    assert_eq!(with(&ts, TargetState::Active), [5, 6]);
    for i in 5..9 {
        took(&mut ts[i]);
        run(&mut r, &mut ts);
    }
    assert_eq!(r.state, RolloutState::Done);
    assert_eq!(r.reason, None);
    assert_eq!(with(&ts, TargetState::Done).len(), 9);
    assert_eq!(run(&mut r, &mut ts), Step::default(), "done is final");
}

#[test]
fn a_wave_whose_failures_pass_the_threshold_pauses_it_until_resumed() {
    let mut r = rollout(1, 3, 3, 50);
    let mut ts = targets(8);
    run(&mut r, &mut ts);
    took(&mut ts[0]);
    run(&mut r, &mut ts);
    assert_eq!(with(&ts, TargetState::Active), [1, 2, 3]);
    // One of three failed: 33%, not over 50%.
    failed(&mut ts[1], 7035);
    let s = run(&mut r, &mut ts);
    assert_eq!(r.state, RolloutState::Running);
    assert_eq!(
        s.targets,
        [TargetChange {
            endpoint_id: "os::1".into(),
            state: TargetState::Failed,
            wave: Some(1),
            fault: Some((7035, "digest mismatch".into())),
        }]
    );
    // Two of three: paused at once, though the third is still out.
    failed(&mut ts[2], 7035);
    run(&mut r, &mut ts);
    assert_eq!(r.state, RolloutState::Paused);
    assert_eq!(r.reason.as_deref(), Some("wave 1: 2 of 3 failed, over 50%"));
    // The one in flight ends and is recorded; no next wave.
    took(&mut ts[3]);
    run(&mut r, &mut ts);
    assert_eq!(ts[3].state, TargetState::Done);
    assert_eq!(r.state, RolloutState::Paused);
    assert_eq!(with(&ts, TargetState::Pending), [4, 5, 6, 7]);
    // The operator resumes: the wave's failures are accepted, the next wave goes.
    r.state = RolloutState::Running;
    r.accepted_wave = r.wave;
    run(&mut r, &mut ts);
    assert_eq!(r.wave, 2);
    assert_eq!(with(&ts, TargetState::Active), [4, 5, 6]);
    // A failed canary pauses too (1 of 1).
    let mut r = rollout(1, 3, 3, 50);
    let mut ts = targets(4);
    run(&mut r, &mut ts);
    failed(&mut ts[0], 7035);
    run(&mut r, &mut ts);
    assert_eq!(r.state, RolloutState::Paused);
    assert_eq!(with(&ts, TargetState::Pending), [1, 2, 3]);
}

#[test]
fn an_answer_is_judged_only_on_the_inventory_read_after_it() {
    let mut r = rollout(1, 1, 1, 0);
    let mut ts = targets(2);
    run(&mut r, &mut ts);
    ts[0].op = Some(LastOp {
        state: "done".into(),
        finished: Some(10),
        ..LastOp::default()
    });
    ts[0].inventory_at = Some(9);
    assert_eq!(run(&mut r, &mut ts), Step::default(), "wait for the Get");
    ts[0].inventory_at = Some(12);
    run(&mut r, &mut ts);
    assert_eq!(ts[0].state, TargetState::Failed);
    assert_eq!(r.state, RolloutState::Paused, "0% allowed");
    // A lost operation the agent did carry out: done after all.
    ts[0].has_new = true;
    run(&mut r, &mut ts);
    assert_eq!(ts[0].state, TargetState::Done);
}

#[test]
fn a_lost_operation_is_not_a_failure() {
    let mut r = rollout(1, 1, 1, 0);
    let mut ts = targets(2);
    run(&mut r, &mut ts);
    ts[0].op = Some(LastOp {
        state: "lost".into(),
        fault_code: Some(0),
        fault_message: Some("no result: the controller that sent it stopped".into()),
        finished: Some(10),
        ..LastOp::default()
    });
    ts[0].inventory_at = Some(12);
    assert_eq!(
        run(&mut r, &mut ts),
        Step::default(),
        "still active: sent again"
    );
    assert_eq!(r.state, RolloutState::Running);
    // Gone as well: back to the pool.
    ts[0].online = false;
    run(&mut r, &mut ts);
    assert_eq!(ts[0].state, TargetState::Pending);
    // A lost rollback is sent again.
    let mut r = rollout(1, 1, 1, 0);
    r.state = RolloutState::RollingBack;
    let mut ts = targets(1);
    took(&mut ts[0]);
    ts[0].state = TargetState::Rollback;
    ts[0].op = Some(LastOp {
        rollback: true,
        state: "lost".into(),
        finished: Some(10),
        ..LastOp::default()
    });
    assert_eq!(run(&mut r, &mut ts).rollbacks.len(), 1);
}

#[test]
fn offline_agents_wait_for_a_later_wave_or_the_reconciliation() {
    let mut r = rollout(2, 2, 2, 50);
    let mut ts = targets(4);
    ts[0].online = false;
    run(&mut r, &mut ts);
    assert_eq!(with(&ts, TargetState::Active), [1, 2]);
    // Active, nothing sent, then gone: back to the pool.
    ts[2].online = false;
    took(&mut ts[1]);
    run(&mut r, &mut ts);
    assert_eq!(ts[2].state, TargetState::Pending);
    assert_eq!(ts[2].wave, None);
    assert_eq!(with(&ts, TargetState::Active), [3]);
    took(&mut ts[3]);
    run(&mut r, &mut ts);
    assert_eq!(r.state, RolloutState::Done);
    assert_eq!(
        r.reason.as_deref(),
        Some("2 target(s) offline, left to the reconciliation")
    );
}

#[test]
fn a_superseded_deployment_aborts_its_rollout() {
    let r = rollout(1, 1, 1, 50);
    let s = step(&r, false, "app", "2.0", &targets(2));
    assert!(matches!(
        s.rollout,
        Some((RolloutState::Aborted, _, Some(_)))
    ));
    assert!(s.targets.is_empty());
    let mut r = rollout(1, 1, 1, 50);
    r.state = RolloutState::Aborted;
    assert_eq!(step(&r, true, "app", "2.0", &targets(2)), Step::default());
}

#[test]
fn rollback_sends_back_only_the_agents_that_took_the_new_version() {
    let mut r = rollout(1, 3, 2, 50);
    r.state = RolloutState::RollingBack;
    r.wave = 1;
    let mut ts = targets(7);
    // 0, 1: took it (1 had no app before: uninstall); 2: failed, still on 1.0; 3: never in a
    // wave; 4: took it but is offline; 5: took it, third in line (2 in flight at most);
    // 6: had 2.0 before the rollout.
    for i in [0, 1, 4, 5] {
        took(&mut ts[i]);
        ts[i].state = TargetState::Done;
    }
    ts[1].prev_version = None;
    ts[1].prev_url = None;
    failed(&mut ts[2], 7035);
    ts[2].state = TargetState::Failed;
    ts[4].online = false;
    ts[6].has_new = true;
    ts[6].prev_version = Some("2.0".into());
    let s = run(&mut r, &mut ts);
    assert_eq!(
        s.rollbacks,
        [
            RollbackOp {
                agent: "os::0".into(),
                du: "du-0".into(),
                url: Some("http://h/app-1.0".into())
            },
            RollbackOp {
                agent: "os::1".into(),
                du: "du-1".into(),
                url: None
            },
        ]
    );
    assert_eq!(with(&ts, TargetState::Rollback), [0, 1]);
    assert_eq!(r.state, RolloutState::RollingBack);
    // Sent: in flight.
    for i in [0, 1] {
        ts[i].op = Some(LastOp {
            rollback: true,
            state: "sent".into(),
            ..LastOp::default()
        });
    }
    let s = run(&mut r, &mut ts);
    assert!(s.rollbacks.is_empty(), "2 in flight at most: {s:?}");
    // 0 back on 1.0; 1's uninstall failed.
    ts[0].op = Some(LastOp {
        rollback: true,
        state: "done".into(),
        finished: Some(20),
        ..LastOp::default()
    });
    ts[0].inventory_at = Some(21);
    ts[0].has_new = false;
    ts[1].op = Some(LastOp {
        rollback: true,
        state: "failed".into(),
        fault_code: Some(7002),
        fault_message: Some("refused".into()),
        finished: Some(20),
    });
    let s = run(&mut r, &mut ts);
    assert_eq!(s.rollbacks.len(), 1);
    assert_eq!(s.rollbacks[0].agent, "os::5");
    assert_eq!(ts[0].state, TargetState::RolledBack);
    assert_eq!(ts[1].state, TargetState::RollbackFailed);
    assert_eq!(r.state, RolloutState::RollingBack);
    ts[5].op = Some(LastOp {
        rollback: true,
        state: "done".into(),
        finished: Some(30),
        ..LastOp::default()
    });
    ts[5].inventory_at = Some(31);
    ts[5].has_new = false;
    run(&mut r, &mut ts);
    assert_eq!(r.state, RolloutState::RolledBack);
    assert_eq!(
        r.reason.as_deref(),
        Some("1 target(s) with the new version were offline")
    );
    // The others were left alone.
    assert_eq!(ts[2].state, TargetState::Failed);
    assert_eq!(ts[3].state, TargetState::Pending);
    assert_eq!(ts[6].state, TargetState::Pending);
}

#[test]
fn a_rollback_waits_for_the_inventory_after_an_answered_update() {
    let mut r = rollout(1, 1, 1, 50);
    r.state = RolloutState::RollingBack;
    let mut ts = targets(1);
    ts[0].state = TargetState::Active;
    // The update was answered; the inventory read before it still says 1.0.
    ts[0].op = Some(LastOp {
        state: "done".into(),
        finished: Some(10),
        ..LastOp::default()
    });
    ts[0].inventory_at = Some(9);
    assert_eq!(run(&mut r, &mut ts), Step::default(), "not rolled back yet");
    ts[0].inventory_at = Some(11);
    ts[0].has_new = true;
    let s = run(&mut r, &mut ts);
    assert_eq!(s.rollbacks.len(), 1, "{s:?}");
    assert_eq!(r.state, RolloutState::RollingBack);
}

#[test]
fn states_round_trip_through_their_words() {
    for s in [
        RolloutState::Running,
        RolloutState::Paused,
        RolloutState::Done,
        RolloutState::Aborted,
        RolloutState::RollingBack,
        RolloutState::RolledBack,
    ] {
        assert_eq!(RolloutState::parse(s.as_str()), Some(s));
    }
    for s in [
        TargetState::Pending,
        TargetState::Queued,
        TargetState::Active,
        TargetState::Done,
        TargetState::Failed,
        TargetState::Rollback,
        TargetState::RolledBack,
        TargetState::RollbackFailed,
    ] {
        assert_eq!(TargetState::parse(s.as_str()), Some(s));
    }
    assert_eq!(TargetState::parse("bogus"), None);
}
