//! One scripted turn, run on its own thread.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::directives::{self, Answer, Script, ToolStep};
use crate::server::{code, resolve_in, Shared};

const MAX_CONTEXT_TOKENS: u64 = 131_072;
const TICK: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(20);
/// Chunk size (in chars) for `[json-plan]` answers: small enough to cut
/// through strings and punctuation.
const JSON_CHUNK: usize = 7;

/// Why a turn stopped early.
enum Stop {
    /// `cancel` or stdin EOF: `TurnEnd`, then `{"status":"cancelled"}`.
    Cancelled,
    /// stdin EOF during `[stall]`: end silently.
    Abandon,
    /// `StepInterrupted` was sent; `TurnEnd`, then this error response.
    Error(i64, String),
    /// `TurnEnd`, then `{"status":"max_steps_reached","steps":n}`.
    MaxSteps(u32),
}

pub fn spawn(shared: Arc<Shared>, prompt_id: String, user_input: Value, text: String) {
    let mut script = directives::parse(&text);
    if let Some(env) = &shared.cfg.env_behaviour {
        directives::parse_into(&mut script, env);
    }
    let source_id = shared.hex_id();
    let mut turn = Turn {
        shared,
        script,
        text,
        step: 0,
        source_id,
    };
    thread::spawn(move || {
        let outcome = turn.run(&user_input);
        turn.finish(&prompt_id, outcome);
    });
}

struct Turn {
    shared: Arc<Shared>,
    script: Script,
    text: String,
    step: u32,
    source_id: String,
}

enum Decision {
    Approved,
    Rejected(String),
}

impl Turn {
    fn emit(&self, ty: &str, payload: Value) {
        self.shared.emit(ty, payload);
    }

    fn text_part(&self, text: &str) {
        self.emit("ContentPart", json!({"type": "text", "text": text}));
    }

    fn run(&mut self, user_input: &Value) -> Result<(), Stop> {
        let s = self.script.clone();
        self.emit("TurnBegin", json!({"user_input": user_input}));
        // No cancellation point before `[stall]`: a stalled turn must never
        // notice a `cancel`, however early it arrives.
        self.step += 1;
        self.emit("StepBegin", json!({"n": self.step}));

        let mut crash = s.crash;
        if let Some(file) = &s.crash_once {
            if let Some(path) = resolve_in(&self.shared.cfg.work_dir, file) {
                if !path.exists() {
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    let _ = std::fs::write(&path, "");
                    crash = true;
                }
            }
        }
        if s.unknown_event {
            self.emit("FutureEventType", json!({"x": 1}));
        }
        if let Some(secs) = s.sleep {
            self.sleep_ticking(secs)?;
        }
        if let Some(secs) = s.slow_silent {
            self.wait(Some(Instant::now() + secs_to_duration(secs)), true)?;
        }
        if s.stall {
            // Only stdin EOF ends this.
            self.wait(None, false)?;
        }
        if crash {
            self.text_part("Working on it...");
            self.shared.exit_now(3);
        }
        self.checkpoint()?;
        if let Some(msg) = &s.provider_error {
            self.emit("StepInterrupted", json!({}));
            return Err(Stop::Error(code::CHAT_PROVIDER_ERROR, msg.clone()));
        }
        for tool in &s.tools {
            self.tool_step(tool)?;
            if let Some(max) = self.shared.cfg.max_steps {
                if self.step >= max {
                    return Err(Stop::MaxSteps(self.step));
                }
            }
            self.step_begin()?;
        }

        let (answer, chunks) = match &s.answer {
            Some(Answer::Text(t)) => (t.clone(), split_even(t, 3)),
            Some(Answer::JsonPlan(items)) => {
                let json = Value::from(items.clone()).to_string();
                let chunks = split_every(&json, JSON_CHUNK);
                (json, chunks)
            }
            None if s.recall => {
                let t = recall(user_input);
                let chunks = split_even(&t, 3);
                (t, chunks)
            }
            None => {
                let t = format!("Done: {}", self.text.chars().take(80).collect::<String>());
                let chunks = split_even(&t, 3);
                (t, chunks)
            }
        };
        for (i, chunk) in chunks.iter().enumerate() {
            self.text_part(chunk);
            if i == 0 && s.malformed {
                self.malformed();
            }
            self.checkpoint()?;
        }
        if chunks.is_empty() && s.malformed {
            self.malformed();
        }
        let (input, output) = s.tokens.unwrap_or_else(|| {
            (
                (self.text.chars().count() as u64 / 4).max(1),
                (answer.chars().count() as u64 / 4).max(1),
            )
        });
        let mut status = self.status_update(input, output);
        if s.unknown_event {
            status["future_field"] = json!({"nested": [1, 2, 3]});
        }
        self.emit("StatusUpdate", status);
        self.checkpoint()
    }

    fn finish(&self, prompt_id: &str, outcome: Result<(), Stop>) {
        let reply = match outcome {
            Ok(()) => Ok(json!({"status": "finished"})),
            Err(Stop::Cancelled) => Ok(json!({"status": "cancelled"})),
            Err(Stop::MaxSteps(n)) => Ok(json!({"status": "max_steps_reached", "steps": n})),
            Err(Stop::Error(c, m)) => Err((c, m)),
            Err(Stop::Abandon) => {
                self.shared.lock_state().turn = None;
                self.shared.cv.notify_all();
                return;
            }
        };
        self.emit("TurnEnd", json!({}));
        // Free the agent and answer under the state lock, so that the next
        // turn cannot start before this answer is out.
        let mut st = self.shared.lock_state();
        st.turn = None;
        st.pending.clear();
        match reply {
            Ok(result) => self.shared.respond(prompt_id, result),
            Err((c, m)) => self.shared.respond_error(Some(prompt_id), c, &m),
        }
        self.shared.cv.notify_all();
        drop(st);
    }

    fn malformed(&self) {
        self.shared
            .write_raw(r#"{"jsonrpc": "2.0", "method": "event", "params": {"#);
    }

    fn step_begin(&mut self) -> Result<(), Stop> {
        self.step += 1;
        self.emit("StepBegin", json!({"n": self.step}));
        self.checkpoint()
    }

    /// Waits until `deadline` (forever if `None`). Stops early on stdin EOF,
    /// and on `cancel` when `honor_cancel`.
    fn wait(&self, deadline: Option<Instant>, honor_cancel: bool) -> Result<(), Stop> {
        let mut st = self.shared.lock_state();
        loop {
            if st.eof {
                return Err(if honor_cancel {
                    Stop::Cancelled
                } else {
                    Stop::Abandon
                });
            }
            if honor_cancel && st.turn.as_ref().is_some_and(|t| t.cancelled) {
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

    /// A cancellation point; also reports consumed steers.
    fn checkpoint(&self) -> Result<(), Stop> {
        self.wait(Some(Instant::now()), true)?;
        let steers = std::mem::take(&mut self.shared.lock_state().steers);
        for user_input in steers {
            self.emit("SteerInput", json!({"user_input": user_input}));
        }
        Ok(())
    }

    fn sleep_ticking(&self, secs: f64) -> Result<(), Stop> {
        let start = Instant::now();
        let deadline = start + secs_to_duration(secs);
        let mut n: u32 = 0;
        while Instant::now() < deadline {
            self.text_part(&format!("tick {n} "));
            n += 1;
            let next = start + TICK * n;
            self.wait(Some(next.min(deadline)), true)?;
        }
        Ok(())
    }

    fn status_update(&self, input: u64, output: u64) -> Value {
        let plan_mode = self.shared.lock_state().plan_mode;
        let context_tokens = input;
        json!({
            "context_usage": context_tokens as f64 / MAX_CONTEXT_TOKENS as f64,
            "context_tokens": context_tokens,
            "max_context_tokens": MAX_CONTEXT_TOKENS,
            "token_usage": {
                "input_other": input,
                "output": output,
                "input_cache_read": 0,
                "input_cache_creation": 0,
            },
            "message_id": self.shared.next_message_id(),
            "plan_mode": plan_mode,
            "mcp_status": null,
        })
    }

    fn tool_step(&mut self, tool: &ToolStep) -> Result<(), Stop> {
        let call_id = self.shared.next_call_id();
        let work_dir = self.shared.cfg.work_dir.clone();
        let (name, arguments, action) = match tool {
            ToolStep::Write { path, content } => (
                "WriteFile",
                format!(
                    "{{\"path\": {}, \"content\": {}}}",
                    Value::from(path.as_str()),
                    Value::from(content.as_str())
                ),
                "edit file",
            ),
            ToolStep::Run { command } => (
                "Shell",
                format!("{{\"command\": {}}}", Value::from(command.as_str())),
                "run command",
            ),
            ToolStep::Ask { question } => (
                "AskUserQuestion",
                json!({"questions": [{"question": question}]}).to_string(),
                "",
            ),
        };
        if self.script.tool_call_parts && arguments.chars().count() > 1 {
            let half = arguments.chars().count() / 2;
            let first: String = arguments.chars().take(half).collect();
            let rest: String = arguments.chars().skip(half).collect();
            self.emit("ToolCall", tool_call(&call_id, name, &first));
            self.emit("ToolCallPart", json!({"arguments_part": rest}));
        } else {
            self.emit("ToolCall", tool_call(&call_id, name, &arguments));
        }
        let prompt_tokens = (self.text.chars().count() as u64 / 4).max(1);
        let mut status = self.status_update(0, 0);
        status["context_tokens"] = json!(prompt_tokens);
        status["context_usage"] = json!(prompt_tokens as f64 / MAX_CONTEXT_TOKENS as f64);
        self.emit("StatusUpdate", status);
        self.checkpoint()?;

        let return_value = match tool {
            ToolStep::Write { path, content } => match resolve_in(&work_dir, path) {
                None => error_value(
                    &format!(
                        "`{path}` is outside the working directory `{}`. \
                             You can only write files within the working directory.",
                        work_dir.display()
                    ),
                    vec![json!({"type": "brief", "text": "Path outside the working directory"})],
                ),
                Some(abs) => {
                    let old = std::fs::read_to_string(&abs).unwrap_or_default();
                    let display = vec![json!({
                        "type": "diff",
                        "path": abs.display().to_string(),
                        "old_text": strip_newline(&old),
                        "new_text": strip_newline(content),
                        "old_start": 1,
                        "new_start": 1,
                        "is_summary": false,
                    })];
                    let description = format!("Write file `{}`", abs.display());
                    match self.approve(&call_id, name, action, &description, &display)? {
                        Decision::Rejected(feedback) => rejected_value(&feedback),
                        Decision::Approved => write_file(&abs, content, display),
                    }
                }
            },
            ToolStep::Run { command } => {
                let display =
                    vec![json!({"type": "shell", "language": "bash", "command": command})];
                let description = format!("Run command `{command}`");
                match self.approve(&call_id, name, action, &description, &display)? {
                    Decision::Rejected(feedback) => rejected_value(&feedback),
                    Decision::Approved => self.run_command(command, &work_dir)?,
                }
            }
            ToolStep::Ask { question } => self.ask(&call_id, question)?,
        };
        self.emit(
            "ToolResult",
            json!({"tool_call_id": call_id, "return_value": return_value}),
        );
        self.checkpoint()
    }

    /// `AskUserQuestion`: a `QuestionRequest` when the client can answer
    /// one; kimi hides the tool otherwise, so calling it is an unknown tool.
    fn ask(&self, call_id: &str, question: &str) -> Result<Value, Stop> {
        if !self.shared.lock_state().supports_question {
            return Ok(error_value(
                "Tool `AskUserQuestion` not found",
                vec![json!({"type": "brief", "text": "Tool not found"})],
            ));
        }
        let id = self.shared.uuid();
        let option = |label: &str| json!({"label": label, "description": ""});
        let request = json!({
            "jsonrpc": "2.0",
            "method": "request",
            "id": id,
            "params": {
                "type": "QuestionRequest",
                "payload": {
                    "id": id,
                    "tool_call_id": call_id,
                    "questions": [{
                        "question": question,
                        "header": "",
                        "options": [option("yes"), option("no")],
                        "multi_select": false,
                        "body": "",
                        "other_label": "",
                        "other_description": "",
                    }],
                },
            },
        });
        self.shared.lock_state().pending.insert(
            id.clone(),
            crate::server::Pending {
                request: request.clone(),
                reply: None,
            },
        );
        self.shared.send(&request);
        let reply = self.await_reply(&id)?;
        // An error reply or `{}` means the question was dismissed.
        let answers = reply
            .get("result")
            .and_then(|r| r.get("answers"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let output = if answers.is_empty() {
            "The user dismissed the question.".to_string()
        } else {
            Value::Object(answers).to_string()
        };
        Ok(
            json!({"is_error": false, "output": output, "message": "", "display": [], "extras": null}),
        )
    }

    /// Asks the client (unless auto-approved) and reports its decision.
    fn approve(
        &self,
        call_id: &str,
        sender: &str,
        action: &str,
        description: &str,
        display: &[Value],
    ) -> Result<Decision, Stop> {
        if self.shared.cfg.yolo || self.shared.lock_state().auto_approve.contains(action) {
            return Ok(Decision::Approved);
        }
        let id = self.shared.uuid();
        let request = json!({
            "jsonrpc": "2.0",
            "method": "request",
            "id": id,
            "params": {
                "type": "ApprovalRequest",
                "payload": {
                    "id": id,
                    "tool_call_id": call_id,
                    "sender": sender,
                    "action": action,
                    "description": description,
                    "source_kind": "foreground_turn",
                    "source_id": self.source_id,
                    "agent_id": null,
                    "subagent_type": null,
                    "source_description": null,
                    "display": display,
                },
            },
        });
        self.shared.lock_state().pending.insert(
            id.clone(),
            crate::server::Pending {
                request: request.clone(),
                reply: None,
            },
        );
        self.shared.send(&request);
        let reply = self.await_reply(&id)?;
        let result = reply.get("result").and_then(Value::as_object);
        // Anything but a known decision (or an error reply) is a rejection.
        let response = result
            .and_then(|r| r.get("response"))
            .and_then(Value::as_str)
            .filter(|r| matches!(*r, "approve" | "approve_for_session" | "reject"))
            .unwrap_or("reject");
        let feedback = result
            .and_then(|r| r.get("feedback"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if response == "approve_for_session" {
            self.shared
                .lock_state()
                .auto_approve
                .insert(action.to_string());
        }
        self.emit(
            "ApprovalResponse",
            json!({"request_id": id, "response": response, "feedback": feedback}),
        );
        Ok(if response == "reject" {
            Decision::Rejected(feedback)
        } else {
            Decision::Approved
        })
    }

    fn await_reply(&self, id: &str) -> Result<Map<String, Value>, Stop> {
        let mut st = self.shared.lock_state();
        loop {
            if let Some(reply) = st.pending.get_mut(id).and_then(|p| p.reply.take()) {
                st.pending.remove(id);
                return Ok(reply);
            }
            if st.eof || st.turn.as_ref().is_some_and(|t| t.cancelled) {
                st.pending.remove(id);
                return Err(Stop::Cancelled);
            }
            st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs `sh -c command` in the work dir; killed if the turn is cancelled.
    fn run_command(&self, command: &str, work_dir: &PathBuf) -> Result<Value, Stop> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return Ok(error_value(&format!("Failed to run command: {e}"), vec![])),
        };
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut r| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        })
        .collect();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(_) => break None,
            }
            if let Err(stop) = self.wait(Some(Instant::now() + POLL), true) {
                kill_tree(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(stop);
            }
        };
        let mut output = Vec::new();
        for r in readers {
            output.extend(r.join().unwrap_or_default());
        }
        let output = String::from_utf8_lossy(&output).into_owned();
        Ok(match status.and_then(|s| s.code()) {
            Some(0) => json!({
                "is_error": false,
                "output": output,
                "message": "Command executed successfully.",
                "display": [],
                "extras": null,
            }),
            Some(code) => json!({
                "is_error": true,
                "output": output,
                "message": format!("Command failed with exit code: {code}."),
                "display": [{"type": "brief", "text": format!("Failed with exit code: {code}")}],
                "extras": null,
            }),
            None => json!({
                "is_error": true,
                "output": output,
                "message": "Command was killed by a signal.",
                "display": [{"type": "brief", "text": "Killed by a signal"}],
                "extras": null,
            }),
        })
    }
}

/// Kills `pid` and its descendants (found through `/proc`, so Linux only),
/// so that cancelling `sh -c "sleep 10; ..."` does not leave `sleep` behind.
/// The command stays in the agent's process group, so a client that kills the
/// agent's group reaches it as well.
fn kill_tree(pid: u32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut parent_of = Vec::new();
    for entry in entries.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    // The root goes first, so that a shell cannot run its next command once
    // the current one is killed.
    let victims: Vec<String> = tree.iter().map(u32::to_string).collect();
    if victims.len() > 1 {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&victims)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The `[recall]` answer: every text part of the prompt before the last
/// one (the context a client sent with it), or `(no context)`.
fn recall(user_input: &Value) -> String {
    let parts: Vec<&str> = match user_input {
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    };
    match parts.split_last() {
        Some((_, earlier)) if !earlier.is_empty() => format!("Recall: {}", earlier.join(" | ")),
        _ => "Recall: (no context)".to_string(),
    }
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "type": "function",
        "id": id,
        "function": {"name": name, "arguments": arguments},
        "extras": null,
    })
}

fn error_value(message: &str, display: Vec<Value>) -> Value {
    json!({
        "is_error": true,
        "output": "",
        "message": message,
        "display": display,
        "extras": null,
    })
}

fn rejected_value(feedback: &str) -> Value {
    if feedback.is_empty() {
        error_value(
            "The tool call is rejected by the user. \
             Please follow the new instructions from the user.",
            vec![json!({"type": "brief", "text": "Rejected by user"})],
        )
    } else {
        error_value(
            &format!("The tool call is rejected by the user. User feedback: {feedback}"),
            vec![json!({"type": "brief", "text": format!("Rejected: {feedback}")})],
        )
    }
}

fn write_file(path: &std::path::Path, content: &str, display: Vec<Value>) -> Value {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, content));
    match written {
        Ok(()) => json!({
            "is_error": false,
            "output": "",
            "message": format!(
                "File successfully overwritten. Current size: {} bytes.",
                content.len()
            ),
            "display": display,
            "extras": null,
        }),
        Err(e) => error_value(
            &format!("Failed to write file `{}`: {e}", path.display()),
            vec![],
        ),
    }
}

fn strip_newline(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

fn secs_to_duration(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(u64::MAX / 4))
}

/// Splits `s` into at most `n` chunks of about equal length (in chars).
fn split_even(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Splits `s` into chunks of `size` chars.
fn split_every(s: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_answers_with_the_context_parts() {
        assert!(crate::directives::parse("x [recall]").recall);
        assert_eq!(recall(&json!("only [recall]")), "Recall: (no context)");
        let parts = json!([
            {"type": "text", "text": "user: hi"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "again [recall]"}
        ]);
        assert_eq!(recall(&parts), "Recall: user: hi");
    }

    #[test]
    fn splitting() {
        assert_eq!(split_even("abcdefg", 3), vec!["abc", "def", "g"]);
        assert_eq!(split_even("ab", 3), vec!["a", "b"]);
        assert!(split_even("", 3).is_empty());
        assert_eq!(split_every("[\"A\",\"B\"]", 4).concat(), "[\"A\",\"B\"]");
        assert_eq!(split_even("héllo", 2), vec!["hél", "lo"]);
    }

    #[test]
    fn rejection_messages() {
        assert_eq!(
            rejected_value("no")["message"],
            "The tool call is rejected by the user. User feedback: no"
        );
        assert_eq!(rejected_value("")["is_error"], true);
    }
}
