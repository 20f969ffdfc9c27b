//! Autopilot and Ralph entry points: thin typed wrappers over the
//! `autopilot.*` and `ralph.*` ops.

use std::ffi::c_char;

use serde_json::{json, Value};

use crate::boundary::{guard, json_object_arg, opt_str_arg, str_arg, Failure};
use crate::{omk_result, omk_t, run_op};

/// An op taking `{"id": id}`; `id` is required.
///
/// # Safety
/// As the entry points that call it.
unsafe fn id_op(
    func: &str,
    h: *mut omk_t,
    id: *const c_char,
    op: &str,
    out_json: *mut *mut c_char,
) -> omk_result {
    guard(func, || {
        // SAFETY: the caller passes NULL or a valid string.
        let id = unsafe { str_arg(func, "id", id) }?;
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe { run_op(func, h, out_json, op, || Ok(json!({ "id": id }))) }
    })
}

/// A run op: `task` plus the options object.
///
/// # Safety
/// As the entry points that call it.
unsafe fn run_mode(
    func: &str,
    h: *mut omk_t,
    task: *const c_char,
    options_json: *const c_char,
    op: &str,
    out_json: *mut *mut c_char,
) -> omk_result {
    guard(func, || {
        // SAFETY: the caller passes NULL or valid strings.
        let (task, options) = unsafe {
            (
                str_arg(func, "task", task)?,
                opt_str_arg(func, "options_json", options_json)?,
            )
        };
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe {
            run_op(func, h, out_json, op, || {
                let mut params = json_object_arg(func, "options_json", options)?;
                if params.contains_key("task") {
                    return Err(Failure::invalid(format!(
                        "{func}: argument `options_json` must not contain \"task\"; pass it as the `task` argument"
                    )));
                }
                params.insert("task".into(), task.into());
                Ok(Value::Object(params))
            })
        }
    })
}

/// Take `task` through Expansion, Planning, Execution, QA and Validation
/// (op `autopilot.run`). `options_json` is NULL or an object with `name`,
/// `max_agents` (1..=32, default 2), `approval`. Blocks until the run ends;
/// `*out_json` receives the final state: check its `"status"`
/// (`"complete"` only when the final gates passed; `"failed"` and
/// `"stopped"` are not errors).
///
/// Errors: `OMK_RESULT_INVALID_INPUT` for an empty task, bad options or a
/// project without gates; `CONFLICT` when the name is taken. Ownership,
/// NULL and UTF-8 rules as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; the strings are NULL or NUL-terminated;
/// `out_json` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_autopilot_run(
    h: *mut omk_t,
    task: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        run_mode(
            "omk_autopilot_run",
            h,
            task,
            options_json,
            "autopilot.run",
            out_json,
        )
    }
}

/// Every autopilot run, newest first (op `autopilot.list`): the API.md
/// `/api/autopilots` document `{"autopilots": [...]}`.
///
/// Ownership and errors as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `out_json` is NULL or points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_autopilot_list(
    h: *mut omk_t,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        crate::run_simple(
            "omk_autopilot_list",
            h,
            "autopilot.list",
            Value::Null,
            out_json,
        )
    }
}

/// One autopilot run's state (op `autopilot.status`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown id, `INVALID_INPUT` for a NULL or
/// malformed one. Ownership and thread safety as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_autopilot_status(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { id_op("omk_autopilot_status", h, id, "autopilot.status", out_json) }
}

/// Ask a running autopilot, in any process, to stop (op `autopilot.stop`);
/// its current agent turn or team is stopped at once. Errors: `NOT_FOUND`,
/// `INVALID_INPUT`, `CONFLICT` when the run already ended. Ownership and
/// thread safety as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_autopilot_stop(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { id_op("omk_autopilot_stop", h, id, "autopilot.stop", out_json) }
}

/// Agent turn, gates, failures fed back, repeat (op `ralph.run`).
/// `options_json` is NULL or an object with `max_iterations` (1..=1000,
/// default 10), `name`, `approval`. Blocks until the run ends; `*out_json`
/// receives the final state: check its `"status"` (`"complete"` when the
/// gates passed; `"exhausted"`, `"failed"`, `"stopped"` are not errors).
///
/// Errors: `OMK_RESULT_INVALID_INPUT` for an empty task, bad options or a
/// project without gates; `CONFLICT` when the name is taken. Ownership,
/// NULL and UTF-8 rules as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; the strings are NULL or NUL-terminated;
/// `out_json` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_ralph_run(
    h: *mut omk_t,
    task: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        run_mode(
            "omk_ralph_run",
            h,
            task,
            options_json,
            "ralph.run",
            out_json,
        )
    }
}

/// Every ralph run, newest first (op `ralph.list`): the API.md
/// `/api/ralphs` document `{"ralphs": [...]}`.
///
/// Ownership and errors as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `out_json` is NULL or points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_ralph_list(h: *mut omk_t, out_json: *mut *mut c_char) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { crate::run_simple("omk_ralph_list", h, "ralph.list", Value::Null, out_json) }
}

/// One ralph run's state (op `ralph.status`). Errors: `NOT_FOUND` for an
/// unknown id, `INVALID_INPUT` for a NULL or malformed one. Ownership and
/// thread safety as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_ralph_status(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { id_op("omk_ralph_status", h, id, "ralph.status", out_json) }
}

/// Ask a running ralph loop, in any process, to stop (op `ralph.stop`); its
/// current team is shut down at once. Errors: `NOT_FOUND`,
/// `INVALID_INPUT`, `CONFLICT` when the run already ended. Ownership and
/// thread safety as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_ralph_stop(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { id_op("omk_ralph_stop", h, id, "ralph.stop", out_json) }
}
