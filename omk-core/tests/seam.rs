//! One contract per storage trait of `omk_core::seam`, run against both
//! stores: the file store of a state root (`seam::file::FileStore`) and
//! PostgreSQL (`PgStore`). Task leases have theirs in `leases.rs`. The
//! PostgreSQL half needs `OMK_TEST_PG_URL` (`make cargo-test` starts a
//! throwaway server); under `CI=true` a missing one is a failure.

use std::time::Duration;

use omk_core::events::{Event, EventKind};
use omk_core::metrics::Counter;
use omk_core::paths::StatePaths;
use omk_core::pg::PgStore;
use omk_core::seam::file::FileStore;
use omk_core::seam::{
    Admit, ChangeFeed, Counters, Documents, EventLogs, Leases, NamedLease, PoolAdmission, PoolSlot,
};
use omk_core::ErrorCode;
use serde_json::{json, Value};

mod common;

fn team_doc(n: u64) -> Value {
    json!({ "name": "alpha", "phase": "Executing", "n": n })
}

fn code<T: std::fmt::Debug>(r: omk_core::Result<T>) -> ErrorCode {
    match r {
        Err(e) => e.code(),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

async fn documents(s: &impl Documents) {
    let v = s.get("alpha").await.unwrap().expect("team alpha");
    assert_eq!(v.doc["n"], 1);
    assert!(s.get("nope").await.unwrap().is_none());
    let names: Vec<Value> = s
        .list()
        .await
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert!(names.contains(&json!("alpha")), "{names:?}");

    let rev = s
        .compare_and_set("alpha", &v.revision, &team_doc(2))
        .await
        .unwrap();
    assert_ne!(rev, v.revision);
    let now = s.get("alpha").await.unwrap().unwrap();
    assert_eq!(
        (now.doc["n"].as_u64(), now.revision.as_str()),
        (Some(2), rev.as_str())
    );
    // A writer that read the old revision loses, and writes nothing.
    let stale = s.compare_and_set("alpha", &v.revision, &team_doc(3)).await;
    assert_eq!(code(stale), ErrorCode::Conflict);
    assert_eq!(s.get("alpha").await.unwrap().unwrap().doc["n"], 2);
    let missing = s.compare_and_set("nope", &rev, &team_doc(4)).await;
    assert_eq!(code(missing), ErrorCode::NotFound);
}

fn event(kind: EventKind, payload: Value) -> Event {
    Event::new("alpha", kind, Some("test"), payload)
}

async fn event_logs(s: &impl EventLogs) {
    // What creating the team logged, if anything.
    let before = s.read_after("alpha", 0, 10_000).await.unwrap();
    let base = before.last().map_or(0, |e| e.seq.unwrap());
    let first = s
        .append(vec![
            event(EventKind::TaskCreated, json!({ "task_id": "t1" })),
            event(EventKind::TaskClaimed, json!({ "task_id": "t1" })),
            event(
                EventKind::TaskStarted,
                json!({ "api_key": "hunter2-secret-value" }),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    let more = s
        .append(vec![event(
            EventKind::TaskCompleted,
            json!({ "task_id": "t1" }),
        )])
        .await
        .unwrap();
    assert!(more[0] > first[2]);

    let all = s.read_after("alpha", base, 100).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(seqs, [&first[..], &more[..]].concat());
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task_created",
            "task_claimed",
            "task_started",
            "task_completed"
        ]
    );
    assert!(
        !all[2].payload.to_string().contains("hunter2"),
        "{}",
        all[2].payload
    );
    let after = s.read_after("alpha", first[1], 100).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].seq, Some(first[2]));
    assert_eq!(s.read_after("alpha", base, 1).await.unwrap().len(), 1);
    assert!(s
        .read_after("alpha", more[0], 100)
        .await
        .unwrap()
        .is_empty());
}

async fn counters(s: &impl Counters) {
    s.add(&[(Counter::TasksCompleted, 2), (Counter::TasksFailed, 1)])
        .await
        .unwrap();
    s.add(&[(Counter::TasksCompleted, 1)]).await.unwrap();
    let all = s.all().await.unwrap();
    assert_eq!(all.get("tasks_completed"), Some(&3), "{all:?}");
    assert_eq!(all.get("tasks_failed"), Some(&1), "{all:?}");
    assert_eq!(all.get("ralph_runs"), None, "{all:?}");
}

async fn change_feed(s: &(impl ChangeFeed + EventLogs)) {
    let feed = s.changes(Some("alpha")).await.unwrap();
    let seen = feed.signal.generation();
    s.append(vec![event(EventKind::TaskFailed, Value::Null)])
        .await
        .unwrap();
    let g = feed
        .signal
        .changed_past(seen, Duration::from_secs(10))
        .await;
    assert!(g > seen, "no change was signalled");
}

async fn leases(s: &impl Leases) {
    let short = Duration::from_millis(400);
    let mut a = s
        .acquire("coord", "h1", short)
        .await
        .unwrap()
        .expect("free");
    assert_eq!((a.epoch, a.holder.as_str()), (1, "h1"));
    assert!(
        s.acquire("coord", "h2", short).await.unwrap().is_none(),
        "held twice"
    );
    let before = a.deadline;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.renew(&mut a, short).await.unwrap();
    assert!(a.deadline > before);
    let stale = NamedLease {
        epoch: a.epoch - 1,
        ..a.clone()
    };
    assert_eq!(
        code(s.renew(&mut stale.clone(), short).await),
        ErrorCode::Conflict
    );
    assert_eq!(code(s.release(&stale).await), ErrorCode::Conflict);
    s.release(&a).await.unwrap();
    // Released: anyone at once, with a higher epoch; the old holder is out.
    let b = s
        .acquire("coord", "h2", short)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(b.epoch, 2);
    assert_eq!(
        code(s.renew(&mut a.clone(), short).await),
        ErrorCode::Conflict
    );
    // Left to lapse: its holder may renew nothing, and anyone may take it.
    tokio::time::sleep(short + Duration::from_millis(150)).await;
    assert_eq!(
        code(s.renew(&mut b.clone(), short).await),
        ErrorCode::Conflict
    );
    let c = s
        .acquire("coord", "h3", short)
        .await
        .unwrap()
        .expect("lapsed");
    assert_eq!(c.epoch, 3);
    assert_eq!(code(s.release(&b).await), ErrorCode::Conflict);
    // Another name is another lease.
    let other = s.acquire("other", "h1", short).await.unwrap().unwrap();
    assert_eq!(other.epoch, 1);
}

/// Admitted, or the test fails saying why not.
fn admitted(a: Admit) -> PoolSlot {
    match a {
        Admit::Admitted(slot) => slot,
        Admit::Full(why) => panic!("not admitted: {why}"),
    }
}

/// Pool `gpu` has a capacity of 2 slots in `s`.
async fn pool_admission(s: &impl PoolAdmission) {
    let (short, long) = (Duration::from_millis(400), Duration::from_secs(30));
    let load = s.load("gpu").await.unwrap();
    assert_eq!((load.capacity, load.active), (Some(2), 0));
    let mut a = admitted(s.admit("gpu", "h1", long).await.unwrap());
    let b = admitted(s.admit("gpu", "h2", short).await.unwrap());
    assert_eq!((a.pool.as_str(), a.holder.as_str()), ("gpu", "h1"));
    assert!(b.epoch > a.epoch, "{a:?} {b:?}");
    match s.admit("gpu", "h3", long).await.unwrap() {
        Admit::Full(why) => assert!(why.contains("2 slots taken"), "{why}"),
        Admit::Admitted(c) => panic!("a third slot of two: {c:?}"),
    }
    assert_eq!(s.load("gpu").await.unwrap().active, 2);
    let before = a.deadline;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.renew_slot(&mut a, long).await.unwrap();
    assert!(a.deadline > before);
    let stale = PoolSlot {
        epoch: a.epoch - 1,
        ..a.clone()
    };
    assert_eq!(
        code(s.renew_slot(&mut stale.clone(), long).await),
        ErrorCode::Conflict
    );
    // A release frees its slot at once; the released holder renews nothing.
    s.release_slot(&a).await.unwrap();
    let c = admitted(s.admit("gpu", "h3", long).await.unwrap());
    assert!(c.epoch > b.epoch);
    assert_eq!(
        code(s.renew_slot(&mut a.clone(), long).await),
        ErrorCode::Conflict
    );
    // A slot left to lapse counts no more, and its holder renews nothing.
    tokio::time::sleep(short + Duration::from_millis(150)).await;
    assert_eq!(s.load("gpu").await.unwrap().active, 1);
    assert_eq!(
        code(s.renew_slot(&mut b.clone(), short).await),
        ErrorCode::Conflict
    );
    let d = admitted(s.admit("gpu", "h4", long).await.unwrap());
    assert!(matches!(
        s.admit("gpu", "h5", long).await.unwrap(),
        Admit::Full(_)
    ));
    // Another pool is another capacity.
    assert!(s.load("other").await.is_ok());
    for slot in [&c, &d] {
        s.release_slot(slot).await.unwrap();
    }
    assert_eq!(s.load("gpu").await.unwrap().active, 0);
}

async fn contract<S>(s: S)
where
    S: Documents + EventLogs + Counters + ChangeFeed + Leases,
{
    documents(&s).await;
    event_logs(&s).await;
    counters(&s).await;
    change_feed(&s).await;
    leases(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_keeps_every_contract() {
    let d = tempfile::tempdir().unwrap();
    let paths = StatePaths::new(d.path());
    let dir = paths.team_dir("alpha").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("team.json"), team_doc(1).to_string()).unwrap();
    contract(FileStore::new(paths.clone())).await;
    let mut config = omk_core::config::Config::default();
    for (name, cap) in [("gpu", 2), ("other", 1)] {
        config.pools.insert(
            name.into(),
            omk_core::config::PoolConfig {
                max_workers: cap,
                ..Default::default()
            },
        );
    }
    let pools = omk_core::pool::Pools::new(paths, config);
    pool_admission(&pools).await;
    // A pool the config does not name does not exist here.
    assert_eq!(
        code(pools.admit("nowhere", "h1", Duration::from_secs(1)).await),
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_store_keeps_every_contract() {
    let Some(server) = common::pg_env("OMK_TEST_PG_URL") else {
        return;
    };
    let url = common::pg_fresh_db(&server).await;
    let store = PgStore::connect(&url).await.unwrap();
    store
        .create_team("alpha", &team_doc(1), &common::pg_tasks(1, 1), None)
        .await
        .unwrap();
    // Another team's events share the sequence; reads keep to alpha's.
    store
        .create_team(
            "beta",
            &json!({ "name": "beta", "phase": "Executing" }),
            &[],
            None,
        )
        .await
        .unwrap();
    contract(store.clone()).await;

    // Cluster pools: a capacity declared in the store, or none.
    store.set_pool_capacity("gpu", Some(2)).await.unwrap();
    store.set_pool_capacity("other", Some(1)).await.unwrap();
    pool_admission(&store).await;
    let free = store.load("nowhere").await.unwrap();
    assert_eq!((free.capacity, free.active), (None, 0));
    let slot = admitted(
        store
            .admit("nowhere", "h1", Duration::from_secs(30))
            .await
            .unwrap(),
    );
    store.release_slot(&slot).await.unwrap();

    // A claimed task takes a slot of its team's pool, counted with the
    // leased ones under the same capacity.
    let mut tasks = common::pg_tasks(3, 1);
    for t in &mut tasks {
        t.pool = "batch".into();
    }
    store
        .create_team(
            "gamma",
            &json!({ "name": "gamma", "phase": "Executing" }),
            &tasks,
            None,
        )
        .await
        .unwrap();
    store.set_pool_capacity("batch", Some(2)).await.unwrap();
    let (pools, agents) = (vec!["batch".to_string()], vec!["scripted".to_string()]);
    let ttl = Duration::from_secs(30);
    let first = store
        .claim("w1", &pools, &agents, ttl)
        .await
        .unwrap()
        .unwrap();
    let held = admitted(store.admit("batch", "h1", ttl).await.unwrap());
    assert!(store
        .claim("w2", &pools, &agents, ttl)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.admit("batch", "h2", ttl).await.unwrap(),
        Admit::Full(_)
    ));
    // Waiting for room is waiting for an announcement, not a deadline.
    assert_eq!(
        store
            .next_claimable_in(&pools, &agents)
            .await
            .unwrap()
            .map(|s| s < 29.0),
        Some(false)
    );
    store.release_slot(&held).await.unwrap();
    let second = store
        .claim("w2", &pools, &agents, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .claim("w3", &pools, &agents, ttl)
        .await
        .unwrap()
        .is_none());
    store
        .complete(&first, &json!({ "summary": "done" }), &[])
        .await
        .unwrap();
    // A raised capacity admits at once.
    store.set_pool_capacity("batch", None).await.unwrap();
    let third = store
        .claim("w3", &pools, &agents, ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.load("batch").await.unwrap().active, 2);
    for lease in [&second, &third] {
        store
            .complete(lease, &json!({ "summary": "done" }), &[])
            .await
            .unwrap();
    }
}
