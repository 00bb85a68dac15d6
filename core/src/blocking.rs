//! One shared tokio runtime for callers that are not async themselves (the C ABI, the
//! Python module): started on first use, two worker threads named `quaestor`.
//!
//! Fork safety: a child forked from a process that used the runtime has none of its threads
//! (fork copies only the calling thread), so work handed to the parent's runtime would wait
//! forever. The runtime is therefore per process: the first use in a child starts a runtime
//! of its own, and the parent's copy is left alone (never dropped: dropping it would wait for
//! threads that do not exist). Objects that hold work on the parent's runtime (a reporter's
//! server, a registration) remember the process that made them ([`MadeIn`]) and refuse to be
//! used in another one instead of hanging.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::runtime::Runtime;

/// The runtime and the process it belongs to. Locked only to read it or, once per process,
/// to start it.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error("cannot start quaestor's threads: {0}")]
    Start(#[source] std::io::Error),
    #[error("called from inside an async runtime's thread; call quaestor from a plain thread")]
    InsideRuntime,
    #[error(
        "this {what} was made in process {made_in}, before a fork; make a new one in this \
         process ({here})"
    )]
    Forked {
        what: &'static str,
        made_in: u32,
        here: u32,
    },
}

/// The shared runtime of this process.
pub fn runtime() -> Result<&'static Runtime, BlockingError> {
    let pid = std::process::id();
    let mut current = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, runtime)) = *current
        && owner == pid
    {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("quaestor")
        .enable_all()
        .build()
        .map_err(BlockingError::Start)?;
    // Lives as long as the process, like a static; a parent's stays behind in a child.
    let runtime: &'static Runtime = Box::leak(Box::new(built));
    *current = Some((pid, runtime));
    Ok(runtime)
}

/// Runs `future` to its end on the shared runtime, blocking the calling thread.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, BlockingError> {
    let runtime = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(BlockingError::InsideRuntime);
    }
    Ok(runtime.block_on(future))
}

/// The process an object was made in (see the module's note on fork safety).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadeIn(u32);

impl MadeIn {
    /// This process.
    pub fn here() -> Self {
        MadeIn(std::process::id())
    }

    /// Made in this process (not inherited through a fork).
    pub fn is_here(self) -> bool {
        self.0 == std::process::id()
    }

    /// `Ok` in the process that made it; a [`BlockingError::Forked`] naming `what` elsewhere.
    pub fn check(self, what: &'static str) -> Result<(), BlockingError> {
        let here = std::process::id();
        if self.0 == here {
            Ok(())
        } else {
            Err(BlockingError::Forked {
                what,
                made_in: self.0,
                here,
            })
        }
    }
}
