//! The storage seam: what omk needs from a store, as traits each store
//! implements: leased task records ([`TaskLeases`]), team documents
//! ([`Documents`]), event logs ([`EventLogs`]), counters ([`Counters`]), a
//! change feed ([`ChangeFeed`]), named leases ([`Leases`]) and pool
//! admission ([`PoolAdmission`]). The file
//! store's side is [`file::FileStore`] (today's code over a state root
//! behind them) and `crate::team::board`; PostgreSQL's is `crate::pg`.
//! `omk-core/tests/seam.rs` and `omk-core/tests/leases.rs` run one contract
//! per trait against both.
//!
//! Task leases:
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
//! Pool admission ([`PoolAdmission`]): a slot of a pool held under a
//! lease, refused while the pool's capacity is taken. The file store's
//! pools are `crate::pool::Pools` (`pools/<name>.json`, capacity from
//! `[pools.NAME]`); PostgreSQL's are cluster-wide (`crate::pg::pools`,
//! capacity set with `omk pools set`), and there a claimed task holds a
//! slot of its team's pool for as long as its lease.

pub mod file;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::metrics::Counter;
use crate::watch::Signal;

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
    /// Completing again with the lease that completed the task succeeds
    /// and records nothing more: a completion retried because its reply was
    /// lost (the connection dropped after the commit) learns it was
    /// recorded. Any other write with that lease is refused.
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

/// A document and its revision (opaque; it changes with every write).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub doc: Value,
    pub revision: String,
}

/// Team documents: get, list, and compare-and-set.
pub trait Documents {
    /// Team `team`'s document, with its revision.
    fn get(&self, team: &str) -> impl Future<Output = Result<Option<Versioned>>> + Send;

    /// Every team's document.
    fn list(&self) -> impl Future<Output = Result<Vec<Value>>> + Send;

    /// Replace team `team`'s document with `doc` if its revision is still
    /// `expected`; the new revision. `conflict` (and nothing written) when
    /// it changed meanwhile, `not_found` when there is no such team.
    fn compare_and_set(
        &self,
        team: &str,
        expected: &str,
        doc: &Value,
    ) -> impl Future<Output = Result<String>> + Send;
}

/// Event logs with sequence numbers.
pub trait EventLogs {
    /// Append `events` (their payloads redacted), in order, as one batch;
    /// their sequence numbers, rising.
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// Team `team`'s events after sequence number `after` (0: from the
    /// first), at most `limit`, in order, each with its `seq`.
    fn read_after(
        &self,
        team: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;
}

/// Named counters (a [`Counter`]'s snake-case name).
pub trait Counters {
    /// Add to several counters at once.
    fn add(&self, deltas: &[(Counter, u64)]) -> impl Future<Output = Result<()>> + Send;

    /// Every counter counted so far, by name.
    fn all(&self) -> impl Future<Output = Result<BTreeMap<String, u64>>> + Send;
}

/// A change feed: a signal raised when a team's events or document change.
/// It only wakes: a woken reader reads what is new by sequence, so a
/// coalesced or missed raise loses nothing.
pub trait ChangeFeed {
    /// Changes of `team` (of every team when `None`), while the returned
    /// [`Feed`] is kept.
    fn changes(&self, team: Option<&str>) -> impl Future<Output = Result<Feed>> + Send;
}

/// What [`ChangeFeed::changes`] returns: the signal, and what keeps it
/// raised.
pub struct Feed {
    pub signal: Arc<Signal>,
    pub(crate) _source: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// A named lease (a run's liveness, a team's coordination): one holder at a
/// time, until its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedLease {
    pub name: String,
    pub holder: String,
    /// Raised by every acquisition: the fence of this holder's writes.
    pub epoch: i64,
    pub deadline: DateTime<Utc>,
}

/// Named leases: acquire with a TTL and get an epoch, renew, release; a
/// stale epoch is refused (`conflict`).
pub trait Leases {
    /// Take lease `name` for `holder` for `ttl` if nobody holds it (never
    /// held, released, or past its deadline); `None` while another holds
    /// it.
    fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<NamedLease>>> + Send;

    /// Extend a held lease by `ttl` from now; refused once it expired or
    /// was taken.
    fn renew(
        &self,
        lease: &mut NamedLease,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Give a held lease up: anyone may acquire it at once.
    fn release(&self, lease: &NamedLease) -> impl Future<Output = Result<()>> + Send;
}

/// The refusal of a write naming a named lease no longer held.
pub fn lost_named(lease: &NamedLease, doing: &str) -> Error {
    Error::Conflict(format!(
        "cannot {doing} lease {}: epoch {} of {} is no longer valid (expired, released or \
         taken by another)",
        lease.name, lease.epoch, lease.holder
    ))
}

/// A slot of a pool held under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSlot {
    pub pool: String,
    pub id: String,
    pub holder: String,
    /// Raised by every admission to the pool: the fence of this holder's
    /// writes.
    pub epoch: i64,
    pub deadline: DateTime<Utc>,
}

/// The answer to [`PoolAdmission::admit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    Admitted(PoolSlot),
    /// Every slot is taken (why, with the numbers). Nothing was queued:
    /// ask again when the store's change feed says something changed.
    Full(String),
}

/// A pool's capacity and the slots taken in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLoad {
    pub pool: String,
    /// The most slots held at once; `None`: no cap in this store.
    pub capacity: Option<u32>,
    /// The slots held now (expired ones not counted).
    pub active: u32,
}

/// Pool admission: take a slot of a pool with a TTL, renew it, release it;
/// refused while every slot is taken; a stale slot's writes are refused
/// (`conflict`). A slot past its deadline counts no more: its holder is
/// presumed dead.
pub trait PoolAdmission {
    /// A slot of `pool` for `holder` for `ttl`, or `Full`. `not_found` for
    /// a pool this store does not know.
    fn admit(
        &self,
        pool: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Admit>> + Send;

    /// Extend a held slot by `ttl` from now; refused once it expired or
    /// was released.
    fn renew_slot(
        &self,
        slot: &mut PoolSlot,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Give a slot back: someone else may take it at once.
    fn release_slot(&self, slot: &PoolSlot) -> impl Future<Output = Result<()>> + Send;

    /// `pool`'s capacity and load.
    fn load(&self, pool: &str) -> impl Future<Output = Result<PoolLoad>> + Send;
}

/// The refusal of a write naming a pool slot no longer held.
pub fn lost_slot(slot: &PoolSlot, doing: &str) -> Error {
    Error::Conflict(format!(
        "cannot {doing} slot {} of pool {}: epoch {} of {} is no longer valid (expired or \
         released)",
        slot.id, slot.pool, slot.epoch, slot.holder
    ))
}
