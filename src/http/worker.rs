//! Runs CPU-bound evaluation off the async workers, bounded in count and in time, so a huge
//! object or a pathological schema cannot stall the accept loop or other clients.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkError {
    /// The deadline (from the apiserver's `?timeout=` or the server default) passed first.
    #[error("evaluation did not finish within {0:?}")]
    Timeout(Duration),
    /// The evaluation panicked; the panic was logged and contained.
    #[error("internal error while evaluating the request")]
    Panicked,
    /// The worker pool is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs small work where it is, containing a panic as the pool does.
pub fn run_inline<T>(work: impl FnOnce() -> T) -> Result<T, WorkError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        tracing::error!(panic = %panic_message(payload.as_ref()), "evaluation panicked");
        WorkError::Panicked
    })
}

/// How much less CPU share pool threads get than the connection tasks when the CPUs are busy
/// (a nice value: +10 weighs about a tenth of +0), where `SCHED_IDLE` cannot be had.
const POOL_NICENESS: i32 = 10;

const IDLE_POLICY: thread_priority::ThreadSchedulePolicy =
    thread_priority::ThreadSchedulePolicy::Normal(
        thread_priority::NormalThreadSchedulePolicy::Idle,
    );

thread_local! {
    static NICED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Big reviews run at the lowest CPU priority, so that on a busy machine the kernel runs the
/// small requests' tasks first: a 2000-object conversion may take longer, never stall `/validate`.
/// Only the pool's own threads are affected (once each; raising it back needs privileges).
///
/// `SCHED_IDLE` rather than niceness alone: the kernel's EEVDF scheduler lets a running thread
/// finish its slice (about a millisecond and a half on two CPUs) before a woken one of the same
/// policy takes the CPU, however low its weight, whereas a thread of the idle policy gives way at
/// once. Beside back-to-back 2000-object conversions, `/validate`'s p99 was 2.0 ms with the pool
/// at nice +10 and 1.3 ms at `SCHED_IDLE` (medians of five alternating runs). The pool still gets
/// a share of a busy CPU (2000-object conversions beside `/validate` at full throttle: p99
/// 0.35–0.66 s, against a deadline of seconds). The niceness stays as the fallback where the policy is refused (a
/// seccomp profile without `sched_setscheduler`).
fn yield_to_small_requests() {
    NICED.with(|niced| {
        if niced.replace(true) {
            return;
        }
        // First: setting the policy also sets the niceness, and must not undo the +10 below.
        if let Err(policy) = enter_idle_policy() {
            tracing::debug!(policy, "cannot move the worker thread to the idle policy");
        }
        let thread = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(thread), POOL_NICENESS) {
            tracing::debug!(error = %e, "cannot lower the worker thread's priority");
        }
    });
}

/// Moves the calling thread to `SCHED_IDLE`; threads it starts afterwards inherit it. On
/// refusal, the policy the thread is under instead.
pub fn enter_idle_policy() -> Result<(), String> {
    // The crate also sets the niceness (to 0, which it may not be allowed to): the policy is
    // checked rather than its answer.
    let _ = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        thread_priority::ThreadPriority::Min,
        IDLE_POLICY,
    );
    match thread_priority::thread_schedule_policy() {
        Ok(IDLE_POLICY) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// One evaluation handed to a pool thread.
type Job = Box<dyn FnOnce() + Send>;

/// Threads of its own for big evaluations, never tokio's shared blocking pool: their scheduling
/// policy is lowered for good (`yield_to_small_requests`), which must not slow what else runs
/// there (policy reloads, the kube client's file and DNS work). The threads end when the last
/// handle to the pool is dropped.
#[derive(Debug, Clone)]
pub struct WorkerPool {
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl WorkerPool {
    /// `concurrency` threads (at least one), started now, each taking one job at a time.
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..concurrency {
            let queue = Arc::clone(&queue);
            let started = std::thread::Builder::new()
                .name(format!("tollgate-eval-{index}"))
                .spawn(move || {
                    yield_to_small_requests();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                // Fewer threads only means less parallelism; none at all answers `Closed`.
                tracing::error!(error = %e, "cannot start an evaluation thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs,
        }
    }

    /// Waiting for a slot counts against the same deadline as the work itself.
    pub async fn run<T, F>(&self, deadline: Duration, work: F) -> Result<T, WorkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permits = Arc::clone(&self.permits);
        let jobs = self.jobs.clone();
        let task = async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| WorkError::Closed)?;
            let (done, result) = tokio::sync::oneshot::channel();
            // The permit travels with the job: a timed-out job keeps its slot until it really
            // ends, so abandoned work cannot pile up beyond the limit.
            let job: Job = Box::new(move || {
                let _permit = permit;
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(
                    |payload| {
                        let message = panic_message(payload.as_ref());
                        tracing::error!(panic = %message, "evaluation panicked");
                        WorkError::Panicked
                    },
                );
                let _ = done.send(outcome);
            });
            jobs.send(job).map_err(|_| WorkError::Closed)?;
            result.await.map_err(|_| WorkError::Closed)?
        };
        tokio::time::timeout(deadline, task)
            .await
            .map_err(|_| WorkError::Timeout(deadline))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_results_and_contains_panics() {
        let pool = WorkerPool::new(1);
        assert_eq!(pool.run(Duration::from_secs(5), || 7).await, Ok(7));
        let panicked = pool
            .run(Duration::from_secs(5), || -> u8 { panic!("boom") })
            .await;
        assert_eq!(panicked, Err(WorkError::Panicked));
        assert_eq!(pool.run(Duration::from_secs(5), || 8).await, Ok(8));
    }

    #[tokio::test]
    async fn pool_threads_run_at_a_lower_priority() {
        let pool = WorkerPool::new(1);
        let niceness = pool
            .run(Duration::from_secs(5), || {
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
            })
            .await;
        let own = rustix::process::getpriority_process(None).ok();
        assert_eq!(
            niceness,
            Ok(own.map(|n| (n + POOL_NICENESS).min(19))),
            "the pool thread's nice value"
        );
        let policy = pool
            .run(Duration::from_secs(5), || {
                thread_priority::thread_schedule_policy().ok()
            })
            .await;
        assert_eq!(policy, Ok(Some(IDLE_POLICY)), "the pool thread's policy");
        let connection_task = thread_priority::thread_schedule_policy().ok();
        assert_ne!(
            connection_task,
            Some(IDLE_POLICY),
            "only the pool's threads"
        );
    }

    #[tokio::test]
    async fn the_pool_runs_on_threads_of_its_own_and_leaves_tokios_blocking_pool_alone() {
        let pool = WorkerPool::new(2);
        for _ in 0..4 {
            let name = pool
                .run(Duration::from_secs(5), || {
                    std::thread::current().name().map(String::from)
                })
                .await;
            assert!(
                matches!(&name, Ok(Some(n)) if n.starts_with("tollgate-eval-")),
                "{name:?}"
            );
        }
        // Reloads and the kube client share tokio's blocking pool: never lowered.
        for _ in 0..4 {
            let policy =
                tokio::task::spawn_blocking(|| thread_priority::thread_schedule_policy().ok())
                    .await
                    .ok()
                    .flatten();
            assert_ne!(policy, Some(IDLE_POLICY));
        }
    }

    #[test]
    fn inline_work_contains_panics() {
        assert_eq!(run_inline(|| 7), Ok(7));
        assert_eq!(
            run_inline(|| -> u8 { panic!("boom") }),
            Err(WorkError::Panicked)
        );
    }

    #[tokio::test]
    async fn queued_work_times_out_while_slots_are_busy() {
        let pool = WorkerPool::new(1);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let busy = pool.clone();
        let holder = tokio::spawn(async move {
            busy.run(Duration::from_secs(30), move || {
                let _ = started_tx.send(());
                release_rx.recv().is_ok()
            })
            .await
        });
        assert!(
            started_rx.await.is_ok(),
            "the holder must take the only slot"
        );
        let waited = pool.run(Duration::from_millis(100), || 1).await;
        assert_eq!(waited, Err(WorkError::Timeout(Duration::from_millis(100))));
        let _ = release_tx.send(());
        assert!(matches!(holder.await, Ok(Ok(true))));
    }
}
