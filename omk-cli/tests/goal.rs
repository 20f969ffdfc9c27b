//! Goals end to end: the real `omk` binary, the bundled scripted agent
//! (its behaviour comes from directives in the prompt text: the planner's
//! answer, the tools each worker calls), and real gates in a temp project.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_json, text, Fx};

use serde_json::Value;

const GOAL_STATE_FIELDS: &[&str] = &[
    "version",
    "goal_id",
    "original_goal",
    "normalized_goal",
    "status",
    "phase",
    "created_at",
    "updated_at",
    "completed_at",
    "until_ready",
    "budget_time",
    "budget_tokens",
    "budget_usd",
    "max_agents",
    "terminal_criteria",
    "delivery_policy",
    "merge_policy",
    "slice_execution",
    "artifacts",
    "failure",
    "state_dir",
];

#[test]
fn a_goal_reaches_ready_with_its_gates_passing() {
    let fx = Fx::new("[[gate]]\nname = \"hello\"\ncommand = \"grep -q hi hello.txt\"\n");
    let out = fx.omk(&[
        "goal",
        "run",
        "Say hello [json-plan:Write the greeting [write:hello.txt:hi\\]|Report]",
        "--json",
        "--budget-time",
        "8h",
        "--max-agents",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "ready");
    assert_eq!(state["phase"], "proof");
    let keys: Vec<&str> = state
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, GOAL_STATE_FIELDS, "GoalState field for field");
    assert_eq!(state["budget_time"], "8h");
    let id = state["goal_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("goal-"));

    let proof = fx.json(&["goal", "proof", "latest", "--json"]);
    assert_eq!(proof["status"], "ready");
    assert_eq!(proof["known_gaps"], Value::Array(vec![]));
    assert_eq!(proof["task_graph_summary"]["done_tasks"], 2);
    assert_eq!(proof["gates"][0]["passed"], true);
    assert_eq!(proof["post_mutation_gates_ran"], true);
    assert!(proof["changed_files"]
        .as_array()
        .unwrap()
        .contains(&"hello.txt".into()));
    for field in [
        "readiness",
        "summary",
        "generated_at",
        "artifacts",
        "commits",
        "human_decisions_required",
    ] {
        assert!(proof.get(field).is_some(), "proof lacks {field}");
    }

    let replay = fx.json(&["goal", "replay", &id, "--format", "json"]);
    assert_eq!(replay["duplicate_events"], 0);
    assert_eq!(replay["timeline"][0]["kind"], "goal_created");
    assert_eq!(
        replay["event_count"],
        replay["timeline"].as_array().unwrap().len()
    );

    let budget = fx.json(&["goal", "budget", &id, "--json"]);
    assert_eq!(budget["total_budget_secs"], 28_800);
    assert!(
        budget["used_tokens"].as_u64().unwrap() > 0,
        "tokens from StatusUpdate"
    );
    assert!(budget["checkpoints"].as_array().unwrap().len() >= 2);

    let md = fx.omk(&["goal", "show", &id, "--format", "md"]);
    assert!(String::from_utf8_lossy(&md.stdout).starts_with(&format!("# Goal {id}")));
    let list = fx.omk(&["goal", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("[ready] {id}")));
    let status = fx.omk(&["goal", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("Status:  ready"));
    assert!(fx.goal_dir(&id).join("plan.md").exists());
    assert!(fx.goal_dir(&id).join("task-graph.json").exists());
}

#[test]
fn a_gate_that_cannot_pass_ends_not_ready_with_the_gap() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"test -f never.txt\"\n");
    let out = fx.omk(&["goal", "run", "Do it [json-plan:One step]"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert_eq!(proof["status"], "not_ready");
    let gaps: Vec<&str> = proof["known_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        gaps,
        vec!["required gate 'never' failed (exit 1)"],
        "{proof}"
    );
    assert!(proof["readiness"]
        .as_str()
        .unwrap()
        .starts_with("not ready"));
    let state = fx.json(&["goal", "show", "--json"]);
    assert_eq!(state["status"], "not_ready");
}

#[test]
fn a_project_without_gates_is_blocked_on_human() {
    let fx = Fx::new("");
    std::fs::remove_file(fx.project.join(".omk/gates.toml")).unwrap();
    let out = fx.omk(&["goal", "run", "Make it better"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert_eq!(proof["status"], "blocked_on_human");
    assert!(!proof["human_decisions_required"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_planner_that_needs_a_decision_blocks_on_human() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let ask = r#"[answer:{"tasks": [\], "questions": ["Which database should the cache use?"\]}]"#;
    let out = fx.omk(&["goal", "run", ask]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert_eq!(proof["status"], "blocked_on_human", "{proof}");
    assert_eq!(
        proof["human_decisions_required"],
        serde_json::json!(["Which database should the cache use?"])
    );
    assert!(proof["readiness"]
        .as_str()
        .unwrap()
        .starts_with("blocked on human"));
}

#[test]
fn a_worker_asking_a_question_blocks_on_human() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let out = fx.omk(&[
        "goal",
        "run",
        "Publish it [json-plan:Decide visibility [ask:Should the API be public?\\]]",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert_eq!(proof["status"], "blocked_on_human", "{proof}");
    assert_eq!(
        proof["human_decisions_required"],
        serde_json::json!(["Should the API be public?"])
    );
    let state = fx.json(&["goal", "show", "--json"]);
    assert!(state["failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("Should the API be public?"));
}

/// Three dependent tasks (three waves); each turn reports 800 tokens.
const CHAIN_PLAN: &str = "[tokens:600:200] [answer:{\"plan\": \"chain\", \"tasks\": [{\"id\": \"a\", \"title\": \"A\"}, {\"id\": \"b\", \"title\": \"B\", \"depends_on\": [\"a\"\\]}, {\"id\": \"c\", \"title\": \"C\", \"depends_on\": [\"b\"\\]}\\]}]";

#[test]
fn a_token_budget_runs_out_then_budget_add_continues() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let out = fx.omk(&[
        "goal",
        "run",
        CHAIN_PLAN,
        "--budget-tokens",
        "1000",
        "--until-ready",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let state = fx.json(&["goal", "show", "--json"]);
    assert_eq!(state["status"], "needs_more_budget", "{state}");
    let id = state["goal_id"].as_str().unwrap().to_string();
    let graph = read_json(&fx.goal_dir(&id).join("task-graph.json"));
    assert_eq!(graph["tasks"][0]["status"], "done");
    assert_eq!(
        graph["tasks"][1]["status"], "pending",
        "stopped before wave 2"
    );
    let budget = fx.json(&["goal", "budget", "--json"]);
    assert_eq!(budget["used_tokens"], 1600);
    assert_eq!(budget["remaining_budget_tokens"], 0);
    assert!(budget["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["label"] == "run_ended" && c["status"] == "needs_more_budget"));

    let added = fx.json(&["goal", "budget-add", "--tokens", "5000", "--json"]);
    assert_eq!(added["budget_tokens"], 6600, "max(budget, used) + added");
    assert_eq!(added["latest"]["label"], "budget_extended");
    let out = fx.omk(&["goal", "resume", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "ready");
    let graph = read_json(&fx.goal_dir(&id).join("task-graph.json"));
    for t in graph["tasks"].as_array().unwrap() {
        assert_eq!(t["attempts"], 1, "no task ran twice: {t}");
    }
}

#[test]
fn a_killed_controller_resumes_without_repeating_finished_tasks() {
    let fx = Fx::new("[[gate]]\nname = \"both\"\ncommand = \"grep -q b log.txt\"\n");
    let plan = "[answer:{\"tasks\": [{\"id\": \"a\", \"title\": \"A [run:echo a >> log.txt\\]\"}, {\"id\": \"b\", \"title\": \"B [sleep:2\\] [run:echo b >> log.txt\\]\", \"depends_on\": [\"a\"\\]}\\]}]";
    let mut child = fx
        .cmd(&["goal", "run", plan, "--approval", "approve-all"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until wave 2 (task b) is under way, then SIGKILL the controller.
    let deadline = Instant::now() + Duration::from_secs(30);
    let goal_dir = loop {
        assert!(Instant::now() < deadline, "wave 2 never started");
        let found = std::fs::read_dir(fx.state.join("goal"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(dir) = found {
            if let Ok(text) = std::fs::read_to_string(dir.join("task-graph.json")) {
                let g: Value = serde_json::from_str(&text).unwrap();
                if g["tasks"][1]["status"] == "running" {
                    break dir;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let state = read_json(&goal_dir.join("goal.json"));
    assert_eq!(
        state["status"], "running",
        "a killed controller leaves the goal running"
    );

    let out = fx.omk(&["goal", "resume", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "ready");
    let log = std::fs::read_to_string(fx.project.join("log.txt")).unwrap();
    assert_eq!(
        log.lines().filter(|l| *l == "a").count(),
        1,
        "task a ran once: {log:?}"
    );
    let graph = read_json(&goal_dir.join("task-graph.json"));
    assert_eq!(graph["tasks"][0]["attempts"], 1);
    assert_eq!(graph["tasks"][1]["status"], "done");
}

#[test]
fn circular_fix_is_diagnosed_recovered_and_rolled_back() {
    let fx = Fx::new("[[gate]]\nname = \"never\"\ncommand = \"test -f never.txt\"\n");
    // Every agent turn toggles a.txt: the same change done and undone.
    let outcome = "Stabilise [run:if test -f a.txt; then rm a.txt; else echo v > a.txt; fi] [json-plan:Toggle]";
    let out = fx.omk(&[
        "goal",
        "run",
        outcome,
        "--until-ready",
        "--approval",
        "approve-all",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let d = fx.json(&["goal", "diagnose", "--json"]);
    assert_eq!(d["stagnant"], true, "{d}");
    assert_eq!(d["diagnosis"]["primary"], "CircularFix", "{d}");
    assert_eq!(
        d["diagnosis"]["affected_files"],
        serde_json::json!(["a.txt"])
    );
    assert!(d["confidence"].as_f64().unwrap() >= 0.6);
    assert_eq!(d["recommended_action"], "recover");
    assert_eq!(d["metrics_window"]["window_size"], 10);
    assert_eq!(d["metrics_window"]["warmup_iterations"], 3);
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert!(proof["known_gaps"].to_string().contains("CircularFix"));

    let r = fx.json(&["goal", "recover", "--json"]);
    assert_eq!(
        r["checkpoint_id"], 2,
        "checkpoint 1 was taken after planning"
    );
    assert_eq!(r["plan"]["strategy"], "rollback_and_rethink");
    assert_eq!(r["plan"]["risk_level"], "medium");
    assert!(r["plan"]["estimated_cost"]["tokens"].is_u64());
    let id = d["goal_id"].as_str().unwrap().to_string();
    let dir = fx.goal_dir(&id);
    let cp2 = read_json(&dir.join("checkpoints/checkpoint-2.json"));
    assert!(
        cp2["task_graph"]["tasks"].as_array().unwrap().len() > 1,
        "fix tasks were added"
    );

    // Back to the plan: the earlier task graph, and no proof yet.
    let out = fx.omk(&["goal", "rollback", "--checkpoint", "1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let graph = read_json(&dir.join("task-graph.json"));
    assert_eq!(graph["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(graph["tasks"][0]["status"], "pending");
    assert!(!dir.join("proof.json").exists());
    // Forward to the recovery checkpoint: its graph and proof.
    let out = fx.omk(&["goal", "rollback", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_json(&dir.join("task-graph.json")), cp2["task_graph"]);
    assert_eq!(read_json(&dir.join("proof.json")), cp2["proof"]);
    assert_eq!(fx.json(&["goal", "show", "--json"])["status"], "not_ready");
    let missing = fx.omk(&["goal", "rollback", "--checkpoint", "9"]);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));
}

#[test]
fn replay_counts_duplicates_and_torn_lines() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let out = fx.omk(&["goal", "run", "Go [json-plan:One]"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = fx.json(&["goal", "replay", "--json"]);
    let id = before["goal_id"].as_str().unwrap().to_string();
    let log = fx.goal_dir(&id).join("events.jsonl");
    let text_before = std::fs::read_to_string(&log).unwrap();
    let third = text_before.lines().nth(2).unwrap().to_string();
    std::fs::write(
        &log,
        format!("{text_before}{third}\n{third}\n{{\"id\":\"torn\",\"ts\":\"2026"),
    )
    .unwrap();
    let after = fx.json(&["goal", "replay", "--json"]);
    assert_eq!(after["duplicate_events"], 2);
    assert_eq!(after["parse_failures"], 1);
    assert_eq!(after["event_count"], before["event_count"]);
    assert_eq!(
        after["generated_at"], before["generated_at"],
        "from the log, not the clock"
    );
    assert!(after["recovery_status"]
        .as_str()
        .unwrap()
        .starts_with("partial"));
    assert_eq!(after["known_gaps"].as_array().unwrap().len(), 2);
}

#[test]
fn a_cyclic_task_graph_is_refused_and_left_untouched() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    // The planner proposes a cycle: refused, asked again, then one task.
    let cyclic = "[answer:{\"tasks\": [{\"id\": \"a\", \"title\": \"A\", \"depends_on\": [\"b\"\\]}, {\"id\": \"b\", \"title\": \"B\", \"depends_on\": [\"a\"\\]}\\]}]";
    let out = fx.omk(&["goal", "run", cyclic, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = state["goal_id"].as_str().unwrap().to_string();
    let replay = fx.json(&["goal", "replay", "--json"]);
    assert!(replay["timeline"].to_string().contains("plan_fallback"));
    assert!(
        std::fs::read_to_string(fx.goal_dir(&id).join("planner-answer.md"))
            .unwrap()
            .contains("depends_on")
    );

    // A cycle written into the stored graph is corrupt state naming the task.
    let file = fx.goal_dir(&id).join("task-graph.json");
    let bad = r#"{"version":1,"tasks":[{"id":"x","title":"X","dependencies":["y"],"status":"pending"},{"id":"y","title":"Y","dependencies":["x"],"status":"pending"}]}"#;
    std::fs::write(&file, bad).unwrap();
    let out = fx.omk(&["goal", "verify"]);
    assert_eq!(out.status.code(), Some(5), "corrupt_state: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dependency cycle"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        bad,
        "left untouched"
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    for args in [
        vec!["goal", "run", "   "],
        vec!["goal", "run", "x", "--budget-time", "8x"],
        vec!["goal", "run", "x", "--budget-tokens", "0"],
        vec!["goal", "run", "x", "--max-agents", "0"],
        vec!["goal", "run", "x", "--approval", "yolo"],
    ] {
        let out = fx.omk(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    assert!(!fx.state.join("goal").exists());
    let out = fx.omk(&["goal", "show", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = fx.omk(&["goal", "show", "goal-nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = fx.omk(&["goal", "show"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "latest of nothing: {}",
        text(&out)
    );
}

#[test]
fn ctrl_c_pauses_a_goal_even_mid_planning() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    // The planner's turn sleeps 30 s; Ctrl-C must not wait for it.
    let child = fx
        .cmd(&["goal", "run", "Slow start [sleep:30]", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let goals = fx.state.join("goal");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dir = loop {
        let found = std::fs::read_dir(&goals)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(dir) = found.filter(|d| {
            d.join("goal.json").exists() && read_json(&d.join("goal.json"))["phase"] == "planning"
        }) {
            break dir;
        }
        assert!(Instant::now() < deadline, "planning never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the planner's agent start its turn.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the planner turn was not interrupted"
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "paused", "{state}");
    assert_eq!(state["phase"], "planning");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pausing goal"));
    // Paused, not failed: `goal resume` plans again.
    let id = dir.file_name().unwrap().to_str().unwrap().to_string();
    let shown = fx.json(&["goal", "show", &id, "--json"]);
    assert_eq!(shown["status"], "paused");
}

#[test]
fn pause_and_cancel_from_another_process() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let out = fx.omk(&[
        "goal",
        "run",
        "Slow [json-plan:Wait [sleep:30\\]]",
        "--detach",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = state["goal_id"].as_str().unwrap().to_string();
    let dir = fx.goal_dir(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_json(&dir.join("controller.json"))["active_team"].is_null() {
        assert!(Instant::now() < deadline, "the wave never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let out = fx.omk(&["goal", "cancel", &id, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel stops the wave"
    );
    // The controller notices and exits, leaving the goal cancelled.
    while !read_json(&dir.join("controller.json"))["pid"].is_null() {
        assert!(Instant::now() < deadline, "the controller did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = fx.json(&["goal", "show", &id, "--json"]);
    assert_eq!(state["status"], "cancelled");
    assert_eq!(state["failure"]["reason"], "cancelled by user");
    let out = fx.omk(&["goal", "resume", &id]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a cancelled goal stays cancelled: {}",
        text(&out)
    );
}

#[test]
fn rollback_with_git_resets_the_work_tree_and_refuses_uncommitted_changes() {
    let fx = Fx::new("[[gate]]\nname = \"hello\"\ncommand = \"test -f hello.txt\"\n");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=omk",
                "-c",
                "user.email=omk@example.invalid",
            ])
            .args(args)
            .current_dir(&fx.project)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "base"]);
    let base = git(&["rev-parse", "HEAD"]);
    let out = fx.omk(&[
        "goal",
        "run",
        "Hello [json-plan:Write [write:hello.txt:hi\\]]",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // The agent's file is not committed: a git rollback would lose it.
    let out = fx.omk(&["goal", "rollback", "--checkpoint", "1", "--git"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uncommitted changes"));
    assert!(fx.project.join("hello.txt").exists(), "nothing touched");

    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "agent work"]);
    let proof = fx.json(&["goal", "proof", "--json"]);
    assert_eq!(proof["status"], "ready");
    let r = fx.json(&["goal", "rollback", "--checkpoint", "1", "--git", "--json"]);
    assert_eq!(r["git_reset_to"], base.as_str());
    assert_eq!(git(&["rev-parse", "HEAD"]), base);
    assert!(
        !fx.project.join("hello.txt").exists(),
        "work tree back at the checkpoint"
    );
}

#[test]
fn latest_is_the_current_projects_goal_and_git_rollback_stays_in_its_project() {
    let fx = Fx::new("[[gate]]\nname = \"hello\"\ncommand = \"test -f hello.txt\"\n");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=omk",
                "-c",
                "user.email=omk@example.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Project X (the fixture's) is a git repository with a goal and a
    // checkpoint; project Y, beside it, gets a newer goal.
    git(&fx.project, &["init", "-q"]);
    git(&fx.project, &["add", "-A"]);
    git(&fx.project, &["commit", "-q", "-m", "base"]);
    let base = git(&fx.project, &["rev-parse", "HEAD"]);
    let x: Value = {
        let out = fx.omk(&[
            "goal",
            "run",
            "X [json-plan:Write [write:hello.txt:hi\\]]",
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let x_id = x["goal_id"].as_str().unwrap().to_string();
    git(&fx.project, &["add", "-A"]);
    git(&fx.project, &["commit", "-q", "-m", "agent work"]);
    let y_dir = fx.root.join("other");
    std::fs::create_dir_all(y_dir.join(".omk")).unwrap();
    std::fs::copy(
        fx.project.join(".omk/gates.toml"),
        y_dir.join(".omk/gates.toml"),
    )
    .unwrap();
    let y_run = |args: &[&str]| {
        let mut cmd = fx.cmd(args);
        cmd.current_dir(&y_dir);
        cmd.output().unwrap()
    };
    let out = y_run(&[
        "goal",
        "run",
        "Y [json-plan:Write [write:hello.txt:hi\\]]",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let y_id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["goal_id"]
        .as_str()
        .unwrap()
        .to_string();

    // `latest` is per project; --all-projects widens it.
    assert_eq!(
        fx.json(&["goal", "show", "--json"])["goal_id"],
        x_id.as_str()
    );
    let shown: Value = serde_json::from_slice(&y_run(&["goal", "show", "--json"]).stdout).unwrap();
    assert_eq!(shown["goal_id"], y_id.as_str());
    assert_eq!(
        fx.json(&["goal", "show", "--all-projects", "--json"])["goal_id"],
        y_id.as_str()
    );
    let status = fx.omk(&["goal", "status"]);
    assert!(
        text(&status).contains(&x_id) && !text(&status).contains(&y_id),
        "{}",
        text(&status)
    );
    // A project without goals: `latest` names nothing there.
    let empty = fx.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = fx.cmd(&["goal", "show"]);
    cmd.current_dir(&empty);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("no goal found for project"),
        "{}",
        text(&out)
    );

    // A --git rollback of X's goal run from Y is refused and touches nothing.
    let out = y_run(&["goal", "rollback", &x_id, "--checkpoint", "1", "--git"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("belongs to project") && text(&out).contains("-C"),
        "{}",
        text(&out)
    );
    assert_ne!(
        git(&fx.project, &["rev-parse", "HEAD"]),
        base,
        "X was reset"
    );
    // Named with -C, it resets X and says which work tree it reset.
    let mut cmd = fx.cmd(&[
        "-C",
        fx.project.to_str().unwrap(),
        "goal",
        "rollback",
        &x_id,
        "--checkpoint",
        "1",
        "--git",
    ]);
    cmd.current_dir(&y_dir);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!(
            "Work tree {} reset to {base}",
            fx.project.display()
        )),
        "{shown}"
    );
    assert_eq!(git(&fx.project, &["rev-parse", "HEAD"]), base);
}

#[test]
fn an_unknown_goal_is_not_found() {
    let fx = Fx::new("");
    let out = fx.omk(&["goal", "show", "goal-nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("goal \"goal-nope\" not found"),
        "{}",
        text(&out)
    );
}

fn git(fx: &Fx, args: &[&str]) -> String {
    common::git(&fx.project, args)
}

/// A git project whose gate needs both workers' files, with uncommitted
/// notes of the user's.
fn sliced_project() -> Fx {
    let fx = Fx::new(
        "[[gate]]\nname = \"both\"\ncommand = \"grep -q hi hello.txt && grep -q two second.txt\"\n",
    );
    git(&fx, &["init", "-q", "-b", "main"]);
    git(&fx, &["add", "-A"]);
    git(&fx, &["commit", "-qm", "gates"]);
    std::fs::write(fx.project.join("notes.txt"), "mine\n").unwrap();
    fx
}

const SLICED_GOAL: &str = "Two files [json-plan:Write the greeting [write:hello.txt:hi\\]|Write the second [write:second.txt:two\\]]";

#[test]
fn a_sliced_goal_works_in_its_own_worktree_and_gated_applies_the_ready_result() {
    let fx = sliced_project();
    let head = git(&fx, &["rev-parse", "HEAD"]);
    let state = fx.json(&[
        "goal",
        "run",
        SLICED_GOAL,
        "--max-agents",
        "2",
        "--slice-execution",
        "--merge-policy",
        "gated",
        "--json",
    ]);
    assert_eq!(state["status"], "ready", "{state}");
    assert_eq!(state["slice_execution"], true);
    assert_eq!(state["merge_policy"], "gated");
    assert_eq!(state["delivery_policy"], "local");
    let id = state["goal_id"].as_str().unwrap();
    // The wave ran isolated: its workers in worktrees, the result landed in
    // the goal's workspace, where the gate saw both files.
    let c = read_json(&fx.goal_dir(id).join("controller.json"));
    let ws = c["workspace"]["dir"].as_str().unwrap();
    let wave = c["teams"][0].as_str().unwrap();
    let team = read_json(&fx.state.join("team").join(wave).join("team.json"));
    assert_eq!(team["isolation"], "worktree");
    assert_eq!(
        std::fs::read_to_string(Path::new(ws).join("second.txt")).unwrap(),
        "two"
    );
    let proof = fx.json(&["goal", "proof", id, "--json"]);
    assert_eq!(proof["status"], "ready", "{proof}");
    assert_eq!(proof["gates"][0]["passed"], true);
    // Delivered: on the branch, and (gated, the checkout unchanged) in the
    // user's files; HEAD, index and branches otherwise as they were.
    let d = read_json(&fx.goal_dir(id).join("delivery.json"));
    assert_eq!(d["applied"], true, "{d}");
    assert_eq!(d["branch"], format!("omk/{id}"));
    assert_eq!(git(&fx, &["show", &format!("omk/{id}:hello.txt")]), "hi");
    assert_eq!(
        git(&fx, &["show", &format!("omk/{id}:notes.txt")]),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(fx.project.join("hello.txt")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_to_string(fx.project.join("second.txt")).unwrap(),
        "two"
    );
    assert_eq!(git(&fx, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&fx, &["status", "--porcelain"]),
        "?? hello.txt\n?? notes.txt\n?? second.txt\n"
    );
    assert_eq!(
        git(&fx, &["branch", "--format=%(refname:short)"]),
        format!("main\nomk/{id}\n")
    );
    // Only the goal's workspace is left besides the user's checkout.
    let wts = git(&fx, &["worktree", "list", "--porcelain"]);
    assert_eq!(wts.matches("worktree ").count(), 2, "{wts}");
    assert!(wts.contains(ws), "{wts}");
}

#[test]
fn a_sliced_goal_under_manual_is_ready_with_a_merge_decision_and_touches_nothing() {
    let fx = sliced_project();
    let state = fx.json(&[
        "goal",
        "run",
        SLICED_GOAL,
        "--max-agents",
        "2",
        "--slice-execution",
        "--merge-policy",
        "manual",
        "--json",
    ]);
    assert_eq!(state["status"], "ready", "{state}");
    let id = state["goal_id"].as_str().unwrap();
    let proof = fx.json(&["goal", "proof", id, "--json"]);
    assert_eq!(
        proof["human_decisions_required"],
        serde_json::json!([format!("merge omk/{id} (git merge omk/{id})")])
    );
    assert!(!fx.project.join("hello.txt").exists());
    assert_eq!(git(&fx, &["status", "--porcelain"]), "?? notes.txt\n");
    assert_eq!(git(&fx, &["show", &format!("omk/{id}:second.txt")]), "two");
}

#[test]
fn merge_and_delivery_policies_omk_cannot_honour_are_refused_before_anything_is_written() {
    let fx = sliced_project();
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["goal", "run", "x"];
        all.extend_from_slice(args);
        let out = fx.omk(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    };
    refused(&["--merge-policy", "gated"], "needs slice_execution");
    refused(
        &["--slice-execution", "--delivery-policy", "pr"],
        "no forge client",
    );
    let plain = Fx::new("");
    let out = plain.omk(&["goal", "run", "x", "--slice-execution"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("needs a git work tree"),
        "{}",
        text(&out)
    );
    assert!(
        !fx.state.join("goal").exists()
            || std::fs::read_dir(fx.state.join("goal")).unwrap().count() == 0
    );
}
