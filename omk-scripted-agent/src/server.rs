//! The JSON-RPC side: reading stdin, dispatching requests, shared state and
//! the single, line-atomic stdout writer.
//!
//! Lock order: `state` may be held while taking `out`, never the other way
//! round.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::{Config, WIRE_PROTOCOL_VERSION};

/// JSON-RPC error codes used by Kimi Wire.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INVALID_STATE: i64 = -32000;
    pub const CHAT_PROVIDER_ERROR: i64 = -32003;
}

pub const BUSY: &str = "An agent turn is already in progress";
pub const NO_TURN: &str = "No agent turn is in progress";

/// How long to wait for the running turn to wind down after stdin closes.
const EOF_GRACE: Duration = Duration::from_millis(400);

/// Tools that kimi-cli 1.51.0 has built in (external tools may not clash).
const BUILTIN_TOOLS: &[&str] = &[
    "Agent",
    "SetTodoList",
    "Shell",
    "TaskList",
    "TaskOutput",
    "TaskStop",
    "ReadFile",
    "Glob",
    "Grep",
    "WriteFile",
    "StrReplaceFile",
    "FetchURL",
    "AskUserQuestion",
    "EnterPlanMode",
    "ExitPlanMode",
];

const HOOK_EVENTS: &[&str] = &[
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "UserPromptSubmit",
    "Stop",
    "StopFailure",
    "SessionStart",
    "SessionEnd",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "Notification",
];

/// The running turn, as seen by the dispatcher.
pub struct TurnCtl {
    pub cancelled: bool,
}

/// A request this agent sent and is waiting on.
pub struct Pending {
    pub request: Value,
    /// The client's whole reply object, once it came.
    pub reply: Option<Map<String, Value>>,
}

#[derive(Default)]
pub struct State {
    pub turn: Option<TurnCtl>,
    pub eof: bool,
    pub pending: HashMap<String, Pending>,
    pub auto_approve: HashSet<String>,
    pub steers: Vec<Value>,
    pub history: Vec<Value>,
    pub plan_mode: bool,
    pub supports_plan_mode: bool,
    pub supports_question: bool,
}

pub struct Shared {
    pub cfg: Config,
    pub state: Mutex<State>,
    pub cv: Condvar,
    out: Mutex<io::Stdout>,
    call_counter: AtomicU64,
    message_counter: AtomicU64,
    rng: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(cfg: Config) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Shared {
            cfg,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            out: Mutex::new(io::stdout()),
            call_counter: AtomicU64::new(0),
            message_counter: AtomicU64::new(0),
            rng: AtomicU64::new(nanos ^ (u64::from(std::process::id()) << 32)),
        }
    }

    pub fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Writes one line (a newline is added) atomically and flushes it.
    pub fn write_raw(&self, line: &str) {
        let mut out = lock(&self.out);
        // A closed stdout means the client is gone; stdin EOF will follow.
        let _ = out
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| out.flush());
    }

    pub fn send(&self, msg: &Value) {
        self.write_raw(&msg.to_string());
    }

    pub fn respond(&self, id: &str, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    pub fn respond_error(&self, id: Option<&str>, code: i64, message: &str) {
        self.send(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message, "data": null},
        }));
    }

    /// Emits an `event` notification and records it for `replay`.
    pub fn emit(&self, ty: &str, payload: Value) {
        let params = json!({"type": ty, "payload": payload});
        let msg = json!({"jsonrpc": "2.0", "method": "event", "params": params});
        self.lock_state().history.push(params);
        self.send(&msg);
    }

    /// Exits the process at once, without tearing a line in half.
    pub fn exit_now(&self, code: i32) -> ! {
        let mut out = lock(&self.out);
        let _ = out.flush();
        std::process::exit(code)
    }

    /// The next tool-call id: `call_1`, `call_2`, ... (per process).
    pub fn next_call_id(&self) -> String {
        format!(
            "call_{}",
            self.call_counter.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// The next LLM message id: `chatcmpl-scripted-1`, ... (per process).
    pub fn next_message_id(&self) -> String {
        let n = self.message_counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("chatcmpl-scripted-{n}")
    }

    /// A pseudo-random 64-bit number (splitmix64).
    pub fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random version-4 UUID string.
    pub fn uuid(&self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// 32 random hex digits (kimi's `source_id` shape).
    pub fn hex_id(&self) -> String {
        format!("{:016x}{:016x}", self.random(), self.random())
    }
}

/// Lexically removes `.` and `..` components (no symlink resolution).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolves `rel` against the work dir; `None` if it escapes the work dir.
pub fn resolve_in(work_dir: &Path, rel: &str) -> Option<PathBuf> {
    let joined = work_dir.join(rel);
    let mut depth: usize = 0;
    let base_depth = work_dir.components().count();
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth <= base_depth {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            other => {
                out.push(other.as_os_str());
                depth += 1;
            }
        }
    }
    (out.starts_with(work_dir) && out != work_dir).then_some(out)
}

/// Extracts the text of the last text part of a `user_input`.
pub fn prompt_text(user_input: &Value) -> Option<String> {
    match user_input {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .rev()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|p| p.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        _ => None,
    }
}

pub fn serve(cfg: Config) -> ExitCode {
    let fault = cfg.fault;
    if let Some(f) = fault {
        f.at_start();
    }
    let shared = Arc::new(Shared::new(cfg));
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => handle_line(&shared, &buf),
        }
    }
    if fault.is_some_and(|f| f.ignores_eof()) {
        crate::fault::hang();
    }
    shutdown(&shared)
}

/// stdin closed: cancel the turn, reject pending approvals, exit 0.
fn shutdown(shared: &Arc<Shared>) -> ExitCode {
    let deadline = Instant::now() + EOF_GRACE;
    let mut st = shared.lock_state();
    st.eof = true;
    if let Some(turn) = st.turn.as_mut() {
        turn.cancelled = true;
    }
    shared.cv.notify_all();
    while st.turn.is_some() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        st = shared
            .cv
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    drop(st);
    shared.exit_now(0)
}

fn handle_line(shared: &Arc<Shared>, raw: &[u8]) {
    let Ok(text) = std::str::from_utf8(raw) else {
        shared.respond_error(None, code::PARSE_ERROR, "Invalid JSON format");
        return;
    };
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        shared.respond_error(None, code::PARSE_ERROR, "Invalid JSON format");
        return;
    };
    let invalid = || shared.respond_error(None, code::INVALID_REQUEST, "Invalid request");
    let Value::Object(mut obj) = msg else {
        return invalid();
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return invalid(),
    };
    match obj.get("method") {
        Some(Value::String(method)) => {
            let Some(id) = id else {
                return invalid();
            };
            let method = method.clone();
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !(params.is_object() || params.is_null()) {
                let msg = format!("Invalid parameters for method {method}");
                return shared.respond_error(Some(&id), code::INVALID_PARAMS, &msg);
            }
            dispatch(shared, &method, &id, params);
        }
        Some(_) => invalid(),
        None if obj.contains_key("result") || obj.contains_key("error") => {
            if let Some(id) = id {
                let mut st = shared.lock_state();
                if let Some(p) = st.pending.get_mut(&id) {
                    if p.reply.is_none() {
                        p.reply = Some(obj);
                        shared.cv.notify_all();
                    }
                }
            }
        }
        None => invalid(),
    }
}

fn dispatch(shared: &Arc<Shared>, method: &str, id: &str, params: Value) {
    let bad_params = || {
        let msg = format!("Invalid parameters for method {method}");
        shared.respond_error(Some(id), code::INVALID_PARAMS, &msg);
    };
    match method {
        "initialize" => {
            let Some(Value::String(_)) = params.get("protocol_version") else {
                return bad_params();
            };
            initialize(shared, id, &params);
            if let Some(f) = shared.cfg.fault {
                let _guard = lock(&shared.out);
                f.after_initialize();
            }
        }
        "prompt" => {
            let Some(user_input) = params.get("user_input") else {
                return bad_params();
            };
            let Some(text) = prompt_text(user_input) else {
                return bad_params();
            };
            if let Some(f) = shared.cfg.fault {
                f.at_prompt(&mut *lock(&shared.out));
            }
            let mut st = shared.lock_state();
            if st.turn.is_some() {
                drop(st);
                return shared.respond_error(Some(id), code::INVALID_STATE, BUSY);
            }
            st.turn = Some(TurnCtl { cancelled: false });
            // Stale steers are dropped when a new turn starts.
            st.steers.clear();
            drop(st);
            crate::turn::spawn(Arc::clone(shared), id.to_string(), user_input.clone(), text);
        }
        "steer" => {
            let Some(user_input) = params.get("user_input") else {
                return bad_params();
            };
            if prompt_text(user_input).is_none() {
                return bad_params();
            }
            let mut st = shared.lock_state();
            if st.turn.is_none() {
                drop(st);
                return shared.respond_error(Some(id), code::INVALID_STATE, NO_TURN);
            }
            st.steers.push(user_input.clone());
            drop(st);
            shared.respond(id, json!({"status": "steered"}));
        }
        "cancel" => {
            let mut st = shared.lock_state();
            match st.turn.as_mut() {
                None => {
                    drop(st);
                    shared.respond_error(Some(id), code::INVALID_STATE, NO_TURN);
                }
                Some(turn) => {
                    // Answer while holding the state lock so that `{}` goes out
                    // before the turn can see the flag and emit `TurnEnd`.
                    shared.respond(id, json!({}));
                    turn.cancelled = true;
                    shared.cv.notify_all();
                }
            }
        }
        "replay" => {
            let st = shared.lock_state();
            if st.turn.is_some() {
                drop(st);
                return shared.respond_error(Some(id), code::INVALID_STATE, BUSY);
            }
            let events = merge_content_parts(&st.history);
            for params in &events {
                shared.send(&json!({"jsonrpc": "2.0", "method": "event", "params": params}));
            }
            shared.respond(
                id,
                json!({"status": "finished", "events": events.len(), "requests": 0}),
            );
        }
        "set_plan_mode" => {
            let Some(enabled) = params.get("enabled").and_then(Value::as_bool) else {
                return bad_params();
            };
            let mut st = shared.lock_state();
            if !st.supports_plan_mode {
                drop(st);
                return shared.respond_error(
                    Some(id),
                    code::INVALID_STATE,
                    "Plan mode is not supported",
                );
            }
            st.plan_mode = enabled;
            drop(st);
            shared.emit(
                "StatusUpdate",
                json!({
                    "context_usage": null,
                    "context_tokens": null,
                    "max_context_tokens": null,
                    "token_usage": null,
                    "message_id": null,
                    "plan_mode": enabled,
                    "mcp_status": null,
                }),
            );
            shared.respond(id, json!({"status": "ok", "plan_mode": enabled}));
        }
        other => {
            let msg = format!("Unexpected method received: {other}");
            shared.respond_error(Some(id), code::METHOD_NOT_FOUND, &msg);
        }
    }
}

fn initialize(shared: &Arc<Shared>, id: &str, params: &Value) {
    let mut st = shared.lock_state();
    if st.turn.is_some() {
        drop(st);
        return shared.respond_error(Some(id), code::INVALID_STATE, BUSY);
    }
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    if let Some(tools) = params.get("external_tools").and_then(Value::as_array) {
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            if BUILTIN_TOOLS.contains(&name) {
                rejected.push(json!({"name": name, "reason": "conflicts with builtin tool"}));
            } else {
                accepted.push(json!(name));
            }
        }
    }
    let mut configured = Map::new();
    if let Some(hooks) = params.get("hooks").and_then(Value::as_array) {
        for hook in hooks {
            if let Some(event) = hook.get("event").and_then(Value::as_str) {
                let n = configured.get(event).and_then(Value::as_u64).unwrap_or(0);
                configured.insert(event.to_string(), json!(n + 1));
            }
        }
    }
    st.supports_question = params
        .pointer("/capabilities/supports_question")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    st.supports_plan_mode = params
        .pointer("/capabilities/supports_plan_mode")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let resend: Vec<Value> = st
        .pending
        .values()
        .filter(|p| p.reply.is_none())
        .map(|p| p.request.clone())
        .collect();
    drop(st);
    shared.respond(
        id,
        json!({
            "protocol_version": WIRE_PROTOCOL_VERSION,
            "server": {"name": "omk-scripted-agent", "version": env!("CARGO_PKG_VERSION")},
            "slash_commands": [],
            "external_tools": {"accepted": accepted, "rejected": rejected},
            "hooks": {"supported_events": HOOK_EVENTS, "configured": configured},
            "capabilities": {"supports_question": true},
        }),
    );
    for request in resend {
        shared.send(&request);
    }
}

/// Merges runs of text `ContentPart`s, as kimi's session log does.
fn merge_content_parts(history: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let text_of = |p: &Value| -> Option<String> {
        (p.get("type")? == "ContentPart" && p.pointer("/payload/type")? == "text")
            .then(|| p.pointer("/payload/text")?.as_str().map(String::from))
            .flatten()
    };
    for params in history {
        if let (Some(last), Some(text)) = (out.last_mut(), text_of(params)) {
            if let Some(prev) = text_of(last) {
                last["payload"]["text"] = json!(prev + &text);
                continue;
            }
        }
        out.push(params.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside() {
        let wd = Path::new("/w/d");
        assert_eq!(
            resolve_in(wd, "a/b.txt"),
            Some(PathBuf::from("/w/d/a/b.txt"))
        );
        assert_eq!(
            resolve_in(wd, "a/../b.txt"),
            Some(PathBuf::from("/w/d/b.txt"))
        );
        assert_eq!(resolve_in(wd, "/w/d/x"), Some(PathBuf::from("/w/d/x")));
        assert_eq!(resolve_in(wd, "../x"), None);
        assert_eq!(resolve_in(wd, "a/../../x"), None);
        assert_eq!(resolve_in(wd, "/etc/passwd"), None);
        assert_eq!(resolve_in(wd, "."), None);
    }

    #[test]
    fn prompt_text_takes_last_text_part() {
        let parts = json!([
            {"type": "text", "text": "first"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "last"},
            {"type": "think", "think": "t"}
        ]);
        assert_eq!(prompt_text(&parts).as_deref(), Some("last"));
        assert_eq!(prompt_text(&json!("s")).as_deref(), Some("s"));
        assert_eq!(prompt_text(&json!(3)), None);
    }

    #[test]
    fn content_parts_merge() {
        let h = vec![
            json!({"type": "TurnBegin", "payload": {"user_input": "x"}}),
            json!({"type": "ContentPart", "payload": {"type": "text", "text": "a"}}),
            json!({"type": "ContentPart", "payload": {"type": "text", "text": "b"}}),
            json!({"type": "TurnEnd", "payload": {}}),
        ];
        let m = merge_content_parts(&h);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1]["payload"]["text"], "ab");
    }
}
