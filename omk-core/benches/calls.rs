//! Per-call cost of a trivial op from Rust (issue: library). The C and
//! Python figures for the same op come from tests/c/bench_call.c and
//! tests/python/bench_call.py; scripts/bench_calls.py runs all three.

use criterion::{criterion_group, criterion_main, Criterion};
use omk_core::{Omk, OpenOptions};

fn calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let omk = Omk::open(OpenOptions {
        state_dir: Some(dir.path().join("state")),
        project_dir: Some(dir.path().to_path_buf()),
        config: None,
    })
    .unwrap();
    omk.metrics().unwrap();
    let mut g = c.benchmark_group("calls");
    g.bench_function("rust_metrics", |b| b.iter(|| omk.metrics().unwrap()));
    g.bench_function("rust_call_version", |b| {
        b.iter(|| omk.call("version", &serde_json::Value::Null).unwrap())
    });
    g.bench_function("rust_call_metrics_json", |b| {
        b.iter(|| {
            serde_json::to_string(&omk.call("metrics", &serde_json::Value::Null).unwrap()).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(std::time::Duration::from_secs(4))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = calls
}
criterion_main!(benches);
