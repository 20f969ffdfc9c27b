//! `/api/events`: server-sent events of changes to teams, goals, autopilot
//! and ralph runs, gates, pools and metrics.
//!
//! omk's state is files written by many processes, so the feed polls them:
//! every 250 ms (while anyone listens) one task compares the size and
//! modification time of each state document with the last scan and, for
//! each that changed, broadcasts an event named after its kind (`team`,
//! `goal`, `autopilot`, `ralph`, `gates`, `pools`, `metrics`) whose data is
//! `{"name", "document"}` (`document` null when it was removed). A comment
//! keeps idle connections alive. Without listeners the scan runs once a
//! second, only to keep its baseline current.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use omk_core::Omk;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::Shared;

const POLL: Duration = Duration::from_millis(250);
const IDLE_POLL: Duration = Duration::from_secs(1);

/// One changed document.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub document: Value,
}

pub fn routes() -> Router<Shared> {
    Router::new().route("/api/events", get(stream))
}

async fn stream(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = BroadcastStream::new(s.changes.subscribe()).filter_map(|c| {
        // A lagging client misses intermediate versions, not the latest.
        let c = c.ok()?;
        let data = json!({ "name": c.name, "document": c.document }).to_string();
        Some(Ok(Event::default().event(c.kind).data(data)))
    });
    let hello = tokio_stream::once(Ok(Event::default().event("hello").data(
        json!({ "version": omk_core::VERSION, "poll_ms": POLL.as_millis() as u64 }).to_string(),
    )));
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::default())
}

/// A state document: what it is, and its size and mtime at the last scan.
type Seen = HashMap<(&'static str, String), (u64, SystemTime)>;

/// Watch the state root and broadcast changes until the process ends.
pub async fn watch(omk: Omk, tx: broadcast::Sender<Change>) {
    // The first baseline is taken before any client can connect.
    let root = omk.state_dir().to_path_buf();
    let mut seen: Option<Seen> = tokio::task::spawn_blocking(move || scan(&root)).await.ok();
    loop {
        // The baseline is kept while nobody listens (at a slower pace), so
        // a change made just after a client connects is never mistaken
        // for the state it started from.
        let idle = tx.receiver_count() == 0;
        tokio::time::sleep(if idle { IDLE_POLL } else { POLL }).await;
        let root = omk.state_dir().to_path_buf();
        let Ok(now) = tokio::task::spawn_blocking(move || scan(&root)).await else {
            continue;
        };
        let changed: Vec<(&'static str, String)> = match &seen {
            None => Vec::new(),
            Some(before) => {
                let mut c: Vec<_> = now
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .collect();
                c.extend(before.keys().filter(|k| !now.contains_key(*k)).cloned());
                c
            }
        };
        seen = Some(now);
        if tx.receiver_count() == 0 {
            continue;
        }
        for (kind, name) in changed {
            let o = omk.clone();
            let n = name.clone();
            let document = tokio::task::spawn_blocking(move || load(&o, kind, &n))
                .await
                .unwrap_or(Value::Null);
            let _ = tx.send(Change {
                kind,
                name,
                document,
            });
        }
    }
}

fn load(omk: &Omk, kind: &str, name: &str) -> Value {
    let doc = match kind {
        "team" => omk.team_status(name).map(|d| serde_json::to_value(d).ok()),
        "goal" => omk.goal_show(name).map(|d| serde_json::to_value(d).ok()),
        "autopilot" => omk
            .autopilot_status(name)
            .map(|d| serde_json::to_value(d).ok()),
        "ralph" => omk.ralph_status(name).map(|d| serde_json::to_value(d).ok()),
        "gates" => omk.gates_status(false).map(Some),
        "pools" => omk.pools_status().map(Some),
        "metrics" => omk.metrics().map(Some),
        _ => Ok(None),
    };
    doc.ok().flatten().unwrap_or(Value::Null)
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Every watched document under the state root.
fn scan(root: &Path) -> Seen {
    let mut out = Seen::new();
    for (kind, dir, file) in [
        ("team", "team", "team.json"),
        ("goal", "goal", "goal.json"),
        ("autopilot", "autopilot", "state.json"),
        ("ralph", "ralph", "state.json"),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if let Some(s) = stamp(&e.path().join(file)) {
                out.insert((kind, name), s);
            }
        }
    }
    let singles: [(&'static str, PathBuf); 1] =
        [("gates", root.join("gates").join("breakers.json"))];
    for (kind, path) in singles {
        if let Some(s) = stamp(&path) {
            out.insert((kind, String::new()), s);
        }
    }
    // Pools and metrics: one event for any of their files.
    for (kind, dir, prefix) in [
        ("pools", root.join("pools"), ""),
        ("metrics", root.to_path_buf(), "metrics."),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut total = (0u64, SystemTime::UNIX_EPOCH);
        let mut any = false;
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with(prefix) || name.ends_with(".lock") {
                continue;
            }
            if let Some((len, t)) = stamp(&e.path()) {
                any = true;
                total.0 += len;
                total.1 = total.1.max(t);
            }
        }
        if any {
            out.insert((kind, String::new()), total);
        }
    }
    out
}
