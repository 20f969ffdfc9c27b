//! Gate configuration: `<project>/.omk/gates.toml`, or gates detected from
//! the project when there is no such file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default per-gate timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// How a gate's command is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GateCommand {
    /// Run as is (no shell).
    Argv(Vec<String>),
    /// Run with `sh -c`.
    Shell(String),
}

impl GateCommand {
    /// The command as a person would type it.
    pub fn command_line(&self) -> String {
        match self {
            GateCommand::Shell(s) => s.clone(),
            GateCommand::Argv(a) => shell_words::join(a),
        }
    }
}

/// One gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub name: String,
    pub command: GateCommand,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// A required gate must pass for a proof to be ready.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the project (default the project).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Where the gate came from: `.omk/gates.toml`, or `detected from <file>`.
    #[serde(default, skip_deserializing)]
    pub origin: String,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_true() -> bool {
    true
}

/// `[breaker]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures (timeouts and spawn errors included) that open it.
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through.
    pub recovery_timeout_secs: u64,
    /// Probes a half-open breaker lets through.
    pub half_open_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            recovery_timeout_secs: 60,
            half_open_calls: 3,
        }
    }
}

/// The gates of a project and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateSet {
    pub project: PathBuf,
    pub gates: Vec<GateSpec>,
    pub breaker: BreakerSettings,
    /// `.omk/gates.toml` when configured, `detected` otherwise.
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    #[serde(default)]
    gate: Vec<GateSpec>,
    #[serde(default)]
    breaker: BreakerSettings,
}

/// Check a gate name: it is shown in tables and keys breakers, and becomes
/// part of artifact file names (after slugging).
pub fn validate_gate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "invalid gate name {name:?}: {why}"
        )))
    };
    if name.trim().is_empty() {
        return bad("must not be empty");
    }
    if name.chars().count() > 64 {
        return bad("is longer than 64 characters");
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return bad("must not contain '/' or control characters");
    }
    if name != name.trim() {
        return bad("must not start or end with spaces");
    }
    Ok(())
}

/// Load `<project>/.omk/gates.toml`, or detect gates when it does not exist.
pub fn load(project: &Path) -> Result<GateSet> {
    let file = project.join(".omk").join("gates.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(GateSet {
                project: project.to_path_buf(),
                gates: super::detect::detect(project),
                breaker: BreakerSettings::default(),
                source: "detected".into(),
            });
        }
        Err(e) => return Err(Error::io(format!("read {}", file.display()), e)),
    };
    let parsed: GatesFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                format!(
                    " line {}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        Error::InvalidInput(format!(
            "invalid gates file {}{line}: {}",
            file.display(),
            e.message().trim()
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut gates = parsed.gate;
    for g in &mut gates {
        validate_gate_name(&g.name)?;
        if !seen.insert(g.name.clone()) {
            return Err(Error::InvalidInput(format!(
                "{}: gate {:?} is defined twice",
                file.display(),
                g.name
            )));
        }
        match &g.command {
            GateCommand::Argv(a) if a.is_empty() => {
                return Err(Error::InvalidInput(format!(
                    "{}: gate {:?} has an empty command",
                    file.display(),
                    g.name
                )))
            }
            GateCommand::Shell(s) if s.trim().is_empty() => {
                return Err(Error::InvalidInput(format!(
                    "{}: gate {:?} has an empty command",
                    file.display(),
                    g.name
                )))
            }
            _ => {}
        }
        if g.timeout_secs == 0 {
            return Err(Error::InvalidInput(format!(
                "{}: gate {:?}: timeout_secs must be at least 1",
                file.display(),
                g.name
            )));
        }
        if let Some(cwd) = &g.cwd {
            if cwd.is_absolute()
                || cwd
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::InvalidInput(format!(
                    "{}: gate {:?}: cwd must be a path inside the project",
                    file.display(),
                    g.name
                )));
            }
        }
        g.origin = ".omk/gates.toml".into();
    }
    let b = parsed.breaker;
    if b.failure_threshold == 0 || b.half_open_calls == 0 {
        return Err(Error::InvalidInput(format!(
            "{}: [breaker] failure_threshold and half_open_calls must be at least 1",
            file.display()
        )));
    }
    Ok(GateSet {
        project: project.to_path_buf(),
        gates,
        breaker: b,
        source: ".omk/gates.toml".into(),
    })
}
