//! Work that outlives the request that started it (a commit, its audit line): run on the
//! service's task tracker, which a shutdown waits for, and awaited by the request.

use std::future::Future;

use tokio_util::task::TaskTracker;

use crate::pipeline::PipelineError;

/// Runs `work` to its end whatever becomes of the caller, and waits for its output. A panic in
/// it is a panic here; a task the runtime dropped (it is shutting down) is
/// [`PipelineError::ShuttingDown`].
pub async fn run<F>(tasks: &TaskTracker, work: F) -> Result<F::Output, PipelineError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tasks.spawn(work).await {
        Ok(output) => Ok(output),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(PipelineError::ShuttingDown),
    }
}
