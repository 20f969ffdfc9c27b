//! One contract for leased task records, run against both stores'
//! [`TaskLeases`]: the file store's (`team::board::Board`, the record
//! operations a local team's supervisor applies to its `team.json`) and
//! PostgreSQL's (`PgStore::queue`, what `omk worker` claims from). The
//! PostgreSQL half needs `OMK_TEST_PG_URL` (`make cargo-test` starts a
//! throwaway server); under `CI=true` a missing one is a failure.

use std::time::Duration;

use omk_core::pg::PgStore;
use omk_core::seam::{AfterFailure, Lease, LeaseRecord, TaskLeases};
use omk_core::team::board::Board;
use omk_core::ErrorCode;
use serde_json::json;

mod common;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(400);

async fn record(q: &impl TaskLeases, task: &str) -> LeaseRecord {
    let all = q.records().await.unwrap();
    all.into_iter().find(|r| r.task == task).unwrap()
}

fn refused<T: std::fmt::Debug>(r: omk_core::Result<T>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), ErrorCode::Conflict, "{what}: {e}"),
        Ok(v) => panic!("{what} was accepted: {v:?}"),
    }
}

/// Three pending tasks `t1`..`t3`, three attempts each.
async fn contract(q: impl TaskLeases) {
    // Claims take the tasks in order, each raising its epoch.
    let mut a = q.claim("h1", LONG).await.unwrap().unwrap();
    let b = q.claim("h2", LONG).await.unwrap().unwrap();
    let c = q.claim("h3", LONG).await.unwrap().unwrap();
    assert_eq!(
        (a.task.as_str(), b.task.as_str(), c.task.as_str()),
        ("t1", "t2", "t3")
    );
    assert_eq!((a.attempt, a.epoch, a.holder.as_str()), (1, 1, "h1"));
    assert!(q.claim("h4", LONG).await.unwrap().is_none());
    let r = record(&q, "t1").await;
    assert_eq!(
        (r.status.as_str(), r.holder.as_deref(), r.epoch, r.attempts),
        ("running", Some("h1"), 1, 1)
    );
    assert_eq!(r.lease_deadline, Some(a.deadline));

    // A renewal moves the deadline; a stale epoch is refused everything.
    let before = a.deadline;
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.renew(&mut a, LONG).await.unwrap();
    assert!(a.deadline > before);
    let stale = Lease {
        epoch: a.epoch - 1,
        ..a.clone()
    };
    refused(q.complete(&stale, &json!({})).await, "a stale completion");
    refused(q.fail(&stale, "x", LONG).await, "a stale failure");
    refused(q.release(&stale).await, "a stale release");
    refused(q.renew(&mut stale.clone(), LONG).await, "a stale renewal");
    assert_eq!(record(&q, "t1").await.status, "running");

    // A completion is recorded once. The same lease completing again (a
    // retry after a lost reply) is told it was, and changes nothing; any
    // other write with it is refused, as is a completion naming its epoch
    // for another holder.
    q.complete(&a, &json!({ "summary": "done", "tokens": 7 }))
        .await
        .unwrap();
    let done = record(&q, "t1").await;
    assert_eq!(done.status, "completed");
    q.complete(&a, &json!({ "summary": "again", "tokens": 9 }))
        .await
        .unwrap();
    assert_eq!(record(&q, "t1").await, done);
    refused(
        q.fail(&a, "x", LONG).await,
        "a failure after the completion",
    );
    refused(q.release(&a).await, "a release after the completion");
    refused(q.renew(&mut a.clone(), LONG).await, "a renewal after it");
    let other = Lease {
        holder: "h9".into(),
        ..a.clone()
    };
    refused(
        q.complete(&other, &json!({})).await,
        "another holder's completion at that epoch",
    );

    // A failure backs off: the retry time is in the record.
    let after = q.fail(&b, "boom", SHORT).await.unwrap();
    assert_eq!(after, AfterFailure::Retry);
    let r = record(&q, "t2").await;
    assert_eq!(r.status, "pending");
    assert!(r.retry_at.is_some(), "{r:?}");
    assert_eq!(r.errors, vec!["attempt 1: boom".to_string()]);
    assert!(
        q.claim("h4", LONG).await.unwrap().is_none(),
        "claimed during its backoff"
    );
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    let b2 = q.claim("h4", SHORT).await.unwrap().unwrap();
    assert_eq!((b2.task.as_str(), b2.attempt), ("t2", 2));
    assert!(b2.epoch > b.epoch);
    refused(
        q.complete(&b, &json!({})).await,
        "the first holder's completion",
    );

    // A release gives the task back at once, the attempt not counted.
    q.release(&c).await.unwrap();
    let r = record(&q, "t3").await;
    assert_eq!((r.status.as_str(), r.attempts), ("pending", 0));
    let c2 = q.claim("h5", LONG).await.unwrap().unwrap();
    assert_eq!((c2.task.as_str(), c2.attempt), ("t3", 1));
    assert!(c2.epoch > c.epoch);

    // A lease left to lapse: its holder may write nothing more, and the
    // next claim takes the task over with the lapse as evidence.
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    refused(q.renew(&mut b2.clone(), LONG).await, "a late renewal");
    refused(q.complete(&b2, &json!({})).await, "a late completion");
    let b3 = q.claim("h6", LONG).await.unwrap().unwrap();
    assert_eq!((b3.task.as_str(), b3.attempt), ("t2", 3));
    assert!(b3.epoch > b2.epoch);
    let r = record(&q, "t2").await;
    assert_eq!(
        r.errors,
        vec![
            "attempt 1: boom".to_string(),
            "attempt 2: lease expired (h4 stopped renewing it)".to_string()
        ]
    );

    // The last attempt's failure ends the task.
    assert_eq!(
        q.fail(&b3, "still broken", SHORT).await.unwrap(),
        AfterFailure::Failed
    );
    let r = record(&q, "t2").await;
    assert_eq!((r.status.as_str(), r.errors.len()), ("failed", 3));
    assert!(r.retry_at.is_none() && r.lease_deadline.is_none(), "{r:?}");
    q.complete(&c2, &json!({ "summary": "ok" })).await.unwrap();
    assert!(q.claim("h7", LONG).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stores_records_keep_the_contract() {
    contract(Board::new("team", &["a", "b", "c"], 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_records_keep_the_contract() {
    let Some(server) = common::pg_env("OMK_TEST_PG_URL") else {
        return;
    };
    let url = common::pg_fresh_db(&server).await;
    let store = PgStore::connect(&url).await.unwrap();
    let tasks = common::pg_tasks(3, 3);
    store
        .create_team(
            "team",
            &json!({ "name": "team", "phase": "Executing" }),
            &tasks,
            None,
        )
        .await
        .unwrap();
    contract(store.queue(&["default".into()], &["scripted".into()])).await;
}
