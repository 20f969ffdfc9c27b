//! Durable goals (DESIGN.md §9, API.md "Goal API" and "Stagnation API"): a
//! large outcome worked on by agents, checked by gates, ending in exactly
//! one honest terminal status.
//!
//! Files under `goal/<goal-id>/`: `goal.json` (GoalState), `controller.json`,
//! `plan.md`, `task-graph.json`, `events.jsonl`, `verification.json`,
//! `proof.json`, `budget-checkpoints.jsonl`, `iterations.jsonl`,
//! `baseline.json`, `checkpoints/checkpoint-<N>.json`, `gates/` (gate
//! outputs). The goal's agents run as teams named `<goal-id>-w<N>`.

pub mod budget;
pub mod checkpoint;
pub mod controller;
pub mod graph;
pub mod planner;
pub mod proof;
pub mod replay;
pub mod snapshot;
pub mod stagnation;
pub mod state;

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::events::{Event, EventKind, EventLog};
use crate::paths::StatePaths;
use crate::process::ProcessId;
use crate::store;
use crate::Omk;

pub use controller::{Controller, Step};
pub use graph::{GoalTask, TaskGraph};
pub use proof::GoalProof;
pub use replay::GoalReplay;
pub use stagnation::{RecoveryPlan, StagnationReport};
pub use state::{GoalState, Phase, Status};

/// What happens to a ready goal's result (`merge_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The result stays on branch `omk/<goal>`.
    Disabled,
    /// Ready, with a human decision "merge `omk/<goal>`".
    Manual,
    /// Applied to the user's checkout when the gates passed and the
    /// checkout is unchanged since the goal began (else the branch stays,
    /// with why).
    Gated,
}

impl MergePolicy {
    pub fn parse(s: &str) -> Result<MergePolicy> {
        match s {
            "disabled" => Ok(MergePolicy::Disabled),
            "manual" => Ok(MergePolicy::Manual),
            "gated" => Ok(MergePolicy::Gated),
            other => Err(Error::InvalidInput(format!(
                "merge_policy {other:?}: expected disabled, manual or gated"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MergePolicy::Disabled => "disabled",
            MergePolicy::Manual => "manual",
            MergePolicy::Gated => "gated",
        }
    }
}

/// Refuse a delivery policy omk cannot honour: only `local` exists until
/// omk has a forge client.
pub fn check_delivery_policy(p: &str) -> Result<()> {
    if p == "local" {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "delivery_policy {p:?}: omk has no forge client yet, so it cannot open pull requests; \
         only \"local\" is supported (the result is a local branch, see merge_policy)"
    )))
}

/// What `omk goal run` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoalRunRequest {
    /// The outcome, in words.
    pub outcome: String,
    /// Loop (execution, verification, fix tasks) until ready, blocked, out
    /// of budget or cancelled.
    pub until_ready: bool,
    /// `8h`, `90m`, ...
    pub budget_time: Option<String>,
    pub budget_tokens: Option<u64>,
    pub budget_usd: Option<f64>,
    /// Most agents at once (default 1).
    pub max_agents: Option<u32>,
    /// Approval policy of the goal's agents (default: the configured one).
    pub approval: Option<String>,
    /// Agent profile of the goal's planner and teams (default `[team] agent`).
    pub agent: Option<String>,
    /// Return once the goal is created; the controller runs on.
    pub detach: bool,
    /// Work in a git worktree of the goal's own, each wave an isolated
    /// team (`--isolation worktree`); the result ends on branch
    /// `omk/<goal>` (see `merge_policy`). Needs a git work tree.
    pub slice_execution: bool,
    /// `disabled` (default: the branch), `manual` (ready with a human
    /// decision to merge the branch) or `gated` (applied to the checkout
    /// once ready, if it is unchanged); anything but `disabled` needs
    /// `slice_execution`.
    pub merge_policy: Option<String>,
    /// `local` (the only one until omk has a forge client).
    pub delivery_policy: Option<String>,
}

/// `goal list`: newest first, plus goals whose state could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalList {
    pub goals: Vec<GoalState>,
    pub unreadable: Vec<Value>,
}

/// Append one event to a goal's log (durable, redacted).
pub(crate) fn emit(dir: &Path, id: &str, kind: EventKind, payload: Value) -> Result<()> {
    EventLog::open(&dir.join("events.jsonl"))?
        .append(Event::new(id, kind, Some("controller"), payload))
        .map(|_| ())
}

fn goals_dir(paths: &StatePaths) -> PathBuf {
    paths.root().join("goal")
}

/// A new goal id: `goal-<UTC yyyymmdd-hhmmss-mmm>-<8 hex>`; ids sort by
/// creation time.
pub fn new_goal_id() -> String {
    format!(
        "goal-{}-{}",
        Utc::now().format("%Y%m%d-%H%M%S-%3f"),
        crate::ids::random_hex(4)
    )
}

/// Which goals `latest` may name.
#[derive(Debug, Clone, Copy)]
pub enum Latest<'a> {
    /// The newest goal of this project (what `latest` means everywhere).
    Project(&'a Path),
    /// The newest goal of any project (`--all-projects`).
    AnyProject,
}

/// The goal an id names; `latest` is the newest goal of the handle's
/// project.
pub fn resolve(omk: &Omk, id: &str) -> Result<(String, PathBuf)> {
    resolve_in(omk.paths(), id, Latest::Project(omk.project_dir()))
}

/// The goal an id names, `latest` taken within `scope`.
pub fn resolve_in(paths: &StatePaths, id: &str, scope: Latest<'_>) -> Result<(String, PathBuf)> {
    if id != "latest" {
        let dir = paths.goal_dir(id)?;
        if !GoalState::file(&dir).exists() {
            return Err(Error::NotFound(format!(
                "goal {id:?} not found (see `omk goal list`)"
            )));
        }
        return Ok((id.to_string(), dir));
    }
    let dir = goals_dir(paths);
    let none = || {
        Error::NotFound(match scope {
            Latest::Project(p) => format!(
                "no goal found for project {}: `latest` names nothing (`--all-projects` looks at every project)",
                p.display()
            ),
            Latest::AnyProject => "no goals yet: `latest` names nothing".into(),
        })
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    // Ids embed their creation time, so the greatest name is the newest:
    // look from the newest down for the first goal of the project.
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("goal-") && crate::paths::validate_name("goal id", n).is_ok())
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let wanted = match scope {
        Latest::Project(p) => Some(same_dir_key(p)),
        Latest::AnyProject => None,
    };
    for id in ids {
        let d = dir.join(&id);
        if !GoalState::file(&d).exists() {
            continue;
        }
        let matches = match &wanted {
            None => true,
            Some(want) => state::load_controller(&d)
                .map(|c| &same_dir_key(&c.project_dir) == want)
                .unwrap_or(false),
        };
        if matches {
            return Ok((id, d));
        }
    }
    Err(none())
}

/// A directory as comparable: canonical when it exists.
pub(crate) fn same_dir_key(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn normalize(outcome: &str) -> String {
    outcome.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Validate the request and create the goal (phase `intake`, status
/// `running`).
pub fn create(omk: &Omk, req: &GoalRunRequest) -> Result<GoalState> {
    let normalized = normalize(&req.outcome);
    if normalized.is_empty() {
        return Err(Error::InvalidInput("the goal's outcome is empty".into()));
    }
    if let Some(t) = &req.budget_time {
        if budget::parse_duration(t)? == 0 {
            return Err(Error::InvalidInput(
                "--budget-time must be more than 0".into(),
            ));
        }
    }
    if req.budget_tokens == Some(0) {
        return Err(Error::InvalidInput(
            "--budget-tokens must be more than 0".into(),
        ));
    }
    if let Some(usd) = req.budget_usd {
        if !(usd.is_finite() && usd > 0.0) {
            return Err(Error::InvalidInput(
                "--budget-usd must be a positive number".into(),
            ));
        }
    }
    if req.max_agents == Some(0) || req.max_agents.is_some_and(|n| n > 64) {
        return Err(Error::InvalidInput("--max-agents must be 1..=64".into()));
    }
    if let Some(p) = &req.approval {
        crate::agent::PolicyKind::parse(p)?;
    }
    let merge_policy = match &req.merge_policy {
        Some(m) => MergePolicy::parse(m)?,
        None => MergePolicy::Disabled,
    };
    if merge_policy != MergePolicy::Disabled && !req.slice_execution {
        return Err(Error::InvalidInput(format!(
            "merge_policy {} needs slice_execution (without it the goal edits your checkout directly)",
            merge_policy.as_str()
        )));
    }
    let delivery_policy = req
        .delivery_policy
        .clone()
        .unwrap_or_else(|| "local".into());
    check_delivery_policy(&delivery_policy)?;
    let config = omk.config()?;
    crate::agents::resolve(config, req.agent.as_deref())?;
    if req.slice_execution && crate::git::Repo::discover(omk.project_dir())?.is_none() {
        return Err(Error::InvalidInput(format!(
            "slice_execution needs a git work tree, and {} is in none",
            omk.project_dir().display()
        )));
    }
    let id = new_goal_id();
    let dir = omk.paths().goal_dir(&id)?;
    store::ensure_dir(&dir)?;
    let now = Utc::now();
    let state = GoalState {
        version: 1,
        goal_id: id.clone(),
        original_goal: crate::redact::redact_str(&req.outcome).into_owned(),
        normalized_goal: crate::redact::redact_str(&normalized).into_owned(),
        status: Status::Running,
        phase: Phase::Intake,
        created_at: now,
        updated_at: now,
        completed_at: None,
        until_ready: req.until_ready,
        budget_time: req
            .budget_time
            .as_deref()
            .map(|t| budget::parse_duration(t).map(budget::format_duration))
            .transpose()?,
        budget_tokens: req.budget_tokens,
        budget_usd: req.budget_usd,
        max_agents: req.max_agents,
        terminal_criteria: state::TerminalCriteria {
            proof_required: true,
            gates_required: true,
            human_blockers_stop: true,
        },
        delivery_policy,
        merge_policy: merge_policy.as_str().into(),
        slice_execution: req.slice_execution,
        artifacts: Vec::new(),
        failure: None,
        state_dir: dir.clone(),
    };
    let project = omk.project_dir().to_path_buf();
    let mut c = controller::new_controller(&project, req.approval.clone(), req.agent.clone());
    if req.slice_execution {
        let ws = crate::workspace::create(
            &project,
            &id,
            &dir.join("workspace"),
            config.team.worktree.lfs,
        )?;
        c.base_commit = Some(ws.base_commit.clone());
        c.workspace = Some(ws);
    }
    let worked_on = c.work_tree().to_path_buf();
    store::write_doc(&state::ControllerState::file(&dir), &c)?;
    store::write_doc(&snapshot::baseline_file(&dir), &snapshot::take(&worked_on))?;
    // goal.json last: a goal is listed only once it is complete on disk.
    store::write_doc(&GoalState::file(&dir), &state)?;
    emit(
        &dir,
        &id,
        EventKind::GoalCreated,
        json!({ "status": "running", "phase": "intake", "project": project }),
    )?;
    Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    }
    .budget_checkpoint("goal_created")?;
    Ok(state)
}

/// Drive the controller (under the goal's lock) until it stops, or for
/// one step. An error inside a step ends the goal `failed_infra` with the
/// reason; the state stays readable.
pub fn drive(omk: &Omk, id: &str, one_step: bool) -> Result<GoalState> {
    let (id, dir) = resolve(omk, id)?;
    let _lock = controller::lock(&dir, &id)?;
    state::update_controller(&dir, |c| {
        c.pid = Some(ProcessId::current());
        Ok(())
    })?;
    let ctl = Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    };
    emit(
        &dir,
        &id,
        EventKind::RunStarted,
        json!({ "pid": std::process::id() }),
    )?;
    let result = loop {
        match ctl.step() {
            Ok(Step::Continue) if !one_step => continue,
            Ok(_) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = &result {
        if !matches!(e, Error::CorruptState { .. }) {
            let _ = ctl.finish(
                Status::FailedInfra,
                Some(e.to_string()),
                Vec::new(),
                Vec::new(),
            );
        }
    }
    let _ = state::update_controller(&dir, |c| {
        c.pid = None;
        Ok(())
    });
    result?;
    state::load_state(&dir, &id)
}

/// Continue a goal from its durable state: a paused goal, one whose
/// controller died, one that ran out of budget (after `budget-add`), or one
/// that ended not ready or blocked (another round).
pub fn resume(omk: &Omk, id: &str) -> Result<GoalState> {
    let (id, dir) = resolve(omk, id)?;
    {
        // Refuse while a controller runs (its lock is held).
        let _probe = controller::lock(&dir, &id)?;
    }
    let before = state::load_state(&dir, &id)?;
    if before.status.is_final() {
        return Err(Error::Conflict(format!(
            "goal {id} is {}: there is nothing to resume",
            before.status
        )));
    }
    if before.phase == Phase::Proof && before.status != Status::Running {
        // Another round: failed tasks get new attempts, then the gates again.
        if let Some(mut g) = TaskGraph::load(&dir)? {
            for t in g
                .tasks
                .iter_mut()
                .filter(|t| t.status == graph::TaskStatus::Failed)
            {
                t.status = graph::TaskStatus::Pending;
            }
            g.save(&dir)?;
        }
    }
    state::update_state(&dir, |s| {
        if s.phase == Phase::Proof && s.status != Status::Running {
            s.phase = Phase::Execution;
        }
        s.status = Status::Running;
        s.failure = None;
        s.completed_at = None;
        Ok(())
    })?;
    emit(
        &dir,
        &id,
        EventKind::GoalStatusChanged,
        json!({ "status": "running", "reason": format!("resumed from {}", before.status) }),
    )?;
    Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    }
    .budget_checkpoint("goal_resumed")?;
    drive(omk, &id, false)
}

/// Every goal, newest first.
pub fn list(paths: &StatePaths) -> Result<GoalList> {
    let dir = goals_dir(paths);
    let mut goals = Vec::new();
    let mut unreadable = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(GoalList { goals, unreadable })
        }
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if crate::paths::validate_name("goal id", &name).is_err() {
            continue;
        }
        match store::read_doc::<GoalState>(&GoalState::file(&entry.path())) {
            Ok(Some(mut g)) => {
                g.state_dir = entry.path();
                goals.push(g);
            }
            Ok(None) => {}
            Err(e) => unreadable.push(json!({ "goal_id": name, "error": e.to_string() })),
        }
    }
    goals.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(b.goal_id.cmp(&a.goal_id))
    });
    Ok(GoalList { goals, unreadable })
}

/// The goal's state (state_dir re-homed to where it is now).
pub fn show(omk: &Omk, id: &str) -> Result<GoalState> {
    let (id, dir) = resolve(omk, id)?;
    let mut s = state::load_state(&dir, &id)?;
    s.state_dir = dir;
    Ok(s)
}

/// The goal's proof; a goal that has none yet gets one computed (and
/// written) from its files.
pub fn proof(omk: &Omk, id: &str) -> Result<GoalProof> {
    let (id, dir) = resolve(omk, id)?;
    if let Some(p) = GoalProof::load(&dir)? {
        return Ok(p);
    }
    Controller { omk, dir, id }.write_proof(Vec::new(), Vec::new())
}

pub fn replay(omk: &Omk, id: &str) -> Result<GoalReplay> {
    let (id, dir) = resolve(omk, id)?;
    let s = state::load_state(&dir, &id)?;
    let graph = TaskGraph::load(&dir)
        .map(|g| g.map(|g| g.summary()))
        .map_err(|e| e.to_string());
    replay::replay(&dir.join("events.jsonl"), &s, graph)
}

pub fn budget(omk: &Omk, id: &str) -> Result<budget::BudgetReport> {
    let (id, dir) = resolve(omk, id)?;
    let s = state::load_state(&dir, &id)?;
    let ctl = Controller {
        omk,
        dir: dir.clone(),
        id,
    };
    let standing = budget::Standing::new(&s, ctl.usage()?, &omk.config()?.goal)?;
    let active = state::load_controller(&dir)?.active_ms / 1000;
    budget::report(&dir, &s, &standing, active)
}

/// Raise budgets: each new total is max(current budget, current use) +
/// the amount added. A goal stopped for budget becomes `not_ready` again.
pub fn budget_add(
    omk: &Omk,
    id: &str,
    time: Option<&str>,
    tokens: Option<u64>,
    usd: Option<f64>,
) -> Result<budget::BudgetReport> {
    if time.is_none() && tokens.is_none() && usd.is_none() {
        return Err(Error::InvalidInput(
            "budget-add needs --time, --tokens or --usd".into(),
        ));
    }
    let add_secs = time.map(budget::parse_duration).transpose()?;
    if add_secs == Some(0) || tokens == Some(0) || usd.is_some_and(|u| !(u.is_finite() && u > 0.0))
    {
        return Err(Error::InvalidInput(
            "budget-add amounts must be more than 0".into(),
        ));
    }
    let (id, dir) = resolve(omk, id)?;
    let ctl = Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    };
    let cfg = omk.config()?.goal.clone();
    let used = ctl.usage()?;
    state::update_state(&dir, |s| {
        if s.status.is_final() {
            return Err(Error::Conflict(format!(
                "goal {} is {}: its budget is closed",
                s.goal_id, s.status
            )));
        }
        let standing = budget::Standing::new(s, used, &cfg)?;
        if let Some(add) = add_secs {
            let base = standing.total_secs.unwrap_or(0).max(standing.elapsed_secs);
            s.budget_time = Some(budget::format_duration(base + add));
        }
        if let Some(add) = tokens {
            s.budget_tokens = Some(s.budget_tokens.unwrap_or(0).max(used.total()) + add);
        }
        if let Some(add) = usd {
            let base = s.budget_usd.unwrap_or(0.0).max(standing.cost_usd);
            s.budget_usd = Some(((base + add) * 1e6).round() / 1e6);
        }
        if s.status == Status::NeedsMoreBudget {
            s.status = Status::NotReady;
        }
        Ok(())
    })?;
    emit(
        &dir,
        &id,
        EventKind::Other("budget_extended".into()),
        json!({ "time": time, "tokens": tokens, "usd": usd }),
    )?;
    ctl.budget_checkpoint("budget_extended")?;
    budget(omk, &id)
}

pub fn diagnose(omk: &Omk, id: &str) -> Result<StagnationReport> {
    let (id, dir) = resolve(omk, id)?;
    let history = stagnation::load(&dir)?;
    Ok(stagnation::diagnose(&id, &history, &omk.config()?.goal))
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub checkpoint_id: u32,
    pub checkpoint_path: PathBuf,
    pub diagnosis: StagnationReport,
    pub plan: RecoveryPlan,
}

/// Write a recovery checkpoint and propose a plan for the diagnosis.
pub fn recover(omk: &Omk, id: &str) -> Result<Recovery> {
    let (id, dir) = resolve(omk, id)?;
    let cfg = omk.config()?.goal.clone();
    let history = stagnation::load(&dir)?;
    let report = stagnation::diagnose(&id, &history, &cfg);
    let c = state::load_controller(&dir)?;
    let cp = checkpoint::take(
        &dir,
        "recover",
        c.iteration,
        snapshot::git_head(c.work_tree()),
    )?;
    let plan = stagnation::plan(&report, &history, cp.checkpoint_id, &cfg);
    store::write_doc(
        &dir.join("checkpoints")
            .join(format!("plan-{}.json", cp.checkpoint_id)),
        &PlanDoc(plan.clone()),
    )?;
    emit(
        &dir,
        &id,
        EventKind::CheckpointWritten,
        json!({ "checkpoint_id": cp.checkpoint_id, "label": "recover", "reason": plan.strategy }),
    )?;
    Ok(Recovery {
        checkpoint_id: cp.checkpoint_id,
        checkpoint_path: dir
            .join("checkpoints")
            .join(format!("checkpoint-{}.json", cp.checkpoint_id)),
        diagnosis: report,
        plan,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct PlanDoc(RecoveryPlan);
impl store::Document for PlanDoc {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal recovery plan";
}

/// What `rollback` restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub goal_id: String,
    pub checkpoint_id: u32,
    pub label: String,
    pub restored: Vec<String>,
    pub git_reset_to: Option<String>,
    /// The work tree `--git` reset (the goal's project).
    pub git_work_tree: Option<PathBuf>,
    pub state: GoalState,
}

/// Restore the goal state, task graph, verification and proof of the
/// latest (or the named) checkpoint; with `git`, also reset the work tree
/// to the checkpoint's commit (refused when it has uncommitted changes).
pub fn rollback(omk: &Omk, id: &str, checkpoint_id: Option<u32>, git: bool) -> Result<Rollback> {
    let (id, dir) = resolve(omk, id)?;
    let _lock = controller::lock(&dir, &id)?;
    let n = match checkpoint_id {
        Some(n) => n,
        None => *checkpoint::ids(&dir)?.last().ok_or_else(|| {
            Error::NotFound(format!(
                "goal {id} has no checkpoint yet (`omk goal recover {id}` writes one)"
            ))
        })?,
    };
    let cp = checkpoint::load(&dir, n)?;
    let c = state::load_controller(&dir)?;
    let project = c.project_dir.clone();
    // What `--git` resets: the goal's workspace, or the project.
    let tree = c.work_tree().to_path_buf();
    let mut git_reset_to = None;
    let mut git_work_tree = None;
    if git && same_dir_key(&project) != same_dir_key(omk.project_dir()) {
        // A hard reset of another project's work tree is never implied.
        return Err(Error::Conflict(format!(
            "goal {id} belongs to project {}, not to the current project {}: run the rollback there, or name it with -C {}",
            project.display(),
            omk.project_dir().display(),
            project.display()
        )));
    }
    if git {
        let commit = cp.git_commit.clone().ok_or_else(|| {
            Error::InvalidInput(format!(
                "checkpoint {n} has no git commit (the project was not a git repository)"
            ))
        })?;
        match snapshot::git_dirty(&tree) {
            None => {
                return Err(Error::InvalidInput(format!(
                    "{} is not a git work tree",
                    tree.display()
                )))
            }
            Some(true) => {
                return Err(Error::Conflict(format!(
                    "{} has uncommitted changes: commit or stash them before `rollback --git`",
                    tree.display()
                )))
            }
            Some(false) => {}
        }
        snapshot::git(&tree, &["reset", "--hard", "--quiet", &commit]).ok_or_else(|| {
            Error::InvalidInput(format!(
                "git reset --hard {commit} failed in {}",
                tree.display()
            ))
        })?;
        git_reset_to = Some(commit);
        git_work_tree = Some(tree.clone());
    }
    checkpoint::restore(&dir, &cp)?;
    let mut restored = vec!["goal.json".to_string()];
    restored.push(
        if cp.task_graph.is_some() {
            "task-graph.json"
        } else {
            "task-graph.json (removed: none at the checkpoint)"
        }
        .into(),
    );
    restored.push(
        if cp.proof.is_some() {
            "proof.json"
        } else {
            "proof.json (removed: none at the checkpoint)"
        }
        .into(),
    );
    emit(
        &dir,
        &id,
        EventKind::RolledBack,
        json!({ "checkpoint_id": n, "label": cp.label, "git": git_reset_to }),
    )?;
    Ok(Rollback {
        goal_id: id.clone(),
        checkpoint_id: n,
        label: cp.label,
        restored,
        git_reset_to,
        git_work_tree,
        state: state::load_state(&dir, &id)?,
    })
}

/// Set a status from outside the controller (pause, cancel), stopping the
/// wave in progress so the controller notices promptly.
fn interrupt(omk: &Omk, id: &str, status: Status, reason: &str) -> Result<GoalState> {
    let (id, dir) = resolve(omk, id)?;
    state::update_state(&dir, |s| {
        if s.status.is_final() {
            return Err(Error::Conflict(format!(
                "goal {} is already {}",
                s.goal_id, s.status
            )));
        }
        s.status = status;
        if status == Status::Cancelled {
            s.failure = Some(state::Failure {
                reason: reason.into(),
                recorded_at: Utc::now(),
            });
            s.completed_at = Some(Utc::now());
        }
        Ok(())
    })?;
    emit(
        &dir,
        &id,
        EventKind::GoalStatusChanged,
        json!({ "status": status.as_str(), "reason": reason }),
    )?;
    let ctl = Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    };
    ctl.budget_checkpoint(if status == Status::Paused {
        "goal_paused"
    } else {
        "goal_cancelled"
    })?;
    if let Some(team) = state::load_controller(&dir)?.active_team {
        match omk.team_shutdown(&team, false) {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => tracing::warn!("goal {id}: stopping team {team}: {e}"),
        }
    }
    if status == Status::Cancelled {
        ctl.write_proof(Vec::new(), Vec::new())?;
    }
    state::load_state(&dir, &id)
}

pub fn pause(omk: &Omk, id: &str) -> Result<GoalState> {
    interrupt(omk, id, Status::Paused, "paused by user")
}

pub fn cancel(omk: &Omk, id: &str) -> Result<GoalState> {
    interrupt(omk, id, Status::Cancelled, "cancelled by user")
}

/// Run the gates on the goal's project now and refresh the proof; a goal
/// whose evidence is complete becomes `ready`.
pub fn verify(omk: &Omk, id: &str) -> Result<GoalProof> {
    let (id, dir) = resolve(omk, id)?;
    let _lock = controller::lock(&dir, &id)?;
    let ctl = Controller {
        omk,
        dir: dir.clone(),
        id: id.clone(),
    };
    ctl.verify()?;
    let p = ctl.write_proof(Vec::new(), Vec::new())?;
    let s = state::load_state(&dir, &id)?;
    if p.status == Status::Ready && !s.status.is_final() && s.status != Status::Running {
        ctl.finish(Status::Ready, None, Vec::new(), Vec::new())
    } else {
        Ok(p)
    }
}
