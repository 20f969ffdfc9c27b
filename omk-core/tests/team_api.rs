//! Teams through the library API (`Omk::team_run`, the ops table), and the
//! metrics a run leaves behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::scripted_agent;
use omk_core::team::{Phase, TaskStatus, TeamRunRequest};
use omk_core::{ErrorCode, Omk, OpenOptions};
use serde_json::json;

fn open(dir: &Path) -> Omk {
    let cfg = dir.join("omk.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nbin = \"{}\"\n[team]\nmax_attempts = 2\nretry_backoff_ms = 10\nlease_secs = 30\n",
            scripted_agent().display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("proj")).unwrap();
    Omk::open(OpenOptions {
        state_dir: Some(dir.join("state")),
        project_dir: Some(dir.join("proj")),
        config: Some(cfg),
    })
    .unwrap()
}

fn request(subtasks: &[&str]) -> TeamRunRequest {
    TeamRunRequest {
        spec: "2:executor".into(),
        task: "library run".into(),
        subtasks: subtasks.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn a_run_counts_everything_it_did() {
    no_agent_override();
    let d = tempfile::tempdir().unwrap();
    let omk = open(d.path());
    let doc = omk
        .team_run(&request(&["[tokens:10:5] fine", "[crash] broken"]))
        .unwrap();
    assert_eq!(doc.phase, Phase::Failed);
    assert_eq!(doc.tasks[0].status, TaskStatus::Completed);
    assert_eq!(
        (doc.tasks[1].status, doc.tasks[1].attempts),
        (TaskStatus::Failed, 2)
    );
    assert_eq!(doc.tasks[0].tokens, 15);
    let m = omk.metrics().unwrap();
    assert_eq!(m["total_team_runs"], 1);
    assert_eq!(m["total_spawns"], 1);
    assert_eq!(m["total_tasks_created"], 2);
    assert_eq!(m["total_tasks_completed"], 1);
    assert_eq!(m["total_tasks_failed"], 1);
    assert_eq!(
        m["total_ask_calls"], 3,
        "one turn for the good task, two attempts for the crashing one"
    );
    assert_eq!(m["total_ask_errors"], 2);
    assert_eq!(m["total_shutdowns"], 0);
    // The same document comes back from status and from the ops table.
    let status = omk
        .call("team.status", &json!({ "name": doc.name }))
        .unwrap();
    assert_eq!(status, serde_json::to_value(&doc).unwrap());
}

#[test]
fn idle_workers_woken_together_never_share_a_task() {
    // Sixteen idle workers all wait out the crashing task's backoff and wake
    // at the same instant: exactly one may claim each attempt.
    no_agent_override();
    let d = tempfile::tempdir().unwrap();
    let omk = open(d.path());
    for _ in 0..10 {
        let doc = omk
            .team_run(&TeamRunRequest {
                spec: "16:executor".into(),
                ..request(&["[crash] broken", "fine"])
            })
            .unwrap();
        let t = &doc.tasks[0];
        assert_eq!((t.status, t.attempts), (TaskStatus::Failed, 2), "{t:?}");
        assert_eq!(t.errors.len(), 2, "{:?}", t.errors);
    }
}

#[test]
fn detached_library_runs_continue_in_the_background() {
    no_agent_override();
    let d = tempfile::tempdir().unwrap();
    let omk = open(d.path());
    let mut req = request(&["[sleep:1] a", "b"]);
    req.detach = true;
    req.name = Some("bg".into());
    let t = Instant::now();
    let doc = omk.team_run(&req).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(doc.phase, Phase::Planning);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = omk.team_status("bg").unwrap();
        if s.phase.is_terminal() {
            assert_eq!(s.phase, Phase::Completed);
            break;
        }
        assert!(Instant::now() < deadline, "still {:?}", s.phase);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_ops_table_validates_team_params() {
    let d = tempfile::tempdir().unwrap();
    let omk = open(d.path());
    for bad in [
        json!({"spec": "0:executor", "task": "x"}),
        json!({"spec": "2:executor"}),
        json!({"spec": "2:x", "task": "t", "bogus": 1}),
        json!([1]),
    ] {
        let e = omk.call("team.run", &bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput, "{bad}");
    }
    assert_eq!(
        omk.call("team.status", &json!({"name": "nope"}))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        omk.call("team.status", &json!({"name": "../etc"}))
            .unwrap_err()
            .code(),
        ErrorCode::InvalidInput
    );
    assert!(
        !d.path().join("state/team").exists()
            || std::fs::read_dir(d.path().join("state/team"))
                .unwrap()
                .next()
                .is_none()
    );
    let list = omk.call("team.list", &json!({})).unwrap();
    assert_eq!(list["teams"], json!([]));
}

#[test]
fn a_host_approver_decides_for_runs_with_the_host_policy() {
    no_agent_override();
    let d = tempfile::tempdir().unwrap();
    let omk = open(d.path());
    let mut req = request(&["[write:yes.txt:1]", "[write:no.txt:2]"]);
    req.approval = Some("host".into());
    req.name = Some("hosted".into());
    // Without an approver the host policy is refused before anything is written.
    let e = omk.team_run(&req).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
    assert!(!d.path().join("state/team/hosted").exists());

    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    omk.set_approver(Some(std::sync::Arc::new(
        move |r: &omk_core::agent::ApprovalRequest| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // A host that takes its time must not stall the run.
            std::thread::sleep(Duration::from_millis(50));
            if r.paths().iter().any(|p| p.ends_with("yes.txt")) {
                omk_core::agent::Decision::approve("the host said yes")
            } else {
                omk_core::agent::Decision::reject("the host said no")
            }
        },
    )));
    let doc = omk.team_run(&req).unwrap();
    assert_eq!(doc.phase, Phase::Completed);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    let proj = d.path().join("proj");
    assert!(proj.join("yes.txt").exists() && !proj.join("no.txt").exists());
    let events = omk_core::events::read_events(&doc.state_dir.join("events.jsonl")).unwrap();
    let reasons: Vec<String> = events
        .records
        .iter()
        .filter(|e| e.kind == omk_core::events::EventKind::ApprovalDecided)
        .map(|e| e.payload["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.contains(&"the host said yes".to_string())
            && reasons.contains(&"the host said no".to_string())
    );
}

/// These tests drive the scripted agent their config names; `OMK_KIMI_BIN`
/// would replace it. `make cargo-test` unsets it: fail rather than skip.
fn no_agent_override() {
    assert!(
        std::env::var_os("OMK_KIMI_BIN").is_none(),
        "OMK_KIMI_BIN is set and would replace the scripted agent: unset it (`make cargo-test` does)"
    );
}
