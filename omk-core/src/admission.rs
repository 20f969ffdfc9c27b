//! Waiting for a pool before a controller starts a team.
//!
//! Goal waves, `--until-ready` fix rounds, ralph iterations and autopilot
//! phases each start a team. When the pool says no, starting one anyway
//! makes a team that is refused at once, and a loop that does so makes
//! teams as fast as it can (the predecessor's failure, and omk's until
//! this module). Instead a controller asks [`wait_for_room`] first:
//! - while every slot is taken, it waits with backoff (50 ms doubling to
//!   2 s), asking the controller's `check` before each wait whether to stop
//!   (a budget ran out, a pause or stop was requested);
//! - a pool that cannot admit anyone until something outside omk changes
//!   (its disk cap is exceeded, it does not exist) ends the wait at once:
//!   the controller stops as blocked, with the reason.
//!
//! Another process may still take the slot between the look and the team's
//! own admission; such a team ends without having run a task
//! ([`never_ran`]), and the controller waits again instead of counting it.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pool::Room;
use crate::team::TeamDoc;
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
/// calling `check` before every wait; `Some` from it ends the wait.
pub fn wait_for_room<T>(
    omk: &Omk,
    pool: Option<&str>,
    mut check: impl FnMut() -> Option<T>,
) -> Result<Waited<T>> {
    let config = omk.config()?;
    let pool = pool.unwrap_or(&config.team.pool).to_string();
    let pools = crate::pool::Pools::new(omk.paths().clone(), config.clone());
    let started = Instant::now();
    let mut busy = None;
    let mut wait = FIRST_WAIT;
    loop {
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
        if let Some(stop) = check() {
            return Ok(Waited::Stopped(stop));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}

/// A team that ended without any task attempted: its workers were refused
/// (or it was stopped before it began). Not a failure of its tasks.
pub fn never_ran(doc: &TeamDoc) -> bool {
    doc.phase == crate::team::Phase::Failed && doc.tasks.iter().all(|t| t.attempts == 0)
}
