//! The gRPC service: auth, injected faults, validation, dedupe, apply.

use crate::Options;
use crate::oauth;
use crate::proto::kessel_inventory_service_server::{
    KesselInventoryService, KesselInventoryServiceServer,
};
use crate::proto::{
    DeleteResourceRequest, DeleteResourceResponse, ReportResourceRequest, ReportResourceResponse,
    WriteVisibility, representation_metadata::IdempotencyKey, rpc,
};
use crate::state::{DuplicateAnswer, LogEntry, Resource, Shared, struct_to_json};
use crate::tls::Identity;
use prost::Message as _;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// The reason Kessel gives for a transaction id it has seen.
pub const NON_UNIQUE: &str = "NON-UNIQUE TRANSACTION ID";

/// A server task.
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds the listeners; returns their addresses and a future serving them.
pub async fn bind(
    options: &Options,
    identity: Option<Identity>,
    shared: Arc<Shared>,
) -> anyhow::Result<((SocketAddr, Option<SocketAddr>), BoxFuture)> {
    let grpc = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let grpc_addr = grpc.local_addr()?;
    let mut builder = Server::builder();
    if let Some(identity) = identity {
        builder = builder.tls_config(ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(identity.cert_pem, identity.key_pem),
        ))?;
    }
    let service = Service {
        shared: shared.clone(),
    };
    let checker = shared.clone();
    let router = builder.add_service(KesselInventoryServiceServer::with_interceptor(
        service,
        move |request: Request<()>| check_token(&checker, request),
    ));
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_server = async move {
        if let Err(error) = router.serve_with_incoming(incoming).await {
            eprintln!("kessel-server: the gRPC server failed: {error}");
        }
    };

    let (http_addr, http_server): (Option<SocketAddr>, BoxFuture) = if shared.oauth.is_some() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = oauth::router(shared.clone(), format!("http://{addr}"));
        let server = async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("kessel-server: the token endpoint failed: {error}");
            }
        };
        (Some(addr), Box::pin(server))
    } else {
        (None, Box::pin(std::future::pending()))
    };
    let both: BoxFuture = Box::pin(async move {
        tokio::join!(grpc_server, http_server);
    });
    Ok(((grpc_addr, http_addr), both))
}

/// Checks the Bearer token when OAuth2 is on.
fn check_token(shared: &Shared, request: Request<()>) -> Result<Request<()>, Status> {
    if shared.oauth.is_none() {
        return Ok(request);
    }
    let token = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let mut state = shared.lock();
    let verdict = match token {
        None => Err("missing bearer token"),
        Some(token) => match state.tokens.get(&token) {
            None => Err("unknown or revoked token"),
            Some(expires) if *expires <= Instant::now() => Err("token expired"),
            Some(_) => Ok(()),
        },
    };
    match verdict {
        Ok(()) => Ok(request),
        Err(why) => {
            state.counts.unauthenticated += 1;
            Err(Status::unauthenticated(why))
        }
    }
}

struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// Counts the call and applies injected unavailability; returns the
    /// delay to apply.
    fn admit(&self) -> Result<std::time::Duration, Status> {
        let mut state = self.shared.lock();
        state.counts.calls += 1;
        if state.faults.unavailable {
            state.counts.unavailable += 1;
            return Err(Status::unavailable("Kessel Inventory is in read-only mode"));
        }
        if state.faults.fail_next > 0 {
            state.faults.fail_next -= 1;
            state.counts.unavailable += 1;
            return Err(Status::unavailable(
                "Kessel Inventory is unavailable (injected)",
            ));
        }
        Ok(state.faults.delay)
    }

    fn refuse(&self, violations: Vec<String>) -> Status {
        self.shared.lock().counts.invalid += 1;
        let mut message = String::from("validation error:");
        for violation in violations {
            message.push_str("\n - ");
            message.push_str(&violation);
        }
        Status::invalid_argument(message)
    }
}

#[tonic::async_trait]
impl KesselInventoryService for Service {
    async fn report_resource(
        &self,
        request: Request<ReportResourceRequest>,
    ) -> Result<Response<ReportResourceResponse>, Status> {
        let delay = self.admit()?;
        let request = request.into_inner();
        let violations = validate_report(&request);
        if !violations.is_empty() {
            return Err(self.refuse(violations));
        }
        let representations = request.representations.clone().unwrap_or_default();
        let metadata = representations.metadata.clone().unwrap_or_default();
        let transaction_id = match &metadata.idempotency_key {
            Some(IdempotencyKey::TransactionId(id)) if !id.is_empty() => Some(id.clone()),
            _ => None,
        };
        if let Some(id) = &transaction_id {
            let mut state = self.shared.lock();
            if state.processed.contains(id) {
                state.counts.duplicates += 1;
                return match state.duplicate_answer {
                    DuplicateAnswer::Success => Ok(Response::new(ReportResourceResponse {})),
                    DuplicateAnswer::NonUniqueMessage => Err(Status::invalid_argument(format!(
                        "{NON_UNIQUE}: {id} was already processed"
                    ))),
                    DuplicateAnswer::NonUniqueErrorInfo => Err(non_unique_error_info()),
                };
            }
            if !state.in_flight.insert(id.clone()) {
                state.counts.concurrent_duplicates += 1;
                return Err(Status::invalid_argument(format!(
                    "{NON_UNIQUE}: {id} is being processed"
                )));
            }
        }
        // The write completes even if the caller gives up waiting (a
        // lost acknowledgement), as a real server's transaction would.
        let shared = self.shared.clone();
        let write = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            apply_report(&shared, request, transaction_id);
        });
        write
            .await
            .map_err(|e| Status::internal(format!("the write failed: {e}")))?;
        Ok(Response::new(ReportResourceResponse {}))
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResourceResponse>, Status> {
        let delay = self.admit()?;
        let request = request.into_inner();
        let violations = validate_delete(&request);
        if !violations.is_empty() {
            return Err(self.refuse(violations));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reference = request.reference.clone().unwrap_or_default();
        let mut state = self.shared.lock();
        let mut matched = 0;
        let mut deleted_now = 0;
        for resource in state.resources.values_mut() {
            let reporter_matches = match &reference.reporter {
                None => true,
                Some(reporter) => {
                    resource.reporter_type == reporter.r#type
                        && reporter
                            .instance_id
                            .as_ref()
                            .is_none_or(|id| *id == resource.reporter_instance_id)
                }
            };
            if resource.resource_type == reference.resource_type
                && resource.local_resource_id == reference.resource_id
                && reporter_matches
            {
                matched += 1;
                if !resource.deleted {
                    resource.deleted = true;
                    deleted_now += 1;
                }
            }
        }
        if matched == 0 {
            state.counts.not_found += 1;
            return Err(Status::not_found(format!(
                "resource not found: {} {}",
                reference.resource_type, reference.resource_id
            )));
        }
        if deleted_now == 0 {
            state.counts.redundant_deletes += 1;
        } else {
            state.counts.deletes += 1;
            state.log.push(LogEntry {
                method: "DeleteResource",
                resource_type: reference.resource_type.clone(),
                local_resource_id: reference.resource_id.clone(),
                transaction_id: None,
                request: delete_json(&request),
                applied_at: std::time::SystemTime::now(),
            });
        }
        Ok(Response::new(DeleteResourceResponse {}))
    }
}

/// Applies a validated report: the resource's new representation and a
/// log entry.
fn apply_report(shared: &Shared, request: ReportResourceRequest, transaction_id: Option<String>) {
    let representations = request.representations.clone().unwrap_or_default();
    let metadata = representations.metadata.clone().unwrap_or_default();
    let mut state = shared.lock();
    if let Some(id) = &transaction_id {
        state.in_flight.remove(id);
        state.processed.insert(id.clone());
    }
    let visibility = WriteVisibility::try_from(request.write_visibility)
        .unwrap_or_default()
        .as_str_name()
        .to_string();
    let key = (
        request.r#type.clone(),
        request.reporter_type.clone(),
        request.reporter_instance_id.clone(),
        metadata.local_resource_id.clone(),
    );
    let reports = state.resources.get(&key).map_or(0, |r| r.reports) + 1;
    state.resources.insert(
        key,
        Resource {
            resource_type: request.r#type.clone(),
            reporter_type: request.reporter_type.clone(),
            reporter_instance_id: request.reporter_instance_id.clone(),
            local_resource_id: metadata.local_resource_id.clone(),
            api_href: metadata.api_href.clone(),
            console_href: metadata.console_href.clone(),
            reporter_version: metadata.reporter_version.clone(),
            common: representations.common.as_ref().map(struct_to_json),
            reporter: representations.reporter.as_ref().map(struct_to_json),
            transaction_id: transaction_id.clone(),
            write_visibility: visibility,
            deleted: false,
            reports,
        },
    );
    state.counts.reports += 1;
    state.log.push(LogEntry {
        method: "ReportResource",
        resource_type: request.r#type.clone(),
        local_resource_id: metadata.local_resource_id.clone(),
        transaction_id,
        request: report_json(&request),
        applied_at: std::time::SystemTime::now(),
    });
}

fn non_unique_error_info() -> Status {
    let info = rpc::ErrorInfo {
        reason: NON_UNIQUE.into(),
        domain: "inventory-api".into(),
        metadata: Default::default(),
    };
    let details = rpc::Status {
        code: tonic::Code::InvalidArgument as i32,
        message: "transaction id conflict".into(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::InvalidArgument,
        "transaction id conflict",
        details.encode_to_vec().into(),
    )
}

/// `^[A-Za-z0-9_-]+$` (`hyphen`) or `^[A-Za-z0-9_]+$`.
fn pattern_ok(value: &str, hyphen: bool) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (hyphen && c == '-'))
}

/// Collects the violations of `value` at `field`.
struct Rules(Vec<String>);

impl Rules {
    fn required(&mut self, field: &str, value: &str) -> bool {
        if value.is_empty() {
            self.0
                .push(format!("{field}: value is required [string.min_len]"));
            false
        } else {
            true
        }
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.0.push(format!(
                "{field}: value length must be at most {max} characters [string.max_len]"
            ));
        }
    }

    fn pattern(&mut self, field: &str, value: &str, hyphen: bool) {
        if !pattern_ok(value, hyphen) {
            let pattern = if hyphen {
                "^[A-Za-z0-9_-]+$"
            } else {
                "^[A-Za-z0-9_]+$"
            };
            self.0.push(format!(
                "{field}: value does not match regex pattern `{pattern}` [string.pattern]"
            ));
        }
    }
}

/// The documented rules of a report, every violation.
fn validate_report(request: &ReportResourceRequest) -> Vec<String> {
    let mut rules = Rules(Vec::new());
    if rules.required("type", &request.r#type) {
        rules.pattern("type", &request.r#type, true);
        rules.max_len("type", &request.r#type, 128);
    }
    if rules.required("reporter_type", &request.reporter_type) {
        rules.pattern("reporter_type", &request.reporter_type, true);
        rules.max_len("reporter_type", &request.reporter_type, 128);
    }
    if rules.required("reporter_instance_id", &request.reporter_instance_id) {
        rules.max_len("reporter_instance_id", &request.reporter_instance_id, 256);
    }
    if WriteVisibility::try_from(request.write_visibility).is_err() {
        rules.0.push(
            "write_visibility: value must be one of the defined enum values [enum.defined_only]"
                .into(),
        );
    }
    match &request.representations {
        None => rules
            .0
            .push("representations: value is required [required]".into()),
        Some(representations) => match &representations.metadata {
            None => rules
                .0
                .push("representations.metadata: value is required [required]".into()),
            Some(metadata) => {
                let at = |name: &str| format!("representations.metadata.{name}");
                if rules.required(&at("local_resource_id"), &metadata.local_resource_id) {
                    rules.max_len(&at("local_resource_id"), &metadata.local_resource_id, 128);
                }
                if rules.required(&at("api_href"), &metadata.api_href) {
                    rules.max_len(&at("api_href"), &metadata.api_href, 512);
                }
                if let Some(console_href) = &metadata.console_href {
                    rules.max_len(&at("console_href"), console_href, 512);
                }
                if let Some(IdempotencyKey::TransactionId(id)) = &metadata.idempotency_key {
                    rules.max_len(&at("transaction_id"), id, 128);
                }
            }
        },
    }
    rules.0
}

/// The documented rules of a delete, every violation.
fn validate_delete(request: &DeleteResourceRequest) -> Vec<String> {
    let mut rules = Rules(Vec::new());
    match &request.reference {
        None => rules
            .0
            .push("reference: value is required [required]".into()),
        Some(reference) => {
            if rules.required("reference.resource_type", &reference.resource_type) {
                rules.pattern("reference.resource_type", &reference.resource_type, false);
                rules.max_len("reference.resource_type", &reference.resource_type, 128);
            }
            rules.required("reference.resource_id", &reference.resource_id);
            if let Some(reporter) = &reference.reporter {
                rules.required("reference.reporter.type", &reporter.r#type);
            }
        }
    }
    rules.0
}

/// A report as snake_case JSON, default fields left out.
fn report_json(request: &ReportResourceRequest) -> Value {
    let mut out = Map::new();
    if let Some(id) = &request.inventory_id {
        out.insert("inventory_id".into(), json!(id));
    }
    out.insert("type".into(), json!(request.r#type));
    out.insert("reporter_type".into(), json!(request.reporter_type));
    out.insert(
        "reporter_instance_id".into(),
        json!(request.reporter_instance_id),
    );
    if let Some(representations) = &request.representations {
        let mut r = Map::new();
        if let Some(metadata) = &representations.metadata {
            let mut m = Map::new();
            m.insert(
                "local_resource_id".into(),
                json!(metadata.local_resource_id),
            );
            m.insert("api_href".into(), json!(metadata.api_href));
            if let Some(v) = &metadata.console_href {
                m.insert("console_href".into(), json!(v));
            }
            if let Some(v) = &metadata.reporter_version {
                m.insert("reporter_version".into(), json!(v));
            }
            if let Some(IdempotencyKey::TransactionId(id)) = &metadata.idempotency_key {
                m.insert("transaction_id".into(), json!(id));
            }
            r.insert("metadata".into(), Value::Object(m));
        }
        if let Some(common) = &representations.common {
            r.insert("common".into(), struct_to_json(common));
        }
        if let Some(reporter) = &representations.reporter {
            r.insert("reporter".into(), struct_to_json(reporter));
        }
        out.insert("representations".into(), Value::Object(r));
    }
    if request.write_visibility != 0 {
        let name = WriteVisibility::try_from(request.write_visibility)
            .map(|v| v.as_str_name().to_string())
            .unwrap_or_else(|_| request.write_visibility.to_string());
        out.insert("write_visibility".into(), json!(name));
    }
    Value::Object(out)
}

/// A delete as snake_case JSON, default fields left out.
fn delete_json(request: &DeleteResourceRequest) -> Value {
    let Some(reference) = &request.reference else {
        return json!({});
    };
    let mut r = Map::new();
    r.insert("resource_type".into(), json!(reference.resource_type));
    r.insert("resource_id".into(), json!(reference.resource_id));
    if let Some(reporter) = &reference.reporter {
        let mut p = Map::new();
        p.insert("type".into(), json!(reporter.r#type));
        if let Some(id) = &reporter.instance_id {
            p.insert("instance_id".into(), json!(id));
        }
        r.insert("reporter".into(), Value::Object(p));
    }
    json!({ "reference": Value::Object(r) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_documented_regexes() {
        assert!(pattern_ok("k8s_cluster-1", true));
        assert!(!pattern_ok("k8s_cluster-1", false));
        assert!(pattern_ok("host", false));
        assert!(!pattern_ok("", true));
        assert!(!pattern_ok("a b", true));
        assert!(!pattern_ok("hôte", true));
    }

    #[test]
    fn names_every_violation() {
        let request = ReportResourceRequest {
            r#type: "bad type".into(),
            reporter_type: String::new(),
            reporter_instance_id: "x".repeat(257),
            ..Default::default()
        };
        let violations = validate_report(&request);
        assert_eq!(
            violations,
            [
                "type: value does not match regex pattern `^[A-Za-z0-9_-]+$` [string.pattern]",
                "reporter_type: value is required [string.min_len]",
                "reporter_instance_id: value length must be at most 256 characters [string.max_len]",
                "representations: value is required [required]",
            ]
        );
    }
}
