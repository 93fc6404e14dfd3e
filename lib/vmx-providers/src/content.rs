//! Walking an OpenAI Chat Completions request, for the adapters that translate it to another
//! wire format (Anthropic, Gemini, Bedrock Converse): the `messages` array and each message's
//! role, its content (a string or an array of parts), the parts' text, image URL and data
//! URLs, an assistant's tool calls and a tool message's call id, function tools and
//! `tool_choice`, and turn assembly (consecutive turns of one role merge). Every refusal is a
//! 400 [`invalid`] naming the field, with the same text whichever provider refuses.

use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;

/// `BadRequest` for a request vmx cannot translate (never the provider's fault).
pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ProviderError {
    ProviderError::BadRequest {
        status: 400,
        message: message.into(),
        param: param.map(str::to_owned),
        code: Some("invalid_request_error".into()),
    }
}

/// A refusal about `messages[i]`: `messages[{i}]: {what}`.
pub fn invalid_message(i: usize, what: &str) -> ProviderError {
    invalid(format!("messages[{i}]: {what}"), Some("messages"))
}

/// The body's `messages` array.
pub fn messages(body: &Map<String, Value>) -> Result<&[Value], ProviderError> {
    body.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| invalid("`messages` must be an array", Some("messages")))
}

/// Refuses `n` > 1 for a `provider` that returns one choice per request.
pub fn single_choice(body: &Map<String, Value>, provider: &str) -> Result<(), ProviderError> {
    match body.get("n").and_then(Value::as_u64) {
        Some(n) if n > 1 => Err(invalid(
            format!("{provider} returns one choice per request: `n` must be 1"),
            Some("n"),
        )),
        _ => Ok(()),
    }
}

/// The `role` of message `i`.
pub fn role(m: &Value, i: usize) -> Result<&str, ProviderError> {
    m.get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}].role is required"), Some("messages")))
}

/// A role `provider` has no turn for.
pub fn unsupported_role(i: usize, role: &str, provider: &str) -> ProviderError {
    invalid(
        format!("messages[{i}].role '{role}' is not supported by {provider}"),
        Some("messages"),
    )
}

/// A conversation that translated to no turn at all.
pub fn no_turns() -> ProviderError {
    invalid("at least one user message is required", Some("messages"))
}

/// A message's `content`.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// Absent or null.
    Absent,
    /// A string (possibly empty).
    Text(&'a str),
    /// An array of parts.
    Parts(&'a [Value]),
}

/// The `content` of message `i`: absent, a string or an array of parts; anything else is
/// refused.
pub fn content(content: Option<&Value>, i: usize) -> Result<Content<'_>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Content::Absent),
        Some(Value::String(s)) => Ok(Content::Text(s)),
        Some(Value::Array(parts)) => Ok(Content::Parts(parts)),
        Some(_) => Err(invalid(
            format!("messages[{i}].content must be a string or an array of parts"),
            Some("messages"),
        )),
    }
}

/// The content of message `i` as blocks: a non-empty string through `text`, each part
/// through `part` (which may skip it with `None`).
pub fn blocks<B>(
    value: Option<&Value>,
    i: usize,
    text: impl FnOnce(&str) -> B,
    mut part: impl FnMut(&Value) -> Result<Option<B>, ProviderError>,
) -> Result<Vec<B>, ProviderError> {
    match content(value, i)? {
        Content::Absent => Ok(Vec::new()),
        Content::Text("") => Ok(Vec::new()),
        Content::Text(s) => Ok(vec![text(s)]),
        Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(b) = part(p)? {
                    out.push(b);
                }
            }
            Ok(out)
        }
    }
}

/// A part's `type`, empty when it has none.
pub fn part_type(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The text of a `text` or `refusal` part.
pub fn text_of(p: &Value) -> Option<&str> {
    match part_type(p) {
        ty @ ("text" | "refusal") => p.get(ty).and_then(Value::as_str),
        _ => None,
    }
}

/// The URL of an `image_url` part of message `i` (`image_url.url`, or `image_url` as a
/// string).
pub fn image_url(p: &Value, i: usize) -> Result<&str, ProviderError> {
    p.pointer("/image_url/url")
        .or_else(|| p.get("image_url").filter(|v| v.is_string()))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_message(i, "image_url.url is required"))
}

/// `data:<media type>[;params];base64,<data>` -> (media type, data).
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let mime = meta.split(';').next()?.trim();
    (!mime.is_empty() && !data.is_empty()).then_some((mime, data))
}

/// A `cache_control` that is there and not null.
pub fn cache_control(v: &Value) -> Option<&Value> {
    v.get("cache_control").filter(|c| !c.is_null())
}

/// One entry of an assistant message's `tool_calls`.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// Its `id` (always there when the walk required ids).
    pub id: Option<&'a str>,
    /// `function.name`.
    pub name: &'a str,
    /// `function.arguments`, as sent.
    pub arguments: Option<&'a Value>,
    /// The whole entry.
    pub call: &'a Value,
    /// Its position, for error messages.
    pub index: usize,
}

/// The `tool_calls` of assistant message `i`, each with its function name (and its id when
/// `require_id`).
pub fn tool_calls(
    m: &Value,
    i: usize,
    require_id: bool,
) -> Result<Vec<ToolCall<'_>>, ProviderError> {
    let Some(calls) = m.get("tool_calls").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let id = call.get("id").and_then(Value::as_str);
        if require_id && id.is_none() {
            return Err(invalid(
                format!("messages[{i}].tool_calls[{j}].id is required"),
                Some("messages"),
            ));
        }
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(
                    format!("messages[{i}].tool_calls[{j}].function.name is required"),
                    Some("messages"),
                )
            })?;
        out.push(ToolCall {
            id,
            name,
            arguments: call.pointer("/function/arguments"),
            call,
            index: j,
        });
    }
    Ok(out)
}

/// Tool-call `arguments` (a JSON string) as the object Anthropic and Gemini take.
pub fn tool_arguments(args: Option<&Value>, i: usize, j: usize) -> Result<Value, ProviderError> {
    let bad = || {
        invalid(
            format!("messages[{i}].tool_calls[{j}].function.arguments must be a JSON object"),
            Some("messages"),
        )
    };
    match args {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad()),
        },
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(bad()),
    }
}

/// The `tool_call_id` of tool message `i`.
pub fn tool_call_id(m: &Value, i: usize) -> Result<&str, ProviderError> {
    m.get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                format!("messages[{i}].tool_call_id is required"),
                Some("messages"),
            )
        })
}

/// Appends `blocks` as a turn of `role`, merging with the previous turn of the same role;
/// in a merged turn the blocks for which `goes_first` holds (tool results) stay ahead of the
/// others. Empty `blocks` add nothing.
pub fn push_turn<R: PartialEq, B>(
    turns: &mut Vec<(R, Vec<B>)>,
    role: R,
    blocks: Vec<B>,
    goes_first: impl Fn(&B) -> bool,
) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => {
            for b in blocks {
                if goes_first(&b) {
                    let at = content.iter().take_while(|c| goes_first(c)).count();
                    content.insert(at, b);
                } else {
                    content.push(b);
                }
            }
        }
        _ => turns.push((role, blocks)),
    }
}

/// The body's `tools`, when it holds at least one.
pub fn tools(body: &Map<String, Value>) -> Option<&[Value]> {
    match body.get("tools") {
        Some(Value::Array(list)) if !list.is_empty() => Some(list),
        _ => None,
    }
}

/// A function tool's `function` object and its name; `None` for other tool types.
pub fn function_tool(t: &Value, i: usize) -> Result<Option<(&Value, &str)>, ProviderError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Ok(None);
    }
    let f = t.get("function").unwrap_or(&Value::Null);
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("tools[{i}].function.name is required"),
            Some("tools"),
        )
    })?;
    Ok(Some((f, name)))
}

/// A function's `parameters`, or an open object schema when it has none.
pub fn parameters_schema(f: &Value) -> Value {
    match f.get("parameters") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({ "type": "object", "properties": {} }),
    }
}

/// `tool_choice` as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

/// A string `tool_choice`: none, auto or required.
pub fn tool_choice_mode(s: &str) -> Result<ToolChoiceMode, ProviderError> {
    match s {
        "none" => Ok(ToolChoiceMode::None),
        "auto" => Ok(ToolChoiceMode::Auto),
        "required" => Ok(ToolChoiceMode::Required),
        other => Err(invalid(
            format!("tool_choice '{other}' is not one of none, auto, required"),
            Some("tool_choice"),
        )),
    }
}

/// The function name of a `{type: function, function: {name}}` `tool_choice`.
pub fn tool_choice_function(o: &Map<String, Value>) -> Result<&str, ProviderError> {
    o.get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tool_choice.function.name is required", Some("tool_choice")))
}

/// A `tool_choice` of no known shape.
pub fn bad_tool_choice() -> ProviderError {
    invalid(
        "tool_choice must be none, auto, required or {type: function, function: {name}}",
        Some("tool_choice"),
    )
}

/// `max_completion_tokens`, else `max_tokens`, when the body has one: the same function
/// the gateway's reservation reads ([`vmx_domain::output::chat_max_tokens`]).
pub fn max_tokens(body: &Map<String, Value>) -> Result<Option<u64>, ProviderError> {
    vmx_domain::output::chat_max_tokens(body).map_err(|e| invalid(e.message, Some(&e.field)))
}
