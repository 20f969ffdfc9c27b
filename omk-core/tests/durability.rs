//! Cross-process durability of the store: documents survive SIGKILL at any
//! moment, concurrent increments are never lost, bad input creates nothing.
//!
//! Child processes are this same test binary re-executed with an env var
//! that turns a `child_*` test into the worker loop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omk_core::store::{self, Document, LogRead};
use omk_core::{ErrorCode, Omk, OpenOptions};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "OMK_DURABILITY_CHILD";

#[derive(Debug, Serialize, Deserialize)]
struct Versioned {
    version: u32,
    seq: u64,
    /// `seq` repeated, so a torn or mixed write is detectable.
    body: Vec<u64>,
}

impl Document for Versioned {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "test document";
}

fn doc(seq: u64) -> Versioned {
    Versioned {
        version: 1,
        seq,
        body: vec![seq; 4096],
    }
}

fn spawn_child(test_name: &str, env: &[(&str, &Path)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test_name)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Child: rewrite the document forever with increasing sequence numbers.
#[test]
fn child_rewriter() {
    if !is_child("child_rewriter") {
        return;
    }
    let path = PathBuf::from(std::env::var("DOC").unwrap());
    let start = store::read_doc::<Versioned>(&path)
        .unwrap()
        .map_or(0, |d| d.seq);
    for seq in start + 1.. {
        store::write_doc(&path, &doc(seq)).unwrap();
    }
}

#[test]
fn sigkill_during_rewrite_never_tears_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.json");
    store::write_doc(&path, &doc(0)).unwrap();
    let mut last_seq = 0;
    let mut advanced = 0;
    for round in 0..200u64 {
        let mut child = spawn_child("child_rewriter", &[("DOC", &path)]);
        // Spread the kill over start-up and the write loop: 0..24 ms.
        let delay = (round * 7919 + 13) % 25;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let d: Versioned = store::read_doc(&path)
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .unwrap_or_else(|| panic!("round {round}: document missing"));
        assert!(
            d.body.len() == 4096 && d.body.iter().all(|&x| x == d.seq),
            "round {round}: mixed content"
        );
        assert!(
            d.seq >= last_seq,
            "round {round}: went back from {last_seq} to {}",
            d.seq
        );
        if d.seq > last_seq {
            advanced += 1;
        }
        last_seq = d.seq;
    }
    assert!(
        advanced > 50,
        "the writer should usually get some writes in ({advanced}/200)"
    );
}

/// Child: 500 metrics increments.
#[test]
fn child_incrementer() {
    if !is_child("child_incrementer") {
        return;
    }
    let path = PathBuf::from(std::env::var("METRICS").unwrap());
    for _ in 0..500 {
        omk_core::metrics::increment(&path, omk_core::metrics::Counter::AskCalls).unwrap();
    }
}

#[test]
fn concurrent_processes_never_lose_an_increment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    let children: Vec<Child> = (0..8)
        .map(|_| spawn_child("child_incrementer", &[("METRICS", &path)]))
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let m = omk_core::metrics::read(&path).unwrap();
    assert_eq!(m.total_ask_calls, 4000);
}

fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            out.push(e.path());
            out.extend(tree(&e.path()));
        }
    }
    out
}

#[test]
fn bad_names_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let omk = Omk::open(OpenOptions {
        state_dir: Some(state.clone()),
        project_dir: Some(dir.path().to_path_buf()),
        config: None,
    })
    .unwrap();
    let long = "a".repeat(65);
    let bad = [
        "..",
        "../x",
        "a/b",
        "a\0b",
        ".hidden",
        &long,
        "",
        "x/../../etc",
    ];
    for name in bad {
        for result in [
            omk.paths().team_dir(name),
            omk.paths().goal_dir(name),
            omk.paths().session_dir(name),
            omk.paths().pool_file(name),
        ] {
            let err = result.expect_err(name);
            assert_eq!(err.code(), ErrorCode::InvalidInput, "{name:?}");
        }
    }
    assert!(
        tree(dir.path()).is_empty(),
        "created: {:?}",
        tree(dir.path())
    );
}

#[test]
fn future_version_metrics_are_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("metrics.json");
    let original = r#"{"version": 99, "created_at": "2026-05-11T12:00:00Z", "updated_at": "2026-05-11T12:00:00Z", "total_team_runs": 3}"#;
    std::fs::write(&file, original).unwrap();
    let omk = Omk::open(OpenOptions {
        state_dir: Some(state.clone()),
        ..Default::default()
    })
    .unwrap();
    let err = omk.metrics().unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptState);
    assert!(err.to_string().contains("metrics.json"), "{err}");
    let err =
        omk_core::metrics::increment(&file, omk_core::metrics::Counter::TeamRuns).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptState);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
}

#[test]
fn torn_last_event_line_counts_as_a_parse_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut log = omk_core::events::EventLog::open(&path).unwrap();
    for i in 0..3 {
        log.emit(
            "run",
            omk_core::events::EventKind::TaskOutput,
            None,
            serde_json::json!({ "i": i }),
        )
        .unwrap();
    }
    drop(log);
    let full = std::fs::read(&path).unwrap();
    // Cut the last line in half, as a writer killed mid-append would.
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let torn = &full[..last_start + (full.len() - last_start) / 2];
    std::fs::write(&path, torn).unwrap();
    let read: LogRead<omk_core::events::Event> = omk_core::events::read_events(&path).unwrap();
    assert_eq!(read.records.len(), 2);
    assert_eq!(read.parse_failures, 1);
}
