//! Cancellable requests: a request started on behalf of a user in an environment, which a
//! `Quaestor.ProcessAdministration.ProcessAdministrationGrpc/Cancel` for that same user name
//! and environment (matched exactly) marks as cancelled.

use quaestor_core::reporter::admin::CancellableRequest;

use crate::error::{boundary, boundary_or, object, out_param, quaestor_result, text_arg};
use crate::load::quaestor_service_load;

/// One running request of a service, started with `quaestor_service_load_start_request_as`:
/// it counts as in flight until `quaestor_request_end`, and the reporter's `Cancel` for its
/// user name and environment marks it cancelled (`quaestor_request_cancelled`). It stays valid
/// after its service-load handle and its reporter are freed.
pub struct quaestor_request {
    request: CancellableRequest,
}

/// Starts a request of this service on behalf of `user_name` in `environment` (UTF-8, NUL
/// terminated; "" is a valid value) and writes its handle to `*out_request`. It counts like
/// `quaestor_service_load_start_request` and, until `quaestor_request_end`, a `Cancel` of the
/// same user name and environment on the reporter sets it cancelled. Costs a lock and an
/// allocation more than a plain start.
///
/// NULL `load`, text or `out_request`: NULL_PARAMETER; text not UTF-8: INVALID_UTF8.
///
/// # Safety
/// `load` is NULL or a live handle; the texts are NULL or NUL-terminated; `out_request` is
/// NULL or valid for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_start_request_as(
    load: *const quaestor_service_load,
    user_name: *const std::ffi::c_char,
    environment: *const std::ffi::c_char,
    out_request: *mut *mut quaestor_request,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { object(load, "load") }?;
        // SAFETY: as the caller promised.
        let user_name = unsafe { text_arg(user_name, "user_name") }?;
        // SAFETY: as the caller promised.
        let environment = unsafe { text_arg(environment, "environment") }?;
        out_param(out_request, "out_request")?;
        let request = Box::new(quaestor_request {
            request: load.load.start_request_as(user_name, environment),
        });
        // SAFETY: checked not NULL; valid by the caller's contract.
        unsafe { *out_request = Box::into_raw(request) };
        Ok(())
    })
}

/// Whether a `Cancel` for this request's user name and environment arrived since it started
/// (false for NULL). Cheap: one atomic read; poll it between steps of the work.
///
/// # Safety
/// `request` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_request_cancelled(request: *const quaestor_request) -> bool {
    // SAFETY: as the caller promised.
    match unsafe { request.as_ref() } {
        Some(request) => boundary_or(false, || request.request.is_cancelled()),
        None => false,
    }
}

/// Ends the request (one request fewer in flight, no longer cancellable) and frees its
/// handle. NULL: nothing.
///
/// # Safety
/// `request` is NULL or a live handle, not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_request_end(request: *mut quaestor_request) {
    if request.is_null() {
        return;
    }
    boundary_or((), || {
        // SAFETY: made by `quaestor_service_load_start_request_as`, ended once.
        drop(unsafe { Box::from_raw(request) });
    });
}
