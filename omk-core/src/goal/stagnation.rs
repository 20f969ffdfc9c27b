//! Iteration metrics (`iterations.jsonl`, one line per controller
//! iteration), the stagnation detectors over a window of them, and the
//! recovery plan that answers each diagnosis.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::GoalConfig;
use crate::error::Result;
use crate::store::{self, FsyncPolicy, JsonlWriter};

/// What one controller iteration achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    pub iteration: u32,
    pub recorded_at: DateTime<Utc>,
    /// Readiness evidence in 0..=1: half for tasks done, half for required
    /// gates passing.
    pub proof_score: f64,
    /// Gates that passed / gates that ran.
    pub gate_pass_rate: f64,
    /// Each gate's outcome.
    pub gates: BTreeMap<String, bool>,
    /// Fingerprint of each failing gate's exit code and output.
    pub gate_failures: BTreeMap<String, String>,
    pub changed_files: Vec<String>,
    pub changed_files_count: usize,
    pub diff_fingerprint: String,
    /// Tokens spent during this iteration.
    pub tokens: u64,
    pub total_tokens: u64,
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub commits: usize,
}

pub fn iterations_file(dir: &Path) -> PathBuf {
    dir.join("iterations.jsonl")
}

pub fn append(dir: &Path, m: &IterationMetrics) -> Result<()> {
    JsonlWriter::open(&iterations_file(dir), FsyncPolicy::EveryAppend)?.append(m)
}

pub fn load(dir: &Path) -> Result<Vec<IterationMetrics>> {
    Ok(store::read_jsonl(&iterations_file(dir))?.records)
}

/// API.md `diagnosis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub primary: Option<String>,
    pub secondary: Option<String>,
    pub affected_metrics: Vec<String>,
    /// Files involved (the cycling files of a circular fix).
    pub affected_files: Vec<String>,
    /// One sentence per firing detector, strongest first.
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsWindow {
    pub window_size: usize,
    pub warmup_iterations: usize,
    pub evaluated_at: DateTime<Utc>,
    /// Iterations actually looked at (at most `window_size`).
    pub iterations_evaluated: usize,
}

/// API.md StagnationReport (`omk goal diagnose --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagnationReport {
    pub goal_id: String,
    pub stagnant: bool,
    pub confidence: f64,
    pub diagnosis: Diagnosis,
    pub recommended_action: String,
    pub metrics_window: MetricsWindow,
}

/// One detector's finding.
#[derive(Debug, Clone, PartialEq)]
struct Finding {
    cause: &'static str,
    confidence: f64,
    metrics: &'static [&'static str],
    files: Vec<String>,
    evidence: String,
}

/// Run every detector over the last `window` iterations.
pub fn diagnose(goal_id: &str, history: &[IterationMetrics], cfg: &GoalConfig) -> StagnationReport {
    let window = cfg.stagnation_window.max(2);
    let start = history.len().saturating_sub(window);
    let w = &history[start..];
    let mut findings = Vec::new();
    if w.len() >= cfg.stagnation_warmup.max(2) {
        findings.extend(circular_fix(w));
        findings.extend(no_progress(w, window));
        findings.extend(gate_flapping(w));
        findings.extend(repeated_failure(w));
        findings.extend(scope_growth(w));
        findings.extend(token_burn(w, cfg.token_burn_tokens));
    }
    findings.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let best = findings.first().map_or(0.0, |f| f.confidence);
    let stagnant = best >= cfg.stagnation_threshold;
    let firing: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.confidence >= cfg.stagnation_threshold)
        .collect();
    let mut affected_metrics = Vec::new();
    for f in &firing {
        for m in f.metrics {
            if !affected_metrics.iter().any(|x: &String| x == m) {
                affected_metrics.push((*m).to_string());
            }
        }
    }
    StagnationReport {
        goal_id: goal_id.into(),
        stagnant,
        confidence: (best * 100.0).round() / 100.0,
        diagnosis: Diagnosis {
            primary: firing.first().map(|f| f.cause.to_string()),
            secondary: firing.get(1).map(|f| f.cause.to_string()),
            affected_metrics,
            affected_files: firing.first().map(|f| f.files.clone()).unwrap_or_default(),
            evidence: firing.iter().map(|f| f.evidence.clone()).collect(),
        },
        recommended_action: if stagnant { "recover" } else { "continue" }.into(),
        metrics_window: MetricsWindow {
            window_size: window,
            warmup_iterations: cfg.stagnation_warmup,
            evaluated_at: Utc::now(),
            iterations_evaluated: w.len(),
        },
    }
}

fn flat_proof(w: &[IterationMetrics]) -> bool {
    let first = w[0].proof_score;
    w.iter().all(|m| m.proof_score <= first + 0.01) && w.last().is_some_and(|m| m.proof_score < 1.0)
}

/// The same change undone and redone: the diff fingerprint returns to a
/// state it left (A, B, A), or a file appears, vanishes and reappears.
fn circular_fix(w: &[IterationMetrics]) -> Option<Finding> {
    let mut cycles = 0;
    for i in 0..w.len().saturating_sub(2) {
        let (a, b, c) = (&w[i], &w[i + 1], &w[i + 2]);
        if a.diff_fingerprint == c.diff_fingerprint && a.diff_fingerprint != b.diff_fingerprint {
            cycles += 1;
        }
    }
    if cycles == 0 {
        return None;
    }
    // Files that flip in and out of the changed set.
    let mut files = BTreeSet::new();
    for i in 0..w.len() - 1 {
        let now: BTreeSet<&String> = w[i].changed_files.iter().collect();
        let next: BTreeSet<&String> = w[i + 1].changed_files.iter().collect();
        files.extend(now.symmetric_difference(&next).map(|s| (*s).clone()));
    }
    Some(Finding {
        cause: "CircularFix",
        confidence: (0.65 + 0.15 * cycles as f64).min(1.0),
        metrics: &["proof_score", "changed_files_count", "diff_fingerprint"],
        files: files.into_iter().collect(),
        evidence: format!(
            "the work tree returned to an earlier state {cycles} time(s) in {} iterations (the same change undone and redone)",
            w.len()
        ),
    })
}

/// Proof score and done tasks flat across the window.
fn no_progress(w: &[IterationMetrics], window: usize) -> Option<Finding> {
    if !flat_proof(w) || w.last()?.tasks_done > w[0].tasks_done && w.last()?.proof_score > 0.0 {
        return None;
    }
    Some(Finding {
        cause: "NoProgress",
        confidence: (w.len() as f64 / window as f64).min(1.0),
        metrics: &["proof_score", "gate_pass_rate"],
        files: Vec::new(),
        evidence: format!(
            "proof score stayed at {:.2} for {} iterations",
            w.last()?.proof_score,
            w.len()
        ),
    })
}

/// A gate that flips between pass and fail.
fn gate_flapping(w: &[IterationMetrics]) -> Option<Finding> {
    let names: BTreeSet<&String> = w.iter().flat_map(|m| m.gates.keys()).collect();
    let mut worst: Option<(usize, &String)> = None;
    for name in names {
        let flips = w
            .windows(2)
            .filter(|p| match (p[0].gates.get(name), p[1].gates.get(name)) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            })
            .count();
        if flips >= 2 && worst.is_none_or(|(f, _)| flips > f) {
            worst = Some((flips, name));
        }
    }
    let (flips, name) = worst?;
    Some(Finding {
        cause: "GateFlapping",
        confidence: (flips as f64 / 3.0).min(1.0),
        metrics: &["gate_pass_rate"],
        files: Vec::new(),
        evidence: format!("gate {name:?} flipped between pass and fail {flips} times"),
    })
}

/// The same gate failing the same way, iteration after iteration.
fn repeated_failure(w: &[IterationMetrics]) -> Option<Finding> {
    let last = w.last()?;
    let mut best: Option<(usize, &String)> = None;
    for (name, print) in &last.gate_failures {
        let streak = w
            .iter()
            .rev()
            .take_while(|m| m.gate_failures.get(name) == Some(print))
            .count();
        if streak >= 3 && best.is_none_or(|(s, _)| streak > s) {
            best = Some((streak, name));
        }
    }
    let (streak, name) = best?;
    Some(Finding {
        cause: "RepeatedFailure",
        confidence: (streak as f64 / 4.0).min(1.0),
        metrics: &["gate_pass_rate", "proof_score"],
        files: Vec::new(),
        evidence: format!("gate {name:?} failed identically in the last {streak} iterations"),
    })
}

/// More and more files touched while the proof does not move.
fn scope_growth(w: &[IterationMetrics]) -> Option<Finding> {
    if !flat_proof(w) {
        return None;
    }
    let mut run = 0usize;
    let mut best = 0usize;
    for p in w.windows(2) {
        if p[1].changed_files_count > p[0].changed_files_count {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    (best >= 3).then(|| Finding {
        cause: "ScopeGrowth",
        confidence: (best as f64 / 4.0).min(1.0),
        metrics: &["changed_files_count", "proof_score"],
        files: w
            .last()
            .map(|m| m.changed_files.clone())
            .unwrap_or_default(),
        evidence: format!("files touched grew {best} iterations in a row without proof progress"),
    })
}

/// Tokens spent across the window without any proof progress.
fn token_burn(w: &[IterationMetrics], limit: u64) -> Option<Finding> {
    if !flat_proof(w) || limit == 0 {
        return None;
    }
    let spent: u64 = w.iter().skip(1).map(|m| m.tokens).sum();
    (spent >= limit).then(|| Finding {
        cause: "TokenBurn",
        confidence: (0.5 + spent as f64 / (4.0 * limit as f64)).min(1.0),
        metrics: &["tokens", "proof_score"],
        files: Vec::new(),
        evidence: format!("{spent} tokens spent without proof progress"),
    })
}

/// Estimated cost of a recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatedCost {
    pub tokens: u64,
    pub usd: f64,
}

/// What `omk goal recover` proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    pub version: u32,
    pub goal_id: String,
    pub checkpoint_id: u32,
    pub created_at: DateTime<Utc>,
    pub diagnosis: Option<String>,
    pub strategy: String,
    pub risk_level: String,
    pub estimated_cost: EstimatedCost,
    pub rationale: String,
    pub steps: Vec<String>,
}

/// The plan for a diagnosis; cost = median tokens per iteration times the
/// iterations the strategy needs, priced with the configured table.
pub fn plan(
    report: &StagnationReport,
    history: &[IterationMetrics],
    checkpoint_id: u32,
    cfg: &GoalConfig,
) -> RecoveryPlan {
    let goal = &report.goal_id;
    let files = report.diagnosis.affected_files.join(", ");
    let (strategy, risk, iterations, rationale, steps): (&str, &str, u64, String, Vec<String>) =
        match report.diagnosis.primary.as_deref() {
            Some("CircularFix") => (
                "rollback_and_rethink",
                "medium",
                2,
                format!("agents keep undoing and redoing the same change ({files})"),
                vec![
                    format!("omk goal rollback {goal} --checkpoint {checkpoint_id} (or an earlier checkpoint)"),
                    format!("state the constraint on {files} in the goal or the failing gate"),
                    format!("omk goal resume {goal}"),
                ],
            ),
            Some("GateFlapping") => (
                "stabilise_gates",
                "low",
                1,
                "a gate passes and fails without a matching change: it is flaky".into(),
                vec![
                    "make the flapping gate deterministic, or mark it required = false in .omk/gates.toml".into(),
                    format!("omk goal verify {goal}"),
                ],
            ),
            Some("RepeatedFailure") => (
                "escalate_to_human",
                "high",
                0,
                "the same gate fails the same way whatever the agents do".into(),
                vec![
                    "read the failing gate's output (omk goal proof) and fix the cause or the gate".into(),
                    format!("omk goal resume {goal}"),
                ],
            ),
            Some("ScopeGrowth") | Some("TokenBurn") => (
                "reduce_scope",
                if report.diagnosis.primary.as_deref() == Some("TokenBurn") { "low" } else { "medium" },
                2,
                "work grows or tokens burn while the proof does not move".into(),
                vec![
                    format!("omk goal rollback {goal} --checkpoint {checkpoint_id}"),
                    "split the outcome into a smaller goal with one testable gate".into(),
                ],
            ),
            Some(_) => (
                "replan",
                "medium",
                3,
                "no measurable progress over the window".into(),
                vec![
                    "check that the gates test what the goal asks for".into(),
                    format!("omk goal resume {goal}"),
                ],
            ),
            None => (
                "continue",
                "low",
                1,
                "no stagnation detected".into(),
                vec![format!("omk goal resume {goal}")],
            ),
        };
    let mut per_iter: Vec<u64> = history.iter().map(|m| m.tokens).collect();
    per_iter.sort_unstable();
    let median = per_iter.get(per_iter.len() / 2).copied().unwrap_or(0);
    let tokens = median * iterations;
    // Split as the history did (output share), for the price table.
    let usd = super::budget::cost_usd(
        super::state::Usage {
            input_tokens: tokens * 3 / 4,
            output_tokens: tokens - tokens * 3 / 4,
        },
        cfg,
    );
    RecoveryPlan {
        version: 1,
        goal_id: goal.clone(),
        checkpoint_id,
        created_at: Utc::now(),
        diagnosis: report.diagnosis.primary.clone(),
        strategy: strategy.into(),
        risk_level: risk.into(),
        estimated_cost: EstimatedCost { tokens, usd },
        rationale,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(i: u32, fp: &str, files: &[&str], gate_ok: bool) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            recorded_at: Utc::now(),
            proof_score: if gate_ok { 1.0 } else { 0.5 },
            gate_pass_rate: if gate_ok { 1.0 } else { 0.0 },
            gates: [("test".to_string(), gate_ok)].into(),
            gate_failures: if gate_ok {
                BTreeMap::new()
            } else {
                [("test".to_string(), format!("x{i}"))].into()
            },
            changed_files: files.iter().map(|s| s.to_string()).collect(),
            changed_files_count: files.len(),
            diff_fingerprint: fp.into(),
            tokens: 100,
            total_tokens: 100 * u64::from(i),
            tasks_total: i as usize,
            tasks_done: i as usize,
            commits: 0,
        }
    }

    #[test]
    fn circular_fix_names_its_files() {
        let h = vec![
            it(1, "A", &["x.rs"], false),
            it(2, "clean", &[], false),
            it(3, "A", &["x.rs"], false),
        ];
        let r = diagnose("g", &h, &GoalConfig::default());
        assert!(r.stagnant, "{r:?}");
        assert_eq!(r.diagnosis.primary.as_deref(), Some("CircularFix"));
        assert_eq!(r.diagnosis.affected_files, vec!["x.rs"]);
        assert!(r.confidence >= 0.6);
        let p = plan(&r, &h, 2, &GoalConfig::default());
        assert_eq!(p.strategy, "rollback_and_rethink");
        assert_eq!(p.estimated_cost.tokens, 200);
    }

    #[test]
    fn warmup_and_progress_keep_it_quiet() {
        let cfg = GoalConfig::default();
        let h = vec![it(1, "A", &["x"], false), it(2, "B", &["x", "y"], false)];
        assert!(!diagnose("g", &h, &cfg).stagnant, "below warm-up");
        let h = vec![
            it(1, "A", &["x"], false),
            it(2, "B", &["x", "y"], false),
            it(3, "C", &["x", "y"], true),
        ];
        let r = diagnose("g", &h, &cfg);
        assert!(!r.stagnant, "{r:?}");
        assert_eq!(r.recommended_action, "continue");
    }

    #[test]
    fn flapping_and_repeated_failures() {
        let cfg = GoalConfig::default();
        let h = vec![
            it(1, "A", &["x"], true),
            it(2, "B", &["x"], false),
            it(3, "C", &["x"], true),
            it(4, "D", &["x"], false),
        ];
        let r = diagnose("g", &h, &cfg);
        assert_eq!(
            r.diagnosis.primary.as_deref(),
            Some("GateFlapping"),
            "{r:?}"
        );
        let mut h: Vec<_> = (1..=4)
            .map(|i| it(i, &format!("F{i}"), &["x"], false))
            .collect();
        for m in &mut h {
            m.gate_failures.insert("test".into(), "same".into());
        }
        let r = diagnose("g", &h, &cfg);
        assert_eq!(
            r.diagnosis.primary.as_deref(),
            Some("RepeatedFailure"),
            "{r:?}"
        );
    }
}
