//! What every handler shares: the configuration, the live policy set, metrics, readiness and the
//! bounded evaluation pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tollgate_engine::Store;

use super::deadline;
use super::routes::Endpoint;
use super::worker::{WorkError, WorkerPool};
use crate::metrics::Metrics;
use crate::traces::Traces;

/// Reviews being read or judged at once, across all connections. Excess reviews are answered at
/// once with 429 and `Retry-After` instead of queueing without bound.
#[derive(Debug)]
pub struct InFlightLimit(tokio::sync::Semaphore);

impl InFlightLimit {
    pub fn new(max: usize) -> Self {
        Self(tokio::sync::Semaphore::new(max.max(1)))
    }

    /// A slot, if one is free.
    pub fn try_acquire(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::TryAcquireError> {
        self.0.try_acquire()
    }
}

/// Far above what a healthy apiserver sends at once (its webhook calls are bounded by its own
/// in-flight limits), low enough that `max_in_flight × max_body_bytes` stays a memory bound.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a client may take to send its body.
    pub body_read_timeout: Duration,
    /// Evaluation budget when the caller gives no `?timeout=`.
    pub default_eval_timeout: Duration,
    /// Upper bound on any evaluation budget.
    pub max_eval_timeout: Duration,
    /// Evaluations running at once on the worker pool; further ones queue (within their
    /// deadline).
    pub eval_concurrency: usize,
    /// Reviews up to this size are read (and, when their policies do not iterate, judged) right
    /// on the connection's task; larger ones go to the pool whole (see `review.rs`).
    pub inline_max_bytes: usize,
    /// Reviews read or judged at once; more get 429 with `Retry-After` (see `guard.rs`).
    pub max_in_flight: usize,
    /// Endpoints a client without a certificate may call when mutual TLS lets it connect.
    pub anonymous_endpoints: Vec<Endpoint>,
    /// The username (the reconciler's ServiceAccount) whose restores are judged on the state
    /// they return to rather than as a change from the failed one; `None` trusts no one.
    pub restorer: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 7 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(10),
            default_eval_timeout: Duration::from_secs(9),
            max_eval_timeout: Duration::from_secs(30),
            eval_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            inline_max_bytes: 32 * 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            anonymous_endpoints: Vec::new(),
            restorer: None,
        }
    }
}

/// The active policy set; a reload builds a whole new `Store` and swaps the pointer.
#[derive(Debug, Default)]
pub struct SharedStore(RwLock<Arc<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> Self {
        Self(RwLock::new(Arc::new(store)))
    }

    pub fn current(&self) -> Arc<Store> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn replace(&self, store: Store) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(store);
    }
}

struct Inner {
    config: HttpConfig,
    store: SharedStore,
    metrics: Metrics,
    ready: AtomicBool,
    /// Why the last registration attempt failed, while it does (`serve --register`).
    registration_problem: std::sync::Mutex<Option<String>>,
    workers: WorkerPool,
    in_flight_limit: InFlightLimit,
    traces: Option<Arc<Traces>>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(config: HttpConfig, store: Store, metrics: Metrics) -> Self {
        Self::traced(config, store, metrics, None)
    }

    /// A state whose reviews are traced through `traces` (when given).
    pub fn traced(
        config: HttpConfig,
        store: Store,
        metrics: Metrics,
        traces: Option<Arc<Traces>>,
    ) -> Self {
        metrics.set_policy_set(&store);
        let workers = WorkerPool::new(config.eval_concurrency);
        let in_flight_limit = InFlightLimit::new(config.max_in_flight);
        Self(Arc::new(Inner {
            in_flight_limit,
            config,
            store: SharedStore::new(store),
            metrics,
            ready: AtomicBool::new(false),
            registration_problem: std::sync::Mutex::new(None),
            workers,
            traces,
        }))
    }

    pub fn config(&self) -> &HttpConfig {
        &self.0.config
    }

    pub fn store(&self) -> &SharedStore {
        &self.0.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn traces(&self) -> Option<&Traces> {
        self.0.traces.as_deref()
    }

    pub fn in_flight_limit(&self) -> &InFlightLimit {
        &self.0.in_flight_limit
    }

    pub fn workers(&self) -> &WorkerPool {
        &self.0.workers
    }

    /// Runs `work` against `store` (the policy set the caller already holds) on the worker pool,
    /// within the budget the caller's `?timeout=` (or the server default) allows.
    pub async fn run_pooled<T, F>(
        &self,
        query: Option<&str>,
        store: Arc<Store>,
        work: F,
    ) -> Result<T, WorkError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let config = self.config();
        let budget = deadline::budget(query, config.default_eval_timeout, config.max_eval_timeout);
        self.workers().run(budget, move || work(&store)).await
    }

    /// Runs `work` (reading a large review) on the worker pool, bounded only by the longest
    /// evaluation budget.
    pub async fn run_pooled_reading<T, F>(&self, work: F) -> Result<T, WorkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.workers()
            .run(self.config().max_eval_timeout, work)
            .await
    }

    /// Records the outcome of a registration attempt: `Some(reason)` when it failed.
    pub fn set_registration_problem(&self, problem: Option<String>) {
        let failing = problem.is_some();
        *self
            .0
            .registration_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = problem;
        self.metrics().registration_failing.set(i64::from(failing));
        if failing {
            self.metrics().registration_failures.inc();
        }
    }

    pub fn registration_problem(&self) -> Option<String> {
        self.0
            .registration_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }
}
