//! Runtime counters (API.md `/api/metrics`).
//!
//! Storage: a snapshot document `metrics.json` plus a delta log
//! `metrics.deltas.<generation>.jsonl`. An increment appends one line to the
//! delta log under the exclusive lock `metrics.json.lock` (no rename, no
//! fsync: ~tens of microseconds), so concurrent processes never lose one.
//! Once the log passes [`COMPACT_AFTER_BYTES`], the increment that crossed it
//! folds the log into a new snapshot with the next generation, written
//! durably; that atomic rename is the commit point, so a crash at any moment
//! neither loses nor double-counts (a stale log of an older generation is
//! ignored and removed). A torn delta line left by a killed process is
//! skipped: that increment never completed. Power loss may drop deltas not
//! yet compacted; the durable record of a run is its events log.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result as OmkResult;
use crate::store::{self, Document, FileLock, FsyncPolicy, JsonlWriter};

/// The stored counters document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Which delta log belongs to this snapshot (storage detail, not shown
    /// by [`Metrics::to_api_json`]).
    #[serde(default)]
    pub generation: u64,
    /// Team runs started. Older files may call it `total_spawns`.
    #[serde(default, alias = "total_spawns")]
    pub total_team_runs: u64,
    #[serde(default)]
    pub total_shutdowns: u64,
    #[serde(default)]
    pub total_tasks_created: u64,
    #[serde(default)]
    pub total_tasks_completed: u64,
    #[serde(default)]
    pub total_tasks_failed: u64,
    /// Prompt turns sent to an agent.
    #[serde(default)]
    pub total_ask_calls: u64,
    /// Prompt turns that ended in an error.
    #[serde(default)]
    pub total_ask_errors: u64,
    #[serde(default)]
    pub total_autopilot_runs: u64,
    #[serde(default)]
    pub total_ralph_runs: u64,
}

impl Document for Metrics {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "metrics document";
}

impl Metrics {
    fn fresh() -> Metrics {
        let now = Utc::now();
        Metrics {
            version: Self::VERSION,
            created_at: now,
            updated_at: now,
            generation: 0,
            total_team_runs: 0,
            total_shutdowns: 0,
            total_tasks_created: 0,
            total_tasks_completed: 0,
            total_tasks_failed: 0,
            total_ask_calls: 0,
            total_ask_errors: 0,
            total_autopilot_runs: 0,
            total_ralph_runs: 0,
        }
    }

    fn slot(&mut self, c: Counter) -> &mut u64 {
        match c {
            Counter::TeamRuns => &mut self.total_team_runs,
            Counter::Shutdowns => &mut self.total_shutdowns,
            Counter::TasksCreated => &mut self.total_tasks_created,
            Counter::TasksCompleted => &mut self.total_tasks_completed,
            Counter::TasksFailed => &mut self.total_tasks_failed,
            Counter::AskCalls => &mut self.total_ask_calls,
            Counter::AskErrors => &mut self.total_ask_errors,
            Counter::AutopilotRuns => &mut self.total_autopilot_runs,
            Counter::RalphRuns => &mut self.total_ralph_runs,
        }
    }

    /// The API.md JSON form: the stored fields plus `total_spawns`, the
    /// legacy alias of `total_team_runs`.
    pub fn to_api_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.shift_remove("generation");
            map.insert("total_spawns".into(), Value::from(self.total_team_runs));
        }
        v
    }
}

/// One counter of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    TeamRuns,
    Shutdowns,
    TasksCreated,
    TasksCompleted,
    TasksFailed,
    AskCalls,
    AskErrors,
    AutopilotRuns,
    RalphRuns,
}

/// Fold the delta log into a new snapshot once it grows past this size
/// (about a thousand increments).
pub const COMPACT_AFTER_BYTES: u64 = 64 * 1024;

/// One line of the delta log.
#[derive(Debug, Serialize, Deserialize)]
struct Delta {
    ts: DateTime<Utc>,
    add: Vec<(Counter, u64)>,
}

fn delta_log(snapshot: &Path, generation: u64) -> PathBuf {
    snapshot.with_file_name(format!("metrics.deltas.{generation}.jsonl"))
}

/// Add to several counters in one atomic step.
pub fn add(path: &Path, deltas: &[(Counter, u64)]) -> OmkResult<()> {
    let _lock = FileLock::exclusive(&store::lock_path_for(path))?;
    let snapshot = read_snapshot(path)?;
    let log = delta_log(path, snapshot.generation);
    // JsonlWriter terminates a torn tail first, so one killed writer cannot
    // corrupt the next increment.
    let mut writer = JsonlWriter::open(&log, FsyncPolicy::Grouped)?;
    writer.append(&Delta {
        ts: Utc::now(),
        add: deltas.to_vec(),
    })?;
    if writer.len() > COMPACT_AFTER_BYTES {
        compact(path, snapshot)?;
    }
    Ok(())
}

/// Add one to a counter.
pub fn increment(path: &Path, counter: Counter) -> OmkResult<()> {
    add(path, &[(counter, 1)])
}

/// Read the counters. The first read creates the snapshot, so `created_at`
/// is when this state root started counting.
pub fn read(path: &Path) -> OmkResult<Metrics> {
    let _lock = FileLock::exclusive(&store::lock_path_for(path))?;
    let snapshot = read_snapshot(path)?;
    if !path.exists() {
        store::write_doc(path, &snapshot)?;
    }
    Ok(fold(snapshot, path)?.0)
}

fn read_snapshot(path: &Path) -> OmkResult<Metrics> {
    Ok(store::read_doc::<Metrics>(path)?.unwrap_or_else(Metrics::fresh))
}

/// The snapshot plus its generation's deltas; also returns whether any
/// delta was applied.
fn fold(mut m: Metrics, path: &Path) -> OmkResult<(Metrics, bool)> {
    let read = store::read_jsonl::<Delta>(&delta_log(path, m.generation))?;
    let applied = !read.records.is_empty();
    for d in read.records {
        for (c, n) in d.add {
            let slot = m.slot(c);
            *slot = slot.saturating_add(n);
        }
        m.updated_at = m.updated_at.max(d.ts);
    }
    Ok((m, applied))
}

/// Commit snapshot+deltas as generation g+1, then drop logs of older
/// generations. Caller holds the lock.
fn compact(path: &Path, snapshot: Metrics) -> OmkResult<()> {
    let old_generation = snapshot.generation;
    let (mut m, _) = fold(snapshot, path)?;
    m.generation = old_generation + 1;
    store::write_doc(path, &m)?;
    let _ = std::fs::remove_file(delta_log(path, old_generation));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn increments_and_alias() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.json");
        increment(&p, Counter::TeamRuns).unwrap();
        add(&p, &[(Counter::TeamRuns, 2), (Counter::AskErrors, 5)]).unwrap();
        let m = read(&p).unwrap();
        assert_eq!((m.total_team_runs, m.total_ask_errors), (3, 5));
        let api = m.to_api_json();
        assert_eq!(api["total_spawns"], 3);
        assert_eq!(api["version"], 1);
        let raw = std::fs::read_to_string(&p).unwrap();
        assert!(!raw.contains("total_spawns"), "alias is output-only");
        assert!(api.get("generation").is_none());
    }

    #[test]
    fn compaction_neither_loses_nor_double_counts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.json");
        for _ in 0..3000 {
            increment(&p, Counter::TasksCreated).unwrap();
        }
        let m = read(&p).unwrap();
        assert_eq!(m.total_tasks_created, 3000);
        assert!(m.generation >= 2, "compacted {} times", m.generation);
        // A stale older-generation log (crash after commit) is ignored.
        std::fs::write(
            delta_log(&p, m.generation - 1),
            "{\"ts\":\"2026-01-01T00:00:00Z\",\"add\":[[\"tasks_created\",5]]}\n",
        )
        .unwrap();
        assert_eq!(read(&p).unwrap().total_tasks_created, 3000);
        // A torn delta line (killed mid-append) is skipped.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(delta_log(&p, m.generation))
            .unwrap();
        f.write_all(b"{\"ts\":\"2026-01-01T00:0").unwrap();
        drop(f);
        assert_eq!(read(&p).unwrap().total_tasks_created, 3000);
        increment(&p, Counter::TasksCreated).unwrap();
        assert_eq!(read(&p).unwrap().total_tasks_created, 3001);
    }

    #[test]
    fn legacy_total_spawns_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.json");
        std::fs::write(
            &p,
            r#"{"version":1,"created_at":"2026-05-11T12:00:00Z","updated_at":"2026-05-11T12:00:00Z","total_spawns":9}"#,
        )
        .unwrap();
        assert_eq!(read(&p).unwrap().total_team_runs, 9);
    }
}
