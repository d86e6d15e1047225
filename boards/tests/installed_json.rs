//! The profile as the firmware installs it on a board: JSON, read back by the agent's build
//! that has no TOML parser, to the same board and through the same validation.

mod common;

use common::{scratch_dir, shipped_dir, write};
use cpevisor_boards::{load_all_in, Board, BoardError};

/// The JSON text of the default board with `from` replaced by `to` (exactly once).
fn edited(from: &str, to: &str) -> String {
    let text = Board::by_name_in(&shipped_dir(), "qemu-virt-a53")
        .unwrap()
        .to_json_text();
    assert_eq!(text.matches(from).count(), 1, "`{from}` in {text}");
    text.replacen(from, to, 1)
}

/// Loads `text` as `board.json` and returns the error text, checking it names the file.
fn json_error(text: &str) -> String {
    let dir = scratch_dir("json");
    let path = write(&dir, "board.json", text);
    let err = Board::load_json(&path).expect_err("a bad profile loaded");
    let message = err.to_string();
    assert!(
        message.contains("board.json: "),
        "no file name in: {message}"
    );
    message
}

#[test]
fn every_shipped_profile_reads_back_from_its_json() {
    let (boards, errors) = load_all_in(&shipped_dir());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(boards.len() > 5);
    for board in boards {
        let text = board.to_json_text();
        let back = Board::from_json_str(&text, "board.json")
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", board.name));
        assert_eq!(back, board);
    }
}

#[test]
fn load_json_reads_a_file_of_any_name() {
    let dir = scratch_dir("json-ok");
    let text = edited("\"cores\": 2", "\"cores\": 2");
    let board = Board::load_json(write(&dir, "whatever", &text)).unwrap();
    assert_eq!(board.name, "qemu-virt-a53");
}

#[test]
fn a_wrong_type_names_the_field() {
    let msg = json_error(&edited("\"cores\": 2", "\"cores\": \"two\""));
    assert!(msg.contains("board.json: cpu.cores: invalid type"), "{msg}");
}

#[test]
fn a_missing_field_names_it_with_its_section() {
    let msg = json_error(&edited("\"app_budget_mib\": 384,", ""));
    assert!(
        msg.contains("board.json: memory.app_budget_mib: missing field"),
        "{msg}"
    );
}

#[test]
fn an_unknown_field_names_it() {
    let msg = json_error(&edited("\"cores\": 2", "\"cores\": 2, \"turbo\": true"));
    assert!(
        msg.contains("board.json: cpu.turbo: unknown field"),
        "{msg}"
    );
}

#[test]
fn the_validation_rules_are_the_toml_profiles_rules() {
    // Typed fine, refused by validate (as the same value in TOML is): no budget left.
    let msg = json_error(&edited("\"app_budget_mib\": 384", "\"app_budget_mib\": 0"));
    assert!(msg.contains("board.json: memory.app_budget_mib: "), "{msg}");
}

#[test]
fn a_syntax_error_names_the_line_and_nothing_may_follow_the_profile() {
    let text = edited("\"cores\": 2", "\"cores\": 2,,");
    let line = text.lines().position(|l| l.contains("2,,")).unwrap() + 1;
    let dir = scratch_dir("json-syntax");
    let err = Board::load_json(write(&dir, "board.json", &text)).unwrap_err();
    match &err {
        BoardError::Syntax {
            line: l, format, ..
        } => {
            assert_eq!((*l, *format), (line, "JSON"));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err.to_string().contains("invalid JSON: "), "{err}");
    let msg = json_error(&format!("{}{{}}", edited("\"cores\": 2", "\"cores\": 2")));
    assert!(msg.contains("invalid JSON: trailing characters"), "{msg}");
}
