//! MCP: `omk mcp-server` (omk as an MCP server on stdio) and
//! `omk mcp list | doctor | call` (omk as a client of configured servers).
//! Both sides are built on rmcp, the official Rust SDK.

pub mod client;
pub use omk_core::mcp_config as config;
pub mod frame;
pub mod server;

use std::time::Duration;

use clap::{Args, Subcommand};
use omk_core::{Error, Omk};
use serde_json::{json, Value};

use crate::output::print_json;
use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Configured servers, their transport and the file each came from.
    List(JsonArg),
    /// Connect to every server and list its tools, each within a timeout.
    Doctor(DoctorArgs),
    /// Call a tool of a server; ARGS_JSON defaults to {}.
    Call(CallArgs),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Seconds each server gets to connect and list its tools.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    pub server: String,
    pub tool: String,
    /// The tool's arguments as a JSON object.
    pub args_json: Option<String>,
    /// Seconds for connecting and the call together.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Print the raw result (content, structuredContent, isError).
    #[arg(long)]
    pub json: bool,
}

impl McpCommand {
    pub fn wants_json(&self) -> bool {
        match self {
            McpCommand::List(a) => a.json,
            McpCommand::Doctor(a) => a.json,
            McpCommand::Call(a) => a.json,
        }
    }
}

fn seconds(s: f64) -> omk_core::Result<Duration> {
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(Error::InvalidInput(format!(
            "--timeout must be between 0 and 86400 seconds, not {s}"
        )))
    }
}

/// `omk mcp-server`.
pub fn serve(omk: &Omk) -> omk_core::Result<Outcome> {
    server::serve(omk.clone())?;
    Ok(Outcome::Success)
}

/// `omk mcp ...`.
pub fn run(omk: &Omk, cmd: McpCommand) -> omk_core::Result<Outcome> {
    let project = omk.project_dir().to_path_buf();
    match cmd {
        McpCommand::List(a) => {
            let servers = config::load(&project)?;
            if a.json {
                print_json(&json!({ "servers": servers }));
            } else if servers.is_empty() {
                crate::outln!(
                    "no MCP servers configured (looked in {})",
                    config::files(&project)
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            } else {
                for s in &servers {
                    let (kind, target) = match &s.transport {
                        config::Transport::Stdio { command, args, .. } => (
                            "stdio",
                            std::iter::once(command.clone())
                                .chain(args.iter().cloned())
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        config::Transport::Http { url, .. } => ("http", url.clone()),
                    };
                    crate::outln!(
                        "{:<20} {:<6} {:<50} {}",
                        s.name,
                        kind,
                        target,
                        s.source.display()
                    );
                }
            }
            Ok(Outcome::Success)
        }
        McpCommand::Doctor(a) => {
            let timeout = seconds(a.timeout)?;
            let servers = config::load(&project)?;
            let rt = crate::async_runtime("MCP")?;
            // Concurrently: a hanging server must not delay the others.
            let reports: Vec<Value> = rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for (i, s) in servers.iter().cloned().enumerate() {
                    set.spawn(async move { (i, client::check(&s, timeout).await) });
                }
                let mut reports = vec![Value::Null; servers.len()];
                while let Some(joined) = set.join_next().await {
                    if let Ok((i, r)) = joined {
                        reports[i] = r;
                    }
                }
                reports
            });
            let healthy = reports.iter().filter(|r| r["healthy"] == true).count();
            let unhealthy = reports.len() - healthy;
            if a.json {
                print_json(
                    &json!({ "servers": reports, "healthy": healthy, "unhealthy": unhealthy }),
                );
            } else {
                for r in &reports {
                    if r["healthy"] == true {
                        crate::outln!(
                            "[ok]   {}: {} tools ({} ms)",
                            r["name"].as_str().unwrap_or(""),
                            r["tools"],
                            r["elapsed_ms"]
                        );
                    } else {
                        crate::outln!(
                            "[fail] {}: {}",
                            r["name"].as_str().unwrap_or(""),
                            r["error"].as_str().unwrap_or("")
                        );
                    }
                }
                crate::outln!("{healthy} healthy, {unhealthy} unhealthy");
            }
            rt.shutdown_timeout(Duration::from_millis(200));
            Ok(if unhealthy == 0 {
                Outcome::Success
            } else {
                Outcome::Failed
            })
        }
        McpCommand::Call(a) => {
            let timeout = seconds(a.timeout)?;
            let arguments = match a.args_json.as_deref() {
                None => serde_json::Map::new(),
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => {
                        return Err(Error::InvalidInput(
                            "ARGS_JSON must be a JSON object".into(),
                        ))
                    }
                    Err(e) => {
                        return Err(Error::InvalidInput(format!("ARGS_JSON is not JSON: {e}")))
                    }
                },
            };
            let server = config::find(&project, &a.server)?;
            let rt = crate::async_runtime("MCP")?;
            let result = rt.block_on(client::call(&server, &a.tool, arguments, timeout));
            rt.shutdown_timeout(Duration::from_millis(200));
            let result = result?;
            let is_error = result.is_error == Some(true);
            if a.json {
                print_json(&serde_json::to_value(&result).unwrap_or(Value::Null));
            } else {
                for c in &result.content {
                    match c.as_text() {
                        Some(t) => crate::outln!("{}", t.text),
                        None => crate::outln!("{}", serde_json::to_string(c).unwrap_or_default()),
                    }
                }
                if result.content.is_empty() {
                    if let Some(s) = &result.structured_content {
                        crate::outln!("{s}");
                    }
                }
            }
            Ok(if is_error {
                Outcome::Failed
            } else {
                Outcome::Success
            })
        }
    }
}
