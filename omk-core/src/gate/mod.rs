//! Verification gates (DESIGN.md §8): named commands that must pass before
//! omk calls work done, each behind a persistent circuit breaker.
//!
//! [`run`] admits the selected gates through their breakers in one locked
//! update, runs the admitted ones one after another, and records every
//! outcome in a second locked update, so a run of many gates costs two
//! breaker writes, and concurrent runs lose no update.

pub mod breaker;
pub mod config;
pub mod detect;
pub mod runner;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use breaker::{Admit, Breaker, BreakerState, Breakers};
pub use config::{BreakerSettings, GateCommand, GateSet, GateSpec};
pub use runner::GateResult;

use crate::error::{Error, Result};
use crate::paths::StatePaths;

/// What one `gates run` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatesReport {
    pub project: PathBuf,
    /// `.omk/gates.toml` or `detected`.
    pub source: String,
    /// True when every required gate ran and passed.
    pub passed: bool,
    pub results: Vec<GateResult>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Where the full outputs are.
    pub artifacts_dir: PathBuf,
}

impl GatesReport {
    /// Required gates that failed or were skipped.
    pub fn blocking(&self) -> Vec<&GateResult> {
        self.results
            .iter()
            .filter(|r| r.required && !r.passed)
            .collect()
    }
}

/// Standalone `gates run` artifact directories kept (older ones are removed).
pub const KEEP_RUNS: usize = 20;

/// Remove all but the newest `keep` run directories under `runs`.
pub fn prune_runs(runs: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    // Names start with a UTC timestamp, so name order is age order.
    dirs.sort();
    let excess = dirs.len().saturating_sub(keep);
    for d in dirs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The breakers of a state root.
pub fn breakers(paths: &StatePaths) -> Breakers {
    Breakers::new(paths.breakers())
}

/// Select gates by name; unknown names are `not_found`.
pub fn select<'a>(set: &'a GateSet, only: &[String]) -> Result<Vec<&'a GateSpec>> {
    if only.is_empty() {
        return Ok(set.gates.iter().collect());
    }
    only.iter()
        .map(|name| {
            set.gates.iter().find(|g| &g.name == name).ok_or_else(|| {
                let known: Vec<&str> = set.gates.iter().map(|g| g.name.as_str()).collect();
                Error::NotFound(format!(
                    "no gate named {name:?} in {} ({}); known: {}",
                    set.project.display(),
                    set.source,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
        })
        .collect()
}

/// Run gates of `set` (all, or those named in `only`) through their
/// breakers, writing full outputs under `artifacts_dir`.
pub fn run(
    paths: &StatePaths,
    set: &GateSet,
    only: &[String],
    artifacts_dir: &Path,
) -> Result<GatesReport> {
    let chosen = select(set, only)?;
    crate::store::ensure_dir(artifacts_dir)?;
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let book = breakers(paths);
    let names: Vec<&str> = chosen.iter().map(|g| g.name.as_str()).collect();
    let admits = book.admit_all(&set.project, &names, set.breaker, Utc::now())?;
    let mut results = Vec::with_capacity(chosen.len());
    for (spec, admit) in chosen.iter().zip(admits) {
        results.push(match admit {
            Admit::Skip(why) => GateResult::skipped(spec, why),
            Admit::Run | Admit::Probe => runner::run_gate(spec, &set.project, artifacts_dir),
        });
    }
    let ran: Vec<(&str, bool)> = results
        .iter()
        .filter(|r| !r.skipped)
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    let states = book.record_all(&set.project, &ran, set.breaker, Utc::now())?;
    let mut states = states.into_iter();
    for r in results.iter_mut().filter(|r| !r.skipped) {
        r.breaker = states.next();
    }
    for r in results.iter_mut().filter(|r| r.skipped) {
        r.breaker = Some(BreakerState::Open);
    }
    let passed = results.iter().all(|r| !r.required || r.passed);
    Ok(GatesReport {
        project: set.project.clone(),
        source: set.source.clone(),
        passed,
        results,
        started_at,
        duration_ms: clock.elapsed().as_millis() as u64,
        artifacts_dir: artifacts_dir.to_path_buf(),
    })
}

/// `gates status`: `{"breakers": [...]}` (API.md), of one project or all.
/// Gates of the project that never ran are listed as Closed.
pub fn status(paths: &StatePaths, set: Option<&GateSet>) -> Result<Value> {
    let book = breakers(paths);
    let mut entries = Vec::new();
    match set {
        Some(set) => {
            let listed = book.list(Some(&set.project))?;
            let key = breaker::project_key(&set.project);
            for g in &set.gates {
                let b = listed
                    .iter()
                    .find(|(_, name, _)| name == &g.name)
                    .map(|(_, _, b)| b.clone())
                    .unwrap_or_else(|| Breaker::new(set.breaker));
                entries.push(b.to_api_json(&g.name, &key));
            }
            // Breakers of gates no longer configured are still shown.
            for (p, name, b) in listed
                .iter()
                .filter(|(_, n, _)| !set.gates.iter().any(|g| &g.name == n))
            {
                entries.push(b.to_api_json(name, p));
            }
        }
        None => {
            for (p, name, b) in book.list(None)? {
                entries.push(b.to_api_json(&name, &p));
            }
        }
    }
    Ok(json!({ "breakers": entries }))
}

/// `gates reset --gate NAME`: the gate must exist in the project (or have a
/// breaker); `--all`: every breaker not already Closed. Reports exactly what
/// was reset.
pub fn reset(
    paths: &StatePaths,
    set: &GateSet,
    gate: Option<&str>,
    all_projects: bool,
) -> Result<Value> {
    let book = breakers(paths);
    if let Some(name) = gate {
        let known = set.gates.iter().any(|g| g.name == name)
            || book
                .list(Some(&set.project))?
                .iter()
                .any(|(_, n, _)| n == name);
        if !known {
            return Err(Error::NotFound(format!(
                "no gate named {name:?} in {}; `omk gates list` shows the gates",
                set.project.display()
            )));
        }
    }
    let project = if all_projects {
        None
    } else {
        Some(set.project.as_path())
    };
    let changed = book.reset(project, gate)?;
    Ok(json!({
        "reset": changed.iter().map(|(p, g, was)| json!({"project": p, "gate_name": g, "previous_state": was})).collect::<Vec<_>>(),
        "count": changed.len(),
    }))
}

/// `gates list`: the gates that would run, and where each came from.
pub fn list(set: &GateSet) -> Value {
    json!({
        "project": set.project,
        "source": set.source,
        "breaker": set.breaker,
        "gates": set.gates.iter().map(|g| json!({
            "name": g.name,
            "command_line": g.command.command_line(),
            "required": g.required,
            "timeout_secs": g.timeout_secs,
            "cwd": g.cwd,
            "origin": g.origin,
        })).collect::<Vec<_>>(),
    })
}
