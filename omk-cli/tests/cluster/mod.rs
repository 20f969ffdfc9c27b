//! Hosts for the `omk worker` tests: a database of their own in the
//! test's PostgreSQL, `omk worker` daemons each in its own network and pid
//! namespace, and a dashboard in a third process. Shared by the test
//! binaries that include it (`mod cluster;`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omk_core::pg::tasks::TaskRecord;
use omk_core::pg::PgStore;
use serde_json::Value;

/// omk-core's test helpers for PostgreSQL (`pg_env`, `pg_fresh_db`,
/// `pg_ctl`), shared rather than copied.
#[path = "../../../omk-core/tests/common/mod.rs"]
pub mod pg;

pub use pg::pg_env as required;

/// A database of its own in the test's PostgreSQL (`url`, the admin
/// one): the store on it, and its URL over TCP.
pub fn database(rt: &tokio::runtime::Runtime, url: &str) -> (PgStore, String) {
    rt.block_on(async {
        let tcp_url = pg::pg_fresh_db(url).await;
        (PgStore::connect(&tcp_url).await.unwrap(), tcp_url)
    })
}

pub fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub store: PgStore,
    /// The database's URL through the unix socket (what hosts use).
    pub socket_url: String,
    /// The database's URL over TCP (what `omk team run` here uses).
    pub tcp_url: String,
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Option<Cluster> {
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
        crate::common::agent_bin();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (store, tcp_url) = database(&rt, &url);
        let db = tcp_url.rsplit_once('/').unwrap().1.to_string();
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
    /// Submit team `team` of four workers (the two hosts' slots).
    pub fn submit(&self, team: &str, prompts: &[&str], max_attempts: i32) {
        self.submit_as(team, "4:executor", prompts, max_attempts)
    }

    /// Submit team `team` of workers `spec` (`N:role`, N its cap on running
    /// tasks).
    pub fn submit_as(&self, team: &str, spec: &str, prompts: &[&str], max_attempts: i32) {
        let mut config = omk_core::Config::default();
        config.team.max_attempts = max_attempts as u32;
        let req = omk_core::team::TeamRunRequest {
            spec: spec.into(),
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

    pub fn team_doc(&self, team: &str) -> Value {
        self.rt
            .block_on(self.store.team_doc(team))
            .unwrap()
            .unwrap()
    }

    /// `omk team run --store` from this host (TCP), with `lease_secs`.
    pub fn team_run(&self, name: &str, lease_secs: u64, subtasks: &[&str]) -> Command {
        self.team_run_task(name, lease_secs, "a distributed task", subtasks)
    }

    /// [`Cluster::team_run`] of `task`.
    pub fn team_run_task(
        &self,
        name: &str,
        lease_secs: u64,
        task: &str,
        subtasks: &[&str],
    ) -> Command {
        let dir = self.tmp.path().join(format!("submitter-{name}"));
        std::fs::create_dir_all(dir.join("xdg")).unwrap();
        std::fs::write(
            dir.join("omk.toml"),
            format!("[team]\nlease_secs = {lease_secs}\n"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
        cmd.args(["team", "run", "2:executor", task, "--name", name, "--json"])
            .args(["--store", &self.tcp_url])
            .env("OMK_STATE_DIR", dir.join("state"))
            .env("OMK_CONFIG", dir.join("omk.toml"))
            .env("OMK_KIMI_BIN", crate::common::agent_bin())
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

    pub fn tasks(&self, team: &str) -> Vec<TaskRecord> {
        self.rt.block_on(self.store.tasks(team)).unwrap()
    }

    pub fn events(&self, team: &str) -> Vec<(String, Value)> {
        self.rt
            .block_on(self.store.events_after(Some(team), 0, 10_000))
            .unwrap()
            .into_iter()
            .map(|e| (e.event.kind.as_str().to_string(), e.event.payload))
            .collect()
    }

    /// A host: `omk worker` alone in new network and pid namespaces.
    pub fn host(&self, name: &str, lease_secs: u64, max_agents: usize) -> Host {
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
            .env("OMK_KIMI_BIN", crate::common::agent_bin())
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
    pub fn wait_tasks(
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

pub struct Host {
    pub name: String,
    pub child: Option<Child>,
    #[allow(dead_code)]
    pub dir: PathBuf,
}

impl Host {
    /// The `omk worker` process (pid 1 of its namespace), as the host sees it.
    pub fn worker_pid(&self) -> i32 {
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

    pub fn signal(&self, pid: i32, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// SIGKILL the whole host: unshare dies, its child (--kill-child) and
    /// with it the namespace, agents included.
    pub fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM the worker and collect its report.
    pub fn stop(&mut self) -> Value {
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

pub fn holder_host(t: &TaskRecord) -> String {
    t.holder
        .clone()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What a finished `omk team run --json` left: its exit code and the team
/// document it printed (panics, showing its stderr, when it printed none).
pub fn team_result(out: std::process::Output) -> (Option<i32>, Value) {
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), doc)
}

/// Whether every task of a team document completed.
pub fn all_completed(doc: &Value) -> bool {
    doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "completed")
}

pub fn completed_by(t: &TaskRecord) -> String {
    t.result
        .as_ref()
        .and_then(|r| r["holder"].as_str())
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `omk dashboard --store` in a third process: the team documents its
/// `/api/events` sends as the team runs over two hosts.
pub struct Dashboard {
    pub child: Child,
    pub addr: String,
}

impl Dashboard {
    pub fn start(c: &Cluster) -> Dashboard {
        use std::io::BufRead;
        let dir = c.tmp.path().join("dashboard");
        std::fs::create_dir_all(dir.join("xdg")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_omk"))
            .args(["dashboard", "--bind", "127.0.0.1:0", "--store", &c.tcp_url])
            .env("OMK_STATE_DIR", dir.join("state"))
            .env("XDG_CONFIG_HOME", dir.join("xdg"))
            .env_remove("OMK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit_once("http://")
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .1
            .to_string();
        Dashboard { child, addr }
    }

    pub fn get(&self, path: &str) -> Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {raw}");
        let body = if head.to_ascii_lowercase().contains("chunked") {
            let mut out = Vec::new();
            let mut r = SseReader::new(body.as_bytes());
            while let Some(chunk) = r.chunk() {
                out.extend(chunk);
            }
            String::from_utf8(out).unwrap()
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `/api/events`, as a thread sending every `team` event's data.
    pub fn team_events(&self) -> std::sync::mpsc::Receiver<Value> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(s, "GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = SseReader::new(s);
            r.head();
            let mut text = String::new();
            let mut kind = String::new();
            while let Some(chunk) = r.chunk() {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some((line, rest)) = text.split_once('\n') {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k.to_string();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        if kind == "team" && tx.send(serde_json::from_str(data).unwrap()).is_err() {
                            return;
                        }
                    }
                    text = rest.to_string();
                }
            }
        });
        rx
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTP/1.1 chunked transfer coding, read as it arrives.
pub struct SseReader<R: std::io::Read> {
    r: std::io::BufReader<R>,
}

impl<R: std::io::Read> SseReader<R> {
    pub fn new(r: R) -> Self {
        SseReader {
            r: std::io::BufReader::new(r),
        }
    }

    pub fn line(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_string()),
        }
    }

    /// Skip the response head.
    pub fn head(&mut self) {
        while let Some(l) = self.line() {
            if l.is_empty() {
                return;
            }
        }
    }

    pub fn chunk(&mut self) -> Option<Vec<u8>> {
        use std::io::Read;
        let size = usize::from_str_radix(self.line()?.trim(), 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut buf = vec![0; size + 2];
        self.r.read_exact(&mut buf).ok()?;
        buf.truncate(size);
        Some(buf)
    }
}
