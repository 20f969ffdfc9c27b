//! `omk mcp list | doctor | call`: an MCP client (rmcp) for the servers in
//! the config files, over stdio or streamable HTTP. Nothing is cached: every
//! call connects, asks and disconnects.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

use super::config::{Server, Transport};
use omk_core::Error;

fn agent_err(what: &str, server: &str, e: impl std::fmt::Display) -> Error {
    Error::Agent(format!(
        "MCP server {server:?}: {what}: {}",
        plain(&e.to_string())
    ))
}

/// An initialize failure as a person would say it: what went wrong at the
/// other end, not the transport's type names.
fn initialize_err(server: &Server, e: &(dyn std::error::Error + 'static)) -> Error {
    let mut text = String::new();
    let mut io = None;
    let mut cur = Some(e);
    while let Some(c) = cur {
        text.push_str(&c.to_string());
        text.push('\n');
        if let Some(x) = c.downcast_ref::<std::io::Error>() {
            io = Some(x.kind());
        }
        cur = c.source();
    }
    let has = |needle: &str| text.to_ascii_lowercase().contains(needle);
    use std::io::ErrorKind as K;
    let why = match &server.transport {
        Transport::Http { url, .. } => {
            if io == Some(K::ConnectionRefused) || has("connection refused") {
                format!("nothing is listening at {url} (connection refused)")
            } else if has("dns error") || has("failed to lookup") {
                format!("cannot resolve the host of {url}")
            } else if io == Some(K::TimedOut) || has("timed out") {
                format!("{url} did not answer (timed out)")
            } else if has("error sending request") || has("tcp connect error") {
                format!("cannot reach {url}")
            } else {
                format!(
                    "{url} did not complete initialize: {}",
                    plain(&e.to_string())
                )
            }
        }
        Transport::Stdio { command, .. } => {
            if io == Some(K::BrokenPipe) || has("broken pipe") || has("connection closed") {
                format!("the server process {command:?} exited before it answered initialize")
            } else {
                format!(
                    "the server process {command:?} did not complete initialize: {}",
                    plain(&e.to_string())
                )
            }
        }
    };
    Error::Agent(format!("MCP server {:?}: {why}", server.name))
}

/// `text` without bracketed Rust type paths (`[rmcp::transport::...]`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        let Some(j) = rest[i..].find(']') else { break };
        let inside = &rest[i + 1..i + j];
        out.push_str(&rest[..i]);
        if !inside.contains("::") {
            out.push_str(&rest[i..=i + j]);
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Connect and initialize, within `timeout`.
pub async fn connect(
    server: &Server,
    timeout: Duration,
) -> omk_core::Result<RunningService<RoleClient, ()>> {
    let connecting = async {
        match &server.transport {
            Transport::Stdio { command, args, env } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                let (transport, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| {
                        agent_err(&format!("cannot start {command:?}"), &server.name, e)
                    })?;
                ().serve(transport)
                    .await
                    .map_err(|e| initialize_err(server, &e))
            }
            Transport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (k, v) in headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                        Error::InvalidInput(format!(
                            "MCP server {:?}: header {k:?}: {e}",
                            server.name
                        ))
                    })?;
                    let value = http::HeaderValue::from_str(v).map_err(|e| {
                        Error::InvalidInput(format!(
                            "MCP server {:?}: header {k:?}: {e}",
                            server.name
                        ))
                    })?;
                    custom.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(custom);
                let transport = StreamableHttpClientTransport::from_config(config);
                ().serve(transport)
                    .await
                    .map_err(|e| initialize_err(server, &e))
            }
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "MCP server {:?} did not answer initialize within {}s",
                server.name,
                timeout.as_secs_f64()
            ))
        })?
}

/// One server's health: connected and listed its tools in time.
pub async fn check(server: &Server, timeout: Duration) -> Value {
    let started = Instant::now();
    let outcome = async {
        let client = connect(server, timeout).await?;
        let left = timeout.saturating_sub(started.elapsed());
        let tools = tokio::time::timeout(left, client.list_all_tools())
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "tools/list took more than {}s",
                    timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| agent_err("tools/list failed", &server.name, e))?;
        let info = client
            .peer_info()
            .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()));
        let _ = client.cancel().await;
        Ok::<_, Error>((tools.len(), info))
    }
    .await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok((tools, info)) => json!({
            "name": server.name, "healthy": true, "tools": tools, "server": info,
            "elapsed_ms": ms, "error": null,
        }),
        Err(e) => json!({
            "name": server.name, "healthy": false, "tools": null, "server": null,
            "elapsed_ms": ms, "error": e.to_string(),
        }),
    }
}

/// Call `tool` with `arguments`, within `timeout`.
pub async fn call(
    server: &Server,
    tool: &str,
    arguments: serde_json::Map<String, Value>,
    timeout: Duration,
) -> omk_core::Result<CallToolResult> {
    let started = Instant::now();
    let client = connect(server, timeout).await?;
    let left = timeout.saturating_sub(started.elapsed());
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
    let result = tokio::time::timeout(left, client.call_tool(params))
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "tool {tool:?} of MCP server {:?} did not answer within {}s",
                server.name,
                timeout.as_secs_f64()
            ))
        })?
        .map_err(|e| agent_err(&format!("tools/call {tool:?} failed"), &server.name, e));
    let _ = client.cancel().await;
    result
}
