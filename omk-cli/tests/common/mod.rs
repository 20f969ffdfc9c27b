//! What the CLI integration tests share: the scripted agent, a temp state
//! root and project (`Fx`), and output helpers. Each test file uses part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_omk")).with_file_name("omk-scripted-agent");
        if !bin.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-p", "omk-scripted-agent"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build -p omk-scripted-agent");
            assert!(ok.success());
        }
        bin
    })
}

pub struct Fx {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub project: PathBuf,
}

impl Fx {
    /// A project whose `.omk/gates.toml` holds `gates`.
    pub fn new(gates: &str) -> Fx {
        agent_bin();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let project = root.join("project");
        std::fs::create_dir_all(project.join(".omk")).unwrap();
        std::fs::create_dir_all(root.join("xdg")).unwrap();
        std::fs::write(project.join(".omk/gates.toml"), gates).unwrap();
        std::fs::write(
            root.join("omk.toml"),
            "[team]\nlease_secs = 20\nretry_backoff_ms = 50\nheartbeat_secs = 1\nstop_grace_secs = 2\n",
        )
        .unwrap();
        Fx {
            state: root.join("state"),
            project,
            root,
            _tmp: tmp,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
        cmd.args(args)
            .env("OMK_STATE_DIR", &self.state)
            .env("OMK_CONFIG", self.root.join("omk.toml"))
            .env("OMK_KIMI_BIN", agent_bin())
            .env("XDG_CONFIG_HOME", self.root.join("xdg"))
            .env("NO_COLOR", "1")
            .env_remove("OMK_KIMI_ARGS")
            .env_remove("OMK_AGENT_PROTOCOL")
            .env_remove("OMK_SCRIPTED_BEHAVIOUR")
            .current_dir(&self.project)
            .stdin(Stdio::null());
        cmd
    }

    pub fn omk(&self, args: &[&str]) -> Output {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("omk {args:?} did not finish within 90 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.omk(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "omk {args:?}: not JSON ({e}); stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn goal_dir(&self, id: &str) -> PathBuf {
        self.state.join("goal").join(id)
    }
}

/// `git ARGS` in `dir` as a test user; panics unless it succeeds.
#[allow(dead_code)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
