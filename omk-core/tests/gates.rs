//! Gates across processes: concurrent runs and resets lose no breaker
//! update; timeouts leave no process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omk_core::gate::{self, BreakerSettings, GateCommand, GateSet, GateSpec};
use omk_core::StatePaths;

const CHILD_ENV: &str = "OMK_GATES_CHILD";
const ROUNDS: u64 = 15;

fn spec(name: &str, command: &str, timeout: u64) -> GateSpec {
    GateSpec {
        name: name.into(),
        command: GateCommand::Shell(command.into()),
        timeout_secs: timeout,
        required: true,
        env: Default::default(),
        cwd: None,
        origin: "test".into(),
    }
}

fn set(project: &Path, gates: Vec<GateSpec>, threshold: u32) -> GateSet {
    GateSet {
        project: project.to_path_buf(),
        gates,
        breaker: BreakerSettings {
            failure_threshold: threshold,
            recovery_timeout_secs: 60,
            half_open_calls: 3,
        },
        source: "test".into(),
    }
}

/// Child: run a passing and a failing gate ROUNDS times, resetting every
/// third round.
#[test]
fn child_runner() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("runner") {
        return;
    }
    let state = PathBuf::from(std::env::var("STATE").unwrap());
    let project = PathBuf::from(std::env::var("PROJECT").unwrap());
    let paths = StatePaths::new(&state);
    let s = set(
        &project,
        vec![spec("pass", "true", 10), spec("fail", "false", 10)],
        1_000_000,
    );
    for round in 0..ROUNDS {
        let dir = state.join(format!("art-{}-{round}", std::process::id()));
        gate::run(&paths, &s, &[], &dir).unwrap();
        if round % 3 == 2 {
            gate::reset(&paths, &s, Some("fail"), false).unwrap();
        }
    }
}

#[test]
fn four_processes_running_and_resetting_lose_no_update() {
    let d = tempfile::tempdir().unwrap();
    let (state, project) = (d.path().join("state"), d.path().join("proj"));
    std::fs::create_dir_all(&project).unwrap();
    let children: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["child_runner", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, "runner")
                .env("STATE", &state)
                .env("PROJECT", &project)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let breakers = gate::Breakers::new(StatePaths::new(&state).breakers())
        .list(Some(&project))
        .unwrap();
    let get = |n: &str| breakers.iter().find(|(_, g, _)| g == n).unwrap().2.clone();
    assert_eq!(get("pass").total_runs, 4 * ROUNDS);
    let fail = get("fail");
    assert_eq!(
        (fail.total_runs, fail.total_failures),
        (4 * ROUNDS, 4 * ROUNDS)
    );
    assert_eq!(fail.total_skips, 0);
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next()),
                Some("Z" | "X")
            )
        })
        .unwrap_or(false)
}

#[test]
fn a_timeout_kills_the_gate_and_its_grandchildren() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("grandchild.pid");
    let cmd = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let s = set(d.path(), vec![spec("hang", &cmd, 1)], 5);
    let t = Instant::now();
    let report = gate::run(
        &StatePaths::new(d.path().join("state")),
        &s,
        &[],
        &d.path().join("art"),
    )
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let r = &report.results[0];
    assert!(r.timed_out && !r.passed, "{r:?}");
    assert!(r.stderr.contains("timed out after 1s"), "{}", r.stderr);
    assert!(!report.passed);
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(grandchild), "the grandchild {grandchild} survived");
}

#[test]
fn timeouts_count_as_failures_and_open_the_breaker() {
    let d = tempfile::tempdir().unwrap();
    let paths = StatePaths::new(d.path().join("state"));
    let s = set(d.path(), vec![spec("slow", "sleep 5", 1)], 2);
    for _ in 0..2 {
        gate::run(&paths, &s, &[], &d.path().join("art")).unwrap();
    }
    let report = gate::run(&paths, &s, &[], &d.path().join("art")).unwrap();
    let r = &report.results[0];
    assert!(r.skipped, "{r:?}");
    assert!(r.skip_reason.as_deref().unwrap().contains("open"));
    assert!(!report.passed, "a skipped required gate blocks");
}

#[test]
fn huge_output_is_bounded_in_the_result_and_kept_in_the_artifact() {
    let d = tempfile::tempdir().unwrap();
    let s = set(
        d.path(),
        vec![spec(
            "loud",
            "yes 'omk gate output line' | head -c 52428800; echo done >&2",
            60,
        )],
        5,
    );
    let report = gate::run(
        &StatePaths::new(d.path().join("state")),
        &s,
        &[],
        &d.path().join("art"),
    )
    .unwrap();
    let r = &report.results[0];
    assert!(r.passed, "{r:?}");
    assert!(
        r.stdout.len() < 40 * 1024,
        "document holds {} bytes",
        r.stdout.len()
    );
    assert!(
        r.stdout.contains("bytes omitted; full output in"),
        "no truncation marker"
    );
    let artifact = r.stdout_file.as_ref().unwrap();
    assert_eq!(std::fs::metadata(artifact).unwrap().len(), 52428800);
    assert_eq!(r.stderr, "done\n");
}

#[test]
fn secrets_in_gate_output_are_redacted_in_result_and_artifact() {
    let d = tempfile::tempdir().unwrap();
    let key = "sk-proj-abcdefghijklmnopqrstuvwxyz123456";
    let s = set(
        d.path(),
        vec![spec("leaky", &format!("echo token={key}"), 10)],
        5,
    );
    let report = gate::run(
        &StatePaths::new(d.path().join("state")),
        &s,
        &[],
        &d.path().join("art"),
    )
    .unwrap();
    let r = &report.results[0];
    assert!(!r.stdout.contains(key), "{}", r.stdout);
    let art = std::fs::read_to_string(r.stdout_file.as_ref().unwrap()).unwrap();
    assert!(!art.contains(key), "{art}");
}
