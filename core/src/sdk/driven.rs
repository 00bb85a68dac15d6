//! A single-threaded tokio runtime that the thread waiting on it drives, for blocking calls
//! from threads that are not async (C, Python): the call's future, its connection's tasks and
//! the socket all run on the calling thread, with no hand-over to other threads and back
//! (a third of a loopback round trip on the shared multi-threaded runtime).
//!
//! While no call waits, an idle driver thread drives the runtime instead, so a kept connection
//! still answers its server between calls (HTTP/2 pings, a GOAWAY when the balancer stops). It
//! steps aside when a call comes (the call takes the runtime once the driver has let go) and
//! comes back once no call has come for [`LINGER`]; a steady stream of calls thus never waits
//! for it.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// How long the runtime must have had no call before the idle driver drives it again.
const LINGER: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub(crate) struct DrivenRuntime {
    runtime: Option<Arc<Runtime>>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Calls waiting on the runtime now.
    active: AtomicUsize,
    /// Calls so far (the driver's sign of recent use).
    calls: AtomicU64,
    /// The driver is inside (or about to enter) `block_on`.
    driving: AtomicBool,
    /// Tells the driver to let go of the runtime.
    wake: Notify,
    stop: AtomicBool,
    /// The owner's runtime once it is dropped: the driver drops it, on its own plain thread
    /// (a runtime must not be dropped inside an async context, where its owner may be).
    graveyard: Mutex<Option<Arc<Runtime>>>,
}

impl DrivenRuntime {
    pub(crate) fn new() -> io::Result<Self> {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let shared = Arc::new(Shared::default());
        let driver = (Arc::clone(&runtime), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("quaestor-idle".into())
            .spawn(move || drive(driver.0, &driver.1))?;
        Ok(DrivenRuntime {
            runtime: Some(runtime),
            shared,
        })
    }

    /// Runs `future` to its end on this thread. The caller is not inside an async runtime.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        let shared = &*self.shared;
        shared.active.fetch_add(1, SeqCst);
        shared.calls.fetch_add(1, SeqCst);
        // Either the driver sees this call before it enters, or this sees it inside.
        if shared.driving.load(SeqCst) {
            shared.wake.notify_one();
        }
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let _done = Done(&shared.active);
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as its owner")
            .block_on(future)
    }
}

fn drive(runtime: Arc<Runtime>, shared: &Shared) {
    while !shared.stop.load(SeqCst) {
        let seen = shared.calls.load(SeqCst);
        std::thread::sleep(LINGER);
        if shared.calls.load(SeqCst) != seen || shared.active.load(SeqCst) > 0 {
            continue;
        }
        shared.driving.store(true, SeqCst);
        if shared.active.load(SeqCst) == 0 && !shared.stop.load(SeqCst) {
            runtime.block_on(shared.wake.notified());
        }
        shared.driving.store(false, SeqCst);
    }
    let buried = shared
        .graveyard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    drop((buried, runtime));
}

impl Drop for DrivenRuntime {
    fn drop(&mut self) {
        *self
            .shared
            .graveyard
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.runtime.take();
        self.shared.stop.store(true, SeqCst);
        self.shared.wake.notify_one();
    }
}
