//! Following a team's events: what `Omk.team_events(name, follow=True)` in
//! Python and `omk team status NAME --follow` read.
//!
//! A team of the state root is followed through its `events.jsonl`
//! ([`tail::Tail`]), woken by the change notifications of its directory; a
//! team of a PostgreSQL store by sequence, woken by the store's `LISTEN`.
//! Either way a wake-up re-reads everything after the last event yielded,
//! so a coalesced or missed notification loses nothing, and following ends
//! once the team's phase is terminal and its final `run_completed` /
//! `run_failed` event was read (or a grace period after the phase turned
//! terminal passed without one).
//!
//! [`TeamFollower::step`] never blocks on the team: it yields an event, says
//! the follow is over, or says how long to wait for a change
//! ([`TeamFollower::changes`]) before stepping again, so a host language
//! can wait its own way (Python releases the GIL and checks for Ctrl-C).

pub mod tail;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::pg::PgStore;
use crate::watch::{Signal, Watch};
use crate::Omk;
use tail::{is_final_event, Tail};

/// After the team's phase turned terminal, how long to wait for its final
/// `run_completed`/`run_failed` event before stopping anyway.
const FINAL_EVENT_GRACE: Duration = Duration::from_secs(3);

/// Store events read per query.
const STORE_PAGE: usize = 1000;

/// What [`TeamFollower::step`] found.
#[derive(Debug)]
pub enum Step {
    /// The next event (its envelope).
    Event(Value),
    /// Nothing more: the log's end (without follow), or the run's.
    Done,
    /// Nothing new: wait for [`TeamFollower::changes`] to pass this
    /// generation, at most this long, then step again.
    Wait(Duration, u64),
}

/// Where the events come from.
enum Source {
    /// A team of the state root: its log.
    File(Tail),
    /// A team of a store: its events after this sequence.
    Store { store: Box<PgStore>, after: u64 },
}

/// One team's events, read (and followed) in order.
pub struct TeamFollower {
    omk: Omk,
    name: String,
    source: Source,
    buffer: VecDeque<Value>,
    follow: bool,
    poll: Duration,
    done: bool,
    /// When the team's phase was first seen terminal.
    ended_at: Option<Instant>,
    saw_final: bool,
    /// After the final event: one more empty read, then stop.
    quiet_after_final: bool,
    /// The change signal's generation when the events were last read.
    seen: u64,
    changes: Option<Arc<Signal>>,
    _watch: Option<Watch>,
}

impl TeamFollower {
    /// Read team `name`'s events: the state root's team, else the store's
    /// (`store_url`: the one a command names, else the handle's
    /// [`Omk::store`]). With `follow`, wait for new ones until the run has
    /// ended; `poll` is the longest wait without a notification.
    pub fn open(
        omk: &Omk,
        name: &str,
        store_url: Option<&str>,
        follow: bool,
        poll: Duration,
    ) -> Result<TeamFollower> {
        let (source, changes, watch) = match omk.team_status(name) {
            Ok(doc) => {
                let (changes, watch) = if follow {
                    let signal = Signal::new();
                    // Without notifications the follower still reads
                    // every `poll`.
                    let watch = Watch::signal(&doc.state_dir, signal.clone(), |p| {
                        matches!(
                            crate::watch::document_name(p),
                            Some("events.jsonl" | "team.json")
                        )
                    })
                    .ok();
                    (watch.is_some().then_some(signal), watch)
                } else {
                    (None, None)
                };
                let tail = Tail::new(&doc.state_dir.join("events.jsonl"));
                (Source::File(tail), changes, watch)
            }
            Err(e) if e.code() == ErrorCode::NotFound => {
                let rt = omk.runtime()?;
                let Some(store) = omk.store_in(store_url)? else {
                    return Err(e);
                };
                // Listening before the first read: no event is missed.
                let changes = match follow {
                    true => Some(rt.block_on(store.listen())?),
                    false => None,
                };
                if rt
                    .block_on(crate::team::remote::team(&store, name))?
                    .is_none()
                {
                    return Err(Error::NotFound(format!(
                        "no team named {name:?} here or in the store {}",
                        store.shown()
                    )));
                }
                let store = Box::new(store);
                (Source::Store { store, after: 0 }, changes, None)
            }
            Err(e) => return Err(e),
        };
        Ok(TeamFollower {
            omk: omk.clone(),
            name: name.to_string(),
            source,
            buffer: VecDeque::new(),
            follow,
            poll,
            done: false,
            ended_at: None,
            saw_final: false,
            quiet_after_final: false,
            seen: 0,
            changes,
            _watch: watch,
        })
    }

    /// The team followed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signal a [`Step::Wait`] waits on (`None`: no notifications
    /// here, so wait the whole time).
    pub fn changes(&self) -> Option<Arc<Signal>> {
        self.changes.clone()
    }

    /// Lines of the log skipped so far because they did not parse.
    pub fn parse_failures(&self) -> usize {
        match &self.source {
            Source::File(tail) => tail.parse_failures,
            Source::Store { .. } => 0,
        }
    }

    /// The next event, or whether (and how long) to wait for one.
    pub fn step(&mut self) -> Result<Step> {
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
            if self.read()? > 0 {
                self.quiet_after_final = false;
                continue;
            }
            if !self.follow {
                self.done = true;
                continue;
            }
            if self.ended_at.is_none() {
                if !self.phase_is_terminal()? {
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

    /// The next event, waiting for it (blocking: not for async code).
    /// `None` when following is over.
    pub fn next_event(&mut self) -> Result<Option<Value>> {
        loop {
            match self.step()? {
                Step::Event(v) => return Ok(Some(v)),
                Step::Done => return Ok(None),
                Step::Wait(d, seen) => match &self.changes {
                    Some(c) => {
                        c.wait_past(seen, d);
                    }
                    None => std::thread::sleep(d),
                },
            }
        }
    }

    /// Read what is new into the buffer; how many events that was.
    fn read(&mut self) -> Result<usize> {
        match &mut self.source {
            Source::File(tail) => tail.poll(&mut self.buffer).map_err(|e| Error::Io {
                context: format!("read the events of team {}", self.name),
                source: e,
            }),
            Source::Store { store, after } => {
                let page = self
                    .omk
                    .runtime()?
                    .block_on(crate::seam::EventLogs::read_after(
                        &**store, &self.name, *after, STORE_PAGE,
                    ))?;
                for e in &page {
                    *after = e.seq.unwrap_or(*after);
                    self.buffer
                        .push_back(serde_json::to_value(e).unwrap_or(Value::Null));
                }
                Ok(page.len())
            }
        }
    }

    fn phase_is_terminal(&self) -> Result<bool> {
        let doc = match &self.source {
            Source::File(_) => self.omk.team_status(&self.name)?,
            Source::Store { store, .. } => self
                .omk
                .runtime()?
                .block_on(crate::team::remote::team(store, &self.name))?
                .ok_or_else(|| Error::NotFound(format!("team {} left the store", self.name)))?,
        };
        Ok(doc.phase.is_terminal())
    }
}
