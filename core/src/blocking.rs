//! One shared tokio runtime for callers that are not async themselves (the C ABI, the
//! Python module): started on first use, two worker threads named `quaestor`.

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error("cannot start quaestor's threads: {0}")]
    Start(#[source] std::io::Error),
    #[error("called from inside an async runtime's thread; call quaestor from a plain thread")]
    InsideRuntime,
}

/// The shared runtime.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, BlockingError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("quaestor")
        .enable_all()
        .build()
        .map_err(BlockingError::Start)?;
    // Another thread may have won the race; its runtime is used, this one dropped.
    Ok(RUNTIME.get_or_init(|| built))
}

/// Runs `future` to its end on the shared runtime, blocking the calling thread.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, BlockingError> {
    let runtime = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(BlockingError::InsideRuntime);
    }
    Ok(runtime.block_on(future))
}
