//! Admission control (DESIGN.md §8): every agent slot is admitted through a
//! pool. Admission, queueing and release are read-modify-writes of
//! `pools/<name>.json` under its lock, so they are atomic across processes.
//!
//! A slot or queue entry whose owner process has died is reclaimed by the
//! next admission (and by `pools cleanup`, which also drops entries of runs
//! that have ended), so a SIGKILLed supervisor never holds capacity forever.
//!
//! Pool documents are written atomically but without fsync
//! ([`Durability::Volatile`]): after a power loss every owner is dead, so
//! there is nothing to preserve, and admission stays cheap.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, PoolConfig};
use crate::error::{Error, Result};
use crate::paths::StatePaths;
use crate::process::ProcessId;
use crate::seam::{lost_slot, Admit, PoolAdmission, PoolLoad, PoolSlot};
use crate::store::{self, Document, Durability};

/// Who holds or waits for a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// The team (run) the worker belongs to.
    pub run: String,
    pub worker: String,
    pub process: ProcessId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub id: String,
    #[serde(flatten)]
    pub owner: Owner,
    pub admitted_at: DateTime<Utc>,
    /// A slot taken through [`PoolAdmission`]: held until this time
    /// (renewed by its holder), whatever becomes of its owner process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// A leased slot's epoch (the pool's admission count when it was
    /// taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub ticket: u64,
    #[serde(flatten)]
    pub owner: Owner,
    pub queued_at: DateTime<Utc>,
}

/// What [`Pools::room`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    /// A worker would be admitted now.
    Free,
    /// Every slot is taken (or promised to the queue): later, maybe.
    Busy(String),
    /// The pool cannot admit anyone until something outside omk changes
    /// (its disk cap is exceeded, or it does not exist).
    Never(String),
}

/// `pools/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub active: Vec<Slot>,
    #[serde(default)]
    pub queue: Vec<QueueEntry>,
    #[serde(default)]
    pub next_ticket: u64,
    #[serde(default)]
    pub total_admitted: u64,
    #[serde(default)]
    pub total_rejected: u64,
    #[serde(default)]
    pub total_queued: u64,
    #[serde(default)]
    pub total_reclaimed: u64,
}

impl Document for PoolState {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "pool document";
}

/// The doorbell kind of queued pool workers.
const POOL_DOORBELL: &str = "pool";

/// Wake every queued worker of the pools in `pools_dir` whose process is
/// one of `pids`.
fn wake_queued(pools_dir: &std::path::Path, pids: Vec<u32>) {
    crate::doorbell::wake(POOL_DOORBELL, pools_dir, pids);
}

impl PoolState {
    /// The processes with a queued worker.
    fn queued_pids(&self) -> Vec<u32> {
        self.queue.iter().map(|q| q.owner.process.pid).collect()
    }

    fn new(name: &str) -> PoolState {
        PoolState {
            version: Self::VERSION,
            name: name.into(),
            active: Vec::new(),
            queue: Vec::new(),
            next_ticket: 1,
            total_admitted: 0,
            total_rejected: 0,
            total_queued: 0,
            total_reclaimed: 0,
        }
    }

    /// One admission decision (see [`Pools::try_admit`]); an admitted
    /// owner gets the new slot's id.
    fn admit(
        &mut self,
        cfg: &PoolConfig,
        owner: &Owner,
        ticket: Option<u64>,
        disk_problem: Option<&str>,
    ) -> Admission<String> {
        let ahead = self
            .queue
            .iter()
            .filter(|q| ticket.is_none_or(|t| q.ticket < t))
            .count();
        let free = (cfg.max_workers as usize).saturating_sub(self.active.len());
        if let Some(why) = disk_problem {
            self.queue.retain(|q| Some(q.ticket) != ticket);
            self.total_rejected += 1;
            return Admission::Rejected(why.to_string());
        }
        if free > ahead {
            self.queue.retain(|q| Some(q.ticket) != ticket);
            let id = crate::ids::random_hex(6);
            self.active.push(Slot {
                id: id.clone(),
                owner: owner.clone(),
                admitted_at: Utc::now(),
                deadline: None,
                epoch: None,
            });
            self.total_admitted += 1;
            return Admission::Admitted(id);
        }
        if let Some(t) = ticket {
            if self.queue.iter().any(|q| q.ticket == t) {
                return Admission::Queued(t);
            }
        }
        if let Some(cap) = cfg.queue_capacity {
            if self.queue.len() >= cap as usize {
                self.total_rejected += 1;
                return Admission::Rejected(format!(
                    "pool {} is full: {} active of {}, queue at its capacity of {cap}",
                    self.name,
                    self.active.len(),
                    cfg.max_workers
                ));
            }
        }
        let t = self.next_ticket.max(1);
        self.next_ticket = t + 1;
        self.queue.push(QueueEntry {
            ticket: t,
            owner: owner.clone(),
            queued_at: Utc::now(),
        });
        self.total_queued += 1;
        Admission::Queued(t)
    }

    /// Why a new owner would not be admitted now without queueing (every
    /// slot taken, or promised to the queue); `None` when it would.
    fn busy(&self, cfg: &PoolConfig) -> Option<String> {
        let free = (cfg.max_workers as usize).saturating_sub(self.active.len());
        (free <= self.queue.len()).then(|| {
            format!(
                "pool {} is busy: {} of {} slots taken, {} waiting",
                self.name,
                self.active.len(),
                cfg.max_workers,
                self.queue.len()
            )
        })
    }

    /// Drop slots and queue entries whose owner is dead or whose run is
    /// over. Returns what was removed.
    fn reclaim(&mut self, run_is_over: &dyn Fn(&str) -> bool) -> (Vec<Slot>, Vec<QueueEntry>) {
        // Most entries share a few processes (one supervisor holds all of
        // a run's slots): look each up once.
        let mut alive = std::collections::HashMap::new();
        let mut stale = |o: &Owner| {
            !*alive
                .entry(o.process)
                .or_insert_with(|| o.process.is_alive())
                || run_is_over(&o.run)
        };
        let now = Utc::now();
        let (dead_slots, live): (Vec<Slot>, Vec<Slot>) = self
            .active
            .drain(..)
            .partition(|s| s.deadline.map_or_else(|| stale(&s.owner), |d| d < now));
        self.active = live;
        let (dead_queue, live): (Vec<QueueEntry>, Vec<QueueEntry>) =
            self.queue.drain(..).partition(|q| stale(&q.owner));
        self.queue = live;
        self.total_reclaimed += (dead_slots.len() + dead_queue.len()) as u64;
        (dead_slots, dead_queue)
    }

    /// The API.md `pools status` entry.
    pub fn to_api_json(&self, cfg: &PoolConfig) -> Value {
        json!({
            "name": self.name,
            "max_workers": cfg.max_workers,
            "max_disk_gb": cfg.max_disk_gb,
            "active_tasks": self.active.len(),
            "queued_tasks": self.queue.len(),
            "total_admitted": self.total_admitted,
            "total_rejected": self.total_rejected,
        })
    }
}

/// A held slot. Dropping it releases the slot.
#[derive(Debug)]
pub struct SlotGuard {
    file: PathBuf,
    slot_id: String,
    pub pool: String,
}

impl SlotGuard {
    pub fn id(&self) -> &str {
        &self.slot_id
    }
}

impl<S> Admission<S> {
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Admission<T> {
        match self {
            Admission::Admitted(s) => Admission::Admitted(f(s)),
            Admission::Queued(t) => Admission::Queued(t),
            Admission::Rejected(why) => Admission::Rejected(why),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        release(&self.file, &self.pool, std::mem::take(&mut self.slot_id));
    }
}

/// Slot releases of this process not yet written.
///
/// Releases are group-committed: a dropped guard queues its slot, and
/// whoever finds no release being written writes every queued one with one
/// locked update per pool file, while the others wait for that write (so a
/// slot is free when its guard's drop returns, as with one update each).
/// When a wave of workers ends together, that is a few updates instead of
/// one per worker.
#[derive(Default)]
struct Releases {
    /// `(pool file, pool name, slot id)`, in release order.
    pending: Vec<(PathBuf, String, String)>,
    /// Releases queued so far, and written so far (a prefix of them).
    queued: u64,
    written: u64,
    writing: bool,
}

static RELEASES: std::sync::Mutex<Releases> = std::sync::Mutex::new(Releases {
    pending: Vec::new(),
    queued: 0,
    written: 0,
    writing: false,
});
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

fn releases() -> std::sync::MutexGuard<'static, Releases> {
    RELEASES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Release slot `id` of `pool` (file `file`); returns once it is written.
fn release(file: &std::path::Path, pool: &str, id: String) {
    let mut r = releases();
    r.pending.push((file.to_path_buf(), pool.to_string(), id));
    r.queued += 1;
    let mine = r.queued;
    loop {
        if r.written >= mine {
            return;
        }
        if !r.writing {
            break;
        }
        r = RELEASED.wait(r).unwrap_or_else(|e| e.into_inner());
    }
    r.writing = true;
    let batch = std::mem::take(&mut r.pending);
    let upto = r.queued;
    drop(r);
    // Hand the turn on even if the write unwinds, or every later release
    // would wait forever.
    struct Done(u64);
    impl Drop for Done {
        fn drop(&mut self) {
            let mut r = releases();
            r.written = self.0;
            r.writing = false;
            drop(r);
            RELEASED.notify_all();
        }
    }
    let _done = Done(upto);
    write_releases(batch);
}

/// One locked update per pool file, then wake the queued workers (of this
/// process and of others) of each.
fn write_releases(mut batch: Vec<(PathBuf, String, String)>) {
    batch.sort_by(|a, b| a.0.cmp(&b.0));
    for group in batch.chunk_by(|a, b| a.0 == b.0) {
        let (file, pool) = (&group[0].0, &group[0].1);
        let ids: Vec<&str> = group.iter().map(|(_, _, id)| id.as_str()).collect();
        let result = store::update_doc_with(
            file,
            Durability::Volatile,
            || PoolState::new(pool),
            |p| {
                p.active.retain(|s| !ids.contains(&s.id.as_str()));
                Ok(p.queued_pids())
            },
        );
        match result {
            Ok(pids) => {
                if let Some(dir) = file.parent() {
                    wake_queued(dir, pids);
                }
            }
            Err(e) => tracing::warn!(
                "could not release pool slot(s) {} of {pool}: {e}",
                ids.join(", ")
            ),
        }
    }
}

/// The outcome of one admission attempt.
#[derive(Debug)]
pub enum Admission<S = SlotGuard> {
    Admitted(S),
    /// Waiting; call [`Pools::try_admit`] again with the ticket.
    Queued(u64),
    /// Refused (queue full, or disk over its cap), with the reason.
    Rejected(String),
}

/// Admission control over the pools of one state root.
#[derive(Debug, Clone)]
pub struct Pools {
    paths: StatePaths,
    config: Config,
}

impl Pools {
    pub fn new(paths: StatePaths, config: Config) -> Pools {
        Pools { paths, config }
    }

    fn settings(&self, pool: &str) -> Result<PoolConfig> {
        crate::paths::validate_name("pool name", pool)?;
        self.config.pool(pool).ok_or_else(|| {
            Error::NotFound(format!(
                "no pool named {pool:?}; configure [pools.{pool}] or use one of: {}",
                self.config.pool_names().join(", ")
            ))
        })
    }

    fn update<R>(&self, pool: &str, f: impl FnOnce(&mut PoolState) -> Result<R>) -> Result<R> {
        let file = self.paths.pool_file(pool)?;
        store::update_doc_with(&file, Durability::Volatile, || PoolState::new(pool), f)
    }

    /// Ask for a slot; `ticket` is the one a previous `Queued` answer gave.
    /// Slots go to queued owners in ticket order.
    pub fn try_admit(&self, pool: &str, owner: &Owner, ticket: Option<u64>) -> Result<Admission> {
        let mut answers = self.admit_each(pool, &[(owner, ticket)])?;
        Ok(answers.remove(0))
    }

    /// [`Pools::try_admit`] for several new owners at once (a run's
    /// workers), in one update of the pool document: each gets the answer
    /// it would get asking alone, in order.
    pub fn try_admit_many(&self, pool: &str, owners: &[Owner]) -> Result<Vec<Admission>> {
        let asks: Vec<(&Owner, Option<u64>)> = owners.iter().map(|o| (o, None)).collect();
        self.admit_each(pool, &asks)
    }

    fn admit_each(&self, pool: &str, asks: &[(&Owner, Option<u64>)]) -> Result<Vec<Admission>> {
        let cfg = self.settings(pool)?;
        let file = self.paths.pool_file(pool)?;
        let disk_problem = cfg.max_disk_gb.and_then(|cap| self.disk_over(cap));
        store::update_doc_with(
            &file,
            Durability::Volatile,
            || PoolState::new(pool),
            |p| {
                // Dead owners only: checking each slot's run document on every
                // admission costs a read per slot; `cleanup` does that.
                self.reclaim(p, &|_| false);
                Ok(asks
                    .iter()
                    .map(|(owner, ticket)| {
                        let answer = p.admit(&cfg, owner, *ticket, disk_problem.as_deref());
                        answer.map(|slot_id| SlotGuard {
                            file: file.clone(),
                            slot_id,
                            pool: pool.into(),
                        })
                    })
                    .collect())
            },
        )
    }

    /// Whether a new run could be admitted now, without joining the queue:
    /// what controllers (goal waves, fix rounds, ralph iterations, autopilot
    /// phases) ask before they start a team, so a pool that says no makes
    /// them wait instead of creating teams that are refused at once.
    pub fn room(&self, pool: &str) -> Result<Room> {
        let cfg = match self.settings(pool) {
            Ok(c) => c,
            Err(e) => return Ok(Room::Never(e.to_string())),
        };
        if let Some(why) = cfg.max_disk_gb.and_then(|cap| self.disk_over(cap)) {
            // Waiting does not shrink the state: someone must remove teams
            // or raise the cap.
            return Ok(Room::Never(format!("pool {pool} admits no worker: {why}")));
        }
        let file = self.paths.pool_file(pool)?;
        store::update_doc_with(
            &file,
            Durability::Volatile,
            || PoolState::new(pool),
            |p| {
                self.reclaim(p, &|_| false);
                Ok(p.busy(&cfg).map_or(Room::Free, Room::Busy))
            },
        )
    }

    /// Leave the queue (the waiter gave up or was cancelled); those behind
    /// it look again.
    pub fn leave_queue(&self, pool: &str, ticket: u64) -> Result<()> {
        let pids = self.update(pool, |p| {
            p.queue.retain(|q| q.ticket != ticket);
            Ok(p.queued_pids())
        })?;
        wake_queued(&self.pools_dir(), pids);
        Ok(())
    }

    /// Raised when a slot of this state root's pools is released or a queue
    /// entry ahead leaves: in this process at once, from other processes by
    /// the doorbell of this process ([`crate::doorbell`]), which whoever
    /// frees room rings for every process with a queued worker. A queued
    /// worker waits on it instead of re-checking on a timer.
    pub fn changes(&self) -> std::sync::Arc<crate::watch::Signal> {
        crate::doorbell::shared_signal(POOL_DOORBELL, &self.pools_dir())
    }

    fn pools_dir(&self) -> PathBuf {
        self.paths.root().join("pools")
    }

    /// [`PoolState::reclaim`], then wake the queued workers when room was
    /// made (a slot, or a queue entry ahead of them, gone).
    fn reclaim(
        &self,
        p: &mut PoolState,
        run_is_over: &dyn Fn(&str) -> bool,
    ) -> (Vec<Slot>, Vec<QueueEntry>) {
        let removed = p.reclaim(run_is_over);
        if !removed.0.is_empty() || !removed.1.is_empty() {
            wake_queued(&self.pools_dir(), p.queued_pids());
        }
        removed
    }

    /// `pools status`: every pool, with live numbers.
    ///
    /// `run_is_over` says whether a run (team) has ended: its entries are
    /// counted as stale. The caller knows runs; pools do not.
    pub fn status(&self, run_is_over: &dyn Fn(&str) -> bool) -> Result<Value> {
        let mut pools = Vec::new();
        for name in self.config.pool_names() {
            let cfg = self.settings(&name)?;
            let file = self.paths.pool_file(&name)?;
            let state =
                store::read_doc::<PoolState>(&file)?.unwrap_or_else(|| PoolState::new(&name));
            let mut live = state.clone();
            live.reclaim(run_is_over);
            let mut entry = live.to_api_json(&cfg);
            entry["queue_capacity"] = json!(cfg.queue_capacity);
            entry["stale_entries"] = json!(
                (state.active.len() - live.active.len()) + (state.queue.len() - live.queue.len())
            );
            pools.push(entry);
        }
        Ok(json!({ "pools": pools }))
    }

    /// `pools cleanup`: remove slots and queue entries whose owner process
    /// is dead or whose run is over (`run_is_over`); report exactly what
    /// went.
    pub fn cleanup(&self, run_is_over: &dyn Fn(&str) -> bool) -> Result<Value> {
        let mut report = Vec::new();
        let mut total = 0;
        for name in self.config.pool_names() {
            let file = self.paths.pool_file(&name)?;
            if !file.exists() {
                continue;
            }
            let (slots, queue) = self.update(&name, |p| Ok(self.reclaim(p, run_is_over)))?;
            total += slots.len() + queue.len();
            report.push(json!({
                "pool": name,
                "removed_slots": slots.iter().map(|s| json!({"id": s.id, "run": s.owner.run, "worker": s.owner.worker, "pid": s.owner.process.pid})).collect::<Vec<_>>(),
                "removed_queue_entries": queue.iter().map(|q| json!({"ticket": q.ticket, "run": q.owner.run, "worker": q.owner.worker, "pid": q.owner.process.pid})).collect::<Vec<_>>(),
            }));
        }
        Ok(json!({ "removed": total, "pools": report }))
    }

    fn disk_over(&self, cap_gb: f64) -> Option<String> {
        let used = dir_size(&self.paths.teams_dir());
        let cap = (cap_gb * 1024.0 * 1024.0 * 1024.0) as u64;
        (used > cap).then(|| {
            format!(
                "team state uses {:.2} GB, over the pool's max_disk_gb of {cap_gb}; remove old teams",
                used as f64 / 1e9
            )
        })
    }
}

/// The refusal of a cluster capacity for `pool` without a store to keep it.
pub fn capacity_needs_a_store(pool: &str) -> Error {
    Error::InvalidInput(format!(
        "a pool's capacity across a cluster is declared in a PostgreSQL store, and none is \
         given (--store URL, [store] url or $OMK_STORE); a local pool's capacity is \
         [pools.{pool}] max_workers in config"
    ))
}

/// The file store's pool admission: leased slots in `pools/<name>.json`
/// beside the slots of local teams' workers, counted against the same
/// `max_workers`, and behind its queue (a leased admission never jumps
/// it, and never joins it).
impl PoolAdmission for Pools {
    async fn admit(&self, pool: &str, holder: &str, ttl: Duration) -> Result<Admit> {
        let cfg = self.settings(pool)?;
        if let Some(why) = cfg.max_disk_gb.and_then(|cap| self.disk_over(cap)) {
            return Ok(Admit::Full(format!("pool {pool} admits no worker: {why}")));
        }
        let answer = self.update(pool, |p| {
            self.reclaim(p, &|_| false);
            if let Some(why) = p.busy(&cfg) {
                p.total_rejected += 1;
                return Ok(Admit::Full(why));
            }
            p.total_admitted += 1;
            let now = Utc::now();
            let slot = PoolSlot {
                pool: pool.to_string(),
                id: crate::ids::random_hex(6),
                holder: holder.to_string(),
                epoch: p.total_admitted as i64,
                deadline: now + ttl,
            };
            p.active.push(Slot {
                id: slot.id.clone(),
                owner: Owner {
                    run: holder.to_string(),
                    worker: "lease".into(),
                    process: ProcessId::current(),
                },
                admitted_at: now,
                deadline: Some(slot.deadline),
                epoch: Some(slot.epoch),
            });
            Ok(Admit::Admitted(slot))
        })?;
        Ok(answer)
    }

    async fn renew_slot(&self, slot: &mut PoolSlot, ttl: Duration) -> Result<()> {
        let deadline = self.update(&slot.pool, |p| {
            let now = Utc::now();
            let held = p.active.iter_mut().find(|s| {
                s.id == slot.id
                    && s.epoch == Some(slot.epoch)
                    && s.deadline.is_some_and(|d| d >= now)
            });
            Ok(held.map(|s| {
                let d = now + ttl;
                s.deadline = Some(d);
                d
            }))
        })?;
        match deadline {
            Some(d) => {
                slot.deadline = d;
                Ok(())
            }
            None => Err(lost_slot(slot, "renew")),
        }
    }

    async fn release_slot(&self, slot: &PoolSlot) -> Result<()> {
        let pids = self.update(&slot.pool, |p| {
            p.active
                .retain(|s| !(s.id == slot.id && s.epoch == Some(slot.epoch)));
            Ok(p.queued_pids())
        })?;
        wake_queued(&self.pools_dir(), pids);
        Ok(())
    }

    async fn load(&self, pool: &str) -> Result<PoolLoad> {
        let cfg = self.settings(pool)?;
        let file = self.paths.pool_file(pool)?;
        let mut state =
            store::read_doc::<PoolState>(&file)?.unwrap_or_else(|| PoolState::new(pool));
        state.reclaim(&|_| false);
        Ok(PoolLoad {
            pool: pool.to_string(),
            capacity: Some(cfg.max_workers),
            active: state.active.len() as u32,
        })
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(dir: &std::path::Path, max: u32, queue: Option<u32>) -> Pools {
        let mut cfg = Config::default();
        cfg.pools.insert(
            "p".into(),
            PoolConfig {
                max_workers: max,
                max_disk_gb: None,
                queue_capacity: queue,
            },
        );
        Pools::new(StatePaths::new(dir), cfg)
    }

    fn me(worker: &str) -> Owner {
        Owner {
            run: "r".into(),
            worker: worker.into(),
            process: ProcessId::current(),
        }
    }

    #[test]
    fn many_at_once_get_what_each_would_get_asking_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = pools(d.path(), 2, Some(1));
        let owners: Vec<Owner> = ["w1", "w2", "w3", "w4"].iter().map(|w| me(w)).collect();
        let answers = p.try_admit_many("p", &owners).unwrap();
        assert!(matches!(answers[0], Admission::Admitted(_)));
        assert!(matches!(answers[1], Admission::Admitted(_)));
        let Admission::Queued(t) = answers[2] else {
            panic!("{:?}", answers[2])
        };
        assert!(matches!(answers[3], Admission::Rejected(_)));
        // The queued one is first in line for the next free slot.
        drop(answers);
        assert!(matches!(
            p.try_admit("p", &me("w3"), Some(t)).unwrap(),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn releases_dropped_together_are_each_written_when_their_drop_returns() {
        let d = tempfile::tempdir().unwrap();
        let p = pools(d.path(), 16, None);
        let owners: Vec<Owner> = (0..16).map(|i| me(&format!("w{i}"))).collect();
        let guards: Vec<SlotGuard> = p
            .try_admit_many("p", &owners)
            .unwrap()
            .into_iter()
            .map(|a| match a {
                Admission::Admitted(g) => g,
                other => panic!("{other:?}"),
            })
            .collect();
        let file = p.paths.pool_file("p").unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(guards.len()));
        let threads: Vec<_> = guards
            .into_iter()
            .map(|g| {
                let (start, file) = (start.clone(), file.clone());
                std::thread::spawn(move || {
                    let id = g.id().to_string();
                    start.wait();
                    drop(g);
                    let state: PoolState = store::read_doc(&file).unwrap().unwrap();
                    assert!(state.active.iter().all(|s| s.id != id), "{id} still held");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state: PoolState = store::read_doc(&file).unwrap().unwrap();
        assert!(state.active.is_empty(), "{:?}", state.active);
    }

    #[test]
    fn admits_up_to_the_limit_then_queues_in_order_then_rejects() {
        let d = tempfile::tempdir().unwrap();
        let p = pools(d.path(), 2, Some(1));
        let Admission::Admitted(a) = p.try_admit("p", &me("w1"), None).unwrap() else {
            panic!()
        };
        let Admission::Admitted(_b) = p.try_admit("p", &me("w2"), None).unwrap() else {
            panic!()
        };
        let Admission::Queued(t) = p.try_admit("p", &me("w3"), None).unwrap() else {
            panic!()
        };
        assert!(matches!(
            p.try_admit("p", &me("w4"), None).unwrap(),
            Admission::Rejected(_)
        ));
        assert!(matches!(
            p.try_admit("p", &me("w3"), Some(t)).unwrap(),
            Admission::Queued(_)
        ));
        drop(a);
        assert!(matches!(
            p.try_admit("p", &me("w3"), Some(t)).unwrap(),
            Admission::Admitted(_)
        ));
        let s = p.status(&|_| false).unwrap();
        let entry = s["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "p")
            .unwrap()
            .clone();
        assert_eq!(
            (
                entry["total_admitted"].as_u64(),
                entry["total_rejected"].as_u64()
            ),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn dead_owners_are_reclaimed() {
        let d = tempfile::tempdir().unwrap();
        let p = pools(d.path(), 1, None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = Owner {
            run: "r".into(),
            worker: "w".into(),
            process: ProcessId::of(child.id()),
        };
        child.wait().unwrap();
        let Admission::Admitted(g) = p.try_admit("p", &dead, None).unwrap() else {
            panic!()
        };
        std::mem::forget(g); // as if the owner died without releasing
        let report = p.cleanup(&|_| false).unwrap();
        assert_eq!(report["removed"], 1);
        assert!(matches!(
            p.try_admit("p", &me("w2"), None).unwrap(),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn unknown_pool_is_not_found() {
        let d = tempfile::tempdir().unwrap();
        let p = pools(d.path(), 1, None);
        assert_eq!(
            p.try_admit("nope", &me("w"), None).unwrap_err().code(),
            crate::ErrorCode::NotFound
        );
        assert_eq!(
            p.try_admit("../x", &me("w"), None).unwrap_err().code(),
            crate::ErrorCode::InvalidInput
        );
    }
}
