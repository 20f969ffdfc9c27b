//! The goal controller: one durable step at a time, intake -> planning ->
//! decomposition -> execution (waves of ready tasks run as teams) ->
//! verification design -> proof, looping back to execution with fix tasks
//! while `until_ready`. Every step starts from the files on disk, so a
//! controller killed at any point resumes where it was; tasks completed by
//! an interrupted wave are recovered from its team document, not redone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use super::budget::{self, Standing};
use super::graph::{GoalTask, TaskGraph, TaskStatus};
use super::planner::{self, Plan};
use super::proof::{self, GoalProof, Verification};
use super::snapshot;
use super::stagnation::{self, IterationMetrics};
use super::state::{self, ControllerState, Failure, GoalState, Phase, Status, Usage};
use super::{checkpoint, emit, MergePolicy};
use crate::admission::{self, Waited};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::store;
use crate::team::{self, TeamRunRequest};
use crate::workspace;
use crate::Omk;

/// Whether the loop should go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Stop,
}

pub struct Controller<'a> {
    pub omk: &'a Omk,
    pub dir: PathBuf,
    pub id: String,
}

impl Controller<'_> {
    fn config(&self) -> Result<&crate::config::Config> {
        self.omk.config()
    }

    /// The tree the goal works on: its workspace (`slice_execution`), or
    /// the project.
    fn project(&self) -> Result<PathBuf> {
        Ok(state::load_controller(&self.dir)?.work_tree().to_path_buf())
    }

    /// Tokens used so far: planner turns plus every team the goal ran.
    pub fn usage(&self) -> Result<Usage> {
        let c = state::load_controller(&self.dir)?;
        let mut u = c.planner_usage;
        for name in &c.teams {
            if let Ok(Some(doc)) = team::doc::TeamDoc::load(self.omk.paths(), name) {
                u.output_tokens += doc.output_tokens;
                u.input_tokens += doc.tokens.saturating_sub(doc.output_tokens);
            }
        }
        Ok(u)
    }

    fn set_phase(&self, phase: Phase) -> Result<()> {
        let from = state::update_state(&self.dir, |s| {
            let from = s.phase;
            s.phase = phase;
            Ok(from)
        })?;
        emit(
            &self.dir,
            &self.id,
            EventKind::PhaseChanged,
            json!({ "from": from.as_str(), "phase": phase.as_str() }),
        )
    }

    /// End the run with `status` (and a reason unless ready), writing the
    /// proof and a budget checkpoint.
    pub fn finish(
        &self,
        status: Status,
        reason: Option<String>,
        extra_gaps: Vec<String>,
        human: Vec<String>,
    ) -> Result<GoalProof> {
        state::update_state(&self.dir, |s| {
            // A pause or cancel from another process outranks what the
            // controller was about to conclude.
            if matches!(s.status, Status::Paused | Status::Cancelled) && s.status != status {
                return Ok(());
            }
            s.status = status;
            s.failure = reason.clone().map(|reason| Failure {
                reason,
                recorded_at: Utc::now(),
            });
            s.completed_at = (status != Status::Paused).then(Utc::now);
            Ok(())
        })?;
        let mut human = human;
        let sliced = state::load_controller(&self.dir)?.workspace.is_some();
        let policy = MergePolicy::parse(&state::load_state(&self.dir, &self.id)?.merge_policy)?;
        if sliced && policy == MergePolicy::Manual && status == Status::Ready {
            let branch = format!("omk/{}", self.id);
            human.push(format!("merge {branch} (git merge {branch})"));
        }
        let proof = self.write_proof(extra_gaps, human)?;
        // The proof is the judge: a goal claims `ready` only with its evidence.
        if status == Status::Ready && proof.status != Status::Ready {
            state::update_state(&self.dir, |s| {
                s.status = Status::NotReady;
                Ok(())
            })?;
        }
        self.deliver(proof.status, policy)?;
        emit(
            &self.dir,
            &self.id,
            EventKind::GoalStatusChanged,
            json!({ "status": proof.status.as_str(), "reason": reason }),
        )?;
        self.budget_checkpoint("run_ended")?;
        Ok(proof)
    }

    /// `slice_execution`: leave the result on branch `omk/<goal>` and do
    /// what the merge policy says (`delivery.json`, event
    /// `goal_delivered`). The workspace stays: the goal's proof is
    /// computed on it, and `goal resume` goes on there.
    fn deliver(&self, status: Status, policy: MergePolicy) -> Result<Option<workspace::Delivery>> {
        let c = state::load_controller(&self.dir)?;
        let Some(ws) = &c.workspace else {
            return Ok(None);
        };
        if status == Status::Paused || !ws.dir.exists() {
            return Ok(None);
        }
        let ready = status == Status::Ready;
        let mut d = workspace::deliver(ws, &self.id, ready && policy == MergePolicy::Gated)?;
        let branch = d.branch.clone();
        match policy {
            MergePolicy::Disabled => {}
            MergePolicy::Manual => {
                d.reason = Some(format!(
                "merge branch {branch} into your checkout when you accept it (git merge {branch})"
            ))
            }
            MergePolicy::Gated if !ready => {
                d.reason = Some(format!(
                    "not applied: the goal is not ready; the work so far is on branch {branch}"
                ))
            }
            MergePolicy::Gated => {}
        }
        let file = self.dir.join("delivery.json");
        store::write_doc(&file, &d)?;
        state::update_state(&self.dir, |s| {
            s.record_artifact("delivery", file.clone());
            Ok(())
        })?;
        emit(
            &self.dir,
            &self.id,
            EventKind::Other("goal_delivered".into()),
            json!({ "branch": d.branch, "commit": d.commit, "merge_policy": policy,
                    "applied": d.applied, "reason": d.reason }),
        )?;
        Ok(Some(d))
    }

    pub fn budget_checkpoint(&self, label: &str) -> Result<()> {
        let s = state::load_state(&self.dir, &self.id)?;
        let standing = Standing::new(&s, self.usage()?, &self.config()?.goal)?;
        let cp = standing.checkpoint(&s, label);
        budget::append_checkpoint(&self.dir, &cp)?;
        emit(
            &self.dir,
            &self.id,
            EventKind::BudgetCheckpoint,
            json!({ "label": label, "used_tokens": cp.used_tokens }),
        )
    }

    /// Recompute `proof.json` from the files.
    pub fn write_proof(&self, extra_gaps: Vec<String>, human: Vec<String>) -> Result<GoalProof> {
        let s = state::load_state(&self.dir, &self.id)?;
        let graph = TaskGraph::load(&self.dir)?;
        let verification: Option<Verification> = store::read_doc(&Verification::file(&self.dir))?;
        let project = self.project()?;
        let c = state::load_controller(&self.dir)?;
        let now = snapshot::take(&project);
        let base = snapshot::load_baseline(&self.dir)?.unwrap_or_else(|| now.clone());
        let fingerprint = snapshot::diff_fingerprint(&base, &now);
        let p = proof::build(&proof::Inputs {
            state: &s,
            graph: graph.as_ref(),
            verification: verification.as_ref(),
            changed_files: snapshot::changed_files(&base, &now),
            commits: snapshot::commits_since(&project, c.base_commit.as_deref()),
            diff_fingerprint: &fingerprint,
            extra_gaps,
            human_decisions: human,
        });
        store::write_doc(&GoalProof::file(&self.dir), &p)?;
        emit(
            &self.dir,
            &self.id,
            EventKind::ProofWritten,
            json!({ "status": p.status.as_str(), "known_gaps": p.known_gaps.len() }),
        )?;
        Ok(p)
    }

    /// One controller step. Checks the status (another process may have
    /// paused or cancelled the goal) and the budgets first.
    pub fn step(&self) -> Result<Step> {
        let started = Instant::now();
        let out = self.step_inner();
        let ms = started.elapsed().as_millis() as u64;
        let _ = state::update_controller(&self.dir, |c| {
            c.active_ms += ms;
            Ok(())
        });
        out
    }

    fn step_inner(&self) -> Result<Step> {
        let s = state::load_state(&self.dir, &self.id)?;
        if s.status != Status::Running {
            return Ok(Step::Stop);
        }
        let cfg = self.config()?.goal.clone();
        let standing = Standing::new(&s, self.usage()?, &cfg)?;
        if let Some(why) = standing.exhausted(&s) {
            emit(
                &self.dir,
                &self.id,
                EventKind::Other("budget_exhausted".into()),
                json!({ "reason": why }),
            )?;
            self.finish(
                Status::NeedsMoreBudget,
                Some(why.clone()),
                vec![format!(
                    "{why}: raise it with `omk goal budget-add` and `omk goal resume`"
                )],
                Vec::new(),
            )?;
            return Ok(Step::Stop);
        }
        match s.phase {
            Phase::Intake => self.intake(&s),
            Phase::Planning => self.planning(&s),
            Phase::Decomposition => {
                let graph = TaskGraph::load(&self.dir)?.ok_or_else(|| {
                    Error::corrupt(&TaskGraph::file(&self.dir), "missing after planning")
                })?;
                for t in &graph.tasks {
                    emit(
                        &self.dir,
                        &self.id,
                        EventKind::TaskCreated,
                        json!({ "task_id": t.id, "title": t.title, "dependencies": t.dependencies }),
                    )?;
                }
                self.set_phase(Phase::Execution)?;
                Ok(Step::Continue)
            }
            Phase::Execution => self.execution(&s),
            Phase::VerificationDesign => self.verification_design(),
            Phase::Proof => self.proof_phase(&s),
        }
    }

    fn intake(&self, _s: &GoalState) -> Result<Step> {
        let project = self.project()?;
        let gates = crate::gate::config::load(&project)?;
        if gates.gates.is_empty() {
            let why = "the outcome has no testable acceptance: no verification gates are configured (.omk/gates.toml) or detected in the project".to_string();
            self.finish(
                Status::BlockedOnHuman,
                Some(why.clone()),
                Vec::new(),
                vec!["configure verification gates that decide when the outcome is reached (.omk/gates.toml), then `omk goal resume`".into()],
            )?;
            return Ok(Step::Stop);
        }
        self.set_phase(Phase::Planning)?;
        Ok(Step::Continue)
    }

    fn planning(&self, s: &GoalState) -> Result<Step> {
        let cfg = self.config()?.clone();
        let project = self.project()?;
        let mut prompt = planner::prompt(&s.normalized_goal, cfg.goal.max_tasks);
        let mut last_error = String::new();
        let mut plan = None;
        for attempt in 1..=2 {
            emit(
                &self.dir,
                &self.id,
                EventKind::TaskStarted,
                json!({ "task_id": "planning", "attempt": attempt }),
            )?;
            // A pause or cancel from another process ends the turn within a
            // second; planning starts over on resume.
            let interrupted = || {
                state::load_state(&self.dir, &self.id)
                    .is_ok_and(|s| matches!(s.status, Status::Paused | Status::Cancelled))
            };
            let agent = state::load_controller(&self.dir)?.agent;
            let turn = planner::turn_until(
                self.omk.runtime()?,
                &cfg,
                &project,
                &prompt,
                agent.as_deref(),
                &interrupted,
            );
            let turn = match turn {
                Ok(t) => t,
                Err(Error::Cancelled(_)) => return Ok(Step::Stop),
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            state::update_controller(&self.dir, |c| {
                c.planner_usage.input_tokens += turn.usage.input_tokens;
                c.planner_usage.output_tokens += turn.usage.output_tokens;
                Ok(())
            })?;
            store::write_atomic(
                &self.dir.join("planner-answer.md"),
                crate::redact::redact_str(&turn.text).as_bytes(),
            )?;
            match planner::parse(&turn.text, cfg.goal.max_tasks) {
                Ok(p) => {
                    plan = Some(p);
                    break;
                }
                Err(why) => {
                    last_error = why.clone();
                    prompt = format!("{prompt}\n\nYour previous answer was rejected: {why}. Answer again with only the JSON object.");
                }
            }
        }
        let (markdown, graph) = match plan {
            Some(Plan::Questions(q)) => {
                self.finish(
                    Status::BlockedOnHuman,
                    Some(format!(
                        "the planner needs decisions before work can start: {}",
                        q.join(" / ")
                    )),
                    Vec::new(),
                    q,
                )?;
                return Ok(Step::Stop);
            }
            Some(Plan::Tasks { markdown, graph }) => (markdown, graph),
            None => {
                emit(
                    &self.dir,
                    &self.id,
                    EventKind::PlanFallback,
                    json!({ "reason": last_error }),
                )?;
                let graph = TaskGraph::new(vec![GoalTask {
                    id: "t1".into(),
                    title: s.normalized_goal.clone(),
                    description: String::new(),
                    dependencies: Vec::new(),
                    status: TaskStatus::Pending,
                    attempts: 0,
                    team: None,
                    summary: None,
                    completed_at: None,
                    origin: Some(format!("plan fallback: {last_error}")),
                }]);
                (format!("# Plan\n\nThe planner's answer could not be used ({last_error}); the outcome is one task.\n"), graph)
            }
        };
        let plan_file = self.dir.join("plan.md");
        store::write_atomic(
            &plan_file,
            crate::redact::redact_str(&format!(
                "# Goal {}\n\n{}\n\n{markdown}\n",
                self.id, s.normalized_goal
            ))
            .as_bytes(),
        )?;
        graph.save(&self.dir)?;
        state::update_state(&self.dir, |st| {
            st.record_artifact("plan", plan_file.clone());
            st.record_artifact("task_graph", TaskGraph::file(&self.dir));
            Ok(())
        })?;
        emit(
            &self.dir,
            &self.id,
            EventKind::TaskCompleted,
            json!({ "task_id": "planning", "tasks": graph.tasks.len() }),
        )?;
        let iteration = state::load_controller(&self.dir)?.iteration;
        let cp = checkpoint::take(
            &self.dir,
            "planned",
            iteration,
            snapshot::git_head(&project),
        )?;
        emit(
            &self.dir,
            &self.id,
            EventKind::CheckpointWritten,
            json!({ "checkpoint_id": cp.checkpoint_id, "label": "planned" }),
        )?;
        self.set_phase(Phase::Decomposition)?;
        Ok(Step::Continue)
    }

    /// Settle tasks left `running` by an interrupted wave from its team's
    /// document (completed there = done here).
    fn settle_interrupted(&self, graph: &mut TaskGraph) -> Result<bool> {
        let mut changed = false;
        let max = self.config()?.goal.max_task_attempts;
        let teams: Vec<String> = graph
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Running)
            .filter_map(|t| t.team.clone())
            .collect();
        for name in teams {
            // `team_status` records a dead supervisor as Interrupted.
            let doc = match self.omk.team_status(&name) {
                Ok(d) => Some(d),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if doc.as_ref().is_some_and(|d| !d.phase.is_terminal()) {
                return Err(Error::Conflict(format!(
                    "team {name} of this goal is still running; wait for it or `omk team shutdown {name}`"
                )));
            }
            apply_team_results(graph, &name, doc.as_ref(), max);
            changed = true;
        }
        // A task marked running without a team never started.
        for t in graph
            .tasks
            .iter_mut()
            .filter(|t| t.status == TaskStatus::Running && t.team.is_none())
        {
            t.status = TaskStatus::Pending;
            changed = true;
        }
        Ok(changed)
    }

    fn execution(&self, s: &GoalState) -> Result<Step> {
        let mut graph = TaskGraph::load(&self.dir)?
            .ok_or_else(|| Error::corrupt(&TaskGraph::file(&self.dir), "missing in execution"))?;
        if self.settle_interrupted(&mut graph)? {
            graph.save(&self.dir)?;
            self.emit_task_results(&graph, None)?;
        }
        let ready = graph.ready();
        if ready.is_empty() {
            self.set_phase(Phase::VerificationDesign)?;
            return Ok(Step::Continue);
        }
        if let Some(step) = self.wait_for_pool()? {
            return Ok(step);
        }
        let max_agents = s.max_agents.unwrap_or(1).max(1) as usize;
        let workers = ready.len().min(max_agents);
        let c = state::load_controller(&self.dir)?;
        let name = format!("{}-w{}", self.id, c.teams.len() + 1);
        for &i in &ready {
            let t = &mut graph.tasks[i];
            t.status = TaskStatus::Running;
            t.team = Some(name.clone());
        }
        graph.save(&self.dir)?;
        state::update_controller(&self.dir, |c| {
            c.teams.push(name.clone());
            c.active_team = Some(name.clone());
            Ok(())
        })?;
        for &i in &ready {
            emit(
                &self.dir,
                &self.id,
                EventKind::TaskStarted,
                json!({ "task_id": graph.tasks[i].id, "team": name }),
            )?;
        }
        let request = TeamRunRequest {
            spec: format!("{workers}:executor"),
            task: s.normalized_goal.clone(),
            name: Some(name.clone()),
            subtasks: ready
                .iter()
                .map(|&i| task_prompt(&graph.tasks[i]))
                .collect(),
            workdir: Some(c.work_tree().to_path_buf()),
            approval: c.approval.clone(),
            pool: None,
            detach: false,
            no_gates: true,
            agent: c.agent.clone(),
            // slice_execution: workers in worktrees of their own, the
            // result landed in the goal's workspace below; else the
            // goal's gates and checkpoints work on the project dir.
            isolation: Some(
                if c.workspace.is_some() {
                    "worktree"
                } else {
                    "none"
                }
                .into(),
            ),
            deliver: None,
        };
        let result = self.omk.team_run(&request);
        if let (Ok(doc), Some(ws)) = (&result, &c.workspace) {
            if let Some(w) = &doc.worktree {
                let moved = workspace::land_wave(ws, &name, &w.integrated_commit)?;
                emit(
                    &self.dir,
                    &self.id,
                    EventKind::Other("wave_landed".into()),
                    json!({ "team": name, "commit": w.integrated_commit, "moved": moved }),
                )?;
            }
        }
        state::update_controller(&self.dir, |c| {
            c.active_team = None;
            Ok(())
        })?;
        let max = self.config()?.goal.max_task_attempts;
        match result {
            Ok(doc) if admission::never_ran(&doc) => {
                // Refused by the pool (another process took the room first):
                // not an attempt. The next step waits for room again.
                for &i in &ready {
                    graph.tasks[i].status = TaskStatus::Pending;
                    graph.tasks[i].team = None;
                }
                graph.save(&self.dir)?;
                emit(
                    &self.dir,
                    &self.id,
                    EventKind::Other("wave_refused".into()),
                    json!({ "team": name, "reason": doc.reason }),
                )?;
                return Ok(Step::Continue);
            }
            Ok(doc) => apply_team_results(&mut graph, &name, Some(&doc), max),
            Err(e) => {
                // The wave never ran: its tasks go back to pending, and the
                // goal stops on an infrastructure failure.
                for &i in &ready {
                    graph.tasks[i].status = TaskStatus::Pending;
                }
                graph.save(&self.dir)?;
                self.finish(
                    Status::FailedInfra,
                    Some(format!("team {name} could not run: {e}")),
                    Vec::new(),
                    Vec::new(),
                )?;
                return Ok(Step::Stop);
            }
        }
        graph.save(&self.dir)?;
        self.emit_task_results(&graph, Some(&name))?;
        let questions = self.questions_asked(&name)?;
        if !questions.is_empty() {
            self.finish(
                Status::BlockedOnHuman,
                Some(format!(
                    "an agent of team {name} asked a question no policy can answer: {}",
                    questions.join(" / ")
                )),
                Vec::new(),
                questions,
            )?;
            return Ok(Step::Stop);
        }
        Ok(Step::Continue)
    }

    /// Wait until the pool has room for the next wave. `Some(step)`: stop
    /// waiting and return that step (the goal is blocked by a pool that can
    /// never admit; or it was paused, cancelled or ran out of budget while
    /// waiting, which the next step's checks record).
    fn wait_for_pool(&self) -> Result<Option<Step>> {
        let cfg = self.config()?.goal.clone();
        let waited = admission::wait_for_room(self.omk, None, &self.dir, || {
            let s = state::load_state(&self.dir, &self.id).ok()?;
            if s.status != Status::Running {
                return Some(());
            }
            let standing = Standing::new(&s, self.usage().ok()?, &cfg).ok()?;
            standing.exhausted(&s).map(|_| ())
        })?;
        match waited {
            Waited::Room { busy: None, .. } => Ok(None),
            Waited::Room {
                busy: Some(why),
                waited,
            } => {
                emit(
                    &self.dir,
                    &self.id,
                    EventKind::Other("pool_waited".into()),
                    json!({ "reason": why, "waited_ms": waited.as_millis() as u64 }),
                )?;
                Ok(None)
            }
            Waited::Never(why) => {
                self.finish(
                    Status::BlockedOnExternal,
                    Some(why.clone()),
                    vec![format!(
                        "{why}: fix the pool, then `omk goal resume {}`",
                        self.id
                    )],
                    Vec::new(),
                )?;
                Ok(Some(Step::Stop))
            }
            Waited::Stopped(()) => Ok(Some(Step::Continue)),
        }
    }

    /// The questions the workers of team `name` asked (dismissed at the
    /// time, so the wave could end; the goal then waits for a human).
    fn questions_asked(&self, name: &str) -> Result<Vec<String>> {
        let file = self.omk.paths().team_dir(name)?.join("events.jsonl");
        let mut out: Vec<String> = Vec::new();
        for e in crate::events::read_events(&file)?.records {
            if e.kind != EventKind::AgentQuestion {
                continue;
            }
            let texts = e.payload.get("questions").and_then(|q| q.as_array());
            for q in texts.into_iter().flatten().filter_map(|q| q.as_str()) {
                if !out.iter().any(|o| o == q) {
                    out.push(q.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Events for the tasks of one wave (`None`: of interrupted waves).
    fn emit_task_results(&self, graph: &TaskGraph, wave: Option<&str>) -> Result<()> {
        for t in &graph.tasks {
            let kind = match t.status {
                TaskStatus::Done => EventKind::TaskCompleted,
                TaskStatus::Failed => EventKind::TaskFailed,
                _ => continue,
            };
            if t.team.is_none() || wave.is_some_and(|w| t.team.as_deref() != Some(w)) {
                continue;
            }
            emit(
                &self.dir,
                &self.id,
                kind,
                json!({ "task_id": t.id, "team": t.team, "status": t.status, "attempts": t.attempts }),
            )?;
        }
        Ok(())
    }

    fn verification_design(&self) -> Result<Step> {
        let project = self.project()?;
        let set = crate::gate::config::load(&project)?;
        let mut text = format!(
            "# Verification for goal {}\n\nThe goal is ready only when every task is done and every required gate passes on the final tree.\nGates ({}):\n\n",
            self.id, set.source
        );
        for g in &set.gates {
            text.push_str(&format!(
                "- `{}`: `{}`{}\n",
                g.name,
                g.command.command_line(),
                if g.required { "" } else { " (optional)" }
            ));
        }
        let file = self.dir.join("verification.md");
        store::write_atomic(&file, crate::redact::redact_str(&text).as_bytes())?;
        state::update_state(&self.dir, |s| {
            s.record_artifact("verification_plan", file.clone());
            Ok(())
        })?;
        self.set_phase(Phase::Proof)?;
        Ok(Step::Continue)
    }

    /// Run the gates on the tree as it is; record `verification.json`.
    pub fn verify(&self) -> Result<Verification> {
        let project = self.project()?;
        let set = crate::gate::config::load(&project)?;
        let artifacts = self
            .dir
            .join("gates")
            .join(format!("run-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
        let results = if set.gates.is_empty() {
            Vec::new()
        } else {
            crate::gate::run(self.omk.paths(), &set, &[], &artifacts)?.results
        };
        for r in &results {
            emit(
                &self.dir,
                &self.id,
                if r.passed {
                    EventKind::GatePassed
                } else if r.skipped {
                    EventKind::GateSkipped
                } else {
                    EventKind::GateFailed
                },
                json!({ "gate": r.name, "passed": r.passed, "exit_code": r.exit_code }),
            )?;
        }
        let base = snapshot::load_baseline(&self.dir)?;
        let now = snapshot::take(&project);
        let v = Verification {
            version: 1,
            ran_at: Utc::now(),
            gate_count: set.gates.len(),
            results,
            diff_fingerprint: base
                .map_or_else(|| "clean".into(), |b| snapshot::diff_fingerprint(&b, &now)),
        };
        store::write_doc(&Verification::file(&self.dir), &v)?;
        Ok(v)
    }

    fn proof_phase(&self, s: &GoalState) -> Result<Step> {
        let cfg = self.config()?.goal.clone();
        let v = self.verify()?;
        let metrics = self.record_iteration(&v)?;
        let proof = self.write_proof(Vec::new(), Vec::new())?;
        if proof.status == Status::Ready {
            self.finish(Status::Ready, None, Vec::new(), Vec::new())?;
            return Ok(Step::Stop);
        }
        let history = stagnation::load(&self.dir)?;
        let report = stagnation::diagnose(&self.id, &history, &cfg);
        if report.stagnant {
            let cause = report.diagnosis.primary.clone().unwrap_or_default();
            let why = format!(
                "stagnation detected ({cause}, confidence {:.2}): see `omk goal diagnose {}` and `omk goal recover {}`",
                report.confidence, self.id, self.id
            );
            self.finish(Status::NotReady, Some(why.clone()), vec![why], Vec::new())?;
            return Ok(Step::Stop);
        }
        if !s.until_ready || metrics.iteration >= cfg.max_iterations {
            let reason = if s.until_ready {
                format!(
                    "not ready after {} iteration(s) (the limit, [goal] max_iterations)",
                    metrics.iteration
                )
            } else {
                proof.readiness.clone()
            };
            self.finish(Status::NotReady, Some(reason), Vec::new(), Vec::new())?;
            return Ok(Step::Stop);
        }
        // Until ready: failed tasks get another round, failing gates a fix task.
        let mut graph = TaskGraph::load(&self.dir)?.unwrap_or_else(|| TaskGraph::new(Vec::new()));
        for t in graph
            .tasks
            .iter_mut()
            .filter(|t| t.status == TaskStatus::Failed)
        {
            t.status = TaskStatus::Pending;
        }
        let failing: Vec<String> = v
            .results
            .iter()
            .filter(|r| r.required && !r.passed)
            .map(|r| {
                let tail = |t: &str| {
                    let t = t.trim();
                    let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
                    t[start..].to_string()
                };
                format!(
                    "- gate `{}` (`{}`) exit {}{}:\n{}\n{}",
                    r.name,
                    r.command_line,
                    r.exit_code.map_or("none".to_string(), |c| c.to_string()),
                    if r.timed_out { ", timed out" } else { "" },
                    tail(&r.stdout),
                    tail(&r.stderr)
                )
            })
            .collect();
        if !failing.is_empty() {
            let id = graph.next_id("fix");
            graph.tasks.push(GoalTask {
                id: id.clone(),
                title: "Make the failing verification gates pass".into(),
                description: format!(
                    "These required gates fail on the current tree:\n{}",
                    failing.join("\n")
                ),
                dependencies: Vec::new(),
                status: TaskStatus::Pending,
                attempts: 0,
                team: None,
                summary: None,
                completed_at: None,
                origin: Some(format!("iteration {}: failing gates", metrics.iteration)),
            });
            emit(
                &self.dir,
                &self.id,
                EventKind::TaskCreated,
                json!({ "task_id": id, "reason": "failing gates" }),
            )?;
        }
        graph.save(&self.dir)?;
        self.set_phase(Phase::Execution)?;
        Ok(Step::Continue)
    }

    fn record_iteration(&self, v: &Verification) -> Result<IterationMetrics> {
        let project = self.project()?;
        let graph = TaskGraph::load(&self.dir)?.unwrap_or_else(|| TaskGraph::new(Vec::new()));
        let base = snapshot::load_baseline(&self.dir)?.unwrap_or_else(|| snapshot::take(&project));
        let now = snapshot::take(&project);
        let changed = snapshot::changed_files(&base, &now);
        let history = stagnation::load(&self.dir)?;
        let used = self.usage()?.total();
        let prev_total = history.last().map_or(0, |m| m.total_tokens);
        let required: Vec<_> = v.results.iter().filter(|r| r.required).collect();
        let gates_part = if required.is_empty() {
            0.0
        } else {
            required.iter().filter(|r| r.passed).count() as f64 / required.len() as f64
        };
        let sum = graph.summary();
        let tasks_part = if sum.total_tasks == 0 {
            0.0
        } else {
            sum.done_tasks as f64 / sum.total_tasks as f64
        };
        let ran: Vec<_> = v.results.iter().filter(|r| !r.skipped).collect();
        let c = state::load_controller(&self.dir)?;
        let m = IterationMetrics {
            iteration: c.iteration + 1,
            recorded_at: Utc::now(),
            proof_score: ((tasks_part + gates_part) / 2.0 * 1000.0).round() / 1000.0,
            gate_pass_rate: if ran.is_empty() {
                0.0
            } else {
                ran.iter().filter(|r| r.passed).count() as f64 / ran.len() as f64
            },
            gates: v
                .results
                .iter()
                .map(|r| (r.name.clone(), r.passed))
                .collect(),
            gate_failures: v
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| (r.name.clone(), failure_print(r)))
                .collect(),
            changed_files_count: changed.len(),
            diff_fingerprint: snapshot::diff_fingerprint(&base, &now),
            changed_files: changed,
            tokens: used.saturating_sub(prev_total),
            total_tokens: used,
            tasks_total: sum.total_tasks,
            tasks_done: sum.done_tasks,
            commits: snapshot::commits_since(&project, c.base_commit.as_deref()).len(),
        };
        stagnation::append(&self.dir, &m)?;
        state::update_controller(&self.dir, |c| {
            c.iteration = m.iteration;
            Ok(())
        })?;
        emit(
            &self.dir,
            &self.id,
            EventKind::Other("iteration_recorded".into()),
            json!({ "iteration": m.iteration, "proof_score": m.proof_score, "gate_pass_rate": m.gate_pass_rate, "changed_files": m.changed_files_count }),
        )?;
        self.budget_checkpoint("iteration_completed")?;
        Ok(m)
    }
}

/// A failing gate's exit code and output, fingerprinted (identical
/// failures compare equal).
fn failure_print(r: &crate::gate::GateResult) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!(
        "{:?}|{}|{}|{}",
        r.exit_code, r.timed_out, r.stdout, r.stderr
    )
    .bytes()
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The subtask text a worker receives for a goal task.
fn task_prompt(t: &GoalTask) -> String {
    if t.description.is_empty() {
        format!("[{}] {}", t.id, t.title)
    } else {
        format!("[{}] {}\n\n{}", t.id, t.title, t.description)
    }
}

/// Map a finished (or interrupted) team's task results onto the goal's
/// tasks of that wave, in order.
fn apply_team_results(
    graph: &mut TaskGraph,
    team_name: &str,
    doc: Option<&team::doc::TeamDoc>,
    max_attempts: u32,
) {
    let wave: Vec<usize> = graph
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.status == TaskStatus::Running && t.team.as_deref() == Some(team_name))
        .map(|(i, _)| i)
        .collect();
    for (k, &i) in wave.iter().enumerate() {
        let entry = doc.and_then(|d| d.tasks.get(k));
        let t = &mut graph.tasks[i];
        match entry.map(|e| e.status) {
            Some(team::doc::TaskStatus::Completed) => {
                t.status = TaskStatus::Done;
                t.attempts += 1;
                t.summary = entry.and_then(|e| e.summary.clone());
                t.completed_at = Some(Utc::now());
            }
            Some(team::doc::TaskStatus::Failed) => {
                t.attempts += 1;
                t.summary = entry.and_then(|e| e.summary.clone());
                t.status = if t.attempts >= max_attempts {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Pending
                };
            }
            // Never finished (shutdown, interruption): try again, no attempt spent.
            _ => t.status = TaskStatus::Pending,
        }
    }
}

/// Take the controller lock of a goal, or say who holds it.
pub fn lock(dir: &Path, id: &str) -> Result<store::FileLock> {
    store::FileLock::try_exclusive(&dir.join("controller.lock"))?.ok_or_else(|| {
        let pid = state::load_controller(dir)
            .ok()
            .and_then(|c| c.pid)
            .map_or_else(
                || "another process".to_string(),
                |p| format!("process {}", p.pid),
            );
        Error::Conflict(format!("goal {id} is already being run by {pid}"))
    })
}

pub(super) fn new_controller(
    project: &Path,
    approval: Option<String>,
    agent: Option<String>,
) -> ControllerState {
    ControllerState {
        version: 1,
        project_dir: project.to_path_buf(),
        approval,
        agent,
        iteration: 0,
        teams: Vec::new(),
        active_team: None,
        pid: None,
        planner_usage: Usage::default(),
        active_ms: 0,
        base_commit: snapshot::git_head(project),
        workspace: None,
    }
}
