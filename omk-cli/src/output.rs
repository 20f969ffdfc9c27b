//! Printing results and errors, and mapping them to exit codes.
//!
//! A closed stdout (`omk team list | head -1`) is not an error and not a
//! signal: omk keeps SIGPIPE ignored (Rust's default), so a write to a pipe
//! whose reader left fails with `EPIPE`. [`out`] then stops printing and the
//! command carries on to its normal end and exit code; a team run that
//! prints progress into a closed pipe still finishes its team.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::Outcome;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Stdout text collected by [`buffered`] on this thread.
    static BUFFER: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Write formatted text on stdout (what `print!` would), never panicking:
/// after a broken pipe, output is dropped quietly; another write error is
/// reported once on stderr. Inside [`buffered`], collected instead.
pub fn out(args: std::fmt::Arguments<'_>) {
    let collected = BUFFER.with_borrow_mut(|b| {
        b.as_mut()
            .map(|text| std::fmt::Write::write_fmt(text, args))
            .is_some()
    });
    if !collected {
        write_to(&STDOUT_CLOSED, &mut std::io::stdout().lock(), args);
    }
}

/// Run `f`, writing what it prints on stdout with one `write(2)` at the
/// end instead of one per line: for reports printed at once (progress
/// lines are printed as they come).
pub fn buffered<R>(f: impl FnOnce() -> R) -> R {
    let outer = BUFFER.with_borrow_mut(|b| b.replace(String::new()));
    let r = f();
    let text = BUFFER.with_borrow_mut(|b| std::mem::replace(b, outer));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        out(format_args!("{text}"));
    }
    r
}

/// Write formatted text on stderr (what `eprint!` would), never panicking.
pub fn err(args: std::fmt::Arguments<'_>) {
    write_to(&STDERR_CLOSED, &mut std::io::stderr().lock(), args);
}

fn write_to(closed: &AtomicBool, w: &mut dyn Write, args: std::fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = w.write_fmt(args).and_then(|()| w.flush()) {
        closed.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe && !std::ptr::eq(closed, &STDERR_CLOSED) {
            err(format_args!("omk: cannot write output: {e}\n"));
        }
    }
}

/// `println!` on stdout through [`out`].
#[macro_export]
macro_rules! outln {
    () => { $crate::output::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` on stdout through [`out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::out(format_args!($($arg)*)) };
}

/// `eprintln!` on stderr through [`err`].
#[macro_export]
macro_rules! errln {
    () => { $crate::output::err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` on stderr through [`err`].
#[macro_export]
macro_rules! errout {
    ($($arg:tt)*) => { $crate::output::err(format_args!($($arg)*)) };
}

/// Print a JSON document on stdout.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => crate::outln!("{s}"),
        Err(e) => crate::errln!("omk: cannot encode output: {e}"),
    }
}

/// Print a serializable document as pretty JSON on stdout, streamed
/// through a buffer (no intermediate `Value`: replays can be large).
pub fn print_doc<T: serde::Serialize>(doc: &T) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, doc)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            crate::errln!("omk: cannot write output: {e}");
        }
    }
}

/// Exit 0 on success, 1 for a run that finished but failed, and the error
/// code's exit status otherwise (DESIGN.md §3). With `--json` the error is
/// printed on stdout as `{"error": {"code", "message"}}`.
pub fn finish(outcome: omk_core::Result<Outcome>, json: bool) -> ExitCode {
    match outcome {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            if json {
                print_json(&serde_json::json!({ "error": e.to_json() }));
            }
            crate::errln!("omk: error: {e}");
            let code = e.code().exit_code();
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
