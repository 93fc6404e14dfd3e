//! Turning AWS SDK failures into domain errors.
//!
//! What an error detail may carry: the operation, the service error code, the request id and,
//! for transport failures, the connector's message. Never a request or response body: those
//! hold stored items (DynamoDB) or key material and ciphertext (KMS).

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use vmx_domain::Error;

/// What the caller is told to wait before retrying a throttled or unreachable dependency.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Error codes that mean "slow down" (already retried by the SDK's standard retry mode).
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TransactionInProgressException",
    "TransactionConflictException",
    "SlowDown",
];

/// Service-side failures that are transient.
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "KMSInternalException",
    "KmsInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

pub(crate) fn is_throttling(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// How an SDK call failed, with no bodies attached.
pub(crate) enum Failure {
    /// The service answered with an error code.
    Service {
        code: String,
        request_id: Option<String>,
    },
    /// The request did not get a usable answer: connection, timeout, unparseable response.
    Transport(String),
    /// The request could not even be built.
    Construction(String),
}

pub(crate) fn classify<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            Failure::Service {
                code: e.code().unwrap_or("Unknown").to_owned(),
                request_id: e.meta().extra("aws_request_id").map(str::to_owned),
            }
        }
        SdkError::TimeoutError(_) => Failure::Transport("timed out".to_owned()),
        // The connector's own message (connection refused, DNS, TLS): no bodies in it.
        SdkError::DispatchFailure(_) => {
            Failure::Transport(format!("dispatch failure: {}", DisplayErrorContext(err)))
        }
        // A response that could not be parsed: its body is not shown.
        SdkError::ResponseError(_) => Failure::Transport("unreadable response".to_owned()),
        SdkError::ConstructionFailure(_) => {
            Failure::Construction(format!("{}", DisplayErrorContext(err)))
        }
        _ => Failure::Transport("unknown SDK failure".to_owned()),
    }
}

fn with_request_id(detail: String, request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!("{detail} (request id {id})"),
        None => detail,
    }
}

/// The default mapping: throttling and transient failures are `Unavailable` with a retry
/// hint, anything else `Internal`. `what` names the service and operation.
pub(crate) fn default_error(what: &str, failure: Failure) -> Error {
    match failure {
        Failure::Service { code, request_id } => {
            let detail = with_request_id(format!("{what}: {code}"), request_id.as_deref());
            if is_throttling(&code) || TRANSIENT_CODES.contains(&code.as_str()) {
                Error::unavailable(Some(RETRY_AFTER_SECS), detail)
            } else {
                Error::internal(detail)
            }
        }
        Failure::Transport(detail) => {
            Error::unavailable(Some(RETRY_AFTER_SECS), format!("{what}: {detail}"))
        }
        Failure::Construction(detail) => Error::internal(format!("{what}: {detail}")),
    }
}

/// A JSON (de)serialization failure described without the text it was reading: serde_json's
/// messages can quote values, and stored documents hold ciphertext.
pub(crate) fn json_error(what: &str, e: &serde_json::Error) -> Error {
    Error::internal(format!(
        "{what}: {:?} JSON error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// How an SDK call to a provider-facing AWS API (STS for role assumption, Bedrock runtime)
/// failed, as the provider adapters need it: the service's code and message, or what went
/// wrong on the way. No request or response body is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The service answered with an error code (`message` is the service's own text, which
    /// never holds the caller's credentials).
    Service {
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// No answer in time (connect, attempt or operation timeout).
    Timeout,
    /// The service could not be reached (DNS, connect, TLS, reset).
    Network(String),
    /// An answer that could not be read.
    Unreadable,
    /// The request could not be built or signed.
    Construction(String),
}

/// Longest service message kept.
const CALL_MESSAGE_MAX: usize = 500;

/// What went wrong in a failed SDK call, with the service's code and message.
pub fn call_failure<E, R>(err: &SdkError<E, R>) -> CallFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            CallFailure::Service {
                code: e.code().unwrap_or("Unknown").to_owned(),
                message: clean_message(e.message().unwrap_or_default()),
                request_id: e.meta().extra("aws_request_id").map(str::to_owned),
            }
        }
        SdkError::TimeoutError(_) => CallFailure::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => CallFailure::Timeout,
        SdkError::DispatchFailure(d) if d.is_io() => {
            CallFailure::Network("connection failed".into())
        }
        SdkError::DispatchFailure(_) => {
            CallFailure::Network(format!("{}", DisplayErrorContext(err)))
        }
        SdkError::ResponseError(_) => CallFailure::Unreadable,
        SdkError::ConstructionFailure(_) => {
            CallFailure::Construction(format!("{}", DisplayErrorContext(err)))
        }
        _ => CallFailure::Network("unknown SDK failure".into()),
    }
}

/// A service message fit for an error: control characters removed, length bounded.
pub(crate) fn clean_message(message: &str) -> String {
    message
        .chars()
        .filter(|c| !c.is_control())
        .take(CALL_MESSAGE_MAX)
        .collect()
}
