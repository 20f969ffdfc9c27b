//! Running one gate: its own process group in the project dir, a timeout
//! that kills the whole group, and output captured without unbounded memory.
//!
//! Each stream is written in full (redacted line by line, up to
//! [`ARTIFACT_MAX_BYTES`]) to an artifact file created on its first byte;
//! the result document keeps the first and last [`KEEP_BYTES`] of it with a
//! truncation marker in between.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::breaker::BreakerState;
use super::config::{GateCommand, GateSpec};

/// Bytes kept from the start and from the end of each stream in a result.
pub const KEEP_BYTES: usize = 16 * 1024;
/// Most bytes of one stream written to its artifact file.
pub const ARTIFACT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// How long to wait for output pipes after the gate's group is gone (a
/// process that left the group may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The outcome of one gate (the API.md goal-proof `gates` entry, plus where
/// the full output is and what the breaker did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub passed: bool,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub required: bool,
    pub command_line: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Not run because its breaker is open.
    #[serde(default)]
    pub skipped: bool,
    #[serde(default)]
    pub skip_reason: Option<String>,
    #[serde(default)]
    pub stdout_file: Option<PathBuf>,
    #[serde(default)]
    pub stderr_file: Option<PathBuf>,
    /// The breaker after this result.
    #[serde(default)]
    pub breaker: Option<BreakerState>,
    #[serde(default)]
    pub origin: String,
}

impl GateResult {
    /// A result for `spec` that has not run yet (failed until shown otherwise).
    fn for_spec(spec: &GateSpec) -> GateResult {
        GateResult {
            name: spec.name.clone(),
            passed: false,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            required: spec.required,
            command_line: crate::redact::redact_str(&spec.command.command_line()).into_owned(),
            exit_code: None,
            timed_out: false,
            skipped: false,
            skip_reason: None,
            stdout_file: None,
            stderr_file: None,
            breaker: None,
            origin: spec.origin.clone(),
        }
    }

    /// A gate that was not run.
    pub fn skipped(spec: &GateSpec, reason: String) -> GateResult {
        GateResult {
            skipped: true,
            skip_reason: Some(reason),
            ..GateResult::for_spec(spec)
        }
    }
}

/// File-name-safe form of a gate name.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches(|c| c == '-' || c == '.').to_string()
}

/// What a stream reader produced.
struct Captured {
    text: String,
    file: Option<PathBuf>,
}

/// Read a stream to its end: keep head and tail, write the whole (redacted)
/// to `artifact` once there is something to write.
fn capture(mut stream: impl Read, artifact: PathBuf) -> Captured {
    let mut head = Vec::with_capacity(1024);
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut total: u64 = 0;
    let mut file: Option<File> = None;
    let mut written: u64 = 0;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let flush_pending = |pending: &mut Vec<u8>, file: &mut Option<File>, written: &mut u64| {
        if pending.is_empty() || *written >= ARTIFACT_MAX_BYTES {
            pending.clear();
            return;
        }
        if file.is_none() {
            *file = File::create(&artifact).ok();
        }
        if let Some(f) = file.as_mut() {
            let text = String::from_utf8_lossy(pending);
            let red = crate::redact::redact_str(&text);
            let room = (ARTIFACT_MAX_BYTES - *written) as usize;
            let bytes = red.as_bytes();
            let n = bytes.len().min(room);
            if f.write_all(&bytes[..n]).is_ok() {
                *written += n as u64;
            }
        }
        pending.clear();
    };
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &chunk[..n];
        total += n as u64;
        let room = KEEP_BYTES.saturating_sub(head.len());
        head.extend_from_slice(&data[..room.min(n)]);
        if n > room {
            tail.extend(&data[room.min(n)..]);
            let excess = tail.len().saturating_sub(KEEP_BYTES);
            tail.drain(..excess);
        }
        // Redact whole lines, in blocks of about 64 KiB (a line with no end
        // is cut at 256 KiB).
        pending.extend_from_slice(data);
        if pending.len() >= 64 * 1024 {
            match pending.iter().rposition(|b| *b == b'\n') {
                Some(end) => {
                    let rest = pending.split_off(end + 1);
                    flush_pending(&mut pending, &mut file, &mut written);
                    pending = rest;
                }
                None if pending.len() >= 256 * 1024 => {
                    flush_pending(&mut pending, &mut file, &mut written)
                }
                None => {}
            }
        }
    }
    flush_pending(&mut pending, &mut file, &mut written);
    let kept = head.len() as u64 + tail.len() as u64;
    let mut text = String::from_utf8_lossy(&head).into_owned();
    if total > kept {
        text.push_str(&format!(
            "\n…[{} bytes omitted; full output in {}]…\n",
            total - kept,
            artifact.display()
        ));
    }
    let tail: Vec<u8> = tail.into_iter().collect();
    text.push_str(&String::from_utf8_lossy(&tail));
    Captured {
        text: crate::redact::redact_str(&text).into_owned(),
        file: file.map(|_| artifact),
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Run one gate in `project`, writing artifacts under `artifacts`.
pub fn run_gate(spec: &GateSpec, project: &Path, artifacts: &Path) -> GateResult {
    let started = Instant::now();
    let mut result = GateResult::for_spec(spec);
    let mut cmd = match &spec.command {
        GateCommand::Shell(s) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(s);
            c
        }
        GateCommand::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let dir = spec
        .cwd
        .as_ref()
        .map_or_else(|| project.to_path_buf(), |c| project.join(c));
    if !spec.env.is_empty() {
        cmd.envs(&spec.env);
    }
    cmd.current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            result.stderr = format!(
                "cannot start `{}` in {}: {e}",
                result.command_line,
                dir.display()
            );
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    let pid = child.id();
    let base = artifacts.join(slug(&spec.name));
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (out_path, err_path) = (base.with_extension("stdout"), base.with_extension("stderr"));
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    if let Some(out) = out {
        std::thread::spawn(move || {
            let _ = tx_out.send(capture(out, out_path));
        });
    }
    if let Some(err) = err {
        std::thread::spawn(move || {
            let _ = tx_err.send(capture(err, err_path));
        });
    }
    let (tx_exit, rx_exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx_exit.send(child.wait());
    });
    let timeout = Duration::from_secs(spec.timeout_secs.max(1));
    let status = match rx_exit.recv_timeout(timeout) {
        Ok(s) => s.ok(),
        Err(_) => {
            result.timed_out = true;
            kill_group(pid);
            rx_exit.recv_timeout(PIPE_GRACE).ok().and_then(|s| s.ok())
        }
    };
    // Nothing the gate started outlives it.
    kill_group(pid);
    let deadline = Instant::now() + PIPE_GRACE;
    let wait = |rx: mpsc::Receiver<Captured>| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    };
    if let Some(c) = wait(rx_out) {
        result.stdout = c.text;
        result.stdout_file = c.file;
    }
    if let Some(c) = wait(rx_err) {
        result.stderr = c.text;
        result.stderr_file = c.file;
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    match status {
        Some(s) => {
            result.exit_code = s.code().or_else(|| s.signal().map(|sig| 128 + sig));
            result.passed = s.success() && !result.timed_out;
        }
        None => result.passed = false,
    }
    if result.timed_out {
        result.stderr.push_str(&format!(
            "\n[omk: timed out after {}s; the gate's process group was killed]",
            spec.timeout_secs
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cmd: &str, timeout: u64) -> GateSpec {
        GateSpec {
            name: name.into(),
            command: GateCommand::Shell(cmd.into()),
            timeout_secs: timeout,
            required: true,
            env: Default::default(),
            cwd: None,
            origin: "test".into(),
        }
    }

    #[test]
    fn pass_fail_and_exit_codes() {
        let d = tempfile::tempdir().unwrap();
        let ok = run_gate(&spec("ok", "echo hi; echo err >&2", 5), d.path(), d.path());
        assert!(ok.passed && ok.exit_code == Some(0) && !ok.timed_out);
        assert_eq!((ok.stdout.as_str(), ok.stderr.as_str()), ("hi\n", "err\n"));
        assert_eq!(
            std::fs::read_to_string(ok.stdout_file.unwrap()).unwrap(),
            "hi\n"
        );
        let bad = run_gate(&spec("bad", "exit 3", 5), d.path(), d.path());
        assert!(!bad.passed && bad.exit_code == Some(3));
        assert!(bad.stdout_file.is_none(), "no artifact for empty output");
    }

    #[test]
    fn spawn_errors_are_failures_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec("missing", "", 5);
        s.command = GateCommand::Argv(vec!["/no/such/binary".into()]);
        let r = run_gate(&s, d.path(), d.path());
        assert!(!r.passed && r.exit_code.is_none());
        assert!(r.stderr.contains("cannot start"), "{}", r.stderr);
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("cargo test"), "cargo-test");
        assert_eq!(slug("../x/y"), "x-y");
    }
}
