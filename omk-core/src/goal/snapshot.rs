//! What the agents changed in the project: a content snapshot of the work
//! tree against the goal's baseline (`baseline.json`), the changed files,
//! a fingerprint of the diff (the circular-fix detector compares these), and
//! the commits made since the goal began (git projects).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::{self, Document};

/// Directories that are build output, caches or tool state, not work.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".omk",
    "target",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
];
/// Files larger than this are fingerprinted by size and mtime only.
const HASH_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// A project larger than this is snapshotted partially (documented cap).
const MAX_FILES: usize = 50_000;

/// `baseline.json`: path -> content fingerprint when the goal started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub files: BTreeMap<String, String>,
}

impl Document for Snapshot {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal baseline snapshot";
}

pub fn baseline_file(dir: &Path) -> PathBuf {
    dir.join("baseline.json")
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Snapshot the project's files.
pub fn take(project: &Path) -> Snapshot {
    let mut files = BTreeMap::new();
    let mut stack = vec![project.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if files.len() >= MAX_FILES {
                break;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let name = entry.file_name();
            if kind.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(path);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let Ok(rel) = path.strip_prefix(project) else {
                continue;
            };
            files.insert(rel.to_string_lossy().into_owned(), fingerprint_file(&path));
        }
    }
    Snapshot { version: 1, files }
}

fn fingerprint_file(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "unreadable".into();
    };
    if meta.len() > HASH_MAX_BYTES {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        return format!("size:{}:{mtime}", meta.len());
    }
    match std::fs::read(path) {
        Ok(bytes) => format!("{:016x}", fnv1a(&bytes, FNV_OFFSET)),
        Err(_) => "unreadable".into(),
    }
}

/// The files that differ between `base` and `now` (added, removed or
/// modified), sorted.
pub fn changed_files(base: &Snapshot, now: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = now
        .files
        .iter()
        .filter(|(p, h)| base.files.get(*p) != Some(*h))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(
        base.files
            .keys()
            .filter(|p| !now.files.contains_key(*p))
            .cloned(),
    );
    out.sort();
    out
}

/// A fingerprint of the whole diff against the baseline: equal
/// fingerprints mean the work tree is in the same state relative to where
/// the goal began. `clean` when nothing changed.
pub fn diff_fingerprint(base: &Snapshot, now: &Snapshot) -> String {
    let changed = changed_files(base, now);
    if changed.is_empty() {
        return "clean".into();
    }
    let mut h = FNV_OFFSET;
    for path in &changed {
        h = fnv1a(path.as_bytes(), h);
        h = fnv1a(b"\0", h);
        let content = now.files.get(path).map_or("deleted", String::as_str);
        h = fnv1a(content.as_bytes(), h);
        h = fnv1a(b"\n", h);
    }
    format!("{h:016x}")
}

pub fn load_baseline(dir: &Path) -> Result<Option<Snapshot>> {
    store::read_doc(&baseline_file(dir))
}

/// `git rev-parse HEAD` of the project, when it is a git work tree.
pub fn git_head(project: &Path) -> Option<String> {
    git(project, &["rev-parse", "HEAD"]).map(|s| s.trim().to_string())
}

/// Commits made since `base` (newest first, short ids).
pub fn commits_since(project: &Path, base: Option<&str>) -> Vec<String> {
    let Some(base) = base else {
        return Vec::new();
    };
    git(
        project,
        &["rev-list", "--abbrev-commit", &format!("{base}..HEAD")],
    )
    .map(|s| s.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

/// Whether the git work tree has uncommitted changes (None: not git).
pub fn git_dirty(project: &Path) -> Option<bool> {
    git(project, &["status", "--porcelain"]).map(|s| !s.trim().is_empty())
}

pub(crate) fn git(project: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(project)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/out"), "x").unwrap();
        let base = take(dir.path());
        assert_eq!(base.files.len(), 1, "build output is skipped");
        assert_eq!(diff_fingerprint(&base, &take(dir.path())), "clean");
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        let with_b = take(dir.path());
        let fp_b = diff_fingerprint(&base, &with_b);
        assert_eq!(changed_files(&base, &with_b), vec!["b.txt"]);
        std::fs::remove_file(dir.path().join("b.txt")).unwrap();
        assert_eq!(diff_fingerprint(&base, &take(dir.path())), "clean");
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        assert_eq!(
            diff_fingerprint(&base, &take(dir.path())),
            fp_b,
            "same change, same print"
        );
        std::fs::remove_file(dir.path().join("a.txt")).unwrap();
        assert_eq!(
            changed_files(&base, &take(dir.path())),
            vec!["a.txt", "b.txt"]
        );
    }
}
