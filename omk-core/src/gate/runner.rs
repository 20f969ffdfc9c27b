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
const PIPE_GRACE: Duration = Duration::from_millis(500);

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

/// What one captured stream produced.
struct Captured {
    text: String,
    file: Option<PathBuf>,
}

/// One output stream being captured: its first and last [`KEEP_BYTES`] for
/// the result, and the whole of it, redacted a block of whole lines at a
/// time, in an artifact file created on the first byte.
struct Capture {
    artifact: PathBuf,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    /// Bytes not yet written to the artifact (an unfinished line).
    pending: Vec<u8>,
    file: Option<File>,
    written: u64,
}

impl Capture {
    fn new(artifact: PathBuf) -> Capture {
        Capture {
            artifact,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            pending: Vec::new(),
            file: None,
            written: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = KEEP_BYTES.saturating_sub(self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..room]);
        if data.len() > room {
            self.tail.extend(&data[room..]);
            let excess = self.tail.len().saturating_sub(KEEP_BYTES);
            self.tail.drain(..excess);
        }
        // Redact whole lines, in blocks of about 64 KiB (a line with no end
        // is cut at 256 KiB).
        self.pending.extend_from_slice(data);
        if self.pending.len() >= 64 * 1024 {
            match self.pending.iter().rposition(|b| *b == b'\n') {
                Some(end) => {
                    let rest = self.pending.split_off(end + 1);
                    self.flush();
                    self.pending = rest;
                }
                None if self.pending.len() >= 256 * 1024 => self.flush(),
                None => {}
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() || self.written >= ARTIFACT_MAX_BYTES {
            self.pending.clear();
            return;
        }
        if self.file.is_none() {
            self.file = File::create(&self.artifact).ok();
        }
        if let Some(f) = self.file.as_mut() {
            let text = String::from_utf8_lossy(&self.pending);
            let red = crate::redact::redact_str(&text);
            let n = red.len().min((ARTIFACT_MAX_BYTES - self.written) as usize);
            if f.write_all(&red.as_bytes()[..n]).is_ok() {
                self.written += n as u64;
            }
        }
        self.pending.clear();
    }

    fn finish(mut self) -> Captured {
        self.flush();
        let kept = self.head.len() as u64 + self.tail.len() as u64;
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.total > kept {
            text.push_str(&format!(
                "\n…[{} bytes omitted; full output in {}]…\n",
                self.total - kept,
                self.artifact.display()
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        text.push_str(&String::from_utf8_lossy(&tail));
        Captured {
            text: crate::redact::redact_str(&text).into_owned(),
            file: self.file.map(|_| self.artifact),
        }
    }
}

/// A child's output pipe and its capture.
struct Stream<R> {
    pipe: Option<R>,
    capture: Capture,
}

/// Read whatever both pipes have, in this thread (poll(2), no reader
/// threads), until both are closed, `deadline` passes, or — when `child` is
/// given — the child has exited (its output is then drained for at most
/// [`PIPE_GRACE`], since a process that left its group may hold the pipes).
fn pump(
    out: &mut Stream<std::process::ChildStdout>,
    err: &mut Stream<std::process::ChildStderr>,
    deadline: Instant,
    mut child: Option<&mut std::process::Child>,
) -> PumpEnd {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited = None;
    let mut deadline = deadline;
    while out.pipe.is_some() || err.pipe.is_some() {
        if exited.is_none() {
            if let Some(c) = child.as_deref_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    exited = Some(status);
                    deadline = deadline.min(Instant::now() + PIPE_GRACE);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Wake at least every 50 ms to notice the child's exit.
        let wait_ms = left
            .as_millis()
            .min(if child.is_some() && exited.is_none() {
                50
            } else {
                60_000
            }) as i32
            + 1;
        let timeout = PollTimeout::try_from(wait_ms).unwrap_or(PollTimeout::MAX);
        let (mut out_ready, mut err_ready) = (false, false);
        {
            let mut fds = Vec::with_capacity(2);
            if let Some(p) = &out.pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &err.pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            if out.pipe.is_some() {
                out_ready = it.next().is_some_and(ready);
            }
            if err.pipe.is_some() {
                err_ready = it.next().is_some_and(ready);
            }
        }
        if out_ready {
            read_once(&mut out.pipe, &mut out.capture, &mut buf);
        }
        if err_ready {
            read_once(&mut err.pipe, &mut err.capture, &mut buf);
        }
    }
    match exited {
        Some(status) => PumpEnd::Exited(status),
        None if out.pipe.is_none() && err.pipe.is_none() => PumpEnd::Closed,
        None => PumpEnd::Deadline,
    }
}

/// Why [`pump`] returned.
enum PumpEnd {
    /// Both pipes closed; the child may still run.
    Closed,
    /// The child exited (pipes drained or their grace is over).
    Exited(std::process::ExitStatus),
    /// The deadline passed first.
    Deadline,
}

/// One read from a pipe poll(2) said is ready; EOF or an error closes it.
fn read_once<R: Read>(pipe: &mut Option<R>, capture: &mut Capture, buf: &mut [u8]) {
    if let Some(p) = pipe.as_mut() {
        match p.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => capture.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => *pipe = None,
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
    let mut out = Stream {
        pipe: child.stdout.take(),
        capture: Capture::new(base.with_extension("stdout")),
    };
    let mut err = Stream {
        pipe: child.stderr.take(),
        capture: Capture::new(base.with_extension("stderr")),
    };
    let deadline = started + Duration::from_secs(spec.timeout_secs.max(1));
    // Output first (a full pipe would block the gate), then its exit.
    let mut status = match pump(&mut out, &mut err, deadline, Some(&mut child)) {
        PumpEnd::Exited(s) => Some(s),
        PumpEnd::Deadline => None,
        // Both pipes closed: usually the gate is exiting right now, but it
        // may have closed them and kept running. Back off from 20 µs.
        PumpEnd::Closed => {
            let mut nap = Duration::from_micros(20);
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() >= deadline => break None,
                    Ok(None) => {
                        std::thread::sleep(nap);
                        nap = (nap * 2).min(Duration::from_millis(5));
                    }
                    Err(_) => break None,
                }
            }
        }
    };
    if status.is_none() {
        result.timed_out = true;
        crate::process::kill_group(pid);
        status = child.wait().ok();
    }
    // Nothing the gate started outlives it.
    crate::process::kill_group(pid);
    if result.timed_out {
        // Take what the killed group left in the pipes (bounded: a process
        // that escaped the group may hold them open).
        pump(&mut out, &mut err, Instant::now() + PIPE_GRACE, None);
    }
    let (o, e) = (out.capture.finish(), err.capture.finish());
    result.stdout = o.text;
    result.stdout_file = o.file;
    result.stderr = e.text;
    result.stderr_file = e.file;
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
    fn a_gate_that_closes_its_output_still_times_out() {
        let d = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let r = run_gate(
            &spec("quiet", "echo bye; exec >&- 2>&-; sleep 30", 1),
            d.path(),
            d.path(),
        );
        assert!(r.timed_out && !r.passed, "{r:?}");
        assert_eq!(r.stdout, "bye\n");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_escaped_process_holding_the_pipe_delays_the_result_only_boundedly() {
        let d = tempfile::tempdir().unwrap();
        let t = Instant::now();
        // setsid moves the sleeper out of the gate's process group with the pipe.
        let r = run_gate(
            &spec("escape", "setsid sleep 4 & echo started", 30),
            d.path(),
            d.path(),
        );
        assert!(r.passed && !r.timed_out, "{r:?}");
        assert!(r.stdout.starts_with("started"), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("cargo test"), "cargo-test");
        assert_eq!(slug("../x/y"), "x-y");
    }
}
