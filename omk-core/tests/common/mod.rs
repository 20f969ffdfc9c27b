//! Helpers shared by omk-core's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bundled scripted Wire agent, built next to this test binary
/// (target/<profile>/omk-scripted-agent); built on demand when missing.
#[allow(dead_code)]
pub fn scripted_agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("omk-scripted-agent");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "omk-scripted-agent"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the scripted agent");
    }
    bin
}

/// A runtime like omk's own: two workers, I/O and timers.
#[allow(dead_code)]
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Whether `pid` still runs (a zombie or a reaped process does not).
#[allow(dead_code)]
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

/// `git ARGS` in `dir` as a test user; panics unless it succeeds.
#[allow(dead_code)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A variable `tests/pg/with-postgres.sh` sets (`make cargo-test` runs the
/// tests under it), or `None` after saying SKIPPED; with `CI=true` a
/// missing one is a failure.
#[allow(dead_code)]
pub fn pg_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} is not set: run the tests through `make cargo-test`, which starts PostgreSQL")
        }
        Err(_) => {
            eprintln!("SKIPPED: {name} is not set (make cargo-test starts PostgreSQL)");
            None
        }
    }
}

/// Tasks `t1`..`tN` of pool `default` for agent profile `scripted`.
#[allow(dead_code)]
pub fn pg_tasks(n: usize, max_attempts: i32) -> Vec<omk_core::pg::tasks::NewTask> {
    (1..=n)
        .map(|i| omk_core::pg::tasks::NewTask {
            id: format!("t{i}"),
            pool: "default".into(),
            agent: "scripted".into(),
            max_attempts,
            spec: serde_json::json!({ "title": format!("task {i}") }),
        })
        .collect()
}

/// `url` with its database replaced by `db`.
#[allow(dead_code)]
pub fn pg_with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// A new, empty database on the server at `url`; its URL.
#[allow(dead_code)]
pub async fn pg_fresh_db(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = format!("omk_t_{}", omk_core::ids::random_hex(6));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    pg_with_db(url, &name)
}

/// `pg_ctl` on the test's server (`tests/pg/with-postgres.sh` sets
/// `OMK_TEST_PG_CTL`): stop, start or restart it.
#[allow(dead_code)]
pub fn pg_ctl(args: &[&str]) {
    let ctl = std::env::var("OMK_TEST_PG_CTL").unwrap();
    let status = Command::new(&ctl).args(args).status().unwrap();
    assert!(status.success(), "{ctl} {args:?} failed");
}
