//! The exception classes of `omk` (one per stable error code of DESIGN.md
//! §3, all under `OmkError`), and the boundary that turns omk errors and
//! Rust panics into them. No panic ever crosses into Python: every call
//! into omk-core goes through [`guard`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use omk_core::ErrorCode;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyType;

create_exception!(
    omk,
    OmkError,
    PyException,
    "Base class of every error omk raises. `code` is the stable error code."
);
create_exception!(
    omk,
    InvalidInputError,
    OmkError,
    "A bad spec, name, option or JSON value (code \"invalid_input\")."
);
create_exception!(
    omk,
    NotFoundError,
    OmkError,
    "No such team, gate, pool or operation (code \"not_found\")."
);
create_exception!(
    omk,
    ConflictError,
    OmkError,
    "Breaker open, pool full, name taken, already running, lock held (code \"conflict\")."
);
create_exception!(
    omk,
    CorruptStateError,
    OmkError,
    "A state file that cannot be read or was written by a newer omk (code \"corrupt_state\")."
);
create_exception!(
    omk,
    AgentError,
    OmkError,
    "The agent is missing, crashed or broke its protocol (code \"agent\")."
);
create_exception!(
    omk,
    OmkTimeoutError,
    OmkError,
    "A deadline passed (code \"timeout\")."
);
create_exception!(
    omk,
    CancelledError,
    OmkError,
    "Stopped by a shutdown request or Ctrl-C (code \"cancelled\"). `team` names the team, `goal` the goal, `run` the autopilot or ralph run."
);
create_exception!(
    omk,
    OmkIOError,
    OmkError,
    "A filesystem or process error (code \"io\")."
);

/// The `code` of a bare `OmkError` raised for a bug inside omk (a panic).
pub const PANIC_CODE: &str = "panic";

/// Register the classes on the module and give each its `code`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<OmkError>();
    base.setattr("code", "error")?;
    m.add("OmkError", base)?;
    for code in ErrorCode::ALL {
        let ty = class_of(py, code);
        ty.setattr("code", code.as_str())?;
        m.add(ty.name()?, ty)?;
    }
    py.get_type::<CancelledError>().setattr("team", py.None())?;
    py.get_type::<CancelledError>().setattr("goal", py.None())?;
    py.get_type::<CancelledError>().setattr("run", py.None())?;
    Ok(())
}

/// The exception class of an error code.
pub fn class_of(py: Python<'_>, code: ErrorCode) -> Bound<'_, PyType> {
    match code {
        ErrorCode::InvalidInput => py.get_type::<InvalidInputError>(),
        ErrorCode::NotFound => py.get_type::<NotFoundError>(),
        ErrorCode::Conflict => py.get_type::<ConflictError>(),
        ErrorCode::CorruptState => py.get_type::<CorruptStateError>(),
        ErrorCode::Agent => py.get_type::<AgentError>(),
        ErrorCode::Timeout => py.get_type::<OmkTimeoutError>(),
        ErrorCode::Cancelled => py.get_type::<CancelledError>(),
        ErrorCode::Io => py.get_type::<OmkIOError>(),
    }
}

/// Why a call into omk-core failed.
#[derive(Debug)]
pub enum Failure {
    /// An omk error, raised as the class of its code.
    Core(omk_core::Error),
    /// A panic inside omk (a bug), raised as `OmkError` with code "panic".
    Panic(String),
}

impl From<omk_core::Error> for Failure {
    fn from(e: omk_core::Error) -> Failure {
        Failure::Core(e)
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        match f {
            Failure::Core(e) => core_error(&e),
            Failure::Panic(message) => Python::attach(|py| {
                let err = OmkError::new_err(message);
                // Best effort: the class attribute says "error" otherwise.
                let _ = err.value(py).setattr("code", PANIC_CODE);
                err
            }),
        }
    }
}

/// The Python exception for an omk error: the class of its code, with the
/// error's message.
pub fn core_error(e: &omk_core::Error) -> PyErr {
    let msg = e.to_string();
    match e.code() {
        ErrorCode::InvalidInput => InvalidInputError::new_err(msg),
        ErrorCode::NotFound => NotFoundError::new_err(msg),
        ErrorCode::Conflict => ConflictError::new_err(msg),
        ErrorCode::CorruptState => CorruptStateError::new_err(msg),
        ErrorCode::Agent => AgentError::new_err(msg),
        ErrorCode::Timeout => OmkTimeoutError::new_err(msg),
        ErrorCode::Cancelled => CancelledError::new_err(msg),
        ErrorCode::Io => OmkIOError::new_err(msg),
    }
}

/// Run `body`, turning a panic into [`Failure::Panic`] naming `what`.
pub fn guard<T>(
    what: &str,
    body: impl FnOnce() -> Result<T, omk_core::Error>,
) -> Result<T, Failure> {
    catch(what, || body().map_err(Failure::Core))
}

/// [`guard`] for a body that already returns a [`Failure`].
pub fn catch<T>(what: &str, body: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => Err(Failure::Panic(format!(
            "{what}: panic inside omk (a bug, please report it): {}",
            panic_message(payload.as_ref())
        ))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_failures_naming_the_call() {
        let r: Result<(), Failure> = guard("metrics", || panic!("boom"));
        match r {
            Err(Failure::Panic(m)) => {
                assert!(m.starts_with("metrics: panic inside omk"), "{m}");
                assert!(m.ends_with("boom"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = guard("x", || {
            Err::<(), _>(omk_core::Error::NotFound("nope".into()))
        });
        assert!(matches!(
            r,
            Err(Failure::Core(omk_core::Error::NotFound(_)))
        ));
    }
}
