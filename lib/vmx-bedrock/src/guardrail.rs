//! A Bedrock guardrail trace as JSON, for the `vmx.guardrail` field of a response.

use aws_sdk_bedrockruntime::types as bt;
use serde_json::{Map, Value, json};

/// The guardrail trace in Bedrock's own JSON names (`inputAssessment`, `outputAssessments`,
/// `actionReason`, `modelOutput`; per policy the topics, filters, words, PII entities, regexes
/// and grounding scores with their action and detection), for the `vmx.guardrail` field.
pub(crate) fn guardrail_json(t: &bt::GuardrailTraceAssessment) -> Value {
    let mut o = Map::new();
    if let Some(input) = &t.input_assessment {
        o.insert(
            "inputAssessment".into(),
            assessment_map(input.iter().map(|(k, v)| (k, assessment(v)))),
        );
    }
    if let Some(outputs) = &t.output_assessments {
        o.insert(
            "outputAssessments".into(),
            assessment_map(
                outputs
                    .iter()
                    .map(|(k, v)| (k, Value::Array(v.iter().map(assessment).collect()))),
            ),
        );
    }
    if let Some(r) = &t.action_reason {
        o.insert("actionReason".into(), Value::String(r.clone()));
    }
    if let Some(m) = &t.model_output {
        o.insert("modelOutput".into(), json!(m));
    }
    Value::Object(o)
}

fn assessment_map<'a>(items: impl Iterator<Item = (&'a String, Value)>) -> Value {
    let mut v: Vec<(&String, Value)> = items.collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    Value::Object(v.into_iter().map(|(k, v)| (k.clone(), v)).collect())
}

fn assessment(a: &bt::GuardrailAssessment) -> Value {
    let mut o = Map::new();
    if let Some(p) = &a.topic_policy {
        let topics: Vec<Value> = p
            .topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.r#type.as_str(),
                    "action": t.action.as_str(),
                    "detected": t.detected,
                })
            })
            .collect();
        o.insert("topicPolicy".into(), json!({ "topics": topics }));
    }
    if let Some(p) = &a.content_policy {
        let filters: Vec<Value> = p
            .filters
            .iter()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "confidence": f.confidence.as_str(),
                    "filterStrength": f.filter_strength.as_ref().map(|s| s.as_str()),
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        o.insert("contentPolicy".into(), json!({ "filters": filters }));
    }
    if let Some(p) = &a.word_policy {
        let custom: Vec<Value> = p
            .custom_words
            .iter()
            .map(|w| json!({ "match": w.r#match, "action": w.action.as_str(), "detected": w.detected }))
            .collect();
        let managed: Vec<Value> = p
            .managed_word_lists
            .iter()
            .map(|w| {
                json!({
                    "match": w.r#match,
                    "type": w.r#type.as_str(),
                    "action": w.action.as_str(),
                    "detected": w.detected,
                })
            })
            .collect();
        o.insert(
            "wordPolicy".into(),
            json!({ "customWords": custom, "managedWordLists": managed }),
        );
    }
    if let Some(p) = &a.sensitive_information_policy {
        let pii: Vec<Value> = p
            .pii_entities
            .iter()
            .map(|e| {
                json!({
                    "match": e.r#match,
                    "type": e.r#type.as_str(),
                    "action": e.action.as_str(),
                    "detected": e.detected,
                })
            })
            .collect();
        let regexes: Vec<Value> = p
            .regexes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "match": r.r#match,
                    "regex": r.regex,
                    "action": r.action.as_str(),
                    "detected": r.detected,
                })
            })
            .collect();
        o.insert(
            "sensitiveInformationPolicy".into(),
            json!({ "piiEntities": pii, "regexes": regexes }),
        );
    }
    if let Some(p) = &a.contextual_grounding_policy {
        let filters: Vec<Value> = p
            .filters
            .iter()
            .flatten()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "threshold": f.threshold,
                    "score": f.score,
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        o.insert(
            "contextualGroundingPolicy".into(),
            json!({ "filters": filters }),
        );
    }
    if let Some(p) = &a.automated_reasoning_policy {
        o.insert(
            "automatedReasoningPolicy".into(),
            json!({ "findings": p.findings.as_ref().map_or(0, Vec::len) }),
        );
    }
    if let Some(m) = &a.invocation_metrics {
        o.insert(
            "invocationMetrics".into(),
            json!({ "guardrailProcessingLatency": m.guardrail_processing_latency }),
        );
    }
    Value::Object(o)
}
