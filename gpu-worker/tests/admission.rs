//! Deadline-aware admission over real ONNX Runtime sessions: a request
//! whose deadline the queue ahead of it would make it miss is refused at
//! arrival, and never runs.

use engine::fixtures::Fixture;
use engine::{EngineError, OrtFactory, OrtOptions};
use gpu_worker::scheduler::{Request, Scheduler, SchedulerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 8;
const WARMUPS: u64 = 8;
const FLOOD: usize = 400;

/// One convnet instance, batches of 8, warmed up so its speed is known;
/// and that speed: the mean time of a full batch.
async fn warm(deadline_admission: bool) -> (Fixture, Scheduler, Duration) {
    let f = Fixture::load("convnet").unwrap();
    let factory = OrtFactory::new(f.model_path(), OrtOptions::default()).unwrap();
    let cfg = SchedulerConfig {
        max_batch_size: BATCH,
        deadline_admission,
        ..Default::default()
    };
    let s = Scheduler::start("m", &[Arc::new(factory)], cfg).unwrap();
    for _ in 0..WARMUPS {
        s.infer(request(&f, BATCH, None)).await.unwrap();
    }
    let infer = s.stats().batches[&BATCH].compute_infer;
    let per_batch = Duration::from_nanos(infer.ns / infer.count);
    (f, s, per_batch)
}

fn request(f: &Fixture, rows: usize, deadline: Option<Instant>) -> Request {
    Request {
        inputs: f.input_rows(0, rows),
        deadline,
        priority: 0,
    }
}

/// Queues `FLOOD` full-batch requests and waits until at least 13 (104
/// rows, 13 batches) are waiting. Full batches, so the queue outgrows what
/// the instance drains even on a loaded machine.
async fn flood(f: &Fixture, s: &Scheduler) -> Vec<tokio::task::JoinHandle<()>> {
    let tasks: Vec<_> = (0..FLOOD)
        .map(|_| {
            let (s, r) = (s.clone(), request(f, BATCH, None));
            tokio::spawn(async move { s.infer(r).await.map(|_| ()).unwrap() })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    while s.queue_depth() < 13 {
        assert!(Instant::now() < until, "the flood never queued 13 batches");
        tokio::task::yield_now().await;
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_the_queue_would_miss_is_refused_at_arrival() {
    let (f, s, per_batch) = warm(true).await;
    let flooded = flood(&f, &s).await;
    // ≥ 13 batches ahead: 5 batches' time cannot be enough.
    let started = Instant::now();
    let tight = request(&f, 1, Some(started + per_batch * 5));
    match s.infer(tight).await {
        Err(EngineError::ResourceExhausted(m)) => {
            assert!(m.contains("cannot answer within the deadline"), "{m}");
            assert!(m.contains("rows queued ahead"), "{m}");
        }
        other => panic!("expected a refusal at arrival, got {other:?}"),
    }
    // Refused without waiting: well before the deadline it could not meet.
    assert!(started.elapsed() < per_batch * 5, "{:?}", started.elapsed());
    // A deadline the queue can meet is admitted and answered.
    let roomy = request(&f, 1, Some(Instant::now() + Duration::from_secs(30)));
    s.infer(roomy).await.unwrap();
    for t in flooded {
        t.await.unwrap();
    }
    let ran = s.stats().inference_count;
    assert_eq!(
        ran,
        (WARMUPS + FLOOD as u64) * BATCH as u64 + 1,
        "the refused request ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admission_the_same_request_expires_in_the_queue() {
    let (f, s, per_batch) = warm(false).await;
    let flooded = flood(&f, &s).await;
    let tight = request(&f, 1, Some(Instant::now() + per_batch * 5));
    assert_eq!(
        s.infer(tight).await.unwrap_err(),
        EngineError::DeadlineExceeded
    );
    for t in flooded {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_admits_any_deadline() {
    let (f, s, _) = warm(true).await;
    // Nothing ahead: even a deadline shorter than one run is admitted (and
    // then met or not by the run itself), as without admission.
    let r = request(&f, 1, Some(Instant::now() + Duration::from_secs(5)));
    s.infer(r).await.unwrap();
    let r = request(&f, 1, Some(Instant::now() + Duration::from_nanos(1)));
    match s.infer(r).await {
        Ok(_) | Err(EngineError::DeadlineExceeded) => {}
        other => panic!("an idle worker refused: {other:?}"),
    }
}
