//! `omk mcp-server`: omk's operations as MCP tools over stdio, on rmcp.
//!
//! The four API.md tools (`omk_team_run`, `omk_team_status`,
//! `omk_team_shutdown`, `omk_doctor`) answer with exactly their API.md fields
//! plus `document` (the team document or doctor report); the read-only
//! extras answer with the op's document. Every result is text and
//! `structuredContent`, and every tool declares an `outputSchema`. Failures
//! that produced a document (a team that failed) are tool results with
//! `isError: true`, not protocol errors.
//!
//! The tools call omk-core directly, on blocking threads. stdout carries the
//! protocol only: lines read from stdin go through [`frame`] first, which
//! answers malformed JSON with `-32700` (`id: null`) and refuses oversized
//! lines without buffering them, so rmcp only ever sees well-formed JSON.

use std::sync::Arc;

use omk_core::team::{TeamDoc, TeamRunRequest};
use omk_core::Omk;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::frame;

/// `omk_team_run` parameters (API.md, plus `detach`, `agent` and `isolation`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamRunParams {
    /// Worker spec, for example 3:executor; N:role[@agent] terms joined by
    /// ',' mix agents, e.g. 2:executor@claude,1:reviewer@kimi-acp.
    pub spec: String,
    /// Task description.
    pub task: String,
    /// Optional team name.
    #[serde(default)]
    pub name: Option<String>,
    /// Return as soon as the team is prepared; it runs on in the server.
    #[serde(default)]
    pub detach: bool,
    /// Agent profile of spec terms without @agent (default: [team] agent).
    #[serde(default)]
    pub agent: Option<String>,
    /// worktree (a git worktree per worker, integrated by omk onto branch
    /// omk/<team>; default in a git work tree) or none.
    #[serde(default)]
    pub isolation: Option<String>,
    /// With isolation worktree: branch (default) or apply (also into the
    /// checkout once the gates passed, if it did not change meanwhile).
    #[serde(default)]
    pub deliver: Option<String>,
}

/// `omk_team_run` result: the API.md fields, the team's name and document.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TeamRunResult {
    /// `completed` only when the team completed; else its phase (`failed`,
    /// `shutdown`, `interrupted`), or `running` for a detached run.
    pub status: String,
    /// Human-readable report.
    pub stdout: String,
    /// Warnings (failed tasks and their errors).
    pub stderr: String,
    pub spec: String,
    pub task: String,
    /// The team's name.
    pub team: String,
    /// The team document (API.md `/api/teams` entry).
    pub document: Value,
}

/// A team name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameParams {
    /// Team name.
    pub name: String,
}

/// `omk_team_status` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TeamStatusResult {
    /// `ok`, or `error` (see stderr).
    pub status: String,
    pub team: String,
    pub stdout: String,
    pub stderr: String,
    /// The team document, when it could be read.
    pub document: Option<Value>,
}

/// `omk_team_shutdown` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownParams {
    /// Team name.
    pub name: String,
    /// Force shutdown handling. Defaults to false.
    #[serde(default)]
    pub force: bool,
}

/// `omk_team_shutdown` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TeamShutdownResult {
    /// `shutdown` (this call stopped the team), `not_running` (the team
    /// had already ended: nothing was stopped; see `document.phase`), or
    /// `error` (see stderr).
    pub status: String,
    pub team: String,
    pub force: bool,
    pub stdout: String,
    pub stderr: String,
    pub document: Option<Value>,
}

/// `omk_doctor` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DoctorResult {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub healthy: bool,
    pub stdout: String,
    pub stderr: String,
    /// The full doctor report.
    pub document: Value,
}

/// No parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `omk_pools_cluster` parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolsClusterParams {
    /// A PostgreSQL store's URL (default: the configured store).
    #[serde(default)]
    pub store: Option<String>,
}

/// `omk_pools_set` parameters: `max_workers` or `unlimited`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolsSetParams {
    /// The pool.
    pub pool: String,
    /// The most of its tasks (and leased slots) at once on all hosts.
    #[serde(default)]
    pub max_workers: Option<u32>,
    /// No cap: only the slots of the workers serving the pool bound it.
    #[serde(default)]
    pub unlimited: bool,
    /// A PostgreSQL store's URL (default: the configured store).
    #[serde(default)]
    pub store: Option<String>,
}

/// A goal id (`latest` by default).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalParams {
    /// Goal id, or `latest` (the default).
    #[serde(default)]
    pub id: Option<String>,
}

/// `omk_gates_status` parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesStatusParams {
    /// Every project's breakers, not only this project's.
    #[serde(default)]
    pub all_projects: bool,
}

/// `omk_gates_run` parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesRunParams {
    /// Gate names to run; all when empty.
    #[serde(default)]
    pub gates: Vec<String>,
}

/// A document as the op returns it (see the tool's description).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transparent)]
pub struct Document(pub serde_json::Map<String, Value>);

/// The MCP server: one omk handle, shared by every request.
#[derive(Clone)]
pub struct OmkServer {
    omk: Omk,
    tool_router: ToolRouter<Self>,
}

fn structured<T: Serialize>(value: &T, is_error: bool) -> Result<CallToolResult, ErrorData> {
    let v = serde_json::to_value(value)
        .map_err(|e| ErrorData::internal_error(format!("cannot encode the result: {e}"), None))?;
    Ok(if is_error {
        CallToolResult::structured_error(v)
    } else {
        CallToolResult::structured(v)
    })
}

/// Run a blocking omk call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> omk_core::Result<T> + Send + 'static,
) -> omk_core::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(omk_core::Error::Agent(format!(
            "internal error: the call panicked: {e}"
        )))
    })
}

/// An op's document as a tool result; its error as an `isError` result
/// that names the error code.
async fn op_result(omk: Omk, op: &'static str, params: Value) -> Result<CallToolResult, ErrorData> {
    match blocking(move || omk_core::ops::call(&omk, op, &params)).await {
        Ok(Value::Object(m)) => structured(&Document(m), false),
        Ok(other) => structured(&json!({ "result": other }), false),
        Err(e) => structured(&json!({ "error": e.to_json() }), true),
    }
}

fn phase_name(doc: &TeamDoc) -> String {
    serde_json::to_value(doc.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_lowercase))
        .unwrap_or_default()
}

/// The team as a short report (stdout) and its failures (stderr).
fn team_report(doc: &TeamDoc) -> (String, String) {
    let done = doc
        .tasks
        .iter()
        .filter(|t| t.status == omk_core::team::doc::TaskStatus::Completed)
        .count();
    let mut out = format!(
        "team {}: {} ({done} of {} tasks completed, {} tokens)\n",
        doc.name,
        phase_name(doc),
        doc.tasks.len(),
        doc.tokens
    );
    let mut err = String::new();
    for t in &doc.tasks {
        let status = serde_json::to_value(t.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!("- {} [{status}] {}\n", t.id, t.title));
        if let Some(s) = &t.summary {
            out.push_str(&format!("  {}\n", s.replace('\n', " ")));
        }
        for e in &t.errors {
            err.push_str(&format!("{}: {e}\n", t.id));
        }
    }
    if let Some(r) = &doc.reason {
        err.push_str(&format!("{r}\n"));
    }
    (out, err)
}

fn doc_value(doc: &TeamDoc) -> Value {
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

#[tool_router]
impl OmkServer {
    pub fn new(omk: Omk) -> Self {
        Self {
            omk,
            tool_router: Self::tool_router(),
        }
    }

    /// Run a team; blocking runs report each finished task as progress and
    /// are shut down when the client cancels the request.
    #[tool(
        description = "Run a scheduler-backed Kimi team through the Wire runtime. Blocks until the team ends (progress per finished task; cancelling the request shuts the team down) unless detach is true.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<TeamRunResult>()
    )]
    async fn omk_team_run(
        &self,
        Parameters(p): Parameters<TeamRunParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = TeamRunRequest {
            spec: p.spec.clone(),
            task: p.task.clone(),
            name: p.name.clone(),
            detach: p.detach,
            agent: p.agent.clone(),
            isolation: p.isolation.clone(),
            deliver: p.deliver.clone(),
            ..Default::default()
        };
        let failed = |e: omk_core::Error| {
            structured(
                &TeamRunResult {
                    status: "error".into(),
                    stdout: String::new(),
                    stderr: format!("{} ({})", e, e.code().as_str()),
                    spec: p.spec.clone(),
                    task: p.task.clone(),
                    team: p.name.clone().unwrap_or_default(),
                    document: Value::Null,
                },
                true,
            )
        };
        let omk = self.omk.clone();
        let prepared = match blocking(move || omk.team_prepare(&request)).await {
            Ok(doc) => doc,
            Err(e) => return failed(e),
        };
        let name = prepared.name.clone();
        if p.detach {
            let omk = self.omk.clone();
            let team = name.clone();
            std::thread::Builder::new()
                .name(format!("omk-mcp-{team}"))
                .spawn(move || {
                    if let Err(e) = omk.team_supervise(&team, None, false) {
                        tracing::error!("team {team}: {e}");
                    }
                })
                .map_err(|e| ErrorData::internal_error(format!("start the team: {e}"), None))?;
            let (stdout, stderr) = team_report(&prepared);
            return structured(
                &TeamRunResult {
                    status: "running".into(),
                    stdout,
                    stderr,
                    spec: p.spec,
                    task: p.task,
                    team: name,
                    document: doc_value(&prepared),
                },
                false,
            );
        }
        let (observer, sent) = match progress_observer(&ctx) {
            Some((o, sent)) => (Some(o), Some(sent)),
            None => (None, None),
        };
        let omk = self.omk.clone();
        let team = name.clone();
        let run = blocking(move || omk.team_supervise(&team, observer, false));
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = ctx.ct.cancelled() => {
                // The client gave up: stop the team, let the run record it.
                let omk = self.omk.clone();
                let team = name.clone();
                let _ = blocking(move || omk.team_shutdown(&team, false)).await;
                run.await
            }
        };
        // Every progress notification goes out before the result: the
        // run is over, so the observer (and its sender) are gone and the
        // sending task ends once it has sent what was queued.
        if let Some(sent) = sent {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sent).await;
        }
        match result {
            Ok(doc) => {
                let (stdout, stderr) = team_report(&doc);
                let completed = doc.phase == omk_core::team::doc::Phase::Completed;
                structured(
                    &TeamRunResult {
                        status: if completed {
                            "completed".into()
                        } else {
                            phase_name(&doc)
                        },
                        stdout,
                        stderr,
                        spec: p.spec,
                        task: p.task,
                        team: name,
                        document: doc_value(&doc),
                    },
                    !completed,
                )
            }
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Get team status.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<TeamStatusResult>()
    )]
    async fn omk_team_status(
        &self,
        Parameters(p): Parameters<NameParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let omk = self.omk.clone();
        let name = p.name.clone();
        match blocking(move || omk.team_status(&name)).await {
            Ok(doc) => {
                let (stdout, stderr) = team_report(&doc);
                structured(
                    &TeamStatusResult {
                        status: "ok".into(),
                        team: p.name,
                        stdout,
                        stderr,
                        document: Some(doc_value(&doc)),
                    },
                    false,
                )
            }
            Err(e) => structured(
                &TeamStatusResult {
                    status: "error".into(),
                    team: p.name,
                    stdout: String::new(),
                    stderr: format!("{} ({})", e, e.code().as_str()),
                    document: None,
                },
                true,
            ),
        }
    }

    #[tool(
        description = "Shutdown or mark a team interrupted.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<TeamShutdownResult>()
    )]
    async fn omk_team_shutdown(
        &self,
        Parameters(p): Parameters<ShutdownParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let omk = self.omk.clone();
        let name = p.name.clone();
        let force = p.force;
        match blocking(move || omk.team_shutdown(&name, force)).await {
            Ok(r) => {
                let doc = r.document;
                let (stdout, stderr) = team_report(&doc);
                let stdout = format!("{}\n{stdout}", r.outcome);
                structured(
                    &TeamShutdownResult {
                        // Honest: `shutdown` only when this call stopped
                        // the team; `not_running` when it had already ended.
                        status: if r.stopped { "shutdown" } else { "not_running" }.into(),
                        team: p.name,
                        force: p.force,
                        stdout,
                        stderr,
                        document: Some(doc_value(&doc)),
                    },
                    false,
                )
            }
            Err(e) => structured(
                &TeamShutdownResult {
                    status: "error".into(),
                    team: p.name,
                    force: p.force,
                    stdout: String::new(),
                    stderr: format!("{} ({})", e, e.code().as_str()),
                    document: None,
                },
                true,
            ),
        }
    }

    #[tool(
        description = "Run environment diagnostics.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<DoctorResult>()
    )]
    async fn omk_doctor(
        &self,
        Parameters(_): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let omk = self.omk.clone();
        match blocking(move || omk.doctor()).await {
            Ok(report) => {
                let healthy = report["status"] != "error" && report["healthy"] != false;
                let mut stdout = String::new();
                let mut stderr = String::new();
                for c in report["checks"].as_array().into_iter().flatten() {
                    let line = format!(
                        "[{}] {}: {}\n",
                        c["status"].as_str().unwrap_or("?"),
                        c["name"].as_str().unwrap_or("?"),
                        c["detail"].as_str().unwrap_or("")
                    );
                    if c["status"] == "ok" {
                        stdout.push_str(&line);
                    } else {
                        stdout.push_str(&line);
                        stderr.push_str(&line);
                    }
                }
                structured(
                    &DoctorResult {
                        status: if healthy { "healthy" } else { "unhealthy" }.into(),
                        healthy,
                        stdout,
                        stderr,
                        document: report,
                    },
                    false,
                )
            }
            Err(e) => structured(&json!({ "error": e.to_json() }), true),
        }
    }

    #[tool(
        description = "Every team: {teams: [team document], errors: [{name, error}]} (omk team list --json).",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_team_list(
        &self,
        Parameters(_): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        op_result(self.omk.clone(), "team.list", Value::Null).await
    }

    #[tool(
        description = "Goals, newest first: {goals: [GoalState], unreadable: [...]}.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_goal_list(
        &self,
        Parameters(_): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        op_result(self.omk.clone(), "goal.list", Value::Null).await
    }

    #[tool(
        description = "A goal's state (API.md GoalState); id defaults to latest.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_goal_show(
        &self,
        Parameters(p): Parameters<GoalParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = p.id.unwrap_or_else(|| "latest".into());
        op_result(self.omk.clone(), "goal.show", json!({ "id": id })).await
    }

    #[tool(
        description = "A goal's proof (API.md GoalProof): ready only with every task done and every required gate passing; known_gaps says what is missing. id defaults to latest.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_goal_proof(
        &self,
        Parameters(p): Parameters<GoalParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = p.id.unwrap_or_else(|| "latest".into());
        op_result(self.omk.clone(), "goal.proof", json!({ "id": id })).await
    }

    #[tool(
        description = "Circuit breakers of the project's gates: {breakers: [...]} (API.md Gates).",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_gates_status(
        &self,
        Parameters(p): Parameters<GatesStatusParams>,
    ) -> Result<CallToolResult, ErrorData> {
        op_result(
            self.omk.clone(),
            "gates.status",
            json!({ "all_projects": p.all_projects }),
        )
        .await
    }

    #[tool(
        description = "Run the project's verification gates (all, or those named) through their breakers; passed is true when every required gate passed.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_gates_run(
        &self,
        Parameters(p): Parameters<GatesRunParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let omk = self.omk.clone();
        let gates = p.gates;
        match blocking(move || omk.gates_run(&gates)).await {
            Ok(report) => {
                let passed = report.passed;
                let v = serde_json::to_value(&report).unwrap_or(Value::Null);
                structured(&v, !passed)
            }
            Err(e) => structured(&json!({ "error": e.to_json() }), true),
        }
    }

    #[tool(
        description = "Agent pools with live numbers: {pools: [...]} (API.md Pools).",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_pools_status(
        &self,
        Parameters(_): Parameters<NoParams>,
    ) -> Result<CallToolResult, ErrorData> {
        op_result(self.omk.clone(), "pools.status", Value::Null).await
    }

    #[tool(
        description = "A PostgreSQL store's cluster: capacity and load per pool and its live workers ({store, pools, workers}); {result: null} without a store.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_pools_cluster(
        &self,
        Parameters(p): Parameters<PoolsClusterParams>,
    ) -> Result<CallToolResult, ErrorData> {
        op_result(
            self.omk.clone(),
            "pools.cluster",
            json!({ "store": p.store }),
        )
        .await
    }

    #[tool(
        description = "Declare a pool's capacity across a PostgreSQL store's cluster (max_workers, or unlimited: true); {store, pool}.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Document>()
    )]
    async fn omk_pools_set(
        &self,
        Parameters(p): Parameters<PoolsSetParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let params = json!({ "pool": p.pool, "max_workers": p.max_workers,
                             "unlimited": p.unlimited, "store": p.store });
        op_result(self.omk.clone(), "pools.set", params).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OmkServer {
    /// Like the generated dispatch, but an unknown tool is an error that
    /// names it and the tools there are.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        if self.tool_router.get(&request.name).is_none() {
            let known: Vec<String> = self
                .tool_router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; omk has: {}",
                    request.name,
                    known.join(", ")
                ),
                None,
            ));
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("omk", omk_core::VERSION))
            .with_instructions(
                "omk runs teams of AI coding agents and checks their work with verification gates. \
                 omk_team_run starts a team; omk_team_status and omk_goal_proof report evidence.",
            )
    }
}

/// Progress notifications, one per finished task, when the client asked
/// for them (a progress token in the request's `_meta`): the observer, and
/// the task that sends them in order, which ends once the observer is
/// dropped and everything queued was sent.
fn progress_observer(
    ctx: &RequestContext<RoleServer>,
) -> Option<(
    omk_core::team::supervisor::Observer,
    tokio::task::JoinHandle<()>,
)> {
    let token = ctx.meta.get_progress_token()?;
    let peer = ctx.peer.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
    let sender = tokio::spawn(async move {
        while let Some(param) = rx.recv().await {
            let _ = peer.notify_progress(param).await;
        }
    });
    let reported = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let observer: omk_core::team::supervisor::Observer = Arc::new(move |doc: &TeamDoc| {
        use omk_core::team::doc::TaskStatus;
        let finished = doc
            .tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Failed))
            .count();
        let before = reported.fetch_max(finished, std::sync::atomic::Ordering::SeqCst);
        if finished <= before {
            return;
        }
        let last = doc
            .tasks
            .iter()
            .rev()
            .find(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Failed))
            .map(|t| t.id.clone())
            .unwrap_or_default();
        let param = ProgressNotificationParam::new(token.clone(), finished as f64)
            .with_total(doc.tasks.len() as f64)
            .with_message(format!(
                "{finished} of {} tasks finished (last: {last})",
                doc.tasks.len()
            ));
        let _ = tx.send(param);
    });
    Some((observer, sender))
}

/// Serve on stdin/stdout until the client closes stdin.
pub fn serve(omk: Omk) -> omk_core::Result<()> {
    let rt = crate::async_runtime("MCP server")?;
    rt.block_on(async move {
        let (transport, writer) = frame::stdio();
        let server = OmkServer::new(omk)
            .serve(transport)
            .await
            .map_err(|e| crate::chat::io_err("start the MCP session", e.to_string()))?;
        let _ = server.waiting().await;
        // Let the last answers reach stdout.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
        Ok(())
    })
}
