//! `omk goal ...`: durable goals. Output formats follow API.md "Goal CLI":
//! `show`, `proof`, `replay`, `budget` and `diagnose` take `--json` or
//! `--format text|json|md`; `status` and `list` print text.

use std::process::{Command, Stdio};

use clap::{Args, Subcommand, ValueEnum};
use omk_core::goal::{GoalProof, GoalRunRequest, GoalState, Status};
use omk_core::Omk;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::output::print_doc;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct GoalArgs {
    /// `latest` names the newest goal of any project, not only of this one.
    #[arg(long, global = true)]
    pub all_projects: bool,
    #[command(subcommand)]
    pub command: GoalCommand,
}

#[derive(Debug, Subcommand)]
pub enum GoalCommand {
    /// Create a goal and run its controller (planning, execution, gates, proof).
    Run(RunArgs),
    /// Goals, newest first (text).
    List,
    /// A goal's status in a few lines (text).
    Status(IdArg),
    /// The full goal state (API.md GoalState).
    Show(FormatArgs),
    /// The goal's proof (API.md GoalProof).
    Proof(FormatArgs),
    /// The deduplicated event timeline (API.md GoalReplay).
    Replay(FormatArgs),
    /// Budgets, use and checkpoints (API.md GoalBudgetReport).
    Budget(FormatArgs),
    /// Raise a goal's budgets.
    #[command(name = "budget-add")]
    BudgetAdd(BudgetAddArgs),
    /// Detect stagnation from the iteration metrics (API.md StagnationReport).
    Diagnose(FormatArgs),
    /// Write a recovery checkpoint and print a recovery plan.
    Recover(JsonIdArgs),
    /// Restore the latest (or a named) recovery checkpoint.
    Rollback(RollbackArgs),
    /// Pause a goal (its running wave is stopped).
    Pause(JsonIdArgs),
    /// Continue a paused, interrupted, out-of-budget or not-ready goal.
    Resume(JsonIdArgs),
    /// Cancel a goal for good.
    Cancel(JsonIdArgs),
    /// Run the gates now and refresh the proof.
    Verify(FormatArgs),
    /// Run one controller step.
    Execute(JsonIdArgs),
    /// Internal: drive a goal's controller (used by `run --detach`).
    #[command(name = "_control", hide = true)]
    Control(IdArg),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The outcome to reach, in words.
    pub outcome: String,
    /// Loop (execution, gates, fix tasks) until ready, blocked, out of budget or cancelled.
    #[arg(long)]
    pub until_ready: bool,
    /// Wall-clock budget since creation, e.g. 90m, 8h, 2d.
    #[arg(long, value_name = "DURATION")]
    pub budget_time: Option<String>,
    /// Token budget (input + output, from the agents' StatusUpdate events).
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
    /// USD budget, estimated with the [goal] price table.
    #[arg(long, value_name = "X")]
    pub budget_usd: Option<f64>,
    /// Most agents at once (default 1).
    #[arg(long, value_name = "N")]
    pub max_agents: Option<u32>,
    /// Approval policy of the goal's agents (reject-all, workdir-edits, approve-all).
    #[arg(long)]
    pub approval: Option<String>,
    /// Agent profile (`omk agents list`); default `[team] agent`.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Return once the goal is created; the controller runs in the background.
    #[arg(long)]
    pub detach: bool,
    /// Work in a git worktree of the goal's own, each wave's workers in
    /// worktrees of theirs; the result ends on branch omk/<goal id>.
    #[arg(long)]
    pub slice_execution: bool,
    /// With --slice-execution: disabled (the branch, default), manual
    /// (ready, with a human decision to merge the branch) or gated
    /// (applied to your checkout once ready, if it is unchanged).
    #[arg(long, value_name = "POLICY", value_parser = ["disabled", "manual", "gated"])]
    pub merge_policy: Option<String>,
    /// local (the only policy until omk has a forge client).
    #[arg(long, value_name = "POLICY")]
    pub delivery_policy: Option<String>,
    /// Print the final goal state as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// Goal id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct JsonIdArgs {
    /// Goal id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Md,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Goal id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<Format>,
}

impl FormatArgs {
    fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format.unwrap_or(Format::Text)
        }
    }
}

#[derive(Debug, Args)]
pub struct BudgetAddArgs {
    /// Goal id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    /// More time, e.g. 2h.
    #[arg(long, value_name = "DURATION")]
    pub time: Option<String>,
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
    #[arg(long, value_name = "X")]
    pub usd: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Goal id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    /// Checkpoint number (default: the latest).
    #[arg(long, value_name = "N")]
    pub checkpoint: Option<u32>,
    /// Also `git reset --hard` the project to the checkpoint's commit
    /// (refused when the work tree has uncommitted changes).
    #[arg(long)]
    pub git: bool,
    #[arg(long)]
    pub json: bool,
}

impl GoalCommand {
    /// The goal id the command names, if it names one.
    fn id_mut(&mut self) -> Option<&mut String> {
        match self {
            GoalCommand::Run(_) | GoalCommand::List => None,
            GoalCommand::Status(a) | GoalCommand::Control(a) => Some(&mut a.id),
            GoalCommand::Show(a)
            | GoalCommand::Proof(a)
            | GoalCommand::Replay(a)
            | GoalCommand::Budget(a)
            | GoalCommand::Diagnose(a)
            | GoalCommand::Verify(a) => Some(&mut a.id),
            GoalCommand::BudgetAdd(a) => Some(&mut a.id),
            GoalCommand::Rollback(a) => Some(&mut a.id),
            GoalCommand::Recover(a)
            | GoalCommand::Pause(a)
            | GoalCommand::Resume(a)
            | GoalCommand::Cancel(a)
            | GoalCommand::Execute(a) => Some(&mut a.id),
        }
    }

    pub fn wants_json(&self) -> bool {
        match self {
            GoalCommand::Run(a) => a.json,
            GoalCommand::List | GoalCommand::Status(_) | GoalCommand::Control(_) => false,
            GoalCommand::Show(a)
            | GoalCommand::Proof(a)
            | GoalCommand::Replay(a)
            | GoalCommand::Budget(a)
            | GoalCommand::Diagnose(a)
            | GoalCommand::Verify(a) => a.format() == Format::Json,
            GoalCommand::BudgetAdd(a) => a.json,
            GoalCommand::Rollback(a) => a.json,
            GoalCommand::Recover(a)
            | GoalCommand::Pause(a)
            | GoalCommand::Resume(a)
            | GoalCommand::Cancel(a)
            | GoalCommand::Execute(a) => a.json,
        }
    }
}

/// Exit 1 unless the goal ended ready (a run that finished but failed).
fn outcome_of(state: &GoalState) -> Outcome {
    if state.status == Status::Ready {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

pub fn run(omk: &Omk, global: &GlobalArgs, args: GoalArgs) -> omk_core::Result<Outcome> {
    let mut cmd = args.command;
    if let Some(id) = cmd.id_mut() {
        // `latest` is this project's newest goal unless --all-projects.
        if id == "latest" && args.all_projects {
            *id = omk.goal_latest(true)?;
        }
    }
    match cmd {
        GoalCommand::Run(a) => {
            let req = GoalRunRequest {
                outcome: a.outcome.clone(),
                until_ready: a.until_ready,
                budget_time: a.budget_time.clone(),
                budget_tokens: a.budget_tokens,
                budget_usd: a.budget_usd,
                max_agents: a.max_agents,
                approval: a.approval.clone(),
                agent: a.agent.clone(),
                detach: false,
                slice_execution: a.slice_execution,
                merge_policy: a.merge_policy.clone(),
                delivery_policy: a.delivery_policy.clone(),
            };
            let created = omk.goal_create(&req)?;
            if a.detach {
                spawn_controller(omk, global, &created)?;
                if a.json {
                    print_doc(&created);
                } else {
                    crate::outln!(
                        "Goal {} created; its controller runs in the background.",
                        created.goal_id
                    );
                    crate::outln!("  State: {}", created.state_dir.display());
                    crate::outln!("  Follow it: omk goal status {}", created.goal_id);
                }
                return Ok(Outcome::Success);
            }
            if !a.json {
                crate::errln!(
                    "goal {}: running (state in {})",
                    created.goal_id,
                    created.state_dir.display()
                );
            }
            // Ctrl-C pauses the goal (its wave or planner turn stopped);
            // `omk goal resume` continues it.
            crate::interrupt::on_ctrl_c(
                omk,
                created.goal_id.clone(),
                "pausing goal",
                |omk, id| omk.goal_pause(id).map(|_| ()),
            )?;
            let progress = Progress::start(&created, a.json);
            let state = omk.goal_drive(&created.goal_id, false);
            progress.stop();
            finished(omk, &state?, a.json)
        }
        GoalCommand::Control(a) => {
            let state = omk.goal_drive(&a.id, false)?;
            Ok(outcome_of(&state))
        }
        GoalCommand::Execute(a) => {
            let state = omk.goal_drive(&a.id, true)?;
            print_state_brief(&state, a.json);
            Ok(match state.status {
                Status::Running | Status::Ready => Outcome::Success,
                _ => Outcome::Failed,
            })
        }
        GoalCommand::Resume(a) => {
            crate::interrupt::on_ctrl_c(omk, a.id.clone(), "pausing goal", |omk, id| {
                omk.goal_pause(id).map(|_| ())
            })?;
            let state = omk.goal_resume(&a.id)?;
            finished(omk, &state, a.json)
        }
        GoalCommand::List => {
            let list = omk.goal_list()?;
            if list.goals.is_empty() {
                crate::outln!("No goals found. Start one: omk goal run \"OUTCOME\"");
            } else {
                crate::outln!("Goals ({}):", list.goals.len());
                for g in &list.goals {
                    crate::outln!(
                        "  [{}] {}  {}  {}",
                        g.status,
                        g.goal_id,
                        g.phase,
                        one_line(&g.original_goal, 70)
                    );
                }
            }
            for u in &list.unreadable {
                crate::errln!(
                    "omk: goal {}: {}",
                    u["goal_id"].as_str().unwrap_or("?"),
                    u["error"].as_str().unwrap_or("?")
                );
            }
            Ok(Outcome::Success)
        }
        GoalCommand::Status(a) => {
            let s = omk.goal_show(&a.id)?;
            crate::outln!("Goal status -- {}", s.goal_id);
            crate::outln!("  Status:  {}", s.status);
            crate::outln!("  Phase:   {}", s.phase);
            crate::outln!("  Goal:    {}", one_line(&s.original_goal, 100));
            if let Ok(p) = omk.goal_proof(&s.goal_id) {
                let t = p.task_graph_summary;
                crate::outln!(
                    "  Tasks:   {}/{} done, {} blocked",
                    t.done_tasks,
                    t.total_tasks,
                    t.blocked_tasks
                );
                crate::outln!("  Proof:   {}", p.readiness);
            }
            if let Some(f) = &s.failure {
                crate::outln!("  Reason:  {}", f.reason);
            }
            crate::outln!(
                "  Updated: {}",
                s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
            Ok(Outcome::Success)
        }
        GoalCommand::Show(a) => {
            let s = omk.goal_show(&a.id)?;
            render(a.format(), &s, show_text(&s, false), show_text(&s, true));
            Ok(Outcome::Success)
        }
        GoalCommand::Proof(a) => {
            let p = omk.goal_proof(&a.id)?;
            render(a.format(), &p, proof_text(&p, false), proof_text(&p, true));
            Ok(Outcome::Success)
        }
        GoalCommand::Verify(a) => {
            let p = omk.goal_verify(&a.id)?;
            render(a.format(), &p, proof_text(&p, false), proof_text(&p, true));
            Ok(if p.status == Status::Ready {
                Outcome::Success
            } else {
                Outcome::Failed
            })
        }
        GoalCommand::Replay(a) => {
            let r = omk.goal_replay(&a.id)?;
            let mut text = format!(
                "Goal replay {}\n  Status: {}  Phase: {}\n  Events: {} (duplicates collapsed: {}, unparsable lines: {})\n",
                r.goal_id, r.status, r.phase, r.event_count, r.duplicate_events, r.parse_failures
            );
            for e in &r.timeline {
                text.push_str(&format!(
                    "  #{:<5} {}  {:<22} {:<12} {}\n",
                    e.index,
                    e.ts,
                    e.kind,
                    e.actor.as_deref().unwrap_or("-"),
                    e.summary.as_deref().unwrap_or("")
                ));
            }
            for g in &r.known_gaps {
                text.push_str(&format!("  gap: {g}\n"));
            }
            let md = format!(
                "# Replay of goal {}\n\n- status: {}\n- events: {}\n- duplicates: {}\n- parse failures: {}\n\n| # | ts | kind | actor | summary |\n|---|---|---|---|---|\n{}",
                r.goal_id,
                r.status,
                r.event_count,
                r.duplicate_events,
                r.parse_failures,
                r.timeline
                    .iter()
                    .map(|e| format!(
                        "| {} | {} | {} | {} | {} |\n",
                        e.index,
                        e.ts,
                        e.kind,
                        e.actor.as_deref().unwrap_or(""),
                        md_cell(e.summary.as_deref().unwrap_or(""))
                    ))
                    .collect::<String>()
            );
            render(a.format(), &r, text, md);
            Ok(Outcome::Success)
        }
        GoalCommand::Budget(a) => {
            let b = omk.goal_budget(&a.id)?;
            render(
                a.format(),
                &b,
                budget_text(&b, false),
                budget_text(&b, true),
            );
            Ok(Outcome::Success)
        }
        GoalCommand::BudgetAdd(a) => {
            let b = omk.goal_budget_add(&a.id, a.time.as_deref(), a.tokens, a.usd)?;
            if a.json {
                print_doc(&b);
            } else {
                crate::outln!("Budget added.");
                crate::out!("{}", budget_text(&b, false));
            }
            Ok(Outcome::Success)
        }
        GoalCommand::Diagnose(a) => {
            let d = omk.goal_diagnose(&a.id)?;
            let head = if d.stagnant {
                format!(
                    "[STAGNATION DETECTED] {} (confidence {:.2})",
                    d.diagnosis.primary.as_deref().unwrap_or("?"),
                    d.confidence
                )
            } else {
                format!("No stagnation detected (confidence {:.2})", d.confidence)
            };
            let mut text = format!(
                "Stagnation analysis for goal {}\n  {head}\n  Window: {} of {} iteration(s), warm-up {}\n",
                d.goal_id,
                d.metrics_window.iterations_evaluated,
                d.metrics_window.window_size,
                d.metrics_window.warmup_iterations
            );
            if let Some(s) = &d.diagnosis.secondary {
                text.push_str(&format!("  Secondary: {s}\n"));
            }
            if !d.diagnosis.affected_metrics.is_empty() {
                text.push_str(&format!(
                    "  Affected metrics: {}\n",
                    d.diagnosis.affected_metrics.join(", ")
                ));
            }
            if !d.diagnosis.affected_files.is_empty() {
                text.push_str(&format!(
                    "  Files: {}\n",
                    d.diagnosis.affected_files.join(", ")
                ));
            }
            for e in &d.diagnosis.evidence {
                text.push_str(&format!("  - {e}\n"));
            }
            text.push_str(&format!("  Recommended action: {}\n", d.recommended_action));
            let md = format!(
                "# Stagnation: goal {}\n\n{}",
                d.goal_id,
                text.lines()
                    .skip(1)
                    .map(|l| format!("- {}\n", l.trim()))
                    .collect::<String>()
            );
            render(a.format(), &d, text, md);
            Ok(Outcome::Success)
        }
        GoalCommand::Recover(a) => {
            let r = omk.goal_recover(&a.id)?;
            if a.json {
                print_doc(&r);
            } else {
                let p = &r.plan;
                crate::outln!(
                    "Recovery checkpoint {} written: {}",
                    r.checkpoint_id,
                    r.checkpoint_path.display()
                );
                crate::outln!("[RECOVERY PLAN] {}", p.strategy);
                crate::outln!(
                    "  Diagnosis: {}",
                    p.diagnosis.as_deref().unwrap_or("none (not stagnant)")
                );
                crate::outln!("  Why: {}", p.rationale);
                crate::outln!("  Risk: {}", p.risk_level);
                crate::outln!(
                    "  Estimated cost: {} tokens, ${:.4}",
                    p.estimated_cost.tokens,
                    p.estimated_cost.usd
                );
                for (i, s) in p.steps.iter().enumerate() {
                    crate::outln!("  {}. {s}", i + 1);
                }
            }
            Ok(Outcome::Success)
        }
        GoalCommand::Rollback(a) => {
            let r = omk.goal_rollback(&a.id, a.checkpoint, a.git)?;
            if a.json {
                print_doc(&r);
            } else {
                crate::outln!(
                    "Goal {} rolled back to checkpoint {} ({})",
                    r.goal_id,
                    r.checkpoint_id,
                    r.label
                );
                crate::outln!("  Restored: {}", r.restored.join(", "));
                if let (Some(c), Some(tree)) = (&r.git_reset_to, &r.git_work_tree) {
                    crate::outln!("  Work tree {} reset to {c}", tree.display());
                }
                crate::outln!("  Status: {}  Phase: {}", r.state.status, r.state.phase);
                crate::outln!("  Continue with: omk goal resume {}", r.goal_id);
            }
            Ok(Outcome::Success)
        }
        GoalCommand::Pause(a) => {
            let s = omk.goal_pause(&a.id)?;
            print_state_brief(&s, a.json);
            Ok(Outcome::Success)
        }
        GoalCommand::Cancel(a) => {
            let s = omk.goal_cancel(&a.id)?;
            print_state_brief(&s, a.json);
            Ok(Outcome::Success)
        }
    }
}

/// After a controller run: the proof in brief (or the state as JSON).
fn finished(omk: &Omk, state: &GoalState, json: bool) -> omk_core::Result<Outcome> {
    if json {
        print_doc(state);
    } else {
        crate::outln!("Goal {}: {}", state.goal_id, state.status);
        crate::outln!("  Phase: {}", state.phase);
        if let Ok(p) = omk.goal_proof(&state.goal_id) {
            crate::outln!("  Readiness: {}", p.readiness);
            let t = p.task_graph_summary;
            crate::outln!("  Tasks: {}/{} done", t.done_tasks, t.total_tasks);
            for g in &p.gates {
                crate::outln!(
                    "  Gate {}: {}",
                    g.name,
                    if g.passed { "passed" } else { "failed" }
                );
            }
            for gap in &p.known_gaps {
                crate::outln!("  Gap: {gap}");
            }
            for h in &p.human_decisions_required {
                crate::outln!("  Decision needed: {h}");
            }
        }
        crate::outln!("  Proof: {}", state.state_dir.join("proof.json").display());
    }
    Ok(outcome_of(state))
}

fn print_state_brief(s: &GoalState, json: bool) {
    if json {
        print_doc(s);
    } else {
        crate::outln!("Goal {}: {}", s.goal_id, s.status);
        crate::outln!("  Phase: {}", s.phase);
        crate::outln!(
            "  Updated: {}",
            s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}

fn render<T: Serialize>(format: Format, value: &T, text: String, md: String) {
    match format {
        Format::Json => print_doc(value),
        Format::Text => crate::out!("{text}"),
        Format::Md => crate::out!("{md}"),
    }
}

fn show_text(s: &GoalState, md: bool) -> String {
    let mut rows = vec![
        ("Status", s.status.to_string()),
        ("Phase", s.phase.to_string()),
        ("Goal", s.original_goal.clone()),
        ("Until ready", s.until_ready.to_string()),
        ("Created", s.created_at.to_rfc3339()),
        ("Updated", s.updated_at.to_rfc3339()),
    ];
    if let Some(t) = &s.budget_time {
        rows.push(("Budget time", t.clone()));
    }
    if let Some(t) = s.budget_tokens {
        rows.push(("Budget tokens", t.to_string()));
    }
    if let Some(u) = s.budget_usd {
        rows.push(("Budget USD", format!("{u:.2}")));
    }
    if let Some(n) = s.max_agents {
        rows.push(("Max agents", n.to_string()));
    }
    if let Some(f) = &s.failure {
        rows.push(("Reason", f.reason.clone()));
    }
    rows.push(("State", s.state_dir.display().to_string()));
    let mut out = if md {
        format!("# Goal {}\n\n", s.goal_id)
    } else {
        format!("Goal {}\n", s.goal_id)
    };
    for (k, v) in rows {
        out.push_str(&if md {
            format!("- **{k}:** {}\n", md_cell(&v))
        } else {
            format!("  {k:<13} {v}\n")
        });
    }
    out.push_str(if md {
        "\n## Artifacts\n\n"
    } else {
        "  Artifacts:\n"
    });
    for a in &s.artifacts {
        out.push_str(&if md {
            format!("- {}: `{}`\n", a.kind, a.path.display())
        } else {
            format!("    {:<18} {}\n", a.kind, a.path.display())
        });
    }
    out
}

fn proof_text(p: &GoalProof, md: bool) -> String {
    let t = p.task_graph_summary;
    let mut out = if md {
        format!(
            "# Proof of goal {}\n\n- **Status:** {}\n- **Readiness:** {}\n- **Tasks:** {}/{} done, {} pending, {} blocked\n- **Post-mutation gates ran:** {}\n\n{}\n\n## Gates\n\n| gate | result | exit | required |\n|---|---|---|---|\n",
            p.goal_id, p.status, md_cell(&p.readiness), t.done_tasks, t.total_tasks, t.pending_tasks, t.blocked_tasks, p.post_mutation_gates_ran, p.summary
        )
    } else {
        format!(
            "Goal proof {}\n  Status: {}\n  Readiness: {}\n  Tasks: {}/{} done, {} pending, {} blocked\n  Changed files: {}\n  Gates:\n",
            p.goal_id, p.status, p.readiness, t.done_tasks, t.total_tasks, t.pending_tasks, t.blocked_tasks, p.changed_files.len()
        )
    };
    for g in &p.gates {
        let result = if g.passed {
            "passed"
        } else if g.skipped {
            "skipped"
        } else {
            "failed"
        };
        let exit = g.exit_code.map_or("-".to_string(), |c| c.to_string());
        out.push_str(&if md {
            format!(
                "| {} | {result} | {exit} | {} |\n",
                md_cell(&g.name),
                g.required
            )
        } else {
            format!(
                "    {}: {result} (exit {exit}{})\n",
                g.name,
                if g.required { "" } else { ", optional" }
            )
        });
    }
    out.push_str(if md {
        "\n## Known gaps\n\n"
    } else {
        "  Known gaps:\n"
    });
    if p.known_gaps.is_empty() {
        out.push_str(if md { "None.\n" } else { "    none\n" });
    }
    for g in &p.known_gaps {
        out.push_str(&if md {
            format!("- {}\n", md_cell(g))
        } else {
            format!("    - {g}\n")
        });
    }
    for h in &p.human_decisions_required {
        out.push_str(&if md {
            format!("- decision needed: {}\n", md_cell(h))
        } else {
            format!("  Decision needed: {h}\n")
        });
    }
    out
}

fn budget_text(b: &omk_core::goal::budget::BudgetReport, md: bool) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let lines = [
        format!("Budget time: {}", opt(b.budget_time.clone())),
        format!(
            "Total: {}",
            opt(b.total_budget_secs.map(|s| format!("{s}s")))
        ),
        format!(
            "Tokens: used={} budget={} remaining={}",
            b.used_tokens,
            opt(b.budget_tokens.map(|t| t.to_string())),
            opt(b.remaining_budget_tokens.map(|t| t.to_string()))
        ),
        format!(
            "Cost: estimated=${:.6} budget={} remaining={}",
            b.estimated_cost_usd,
            opt(b.budget_usd.map(|u| format!("${u:.6}"))),
            opt(b.remaining_budget_usd.map(|u| format!("${u:.6}")))
        ),
        format!("Active: {}s", b.spent_seconds),
        format!("Checkpoints: {}", b.checkpoints.len()),
    ];
    let mut out = if md {
        format!("# Budget of goal {}\n\n", b.goal_id)
    } else {
        format!("Goal budget {}\n", b.goal_id)
    };
    for l in lines {
        out.push_str(&if md {
            format!("- {l}\n")
        } else {
            format!("  {l}\n")
        });
    }
    for c in &b.checkpoints {
        let l = format!(
            "{} {} [{}] tokens={} cost=${:.6}",
            c.recorded_at.format("%Y-%m-%d %H:%M:%S"),
            c.label,
            c.status,
            c.used_tokens,
            c.estimated_cost_usd
        );
        out.push_str(&if md {
            format!("  - {l}\n")
        } else {
            format!("    {l}\n")
        });
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `run --detach`: the controller in its own process group, logging to the
/// goal's `controller.log`.
fn spawn_controller(omk: &Omk, global: &GlobalArgs, state: &GoalState) -> omk_core::Result<()> {
    use std::os::unix::process::CommandExt;
    let io = |context: &str, e| omk_core::Error::Io {
        context: context.into(),
        source: e,
    };
    let exe = std::env::current_exe().map_err(|e| io("find the omk executable", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.state_dir.join("controller.log"))
        .map_err(|e| io("open controller.log", e))?;
    let log2 = log.try_clone().map_err(|e| io("open controller.log", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir")
        .arg(omk.state_dir())
        .arg("-C")
        .arg(omk.project_dir());
    if let Some(c) = &global.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["goal", "_control", &state.goal_id])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    cmd.spawn()
        .map_err(|e| io("start the goal controller", e))?;
    Ok(())
}

/// A spinner on stderr (terminals only) showing the goal's phase and tasks
/// while the controller runs in this process; it reads the goal's files,
/// like any other observer.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(state: &GoalState, json: bool) -> Progress {
        use std::io::IsTerminal;
        if json || !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let dir = state.state_dir.clone();
        let id = state.goal_id.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            loop {
                let s = omk_core::store::read_doc::<GoalState>(&GoalState::file(&dir));
                let g = omk_core::goal::TaskGraph::load(&dir);
                if let (Ok(Some(s)), Ok(g)) = (s, g) {
                    let tasks = g.map(|g| g.summary()).unwrap_or_default();
                    bar.set_message(format!(
                        "{id}  {}  {}  tasks {}/{} done",
                        s.status, s.phase, tasks.done_tasks, tasks.total_tasks
                    ));
                }
                if rx
                    .recv_timeout(std::time::Duration::from_millis(250))
                    .is_ok()
                {
                    break;
                }
            }
            bar.finish_and_clear();
        });
        Progress {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
