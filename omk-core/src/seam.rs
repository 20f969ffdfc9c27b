//! The storage seam of team scheduling: leased task records, as a trait
//! each store implements.
//!
//! A task is one record (status, holder, lease deadline, epoch, attempts,
//! retry time). A claim takes the first claimable one, raises its epoch and
//! gives its holder a [`Lease`]; every later write of that holder (renew,
//! complete, fail, release) names the lease and is refused with
//! `conflict` unless the record is still running under that epoch and its
//! deadline has not passed. So a worker whose lease expired, or was taken
//! over, can never record a completion. A running task past its deadline
//! is claimable again (its holder is presumed dead), and the attempt it
//! ended is recorded as `attempt N: lease expired (HOLDER stopped renewing
//! it)`. Retry backoff is a time in the record, not a timer in a process.
//!
//! Two backends implement [`TaskLeases`]:
//! - the file store's: a local team's records in its `team.json`
//!   (`crate::team::board`), claimed by the workers of the one supervisor
//!   process, with the local clock;
//! - PostgreSQL's (`crate::pg::tasks`): claimed by `omk worker` daemons on
//!   any host with `FOR UPDATE SKIP LOCKED`, with the server's clock.
//!
//! `omk-core/tests/leases.rs` runs one contract against both.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};

/// A task held under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub team: String,
    pub task: String,
    /// Raised by every claim: the fence of this holder's writes.
    pub epoch: i64,
    pub attempt: i32,
    pub holder: String,
    pub deadline: DateTime<Utc>,
    /// The agent profile that runs it.
    pub agent: String,
    /// What the holder needs to run it (PostgreSQL: title, prompt,
    /// shared code...; local teams keep it in the run: null).
    pub spec: Value,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Claimable again after the backoff.
    Retry,
    /// No attempt left.
    Failed,
}

/// One task's record, as any backend keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRecord {
    pub task: String,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub holder: Option<String>,
    pub epoch: i64,
    pub attempts: i32,
    pub lease_deadline: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    /// One line per failed attempt.
    pub errors: Vec<String>,
}

/// Leased task records: claim, renew, complete, fail and release, fenced
/// by epoch (module docs).
pub trait TaskLeases {
    /// Claim the first claimable task (pending and past its retry time, or
    /// running past its deadline) for `holder`, under a lease of `ttl`.
    /// `None` when there is nothing to claim now.
    fn claim(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Extend the lease by `ttl` from now; refused once it expired, even
    /// if nobody claimed the task since.
    fn renew(&self, lease: &mut Lease, ttl: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Record the task completed with `result` (its summary, tokens...).
    fn complete(&self, lease: &Lease, result: &Value) -> impl Future<Output = Result<()>> + Send;

    /// Record a failed attempt: claimable again `backoff` from now while
    /// attempts remain, failed otherwise.
    fn fail(
        &self,
        lease: &Lease,
        why: &str,
        backoff: Duration,
    ) -> impl Future<Output = Result<AfterFailure>> + Send;

    /// Give the task back unfinished (the holder is stopping): claimable at
    /// once, the attempt not counted.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;

    /// Every task's record, in order.
    fn records(&self) -> impl Future<Output = Result<Vec<LeaseRecord>>> + Send;
}

/// The refusal of a write naming a lease that no longer holds its task.
pub fn lost(lease: &Lease, doing: &str) -> Error {
    Error::Conflict(format!(
        "cannot {doing} task {} of team {}: lease epoch {} of {} is no longer valid \
         (expired, or the task was claimed again)",
        lease.task, lease.team, lease.epoch, lease.holder
    ))
}

/// The evidence line of an attempt whose lease expired.
pub fn expired_line(attempt: i64, holder: &str) -> String {
    format!("attempt {attempt}: lease expired ({holder} stopped renewing it)")
}
