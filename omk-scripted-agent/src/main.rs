//! `omk-scripted-agent`: a stand-in for the Kimi CLI (`kimi --wire`, kimi-cli
//! 1.51.0) that speaks Kimi Wire 1.10 over stdin/stdout and whose behaviour is
//! scripted by the prompt text. omk's tests and `make demo` run it in place of
//! the real `kimi` binary.
//!
//! ```text
//! omk-scripted-agent --wire [--work-dir DIR] [--yolo] [--max-steps-per-turn N] [other kimi flags]
//! omk-scripted-agent acp
//! omk-scripted-agent --version
//! ```
//!
//! `acp` speaks the Agent Client Protocol instead, in the current directory
//! (as `kimi acp` does): see the `acp` module for how directives map there.
//!
//! `--work-dir` (default: the current directory) must exist. `--yolo`, `-y`,
//! `--yes`, `--auto-approve` and `--afk` approve every tool call without an
//! `ApprovalRequest`, as kimi does. `--max-steps-per-turn N` ends a turn with
//! `{"status":"max_steps_reached","steps":N}` when a tool step would be
//! followed by step N+1. Other flags (`--config-file F`, `--model M`, ...) are
//! accepted and ignored. Without `--wire` it exits with code 2.
//!
//! # Protocol
//!
//! JSON-RPC 2.0, one compact JSON object per line. Methods: `initialize`,
//! `prompt`, `steer`, `cancel`, `replay`, `set_plan_mode` (only after an
//! `initialize` that declared `supports_plan_mode`). Turns run on their own
//! thread, so `cancel` and other requests are answered while a turn runs.
//! A turn emits `TurnBegin`, `StepBegin{n}`, `ContentPart`s / `ToolCall`s,
//! `StatusUpdate`, [`ApprovalRequest` request, `ApprovalResponse`,
//! `ToolResult`, next `StepBegin`], `TurnEnd`, and only then answers the
//! `prompt` request. Closing stdin cancels the running turn and exits with 0.
//!
//! # Directives
//!
//! Case-sensitive keywords anywhere in the prompt text (the last text part of
//! a `ContentPart` list); several may combine. `OMK_SCRIPTED_BEHAVIOUR` (same
//! syntax) is applied to every prompt after the prompt's own directives.
//! Arguments run to the first unescaped `]`; in them `\n`, `\t`, `\]` and
//! `\\` are a newline, a tab, `]` and `\`. For single-valued directives the
//! last one wins.
//!
//! | directive | effect |
//! |---|---|
//! | (none) | answer `Done: <first 80 chars of the prompt>` |
//! | `[answer:TEXT]` | answer exactly TEXT |
//! | `[json-plan:A\|B\|C]` | answer `["A","B","C"]`, streamed in chunks that split the JSON mid-token |
//! | `[write:PATH:CONTENT]` | `WriteFile` tool call with an `edit file` approval; writes CONTENT to PATH (relative to the work dir, may not escape it) when approved |
//! | `[run:COMMAND]` | `Shell` tool call with a `run command` approval; runs `sh -c COMMAND` in the work dir when approved |
//! | `[ask:QUESTION]` | `AskUserQuestion` tool call: a `QuestionRequest` with QUESTION (options `yes`/`no`) when the client declared `supports_question`, else a tool error as for an unknown tool; the answers go into the `ToolResult` |
//! | `[tool-call-parts]` | stream tool-call arguments as `ToolCall` + `ToolCallPart` (as the kimi provider does) instead of whole |
//! | `[sleep:SECS]` | take SECS seconds first, emitting a `ContentPart` `tick N ` every 0.5 s (the first at once); cancellable |
//! | `[slow-silent:SECS]` | take SECS seconds first, emitting nothing; cancellable |
//! | `[stall]` | after `StepBegin`, hang: ignore `cancel` (answered `{}`), exit only on stdin EOF |
//! | `[crash]` | after `StepBegin` and one `ContentPart`, exit with code 3 (no `TurnEnd`, no response) |
//! | `[crash-once:FILE]` | like `[crash]` if FILE (relative to the work dir) does not exist, creating it first; otherwise normal |
//! | `[malformed]` | write a truncated, non-JSON line mid-turn, then carry on |
//! | `[unknown-event]` | emit an event of type `FutureEventType` `{"x":1}` and an unknown `future_field` in the final `StatusUpdate` |
//! | `[tokens:IN:OUT]` | report `input_other=IN`, `output=OUT` (default: prompt chars/4 and answer chars/4, at least 1) |
//! | `[recall]` | answer `Recall: ` and the earlier text parts of a `ContentPart` list prompt joined by ` \| ` (the context a client sent), or `Recall: (no context)` |
//! | `[provider-error:MSG]` | `StepInterrupted`, `TurnEnd`, then the error response `-32003` MSG |
//!
//! `OMK_SCRIPTED_FAULT` makes the process itself misbehave (exit at once,
//! die after `initialize`, garbage or huge lines, a closed stdout, SIGTERM
//! ignored): see the `fault` module.
//!
//! The turn's token usage is carried by the final `StatusUpdate`; the
//! `StatusUpdate` of a tool step reports zero usage, so summing the turn's
//! updates or taking the last one gives the same numbers.

mod acp;
mod directives;
mod fault;
mod server;
mod turn;

use std::path::PathBuf;
use std::process::ExitCode;

/// The Wire protocol version this agent speaks.
pub const WIRE_PROTOCOL_VERSION: &str = "1.10";

/// Settings taken from the command line and the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub work_dir: PathBuf,
    pub yolo: bool,
    pub max_steps: Option<u32>,
    pub env_behaviour: Option<String>,
    /// `OMK_SCRIPTED_FAULT`: a process-level fault (see `fault`).
    pub fault: Option<fault::Fault>,
}

enum Cmd {
    Version,
    Help,
    Serve(Config),
    /// `acp` as the first argument: speak ACP (see the `acp` module).
    ServeAcp(Config),
}

const USAGE: &str = "usage: omk-scripted-agent --wire [--work-dir DIR] [--yolo] \
[--max-steps-per-turn N] [other kimi flags are ignored]\n       omk-scripted-agent acp\n       \
omk-scripted-agent --version";

fn parse_args(args: &[String]) -> Result<Cmd, String> {
    let acp = args.first().is_some_and(|a| a == "acp");
    let mut wire = false;
    let mut work_dir: Option<String> = None;
    let mut yolo = false;
    let mut max_steps = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--version" | "-V" => return Ok(Cmd::Version),
            "--help" | "-h" => return Ok(Cmd::Help),
            "--wire" => wire = true,
            "--work-dir" | "-w" => {
                work_dir = Some(it.next().ok_or("--work-dir needs a value")?.clone());
            }
            "--yolo" | "-y" | "--yes" | "--auto-approve" | "--afk" => yolo = true,
            "--max-steps-per-turn" => {
                let v = it.next().ok_or("--max-steps-per-turn needs a value")?;
                max_steps = Some(parse_steps(v)?);
            }
            other => {
                if let Some(v) = other.strip_prefix("--work-dir=") {
                    work_dir = Some(v.to_string());
                } else if let Some(v) = other.strip_prefix("--max-steps-per-turn=") {
                    max_steps = Some(parse_steps(v)?);
                }
            }
        }
    }
    if !wire && !acp {
        return Err("pass --wire (Kimi Wire) or `acp` (Agent Client Protocol)".into());
    }
    let dir = match work_dir {
        Some(d) => PathBuf::from(d),
        None => std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
    };
    let dir = std::path::absolute(&dir).map_err(|e| format!("bad work dir: {e}"))?;
    let dir = server::normalize(&dir);
    if !dir.is_dir() {
        return Err(format!("work dir {} is not a directory", dir.display()));
    }
    let cfg = Config {
        work_dir: dir,
        yolo,
        max_steps,
        env_behaviour: std::env::var("OMK_SCRIPTED_BEHAVIOUR")
            .ok()
            .filter(|s| !s.is_empty()),
        fault: match std::env::var("OMK_SCRIPTED_FAULT") {
            Ok(f) if !f.is_empty() => Some(fault::Fault::parse(&f)?),
            _ => None,
        },
    };
    Ok(if acp {
        Cmd::ServeAcp(cfg)
    } else {
        Cmd::Serve(cfg)
    })
}

fn parse_steps(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("bad --max-steps-per-turn value: {v}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Cmd::Version) => {
            println!(
                "omk-scripted-agent {} (Kimi Wire {WIRE_PROTOCOL_VERSION})",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Ok(Cmd::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Cmd::Serve(cfg)) => server::serve(cfg),
        Ok(Cmd::ServeAcp(cfg)) => acp::serve(cfg),
        Err(msg) => {
            eprintln!("omk-scripted-agent: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
