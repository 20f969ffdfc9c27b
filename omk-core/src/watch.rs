//! Change notifications for the state files (docs/architecture.md, "How
//! changes propagate").
//!
//! omk's state is files written by many processes. A long-lived reader that
//! follows changes (the dashboard's feed, `team_events(follow=True)`, a
//! controller waiting for pool room, `team shutdown` waiting for a run's
//! end) subscribes to the directory that holds them instead of re-reading it
//! on a timer: [`Watch`] wraps the `notify` crate (inotify on Linux) and
//! falls back to the crate's polling watcher, scanning every
//! [`POLL_FALLBACK`], where the native one cannot be had (no inotify, the
//! instance or watch limit reached, or `OMK_WATCH=poll`). `OMK_WATCH=off`
//! turns both off: every follower then runs on its safety re-check alone.
//! Team runs themselves are woken by [`crate::doorbell`]s instead: closing
//! an inotify instance delays a process's exit by milliseconds.
//!
//! A notification only says "look again": notifications coalesce and may be
//! spurious, so a follower always re-reads the state it cares about, and
//! one that missed a notification loses nothing but time. Each user keeps a
//! slow safety re-check for the notification that never comes (a file
//! system without inotify support that the polling watcher also misses,
//! such as a network mount written by another host); those intervals are
//! documented where they are used and are never on a hot path.
//!
//! [`Signal`] is the other half: a counter that a watch or a doorbell (or a
//! release in the same process) raises and that both threads and async
//! tasks wait on.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::error::{Error, Result};

/// How often the polling fallback scans the watched directory.
pub const POLL_FALLBACK: Duration = Duration::from_millis(50);

/// Which watcher delivers a [`Watch`]'s notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The platform's notifications (inotify on Linux).
    Native,
    /// The `notify` crate's polling watcher, every [`POLL_FALLBACK`].
    Poll,
}

/// A subscription to the changes under one directory; dropping it ends
/// the subscription (and the watcher's thread).
pub struct Watch {
    // Behind a mutex only so that a Watch is Sync (owned by shared handles).
    watcher: Mutex<Box<dyn Watcher + Send>>,
    backend: Backend,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Watch {
    /// Call `on_change` with the path of every file created, written,
    /// renamed or removed directly in `dir` (not below: a run's directory
    /// holds worktrees nobody follows). Opening and reading files, which
    /// every lock and every reader does, is not a change. `dir` is created
    /// if missing.
    pub fn new(dir: &Path, on_change: impl Fn(&Path) + Send + Sync + 'static) -> Result<Watch> {
        crate::store::ensure_dir(dir)?;
        let on_change = Arc::new(on_change);
        let setting = std::env::var("OMK_WATCH").unwrap_or_default();
        if setting == "off" {
            return Err(Error::InvalidInput(format!(
                "change notifications are off (OMK_WATCH=off): {} is re-read on a timer",
                dir.display()
            )));
        }
        if setting != "poll" {
            let f = on_change.clone();
            let native =
                notify::recommended_watcher(move |ev| deliver(ev, &*f)).and_then(|mut w| {
                    w.watch(dir, RecursiveMode::NonRecursive)?;
                    Ok(w)
                });
            match native {
                Ok(w) => {
                    return Ok(Watch {
                        watcher: Mutex::new(Box::new(w)),
                        backend: Backend::Native,
                    })
                }
                Err(e) => tracing::debug!(
                    "no native change notifications for {} ({e}); polling every {} ms",
                    dir.display(),
                    POLL_FALLBACK.as_millis()
                ),
            }
        }
        let config = notify::Config::default().with_poll_interval(POLL_FALLBACK);
        let mut w = notify::PollWatcher::new(move |ev| deliver(ev, &*on_change), config)
            .map_err(|e| watch_error(dir, e))?;
        w.watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(dir, e))?;
        Ok(Watch {
            watcher: Mutex::new(Box::new(w)),
            backend: Backend::Poll,
        })
    }

    /// Watch `dir` and raise `signal` on every change whose file name
    /// `wanted` accepts.
    pub fn signal(
        dir: &Path,
        signal: Arc<Signal>,
        wanted: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Result<Watch> {
        Watch::new(dir, move |p| {
            if wanted(p) {
                signal.raise();
            }
        })
    }

    /// Also watch `dir` (created if missing), with the same callback.
    pub fn add(&mut self, dir: &Path) -> Result<()> {
        crate::store::ensure_dir(dir)?;
        self.watcher
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(dir, e))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

fn watch_error(dir: &Path, e: notify::Error) -> Error {
    Error::io(
        format!("watch {} for changes", dir.display()),
        std::io::Error::other(e.to_string()),
    )
}

fn deliver(ev: notify::Result<notify::Event>, on_change: &(dyn Fn(&Path) + Send + Sync)) {
    let Ok(ev) = ev else {
        // An overflowed or failed watch: a spurious "look again" is the
        // safe answer.
        on_change(Path::new(""));
        return;
    };
    if matches!(ev.kind, EventKind::Access(_)) {
        return;
    }
    for p in &ev.paths {
        on_change(p);
    }
}

/// The file name of `p`, if it is not a temporary file of an atomic write
/// (`.<name>.tmp.<pid>.<hex>`) or a lock file (`<name>.lock`).
pub fn document_name(p: &Path) -> Option<&str> {
    let name = p.file_name()?.to_str()?;
    (!name.starts_with('.') && !name.ends_with(".lock")).then_some(name)
}

/// A change counter that threads and async tasks wait on. Raising it wakes
/// every waiter; a waiter that compares [`Signal::generation`] before and
/// after it looked at the state never misses a raise in between.
#[derive(Debug, Default)]
pub struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl Signal {
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal::default())
    }

    /// Something changed: wake every waiter.
    pub fn raise(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        drop(g);
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// How many times the signal was raised so far.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block until the signal was raised past `seen`, or `timeout` passed.
    /// Returns the generation then.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        while *g <= seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = self
                .changed
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *g
    }

    /// Wait until the signal was raised past `seen`, or `timeout` passed.
    pub async fn changed_past(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the look, so a raise in between is not lost.
            let notified = self.notify.notified();
            let g = self.generation();
            if g > seen {
                return g;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.generation();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(signal: &Signal, past: u64) -> bool {
        signal.wait_past(past, Duration::from_secs(5)) > past
    }

    #[test]
    fn a_rename_into_place_raises_the_signal_and_a_read_does_not() {
        for forced_poll in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let signal = Signal::new();
            let w = if forced_poll {
                // What OMK_WATCH=poll selects, without touching the
                // environment of the other tests.
                let s = signal.clone();
                let mut w = notify::PollWatcher::new(
                    move |ev| {
                        deliver(ev, &|p: &Path| {
                            if document_name(p) == Some("doc.json") {
                                s.raise()
                            }
                        })
                    },
                    notify::Config::default().with_poll_interval(POLL_FALLBACK),
                )
                .unwrap();
                w.watch(d.path(), RecursiveMode::NonRecursive).unwrap();
                Box::new(w) as Box<dyn Watcher + Send>
            } else {
                let w = Watch::signal(d.path(), signal.clone(), |p| {
                    document_name(p) == Some("doc.json")
                })
                .unwrap();
                assert_eq!(w.backend(), Backend::Native);
                w.watcher.into_inner().unwrap()
            };
            let g = signal.generation();
            crate::store::write_atomic(&d.path().join("doc.json"), b"{}").unwrap();
            assert!(wait_for(&signal, g), "poll={forced_poll}");
            // Reads and lock files are not changes.
            std::thread::sleep(POLL_FALLBACK * 3);
            let g = signal.generation();
            let _ = std::fs::read(d.path().join("doc.json")).unwrap();
            std::fs::write(d.path().join("doc.json.lock"), b"").unwrap();
            assert_eq!(
                signal.wait_past(g, POLL_FALLBACK * 4),
                g,
                "poll={forced_poll}"
            );
            drop(w);
        }
    }

    #[test]
    fn an_async_waiter_sees_a_raise_that_happened_before_it_waited() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let s = Signal::new();
        let seen = s.generation();
        s.raise();
        let g = rt.block_on(s.changed_past(seen, Duration::from_secs(5)));
        assert_eq!(g, seen + 1);
        let t0 = Instant::now();
        let g2 = rt.block_on(s.changed_past(g, Duration::from_millis(30)));
        assert_eq!(g2, g);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
