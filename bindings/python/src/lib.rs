//! `quaestor._quaestor`: the native module of the Python package `quaestor` (see
//! `python/quaestor/_quaestor.pyi` for the Python view).
//!
//! Every call that waits (starting a server, etcd, a balancer) releases the GIL and runs on
//! quaestor's shared runtime; counting requests is one atomic operation and never waits.

mod aio;
mod discovery;
mod errors;
mod load;
mod reporter;

use pyo3::prelude::*;

use crate::discovery::{DiscoveryClient, ServiceLocation, discover};
use crate::load::{CancellableRequest, Request, ServiceLoad};
use crate::reporter::Reporter;

#[pymodule]
fn _quaestor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Reporter>()?;
    m.add_class::<ServiceLoad>()?;
    m.add_class::<Request>()?;
    m.add_class::<CancellableRequest>()?;
    m.add_class::<ServiceLocation>()?;
    m.add_class::<DiscoveryClient>()?;
    m.add_function(wrap_pyfunction!(discover, m)?)?;
    Ok(())
}
