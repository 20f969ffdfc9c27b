//! The PostgreSQL store against a real PostgreSQL (`make cargo-test` starts
//! a throwaway one: tests/pg/with-postgres.sh). Each test gets a database of
//! its own. Without `OMK_TEST_PG_URL` the tests say SKIPPED, except under
//! `CI=true`, where that is a failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use omk_core::events::{Event, EventKind};
use omk_core::pg::tasks::{AfterFailure, Lease, NewTask};
use omk_core::pg::{schema, PgStore};
use omk_core::{Error, ErrorCode};
use serde_json::json;

mod common;

fn server() -> Option<String> {
    common::pg_env("OMK_TEST_PG_URL")
}

fn with_db(url: &str, db: &str) -> String {
    common::pg_with_db(url, db)
}

async fn store() -> Option<(PgStore, String)> {
    let url = common::pg_fresh_db(&server()?).await;
    Some((PgStore::connect(&url).await.unwrap(), url))
}

fn tasks(n: usize, max_attempts: i32) -> Vec<NewTask> {
    common::pg_tasks(n, max_attempts)
}

fn pools() -> Vec<String> {
    vec!["default".into()]
}

fn agents() -> Vec<String> {
    vec!["scripted".into()]
}

/// A store holding team `t` of one task (`max_attempts`), claimed by
/// `a/1` under a lease of `ttl`.
async fn one_claimed(max_attempts: i32, ttl: Duration) -> Option<(PgStore, Lease)> {
    let (store, _) = store().await?;
    store
        .create_team("t", &json!({}), &tasks(1, max_attempts), None)
        .await
        .unwrap();
    let lease = store
        .claim("a/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .unwrap();
    Some((store, lease))
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_migrates_and_the_next_connects_as_is() {
    let Some((store, url)) = store().await else {
        return;
    };
    assert_eq!(schema::version(&store).await.unwrap(), schema::LATEST);
    let again = PgStore::connect(&url).await.unwrap();
    assert_eq!(schema::version(&again).await.unwrap(), schema::LATEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_using_a_new_database_at_once_all_find_it_migrated() {
    let Some(url) = server() else { return };
    for _ in 0..3 {
        let url = common::pg_fresh_db(&url).await;
        let firsts: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::connect(&url).await })
            })
            .collect();
        for f in firsts {
            let store = f.await.unwrap().unwrap();
            assert_eq!(schema::version(&store).await.unwrap(), schema::LATEST);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_nothing_is_written() {
    let Some((_store, url)) = store().await else {
        return;
    };
    let admin = raw(&url).await;
    let newer = schema::LATEST + 1;
    admin
        .execute("UPDATE omk_schema SET version = $1", &[&newer])
        .await
        .unwrap();
    let e = PgStore::connect(&url).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CorruptState, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("newer") && msg.contains("upgrade omk"),
        "{msg}"
    );
    assert!(!msg.contains("omk-test"), "the password shows: {msg}");
    let row = admin
        .query_one("SELECT version FROM omk_schema", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_a_missing_database_and_no_server_are_clear_errors() {
    let Some(url) = server() else { return };
    let wrong = url.replace(":omk-test@", ":not-the-password@");
    let e = PgStore::connect(&wrong).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        msg.contains("omk:***@127.0.0.1"),
        "the store is not named: {msg}"
    );
    assert!(
        !msg.contains("not-the-password"),
        "the password shows: {msg}"
    );

    let e = PgStore::connect(&with_db(&url, "no_such_db"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
    assert!(e.to_string().contains("no_such_db"), "{e}");

    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let t = Instant::now();
    let e = PgStore::connect(&format!(
        "postgres://omk:omk-test@127.0.0.1:{port}/postgres"
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));

    let e = PgStore::connect("postgres://omk@127.0.0.1:notaport/x")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_complete_each_task_exactly_once() {
    let Some((store, _)) = store().await else {
        return;
    };
    store
        .create_team("t", &json!({ "name": "t" }), &tasks(60, 3), None)
        .await
        .unwrap();
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let holder = format!("host{}/w{w}", w % 2);
            let mut done = Vec::new();
            while let Some(lease) = store
                .claim(&holder, &pools(), &agents(), Duration::from_secs(30))
                .await
                .unwrap()
            {
                store
                    .complete(&lease, &json!({ "by": holder }), &[("tasks_completed", 1)])
                    .await
                    .unwrap();
                done.push(lease.task);
            }
            done
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 60);
    let records = store.tasks("t").await.unwrap();
    assert!(records
        .iter()
        .all(|r| r.status == "completed" && r.epoch == 1 && r.attempts == 1));
    let events = store.events_after(Some("t"), 0, 10_000).await.unwrap();
    let completed = events
        .iter()
        .filter(|e| e.event.kind == EventKind::TaskCompleted)
        .count();
    assert_eq!(completed, 60);
    assert_eq!(store.counter("tasks_completed").await.unwrap(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_cannot_renew_or_complete_and_the_next_claim_raises_the_epoch() {
    let Some((store, _)) = store().await else {
        return;
    };
    store
        .create_team("t", &json!({}), &tasks(1, 3), None)
        .await
        .unwrap();
    let ttl = Duration::from_millis(500);
    let mut first = store
        .claim("a/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.epoch, first.attempt), (1, 1));
    store.renew(&mut first, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Expired, not yet claimed by anyone: still refused.
    let e = store.renew(&mut first, ttl).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    let e = store.complete(&first, &json!({}), &[]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    // Another host takes it over.
    let second = store
        .claim("b/1", &pools(), &agents(), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.task.as_str(), second.epoch, second.attempt),
        ("t1", 2, 2)
    );
    assert!(matches!(
        store.complete(&first, &json!({}), &[]).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.fail(&first, "late", Duration::ZERO).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.release(&first).await,
        Err(Error::Conflict(_))
    ));
    store
        .complete(&second, &json!({ "ok": true }), &[])
        .await
        .unwrap();
    let events = store.events_after(Some("t"), 0, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task_created",
            "task_claimed",
            "lease_expired",
            "task_claimed",
            "task_completed"
        ]
    );
    let epochs: Vec<i64> = events
        .iter()
        .filter(|e| e.event.kind == EventKind::TaskClaimed)
        .map(|e| e.event.payload["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2]);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_in_the_record_then_run_out_and_release_gives_back() {
    let Some((store, _)) = store().await else {
        return;
    };
    store
        .create_team("t", &json!({}), &tasks(1, 2), None)
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let a = store
        .claim("a/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .unwrap();
    let backoff = Duration::from_millis(400);
    assert_eq!(
        store.fail(&a, "boom", backoff).await.unwrap(),
        AfterFailure::Retry
    );
    // Not before the backoff, whoever asks.
    assert!(store
        .claim("b/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .is_none());
    tokio::time::sleep(backoff + Duration::from_millis(100)).await;
    let b = store
        .claim("b/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.attempt, b.epoch), (2, 2));
    // Released: claimable at once, the attempt not counted.
    store.release(&b).await.unwrap();
    let c = store
        .claim("c/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.attempt, c.epoch), (2, 3));
    assert_eq!(
        store.fail(&c, "boom again", backoff).await.unwrap(),
        AfterFailure::Failed
    );
    assert!(store
        .claim("d/1", &pools(), &agents(), ttl)
        .await
        .unwrap()
        .is_none());
    let r = &store.tasks("t").await.unwrap()[0];
    assert_eq!((r.status.as_str(), r.attempts), ("failed", 2));
    assert_eq!(r.result.as_ref().unwrap()["error"], "boom again");
    // Other pools and agents never see it.
    store
        .create_team("u", &json!({}), &tasks(1, 1), None)
        .await
        .unwrap();
    assert!(store
        .claim("e/1", &["gpu".into()], &agents(), ttl)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .claim("e/1", &pools(), &["codex".into()], ttl)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_on_its_last_attempt_fails_the_task() {
    let Some((store, _dead)) = one_claimed(1, Duration::from_millis(300)).await else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store
        .claim("b/1", &pools(), &agents(), Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    let r = &store.tasks("t").await.unwrap()[0];
    assert_eq!(r.status, "failed");
    let kinds: Vec<String> = store
        .events_after(Some("t"), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind.as_str().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "task_created",
            "task_claimed",
            "lease_expired",
            "task_failed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_a_gapless_sequence_in_commit_order_and_followers_wake() {
    let Some((store, url)) = store().await else {
        return;
    };
    let signal = store.listen().await.unwrap();
    // Connected and listening: the first raise comes from LISTEN itself.
    let seen = signal.changed_past(0, Duration::from_secs(10)).await;
    let other = PgStore::connect(&url).await.unwrap();
    let t = Instant::now();
    other
        .append_events(&[Event::new(
            "x",
            EventKind::PhaseChanged,
            None,
            json!({ "n": 0 }),
        )])
        .await
        .unwrap();
    let after = signal.changed_past(seen, Duration::from_secs(10)).await;
    assert!(after > seen, "no notification within 10 s");
    eprintln!("append -> notification: {:?}", t.elapsed());

    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..25 {
                let batch: Vec<Event> = (0..2)
                    .map(|j| {
                        Event::new(
                            format!("team{w}"),
                            EventKind::TaskOutput,
                            None,
                            json!({ "i": i, "j": j }),
                        )
                    })
                    .collect();
                store.append_events(&batch).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let all = store.events_after(None, 0, 10_000).await.unwrap();
    assert_eq!(all.len(), 1 + 8 * 25 * 2);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
    // Per team, each writer's events in its own order, batches together.
    let mut per_team: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for e in &all[1..] {
        per_team.entry(e.event.run_id.clone()).or_default().push((
            e.event.payload["i"].as_i64().unwrap(),
            e.event.payload["j"].as_i64().unwrap(),
        ));
    }
    for (_, order) in per_team {
        let expected: Vec<(i64, i64)> = (0..25).flat_map(|i| [(i, 0), (i, 1)]).collect();
        assert_eq!(order, expected);
    }
    // Reading in pages by sequence loses nothing.
    let mut last = 0;
    let mut n = 0;
    loop {
        let page = store.events_after(None, last, 37).await.unwrap();
        if page.is_empty() {
            break;
        }
        n += page.len();
        last = page.last().unwrap().seq;
    }
    assert_eq!(n, all.len());
    drop(signal);
}

/// The next raise of `signal` past `seen` within `within`, if any.
async fn raised(signal: &omk_core::watch::Signal, seen: u64, within: Duration) -> Option<u64> {
    let now = signal.changed_past(seen, within).await;
    (now > seen).then_some(now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_channel_announces_joins_leaves_and_capacities_but_not_renewals() {
    use omk_core::pg::workers::WorkerRecord;
    use omk_core::seam::{Admit, PoolAdmission};
    let Some((store, url)) = store().await else {
        return;
    };
    let signal = store.listen_for_cluster().await.unwrap();
    // Connected and listening: the first raise comes from LISTEN itself.
    let mut seen = signal.changed_past(0, Duration::from_secs(10)).await;
    let other = PgStore::connect(&url).await.unwrap();
    let wait = Duration::from_secs(10);
    // Long enough for a notification on loopback to have come (they take
    // about a millisecond), short enough to keep the test quick.
    let quiet = Duration::from_millis(500);
    let lease = Duration::from_secs(30);
    let mut w = WorkerRecord {
        holder: "h1/1".into(),
        host: "h1".into(),
        pools: pools(),
        agents: agents(),
        max_agents: 2,
    };

    other.register_worker(&w, lease).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a join is announced");
    other.register_worker(&w, lease).await.unwrap();
    assert_eq!(raised(&signal, seen, quiet).await, None, "a renewal is not");
    w.max_agents = 3;
    other.register_worker(&w, lease).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a change of what a worker serves is announced");

    // A registration that lapsed (a host stopped past its lease) and comes
    // back is a join again.
    other
        .register_worker(&w, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(raised(&signal, seen, quiet).await, None);
    let live = store.cluster_pools().await.unwrap();
    assert_eq!(live["workers"].as_array().unwrap().len(), 0, "{live}");
    other.register_worker(&w, lease).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a lapsed worker's return is announced");

    other.set_pool_capacity("default", Some(1)).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a capacity is announced");
    let Admit::Admitted(slot) = other.admit("default", "h2/7", lease).await.unwrap() else {
        panic!("capacity 1, nothing running: admitted");
    };
    seen = raised(&signal, seen, wait)
        .await
        .expect("an admission is announced");
    other.release_slot(&slot).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a release is announced");

    other.unregister_worker(&w.holder).await.unwrap();
    seen = raised(&signal, seen, wait)
        .await
        .expect("a leave is announced");
    other.unregister_worker(&w.holder).await.unwrap();
    assert_eq!(
        raised(&signal, seen, quiet).await,
        None,
        "leaving twice is announced once"
    );
    drop(signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_retried_after_its_commit_is_told_so_and_recorded_once() {
    let Some((store, lease)) = one_claimed(3, Duration::from_secs(30)).await else {
        return;
    };
    let counters = [("tasks_completed", 1)];
    let seq = store
        .complete(&lease, &json!({ "summary": "done" }), &counters)
        .await
        .unwrap();
    // The retry of a worker whose reply was lost with the connection.
    let again = store
        .complete(&lease, &json!({ "summary": "again" }), &counters)
        .await
        .unwrap();
    assert_eq!(again, seq, "the first completion's sequence");
    let completions: Vec<_> = store
        .events_after(Some("t"), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == EventKind::TaskCompleted)
        .collect();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].seq, seq);
    assert_eq!(store.counter("tasks_completed").await.unwrap(), 1);
    // Not for another holder naming the epoch, nor any other write.
    let other = Lease {
        holder: "b/1".into(),
        ..lease.clone()
    };
    let e = store.complete(&other, &json!({}), &[]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    let e = store
        .fail(&lease, "late", Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
}
