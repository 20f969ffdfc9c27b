//! `omk worker`: a daemon per host that runs tasks of any team in a
//! PostgreSQL store (docs/distributed.md).
//!
//! Each of its `max_agents` slots claims a task of the pools and agent
//! profiles it serves ([`crate::pg::tasks`]), runs it with a local agent in
//! the team's directory under the worker's root (the slot's worktree when
//! the team shares code through git) (the agent is
//! kept for the slot's next task of the same team and profile, stopped when
//! there is nothing to claim), renews the lease while
//! the turn runs, and records the outcome, fenced by the lease's epoch: a
//! slot whose lease was lost (it was stopped past its deadline, and another
//! host took the task over) kills its agent and records nothing.
//!
//! A slot with nothing to claim waits for the store's work notification (a
//! new team, a failure backing off, a release) or the soonest backoff end
//! or lease deadline, with a slow safety re-check; it keeps its agent until
//! a whole re-check passes with nothing to do. A lost connection is retried with backoff; a turn in flight
//! goes on, its lease renewed once the store is back, if still in time.
//!
//! Besides its slots, a worker takes over the coordination of teams nobody
//! coordinates any more ([`crate::team::remote::coordinate`]): their `omk
//! team run --store` died or detached.
//!
//! Stopping (SIGTERM in `omk worker`) cancels the running turns and
//! releases their tasks, so another host takes them at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::{self, AgentBackend, AgentSpec, ApprovalPolicy, TurnOutcome, TurnStatus};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, EventKind};
use crate::git::Repo;
use crate::pg::tasks::PgQueue;
use crate::pg::workers::WorkerRecord;
use crate::pg::{retry_io, PgStore};
use crate::seam::{AfterFailure, Lease, TaskLeases};
use crate::team::shared::SharedCode;

/// How long a slot with nothing to claim waits before looking again even
/// without a notification (one lost while the store was unreachable).
const IDLE_RECHECK: Duration = Duration::from_secs(2);

/// How often a running turn's agent is checked for silence.
const STALL_CHECK: Duration = Duration::from_millis(200);

/// The longest wait between two attempts to reach an unreachable store.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What `omk worker` serves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The store's `postgres://` URL.
    pub store: String,
    /// Pools whose tasks it runs.
    pub pools: Vec<String>,
    /// Agent profiles it runs (each must resolve here).
    pub agents: Vec<String>,
    /// Tasks run at once.
    pub max_agents: usize,
    /// Where tasks work: `<root>/<team>/<task>`.
    pub root: PathBuf,
    /// This host's name in leases and events (`<name>/<pid>/<slot>`).
    pub name: String,
    /// Lease length; renewed every third of it while a turn runs.
    pub lease: Duration,
    /// Failed attempts come back after this.
    pub retry_backoff: Duration,
    /// This host's state root: the circuit breakers of the gates a
    /// coordinated team runs here.
    pub state: crate::paths::StatePaths,
}

/// What a worker did, when it stopped.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub completed: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub released: AtomicU64,
    /// Tasks whose lease was lost before their outcome could be recorded.
    pub lost: AtomicU64,
}

impl WorkerReport {
    pub fn to_json(&self) -> Value {
        json!({
            "completed": self.completed.load(Ordering::Relaxed),
            "failed_attempts": self.failed_attempts.load(Ordering::Relaxed),
            "released": self.released.load(Ordering::Relaxed),
            "lost": self.lost.load(Ordering::Relaxed),
        })
    }
}

/// Serve tasks until `stop` turns true. Errors only when the store or the
/// agent profiles cannot be used at all at the start.
pub async fn serve(
    config: &Config,
    opts: WorkerOptions,
    stop: watch::Receiver<bool>,
) -> Result<Arc<WorkerReport>> {
    if opts.pools.is_empty() || opts.agents.is_empty() || opts.max_agents == 0 {
        return Err(Error::invalid(
            "a worker needs at least one pool, one agent profile and one slot",
        ));
    }
    let mut profiles = std::collections::BTreeMap::new();
    for name in &opts.agents {
        profiles.insert(name.clone(), crate::agents::resolve(config, Some(name))?);
    }
    let store = PgStore::connect(&opts.store).await?;
    let changes = store.listen().await?;
    let work = store.listen_for_work().await?;
    let cancels = store.listen_for_cancels().await?;
    let shared = Arc::new(Daemon {
        tasks: store.queue(&opts.pools, &opts.agents),
        store,
        changes,
        work,
        cancels,
        git: tokio::sync::Mutex::new(()),
        policy: ApprovalPolicy {
            kind: crate::agent::PolicyKind::parse(&config.agent.approval_policy)?,
            allow_commands: config.agent.allow_commands.clone(),
            host: None,
        },
        profiles,
        opts,
        report: Arc::new(WorkerReport::default()),
    });
    // What this worker serves, under a lease renewed while it runs.
    let me = WorkerRecord {
        holder: format!("{}/{}", shared.opts.name, std::process::id()),
        host: shared.opts.name.clone(),
        pools: shared.opts.pools.clone(),
        agents: shared.opts.agents.clone(),
        max_agents: shared.opts.max_agents.try_into().unwrap_or(i32::MAX),
    };
    shared.store.register_worker(&me, shared.opts.lease).await?;
    let mut handles = Vec::new();
    {
        let (shared, stop, me) = (shared.clone(), stop.clone(), me.clone());
        handles.push(tokio::spawn(async move {
            shared.announce_loop(&me, stop).await
        }));
    }
    {
        let (shared, stop) = (shared.clone(), stop.clone());
        handles.push(tokio::spawn(
            async move { shared.coordinate_loop(stop).await },
        ));
    }
    for slot in 0..shared.opts.max_agents {
        let (shared, stop) = (shared.clone(), stop.clone());
        handles.push(tokio::spawn(
            async move { shared.run_slot(slot, stop).await },
        ));
    }
    for h in handles {
        if let Err(e) = h.await {
            tracing::error!("worker slot stopped: {e}");
        }
    }
    if let Err(e) = shared.store.unregister_worker(&me.holder).await {
        tracing::warn!("cannot unregister {}: {e}", me.holder);
    }
    Ok(shared.report.clone())
}

/// What the worker's slots and its coordination loop share.
struct Daemon {
    store: PgStore,
    /// The store's tasks this worker serves (its pools and profiles),
    /// claimed through the seam's [`TaskLeases`].
    tasks: PgQueue,
    /// Raised on every event: what a coordinator follows.
    changes: Arc<crate::watch::Signal>,
    /// Raised when a task may have become claimable: what idle slots wait on.
    work: Arc<crate::watch::Signal>,
    /// Raised when running tasks were cancelled: what running turns wait on.
    cancels: Arc<crate::watch::Signal>,
    /// Taken around git operations on the host's mirrors.
    git: tokio::sync::Mutex<()>,
    policy: ApprovalPolicy,
    profiles: std::collections::BTreeMap<String, crate::agents::Resolved>,
    opts: WorkerOptions,
    report: Arc<WorkerReport>,
}

/// A slot's running agent, and what it serves.
struct Held {
    team: String,
    profile: String,
    /// The slot's holder name (the actor of its agent's events).
    holder: String,
    agent: Arc<dyn AgentBackend>,
}

/// How a turn under a lease ended.
enum Ran {
    Finished(Result<TurnOutcome>),
    /// The lease was lost: the agent was killed.
    Lost(Error),
    /// The worker is stopping: the turn was cancelled.
    Stopped,
    /// The agent sent nothing for a whole lease: it was given up on (a
    /// failed attempt, its agent killed), the lease no longer renewed.
    Stalled(Duration),
    /// Finished, and its changes pushed (`None`: it changed nothing).
    Published(TurnOutcome, Option<(String, Vec<String>)>),
}

impl Daemon {
    /// Keep this worker registered (re-registering after a store outage:
    /// its record may have expired meanwhile).
    async fn announce_loop(&self, me: &WorkerRecord, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.opts.lease / 3);
        tick.tick().await;
        while !*stop.borrow() {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.store.register_worker(me, self.opts.lease).await {
                        tracing::warn!("cannot renew the registration of {}: {e}", me.holder);
                    }
                }
                _ = stop.changed() => {}
            }
        }
    }

    async fn run_slot(&self, slot: usize, mut stop: watch::Receiver<bool>) {
        let holder = format!("{}/{}/{slot}", self.opts.name, std::process::id());
        let mut retry = Duration::from_millis(100);
        // The slot's agent, kept for the next task of the same team and
        // profile, as a local team's worker keeps its agent.
        let mut held: Option<Held> = None;
        while !*stop.borrow() {
            let seen = self.work.generation();
            let claimed = self.tasks.claim(&holder, self.opts.lease).await;
            match claimed {
                Ok(Some(lease)) => {
                    retry = Duration::from_millis(100);
                    self.run_task(lease, slot, &mut held, &mut stop).await;
                }
                Ok(None) => {
                    // An agent whose team has nothing left for it goes now,
                    // as a local team's agents go when its run ends.
                    if let Some(h) = &held {
                        if let Ok(false) = self.store.has_work(&h.team, &h.profile).await {
                            if let Some(h) = held.take() {
                                self.stop_agent(h, false).await;
                            }
                        }
                    }
                    // Asleep until new work is announced, or a backoff or
                    // a lease ends (nobody announces those).
                    let due = self
                        .store
                        .next_claimable_in(&self.opts.pools, &self.opts.agents)
                        .await
                        .ok()
                        .flatten()
                        .map_or(IDLE_RECHECK, |s| {
                            Duration::from_secs_f64(s).min(IDLE_RECHECK)
                        });
                    let woken = tokio::select! {
                        g = self.work.changed_past(seen, due.max(Duration::from_millis(5))) => g > seen,
                        _ = stop.changed() => true,
                    };
                    // Idle for a whole re-check: no agent stays behind.
                    if !woken && due == IDLE_RECHECK {
                        if let Some(h) = held.take() {
                            self.stop_agent(h, false).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("{holder}: cannot claim: {e}; retrying in {retry:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => {}
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
        if let Some(h) = held.take() {
            self.stop_agent(h, false).await;
        }
    }

    /// Take over the coordination of teams nobody coordinates (their
    /// `omk team run` died, or detached), one at a time, besides the slots.
    async fn coordinate_loop(&self, mut stop: watch::Receiver<bool>) {
        let holder = format!("{}/{}/coordinator", self.opts.name, std::process::id());
        let mut retry = Duration::from_millis(100);
        while !*stop.borrow() {
            let seen = self.work.generation();
            match self
                .store
                .claim_coordination(&holder, self.opts.lease, None)
                .await
            {
                Ok(Some(c)) => {
                    retry = Duration::from_millis(100);
                    let team = c.team.clone();
                    tracing::info!("{holder}: coordinating team {team}");
                    let site = crate::team::remote::Site {
                        scratch: self.opts.root.join("coordinator"),
                        paths: self.opts.state.clone(),
                    };
                    let run = crate::team::remote::coordinate(
                        &self.store,
                        c,
                        self.opts.lease,
                        &site,
                        self.changes.clone(),
                        &|_| {},
                    );
                    tokio::select! {
                        r = run => if let Err(e) = r {
                            tracing::warn!("{holder}: coordination of {team} ended: {e}");
                        },
                        // Stopping: the lease lapses and another worker
                        // takes the team over.
                        _ = stop.changed() => {}
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.work.changed_past(seen, IDLE_RECHECK) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "{holder}: cannot claim coordination: {e}; retrying in {retry:?}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => {}
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn spec_for(&self, lease: &Lease, work_dir: PathBuf) -> Result<AgentSpec> {
        let resolved = self.profiles.get(&lease.agent).ok_or_else(|| {
            Error::Agent(format!("no agent profile {:?} on this worker", lease.agent))
        })?;
        Ok(AgentSpec {
            program: resolved.program.clone(),
            extra_args: resolved.args.clone(),
            work_dir,
            env: resolved.env.clone(),
            protocol: resolved.protocol,
            policy: self.policy_for(lease),
            start_timeout: resolved.start_timeout(),
            questions: true,
            mcp_servers: Vec::new(),
        })
    }

    /// The team's approval policy (its `--approval`), this worker's
    /// configured one for teams that name none.
    fn policy_for(&self, lease: &Lease) -> ApprovalPolicy {
        let mut policy = self.policy.clone();
        if let Some(kind) = lease.spec["approval"]
            .as_str()
            .and_then(|k| crate::agent::PolicyKind::parse(k).ok())
        {
            policy.kind = kind;
        }
        policy
    }

    /// Stop (or kill) a slot's agent, and say how it exited.
    async fn stop_agent(&self, h: Held, kill: bool) {
        let status = if kill {
            h.agent.kill();
            h.agent.stop(Duration::from_millis(500)).await
        } else {
            h.agent.stop(Duration::from_secs(2)).await
        };
        self.emit(
            &h.team,
            EventKind::WorkerExited,
            &h.holder,
            json!({ "agent_pid": h.agent.pid(), "exit": status.map(|s| s.to_string()) }),
        )
        .await;
    }

    /// Record one event of a team (best effort: events about agents are
    /// not worth failing a task over).
    async fn emit(&self, team: &str, kind: EventKind, actor: &str, payload: Value) {
        let event = Event::new(team, kind, Some(actor), payload);
        if let Err(e) = self.store.append_events(&[event]).await {
            tracing::warn!("cannot record an event of {team}: {e}");
        }
    }

    /// Where slot `slot` works on `lease`'s team: a worktree of its own
    /// when the team shares code through git; else the team's one
    /// directory on this host, which its slots share as a local team's
    /// workers share its work dir (a retry here sees what the failed
    /// attempt left).
    fn work_dir(&self, lease: &Lease, slot: usize) -> PathBuf {
        let team = self.opts.root.join(&lease.team);
        match SharedCode::from_spec(&lease.spec) {
            Some(_) => team.join(format!("slot-{slot}")),
            None => team.join("work"),
        }
    }

    /// A task of a team with shared code: the slot's worktree, made the
    /// team's base, and the host's mirror it belongs to.
    async fn checkout(&self, lease: &Lease, slot: usize) -> Result<Option<(SharedCode, Repo)>> {
        let Some(code) = SharedCode::from_spec(&lease.spec) else {
            return Ok(None);
        };
        let (root, team, dir, c) = (
            self.opts.root.clone(),
            lease.team.clone(),
            self.work_dir(lease, slot),
            code.clone(),
        );
        // One git operation on the mirror at a time (slots share it).
        let _turn = self.git.lock().await;
        let mirror = tokio::task::spawn_blocking(move || {
            crate::team::shared::checkout(&root, &c, &team, &dir)
        })
        .await
        .map_err(|e| Error::Agent(format!("the checkout task stopped: {e}")))??;
        Ok(Some((code, mirror)))
    }

    /// Commit and push what the agent changed (shared code only).
    async fn publish(
        &self,
        lease: &Lease,
        slot: usize,
        code: &SharedCode,
        mirror: &Repo,
    ) -> Result<Option<(String, Vec<String>)>> {
        let (mirror, code, team, task, attempt, dir) = (
            mirror.clone(),
            code.clone(),
            lease.team.clone(),
            lease.task.clone(),
            lease.attempt,
            self.work_dir(lease, slot),
        );
        let title = lease.spec["title"].as_str().unwrap_or_default().to_string();
        let _turn = self.git.lock().await;
        tokio::task::spawn_blocking(move || {
            crate::team::shared::publish(&mirror, &code, &team, &task, attempt, &dir, &title)
        })
        .await
        .map_err(|e| Error::Agent(format!("the publishing task stopped: {e}")))?
    }

    /// The slot's agent for `lease`: the held one when it serves the same
    /// team and profile and still runs, else a new one (the old stopped).
    /// Its work dir is [`Daemon::work_dir`].
    async fn agent_for(&self, lease: &Lease, slot: usize, held: &mut Option<Held>) -> Result<Held> {
        if let Some(h) = held.take() {
            if h.team == lease.team && h.profile == lease.agent && h.agent.exit_status().is_none() {
                return Ok(h);
            }
            self.stop_agent(h, false).await;
        }
        let work_dir = self.work_dir(lease, slot);
        crate::store::ensure_dir(&work_dir)?;
        let spec = self.spec_for(lease, work_dir)?;
        let (tx, rx) = agent::notice_channel();
        let started = std::time::Instant::now();
        let agent = agent::start(&spec, tx).await?;
        tokio::spawn(pump_notices(
            self.store.clone(),
            lease.team.clone(),
            lease.holder.clone(),
            spec.policy.kind.as_str(),
            rx,
        ));
        self.emit(
            &lease.team,
            EventKind::WorkerStarted,
            &lease.holder,
            json!({ "agent_pid": agent.pid(), "agent": lease.agent,
                    "startup_ms": started.elapsed().as_millis() as u64 }),
        )
        .await;
        Ok(Held {
            team: lease.team.clone(),
            profile: lease.agent.clone(),
            holder: lease.holder.clone(),
            agent,
        })
    }

    async fn run_task(
        &self,
        mut lease: Lease,
        slot: usize,
        held: &mut Option<Held>,
        stop: &mut watch::Receiver<bool>,
    ) {
        // A checkout that fails is a failed attempt like any other (no
        // agent started for it).
        let (code, agent) = match self.checkout(&lease, slot).await {
            Ok(code) => (code, self.agent_for(&lease, slot, held).await),
            Err(e) => (
                None,
                Err(Error::Agent(format!(
                    "cannot check the team's code out: {e}"
                ))),
            ),
        };
        let ran = match agent {
            Ok(h) => {
                let ran = self.turn(&mut lease, &h.agent, stop).await;
                if let Ran::Stalled(silent) = &ran {
                    self.emit(
                        &lease.team,
                        EventKind::LeaseExpired,
                        &lease.holder,
                        json!({ "task_id": lease.task, "attempt": lease.attempt,
                                "epoch": lease.epoch, "silent_for_secs": silent.as_secs(),
                                "agent_pid": h.agent.pid() }),
                    )
                    .await;
                }
                match &ran {
                    // A turn that finished keeps its agent for the next task.
                    Ran::Finished(Ok(o))
                        if o.status == TurnStatus::Finished && o.protocol_violations == 0 =>
                    {
                        *held = Some(h);
                    }
                    _ => self.stop_agent(h, true).await,
                }
                ran
            }
            Err(e) => Ran::Finished(Err(e)),
        };
        // The agent's changes go to the team's repository first: a
        // completion always names work that is there.
        let ran = match (ran, &code) {
            (Ran::Finished(Ok(o)), Some((c, mirror))) if o.status == TurnStatus::Finished => {
                match self.publish(&lease, slot, c, mirror).await {
                    Ok(pushed) => Ran::Published(o, pushed),
                    Err(e) => Ran::Finished(Err(e)),
                }
            }
            (ran, _) => ran,
        };
        let recorded = match ran {
            Ran::Finished(Ok(outcome)) if outcome.status == TurnStatus::Finished => {
                self.complete(&lease, &outcome, None).await
            }
            Ran::Published(outcome, pushed) => self.complete(&lease, &outcome, pushed).await,
            Ran::Finished(_) | Ran::Stalled(_) => {
                let why = match ran {
                    Ran::Finished(Ok(o)) => format!("the turn ended {:?}", o.status),
                    Ran::Finished(Err(e)) => e.to_string(),
                    _ => format!(
                        "lease expired: the agent sent nothing for {}s and was killed",
                        self.opts.lease.as_secs()
                    ),
                };
                retry_io(self.opts.lease, "record a failure", || {
                    self.tasks.fail(&lease, &why, self.opts.retry_backoff)
                })
                .await
                .map(|after| {
                    self.report.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if after == AfterFailure::Failed {
                        tracing::warn!("task {} of {} failed: {why}", lease.task, lease.team);
                    }
                })
            }
            Ran::Stopped => retry_io(self.opts.lease, "release a task", || {
                self.tasks.release(&lease)
            })
            .await
            .map(|()| {
                self.report.released.fetch_add(1, Ordering::Relaxed);
            }),
            Ran::Lost(e) => Err(e),
        };
        if let Err(e) = recorded {
            if e.code() == ErrorCode::Conflict {
                self.report.lost.fetch_add(1, Ordering::Relaxed);
            }
            // A refused late write is the fence working; anything else is
            // retried by the lease: the task comes back when it expires.
            tracing::warn!("task {} of {}: {e}", lease.task, lease.team);
        }
    }

    /// Record `lease`'s task completed by `outcome` (and the commit its work
    /// was pushed as, if any).
    async fn complete(
        &self,
        lease: &Lease,
        outcome: &TurnOutcome,
        pushed: Option<(String, Vec<String>)>,
    ) -> Result<()> {
        let mut result = json!({
            "summary": crate::redact::redact_str(outcome.record.text.trim()),
            "tokens": outcome.record.usage.total(),
            "steps": outcome.record.steps,
            "tool_calls": outcome.record.tool_calls,
            "unknown_events": outcome.record.unknown_events,
            "protocol_violations": outcome.protocol_violations,
            "holder": lease.holder,
        });
        if let Some((commit, files)) = pushed {
            result["commit"] = json!(commit);
            result["files"] = json!(files);
        }
        // A store away (restarting) gets the lease's length to come back;
        // after that the fence refuses the write anyway.
        retry_io(self.opts.lease, "record a completion", || {
            self.tasks.complete(lease, &result)
        })
        .await
        .map(|_| {
            self.report.completed.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Run the task's turn, renewing the lease every third of its length.
    async fn turn(
        &self,
        lease: &mut Lease,
        agent: &Arc<dyn AgentBackend>,
        stop: &mut watch::Receiver<bool>,
    ) -> Ran {
        let _ = self
            .store
            .append_events(&[Event::new(
                &lease.team,
                EventKind::TaskStarted,
                Some(&lease.holder),
                json!({ "task_id": lease.task, "attempt": lease.attempt, "epoch": lease.epoch,
                        "agent_pid": agent.pid(), "holder": lease.holder }),
            )])
            .await;
        let prompt = lease.spec["prompt"]
            .as_str()
            .or_else(|| lease.spec["title"].as_str())
            .unwrap_or_default()
            .to_string();
        let turn = agent.prompt(&prompt);
        tokio::pin!(turn);
        let mut renew = tokio::time::interval(self.opts.lease / 3);
        renew.tick().await;
        let mut watchdog = tokio::time::interval(STALL_CHECK.min(self.opts.lease / 3));
        // Silence counts from the prompt at the earliest: a kept agent was
        // rightly quiet between its tasks.
        let sent = std::time::Instant::now();
        let mut cancels = self.cancels.generation();
        loop {
            tokio::select! {
                outcome = &mut turn => return Ran::Finished(outcome),
                // The lease is renewed while the agent makes progress: one
                // silent for a whole lease is stalled, and given up on.
                _ = watchdog.tick() => {
                    let silent = agent.last_activity().max(sent).elapsed();
                    if silent > self.opts.lease {
                        return Ran::Stalled(silent);
                    }
                }
                // Some task was cancelled: this one, if its lease no
                // longer holds it.
                g = self.cancels.changed_past(cancels, Duration::from_secs(3600)) => {
                    cancels = g;
                    if let Ok(false) = self.store.holds(lease).await {
                        return Ran::Lost(Error::Conflict(format!(
                            "task {} of {} was cancelled or taken over",
                            lease.task, lease.team
                        )));
                    }
                }
                _ = renew.tick() => match self.tasks.renew(lease, self.opts.lease).await {
                    Ok(()) => {}
                    Err(e) if e.code() == ErrorCode::Conflict => return Ran::Lost(e),
                    // The store is away: the lease may still hold; the
                    // next tick tries again.
                    Err(e) => tracing::warn!("cannot renew the lease of {}: {e}", lease.task),
                },
                _ = stop.changed() => if *stop.borrow() {
                    return Ran::Stopped;
                },
            }
        }
    }
}

/// Turn an agent's notices into the team's events: its approvals, the
/// questions it asked, the lines it broke the protocol with.
async fn pump_notices(
    store: PgStore,
    team: String,
    holder: String,
    policy: &'static str,
    mut rx: agent::NoticeReceiver,
) {
    use crate::agent::AgentNotice;
    while let Some(notice) = rx.recv().await {
        let (kind, payload) = match notice {
            AgentNotice::Approval { request, decision } => (
                EventKind::ApprovalDecided,
                decision.event_payload(&request, policy),
            ),
            AgentNotice::Question { questions } => (
                EventKind::AgentQuestion,
                json!({ "questions": questions, "answer": "dismissed" }),
            ),
            AgentNotice::ProtocolViolation { line, reason } => (
                EventKind::AgentProtocolError,
                json!({ "reason": reason, "line": line }),
            ),
            _ => continue,
        };
        let event = Event::new(&team, kind, Some(&holder), payload);
        if let Err(e) = store.append_events(&[event]).await {
            tracing::warn!("cannot record an event of {team}: {e}");
        }
    }
}
