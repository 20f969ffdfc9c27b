//! Circuit breakers, one per (canonical project path, gate name), persisted
//! in `gates/breakers.json` and updated under its lock.
//!
//! `Closed -> Open` after `failure_threshold` consecutive failures (timeouts
//! and spawn errors count); `Open -> HalfOpen` once `recovery_timeout_secs`
//! have passed; a half-open breaker lets `half_open_calls` probes through: a
//! passing probe closes it, a failing one re-opens it. A probe is taken (and
//! persisted) when it is admitted, so concurrent runs never over-probe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::BreakerSettings;
use crate::error::Result;
use crate::store::{self, Document, Durability};

/// The three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// One breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    /// Consecutive failures.
    pub failure_count: u32,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub half_open_calls_remaining: u32,
    /// The settings in force at the last update.
    pub settings: BreakerSettings,
    /// Lifetime counters.
    #[serde(default)]
    pub total_runs: u64,
    #[serde(default)]
    pub total_failures: u64,
    #[serde(default)]
    pub total_skips: u64,
}

/// Whether a gate may run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Run,
    /// Runs as one of the half-open probes.
    Probe,
    /// Not run, and why.
    Skip(String),
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            failure_count: 0,
            last_failure_at: None,
            last_success_at: None,
            opened_at: None,
            half_open_calls_remaining: settings.half_open_calls,
            settings,
            total_runs: 0,
            total_failures: 0,
            total_skips: 0,
        }
    }

    /// Decide whether a gate may run at `now`, moving Open -> HalfOpen when
    /// its recovery time is up and taking a probe when half-open.
    pub fn admit(&mut self, now: DateTime<Utc>, settings: BreakerSettings) -> Admit {
        self.settings = settings;
        if self.state == BreakerState::Open {
            let since = self.opened_at.map_or(i64::MAX, |t| (now - t).num_seconds());
            let wait = settings.recovery_timeout_secs as i64;
            if since < wait {
                self.total_skips += 1;
                return Admit::Skip(format!(
                    "circuit breaker open after {} consecutive failures; next try in {}s (or `omk gates reset`)",
                    self.failure_count,
                    wait - since.max(0)
                ));
            }
            self.state = BreakerState::HalfOpen;
            self.half_open_calls_remaining = settings.half_open_calls;
        }
        match self.state {
            BreakerState::Closed => Admit::Run,
            BreakerState::HalfOpen if self.half_open_calls_remaining > 0 => {
                self.half_open_calls_remaining -= 1;
                Admit::Probe
            }
            _ => {
                self.total_skips += 1;
                Admit::Skip(format!(
                    "circuit breaker half-open: all {} probes are taken; waiting for their results",
                    settings.half_open_calls
                ))
            }
        }
    }

    /// Record the outcome of a run that was admitted.
    pub fn record(&mut self, now: DateTime<Utc>, passed: bool) {
        self.total_runs += 1;
        if passed {
            self.last_success_at = Some(now);
            match self.state {
                BreakerState::Closed | BreakerState::HalfOpen => self.close(),
                // A run admitted before the breaker opened: its success says
                // nothing about the failures that opened it.
                BreakerState::Open => {}
            }
            return;
        }
        self.total_failures += 1;
        self.failure_count += 1;
        self.last_failure_at = Some(now);
        let open = match self.state {
            BreakerState::Closed => self.failure_count >= self.settings.failure_threshold,
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
        };
        if open {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
            self.half_open_calls_remaining = 0;
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.failure_count = 0;
        self.opened_at = None;
        self.half_open_calls_remaining = self.settings.half_open_calls;
    }

    /// Back to Closed. Returns the state it had.
    pub fn reset(&mut self) -> BreakerState {
        let was = self.state;
        self.close();
        was
    }

    /// The breaker as it is at `now`: an Open breaker whose recovery time
    /// is up reads HalfOpen with all its probes available, which is what
    /// the next run will find. (The stored document changes only when a
    /// run is admitted; a reader never writes.)
    pub fn as_of(&self, now: DateTime<Utc>) -> Breaker {
        let mut b = self.clone();
        if b.state == BreakerState::Open {
            let since = b.opened_at.map_or(i64::MAX, |t| (now - t).num_seconds());
            if since >= b.settings.recovery_timeout_secs as i64 {
                b.state = BreakerState::HalfOpen;
                b.half_open_calls_remaining = b.settings.half_open_calls;
            }
        }
        b
    }

    /// The API.md `gates status --json` entry, in the state the breaker is
    /// in now ([`Breaker::as_of`]).
    pub fn to_api_json(&self, gate: &str, project: &Path) -> Value {
        self.to_api_json_at(gate, project, Utc::now())
    }

    /// [`Breaker::to_api_json`] as of `now`.
    pub fn to_api_json_at(&self, gate: &str, project: &Path, now: DateTime<Utc>) -> Value {
        let b = self.as_of(now);
        json!({
            "gate_name": gate,
            "state": b.state,
            "failure_count": b.failure_count,
            "last_failure_at": b.last_failure_at,
            "recovery_timeout_secs": b.settings.recovery_timeout_secs,
            "half_open_calls_remaining": b.half_open_calls_remaining,
            "project": project,
        })
    }
}

/// `gates/breakers.json`: project path -> gate name -> breaker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BreakerBook {
    pub version: u32,
    #[serde(default)]
    pub projects: BTreeMap<PathBuf, BTreeMap<String, Breaker>>,
}

impl Document for BreakerBook {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "circuit breaker document";
}

/// The breakers of one state root.
#[derive(Debug, Clone)]
pub struct Breakers {
    file: PathBuf,
}

/// The key of a project: its canonical path, so `.` and `/abs/path` name
/// the same breakers.
pub fn project_key(project: &Path) -> PathBuf {
    std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf())
}

impl Breakers {
    pub fn new(file: PathBuf) -> Breakers {
        Breakers { file }
    }

    /// Breakers are rewritten atomically under their lock but not fsynced
    /// ([`Durability::Volatile`]): a breaker is a rate limiter, not a record
    /// (gate results are recorded in proofs and events), and a power loss
    /// that drops its last update only makes it a little more or less
    /// patient. This keeps an update well under a millisecond.
    fn update<R>(&self, f: impl FnOnce(&mut BreakerBook) -> Result<R>) -> Result<R> {
        store::update_doc_with(&self.file, Durability::Volatile, BreakerBook::default, f)
    }

    /// Admit several gates of a project in one locked update.
    pub fn admit_all(
        &self,
        project: &Path,
        gates: &[&str],
        settings: BreakerSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<Admit>> {
        let key = project_key(project);
        self.update(|book| {
            let breakers = book.projects.entry(key).or_default();
            Ok(gates
                .iter()
                .map(|g| {
                    breakers
                        .entry((*g).to_string())
                        .or_insert_with(|| Breaker::new(settings))
                        .admit(now, settings)
                })
                .collect())
        })
    }

    /// Record several outcomes in one locked update; returns the states after.
    pub fn record_all(
        &self,
        project: &Path,
        outcomes: &[(&str, bool)],
        settings: BreakerSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<BreakerState>> {
        let key = project_key(project);
        self.update(|book| {
            let breakers = book.projects.entry(key).or_default();
            Ok(outcomes
                .iter()
                .map(|(g, passed)| {
                    let b = breakers
                        .entry((*g).to_string())
                        .or_insert_with(|| Breaker::new(settings));
                    b.record(now, *passed);
                    b.state
                })
                .collect())
        })
    }

    /// Every breaker, of one project or of all.
    pub fn list(&self, project: Option<&Path>) -> Result<Vec<(PathBuf, String, Breaker)>> {
        let book = store::read_doc::<BreakerBook>(&self.file)?.unwrap_or_default();
        let key = project.map(project_key);
        Ok(book
            .projects
            .into_iter()
            .filter(|(p, _)| key.as_ref().is_none_or(|k| k == p))
            .flat_map(|(p, gates)| gates.into_iter().map(move |(g, b)| (p.clone(), g, b)))
            .collect())
    }

    /// Reset breakers: `gate` of one project, or (None) every breaker not
    /// already Closed of one project or all. Returns what changed as
    /// (project, gate, previous state).
    pub fn reset(
        &self,
        project: Option<&Path>,
        gate: Option<&str>,
    ) -> Result<Vec<(PathBuf, String, BreakerState)>> {
        let key = project.map(project_key);
        self.update(|book| {
            let mut changed = Vec::new();
            for (p, gates) in book.projects.iter_mut() {
                if key.as_ref().is_some_and(|k| k != p) {
                    continue;
                }
                for (g, b) in gates.iter_mut() {
                    if gate.is_some_and(|want| want != g) {
                        continue;
                    }
                    if b.state != BreakerState::Closed || (gate.is_some() && b.failure_count > 0) {
                        changed.push((p.clone(), g.clone(), b.reset()));
                    }
                }
            }
            Ok(changed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn s() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 3,
            recovery_timeout_secs: 60,
            half_open_calls: 2,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn closed_opens_after_threshold_consecutive_failures() {
        let mut b = Breaker::new(s());
        for i in 0..2 {
            assert_eq!(b.admit(t0(), s()), Admit::Run);
            b.record(t0(), false);
            assert_eq!((b.state, b.failure_count), (BreakerState::Closed, i + 1));
        }
        // A success resets the consecutive count.
        b.record(t0(), true);
        assert_eq!(b.failure_count, 0);
        for _ in 0..3 {
            assert_eq!(b.admit(t0(), s()), Admit::Run);
            b.record(t0(), false);
        }
        assert_eq!(
            (b.state, b.half_open_calls_remaining),
            (BreakerState::Open, 0)
        );
        assert_eq!(b.opened_at, Some(t0()));
    }

    #[test]
    fn open_skips_until_recovery_then_probes_are_limited() {
        let mut b = Breaker::new(s());
        for _ in 0..3 {
            b.admit(t0(), s());
            b.record(t0(), false);
        }
        let skip = b.admit(t0() + Duration::seconds(59), s());
        assert!(
            matches!(skip, Admit::Skip(ref why) if why.contains("open")),
            "{skip:?}"
        );
        assert_eq!(b.total_skips, 1);
        let later = t0() + Duration::seconds(60);
        assert_eq!(b.admit(later, s()), Admit::Probe);
        assert_eq!(
            (b.state, b.half_open_calls_remaining),
            (BreakerState::HalfOpen, 1)
        );
        assert_eq!(b.admit(later, s()), Admit::Probe);
        // Probe exhaustion: the third caller is skipped.
        assert!(matches!(b.admit(later, s()), Admit::Skip(ref why) if why.contains("probes")));
    }

    #[test]
    fn a_passing_probe_closes_and_a_failing_probe_reopens() {
        let later = t0() + Duration::seconds(61);
        let mut b = Breaker::new(s());
        for _ in 0..3 {
            b.admit(t0(), s());
            b.record(t0(), false);
        }
        assert_eq!(b.admit(later, s()), Admit::Probe);
        b.record(later, true);
        assert_eq!(
            (b.state, b.failure_count, b.half_open_calls_remaining),
            (BreakerState::Closed, 0, 2)
        );

        let mut b = Breaker::new(s());
        for _ in 0..3 {
            b.admit(t0(), s());
            b.record(t0(), false);
        }
        assert_eq!(b.admit(later, s()), Admit::Probe);
        b.record(later, false);
        assert_eq!((b.state, b.opened_at), (BreakerState::Open, Some(later)));
        assert!(matches!(
            b.admit(later + Duration::seconds(1), s()),
            Admit::Skip(_)
        ));
    }

    #[test]
    fn readers_see_half_open_once_the_recovery_time_is_up() {
        let mut b = Breaker::new(s());
        b.record(t0(), false);
        b.record(t0(), false);
        b.record(t0(), false);
        assert_eq!(b.state, BreakerState::Open);
        let p = Path::new("/p");
        let before = b.to_api_json_at("g", p, t0() + chrono::Duration::seconds(59));
        assert_eq!(before["state"], "Open");
        assert_eq!(before["half_open_calls_remaining"], 0);
        let after = b.to_api_json_at("g", p, t0() + chrono::Duration::seconds(60));
        assert_eq!(after["state"], "HalfOpen");
        assert_eq!(after["half_open_calls_remaining"], s().half_open_calls);
        // What readers see is what the next run finds.
        let mut next = b.clone();
        assert_eq!(
            next.admit(t0() + chrono::Duration::seconds(60), s()),
            Admit::Probe
        );
        // Reading never changed the stored breaker.
        assert_eq!(b.state, BreakerState::Open);
    }

    #[test]
    fn reset_reports_what_it_changed() {
        let d = tempfile::tempdir().unwrap();
        let br = Breakers::new(d.path().join("breakers.json"));
        let p = d.path();
        br.admit_all(p, &["a", "b"], s(), t0()).unwrap();
        br.record_all(
            p,
            &[("a", false), ("a", false), ("a", false), ("b", true)],
            s(),
            t0(),
        )
        .unwrap();
        let changed = br.reset(Some(p), None).unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            (changed[0].1.as_str(), changed[0].2),
            ("a", BreakerState::Open)
        );
        assert!(
            br.reset(Some(p), None).unwrap().is_empty(),
            "nothing left to reset"
        );
        let listed = br.list(Some(p)).unwrap();
        assert!(listed
            .iter()
            .all(|(_, _, b)| b.state == BreakerState::Closed));
        // The same project through another spelling of its path.
        let dotted = p.join(".");
        assert_eq!(br.list(Some(&dotted)).unwrap().len(), 2);
    }
}
