//! Synchronous callers (`nova-vmm ctl`, tests, benches) run the typed clients' calls
//! with [`block_on`], on one runtime shared by the process, so a pooled connection
//! made by one call is driven while another thread uses it.

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Runs `f` to completion on the process's client runtime. Must not be called from
/// inside an async task (that would block its executor).
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("nova-http")
                .enable_all()
                .build()
                .expect("cannot start the HTTP client's runtime")
        })
        .block_on(f)
}
