//! ACP (Agent Client Protocol, version 1) messages as omk reads and writes
//! them: pure functions, no I/O, so they are unit-tested against recorded
//! traffic of real agents.
//!
//! Everything is read from `serde_json::Value` rather than strict schema
//! types: real agents add vendor fields, new `sessionUpdate` kinds and
//! `_meta` everywhere, and omk must keep working (and keep what it does not
//! understand) rather than fail a whole message on one unknown field.

use std::path::Path;

use serde_json::{json, Value};

use super::super::peer::{id_key, Answer};
use super::super::protocol::{ApprovalRequest, Cost, TokenUsage, TurnStatus, WireEvent};

/// The ACP protocol version omk speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// JSON-RPC error codes omk answers with.
pub mod codes {
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// ACP: the resource (a file) cannot be used.
    pub const RESOURCE: i64 = -32002;
}

/// `sessionUpdate` kinds omk records but does not act on.
const PASSIVE_UPDATES: &[&str] = &[
    "user_message_chunk",
    "available_commands_update",
    "current_mode_update",
    "config_option_update",
    "session_info_update",
    "plan_update",
    "plan_removed",
];

/// One line from the agent, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of omk's requests (`key`: [`id_key`] of its id).
    Response { key: String, answer: Answer },
    /// A notification (`session/update`, vendor methods...).
    Notification { method: String, params: Value },
    /// A request omk must answer, with the id to answer it with.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
}

/// Why a line is not something omk can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not JSON at all (start-up text, warnings): tolerated, up to a bound.
    NotJson,
    /// JSON, but not a JSON-RPC message omk understands: a protocol violation.
    Invalid(String),
}

/// Classify one line. A blank line is `Ok(None)`.
pub fn classify(line: &str) -> Result<Option<Incoming>, Unusable> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return Err(Unusable::NotJson);
    };
    let Value::Object(mut msg) = value else {
        return Err(Unusable::Invalid("message is not a JSON object".into()));
    };
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    let params = msg.remove("params").unwrap_or(Value::Null);
    match (method, msg.remove("id")) {
        (Some(method), None | Some(Value::Null)) => {
            Ok(Some(Incoming::Notification { method, params }))
        }
        (Some(method), Some(id)) => {
            if id_key(&id).is_none() {
                return Err(Unusable::Invalid(format!(
                    "request id is neither a string nor a number: {id}"
                )));
            }
            Ok(Some(Incoming::Request { id, method, params }))
        }
        (None, Some(id)) => {
            let key = id_key(&id)
                .ok_or_else(|| Unusable::Invalid(format!("response id is not usable: {id}")))?;
            let answer = if let Some(err) = msg.remove("error") {
                Err(serde_json::from_value(err)
                    .map_err(|e| Unusable::Invalid(format!("malformed error object: {e}")))?)
            } else if let Some(result) = msg.remove("result") {
                Ok(result)
            } else {
                return Err(Unusable::Invalid(
                    "response has neither result nor error".into(),
                ));
            };
            Ok(Some(Incoming::Response { key, answer }))
        }
        (None, None) => Err(Unusable::Invalid(
            "message has neither a method nor an id".into(),
        )),
    }
}

/// Encode a request from omk (integer ids, as ACP clients use).
pub fn encode_request(id: u64, method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
}

/// Encode a notification from omk.
pub fn encode_notification(method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "method": method, "params": params }).to_string()
}

/// Encode omk's answer to an agent request.
pub fn encode_response(id: &Value, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()
}

/// Encode an error answer to an agent request.
pub fn encode_error(id: &Value, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }).to_string()
}

/// `initialize` params: protocol version 1, omk as the client, and the
/// capabilities omk serves itself.
pub fn initialize_params(terminal: bool) -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {
            "fs": { "readTextFile": true, "writeTextFile": true },
            "terminal": terminal,
        },
        "clientInfo": { "name": "omk", "title": "omk", "version": crate::VERSION },
    })
}

/// What `initialize` told omk about the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    pub protocol_version: u64,
    /// `agentInfo.name` and `.version` when the agent sent them.
    pub name: Option<String>,
    pub version: Option<String>,
    /// `agentCapabilities.loadSession`.
    pub load_session: bool,
    /// `agentCapabilities.mcpCapabilities.http`: MCP servers over HTTP.
    pub mcp_http: bool,
    /// Names of the `authMethods` it offers (for the error when a session
    /// needs a login).
    pub auth_methods: Vec<String>,
}

/// Read the `initialize` result; an agent that does not speak version 1 is
/// refused.
pub fn parse_initialize(result: &Value) -> Result<AgentInfo, String> {
    let version = result["protocolVersion"]
        .as_u64()
        .ok_or_else(|| format!("initialize answered without a protocolVersion: {result}"))?;
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "the agent speaks ACP protocol version {version}; omk speaks version {PROTOCOL_VERSION}"
        ));
    }
    let info = &result["agentInfo"];
    Ok(AgentInfo {
        protocol_version: version,
        name: info["name"].as_str().map(str::to_owned),
        version: info["version"].as_str().map(str::to_owned),
        load_session: result["agentCapabilities"]["loadSession"]
            .as_bool()
            .unwrap_or(false),
        mcp_http: result["agentCapabilities"]["mcpCapabilities"]["http"]
            .as_bool()
            .unwrap_or(false),
        auth_methods: result["authMethods"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["name"].as_str().or(m["id"].as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// `session/new` params.
pub fn new_session_params(cwd: &Path, mcp_servers: &[Value]) -> Value {
    json!({ "cwd": cwd, "mcpServers": mcp_servers })
}

/// `session/prompt` params: each part one text block.
pub fn prompt_params(session: &str, parts: &[String]) -> Value {
    let blocks: Vec<Value> = parts
        .iter()
        .map(|p| json!({ "type": "text", "text": p }))
        .collect();
    json!({ "sessionId": session, "prompt": blocks })
}

/// How a turn ended, from the `session/prompt` answer.
pub fn turn_status(answer: &Answer) -> TurnStatus {
    match answer {
        Ok(v) => match v["stopReason"].as_str() {
            Some("end_turn") => TurnStatus::Finished,
            Some("cancelled") => TurnStatus::Cancelled,
            Some(r @ ("max_tokens" | "max_turn_requests" | "refusal")) => TurnStatus::Stopped {
                reason: r.to_string(),
            },
            other => TurnStatus::Error {
                code: codes::INTERNAL,
                message: format!("unknown stopReason {other:?}"),
            },
        },
        Err(e) => TurnStatus::Error {
            code: e.code,
            message: e.message.clone(),
        },
    }
}

/// Token usage on a `session/prompt` answer (`usage`), when present.
///
/// Where the answer has no `usage`, the vendor `_meta.quota.token_count`
/// Gemini CLI sends (`input_tokens` / `output_tokens`, summed over the
/// turn's model calls) is read instead.
pub fn response_usage(answer: &Answer) -> Option<TokenUsage> {
    let result = answer.as_ref().ok()?;
    if let Some(u) = result.get("usage").and_then(usage_of) {
        return Some(u);
    }
    let q = result.get("_meta")?.get("quota")?.get("token_count")?;
    if q.get("input_tokens").is_none() && q.get("output_tokens").is_none() {
        return usage_of(q);
    }
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    Some(TokenUsage {
        input_other: n("input_tokens"),
        output: n("output_tokens"),
        input_cache_read: n("cached_input_tokens"),
        input_cache_creation: 0,
    })
}

/// Vendor token usage on an update (`update._meta.usage`, as qwen-code
/// sends it at the end of each model step), when present.
pub fn meta_usage(params: &Value) -> Option<TokenUsage> {
    usage_of(params["update"].get("_meta")?.get("usage")?)
}

fn usage_of(u: &Value) -> Option<TokenUsage> {
    if !u.is_object() || u.get("inputTokens").is_none() && u.get("outputTokens").is_none() {
        return None;
    }
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    Some(TokenUsage {
        input_other: n("inputTokens"),
        output: n("outputTokens"),
        input_cache_read: n("cachedReadTokens"),
        input_cache_creation: n("cachedWriteTokens"),
    })
}

/// A `session/update` notification: its session and the update as an event.
pub fn parse_update(params: &Value) -> Result<(String, WireEvent), String> {
    let session = params["sessionId"]
        .as_str()
        .ok_or("session/update without a sessionId")?
        .to_string();
    let update = &params["update"];
    let kind = update["sessionUpdate"]
        .as_str()
        .ok_or("session/update without an update.sessionUpdate kind")?;
    let event = match kind {
        "agent_message_chunk" => match content_text(&update["content"]) {
            Some(t) => WireEvent::Text(t.to_string()),
            None => WireEvent::OtherContent(update["content"].clone()),
        },
        "agent_thought_chunk" => {
            WireEvent::Think(content_text(&update["content"]).unwrap_or("").to_string())
        }
        "tool_call" => WireEvent::ToolCall {
            id: str_of(update, "toolCallId"),
            name: tool_name(update),
            arguments: match &update["rawInput"] {
                Value::Null => String::new(),
                v => v.to_string(),
            },
        },
        "tool_call_update" => match update["status"].as_str() {
            Some(s @ ("completed" | "failed")) => WireEvent::ToolResult {
                tool_call_id: str_of(update, "toolCallId"),
                is_error: s == "failed",
                message: tool_output(update),
            },
            _ => WireEvent::Known {
                kind: kind.to_string(),
                payload: update.clone(),
            },
        },
        "plan" => WireEvent::Plan {
            entries: update["entries"].clone(),
        },
        "usage_update" => WireEvent::ContextUsage {
            used: update["used"].as_u64(),
            size: update["size"].as_u64(),
            cost: update["cost"]["amount"].as_f64().map(|amount| Cost {
                amount,
                currency: update["cost"]["currency"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            }),
        },
        k if PASSIVE_UPDATES.contains(&k) => WireEvent::Known {
            kind: k.to_string(),
            payload: update.clone(),
        },
        k => WireEvent::Unknown {
            kind: k.to_string(),
            payload: update.clone(),
        },
    };
    Ok((session, event))
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// The text of a text content block.
fn content_text(block: &Value) -> Option<&str> {
    (block["type"] == "text").then(|| block["text"].as_str())?
}

/// A tool call's name: its title, else its kind.
fn tool_name(update: &Value) -> String {
    update["title"]
        .as_str()
        .or(update["kind"].as_str())
        .unwrap_or("tool")
        .to_string()
}

/// The first text a finished tool call shows (its output), cut to 200 chars.
fn tool_output(update: &Value) -> String {
    let text = update["content"].as_array().and_then(|items| {
        items
            .iter()
            .find_map(|c| (c["type"] == "content").then(|| content_text(&c["content"]))?)
    });
    text.unwrap_or("").chars().take(200).collect()
}

/// A `session/request_permission` request as omk's approval request, so the
/// same policies decide it as for Wire: edits (`edit`, `delete`, `move`, or
/// a tool call that shows a diff) are `edit file` with the paths they touch;
/// `execute` is `run command` with its command; `read` and `search` are
/// `read file`; anything else keeps its kind as the action.
pub fn permission_request(id: &Value, params: &Value) -> ApprovalRequest {
    let call = &params["toolCall"];
    let kind = call["kind"].as_str().unwrap_or("");
    let content = call["content"].as_array().cloned().unwrap_or_default();
    let mut paths: Vec<String> = content
        .iter()
        .filter(|c| c["type"] == "diff")
        .filter_map(|c| c["path"].as_str().map(str::to_owned))
        .collect();
    for loc in call["locations"].as_array().into_iter().flatten() {
        if let Some(p) = loc["path"].as_str() {
            if !paths.iter().any(|q| q == p) {
                paths.push(p.to_string());
            }
        }
    }
    let raw_input = &call["rawInput"];
    // The tool's own input names the file when the diff and locations do
    // not (Claude Code's Write); otherwise it is the same file, spelled
    // relative to the agent's cwd.
    if paths.is_empty() {
        for key in ["file_path", "path", "filePath", "notebook_path"] {
            if let Some(p) = raw_input[key].as_str() {
                if !paths.iter().any(|q| q == p) {
                    paths.push(p.to_string());
                }
            }
        }
    }
    let shows_diff = content.iter().any(|c| c["type"] == "diff");
    let command = match &raw_input["command"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    let action = match kind {
        "edit" | "delete" | "move" => "edit file",
        "execute" => "run command",
        "read" | "search" => "read file",
        _ if shows_diff => "edit file",
        _ if command.is_some() => "run command",
        "" => "other",
        k => k,
    };
    let mut display: Vec<Value> = Vec::new();
    if action == "edit file" || action == "read file" {
        display.extend(paths.iter().map(|p| json!({ "type": "diff", "path": p })));
    }
    if action == "run command" {
        let command = command.unwrap_or_else(|| str_of(call, "title"));
        display.push(json!({ "type": "shell", "command": command }));
    }
    ApprovalRequest {
        id: id_key(id).unwrap_or_default(),
        tool_call_id: call["toolCallId"].as_str().map(str::to_owned),
        sender: if kind.is_empty() {
            tool_name(call)
        } else {
            kind.to_string()
        },
        action: action.to_string(),
        description: str_of(call, "title"),
        display,
        agent_id: None,
        raw: params.clone(),
    }
}

/// The answer to a permission request: the option of the right kind
/// (`allow_once`, else `allow_always`; `reject_once`, else
/// `reject_always`), or `cancelled` when the agent offers none.
pub fn permission_answer(params: &Value, approved: bool) -> Value {
    let kinds: [&str; 2] = if approved {
        ["allow_once", "allow_always"]
    } else {
        ["reject_once", "reject_always"]
    };
    let options = params["options"].as_array().cloned().unwrap_or_default();
    let chosen = kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o["kind"] == *k)
            .and_then(|o| o["optionId"].as_str())
    });
    match chosen {
        Some(option) => json!({ "outcome": { "outcome": "selected", "optionId": option } }),
        None => json!({ "outcome": { "outcome": "cancelled" } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_responses_notifications_and_requests() {
        let r = classify(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(r, Incoming::Response { ref key, answer: Ok(_) } if key == "3"));
        let n = classify(r#"{"jsonrpc":"2.0","method":"session/update","params":{}}"#)
            .unwrap()
            .unwrap();
        assert!(
            matches!(n, Incoming::Notification { ref method, .. } if method == "session/update")
        );
        let q = classify(r#"{"jsonrpc":"2.0","id":0,"method":"fs/read_text_file","params":{}}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(q, Incoming::Request { ref id, .. } if *id == json!(0)));
        assert_eq!(classify("Loading config..."), Err(Unusable::NotJson));
        assert!(matches!(classify("[1,2]"), Err(Unusable::Invalid(_))));
        assert_eq!(classify(" \r\n"), Ok(None));
    }

    #[test]
    fn stop_reasons_map_to_honest_outcomes() {
        let s = |r: &str| turn_status(&Ok(json!({ "stopReason": r })));
        assert_eq!(s("end_turn"), TurnStatus::Finished);
        assert_eq!(s("cancelled"), TurnStatus::Cancelled);
        for r in ["refusal", "max_tokens", "max_turn_requests"] {
            assert_eq!(s(r), TurnStatus::Stopped { reason: r.into() });
        }
        assert!(matches!(s("future"), TurnStatus::Error { .. }));
    }

    #[test]
    fn permission_answers_pick_the_option_of_the_decision() {
        let params = json!({ "options": [
            { "kind": "allow_always", "optionId": "always" },
            { "kind": "allow_once", "optionId": "once" },
            { "kind": "reject_once", "optionId": "no" },
        ]});
        assert_eq!(
            permission_answer(&params, true)["outcome"]["optionId"],
            "once"
        );
        assert_eq!(
            permission_answer(&params, false)["outcome"]["optionId"],
            "no"
        );
        assert_eq!(
            permission_answer(&json!({ "options": [] }), false)["outcome"]["outcome"],
            "cancelled"
        );
    }

    #[test]
    fn edits_and_commands_become_approval_requests() {
        let edit = permission_request(
            &json!(0),
            &json!({ "toolCall": { "toolCallId": "t1", "title": "WriteFile: a.txt",
                "content": [{ "type": "diff", "path": "/w/a.txt", "newText": "x" }] } }),
        );
        assert_eq!(edit.action, "edit file");
        assert_eq!(edit.paths(), ["/w/a.txt"]);
        assert_eq!(edit.id, "0");
        let run = permission_request(
            &json!("p-1"),
            &json!({ "toolCall": { "toolCallId": "t2", "kind": "execute", "title": "ls",
                "rawInput": { "command": "ls -la" } } }),
        );
        assert_eq!(run.action, "run command");
        assert_eq!(run.commands(), ["ls -la"]);
    }
}
