//! OpenAI Chat Completions -> Messages API request (the mapping is in the module docs).

use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;

use super::{DEFAULT_MAX_TOKENS, PASSTHROUGH};
use crate::content::{
    self, Content, ToolChoiceMode, bad_tool_choice, cache_control, image_url, invalid,
    invalid_message, parse_data_url, tool_arguments, tool_call_id, tool_choice_function,
    tool_choice_mode,
};

type Turns = Vec<(&'static str, Vec<Value>)>;

/// The Messages API body for an OpenAI Chat Completions `body`.
pub fn to_messages_request(
    model: &str,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<Value, ProviderError> {
    let messages = content::messages(body)?;
    content::single_choice(body, "Anthropic")?;

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match content::role(m, i)? {
            "system" | "developer" => {
                let mut blocks = content_blocks(m.get("content"), i)?;
                message_cache_control(m, &mut blocks);
                system.extend(blocks);
            }
            "user" => {
                let mut blocks = content_blocks(m.get("content"), i)?;
                message_cache_control(m, &mut blocks);
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = assistant_blocks(m, i)?;
                message_cache_control(m, &mut blocks);
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let block = tool_result(m, i)?;
                push_turn(&mut turns, "user", vec![block]);
            }
            other => return Err(content::unsupported_role(i, other, "Anthropic")),
        }
    }
    if turns.is_empty() {
        return Err(content::no_turns());
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert(
        "max_tokens".into(),
        json!(content::max_tokens(body)?.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    for name in ["temperature", "top_p"] {
        if let Some(v @ Value::Number(_)) = body.get(name) {
            out.insert(name.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(items.clone()));
        }
        _ => {}
    }
    if let Some(Value::String(user)) = body.get("user") {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    tools(body, &mut out)?;
    for name in PASSTHROUGH {
        if let Some(v) = body.get(*name)
            && !v.is_null()
        {
            out.insert((*name).into(), v.clone());
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

/// Appends `blocks` as a turn of `role`, merging with the previous turn of the same role
/// (tool results stay first in a user turn, as the Messages API requires).
fn push_turn(turns: &mut Turns, role: &'static str, blocks: Vec<Value>) {
    content::push_turn(turns, role, blocks, |b| is_type(b, "tool_result"));
}

fn is_type(v: &Value, ty: &str) -> bool {
    v.get("type").and_then(Value::as_str) == Some(ty)
}

/// Sets `cache_control` on a block when `from` has one.
fn copy_cache_control(from: &Value, block: &mut Value) {
    if let Some(cc) = cache_control(from)
        && let Some(o) = block.as_object_mut()
    {
        o.insert("cache_control".into(), cc.clone());
    }
}

/// A message-level `cache_control` (an extension some SDKs send) goes on its last block.
fn message_cache_control(m: &Value, blocks: &mut [Value]) {
    if let Some(last) = blocks.last_mut() {
        copy_cache_control(m, last);
    }
}

/// OpenAI message content (a string or parts) as Messages content blocks.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    content::blocks(
        content,
        i,
        |s| json!({ "type": "text", "text": s }),
        |p| part(p, i),
    )
}

fn part(p: &Value, i: usize) -> Result<Option<Value>, ProviderError> {
    let ty = content::part_type(p);
    let mut block = match ty {
        "text" | "refusal" => {
            let text = content::text_of(p).unwrap_or_default();
            if text.is_empty() {
                return Ok(None);
            }
            json!({ "type": "text", "text": text })
        }
        "image_url" => image_block(image_url(p, i)?, i)?,
        "file" => {
            let file = p.get("file").unwrap_or(&Value::Null);
            let Some(data) = file.get("file_data").and_then(Value::as_str) else {
                return Err(invalid_message(
                    i,
                    "a file part needs file_data (a data: URL); OpenAI file ids mean nothing to Anthropic",
                ));
            };
            let (mime, b64) = parse_data_url(data)
                .ok_or_else(|| invalid_message(i, "file_data must be a base64 data: URL"))?;
            json!({
                "type": "document",
                "source": { "type": "base64", "media_type": mime, "data": b64 },
            })
        }
        "input_audio" => {
            return Err(invalid_message(i, "Anthropic does not accept audio input"));
        }
        "" => return Err(invalid_message(i, "every content part needs a type")),
        // An Anthropic-native block (image, document, search_result, thinking, ...).
        _ => return Ok(Some(p.clone())),
    };
    copy_cache_control(p, &mut block);
    Ok(Some(block))
}

fn image_block(url: &str, i: usize) -> Result<Value, ProviderError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url).ok_or_else(|| {
            invalid_message(
                i,
                "an image data: URL must be base64 (data:<type>;base64,...)",
            )
        })?;
        let ty = if mime == "application/pdf" {
            "document"
        } else {
            "image"
        };
        return Ok(json!({
            "type": ty,
            "source": { "type": "base64", "media_type": mime, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(invalid_message(
        i,
        "an image URL must be https:// or a data: URL",
    ))
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    if let Some(Value::Array(thinking)) = m.get("thinking_blocks") {
        blocks.extend(thinking.iter().cloned());
    }
    blocks.extend(content_blocks(m.get("content"), i)?);
    for call in content::tool_calls(m, i, true)? {
        let input = tool_arguments(call.arguments, i, call.index)?;
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": input,
        }));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, i: usize) -> Result<Value, ProviderError> {
    let id = tool_call_id(m, i)?;
    let content = match content::content(m.get("content"), i)? {
        Content::Absent => Value::String(String::new()),
        Content::Text(s) => Value::String(s.to_owned()),
        Content::Parts(_) => Value::Array(content_blocks(m.get("content"), i)?),
    };
    let mut block = json!({ "type": "tool_result", "tool_use_id": id, "content": content });
    copy_cache_control(m, &mut block);
    Ok(block)
}

fn tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ProviderError> {
    let Some(list) = content::tools(body) else {
        return Ok(());
    };
    let mut converted = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let Some((f, name)) = content::function_tool(t, i)? else {
            converted.push(t.clone()); // an Anthropic tool (web search, code execution, ...)
            continue;
        };
        let mut tool = Map::new();
        tool.insert("name".into(), Value::String(name.to_owned()));
        if let Some(Value::String(d)) = f.get("description") {
            tool.insert("description".into(), Value::String(d.clone()));
        }
        tool.insert("input_schema".into(), content::parameters_schema(f));
        if let Some(cc) = cache_control(t).or_else(|| cache_control(f)) {
            tool.insert("cache_control".into(), cc.clone());
        }
        converted.push(Value::Object(tool));
    }
    out.insert("tools".into(), Value::Array(converted));

    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match tool_choice_mode(s)? {
            ToolChoiceMode::None => json!({ "type": "none" }),
            ToolChoiceMode::Auto => json!({ "type": "auto" }),
            ToolChoiceMode::Required => json!({ "type": "any" }),
        }),
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => Some(json!({ "type": "tool", "name": tool_choice_function(o)? })),
            // Already in Anthropic's form.
            Some("auto" | "any" | "tool" | "none") => Some(Value::Object(o.clone())),
            _ => return Err(bad_tool_choice()),
        },
        Some(_) => {
            return Err(invalid(
                "tool_choice must be a string or an object",
                Some("tool_choice"),
            ));
        }
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if !is_type(c, "none")
            && let Some(o) = c.as_object_mut()
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}
