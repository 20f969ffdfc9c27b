//! PostgreSQL stopped as in a crash (`pg_ctl stop -m immediate`) in the
//! middle of a team run over two `omk worker` hosts, and started again: a
//! binary of its own, since the tests of one binary share the server.

mod cluster;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::pg::pg_ctl;
use cluster::{completed_by, team_result, Cluster};

#[test]
fn a_store_crash_mid_run_loses_nothing_and_the_team_completes() {
    let Some(c) = Cluster::new() else { return };
    cluster::required("OMK_TEST_PG_CTL").unwrap();
    let mut a = c.host("host-a", 5, 2);
    let mut b = c.host("host-b", 5, 2);
    let run = c
        .team_run("crash", 5, &["[sleep:1] [answer:kept]"; 8])
        .spawn()
        .unwrap();
    c.wait_tasks("crash", "work under way", |t| {
        t.iter().any(|t| t.status == "completed") && t.iter().any(|t| t.status == "running")
    });
    // Down while agents work: their completions, renewals, claims and the
    // coordinator's reads wait for the store, for up to a lease.
    pg_ctl(&["stop", "-m", "immediate"]);
    std::thread::sleep(Duration::from_millis(1500));
    pg_ctl(&["restart"]);
    let (code, doc) = team_result(run.wait_with_output().unwrap());
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["phase"], "Completed", "{doc}");

    // Exactly one completion per task, in its record and in the events,
    // and a gapless sequence: nothing lost, nothing twice.
    let until = Instant::now() + Duration::from_secs(30);
    let all = loop {
        match c.rt.block_on(c.store.events_after(None, 0, 100_000)) {
            Ok(e) => break e,
            Err(e) => {
                assert!(Instant::now() < until, "the store never came back: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let mut completions = BTreeMap::<String, usize>::new();
    for e in all
        .iter()
        .filter(|e| e.event.kind.as_str() == "task_completed")
    {
        *completions
            .entry(e.event.payload["task_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let tasks = c.tasks("crash");
    assert_eq!(tasks.len(), 8);
    for t in &tasks {
        assert_eq!(t.status, "completed", "{t:?}");
        assert!(completed_by(t).starts_with("host-"), "{t:?}");
        assert_eq!(completions.get(&t.id), Some(&1), "{completions:?}");
    }
    let ends = all
        .iter()
        .filter(|e| e.event.kind.as_str() == "run_completed")
        .count();
    assert_eq!(ends, 1);
    // Both hosts lived through it.
    let done: u64 = [a.stop(), b.stop()]
        .iter()
        .map(|r| r["completed"].as_u64().unwrap())
        .sum();
    assert!(done >= 8, "{done}");
}
