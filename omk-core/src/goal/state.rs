//! The goal documents: `goal.json` (API.md GoalState, field for field) and
//! `controller.json` (what the controller needs beyond it to resume).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::process::ProcessId;
use crate::store::{self, Document};

/// A goal's status (API.md "Status values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Ready,
    NotReady,
    BlockedOnHuman,
    BlockedOnExternal,
    NeedsMoreBudget,
    FailedInfra,
    Paused,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Ready => "ready",
            Status::NotReady => "not_ready",
            Status::BlockedOnHuman => "blocked_on_human",
            Status::BlockedOnExternal => "blocked_on_external",
            Status::NeedsMoreBudget => "needs_more_budget",
            Status::FailedInfra => "failed_infra",
            Status::Paused => "paused",
            Status::Cancelled => "cancelled",
        }
    }

    /// `ready` and `cancelled` end a goal for good; every other status can
    /// be resumed.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Ready | Status::Cancelled)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the controller is (API.md "Phase values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Intake,
    Planning,
    Decomposition,
    Execution,
    VerificationDesign,
    Proof,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Intake => "intake",
            Phase::Planning => "planning",
            Phase::Decomposition => "decomposition",
            Phase::Execution => "execution",
            Phase::VerificationDesign => "verification_design",
            Phase::Proof => "proof",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalCriteria {
    pub proof_required: bool,
    pub gates_required: bool,
    pub human_blockers_stop: bool,
}

/// A file the goal produced (absolute path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: String,
    pub path: PathBuf,
    pub created_at: DateTime<Utc>,
}

/// Why a goal stopped short of `ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    pub recorded_at: DateTime<Utc>,
}

/// `goal.json`: exactly the API.md GoalState.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalState {
    pub version: u32,
    pub goal_id: String,
    pub original_goal: String,
    pub normalized_goal: String,
    pub status: Status,
    pub phase: Phase,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub until_ready: bool,
    pub budget_time: Option<String>,
    pub budget_tokens: Option<u64>,
    pub budget_usd: Option<f64>,
    pub max_agents: Option<u32>,
    pub terminal_criteria: TerminalCriteria,
    pub delivery_policy: String,
    pub merge_policy: String,
    pub slice_execution: bool,
    pub artifacts: Vec<Artifact>,
    pub failure: Option<Failure>,
    pub state_dir: PathBuf,
}

impl Document for GoalState {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal state";
}

impl GoalState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("goal.json")
    }

    /// Add (or refresh) an artifact of `kind` at `path`.
    pub fn record_artifact(&mut self, kind: &str, path: PathBuf) {
        self.artifacts
            .retain(|a| !(a.kind == kind && a.path == path));
        self.artifacts.push(Artifact {
            kind: kind.into(),
            path,
            created_at: Utc::now(),
        });
    }
}

/// Tokens a goal has used, split the way prices are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// `controller.json`: the controller's own durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    pub version: u32,
    /// The project the goal works on (fixed at creation).
    pub project_dir: PathBuf,
    /// Approval policy for the goal's agents (`None`: the configured one).
    pub approval: Option<String>,
    /// Agent profile of the goal's planner and teams (`None`: the default).
    #[serde(default)]
    pub agent: Option<String>,
    /// Completed controller iterations.
    pub iteration: u32,
    /// Every team the goal started, in order (their token use counts).
    pub teams: Vec<String>,
    /// The team of the wave in progress, if any.
    pub active_team: Option<String>,
    /// The process running the controller, while one runs.
    pub pid: Option<ProcessId>,
    /// Tokens of the planner turns (teams keep their own counts).
    pub planner_usage: Usage,
    /// Milliseconds the controller has spent running steps.
    pub active_ms: u64,
    /// `HEAD` of the project when the goal started (git projects); with
    /// a workspace, the snapshot it started from.
    pub base_commit: Option<String>,
    /// `slice_execution`: the goal's own worktree, where it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<crate::workspace::Workspace>,
}

impl ControllerState {
    /// The tree the goal works on: its workspace, or the project itself.
    pub fn work_tree(&self) -> &std::path::Path {
        self.workspace
            .as_ref()
            .map_or(&self.project_dir, |w| &w.dir)
    }
}

impl Document for ControllerState {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal controller state";
}

impl ControllerState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("controller.json")
    }
}

/// Read a goal's state, or `not_found`.
pub fn load_state(dir: &Path, id: &str) -> Result<GoalState> {
    store::read_doc::<GoalState>(&GoalState::file(dir))?
        .ok_or_else(|| Error::NotFound(format!("goal {id:?} not found (see `omk goal list`)")))
}

pub fn load_controller(dir: &Path) -> Result<ControllerState> {
    store::read_doc::<ControllerState>(&ControllerState::file(dir))?
        .ok_or_else(|| Error::corrupt(&ControllerState::file(dir), "missing"))
}

/// Read-modify-write `goal.json` under its lock, stamping `updated_at`.
pub fn update_state<R>(dir: &Path, f: impl FnOnce(&mut GoalState) -> Result<R>) -> Result<R> {
    let file = GoalState::file(dir);
    store::update_doc(&file, unreachable_state, |s: &mut GoalState| {
        if s.version == 0 {
            return Err(Error::corrupt(&file, "goal.json is missing"));
        }
        let out = f(s)?;
        s.updated_at = Utc::now();
        Ok(out)
    })
}

pub fn update_controller<R>(
    dir: &Path,
    f: impl FnOnce(&mut ControllerState) -> Result<R>,
) -> Result<R> {
    let file = ControllerState::file(dir);
    store::update_doc(
        &file,
        || ControllerState {
            version: 0,
            project_dir: PathBuf::new(),
            workspace: None,
            approval: None,
            agent: None,
            iteration: 0,
            teams: Vec::new(),
            active_team: None,
            pid: None,
            planner_usage: Usage::default(),
            active_ms: 0,
            base_commit: None,
        },
        |c: &mut ControllerState| {
            if c.version == 0 {
                return Err(Error::corrupt(&file, "controller.json is missing"));
            }
            f(c)
        },
    )
}

/// Placeholder read by `update_state` when goal.json is absent: version 0
/// marks it so the update refuses instead of inventing a goal.
fn unreachable_state() -> GoalState {
    GoalState {
        version: 0,
        goal_id: String::new(),
        original_goal: String::new(),
        normalized_goal: String::new(),
        status: Status::FailedInfra,
        phase: Phase::Intake,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        completed_at: None,
        until_ready: false,
        budget_time: None,
        budget_tokens: None,
        budget_usd: None,
        max_agents: None,
        terminal_criteria: TerminalCriteria {
            proof_required: true,
            gates_required: true,
            human_blockers_stop: true,
        },
        delivery_policy: "local".into(),
        merge_policy: "disabled".into(),
        slice_execution: false,
        artifacts: Vec::new(),
        failure: None,
        state_dir: PathBuf::new(),
    }
}
