//! The team document (`team/<name>/team.json`): the API.md `/api/teams`
//! entry, plus the supervisor's identity and timestamps.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::paths::StatePaths;
use crate::process::ProcessId;
use crate::store::{self, Document};

/// Where a team run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Planning,
    Executing,
    Verifying,
    Completed,
    Failed,
    /// Asked to stop, and stopped.
    Shutdown,
    /// The supervisor died without finishing (detected from its dead pid).
    Interrupted,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Failed | Phase::Shutdown | Phase::Interrupted
        )
    }
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Completed,
    Failed,
    /// Never finished because the team was shut down or interrupted.
    Cancelled,
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    /// The worker holding (or that last held) it.
    pub worker: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The agent's answer (redacted, truncated), or why it failed.
    pub summary: Option<String>,
    /// Tokens used across all attempts (from the agent's StatusUpdate events).
    pub tokens: u64,
    /// One line per failed attempt: the evidence when a task fails.
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The agent profile of the worker that ran its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The files the plan said it changes: tasks sharing one never run at
    /// the same time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The fence of the holder's writes: raised by every claim. A write
    /// naming an older epoch (a worker whose lease was taken over) is
    /// refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// While running: when the holder's lease ends unless renewed. Past
    /// it, the task may be taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_deadline: Option<DateTime<Utc>>,
    /// While pending after a failed attempt: the earliest time it may be
    /// claimed again (the retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One worker of the team: its role and agent profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    pub id: String,
    pub role: String,
    pub agent: String,
}

/// What one agent profile used in the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentUsage {
    /// `wire` or `acp`.
    pub protocol: String,
    /// Workers that run it (the planner not counted).
    pub workers: u32,
    pub tokens: u64,
    pub output_tokens: u64,
    /// What the agent reported its turns cost, when it reports cost (ACP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::agent::protocol::Cost>,
}

impl TaskEntry {
    pub fn new(index: usize, title: String) -> TaskEntry {
        TaskEntry {
            id: format!("t{}", index + 1),
            title,
            status: TaskStatus::Pending,
            worker: None,
            attempts: 0,
            summary: None,
            tokens: 0,
            errors: Vec::new(),
            started_at: None,
            finished_at: None,
            agent: None,
            files: Vec::new(),
            epoch: 0,
            lease_deadline: None,
            retry_at: None,
        }
    }
}

/// `team.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamDoc {
    pub version: u32,
    pub name: String,
    pub task: String,
    pub created_at: DateTime<Utc>,
    pub worker_count: u32,
    pub worker_role: String,
    pub phase: Phase,
    pub tasks: Vec<TaskEntry>,
    pub state_dir: PathBuf,
    // Beyond the API entry:
    pub spec: String,
    pub workdir: PathBuf,
    pub approval_policy: String,
    pub pool: String,
    /// The process running the scheduler; `None` until one starts.
    pub supervisor: Option<ProcessId>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Tokens used by the whole run (planning included).
    pub tokens: u64,
    /// The output share of `tokens` (priced differently from input).
    #[serde(default)]
    pub output_tokens: u64,
    /// Why the run failed, was shut down or was interrupted.
    pub reason: Option<String>,
    /// Every worker with its role and agent profile.
    #[serde(default)]
    pub workers: Vec<WorkerEntry>,
    /// Usage by agent profile (the planner's turn included).
    #[serde(default)]
    pub agents: std::collections::BTreeMap<String, AgentUsage>,
    /// How the workers share the project (`none` or `worktree`).
    #[serde(default)]
    pub isolation: super::isolation::Isolation,
    /// The git side of a `worktree` run: base, integrated commit, branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<super::isolation::IsolationRecord>,
}

impl Document for TeamDoc {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "team document";
}

impl TeamDoc {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("team.json")
    }

    pub fn count(&self, status: TaskStatus) -> usize {
        self.tasks.iter().filter(|t| t.status == status).count()
    }

    /// Read a team's document as stored.
    pub fn load(paths: &StatePaths, name: &str) -> Result<Option<TeamDoc>> {
        store::read_doc(&TeamDoc::file(&paths.team_dir(name)?))
    }

    pub fn save(&self) -> Result<()> {
        store::write_doc(&TeamDoc::file(&self.state_dir), self)
    }
}

/// Whether `run` names a team that has ended (or no longer exists). Used by
/// pool cleanup.
pub fn run_is_terminal(paths: &StatePaths, run: &str) -> bool {
    match TeamDoc::load(paths, run) {
        Ok(Some(doc)) => doc.phase.is_terminal() || doc.supervisor.is_some_and(|s| !s.is_alive()),
        Ok(None) => !paths.team_dir(run).is_ok_and(|d| d.exists()),
        Err(_) => false,
    }
}
