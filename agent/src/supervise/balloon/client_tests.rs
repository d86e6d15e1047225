use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

fn sock(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpv-balloon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("vmm.sock")
}

/// A fake VMM: accepts one client, reads its request line, answers `answer` (None: silence).
fn peer(path: &Path, answer: Option<Vec<u8>>) -> std::thread::JoinHandle<String> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut req = String::new();
        r.read_line(&mut req).unwrap();
        let mut s = r.into_inner();
        match answer {
            Some(a) => {
                let _ = s.write_all(&a);
            }
            None => std::thread::sleep(Duration::from_secs(3)),
        }
        req
    })
}

const T: Duration = Duration::from_secs(2);

#[test]
fn reads_and_sets_the_figures() {
    let p = sock("good");
    let h = peer(
        &p,
        Some(br#"{"ok":true,"state":"running","balloon":{"target_mib":8,"actual_mib":6,"discarded_mib":30}}"#.to_vec())
            .map(|mut v| {
                v.push(b'\n');
                v
            }),
    );
    let f = status(&p, T).unwrap().unwrap();
    assert_eq!((f.target_mib, f.actual_mib, f.discarded_mib), (8, 6, 30));
    assert_eq!(h.join().unwrap(), "{\"cmd\":\"status\"}\n");
    std::fs::remove_file(&p).unwrap();
    let h = peer(
        &p,
        Some(b"{\"ok\":true,\"target_mib\":12,\"actual_mib\":0,\"discarded_mib\":0}\n".to_vec()),
    );
    assert_eq!(set_target(&p, 12, T).unwrap().target_mib, 12);
    assert_eq!(
        h.join().unwrap(),
        "{\"cmd\":\"balloon\",\"target_mib\":12}\n"
    );
    std::fs::remove_file(&p).unwrap();
    let h = peer(&p, Some(b"{\"ok\":true,\"balloon\":null}\n".to_vec()));
    assert_eq!(status(&p, T).unwrap(), None, "a VM without a balloon");
    h.join().unwrap();
}

#[test]
fn garbage_a_refusal_and_a_huge_line_are_errors() {
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("garbage", b"\x00\xffhello\n".to_vec(), "not a JSON answer"),
        (
            "refused",
            b"{\"ok\":false,\"error\":\"this VM has no balloon\"}\n".to_vec(),
            "refused: this VM has no balloon",
        ),
        (
            "wrong",
            b"{\"ok\":true,\"balloon\":7}\n".to_vec(),
            "no balloon figures",
        ),
        ("huge", vec![b'x'; 1 << 20], "longer than"),
        (
            "short",
            b"{\"ok\":tr".to_vec(),
            "closed without a whole answer",
        ),
    ];
    for (tag, answer, want) in cases {
        let p = sock(tag);
        let h = peer(&p, Some(answer));
        let e = status(&p, T).unwrap_err();
        assert!(e.to_string().contains(want), "{tag}: {e}");
        let _ = h.join();
    }
}

#[test]
fn a_silent_vmm_ends_at_the_deadline() {
    let p = sock("silent");
    let h = peer(&p, None);
    let t0 = Instant::now();
    let e = status(&p, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    h.join().unwrap();
}

#[test]
fn a_vmm_that_never_accepts_does_not_block_the_connect() {
    let p = sock("backlog");
    let _l = UnixListener::bind(&p).unwrap();
    let t0 = Instant::now();
    let mut held = Vec::new();
    // The listener never accepts: once its backlog is full the next connect fails at once.
    let err = loop {
        match connect_now(&p) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 100_000, "the backlog never filled");
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    let e = status(&p, T).unwrap_err();
    assert!(e.to_string().contains("not accepting"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_link_or_no_socket_is_refused() {
    let p = sock("link");
    let real = p.with_file_name("real.sock");
    let h = peer(&real, Some(b"{\"ok\":true,\"balloon\":null}\n".to_vec()));
    std::os::unix::fs::symlink(&real, &p).unwrap();
    let e = status(&p, T).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    std::fs::remove_file(&p).unwrap();
    let e = status(&p, T).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    // The peer is still waiting for a client: let it go.
    assert_eq!(status(&real, T).unwrap(), None);
    h.join().unwrap();
}
