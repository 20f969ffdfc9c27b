//! Git plumbing for isolated workers: a snapshot commit of a project as it
//! is (uncommitted and untracked files included) without touching the
//! user's index, HEAD or files; detached worktrees; commits of a work tree
//! under hidden refs; three-way merges that need no work tree
//! (`merge-tree --write-tree`); and refs moved only from the value the
//! caller saw (compare-and-swap).
//!
//! Everything runs the `git` executable (>= 2.38, for `merge-tree
//! --write-tree`) with the user's config but no hooks, no prompts, the C
//! locale and a fixed identity for omk's own commits, so a repository with
//! no `user.name` works and a user's hooks never run on omk's plumbing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Oldest git omk isolates workers with (`merge-tree --write-tree`).
pub const MIN_VERSION: (u32, u32) = (2, 38);
/// Most bytes of a git command's stdout omk reads.
const STDOUT_MAX: u64 = 64 * 1024 * 1024;
/// Most bytes of a git command's stderr kept for an error message.
const STDERR_MAX: u64 = 64 * 1024;
/// The identity of omk's commits.
const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "omk"),
    ("GIT_AUTHOR_EMAIL", "omk@localhost"),
    ("GIT_COMMITTER_NAME", "omk"),
    ("GIT_COMMITTER_EMAIL", "omk@localhost"),
];
/// Variables that would point git at another repository or index.
const SCRUBBED: [&str; 6] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// A git work tree: its top directory and the git executable that serves it.
#[derive(Debug, Clone)]
pub struct Repo {
    git: PathBuf,
    top: PathBuf,
    /// Let git-lfs's smudge filter fetch LFS content on checkout (off:
    /// `GIT_LFS_SKIP_SMUDGE=1`, LFS files stay pointers).
    lfs: bool,
}

/// What a command printed, when it exited with one of the accepted codes.
struct Out {
    code: i32,
    stdout: String,
}

/// A submodule a commit pins (see [`Repo::submodules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    pub path: String,
    /// Its name in `.gitmodules` (its git dir is `modules/<name>`).
    pub name: String,
    pub commit: String,
}

/// One commit of [`Repo::first_parent_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub commit: String,
    pub parents: Vec<String>,
    /// The asked-for trailer's value.
    pub trailer: Option<String>,
}

/// A snapshot commit: the project's files as git would add them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub commit: String,
    pub tree: String,
    /// The commit the snapshot sits on (`None` in a repository with no
    /// commit yet).
    pub parent: Option<String>,
    /// Whether the files differ from `parent` (uncommitted or untracked
    /// work went into the snapshot).
    pub dirty: bool,
}

/// The outcome of a three-way merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    Clean {
        tree: String,
    },
    /// `tree` holds the conflicted files with conflict markers.
    Conflict {
        tree: String,
        files: Vec<String>,
        messages: String,
    },
}

/// `git version 2.47.3` -> (2, 47).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let v = s.trim().strip_prefix("git version ")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn io_err(context: String, message: impl Into<String>) -> Error {
    Error::Io {
        context,
        source: std::io::Error::other(message.into()),
    }
}

/// Copy an index file keeping its modification time: git trusts an
/// entry's cached stat data only when the file is older than the index, so
/// a copy with a fresh mtime would make a file edited in the same second
/// (with the same size) look unchanged.
fn copy_index(from: &Path, to: &Path) -> Result<()> {
    let what = || format!("copying {}", from.display());
    let mtime = std::fs::metadata(from)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(what(), e))?;
    std::fs::copy(from, to).map_err(|e| Error::io(what(), e))?;
    std::fs::File::options()
        .write(true)
        .open(to)
        .and_then(|f| f.set_modified(mtime))
        .map_err(|e| Error::io(what(), e))
}

impl Repo {
    /// The git work tree `dir` is in, or `None` when it is in none (or git
    /// is not installed and no `.git` is above `dir`). A work tree with a
    /// git older than [`MIN_VERSION`], or without git, is an error.
    pub fn discover(dir: &Path) -> Result<Option<Repo>> {
        let dot_git_above = dir.ancestors().any(|d| d.join(".git").exists());
        // No `.git` above and no GIT_DIR: no work tree, and no git process
        // started to learn it (a team run in a plain directory pays none).
        if !dot_git_above && std::env::var_os("GIT_DIR").is_none() {
            return Ok(None);
        }
        let git = match which::which("git") {
            Ok(g) => g,
            Err(_) if dot_git_above => {
                return Err(Error::invalid(format!(
                    "{} is a git work tree but git is not installed (needed to isolate workers; \
                     --isolation none works without it)",
                    dir.display()
                )))
            }
            Err(_) => return Ok(None),
        };
        let probe = Repo {
            git,
            top: dir.to_path_buf(),
            lfs: false,
        };
        let out = probe.run_codes(&["rev-parse", "--show-toplevel"], &[0, 128])?;
        if out.code != 0 {
            return Ok(None);
        }
        let repo = Repo {
            top: PathBuf::from(out.stdout.trim()),
            ..probe
        };
        let version = repo.run(&["version"])?;
        match parse_version(&version) {
            Some(v) if v >= MIN_VERSION => Ok(Some(repo)),
            _ => Err(Error::invalid(format!(
                "{} is too old to isolate workers (need git >= {}.{} for merge-tree --write-tree; \
                 --isolation none works without it)",
                version.trim(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ))),
        }
    }

    /// Whether git ignores `path` (a directory inside the work tree, such
    /// as a build output directory).
    pub fn is_ignored(&self, path: &Path) -> Result<bool> {
        let p = path.to_string_lossy();
        Ok(self
            .run_codes(&["check-ignore", "-q", "--", &p], &[0, 1])?
            .code
            == 0)
    }

    /// The work tree's top directory.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// The repository whose git dir is `git_dir` (a submodule's clone under
    /// `modules/`), run with the same git.
    pub fn at_git_dir(&self, git_dir: &Path) -> Repo {
        Repo {
            git: self.git.clone(),
            top: git_dir.to_path_buf(),
            lfs: self.lfs,
        }
    }

    /// This repository, its checkouts fetching Git LFS content when `lfs`
    /// (`[team.worktree] lfs`); by default they leave LFS pointer files.
    pub fn with_lfs(self, lfs: bool) -> Repo {
        Repo { lfs, ..self }
    }

    /// The git dir the worktrees share (`.git` of the main checkout).
    pub fn common_dir(&self) -> Result<PathBuf> {
        let out = self.run(&["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
        Ok(PathBuf::from(out.trim()))
    }

    /// The clones of submodules under `modules/` of the common git dir,
    /// nested ones included.
    pub fn module_git_dirs(&self) -> Result<Vec<PathBuf>> {
        fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if p.join("HEAD").is_file() && p.join("objects").is_dir() {
                    out.push(p.clone());
                    walk(&p.join("modules"), depth + 1, out);
                } else if depth < 8 {
                    walk(&p, depth + 1, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.common_dir()?.join("modules"), 0, &mut out);
        Ok(out)
    }

    /// The submodules commit `rev` pins: its gitlinks, named by its
    /// `.gitmodules` (a gitlink it does not name is named by its path).
    pub fn submodules(&self, rev: &str) -> Result<Vec<Submodule>> {
        let spec = format!("{rev}:.gitmodules");
        if self.run_codes(&["cat-file", "-e", &spec], &[0, 128])?.code != 0 {
            return Ok(Vec::new());
        }
        let tree = self.run(&["ls-tree", "-r", "-z", rev])?;
        let links: Vec<(String, String)> = tree
            .split('\0')
            .filter_map(|e| {
                let (meta, path) = e.split_once('\t')?;
                let mut m = meta.split_whitespace();
                (m.next()? == "160000" && m.next()? == "commit")
                    .then(|| Some((path.to_string(), m.next()?.to_string())))
                    .flatten()
            })
            .collect();
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let names = self.run_codes(
            &[
                "config",
                "--blob",
                &spec,
                "--get-regexp",
                r"^submodule\..*\.path$",
            ],
            &[0, 1],
        )?;
        let names: Vec<(String, String)> = names
            .stdout
            .lines()
            .filter_map(|l| {
                let (key, path) = l.split_once(' ')?;
                let name = key.strip_prefix("submodule.")?.strip_suffix(".path")?;
                Some((path.to_string(), name.to_string()))
            })
            .collect();
        Ok(links
            .into_iter()
            .map(|(path, commit)| Submodule {
                name: names
                    .iter()
                    .find(|n| n.0 == path)
                    .map_or_else(|| path.clone(), |n| n.1.clone()),
                path,
                commit,
            })
            .collect())
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.git);
        c.arg("-C")
            .arg(dir)
            .args(["-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0"])
            .args(args)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_LFS_SKIP_SMUDGE", if self.lfs { "0" } else { "1" })
            .envs(IDENTITY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in SCRUBBED {
            c.env_remove(v);
        }
        c
    }

    /// Run `git ARGS` in the top directory; any exit but 0 is an error.
    fn run(&self, args: &[&str]) -> Result<String> {
        Ok(self.run_codes(args, &[0])?.stdout)
    }

    fn run_codes(&self, args: &[&str], ok: &[i32]) -> Result<Out> {
        self.exec(self.command(&self.top, args), args, ok)
    }

    /// Run `git ARGS` in `dir` (a worktree of this repository).
    fn run_in(&self, dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
        let mut c = self.command(dir, args);
        for (k, v) in env {
            c.env(k, v);
        }
        Ok(self.exec(c, args, &[0])?.stdout)
    }

    fn exec(&self, mut c: Command, args: &[&str], ok: &[i32]) -> Result<Out> {
        let what = || format!("git {} (in {})", args.join(" "), self.top.display());
        let mut child = c.spawn().map_err(|e| Error::io(what(), e))?;
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(STDERR_MAX).read_to_end(&mut buf);
            // Drain the rest so git never blocks on a full pipe.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let mut stdout = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("piped")
            .take(STDOUT_MAX + 1)
            .read_to_end(&mut stdout);
        if read.is_err() || stdout.len() as u64 > STDOUT_MAX {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| Error::io(what(), e))?;
        let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        read.map_err(|e| Error::io(what(), e))?;
        if stdout.len() as u64 > STDOUT_MAX {
            return Err(io_err(
                what(),
                format!("more than {STDOUT_MAX} bytes of output"),
            ));
        }
        let code = status.code().unwrap_or(-1);
        if !ok.contains(&code) {
            return Err(io_err(
                what(),
                format!("exit status {code}: {}", err.trim()),
            ));
        }
        Ok(Out {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
        })
    }

    /// The commit `rev` names, if any.
    pub fn resolve(&self, rev: &str) -> Result<Option<String>> {
        let spec = format!("{rev}^{{commit}}");
        let out = self.run_codes(&["rev-parse", "--verify", "--quiet", &spec], &[0, 1, 128])?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_string()))
    }

    /// The tree of commit `rev`.
    pub fn tree_of(&self, rev: &str) -> Result<String> {
        let spec = format!("{rev}^{{tree}}");
        Ok(self
            .run(&["rev-parse", "--verify", &spec])?
            .trim()
            .to_string())
    }

    /// Commit the files of work tree `dir` (this repository's top or one of
    /// its worktrees) as git would add them, ignored files excepted, on
    /// `parent` (default: `dir`'s HEAD, if it has one), without touching
    /// `dir`'s index, HEAD or files: a temporary index starts as a copy of
    /// `dir`'s (so unchanged files are not re-read) and takes `add -A`.
    pub fn snapshot(&self, dir: &Path, parent: Option<&str>, message: &str) -> Result<Snapshot> {
        let parent = match parent {
            Some(p) => Some(p.to_string()),
            None => {
                let out = self.exec(
                    self.command(dir, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]),
                    &["rev-parse", "HEAD"],
                    &[0, 1, 128],
                )?;
                (out.code == 0).then(|| out.stdout.trim().to_string())
            }
        };
        let scratch = tempfile::Builder::new()
            .prefix("omk-index-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary git index", e))?;
        let index = scratch.path().join("index");
        let own_index = PathBuf::from(
            self.run_in(
                dir,
                &["rev-parse", "--path-format=absolute", "--git-path", "index"],
                &[],
            )?
            .trim(),
        );
        let env = [("GIT_INDEX_FILE", index.as_path())];
        match &parent {
            Some(p) if own_index.exists() => {
                copy_index(&own_index, &index)?;
                // The copy may hold staged work against another commit:
                // start from `parent`'s tree. `--reset` (a one-way merge
                // that never refuses, unlike `-m` with dirty files) keeps
                // the stat cache of entries that match it, so `add`
                // re-reads only what changed; a plain read-tree would make
                // it hash every file.
                self.run_in(dir, &["read-tree", "--reset", p], &env)?;
            }
            Some(p) => {
                self.run_in(dir, &["read-tree", p], &env)?;
            }
            None => {}
        }
        self.run_in(dir, &["add", "-A", "--", "."], &env)?;
        let tree = self.run_in(dir, &["write-tree"], &env)?.trim().to_string();
        let dirty = match &parent {
            Some(p) => self.tree_of(p)? != tree,
            None => true,
        };
        let commit = self.commit_tree(
            &tree,
            parent.as_deref().into_iter().collect::<Vec<_>>().as_slice(),
            message,
        )?;
        Ok(Snapshot {
            commit,
            tree,
            parent,
            dirty,
        })
    }

    /// A commit of `tree` on `parents` with `message`.
    pub fn commit_tree(&self, tree: &str, parents: &[&str], message: &str) -> Result<String> {
        let mut args = vec!["commit-tree", tree, "-m", message];
        for p in parents {
            args.push("-p");
            args.push(p);
        }
        Ok(self.run(&args)?.trim().to_string())
    }

    /// Point `name` at `new`, only if it still points at `old` (`None`:
    /// only if it does not exist). `false` when someone moved it first.
    pub fn update_ref(&self, name: &str, new: &str, old: Option<&str>) -> Result<bool> {
        const ZERO: &str = "0000000000000000000000000000000000000000";
        let old = old.unwrap_or(ZERO);
        let out = self.run_codes(&["update-ref", "-m", "omk", name, new, old], &[0, 1, 128])?;
        Ok(out.code == 0)
    }

    /// Delete ref `name` (no error when it is gone).
    pub fn delete_ref(&self, name: &str) -> Result<()> {
        self.run_codes(&["update-ref", "-d", name], &[0, 1])?;
        Ok(())
    }

    /// The refs under `prefix` (e.g. `refs/omk/team-a/`), with their commits.
    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let out = self.run(&["for-each-ref", "--format=%(refname) %(objectname)", prefix])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, o)| (r.to_string(), o.to_string()))
            .collect())
    }

    /// Three-way merge of `theirs` into `ours` (their merge base found by
    /// git), written as a tree; no work tree, index or ref is touched.
    pub fn merge(&self, ours: &str, theirs: &str) -> Result<Merge> {
        let out = self.run_codes(
            &[
                "merge-tree",
                "--write-tree",
                "--name-only",
                "-z",
                ours,
                theirs,
            ],
            &[0, 1],
        )?;
        // -z: "<tree>\0<file>\0<file>\0\0<messages>" (files only on conflict).
        let mut parts = out.stdout.splitn(2, '\0');
        let tree = parts.next().unwrap_or("").trim().to_string();
        if out.code == 0 {
            return Ok(Merge::Clean { tree });
        }
        let rest = parts.next().unwrap_or("");
        let (files, messages) = rest.split_once("\0\0").unwrap_or((rest, ""));
        let mut files: Vec<String> = files
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.dedup();
        Ok(Merge::Conflict {
            tree,
            files,
            messages: messages.replace('\0', "\n").trim().to_string(),
        })
    }

    /// The text of `path` in tree-ish `rev`, if it is there.
    pub fn show(&self, rev: &str, path: &str) -> Result<Option<String>> {
        let spec = format!("{rev}:{path}");
        let out = self.run_codes(&["cat-file", "-p", &spec], &[0, 128])?;
        Ok((out.code == 0).then_some(out.stdout))
    }

    /// The first-parent history from `tip` back to (not including)
    /// `base`, oldest first: each commit with its parents and the value of
    /// its `key` trailer, if any.
    pub fn first_parent_log(&self, tip: &str, base: &str, key: &str) -> Result<Vec<LogEntry>> {
        let format =
            format!("--format=%H %P%x1f%(trailers:key={key},valueonly,separator=%x2c)%x1e");
        let range = format!("^{base}");
        let out = self.run(&["log", "--first-parent", "--reverse", &format, tip, &range])?;
        Ok(out
            .split('\x1e')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (ids, trailer) = r.split_once('\x1f').unwrap_or((r, ""));
                let mut ids = ids.split_whitespace().map(str::to_string);
                LogEntry {
                    commit: ids.next().unwrap_or_default(),
                    parents: ids.collect(),
                    trailer: Some(trailer.trim().to_string()).filter(|t| !t.is_empty()),
                }
            })
            .collect())
    }

    /// `git diff --stat` between two tree-ish.
    pub fn diff_stat(&self, from: &str, to: &str) -> Result<String> {
        self.run(&["diff", "--stat", "--no-color", "--no-ext-diff", from, to])
    }

    /// Total bytes of the files of tree-ish `rev` (what a checkout of it
    /// writes).
    pub fn tree_bytes(&self, rev: &str) -> Result<u64> {
        let out = self.run(&["ls-tree", "-r", "-l", "-z", rev])?;
        Ok(out
            .split('\0')
            .filter_map(|e| e.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum())
    }

    /// `git diff` between two tree-ish, limited to `paths`.
    pub fn diff_paths(&self, from: &str, to: &str, paths: &[String]) -> Result<String> {
        let mut args = vec!["diff", "--no-color", "--no-ext-diff", from, to, "--"];
        args.extend(paths.iter().map(String::as_str));
        self.run(&args)
    }

    /// The files that differ between two tree-ish.
    pub fn changed_files(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let out = self.run(&["diff", "--name-only", "-z", "--no-renames", from, to])?;
        Ok(out
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Write the binary patch from `from` to `to` into `path`; returns its
    /// size and SHA-256 (hex).
    pub fn write_patch(&self, from: &str, to: &str, path: &Path) -> Result<(u64, String)> {
        use sha2::Digest;
        let args = ["diff", "--binary", "--no-color", "--no-ext-diff", from, to];
        let what = || {
            format!(
                "git diff (in {}) into {}",
                self.top.display(),
                path.display()
            )
        };
        let mut c = self.command(&self.top, &args);
        c.stderr(Stdio::null());
        let mut child = c.spawn().map_err(|e| Error::io(what(), e))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(what(), e))?;
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        let copied = loop {
            match stdout.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    hash.update(&buf[..n]);
                    size += n as u64;
                    if let Err(e) = std::io::Write::write_all(&mut file, &buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if copied.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| Error::io(what(), e))?;
        copied.map_err(|e| Error::io(what(), e))?;
        if !status.success() {
            return Err(io_err(what(), format!("exit status {:?}", status.code())));
        }
        let hex = hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok((size, hex))
    }

    /// Apply the patch file `patch` to the files of work tree `dir` (not its
    /// index); nothing is changed when any hunk does not apply.
    pub fn apply_patch(&self, dir: &Path, patch: &Path) -> Result<()> {
        let p = patch.to_string_lossy();
        self.run_in(dir, &["apply", "--whitespace=nowarn", &p], &[])?;
        Ok(())
    }

    /// A bare clone of `url` at `dir` (cloned when missing, else reused as
    /// it is): what an `omk worker` or a store team's coordinator works
    /// from (docs/distributed.md). Only `refs/omk/` and branches are ever
    /// fetched into it later, never tags.
    pub fn mirror(url: &str, dir: &Path) -> Result<Repo> {
        let git = which::which("git")
            .map_err(|_| Error::invalid("git is not installed (a team's shared code needs it)"))?;
        let repo = Repo {
            git,
            top: dir.to_path_buf(),
            lfs: false,
        };
        if !dir.join("HEAD").exists() {
            let parent = dir
                .parent()
                .ok_or_else(|| Error::invalid(format!("no parent of {}", dir.display())))?;
            crate::store::ensure_dir(parent)?;
            // Into a temporary name, then renamed: a clone killed midway
            // leaves no half repository behind at `dir`.
            let tmp = parent.join(format!(
                ".{}.tmp.{}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                crate::ids::random_hex(4)
            ));
            let t = tmp.to_string_lossy();
            let args = ["clone", "--bare", "--quiet", "--no-tags", url, &t];
            let cloned = repo.exec(repo.command(parent, &args), &args, &[0]);
            if let Err(e) = cloned {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, dir).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                Error::io(format!("moving the clone of {url} to {}", dir.display()), e)
            })?;
        }
        Ok(repo)
    }

    /// `git fetch URL REFSPEC...` (forced updates allowed by `+` specs).
    pub fn fetch(&self, url: &str, refspecs: &[&str]) -> Result<()> {
        let mut args = vec!["fetch", "--quiet", "--no-tags", url];
        args.extend_from_slice(refspecs);
        self.run(&args)?;
        Ok(())
    }

    /// `git push URL REFSPEC...`.
    pub fn push(&self, url: &str, refspecs: &[&str]) -> Result<()> {
        let mut args = vec!["push", "--quiet", url];
        args.extend_from_slice(refspecs);
        self.run(&args)?;
        Ok(())
    }

    /// The `url` of remote `origin`, if the repository has one.
    pub fn origin_url(&self) -> Result<Option<String>> {
        let out = self.run_codes(&["config", "--get", "remote.origin.url"], &[0, 1])?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_string()))
    }

    /// Add a worktree at `path`, detached at `commit`.
    pub fn add_worktree(&self, path: &Path, commit: &str) -> Result<()> {
        let p = path.to_string_lossy();
        self.run(&["worktree", "add", "--detach", "--force", &p, commit])?;
        Ok(())
    }

    /// Make worktree `path` exactly `commit`: its detached HEAD moved there
    /// with index and files (`reset --hard` rewrites only what differs),
    /// and every file git does not track there (ignored ones too) removed.
    pub fn reset_worktree(&self, path: &Path, commit: &str) -> Result<()> {
        self.move_to(path, commit)?;
        self.run_in(path, &["clean", "-ffdxq"], &[])?;
        Ok(())
    }

    /// Move worktree `dir` (detached) to `commit`: its HEAD, index and
    /// tracked files (`reset --hard`); untracked files stay.
    ///
    /// HEAD itself is rewritten (`update-ref --no-deref`), so a branch an
    /// agent checked out there never moves, and a merge it left half done
    /// is dropped by the reset; unlike `checkout --detach`, this does not
    /// examine every file first (a third of a reset's cost on 10,000 files).
    pub fn move_to(&self, dir: &Path, commit: &str) -> Result<()> {
        self.run_in(dir, &["update-ref", "--no-deref", "HEAD", commit], &[])?;
        self.run_in(dir, &["reset", "--hard", "--quiet"], &[])?;
        Ok(())
    }

    /// Remove worktree `path` (dirty or not) and prune git's record of it;
    /// a worktree already gone is no error. The files are deleted
    /// directly, then `git worktree prune` drops the record: several times
    /// faster than `git worktree remove`, which first examines every file
    /// it is about to delete.
    pub fn remove_worktree(&self, path: &Path) -> Result<()> {
        // Unlock first: a `git worktree add` killed midway leaves its
        // record locked ("initializing"), and prune keeps locked records.
        if let Ok(link) = std::fs::read_to_string(path.join(".git")) {
            if let Some(admin) = link.trim().strip_prefix("gitdir:") {
                let _ = std::fs::remove_file(Path::new(admin.trim()).join("locked"));
            }
        }
        match std::fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing worktree {}", path.display()),
                    e,
                ))
            }
        }
        self.prune_worktrees()
    }

    /// Forget worktrees whose directories are gone.
    pub fn prune_worktrees(&self) -> Result<()> {
        self.run(&["worktree", "prune"])?;
        Ok(())
    }

    /// The directories of the repository's worktrees (the main one first).
    pub fn worktrees(&self) -> Result<Vec<PathBuf>> {
        let out = self.run(&["worktree", "list", "--porcelain", "-z"])?;
        Ok(out
            .split('\0')
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(PathBuf::from)
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Run the real git in `dir` with a test identity (panics on failure).
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn repo() -> (tempfile::TempDir, Repo) {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(d.path().join("a.txt"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(d.path().join(".gitignore"), "target/\n").unwrap();
        git(d.path(), &["add", "-A"]);
        git(d.path(), &["commit", "-qm", "first"]);
        let r = Repo::discover(d.path()).unwrap().unwrap();
        (d, r)
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("git version 2.47.3\n"), Some((2, 47)));
        assert_eq!(parse_version("git version 2.38.0.windows.1"), Some((2, 38)));
        assert_eq!(parse_version("nope"), None);
        assert!((2, 37) < MIN_VERSION && (3, 0) > MIN_VERSION);
    }

    #[test]
    fn a_plain_directory_is_no_repository() {
        let d = tempfile::tempdir().unwrap();
        assert!(Repo::discover(d.path()).unwrap().is_none());
    }

    #[test]
    fn a_snapshot_holds_uncommitted_and_untracked_work_and_touches_nothing() {
        let (d, r) = repo();
        let p = d.path();
        std::fs::write(p.join("a.txt"), "one\nTWO\nthree\n").unwrap();
        std::fs::write(p.join("new.txt"), "new\n").unwrap();
        std::fs::create_dir(p.join("target")).unwrap();
        std::fs::write(p.join("target/out"), "ignored").unwrap();
        git(p, &["add", "new.txt"]); // something staged, too
        let head = git(p, &["rev-parse", "HEAD"]);
        let status = git(p, &["status", "--porcelain"]);
        let index = std::fs::read(p.join(".git/index")).unwrap();

        let s = r.snapshot(p, None, "omk base").unwrap();
        assert!(s.dirty);
        assert_eq!(s.parent.as_deref(), Some(head.trim()));
        assert_eq!(
            r.show(&s.commit, "a.txt").unwrap().unwrap(),
            "one\nTWO\nthree\n"
        );
        assert_eq!(r.show(&s.commit, "new.txt").unwrap().unwrap(), "new\n");
        assert_eq!(r.show(&s.commit, "target/out").unwrap(), None);
        // The user's HEAD, index and status are as they were.
        assert_eq!(git(p, &["rev-parse", "HEAD"]), head);
        assert_eq!(git(p, &["status", "--porcelain"]), status);
        assert_eq!(std::fs::read(p.join(".git/index")).unwrap(), index);
        assert_eq!(git(p, &["branch", "--list"]).trim(), "* main");

        // A clean tree snapshots as not dirty.
        git(p, &["add", "-A"]);
        git(p, &["commit", "-qm", "second"]);
        assert!(!r.snapshot(p, None, "again").unwrap().dirty);
    }

    #[test]
    fn a_repository_without_commits_snapshots_too() {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q"]);
        std::fs::write(d.path().join("f"), "x").unwrap();
        let r = Repo::discover(d.path()).unwrap().unwrap();
        let s = r.snapshot(d.path(), None, "base").unwrap();
        assert_eq!((s.parent, s.dirty), (None, true));
        assert_eq!(r.show(&s.commit, "f").unwrap().unwrap(), "x");
    }

    #[test]
    fn a_reset_detaches_from_a_branch_an_agent_checked_out_and_drops_its_merge() {
        let (d, r) = repo();
        let p = d.path();
        let base = git(p, &["rev-parse", "HEAD"]).trim().to_string();
        let wt = d.path().join("wt");
        r.add_worktree(&wt, &base).unwrap();
        // The agent makes a branch, commits, and leaves a conflicted merge.
        git(&wt, &["checkout", "-q", "-b", "agent"]);
        std::fs::write(wt.join("a.txt"), "one\nmine\nthree\n").unwrap();
        git(&wt, &["commit", "-qam", "mine"]);
        let agent_tip = git(&wt, &["rev-parse", "HEAD"]).trim().to_string();
        git(&wt, &["checkout", "-q", "-b", "other", &base]);
        std::fs::write(wt.join("a.txt"), "one\ntheirs\nthree\n").unwrap();
        git(&wt, &["commit", "-qam", "theirs"]);
        let _ = Command::new("git")
            .args(["-C", &wt.to_string_lossy(), "merge", "-q", "agent"])
            .output()
            .unwrap();
        std::fs::write(wt.join("junk.txt"), "x").unwrap();

        r.reset_worktree(&wt, &base).unwrap();
        assert_eq!(git(&wt, &["rev-parse", "HEAD"]).trim(), base);
        assert!(
            Command::new("git")
                .args(["-C", &wt.to_string_lossy(), "symbolic-ref", "-q", "HEAD"])
                .output()
                .unwrap()
                .status
                .code()
                == Some(1)
        );
        assert_eq!(git(&wt, &["status", "--porcelain"]), "");
        assert_eq!(
            std::fs::read_to_string(wt.join("a.txt")).unwrap(),
            "one\ntwo\nthree\n"
        );
        // The branches the agent made are where it left them.
        assert_eq!(git(p, &["rev-parse", "agent"]).trim(), agent_tip);
    }

    #[test]
    fn worktrees_commit_and_merge_disjoint_hunks_and_report_conflicts() {
        let (d, r) = repo();
        let base = r.snapshot(d.path(), None, "base").unwrap().commit;
        let state = tempfile::tempdir().unwrap();
        let (w1, w2) = (state.path().join("w1"), state.path().join("w2"));
        r.add_worktree(&w1, &base).unwrap();
        r.add_worktree(&w2, &base).unwrap();
        std::fs::write(w1.join("a.txt"), "ONE\ntwo\nthree\n").unwrap();
        std::fs::write(w2.join("a.txt"), "one\ntwo\nTHREE\n").unwrap();
        let c1 = r.snapshot(&w1, Some(&base), "t1").unwrap().commit;
        let c2 = r.snapshot(&w2, Some(&base), "t2").unwrap().commit;

        let head = "refs/omk/t/integration";
        assert!(r.update_ref(head, &base, None).unwrap());
        let Merge::Clean { tree } = r.merge(&base, &c1).unwrap() else {
            panic!("conflict")
        };
        let i1 = r.commit_tree(&tree, &[&base, &c1], "integrate t1").unwrap();
        assert!(r.update_ref(head, &i1, Some(&base)).unwrap());
        // A stale expectation is refused.
        assert!(!r.update_ref(head, &c2, Some(&base)).unwrap());
        let Merge::Clean { tree } = r.merge(&i1, &c2).unwrap() else {
            panic!("conflict")
        };
        assert_eq!(
            r.show(&tree, "a.txt").unwrap().unwrap(),
            "ONE\ntwo\nTHREE\n"
        );

        // The same line changed twice: a conflict naming the file, markers in its tree.
        r.reset_worktree(&w2, &base).unwrap();
        std::fs::write(w2.join("a.txt"), "uno\ntwo\nthree\n").unwrap();
        std::fs::write(w2.join("junk"), "x").unwrap();
        let c3 = r.snapshot(&w2, Some(&base), "t3").unwrap().commit;
        match r.merge(&i1, &c3).unwrap() {
            Merge::Conflict {
                tree,
                files,
                messages,
            } => {
                assert_eq!(files, ["a.txt"]);
                assert!(messages.contains("CONFLICT"), "{messages}");
                let text = r.show(&tree, "a.txt").unwrap().unwrap();
                assert!(text.contains("<<<<<<<") && text.contains("uno") && text.contains("ONE"));
            }
            m => panic!("{m:?}"),
        }
        assert_eq!(r.changed_files(&base, &c3).unwrap(), ["a.txt", "junk"]);

        // Reset cleans untracked and ignored files; removal leaves only the main worktree.
        std::fs::create_dir_all(w1.join("target")).unwrap();
        std::fs::write(w1.join("target/x"), "x").unwrap();
        r.reset_worktree(&w1, &i1).unwrap();
        assert!(!w1.join("target").exists());
        assert_eq!(r.worktrees().unwrap().len(), 3);
        // Locked (as a `worktree add` killed midway leaves it): unlocked too.
        git(d.path(), &["worktree", "lock", &w1.to_string_lossy()]);
        r.remove_worktree(&w1).unwrap();
        std::fs::remove_dir_all(&w2).unwrap(); // gone behind git's back
        r.remove_worktree(&w2).unwrap();
        let left = r.worktrees().unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(r.refs("refs/omk/t/").unwrap(), [(head.to_string(), i1)]);
        // No branch was made, the user's checkout is untouched.
        assert_eq!(git(d.path(), &["branch", "--list"]).trim(), "* main");
        assert_eq!(git(d.path(), &["status", "--porcelain"]), "");
    }
}
