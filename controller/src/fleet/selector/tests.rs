use super::*;
use crate::store::{DeviceFacts, ExecEnv};

fn agent(model: Option<&str>, arch: Option<&str>, env_arch: Option<&str>) -> AgentView {
    AgentView {
        endpoint_id: "os::a".into(),
        facts: DeviceFacts {
            model: model.map(String::from),
            arch: arch.map(String::from),
            manufacturer: Some("acme".into()),
            ..DeviceFacts::default()
        },
        exec_envs: vec![ExecEnv {
            arch: env_arch.map(String::from),
            ..ExecEnv::default()
        }],
        ..AgentView::default()
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|w| w.to_string()).collect()
}

fn sel(w: &[&str]) -> BTreeMap<String, String> {
    parse(&words(w)).unwrap()
}

fn m(w: &[&str], a: &AgentView) -> bool {
    matches(&sel(w), "app", a)
}

fn err(w: &[&str]) -> String {
    parse(&words(w)).unwrap_err()
}

#[test]
fn every_key_must_match() {
    let a = agent(Some("cpe-a"), Some("x86_64"), None);
    assert!(m(&[], &a));
    assert!(m(&["model=cpe-a"], &a));
    assert!(m(&["model=cpe-a", "arch=x86_64", "manufacturer=acme"], &a));
    assert!(m(&["endpoint_id=os::a"], &a));
    assert!(!m(&["model=cpe-a", "arch=aarch64"], &a));
    assert!(!m(&["model=cpe-b"], &a));
    assert!(!m(&["endpoint_id=os::b"], &a));
}

#[test]
fn an_unreported_value_does_not_match_and_exec_envs_give_the_arch() {
    let a = agent(None, None, None);
    assert!(!m(&["model=cpe-a"], &a));
    assert!(!m(&["arch=x86_64"], &a));
    assert!(!m(&["software_version=0.1.0"], &a));
    assert!(!m(&["board=rpi4"], &a));
    assert!(!m(&["label.site=paris"], &a));
    let a = agent(None, None, Some("aarch64"));
    assert!(m(&["arch=aarch64"], &a));
    assert!(!m(&["arch=x86_64"], &a));
}

#[test]
fn the_board_is_a_key() {
    let mut a = agent(None, None, None);
    a.facts.board = Some("qemu-malta".into());
    assert!(m(&["board=qemu-malta"], &a));
    assert!(!m(&["board=rpi4"], &a));
    assert!(m(&["board=rpi4,qemu-malta"], &a));
}

#[test]
fn a_list_matches_any_of_its_values() {
    let a = agent(Some("cpe-a"), None, Some("aarch64"));
    assert!(m(&["endpoint_id=os::b,os::a,os::c"], &a));
    assert!(!m(&["endpoint_id=os::b,os::c"], &a));
    assert!(m(&["model=x,cpe-a"], &a));
    assert!(m(&["arch=x86_64,aarch64"], &a));
    // Every key must still match, each by any of its values.
    assert!(!m(&["model=x,cpe-a", "arch=x86_64,mips"], &a));
    // A value is never a substring or prefix of another.
    assert!(!m(&["model=cpe"], &a));
    assert!(!m(&["endpoint_id=os::"], &a));
    // 1,000 values, the bound, parse and match.
    let many: Vec<String> = (0..MAX_VALUES).map(|i| format!("os::{i}")).collect();
    let w = format!("endpoint_id={}", many.join(","));
    let s = parse(std::slice::from_ref(&w)).unwrap();
    let mut b = agent(None, None, None);
    b.endpoint_id = "os::999".into();
    assert!(matches(&s, "app", &b));
    b.endpoint_id = "os::1000".into();
    assert!(!matches(&s, "app", &b));
}

#[test]
fn labels_match_by_name_and_value() {
    let mut a = agent(Some("cpe-a"), None, None);
    a.labels.insert("site".into(), "paris".into());
    a.labels.insert("beta".into(), "".into());
    assert!(m(&["label.site=paris"], &a));
    assert!(m(&["label.site=lyon,paris", "model=cpe-a"], &a));
    assert!(!m(&["label.site=lyon"], &a));
    assert!(!m(&["label.site=paris", "model=cpe-b"], &a));
    assert!(!m(&["label.tier=paris"], &a), "another label's value");
    assert!(m(&["label.beta="], &a), "an empty value is a value");
    assert!(!m(&["label.site="], &a));
}

#[test]
fn percent_keeps_a_stable_share_that_grows_monotonically() {
    let ids: Vec<String> = (0..20_000).map(|i| format!("os::cpe-{i:05}")).collect();
    let share = |name: &str, n: u32| -> HashSet<&str> {
        ids.iter()
            .filter(|id| bucket(name, id) < n)
            .map(String::as_str)
            .collect()
    };
    for n in [1, 10, 25, 50] {
        let got = share("app", n).len() as f64 / ids.len() as f64;
        let want = f64::from(n) / 100.0;
        assert!((got - want).abs() < 0.1 * want + 0.003, "{n}%: {got}");
    }
    // Raising N only adds agents.
    let (ten, twenty) = (share("app", 10), share("app", 20));
    assert!(ten.is_subset(&twenty));
    assert_eq!(share("app", 100).len(), ids.len());
    // Pinned: every replica and build must draw the same agents (a change of the hash moves
    // agents in and out of running deployments).
    assert_eq!(bucket("app", "os::cpe-00001"), PINNED.0);
    assert_eq!(bucket("status", "os::cpe-1"), PINNED.1);
    assert_eq!(bucket("", ""), PINNED.2);
    // Through a selector: `percent` with the other keys.
    let mut a = agent(Some("cpe-a"), None, None);
    a.endpoint_id = ten.iter().next().unwrap().to_string();
    assert!(m(&["percent=10", "model=cpe-a"], &a));
    assert!(!m(&["percent=10", "model=cpe-b"], &a));
    assert!(m(&["percent=100"], &a));
    let out = ids.iter().find(|id| !twenty.contains(id.as_str())).unwrap();
    a.endpoint_id = out.clone();
    assert!(!m(&["percent=20"], &a));
}

/// `bucket` of ("app", "os::cpe-00001"), ("status", "os::cpe-1"), ("", ""), worked out apart
/// from this code.
const PINNED: (u32, u32, u32) = (2, 32, 67);

#[test]
fn percent_draws_independently_for_each_app() {
    let ids: Vec<String> = (0..20_000).map(|i| format!("os::cpe-{i:05}")).collect();
    // Names alike in their bytes are where a weak hash correlates.
    let names = ["app", "a", "apq", "b", "status", "web-1", "web-2", "x", "y"];
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let both = ids
                .iter()
                .filter(|id| bucket(a, id) < 10 && bucket(b, id) < 10)
                .count();
            // Independent: 1% of the agents (200), give or take noise (a std of about 14).
            assert!((140..=260).contains(&both), "{a} and {b}: {both} of 200");
        }
    }
}

#[test]
fn bad_selectors_are_refused_naming_what_was_wrong() {
    assert!(err(&["board"]).contains("not key=value"));
    assert!(err(&["colour=red"]).contains("unknown key \"colour\""));
    assert!(err(&["arch="]).contains("1..256"));
    assert!(err(&["arch=a", "arch=b"]).contains("arch given twice"));
    assert!(err(&["model=a,,b"]).contains("empty value in the list"));
    assert!(err(&["model=a,"]).contains("empty value in the list"));
    let long = format!("model={}", "x".repeat(257));
    assert!(err(&[&long]).contains("257 bytes; at most 256"));
    let many = format!("endpoint_id={}", vec!["e"; MAX_VALUES + 1].join(","));
    assert!(err(&[&many]).contains("1001 values; at most 1000"));
    let huge: Vec<String> = (0..300)
        .map(|i| format!("label.k{i}={}", "v".repeat(250)))
        .collect();
    let e = parse(&huge).unwrap_err();
    assert!(e.contains("bytes in all; at most 65536"), "{e}");
    assert!(e.len() < 200, "the input is not echoed whole: {e}");
    for bad in [
        "percent=0",
        "percent=101",
        "percent=x",
        "percent=+5",
        "percent=",
        "percent=5%",
    ] {
        assert!(err(&[bad]).contains("percent"), "{bad}");
    }
    assert!(err(&["percent=10,20"]).contains("not a list"));
    assert!(err(&["label.=x"]).contains("label name"));
    assert!(err(&["label.-x=1"]).contains("label name"));
    assert!(err(&["label.site=par is"]).contains("label value"));
    assert!(err(&["label.site=a,b c"]).contains("label value"));
    let long_label = format!("label.{}=x", "n".repeat(64));
    assert!(err(&[&long_label]).contains("label name"));
    // A refused selector's error does not repeat a long value whole.
    let e = err(&[&format!("label.s={}", "v".repeat(5000))]);
    assert!(e.len() < 300, "{e}");
}

#[test]
fn a_stored_selector_reads_as_before_and_a_damaged_one_matches_nobody() {
    // As deployments stored before lists, labels and percent: plain key=value text.
    let old: BTreeMap<String, String> = [("model", "cpe-a"), ("arch", "x86_64")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let a = agent(Some("cpe-a"), Some("x86_64"), None);
    assert!(matches(&old, "app", &a));
    for (k, v) in [("colour", "red"), ("percent", "200"), ("model", "")] {
        let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
        assert!(!matches(&bad, "app", &a), "{k}={v}");
    }
}
