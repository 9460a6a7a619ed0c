//! What a gRPC status from Kessel means for a delivery.
//!
//! Kessel says "already done" in two ways that are not failures for an
//! at-least-once reporter: a report whose `transaction_id` it has seen
//! (normally a success that writes nothing; a *concurrent* duplicate may
//! instead fail with InvalidArgument and the reason "NON-UNIQUE TRANSACTION
//! ID", in the message or in a `google.rpc.ErrorInfo` detail), and NotFound
//! on a delete (a delete replayed after a lost acknowledgement, when the
//! resource was never reported or has been purged).

use super::config::DeleteNotFound;
use super::proto::rpc;
use prost::Message as _;
use tonic::{Code, Status};

/// The reason Kessel gives for a transaction id it has already processed.
pub const NON_UNIQUE_TRANSACTION_ID: &str = "NON-UNIQUE TRANSACTION ID";

/// The Kessel API method a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ReportResource,
    DeleteResource,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::ReportResource => "ReportResource",
            Method::DeleteResource => "DeleteResource",
        }
    }
}

/// What a status means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kessel has what this call would write: delivered.
    AlreadyApplied(Applied),
    /// A passing failure: retry later.
    Retryable,
    /// The token was refused: refresh it and try again once.
    Unauthenticated,
    /// Kessel refuses the call; no retry can help.
    Permanent,
}

/// Why a failed call still counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A concurrent duplicate of a report already applied.
    DuplicateTransactionId,
    /// A delete of a resource Kessel does not have.
    DeleteNotFound,
}

/// Classifies a failed call.
pub fn classify(method: Method, status: &Status, delete_not_found: DeleteNotFound) -> Verdict {
    // A certificate the client does not trust will not become trusted by
    // retrying: the configuration (tls.ca_file, tls.server_name) is wrong.
    if certificate_problem(status).is_some() {
        return Verdict::Permanent;
    }
    match status.code() {
        Code::InvalidArgument if method == Method::ReportResource && is_non_unique(status) => {
            Verdict::AlreadyApplied(Applied::DuplicateTransactionId)
        }
        Code::NotFound
            if method == Method::DeleteResource && delete_not_found == DeleteNotFound::Success =>
        {
            Verdict::AlreadyApplied(Applied::DeleteNotFound)
        }
        // Unknown and Cancelled cover transport trouble (a proxy's error
        // page, a reset stream, a call that ran out of time): passing.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Internal
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown => Verdict::Retryable,
        Code::Unauthenticated => Verdict::Unauthenticated,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss => Verdict::Permanent,
    }
}

/// Whether an InvalidArgument is Kessel's "NON-UNIQUE TRANSACTION ID".
fn is_non_unique(status: &Status) -> bool {
    status
        .message()
        .to_ascii_uppercase()
        .contains(NON_UNIQUE_TRANSACTION_ID)
        || reasons(status).any(|reason| reason.eq_ignore_ascii_case(NON_UNIQUE_TRANSACTION_ID))
}

/// The `ErrorInfo` reasons in a status's details, if any.
pub fn reasons(status: &Status) -> impl Iterator<Item = String> {
    let details = rpc::Status::decode(status.details()).unwrap_or_default();
    details
        .details
        .into_iter()
        .filter(|any| {
            any.type_url.ends_with("/google.rpc.ErrorInfo")
                || any.type_url == "google.rpc.ErrorInfo"
        })
        .filter_map(|any| rpc::ErrorInfo::decode(any.value.as_slice()).ok())
        .map(|info| info.reason)
        .filter(|reason| !reason.is_empty())
}

/// The TLS certificate problem that failed the connection, if that is
/// what a status is.
pub fn certificate_problem(status: &Status) -> Option<String> {
    let invalid = |error: &(dyn std::error::Error + 'static)| match error.downcast_ref() {
        Some(rustls_error @ rustls::Error::InvalidCertificate(_)) => Some(rustls_error.to_string()),
        _ => None,
    };
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if let Some(problem) = invalid(error) {
            return Some(problem);
        }
        // tokio-rustls wraps the rustls error in an io::Error, whose
        // `source` skips it.
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(problem) = invalid(inner)
        {
            return Some(problem);
        }
        next = error.source();
    }
    None
}

/// The words for a failed call: the server's code, message and reasons,
/// or what kept the client from reaching it.
pub fn describe(method: Method, status: &Status) -> String {
    if let Some(problem) = certificate_problem(status) {
        return format!(
            "cannot call {}: the server's TLS certificate is not trusted ({problem}); check tls.ca_file and tls.server_name",
            method.name()
        );
    }
    // A status with a source was made by the client from a transport error.
    if std::error::Error::source(status).is_some() {
        return format!(
            "cannot call {}: {:?}: {}",
            method.name(),
            status.code(),
            status.message()
        );
    }
    let mut text = format!("Kessel answered {} with {:?}", method.name(), status.code());
    let message = status.message().trim();
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(message);
    }
    let reasons: Vec<String> = reasons(status).collect();
    if !reasons.is_empty() {
        text.push_str(&format!(" (reason: {})", reasons.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(code: Code, message: &str, reason: &str) -> Status {
        let info = rpc::ErrorInfo {
            reason: reason.into(),
            domain: "kessel".into(),
            metadata: Default::default(),
        };
        let details = rpc::Status {
            code: code as i32,
            message: message.into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, message, details.encode_to_vec().into())
    }

    #[test]
    fn sorts_codes_into_retryable_and_permanent() {
        let report = |code| {
            classify(
                Method::ReportResource,
                &Status::new(code, "x"),
                DeleteNotFound::Success,
            )
        };
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Aborted,
        ] {
            assert_eq!(report(code), Verdict::Retryable, "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::AlreadyExists,
            Code::Unimplemented,
        ] {
            assert_eq!(report(code), Verdict::Permanent, "{code:?}");
        }
        assert_eq!(report(Code::Unauthenticated), Verdict::Unauthenticated);
    }

    #[test]
    fn a_non_unique_transaction_id_is_already_applied() {
        let duplicate = Verdict::AlreadyApplied(Applied::DuplicateTransactionId);
        let in_message = Status::invalid_argument("NON-UNIQUE TRANSACTION ID: tx-1");
        assert_eq!(
            classify(Method::ReportResource, &in_message, DeleteNotFound::Success),
            duplicate
        );
        let in_details = with_reason(Code::InvalidArgument, "conflict", NON_UNIQUE_TRANSACTION_ID);
        assert_eq!(
            classify(Method::ReportResource, &in_details, DeleteNotFound::Success),
            duplicate
        );
        assert_eq!(
            describe(Method::ReportResource, &in_details),
            "Kessel answered ReportResource with InvalidArgument: conflict (reason: NON-UNIQUE TRANSACTION ID)"
        );
        let other = with_reason(Code::InvalidArgument, "bad type", "VALIDATION");
        assert_eq!(
            classify(Method::ReportResource, &other, DeleteNotFound::Success),
            Verdict::Permanent
        );
    }

    #[test]
    fn not_found_on_delete_follows_the_setting() {
        let not_found = Status::not_found("resource not found");
        assert_eq!(
            classify(Method::DeleteResource, &not_found, DeleteNotFound::Success),
            Verdict::AlreadyApplied(Applied::DeleteNotFound)
        );
        assert_eq!(
            classify(Method::DeleteResource, &not_found, DeleteNotFound::Error),
            Verdict::Permanent
        );
    }
}
