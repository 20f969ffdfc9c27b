//! A PostgreSQL restart (`pg_ctl restart -m immediate`: the server dies as
//! in a crash) under a connected store: a binary of its own, since it
//! restarts the server every test of its binary shares.

use std::time::{Duration, Instant};

use omk_core::pg::PgStore;
use omk_core::ErrorCode;
use serde_json::json;

mod common;

use common::pg_ctl;

/// Retry `f` on I/O errors (the server is away) for up to 60 s.
async fn retrying<T, F, Fut>(mut f: F) -> omk_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = omk_core::Result<T>>,
{
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Err(e) if e.code() == ErrorCode::Io && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_and_restart_loses_no_completion_and_no_event() {
    let Some(url) = common::pg_env("OMK_TEST_PG_URL") else {
        return;
    };
    let url = common::pg_fresh_db(&url).await;
    let store = PgStore::connect(&url).await.unwrap();
    let tasks = common::pg_tasks(3, 2);
    store
        .create_team("t", &json!({}), &tasks, None)
        .await
        .unwrap();
    let pools = vec!["default".to_string()];
    let agents = vec!["scripted".to_string()];
    let ttl = Duration::from_secs(60);
    let held = store
        .claim("a/1", &pools, &agents, ttl)
        .await
        .unwrap()
        .unwrap();
    let signal = store.listen().await.unwrap();
    let seen = signal.changed_past(0, Duration::from_secs(10)).await;

    pg_ctl(&["-m", "immediate", "restart"]);

    // The lease outlived the crash (its deadline is in the database): the
    // holder completes once the server is back, and claims go on.
    let (ok, done) = (json!({ "ok": true }), [("done", 1)]);
    let seq = retrying(|| store.complete(&held, &ok, &done))
        .await
        .unwrap();
    assert!(seq > 0);
    loop {
        let next = retrying(|| store.claim("b/1", &pools, &agents, ttl))
            .await
            .unwrap();
        let Some(lease) = next else { break };
        retrying(|| store.complete(&lease, &ok, &done))
            .await
            .unwrap();
    }
    let records = store.tasks("t").await.unwrap();
    assert!(
        records.iter().all(|r| r.status == "completed"),
        "{records:?}"
    );
    let events = store.events_after(Some("t"), 0, 100).await.unwrap();
    let completed = events
        .iter()
        .filter(|e| e.event.kind.as_str() == "task_completed")
        .count();
    assert_eq!(completed, 3);
    assert_eq!(store.counter("done").await.unwrap(), 3);
    // The follower's connection came back and woke it.
    assert!(signal.changed_past(seen, Duration::from_secs(30)).await > seen);
}
