//! The supervisor: plans a team run, schedules its tasks over workers with
//! leases and retries, and records everything (DESIGN.md §7). The workers
//! live in `worker`, the planner turn in `plan`, and the disk writes in
//! `persist`.
//!
//! One supervisor process owns a run: it alone writes `team.json`,
//! `events.jsonl` and the worker files. Other processes talk to it through
//! `shutdown.json` and read what it writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::board;
use super::doc::{Phase, TaskEntry, TaskStatus, TeamDoc};
use super::isolation::{AttemptCommit, Integration, Integrator, Isolation};
use super::persist::Persister;
use super::plan::plan;
use super::proof::GatesOutcome;
use super::spec::role_instructions;
use super::worker::Worker;
use crate::agent::{self, AgentSpec, ApprovalPolicy};
use crate::config::Config;
use crate::error::Result;
use crate::events::{Event, EventKind, EventLog};
use crate::metrics::Counter;
use crate::paths::StatePaths;
use crate::pool::{Owner, Pools};
use crate::process::ProcessId;
use crate::seam::{AfterFailure, Lease};
use crate::store::{self, Document};

/// Longest task summary kept in the team document.
pub const SUMMARY_MAX_CHARS: usize = 2000;
/// Per-worker transcript cap before rotation (one older generation kept).
pub const TRANSCRIPT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Called with the team document after every change (progress display).
pub type Observer = Arc<dyn Fn(&TeamDoc) + Send + Sync>;

/// A stop request, written by `team shutdown` as `shutdown.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownRequest {
    pub version: u32,
    pub force: bool,
    pub requested_at: chrono::DateTime<Utc>,
    pub requested_by: u32,
}

impl Document for ShutdownRequest {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "shutdown request";
}

pub(super) struct Run {
    /// The document; its tasks are the run's task records
    /// ([`super::board`]).
    pub(super) doc: TeamDoc,
    /// Why the pool refused a worker, if it did.
    pub(super) not_admitted: Option<String>,
    /// Per task: its integration conflicts so far.
    pub(super) conflicts: Vec<Conflicts>,
}

/// A task's integration conflicts (`--isolation worktree`).
#[derive(Debug, Clone, Default)]
pub(super) struct Conflicts {
    pub(super) count: u32,
    /// The last one's files and what the next attempt's prompt says of it.
    pub(super) last: Option<(Vec<String>, String)>,
    /// Set when the conflict retries are spent: the next attempts are
    /// integrator turns starting from this merge with conflict markers.
    pub(super) resolve: Option<Resolve>,
}

/// An integrator turn's starting point: the merge with markers.
#[derive(Debug, Clone)]
pub(super) struct Resolve {
    pub(super) commit: String,
    pub(super) files: Vec<String>,
}

/// Everything the workers of one run share.
pub struct RunContext {
    pub(super) paths: StatePaths,
    /// Skip the Verifying gates (`--no-gates`).
    pub(super) no_gates: bool,
    pub(super) config: Config,
    pub(super) run: Mutex<Run>,
    /// The run's name (also every event's run id).
    pub(super) name: String,
    pub(super) persister: Persister,
    /// Woken whenever a task changes state, so idle workers re-check the
    /// queue at once instead of polling.
    pub(super) task_changed: tokio::sync::Notify,
    pub(super) observer: Option<Observer>,
    pub(super) shutdown: watch::Receiver<Option<bool>>,
    pub(super) policy: ApprovalPolicy,
    /// Every agent profile of the run, resolved when it was prepared.
    pub(super) agents: std::collections::BTreeMap<String, crate::agents::Resolved>,
    /// The profile of the planner turn.
    pub(super) planner_agent: String,
    /// The project's MCP servers, for ACP agents' sessions.
    pub(super) mcp_servers: Vec<Value>,
    pub(super) pools: Pools,
    pub(super) subtasks: Vec<String>,
    /// `shutdown.json`, read directly when the watcher has not yet
    /// published a request.
    pub(super) shutdown_file: PathBuf,
    /// The git side of a `--isolation worktree` run.
    pub(super) integrator: Option<Arc<Integrator>>,
    /// Where an isolated run's result goes.
    pub(super) deliver: super::isolation::Deliver,
}

pub(super) enum Claim {
    /// Task `i`, held under this lease.
    Task(usize, Lease),
    /// Nothing claimable now; a task may become claimable at the given
    /// time (a retry time, a lease deadline), or something may fail and
    /// come back.
    Wait(Option<Instant>),
    Done,
}

impl RunContext {
    /// Load the prepared run and everything needed to drive it.
    pub(crate) fn new(
        paths: StatePaths,
        config: Config,
        doc: TeamDoc,
        request: super::StoredRequest,
        approver: Option<agent::Approver>,
        observer: Option<Observer>,
        shutdown: watch::Receiver<Option<bool>>,
    ) -> Result<RunContext> {
        let super::StoredRequest {
            subtasks,
            agents,
            planner_agent,
            mcp_servers,
            no_gates,
            deliver,
            ..
        } = request;
        let policy = ApprovalPolicy {
            kind: crate::agent::PolicyKind::parse(&doc.approval_policy)?,
            allow_commands: config.agent.allow_commands.clone(),
            host: approver,
        };
        let persister = Persister::start(
            EventLog::open(&doc.state_dir.join("events.jsonl"))?,
            paths.metrics(),
        )?;
        let mut doc = doc;
        let integrator = match doc.isolation {
            Isolation::None => None,
            Isolation::Worktree => {
                let repo = crate::git::Repo::discover(&doc.workdir)?.ok_or_else(|| {
                    crate::error::Error::invalid(format!(
                        "{} is not in a git work tree",
                        doc.workdir.display()
                    ))
                })?;
                let it = Integrator::start(
                    repo.with_lfs(config.team.worktree.lfs),
                    &doc.workdir,
                    &doc.name,
                    doc.state_dir.join("worktrees"),
                )?;
                doc.worktree = Some(it.record());
                Some(Arc::new(it))
            }
        };
        let n = doc.tasks.len();
        let name = doc.name.clone();
        let shutdown_file = doc.state_dir.join("shutdown.json");
        Ok(RunContext {
            pools: Pools::new(paths.clone(), config.clone()),
            paths,
            no_gates,
            config,
            run: Mutex::new(Run {
                doc,
                not_admitted: None,
                conflicts: vec![Conflicts::default(); n],
            }),
            name,
            persister,
            task_changed: tokio::sync::Notify::new(),
            observer,
            shutdown,
            policy,
            agents,
            planner_agent,
            mcp_servers,
            subtasks,
            shutdown_file,
            integrator,
            deliver,
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn name(&self) -> String {
        self.name.clone()
    }

    pub fn doc(&self) -> TeamDoc {
        self.lock().doc.clone()
    }

    /// Mutate the document, hand it to the persister, tell the observer.
    pub(super) fn update<R>(&self, f: impl FnOnce(&mut Run) -> R) -> R {
        let mut run = self.lock();
        let out = f(&mut run);
        self.publish(run);
        out
    }

    /// [`RunContext::update`] when `f` returns `Some`; when it returns
    /// `None` nothing changed and nothing is written.
    pub(super) fn update_if<R>(&self, f: impl FnOnce(&mut Run) -> Option<R>) -> Option<R> {
        let mut run = self.lock();
        let out = f(&mut run)?;
        self.publish(run);
        Some(out)
    }

    /// Persist the changed document and show it to the observer (after the
    /// lock is released).
    fn publish(&self, mut run: std::sync::MutexGuard<'_, Run>) {
        run.doc.updated_at = Utc::now();
        // One copy, shared by the persister and the observer.
        let doc = Arc::new(run.doc.clone());
        let persisted = doc.clone();
        // Handed over under the lock, so versions reach the persister in
        // order; encoded by the persister, and only if not superseded.
        self.persister.document(
            TeamDoc::file(&doc.state_dir),
            Box::new(move || store::encode_doc(&*persisted)),
        );
        drop(run);
        if let Some(obs) = &self.observer {
            obs(&doc);
        }
    }

    pub(super) fn emit(&self, kind: EventKind, actor: Option<&str>, payload: Value) {
        self.persister
            .event(Event::new(&self.name, kind, actor, payload));
    }

    /// A task changed state: wake the workers waiting for one.
    pub(super) fn tasks_changed(&self) {
        self.task_changed.notify_waiters();
    }

    pub(super) fn count(&self, deltas: &[(Counter, u64)]) {
        self.persister.count(deltas);
    }

    /// `Some(force)` once a stop was asked for, as the shutdown watcher
    /// published it (within about a millisecond of the request).
    pub(super) fn shutdown_requested(&self) -> Option<bool> {
        *self.shutdown.borrow()
    }

    /// [`RunContext::shutdown_requested`], and if nothing was published yet,
    /// `shutdown.json` itself: `shutdown --force` kills the agents right
    /// after writing it, possibly before the watcher has published it, and
    /// the turn that dies of that kill must not count as a failed attempt.
    /// For such verdicts only: hot loops use the published value.
    pub(super) fn shutdown_requested_now(&self) -> Option<bool> {
        self.shutdown_requested().or_else(|| {
            store::read_doc::<ShutdownRequest>(&self.shutdown_file)
                .ok()
                .flatten()
                .map(|r| r.force)
        })
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        let from = self.update(|r| std::mem::replace(&mut r.doc.phase, phase));
        if from != phase {
            self.emit(
                EventKind::PhaseChanged,
                Some("supervisor"),
                json!({ "from": from, "to": phase }),
            );
        }
    }

    /// Whether a task is pending (claimable now, or after its backoff): work
    /// a worker not yet admitted could still do.
    pub(super) fn work_pending(&self) -> bool {
        self.lock()
            .doc
            .tasks
            .iter()
            .any(|t| t.status == TaskStatus::Pending)
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.config.team.lease_secs.max(1))
    }

    /// Claim the first claimable task for `worker` ([`board::claim`]); the
    /// look and the claim under one lock, so two idle workers woken by the
    /// same change never take the same task. Tasks whose lease expired are
    /// taken back first.
    pub(super) fn claim(&self, worker: &str) -> Claim {
        let max = self.config.team.max_attempts;
        let ttl = self.lease_ttl();
        let mut found = board::Found::Done;
        let mut expired = Vec::new();
        let claimed = self.update_if(|r| {
            let agent = r
                .doc
                .workers
                .iter()
                .find(|w| w.id == worker)
                .map(|w| w.agent.clone());
            let now = Utc::now();
            (found, expired) =
                board::claim(&mut r.doc.tasks, worker, agent.as_deref(), max, ttl, now);
            let lease = match found {
                board::Found::Task(i) => Some(board::lease_of(&self.name, &r.doc.tasks, i)),
                _ => None,
            };
            let evidence: Vec<Vec<String>> = expired
                .iter()
                .map(|x| r.doc.tasks[x.index].errors.clone())
                .collect();
            (lease.is_some() || !expired.is_empty()).then_some((lease, evidence))
        });
        let mut lease = None;
        if let Some((l, evidence)) = claimed {
            lease = l;
            self.expired(&expired, evidence, worker);
        }
        match (found, lease) {
            (board::Found::Task(i), Some(lease)) => {
                self.emit(
                    EventKind::TaskClaimed,
                    Some(worker),
                    json!({ "task_id": lease.task, "attempt": lease.attempt, "epoch": lease.epoch,
                            "lease_secs": ttl.as_secs() }),
                );
                Claim::Task(i, lease)
            }
            (board::Found::Wait(at), _) => Claim::Wait(
                at.map(|at| Instant::now() + (at - Utc::now()).to_std().unwrap_or_default()),
            ),
            _ => Claim::Done,
        }
    }

    /// The events of leases a claim found expired (their holder stopped
    /// renewing them).
    fn expired(&self, expired: &[board::Expired], evidence: Vec<Vec<String>>, by: &str) {
        for (x, evidence) in expired.iter().zip(evidence) {
            self.emit(
                EventKind::LeaseExpired,
                Some(by),
                json!({ "task_id": x.task, "epoch": x.epoch, "attempt": x.attempt,
                        "holder": x.holder }),
            );
            if x.failed {
                self.emit(
                    EventKind::TaskFailed,
                    Some(by),
                    json!({ "task_id": x.task, "attempts": x.attempt, "epoch": x.epoch,
                            "reason": "lease expired on the last attempt", "evidence": evidence }),
                );
                self.count(&[(Counter::TasksFailed, 1)]);
            }
        }
        if !expired.is_empty() {
            self.tasks_changed();
        }
    }

    /// Extend `lease` by the run's lease length; refused (`conflict`) once
    /// it no longer holds its task.
    pub(super) fn renew(&self, lease: &mut Lease) -> Result<()> {
        let ttl = self.lease_ttl();
        let mut refused = None;
        self.update_if(
            |r| match board::renew(&mut r.doc.tasks, lease, ttl, Utc::now()) {
                Ok(()) => Some(()),
                Err(e) => {
                    refused = Some(e);
                    None
                }
            },
        );
        refused.map_or(Ok(()), Err)
    }

    /// Run `f` on the task `lease` holds, under the lock, and persist; or,
    /// when the lease no longer holds it, change nothing and say so (a late
    /// write of a worker whose lease was taken over).
    fn held<R>(
        &self,
        lease: &Lease,
        doing: &str,
        f: impl FnOnce(&mut Run, usize) -> R,
    ) -> Option<R> {
        let mut refused = None;
        let out = self.update_if(
            |r| match board::held(&r.doc.tasks, lease, doing, Utc::now()) {
                Ok(i) => Some(f(r, i)),
                Err(e) => {
                    refused = Some(e);
                    None
                }
            },
        );
        // The claim that took the task over said so (`lease_expired`).
        if let Some(e) = refused {
            tracing::warn!("{e}");
        }
        out
    }

    pub(super) fn task_title(&self, i: usize) -> (String, String, u32) {
        let run = self.lock();
        let t = &run.doc.tasks[i];
        (t.id.clone(), t.title.clone(), t.attempts)
    }

    /// The merge with conflict markers task `i`'s integrator turn starts
    /// from, once its conflict retries are spent.
    pub(super) fn resolving(&self, i: usize) -> Option<String> {
        self.lock().conflicts[i]
            .resolve
            .as_ref()
            .map(|c| c.commit.clone())
    }

    /// Where `worker`'s agent works: its worktree, or the work dir.
    pub(super) fn work_dir(&self, worker: &str) -> PathBuf {
        match &self.integrator {
            Some(it) => it.work_dir(worker),
            None => self.lock().doc.workdir.clone(),
        }
    }

    pub(super) fn prompt_for(&self, i: usize, role: &str, worker: &str) -> String {
        let workdir = self.work_dir(worker);
        let run = self.lock();
        let d = &run.doc;
        let t = &d.tasks[i];
        let c = &run.conflicts[i];
        let context = c.last.as_ref().map(|l| l.1.as_str()).unwrap_or_default();
        if let Some(res) = &c.resolve {
            return super::isolation::integrator_prompt(
                Some(&workdir),
                &d.task,
                (i + 1, d.tasks.len()),
                &t.title,
                &res.files,
                context,
            );
        }
        let conflict = match &c.last {
            Some((files, context)) => super::isolation::redo_note(files, context),
            None => String::new(),
        };
        format!(
            "You work in an omk team as its {role}, in {workdir}.\n{instructions}\n\n\
             Overall task: {task}\n\nYour subtask ({n} of {total}): {title}\n\n\
             When you are done, reply with a short summary of what you changed and how you checked it.{conflict}",
            role = role,
            workdir = workdir.display(),
            instructions = role_instructions(role),
            task = d.task,
            n = i + 1,
            total = d.tasks.len(),
            title = t.title,
        )
    }

    pub(super) fn complete(&self, lease: &Lease, outcome: &agent::TurnOutcome, tokens: u64) {
        let summary = summarize(&outcome.record.text);
        let done = self.held(lease, "complete", |r, i| {
            let t = &mut r.doc.tasks[i];
            board::complete(t, Utc::now());
            t.summary = Some(summary.clone());
            t.tokens += tokens;
            r.doc.tokens += tokens;
        });
        if done.is_none() {
            return;
        }
        self.emit(
            EventKind::TaskCompleted,
            Some(&lease.holder),
            json!({
                "task_id": lease.task,
                "attempt": lease.attempt,
                "epoch": lease.epoch,
                "tokens": tokens,
                "steps": outcome.record.steps,
                "tool_calls": outcome.record.tool_calls,
                "unknown_events": outcome.record.unknown_events,
                "protocol_violations": outcome.protocol_violations,
                "summary": summary,
            }),
        );
        self.count(&[(Counter::TasksCompleted, 1)]);
        self.tasks_changed();
    }

    /// Isolated runs: finish a task whose turn ended well by integrating
    /// its attempt's commit first; a conflict sends it back (or fails it).
    pub(super) async fn integrate_and_complete(
        &self,
        i: usize,
        lease: &Lease,
        outcome: &agent::TurnOutcome,
        tokens: u64,
        attempt: Option<AttemptCommit>,
    ) {
        let Some(it) = self.integrator.clone() else {
            return self.complete(lease, outcome, tokens);
        };
        // A late writer's work is not merged: its task was taken over.
        if let Err(e) = board::held(&self.lock().doc.tasks, lease, "integrate", Utc::now()) {
            return tracing::warn!("{e}");
        }
        let worker = lease.holder.as_str();
        let (id, resolving) = {
            let r = self.lock();
            (r.doc.tasks[i].id.clone(), r.conflicts[i].resolve.clone())
        };
        if let Some(res) = resolving {
            // An integrator turn: it must have left no marker behind.
            let Some(a) = &attempt else {
                let why = "the integrator changed nothing".to_string();
                return self.unresolved(i, lease, &res.files, &why, tokens);
            };
            let (it, commit, files) = (it.clone(), a.commit.clone(), res.files.clone());
            match tokio::task::spawn_blocking(move || it.unresolved(&commit, &files)).await {
                Ok(Ok(left)) if left.is_empty() => {}
                Ok(Ok(left)) => {
                    let why = "the integrator left conflict markers".to_string();
                    return self.unresolved(i, lease, &left, &why, tokens);
                }
                Ok(Err(e)) => {
                    let why = format!("checking the resolution failed: {e}");
                    return self.attempt_failed(lease, &why, tokens);
                }
                Err(e) => {
                    let why = format!("the integrator stopped: {e}");
                    return self.attempt_failed(lease, &why, tokens);
                }
            }
        }
        let Some(a) = attempt else {
            return self.complete(lease, outcome, tokens);
        };
        let task = id.clone();
        let files = a.files.clone();
        let merged = tokio::task::spawn_blocking(move || it.integrate(&task, &a)).await;
        match merged {
            Ok(Ok(Integration::Integrated { commit })) => {
                self.update(|r| {
                    if let (Some(w), Some(it)) = (&mut r.doc.worktree, &self.integrator) {
                        *w = it.record();
                    }
                });
                self.emit(
                    EventKind::TaskIntegrated,
                    Some(worker),
                    json!({ "task_id": id, "commit": commit, "files": files }),
                );
            }
            Ok(Ok(Integration::Unchanged)) => {
                self.emit(
                    EventKind::TaskIntegrated,
                    Some(worker),
                    json!({ "task_id": id, "commit": null, "files": files, "unchanged": true }),
                );
            }
            Ok(Ok(Integration::Conflict {
                marked_commit,
                files,
                messages,
                marked,
                theirs,
            })) => {
                let note = super::isolation::conflict_context(&messages, &marked, &theirs);
                let conflict = Resolve {
                    commit: marked_commit,
                    files,
                };
                return self.conflicted(i, lease, conflict, &messages, note, tokens);
            }
            Ok(Err(e)) => {
                return self.attempt_failed(lease, &format!("integration failed: {e}"), tokens)
            }
            Err(e) => {
                return self.attempt_failed(lease, &format!("the integrator stopped: {e}"), tokens)
            }
        }
        self.complete(lease, outcome, tokens)
    }

    /// The task's changes conflict with integrated work: redo it on the
    /// new head with the conflict in its prompt, at most
    /// `[team] conflict_retries` times; then an integrator turn resolves
    /// the merge with markers; a resolution that conflicts again fails the
    /// task with the conflict as evidence.
    fn conflicted(
        &self,
        i: usize,
        lease: &Lease,
        conflict: Resolve,
        messages: &str,
        note: String,
        tokens: u64,
    ) {
        let max = self.config.team.conflict_retries;
        let files = conflict.files.clone();
        let worker = lease.holder.as_str();
        let Some((id, n, next)) = self.held(lease, "record a conflict of", |r, i| {
            let t = &mut r.doc.tasks[i];
            t.lease_deadline = None;
            t.tokens += tokens;
            r.doc.tokens += tokens;
            let c = &mut r.conflicts[i];
            c.count += 1;
            let next = if c.resolve.is_some() {
                "fail"
            } else if c.count <= max {
                "retry"
            } else {
                "integrator"
            };
            t.errors.push(format!(
                "attempt {}: {} conflict with integrated work in {}",
                t.attempts,
                if c.resolve.is_some() {
                    "the integrator's resolution still has changes that"
                } else {
                    "its changes"
                },
                files.join(", ")
            ));
            c.last = Some((files.clone(), note.clone()));
            match next {
                "fail" => {
                    t.status = TaskStatus::Failed;
                    t.summary = Some(format!(
                        "its changes still conflict with integrated work in {} after {max} \
                         conflict retries and an integrator turn",
                        files.join(", ")
                    ));
                    t.finished_at = Some(Utc::now());
                }
                "integrator" => {
                    c.resolve = Some(conflict.clone());
                    t.status = TaskStatus::Pending;
                }
                _ => t.status = TaskStatus::Pending,
            }
            (t.id.clone(), c.count, next)
        }) else {
            return;
        };
        self.emit(
            EventKind::IntegrationConflict,
            Some(worker),
            json!({ "task_id": id, "conflicts": n, "conflict_retries": max, "files": files,
                    "messages": messages, "marked_commit": conflict.commit,
                    "retry": next != "fail", "next": next }),
        );
        if next == "fail" {
            self.task_failed_by_conflict(i, lease, &files, &[]);
        }
        self.tasks_changed();
    }

    /// An integrator turn left the conflict unresolved (`why`, in `left`):
    /// the task fails with the conflict as evidence.
    fn unresolved(&self, i: usize, lease: &Lease, left: &[String], why: &str, tokens: u64) {
        let done = self.held(lease, "record a conflict of", |r, i| {
            let t = &mut r.doc.tasks[i];
            t.lease_deadline = None;
            t.tokens += tokens;
            r.doc.tokens += tokens;
            t.errors.push(format!(
                "attempt {}: {why} in {}",
                t.attempts,
                left.join(", ")
            ));
            t.status = TaskStatus::Failed;
            t.summary = Some(format!(
                "its changes conflict with integrated work in {} and {why}",
                left.join(", ")
            ));
            t.finished_at = Some(Utc::now());
        });
        if done.is_some() {
            self.task_failed_by_conflict(i, lease, left, left);
        }
        self.tasks_changed();
    }

    fn task_failed_by_conflict(&self, i: usize, lease: &Lease, files: &[String], left: &[String]) {
        let (id, evidence, marked) = {
            let r = self.lock();
            let t = &r.doc.tasks[i];
            let marked = r.conflicts[i].resolve.as_ref().map(|c| c.commit.clone());
            (t.id.clone(), t.errors.clone(), marked)
        };
        self.emit(
            EventKind::TaskFailed,
            Some(&lease.holder),
            json!({ "task_id": id, "epoch": lease.epoch, "reason": "integration conflict", "files": files,
                    "unresolved": left, "marked_commit": marked, "evidence": evidence }),
        );
        self.count(&[(Counter::TasksFailed, 1)]);
    }

    /// Record a failed attempt: retry after the backoff (doubling with
    /// each attempt), or fail the task.
    pub(super) fn attempt_failed(&self, lease: &Lease, why: &str, tokens: u64) {
        let max = self.config.team.max_attempts;
        let base = self.config.team.retry_backoff_ms;
        let backoff = Duration::from_millis(
            base.saturating_mul(1u64 << (lease.attempt.max(1) as u32 - 1).min(10)),
        );
        let Some((after, evidence)) = self.held(lease, "fail", |r, i| {
            let t = &mut r.doc.tasks[i];
            t.tokens += tokens;
            r.doc.tokens += tokens;
            let after = board::fail(t, why, max, backoff, Utc::now());
            (after, t.errors.clone())
        }) else {
            return;
        };
        let worker = Some(lease.holder.as_str());
        if after == AfterFailure::Failed {
            self.emit(
                EventKind::TaskFailed,
                worker,
                json!({ "task_id": lease.task, "attempts": lease.attempt, "epoch": lease.epoch,
                        "reason": why, "evidence": evidence }),
            );
            self.count(&[(Counter::TasksFailed, 1)]);
        } else {
            self.emit(
                EventKind::RetryScheduled,
                worker,
                json!({ "task_id": lease.task, "failed_attempt": lease.attempt, "epoch": lease.epoch,
                        "reason": why, "max_attempts": max,
                        "backoff_ms": backoff.as_millis() as u64 }),
            );
        }
        self.tasks_changed();
    }

    /// A task interrupted by shutdown goes back to pending (and ends as
    /// cancelled); the attempt does not count against it.
    pub(super) fn release(&self, lease: &Lease) {
        self.held(lease, "release", |r, i| board::release(&mut r.doc.tasks[i]));
        self.tasks_changed();
    }

    /// Count one turn's usage against agent profile `agent` (the run's
    /// totals are counted where the turn's task is).
    pub(super) fn add_usage(
        &self,
        agent: &str,
        usage: &crate::agent::TokenUsage,
        cost: Option<&crate::agent::protocol::Cost>,
    ) {
        self.update(|r| {
            r.doc.output_tokens += usage.output;
            let a = r.doc.agents.entry(agent.to_string()).or_default();
            a.tokens += usage.total();
            a.output_tokens += usage.output;
            if let Some(c) = cost {
                let total = a.cost.get_or_insert_with(|| crate::agent::protocol::Cost {
                    amount: 0.0,
                    currency: c.currency.clone(),
                });
                total.amount += c.amount;
            }
        });
    }

    /// The profile's environment, plus (isolated) the worker's cache
    /// directories unless the profile sets them itself.
    fn env_for(&self, resolved: &crate::agents::Resolved, worker: &str) -> Vec<(String, String)> {
        let mut env = resolved.env.clone();
        if let Some(it) = &self.integrator {
            for (k, v) in it.cache_env(worker) {
                if !env.iter().any(|(e, _)| *e == k) && std::env::var_os(&k).is_none() {
                    env.push((k, v));
                }
            }
        }
        env
    }

    /// How to start an agent of profile `agent` for this run.
    pub(super) fn agent_spec(&self, agent: &str, worker: &str) -> Result<AgentSpec> {
        let resolved = self.agents.get(agent).ok_or_else(|| {
            crate::error::Error::Agent(format!("the run has no agent profile {agent:?}"))
        })?;
        Ok(AgentSpec {
            program: resolved.program.clone(),
            extra_args: resolved.args.clone(),
            work_dir: self.work_dir(worker),
            env: self.env_for(resolved, worker),
            protocol: resolved.protocol,
            policy: self.policy.clone(),
            start_timeout: resolved.start_timeout(),
            // Let workers ask: the question is dismissed (the team runs
            // unattended) but recorded, and a goal stops on it for a human.
            questions: true,
            mcp_servers: self.mcp_servers.clone(),
        })
    }
}

/// Cut the agent's answer down to a summary (on a char boundary), redacted.
pub(super) fn summarize(text: &str) -> String {
    let text = text.trim();
    let cut: String = text.chars().take(SUMMARY_MAX_CHARS).collect();
    let cut = if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    };
    crate::redact::redact_str(&cut).into_owned()
}

/// Drive a prepared run to its end. Returns the final document.
pub async fn supervise(ctx: Arc<RunContext>) -> Result<TeamDoc> {
    ctx.update(|r| r.doc.supervisor = Some(ProcessId::current()));
    ctx.emit(
        EventKind::RunStarted,
        Some("supervisor"),
        json!({ "spec": ctx.lock().doc.spec, "supervisor_pid": std::process::id() }),
    );

    // Planning.
    let planned = if !ctx.subtasks.is_empty() {
        ctx.subtasks
            .iter()
            .map(|t| super::plan::Planned {
                title: t.clone(),
                files: Vec::new(),
            })
            .collect()
    } else {
        match plan(&ctx).await {
            Ok(planned) => planned,
            Err(reason) => {
                let task = ctx.lock().doc.task.clone();
                ctx.emit(
                    EventKind::PlanFallback,
                    Some("supervisor"),
                    json!({ "reason": reason }),
                );
                vec![super::plan::Planned {
                    title: task,
                    files: Vec::new(),
                }]
            }
        }
    };
    if ctx.shutdown_requested().is_none() {
        ctx.update(|r| {
            r.doc.tasks = planned
                .into_iter()
                .enumerate()
                .map(|(i, p)| TaskEntry {
                    files: p.files,
                    ..TaskEntry::new(i, p.title)
                })
                .collect();
            r.conflicts = vec![Conflicts::default(); r.doc.tasks.len()];
        });
        let tasks = ctx.lock().doc.tasks.clone();
        for t in &tasks {
            ctx.emit(
                EventKind::TaskCreated,
                Some("supervisor"),
                json!({ "task_id": t.id, "title": t.title, "files": t.files }),
            );
        }
        ctx.count(&[(Counter::TasksCreated, tasks.len() as u64)]);

        // Executing.
        ctx.set_phase(Phase::Executing);
        let plan = ctx.lock().doc.workers.clone();
        let mut workers = plan.len().min(tasks.len());
        if let Some(it) = ctx.integrator.clone() {
            let wanted = workers;
            match tokio::task::spawn_blocking(move || it.worktrees_that_fit(wanted)).await {
                Ok(Ok((n, Some(why)))) => {
                    workers = n;
                    ctx.update(|r| r.not_admitted = Some(why.clone()));
                    ctx.emit(
                        EventKind::PoolRejected,
                        Some("supervisor"),
                        json!({ "reason": why, "workers": n, "wanted": wanted, "disk": true }),
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("cannot check the disk for worktrees: {e}"),
                Err(e) => tracing::warn!("the disk check stopped: {e}"),
            }
        }
        let crew: Vec<Worker> = plan[..workers]
            .iter()
            .map(|e| Worker::new(ctx.clone(), e.id.clone(), &e.role, &e.agent))
            .collect();
        // One pool update admits (or queues) every worker, instead of one
        // locked read-modify-write each. On an error each worker asks
        // again, and reports what it gets.
        let owners: Vec<Owner> = crew.iter().map(Worker::owner).collect();
        let pool = ctx.lock().doc.pool.clone();
        let mut answers = ctx
            .pools
            .try_admit_many(&pool, &owners)
            .unwrap_or_default()
            .into_iter();
        let handles: Vec<_> = crew
            .into_iter()
            .map(|w| tokio::spawn(w.run(answers.next())))
            .collect();
        for h in handles {
            if let Err(e) = h.await {
                tracing::error!("worker task failed: {e}");
            }
        }
    }
    finish(&ctx).await
}

async fn finish(ctx: &Arc<RunContext>) -> Result<TeamDoc> {
    let shutdown = ctx.shutdown_requested_now();
    let all_completed = ctx
        .lock()
        .doc
        .tasks
        .iter()
        .all(|t| t.status == TaskStatus::Completed);
    let mut gate_failure = None;
    let gates = if shutdown.is_some() {
        GatesOutcome::Skipped("the run was shut down".into())
    } else if !all_completed {
        ctx.set_phase(Phase::Verifying);
        GatesOutcome::Skipped("not every task completed, so the gates were not run".into())
    } else if ctx.no_gates {
        ctx.set_phase(Phase::Verifying);
        GatesOutcome::Skipped("skipped by request (--no-gates)".into())
    } else {
        ctx.set_phase(Phase::Verifying);
        let outcome = match gate_dir(ctx).await {
            Ok(dir) => verify(ctx, dir).await,
            Err(e) => GatesOutcome::Error(format!("no worktree for the gates: {e}")),
        };
        gate_failure = outcome.failure();
        // Isolated: gates count only on the final integrated commit.
        if let (Some(it), GatesOutcome::Ran(_)) = (&ctx.integrator, &outcome) {
            let r = it.record();
            if r.gates_commit.as_deref() != Some(r.integrated_commit.as_str()) {
                gate_failure = Some(format!(
                    "the gates ran on {}, not on the final integrated commit {}",
                    r.gates_commit.as_deref().unwrap_or("nothing"),
                    r.integrated_commit
                ));
            }
        }
        outcome
    };
    if let Some(it) = ctx.integrator.clone() {
        let may_apply = shutdown.is_none() && all_completed && gate_failure.is_none();
        deliver_and_clean(ctx, it, may_apply).await;
    }
    let final_phase = match (shutdown, all_completed, &gate_failure) {
        (Some(_), _, _) => Phase::Shutdown,
        (None, true, None) => Phase::Completed,
        _ => Phase::Failed,
    };
    ctx.update(|r| {
        for t in &mut r.doc.tasks {
            if matches!(t.status, TaskStatus::Pending | TaskStatus::Running) {
                t.status = TaskStatus::Cancelled;
                t.lease_deadline = None;
                t.retry_at = None;
            }
        }
        r.doc.ended_at = Some(Utc::now());
        r.doc.reason = match final_phase {
            Phase::Shutdown => Some(format!(
                "shut down by request{}",
                if shutdown == Some(true) {
                    " (--force)"
                } else {
                    ""
                }
            )),
            Phase::Failed if gate_failure.is_some() => gate_failure.clone(),
            Phase::Failed => {
                let failed: Vec<String> = r
                    .doc
                    .tasks
                    .iter()
                    .filter(|t| t.status != TaskStatus::Completed)
                    .map(|t| t.id.clone())
                    .collect();
                let refused = r
                    .not_admitted
                    .as_ref()
                    .map(|why| format!("; the pool refused worker(s): {why}"))
                    .unwrap_or_default();
                Some(format!(
                    "task(s) not completed: {}{refused}",
                    failed.join(", ")
                ))
            }
            _ => None,
        };
    });
    ctx.set_phase(final_phase);
    let doc = ctx.doc();
    super::proof::write(&doc, &gates)?;
    let kind = if final_phase == Phase::Completed {
        EventKind::RunCompleted
    } else {
        EventKind::RunFailed
    };
    ctx.emit(
        kind,
        Some("supervisor"),
        json!({ "phase": final_phase, "reason": doc.reason, "tokens": doc.tokens }),
    );
    if final_phase == Phase::Completed {
        ctx.emit(
            EventKind::ProofWritten,
            Some("supervisor"),
            json!({ "path": doc.state_dir.join("proof.json") }),
        );
    }
    // Everything on disk before anyone is told the run is over.
    ctx.persister.flush();
    Ok(doc)
}

/// Where the gates run: the work dir, or for an isolated run a worktree of
/// their own at the integrated commit (never the user's checkout).
async fn gate_dir(ctx: &Arc<RunContext>) -> Result<PathBuf> {
    let Some(it) = ctx.integrator.clone() else {
        return Ok(ctx.lock().doc.workdir.clone());
    };
    // Recorded in `worktree.gates_commit` (and the proof).
    it.gates_on_integrated();
    tokio::task::spawn_blocking(move || -> Result<PathBuf> {
        it.checkout(GATE_WORKTREE, None)?;
        Ok(it.work_dir(GATE_WORKTREE))
    })
    .await
    .map_err(|e| crate::error::Error::Agent(format!("the gate worktree task stopped: {e}")))?
}

/// The worktree the gates of an isolated run use.
const GATE_WORKTREE: &str = "gates";

/// An isolated run's end: the result on branch `omk/<team>` (and, with
/// `--deliver apply` when `may_apply`, in the user's checkout), every
/// worktree removed and pruned (the refs stay).
async fn deliver_and_clean(ctx: &Arc<RunContext>, it: Arc<Integrator>, may_apply: bool) {
    let worker_it = it.clone();
    let dir = ctx.lock().doc.state_dir.clone();
    let mode = ctx.deliver;
    let done = tokio::task::spawn_blocking(move || {
        let branch = worker_it.deliver_branch();
        let result = worker_it.finalize(&dir);
        let (applied, reason) = match (mode, may_apply) {
            (super::isolation::Deliver::Branch, _) => (false, None),
            (_, false) => (
                false,
                Some(
                    "not every task completed and passed the gates, so nothing was applied".into(),
                ),
            ),
            _ => match worker_it.apply() {
                Ok(Ok(())) => (true, None),
                Ok(Err(why)) => (false, Some(why)),
                Err(e) => (false, Some(format!("applying failed: {e}"))),
            },
        };
        worker_it.set_delivery(super::isolation::DeliveryRecord {
            mode,
            branch: branch.as_ref().ok().cloned(),
            applied,
            reason,
        });
        let left = worker_it.cleanup();
        (branch, result, left)
    })
    .await;
    let (branch, result, left) = match done {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("the delivery task stopped: {e}");
            return;
        }
    };
    let record = it.record();
    ctx.update(|r| r.doc.worktree = Some(record.clone()));
    ctx.emit(
        EventKind::WorktreesCleaned,
        Some("supervisor"),
        json!({
            "branch": branch.as_ref().ok(),
            "delivery_error": branch.as_ref().err().map(|e| e.to_string()),
            "integrated_commit": record.integrated_commit,
            "base_commit": record.base_commit,
            "diff_stat": record.result.as_ref().map(|r| r.diff_stat.clone()),
            "result_error": result.err().map(|e| e.to_string()),
            "left_behind": left,
        }),
    );
}

/// Run the required gates of `workdir` (from its `.omk/gates.toml`, else
/// detected), off the async runtime, with artifacts in the team dir.
async fn verify(ctx: &Arc<RunContext>, workdir: PathBuf) -> GatesOutcome {
    let dir = ctx.lock().doc.state_dir.join("gates");
    let paths = ctx.paths.clone();
    let outcome = tokio::task::spawn_blocking(move || super::proof::verify(&paths, &workdir, &dir))
        .await
        .unwrap_or_else(|e| GatesOutcome::Error(format!("the gate runner stopped: {e}")));
    for (kind, payload) in outcome.events() {
        ctx.emit(kind, Some("supervisor"), payload);
    }
    outcome
}

/// How often the shutdown watcher reads `shutdown.json` without having
/// been rung: only a safety net for a request whose ring was lost (another
/// network namespace, a file written by hand).
const SHUTDOWN_SAFETY_RECHECK: Duration = Duration::from_secs(1);

/// The doorbell `team shutdown` rings after writing `shutdown.json` in
/// the team's state directory `dir`.
pub(crate) fn shutdown_doorbell(dir: &std::path::Path) -> String {
    crate::doorbell::name("team-shutdown", dir, None)
}

/// Watch `shutdown.json` and publish requests to the workers: woken by the
/// doorbell `team shutdown` rings ([`crate::doorbell`]), so a request
/// reaches them within a millisecond. Each request noticed is a
/// `shutdown_requested` event saying how it was noticed (`via`:
/// `notification` or `recheck`) and how long after it was written.
pub async fn watch_shutdown(ctx: Arc<RunContext>, tx: watch::Sender<Option<bool>>) {
    let file = ctx.shutdown_file.clone();
    let dir = file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let signal = crate::watch::Signal::new();
    let _doorbell = crate::doorbell::Doorbell::bind(&shutdown_doorbell(&dir), signal.clone())
        .map_err(|e| tracing::debug!("no shutdown doorbell ({e}); requests are read once a second"))
        .ok();
    let mut via = "start";
    loop {
        let seen = signal.generation();
        if let Ok(Some(req)) = store::read_doc::<ShutdownRequest>(&file) {
            let current = *tx.borrow();
            let next = Some(req.force || current == Some(true));
            if current != next {
                let _ = tx.send(next);
                let delay = (Utc::now() - req.requested_at)
                    .num_microseconds()
                    .unwrap_or(0);
                ctx.emit(
                    EventKind::ShutdownRequested,
                    Some("supervisor"),
                    json!({
                        "force": next == Some(true),
                        "requested_at": req.requested_at,
                        "requested_by": req.requested_by,
                        "via": via,
                        "noticed_after_ms": delay.max(0) as f64 / 1000.0,
                    }),
                );
            }
        }
        if tx.is_closed() {
            return;
        }
        via = if signal.changed_past(seen, SHUTDOWN_SAFETY_RECHECK).await > seen {
            "notification"
        } else {
            "recheck"
        };
    }
}
