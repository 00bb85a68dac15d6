//! The service-load handle: what a worker counts its requests on, got once per service.

use std::sync::Arc;

use quaestor_core::load::ServiceLoad;
use quaestor_core::server::health::HealthState;

use crate::error::{boundary, boundary_or, quaestor_result};

/// One service of a reporter: its load counters and its health. Get it from
/// `quaestor_reporter_add_service` (or `_service_load`), free it with
/// `quaestor_service_load_free`; it stays valid after its reporter is freed (its reports
/// then go nowhere).
pub struct quaestor_service_load {
    pub(crate) load: Arc<ServiceLoad>,
    pub(crate) health: HealthState,
    pub(crate) name: String,
}

impl quaestor_service_load {
    pub(crate) fn into_raw(self) -> *mut quaestor_service_load {
        Box::into_raw(Box::new(self))
    }
}

/// Runs `body` on the handle behind `load`, if it is not NULL; never panics across.
fn with<T>(
    load: *const quaestor_service_load,
    fallback: T,
    body: impl FnOnce(&quaestor_service_load) -> T,
) -> T {
    // SAFETY: the caller passes NULL or a handle from this library that is not freed yet.
    match unsafe { load.as_ref() } {
        Some(load) => boundary_or(fallback, || body(load)),
        None => fallback,
    }
}

/// One request of this service has started: a single atomic operation. NULL: nothing.
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_start_request(load: *const quaestor_service_load) {
    with(load, (), |load| load.load.start_request());
}

/// One request of this service has ended (pair it with a start). NULL: nothing.
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_end_request(load: *const quaestor_service_load) {
    with(load, (), |load| load.load.end_request());
}

/// Requests in flight now (-1 for NULL).
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_current_requests(
    load: *const quaestor_service_load,
) -> i32 {
    with(load, -1, |load| load.load.current_requests())
}

/// Sets the requests this service takes at once (the reported request_capacity).
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_set_capacity(
    load: *const quaestor_service_load,
    capacity: i32,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { crate::error::object(load, "load") }?;
        load.load.set_capacity(capacity);
        Ok(())
    })
}

/// Sets a load figure the worker computes itself (balancers rank by it when every candidate
/// has one); negative or NaN: not set (the default).
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_set_known_load_rate(
    load: *const quaestor_service_load,
    rate: f64,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { crate::error::object(load, "load") }?;
        load.load.set_known_load_rate(rate);
        Ok(())
    })
}

/// Fixes the reported server utilisation (1.0 = all cores busy); negative or NaN: measure
/// this process's CPU use between reports (the default). Infinite: INVALID_ARGUMENT, nothing
/// changed.
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_set_server_utilization(
    load: *const quaestor_service_load,
    utilization: f64,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { crate::error::object(load, "load") }?;
        Ok(load.load.try_set_server_utilization(fixed(utilization))?)
    })
}

/// Fixes the reported host memory usage in percent (0 to 100); negative or NaN: read the
/// host's memory at each report (the default). Above 100 or infinite: INVALID_ARGUMENT,
/// nothing changed.
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_set_memory_usage_percent(
    load: *const quaestor_service_load,
    percent: f64,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { crate::error::object(load, "load") }?;
        Ok(load.load.try_set_memory_usage_percent(fixed(percent))?)
    })
}

/// A figure as C gives it: negative or NaN for "measured" (`None`).
fn fixed(figure: f64) -> Option<f64> {
    (!(figure.is_nan() || figure < 0.0)).then_some(figure)
}

/// Turns this service SERVING (`serving` true) or NOT_SERVING in the health service.
///
/// # Safety
/// `load` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_set_serving(
    load: *const quaestor_service_load,
    serving: bool,
) -> quaestor_result {
    boundary(|| {
        // SAFETY: as the caller promised.
        let load = unsafe { crate::error::object(load, "load") }?;
        load.health.set_serving(&load.name, serving);
        Ok(())
    })
}

/// Frees the handle (the service stays reported). NULL: nothing.
///
/// # Safety
/// `load` is NULL or a live handle, not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quaestor_service_load_free(load: *mut quaestor_service_load) {
    if load.is_null() {
        return;
    }
    boundary_or((), || {
        // SAFETY: made by `into_raw`, freed once.
        drop(unsafe { Box::from_raw(load) });
    });
}
