//! A run that works in a git worktree of its own (its *workspace*, under
//! its state dir) instead of the user's checkout: a goal with
//! `slice_execution`, a ralph or autopilot run with `--isolation worktree`.
//!
//! At creation the project is snapshotted (uncommitted and untracked work
//! included, the user's index, HEAD and files untouched) to
//! `refs/omk/<run>/base`, and the workspace is checked out there, detached.
//! Every team the run starts is an isolated team (`--isolation worktree`)
//! on the workspace; what it integrated lands by moving the workspace to
//! the team's integrated commit (the team's branch is dropped, its refs
//! stay). The run's gates and snapshots look at the workspace. When the
//! run ends its result is branch `omk/<run>`, and with `apply` also in the
//! user's checkout if that is unchanged since the snapshot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::git::Repo;

/// A run's workspace, as its state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// The worktree (under the run's state dir).
    pub dir: PathBuf,
    /// The user's work tree it was made from.
    pub repo: PathBuf,
    /// The snapshot of the project the run started from.
    pub base_commit: String,
    /// The user's HEAD then.
    pub base_head: Option<String>,
    pub base_dirty: bool,
    /// Its checkouts fetch Git LFS content (`[team.worktree] lfs`).
    #[serde(default)]
    pub lfs: bool,
}

/// What the end of a run with a workspace did with its result
/// (`delivery.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub version: u32,
    pub branch: String,
    pub commit: String,
    pub base_commit: String,
    pub diff_stat: String,
    /// Whether the result was applied to the user's checkout.
    pub applied: bool,
    /// Why it was not applied, or what a human must decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl crate::store::Document for Delivery {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "delivery";
}

fn repo_of(dir: &Path) -> Result<Repo> {
    Repo::discover(dir)?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "working in a worktree needs a git work tree, and {} is in none",
            dir.display()
        ))
    })
}

/// Refuse `--isolation worktree` for a project outside a git work tree,
/// before anything of the run is written.
pub fn check(project: &Path) -> Result<()> {
    repo_of(project).map(|_| ())
}

/// Snapshot `project` and check run `run`'s workspace out at it, in `dir`
/// (fetching Git LFS content when `lfs`, `[team.worktree] lfs`).
pub fn create(project: &Path, run: &str, dir: &Path, lfs: bool) -> Result<Workspace> {
    let repo = repo_of(project)?.with_lfs(lfs);
    let snap = repo.snapshot(repo.top(), None, &format!("omk base of {run}"))?;
    let base = format!("refs/omk/{run}/base");
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
        lfs,
    })
}

/// Land what wave team `team` integrated: the workspace moves to
/// `integrated` (tracked files as there, untracked build output kept) and
/// the wave's branch goes (its refs stay). Returns whether it moved.
pub fn land_wave(ws: &Workspace, team: &str, integrated: &str) -> Result<bool> {
    let repo = repo_of(&ws.dir)?.with_lfs(ws.lfs);
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

/// The end of a ralph or autopilot run: its result delivered (applied
/// when `apply`), then the workspace removed. A delivery that failed is
/// added to `reason`; a workspace that cannot be removed is logged.
pub fn conclude(
    ws: &Workspace,
    run: &str,
    apply: bool,
    reason: &mut Option<String>,
) -> Option<Delivery> {
    let delivery = match deliver(ws, run, apply) {
        Ok(d) => Some(d),
        Err(e) => {
            let before = reason.take().map(|r| r + "; ").unwrap_or_default();
            *reason = Some(format!("{before}delivery failed: {e}"));
            None
        }
    };
    if let Err(e) = remove(ws) {
        tracing::warn!("cannot remove the workspace of {run}: {e}");
    }
    delivery
}

/// Remove the workspace (its refs and branch stay).
pub fn remove(ws: &Workspace) -> Result<()> {
    repo_of(&ws.repo)?.remove_worktree(&ws.dir)
}

/// Whether a run asked for `--isolation worktree` (`none` by default for
/// runs that are not teams), refusing anything else.
pub fn wants_worktree(isolation: Option<&str>) -> Result<bool> {
    match isolation {
        None | Some("none") => Ok(false),
        Some("worktree") => Ok(true),
        Some(other) => Err(Error::InvalidInput(format!(
            "isolation {other:?}: expected worktree or none"
        ))),
    }
}

/// Whether a run asked for `--deliver apply` (`branch` by default), which
/// needs `--isolation worktree`.
pub fn wants_apply(deliver: Option<&str>, worktree: bool) -> Result<bool> {
    match deliver {
        None | Some("branch") => Ok(false),
        Some("apply") if worktree => Ok(true),
        Some("apply") => Err(Error::InvalidInput(
            "--deliver apply needs --isolation worktree".into(),
        )),
        Some(other) => Err(Error::InvalidInput(format!(
            "deliver {other:?}: expected branch or apply"
        ))),
    }
}

/// The run's end: its result (the workspace, with anything left
/// uncommitted there) on branch `omk/<run>`; with `apply`, also in the
/// user's checkout when that is unchanged since the base snapshot
/// (otherwise `reason` says why not).
pub fn deliver(ws: &Workspace, run: &str, apply: bool) -> Result<Delivery> {
    let repo = repo_of(&ws.dir)?;
    let snap = repo.snapshot(&ws.dir, None, &format!("omk: {run} result"))?;
    let commit = if snap.dirty {
        snap.commit
    } else {
        snap.parent.clone().unwrap_or(snap.commit)
    };
    let branch = format!("omk/{run}");
    let name = format!("refs/heads/{branch}");
    let old = repo.resolve(&name)?;
    repo.update_ref(&name, &commit, old.as_deref())?;
    let diff_stat = repo.diff_stat(&ws.base_commit, &commit)?;
    let mut d = Delivery {
        version: 1,
        branch: branch.clone(),
        commit: commit.clone(),
        base_commit: ws.base_commit.clone(),
        diff_stat,
        applied: false,
        reason: None,
    };
    if apply {
        let user = repo_of(&ws.repo)?;
        let now = user.snapshot(user.top(), None, "omk apply check")?;
        if now.parent != ws.base_head || now.tree != user.tree_of(&ws.base_commit)? {
            d.reason = Some(format!(
                "not applied: your checkout changed since the run began; merge branch {branch} yourself"
            ));
        } else {
            let patch = tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("creating the result's patch file", e))?;
            let (bytes, _) = user.write_patch(&ws.base_commit, &commit, patch.path())?;
            if bytes > 0 {
                user.apply_patch(user.top(), patch.path())?;
            }
            d.applied = true;
        }
    }
    Ok(d)
}
