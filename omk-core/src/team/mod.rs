//! Teams (DESIGN.md §7): `N:role` workers running one task's subtasks in
//! parallel, with a durable record of everything that happened.
//!
//! - [`prepare`] validates a request and creates the team's directory and
//!   document (phase `Planning`);
//! - [`supervisor::supervise`] drives it to the end (in this process or a
//!   detached one);
//! - [`status`], [`list`] and [`shutdown`] work from any process.

pub mod board;
pub mod doc;
pub mod isolation;
mod persist;
mod plan;
pub mod proof;
pub mod remote;
pub mod shared;
pub mod spec;
pub mod supervisor;
mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use doc::{AgentUsage, Phase, TaskEntry, TaskStatus, TeamDoc, WorkerEntry};
pub use spec::{TeamSpec, WorkerSpec};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{EventKind, EventLog};
use crate::metrics::{self, Counter};
use crate::paths::{validate_name, StatePaths};
use crate::process::ProcessId;
use crate::store::{self, Document, FileLock};
use supervisor::ShutdownRequest;
pub use worker::Heartbeat;

/// `team.run` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamRunRequest {
    /// `N:role[@agent]` terms joined by `,`, e.g. `3:executor` or
    /// `2:executor@claude,1:reviewer@kimi-acp`.
    pub spec: String,
    /// What the team should achieve.
    pub task: String,
    /// Team name; default `<role>-<8 hex>`.
    pub name: Option<String>,
    /// Subtasks; when empty a planner turn proposes them.
    pub subtasks: Vec<String>,
    /// Where the agents work; default the project directory.
    pub workdir: Option<PathBuf>,
    /// Approval policy; default from config (`workdir-edits`).
    pub approval: Option<String>,
    /// Pool to admit workers through; default from config (`default`).
    pub pool: Option<String>,
    /// Return as soon as the run is prepared; it continues in the background.
    pub detach: bool,
    /// Skip the verification gates (the proof says so).
    pub no_gates: bool,
    /// The agent profile of spec terms without `@agent` (and of the
    /// planner turn); default `[team] agent`.
    pub agent: Option<String>,
    /// `worktree` (a git worktree per worker, integrated by omk; the work
    /// dir must be in a git work tree) or `none`; default `worktree` when
    /// the work dir is in a git work tree (and not in a directory git
    /// ignores), else `none`.
    pub isolation: Option<String>,
    /// With `worktree`: `branch` (default; the result stays on branch
    /// `omk/<team>`) or `apply` (also brought into the user's checkout once
    /// every task completed and the gates passed, if the checkout did not
    /// change since the run began).
    pub deliver: Option<String>,
}

/// What the supervisor needs beyond the team document (`request.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRequest {
    pub version: u32,
    pub subtasks: Vec<String>,
    /// Every agent profile the run uses, resolved when it was prepared.
    pub agents: std::collections::BTreeMap<String, crate::agents::Resolved>,
    /// The profile of the planner turn.
    pub planner_agent: String,
    /// The project's MCP servers in ACP's shape, for ACP agents' sessions.
    #[serde(default)]
    pub mcp_servers: Vec<serde_json::Value>,
    #[serde(default)]
    pub no_gates: bool,
    #[serde(default)]
    pub deliver: isolation::Deliver,
}

impl Document for StoredRequest {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "team request";
}

/// Whether a run is over (used by pool cleanup): terminal phase, or no
/// supervisor holds it any more.
pub fn run_is_terminal(paths: &StatePaths, run: &str) -> bool {
    doc::run_is_terminal(paths, run)
}

/// Validate `req` and create the team (directory, document, request).
/// Nothing is written when validation fails.
/// The team's workers: each spec group's count, with the group's agent
/// profile or `default_agent`.
fn workers_of(spec: &TeamSpec, default_agent: &str) -> Vec<WorkerEntry> {
    let mut workers = Vec::new();
    for g in &spec.groups {
        let agent = g.agent.clone().unwrap_or_else(|| default_agent.to_string());
        for _ in 0..g.count {
            workers.push(WorkerEntry {
                id: format!("w{}", workers.len() + 1),
                role: g.role.clone(),
                agent: agent.clone(),
            });
        }
    }
    workers
}

/// What [`check_request`] found valid.
struct Checked {
    spec: TeamSpec,
    name: String,
    policy: String,
    pool: String,
}

/// The checks every team request passes, wherever the team runs: the
/// spec, the task, the name (or its default), the subtasks, the approval
/// policy and the pool's name (or their defaults from `config`).
fn check_request(config: &Config, req: &TeamRunRequest) -> Result<Checked> {
    let spec = TeamSpec::parse(&req.spec)?;
    if req.task.trim().is_empty() {
        return Err(Error::InvalidInput("the task must not be empty".into()));
    }
    let name = match &req.name {
        Some(n) => {
            validate_name("team name", n)?;
            n.clone()
        }
        None => spec::default_team_name(&spec.groups[0].role),
    };
    let max = config.team.max_subtasks;
    if req.subtasks.len() > max {
        return Err(Error::InvalidInput(format!(
            "{} subtasks given; the limit is {max} ([team] max_subtasks)",
            req.subtasks.len()
        )));
    }
    if req.subtasks.iter().any(|s| s.trim().is_empty()) {
        return Err(Error::InvalidInput("a subtask must not be empty".into()));
    }
    let policy = req
        .approval
        .clone()
        .unwrap_or_else(|| config.agent.approval_policy.clone());
    crate::agent::PolicyKind::parse(&policy)?;
    let pool = req.pool.clone().unwrap_or_else(|| config.team.pool.clone());
    validate_name("pool name", &pool)?;
    Ok(Checked {
        spec,
        name,
        policy,
        pool,
    })
}

pub fn prepare(
    paths: &StatePaths,
    config: &Config,
    project: &Path,
    req: &TeamRunRequest,
) -> Result<TeamDoc> {
    let Checked {
        spec,
        name,
        policy,
        pool,
    } = check_request(config, req)?;
    if config.pool(&pool).is_none() {
        return Err(Error::NotFound(format!(
            "no pool named {pool:?}; configure [pools.{pool}]"
        )));
    }
    let workdir = match &req.workdir {
        Some(w) => {
            std::path::absolute(w).map_err(|e| Error::io(format!("resolve {}", w.display()), e))?
        }
        None => project.to_path_buf(),
    };
    if !workdir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "work dir {} is not a directory",
            workdir.display()
        )));
    }
    if let Some(a) = &req.agent {
        validate_name("agent profile", a)?;
    }
    let asked = req
        .isolation
        .as_deref()
        .map(isolation::Isolation::parse)
        .transpose()?;
    let repo = match asked {
        Some(isolation::Isolation::None) => None,
        _ => crate::git::Repo::discover(&workdir)?,
    };
    let isolation = match asked {
        Some(i) => i,
        // A git work tree isolates by default; a directory git ignores
        // (a scratch dir under target/) is not the repository's work.
        None => match &repo {
            Some(r) if !r.is_ignored(&workdir)? => isolation::Isolation::Worktree,
            _ => isolation::Isolation::None,
        },
    };
    let deliver = match &req.deliver {
        Some(d) => isolation::Deliver::parse(d)?,
        None => isolation::Deliver::Branch,
    };
    if deliver == isolation::Deliver::Apply && isolation != isolation::Isolation::Worktree {
        return Err(Error::InvalidInput(
            "--deliver apply needs --isolation worktree".into(),
        ));
    }
    if isolation == isolation::Isolation::Worktree && repo.is_none() {
        return Err(Error::InvalidInput(format!(
            "--isolation worktree needs a git work tree, and {} is in none",
            workdir.display()
        )));
    }
    if isolation == isolation::Isolation::Worktree {
        // Dead runs' worktrees go before new ones are made.
        reconcile_dead(paths);
    }
    let default_agent = req
        .agent
        .clone()
        .unwrap_or_else(|| crate::agents::default_name(config).to_string());
    let workers = workers_of(&spec, &default_agent);
    let planner_agent = workers[0].agent.clone();
    // Every profile known before anything is written, then every
    // executable found.
    let mut agents = std::collections::BTreeMap::new();
    for w in &workers {
        if !agents.contains_key(&w.agent) {
            agents.insert(w.agent.clone(), crate::agents::get(config, &w.agent)?);
        }
    }
    let agents = agents
        .into_iter()
        .map(|(name, p)| Ok((name, p.resolve(config)?)))
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    // The project's MCP servers go to ACP agents (a broken mcp.json is an
    // error here, before anything is written, as a broken config is).
    let mcp_servers = crate::mcp_config::acp_servers(&crate::mcp_config::load(project)?);
    let usage = agents
        .iter()
        .map(|(name, r)| {
            let n = workers.iter().filter(|w| &w.agent == name).count();
            let u = AgentUsage {
                protocol: r.protocol.as_str().to_string(),
                workers: n as u32,
                ..AgentUsage::default()
            };
            (name.clone(), u)
        })
        .collect();

    let dir = paths.team_dir(&name)?;
    store::ensure_dir(&paths.teams_dir())?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Conflict(format!(
                "a team named {name:?} already exists; pick another --name"
            )));
        }
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    let now = Utc::now();
    let doc = TeamDoc {
        version: TeamDoc::VERSION,
        name: name.clone(),
        task: crate::redact::redact_str(&req.task).into_owned(),
        created_at: now,
        worker_count: spec.total(),
        worker_role: spec.roles(),
        phase: Phase::Planning,
        tasks: Vec::new(),
        state_dir: dir.clone(),
        spec: req.spec.clone(),
        workdir,
        approval_policy: policy,
        pool,
        supervisor: None,
        updated_at: now,
        ended_at: None,
        tokens: 0,
        output_tokens: 0,
        reason: None,
        workers,
        agents: usage,
        isolation,
        worktree: None,
    };
    store::write_doc(
        &dir.join("request.json"),
        &StoredRequest {
            version: StoredRequest::VERSION,
            subtasks: req.subtasks.clone(),
            agents,
            planner_agent,
            mcp_servers,
            no_gates: req.no_gates,
            deliver,
        },
    )?;
    doc.save()?;
    EventLog::open(&dir.join("events.jsonl"))?.emit(
        &name,
        EventKind::PhaseChanged,
        Some("supervisor"),
        json!({ "from": null, "to": Phase::Planning, "task": doc.task, "spec": doc.spec }),
    )?;
    if let Err(e) = metrics::increment(&paths.metrics(), Counter::TeamRuns) {
        tracing::warn!("cannot update metrics: {e}");
    }
    Ok(doc)
}

/// The lock a live supervisor holds for its whole run.
pub(crate) fn supervisor_lock(dir: &Path) -> PathBuf {
    dir.join("supervisor.lock")
}

/// Load what a supervisor needs, taking the supervisor lock.
pub(crate) fn claim_supervision(
    paths: &StatePaths,
    name: &str,
) -> Result<(FileLock, TeamDoc, StoredRequest)> {
    let dir = paths.team_dir(name)?;
    let doc = TeamDoc::load(paths, name)?.ok_or_else(|| not_found(name))?;
    let lock = FileLock::try_exclusive(&supervisor_lock(&dir))?
        .ok_or_else(|| Error::Conflict(format!("team {name} is already being supervised")))?;
    if doc.phase != Phase::Planning || doc.supervisor.is_some() {
        return Err(Error::Conflict(format!(
            "team {name} has already run (phase {:?})",
            doc.phase
        )));
    }
    let req = store::read_doc::<StoredRequest>(&dir.join("request.json"))?
        .ok_or_else(|| Error::corrupt(&dir.join("request.json"), "missing"))?;
    Ok((lock, doc, req))
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!(
        "no team named {name:?}; `omk team list` shows the teams"
    ))
}

/// A team's document, with a dead supervisor detected and recorded as
/// `Interrupted`.
pub fn status(paths: &StatePaths, name: &str) -> Result<TeamDoc> {
    let doc = TeamDoc::load(paths, name)?.ok_or_else(|| not_found(name))?;
    if doc.phase.is_terminal() {
        return Ok(doc);
    }
    // A prepared run waits a moment for its (detached) supervisor to start.
    // Checked before touching the lock: holding it even briefly while the
    // supervisor claims it would make the supervisor give up.
    if doc.supervisor.is_none() && Utc::now() - doc.created_at < chrono::Duration::seconds(30) {
        return Ok(doc);
    }
    // A live supervisor holds its lock.
    let lock = match FileLock::try_exclusive(&supervisor_lock(&doc.state_dir))? {
        None => return Ok(doc),
        Some(l) => l,
    };
    // Re-read under the lock: the supervisor may have finished meanwhile.
    let mut doc = TeamDoc::load(paths, name)?.ok_or_else(|| not_found(name))?;
    if doc.phase.is_terminal() {
        return Ok(doc);
    }
    let who = doc
        .supervisor
        .map(|p| format!("pid {}", p.pid))
        .unwrap_or_else(|| "never started".into());
    doc.phase = Phase::Interrupted;
    doc.reason = Some(format!(
        "the supervisor ({who}) died before the run finished"
    ));
    // Isolated: the integration ref says which tasks landed; keep what
    // the dead run's worktrees hold, then remove them.
    let mut reconcile_error = None;
    let mut integrated = Vec::new();
    if let Some(w) = &mut doc.worktree {
        match isolation::reconcile(&doc.name, &doc.state_dir, w) {
            Ok(r) => {
                integrated = r.integrated.clone();
                w.reconciled = Some(r);
            }
            Err(e) => reconcile_error = Some(e.to_string()),
        }
    }
    for t in &mut doc.tasks {
        // Integrated before the supervisor could record its completion.
        if integrated.contains(&t.id) && t.status != TaskStatus::Completed {
            t.status = TaskStatus::Completed;
            t.summary = Some(
                "integrated (refs/omk/<team>/integration) just before the supervisor died; \
                 the turn's summary was lost"
                    .into(),
            );
            t.finished_at = Some(Utc::now());
        }
        if matches!(t.status, TaskStatus::Pending | TaskStatus::Running) {
            t.status = TaskStatus::Cancelled;
        }
    }
    doc.ended_at = Some(Utc::now());
    doc.updated_at = Utc::now();
    doc.save()?;
    proof::write(
        &doc,
        &proof::GatesOutcome::Skipped("the run was interrupted".into()),
    )?;
    if let Some(w) = doc.worktree.as_ref().and_then(|w| w.reconciled.as_ref()) {
        EventLog::open(&doc.state_dir.join("events.jsonl"))?.emit(
            name,
            EventKind::WorktreesCleaned,
            Some("status"),
            json!({ "reconciled": w }),
        )?;
    }
    if let Some(e) = reconcile_error {
        tracing::warn!("cannot reconcile the worktrees of team {name}: {e}");
    }
    EventLog::open(&doc.state_dir.join("events.jsonl"))?.emit(
        name,
        EventKind::RunFailed,
        Some("status"),
        json!({ "phase": Phase::Interrupted, "reason": doc.reason }),
    )?;
    drop(lock);
    Ok(doc)
}

/// Reconcile every dead isolated run that still has worktrees (as
/// [`status`] does for one); returns the names of those it reconciled.
/// Runs whose supervisor lives are left alone; errors are logged.
pub fn reconcile_dead(paths: &StatePaths) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(paths.teams_dir()) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let worktrees = entry.path().join("worktrees");
        if validate_name("team name", &name).is_err() || !worktrees.exists() {
            continue;
        }
        match status(paths, &name) {
            Ok(d) if d.phase == Phase::Interrupted && !worktrees.exists() => done.push(name),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot reconcile team {name}: {e}"),
        }
    }
    done.sort();
    done
}

/// What `omk team gc` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    pub older_than_secs: u64,
    pub dry_run: bool,
    /// Ended isolated teams old enough that had refs to remove or keep.
    pub teams: Vec<GcTeam>,
    /// Refs removed in all (or that would be).
    pub removed: usize,
}

/// `omk team gc` for one team.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcTeam {
    pub name: String,
    pub repo: PathBuf,
    pub removed: Vec<String>,
    /// Refs left in place, each with why.
    pub kept: Vec<String>,
    /// Why nothing could be done (the repository is gone, git failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Delete the git refs and branches of isolated teams that ended more
/// than `older_than_secs` ago (see [`isolation::gc`]); their team
/// directories stay. Teams still running are never touched.
pub fn gc(paths: &StatePaths, older_than_secs: u64, dry_run: bool) -> Result<GcReport> {
    let cutoff =
        Utc::now() - chrono::Duration::seconds(older_than_secs.min(i64::MAX as u64) as i64);
    let mut report = GcReport {
        older_than_secs,
        dry_run,
        teams: Vec::new(),
        removed: 0,
    };
    for doc in list(paths)?.teams {
        let Some(w) = &doc.worktree else { continue };
        let ended = doc.ended_at.unwrap_or(doc.updated_at);
        if !doc.phase.is_terminal() || ended > cutoff {
            continue;
        }
        let mut t = GcTeam {
            name: doc.name.clone(),
            repo: w.repo.clone(),
            removed: Vec::new(),
            kept: Vec::new(),
            error: None,
        };
        match isolation::gc(&doc.name, w, dry_run) {
            Ok((removed, kept)) => (t.removed, t.kept) = (removed, kept),
            Err(e) => t.error = Some(e.to_string()),
        }
        if t.removed.is_empty() && t.kept.is_empty() && t.error.is_none() {
            continue;
        }
        report.removed += t.removed.len();
        report.teams.push(t);
    }
    Ok(report)
}

/// The teams of a state root.
#[derive(Debug, Default)]
pub struct TeamList {
    /// Oldest first.
    pub teams: Vec<TeamDoc>,
    /// Teams whose document could not be read, with why.
    pub errors: Vec<(String, Error)>,
}

/// Every team, oldest first. Teams whose document cannot be read are
/// reported in `errors`, never skipped silently.
pub fn list(paths: &StatePaths) -> Result<TeamList> {
    let mut teams = Vec::new();
    let mut errors = Vec::new();
    let rd = match std::fs::read_dir(paths.teams_dir()) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TeamList::default()),
        Err(e) => {
            return Err(Error::io(
                format!("read {}", paths.teams_dir().display()),
                e,
            ))
        }
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_name("team name", &name).is_err() {
            continue;
        }
        match status(paths, &name) {
            Ok(d) => teams.push(d),
            // A directory without team.json (being created, or not a team).
            Err(Error::NotFound(_)) => {}
            Err(e) => errors.push((name, e)),
        }
    }
    teams.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    Ok(TeamList { teams, errors })
}

/// Agents recorded in the workers' heartbeats.
fn recorded_agents(dir: &Path) -> Vec<ProcessId> {
    let Ok(rd) = std::fs::read_dir(dir.join("workers")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            store::read_doc::<Heartbeat>(&e.path().join("heartbeat.json"))
                .ok()
                .flatten()
        })
        .filter_map(|h| h.agent)
        .collect()
}

/// Kill every recorded agent process group still alive. Returns how many.
fn kill_recorded_agents(dir: &Path) -> usize {
    recorded_agents(dir)
        .into_iter()
        .filter(|a| crate::process::group_alive(a.pid))
        .filter(|a| a.kill_group())
        .count()
}

/// Ask a team to stop and wait until it has. `force` kills the agents'
/// process groups at once. Idempotent: a finished team is returned as is
/// (after making sure none of its agents survived).
/// What a shutdown request did.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownOutcome {
    /// The team document after the request (its real phase).
    #[serde(flatten)]
    pub document: TeamDoc,
    /// Whether this request stopped a running team (`false`: the team had
    /// already ended and nothing was stopped).
    pub stopped: bool,
    /// What happened, in a sentence.
    pub outcome: String,
}

pub fn shutdown(
    paths: &StatePaths,
    config: &Config,
    name: &str,
    force: bool,
) -> Result<ShutdownOutcome> {
    let doc = status(paths, name)?;
    let dir = doc.state_dir.clone();
    if doc.phase.is_terminal() {
        kill_recorded_agents(&dir);
        return Ok(ShutdownOutcome {
            outcome: format!(
                "team {name} had already ended ({:?}); nothing was stopped",
                doc.phase
            ),
            document: doc,
            stopped: false,
        });
    }
    let file = dir.join("shutdown.json");
    let previous = store::read_doc::<ShutdownRequest>(&file)?;
    if previous.as_ref().is_none_or(|p| force && !p.force) {
        store::write_doc(
            &file,
            &ShutdownRequest {
                version: ShutdownRequest::VERSION,
                force,
                requested_at: Utc::now(),
                requested_by: std::process::id(),
            },
        )?;
        crate::doorbell::ring(&supervisor::shutdown_doorbell(&dir));
    }
    if previous.is_none() {
        if let Err(e) = metrics::increment(&paths.metrics(), Counter::Shutdowns) {
            tracing::warn!("cannot update metrics: {e}");
        }
    }
    if force {
        kill_recorded_agents(&dir);
    }
    let deadline = Instant::now() + Duration::from_secs(config.team.stop_grace_secs + 15);
    // Woken by every write of team.json; the re-check notices a supervisor
    // that died without writing it.
    let changed = crate::watch::Signal::new();
    let _watch = crate::watch::Watch::signal(&dir, changed.clone(), |p| {
        crate::watch::document_name(p) == Some("team.json")
    })
    .ok();
    let doc = loop {
        let seen = changed.generation();
        let doc = status(paths, name)?;
        if doc.phase.is_terminal() {
            break doc;
        }
        if Instant::now() >= deadline {
            kill_recorded_agents(&dir);
            return Err(Error::Timeout(format!(
                "team {name} did not stop within {}s; its agents were killed, run `omk team shutdown {name} --force` to finish",
                config.team.stop_grace_secs + 15
            )));
        }
        changed.wait_past(seen, Duration::from_millis(250));
    };
    kill_recorded_agents(&dir);
    Ok(ShutdownOutcome {
        outcome: format!(
            "team {name} was stopped{} and ended {:?}",
            if force { " (forced)" } else { "" },
            doc.phase
        ),
        document: doc,
        stopped: true,
    })
}
