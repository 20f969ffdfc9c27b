//! `terminal/*`, served by omk for ACP agents: a command the approval
//! policy allows, run in the work dir (or a directory inside it) in its own
//! process group, its output (stdout and stderr together) kept up to a byte
//! limit, killed on `terminal/kill`, `terminal/release`, a cancelled turn or
//! the agent's end.
//!
//! The output keeps its *tail* when it outgrows the limit (`truncated`),
//! cut on a character boundary, as ACP asks.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use super::fs::{confine, Refused};

/// Output kept per terminal when the agent asks for no limit, and the most
/// it may ask for.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;
pub const MAX_OUTPUT_LIMIT: usize = 4 * 1024 * 1024;
/// Terminals one agent may hold at once.
pub const MAX_TERMINALS: usize = 16;

/// How a terminal's command ended: `exitCode` or `signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

impl Exit {
    pub fn to_json(&self) -> Value {
        json!({ "exitCode": self.code, "signal": self.signal })
    }
}

struct Output {
    bytes: Vec<u8>,
    truncated: bool,
}

struct Term {
    pid: u32,
    /// The session that created it (a cancel of that session kills it).
    session: String,
    limit: usize,
    output: Mutex<Output>,
    exit: watch::Receiver<Option<Exit>>,
}

impl Term {
    fn append(&self, chunk: &[u8]) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        out.bytes.extend_from_slice(chunk);
        if out.bytes.len() > self.limit {
            let mut cut = out.bytes.len() - self.limit;
            // Keep whole UTF-8 characters: skip continuation bytes.
            while cut < out.bytes.len() && (out.bytes[cut] & 0xC0) == 0x80 {
                cut += 1;
            }
            out.bytes.drain(..cut);
            out.truncated = true;
        }
    }

    fn kill(&self) {
        if self.exit.borrow().is_none() {
            crate::process::kill_group(self.pid);
        }
    }
}

/// The terminals of one agent.
#[derive(Default)]
pub struct Terminals {
    terms: Mutex<HashMap<String, Arc<Term>>>,
    next: AtomicU64,
}

impl Terminals {
    fn get(&self, params: &Value) -> Result<Arc<Term>, Refused> {
        let id = params["terminalId"].as_str().unwrap_or("");
        self.terms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Refused(format!("no terminal {id:?}")))
    }

    /// `terminal/create`: start the command (already allowed by the
    /// policy). Returns `{terminalId}`.
    pub fn create(&self, work_dir: &Path, params: &Value) -> Result<Value, Refused> {
        let command = params["command"]
            .as_str()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| Refused("terminal/create names no command".into()))?;
        if self.terms.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_TERMINALS {
            return Err(Refused(format!(
                "the agent holds {MAX_TERMINALS} terminals; release one first"
            )));
        }
        let cwd = match params["cwd"].as_str() {
            Some(c) => confine(work_dir, c)?,
            None => work_dir.to_path_buf(),
        };
        let args: Vec<String> = params["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let limit = params["outputByteLimit"]
            .as_u64()
            .map_or(DEFAULT_OUTPUT_LIMIT, |l| l as usize)
            .min(MAX_OUTPUT_LIMIT);
        let mut cmd = Command::new(command);
        cmd.args(&args)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for e in params["env"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Refused(format!("cannot start {command}: {e}")))?;
        let (tx, rx) = watch::channel(None);
        let term = Arc::new(Term {
            pid: child.id().unwrap_or(0),
            session: params["sessionId"].as_str().unwrap_or("").to_string(),
            limit,
            output: Mutex::new(Output {
                bytes: Vec::new(),
                truncated: false,
            }),
            exit: rx,
        });
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        .map(|mut r| {
            let term = term.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    term.append(&chunk[..n]);
                }
            })
        })
        .collect();
        let pid = term.pid;
        tokio::spawn(async move {
            let status = child.wait().await;
            // Output written before the exit is in the pipes: drain it first
            // (grandchildren holding them are killed with the group).
            crate::process::kill_group(pid);
            for r in readers {
                let _ = r.await;
            }
            let exit = match status {
                Ok(s) => Exit {
                    code: s.code(),
                    signal: s.signal().map(signal_name),
                },
                Err(_) => Exit {
                    code: None,
                    signal: None,
                },
            };
            let _ = tx.send(Some(exit));
        });
        let id = format!("term-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.terms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), term);
        Ok(json!({ "terminalId": id }))
    }

    /// `terminal/output`: `{output, truncated, exitStatus?}`.
    pub fn output(&self, params: &Value) -> Result<Value, Refused> {
        let term = self.get(params)?;
        let out = term.output.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = json!({
            "output": String::from_utf8_lossy(&out.bytes),
            "truncated": out.truncated,
        });
        if let Some(exit) = term.exit.borrow().as_ref() {
            v["exitStatus"] = exit.to_json();
        }
        Ok(v)
    }

    /// `terminal/wait_for_exit`: waits (the agent's reader is not held:
    /// the caller awaits this on its own task) and answers `{exitCode,
    /// signal}`.
    pub async fn wait_for_exit(&self, params: &Value) -> Result<Value, Refused> {
        let term = self.get(params)?;
        let mut exit = term.exit.clone();
        let got = exit
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| Refused("the terminal is gone".into()))?
            .clone();
        Ok(got.map_or(Value::Null, |e| e.to_json()))
    }

    /// `terminal/kill`: kill the command, keep the terminal for its output.
    pub fn kill(&self, params: &Value) -> Result<Value, Refused> {
        self.get(params)?.kill();
        Ok(json!({}))
    }

    /// `terminal/release`: kill the command if it runs and forget it.
    pub fn release(&self, params: &Value) -> Result<Value, Refused> {
        let term = self.get(params)?;
        term.kill();
        let id = params["terminalId"].as_str().unwrap_or("");
        self.terms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(json!({}))
    }

    /// Kill every command of `session` (a cancelled turn).
    pub fn kill_session(&self, session: &str) {
        for t in self
            .terms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            if t.session == session {
                t.kill();
            }
        }
    }

    /// Kill every command and forget every terminal (the agent ends).
    pub fn kill_all(&self) {
        let terms: Vec<_> = self
            .terms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, t) in terms {
            t.kill();
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

/// The command line a `terminal/create` runs, for the approval policy.
pub fn command_line(params: &Value) -> String {
    let mut words = vec![params["command"].as_str().unwrap_or("").to_string()];
    words.extend(
        params["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c))
                {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a.to_string()
                }
            }),
    );
    words.join(" ")
}
