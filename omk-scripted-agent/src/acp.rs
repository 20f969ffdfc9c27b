//! `omk-scripted-agent acp`: the same scripted behaviour over the Agent
//! Client Protocol (version 1), as `kimi acp` and the other ACP agents speak
//! it. omk's tests drive ACP through it where a real agent cannot be told
//! to misbehave on cue.
//!
//! Methods: `initialize` (protocol version 1, no `loadSession`),
//! `session/new`, `session/prompt`, `session/cancel` (notification); other
//! requests get `-32601`. A turn streams `agent_thought_chunk`, a `plan`
//! when it has tool steps, `agent_message_chunk`s, `usage_update` (the
//! session's cumulative cost, 0.00001 USD per token), and ends with the `session/prompt`
//! answer `{stopReason, usage}`.
//!
//! Directives as for Wire, with these differences: `[write:PATH:CONTENT]`
//! asks `session/request_permission` (kind `edit`) and, when allowed, writes
//! through the client's `fs/write_text_file` (the path is sent as given,
//! made absolute against the work dir; the client decides whether it may be
//! written); `[run:COMMAND]` asks (kind `execute`) and, when allowed, runs
//! `sh -c COMMAND` in the client's terminal (`terminal/create`,
//! `wait_for_exit`, `output`, `release`) when the client offered
//! `terminal`, else itself;
//! `[provider-error:MSG]` answers the prompt with error `-32603` MSG;
//! `[unknown-event]` sends an update of kind `future_update_kind`, a vendor
//! notification and a vendor request (`_omk/future_request`); `[malformed]`
//! prints a line that is not JSON mid-turn; `[refuse]` ends the turn with
//! `stopReason` `refusal`, `[give-up]` with `cancelled` though no
//! `session/cancel` came; `[late-update]` writes one more
//! `agent_message_chunk` (` (late)`) right after the prompt answer, in the
//! same write. `[mcp]` answers `mcp: NAME (TYPE), ...`, the MCP servers
//! `session/new` gave the session. `[ask]` is not supported (the tool fails).

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::directives::{self, Answer, ToolStep};
use crate::Config;

const TICK: Duration = Duration::from_millis(500);
const EOF_GRACE: Duration = Duration::from_millis(400);
const COST_PER_TOKEN: f64 = 0.000_01;

#[derive(Default)]
struct State {
    eof: bool,
    /// Sessions with a running turn, and whether it was cancelled.
    turns: HashMap<String, bool>,
    sessions: Vec<String>,
    /// Replies to this agent's requests, by id.
    replies: HashMap<u64, Value>,
    /// Each session's cumulative cost (ACP reports the session's total).
    costs: HashMap<String, f64>,
    /// The client offered `terminal` in `initialize`.
    terminal: bool,
    /// Each session's MCP servers (`name (type)`), from `session/new`.
    mcp: HashMap<String, Vec<String>>,
}

struct Shared {
    cfg: Config,
    state: Mutex<State>,
    cv: Condvar,
    out: Mutex<io::Stdout>,
    next_id: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_raw(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }

    fn send(&self, msg: &Value) {
        self.write_raw(&format!("{msg}\n"));
    }

    fn respond(&self, id: &Value, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn respond_error(&self, id: &Value, code: i64, message: &str) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        );
    }

    fn update(&self, session: &str, update: Value) {
        self.send(&update_msg(session, update));
    }

    /// Send a request to the client and wait for its reply (None on EOF).
    fn ask(&self, method: &str, params: Value) -> Option<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut st = self.state();
        loop {
            if let Some(r) = st.replies.remove(&id) {
                return Some(r);
            }
            if st.eof {
                return None;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn update_msg(session: &str, update: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": "session/update",
           "params": {"sessionId": session, "update": update}})
}

fn chunk(text: &str) -> Value {
    json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}})
}

pub fn serve(cfg: Config) -> ExitCode {
    let fault = cfg.fault;
    if let Some(f) = fault {
        f.at_start();
    }
    let shared = Arc::new(Shared {
        cfg,
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        out: Mutex::new(io::stdout()),
        next_id: AtomicU64::new(0),
    });
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => handle_line(&shared, &String::from_utf8_lossy(&buf)),
        }
    }
    if fault.is_some_and(|f| f.ignores_eof()) {
        crate::fault::hang();
    }
    // stdin closed: cancel every turn, give them a moment, exit 0.
    let deadline = Instant::now() + EOF_GRACE;
    let mut st = shared.state();
    st.eof = true;
    shared.cv.notify_all();
    while !st.turns.is_empty() && Instant::now() < deadline {
        st = shared
            .cv
            .wait_timeout(st, deadline - Instant::now())
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    drop(st);
    let _ = io::stdout().flush();
    ExitCode::SUCCESS
}

fn handle_line(shared: &Arc<Shared>, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
        return shared.respond_error(&Value::Null, -32700, "Parse error");
    };
    let id = msg.remove("id");
    let params = msg.remove("params").unwrap_or(Value::Null);
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    match (method, id) {
        (Some(m), Some(id)) if !id.is_null() => request(shared, &m, id, params),
        (Some(m), _) => {
            if m == "session/cancel" {
                let session = params["sessionId"].as_str().unwrap_or("");
                let mut st = shared.state();
                if let Some(c) = st.turns.get_mut(session) {
                    *c = true;
                }
                shared.cv.notify_all();
            }
        }
        (None, Some(Value::Number(n))) => {
            if let Some(n) = n.as_u64() {
                shared.state().replies.insert(n, Value::Object(msg));
                shared.cv.notify_all();
            }
        }
        (None, _) => {}
    }
}

fn request(shared: &Arc<Shared>, method: &str, id: Value, params: Value) {
    match method {
        "initialize" => {
            if params["protocolVersion"].as_u64().is_none() {
                return shared.respond_error(&id, -32602, "protocolVersion is required");
            }
            shared.state().terminal = params["clientCapabilities"]["terminal"] == true;
            shared.respond(
                &id,
                json!({
                    "protocolVersion": 1,
                    "agentCapabilities": {"loadSession": false,
                        "promptCapabilities": {"image": false, "audio": false, "embeddedContext": false}},
                    "agentInfo": {"name": "omk-scripted-agent", "version": env!("CARGO_PKG_VERSION")},
                    "authMethods": [],
                }),
            );
            if let Some(f) = shared.cfg.fault {
                let _guard = shared.out.lock();
                f.after_initialize();
            }
        }
        "session/new" => {
            let cwd = params["cwd"].as_str().unwrap_or("");
            if !Path::new(cwd).is_absolute() {
                return shared.respond_error(&id, -32602, "cwd must be an absolute path");
            }
            let session = format!("sess-{}", shared.state().sessions.len() + 1);
            let servers = params["mcpServers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let kind = s["type"].as_str().unwrap_or("stdio");
                    format!("{} ({kind})", s["name"].as_str().unwrap_or("?"))
                })
                .collect();
            let mut st = shared.state();
            st.sessions.push(session.clone());
            st.mcp.insert(session.clone(), servers);
            drop(st);
            shared.respond(&id, json!({"sessionId": session}));
            shared.update(
                &session,
                json!({"sessionUpdate": "available_commands_update",
                       "availableCommands": [{"name": "init", "description": "scripted"}]}),
            );
        }
        "session/prompt" => {
            let session = params["sessionId"].as_str().unwrap_or("").to_string();
            let mut st = shared.state();
            if !st.sessions.contains(&session) {
                drop(st);
                return shared.respond_error(&id, -32602, "unknown sessionId");
            }
            if st.turns.contains_key(&session) {
                drop(st);
                return shared.respond_error(&id, -32000, "a turn is already running");
            }
            st.turns.insert(session.clone(), false);
            drop(st);
            if let Some(f) = shared.cfg.fault {
                f.at_prompt(&mut *shared.out.lock().unwrap_or_else(|e| e.into_inner()));
            }
            let blocks: Vec<String> = params["prompt"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str().map(str::to_owned))
                .collect();
            let shared = shared.clone();
            thread::spawn(move || {
                Turn {
                    shared,
                    session,
                    blocks,
                }
                .run(id)
            });
        }
        other => shared.respond_error(&id, -32601, &format!("Method not found: {other}")),
    }
}

enum Stop {
    Cancelled,
    /// stdin EOF during `[stall]`: end silently.
    Abandon,
    Error(String),
}

struct Turn {
    shared: Arc<Shared>,
    session: String,
    blocks: Vec<String>,
}

impl Turn {
    fn run(self, id: Value) {
        let text = self.blocks.last().cloned().unwrap_or_default();
        let mut script = directives::parse(&text);
        if let Some(env) = &self.shared.cfg.env_behaviour {
            directives::parse_into(&mut script, env);
        }
        let outcome = self.play(&script, &text);
        let mut st = self.shared.state();
        st.turns.remove(&self.session);
        self.shared.cv.notify_all();
        drop(st);
        let (input, output) = script.tokens.unwrap_or_else(|| {
            (
                (text.chars().count() as u64 / 4).max(1),
                (outcome.as_ref().map_or(0, |a| a.chars().count()) as u64 / 4).max(1),
            )
        });
        let usage = json!({"inputTokens": input, "outputTokens": output,
                           "totalTokens": input + output});
        let reply = match outcome {
            Ok(_) if script.refuse => json!({"stopReason": "refusal", "usage": usage}),
            Ok(_) if script.give_up => json!({"stopReason": "cancelled"}),
            Ok(_) => json!({"stopReason": "end_turn", "usage": usage}),
            Err(Stop::Cancelled) => json!({"stopReason": "cancelled"}),
            Err(Stop::Abandon) => return,
            Err(Stop::Error(m)) => {
                return self.shared.respond_error(&id, -32603, &m);
            }
        };
        let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": reply}).to_string();
        answer.push('\n');
        if script.late_update {
            answer.push_str(&update_msg(&self.session, chunk(" (late)")).to_string());
            answer.push('\n');
        }
        self.shared.write_raw(&answer);
    }

    fn update(&self, update: Value) {
        self.shared.update(&self.session, update);
    }

    /// The turn up to its answer; returns the answer text.
    fn play(&self, s: &directives::Script, text: &str) -> Result<String, Stop> {
        self.update(json!({"sessionUpdate": "agent_thought_chunk",
                           "content": {"type": "text", "text": "Thinking about it."}}));
        if !s.tools.is_empty() {
            let entries: Vec<Value> = s
                .tools
                .iter()
                .map(|t| json!({"content": format!("{t:?}"), "priority": "medium", "status": "pending"}))
                .collect();
            self.update(json!({"sessionUpdate": "plan", "entries": entries}));
        }
        if s.unknown_event {
            self.update(json!({"sessionUpdate": "future_update_kind", "x": 1}));
            self.shared.send(
                &json!({"jsonrpc": "2.0", "method": "_omk/future_notification",
                                     "params": {"x": 1}}),
            );
            self.shared.ask("_omk/future_request", json!({"x": 1}));
        }
        if let Some(secs) = s.sleep {
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut n = 0;
            while Instant::now() < end {
                self.update(chunk(&format!("tick {n} ")));
                n += 1;
                self.wait(Some((Instant::now() + TICK).min(end)), true)?;
            }
        }
        if let Some(secs) = s.slow_silent {
            self.wait(Some(Instant::now() + Duration::from_secs_f64(secs)), true)?;
        }
        if s.stall {
            self.wait(None, false)?;
        }
        let mut crash = s.crash;
        if let Some(file) = &s.crash_once {
            let path = self.shared.cfg.work_dir.join(file);
            if !path.exists() {
                let _ = std::fs::write(&path, "");
                crash = true;
            }
        }
        if crash {
            self.update(chunk("Working on it..."));
            std::process::exit(3);
        }
        if let Some(msg) = &s.provider_error {
            return Err(Stop::Error(msg.clone()));
        }
        let mut results = Vec::new();
        for tool in &s.tools {
            results.push(self.tool(tool)?);
        }
        let answer = match &s.answer {
            None if s.mcp => {
                let st = self.shared.state();
                let names = st.mcp.get(&self.session).cloned().unwrap_or_default();
                format!("mcp: {}", names.join(", "))
            }
            Some(Answer::Text(t)) => t.clone(),
            Some(Answer::JsonPlan(items)) => Value::from(items.clone()).to_string(),
            None if s.recall => {
                let earlier = &self.blocks[..self.blocks.len().saturating_sub(1)];
                if earlier.is_empty() {
                    "Recall: (no context)".to_string()
                } else {
                    format!("Recall: {}", earlier.join(" | "))
                }
            }
            None if !results.is_empty() => results.join("; "),
            None => format!("Done: {}", text.chars().take(80).collect::<String>()),
        };
        let third = answer.len().div_ceil(3).max(1);
        let mut rest = answer.as_str();
        let mut first = true;
        while !rest.is_empty() {
            let mut cut = third.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            self.update(chunk(&rest[..cut]));
            if first && s.malformed {
                self.shared.write_raw("this line is not JSON\n");
            }
            first = false;
            rest = &rest[cut..];
            self.wait(Some(Instant::now()), true)?;
        }
        let (input, output) = s.tokens.unwrap_or((1, 1));
        let total = {
            let mut st = self.shared.state();
            let c = st.costs.entry(self.session.clone()).or_insert(0.0);
            *c += (input + output) as f64 * COST_PER_TOKEN;
            *c
        };
        self.update(
            json!({"sessionUpdate": "usage_update", "used": input + output,
            "size": 131072, "cost": {"amount": total, "currency": "USD"}}),
        );
        Ok(answer)
    }

    /// One tool step; returns what it did (for the default answer).
    fn tool(&self, tool: &ToolStep) -> Result<String, Stop> {
        let call = format!(
            "call_{}",
            self.shared.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (kind, title, raw, content) = match tool {
            ToolStep::Write { path, content } => (
                "edit",
                format!("WriteFile: {path}"),
                json!({"path": path, "content": content}),
                json!([{"type": "diff", "path": self.abs(path), "oldText": null, "newText": content}]),
            ),
            ToolStep::Run { command } => (
                "execute",
                command.clone(),
                json!({"command": command}),
                json!([]),
            ),
            ToolStep::Ask { question } => {
                self.update(json!({"sessionUpdate": "tool_call", "toolCallId": call,
                    "title": format!("AskUserQuestion: {question}"), "kind": "other", "status": "failed"}));
                return Ok("AskUserQuestion is not supported over ACP".into());
            }
        };
        self.update(
            json!({"sessionUpdate": "tool_call", "toolCallId": call, "title": title,
                           "kind": kind, "status": "pending", "rawInput": raw, "content": content}),
        );
        let reply = self
            .shared
            .ask(
                "session/request_permission",
                json!({"sessionId": self.session,
                   "toolCall": {"toolCallId": call, "title": title, "kind": kind,
                                "rawInput": raw, "content": content},
                   "options": [
                       {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                       {"optionId": "always", "name": "Always allow", "kind": "allow_always"},
                       {"optionId": "reject", "name": "Reject", "kind": "reject_once"}]}),
            )
            .ok_or(Stop::Abandon)?;
        self.wait(Some(Instant::now()), true)?;
        let option = reply["result"]["outcome"]["optionId"]
            .as_str()
            .unwrap_or("");
        if option != "allow" && option != "always" {
            self.finish_tool(&call, false, "rejected by the client");
            return Ok(format!("{title} was rejected"));
        }
        match tool {
            ToolStep::Write { path, content } => {
                let reply = self
                    .shared
                    .ask(
                        "fs/write_text_file",
                        json!({"sessionId": self.session, "path": self.abs(path), "content": content}),
                    )
                    .ok_or(Stop::Abandon)?;
                if let Some(e) = reply.get("error") {
                    let msg = e["message"].as_str().unwrap_or("error").to_string();
                    self.finish_tool(&call, false, &msg);
                    return Ok(format!("WriteFile failed: {msg}"));
                }
                self.finish_tool(&call, true, &format!("wrote {path}"));
                Ok(format!("wrote {path}"))
            }
            ToolStep::Run { command } if self.shared.state().terminal => {
                self.in_terminal(&call, command)
            }
            ToolStep::Run { command } => {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .current_dir(&self.shared.cfg.work_dir)
                    .stdin(Stdio::null())
                    .output();
                let (ok, text) = match out {
                    Ok(o) => (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stdout).trim_end().to_string(),
                    ),
                    Err(e) => (false, e.to_string()),
                };
                self.finish_tool(&call, ok, &text);
                Ok(text)
            }
            ToolStep::Ask { .. } => unreachable!("answered above"),
        }
    }

    /// `[run]` through the client's terminal: create, wait, output, release.
    fn in_terminal(&self, call: &str, command: &str) -> Result<String, Stop> {
        let reply = self
            .shared
            .ask(
                "terminal/create",
                json!({"sessionId": self.session, "command": "sh", "args": ["-c", command],
                       "outputByteLimit": 65536}),
            )
            .ok_or(Stop::Abandon)?;
        if let Some(e) = reply.get("error") {
            let msg = e["message"].as_str().unwrap_or("error").to_string();
            self.finish_tool(call, false, &msg);
            return Ok(format!("terminal failed: {msg}"));
        }
        let term = reply["result"]["terminalId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.update(
            json!({"sessionUpdate": "tool_call_update", "toolCallId": call,
            "status": "in_progress", "content": [{"type": "terminal", "terminalId": term}]}),
        );
        let exit = self
            .shared
            .ask(
                "terminal/wait_for_exit",
                json!({"sessionId": self.session, "terminalId": term}),
            )
            .ok_or(Stop::Abandon)?;
        let out = self
            .shared
            .ask(
                "terminal/output",
                json!({"sessionId": self.session, "terminalId": term}),
            )
            .ok_or(Stop::Abandon)?;
        self.shared
            .ask(
                "terminal/release",
                json!({"sessionId": self.session, "terminalId": term}),
            )
            .ok_or(Stop::Abandon)?;
        let text = out["result"]["output"]
            .as_str()
            .unwrap_or("")
            .trim_end()
            .to_string();
        let ok = exit["result"]["exitCode"] == 0;
        self.finish_tool(call, ok, &text);
        self.wait(Some(Instant::now()), true)?;
        Ok(text)
    }

    fn finish_tool(&self, call: &str, ok: bool, text: &str) {
        self.update(
            json!({"sessionUpdate": "tool_call_update", "toolCallId": call,
            "status": if ok { "completed" } else { "failed" },
            "content": [{"type": "content", "content": {"type": "text", "text": text}}]}),
        );
    }

    fn abs(&self, path: &str) -> String {
        self.shared.cfg.work_dir.join(path).display().to_string()
    }

    /// Wait until `deadline` (forever if None); stop early on EOF, and on a
    /// cancel when `honor_cancel`.
    fn wait(&self, deadline: Option<Instant>, honor_cancel: bool) -> Result<(), Stop> {
        let mut st = self.shared.state();
        loop {
            if st.eof {
                return Err(if honor_cancel {
                    Stop::Cancelled
                } else {
                    Stop::Abandon
                });
            }
            if honor_cancel && st.turns.get(&self.session).copied().unwrap_or(false) {
                return Err(Stop::Cancelled);
            }
            st = match deadline {
                None => self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    self.shared
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}
