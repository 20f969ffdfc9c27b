//! `/api/events`: server-sent events of changes to teams, goals, autopilot
//! and ralph runs, gates, pools and metrics.
//!
//! omk's state is files written by many processes. The feed subscribes to
//! their directories' change notifications ([`omk_core::watch`]: inotify,
//! or the notify crate's polling watcher where inotify is unavailable): the
//! state root, `pools/`, `gates/`, each kind's directory and each run's own
//! directory, none of them recursively (a run directory holds worktrees and
//! transcripts nobody follows). A notification names a file; the feed maps
//! it to the document it belongs to, compares that document's inode, size
//! and modification time with what it last sent (documents are replaced by
//! rename, so every write is a new inode) and broadcasts an event named
//! after its kind (`team`, `goal`, `autopilot`, `ralph`, `gates`, `pools`,
//! `metrics`) whose data is `{"name", "document"}` (`document` null when it
//! was removed). A comment keeps idle connections alive.
//!
//! Notifications coalesce and a burst is read once: a client sees the latest
//! version of every document, not every intermediate one. Every
//! [`SAFETY_SCAN`] the feed also compares every document, for notifications
//! that never come (a watch limit reached, a file system without them).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use omk_core::watch::{Signal, Watch};
use omk_core::Omk;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::Shared;

/// How often every document is compared without a notification.
const SAFETY_SCAN: Duration = Duration::from_secs(2);
/// Changed paths kept between two reads of the feed; beyond that the
/// next read is a whole scan.
const MAX_DIRTY: usize = 4096;
/// The run kinds: their directory, and the document in each run's directory.
const RUNS: [(&str, &str); 4] = [
    ("team", "team.json"),
    ("goal", "goal.json"),
    ("autopilot", "state.json"),
    ("ralph", "state.json"),
];

/// One changed document.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub document: Value,
}

pub fn routes() -> Router<Shared> {
    Router::new().route("/api/events", get(stream))
}

async fn stream(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = BroadcastStream::new(s.changes.subscribe()).filter_map(|c| {
        // A lagging client misses intermediate versions, not the latest.
        let c = c.ok()?;
        let data = json!({ "name": c.name, "document": c.document }).to_string();
        Some(Ok(Event::default().event(c.kind).data(data)))
    });
    let hello = tokio_stream::once(Ok(Event::default().event("hello").data(
        json!({ "version": omk_core::VERSION, "watch": s.watch_backend, "safety_scan_ms": SAFETY_SCAN.as_millis() as u64 }).to_string(),
    )));
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::default())
}

/// A state document: what it is, and its inode, size and mtime when it was
/// last compared.
type Key = (&'static str, String);
type Stamp = (u64, u64, SystemTime);
type Seen = HashMap<Key, Stamp>;

/// Paths the notifications named since the feed last looked.
#[derive(Default)]
struct Dirty {
    paths: HashSet<PathBuf>,
    /// Too many paths, or a failed watch: compare everything.
    everything: bool,
}

/// The watches of the feed and the paths they report.
pub struct Feed {
    root: PathBuf,
    watch: Option<Watch>,
    dirty: Arc<Mutex<Dirty>>,
    signal: Arc<Signal>,
    /// Run directories being watched.
    watched: HashSet<PathBuf>,
    /// Every document as last compared.
    seen: Seen,
}

impl Feed {
    /// Subscribe to the state root's directories, then take the first
    /// baseline (in that order, so no change falls between the two). It is
    /// taken before any client can connect and kept current while nobody
    /// listens, so a change made just after a client connects is never
    /// mistaken for the state it started from.
    pub fn start(root: &Path) -> Feed {
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let signal = Signal::new();
        let (d, sig) = (dirty.clone(), signal.clone());
        let on_change = move |p: &Path| {
            let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
            if p.as_os_str().is_empty() || d.paths.len() >= MAX_DIRTY {
                d.everything = true;
            } else {
                d.paths.insert(p.to_path_buf());
            }
            drop(d);
            sig.raise();
        };
        let mut watch = match Watch::new(root, on_change) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("dashboard: {e}; changes appear within {SAFETY_SCAN:?}");
                None
            }
        };
        if let Some(w) = &mut watch {
            for sub in ["pools", "gates"].iter().chain(RUNS.iter().map(|(k, _)| k)) {
                if let Err(e) = w.add(&root.join(sub)) {
                    tracing::warn!("dashboard: {e}");
                }
            }
        }
        let mut feed = Feed {
            root: root.to_path_buf(),
            watch,
            dirty,
            signal,
            watched: HashSet::new(),
            seen: Seen::new(),
        };
        feed.seen = feed.scan();
        feed
    }

    /// Which watcher delivers the notifications (`native`, `poll`, `none`).
    pub fn backend(&self) -> &'static str {
        match self.watch.as_ref().map(Watch::backend) {
            Some(omk_core::watch::Backend::Native) => "native",
            Some(omk_core::watch::Backend::Poll) => "poll",
            None => "none",
        }
    }

    fn watch_run(&mut self, dir: &Path) {
        let Some(w) = &mut self.watch else { return };
        if self.watched.contains(dir) || !dir.is_dir() {
            return;
        }
        match w.add(dir) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
            }
            // Past the watch limit this run's changes come with the safety
            // scan.
            Err(e) => tracing::debug!("dashboard: {e}"),
        }
    }

    /// Every watched document under the state root, stamped, with each run
    /// directory found watched (one read of each kind's directory).
    fn scan(&mut self) -> Seen {
        let mut out = Seen::new();
        for (kind, file) in RUNS {
            let Ok(entries) = std::fs::read_dir(self.root.join(kind)) else {
                continue;
            };
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(String::from) else {
                    continue;
                };
                let dir = e.path();
                self.watch_run(&dir);
                if let Some(s) = stamp(&dir.join(file)) {
                    out.insert((kind, name), s);
                }
            }
        }
        for kind in ["gates", "pools", "metrics"] {
            let key = (kind, String::new());
            if let Some(s) = stamp_of(&self.root, &key) {
                out.insert(key, s);
            }
        }
        out
    }

    /// The documents whose files changed since the last call (all of them
    /// when `everything`), with the run directories that appeared watched.
    fn changed(&mut self, everything: bool) -> Vec<Key> {
        let (paths, all) = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let all = std::mem::take(&mut d.everything) || everything;
            (std::mem::take(&mut d.paths), all)
        };
        if all {
            let now = self.scan();
            let seen = &self.seen;
            let mut changed: Vec<Key> = now
                .iter()
                .filter(|(k, v)| seen.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
            changed.extend(seen.keys().filter(|k| !now.contains_key(*k)).cloned());
            self.seen = now;
            return changed;
        }
        let mut keys = HashSet::new();
        for p in paths {
            if let Some((key, run_dir)) = classify(&self.root, &p) {
                if let Some(dir) = run_dir {
                    if dir.is_dir() {
                        self.watch_run(&dir);
                    } else {
                        self.watched.remove(&dir);
                    }
                }
                keys.insert(key);
            }
        }
        let mut changed = Vec::new();
        for key in keys {
            let now = stamp_of(&self.root, &key);
            if self.seen.get(&key) != now.as_ref() {
                match now {
                    Some(s) => self.seen.insert(key.clone(), s),
                    None => self.seen.remove(&key),
                };
                changed.push(key);
            }
        }
        changed
    }
}

/// Broadcast changes until the process ends.
pub async fn watch(omk: Omk, mut feed: Feed, tx: broadcast::Sender<Change>) {
    // The generation is read when the feed wakes, before it takes the dirty
    // paths: a change noted after that wakes the next wait at once.
    let mut generation = feed.signal.generation();
    loop {
        let woke = feed.signal.changed_past(generation, SAFETY_SCAN).await;
        let everything = woke == generation;
        generation = woke;
        let changed;
        (changed, feed) = match tokio::task::spawn_blocking(move || {
            let changed = feed.changed(everything);
            (changed, feed)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("dashboard feed: {e}");
                return;
            }
        };
        if tx.receiver_count() == 0 {
            continue;
        }
        for (kind, name) in changed {
            let o = omk.clone();
            let n = name.clone();
            let document = tokio::task::spawn_blocking(move || load(&o, kind, &n))
                .await
                .unwrap_or(Value::Null);
            let _ = tx.send(Change {
                kind,
                name,
                document,
            });
        }
    }
}

/// The document a changed path belongs to, and the run directory it names
/// (to watch or forget) when the path is one.
fn classify(root: &Path, p: &Path) -> Option<(Key, Option<PathBuf>)> {
    let rel = p.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        [file] if file.starts_with("metrics.") && !file.ends_with(".lock") => {
            Some((("metrics", String::new()), None))
        }
        ["pools", file] if omk_core::watch::document_name(Path::new(file)).is_some() => {
            Some((("pools", String::new()), None))
        }
        ["gates", "breakers.json"] => Some((("gates", String::new()), None)),
        [kind, name] => {
            let (k, _) = RUNS.iter().find(|(k, _)| k == kind)?;
            Some(((k, name.to_string()), Some(p.to_path_buf())))
        }
        [kind, name, file] => {
            let (k, _) = RUNS.iter().find(|(k, f)| k == kind && f == file)?;
            Some(((k, name.to_string()), None))
        }
        _ => None,
    }
}

/// The current stamp of one document (the aggregate for pools and metrics).
fn stamp_of(root: &Path, (kind, name): &Key) -> Option<Stamp> {
    match *kind {
        "pools" => aggregate(&root.join("pools"), ""),
        "metrics" => aggregate(root, "metrics."),
        "gates" => stamp(&root.join("gates").join("breakers.json")),
        k => {
            let (_, file) = RUNS.iter().find(|(rk, _)| *rk == k)?;
            stamp(&root.join(k).join(name).join(file))
        }
    }
}

fn load(omk: &Omk, kind: &str, name: &str) -> Value {
    let doc = match kind {
        "team" => omk.team_status(name).map(|d| serde_json::to_value(d).ok()),
        "goal" => omk.goal_show(name).map(|d| serde_json::to_value(d).ok()),
        "autopilot" => omk
            .autopilot_status(name)
            .map(|d| serde_json::to_value(d).ok()),
        "ralph" => omk.ralph_status(name).map(|d| serde_json::to_value(d).ok()),
        "gates" => omk.gates_status(false).map(Some),
        "pools" => omk.pools_status().map(Some),
        "metrics" => omk.metrics().map(Some),
        _ => Ok(None),
    };
    doc.ok().flatten().unwrap_or(Value::Null)
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// One stamp for all the files of `dir` whose names start with `prefix`.
fn aggregate(dir: &Path, prefix: &str) -> Option<Stamp> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut total = (0u64, 0u64, SystemTime::UNIX_EPOCH);
    let mut any = false;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(prefix) || omk_core::watch::document_name(Path::new(&*name)).is_none()
        {
            continue;
        }
        if let Some((ino, len, t)) = stamp(&e.path()) {
            any = true;
            total.0 = total.0.wrapping_add(ino);
            total.1 += len;
            total.2 = total.2.max(t);
        }
    }
    any.then_some(total)
}
