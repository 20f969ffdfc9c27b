//! The Kimi Wire 1.10 backend: `kimi --wire --work-dir DIR` over stdio.
//!
//! Rules learned on the real peer (WIRE.md): string ids only; one prompt in
//! flight; the `prompt` response, not `TurnEnd`, ends a turn; every request
//! from the agent gets an answer or the agent waits forever; unknown events
//! and fields are tolerated; graceful stop is closing stdin.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

use super::input::AgentInput;
use super::protocol::{
    self, codes, AgentRequest, Incoming, RpcError, TurnRecord, TurnStatus, MAX_LINE_BYTES,
};
use super::{
    AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, BoxFuture, NoticeSender, TurnOutcome,
};
use crate::error::{Error, Result};

/// How much of the agent's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

type Pending = HashMap<String, oneshot::Sender<std::result::Result<Value, RpcError>>>;

struct State {
    pending: Pending,
    turn: TurnRecord,
    violations: u64,
    last_activity: Instant,
    /// Why omk stopped the agent itself (an over-long line), if it did.
    fatal: Option<String>,
    /// The agent's stdout is closed: no response will come.
    output_closed: bool,
}

struct Shared {
    pid: u32,
    stdin: AgentInput,
    state: Mutex<State>,
    stderr: Mutex<VecDeque<u8>>,
    notices: NoticeSender,
    policy: ApprovalPolicy,
    work_dir: std::path::PathBuf,
    next_id: AtomicU64,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// A running Wire agent. Cheap to share (`Arc`).
pub struct WireAgent {
    shared: Arc<Shared>,
}

impl WireAgent {
    /// Spawn the agent in its own process group and complete the
    /// `initialize` handshake (falling back to no handshake if the agent
    /// predates it).
    pub async fn start(spec: &AgentSpec, notices: NoticeSender) -> Result<Arc<WireAgent>> {
        let mut cmd = Command::new(&spec.program);
        cmd.arg("--wire")
            .arg("--work-dir")
            .arg(&spec.work_dir)
            .args(&spec.extra_args)
            .current_dir(&spec.work_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::Agent(format!(
                "cannot start agent {}: {e}; install kimi-cli or set OMK_KIMI_BIN",
                spec.program.display()
            ))
        })?;
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
        let shared = Arc::new(Shared {
            pid,
            stdin: AgentInput::spawn(stdin),
            state: Mutex::new(State {
                pending: HashMap::new(),
                turn: TurnRecord::default(),
                violations: 0,
                last_activity: Instant::now(),
                fatal: None,
                output_closed: false,
            }),
            stderr: Mutex::new(VecDeque::new()),
            notices,
            policy: spec.policy.clone(),
            work_dir: spec.work_dir.clone(),
            next_id: AtomicU64::new(1),
            exit: exit_rx,
        });
        tokio::spawn(wait_for_exit(child, exit_tx));
        tokio::spawn(read_stderr(stderr, shared.clone()));
        tokio::spawn(read_stdout(stdout, shared.clone()));
        let agent = Arc::new(WireAgent { shared });
        match tokio::time::timeout(
            spec.start_timeout,
            agent.request("initialize", protocol::initialize_params(spec.questions)),
        )
        .await
        {
            Ok(Ok(Ok(_))) => Ok(agent),
            // Agents before Wire 1.1 have no handshake: carry on without one.
            Ok(Ok(Err(e))) if e.code == codes::METHOD_NOT_FOUND => Ok(agent),
            Ok(Ok(Err(e))) => {
                agent.kill();
                Err(Error::Agent(format!(
                    "agent refused initialize: {} ({})",
                    e.message, e.code
                )))
            }
            Ok(Err(e)) => {
                agent.kill();
                Err(e)
            }
            Err(_) => {
                agent.kill();
                Err(Error::Timeout(format!(
                    "agent {} did not answer initialize within {}s",
                    spec.program.display(),
                    spec.start_timeout.as_secs()
                )))
            }
        }
    }

    /// Run one turn with `user_input` (a string or a `ContentPart` list).
    async fn prompt_input(&self, input: Value) -> Result<TurnOutcome> {
        let violations_before = {
            let mut st = self.shared.state();
            st.turn = TurnRecord::default();
            st.violations
        };
        let response = self
            .request("prompt", json!({ "user_input": input }))
            .await?;
        let mut st = self.shared.state();
        Ok(TurnOutcome {
            status: TurnStatus::from_response(&response),
            record: std::mem::take(&mut st.turn),
            protocol_violations: st.violations - violations_before,
        })
    }

    /// Send a request and wait for its response.
    async fn request(
        &self,
        method: &str,
        params: Value,
    ) -> Result<std::result::Result<Value, RpcError>> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{method}-{n}");
        let (tx, rx) = oneshot::channel();
        let closed = {
            let mut st = self.shared.state();
            if !st.output_closed {
                st.pending.insert(id.clone(), tx);
            }
            st.output_closed
        };
        if closed {
            // No answer can ever arrive.
            return Err(self.shared.gone_error(method).await);
        }
        if let Err(e) = self
            .shared
            .write_line(&protocol::encode_request(&id, method, params))
            .await
        {
            self.shared.state().pending.remove(&id);
            // A broken pipe means the agent exited (or closed its input):
            // say which, as for a closed output.
            let running = format!("stopped reading its input ({e})");
            return Err(self.shared.gone_or(method, &running).await);
        }
        match rx.await {
            Ok(r) => Ok(r),
            Err(_) => Err(self.shared.gone_error(method).await),
        }
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write_line(&self, line: &str) -> Result<()> {
        self.stdin.write_line(line).await
    }

    fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        crate::redact::redact_str(String::from_utf8_lossy(&bytes).trim()).into_owned()
    }

    /// Describe why the agent stopped answering, waiting briefly for its exit
    /// status so the message can name it.
    async fn gone_error(&self, during: &str) -> Error {
        self.gone_or(during, "closed its output").await
    }

    /// The agent's end, described: how it exited (waiting up to 500 ms for
    /// that: a closed output usually means an exit), or `if_running` when
    /// it is still running.
    async fn gone_or(&self, during: &str, if_running: &str) -> Error {
        let status = wait_exit(&self.exit, Duration::from_millis(500)).await;
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

    async fn answer(&self, req: AgentRequest) {
        let (line, notice) = match req {
            AgentRequest::Approval(request) => {
                let decision = if self.policy.kind == super::PolicyKind::Host {
                    // The host may take its time (a person deciding): not on
                    // the runtime's threads.
                    let (policy, req, wd) =
                        (self.policy.clone(), request.clone(), self.work_dir.clone());
                    tokio::task::spawn_blocking(move || policy.decide(&req, &wd))
                        .await
                        .unwrap_or_else(|_| super::Decision::reject("the host approver failed"))
                } else {
                    self.policy.decide(&request, &self.work_dir)
                };
                let mut result = json!({ "request_id": request.id, "response": decision.response });
                if !decision.approved() {
                    result["feedback"] = Value::from(decision.reason.clone());
                }
                let line = protocol::encode_response(&request.id, result);
                (line, AgentNotice::Approval { request, decision })
            }
            AgentRequest::ToolCall { id, name, .. } => {
                let msg = format!("omk provides no external tool named {name:?}");
                let result = json!({
                    "tool_call_id": id,
                    "return_value": { "is_error": true, "output": "", "message": msg, "display": [] }
                });
                (
                    protocol::encode_response(&id, result),
                    AgentNotice::RequestAnswered {
                        kind: "ToolCallRequest".into(),
                        answer: msg,
                    },
                )
            }
            // Empty answers dismiss the question; the owner decides whether
            // it needs a human (a goal stops as blocked_on_human).
            AgentRequest::Question { id, payload } => (
                protocol::encode_response(&id, json!({ "request_id": id, "answers": {} })),
                AgentNotice::Question {
                    questions: protocol::question_texts(&payload),
                },
            ),
            AgentRequest::Hook { id, .. } => (
                protocol::encode_response(
                    &id,
                    json!({ "request_id": id, "action": "allow", "reason": "" }),
                ),
                AgentNotice::RequestAnswered {
                    kind: "HookRequest".into(),
                    answer: "allow".into(),
                },
            ),
            AgentRequest::Unknown { id, kind, .. } => (
                protocol::encode_error(
                    &id,
                    codes::METHOD_NOT_FOUND,
                    &format!("omk does not handle {kind} requests"),
                ),
                AgentNotice::RequestAnswered {
                    kind,
                    answer: "error: unsupported request type".into(),
                },
            ),
        };
        // If the agent is gone the answer has nowhere to go; the turn's
        // owner learns that from the closed output.
        let _ = self.write_line(&line).await;
        let _ = self.notices.send(notice).await;
    }
}

async fn wait_for_exit(mut child: Child, exit: watch::Sender<Option<ExitStatus>>) {
    let status = child.wait().await.ok();
    let _ = exit.send(status.or(Some(ExitStatus::from_raw(-1))));
}

async fn read_stderr(mut stderr: tokio::process::ChildStderr, shared: Arc<Shared>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let mut buf = shared.stderr.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(&chunk[..n]);
        let excess = buf.len().saturating_sub(STDERR_TAIL_BYTES);
        buf.drain(..excess);
    }
}

async fn read_stdout(stdout: tokio::process::ChildStdout, shared: Arc<Shared>) {
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
                shared.state().violations += 1;
                shared.state().fatal = Some(reason.clone());
                let shown = String::from_utf8_lossy(&line[..line.len().min(512)]);
                let shown = crate::redact::redact_str(&shown).into_owned();
                let _ = shared
                    .notices
                    .send(AgentNotice::ProtocolViolation {
                        line: shown,
                        reason,
                    })
                    .await;
                crate::process::kill_group(shared.pid);
                break;
            }
        }
        shared.state().last_activity = Instant::now();
        let text = String::from_utf8_lossy(&line);
        match protocol::parse_line(&text) {
            Ok(None) => {}
            Ok(Some(Incoming::Response { id, result })) => {
                let waiter = shared.state().pending.remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(result);
                }
            }
            Ok(Some(Incoming::Event(event))) => {
                shared.state().turn.observe(&event);
                let _ = shared.notices.send(AgentNotice::Event(event)).await;
            }
            Ok(Some(Incoming::Request(req))) => shared.answer(req).await,
            Err(violation) => {
                shared.state().violations += 1;
                let mut shown: String = text.chars().take(512).collect();
                shown = crate::redact::redact_str(&shown).into_owned();
                let _ = shared
                    .notices
                    .send(AgentNotice::ProtocolViolation {
                        line: shown,
                        reason: violation.0,
                    })
                    .await;
            }
        }
    }
    // Output closed: every waiter learns the agent is gone, and so does
    // every later request.
    let mut st = shared.state();
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

/// The exit status once known, waiting at most `limit`.
async fn wait_exit(
    exit: &watch::Receiver<Option<ExitStatus>>,
    limit: Duration,
) -> Option<ExitStatus> {
    let mut exit = exit.clone();
    let waited = tokio::time::timeout(limit, async {
        let r = exit.wait_for(|s| s.is_some()).await;
        r.ok().and_then(|s| *s)
    });
    waited.await.ok().flatten()
}

fn describe_exit(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

impl AgentBackend for WireAgent {
    fn pid(&self) -> u32 {
        self.shared.pid
    }

    fn prompt<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<TurnOutcome>> {
        Box::pin(self.prompt_input(Value::from(input)))
    }

    fn prompt_parts<'a>(&'a self, parts: &'a [String]) -> BoxFuture<'a, Result<TurnOutcome>> {
        // One part is sent as a plain string, as kimi's own clients do.
        let input = match parts {
            [one] => Value::from(one.as_str()),
            _ => Value::Array(
                parts
                    .iter()
                    .map(|p| json!({ "type": "text", "text": p }))
                    .collect(),
            ),
        };
        Box::pin(self.prompt_input(input))
    }

    fn replay(&self) -> BoxFuture<'_, Result<Option<super::ReplaySummary>>> {
        Box::pin(async move {
            match self.request("replay", json!({})).await? {
                Ok(v) => Ok(Some(super::ReplaySummary {
                    status: v["status"].as_str().unwrap_or("finished").to_string(),
                    events: v["events"].as_u64().unwrap_or(0),
                    requests: v["requests"].as_u64().unwrap_or(0),
                })),
                // An agent without `replay` has nothing to resume.
                Err(e) if e.code == codes::METHOD_NOT_FOUND => Ok(None),
                Err(e) => Err(Error::Agent(format!(
                    "replay failed: {} ({})",
                    e.message, e.code
                ))),
            }
        })
    }

    fn cancel(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(5), self.request("cancel", json!({})))
                .await
            {
                Ok(Ok(Ok(_))) => Ok(()),
                // "No agent turn is in progress": nothing to cancel.
                Ok(Ok(Err(e))) if e.code == codes::INVALID_STATE => Ok(()),
                Ok(Ok(Err(e))) => Err(Error::Agent(format!(
                    "cancel failed: {} ({})",
                    e.message, e.code
                ))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Timeout(
                    "agent did not answer cancel within 5s".into(),
                )),
            }
        })
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, Option<ExitStatus>> {
        Box::pin(async move {
            // Closing stdin is the Wire way to say goodbye.
            self.shared.stdin.close();
            if wait_exit(&self.shared.exit, grace).await.is_none() {
                crate::process::kill_group(self.shared.pid);
            }
            let status = wait_exit(&self.shared.exit, Duration::from_secs(5)).await;
            // Whatever the agent left in its group goes with it.
            crate::process::kill_group(self.shared.pid);
            status
        })
    }

    fn kill(&self) {
        crate::process::kill_group(self.shared.pid);
    }

    fn last_activity(&self) -> Instant {
        self.shared.state().last_activity
    }

    fn partial_turn(&self) -> TurnRecord {
        self.shared.state().turn.clone()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        *self.shared.exit.borrow()
    }

    fn stderr_tail(&self) -> String {
        self.shared.stderr_tail()
    }
}

impl Drop for WireAgent {
    fn drop(&mut self) {
        // Never leave an agent running behind a dropped handle.
        if self.shared.exit.borrow().is_none() {
            crate::process::kill_group(self.shared.pid);
        }
    }
}
