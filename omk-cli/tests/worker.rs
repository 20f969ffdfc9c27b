//! `omk worker` daemons as hosts: each in its own network and pid namespace
//! (`unshare --net --pid --fork --mount-proc --kill-child`), reaching the
//! test's PostgreSQL through its unix socket, with state and work dirs of
//! their own; the scripted agent. Needs `make cargo-test` (PostgreSQL) and
//! root (namespaces); without them the tests say SKIPPED, except under
//! `CI=true`, where that is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omk_core::pg::tasks::TaskRecord;
use omk_core::pg::PgStore;
use serde_json::Value;

fn required(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} is not set: run the tests through `make cargo-test`, which starts PostgreSQL")
        }
        Err(_) => {
            eprintln!("SKIPPED: {name} is not set (make cargo-test starts PostgreSQL)");
            None
        }
    }
}

fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

struct Cluster {
    rt: tokio::runtime::Runtime,
    store: PgStore,
    /// The database's URL through the unix socket (what hosts use).
    socket_url: String,
    /// The database's URL over TCP (what `omk team run` here uses).
    tcp_url: String,
    tmp: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Option<Cluster> {
        let url = required("OMK_TEST_PG_URL")?;
        let socket = required("OMK_TEST_PG_SOCKET")?;
        let port = required("OMK_TEST_PG_PORT")?;
        if !is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the host namespaces need root"
            );
            eprintln!("SKIPPED: the host namespaces need root");
            return None;
        }
        common::agent_bin();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = format!("omk_w_{}", omk_core::ids::random_hex(6));
        let tcp_url = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
        let store = rt.block_on(async {
            let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            PgStore::connect(&tcp_url).await.unwrap()
        });
        Some(Cluster {
            rt,
            store,
            socket_url: format!("postgres://omk@localhost/{db}?host={socket}&port={port}"),
            tcp_url,
            tmp: tempfile::tempdir().unwrap(),
        })
    }

    /// Submit a team of one subtask per prompt, as `omk team run --store
    /// --detach` would (any worker coordinates it).
    fn submit(&self, team: &str, prompts: &[&str], max_attempts: i32) {
        let mut config = omk_core::Config::default();
        config.team.max_attempts = max_attempts as u32;
        let req = omk_core::team::TeamRunRequest {
            spec: "2:executor".into(),
            task: format!("test team {team}"),
            name: Some(team.into()),
            subtasks: prompts.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let sub = omk_core::team::remote::submission(&config, &req, "test").unwrap();
        let doc = serde_json::to_value(&sub.doc).unwrap();
        self.rt
            .block_on(self.store.create_team(team, &doc, &sub.tasks, None))
            .unwrap();
    }

    fn team_doc(&self, team: &str) -> Value {
        self.rt
            .block_on(self.store.team_doc(team))
            .unwrap()
            .unwrap()
    }

    /// `omk team run --store` from this host (TCP), with `lease_secs`.
    fn team_run(&self, name: &str, lease_secs: u64, subtasks: &[&str]) -> Command {
        let dir = self.tmp.path().join(format!("submitter-{name}"));
        std::fs::create_dir_all(dir.join("xdg")).unwrap();
        std::fs::write(
            dir.join("omk.toml"),
            format!("[team]\nlease_secs = {lease_secs}\n"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
        cmd.args([
            "team",
            "run",
            "2:executor",
            "a distributed task",
            "--name",
            name,
            "--json",
        ])
        .args(["--store", &self.tcp_url])
        .env("OMK_STATE_DIR", dir.join("state"))
        .env("OMK_CONFIG", dir.join("omk.toml"))
        .env("OMK_KIMI_BIN", common::agent_bin())
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for s in subtasks {
            cmd.args(["--subtask", s]);
        }
        cmd
    }

    fn tasks(&self, team: &str) -> Vec<TaskRecord> {
        self.rt.block_on(self.store.tasks(team)).unwrap()
    }

    fn events(&self, team: &str) -> Vec<(String, Value)> {
        self.rt
            .block_on(self.store.events_after(Some(team), 0, 10_000))
            .unwrap()
            .into_iter()
            .map(|e| (e.event.kind.as_str().to_string(), e.event.payload))
            .collect()
    }

    /// A host: `omk worker` alone in new network and pid namespaces.
    fn host(&self, name: &str, lease_secs: u64, max_agents: usize) -> Host {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(dir.join("xdg")).unwrap();
        std::fs::write(dir.join("omk.toml"), "[team]\nretry_backoff_ms = 50\n").unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(env!("CARGO_BIN_EXE_omk"))
            .args(["worker", "--store", &self.socket_url, "--name", name])
            .args(["--lease-secs", &lease_secs.to_string()])
            .args(["--max-agents", &max_agents.to_string()])
            .env("OMK_STATE_DIR", dir.join("state"))
            .env("OMK_CONFIG", dir.join("omk.toml"))
            .env("OMK_KIMI_BIN", common::agent_bin())
            .env("XDG_CONFIG_HOME", dir.join("xdg"))
            .env_remove("OMK_KIMI_ARGS")
            .env_remove("OMK_AGENT_PROTOCOL")
            .env_remove("OMK_SCRIPTED_BEHAVIOUR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Host {
            name: name.into(),
            child: Some(child),
            dir,
        }
    }

    /// Wait until `done` holds of the team's tasks.
    fn wait_tasks(
        &self,
        team: &str,
        what: &str,
        done: impl Fn(&[TaskRecord]) -> bool,
    ) -> Vec<TaskRecord> {
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            // A team not submitted yet has no tasks.
            let tasks = self.tasks(team);
            if !tasks.is_empty() && done(&tasks) {
                return tasks;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}: {tasks:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Host {
    name: String,
    child: Option<Child>,
    #[allow(dead_code)]
    dir: PathBuf,
}

impl Host {
    /// The `omk worker` process (pid 1 of its namespace), as the host sees it.
    fn worker_pid(&self) -> i32 {
        let unshare = self.child.as_ref().unwrap().id();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(Instant::now() < until, "no worker under unshare {unshare}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, pid: i32, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// SIGKILL the whole host: unshare dies, its child (--kill-child) and
    /// with it the namespace, agents included.
    fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM the worker and collect its report.
    fn stop(&mut self) -> Value {
        let pid = self.worker_pid();
        self.signal(pid, nix::sys::signal::Signal::SIGTERM);
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed: {stdout}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn holder_host(t: &TaskRecord) -> String {
    t.holder
        .clone()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn completed_by(t: &TaskRecord) -> String {
    t.result
        .as_ref()
        .and_then(|r| r["holder"].as_str())
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

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
    assert_eq!(completed_by(&t[0]), "host-b");
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
    let out = c
        .team_run("dist", 5, &["[sleep:0.5] [answer:a]"; 4])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap();
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
    assert!(
        doc["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "completed"),
        "{doc}"
    );
    let events = c.events("orphan");
    let enders: Vec<String> = events
        .iter()
        .filter(|(k, _)| k == "run_completed")
        .map(|(_, p)| p["phase"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(enders, ["Completed"]);
    a.stop();
}
