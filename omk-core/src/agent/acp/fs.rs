//! `fs/read_text_file` and `fs/write_text_file`, served by omk and confined
//! to the worker's work dir: this is where `workdir-edits` holds for ACP
//! agents that edit through the client.
//!
//! A path is used only when it stays inside the work dir both lexically
//! (after `.` and `..`) and on disk (the deepest existing ancestor,
//! symlinks resolved, is inside the work dir's real path); a symlink that
//! points out of the work dir is refused, not followed.
//!
//! A file that does not exist inside the work dir reads as empty text: agents
//! that read before they write (Gemini CLI) could otherwise not create new
//! files (docs/agents.md).

use std::path::{Path, PathBuf};

use crate::agent::approval::normalize;

use serde_json::{json, Value};

/// Largest file omk reads for an agent (the answer must fit in one line
/// the agent can take, and in omk's memory).
pub const MAX_READ_BYTES: usize = 8 * 1024 * 1024;

/// Why a file request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// What a served request did, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: PathBuf,
    pub bytes: usize,
    /// A read of a file that does not exist (answered with empty text).
    pub missing: bool,
}

/// Resolve `path` (absolute, or relative to `work_dir`) to a path inside
/// `work_dir`, or say why not.
pub fn confine(work_dir: &Path, path: &str) -> Result<PathBuf, Refused> {
    if path.is_empty() {
        return Err(Refused("the request names no path".into()));
    }
    let root = std::fs::canonicalize(work_dir)
        .map_err(|e| Refused(format!("work dir {}: {e}", work_dir.display())))?;
    let joined = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        work_dir.join(path)
    };
    let lexical = normalize(&joined)
        .ok_or_else(|| Refused(format!("{path} climbs above the file system root")))?;
    // Compare against both spellings of the work dir (as given and real),
    // so an agent told `cwd` = the given path may use it.
    let given = normalize(work_dir).unwrap_or_else(|| work_dir.to_path_buf());
    let rel = lexical
        .strip_prefix(&given)
        .or_else(|_| lexical.strip_prefix(&root))
        .map_err(|_| {
            Refused(format!(
                "{path} is outside the work dir {}",
                work_dir.display()
            ))
        })?
        .to_path_buf();
    let target = root.join(&rel);
    // The deepest part that exists, with symlinks resolved, must stay inside.
    let mut existing = target.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    let real = std::fs::canonicalize(existing)
        .map_err(|e| Refused(format!("{}: {e}", existing.display())))?;
    if !real.starts_with(&root) {
        return Err(Refused(format!(
            "{path} leads outside the work dir {} (through a symbolic link to {})",
            work_dir.display(),
            real.display()
        )));
    }
    Ok(target)
}

/// Serve `fs/read_text_file` (`path`, optional 1-based `line` and `limit`).
pub fn read(work_dir: &Path, params: &Value) -> Result<(Value, Served), Refused> {
    let path = confine(work_dir, params["path"].as_str().unwrap_or(""))?;
    let text = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let served = Served {
                path,
                bytes: 0,
                missing: true,
            };
            return Ok((json!({ "content": "" }), served));
        }
        Err(e) => return Err(Refused(format!("{}: {e}", path.display()))),
        Ok(m) if m.is_dir() => {
            return Err(Refused(format!("{} is a directory", path.display())));
        }
        Ok(m) if m.len() > MAX_READ_BYTES as u64 => {
            return Err(Refused(format!(
                "{} is {} bytes; omk reads files of up to {} MiB for an agent",
                path.display(),
                m.len(),
                MAX_READ_BYTES >> 20
            )));
        }
        Ok(_) => {
            let bytes =
                std::fs::read(&path).map_err(|e| Refused(format!("{}: {e}", path.display())))?;
            String::from_utf8(bytes)
                .map_err(|_| Refused(format!("{} is not UTF-8 text", path.display())))?
        }
    };
    let line = params["line"].as_u64().unwrap_or(1).max(1) as usize;
    let limit = params["limit"].as_u64().map(|l| l as usize);
    let content = if line == 1 && limit.is_none() {
        text
    } else {
        let lines = text.split_inclusive('\n').skip(line - 1);
        match limit {
            Some(l) => lines.take(l).collect(),
            None => lines.collect(),
        }
    };
    let served = Served {
        path,
        bytes: content.len(),
        missing: false,
    };
    Ok((json!({ "content": content }), served))
}

/// Serve `fs/write_text_file` (`path`, `content`): creates missing parent
/// directories inside the work dir; replaces the file atomically.
pub fn write(work_dir: &Path, params: &Value) -> Result<(Value, Served), Refused> {
    let path = confine(work_dir, params["path"].as_str().unwrap_or(""))?;
    let content = params["content"]
        .as_str()
        .ok_or_else(|| Refused("the request has no text content".into()))?;
    if path.is_dir() {
        return Err(Refused(format!("{} is a directory", path.display())));
    }
    let parent = path
        .parent()
        .ok_or_else(|| Refused(format!("{} has no parent directory", path.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| Refused(format!("{}: {e}", parent.display())))?;
    // A replaced file keeps its permissions; a new one gets rw-r--r--.
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    crate::store::write_atomic_with(
        &path,
        content.as_bytes(),
        crate::store::Durability::Volatile,
    )
    .map_err(|e| Refused(e.to_string()))?;
    let _ = std::fs::set_permissions(&path, mode);
    let served = Served {
        path,
        bytes: content.len(),
        missing: false,
    };
    Ok((Value::Null, served))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_inside_and_refuses_outside_and_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();

        let (_, served) = write(
            &work,
            &json!({ "path": work.join("sub/new.txt"), "content": "hi\n" }),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&served.path).unwrap(), "hi\n");
        let (v, _) = read(&work, &json!({ "path": "sub/new.txt" })).unwrap();
        assert_eq!(v["content"], "hi\n");

        let err = write(
            &work,
            &json!({ "path": outside.join("x.txt"), "content": "no" }),
        )
        .unwrap_err();
        assert!(err.0.contains("outside the work dir"), "{err:?}");
        let err = write(
            &work,
            &json!({ "path": "../outside/y.txt", "content": "no" }),
        )
        .unwrap_err();
        assert!(err.0.contains("outside the work dir"), "{err:?}");

        std::os::unix::fs::symlink(&outside, work.join("link")).unwrap();
        let err = write(&work, &json!({ "path": "link/z.txt", "content": "no" })).unwrap_err();
        assert!(err.0.contains("symbolic link"), "{err:?}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_file_reads_empty_and_lines_are_sliced() {
        let d = tempfile::tempdir().unwrap();
        let (v, served) = read(d.path(), &json!({ "path": "nope.txt" })).unwrap();
        assert_eq!((v["content"].as_str(), served.missing), (Some(""), true));
        std::fs::write(d.path().join("f"), "a\nb\nc\n").unwrap();
        let (v, _) = read(d.path(), &json!({ "path": "f", "line": 2, "limit": 1 })).unwrap();
        assert_eq!(v["content"], "b\n");
    }
}
