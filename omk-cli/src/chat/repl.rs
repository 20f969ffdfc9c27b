//! The read-eval-print loop: prompts, streamed answers, approvals and slash
//! commands.

use std::io::{BufRead, Write};

use omk_core::agent::{AgentNotice, ApprovalRequest, TurnStatus, WireEvent};
use omk_core::chat::engine::{
    ApprovalAnswer, ChatEngine, ChatObserver, ChatOptions, ChatTurn, Resume,
};
use omk_core::chat::{Message, Role};
use omk_core::team::{Phase, TaskStatus, TeamRunRequest};
use omk_core::{Error, Omk};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::{Interrupts, Term, STATE_IDLE, STATE_TEAM, STATE_TURN};
use crate::Outcome;

const HELP: &str = "\
Type a message and press Enter to send it to the agent. Commands:
  /help              this help
  /new               start a new session (the current one is kept on disk)
  /sessions          list this project's sessions
  /resume ID         switch to session ID and continue it
  /clear             clear the screen (the session and the agent's context are kept)
  /team SPEC TASK    run a team (e.g. /team 2:executor write the docs) and report
  /exit              leave (also Ctrl-D)
Ctrl-C cancels the running turn (twice: stop an agent that ignores it); at the
prompt it clears the line.";

/// ANSI styles, or nothing without colour.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }
}

pub(crate) struct Repl<'a> {
    omk: &'a Omk,
    term: Term,
    style: Style,
    interrupts: Interrupts,
    engine: ChatEngine,
    /// The line editor (terminal only).
    editor: Option<DefaultEditor>,
    /// Turns that ended in an error (the exit status without a terminal).
    failed_turns: u64,
}

fn term_error(e: impl std::fmt::Display) -> Error {
    super::io_err("use the terminal", e.to_string())
}

impl<'a> Repl<'a> {
    pub(crate) fn run(
        omk: &'a Omk,
        options: ChatOptions,
        term: Term,
        interrupts: Interrupts,
    ) -> omk_core::Result<Outcome> {
        let resuming = options.session.is_some();
        let engine = omk.chat_open(options)?;
        interrupts.set_cancel(engine.canceller());
        let editor = if term.interactive {
            Some(DefaultEditor::new().map_err(term_error)?)
        } else {
            None
        };
        let mut repl = Repl {
            omk,
            term,
            style: Style { on: term.colour },
            interrupts,
            engine,
            editor,
            failed_turns: 0,
        };
        repl.interrupts.enter(STATE_IDLE);
        repl.load_history()?;
        repl.banner(resuming)?;
        let result = repl.main_loop();
        let Repl {
            engine,
            failed_turns,
            ..
        } = repl;
        engine.close()?;
        result?;
        Ok(if failed_turns > 0 && !term.interactive {
            Outcome::Failed
        } else {
            Outcome::Success
        })
    }

    fn main_loop(&mut self) -> omk_core::Result<()> {
        let stdin = std::io::stdin();
        let mut lines = (!self.term.interactive).then(|| stdin.lock().lines());
        loop {
            let line = match (&mut self.editor, &mut lines) {
                (Some(ed), _) => match ed.readline("you> ") {
                    Ok(l) => l,
                    // Like a shell: Ctrl-C abandons the line, not the chat.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(()),
                    Err(e) => return Err(term_error(e)),
                },
                (None, Some(it)) => match it.next() {
                    Some(Ok(l)) => l,
                    None => return Ok(()),
                    Some(Err(e)) => return Err(super::io_err("read stdin", e)),
                },
                (None, None) => return Ok(()),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(ed) = &mut self.editor {
                let _ = ed.add_history_entry(line);
            }
            self.engine.remember_input(line)?;
            if line.starts_with('/') {
                if !self.command(line)? {
                    return Ok(());
                }
            } else {
                self.turn(line)?;
            }
        }
    }

    /// A slash command; false means leave.
    fn command(&mut self, line: &str) -> omk_core::Result<bool> {
        let (cmd, rest) = match line.split_once(char::is_whitespace) {
            Some((c, r)) => (c, r.trim()),
            None => (line, ""),
        };
        match cmd {
            "/exit" | "/quit" => return Ok(false),
            "/help" => crate::outln!("{HELP}"),
            "/new" => self.switch(None)?,
            "/resume" if rest.is_empty() => self.say_error("usage: /resume ID (see /sessions)"),
            "/resume" => self.switch(Some(rest.to_string()))?,
            "/sessions" => self.sessions()?,
            "/clear" => {
                if self.term.interactive {
                    crate::out!("\x1b[2J\x1b[H");
                    let _ = std::io::stdout().flush();
                }
            }
            "/team" => self.team(rest)?,
            other => self.say_error(&format!("unknown command {other}; /help lists them")),
        }
        Ok(true)
    }

    fn say_error(&self, msg: &str) {
        crate::errln!("{}", self.style.warn(&format!("omk: {msg}")));
    }

    fn info(&self, msg: &str) {
        // Without a terminal stdout carries only answers.
        if self.term.interactive {
            crate::outln!("{}", self.style.dim(msg));
        } else {
            crate::errln!("omk chat: {msg}");
        }
    }

    fn banner(&self, resuming: bool) -> omk_core::Result<()> {
        let meta = self.engine.meta();
        let how = match self.engine.resume() {
            Resume::New if resuming => "resumed (no earlier turns)".to_string(),
            Resume::New => "new".to_string(),
            Resume::Agent { events } => format!("resumed by the agent ({events} events replayed)"),
            Resume::Context { messages } => {
                format!("resumed ({messages} earlier messages go to the agent as context)")
            }
        };
        self.info(&format!(
            "session {} ({how}), approvals: {}, project {}",
            meta.id,
            self.engine.approval().as_str(),
            self.engine.work_dir().display()
        ));
        if resuming {
            self.show_history(&self.engine.conversation()?);
        }
        if self.term.interactive {
            self.info("/help for commands, Ctrl-D or /exit to leave");
        }
        Ok(())
    }

    /// The earlier turns: on stdout at a terminal, on stderr otherwise
    /// (stdout then carries only this run's answers).
    fn show_history(&self, conv: &[Message]) {
        for m in conv {
            let text = match m.role {
                Role::User => format!("{} {}", self.style.bold("you>"), m.text),
                Role::Assistant => m.text.clone(),
            };
            if self.term.interactive {
                crate::outln!("{text}");
            } else {
                crate::errln!("{text}");
            }
        }
    }

    fn load_history(&mut self) -> omk_core::Result<()> {
        let history = self.engine.history()?;
        if let Some(ed) = &mut self.editor {
            let _ = ed.clear_history();
            for h in history {
                let _ = ed.add_history_entry(h);
            }
        }
        Ok(())
    }

    fn turn(&mut self, input: &str) -> omk_core::Result<()> {
        self.interrupts.enter(STATE_TURN);
        let mut obs = TermObserver {
            editor: self.editor.as_mut(),
            style: &self.style,
            at_line_start: true,
            cancel: self.engine.canceller(),
        };
        let result = self.engine.send(input, &mut obs);
        let at_line_start = obs.at_line_start;
        self.interrupts.enter(STATE_IDLE);
        if !at_line_start {
            crate::outln!();
        }
        let _ = std::io::stdout().flush();
        match result {
            Ok(ChatTurn {
                status, agent_lost, ..
            }) => {
                match status {
                    TurnStatus::Finished => {}
                    TurnStatus::Cancelled => self.say_error("turn cancelled"),
                    TurnStatus::MaxStepsReached { steps } => {
                        self.say_error(&format!("the agent stopped after {steps} steps"))
                    }
                    TurnStatus::Stopped { reason } => {
                        self.failed_turns += 1;
                        self.say_error(&format!("the agent stopped the turn: {reason}"));
                    }
                    TurnStatus::Error { message, .. } => {
                        self.failed_turns += 1;
                        self.say_error(&format!("the turn failed: {message}"));
                    }
                }
                if agent_lost {
                    self.say_error("the agent stopped; the next message starts it again");
                }
                Ok(())
            }
            // The agent could not be started: say so and keep the chat.
            Err(e @ (Error::Agent(_) | Error::Timeout(_))) => {
                self.failed_turns += 1;
                self.say_error(&e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `/new` (None) or `/resume ID`. The new session opens before the
    /// current one closes, so a bad id loses nothing.
    fn switch(&mut self, id: Option<String>) -> omk_core::Result<()> {
        if let Some(id) = &id {
            if *id == self.engine.meta().id {
                self.info(&format!("already in session {id}"));
                return Ok(());
            }
            if let Err(e) = omk_core::paths::validate_name("session id", id) {
                self.say_error(&e.to_string());
                return Ok(());
            }
        }
        let resuming = id.is_some();
        let options = ChatOptions {
            session: id,
            approval: self.engine.approval(),
            theme: self.engine.meta().theme.clone(),
            agent: self.engine.agent().map(str::to_owned),
        };
        let engine = match self.omk.chat_open(options) {
            Ok(e) => e,
            Err(e) => {
                self.say_error(&e.to_string());
                return Ok(());
            }
        };
        self.interrupts.set_cancel(engine.canceller());
        let old = std::mem::replace(&mut self.engine, engine);
        if let Err(e) = old.close() {
            self.say_error(&format!("closing the previous session: {e}"));
        }
        self.load_history()?;
        self.banner(resuming)
    }

    fn sessions(&self) -> omk_core::Result<()> {
        let sessions = self.omk.chat_sessions(false)?;
        if sessions.is_empty() {
            self.info("no sessions for this project");
        }
        for s in sessions {
            let conv = self.omk.chat_conversation(&s.id).unwrap_or_default();
            let first = conv
                .iter()
                .find(|m| m.role == Role::User)
                .map(|m| one_line(&m.text, 50))
                .unwrap_or_default();
            let mark = if s.id == self.engine.meta().id {
                "*"
            } else {
                " "
            };
            crate::outln!(
                "{mark} {}  {}  {:>4} messages  {}",
                s.id,
                s.started_at.format("%Y-%m-%d %H:%M"),
                conv.len(),
                first
            );
        }
        Ok(())
    }

    /// `/team SPEC TASK`: run a team to its end in this process and report.
    fn team(&mut self, rest: &str) -> omk_core::Result<()> {
        let Some((spec, task)) = rest
            .split_once(char::is_whitespace)
            .map(|(s, t)| (s.trim(), t.trim()))
            .filter(|(_, t)| !t.is_empty())
        else {
            self.say_error("usage: /team SPEC TASK (e.g. /team 2:executor write the docs)");
            return Ok(());
        };
        let request = TeamRunRequest {
            spec: spec.to_string(),
            task: task.to_string(),
            ..Default::default()
        };
        self.interrupts.enter(STATE_TEAM);
        let result = self
            .omk
            .team_prepare(&request)
            .and_then(|doc| self.omk.team_supervise(&doc.name, None, true));
        self.interrupts.enter(STATE_IDLE);
        match result {
            Ok(doc) => {
                let done = doc.count(TaskStatus::Completed);
                let line = format!(
                    "team {}: {:?}, {done}/{} tasks completed, {} tokens",
                    doc.name,
                    doc.phase,
                    doc.tasks.len(),
                    doc.tokens
                );
                crate::outln!("{line}");
                for t in &doc.tasks {
                    crate::outln!(
                        "  {} {:?} {}",
                        t.id,
                        t.status,
                        t.summary
                            .as_deref()
                            .map(|s| one_line(s, 80))
                            .unwrap_or_default()
                    );
                }
                if let Some(r) = &doc.reason {
                    crate::outln!("  reason: {r}");
                }
                self.engine.record(
                    "team",
                    serde_json::json!({ "spec": spec, "task": task, "name": doc.name,
                        "phase": doc.phase, "tasks": doc.tasks.len(), "completed": done,
                        "tokens": doc.tokens }),
                )?;
                if doc.phase != Phase::Completed {
                    self.failed_turns += 1;
                }
            }
            Err(e) => {
                self.failed_turns += 1;
                self.say_error(&format!("team: {e}"));
                self.engine.record(
                    "team",
                    serde_json::json!({ "spec": spec, "task": task, "error": e.to_json() }),
                )?;
            }
        }
        Ok(())
    }
}

/// Prints a turn as it happens.
struct TermObserver<'e> {
    editor: Option<&'e mut DefaultEditor>,
    style: &'e Style,
    at_line_start: bool,
    cancel: omk_core::chat::engine::ChatCancel,
}

impl TermObserver<'_> {
    fn line(&mut self, s: &str) {
        if self.editor.is_none() {
            return; // no chatter between answers without a terminal
        }
        if !self.at_line_start {
            crate::outln!();
        }
        crate::outln!("{}", self.style.dim(s));
        self.at_line_start = true;
    }
}

impl ChatObserver for TermObserver<'_> {
    fn text(&mut self, delta: &str) {
        crate::out!("{delta}");
        let _ = std::io::stdout().flush();
        if !delta.is_empty() {
            self.at_line_start = delta.ends_with('\n');
        }
    }

    fn notice(&mut self, notice: &AgentNotice) {
        match notice {
            AgentNotice::Event(WireEvent::ToolCall { name, .. }) => {
                self.line(&format!("  [tool] {name}"))
            }
            AgentNotice::Event(WireEvent::ToolResult {
                is_error: true,
                message,
                ..
            }) => self.line(&format!("  [tool failed] {}", one_line(message, 100))),
            AgentNotice::Approval { request, decision } => {
                let verdict = if decision.approved() {
                    "approved"
                } else {
                    "rejected"
                };
                let line = format!(
                    "  [{verdict}] {}: {}",
                    request.action,
                    one_line(&decision.reason, 100)
                );
                if self.editor.is_some() {
                    self.line(&line);
                } else {
                    crate::errln!("omk chat:{line}");
                }
            }
            AgentNotice::ProtocolViolation { reason, .. } => {
                self.line(&format!("  [agent protocol error] {reason}"))
            }
            _ => {}
        }
    }

    fn approve(&mut self, request: &ApprovalRequest) -> ApprovalAnswer {
        let Some(editor) = self.editor.as_deref_mut() else {
            return ApprovalAnswer::Reject;
        };
        if !self.at_line_start {
            crate::outln!();
        }
        self.at_line_start = true;
        let detail: Vec<&str> = request
            .paths()
            .into_iter()
            .chain(request.commands())
            .collect();
        crate::outln!(
            "{}",
            self.style.warn(&format!(
                "The agent ({}) asks to {}: {}",
                request.sender,
                request.action,
                one_line(&request.description, 200)
            ))
        );
        if !detail.is_empty() {
            crate::outln!("  {}", detail.join("\n  "));
        }
        loop {
            match editor.readline("approve? [y]es / [n]o / [a]lways: ") {
                Ok(a) => match a.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => return ApprovalAnswer::Approve,
                    "n" | "no" => return ApprovalAnswer::Reject,
                    "a" | "always" => return ApprovalAnswer::Always,
                    _ => crate::outln!("answer y, n or always"),
                },
                // Ctrl-C at the question: reject and stop the turn.
                Err(ReadlineError::Interrupted) => {
                    self.cancel.cancel();
                    return ApprovalAnswer::Reject;
                }
                Err(_) => return ApprovalAnswer::Reject,
            }
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
