//! Store benchmarks (issue: foundation). Run with `make bench`; the report
//! script prints medians and the ratios against the raw baseline measured in
//! the same run.
//!
//! - `raw_write_fsync_100b`: baseline, a 100-byte `write` + `fdatasync` on an
//!   O_APPEND file in the same directory as the logs.
//! - `event_append_durable`: one typical event through `EventLog` (envelope,
//!   redaction, JSON, one write, fdatasync).
//! - `event_append_grouped_1000`: 1000 events in one batch (one fsync).
//! - `metrics_increment_locked`: one counter increment under the
//!   cross-process lock (lock, read, modify, atomic replace).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use omk_core::events::{Event, EventKind, EventLog};
use omk_core::store::{FsyncPolicy, JsonlWriter};
use serde_json::json;

fn bench_dir() -> tempfile::TempDir {
    // Same file system as a default state root under the work tree's target/.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn typical_payload(i: u64) -> serde_json::Value {
    json!({ "task_id": format!("t{i}"), "worker": "w3", "attempt": 1, "summary": "edited src/lib.rs; tests pass" })
}

fn store_benches(c: &mut Criterion) {
    let dir = bench_dir();
    let mut g = c.benchmark_group("store");

    let raw_path = dir.path().join("raw.log");
    let mut raw = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&raw_path)
        .unwrap();
    let line = [b'x'; 100];
    g.bench_function("raw_write_fsync_100b", |b| {
        b.iter(|| {
            raw.write_all(&line).unwrap();
            raw.sync_data().unwrap();
        })
    });

    let mut log = EventLog::open(&dir.path().join("events.jsonl")).unwrap();
    let mut i = 0u64;
    g.bench_function("event_append_durable", |b| {
        b.iter(|| {
            i += 1;
            log.emit(
                "bench-run",
                EventKind::TaskCompleted,
                Some("w3"),
                typical_payload(i),
            )
            .unwrap();
        })
    });

    let mut batch_log =
        JsonlWriter::open(&dir.path().join("batch.jsonl"), FsyncPolicy::Grouped).unwrap();
    g.bench_function("event_append_grouped_1000", |b| {
        b.iter_batched(
            || {
                (0..1000)
                    .map(|i| {
                        let mut e = Event::new(
                            "bench-run",
                            EventKind::TaskOutput,
                            Some("w1"),
                            typical_payload(i),
                        );
                        omk_core::redact::redact_value(&mut e.payload);
                        e
                    })
                    .collect::<Vec<_>>()
            },
            |events| batch_log.append_batch(&events).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let metrics = dir.path().join("metrics.json");
    g.bench_function("metrics_increment_locked", |b| {
        b.iter(|| {
            omk_core::metrics::increment(&metrics, omk_core::metrics::Counter::AskCalls).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .measurement_time(std::time::Duration::from_secs(4))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = store_benches
}
criterion_main!(benches);
