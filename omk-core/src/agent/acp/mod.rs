//! The ACP backend: any agent that speaks the Agent Client Protocol
//! (version 1) on stdio — `kimi acp`, the Claude Code and Codex adapters,
//! `gemini --acp`, `qwen --acp`, `opencode acp` (docs/agents.md).
//!
//! omk is the client. It starts the agent's command as given (no flags of
//! its own), `initialize`s with protocol version 1 and the capabilities it
//! serves, opens a session in the work dir and sends each turn as
//! `session/prompt`; the turn ends with that request's answer (its
//! `stopReason`). omk answers every request the agent makes:
//! `session/request_permission` through the same approval policies as Wire,
//! `fs/read_text_file` and `fs/write_text_file` itself, confined to the work
//! dir ([`fs`]), `terminal/*` itself, for commands the policy allows
//! ([`terminal`]), anything else with `-32601`.
//!
//! The client is written on omk's own process layer ([`super::peer`])
//! rather than the `agent-client-protocol` crate: that crate queues every
//! parsed line in an unbounded channel between its transport and its
//! dispatcher, so an agent that floods updates faster than omk records them
//! would grow omk's memory without bound; here the reader waits for the
//! bounded notice queue, and so the agent's pipe waits too (docs/agents.md).
//!
//! Updates that trail the prompt answer (some agents send them right after
//! it) belong to that turn: the answer is delivered only once the reader
//! has handled every line already read with it ([`LineSink::idle`]); an
//! update for the session that comes later still reaches the transcript.

pub mod fs;
pub mod messages;
pub mod terminal;

use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::Command;
use tokio::sync::watch;

use super::peer::{Answer, LineSink, Peer};
use super::protocol::{Cost, TurnRecord, WireEvent};
use super::{AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, BoxFuture, TurnOutcome};
use crate::error::{Error, Result};
pub use messages::AgentInfo;
use messages::{codes, Incoming, Unusable};

/// Lines that are not JSON (start-up banners, warnings) an agent may print
/// on stdout before omk stops it.
pub const MAX_STRAY_LINES: u64 = 1000;

/// The session omk talks in and the turn running in it.
#[derive(Default)]
struct Session {
    id: String,
    /// Whether a turn ran in this session (a fresh task needs a new one).
    used: bool,
    turn: TurnRecord,
    /// The prompt request whose answer is held until the lines read with it
    /// are handled.
    prompt_key: Option<String>,
    held: Option<Answer>,
    /// The session's cumulative cost as last reported, and at turn start.
    cost: Option<Cost>,
    cost_at_start: f64,
    /// Vendor usage seen on the turn's updates (`_meta.usage`): counted
    /// only when the answer carries no `usage` of its own.
    meta_usage: Option<crate::agent::TokenUsage>,
    /// A `session/load` in progress: the session and the history updates
    /// it re-sent so far.
    loading: Option<(String, u64)>,
}

struct Shared {
    peer: Arc<Peer>,
    policy: ApprovalPolicy,
    work_dir: std::path::PathBuf,
    next_id: AtomicU64,
    session: Mutex<Session>,
    stray: AtomicU64,
    /// Whether a turn is running (for `stop`: cancel it first).
    running: watch::Sender<bool>,
    terminals: Arc<terminal::Terminals>,
}

/// A running ACP agent. Cheap to share (`Arc`).
pub struct AcpAgent {
    shared: Arc<Shared>,
    info: AgentInfo,
    mcp_servers: Vec<Value>,
}

impl AcpAgent {
    /// Spawn the agent's command, `initialize` it and open a session in the
    /// work dir, all within the spec's start timeout.
    pub async fn start(spec: &AgentSpec, notices: super::NoticeSender) -> Result<Arc<AcpAgent>> {
        let shared = Shared::spawn(spec, notices)?;
        let peer = shared.peer.clone();
        let handshake = async {
            let answer = shared
                .request("initialize", messages::initialize_params(true))
                .await?;
            let result = answer.map_err(|e| {
                Error::Agent(format!(
                    "agent refused initialize: {} ({})",
                    e.message, e.code
                ))
            })?;
            let info = messages::parse_initialize(&result).map_err(Error::Agent)?;
            // Every agent takes stdio MCP servers; HTTP ones only when it
            // says it can.
            let mcp_servers = spec
                .mcp_servers
                .iter()
                .filter(|s| s["type"] != "http" || info.mcp_http)
                .cloned()
                .collect();
            let agent = AcpAgent {
                shared: shared.clone(),
                info,
                mcp_servers,
            };
            agent.new_session().await?;
            Ok::<_, Error>(agent)
        };
        match tokio::time::timeout(spec.start_timeout, handshake).await {
            Ok(Ok(agent)) => Ok(Arc::new(agent)),
            Ok(Err(e)) => {
                peer.kill();
                Err(e)
            }
            Err(_) => {
                peer.kill();
                Err(Error::Timeout(format!(
                    "agent {} did not answer initialize and session/new within {}s",
                    spec.program.display(),
                    spec.start_timeout.as_secs()
                )))
            }
        }
    }

    /// Start the agent, `initialize` it (no session) and stop it: what
    /// `doctor` checks. Returns what the agent said about itself.
    pub async fn handshake(spec: &AgentSpec) -> Result<AgentInfo> {
        let (tx, mut rx) = super::notice_channel();
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let shared = Shared::spawn(spec, tx)?;
        let peer = shared.peer.clone();
        let answer = tokio::time::timeout(
            spec.start_timeout,
            shared.request("initialize", messages::initialize_params(true)),
        )
        .await;
        peer.stop(Duration::from_secs(1)).await;
        drain.abort();
        let answer = answer.map_err(|_| {
            Error::Timeout(format!(
                "no answer to initialize within {}s",
                spec.start_timeout.as_secs()
            ))
        })??;
        let result = answer
            .map_err(|e| Error::Agent(format!("initialize refused: {} ({})", e.message, e.code)))?;
        messages::parse_initialize(&result).map_err(Error::Agent)
    }

    /// What the agent said about itself in `initialize`.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The current session's id.
    pub fn session_id(&self) -> String {
        self.shared.session().id.clone()
    }

    async fn new_session(&self) -> Result<()> {
        let params = messages::new_session_params(&self.shared.work_dir, &self.mcp_servers);
        let result = self
            .shared
            .request("session/new", params)
            .await?
            .map_err(|e| {
                let login = if self.info.auth_methods.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (the agent offers authentication: {}; log in with the agent first)",
                        self.info.auth_methods.join(", ")
                    )
                };
                Error::Agent(format!(
                    "agent refused session/new: {} ({}){login}",
                    e.message, e.code
                ))
            })?;
        let id = result["sessionId"]
            .as_str()
            .ok_or_else(|| Error::Agent(format!("session/new answered no sessionId: {result}")))?;
        *self.shared.session() = Session {
            id: id.to_string(),
            ..Session::default()
        };
        Ok(())
    }

    async fn run_turn(&self, parts: &[String]) -> Result<TurnOutcome> {
        let violations_before = self.shared.peer.violations();
        let (params, key) = {
            let mut s = self.shared.session();
            s.used = true;
            s.turn = TurnRecord::default();
            s.cost_at_start = s.cost.as_ref().map_or(0.0, |c| c.amount);
            s.meta_usage = None;
            let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            s.prompt_key = Some(n.to_string());
            s.held = None;
            (messages::prompt_params(&s.id, parts), n)
        };
        // "A turn runs" until this returns, or until its future is dropped
        // (a worker that gave up on the turn): a guard clears it either way.
        let running = Running::set(&self.shared.running);
        let line = messages::encode_request(key, "session/prompt", params);
        let answer = self
            .shared
            .peer
            .request(key.to_string(), &line, "session/prompt")
            .await;
        drop(running);
        let answer = answer?;
        let meta = self.shared.session().meta_usage.take();
        let usage = messages::response_usage(&answer).or(meta);
        if let Some(u) = usage {
            // Tokens reach the worker's tally as they do for Wire.
            let event = WireEvent::StatusUpdate {
                usage: Some(u),
                context_tokens: None,
            };
            let _ = self
                .shared
                .peer
                .notices()
                .send(AgentNotice::Event(event))
                .await;
        }
        let mut s = self.shared.session();
        s.prompt_key = None;
        let mut record = std::mem::take(&mut s.turn);
        if let Some(u) = usage {
            record.usage.add(&u);
        }
        if let Some(c) = &s.cost {
            record.cost = Some(Cost {
                amount: (c.amount - s.cost_at_start).max(0.0),
                currency: c.currency.clone(),
            });
        }
        Ok(TurnOutcome {
            status: messages::turn_status(&answer),
            record,
            protocol_violations: self.shared.peer.violations() - violations_before,
        })
    }

    async fn send_cancel(&self) -> Result<()> {
        let session = self.shared.session().id.clone();
        // The turn's commands go with it.
        self.shared.terminals.kill_session(&session);
        let line = messages::encode_notification("session/cancel", json!({ "sessionId": session }));
        self.shared.peer.write_line(&line).await
    }
}

/// Marks a turn as running while it lives.
struct Running<'a>(&'a watch::Sender<bool>);

impl<'a> Running<'a> {
    fn set(flag: &'a watch::Sender<bool>) -> Running<'a> {
        flag.send_replace(true);
        Running(flag)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

impl Shared {
    /// Start the agent's command as the spec gives it (no flags of omk's
    /// own) and begin reading its output.
    fn spawn(spec: &AgentSpec, notices: super::NoticeSender) -> Result<Arc<Shared>> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.extra_args)
            .current_dir(&spec.work_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        let (peer, stdout) = Peer::spawn(cmd, notices, &spec.program.display().to_string())?;
        let shared = Arc::new(Shared {
            peer: peer.clone(),
            policy: spec.policy.clone(),
            work_dir: spec.work_dir.clone(),
            next_id: AtomicU64::new(1),
            session: Mutex::new(Session::default()),
            stray: AtomicU64::new(0),
            running: watch::channel(false).0,
            terminals: Arc::new(terminal::Terminals::default()),
        });
        peer.read(stdout, shared.clone());
        Ok(shared)
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn request(&self, method: &str, params: Value) -> Result<Answer> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = messages::encode_request(n, method, params);
        self.peer.request(n.to_string(), &line, method).await
    }

    async fn notice(&self, notice: AgentNotice) {
        let _ = self.peer.notices().send(notice).await;
    }

    async fn on_update(&self, params: &Value) {
        match messages::parse_update(params) {
            Ok((session, event)) => {
                {
                    let mut s = self.session();
                    if let Some((id, n)) = s.loading.as_mut() {
                        if *id == session {
                            *n += 1;
                        }
                    }
                    if s.id == session {
                        if let WireEvent::ContextUsage { cost: Some(c), .. } = &event {
                            s.cost = Some(c.clone());
                        }
                        if let Some(u) = messages::meta_usage(params) {
                            s.meta_usage.get_or_insert_with(Default::default).add(&u);
                        }
                        s.turn.observe(&event);
                    }
                }
                self.notice(AgentNotice::Event(event)).await;
            }
            Err(why) => self.peer.violation(&params.to_string(), why).await,
        }
    }

    async fn on_request(&self, id: Value, method: &str, params: Value) {
        let line = match method {
            "session/request_permission" => {
                let request = messages::permission_request(&id, &params);
                let decision = self.policy.decide_async(&request, &self.work_dir).await;
                let answer = messages::permission_answer(&params, decision.approved());
                self.notice(AgentNotice::Approval { request, decision })
                    .await;
                messages::encode_response(&id, answer)
            }
            "fs/read_text_file" | "fs/write_text_file" => {
                let served = if method == "fs/read_text_file" {
                    fs::read(&self.work_dir, &params)
                } else {
                    fs::write(&self.work_dir, &params)
                };
                let (line, answer) = match served {
                    Ok((result, served)) => {
                        let what = if served.missing {
                            format!("{} does not exist: read as empty", served.path.display())
                        } else {
                            format!("{} ({} bytes)", served.path.display(), served.bytes)
                        };
                        (messages::encode_response(&id, result), what)
                    }
                    Err(fs::Refused(why)) => (
                        messages::encode_error(&id, codes::RESOURCE, &why),
                        format!("refused: {why}"),
                    ),
                };
                self.notice(AgentNotice::RequestAnswered {
                    kind: method.to_string(),
                    answer,
                })
                .await;
                line
            }
            "terminal/create" => {
                let command = terminal::command_line(&params);
                let request = crate::agent::ApprovalRequest {
                    id: crate::agent::peer::id_key(&id).unwrap_or_default(),
                    tool_call_id: None,
                    sender: "terminal".into(),
                    action: "run command".into(),
                    description: format!("terminal/create: {command}"),
                    display: vec![json!({ "type": "shell", "command": command })],
                    agent_id: None,
                    raw: params.clone(),
                };
                let decision = self.policy.decide_async(&request, &self.work_dir).await;
                let approved = decision.approved();
                let reason = decision.reason.clone();
                self.notice(AgentNotice::Approval { request, decision })
                    .await;
                let (line, answer) = if !approved {
                    let why = format!("refused by the approval policy: {reason}");
                    (
                        messages::encode_error(&id, codes::RESOURCE, &why),
                        format!("refused: {why}"),
                    )
                } else {
                    match self.terminals.create(&self.work_dir, &params) {
                        Ok(v) => {
                            let what = format!("{} started {command}", v["terminalId"]);
                            (messages::encode_response(&id, v), what)
                        }
                        Err(fs::Refused(why)) => (
                            messages::encode_error(&id, codes::RESOURCE, &why),
                            format!("refused: {why}"),
                        ),
                    }
                };
                self.notice(AgentNotice::RequestAnswered {
                    kind: method.to_string(),
                    answer,
                })
                .await;
                line
            }
            "terminal/wait_for_exit" => {
                // Waits for the command on a task of its own: the reader
                // (and so the agent's other messages) must not wait with it.
                let (terminals, peer) = (self.terminals.clone(), self.peer.clone());
                tokio::spawn(async move {
                    let line = match terminals.wait_for_exit(&params).await {
                        Ok(v) => messages::encode_response(&id, v),
                        Err(fs::Refused(why)) => messages::encode_error(&id, codes::RESOURCE, &why),
                    };
                    let _ = peer.write_line(&line).await;
                });
                return;
            }
            "terminal/output" | "terminal/kill" | "terminal/release" => {
                let served = match method {
                    "terminal/output" => self.terminals.output(&params),
                    "terminal/kill" => self.terminals.kill(&params),
                    _ => self.terminals.release(&params),
                };
                match served {
                    Ok(v) => messages::encode_response(&id, v),
                    Err(fs::Refused(why)) => messages::encode_error(&id, codes::RESOURCE, &why),
                }
            }
            other => {
                self.notice(AgentNotice::RequestAnswered {
                    kind: other.to_string(),
                    answer: "error: omk does not serve this method".into(),
                })
                .await;
                messages::encode_error(
                    &id,
                    codes::METHOD_NOT_FOUND,
                    &format!("omk does not serve {other}"),
                )
            }
        };
        // If the agent is gone the answer has nowhere to go; the turn's
        // owner learns that from the closed output.
        let _ = self.peer.write_line(&line).await;
    }

    async fn on_stray(&self, text: &str) {
        let n = self.stray.fetch_add(1, Ordering::Relaxed) + 1;
        let shown: String = text.chars().take(512).collect();
        self.notice(AgentNotice::StrayOutput {
            line: crate::redact::redact_str(&shown).into_owned(),
        })
        .await;
        if n > MAX_STRAY_LINES {
            let why = format!(
                "the agent printed more than {MAX_STRAY_LINES} lines that are not JSON-RPC"
            );
            self.peer.violation(text, why.clone()).await;
            self.peer.fail(why);
        }
    }
}

impl LineSink for Shared {
    fn line<'a>(&'a self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match messages::classify(text) {
                Ok(None) => {}
                Ok(Some(Incoming::Response { key, answer })) => {
                    let mut s = self.session();
                    if s.prompt_key.as_deref() == Some(key.as_str()) {
                        // Held until the lines read with it are handled.
                        s.held = Some(answer);
                    } else {
                        drop(s);
                        self.peer.resolve(&key, answer);
                    }
                }
                Ok(Some(Incoming::Notification { method, params })) => {
                    if method == "session/update" {
                        self.on_update(&params).await;
                    } else {
                        // Vendor notifications (`_auth/...`): kept, not acted on.
                        let event = WireEvent::Unknown {
                            kind: method,
                            payload: params,
                        };
                        self.session().turn.observe(&event);
                        self.notice(AgentNotice::Event(event)).await;
                    }
                }
                Ok(Some(Incoming::Request { id, method, params })) => {
                    self.on_request(id, &method, params).await
                }
                Err(Unusable::NotJson) => self.on_stray(text).await,
                Err(Unusable::Invalid(why)) => self.peer.violation(text, why).await,
            }
        })
    }

    fn idle(&self) {
        let mut s = self.session();
        if let (Some(key), Some(answer)) = (s.prompt_key.clone(), s.held.take()) {
            drop(s);
            self.peer.resolve(&key, answer);
        }
    }
}

impl AgentBackend for AcpAgent {
    fn pid(&self) -> u32 {
        self.shared.peer.pid()
    }

    fn prompt<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<TurnOutcome>> {
        Box::pin(async move { self.run_turn(&[input.to_string()]).await })
    }

    fn prompt_parts<'a>(&'a self, parts: &'a [String]) -> BoxFuture<'a, Result<TurnOutcome>> {
        Box::pin(self.run_turn(parts))
    }

    fn session_id(&self) -> Option<String> {
        Some(self.session_id())
    }

    fn load_session<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::ReplaySummary>>> {
        Box::pin(async move {
            if !self.info.load_session {
                return Ok(None);
            }
            self.shared.session().loading = Some((id.to_string(), 0));
            let params = json!({
                "sessionId": id,
                "cwd": self.shared.work_dir,
                "mcpServers": self.mcp_servers,
            });
            let answer = self.shared.request("session/load", params).await;
            let events = {
                let mut s = self.shared.session();
                s.loading.take().map_or(0, |(_, n)| n)
            };
            match answer? {
                Ok(_) => {
                    // The agent talks in the loaded session from now on.
                    *self.shared.session() = Session {
                        id: id.to_string(),
                        used: true,
                        ..Session::default()
                    };
                    Ok(Some(super::ReplaySummary {
                        status: "finished".into(),
                        events,
                        requests: 0,
                    }))
                }
                Err(e) => Err(Error::Agent(format!(
                    "session/load refused: {} ({})",
                    e.message, e.code
                ))),
            }
        })
    }

    fn fresh_context(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.shared.session().used {
                self.new_session().await?;
            }
            Ok(())
        })
    }

    fn cancel(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !*self.shared.running.borrow() {
                return Ok(());
            }
            // A notification: the pending prompt answers `cancelled`.
            self.send_cancel().await
        })
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, Option<ExitStatus>> {
        Box::pin(async move {
            let started = Instant::now();
            if *self.shared.running.borrow() && self.send_cancel().await.is_ok() {
                // Let the turn end as `cancelled` before the agent goes.
                let mut running = self.shared.running.subscribe();
                let _ = tokio::time::timeout(grace, running.wait_for(|r| !*r)).await;
            }
            let status = self
                .shared
                .peer
                .stop(grace.saturating_sub(started.elapsed()))
                .await;
            self.shared.terminals.kill_all();
            status
        })
    }

    fn kill(&self) {
        self.shared.terminals.kill_all();
        self.shared.peer.kill();
    }

    fn last_activity(&self) -> Instant {
        self.shared.peer.last_activity()
    }

    fn partial_turn(&self) -> TurnRecord {
        self.shared.session().turn.clone()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.shared.peer.exit_status()
    }

    fn stderr_tail(&self) -> String {
        self.shared.peer.stderr_tail()
    }
}

impl Drop for AcpAgent {
    fn drop(&mut self) {
        self.shared.terminals.kill_all();
        // Never leave an agent running behind a dropped handle.
        if self.shared.peer.exit_status().is_none() {
            self.shared.peer.kill();
        }
    }
}
