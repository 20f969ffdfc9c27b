//! Drives the built `omk-scripted-agent` binary over pipes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_omk-scripted-agent");
const TIMEOUT: Duration = Duration::from_secs(5);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "omk-scripted-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    dir: TempDir,
}

impl Agent {
    fn start() -> Self {
        Self::start_with(&[], &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let mut cmd = Command::new(BIN);
        cmd.arg("--wire")
            .arg("--work-dir")
            .arg(dir.path())
            .args(["--config-file", "/nonexistent.toml", "--model", "fake"])
            .args(args)
            .env_remove("OMK_SCRIPTED_BEHAVIOUR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Agent {
            child,
            stdin,
            rx,
            dir,
        }
    }

    fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn send(&mut self, msg: Value) {
        self.send_raw(&msg.to_string());
    }

    fn request(&mut self, id: &str, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    }

    fn prompt(&mut self, id: &str, text: &str) {
        self.request(id, "prompt", json!({"user_input": text}));
    }

    /// The next raw line, or `None` if stdout closed or the timeout passed.
    fn recv_raw(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    fn recv(&self) -> Value {
        let line = self.recv_raw(TIMEOUT).expect("a message from the agent");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Collects messages up to and including the response with `id`,
    /// answering `request`s with `answer`.
    fn until_response_with(
        &mut self,
        id: &str,
        mut answer: impl FnMut(&Value) -> Value,
    ) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let msg = self.recv();
            if msg["method"] == "request" {
                let result = answer(&msg);
                let rid = msg["id"].clone();
                self.send(json!({"jsonrpc": "2.0", "id": rid, "result": result}));
            }
            let done = msg["id"] == id && msg.get("method").is_none();
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }

    fn until_response(&mut self, id: &str) -> Vec<Value> {
        self.until_response_with(id, |m| panic!("unexpected request {m}"))
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("agent did not exit within {within:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event_types(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["method"] == "event")
        .map(|m| m["params"]["type"].as_str().unwrap().to_string())
        .collect()
}

fn events<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter()
        .filter(|m| m["method"] == "event" && m["params"]["type"] == ty)
        .map(|m| &m["params"]["payload"])
        .collect()
}

fn text_of(msgs: &[Value]) -> String {
    events(msgs, "ContentPart")
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect()
}

fn approve_with(response: &'static str) -> impl FnMut(&Value) -> Value {
    move |req: &Value| {
        assert_eq!(req["params"]["type"], "ApprovalRequest");
        assert_eq!(req["id"], req["params"]["payload"]["id"]);
        json!({"request_id": req["id"], "response": response, "feedback": "not now"})
    }
}

#[test]
fn version_and_usage() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("omk-scripted-agent "), "{text}");
    assert!(text.trim_end().ends_with("(Kimi Wire 1.10)"), "{text}");

    let out = Command::new(BIN)
        .arg("--work-dir")
        .arg(".")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
}

#[test]
fn initialize_handshake() {
    let mut a = Agent::start();
    a.request("i1", "initialize", json!({"client": {"name": "t"}}));
    let err = a.recv();
    assert_eq!(err["id"], "i1");
    assert_eq!(err["error"]["code"], -32602);

    a.request(
        "i2",
        "initialize",
        json!({
            "protocol_version": "0.1",
            "client": {"name": "omk", "version": "1"},
            "external_tools": [{"name": "omk_report", "description": "d", "parameters": {}},
                               {"name": "Shell", "description": "d", "parameters": {}}],
            "hooks": [{"id": "h", "event": "Stop"}],
            "unknown_field": true,
        }),
    );
    let res = a.recv();
    assert_eq!(res["id"], "i2");
    let r = &res["result"];
    assert_eq!(r["protocol_version"], "1.10");
    assert_eq!(r["server"]["name"], "omk-scripted-agent");
    assert_eq!(r["slash_commands"], json!([]));
    assert_eq!(r["external_tools"]["accepted"], json!(["omk_report"]));
    assert_eq!(r["external_tools"]["rejected"][0]["name"], "Shell");
    assert!(r["hooks"]["supported_events"]
        .as_array()
        .unwrap()
        .contains(&json!("PreToolUse")));
    assert_eq!(r["hooks"]["configured"], json!({"Stop": 1}));
    assert_eq!(r["capabilities"], json!({"supports_question": true}));
}

#[test]
fn default_turn_event_order() {
    let mut a = Agent::start();
    a.prompt("p1", "Say hello to the orchestrator.");
    let msgs = a.until_response("p1");
    let types = event_types(&msgs);
    assert_eq!(&types[..2], ["TurnBegin", "StepBegin"]);
    let n_parts = types.iter().filter(|t| *t == "ContentPart").count();
    assert!(n_parts >= 2, "{types:?}");
    assert!(types[2..2 + n_parts].iter().all(|t| t == "ContentPart"));
    assert_eq!(&types[2 + n_parts..], ["StatusUpdate", "TurnEnd"]);
    assert_eq!(
        msgs.last().unwrap()["result"],
        json!({"status": "finished"})
    );
    assert_eq!(
        events(&msgs, "TurnBegin")[0]["user_input"],
        "Say hello to the orchestrator."
    );
    assert_eq!(events(&msgs, "StepBegin")[0]["n"], 1);
    assert_eq!(text_of(&msgs), "Done: Say hello to the orchestrator.");
    let status = events(&msgs, "StatusUpdate")[0];
    let usage = &status["token_usage"];
    assert_eq!(usage["input_other"], 30 / 4);
    assert_eq!(usage["output"], 36 / 4);
    assert_eq!(usage["input_cache_read"], 0);
    assert_eq!(usage["input_cache_creation"], 0);
    assert_eq!(status["max_context_tokens"], 131072);
    assert_eq!(status["plan_mode"], false);
    assert!(status["mcp_status"].is_null());
    assert!(status["context_usage"].is_f64());

    // A second turn, with the last text part of a ContentPart list and tokens.
    a.request(
        "p2",
        "prompt",
        json!({"user_input": [{"type": "text", "text": "old"},
                              {"type": "text", "text": "[answer:All good] [tokens:120:45]"}]}),
    );
    let msgs = a.until_response("p2");
    assert_eq!(text_of(&msgs), "All good");
    let usage = &events(&msgs, "StatusUpdate")[0]["token_usage"];
    assert_eq!(
        (&usage["input_other"], &usage["output"]),
        (&json!(120), &json!(45))
    );
}

#[test]
fn invalid_messages() {
    let mut a = Agent::start();
    a.send_raw(r#"{"jsonrpc":"2.0","id":7,"method":"prompt","params":{"user_input":"x"}}"#);
    assert_eq!(
        a.recv(),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request","data":null}})
    );
    a.send_raw("this is not json");
    let err = a.recv();
    assert!(err["id"].is_null());
    assert_eq!(err["error"]["code"], -32700);
    a.send_raw("");
    a.request("b1", "bogus_method", json!({}));
    let err = a.recv();
    assert_eq!(err["id"], "b1");
    assert_eq!(err["error"]["code"], -32601);
    assert_eq!(
        err["error"]["message"],
        "Unexpected method received: bogus_method"
    );
    a.request("c1", "cancel", json!({}));
    let err = a.recv();
    assert_eq!(err["error"]["code"], -32000);
    assert_eq!(err["error"]["message"], "No agent turn is in progress");
    // Still serving; CRLF and whitespace are tolerated.
    a.send_raw("  {\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"prompt\",\"params\":{\"user_input\":\"[answer:ok]\"}}\r");
    let msgs = a.until_response("p");
    assert_eq!(text_of(&msgs), "ok");
}

#[test]
fn busy_prompt_and_cancel_during_sleep() {
    let mut a = Agent::start();
    a.prompt("p1", "[sleep:5]");
    // Wait for the first progress tick.
    loop {
        let m = a.recv();
        if m["params"]["type"] == "ContentPart" {
            assert_eq!(m["params"]["payload"]["text"], "tick 0 ");
            break;
        }
    }
    a.prompt("p2", "while busy");
    let err = a.recv();
    assert_eq!(err["id"], "p2");
    assert_eq!(err["error"]["code"], -32000);
    assert_eq!(
        err["error"]["message"],
        "An agent turn is already in progress"
    );

    a.request("s1", "steer", json!({"user_input": "hurry"}));
    assert_eq!(a.recv()["result"], json!({"status": "steered"}));

    let t0 = Instant::now();
    a.request("c1", "cancel", json!({}));
    let msgs = a.until_response("p1");
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    let ids: Vec<&Value> = msgs.iter().map(|m| &m["id"]).collect();
    let cancel_at = ids
        .iter()
        .position(|i| *i == "c1")
        .expect("cancel answered");
    assert_eq!(msgs[cancel_at]["result"], json!({}));
    let end_at = msgs
        .iter()
        .position(|m| m["params"]["type"] == "TurnEnd")
        .unwrap();
    assert!(cancel_at < end_at && end_at == msgs.len() - 2);
    assert_eq!(
        msgs.last().unwrap()["result"],
        json!({"status": "cancelled"})
    );

    // The agent is free again.
    a.prompt("p3", "[answer:again]");
    assert_eq!(text_of(&a.until_response("p3")), "again");
}

#[test]
fn write_approved_then_rejected() {
    let mut a = Agent::start();
    a.prompt("p1", "[write:sub/hello.txt:Hello\\n]");
    let msgs = a.until_response_with("p1", approve_with("approve"));
    let types = event_types(&msgs);
    assert_eq!(
        types,
        [
            "TurnBegin",
            "StepBegin",
            "ToolCall",
            "StatusUpdate",
            "ApprovalResponse",
            "ToolResult",
            "StepBegin",
            "ContentPart",
            "ContentPart",
            "ContentPart",
            "StatusUpdate",
            "TurnEnd"
        ]
    );
    let abs = a.dir.path().join("sub/hello.txt");
    assert_eq!(std::fs::read_to_string(&abs).unwrap(), "Hello\n");
    let call = events(&msgs, "ToolCall")[0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "WriteFile");
    assert!(call["extras"].is_null());
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"path": "sub/hello.txt", "content": "Hello\n"}));
    let req = msgs.iter().find(|m| m["method"] == "request").unwrap();
    let p = &req["params"]["payload"];
    assert_eq!(p["tool_call_id"], call["id"]);
    assert_eq!(p["sender"], "WriteFile");
    assert_eq!(p["action"], "edit file");
    assert_eq!(p["description"], format!("Write file `{}`", abs.display()));
    assert_eq!(p["display"][0]["type"], "diff");
    assert_eq!(p["display"][0]["new_text"], "Hello");
    assert_eq!(p["source_kind"], "foreground_turn");
    let resp = events(&msgs, "ApprovalResponse")[0];
    assert_eq!(resp["request_id"], req["id"]);
    assert_eq!(resp["response"], "approve");
    let result = events(&msgs, "ToolResult")[0];
    assert_eq!(result["tool_call_id"], call["id"]);
    assert_eq!(result["return_value"]["is_error"], false);
    assert_eq!(events(&msgs, "StepBegin")[1]["n"], 2);
    assert_eq!(msgs.last().unwrap()["result"]["status"], "finished");

    a.prompt("p2", "[write:nope.txt:should not exist]");
    let msgs = a.until_response_with("p2", approve_with("reject"));
    assert!(!a.dir.path().join("nope.txt").exists());
    let rv = &events(&msgs, "ToolResult")[0]["return_value"];
    assert_eq!(rv["is_error"], true);
    assert_eq!(
        rv["message"],
        "The tool call is rejected by the user. User feedback: not now"
    );
    assert_eq!(events(&msgs, "ApprovalResponse")[0]["response"], "reject");
    assert_eq!(msgs.last().unwrap()["result"]["status"], "finished");

    // A JSON-RPC error reply counts as a rejection.
    a.prompt("p3", "[write:err.txt:x]");
    loop {
        let m = a.recv();
        if m["method"] == "request" {
            let id = m["id"].clone();
            a.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -1, "message": "no"}}));
            break;
        }
    }
    let msgs = a.until_response("p3");
    assert_eq!(events(&msgs, "ApprovalResponse")[0]["response"], "reject");
    assert!(!a.dir.path().join("err.txt").exists());

    // Paths may not escape the work dir: no approval asked, nothing written.
    a.prompt("p4", "[write:../escape.txt:x]");
    let msgs = a.until_response("p4");
    assert_eq!(
        events(&msgs, "ToolResult")[0]["return_value"]["is_error"],
        true
    );
    assert!(!a.dir.path().parent().unwrap().join("escape.txt").exists());
}

#[test]
fn run_approve_for_session() {
    let mut a = Agent::start();
    a.prompt(
        "p1",
        "[run:echo shell-ran > shell.txt && cat shell.txt] [tool-call-parts]",
    );
    let msgs = a.until_response_with("p1", approve_with("approve_for_session"));
    let req = msgs.iter().find(|m| m["method"] == "request").unwrap();
    let p = &req["params"]["payload"];
    assert_eq!(p["sender"], "Shell");
    assert_eq!(p["action"], "run command");
    assert_eq!(
        p["description"],
        "Run command `echo shell-ran > shell.txt && cat shell.txt`"
    );
    assert_eq!(
        p["display"],
        json!([{"type": "shell", "language": "bash", "command": "echo shell-ran > shell.txt && cat shell.txt"}])
    );
    // Arguments are streamed in parts that concatenate to JSON.
    let args = events(&msgs, "ToolCall")[0]["function"]["arguments"]
        .as_str()
        .unwrap()
        .to_string()
        + events(&msgs, "ToolCallPart")[0]["arguments_part"]
            .as_str()
            .unwrap();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(
        args["command"],
        "echo shell-ran > shell.txt && cat shell.txt"
    );
    let rv = &events(&msgs, "ToolResult")[0]["return_value"];
    assert_eq!(rv["is_error"], false);
    assert_eq!(rv["output"], "shell-ran\n");
    assert_eq!(rv["message"], "Command executed successfully.");

    // Same action again: auto-approved, no request.
    a.prompt("p2", "[run:exit 4]");
    let msgs = a.until_response("p2");
    assert!(events(&msgs, "ApprovalResponse").is_empty());
    let rv = &events(&msgs, "ToolResult")[0]["return_value"];
    assert_eq!(rv["is_error"], true);
}

#[test]
fn crash_and_crash_once() {
    let mut a = Agent::start();
    a.prompt("p1", "[crash]");
    let mut msgs = Vec::new();
    while let Some(line) = a.recv_raw(TIMEOUT) {
        msgs.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(3));
    assert_eq!(
        event_types(&msgs),
        ["TurnBegin", "StepBegin", "ContentPart"]
    );
    assert!(msgs.iter().all(|m| m.get("id").is_none()));

    let mut a = Agent::start();
    let dir = a.dir.path().to_path_buf();
    a.prompt("p1", "[crash-once:marker] [answer:survived]");
    while a.recv_raw(TIMEOUT).is_some() {}
    assert_eq!(a.wait_exit(TIMEOUT).code(), Some(3));
    assert!(dir.join("marker").exists());
    let mut b = Agent::start_with(&["--work-dir", dir.to_str().unwrap()], &[]);
    b.prompt("p1", "[crash-once:marker] [answer:survived]");
    assert_eq!(text_of(&b.until_response("p1")), "survived");
}

#[test]
fn malformed_and_unknown_event() {
    let mut a = Agent::start();
    a.prompt("p1", "[malformed] [unknown-event] [answer:still fine]");
    let mut msgs = Vec::new();
    let mut bad = 0;
    loop {
        let line = a.recv_raw(TIMEOUT).expect("line");
        match serde_json::from_str::<Value>(&line) {
            Ok(m) => {
                let done = m["id"] == "p1";
                msgs.push(m);
                if done {
                    break;
                }
            }
            Err(_) => bad += 1,
        }
    }
    assert_eq!(bad, 1);
    assert_eq!(text_of(&msgs), "still fine");
    assert_eq!(events(&msgs, "FutureEventType")[0], &json!({"x": 1}));
    assert!(events(&msgs, "StatusUpdate")[0]
        .get("future_field")
        .is_some());
    assert_eq!(msgs.last().unwrap()["result"]["status"], "finished");
}

#[test]
fn provider_error() {
    let mut a = Agent::start();
    a.prompt("p1", "[provider-error:Error code: 400 - bad request]");
    let msgs = a.until_response("p1");
    assert_eq!(
        event_types(&msgs),
        ["TurnBegin", "StepBegin", "StepInterrupted", "TurnEnd"]
    );
    let err = &msgs.last().unwrap()["error"];
    assert_eq!(err["code"], -32003);
    assert_eq!(err["message"], "Error code: 400 - bad request");
}

#[test]
fn json_plan_chunks_concatenate() {
    let mut a = Agent::start();
    a.prompt(
        "p1",
        "plan this [json-plan:Write the parser|Add tests|Update docs]",
    );
    let msgs = a.until_response("p1");
    let parts: Vec<&str> = events(&msgs, "ContentPart")
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert!(parts.len() >= 3, "{parts:?}");
    assert!(parts
        .iter()
        .any(|p| serde_json::from_str::<Value>(p).is_err()));
    let plan: Vec<String> = serde_json::from_str(&parts.concat()).unwrap();
    assert_eq!(plan, ["Write the parser", "Add tests", "Update docs"]);
}

#[test]
fn stdin_eof_exits_promptly() {
    let mut a = Agent::start();
    a.prompt("p1", "[slow-silent:10]");
    assert_eq!(a.recv()["params"]["type"], "TurnBegin");
    let t0 = Instant::now();
    a.close_stdin();
    let status = a.wait_exit(Duration::from_secs(2));
    assert!(status.success());
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );

    let mut idle = Agent::start();
    idle.close_stdin();
    assert!(idle.wait_exit(Duration::from_secs(2)).success());
}

#[test]
fn stall_ignores_cancel_but_not_eof() {
    let mut a = Agent::start();
    a.prompt("p1", "[stall]");
    assert_eq!(a.recv()["params"]["type"], "TurnBegin");
    assert_eq!(a.recv()["params"]["type"], "StepBegin");
    a.request("c1", "cancel", json!({}));
    assert_eq!(a.recv()["id"], "c1");
    assert!(a.recv_raw(Duration::from_millis(300)).is_none());
    a.close_stdin();
    assert!(a.wait_exit(Duration::from_secs(2)).success());
}

#[test]
fn env_behaviour_yolo_and_max_steps() {
    let mut a = Agent::start_with(
        &["--yolo", "--max-steps-per-turn", "1"],
        &[("OMK_SCRIPTED_BEHAVIOUR", "[tokens:7:3]")],
    );
    a.prompt("p1", "[write:y.txt:yolo]");
    let msgs = a.until_response("p1");
    assert!(msgs.iter().all(|m| m["method"] != "request"));
    assert_eq!(
        std::fs::read_to_string(a.dir.path().join("y.txt")).unwrap(),
        "yolo"
    );
    assert_eq!(
        msgs.last().unwrap()["result"],
        json!({"status": "max_steps_reached", "steps": 1})
    );
    a.prompt("p2", "hi");
    let msgs = a.until_response("p2");
    assert_eq!(
        events(&msgs, "StatusUpdate")[0]["token_usage"]["input_other"],
        7
    );
    assert_eq!(text_of(&msgs), "Done: hi");
}

#[test]
fn cancel_while_waiting_for_approval() {
    let mut a = Agent::start();
    a.prompt("p1", "[write:late.txt:x]");
    let req = loop {
        let m = a.recv();
        if m["method"] == "request" {
            break m;
        }
    };
    a.request("c1", "cancel", json!({}));
    let msgs = a.until_response("p1");
    assert_eq!(msgs[0]["id"], "c1");
    assert_eq!(event_types(&msgs), ["TurnEnd"]);
    assert_eq!(msgs[2]["result"], json!({"status": "cancelled"}));
    // A late answer is ignored.
    let id = req["id"].clone();
    a.send(
        json!({"jsonrpc": "2.0", "id": id, "result": {"request_id": id, "response": "approve"}}),
    );
    a.prompt("p2", "[answer:next]");
    assert_eq!(text_of(&a.until_response("p2")), "next");
    assert!(!a.dir.path().join("late.txt").exists());
}

#[test]
fn replay_and_plan_mode() {
    let mut a = Agent::start();
    a.request("m1", "set_plan_mode", json!({"enabled": true}));
    let err = a.recv();
    assert_eq!(err["error"]["code"], -32000);
    a.request(
        "i1",
        "initialize",
        json!({"protocol_version": "1.10", "capabilities": {"supports_plan_mode": true}}),
    );
    assert_eq!(a.recv()["id"], "i1");
    a.request("m2", "set_plan_mode", json!({"enabled": true}));
    let msgs = a.until_response("m2");
    assert_eq!(events(&msgs, "StatusUpdate")[0]["plan_mode"], true);
    assert_eq!(
        msgs.last().unwrap()["result"],
        json!({"status": "ok", "plan_mode": true})
    );

    a.prompt("p1", "[answer:abcdef]");
    let turn = a.until_response("p1");
    assert_eq!(events(&turn, "StatusUpdate")[0]["plan_mode"], true);
    a.request("r1", "replay", json!({}));
    let replayed = a.until_response("r1");
    let result = &replayed.last().unwrap()["result"];
    assert_eq!(result["status"], "finished");
    assert_eq!(result["events"], replayed.len() - 1);
    // Text parts are merged on replay.
    let parts = events(&replayed, "ContentPart");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["text"], "abcdef");
}

#[test]
fn cancel_kills_running_command() {
    let mut a = Agent::start_with(&["--yolo"], &[]);
    a.prompt("p1", "[run:sleep 0.6; touch after.txt]");
    loop {
        if a.recv()["params"]["type"] == "StatusUpdate" {
            break;
        }
    }
    thread::sleep(Duration::from_millis(100));
    a.request("c1", "cancel", json!({}));
    let msgs = a.until_response("p1");
    assert_eq!(msgs.last().unwrap()["result"]["status"], "cancelled");
    assert!(events(&msgs, "ToolResult").is_empty());
    thread::sleep(Duration::from_millis(900));
    assert!(!a.dir.path().join("after.txt").exists());
}
