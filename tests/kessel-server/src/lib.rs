//! A Kessel Inventory API v1beta2 server for ferry's tests and benchmarks.
//!
//! It is generated from the same `.proto` files as ferry's client
//! (`proto/` at the repository root) and behaves like the real server where
//! a reporter can tell:
//!
//! - `transaction_id` is unique across the whole server: a report whose id
//!   was already applied succeeds and writes nothing (counted in
//!   [`Counts::duplicates`]); a duplicate that arrives while the first is
//!   still in flight fails with InvalidArgument "NON-UNIQUE TRANSACTION ID".
//! - Deletes are soft; deleting a deleted resource succeeds; deleting an
//!   unknown one is NotFound.
//! - Requests that break the documented rules (empty or malformed `type`,
//!   `reporter_type`, `resource_type`, missing representations or metadata,
//!   length limits) fail with InvalidArgument naming every violation.
//! - Optional TLS (a CA generated at start) and optional OAuth2: a token
//!   endpoint for client credentials with OIDC discovery, and Bearer tokens
//!   checked on every call (Unauthenticated when missing, unknown or
//!   expired).
//!
//! Faults are injected at run time: [`KesselServer::fail_next`],
//! [`KesselServer::set_unavailable`], [`KesselServer::set_delay`],
//! [`KesselServer::set_duplicate_answer`], [`KesselServer::revoke_tokens`].
//! What it holds is inspected with [`KesselServer::resources`],
//! [`KesselServer::log`] and [`KesselServer::counts`].
//!
//! The server runs on its own thread and Tokio runtime, so it serves sync
//! tests (which run `ferry` as a child process) and async ones alike; it
//! stops when the [`KesselServer`] is dropped.

mod oauth;
mod service;
mod state;
mod tls;

/// The generated server and messages.
#[allow(clippy::all, missing_docs, unused_qualifications)]
pub mod proto {
    tonic::include_proto!("kessel.inventory.v1beta2");

    /// `google.rpc` error details.
    pub mod rpc {
        #![allow(clippy::all, missing_docs, unused_qualifications)]
        tonic::include_proto!("google.rpc");
    }
}

pub use state::{Counts, DuplicateAnswer, LogEntry, Resource};

use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port for gRPC on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve gRPC over TLS with a certificate for `localhost`,
    /// `127.0.0.1` and `kessel.test`, issued by a CA generated at start.
    pub tls: bool,
    /// Require OAuth2 Bearer tokens, issued by the server's own token
    /// endpoint.
    pub oauth: Option<OAuthOptions>,
}

/// The token endpoint's clients and tokens.
#[derive(Debug, Clone)]
pub struct OAuthOptions {
    /// Client ids and their secrets.
    pub clients: Vec<(String, String)>,
    /// How long an issued token is accepted (`expires_in`, whole seconds,
    /// at least 1).
    pub token_lifetime: Duration,
}

impl OAuthOptions {
    /// One client, tokens valid for `token_lifetime`.
    pub fn client(id: &str, secret: &str, token_lifetime: Duration) -> OAuthOptions {
        OAuthOptions {
            clients: vec![(id.to_string(), secret.to_string())],
            token_lifetime,
        }
    }
}

/// A running test server; stops when dropped.
pub struct KesselServer {
    shared: Arc<state::Shared>,
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    ca_pem: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KesselServer {
    /// A plaintext server without auth on a free port.
    pub fn start() -> anyhow::Result<KesselServer> {
        KesselServer::start_with(Options::default())
    }

    /// A server as `options` say.
    pub fn start_with(options: Options) -> anyhow::Result<KesselServer> {
        let shared = Arc::new(state::Shared::new(options.oauth.clone()));
        let identity = if options.tls {
            tls::install_crypto_provider();
            Some(tls::generate().context("cannot generate the test certificates")?)
        } else {
            None
        };
        let ca_pem = identity.as_ref().map(|i| i.ca_pem.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kessel-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kessel-server")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let servers = match service::bind(&options, identity, serving).await {
                        Ok((addresses, servers)) => {
                            let _ = ready_tx.send(Ok(addresses));
                            servers
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    tokio::select! {
                        _ = servers => {}
                        _ = stop_rx => {}
                    }
                });
                // Open connections and in-flight calls end here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the server thread")?;
        let (grpc, http) = ready_rx
            .recv()
            .context("the server thread ended before it was ready")??;
        Ok(KesselServer {
            shared,
            grpc,
            http,
            ca_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The gRPC endpoint: `http://127.0.0.1:<port>`, or `https://…` with
    /// TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.grpc)
    }

    /// The gRPC address.
    pub fn address(&self) -> SocketAddr {
        self.grpc
    }

    /// The PEM of the CA that issued the server's certificate (TLS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The OAuth2 issuer (`http://127.0.0.1:<port>`), whose
    /// `/.well-known/openid-configuration` names the token endpoint.
    pub fn issuer(&self) -> Option<String> {
        self.http.map(|addr| format!("http://{addr}"))
    }

    /// The OAuth2 token endpoint.
    pub fn token_url(&self) -> Option<String> {
        self.issuer().map(|issuer| format!("{issuer}/token"))
    }

    /// Answers the next `n` calls with Unavailable (after auth).
    pub fn fail_next(&self, n: u64) {
        self.shared.lock().faults.fail_next = n;
    }

    /// Answers every call with Unavailable while `on` (read-only mode).
    pub fn set_unavailable(&self, on: bool) {
        self.shared.lock().faults.unavailable = on;
    }

    /// Makes every call take at least `delay` before it is applied.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().faults.delay = delay;
    }

    /// How a report whose transaction id was already applied is answered.
    pub fn set_duplicate_answer(&self, answer: DuplicateAnswer) {
        self.shared.lock().duplicate_answer = answer;
    }

    /// Forgets every token issued so far: calls carrying one are
    /// Unauthenticated (a token revoked or expired early).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Every resource Kessel holds (deleted ones too), in a stable order.
    pub fn resources(&self) -> Vec<Resource> {
        let state = self.shared.lock();
        let mut resources: Vec<Resource> = state.resources.values().cloned().collect();
        resources.sort_by_key(Resource::key);
        resources
    }

    /// The resource reported as `local_resource_id` of type `resource_type`,
    /// by any reporter.
    pub fn resource(&self, resource_type: &str, local_resource_id: &str) -> Option<Resource> {
        self.resources()
            .into_iter()
            .find(|r| r.resource_type == resource_type && r.local_resource_id == local_resource_id)
    }

    /// The applied calls, in the order they were applied. Duplicates,
    /// refused calls and redundant deletes are not in it.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.lock().log.clone()
    }

    /// What the server counted.
    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }
}

impl Drop for KesselServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
