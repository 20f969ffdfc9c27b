//! `omk dashboard`: the REST API of API.md (plus goal, gate and pool
//! routes), server-sent events of state changes, Prometheus metrics, an
//! OpenAPI document, and a live page served from the binary. Built on axum;
//! every handler calls the blocking `Omk` on a blocking thread.
//!
//! Security: loopback by default; a non-loopback bind needs `--token`, and
//! with a token every `/api` and `/metrics` request must carry
//! `Authorization: Bearer TOKEN` (`/api/events` also accepts `?token=`, as
//! EventSource cannot set headers). Every response carries a strict
//! Content-Security-Policy; nothing is served from disk.

mod api;
mod cluster;
mod events;
mod page;
mod teams;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use omk_core::{Error, Omk};

use crate::Outcome;

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Require `Authorization: Bearer TOKEN` on /api and /metrics
    /// (mandatory when binding to a non-loopback address). Default: $OMK_DASHBOARD_TOKEN.
    #[arg(long, env = "OMK_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also show the teams of a PostgreSQL store (a postgres:// URL), and
    /// add its counters to the metrics (docs/distributed.md). Default:
    /// [store] url or $OMK_STORE; "" for none.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// What every handler shares.
pub struct AppState {
    pub omk: Omk,
    pub token: Option<String>,
    pub changes: tokio::sync::broadcast::Sender<events::Change>,
    /// Which watcher feeds `/api/events` (`native`, `poll`, `none`).
    pub watch_backend: &'static str,
    pub teams: teams::TeamCache,
    /// The store shown besides the state directory (`--store`).
    pub cluster: Option<cluster::Cluster>,
}

pub type Shared = Arc<AppState>;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The whole application (also used by tests through the binary).
pub fn router(state: Shared) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(events::routes())
        .merge(page::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Token check for /api and /metrics, and security headers on everything.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let protected = path.starts_with("/api") || path == "/metrics";
    if protected {
        if let Some(token) = &state.token {
            let header_token = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let query_token = (path == "/api/events")
                .then(|| request.uri().query())
                .flatten()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
                .map(percent_decode);
            let presented: Vec<u8> = match (header_token, query_token) {
                (Some(h), _) => h.as_bytes().to_vec(),
                (None, Some(q)) => q,
                (None, None) => Vec::new(),
            };
            if !same(&presented, token.as_bytes()) {
                let mut r = api::error_response(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this dashboard needs Authorization: Bearer <token>",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return secure(r);
            }
        }
    }
    secure(next.run(request).await)
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `%XX` escapes decoded (the page sends the token through
/// `encodeURIComponent`); anything malformed is kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Constant-time comparison (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `omk dashboard`.
pub fn run(omk: &Omk, args: DashboardArgs) -> omk_core::Result<Outcome> {
    let addr: SocketAddr = args.bind.parse().map_err(|e| {
        Error::InvalidInput(format!(
            "--bind {:?} is not an address like 127.0.0.1:8080: {e}",
            args.bind
        ))
    })?;
    let token = args.token.filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Error::InvalidInput(format!(
            "refusing to serve on {addr} without a token: anyone on the network could read and \
             drive omk; pass --token (or OMK_DASHBOARD_TOKEN), or bind to 127.0.0.1"
        )));
    }
    let rt = crate::async_runtime("dashboard")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| crate::chat::io_err(&format!("listen on {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| crate::chat::io_err("read the bound address", e))?;
        let (changes, _) = tokio::sync::broadcast::channel(256);
        let feed = events::Feed::start(omk.state_dir());
        let cluster = match crate::remote::store_url(omk, args.store.as_deref())? {
            Some(url) => {
                let c = cluster::Cluster::connect(&url).await?;
                c.follow(changes.clone()).await?;
                Some(c)
            }
            None => None,
        };
        let state = Arc::new(AppState {
            omk: omk.clone(),
            token,
            changes: changes.clone(),
            watch_backend: feed.backend(),
            teams: teams::TeamCache::default(),
            cluster,
        });
        tokio::spawn(events::watch(omk.clone(), feed, changes));
        // Tests and scripts read this line to find the port.
        crate::outln!("omk dashboard listening on http://{local}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| crate::chat::io_err("serve the dashboard", e))?;
        Ok(Outcome::Success)
    })
}

impl IntoResponse for api::ApiError {
    fn into_response(self) -> Response {
        api::error_response(self.status, self.code, &self.message)
    }
}
