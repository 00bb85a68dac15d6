//! The one tokio runtime behind every object of the library, started on first use.

use std::future::Future;
use std::sync::OnceLock;

use crate::error::{Failure, quaestor_result};

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Two worker threads serve every reporter of the process and run every call.
fn runtime() -> Result<&'static tokio::runtime::Runtime, Failure> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("quaestor")
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                quaestor_result::QUAESTOR_RESULT_IO,
                format!("cannot start libquaestor's threads: {e}"),
            )
        })?;
    // Another thread may have won the race; its runtime is used, this one dropped.
    Ok(RUNTIME.get_or_init(|| built))
}

/// Runs `future` to its end on the library's runtime, blocking the calling (C) thread.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    let runtime = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            quaestor_result::QUAESTOR_RESULT_INVALID_STATE,
            "called from inside an async runtime's thread; call libquaestor from a plain thread",
        ));
    }
    Ok(runtime.block_on(future))
}

/// Enters the library's runtime for non-async work that needs one (spawning tasks).
pub(crate) fn enter() -> Result<tokio::runtime::EnterGuard<'static>, Failure> {
    Ok(runtime()?.enter())
}
