//! Bedrock control fields a caller may not send. The connection's `guardrailConfig`,
//! `performanceConfig` and the model (from `<connection>/<model>`, checked against
//! `allowedModels`) are the operator's; Bedrock would also read some of them from the request
//! body, so a body that tries to set one is refused with a 400 naming the field, before
//! anything reaches Bedrock. Refused rather than silently stripped: a caller who sends one
//! learns that it does nothing here instead of believing it took effect.
//!
//! Refused, in the top level of every Bedrock body (`/v1/messages` and
//! `/v1/chat/completions`, both providers):
//! - any key starting with `amazon-bedrock-` (any case), e.g.
//!   `amazon-bedrock-guardrailConfig`, whose `tagSuffix` limits the guardrail to tagged text
//!   and whose `streamProcessingMode: ASYNCHRONOUS` streams text out before the check;
//! - the Bedrock API's own parameter names for the same controls: [`CONTROL_PARAMETERS`].
//!
//! And in `additionalModelRequestFields` (Converse merges it into the model's own request
//! body): any `amazon-bedrock-` key, named as `additionalModelRequestFields.<key>`.

use serde_json::{Map, Value};
use vmx_domain::inference::ProviderError;
use vmx_providers::content::invalid;

/// The Bedrock API parameters that choose the guardrail, the performance settings, the
/// service tier or the model; the connection sets them, a body may not.
pub const CONTROL_PARAMETERS: [&str; 8] = [
    "guardrailConfig",
    "guardrailIdentifier",
    "guardrailVersion",
    "trace",
    "performanceConfig",
    "performanceConfigLatency",
    "serviceTier",
    "modelId",
];

const BODY_CONTROL_PREFIX: &str = "amazon-bedrock-";

fn is_body_control(key: &str) -> bool {
    key.get(..BODY_CONTROL_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(BODY_CONTROL_PREFIX))
}

fn refused(field: &str) -> ProviderError {
    invalid(
        format!(
            "{field}: not accepted: the connection sets Bedrock's guardrail, performance and model settings; remove the field"
        ),
        Some(field),
    )
}

/// Refuses a body that sets a Bedrock control field (see the module docs).
pub fn refuse_control_fields(body: &Map<String, Value>) -> Result<(), ProviderError> {
    if let Some(key) = body
        .keys()
        .find(|k| is_body_control(k) || CONTROL_PARAMETERS.contains(&k.as_str()))
    {
        return Err(refused(key));
    }
    if let Some(Value::Object(fields)) = body.get("additionalModelRequestFields")
        && let Some(key) = fields.keys().find(|k| is_body_control(k))
    {
        return Err(refused(&format!("additionalModelRequestFields.{key}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Option<String> {
        let Value::Object(o) = v else {
            return Some("not an object".into());
        };
        match refuse_control_fields(&o) {
            Ok(()) => None,
            Err(ProviderError::BadRequest { param, .. }) => param,
            Err(e) => Some(format!("{e:?}")),
        }
    }

    #[test]
    fn control_fields_are_named() {
        assert_eq!(
            check(json!({"messages": [], "max_tokens": 1, "top_k": 3})),
            None
        );
        assert_eq!(
            check(json!({"amazon-bedrock-guardrailConfig": {"tagSuffix": "x"}})).as_deref(),
            Some("amazon-bedrock-guardrailConfig")
        );
        assert_eq!(
            check(json!({"AMAZON-BEDROCK-x": 1})).as_deref(),
            Some("AMAZON-BEDROCK-x")
        );
        for p in CONTROL_PARAMETERS {
            assert_eq!(check(json!({ p: {} })).as_deref(), Some(p));
        }
        assert_eq!(
            check(json!({"additionalModelRequestFields": {"amazon-bedrock-trace": 1}})).as_deref(),
            Some("additionalModelRequestFields.amazon-bedrock-trace")
        );
        assert_eq!(
            check(json!({"additionalModelRequestFields": {"top_k": 1, "trace": 1}})),
            None,
            "model fields of the same name as a Converse parameter are the model's"
        );
    }
}
