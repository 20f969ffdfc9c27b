//! Property-based fuzzing of the parsers that take untrusted input: the Wire
//! message parser (anything an agent writes on stdout) and the worker spec
//! parser (anything a user types). No input may panic, and what parses must
//! be consistent. Bounded: `OMK_FUZZ_CASES` cases per property (default 2000).

use omk_core::agent::protocol::{self, Incoming, TurnRecord};
use omk_core::team::WorkerSpec;
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("OMK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Arbitrary JSON values, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Messages shaped like Wire traffic, with fuzzed parts.
fn wire_like() -> impl Strategy<Value = Value> {
    let kinds = prop::sample::select(vec![
        "TurnBegin",
        "TurnEnd",
        "StepBegin",
        "StatusUpdate",
        "ContentPart",
        "ToolCall",
        "ToolCallPart",
        "ToolResult",
        "ApprovalResponse",
        "SubagentEvent",
        "Notification",
        "NoSuchType",
    ]);
    let reqs = prop::sample::select(vec![
        "ApprovalRequest",
        "ToolCallRequest",
        "QuestionRequest",
        "HookRequest",
        "Other",
    ]);
    prop_oneof![
        (kinds, any_json()).prop_map(|(t, p)| json!({"jsonrpc": "2.0", "method": "event", "params": {"type": t, "payload": p}})),
        (reqs, any_json(), any_json()).prop_map(|(t, id, p)| json!({"jsonrpc": "2.0", "method": "request", "id": id, "params": {"type": t, "payload": p}})),
        (any_json(), any_json()).prop_map(|(id, r)| json!({"jsonrpc": "2.0", "id": id, "result": r})),
        (any_json(), any_json()).prop_map(|(id, e)| json!({"jsonrpc": "2.0", "id": id, "error": e})),
        any_json(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn wire_parser_never_panics_on_bytes(line in ".{0,300}") {
        let _ = protocol::parse_line(&line);
    }

    #[test]
    fn wire_parser_never_panics_on_wire_shaped_messages(msg in wire_like()) {
        let mut record = TurnRecord::default();
        if let Ok(Some(Incoming::Event(e))) = protocol::parse_line(&msg.to_string()) {
            record.observe(&e);
            prop_assert_eq!(record.events, 1);
        }
    }

    #[test]
    fn truncated_messages_are_rejected_not_misread(msg in wire_like(), cut in 1usize..200) {
        let text = msg.to_string();
        if cut < text.len() && text.is_char_boundary(text.len() - cut) {
            let torn = &text[..text.len() - cut];
            // A torn JSON object can never parse as a message.
            prop_assert!(protocol::parse_line(torn).is_err() || torn.trim().is_empty());
        }
    }

    #[test]
    fn spec_parser_never_panics_and_accepts_only_valid_specs(spec in ".{0,80}") {
        if let Ok(parsed) = WorkerSpec::parse(&spec) {
            prop_assert!((1..=64).contains(&parsed.count));
            prop_assert!(!parsed.role.contains('/') && !parsed.role.contains(".."));
            prop_assert!(omk_core::paths::validate_name("role", &parsed.role).is_ok());
        }
    }

    #[test]
    fn spec_parser_round_trips_valid_specs(n in 1u32..=64, role in "[A-Za-z0-9][A-Za-z0-9_-]{0,20}") {
        let parsed = WorkerSpec::parse(&format!("{n}:{role}")).unwrap();
        prop_assert_eq!((parsed.count, parsed.role), (n, role));
    }
}
