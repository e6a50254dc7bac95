//! The gateway's two kinds of runtime.
//!
//! - The **data plane**: one single-threaded runtime per core (the
//!   workers), each accepting client connections from the shared listener
//!   and driving them, their proxied requests and the upstream connections
//!   it opens, all on its own thread: no task hops to another thread on the
//!   proxied path, and no lock is held across cores for long.
//! - The **control plane**: the runtime the gateway was started on. The
//!   database's connections, the password hashing, the gateway's own routes
//!   and every background task live there.
//!
//! A database socket is driven by the reactor of the runtime that opened
//! it, so whatever on a worker needs the database runs on the control plane
//! through [`ControlPlane::run`].

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::LazyLock;

use tokio::runtime::Handle;

/// A handle on the control plane's runtime.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    handle: Handle,
}

impl ControlPlane {
    /// The runtime this is called on becomes the control plane.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> ControlPlane {
        ControlPlane {
            handle: Handle::current(),
        }
    }

    /// Runs `work` on the control plane and waits for it: at once when
    /// already there. A panic in `work` resumes here, where the request's
    /// panic catcher answers it.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        if Handle::try_current().is_ok_and(|current| current.id() == self.handle.id()) {
            return work.await;
        }
        match self.handle.spawn(work).await {
            Ok(output) => output,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => panic!("the control plane shut down under a request"),
        }
    }
}

/// How many data-plane workers a gateway runs: one per core it may use
/// (read once: the answer costs system calls).
pub fn worker_count() -> usize {
    static WORKERS: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    *WORKERS
}

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the data-plane worker running on this thread, if any.
pub fn current_worker() -> Option<usize> {
    WORKER.get()
}

/// Marks this thread as data-plane worker `index`.
pub(crate) fn become_worker(index: usize) {
    WORKER.set(Some(index));
}
