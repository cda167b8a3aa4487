//! SLO-adaptive batching over a real ONNX Runtime conv net: it waits for
//! fuller batches when concurrent load gives it rows to wait for, and never
//! holds a caller that has nobody to share a batch with.

use engine::fixtures::Fixture;
use engine::{OrtFactory, OrtOptions};
use gpu_worker::scheduler::{Plan, Request, Scheduler, SchedulerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SLO: Duration = Duration::from_millis(50);
/// A request queued this long was held for a batch (no lone request on an
/// idle instance waits so long otherwise).
const HELD: Duration = Duration::from_micros(500);

fn start(f: &Fixture, delay: Duration, slo_p99: Option<Duration>) -> Scheduler {
    let factory = OrtFactory::new(f.model_path(), OrtOptions::default()).unwrap();
    let cfg = SchedulerConfig {
        max_batch_size: 8,
        max_queue_delay: delay,
        slo_p99,
        ..Default::default()
    };
    Scheduler::start("m", &[Arc::new(factory)], cfg).unwrap()
}

fn one_row(f: &Fixture) -> Request {
    Request {
        inputs: f.input_rows(0, 1),
        deadline: None,
        priority: 0,
    }
}

/// One caller, one request at a time, until `until` or `most` requests:
/// how many it sent, and how many of them were held `HELD` or longer.
async fn lone_caller(f: &Fixture, s: &Scheduler, until: Instant, most: usize) -> (usize, usize) {
    let (mut sent, mut held) = (0, 0);
    while sent < most && Instant::now() < until {
        let r = s.infer(one_row(f)).await.unwrap();
        sent += 1;
        if r.queue_time >= HELD {
            held += 1;
        }
    }
    (sent, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_closed_loop_caller_is_not_held() {
    let f = Fixture::load("convnet").unwrap();
    // A fixed 1 ms delay holds every one of its requests for the full delay.
    let fixed = start(&f, Duration::from_millis(1), None);
    let (sent, held) = lone_caller(&f, &fixed, Instant::now() + Duration::from_secs(30), 200).await;
    assert_eq!((sent, held), (200, 200));
    // Auto, over a dozen of its 100 ms windows: the caller arrives to an
    // idle model each time, so there is nothing to wait for.
    let auto = start(&f, Duration::ZERO, Some(SLO));
    let until = Instant::now() + Duration::from_millis(1200);
    let (sent, held) = lone_caller(&f, &auto, until, 100_000).await;
    assert!(sent >= 100, "only {sent} requests in 1.2 s");
    assert!(
        held * 20 <= sent,
        "{held} of {sent} requests held {HELD:?} or longer"
    );
    assert_eq!(auto.batching(), Plan::GREEDY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_is_waited_for_and_a_lone_caller_afterwards_is_not() {
    let f = Arc::new(Fixture::load("convnet").unwrap());
    let s = start(&f, Duration::ZERO, Some(SLO));
    assert_eq!(s.batching(), Plan::GREEDY, "nothing measured yet");
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (f, s, stop) = (f.clone(), s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = 0usize;
                while !stop.load(Ordering::Relaxed) && answered < 200_000 {
                    s.infer(one_row(&f)).await.unwrap();
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    // 32 callers on one instance: batches fill, and the plan waits for them.
    let until = Instant::now() + Duration::from_secs(20);
    let plan = loop {
        let p = s.batching();
        if !p.delay.is_zero() {
            break p;
        }
        assert!(Instant::now() < until, "the plan never waited under load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for c in callers {
        answered += c.await.unwrap();
    }
    assert!(plan.batch > 1 && plan.batch <= 8, "{plan:?}");
    // Wait for a batch of that size never costs more room than the SLO has.
    assert!(plan.delay < SLO, "{plan:?}");
    let stats = s.stats();
    assert_eq!(stats.inference_count as usize, answered);
    // The load gone, one caller alone is back to no waiting within a
    // window or two.
    let until = Instant::now() + Duration::from_secs(10);
    while s.batching() != Plan::GREEDY {
        assert!(Instant::now() < until, "still waiting: {:?}", s.batching());
        s.infer(one_row(&f)).await.unwrap();
    }
}
