//! Result codes, the calling thread's last error, the panic boundary, and reading C arguments.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use quaestor_core::error::{Error, ErrorKind};

/// What a fallible function did. Codes other than OK are in libquaestor's own range
/// (7400-7499), so they are not mistaken for errno values or another library's codes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum quaestor_result {
    QUAESTOR_RESULT_OK = 0,
    /// A pointer that must not be NULL was NULL.
    QUAESTOR_RESULT_NULL_PARAMETER = 7401,
    /// A text argument was not UTF-8.
    QUAESTOR_RESULT_INVALID_UTF8 = 7402,
    /// An argument out of range or malformed (an empty service name, a bad address).
    QUAESTOR_RESULT_INVALID_ARGUMENT = 7403,
    /// No such service (not added to the reporter).
    QUAESTOR_RESULT_NOT_FOUND = 7404,
    /// The service was added before.
    QUAESTOR_RESULT_ALREADY_EXISTS = 7405,
    /// The port is in use, or another operating-system failure.
    QUAESTOR_RESULT_IO = 7406,
    /// TLS files missing or unusable.
    QUAESTOR_RESULT_TLS = 7407,
    /// The server (balancer, etcd) could not be reached.
    QUAESTOR_RESULT_UNAVAILABLE = 7408,
    /// The server did not answer in time.
    QUAESTOR_RESULT_TIMEOUT = 7409,
    /// The server answered with an error.
    QUAESTOR_RESULT_REMOTE_ERROR = 7410,
    /// The buffer given is too small for the text.
    QUAESTOR_RESULT_INSUFFICIENT_SIZE = 7411,
    /// The object is in the wrong state (e.g. registered twice, or made before a fork).
    QUAESTOR_RESULT_INVALID_STATE = 7412,
    /// The server refused the caller (etcd: authentication failed, permission denied).
    QUAESTOR_RESULT_REFUSED = 7413,
    /// A bug in libquaestor (a panic, caught at the boundary).
    QUAESTOR_RESULT_PANIC = 7499,
}

use quaestor_result::*;

impl quaestor_result {
    fn text(code: u32) -> &'static str {
        match code {
            0 => "ok",
            7401 => "a required pointer was NULL",
            7402 => "text was not valid UTF-8",
            7403 => "invalid argument",
            7404 => "not found",
            7405 => "already exists",
            7406 => "input/output error (e.g. port in use)",
            7407 => "TLS certificate or key unusable",
            7408 => "server unavailable",
            7409 => "timed out",
            7410 => "the server answered with an error",
            7411 => "buffer too small",
            7412 => "invalid state",
            7413 => "refused by the server",
            7499 => "internal error (panic) in libquaestor",
            _ => "unknown result code",
        }
    }
}

/// The one table from quaestor's error kinds to result codes (Python's is in the Python
/// module's `errors.rs`; `bindings/python/tests/test_error_mapping.py` checks they agree).
pub(crate) fn code_of(kind: ErrorKind) -> quaestor_result {
    match kind {
        ErrorKind::InvalidArgument => QUAESTOR_RESULT_INVALID_ARGUMENT,
        ErrorKind::NotFound => QUAESTOR_RESULT_NOT_FOUND,
        ErrorKind::AlreadyExists => QUAESTOR_RESULT_ALREADY_EXISTS,
        ErrorKind::Io => QUAESTOR_RESULT_IO,
        ErrorKind::Tls => QUAESTOR_RESULT_TLS,
        ErrorKind::Unavailable => QUAESTOR_RESULT_UNAVAILABLE,
        ErrorKind::Timeout => QUAESTOR_RESULT_TIMEOUT,
        ErrorKind::Remote => QUAESTOR_RESULT_REMOTE_ERROR,
        ErrorKind::Refused => QUAESTOR_RESULT_REFUSED,
        ErrorKind::InvalidState => QUAESTOR_RESULT_INVALID_STATE,
        ErrorKind::Internal => QUAESTOR_RESULT_PANIC,
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::new(code_of(error.kind()), error.message())
    }
}

/// A failure: its code and what happened.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: quaestor_result,
    pub message: String,
}

impl Failure {
    pub fn new(code: quaestor_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs the body of a fallible function: its failure becomes a code (and the thread's last
/// error), a panic becomes `QUAESTOR_RESULT_PANIC`.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Failure>) -> quaestor_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => QUAESTOR_RESULT_OK,
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(format!("panic in libquaestor: {what}"));
            QUAESTOR_RESULT_PANIC
        }
    }
}

/// Runs the body of a function that cannot report failure; a panic gives `fallback`.
pub(crate) fn boundary_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The text behind `p`, a NUL-terminated UTF-8 string; `what` names the argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn text_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::new(
            QUAESTOR_RESULT_NULL_PARAMETER,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: non-NULL, and NUL-terminated by the caller's contract.
    let text = unsafe { CStr::from_ptr(p) };
    text.to_str().map_err(|e| {
        Failure::new(
            QUAESTOR_RESULT_INVALID_UTF8,
            format!("{what} is not UTF-8: {e}"),
        )
    })
}

/// Like [`text_arg`], but NULL is `None`.
///
/// # Safety
/// As [`text_arg`].
pub(crate) unsafe fn optional_text_arg<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: as the caller promised.
        unsafe { text_arg(p, what) }.map(Some)
    }
}

/// The object behind `p`, or NULL_PARAMETER naming it.
///
/// # Safety
/// `p` is NULL or points to a live `T`.
pub(crate) unsafe fn object<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: as the caller promised.
    unsafe { p.as_ref() }
        .ok_or_else(|| Failure::new(QUAESTOR_RESULT_NULL_PARAMETER, format!("{what} is NULL")))
}

/// Checks that an out-parameter is not NULL (before any work is done).
pub(crate) fn out_param<T>(p: *mut T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(Failure::new(
            QUAESTOR_RESULT_NULL_PARAMETER,
            format!("{what} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// Copies `text` and a NUL into `buf` (`len` bytes) and its length (without the NUL) into
/// `*written`; INSUFFICIENT_SIZE, writing nothing, if it does not fit.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `written` is NULL or valid.
unsafe fn copy_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> Result<(), Failure> {
    out_param(buf, "buf")?;
    out_param(written, "written")?;
    if text.len() >= len {
        return Err(Failure::new(
            QUAESTOR_RESULT_INSUFFICIENT_SIZE,
            format!("{} bytes needed, {len} given", text.len() + 1),
        ));
    }
    // SAFETY: `buf` holds `len` > `text.len()` bytes; `written` is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
        *written = text.len();
    }
    Ok(())
}

/// The text of result `code` (any number: unknown ones have a text too), NUL-terminated, into
/// `buf` of `len` bytes; its length without the NUL into `*written`. Neither this nor
/// `quaestor_last_error_message` changes the thread's last error.
///
/// # Safety
/// `buf` is valid for `len` bytes and `written` for one `size_t` (or they are NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_result_message(
    code: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> quaestor_result {
    // SAFETY: as the caller promised.
    text_out(|| unsafe { copy_text(quaestor_result::text(code), buf, len, written) })
}

/// Runs a text-writing call without touching the thread's last error (which the caller may
/// be about to read).
fn text_out(body: impl FnOnce() -> Result<(), Failure>) -> quaestor_result {
    catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(()) => QUAESTOR_RESULT_OK,
        Err(failure) => failure.code,
    }))
    .unwrap_or(QUAESTOR_RESULT_PANIC)
}

/// What the calling thread's last failing call said (empty if none failed yet), as
/// [`quaestor_result_message`] writes text.
///
/// # Safety
/// As [`quaestor_result_message`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_last_error_message(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> quaestor_result {
    let message = LAST_ERROR.with(|last| last.borrow().clone());
    // SAFETY: as the caller promised.
    text_out(|| unsafe { copy_text(&message, buf, len, written) })
}
