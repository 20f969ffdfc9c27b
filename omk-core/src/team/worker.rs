//! A worker: one pool slot, one agent at a time, claiming tasks until none
//! is left. It runs each turn under the lease watchdog and the shutdown
//! signal, and turns the agent's notices into transcript lines, events and
//! tallies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::isolation::AttemptCommit;
use super::supervisor::{Claim, RunContext, TRANSCRIPT_MAX_BYTES};
use crate::agent::{self, AgentBackend, AgentNotice, TurnStatus, WireEvent};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::metrics::Counter;
use crate::pool::{Admission, Owner, SlotGuard};
use crate::process::ProcessId;
use crate::seam::Lease;
use crate::store::{self, Document, FsyncPolicy, JsonlWriter};

/// How long a queued worker waits for a wake-up (a release, its doorbell)
/// before it looks at its pool anyway (docs/architecture.md, "How changes
/// propagate"): never on the path of a release, which wakes it at once.
const QUEUE_SAFETY_RECHECK: Duration = Duration::from_secs(2);

/// Why a worker got no pool slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAdmitted {
    /// A shutdown was requested while it waited.
    Stopped,
    /// The pool refused it (recorded as `pool_rejected`).
    Refused,
    /// It was queued, and no task is left for it (`pool_left`).
    NoWork,
}

/// A worker's heartbeat file, rewritten while it lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: u32,
    pub team: String,
    pub worker: String,
    pub supervisor: ProcessId,
    /// The agent process (and process group) while one runs.
    pub agent: Option<ProcessId>,
    pub state: String,
    pub task: Option<String>,
    pub last_agent_activity_at: Option<chrono::DateTime<Utc>>,
    pub tokens: u64,
    pub unknown_events: u64,
    pub protocol_violations: u64,
    pub updated_at: chrono::DateTime<Utc>,
}

impl Document for Heartbeat {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "worker heartbeat";
}

pub(super) enum TurnEnd {
    Finished(agent::TurnOutcome),
    Errored(String),
    LeaseExpired,
    Shutdown,
}

/// Per-agent counters fed by its notice pump.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) tokens: AtomicU64,
    pub(super) unknown: AtomicU64,
    pub(super) violations: AtomicU64,
    pub(super) last_activity_ms: AtomicU64,
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

/// One worker: its slot, its agent, its files.
pub(super) struct Worker {
    pub(super) ctx: Arc<RunContext>,
    pub(super) id: String,
    /// Its role (the prompt's instructions) and agent profile.
    pub(super) role: String,
    pub(super) agent_name: String,
    pub(super) dir: PathBuf,
    pub(super) agent: Option<Arc<dyn AgentBackend>>,
    pub(super) tally: Arc<Tally>,
    pub(super) state: Arc<Mutex<(String, Option<String>)>>,
    /// The running agent's process (recorded once at its start), shared
    /// with the heartbeat task.
    pub(super) agent_process: Arc<Mutex<Option<ProcessId>>>,
    pub(super) transcript: Arc<Transcript>,
}

/// A worker's transcript: created with its first line (a worker that never
/// ran has none), closed when the worker exits.
pub(super) struct Transcript {
    path: PathBuf,
    writer: Mutex<TranscriptWriter>,
}

enum TranscriptWriter {
    Unopened,
    Open(JsonlWriter),
    Closed,
}

impl Transcript {
    fn new(path: PathBuf) -> Arc<Transcript> {
        Arc::new(Transcript {
            path,
            writer: Mutex::new(TranscriptWriter::Unopened),
        })
    }

    /// Append a redacted line.
    pub(super) fn record(&self, kind: &str, data: Value) {
        let mut line = json!({ "ts": Utc::now(), "kind": kind, "data": data });
        crate::redact::redact_value(&mut line);
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let TranscriptWriter::Unopened = *w {
            match JsonlWriter::open(&self.path, FsyncPolicy::Grouped) {
                Ok(opened) => *w = TranscriptWriter::Open(opened.with_cap(TRANSCRIPT_MAX_BYTES)),
                Err(e) => {
                    tracing::warn!("cannot open transcript: {e}");
                    *w = TranscriptWriter::Closed;
                }
            }
        }
        if let TranscriptWriter::Open(w) = &mut *w {
            if let Err(e) = w.append(&line) {
                tracing::warn!("cannot write transcript: {e}");
            }
        }
    }

    /// Closed, not fsynced: a transcript is diagnostics, written as it
    /// comes (so a crash of omk loses none of it); the run's durable record
    /// is its events log.
    fn close(&self) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = TranscriptWriter::Closed;
    }
}

impl Worker {
    /// A worker of `ctx`; its directory and files are made as it writes them.
    pub(super) fn new(ctx: Arc<RunContext>, id: String, role: &str, agent: &str) -> Worker {
        let dir = ctx.lock().doc.state_dir.join("workers").join(&id);
        let transcript = Transcript::new(dir.join("transcript.jsonl"));
        Worker {
            ctx,
            id,
            role: role.to_string(),
            agent_name: agent.to_string(),
            dir,
            agent: None,
            tally: Arc::new(Tally::default()),
            state: Arc::new(Mutex::new(("starting".into(), None))),
            agent_process: Arc::new(Mutex::new(None)),
            transcript,
        }
    }

    pub(super) fn set_state(&self, state: &str, task: Option<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state.to_string(), task);
        self.write_heartbeat(false);
    }

    /// The worker's last state, written at once (as it exits, not in the
    /// flush that ends the run).
    fn set_final_state(&self, state: &str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state.to_string(), None);
        self.write_heartbeat(true);
    }

    /// Queue this worker's heartbeat; `urgent`: skip the persister's
    /// minimum interval.
    pub(super) fn write_heartbeat(&self, urgent: bool) {
        write_heartbeat(
            &self.ctx,
            &self.id,
            &self.dir,
            &self.state,
            &self.tally,
            &self.agent_process,
            urgent,
        );
    }

    pub(super) fn record(&self, kind: &str, data: Value) {
        self.transcript.record(kind, data);
    }

    pub(super) async fn start_agent(&mut self) -> Result<Arc<dyn AgentBackend>> {
        if let Some(a) = &self.agent {
            if a.exit_status().is_none() {
                return Ok(a.clone());
            }
        }
        self.agent = None;
        self.set_state("starting_agent", None);
        let (tx, rx) = crate::agent::notice_channel();
        let started = Instant::now();
        let agent = agent::start(&self.ctx.agent_spec(&self.agent_name, &self.id)?, tx).await?;
        self.tally
            .last_activity_ms
            .store(now_ms(), Ordering::Relaxed);
        tokio::spawn(pump_notices(
            self.ctx.clone(),
            self.id.clone(),
            rx,
            self.tally.clone(),
            self.transcript.clone(),
        ));
        self.ctx.emit(
            EventKind::WorkerStarted,
            Some(&self.id),
            json!({ "agent_pid": agent.pid(), "agent": self.agent_name,
                    "startup_ms": started.elapsed().as_millis() as u64 }),
        );
        self.record(
            "agent_started",
            json!({ "pid": agent.pid(), "agent": self.agent_name }),
        );
        self.agent = Some(agent.clone());
        *self.agent_process.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ProcessId::of(agent.pid()));
        // At once: `team shutdown` of a dead supervisor kills the agents
        // its workers' heartbeats name.
        self.write_heartbeat(true);
        Ok(agent)
    }

    pub(super) async fn drop_agent(&mut self, graceful: bool) {
        if let Some(a) = self.agent.take() {
            let status = if graceful {
                a.stop(Duration::from_secs(self.ctx.config.team.stop_grace_secs))
                    .await
            } else {
                a.kill();
                a.stop(Duration::from_millis(200)).await
            };
            self.ctx.emit(
                EventKind::WorkerExited,
                Some(&self.id),
                json!({ "agent_pid": a.pid(), "exit": status.map(|s| s.to_string()) }),
            );
            self.record(
                "agent_stopped",
                json!({ "pid": a.pid(), "exit": status.map(|s| s.to_string()) }),
            );
        }
        *self.agent_process.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.write_heartbeat(false);
    }

    /// Claim tasks and run them until none is left or shutdown. `first`:
    /// the pool's answer to this worker's first ask, when the supervisor
    /// asked for all of its workers at once.
    pub(super) async fn run(mut self, first: Option<Admission>) {
        let _slot = match self.admit(true, first).await {
            Ok(slot) => slot,
            // Queued while the admitted workers took every task: there is
            // nothing left this worker could do.
            Err(NotAdmitted::NoWork) => {
                self.set_final_state("exited");
                return;
            }
            Err(NotAdmitted::Stopped | NotAdmitted::Refused) => {
                self.set_final_state("not_admitted");
                return;
            }
        };
        let heartbeat = self.spawn_heartbeat();
        let ctx = self.ctx.clone();
        while ctx.shutdown_requested().is_none() {
            // Register for wake-ups before looking, so a change between the
            // look and the wait is not missed.
            let changed = ctx.task_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (i, lease) = match self.ctx.claim(&self.id) {
                Claim::Done => break,
                Claim::Wait(ready_at) => {
                    self.set_state("waiting", None);
                    // Wake for a task change, a backoff ending, or shutdown;
                    // the 1 s bound only guards against a missed wake-up.
                    let until = ready_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                    let mut sd = self.ctx.shutdown.clone();
                    tokio::select! {
                        _ = &mut changed => {}
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = sd.changed() => {}
                    }
                    continue;
                }
                Claim::Task(i, lease) => (i, lease),
            };
            // The lease is renewed while the task is in hand; a silent
            // agent is given up on by the turn's watchdog well before it
            // lapses (the watchdog's limit is the lease's length, and the
            // lease is renewed every third of it).
            let keeper = keep(ctx.clone(), lease.clone());
            tokio::select! {
                biased;
                _ = self.run_task(i, &lease) => {}
                _ = keeper => {}
            }
            // A turn that ended of a shutdown the watcher has not published
            // yet (`--force` kills the agents right after writing the
            // request) released its task: claiming it again would start a
            // new agent for a team that is stopping. One read per task.
            if self.ctx.shutdown_requested_now().is_some() {
                break;
            }
        }
        let graceful = self.ctx.shutdown_requested_now() != Some(true);
        self.set_state("stopping", None);
        self.drop_agent(graceful).await;
        heartbeat.abort();
        self.set_final_state("exited");
        self.transcript.close();
    }

    pub(super) async fn run_task(&mut self, i: usize, lease: &Lease) {
        let (task_id, title, attempt) = self.ctx.task_title(i);
        self.set_state("running", Some(task_id.clone()));
        // Isolated: the worktree at the integration head (an integrator
        // turn: at the merge with markers), before the agent (whose work
        // dir it is) starts.
        let resolving = self.ctx.resolving(i);
        let parent = match self.checkout(resolving.clone()).await {
            Ok(p) => p,
            Err(e) => {
                let why = format!("cannot prepare the worker's worktree: {e}");
                self.ctx.attempt_failed(lease, &why, 0);
                return;
            }
        };
        let agent = match self.start_agent().await {
            Ok(a) => a,
            Err(e) => {
                self.ctx
                    .attempt_failed(lease, &format!("agent failed to start: {e}"), 0);
                return;
            }
        };
        // No context from the worker's earlier tasks (ACP: a new session in
        // the same agent process).
        if let Err(e) = agent.fresh_context().await {
            self.drop_agent(false).await;
            let why = format!("agent failed to open a session: {e}");
            self.ctx.attempt_failed(lease, &why, 0);
            return;
        }
        // Starting a fresh agent reported `starting_agent`: back to the task.
        self.set_state("running", Some(task_id.clone()));
        let role = if resolving.is_some() {
            "integrator"
        } else {
            &self.role
        };
        let prompt = self.ctx.prompt_for(i, role, &self.id);
        self.ctx.emit(
            EventKind::TaskStarted,
            Some(&self.id),
            json!({ "task_id": task_id, "attempt": attempt, "agent_pid": agent.pid(), "role": role }),
        );
        self.record(
            "prompt",
            json!({ "task_id": task_id, "attempt": attempt, "text": prompt }),
        );
        self.ctx.count(&[(Counter::AskCalls, 1)]);
        let end = self.turn(&agent, &prompt).await;
        // Usage as the agent's reader saw it, before the turn's answer (or
        // its death) was known: complete even when the turn failed.
        let record = match &end {
            TurnEnd::Finished(o) => o.record.clone(),
            _ => agent.partial_turn(),
        };
        let tokens = record.usage.total();
        self.ctx
            .add_usage(&self.agent_name, &record.usage, record.cost.as_ref());
        let how = match &end {
            TurnEnd::Finished(o) => serde_json::to_value(&o.status).unwrap_or(Value::Null),
            TurnEnd::Errored(why) => json!({ "status": "agent_error", "error": why }),
            TurnEnd::LeaseExpired => json!({ "status": "lease_expired" }),
            TurnEnd::Shutdown => json!({ "status": "stopped_for_shutdown" }),
        };
        self.record(
            "turn_end",
            json!({ "task_id": task_id, "attempt": attempt, "tokens": tokens, "outcome": how }),
        );
        // Whatever the turn's end, what it left in the worktree is kept.
        let committed = match &parent {
            Some(p) => {
                self.commit_attempt(&task_id, attempt, p, &title, resolving.is_some())
                    .await
            }
            None => None,
        };
        match end {
            TurnEnd::Finished(outcome) => match &outcome.status {
                TurnStatus::Finished => {
                    self.ctx
                        .integrate_and_complete(i, lease, &outcome, tokens, committed)
                        .await;
                    if outcome.protocol_violations > 0 {
                        // An agent that sent garbage is not trusted with the next task.
                        self.drop_agent(false).await;
                    }
                }
                TurnStatus::Cancelled if self.ctx.shutdown_requested_now().is_some() => {
                    self.ctx.release(lease);
                }
                TurnStatus::Cancelled => {
                    // Nobody asked: the agent gave up on its own (Codex does
                    // when a permission is refused). That is a failed
                    // attempt, or a refusal would be retried forever.
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = "the agent cancelled the turn without being asked to";
                    self.ctx.attempt_failed(lease, why, tokens);
                }
                TurnStatus::MaxStepsReached { steps } => {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = format!("the agent stopped at its step limit ({steps} steps)");
                    self.ctx.attempt_failed(lease, &why, tokens);
                }
                TurnStatus::Stopped { reason } => {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = format!("the agent stopped the turn without finishing: {reason}");
                    self.ctx.attempt_failed(lease, &why, tokens);
                }
                TurnStatus::Error { code, message } => {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = format!(
                        "the turn ended in error {code}: {}",
                        crate::redact::redact_str(message)
                    );
                    self.ctx.attempt_failed(lease, &why, tokens);
                }
            },
            TurnEnd::Errored(why) => {
                self.drop_agent(false).await;
                if self.ctx.shutdown_requested_now().is_some() {
                    // Killed by (or died during) a shutdown: not the task's fault.
                    self.ctx.release(lease);
                } else {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    self.ctx.attempt_failed(lease, &why, tokens);
                }
            }
            TurnEnd::LeaseExpired => {
                self.ctx.count(&[(Counter::AskErrors, 1)]);
                let secs = self.ctx.config.team.lease_secs;
                self.ctx.emit(
                    EventKind::LeaseExpired,
                    Some(&self.id),
                    json!({ "task_id": task_id, "attempt": attempt, "epoch": lease.epoch,
                            "silent_for_secs": secs, "agent_pid": agent.pid() }),
                );
                self.drop_agent(false).await;
                let why =
                    format!("lease expired: the agent sent nothing for {secs}s and was killed");
                self.ctx.attempt_failed(lease, &why, tokens);
            }
            TurnEnd::Shutdown => {
                self.ctx.release(lease);
            }
        }
    }

    /// Isolated runs: reset this worker's worktree to the integration head
    /// (creating it the first time); the head, or `None` when not isolated.
    pub(super) async fn checkout(&self, at: Option<String>) -> Result<Option<String>> {
        let Some(it) = self.ctx.integrator.clone() else {
            return Ok(None);
        };
        let id = self.id.clone();
        tokio::task::spawn_blocking(move || it.checkout(&id, at.as_deref()))
            .await
            .map_err(|e| crate::error::Error::Agent(format!("the checkout task stopped: {e}")))?
            .map(Some)
    }

    /// Isolated runs: commit the attempt's changes under its hidden ref.
    /// A failure is recorded, not fatal: the worktree still holds the work.
    async fn commit_attempt(
        &self,
        task_id: &str,
        attempt: u32,
        parent: &str,
        title: &str,
        integrator: bool,
    ) -> Option<AttemptCommit> {
        let it = self.ctx.integrator.clone()?;
        let (id, task, parent, title) = (
            self.id.clone(),
            task_id.to_string(),
            parent.to_string(),
            title.to_string(),
        );
        let done = tokio::task::spawn_blocking(move || {
            it.commit_attempt(&id, &task, attempt, &parent, &title, integrator)
        })
        .await;
        match done {
            Ok(Ok(Some(c))) => {
                self.ctx.emit(
                    EventKind::TaskCommitted,
                    Some(&self.id),
                    json!({ "task_id": task_id, "attempt": attempt, "commit": c.commit,
                            "parent": c.parent, "files": c.files }),
                );
                Some(c)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                self.record(
                    "commit_failed",
                    json!({ "task_id": task_id, "error": e.to_string() }),
                );
                tracing::error!("cannot commit {task_id} attempt {attempt}: {e}");
                None
            }
            Err(e) => {
                tracing::error!("the commit task stopped: {e}");
                None
            }
        }
    }

    /// Run one turn under the lease watchdog and the shutdown signal.
    pub(super) async fn turn(&self, agent: &Arc<dyn AgentBackend>, prompt: &str) -> TurnEnd {
        let lease = Duration::from_secs(self.ctx.config.team.lease_secs.max(1));
        let grace = Duration::from_secs(self.ctx.config.team.stop_grace_secs);
        let mut shutdown = self.ctx.shutdown.clone();
        // A stop asked for while the agent was starting: no turn at all
        // (the clone above would never see that change).
        if self.ctx.shutdown_requested().is_some() {
            return TurnEnd::Shutdown;
        }
        let turn = agent.prompt(prompt);
        // Silence counts from the prompt at the earliest: a kept agent was
        // rightly quiet between its tasks.
        let sent = Instant::now();
        tokio::pin!(turn);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut cancel_deadline: Option<Instant> = None;
        let mut cancel_sent = Instant::now();
        loop {
            tokio::select! {
                r = &mut turn => {
                    return match r {
                        Ok(o) => TurnEnd::Finished(o),
                        Err(e) => TurnEnd::Errored(e.to_string()),
                    };
                }
                _ = tick.tick() => {
                    if let Some(deadline) = cancel_deadline {
                        if Instant::now() >= deadline {
                            agent.kill();
                            return TurnEnd::Shutdown;
                        }
                        // A cancel that reached the agent before its turn
                        // began may be lost (kimi acp drops it): ask again.
                        if cancel_sent.elapsed() >= Duration::from_secs(1) {
                            cancel_sent = Instant::now();
                            let _ = agent.cancel().await;
                        }
                    } else if agent.last_activity().max(sent).elapsed() > lease {
                        return TurnEnd::LeaseExpired;
                    }
                }
                changed = shutdown.changed(), if cancel_deadline.is_none() => {
                    let request = if changed.is_ok() { *shutdown.borrow() } else { None };
                    match request {
                        Some(true) => {
                            agent.kill();
                            return TurnEnd::Shutdown;
                        }
                        Some(false) => {
                            cancel_deadline = Some(Instant::now() + grace);
                            cancel_sent = Instant::now();
                            let _ = agent.cancel().await;
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Wait for a pool slot (queueing if needed) unless shut down first.
    /// `for_tasks`: a queued worker also gives up (leaving the queue, with
    /// a `pool_left` event) once no task is pending: the admitted workers
    /// took them all, and waiting for one of their slots would only hold
    /// the run's end until they exit.
    /// `first`: an answer already given to this worker's first ask.
    pub(super) async fn admit(
        &self,
        for_tasks: bool,
        mut first: Option<Admission>,
    ) -> Result<SlotGuard, NotAdmitted> {
        let pool = self.ctx.lock().doc.pool.clone();
        let owner = self.owner();
        let mut ticket = None;
        // Raised when any pool document changes; a queued worker looks
        // again then, not on a timer (`checks` counts the looks). Started
        // when the worker first queues: an admitted one costs no watch.
        let mut changes: Option<std::sync::Arc<crate::watch::Signal>> = None;
        let mut checks = 0u32;
        let mut shutdown = self.ctx.shutdown.clone();
        // Woken by a task change alone: the pool is as it was, only the
        // work left needs a look.
        let mut pool_unchanged = false;
        loop {
            // Registered before the look, so a task change in between wakes
            // the wait below.
            let task_changed = self.ctx.task_changed.notified();
            tokio::pin!(task_changed);
            task_changed.as_mut().enable();
            if self.ctx.shutdown_requested().is_some() {
                if let Some(t) = ticket {
                    let _ = self.ctx.pools.leave_queue(&pool, t);
                }
                return Err(NotAdmitted::Stopped);
            }
            if let (Some(t), true) = (ticket, for_tasks) {
                if !self.ctx.work_pending() {
                    let _ = self.ctx.pools.leave_queue(&pool, t);
                    self.ctx.emit(
                        EventKind::PoolLeft,
                        Some(&self.id),
                        json!({ "pool": pool, "ticket": t, "reason": "no task left to claim", "checks": checks }),
                    );
                    return Err(NotAdmitted::NoWork);
                }
            }
            let seen = changes.as_ref().map(|c| c.generation());
            let answer = if let Some(given) = first.take() {
                checks += 1;
                Ok(given)
            } else if std::mem::take(&mut pool_unchanged) {
                Ok(Admission::Queued(ticket.unwrap_or_default()))
            } else {
                checks += 1;
                self.ctx.pools.try_admit(&pool, &owner, ticket)
            };
            match answer {
                Ok(Admission::Admitted(slot)) => {
                    let mut payload = json!({ "pool": pool, "slot": slot.id() });
                    if ticket.is_some() {
                        payload["checks"] = json!(checks);
                    }
                    self.ctx
                        .emit(EventKind::PoolAdmitted, Some(&self.id), payload);
                    return Ok(slot);
                }
                Ok(Admission::Queued(t)) => {
                    if ticket.is_none() {
                        self.set_state("queued", None);
                        self.ctx.emit(
                            EventKind::PoolQueued,
                            Some(&self.id),
                            json!({ "pool": pool, "ticket": t }),
                        );
                    }
                    ticket = Some(t);
                    match (&changes, seen) {
                        // The safety re-check covers a holder that died
                        // without releasing (reclaimed by the next look) and
                        // a file system whose notifications never come.
                        (Some(c), Some(seen)) => tokio::select! {
                            _ = c.changed_past(seen, QUEUE_SAFETY_RECHECK) => {}
                            Ok(()) = shutdown.changed() => {}
                            _ = &mut task_changed, if for_tasks => {
                                pool_unchanged = c.generation() == seen;
                            }
                        },
                        // A release before the watch started is seen by
                        // looking again at once.
                        _ => changes = Some(self.ctx.pools.changes()),
                    }
                }
                Ok(Admission::Rejected(why)) | Err(Error::Conflict(why)) => {
                    self.not_admitted(&pool, why);
                    return Err(NotAdmitted::Refused);
                }
                Err(e) => {
                    self.not_admitted(&pool, e.to_string());
                    return Err(NotAdmitted::Refused);
                }
            }
        }
    }

    /// Who this worker is to its pool.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            run: self.ctx.name(),
            worker: self.id.clone(),
            process: ProcessId::current(),
        }
    }

    /// The pool refused this worker: say so in the events and keep the
    /// reason for the run's outcome.
    fn not_admitted(&self, pool: &str, why: String) {
        self.ctx.emit(
            EventKind::PoolRejected,
            Some(&self.id),
            json!({ "pool": pool, "reason": why }),
        );
        self.ctx.update(|r| r.not_admitted = Some(why));
    }

    pub(super) fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let (ctx, id, dir, state, tally, pid) = (
            self.ctx.clone(),
            self.id.clone(),
            self.dir.clone(),
            self.state.clone(),
            self.tally.clone(),
            self.agent_process.clone(),
        );
        let period = Duration::from_secs(self.ctx.config.team.heartbeat_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                write_heartbeat(&ctx, &id, &dir, &state, &tally, &pid, false);
            }
        })
    }
}

/// Renew `lease` every third of its length until it is refused (then the
/// task's writes are refused too: it was taken over); never returns.
async fn keep(ctx: Arc<RunContext>, mut lease: Lease) {
    let ttl = Duration::from_secs(ctx.config.team.lease_secs.max(1));
    loop {
        tokio::time::sleep(ttl / 3).await;
        if let Err(e) = ctx.renew(&mut lease) {
            tracing::warn!("{e}");
            break;
        }
    }
    std::future::pending::<()>().await
}

fn write_heartbeat(
    ctx: &RunContext,
    worker: &str,
    dir: &std::path::Path,
    state: &Mutex<(String, Option<String>)>,
    tally: &Tally,
    agent_process: &Mutex<Option<ProcessId>>,
    urgent: bool,
) {
    let agent = *agent_process.lock().unwrap_or_else(|p| p.into_inner());
    let (s, task) = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = tally.last_activity_ms.load(Ordering::Relaxed);
    let hb = Heartbeat {
        version: Heartbeat::VERSION,
        team: ctx.name(),
        worker: worker.to_string(),
        supervisor: ProcessId::current(),
        agent,
        state: s,
        task,
        last_agent_activity_at: (last > 0)
            .then(|| chrono::DateTime::from_timestamp_millis(last as i64))
            .flatten(),
        tokens: tally.tokens.load(Ordering::Relaxed),
        unknown_events: tally.unknown.load(Ordering::Relaxed),
        protocol_violations: tally.violations.load(Ordering::Relaxed),
        updated_at: Utc::now(),
    };
    match store::encode_doc(&hb) {
        Ok(bytes) => ctx
            .persister
            .heartbeat(dir.join("heartbeat.json"), bytes, urgent),
        Err(e) => tracing::warn!("cannot encode the heartbeat of {worker}: {e}"),
    }
}

/// Turn an agent's notices into transcript lines, events and tallies.
async fn pump_notices(
    ctx: Arc<RunContext>,
    worker: String,
    mut rx: crate::agent::NoticeReceiver,
    tally: Arc<Tally>,
    transcript: Arc<Transcript>,
) {
    while let Some(notice) = rx.recv().await {
        tally.last_activity_ms.store(now_ms(), Ordering::Relaxed);
        match notice {
            AgentNotice::Event(event) => {
                let usage = match &event {
                    WireEvent::StatusUpdate { usage: Some(u), .. } => Some(*u),
                    WireEvent::Subagent { event, .. } => match event.as_ref() {
                        WireEvent::StatusUpdate { usage: Some(u), .. } => Some(*u),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(u) = usage {
                    tally.tokens.fetch_add(u.total(), Ordering::Relaxed);
                }
                if let WireEvent::Unknown { kind, .. } = &event {
                    tally.unknown.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("{worker}: ignored unknown Wire event {kind}");
                }
                // Text deltas are the bulk of a transcript: keep them, but
                // only their text.
                transcript.record("event", event_json(&event));
            }
            AgentNotice::Approval { request, decision } => {
                let payload = decision.event_payload(&request, ctx.policy.kind.as_str());
                transcript.record("approval", payload.clone());
                ctx.emit(EventKind::ApprovalDecided, Some(&worker), payload);
            }
            AgentNotice::Question { questions } => {
                let payload = json!({ "questions": questions, "answer": "dismissed" });
                transcript.record("question", payload.clone());
                ctx.emit(EventKind::AgentQuestion, Some(&worker), payload);
            }
            AgentNotice::RequestAnswered { kind, answer } => {
                transcript.record("request", json!({ "type": kind, "answer": answer }));
            }
            AgentNotice::StrayOutput { line } => {
                transcript.record("stray_output", json!({ "line": line }));
            }
            AgentNotice::ProtocolViolation { line, reason } => {
                tally.violations.fetch_add(1, Ordering::Relaxed);
                let payload = json!({ "reason": reason, "line": line });
                transcript.record("protocol_violation", payload.clone());
                ctx.emit(EventKind::AgentProtocolError, Some(&worker), payload);
            }
        }
    }
}

fn event_json(event: &WireEvent) -> Value {
    match event {
        WireEvent::Text(t) => json!({ "type": "text", "text": t }),
        WireEvent::Think(_) => json!({ "type": "think" }),
        WireEvent::StatusUpdate {
            usage,
            context_tokens,
        } => {
            json!({ "type": "status", "usage": usage, "context_tokens": context_tokens })
        }
        WireEvent::ToolCall { id, name, .. } => {
            json!({ "type": "tool_call", "id": id, "name": name })
        }
        WireEvent::ToolResult {
            tool_call_id,
            is_error,
            message,
        } => {
            json!({ "type": "tool_result", "tool_call_id": tool_call_id, "is_error": is_error, "message": message })
        }
        WireEvent::Unknown { kind, .. } => json!({ "type": "unknown", "wire_type": kind }),
        WireEvent::Known { kind, .. } => json!({ "type": "other", "wire_type": kind }),
        other => {
            json!({ "type": "wire", "event": format!("{other:?}").chars().take(200).collect::<String>() })
        }
    }
}
