//! Autopilot: one task taken through Expansion -> Planning -> Execution ->
//! QA -> Validation -> Complete, with its plans under
//! `autopilot/<id>/plans/`.
//!
//! - Expansion: a read-only agent turn expands the task into a
//!   specification (`plans/spec.md`).
//! - Planning: a read-only planner turn (the goal planner's format) turns
//!   task and spec into tasks (`plans/plan.md`, `plans/tasks.json`); an
//!   invalid answer is asked for once more, then the task is one task.
//! - Execution: a team `<id>-exec` runs the tasks (one worker, in
//!   dependency order, when tasks depend on each other).
//! - QA: the gates run; if required ones fail, one fix round (a one-worker
//!   team `<id>-fix1` given the failures) and the gates again.
//! - Validation: the gates on the final tree decide: `Complete` only when
//!   every required gate passed; otherwise the run ends `failed` in
//!   Validation, saying which gates failed.
//!
//! With `--isolation worktree` every turn, team and gate works in a
//! workspace of the run's own ([`crate::workspace`]), the result ends on
//! branch `omk/<id>` (with `--deliver apply`, once complete, also in an
//! unchanged checkout) and the workspace is removed.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{GateFailure, RunStatus};
use crate::error::{Error, Result};
use crate::gate::GateSet;
use crate::goal::graph::{GoalTask, TaskGraph, TaskStatus};
use crate::goal::planner::{self, Plan};
use crate::metrics::Counter;
use crate::process::ProcessId;
use crate::store::{self, Document};
use crate::team::{TeamDoc, TeamRunRequest};
use crate::Omk;

const MODE: &str = "autopilot";
const WHAT: &str = "autopilot id";
/// Fix rounds QA may spend on failing gates.
const FIX_ROUNDS: u32 = 1;

/// The phases, in order (`Complete` only when validation passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Expansion,
    Planning,
    Execution,
    #[serde(rename = "QA")]
    Qa,
    Validation,
    Complete,
}

/// What to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutopilotRequest {
    pub task: String,
    /// Run id; default `ap-YYYYMMDD-HHMMSS-<8 hex>`.
    pub name: Option<String>,
    /// Workers of the execution team (1..=32); default 2.
    pub max_agents: Option<u32>,
    /// Approval policy of the agents; default from config.
    pub approval: Option<String>,
    /// Agent profile of every turn and team; default `[team] agent`.
    pub agent: Option<String>,
    /// `worktree` or `none` (default): see the module doc.
    pub isolation: Option<String>,
    /// `branch` (default) or `apply` (needs `worktree`).
    pub deliver: Option<String>,
}

/// `autopilot/<id>/state.json`. The first five fields are the API.md
/// `/api/autopilots` entry; the rest say how the run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutopilotState {
    pub version: u32,
    pub task: String,
    pub phase: Phase,
    pub plans_dir: PathBuf,
    pub created_at: DateTime<Utc>,
    pub id: String,
    pub status: RunStatus,
    pub state_dir: PathBuf,
    pub project_dir: PathBuf,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended, when it did not complete.
    pub reason: Option<String>,
    pub max_agents: u32,
    pub approval: Option<String>,
    /// The agent profile (`None`: the default).
    #[serde(default)]
    pub agent: Option<String>,
    /// The team running now.
    pub active_team: Option<String>,
    /// Every team the run started.
    pub teams: Vec<String>,
    /// Tokens of the agent turns and teams.
    pub tokens: u64,
    /// One record per phase entered.
    pub phases: Vec<PhaseRecord>,
    /// Required gates that failed at the last gate run.
    pub gate_failures: Vec<GateFailure>,
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

/// When a phase ran and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `None` while it runs.
    pub ok: Option<bool>,
    pub note: Option<String>,
}

impl Document for AutopilotState {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "autopilot state";
}

/// `{"autopilots": [...]}` (API.md `/api/autopilots`), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutopilotList {
    pub autopilots: Vec<AutopilotState>,
    /// Runs whose state could not be read, with the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<serde_json::Value>,
}

impl super::RunDoc for AutopilotState {
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
        self.plans_dir = dir.join("plans");
    }
}

fn update<R>(dir: &Path, f: impl FnOnce(&mut AutopilotState) -> Result<R>) -> Result<R> {
    super::update_run(dir, f)
}

/// Why a run ended early.
struct End(RunStatus, String);

impl From<Error> for End {
    fn from(e: Error) -> End {
        End(RunStatus::Failed, e.to_string())
    }
}

/// The autopilot of one run directory.
struct Pilot<'a> {
    omk: &'a Omk,
    dir: PathBuf,
    id: String,
    task: String,
    project: PathBuf,
    max_agents: u32,
    approval: Option<String>,
    agent: Option<String>,
    gates: GateSet,
    /// `--isolation worktree`: where every team's result lands.
    workspace: Option<crate::workspace::Workspace>,
}

/// A fresh run id (`ap-YYYYMMDD-HHMMSS-<8 hex>`), for callers that want to
/// know it before the run starts.
pub fn new_id() -> String {
    super::generated_id("ap")
}

/// Validate, create the run and take it through the phases. Returns the
/// final state (`complete`, `failed` or `stopped`).
pub fn run(omk: &Omk, request: &AutopilotRequest) -> Result<AutopilotState> {
    let task = request.task.trim();
    if task.is_empty() {
        return Err(Error::InvalidInput("autopilot needs a task".into()));
    }
    let max_agents = request.max_agents.unwrap_or(2);
    if !(1..=32).contains(&max_agents) {
        return Err(Error::InvalidInput(format!(
            "max_agents must be 1..=32, not {max_agents}"
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
    let mut gates = super::require_gates(omk, "autopilot")?;
    let id = super::new_id("ap", WHAT, request.name.as_deref())?;
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
    store::ensure_dir(&dir.join("plans"))?;
    let now = Utc::now();
    let state = AutopilotState {
        version: AutopilotState::VERSION,
        task: task.to_string(),
        phase: Phase::Expansion,
        plans_dir: dir.join("plans"),
        created_at: now,
        id: id.clone(),
        status: RunStatus::Running,
        state_dir: dir.clone(),
        project_dir: omk.project_dir().to_path_buf(),
        updated_at: now,
        ended_at: None,
        reason: None,
        max_agents,
        approval: request.approval.clone(),
        agent: request.agent.clone(),
        active_team: None,
        teams: Vec::new(),
        tokens: 0,
        phases: Vec::new(),
        gate_failures: Vec::new(),
        pid: Some(ProcessId::current()),
        workspace: workspace.clone(),
        apply,
        delivery: None,
    };
    store::write_doc(&super::state_file(&dir), &state)?;
    crate::metrics::increment(&omk.paths().metrics(), Counter::AutopilotRuns)?;
    let pilot = Pilot {
        omk,
        dir: dir.clone(),
        id: id.clone(),
        task: task.to_string(),
        project: workspace
            .as_ref()
            .map_or_else(|| state.project_dir.clone(), |w| w.dir.clone()),
        workspace: workspace.clone(),
        max_agents,
        approval: request.approval.clone(),
        agent: request.agent.clone(),
        gates,
    };
    let (status, mut reason) = match pilot.fly() {
        Ok(()) => (RunStatus::Complete, None),
        Err(End(status, reason)) => (status, Some(reason)),
    };
    // Isolated: the result on its branch (applied when asked and complete),
    // then the workspace goes.
    let delivery = workspace.as_ref().and_then(|ws| {
        crate::workspace::conclude(ws, &id, apply && status == RunStatus::Complete, &mut reason)
    });
    update(&dir, |s| {
        s.delivery = delivery;
        s.status = status;
        s.reason = reason.clone();
        s.active_team = None;
        s.ended_at = Some(Utc::now());
        if let Some(p) = s.phases.last_mut().filter(|p| p.ok.is_none()) {
            p.ok = Some(status == RunStatus::Complete);
            p.ended_at = Some(Utc::now());
            p.note = p.note.take().or(reason);
        }
        Ok(())
    })?;
    super::load_run(&dir, &id)
}

impl Pilot<'_> {
    fn fly(&self) -> std::result::Result<(), End> {
        self.enter(Phase::Expansion)?;
        let spec = self.expansion()?;
        self.leave(None)?;

        self.enter(Phase::Planning)?;
        let (tasks, note) = self.planning(&spec)?;
        self.leave(note)?;

        self.enter(Phase::Execution)?;
        let note = self.execution(&tasks)?;
        self.leave(note)?;

        // QA failing does not end the run: validation on the final tree decides.
        self.enter(Phase::Qa)?;
        let (passed, note) = self.qa()?;
        self.leave_as(passed, Some(note))?;

        self.enter(Phase::Validation)?;
        let report = super::run_gates(self.omk, &self.gates, &self.dir, "validation")?;
        let failures = GateFailure::all_of(&report);
        self.set_failures(&failures)?;
        if !report.passed {
            let what: Vec<String> = failures.iter().map(GateFailure::describe).collect();
            return Err(End(
                RunStatus::Failed,
                format!("validation failed on the final tree: {}", what.join("; ")),
            ));
        }
        self.leave(Some(format!(
            "{} gate(s) passed on the final tree",
            report.results.len()
        )))?;
        self.enter(Phase::Complete)?;
        self.leave(None)?;
        Ok(())
    }

    /// Record entering `phase`, unless a stop was requested.
    fn enter(&self, phase: Phase) -> std::result::Result<(), End> {
        if super::stop_requested(&self.dir) {
            return Err(End(RunStatus::Stopped, "stopped on request".into()));
        }
        update(&self.dir, |s| {
            s.phase = phase;
            s.phases.push(PhaseRecord {
                phase,
                started_at: Utc::now(),
                ended_at: None,
                ok: None,
                note: None,
            });
            Ok(())
        })?;
        Ok(())
    }

    fn leave(&self, note: Option<String>) -> Result<()> {
        self.leave_as(true, note)
    }

    fn leave_as(&self, ok: bool, note: Option<String>) -> Result<()> {
        update(&self.dir, |s| {
            if let Some(p) = s.phases.last_mut() {
                p.ok = Some(ok);
                p.ended_at = Some(Utc::now());
                p.note = note;
            }
            Ok(())
        })
    }

    fn add_tokens(&self, tokens: u64) -> Result<()> {
        update(&self.dir, |s| {
            s.tokens += tokens;
            Ok(())
        })
    }

    fn set_failures(&self, failures: &[GateFailure]) -> Result<()> {
        update(&self.dir, |s| {
            s.gate_failures = failures.to_vec();
            Ok(())
        })
    }

    /// One read-only agent turn; an agent failure fails the phase (never a
    /// made-up answer).
    fn turn(&self, prompt: &str, what: &str) -> std::result::Result<String, End> {
        let runtime = self.omk.runtime()?;
        let config = self.omk.config()?;
        let stop = || super::stop_requested(&self.dir);
        let agent = self.agent.as_deref();
        let turn = planner::turn_until(runtime, config, &self.project, prompt, agent, &stop)
            .map_err(|e| match e {
                Error::Cancelled(_) => End(RunStatus::Stopped, "stopped on request".into()),
                e => End(RunStatus::Failed, format!("the {what} turn failed: {e}")),
            })?;
        self.add_tokens(turn.usage.input_tokens + turn.usage.output_tokens)?;
        Ok(turn.text)
    }

    fn expansion(&self) -> std::result::Result<String, End> {
        let prompt = format!(
            "You are the analyst of an omk autopilot. Do not change any file. Expand this task \
             into a short specification of the change in the current project, in Markdown: \
             the goal, what is in and out of scope, acceptance criteria that the project's \
             tests and checks can verify, and risks.\n\nTask: {}",
            self.task
        );
        let spec = self.turn(&prompt, "expansion")?;
        if spec.trim().is_empty() {
            return Err(End(
                RunStatus::Failed,
                "the expansion turn answered nothing".into(),
            ));
        }
        let text = format!("# Specification: {}\n\n{}\n", self.task, spec.trim());
        store::write_atomic(
            &self.dir.join("plans").join("spec.md"),
            crate::redact::redact_str(&text).as_bytes(),
        )?;
        Ok(spec)
    }

    fn planning(&self, spec: &str) -> std::result::Result<(Vec<GoalTask>, Option<String>), End> {
        let max_tasks = self.omk.config()?.goal.max_tasks;
        let outcome = format!("{}\n\nSpecification:\n{}", self.task, spec.trim());
        let mut prompt = planner::prompt(&outcome, max_tasks);
        let mut why = String::new();
        let mut plan = None;
        for _ in 0..2 {
            let text = self.turn(&prompt, "planning")?;
            match planner::parse(&text, max_tasks) {
                Ok(p) => {
                    plan = Some(p);
                    break;
                }
                Err(e) => {
                    why = e.clone();
                    prompt = format!(
                        "{prompt}\n\nYour previous answer was rejected: {e}. Answer again with only the JSON object."
                    );
                }
            }
        }
        let (markdown, graph, note) = match plan {
            Some(Plan::Tasks { markdown, graph }) => (markdown, graph, None),
            Some(Plan::Questions(q)) => {
                return Err(End(
                    RunStatus::Failed,
                    format!(
                        "the planner needs decisions before work can start: {}",
                        q.join(" / ")
                    ),
                ))
            }
            None => (
                String::new(),
                TaskGraph::new(vec![GoalTask {
                    id: "t1".into(),
                    title: self.task.clone(),
                    description: String::new(),
                    dependencies: Vec::new(),
                    status: TaskStatus::Pending,
                    attempts: 0,
                    team: None,
                    summary: None,
                    completed_at: None,
                    origin: None,
                }]),
                Some(format!("no usable plan ({why}); the task runs as one task")),
            ),
        };
        let tasks = dependency_order(&graph);
        let mut md = format!("# Plan: {}\n\n", self.task);
        if !markdown.trim().is_empty() {
            md.push_str(markdown.trim());
            md.push_str("\n\n");
        }
        md.push_str("## Tasks\n\n");
        for t in &tasks {
            md.push_str(&format!("- `{}` {}", t.id, t.title));
            if !t.dependencies.is_empty() {
                md.push_str(&format!(" (after {})", t.dependencies.join(", ")));
            }
            md.push('\n');
        }
        let plans = self.dir.join("plans");
        store::write_atomic(
            &plans.join("plan.md"),
            crate::redact::redact_str(&md).as_bytes(),
        )?;
        store::write_doc(&plans.join("tasks.json"), &graph)?;
        Ok((tasks, note))
    }

    fn execution(&self, tasks: &[GoalTask]) -> std::result::Result<Option<String>, End> {
        // Dependent tasks run one after the other on one worker.
        let ordered = tasks.iter().any(|t| !t.dependencies.is_empty());
        let workers = if ordered {
            1
        } else {
            (tasks.len() as u32).clamp(1, self.max_agents)
        };
        let subtasks = tasks
            .iter()
            .map(|t| {
                if t.description.is_empty() {
                    format!("[{}] {}", t.id, t.title)
                } else {
                    format!("[{}] {}\n\n{}", t.id, t.title, t.description)
                }
            })
            .collect();
        let doc = self.team("exec", workers, subtasks)?;
        let done = doc
            .tasks
            .iter()
            .filter(|t| t.status == crate::team::doc::TaskStatus::Completed)
            .count();
        Ok(Some(format!(
            "team {} ended {:?}: {done} of {} task(s) completed",
            doc.name,
            doc.phase,
            doc.tasks.len()
        )))
    }

    fn qa(&self) -> std::result::Result<(bool, String), End> {
        let mut report = super::run_gates(self.omk, &self.gates, &self.dir, "qa")?;
        let mut rounds = 0;
        while !report.passed && rounds < FIX_ROUNDS {
            rounds += 1;
            let failures = GateFailure::all_of(&report);
            self.set_failures(&failures)?;
            let prompt = format!("{}\n\n{}", self.task, super::feedback(&failures));
            self.team(&format!("fix{rounds}"), 1, vec![prompt])?;
            if super::stop_requested(&self.dir) {
                return Err(End(RunStatus::Stopped, "stopped on request".into()));
            }
            report =
                super::run_gates(self.omk, &self.gates, &self.dir, &format!("qa-fix{rounds}"))?;
        }
        let failures = GateFailure::all_of(&report);
        self.set_failures(&failures)?;
        let note = if report.passed {
            format!("gates passed after {rounds} fix round(s)")
        } else {
            format!("gates still failing after {rounds} fix round(s)")
        };
        Ok((report.passed, note))
    }

    /// Run a team `<id>-<suffix>` to its end.
    fn team(
        &self,
        suffix: &str,
        workers: u32,
        subtasks: Vec<String>,
    ) -> std::result::Result<TeamDoc, End> {
        let name = format!("{}-{suffix}", self.id);
        let request = TeamRunRequest {
            spec: format!("{workers}:executor"),
            task: self.task.clone(),
            name: Some(name.clone()),
            subtasks,
            workdir: Some(self.project.clone()),
            approval: self.approval.clone(),
            pool: None,
            detach: false,
            no_gates: true,
            agent: self.agent.clone(),
            isolation: Some(
                if self.workspace.is_some() {
                    "worktree"
                } else {
                    "none"
                }
                .into(),
            ),
            deliver: None,
        };
        let result = super::run_team_admitted(self.omk, &self.dir, request, |name| {
            update(&self.dir, |s| {
                s.active_team = Some(name.to_string());
                s.teams.push(name.to_string());
                Ok(())
            })
        });
        update(&self.dir, |s| {
            s.active_team = None;
            if let Ok(super::Admitted::Ran(doc)) = &result {
                s.tokens += doc.tokens;
            }
            Ok(())
        })?;
        let doc = match result {
            Ok(super::Admitted::Ran(doc)) => *doc,
            Ok(super::Admitted::Stopped) => {
                return Err(End(RunStatus::Stopped, "stopped on request".into()))
            }
            Ok(super::Admitted::Blocked(why)) => {
                return Err(End(RunStatus::BlockedOnExternal, why))
            }
            Err(e) => {
                return Err(End(
                    RunStatus::Failed,
                    format!("team {name} could not run: {e}"),
                ))
            }
        };
        if let (Some(ws), Some(w)) = (&self.workspace, &doc.worktree) {
            crate::workspace::land_wave(ws, &doc.name, &w.integrated_commit)?;
        }
        if super::stop_requested(&self.dir) {
            return Err(End(RunStatus::Stopped, "stopped on request".into()));
        }
        Ok(doc)
    }
}

/// The tasks in an order that respects their dependencies (the graph is
/// validated, so every task comes out).
fn dependency_order(graph: &TaskGraph) -> Vec<GoalTask> {
    let mut g = graph.clone();
    let mut out = Vec::with_capacity(g.tasks.len());
    loop {
        let ready = g.ready();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            g.tasks[i].status = TaskStatus::Done;
            out.push(graph.tasks[i].clone());
        }
    }
    out
}

/// Every autopilot run, newest first.
pub fn list(omk: &Omk) -> Result<AutopilotList> {
    let (autopilots, unreadable) = super::list_runs(omk)?;
    Ok(AutopilotList {
        autopilots,
        unreadable,
    })
}

/// One run's state.
pub fn status(omk: &Omk, id: &str) -> Result<AutopilotState> {
    super::run_status(omk, id)
}

/// Ask a running autopilot to stop (from any process). Its current team is
/// shut down at once; the run records `stopped` when it notices.
pub fn stop(omk: &Omk, id: &str) -> Result<AutopilotState> {
    super::stop_run(omk, id)
}
