//! Worker isolation (`--isolation worktree`): each worker edits its own git
//! worktree outside the project, omk commits what a turn changed under
//! hidden refs, and one integration ref advances by three-way merges, task
//! by task, without a work tree. The user's checkout is never touched until
//! delivery.
//!
//! Refs of team `T` (none of them a branch):
//! - `refs/omk/T/base`: the snapshot of the project when the run started
//!   (uncommitted and untracked work included);
//! - `refs/omk/T/integration`: the integrated result so far;
//! - `refs/omk/T/tasks/<task>/<attempt>`: what each attempt changed;
//! - `refs/omk/T/conflicts/<task>/<attempt>`: an attempt that conflicted,
//!   merged onto the integration head with git's conflict markers (what an
//!   integrator turn starts from).
//!
//! Delivery leaves the result on branch `omk/T`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::git::{Merge, Repo};

/// How a team's workers share the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Everyone edits the project directory itself.
    #[default]
    None,
    /// A git worktree per worker, integrated by omk.
    Worktree,
}

impl Isolation {
    pub fn parse(s: &str) -> Result<Isolation> {
        match s {
            "none" => Ok(Isolation::None),
            "worktree" => Ok(Isolation::Worktree),
            other => Err(Error::invalid(format!(
                "unknown isolation {other:?}; expected worktree or none"
            ))),
        }
    }
}

/// Where an isolated run's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// Branch `omk/<team>` only.
    #[default]
    Branch,
    /// The branch, and the changes applied to the user's checkout.
    Apply,
}

impl Deliver {
    pub fn parse(s: &str) -> Result<Deliver> {
        match s {
            "branch" => Ok(Deliver::Branch),
            "apply" => Ok(Deliver::Apply),
            other => Err(Error::invalid(format!(
                "unknown delivery {other:?}; expected branch or apply"
            ))),
        }
    }
}

/// What delivery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub mode: Deliver,
    pub branch: Option<String>,
    /// Whether the changes were applied to the user's checkout.
    pub applied: bool,
    /// Why they were not (with `apply`), or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the team document records of an isolated run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationRecord {
    /// The repository's top directory.
    pub repo: PathBuf,
    /// The snapshot commit the workers started from.
    pub base_commit: String,
    /// The user's HEAD when the run started (`None`: no commit yet).
    pub base_head: Option<String>,
    /// Whether uncommitted or untracked work went into the base.
    pub base_dirty: bool,
    /// The integrated result so far.
    pub integrated_commit: String,
    /// The branch the result was delivered to, once it was.
    #[serde(default)]
    pub branch: Option<String>,
    /// Every attempt that changed something, committed.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// The commit the gates ran on (the proof requires it to be
    /// `integrated_commit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates_commit: Option<String>,
    /// The end of the run: the integrated tree, its diff against the base
    /// (stat and patch file), and what cleanup left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultRecord>,
    /// What delivery did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryRecord>,
    /// What reconciling a dead run's worktrees did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<ReconcileRecord>,
}

impl IsolationRecord {
    /// The record of a run whose workers start from snapshot `snap` of
    /// repository `repo` (nothing integrated yet).
    pub fn based_on(repo: PathBuf, snap: &crate::git::Snapshot) -> IsolationRecord {
        IsolationRecord {
            repo,
            base_commit: snap.commit.clone(),
            base_head: snap.parent.clone(),
            base_dirty: snap.dirty,
            integrated_commit: snap.commit.clone(),
            branch: None,
            attempts: Vec::new(),
            gates_commit: None,
            result: None,
            delivery: None,
            reconciled: None,
        }
    }
}

/// A dead run, reconciled: work found in its worktrees kept under
/// `refs/omk/<team>/wip/<worker>`, the worktrees removed and pruned, and
/// the record brought up to what its integration ref says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileRecord {
    /// `(ref, commit)` of every worktree that held uncommitted work.
    pub wip_refs: Vec<(String, String)>,
    pub removed: Vec<PathBuf>,
    pub left_behind: Vec<String>,
    /// The tasks the integration ref holds, in the order they were
    /// integrated (each once).
    #[serde(default)]
    pub integrated: Vec<String>,
}

/// One attempt's commit in the team document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub task_id: String,
    pub attempt: u32,
    pub commit: String,
    pub parent: String,
    pub files: Vec<String>,
    /// `integrated`, `unchanged`, `conflict`, or `not_integrated` (the turn
    /// did not finish well; the work is kept in its ref).
    pub outcome: String,
    #[serde(default)]
    pub conflict_files: Vec<String>,
    /// For a `conflict`: the merge with conflict markers, under
    /// `refs/omk/<team>/conflicts/<task>/<attempt>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_commit: Option<String>,
    /// The attempt was an integrator turn resolving an earlier conflict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub integrator: bool,
    /// `(path, commit)` of each submodule whose files the attempt changed:
    /// kept under the same ref name in that submodule's repository, not
    /// integrated (only a submodule's pinned commit is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submodule_commits: Vec<(String, String)>,
}

/// What an isolated run produced, as the proof reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub integrated_tree: String,
    pub diff_stat: String,
    /// `final.patch` in the team dir: `git diff --binary base integrated`.
    pub patch: PathBuf,
    pub patch_bytes: u64,
    pub patch_sha256: String,
    /// Worktrees that could not be removed (empty when cleanup was whole).
    pub left_behind: Vec<String>,
}

/// An attempt's changes, committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCommit {
    pub attempt: u32,
    pub commit: String,
    /// The integration head the attempt started from.
    pub parent: String,
    pub files: Vec<String>,
}

/// What integrating an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integration {
    /// The integration ref moved to `commit`.
    Integrated { commit: String },
    /// The attempt changed nothing.
    Unchanged,
    /// The attempt's changes conflict with what was integrated since it
    /// started: the files, git's messages, the conflicted files' text
    /// with conflict markers, and the diff of those files that was
    /// integrated meanwhile (the other tasks' side); `marked_commit` is the
    /// merge with those markers, on the head (an integrator's start).
    Conflict {
        marked_commit: String,
        files: Vec<String>,
        messages: String,
        marked: Vec<(String, String)>,
        theirs: String,
    },
}

/// Most bytes of one conflicted file's marked text handed back.
const MARKED_MAX_BYTES: usize = 16 * 1024;

/// The git side of one isolated run.
pub struct Integrator {
    repo: Repo,
    team: String,
    /// Where the worker worktrees live (under the team's state dir).
    root: PathBuf,
    record: Mutex<IsolationRecord>,
    /// The work dir relative to the repository's top (empty at the top):
    /// agents and gates work in the same place inside their worktrees.
    sub: PathBuf,
}

impl Integrator {
    /// Snapshot the whole work tree `workdir` is in and start the team's
    /// refs there.
    pub fn start(repo: Repo, workdir: &Path, team: &str, root: PathBuf) -> Result<Integrator> {
        let real = std::fs::canonicalize(workdir)
            .map_err(|e| Error::io(format!("resolving {}", workdir.display()), e))?;
        let top = std::fs::canonicalize(repo.top())
            .map_err(|e| Error::io(format!("resolving {}", repo.top().display()), e))?;
        let sub = real
            .strip_prefix(&top)
            .map(Path::to_path_buf)
            .map_err(|_| {
                Error::invalid(format!(
                    "{} is not inside its work tree {}",
                    workdir.display(),
                    top.display()
                ))
            })?;
        let snap = repo.snapshot(repo.top(), None, &format!("omk base of team {team}"))?;
        let base_ref = format!("refs/omk/{team}/base");
        let integration = format!("refs/omk/{team}/integration");
        for r in [&base_ref, &integration] {
            if !repo.update_ref(r, &snap.commit, None)? {
                return Err(Error::Conflict(format!(
                    "{r} already exists in {}: a team of this name ran here before \
                     (omk team gc removes old teams' refs)",
                    repo.top().display()
                )));
            }
        }
        Ok(Integrator {
            record: Mutex::new(IsolationRecord::based_on(repo.top().to_path_buf(), &snap)),
            repo,
            team: team.to_string(),
            root,
            sub,
        })
    }

    pub fn record(&self) -> IsolationRecord {
        self.with_record(|r| r.clone())
    }

    fn with_record<R>(&self, f: impl FnOnce(&mut IsolationRecord) -> R) -> R {
        f(&mut self.record.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Mark the attempt with `commit` as `outcome`.
    fn mark(r: &mut IsolationRecord, commit: &str, outcome: &str, conflict_files: &[String]) {
        if let Some(a) = r.attempts.iter_mut().rev().find(|a| a.commit == commit) {
            a.outcome = outcome.to_string();
            a.conflict_files = conflict_files.to_vec();
        }
    }

    /// The gates are about to run on the integrated commit; returns it.
    pub fn gates_on_integrated(&self) -> String {
        self.with_record(|r| {
            r.gates_commit = Some(r.integrated_commit.clone());
            r.integrated_commit.clone()
        })
    }

    /// Write `final.patch` into `dir` and record the result (before cleanup).
    pub fn finalize(&self, dir: &Path) -> Result<()> {
        let r = self.record();
        let tree = self.repo.tree_of(&r.integrated_commit)?;
        let diff_stat = self.repo.diff_stat(&r.base_commit, &r.integrated_commit)?;
        let patch = dir.join("final.patch");
        let (bytes, sha) = self
            .repo
            .write_patch(&r.base_commit, &r.integrated_commit, &patch)?;
        self.with_record(|r| {
            r.result = Some(ResultRecord {
                integrated_tree: tree,
                diff_stat,
                patch,
                patch_bytes: bytes,
                patch_sha256: sha,
                left_behind: Vec::new(),
            })
        });
        Ok(())
    }

    fn head(&self) -> String {
        self.with_record(|r| r.integrated_commit.clone())
    }

    /// The worktree of `worker`.
    pub fn worktree(&self, worker: &str) -> PathBuf {
        self.root.join(worker)
    }

    /// How many worktrees (of `wanted`) the disk holding the state dir can
    /// take, each a checkout of the base plus a margin for what the agents
    /// write (half its size again, at least 64 MiB), keeping 256 MiB free.
    /// `(n, why)`: `why` says what limited `n` below `wanted`.
    pub fn worktrees_that_fit(&self, wanted: usize) -> Result<(usize, Option<String>)> {
        const MARGIN_MIN: u64 = 64 * 1024 * 1024;
        const KEEP_FREE: u64 = 256 * 1024 * 1024;
        let size = self.repo.tree_bytes(&self.record().base_commit)?;
        let per = size + (size / 2).max(MARGIN_MIN);
        std::fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let free = crate::health::free_bytes(&self.root)
            .map_err(|e| Error::io(format!("statvfs {}", self.root.display()), e))?;
        // The gates' worktree counts too.
        let fit = (free.saturating_sub(KEEP_FREE) / per.max(1)).saturating_sub(1) as usize;
        if fit >= wanted {
            return Ok((wanted, None));
        }
        let why = format!(
            "{} MiB free at {} hold {fit} worktree(s) of ~{} MiB each (besides the gates'), not {wanted}",
            free / (1024 * 1024),
            self.root.display(),
            per / (1024 * 1024)
        );
        Ok((fit, Some(why)))
    }

    /// Environment that keeps a worker's build caches in one place for all
    /// its tasks (the worktree is cleaned between tasks): `CARGO_TARGET_DIR`
    /// under the team's state dir, removed at cleanup.
    pub fn cache_env(&self, worker: &str) -> Vec<(String, String)> {
        let dir = self.root.join(".cache").join(worker);
        vec![(
            "CARGO_TARGET_DIR".to_string(),
            dir.join("cargo-target").to_string_lossy().into_owned(),
        )]
    }

    /// Where `worker` works: the work dir's place in its worktree.
    pub fn work_dir(&self, worker: &str) -> PathBuf {
        self.worktree(worker).join(&self.sub)
    }

    /// Make `worker`'s worktree the current integration head (or commit
    /// `at`), clean; returns the commit it now holds.
    pub fn checkout(&self, worker: &str, at: Option<&str>) -> Result<String> {
        let head = at.map_or_else(|| self.head(), str::to_string);
        let path = self.worktree(worker);
        if path.join(".git").exists() {
            self.repo.reset_worktree(&path, &head)?;
        } else {
            std::fs::create_dir_all(&self.root)
                .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
            self.repo.add_worktree(&path, &head)?;
        }
        self.sync_submodules(&path, &head)?;
        Ok(head)
    }

    /// Check out in worktree `wt` each submodule `commit` pins, as a
    /// worktree of the user's own clone of it (`modules/<name>`: no
    /// network, nothing written to the user's config). A submodule the
    /// user never initialised, or whose pinned commit their clone lacks,
    /// stays empty, with a warning.
    fn sync_submodules(&self, wt: &Path, commit: &str) -> Result<()> {
        let subs = self.repo.submodules(commit)?;
        if subs.is_empty() {
            return Ok(());
        }
        let modules = self.repo.common_dir()?.join("modules");
        for s in subs {
            let git_dir = modules.join(&s.name);
            if !git_dir.join("HEAD").is_file() {
                tracing::warn!(
                    "submodule {} is not initialised in {}: it stays empty in the worktrees",
                    s.path,
                    self.repo.top().display()
                );
                continue;
            }
            let module = self.repo.at_git_dir(&git_dir);
            let target = wt.join(&s.path);
            let done = if target.join(".git").exists() {
                module.reset_worktree(&target, &s.commit)
            } else {
                // The empty directory git made for it.
                let _ = std::fs::remove_dir(&target);
                module.add_worktree(&target, &s.commit)
            };
            if let Err(e) = done {
                tracing::warn!("cannot check out submodule {} at {}: {e}", s.path, s.commit);
            }
        }
        Ok(())
    }

    /// Keep what an attempt changed inside submodules: a snapshot in each
    /// submodule's repository under `ref_name`. `(path, commit)` of each.
    fn commit_submodules(
        &self,
        wt: &Path,
        parent: &str,
        ref_name: &str,
        message: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let subs = self.repo.submodules(parent)?;
        if subs.is_empty() {
            return Ok(out);
        }
        let modules = self.repo.common_dir()?.join("modules");
        for s in subs {
            let target = wt.join(&s.path);
            if !target.join(".git").exists() {
                continue;
            }
            let module_dir = modules.join(&s.name);
            let module = self.repo.at_git_dir(&module_dir);
            let snap = module.snapshot(&target, None, message)?;
            if snap.dirty {
                let old = module.resolve(ref_name)?;
                module.update_ref(ref_name, &snap.commit, old.as_deref())?;
                out.push((s.path.clone(), snap.commit));
            }
        }
        Ok(out)
    }

    /// Commit what `worker`'s worktree holds on `parent` as attempt
    /// `attempt` of `task` (an `integrator` turn's when it resolved a
    /// conflict); `None` when nothing changed.
    pub fn commit_attempt(
        &self,
        worker: &str,
        task: &str,
        attempt: u32,
        parent: &str,
        title: &str,
        integrator: bool,
    ) -> Result<Option<AttemptCommit>> {
        let what = if integrator { "resolution" } else { "attempt" };
        let message = format!(
            "omk: {task} {what} {attempt}: {}\n\nOmk-Team: {}\nOmk-Task: {task}\nOmk-Attempt: {attempt}\n",
            title.lines().next().unwrap_or(""),
            self.team
        );
        let wt = self.worktree(worker);
        let name = format!("refs/omk/{}/tasks/{task}/{attempt}", self.team);
        let submodule_commits = self.commit_submodules(&wt, parent, &name, &message)?;
        let snap = self.repo.snapshot(&wt, Some(parent), &message)?;
        if !snap.dirty && submodule_commits.is_empty() {
            return Ok(None);
        }
        // An attempt is committed once; a stale ref of the same name (a
        // resumed run) is replaced.
        let old = self.repo.resolve(&name)?;
        self.repo.update_ref(&name, &snap.commit, old.as_deref())?;
        let files = self.repo.changed_files(parent, &snap.commit)?;
        self.with_record(|r| {
            r.attempts.push(AttemptRecord {
                task_id: task.to_string(),
                attempt,
                commit: snap.commit.clone(),
                parent: parent.to_string(),
                files: files.clone(),
                outcome: "not_integrated".into(),
                conflict_files: Vec::new(),
                conflict_commit: None,
                integrator,
                submodule_commits,
            })
        });
        Ok(Some(AttemptCommit {
            attempt,
            commit: snap.commit,
            parent: parent.to_string(),
            files,
        }))
    }

    /// Merge `attempt` into the integration head and move the ref, only
    /// from the head it merged onto.
    pub fn integrate(&self, task: &str, attempt: &AttemptCommit) -> Result<Integration> {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let head = record.integrated_commit.clone();
        match self.repo.merge(&head, &attempt.commit)? {
            Merge::Clean { tree } => {
                if tree == self.repo.tree_of(&head)? {
                    Self::mark(&mut record, &attempt.commit, "unchanged", &[]);
                    return Ok(Integration::Unchanged);
                }
                let message = format!(
                    "omk: integrate {task}\n\nOmk-Team: {}\nOmk-Task: {task}\n",
                    self.team
                );
                let commit = self
                    .repo
                    .commit_tree(&tree, &[&head, &attempt.commit], &message)?;
                let name = format!("refs/omk/{}/integration", self.team);
                crate::process::fault_point(&format!("before-integrate:{task}"));
                let moved = self.repo.update_ref(&name, &commit, Some(&head))?;
                crate::process::fault_point(&format!("after-integrate:{task}"));
                if !moved {
                    return Err(Error::Conflict(format!(
                        "{name} moved under the integrator (another process wrote it)"
                    )));
                }
                record.integrated_commit = commit.clone();
                Self::mark(&mut record, &attempt.commit, "integrated", &[]);
                Ok(Integration::Integrated { commit })
            }
            Merge::Conflict {
                tree,
                files,
                messages,
            } => {
                let (marked, theirs) =
                    conflict_texts(&self.repo, &tree, &files, &attempt.parent, &head)?;
                // The merge as git left it, markers and all, on the head
                // (and the attempt, so its history says where it came from).
                let message = format!(
                    "omk: {task} attempt {} conflicts with integrated work\n\n\
                     Omk-Team: {}\nOmk-Task: {task}\nOmk-Conflict: {}\n",
                    attempt.attempt,
                    self.team,
                    files.join(", ")
                );
                let marked_commit =
                    self.repo
                        .commit_tree(&tree, &[&head, &attempt.commit], &message)?;
                let name = format!(
                    "refs/omk/{}/conflicts/{task}/{}",
                    self.team, attempt.attempt
                );
                let old = self.repo.resolve(&name)?;
                self.repo
                    .update_ref(&name, &marked_commit, old.as_deref())?;
                Self::mark(&mut record, &attempt.commit, "conflict", &files);
                if let Some(a) = record
                    .attempts
                    .iter_mut()
                    .rev()
                    .find(|a| a.commit == attempt.commit)
                {
                    a.conflict_commit = Some(marked_commit.clone());
                }
                Ok(Integration::Conflict {
                    marked_commit,
                    files,
                    messages,
                    marked,
                    theirs,
                })
            }
        }
    }

    /// The files of `files` that still hold a conflict marker line
    /// (`<<<<<<<` or `>>>>>>>`) in `commit`: what an integrator turn left
    /// unresolved.
    pub fn unresolved(&self, commit: &str, files: &[String]) -> Result<Vec<String>> {
        unresolved_in(&self.repo, commit, files)
    }

    /// Leave the integrated result on branch `omk/<team>`.
    pub fn deliver_branch(&self) -> Result<String> {
        let branch = format!("omk/{}", self.team);
        let name = format!("refs/heads/{branch}");
        let head = self.head();
        let old = self.repo.resolve(&name)?;
        if !self.repo.update_ref(&name, &head, old.as_deref())? {
            return Err(Error::Conflict(format!("branch {branch} moved meanwhile")));
        }
        self.record.lock().unwrap_or_else(|p| p.into_inner()).branch = Some(branch.clone());
        Ok(branch)
    }

    /// Bring the integrated changes into the user's checkout: only when
    /// its files and HEAD are still what the base snapshot saw, by applying
    /// `final.patch` ([`Integrator::finalize`]) to the work tree (the
    /// user's index and HEAD stay as they are). `Ok(Err(why))` when the
    /// checkout changed meanwhile.
    pub fn apply(&self) -> Result<std::result::Result<(), String>> {
        let project = self.repo.top().to_path_buf();
        let r = self.record();
        let Some(result) = &r.result else {
            return Ok(Err("no final patch was written".into()));
        };
        let now = self.repo.snapshot(&project, None, "omk apply check")?;
        if now.parent != r.base_head {
            return Ok(Err(format!(
                "HEAD moved since the run began ({} -> {}); merge branch omk/{} yourself",
                r.base_head.as_deref().unwrap_or("none"),
                now.parent.as_deref().unwrap_or("none"),
                self.team
            )));
        }
        if now.tree != self.repo.tree_of(&r.base_commit)? {
            return Ok(Err(format!(
                "the checkout changed since the run began; merge branch omk/{} yourself",
                self.team
            )));
        }
        if result.patch_bytes > 0 {
            self.repo.apply_patch(&project, &result.patch)?;
        }
        Ok(Ok(()))
    }

    /// Record what delivery did.
    pub fn set_delivery(&self, d: DeliveryRecord) {
        self.with_record(|r| r.delivery = Some(d));
    }

    /// Remove every worktree of the run and prune git's records of them;
    /// the refs stay. Returns what could not be removed.
    pub fn cleanup(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if e.file_name() == ".cache" {
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        left.push(format!("{}: {err}", e.path().display()));
                    }
                } else if let Err(err) = self.repo.remove_worktree(&e.path()) {
                    left.push(format!("{}: {err}", e.path().display()));
                }
            }
        }
        let _ = std::fs::remove_dir(&self.root);
        if let Err(err) = self.repo.prune_worktrees() {
            left.push(format!("git worktree prune: {err}"));
        }
        if let Err(err) = prune_modules(&self.repo) {
            left.push(format!("git worktree prune in submodules: {err}"));
        }
        self.with_record(|r| {
            if let Some(res) = &mut r.result {
                res.left_behind = left.clone();
            }
        });
        left
    }
}

/// Reconcile a dead run (its supervisor was SIGKILLed). The integration
/// ref is the truth: `record` is brought up to it (the integrated commit,
/// which attempts it holds) and the branch `omk/<team>` is set to it, so
/// the work integrated so far is where a finished run's would be. What
/// each worktree under `state_dir/worktrees` holds beyond its HEAD is
/// committed to `refs/omk/<team>/wip/<worker>`, then the worktree is removed
/// and git's record of it pruned. The refs stay.
pub fn reconcile(
    team: &str,
    state_dir: &Path,
    record: &mut IsolationRecord,
) -> Result<ReconcileRecord> {
    let repo = Repo::discover(&record.repo)?.ok_or_else(|| {
        Error::invalid(format!(
            "{} is no longer a git work tree",
            record.repo.display()
        ))
    })?;
    let mut out = ReconcileRecord {
        wip_refs: Vec::new(),
        removed: Vec::new(),
        left_behind: Vec::new(),
        integrated: Vec::new(),
    };
    let integration = format!("refs/omk/{team}/integration");
    if let Some(head) = repo.resolve(&integration)? {
        for e in repo.first_parent_log(&head, &record.base_commit, "Omk-Task")? {
            // An integration commit's second parent is the attempt merged.
            if let Some(a) = e.parents.get(1) {
                Integrator::mark(record, a, "integrated", &[]);
            }
            out.integrated.extend(e.trailer);
        }
        record.integrated_commit = head.clone();
        let branch = format!("omk/{team}");
        let name = format!("refs/heads/{branch}");
        let old = repo.resolve(&name)?;
        if repo.update_ref(&name, &head, old.as_deref())? {
            record.branch = Some(branch);
        }
    }
    let root = state_dir.join("worktrees");
    let entries = match std::fs::read_dir(&root) {
        Ok(rd) => rd.flatten().collect(),
        Err(_) => Vec::new(),
    };
    for e in entries {
        let path = e.path();
        let worker = e.file_name().to_string_lossy().into_owned();
        if worker == ".cache" {
            if let Err(err) = std::fs::remove_dir_all(&path) {
                out.left_behind.push(format!("{}: {err}", path.display()));
            }
            continue;
        }
        if path.join(".git").exists() {
            let message = format!(
                "omk: work left in {worker}'s worktree by an interrupted run\n\nOmk-Team: {team}\n"
            );
            match repo.snapshot(&path, None, &message) {
                Ok(snap) if snap.dirty => {
                    let name = format!("refs/omk/{team}/wip/{worker}");
                    let old = repo.resolve(&name)?;
                    repo.update_ref(&name, &snap.commit, old.as_deref())?;
                    out.wip_refs.push((name, snap.commit));
                }
                Ok(_) => {}
                Err(err) => out
                    .left_behind
                    .push(format!("{}: not snapshotted: {err}", path.display())),
            }
        }
        match repo.remove_worktree(&path) {
            Ok(()) => out.removed.push(path),
            Err(err) => out.left_behind.push(format!("{}: {err}", path.display())),
        }
    }
    repo.prune_worktrees()?;
    prune_modules(&repo)?;
    let _ = std::fs::remove_dir(&root);
    Ok(out)
}

/// Drop the records of removed submodule worktrees from the submodules'
/// repositories.
fn prune_modules(repo: &Repo) -> Result<()> {
    for dir in repo.module_git_dirs()? {
        repo.at_git_dir(&dir).prune_worktrees()?;
    }
    Ok(())
}

/// Delete the refs of ended team `team` in its repository: everything
/// under `refs/omk/<team>/`, and branch `omk/<team>` while it still points
/// where omk left it (a branch someone moved is kept, with why). With
/// `dry_run`, only say what would go. `(removed, kept)`.
pub fn gc(
    team: &str,
    record: &IsolationRecord,
    dry_run: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    let repo = Repo::discover(&record.repo)?.ok_or_else(|| {
        Error::NotFound(format!(
            "{} is no longer a git work tree",
            record.repo.display()
        ))
    })?;
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (name, _) in repo.refs(&format!("refs/omk/{team}/"))? {
        if !dry_run {
            repo.delete_ref(&name)?;
        }
        removed.push(name);
    }
    let branch = format!("refs/heads/omk/{team}");
    if let Some(at) = repo.resolve(&branch)? {
        if at == record.integrated_commit {
            if !dry_run {
                repo.delete_ref(&branch)?;
            }
            removed.push(branch);
        } else {
            kept.push(format!(
                "{branch}: it moved to {at} after omk left it at {}; \
                 `git branch -D omk/{team}` deletes it",
                record.integrated_commit
            ));
        }
    }
    Ok((removed, kept))
}

/// Cut `text` to at most `max` bytes (on a char boundary), saying so.
fn cut_to(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[... cut]");
    }
}

/// What a conflict was, for the next attempt's prompt: git's messages, the
/// merged text with markers, and the other side's diff.
/// The files of `files` that still hold a conflict marker line
/// (`<<<<<<<` or `>>>>>>>`) in `commit` of `repo`.
pub(crate) fn unresolved_in(repo: &Repo, commit: &str, files: &[String]) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for f in files {
        if let Some(text) = repo.show(commit, f)? {
            if text
                .lines()
                .any(|l| l.starts_with("<<<<<<<") || l.starts_with(">>>>>>>"))
            {
                left.push(f.clone());
            }
        }
    }
    Ok(left)
}

/// What a conflict's prompt shows: each of `files` as the merge left it in
/// `tree` (markers and all), and their diff integrated meanwhile (from the
/// attempt's start `from` to `head`), each cut to size.
pub(crate) fn conflict_texts(
    repo: &Repo,
    tree: &str,
    files: &[String],
    from: &str,
    head: &str,
) -> Result<(Vec<(String, String)>, String)> {
    let mut marked = Vec::new();
    for f in files {
        if let Some(mut text) = repo.show(tree, f)? {
            cut_to(&mut text, MARKED_MAX_BYTES);
            marked.push((f.clone(), text));
        }
    }
    let mut theirs = repo.diff_paths(from, head, files)?;
    cut_to(&mut theirs, MARKED_MAX_BYTES * 2);
    Ok((marked, theirs))
}

/// What a redo's prompt adds after a conflict in `files`.
pub(crate) fn redo_note(files: &[String], context: &str) -> String {
    format!(
        "\n\nYour previous attempt conflicted with work integrated meanwhile, in: {}.\n\
         Your work dir now holds the integrated result; redo your change on top of it.\n{context}",
        files.join(", ")
    )
}

/// An integrator turn's prompt: subtask `n` of `total` conflicts in
/// `files`, and the work dir (`in_dir`, when known) holds the merge with
/// markers.
pub(crate) fn integrator_prompt(
    in_dir: Option<&Path>,
    task: &str,
    (n, total): (usize, usize),
    title: &str,
    files: &[String],
    context: &str,
) -> String {
    let at = in_dir.map_or(String::new(), |d| format!(", in {}", d.display()));
    format!(
        "You work in an omk team as its integrator{at}.\n{instructions}\n\n\
         Overall task: {task}\n\nSubtask {n} of {total}: {title}\n\n\
         This subtask's changes conflict with work the team integrated meanwhile, and \
         redoing the subtask did not help. Your work dir holds the integrated work with \
         this subtask's changes merged in; git left conflict markers (<<<<<<<, =======, \
         >>>>>>>) in: {files}. Resolve every conflict so that the intent of both sides \
         holds, remove every marker, and change nothing else.\n{context}\n\
         When you are done, reply with a short summary of how you resolved each conflict.",
        instructions = super::spec::role_instructions("integrator"),
        files = files.join(", "),
    )
}

pub fn conflict_context(messages: &str, marked: &[(String, String)], theirs: &str) -> String {
    let mut s = String::new();
    if !messages.is_empty() {
        s.push_str(&format!("git said:\n{messages}\n"));
    }
    for (f, text) in marked {
        s.push_str(&format!(
            "\nThe merge of {f}, with conflict markers:\n{text}\n"
        ));
    }
    if !theirs.is_empty() {
        s.push_str(&format!(
            "\nWhat was integrated meanwhile in those files (the other side):\n{theirs}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::tests::git;

    #[test]
    fn two_workers_integrate_disjoint_edits_and_a_third_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proj");
        std::fs::create_dir(&p).unwrap();
        git(&p, &["init", "-q", "-b", "main"]);
        std::fs::write(p.join("a.txt"), "1\n2\n3\n4\n5\n").unwrap();
        git(&p, &["add", "-A"]);
        git(&p, &["commit", "-qm", "c"]);
        std::fs::write(p.join("wip.txt"), "user's wip\n").unwrap();
        let repo = Repo::discover(&p).unwrap().unwrap();
        let it = Integrator::start(repo, &p, "t", d.path().join("wt")).unwrap();
        assert!(it.record().base_dirty);
        // A second run of the same name is refused before it writes anything.
        let again = Integrator::start(
            Repo::discover(&p).unwrap().unwrap(),
            &p,
            "t",
            d.path().join("x"),
        );
        assert!(matches!(again, Err(Error::Conflict(_))));

        let h1 = it.checkout("w1", None).unwrap();
        let h2 = it.checkout("w2", None).unwrap();
        assert!(
            it.worktree("w1").join("wip.txt").exists(),
            "the base has the user's wip"
        );
        std::fs::write(it.worktree("w1").join("a.txt"), "ONE\n2\n3\n4\n5\n").unwrap();
        std::fs::write(it.worktree("w2").join("a.txt"), "1\n2\n3\n4\nFIVE\n").unwrap();
        let a1 = it
            .commit_attempt("w1", "t1", 1, &h1, "first", false)
            .unwrap()
            .unwrap();
        let a2 = it
            .commit_attempt("w2", "t2", 1, &h2, "second", false)
            .unwrap()
            .unwrap();
        assert_eq!(a1.files, ["a.txt"]);
        assert!(matches!(
            it.integrate("t1", &a1).unwrap(),
            Integration::Integrated { .. }
        ));
        assert!(matches!(
            it.integrate("t2", &a2).unwrap(),
            Integration::Integrated { .. }
        ));

        // w1 again, from the stale base: the same line as t1 -> conflict.
        it.checkout("w1", None).unwrap();
        std::fs::write(it.worktree("w1").join("a.txt"), "uno\n2\n3\n4\n5\n").unwrap();
        let a3 = it
            .commit_attempt("w1", "t3", 1, &h1, "third", false)
            .unwrap()
            .unwrap();
        let (marked_commit, files) = match it.integrate("t3", &a3).unwrap() {
            Integration::Conflict {
                marked_commit,
                files,
                marked,
                ..
            } => {
                assert_eq!(files, ["a.txt"]);
                assert!(marked[0].1.contains("<<<<<<<"));
                assert!(conflict_context("", &marked, "").contains("a.txt"));
                (marked_commit, files)
            }
            other => panic!("{other:?}"),
        };
        // An integrator turn starts from the merge with markers; until
        // they are gone the file counts as unresolved.
        assert_eq!(it.unresolved(&marked_commit, &files).unwrap(), files);
        let m = it.checkout("w1", Some(&marked_commit)).unwrap();
        assert_eq!(m, marked_commit);
        let text = std::fs::read_to_string(it.worktree("w1").join("a.txt")).unwrap();
        assert!(text.contains("<<<<<<<") && text.contains("FIVE"), "{text}");
        std::fs::write(it.worktree("w1").join("a.txt"), "uno\n2\n3\n4\nFIVE\n").unwrap();
        let r = it
            .commit_attempt("w1", "t3", 2, &m, "third", true)
            .unwrap()
            .unwrap();
        assert!(it.unresolved(&r.commit, &files).unwrap().is_empty());
        assert!(matches!(
            it.integrate("t3", &r).unwrap(),
            Integration::Integrated { .. }
        ));
        let rec = it.record();
        assert_eq!(rec.attempts[2].conflict_commit.as_deref(), Some(&*m));
        assert!(rec.attempts[3].integrator && rec.attempts[3].outcome == "integrated");
        // An attempt that changed nothing commits nothing.
        let h = it.checkout("w2", None).unwrap();
        assert!(it
            .commit_attempt("w2", "t4", 1, &h, "noop", false)
            .unwrap()
            .is_none());

        let branch = it.deliver_branch().unwrap();
        assert_eq!(branch, "omk/t");
        assert_eq!(git(&p, &["show", "omk/t:a.txt"]), "uno\n2\n3\n4\nFIVE\n");
        assert!(it.cleanup().is_empty());
        // The user's checkout: untouched, its WIP still uncommitted.
        assert_eq!(
            std::fs::read_to_string(p.join("a.txt")).unwrap(),
            "1\n2\n3\n4\n5\n"
        );
        assert_eq!(git(&p, &["status", "--porcelain"]), "?? wip.txt\n");
        assert_eq!(
            git(&p, &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
        let refs = git(&p, &["for-each-ref", "--format=%(refname)", "refs/omk/t/"]);
        // base, integration, 3 attempts, the conflict, the resolution
        assert_eq!(refs.lines().count(), 7, "{refs}");
    }
}
