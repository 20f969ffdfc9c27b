//! Golden tests: real ACP traffic (tests/fixtures/wire-recordings/acp_*.jsonl,
//! recorded from the real agents) replayed through omk's ACP message layer.
//! Every line an agent sent must classify; every `session/update` must map
//! onto an event (unknown kinds kept as `Unknown`, never an error); every
//! permission request must become an approval request the policies can
//! decide; every prompt answer must map to a turn status.

use std::collections::BTreeMap;
use std::path::Path;

use omk_core::agent::acp::messages::{self, Incoming};
use omk_core::agent::{TurnStatus, WireEvent};
use serde_json::Value;

fn recording(name: &str) -> Vec<(String, Value)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wire-recordings")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["dir"].as_str().unwrap().to_string(), v["msg"].clone())
        })
        .collect()
}

struct Replay {
    updates: BTreeMap<String, usize>,
    /// Vendor notifications (`_auth/status_update`...): kept, not errors.
    vendor: usize,
    /// Requests other than permissions (fs/*, vendor methods).
    requests: BTreeMap<String, usize>,
    /// Tokens on the answers, else on the updates' `_meta.usage`.
    tokens: u64,
    meta_tokens: u64,
    permissions: Vec<omk_core::agent::ApprovalRequest>,
    statuses: Vec<TurnStatus>,
    text: String,
}

impl Replay {
    /// Every update kind in `kinds` occurred in the recording.
    fn assert_updates(&self, kinds: &[&str]) {
        for kind in kinds {
            assert!(
                self.updates.contains_key(*kind),
                "{kind}: {:?}",
                self.updates
            );
        }
    }
}

fn replay(name: &str) -> Replay {
    let mut r = Replay {
        updates: BTreeMap::new(),
        vendor: 0,
        requests: BTreeMap::new(),
        tokens: 0,
        meta_tokens: 0,
        permissions: Vec::new(),
        statuses: Vec::new(),
        text: String::new(),
    };
    for (dir, msg) in recording(name) {
        if dir != "<-" {
            continue;
        }
        let line = msg.to_string();
        match messages::classify(&line) {
            Ok(Some(Incoming::Notification { method, params })) => {
                if method != "session/update" {
                    r.vendor += 1;
                    continue;
                }
                if let Some(u) = messages::meta_usage(&params) {
                    r.meta_tokens += u.total();
                }
                let (_, event) = messages::parse_update(&params)
                    .unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
                let kind = params["update"]["sessionUpdate"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if let WireEvent::Text(t) = &event {
                    r.text.push_str(t);
                }
                *r.updates.entry(kind).or_default() += 1;
            }
            Ok(Some(Incoming::Request { id, method, params })) => {
                if method == "session/request_permission" {
                    r.permissions
                        .push(messages::permission_request(&id, &params));
                } else {
                    *r.requests.entry(method).or_default() += 1;
                }
            }
            Ok(Some(Incoming::Response { answer, .. })) => {
                if answer.as_ref().is_ok_and(|v| v.get("stopReason").is_some()) {
                    if let Some(u) = messages::response_usage(&answer) {
                        r.tokens += u.total();
                    }
                    r.statuses.push(messages::turn_status(&answer));
                }
            }
            Ok(None) => {}
            Err(e) => panic!("{name}: {e:?}: {line}"),
        }
    }
    r
}

#[test]
fn kimi_acp_traffic_maps_onto_omk_events() {
    let r = replay("acp_kimi_cli.jsonl");
    r.assert_updates(&[
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "available_commands_update",
    ]);
    assert!(r.text.contains("echo: Say hello via ACP."), "{}", r.text);
    // kimi's WriteFile asks with a diff: an edit of the path it names.
    assert_eq!(r.permissions.len(), 1);
    assert_eq!(r.permissions[0].action, "edit file");
    assert_eq!(r.permissions[0].paths(), ["/tmp/omk-peer/work/acp.txt"]);
    assert_eq!(
        r.statuses,
        [
            TurnStatus::Finished,
            TurnStatus::Finished,
            TurnStatus::Cancelled
        ]
    );
}

#[test]
fn claude_code_traffic_maps_onto_omk_events() {
    let r = replay("acp_claude.jsonl");
    r.assert_updates(&[
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "usage_update",
        "session_info_update",
    ]);
    // `_auth/status_update` is a vendor notification, kept.
    assert_eq!(r.vendor, 1);
    // Claude Code writes files itself: its Write asks with the file's path.
    assert_eq!(r.permissions.len(), 1);
    assert_eq!(r.permissions[0].action, "edit file");
    assert!(
        r.permissions[0]
            .paths()
            .iter()
            .any(|p| p.ends_with("/hello.txt")),
        "{:?}",
        r.permissions[0]
    );
    assert!(
        r.requests.is_empty(),
        "no fs/* from Claude: {:?}",
        r.requests
    );
    // Tokens come on the answers.
    assert!(r.tokens > 0);
    assert_eq!(
        r.statuses,
        [
            TurnStatus::Finished,
            TurnStatus::Finished,
            TurnStatus::Cancelled
        ]
    );
}

#[test]
fn qwen_code_traffic_maps_onto_omk_events() {
    let r = replay("acp_qwen.jsonl");
    r.assert_updates(&["agent_message_chunk", "tool_call", "tool_call_update"]);
    assert_eq!(r.permissions.len(), 1);
    assert_eq!(r.permissions[0].action, "edit file");
    assert!(r.permissions[0]
        .paths()
        .iter()
        .any(|p| p.ends_with("/hello.txt")));
    // qwen writes through the client, and asks a vendor method omk answers
    // with -32601.
    assert_eq!(r.requests.get("fs/write_text_file"), Some(&1));
    assert_eq!(r.requests.get("craft/drainMidTurnQueue"), Some(&1));
    // No usage on the answers: only vendor `_meta.usage` on updates.
    assert_eq!(r.tokens, 0);
    assert!(r.meta_tokens > 0);
    assert_eq!(
        r.statuses,
        [
            TurnStatus::Finished,
            TurnStatus::Finished,
            TurnStatus::Cancelled
        ]
    );
}

/// Every turn of a recording finished but the last, which was cancelled.
fn finished_then_cancelled(statuses: &[TurnStatus]) {
    let (last, rest) = statuses.split_last().expect("no turn answered");
    assert_eq!(last, &TurnStatus::Cancelled, "{statuses:?}");
    assert!(
        rest.iter().all(|s| *s == TurnStatus::Finished),
        "{statuses:?}"
    );
}

/// The recording's one permission request is an edit of `hello.txt`.
fn edit_of_hello(permissions: &[omk_core::agent::ApprovalRequest]) {
    let edits: Vec<_> = permissions
        .iter()
        .filter(|p| p.action == "edit file")
        .collect();
    assert_eq!(edits.len(), 1, "{permissions:?}");
    assert!(
        edits[0].paths().iter().any(|p| p.ends_with("/hello.txt")),
        "{:?}",
        edits[0]
    );
}

#[test]
fn gemini_cli_traffic_maps_onto_omk_events() {
    let r = replay("acp_gemini.jsonl");
    r.assert_updates(&[
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "available_commands_update",
    ]);
    assert!(r.text.contains("hello from gemini"), "{}", r.text);
    // Gemini's write first appears in its permission request, then goes
    // through the client: read (a new file reads as ""), ask, read, write.
    assert_eq!(r.permissions.len(), 1, "{:?}", r.permissions);
    edit_of_hello(&r.permissions);
    assert_eq!(r.requests.get("fs/write_text_file"), Some(&1));
    assert_eq!(r.requests.get("fs/read_text_file"), Some(&2));
    // Tokens only in the answers' vendor `_meta.quota`.
    assert!(r.tokens > 0);
    assert_eq!(r.meta_tokens, 0);
    finished_then_cancelled(&r.statuses);
}

#[test]
fn codex_traffic_maps_onto_omk_events() {
    let r = replay("acp_codex.jsonl");
    r.assert_updates(&[
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "usage_update",
        "session_info_update",
    ]);
    assert!(r.text.contains("hello from codex"), "{}", r.text);
    // `_auth/status_update`, before the session exists.
    assert_eq!(r.vendor, 1);
    // In read-only mode Codex asks before each edit (with the file's path)
    // and then writes the file itself: no fs/* at all.
    assert_eq!(r.permissions.len(), 1, "{:?}", r.permissions);
    edit_of_hello(&r.permissions);
    assert!(r.requests.is_empty(), "{:?}", r.requests);
    assert!(r.tokens > 0);
    finished_then_cancelled(&r.statuses);
}

#[test]
fn opencode_traffic_maps_onto_omk_events() {
    let r = replay("acp_opencode.jsonl");
    r.assert_updates(&[
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "available_commands_update",
    ]);
    assert!(r.text.contains("hello from opencode"), "{}", r.text);
    // opencode asks for the edit and for the shell command.
    edit_of_hello(&r.permissions);
    assert_eq!(r.permissions.len(), 2, "{:?}", r.permissions);
    assert_eq!(r.requests.get("fs/write_text_file"), Some(&1));
    // Tokens on the answers (the turn's last model call).
    assert!(r.tokens > 0);
    finished_then_cancelled(&r.statuses);
}
