//! `Omk.team_events`: an iterator over a team's events, optionally
//! following them until the run has ended ([`omk_core::follow`] does the
//! reading; this file waits the Python way).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omk_core::follow::{Step, TeamFollower};
use pyo3::prelude::*;

use crate::convert::to_py;
use crate::errors::{catch, guard, InvalidInputError};
use crate::handle::SLICE;

/// Iterator over one team's events (returned by ``Omk.team_events``).
///
/// Each item is an event dict: ``id``, ``ts``, ``run_id``, ``kind``,
/// ``actor``, ``payload`` (absent when empty), ``schema_version`` and ``seq``
/// (its number in the log).
/// Waiting for new events (``follow=True``) releases the GIL and stays
/// interruptible by Ctrl-C. It is woken by the change notifications of the
/// team's directory (inotify), or a store team's by the store's
/// ``LISTEN``, so a new event arrives within milliseconds;
/// ``poll_interval`` is only the longest wait without a notification.
#[pyclass(frozen, module = "omk._omk")]
pub struct TeamEvents {
    name: String,
    follower: Mutex<TeamFollower>,
    changes: Option<Arc<omk_core::watch::Signal>>,
}

impl TeamEvents {
    pub fn open(
        py: Python<'_>,
        omk: omk_core::Omk,
        name: String,
        follow: bool,
        poll_interval: f64,
    ) -> PyResult<TeamEvents> {
        if !(poll_interval.is_finite() && poll_interval > 0.0 && poll_interval <= 3600.0) {
            return Err(InvalidInputError::new_err(format!(
                "poll_interval must be in (0, 3600] seconds, not {poll_interval}"
            )));
        }
        // The team must exist (and be readable) now: here, or in the store.
        let poll = Duration::from_secs_f64(poll_interval);
        let follower = py.detach(|| {
            guard("team_events", || {
                TeamFollower::open(&omk, &name, None, follow, poll)
            })
        })?;
        Ok(TeamEvents {
            name,
            changes: follower.changes(),
            follower: Mutex::new(follower),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TeamFollower> {
        self.follower.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl TeamEvents {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        loop {
            // The lock is only ever taken with the GIL released.
            match py.detach(|| {
                catch("team_events", || {
                    guard("team_events", || self.lock().step())
                })
            })? {
                Step::Event(v) => return Ok(Some(to_py(py, &v)?.unbind())),
                Step::Done => return Ok(None),
                Step::Wait(d, seen) => {
                    let until = Instant::now() + d;
                    loop {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let changed = py.detach(|| match &self.changes {
                            Some(c) => c.wait_past(seen, left.min(SLICE)) > seen,
                            None => {
                                std::thread::sleep(left.min(SLICE));
                                false
                            }
                        });
                        py.check_signals()?;
                        if changed {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The team whose events these are.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Lines of the log skipped so far because they did not parse.
    #[getter]
    fn parse_failures(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().parse_failures())
    }

    fn __repr__(&self) -> String {
        format!("<TeamEvents of team {:?}>", self.name)
    }
}
