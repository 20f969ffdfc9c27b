//! Controllers and the pool: goal waves, `--until-ready` fix rounds, ralph
//! iterations and autopilot phases wait for room while the pool is busy,
//! stop as `blocked_on_external` when it can never admit, `needs_more_budget`
//! when a budget runs out while waiting, and never make a team the pool
//! refuses at once (the predecessor's loop made ~40 teams a second).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{read_json, text, Fx};
use serde_json::Value;

const PASSING_GATE: &str = "[[gate]]\nname = \"ok\"\ncommand = \"true\"\n";

/// Teams go to pool `one`, `pool` being its settings.
fn fixture(gates: &str, pool: &str) -> Fx {
    let f = Fx::new(gates);
    std::fs::write(
        f.root.join("omk.toml"),
        format!(
            "[team]\npool = \"one\"\nlease_secs = 20\nretry_backoff_ms = 50\nheartbeat_secs = 1\nstop_grace_secs = 2\n\n[pools.one]\n{pool}\n"
        ),
    )
    .unwrap();
    f
}

fn teams(f: &Fx) -> Vec<String> {
    let list = f.json(&["team", "list", "--json"]);
    list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The team holding the slot; killed (and reaped) when dropped.
struct Holder(std::process::Child);

impl Holder {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A team holding pool `one`'s only slot for `secs` seconds, in the
/// background; returns once it holds the slot.
fn hold_the_slot(f: &Fx, secs: u32) -> Holder {
    // A subtask, not a task to plan: a planner turn would hold the slot,
    // release it and take it again for the executor, and another process
    // could slip in between.
    let task = format!("[sleep:{secs}]");
    let child = Holder(
        f.cmd(&[
            "team",
            "run",
            "1:executor",
            "hold",
            "--subtask",
            &task,
            "--name",
            "holder",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let pool = f.state.join("pools").join("one.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active = std::fs::read_to_string(&pool)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["active"].as_array().map(Vec::len))
            .unwrap_or(0);
        if active == 1 {
            return child;
        }
        assert!(Instant::now() < deadline, "the holder never got its slot");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The events of one kind in the `events.jsonl` of `dir`.
fn events_in(dir: &std::path::Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn goal_events(f: &Fx, id: &str, kind: &str) -> Vec<Value> {
    events_in(&f.goal_dir(id), kind)
}

fn team_events(f: &Fx, team: &str, kind: &str) -> Vec<Value> {
    events_in(&f.state.join("team").join(team), kind)
}

#[test]
fn a_goal_wave_waits_for_a_busy_pool_and_starts_one_team() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nqueue_capacity = 0");
    let mut holder = hold_the_slot(&f, 3);
    let out = f.omk(&[
        "goal",
        "run",
        "Greet [json-plan:Say hi [answer:hi\\]]",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "ready", "{state}");
    let id = state["goal_id"].as_str().unwrap();
    assert!(holder.wait().success());
    // One wave, started once the holder let go: no refused teams.
    let goal_teams: Vec<String> = teams(&f).into_iter().filter(|t| t != "holder").collect();
    assert_eq!(goal_teams, [format!("{id}-w1")]);
    let waited = goal_events(&f, id, "pool_waited");
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert!(waited[0]["payload"]["waited_ms"].as_u64().unwrap() > 0);
    assert!(waited[0]["payload"]["reason"]
        .as_str()
        .unwrap()
        .contains("pool one is busy"));
    let pool = read_json(&f.state.join("pools/one.json"));
    assert_eq!(pool["total_rejected"], 0, "a team was refused: {pool}");
}

#[test]
fn a_goal_whose_pool_can_never_admit_is_blocked_on_external_at_once() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nmax_disk_gb = 0");
    // Something in the state, so the 0 GB cap is exceeded.
    std::fs::create_dir_all(f.state.join("team/old")).unwrap();
    std::fs::write(f.state.join("team/old/junk"), "x").unwrap();
    let started = Instant::now();
    let out = f.omk(&[
        "goal",
        "run",
        "Greet [json-plan:Say hi [answer:hi\\]]",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "blocked_on_external", "{state}");
    let reason = state["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("max_disk_gb"), "{reason}");
    assert!(teams(&f).is_empty(), "teams were made: {:?}", teams(&f));
    let proof = f.json(&["goal", "proof", "--json"]);
    assert!(
        proof["known_gaps"].to_string().contains("max_disk_gb"),
        "{proof}"
    );
}

#[test]
fn an_until_ready_fix_round_stops_blocked_when_the_pool_stops_admitting() {
    // About 4 KB: the first wave is admitted (a new team's state is ~2 KB),
    // the fix round is not (a finished wave leaves ~7 KB).
    let f = fixture(
        "[[gate]]\nname = \"never\"\ncommand = \"false\"\n",
        "max_workers = 1\nmax_disk_gb = 0.000004",
    );
    let out = f.omk(&[
        "goal",
        "run",
        "Fix it [json-plan:Try [answer:tried\\]]",
        "--until-ready",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "blocked_on_external", "{state}");
    let id = state["goal_id"].as_str().unwrap();
    assert_eq!(
        teams(&f),
        [format!("{id}-w1")],
        "one wave, no refused fix round"
    );
    let graph = read_json(&f.goal_dir(id).join("task-graph.json"));
    assert!(
        graph
            .to_string()
            .contains("Make the failing verification gates pass"),
        "the fix task was planned: {graph}"
    );
}

#[test]
fn a_budget_that_runs_out_while_waiting_is_needs_more_budget() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nqueue_capacity = 0");
    let holder = hold_the_slot(&f, 8);
    let started = Instant::now();
    let out = f.omk(&[
        "goal",
        "run",
        "Greet [json-plan:Say hi [answer:hi\\]]",
        "--budget-time",
        "2s",
        "--json",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "needs_more_budget", "{state}");
    assert!(
        took < Duration::from_secs(7),
        "it waited for the holder: {took:?}"
    );
    assert_eq!(teams(&f), ["holder"], "no wave started");
    drop(holder);
}

#[test]
fn ralph_waits_for_a_busy_pool_then_iterates_once() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nqueue_capacity = 0");
    let mut holder = hold_the_slot(&f, 3);
    let out = f.omk(&["ralph", "Do it", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["iteration"], 1, "{s}");
    assert!(holder.wait().success());
    let id = s["id"].as_str().unwrap();
    let mut names = teams(&f);
    names.sort();
    assert_eq!(names, ["holder".to_string(), format!("{id}-i1")]);
}

#[test]
fn ralph_and_autopilot_stop_blocked_when_the_pool_can_never_admit() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nmax_disk_gb = 0");
    std::fs::create_dir_all(f.state.join("team/old")).unwrap();
    std::fs::write(f.state.join("team/old/junk"), "x").unwrap();
    let out = f.omk(&["ralph", "Do it", "--max-iterations", "5", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "blocked_on_external", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("max_disk_gb"), "{s}");
    assert_eq!(s["iteration"], 1, "it did not go on iterating: {s}");

    let out = f.omk(&[
        "autopilot",
        "Build it [json-plan:One [answer:one\\]]",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "blocked_on_external", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("max_disk_gb"), "{s}");
    assert!(teams(&f).is_empty(), "teams were made: {:?}", teams(&f));
}

#[test]
fn ralph_stopped_while_waiting_for_the_pool_is_stopped() {
    let f = fixture(PASSING_GATE, "max_workers = 1\nqueue_capacity = 0");
    let holder = hold_the_slot(&f, 30);
    let child = f
        .cmd(&["ralph", "Do it", "--name", "patient", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = f.state.join("ralph/patient/state.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = f.omk(&["ralph", "stop", "patient"]);
    assert!(out.status.success(), "{}", text(&out));
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(s["status"], "stopped", "{}", text(&out));
    assert_eq!(teams(&f), ["holder"]);
    drop(holder);
}

/// A released slot wakes the queued workers of other processes by ringing
/// their process's pool doorbell: each waiter looks at the pool a handful
/// of times, counted in its `pool_admitted` event, not every 100 ms, and
/// the slots go in ticket order.
#[test]
fn queued_workers_of_other_processes_are_woken_by_the_release_in_ticket_order() {
    let f = fixture(PASSING_GATE, "max_workers = 1");
    let mut holder = hold_the_slot(&f, 3);
    let spawn = |name: &str| {
        f.cmd(&[
            "team",
            "run",
            "1:executor",
            "wait",
            "--subtask",
            "[answer:done]",
            "--name",
            name,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let queued = |name: &str| -> bool { !team_events(&f, name, "pool_queued").is_empty() };
    let first = spawn("first");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !queued("first") {
        assert!(Instant::now() < deadline, "first never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = spawn("second");
    while !queued("second") {
        assert!(Instant::now() < deadline, "second never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(holder.wait().success());
    let admitted = |name: &str| -> Value {
        let a = team_events(&f, name, "pool_admitted");
        assert_eq!(a.len(), 1, "{name}: {a:?}");
        a[0].clone()
    };
    let (a1, a2) = (admitted("first"), admitted("second"));
    let ticket = |name: &str| team_events(&f, name, "pool_queued")[0]["payload"]["ticket"].as_u64();
    assert!(ticket("first") < ticket("second"));
    assert!(
        a1["ts"].as_str() < a2["ts"].as_str(),
        "admitted out of ticket order: {a1} {a2}"
    );
    // The holder slept 3 s: a 100 ms timer would have looked ~30 times.
    // A waiter looks once per change of the pool file (its own queue entry,
    // the other waiter's, each admission and release) and at most once per
    // 2 s safety re-check.
    for a in [&a1, &a2] {
        let checks = a["payload"]["checks"].as_u64().unwrap();
        assert!((2..=8).contains(&checks), "{checks} looks: {a}");
    }
    let pool = read_json(&f.state.join("pools/one.json"));
    assert_eq!(pool["active"].as_array().map(Vec::len), Some(0), "{pool}");
    assert_eq!(pool["queue"].as_array().map(Vec::len), Some(0), "{pool}");
}
