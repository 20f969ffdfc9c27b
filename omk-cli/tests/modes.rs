//! Autopilot and Ralph end to end: the real `omk` binary, the bundled
//! scripted agent (behaviour from directives in the prompt text) and real
//! gates in a temp project.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{text, Fx};

use serde_json::Value;

/// Fails until DONE exists, and its output carries the directive that makes
/// the scripted agent write DONE: only an agent that was fed the gate's
/// output back can make it pass.
const FEEDBACK_GATE: &str = "[[gate]]\nname = \"done\"\ncommand = \"sh -c 'test -f DONE || { echo \\\"missing DONE: [write:DONE:ok]\\\"; exit 1; }'\"\n";

#[test]
fn ralph_stops_at_the_iteration_where_the_gates_pass() {
    let fx = Fx::new(FEEDBACK_GATE);
    let out = fx.omk(&[
        "ralph",
        "Make the gate pass",
        "--max-iterations",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "complete");
    assert_eq!(s["iteration"], 2, "{s}");
    assert_eq!(s["max_iterations"], 5);
    let its = s["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 2);
    assert_eq!(its[0]["gates_passed"], false);
    assert_eq!(its[0]["failures"][0]["name"], "done");
    assert_eq!(its[0]["failures"][0]["exit_code"], 1);
    assert!(its[0]["failures"][0]["output_tail"]
        .as_str()
        .unwrap()
        .contains("missing DONE"));
    assert_eq!(its[1]["gates_passed"], true);
    assert_eq!(its[1]["team_phase"], "Completed");
    assert!(fx.project.join("DONE").exists());
    // The second turn's prompt carried the failure; the first did not.
    let id = s["id"].as_str().unwrap();
    let team2: Value = serde_json::from_slice(
        &std::fs::read(
            fx.state
                .join("team")
                .join(format!("{id}-i2"))
                .join("team.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let prompt2 = team2["tasks"][0]["title"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + team2["tasks"][0]["description"]
            .as_str()
            .unwrap_or_default();
    assert!(prompt2.contains("gate 'done' failed (exit 1)"), "{team2}");

    // The API.md /api/ralphs shape, and the state file itself.
    let list = fx.json(&["ralph", "list", "--json"]);
    let keys: Vec<&str> = list
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ralphs"]);
    let entry = &list["ralphs"][0];
    for (field, value) in [
        ("version", serde_json::json!(1)),
        ("task", serde_json::json!("Make the gate pass")),
        ("iteration", serde_json::json!(2)),
        ("max_iterations", serde_json::json!(5)),
    ] {
        assert_eq!(entry[field], value, "{field}");
    }
    let dir = fx.state.join("ralph").join(id);
    assert_eq!(entry["state_dir"], dir.to_str().unwrap());
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(on_disk["iteration"], 2);
    let status = fx.omk(&["ralph", "status", id]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("complete at iteration 2 of 5"));
    let metrics = omk_core::metrics::read(&fx.state.join("metrics.json")).unwrap();
    assert_eq!(metrics.total_ralph_runs, 1);
}

#[test]
fn ralph_that_never_passes_is_exhausted_with_exit_1() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"test -f never.txt\"\n");
    let out = fx.omk(&["ralph", "Try", "-m", "2", "--name", "try-it"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = fx.json(&["ralph", "status", "try-it", "--json"]);
    assert_eq!(s["status"], "exhausted");
    assert_eq!(s["iteration"], 2);
    assert!(s["reason"]
        .as_str()
        .unwrap()
        .contains("gate 'never' failed (exit 1)"));
    // The name is taken now.
    let again = fx.omk(&["ralph", "Try", "--name", "try-it"]);
    assert_eq!(again.status.code(), Some(4), "{}", text(&again));
}

#[test]
fn ralph_and_autopilot_refuse_bad_input_and_projects_without_gates() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    for args in [
        vec!["ralph", "x", "--name", "../escape"],
        vec!["ralph", "x", "-m", "0"],
        vec!["ralph", "   "],
        vec!["ralph", "x", "--approval", "sometimes"],
        vec!["autopilot", "x", "--max-agents", "0"],
        vec!["autopilot", "x", "--name", "a/b"],
    ] {
        let out = fx.omk(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    for args in [
        vec!["ralph", "status", "nope"],
        vec!["autopilot", "stop", "nope"],
    ] {
        let out = fx.omk(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
    }
    assert!(
        !fx.state.join("ralph").exists()
            || std::fs::read_dir(fx.state.join("ralph"))
                .unwrap()
                .next()
                .is_none()
    );
    std::fs::remove_file(fx.project.join(".omk/gates.toml")).unwrap();
    for mode in ["ralph", "autopilot"] {
        let out = fx.omk(&[mode, "Make it better"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("needs evidence"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn ralph_is_stopped_from_another_process() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"false\"\n");
    let mut child = fx
        .cmd(&["ralph", "Slow work [sleep:30]", "--name", "slow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let team = fx.state.join("team").join("slow-i1").join("team.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !team.exists() || fx.json(&["ralph", "status", "slow", "--json"])["active_team"].is_null()
    {
        assert!(
            Instant::now() < deadline,
            "the first iteration never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = fx.json(&["ralph", "list", "--json"]);
    assert_eq!(listed["ralphs"][0]["status"], "running");
    let stopped = fx.omk(&["ralph", "stop", "slow"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ralph did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "stopped");
    assert_eq!(s["iteration"], 1);
    let again = fx.omk(&["ralph", "stop", "slow"]);
    assert_eq!(
        again.status.code(),
        Some(4),
        "already stopped: {}",
        text(&again)
    );
}

#[test]
fn ctrl_c_stops_ralph_and_records_it() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"false\"\n");
    let child = fx
        .cmd(&[
            "ralph",
            "Slow work [sleep:30]",
            "--name",
            "interrupted",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fx.state.join("team/interrupted-i1/team.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the first iteration never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "stopped", "{s}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopping interrupted"));
}

#[test]
fn a_killed_ralph_reads_as_interrupted() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"false\"\n");
    let mut child = fx
        .cmd(&["ralph", "Slow work [sleep:30]", "--name", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = fx.state.join("ralph").join("killed").join("state.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let s = fx.json(&["ralph", "status", "killed", "--json"]);
    assert_eq!(s["status"], "interrupted", "{s}");
}

#[test]
fn autopilot_goes_through_every_phase_to_complete() {
    let fx = Fx::new("[[gate]]\nname = \"hello\"\ncommand = \"grep -q hi hello.txt\"\n");
    let out = fx.omk(&[
        "autopilot",
        "Say hello [json-plan:Write the greeting [write:hello.txt:hi\\]|Report]",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "complete");
    assert_eq!(s["phase"], "Complete");
    let phases: Vec<&str> = s["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "Expansion",
            "Planning",
            "Execution",
            "QA",
            "Validation",
            "Complete"
        ]
    );
    assert!(s["phases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["ok"] == true));
    let plans = PathBuf::from(s["plans_dir"].as_str().unwrap());
    assert_eq!(
        plans,
        fx.state
            .join("autopilot")
            .join(s["id"].as_str().unwrap())
            .join("plans")
    );
    for f in ["spec.md", "plan.md", "tasks.json"] {
        assert!(plans.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(plans.join("plan.md"))
        .unwrap()
        .contains("Write the greeting"));
    assert_eq!(
        std::fs::read_to_string(fx.project.join("hello.txt")).unwrap(),
        "hi"
    );

    let list = fx.json(&["autopilot", "list", "--json"]);
    let keys: Vec<&str> = list
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["autopilots"]);
    let entry = &list["autopilots"][0];
    let first: Vec<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .take(5)
        .map(String::as_str)
        .collect();
    assert_eq!(
        first,
        ["version", "task", "phase", "plans_dir", "created_at"]
    );
    let metrics = omk_core::metrics::read(&fx.state.join("metrics.json")).unwrap();
    assert_eq!(metrics.total_autopilot_runs, 1);
}

#[test]
fn autopilot_with_a_failing_gate_ends_failed_in_validation() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"test -f never.txt\"\n");
    let out = fx.omk(&["autopilot", "Do it [json-plan:One step]", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "failed");
    assert_eq!(s["phase"], "Validation");
    assert!(s["reason"]
        .as_str()
        .unwrap()
        .contains("gate 'never' failed (exit 1)"));
    let qa = &s["phases"][3];
    assert_eq!(qa["phase"], "QA");
    assert_eq!(qa["ok"], false);
    // QA spent its one fix round on a team of its own.
    let teams: Vec<&str> = s["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(teams.len(), 2, "{teams:?}");
    assert!(teams[1].ends_with("-fix1"));
    assert_eq!(s["gate_failures"][0]["name"], "never");
}

#[test]
fn autopilot_is_stopped_from_another_process() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let mut child = fx
        .cmd(&[
            "autopilot",
            "Slow [sleep:30]",
            "--name",
            "slow-ap",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = fx
        .state
        .join("autopilot")
        .join("slow-ap")
        .join("state.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = fx.omk(&["autopilot", "stop", "slow-ap"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    // The expansion turn (30 s) is cancelled within about a second.
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "autopilot did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "stopped");
    assert_eq!(s["phase"], "Expansion");
}

#[test]
fn an_isolated_ralph_works_in_its_own_worktree_and_applies_the_passing_result() {
    let fx = Fx::new(FEEDBACK_GATE);
    let git = |args: &[&str]| git_in(&fx, args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "gates"]);
    let head = git(&["rev-parse", "HEAD"]);
    let out = fx.omk(&[
        "ralph",
        "Make the gate pass",
        "--max-iterations",
        "5",
        "--isolation",
        "worktree",
        "--deliver",
        "apply",
        "--name",
        "iso-ralph",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["iteration"], 2, "{s}");
    // Each iteration was an isolated team on the run's workspace.
    let team: Value = serde_json::from_slice(
        &std::fs::read(fx.state.join("team/iso-ralph-i2/team.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(team["isolation"], "worktree");
    let d = &s["delivery"];
    assert_eq!(d["branch"], "omk/iso-ralph", "{s}");
    assert_eq!(d["applied"], true, "{s}");
    assert_eq!(git(&["show", "omk/iso-ralph:DONE"]), "ok");
    assert_eq!(
        std::fs::read_to_string(fx.project.join("DONE")).unwrap(),
        "ok"
    );
    // HEAD as it was, no worktree left (the workspace went too), and only
    // the run's branch added.
    assert_eq!(git(&["rev-parse", "HEAD"]), head);
    assert_eq!(git(&["status", "--porcelain"]), "?? DONE\n");
    assert_eq!(
        git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(
        git(&["branch", "--format=%(refname:short)"]),
        "main\nomk/iso-ralph\n"
    );
    let bad = fx.omk(&["ralph", "x", "--deliver", "apply"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("needs --isolation worktree"));
    // Outside a git work tree: refused before any run is written.
    let plain = Fx::new(FEEDBACK_GATE);
    let out = plain.omk(&["ralph", "x", "--isolation", "worktree"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("needs a git work tree"),
        "{}",
        text(&out)
    );
    assert!(
        !plain.state.join("ralph").exists()
            || std::fs::read_dir(plain.state.join("ralph"))
                .unwrap()
                .count()
                == 0
    );
}

fn git_in(fx: &Fx, args: &[&str]) -> String {
    common::git(&fx.project, args)
}

#[test]
fn an_isolated_autopilot_leaves_its_complete_result_on_a_branch_only() {
    let fx = Fx::new("[[gate]]\nname = \"hello\"\ncommand = \"grep -q hi hello.txt\"\n");
    let git = |args: &[&str]| git_in(&fx, args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "gates"]);
    let out = fx.omk(&[
        "autopilot",
        "Say hello [json-plan:Write the greeting [write:hello.txt:hi\\]|Report]",
        "--isolation",
        "worktree",
        "--name",
        "iso-ap",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["delivery"]["branch"], "omk/iso-ap", "{s}");
    assert_eq!(s["delivery"]["applied"], false);
    // Validation ran on the workspace, where the team's work landed; the
    // checkout never saw it.
    assert_eq!(git(&["show", "omk/iso-ap:hello.txt"]), "hi");
    assert!(!fx.project.join("hello.txt").exists());
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert_eq!(
        git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(
        git(&["branch", "--format=%(refname:short)"]),
        "main\nomk/iso-ap\n"
    );
}
