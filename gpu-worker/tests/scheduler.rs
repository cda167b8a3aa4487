//! The scheduler over real ONNX Runtime sessions of the committed models.

use engine::fixtures::{Fixture, assert_close};
use engine::{EngineError, OrtFactory, OrtOptions, Tensor};
use gpu_worker::scheduler::{Request, Scheduler, SchedulerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start(fixture: &Fixture, config: SchedulerConfig) -> Scheduler {
    let factory = OrtFactory::new(fixture.model_path(), OrtOptions::default()).expect("load model");
    Scheduler::start("m", &[Arc::new(factory)], config).expect("start scheduler")
}

fn req(inputs: Vec<(String, Tensor)>) -> Request {
    Request {
        inputs,
        deadline: None,
        priority: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_match_onnx_runtime_reference() {
    for name in ["digits_mlp", "digits_logreg", "breast_cancer", "convnet"] {
        let f = Fixture::load(name).unwrap();
        let s = start(&f, SchedulerConfig::default());
        // The 16 rows as one request, then one row per request.
        let r = s.infer(req(f.input_rows(0, 16))).await.unwrap();
        for (spec, out) in s.signature().outputs.iter().zip(&r.outputs) {
            assert_close(&spec.name, out, &f.outputs[&spec.name], 0, 16, 1e-5);
        }
        for i in 0..16 {
            let r = s.infer(req(f.input_rows(i, i + 1))).await.unwrap();
            for (spec, out) in s.signature().outputs.iter().zip(&r.outputs) {
                assert_close(&spec.name, out, &f.outputs[&spec.name], i, i + 1, 1e-5);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_split_back() {
    let f = Fixture::load("digits_mlp").unwrap();
    let cfg = SchedulerConfig {
        max_queue_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let s = start(&f, cfg);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        let inputs = f.input_rows(i, i + 1);
        tasks.push(tokio::spawn(async move { (i, s.infer(req(inputs)).await) }));
    }
    let mut max_batch = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        let r = r.unwrap();
        max_batch = max_batch.max(r.batch_size);
        for (spec, out) in s.signature().outputs.iter().zip(&r.outputs) {
            assert_close(&spec.name, out, &f.outputs[&spec.name], i, i + 1, 1e-5);
        }
    }
    assert!(max_batch > 1, "16 concurrent requests never shared a batch");
    let stats = s.stats();
    assert_eq!(stats.inference_count, 16);
    assert!(
        stats.execution_count < 16,
        "executions {}",
        stats.execution_count
    );
    assert!(stats.batches.keys().any(|&b| b > 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_and_passed_deadline_are_refused() {
    let f = Fixture::load("convnet").unwrap();
    // One instance, no batching, a queue of 2: 32 at once must overflow it.
    let cfg = SchedulerConfig {
        max_batch_size: 1,
        max_queue_size: 2,
        ..Default::default()
    };
    let s = start(&f, cfg);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        let inputs = f.input_rows(0, 1);
        tasks.push(tokio::spawn(async move { s.infer(req(inputs)).await }));
    }
    let mut exhausted = 0;
    for t in tasks {
        if let Err(EngineError::ResourceExhausted(m)) = t.await.unwrap() {
            assert!(m.contains("full"), "{m}");
            exhausted += 1;
        }
    }
    assert!(
        exhausted > 0,
        "32 requests into a queue of 2 were all accepted"
    );

    let past = Request {
        inputs: f.input_rows(0, 1),
        deadline: Some(Instant::now()),
        priority: 0,
    };
    assert_eq!(
        s.infer(past).await.unwrap_err(),
        EngineError::DeadlineExceeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_in_the_queue_never_runs() {
    let f = Fixture::load("convnet").unwrap();
    let s = start(
        &f,
        SchedulerConfig {
            max_batch_size: 16,
            ..Default::default()
        },
    );
    // Occupy the only instance with 16 convnet rows (several ms), then queue a
    // request whose deadline passes before the instance is free.
    let busy = {
        let s = s.clone();
        let inputs = f.input_rows(0, 16);
        tokio::spawn(async move { s.infer(req(inputs)).await })
    };
    let until = Instant::now() + Duration::from_secs(10);
    while s.dispatched() == 0 {
        assert!(Instant::now() < until, "busy batch never dispatched");
        tokio::task::yield_now().await;
    }
    let short = Request {
        inputs: f.input_rows(0, 1),
        deadline: Some(Instant::now() + Duration::from_micros(300)),
        priority: 0,
    };
    assert_eq!(
        s.infer(short).await.unwrap_err(),
        EngineError::DeadlineExceeded
    );
    busy.await.unwrap().unwrap();
    assert_eq!(s.stats().inference_count, 16, "the expired request ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_with_the_input_named() {
    let f = Fixture::load("digits_mlp").unwrap();
    let s = start(&f, SchedulerConfig::default());
    let mut inputs = f.input_rows(0, 1);
    inputs[0].0 = "pixels".into();
    match s.infer(req(inputs)).await {
        Err(EngineError::InvalidArgument(m)) => assert!(m.contains("'input'"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_one_is_served_before_waiting_lower_priority() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let f = Fixture::load("convnet").unwrap();
    // Every request is a full batch of 16 rows (several ms each), so the
    // order batches run in is the order requests are served in.
    let cfg = SchedulerConfig {
        max_batch_size: 16,
        priority_levels: 2,
        default_priority: 2,
        ..Default::default()
    };
    let s = start(&f, cfg);
    let full = |priority| Request {
        inputs: f.input_rows(0, 16),
        deadline: None,
        priority,
    };
    let busy = {
        let (s, r) = (s.clone(), full(2));
        tokio::spawn(async move { s.infer(r).await.unwrap() })
    };
    let until = Instant::now() + Duration::from_secs(10);
    while s.dispatched() == 0 {
        assert!(Instant::now() < until, "first batch never dispatched");
        tokio::task::yield_now().await;
    }
    let done_low = Arc::new(AtomicUsize::new(0));
    let mut lows = Vec::new();
    for _ in 0..3 {
        let (s, done, r) = (s.clone(), done_low.clone(), full(2));
        lows.push(tokio::spawn(async move {
            s.infer(r).await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    while s.queue_depth() + s.dispatched() < 4 {
        assert!(Instant::now() < until, "low-priority requests never queued");
        tokio::task::yield_now().await;
    }
    // Low requests already handed to the instance (besides the first) may
    // finish first, and one more if the instance frees up between this read
    // and the high request's arrival; none other may. FIFO would let all 3.
    let lows_dispatched = s.dispatched() - 1;
    s.infer(full(1)).await.unwrap();
    let low_done_first = done_low.load(Ordering::SeqCst);
    assert!(
        low_done_first <= lows_dispatched + 1,
        "{low_done_first} low-priority requests finished before the high one ({lows_dispatched} had been dispatched)"
    );
    busy.await.unwrap();
    for t in lows {
        t.await.unwrap();
    }
}
