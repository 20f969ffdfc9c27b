//! The PostgreSQL store's costs, medians in one run (issue 16), against the
//! file store's equivalents on the same machine:
//!
//! - one task's claim + renew + complete (each its own transaction; the
//!   completion with its event and a counter), sequentially, against three
//!   durable locked document updates of the file store plus an fsynced
//!   event (what a file-backed shared queue would cost), and against the
//!   same three calls of the seam's `TaskLeases` on a local team's records
//!   (`team::board`: in the supervisor's memory, persisted with its team
//!   document, which is why a local team needs no shared queue);
//! - the same with 16 concurrent workers: tasks per second;
//! - events per second through the store from 16 concurrent appenders (one
//!   event per transaction), against fsynced appends to one events file.
//!
//! Run by `make bench` under tests/pg/with-postgres.sh with fsync on
//! (`OMK_TEST_PG_FSYNC=on`). Without `OMK_TEST_PG_URL` it says SKIPPED.

use std::time::{Duration, Instant};

use omk_core::events::{Event, EventKind, EventLog};
use omk_core::pg::tasks::NewTask;
use omk_core::pg::PgStore;
use omk_core::seam::TaskLeases;
use omk_core::team::board::Board;
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;

const TASKS: usize = 400;
const WORKERS: usize = 16;
const EVENTS_PER_WORKER: usize = 200;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask {
            id: format!("t{i}"),
            pool: "default".into(),
            agent: "a".into(),
            max_attempts: 3,
            spec: json!({ "title": format!("task {i}") }),
        })
        .collect()
}

async fn fresh(url: &str) -> PgStore {
    PgStore::connect(&common::pg_fresh_db(url).await)
        .await
        .unwrap()
}

async fn one_task(store: &PgStore, holder: &str) -> bool {
    let pools = ["default".to_string()];
    let agents = ["a".to_string()];
    let ttl = Duration::from_secs(60);
    let Some(mut lease) = store.claim(holder, &pools, &agents, ttl).await.unwrap() else {
        return false;
    };
    store.renew(&mut lease, ttl).await.unwrap();
    store
        .complete(&lease, &json!({ "ok": true }), &[("done", 1)])
        .await
        .unwrap();
    true
}

fn file_store_per_task(dir: &std::path::Path) -> Vec<f64> {
    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct Task {
        version: u32,
        status: String,
        epoch: u64,
    }
    impl omk_core::store::Document for Task {
        const VERSION: u32 = 1;
        const WHAT: &'static str = "task";
    }
    let mut log = EventLog::open(&dir.join("events.jsonl")).unwrap();
    (0..TASKS)
        .map(|i| {
            let doc = dir.join(format!("t{i}.json"));
            let t = Instant::now();
            for status in ["running", "running", "completed"] {
                omk_core::store::update_doc(&doc, Task::default, |d: &mut Task| {
                    d.status = status.into();
                    d.epoch += 1;
                    Ok(())
                })
                .unwrap();
            }
            log.append(Event::new(
                "t",
                EventKind::TaskCompleted,
                None,
                json!({ "i": i }),
            ))
            .unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let Ok(url) = std::env::var("OMK_TEST_PG_URL") else {
        println!("pg bench: SKIPPED: OMK_TEST_PG_URL is not set (make bench starts PostgreSQL)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file_per_task = median(file_store_per_task(tmp.path()));
    let board_per_task = rt.block_on(async {
        let titles: Vec<String> = (0..TASKS).map(|i| format!("task {i}")).collect();
        let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
        let board = Board::new("local", &titles, 3);
        let ttl = Duration::from_secs(60);
        let mut per = Vec::new();
        loop {
            let t = Instant::now();
            let Some(mut lease) = board.claim("w", ttl).await.unwrap() else {
                break;
            };
            board.renew(&mut lease, ttl).await.unwrap();
            board.complete(&lease, &json!({})).await.unwrap();
            per.push(t.elapsed().as_secs_f64() * 1e3);
        }
        median(per)
    });

    let (pg_per_task, tasks_per_s, events_per_s) = rt.block_on(async {
        let store = fresh(&url).await;
        store
            .create_team("seq", &json!({}), &tasks(TASKS), None)
            .await
            .unwrap();
        let mut per = Vec::new();
        loop {
            let t = Instant::now();
            if !one_task(&store, "bench/1/0").await {
                break;
            }
            per.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let store = fresh(&url).await;
        store
            .create_team("par", &json!({}), &tasks(TASKS * 2), None)
            .await
            .unwrap();
        let t = Instant::now();
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(
                    async move { while one_task(&store, &format!("bench/1/{w}")).await {} },
                )
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let tasks_per_s = (TASKS * 2) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..EVENTS_PER_WORKER {
                        let e = Event::new(
                            format!("w{w}"),
                            EventKind::TaskOutput,
                            None,
                            json!({ "i": i }),
                        );
                        store.append_events(&[e]).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let events_per_s = (WORKERS * EVENTS_PER_WORKER) as f64 / t.elapsed().as_secs_f64();
        (median(per), tasks_per_s, events_per_s)
    });

    let mut log = EventLog::open(&tmp.path().join("e2.jsonl")).unwrap();
    let t = Instant::now();
    let n = 2000;
    for i in 0..n {
        log.append(Event::new(
            "x",
            EventKind::TaskOutput,
            None,
            json!({ "i": i }),
        ))
        .unwrap();
    }
    let file_events_per_s = n as f64 / t.elapsed().as_secs_f64();

    println!(
        "pg bench (PostgreSQL via TCP on 127.0.0.1, fsync {}; medians)",
        std::env::var("OMK_TEST_PG_FSYNC").unwrap_or_else(|_| "off".into())
    );
    println!("{:<64}{:>12}", "measure", "value");
    println!(
        "{:<64}{:>9.3} ms",
        "claim + renew + complete per task, PostgreSQL", pg_per_task
    );
    println!(
        "{:<64}{:>9.3} ms",
        "3 durable locked updates + 1 fsynced event, file store", file_per_task
    );
    println!(
        "{:<64}{:>9.2}",
        "ratio PostgreSQL / file store",
        pg_per_task / file_per_task
    );
    println!(
        "{:<64}{:>9.4} ms",
        "claim + renew + complete, a local team's records (team::board)", board_per_task
    );
    println!(
        "{:<64}{:>9.0} /s",
        format!("tasks claimed+renewed+completed, {WORKERS} concurrent workers"),
        tasks_per_s
    );
    println!(
        "{:<64}{:>9.0} /s",
        format!("events appended, {WORKERS} concurrent appenders, PostgreSQL"),
        events_per_s
    );
    println!(
        "{:<64}{:>9.0} /s",
        "events appended one by one (fsync each), file store", file_events_per_s
    );
}
