//! `omk goal replay`: the deduplicated timeline of a goal, derived only from
//! its stored events (never from the clock). An event appended twice (same
//! id) counts once and as a duplicate; a torn or unparsable line is skipped
//! and counted.

use std::collections::HashSet;
use std::io::BufRead;
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

/// Read the log (rotated generation first) and build the replay.
pub fn replay(
    events_file: &Path,
    state: &GoalState,
    graph: std::result::Result<Option<GraphSummary>, String>,
) -> Result<GoalReplay> {
    let mut timeline = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut duplicates, mut failures, mut index) = (0usize, 0usize, 0usize);
    for path in [
        crate::store::rotated_path(events_file),
        events_file.to_path_buf(),
    ] {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let reader = std::io::BufReader::with_capacity(1 << 16, file);
        for raw in reader.split(b'\n') {
            let raw = raw.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let i = index;
            index += 1;
            let Ok(line) = serde_json::from_slice::<Line>(&raw) else {
                failures += 1;
                continue;
            };
            let key = line
                .id
                .clone()
                .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned());
            if !seen.insert(key) {
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
