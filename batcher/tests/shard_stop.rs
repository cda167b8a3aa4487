//! A shard stopped (cancel, or the job failed) leaves no part behind, even
//! when the stop lands before the reader sends anything: then the scoring
//! loop sees no chunk to notice the stop by, and a part cut short must not
//! be renamed into place as if complete.

use batcher::io::{Format, Stores, plan};
use batcher::shard::{ShardRun, ShardTask, part_name};
use engine::fixtures::models_dir;
use engine::{BackendFactory, OrtFactory, OrtOptions};
use std::sync::atomic::AtomicBool;

#[test]
fn a_stop_before_the_first_chunk_keeps_no_part() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    let row = vec!["1"; 64].join(",");
    std::fs::write(&input, format!("{row}\n").repeat(1_000)).unwrap();
    let planned = plan(&input, None, 1_000).unwrap();
    let task = ShardTask {
        piece: planned.pieces[0].clone(),
        inputs: vec![(0..64).collect()],
        output_format: Format::Csv,
    };
    let factory =
        OrtFactory::new(models_dir().join("digits_mlp.onnx"), OrtOptions::default()).unwrap();
    let mut backend = factory.create().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stores = Stores::new(runtime.handle().clone(), dir.path().join("cache"));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let run = |stop: bool, backend: &mut dyn engine::Backend| {
        let stop = AtomicBool::new(stop);
        ShardRun {
            stores: &stores,
            backend,
            task: &task,
            index: 0,
            out_dir: &out,
            summary_only: false,
            allow_nan: false,
            batch: 64,
            stop: &stop,
        }
        .run()
        .unwrap()
    };
    let stopped = run(true, backend.as_mut());
    assert!(stopped.stopped);
    assert!(!out.join(part_name(0, Format::Csv)).exists());
    // The same shard, not stopped, writes its whole part.
    let done = run(false, backend.as_mut());
    assert_eq!((done.stopped, done.done, done.failed), (false, 1_000, 0));
    let part = std::fs::read_to_string(out.join(part_name(0, Format::Csv))).unwrap();
    assert_eq!(part.lines().count(), 1_001);
}
