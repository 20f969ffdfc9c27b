//! Waiting for a pool before a controller starts a team.
//!
//! Goal waves, `--until-ready` fix rounds, ralph iterations and autopilot
//! phases each start a team. When the pool says no, starting one anyway
//! makes a team that is refused at once, and a loop that does so makes
//! teams as fast as it can (the predecessor's failure, and omk's until
//! this module). Instead a controller asks [`wait_for_room`] first:
//! - while every slot is taken, it waits for a change of the pool's
//!   documents or of the controller's own directory (change notifications,
//!   [`crate::watch`]: a released slot or a stop request wakes it at once),
//!   asking the controller's `check` before each wait whether to stop (a
//!   budget ran out, a pause or stop was requested). Without a notification
//!   it looks again after a backoff (50 ms doubling to 2 s), the safety net
//!   for notifications that never come;
//! - a pool that cannot admit anyone until something outside omk changes
//!   (its disk cap is exceeded, it does not exist) ends the wait at once:
//!   the controller stops as blocked, with the reason.
//!
//! Another process may still take the slot between the look and the team's
//! own admission; such a team ends without having run a task
//! ([`never_ran`]), and the controller waits again instead of counting it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pool::Room;
use crate::team::TeamDoc;
use crate::watch::{Signal, Watch};
use crate::Omk;

const FIRST_WAIT: Duration = Duration::from_millis(50);
const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// How a wait for room ended.
#[derive(Debug)]
pub enum Waited<T> {
    /// The pool has room now. `busy` is the reason it had none, if the
    /// controller had to wait.
    Room {
        busy: Option<String>,
        waited: Duration,
    },
    /// The pool can never admit as things are.
    Never(String),
    /// The controller's check asked to stop while waiting.
    Stopped(T),
}

/// Wait until `pool` (default: `[team] pool`) has room for a new team,
/// calling `check` before every wait; `Some` from it ends the wait. A
/// change in `own_dir` (the controller's state: a stop request, a pause)
/// wakes the wait too.
pub fn wait_for_room<T>(
    omk: &Omk,
    pool: Option<&str>,
    own_dir: &Path,
    mut check: impl FnMut() -> Option<T>,
) -> Result<Waited<T>> {
    let config = omk.config()?;
    let pool = pool.unwrap_or(&config.team.pool).to_string();
    let pools = crate::pool::Pools::new(omk.paths().clone(), config.clone());
    let started = Instant::now();
    let mut busy = None;
    let mut wait = FIRST_WAIT;
    // Started on the first busy answer: a pool with room costs no watch.
    let mut watch: Option<(Arc<Signal>, Option<Watch>)> = None;
    loop {
        let seen = watch.as_ref().map_or(0, |(s, _)| s.generation());
        match pools.room(&pool)? {
            Room::Free => {
                return Ok(Waited::Room {
                    busy,
                    waited: started.elapsed(),
                })
            }
            Room::Never(why) => return Ok(Waited::Never(why)),
            Room::Busy(why) => {
                if busy.is_none() {
                    tracing::info!("waiting for room: {why}");
                }
                busy = Some(why);
            }
        }
        if watch.is_none() {
            let signal = Signal::new();
            let w = Watch::signal(&omk.paths().root().join("pools"), signal.clone(), |p| {
                crate::watch::document_name(p).is_some()
            })
            .and_then(|mut w| w.add(own_dir).map(|()| w))
            .map_err(|e| tracing::debug!("{e}; waiting for room with backoff only"))
            .ok();
            watch = Some((signal, w));
            // Whatever changed while the watch started is seen by looking
            // again at once.
            continue;
        }
        if let Some(stop) = check() {
            return Ok(Waited::Stopped(stop));
        }
        if let Some((signal, _)) = &watch {
            if signal.wait_past(seen, wait) > seen {
                continue;
            }
        }
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}

/// A team that ended without any task attempted: its workers were refused
/// (or it was stopped before it began). Not a failure of its tasks.
pub fn never_ran(doc: &TeamDoc) -> bool {
    doc.phase == crate::team::Phase::Failed && doc.tasks.iter().all(|t| t.attempts == 0)
}
