//! Writing a run's files off the async runtime.
//!
//! The supervisor's tasks never wait on the disk: they hand what changed to
//! one persister thread, which
//! - appends every queued event with one write and one fsync (group commit),
//! - then writes the latest team document (durably; intermediate versions
//!   that were superseded before the thread got to them are skipped),
//! - then the latest heartbeat of each worker (atomic, not fsynced: a
//!   heartbeat means nothing after a reboot),
//! - then the metric increments queued meanwhile, as one locked update.
//!
//! Events go first so the document never describes something its log does
//! not. [`Persister::flush`] waits until everything handed over is on disk;
//! the supervisor flushes before it reports the end of a run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::Result;
use crate::events::{Event, EventLog};
use crate::metrics::{self, Counter};
use crate::store::{self, Durability};

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    doc: Option<(PathBuf, Vec<u8>)>,
    heartbeats: BTreeMap<PathBuf, Vec<u8>>,
    counters: Vec<(Counter, u64)>,
    /// The thread is writing a batch it already took.
    busy: bool,
    stop: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.doc.is_none()
            && self.heartbeats.is_empty()
            && self.counters.is_empty()
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
                run(&worker, &mut log, &metrics)
            })
            .map_err(|e| crate::Error::io("start the persister thread", e))?;
        Ok(Persister {
            shared,
            thread: Some(thread),
        })
    }

    /// Queue an event (redacted when written).
    pub fn event(&self, event: Event) {
        self.shared.lock().events.push(event);
        self.shared.changed.notify_all();
    }

    /// Queue the latest team document.
    pub fn document(&self, path: PathBuf, bytes: Vec<u8>) {
        self.shared.lock().doc = Some((path, bytes));
        self.shared.changed.notify_all();
    }

    /// Queue a worker's latest heartbeat.
    pub fn heartbeat(&self, path: PathBuf, bytes: Vec<u8>) {
        self.shared.lock().heartbeats.insert(path, bytes);
        self.shared.changed.notify_all();
    }

    /// Queue metric increments.
    pub fn count(&self, deltas: &[(Counter, u64)]) {
        self.shared.lock().counters.extend_from_slice(deltas);
        self.shared.changed.notify_all();
    }

    /// Block until everything queued so far is written.
    pub fn flush(&self) {
        let mut p = self.shared.lock();
        while !p.is_empty() || p.busy {
            p = self
                .shared
                .changed
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.flush();
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, log: &mut EventLog, metrics_file: &std::path::Path) {
    loop {
        let batch = {
            let mut p = shared.lock();
            while p.is_empty() && !p.stop {
                p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.is_empty() && p.stop {
                return;
            }
            p.busy = true;
            (
                std::mem::take(&mut p.events),
                p.doc.take(),
                std::mem::take(&mut p.heartbeats),
                std::mem::take(&mut p.counters),
            )
        };
        let (events, doc, heartbeats, counters) = batch;
        if !events.is_empty() {
            if let Err(e) = log.append_batch(events) {
                tracing::error!("cannot append events: {e}");
            }
        }
        if let Some((path, bytes)) = doc {
            if let Err(e) = store::write_atomic(&path, &bytes) {
                tracing::error!("cannot write {}: {e}", path.display());
            }
        }
        for (path, bytes) in heartbeats {
            if let Err(e) = store::write_atomic_with(&path, &bytes, Durability::Volatile) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
        if !counters.is_empty() {
            if let Err(e) = metrics::add(metrics_file, &counters) {
                tracing::warn!("cannot update metrics: {e}");
            }
        }
        shared.lock().busy = false;
        shared.changed.notify_all();
    }
}
