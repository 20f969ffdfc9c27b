//! The process side of an agent, shared by every protocol: a child in its
//! own process group whose stdin and stdout carry one JSON-RPC message per
//! line, whose stderr is kept as a short tail for error reports.
//!
//! A [`Peer`] owns the pipes. Its reader reads stdout one bounded line at a
//! time ([`MAX_LINE_BYTES`]), counts the line as activity and hands it to the
//! backend's [`LineSink`]; the backend classifies it and resolves responses
//! through [`Peer::resolve`]. Requests wait in a pending map keyed by their
//! id; when stdout closes every waiter, and every later request, learns that
//! the agent is gone and how it ended.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use super::input::AgentInput;
use super::protocol::{RpcError, MAX_LINE_BYTES};
use super::{AgentNotice, BoxFuture, NoticeSender};
use crate::error::{Error, Result};

/// How much of the agent's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// The answer to one of omk's requests: the result or the JSON-RPC error.
pub type Answer = std::result::Result<Value, RpcError>;

/// What a backend does with each line the agent sends.
pub trait LineSink: Send + Sync + 'static {
    /// Handle one complete line (without its length cap exceeded). Awaiting
    /// here holds the reader, and so the agent's writes: backpressure.
    fn line<'a>(&'a self, text: &'a str) -> BoxFuture<'a, ()>;

    /// Everything the agent had sent so far is handled (the reader is about
    /// to wait for more). A backend that defers an answer until the lines
    /// sent right after it are seen (ACP updates that trail their prompt
    /// response) delivers it here.
    fn idle(&self) {}
}

struct State {
    pending: HashMap<String, oneshot::Sender<Answer>>,
    violations: u64,
    last_activity: Instant,
    /// Why omk stopped the agent itself (an over-long line), if it did.
    fatal: Option<String>,
    /// The agent's stdout is closed: no response will come.
    output_closed: bool,
}

/// A running agent process and its pipes.
pub struct Peer {
    pid: u32,
    stdin: AgentInput,
    state: Mutex<State>,
    stderr: Mutex<VecDeque<u8>>,
    notices: NoticeSender,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Peer {
    /// Spawn `cmd` (stdio piped, its own process group, killed on drop) and
    /// start the tasks that wait for its exit and keep its stderr tail.
    /// `what` names the agent in the error when it cannot start. Call
    /// [`Peer::read`] with the returned stdout once the backend exists.
    pub fn spawn(
        mut cmd: Command,
        notices: NoticeSender,
        what: &str,
    ) -> Result<(Arc<Peer>, ChildStdout)> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Agent(format!("cannot start agent {what}: {e}")))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Agent("agent has no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::Agent("agent has no stderr".into()))?;
        let (exit_tx, exit_rx) = watch::channel(None);
        let peer = Arc::new(Peer {
            pid,
            stdin: AgentInput::spawn(stdin),
            state: Mutex::new(State {
                pending: HashMap::new(),
                violations: 0,
                last_activity: Instant::now(),
                fatal: None,
                output_closed: false,
            }),
            stderr: Mutex::new(VecDeque::new()),
            notices,
            exit: exit_rx,
        });
        tokio::spawn(wait_for_exit(child, exit_tx));
        tokio::spawn(read_stderr(stderr, peer.clone()));
        Ok((peer, stdout))
    }

    /// Start reading the agent's stdout into `sink`.
    pub fn read(self: &Arc<Self>, stdout: ChildStdout, sink: Arc<dyn LineSink>) {
        tokio::spawn(read_stdout(stdout, self.clone(), sink));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// OS process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where notices go.
    pub fn notices(&self) -> &NoticeSender {
        &self.notices
    }

    /// Send `line`, a request whose id is `key` (the id as
    /// [`id_key`] spells it), and wait for its answer. `method` names the
    /// request in errors.
    pub async fn request(&self, key: String, line: &str, method: &str) -> Result<Answer> {
        let (tx, rx) = oneshot::channel();
        let closed = {
            let mut st = self.state();
            if !st.output_closed {
                st.pending.insert(key.clone(), tx);
            }
            st.output_closed
        };
        if closed {
            // No answer can ever arrive.
            return Err(self.gone_error(method).await);
        }
        if let Err(e) = self.write_line(line).await {
            self.state().pending.remove(&key);
            // A broken pipe means the agent exited (or closed its input):
            // say which, as for a closed output.
            let running = format!("stopped reading its input ({e})");
            return Err(self.gone_or(method, &running).await);
        }
        match rx.await {
            Ok(r) => Ok(r),
            Err(_) => Err(self.gone_error(method).await),
        }
    }

    /// Hand the answer with id `key` to its waiter; false when nobody waits
    /// for it (an answer to nothing omk asked).
    pub fn resolve(&self, key: &str, answer: Answer) -> bool {
        let waiter = self.state().pending.remove(key);
        match waiter {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// Write one line (a notification or an answer) to the agent.
    pub async fn write_line(&self, line: &str) -> Result<()> {
        self.stdin.write_line(line).await
    }

    /// Close the agent's stdin (after the writes already queued).
    pub fn close_input(&self) {
        self.stdin.close();
    }

    /// Count an invalid line and report it (its start, redacted).
    pub async fn violation(&self, text: &str, reason: String) {
        self.state().violations += 1;
        let mut shown: String = text.chars().take(512).collect();
        shown = crate::redact::redact_str(&shown).into_owned();
        let _ = self
            .notices
            .send(AgentNotice::ProtocolViolation {
                line: shown,
                reason,
            })
            .await;
    }

    /// Invalid lines so far.
    pub fn violations(&self) -> u64 {
        self.state().violations
    }

    /// Stop the agent because of `why` (kept for the error reports) and kill
    /// its process group.
    pub fn fail(&self, why: String) {
        self.state().fatal.get_or_insert(why);
        crate::process::kill_group(self.pid);
    }

    /// When the agent last sent anything (or closed its output).
    pub fn last_activity(&self) -> Instant {
        self.state().last_activity
    }

    /// The exit status, once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// The last few KiB of stderr, redacted.
    pub fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        crate::redact::redact_str(String::from_utf8_lossy(&bytes).trim()).into_owned()
    }

    /// Describe why the agent stopped answering, waiting briefly for its
    /// exit status so the message can name it.
    pub async fn gone_error(&self, during: &str) -> Error {
        self.gone_or(during, "closed its output").await
    }

    /// The agent's end, described: how it exited (waiting up to 500 ms for
    /// that: a closed output usually means an exit), or `if_running` when
    /// it is still running.
    pub async fn gone_or(&self, during: &str, if_running: &str) -> Error {
        let status = self.wait_exit(Duration::from_millis(500)).await;
        let fatal = self.state().fatal.clone();
        let how = match (fatal, status) {
            (Some(why), _) => format!("was stopped: {why}"),
            (None, Some(s)) => describe_exit(s),
            (None, None) => if_running.to_string(),
        };
        let tail = self.stderr_tail();
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; stderr: {tail}")
        };
        Error::Agent(format!(
            "agent (pid {}) {how} during {during}{tail}",
            self.pid
        ))
    }

    /// The exit status once known, waiting at most `limit`.
    pub async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, async {
            let r = exit.wait_for(|s| s.is_some()).await;
            r.ok().and_then(|s| *s)
        });
        waited.await.ok().flatten()
    }

    /// Close stdin, wait up to `grace` for the exit, then kill the group
    /// (and whatever the agent left in it).
    pub async fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.stdin.close();
        if self.wait_exit(grace).await.is_none() {
            crate::process::kill_group(self.pid);
        }
        let status = self.wait_exit(Duration::from_secs(5)).await;
        crate::process::kill_group(self.pid);
        status
    }

    /// Kill the process group now.
    pub fn kill(&self) {
        crate::process::kill_group(self.pid);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Never leave an agent running behind a dropped handle.
        if self.exit.borrow().is_none() {
            crate::process::kill_group(self.pid);
        }
    }
}

/// The pending-map key of a JSON-RPC id: a string as it is, a number in
/// decimal; `None` for other ids.
pub fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// How an exit reads in an error message.
pub fn describe_exit(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

async fn wait_for_exit(mut child: Child, exit: watch::Sender<Option<ExitStatus>>) {
    let status = child.wait().await.ok();
    let _ = exit.send(status.or(Some(ExitStatus::from_raw(-1))));
}

async fn read_stderr(mut stderr: tokio::process::ChildStderr, peer: Arc<Peer>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let mut buf = peer.stderr.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(&chunk[..n]);
        let excess = buf.len().saturating_sub(STDERR_TAIL_BYTES);
        buf.drain(..excess);
    }
}

async fn read_stdout(stdout: ChildStdout, peer: Arc<Peer>, sink: Arc<dyn LineSink>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line).await {
            Ok(Line::End) | Err(_) => break,
            Ok(Line::Complete) => {}
            Ok(Line::TooLong) => {
                // Nothing after a line omk cannot hold can be trusted (the
                // rest of the line is not read): a protocol violation that
                // ends the agent, so its worker is replaced and the task
                // retried, with the start of the line kept as evidence.
                let reason = format!(
                    "the agent sent a line longer than the {} MiB cap",
                    MAX_LINE_BYTES >> 20
                );
                let start = String::from_utf8_lossy(&line[..line.len().min(512)]).into_owned();
                peer.violation(&start, reason.clone()).await;
                peer.fail(reason);
                break;
            }
        }
        peer.state().last_activity = Instant::now();
        let text = String::from_utf8_lossy(&line);
        sink.line(&text).await;
        if reader.buffer().is_empty() {
            sink.idle();
        }
    }
    sink.idle();
    // Output closed: every waiter learns the agent is gone, and so does
    // every later request.
    let mut st = peer.state();
    st.output_closed = true;
    // The end of the output is news too: the lease counts from it.
    st.last_activity = Instant::now();
    st.pending.clear();
}

/// What [`read_bounded_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (its `\n`, or the last bytes before end of output).
    Complete,
    /// End of output, nothing read.
    End,
    /// More than [`MAX_LINE_BYTES`] without a newline: `out` holds the
    /// first `MAX_LINE_BYTES`, the rest is left unread.
    TooLong,
}

/// Read one `\n`-terminated line, never buffering more than
/// [`MAX_LINE_BYTES`].
async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if out.is_empty() {
                Line::End
            } else {
                Line::Complete
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let len = chunk.len();
        if out.len() + len > MAX_LINE_BYTES + usize::from(done) {
            let room = MAX_LINE_BYTES - out.len();
            out.extend_from_slice(&chunk[..room]);
            reader.consume(room);
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(chunk);
        reader.consume(len);
        if done {
            return Ok(Line::Complete);
        }
    }
}
