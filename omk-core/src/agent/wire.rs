//! The Kimi Wire 1.10 backend: `kimi --wire --work-dir DIR` over stdio.
//!
//! Rules learned on the real peer (WIRE.md): string ids only; one prompt in
//! flight; the `prompt` response, not `TurnEnd`, ends a turn; every request
//! from the agent gets an answer or the agent waits forever; unknown events
//! and fields are tolerated; graceful stop is closing stdin.

use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::Command;

use super::peer::{Answer, LineSink, Peer};
use super::protocol::{self, codes, AgentRequest, Incoming, TurnRecord, TurnStatus};
use super::{
    AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, BoxFuture, NoticeSender, TurnOutcome,
};
use crate::error::{Error, Result};

struct Shared {
    peer: Arc<Peer>,
    turn: Mutex<TurnRecord>,
    policy: ApprovalPolicy,
    work_dir: std::path::PathBuf,
    next_id: AtomicU64,
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
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        let what = format!(
            "{}; install kimi-cli or set OMK_KIMI_BIN",
            spec.program.display()
        );
        let (peer, stdout) = Peer::spawn(cmd, notices, &what)?;
        let shared = Arc::new(Shared {
            peer: peer.clone(),
            turn: Mutex::new(TurnRecord::default()),
            policy: spec.policy.clone(),
            work_dir: spec.work_dir.clone(),
            next_id: AtomicU64::new(1),
        });
        peer.read(stdout, shared.clone());
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
            *self.shared.turn() = TurnRecord::default();
            self.shared.peer.violations()
        };
        let response = self
            .request("prompt", json!({ "user_input": input }))
            .await?;
        let record = std::mem::take(&mut *self.shared.turn());
        Ok(TurnOutcome {
            status: TurnStatus::from_response(&response),
            record,
            protocol_violations: self.shared.peer.violations() - violations_before,
        })
    }

    /// Send a request and wait for its response.
    async fn request(&self, method: &str, params: Value) -> Result<Answer> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{method}-{n}");
        let line = protocol::encode_request(&id, method, params);
        self.shared.peer.request(id, &line, method).await
    }
}

impl Shared {
    fn turn(&self) -> std::sync::MutexGuard<'_, TurnRecord> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn answer(&self, req: AgentRequest) {
        let (line, notice) = match req {
            AgentRequest::Approval(request) => {
                let decision = self.policy.decide_async(&request, &self.work_dir).await;
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
        let _ = self.peer.write_line(&line).await;
        let _ = self.peer.notices().send(notice).await;
    }
}

impl LineSink for Shared {
    fn line<'a>(&'a self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match protocol::parse_line(text) {
                Ok(None) => {}
                Ok(Some(Incoming::Response { id, result })) => {
                    self.peer.resolve(&id, result);
                }
                Ok(Some(Incoming::Event(event))) => {
                    self.turn().observe(&event);
                    let _ = self.peer.notices().send(AgentNotice::Event(event)).await;
                }
                Ok(Some(Incoming::Request(req))) => self.answer(req).await,
                Err(violation) => self.peer.violation(text, violation.0).await,
            }
        })
    }
}

impl AgentBackend for WireAgent {
    fn pid(&self) -> u32 {
        self.shared.peer.pid()
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
        // Closing stdin is the Wire way to say goodbye.
        Box::pin(self.shared.peer.stop(grace))
    }

    fn kill(&self) {
        self.shared.peer.kill();
    }

    fn last_activity(&self) -> Instant {
        self.shared.peer.last_activity()
    }

    fn partial_turn(&self) -> TurnRecord {
        self.shared.turn().clone()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.shared.peer.exit_status()
    }

    fn stderr_tail(&self) -> String {
        self.shared.peer.stderr_tail()
    }
}

impl Drop for WireAgent {
    fn drop(&mut self) {
        // Never leave an agent running behind a dropped handle (the reader
        // task keeps the peer alive while the agent's output is open).
        if self.shared.peer.exit_status().is_none() {
            self.shared.peer.kill();
        }
    }
}
