//! What vmx sends a provider as a request's output limit: the one place that reads it, so
//! that the admission's reservation and the provider translation agree.
//!
//! On `POST /v1/chat/completions` the caller's limit is `max_completion_tokens`, else
//! `max_tokens` (for `gemini` connections, else `generationConfig.maxOutputTokens`, which
//! the Gemini translation passes through); the number of choices is `n` (Gemini, when `n`
//! is absent: `generationConfig.candidateCount`), each choice up to the limit.
//! `max_output_tokens` (the OpenAI Responses API's name) is not a Chat Completions field
//! and is refused with a 400 naming it, as OpenAI refuses it. On `POST /v1/messages` the
//! limit is `max_tokens` and there is one choice.
//!
//! When the caller states no limit, vmx reserves its default (`VMX_DEFAULT_OUTPUT_TOKENS`)
//! and, whenever a token window applies to the request or the provider requires a limit
//! (Anthropic and Bedrock InvokeModel), writes the limit it reserved into the body with
//! [`set_output_limit`], so the provider is never allowed more than was reserved.

use serde_json::{Map, Value, json};

use crate::provider::ProviderKind;

/// The inference route a body arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions` (OpenAI Chat Completions).
    ChatCompletions,
    /// `POST /v1/messages` (Anthropic Messages).
    Messages,
}

/// The output a request may produce: `choices` answers of at most `per_choice` tokens each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub per_choice: u64,
    pub choices: u64,
}

impl OutputLimit {
    /// The most output tokens of the whole request.
    pub fn total(self) -> u64 {
        self.per_choice.saturating_mul(self.choices)
    }

    /// The limit that fits in `reserved` output tokens: `reserved / choices` per choice, at
    /// most `per_choice`, at least 1 (the admission reserves one token per choice before
    /// anything else, see [`crate::admission::TokenEstimate::for_output`]).
    pub fn within(self, reserved: u64) -> OutputLimit {
        let choices = self.choices.max(1);
        OutputLimit {
            per_choice: (reserved / choices).clamp(1, self.per_choice.max(1)),
            choices,
        }
    }
}

/// A body field that states the output limit or the choices wrongly: a 400 naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOutputField {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, what: &str) -> InvalidOutputField {
    InvalidOutputField {
        field: field.to_owned(),
        message: format!("{field}: {what}"),
    }
}

/// A positive integer at `body[name]`; `None` when absent or null.
fn positive(
    obj: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<u64>, InvalidOutputField> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(field, "must be a positive integer")),
        },
    }
}

/// The Gemini `generationConfig` (or `generation_config`) object the caller sent, if any.
fn gemini_config(body: &Map<String, Value>) -> Option<(&'static str, &Map<String, Value>)> {
    [("generationConfig"), ("generation_config")]
        .into_iter()
        .find_map(|name| match body.get(name) {
            Some(Value::Object(o)) => Some((name, o)),
            _ => None,
        })
}

/// The Chat Completions output limit the caller stated: `max_completion_tokens`, else
/// `max_tokens`. The translations to other wire formats read it with this function.
pub fn chat_max_tokens(body: &Map<String, Value>) -> Result<Option<u64>, InvalidOutputField> {
    for name in ["max_completion_tokens", "max_tokens"] {
        if let Some(n) = positive(body, name, name)? {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// The output limit the caller stated on `route` for a `kind` connection, if any.
pub fn requested_output(
    kind: ProviderKind,
    route: Route,
    body: &Map<String, Value>,
) -> Result<Option<u64>, InvalidOutputField> {
    match route {
        Route::Messages => positive(body, "max_tokens", "max_tokens"),
        Route::ChatCompletions => {
            if body.get("max_output_tokens").is_some_and(|v| !v.is_null()) {
                return Err(invalid(
                    "max_output_tokens",
                    "is not a Chat Completions field (it is the Responses API's); use max_completion_tokens",
                ));
            }
            if let Some(n) = chat_max_tokens(body)? {
                return Ok(Some(n));
            }
            match (kind, gemini_config(body)) {
                (ProviderKind::Gemini, Some((name, c))) => {
                    positive(c, "maxOutputTokens", &format!("{name}.maxOutputTokens"))
                }
                _ => Ok(None),
            }
        }
    }
}

/// How many answers the request asks for on `route` (`n`; see the module documentation).
pub fn choices(
    kind: ProviderKind,
    route: Route,
    body: &Map<String, Value>,
) -> Result<u64, InvalidOutputField> {
    if route == Route::Messages {
        return Ok(1);
    }
    if let Some(n) = positive(body, "n", "n")? {
        return Ok(n);
    }
    match (kind, gemini_config(body)) {
        (ProviderKind::Gemini, Some((name, c))) => {
            Ok(positive(c, "candidateCount", &format!("{name}.candidateCount"))?.unwrap_or(1))
        }
        _ => Ok(1),
    }
}

/// What vmx will allow the provider to produce for this request when nothing caps it
/// further: the caller's limit (or `default` when it states none) per choice, times the
/// choices.
pub fn output_limit(
    kind: ProviderKind,
    route: Route,
    body: &Map<String, Value>,
    default: u64,
) -> Result<OutputLimit, InvalidOutputField> {
    Ok(OutputLimit {
        per_choice: requested_output(kind, route, body)?
            .unwrap_or(default)
            .max(1),
        choices: choices(kind, route, body)?,
    })
}

/// Whether the provider needs an output limit in every request (vmx fills its default in
/// when the caller states none).
pub fn requires_output_limit(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::Anthropic | ProviderKind::AwsBedrockInvoke
    )
}

/// Writes `per_choice` into `body` where the translation for `kind` on `route` reads it
/// ([`requested_output`]), replacing what the caller stated: on chat, every one of
/// `max_completion_tokens` and `max_tokens` the caller sent, or when it sent neither,
/// `max_completion_tokens` (OpenAI, Groq and the translated providers) or `max_tokens`
/// (Perplexity); on messages, `max_tokens`.
pub fn set_output_limit(
    kind: ProviderKind,
    route: Route,
    body: &mut Map<String, Value>,
    per_choice: u64,
) {
    if route == Route::Messages {
        body.insert("max_tokens".into(), json!(per_choice));
        return;
    }
    let mut written = false;
    for name in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = body.get_mut(name)
            && !v.is_null()
        {
            *v = json!(per_choice);
            written = true;
        }
    }
    if !written {
        let name = if kind == ProviderKind::Perplexity {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.insert(name.into(), json!(per_choice));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    const ALL: [ProviderKind; 7] = [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Groq,
        ProviderKind::Perplexity,
        ProviderKind::AwsBedrock,
        ProviderKind::AwsBedrockInvoke,
    ];

    #[test]
    fn chat_limit_is_max_completion_tokens_then_max_tokens_then_default_times_n() {
        for kind in ALL {
            let chat = Route::ChatCompletions;
            let b = obj(json!({"max_completion_tokens": 10, "max_tokens": 20, "n": 3}));
            assert_eq!(
                output_limit(kind, chat, &b, 4096).unwrap(),
                OutputLimit {
                    per_choice: 10,
                    choices: 3
                }
            );
            let b = obj(json!({"max_tokens": 20}));
            assert_eq!(output_limit(kind, chat, &b, 4096).unwrap().total(), 20);
            let b = obj(json!({"max_completion_tokens": null, "n": 2}));
            assert_eq!(output_limit(kind, chat, &b, 100).unwrap().total(), 200);
        }
    }

    #[test]
    fn max_output_tokens_and_bad_values_are_refused_naming_the_field() {
        let chat = Route::ChatCompletions;
        for (body, field) in [
            (json!({"max_output_tokens": 1}), "max_output_tokens"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": "5"}),
                "max_completion_tokens",
            ),
            (json!({"n": 0}), "n"),
            (json!({"n": 1.5}), "n"),
        ] {
            let e = output_limit(ProviderKind::OpenAi, chat, &obj(body), 4096).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
        let e = output_limit(
            ProviderKind::Gemini,
            chat,
            &obj(json!({"generationConfig": {"candidateCount": -1}})),
            1,
        )
        .unwrap_err();
        assert_eq!(e.field, "generationConfig.candidateCount");
    }

    #[test]
    fn gemini_generation_config_counts_when_the_openai_fields_are_absent() {
        let chat = Route::ChatCompletions;
        let b = obj(json!({"generationConfig": {"maxOutputTokens": 50, "candidateCount": 2}}));
        assert_eq!(
            output_limit(ProviderKind::Gemini, chat, &b, 4096).unwrap(),
            OutputLimit {
                per_choice: 50,
                choices: 2
            }
        );
        // Only the Gemini translation reads generationConfig.
        assert_eq!(
            output_limit(ProviderKind::OpenAi, chat, &b, 4096)
                .unwrap()
                .total(),
            4096
        );
        let b = obj(json!({"max_tokens": 7, "generation_config": {"maxOutputTokens": 50}}));
        assert_eq!(
            output_limit(ProviderKind::Gemini, chat, &b, 4096)
                .unwrap()
                .total(),
            7
        );
    }

    #[test]
    fn messages_limit_is_max_tokens_with_one_choice() {
        let b = obj(json!({"max_tokens": 30, "n": 4, "max_output_tokens": 9}));
        let l = output_limit(ProviderKind::Anthropic, Route::Messages, &b, 4096).unwrap();
        assert_eq!(
            l,
            OutputLimit {
                per_choice: 30,
                choices: 1
            }
        );
    }

    #[test]
    fn within_splits_the_reservation_over_the_choices() {
        let l = OutputLimit {
            per_choice: 100,
            choices: 3,
        };
        assert_eq!(l.within(1000).per_choice, 100);
        assert_eq!(l.within(31).per_choice, 10);
        assert_eq!(l.within(3).per_choice, 1);
        assert!(l.within(31).total() <= 31);
    }

    #[test]
    fn what_is_written_is_what_is_read_back() {
        for kind in ALL {
            for route in [Route::ChatCompletions, Route::Messages] {
                for body in [
                    json!({}),
                    json!({"max_tokens": 500}),
                    json!({"max_completion_tokens": 500, "max_tokens": 600}),
                    json!({"generationConfig": {"maxOutputTokens": 900}}),
                ] {
                    let mut b = obj(body);
                    set_output_limit(kind, route, &mut b, 42);
                    assert_eq!(
                        requested_output(kind, route, &b).unwrap(),
                        Some(42),
                        "{kind} {b:?}"
                    );
                }
            }
        }
    }
}
