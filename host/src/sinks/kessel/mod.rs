//! The Kessel Inventory sink: `ReportResource` and `DeleteResource` calls
//! (API v1beta2, gRPC) from a plugin's `kessel-report` / `kessel-delete`
//! outputs.
//!
//! - `request`: the output's JSON → the protobuf request; the derived
//!   `transaction_id` that makes a replay a no-op on the server.
//! - `error`: what a gRPC status means (delivered, retry, refused).
//! - `auth`: OAuth2 client-credentials tokens.
//! - `config`: the sink's settings.
//!
//! A slice of deliveries (one unit of order) is sent one call at a time, in
//! order: Kessel enforces no order, the reporter owns it. Slices of
//! different units run concurrently, up to `max_concurrency` calls in
//! flight across the sink, over one HTTP/2 connection.

mod auth;
pub mod config;
mod error;
mod proto;
pub mod request;

pub use config::KesselSinkConfig;

use super::{Delivery, Sink, SinkError};
use crate::event::Payload;
use crate::notify::Notifier;
use anyhow::Context as _;
use auth::{AuthError, Bearer, TokenSource};
use config::DeleteNotFound;
use error::{Applied, Method, Verdict};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use proto::kessel_inventory_service_client::KesselInventoryServiceClient;
use proto::{DeleteResourceRequest, ReportResourceRequest};
use std::sync::Once;
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Delivers Kessel outputs to a Kessel Inventory server.
pub struct KesselSink {
    pipeline: String,
    client: KesselInventoryServiceClient<Channel>,
    permits: Semaphore,
    timeout: Duration,
    write_visibility: Option<i32>,
    delete_not_found: DeleteNotFound,
    auth: Option<TokenSource>,
    notify: Option<Notifier>,
}

/// One call, ready to send.
enum Call {
    Report(ReportResourceRequest),
    Delete(DeleteResourceRequest),
}

impl Call {
    fn method(&self) -> Method {
        match self {
            Call::Report(_) => Method::ReportResource,
            Call::Delete(_) => Method::DeleteResource,
        }
    }
}

/// Why a call did not succeed.
enum CallError {
    Status(tonic::Status),
    TimedOut,
}

impl KesselSink {
    /// Builds the sink of pipeline `pipeline`. The connection is made at
    /// the first call (a server that is down is a retryable failure then,
    /// not a start failure); files (CA, secret) are read now.
    pub async fn new(pipeline: &str, config: &KesselSinkConfig) -> anyhow::Result<KesselSink> {
        // `Config::load` has checked already; a config built in code has not.
        let problems = config.check();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("the kessel sink is misconfigured: {}", list.join("; "));
        }
        install_crypto_provider();
        let timeout = Duration::from_millis(config.timeout_ms);
        let ca = match config.tls.as_ref().and_then(|tls| tls.ca_file.as_ref()) {
            Some(path) => {
                let pem = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?;
                check_pem(&pem).with_context(|| {
                    format!("the CA file {} holds no PEM certificate", path.display())
                })?;
                Some(pem)
            }
            None => None,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .with_context(|| format!("{:?} is not a valid endpoint", config.endpoint))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
        if config.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &ca {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some(name) = config.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
                tls = tls.domain_name(name);
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("cannot set up TLS for the Kessel endpoint")?;
        }
        let channel = endpoint.connect_lazy();

        let auth = match &config.auth {
            Some(auth) => {
                if config.endpoint.starts_with("http://") {
                    tracing::warn!(
                        pipeline,
                        endpoint = %config.endpoint,
                        "The Kessel sink sends OAuth2 tokens over a plaintext connection; use an https:// endpoint outside tests."
                    );
                }
                let mut http = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout);
                if let Some(pem) = &ca {
                    let certificates = reqwest::Certificate::from_pem_bundle(pem)
                        .context("the CA file cannot be read as PEM certificates")?;
                    http = http.tls_certs_merge(certificates);
                }
                let http = http
                    .build()
                    .context("cannot set up the HTTP client for the token endpoint")?;
                let tokens = TokenSource::new(auth, http);
                tokens.check_secret().await?;
                Some(tokens)
            }
            None => None,
        };

        Ok(KesselSink {
            pipeline: pipeline.to_string(),
            client: KesselInventoryServiceClient::new(channel),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            timeout,
            write_visibility: config.write_visibility.map(|v| match v {
                config::WriteVisibility::MinimizeLatency => {
                    proto::WriteVisibility::MinimizeLatency as i32
                }
                config::WriteVisibility::Immediate => proto::WriteVisibility::Immediate as i32,
            }),
            delete_not_found: config.delete_not_found,
            auth,
            notify: config.notify.as_ref().map(Notifier::new).transpose()?,
        })
    }

    /// The call a delivery makes, or why its output cannot be sent.
    fn call(&self, delivery: &Delivery) -> anyhow::Result<Call> {
        let position = delivery.position();
        let index = delivery.index;
        match &delivery.output.payload {
            Payload::KesselReport(report) => {
                let defaults = request::ReportDefaults {
                    write_visibility: self.write_visibility,
                    pipeline: &self.pipeline,
                    position,
                    index,
                };
                request::report(&report.request, &defaults)
                    .map(Call::Report)
                    .with_context(|| {
                        format!("output {index} of the event at {position} is not a valid ReportResourceRequest")
                    })
            }
            Payload::KesselDelete(delete) => request::delete(&delete.request)
                .map(Call::Delete)
                .with_context(|| {
                    format!("output {index} of the event at {position} is not a valid DeleteResourceRequest")
                }),
            Payload::Record(_) => Err(anyhow::anyhow!(
                "output {index} of the event at {position} is a record; the kessel sink delivers only kessel_report and kessel_delete outputs"
            )),
        }
    }

    /// Delivers one output: sends its call, refreshing the token once if
    /// Kessel refuses it.
    async fn deliver_one(&self, delivery: &Delivery, at: usize) -> Result<(), SinkError> {
        let call = self
            .call(delivery)
            .map_err(|error| SinkError::permanent(at, error))?;
        let method = call.method();
        let context = || {
            format!(
                "output {} of the event at {}",
                delivery.index,
                delivery.position()
            )
        };
        let mut refreshed = false;
        loop {
            let bearer = match &self.auth {
                Some(tokens) => Some(
                    tokens
                        .bearer()
                        .await
                        .map_err(|error| auth_failure(at, error))?,
                ),
                None => None,
            };
            let status = match self.send(&call, bearer.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(CallError::TimedOut) => {
                    let error = anyhow::anyhow!(
                        "Kessel gave no answer to {} within {} ms",
                        method.name(),
                        self.timeout.as_millis()
                    );
                    return Err(SinkError::retryable(at, error.context(context())));
                }
                Err(CallError::Status(status)) => status,
            };
            let described = || anyhow::anyhow!(error::describe(method, &status));
            match error::classify(method, &status, self.delete_not_found) {
                Verdict::AlreadyApplied(applied) => {
                    let why = match applied {
                        Applied::DuplicateTransactionId => {
                            "Kessel has already applied this report (non-unique transaction id); counted as delivered."
                        }
                        Applied::DeleteNotFound => {
                            "Kessel does not have the resource to delete (NotFound); counted as delivered."
                        }
                    };
                    tracing::debug!(
                        pipeline = %self.pipeline,
                        position = delivery.position(),
                        index = delivery.index,
                        "{why}"
                    );
                    return Ok(());
                }
                Verdict::Retryable => {
                    return Err(SinkError::retryable(at, described().context(context())));
                }
                Verdict::Permanent => {
                    return Err(SinkError::permanent(at, described().context(context())));
                }
                Verdict::Unauthenticated => {
                    let (Some(tokens), Some(bearer)) = (&self.auth, &bearer) else {
                        let error = described().context("no auth is configured for this sink");
                        return Err(SinkError::permanent(at, error.context(context())));
                    };
                    if refreshed {
                        let error = described().context(
                            "Kessel refused a freshly fetched token too: is this client allowed to report?",
                        );
                        return Err(SinkError::permanent(at, error.context(context())));
                    }
                    tracing::info!(
                        pipeline = %self.pipeline,
                        "Kessel refused the access token; fetching a new one and trying once more."
                    );
                    tokens.discard(bearer).await;
                    refreshed = true;
                }
            }
        }
    }

    /// Sends one call within the sink's concurrency and time limits.
    async fn send(&self, call: &Call, bearer: Option<&Bearer>) -> Result<(), CallError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut client = self.client.clone();
        let result = tokio::time::timeout(self.timeout, async {
            match call {
                Call::Report(report) => client
                    .report_resource(self.request(report.clone(), bearer))
                    .await
                    .map(drop),
                Call::Delete(delete) => client
                    .delete_resource(self.request(delete.clone(), bearer))
                    .await
                    .map(drop),
            }
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(CallError::Status(status)),
            Err(_) => Err(CallError::TimedOut),
        }
    }
}

impl KesselSink {
    /// A request carrying the deadline and the token.
    fn request<T>(&self, message: T, bearer: Option<&Bearer>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(bearer) = bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.header().clone());
        }
        request
    }
}

impl Sink for KesselSink {
    fn deliver<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        async move {
            // One notification per event, after its outputs here are sent.
            let mut payloads = Vec::new();
            let mut result = Ok(());
            for (at, delivery) in deliveries.iter().enumerate() {
                let last_of_event = deliveries
                    .get(at + 1)
                    .is_none_or(|next| next.position() != delivery.position());
                if let (Some(notify), true) = (&self.notify, last_of_event) {
                    match notify.payload(delivery) {
                        Ok(payload) => payloads.push(payload),
                        Err(error) => {
                            result = Err(SinkError::permanent(at, error));
                            break;
                        }
                    }
                }
                if let Err(error) = self.deliver_one(delivery, at).await {
                    if last_of_event {
                        payloads.pop();
                    }
                    result = Err(error);
                    break;
                }
            }
            if let Some(notify) = &self.notify
                && let Err(error) = notify.send(&payloads).await
            {
                // Retried with the slice: Kessel absorbs the repeated calls
                // (same transaction ids); listeners get theirs.
                return Err(SinkError::retryable(0, error));
            }
            result
        }
        .boxed()
    }
}

/// Whether `pem` holds at least one certificate, all of them readable.
fn check_pem(pem: &[u8]) -> anyhow::Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    anyhow::ensure!(!certificates.is_empty(), "no BEGIN CERTIFICATE block");
    Ok(())
}

/// A failure to get a token, as a delivery failure.
fn auth_failure(at: usize, error: AuthError) -> SinkError {
    let permanent = matches!(error, AuthError::Permanent(_));
    let error = anyhow::Error::new(error).context("cannot get a Kessel access token");
    if permanent {
        SinkError::permanent(at, error)
    } else {
        SinkError::retryable(at, error)
    }
}

/// reqwest is built without a default crypto provider: install rustls'
/// ring provider for the process before the first TLS client is made.
pub(crate) fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another part of the process may have installed one already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
