//! Agent profiles and mixed teams through the CLI, with the scripted agent
//! standing in for vendors: `[agents.NAME]` profiles over Wire and ACP in
//! one team, the spec syntax and its validation, tokens and cost per
//! agent, an ACP team's approvals, refused writes, shutdown mid-turn, a
//! turn the agent cancels itself, a dying agent replaced, and the `OMK_*`
//! overrides of the default profile.

mod common;

use std::time::{Duration, Instant};

use common::{agent_bin, read_json, text, Fx};
use serde_json::Value;

/// `Fx` plus two profiles: `acp-a` (the scripted agent over ACP) and
/// `wire-b` (over Wire).
fn fx() -> Fx {
    let fx = Fx::new("");
    let bin = agent_bin().display().to_string();
    let mut cfg = std::fs::read_to_string(fx.root.join("omk.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[agents.acp-a]\ncommand = [{bin:?}, \"acp\"]\nprotocol = \"acp\"\n\
         \n[agents.wire-b]\ncommand = [{bin:?}]\nprotocol = \"wire\"\n"
    ));
    std::fs::write(fx.root.join("omk.toml"), cfg).unwrap();
    fx
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

fn agent_pids(doc: &Value) -> Vec<u64> {
    let dir = doc["state_dir"].as_str().unwrap();
    std::fs::read_to_string(format!("{dir}/events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "worker_started")
        .filter_map(|e| e["payload"]["agent_pid"].as_u64())
        .collect()
}

#[test]
fn a_mixed_team_records_workers_tasks_and_usage_per_agent() {
    let fx = fx();
    let doc = fx.json(&[
        "team",
        "run",
        "2:executor@acp-a,1:reviewer@wire-b",
        "build it [tokens:10:5]",
        "--subtask",
        "one [write:one.txt:1]",
        "--subtask",
        "two [write:two.txt:2]",
        "--subtask",
        "three",
        "--json",
    ]);
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    assert_eq!(doc["worker_count"], 3);
    assert_eq!(doc["worker_role"], "executor,reviewer");
    let workers: Vec<(String, String)> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["role"].as_str().unwrap().into(),
                w["agent"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        workers,
        [
            ("executor".into(), "acp-a".into()),
            ("executor".into(), "acp-a".into()),
            ("reviewer".into(), "wire-b".into())
        ]
    );
    for t in doc["tasks"].as_array().unwrap() {
        let agent = t["agent"].as_str().unwrap();
        assert!(agent == "acp-a" || agent == "wire-b", "{t}");
        assert_eq!(t["tokens"], 15, "{t}");
    }
    let agents = &doc["agents"];
    assert_eq!(agents["acp-a"]["protocol"], "acp");
    assert_eq!(agents["wire-b"]["protocol"], "wire");
    let by_agent: u64 = ["acp-a", "wire-b"]
        .iter()
        .map(|a| agents[a]["tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(by_agent, doc["tokens"].as_u64().unwrap(), "{agents:#}");
    // Only the ACP agent reports cost.
    assert!(agents["acp-a"]["cost"]["amount"].as_f64().unwrap() > 0.0);
    assert!(agents["wire-b"].get("cost").is_none());
    assert_eq!(
        std::fs::read_to_string(fx.project.join("one.txt")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(fx.project.join("two.txt")).unwrap(),
        "2"
    );
}

#[test]
fn bad_specs_and_unknown_agents_are_refused_and_nothing_is_written() {
    let fx = fx();
    for (spec, want) in [
        ("2:executor@nope", "unknown agent profile \"nope\""),
        ("40:executor,30:reviewer", "70 workers"),
        ("2:executor@", "invalid worker spec"),
        ("2:executor,", "invalid worker spec"),
    ] {
        let out = fx.omk(&["team", "run", spec, "x"]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{spec}: {err}");
    }
    // The message names the known profiles, built-in and configured.
    let out = fx.omk(&["team", "run", "1:executor@nope", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    for known in ["acp-a", "wire-b", "kimi-acp", "claude", "qwen"] {
        assert!(err.contains(known), "{known}: {err}");
    }
    assert!(
        !fx.state.join("team").exists()
            || std::fs::read_dir(fx.state.join("team")).unwrap().count() == 0
    );
}

#[test]
fn an_acp_team_goes_through_approvals_and_the_file_service() {
    let fx = fx();
    let doc = fx.json(&[
        "team",
        "run",
        "1:executor@acp-a",
        "t",
        "--subtask",
        "[write:inside.txt:ok] [run:touch ran.txt] [write:../outside.txt:no]",
        "--json",
    ]);
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    assert!(fx.project.join("inside.txt").exists());
    // workdir-edits rejects the command and the edit outside the work dir.
    assert!(!fx.project.join("ran.txt").exists());
    assert!(!fx.project.parent().unwrap().join("outside.txt").exists());
    let dir = doc["state_dir"].as_str().unwrap();
    let decisions: Vec<Value> = std::fs::read_to_string(format!("{dir}/events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| e["payload"].clone())
        .collect();
    assert_eq!(decisions.len(), 3, "{decisions:#?}");
    assert_eq!(decisions[0]["decision"], "approve");
    assert_eq!(decisions[1]["decision"], "reject");
    assert_eq!(decisions[2]["decision"], "reject");
}

#[test]
fn shutdown_mid_turn_cancels_an_acp_turn_and_leaves_no_process() {
    let fx = fx();
    let out = fx.omk(&[
        "team",
        "run",
        "1:executor@acp-a",
        "t",
        "--name",
        "slow",
        "--subtask",
        "[sleep:60]",
        "--detach",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let team = fx.state.join("team/slow/team.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = team.exists()
            && read_json(&team)["tasks"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["status"] == "running"));
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = fx.omk(&["team", "shutdown", "slow", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let doc = read_json(&team);
        if doc["phase"] == "Shutdown" {
            break doc;
        }
        assert!(Instant::now() < deadline, "{doc:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(doc["tasks"][0]["status"], "cancelled", "{doc:#}");
    let transcript =
        std::fs::read_to_string(fx.state.join("team/slow/workers/w1/transcript.jsonl")).unwrap();
    assert!(
        transcript.contains(r#""status":"cancelled""#),
        "the turn ended as cancelled: {transcript}"
    );
    for pid in agent_pids(&doc) {
        assert!(!alive(pid), "agent {pid} is still running");
    }
}

#[test]
fn an_acp_agent_that_dies_mid_turn_is_replaced_and_the_task_retried() {
    let fx = fx();
    let doc = fx.json(&[
        "team",
        "run",
        "1:executor@acp-a",
        "t",
        "--subtask",
        "[crash-once:marker] [answer:second try]",
        "--json",
    ]);
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    let t = &doc["tasks"][0];
    assert_eq!(t["attempts"], 2, "{t}");
    assert!(
        t["errors"][0]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{t}"
    );
    assert_eq!(t["summary"], "second try");
    let pids = agent_pids(&doc);
    assert_eq!(pids.len(), 2, "a new agent for the retry");
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[test]
fn an_agent_that_cancels_a_turn_on_its_own_fails_the_attempt_instead_of_looping() {
    // Codex answers a refused permission with stopReason "cancelled": only a
    // cancel omk asked for (shutdown) may hand the task back uncounted;
    // this one fails after its 3 attempts (the default max_attempts).
    let fx = fx();
    let doc = fx.json(&[
        "team",
        "run",
        "1:executor@acp-a",
        "t",
        "--subtask",
        "[give-up]",
        "--json",
    ]);
    assert_eq!(doc["phase"], "Failed", "{doc:#}");
    let t = &doc["tasks"][0];
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(3)),
        "{t}"
    );
    assert!(
        t["errors"][0]
            .as_str()
            .unwrap()
            .contains("cancelled the turn without being asked"),
        "{t}"
    );
}

#[test]
fn the_environment_still_overrides_the_default_profile() {
    let fx = fx();
    // OMK_KIMI_BIN alone (set by Fx): the default `kimi` profile, over Wire.
    let doc = fx.json(&["team", "run", "1:executor", "t", "--subtask", "x", "--json"]);
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    assert_eq!(doc["workers"][0]["agent"], "kimi");
    assert_eq!(doc["agents"]["kimi"]["protocol"], "wire");
    // Plus OMK_KIMI_ARGS and OMK_AGENT_PROTOCOL: the same profile over ACP.
    let out = fx
        .cmd(&["team", "run", "1:executor", "t", "--subtask", "x", "--json"])
        .env("OMK_KIMI_ARGS", "acp")
        .env("OMK_AGENT_PROTOCOL", "acp")
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    assert_eq!(doc["agents"]["kimi"]["protocol"], "acp");
    // --agent picks the profile of terms without @agent.
    let doc = fx.json(&[
        "team",
        "run",
        "1:executor",
        "t",
        "--agent",
        "acp-a",
        "--subtask",
        "x",
        "--json",
    ]);
    assert_eq!(doc["workers"][0]["agent"], "acp-a");
}

#[test]
fn acp_sessions_get_the_projects_mcp_servers() {
    let fx = fx();
    std::fs::write(
        fx.project.join(".omk/mcp.json"),
        r#"{"mcpServers": {"files": {"command": "mcp-files", "args": ["--root", "."]},
                            "web": {"url": "http://127.0.0.1:9/mcp"}}}"#,
    )
    .unwrap();
    let doc = fx.json(&[
        "team",
        "run",
        "1:executor@acp-a",
        "t",
        "--subtask",
        "[mcp]",
        "--json",
    ]);
    assert_eq!(doc["phase"], "Completed", "{doc:#}");
    // The scripted agent offers no HTTP MCP: only the stdio server is sent.
    assert_eq!(doc["tasks"][0]["summary"], "mcp: files (stdio)", "{doc:#}");
    // A broken mcp.json stops the run before anything is written.
    std::fs::write(fx.project.join(".omk/mcp.json"), "{").unwrap();
    let out = fx.omk(&["team", "run", "1:executor@acp-a", "t", "--subtask", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcp.json"));
}
