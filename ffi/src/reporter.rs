//! The reporter: health and load of a native worker's services on a port of its own, and the
//! worker's registration in etcd.

use std::ffi::c_char;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quaestor_core::blocking::MadeIn;
use quaestor_core::load::ServiceLoad;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::etcd::{EtcdError, EtcdOptions, EtcdRegistrar};
use quaestor_core::reporter::{Reporter, ReporterError};
use quaestor_core::server::{ServerError, ServerHandle};
use quaestor_core::tls::{ClientTls, ServerTls};

use crate::error::{
    Failure, boundary, boundary_or, object, optional_text_arg, out_param, quaestor_result, text_arg,
};
use crate::load::quaestor_service_load;
use crate::runtime::{block_on, enter};

use quaestor_result::*;

/// How long calls in flight may take to finish when a reporter is freed.
const GRACE: Duration = Duration::from_secs(5);

/// A reporter serving `grpc.health.v1.Health` and `Quaestor.LoadReporting.LoadReportingGrpc`
/// for the services added to it. Made by `quaestor_reporter_new`, freed by
/// `quaestor_reporter_free`.
pub struct quaestor_reporter {
    /// After a fork, the child's copy refuses every call (its server runs on the parent's
    /// threads, which the child does not have).
    made_in: MadeIn,
    reporter: Reporter,
    addr: SocketAddr,
    server: Mutex<Option<ServerHandle>>,
    registration: Mutex<Option<Registration>>,
}

/// The reporter behind `reporter`, if it was made in this process: one inherited through a
/// fork is INVALID_STATE (its server runs on threads the child does not have).
///
/// # Safety
/// `reporter` is NULL or live.
unsafe fn live<'a>(reporter: *const quaestor_reporter) -> Result<&'a quaestor_reporter, Failure> {
    // SAFETY: as the caller promised.
    let reporter = unsafe { object(reporter, "reporter") }?;
    reporter
        .made_in
        .check("reporter")
        .map_err(crate::runtime::failure)?;
    Ok(reporter)
}

impl quaestor_reporter {
    /// A new load handle of service `name`.
    fn handle(&self, name: &str, load: Arc<ServiceLoad>) -> *mut quaestor_service_load {
        quaestor_service_load {
            load,
            health: self.reporter.health().clone(),
            name: name.to_owned(),
        }
        .into_raw()
    }
}

/// The worker's entries in etcd, on the registrar's lease.
struct Registration {
    registrar: EtcdRegistrar,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn server_failure(error: ServerError) -> Failure {
    let code = match &error {
        ServerError::Tls(_) | ServerError::TlsConfig(_) => QUAESTOR_RESULT_TLS,
        _ => QUAESTOR_RESULT_IO,
    };
    Failure::new(code, error.to_string())
}

fn etcd_failure(error: EtcdError) -> Failure {
    let code = match &error {
        EtcdError::Unreachable { .. } => QUAESTOR_RESULT_UNAVAILABLE,
        EtcdError::Timeout { .. } => QUAESTOR_RESULT_TIMEOUT,
        EtcdError::Tls(_) => QUAESTOR_RESULT_TLS,
        EtcdError::Request { .. } | EtcdError::Refused { .. } => QUAESTOR_RESULT_REMOTE_ERROR,
        EtcdError::Location(_) | EtcdError::LeaseTtl(_) | EtcdError::NoEndpoints => {
            QUAESTOR_RESULT_INVALID_ARGUMENT
        }
    };
    Failure::new(code, error.to_string())
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
        let reporter = Reporter::new();
        let server = block_on(async {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    Failure::new(
                        QUAESTOR_RESULT_INVALID_ARGUMENT,
                        format!("host {host:?} does not resolve to an address"),
                    )
                })?;
            reporter.serve(addr, tls).await.map_err(server_failure)
        })??;
        let reporter = quaestor_reporter {
            made_in: MadeIn::here(),
            reporter,
            addr: server.local_addr(),
            server: Mutex::new(Some(server)),
            registration: Mutex::new(None),
        };
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
        Some(reporter) => reporter.addr.port(),
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
        let load = reporter
            .reporter
            .add_service(name, capacity)
            .map_err(|error| {
                let code = match error {
                    ReporterError::EmptyServiceName => QUAESTOR_RESULT_INVALID_ARGUMENT,
                    ReporterError::DuplicateService(_) => QUAESTOR_RESULT_ALREADY_EXISTS,
                };
                Failure::new(code, error.to_string())
            })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = reporter.handle(name, load) };
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
        let load = reporter.reporter.service_load(name).ok_or_else(|| {
            Failure::new(
                QUAESTOR_RESULT_NOT_FOUND,
                format!("service {name:?} was not added"),
            )
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = reporter.handle(name, load) };
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
        match unsafe { optional_text_arg(service, "service") }? {
            None | Some("") => reporter.reporter.set_all_serving(serving),
            Some(name) if reporter.reporter.service_load(name).is_some() => {
                reporter.reporter.set_serving(name, serving);
            }
            Some(name) => {
                return Err(Failure::new(
                    QUAESTOR_RESULT_NOT_FOUND,
                    format!("service {name:?} was not added"),
                ));
            }
        }
        Ok(())
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
/// INVALID_STATE (no services, or registered already), REMOTE_ERROR (etcd refused: wrong
/// user name or password, no permission).
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
        let options = etcd_options(endpoints, lease_ttl_seconds);
        register(reporter, options, scope, host, service_port)
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
/// certificate and key, or of user and password; TLS (files that do not load); REMOTE_ERROR
/// also when etcd refuses the user (the message, from `quaestor_last_error_message`, says
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
        if cert.is_some() != key.is_some() {
            return Err(Failure::new(
                QUAESTOR_RESULT_INVALID_ARGUMENT,
                "give both cert_pem_path and key_pem_path, or neither",
            ));
        }
        let options = with_credentials(
            etcd_options(endpoints, lease_ttl_seconds),
            ca,
            cert.zip(key),
            user,
            password,
        )?;
        register(reporter, options, scope, host, service_port)
    })
}

/// `options` with etcd TLS (`ca`, client `identity`) and credentials; `user` and `password`
/// go together.
pub(crate) fn with_credentials(
    mut options: EtcdOptions,
    ca: Option<&str>,
    identity: Option<(&str, &str)>,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<EtcdOptions, Failure> {
    if ca.is_some() || identity.is_some() {
        options = options.with_tls(ClientTls {
            ca: ca.map(PathBuf::from),
            identity: identity.map(|(cert, key)| (PathBuf::from(cert), PathBuf::from(key))),
            domain: None,
        });
    }
    match (user, password) {
        (Some(user), Some(password)) => Ok(options.with_user(user, password)),
        (None, None) => Ok(options),
        _ => Err(Failure::new(
            QUAESTOR_RESULT_INVALID_ARGUMENT,
            "give both user and password, or neither",
        )),
    }
}

/// Options for comma-separated `endpoints` and a lease TTL (0: the default).
pub(crate) fn etcd_options(endpoints: &str, lease_ttl_seconds: u32) -> EtcdOptions {
    let mut options = EtcdOptions::new(
        endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
    );
    if lease_ttl_seconds > 0 {
        options = options.with_lease_ttl(Duration::from_secs(u64::from(lease_ttl_seconds)));
    }
    options
}

/// Registers every service of `reporter` with `options`.
fn register(
    reporter: &quaestor_reporter,
    options: EtcdOptions,
    scope: &str,
    host: &str,
    service_port: u16,
) -> Result<(), Failure> {
    let mut registration = lock(&reporter.registration);
    if registration.is_some() {
        return Err(Failure::new(
            QUAESTOR_RESULT_INVALID_STATE,
            "registered already; deregister first",
        ));
    }
    let services = reporter.reporter.service_names();
    if services.is_empty() {
        return Err(Failure::new(
            QUAESTOR_RESULT_INVALID_STATE,
            "no service to register; add services first",
        ));
    }
    let port = if service_port == 0 {
        reporter.addr.port()
    } else {
        service_port
    };
    let control = format!("{host}:{}", reporter.addr.port());
    let locations = services
        .iter()
        .map(|service| {
            ServiceLocation::new(scope, service, host, port)
                .map(|l| l.with_control(control.clone()).with_pid(std::process::id()))
                .map_err(|e| Failure::new(QUAESTOR_RESULT_INVALID_ARGUMENT, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let registrar = block_on(EtcdRegistrar::hold(options, &locations))?.map_err(etcd_failure)?;
    *registration = Some(Registration { registrar });
    Ok(())
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
        deregister(reporter)
    })
}

fn deregister(reporter: &quaestor_reporter) -> Result<(), Failure> {
    let Some(registration) = lock(&reporter.registration).take() else {
        return Ok(());
    };
    block_on(registration.registrar.stop())?.map_err(etcd_failure)
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
    if !reporter.made_in.is_here() {
        // Inherited through a fork: nothing of it can run here, and the parent owns it.
        std::mem::forget(reporter);
        return;
    }
    boundary_or((), || {
        let _ = deregister(&reporter);
        if let Some(server) = lock(&reporter.server).take() {
            let _ = block_on(async { tokio::time::timeout(GRACE * 2, server.shutdown()).await });
        }
        // Dropped inside the runtime: background tasks it holds end there.
        let _guard = enter();
        drop(reporter);
    });
}
