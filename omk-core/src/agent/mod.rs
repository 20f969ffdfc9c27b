//! Agents: the [`AgentBackend`] trait and its two implementations, Kimi
//! Wire 1.10 ([`wire`]) and the Agent Client Protocol ([`acp`]).
//!
//! An agent is a child process in its own process group, speaking JSON-RPC
//! on stdio. The backend starts it, sends prompts, reports every event and
//! approval decision to its owner as an [`AgentNotice`], answers every
//! request the agent makes, and cancels, stops or kills it.

pub mod acp;
pub mod approval;
pub mod input;
pub mod peer;
pub mod protocol;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use approval::{ApprovalPolicy, Approver, Decision, PolicyKind};
pub use protocol::{ApprovalRequest, TokenUsage, TurnRecord, TurnStatus, WireEvent};

use crate::config::AgentProtocol;
use crate::error::Result;

/// A boxed, sendable future (keeps [`AgentBackend`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The executable (already resolved).
    pub program: PathBuf,
    /// Arguments: for Wire after omk's own (`--wire --work-dir DIR`); for
    /// ACP the whole argument list (`acp` for `kimi acp`).
    pub extra_args: Vec<String>,
    /// Where the agent works.
    pub work_dir: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    pub protocol: AgentProtocol,
    pub policy: ApprovalPolicy,
    /// Deadline for the process to start and answer `initialize`.
    pub start_timeout: Duration,
    /// Declare `supports_question`, so the agent may ask (`AskUserQuestion`).
    /// omk never answers a question itself: it dismisses it and reports it as
    /// [`AgentNotice::Question`], so the owner can stop for a human.
    pub questions: bool,
    /// MCP servers offered to the agent's sessions (ACP `session/new`
    /// `mcpServers`, already in ACP's shape).
    pub mcp_servers: Vec<serde_json::Value>,
}

/// What an agent reports to its owner while it runs.
#[derive(Debug, Clone)]
pub enum AgentNotice {
    /// Any event notification.
    Event(WireEvent),
    /// An approval request and omk's answer.
    Approval {
        request: ApprovalRequest,
        decision: Decision,
    },
    /// Another request omk answered (external tool, hook, unknown type).
    RequestAnswered { kind: String, answer: String },
    /// The agent asked the user (`QuestionRequest`); omk dismissed it.
    Question { questions: Vec<String> },
    /// A line that was not a valid protocol message.
    ProtocolViolation { line: String, reason: String },
    /// A line that is not JSON at all (an ACP agent's start-up banner or
    /// warning): recorded and tolerated, up to [`acp::MAX_STRAY_LINES`].
    StrayOutput { line: String },
}

/// The result of one prompt turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnOutcome {
    /// From the `prompt` response, the authoritative end of the turn.
    pub status: TurnStatus,
    /// What the events of the turn added up to.
    pub record: TurnRecord,
    /// Invalid lines seen during the turn.
    pub protocol_violations: u64,
}

/// A running agent. Methods take `&self` so one task can `cancel` while
/// another awaits `prompt`.
pub trait AgentBackend: Send + Sync {
    /// OS process id (also its process group id).
    fn pid(&self) -> u32;
    /// Run one turn. One turn at a time per agent.
    fn prompt<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<TurnOutcome>>;
    /// Ask the running turn to stop; the pending `prompt` then returns
    /// `Cancelled`. A no-op when no turn runs.
    fn cancel(&self) -> BoxFuture<'_, Result<()>>;
    /// Close stdin, wait up to `grace`, then kill the process group.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, Option<ExitStatus>>;
    /// Kill the process group now.
    fn kill(&self);
    /// When the agent last sent anything.
    fn last_activity(&self) -> Instant;
    /// What the current (or last) turn has produced so far: usage and text
    /// of a turn that ended without a response (crash, kill).
    fn partial_turn(&self) -> TurnRecord;
    /// The exit status, once it has exited.
    fn exit_status(&self) -> Option<ExitStatus>;
    /// The last few KiB of stderr (redacted), for error reports.
    fn stderr_tail(&self) -> String;

    /// Run one turn whose input is several text parts (Wire `ContentPart`
    /// list): earlier parts carry context, the last one is what was typed.
    /// Backends without multi-part input get the parts joined by blank lines.
    fn prompt_parts<'a>(&'a self, parts: &'a [String]) -> BoxFuture<'a, Result<TurnOutcome>> {
        Box::pin(async move {
            let joined = parts.join("\n\n");
            self.prompt(&joined).await
        })
    }

    /// Start the next task with no context from earlier ones: ACP opens a
    /// fresh session in the same agent process (no cold start per task).
    /// Wire keeps its one session (a no-op).
    fn fresh_context(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The agent's own id of the session it talks in, when the protocol
    /// has one the client must remember (ACP); `None` for Wire, whose
    /// session id is the client's (`--session`).
    fn session_id(&self) -> Option<String> {
        None
    }

    /// Reopen the agent's earlier session `id` (ACP `session/load`, when the
    /// agent advertises `loadSession`); the agent re-sends its history as
    /// notices. `Ok(None)` when the agent cannot.
    fn load_session<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<Option<ReplaySummary>>> {
        Box::pin(async { Ok(None) })
    }

    /// Ask the agent to re-send the history of the session it resumed (Wire
    /// `replay`). `Ok(None)` when the backend has no such request; the
    /// events it re-sends arrive as notices like any other.
    fn replay(&self) -> BoxFuture<'_, Result<Option<ReplaySummary>>> {
        Box::pin(async { Ok(None) })
    }
}

/// What a `replay` request reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// `finished` or `cancelled`.
    pub status: String,
    /// How many recorded events the agent re-sent (0: nothing to resume).
    pub events: u64,
    /// How many recorded requests it re-sent.
    pub requests: u64,
}

/// How many notices may wait for their consumer. A full queue makes the
/// agent's reader wait, and so the agent's writes: an agent that floods
/// events is slowed to the speed omk records them, never buffered without
/// bound.
pub const NOTICE_QUEUE: usize = 1024;

/// Where an agent's notices go.
pub type NoticeSender = mpsc::Sender<AgentNotice>;
/// What a consumer reads an agent's notices from.
pub type NoticeReceiver = mpsc::Receiver<AgentNotice>;

/// A bounded notice queue of [`NOTICE_QUEUE`] entries. Its consumer must
/// keep reading while the agent runs.
pub fn notice_channel() -> (NoticeSender, NoticeReceiver) {
    mpsc::channel(NOTICE_QUEUE)
}

/// Start an agent with the backend its protocol names.
pub async fn start(spec: &AgentSpec, notices: NoticeSender) -> Result<Arc<dyn AgentBackend>> {
    match spec.protocol {
        AgentProtocol::Wire => Ok(wire::WireAgent::start(spec, notices).await?),
        AgentProtocol::Acp => Ok(acp::AcpAgent::start(spec, notices).await?),
    }
}
