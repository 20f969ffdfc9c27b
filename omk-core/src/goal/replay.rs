//! `omk goal replay`: the deduplicated timeline of a goal, derived only from
//! its stored events (never from the clock). An event appended twice (same
//! id) counts once and as a duplicate; a torn or unparsable line is skipped
//! and counted.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::graph::GraphSummary;
use super::state::{GoalState, Phase, Status};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Position of the line in the log.
    pub index: usize,
    pub ts: String,
    pub kind: String,
    pub actor: Option<String>,
    pub summary: Option<String>,
}

/// API.md GoalReplay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalReplay {
    pub version: u32,
    pub goal_id: String,
    pub status: Status,
    pub phase: Phase,
    pub generated_at: String,
    pub event_count: usize,
    pub task_graph_summary: GraphSummary,
    pub timeline: Vec<TimelineEntry>,
    pub recovery_status: Option<String>,
    pub known_gaps: Vec<String>,
    pub duplicate_events: usize,
    pub parse_failures: usize,
}

/// The fields of an event line replay needs. Only the payload keys a summary
/// shows are kept; the rest of the payload is skipped without being built
/// (replay of a 100,000-event log is benchmarked).
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    id: Option<String>,
    ts: String,
    kind: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    payload: Option<Payload>,
}

/// Payload keys worth showing, in this order (fields of [`Payload`]).
#[derive(Deserialize, Default)]
struct Payload {
    status: Option<Value>,
    phase: Option<Value>,
    task_id: Option<Value>,
    team: Option<Value>,
    iteration: Option<Value>,
    gate: Option<Value>,
    passed: Option<Value>,
    label: Option<Value>,
    checkpoint_id: Option<Value>,
    reason: Option<Value>,
    message: Option<Value>,
}

fn summarize(p: &Payload) -> Option<String> {
    let fields = [
        ("status", &p.status),
        ("phase", &p.phase),
        ("task_id", &p.task_id),
        ("team", &p.team),
        ("iteration", &p.iteration),
        ("gate", &p.gate),
        ("passed", &p.passed),
        ("label", &p.label),
        ("checkpoint_id", &p.checkpoint_id),
        ("reason", &p.reason),
        ("message", &p.message),
    ];
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            let text = match v.as_ref()? {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Some(format!("{k}={text}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Events already seen. UUID ids (what omk writes) are kept as 128-bit
/// numbers; any other id, or a line without one, by its text.
#[derive(Default)]
struct Seen {
    uuids: HashSet<u128, BuildHasherDefault<MixHasher>>,
    others: HashSet<Vec<u8>>,
}

impl Seen {
    /// False when the event was seen before.
    fn insert(&mut self, id: Option<&str>, raw: &[u8]) -> bool {
        match id {
            Some(id) => match uuid_bits(id) {
                Some(n) => self.uuids.insert(n),
                None => self.others.insert(id.as_bytes().to_vec()),
            },
            None => self.others.insert(raw.to_vec()),
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` as a number.
fn uuid_bits(id: &str) -> Option<u128> {
    if id.len() != 36 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, c) in id.bytes().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        n = (n << 4) | u128::from((c as char).to_digit(16)?);
    }
    Some(n)
}

/// A hasher for keys that are already random (UUID v4 bits): fold and mix,
/// no SipHash rounds.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// Read the log (rotated generation first) and build the replay.
pub fn replay(
    events_file: &Path,
    state: &GoalState,
    graph: std::result::Result<Option<GraphSummary>, String>,
) -> Result<GoalReplay> {
    let mut timeline = Vec::new();
    let mut seen = Seen::default();
    let (mut duplicates, mut failures, mut index) = (0usize, 0usize, 0usize);
    for path in [
        crate::store::rotated_path(events_file),
        events_file.to_path_buf(),
    ] {
        // One read and slices into it: cheaper than a copy per line. A log
        // is capped (64 MiB per generation), so this is bounded.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        for raw in bytes.split(|b| *b == b'\n') {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let i = index;
            index += 1;
            let Ok(line) = serde_json::from_slice::<Line>(raw) else {
                failures += 1;
                continue;
            };
            if !seen.insert(line.id.as_deref(), raw) {
                duplicates += 1;
                continue;
            }
            timeline.push(TimelineEntry {
                index: i,
                summary: line.payload.as_ref().and_then(summarize),
                ts: line.ts,
                kind: line.kind,
                actor: line.actor,
            });
        }
    }
    let mut gaps = Vec::new();
    let mut recovery = None;
    if failures > 0 {
        gaps.push(format!(
            "Event log contains {failures} malformed line(s) that were skipped during replay"
        ));
        recovery = Some(format!(
            "partial: {failures} event line(s) could not be parsed"
        ));
    }
    if duplicates > 0 {
        gaps.push(format!(
            "Event log contained {duplicates} duplicate event(s) that were collapsed"
        ));
    }
    let summary = match graph {
        Ok(s) => s.unwrap_or_default(),
        Err(why) => {
            gaps.push(format!("Task graph could not be loaded for replay: {why}"));
            recovery.get_or_insert_with(|| format!("partial: {why}"));
            GraphSummary::default()
        }
    };
    let generated_at = timeline.last().map_or_else(
        || rfc3339(state.created_at),
        |e: &TimelineEntry| e.ts.clone(),
    );
    Ok(GoalReplay {
        version: 1,
        goal_id: state.goal_id.clone(),
        status: state.status,
        phase: state.phase,
        generated_at,
        event_count: timeline.len(),
        task_graph_summary: summary,
        timeline,
        recovery_status: recovery,
        known_gaps: gaps,
        duplicate_events: duplicates,
        parse_failures: failures,
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
