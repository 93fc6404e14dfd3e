//! Bedrock failures as [`ProviderError`]s, with what one call is about ([`CallCtx`]: the
//! operation, role, region, model and whether a guardrail is set) so the message says what to
//! fix.
//!
//! Error mapping (Bedrock error code -> [`ProviderError`]; the message keeps Bedrock's own text,
//! which names the customer's role and model but never a credential):
//!
//! | Bedrock | ProviderError |
//! |---|---|
//! | `ThrottlingException`, `ServiceQuotaExceededException` | `RateLimited` (429) |
//! | `AccessDeniedException` "You don't have access to the model" / "Model access is denied" | `BadRequest { status: 403, code: "model_not_enabled" }` |
//! | other `AccessDeniedException` | `Unauthorized { status: 403 }`, message naming the role and the IAM actions it needs |
//! | `ResourceNotFoundException` | `BadRequest { status: 404, code: "guardrail_not_found" }` when about the guardrail, else `"model_not_enabled"` |
//! | `ValidationException` about the guardrail / the model id | `BadRequest { status: 400, code: "guardrail_not_found" / "model_not_enabled" }` |
//! | other `ValidationException` | `BadRequest { status: 400, code: "ValidationException" }` |
//! | `ModelNotReadyException`, `ServiceUnavailableException` | `Upstream { status: 503 }` |
//! | `ModelTimeoutException`, SDK timeouts | `Timeout` |
//! | anything else (`InternalServerException`, `ModelErrorException`, `ModelStreamErrorException`, ...) | `Upstream { status: 502 }` |
//! | STS failures while assuming the role | see [`vmx_aws::sts`] (`AccessDenied` -> `Unauthorized { status: 401 }`) |

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use vmx_aws::{CallFailure, call_failure};
use vmx_domain::connection::AwsConfig;
use vmx_domain::inference::ProviderError;

/// What one Bedrock call is about, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    pub op: &'static str,
    pub role_arn: String,
    pub region: String,
    pub model: String,
    pub guardrail: bool,
}

impl CallCtx {
    pub fn new(op: &'static str, config: &AwsConfig, model: &str) -> Self {
        Self {
            op,
            role_arn: config.iam_role_arn.clone(),
            region: config.region.clone(),
            model: model.to_owned(),
            guardrail: config.guardrail_config.is_some(),
        }
    }

    /// A failed SDK call.
    pub fn error<E, R>(&self, err: &SdkError<E, R>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.failure(call_failure(err))
    }

    /// A failure in an event stream: the exception event's type (`variant` names it) gives
    /// the code when the event carries none.
    pub fn stream_error<E, R>(
        &self,
        err: &SdkError<E, R>,
        variant: impl Fn(&E) -> Option<&'static str>,
    ) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let variant = match err {
            SdkError::ServiceError(s) => variant(s.err()),
            _ => None,
        };
        let mut failure = call_failure(err);
        if let (CallFailure::Service { code, .. }, Some(v)) = (&mut failure, variant)
            && (code == "Unknown" || code.is_empty())
        {
            v.clone_into(code);
        }
        self.failure(failure)
    }

    pub fn failure(&self, failure: CallFailure) -> ProviderError {
        match failure {
            CallFailure::Service { code, message, .. } => self.service(&code, &message),
            CallFailure::Timeout => ProviderError::Timeout,
            CallFailure::Network(m) => ProviderError::Network(format!("Bedrock runtime: {m}")),
            CallFailure::Unreadable => {
                ProviderError::Malformed("an unreadable Bedrock runtime response".into())
            }
            CallFailure::Construction(m) => ProviderError::Upstream {
                status: 502,
                message: format!("the Bedrock {} request could not be built: {m}", self.op),
            },
        }
    }

    fn service(&self, code: &str, message: &str) -> ProviderError {
        let lower = message.to_ascii_lowercase();
        let about_guardrail = lower.contains("guardrail");
        let about_model_id = lower.contains("model id") || lower.contains("inference profile");
        let bad = |status: u16, code: &str, text: String| ProviderError::BadRequest {
            status,
            message: text,
            param: None,
            code: Some(code.to_owned()),
        };
        let (model, region, role) = (&self.model, &self.region, &self.role_arn);
        match code {
            "ThrottlingException"
            | "ServiceQuotaExceededException"
            | "TooManyRequestsException" => ProviderError::RateLimited {
                retry_after_secs: None,
                message: format!("Bedrock {code}: {message}"),
                limits: Vec::new(),
            },
            "AccessDeniedException" | "AccessDenied"
                if lower.contains("access to the model") || lower.contains("model access") =>
            {
                bad(
                    403,
                    "model_not_enabled",
                    format!(
                        "model '{model}' is not enabled for this account in {region}: enable it \
                         under Amazon Bedrock > Model access ({code}: {message})"
                    ),
                )
            }
            "AccessDeniedException" | "AccessDenied" => ProviderError::Unauthorized {
                status: 403,
                message: format!(
                    "Bedrock denied {op} on model '{model}' in {region} to the role {role} \
                     ({code}: {message}); check that the role's IAM policy allows \
                     bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream on this \
                     model{guardrail}",
                    op = self.op,
                    guardrail = if self.guardrail {
                        ", and bedrock:ApplyGuardrail on the connection's guardrail"
                    } else {
                        ""
                    },
                ),
            },
            "ResourceNotFoundException" | "ValidationException" if about_guardrail => bad(
                if code == "ValidationException" {
                    400
                } else {
                    404
                },
                "guardrail_not_found",
                format!(
                    "the connection's guardrail was not found in {region} (check \
                     guardrailConfig.guardrailIdentifier and guardrailVersion) ({code}: {message})"
                ),
            ),
            "ResourceNotFoundException" => bad(
                404,
                "model_not_enabled",
                format!("model '{model}' is not available in {region} ({code}: {message})"),
            ),
            "ValidationException" if about_model_id => bad(
                400,
                "model_not_enabled",
                format!("model '{model}' cannot be invoked in {region} ({code}: {message})"),
            ),
            "ValidationException" => bad(400, "ValidationException", message.to_owned()),
            "ModelNotReadyException" | "ServiceUnavailableException" | "ServiceUnavailable" => {
                ProviderError::Upstream {
                    status: 503,
                    message: format!("Bedrock {code}: {message}"),
                }
            }
            "ModelTimeoutException" => ProviderError::Timeout,
            _ => ProviderError::Upstream {
                status: 502,
                message: format!("Bedrock {code}: {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallCtx {
        CallCtx {
            op: "Converse",
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            region: "us-east-1".into(),
            model: "m".into(),
            guardrail: true,
        }
    }

    #[test]
    fn error_codes_map_to_provider_errors() {
        let c = ctx();
        assert!(matches!(
            c.service("ThrottlingException", "slow down"),
            ProviderError::RateLimited { .. }
        ));
        assert!(matches!(
            c.service("ValidationException", "bad field"),
            ProviderError::BadRequest { status: 400, ref code, .. } if code.as_deref() == Some("ValidationException")
        ));
        assert!(matches!(
            c.service("ValidationException", "The provided model identifier is invalid."),
            ProviderError::BadRequest { ref code, .. } if code.as_deref() == Some("model_not_enabled")
        ));
        assert!(matches!(
            c.service("ValidationException", "The guardrail identifier or version provided in the request does not exist."),
            ProviderError::BadRequest { ref code, .. } if code.as_deref() == Some("guardrail_not_found")
        ));
        assert!(matches!(
            c.service("AccessDeniedException", "You don't have access to the model with the specified model ID."),
            ProviderError::BadRequest { status: 403, ref code, .. } if code.as_deref() == Some("model_not_enabled")
        ));
        let ProviderError::Unauthorized { status, message } = c.service(
            "AccessDeniedException",
            "not authorized to perform bedrock:InvokeModel",
        ) else {
            panic!()
        };
        assert_eq!(status, 403);
        assert!(message.contains("arn:aws:iam::123456789012:role/r"));
        assert!(message.contains("bedrock:ApplyGuardrail"));
        assert!(matches!(
            c.service("ModelNotReadyException", "x"),
            ProviderError::Upstream { status: 503, .. }
        ));
        assert!(matches!(
            c.service("ServiceUnavailableException", "x"),
            ProviderError::Upstream { status: 503, .. }
        ));
        assert!(matches!(
            c.service("InternalServerException", "x"),
            ProviderError::Upstream { status: 502, .. }
        ));
        assert!(matches!(
            c.service("ModelTimeoutException", "x"),
            ProviderError::Timeout
        ));
    }
}
