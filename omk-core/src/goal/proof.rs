//! `proof.json` (API.md GoalProof): `ready` only with evidence — every task
//! done and every required gate passed on the final tree — otherwise the
//! known gaps say exactly what is missing.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::graph::{GraphSummary, TaskGraph, TaskStatus};
use super::state::{Artifact, GoalState, Status};
use crate::gate::GateResult;
use crate::store::{self, Document};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalProof {
    pub version: u32,
    pub goal_id: String,
    pub status: Status,
    pub readiness: String,
    pub summary: String,
    pub generated_at: DateTime<Utc>,
    pub artifacts: Vec<Artifact>,
    pub task_graph_summary: GraphSummary,
    pub changed_files: Vec<String>,
    pub commits: Vec<String>,
    pub gates: Vec<GateResult>,
    pub post_mutation_gates_ran: bool,
    pub known_gaps: Vec<String>,
    pub human_decisions_required: Vec<String>,
}

impl Document for GoalProof {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal proof";
}

impl GoalProof {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("proof.json")
    }

    pub fn load(dir: &Path) -> crate::Result<Option<GoalProof>> {
        store::read_doc(&GoalProof::file(dir))
    }
}

/// The last verification: the gates' results and the work tree they ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub version: u32,
    pub ran_at: DateTime<Utc>,
    /// Gates configured or detected for the project (0: nothing to test with).
    pub gate_count: usize,
    pub results: Vec<GateResult>,
    /// Diff fingerprint of the tree the gates ran on.
    pub diff_fingerprint: String,
}

impl Document for Verification {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal verification";
}

impl Verification {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("verification.json")
    }
}

/// Everything a proof is computed from.
pub struct Inputs<'a> {
    pub state: &'a GoalState,
    pub graph: Option<&'a TaskGraph>,
    pub verification: Option<&'a Verification>,
    pub changed_files: Vec<String>,
    pub commits: Vec<String>,
    /// Fingerprint of the work tree now.
    pub diff_fingerprint: &'a str,
    /// Gaps the controller knows of beyond tasks and gates (budget,
    /// stagnation, a blocker).
    pub extra_gaps: Vec<String>,
    pub human_decisions: Vec<String>,
}

/// The gaps that stand between the goal and `ready`.
pub fn known_gaps(i: &Inputs) -> Vec<String> {
    let mut gaps = Vec::new();
    match i.graph {
        None => gaps.push("the goal has not been planned yet: no task graph".into()),
        Some(g) if g.tasks.is_empty() => gaps.push("the task graph has no tasks".into()),
        Some(g) => {
            let blocked = g.blocked();
            let open: Vec<String> = g
                .tasks
                .iter()
                .filter(|t| t.status != TaskStatus::Done)
                .map(|t| {
                    let how = match t.status {
                        TaskStatus::Failed => format!(
                            "failed after {} attempt(s){}",
                            t.attempts,
                            t.summary
                                .as_deref()
                                .map(|s| format!(": {s}"))
                                .unwrap_or_default()
                        ),
                        _ if blocked.contains(&t.id) => "blocked behind a failed dependency".into(),
                        TaskStatus::Running => "still running".into(),
                        _ => "not done yet".into(),
                    };
                    format!("task {} ({}) is {how}", t.id, first_line(&t.title))
                })
                .collect();
            let n = open.len();
            gaps.extend(open.into_iter().take(10));
            if n > 10 {
                gaps.push(format!("... and {} more task(s) not done", n - 10));
            }
        }
    }
    match i.verification {
        None => gaps.push("verification gates have not run for this goal yet".into()),
        Some(v) if v.gate_count == 0 => gaps.push(
            "no verification gates are configured or detected (add .omk/gates.toml): the outcome has no testable acceptance".into(),
        ),
        Some(v) => {
            for r in v.results.iter().filter(|r| r.required && !r.passed) {
                gaps.push(if r.skipped {
                    format!(
                        "required gate '{}' was skipped: {}",
                        r.name,
                        r.skip_reason.as_deref().unwrap_or("its circuit breaker is open")
                    )
                } else if r.timed_out {
                    format!("required gate '{}' timed out", r.name)
                } else {
                    format!(
                        "required gate '{}' failed (exit {})",
                        r.name,
                        r.exit_code.map_or("none".to_string(), |c| c.to_string())
                    )
                });
            }
            if v.diff_fingerprint != i.diff_fingerprint {
                gaps.push(
                    "the work tree changed after the gates last ran: they must run again on the final tree".into(),
                );
            }
        }
    }
    gaps.extend(i.extra_gaps.iter().cloned());
    gaps
}

/// Build the proof. `status` is `ready` only when there are no gaps; a
/// controlling status of the goal (blocked, budget, paused, cancelled) is
/// kept; otherwise `not_ready`.
pub fn build(i: &Inputs) -> GoalProof {
    let gaps = known_gaps(i);
    let summary_graph = i.graph.map(TaskGraph::summary).unwrap_or_default();
    let gates: Vec<GateResult> = i
        .verification
        .map(|v| v.results.clone())
        .unwrap_or_default();
    let required = gates.iter().filter(|g| g.required).count();
    let status = if gaps.is_empty() {
        Status::Ready
    } else {
        match i.state.status {
            s @ (Status::BlockedOnHuman
            | Status::BlockedOnExternal
            | Status::NeedsMoreBudget
            | Status::FailedInfra
            | Status::Paused
            | Status::Cancelled) => s,
            _ => Status::NotReady,
        }
    };
    let first_gap = gaps.first().cloned().unwrap_or_default();
    let reason = i
        .state
        .failure
        .as_ref()
        .map_or(first_gap.clone(), |f| f.reason.clone());
    let readiness = match status {
        Status::Ready => format!(
            "ready: all {} task(s) done and all {required} required gate(s) passed on the final tree",
            summary_graph.total_tasks
        ),
        Status::BlockedOnHuman => format!("blocked on human: {reason}"),
        Status::BlockedOnExternal => format!("blocked on external dependency: {reason}"),
        Status::NeedsMoreBudget => format!("needs more budget: {reason}"),
        Status::FailedInfra => format!("failed infra: {reason}"),
        Status::Paused => format!("paused: {first_gap}"),
        Status::Cancelled => format!("cancelled: {reason}"),
        _ => format!("not ready: {first_gap}"),
    };
    let summary = format!(
        "Goal '{}' has {} gate result(s) and {}/{} task(s) done; {}.",
        i.state.normalized_goal,
        gates.len(),
        summary_graph.done_tasks,
        summary_graph.total_tasks,
        if status == Status::Ready {
            "it is ready".to_string()
        } else {
            format!(
                "it remains {status} until the {} known gap(s) are closed",
                gaps.len()
            )
        }
    );
    GoalProof {
        version: 1,
        goal_id: i.state.goal_id.clone(),
        status,
        readiness,
        summary,
        generated_at: Utc::now(),
        artifacts: i.state.artifacts.clone(),
        task_graph_summary: summary_graph,
        changed_files: i.changed_files.clone(),
        commits: i.commits.clone(),
        post_mutation_gates_ran: i
            .verification
            .is_some_and(|v| v.diff_fingerprint == i.diff_fingerprint),
        gates,
        known_gaps: gaps,
        human_decisions_required: i.human_decisions.clone(),
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(80) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}
