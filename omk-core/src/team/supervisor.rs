//! The supervisor: plans a team run, schedules its tasks over workers with
//! leases and retries, and records everything (DESIGN.md §7).
//!
//! One supervisor process owns a run: it alone writes `team.json`,
//! `events.jsonl` and the worker files. Other processes talk to it through
//! `shutdown.json` and read what it writes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::doc::{Phase, TaskEntry, TaskStatus, TeamDoc};
use super::spec::role_instructions;
use crate::agent::{
    self, AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, TurnStatus, WireEvent,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{EventKind, EventLog};
use crate::metrics::{self, Counter};
use crate::paths::StatePaths;
use crate::pool::{Admission, Owner, Pools, SlotGuard};
use crate::process::ProcessId;
use crate::store::{self, Document, FsyncPolicy, JsonlWriter};

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

struct Run {
    doc: TeamDoc,
    /// Earliest time each task may be claimed (retry backoff).
    not_before: Vec<Option<Instant>>,
}

/// Everything the workers of one run share.
pub struct RunContext {
    paths: StatePaths,
    config: Config,
    run: Mutex<Run>,
    events: Mutex<EventLog>,
    observer: Option<Observer>,
    shutdown: watch::Receiver<Option<bool>>,
    policy: ApprovalPolicy,
    program: PathBuf,
    pools: Pools,
    subtasks: Vec<String>,
    /// `shutdown.json`, read directly when the watcher has not yet
    /// published a request.
    shutdown_file: PathBuf,
}

enum Claim {
    Task(usize),
    Wait,
    Done,
}

enum TurnEnd {
    Finished(agent::TurnOutcome),
    Errored(String),
    LeaseExpired,
    Shutdown,
}

/// Per-agent counters fed by its notice pump.
#[derive(Default)]
struct Tally {
    tokens: AtomicU64,
    unknown: AtomicU64,
    violations: AtomicU64,
    last_activity_ms: AtomicU64,
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

impl RunContext {
    /// Load the prepared run and everything needed to drive it.
    pub fn new(
        paths: StatePaths,
        config: Config,
        doc: TeamDoc,
        subtasks: Vec<String>,
        program: PathBuf,
        observer: Option<Observer>,
        shutdown: watch::Receiver<Option<bool>>,
    ) -> Result<RunContext> {
        let policy = ApprovalPolicy {
            kind: crate::agent::PolicyKind::parse(&doc.approval_policy)?,
            allow_commands: config.agent.allow_commands.clone(),
        };
        let events = EventLog::open(&doc.state_dir.join("events.jsonl"))?;
        let n = doc.tasks.len();
        let shutdown_file = doc.state_dir.join("shutdown.json");
        Ok(RunContext {
            pools: Pools::new(paths.clone(), config.clone()),
            paths,
            config,
            run: Mutex::new(Run {
                doc,
                not_before: vec![None; n],
            }),
            events: Mutex::new(events),
            observer,
            shutdown,
            policy,
            program,
            subtasks,
            shutdown_file,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> String {
        self.lock().doc.name.clone()
    }

    pub fn doc(&self) -> TeamDoc {
        self.lock().doc.clone()
    }

    /// Mutate the document, persist it, tell the observer.
    fn update<R>(&self, f: impl FnOnce(&mut Run) -> R) -> R {
        let (out, snapshot) = {
            let mut run = self.lock();
            let out = f(&mut run);
            run.doc.updated_at = Utc::now();
            if let Err(e) = run.doc.save() {
                tracing::error!("cannot save team document: {e}");
            }
            (out, self.observer.as_ref().map(|_| run.doc.clone()))
        };
        if let (Some(obs), Some(doc)) = (&self.observer, snapshot) {
            obs(&doc);
        }
        out
    }

    fn emit(&self, kind: EventKind, actor: Option<&str>, payload: Value) {
        let run_id = self.name();
        let mut log = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.emit(&run_id, kind, actor, payload) {
            tracing::error!("cannot append event: {e}");
        }
    }

    fn count(&self, deltas: &[(Counter, u64)]) {
        if let Err(e) = metrics::add(&self.paths.metrics(), deltas) {
            tracing::warn!("cannot update metrics: {e}");
        }
    }

    /// `Some(force)` once a stop was asked for. Also reads `shutdown.json`
    /// itself: `shutdown --force` kills the agents right after writing it,
    /// possibly before the watcher (which polls) has published it, and the
    /// turn that dies of that kill must not count as a failed attempt.
    fn shutdown_requested(&self) -> Option<bool> {
        let published = *self.shutdown.borrow();
        if published.is_some() {
            return published;
        }
        store::read_doc::<ShutdownRequest>(&self.shutdown_file)
            .ok()
            .flatten()
            .map(|r| r.force)
    }

    fn set_phase(&self, phase: Phase) {
        let from = self.update(|r| std::mem::replace(&mut r.doc.phase, phase));
        if from != phase {
            self.emit(
                EventKind::PhaseChanged,
                Some("supervisor"),
                json!({ "from": from, "to": phase }),
            );
        }
    }

    fn claim(&self, worker: &str) -> Claim {
        let mut claimed = None;
        let claim = self.update(|r| {
            let now = Instant::now();
            let mut waiting = false;
            for (i, t) in r.doc.tasks.iter_mut().enumerate() {
                match t.status {
                    TaskStatus::Pending if r.not_before[i].is_none_or(|nb| nb <= now) => {
                        t.status = TaskStatus::Running;
                        t.worker = Some(worker.to_string());
                        t.attempts += 1;
                        t.started_at.get_or_insert_with(Utc::now);
                        claimed = Some((t.id.clone(), t.attempts));
                        return Claim::Task(i);
                    }
                    TaskStatus::Pending | TaskStatus::Running => waiting = true,
                    _ => {}
                }
            }
            if waiting {
                Claim::Wait
            } else {
                Claim::Done
            }
        });
        if let Some((id, attempt)) = claimed {
            self.emit(
                EventKind::TaskClaimed,
                Some(worker),
                json!({ "task_id": id, "attempt": attempt, "lease_secs": self.config.team.lease_secs }),
            );
        }
        claim
    }

    fn task_title(&self, i: usize) -> (String, String, u32) {
        let run = self.lock();
        let t = &run.doc.tasks[i];
        (t.id.clone(), t.title.clone(), t.attempts)
    }

    fn prompt_for(&self, i: usize) -> String {
        let run = self.lock();
        let d = &run.doc;
        let t = &d.tasks[i];
        format!(
            "You work in an omk team as its {role}, in {workdir}.\n{instructions}\n\n\
             Overall task: {task}\n\nYour subtask ({n} of {total}): {title}\n\n\
             When you are done, reply with a short summary of what you changed and how you checked it.",
            role = d.worker_role,
            workdir = d.workdir.display(),
            instructions = role_instructions(&d.worker_role),
            task = d.task,
            n = i + 1,
            total = d.tasks.len(),
            title = t.title,
        )
    }

    fn complete(&self, i: usize, worker: &str, outcome: &agent::TurnOutcome, tokens: u64) {
        let summary = summarize(&outcome.record.text);
        let id = self.update(|r| {
            let t = &mut r.doc.tasks[i];
            t.status = TaskStatus::Completed;
            t.summary = Some(summary.clone());
            t.tokens += tokens;
            t.finished_at = Some(Utc::now());
            r.doc.tokens += tokens;
            t.id.clone()
        });
        self.emit(
            EventKind::TaskCompleted,
            Some(worker),
            json!({
                "task_id": id,
                "tokens": tokens,
                "steps": outcome.record.steps,
                "tool_calls": outcome.record.tool_calls,
                "unknown_events": outcome.record.unknown_events,
                "protocol_violations": outcome.protocol_violations,
                "summary": summary,
            }),
        );
        self.count(&[(Counter::TasksCompleted, 1)]);
    }

    /// Record a failed attempt; retry with backoff or fail the task.
    fn attempt_failed(&self, i: usize, worker: &str, why: &str, tokens: u64) {
        let max = self.config.team.max_attempts;
        let backoff = self.config.team.retry_backoff_ms;
        let (id, attempt, failed) = self.update(|r| {
            let t = &mut r.doc.tasks[i];
            t.tokens += tokens;
            t.errors.push(format!("attempt {}: {why}", t.attempts));
            let failed = t.attempts >= max;
            if failed {
                t.status = TaskStatus::Failed;
                t.summary = Some(format!("failed after {} attempt(s): {why}", t.attempts));
                t.finished_at = Some(Utc::now());
            } else {
                t.status = TaskStatus::Pending;
                let delay = backoff.saturating_mul(1u64 << (t.attempts - 1).min(10));
                r.not_before[i] = Some(Instant::now() + Duration::from_millis(delay));
            }
            let out = (t.id.clone(), t.attempts, failed);
            r.doc.tokens += tokens;
            out
        });
        if failed {
            let evidence = self.lock().doc.tasks[i].errors.clone();
            self.emit(
                EventKind::TaskFailed,
                Some(worker),
                json!({ "task_id": id, "attempts": attempt, "reason": why, "evidence": evidence }),
            );
            self.count(&[(Counter::TasksFailed, 1)]);
        } else {
            self.emit(
                EventKind::RetryScheduled,
                Some(worker),
                json!({ "task_id": id, "failed_attempt": attempt, "reason": why, "max_attempts": max }),
            );
        }
    }

    /// A task interrupted by shutdown goes back to pending (and ends as
    /// cancelled); the attempt does not count against it.
    fn release(&self, i: usize) {
        self.update(|r| {
            let t = &mut r.doc.tasks[i];
            if t.status == TaskStatus::Running {
                t.status = TaskStatus::Pending;
                t.attempts = t.attempts.saturating_sub(1);
            }
        });
    }

    fn agent_spec(&self) -> AgentSpec {
        let doc = self.lock();
        AgentSpec {
            program: self.program.clone(),
            extra_args: self.config.agent.args.clone(),
            work_dir: doc.doc.workdir.clone(),
            env: Vec::new(),
            protocol: self.config.agent.protocol,
            policy: self.policy.clone(),
            start_timeout: Duration::from_secs(self.config.agent.start_timeout_secs.max(1)),
        }
    }
}

/// Cut the agent's answer down to a summary (on a char boundary), redacted.
fn summarize(text: &str) -> String {
    let text = text.trim();
    let cut: String = text.chars().take(SUMMARY_MAX_CHARS).collect();
    let cut = if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    };
    crate::redact::redact_str(&cut).into_owned()
}

/// One worker: its slot, its agent, its files.
struct Worker {
    ctx: Arc<RunContext>,
    id: String,
    dir: PathBuf,
    agent: Option<Arc<dyn AgentBackend>>,
    tally: Arc<Tally>,
    state: Arc<Mutex<(String, Option<String>)>>,
    /// The running agent's pid (0 when none), shared with the heartbeat task.
    agent_pid: Arc<AtomicU64>,
    transcript: Arc<Mutex<Option<JsonlWriter>>>,
}

impl Worker {
    fn new(ctx: Arc<RunContext>, id: String) -> Result<Worker> {
        let dir = ctx.lock().doc.state_dir.join("workers").join(&id);
        store::ensure_dir(&dir)?;
        let transcript = JsonlWriter::open(&dir.join("transcript.jsonl"), FsyncPolicy::Grouped)?
            .with_cap(TRANSCRIPT_MAX_BYTES);
        Ok(Worker {
            ctx,
            id,
            dir,
            agent: None,
            tally: Arc::new(Tally::default()),
            state: Arc::new(Mutex::new(("starting".into(), None))),
            agent_pid: Arc::new(AtomicU64::new(0)),
            transcript: Arc::new(Mutex::new(Some(transcript))),
        })
    }

    fn set_state(&self, state: &str, task: Option<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state.to_string(), task);
        self.write_heartbeat();
    }

    fn write_heartbeat(&self) {
        write_heartbeat(
            &self.ctx,
            &self.id,
            &self.dir,
            &self.state,
            &self.tally,
            &self.agent_pid,
        );
    }

    fn record(&self, kind: &str, data: Value) {
        record(&self.transcript, kind, data);
    }

    async fn start_agent(&mut self) -> Result<Arc<dyn AgentBackend>> {
        if let Some(a) = &self.agent {
            if a.exit_status().is_none() {
                return Ok(a.clone());
            }
        }
        self.agent = None;
        self.set_state("starting_agent", None);
        let (tx, rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let agent = agent::start(&self.ctx.agent_spec(), tx).await?;
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
            json!({ "agent_pid": agent.pid(), "startup_ms": started.elapsed().as_millis() as u64 }),
        );
        self.record("agent_started", json!({ "pid": agent.pid() }));
        self.agent = Some(agent.clone());
        self.agent_pid
            .store(u64::from(agent.pid()), Ordering::Relaxed);
        self.write_heartbeat();
        Ok(agent)
    }

    async fn drop_agent(&mut self, graceful: bool) {
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
        self.agent_pid.store(0, Ordering::Relaxed);
        self.write_heartbeat();
    }

    /// Claim tasks and run them until none is left or shutdown.
    async fn run(mut self) {
        let Some(_slot) = self.admit().await else {
            self.set_state("not_admitted", None);
            return;
        };
        let heartbeat = self.spawn_heartbeat();
        while self.ctx.shutdown_requested().is_none() {
            let i = match self.ctx.claim(&self.id) {
                Claim::Done => break,
                Claim::Wait => {
                    self.set_state("waiting", None);
                    let mut sd = self.ctx.shutdown.clone();
                    let _ = tokio::time::timeout(Duration::from_millis(100), sd.changed()).await;
                    continue;
                }
                Claim::Task(i) => i,
            };
            self.run_task(i).await;
        }
        let graceful = self.ctx.shutdown_requested() != Some(true);
        self.set_state("stopping", None);
        self.drop_agent(graceful).await;
        heartbeat.abort();
        self.set_state("exited", None);
        if let Some(mut t) = self
            .transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = t.sync();
        }
    }

    async fn run_task(&mut self, i: usize) {
        let (task_id, _title, attempt) = self.ctx.task_title(i);
        self.set_state("running", Some(task_id.clone()));
        let agent = match self.start_agent().await {
            Ok(a) => a,
            Err(e) => {
                self.ctx
                    .attempt_failed(i, &self.id, &format!("agent failed to start: {e}"), 0);
                return;
            }
        };
        // Starting a fresh agent reported `starting_agent`: back to the task.
        self.set_state("running", Some(task_id.clone()));
        let prompt = self.ctx.prompt_for(i);
        self.ctx.emit(
            EventKind::TaskStarted,
            Some(&self.id),
            json!({ "task_id": task_id, "attempt": attempt, "agent_pid": agent.pid() }),
        );
        self.record(
            "prompt",
            json!({ "task_id": task_id, "attempt": attempt, "text": prompt }),
        );
        self.ctx.count(&[(Counter::AskCalls, 1)]);
        let end = self.turn(&agent, &prompt).await;
        // Usage as the agent's reader saw it, before the turn's answer (or
        // its death) was known: complete even when the turn failed.
        let tokens = match &end {
            TurnEnd::Finished(o) => o.record.usage.total(),
            _ => agent.partial_turn().usage.total(),
        };
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
        match end {
            TurnEnd::Finished(outcome) => match &outcome.status {
                TurnStatus::Finished => {
                    self.ctx.complete(i, &self.id, &outcome, tokens);
                    if outcome.protocol_violations > 0 {
                        // An agent that sent garbage is not trusted with the next task.
                        self.drop_agent(false).await;
                    }
                }
                TurnStatus::Cancelled => {
                    self.ctx.release(i);
                }
                TurnStatus::MaxStepsReached { steps } => {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = format!("the agent stopped at its step limit ({steps} steps)");
                    self.ctx.attempt_failed(i, &self.id, &why, tokens);
                }
                TurnStatus::Error { code, message } => {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    let why = format!(
                        "the turn ended in error {code}: {}",
                        crate::redact::redact_str(message)
                    );
                    self.ctx.attempt_failed(i, &self.id, &why, tokens);
                }
            },
            TurnEnd::Errored(why) => {
                self.drop_agent(false).await;
                if self.ctx.shutdown_requested().is_some() {
                    // Killed by (or died during) a shutdown: not the task's fault.
                    self.ctx.release(i);
                } else {
                    self.ctx.count(&[(Counter::AskErrors, 1)]);
                    self.ctx.attempt_failed(i, &self.id, &why, tokens);
                }
            }
            TurnEnd::LeaseExpired => {
                self.ctx.count(&[(Counter::AskErrors, 1)]);
                let lease = self.ctx.config.team.lease_secs;
                self.ctx.emit(
                    EventKind::LeaseExpired,
                    Some(&self.id),
                    json!({ "task_id": task_id, "attempt": attempt, "silent_for_secs": lease, "agent_pid": agent.pid() }),
                );
                self.drop_agent(false).await;
                let why =
                    format!("lease expired: the agent sent nothing for {lease}s and was killed");
                self.ctx.attempt_failed(i, &self.id, &why, tokens);
            }
            TurnEnd::Shutdown => {
                self.ctx.release(i);
            }
        }
    }

    /// Run one turn under the lease watchdog and the shutdown signal.
    async fn turn(&self, agent: &Arc<dyn AgentBackend>, prompt: &str) -> TurnEnd {
        let lease = Duration::from_secs(self.ctx.config.team.lease_secs.max(1));
        let grace = Duration::from_secs(self.ctx.config.team.stop_grace_secs);
        let mut shutdown = self.ctx.shutdown.clone();
        let turn = agent.prompt(prompt);
        tokio::pin!(turn);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut cancel_deadline: Option<Instant> = None;
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
                    } else if agent.last_activity().elapsed() > lease {
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
                            let _ = agent.cancel().await;
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Wait for a pool slot (queueing if needed) unless shut down first.
    async fn admit(&self) -> Option<SlotGuard> {
        let pool = self.ctx.lock().doc.pool.clone();
        let owner = Owner {
            run: self.ctx.name(),
            worker: self.id.clone(),
            process: ProcessId::current(),
        };
        let mut ticket = None;
        loop {
            if self.ctx.shutdown_requested().is_some() {
                if let Some(t) = ticket {
                    let _ = self.ctx.pools.leave_queue(&pool, t);
                }
                return None;
            }
            match self.ctx.pools.try_admit(&pool, &owner, ticket) {
                Ok(Admission::Admitted(slot)) => {
                    self.ctx.emit(
                        EventKind::PoolAdmitted,
                        Some(&self.id),
                        json!({ "pool": pool, "slot": slot.id() }),
                    );
                    return Some(slot);
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Admission::Rejected(why)) | Err(Error::Conflict(why)) => {
                    self.ctx.emit(
                        EventKind::PoolRejected,
                        Some(&self.id),
                        json!({ "pool": pool, "reason": why }),
                    );
                    return None;
                }
                Err(e) => {
                    self.ctx.emit(
                        EventKind::PoolRejected,
                        Some(&self.id),
                        json!({ "pool": pool, "reason": e.to_string() }),
                    );
                    return None;
                }
            }
        }
    }

    fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let (ctx, id, dir, state, tally, pid) = (
            self.ctx.clone(),
            self.id.clone(),
            self.dir.clone(),
            self.state.clone(),
            self.tally.clone(),
            self.agent_pid.clone(),
        );
        let period = Duration::from_secs(self.ctx.config.team.heartbeat_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                write_heartbeat(&ctx, &id, &dir, &state, &tally, &pid);
            }
        })
    }
}

fn write_heartbeat(
    ctx: &RunContext,
    worker: &str,
    dir: &std::path::Path,
    state: &Mutex<(String, Option<String>)>,
    tally: &Tally,
    agent_pid: &AtomicU64,
) {
    let agent_pid = u32::try_from(agent_pid.load(Ordering::Relaxed))
        .ok()
        .filter(|p| *p > 0);
    let (s, task) = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = tally.last_activity_ms.load(Ordering::Relaxed);
    let hb = Heartbeat {
        version: Heartbeat::VERSION,
        team: ctx.name(),
        worker: worker.to_string(),
        supervisor: ProcessId::current(),
        agent: agent_pid.map(ProcessId::of),
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
    if let Err(e) = store::write_doc(&dir.join("heartbeat.json"), &hb) {
        tracing::warn!("cannot write heartbeat of {worker}: {e}");
    }
}

fn record(transcript: &Mutex<Option<JsonlWriter>>, kind: &str, data: Value) {
    let mut line = json!({ "ts": Utc::now(), "kind": kind, "data": data });
    crate::redact::redact_value(&mut line);
    if let Some(w) = transcript
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        if let Err(e) = w.append(&line) {
            tracing::warn!("cannot write transcript: {e}");
        }
    }
}

/// Turn an agent's notices into transcript lines, events and tallies.
async fn pump_notices(
    ctx: Arc<RunContext>,
    worker: String,
    mut rx: mpsc::UnboundedReceiver<AgentNotice>,
    tally: Arc<Tally>,
    transcript: Arc<Mutex<Option<JsonlWriter>>>,
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
                record(&transcript, "event", event_json(&event));
            }
            AgentNotice::Approval { request, decision } => {
                let payload = json!({
                    "request_id": request.id,
                    "sender": request.sender,
                    "action": request.action,
                    "description": request.description,
                    "paths": request.paths(),
                    "commands": request.commands(),
                    "agent_id": request.agent_id,
                    "decision": decision.response,
                    "reason": decision.reason,
                    "policy": ctx.policy.kind.as_str(),
                });
                record(&transcript, "approval", payload.clone());
                ctx.emit(EventKind::ApprovalDecided, Some(&worker), payload);
            }
            AgentNotice::RequestAnswered { kind, answer } => {
                record(
                    &transcript,
                    "request",
                    json!({ "type": kind, "answer": answer }),
                );
            }
            AgentNotice::ProtocolViolation { line, reason } => {
                tally.violations.fetch_add(1, Ordering::Relaxed);
                let payload = json!({ "reason": reason, "line": line });
                record(&transcript, "protocol_violation", payload.clone());
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

/// Run the planner turn: one agent asked for a JSON list of subtasks.
async fn plan(ctx: &Arc<RunContext>) -> std::result::Result<Vec<String>, String> {
    let (task, max) = (ctx.lock().doc.task.clone(), ctx.config.team.max_subtasks);
    let mut worker = Worker::new(ctx.clone(), "planner".into()).map_err(|e| e.to_string())?;
    let Some(_slot) = worker.admit().await else {
        return Err("the planner was not admitted by the pool".into());
    };
    let agent = worker
        .start_agent()
        .await
        .map_err(|e| format!("planner agent failed to start: {e}"))?;
    let prompt = format!(
        "You are the planner of an omk team. Split this task into at most {max} independent subtasks \
         that separate workers can do in parallel. Reply with ONLY a JSON array of strings, one per subtask, \
         and nothing else.\n\nTask: {task}"
    );
    worker.record("prompt", json!({ "text": prompt }));
    ctx.count(&[(Counter::AskCalls, 1)]);
    let end = worker.turn(&agent, &prompt).await;
    let tokens = match &end {
        TurnEnd::Finished(o) => o.record.usage.total(),
        _ => agent.partial_turn().usage.total(),
    };
    ctx.update(|r| r.doc.tokens += tokens);
    worker.drop_agent(true).await;
    match end {
        TurnEnd::Finished(o) if o.status == TurnStatus::Finished => parse_plan(&o.record.text, max),
        TurnEnd::Finished(o) => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err(format!("planner turn ended as {:?}", o.status))
        }
        TurnEnd::Errored(e) => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err(format!("planner failed: {e}"))
        }
        TurnEnd::LeaseExpired => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err("planner went silent past its lease".into())
        }
        TurnEnd::Shutdown => Err("shut down during planning".into()),
    }
}

/// Validate a planner answer: a JSON array of 1..=max non-empty strings,
/// possibly inside a code fence or surrounded by prose.
pub fn parse_plan(text: &str, max: usize) -> std::result::Result<Vec<String>, String> {
    let start = text
        .find('[')
        .ok_or("the planner's answer contains no JSON array")?;
    let end = text
        .rfind(']')
        .ok_or("the planner's answer contains no JSON array")?;
    if end < start {
        return Err("the planner's answer contains no JSON array".into());
    }
    let items: Vec<String> = serde_json::from_str(&text[start..=end])
        .map_err(|e| format!("the planner's array is not a list of strings: {e}"))?;
    let items: Vec<String> = items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("the planner proposed no subtasks".into());
    }
    if items.len() > max {
        return Err(format!(
            "the planner proposed {} subtasks; the limit is {max}",
            items.len()
        ));
    }
    if let Some(long) = items.iter().find(|s| s.chars().count() > 2000) {
        return Err(format!(
            "a proposed subtask is {} characters long; the limit is 2000",
            long.chars().count()
        ));
    }
    Ok(items)
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
    let titles = if !ctx.subtasks.is_empty() {
        ctx.subtasks.clone()
    } else {
        match plan(&ctx).await {
            Ok(titles) => titles,
            Err(reason) => {
                let task = ctx.lock().doc.task.clone();
                ctx.emit(
                    EventKind::PlanFallback,
                    Some("supervisor"),
                    json!({ "reason": reason }),
                );
                vec![task]
            }
        }
    };
    if ctx.shutdown_requested().is_none() {
        ctx.update(|r| {
            r.doc.tasks = titles
                .into_iter()
                .enumerate()
                .map(|(i, t)| TaskEntry::new(i, t))
                .collect();
            r.not_before = vec![None; r.doc.tasks.len()];
        });
        let tasks = ctx.lock().doc.tasks.clone();
        for t in &tasks {
            ctx.emit(
                EventKind::TaskCreated,
                Some("supervisor"),
                json!({ "task_id": t.id, "title": t.title }),
            );
        }
        ctx.count(&[(Counter::TasksCreated, tasks.len() as u64)]);

        // Executing.
        ctx.set_phase(Phase::Executing);
        let workers = (ctx.lock().doc.worker_count as usize).min(tasks.len());
        let mut handles = Vec::new();
        for n in 1..=workers {
            let w = Worker::new(ctx.clone(), format!("w{n}"))?;
            handles.push(tokio::spawn(w.run()));
        }
        for h in handles {
            if let Err(e) = h.await {
                tracing::error!("worker task failed: {e}");
            }
        }
    }
    finish(&ctx)
}

fn finish(ctx: &Arc<RunContext>) -> Result<TeamDoc> {
    let shutdown = ctx.shutdown_requested();
    let unfinished = ctx
        .lock()
        .doc
        .tasks
        .iter()
        .any(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Running));
    let final_phase = if shutdown.is_some() {
        Phase::Shutdown
    } else {
        ctx.set_phase(Phase::Verifying);
        let ok = !unfinished
            && ctx
                .lock()
                .doc
                .tasks
                .iter()
                .all(|t| t.status == TaskStatus::Completed);
        if ok {
            Phase::Completed
        } else {
            Phase::Failed
        }
    };
    ctx.update(|r| {
        for t in &mut r.doc.tasks {
            if matches!(t.status, TaskStatus::Pending | TaskStatus::Running) {
                t.status = TaskStatus::Cancelled;
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
            Phase::Failed => {
                let failed: Vec<String> = r
                    .doc
                    .tasks
                    .iter()
                    .filter(|t| t.status != TaskStatus::Completed)
                    .map(|t| t.id.clone())
                    .collect();
                Some(format!("task(s) not completed: {}", failed.join(", ")))
            }
            _ => None,
        };
    });
    ctx.set_phase(final_phase);
    let doc = ctx.doc();
    super::proof::write(&doc)?;
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
    Ok(doc)
}

/// Watch `shutdown.json` and publish requests to the workers.
pub async fn watch_shutdown(dir: PathBuf, tx: watch::Sender<Option<bool>>) {
    let file = dir.join("shutdown.json");
    loop {
        if let Ok(Some(req)) = store::read_doc::<ShutdownRequest>(&file) {
            let current = *tx.borrow();
            let next = Some(req.force || current == Some(true));
            if current != next {
                let _ = tx.send(next);
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
