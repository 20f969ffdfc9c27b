//! A team in a PostgreSQL store (docs/distributed.md): submitted by `omk
//! team run --store`, its tasks run by `omk worker` daemons on any host,
//! its document kept by whoever holds its coordination lease.
//!
//! The coordinator follows the store (woken by its notifications), folds
//! the task records into the team document (written at most every
//! [`SAVE_INTERVAL`]), and ends the run once every task is completed or
//! failed. Each write is fenced by its coordination
//! epoch: a coordinator that lost its lease (it was stopped, and a worker
//! took over) writes nothing more.
//!
//! A team submitted without subtasks is planned in the store: its one task
//! ([`PLAN_TASK`]) asks an agent for the subtasks, and its coordinator turns
//! the answer into tasks.
//!
//! A team submitted from a git work tree shares its code through git
//! ([`super::shared`]): tasks work on its base and push their commits, the
//! coordinator merges them and delivers branch `omk/<team>`.
//!
//! When every task completed, the coordinator runs the required gates on
//! the integrated commit and stores the run's proof (or failure document)
//! with its last document.
//!
//! A task whose work conflicts with what was integrated before it is sent
//! back to work on the integrated head with the conflict in its prompt (at
//! most `[team] conflict_retries` times), then to an integrator turn on
//! the merge with markers, as in a local isolated run; a resolution that
//! still conflicts, keeps markers or changes nothing fails the team.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use super::doc::{AgentUsage, Phase, TaskEntry, TaskStatus, TeamDoc, WorkerEntry};
use super::isolation::IsolationRecord;
use super::proof::GatesOutcome;
use super::shared::{SharedCode, TaskCommit};
use super::spec::role_instructions;
use super::TeamRunRequest;
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, EventKind};
use crate::paths::validate_name;
use crate::pg::tasks::{NewTask, TaskRecord};
use crate::pg::teams::Coordination;
use crate::pg::PgStore;
use crate::store::Document;
use crate::watch::Signal;

/// How often a coordinator with nothing to do looks at the store anyway.
const RECHECK: Duration = Duration::from_secs(2);

/// The shortest time between two writes of a running team's document (each
/// claim, start and completion of every task changes it); the final one
/// goes at once.
const SAVE_INTERVAL: Duration = Duration::from_millis(50);

/// A team ready to submit: its document and its tasks.
#[derive(Debug, Clone)]
pub struct Submission {
    pub doc: TeamDoc,
    pub tasks: Vec<NewTask>,
}

impl Submission {
    /// Tasks work on `code` (every task's spec names the repository and
    /// base; the document records them as an isolated run does).
    pub fn with_code(mut self, code: &SharedCode, record: IsolationRecord) -> Submission {
        for t in &mut self.tasks {
            t.spec["repo"] = code.to_json();
        }
        self.doc.isolation = super::isolation::Isolation::Worktree;
        self.doc.worktree = Some(record);
        self
    }
}

/// Build the submission of `req` to the store `store` (shown in the
/// document as where the team's state lives).
pub fn submission(config: &Config, req: &TeamRunRequest, store: &str) -> Result<Submission> {
    let super::Checked {
        spec,
        name,
        policy,
        pool,
    } = super::check_request(config, req)?;
    let default_agent = match &req.agent {
        Some(a) => {
            validate_name("agent profile", a)?;
            a.clone()
        }
        None => crate::agents::default_name(config).to_string(),
    };
    let workers = super::workers_of(&spec, &default_agent);
    let task = crate::redact::redact_str(&req.task).into_owned();
    let max_attempts = config.team.max_attempts.max(1) as i32;
    let tasks: Vec<NewTask> = if req.subtasks.is_empty() {
        // Planned in the store: one task whose answer the coordinator
        // turns into the subtasks.
        let max = config.team.max_subtasks;
        vec![NewTask {
            id: PLAN_TASK.into(),
            pool: pool.clone(),
            agent: workers[0].agent.clone(),
            max_attempts,
            spec: json!({
                "kind": "plan",
                "title": "plan the task",
                "prompt": super::plan::planner_prompt(&task, max),
                "max_subtasks": max,
                "max_attempts": max_attempts,
            }),
        }]
    } else {
        subtasks(&workers, &task, &req.subtasks, &pool, max_attempts)
    };
    // The agents of other hosts cannot ask this process.
    if policy == crate::agent::PolicyKind::Host.as_str() {
        return Err(Error::invalid(
            "the host approval policy needs the process that runs the agents: \
             a store team's agents run on worker hosts (use workdir-edits, \
             approve-all or reject-all)",
        ));
    }
    // Every task says so (planned ones inherit it from the plan task).
    let tasks = tasks
        .into_iter()
        .map(|mut t| {
            if req.no_gates {
                t.spec["no_gates"] = json!(true);
            }
            t.spec["approval"] = json!(policy);
            t.spec["conflict_retries"] = json!(config.team.conflict_retries);
            t
        })
        .collect();
    let mut agents = std::collections::BTreeMap::<String, AgentUsage>::new();
    for w in &workers {
        agents.entry(w.agent.clone()).or_default().workers += 1;
    }
    let now = Utc::now();
    let doc = TeamDoc {
        version: TeamDoc::VERSION,
        name: name.clone(),
        task,
        created_at: now,
        worker_count: spec.total(),
        worker_role: spec.roles(),
        phase: if req.subtasks.is_empty() {
            Phase::Planning
        } else {
            Phase::Executing
        },
        tasks: entries(&req.subtasks),
        state_dir: PathBuf::from(format!("{store}#{name}")),
        spec: req.spec.clone(),
        workdir: req.workdir.clone().unwrap_or_default(),
        approval_policy: policy,
        pool,
        supervisor: None,
        updated_at: now,
        ended_at: None,
        tokens: 0,
        output_tokens: 0,
        reason: None,
        workers,
        agents,
        isolation: super::isolation::Isolation::None,
        worktree: None,
    };
    Ok(Submission { doc, tasks })
}

/// The id of the planning task of a team submitted without subtasks.
pub const PLAN_TASK: &str = "plan";

/// One task per subtask, round the team's workers (their roles and
/// profiles).
fn subtasks(
    workers: &[WorkerEntry],
    task: &str,
    titles: &[String],
    pool: &str,
    max_attempts: i32,
) -> Vec<NewTask> {
    let total = titles.len();
    titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            let w = &workers[i % workers.len()];
            let prompt = format!(
                "You work in an omk team as its {role}.\n{instructions}\n\n\
                 Overall task: {task}\n\nYour subtask ({n} of {total}): {title}\n\n\
                 When you are done, reply with a short summary of what you changed and how you checked it.",
                role = w.role,
                instructions = role_instructions(&w.role),
                n = i + 1,
            );
            NewTask {
                id: format!("t{}", i + 1),
                pool: pool.to_string(),
                agent: w.agent.clone(),
                max_attempts,
                spec: json!({ "title": title, "prompt": prompt, "role": w.role }),
            }
        })
        .collect()
}

fn entries(titles: &[String]) -> Vec<TaskEntry> {
    titles
        .iter()
        .enumerate()
        .map(|(i, t)| TaskEntry::new(i, t.clone()))
        .collect()
}

/// What the planning task's record says: still to come, the subtasks, or
/// why there are none.
enum Planning {
    Pending,
    Planned(Vec<String>),
    Failed(String),
}

fn planning(plan: &TaskRecord) -> Planning {
    let result = plan.result.clone().unwrap_or_default();
    match plan.status.as_str() {
        "completed" => {
            let max = plan.spec["max_subtasks"].as_u64().unwrap_or(8) as usize;
            match super::plan::parse_plan(result["summary"].as_str().unwrap_or_default(), max) {
                Ok(items) => Planning::Planned(items.into_iter().map(|p| p.title).collect()),
                Err(why) => Planning::Failed(why),
            }
        }
        "failed" | "cancelled" => Planning::Failed(
            result["error"]
                .as_str()
                .unwrap_or("the planning task did not complete")
                .to_string(),
        ),
        _ => Planning::Pending,
    }
}

/// Fold the store's task records into the document. Returns whether it
/// changed.
fn fold(doc: &mut TeamDoc, records: &[TaskRecord]) -> bool {
    let before = doc.tasks.clone();
    for r in records {
        let Some(t) = doc.tasks.iter_mut().find(|t| t.id == r.id) else {
            continue;
        };
        t.status = match r.status.as_str() {
            "running" => TaskStatus::Running,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => TaskStatus::Pending,
        };
        t.attempts = r.attempts.max(0) as u32;
        // The record's lease, as a local team's document shows it.
        t.epoch = r.epoch.max(0) as u64;
        t.lease_deadline = r.lease_deadline.filter(|_| t.status == TaskStatus::Running);
        t.retry_at = r.not_before.filter(|_| t.status == TaskStatus::Pending);
        if let Some(h) = &r.holder {
            t.worker = Some(h.clone());
        }
        if let Some(res) = &r.result {
            if let Some(by) = res["holder"].as_str() {
                t.worker = Some(by.to_string());
            }
            t.summary = match (t.status, res["error"].as_str()) {
                (TaskStatus::Failed, Some(why)) => Some(format!(
                    "failed after {} attempt(s): {}",
                    t.attempts,
                    super::supervisor::summarize(why)
                )),
                _ => res["summary"].as_str().map(super::supervisor::summarize),
            };
            t.tokens = res["tokens"].as_u64().unwrap_or(t.tokens);
            // Every failed attempt's error, as a local team keeps them.
            if let Some(errors) = res["errors"].as_array() {
                t.errors = errors
                    .iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect();
            }
        }
    }
    // The planner's turn counts too.
    let planner = records
        .iter()
        .filter(|r| r.id == PLAN_TASK)
        .filter_map(|r| r.result.as_ref()?["tokens"].as_u64())
        .sum::<u64>();
    let tokens = doc.tasks.iter().map(|t| t.tokens).sum::<u64>() + planner;
    let changed = doc.tasks != before || doc.tokens != tokens;
    doc.tokens = tokens;
    changed
}

/// Coordinate a team until its run ends (the returned document) or the
/// lease is lost (`conflict`). `site` is where it integrates and runs the
/// gates. `changes` is the store's event signal;
/// `observer` sees every version of the document written.
pub async fn coordinate(
    store: &PgStore,
    c: Coordination,
    lease: Duration,
    site: &Site,
    changes: Arc<Signal>,
    observer: &(dyn Fn(&TeamDoc) + Send + Sync),
) -> Result<TeamDoc> {
    let mut doc = decode(store, &c.team, c.doc.clone())?;
    let mut renew = tokio::time::interval(lease / 3);
    renew.tick().await;
    let mut saved_at: Option<tokio::time::Instant> = None;
    let mut unsaved = false;
    // While the store is away (a restart), the coordinator waits for it
    // instead of giving up the team; its lease decides who goes on.
    let mut away = Duration::from_millis(50);
    loop {
        let seen = changes.generation();
        let records = match store.tasks(&c.team).await {
            Ok(r) => {
                away = Duration::from_millis(50);
                r
            }
            Err(e) if e.code() == ErrorCode::Io => {
                tracing::warn!("coordinating {}: {e}; retrying in {away:?}", c.team);
                tokio::time::sleep(away).await;
                away = (away * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(e),
        };
        unsaved |= fold(&mut doc, &records);
        // A planned team: once the plan is in, its subtasks become tasks
        // (fenced by this coordination, with the move to Executing).
        let plan = records.iter().find(|r| r.id == PLAN_TASK);
        let unplanned = plan.is_some() && records.len() == 1;
        let mut planning_failed = None;
        if let (Some(p), true) = (plan, unplanned) {
            match planning(p) {
                Planning::Pending => {}
                Planning::Failed(why) => planning_failed = Some(why),
                Planning::Planned(titles) => {
                    let max_attempts = p.spec["max_attempts"].as_i64().unwrap_or(3) as i32;
                    let mut tasks =
                        subtasks(&doc.workers, &doc.task, &titles, &doc.pool, max_attempts);
                    for t in &mut tasks {
                        if let Some(w) = &doc.worktree {
                            t.spec["repo"] = SharedCode::from_record(w).to_json();
                        }
                        if p.spec["no_gates"] == true {
                            t.spec["no_gates"] = json!(true);
                        }
                        t.spec["conflict_retries"] = p.spec["conflict_retries"].clone();
                        t.spec["approval"] = json!(doc.approval_policy);
                    }
                    doc.tasks = entries(&titles);
                    doc.phase = Phase::Executing;
                    doc.updated_at = Utc::now();
                    let event = Event::new(
                        &c.team,
                        EventKind::PhaseChanged,
                        Some(&c.holder),
                        json!({ "from": Phase::Planning, "to": Phase::Executing, "subtasks": titles.len() }),
                    );
                    let value = to_value(&doc)?;
                    crate::pg::retry_io(lease, "add the planned tasks", || {
                        store.add_tasks(&c, &value, &tasks, std::slice::from_ref(&event))
                    })
                    .await?;
                    observer(&doc);
                    saved_at = Some(tokio::time::Instant::now());
                    unsaved = false;
                    continue;
                }
            }
        }
        let done = planning_failed.is_some()
            || (!unplanned
                && !records.is_empty()
                && records
                    .iter()
                    .all(|r| matches!(r.status.as_str(), "completed" | "failed" | "cancelled")));
        if done {
            let failed = doc.count(TaskStatus::Failed)
                + doc.count(TaskStatus::Cancelled)
                + usize::from(planning_failed.is_some());
            let shut = failed > 0
                && crate::pg::retry_io(lease, "read the team", || {
                    store.shutdown_requested(&c.team)
                })
                .await?;
            let mut from = doc.phase;
            (doc.phase, doc.reason) = match (failed, shut, planning_failed) {
                (0, _, _) => (Phase::Completed, None),
                (_, true, _) => (Phase::Shutdown, Some("shutdown requested".to_string())),
                (_, false, Some(why)) => (Phase::Failed, Some(format!("planning failed: {why}"))),
                (n, false, None) => (Phase::Failed, Some(format!("{n} task(s) did not complete"))),
            };
            // An integrator turn that changed nothing left its conflict.
            if let (Some(why), Phase::Completed) = (idle_integrator(&records), doc.phase) {
                doc.phase = Phase::Failed;
                doc.reason = Some(why);
            }
            // The tasks' work, merged and delivered on branch omk/<team>.
            if let Some(w) = doc.worktree.clone() {
                let commits = task_commits(&records);
                let (code, team, dir) = (
                    SharedCode::from_record(&w),
                    c.team.clone(),
                    site.scratch.clone(),
                );
                let merged = tokio::task::spawn_blocking(move || {
                    super::shared::integrate(&dir, &code, &team, &commits)
                })
                .await
                .map_err(|e| Error::Agent(format!("the integration task stopped: {e}")))?;
                match merged {
                    Ok(m) => {
                        if let (Some(x), Phase::Completed) = (&m.conflict, doc.phase) {
                            match after_conflict(store, &c, &doc, &records, x, lease).await? {
                                // Back to work: the run goes on.
                                None => {
                                    doc.phase = from;
                                    doc.reason = None;
                                    continue;
                                }
                                Some(why) => {
                                    doc.phase = Phase::Failed;
                                    doc.reason = Some(why);
                                }
                            }
                        }
                        let r = doc.worktree.get_or_insert(w);
                        r.integrated_commit = m.head;
                        r.attempts = m.attempts;
                        r.branch = Some(format!("omk/{}", c.team));
                    }
                    Err(e) => {
                        doc.phase = Phase::Failed;
                        doc.reason = Some(format!("cannot integrate the tasks' work: {e}"));
                    }
                }
            }
            doc.ended_at = Some(Utc::now());
            doc.updated_at = Utc::now();
            // The required gates, on the integrated commit.
            let no_gates = records.iter().any(|r| r.spec["no_gates"] == true);
            let gates = if doc.phase != Phase::Completed {
                GatesOutcome::Skipped("not every task completed, so the gates were not run".into())
            } else if no_gates {
                GatesOutcome::Skipped("skipped by request (--no-gates)".into())
            } else if let Some(w) = doc.worktree.clone() {
                doc.phase = Phase::Verifying;
                doc.updated_at = Utc::now();
                let verifying = Event::new(
                    &c.team,
                    EventKind::PhaseChanged,
                    Some(&c.holder),
                    json!({ "from": from, "to": Phase::Verifying }),
                );
                let value = to_value(&doc)?;
                crate::pg::retry_io(lease, "save the team", || {
                    store.save_team(&c, &value, std::slice::from_ref(&verifying))
                })
                .await?;
                observer(&doc);
                from = Phase::Verifying;
                let gates = verify(site, &c.team, &w).await;
                if let Some(r) = doc.worktree.as_mut() {
                    r.gates_commit = Some(r.integrated_commit.clone());
                }
                (doc.phase, doc.reason) = match gates.failure() {
                    Some(why) => (Phase::Failed, Some(why)),
                    None => (Phase::Completed, None),
                };
                gates
            } else {
                GatesOutcome::Skipped(
                    "the team has no shared code (it was not submitted from a git work tree), \
                     so there is nothing to verify"
                        .into(),
                )
            };
            doc.updated_at = Utc::now();
            let proof = super::proof::document(&doc, &gates);
            // Each gate's result, then the end, in the run's last write.
            let mut events: Vec<Event> = gates
                .events()
                .into_iter()
                .map(|(kind, payload)| Event::new(&c.team, kind, Some(&c.holder), payload))
                .collect();
            events.extend([
                Event::new(
                    &c.team,
                    EventKind::PhaseChanged,
                    Some(&c.holder),
                    json!({ "from": from, "to": doc.phase }),
                ),
                Event::new(
                    &c.team,
                    EventKind::RunCompleted,
                    Some(&c.holder),
                    json!({ "phase": doc.phase, "reason": doc.reason, "tokens": doc.tokens }),
                ),
            ]);
            if doc.phase == Phase::Completed {
                events.push(Event::new(
                    &c.team,
                    EventKind::ProofWritten,
                    Some(&c.holder),
                    json!({ "store": doc.state_dir }),
                ));
            }
            let value = to_value(&doc)?;
            crate::pg::retry_io(lease, "end the run", || {
                store.end_team(&c, &value, &events, Some(&proof))
            })
            .await?;
            observer(&doc);
            return Ok(doc);
        }
        let save_at = saved_at.map_or_else(tokio::time::Instant::now, |t| t + SAVE_INTERVAL);
        if unsaved && save_at <= tokio::time::Instant::now() {
            doc.updated_at = Utc::now();
            match store.save_team(&c, &to_value(&doc)?, &[]).await {
                Ok(()) => {
                    observer(&doc);
                    unsaved = false;
                }
                // Saved with the next change or look.
                Err(e) if e.code() == ErrorCode::Io => {
                    tracing::warn!("cannot save team {}: {e}", c.team)
                }
                Err(e) => return Err(e),
            }
            saved_at = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = changes.changed_past(seen, RECHECK) => {}
            _ = tokio::time::sleep_until(save_at), if unsaved => {}
            _ = renew.tick() => match store.renew_coordination(&c, lease).await {
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::Conflict => return Err(e),
                Err(e) => tracing::warn!("cannot renew the coordination of {}: {e}", c.team),
            },
        }
    }
}

/// Where a coordinator works: a scratch directory (its mirror of the
/// team's repository, the gates' checkout and their artifacts), and the
/// state root whose circuit breakers the gates go through.
#[derive(Debug, Clone)]
pub struct Site {
    pub scratch: PathBuf,
    pub paths: crate::paths::StatePaths,
}

/// Run the required gates of the integrated commit, in a worktree of the
/// coordinator's mirror.
async fn verify(site: &Site, team: &str, w: &IsolationRecord) -> GatesOutcome {
    let (site, team, code, head) = (
        site.clone(),
        team.to_string(),
        SharedCode::from_record(w),
        w.integrated_commit.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let dir = match super::shared::checkout_commit(&site.scratch, &code, &head) {
            Ok(d) => d,
            Err(e) => return GatesOutcome::Error(format!("no worktree for the gates: {e}")),
        };
        let artifacts = site.scratch.join("gate-artifacts").join(&team);
        super::proof::verify(&site.paths, &dir, &artifacts)
    })
    .await
    .unwrap_or_else(|e| GatesOutcome::Error(format!("the gate runner stopped: {e}")))
}

/// The pushed work of each completed task, in task order.
/// The files an integrator turn of task `r` had to resolve (none: not one).
fn resolving(r: &TaskRecord) -> Vec<String> {
    r.spec["resolving"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Why the team fails when an integrator turn completed without changing
/// anything (its conflict stays), if one did.
fn idle_integrator(records: &[TaskRecord]) -> Option<String> {
    records.iter().find_map(|r| {
        let files = resolving(r);
        let changed = r.result.as_ref().is_some_and(|x| x["commit"].is_string());
        (r.status == "completed" && !files.is_empty() && !changed).then(|| {
            format!(
                "{}'s changes conflict with integrated work in {} and the integrator changed nothing",
                r.id,
                files.join(", ")
            )
        })
    })
}

/// A task's work conflicted at integration (`x`): send it back to work on
/// the integrated head with the conflict in its prompt, at most its
/// `conflict_retries` times, then to an integrator turn on the merge with
/// markers (`None`: reopened, the run goes on); or, when an integrator's
/// resolution still conflicts, why the team fails.
async fn after_conflict(
    store: &PgStore,
    c: &Coordination,
    doc: &TeamDoc,
    records: &[TaskRecord],
    x: &super::shared::Conflicted,
    lease: Duration,
) -> Result<Option<String>> {
    let files = x.files.join(", ");
    let Some(r) = records.iter().find(|r| r.id == x.task) else {
        return Ok(Some(format!(
            "{} conflicts with integrated work in {files}",
            x.task
        )));
    };
    let (Some(marked), true) = (&x.marked_commit, resolving(r).is_empty()) else {
        return Ok(Some(match &x.marked_commit {
            None => format!(
                "{}: the integrator left conflict markers in {files}",
                x.task
            ),
            Some(_) => format!(
                "{}'s changes still conflict with integrated work in {files} after an \
                 integrator turn",
                x.task
            ),
        }));
    };
    let (Some(url), Some(i)) = (
        r.spec["repo"]["url"].as_str(),
        doc.tasks.iter().position(|t| t.id == x.task),
    ) else {
        return Ok(Some(format!(
            "{} conflicts with integrated work in {files}",
            x.task
        )));
    };
    let retries = r.spec["conflict_retries"].as_u64().unwrap_or(2);
    let count = r.spec["conflicts"].as_u64().unwrap_or(0) + 1;
    let retry = count <= retries;
    let (patch, prompt) = if retry {
        let patch = json!({ "repo": { "url": url, "base": x.head }, "conflicts": count });
        (
            patch,
            (super::isolation::redo_note(&x.files, &x.context), true),
        )
    } else {
        let patch = json!({ "repo": { "url": url, "base": marked }, "conflicts": count,
                            "resolving": x.files, "role": "integrator" });
        let prompt = super::isolation::integrator_prompt(
            None,
            &doc.task,
            (i + 1, doc.tasks.len()),
            &doc.tasks[i].title,
            &x.files,
            &x.context,
        );
        (patch, (prompt, false))
    };
    let evidence = format!(
        "attempt {}: its changes conflict with integrated work in {files}",
        x.attempt
    );
    let event = Event::new(
        &c.team,
        EventKind::IntegrationConflict,
        Some(&c.holder),
        json!({ "task_id": x.task, "conflicts": count, "conflict_retries": retries,
                "files": x.files, "messages": x.messages, "marked_commit": marked,
                "retry": true, "next": if retry { "retry" } else { "integrator" } }),
    );
    let prompt = (prompt.0.as_str(), prompt.1);
    crate::pg::retry_io(lease, "reopen a conflicting task", || {
        store.reopen_task(
            c,
            &x.task,
            &patch,
            prompt,
            &evidence,
            std::slice::from_ref(&event),
        )
    })
    .await?;
    Ok(None)
}

fn task_commits(records: &[TaskRecord]) -> Vec<TaskCommit> {
    records
        .iter()
        .filter(|r| r.status == "completed" && r.id != PLAN_TASK)
        .filter_map(|r| {
            let res = r.result.as_ref()?;
            Some(TaskCommit {
                task: r.id.clone(),
                attempt: r.attempts.max(0) as u32,
                commit: res["commit"].as_str()?.to_string(),
                start: r.spec["repo"]["base"].as_str()?.to_string(),
                resolving: resolving(r),
                files: res["files"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A team's document in the store (`None`: no such team).
pub async fn team(store: &PgStore, name: &str) -> Result<Option<TeamDoc>> {
    match crate::seam::Documents::get(store, name).await? {
        Some(v) => decode(store, name, v.doc).map(Some),
        None => Ok(None),
    }
}

/// A team document as the store keeps it, decoded; `corrupt_state` naming
/// the store and the team when it is not one.
pub fn decode(store: &PgStore, name: &str, doc: Value) -> Result<TeamDoc> {
    serde_json::from_value(doc).map_err(|e| Error::CorruptState {
        path: PathBuf::from(format!("{}#{name}", store.shown())),
        message: format!("not a team document: {e}"),
    })
}

fn to_value(doc: &TeamDoc) -> Result<Value> {
    serde_json::to_value(doc)
        .map_err(|e| Error::invalid(format!("cannot encode the team document: {e}")))
}
