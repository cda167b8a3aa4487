//! A TorchScript model served through the same scheduler as ONNX models:
//! concurrent requests are batched, and each row's answer is the fixture's.

use engine::fixtures::{Fixture, assert_close};
use engine::torch_fixtures::{tempdir, traced_convnet};
use engine::{OrtOptions, open_model};
use gpu_worker::scheduler::{Request, Scheduler, SchedulerConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_a_torchscript_model_are_batched_and_answered() {
    let dir = tempdir("sched");
    let pt = traced_convnet(
        dir.path(),
        r#"{"inputs": [{"datatype": "FP32", "dims": [-1, 3, 32, 32]}],
            "outputs": [{"datatype": "FP32", "dims": [-1, 10]}]}"#,
    );
    let f = Fixture::load("convnet").unwrap();
    let factory = open_model(&pt, &OrtOptions::default()).unwrap();
    let config = SchedulerConfig {
        max_queue_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let s = Scheduler::start("torch", &[factory], config).unwrap();
    assert_eq!(s.platform(), "pytorch_libtorch");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        let row = f.inputs["input"].rows(i, i + 1);
        tasks.push(tokio::spawn(async move {
            let request = Request {
                inputs: vec![("INPUT__0".into(), row)],
                deadline: None,
                priority: 0,
            };
            (i, s.infer(request).await)
        }));
    }
    let mut max_batch = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        let r = r.unwrap();
        max_batch = max_batch.max(r.batch_size);
        assert_close(
            "OUTPUT__0",
            &r.outputs[0],
            &f.outputs["logits"],
            i,
            i + 1,
            1e-4,
        );
    }
    assert!(max_batch > 1, "16 concurrent requests never shared a batch");
}
