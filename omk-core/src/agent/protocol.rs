//! Kimi Wire 1.10 messages (see WIRE.md): parsing what the agent sends and
//! encoding what omk sends. Pure functions, no I/O, so the parser can be
//! fuzzed and replayed against recordings.
//!
//! Forward compatibility: unknown event types, request types and fields are
//! kept (as [`WireEvent::Unknown`] / raw JSON), never an error.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The protocol version omk speaks.
pub const PROTOCOL_VERSION: &str = "1.10";

/// Longest line accepted from an agent: 16 MiB. A longer line is a
/// protocol violation that stops the agent (its worker is replaced and the
/// task retried); omk never buffers more than this of one line, so an agent
/// that prints without newlines cannot grow omk's memory (docs/teams.md).
/// (WIRE.md: kimi itself reads lines of up to 100 MiB; what kimi sends is a
/// streamed delta or one tool result, far below this.)
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Most answer text one turn keeps in memory ([`TurnRecord::text`]); the
/// transcript on disk has all of it.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// JSON-RPC error codes used by Wire (WIRE.md §2.8).
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const INVALID_STATE: i64 = -32000;
    pub const LLM_NOT_SET: i64 = -32001;
    pub const LLM_NOT_SUPPORTED: i64 = -32002;
    pub const PROVIDER_ERROR: i64 = -32003;
    pub const AUTH_EXPIRED: i64 = -32004;
}

/// Token usage of one LLM response, as in `StatusUpdate.token_usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    #[serde(default)]
    pub input_other: u64,
    #[serde(default)]
    pub output: u64,
    #[serde(default)]
    pub input_cache_read: u64,
    #[serde(default)]
    pub input_cache_creation: u64,
}

impl TokenUsage {
    /// All tokens, input (cached or not) plus output.
    pub fn total(&self) -> u64 {
        self.input_other + self.output + self.input_cache_read + self.input_cache_creation
    }

    pub fn add(&mut self, other: &TokenUsage) {
        self.input_other += other.input_other;
        self.output += other.output;
        self.input_cache_read += other.input_cache_read;
        self.input_cache_creation += other.input_cache_creation;
    }
}

/// Money (or credits) an agent reports having spent (ACP `usage_update`
/// `cost`), in the agent's own unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub amount: f64,
    /// ISO 4217 code such as `USD`, or the agent's own unit.
    pub currency: String,
}

/// An `ApprovalRequest` from the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// Both the JSON-RPC id and the `request_id` of the answer.
    pub id: String,
    pub tool_call_id: Option<String>,
    /// The tool asking ("WriteFile", "Shell", ...).
    pub sender: String,
    /// What it wants to do ("edit file", "run command", ...).
    pub action: String,
    pub description: String,
    /// Display blocks (`diff` with `path`, `shell` with `command`, ...).
    pub display: Vec<Value>,
    /// Set when a subagent asks.
    pub agent_id: Option<String>,
    /// The whole payload, for the record.
    pub raw: Value,
}

impl ApprovalRequest {
    /// Paths named by `diff` display blocks.
    pub fn paths(&self) -> Vec<&str> {
        self.display
            .iter()
            .filter(|b| b["type"] == "diff")
            .filter_map(|b| b["path"].as_str())
            .collect()
    }

    /// What a host approver is shown (C `omk_set_approver`, Python
    /// `approval=`): `id`, `sender`, `action`, `description`, `paths`,
    /// `commands`, `agent_id`.
    pub fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "sender": self.sender,
            "action": self.action,
            "description": self.description,
            "paths": self.paths(),
            "commands": self.commands(),
            "agent_id": self.agent_id,
        })
    }

    /// Commands named by `shell` display blocks.
    pub fn commands(&self) -> Vec<&str> {
        self.display
            .iter()
            .filter(|b| b["type"] == "shell")
            .filter_map(|b| b["command"].as_str())
            .collect()
    }
}

/// A request from the agent that omk must answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentRequest {
    Approval(ApprovalRequest),
    /// An external tool call (omk registers none today; answered with an error).
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// `AskUserQuestion` (only with `supports_question`; dismissed and
    /// reported).
    Question {
        id: String,
        payload: Value,
    },
    /// A subscribed hook (omk subscribes to none; allowed).
    Hook {
        id: String,
        payload: Value,
    },
    /// A request type this version does not know.
    Unknown {
        id: String,
        kind: String,
        payload: Value,
    },
}

impl AgentRequest {
    pub fn id(&self) -> &str {
        match self {
            AgentRequest::Approval(a) => &a.id,
            AgentRequest::ToolCall { id, .. }
            | AgentRequest::Question { id, .. }
            | AgentRequest::Hook { id, .. }
            | AgentRequest::Unknown { id, .. } => id,
        }
    }
}

/// An event notification from the agent (WIRE.md §2.5).
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    TurnBegin,
    TurnEnd,
    StepBegin {
        n: u64,
    },
    StepInterrupted,
    StepRetry {
        payload: Value,
    },
    StatusUpdate {
        usage: Option<TokenUsage>,
        context_tokens: Option<u64>,
    },
    /// A text delta of the answer.
    Text(String),
    /// A thinking delta: never part of the answer or a summary.
    Think(String),
    /// Other content (images, audio...).
    OtherContent(Value),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolCallPart {
        arguments_part: String,
    },
    ToolResult {
        tool_call_id: String,
        is_error: bool,
        message: String,
    },
    ApprovalResponse {
        request_id: String,
        response: String,
    },
    /// The agent's plan (ACP `plan`): its entries as sent.
    Plan {
        entries: Value,
    },
    /// Context window use (ACP `usage_update`): tokens in context, the
    /// window size, and the session's cumulative cost when reported.
    ContextUsage {
        used: Option<u64>,
        size: Option<u64>,
        cost: Option<Cost>,
    },
    /// A nested event from a subagent.
    Subagent {
        agent_id: String,
        event: Box<WireEvent>,
    },
    /// A documented event omk does not act on (compaction, hooks, plan
    /// display, notifications...).
    Known {
        kind: String,
        payload: Value,
    },
    /// An event type this version does not know.
    Unknown {
        kind: String,
        payload: Value,
    },
}

/// Event types of the 1.10 catalogue that omk records but does not act on.
const PASSIVE_EVENTS: &[&str] = &[
    "CompactionBegin",
    "CompactionEnd",
    "SteerInput",
    "PlanDisplay",
    "BtwBegin",
    "BtwEnd",
    "HookTriggered",
    "HookResolved",
    "MCPLoadingBegin",
    "MCPLoadingEnd",
    "Notification",
    "ApprovalRequestResolved",
];

/// One line from the agent, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of omk's requests.
    Response {
        id: String,
        result: Result<Value, RpcError>,
    },
    Event(WireEvent),
    Request(AgentRequest),
}

/// Why a line was not a valid Wire message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolViolation(pub String);

impl std::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse one line sent by the agent. Surrounding whitespace (CRLF) is
/// tolerated; a blank line is `Ok(None)`.
pub fn parse_line(line: &str) -> Result<Option<Incoming>, ProtocolViolation> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_str(line).map_err(|e| ProtocolViolation(format!("not JSON: {e}")))?;
    parse_message(value).map(Some)
}

/// Classify a decoded JSON-RPC message from the agent.
pub fn parse_message(value: Value) -> Result<Incoming, ProtocolViolation> {
    let Value::Object(mut msg) = value else {
        return Err(ProtocolViolation("message is not a JSON object".into()));
    };
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    match method.as_deref() {
        Some("event") => {
            let params = take_object(&mut msg, "params")?;
            Ok(Incoming::Event(parse_event(params)?))
        }
        Some("request") => {
            let id = string_id(&msg)?;
            let params = take_object(&mut msg, "params")?;
            Ok(Incoming::Request(parse_request(id, params)?))
        }
        Some(other) => Err(ProtocolViolation(format!(
            "unexpected method {other:?} from the agent"
        ))),
        None => {
            let id = string_id(&msg)?;
            if let Some(err) = msg.remove("error") {
                let err: RpcError = serde_json::from_value(err)
                    .map_err(|e| ProtocolViolation(format!("malformed error object: {e}")))?;
                Ok(Incoming::Response {
                    id,
                    result: Err(err),
                })
            } else if let Some(result) = msg.remove("result") {
                Ok(Incoming::Response {
                    id,
                    result: Ok(result),
                })
            } else {
                Err(ProtocolViolation(
                    "response has neither result nor error".into(),
                ))
            }
        }
    }
}

fn string_id(msg: &Map<String, Value>) -> Result<String, ProtocolViolation> {
    match msg.get("id") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) => Ok(String::new()),
        Some(other) => Err(ProtocolViolation(format!("id is not a string: {other}"))),
        None => Err(ProtocolViolation("message has no id".into())),
    }
}

fn take_object(
    msg: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, ProtocolViolation> {
    match msg.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(Value::Null) | None => Ok(Map::new()),
        Some(other) => Err(ProtocolViolation(format!(
            "{key} is not an object: {other}"
        ))),
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Parse `params` of an `event` notification: `{type, payload}`.
pub fn parse_event(mut params: Map<String, Value>) -> Result<WireEvent, ProtocolViolation> {
    let kind = match params.remove("type") {
        Some(Value::String(s)) => s,
        _ => return Err(ProtocolViolation("event without a string type".into())),
    };
    let payload = params.remove("payload").unwrap_or(Value::Null);
    Ok(match kind.as_str() {
        "TurnBegin" => WireEvent::TurnBegin,
        "TurnEnd" => WireEvent::TurnEnd,
        "StepBegin" => WireEvent::StepBegin {
            n: payload["n"].as_u64().unwrap_or(0),
        },
        "StepInterrupted" => WireEvent::StepInterrupted,
        "StepRetry" => WireEvent::StepRetry { payload },
        "StatusUpdate" => WireEvent::StatusUpdate {
            usage: payload
                .get("token_usage")
                .filter(|u| u.is_object())
                .and_then(|u| serde_json::from_value(u.clone()).ok()),
            context_tokens: payload["context_tokens"].as_u64(),
        },
        "ContentPart" => match payload["type"].as_str() {
            Some("text") => WireEvent::Text(str_of(&payload, "text")),
            Some("think") => WireEvent::Think(str_of(&payload, "think")),
            _ => WireEvent::OtherContent(payload),
        },
        "ToolCall" => WireEvent::ToolCall {
            id: str_of(&payload, "id"),
            name: str_of(&payload["function"], "name"),
            arguments: str_of(&payload["function"], "arguments"),
        },
        "ToolCallPart" => WireEvent::ToolCallPart {
            arguments_part: str_of(&payload, "arguments_part"),
        },
        "ToolResult" => WireEvent::ToolResult {
            tool_call_id: str_of(&payload, "tool_call_id"),
            is_error: payload["return_value"]["is_error"]
                .as_bool()
                .unwrap_or(false),
            message: str_of(&payload["return_value"], "message"),
        },
        "ApprovalResponse" => WireEvent::ApprovalResponse {
            request_id: str_of(&payload, "request_id"),
            response: str_of(&payload, "response"),
        },
        "SubagentEvent" => {
            let inner = match payload.get("event") {
                Some(Value::Object(m)) => parse_event(m.clone())?,
                _ => return Err(ProtocolViolation("SubagentEvent without an event".into())),
            };
            WireEvent::Subagent {
                agent_id: str_of(&payload, "agent_id"),
                event: Box::new(inner),
            }
        }
        k if PASSIVE_EVENTS.contains(&k) => WireEvent::Known { kind, payload },
        _ => WireEvent::Unknown { kind, payload },
    })
}

fn parse_request(
    id: String,
    mut params: Map<String, Value>,
) -> Result<AgentRequest, ProtocolViolation> {
    let kind = match params.remove("type") {
        Some(Value::String(s)) => s,
        _ => return Err(ProtocolViolation("request without a string type".into())),
    };
    let payload = params.remove("payload").unwrap_or(Value::Null);
    Ok(match kind.as_str() {
        "ApprovalRequest" => AgentRequest::Approval(ApprovalRequest {
            // WIRE.md: the JSON-RPC id equals payload.id; answer with the id we got.
            id,
            tool_call_id: opt_str(&payload, "tool_call_id"),
            sender: str_of(&payload, "sender"),
            action: str_of(&payload, "action"),
            description: str_of(&payload, "description"),
            display: payload["display"].as_array().cloned().unwrap_or_default(),
            agent_id: opt_str(&payload, "agent_id"),
            raw: payload,
        }),
        "ToolCallRequest" => AgentRequest::ToolCall {
            id,
            name: str_of(&payload, "name"),
            arguments: str_of(&payload, "arguments"),
        },
        "QuestionRequest" => AgentRequest::Question { id, payload },
        "HookRequest" => AgentRequest::Hook { id, payload },
        _ => AgentRequest::Unknown { id, kind, payload },
    })
}

/// Encode a request from omk (ids are strings, WIRE.md §2.1).
pub fn encode_request(id: &str, method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
}

/// Encode omk's answer to an agent request.
pub fn encode_response(id: &str, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()
}

/// Encode an error answer to an agent request.
pub fn encode_error(id: &str, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }).to_string()
}

/// `initialize` params for omk as the client; `questions` declares
/// `supports_question` (kimi shows `AskUserQuestion` to the model only then).
pub fn initialize_params(questions: bool) -> Value {
    json!({
        "protocol_version": PROTOCOL_VERSION,
        "client": { "name": "omk", "version": crate::VERSION },
        "capabilities": { "supports_question": questions, "supports_plan_mode": false },
    })
}

/// The question texts of a `QuestionRequest` payload.
pub fn question_texts(payload: &Value) -> Vec<String> {
    payload
        .get("questions")
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q.get("question").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// How a turn ended, from the `prompt` response (the authoritative end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TurnStatus {
    Finished,
    Cancelled,
    MaxStepsReached {
        steps: u64,
    },
    /// The agent ended the turn without finishing the work (ACP
    /// `stopReason` `max_tokens`, `max_turn_requests` or `refusal`).
    Stopped {
        reason: String,
    },
    /// The turn ended with a JSON-RPC error (provider error, LLM not set...).
    Error {
        code: i64,
        message: String,
    },
}

impl TurnStatus {
    /// Decode the `prompt` response.
    pub fn from_response(result: &Result<Value, RpcError>) -> TurnStatus {
        match result {
            Ok(v) => match v["status"].as_str() {
                Some("finished") => TurnStatus::Finished,
                Some("cancelled") => TurnStatus::Cancelled,
                Some("max_steps_reached") => TurnStatus::MaxStepsReached {
                    steps: v["steps"].as_u64().unwrap_or(0),
                },
                other => TurnStatus::Error {
                    code: codes::INTERNAL,
                    message: format!("unknown prompt status {other:?}"),
                },
            },
            Err(e) => TurnStatus::Error {
                code: e.code,
                message: e.message.clone(),
            },
        }
    }
}

/// What one turn produced, accumulated from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The answer: text deltas concatenated exactly (no separators), think
    /// parts excluded.
    pub text: String,
    /// Sum of every `StatusUpdate.token_usage` of the turn, subagents included.
    pub usage: TokenUsage,
    pub steps: u64,
    pub events: u64,
    pub tool_calls: u64,
    pub unknown_events: u64,
    pub saw_turn_end: bool,
    /// The answer was longer than [`MAX_ANSWER_BYTES`]; `text` holds its start.
    pub text_truncated: bool,
    /// What the turn cost, when the agent reports cost (ACP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

impl TurnRecord {
    /// Fold one event into the record.
    pub fn observe(&mut self, event: &WireEvent) {
        self.events += 1;
        match event {
            WireEvent::Text(t) => {
                let room = MAX_ANSWER_BYTES.saturating_sub(self.text.len());
                if t.len() <= room {
                    self.text.push_str(t);
                } else {
                    let mut cut = room;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    self.text.push_str(&t[..cut]);
                    self.text_truncated = true;
                }
            }
            WireEvent::StepBegin { .. } => self.steps += 1,
            WireEvent::TurnEnd => self.saw_turn_end = true,
            WireEvent::ToolCall { .. } => self.tool_calls += 1,
            WireEvent::StatusUpdate { usage: Some(u), .. } => self.usage.add(u),
            WireEvent::Unknown { .. } => self.unknown_events += 1,
            WireEvent::Subagent { event, .. } => match event.as_ref() {
                WireEvent::StatusUpdate { usage: Some(u), .. } => self.usage.add(u),
                WireEvent::Unknown { .. } => self.unknown_events += 1,
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_kinds() {
        let ev = parse_line(
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"StepBegin","payload":{"n":2}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ev, Incoming::Event(WireEvent::StepBegin { n: 2 }));
        let resp = parse_line(r#"{"jsonrpc":"2.0","id":"p-1","result":{"status":"finished"}}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(resp, Incoming::Response { ref id, result: Ok(_) } if id == "p-1"));
        let err = parse_line(
            r#"{"jsonrpc":"2.0","id":"p-1","error":{"code":-32003,"message":"boom","data":null}}"#,
        )
        .unwrap()
        .unwrap();
        let Incoming::Response { result: Err(e), .. } = err else {
            panic!()
        };
        assert_eq!((e.code, e.message.as_str()), (-32003, "boom"));
        assert_eq!(parse_line("  \r\n").unwrap(), None);
        assert!(parse_line("{\"jsonrpc\": \"2.0\", \"method\": \"event\", \"params\": {").is_err());
        assert!(parse_line(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#).is_err());
    }

    #[test]
    fn unknown_types_and_fields_are_tolerated() {
        let ev = parse_line(r#"{"jsonrpc":"2.0","method":"event","params":{"type":"FutureThing","payload":{"x":1}},"extra":true}"#)
            .unwrap()
            .unwrap();
        let Incoming::Event(WireEvent::Unknown { kind, .. }) = ev else {
            panic!()
        };
        assert_eq!(kind, "FutureThing");
        let mut rec = TurnRecord::default();
        rec.observe(&WireEvent::Unknown {
            kind,
            payload: Value::Null,
        });
        assert_eq!(rec.unknown_events, 1);
    }

    #[test]
    fn text_chunks_concatenate_without_separators_and_think_is_excluded() {
        let mut rec = TurnRecord::default();
        for e in [
            WireEvent::Think("hmm".into()),
            WireEvent::Text("[\"a\",".into()),
            WireEvent::Text("\"b\"]".into()),
        ] {
            rec.observe(&e);
        }
        assert_eq!(rec.text, "[\"a\",\"b\"]");
    }
}
