//! The evidence a finished run leaves: `proof.json` when every task
//! completed, `failure.json` otherwise.

use chrono::Utc;
use serde_json::{json, Value};

use super::doc::{Phase, TaskStatus, TeamDoc};
use crate::error::Result;
use crate::gate::GatesReport;
use crate::store;

/// What the Verifying phase did about gates.
#[derive(Debug, Clone)]
pub enum GatesOutcome {
    /// The required gates ran (each result inside, skipped ones included).
    Ran(GatesReport),
    /// They were not run, and why.
    Skipped(String),
    /// They could not run (bad gates file...).
    Error(String),
}

impl GatesOutcome {
    fn results(&self) -> Value {
        match self {
            GatesOutcome::Ran(r) => serde_json::to_value(&r.results).unwrap_or(Value::Null),
            _ => json!([]),
        }
    }

    fn gaps(&self) -> Vec<String> {
        match self {
            GatesOutcome::Ran(r) => r
                .results
                .iter()
                .filter(|g| g.skipped)
                .map(|g| {
                    format!(
                        "gate {} was skipped: {}",
                        g.name,
                        g.skip_reason.as_deref().unwrap_or("")
                    )
                })
                .collect(),
            GatesOutcome::Skipped(why) => vec![format!("verification gates were not run: {why}")],
            GatesOutcome::Error(e) => vec![format!("verification gates could not run: {e}")],
        }
    }
}

/// The run's proof (when it completed) or failure document.
pub fn document(doc: &TeamDoc, gates: &GatesOutcome) -> Value {
    if doc.phase == Phase::Completed {
        proof(doc, gates)
    } else {
        failure(doc, gates)
    }
}

/// Run the required gates of `project` (its `.omk/gates.toml`, else
/// detected) through their circuit breakers under `paths`, artifacts in
/// `artifacts`; blocking.
pub fn verify(
    paths: &crate::paths::StatePaths,
    project: &std::path::Path,
    artifacts: &std::path::Path,
) -> GatesOutcome {
    let run = || -> Result<GatesOutcome> {
        let set = crate::gate::config::load(project)?;
        let required: Vec<String> = set
            .gates
            .iter()
            .filter(|g| g.required)
            .map(|g| g.name.clone())
            .collect();
        if required.is_empty() {
            return Ok(GatesOutcome::Skipped(format!(
                "no required gates are configured or detected in {}",
                project.display()
            )));
        }
        Ok(GatesOutcome::Ran(crate::gate::run(
            paths, &set, &required, artifacts,
        )?))
    };
    run().unwrap_or_else(|e| GatesOutcome::Error(e.to_string()))
}

impl GatesOutcome {
    /// Why the run fails because of its gates, if it does.
    pub fn failure(&self) -> Option<String> {
        match self {
            GatesOutcome::Ran(report) => {
                let blocking: Vec<String> =
                    report.blocking().iter().map(|r| r.name.clone()).collect();
                (!blocking.is_empty())
                    .then(|| format!("required gate(s) did not pass: {}", blocking.join(", ")))
            }
            GatesOutcome::Error(e) => Some(format!("the gates could not run: {e}")),
            GatesOutcome::Skipped(_) => None,
        }
    }

    /// Each gate's result as the events log has it: `(kind, payload)`.
    pub fn events(&self) -> Vec<(crate::events::EventKind, Value)> {
        use crate::events::EventKind;
        let GatesOutcome::Ran(report) = self else {
            return Vec::new();
        };
        report
            .results
            .iter()
            .map(|r| {
                let kind = if r.skipped {
                    EventKind::GateSkipped
                } else if r.passed {
                    EventKind::GatePassed
                } else {
                    EventKind::GateFailed
                };
                (
                    kind,
                    json!({ "gate": r.name, "exit_code": r.exit_code, "duration_ms": r.duration_ms, "timed_out": r.timed_out, "skip_reason": r.skip_reason }),
                )
            })
            .collect()
    }
}

/// Write the run's proof or failure document (exactly one of them).
pub fn write(doc: &TeamDoc, gates: &GatesOutcome) -> Result<()> {
    let (file, other) = if doc.phase == Phase::Completed {
        ("proof.json", "failure.json")
    } else {
        ("failure.json", "proof.json")
    };
    let body = document(doc, gates);
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

fn proof(doc: &TeamDoc, gates: &GatesOutcome) -> Value {
    let gates_run = matches!(gates, GatesOutcome::Ran(_));
    json!({
        "version": 1,
        "team": doc.name,
        "status": "ready",
        "ready": true,
        "readiness": if gates_run {
            "every task completed and every required gate passed"
        } else {
            "every task completed; no verification gate ran"
        },
        "generated_at": Utc::now(),
        "task_summary": {
            "total_tasks": doc.tasks.len(),
            "completed_tasks": doc.count(TaskStatus::Completed),
        },
        "tasks": task_evidence(doc),
        "tokens": doc.tokens,
        "gates": gates.results(),
        "gates_run": gates_run,
        "known_gaps": gates.gaps(),
        "events": doc.state_dir.join("events.jsonl"),
        "isolation": doc.isolation,
        "worktree": doc.worktree,
    })
}

fn failure(doc: &TeamDoc, gates: &GatesOutcome) -> Value {
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
        "gates": gates.results(),
        "gates_run": matches!(gates, GatesOutcome::Ran(_)),
        "known_gaps": gates.gaps(),
        "tokens": doc.tokens,
        "events": doc.state_dir.join("events.jsonl"),
        "isolation": doc.isolation,
        "worktree": doc.worktree,
    })
}
