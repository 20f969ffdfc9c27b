//! Fault injection for teams: the real `omk` binary driving the bundled
//! scripted Wire agent (`omk-scripted-agent`), whose behaviour comes from
//! directives in the subtask text (crash, stall, malformed output, provider
//! errors, slow turns, file writes).
//!
//! Each test owns a temp dir holding its state dir, project dir and config
//! file; its agents are found by their `--work-dir` argument, which names
//! that temp dir. Everything waits with deadlines, never fixed long sleeps.
//!
//! The behaviours both stores promise run against each ([`Backend`], the
//! `file_store` and `postgres` modules at the end): the file store, and a
//! PostgreSQL store (a database of the test's own, `OMK_STORE` on every
//! command, one `omk worker` running the agents). The rest are the file
//! store's own (its heartbeats, transcripts, supervisor process, pools).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

mod cluster;
mod common;

// ---------------------------------------------------------------- fixture

/// Where a test's teams live.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    /// The embedded file store under the state dir.
    File,
    /// A PostgreSQL store, its tasks run by an `omk worker`.
    Pg,
}

/// The PostgreSQL side of a [`Backend::Pg`] fixture.
struct PgSide {
    rt: tokio::runtime::Runtime,
    store: omk_core::pg::PgStore,
    url: String,
    /// The `omk worker` running the teams' agents, started on first use
    /// (after the test chose its faults).
    worker: std::cell::RefCell<Option<Child>>,
}

/// The scripted agent, next to the omk binary (built if missing).
fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let omk = Path::new(env!("CARGO_BIN_EXE_omk"));
        let bin = omk.with_file_name("omk-scripted-agent");
        if !bin.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "omk-scripted-agent"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if omk.parent().and_then(|d| d.file_name()) == Some("release".as_ref()) {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build -p omk-scripted-agent");
            assert!(status.success(), "cargo build -p omk-scripted-agent failed");
        }
        assert!(bin.exists(), "no scripted agent at {}", bin.display());
        bin
    })
}

/// Short timings for `[team]`; `lease` and `attempts` vary per test.
fn config_toml(lease_secs: u64, max_attempts: u32) -> String {
    format!(
        "[team]\nlease_secs = {lease_secs}\nmax_attempts = {max_attempts}\nretry_backoff_ms = 50\n\
         heartbeat_secs = 1\nstop_grace_secs = 2\n\n[pools.duo]\nmax_workers = 2\n"
    )
}

struct Fixture {
    _tmp: tempfile::TempDir,
    /// Unique to this test: every agent it starts has it in its argv.
    root: PathBuf,
    state: PathBuf,
    project: PathBuf,
    config: PathBuf,
    /// `OMK_SCRIPTED_FAULT` for every agent this fixture's omk starts.
    fault: Option<&'static str>,
    /// `OMK_WATCH` for every omk it starts (change notifications).
    watch: Option<&'static str>,
    pg: Option<PgSide>,
}

impl Fixture {
    /// The same fixture, with agents that misbehave as `fault` says
    /// (omk-scripted-agent/src/fault.rs).
    fn with_fault(mut self, fault: &'static str) -> Fixture {
        self.fault = Some(fault);
        self
    }

    fn new(lease_secs: u64, max_attempts: u32) -> Fixture {
        agent_bin();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let state = root.join("state");
        let project = root.join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(root.join("xdg")).unwrap();
        let config = root.join("omk.toml");
        std::fs::write(&config, config_toml(lease_secs, max_attempts)).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            state,
            project,
            config,
            fault: None,
            watch: None,
            pg: None,
        }
    }

    /// A fixture on `backend` (`None`: no PostgreSQL here, outside CI).
    fn on(backend: Backend, lease_secs: u64, max_attempts: u32) -> Option<Fixture> {
        let mut f = Fixture::new(lease_secs, max_attempts);
        if backend == Backend::Pg {
            let url = cluster::required("OMK_TEST_PG_URL")?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (store, url) = cluster::database(&rt, &url);
            f.pg = Some(PgSide {
                rt,
                store,
                url,
                worker: std::cell::RefCell::new(None),
            });
        }
        Some(f)
    }

    fn backend(&self) -> Backend {
        if self.pg.is_some() {
            Backend::Pg
        } else {
            Backend::File
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.base_cmd(args);
        if let Some(pg) = &self.pg {
            let mut worker = pg.worker.borrow_mut();
            if worker.is_none() {
                // Its argv names this test's dir: the fixture's drop kills it.
                let host = self.root.join("host");
                let child = self
                    .base_cmd(&["worker", "--name", "host", "--max-agents", "2"])
                    .arg("--root")
                    .arg(&host)
                    .env("OMK_STORE", &pg.url)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start omk worker");
                *worker = Some(child);
            }
            cmd.env("OMK_STORE", &pg.url);
        }
        cmd
    }

    /// The store's side, run to the end.
    fn in_store<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.pg.as_ref().expect("a store fixture").rt.block_on(f)
    }

    /// The directories the agents of team `name` worked in: the project,
    /// or the worker's slots.
    fn work_dirs(&self, name: &str) -> Vec<PathBuf> {
        match self.backend() {
            Backend::File => vec![self.project.clone()],
            Backend::Pg => std::fs::read_dir(self.root.join("host").join(name))
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether an agent of team `name` left `file` in its work dir.
    fn wrote(&self, name: &str, file: &str) -> bool {
        self.work_dirs(name).iter().any(|d| d.join(file).exists())
    }

    /// The proof (or failure document) of team `name`, as stored.
    fn proof_doc(&self, name: &str) -> Option<Value> {
        match &self.pg {
            None => {
                let dir = self.team_dir(name);
                read_json(&dir.join("proof.json")).or_else(|| read_json(&dir.join("failure.json")))
            }
            Some(pg) => self.in_store(pg.store.team_proof(name)).unwrap().flatten(),
        }
    }

    fn base_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
        cmd.args(args)
            .env("OMK_STATE_DIR", &self.state)
            .env("OMK_CONFIG", &self.config)
            .env("OMK_KIMI_BIN", agent_bin())
            .env("XDG_CONFIG_HOME", self.root.join("xdg"))
            .env("NO_COLOR", "1")
            .env_remove("OMK_KIMI_ARGS")
            .env_remove("OMK_AGENT_PROTOCOL")
            .env_remove("OMK_SCRIPTED_BEHAVIOUR")
            .env_remove("RUST_LOG")
            .current_dir(&self.project)
            .stdin(Stdio::null());
        match self.fault {
            Some(fault) => cmd.env("OMK_SCRIPTED_FAULT", fault),
            None => cmd.env_remove("OMK_SCRIPTED_FAULT"),
        };
        match self.watch {
            Some(mode) => cmd.env("OMK_WATCH", mode),
            None => cmd.env_remove("OMK_WATCH"),
        };
        cmd
    }

    /// Run omk to the end (killed and failed past `limit`).
    fn omk_within(&self, limit: Duration, args: &[&str]) -> Output {
        run_within(self.cmd(args), limit, &format!("omk {args:?}"))
    }

    fn omk(&self, args: &[&str]) -> Output {
        self.omk_within(Duration::from_secs(60), args)
    }

    fn team_dir(&self, name: &str) -> PathBuf {
        self.state.join("team").join(name)
    }

    /// The team's document as stored (null while it does not exist).
    fn doc(&self, name: &str) -> Value {
        match &self.pg {
            None => read_json(&self.team_dir(name).join("team.json")).unwrap_or(Value::Null),
            Some(pg) => self
                .in_store(omk_core::team::remote::team(&pg.store, name))
                .unwrap()
                .map_or(Value::Null, |d| serde_json::to_value(d).unwrap()),
        }
    }

    /// The team's events, oldest first.
    fn events(&self, name: &str) -> Vec<Value> {
        match &self.pg {
            None => std::fs::read_to_string(self.team_dir(name).join("events.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            Some(pg) => self
                .in_store(pg.store.events_after(Some(name), 0, 100_000))
                .unwrap()
                .into_iter()
                .map(|e| serde_json::to_value(e.event).unwrap())
                .collect(),
        }
    }

    fn events_of(&self, name: &str, kind: &str) -> Vec<Value> {
        self.events(name)
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Agent pids named by the run's `worker_started` events.
    fn agent_pids(&self, name: &str) -> Vec<u32> {
        self.events_of(name, "worker_started")
            .iter()
            .map(|e| {
                e["payload"]["agent_pid"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("worker_started without agent_pid: {e}"))
                    as u32
            })
            .collect()
    }

    /// Scripted agents of this test still running (zombies excluded).
    fn live_agents(&self) -> Vec<u32> {
        let marker = self.root.to_string_lossy().into_owned();
        let agent = agent_bin().to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let argv: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                argv.first() == Some(&agent)
                    && argv.iter().any(|a| a.contains(&marker))
                    && !is_zombie_or_gone(pid)
            })
            .collect()
    }

    /// Whether the scripted agent `pid` of this test still runs.
    fn agent_alive(&self, pid: u32) -> bool {
        if is_zombie_or_gone(pid) {
            return false;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // A recycled pid belongs to some other process: ours is gone.
        String::from_utf8_lossy(&raw).contains(&*self.root.to_string_lossy())
    }

    /// Every agent team `name` started has exited (on a store, its host
    /// stops them when the team has no work left for them: soon after).
    fn assert_agents_dead(&self, name: &str) {
        let pids = self.agent_pids(name);
        assert!(!pids.is_empty(), "team {name} started no agent");
        if self.backend() == Backend::Pg {
            wait_for(
                &format!("the agents of {name} to exit"),
                Duration::from_secs(10),
                || pids.iter().all(|p| !self.agent_alive(*p)).then_some(()),
            );
        }
        let alive: Vec<u32> = pids.into_iter().filter(|p| self.agent_alive(*p)).collect();
        assert!(
            alive.is_empty(),
            "agents of team {name} still alive: {alive:?}"
        );
    }

    /// `total_shutdowns`: the snapshot plus its generation's delta log.
    fn total_shutdowns(&self) -> u64 {
        let snapshot = read_json(&self.state.join("metrics.json")).unwrap_or(Value::Null);
        let generation = snapshot["generation"].as_u64().unwrap_or(0);
        let mut n = snapshot["total_shutdowns"].as_u64().unwrap_or(0);
        let log = self
            .state
            .join(format!("metrics.deltas.{generation}.jsonl"));
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let Ok(delta) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for pair in delta["add"].as_array().into_iter().flatten() {
                if pair[0] == "shutdowns" {
                    n += pair[1].as_u64().unwrap_or(0);
                }
            }
        }
        n
    }

    /// Wait until every listed task has a `task_started` event (its prompt
    /// is about to be or has been sent) and is `running`.
    fn wait_tasks_running(&self, name: &str, ids: &[&str]) {
        wait_for(
            &format!("tasks {ids:?} of {name} to run"),
            Duration::from_secs(20),
            || {
                let doc = self.doc(name);
                let started = self.events_of(name, "task_started");
                ids.iter()
                    .all(|id| {
                        task(&doc, id)["status"] == "running"
                            && started.iter().any(|e| e["payload"]["task_id"] == *id)
                    })
                    .then_some(())
            },
        );
    }
}

impl Drop for Fixture {
    /// A failed test must not leave its agents or detached supervisors
    /// behind: kill every process whose argv names this test's dir.
    fn drop(&mut self) {
        if let Some(mut worker) = self
            .pg
            .as_ref()
            .and_then(|pg| pg.worker.borrow_mut().take())
        {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let marker = self.root.to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&raw).contains(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A foreground omk killed (and reaped) if the test fails before it ends.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn take(&mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_zombie_or_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, None | Some('Z' | 'X'))
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn run_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    finish_within(child, limit, what)
}

fn finish_within(mut child: Child, limit: Duration, what: &str) -> Output {
    // Drain the pipes on threads so a chatty child never blocks.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Poll `f` every 50 ms until it yields, or panic naming `what`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn task<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .unwrap_or(&Value::Null)
}

fn for_task(events: &[Value], id: &str) -> usize {
    events
        .iter()
        .filter(|e| e["payload"]["task_id"] == id)
        .count()
}

fn errors_of(t: &Value) -> Vec<String> {
    t["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Run a team in the foreground with `--json`; returns (exit code, doc).
fn run_team(f: &Fixture, spec: &str, name: &str, subtasks: &[&str]) -> (i32, Value) {
    run_team_with(f, spec, name, subtasks, &[])
}

fn run_team_with(
    f: &Fixture,
    spec: &str,
    name: &str,
    subtasks: &[&str],
    extra: &[&str],
) -> (i32, Value) {
    let mut args = vec![
        "team",
        "run",
        spec,
        "Fault injection",
        "--name",
        name,
        "--json",
    ];
    for s in subtasks {
        args.extend(["--subtask", s]);
    }
    args.extend(extra);
    let out = f.omk(&args);
    let doc = json(&out);
    assert!(
        doc.get("error").is_none(),
        "team run failed: {}",
        describe(&out)
    );
    (out.status.code().unwrap_or(-1), doc)
}

fn start_detached(f: &Fixture, spec: &str, name: &str, subtasks: &[&str], extra: &[&str]) -> Value {
    let mut args = vec![
        "team",
        "run",
        spec,
        "Fault injection",
        "--name",
        name,
        "--detach",
        "--json",
    ];
    for s in subtasks {
        args.extend(["--subtask", s]);
    }
    args.extend(extra);
    let started = Instant::now();
    let out = f.omk_within(Duration::from_secs(10), &args);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "--detach took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc = json(&out);
    assert_eq!(doc["name"], name, "{doc}");
    doc
}

// ------------------------------------------------------------------ tests

fn crash_mid_turn_is_retried_with_fresh_agents_then_fails_with_evidence(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    let (code, doc) = run_team(&f, "1:executor", "crash", &["[crash] boom"]);
    assert_eq!(code, 1, "a failed run exits 1: {doc}");
    assert_eq!(doc["phase"], "Failed", "{doc}");
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempts"], 3, "{t}");
    let errors = errors_of(t);
    assert_eq!(errors.len(), 3, "{errors:?}");
    for e in &errors {
        assert!(
            e.contains("exited with code 3"),
            "error names the exit: {e}"
        );
    }

    // The failure document carries the evidence (no proof).
    let failure = f.proof_doc("crash").expect("a failure document");
    assert_eq!(json(&f.omk(&["team", "proof", "crash"])), failure);
    assert_eq!(failure["ready"], false);
    let failed = failure["failed_tasks"].as_array().expect("failed_tasks");
    assert_eq!(failed.len(), 1, "{failure}");
    assert_eq!(failed[0]["id"], "t1");
    assert_eq!(failed[0]["errors"].as_array().map(Vec::len), Some(3));

    let events = f.events("crash");
    let of =
        |k: &str| -> Vec<Value> { events.iter().filter(|e| e["kind"] == k).cloned().collect() };
    assert_eq!(for_task(&of("retry_scheduled"), "t1"), 2);
    assert_eq!(for_task(&of("task_failed"), "t1"), 1);
    let pids = f.agent_pids("crash");
    assert!(pids.len() >= 3, "one agent per attempt: {pids:?}");
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), pids.len(), "agents reused: {pids:?}");
    f.assert_agents_dead("crash");
}

fn crash_once_is_retried_and_completes(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    let (code, doc) = run_team(&f, "1:executor", "crash-once", &["[crash-once:marker] x"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["phase"], "Completed", "{doc}");
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(errors_of(t).len(), 1, "{t}");
    // The task's record: each claim raised its epoch, and the lease and
    // the retry time are gone once it completed.
    assert_eq!(t["epoch"], 2, "{t}");
    assert!(
        t.get("lease_deadline").is_none() && t.get("retry_at").is_none(),
        "{t}"
    );
    let epochs: Vec<u64> = f
        .events_of("crash-once", "task_claimed")
        .iter()
        .filter(|e| e["payload"]["task_id"] == "t1")
        .map(|e| e["payload"]["epoch"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(epochs, vec![1, 2]);
    let completed = f.events_of("crash-once", "task_completed");
    assert_eq!(completed[0]["payload"]["epoch"], 2, "{completed:?}");
    assert!(f.wrote("crash-once", "marker"));
    let proof = f.proof_doc("crash-once").expect("a proof");
    assert_eq!(proof["ready"], true, "{proof}");
    assert_eq!(
        for_task(&f.events_of("crash-once", "retry_scheduled"), "t1"),
        1
    );
    f.assert_agents_dead("crash-once");
}

fn stalled_agent_loses_its_lease_is_killed_and_the_task_fails(b: Backend) {
    // The stalled agent also ignores stdin EOF and SIGTERM: it does not go
    // away by itself, so only omk's kill can end it.
    let Some(f) = Fixture::on(b, 1, 2) else {
        return;
    };
    let f = f.with_fault("ignore-term");
    let (code, doc) = run_team(&f, "1:executor", "stall", &["[stall] hang"]);
    assert_eq!(code, 1, "{doc}");
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    let errors = errors_of(t);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("lease expired")),
        "{errors:?}"
    );
    let expired = f.events_of("stall", "lease_expired");
    assert_eq!(for_task(&expired, "t1"), 2, "{expired:?}");
    assert_eq!(for_task(&f.events_of("stall", "task_failed"), "t1"), 1);
    assert_eq!(f.agent_pids("stall").len(), 2);
    // Each was killed (SIGKILL's status) when its lease expired, not later.
    let exited = f.events_of("stall", "worker_exited");
    assert_eq!(exited.len(), 2, "{exited:?}");
    for (e, x) in expired.iter().zip(&exited) {
        let exit = x["payload"]["exit"].as_str().unwrap_or_default();
        assert!(exit.contains("signal: 9"), "not killed: {exit:?}");
        let ts =
            |v: &Value| chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        let late = ts(x) - ts(e);
        assert!(
            late < chrono::Duration::seconds(2),
            "killed {late:?} after the lease expired"
        );
    }
    // omk has returned: every agent it started is gone, not just abandoned.
    f.assert_agents_dead("stall");
}

#[test]
fn long_turn_that_keeps_talking_never_loses_its_lease() {
    let f = Fixture::new(5, 3);
    let mut cmd = f.cmd(&[
        "team",
        "run",
        "1:executor",
        "Fault injection",
        "--name",
        "long",
        "--json",
        "--subtask",
        "[sleep:180] slow but alive",
    ]);
    let mut child = ChildGuard(Some(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    f.wait_tasks_running("long", &["t1"]);

    // Heartbeats keep coming during the turn, and show the agent active.
    let hb_file = f.team_dir("long").join("workers/w1/heartbeat.json");
    // The heartbeat naming the agent is written at once; the state that
    // follows it may lag by the persister's heartbeat interval (100 ms).
    let first = wait_for("a heartbeat", Duration::from_secs(10), || {
        read_json(&hb_file).filter(|h| h["agent"].is_object() && h["state"] == "running")
    });
    assert_eq!(first["task"], "t1", "{first}");
    for _ in 0..2 {
        let before = read_json(&hb_file).unwrap()["updated_at"].clone();
        let hb = wait_for("a newer heartbeat", Duration::from_secs(10), || {
            read_json(&hb_file).filter(|h| h["updated_at"] != before)
        });
        assert_eq!(hb["state"], "running", "{hb}");
        assert_eq!(hb["task"], "t1", "{hb}");
        assert!(hb["last_agent_activity_at"].is_string(), "{hb}");
    }

    let out = finish_within(child.take(), Duration::from_secs(260), "the long team run");
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert!(
        f.events_of("long", "lease_expired").is_empty(),
        "a talking agent lost its lease"
    );
    // The turn ran to its natural end: the answer followed 360 ticks.
    assert!(
        t["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tick 0 tick 1"),
        "{t}"
    );
    let transcript =
        std::fs::read_to_string(f.team_dir("long").join("workers/w1/transcript.jsonl")).unwrap();
    assert!(
        transcript.contains("tick 359"),
        "fewer ticks than 180 s of them"
    );
    assert!(
        transcript.contains("Done:"),
        "no final answer in the transcript"
    );
}

fn malformed_line_is_recorded_and_the_agent_is_replaced(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    let (code, doc) = run_team(&f, "1:executor", "garbage", &["[malformed] a", "b"]);
    assert_eq!(code, 0, "{doc}");
    for id in ["t1", "t2"] {
        assert_eq!(task(&doc, id)["status"], "completed", "{doc}");
        assert_eq!(task(&doc, id)["attempts"], 1, "{doc}");
    }
    let violations = f.events_of("garbage", "agent_protocol_error");
    assert!(!violations.is_empty(), "no agent_protocol_error event");
    assert!(
        violations[0]["payload"]["line"]
            .as_str()
            .unwrap_or_default()
            .contains("\"params\": {"),
        "{violations:?}"
    );
    let completed = f.events_of("garbage", "task_completed");
    let t1 = completed
        .iter()
        .find(|e| e["payload"]["task_id"] == "t1")
        .expect("t1 completed");
    assert!(t1["payload"]["protocol_violations"].as_u64() >= Some(1));

    let started = f.events_of("garbage", "task_started");
    let pid_of = |id: &str| {
        started
            .iter()
            .find(|e| e["payload"]["task_id"] == id)
            .and_then(|e| e["payload"]["agent_pid"].as_u64())
            .unwrap_or_else(|| panic!("no task_started for {id}: {started:?}"))
    };
    assert_ne!(
        pid_of("t1"),
        pid_of("t2"),
        "the agent that sent garbage ran the next task"
    );
    f.assert_agents_dead("garbage");
}

fn unknown_event_type_is_tolerated_and_counted(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    let (code, doc) = run_team(&f, "1:executor", "future", &["[unknown-event] x"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(task(&doc, "t1")["status"], "completed", "{doc}");
    let completed = f.events_of("future", "task_completed");
    assert_eq!(completed.len(), 1);
    assert!(
        completed[0]["payload"]["unknown_events"].as_u64() >= Some(1),
        "{}",
        completed[0]
    );
    assert_eq!(completed[0]["payload"]["protocol_violations"], 0);
}

fn provider_error_is_retried_then_fails_naming_the_code(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 2) else {
        return;
    };
    let (code, doc) = run_team(
        &f,
        "1:executor",
        "quota",
        &["[provider-error:quota exceeded] x"],
    );
    assert_eq!(code, 1, "{doc}");
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    let errors = errors_of(t);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("-32003") && e.contains("quota exceeded")),
        "{errors:?}"
    );
    assert_eq!(for_task(&f.events_of("quota", "retry_scheduled"), "t1"), 1);
    let failed = f.events_of("quota", "task_failed");
    assert_eq!(for_task(&failed, "t1"), 1);
    assert!(failed[0]["payload"]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("-32003"));
}

#[test]
fn shutdown_from_another_process_cancels_running_turns() {
    let f = Fixture::new(5, 3);
    let doc = start_detached(
        &f,
        "2:executor",
        "stopme",
        &["[sleep:30] a", "[sleep:30] b"],
        &[],
    );
    assert_eq!(doc["phase"], "Planning", "{doc}");
    f.wait_tasks_running("stopme", &["t1", "t2"]);
    // Both turns are under way: the agents are streaming ticks.
    wait_for("both agents to talk", Duration::from_secs(10), || {
        ["w1", "w2"]
            .iter()
            .all(|w| {
                std::fs::read_to_string(
                    f.team_dir("stopme")
                        .join("workers")
                        .join(w)
                        .join("transcript.jsonl"),
                )
                .unwrap_or_default()
                .contains("tick")
            })
            .then_some(())
    });
    let supervisor = f.doc("stopme")["supervisor"]["pid"]
        .as_u64()
        .expect("supervisor pid") as u32;
    let shutdowns_before = f.total_shutdowns();

    let started = Instant::now();
    let out = f.omk_within(
        Duration::from_secs(30),
        &["team", "shutdown", "stopme", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let doc = json(&out);
    assert_eq!(doc["phase"], "Shutdown", "{doc}");
    for id in ["t1", "t2"] {
        let t = task(&doc, id);
        assert_eq!(t["status"], "cancelled", "{t}");
        // A cancelled attempt does not count against the task.
        assert!(errors_of(t).is_empty(), "{t}");
    }
    f.assert_agents_dead("stopme");
    assert_eq!(f.agent_pids("stopme").len(), 2);
    assert!(f.team_dir("stopme").join("failure.json").exists());

    // The turns were cancelled over Wire (not killed): each worker's
    // transcript records its turn ending as cancelled.
    for w in ["w1", "w2"] {
        let transcript = std::fs::read_to_string(
            f.team_dir("stopme")
                .join("workers")
                .join(w)
                .join("transcript.jsonl"),
        )
        .unwrap();
        let ends: Vec<Value> = transcript
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["kind"] == "turn_end")
            .collect();
        assert!(
            ends.iter()
                .any(|l| l["data"]["outcome"]["status"] == "cancelled"),
            "{w}: no turn recorded as cancelled; turn ends: {ends:?}"
        );
        let exited: Vec<Value> = f
            .events_of("stopme", "worker_exited")
            .into_iter()
            .filter(|e| e["actor"] == *w)
            .collect();
        assert!(
            exited
                .iter()
                .any(|e| e["payload"]["exit"].as_str() == Some("exit status: 0")),
            "{w}: the agent did not exit cleanly after its stdin closed: {exited:?}"
        );
    }

    // Idempotent: same answer, counted once.
    let again = f.omk_within(
        Duration::from_secs(30),
        &["team", "shutdown", "stopme", "--json"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert_eq!(json(&again)["phase"], "Shutdown");
    assert_eq!(f.total_shutdowns(), shutdowns_before + 1);

    // The detached supervisor itself goes away.
    wait_for("the supervisor to exit", Duration::from_secs(10), || {
        is_zombie_or_gone(supervisor).then_some(())
    });
}

/// A shutdown request reaches the supervisor through the change
/// notification of `shutdown.json` (inotify, or the polling watcher), and
/// without notifications at all through its safety re-check; the
/// `shutdown_requested` event says which.
#[test]
fn shutdown_requests_arrive_by_notification_and_without_one_by_recheck() {
    for (mode, via) in [
        (None, "notification"),
        (Some("poll"), "notification"),
        (Some("off"), "recheck"),
    ] {
        let mut f = Fixture::new(5, 3);
        f.watch = mode;
        start_detached(&f, "1:executor", "stopme", &["[sleep:30] a"], &[]);
        f.wait_tasks_running("stopme", &["t1"]);
        let out = f.omk_within(
            Duration::from_secs(30),
            &["team", "shutdown", "stopme", "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", describe(&out));
        let doc = json(&out);
        assert_eq!(doc["phase"], "Shutdown", "{mode:?}: {doc}");
        assert_eq!(task(&doc, "t1")["status"], "cancelled", "{mode:?}");
        let noticed = f.events_of("stopme", "shutdown_requested");
        assert_eq!(noticed.len(), 1, "{mode:?}: {noticed:?}");
        let p = &noticed[0]["payload"];
        assert_eq!(p["via"], via, "{mode:?}: {p}");
        assert_eq!(p["force"], false, "{mode:?}: {p}");
        assert!(p["noticed_after_ms"].as_f64().unwrap() >= 0.0, "{p}");
    }
}

#[test]
fn forced_shutdown_kills_an_agent_that_ignores_cancel() {
    // An agent that ignores cancel, stdin EOF and SIGTERM: only a kill ends it.
    let f = Fixture::new(60, 3).with_fault("ignore-term");
    start_detached(&f, "1:executor", "stuck", &["[stall] hang"], &[]);
    f.wait_tasks_running("stuck", &["t1"]);
    let pids = f.agent_pids("stuck");
    assert_eq!(pids.len(), 1);
    assert!(f.agent_alive(pids[0]));

    let started = Instant::now();
    let out = f.omk_within(
        Duration::from_secs(30),
        &["team", "shutdown", "stuck", "--force", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "--force took {:?}",
        started.elapsed()
    );
    let doc = json(&out);
    assert_eq!(doc["phase"], "Shutdown", "{doc}");
    assert!(
        doc["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("--force"),
        "{doc}"
    );
    let t = task(&doc, "t1");
    assert_eq!(t["status"], "cancelled", "{t}");
    assert!(
        errors_of(t).is_empty(),
        "killing the agent for --force counted as a failed attempt: {t}"
    );
    assert!(
        !f.agent_alive(pids[0]),
        "agent {} survived --force",
        pids[0]
    );
    // omk killed it (SIGKILL's status), within the --force deadline above.
    let exited = f.events_of("stuck", "worker_exited");
    assert_eq!(exited.len(), 1, "{exited:?}");
    let exit = exited[0]["payload"]["exit"].as_str().unwrap_or_default();
    assert!(exit.contains("signal: 9"), "{exit:?}");
    f.assert_agents_dead("stuck");
}

#[test]
fn two_teams_share_a_pool_without_exceeding_it() {
    let f = Fixture::new(5, 3);
    let subtasks = ["[sleep:2] a", "[sleep:2] b"];
    start_detached(&f, "2:executor", "left", &subtasks, &["--pool", "duo"]);
    start_detached(&f, "2:executor", "right", &subtasks, &["--pool", "duo"]);

    let deadline = Instant::now() + Duration::from_secs(45);
    let mut max_seen = 0;
    loop {
        max_seen = max_seen.max(f.live_agents().len());
        let ended = ["left", "right"].iter().all(|n| {
            matches!(
                f.doc(n)["phase"].as_str(),
                Some("Completed" | "Failed" | "Shutdown" | "Interrupted")
            )
        });
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "teams did not finish in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        max_seen <= 2,
        "{max_seen} agents ran at once in a pool of 2"
    );
    assert_eq!(max_seen, 2, "the pool's two slots were never both used");
    for n in ["left", "right"] {
        let doc = f.doc(n);
        assert_eq!(doc["phase"], "Completed", "{doc}");
        assert_eq!(doc["pool"], "duo");
    }
    let queued =
        f.events_of("left", "pool_queued").len() + f.events_of("right", "pool_queued").len();
    assert!(queued >= 1, "nobody waited for a slot");
    assert!(f.live_agents().is_empty(), "{:?}", f.live_agents());
    // Every slot was released.
    let pool = read_json(&f.state.join("pools/duo.json")).expect("pools/duo.json");
    assert_eq!(pool["active"].as_array().map(Vec::len), Some(0), "{pool}");
    assert_eq!(pool["queue"].as_array().map(Vec::len), Some(0), "{pool}");
}

fn bad_specs_and_names_are_refused_before_anything_is_written(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    let cases: &[(&[&str], &str)] = &[
        (&["0:executor"], "between 1 and 64"),
        (&["65:executor"], "between 1 and 64"),
        (&["3:../x"], "invalid role"),
        (&["3:"], "must not be empty"),
        (&["abc"], "missing ':'"),
        (&["2:executor", "--name", "../x"], "invalid team name"),
        (&["2:executor", "--name", ".hidden"], "invalid team name"),
    ];
    for (args, why) in cases {
        let mut full = vec!["team", "run", args[0], "Some task", "--subtask", "x"];
        full.extend(&args[1..]);
        let out = f.omk(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(why),
            "{args:?}: stderr {stderr:?} lacks {why:?}"
        );
        let teams: Vec<PathBuf> = std::fs::read_dir(f.state.join("team"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(teams.is_empty(), "{args:?} left {teams:?}");
        if let Some(pg) = &f.pg {
            let stored = f.in_store(pg.store.team_docs()).unwrap();
            assert!(stored.is_empty(), "{args:?} left {stored:?}");
        }
    }
    assert!(!f.root.join("x").exists() && !f.state.join("x").exists());
}

#[test]
fn sigkilled_supervisor_is_reported_interrupted_and_its_agent_exits() {
    let f = Fixture::new(5, 3);
    let mut child = ChildGuard(Some(
        f.cmd(&[
            "team",
            "run",
            "1:executor",
            "Fault injection",
            "--subtask",
            "[sleep:30] a",
            "--name",
            "killed",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ));
    f.wait_tasks_running("killed", &["t1"]);
    let pids = f.agent_pids("killed");
    assert_eq!(pids.len(), 1);
    assert!(f.agent_alive(pids[0]));

    let mut supervisor = child.take();
    supervisor.kill().unwrap(); // SIGKILL, the supervisor only
    supervisor.wait().unwrap();
    let out = f.omk(&["team", "status", "killed", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc = json(&out);
    assert_eq!(doc["phase"], "Interrupted", "{doc}");
    assert_eq!(task(&doc, "t1")["status"], "cancelled", "{doc}");
    assert!(
        doc["reason"].as_str().unwrap_or_default().contains("died"),
        "{doc}"
    );
    let failure = read_json(&f.team_dir("killed").join("failure.json")).expect("failure.json");
    assert_eq!(failure["phase"], "Interrupted");

    // Its stdin closed with the supervisor: the agent leaves by itself.
    wait_for("the orphaned agent to exit", Duration::from_secs(5), || {
        (!f.agent_alive(pids[0])).then_some(())
    });

    // The dead supervisor's pool slot is not counted as active, and cleanup
    // removes it and says so.
    let status = json(&f.omk(&["pools", "status", "--json"]));
    let default = &status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .cloned()
        .unwrap();
    assert_eq!(default["active_tasks"], 0, "{status}");
    assert_eq!(default["stale_entries"], 1, "{status}");
    assert_eq!(default["total_admitted"], 1, "{status}");
    let cleanup = json(&f.omk(&["pools", "cleanup", "--json"]));
    assert_eq!(cleanup["removed"], 1, "{cleanup}");
    let removed = &cleanup["pools"][0]["removed_slots"][0];
    assert_eq!(
        (removed["run"].as_str(), removed["worker"].as_str()),
        (Some("killed"), Some("w1")),
        "{cleanup}"
    );
    let again = json(&f.omk(&["pools", "cleanup", "--json"]));
    assert_eq!(again["removed"], 0, "cleanup is idempotent: {again}");
}

#[test]
fn a_sigkilled_isolated_run_keeps_its_wip_in_a_ref_and_leaves_no_worktree() {
    let f = Fixture::new(120, 3);
    let git = |args: &[&str]| git_in(&f, args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(f.project.join("seed.txt"), "seed\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "seed"]);
    // The turn writes, then blocks in a command: the supervisor dies
    // between the edit and any commit of it.
    let mut child = ChildGuard(Some(
        f.cmd(&[
            "team",
            "run",
            "1:executor",
            "Fault injection",
            "--subtask",
            "[write:wip.txt:half done] [run:sleep 30]",
            "--approval",
            "approve-all",
            "--name",
            "iso-killed",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ));
    let written = f.team_dir("iso-killed").join("worktrees/w1/wip.txt");
    wait_for("the edit in the worktree", Duration::from_secs(30), || {
        written.exists().then_some(())
    });
    let mut supervisor = child.take();
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();

    let doc = json(&f.omk(&["team", "status", "iso-killed", "--json"]));
    assert_eq!(doc["phase"], "Interrupted", "{doc}");
    let rec = &doc["worktree"]["reconciled"];
    assert_eq!(rec["wip_refs"][0][0], "refs/omk/iso-killed/wip/w1", "{doc}");
    assert_eq!(rec["left_behind"], serde_json::json!([]), "{doc}");
    assert_eq!(
        git(&["show", "refs/omk/iso-killed/wip/w1:wip.txt"]),
        "half done"
    );
    assert!(!f.team_dir("iso-killed").join("worktrees").exists());
    assert_eq!(
        git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert!(!f.project.join("wip.txt").exists());
    // Reading it again changes nothing.
    let again = json(&f.omk(&["team", "status", "iso-killed", "--json"]));
    assert_eq!(again["worktree"], doc["worktree"]);
}

/// `git` in the fixture's project, as a test user.
fn git_in(f: &Fixture, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&f.project)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_supervisor_killed_at_an_integration_step_loses_no_hunk_and_integrates_each_task_once() {
    use std::os::unix::process::ExitStatusExt;
    // Killed just before t2's integration ref update, and just after it
    // (before the team document could record t2 as done).
    for (point, landed) in [
        ("before-integrate:t2", vec!["t1"]),
        ("after-integrate:t2", vec!["t1", "t2"]),
    ] {
        let f = Fixture::new(120, 3);
        git_in(&f, &["init", "-q", "-b", "main"]);
        std::fs::write(f.project.join("seed.txt"), "seed\n").unwrap();
        git_in(&f, &["add", "-A"]);
        git_in(&f, &["commit", "-qm", "seed"]);
        let head = git_in(&f, &["rev-parse", "HEAD"]);
        let out = f
            .cmd(&[
                "team",
                "run",
                "1:executor",
                "Fault points",
                "--subtask",
                "[write:f1.txt:one\\n]",
                "--subtask",
                "[write:f2.txt:two\\n]",
                "--subtask",
                "[write:f3.txt:three\\n]",
                "--approval",
                "approve-all",
                "--name",
                "killed",
            ])
            .env("OMK_TEST_FAULT_POINT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: {}", describe(&out));

        // Reconciled by `pools cleanup` the first time, by the next
        // isolated run the second (`team status` and `team shutdown` do it
        // too).
        if point.starts_with("before") {
            let v = json(&f.omk(&["pools", "cleanup", "--json"]));
            assert_eq!(v["reconciled_teams"], serde_json::json!(["killed"]), "{v}");
        } else {
            let next = f.omk(&[
                "team",
                "run",
                "1:executor",
                "next",
                "--subtask",
                "noop",
                "--name",
                "next",
            ]);
            assert_eq!(next.status.code(), Some(0), "{}", describe(&next));
            git_in(&f, &["branch", "-D", "-q", "omk/next"]);
        }
        assert!(!f.team_dir("killed").join("worktrees").exists(), "{point}");
        let doc = json(&f.omk(&["team", "status", "killed", "--json"]));
        assert_eq!(doc["phase"], "Interrupted", "{point}: {doc}");
        let rec = &doc["worktree"]["reconciled"];
        assert_eq!(
            rec["integrated"],
            serde_json::json!(landed),
            "{point}: {doc}"
        );
        for t in doc["tasks"].as_array().unwrap() {
            let done = landed.contains(&t["id"].as_str().unwrap());
            let want = if done { "completed" } else { "cancelled" };
            assert_eq!(t["status"], want, "{point}: {t}");
        }
        // What landed is on the branch, once each; t2's work is in its
        // attempt's ref whether or not it landed.
        let log = git_in(
            &f,
            &[
                "log",
                "--first-parent",
                "--format=%(trailers:key=Omk-Task,valueonly)",
                "refs/omk/killed/integration",
            ],
        );
        let tasks: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
        let mut want: Vec<&str> = landed.clone();
        want.reverse();
        assert_eq!(tasks, want, "{point}: {log}");
        assert_eq!(git_in(&f, &["show", "omk/killed:f1.txt"]), "one\n");
        let f2 = git_in(&f, &["ls-tree", "--name-only", "omk/killed"]);
        assert_eq!(
            f2.contains("f2.txt"),
            landed.contains(&"t2"),
            "{point}: {f2}"
        );
        assert!(!f2.contains("f3.txt"));
        assert_eq!(
            git_in(&f, &["show", "refs/omk/killed/tasks/t2/1:f2.txt"]),
            "two\n"
        );
        assert_eq!(
            doc["worktree"]["integrated_commit"].as_str().unwrap().len(),
            40
        );
        assert_eq!(
            doc["worktree"]["integrated_commit"].as_str().unwrap(),
            git_in(&f, &["rev-parse", "refs/omk/killed/integration"]).trim()
        );
        // The user's checkout: no worktree, HEAD, index and files as they were.
        assert_eq!(
            git_in(&f, &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
        assert_eq!(git_in(&f, &["rev-parse", "HEAD"]), head);
        assert_eq!(git_in(&f, &["status", "--porcelain"]), "");
        assert_eq!(
            git_in(&f, &["branch", "--format=%(refname:short)"]),
            "main\nomk/killed\n"
        );
    }
}

fn detached_run_is_visible_from_other_processes(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };
    start_detached(&f, "1:executor", "bg", &["[sleep:1] a", "[sleep:1] b"], &[]);
    // A follower from the start: the events as they happen, then the end.
    let follower = ChildGuard(Some(
        f.cmd(&["team", "status", "bg", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let status = || {
        let out = f.omk(&["team", "status", "bg", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        json(&out)
    };
    let mut phases = Vec::new();
    let mut note = |p: &Value| {
        let p = p.as_str().unwrap_or("?").to_string();
        if phases.last() != Some(&p) {
            phases.push(p);
        }
    };
    wait_for("status to say Executing", Duration::from_secs(15), || {
        let doc = status();
        note(&doc["phase"]);
        (doc["phase"] == "Executing").then_some(())
    });
    let done = wait_for("status to say Completed", Duration::from_secs(30), || {
        let doc = status();
        note(&doc["phase"]);
        doc["phase"]
            .as_str()
            .filter(|p| *p != "Executing" && *p != "Verifying")?;
        Some(doc)
    });
    assert_eq!(
        done["phase"], "Completed",
        "phases seen: {phases:?}; {done}"
    );
    assert_eq!(task(&done, "t1")["status"], "completed");
    assert_eq!(task(&done, "t2")["status"], "completed");

    let out = f.omk(&["team", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let list = json(&out);
    let entry = list["teams"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "bg"))
        .unwrap_or_else(|| panic!("bg not listed: {list}"));
    assert_eq!(entry["phase"], "Completed");
    assert_eq!(list["errors"].as_array().map(Vec::len), Some(0), "{list}");

    // The follower saw every event (one JSON line each), ending with the
    // run's, then printed the final document.
    let mut follower = follower;
    let out = finish_within(
        follower.take(),
        Duration::from_secs(20),
        "team status --follow",
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with('{') && l.ends_with('}')),
        "not an event a line: {text}"
    );
    let mut followed: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("{e}: {text}")))
        .collect();
    let doc = followed.pop().expect("the document");
    assert_eq!(doc["phase"], "Completed", "{doc}");
    let kinds: Vec<&str> = followed.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_completed").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"run_completed"), "{kinds:?}");
    let stored: Vec<Value> = f.events("bg");
    assert_eq!(
        followed.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
        stored
            .iter()
            .take(followed.len())
            .map(|e| &e["id"])
            .collect::<Vec<_>>(),
        "the follower's events are the stored ones, in order"
    );
}

fn approval_policy_governs_file_writes(b: Backend) {
    let Some(f) = Fixture::on(b, 5, 3) else {
        return;
    };

    // reject-all: the turn completes, nothing is written.
    let (code, doc) = run_team_with(
        &f,
        "1:executor",
        "strict",
        &["[write:rejected.txt:x]"],
        &["--approval", "reject-all"],
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(task(&doc, "t1")["status"], "completed", "{doc}");
    assert!(!f.wrote("strict", "rejected.txt"));
    let decided = f.events_of("strict", "approval_decided");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["payload"]["decision"], "reject");
    assert_eq!(decided[0]["payload"]["policy"], "reject-all");

    // Default (workdir-edits): an edit inside the work dir is approved.
    let (code, doc) = run_team(&f, "1:executor", "lenient", &["[write:approved.txt:x]"]);
    assert_eq!(code, 0, "{doc}");
    let written: Vec<String> = f
        .work_dirs("lenient")
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("approved.txt")).ok())
        .collect();
    assert_eq!(written, ["x"]);
    let decided = f.events_of("lenient", "approval_decided");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["payload"]["decision"], "approve");
    assert_eq!(decided[0]["payload"]["policy"], "workdir-edits");

    // Outside the work dir: never written, never approved.
    let (_, doc) = run_team(&f, "1:executor", "escape", &["[write:../escape.txt:x]"]);
    assert!(doc["phase"].is_string(), "{doc}");
    for d in f.work_dirs("escape") {
        assert!(
            !d.join("../escape.txt").exists(),
            "wrote outside the work dir"
        );
    }
    assert!(
        !f.root.join("escape.txt").exists(),
        "wrote outside the work dir"
    );
    assert!(
        f.events_of("escape", "approval_decided")
            .iter()
            .all(|e| e["payload"]["decision"] != "approve"),
        "an escaping write was approved"
    );
}

fn off_a_terminal_the_text_output_is_just_the_report(b: Backend) {
    let Some(f) = Fixture::on(b, 30, 1) else {
        return;
    };
    let out = f.omk(&[
        "team",
        "run",
        "2:executor",
        "T",
        "--subtask",
        "a",
        "--subtask",
        "b",
        "--name",
        "quiet",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // No progress bar, spinner or log noise when stderr is not a terminal.
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("team quiet  phase Completed"), "{text}");
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
}

/// On a store the project is a git work tree: a store team's code travels
/// that way, and its gates run on the integrated commit.
fn verifying_runs_the_required_gates_and_the_proof_embeds_them(b: Backend) {
    let Some(f) = Fixture::on(b, 30, 1) else {
        return;
    };
    std::fs::create_dir_all(f.project.join(".omk")).unwrap();
    std::fs::write(
        f.project.join(".omk/gates.toml"),
        "[[gate]]\nname = \"has-file\"\ncommand = \"test -f made.txt\"\n\n[[gate]]\nname = \"advisory\"\ncommand = \"false\"\nrequired = false\n",
    )
    .unwrap();
    if b == Backend::Pg {
        git_in(&f, &["init", "-q", "-b", "main"]);
        git_in(&f, &["add", "-A"]);
        git_in(&f, &["commit", "-q", "-m", "gates"]);
    }
    // The agent writes the file the gate checks: Completed, proof ready.
    let (code, doc) = run_team(&f, "1:executor", "gated", &["[write:made.txt:x]"]);
    assert_eq!(
        (code, doc["phase"].as_str()),
        (0, Some("Completed")),
        "{doc}"
    );
    let proof = f.proof_doc("gated").expect("a proof");
    assert_eq!(proof["ready"], true, "{proof}");
    assert_eq!(proof["gates_run"], true);
    // `team proof` prints it.
    assert_eq!(json(&f.omk(&["team", "proof", "gated"])), proof);
    let gates = proof["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 1, "only required gates run: {proof}");
    assert_eq!(
        (gates[0]["name"].as_str(), gates[0]["passed"].as_bool()),
        (Some("has-file"), Some(true))
    );
    assert!(!f.events_of("gated", "gate_passed").is_empty());

    // Without the file the gate fails: the run fails and says which gate.
    // (A store team's agent wrote it in the team's commit, not here:
    // the next team starts from the project's HEAD, without it.)
    if b == Backend::File {
        std::fs::remove_file(f.project.join("made.txt")).unwrap();
    }
    let (code, doc) = run_team(&f, "1:executor", "ungated", &["nothing to write"]);
    assert_eq!((code, doc["phase"].as_str()), (1, Some("Failed")), "{doc}");
    assert!(
        doc["reason"].as_str().unwrap().contains("has-file"),
        "{doc}"
    );
    let failure = f.proof_doc("ungated").expect("a failure document");
    assert_eq!(failure["ready"], false, "{failure}");
    assert_eq!(failure["gates"][0]["exit_code"], 1);

    // --no-gates: completed, and the proof says the gates were skipped.
    let out = f.omk(&[
        "team",
        "run",
        "1:executor",
        "T",
        "--subtask",
        "x",
        "--name",
        "nogates",
        "--no-gates",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let proof = f.proof_doc("nogates").expect("a proof");
    assert_eq!(proof["gates_run"], false);
    assert!(
        proof["known_gaps"][0]
            .as_str()
            .unwrap()
            .contains("--no-gates"),
        "{proof}"
    );
}

#[test]
fn a_pool_that_refuses_every_worker_fails_the_run_and_says_why() {
    let f = Fixture::new(30, 1);
    let mut cfg = std::fs::read_to_string(&f.config).unwrap();
    // Any team state at all is over this cap, so admission is refused.
    cfg.push_str("\n[pools.tiny]\nmax_workers = 1\nmax_disk_gb = 0.000000001\n");
    std::fs::write(&f.config, cfg).unwrap();
    let (code, doc) = run_team_with(&f, "1:executor", "refused", &["a"], &["--pool", "tiny"]);
    assert_eq!((code, doc["phase"].as_str()), (1, Some("Failed")), "{doc}");
    let reason = doc["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused") && reason.contains("max_disk_gb"),
        "{reason}"
    );
    assert_eq!(f.events_of("refused", "pool_rejected").len(), 1);
    let pools = json(&f.omk(&["pools", "status", "--json"]));
    let tiny = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tiny")
        .cloned()
        .unwrap();
    assert_eq!(tiny["total_rejected"], 1, "{pools}");
}

fn shutting_down_a_team_that_already_ended_says_nothing_was_stopped(b: Backend) {
    let Some(f) = Fixture::on(b, 30, 1) else {
        return;
    };
    let (code, _) = run_team(&f, "1:executor", "done", &["a [answer:a]"]);
    assert_eq!(code, 0);
    let out = f.omk(&["team", "shutdown", "done", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = json(&out);
    assert_eq!(r["phase"], "Completed", "{r}");
    assert_eq!(r["stopped"], false, "{r}");
    assert!(
        r["outcome"]
            .as_str()
            .unwrap()
            .contains("nothing was stopped"),
        "{r}"
    );
    let out = f.omk(&["team", "shutdown", "done"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("had already ended (Completed)"),
        "{}",
        describe(&out)
    );
    // A running team is stopped, and says so.
    start_detached(&f, "1:executor", "busy", &["[sleep:30] slow"], &[]);
    f.wait_tasks_running("busy", &["t1"]);
    let r = json(&f.omk(&["team", "shutdown", "busy", "--json"]));
    assert_eq!(r["stopped"], true, "{r}");
    assert_eq!(r["phase"], "Shutdown", "{r}");
}

// ------------------------------------------------- on both stores

/// Each listed test, once per store: `file_store::NAME`, `postgres::NAME`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod file_store {
            $( #[test] fn $name() { super::$name(super::Backend::File) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Pg) } )*
        }
    };
}

on_both_stores!(
    crash_mid_turn_is_retried_with_fresh_agents_then_fails_with_evidence,
    crash_once_is_retried_and_completes,
    stalled_agent_loses_its_lease_is_killed_and_the_task_fails,
    malformed_line_is_recorded_and_the_agent_is_replaced,
    unknown_event_type_is_tolerated_and_counted,
    provider_error_is_retried_then_fails_naming_the_code,
    bad_specs_and_names_are_refused_before_anything_is_written,
    detached_run_is_visible_from_other_processes,
    approval_policy_governs_file_writes,
    off_a_terminal_the_text_output_is_just_the_report,
    verifying_runs_the_required_gates_and_the_proof_embeds_them,
    shutting_down_a_team_that_already_ended_says_nothing_was_stopped,
);
