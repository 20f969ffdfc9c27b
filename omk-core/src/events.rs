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
/// its payload is redacted first.
#[derive(Debug)]
pub struct EventLog {
    writer: JsonlWriter,
}

impl EventLog {
    /// Open (creating) the log at `path`, capped at [`EVENTS_MAX_BYTES`].
    pub fn open(path: &Path) -> Result<EventLog> {
        Ok(EventLog {
            writer: JsonlWriter::open(path, FsyncPolicy::EveryAppend)?.with_cap(EVENTS_MAX_BYTES),
        })
    }

    /// Redact and append one event.
    pub fn append(&mut self, mut event: Event) -> Result<Event> {
        crate::redact::redact_value(&mut event.payload);
        self.writer.append(&event)?;
        Ok(event)
    }

    /// Redact and append several events with one write, not synced: see
    /// [`EventLog::sync`].
    pub fn append_batch(&mut self, mut events: Vec<Event>) -> Result<()> {
        for e in &mut events {
            crate::redact::redact_value(&mut e.payload);
        }
        self.writer.append_batch(&events)
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
