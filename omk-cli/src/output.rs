//! Printing results and errors, and mapping them to exit codes.

use std::process::ExitCode;

use serde_json::Value;

use crate::Outcome;

/// Print a JSON document on stdout.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("omk: cannot encode output: {e}"),
    }
}

/// Print a serializable document as pretty JSON on stdout, streamed
/// through a buffer (no intermediate `Value`: replays can be large).
pub fn print_doc<T: serde::Serialize>(doc: &T) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, doc)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("omk: cannot write output: {e}");
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
            eprintln!("omk: error: {e}");
            let code = e.code().exit_code();
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
