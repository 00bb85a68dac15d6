//! The reporter: health and load of a native worker's services on a port of its own, and the
//! worker's registration in etcd.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::load::ServiceLoad;
use quaestor_core::sdk::{EtcdAccess, Worker};
use quaestor_core::tls::ServerTls;

use crate::error::{
    Failure, boundary, boundary_or, object, optional_text_arg, out_param, quaestor_result, text_arg,
};
use crate::load::quaestor_service_load;
use crate::runtime::{block_on, enter};

use quaestor_result::*;

/// A reporter serving `grpc.health.v1.Health` and `Quaestor.LoadReporting.LoadReportingGrpc`
/// for the services added to it. Made by `quaestor_reporter_new`, freed by
/// `quaestor_reporter_free`.
pub struct quaestor_reporter {
    worker: Worker,
}

/// The worker behind `reporter`, if it was made in this process: one inherited through a fork
/// is INVALID_STATE (its server runs on threads the child does not have).
///
/// # Safety
/// `reporter` is NULL or live.
unsafe fn live<'a>(reporter: *const quaestor_reporter) -> Result<&'a Worker, Failure> {
    // SAFETY: as the caller promised.
    let worker = &unsafe { object(reporter, "reporter") }?.worker;
    worker.live()?;
    Ok(worker)
}

/// A new load handle of service `name`.
fn handle(worker: &Worker, name: &str, load: Arc<ServiceLoad>) -> *mut quaestor_service_load {
    quaestor_service_load {
        load,
        health: worker.health().clone(),
        name: name.to_owned(),
    }
    .into_raw()
}

/// Starts a reporter serving on `host`:`port` (port 0: a free port; read it with
/// `quaestor_reporter_port`), in plain text, or with TLS when `cert_pem_path` and
/// `key_pem_path` are both given (PEM files; NULL for plain text). It has no services yet and
/// reports the worker as a whole SERVING. `*out` gets the reporter.
/// After a fork, the child gets threads of its own on its first call; a reporter made before
/// the fork answers every call in the child with INVALID_STATE, and freeing it there only
/// forgets it (the parent still owns it).
/// The library ignores SIGPIPE from its first call on, unless the program has a disposition of
/// its own for it: a balancer that drops its connection while the reporter writes would
/// otherwise end the worker.
///
/// Errors: NULL_PARAMETER (host, out), INVALID_UTF8, INVALID_ARGUMENT (host does not resolve,
/// only one of the TLS files given), IO (port in use), TLS (unusable certificate or key).
///
/// # Safety
/// Text arguments are NULL or NUL-terminated; `out` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_new(
    host: *const c_char,
    port: u16,
    cert_pem_path: *const c_char,
    key_pem_path: *const c_char,
    out: *mut *mut quaestor_reporter,
) -> quaestor_result {
    boundary(|| {
        out_param(out, "out")?;
        // SAFETY: as the caller promised.
        let host = unsafe { text_arg(host, "host") }?;
        // SAFETY: as the caller promised.
        let cert = unsafe { optional_text_arg(cert_pem_path, "cert_pem_path") }?;
        // SAFETY: as the caller promised.
        let key = unsafe { optional_text_arg(key_pem_path, "key_pem_path") }?;
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(ServerTls::new(cert, key)),
            (None, None) => None,
            _ => {
                return Err(Failure::new(
                    QUAESTOR_RESULT_INVALID_ARGUMENT,
                    "give both cert_pem_path and key_pem_path for TLS, or neither",
                ));
            }
        };
        let worker = block_on(Worker::start(host, port, tls))??;
        let reporter = quaestor_reporter { worker };
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(reporter)) };
        Ok(())
    })
}

/// The port the reporter serves on (0 for NULL).
///
/// # Safety
/// `reporter` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_port(reporter: *const quaestor_reporter) -> u16 {
    // SAFETY: as the caller promised.
    match unsafe { reporter.as_ref() } {
        Some(reporter) => reporter.worker.port(),
        None => 0,
    }
}

/// Reports a new service taking `capacity` requests at once (-1: unknown), SERVING. `*out`
/// gets its load handle, to count requests on; free it with `quaestor_service_load_free`.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, INVALID_ARGUMENT (empty name), ALREADY_EXISTS.
///
/// # Safety
/// `reporter` is NULL or live; `service` NULL or NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_add_service(
    reporter: *const quaestor_reporter,
    service: *const c_char,
    capacity: i32,
    out: *mut *mut quaestor_service_load,
) -> quaestor_result {
    boundary(|| {
        out_param(out, "out")?;
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        // SAFETY: as the caller promised.
        let name = unsafe { text_arg(service, "service") }?;
        let load = reporter.add_service(name, capacity)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = handle(reporter, name, load) };
        Ok(())
    })
}

/// Another load handle of a service added before.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, NOT_FOUND.
///
/// # Safety
/// As `quaestor_reporter_add_service`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_service_load(
    reporter: *const quaestor_reporter,
    service: *const c_char,
    out: *mut *mut quaestor_service_load,
) -> quaestor_result {
    boundary(|| {
        out_param(out, "out")?;
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        // SAFETY: as the caller promised.
        let name = unsafe { text_arg(service, "service") }?;
        let load = reporter.service_load(name)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = handle(reporter, name, load) };
        Ok(())
    })
}

/// Turns one service (or, with `service` NULL or "", every service and the worker as a
/// whole) SERVING or NOT_SERVING.
///
/// Errors: NULL_PARAMETER (reporter), INVALID_UTF8, NOT_FOUND.
///
/// # Safety
/// `reporter` is NULL or live; `service` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_set_serving(
    reporter: *const quaestor_reporter,
    service: *const c_char,
    serving: bool,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        // SAFETY: as the caller promised.
        let service = unsafe { optional_text_arg(service, "service") }?;
        Ok(reporter.set_serving(service, serving)?)
    })
}

/// Registers every service added so far in etcd as served at `advertised_host`:`service_port`
/// (the worker's own port; 0: the reporter's port), with the reporter as control endpoint
/// (`advertised_host`:reporter port), in `scope` (NULL or "": the default scope), on a lease
/// of `lease_ttl_seconds` (0: the default, 10 s) kept alive in the background.
/// `etcd_endpoints`: client URLs, comma-separated (`http://127.0.0.1:2379`).
/// For an etcd with TLS or authentication on, see `quaestor_reporter_register_with_credentials`.
/// When no etcd member answers (in a few seconds), this still returns OK: the registration is
/// made in the background once etcd answers, retried with backoff (a worker may start before
/// its etcd), and the log says so.
///
/// Errors: NULL_PARAMETER, INVALID_UTF8, INVALID_ARGUMENT (a name with '/', a TTL under 2 s),
/// INVALID_STATE (no services, registered already, or closed), REFUSED (etcd refused: wrong
/// user name or password, no permission), REMOTE_ERROR (etcd answered another error).
///
/// # Safety
/// `reporter` is NULL or live; text arguments NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_register(
    reporter: *const quaestor_reporter,
    etcd_endpoints: *const c_char,
    scope: *const c_char,
    advertised_host: *const c_char,
    service_port: u16,
    lease_ttl_seconds: u32,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        // SAFETY: as the caller promised.
        let endpoints = unsafe { text_arg(etcd_endpoints, "etcd_endpoints") }?;
        // SAFETY: as the caller promised.
        let scope = unsafe { optional_text_arg(scope, "scope") }?.unwrap_or_default();
        // SAFETY: as the caller promised.
        let host = unsafe { text_arg(advertised_host, "advertised_host") }?;
        let etcd = etcd_access(endpoints, lease_ttl_seconds);
        register(reporter, etcd, scope, host, service_port)
    })
}

/// As `quaestor_reporter_register`, for an etcd with TLS and/or authentication on; every
/// added argument may be NULL. `ca_pem_path`: the CA (PEM file) that signed the etcd members'
/// certificates (implies TLS; `https://` endpoints without it use the system's roots);
/// `cert_pem_path` and `key_pem_path`: a client certificate and its key (PEM files; both or
/// neither) for etcd's client-cert-auth; `user` and `password`: etcd credentials (both or
/// neither).
///
/// Errors: those of `quaestor_reporter_register`; INVALID_ARGUMENT also for only one of the
/// certificate and key, or of user and password; TLS (files that do not load); REFUSED
/// when etcd refuses the user (the message, from `quaestor_last_error_message`, says
/// "etcd refused user NAME: authentication failed ..." or "... permission denied ...").
///
/// # Safety
/// `reporter` is NULL or live; text arguments NULL or NUL-terminated.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn quaestor_reporter_register_with_credentials(
    reporter: *const quaestor_reporter,
    etcd_endpoints: *const c_char,
    scope: *const c_char,
    advertised_host: *const c_char,
    service_port: u16,
    lease_ttl_seconds: u32,
    ca_pem_path: *const c_char,
    cert_pem_path: *const c_char,
    key_pem_path: *const c_char,
    user: *const c_char,
    password: *const c_char,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        // SAFETY: as the caller promised.
        let endpoints = unsafe { text_arg(etcd_endpoints, "etcd_endpoints") }?;
        // SAFETY: as the caller promised.
        let scope = unsafe { optional_text_arg(scope, "scope") }?.unwrap_or_default();
        // SAFETY: as the caller promised.
        let host = unsafe { text_arg(advertised_host, "advertised_host") }?;
        // SAFETY: as the caller promised.
        let ca = unsafe { optional_text_arg(ca_pem_path, "ca_pem_path") }?;
        // SAFETY: as the caller promised.
        let cert = unsafe { optional_text_arg(cert_pem_path, "cert_pem_path") }?;
        // SAFETY: as the caller promised.
        let key = unsafe { optional_text_arg(key_pem_path, "key_pem_path") }?;
        // SAFETY: as the caller promised.
        let user = unsafe { optional_text_arg(user, "user") }?;
        // SAFETY: as the caller promised.
        let password = unsafe { optional_text_arg(password, "password") }?;
        let etcd = EtcdAccess {
            ca: ca.map(PathBuf::from),
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
            user: user.map(str::to_owned),
            password: password.map(str::to_owned),
            ..etcd_access(endpoints, lease_ttl_seconds)
        };
        register(reporter, etcd, scope, host, service_port)
    })
}

/// The etcd at `endpoints` (comma-separated), with a lease TTL (0: the default).
pub(crate) fn etcd_access(endpoints: &str, lease_ttl_seconds: u32) -> EtcdAccess {
    EtcdAccess {
        endpoints: vec![endpoints.to_owned()],
        lease_ttl: (lease_ttl_seconds > 0)
            .then(|| Duration::from_secs(u64::from(lease_ttl_seconds))),
        ..EtcdAccess::default()
    }
}

/// Registers every service of `worker` in the etcd of `etcd`; service port 0: the reporter's.
fn register(
    worker: &Worker,
    etcd: EtcdAccess,
    scope: &str,
    host: &str,
    service_port: u16,
) -> Result<(), Failure> {
    let port = (service_port != 0).then_some(service_port);
    Ok(worker.register_blocking(etcd, scope, host, port)?)
}

/// Removes the worker's registrations (revokes their lease). Not registered: nothing to do.
///
/// Errors: NULL_PARAMETER, UNAVAILABLE, TIMEOUT (the lease then ends by itself after its TTL).
///
/// # Safety
/// `reporter` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_deregister(
    reporter: *const quaestor_reporter,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let reporter = unsafe { live(reporter) }?;
        Ok(reporter.deregister_blocking()?)
    })
}

/// Deregisters (see `quaestor_reporter_deregister`), then stops serving: every health Watch
/// is told NOT_SERVING and ended, calls in flight get up to 5 s to finish. The service-load
/// handles stay valid. NULL: nothing.
///
/// # Safety
/// `reporter` is NULL or live, and not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_reporter_free(reporter: *mut quaestor_reporter) {
    if reporter.is_null() {
        return;
    }
    // SAFETY: made by `quaestor_reporter_new`, freed once.
    let reporter = unsafe { Box::from_raw(reporter) };
    boundary_or((), || {
        // Inherited through a fork: nothing of it runs here (dropping it only forgets it).
        if reporter.worker.live().is_ok() {
            let _ = reporter.worker.close_blocking();
        }
        // Dropped inside the runtime: background tasks it holds end there.
        let _guard = enter();
        drop(reporter);
    });
}
