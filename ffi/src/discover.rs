//! Asking a balancer which workers serve a service.

use std::ffi::{CString, c_char};
use std::time::Duration;

use quaestor_core::client::{ClientError, Target};

use crate::error::{Failure, boundary, optional_text_arg, out_param, quaestor_result, text_arg};
use crate::runtime::block_on;

use quaestor_result::*;

/// Locations a balancer answered with: `quaestor_location_list_len` of them, each with a
/// host and a port. Free with `quaestor_location_list_free`.
pub struct quaestor_location_list {
    items: Vec<(CString, u16)>,
}

fn client_failure(error: ClientError) -> Failure {
    let code = match &error {
        ClientError::InvalidAddress { .. } => QUAESTOR_RESULT_INVALID_ARGUMENT,
        ClientError::Tls(_) => QUAESTOR_RESULT_TLS,
        ClientError::Timeout { .. } => QUAESTOR_RESULT_TIMEOUT,
        e if e.is_unreachable() => QUAESTOR_RESULT_UNAVAILABLE,
        e if e.code() == Some(tonic::Code::InvalidArgument) => QUAESTOR_RESULT_INVALID_ARGUMENT,
        _ => QUAESTOR_RESULT_REMOTE_ERROR,
    };
    Failure::new(code, error.to_string())
}

/// # Safety
/// As `quaestor_discover`.
unsafe fn discover(
    balancer: *const c_char,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    timeout_ms: u32,
    top: bool,
    out: *mut *mut quaestor_location_list,
) -> quaestor_result {
    boundary(|| {
        out_param(out, "out")?;
        // SAFETY: as the caller promised.
        let balancer = unsafe { text_arg(balancer, "balancer_address") }?;
        // SAFETY: as the caller promised.
        let scope = unsafe { optional_text_arg(scope, "scope") }?.unwrap_or_default();
        // SAFETY: as the caller promised.
        let service = unsafe { text_arg(service, "service") }?;
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
        let target = Target::new(balancer, None, timeout).map_err(client_failure)?;
        let found = block_on(async {
            let channel = target.connect().await?;
            target
                .discover(channel, scope, service, max_count, top)
                .await
        })?
        .map_err(client_failure)?;
        let items = found
            .into_iter()
            .map(|location| {
                let host = CString::new(location.host_name).map_err(|_| {
                    Failure::new(QUAESTOR_RESULT_REMOTE_ERROR, "a host name with a NUL byte")
                })?;
                Ok((host, u16::try_from(location.port).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(quaestor_location_list { items })) };
        Ok(())
    })
}

/// Asks the balancer at `balancer_address` (`host:port`, or `http://host:port`) for the
/// healthy locations of `service` in `scope` (NULL or "": the default scope), at most
/// `max_count` (≤ 0: all), in random order, waiting at most `timeout_ms`. An unknown service
/// is an empty list. `*out` gets the list.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, INVALID_ARGUMENT (bad address, empty service),
/// UNAVAILABLE, TIMEOUT, REMOTE_ERROR.
///
/// # Safety
/// Text arguments are NULL or NUL-terminated; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discover(
    balancer_address: *const c_char,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    timeout_ms: u32,
    out: *mut *mut quaestor_location_list,
) -> quaestor_result {
    // SAFETY: as the caller promised.
    unsafe {
        discover(
            balancer_address,
            scope,
            service,
            max_count,
            timeout_ms,
            false,
            out,
        )
    }
}

/// As `quaestor_discover`, but the locations that report load, best (least loaded) first:
/// `max_count` 1 is "which worker should I call now?".
///
/// # Safety
/// As `quaestor_discover`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discover_top(
    balancer_address: *const c_char,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    timeout_ms: u32,
    out: *mut *mut quaestor_location_list,
) -> quaestor_result {
    // SAFETY: as the caller promised.
    unsafe {
        discover(
            balancer_address,
            scope,
            service,
            max_count,
            timeout_ms,
            true,
            out,
        )
    }
}

/// How many locations the list holds (0 for NULL).
///
/// # Safety
/// `list` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_location_list_len(list: *const quaestor_location_list) -> usize {
    // SAFETY: as the caller promised.
    unsafe { list.as_ref() }.map_or(0, |l| l.items.len())
}

/// The host of location `index`, NUL-terminated, valid until the list is freed; NULL when
/// `list` is NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_location_list_host(
    list: *const quaestor_location_list,
    index: usize,
) -> *const c_char {
    // SAFETY: as the caller promised.
    unsafe { list.as_ref() }
        .and_then(|l| l.items.get(index))
        .map_or(std::ptr::null(), |(host, _)| host.as_ptr())
}

/// The port of location `index`; 0 when `list` is NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_location_list_port(
    list: *const quaestor_location_list,
    index: usize,
) -> u16 {
    // SAFETY: as the caller promised.
    unsafe { list.as_ref() }
        .and_then(|l| l.items.get(index))
        .map_or(0, |(_, port)| *port)
}

/// Frees the list. NULL: nothing.
///
/// # Safety
/// `list` is NULL or live, and not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_location_list_free(list: *mut quaestor_location_list) {
    if !list.is_null() {
        // SAFETY: made by `discover`, freed once.
        drop(unsafe { Box::from_raw(list) });
    }
}
