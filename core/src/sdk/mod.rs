//! The worker-facing API every language binding translates: a [`Worker`] (a reporter on a
//! port of its own, its services and its registration in etcd) and a [`DiscoveryClient`] (one
//! connection to a balancer, kept and reused). The C ABI (`ffi/`) and the Python module
//! (`bindings/python/`) only convert arguments and results, and map [`ErrorKind`]s through one
//! table each; what a call does and how it fails is decided here.
//!
//! Every call comes in two forms: `async`, and `*_blocking` for callers that are not async
//! themselves, run on the shared runtime of [`crate::blocking`] (which also makes them safe
//! after a fork: see there).

mod discovery;
mod driven;
mod worker;

pub use discovery::{DiscoveryClient, Location};
pub use worker::{EtcdAccess, Worker};

pub use crate::error::{Error, ErrorKind};

use crate::blocking;

/// Runs `future` on the shared runtime, blocking the calling thread; its failure and the
/// runtime's own (inside a runtime, no threads) become one [`Error`].
pub fn block_on<F, T>(future: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    blocking::block_on(future)?
}
