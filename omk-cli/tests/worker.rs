//! `omk worker` daemons as hosts: each in its own network and pid namespace
//! (`unshare --net --pid --fork --mount-proc --kill-child`), reaching the
//! test's PostgreSQL through its unix socket, with state and work dirs of
//! their own; the scripted agent. Needs `make cargo-test` (PostgreSQL) and
//! root (namespaces); without them the tests say SKIPPED, except under
//! `CI=true`, where that is a failure.

mod cluster;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{all_completed, completed_by, holder_host, team_result, Cluster, Dashboard};
use serde_json::{json, Value};

#[test]
fn a_team_spreads_over_two_hosts_and_a_crashed_host_loses_its_task_to_the_other() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 2, 2);
    let mut b = c.host("host-b", 2, 2);
    c.submit("six", &["[sleep:1] [answer:one]"; 6], 3);
    let done = c.wait_tasks("six", "6 completions", |t| {
        t.iter().all(|t| t.status == "completed")
    });
    let hosts: std::collections::BTreeSet<String> = done.iter().map(completed_by).collect();
    assert_eq!(hosts.len(), 2, "one host did everything: {done:?}");
    let events = c.events("six");
    let completions = events.iter().filter(|(k, _)| k == "task_completed").count();
    assert_eq!(completions, 6);

    // A host dies mid-task: its lease expires and the other takes over.
    c.submit("crash", &["[sleep:3] [answer:survived]"], 3);
    let running = c.wait_tasks("crash", "a holder", |t| t[0].status == "running");
    let (victim, survivor) = if holder_host(&running[0]) == "host-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    std::thread::sleep(Duration::from_millis(300));
    victim.crash();
    let t = c.wait_tasks("crash", "the takeover", |t| t[0].status == "completed");
    assert_eq!(completed_by(&t[0]), survivor.name);
    assert_eq!((t[0].epoch, t[0].attempts), (2, 2));
    let events = c.events("crash");
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_completed").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"lease_expired"), "{kinds:?}");
    let epochs: Vec<i64> = events
        .iter()
        .filter(|(k, _)| k == "task_claimed")
        .map(|(_, p)| p["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2]);
    let report = survivor.stop();
    assert!(report["completed"].as_u64().unwrap() >= 1, "{report}");
}

#[test]
fn a_host_stopped_past_its_lease_cannot_record_its_late_completion() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 1, 1);
    c.submit("late", &["[sleep:2] [answer:late]"], 3);
    c.wait_tasks("late", "host-a's claim", |t| t[0].status == "running");
    let pid = a.worker_pid();
    a.signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let mut b = c.host("host-b", 5, 1);
    let t = c.wait_tasks("late", "host-b's takeover", |t| {
        t[0].epoch == 2 && holder_host(&t[0]) == "host-b"
    });
    assert_eq!(t[0].status, "running");
    // host-a wakes with its agent's answer (or a renewal) due: refused.
    a.signal(pid, nix::sys::signal::Signal::SIGCONT);
    let t = c.wait_tasks("late", "host-b's completion", |t| {
        t[0].status == "completed"
    });
    assert_eq!(completed_by(&t[0]), "host-b", "{:#?}", c.events("late"));
    std::thread::sleep(Duration::from_millis(500));
    let report = a.stop();
    assert_eq!(report["lost"], 1, "{report}");
    assert_eq!(report["completed"], 0, "{report}");
    let completions = c
        .events("late")
        .iter()
        .filter(|(k, _)| k == "task_completed")
        .count();
    assert_eq!(completions, 1);
    assert_eq!(b.stop()["completed"], 1);
}

#[test]
fn a_turn_four_times_its_lease_keeps_it_while_the_agent_works() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 1, 1);
    c.submit("long", &["[sleep:4] [answer:kept]"], 3);
    let t = c.wait_tasks("long", "the end of the task", |t| {
        t[0].status == "completed" || t[0].status == "failed"
    });
    // Renewed every third of a second: one attempt, one epoch, no expiry.
    assert_eq!(
        (t[0].status.as_str(), t[0].attempts, t[0].epoch),
        ("completed", 1, 1),
        "{:#?}",
        c.events("long")
    );
    assert!(!c.events("long").iter().any(|(k, _)| k == "lease_expired"));
    assert_eq!(a.stop()["completed"], 1);
}

#[test]
fn sigterm_releases_the_running_task_at_once() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 30, 1);
    c.submit("handover", &["[sleep:30] [answer:never]"], 3);
    c.wait_tasks("handover", "a claim", |t| t[0].status == "running");
    let t0 = Instant::now();
    let report = a.stop();
    assert_eq!(report["released"], 1, "{report}");
    let t = c.tasks("handover");
    assert_eq!((t[0].status.as_str(), t[0].attempts), ("pending", 0));
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Not after a 30 s lease: at once.
    let mut b = c.host("host-b", 30, 1);
    c.wait_tasks("handover", "host-b's claim", |t| {
        t[0].status == "running" && holder_host(&t[0]) == "host-b"
    });
    assert!(t0.elapsed() < Duration::from_secs(15));
    b.stop();
}

#[test]
fn team_run_with_a_store_runs_on_the_workers_and_ends_with_its_document() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    let (code, doc) = team_result(
        c.team_run("dist", 5, &["[sleep:0.5] [answer:a]"; 4])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["phase"], "Completed", "{doc}");
    let tasks = doc["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4);
    for t in tasks {
        assert_eq!(t["status"], "completed", "{t}");
        assert!(t["worker"].as_str().unwrap().starts_with("host-"), "{t}");
        // The scripted agent's ticks while it sleeps, then the answer.
        assert!(t["summary"].as_str().unwrap().ends_with('a'), "{t}");
    }
    assert!(
        doc["state_dir"].as_str().unwrap().ends_with("#dist"),
        "{doc}"
    );
    // The store has the same document, and one run_completed.
    assert_eq!(c.team_doc("dist")["phase"], "Completed");
    let status = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_omk"))
            .args(["team", "status", name, "--json", "--store", &c.tcp_url])
            .env("OMK_STATE_DIR", c.tmp.path().join("reader"))
            .env("XDG_CONFIG_HOME", c.tmp.path().join("reader"))
            .env_remove("OMK_CONFIG")
            .output()
            .unwrap()
    };
    let out = status("dist");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read, doc);
    let out = status("nope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no team named \"nope\"") && !err.contains("omk-test"),
        "{err}"
    );
    let ends = c
        .events("dist")
        .iter()
        .filter(|(k, _)| k == "run_completed")
        .count();
    assert_eq!(ends, 1);
    a.stop();
    b.stop();
}

#[test]
fn a_killed_coordinator_is_taken_over_by_a_worker_and_the_team_completes() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 5, 2);
    let mut run = c
        .team_run(
            "orphan",
            1,
            &["[sleep:2] [answer:x]", "[sleep:2] [answer:y]"],
        )
        .spawn()
        .unwrap();
    c.wait_tasks("orphan", "the workers' claims", |t| {
        t.iter().all(|t| t.status == "running")
    });
    run.kill().unwrap();
    run.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let doc = c.team_doc("orphan");
        if doc["phase"] == "Completed" {
            break doc;
        }
        assert!(Instant::now() < until, "never completed: {doc}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(all_completed(&doc), "{doc}");
    let events = c.events("orphan");
    let enders: Vec<String> = events
        .iter()
        .filter(|(k, _)| k == "run_completed")
        .map(|(_, p)| p["phase"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(enders, ["Completed"]);
    a.stop();
}

#[test]
fn a_dashboard_elsewhere_follows_the_team_from_both_hosts_live() {
    let Some(c) = Cluster::new() else { return };
    let dashboard = Dashboard::start(&c);
    let events = dashboard.team_events();
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    c.submit("live", &["[sleep:1] [answer:seen]"; 6], 3);
    let mut versions: Vec<Value> = Vec::new();
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no end in the events: {versions:#?}"));
        assert_eq!(e["name"], "live", "{e}");
        let phase = e["document"]["phase"].as_str().unwrap().to_string();
        versions.push(e["document"].clone());
        if phase == "Completed" {
            break;
        }
    }
    // Live: versions in between show the work as it went.
    let done = |d: &Value| {
        d["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "completed")
            .count()
    };
    assert!(
        versions
            .iter()
            .any(|d| d["phase"] != "Completed" && (1..6).contains(&done(d))),
        "no version in progress: {versions:#?}"
    );
    let last = versions.last().unwrap();
    let hosts: std::collections::BTreeSet<&str> = last["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["worker"].as_str().unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(
        hosts.into_iter().collect::<Vec<_>>(),
        ["host-a", "host-b"],
        "{last}"
    );
    // The REST routes show the store's team and count its work.
    assert_eq!(dashboard.get("/api/teams/live")["phase"], "Completed");
    let listed = dashboard.get("/api/teams");
    assert!(
        listed["teams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "live"),
        "{listed}"
    );
    let metrics = dashboard.get("/api/metrics");
    assert_eq!(metrics["metrics"]["total_tasks_completed"], 6, "{metrics}");
    // The cluster's pools: both hosts' slots, until one leaves.
    let pools = dashboard.get("/api/pools");
    let default = &pools["cluster"]["pools"][0];
    assert_eq!(
        (
            &default["name"],
            &default["max_workers"],
            &default["queued_tasks"]
        ),
        (&Value::from("default"), &Value::from(4), &Value::from(0)),
        "{pools}"
    );
    assert_eq!(pools["cluster"]["workers"].as_array().unwrap().len(), 2);
    a.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_omk"))
        .args(["pools", "status", "--json", "--store", &c.tcp_url])
        .env("OMK_STATE_DIR", c.tmp.path().join("operator"))
        .env("XDG_CONFIG_HOME", c.tmp.path().join("operator"))
        .env_remove("OMK_CONFIG")
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cluster = &status["cluster"];
    assert_eq!(cluster["pools"][0]["max_workers"], 2, "{status}");
    assert_eq!(cluster["pools"][0]["workers"].as_array().unwrap().len(), 1);
    assert!(
        cluster["pools"][0]["workers"][0]
            .as_str()
            .unwrap()
            .starts_with("host-b/"),
        "{status}"
    );
    // This host's own pools are still there, as API.md has them.
    assert_eq!(status["pools"][0]["name"], "default", "{status}");
    b.stop();
}

#[test]
fn team_shutdown_with_a_store_cancels_the_team_and_frees_the_hosts_at_once() {
    let Some(c) = Cluster::new() else { return };
    // A lease far longer than the test: only the cancellation can free the
    // slots in time.
    let mut a = c.host("host-a", 60, 2);
    c.submit("stopme", &["[sleep:60] [answer:never]"; 4], 3);
    c.wait_tasks("stopme", "two running", |t| {
        t.iter().filter(|t| t.status == "running").count() == 2
    });
    // The store from the environment ($OMK_STORE), as for every command.
    let omk = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_omk"))
            .args(args)
            .env("OMK_STORE", &c.tcp_url)
            .env("OMK_STATE_DIR", c.tmp.path().join("operator"))
            .env("XDG_CONFIG_HOME", c.tmp.path().join("operator"))
            .env_remove("OMK_CONFIG")
            .output()
            .unwrap()
    };
    let listed = omk(&["team", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["teams"][0]["name"], "stopme", "{listed}");
    let out = omk(&["team", "shutdown", "stopme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["outcome"]
            .as_str()
            .unwrap()
            .contains("2 pending and 2 running task(s) cancelled"),
        "{r}"
    );
    let until = Instant::now() + Duration::from_secs(30);
    let doc = loop {
        let doc = c.team_doc("stopme");
        if doc["phase"] == "Shutdown" {
            break doc;
        }
        assert!(Instant::now() < until, "never shut down: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(doc["reason"], "shutdown requested", "{doc}");
    assert!(c.tasks("stopme").iter().all(|t| t.status == "cancelled"));
    // The agents were stopped: the host's slots take new work at once.
    c.submit("after", &["[answer:next]"; 2], 1);
    c.wait_tasks("after", "the freed slots' work", |t| {
        t.iter().all(|t| t.status == "completed")
    });
    let report = a.stop();
    assert_eq!(report["lost"], 2, "{report}");
    // Shutting down again changes nothing; an unknown team is not found.
    let again: Value =
        serde_json::from_slice(&omk(&["team", "shutdown", "stopme", "--json"]).stdout).unwrap();
    assert_eq!(again["phase"], "Shutdown", "{again}");
    assert_eq!(again["stopped"], false, "{again}");
    let out = omk(&["team", "shutdown", "nope"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_team_without_subtasks_is_planned_in_the_store_then_run_on_the_hosts() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    let run =
        |name: &str, task: &str| team_result(c.team_run_task(name, 5, task, &[]).output().unwrap());
    let (code, doc) = run("planned", "[sleep:0.3] [json-plan:one|two|three|four]");
    assert_eq!(
        (code, &doc["phase"]),
        (Some(0), &Value::from("Completed")),
        "{doc}"
    );
    let titles: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["one", "two", "three", "four"], "{doc}");
    assert!(all_completed(&doc), "{doc}");
    let events = c.events("planned");
    let phases: Vec<(&str, &str)> = events
        .iter()
        .filter(|(k, _)| k == "phase_changed")
        .map(|(_, p)| (p["from"].as_str().unwrap_or("-"), p["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [("Planning", "Executing"), ("Executing", "Completed")]
    );
    let created = events.iter().filter(|(k, _)| k == "task_created").count();
    assert_eq!(created, 5, "the plan task and four subtasks");

    // An answer that is no plan fails the team, saying why.
    let (code, doc) = run("unplanned", "[answer:no plan here]");
    assert_eq!(
        (code, &doc["phase"]),
        (Some(1), &Value::from("Failed")),
        "{doc}"
    );
    assert!(
        doc["reason"]
            .as_str()
            .unwrap()
            .starts_with("planning failed: the planner's answer contains no JSON array"),
        "{doc}"
    );
    a.stop();
    b.stop();
}

/// `git ARGS` in `dir` as a test user, its output trimmed.
/// The most tasks of `team` running at once, from its events in order.
fn most_running(c: &Cluster, team: &str) -> i32 {
    let (mut now, mut most) = (0, 0);
    for (kind, _) in c.events(team) {
        match kind.as_str() {
            "task_claimed" => now += 1,
            "task_completed" | "retry_scheduled" | "task_failed" => now -= 1,
            _ => {}
        }
        most = most.max(now);
    }
    most
}

#[test]
fn a_teams_worker_count_caps_its_running_tasks_across_hosts() {
    let Some(c) = Cluster::new() else { return };
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    // Four slots; a team of one worker and a team of two at once.
    c.submit_as("solo", "1:executor", &["[sleep:0.4] [answer:s]"; 3], 3);
    c.submit_as("pair", "2:executor", &["[sleep:0.4] [answer:p]"; 4], 3);
    for team in ["solo", "pair"] {
        c.wait_tasks(team, "every completion", |t| {
            t.iter().all(|t| t.status == "completed")
        });
    }
    assert_eq!(most_running(&c, "solo"), 1);
    assert_eq!(most_running(&c, "pair"), 2);
    a.stop();
    b.stop();
}

/// `omk pools ARGS --json --store` (TCP) from this host; its JSON.
fn pools_cmd(c: &Cluster, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omk"))
        .arg("pools")
        .args(args)
        .args(["--json", "--store", &c.tcp_url])
        .env("OMK_STATE_DIR", c.tmp.path().join("pools-state"))
        .env("XDG_CONFIG_HOME", c.tmp.path().join("pools-xdg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_pools_capacity_in_the_store_caps_its_running_tasks_across_hosts() {
    let Some(c) = Cluster::new() else { return };
    let set = pools_cmd(&c, &["set", "default", "--max-workers", "2"]);
    assert_eq!(set["pool"]["capacity"], 2, "{set}");
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    // Four slots and a team of four workers; the pool admits two at once.
    c.submit("capped", &["[sleep:0.4] [answer:c]"; 6], 3);
    c.wait_tasks("capped", "two running", |t| {
        t.iter().filter(|t| t.status == "running").count() == 2
    });
    let status = pools_cmd(&c, &["status"]);
    let default = status["cluster"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap()
        .clone();
    assert_eq!(
        (&default["capacity"], &default["max_workers"]),
        (&json!(2), &json!(4)),
        "{status}"
    );
    c.wait_tasks("capped", "every completion", |t| {
        t.iter().all(|t| t.status == "completed")
    });
    assert_eq!(most_running(&c, "capped"), 2);
    // Without a capacity, the workers' slots bound the pool again.
    let set = pools_cmd(&c, &["set", "default", "--unlimited"]);
    assert_eq!(set["pool"]["capacity"], Value::Null, "{set}");
    c.submit("free", &["[sleep:0.4] [answer:f]"; 6], 3);
    c.wait_tasks("free", "every completion", |t| {
        t.iter().all(|t| t.status == "completed")
    });
    let most = most_running(&c, "free");
    assert!(most > 2, "at most {most} running without a capacity");
    a.stop();
    b.stop();
}

/// The payloads of team `team`'s `integration_conflict` events.
fn conflicts_of(c: &Cluster, team: &str) -> Vec<Value> {
    c.events(team)
        .into_iter()
        .filter(|(k, _)| k == "integration_conflict")
        .map(|(_, p)| p)
        .collect()
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    common::git(dir, args).trim().to_string()
}

#[test]
fn a_team_from_a_git_work_tree_shares_its_code_and_is_delivered_on_a_branch() {
    let Some(c) = Cluster::new() else { return };
    // The repository every host reaches (through the filesystem here), and
    // the user's clone, with uncommitted work in it.
    let shared = c.tmp.path().join("shared.git");
    let work = c.tmp.path().join("work");
    git(
        c.tmp.path(),
        &["init", "-q", "--bare", shared.to_str().unwrap()],
    );
    git(
        c.tmp.path(),
        &[
            "clone",
            "-q",
            shared.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("README"), "hello\n").unwrap();
    // A required gate the integrated commit must pass (the user's
    // checkout never has a.txt).
    std::fs::create_dir_all(work.join(".omk")).unwrap();
    std::fs::write(
        work.join(".omk/gates.toml"),
        "[[gate]]\nname = \"has-a\"\ncommand = \"test -f a.txt\"\n",
    )
    .unwrap();
    git(&work, &["add", "README", ".omk/gates.toml"]);
    git(&work, &["commit", "-qm", "start"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    std::fs::write(work.join("draft.txt"), "not committed\n").unwrap();
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    let run = |name: &str, subtasks: &[&str]| {
        team_result(
            c.team_run_task(name, 5, "edit the project", subtasks)
                .current_dir(&work)
                .output()
                .unwrap(),
        )
    };
    let (code, doc) = run(
        "code",
        &[
            "[write:a.txt:alpha] [answer:a]",
            "[write:b.txt:beta] [answer:b]",
            "[answer:nothing to change]",
        ],
    );
    assert_eq!(
        (code, &doc["phase"]),
        (Some(0), &Value::from("Completed")),
        "{doc}"
    );
    let w = &doc["worktree"];
    assert_eq!(doc["isolation"], "worktree", "{doc}");
    assert_eq!(w["branch"], "omk/code", "{doc}");
    assert_eq!(w["base_dirty"], true, "{doc}");
    let head = git(&shared, &["rev-parse", "omk/code"]);
    assert_eq!(w["integrated_commit"], head.as_str(), "{doc}");
    // The delivered branch has the base (committed and uncommitted work)
    // and both tasks' files; the third changed nothing.
    for (file, text) in [
        ("README", "hello\n"),
        ("draft.txt", "not committed\n"),
        ("a.txt", "alpha"),
        ("b.txt", "beta"),
    ] {
        let shown = git(&shared, &["show", &format!("omk/code:{file}")]);
        assert_eq!(shown, text.trim_end(), "{file}");
    }
    let refs = git(
        &shared,
        &["for-each-ref", "--format=%(refname)", "refs/omk/code/"],
    );
    let refs: Vec<&str> = refs.lines().collect();
    assert_eq!(
        refs,
        [
            "refs/omk/code/base",
            "refs/omk/code/integration",
            "refs/omk/code/tasks/t1/1",
            "refs/omk/code/tasks/t2/1"
        ]
    );
    let outcomes: Vec<(&str, &str)> = w["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["task_id"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("t1", "integrated"), ("t2", "integrated")]);
    // The user's work tree is untouched.
    assert!(!work.join("a.txt").exists());
    // The gate ran on the integrated commit; the proof is in the store.
    assert_eq!(w["gates_commit"], head.as_str(), "{doc}");
    let proof = Command::new(env!("CARGO_BIN_EXE_omk"))
        .args(["team", "proof", "code", "--store", &c.tcp_url])
        .env("OMK_STATE_DIR", c.tmp.path().join("operator"))
        .env("XDG_CONFIG_HOME", c.tmp.path().join("operator"))
        .env_remove("OMK_CONFIG")
        .output()
        .unwrap();
    let proof: Value = serde_json::from_slice(&proof.stdout).unwrap();
    assert_eq!(proof["ready"], true, "{proof}");
    assert_eq!(proof["gates"][0]["name"], "has-a", "{proof}");
    assert_eq!(proof["gates"][0]["passed"], true, "{proof}");
    let kinds: Vec<String> = c.events("code").into_iter().map(|(k, _)| k).collect();
    let tail: Vec<&str> = kinds
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "phase_changed",
            "gate_passed",
            "phase_changed",
            "run_completed",
            "proof_written"
        ],
        "{kinds:?}"
    );

    // Work that fails the gate: the team fails, saying which gate.
    let (code, doc) = run("gated", &["[write:b.txt:only b] [answer:b]"]);
    assert_eq!(
        (code, &doc["phase"]),
        (Some(1), &Value::from("Failed")),
        "{doc}"
    );
    assert_eq!(
        doc["reason"], "required gate(s) did not pass: has-a",
        "{doc}"
    );

    // Two tasks that write one file differently: the second conflicts, is
    // redone on the integrated head with the conflict in its prompt, and
    // its redo integrates.
    let clash = [
        "[write:same.txt:one] [answer:1]",
        "[write:same.txt:two] [answer:2]",
    ];
    // (Without the gates: these tasks never write a.txt.)
    let (code, doc) = team_result(
        c.team_run_task("clash", 5, "edit the project", &clash)
            .arg("--no-gates")
            .current_dir(&work)
            .output()
            .unwrap(),
    );
    assert_eq!(
        (code, &doc["phase"]),
        (Some(0), &Value::from("Completed")),
        "{doc}"
    );
    assert_eq!(git(&shared, &["show", "omk/clash:same.txt"]), "two");
    let conflicts = conflicts_of(&c, "clash");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let p = &conflicts[0];
    assert_eq!(
        (&p["task_id"], &p["next"]),
        (&json!("t2"), &json!("retry")),
        "{p}"
    );
    assert_eq!(p["files"], json!(["same.txt"]), "{p}");
    let t2 = &doc["tasks"][1];
    assert_eq!(t2["attempts"], 2, "{t2}");
    assert!(
        t2["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("conflict with integrated work in same.txt")),
        "{t2}"
    );
    // The merge with markers is kept, on the head it conflicted with.
    let marked = p["marked_commit"].as_str().unwrap();
    assert_eq!(
        git(&shared, &["rev-parse", "refs/omk/clash/conflicts/t2/1"]),
        marked
    );
    assert!(git(&shared, &["show", &format!("{marked}:same.txt")]).contains("<<<<<<<"));
    // The redo started from that head: its commit's parent.
    let redo = git(&shared, &["rev-parse", "refs/omk/clash/tasks/t2/2"]);
    let parent = git(&shared, &["rev-parse", &format!("{redo}^")]);
    assert_eq!(parent, git(&shared, &["rev-parse", &format!("{marked}^1")]));

    // With no conflict retries, an integrator turn resolves the merge with
    // markers (the scripted agent rewrites the file as its subtask says).
    let mut cmd = c.team_run_task("resolved", 5, "edit the project", &clash);
    std::fs::write(
        c.tmp.path().join("submitter-resolved/omk.toml"),
        "[team]\nlease_secs = 5\nconflict_retries = 0\n",
    )
    .unwrap();
    let (code, doc) = team_result(cmd.arg("--no-gates").current_dir(&work).output().unwrap());
    assert_eq!(
        (code, &doc["phase"]),
        (Some(0), &Value::from("Completed")),
        "{doc}"
    );
    let conflicts = conflicts_of(&c, "resolved");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["next"], "integrator");
    let marked = conflicts[0]["marked_commit"].as_str().unwrap();
    let resolution = git(&shared, &["rev-parse", "refs/omk/resolved/tasks/t2/2"]);
    assert_eq!(
        git(&shared, &["rev-parse", &format!("{resolution}^")]),
        marked
    );
    assert_eq!(git(&shared, &["show", "omk/resolved:same.txt"]), "two");
    let integrator = doc["worktree"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["integrator"] == true)
        .cloned()
        .expect("the integrator's attempt");
    assert_eq!(integrator["outcome"], "integrated", "{integrator}");

    // An integrator turn that changes nothing, and one that leaves markers:
    // each fails the team saying so. The second task writes its version on
    // its first turn only (a flag file every host sees remembers it); its
    // integrator turn then does nothing, or writes markers.
    let turns = |name: &str, integrator: &str| {
        let flag = c.tmp.path().join(format!("{name}-turned"));
        [
            "[write:same.txt:one] [answer:1]".to_string(),
            format!(
                "[run:if test -e {f}; then {integrator}; else touch {f}; printf two > same.txt; fi] [answer:2]",
                f = flag.display()
            ),
        ]
    };
    for (name, integrator, reason) in [
        (
            "idle",
            "true",
            "t2's changes conflict with integrated work in same.txt and the integrator changed nothing",
        ),
        (
            "marked",
            "printf '<<<<<<< ours\\\\none\\\\n=======\\\\ntwo\\\\n>>>>>>> theirs\\\\n' > same.txt",
            "t2: the integrator left conflict markers in same.txt",
        ),
    ] {
        let subtasks = turns(name, integrator);
        let subtasks: Vec<&str> = subtasks.iter().map(String::as_str).collect();
        let mut cmd = c.team_run_task(name, 5, "edit the project", &subtasks);
        std::fs::write(
            c.tmp.path().join(format!("submitter-{name}/omk.toml")),
            "[team]\nlease_secs = 5\nconflict_retries = 0\n",
        )
        .unwrap();
        // (Its commands need approving.)
        cmd.args(["--no-gates", "--approval", "approve-all"]);
        let (code, doc) = team_result(cmd.current_dir(&work).output().unwrap());
        assert_eq!(
            (code, &doc["phase"], &doc["reason"]),
            (Some(1), &json!("Failed"), &json!(reason)),
            "{doc}"
        );
        // As in a local run, the winner's work is on the branch, the
        // marked merge kept in its conflict ref.
        assert_eq!(git(&shared, &["show", &format!("omk/{name}:same.txt")]), "one");
        git(&shared, &["rev-parse", &format!("refs/omk/{name}/conflicts/t2/1")]);
    }
    a.stop();
    b.stop();
}
