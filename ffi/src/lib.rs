//! libquaestor: the C ABI of quaestor, for workers written in C, C++, C# or anything that can
//! call C. `include/quaestor.h` is generated from this crate by cbindgen.
//!
//! A native worker starts a **reporter** (health and load on a port of its own), adds its
//! services, and counts requests through a **service-load handle** it gets once per service
//! (`quaestor_service_load_start_request` / `_end_request`: one atomic operation each, no
//! lookup), or starts a request on behalf of a user in an environment
//! (`quaestor_service_load_start_request_as`) that the reporter's `Cancel` can mark cancelled
//! (`quaestor_request_cancelled`). It can register itself in etcd with the reporter as its control endpoint, and ask
//! a balancer for the best worker of a service.
//!
//! Rules every function keeps (after rustls-ffi):
//! - Fallible functions return a [`quaestor_result`]; out-parameters are written only when it
//!   is `QUAESTOR_RESULT_OK`. `quaestor_last_error_message` gives the details of the calling
//!   thread's last failure.
//! - NULL where a value is needed is `QUAESTOR_RESULT_NULL_PARAMETER`; text that is not UTF-8
//!   is `QUAESTOR_RESULT_INVALID_UTF8`. `*_free(NULL)` does nothing.
//! - No panic crosses the boundary: it becomes `QUAESTOR_RESULT_PANIC`.
//! - Every object may be used from any thread at once, except that `*_free` must be the last
//!   call on it.

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]

mod discover;
mod error;
mod load;
mod reporter;
mod request;
mod runtime;

pub use discover::*;
pub use error::*;
pub use load::*;
pub use reporter::*;
pub use request::*;

use std::ffi::c_char;

/// The library's version (`MAJOR.MINOR.PATCH`), as a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn quaestor_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
