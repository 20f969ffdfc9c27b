//! Python callables as host approvers (`Omk(approval=callable)`).
//!
//! The callable gets the request as a dict (`id`, `sender`, `action`,
//! `description`, `paths`, `commands`, `agent_id`) and answers with a bool,
//! or a `(bool, reason)` tuple. omk calls it from its own threads (taking
//! the GIL for the call), so it may block while a person decides; an
//! exception or any other answer rejects the request, saying why.

use std::sync::Arc;

use omk_core::agent::{ApprovalRequest, Approver, Decision};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::to_py;

/// Wrap a Python callable.
pub fn from_callable(callable: Py<PyAny>) -> Approver {
    Arc::new(move |req: &ApprovalRequest| Python::attach(|py| ask(py, &callable, req)))
}

fn ask(py: Python<'_>, callable: &Py<PyAny>, req: &ApprovalRequest) -> Decision {
    let answer = to_py(py, &req.summary()).and_then(|arg| callable.call1(py, (arg,)));
    match answer {
        Ok(a) => interpret(a.bind(py)),
        Err(e) => Decision::reject(format!("the Python approver raised {e}")),
    }
}

fn interpret(answer: &Bound<'_, PyAny>) -> Decision {
    let (approve, reason) = match answer.cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => match (
            t.get_item(0).and_then(|a| a.is_truthy()),
            t.get_item(1).and_then(|r| r.extract::<String>()),
        ) {
            (Ok(a), Ok(r)) => (a, r),
            _ => {
                return Decision::reject(
                    "the Python approver returned a tuple that is not (bool, str)",
                )
            }
        },
        _ => match answer.extract::<bool>() {
            Ok(a) => (a, String::new()),
            Err(_) => {
                return Decision::reject(
                    "the Python approver must return a bool or a (bool, reason) tuple",
                )
            }
        },
    };
    match (approve, reason.is_empty()) {
        (true, true) => Decision::approve("approved by the Python approver"),
        (false, true) => Decision::reject("rejected by the Python approver"),
        (true, false) => Decision::approve(reason),
        (false, false) => Decision::reject(reason),
    }
}
