//! Ralph: agent turn, gates, failures fed back, repeat, until the gates
//! pass (`complete`) or `max_iterations` turns were spent (`exhausted`).
//!
//! Each iteration is a one-worker team `<id>-i<N>` (so it gets the team's
//! leases, retries, pools and transcripts) followed by the project's gates.
//! From the second iteration on, the prompt carries the failing gates'
//! names, exit codes and output tails.
//!
//! With `--isolation worktree` the run works in a workspace of its own
//! ([`crate::workspace`]): each iteration's worker in a worktree, the
//! gates on the workspace, the result on branch `omk/<id>` (and with
//! `--deliver apply`, once the gates passed, in an unchanged checkout).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{GateFailure, RunStatus};
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::process::ProcessId;
use crate::store::{self, Document};
use crate::team::TeamRunRequest;
use crate::Omk;

const MODE: &str = "ralph";
const WHAT: &str = "ralph id";
/// Iterations when the request names none.
pub const DEFAULT_MAX_ITERATIONS: u32 = 10;
const MAX_MAX_ITERATIONS: u32 = 1000;

/// What to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RalphRequest {
    pub task: String,
    /// 1..=1000; default 10.
    pub max_iterations: Option<u32>,
    /// Run id; default `ralph-YYYYMMDD-HHMMSS-<8 hex>`.
    pub name: Option<String>,
    /// Approval policy of the agent; default from config.
    pub approval: Option<String>,
    /// Agent profile; default `[team] agent`.
    pub agent: Option<String>,
    /// `worktree` or `none` (default): see the module doc.
    pub isolation: Option<String>,
    /// `branch` (default) or `apply` (needs `worktree`).
    pub deliver: Option<String>,
}

/// `ralph/<id>/state.json`. The first five fields are the API.md
/// `/api/ralphs` entry; the rest say how the run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RalphState {
    pub version: u32,
    pub task: String,
    /// The iteration running or last run (0 before the first).
    pub iteration: u32,
    pub max_iterations: u32,
    pub state_dir: PathBuf,
    pub id: String,
    pub status: RunStatus,
    pub project_dir: PathBuf,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended, when it did not complete.
    pub reason: Option<String>,
    /// The team of the running iteration.
    pub active_team: Option<String>,
    /// Tokens the iterations' agents reported.
    pub tokens: u64,
    pub approval: Option<String>,
    /// The agent profile of every iteration (`None`: the default).
    #[serde(default)]
    pub agent: Option<String>,
    pub iterations: Vec<RalphIteration>,
    /// The process running the loop.
    pub pid: Option<ProcessId>,
    /// `--isolation worktree`: the run's workspace (removed at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<crate::workspace::Workspace>,
    /// `--deliver apply` was asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply: bool,
    /// What the end did with an isolated run's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::workspace::Delivery>,
}

/// One agent turn and the gates after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RalphIteration {
    pub iteration: u32,
    pub team: String,
    /// The team's final phase (`Completed`, `Failed`, ...), once it ended.
    pub team_phase: Option<String>,
    pub gates_passed: Option<bool>,
    /// Required gates that did not pass.
    pub failures: Vec<GateFailure>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Document for RalphState {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "ralph state";
}

/// `{"ralphs": [...]}` (API.md `/api/ralphs`), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RalphList {
    pub ralphs: Vec<RalphState>,
    /// Runs whose state could not be read, with the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<serde_json::Value>,
}

impl super::RunDoc for RalphState {
    const MODE: &'static str = MODE;
    const ID: &'static str = WHAT;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn status(&self) -> RunStatus {
        self.status
    }
    fn set_status(&mut self, status: RunStatus) {
        self.status = status;
    }
    fn pid(&self) -> Option<ProcessId> {
        self.pid
    }
    fn active_team(&self) -> Option<&str> {
        self.active_team.as_deref()
    }
    fn touch(&mut self) {
        self.updated_at = Utc::now();
    }
    fn rehome(&mut self, dir: &Path) {
        self.state_dir = dir.to_path_buf();
    }
}

fn update<R>(dir: &Path, f: impl FnOnce(&mut RalphState) -> Result<R>) -> Result<R> {
    super::update_run(dir, f)
}

/// A fresh run id (`ralph-YYYYMMDD-HHMMSS-<8 hex>`), for callers that want
/// to know it before the run starts.
pub fn new_id() -> String {
    super::generated_id(MODE)
}

/// Validate, create the run and loop until it ends. Returns the final state
/// (`complete`, `exhausted`, `stopped` or `failed`).
pub fn run(omk: &Omk, request: &RalphRequest) -> Result<RalphState> {
    let task = request.task.trim();
    if task.is_empty() {
        return Err(Error::InvalidInput("ralph needs a task".into()));
    }
    let max = request.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS);
    if !(1..=MAX_MAX_ITERATIONS).contains(&max) {
        return Err(Error::InvalidInput(format!(
            "max_iterations must be 1..={MAX_MAX_ITERATIONS}, not {max}"
        )));
    }
    if let Some(a) = &request.approval {
        crate::agent::PolicyKind::parse(a)?;
    }
    crate::agents::resolve(omk.config()?, request.agent.as_deref())?;
    let isolated = crate::workspace::wants_worktree(request.isolation.as_deref())?;
    let apply = crate::workspace::wants_apply(request.deliver.as_deref(), isolated)?;
    if isolated {
        crate::workspace::check(omk.project_dir())?;
    }
    let mut gates = super::require_gates(omk, "ralph")?;
    let id = super::new_id(MODE, WHAT, request.name.as_deref())?;
    let dir = super::create_run_dir(omk.paths(), MODE, WHAT, &id)?;
    let workspace = if isolated {
        let ws = crate::workspace::create(
            omk.project_dir(),
            &id,
            &dir.join("workspace"),
            omk.config()?.team.worktree.lfs,
        )?;
        gates.project = ws.dir.clone();
        Some(ws)
    } else {
        None
    };
    let now = Utc::now();
    let state = RalphState {
        version: RalphState::VERSION,
        task: task.to_string(),
        iteration: 0,
        max_iterations: max,
        state_dir: dir.clone(),
        id: id.clone(),
        status: RunStatus::Running,
        project_dir: omk.project_dir().to_path_buf(),
        created_at: now,
        updated_at: now,
        ended_at: None,
        reason: None,
        active_team: None,
        tokens: 0,
        approval: request.approval.clone(),
        agent: request.agent.clone(),
        iterations: Vec::new(),
        pid: Some(ProcessId::current()),
        workspace,
        apply,
        delivery: None,
    };
    store::write_doc(&super::state_file(&dir), &state)?;
    crate::metrics::increment(&omk.paths().metrics(), Counter::RalphRuns)?;
    let outcome = iterate(omk, &dir, &state, &gates);
    let (status, mut reason) = match outcome {
        Ok(end) => end,
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    // Isolated: the result on its branch (and applied when asked and the
    // gates passed), then the workspace goes.
    let delivery = state.workspace.as_ref().and_then(|ws| {
        crate::workspace::conclude(ws, &id, apply && status == RunStatus::Complete, &mut reason)
    });
    update(&dir, |s| {
        s.delivery = delivery;
        s.status = status;
        s.reason = reason;
        s.active_team = None;
        s.ended_at = Some(Utc::now());
        Ok(())
    })?;
    super::load_run(&dir, &id)
}

fn iterate(
    omk: &Omk,
    dir: &Path,
    start: &RalphState,
    gates: &crate::gate::GateSet,
) -> Result<(RunStatus, Option<String>)> {
    let mut failures: Vec<GateFailure> = Vec::new();
    for i in 1..=start.max_iterations {
        if super::stop_requested(dir) {
            return Ok((RunStatus::Stopped, Some("stopped on request".into())));
        }
        let team = format!("{}-i{i}", start.id);
        let prompt = if failures.is_empty() {
            start.task.clone()
        } else {
            format!("{}\n\n{}", start.task, super::feedback(&failures))
        };
        update(dir, |s| {
            s.iteration = i;
            s.active_team = Some(team.clone());
            s.iterations.push(RalphIteration {
                iteration: i,
                team: team.clone(),
                team_phase: None,
                gates_passed: None,
                failures: Vec::new(),
                started_at: Utc::now(),
                ended_at: None,
            });
            Ok(())
        })?;
        let request = TeamRunRequest {
            spec: "1:executor".into(),
            task: start.task.clone(),
            name: Some(team.clone()),
            subtasks: vec![prompt],
            workdir: Some(
                start
                    .workspace
                    .as_ref()
                    .map_or_else(|| start.project_dir.clone(), |w| w.dir.clone()),
            ),
            approval: start.approval.clone(),
            pool: None,
            detach: false,
            no_gates: true,
            agent: start.agent.clone(),
            isolation: Some(
                if start.workspace.is_some() {
                    "worktree"
                } else {
                    "none"
                }
                .into(),
            ),
            deliver: None,
        };
        let result = super::run_team_admitted(omk, dir, request, |name| {
            update(dir, |s| {
                s.active_team = Some(name.to_string());
                if let Some(it) = s.iterations.iter_mut().find(|it| it.iteration == i) {
                    it.team = name.to_string();
                }
                Ok(())
            })
        });
        let doc = match result {
            Ok(super::Admitted::Ran(doc)) => *doc,
            Ok(super::Admitted::Stopped) => {
                return Ok((RunStatus::Stopped, Some("stopped on request".into())))
            }
            Ok(super::Admitted::Blocked(why)) => {
                return Ok((RunStatus::BlockedOnExternal, Some(why)))
            }
            Err(e) => {
                return Ok((
                    RunStatus::Failed,
                    Some(format!("iteration {i}: team {team} could not run: {e}")),
                ))
            }
        };
        if let (Some(ws), Some(w)) = (&start.workspace, &doc.worktree) {
            crate::workspace::land_wave(ws, &doc.name, &w.integrated_commit)?;
        }
        if super::stop_requested(dir) {
            record(dir, i, &doc, None)?;
            return Ok((RunStatus::Stopped, Some("stopped on request".into())));
        }
        let report = super::run_gates(omk, gates, dir, &format!("iteration-{i}"))?;
        failures = GateFailure::all_of(&report);
        record(dir, i, &doc, Some((report.passed, failures.clone())))?;
        if report.passed {
            return Ok((RunStatus::Complete, None));
        }
    }
    let last: Vec<String> = failures.iter().map(GateFailure::describe).collect();
    Ok((
        RunStatus::Exhausted,
        Some(format!(
            "{} iterations without the gates passing; last: {}",
            start.max_iterations,
            last.join("; ")
        )),
    ))
}

/// Record how iteration `i` ended.
fn record(
    dir: &Path,
    i: u32,
    doc: &crate::team::TeamDoc,
    gates: Option<(bool, Vec<GateFailure>)>,
) -> Result<()> {
    update(dir, |s| {
        s.active_team = None;
        s.tokens += doc.tokens;
        if let Some(it) = s.iterations.iter_mut().find(|it| it.iteration == i) {
            it.team_phase = serde_json::to_value(doc.phase)
                .ok()
                .and_then(|v| v.as_str().map(String::from));
            it.ended_at = Some(Utc::now());
            if let Some((passed, failures)) = gates {
                it.gates_passed = Some(passed);
                it.failures = failures;
            }
        }
        Ok(())
    })
}

/// Every ralph run, newest first.
pub fn list(omk: &Omk) -> Result<RalphList> {
    let (ralphs, unreadable) = super::list_runs(omk)?;
    Ok(RalphList { ralphs, unreadable })
}

/// One run's state.
pub fn status(omk: &Omk, id: &str) -> Result<RalphState> {
    super::run_status(omk, id)
}

/// Ask a running loop to stop (from any process). Its current team is shut
/// down at once; the loop records `stopped` when it notices.
pub fn stop(omk: &Omk, id: &str) -> Result<RalphState> {
    super::stop_run(omk, id)
}
