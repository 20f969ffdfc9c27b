//! A local team's task records: the file store's side of
//! [`crate::seam::TaskLeases`].
//!
//! Each [`TaskEntry`] of `team.json` is the task's record: status, holder
//! (`worker`), `lease_deadline`, `epoch`, `attempts` and `retry_at`. The
//! functions here are the record operations; the supervisor applies them
//! to its run's document under its lock (and persists the document as
//! it changes), and [`Board`] applies them to records of its own, so the
//! contract shared with the PostgreSQL store is tested on this very code.
//! The clock is this machine's: a local team has one process.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::doc::{TaskEntry, TaskStatus};
use super::plan::files_overlap;
use crate::error::Result;
use crate::seam::{expired_line, lost, AfterFailure, Lease, LeaseRecord, TaskLeases};

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Task `i` was claimed.
    Task(usize),
    /// Nothing claimable now; something may become claimable at the given
    /// time (a retry time, a lease deadline), or when a task changes.
    Wait(Option<DateTime<Utc>>),
    /// Every task has ended.
    Done,
}

/// A running task whose lease expired, found by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub index: usize,
    pub task: String,
    pub holder: String,
    pub epoch: u64,
    pub attempt: u32,
    /// It had no attempt left, and failed.
    pub failed: bool,
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Claim the first claimable task for `holder` (of agent profile `agent`)
/// under a lease of `ttl`: a pending task past its retry time that shares
/// no planned file with a running one. Running tasks past their deadline
/// are first taken back (`Expired`: pending again with the attempt's
/// evidence, or failed on their last attempt).
pub fn claim(
    tasks: &mut [TaskEntry],
    holder: &str,
    agent: Option<&str>,
    max_attempts: u32,
    ttl: Duration,
    now: DateTime<Utc>,
) -> (Found, Vec<Expired>) {
    let mut expired = Vec::new();
    for (index, t) in tasks.iter_mut().enumerate() {
        if t.status != TaskStatus::Running || t.lease_deadline.is_none_or(|d| d >= now) {
            continue;
        }
        let who = t.worker.clone().unwrap_or_default();
        t.errors.push(expired_line(t.attempts.into(), &who));
        t.lease_deadline = None;
        let failed = t.attempts >= max_attempts;
        if failed {
            t.status = TaskStatus::Failed;
            t.summary = Some(format!(
                "failed after {} attempt(s): lease expired on the last attempt",
                t.attempts
            ));
            t.finished_at = Some(now);
        } else {
            t.status = TaskStatus::Pending;
        }
        expired.push(Expired {
            index,
            task: t.id.clone(),
            holder: who,
            epoch: t.epoch,
            attempt: t.attempts,
            failed,
        });
    }
    let mut earliest = None::<DateTime<Utc>>;
    let mut busy = false;
    let mut soonest = |at: DateTime<Utc>| earliest = Some(earliest.map_or(at, |e| e.min(at)));
    let mut next = None;
    for (i, t) in tasks.iter().enumerate() {
        match t.status {
            TaskStatus::Pending if t.retry_at.is_some_and(|at| at > now) => {
                soonest(t.retry_at.unwrap_or(now));
            }
            // A task sharing a planned file with a running one waits for it.
            TaskStatus::Pending
                if !t.files.is_empty()
                    && tasks.iter().any(|o| {
                        o.status == TaskStatus::Running && files_overlap(&t.files, &o.files)
                    }) =>
            {
                busy = true
            }
            TaskStatus::Pending => {
                next = Some(i);
                break;
            }
            TaskStatus::Running => {
                busy = true;
                if let Some(d) = t.lease_deadline {
                    soonest(d);
                }
            }
            _ => {}
        }
    }
    let Some(i) = next else {
        let found = if earliest.is_some() || busy {
            Found::Wait(earliest)
        } else {
            Found::Done
        };
        return (found, expired);
    };
    let t = &mut tasks[i];
    t.status = TaskStatus::Running;
    t.worker = Some(holder.to_string());
    t.agent = agent.map(str::to_string);
    t.attempts += 1;
    t.epoch += 1;
    t.lease_deadline = Some(now + to_chrono(ttl));
    t.retry_at = None;
    t.started_at.get_or_insert(now);
    (Found::Task(i), expired)
}

/// The lease of task `i`, as its claim made it.
pub fn lease_of(team: &str, tasks: &[TaskEntry], i: usize) -> Lease {
    let t = &tasks[i];
    Lease {
        team: team.to_string(),
        task: t.id.clone(),
        epoch: t.epoch as i64,
        attempt: t.attempts as i32,
        holder: t.worker.clone().unwrap_or_default(),
        deadline: t.lease_deadline.unwrap_or(DateTime::<Utc>::MIN_UTC),
        agent: t.agent.clone().unwrap_or_default(),
        spec: Value::Null,
    }
}

/// The fence: the index of `lease`'s task if the lease still holds it
/// (running, under its epoch and holder, before its deadline); `conflict`
/// otherwise.
pub fn held(tasks: &[TaskEntry], lease: &Lease, doing: &str, now: DateTime<Utc>) -> Result<usize> {
    tasks
        .iter()
        .position(|t| {
            t.id == lease.task
                && t.status == TaskStatus::Running
                && t.epoch as i64 == lease.epoch
                && t.worker.as_deref() == Some(lease.holder.as_str())
                && t.lease_deadline.is_some_and(|d| d >= now)
        })
        .ok_or_else(|| lost(lease, doing))
}

/// Whether `lease` is the one that completed its task (see
/// [`TaskLeases::complete`]: a repeated completion is told it was recorded).
pub fn completed_by(tasks: &[TaskEntry], lease: &Lease) -> bool {
    tasks.iter().any(|t| {
        t.id == lease.task
            && t.status == TaskStatus::Completed
            && t.epoch as i64 == lease.epoch
            && t.worker.as_deref() == Some(lease.holder.as_str())
    })
}

/// Extend a held lease by `ttl` from `now`.
pub fn renew(
    tasks: &mut [TaskEntry],
    lease: &mut Lease,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<()> {
    let i = held(tasks, lease, "renew the lease of", now)?;
    let deadline = now + to_chrono(ttl);
    tasks[i].lease_deadline = Some(deadline);
    lease.deadline = deadline;
    Ok(())
}

/// Task `t` (held) completed.
pub fn complete(t: &mut TaskEntry, now: DateTime<Utc>) {
    t.status = TaskStatus::Completed;
    t.lease_deadline = None;
    t.finished_at = Some(now);
}

/// Task `t` (held) failed an attempt because of `why`: pending again,
/// claimable `backoff` from `now`, while attempts remain; failed otherwise.
pub fn fail(
    t: &mut TaskEntry,
    why: &str,
    max_attempts: u32,
    backoff: Duration,
    now: DateTime<Utc>,
) -> AfterFailure {
    t.errors.push(format!("attempt {}: {why}", t.attempts));
    t.lease_deadline = None;
    if t.attempts >= max_attempts {
        t.status = TaskStatus::Failed;
        t.summary = Some(format!("failed after {} attempt(s): {why}", t.attempts));
        t.finished_at = Some(now);
        AfterFailure::Failed
    } else {
        t.status = TaskStatus::Pending;
        t.retry_at = Some(now + to_chrono(backoff));
        AfterFailure::Retry
    }
}

/// Task `t` (held) given back unfinished: pending, the attempt not counted.
pub fn release(t: &mut TaskEntry) {
    t.status = TaskStatus::Pending;
    t.lease_deadline = None;
    t.attempts = t.attempts.saturating_sub(1);
}

/// Task `t`'s record.
pub fn record(t: &TaskEntry) -> LeaseRecord {
    let status = serde_json::to_value(t.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    LeaseRecord {
        task: t.id.clone(),
        status,
        holder: t.worker.clone(),
        epoch: t.epoch as i64,
        attempts: t.attempts as i32,
        lease_deadline: t.lease_deadline,
        retry_at: t.retry_at,
        errors: t.errors.clone(),
    }
}

/// Task records of their own under [`TaskLeases`], operated on by the
/// functions above (what the supervisor applies to its document): the
/// file store's side of the contract `omk-core/tests/leases.rs` runs
/// against both stores.
pub struct Board {
    team: String,
    max_attempts: u32,
    tasks: Mutex<Vec<TaskEntry>>,
}

impl Board {
    /// Pending tasks `t1`..`tN` with these titles.
    pub fn new(team: &str, titles: &[&str], max_attempts: u32) -> Board {
        let tasks = titles
            .iter()
            .enumerate()
            .map(|(i, t)| TaskEntry::new(i, t.to_string()))
            .collect();
        Board {
            team: team.to_string(),
            max_attempts,
            tasks: Mutex::new(tasks),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<TaskEntry>) -> R) -> R {
        f(&mut self.tasks.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl TaskLeases for Board {
    async fn claim(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        Ok(self.with(|tasks| {
            match claim(tasks, holder, None, self.max_attempts, ttl, Utc::now()).0 {
                Found::Task(i) => Some(lease_of(&self.team, tasks, i)),
                _ => None,
            }
        }))
    }

    async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<()> {
        self.with(|tasks| renew(tasks, lease, ttl, Utc::now()))
    }

    async fn complete(&self, lease: &Lease, result: &Value) -> Result<()> {
        self.with(|tasks| {
            if completed_by(tasks, lease) {
                return Ok(());
            }
            let now = Utc::now();
            let i = held(tasks, lease, "complete", now)?;
            let t = &mut tasks[i];
            t.summary = result["summary"].as_str().map(str::to_string);
            t.tokens += result["tokens"].as_u64().unwrap_or(0);
            complete(t, now);
            Ok(())
        })
    }

    async fn fail(&self, lease: &Lease, why: &str, backoff: Duration) -> Result<AfterFailure> {
        self.with(|tasks| {
            let now = Utc::now();
            let i = held(tasks, lease, "fail", now)?;
            Ok(fail(&mut tasks[i], why, self.max_attempts, backoff, now))
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.with(|tasks| {
            let i = held(tasks, lease, "release", Utc::now())?;
            release(&mut tasks[i]);
            Ok(())
        })
    }

    async fn records(&self) -> Result<Vec<LeaseRecord>> {
        Ok(self.with(|tasks| tasks.iter().map(record).collect()))
    }
}
