//! `omk.Omk`: the Python handle on `omk_core::Omk`.
//!
//! Every call that touches the disk, a child process or a lock runs with
//! the GIL released (`py.detach`) and inside [`guard`], so other Python
//! threads keep running and no panic reaches Python. `team_run` runs the
//! team on a background thread and waits in 50 ms slices, looking at
//! Python's signals in between, so Ctrl-C shuts the team down cleanly and
//! raises `omk.CancelledError`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omk_core::goal::GoalRunRequest;
use omk_core::team::{TeamDoc, TeamRunRequest};
use omk_core::OpenOptions;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use serde_json::Value;

use crate::convert::{doc_to_py, from_py, to_py};
use crate::errors::{guard, CancelledError, Failure, OmkError};
use crate::slot::{self, Slot};

/// How long the waiting thread keeps the GIL released between two looks at
/// Python's signals.
pub(crate) const SLICE: Duration = Duration::from_millis(50);
/// After Ctrl-C, how long a graceful shutdown may take before omk forces it.
const FORCE_AFTER: Duration = Duration::from_secs(5);
/// After forcing, how long to wait for the team's thread before giving up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// A handle on one omk state directory and project.
///
/// ``Omk(state_dir=None, project_dir=None, config=None)``: ``state_dir``
/// defaults to ``$OMK_STATE_DIR``, then ``$XDG_STATE_HOME/omk``, then
/// ``~/.local/state/omk``; ``project_dir`` (where agents and gates work) to
/// the current directory; ``config`` is an extra config file read last
/// (default ``$OMK_CONFIG``).
///
/// Methods are named after omk's operations and return the same JSON
/// documents as ``omk ... --json``, as dicts and lists. Errors raise
/// ``omk.OmkError`` subclasses. Every blocking call releases the GIL; the
/// handle may be shared by several threads.
#[pyclass(frozen, module = "omk._omk", name = "Omk")]
pub struct PyOmk {
    inner: omk_core::Omk,
}

/// A call into omk-core with the GIL released and panics caught.
fn blocking<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> omk_core::Result<T> + Send,
) -> Result<T, Failure> {
    py.detach(|| guard(what, f))
}

#[pymethods]
impl PyOmk {
    #[new]
    #[pyo3(signature = (state_dir=None, project_dir=None, config=None, approval=None))]
    fn new(
        py: Python<'_>,
        state_dir: Option<PathBuf>,
        project_dir: Option<PathBuf>,
        config: Option<PathBuf>,
        approval: Option<Py<PyAny>>,
    ) -> PyResult<PyOmk> {
        let options = OpenOptions {
            state_dir,
            project_dir,
            config,
        };
        let inner = blocking(py, "Omk()", || omk_core::Omk::open(options))?;
        let handle = PyOmk { inner };
        handle.set_approver(py, approval)?;
        Ok(handle)
    }

    /// Set (or, with ``None``, clear) the callable that decides approvals
    /// for team runs started with ``approval="host"``.
    ///
    /// It is called with the request as a dict (``id``, ``sender``,
    /// ``action``, ``description``, ``paths``, ``commands``, ``agent_id``)
    /// from omk's threads, possibly several at once, and may block while a
    /// person decides. Return ``True``/``False`` or ``(bool, reason)``; an
    /// exception or any other answer rejects the request. Every decision is
    /// recorded as an ``approval_decided`` event.
    #[pyo3(signature = (approver))]
    fn set_approver(&self, py: Python<'_>, approver: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(a) = &approver {
            if !a.bind(py).is_callable() {
                return Err(
                    crate::errors::class_of(py, omk_core::ErrorCode::InvalidInput)
                        .call1(("approval must be a callable or None",))
                        .map(PyErr::from_value)
                        .unwrap_or_else(|e| e),
                );
            }
        }
        self.inner
            .set_approver(approver.map(crate::approver::from_callable));
        Ok(())
    }

    /// The state directory (``pathlib.Path``).
    #[getter]
    fn state_dir(&self) -> PathBuf {
        self.inner.state_dir().to_path_buf()
    }

    /// The project directory agents and gates work in (``pathlib.Path``).
    #[getter]
    fn project_dir(&self) -> PathBuf {
        self.inner.project_dir().to_path_buf()
    }

    fn __repr__(&self) -> String {
        format!(
            "Omk(state_dir={:?}, project_dir={:?})",
            self.inner.state_dir().display().to_string(),
            self.inner.project_dir().display().to_string()
        )
    }

    /// Run a team of agents and return its final team document.
    ///
    /// ``spec`` is ``"N:role"`` (1 <= N <= 64), ``task`` what the team should
    /// achieve. ``subtasks`` are its units of work (default: a planner turn
    /// proposes them). ``workdir`` defaults to the project directory,
    /// ``approval`` to the configured policy (``"workdir-edits"``), ``pool``
    /// to ``"default"``. ``no_gates`` skips the verification gates.
    ///
    /// Blocks until the run ends, with the GIL released; a run whose tasks or
    /// gates fail is a result (``phase == "Failed"``), not an error. On
    /// Ctrl-C (KeyboardInterrupt) the team is shut down (forced if it has
    /// not stopped within 5 s, or on a second Ctrl-C) and
    /// ``omk.CancelledError`` is raised, naming the team in its message and
    /// its ``team`` attribute.
    ///
    /// With ``detach=True`` it returns the prepared document (phase
    /// ``"Planning"``) at once while a background thread of this process
    /// runs the team: the process must outlive the run. Follow it with
    /// ``team_status`` or ``team_events(name, follow=True)``.
    ///
    /// ``spec`` is ``N:role[@agent]`` terms joined by ``,`` (for example
    /// ``"2:executor@claude,1:reviewer@kimi-acp"``); ``agent`` is the
    /// profile of terms without ``@agent`` (default ``[team] agent``).
    /// ``isolation="worktree"`` gives each worker a git worktree of its
    /// own and integrates their commits onto branch ``omk/<team>``
    /// (docs/teams.md; the default in a git work tree); ``"none"`` shares
    /// the work dir (the default elsewhere).
    /// ``deliver="apply"`` also brings the result into the checkout once
    /// the gates passed (if it did not change meanwhile).
    #[pyo3(signature = (spec, task, *, name=None, subtasks=None, workdir=None, approval=None, pool=None, detach=false, no_gates=false, agent=None, isolation=None, deliver=None))]
    #[allow(clippy::too_many_arguments)]
    fn team_run(
        &self,
        py: Python<'_>,
        spec: String,
        task: String,
        name: Option<String>,
        subtasks: Option<Vec<String>>,
        workdir: Option<PathBuf>,
        approval: Option<String>,
        pool: Option<String>,
        detach: bool,
        no_gates: bool,
        agent: Option<String>,
        isolation: Option<String>,
        deliver: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let request = TeamRunRequest {
            spec,
            task,
            name,
            subtasks: subtasks.unwrap_or_default(),
            workdir,
            approval,
            pool,
            detach,
            no_gates,
            agent,
            isolation,
            deliver,
        };
        let doc = self.run_team(py, request)?;
        doc_to_py(py, &doc)
    }

    /// One team's document: this state root's, else the configured store's
    /// (``[store] url`` / ``OMK_STORE``). A team whose supervisor died is
    /// reported (and recorded) as phase ``"Interrupted"``. Raises
    /// ``NotFoundError`` for a team in neither, ``CorruptStateError`` for an
    /// unreadable one.
    fn team_status(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
        let doc = blocking(py, "team_status", || self.inner.team_find(&name))?;
        doc_to_py(py, &doc)
    }

    /// ``{"teams": [team document, ...], "errors": [{"name", "error": {"code", "message"}}]}``:
    /// every team, oldest first; teams whose state cannot be read are listed
    /// in ``errors``, never skipped.
    fn team_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "team_list", || {
            omk_core::ops::team_list_json(&self.inner)
        })?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Stop a team (from any process) and wait until it has stopped; return
    /// its final document plus ``stopped`` (whether this call stopped it) and
    /// ``outcome`` (a sentence). ``force`` kills its agents at once.
    /// Idempotent: a team that had already ended is returned as it is, with
    /// ``stopped`` False.
    #[pyo3(signature = (name, force=false))]
    fn team_shutdown(&self, py: Python<'_>, name: String, force: bool) -> PyResult<Py<PyAny>> {
        let doc = blocking(py, "team_shutdown", || {
            self.inner.team_shutdown(&name, force)
        })?;
        doc_to_py(py, &doc)
    }

    /// Delete the git refs (``refs/omk/<team>/...``) and branches
    /// (``omk/<team>``) of isolated teams that ended more than
    /// ``older_than`` ago (``"14d"``, ``"12h"``, ``"30m"``, seconds;
    /// default 14 days); a branch moved since omk left it is kept.
    /// ``dry_run`` only reports.
    #[pyo3(signature = (older_than=None, dry_run=false))]
    fn team_gc(
        &self,
        py: Python<'_>,
        older_than: Option<String>,
        dry_run: bool,
    ) -> PyResult<Py<PyAny>> {
        let age = older_than.unwrap_or_else(|| "14d".into());
        let r = blocking(py, "team_gc", || self.inner.team_gc(&age, dry_run))?;
        doc_to_py(py, &r)
    }

    /// Iterate over a team's events (dicts: ``id``, ``ts``, ``run_id``,
    /// ``kind``, ``actor``, ``payload``, ``schema_version``, ``seq``), oldest first,
    /// from ``<state_dir>/team/<name>/events.jsonl``, or, for a team of the
    /// configured store (``[store] url`` / ``OMK_STORE``), from the store
    /// by sequence, woken by its ``LISTEN``.
    ///
    /// Without ``follow`` it yields the events written so far and stops.
    /// With ``follow=True`` it keeps yielding new events until the team has
    /// ended and its last event is read, waiting with the GIL released for
    /// the log's change notifications (inotify): a new event arrives within
    /// milliseconds. ``poll_interval`` is the longest wait without a
    /// notification (where notifications are unavailable, the follower
    /// reads that often). Raises ``NotFoundError`` for a team in neither.
    #[pyo3(signature = (name, follow=false, poll_interval=1.0))]
    fn team_events(
        &self,
        py: Python<'_>,
        name: String,
        follow: bool,
        poll_interval: f64,
    ) -> PyResult<crate::events::TeamEvents> {
        crate::events::TeamEvents::open(py, self.inner.clone(), name, follow, poll_interval)
    }

    /// ``{"project", "source", "breaker", "gates": [...]}``: the gates of the
    /// project (from ``.omk/gates.toml``, else detected) and where each came
    /// from.
    fn gates_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "gates_list", || self.inner.gates_list())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Run the project's gates (all, or the ones named in ``gates``) through
    /// their circuit breakers and return the report. A failing gate is a
    /// result (``passed`` is False), not an error; an unknown gate name
    /// raises ``NotFoundError``.
    #[pyo3(signature = (gates=None))]
    fn gates_run(&self, py: Python<'_>, gates: Option<Vec<String>>) -> PyResult<Py<PyAny>> {
        let only = gates.unwrap_or_default();
        let report = blocking(py, "gates_run", || self.inner.gates_run(&only))?;
        doc_to_py(py, &report)
    }

    /// ``{"breakers": [...]}``: the circuit breakers of this project's gates,
    /// or of every project with ``all_projects=True``.
    #[pyo3(signature = (all_projects=false))]
    fn gates_status(&self, py: Python<'_>, all_projects: bool) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "gates_status", || self.inner.gates_status(all_projects))?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Close circuit breakers: the breaker of ``gate``, or (``gate=None``)
    /// every breaker of the project that is not already Closed (of every
    /// project with ``all_projects=True``). Returns ``{"reset": [{"project",
    /// "gate_name", "previous_state"}], "count"}``; an unknown gate raises
    /// ``NotFoundError``.
    #[pyo3(signature = (gate=None, all_projects=false))]
    fn gates_reset(
        &self,
        py: Python<'_>,
        gate: Option<String>,
        all_projects: bool,
    ) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "gates_reset", || {
            self.inner.gates_reset(gate.as_deref(), all_projects)
        })?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// ``{"default": NAME, "agents": [...]}``: every agent profile (built-in
    /// and ``[agents.NAME]``), where it comes from, its protocol, and whether
    /// its executable is installed (docs/agents.md).
    fn agents_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "agents_list", || self.inner.agents_list())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// ``{"pools": [...]}``: every configured pool with live numbers.
    fn pools_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "pools_status", || self.inner.pools_status())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// The cluster's pools in a PostgreSQL store (``store``, else ``[store]
    /// url`` / ``OMK_STORE``), or ``None`` without one: ``{"store", "pools":
    /// [{"name", "max_workers", "active_tasks", "queued_tasks", "workers",
    /// "capacity", "leased_slots"}], "workers": [...]}``
    /// (docs/distributed.md).
    #[pyo3(signature = (store=None))]
    fn pools_cluster(&self, py: Python<'_>, store: Option<String>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "pools_cluster", || {
            self.inner.pools_cluster(store.as_deref())
        })?;
        match v {
            Some(v) => Ok(to_py(py, &v)?.unbind()),
            None => Ok(py.None()),
        }
    }

    /// Declare pool ``pool``'s capacity across a PostgreSQL store's cluster:
    /// at most ``max_workers`` of its tasks (and leased slots) at once on
    /// all hosts; ``None`` removes the cap. Returns ``{"store", "pool": its
    /// cluster entry}``. Raises ``InvalidInputError`` without a store (a
    /// local pool's capacity is ``[pools.NAME] max_workers`` in config).
    #[pyo3(signature = (pool, max_workers, *, store=None))]
    fn pool_capacity_set(
        &self,
        py: Python<'_>,
        pool: String,
        max_workers: Option<u32>,
        store: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "pool_capacity_set", || {
            self.inner
                .pool_capacity_set(&pool, max_workers, store.as_deref())
        })?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Remove pool slots and queue entries whose owner died or whose run
    /// ended; returns ``{"removed": n, "pools": [...]}`` saying exactly what.
    fn pools_cleanup(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "pools_cleanup", || self.inner.pools_cleanup())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Runtime counters (``total_team_runs``, ``total_tasks_completed``, ...).
    fn metrics(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "metrics", || self.inner.metrics())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// ``{"status": "ok"|"degraded", "version", "checks": {name: {...}}}``.
    fn health(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "health", || self.inner.health())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// ``{"status": "healthy"|"unhealthy", "healthy", "version", "checks":
    /// [...]}``. Finding issues is a result, not an error.
    fn doctor(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "doctor", || self.inner.doctor())?;
        Ok(to_py(py, &v)?.unbind())
    }

    /// Create a goal and run its controller until it stops; returns the
    /// final goal state (API.md GoalState). ``status`` is ``"ready"`` only
    /// with evidence; a goal that ends ``"not_ready"``, blocked or out of
    /// budget is a result, not an error.
    ///
    /// ``until_ready`` loops (execution, gates, fix tasks) until ready,
    /// blocked, out of budget or cancelled. Budgets: ``budget_time``
    /// (``"8h"``), ``budget_tokens``, ``budget_usd``. ``max_agents`` bounds
    /// the agents at once (default 1). Blocks with the GIL released; on
    /// Ctrl-C the goal is paused (its running wave stopped) and
    /// ``omk.CancelledError`` is raised with the goal id in its ``goal``
    /// attribute (continue it with ``goal_resume``). With ``detach=True`` it
    /// returns the created goal at once while a thread of this process runs
    /// the controller.
    /// ``agent`` names the agent profile of the goal's planner and teams.
    /// ``slice_execution`` works in a git worktree of the goal's own (each
    /// wave isolated), the result on branch ``omk/<goal id>``;
    /// ``merge_policy`` (``"disabled"``, ``"manual"``, ``"gated"``) says
    /// what else happens to it; ``delivery_policy`` is ``"local"``.
    #[pyo3(signature = (outcome, *, until_ready=false, budget_time=None, budget_tokens=None, budget_usd=None, max_agents=None, approval=None, detach=false, agent=None, slice_execution=false, merge_policy=None, delivery_policy=None))]
    #[allow(clippy::too_many_arguments)]
    fn goal_run(
        &self,
        py: Python<'_>,
        outcome: String,
        until_ready: bool,
        budget_time: Option<String>,
        budget_tokens: Option<u64>,
        budget_usd: Option<f64>,
        max_agents: Option<u32>,
        approval: Option<String>,
        detach: bool,
        agent: Option<String>,
        slice_execution: bool,
        merge_policy: Option<String>,
        delivery_policy: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let request = GoalRunRequest {
            outcome,
            until_ready,
            budget_time,
            budget_tokens,
            budget_usd,
            max_agents,
            approval,
            detach,
            agent,
            slice_execution,
            merge_policy,
            delivery_policy,
        };
        if detach {
            let state = blocking(py, "goal_run", || self.inner.goal_run(&request))?;
            return doc_to_py(py, &state);
        }
        let state = blocking(py, "goal_run", || self.inner.goal_create(&request))?;
        let id = state.goal_id.clone();
        let omk = self.inner.clone();
        let thread_id = id.clone();
        let run = slot::spawn(format!("omk-py-{id}"), move || {
            guard("goal_run", || omk.goal_drive(&thread_id, false))
        })
        .map_err(|e| {
            Failure::Core(omk_core::Error::Io {
                context: "start the goal thread".into(),
                source: e,
            })
        })?;
        loop {
            if let Some(result) = py.detach(|| run.take_within(SLICE)) {
                return doc_to_py(py, &result?);
            }
            if run.abandoned() {
                return Err(OmkError::new_err(format!(
                    "goal {id}: its thread ended without a result"
                )));
            }
            if let Err(interrupt) = py.check_signals() {
                // Pausing stops the wave; the controller then sees the
                // status and returns.
                let paused = blocking(py, "goal_pause", || self.inner.goal_pause(&id));
                let _ = py.detach(|| run.take_within(GIVE_UP_AFTER));
                if !interrupt.is_instance_of::<PyKeyboardInterrupt>(py) {
                    return Err(interrupt);
                }
                let how = match paused {
                    Ok(s) => format!("it is {}; continue it with goal_resume({id:?})", s.status),
                    Err(e) => format!("pausing it failed: {e:?}"),
                };
                let err = CancelledError::new_err(format!(
                    "goal {id} was interrupted by KeyboardInterrupt; {how}"
                ));
                let _ = err.value(py).setattr("goal", &id);
                err.set_cause(py, Some(interrupt));
                return Err(err);
            }
        }
    }

    /// ``{"goals": [goal state, ...], "unreadable": [{"goal_id", "error"}]}``,
    /// newest first.
    fn goal_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = blocking(py, "goal_list", || self.inner.goal_list())?;
        doc_to_py(py, &list)
    }

    /// The goal's state (API.md GoalState). ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_show(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_show", || self.inner.goal_show(id))?;
        doc_to_py(py, &v)
    }

    /// The goal's proof (API.md GoalProof): ``status`` is ``"ready"`` only
    /// with every task done and every required gate passed on the final tree;
    /// ``known_gaps`` says what is missing. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_proof(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_proof", || self.inner.goal_proof(id))?;
        doc_to_py(py, &v)
    }

    /// The deduplicated event timeline (API.md GoalReplay), with
    /// ``duplicate_events`` and ``parse_failures`` counted. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_replay(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_replay", || self.inner.goal_replay(id))?;
        doc_to_py(py, &v)
    }

    /// Budgets, use and checkpoints (API.md GoalBudgetReport). ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_budget(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_budget", || self.inner.goal_budget(id))?;
        doc_to_py(py, &v)
    }

    /// Stagnation detection over the recorded iterations (API.md
    /// StagnationReport). ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_diagnose(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_diagnose", || self.inner.goal_diagnose(id))?;
        doc_to_py(py, &v)
    }

    /// Write a recovery checkpoint and propose a plan: ``{"checkpoint_id",
    /// "checkpoint_path", "diagnosis", "plan"}``. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_recover(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_recover", || self.inner.goal_recover(id))?;
        doc_to_py(py, &v)
    }

    /// Pause the goal (its running wave is stopped); returns its state. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_pause(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_pause", || self.inner.goal_pause(id))?;
        doc_to_py(py, &v)
    }

    /// Cancel the goal for good; returns its state. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_cancel(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_cancel", || self.inner.goal_cancel(id))?;
        doc_to_py(py, &v)
    }

    /// Run the goal's gates now and refresh its proof; returns the proof. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_verify(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_verify", || self.inner.goal_verify(id))?;
        doc_to_py(py, &v)
    }

    /// Run one controller step; returns the goal's state. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_execute(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_execute", || self.inner.goal_drive(id, true))?;
        doc_to_py(py, &v)
    }

    /// Take ``task`` through Expansion, Planning, Execution, QA and
    /// Validation; returns the final state. ``status`` is ``"complete"``
    /// only when the project's required gates passed on the final tree;
    /// ``"failed"`` and ``"stopped"`` are results, not errors. ``name`` is
    /// the run id (default ``ap-YYYYMMDD-HHMMSS-<hex>``), ``max_agents`` the
    /// workers of the execution team (default 2). Blocks with the GIL
    /// released; on Ctrl-C the run is stopped and ``omk.CancelledError`` is
    /// raised with the run id in its ``run`` attribute.
    /// ``isolation="worktree"`` works in a git worktree of the run's own,
    /// the result on branch ``omk/<id>``; ``deliver="apply"`` also brings
    /// it into an unchanged checkout once complete.
    #[pyo3(signature = (task, *, name=None, max_agents=None, approval=None, agent=None, isolation=None, deliver=None))]
    #[allow(clippy::too_many_arguments)]
    fn autopilot_run(
        &self,
        py: Python<'_>,
        task: String,
        name: Option<String>,
        max_agents: Option<u32>,
        approval: Option<String>,
        agent: Option<String>,
        isolation: Option<String>,
        deliver: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let id = name.unwrap_or_else(omk_core::modes::autopilot::new_id);
        let request = omk_core::modes::autopilot::AutopilotRequest {
            task,
            name: Some(id.clone()),
            max_agents,
            approval,
            agent,
            isolation,
            deliver,
        };
        self.run_stoppable(
            py,
            "autopilot",
            id,
            move |omk| omk.autopilot_run(&request),
            |omk, id| omk.autopilot_stop(id).map(|_| ()),
        )
    }

    /// ``{"autopilots": [state, ...]}`` (API.md ``/api/autopilots``), newest first.
    fn autopilot_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "autopilot_list", || self.inner.autopilot_list())?;
        doc_to_py(py, &v)
    }

    /// One autopilot run's state.
    fn autopilot_status(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "autopilot_status", || self.inner.autopilot_status(id))?;
        doc_to_py(py, &v)
    }

    /// Ask a running autopilot (of any process) to stop; returns its state.
    fn autopilot_stop(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "autopilot_stop", || self.inner.autopilot_stop(id))?;
        doc_to_py(py, &v)
    }

    /// Agent turn, gates, failures fed back, repeat until the gates pass
    /// (``"complete"``) or ``max_iterations`` turns (default 10) were spent
    /// (``"exhausted"``); returns the final state. Blocks with the GIL
    /// released; on Ctrl-C the loop is stopped and ``omk.CancelledError``
    /// is raised with the run id in its ``run`` attribute.
    /// ``isolation="worktree"`` works in a git worktree of the run's own,
    /// the result on branch ``omk/<id>``; ``deliver="apply"`` also brings
    /// it into an unchanged checkout once the gates passed.
    #[pyo3(signature = (task, *, max_iterations=None, name=None, approval=None, agent=None, isolation=None, deliver=None))]
    #[allow(clippy::too_many_arguments)]
    fn ralph_run(
        &self,
        py: Python<'_>,
        task: String,
        max_iterations: Option<u32>,
        name: Option<String>,
        approval: Option<String>,
        agent: Option<String>,
        isolation: Option<String>,
        deliver: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let id = name.unwrap_or_else(omk_core::modes::ralph::new_id);
        let request = omk_core::modes::ralph::RalphRequest {
            task,
            max_iterations,
            name: Some(id.clone()),
            approval,
            agent,
            isolation,
            deliver,
        };
        self.run_stoppable(
            py,
            "ralph",
            id,
            move |omk| omk.ralph_run(&request),
            |omk, id| omk.ralph_stop(id).map(|_| ()),
        )
    }

    /// ``{"ralphs": [state, ...]}`` (API.md ``/api/ralphs``), newest first.
    fn ralph_list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "ralph_list", || self.inner.ralph_list())?;
        doc_to_py(py, &v)
    }

    /// One ralph run's state.
    fn ralph_status(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "ralph_status", || self.inner.ralph_status(id))?;
        doc_to_py(py, &v)
    }

    /// Ask a running ralph loop (of any process) to stop; returns its state.
    fn ralph_stop(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "ralph_stop", || self.inner.ralph_stop(id))?;
        doc_to_py(py, &v)
    }

    /// Continue a paused, interrupted, out-of-budget or not-ready goal
    /// until its controller stops; returns its state. ``id`` defaults to the newest goal
    /// (``"latest"``).
    #[pyo3(signature = (id="latest"))]
    fn goal_resume(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_resume", || self.inner.goal_resume(id))?;
        doc_to_py(py, &v)
    }

    /// Raise the goal's budgets (at least one of ``time`` such as ``"2h"``,
    /// ``tokens``, ``usd``); returns the budget report.
    #[pyo3(signature = (id="latest", *, time=None, tokens=None, usd=None))]
    fn goal_budget_add(
        &self,
        py: Python<'_>,
        id: &str,
        time: Option<String>,
        tokens: Option<u64>,
        usd: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_budget_add", || {
            self.inner.goal_budget_add(id, time.as_deref(), tokens, usd)
        })?;
        doc_to_py(py, &v)
    }

    /// Restore the latest (or the numbered) recovery checkpoint: goal state,
    /// task graph and proof; ``git=True`` also resets the project's work tree
    /// to the checkpoint's commit (refused with ``ConflictError`` when it has
    /// uncommitted changes).
    #[pyo3(signature = (id="latest", *, checkpoint=None, git=false))]
    fn goal_rollback(
        &self,
        py: Python<'_>,
        id: &str,
        checkpoint: Option<u32>,
        git: bool,
    ) -> PyResult<Py<PyAny>> {
        let v = blocking(py, "goal_rollback", || {
            self.inner.goal_rollback(id, checkpoint, git)
        })?;
        doc_to_py(py, &v)
    }

    /// Run an operation by name (``"team.status"``, ``"gates.run"``, ...)
    /// with a dict of params, exactly as the C ABI, MCP and REST do; returns
    /// its JSON result as Python objects. ``"team.run"`` (not detached)
    /// is interruptible by Ctrl-C like ``team_run``. Unknown operations raise
    /// ``NotFoundError``, bad params ``InvalidInputError``.
    #[pyo3(signature = (op, params=None))]
    fn call(
        &self,
        py: Python<'_>,
        op: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let params = match params {
            Some(p) => from_py(p)?,
            None => Value::Null,
        };
        if op == "team.run" {
            let p = if params.is_null() {
                Value::Object(Default::default())
            } else {
                params.clone()
            };
            // Malformed params go to the op table for its standard error.
            if let Ok(request) = serde_json::from_value::<TeamRunRequest>(p) {
                if !request.detach {
                    let doc = self.run_team(py, request)?;
                    return doc_to_py(py, &doc);
                }
            }
        }
        let v = blocking(py, "call", || self.inner.call(&op, &params))?;
        Ok(to_py(py, &v)?.unbind())
    }
}

impl PyOmk {
    /// Run an autopilot / ralph on its own thread, waiting in slices so
    /// Ctrl-C is seen: then stop the run, wait for it to record `stopped`
    /// and raise `CancelledError` (attribute `run`: the id).
    fn run_stoppable<T: serde::Serialize + Send + 'static>(
        &self,
        py: Python<'_>,
        mode: &str,
        id: String,
        run: impl FnOnce(&omk_core::Omk) -> omk_core::Result<T> + Send + 'static,
        stop: fn(&omk_core::Omk, &str) -> omk_core::Result<()>,
    ) -> PyResult<Py<PyAny>> {
        let omk = self.inner.clone();
        let what = format!("{mode}_run");
        let thread_what = what.clone();
        let slot = slot::spawn(format!("omk-py-{id}"), move || {
            guard(&thread_what, || run(&omk))
        })
        .map_err(|e| {
            Failure::Core(omk_core::Error::Io {
                context: format!("start the {mode} thread"),
                source: e,
            })
        })?;
        loop {
            if let Some(result) = py.detach(|| slot.take_within(SLICE)) {
                return doc_to_py(py, &result?);
            }
            if slot.abandoned() {
                return Err(OmkError::new_err(format!(
                    "{mode} {id}: its thread ended without a result"
                )));
            }
            if let Err(interrupt) = py.check_signals() {
                // The run may not have written its state yet: retry briefly.
                let deadline = Instant::now() + Duration::from_secs(5);
                while let Err(Failure::Core(omk_core::Error::NotFound(_))) =
                    py.detach(|| guard(&what, || stop(&self.inner, &id)))
                {
                    if Instant::now() > deadline {
                        break;
                    }
                    py.detach(|| std::thread::sleep(SLICE));
                }
                let _ = py.detach(|| slot.take_within(GIVE_UP_AFTER));
                if !interrupt.is_instance_of::<PyKeyboardInterrupt>(py) {
                    return Err(interrupt);
                }
                let err = CancelledError::new_err(format!(
                    "{mode} {id} was stopped by KeyboardInterrupt"
                ));
                let _ = err.value(py).setattr("run", &id);
                err.set_cause(py, Some(interrupt));
                return Err(err);
            }
        }
    }
    /// `team_run`: detached runs go straight to the core; attached ones run
    /// on a background thread while this one watches for Ctrl-C.
    fn run_team(&self, py: Python<'_>, request: TeamRunRequest) -> PyResult<TeamDoc> {
        if request.detach {
            return Ok(blocking(py, "team_run", || self.inner.team_run(&request))?);
        }
        let doc = blocking(py, "team_run", || self.inner.team_prepare(&request))?;
        let name = doc.name.clone();
        let omk = self.inner.clone();
        let thread_name = name.clone();
        let run = slot::spawn(format!("omk-py-team-{name}"), move || {
            guard("team_run", || omk.team_supervise(&thread_name, None, false))
        })
        .map_err(|e| {
            Failure::Core(omk_core::Error::Io {
                context: "start the team thread".into(),
                source: e,
            })
        })?;
        loop {
            if let Some(result) = py.detach(|| run.take_within(SLICE)) {
                return Ok(result?);
            }
            if run.abandoned() {
                return Err(OmkError::new_err(format!(
                    "team {name}: its thread ended without a result"
                )));
            }
            if let Err(interrupt) = py.check_signals() {
                return Err(self.cancel(py, &name, &run, interrupt));
            }
        }
    }

    /// After an interrupt during `team_run`: shut the team down (gracefully,
    /// then by force), wait for its thread, and build the exception to raise.
    fn cancel(
        &self,
        py: Python<'_>,
        name: &str,
        run: &Arc<Slot<Result<TeamDoc, Failure>>>,
        interrupt: PyErr,
    ) -> PyErr {
        let start_shutdown = |force: bool| {
            let omk = self.inner.clone();
            let team = name.to_owned();
            // Its result does not matter: the run's own thread reports the end.
            let _ = slot::spawn(format!("omk-py-shutdown-{name}"), move || {
                guard("team_shutdown", || omk.team_shutdown(&team, force))
            });
        };
        start_shutdown(false);
        let started = Instant::now();
        let mut forced_at: Option<Instant> = None;
        let mut interrupts = 1;
        let outcome = loop {
            if let Some(result) = py.detach(|| run.take_within(SLICE)) {
                break Some(result);
            }
            if run.abandoned() {
                break None;
            }
            if py.check_signals().is_err() {
                interrupts += 1;
            }
            if forced_at.is_none() && (interrupts >= 2 || started.elapsed() >= FORCE_AFTER) {
                start_shutdown(true);
                forced_at = Some(Instant::now());
            }
            if interrupts >= 3 || forced_at.is_some_and(|t| t.elapsed() >= GIVE_UP_AFTER) {
                break None;
            }
        };
        let how = if forced_at.is_some() {
            "forced shutdown"
        } else {
            "shutdown"
        };
        let ending = match &outcome {
            Some(Ok(doc)) => format!("it stopped in phase {:?}", doc.phase),
            Some(Err(Failure::Core(e))) => format!("it stopped with an error: {e}"),
            Some(Err(Failure::Panic(m))) => format!("it stopped with an error: {m}"),
            None => format!(
                "it may still be stopping; check `omk team status {name}` or run `omk team shutdown {name} --force`"
            ),
        };
        if !interrupt.is_instance_of::<PyKeyboardInterrupt>(py) {
            // Some other exception from a signal handler (SystemExit, ...):
            // the team is stopped, the caller gets their exception back.
            return interrupt;
        }
        let err = CancelledError::new_err(format!(
            "team {name} was cancelled by KeyboardInterrupt ({how}); {ending}"
        ));
        let _ = err.value(py).setattr("team", name);
        err.set_cause(py, Some(interrupt));
        err
    }
}
