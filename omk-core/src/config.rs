//! Configuration: TOML files merged in order (user, project, `$OMK_CONFIG`),
//! then environment overrides. Unknown keys are refused so a typo never goes
//! unnoticed; every error names the file and line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::non_empty_env;

/// The built-in approval policies (the agent layer applies them,
/// `agent::approval`; config names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Reject everything.
    RejectAll,
    /// Approve file edits inside the work dir; commands only when they match
    /// an allow pattern; reject everything else.
    #[default]
    WorkdirEdits,
    /// Approve everything (the agent runs unattended with full trust).
    ApproveAll,
    /// Ask the host program: a callback set on the `Omk` handle (a Python
    /// callable, a C function pointer, a Rust closure).
    Host,
}

impl PolicyKind {
    /// Parse a policy name as written on the command line or in config.
    pub fn parse(name: &str) -> Result<PolicyKind> {
        match name {
            "reject-all" => Ok(PolicyKind::RejectAll),
            "workdir-edits" => Ok(PolicyKind::WorkdirEdits),
            "approve-all" => Ok(PolicyKind::ApproveAll),
            "host" => Ok(PolicyKind::Host),
            other => Err(Error::InvalidInput(format!(
                "unknown approval policy {other:?}; expected reject-all, workdir-edits, approve-all or host"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RejectAll => "reject-all",
            PolicyKind::WorkdirEdits => "workdir-edits",
            PolicyKind::ApproveAll => "approve-all",
            PolicyKind::Host => "host",
        }
    }
}

/// Which protocol to speak to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentProtocol {
    /// Kimi Wire 1.10 (`kimi --wire`).
    #[default]
    Wire,
    /// Agent Client Protocol (`kimi acp` and other ACP agents).
    Acp,
}

impl AgentProtocol {
    /// `wire` or `acp`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentProtocol::Wire => "wire",
            AgentProtocol::Acp => "acp",
        }
    }

    fn parse(s: &str) -> Option<AgentProtocol> {
        match s {
            "wire" => Some(AgentProtocol::Wire),
            "acp" => Some(AgentProtocol::Acp),
            _ => None,
        }
    }
}

/// `[agent]`: settings shared by every agent, and overrides of the default
/// agent profile (`[team] agent`, see [`crate::agents`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Replaces the default profile's executable (`$OMK_KIMI_BIN` overrides).
    pub bin: Option<String>,
    /// Appended to the default profile's arguments (`$OMK_KIMI_ARGS` adds more).
    pub args: Vec<String>,
    /// Replaces the default profile's protocol, `wire` or `acp`
    /// (`$OMK_AGENT_PROTOCOL` overrides).
    pub protocol: Option<AgentProtocol>,
    /// Seconds to wait for `<agent> --version` before calling it unhealthy.
    pub version_timeout_secs: u64,
    /// Seconds an agent may take to start and answer `initialize`.
    pub start_timeout_secs: u64,
    /// `reject-all`, `workdir-edits` (default) or `approve-all`.
    pub approval_policy: String,
    /// Command patterns `workdir-edits` approves (`*` is a wildcard).
    pub allow_commands: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            bin: None,
            args: Vec::new(),
            protocol: None,
            version_timeout_secs: 10,
            start_timeout_secs: 60,
            approval_policy: "workdir-edits".into(),
            allow_commands: Vec::new(),
        }
    }
}

/// `[health]`: thresholds for `doctor` and `/api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Free space under the state root below which the disk check fails.
    pub min_free_disk_mb: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            min_free_disk_mb: 512,
        }
    }
}

/// `[team]`: scheduler settings (DESIGN.md §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamConfig {
    /// Attempts per task before it fails (first try included).
    pub max_attempts: u32,
    /// A lease expires when the agent sends nothing for this long; the task
    /// then goes back to the queue and the silent agent is killed.
    pub lease_secs: u64,
    /// Backoff before a retried task may be claimed again (doubles per attempt).
    pub retry_backoff_ms: u64,
    /// How often workers write their heartbeat file.
    pub heartbeat_secs: u64,
    /// How long `shutdown` waits for agents to exit before killing them.
    pub stop_grace_secs: u64,
    /// Most subtasks a planner turn may propose.
    pub max_subtasks: usize,
    /// The pool team workers are admitted through.
    pub pool: String,
    /// The agent profile workers run when a spec term names none (`kimi`).
    pub agent: String,
    /// `--isolation worktree`: how often a task whose changes conflict
    /// with what was integrated meanwhile is redone on the new head before
    /// it fails with the conflict as evidence.
    pub conflict_retries: u32,
    /// `[team.worktree]`: how omk's worktrees are checked out.
    pub worktree: WorktreeConfig,
}

/// `[team.worktree]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorktreeConfig {
    /// Fetch Git LFS content into worktrees (git-lfs's smudge filter, which
    /// may use the network); off, LFS files stay pointer files there.
    pub lfs: bool,
}

impl Default for TeamConfig {
    fn default() -> Self {
        TeamConfig {
            max_attempts: 3,
            lease_secs: 300,
            retry_backoff_ms: 500,
            heartbeat_secs: 2,
            stop_grace_secs: 5,
            max_subtasks: 64,
            pool: "default".into(),
            agent: "kimi".into(),
            conflict_retries: 2,
            worktree: WorktreeConfig::default(),
        }
    }
}

/// `[agents.NAME]`: a named way to start an agent (docs/agents.md). A
/// profile with the name of a built-in one replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfileConfig {
    /// The executable and its fixed arguments, e.g. `["kimi", "acp"]`.
    pub command: Vec<String>,
    /// `wire` or `acp`.
    pub protocol: AgentProtocol,
    /// More arguments, after `command`'s.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for the agent process.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Seconds the agent may take to start (default `[agent]
    /// start_timeout_secs`).
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
}

/// `[pools.NAME]`: admission limits (DESIGN.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Agents admitted at once.
    pub max_workers: u32,
    /// Admission is refused while omk's team state uses more than this.
    pub max_disk_gb: Option<f64>,
    /// Most workers waiting for a slot; beyond it admission is rejected.
    /// None: unbounded.
    pub queue_capacity: Option<u32>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_workers: 8,
            max_disk_gb: None,
            queue_capacity: None,
        }
    }
}

/// `[goal]`: the goal controller, stagnation detection and the price table
/// budgets in USD are estimated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoalConfig {
    /// Controller iterations (execution + verification rounds) a goal may
    /// take before it ends `not_ready`, budgets permitting.
    pub max_iterations: u32,
    /// Execution waves a task may take part in before it counts as failed.
    pub max_task_attempts: u32,
    /// Most tasks the planner may propose.
    pub max_tasks: usize,
    /// Iterations the stagnation detectors look at.
    pub stagnation_window: usize,
    /// Iterations recorded before any detector may fire.
    pub stagnation_warmup: usize,
    /// Confidence at which a goal counts as stagnant (0..=1).
    pub stagnation_threshold: f64,
    /// Tokens spent without any proof progress that count as a burn.
    pub token_burn_tokens: u64,
    /// USD per million input tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million output tokens.
    pub output_usd_per_mtok: f64,
}

impl Default for GoalConfig {
    fn default() -> Self {
        GoalConfig {
            max_iterations: 10,
            max_task_attempts: 2,
            max_tasks: 32,
            stagnation_window: 10,
            stagnation_warmup: 3,
            stagnation_threshold: 0.6,
            token_burn_tokens: 200_000,
            // Moonshot's list price for kimi-k2 (2026): $0.60 in, $2.50 out.
            input_usd_per_mtok: 0.60,
            output_usd_per_mtok: 2.50,
        }
    }
}

/// `[store]`: the PostgreSQL store the hosts of a cluster share
/// (docs/distributed.md).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A `postgres://` URL (`$OMK_STORE` overrides). Unset: this machine's
    /// file store only.
    pub url: Option<String>,
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub store: StoreConfig,
    pub health: HealthConfig,
    pub team: TeamConfig,
    pub goal: GoalConfig,
    /// Pools by name; `default` always exists.
    pub pools: std::collections::BTreeMap<String, PoolConfig>,
    /// Agent profiles by name, beside (or replacing) the built-in ones.
    pub agents: std::collections::BTreeMap<String, AgentProfileConfig>,
    /// The files that were found and merged, earliest first.
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

impl Config {
    /// Load and merge `files` (missing ones are skipped), then `explicit`
    /// (`--config FILE` or `$OMK_CONFIG`: it must exist), then apply the
    /// environment overrides.
    pub fn load(files: &[PathBuf], explicit: Option<&Path>) -> Result<Config> {
        let mut merged = toml::Table::new();
        let mut sources = Vec::new();
        let all = files
            .iter()
            .map(|f| (f.as_path(), false))
            .chain(explicit.map(|f| (f, true)));
        for (file, required) in all {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::invalid(format!(
                        "config file {} does not exist (named by --config or OMK_CONFIG)",
                        file.display()
                    )))
                }
                Err(e) => return Err(Error::io(format!("read config {}", file.display()), e)),
            };
            let table = parse_file(file, &text)?;
            merge(&mut merged, table);
            sources.push(file.to_path_buf());
        }
        let mut config: Config = Config::deserialize(merged)
            .map_err(|e| Error::invalid(format!("invalid configuration: {}", e.message())))?;
        config.sources = sources;
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults with the environment overrides applied: what `doctor`
    /// checks when the config files cannot be read, so `OMK_KIMI_BIN` still
    /// names the agent it probes. An override that cannot be applied is
    /// left out (the config check reports the files' error).
    pub fn defaults_with_env() -> Config {
        let mut config = Config::default();
        let _ = config.apply_env();
        config
    }

    /// The settings of pool `name` (`default` exists even when unconfigured).
    pub fn pool(&self, name: &str) -> Option<PoolConfig> {
        match self.pools.get(name) {
            Some(p) => Some(p.clone()),
            None if name == "default" => Some(PoolConfig::default()),
            None => None,
        }
    }

    /// Names of every pool, `default` included, sorted.
    pub fn pool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pools.keys().cloned().collect();
        if !self.pools.contains_key("default") {
            names.push("default".into());
        }
        names.sort();
        names
    }

    fn validate(&self) -> Result<()> {
        PolicyKind::parse(&self.agent.approval_policy)
            .map_err(|e| Error::invalid(format!("[agent] approval_policy: {e}")))?;
        for (name, pool) in &self.pools {
            crate::paths::validate_name("pool name", name)?;
            if pool.max_workers == 0 {
                return Err(Error::invalid(format!(
                    "[pools.{name}] max_workers must be at least 1"
                )));
            }
        }
        if self.team.max_attempts == 0 {
            return Err(Error::invalid("[team] max_attempts must be at least 1"));
        }
        crate::paths::validate_name("pool name", &self.team.pool)?;
        for (name, profile) in &self.agents {
            crate::paths::validate_name("agent profile name", name)
                .map_err(|e| Error::invalid(format!("[agents.{name}]: {e}")))?;
            if profile.command.first().is_none_or(|c| c.trim().is_empty()) {
                return Err(Error::invalid(format!(
                    "[agents.{name}] command must name an executable, e.g. [\"kimi\", \"acp\"]"
                )));
            }
        }
        crate::paths::validate_name("agent profile name", &self.team.agent)
            .map_err(|e| Error::invalid(format!("[team] agent: {e}")))?;
        Ok(())
    }

    fn apply_env(&mut self) -> Result<()> {
        if let Some(bin) = non_empty_env("OMK_KIMI_BIN") {
            self.agent.bin = Some(bin);
        }
        if let Some(args) = non_empty_env("OMK_KIMI_ARGS") {
            let words = shell_words::split(&args)
                .map_err(|e| Error::invalid(format!("OMK_KIMI_ARGS cannot be split: {e}")))?;
            self.agent.args.extend(words);
        }
        if let Some(url) = non_empty_env("OMK_STORE") {
            self.store.url = Some(url);
        }
        if let Some(url) = &self.store.url {
            if !crate::pg::is_postgres_url(url) {
                return Err(Error::invalid(format!(
                    "the store {:?} ([store] url or OMK_STORE) is not a postgres:// URL",
                    crate::pg::redact_url(url)
                )));
            }
        }
        if let Some(p) = non_empty_env("OMK_AGENT_PROTOCOL") {
            self.agent.protocol = Some(AgentProtocol::parse(&p).ok_or_else(|| {
                Error::invalid(format!(
                    "OMK_AGENT_PROTOCOL={p:?}: expected \"wire\" or \"acp\""
                ))
            })?);
        }
        Ok(())
    }
}

/// Parse one file and check it on its own, so errors name the right file.
fn parse_file(file: &Path, text: &str) -> Result<toml::Table> {
    let located = |e: &toml::de::Error| -> Error {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
        Error::invalid(format!(
            "invalid config file {}{at}: {}",
            file.display(),
            e.message().trim()
        ))
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| located(&e))?;
    toml::from_str::<Config>(text).map_err(|e| located(&e))?;
    Ok(table)
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else is
/// replaced by the later file.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn later_files_win_and_tables_merge() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "a.toml",
            "[agent]\nbin = \"a\"\nversion_timeout_secs = 3\n",
        );
        let b = write(
            d.path(),
            "b.toml",
            "[agent]\nbin = \"b\"\n[health]\nmin_free_disk_mb = 1\n",
        );
        let missing = d.path().join("none.toml");
        let c = Config::load(&[a.clone(), missing, b.clone()], None).unwrap();
        assert_eq!(c.agent.version_timeout_secs, 3);
        assert_eq!(c.health.min_free_disk_mb, 1);
        assert_eq!(c.sources, vec![a, b]);
        if std::env::var_os("OMK_KIMI_BIN").is_none() {
            assert_eq!(c.agent.bin.as_deref(), Some("b"));
        }
    }

    #[test]
    fn a_store_url_must_be_postgres_and_is_never_shown_with_its_password() {
        let d = tempfile::tempdir().unwrap();
        let ok = write(
            d.path(),
            "ok.toml",
            "[store]\nurl = \"postgres://omk:pw@db/omk\"\n",
        );
        if std::env::var_os("OMK_STORE").is_none() {
            let c = Config::load(std::slice::from_ref(&ok), None).unwrap();
            assert_eq!(c.store.url.as_deref(), Some("postgres://omk:pw@db/omk"));
        }
        let bad = write(
            d.path(),
            "bad.toml",
            "[store]\nurl = \"mysql://omk:secret@db/omk\"\n",
        );
        if std::env::var_os("OMK_STORE").is_none() {
            let e = Config::load(&[bad], None).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
            let msg = e.to_string();
            assert!(
                msg.contains("not a postgres:// URL") && !msg.contains("secret"),
                "{msg}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "bad.toml", "[agent]\nbin = \"x\"\nargs = [\n");
        let e = Config::load(std::slice::from_ref(&f), None).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        let msg = e.to_string();
        assert!(
            msg.contains(&f.display().to_string()) && msg.contains("line "),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "typo.toml",
            "[agent]\nbin = \"x\"\nbinn = \"y\"\n",
        );
        let msg = Config::load(&[f], None).unwrap_err().to_string();
        assert!(msg.contains("binn") && msg.contains("line 3"), "{msg}");
    }
}
