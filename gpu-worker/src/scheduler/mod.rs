//! Dynamic micro-batching, one scheduler per deployment.
//!
//! The scheduler is an actor: one task owns the queues and the set of free
//! model instances; callers send a request and await a oneshot reply. Each
//! instance is a dedicated OS thread (sessions run with `&mut self` and block),
//! and tells the actor when it is free again. A batch is formed only when an
//! instance is free, so under load batches grow by themselves.

mod adaptive;
mod batch;
mod exported;
pub use exported::sample_memory;
mod service;
mod stats;
mod traced;

pub use adaptive::Plan;
pub use batch::{compatible, concat, split, validate};
pub use stats::{BatchRecord, BatchStats, Duration64, ModelStats};

use engine::{Backend, BackendFactory, Device, EngineError, ModelSignature, Tensor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{Span, debug, debug_span, warn};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Largest batch in rows; 0 runs each request alone (model without a
    /// dynamic batch dimension, as Triton's max_batch_size 0).
    pub max_batch_size: usize,
    /// How long the oldest request may wait for a fuller batch. Default 0
    /// (as Triton's): a lone request runs at once, and batches still form
    /// under load from what queues while the instances are busy. Waits use
    /// tokio's timer, whose resolution is 1 ms.
    pub max_queue_delay: Duration,
    /// Batch sizes dispatched at once without waiting for the delay.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests waiting at most; past it RESOURCE_EXHAUSTED. 0 = unbounded.
    pub max_queue_size: usize,
    /// Model instances, each on its own thread.
    pub instances: usize,
    /// Priority levels (1 is served first); a request's 0 means the default.
    pub priority_levels: u32,
    pub default_priority: u32,
    /// Refuse at arrival (RESOURCE_EXHAUSTED) a request whose deadline the
    /// predicted queue wait would miss, rather than queue it to expire.
    pub deadline_admission: bool,
    /// SLO-adaptive batching: with a p99 target for queue + compute, the
    /// delay and the batch size waited for are chosen from the measured
    /// execution-time curve and arrival rate (`adaptive`), and
    /// `max_queue_delay` and `preferred_batch_sizes` are not used.
    pub slo_p99: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch_size: 32,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 1024,
            instances: 1,
            priority_levels: 2,
            default_priority: 2,
            deadline_admission: true,
            slo_p99: None,
        }
    }
}

pub struct Request {
    pub inputs: Vec<(String, Tensor)>,
    pub deadline: Option<Instant>,
    pub priority: u32,
}

#[derive(Debug)]
pub struct Response {
    pub outputs: Vec<Tensor>,
    /// Rows in the batch this request ran in.
    pub batch_size: usize,
    /// The batch (per instance) it ran in, as in the `batch` span.
    pub instance: usize,
    pub batch_id: u64,
    pub queue_time: Duration,
    pub compute_time: Duration,
}

type Reply = oneshot::Sender<Result<Response, EngineError>>;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    deadline: Option<Instant>,
    reply: Reply,
    /// The request's span, which its batch links to; and its queue wait,
    /// closed when the batch starts (both off unless traces are exported).
    span: Span,
    queue_wait: Span,
}

enum Msg {
    Enqueue(Pending, usize),
    InstanceFree(usize),
}

struct Shared {
    name: String,
    signature: ModelSignature,
    /// Triton's name for the model's backend, for metadata.
    platform: &'static str,
    devices: Vec<Device>,
    config: SchedulerConfig,
    tx: mpsc::UnboundedSender<Msg>,
    queued: AtomicUsize,
    /// Rows of the queued requests: the work a new arrival waits behind.
    queued_rows: AtomicUsize,
    service: service::ServiceTimes,
    /// Adaptive batching: requests answered, and those over the SLO, since
    /// the controller last looked; and the plan it chose, for `batching`.
    answered: AtomicUsize,
    late: AtomicUsize,
    plan_delay_us: AtomicU64,
    plan_batch: AtomicUsize,
    /// Requests handed to an instance so far.
    dispatched: AtomicUsize,
    stats: Mutex<ModelStats>,
    /// Set when traffic starts (`reset_stats`): warm-up runs are not
    /// exported, as they are not in ModelStatistics.
    metrics: std::sync::OnceLock<exported::ModelMetrics>,
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Loads `config.instances` instances per factory (one factory per
    /// device the model is placed on, each instance on its own thread) and
    /// starts the actor. Fails if any instance cannot be created. Afterwards
    /// `config().instances` counts them all.
    pub fn start(
        name: impl Into<String>,
        factories: &[Arc<dyn BackendFactory>],
        mut config: SchedulerConfig,
    ) -> Result<Self, EngineError> {
        let first = factories
            .first()
            .ok_or_else(|| EngineError::Runtime("a model needs at least one device".into()))?;
        let signature = first.signature().clone();
        // Instance `id` is made by `placed[id]`: `config.instances` of each.
        let placed: Vec<&Arc<dyn BackendFactory>> = factories
            .iter()
            .flat_map(|f| std::iter::repeat_n(f, config.instances.max(1)))
            .collect();
        let devices: Vec<Device> = placed.iter().map(|f| f.device()).collect();
        config.instances = placed.len();
        if !signature.batched {
            config.max_batch_size = 0;
        }
        config.instances = config.instances.max(1);
        config.priority_levels = config.priority_levels.max(1);
        config.default_priority = config.default_priority.clamp(1, config.priority_levels);
        let (tx, rx) = mpsc::unbounded_channel();
        let service = service::ServiceTimes::new(config.max_batch_size, config.instances);
        let shared = Arc::new(Shared {
            name: name.into(),
            queued_rows: AtomicUsize::new(0),
            service,
            answered: AtomicUsize::new(0),
            late: AtomicUsize::new(0),
            plan_delay_us: AtomicU64::new(0),
            plan_batch: AtomicUsize::new(1),
            signature,
            platform: first.platform(),
            devices,
            config,
            tx,
            queued: AtomicUsize::new(0),
            dispatched: AtomicUsize::new(0),
            stats: Mutex::new(ModelStats::default()),
            metrics: std::sync::OnceLock::new(),
        });
        let mut instances = Vec::with_capacity(shared.config.instances);
        for (id, factory) in placed.into_iter().enumerate() {
            instances.push(spawn_instance(id, factory.clone(), shared.clone())?);
        }
        tokio::spawn(run_actor(rx, instances, shared.clone()));
        Ok(Scheduler { shared })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.shared.signature
    }

    /// The device of each instance, by instance id.
    pub fn devices(&self) -> &[Device] {
        &self.shared.devices
    }

    /// `onnxruntime_onnx` or `pytorch_libtorch`.
    pub fn platform(&self) -> &'static str {
        self.shared.platform
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> ModelStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Forgets the counters: warm-up runs are not traffic (as with Triton's
    /// model warmup, they do not show in ModelStatistics).
    pub fn reset_stats(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = ModelStats::default();
        }
        let s = &self.shared;
        let m = s.metrics.get_or_init(|| {
            exported::ModelMetrics::new(&s.name, s.config.instances, s.config.max_queue_size)
        });
        // From here on the actor sets them whenever its plan changes.
        let plan = self.batching();
        m.delay.set(plan.delay.as_secs_f64());
        m.target.set(plan.batch as f64);
    }

    /// How batches are dispatched now: the configured delay, or under
    /// adaptive batching what the controller last chose.
    pub fn batching(&self) -> Plan {
        let s = &self.shared;
        if s.config.slo_p99.is_none() {
            return Plan {
                delay: s.config.max_queue_delay,
                batch: s.config.max_batch_size.max(1),
            };
        }
        Plan {
            delay: Duration::from_micros(s.plan_delay_us.load(Ordering::Relaxed)),
            batch: s.plan_batch.load(Ordering::Relaxed),
        }
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Requests handed to a model instance since start.
    pub fn dispatched(&self) -> usize {
        self.shared.dispatched.load(Ordering::Acquire)
    }

    /// Validates, queues and awaits one request. Invalid input, a passed
    /// deadline or one the queue would make it miss, and a full queue are
    /// answered at once.
    pub async fn infer(&self, req: Request) -> Result<Response, EngineError> {
        let s = &self.shared;
        let start = Instant::now();
        let inputs = validate(&s.signature, s.config.max_batch_size, req.inputs)?;
        if req.deadline.is_some_and(|d| d <= start) {
            return Err(self.refuse(EngineError::DeadlineExceeded, start));
        }
        let rows = if s.config.max_batch_size > 0 {
            inputs[0].rows()
        } else {
            1
        };
        // Before a queue slot is taken: a refusal here touches no counter
        // that other arrivals read.
        if let Some(why) = self.cannot_make(req.deadline, rows, start) {
            if let Some(m) = s.metrics.get() {
                m.late.increment(1);
            }
            return Err(self.refuse(EngineError::ResourceExhausted(why), start));
        }
        let limit = s.config.max_queue_size;
        if limit > 0 && s.queued.fetch_add(1, Ordering::AcqRel) >= limit {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(m) = s.metrics.get() {
                m.queue_full.increment(1);
            }
            let msg = format!(
                "queue of model '{}' is full ({limit} requests waiting)",
                s.name
            );
            return Err(self.refuse(EngineError::ResourceExhausted(msg), start));
        } else if limit == 0 {
            s.queued.fetch_add(1, Ordering::AcqRel);
        }
        let level = match req.priority {
            0 => s.config.default_priority,
            p => p.min(s.config.priority_levels),
        } as usize
            - 1;
        s.queued_rows.fetch_add(rows, Ordering::AcqRel);
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            inputs,
            rows,
            enqueued: start,
            deadline: req.deadline,
            reply,
            span: Span::current(),
            queue_wait: proto::trace::child_span!("queue wait", model = %s.name, rows),
        };
        if s.tx.send(Msg::Enqueue(pending, level)).is_err() {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            s.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(EngineError::Unavailable(format!(
                "model '{}' is shutting down",
                s.name
            )));
        }
        let result = rx
            .await
            .unwrap_or_else(|_| Err(EngineError::Internal("model instance stopped".into())));
        // Ties the request to its batch's span (`batch{instance, id}`).
        match &result {
            Ok(r) => {
                debug!(model = %s.name, rows, instance = r.instance, batch = r.batch_id, batch_size = r.batch_size, queue_us = r.queue_time.as_micros() as u64, "request done")
            }
            Err(e) => debug!(model = %s.name, rows, error = %e, "request failed"),
        }
        let queue = result.as_ref().ok().map(|r| r.queue_time);
        if let Ok(mut st) = s.stats.lock() {
            st.record_request(result.is_ok(), start.elapsed(), queue);
        }
        if let Some(m) = s.metrics.get() {
            match &result {
                Ok(_) => m.ok.increment(1),
                Err(_) => m.failed.increment(1),
            }
        }
        result
    }

    /// Why a request of `rows` with `deadline` would be answered too late
    /// if queued now, or `None` to queue it. Its answer must come before
    /// the time the callers' own timers fire (`proto::within_deadline`
    /// gives up at 90 % of the time left), with a margin for the error of
    /// the prediction: hence 80 %.
    fn cannot_make(&self, deadline: Option<Instant>, rows: usize, now: Instant) -> Option<String> {
        let s = &self.shared;
        let left = deadline?.saturating_duration_since(now);
        if !s.config.deadline_admission {
            return None;
        }
        let ahead = s.queued_rows.load(Ordering::Acquire);
        let wait = s
            .service
            .predict(rows, ahead, s.config.max_batch_size, now)?;
        if wait.total <= left.mul_f64(0.8) {
            return None;
        }
        Some(format!(
            "model '{}' cannot answer within the deadline: {:.1} ms left, about {:.1} ms predicted ({} rows queued ahead, ~{:.0} rows/s); retry later or on another replica",
            s.name,
            left.as_secs_f64() * 1e3,
            wait.total.as_secs_f64() * 1e3,
            wait.rows_ahead,
            wait.rows_per_s
        ))
    }

    fn refuse(&self, e: EngineError, start: Instant) -> EngineError {
        if let Ok(mut st) = self.shared.stats.lock() {
            st.record_request(false, start.elapsed(), None);
        }
        e
    }
}

type BatchTx = std::sync::mpsc::Sender<(Vec<Pending>, Instant)>;

fn spawn_instance(
    id: usize,
    factory: Arc<dyn BackendFactory>,
    shared: Arc<Shared>,
) -> Result<BatchTx, EngineError> {
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<Pending>, Instant)>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("{}-{id}", shared.name))
        .spawn(move || {
            let mut backend = match factory.create() {
                Ok(b) => {
                    let _ = ready_tx.send(Ok(()));
                    b
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut batch_id: u64 = 0;
            let mut actor_gone = false;
            while let Ok((batch, dispatched)) = rx.recv() {
                batch_id += 1;
                // "Free" goes out just before the answers: both wake the
                // runtime thread, and sent back to back they are seen in
                // one wake-up instead of two. A batch the actor sends
                // meanwhile waits in the channel until the answers are out.
                let free = || actor_gone = shared.tx.send(Msg::InstanceFree(id)).is_err();
                run_batch(
                    &shared,
                    backend.as_mut(),
                    batch,
                    dispatched,
                    id,
                    batch_id,
                    free,
                );
                if actor_gone {
                    break;
                }
            }
        })
        .map_err(|e| EngineError::Runtime(format!("cannot start instance thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Runtime("instance thread died while loading".into()))??;
    Ok(tx)
}

fn run_batch(
    shared: &Shared,
    backend: &mut dyn Backend,
    mut batch: Vec<Pending>,
    dispatched: Instant,
    instance: usize,
    id: u64,
    before_answers: impl FnOnce(),
) {
    let rows: Vec<usize> = batch.iter().map(|p| p.rows).collect();
    let total: usize = rows.iter().sum();
    let _span = debug_span!("batch", model = %shared.name, instance, id, size = total, requests = batch.len()).entered();
    let _traced = traced::trace_batch(shared, &mut batch, instance, id, total);
    let t0 = Instant::now();
    shared.service.started(instance, total, t0);
    let views: Vec<&[Tensor]> = batch.iter().map(|p| p.inputs.as_slice()).collect();
    let inputs = concat(&views);
    let t1 = Instant::now();
    let result = backend.run(inputs);
    let t2 = Instant::now();
    let outputs = result.and_then(|o| split(o, &rows));
    let t3 = Instant::now();
    if outputs.is_ok() {
        shared.service.finished(instance, total, t3 - t0);
    } else {
        // A failed run's time says nothing of the model's speed.
        shared.service.idle(instance);
    }
    let record = BatchRecord {
        rows: total,
        requests: batch.len() as u64,
        input: t1 - t0,
        infer: t2 - t1,
        output: t3 - t2,
        ok: outputs.is_ok(),
    };
    if let Ok(mut st) = shared.stats.lock() {
        st.record_batch(&record);
    }
    let series = shared.metrics.get();
    if let Some(m) = series {
        m.executions.increment(1);
        m.batch_size.record(total as f64);
        m.compute.record((t3 - t0).as_secs_f64());
        if let Some(busy) = m.busy.get(instance) {
            busy.increment((t3 - t0).as_micros() as u64);
        }
        if outputs.is_ok() {
            m.inferences.increment(total as u64);
        }
    }
    if let Some(slo) = shared.config.slo_p99 {
        let late = batch.iter().filter(|p| t3 - p.enqueued > slo).count();
        shared.answered.fetch_add(batch.len(), Ordering::Relaxed);
        shared.late.fetch_add(late, Ordering::Relaxed);
    }
    before_answers();
    match outputs {
        Ok(parts) => {
            for (p, outputs) in batch.into_iter().zip(parts) {
                let queue_time = dispatched.saturating_duration_since(p.enqueued);
                if let Some(m) = series {
                    m.queue.record(queue_time.as_secs_f64());
                }
                let resp = Response {
                    outputs,
                    batch_size: total,
                    instance,
                    batch_id: id,
                    queue_time,
                    compute_time: t3 - t0,
                };
                let _ = p.reply.send(Ok(resp));
            }
        }
        Err(e) => {
            warn!(error = %e, "batch failed");
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

async fn run_actor(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    instances: Vec<BatchTx>,
    shared: Arc<Shared>,
) {
    let levels = shared.config.priority_levels as usize;
    let mut queues: Vec<VecDeque<Pending>> = (0..levels).map(|_| VecDeque::new()).collect();
    let mut free: Vec<usize> = (0..instances.len()).rev().collect();
    let mut wake: Option<Instant> = None;
    let mut ctl = shared
        .config
        .slo_p99
        .map(|slo| adaptive::Controller::new(slo, Instant::now()));
    if let Some(c) = &ctl {
        publish(&shared, c.plan);
    }
    loop {
        // `None` from the timer arm means "the batch delay ran out".
        let msg = match wake {
            Some(at) => tokio::select! {
                m = rx.recv() => match m { Some(m) => Some(m), None => break },
                () = tokio::time::sleep_until(at.into()) => None,
            },
            None => match rx.recv().await {
                Some(m) => Some(m),
                None => break,
            },
        };
        if let Some(m) = msg {
            apply(m, &mut queues, &mut free, instances.len(), ctl.as_mut());
        }
        // Take whatever else has arrived before deciding, so a burst of
        // requests lands in one batch rather than the first alone.
        while let Ok(m) = rx.try_recv() {
            apply(m, &mut queues, &mut free, instances.len(), ctl.as_mut());
        }
        if let Some(c) = ctl.as_mut() {
            replan(&shared, c);
        }
        // While every instance is busy, dispatch does not run; a full queue
        // would then keep refusing callers because of requests already dead.
        let limit = shared.config.max_queue_size;
        if limit > 0 && free.is_empty() && shared.queued.load(Ordering::Acquire) >= limit {
            drop_dead(&shared, &mut queues, Instant::now());
        }
        wake = dispatch(&shared, &mut queues, &mut free, &instances, ctl.as_mut());
        if let Some(m) = shared.metrics.get() {
            m.depth.set(shared.queued.load(Ordering::Relaxed) as f64);
        }
    }
    debug!(model = %shared.name, "scheduler stopped");
}

fn apply(
    msg: Msg,
    queues: &mut [VecDeque<Pending>],
    free: &mut Vec<usize>,
    instances: usize,
    ctl: Option<&mut adaptive::Controller>,
) {
    match msg {
        Msg::Enqueue(p, level) => {
            if let Some(c) = ctl {
                let others = free.len() < instances || queues.iter().any(|q| !q.is_empty());
                c.arrived(p.rows, others);
            }
            queues[level].push_back(p)
        }
        Msg::InstanceFree(id) => free.push(id),
    }
}

/// Once a window, lets the controller choose again from what the
/// instances measured and saw, and says so when the plan changes.
fn replan(shared: &Shared, c: &mut adaptive::Controller) {
    let now = Instant::now();
    if !c.due(now) {
        return;
    }
    let outcomes = adaptive::Outcomes {
        answered: shared.answered.swap(0, Ordering::Relaxed),
        late: shared.late.swap(0, Ordering::Relaxed),
    };
    let exec = |rows| shared.service.estimate(rows);
    let (max, instances) = (shared.config.max_batch_size, shared.config.instances);
    if let Some(plan) = c.replan(now, outcomes, exec, max, instances) {
        debug!(model = %shared.name, delay_us = plan.delay.as_micros() as u64, batch = plan.batch, slo_ms = c.slo().as_secs_f64() * 1e3, "batching plan changed");
        publish(shared, plan);
    }
}

fn publish(shared: &Shared, plan: Plan) {
    shared
        .plan_delay_us
        .store(plan.delay.as_micros() as u64, Ordering::Relaxed);
    shared.plan_batch.store(plan.batch, Ordering::Relaxed);
    if let Some(m) = shared.metrics.get() {
        m.delay.set(plan.delay.as_secs_f64());
        m.target.set(plan.batch as f64);
    }
}

/// Answers and removes requests that can no longer be served: past their
/// deadline (DEADLINE_EXCEEDED, never run) or abandoned by their caller.
fn drop_dead(shared: &Shared, queues: &mut [VecDeque<Pending>], now: Instant) {
    for q in queues.iter_mut() {
        q.retain_mut(|p| {
            let expired = p.deadline.is_some_and(|d| d <= now);
            if !expired && !p.reply.is_closed() {
                return true;
            }
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.queued_rows.fetch_sub(p.rows, Ordering::AcqRel);
            if expired {
                if let Some(m) = shared.metrics.get() {
                    m.deadline.increment(1);
                }
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut p.reply, tx);
                let _ = reply.send(Err(EngineError::DeadlineExceeded));
            }
            false
        });
    }
}

/// Sends batches to free instances while there is work, and returns when the
/// actor should look again if it is waiting for a fuller batch.
fn dispatch(
    shared: &Shared,
    queues: &mut [VecDeque<Pending>],
    free: &mut Vec<usize>,
    instances: &[BatchTx],
    mut ctl: Option<&mut adaptive::Controller>,
) -> Option<Instant> {
    let cfg = &shared.config;
    // Fixed: the configured delay and preferred sizes. Adaptive: the
    // controller's delay, and its batch size goes at once.
    let (delay, target) = match ctl.as_deref() {
        Some(c) => (c.plan.delay, c.plan.batch),
        None => (cfg.max_queue_delay, usize::MAX),
    };
    loop {
        if free.is_empty() || queues.iter().all(VecDeque::is_empty) {
            return None;
        }
        let now = Instant::now();
        drop_dead(shared, queues, now);
        // Walk the queues in priority order, taking requests that stack with
        // the first, until the batch is full or an incompatible one blocks.
        let mut take: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        let mut closed = false;
        let mut head: Option<&Pending> = None;
        'scan: for (level, q) in queues.iter().enumerate() {
            for (i, p) in q.iter().enumerate() {
                let Some(h) = head else {
                    head = Some(p);
                    rows = p.rows;
                    take.push((level, i));
                    if cfg.max_batch_size == 0 || rows >= cfg.max_batch_size {
                        closed = true;
                        break 'scan;
                    }
                    continue;
                };
                if !compatible(&h.inputs, &p.inputs) || rows + p.rows > cfg.max_batch_size {
                    closed = true;
                    break 'scan;
                }
                rows += p.rows;
                take.push((level, i));
                if rows >= cfg.max_batch_size {
                    closed = true;
                    break 'scan;
                }
            }
        }
        let head = head?;
        let due = head.enqueued + delay;
        let filled = closed
            || rows >= target
            || (ctl.is_none() && cfg.preferred_batch_sizes.contains(&rows));
        if !filled && now < due {
            return Some(due);
        }
        if let Some(c) = ctl.as_deref_mut()
            && !delay.is_zero()
        {
            c.dispatched(!filled);
        }
        // The instance first: requests leave the queue only when one takes them.
        let instance = free.pop()?;
        // Remove back to front so earlier indices stay valid.
        let mut batch: Vec<Pending> = Vec::with_capacity(take.len());
        for &(level, i) in take.iter().rev() {
            if let Some(p) = queues[level].remove(i) {
                batch.push(p);
            }
        }
        batch.reverse();
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let rows: usize = batch.iter().map(|p| p.rows).sum();
        shared.queued_rows.fetch_sub(rows, Ordering::AcqRel);
        shared.dispatched.fetch_add(batch.len(), Ordering::AcqRel);
        if let Err(e) = instances[instance].send((batch, Instant::now())) {
            // The instance thread is gone; its requests are answered by
            // dropping their reply senders (the caller sees an internal error).
            warn!(model = %shared.name, instance, "instance thread stopped");
            drop(e);
        }
    }
}
