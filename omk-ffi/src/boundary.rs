//! The boundary between C and Rust: the thread-local last error, the panic
//! guard every entry point runs its body in, and the checked conversions of
//! C arguments. Every `unsafe` operation of the crate lives in this module.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{Map, Value};

use crate::{omk_result, omk_t};

thread_local! {
    /// The message of the last failed call on this thread; empty when the
    /// last fallible call succeeded.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: the code returned to C and the message kept for
/// `omk_last_error_message`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: omk_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn invalid(message: String) -> Failure {
        Failure {
            code: omk_result::OMK_RESULT_INVALID_INPUT,
            message,
        }
    }
}

impl From<omk_core::Error> for Failure {
    fn from(e: omk_core::Error) -> Failure {
        Failure {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

/// Replace this thread's last error message. Interior NULs (impossible in
/// omk's own messages, possible in echoed input) are shown as `\0`.
fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // A thread that is being torn down has no TLS left: nothing to record.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = message);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        if !e.borrow().as_bytes().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
}

/// Pointer to this thread's last error message (never NULL).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Run the body of a fallible entry point: clear the last error, catch any
/// panic, record the message of a failure and return its code.
pub(crate) fn guard(func: &str, body: impl FnOnce() -> Result<(), Failure>) -> omk_result {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => omk_result::OMK_RESULT_OK,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.code
        }
        Err(payload) => {
            set_last_error(&format!(
                "{func}: panic inside omk (a bug, please report it): {}",
                panic_message(payload.as_ref())
            ));
            omk_result::OMK_RESULT_PANIC
        }
    }
}

/// The guard of entry points that return nothing (`omk_close`,
/// `omk_string_free`): a panic is caught and recorded as the last error, and
/// otherwise the last error message is left alone, so it may still be read
/// after freeing the output or closing the handle.
pub(crate) fn guard_void(func: &str, body: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        set_last_error(&format!(
            "{func}: panic inside omk (a bug, please report it): {}",
            panic_message(payload.as_ref())
        ));
    }
}

/// A required string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(
    func: &str,
    name: &str,
    ptr: *const c_char,
) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from this function's contract.
    unsafe { opt_str_arg(func, name, ptr) }?
        .ok_or_else(|| Failure::invalid(format!("{func}: argument `{name}` is NULL")))
}

/// An optional (nullable) string argument.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    func: &str,
    name: &str,
    ptr: *const c_char,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, and the caller promises a valid NUL-terminated
    // string that outlives 'a.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(Some).map_err(|e| {
        Failure::invalid(format!(
            "{func}: argument `{name}` is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// The handle behind `h`.
///
/// # Safety
/// `h` is NULL or a handle from `omk_open` that has not been closed and is
/// not closed before `'a` ends.
pub(crate) unsafe fn handle_arg<'a>(func: &str, h: *mut omk_t) -> Result<&'a omk_t, Failure> {
    // SAFETY: a live handle is a valid `omk_t` allocated by `omk_open`;
    // only shared references are made from it (it is `Sync`).
    unsafe { h.cast_const().as_ref() }
        .ok_or_else(|| Failure::invalid(format!("{func}: argument `h` (the handle) is NULL")))
}

/// Fail unless the out pointer `out` is set.
pub(crate) fn out_arg<T>(func: &str, name: &str, out: *mut *mut T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!(
            "{func}: argument `{name}` is NULL"
        )));
    }
    Ok(())
}

/// Store `value` in `*out`.
///
/// # Safety
/// `out` is not NULL (checked by [`out_arg`]) and points to writable storage
/// for one pointer.
pub(crate) unsafe fn write_out<T>(out: *mut *mut T, value: *mut T) {
    // SAFETY: forwarded from this function's contract.
    unsafe { out.write(value) };
}

/// Parse a JSON argument.
pub(crate) fn json_arg(func: &str, name: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("{func}: argument `{name}` is not valid JSON: {e}")))
}

/// A nullable JSON-object argument (`NULL` and `null` are the empty object).
pub(crate) fn json_object_arg(
    func: &str,
    name: &str,
    text: Option<&str>,
) -> Result<Map<String, Value>, Failure> {
    match text.map(|t| json_arg(func, name, t)).transpose()? {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(Failure::invalid(format!(
            "{func}: argument `{name}` must be a JSON object or NULL, not {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Encode a result document as the CLI's `--json` prints it and hand the
/// string to C (freed with `omk_string_free`).
pub(crate) fn json_out(value: &Value) -> Result<*mut c_char, Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::invalid(format!("cannot encode the result: {e}")))?;
    // serde_json escapes every control character, so this cannot fail.
    let text = CString::new(text)
        .map_err(|_| Failure::invalid("the result contains a NUL byte".into()))?;
    Ok(text.into_raw())
}

/// Give back a string from [`json_out`].
///
/// # Safety
/// `s` came from [`json_out`] (`CString::into_raw`) and is not used again.
pub(crate) unsafe fn free_string(s: *mut c_char) {
    // SAFETY: forwarded from this function's contract.
    drop(unsafe { CString::from_raw(s) });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: the pointer is this thread's live message.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_panic_becomes_a_result_and_a_message() {
        let r = guard("omk_test", || panic!("boom {}", 42));
        assert_eq!(r, omk_result::OMK_RESULT_PANIC);
        let msg = last_error();
        assert!(msg.contains("omk_test") && msg.contains("boom 42"), "{msg}");
        let r = guard("omk_test", || std::panic::panic_any(7u8));
        assert_eq!(r, omk_result::OMK_RESULT_PANIC);
        assert!(last_error().contains("(no message)"));
        guard_void("omk_test", || panic!("static"));
        assert!(last_error().contains("static"));
    }

    #[test]
    fn success_clears_the_message_and_failures_keep_their_code() {
        let r = guard("f", || {
            Err(omk_core::Error::NotFound("no team \"x\"".into()).into())
        });
        assert_eq!(r, omk_result::OMK_RESULT_NOT_FOUND);
        assert_eq!(last_error(), "no team \"x\"");
        assert_eq!(guard("f", || Ok(())), omk_result::OMK_RESULT_OK);
        assert_eq!(last_error(), "");
        let r = guard("f", || Err(Failure::invalid("nul\0inside".into())));
        assert_eq!(r, omk_result::OMK_RESULT_INVALID_INPUT);
        assert_eq!(last_error(), "nul\\0inside");
    }

    #[test]
    fn json_object_arguments() {
        assert!(json_object_arg("f", "o", None).unwrap().is_empty());
        assert!(json_object_arg("f", "o", Some("null")).unwrap().is_empty());
        assert_eq!(
            json_object_arg("f", "o", Some(r#"{"a":1}"#)).unwrap()["a"],
            1
        );
        let e = json_object_arg("f", "o", Some("[1]")).unwrap_err();
        assert!(e.message.contains("not an array"), "{}", e.message);
        let e = json_object_arg("f", "o", Some("{")).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
