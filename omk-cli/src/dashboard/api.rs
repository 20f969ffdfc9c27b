//! The JSON routes and the OpenAPI document generated from them.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use omk_core::{Error, Omk};
use serde_json::{json, Value};
use utoipa::OpenApi;

use super::Shared;

/// An error as JSON `{"error": {"code", "message"}}` with its HTTP status.
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = e.code();
        let status = match code.as_str() {
            "invalid_input" => StatusCode::BAD_REQUEST,
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" => StatusCode::CONFLICT,
            "timeout" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            code: code.as_str(),
            message: e.to_string(),
        }
    }
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Run a blocking omk call off the async threads.
async fn call<T: serde::Serialize + Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&Omk) -> omk_core::Result<T> + Send + 'static,
) -> ApiResult {
    let omk = state.omk.clone();
    let doc = tokio::task::spawn_blocking(move || f(&omk))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "panic",
            message: format!("the request handler failed: {e}"),
        })??;
    serde_json::to_value(doc).map(Json).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "io",
        message: format!("cannot encode the document: {e}"),
    })
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/teams", get(teams))
        .route("/api/teams/{name}", get(team))
        .route("/api/autopilots", get(autopilots))
        .route("/api/ralphs", get(ralphs))
        .route("/api/metrics", get(metrics))
        .route("/api/goals", get(goals))
        .route("/api/goals/{id}", get(goal))
        .route("/api/goals/{id}/proof", get(goal_proof))
        .route("/api/goals/{id}/replay", get(goal_replay))
        .route("/api/goals/{id}/budget", get(goal_budget))
        .route("/api/goals/{id}/diagnose", get(goal_diagnose))
        .route("/api/gates", get(gates))
        .route("/api/pools", get(pools))
        .route("/metrics", get(prometheus))
        .route("/api/openapi.json", get(openapi))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "omk dashboard API",
        description = "Teams, goals, gates, pools and metrics of one omk state directory. With a token, send Authorization: Bearer <token>."
    ),
    paths(
        health,
        teams,
        team,
        autopilots,
        ralphs,
        metrics,
        goals,
        goal,
        goal_proof,
        goal_replay,
        goal_budget,
        goal_diagnose,
        gates,
        pools,
        prometheus,
        openapi
    )
)]
struct ApiDoc;

/// Health: `status` ok or degraded (HTTP 503), the crate version, the agent
/// check (cached probe) and free disk.
#[utoipa::path(get, path = "/api/health", responses(
    (status = 200, description = "healthy", body = Object),
    (status = 503, description = "degraded: see checks", body = Object),
))]
async fn health(State(s): State<Shared>) -> Result<Response, ApiError> {
    let Json(v) = call(&s, |o| o.health()).await?;
    let status = if v["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(v)).into_response())
}

/// Every team: `{"teams": [team document], "errors": [{name, error}]}`.
#[utoipa::path(get, path = "/api/teams", responses((status = 200, description = "teams", body = Object)))]
async fn teams(State(s): State<Shared>) -> Result<Response, ApiError> {
    let state = s.clone();
    let body = tokio::task::spawn_blocking(move || state.teams.list(&state.omk))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "panic",
            message: format!("the request handler failed: {e}"),
        })??;
    let Some(cluster) = &s.cluster else {
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    };
    // The store's teams after the local ones.
    let mut doc: Value = serde_json::from_slice(&body).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "io",
        message: format!("cannot read the team list: {e}"),
    })?;
    if let Some(list) = doc["teams"].as_array_mut() {
        list.extend(cluster.teams().await?);
    }
    Ok(Json(doc).into_response())
}

/// One team's document.
#[utoipa::path(get, path = "/api/teams/{name}",
    params(("name" = String, Path, description = "team name: letters, digits, '.', '_', '-', at most 64, not starting with a symbol", pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
    responses(
        (status = 200, description = "the team document", body = Object),
        (status = 400, description = "invalid name", body = Object),
        (status = 404, description = "no such team", body = Object),
    ))]
async fn team(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let local = {
        let name = name.clone();
        call(&s, move |o| o.team_status(&name)).await
    };
    match (local, &s.cluster) {
        // Not here: maybe in the store.
        (Err(e), Some(cluster)) if e.code == "not_found" => match cluster.team(&name).await? {
            Some(doc) => Ok(Json(doc)),
            None => Err(e),
        },
        (result, _) => result,
    }
}

/// `{"autopilots": [...]}`.
#[utoipa::path(get, path = "/api/autopilots", responses((status = 200, description = "autopilot runs", body = Object)))]
async fn autopilots(State(s): State<Shared>) -> ApiResult {
    call(&s, |o| o.autopilot_list()).await
}

/// `{"ralphs": [...]}`.
#[utoipa::path(get, path = "/api/ralphs", responses((status = 200, description = "ralph runs", body = Object)))]
async fn ralphs(State(s): State<Shared>) -> ApiResult {
    call(&s, |o| o.ralph_list()).await
}

/// `{"metrics": {...}}`: the runtime counters.
#[utoipa::path(get, path = "/api/metrics", responses((status = 200, description = "counters", body = Object)))]
async fn metrics(State(s): State<Shared>) -> ApiResult {
    let Json(mut doc) = call(&s, |o| Ok(json!({ "metrics": o.metrics()? }))).await?;
    if let Some(cluster) = &s.cluster {
        cluster.add_counters(&mut doc["metrics"]).await?;
    }
    Ok(Json(doc))
}

/// Goals, newest first.
#[utoipa::path(get, path = "/api/goals", responses((status = 200, description = "goals", body = Object)))]
async fn goals(State(s): State<Shared>) -> ApiResult {
    call(&s, |o| o.goal_list()).await
}

macro_rules! goal_route {
    ($name:ident, $path:literal, $what:literal, $method:ident) => {
        #[doc = $what]
        #[utoipa::path(get, path = $path,
                            params(("id" = String, Path, description = "goal id, or latest", pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
                            responses(
                                (status = 200, description = $what, body = Object),
                                (status = 400, description = "invalid id", body = Object),
                                (status = 404, description = "no such goal", body = Object),
                            ))]
        async fn $name(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult {
            call(&s, move |o| o.$method(&id)).await
        }
    };
}

goal_route!(
    goal,
    "/api/goals/{id}",
    "The goal's state (GoalState).",
    goal_show
);
goal_route!(
    goal_proof,
    "/api/goals/{id}/proof",
    "The goal's proof (GoalProof).",
    goal_proof
);
goal_route!(
    goal_replay,
    "/api/goals/{id}/replay",
    "The deduplicated timeline (GoalReplay).",
    goal_replay
);
goal_route!(
    goal_budget,
    "/api/goals/{id}/budget",
    "Budgets and use (GoalBudgetReport).",
    goal_budget
);
goal_route!(
    goal_diagnose,
    "/api/goals/{id}/diagnose",
    "Stagnation report.",
    goal_diagnose
);

/// Circuit breakers of the project's gates: `{"breakers": [...]}`.
#[utoipa::path(get, path = "/api/gates", responses((status = 200, description = "breakers", body = Object)))]
async fn gates(State(s): State<Shared>) -> ApiResult {
    call(&s, |o| o.gates_status(false)).await
}

/// Pools with live numbers: `{"pools": [...]}`.
#[utoipa::path(get, path = "/api/pools", responses((status = 200, description = "pools", body = Object)))]
async fn pools(State(s): State<Shared>) -> ApiResult {
    let Json(mut doc) = call(&s, |o| o.pools_status()).await?;
    if let Some(cluster) = &s.cluster {
        doc["cluster"] = cluster.store.cluster_pools().await?;
    }
    Ok(Json(doc))
}

/// The counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn prometheus(State(s): State<Shared>) -> Result<Response, ApiError> {
    let Json(mut m) = call(&s, |o| o.metrics()).await?;
    if let Some(cluster) = &s.cluster {
        cluster.add_counters(&mut m).await?;
    }
    let mut out = String::new();
    for (key, value) in m.as_object().into_iter().flatten() {
        let Some(n) = value.as_u64() else { continue };
        let Some(name) = key.strip_prefix("total_") else {
            continue;
        };
        let metric = format!("omk_{name}_total");
        out.push_str(&format!(
            "# HELP {metric} omk {}.\n# TYPE {metric} counter\n{metric} {n}\n",
            name.replace('_', " ")
        ));
    }
    let Json(mut teams) = call(&s, omk_core::ops::team_list_json).await?;
    if let (Some(cluster), Some(list)) = (&s.cluster, teams["teams"].as_array_mut()) {
        list.extend(cluster.teams().await?);
    }
    let mut by_phase = std::collections::BTreeMap::<String, u64>::new();
    for t in teams["teams"].as_array().into_iter().flatten() {
        *by_phase
            .entry(t["phase"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    out.push_str("# HELP omk_teams Teams on disk by phase.\n# TYPE omk_teams gauge\n");
    for (phase, n) in by_phase {
        out.push_str(&format!("omk_teams{{phase=\"{phase}\"}} {n}\n"));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
