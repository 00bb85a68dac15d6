//! The shared runtime of `quaestor_core::blocking`, with its failures as result codes.

use std::future::Future;

use quaestor_core::blocking::{self, BlockingError};

use crate::error::{Failure, quaestor_result};

fn failure(error: BlockingError) -> Failure {
    let code = match error {
        BlockingError::Start(_) => quaestor_result::QUAESTOR_RESULT_IO,
        BlockingError::InsideRuntime => quaestor_result::QUAESTOR_RESULT_INVALID_STATE,
    };
    Failure::new(code, error.to_string())
}

/// Runs `future` to its end on the library's runtime, blocking the calling (C) thread.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    blocking::block_on(future).map_err(failure)
}

/// Enters the library's runtime for non-async work that needs one (dropping objects whose
/// background tasks end there).
pub(crate) fn enter() -> Result<tokio::runtime::EnterGuard<'static>, Failure> {
    Ok(blocking::runtime().map_err(failure)?.enter())
}
