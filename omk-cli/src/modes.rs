//! `omk autopilot TASK | list | status ID | stop ID` and
//! `omk ralph TASK --max-iterations N | list | status ID | stop ID`.

use clap::{Args, Subcommand};
use omk_core::modes::autopilot::{AutopilotRequest, AutopilotState};
use omk_core::modes::ralph::{RalphRequest, RalphState};
use omk_core::modes::RunStatus;
use omk_core::Omk;

use crate::output::print_doc;
use crate::Outcome;

/// `omk autopilot`: a run, or one of the subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AutopilotCommand {
    #[command(subcommand)]
    pub action: Option<ModeAction>,
    #[command(flatten)]
    pub run: AutopilotRunArgs,
}

#[derive(Debug, Args)]
pub struct AutopilotRunArgs {
    /// The task, taken through Expansion, Planning, Execution, QA and Validation.
    #[arg(required = true)]
    pub task: Option<String>,
    /// Run id (default ap-YYYYMMDD-HHMMSS-<hex>).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Workers of the execution team.
    #[arg(long, default_value_t = 2)]
    pub max_agents: u32,
    /// Approval policy of the agents (default from config).
    #[arg(long)]
    pub approval: Option<String>,
    /// Agent profile (`omk agents list`); default `[team] agent`.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// worktree: work in a git worktree of the run's own, the result left
    /// on branch omk/<id>; none (default): in the work dir.
    #[arg(long, value_name = "MODE", value_parser = ["worktree", "none"])]
    pub isolation: Option<String>,
    /// branch (default), or apply: also bring the result into an unchanged
    /// checkout once the run is complete (needs --isolation worktree).
    #[arg(long, value_name = "HOW", value_parser = ["branch", "apply"])]
    pub deliver: Option<String>,
    /// Print the final state as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `omk ralph`: a run, or one of the subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RalphCommand {
    #[command(subcommand)]
    pub action: Option<ModeAction>,
    #[command(flatten)]
    pub run: RalphRunArgs,
}

#[derive(Debug, Args)]
pub struct RalphRunArgs {
    /// The task: the agent works on it until the project's gates pass.
    #[arg(required = true)]
    pub task: Option<String>,
    /// Give up after this many agent turns.
    #[arg(long, short = 'm', default_value_t = omk_core::modes::ralph::DEFAULT_MAX_ITERATIONS)]
    pub max_iterations: u32,
    /// Run id (default ralph-YYYYMMDD-HHMMSS-<hex>).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Approval policy of the agent (default from config).
    #[arg(long)]
    pub approval: Option<String>,
    /// Agent profile (`omk agents list`); default `[team] agent`.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// worktree: work in a git worktree of the run's own, the result left
    /// on branch omk/<id>; none (default): in the work dir.
    #[arg(long, value_name = "MODE", value_parser = ["worktree", "none"])]
    pub isolation: Option<String>,
    /// branch (default), or apply: also bring the result into an unchanged
    /// checkout once the gates passed (needs --isolation worktree).
    #[arg(long, value_name = "HOW", value_parser = ["branch", "apply"])]
    pub deliver: Option<String>,
    /// Print the final state as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModeAction {
    /// Runs, newest first (`--json`: the API.md list document).
    List(JsonArg),
    /// One run's state.
    Status(IdArgs),
    /// Ask a running run (of any process) to stop.
    Stop(IdArgs),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

impl ModeAction {
    fn json(&self) -> bool {
        match self {
            ModeAction::List(a) => a.json,
            ModeAction::Status(a) | ModeAction::Stop(a) => a.json,
        }
    }
}

impl AutopilotCommand {
    pub fn wants_json(&self) -> bool {
        self.action.as_ref().map_or(self.run.json, ModeAction::json)
    }
}

impl RalphCommand {
    pub fn wants_json(&self) -> bool {
        self.action.as_ref().map_or(self.run.json, ModeAction::json)
    }
}

fn outcome(status: RunStatus) -> Outcome {
    if status == RunStatus::Complete {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

pub fn autopilot(omk: &Omk, cmd: AutopilotCommand) -> omk_core::Result<Outcome> {
    match cmd.action {
        None => {
            let a = cmd.run;
            // Name the run here so the user can stop it from another
            // terminal while this one blocks.
            let name = a.name.unwrap_or_else(omk_core::modes::autopilot::new_id);
            crate::errln!("autopilot {name} running; stop it with: omk autopilot stop {name}");
            crate::interrupt::on_ctrl_c(omk, name.clone(), "stopping", |omk, id| {
                omk.autopilot_stop(id).map(|_| ())
            })?;
            let s = omk.autopilot_run(&AutopilotRequest {
                task: a.task.unwrap_or_default(),
                name: Some(name),
                max_agents: Some(a.max_agents),
                approval: a.approval,
                agent: a.agent,
                isolation: a.isolation,
                deliver: a.deliver,
            })?;
            if a.json {
                print_doc(&s);
            } else {
                print_autopilot(&s);
            }
            Ok(outcome(s.status))
        }
        Some(ModeAction::List(a)) => {
            let list = omk.autopilot_list()?;
            if a.json {
                print_doc(&list);
            } else if list.autopilots.is_empty() {
                crate::outln!("no autopilot runs");
            } else {
                crate::outln!("{:<32} {:<12} {:<11} TASK", "ID", "STATUS", "PHASE");
                for s in &list.autopilots {
                    crate::outln!(
                        "{:<32} {:<12} {:<11} {}",
                        s.id,
                        s.status.as_str(),
                        phase_name(s),
                        one_line(&s.task)
                    );
                }
            }
            for u in &list.unreadable {
                crate::errln!("omk: unreadable autopilot run: {u}");
            }
            Ok(Outcome::Success)
        }
        Some(ModeAction::Status(a)) => {
            let s = omk.autopilot_status(&a.id)?;
            if a.json {
                print_doc(&s);
            } else {
                print_autopilot(&s);
            }
            Ok(Outcome::Success)
        }
        Some(ModeAction::Stop(a)) => {
            let s = omk.autopilot_stop(&a.id)?;
            if a.json {
                print_doc(&s);
            } else {
                crate::outln!("asked autopilot {} to stop", s.id);
            }
            Ok(Outcome::Success)
        }
    }
}

pub fn ralph(omk: &Omk, cmd: RalphCommand) -> omk_core::Result<Outcome> {
    match cmd.action {
        None => {
            let a = cmd.run;
            let name = a.name.unwrap_or_else(omk_core::modes::ralph::new_id);
            crate::errln!("ralph {name} running; stop it with: omk ralph stop {name}");
            crate::interrupt::on_ctrl_c(omk, name.clone(), "stopping", |omk, id| {
                omk.ralph_stop(id).map(|_| ())
            })?;
            let s = omk.ralph_run(&RalphRequest {
                task: a.task.unwrap_or_default(),
                max_iterations: Some(a.max_iterations),
                name: Some(name),
                approval: a.approval,
                agent: a.agent,
                isolation: a.isolation,
                deliver: a.deliver,
            })?;
            if a.json {
                print_doc(&s);
            } else {
                print_ralph(&s);
            }
            Ok(outcome(s.status))
        }
        Some(ModeAction::List(a)) => {
            let list = omk.ralph_list()?;
            if a.json {
                print_doc(&list);
            } else if list.ralphs.is_empty() {
                crate::outln!("no ralph runs");
            } else {
                crate::outln!("{:<32} {:<12} {:>9} TASK", "ID", "STATUS", "ITERATION");
                for s in &list.ralphs {
                    crate::outln!(
                        "{:<32} {:<12} {:>9} {}",
                        s.id,
                        s.status.as_str(),
                        format!("{}/{}", s.iteration, s.max_iterations),
                        one_line(&s.task)
                    );
                }
            }
            for u in &list.unreadable {
                crate::errln!("omk: unreadable ralph run: {u}");
            }
            Ok(Outcome::Success)
        }
        Some(ModeAction::Status(a)) => {
            let s = omk.ralph_status(&a.id)?;
            if a.json {
                print_doc(&s);
            } else {
                print_ralph(&s);
            }
            Ok(Outcome::Success)
        }
        Some(ModeAction::Stop(a)) => {
            let s = omk.ralph_stop(&a.id)?;
            if a.json {
                print_doc(&s);
            } else {
                crate::outln!("asked ralph {} to stop", s.id);
            }
            Ok(Outcome::Success)
        }
    }
}

fn phase_name(s: &AutopilotState) -> String {
    serde_json::to_value(s.phase)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The first line of a task, cut for a table.
fn one_line(task: &str) -> String {
    let first = task.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(60).collect();
    if out.len() < task.len() {
        out.push('…');
    }
    out
}

fn print_autopilot(s: &AutopilotState) {
    crate::outln!(
        "autopilot {}: {} (phase {})",
        s.id,
        s.status.as_str(),
        phase_name(s)
    );
    crate::outln!("  task:  {}", one_line(&s.task));
    for p in &s.phases {
        let mark = match p.ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "running",
        };
        let phase = serde_json::to_value(p.phase)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        match &p.note {
            Some(n) => crate::outln!("  {phase:<11} {mark:<8} {n}"),
            None => crate::outln!("  {phase:<11} {mark}"),
        }
    }
    if let Some(r) = &s.reason {
        crate::outln!("  reason: {r}");
    }
    crate::outln!("  plans: {}", s.plans_dir.display());
    crate::outln!("  tokens: {}", s.tokens);
}

fn print_ralph(s: &RalphState) {
    crate::outln!(
        "ralph {}: {} at iteration {} of {}",
        s.id,
        s.status.as_str(),
        s.iteration,
        s.max_iterations
    );
    crate::outln!("  task:  {}", one_line(&s.task));
    for it in &s.iterations {
        let gates = match it.gates_passed {
            Some(true) => "gates passed".to_string(),
            Some(false) => {
                let names: Vec<&str> = it.failures.iter().map(|f| f.name.as_str()).collect();
                format!("gates failed: {}", names.join(", "))
            }
            None => "gates not run".to_string(),
        };
        crate::outln!(
            "  {:>3}. team {} {}, {gates}",
            it.iteration,
            it.team,
            it.team_phase.as_deref().unwrap_or("running")
        );
    }
    if let Some(r) = &s.reason {
        crate::outln!("  reason: {r}");
    }
    crate::outln!("  state: {}", s.state_dir.join("state.json").display());
    crate::outln!("  tokens: {}", s.tokens);
}
