//! Autopilot and Ralph: two ready-made loops built on teams and gates.
//!
//! - [`ralph`]: one agent turn (a one-worker team), then the project's
//!   gates; failures are fed back into the next turn, until the gates pass
//!   or the iteration limit is reached.
//! - [`autopilot`]: expand the task into a spec, plan it into tasks, run
//!   them as a team, QA with the gates (one bounded fix round), validate on
//!   the final tree.
//!
//! Both keep `state.json` under `<state root>/<mode>/<id>/`, rewritten
//! atomically after every step so another process sees progress, and both
//! stop when another process asks (`stop`): the request is a file in the
//! run's directory, and the team running at that moment is shut down.
//! Neither calls anything done without the gates: a project without gates
//! is refused before any agent starts.

pub mod autopilot;
pub mod ralph;

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::{GateResult, GateSet, GatesReport};
use crate::paths::StatePaths;
use crate::process::ProcessId;
use crate::Omk;

/// How a run stands. `running` runs whose process died read as `interrupted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// The gates passed (ralph) / every phase passed (autopilot).
    Complete,
    /// Ralph used every iteration without the gates passing.
    Exhausted,
    /// A phase failed, or the final gates did not pass.
    Failed,
    /// Stopped on request.
    Stopped,
    /// The process running it died.
    Interrupted,
    /// The pool can never admit its team as things are (see `reason`).
    BlockedOnExternal,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Exhausted => "exhausted",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
            RunStatus::Interrupted => "interrupted",
            RunStatus::BlockedOnExternal => "blocked_on_external",
        }
    }
}

/// A gate that did not pass, as fed back to the agent and recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFailure {
    pub name: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Skipped because its breaker is open.
    pub skipped: bool,
    /// The last lines of its output (redacted).
    pub output_tail: String,
}

/// Lines of gate output fed back per failing gate.
const TAIL_LINES: usize = 30;

impl GateFailure {
    fn of(r: &GateResult) -> GateFailure {
        let mut text = r.stdout.clone();
        if !r.stderr.trim().is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&r.stderr);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        GateFailure {
            name: r.name.clone(),
            exit_code: r.exit_code,
            timed_out: r.timed_out,
            skipped: r.skipped,
            output_tail: crate::redact::redact_str(&tail).into_owned(),
        }
    }

    /// The required gates of a report that did not pass.
    pub fn all_of(report: &GatesReport) -> Vec<GateFailure> {
        report.blocking().into_iter().map(GateFailure::of).collect()
    }

    fn describe(&self) -> String {
        if self.skipped {
            format!(
                "gate '{}' was skipped: its circuit breaker is open",
                self.name
            )
        } else if self.timed_out {
            format!("gate '{}' timed out", self.name)
        } else {
            match self.exit_code {
                Some(c) => format!("gate '{}' failed (exit {c})", self.name),
                None => format!("gate '{}' failed (killed by a signal)", self.name),
            }
        }
    }
}

/// The prompt section that tells the agent what the gates said.
pub fn feedback(failures: &[GateFailure]) -> String {
    let mut out = String::from(
        "The project's verification gates did not pass after the previous attempt. \
         Fix what they report:\n",
    );
    for f in failures {
        out.push_str(&format!("\n- {}", f.describe()));
        if !f.output_tail.trim().is_empty() {
            out.push_str(&format!(
                "; its output ends with:\n```\n{}\n```",
                f.output_tail
            ));
        }
    }
    out
}

/// The project's gates, or an error saying why the mode cannot run without.
fn require_gates(omk: &Omk, mode: &str) -> Result<GateSet> {
    let set = omk.gate_set()?;
    if set.gates.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{mode} needs evidence: no verification gates are configured (.omk/gates.toml) or \
             detected in {}; add gates that decide when the task is done",
            omk.project_dir().display()
        )));
    }
    Ok(set)
}

/// Run the gates of `set` with their outputs under `dir/gates/<label>`.
fn run_gates(omk: &Omk, set: &GateSet, dir: &Path, label: &str) -> Result<GatesReport> {
    crate::gate::run(omk.paths(), set, &[], &dir.join("gates").join(label))
}

/// Longest `--name`: room is left for the `-i1000` / `-fix1` team suffixes.
const MAX_RUN_NAME: usize = 56;

/// A run id: `<prefix>-YYYYMMDD-HHMMSS-<8 hex>`, or the given name.
fn new_id(prefix: &str, what: &str, name: Option<&str>) -> Result<String> {
    match name {
        Some(n) => {
            crate::paths::validate_name(what, n)?;
            // Its teams are named `<id>-<suffix>`, which must stay a valid name.
            if n.len() > MAX_RUN_NAME {
                return Err(Error::invalid(format!(
                    "invalid {what} {n:?}: the limit is {MAX_RUN_NAME} characters"
                )));
            }
            Ok(n.to_string())
        }
        None => Ok(generated_id(prefix)),
    }
}

/// `<prefix>-YYYYMMDD-HHMMSS-<8 hex>`.
fn generated_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        crate::ids::random_hex(4)
    )
}

fn runs_dir(paths: &StatePaths, mode: &str) -> PathBuf {
    paths.root().join(mode)
}

fn run_dir(paths: &StatePaths, mode: &str, what: &str, id: &str) -> Result<PathBuf> {
    crate::paths::validate_name(what, id)?;
    Ok(runs_dir(paths, mode).join(id))
}

/// Create the run's directory; an existing run of that name is a conflict.
fn create_run_dir(paths: &StatePaths, mode: &str, what: &str, id: &str) -> Result<PathBuf> {
    let dir = run_dir(paths, mode, what, id)?;
    crate::store::ensure_dir(&runs_dir(paths, mode))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Conflict(format!(
            "{what} {id} already exists ({}); choose another --name",
            dir.display()
        ))),
        Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
    }
}

const STOP_FILE: &str = "stop-requested";

fn stop_requested(dir: &Path) -> bool {
    dir.join(STOP_FILE).exists()
}

/// How [`run_team_admitted`] ended.
pub(crate) enum Admitted {
    /// The team ran (to whatever end); its document.
    Ran(Box<crate::team::TeamDoc>),
    /// A stop was requested while waiting for the pool.
    Stopped,
    /// The pool can never admit the team as things are.
    Blocked(String),
}

/// Run the team `request` names once its pool has room
/// ([`crate::admission`]): waits while the pool is busy, ends on a stop
/// request or a pool that can never admit. A team refused anyway (another
/// process took the room first) is not an iteration: the loop waits again
/// and runs `<name>-r2`, `-r3`... `on_start` is told each team's name before
/// it starts (for `active_team`).
pub(crate) fn run_team_admitted(
    omk: &Omk,
    dir: &Path,
    mut request: crate::team::TeamRunRequest,
    mut on_start: impl FnMut(&str) -> Result<()>,
) -> Result<Admitted> {
    use crate::admission::{self, Waited};
    let base = request.name.clone().unwrap_or_default();
    for n in 1u32.. {
        match admission::wait_for_room(omk, request.pool.as_deref(), dir, || {
            stop_requested(dir).then_some(())
        })? {
            Waited::Room { .. } => {}
            Waited::Never(why) => return Ok(Admitted::Blocked(why)),
            Waited::Stopped(()) => return Ok(Admitted::Stopped),
        }
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-r{n}")
        };
        request.name = Some(name.clone());
        on_start(&name)?;
        let doc = omk.team_run(&request)?;
        if !admission::never_ran(&doc) {
            return Ok(Admitted::Ran(Box::new(doc)));
        }
        tracing::info!("team {name} was refused by its pool; waiting for room again");
    }
    unreachable!("the loop returns")
}

/// Ask the run in `dir` to stop, and shut down its active team now so the
/// loop does not wait for the agent's turn to end.
fn request_stop(omk: &Omk, dir: &Path, active_team: Option<&str>) -> Result<()> {
    crate::store::write_atomic(&dir.join(STOP_FILE), Utc::now().to_rfc3339().as_bytes())?;
    if let Some(team) = active_team {
        match omk.team_shutdown(team, false) {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => tracing::warn!("stopping team {team}: {e}"),
        }
    }
    Ok(())
}

/// A `running` run whose process is gone reads as `interrupted`.
fn effective_status(status: RunStatus, pid: Option<ProcessId>) -> RunStatus {
    match (status, pid) {
        (RunStatus::Running, Some(p)) if !p.is_alive() => RunStatus::Interrupted,
        (s, _) => s,
    }
}

/// What the autopilot and ralph state documents share, so one piece of
/// code loads, updates, lists and stops both.
trait RunDoc: crate::store::Document {
    /// The mode: its directory under the state root, and its name in messages.
    const MODE: &'static str;
    /// What its ids are called in messages ("ralph id").
    const ID: &'static str;
    fn id(&self) -> &str;
    fn created_at(&self) -> chrono::DateTime<Utc>;
    fn status(&self) -> RunStatus;
    fn set_status(&mut self, status: RunStatus);
    fn pid(&self) -> Option<ProcessId>;
    fn active_team(&self) -> Option<&str>;
    /// Record that the document changed now.
    fn touch(&mut self);
    /// Point the paths it reports at where it is found now.
    fn rehome(&mut self, dir: &Path);
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// A run's state as readers see it: re-homed, and `interrupted` when its
/// process is gone.
fn reading<T: RunDoc>(dir: &Path, mut doc: T) -> T {
    doc.set_status(effective_status(doc.status(), doc.pid()));
    doc.rehome(dir);
    doc
}

fn load_run<T: RunDoc>(dir: &Path, id: &str) -> Result<T> {
    let doc = crate::store::read_doc::<T>(&state_file(dir))?
        .ok_or_else(|| Error::NotFound(format!("no {} run named {id:?}", T::MODE)))?;
    Ok(reading(dir, doc))
}

/// Read-modify-write a run's state under its lock, stamping `updated_at`.
fn update_run<T: RunDoc, R>(dir: &Path, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
    let file = state_file(dir);
    // The document exists from the start of the run; a missing one is corrupt.
    let Some(current) = crate::store::read_doc::<T>(&file)? else {
        return Err(Error::corrupt(
            &file,
            format!("{} state.json is missing", T::MODE),
        ));
    };
    crate::store::update_doc(
        &file,
        move || current,
        |s| {
            let out = f(s)?;
            s.touch();
            Ok(out)
        },
    )
}

/// One run's state, by id.
fn run_status<T: RunDoc>(omk: &Omk, id: &str) -> Result<T> {
    let dir = run_dir(omk.paths(), T::MODE, T::ID, id)?;
    load_run(&dir, id)
}

/// Ask a running run (of any process) to stop; see [`request_stop`].
fn stop_run<T: RunDoc>(omk: &Omk, id: &str) -> Result<T> {
    let dir = run_dir(omk.paths(), T::MODE, T::ID, id)?;
    let s: T = load_run(&dir, id)?;
    if s.status().is_final() {
        return Err(Error::Conflict(format!(
            "{} {id} is already {}",
            T::MODE,
            s.status().as_str()
        )));
    }
    request_stop(omk, &dir, s.active_team())?;
    load_run(&dir, id)
}

/// Every run of a mode, newest first, and the unreadable ones
/// (`{"id", "error"}`) reported beside them instead of failing the list.
fn list_runs<T: RunDoc>(omk: &Omk) -> Result<(Vec<T>, Vec<serde_json::Value>)> {
    let dir = runs_dir(omk.paths(), T::MODE);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    let mut runs = Vec::new();
    let mut unreadable = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if crate::paths::validate_name(T::ID, &name).is_err() {
            continue;
        }
        match crate::store::read_doc::<T>(&state_file(&entry.path())) {
            Ok(Some(doc)) => runs.push(reading(&entry.path(), doc)),
            Ok(None) => {}
            Err(e) => unreadable.push(serde_json::json!({ "id": name, "error": e.to_string() })),
        }
    }
    runs.sort_by(|a, b| {
        b.created_at()
            .cmp(&a.created_at())
            .then_with(|| b.id().cmp(a.id()))
    });
    Ok((runs, unreadable))
}
