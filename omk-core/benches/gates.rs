//! Gate benchmarks (issue: gates). `make bench` prints the medians and
//! ratios (scripts/bench_report.py).
//!
//! - `spawn_direct_100`: baseline, 100 × `true` spawned directly with both
//!   output streams captured (`Command::output`).
//! - `omk_gates_100`: the same 100 commands as gates through `gate::run`
//!   (breaker admission and recording, process groups, timeouts, bounded
//!   capture, results).
//! - `breaker_update`: one breaker outcome recorded under the cross-process
//!   lock (read, modify, atomic replace) in a project with four gates.

use std::process::{Command, Stdio};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use omk_core::gate::{self, BreakerSettings, Breakers, GateCommand, GateSet, GateSpec};
use omk_core::StatePaths;

fn bench_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn gates(c: &mut Criterion) {
    let dir = bench_dir();
    let project = dir.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    let paths = StatePaths::new(dir.path().join("state"));
    let set = GateSet {
        project: project.clone(),
        gates: (0..100)
            .map(|i| GateSpec {
                name: format!("g{i}"),
                command: GateCommand::Argv(vec!["true".into()]),
                timeout_secs: 60,
                required: true,
                env: Default::default(),
                cwd: None,
                origin: "bench".into(),
            })
            .collect(),
        breaker: BreakerSettings::default(),
        source: "bench".into(),
    };
    let mut g = c.benchmark_group("gates");
    g.sample_size(15);
    g.bench_function("spawn_direct_100", |b| {
        b.iter(|| {
            for _ in 0..100 {
                let out = Command::new("true")
                    .current_dir(&project)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(out.status.success());
            }
        })
    });
    let artifacts = dir.path().join("art");
    g.bench_function("omk_gates_100", |b| {
        b.iter(|| {
            let r = gate::run(&paths, &set, &[], &artifacts).unwrap();
            assert!(r.passed);
        })
    });
    g.sample_size(60);
    // A project's breakers as usual: a handful of gates.
    let breakers = Breakers::new(dir.path().join("state-small/gates/breakers.json"));
    let names = ["cargo fmt", "clippy", "cargo test", "make test"];
    breakers
        .admit_all(&project, &names, BreakerSettings::default(), Utc::now())
        .unwrap();
    g.bench_function("breaker_update", |b| {
        b.iter(|| {
            breakers
                .record_all(
                    &project,
                    &[("g0", true)],
                    BreakerSettings::default(),
                    Utc::now(),
                )
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(6))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = gates
}
criterion_main!(benches);
