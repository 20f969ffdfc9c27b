//! Recovery checkpoints (`checkpoints/checkpoint-<N>.json`): a snapshot of
//! the goal state, task graph, verification and proof, and the project's
//! git commit, that `rollback` restores.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::graph::TaskGraph;
use super::proof::{GoalProof, Verification};
use super::state::GoalState;
use crate::error::{Error, Result};
use crate::store::{self, Document};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCheckpoint {
    pub version: u32,
    pub checkpoint_id: u32,
    pub goal_id: String,
    /// Why it was taken: `planned`, `recover`, ...
    pub label: String,
    pub created_at: DateTime<Utc>,
    /// The controller iteration it was taken after.
    pub iteration: u32,
    /// `HEAD` of the project (git projects).
    pub git_commit: Option<String>,
    pub goal_state: GoalState,
    pub task_graph: Option<TaskGraph>,
    pub verification: Option<Verification>,
    pub proof: Option<GoalProof>,
}

impl Document for RecoveryCheckpoint {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal recovery checkpoint";
}

pub fn dir(goal_dir: &Path) -> PathBuf {
    goal_dir.join("checkpoints")
}

fn file(goal_dir: &Path, id: u32) -> PathBuf {
    dir(goal_dir).join(format!("checkpoint-{id}.json"))
}

/// Checkpoint ids present, ascending.
pub fn ids(goal_dir: &Path) -> Result<Vec<u32>> {
    let d = dir(goal_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", d.display()), e)),
    };
    let mut ids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("checkpoint-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Take the next checkpoint (the directory is created on first use).
pub fn take(
    goal_dir: &Path,
    label: &str,
    iteration: u32,
    git_commit: Option<String>,
) -> Result<RecoveryCheckpoint> {
    // Serialise id allocation between processes.
    let _lock = store::FileLock::exclusive(&dir(goal_dir).join(".lock"))?;
    let id = ids(goal_dir)?.last().map_or(1, |n| n + 1);
    let goal_state = super::state::load_state(goal_dir, "")?;
    let cp = RecoveryCheckpoint {
        version: 1,
        checkpoint_id: id,
        goal_id: goal_state.goal_id.clone(),
        label: label.into(),
        created_at: Utc::now(),
        iteration,
        git_commit,
        goal_state,
        task_graph: TaskGraph::load(goal_dir)?,
        verification: store::read_doc(&Verification::file(goal_dir))?,
        proof: GoalProof::load(goal_dir)?,
    };
    store::write_doc(&file(goal_dir, id), &cp)?;
    Ok(cp)
}

pub fn load(goal_dir: &Path, id: u32) -> Result<RecoveryCheckpoint> {
    store::read_doc(&file(goal_dir, id))?.ok_or_else(|| {
        Error::NotFound(format!(
            "checkpoint {id} not found (this goal has: {:?})",
            ids(goal_dir).unwrap_or_default()
        ))
    })
}

/// Write the checkpoint's documents back (a missing one is removed so the
/// goal is exactly as it was).
pub fn restore(goal_dir: &Path, cp: &RecoveryCheckpoint) -> Result<()> {
    fn put<T: Document>(path: &Path, doc: Option<&T>) -> Result<()> {
        match doc {
            Some(d) => store::write_doc(path, d),
            None => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
            },
        }
    }
    put(&TaskGraph::file(goal_dir), cp.task_graph.as_ref())?;
    put(&Verification::file(goal_dir), cp.verification.as_ref())?;
    put(&GoalProof::file(goal_dir), cp.proof.as_ref())?;
    super::state::update_state(goal_dir, |s| {
        let keep_dir = s.state_dir.clone();
        *s = cp.goal_state.clone();
        s.state_dir = keep_dir;
        Ok(())
    })
}
