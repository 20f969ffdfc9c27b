//! `omk chat` (alias `omk c`): a terminal REPL over a chat session of
//! omk-core ([`omk_core::chat::engine`]). The engine owns the agent and the
//! session files; this module owns the terminal: line editing (rustyline),
//! streaming output, interactive approvals, Ctrl-C and slash commands.
//!
//! On a terminal it prompts and colours (unless `NO_COLOR`); with stdin not a
//! terminal it reads one prompt per line and prints only the answers, so
//! scripts can drive it.

mod repl;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use clap::Args;
use omk_core::chat::engine::{configured_approval, ApprovalMode, ChatCancel, ChatOptions};
use omk_core::{Error, Omk};

use crate::Outcome;

/// `omk chat` options.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Resume this session (its earlier turns are shown and the agent continues them).
    #[arg(long, value_name = "ID", conflicts_with = "new")]
    pub session: Option<String>,
    /// Start a fresh session instead of offering the latest one of this project.
    #[arg(long)]
    pub new: bool,
    /// Approvals: ask (default on a terminal), reject-all, workdir-edits or
    /// approve-all. Default: `[agent] approval_policy` when a config file
    /// sets it, else ask on a terminal and workdir-edits otherwise.
    #[arg(long, value_name = "MODE")]
    pub approval: Option<String>,
    /// Agent profile (`omk agents list`); default: the one a resumed session
    /// ran, else `[team] agent`.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Theme recorded in the session: `default`, or `plain` (no colour).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub theme: String,
}

/// What the process is doing, for the Ctrl-C handler.
pub(crate) const STATE_IDLE: u8 = 0;
pub(crate) const STATE_TURN: u8 = 1;
pub(crate) const STATE_TEAM: u8 = 2;
/// Before the first prompt (agent starting): Ctrl-C leaves at once.
const STATE_STARTING: u8 = 3;

/// Shared with the signal thread: what Ctrl-C should stop.
#[derive(Clone)]
pub(crate) struct Interrupts {
    state: Arc<AtomicU8>,
    cancel: Arc<Mutex<Option<ChatCancel>>>,
}

impl Interrupts {
    pub(crate) fn set_cancel(&self, c: ChatCancel) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    pub(crate) fn enter(&self, what: u8) {
        self.state.store(what, Ordering::SeqCst);
    }
}

/// Terminal capabilities of this run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Term {
    /// stdin is a terminal: prompt, ask, edit lines.
    pub interactive: bool,
    /// Colour on stdout.
    pub colour: bool,
}

pub fn run(omk: &Omk, args: ChatArgs) -> omk_core::Result<Outcome> {
    if !matches!(args.theme.as_str(), "default" | "plain") {
        return Err(Error::InvalidInput(format!(
            "unknown theme {:?}; expected default or plain",
            args.theme
        )));
    }
    let interactive = std::io::stdin().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let term = Term {
        interactive,
        colour: interactive
            && std::io::stdout().is_terminal()
            && !no_color
            && args.theme != "plain",
    };
    let approval = match &args.approval {
        Some(a) => ApprovalMode::parse(a)?,
        None => match configured_approval(omk.config()?) {
            Some(p) => ApprovalMode::parse(&p)?,
            None if interactive => ApprovalMode::Ask,
            None => ApprovalMode::parse(&omk.config()?.agent.approval_policy)?,
        },
    };
    if approval == ApprovalMode::Ask && !interactive {
        return Err(Error::InvalidInput(
            "--approval ask needs a terminal; when stdin is not one, choose a policy (reject-all, workdir-edits or approve-all)".into(),
        ));
    }
    if let Some(id) = &args.session {
        omk_core::paths::validate_name("session id", id)?;
    }
    let session = match (&args.session, args.new) {
        (Some(id), _) => Some(id.clone()),
        (None, true) => None,
        (None, false) => offer_latest(omk, term)?,
    };
    let interrupts = Interrupts {
        state: Arc::new(AtomicU8::new(STATE_STARTING)),
        cancel: Arc::new(Mutex::new(None)),
    };
    install_ctrl_c(&interrupts, interactive)?;
    let options = ChatOptions {
        session,
        approval,
        theme: args.theme.clone(),
        agent: args.agent.clone(),
    };
    repl::Repl::run(omk, options, term, interrupts)
}

/// With neither `--session` nor `--new`: on a terminal, offer to resume the
/// latest session of this project; otherwise start a new one.
fn offer_latest(omk: &Omk, term: Term) -> omk_core::Result<Option<String>> {
    if !term.interactive {
        return Ok(None);
    }
    let Some(latest) = omk.chat_sessions(false)?.pop() else {
        return Ok(None);
    };
    let messages = omk
        .chat_conversation(&latest.id)
        .map(|c| c.len())
        .unwrap_or(0);
    if messages == 0 {
        return Ok(None);
    }
    let question = format!(
        "Resume the latest session {} ({} messages, started {})? [Y/n] ",
        latest.id,
        messages,
        latest.started_at.format("%Y-%m-%d %H:%M UTC")
    );
    let mut rl = rustyline::DefaultEditor::new().map_err(|e| io_err("open the terminal", e))?;
    match rl.readline(&question) {
        Ok(a) if a.trim().is_empty() || a.trim().eq_ignore_ascii_case("y") => Ok(Some(latest.id)),
        Ok(_) => Ok(None),
        Err(
            rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof,
        ) => Err(Error::Cancelled("no session chosen".into())),
        Err(e) => Err(io_err("read the answer", e)),
    }
}

/// Ctrl-C during a turn cancels it (a second one kills an agent that
/// ignores the cancel); during `/team` the team's own handler shuts it down;
/// at the prompt of a terminal rustyline reads it as a key (clears the line).
/// Without a terminal, Ctrl-C between turns ends the chat (exit 130).
fn install_ctrl_c(interrupts: &Interrupts, interactive: bool) -> omk_core::Result<()> {
    use signal_hook::consts::SIGINT;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT])
        .map_err(|e| io_err("install the Ctrl-C handler", e))?;
    let i = interrupts.clone();
    std::thread::Builder::new()
        .name("omk-chat-ctrl-c".into())
        .spawn(move || {
            for _ in signals.forever() {
                match i.state.load(Ordering::SeqCst) {
                    STATE_TURN => {
                        if let Some(c) = i.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                        {
                            c.cancel();
                        }
                    }
                    STATE_TEAM => {}
                    // Nothing said yet: a slow agent start is not worth waiting for.
                    STATE_STARTING => std::process::exit(130),
                    _ if !interactive => {
                        // The session files are appended line by line, so
                        // nothing is lost; the agent exits on its closed stdin.
                        std::process::exit(130);
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| io_err("start the Ctrl-C thread", e))?;
    Ok(())
}

/// An I/O error with what omk was doing.
pub(crate) fn io_err(
    context: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Io {
        context: context.into(),
        source: std::io::Error::other(e),
    }
}
