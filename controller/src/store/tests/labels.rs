//! Labels on agents, on both databases.

use super::super::labels::{LabelChange, LabelOutcome, MAX_LABELS};
use super::{inv, schema, Backend, Store};
use std::collections::BTreeMap;

on_both!(
    labels_change_all_or_nothing_and_come_with_the_agent,
    a_version_7_database_gains_labels_keeping_its_agents,
    two_changes_at_once_cannot_pass_the_bound_together,
);

fn change(set: &[&str], remove: &[&str]) -> LabelChange {
    let s: Vec<String> = set.iter().map(|w| w.to_string()).collect();
    let r: Vec<String> = remove.iter().map(|w| w.to_string()).collect();
    LabelChange::new(&s, &r).unwrap()
}

fn labels(l: &[(&str, &str)]) -> LabelOutcome {
    LabelOutcome::Labels(
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn labels_change_all_or_nothing_and_come_with_the_agent(b: &Backend) {
    let mut s = b.open();
    for a in ["os::a", "os::b"] {
        s.save_inventory(a, &inv(&[]), 1).unwrap();
    }
    let c = change(&["site=paris", "tier=beta", "empty="], &[]);
    assert_eq!(
        s.change_labels("os::a", &c).unwrap(),
        labels(&[("empty", ""), ("site", "paris"), ("tier", "beta")])
    );
    let c = change(&["site=lyon"], &["tier", "absent"]);
    assert_eq!(
        s.change_labels("os::a", &c).unwrap(),
        labels(&[("empty", ""), ("site", "lyon")])
    );
    s.change_labels("os::b", &change(&["site=nice"], &[]))
        .unwrap();
    // An agent not in the inventory: refused, and no row of it is made.
    assert_eq!(
        s.change_labels("os::x", &change(&["site=x"], &[])).unwrap(),
        LabelOutcome::UnknownAgent
    );
    assert!(s.agent("os::x").unwrap().is_none());
    // Past the bound: refused whole, the labels as they were.
    let many: Vec<String> = (0..MAX_LABELS - 1).map(|i| format!("k{i}=v")).collect();
    let c = LabelChange::new(&many, &["empty".into()]).unwrap();
    match s.change_labels("os::a", &c).unwrap() {
        LabelOutcome::Labels(l) => assert_eq!(l.len(), MAX_LABELS, "the bound is reached"),
        other => panic!("{other:?}"),
    }
    let c = change(&["one=more", "and=another"], &[]);
    assert_eq!(
        s.change_labels("os::a", &c).unwrap(),
        LabelOutcome::TooMany(MAX_LABELS + 2)
    );
    let kept = s.agent("os::a").unwrap().unwrap().labels;
    assert_eq!(kept.len(), MAX_LABELS);
    assert!(!kept.contains_key("one") && !kept.contains_key("empty"));
    // A page carries each agent's own labels; a new inventory leaves them; a reopen too.
    s.save_inventory("os::b", &inv(&[("app", "1")]), 2).unwrap();
    drop(s);
    let s = b.open();
    let page = s.agents_page("", 10, false).unwrap();
    assert_eq!(page[0].labels, kept);
    assert_eq!(
        page[1].labels,
        BTreeMap::from([("site".to_string(), "nice".to_string())])
    );
    assert_eq!(s.agent("os::b").unwrap().unwrap().labels, page[1].labels);
}

fn a_version_7_database_gains_labels_keeping_its_agents(b: &Backend) {
    {
        let db = b.db();
        schema::migrate_to(&db, 7).unwrap();
        assert!(!super::tables(&db).iter().any(|t| t == "agent_labels"));
        db.execute(
            "INSERT INTO agents (endpoint_id, first_seen, last_seen, online, model)
             VALUES ('os::old', 1, 2, 1, 'cpe-a')",
            &[],
        )
        .unwrap();
    }
    let mut s = b.open();
    assert_eq!(s.version().unwrap(), 8);
    let a = s.agent("os::old").unwrap().unwrap();
    assert_eq!(a.facts.model.as_deref(), Some("cpe-a"));
    assert!(a.labels.is_empty());
    assert_eq!(
        s.change_labels("os::old", &change(&["site=paris"], &[]))
            .unwrap(),
        labels(&[("site", "paris")])
    );
}

fn two_changes_at_once_cannot_pass_the_bound_together(b: &Backend) {
    b.open().save_inventory("os::a", &inv(&[]), 1).unwrap();
    // Two changes of 40 new labels each: one fits, both do not.
    for round in 0..5 {
        let go = std::sync::Barrier::new(2);
        let results: Vec<LabelOutcome> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let go = &go;
                    sc.spawn(move || {
                        let mut s: Store = b.open();
                        let set: Vec<String> =
                            (0..40).map(|i| format!("r{round}t{t}k{i}=v")).collect();
                        let c = LabelChange::new(&set, &[]).unwrap();
                        go.wait();
                        s.change_labels("os::a", &c).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let made = results
            .iter()
            .filter(|r| matches!(r, LabelOutcome::Labels(_)))
            .count();
        assert_eq!(made, 1, "round {round}: {results:?}");
        let mut s = b.open();
        let n = s.agent("os::a").unwrap().unwrap().labels.len();
        assert_eq!(n, 40);
        // Cleared for the next round.
        let names: Vec<String> = s
            .agent("os::a")
            .unwrap()
            .unwrap()
            .labels
            .into_keys()
            .collect();
        s.change_labels("os::a", &LabelChange::new(&[], &names).unwrap())
            .unwrap();
    }
}
