//! `Omk.team_events`: an iterator over a team's events (its `events.jsonl`,
//! or a store team's events by sequence), optionally following them until
//! the run has ended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use serde_json::Value;

use crate::convert::to_py;
use crate::errors::{catch, guard, Failure, InvalidInputError};
use crate::handle::SLICE;
use crate::tail::{is_final_event, Tail};

/// After the team's phase turned terminal, how long to wait for its final
/// `run_completed`/`run_failed` event before stopping anyway.
const FINAL_EVENT_GRACE: Duration = Duration::from_secs(3);

/// Iterator over one team's events (returned by ``Omk.team_events``).
///
/// Each item is an event dict: ``id``, ``ts``, ``run_id``, ``kind``,
/// ``actor``, ``payload`` (absent when empty) and ``schema_version``.
/// Waiting for new events (``follow=True``) releases the GIL and stays
/// interruptible by Ctrl-C. It is woken by the change notifications of the
/// team's directory (inotify), so a new event arrives within milliseconds;
/// ``poll_interval`` is only the longest wait without a notification.
#[pyclass(frozen, module = "omk._omk")]
pub struct TeamEvents {
    name: String,
    state: Mutex<State>,
    /// Raised by writes of `events.jsonl` and `team.json` (follow only).
    changes: Option<Arc<omk_core::watch::Signal>>,
    _watch: Option<omk_core::watch::Watch>,
}

/// Where the events come from.
enum Source {
    /// A team of this state root: its log.
    File(Tail),
    /// A team of the configured store: its events after this sequence.
    Store { after: i64 },
}

/// Store events read per query.
const STORE_PAGE: i64 = 1000;

impl Source {
    /// Read what is new into `out`; how many events that was.
    fn poll(
        &mut self,
        omk: &omk_core::Omk,
        name: &str,
        out: &mut VecDeque<Value>,
    ) -> Result<usize, Failure> {
        match self {
            Source::File(tail) => tail.poll(out).map_err(|e| {
                Failure::Core(omk_core::Error::Io {
                    context: format!("read the events of team {name}"),
                    source: e,
                })
            }),
            Source::Store { after } => {
                let page = guard("team_events", || omk.store_events(name, *after, STORE_PAGE))?;
                for e in &page {
                    *after = e.seq;
                    out.push_back(serde_json::to_value(&e.event).unwrap_or(Value::Null));
                }
                Ok(page.len())
            }
        }
    }

    fn parse_failures(&self) -> usize {
        match self {
            Source::File(tail) => tail.parse_failures,
            Source::Store { .. } => 0,
        }
    }
}

struct State {
    omk: omk_core::Omk,
    name: String,
    source: Source,
    buffer: VecDeque<Value>,
    follow: bool,
    poll: Duration,
    done: bool,
    /// When the team's phase was first seen terminal.
    ended_at: Option<Instant>,
    saw_final: bool,
    /// After the final event: one more empty poll, then stop.
    quiet_after_final: bool,
    /// The change signal's generation when the log was last read.
    seen: u64,
    changes: Option<Arc<omk_core::watch::Signal>>,
}

enum Step {
    Event(Value),
    Done,
    /// Nothing new: wait for a change past the generation, at most this long.
    Wait(Duration, u64),
}

impl State {
    fn new(
        omk: omk_core::Omk,
        name: String,
        source: Source,
        follow: bool,
        poll_interval: f64,
        changes: Option<Arc<omk_core::watch::Signal>>,
    ) -> State {
        State {
            omk,
            name,
            source,
            buffer: VecDeque::new(),
            follow,
            poll: Duration::from_secs_f64(poll_interval),
            done: false,
            ended_at: None,
            saw_final: false,
            quiet_after_final: false,
            seen: 0,
            changes,
        }
    }

    fn step(&mut self) -> Result<Step, Failure> {
        loop {
            if let Some(v) = self.buffer.pop_front() {
                if is_final_event(&v) {
                    self.saw_final = true;
                }
                return Ok(Step::Event(v));
            }
            if self.done {
                return Ok(Step::Done);
            }
            if let Some(c) = &self.changes {
                self.seen = c.generation();
            }
            let read = self.source.poll(&self.omk, &self.name, &mut self.buffer)?;
            if read > 0 {
                self.quiet_after_final = false;
                continue;
            }
            if !self.follow {
                self.done = true;
                continue;
            }
            if self.ended_at.is_none() {
                let doc = guard("team_events", || self.omk.team_find(&self.name))?;
                if !doc.phase.is_terminal() {
                    return Ok(Step::Wait(self.poll, self.seen));
                }
                self.ended_at = Some(Instant::now());
                // Read what was written before the phase changed.
                continue;
            }
            let short = self.poll.min(Duration::from_millis(100));
            if self.saw_final {
                if self.quiet_after_final {
                    self.done = true;
                    continue;
                }
                self.quiet_after_final = true;
                return Ok(Step::Wait(short, self.seen));
            }
            if self
                .ended_at
                .is_some_and(|t| t.elapsed() >= FINAL_EVENT_GRACE)
            {
                self.done = true;
                continue;
            }
            return Ok(Step::Wait(short, self.seen));
        }
    }
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
        let local = py.detach(|| match omk.team_status(&name) {
            Err(e) if e.code() == omk_core::ErrorCode::NotFound => Ok(None),
            found => found.map(Some),
        });
        let doc = match guard("team_events", || local)? {
            Some(doc) => doc,
            None => {
                // Listening before the first read: no event is missed.
                let changes = match follow {
                    true => Some(py.detach(|| guard("team_events", || omk.store_changes()))?),
                    false => None,
                };
                py.detach(|| guard("team_events", || omk.team_find(&name)))?;
                return Ok(TeamEvents {
                    name: name.clone(),
                    state: Mutex::new(State::new(
                        omk,
                        name,
                        Source::Store { after: 0 },
                        follow,
                        poll_interval,
                        changes.clone(),
                    )),
                    changes,
                    _watch: None,
                });
            }
        };
        let path = doc.state_dir.join("events.jsonl");
        let (changes, watch) = if follow {
            let signal = omk_core::watch::Signal::new();
            // Without notifications the follower still reads every
            // `poll_interval`.
            let watch = omk_core::watch::Watch::signal(&doc.state_dir, signal.clone(), |p| {
                matches!(
                    omk_core::watch::document_name(p),
                    Some("events.jsonl" | "team.json")
                )
            })
            .ok();
            (watch.is_some().then_some(signal), watch)
        } else {
            (None, None)
        };
        Ok(TeamEvents {
            name: name.clone(),
            state: Mutex::new(State::new(
                omk,
                name,
                Source::File(Tail::new(&path)),
                follow,
                poll_interval,
                changes.clone(),
            )),
            changes,
            _watch: watch,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl TeamEvents {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        loop {
            // The state lock is only ever taken with the GIL released.
            match py.detach(|| catch("team_events", || self.lock().step()))? {
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
        py.detach(|| self.lock().source.parse_failures())
    }

    fn __repr__(&self) -> String {
        format!("<TeamEvents of team {:?}>", self.name)
    }
}
