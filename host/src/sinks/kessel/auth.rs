//! OAuth2 client credentials for Kessel: a token fetched from the token
//! endpoint (named in the config or found by OIDC discovery), cached,
//! fetched again shortly before it expires or when Kessel refuses it, and
//! sent as `authorization: Bearer …`.
//!
//! The secret and the tokens are never logged nor put in an error: errors
//! say which endpoint refused which client id, and why.

use super::config::{AuthConfig, Secret};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};
use tonic::metadata::{Ascii, MetadataValue};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached or had trouble: retry.
    #[error("{0}")]
    Retryable(String),
    /// The credentials or the configuration are wrong: no retry can help.
    #[error("{0}")]
    Permanent(String),
}

/// A token to send, as the `authorization` header value.
#[derive(Clone)]
pub struct Bearer {
    header: MetadataValue<Ascii>,
    /// Tells one fetched token from another (a refusal only discards the
    /// token it refused, not a newer one).
    serial: u64,
}

impl Bearer {
    pub fn header(&self) -> &MetadataValue<Ascii> {
        &self.header
    }
}

struct Cached {
    bearer: Bearer,
    refresh_at: Option<Instant>,
}

/// Where the secret comes from.
enum SecretSource {
    Inline(Secret),
    File(PathBuf),
    Env(String),
}

/// Where the token endpoint is.
enum TokenEndpoint {
    Url(String),
    Issuer {
        issuer: String,
        discovered: OnceCell<String>,
    },
}

/// Fetches and caches tokens for one sink.
pub struct TokenSource {
    http: reqwest::Client,
    client_id: String,
    secret: SecretSource,
    endpoint: TokenEndpoint,
    scope: Option<String>,
    cached: Mutex<Option<Cached>>,
    fetched: std::sync::atomic::AtomicU64,
}

/// Most time a token is fetched ahead of its expiry.
const MAX_MARGIN: Duration = Duration::from_secs(60);

impl TokenSource {
    /// A token source for `config`; `http` is the HTTP client to use.
    pub fn new(config: &AuthConfig, http: reqwest::Client) -> TokenSource {
        let secret = match (
            &config.client_secret,
            &config.client_secret_file,
            &config.client_secret_env,
        ) {
            (Some(secret), _, _) => SecretSource::Inline(secret.clone()),
            (None, Some(file), _) => SecretSource::File(file.clone()),
            (None, None, Some(name)) => SecretSource::Env(name.clone()),
            // `check` refuses this configuration; an empty secret makes the
            // token endpoint say so if it ever gets here.
            (None, None, None) => SecretSource::Inline(Secret::new("")),
        };
        let endpoint = match (&config.token_url, &config.issuer) {
            (Some(url), _) => TokenEndpoint::Url(url.clone()),
            (None, Some(issuer)) => TokenEndpoint::Issuer {
                issuer: issuer.clone(),
                discovered: OnceCell::new(),
            },
            (None, None) => TokenEndpoint::Url(String::new()),
        };
        TokenSource {
            http,
            client_id: config.client_id.clone(),
            secret,
            endpoint,
            scope: config.scope.clone(),
            cached: Mutex::new(None),
            fetched: Default::default(),
        }
    }

    /// Reads the secret once, so a missing file or variable stops the
    /// pipeline at start rather than at its first delivery.
    pub async fn check_secret(&self) -> Result<(), AuthError> {
        self.secret().await.map(drop)
    }

    /// The current token, fetched if there is none or it is about to
    /// expire. Only one fetch runs at a time; callers wait for it.
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && current.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(current.bearer.clone());
        }
        let fresh = self.fetch().await?;
        let bearer = fresh.bearer.clone();
        *cached = Some(fresh);
        Ok(bearer)
    }

    /// Discards `refused` (Kessel said Unauthenticated to it), unless a
    /// newer token has replaced it already.
    pub async fn discard(&self, refused: &Bearer) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|current| current.bearer.serial == refused.serial)
        {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Cached, AuthError> {
        let url = self.token_url().await?;
        let secret = self.secret().await?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let asked = Instant::now();
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                AuthError::Retryable(format!(
                    "cannot reach the token endpoint {url}: {}",
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            AuthError::Retryable(format!(
                "the token endpoint {url} broke off its answer: {}",
                error_chain(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(refusal(url, &self.client_id, status, &body));
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            AuthError::Permanent(format!(
                "the token endpoint {url} answered with something that is not an OAuth2 token response ({e})"
            ))
        })?;
        if let Some(kind) = &token.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(AuthError::Permanent(format!(
                "the token endpoint {url} gave a {kind:?} token; Kessel takes Bearer tokens"
            )));
        }
        let mut header: MetadataValue<Ascii> = format!("Bearer {}", token.access_token)
            .parse()
            .map_err(|_| {
                AuthError::Permanent(format!(
                    "the token endpoint {url} gave a token that cannot be sent in a header"
                ))
            })?;
        header.set_sensitive(true);
        let serial = self
            .fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refresh_at = token.expires_in().map(|lifetime| {
            let margin = (lifetime / 5).min(MAX_MARGIN);
            asked + lifetime - margin
        });
        tracing::debug!(
            client_id = %self.client_id,
            expires_in_s = token.expires_in().map(|d| d.as_secs()),
            "Fetched a Kessel access token."
        );
        Ok(Cached {
            bearer: Bearer { header, serial },
            refresh_at,
        })
    }

    async fn token_url(&self) -> Result<&str, AuthError> {
        match &self.endpoint {
            TokenEndpoint::Url(url) => Ok(url),
            TokenEndpoint::Issuer { issuer, discovered } => discovered
                .get_or_try_init(|| self.discover(issuer))
                .await
                .map(String::as_str),
        }
    }

    /// The token endpoint named by the issuer's OIDC discovery document.
    async fn discover(&self, issuer: &str) -> Result<String, AuthError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let response = self.http.get(&url).send().await.map_err(|e| {
            AuthError::Retryable(format!("cannot reach {url}: {}", error_chain(&e)))
        })?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(AuthError::Retryable(format!("{url} answered {status}")));
        }
        if !status.is_success() {
            return Err(AuthError::Permanent(format!(
                "{url} answered {status}: is `issuer` right?"
            )));
        }
        let document: Discovery = response.json().await.map_err(|e| {
            AuthError::Permanent(format!(
                "{url} is not an OIDC discovery document with a token_endpoint ({})",
                error_chain(&e)
            ))
        })?;
        tracing::debug!(issuer, token_endpoint = %document.token_endpoint, "Discovered the OAuth2 token endpoint.");
        Ok(document.token_endpoint)
    }

    async fn secret(&self) -> Result<Secret, AuthError> {
        match &self.secret {
            SecretSource::Inline(secret) => Ok(secret.clone()),
            SecretSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|text| Secret::new(text.trim_end_matches(['\r', '\n'])))
                .map_err(|e| {
                    AuthError::Permanent(format!(
                        "cannot read the client secret from {}: {e}",
                        path.display()
                    ))
                }),
            SecretSource::Env(name) => std::env::var(name).map(Secret::new).map_err(|_| {
                AuthError::Permanent(format!(
                    "the environment variable {name} (auth.client_secret_env) is not set"
                ))
            }),
        }
    }
}

/// The error a token endpoint's refusal means.
fn refusal(url: &str, client_id: &str, status: reqwest::StatusCode, body: &[u8]) -> AuthError {
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return AuthError::Retryable(format!("the token endpoint {url} answered {status}"));
    }
    // RFC 6749 §5.2: `error` and an optional `error_description`.
    let reason = serde_json::from_slice::<OAuthError>(body)
        .map(|e| match e.error_description {
            Some(description) => format!("{}: {description}", e.error),
            None => e.error,
        })
        .unwrap_or_else(|_| status.to_string());
    AuthError::Permanent(format!(
        "the token endpoint {url} refused the client credentials of client {client_id:?} ({reason}); check auth.client_id and the client secret"
    ))
}

/// An error and its sources on one line (reqwest's own text stops at the
/// first).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    /// Seconds; some providers send it as a string.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    fn expires_in(&self) -> Option<Duration> {
        let seconds = match self.expires_in.as_ref()? {
            serde_json::Value::Number(n) => n.as_f64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
    }
}

#[derive(serde::Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(serde::Deserialize)]
struct Discovery {
    token_endpoint: String,
}
