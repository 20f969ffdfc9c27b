//! Chat sessions on disk (API.md "Chat API"): `sessions/<id>/meta.json`,
//! `conversation.jsonl` (`{"ts","role","text"}`), `session-history.jsonl`
//! (the inputs typed, for arrow-up) and `engine-events.jsonl` (the agent
//! events of the session). Everything appended is redacted first; logs are
//! capped like every other growing file.
//!
//! This module owns the files only; the REPL that drives an agent with them
//! is a consumer (the chat issue).

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod engine;

use crate::error::{Error, Result};
use crate::paths::{validate_name, StatePaths};
use crate::store::{self, Document, FsyncPolicy, JsonlWriter, LogRead};

/// Each session log rotates past this size (one older generation kept).
pub const SESSION_LOG_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub version: u32,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub project_root: PathBuf,
    pub theme: String,
}

impl Document for SessionMeta {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "chat session metadata";
}

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One line of `conversation.jsonl`: exactly `{"ts","role","text"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// ISO 8601 UTC, second precision with `Z` (`2026-05-21T10:00:00Z`).
    pub ts: String,
    pub role: Role,
    pub text: String,
}

/// A new session id: `s-<UTC date>-<16 hex>` (64 random bits; path-safe).
pub fn new_session_id() -> String {
    format!(
        "s-{}-{}",
        Utc::now().format("%Y%m%d"),
        crate::ids::random_hex(8)
    )
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An open session, appending to its logs.
#[derive(Debug)]
pub struct ChatSession {
    dir: PathBuf,
    meta: SessionMeta,
    conversation: JsonlWriter,
    history: JsonlWriter,
    engine: JsonlWriter,
}

impl ChatSession {
    /// Start a session for `project_root`.
    pub fn create(paths: &StatePaths, project_root: &Path, theme: &str) -> Result<ChatSession> {
        let id = new_session_id();
        let dir = paths.session_dir(&id)?;
        store::ensure_dir(&dir)?;
        let meta = SessionMeta {
            version: SessionMeta::VERSION,
            id,
            started_at: Utc::now(),
            project_root: project_root.to_path_buf(),
            theme: theme.to_string(),
        };
        store::write_doc(&dir.join("meta.json"), &meta)?;
        Self::with_logs(dir, meta)
    }

    /// Reopen a session to continue it.
    pub fn open(paths: &StatePaths, id: &str) -> Result<ChatSession> {
        validate_name("session id", id)?;
        let dir = paths.session_dir(id)?;
        let meta = store::read_doc::<SessionMeta>(&dir.join("meta.json"))?
            .ok_or_else(|| Error::NotFound(format!("no chat session {id:?}")))?;
        Self::with_logs(dir, meta)
    }

    fn with_logs(dir: PathBuf, meta: SessionMeta) -> Result<ChatSession> {
        let open = |name: &str, policy| -> Result<JsonlWriter> {
            Ok(JsonlWriter::open(&dir.join(name), policy)?.with_cap(SESSION_LOG_MAX_BYTES))
        };
        Ok(ChatSession {
            conversation: open("conversation.jsonl", FsyncPolicy::EveryAppend)?,
            history: open("session-history.jsonl", FsyncPolicy::Grouped)?,
            engine: open("engine-events.jsonl", FsyncPolicy::Grouped)?,
            dir,
            meta,
        })
    }

    pub fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append a message (redacted) to the conversation, durably.
    pub fn add_message(&mut self, role: Role, text: &str) -> Result<Message> {
        let m = Message {
            ts: now_ts(),
            role,
            text: crate::redact::redact_str(text).into_owned(),
        };
        self.conversation.append(&m)?;
        Ok(m)
    }

    /// Remember an input line (redacted) for the history.
    pub fn add_input(&mut self, text: &str) -> Result<()> {
        let line = serde_json::json!({ "ts": now_ts(), "text": crate::redact::redact_str(text) });
        self.history.append(&line)
    }

    /// Record an agent event (redacted) in the engine stream.
    pub fn add_engine_event(&mut self, kind: &str, payload: Value) -> Result<()> {
        let mut line = serde_json::json!({ "ts": now_ts(), "type": kind, "payload": payload });
        crate::redact::redact_value(&mut line);
        self.engine.append(&line)
    }

    /// Claim the session for this process: one live chat per session, so
    /// two REPLs never interleave their turns in one conversation. The lock
    /// is an `flock` on `meta.json` (written once at creation, never
    /// replaced), released on drop or when the process dies.
    pub fn try_lock(&self) -> Result<store::FileLock> {
        store::FileLock::try_exclusive(&self.dir.join("meta.json"))?.ok_or_else(|| {
            Error::Conflict(format!(
                "chat session {} is open in another omk chat; leave that one first",
                self.meta.id
            ))
        })
    }

    /// Flush the grouped logs to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.history.sync()?;
        self.engine.sync()
    }

    /// The engine events so far (torn or unparsable lines counted, skipped).
    pub fn engine_events(&self) -> Result<LogRead<Value>> {
        store::read_jsonl_with_rotated(&self.dir.join("engine-events.jsonl"))
    }

    /// The conversation so far (torn or unparsable lines counted, skipped).
    pub fn conversation(&self) -> Result<LogRead<Message>> {
        store::read_jsonl_with_rotated(&self.dir.join("conversation.jsonl"))
    }

    /// The inputs typed so far, oldest first.
    pub fn history(&self) -> Result<Vec<String>> {
        let read: LogRead<Value> =
            store::read_jsonl_with_rotated(&self.dir.join("session-history.jsonl"))?;
        Ok(read
            .records
            .iter()
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect())
    }
}

/// The conversation of session `id`, read without opening the session for
/// writing (a live chat may be appending to it).
pub fn read_conversation(paths: &StatePaths, id: &str) -> Result<LogRead<Message>> {
    let dir = paths.session_dir(id)?;
    if !dir.join("meta.json").is_file() {
        return Err(Error::NotFound(format!("no chat session {id:?}")));
    }
    store::read_jsonl_with_rotated(&dir.join("conversation.jsonl"))
}

/// Every session (of one project, or all), oldest first. Sessions whose
/// metadata cannot be read are skipped.
pub fn list_sessions(paths: &StatePaths, project: Option<&Path>) -> Result<Vec<SessionMeta>> {
    let root = paths.root().join("sessions");
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", root.display()), e)),
    };
    let mut out: Vec<SessionMeta> = rd
        .flatten()
        .filter_map(|e| {
            store::read_doc::<SessionMeta>(&e.path().join("meta.json"))
                .ok()
                .flatten()
        })
        .filter(|m| project.is_none_or(|p| m.project_root == p))
        .collect();
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_its_files() {
        let d = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(d.path().join("state"));
        let mut s = ChatSession::create(&paths, Path::new("/proj"), "dark").unwrap();
        let id = s.meta().id.clone();
        assert!(
            id.starts_with("s-") && id.len() == "s-20260521-".len() + 16,
            "{id}"
        );
        validate_name("session id", &id).unwrap();
        s.add_input("hello").unwrap();
        s.add_message(Role::User, "hello").unwrap();
        s.add_message(
            Role::Assistant,
            "my key is sk-proj-abcdefghijklmnopqrstuvwx",
        )
        .unwrap();
        s.add_engine_event("TurnBegin", serde_json::json!({}))
            .unwrap();
        s.sync().unwrap();
        drop(s);

        let s = ChatSession::open(&paths, &id).unwrap();
        assert_eq!(s.meta().theme, "dark");
        let conv = s.conversation().unwrap();
        assert_eq!(conv.parse_failures, 0);
        assert_eq!(conv.records.len(), 2);
        assert_eq!(
            (conv.records[0].role, conv.records[1].role),
            (Role::User, Role::Assistant)
        );
        assert!(
            !conv.records[1].text.contains("sk-proj-abcdefghij"),
            "redacted: {}",
            conv.records[1].text
        );
        let ts = &conv.records[0].ts;
        assert!(
            ts.ends_with('Z') && DateTime::parse_from_rfc3339(ts).is_ok(),
            "{ts}"
        );
        // The line is exactly {"ts","role","text"}.
        let raw = std::fs::read_to_string(s.dir().join("conversation.jsonl")).unwrap();
        let first: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ts", "role", "text"]);
        assert_eq!(s.history().unwrap(), ["hello"]);
        assert_eq!(
            list_sessions(&paths, Some(Path::new("/proj")))
                .unwrap()
                .len(),
            1
        );
        assert!(list_sessions(&paths, Some(Path::new("/other")))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_and_unknown_ids() {
        let d = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(d.path().join("state"));
        assert_eq!(
            ChatSession::open(&paths, "../x").unwrap_err().code(),
            crate::ErrorCode::InvalidInput
        );
        assert_eq!(
            ChatSession::open(&paths, "s-none").unwrap_err().code(),
            crate::ErrorCode::NotFound
        );
        assert_ne!(new_session_id(), new_session_id());
    }
}
