//! The OAuth2 side: a token endpoint for the client-credentials grant and
//! an OIDC discovery document, over plain HTTP on 127.0.0.1.

use crate::state::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    issuer: String,
}

/// The routes: `POST /token`, `GET /.well-known/openid-configuration`.
pub fn router(shared: Arc<Shared>, issuer: String) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/.well-known/openid-configuration", get(discovery))
        .with_state(App { shared, issuer })
}

async fn discovery(State(app): State<App>) -> Json<serde_json::Value> {
    Json(json!({
        "issuer": app.issuer,
        "token_endpoint": format!("{}/token", app.issuer),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }))
}

/// The client-credentials grant with the secret in the form
/// (`client_secret_post`).
async fn token(State(app): State<App>, Form(form): Form<HashMap<String, String>>) -> Response {
    let Some(oauth) = &app.shared.oauth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let refuse = |status: StatusCode, error: &str, description: &str| {
        app.shared.lock().counts.token_refusals += 1;
        (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let id = form
        .get("client_id")
        .map(String::as_str)
        .unwrap_or_default();
    let secret = form
        .get("client_secret")
        .map(String::as_str)
        .unwrap_or_default();
    if !oauth.clients.iter().any(|(i, s)| i == id && s == secret) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let token = new_token();
    let lifetime = oauth.token_lifetime.max(std::time::Duration::from_secs(1));
    {
        let mut state = app.shared.lock();
        state
            .tokens
            .insert(token.clone(), Instant::now() + lifetime);
        state.counts.tokens_issued += 1;
    }
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
    }))
    .into_response()
}

/// An unguessable-enough token for a test server: 128 random bits.
fn new_token() -> String {
    let half = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("kt-{:016x}{:016x}", half(), half())
}
