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

/// A built-in profile.
struct BuiltIn {
    name: &'static str,
    command: &'static [&'static str],
    protocol: AgentProtocol,
    /// Environment that makes the agent ask before it acts, so omk's
    /// approval policy decides (agents that otherwise edit unasked).
    env: &'static [(&'static str, &'static str)],
    install: &'static str,
}

const KIMI_INSTALL: &str = "pip install kimi-cli==1.51.0 (Python 3.13)";

/// The built-in profiles.
const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        name: "kimi",
        command: &["kimi"],
        protocol: AgentProtocol::Wire,
        env: &[],
        install: KIMI_INSTALL,
    },
    BuiltIn {
        name: "kimi-acp",
        command: &["kimi", "acp"],
        protocol: AgentProtocol::Acp,
        env: &[],
        install: KIMI_INSTALL,
    },
    BuiltIn {
        name: "claude",
        command: &["claude-agent-acp"],
        protocol: AgentProtocol::Acp,
        env: &[],
        install: "npm install -g @agentclientprotocol/claude-agent-acp",
    },
    BuiltIn {
        name: "gemini",
        command: &["gemini", "--acp"],
        protocol: AgentProtocol::Acp,
        env: &[],
        install: "npm install -g @google/gemini-cli",
    },
    BuiltIn {
        name: "codex",
        command: &["codex-acp"],
        protocol: AgentProtocol::Acp,
        // In its default mode Codex edits without asking; read-only is the
        // mode in which it asks before each edit.
        env: &[("INITIAL_AGENT_MODE", "read-only")],
        install: "npm install -g @agentclientprotocol/codex-acp @openai/codex",
    },
    BuiltIn {
        name: "qwen",
        command: &["qwen", "--acp"],
        protocol: AgentProtocol::Acp,
        env: &[],
        install: "npm install -g @qwen-code/qwen-code",
    },
    BuiltIn {
        name: "opencode",
        command: &["opencode", "acp"],
        protocol: AgentProtocol::Acp,
        // opencode's default permission lets it edit and run unasked.
        env: &[("OPENCODE_PERMISSION", r#"{"edit":"ask","bash":"ask"}"#)],
        install: "npm install -g opencode-ai",
    },
];

/// Names of the built-in profiles.
pub fn built_in_names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|b| b.name)
}

/// The default profile's name (`[team] agent`).
pub fn default_name(config: &Config) -> &str {
    &config.team.agent
}

/// Every profile: the built-in ones and the configured ones, by name, with
/// the overrides applied to the default.
pub fn all(config: &Config) -> Vec<Profile> {
    let mut by_name: BTreeMap<String, Profile> = BTreeMap::new();
    for b in BUILT_IN {
        by_name.insert(
            b.name.to_string(),
            Profile {
                name: b.name.to_string(),
                command: b.command.iter().map(|s| s.to_string()).collect(),
                protocol: b.protocol,
                args: Vec::new(),
                env: b
                    .env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                start_timeout_secs: None,
                source: Source::BuiltIn,
                overridden: false,
                install: Some(b.install),
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
        let program = resolve_bin(bin).ok_or_else(|| {
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
            let path = resolve_bin(&p.command[0]);
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

/// The profiles `doctor` checks: every configured one, the default, and
/// every built-in one whose executable is installed (a built-in agent that
/// is not installed is no fault; `agents list` shows it). Plain `kimi` over
/// Wire is left to doctor's own `kimi` check.
pub fn checked(config: &Config) -> Vec<Profile> {
    let default = default_name(config);
    all(config)
        .into_iter()
        .filter(|p| {
            if p.name == "kimi" && p.protocol == AgentProtocol::Wire {
                return false;
            }
            p.source == Source::Config || p.name == default || p.resolve(config).is_ok()
        })
        .collect()
}

/// Resolve the profile `name`, or the default one.
pub fn resolve(config: &Config, name: Option<&str>) -> Result<Resolved> {
    get(config, name.unwrap_or_else(|| default_name(config)))?.resolve(config)
}

/// Find an agent executable: a path as given, or a name on PATH.
pub fn resolve_bin(bin: &str) -> Option<std::path::PathBuf> {
    if bin.contains('/') {
        let p = std::path::absolute(bin).ok()?;
        return p.is_file().then_some(p);
    }
    which::which(bin).ok()
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
    fn built_ins_that_would_act_unasked_are_made_to_ask() {
        let all = all(&Config::default());
        let env = |name: &str| all.iter().find(|p| p.name == name).unwrap().env.clone();
        assert_eq!(env("codex")["INITIAL_AGENT_MODE"], "read-only");
        let perm: serde_json::Value =
            serde_json::from_str(&env("opencode")["OPENCODE_PERMISSION"]).unwrap();
        assert_eq!(perm, serde_json::json!({"edit": "ask", "bash": "ask"}));
        assert!(env("claude").is_empty());
    }

    #[test]
    fn unknown_profiles_name_the_known_ones() {
        let e = get(&Config::default(), "nope").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        let msg = e.to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("kimi-acp") && msg.contains("claude"));
    }
}
