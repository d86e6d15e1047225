//! Shell snippets the harness runs in a board's console shell (busybox ash).

/// Shell that sets `$end`, `secs` from now on the board's monotonic clock: a loop bounded by it
/// ends in time however slow each round is under emulation (a count of rounds did not: CI saw
/// a 300 s loop still running at the harness's 360 s deadline).
pub fn board_deadline(secs: f64) -> String {
    format!(
        "read up _ </proc/uptime; end=$(( ${{up%.*}} + {} ))",
        secs.ceil() as u64
    )
}

/// Shell test, true while the board's clock is before `$end` (builtins only: no fork per round).
pub fn before_board_deadline() -> &'static str {
    "{ read up _ </proc/uptime; [ ${up%.*} -lt $end ]; }"
}
