//! `slice_execution`: a goal that works in a git worktree of its own (its
//! *workspace*, under the goal's state dir) instead of the user's checkout.
//!
//! At creation the project is snapshotted (uncommitted and untracked work
//! included, the user's index, HEAD and files untouched) to
//! `refs/omk/<goal>/base`, and the workspace is checked out there,
//! detached. Every wave is an isolated team (`--isolation worktree`) run on
//! the workspace; what it integrated lands by moving the workspace to the
//! wave's integrated commit (the wave's branch is dropped, its refs stay).
//! The gates, snapshots and checkpoints of the goal all look at the
//! workspace. When the goal ends its result is branch `omk/<goal>`; the
//! merge policy says what else happens (see [`MergePolicy`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::git::Repo;

/// What happens to a ready goal's result (`merge_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The result stays on branch `omk/<goal>`.
    Disabled,
    /// Ready, with a human decision "merge omk/<goal>".
    Manual,
    /// Applied to the user's checkout when the gates passed and the
    /// checkout is unchanged since the goal began (else the branch stays,
    /// with why).
    Gated,
}

impl MergePolicy {
    pub fn parse(s: &str) -> Result<MergePolicy> {
        match s {
            "disabled" => Ok(MergePolicy::Disabled),
            "manual" => Ok(MergePolicy::Manual),
            "gated" => Ok(MergePolicy::Gated),
            other => Err(Error::InvalidInput(format!(
                "merge_policy {other:?}: expected disabled, manual or gated"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MergePolicy::Disabled => "disabled",
            MergePolicy::Manual => "manual",
            MergePolicy::Gated => "gated",
        }
    }
}

/// Refuse a delivery policy omk cannot honour: only `local` exists until
/// omk has a forge client.
pub fn check_delivery_policy(p: &str) -> Result<()> {
    if p == "local" {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "delivery_policy {p:?}: omk has no forge client yet, so it cannot open pull requests; \
         only \"local\" is supported (the result is a local branch, see merge_policy)"
    )))
}

/// The goal's workspace, as `controller.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// The worktree (under the goal's state dir).
    pub dir: PathBuf,
    /// The user's work tree it was made from.
    pub repo: PathBuf,
    /// The snapshot of the project the goal started from.
    pub base_commit: String,
    /// The user's HEAD then.
    pub base_head: Option<String>,
    pub base_dirty: bool,
    pub merge_policy: MergePolicy,
}

/// What the end of a slice-executed goal did with its result
/// (`delivery.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub version: u32,
    pub merge_policy: MergePolicy,
    pub branch: String,
    pub commit: String,
    pub base_commit: String,
    pub diff_stat: String,
    /// `gated`: whether the result was applied to the user's checkout.
    pub applied: bool,
    /// Why it was not applied, or what a human must decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl crate::store::Document for Delivery {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal delivery";
}

fn repo_of(dir: &Path) -> Result<Repo> {
    Repo::discover(dir)?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "slice_execution needs a git work tree, and {} is in none",
            dir.display()
        ))
    })
}

/// Snapshot `project` and check the goal's workspace out at it.
pub fn create(
    project: &Path,
    goal: &str,
    dir: &Path,
    merge_policy: MergePolicy,
) -> Result<Workspace> {
    let repo = repo_of(project)?;
    let snap = repo.snapshot(repo.top(), None, &format!("omk base of goal {goal}"))?;
    let base = format!("refs/omk/{goal}/base");
    if !repo.update_ref(&base, &snap.commit, None)? {
        return Err(Error::Conflict(format!("{base} already exists")));
    }
    repo.add_worktree(dir, &snap.commit)?;
    Ok(Workspace {
        dir: dir.to_path_buf(),
        repo: repo.top().to_path_buf(),
        base_commit: snap.commit,
        base_head: snap.parent,
        base_dirty: snap.dirty,
        merge_policy,
    })
}

/// Land what wave team `team` integrated: the workspace moves to
/// `integrated` (tracked files as there, untracked build output kept) and
/// the wave's branch goes (its refs stay). Returns whether it moved.
pub fn land_wave(ws: &Workspace, team: &str, integrated: &str) -> Result<bool> {
    let repo = repo_of(&ws.dir)?;
    let moved = repo.resolve("HEAD")?.as_deref() != Some(integrated);
    if moved {
        repo.move_to(&ws.dir, integrated)?;
    }
    let branch = format!("refs/heads/omk/{team}");
    if repo.resolve(&branch)?.is_some() {
        repo.delete_ref(&branch)?;
    }
    Ok(moved)
}

/// The goal's end: its result (the workspace, with anything left
/// uncommitted there) on branch `omk/<goal>`; with `apply` (a ready goal
/// under `gated`), also in the user's checkout when that is unchanged
/// since the base snapshot.
pub fn deliver(ws: &Workspace, goal: &str, apply: bool) -> Result<Delivery> {
    let repo = repo_of(&ws.dir)?;
    let snap = repo.snapshot(&ws.dir, None, &format!("omk: goal {goal} result"))?;
    let commit = if snap.dirty {
        snap.commit
    } else {
        snap.parent.clone().unwrap_or(snap.commit)
    };
    let branch = format!("omk/{goal}");
    let name = format!("refs/heads/{branch}");
    let old = repo.resolve(&name)?;
    repo.update_ref(&name, &commit, old.as_deref())?;
    let diff_stat = repo.diff_stat(&ws.base_commit, &commit)?;
    let mut d = Delivery {
        version: 1,
        merge_policy: ws.merge_policy,
        branch: branch.clone(),
        commit: commit.clone(),
        base_commit: ws.base_commit.clone(),
        diff_stat,
        applied: false,
        reason: None,
    };
    match ws.merge_policy {
        MergePolicy::Disabled => {}
        MergePolicy::Manual => {
            d.reason = Some(format!(
                "merge branch {branch} into your checkout when you accept it (git merge {branch})"
            ))
        }
        MergePolicy::Gated if !apply => {
            d.reason = Some(format!(
                "not applied: the goal is not ready; the work so far is on branch {branch}"
            ))
        }
        MergePolicy::Gated => {
            let user = repo_of(&ws.repo)?;
            let now = user.snapshot(user.top(), None, "omk apply check")?;
            if now.parent != ws.base_head || now.tree != user.tree_of(&ws.base_commit)? {
                d.reason = Some(format!(
                    "not applied: your checkout changed since the goal began; merge branch {branch} yourself"
                ));
            } else {
                let patch = tempfile::NamedTempFile::new()
                    .map_err(|e| Error::io("creating the goal's patch file", e))?;
                let (bytes, _) = user.write_patch(&ws.base_commit, &commit, patch.path())?;
                if bytes > 0 {
                    user.apply_patch(user.top(), patch.path())?;
                }
                d.applied = true;
            }
        }
    }
    Ok(d)
}
