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
    permissions: Vec<omk_core::agent::ApprovalRequest>,
    statuses: Vec<TurnStatus>,
    text: String,
}

fn replay(name: &str) -> Replay {
    let mut r = Replay {
        updates: BTreeMap::new(),
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
                assert_eq!(method, "session/update", "{name}: {line}");
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
                }
            }
            Ok(Some(Incoming::Response { answer, .. })) => {
                if answer.as_ref().is_ok_and(|v| v.get("stopReason").is_some()) {
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
    for kind in [
        "agent_message_chunk",
        "tool_call",
        "tool_call_update",
        "available_commands_update",
    ] {
        assert!(r.updates.contains_key(kind), "{kind}: {:?}", r.updates);
    }
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
