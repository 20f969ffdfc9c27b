//! Agent profiles: named ways to start an agent, so one team can mix
//! vendors (`2:executor@claude,1:reviewer@kimi-acp`). docs/agents.md is the
//! guide.
//!
//! A profile is a command, a protocol (Kimi Wire or ACP), extra arguments,
//! environment variables and a start timeout. The built-in profiles need no
//! configuration once the agent is installed; `[agents.NAME]` adds profiles
//! or replaces built-in ones. `[team] agent` names the default profile, the
//! one a spec term without `@agent` runs; `[agent] bin` / `args` /
//! `protocol` and `OMK_KIMI_BIN` / `OMK_KIMI_ARGS` / `OMK_AGENT_PROTOCOL`
//! override that default profile (and only it), so what worked before
//! profiles existed still works.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::{AgentProtocol, Config};
use crate::error::{Error, Result};

/// Where a profile comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Built into omk.
    BuiltIn,
    /// `[agents.NAME]` in a config file.
    Config,
}

/// One agent profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    /// The executable and its fixed arguments.
    pub command: Vec<String>,
    pub protocol: AgentProtocol,
    /// More arguments after `command`'s (for Wire, after omk's own
    /// `--wire --work-dir DIR`).
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub start_timeout_secs: Option<u64>,
    pub source: Source,
    /// Whether `[agent]` or the `OMK_*` environment overrides changed it
    /// (the default profile only).
    pub overridden: bool,
    /// How to install the agent (built-in profiles).
    pub install: Option<&'static str>,
}

/// The built-in profiles: (name, command, protocol, how to install).
const BUILT_IN: &[(&str, &[&str], AgentProtocol, &str)] = &[
    (
        "kimi",
        &["kimi"],
        AgentProtocol::Wire,
        "pip install kimi-cli==1.51.0 (Python 3.13)",
    ),
    (
        "kimi-acp",
        &["kimi", "acp"],
        AgentProtocol::Acp,
        "pip install kimi-cli==1.51.0 (Python 3.13)",
    ),
    (
        "claude",
        &["claude-agent-acp"],
        AgentProtocol::Acp,
        "npm install -g @agentclientprotocol/claude-agent-acp",
    ),
    (
        "gemini",
        &["gemini", "--acp"],
        AgentProtocol::Acp,
        "npm install -g @google/gemini-cli",
    ),
    (
        "codex",
        &["codex-acp"],
        AgentProtocol::Acp,
        "npm install -g @agentclientprotocol/codex-acp @openai/codex",
    ),
    (
        "qwen",
        &["qwen", "--acp"],
        AgentProtocol::Acp,
        "npm install -g @qwen-code/qwen-code",
    ),
    (
        "opencode",
        &["opencode", "acp"],
        AgentProtocol::Acp,
        "npm install -g opencode-ai",
    ),
];

/// Names of the built-in profiles.
pub fn built_in_names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|b| b.0)
}

/// The default profile's name (`[team] agent`).
pub fn default_name(config: &Config) -> &str {
    &config.team.agent
}

/// Every profile: the built-in ones and the configured ones, by name, with
/// the overrides applied to the default.
pub fn all(config: &Config) -> Vec<Profile> {
    let mut by_name: BTreeMap<String, Profile> = BTreeMap::new();
    for (name, command, protocol, install) in BUILT_IN {
        by_name.insert(
            name.to_string(),
            Profile {
                name: name.to_string(),
                command: command.iter().map(|s| s.to_string()).collect(),
                protocol: *protocol,
                args: Vec::new(),
                env: BTreeMap::new(),
                start_timeout_secs: None,
                source: Source::BuiltIn,
                overridden: false,
                install: Some(install),
            },
        );
    }
    for (name, p) in &config.agents {
        by_name.insert(
            name.clone(),
            Profile {
                name: name.clone(),
                command: p.command.clone(),
                protocol: p.protocol,
                args: p.args.clone(),
                env: p.env.clone(),
                start_timeout_secs: p.start_timeout_secs,
                source: Source::Config,
                overridden: false,
                install: None,
            },
        );
    }
    if let Some(p) = by_name.get_mut(default_name(config)) {
        let a = &config.agent;
        if let Some(bin) = &a.bin {
            p.command[0] = bin.clone();
            p.overridden = true;
        }
        if !a.args.is_empty() {
            p.args.extend(a.args.iter().cloned());
            p.overridden = true;
        }
        if let Some(protocol) = a.protocol {
            p.overridden |= p.protocol != protocol;
            p.protocol = protocol;
        }
    }
    by_name.into_values().collect()
}

/// The profile named `name`; an unknown name is `invalid_input` naming the
/// known ones.
pub fn get(config: &Config, name: &str) -> Result<Profile> {
    let all = all(config);
    if let Some(p) = all.iter().find(|p| p.name == name) {
        return Ok(p.clone());
    }
    let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    Err(Error::InvalidInput(format!(
        "unknown agent profile {name:?}; known profiles: {} (add one as [agents.{name}])",
        known.join(", ")
    )))
}

/// A profile ready to start: its executable found.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Resolved {
    /// The profile's name.
    pub name: String,
    pub program: PathBuf,
    /// Every argument after the program (the command's own, then `args`).
    pub args: Vec<String>,
    pub protocol: AgentProtocol,
    pub env: Vec<(String, String)>,
    pub start_timeout_secs: u64,
}

impl Resolved {
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs.max(1))
    }
}

impl Profile {
    /// Find the executable (a path as given, or a name on PATH).
    pub fn resolve(&self, config: &Config) -> Result<Resolved> {
        let bin = &self.command[0];
        let program = crate::health::resolve_agent_bin(bin).ok_or_else(|| {
            let how = match (self.install, self.overridden) {
                (_, true) => "; check [agent] bin or OMK_KIMI_BIN".to_string(),
                (Some(i), false) => format!("; install it: {i}"),
                (None, false) => format!("; check [agents.{}] command", self.name),
            };
            Error::Agent(format!(
                "agent executable {bin:?} of profile {:?} not found{how}",
                self.name
            ))
        })?;
        Ok(Resolved {
            name: self.name.clone(),
            program,
            args: self.command[1..]
                .iter()
                .chain(&self.args)
                .cloned()
                .collect(),
            protocol: self.protocol,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            start_timeout_secs: self
                .start_timeout_secs
                .unwrap_or(config.agent.start_timeout_secs),
        })
    }
}

/// `agents list`: `{"default": NAME, "agents": [{name, command, args,
/// protocol, source, overridden, default, installed, path, install}]}`.
pub fn list(config: &Config) -> serde_json::Value {
    let default = default_name(config);
    let agents: Vec<serde_json::Value> = all(config)
        .iter()
        .map(|p| {
            let path = crate::health::resolve_agent_bin(&p.command[0]);
            serde_json::json!({
                "name": p.name,
                "command": p.command,
                "args": p.args,
                "protocol": p.protocol.as_str(),
                "source": p.source,
                "overridden": p.overridden,
                "default": p.name == default,
                "installed": path.is_some(),
                "path": path,
                "install": p.install,
            })
        })
        .collect();
    serde_json::json!({ "default": default, "agents": agents })
}

/// The profiles `doctor` checks: every configured one, and the default
/// (unless it is plain `kimi` over Wire, which doctor's `kimi` check covers).
pub fn checked(config: &Config) -> Vec<Profile> {
    let default = default_name(config);
    all(config)
        .into_iter()
        .filter(|p| {
            let plain_kimi = p.name == "kimi" && p.protocol == AgentProtocol::Wire;
            p.source == Source::Config || (p.name == default && !plain_kimi)
        })
        .collect()
}

/// Resolve the profile `name`, or the default one.
pub fn resolve(config: &Config, name: Option<&str>) -> Result<Resolved> {
    get(config, name.unwrap_or_else(|| default_name(config)))?.resolve(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_exist_and_overrides_touch_only_the_default() {
        let mut c = Config::default();
        c.agent.bin = Some("/opt/scripted".into());
        c.agent.args = vec!["acp".into()];
        c.agent.protocol = Some(AgentProtocol::Acp);
        let all = all(&c);
        let kimi = all.iter().find(|p| p.name == "kimi").unwrap();
        assert_eq!(kimi.command, ["/opt/scripted"]);
        assert_eq!(kimi.args, ["acp"]);
        assert_eq!(kimi.protocol, AgentProtocol::Acp);
        assert!(kimi.overridden);
        let claude = all.iter().find(|p| p.name == "claude").unwrap();
        assert_eq!(claude.command, ["claude-agent-acp"]);
        assert!(!claude.overridden);
        for name in built_in_names() {
            assert!(all.iter().any(|p| p.name == name), "{name}");
        }
    }

    #[test]
    fn unknown_profiles_name_the_known_ones() {
        let e = get(&Config::default(), "nope").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        let msg = e.to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("kimi-acp") && msg.contains("claude"));
    }
}
