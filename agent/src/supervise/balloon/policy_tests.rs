use super::*;

fn policy() -> Policy {
    BalloonSettings {
        low_watermark_mib: Some(32),
        high_watermark_mib: Some(64),
        ..BalloonSettings::default()
    }
    .policy(512)
}

fn app(id: &str, declared: u64, target: u64, actual: u64, current_mib: u64) -> AppFigures {
    AppFigures {
        eu_id: id.into(),
        declared_mib: declared,
        target_mib: target,
        actual_mib: actual,
        memory_current_kib: Some(current_mib * 1024),
    }
}

/// Applies `changes` as the VMM and a willing guest would: target set, actual follows.
fn apply(apps: &mut [AppFigures], changes: &[Change]) {
    for c in changes {
        let a = apps.iter_mut().find(|a| a.eu_id == c.eu_id).unwrap();
        a.target_mib = c.target_mib;
        a.actual_mib = c.target_mib;
    }
}

#[test]
fn defaults_and_bounds() {
    let s = BalloonSettings::default();
    assert!(s.validate().is_ok());
    let p = s.policy(486);
    assert_eq!(
        (p.low_mib, p.high_mib),
        (30, 60),
        "1/16 and 1/8 of MemTotal"
    );
    let high_only = BalloonSettings {
        high_watermark_mib: Some(20),
        ..s
    };
    let p = high_only.policy(486);
    assert_eq!((p.low_mib, p.high_mib), (10, 20), "kept in order");
    for (bad, field) in [
        (BalloonSettings { tick_ms: 10, ..s }, "tick_ms"),
        (BalloonSettings { step_mib: 0, ..s }, "step_mib"),
        (
            BalloonSettings {
                floor_percent: 101,
                ..s
            },
            "floor_percent",
        ),
        (
            BalloonSettings {
                low_watermark_mib: Some(64),
                high_watermark_mib: Some(64),
                ..s
            },
            "high_watermark_mib",
        ),
    ] {
        assert_eq!(bad.validate().unwrap_err().0, field);
    }
    // The floor: 16 MiB, or a quarter of large guests.
    assert_eq!(p.max_target_mib(64), 48);
    assert_eq!(p.max_target_mib(256), 192);
    assert_eq!(p.max_target_mib(16), 0);
    assert_eq!(p.max_target_mib(8), 0);
}

#[test]
fn pressure_inflates_the_biggest_holder_first_in_steps() {
    let p = policy();
    let mut st = PolicyState::default();
    let apps = vec![app("eu-1", 64, 0, 0, 10), app("eu-2", 64, 0, 0, 40)];
    // 2 MiB short of the low watermark: one step's worth, from the app holding the most.
    let c = decide(&p, 30, &apps, &mut st);
    assert_eq!(
        c,
        vec![Change {
            eu_id: "eu-2".into(),
            target_mib: 2,
            why: Why::Pressure
        }]
    );
    // 20 MiB short: a step of 4 from each, no more in one tick.
    let mut st = PolicyState::default();
    let c = decide(&p, 12, &apps, &mut st);
    let t: Vec<_> = c.iter().map(|c| (c.eu_id.as_str(), c.target_mib)).collect();
    assert_eq!(t, vec![("eu-1", 4), ("eu-2", 4)]);
}

#[test]
fn targets_stay_within_declared_memory_above_the_floor() {
    let p = policy();
    let mut st = PolicyState::default();
    let mut apps = vec![app("eu-1", 64, 0, 0, 60), app("eu-2", 16, 0, 0, 16)];
    for _ in 0..40 {
        let c = decide(&p, 0, &apps, &mut st);
        assert!(
            c.iter().all(|c| c.eu_id == "eu-1"),
            "a 16 MiB guest is its floor: {c:?}"
        );
        apply(&mut apps, &c);
    }
    assert_eq!(apps[0].target_mib, 48, "64 declared - 16 floor");
    assert_eq!(apps[1].target_mib, 0);
}

#[test]
fn hysteresis_holds_between_the_watermarks_and_release_comes_back_step_by_step() {
    let p = policy();
    let mut st = PolicyState::default();
    let mut apps = vec![app("eu-1", 64, 12, 12, 30), app("eu-2", 64, 6, 6, 30)];
    for free in [32, 40, 64] {
        assert!(decide(&p, free, &apps, &mut st).is_empty(), "free {free}");
    }
    // 6 MiB above the high watermark: no more than that let go, the largest balloon first.
    let c = decide(&p, 70, &apps, &mut st);
    let t: Vec<_> = c.iter().map(|c| (c.eu_id.as_str(), c.target_mib)).collect();
    assert_eq!(t, vec![("eu-1", 8), ("eu-2", 4)]);
    assert!(c.iter().all(|c| c.why == Why::Release));
    apply(&mut apps, &c);
    // Pressure gone for good: every balloon ends empty.
    for _ in 0..10 {
        let c = decide(&p, 200, &apps, &mut st);
        apply(&mut apps, &c);
    }
    assert_eq!((apps[0].target_mib, apps[1].target_mib), (0, 0));
}

#[test]
fn a_guest_that_takes_pages_back_keeps_them() {
    let p = policy();
    let mut st = PolicyState::default();
    let mut apps = vec![app("eu-1", 64, 0, 0, 30)];
    for _ in 0..12 {
        let c = decide(&p, 0, &apps, &mut st);
        apply(&mut apps, &c);
    }
    assert_eq!(apps[0].target_mib, 48);
    // The guest needed memory: its driver deflated 20 MiB under the same target.
    apps[0].actual_mib = 28;
    apps[0].memory_current_kib = Some(50 << 10);
    let c = decide(&p, 0, &apps, &mut st);
    assert_eq!(
        c,
        vec![Change {
            eu_id: "eu-1".into(),
            target_mib: 28,
            why: Why::GuestNeed
        }]
    );
    apply(&mut apps, &c);
    // Pressure stays, but the guest's balloon is not pushed back up...
    for _ in 0..5 {
        assert!(decide(&p, 0, &apps, &mut st).is_empty());
    }
    // ... until the guest's memory falls (it freed what it held).
    apps[0].memory_current_kib = Some(40 << 10);
    let c = decide(&p, 0, &apps, &mut st);
    assert_eq!(c[0].target_mib, 32);
    assert_eq!(c[0].why, Why::Pressure);
}

#[test]
fn a_guest_still_inflating_is_not_pushed_and_a_new_run_starts_afresh() {
    let p = policy();
    let mut st = PolicyState::default();
    let mut apps = vec![app("eu-1", 64, 0, 0, 30)];
    let c = decide(&p, 0, &apps, &mut st);
    assert_eq!(c[0].target_mib, 4);
    apps[0].target_mib = 4; // the guest has not inflated yet
    assert!(decide(&p, 0, &apps, &mut st).is_empty());
    apps[0].actual_mib = 4;
    assert_eq!(decide(&p, 0, &apps, &mut st)[0].target_mib, 8);
    // The VMM restarted: target and actual 0, not a guest deflating.
    apps[0].target_mib = 0;
    apps[0].actual_mib = 0;
    let c = decide(&p, 0, &apps, &mut st);
    assert_eq!((c[0].target_mib, c[0].why), (4, Why::Pressure));
    // An app that is gone is forgotten.
    assert!(decide(&p, 0, &[], &mut st).is_empty());
    assert!(st.0.is_empty());
}
