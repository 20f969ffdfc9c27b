//! Where omk keeps things: the state root, the config files, and the rule
//! every name must pass before it becomes part of a path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest name accepted for anything that becomes a path component.
pub const MAX_NAME_LEN: usize = 64;

/// Check a name that will become a path component (team, goal, session,
/// pool, role, gate file...). Allowed: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`
/// and never `..`. `kind` is used in the error message ("team name").
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "is {} characters long; the limit is {MAX_NAME_LEN}",
            name.chars().count()
        ))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("must start with a letter or digit".to_string())
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(format!(
            "contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ))
    } else if name.contains("..") {
        Some("must not contain '..'".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(Error::invalid(format!(
            "invalid {kind} {:?}: {why}",
            name.escape_debug().to_string()
        ))),
    }
}

/// The state root and the well-known places under it (DESIGN.md §4).
#[derive(Debug, Clone)]
pub struct StatePaths {
    root: PathBuf,
}

impl StatePaths {
    /// Use `root` as the state root.
    pub fn new(root: impl Into<PathBuf>) -> StatePaths {
        StatePaths { root: root.into() }
    }

    /// Resolve the state root: explicit value, else `$OMK_STATE_DIR`, else
    /// `$XDG_STATE_HOME/omk`, else `~/.local/state/omk`.
    pub fn resolve(explicit: Option<&Path>) -> Result<StatePaths> {
        if let Some(p) = explicit {
            return Ok(StatePaths::new(absolute(p)?));
        }
        if let Some(p) = non_empty_env("OMK_STATE_DIR") {
            return Ok(StatePaths::new(absolute(Path::new(&p))?));
        }
        if let Some(p) = non_empty_env("XDG_STATE_HOME") {
            return Ok(StatePaths::new(absolute(Path::new(&p))?.join("omk")));
        }
        let home = home_dir().ok_or_else(|| {
            Error::invalid("cannot find the state directory: set OMK_STATE_DIR or HOME")
        })?;
        Ok(StatePaths::new(home.join(".local/state/omk")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// `team/<name>`; the name is validated.
    pub fn team_dir(&self, name: &str) -> Result<PathBuf> {
        validate_name("team name", name)?;
        Ok(self.root.join("team").join(name))
    }
    pub fn teams_dir(&self) -> PathBuf {
        self.root.join("team")
    }
    /// `goal/<id>`; the id is validated.
    pub fn goal_dir(&self, id: &str) -> Result<PathBuf> {
        validate_name("goal id", id)?;
        Ok(self.root.join("goal").join(id))
    }
    /// `sessions/<id>`; the id is validated.
    pub fn session_dir(&self, id: &str) -> Result<PathBuf> {
        validate_name("session id", id)?;
        Ok(self.root.join("sessions").join(id))
    }
    /// `pools/<name>.json`; the name is validated.
    pub fn pool_file(&self, name: &str) -> Result<PathBuf> {
        validate_name("pool name", name)?;
        Ok(self.root.join("pools").join(format!("{name}.json")))
    }
    pub fn breakers(&self) -> PathBuf {
        self.root.join("gates").join("breakers.json")
    }
}

/// Config file locations, earliest first; later files win (DESIGN.md §5).
pub fn config_files(project_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = config_home() {
        files.push(dir.join("omk").join("config.toml"));
    }
    if let Some(project) = project_dir {
        files.push(project.join(".omk").join("config.toml"));
    }
    files
}

/// The config file named explicitly (read last, and it must exist):
/// `extra` (`--config FILE`), else `$OMK_CONFIG`.
pub fn explicit_config(extra: Option<&Path>) -> Option<PathBuf> {
    extra
        .map(Path::to_path_buf)
        .or_else(|| non_empty_env("OMK_CONFIG").map(PathBuf::from))
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> Option<PathBuf> {
    non_empty_env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".config")))
}

pub(crate) fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn home_dir() -> Option<PathBuf> {
    non_empty_env("HOME").map(PathBuf::from)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(format!("resolve {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["a", "executor-1a2b3c4d", "A.b_c-9", &"x".repeat(64), "0"] {
            validate_name("team name", ok).unwrap();
        }
    }

    #[test]
    fn refuses_names_that_escape_or_hide() {
        let long = "x".repeat(65);
        for bad in [
            "", "..", "a..b", "../x", "a/b", "/abs", ".hidden", "-flag", "_x", "a\0b", "a b", "é",
            &long, "a\\b",
        ] {
            let err = validate_name("team name", bad).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("team name"));
        }
    }
}
