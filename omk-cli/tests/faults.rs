//! The fault matrix for the CLI surfaces that run agents (`omk team run`
//! and `omk chat` in pipe mode): agents that misbehave as processes
//! (`OMK_SCRIPTED_FAULT`, see omk-scripted-agent/src/fault.rs) must leave
//! omk alive, the team `Failed` with the reason in `failure.json` and the
//! task's `errors`, no agent process behind, and the right exit code. Plus
//! a closed stdout (`omk team list | head -1`) and omk's memory against an
//! agent that prints a 200 MiB line.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{read_json, text, Fx};
use serde_json::Value;

/// Short leases and one retry, so every fault ends in seconds.
fn fixture(max_attempts: u32) -> Fx {
    let f = Fx::new("");
    std::fs::write(
        f.root.join("omk.toml"),
        format!(
            "[team]\nlease_secs = 2\nmax_attempts = {max_attempts}\nretry_backoff_ms = 50\n\
             heartbeat_secs = 1\nstop_grace_secs = 1\n"
        ),
    )
    .unwrap();
    f
}

fn team_run(f: &Fx, name: &str, fault: Option<&str>, task: &str) -> Output {
    // One subtask given: no planner turn, so every agent is the worker's.
    let mut cmd = f.cmd(&[
        "team",
        "run",
        "1:executor",
        task,
        "--name",
        name,
        "--subtask",
        task,
        "--json",
    ]);
    if let Some(fault) = fault {
        cmd.env("OMK_SCRIPTED_FAULT", fault);
    }
    run_within(cmd, Duration::from_secs(60))
}

fn run_within(mut cmd: std::process::Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    // Drain the pipes on threads: a full pipe must not stall the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).unwrap();
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("omk did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn events(f: &Fx, team: &str) -> Vec<Value> {
    let path = f.state.join("team").join(team).join("events.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; its parent (omk) has gone away or will reap it.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Every agent the team started is gone (allowing a moment for reaping).
fn assert_agents_gone(f: &Fx, team: &str) {
    let evs = events(f, team);
    let pids: Vec<u64> = of_kind(&evs, "worker_started")
        .iter()
        .filter_map(|e| e["payload"]["agent_pid"].as_u64())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    for pid in pids {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "agent {pid} of {team} is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The run ended as a finished-but-failed command (exit 1, never a signal)
/// with a Failed team whose evidence names `expect` in every attempt.
fn assert_failed_with_evidence(f: &Fx, name: &str, out: &Output, attempts: usize, expect: &str) {
    assert_eq!(out.status.signal(), None, "omk was killed: {}", text(out));
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
    assert_eq!(doc["phase"], "Failed", "{doc}");
    let t = &doc["tasks"][0];
    let errors: Vec<&str> = t["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(errors.len(), attempts, "{t}");
    for e in &errors {
        assert!(e.contains(expect), "error {e:?} does not say {expect:?}");
    }
    let failure = read_json(&f.state.join("team").join(name).join("failure.json"));
    assert_eq!(failure["phase"], "Failed", "{failure}");
    assert!(
        failure["failed_tasks"][0]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains(expect)),
        "{failure}"
    );
    assert_agents_gone(f, name);
}

macro_rules! fault_case {
    ($test:ident, $fault:expr, $task:expr, $expect:expr) => {
        #[test]
        fn $test() {
            let f = fixture(2);
            let out = team_run(&f, "fault", $fault, $task);
            assert_failed_with_evidence(&f, "fault", &out, 2, $expect);
        }
    };
}

fault_case!(
    agent_exiting_at_once,
    Some("exit-at-once"),
    "hello",
    "exited with code 3 during initialize"
);
fault_case!(
    agent_exiting_after_one_line,
    Some("exit-after-line"),
    "hello",
    "exited with code 3"
);
fault_case!(
    agent_dying_after_initialize,
    Some("die-after-initialize"),
    "hello",
    "exited with code 3 during prompt"
);
fault_case!(
    agent_dying_mid_turn,
    None,
    "hello [crash]",
    "exited with code 3 during prompt"
);
fault_case!(
    agent_sending_garbage_without_newline,
    Some("garbage:300000"),
    "hello",
    "exited with code 3"
);
fault_case!(
    agent_closing_its_stdout_but_running_on,
    Some("close-stdout"),
    "hello",
    "closed its output"
);

#[test]
fn garbage_is_kept_as_evidence() {
    let f = fixture(1);
    let out = team_run(&f, "garbage", Some("garbage:300000"), "hello");
    assert_failed_with_evidence(&f, "garbage", &out, 1, "exited with code 3");
    let evs = events(&f, "garbage");
    let bad = of_kind(&evs, "agent_protocol_error");
    assert_eq!(bad.len(), 1, "{evs:?}");
    let line = bad[0]["payload"]["line"].as_str().unwrap();
    assert!(line.starts_with("garbage garbage"), "{line}");
    assert!(
        line.len() <= 512 * 4,
        "the evidence is bounded: {} bytes",
        line.len()
    );
}

#[test]
fn agent_printing_a_200_mib_line_is_stopped_and_omk_stays_under_100_mb() {
    let f = fixture(2);
    let mut cmd = f.cmd(&[
        "team",
        "run",
        "1:executor",
        "hello",
        "--name",
        "huge",
        "--subtask",
        "hello",
        "--json",
    ]);
    cmd.env("OMK_SCRIPTED_FAULT", "huge-line:209715200")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    // VmHWM is the peak so far: the last reading before exit is the peak.
    let mut peak_kb = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "omk did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = reader.join().unwrap();
    let out = Output {
        status,
        stdout,
        stderr: Vec::new(),
    };
    eprintln!(
        "omk peak RSS with a 200 MiB agent line: {} MB",
        peak_kb / 1024
    );
    assert!(peak_kb > 0, "no RSS reading");
    assert!(
        peak_kb < 100 * 1024,
        "omk's peak RSS was {} MB",
        peak_kb / 1024
    );
    assert_failed_with_evidence(&f, "huge", &out, 2, "longer than the 16 MiB cap");
    let evs = events(&f, "huge");
    assert_eq!(of_kind(&evs, "agent_protocol_error").len(), 2, "{evs:?}");
    assert_eq!(of_kind(&evs, "retry_scheduled").len(), 1, "{evs:?}");
}

#[test]
fn agent_ignoring_sigterm_and_eof_is_killed_when_its_lease_expires() {
    let f = fixture(1);
    let started = Instant::now();
    let out = team_run(&f, "deaf", Some("ignore-term"), "hello [stall]");
    let took = started.elapsed();
    assert_failed_with_evidence(&f, "deaf", &out, 1, "lease expired");
    let evs = events(&f, "deaf");
    let exited = of_kind(&evs, "worker_exited");
    assert_eq!(exited.len(), 1, "{evs:?}");
    // omk killed it: the exit status is SIGKILL's, not a clean exit.
    let exit = exited[0]["payload"]["exit"].as_str().unwrap_or_default();
    assert!(
        exit.contains("signal: 9"),
        "the agent was not killed: {exit:?}"
    );
    // ... and when: after the 2 s lease, well before a second lease passed.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// The SIGPIPE races: an agent that exits before reading its input made the
/// write of `initialize` kill omk (exit 141) in most runs.
fn repeat_early_exit(bin: Option<&Path>, fault: Option<&str>) {
    let f = fixture(1);
    for i in 0..20 {
        let name = format!("early-{i}");
        let mut cmd = f.cmd(&[
            "team",
            "run",
            "1:executor",
            "hello",
            "--name",
            &name,
            "--subtask",
            "hello",
            "--json",
        ]);
        if let Some(fault) = fault {
            cmd.env("OMK_SCRIPTED_FAULT", fault);
        }
        if let Some(bin) = bin {
            cmd.env("OMK_KIMI_BIN", bin);
        }
        let out = run_within(cmd, Duration::from_secs(30));
        assert_failed_with_evidence(&f, &name, &out, 1, "agent failed to start");
    }
}

#[test]
fn an_agent_that_exits_before_reading_never_kills_omk_20_runs() {
    repeat_early_exit(None, Some("exit-at-once"));
}

#[test]
fn bin_false_as_the_agent_never_kills_omk_20_runs() {
    repeat_early_exit(Some(Path::new("/bin/false")), None);
}

#[test]
fn an_agent_that_exits_after_one_line_never_kills_omk_20_runs() {
    repeat_early_exit(None, Some("exit-after-line"));
}

/// stdout whose reader is already gone, as in `omk ... | head -0`.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let f = fixture(1);
    let out = team_run(&f, "one", None, "hello");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for args in [
        &["team", "list"][..],
        &["team", "list", "--json"],
        &["team", "status", "one"],
        &["gates", "status"],
        &["goal", "list"],
        &["--version"],
    ] {
        let mut cmd = f.cmd(args);
        cmd.stdout(closed_pipe()).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.signal(), None, "{args:?} was killed");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?} printed: {}", text(&out));
    }
}

#[test]
fn a_team_run_whose_stdout_closes_still_finishes_its_team() {
    let f = fixture(1);
    let mut cmd = f.cmd(&["team", "run", "2:executor", "hello", "--name", "blind"]);
    cmd.args(["--subtask", "one [answer:a]", "--subtask", "two [answer:b]"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = read_json(&f.state.join("team/blind/team.json"));
    assert_eq!(doc["phase"], "Completed", "{doc}");
}

/// `omk chat` in pipe mode: one message on stdin, then EOF.
fn chat(f: &Fx, fault: Option<&str>, message: &str) -> Output {
    let mut cmd = f.cmd(&["chat", "--new"]);
    if let Some(fault) = fault {
        cmd.env("OMK_SCRIPTED_FAULT", fault);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(format!("{message}\n").as_bytes());
    }
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "omk chat (pid {pid}) did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The chat's agents (from its engine events) are gone.
fn assert_chat_agents_gone(f: &Fx) {
    let sessions = f.state.join("sessions");
    let mut pids = Vec::new();
    for s in std::fs::read_dir(&sessions).into_iter().flatten().flatten() {
        let text =
            std::fs::read_to_string(s.path().join("engine-events.jsonl")).unwrap_or_default();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            if let Some(pid) = v["payload"]["pid"].as_u64() {
                pids.push(pid);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for pid in pids {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "chat agent {pid} is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn chat_pipe_mode_reports_each_agent_fault_and_leaves_no_agent() {
    let f = fixture(1);
    let cases: [(Option<&str>, &str, &str); 6] = [
        (
            Some("die-after-initialize"),
            "hello",
            "exited with code 3 during prompt",
        ),
        (None, "hello [crash]", "exited with code 3 during prompt"),
        (Some("garbage:300000"), "hello", "exited with code 3"),
        (
            Some("huge-line:209715200"),
            "hello",
            "longer than the 16 MiB cap",
        ),
        (Some("close-stdout"), "hello", "closed its output"),
        (Some("exit-after-line"), "hello", "exited with code 3"),
    ];
    for (fault, message, expect) in cases {
        let out = chat(&f, fault, message);
        let t = text(&out);
        assert_eq!(out.status.signal(), None, "{fault:?}: omk was killed: {t}");
        assert_ne!(out.status.code(), Some(0), "{fault:?}: {t}");
        assert!(t.contains(expect), "{fault:?}: expected {expect:?}: {t}");
        assert_chat_agents_gone(&f);
    }
    // An agent that cannot even start is a clear error (exit 6, agent).
    let out = chat(&f, Some("exit-at-once"), "hello");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("exited with code 3 during initialize"),
        "{}",
        text(&out)
    );
}

#[test]
fn chat_stops_an_agent_that_ignores_eof_and_sigterm() {
    let f = fixture(1);
    let started = Instant::now();
    let out = chat(&f, Some("ignore-term"), "hello [answer:hi]");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hi"),
        "{}",
        text(&out)
    );
    // Stopping waits for the grace period (1 s), then kills the group.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_chat_agents_gone(&f);
}
