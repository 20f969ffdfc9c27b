//! The file store behind the seam's traits: today's code over a state
//! root. Team documents are `team/<name>/team.json` (revision: a digest of
//! the file), event logs their `events.jsonl` (numbered by
//! [`crate::events::EventLog`]), counters `metrics.json`, the change feed
//! the directories' change notifications, and named leases
//! `leases/<name>.json`, each changed under its file's lock.
//!
//! One process at a time owns a running team's files (its supervisor): the
//! document and log writes here are for the teams no process runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    lost_named, ChangeFeed, Counters, Documents, EventLogs, Feed, Leases, NamedLease, Versioned,
};
use crate::error::{Error, Result};
use crate::events::{Event, EventLog};
use crate::metrics::Counter;
use crate::paths::StatePaths;
use crate::store::{self, Document, FileLock};
use crate::watch::{Signal, Watch};

/// The file store of a state root.
#[derive(Debug, Clone)]
pub struct FileStore {
    paths: StatePaths,
}

impl FileStore {
    pub fn new(paths: StatePaths) -> FileStore {
        FileStore { paths }
    }

    fn team_file(&self, team: &str) -> Result<PathBuf> {
        Ok(self.paths.team_dir(team)?.join("team.json"))
    }

    fn lease_file(&self, name: &str) -> Result<PathBuf> {
        crate::paths::validate_name("lease", name)?;
        Ok(self
            .paths
            .root()
            .join("leases")
            .join(format!("{name}.json")))
    }
}

/// A document's revision: the first 16 hex digits of its bytes' SHA-256.
fn revision(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

fn decode(path: &std::path::Path, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptState {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl Documents for FileStore {
    async fn get(&self, team: &str) -> Result<Option<Versioned>> {
        let path = self.team_file(team)?;
        let Some(bytes) = read(&path)? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            doc: decode(&path, &bytes)?,
            revision: revision(&bytes),
        }))
    }

    async fn list(&self) -> Result<Vec<Value>> {
        let dir = self.paths.teams_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("list {}", dir.display()),
                    source: e,
                })
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            // A directory being created, or not a team's: skipped.
            if let Ok(Some(v)) = self.get(&name).await {
                out.push(v.doc);
            }
        }
        Ok(out)
    }

    async fn compare_and_set(&self, team: &str, expected: &str, doc: &Value) -> Result<String> {
        let path = self.team_file(team)?;
        let _lock = FileLock::exclusive(&store::lock_path_for(&path))?;
        let Some(bytes) = read(&path)? else {
            return Err(Error::NotFound(format!("no team named {team}")));
        };
        let now = revision(&bytes);
        if now != expected {
            return Err(Error::Conflict(format!(
                "team {team}'s document changed meanwhile (revision {now}, not {expected})"
            )));
        }
        let mut new = serde_json::to_vec_pretty(doc).map_err(|e| Error::invalid(e.to_string()))?;
        new.push(b'\n');
        store::write_atomic(&path, &new)?;
        Ok(revision(&new))
    }
}

impl EventLogs for FileStore {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<u64>> {
        let mut seqs = Vec::with_capacity(events.len());
        // One batch per run, in order (events of one run are the usual).
        let mut rest = events.into_iter().peekable();
        while let Some(first) = rest.next() {
            let run = first.run_id.clone();
            let mut batch = vec![first];
            while let Some(e) = rest.next_if(|e| e.run_id == run) {
                batch.push(e);
            }
            let path = self.paths.team_dir(&run)?.join("events.jsonl");
            let mut log = EventLog::open(&path)?;
            seqs.extend(log.append_batch(batch)?);
            log.sync()?;
        }
        Ok(seqs)
    }

    async fn read_after(&self, team: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let path = self.paths.team_dir(team)?.join("events.jsonl");
        crate::events::read_events_after(&path, after, limit)
    }
}

impl Counters for FileStore {
    async fn add(&self, deltas: &[(Counter, u64)]) -> Result<()> {
        crate::metrics::add(&self.paths.metrics(), deltas)
    }

    async fn all(&self) -> Result<BTreeMap<String, u64>> {
        let m = crate::metrics::read(&self.paths.metrics())?;
        let v = serde_json::to_value(&m).unwrap_or(Value::Null);
        Ok(v.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix("total_")?.to_string(), v.as_u64()?)))
            .filter(|(_, v)| *v > 0)
            .collect())
    }
}

/// Whether a file is one whose change a team's followers care about.
fn team_file(p: &std::path::Path) -> bool {
    matches!(
        crate::watch::document_name(p),
        Some("events.jsonl" | "team.json")
    )
}

impl ChangeFeed for FileStore {
    async fn changes(&self, team: Option<&str>) -> Result<Feed> {
        let signal = Signal::new();
        let watch = match team {
            Some(t) => Watch::signal(&self.paths.team_dir(t)?, signal.clone(), team_file)?,
            // The teams' directory (a team created) and every team's.
            None => {
                let dir = self.paths.teams_dir();
                let mut w = Watch::signal(&dir, signal.clone(), |_| true)?;
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten().filter(|e| e.path().is_dir()) {
                        w.add(&e.path())?;
                    }
                }
                w
            }
        };
        Ok(Feed {
            signal,
            _source: Some(Box::new(watch)),
        })
    }
}

/// `leases/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    version: u32,
    holder: Option<String>,
    epoch: i64,
    deadline: Option<DateTime<Utc>>,
}

impl Document for LeaseDoc {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "lease";
}

fn fresh() -> LeaseDoc {
    LeaseDoc {
        version: LeaseDoc::VERSION,
        holder: None,
        epoch: 0,
        deadline: None,
    }
}

fn until(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

/// Whether `d` still holds `lease` (its epoch, before its deadline).
fn holds(d: &LeaseDoc, lease: &NamedLease) -> bool {
    d.epoch == lease.epoch
        && d.holder.as_deref() == Some(lease.holder.as_str())
        && d.deadline.is_some_and(|at| at >= Utc::now())
}

impl Leases for FileStore {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<NamedLease>> {
        let path = self.lease_file(name)?;
        store::update_doc(&path, fresh, |d: &mut LeaseDoc| {
            let free = d.holder.is_none() || d.deadline.is_none_or(|at| at < Utc::now());
            if !free {
                return Ok(None);
            }
            d.epoch += 1;
            d.holder = Some(holder.to_string());
            d.deadline = Some(until(ttl));
            Ok(Some(NamedLease {
                name: name.to_string(),
                holder: holder.to_string(),
                epoch: d.epoch,
                deadline: d.deadline.unwrap_or_default(),
            }))
        })
    }

    async fn renew(&self, lease: &mut NamedLease, ttl: Duration) -> Result<()> {
        let path = self.lease_file(&lease.name)?;
        let deadline = store::update_doc(&path, fresh, |d: &mut LeaseDoc| {
            if !holds(d, lease) {
                return Err(lost_named(lease, "renew"));
            }
            d.deadline = Some(until(ttl));
            Ok(d.deadline)
        })?;
        lease.deadline = deadline.unwrap_or_default();
        Ok(())
    }

    async fn release(&self, lease: &NamedLease) -> Result<()> {
        let path = self.lease_file(&lease.name)?;
        store::update_doc(&path, fresh, |d: &mut LeaseDoc| {
            if !holds(d, lease) {
                return Err(lost_named(lease, "release"));
            }
            d.holder = None;
            d.deadline = None;
            Ok(())
        })
    }
}
