//! The one error type of omk, with stable codes shared by every surface
//! (CLI exit codes, C result codes, Python exception classes, JSON errors).

use std::path::{Path, PathBuf};

/// Result alias used across omk.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure omk reports. Each variant maps to one stable [`ErrorCode`].
///
/// Messages say what was wrong and, where it helps, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad spec, name, option, JSON or config.
    #[error("{0}")]
    InvalidInput(String),
    /// No such team, goal, gate, pool, session or checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// Breaker open, pool full, already running, lock held.
    #[error("{0}")]
    Conflict(String),
    /// A state file that cannot be read, or was written by a newer omk.
    /// The file is left untouched.
    #[error("corrupt state file {}: {message}", path.display())]
    CorruptState { path: PathBuf, message: String },
    /// Agent missing, crashed, or violated its protocol.
    #[error("{0}")]
    Agent(String),
    /// A deadline passed.
    #[error("{0}")]
    Timeout(String),
    /// Stopped by shutdown or Ctrl-C.
    #[error("{0}")]
    Cancelled(String),
    /// Filesystem or process error, with what omk was doing at the time.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Stable error codes. Their string forms and numeric values never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    InvalidInput = 1,
    NotFound = 2,
    Conflict = 3,
    CorruptState = 4,
    Agent = 5,
    Timeout = 6,
    Cancelled = 7,
    Io = 8,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::CorruptState,
        ErrorCode::Agent,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Io,
    ];

    /// The snake_case name used in JSON errors and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CorruptState => "corrupt_state",
            ErrorCode::Agent => "agent",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Io => "io",
        }
    }

    /// The process exit code the CLI uses for this error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidInput => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Conflict => 4,
            ErrorCode::CorruptState => 5,
            ErrorCode::Agent => 6,
            ErrorCode::Timeout => 7,
            ErrorCode::Cancelled => 130,
            ErrorCode::Io => 8,
        }
    }

    /// Parse the snake_case name back.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidInput(_) => ErrorCode::InvalidInput,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::CorruptState { .. } => ErrorCode::CorruptState,
            Error::Agent(_) => ErrorCode::Agent,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Cancelled(_) => ErrorCode::Cancelled,
            Error::Io { .. } => ErrorCode::Io,
        }
    }

    /// `{"code": "...", "message": "..."}`: the JSON form every consumer emits.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code().as_str(), "message": self.to_string() })
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidInput(msg.into())
    }

    pub(crate) fn corrupt(path: &Path, message: impl Into<String>) -> Error {
        Error::CorruptState {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Wrap an I/O error with what omk was doing and on which path.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attach context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(format!("{what} {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut exits = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            assert!(exits.insert(code.exit_code()));
            assert_ne!(code.exit_code(), 0);
            assert_ne!(code.exit_code(), 1, "1 is reserved for 'ran but failed'");
        }
    }

    #[test]
    fn json_form_names_the_code() {
        let e = Error::corrupt(Path::new("/x/team.json"), "bad");
        assert_eq!(e.to_json()["code"], "corrupt_state");
        assert!(e.to_string().contains("/x/team.json"));
    }
}
