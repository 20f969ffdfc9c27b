//! Budgets: durations, the USD price table, `budget-checkpoints.jsonl` and
//! the API.md GoalBudgetReport. Tokens come from the agents' StatusUpdate
//! events, as counted by the goal's teams and planner turns.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::{GoalState, Usage};
use crate::config::GoalConfig;
use crate::error::{Error, Result};
use crate::store::{self, FsyncPolicy, JsonlWriter};

/// Parse `8h`, `90m`, `45s`, `2d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| {
        Error::InvalidInput(format!("bad duration {text:?} (use e.g. 90m, 8h, 2d)"))
    })?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(Error::InvalidInput(format!(
                "bad duration {text:?} (units: s, m, h, d)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| Error::InvalidInput(format!("duration {text:?} is too long")))
}

/// The largest exact unit: 28800 -> `8h`, 5400 -> `90m`.
pub fn format_duration(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Estimated USD for `usage` at the configured prices.
pub fn cost_usd(usage: Usage, prices: &GoalConfig) -> f64 {
    let usd = usage.input_tokens as f64 * prices.input_usd_per_mtok / 1e6
        + usage.output_tokens as f64 * prices.output_usd_per_mtok / 1e6;
    (usd * 1e6).round() / 1e6
}

/// One line of `budget-checkpoints.jsonl` (API.md `checkpoints[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheckpoint {
    pub version: u32,
    pub goal_id: String,
    pub label: String,
    pub status: String,
    pub phase: String,
    pub recorded_at: DateTime<Utc>,
    pub budget_time: Option<String>,
    pub total_budget_secs: Option<u64>,
    pub elapsed_since_created_secs: u64,
    pub remaining_budget_secs: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub used_tokens: u64,
    pub remaining_budget_tokens: Option<u64>,
    pub budget_usd: Option<f64>,
    pub estimated_cost_usd: f64,
    pub remaining_budget_usd: Option<f64>,
}

/// API.md GoalBudgetReport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    pub version: u32,
    pub goal_id: String,
    pub generated_at: DateTime<Utc>,
    pub budget_time: Option<String>,
    pub total_budget_secs: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub used_tokens: u64,
    pub remaining_budget_tokens: Option<u64>,
    pub budget_usd: Option<f64>,
    pub estimated_cost_usd: f64,
    pub remaining_budget_usd: Option<f64>,
    pub latest: Option<BudgetCheckpoint>,
    pub checkpoints: Vec<BudgetCheckpoint>,
    pub spent_usd: f64,
    pub spent_tokens: u64,
    pub spent_seconds: u64,
}

/// Where a goal stands against its budgets right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub total_secs: Option<u64>,
    pub elapsed_secs: u64,
    pub used: Usage,
    pub cost_usd: f64,
}

impl Standing {
    pub fn new(state: &GoalState, used: Usage, prices: &GoalConfig) -> Result<Standing> {
        let total_secs = state
            .budget_time
            .as_deref()
            .map(parse_duration)
            .transpose()?;
        let elapsed_secs = (Utc::now() - state.created_at).num_seconds().max(0) as u64;
        Ok(Standing {
            total_secs,
            elapsed_secs,
            used,
            cost_usd: cost_usd(used, prices),
        })
    }

    /// The first budget that has run out (time, tokens, USD), said plainly.
    pub fn exhausted(&self, state: &GoalState) -> Option<String> {
        if let Some(total) = self.total_secs {
            if self.elapsed_secs >= total {
                return Some(format!(
                    "time budget exhausted: budget_time={}, elapsed={}s",
                    state.budget_time.as_deref().unwrap_or("?"),
                    self.elapsed_secs
                ));
            }
        }
        if let Some(budget) = state.budget_tokens {
            if self.used.total() >= budget {
                return Some(format!(
                    "token budget exhausted: used {} of {budget} tokens",
                    self.used.total()
                ));
            }
        }
        if let Some(budget) = state.budget_usd {
            if self.cost_usd >= budget {
                return Some(format!(
                    "USD budget exhausted: estimated ${:.4} of ${budget:.2}",
                    self.cost_usd
                ));
            }
        }
        None
    }

    pub fn checkpoint(&self, state: &GoalState, label: &str) -> BudgetCheckpoint {
        BudgetCheckpoint {
            version: 1,
            goal_id: state.goal_id.clone(),
            label: label.into(),
            status: state.status.as_str().into(),
            phase: state.phase.as_str().into(),
            recorded_at: Utc::now(),
            budget_time: state.budget_time.clone(),
            total_budget_secs: self.total_secs,
            elapsed_since_created_secs: self.elapsed_secs,
            remaining_budget_secs: self.total_secs.map(|t| t.saturating_sub(self.elapsed_secs)),
            budget_tokens: state.budget_tokens,
            used_tokens: self.used.total(),
            remaining_budget_tokens: state
                .budget_tokens
                .map(|b| b.saturating_sub(self.used.total())),
            budget_usd: state.budget_usd,
            estimated_cost_usd: self.cost_usd,
            remaining_budget_usd: state
                .budget_usd
                .map(|b| round6((b - self.cost_usd).max(0.0))),
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub fn checkpoints_file(dir: &Path) -> PathBuf {
    dir.join("budget-checkpoints.jsonl")
}

/// Append a checkpoint durably.
pub fn append_checkpoint(dir: &Path, cp: &BudgetCheckpoint) -> Result<()> {
    let mut w = JsonlWriter::open(&checkpoints_file(dir), FsyncPolicy::EveryAppend)?;
    w.append(cp)
}

/// Build the report from the state, the usage and the checkpoint log.
pub fn report(
    dir: &Path,
    state: &GoalState,
    standing: &Standing,
    active_secs: u64,
) -> Result<BudgetReport> {
    let checkpoints = store::read_jsonl::<BudgetCheckpoint>(&checkpoints_file(dir))?.records;
    let now = standing.checkpoint(state, "report");
    Ok(BudgetReport {
        version: 1,
        goal_id: state.goal_id.clone(),
        generated_at: Utc::now(),
        budget_time: state.budget_time.clone(),
        total_budget_secs: now.total_budget_secs,
        budget_tokens: state.budget_tokens,
        used_tokens: now.used_tokens,
        remaining_budget_tokens: now.remaining_budget_tokens,
        budget_usd: state.budget_usd,
        estimated_cost_usd: now.estimated_cost_usd,
        remaining_budget_usd: now.remaining_budget_usd,
        latest: checkpoints.last().cloned(),
        checkpoints,
        spent_usd: now.estimated_cost_usd,
        spent_tokens: now.used_tokens,
        spent_seconds: active_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("8h").unwrap(), 28_800);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration(" 45 ").unwrap(), 45);
        assert_eq!(parse_duration("2D").unwrap(), 172_800);
        assert!(parse_duration("8x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(28_800), "8h");
        assert_eq!(format_duration(5400), "90m");
        assert_eq!(format_duration(61), "61s");
    }

    #[test]
    fn prices_split_input_and_output() {
        let cfg = GoalConfig::default();
        let usd = cost_usd(
            Usage {
                input_tokens: 1_000_000,
                output_tokens: 1_000_000,
            },
            &cfg,
        );
        assert!((usd - 3.10).abs() < 1e-9, "{usd}");
    }
}
