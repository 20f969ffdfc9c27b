//! Goal entry points: thin typed wrappers over the `goal.*` ops.

use std::ffi::c_char;

use serde_json::{json, Value};

use crate::boundary::{guard, json_object_arg, opt_str_arg, str_arg, Failure};
use crate::{omk_result, omk_t, run_op};

/// `id` or `latest` when NULL.
///
/// # Safety
/// As the entry points that call it.
unsafe fn goal_id_op(
    func: &str,
    h: *mut omk_t,
    id: *const c_char,
    op: &str,
    out_json: *mut *mut c_char,
) -> omk_result {
    guard(func, || {
        // SAFETY: the caller passes NULL or a valid string.
        let id = unsafe { opt_str_arg(func, "id", id) }?.unwrap_or("latest");
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe { run_op(func, h, out_json, op, || Ok(json!({ "id": id }))) }
    })
}

/// Create a goal and run its controller until it stops (op `goal.run`).
/// `options_json` is NULL or an object with `until_ready`, `budget_time`
/// (`"8h"`), `budget_tokens`, `budget_usd`, `max_agents`, `approval`,
/// `detach`, `agent`, `slice_execution` (work in a worktree of the goal's
/// own, the result on branch `omk/<goal id>`), `merge_policy`
/// (`"disabled"`, `"manual"`, `"gated"`) and `delivery_policy` (`"local"`).
/// On success `*out_json` receives the final goal state; check its
/// `"status"` (`"ready"` only with evidence): a goal that ends not ready is
/// not an error.
///
/// Errors: `OMK_RESULT_INVALID_INPUT` for an empty outcome or bad options,
/// `AGENT` when no agent executable is found. Ownership, NULL and UTF-8 rules
/// as `omk_call`. Thread safety: as `omk_call`; blocks for the whole run
/// unless `detach`.
///
/// # Safety
/// `h` is NULL or a live handle; the strings are NULL or NUL-terminated;
/// `out_json` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_run(
    h: *mut omk_t,
    outcome: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    const F: &str = "omk_goal_run";
    guard(F, || {
        // SAFETY: the caller passes NULL or valid strings.
        let (outcome, options) = unsafe {
            (
                str_arg(F, "outcome", outcome)?,
                opt_str_arg(F, "options_json", options_json)?,
            )
        };
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe {
            run_op(F, h, out_json, "goal.run", || {
                let mut params = json_object_arg(F, "options_json", options)?;
                if params.contains_key("outcome") {
                    return Err(Failure::invalid(format!(
                        "{F}: argument `options_json` must not contain \"outcome\"; pass it as the `outcome` argument"
                    )));
                }
                params.insert("outcome".into(), outcome.into());
                Ok(Value::Object(params))
            })
        }
    })
}

/// Every goal, newest first (op `goal.list`): `{"goals": [...],
/// "unreadable": [...]}`.
///
/// Ownership and errors as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `out_json` is NULL or points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_list(h: *mut omk_t, out_json: *mut *mut c_char) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { crate::run_simple("omk_goal_list", h, "goal.list", Value::Null, out_json) }
}

/// The goal's state (op `goal.show`, API.md GoalState).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_show(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_show", h, id, "goal.show", out_json) }
}

/// The goal's proof (op `goal.proof`, API.md GoalProof).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_proof(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_proof", h, id, "goal.proof", out_json) }
}

/// The goal's deduplicated timeline (op `goal.replay`, API.md GoalReplay).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_replay(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_replay", h, id, "goal.replay", out_json) }
}

/// The goal's budget report (op `goal.budget`, API.md GoalBudgetReport).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_budget(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_budget", h, id, "goal.budget", out_json) }
}

/// Stagnation detection (op `goal.diagnose`, API.md StagnationReport).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_diagnose(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_diagnose", h, id, "goal.diagnose", out_json) }
}

/// Write a recovery checkpoint and propose a plan (op `goal.recover`):
/// `{"checkpoint_id", "checkpoint_path", "diagnosis", "plan"}`.
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_recover(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_recover", h, id, "goal.recover", out_json) }
}

/// Pause the goal (op `goal.pause`); its running wave is stopped. Returns the state.
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_pause(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_pause", h, id, "goal.pause", out_json) }
}

/// Continue a paused, interrupted, out-of-budget or not-ready goal (op
/// `goal.resume`); blocks until the controller stops. Returns the state.
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_resume(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_resume", h, id, "goal.resume", out_json) }
}

/// Cancel the goal for good (op `goal.cancel`). Returns the state.
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_cancel(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_cancel", h, id, "goal.cancel", out_json) }
}

/// Run the goal's gates now and refresh its proof (op `goal.verify`).
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_verify(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_verify", h, id, "goal.verify", out_json) }
}

/// Run one controller step (op `goal.execute`). Returns the state.
///
/// `id` is a goal id, or NULL for the newest goal (`latest`). Errors:
/// `OMK_RESULT_NOT_FOUND` for an unknown goal, `INVALID_INPUT` for a
/// malformed id. Ownership, NULL and UTF-8 rules as `omk_call`. Thread
/// safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_execute(
    h: *mut omk_t,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    // SAFETY: forwarded from this function's contract.
    unsafe { goal_id_op("omk_goal_execute", h, id, "goal.execute", out_json) }
}

/// Raise a goal's budgets (op `goal.budget_add`). `options_json` is an
/// object with at least one of `time` (`"2h"`), `tokens`, `usd`. Returns the
/// budget report.
///
/// Errors: `OMK_RESULT_INVALID_INPUT` without an amount or with one <= 0,
/// `CONFLICT` for a ready or cancelled goal. Ownership, NULL and UTF-8 rules
/// as `omk_call`. Thread safety: as `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; the strings are NULL or NUL-terminated;
/// `out_json` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_budget_add(
    h: *mut omk_t,
    id: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> omk_result {
    const F: &str = "omk_goal_budget_add";
    guard(F, || {
        // SAFETY: the caller passes NULL or valid strings.
        let (id, options) = unsafe {
            (
                opt_str_arg(F, "id", id)?.unwrap_or("latest"),
                opt_str_arg(F, "options_json", options_json)?,
            )
        };
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe {
            run_op(F, h, out_json, "goal.budget_add", || {
                let mut params = json_object_arg(F, "options_json", options)?;
                params.insert("id".into(), id.into());
                Ok(Value::Object(params))
            })
        }
    })
}

/// Restore a recovery checkpoint (op `goal.rollback`): checkpoint number
/// `checkpoint`, or the latest when it is negative; `git` also resets the
/// project's work tree to the checkpoint's commit (refused with
/// `OMK_RESULT_CONFLICT` when it has uncommitted changes).
///
/// Errors: `OMK_RESULT_NOT_FOUND` for an unknown goal or checkpoint.
/// Ownership, NULL and UTF-8 rules as `omk_call`. Thread safety: as
/// `omk_call`.
///
/// # Safety
/// `h` is NULL or a live handle; `id` is NULL or NUL-terminated; `out_json`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn omk_goal_rollback(
    h: *mut omk_t,
    id: *const c_char,
    checkpoint: i64,
    git: bool,
    out_json: *mut *mut c_char,
) -> omk_result {
    const F: &str = "omk_goal_rollback";
    guard(F, || {
        // SAFETY: the caller passes NULL or a valid string.
        let id = unsafe { opt_str_arg(F, "id", id) }?.unwrap_or("latest");
        let checkpoint = if checkpoint < 0 {
            Value::Null
        } else {
            u32::try_from(checkpoint)
                .map_err(|_| {
                    Failure::invalid(format!("{F}: checkpoint {checkpoint} is too large"))
                })?
                .into()
        };
        // SAFETY: the caller passes NULL or a live handle and out pointer.
        unsafe {
            run_op(F, h, out_json, "goal.rollback", || {
                Ok(json!({ "id": id, "checkpoint": checkpoint, "git": git }))
            })
        }
    })
}
