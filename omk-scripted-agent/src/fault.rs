//! Process-level faults, from `OMK_SCRIPTED_FAULT`, for the fault matrix of
//! omk's tests: agents that misbehave as processes, not within a turn.
//!
//! | value | behaviour |
//! |---|---|
//! | `exit-at-once` | exit with code 3 before reading anything |
//! | `exit-after-line` | write one event line, then exit with code 3 without reading |
//! | `die-after-initialize` | answer `initialize`, then exit with code 3 |
//! | `garbage:BYTES` | at the first `prompt`, write BYTES bytes of non-JSON without a newline, then exit with code 3 |
//! | `huge-line:BYTES` | at the first `prompt`, write one line of BYTES bytes (a JSON string that never closes, then `\n`), then hang until killed |
//! | `close-stdout` | answer `initialize`, close stdout, then keep running (ignoring stdin EOF) until killed |
//! | `ignore-term` | ignore SIGTERM and stdin EOF: only SIGKILL ends the process; turns run as scripted (combine with `[stall]` for one that never answers) |

use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ExitAtOnce,
    ExitAfterLine,
    DieAfterInitialize,
    Garbage(u64),
    HugeLine(u64),
    CloseStdout,
    IgnoreTerm,
}

impl Fault {
    /// Parse `OMK_SCRIPTED_FAULT`; an unknown value is an error.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let bytes = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("OMK_SCRIPTED_FAULT={s:?}: {v:?} is not a byte count"))
        };
        Ok(match s.split_once(':') {
            None => match s {
                "exit-at-once" => Fault::ExitAtOnce,
                "exit-after-line" => Fault::ExitAfterLine,
                "die-after-initialize" => Fault::DieAfterInitialize,
                "close-stdout" => Fault::CloseStdout,
                "ignore-term" => Fault::IgnoreTerm,
                _ => return Err(format!("unknown OMK_SCRIPTED_FAULT={s:?}")),
            },
            Some(("garbage", n)) => Fault::Garbage(bytes(n)?),
            Some(("huge-line", n)) => Fault::HugeLine(bytes(n)?),
            Some(_) => return Err(format!("unknown OMK_SCRIPTED_FAULT={s:?}")),
        })
    }

    /// Act before the first line is read; returns only when serving goes on.
    pub fn at_start(self) {
        match self {
            Fault::ExitAtOnce => std::process::exit(3),
            Fault::ExitAfterLine => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"type\":\"TurnBegin\",\"payload\":{\"user_input\":\"\"}}}\n",
                );
                let _ = out.flush();
                std::process::exit(3)
            }
            Fault::IgnoreTerm => {
                // SAFETY: sets a disposition; no handler code runs.
                unsafe {
                    let _ = nix::sys::signal::signal(
                        nix::sys::signal::Signal::SIGTERM,
                        nix::sys::signal::SigHandler::SigIgn,
                    );
                }
            }
            _ => {}
        }
    }

    /// Act after `initialize` was answered.
    pub fn after_initialize(self) {
        match self {
            Fault::DieAfterInitialize => std::process::exit(3),
            Fault::CloseStdout => {
                // Put /dev/null in its place: the pipe to omk closes, and fd 1
                // is not reused by the next file the process opens.
                if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    let _ = nix::unistd::dup2_stdout(&null);
                }
            }
            _ => {}
        }
    }

    /// Act when a prompt arrives (before the turn starts).
    pub fn at_prompt(self, out: &mut dyn Write) {
        match self {
            Fault::Garbage(n) => {
                write_repeated(out, b"garbage ", n);
                let _ = out.flush();
                std::process::exit(3)
            }
            Fault::HugeLine(n) => {
                let head = b"{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"type\":\"ContentPart\",\"payload\":{\"type\":\"text\",\"text\":\"";
                let _ = out.write_all(head);
                write_repeated(out, b"x", n.saturating_sub(head.len() as u64 + 1));
                let _ = out.write_all(b"\n");
                let _ = out.flush();
                hang()
            }
            _ => {}
        }
    }

    /// Whether stdin EOF is ignored (the process keeps running).
    pub fn ignores_eof(self) -> bool {
        matches!(self, Fault::CloseStdout | Fault::IgnoreTerm)
    }
}

/// Write `n` bytes made of `unit` repeated, in large chunks.
fn write_repeated(out: &mut dyn Write, unit: &[u8], n: u64) {
    let chunk: Vec<u8> = unit.iter().copied().cycle().take(1 << 20).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        if out.write_all(&chunk[..k]).is_err() {
            return;
        }
        left -= k as u64;
    }
}

/// Sleep until killed.
pub fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
