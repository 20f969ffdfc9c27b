//! The event envelope written to every run's `events.jsonl`, and its typed
//! kinds. Payloads are redacted before they reach disk.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::store::{FsyncPolicy, JsonlWriter, LogRead};

/// Current version of the envelope.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Size past which an events log rotates to `events.jsonl.1` (64 MiB, so a
/// run keeps at most 128 MiB of events).
pub const EVENTS_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// One line of an events log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUID v4).
    pub id: String,
    /// When it happened, RFC 3339 UTC.
    pub ts: DateTime<Utc>,
    /// The team name, goal id or session id the event belongs to.
    pub run_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Who did it: a worker id, "supervisor", "controller", or none.
    #[serde(default)]
    pub actor: Option<String>,
    /// Kind-specific details (redacted on write).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub payload: Value,
    /// Envelope version.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// Its position in its log: in a run's `events.jsonl` 1, 2, 3...
    /// (stamped by the log's one writer; absent in logs of older omk), in a
    /// PostgreSQL store the store's global sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

fn default_schema_version() -> u32 {
    EVENT_SCHEMA_VERSION
}

impl Event {
    /// A new event stamped now with a fresh id.
    pub fn new(
        run_id: impl Into<String>,
        kind: EventKind,
        actor: Option<&str>,
        payload: Value,
    ) -> Event {
        Event {
            id: crate::ids::uuid_v4(),
            ts: Utc::now(),
            run_id: run_id.into(),
            kind,
            actor: actor.map(str::to_owned),
            payload,
            schema_version: EVENT_SCHEMA_VERSION,
            seq: None,
        }
    }
}

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// Typed event kinds. Kinds written by a newer omk read back as
        /// [`EventKind::Other`] instead of failing the reader.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($variant,)*
            /// A kind this version does not know.
            Other(String),
        }

        impl EventKind {
            /// The snake_case name stored on disk.
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Other(s) => s,
                }
            }

            /// Parse a stored name.
            pub fn parse(name: &str) -> EventKind {
                match name {
                    $($name => EventKind::$variant,)*
                    other => EventKind::Other(other.to_string()),
                }
            }
        }
    };
}

event_kinds! {
    RunStarted => "run_started",
    RunCompleted => "run_completed",
    RunFailed => "run_failed",
    PhaseChanged => "phase_changed",
    PlanFallback => "plan_fallback",
    WorkerStarted => "worker_started",
    WorkerHeartbeat => "worker_heartbeat",
    WorkerStalled => "worker_stalled",
    WorkerExited => "worker_exited",
    TaskCreated => "task_created",
    TaskClaimed => "task_claimed",
    TaskStarted => "task_started",
    TaskOutput => "task_output",
    TaskCompleted => "task_completed",
    TaskFailed => "task_failed",
    LeaseExpired => "lease_expired",
    RetryScheduled => "retry_scheduled",
    TaskCommitted => "task_committed",
    TaskIntegrated => "task_integrated",
    IntegrationConflict => "integration_conflict",
    WorktreesCleaned => "worktrees_cleaned",
    ApprovalRequested => "approval_requested",
    ApprovalDecided => "approval_decided",
    AgentProtocolError => "agent_protocol_error",
    AgentQuestion => "agent_question",
    GatePassed => "gate_passed",
    GateFailed => "gate_failed",
    GateSkipped => "gate_skipped",
    PoolAdmitted => "pool_admitted",
    PoolQueued => "pool_queued",
    PoolRejected => "pool_rejected",
    PoolReleased => "pool_released",
    PoolLeft => "pool_left",
    ShutdownRequested => "shutdown_requested",
    ProofWritten => "proof_written",
    GoalCreated => "goal_created",
    GoalStatusChanged => "goal_status_changed",
    BudgetCheckpoint => "budget_checkpoint",
    CheckpointWritten => "checkpoint_written",
    RolledBack => "rolled_back",
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(EventKind::parse(&s))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's event log. Every append is durable (fsync) before it returns and
/// its payload is redacted first. Each event is stamped with the next
/// sequence number of the log (its one writer at a time numbers them; the
/// last number is read back from the log on open), so a reader can ask for
/// the events after a given one, across a rotation.
#[derive(Debug)]
pub struct EventLog {
    writer: JsonlWriter,
    last: u64,
}

impl EventLog {
    /// Open (creating) the log at `path`, capped at [`EVENTS_MAX_BYTES`].
    pub fn open(path: &Path) -> Result<EventLog> {
        let writer = JsonlWriter::open(path, FsyncPolicy::EveryAppend)?.with_cap(EVENTS_MAX_BYTES);
        Ok(EventLog {
            last: last_seq(path)?,
            writer,
        })
    }

    /// The sequence number of the last event appended (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    fn stamp(&mut self, event: &mut Event) {
        crate::redact::redact_value(&mut event.payload);
        self.last += 1;
        event.seq = Some(self.last);
    }

    /// Redact, number and append one event.
    pub fn append(&mut self, mut event: Event) -> Result<Event> {
        let last = self.last;
        self.stamp(&mut event);
        if let Err(e) = self.writer.append(&event) {
            self.last = last;
            return Err(e);
        }
        Ok(event)
    }

    /// Redact, number and append several events with one write, not
    /// synced: see [`EventLog::sync`]. Returns their sequence numbers'
    /// range.
    pub fn append_batch(
        &mut self,
        mut events: Vec<Event>,
    ) -> Result<std::ops::RangeInclusive<u64>> {
        let last = self.last;
        for e in &mut events {
            self.stamp(e);
        }
        if let Err(e) = self.writer.append_batch(&events) {
            self.last = last;
            return Err(e);
        }
        Ok(last + 1..=self.last)
    }

    /// Flush appended events to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.writer.sync()
    }

    /// Build, redact and append an event.
    pub fn emit(
        &mut self,
        run_id: &str,
        kind: EventKind,
        actor: Option<&str>,
        payload: Value,
    ) -> Result<Event> {
        self.append(Event::new(run_id, kind, actor, payload))
    }
}

/// Read a run's events (including a rotated generation), skipping and
/// counting lines that do not parse.
pub fn read_events(path: &Path) -> Result<LogRead<Event>> {
    crate::store::read_jsonl_with_rotated(path)
}

/// The events of the log at `path` after sequence number `after` (every
/// event when `after` is 0), at most `limit`, in order. An event written
/// by an omk that did not number them gets its position in the log.
pub fn read_events_after(path: &Path, after: u64, limit: usize) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (i, mut e) in read_events(path)?.records.into_iter().enumerate() {
        let seq = *e.seq.get_or_insert(i as u64 + 1);
        if seq > after {
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// How far back from a log's end [`last_seq`] looks before reading it all.
const TAIL_BYTES: u64 = 64 * 1024;

/// The sequence number of the last event of the log at `path` (0 when it
/// has none): read from the end of the live file (or, when it is empty,
/// of the rotated one); a log of an omk that did not number its events
/// counts them.
fn last_seq(path: &Path) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    for p in [path.to_path_buf(), crate::store::rotated_path(path)] {
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(crate::error::Error::Io {
                    context: format!("open {}", p.display()),
                    source: e,
                })
            }
        };
        let io = |e| crate::error::Error::Io {
            context: format!("read {}", p.display()),
            source: e,
        };
        let len = f.metadata().map_err(io)?.len();
        if len == 0 {
            continue;
        }
        let from = len.saturating_sub(TAIL_BYTES);
        f.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io)?;
        // The first line of a partial read may be cut: skipped unless the
        // read started at the beginning.
        let lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        let whole = if from == 0 {
            &lines[..]
        } else {
            &lines[1.min(lines.len())..]
        };
        for line in whole.iter().rev() {
            if let Ok(e) = serde_json::from_slice::<Event>(line) {
                if let Some(seq) = e.seq {
                    return Ok(seq);
                }
                break;
            }
        }
        // Unnumbered (older omk), or no whole line in the tail: the
        // highest number or position in the whole log.
        let all = read_events(path)?.records;
        let positions = all.iter().enumerate();
        return Ok(positions
            .map(|(i, e)| e.seq.unwrap_or(i as u64 + 1))
            .max()
            .unwrap_or(0));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_unknown_kinds_survive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&p).unwrap();
        log.emit(
            "t-1",
            EventKind::TaskStarted,
            Some("w1"),
            serde_json::json!({"task": 1}),
        )
        .unwrap();
        log.append(Event::new(
            "t-1",
            EventKind::parse("from_the_future"),
            None,
            Value::Null,
        ))
        .unwrap();
        let read = read_events(&p).unwrap();
        assert_eq!(read.parse_failures, 0);
        assert_eq!(read.records[0].kind, EventKind::TaskStarted);
        assert_eq!(read.records[0].actor.as_deref(), Some("w1"));
        assert_eq!(
            read.records[1].kind,
            EventKind::Other("from_the_future".into())
        );
        let line = std::fs::read_to_string(&p).unwrap();
        assert!(line.contains(r#""kind":"task_started""#));
    }

    #[test]
    fn events_are_numbered_across_reopens_and_a_rotation_and_read_after_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        // An older omk's unnumbered events count by position.
        std::fs::write(
            &p,
            concat!(
                r#"{"id":"a","ts":"2026-01-01T00:00:00Z","run_id":"r","kind":"run_started"}"#,
                "\n",
                r#"{"id":"b","ts":"2026-01-01T00:00:00Z","run_id":"r","kind":"task_created"}"#,
                "\n"
            ),
        )
        .unwrap();
        let mut log = EventLog::open(&p).unwrap();
        assert_eq!(log.last_seq(), 2);
        let e = log
            .emit("r", EventKind::TaskClaimed, None, Value::Null)
            .unwrap();
        assert_eq!(e.seq, Some(3));
        let range = log
            .append_batch(vec![
                Event::new("r", EventKind::TaskStarted, None, Value::Null),
                Event::new("r", EventKind::TaskCompleted, None, Value::Null),
            ])
            .unwrap();
        assert_eq!(range, 4..=5);
        drop(log);
        // A new writer goes on from the last number.
        let log = EventLog::open(&p).unwrap();
        assert_eq!(log.last_seq(), 5);
        // Across a rotation too: the live file is new and empty.
        std::fs::rename(&p, crate::store::rotated_path(&p)).unwrap();
        let mut log2 = EventLog::open(&p).unwrap();
        assert_eq!(log2.last_seq(), 5);
        log2.emit("r", EventKind::RunCompleted, None, Value::Null)
            .unwrap();
        drop(log);
        let after: Vec<u64> = read_events_after(&p, 3, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq.unwrap())
            .collect();
        assert_eq!(after, vec![4, 5, 6]);
        assert_eq!(read_events_after(&p, 0, 2).unwrap().len(), 2);
    }

    #[test]
    fn payload_secrets_are_redacted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&p).unwrap();
        log.emit(
            "t",
            EventKind::TaskOutput,
            None,
            serde_json::json!({"api_key": "hunter2-secret-value", "text": "key sk-abcdefghijklmnopqrstuvwx"}),
        )
        .unwrap();
        let raw = std::fs::read_to_string(&p).unwrap();
        assert!(!raw.contains("hunter2"), "{raw}");
        assert!(!raw.contains("sk-abcdefghijklmnopqrstuvwx"), "{raw}");
    }
}
