//! Golden tests: real kimi-cli 1.51.0 traffic (tests/fixtures/wire-recordings,
//! copied from shared/fixtures) replayed through omk's Wire parser.

use std::collections::HashMap;
use std::path::Path;

use omk_core::agent::protocol::{self, Incoming, TurnRecord, TurnStatus, WireEvent};
use serde_json::Value;

struct Line {
    dir: String,
    msg: Option<Value>,
    raw: Option<String>,
}

fn recording(name: &str) -> Vec<Line> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wire-recordings")
        .join(name);
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Line {
                dir: v["dir"].as_str().unwrap().to_string(),
                msg: v.get("msg").cloned(),
                raw: v.get("raw").and_then(Value::as_str).map(str::to_owned),
            }
        })
        .collect()
}

const WIRE_RECORDINGS: &[&str] = &[
    "wire_minimal.jsonl",
    "wire_scripted_echo.jsonl",
    "wire_full_kimi_provider.jsonl",
];

#[test]
fn every_agent_line_parses_and_nothing_is_lost() {
    for name in WIRE_RECORDINGS {
        let lines = recording(name);
        let (mut events, mut requests, mut responses) = (0, 0, 0);
        let mut agent_lines = 0;
        for l in &lines {
            if l.dir != "<-" {
                continue;
            }
            agent_lines += 1;
            let text = match (&l.msg, &l.raw) {
                (Some(m), _) => m.to_string(),
                (None, Some(raw)) => raw.clone(),
                _ => panic!("{name}: line with neither msg nor raw"),
            };
            match protocol::parse_line(&text) {
                Ok(Some(Incoming::Event(e))) => {
                    events += 1;
                    assert!(
                        !matches!(e, WireEvent::Unknown { .. }),
                        "{name}: real event type unknown to omk: {e:?}"
                    );
                }
                Ok(Some(Incoming::Request(_))) => requests += 1,
                Ok(Some(Incoming::Response { .. })) => responses += 1,
                Ok(None) => panic!("{name}: blank message"),
                Err(e) => panic!("{name}: real agent line rejected: {e}\n{text}"),
            }
        }
        assert_eq!(events + requests + responses, agent_lines, "{name}");
        assert!(events > 0 && responses > 0, "{name}");
    }
}

#[test]
fn client_lines_are_what_omk_encodes() {
    for name in WIRE_RECORDINGS {
        for l in recording(name).iter().filter(|l| l.dir == "->") {
            let Some(m) = &l.msg else { continue };
            if let Some(method) = m.get("method").and_then(Value::as_str) {
                let id = m["id"].as_str().expect("client ids are strings");
                let ours: Value = serde_json::from_str(&protocol::encode_request(
                    id,
                    method,
                    m["params"].clone(),
                ))
                .unwrap();
                assert_eq!(&ours, m, "{name}");
            } else {
                let id = m["id"].as_str().unwrap();
                let ours: Value =
                    serde_json::from_str(&protocol::encode_response(id, m["result"].clone()))
                        .unwrap();
                assert_eq!(&ours, m, "{name}");
            }
        }
    }
}

/// Per prompt: the events between the request and its response, folded the
/// way the client folds them.
fn turns(name: &str) -> Vec<(String, TurnStatus, TurnRecord, u64, u64)> {
    let mut open: HashMap<String, TurnRecord> = HashMap::new();
    let mut current: Option<String> = None;
    let mut out = Vec::new();
    let mut naive_in = 0u64;
    let mut naive_out = 0u64;
    for l in recording(name) {
        let Some(m) = l.msg else { continue };
        if l.dir == "->" && m["method"] == "prompt" {
            let id = m["id"].as_str().unwrap().to_string();
            open.insert(id.clone(), TurnRecord::default());
            // A prompt sent while a turn runs is refused at once (-32000) and
            // never starts a turn of its own.
            if current.is_none() {
                current = Some(id);
                naive_in = 0;
                naive_out = 0;
            }
            continue;
        }
        if l.dir != "<-" {
            continue;
        }
        match protocol::parse_line(&m.to_string()).unwrap().unwrap() {
            Incoming::Event(e) => {
                // An independent count of the same usage, straight from JSON.
                let p = &m["params"];
                let usage = if p["type"] == "StatusUpdate" {
                    Some(&p["payload"]["token_usage"])
                } else if p["type"] == "SubagentEvent"
                    && p["payload"]["event"]["type"] == "StatusUpdate"
                {
                    Some(&p["payload"]["event"]["payload"]["token_usage"])
                } else {
                    None
                };
                if let Some(u) = usage {
                    naive_in += u["input_other"].as_u64().unwrap_or(0);
                    naive_out += u["output"].as_u64().unwrap_or(0);
                }
                if let Some(id) = &current {
                    open.get_mut(id).unwrap().observe(&e);
                }
            }
            Incoming::Response { id, result } => {
                if let Some(rec) = open.remove(&id) {
                    out.push((
                        id.clone(),
                        TurnStatus::from_response(&result),
                        rec,
                        naive_in,
                        naive_out,
                    ));
                    if current.as_deref() == Some(&id) {
                        current = None;
                    }
                }
            }
            Incoming::Request(_) => {}
        }
    }
    out
}

#[test]
fn turn_boundaries_and_token_usage() {
    let t = turns("wire_full_kimi_provider.jsonl");
    assert!(t.len() >= 8, "{} turns", t.len());
    // The first turn: one step, usage 101 in / 7 out, ended by TurnEnd then the response.
    let (id, status, rec, _, _) = &t[0];
    assert_eq!(id, "prompt-2");
    assert_eq!(*status, TurnStatus::Finished);
    assert_eq!(
        (rec.steps, rec.usage.input_other, rec.usage.output),
        (1, 101, 7)
    );
    assert!(rec.saw_turn_end);
    for (id, status, rec, naive_in, naive_out) in &t {
        assert_eq!(
            (rec.usage.input_other, rec.usage.output),
            (*naive_in, *naive_out),
            "{id}"
        );
        match status {
            TurnStatus::Finished | TurnStatus::Cancelled => assert!(rec.saw_turn_end, "{id}"),
            TurnStatus::Error { .. }
            | TurnStatus::MaxStepsReached { .. }
            | TurnStatus::Stopped { .. } => {}
        }
    }
    // A busy prompt gets -32000 without a turn; the cancelled one is reported as such.
    assert!(t.iter().any(|(_, s, _, _, _)| *s == TurnStatus::Cancelled));
    assert!(t
        .iter()
        .any(|(_, s, _, _, _)| matches!(s, TurnStatus::Error { code: -32000, .. })));
    // The approval turn ran two steps (tool call, then the answer).
    let write = t.iter().find(|(id, ..)| id == "prompt-4").unwrap();
    assert_eq!((write.2.steps, write.2.tool_calls), (2, 1));
}

#[test]
fn provider_errors_end_the_turn_with_their_code() {
    let all: Vec<_> = WIRE_RECORDINGS.iter().flat_map(|n| turns(n)).collect();
    let (id, _, rec, _, _) = all
        .iter()
        .find(|(_, s, _, _, _)| matches!(s, TurnStatus::Error { code: -32003, .. }))
        .expect("the recordings include a provider error");
    assert!(
        rec.saw_turn_end,
        "{id}: TurnEnd precedes the error response"
    );
}
