//! The shared runtime of `quaestor_core::blocking`, with its failures as result codes.

use std::future::Future;
use std::sync::Once;

use quaestor_core::blocking::{self, BlockingError};

use quaestor_core::error::Error;

use crate::error::Failure;

pub(crate) fn failure(error: BlockingError) -> Failure {
    Error::from(error).into()
}

/// Runs `future` to its end on the library's runtime, blocking the calling (C) thread.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    ignore_sigpipe();
    blocking::block_on(future).map_err(failure)
}

/// Enters the library's runtime for non-async work that needs one (dropping objects whose
/// background tasks end there).
pub(crate) fn enter() -> Result<tokio::runtime::EnterGuard<'static>, Failure> {
    ignore_sigpipe();
    Ok(blocking::runtime().map_err(failure)?.enter())
}

/// Writing to a connection its peer has just closed raises SIGPIPE, and SIGPIPE ends a C, C++
/// or Mono program by default (Rust and Python programs ignore it). The library's connections
/// are written by tokio and hyper, which cannot pass MSG_NOSIGNAL to `writev`: a balancer
/// dropping its load-push stream while the worker's reporter writes an update would kill the
/// worker. So, as gRPC's C core does, the library ignores SIGPIPE the first time it runs,
/// unless the program has set a disposition of its own (a handler, or ignoring it already).
pub(crate) fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::libc;
        // SAFETY: `sigaction` with a null new action only reads the current one into a
        // zeroed struct of the right type; then SIG_IGN is installed, which runs no code of
        // ours in signal context.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
    });
}
