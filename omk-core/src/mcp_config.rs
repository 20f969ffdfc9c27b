//! MCP client configuration: `<project>/.omk/mcp.json`, then
//! `$XDG_CONFIG_HOME/omk/mcp.json` (or `~/.config/omk/mcp.json`), both in
//! the common `{"mcpServers": {NAME: {...}}}` shape. A server named in the
//! project file wins over the user file's server of the same name.
//!
//! `omk mcp list|doctor|call` use these servers as omk's own MCP client;
//! teams hand them to ACP agents in `session/new` ([`acp_servers`]), so an
//! agent gets the project's MCP servers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// How to reach a server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum Transport {
    /// A child process speaking MCP on its stdio.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// Streamable HTTP.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

/// One configured server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    pub name: String,
    #[serde(flatten)]
    pub transport: Transport,
    /// The file it came from.
    pub source: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    mcp_servers: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Accepted for compatibility with other hosts' files; the transport
    /// follows from `command` / `url`.
    #[serde(default, rename = "type")]
    _kind: Option<String>,
}

/// The config files, most specific first.
pub fn files(project: &Path) -> Vec<PathBuf> {
    let mut out = vec![project.join(".omk").join("mcp.json")];
    if let Some(home) = crate::paths::config_home() {
        out.push(home.join("omk").join("mcp.json"));
    }
    out
}

/// Every configured server, by name; a broken file is an error naming it.
pub fn load(project: &Path) -> crate::Result<Vec<Server>> {
    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    for path in files(project) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                })
            }
        };
        let file: File = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a valid MCP config ({e}); expected {{\"mcpServers\": {{NAME: {{\"command\", \"args\", \"env\"}} | {{\"url\", \"headers\"}}}}}}",
                path.display()
            ))
        })?;
        for (name, entry) in file.mcp_servers {
            if servers.contains_key(&name) {
                continue;
            }
            let transport = match (entry.command, entry.url) {
                (Some(command), None) => Transport::Stdio {
                    command,
                    args: entry.args,
                    env: entry.env,
                },
                (None, Some(url)) => Transport::Http {
                    url,
                    headers: entry.headers,
                },
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{}: server {name:?} needs exactly one of \"command\" (stdio) or \"url\" (streamable HTTP)",
                        path.display()
                    )))
                }
            };
            servers.insert(
                name.clone(),
                Server {
                    name,
                    transport,
                    source: path.clone(),
                },
            );
        }
    }
    Ok(servers.into_values().collect())
}

/// The server named `name`.
pub fn find(project: &Path, name: &str) -> crate::Result<Server> {
    let all = load(project)?;
    let known: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    all.into_iter().find(|s| s.name == name).ok_or_else(|| {
        Error::NotFound(format!(
            "no MCP server named {name:?} in {}; configured: {}",
            files(project)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// The servers in ACP's `McpServer` shape for `session/new`: stdio servers
/// as `{name, command, args, env: [{name, value}]}`, streamable HTTP ones as
/// `{type: "http", name, url, headers: [{name, value}]}`.
pub fn acp_servers(servers: &[Server]) -> Vec<serde_json::Value> {
    let pairs = |m: &BTreeMap<String, String>| -> Vec<serde_json::Value> {
        m.iter()
            .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
            .collect()
    };
    servers
        .iter()
        .map(|s| match &s.transport {
            Transport::Stdio { command, args, env } => serde_json::json!({
                "name": s.name, "command": command, "args": args, "env": pairs(env),
            }),
            Transport::Http { url, headers } => serde_json::json!({
                "type": "http", "name": s.name, "url": url, "headers": pairs(headers),
            }),
        })
        .collect()
}
