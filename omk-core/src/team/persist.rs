//! Writing a run's files off the async runtime.
//!
//! The supervisor's tasks never wait on the disk: they hand what changed to
//! one persister thread, which
//! - appends every queued event with one write, at once (followers see it
//!   then), and fsyncs the log before each team document it writes and at
//!   least every [`Throttle::Document`] interval while events are unsynced
//!   (group commit: no emitter waits for an event's fsync, only
//!   [`Persister::flush`] does),
//! - then writes the latest team document (durably; versions superseded
//!   before the thread got to them are never even encoded),
//! - then the latest heartbeat of each worker (atomic, not fsynced: a
//!   heartbeat means nothing after a reboot),
//! - then the metric increments queued meanwhile, as one locked update.
//!
//! Events go first, and are synced first, so the document never describes
//! something its log does not, even after a power loss (which may lose
//! the last interval's events, never one a flush returned for, never one
//! its document reflects). Events are written as soon as the thread is free; the other files
//! are rewritten at most once per their [`Throttle`] interval (a team
//! document, a heartbeat and the metrics change several times per task, and
//! each write is a file created and renamed over the last), except a
//! heartbeat naming a new agent process (`team shutdown` of a dead
//! supervisor must find it to kill it). [`Persister::flush`] writes
//! everything handed over at once and waits for it; the supervisor flushes
//! before it reports the end of a run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::events::{Event, EventLog};
use crate::metrics::{self, Counter};
use crate::store::{self, Durability};

/// The shortest time between two rewrites of one file, by kind. Readers
/// see a state at most this old (the events log is never held back).
#[derive(Debug, Clone, Copy)]
pub enum Throttle {
    /// `team.json`: a crash between two writes loses nothing the events
    /// log does not have, as it already could between an event and its
    /// document. Also the longest time an event stays unsynced.
    Document,
    /// `workers/<id>/heartbeat.json`.
    Heartbeat,
    /// The metrics (counters are for dashboards; the run's record is its
    /// events).
    Metrics,
}

impl Throttle {
    pub const fn interval(self) -> Duration {
        match self {
            Throttle::Document => Duration::from_millis(10),
            Throttle::Heartbeat | Throttle::Metrics => Duration::from_millis(100),
        }
    }
}

/// Encodes the latest version of a document, when it is written.
pub type Encode = Box<dyn FnOnce() -> Result<Vec<u8>> + Send>;

/// A heartbeat waiting to be written.
struct PendingHeartbeat {
    bytes: Vec<u8>,
    /// Written at once, whatever the interval.
    urgent: bool,
}

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    doc: Option<(PathBuf, Encode)>,
    heartbeats: BTreeMap<PathBuf, PendingHeartbeat>,
    counters: Vec<(Counter, u64)>,
    /// The thread is writing a batch it already took.
    busy: bool,
    /// Since when events written to the log are not yet fsynced.
    unsynced_since: Option<Instant>,
    /// Callers of [`Persister::flush`] waiting: everything is due now.
    flushing: usize,
    stop: bool,
}

impl Pending {
    /// Nothing left to write or sync.
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.doc.is_none()
            && self.heartbeats.is_empty()
            && self.counters.is_empty()
            && self.unsynced_since.is_none()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change what is pending and wake the thread.
    fn hand_over(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// The persister of one run. Dropping it flushes and stops the thread.
pub struct Persister {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Persister {
    /// Start the thread; events go to `log`, counters to `metrics`.
    pub fn start(mut log: EventLog, metrics: PathBuf) -> Result<Persister> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("omk-persist".into())
            .spawn(move || {
                crate::process::block_sigpipe();
                Writer::new(&mut log, metrics).run(&worker)
            })
            .map_err(|e| crate::Error::io("start the persister thread", e))?;
        Ok(Persister {
            shared,
            thread: Some(thread),
        })
    }

    /// Queue an event (redacted when written).
    pub fn event(&self, event: Event) {
        self.shared.hand_over(|p| p.events.push(event));
    }

    /// Queue the latest team document: `encode` runs only if no newer
    /// version replaces it before it is written.
    pub fn document(&self, path: PathBuf, encode: Encode) {
        self.shared.hand_over(|p| p.doc = Some((path, encode)));
    }

    /// Queue a worker's latest heartbeat; `urgent` ones (a new agent
    /// process) skip the [`Throttle::Heartbeat`] interval.
    pub fn heartbeat(&self, path: PathBuf, bytes: Vec<u8>, urgent: bool) {
        self.shared.hand_over(|p| {
            let urgent = urgent || p.heartbeats.get(&path).is_some_and(|h| h.urgent);
            p.heartbeats
                .insert(path, PendingHeartbeat { bytes, urgent });
        });
    }

    /// Queue metric increments.
    pub fn count(&self, deltas: &[(Counter, u64)]) {
        self.shared
            .hand_over(|p| p.counters.extend_from_slice(deltas));
    }

    /// Write everything queued so far, and wait until it is written.
    pub fn flush(&self) {
        let mut p = self.shared.lock();
        p.flushing += 1;
        self.shared.changed.notify_all();
        while !p.is_empty() || p.busy {
            p = self
                .shared
                .changed
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
        p.flushing -= 1;
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.flush();
        self.shared.hand_over(|p| p.stop = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the thread writes next.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    /// Fsync the log after appending `events` (always before a document).
    sync: bool,
    doc: Option<(PathBuf, Encode)>,
    heartbeats: Vec<(PathBuf, Vec<u8>)>,
    counters: Vec<(Counter, u64)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && !self.sync
            && self.doc.is_none()
            && self.heartbeats.is_empty()
            && self.counters.is_empty()
    }
}

/// The persister thread's side.
struct Writer<'a> {
    log: &'a mut EventLog,
    metrics: PathBuf,
    /// When each throttled file was last written (a heartbeat: or first
    /// queued, so a worker's first states wait too, usually for the write
    /// that names its agent).
    written: HashMap<PathBuf, Instant>,
}

impl<'a> Writer<'a> {
    fn new(log: &'a mut EventLog, metrics: PathBuf) -> Writer<'a> {
        Writer {
            log,
            metrics,
            written: HashMap::new(),
        }
    }

    /// `Ok` when `path` may be written now, else when it may.
    fn due(&self, path: &PathBuf, throttle: Throttle, now: Instant) -> Result<(), Instant> {
        match self.written.get(path).map(|t| *t + throttle.interval()) {
            Some(at) if at > now => Err(at),
            _ => Ok(()),
        }
    }

    /// Take what is due, and say when the first thing left behind falls due.
    fn take_due(&mut self, p: &mut Pending, now: Instant) -> (Batch, Option<Instant>) {
        let all = p.flushing > 0 || p.stop;
        for path in p.heartbeats.keys() {
            if !self.written.contains_key(path) {
                self.written.insert(path.clone(), now);
            }
        }
        let mut next = None::<Instant>;
        let mut later = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let mut batch = Batch {
            events: std::mem::take(&mut p.events),
            ..Batch::default()
        };
        if let Some((path, _)) = &p.doc {
            match self.due(path, Throttle::Document, now) {
                Err(at) if !all => later(at),
                _ => batch.doc = p.doc.take(),
            }
        }
        p.heartbeats.retain(|path, hb| {
            match self.due(path, Throttle::Heartbeat, now) {
                Err(at) if !all && !hb.urgent => {
                    later(at);
                    true // stays queued
                }
                _ => {
                    batch
                        .heartbeats
                        .push((path.clone(), std::mem::take(&mut hb.bytes)));
                    false
                }
            }
        });
        if !p.counters.is_empty() {
            match self.due(&self.metrics, Throttle::Metrics, now) {
                Err(at) if !all => later(at),
                _ => batch.counters = std::mem::take(&mut p.counters),
            }
        }
        let unsynced = p
            .unsynced_since
            .or((!batch.events.is_empty()).then_some(now));
        if let Some(since) = unsynced {
            let at = since + Throttle::Document.interval();
            batch.sync = all || batch.doc.is_some() || at <= now;
            if !batch.sync {
                later(at);
            }
        }
        (batch, next)
    }

    fn run(&mut self, shared: &Shared) {
        loop {
            let batch = {
                let mut p = shared.lock();
                loop {
                    if p.is_empty() && p.stop {
                        return;
                    }
                    let (batch, next) = self.take_due(&mut p, Instant::now());
                    if !batch.is_empty() {
                        p.busy = true;
                        break batch;
                    }
                    p = match next {
                        Some(at) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            let waited = shared.changed.wait_timeout(p, wait);
                            waited.unwrap_or_else(|e| e.into_inner()).0
                        }
                        None => shared.changed.wait(p).unwrap_or_else(|e| e.into_inner()),
                    };
                }
            };
            let (wrote_events, synced) = (!batch.events.is_empty(), batch.sync);
            let at = Instant::now();
            self.write(batch);
            shared.hand_over(|p| {
                p.busy = false;
                if synced {
                    p.unsynced_since = None;
                } else if wrote_events {
                    p.unsynced_since.get_or_insert(at);
                }
            });
        }
    }

    fn write(&mut self, batch: Batch) {
        if !batch.events.is_empty() {
            if let Err(e) = self.log.append_batch(batch.events) {
                tracing::error!("cannot append events: {e}");
            }
        }
        if batch.sync {
            if let Err(e) = self.log.sync() {
                tracing::error!("cannot sync the events log: {e}");
            }
        }
        if let Some((path, encode)) = batch.doc {
            if let Err(e) = encode().and_then(|bytes| store::write_atomic(&path, &bytes)) {
                tracing::error!("cannot write {}: {e}", path.display());
            }
            self.written.insert(path, Instant::now());
        }
        for (path, bytes) in batch.heartbeats {
            if let Err(e) = store::write_atomic_with(&path, &bytes, Durability::Volatile) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
            self.written.insert(path, Instant::now());
        }
        if !batch.counters.is_empty() {
            if let Err(e) = metrics::add(&self.metrics, &batch.counters) {
                tracing::warn!("cannot update metrics: {e}");
            }
            self.written.insert(self.metrics.clone(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn hb(p: &mut Pending, path: &str, urgent: bool) {
        p.heartbeats.insert(
            PathBuf::from(path),
            PendingHeartbeat {
                bytes: b"{}".to_vec(),
                urgent,
            },
        );
    }

    #[test]
    fn heartbeats_wait_their_interval_unless_urgent_or_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&dir.path().join("events.jsonl")).unwrap();
        let mut w = Writer::new(&mut log, dir.path().join("metrics.json"));
        let now = Instant::now();
        let mut p = Pending::default();
        hb(&mut p, "w1", false);
        hb(&mut p, "w2", true);
        let (batch, next) = w.take_due(&mut p, now);
        // w1's first state waits (counted from when it was first queued);
        // w2 names a new agent and goes at once.
        assert_eq!(batch.heartbeats.len(), 1);
        assert_eq!(batch.heartbeats[0].0, PathBuf::from("w2"));
        assert_eq!(next, Some(now + Throttle::Heartbeat.interval()));
        // Due once the interval has passed.
        let (batch, _) = w.take_due(&mut p, now + Throttle::Heartbeat.interval());
        assert_eq!(batch.heartbeats.len(), 1);
        assert!(p.heartbeats.is_empty());
        // A flush takes everything at once.
        hb(&mut p, "w1", false);
        p.flushing = 1;
        let (batch, next) = w.take_due(&mut p, now);
        assert_eq!((batch.heartbeats.len(), next), (1, None));
    }

    #[test]
    fn events_go_at_once_and_are_synced_before_a_document_or_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&dir.path().join("events.jsonl")).unwrap();
        let mut w = Writer::new(&mut log, dir.path().join("metrics.json"));
        let now = Instant::now();
        let mut p = Pending::default();
        p.events.push(Event::new(
            "t",
            EventKind::TaskCreated,
            None,
            serde_json::json!({}),
        ));
        let (batch, next) = w.take_due(&mut p, now);
        assert_eq!((batch.events.len(), batch.sync), (1, false));
        assert_eq!(next, Some(now + Throttle::Document.interval()));
        // Unsynced since `now`: a document written makes the sync due.
        p.unsynced_since = Some(now);
        p.doc = Some((
            dir.path().join("team.json"),
            Box::new(|| Ok(b"{}".to_vec())),
        ));
        let (batch, _) = w.take_due(&mut p, now);
        assert!(batch.sync && batch.doc.is_some());
        // Without one, the interval does.
        let (batch, next) = w.take_due(&mut p, now);
        assert!(!batch.sync && next.is_some());
        let (batch, _) = w.take_due(&mut p, now + Throttle::Document.interval());
        assert!(batch.sync);
    }

    #[test]
    fn flush_writes_everything_queued_and_the_last_version_wins() {
        let dir = tempfile::tempdir().unwrap();
        let persister = Persister::start(
            EventLog::open(&dir.path().join("events.jsonl")).unwrap(),
            dir.path().join("metrics.json"),
        )
        .unwrap();
        let doc = dir.path().join("team.json");
        let beat = dir.path().join("w1").join("heartbeat.json");
        for i in 0..50 {
            persister.document(
                doc.clone(),
                Box::new(move || Ok(format!("{i}\n").into_bytes())),
            );
            persister.heartbeat(beat.clone(), format!("{i}\n").into_bytes(), false);
            persister.event(Event::new(
                "t",
                EventKind::TaskCreated,
                None,
                serde_json::json!({ "i": i }),
            ));
        }
        persister.flush();
        assert_eq!(std::fs::read_to_string(&doc).unwrap(), "49\n");
        assert_eq!(std::fs::read_to_string(&beat).unwrap(), "49\n");
        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(events.lines().count(), 50);
        drop(persister);
    }
}
