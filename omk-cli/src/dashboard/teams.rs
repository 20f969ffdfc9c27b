//! `GET /api/teams` for many teams: the same document as `omk team list
//! --json`, but a team that has ended is read and encoded once and then
//! served from memory for as long as its `team.json` keeps its size and
//! modification time. Running teams always go through `Omk::team_status`,
//! which also notices a dead supervisor. With 10,000 teams on disk a request
//! costs a directory scan and a `stat` per team instead of 10,000 reads
//! and parses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use omk_core::Omk;
use serde_json::{json, Value};

struct Cached {
    stamp: (u64, SystemTime),
    created_at: DateTime<Utc>,
    json: Vec<u8>,
}

/// Ended teams, by name.
#[derive(Default)]
pub struct TeamCache {
    ended: Mutex<HashMap<String, Cached>>,
}

impl TeamCache {
    /// The `{"teams": [...], "errors": [...]}` document as JSON bytes.
    pub fn list(&self, omk: &Omk) -> omk_core::Result<Vec<u8>> {
        let dir = omk.paths().teams_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(br#"{"teams":[],"errors":[]}"#.to_vec())
            }
            Err(e) => {
                return Err(omk_core::Error::Io {
                    context: format!("read {}", dir.display()),
                    source: e,
                })
            }
        };
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(DateTime<Utc>, String, Vec<u8>)> = Vec::new();
        let mut errors: Vec<Value> = Vec::new();
        let mut present = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if omk_core::paths::validate_name("team name", &name).is_err() {
                continue;
            }
            let Ok(meta) = std::fs::metadata(entry.path().join("team.json")) else {
                continue;
            };
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            present.insert(name.clone());
            if let Some(c) = ended.get(&name).filter(|c| c.stamp == stamp) {
                rows.push((c.created_at, name, c.json.clone()));
                continue;
            }
            match omk.team_status(&name) {
                Ok(doc) => {
                    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                    if doc.phase.is_terminal() {
                        ended.insert(
                            name.clone(),
                            Cached {
                                stamp,
                                created_at: doc.created_at,
                                json: bytes.clone(),
                            },
                        );
                    }
                    rows.push((doc.created_at, name, bytes));
                }
                Err(omk_core::Error::NotFound(_)) => {}
                Err(e) => errors.push(json!({ "name": name, "error": e.to_json() })),
            }
        }
        ended.retain(|name, _| present.contains(name));
        drop(ended);
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = Vec::with_capacity(rows.iter().map(|r| r.2.len() + 1).sum::<usize>() + 64);
        out.extend_from_slice(br#"{"teams":["#);
        for (i, (_, _, json)) in rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json);
        }
        out.extend_from_slice(br#"],"errors":"#);
        out.extend_from_slice(&serde_json::to_vec(&errors).unwrap_or_else(|_| b"[]".to_vec()));
        out.push(b'}');
        Ok(out)
    }
}
