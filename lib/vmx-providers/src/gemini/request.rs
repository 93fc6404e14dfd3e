//! OpenAI Chat Completions -> `generateContent` request (the mapping is in the module docs).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;

use crate::content::{
    self, ToolChoiceMode, bad_tool_choice, image_url, invalid_message, parse_data_url,
    tool_arguments, tool_choice_mode,
};

/// The `generateContent` body for an OpenAI Chat Completions `body`.
pub fn to_generate_content_request(body: &Map<String, Value>) -> Result<Value, ProviderError> {
    let messages = content::messages(body)?;
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        match content::role(m, i)? {
            "system" | "developer" => system.extend(parts(m.get("content"), i)?),
            "user" => push_content(&mut contents, "user", parts(m.get("content"), i)?),
            "assistant" => {
                let mut out = parts(m.get("content"), i)?;
                for call in content::tool_calls(m, i, false)? {
                    if let Some(id) = call.id {
                        call_names.insert(id.to_owned(), call.name.to_owned());
                    }
                    let args = tool_arguments(call.arguments, i, call.index)?;
                    let mut part = json!({ "functionCall": { "name": call.name, "args": args } });
                    if let Some(sig) = call
                        .call
                        .pointer("/extra_content/google/thought_signature")
                        .and_then(Value::as_str)
                        && let Some(o) = part.as_object_mut()
                    {
                        o.insert("thoughtSignature".into(), json!(sig));
                    }
                    out.push(part);
                }
                push_content(&mut contents, "model", out);
            }
            "tool" => {
                let name = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| m.get("name").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        invalid_message(
                            i,
                            "the tool_call_id matches no earlier assistant tool call",
                        )
                    })?;
                let response = function_response(m.get("content"));
                push_content(
                    &mut contents,
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                );
            }
            other => return Err(content::unsupported_role(i, other, "Gemini")),
        }
    }
    if contents.is_empty() {
        return Err(content::no_turns());
    }

    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({ "role": role, "parts": parts }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(body)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    tools(body, &mut out)?;
    for (names, to) in [
        (["safetySettings", "safety_settings"], "safetySettings"),
        (["cachedContent", "cached_content"], "cachedContent"),
        (["labels", "labels"], "labels"),
    ] {
        if let Some(v) = names
            .iter()
            .find_map(|n| body.get(*n))
            .filter(|v| !v.is_null())
        {
            out.insert(to.into(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

fn push_content(
    contents: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    content::push_turn(contents, role, parts, |_| false);
}

fn parts(value: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    content::blocks(value, i, |s| json!({ "text": s }), |p| part(p, i))
}

fn part(p: &Value, i: usize) -> Result<Option<Value>, ProviderError> {
    let bad = |what: &str| invalid_message(i, what);
    match p.get("type").and_then(Value::as_str) {
        Some("text" | "refusal") => {
            let text = content::text_of(p).unwrap_or_default();
            Ok((!text.is_empty()).then(|| json!({ "text": text })))
        }
        Some("image_url") => {
            let url = image_url(p, i)?;
            if url.starts_with("data:") {
                let (mime, data) =
                    parse_data_url(url).ok_or_else(|| bad("a data: URL must be base64"))?;
                return Ok(Some(
                    json!({ "inlineData": { "mimeType": mime, "data": data } }),
                ));
            }
            if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://")
            {
                let mut file = json!({ "fileUri": url });
                if let (Some(mime), Some(o)) = (guess_mime(url), file.as_object_mut()) {
                    o.insert("mimeType".into(), json!(mime));
                }
                return Ok(Some(json!({ "fileData": file })));
            }
            Err(bad("an image URL must be https://, gs:// or a data: URL"))
        }
        Some("input_audio") => {
            let data = p
                .pointer("/input_audio/data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("input_audio.data is required"))?;
            let format = p
                .pointer("/input_audio/format")
                .and_then(Value::as_str)
                .unwrap_or("wav");
            Ok(Some(
                json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }),
            ))
        }
        Some("file") => {
            let data = p
                .pointer("/file/file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a file part needs file_data (a data: URL)"))?;
            let (mime, data) =
                parse_data_url(data).ok_or_else(|| bad("file_data must be a base64 data: URL"))?;
            Ok(Some(
                json!({ "inlineData": { "mimeType": mime, "data": data } }),
            ))
        }
        Some(other) => Err(bad(&format!(
            "content parts of type '{other}' are not supported by Gemini"
        ))),
        None => Err(bad("every content part needs a type")),
    }
}

fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next()?.to_ascii_lowercase();
    let ext = path.rsplit('.').next()?;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// A tool message's content as a `functionResponse.response` (which must be an object).
fn function_response(content: Option<&Value>) -> Value {
    let text = match content {
        None | Some(Value::Null) => return json!({}),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(v @ Value::Object(_)) => return v.clone(),
        Some(other) => return json!({ "result": other }),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    }
}

fn generation_config(body: &Map<String, Value>) -> Result<Map<String, Value>, ProviderError> {
    let mut c = match body
        .get("generationConfig")
        .or_else(|| body.get("generation_config"))
    {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    let number = |name: &str| body.get(name).filter(|v| v.is_number()).cloned();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
        ("n", "candidateCount"),
        ("top_logprobs", "logprobs"),
    ] {
        if let Some(v) = number(from) {
            c.insert(to.into(), v);
        }
    }
    if let Some(n) = content::max_tokens(body)? {
        c.insert("maxOutputTokens".into(), json!(n));
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            c.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            c.insert("stopSequences".into(), Value::Array(items.clone()));
        }
        _ => {}
    }
    if body.get("logprobs") == Some(&Value::Bool(true)) {
        c.insert("responseLogprobs".into(), Value::Bool(true));
    }
    if let Some(rf) = body.get("response_format").filter(|v| v.is_object()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                c.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                c.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = rf.pointer("/json_schema/schema") {
                    c.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {}
        }
    }
    if let Some(t) = body
        .get("thinkingConfig")
        .or_else(|| body.get("thinking_config"))
        .filter(|v| v.is_object())
    {
        c.insert("thinkingConfig".into(), t.clone());
    }
    Ok(c)
}

fn tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ProviderError> {
    let Some(list) = content::tools(body) else {
        return Ok(());
    };
    let mut declarations = Vec::new();
    let mut native = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let Some((f, name)) = content::function_tool(t, i)? else {
            native.push(t.clone()); // googleSearch, codeExecution, urlContext, ...
            continue;
        };
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if let Some(Value::String(desc)) = f.get("description") {
            d.insert("description".into(), json!(desc));
        }
        if let Some(p @ Value::Object(_)) = f.get("parameters") {
            d.insert("parametersJsonSchema".into(), p.clone());
        }
        declarations.push(Value::Object(d));
    }
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        tools.push(json!({ "functionDeclarations": declarations }));
    }
    tools.extend(native);
    out.insert("tools".into(), Value::Array(tools));

    let config = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match tool_choice_mode(s)? {
            ToolChoiceMode::None => json!({ "mode": "NONE" }),
            ToolChoiceMode::Auto => json!({ "mode": "AUTO" }),
            ToolChoiceMode::Required => json!({ "mode": "ANY" }),
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(bad_tool_choice)?;
            Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] }))
        }
    };
    if let Some(c) = config {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": c }));
    }
    Ok(())
}
