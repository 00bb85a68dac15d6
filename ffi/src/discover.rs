//! Asking a balancer which workers serve a service: a reusable client
//! (`quaestor_discovery_client_*`), and one-shot calls over a client shared per address.

use std::ffi::{CString, c_char};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::sdk::{DiscoveryClient, Location};
use quaestor_core::tls::ClientTls;

use crate::error::{
    Failure, boundary, object, optional_text_arg, out_param, quaestor_result, text_arg,
};
use crate::runtime::ignore_sigpipe;

use quaestor_result::*;

/// Locations a balancer answered with: `quaestor_location_list_len` of them, each with a
/// host and a port. Free with `quaestor_location_list_free`.
pub struct quaestor_location_list {
    items: Vec<(CString, u16)>,
}

/// A client of one balancer that keeps its connection between calls (connecting on the first
/// call, and again after a failure). Made by `quaestor_discovery_client_new`, freed by
/// `quaestor_discovery_client_free`; one client may be used from many threads at once.
pub struct quaestor_discovery_client {
    client: Arc<DiscoveryClient>,
}

fn timeout(timeout_ms: u32) -> Duration {
    Duration::from_millis(u64::from(timeout_ms.max(1)))
}

/// Asks `client` and writes the answer into `*out`.
///
/// # Safety
/// Text arguments are NULL or NUL-terminated; `out` is NULL or writable.
unsafe fn ask(
    client: &DiscoveryClient,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    top: bool,
    out: *mut *mut quaestor_location_list,
) -> Result<(), Failure> {
    out_param(out, "out")?;
    // SAFETY: as the caller promised.
    let scope = unsafe { optional_text_arg(scope, "scope") }?.unwrap_or_default();
    // SAFETY: as the caller promised.
    let service = unsafe { text_arg(service, "service") }?;
    ignore_sigpipe();
    let found = if top {
        client.discover_top_blocking(scope, service, max_count)?
    } else {
        client.discover_blocking(scope, service, max_count)?
    };
    let items = found
        .into_iter()
        .map(|Location { host, port, .. }| {
            let host = CString::new(host).map_err(|_| {
                Failure::new(QUAESTOR_RESULT_REMOTE_ERROR, "a host name with a NUL byte")
            })?;
            Ok((host, port))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    // SAFETY: checked non-NULL above.
    unsafe { *out = Box::into_raw(Box::new(quaestor_location_list { items })) };
    Ok(())
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
        let client = DiscoveryClient::shared(balancer, None, timeout(timeout_ms))?;
        // SAFETY: as the caller promised.
        unsafe { ask(&client, scope, service, max_count, top, out) }
    })
}

/// Makes a client of the balancer at `balancer_address` (`host:port`, `http://host:port`, or
/// `https://host:port` for TLS), for many calls over one connection. `ca_pem_path`: the CA
/// (PEM file) that signed the balancer's certificate, for TLS (NULL: plain text, or the
/// system's roots for `https://`). `timeout_ms` bounds connecting and each call. Nothing is
/// connected yet: an unreachable balancer fails the first call. `*out` gets the client.
///
/// Errors: NULL_PARAMETER (balancer_address, out), INVALID_UTF8, INVALID_ARGUMENT (bad
/// address).
///
/// # Safety
/// Text arguments are NULL or NUL-terminated; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discovery_client_new(
    balancer_address: *const c_char,
    ca_pem_path: *const c_char,
    timeout_ms: u32,
    out: *mut *mut quaestor_discovery_client,
) -> quaestor_result {
    boundary(|| {
        out_param(out, "out")?;
        // SAFETY: as the caller promised.
        let balancer = unsafe { text_arg(balancer_address, "balancer_address") }?;
        // SAFETY: as the caller promised.
        let ca = unsafe { optional_text_arg(ca_pem_path, "ca_pem_path") }?;
        let tls = ca.map(|ca| ClientTls::with_ca(PathBuf::from(ca)));
        let client = Arc::new(DiscoveryClient::new(balancer, tls, timeout(timeout_ms))?);
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(quaestor_discovery_client { client })) };
        Ok(())
    })
}

/// As `quaestor_discover`, through `client`'s connection: the healthy locations of `service`
/// in `scope` (NULL or "": the default scope), at most `max_count` (≤ 0: all), in random
/// order. `*out` gets the list.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, INVALID_ARGUMENT (empty or bad service name), TLS
/// (CA file unusable), UNAVAILABLE, TIMEOUT, REMOTE_ERROR.
///
/// # Safety
/// `client` is NULL or live; text arguments NULL or NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discovery_client_discover(
    client: *const quaestor_discovery_client,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    out: *mut *mut quaestor_location_list,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let client = unsafe { object(client, "client") }?;
        // SAFETY: as the caller promised.
        unsafe { ask(&client.client, scope, service, max_count, false, out) }
    })
}

/// As `quaestor_discovery_client_discover`, but the locations that report load, best (least
/// loaded) first: `max_count` 1 is "which worker should I call now?".
///
/// # Safety
/// As `quaestor_discovery_client_discover`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discovery_client_discover_top(
    client: *const quaestor_discovery_client,
    scope: *const c_char,
    service: *const c_char,
    max_count: i32,
    out: *mut *mut quaestor_location_list,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let client = unsafe { object(client, "client") }?;
        // SAFETY: as the caller promised.
        unsafe { ask(&client.client, scope, service, max_count, true, out) }
    })
}

/// Frees the client and closes its connection. NULL: nothing.
///
/// # Safety
/// `client` is NULL or live, and not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_discovery_client_free(client: *mut quaestor_discovery_client) {
    if client.is_null() {
        return;
    }
    // SAFETY: made by `quaestor_discovery_client_new`, freed once.
    let client = unsafe { Box::from_raw(client) };
    crate::error::boundary_or((), || {
        // Dropped inside the runtime: its connection's task ends there.
        let _guard = crate::runtime::enter();
        drop(client);
    });
}

/// Asks the balancer at `balancer_address` (`host:port`, or `http://host:port`) for the
/// healthy locations of `service` in `scope` (NULL or "": the default scope), at most
/// `max_count` (≤ 0: all), in random order, waiting at most `timeout_ms`. An unknown service
/// is an empty list. `*out` gets the list. The connection is kept for the next call with the
/// same address and timeout (a client shared per process); for many calls, or TLS, make a
/// client of your own with `quaestor_discovery_client_new`.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, INVALID_ARGUMENT (bad address, empty or bad service
/// name), UNAVAILABLE, TIMEOUT, REMOTE_ERROR.
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
