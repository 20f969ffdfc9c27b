//! Git as the shared code of a team in a store (docs/distributed.md):
//!
//! - the submitter snapshots the work tree it runs in (uncommitted work
//!   included) and pushes it to the team's repository as
//!   `refs/omk/<team>/base`;
//! - a worker checks each task out at that base, in a worktree of its own
//!   bare mirror of the repository, and pushes what the agent changed as
//!   `refs/omk/<team>/tasks/<task>/<attempt>`;
//! - the coordinator merges the tasks' commits onto the base in task order
//!   (git's three-way merge, as an isolated local run does) and pushes the
//!   result as `refs/omk/<team>/integration` and branch `omk/<team>`.
//!
//! The repository is the work tree's `origin` (or, without one, the work
//! tree itself: enough when every host sees it at the same path). Every
//! ref omk writes there is under `refs/omk/` but the delivered branch.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::isolation::{AttemptRecord, IsolationRecord};
use crate::error::{Error, Result};
use crate::git::{Merge, Repo};

/// Where a store team's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCode {
    /// What `git clone` and `git push` are given.
    pub url: String,
    /// The snapshot every task starts from.
    pub base: String,
}

impl SharedCode {
    /// As a task's spec carries it (`spec.repo`).
    pub fn to_json(&self) -> Value {
        json!({ "url": self.url, "base": self.base })
    }

    pub fn from_spec(spec: &Value) -> Option<SharedCode> {
        Some(SharedCode {
            url: spec["repo"]["url"].as_str()?.to_string(),
            base: spec["repo"]["base"].as_str()?.to_string(),
        })
    }

    /// What the team document records of it.
    pub fn from_record(r: &IsolationRecord) -> SharedCode {
        SharedCode {
            url: r.repo.to_string_lossy().into_owned(),
            base: r.base_commit.clone(),
        }
    }

    /// The bare mirror of the repository under `root` (one per URL).
    fn mirror(&self, root: &Path) -> Result<Repo> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.url.as_bytes());
        let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Repo::mirror(&self.url, &root.join("repos").join(format!("{key}.git")))
    }
}

/// Share the work tree `workdir` is in for team `team`: snapshot it and
/// push the snapshot as the team's base. `None` when `workdir` is in no
/// git work tree (tasks then work in plain directories).
pub fn share(workdir: &Path, team: &str) -> Result<Option<(SharedCode, IsolationRecord)>> {
    let Some(repo) = Repo::discover(workdir)? else {
        return Ok(None);
    };
    let url = match repo.origin_url()? {
        Some(u) => u,
        None => repo.top().to_string_lossy().into_owned(),
    };
    let snap = repo.snapshot(repo.top(), None, &format!("omk base of team {team}"))?;
    repo.push(&url, &[&format!("{}:refs/omk/{team}/base", snap.commit)])
        .map_err(|e| {
            Error::invalid(format!(
                "cannot share the code of team {team} through {url} (the work tree's origin, \
             which every worker host must reach): {e}"
            ))
        })?;
    let record = IsolationRecord::based_on(PathBuf::from(&url), &snap);
    Ok(Some((
        SharedCode {
            url,
            base: snap.commit,
        },
        record,
    )))
}

/// A worker's checkout of a task: `dir` (a worktree of the host's mirror
/// under `root`) made exactly the team's base.
pub fn checkout(root: &Path, code: &SharedCode, team: &str, dir: &Path) -> Result<Repo> {
    let mirror = code.mirror(root)?;
    if mirror
        .resolve(&format!("{}^{{commit}}", code.base))?
        .is_none()
    {
        // The base, or a later start (a conflict's head or merge with
        // markers, under `conflicts/`).
        mirror.fetch(
            &code.url,
            &[&format!("+refs/omk/{team}/*:refs/omk/{team}/*")],
        )?;
    }
    if dir.join(".git").exists() {
        mirror.reset_worktree(dir, &code.base)?;
    } else {
        mirror.prune_worktrees()?;
        mirror.add_worktree(dir, &code.base)?;
    }
    Ok(mirror)
}

/// The coordinator's checkout of `commit` (in its mirror under `scratch`)
/// for the gates: `scratch/gates`, made exactly that commit.
pub fn checkout_commit(scratch: &Path, code: &SharedCode, commit: &str) -> Result<PathBuf> {
    let mirror = code.mirror(scratch)?;
    let dir = scratch.join("gates");
    if dir.join(".git").exists() {
        mirror.reset_worktree(&dir, commit)?;
    } else {
        mirror.prune_worktrees()?;
        mirror.add_worktree(&dir, commit)?;
    }
    Ok(dir)
}

/// Commit what the agent left in `dir` on the base and push it as the
/// attempt's ref: `(commit, changed files)`, `None` when nothing changed.
pub fn publish(
    mirror: &Repo,
    code: &SharedCode,
    team: &str,
    task: &str,
    attempt: i32,
    dir: &Path,
    title: &str,
) -> Result<Option<(String, Vec<String>)>> {
    let message = format!(
        "omk: {task} attempt {attempt}: {}\n\nOmk-Team: {team}\nOmk-Task: {task}\nOmk-Attempt: {attempt}\n",
        title.lines().next().unwrap_or("")
    );
    let snap = mirror.snapshot(dir, Some(&code.base), &message)?;
    if !snap.dirty {
        return Ok(None);
    }
    mirror.push(
        &code.url,
        &[&format!(
            "+{}:refs/omk/{team}/tasks/{task}/{attempt}",
            snap.commit
        )],
    )?;
    let files = mirror.changed_files(&code.base, &snap.commit)?;
    Ok(Some((snap.commit, files)))
}

/// A task's pushed work, as its completion recorded it.
#[derive(Debug, Clone)]
pub struct TaskCommit {
    pub task: String,
    pub attempt: u32,
    pub commit: String,
    pub files: Vec<String>,
    /// The commit the attempt started from (the base, or after a conflict
    /// the head it conflicted with, or the merge with markers).
    pub start: String,
    /// An integrator turn's: the files it had to resolve.
    pub resolving: Vec<String>,
}

/// The first task whose work conflicts with what was integrated before
/// it.
#[derive(Debug, Clone)]
pub struct Conflicted {
    pub task: String,
    pub attempt: u32,
    pub files: Vec<String>,
    /// What git said.
    pub messages: String,
    /// The merge with conflict markers, pushed as
    /// `refs/omk/<team>/conflicts/<task>/<attempt>` (its first parent is
    /// the head it conflicted with): an integrator turn's start. `None`
    /// when an integrator's resolution still held markers.
    pub marked_commit: Option<String>,
    /// The head it conflicted with: a redo's start.
    pub head: String,
    /// The files as the merge left them and what was integrated
    /// meanwhile, for the next prompt.
    pub context: String,
}

/// What integrating a team's tasks produced.
#[derive(Debug, Clone)]
pub struct Integrated {
    pub head: String,
    pub attempts: Vec<AttemptRecord>,
    /// The first task whose work conflicts with what was integrated
    /// before it (or an integrator's resolution that kept markers):
    /// nothing after it is integrated.
    pub conflict: Option<Conflicted>,
}

/// Merge `commits` onto the base in order (in a mirror under `scratch`),
/// then push the result as `refs/omk/<team>/integration` and branch
/// `omk/<team>`.
pub fn integrate(
    scratch: &Path,
    code: &SharedCode,
    team: &str,
    commits: &[TaskCommit],
) -> Result<Integrated> {
    let mirror = code.mirror(scratch)?;
    if !commits.is_empty() {
        mirror.fetch(
            &code.url,
            &[&format!("+refs/omk/{team}/*:refs/omk/{team}/*")],
        )?;
    }
    let mut head = code.base.clone();
    let mut attempts = Vec::new();
    let mut conflict = None;
    let mut refs = Vec::new();
    for c in commits {
        let mut record = AttemptRecord {
            task_id: c.task.clone(),
            attempt: c.attempt,
            commit: c.commit.clone(),
            parent: c.start.clone(),
            files: c.files.clone(),
            outcome: "not_integrated".into(),
            conflict_files: Vec::new(),
            conflict_commit: None,
            integrator: !c.resolving.is_empty(),
            submodule_commits: Vec::new(),
        };
        // An integrator's resolution must have left no marker behind.
        if conflict.is_none() && !c.resolving.is_empty() {
            let left = super::isolation::unresolved_in(&mirror, &c.commit, &c.resolving)?;
            if !left.is_empty() {
                record.outcome = "conflict".into();
                record.conflict_files = left.clone();
                conflict = Some(Conflicted {
                    task: c.task.clone(),
                    attempt: c.attempt,
                    files: left,
                    messages: "the integrator left conflict markers".into(),
                    marked_commit: None,
                    head: head.clone(),
                    context: String::new(),
                });
            }
        }
        if conflict.is_none() {
            match mirror.merge(&head, &c.commit)? {
                Merge::Clean { tree } if tree == mirror.tree_of(&head)? => {
                    record.outcome = "unchanged".into();
                }
                Merge::Clean { tree } => {
                    let message = format!(
                        "omk: integrate {}\n\nOmk-Team: {team}\nOmk-Task: {}\n",
                        c.task, c.task
                    );
                    head = mirror.commit_tree(&tree, &[&head, &c.commit], &message)?;
                    record.outcome = "integrated".into();
                }
                Merge::Conflict {
                    tree,
                    files,
                    messages,
                } => {
                    let (marked, theirs) =
                        super::isolation::conflict_texts(&mirror, &tree, &files, &c.start, &head)?;
                    let message = format!(
                        "omk: {} attempt {} conflicts with integrated work\n\n\
                         Omk-Team: {team}\nOmk-Task: {}\nOmk-Conflict: {}\n",
                        c.task,
                        c.attempt,
                        c.task,
                        files.join(", ")
                    );
                    let marked_commit = mirror.commit_tree(&tree, &[&head, &c.commit], &message)?;
                    refs.push(format!(
                        "+{marked_commit}:refs/omk/{team}/conflicts/{}/{}",
                        c.task, c.attempt
                    ));
                    record.outcome = "conflict".into();
                    record.conflict_files = files.clone();
                    record.conflict_commit = Some(marked_commit.clone());
                    conflict = Some(Conflicted {
                        task: c.task.clone(),
                        attempt: c.attempt,
                        context: super::isolation::conflict_context(&messages, &marked, &theirs),
                        files,
                        messages,
                        marked_commit: Some(marked_commit),
                        head: head.clone(),
                    });
                }
            }
        }
        attempts.push(record);
    }
    refs.push(format!("+{head}:refs/omk/{team}/integration"));
    refs.push(format!("+{head}:refs/heads/omk/{team}"));
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    mirror.push(&code.url, &refs)?;
    Ok(Integrated {
        head,
        attempts,
        conflict,
    })
}
