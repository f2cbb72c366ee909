//! The schema snapshot check: created once, passes when equal, passes but says so when
//! stale (compatible), fails with one line per break, writes only when asked.

mod contract_support;

use std::path::{Path, PathBuf};

use daemoneye_ipc::compat::{check_snapshot_with, rules, SnapshotMode, SnapshotOutcome};
use daemoneye_ipc::schema::{Contract, FieldSchema};

fn contract() -> Contract {
    contract_support::widgets()
}

/// The widgets contract with a new field: a compatible change.
fn compatible() -> Contract {
    let mut c = contract();
    let query = c
        .messages
        .iter_mut()
        .find(|m| m.full_name == "test.v1.WidgetQuery")
        .expect("WidgetQuery");
    query.fields.push(FieldSchema {
        number: 4,
        name: "owner".into(),
        type_name: "string".into(),
        ..FieldSchema::default()
    });
    c
}

/// The widgets contract with a method deleted: a breaking change.
fn breaking() -> Contract {
    let mut c = contract();
    c.methods.retain(|m| m.name != "watch_widgets");
    c
}

fn snapshot_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("schema").join("test.Widgets.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("snapshot")
}

#[test]
fn a_missing_snapshot_is_written_and_fails_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    let err = check_snapshot_with(&contract(), &path, SnapshotMode::Check).unwrap_err();
    assert!(err.contains("did not exist; it has been written"), "{err}");
    assert_eq!(read(&path), contract().to_json());
    assert_eq!(
        check_snapshot_with(&contract(), &path, SnapshotMode::Check),
        Ok(SnapshotOutcome::Unchanged)
    );
}

#[test]
fn a_missing_snapshot_is_written_without_failing_when_updating() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    assert_eq!(
        check_snapshot_with(&contract(), &path, SnapshotMode::Update),
        Ok(SnapshotOutcome::Created)
    );
    assert_eq!(read(&path), contract().to_json());
}

#[test]
fn an_equal_snapshot_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contract().to_json()).unwrap();
    for mode in [
        SnapshotMode::Check,
        SnapshotMode::Update,
        SnapshotMode::Force,
    ] {
        assert_eq!(
            check_snapshot_with(&contract(), &path, mode),
            Ok(SnapshotOutcome::Unchanged)
        );
    }
}

#[test]
fn a_stale_snapshot_passes_and_is_left_alone_unless_updating() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    check_snapshot_with(&contract(), &path, SnapshotMode::Update).unwrap();
    let outcome = check_snapshot_with(&compatible(), &path, SnapshotMode::Check).unwrap();
    assert_eq!(
        outcome,
        SnapshotOutcome::Stale(vec!["new field 4 `owner` in `test.v1.WidgetQuery`".into()])
    );
    assert_eq!(read(&path), contract().to_json(), "Check must not write");

    let outcome = check_snapshot_with(&compatible(), &path, SnapshotMode::Update).unwrap();
    assert!(
        matches!(outcome, SnapshotOutcome::Updated(_)),
        "{outcome:?}"
    );
    assert_eq!(read(&path), compatible().to_json());
}

#[test]
fn a_breaking_change_fails_with_one_line_per_break_and_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    check_snapshot_with(&contract(), &path, SnapshotMode::Update).unwrap();
    let mut two = breaking();
    two.methods[0].id = 10;
    for mode in [SnapshotMode::Check, SnapshotMode::Update] {
        let err = check_snapshot_with(&two, &path, mode).unwrap_err();
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(
            lines,
            [
                "  METHOD_ID_SAME: method `list_widgets` changed id from 1 to 10",
                "  RPC_NO_DELETE: method `watch_widgets` (id 2) was deleted",
            ],
            "{err}"
        );
        assert!(err.contains("2 breaking changes"), "{err}");
        assert!(
            err.contains("DAEMONEYE_UPDATE_SNAPSHOTS=force cargo test"),
            "{err}"
        );
        assert_eq!(read(&path), contract().to_json(), "{mode:?} must not write");
    }
}

#[test]
fn force_accepts_a_break_and_rewrites_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    check_snapshot_with(&contract(), &path, SnapshotMode::Update).unwrap();
    let outcome = check_snapshot_with(&breaking(), &path, SnapshotMode::Force).unwrap();
    let SnapshotOutcome::Forced(breaks) = outcome else {
        panic!("expected Forced, got {outcome:?}");
    };
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].rule, rules::RPC_NO_DELETE);
    assert_eq!(read(&path), breaking().to_json());
}

#[test]
fn an_unreadable_snapshot_fails_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot_in(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "not json").unwrap();
    for mode in [SnapshotMode::Check, SnapshotMode::Update] {
        let err = check_snapshot_with(&contract(), &path, mode).unwrap_err();
        assert!(err.contains("is not a contract snapshot"), "{err}");
    }
    assert_eq!(read(&path), "not json");
    check_snapshot_with(&contract(), &path, SnapshotMode::Force).unwrap();
    assert_eq!(read(&path), contract().to_json());
}

#[test]
fn the_environment_variable_selects_the_mode() {
    use SnapshotMode::*;
    for (value, mode) in [
        (None, Check),
        (Some(""), Check),
        (Some("0"), Check),
        (Some("1"), Update),
        (Some("true"), Update),
        (Some("force"), Force),
    ] {
        assert_eq!(SnapshotMode::from_env_value(value), Ok(mode), "{value:?}");
    }
    let err = SnapshotMode::from_env_value(Some("always")).unwrap_err();
    assert!(err.contains("DAEMONEYE_UPDATE_SNAPSHOTS"), "{err}");
}

#[test]
fn the_test_service_matches_its_checked_in_snapshot() {
    // The one-line use from a user's test; the path is relative to this crate.
    daemoneye_ipc::assert_contract_snapshot!(contract(), "tests/golden/test.Widgets.json");
}
