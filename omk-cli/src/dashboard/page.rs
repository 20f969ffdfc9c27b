//! The page: HTML, CSS and JS compiled into the binary (no CDN, no file
//! read from disk). The script builds the DOM with `textContent` only, so
//! names and tasks render as text whatever they contain.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Shared;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .fallback(|| async {
            super::api::error_response(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /api/openapi.json",
            )
            .into_response()
        })
}
