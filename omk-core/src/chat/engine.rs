//! A live chat: one agent process kept across the turns of a session, its
//! answers streamed to an observer as they arrive, and every turn persisted
//! in the session files (API.md "Chat API").
//!
//! The engine is blocking, like the rest of the [`Omk`] API: [`ChatEngine::send`]
//! runs one turn on omk's private runtime and calls the observer on the
//! caller's thread, so an observer may print, and may block to ask a person
//! about an approval. [`ChatCancel`] stops the running turn from any thread
//! (a Ctrl-C handler).
//!
//! Resuming: the agent is started with `--session <session id>`, which the
//! Kimi CLI uses to reopen its own session. After a restart omk asks the agent
//! to `replay` that session; an agent that re-sends history continues it
//! natively, any other gets the conversation so far as a context part in
//! front of the next prompt.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::watch;

use super::{ChatSession, Message, Role, SessionMeta};
use crate::agent::{
    self, AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, ApprovalRequest, Approver,
    Decision, PolicyKind, TokenUsage, TurnStatus, WireEvent,
};
use crate::config::{AgentProtocol, Config};
use crate::error::{Error, Result};
use crate::store::FileLock;
use crate::Omk;

/// Most characters of earlier conversation replayed as context to an agent
/// that cannot resume its own session (the latest messages are kept).
pub const CONTEXT_MAX_CHARS: usize = 32 * 1024;

/// How approvals are decided during a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Ask the observer ([`ChatObserver::approve`]) for each request.
    Ask,
    /// Decide with a policy (`host` uses the approver set on the handle).
    Policy(PolicyKind),
}

impl ApprovalMode {
    /// Parse `ask` or a policy name (`reject-all`, `workdir-edits`,
    /// `approve-all`, `host`).
    pub fn parse(name: &str) -> Result<ApprovalMode> {
        match name {
            "ask" => Ok(ApprovalMode::Ask),
            other => PolicyKind::parse(other).map(ApprovalMode::Policy).map_err(|_| {
                Error::InvalidInput(format!(
                    "unknown approval mode {other:?}; expected ask, reject-all, workdir-edits, approve-all or host"
                ))
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::Ask => "ask",
            ApprovalMode::Policy(k) => k.as_str(),
        }
    }
}

/// The `[agent] approval_policy` a config file sets explicitly (the last
/// file that sets it wins), or `None` when every file leaves the default.
/// The chat asks interactively unless a policy was chosen on purpose.
pub fn configured_approval(config: &Config) -> Option<String> {
    config.sources.iter().rev().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        table
            .get("agent")?
            .get("approval_policy")?
            .as_str()
            .map(str::to_owned)
    })
}

/// How to open a chat.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Resume this session; `None` starts a new one.
    pub session: Option<String>,
    pub approval: ApprovalMode,
    /// Recorded in `meta.json` of a new session.
    pub theme: String,
    /// The agent profile to chat with; default: the one a resumed session
    /// last ran, else `[team] agent`.
    pub agent: Option<String>,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            session: None,
            approval: ApprovalMode::Policy(PolicyKind::WorkdirEdits),
            theme: "default".into(),
            agent: None,
        }
    }
}

/// A person's answer to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAnswer {
    Approve,
    Reject,
    /// Approve this and every later request of the same action (`edit
    /// file`, `run command`...) for the rest of the chat.
    Always,
}

/// What the engine reports while a turn runs. Called on the thread that
/// called [`ChatEngine::send`].
pub trait ChatObserver {
    /// A text delta of the answer, as it arrives.
    fn text(&mut self, delta: &str);
    /// Any other notice (tool calls, results, approvals decided by policy).
    fn notice(&mut self, _notice: &AgentNotice) {}
    /// Decide an approval request (only asked in [`ApprovalMode::Ask`]). May
    /// block while a person decides.
    fn approve(&mut self, _request: &ApprovalRequest) -> ApprovalAnswer {
        ApprovalAnswer::Reject
    }
}

/// Cancels the running turn from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ChatCancel {
    inner: Arc<CancelInner>,
}

struct CancelInner {
    generation: watch::Sender<u64>,
    running: AtomicBool,
}

impl ChatCancel {
    fn new() -> ChatCancel {
        ChatCancel {
            inner: Arc::new(CancelInner {
                generation: watch::channel(0).0,
                running: AtomicBool::new(false),
            }),
        }
    }

    /// Ask the running turn to stop (Wire `cancel`); a second request during
    /// the same turn kills an agent that ignores the first. Without a
    /// running turn this does nothing.
    pub fn cancel(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Whether a turn is running now.
    pub fn turn_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
    }
}

/// How one turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTurn {
    pub status: TurnStatus,
    /// The answer as streamed (also appended to the conversation).
    pub text: String,
    pub usage: TokenUsage,
    /// The agent process ended during the turn; the next turn starts a new one.
    pub agent_lost: bool,
}

/// How the agent picked up a resumed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Resume {
    /// A new session (or nothing to resume).
    New,
    /// The agent reopened its own session and re-sent `events` of it.
    Agent { events: u64 },
    /// The agent could not; the last `messages` go with the next prompt.
    Context { messages: usize },
}

type PendingApproval = (ApprovalRequest, std::sync::mpsc::Sender<Decision>);

struct Live {
    agent: Arc<dyn AgentBackend>,
    notices: agent::NoticeReceiver,
    approvals: UnboundedReceiver<PendingApproval>,
}

/// An open chat session with its agent.
pub struct ChatEngine {
    omk: Omk,
    session: ChatSession,
    _lock: FileLock,
    work_dir: PathBuf,
    approval: ApprovalMode,
    /// The agent profile (`None`: the default one).
    agent: Option<String>,
    live: Option<Live>,
    /// Earlier conversation to send with the next prompt.
    context: Option<String>,
    resume: Resume,
    /// Actions the person approved with `always`.
    always: HashSet<String>,
    cancel: ChatCancel,
}

impl std::fmt::Debug for ChatEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEngine")
            .field("session", &self.session.meta().id)
            .field("work_dir", &self.work_dir)
            .field("approval", &self.approval)
            .field("resume", &self.resume)
            .finish()
    }
}

impl ChatEngine {
    /// The agent profile this chat runs (`None`: the default one).
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Open (or create) the session, claim it, and start its agent.
    pub fn open(omk: &Omk, options: ChatOptions) -> Result<ChatEngine> {
        if options.approval == ApprovalMode::Policy(PolicyKind::Host) && omk.approver().is_none() {
            return Err(Error::InvalidInput(
                "approval policy \"host\" needs an approver set on this handle; use \"ask\" in a chat".into(),
            ));
        }
        let paths = omk.paths();
        let session = match &options.session {
            Some(id) => ChatSession::open(paths, id)?,
            None => ChatSession::create(paths, omk.project_dir(), &options.theme)?,
        };
        let lock = session.try_lock()?;
        // A resumed session continues in the project it was about, when
        // that still exists.
        let root = &session.meta().project_root;
        let work_dir = if options.session.is_some() && root.is_dir() {
            root.clone()
        } else {
            omk.project_dir().to_path_buf()
        };
        // A resumed session keeps the agent profile it ran, unless told
        // otherwise.
        let agent = options.agent.clone().or_else(|| {
            let events = session.engine_events().ok()?;
            events
                .records
                .iter()
                .rev()
                .find(|e| e["type"] == "agent_start")
                .and_then(|e| e["payload"]["agent"].as_str().map(str::to_owned))
        });
        let mut engine = ChatEngine {
            omk: omk.clone(),
            session,
            _lock: lock,
            work_dir,
            approval: options.approval,
            agent,
            live: None,
            context: None,
            resume: Resume::New,
            always: HashSet::new(),
            cancel: ChatCancel::new(),
        };
        if let Err(e) = engine.start_agent() {
            if options.session.is_none() {
                // A new session whose agent never started holds nothing.
                let dir = engine.session.dir().to_path_buf();
                drop(engine);
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
        Ok(engine)
    }

    /// The session's metadata.
    pub fn meta(&self) -> &SessionMeta {
        self.session.meta()
    }

    /// Where the session's files are.
    pub fn dir(&self) -> &std::path::Path {
        self.session.dir()
    }

    /// The directory the agent works in.
    pub fn work_dir(&self) -> &std::path::Path {
        &self.work_dir
    }

    pub fn approval(&self) -> ApprovalMode {
        self.approval
    }

    /// How the agent picked up this session when it (last) started.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// A handle that cancels the running turn from another thread.
    pub fn canceller(&self) -> ChatCancel {
        self.cancel.clone()
    }

    /// The conversation so far.
    pub fn conversation(&self) -> Result<Vec<Message>> {
        Ok(self.session.conversation()?.records)
    }

    /// The input history, oldest first (for arrow-up).
    pub fn history(&self) -> Result<Vec<String>> {
        self.session.history()
    }

    /// Remember a typed line in the input history (redacted on disk).
    pub fn remember_input(&mut self, line: &str) -> Result<()> {
        self.session.add_input(line)
    }

    /// Record something the consumer did (a `/team` run...) in the
    /// session's engine events.
    pub fn record(&mut self, kind: &str, payload: Value) -> Result<()> {
        self.session.add_engine_event(kind, payload)?;
        self.session.sync()
    }

    fn start_agent(&mut self) -> Result<()> {
        let config = self.omk.config()?;
        let resolved = crate::agents::resolve(config, self.agent.as_deref())?;
        let program = resolved.program.clone();
        let id = self.session.meta().id.clone();
        let mut extra_args = Vec::new();
        if resolved.protocol == AgentProtocol::Wire {
            // kimi reopens (or creates) its own session under this id.
            extra_args.extend(["--session".to_string(), id.clone()]);
        }
        extra_args.extend(resolved.args.iter().cloned());
        let (approval_tx, mut approvals) = unbounded_channel::<PendingApproval>();
        let policy = match self.approval {
            ApprovalMode::Ask => {
                let host: Approver = Arc::new(move |req: &ApprovalRequest| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    if approval_tx.send((req.clone(), tx)).is_err() {
                        return Decision::reject("the chat is closed");
                    }
                    rx.recv().unwrap_or_else(|_| {
                        Decision::reject("the turn ended before the user answered")
                    })
                });
                ApprovalPolicy {
                    kind: PolicyKind::Host,
                    allow_commands: Vec::new(),
                    host: Some(host),
                }
            }
            ApprovalMode::Policy(kind) => ApprovalPolicy {
                kind,
                allow_commands: config.agent.allow_commands.clone(),
                host: (kind == PolicyKind::Host)
                    .then(|| self.omk.approver())
                    .flatten(),
            },
        };
        let spec = AgentSpec {
            program: program.clone(),
            extra_args,
            work_dir: self.work_dir.clone(),
            env: resolved.env.clone(),
            protocol: resolved.protocol,
            policy,
            start_timeout: resolved.start_timeout(),
            // The person at the prompt is right there: the model asks in
            // its answer instead of through a dismissed question.
            questions: false,
            mcp_servers: crate::mcp_config::acp_servers(&crate::mcp_config::load(&self.work_dir)?),
        };
        let runtime = self.omk.runtime()?;
        let (tx, mut notices) = agent::notice_channel();
        let agent = runtime.block_on(agent::start(&spec, tx))?;
        self.session.add_engine_event(
            "agent_start",
            json!({ "pid": agent.pid(), "program": program, "work_dir": self.work_dir,
                    "agent": resolved.name, "protocol": resolved.protocol.as_str(),
                    "agent_session": id, "approval": self.approval.as_str() }),
        )?;

        // Pick up the conversation so far, if any.
        let earlier = self.conversation()?;
        // An ACP agent's earlier session of this chat (recorded below).
        let acp_session = self.last_agent_session(&resolved.name);
        self.resume = Resume::New;
        self.context = None;
        if !earlier.is_empty() {
            let limit = Duration::from_secs(config.agent.start_timeout_secs.max(1));
            let replayed = runtime.block_on(async {
                let replay = async {
                    match &acp_session {
                        Some(id) => agent.load_session(id).await,
                        None => agent.replay().await,
                    }
                };
                tokio::pin!(replay);
                let deadline = tokio::time::sleep(limit);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        r = &mut replay => break r,
                        // The re-sent history is the agent's own, not this
                        // chat's events; drained so the agent's reader never
                        // waits on a full queue.
                        Some(_) = notices.recv() => {}
                        // History is not decided again (and an unanswered
                        // request would hold the replay forever).
                        Some((_, reply)) = approvals.recv() => {
                            let _ = reply.send(Decision::reject("a replayed request is not decided again"));
                        }
                        _ = &mut deadline => {
                            // A replay still running would make the next
                            // prompt fail as busy.
                            let _ = agent.cancel().await;
                            break Err(Error::Timeout(format!(
                                "replay took longer than {}s", limit.as_secs()
                            )));
                        }
                    }
                }
            });
            // The re-sent history is the agent's own: not this chat's events.
            while notices.try_recv().is_ok() {}
            match replayed {
                Ok(Some(r)) if r.events > 0 => {
                    self.resume = Resume::Agent { events: r.events };
                }
                other => {
                    if let Err(e) = other {
                        tracing::warn!("replay: {e}; sending the conversation as context");
                    }
                    let (text, messages) = context_text(&earlier);
                    self.context = Some(text);
                    self.resume = Resume::Context { messages };
                }
            }
            let resume = serde_json::to_value(&self.resume).unwrap_or_default();
            self.session.add_engine_event("resume", resume)?;
        }
        // An ACP agent names its session itself: remember it, so a resume
        // can `session/load` it.
        if let Some(id) = agent.session_id() {
            self.session
                .add_engine_event("agent_session", json!({ "agent": resolved.name, "id": id }))?;
        }
        self.session.sync()?;
        self.live = Some(Live {
            agent,
            notices,
            approvals,
        });
        Ok(())
    }

    /// The ACP session id the agent of profile `agent` last used in this
    /// chat, if it recorded one.
    fn last_agent_session(&self, agent: &str) -> Option<String> {
        let events = self.session.engine_events().ok()?;
        events
            .records
            .iter()
            .rev()
            .find(|e| e["type"] == "agent_session" && e["payload"]["agent"] == agent)
            .and_then(|e| e["payload"]["id"].as_str().map(str::to_owned))
    }

    /// Run one turn: send `input`, stream the answer to `observer`, and
    /// append both to the conversation. An agent that died is restarted
    /// first. A turn that fails (provider error, agent lost) is reported in
    /// the returned status; `Err` means the turn could not start.
    pub fn send(&mut self, input: &str, observer: &mut dyn ChatObserver) -> Result<ChatTurn> {
        if self.live.is_none() {
            self.start_agent()?;
        }
        self.session.add_message(Role::User, input)?;
        let mut parts = Vec::new();
        let with_context = self.context.is_some();
        if let Some(c) = &self.context {
            parts.push(c.clone());
        }
        parts.push(input.to_string());
        self.session.add_engine_event(
            "prompt",
            json!({ "text": input, "with_context": with_context }),
        )?;

        let runtime = self.omk.runtime()?;
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Agent("the agent is not running".into()));
        };
        let session = &mut self.session;
        let always = &mut self.always;
        let mut cancel_rx = self.cancel.inner.generation.subscribe();
        // A cancel asked for before this turn began is not for it.
        cancel_rx.borrow_and_update();
        self.cancel.inner.running.store(true, Ordering::SeqCst);
        let agent = live.agent.clone();
        let mut rec = Recorder::default();

        let mut cancels = 0u32;
        let result = runtime.block_on(async {
            let turn = agent.prompt_parts(&parts);
            tokio::pin!(turn);
            loop {
                tokio::select! {
                    biased;
                    r = &mut turn => break r,
                    Some(n) = live.notices.recv() => rec.notice(session, observer, &n),
                    Some((req, reply)) = live.approvals.recv() => {
                        let decision = if always.contains(&req.action) {
                            Decision::approve(format!(
                                "approved by the user for the rest of the chat ({})", req.action
                            ))
                        } else {
                            match observer.approve(&req) {
                                ApprovalAnswer::Approve => Decision::approve("approved by the user"),
                                ApprovalAnswer::Reject => Decision::reject("rejected by the user"),
                                ApprovalAnswer::Always => {
                                    always.insert(req.action.clone());
                                    Decision::approve(format!(
                                        "approved by the user for the rest of the chat ({})",
                                        req.action
                                    ))
                                }
                            }
                        };
                        let _ = reply.send(decision);
                    }
                    Ok(()) = cancel_rx.changed() => {
                        cancels += 1;
                        rec.flush(session);
                        let how = if cancels == 1 { "cancel" } else { "kill" };
                        let _ = session.add_engine_event("cancel", json!({ "how": how }));
                        if cancels == 1 {
                            let a = agent.clone();
                            tokio::spawn(async move {
                                if let Err(e) = a.cancel().await {
                                    tracing::warn!("cancel: {e}");
                                }
                            });
                        } else {
                            // It ignored the cancel: end the turn the hard way.
                            agent.kill();
                        }
                    }
                }
            }
        });
        self.cancel.inner.running.store(false, Ordering::SeqCst);
        // Events sent before the response are queued already.
        while let Ok(n) = live.notices.try_recv() {
            rec.notice(session, observer, &n);
        }
        // Approvals still waiting belong to a turn that is over.
        while let Ok((_, reply)) = live.approvals.try_recv() {
            let _ = reply.send(Decision::reject("the turn ended"));
        }
        rec.flush(session);

        let (status, usage, agent_lost) = match result {
            Ok(outcome) => (outcome.status, outcome.record.usage, false),
            Err(e) => {
                // Killed on a second cancel: the turn was cancelled, not failed.
                let cancelled = cancels >= 2;
                let _ = session.add_engine_event(
                    "agent_exit",
                    json!({ "error": e.to_string(), "stderr": agent.stderr_tail() }),
                );
                let status = if cancelled {
                    TurnStatus::Cancelled
                } else {
                    TurnStatus::Error {
                        code: crate::agent::protocol::codes::INTERNAL,
                        message: e.to_string(),
                    }
                };
                (status, agent.partial_turn().usage, true)
            }
        };
        let _ = session.add_engine_event(
            "turn_end",
            json!({ "status": status, "usage": usage, "chars": rec.answer.chars().count() }),
        );
        if !rec.answer.is_empty() {
            session.add_message(Role::Assistant, &rec.answer)?;
        }
        session.sync()?;
        if agent_lost {
            // The next turn starts a new agent, which picks up the session.
            if let Some(live) = self.live.take() {
                live.agent.kill();
            }
        } else if matches!(
            status,
            TurnStatus::Finished | TurnStatus::Cancelled | TurnStatus::MaxStepsReached { .. }
        ) {
            // The agent has the earlier conversation now.
            self.context = None;
        }
        Ok(ChatTurn {
            status,
            text: rec.answer,
            usage,
            agent_lost,
        })
    }

    /// Stop the agent (close its input, wait, then kill) and flush the logs.
    pub fn close(mut self) -> Result<()> {
        self.stop_agent()
    }

    fn stop_agent(&mut self) -> Result<()> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        let grace = Duration::from_secs(
            self.omk
                .config()
                .map(|c| c.team.stop_grace_secs)
                .unwrap_or(5),
        );
        let status = self
            .omk
            .runtime()?
            .block_on(live.agent.stop(grace))
            .map(|s| format!("{s}"));
        self.session
            .add_engine_event("agent_stop", json!({ "exit": status }))?;
        self.session.sync()
    }
}

impl Drop for ChatEngine {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.agent.kill();
        }
        let _ = self.session.sync();
    }
}

/// Folds a turn's notices into the engine events (text deltas merged into
/// one `ContentPart` record per run) and the streamed answer.
#[derive(Default)]
struct Recorder {
    answer: String,
    pending: Option<(&'static str, String)>,
}

impl Recorder {
    fn notice(
        &mut self,
        session: &mut ChatSession,
        observer: &mut dyn ChatObserver,
        n: &AgentNotice,
    ) {
        match n {
            AgentNotice::Event(WireEvent::Text(t)) => {
                self.answer.push_str(t);
                observer.text(t);
                self.buffer(session, "text", t);
            }
            AgentNotice::Event(WireEvent::Think(t)) => self.buffer(session, "think", t),
            other => {
                self.flush(session);
                observer.notice(other);
                let (kind, payload) = notice_record(other);
                if let Err(e) = session.add_engine_event(&kind, payload) {
                    tracing::warn!("engine-events: {e}");
                }
            }
        }
    }

    fn buffer(&mut self, session: &mut ChatSession, kind: &'static str, t: &str) {
        match &mut self.pending {
            Some((k, buf)) if *k == kind => buf.push_str(t),
            _ => {
                self.flush(session);
                self.pending = Some((kind, t.to_string()));
            }
        }
    }

    fn flush(&mut self, session: &mut ChatSession) {
        if let Some((kind, text)) = self.pending.take() {
            let payload = json!({ "type": kind, kind: text });
            if let Err(e) = session.add_engine_event("ContentPart", payload) {
                tracing::warn!("engine-events: {e}");
            }
        }
    }
}

/// One engine-events record for a notice: Wire events keep their Wire type
/// names; omk's own records are lower case.
fn notice_record(n: &AgentNotice) -> (String, Value) {
    match n {
        AgentNotice::Event(e) => event_record(e),
        AgentNotice::Approval { request, decision } => (
            "approval".into(),
            json!({ "request": request.summary(), "decision": decision }),
        ),
        AgentNotice::RequestAnswered { kind, answer } => (
            "request_answered".into(),
            json!({ "kind": kind, "answer": answer }),
        ),
        AgentNotice::Question { questions } => {
            ("question".into(), json!({ "questions": questions }))
        }
        AgentNotice::ProtocolViolation { line, reason } => (
            "protocol_violation".into(),
            json!({ "line": line, "reason": reason }),
        ),
        AgentNotice::StrayOutput { line } => ("stray_output".into(), json!({ "line": line })),
    }
}

fn event_record(e: &WireEvent) -> (String, Value) {
    let (kind, payload) = match e {
        WireEvent::TurnBegin => ("TurnBegin", json!({})),
        WireEvent::TurnEnd => ("TurnEnd", json!({})),
        WireEvent::StepBegin { n } => ("StepBegin", json!({ "n": n })),
        WireEvent::StepInterrupted => ("StepInterrupted", json!({})),
        WireEvent::StepRetry { payload } => ("StepRetry", payload.clone()),
        WireEvent::StatusUpdate {
            usage,
            context_tokens,
        } => (
            "StatusUpdate",
            json!({ "token_usage": usage, "context_tokens": context_tokens }),
        ),
        WireEvent::Text(t) => ("ContentPart", json!({ "type": "text", "text": t })),
        WireEvent::Think(t) => ("ContentPart", json!({ "type": "think", "think": t })),
        WireEvent::OtherContent(v) => ("ContentPart", v.clone()),
        WireEvent::ToolCall {
            id,
            name,
            arguments,
        } => (
            "ToolCall",
            json!({ "id": id, "name": name, "arguments": arguments }),
        ),
        WireEvent::ToolCallPart { arguments_part } => {
            ("ToolCallPart", json!({ "arguments_part": arguments_part }))
        }
        WireEvent::ToolResult {
            tool_call_id,
            is_error,
            message,
        } => (
            "ToolResult",
            json!({ "tool_call_id": tool_call_id, "is_error": is_error, "message": message }),
        ),
        WireEvent::ApprovalResponse {
            request_id,
            response,
        } => (
            "ApprovalResponse",
            json!({ "request_id": request_id, "response": response }),
        ),
        WireEvent::Plan { entries } => ("plan", json!({ "entries": entries })),
        WireEvent::ContextUsage { used, size, cost } => (
            "usage_update",
            json!({ "used": used, "size": size, "cost": cost }),
        ),
        WireEvent::Subagent { agent_id, event } => {
            let (k, p) = event_record(event);
            (
                "SubagentEvent",
                json!({ "agent_id": agent_id, "event": { "type": k, "payload": p } }),
            )
        }
        WireEvent::Known { kind, payload } | WireEvent::Unknown { kind, payload } => {
            return (kind.clone(), payload.clone())
        }
    };
    (kind.to_string(), payload)
}

/// The earlier conversation as one context part: the latest messages that
/// fit in [`CONTEXT_MAX_CHARS`]. Returns the text and how many messages it
/// carries.
fn context_text(messages: &[Message]) -> (String, usize) {
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for m in messages.iter().rev() {
        let who = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let line = format!("{who}: {}", m.text);
        let len = line.chars().count();
        if used + len > CONTEXT_MAX_CHARS && !kept.is_empty() {
            break;
        }
        used += len;
        kept.push(if len > CONTEXT_MAX_CHARS {
            // One huge message: keep its end, cut on a char boundary.
            let skip = len - CONTEXT_MAX_CHARS;
            format!("…{}", line.chars().skip(skip).collect::<String>())
        } else {
            line
        });
    }
    kept.reverse();
    let n = kept.len();
    let omitted = messages.len() - n;
    let mut text = String::from(
        "This conversation is being resumed. The earlier messages follow, oldest first; \
         answer only the new message after them.\n",
    );
    if omitted > 0 {
        text.push_str(&format!("({omitted} older messages omitted)\n"));
    }
    text.push('\n');
    text.push_str(&kept.join("\n\n"));
    (text, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> Message {
        Message {
            ts: "2026-05-21T10:00:00Z".into(),
            role,
            text: text.into(),
        }
    }

    #[test]
    fn context_keeps_the_latest_messages_within_the_cap() {
        let big = "é".repeat(CONTEXT_MAX_CHARS);
        let msgs = vec![
            msg(Role::User, "first"),
            msg(Role::Assistant, &big),
            msg(Role::User, "last question"),
        ];
        let (text, n) = context_text(&msgs);
        assert_eq!(n, 1, "the big message does not fit after the last one");
        assert!(text.contains("user: last question"));
        assert!(text.contains("(2 older messages omitted)"));
        let (text, n) = context_text(&msgs[..2]);
        assert_eq!(n, 1);
        assert!(
            text.contains('…'),
            "a single huge message is cut, not dropped"
        );
        let (text, n) = context_text(&msgs[..1]);
        assert_eq!(n, 1);
        assert!(text.ends_with("user: first"));
    }

    #[test]
    fn approval_modes_parse() {
        assert_eq!(ApprovalMode::parse("ask").unwrap(), ApprovalMode::Ask);
        assert_eq!(
            ApprovalMode::parse("approve-all").unwrap(),
            ApprovalMode::Policy(PolicyKind::ApproveAll)
        );
        assert_eq!(
            ApprovalMode::parse("yes").unwrap_err().code(),
            crate::ErrorCode::InvalidInput
        );
    }

    #[test]
    fn configured_approval_reads_only_explicit_settings() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.toml");
        let b = d.path().join("b.toml");
        std::fs::write(&a, "[agent]\napproval_policy = \"reject-all\"\n").unwrap();
        std::fs::write(&b, "[health]\nmin_free_disk_mb = 1\n").unwrap();
        let c = Config::load(std::slice::from_ref(&b), None).unwrap();
        assert_eq!(configured_approval(&c), None);
        let c = Config::load(&[a, b], None).unwrap();
        assert_eq!(configured_approval(&c).as_deref(), Some("reject-all"));
    }

    #[test]
    fn session_ops_list_and_read_without_writing() {
        let d = tempfile::tempdir().unwrap();
        let omk = Omk::open(crate::OpenOptions {
            state_dir: Some(d.path().join("s")),
            project_dir: Some(d.path().to_path_buf()),
            config: None,
        })
        .unwrap();
        let mut s = ChatSession::create(omk.paths(), omk.project_dir(), "plain").unwrap();
        s.add_message(Role::User, "hi").unwrap();
        let id = s.meta().id.clone();
        drop(s);
        let listed = omk.call("chat.sessions", &Value::Null).unwrap();
        assert_eq!(listed["sessions"][0]["id"], id.as_str());
        assert_eq!(listed["sessions"][0]["theme"], "plain");
        let conv = omk.call("chat.conversation", &json!({ "id": id })).unwrap();
        assert_eq!(conv["messages"][0]["text"], "hi");
        let e = omk
            .call("chat.conversation", &json!({ "id": "../x" }))
            .unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        let e = omk
            .call("chat.conversation", &json!({ "id": "s-none" }))
            .unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::NotFound);
        assert!(omk.call("chat.sessions", &json!({ "x": 1 })).is_err());
    }

    #[test]
    fn wire_events_keep_their_names() {
        let (k, p) = event_record(&WireEvent::StepBegin { n: 2 });
        assert_eq!((k.as_str(), p["n"].as_u64()), ("StepBegin", Some(2)));
        let (k, _) = event_record(&WireEvent::Unknown {
            kind: "FutureEventType".into(),
            payload: json!({}),
        });
        assert_eq!(k, "FutureEventType");
    }
}
