//! The evidence a finished run leaves: `proof.json` when every task
//! completed, `failure.json` otherwise.

use chrono::Utc;
use serde_json::{json, Value};

use super::doc::{Phase, TaskStatus, TeamDoc};
use crate::error::Result;
use crate::store;

/// Write the run's proof or failure document (exactly one of them).
pub fn write(doc: &TeamDoc) -> Result<()> {
    let (file, other) = if doc.phase == Phase::Completed {
        ("proof.json", "failure.json")
    } else {
        ("failure.json", "proof.json")
    };
    let body = if doc.phase == Phase::Completed {
        proof(doc)
    } else {
        failure(doc)
    };
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    bytes.push(b'\n');
    store::write_atomic(&doc.state_dir.join(file), &bytes)?;
    let _ = std::fs::remove_file(doc.state_dir.join(other));
    Ok(())
}

fn task_evidence(doc: &TeamDoc) -> Vec<Value> {
    doc.tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "title": t.title,
                "status": t.status,
                "worker": t.worker,
                "attempts": t.attempts,
                "summary": t.summary,
                "tokens": t.tokens,
                "errors": t.errors,
            })
        })
        .collect()
}

fn proof(doc: &TeamDoc) -> Value {
    json!({
        "version": 1,
        "team": doc.name,
        "status": "ready",
        "ready": true,
        "readiness": "every task completed; no verification gates ran",
        "generated_at": Utc::now(),
        "task_summary": {
            "total_tasks": doc.tasks.len(),
            "completed_tasks": doc.count(TaskStatus::Completed),
        },
        "tasks": task_evidence(doc),
        "tokens": doc.tokens,
        "gates": [],
        "gates_run": false,
        "known_gaps": ["verification gates were not run: the gate runner is not part of this build yet"],
        "events": doc.state_dir.join("events.jsonl"),
    })
}

fn failure(doc: &TeamDoc) -> Value {
    json!({
        "version": 1,
        "team": doc.name,
        "status": "not_ready",
        "ready": false,
        "phase": doc.phase,
        "reason": doc.reason,
        "generated_at": Utc::now(),
        "failed_tasks": doc.tasks.iter().filter(|t| t.status == TaskStatus::Failed).map(|t| json!({
            "id": t.id, "title": t.title, "attempts": t.attempts, "errors": t.errors,
        })).collect::<Vec<_>>(),
        "cancelled_tasks": doc.tasks.iter().filter(|t| t.status == TaskStatus::Cancelled).map(|t| t.id.clone()).collect::<Vec<_>>(),
        "tasks": task_evidence(doc),
        "tokens": doc.tokens,
        "events": doc.state_dir.join("events.jsonl"),
    })
}
