//! The operation table: op name -> JSON params -> JSON result. One table
//! serves the C ABI (`omk_call`), MCP and REST, so every surface returns the
//! same documents. Later features add rows here.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::Omk;

/// One operation.
pub struct Op {
    /// Stable name, e.g. `"metrics"` or `"team.run"`.
    pub name: &'static str,
    /// One line for listings.
    pub summary: &'static str,
    run: fn(&Omk, &Value) -> Result<Value>,
}

/// Every operation, sorted by name.
pub const OPS: &[Op] = &[
    Op {
        name: "agents.list",
        summary: "Agent profiles, where each comes from and whether it is installed",
        run: |omk, p| {
            no_params("agents.list", p)?;
            omk.agents_list()
        },
    },
    Op {
        name: "autopilot.list",
        summary: "Autopilot runs, newest first: {autopilots: [...]}",
        run: |omk, p| {
            no_params("autopilot.list", p)?;
            to_json(&omk.autopilot_list()?)
        },
    },
    Op {
        name: "autopilot.run",
        summary: "Run a task through the autopilot phases (task, name, max_agents, approval, agent)",
        run: |omk, p| {
            let r: crate::modes::autopilot::AutopilotRequest = params("autopilot.run", p)?;
            to_json(&omk.autopilot_run(&r)?)
        },
    },
    Op {
        name: "autopilot.status",
        summary: "One autopilot run's state (id)",
        run: |omk, p| to_json(&omk.autopilot_status(&params::<IdParams>("autopilot.status", p)?.id)?),
    },
    Op {
        name: "autopilot.stop",
        summary: "Ask a running autopilot to stop (id)",
        run: |omk, p| to_json(&omk.autopilot_stop(&params::<IdParams>("autopilot.stop", p)?.id)?),
    },
    Op {
        name: "chat.conversation",
        summary: "One chat session's conversation (id): {id, messages: [{ts, role, text}]}",
        run: |omk, p| {
            let req: ChatConversationParams = params("chat.conversation", p)?;
            Ok(serde_json::json!({ "id": req.id, "messages": omk.chat_conversation(&req.id)? }))
        },
    },
    Op {
        name: "chat.sessions",
        summary: "Chat sessions of the project (all_projects: every one), oldest first",
        run: |omk, p| {
            let req: ChatSessionsParams = params("chat.sessions", p)?;
            Ok(serde_json::json!({ "sessions": omk.chat_sessions(req.all_projects)? }))
        },
    },
    Op {
        name: "doctor",
        summary: "Run environment diagnostics",
        run: |omk, p| {
            no_params("doctor", p)?;
            omk.doctor()
        },
    },
    Op {
        name: "gates.list",
        summary: "The project's gates and where each came from",
        run: |omk, p| {
            no_params("gates.list", p)?;
            omk.gates_list()
        },
    },
    Op {
        name: "gates.reset",
        summary: "Reset circuit breakers (gate, or all; all_projects)",
        run: |omk, p| {
            let req: GatesResetParams = params("gates.reset", p)?;
            match (&req.gate, req.all) {
                (Some(g), false) => omk.gates_reset(Some(g), req.all_projects),
                (None, true) => omk.gates_reset(None, req.all_projects),
                _ => Err(Error::invalid(
                    "gates.reset: give exactly one of \"gate\" or \"all\": true",
                )),
            }
        },
    },
    Op {
        name: "gates.run",
        summary: "Run the project's gates (gates: names to run, default all)",
        run: |omk, p| {
            let req: GatesRunParams = params("gates.run", p)?;
            to_json(&omk.gates_run(&req.gates)?)
        },
    },
    Op {
        name: "gates.status",
        summary: "Circuit breaker states (all_projects)",
        run: |omk, p| {
            let req: GatesStatusParams = params("gates.status", p)?;
            omk.gates_status(req.all_projects)
        },
    },
    Op {
        name: "goal.budget",
        summary: "A goal's budget report (id, default latest)",
        run: |omk, p| to_json(&omk.goal_budget(&goal_id("goal.budget", p)?)?),
    },
    Op {
        name: "goal.budget_add",
        summary: "Raise a goal's budgets (id, time, tokens, usd)",
        run: |omk, p| {
            let r: GoalBudgetAddParams = params("goal.budget_add", p)?;
            to_json(&omk.goal_budget_add(&r.id, r.time.as_deref(), r.tokens, r.usd)?)
        },
    },
    Op {
        name: "goal.cancel",
        summary: "Cancel a goal (id)",
        run: |omk, p| to_json(&omk.goal_cancel(&goal_id("goal.cancel", p)?)?),
    },
    Op {
        name: "goal.diagnose",
        summary: "Stagnation report of a goal (id)",
        run: |omk, p| to_json(&omk.goal_diagnose(&goal_id("goal.diagnose", p)?)?),
    },
    Op {
        name: "goal.execute",
        summary: "Run one controller step of a goal (id)",
        run: |omk, p| to_json(&omk.goal_drive(&goal_id("goal.execute", p)?, true)?),
    },
    Op {
        name: "goal.list",
        summary: "Every goal, newest first",
        run: |omk, p| {
            no_params("goal.list", p)?;
            to_json(&omk.goal_list()?)
        },
    },
    Op {
        name: "goal.pause",
        summary: "Pause a goal (id)",
        run: |omk, p| to_json(&omk.goal_pause(&goal_id("goal.pause", p)?)?),
    },
    Op {
        name: "goal.proof",
        summary: "A goal's proof (id)",
        run: |omk, p| to_json(&omk.goal_proof(&goal_id("goal.proof", p)?)?),
    },
    Op {
        name: "goal.recover",
        summary: "Write a recovery checkpoint and plan (id)",
        run: |omk, p| to_json(&omk.goal_recover(&goal_id("goal.recover", p)?)?),
    },
    Op {
        name: "goal.replay",
        summary: "A goal's deduplicated timeline (id)",
        run: |omk, p| to_json(&omk.goal_replay(&goal_id("goal.replay", p)?)?),
    },
    Op {
        name: "goal.resume",
        summary: "Continue a goal (id)",
        run: |omk, p| to_json(&omk.goal_resume(&goal_id("goal.resume", p)?)?),
    },
    Op {
        name: "goal.rollback",
        summary: "Restore a checkpoint (id, checkpoint, git)",
        run: |omk, p| {
            let r: GoalRollbackParams = params("goal.rollback", p)?;
            to_json(&omk.goal_rollback(&r.id, r.checkpoint, r.git)?)
        },
    },
    Op {
        name: "goal.run",
        summary: "Create and run a goal (outcome, until_ready, budget_time, budget_tokens, budget_usd, max_agents, approval, detach)",
        run: |omk, p| {
            let r: crate::goal::GoalRunRequest = params("goal.run", p)?;
            to_json(&omk.goal_run(&r)?)
        },
    },
    Op {
        name: "goal.show",
        summary: "A goal's state (id)",
        run: |omk, p| to_json(&omk.goal_show(&goal_id("goal.show", p)?)?),
    },
    Op {
        name: "goal.verify",
        summary: "Run a goal's gates and refresh its proof (id)",
        run: |omk, p| to_json(&omk.goal_verify(&goal_id("goal.verify", p)?)?),
    },
    Op {
        name: "health",
        summary: "Health summary (API.md /api/health)",
        run: |omk, p| {
            no_params("health", p)?;
            omk.health()
        },
    },
    Op {
        name: "metrics",
        summary: "Runtime counters (API.md /api/metrics)",
        run: |omk, p| {
            no_params("metrics", p)?;
            omk.metrics()
        },
    },
    Op {
        name: "pools.cleanup",
        summary: "Remove stale pool queue entries and orphaned slots",
        run: |omk, p| {
            no_params("pools.cleanup", p)?;
            omk.pools_cleanup()
        },
    },
    Op {
        name: "pools.cluster",
        summary: "A PostgreSQL store's cluster: capacity and load per pool, its workers (store); null without a store",
        run: |omk, p| {
            let p = params::<StoreParams>("pools.cluster", p)?;
            Ok(omk.pools_cluster(p.store.as_deref())?.unwrap_or(Value::Null))
        },
    },
    Op {
        name: "pools.set",
        summary: "Declare a pool's capacity across a PostgreSQL store's cluster (pool, max_workers or unlimited, store)",
        run: |omk, p| {
            let p = params::<PoolSetParams>("pools.set", p)?;
            let cap = match (p.max_workers, p.unlimited) {
                (Some(n), false) => Some(n),
                (None, true) => None,
                _ => {
                    return Err(Error::invalid(
                        "pools.set: give exactly one of max_workers and unlimited: true",
                    ))
                }
            };
            omk.pool_capacity_set(&p.pool, cap, p.store.as_deref())
        },
    },
    Op {
        name: "pools.status",
        summary: "Pool utilisation and counters",
        run: |omk, p| {
            no_params("pools.status", p)?;
            omk.pools_status()
        },
    },
    Op {
        name: "ralph.list",
        summary: "Ralph runs, newest first: {ralphs: [...]}",
        run: |omk, p| {
            no_params("ralph.list", p)?;
            to_json(&omk.ralph_list()?)
        },
    },
    Op {
        name: "ralph.run",
        summary: "Agent turn, gates, feedback, repeat (task, max_iterations, name, approval)",
        run: |omk, p| {
            let r: crate::modes::ralph::RalphRequest = params("ralph.run", p)?;
            to_json(&omk.ralph_run(&r)?)
        },
    },
    Op {
        name: "ralph.status",
        summary: "One ralph run's state (id)",
        run: |omk, p| to_json(&omk.ralph_status(&params::<IdParams>("ralph.status", p)?.id)?),
    },
    Op {
        name: "ralph.stop",
        summary: "Ask a running ralph loop to stop (id)",
        run: |omk, p| to_json(&omk.ralph_stop(&params::<IdParams>("ralph.stop", p)?.id)?),
    },
    Op {
        name: "team.gc",
        summary: "Delete the refs and branches of isolated teams ended longer ago than older_than (default 14d; dry_run)",
        run: |omk, p| {
            let req: GcParams = params("team.gc", p)?;
            to_json(&omk.team_gc(&req.older_than, req.dry_run)?)
        },
    },
    Op {
        name: "team.list",
        summary: "Every team document",
        run: |omk, p| {
            no_params("team.list", p)?;
            team_list_json(omk)
        },
    },
    Op {
        name: "team.run",
        summary: "Run a team (spec, task, name, subtasks, workdir, approval, pool, detach)",
        run: |omk, p| {
            let req: crate::team::TeamRunRequest = params("team.run", p)?;
            to_json(&omk.team_run(&req)?)
        },
    },
    Op {
        name: "team.shutdown",
        summary: "Stop a team (name, force)",
        run: |omk, p| {
            let req: ShutdownParams = params("team.shutdown", p)?;
            to_json(&omk.team_shutdown(&req.name, req.force)?)
        },
    },
    Op {
        name: "team.status",
        summary: "One team document (name)",
        run: |omk, p| {
            let req: NameParams = params("team.status", p)?;
            to_json(&omk.team_status(&req.name)?)
        },
    },
    Op {
        name: "version",
        summary: "The omk version",
        run: |_, p| {
            no_params("version", p)?;
            Ok(serde_json::json!({ "version": crate::VERSION }))
        },
    },
];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatConversationParams {
    id: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChatSessionsParams {
    #[serde(default)]
    all_projects: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesRunParams {
    #[serde(default)]
    gates: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesStatusParams {
    #[serde(default)]
    all_projects: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesResetParams {
    #[serde(default)]
    gate: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    all_projects: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GcParams {
    #[serde(default = "default_gc_age")]
    older_than: String,
    #[serde(default)]
    dry_run: bool,
}

fn default_gc_age() -> String {
    "14d".into()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownParams {
    name: String,
    #[serde(default)]
    force: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreParams {
    /// A PostgreSQL store's URL (default: the configured one).
    #[serde(default)]
    store: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSetParams {
    pool: String,
    #[serde(default)]
    max_workers: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    store: Option<String>,
}

/// Decode params strictly: unknown or mistyped fields are invalid input.
fn params<T: serde::de::DeserializeOwned>(op: &str, p: &Value) -> Result<T> {
    let p = if p.is_null() {
        Value::Object(Default::default())
    } else {
        p.clone()
    };
    serde_json::from_value(p).map_err(|e| Error::invalid(format!("{op}: invalid params: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(format!("cannot encode result: {e}")))
}

/// `{"teams": [...], "errors": [{"name", "error"}]}`.
pub fn team_list_json(omk: &Omk) -> Result<Value> {
    let list = omk.team_list()?;
    Ok(serde_json::json!({
        "teams": list.teams,
        "errors": list.errors.iter().map(|(n, e)| serde_json::json!({"name": n, "error": e.to_json()})).collect::<Vec<_>>(),
    }))
}

/// Find an op by name.
pub fn find(name: &str) -> Option<&'static Op> {
    OPS.iter().find(|op| op.name == name)
}

/// Run `op` with `params` (`null` or an object).
pub fn call(omk: &Omk, op: &str, params: &Value) -> Result<Value> {
    let found = find(op).ok_or_else(|| {
        let names: Vec<&str> = OPS.iter().map(|o| o.name).collect();
        Error::NotFound(format!(
            "unknown operation {op:?}; known: {}",
            names.join(", ")
        ))
    })?;
    (found.run)(omk, params)
}

fn no_params(op: &str, params: &Value) -> Result<()> {
    match params {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        Value::Object(m) => Err(Error::invalid(format!(
            "{op} takes no parameters; got {}",
            m.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        other => Err(Error::invalid(format!(
            "{op} params must be a JSON object or null, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        let names: Vec<&str> = OPS.iter().map(|o| o.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn dispatch_and_param_checks() {
        let d = tempfile::tempdir().unwrap();
        let omk = Omk::open(crate::OpenOptions {
            state_dir: Some(d.path().join("s")),
            project_dir: Some(d.path().to_path_buf()),
            config: None,
        })
        .unwrap();
        assert_eq!(
            call(&omk, "version", &Value::Null).unwrap()["version"],
            crate::VERSION
        );
        assert_eq!(
            call(&omk, "metrics", &serde_json::json!({})).unwrap()["total_spawns"],
            0
        );
        let e = call(&omk, "nope", &Value::Null).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::NotFound);
        let e = call(&omk, "metrics", &serde_json::json!({"x": 1})).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        let e = call(&omk, "metrics", &serde_json::json!([1])).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        // Cluster pools: none without a store; a capacity needs one, and
        // exactly one of a number and `unlimited`.
        if std::env::var_os("OMK_STORE").is_none() {
            assert_eq!(
                call(&omk, "pools.cluster", &Value::Null).unwrap(),
                Value::Null
            );
            let e = call(
                &omk,
                "pools.set",
                &serde_json::json!({"pool": "gpu", "max_workers": 2}),
            )
            .unwrap_err();
            assert!(e.to_string().contains("[pools.gpu] max_workers"), "{e}");
        }
        for bad in [
            serde_json::json!({"pool": "gpu"}),
            serde_json::json!({"pool": "gpu", "max_workers": 2, "unlimited": true}),
            serde_json::json!({"pool": "gpu", "max_workers": -1}),
        ] {
            let e = call(&omk, "pools.set", &bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput, "{bad}: {e}");
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GoalIdParams {
    #[serde(default = "latest")]
    id: String,
}

fn latest() -> String {
    "latest".into()
}

/// The `id` param of a goal op (default `latest`).
fn goal_id(op: &str, p: &Value) -> Result<String> {
    let r: GoalIdParams = params(op, p)?;
    Ok(r.id)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GoalBudgetAddParams {
    #[serde(default = "latest")]
    id: String,
    time: Option<String>,
    tokens: Option<u64>,
    usd: Option<f64>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GoalRollbackParams {
    #[serde(default = "latest")]
    id: String,
    checkpoint: Option<u32>,
    #[serde(default)]
    git: bool,
}
