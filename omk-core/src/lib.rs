//! omk-core: the library behind every omk surface.
//!
//! [`Omk`] is the one entry point: a cheap-to-clone, `Send + Sync` handle
//! with a blocking API. The CLI, the C ABI, the Python module, the MCP server
//! and the dashboard all call it, and nothing else.
//!
//! ```no_run
//! let omk = omk_core::Omk::open(omk_core::OpenOptions::default())?;
//! let report = omk.doctor()?;
//! println!("{}", report["status"]);
//! # Ok::<(), omk_core::Error>(())
//! ```

pub mod admission;
pub mod agent;
pub mod agents;
pub mod chat;
pub mod config;
pub mod doorbell;
pub mod error;
pub mod events;
pub mod executor;
pub mod follow;
pub mod gate;
pub mod git;
pub mod goal;
pub mod health;
pub mod ids;
pub mod mcp_config;
pub mod metrics;
pub mod modes;
pub mod ops;
pub mod paths;
pub mod pg;
pub mod pool;
pub mod process;
pub mod redact;
pub mod seam;
pub mod store;
pub mod team;
pub mod watch;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

pub use config::Config;
pub use error::{Error, ErrorCode, Result};
pub use paths::StatePaths;

/// The version of this crate, reported by `omk --version` and `/api/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How to open an [`Omk`] handle. Every field is optional; `None` means the
/// documented default (environment, then XDG locations).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenOptions {
    /// State root; default `$OMK_STATE_DIR`, `$XDG_STATE_HOME/omk`, `~/.local/state/omk`.
    pub state_dir: Option<PathBuf>,
    /// The project the agents work in; default the current directory.
    pub project_dir: Option<PathBuf>,
    /// An extra config file read last; default `$OMK_CONFIG`.
    pub config: Option<PathBuf>,
}

/// A handle on one state root and project. Clone it freely.
#[derive(Clone)]
pub struct Omk {
    inner: Arc<Inner>,
}

struct Inner {
    /// omk's own runtime for child processes, timers and I/O; created on
    /// first use, never a caller's.
    runtime: std::sync::OnceLock<std::result::Result<tokio::runtime::Runtime, String>>,
    /// The callback of the `host` approval policy, if the host set one.
    approver: std::sync::RwLock<Option<agent::Approver>>,
    paths: StatePaths,
    project_dir: PathBuf,
    /// Kept as a result so `doctor` can report a broken config file while
    /// every operation that needs the config fails with the same error.
    config: std::result::Result<Config, Error>,
    /// The configured PostgreSQL store, once connected.
    store: std::sync::Mutex<Option<pg::PgStore>>,
}

impl std::fmt::Debug for Omk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Omk")
            .field("state_dir", &self.inner.paths.root())
            .field("project_dir", &self.inner.project_dir)
            .finish()
    }
}

impl Omk {
    /// Resolve the state root and project, and load the configuration. The
    /// state root is created (0700) when first written, not here.
    pub fn open(options: OpenOptions) -> Result<Omk> {
        let paths = StatePaths::resolve(options.state_dir.as_deref())?;
        let project_dir = match options.project_dir {
            Some(p) => std::path::absolute(&p)
                .map_err(|e| Error::io(format!("resolve {}", p.display()), e))?,
            None => {
                std::env::current_dir().map_err(|e| Error::io("find the current directory", e))?
            }
        };
        let files = paths::config_files(Some(&project_dir));
        let explicit = paths::explicit_config(options.config.as_deref());
        let config = Config::load(&files, explicit.as_deref());
        Ok(Omk {
            inner: Arc::new(Inner {
                runtime: std::sync::OnceLock::new(),
                approver: std::sync::RwLock::new(None),
                paths,
                project_dir,
                config,
                store: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The PostgreSQL store this handle's config names (`[store] url`, or
    /// `$OMK_STORE`), connected on first use (again after a failure); `None`
    /// when it names none. Call it from blocking code, not an async task.
    pub fn store(&self) -> Result<Option<pg::PgStore>> {
        let Some(url) = self.config()?.store.url.clone() else {
            return Ok(None);
        };
        let mut slot = self.inner.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = &*slot {
            return Ok(Some(store.clone()));
        }
        let store = self.runtime()?.block_on(pg::PgStore::connect(&url))?;
        *slot = Some(store.clone());
        Ok(Some(store))
    }

    /// The store at `url` (a command's `--store`), or the configured one
    /// ([`Omk::store`]) when `url` is `None` or names it.
    pub fn store_in(&self, url: Option<&str>) -> Result<Option<pg::PgStore>> {
        match url {
            Some(u) if self.config()?.store.url.as_deref() != Some(u) => {
                Ok(Some(self.runtime()?.block_on(pg::PgStore::connect(u))?))
            }
            _ => self.store(),
        }
    }

    /// Team `name`'s document: this state root's team, else the configured
    /// store's ([`Omk::store`]).
    pub fn team_find(&self, name: &str) -> Result<team::TeamDoc> {
        self.team_find_in(name, None)
    }

    /// [`Omk::team_find`] in the store at `store_url` ([`Omk::store_in`]).
    pub fn team_find_in(&self, name: &str, store_url: Option<&str>) -> Result<team::TeamDoc> {
        match self.team_status(name) {
            Err(e) if e.code() == ErrorCode::NotFound => {
                let Some(store) = self.store_in(store_url)? else {
                    return Err(e);
                };
                let doc = self.runtime()?.block_on(team::remote::team(&store, name))?;
                doc.ok_or_else(|| {
                    Error::NotFound(format!(
                        "no team named {name:?} here or in the store {}",
                        store.shown()
                    ))
                })
            }
            found => found,
        }
    }

    /// The state root and its layout.
    pub fn paths(&self) -> &StatePaths {
        &self.inner.paths
    }

    /// The state root directory.
    pub fn state_dir(&self) -> &Path {
        self.inner.paths.root()
    }

    /// The project directory agents and gates work in.
    pub fn project_dir(&self) -> &Path {
        &self.inner.project_dir
    }

    /// The merged configuration, or the error that loading it produced.
    pub fn config(&self) -> Result<&Config> {
        self.inner.config.as_ref().map_err(clone_error)
    }

    /// Runtime counters in the API.md `/api/metrics` shape (the inner object).
    pub fn metrics(&self) -> Result<Value> {
        Ok(metrics::read(&self.inner.paths.metrics())?.to_api_json())
    }

    /// Health in the API.md `/api/health` shape.
    pub fn health(&self) -> Result<Value> {
        Ok(health::health_report(&self.checks()))
    }

    /// Doctor report: `{"status": "healthy"|"unhealthy", "healthy", "checks"}`.
    /// Finding issues is a result, not an error.
    pub fn doctor(&self) -> Result<Value> {
        let mut checks = self.checks();
        // Each configured profile (and the default): found, and for ACP an
        // `initialize` handshake. Not in `health`: a poll must not start agents.
        if let Ok(config) = self.inner.config.as_ref() {
            let rt = self.runtime()?;
            checks.extend(health::check_profiles(&self.inner.paths, config, rt));
        }
        Ok(health::doctor_report(&checks))
    }

    /// `agents list`: every agent profile, where it comes from, and
    /// whether its executable is installed.
    pub fn agents_list(&self) -> Result<Value> {
        Ok(agents::list(self.config()?))
    }

    fn checks(&self) -> Vec<health::Check> {
        health::run_checks(&self.inner.paths, self.inner.config.as_ref())
    }

    pub(crate) fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        let rt = self.inner.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("omk-runtime")
                .on_thread_start(process::block_sigpipe)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        });
        rt.as_ref()
            .map_err(|e| Error::io("start the omk runtime", std::io::Error::other(e.clone())))
    }

    /// Run a team: prepare it, then supervise it to the end in this process
    /// and return the final document. With `request.detach`, return the
    /// prepared document at once while a background thread of this process
    /// runs the team (the CLI detaches into its own process instead, with
    /// [`Omk::team_prepare`] and [`Omk::team_supervise`]).
    ///
    /// A run whose tasks fail is not an error: check `phase`.
    pub fn team_run(&self, request: &team::TeamRunRequest) -> Result<team::TeamDoc> {
        self.team_run_observed(request, None)
    }

    /// [`Omk::team_run`] with an observer called after every change of the
    /// team document (progress displays).
    pub fn team_run_observed(
        &self,
        request: &team::TeamRunRequest,
        observer: Option<team::supervisor::Observer>,
    ) -> Result<team::TeamDoc> {
        let doc = self.team_prepare(request)?;
        if request.detach {
            let omk = self.clone();
            let name = doc.name.clone();
            std::thread::Builder::new()
                .name(format!("omk-team-{name}"))
                .spawn(move || {
                    process::block_sigpipe();
                    if let Err(e) = omk.team_supervise(&name, observer, false) {
                        tracing::error!("team {name}: {e}");
                    }
                })
                .map_err(|e| Error::io("start the team thread", e))?;
            return Ok(doc);
        }
        self.team_supervise(&doc.name, observer, false)
    }

    /// Set (or clear) the callback that decides approvals for team runs
    /// started from this handle with the `host` policy
    /// (`approval: "host"`). It is called off omk's async threads and may
    /// block while a person decides; every decision is still recorded as an
    /// event.
    pub fn set_approver(&self, approver: Option<agent::Approver>) {
        *self
            .inner
            .approver
            .write()
            .unwrap_or_else(|p| p.into_inner()) = approver;
    }

    fn approver(&self) -> Option<agent::Approver> {
        self.inner
            .approver
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validate a run request and create the team in phase `Planning`.
    pub fn team_prepare(&self, request: &team::TeamRunRequest) -> Result<team::TeamDoc> {
        let config = self.config()?;
        let policy = request
            .approval
            .as_deref()
            .unwrap_or(&config.agent.approval_policy);
        if agent::PolicyKind::parse(policy)? == agent::PolicyKind::Host && self.approver().is_none()
        {
            return Err(Error::InvalidInput(
                "approval policy \"host\" needs an approver set on this handle (Rust: Omk::set_approver; Python: Omk(approval=callable))".into(),
            ));
        }
        team::prepare(&self.inner.paths, config, &self.inner.project_dir, request)
    }

    /// Drive a prepared team to its end (blocking). `ctrl_c`: treat SIGINT
    /// as a graceful shutdown request, a second one as `--force`.
    pub fn team_supervise(
        &self,
        name: &str,
        observer: Option<team::supervisor::Observer>,
        ctrl_c: bool,
    ) -> Result<team::TeamDoc> {
        let config = self.config()?.clone();
        let (_lock, doc, stored) = team::claim_supervision(&self.inner.paths, name)?;
        let paths = self.inner.paths.clone();
        let approver = self.approver();
        self.runtime()?.block_on(async move {
            let (tx, rx) = tokio::sync::watch::channel(None);
            let interrupt = ctrl_c.then(|| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while tokio::signal::ctrl_c().await.is_ok() {
                        let force = tx.borrow().is_some();
                        let _ = tx.send(Some(force));
                    }
                })
            });
            let ctx = Arc::new(team::supervisor::RunContext::new(
                paths, config, doc, stored, approver, observer, rx,
            )?);
            let watcher = tokio::spawn(team::supervisor::watch_shutdown(ctx.clone(), tx.clone()));
            let result = team::supervisor::supervise(ctx).await;
            watcher.abort();
            if let Some(i) = interrupt {
                i.abort();
            }
            result
        })
    }

    /// A team's document (a dead supervisor is detected and recorded as
    /// `Interrupted`).
    pub fn team_status(&self, name: &str) -> Result<team::TeamDoc> {
        team::status(&self.inner.paths, name)
    }

    /// Every team, oldest first, plus the teams whose state could not be read.
    pub fn team_list(&self) -> Result<team::TeamList> {
        team::list(&self.inner.paths)
    }

    /// Delete the git refs and branches (`refs/omk/<team>/...`,
    /// `omk/<team>`) of isolated teams that ended more than `older_than`
    /// ago (`14d`, `12h`, `30m`, seconds); with `dry_run`, say what would go.
    pub fn team_gc(&self, older_than: &str, dry_run: bool) -> Result<team::GcReport> {
        let secs = goal::budget::parse_duration(older_than)?;
        team::gc(&self.inner.paths, secs, dry_run)
    }

    /// Stop a team (from any process) and wait until it has stopped.
    pub fn team_shutdown(&self, name: &str, force: bool) -> Result<team::ShutdownOutcome> {
        team::shutdown(&self.inner.paths, self.config()?, name, force)
    }

    /// The gates of the project (configured in `.omk/gates.toml`, else detected).
    pub fn gate_set(&self) -> Result<gate::GateSet> {
        gate::config::load(&self.inner.project_dir)
    }

    /// `gates list`: what would run and where each gate came from.
    pub fn gates_list(&self) -> Result<Value> {
        Ok(gate::list(&self.gate_set()?))
    }

    /// Run the project's gates (all, or those named) through their circuit
    /// breakers. A failing gate is a result, not an error: check `passed`.
    pub fn gates_run(&self, only: &[String]) -> Result<gate::GatesReport> {
        let set = self.gate_set()?;
        let runs = self.inner.paths.root().join("gates").join("runs");
        let dir = runs.join(format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            ids::random_hex(3)
        ));
        let report = gate::run(&self.inner.paths, &set, only, &dir)?;
        gate::prune_runs(&runs, gate::KEEP_RUNS);
        Ok(report)
    }

    /// `{"breakers": [...]}` for the project, or every project.
    pub fn gates_status(&self, all_projects: bool) -> Result<Value> {
        if all_projects {
            gate::status(&self.inner.paths, None)
        } else {
            gate::status(&self.inner.paths, Some(&self.gate_set()?))
        }
    }

    /// Reset one gate's breaker (`Some(name)`), or every breaker not already
    /// Closed (`None`); reports what was reset.
    pub fn gates_reset(&self, gate_name: Option<&str>, all_projects: bool) -> Result<Value> {
        gate::reset(
            &self.inner.paths,
            &self.gate_set()?,
            gate_name,
            all_projects,
        )
    }

    fn pools(&self) -> Result<pool::Pools> {
        Ok(pool::Pools::new(
            self.inner.paths.clone(),
            self.config()?.clone(),
        ))
    }

    /// `{"pools": [...]}` with live numbers (API.md Pools section).
    pub fn pools_status(&self) -> Result<Value> {
        let paths = &self.inner.paths;
        self.pools()?
            .status(&|run| team::run_is_terminal(paths, run))
    }

    /// The cluster's pools in a PostgreSQL store ([`Omk::store_in`]; `None`
    /// without one): capacity and load per pool, and the live `omk
    /// worker`s (docs/distributed.md, "The cluster's pools").
    pub fn pools_cluster(&self, store_url: Option<&str>) -> Result<Option<Value>> {
        let Some(store) = self.store_in(store_url)? else {
            return Ok(None);
        };
        Ok(Some(self.runtime()?.block_on(store.cluster_pools())?))
    }

    /// Declare pool `pool`'s capacity across a PostgreSQL store's cluster
    /// (`None`: no cap, the workers' slots bound it); `{"store", "pool":
    /// its cluster entry}`. `invalid_input` without a store: a local
    /// pool's capacity is `[pools.NAME] max_workers` in config.
    pub fn pool_capacity_set(
        &self,
        pool: &str,
        max_workers: Option<u32>,
        store_url: Option<&str>,
    ) -> Result<Value> {
        let Some(store) = self.store_in(store_url)? else {
            return Err(pool::capacity_needs_a_store(pool));
        };
        self.runtime()?.block_on(async {
            store.set_pool_capacity(pool, max_workers).await?;
            let cluster = store.cluster_pools().await?;
            let entry = cluster["pools"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == pool)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({ "name": pool, "capacity": max_workers }));
            Ok(serde_json::json!({ "store": cluster["store"], "pool": entry }))
        })
    }

    /// Remove queue entries and slots whose owner died or whose run ended,
    /// and reconcile the worktrees of dead isolated runs
    /// (`reconciled_teams`).
    pub fn pools_cleanup(&self) -> Result<Value> {
        let paths = &self.inner.paths;
        let mut out = self
            .pools()?
            .cleanup(&|run| team::run_is_terminal(paths, run))?;
        let teams = team::reconcile_dead(self.paths());
        out["reconciled_teams"] = serde_json::json!(teams);
        Ok(out)
    }

    // ---- Goals (DESIGN.md §9). `id` may be `latest` everywhere. ----

    /// Create a goal and run its controller to a stop (ready, not ready,
    /// blocked, out of budget, paused or cancelled). With `request.detach`,
    /// return the created goal at once while a thread of this process runs
    /// the controller (the CLI detaches into its own process instead, with
    /// [`Omk::goal_create`] and [`Omk::goal_drive`]).
    pub fn goal_run(&self, request: &goal::GoalRunRequest) -> Result<goal::GoalState> {
        let state = self.goal_create(request)?;
        if request.detach {
            let omk = self.clone();
            let id = state.goal_id.clone();
            std::thread::Builder::new()
                .name(format!("omk-{id}"))
                .spawn(move || {
                    process::block_sigpipe();
                    if let Err(e) = omk.goal_drive(&id, false) {
                        tracing::error!("goal {id}: {e}");
                    }
                })
                .map_err(|e| Error::io("start the goal thread", e))?;
            return Ok(state);
        }
        self.goal_drive(&state.goal_id, false)
    }

    /// Validate a goal request and create the goal without running it.
    pub fn goal_create(&self, request: &goal::GoalRunRequest) -> Result<goal::GoalState> {
        goal::create(self, request)
    }

    /// Run a goal's controller until it stops, or (`one_step`) for one step
    /// (`omk goal execute`).
    pub fn goal_drive(&self, id: &str, one_step: bool) -> Result<goal::GoalState> {
        goal::drive(self, id, one_step)
    }

    /// The id `latest` names: the newest goal of this handle's project, or
    /// (`all_projects`) of any project.
    pub fn goal_latest(&self, all_projects: bool) -> Result<String> {
        let scope = if all_projects {
            goal::Latest::AnyProject
        } else {
            goal::Latest::Project(self.project_dir())
        };
        Ok(goal::resolve_in(&self.inner.paths, "latest", scope)?.0)
    }

    /// Every goal, newest first.
    pub fn goal_list(&self) -> Result<goal::GoalList> {
        goal::list(&self.inner.paths)
    }

    /// A goal's full state (API.md GoalState).
    pub fn goal_show(&self, id: &str) -> Result<goal::GoalState> {
        goal::show(self, id)
    }

    /// A goal's proof (API.md GoalProof).
    pub fn goal_proof(&self, id: &str) -> Result<goal::GoalProof> {
        goal::proof(self, id)
    }

    /// The deduplicated timeline (API.md GoalReplay).
    pub fn goal_replay(&self, id: &str) -> Result<goal::GoalReplay> {
        goal::replay(self, id)
    }

    /// Budgets, use and checkpoints (API.md GoalBudgetReport).
    pub fn goal_budget(&self, id: &str) -> Result<goal::budget::BudgetReport> {
        goal::budget(self, id)
    }

    /// Raise a goal's budgets (at least one amount).
    pub fn goal_budget_add(
        &self,
        id: &str,
        time: Option<&str>,
        tokens: Option<u64>,
        usd: Option<f64>,
    ) -> Result<goal::budget::BudgetReport> {
        goal::budget_add(self, id, time, tokens, usd)
    }

    /// Stagnation detection over the recorded iterations (API.md StagnationReport).
    pub fn goal_diagnose(&self, id: &str) -> Result<goal::StagnationReport> {
        goal::diagnose(self, id)
    }

    /// Write a recovery checkpoint and propose a recovery plan.
    pub fn goal_recover(&self, id: &str) -> Result<goal::Recovery> {
        goal::recover(self, id)
    }

    /// Restore the latest (or the named) checkpoint; `git` also resets the
    /// project's work tree to the checkpoint's commit.
    pub fn goal_rollback(
        &self,
        id: &str,
        checkpoint: Option<u32>,
        git: bool,
    ) -> Result<goal::Rollback> {
        goal::rollback(self, id, checkpoint, git)
    }

    pub fn goal_pause(&self, id: &str) -> Result<goal::GoalState> {
        goal::pause(self, id)
    }

    /// Continue a paused, interrupted, out-of-budget or not-ready goal.
    pub fn goal_resume(&self, id: &str) -> Result<goal::GoalState> {
        goal::resume(self, id)
    }

    pub fn goal_cancel(&self, id: &str) -> Result<goal::GoalState> {
        goal::cancel(self, id)
    }

    /// Run the gates now and refresh the proof.
    pub fn goal_verify(&self, id: &str) -> Result<goal::GoalProof> {
        goal::verify(self, id)
    }

    // ---- Autopilot and Ralph (docs/modes.md). ----

    /// Take a task through Expansion, Planning, Execution, QA and Validation
    /// (blocking until it ends: `complete`, `failed` or `stopped`).
    pub fn autopilot_run(
        &self,
        request: &modes::autopilot::AutopilotRequest,
    ) -> Result<modes::autopilot::AutopilotState> {
        modes::autopilot::run(self, request)
    }

    /// `{"autopilots": [...]}` (API.md `/api/autopilots`), newest first.
    pub fn autopilot_list(&self) -> Result<modes::autopilot::AutopilotList> {
        modes::autopilot::list(self)
    }

    pub fn autopilot_status(&self, id: &str) -> Result<modes::autopilot::AutopilotState> {
        modes::autopilot::status(self, id)
    }

    /// Ask a running autopilot (of any process) to stop.
    pub fn autopilot_stop(&self, id: &str) -> Result<modes::autopilot::AutopilotState> {
        modes::autopilot::stop(self, id)
    }

    /// Agent turn, gates, failures fed back, until the gates pass or the
    /// iteration limit (blocking: `complete`, `exhausted`, `failed`, `stopped`).
    pub fn ralph_run(
        &self,
        request: &modes::ralph::RalphRequest,
    ) -> Result<modes::ralph::RalphState> {
        modes::ralph::run(self, request)
    }

    /// `{"ralphs": [...]}` (API.md `/api/ralphs`), newest first.
    pub fn ralph_list(&self) -> Result<modes::ralph::RalphList> {
        modes::ralph::list(self)
    }

    pub fn ralph_status(&self, id: &str) -> Result<modes::ralph::RalphState> {
        modes::ralph::status(self, id)
    }

    /// Ask a running ralph loop (of any process) to stop.
    pub fn ralph_stop(&self, id: &str) -> Result<modes::ralph::RalphState> {
        modes::ralph::stop(self, id)
    }

    // ---- Chat sessions (API.md "Chat API"). ----

    /// Open a chat: create a session (or resume `options.session`), claim it
    /// for this process and start its agent. See [`chat::engine`].
    pub fn chat_open(
        &self,
        options: chat::engine::ChatOptions,
    ) -> Result<chat::engine::ChatEngine> {
        chat::engine::ChatEngine::open(self, options)
    }

    /// Chat sessions, oldest first: this project's, or (`all_projects`) every one.
    pub fn chat_sessions(&self, all_projects: bool) -> Result<Vec<chat::SessionMeta>> {
        let project = (!all_projects).then_some(self.project_dir());
        chat::list_sessions(&self.inner.paths, project)
    }

    /// The conversation of one session.
    pub fn chat_conversation(&self, id: &str) -> Result<Vec<chat::Message>> {
        Ok(chat::read_conversation(&self.inner.paths, id)?.records)
    }

    /// Run an operation by name with JSON params: the table shared by the C
    /// ABI, MCP and REST. See [`ops`].
    pub fn call(&self, op: &str, params: &Value) -> Result<Value> {
        ops::call(self, op, params)
    }
}

/// Config errors are stored once and handed out to every caller.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::InvalidInput(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Omk>();
    }

    #[test]
    fn broken_config_fails_ops_but_doctor_reports_it() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("bad.toml");
        std::fs::write(&cfg, "[agent\n").unwrap();
        let omk = Omk::open(OpenOptions {
            state_dir: Some(d.path().join("state")),
            project_dir: Some(d.path().to_path_buf()),
            config: Some(cfg),
        })
        .unwrap();
        assert_eq!(omk.config().unwrap_err().code(), ErrorCode::InvalidInput);
        let doc = omk.doctor().unwrap();
        assert_eq!(doc["healthy"], false);
        assert_eq!(doc["checks"][0]["name"], "config");
        assert_eq!(doc["checks"][0]["status"], "error");
    }
}
